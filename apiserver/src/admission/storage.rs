//! PersistentVolumeClaim validation, after k8s.io/kubernetes pkg/apis/core/validation/
//! validation.go `ValidatePersistentVolumeClaimSpec` and `ValidatePersistentVolumeClaimUpdate`:
//! access modes, the storage request, volume mode, and a spec that is immutable after creation
//! except `resources.requests` and `volumeAttributesClassName` of bound claims (and `volumeName`
//! or `storageClassName` set for the first time). Left out: selectors, data sources, quantity
//! syntax.

use crate::quantity::quantity;
use serde_json::{Value, json};

use super::field::{self, Errors, items, str_of};

const ACCESS_MODES: &[&str] = &[
    "ReadOnlyMany",
    "ReadWriteMany",
    "ReadWriteOnce",
    "ReadWriteOncePod",
];

/// Errors of a PersistentVolumeClaim; `old` on update.
pub(crate) fn validate(claim: &Value, old: Option<&Value>) -> Errors {
    let mut errors = Errors::new();
    let spec = &claim["spec"];
    let modes = items(&spec["accessModes"]);
    if modes.is_empty() {
        errors.push(field::required(
            "spec.accessModes",
            "at least 1 access mode is required",
        ));
    }
    for mode in modes {
        if !ACCESS_MODES.contains(&str_of(mode)) {
            errors.push(field::not_supported("spec.accessModes", mode, ACCESS_MODES));
        }
    }
    let once_pod = modes.iter().any(|m| m == "ReadWriteOncePod");
    if once_pod
        && modes
            .iter()
            .any(|m| m != "ReadWriteOncePod" && ACCESS_MODES.contains(&str_of(m)))
    {
        errors.push(field::forbidden(
            "spec.accessModes",
            "may not use ReadWriteOncePod with other access modes",
        ));
    }
    let storage = &spec["resources"]["requests"]["storage"];
    if storage.is_null() {
        errors.push(field::required("spec.resources[storage]", ""));
    } else if quantity(storage).is_some_and(|q| q <= 0.0) {
        errors.push(field::invalid(
            "spec.resources[storage]",
            storage,
            "must be greater than zero",
        ));
    }
    let class = str_of(&spec["storageClassName"]);
    if !class.is_empty() {
        field::check_subdomain(&mut errors, "spec.storageClassName", class);
    }
    if !spec["volumeMode"].is_null() {
        field::check_optional_enum(
            &mut errors,
            "spec.volumeMode",
            &spec["volumeMode"],
            &["Block", "Filesystem"],
        );
    }
    if let Some(old) = old {
        update(&mut errors, claim, old);
    }
    errors
}

fn update(errors: &mut Errors, claim: &Value, old: &Value) {
    let (mut new_spec, mut old_spec) = (claim["spec"].clone(), old["spec"].clone());
    if str_of(&old_spec["volumeName"]).is_empty() {
        old_spec["volumeName"] = new_spec["volumeName"].clone();
    }
    if old_spec["storageClassName"].is_null() && !new_spec["storageClassName"].is_null() {
        old_spec["storageClassName"] = new_spec["storageClassName"].clone();
    }
    if claim["status"]["phase"] == "Bound" {
        new_spec["resources"]["requests"]["storage"] = old_spec["resources"]["requests"]["storage"].clone();
        new_spec["volumeAttributesClassName"] = old_spec["volumeAttributesClassName"].clone();
    }
    let (new_spec, old_spec) = (normalized(&new_spec), normalized(&old_spec));
    if new_spec != old_spec {
        errors.push(field::forbidden(
            "spec",
            &format!(
                "spec is immutable after creation except resources.requests and volumeAttributesClassName for bound claims\n  {}",
                json!({"old": old_spec, "new": new_spec})
            ),
        ));
    }
    // RecoverVolumeExpansionFailure (on by default since 1.34): a request may shrink, to
    // recover from a failed expansion, but must stay above the capacity the claim has.
    let size = |c: &Value| quantity(&c["spec"]["resources"]["requests"]["storage"]).unwrap_or(0.0);
    let capacity = quantity(&old["status"]["capacity"]["storage"]).unwrap_or(0.0);
    if size(claim) < size(old) && size(claim) <= capacity {
        errors.push(field::forbidden(
            "spec.resources.requests.storage",
            "field can not be less than status.capacity",
        ));
    }
}

/// `value` without nulls and empty maps and lists (as Go's semantic equality sees them).
fn normalized(value: &Value) -> Value {
    match value {
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(k, v)| (k.clone(), normalized(v)))
                .filter(|(_, v)| !v.is_null() && v != &json!({}) && v != &json!([]))
                .collect(),
        ),
        other => other.clone(),
    }
}
