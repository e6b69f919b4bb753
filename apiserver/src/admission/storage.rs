//! PersistentVolumeClaim validation, after k8s.io/kubernetes pkg/apis/core/validation/
//! validation.go `ValidatePersistentVolumeClaimSpec` and `ValidatePersistentVolumeClaimUpdate`:
//! access modes, the storage request, volume mode, and a spec that is immutable after creation
//! except `resources.requests` and `volumeAttributesClassName` of bound claims (and `volumeName`
//! or `storageClassName` set for the first time). Left out: selectors, data sources, quantity
//! syntax.

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

/// A resource quantity ("1Gi", "500M", "1.5", "100m", "1e3") as a number, None if unparseable.
pub(crate) fn quantity(value: &Value) -> Option<f64> {
    if let Some(n) = value.as_f64() {
        return Some(n);
    }
    let s = value.as_str()?.trim();
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '+' || c == '-'))
        .unwrap_or(s.len());
    let (number, suffix) = s.split_at(split);
    let number: f64 = number.parse().ok()?;
    let factor = match suffix {
        "" => 1.0,
        "m" => 1e-3,
        "k" => 1e3,
        "M" => 1e6,
        "G" => 1e9,
        "T" => 1e12,
        "P" => 1e15,
        "E" => 1e18,
        "Ki" => 1024f64,
        "Mi" => 1024f64.powi(2),
        "Gi" => 1024f64.powi(3),
        "Ti" => 1024f64.powi(4),
        "Pi" => 1024f64.powi(5),
        "Ei" => 1024f64.powi(6),
        e if e.starts_with(['e', 'E']) => 10f64.powi(e[1..].parse().ok()?),
        _ => return None,
    };
    Some(number * factor)
}
