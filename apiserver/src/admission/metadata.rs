//! `metadata` validation on create and update, as k8s.io/apimachinery's
//! pkg/api/validation/objectmeta.go (`ValidateObjectMetaAccessor`, `ValidateAnnotations`,
//! `ValidateFinalizers`) and pkg/apis/meta/v1/validation (`ValidateLabels`) do it, with the
//! name rule of each kind (pkg/apis/core/validation: `ValidateNamespaceName`,
//! `ValidateServiceName`, ...).

use serde_json::Value;

use super::field::{self, Errors, push_invalid, str_of};
use crate::resources::ResourceDef;

/// `TotalAnnotationSizeLimitB`: keys and values of all annotations together.
const ANNOTATIONS_LIMIT: usize = 256 * 1024;

/// How a kind's names are checked.
#[derive(Clone, Copy)]
enum NameRule {
    Label,
    Subdomain,
    /// `ValidatePathSegmentName`: anything but `/`, `%`, `.` and `..` (RBAC kinds).
    PathSegment,
}

fn name_rule(def: &ResourceDef) -> NameRule {
    match (def.group.as_str(), def.kind.as_str()) {
        ("", "Namespace" | "Service") => NameRule::Label,
        ("rbac.authorization.k8s.io", _) => NameRule::PathSegment,
        _ => NameRule::Subdomain,
    }
}

fn name_errors(rule: NameRule, name: &str, prefix: bool) -> Vec<String> {
    // `maskTrailingDash`: a generateName may end with '-'.
    let masked;
    let name = if prefix && name.len() > 1 && name.ends_with('-') {
        masked = format!("{}a", &name[..name.len() - 1]);
        masked.as_str()
    } else {
        name
    };
    match rule {
        NameRule::Label => field::dns1123_label(name),
        NameRule::Subdomain => field::dns1123_subdomain(name),
        NameRule::PathSegment => path_segment(name, prefix),
    }
}

fn path_segment(name: &str, prefix: bool) -> Vec<String> {
    if !prefix && (name == "." || name == "..") {
        return vec![format!("may not be '{name}'")];
    }
    ["/", "%"]
        .iter()
        .filter(|bad| name.contains(*bad))
        .map(|bad| format!("may not contain '{bad}'"))
        .collect()
}

/// Metadata errors of an object about to be created (its name generated already).
pub(crate) fn validate_create(def: &ResourceDef, object: &Value) -> Errors {
    let meta = &object["metadata"];
    let rule = name_rule(def);
    let mut errors = Errors::new();
    let generate = str_of(&meta["generateName"]);
    if !generate.is_empty() {
        push_invalid(
            &mut errors,
            "metadata.generateName",
            generate,
            name_errors(rule, generate, true),
        );
    }
    let name = str_of(&meta["name"]);
    if name.is_empty() {
        errors.push(field::required(
            "metadata.name",
            "name or generateName is required",
        ));
    } else {
        push_invalid(&mut errors, "metadata.name", name, name_errors(rule, name, false));
    }
    common(&mut errors, meta);
    errors
}

/// Metadata errors of an update (name, namespace, uid and creationTimestamp are the old ones
/// already: the server keeps them).
pub(crate) fn validate_update(object: &Value) -> Errors {
    let mut errors = Errors::new();
    common(&mut errors, &object["metadata"]);
    errors
}

fn common(errors: &mut Errors, meta: &Value) {
    field::labels(errors, "metadata.labels", &meta["labels"]);
    annotations(errors, "metadata.annotations", &meta["annotations"]);
    for finalizer in field::items(&meta["finalizers"]) {
        let finalizer = str_of(finalizer);
        push_invalid(
            errors,
            "metadata.finalizers",
            finalizer,
            field::qualified_name(finalizer),
        );
    }
}

/// `ValidateAnnotations`: keys are qualified names (case-insensitively), 256 KiB in total.
pub(crate) fn annotations(errors: &mut Errors, field: &str, annotations: &Value) {
    let Some(map) = annotations.as_object() else {
        return;
    };
    let mut total = 0;
    for (key, value) in map {
        push_invalid(errors, field, key, field::qualified_name(&key.to_lowercase()));
        total += key.len() + str_of(value).len();
    }
    if total > ANNOTATIONS_LIMIT {
        errors.push(field::too_long(field, ANNOTATIONS_LIMIT));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::Registry;
    use serde_json::json;

    #[test]
    fn names_per_kind() {
        let registry = Registry::builtin();
        let cm = registry.find("", "v1", "configmaps").unwrap();
        let svc = registry.find("", "v1", "services").unwrap();
        let fields = |def: &ResourceDef, meta: Value| -> Vec<String> {
            validate_create(def, &json!({ "metadata": meta }))
                .into_iter()
                .map(|e| format!("{}: {}", e.field, e.type_))
                .collect()
        };
        assert!(fields(&cm, json!({"name": "a.b-c"})).is_empty());
        assert_eq!(
            fields(&svc, json!({"name": "a.b"})),
            ["metadata.name: Invalid value"]
        );
        assert!(fields(&svc, json!({"name": "1a"})).is_empty());
        assert_eq!(fields(&cm, json!({})), ["metadata.name: Required value"]);
        assert!(fields(&cm, json!({"name": "ab12c", "generateName": "ab-"})).is_empty());
        assert_eq!(
            fields(&cm, json!({"name": "a", "labels": {"a/b/c": "x", "ok": "-bad"}})),
            ["metadata.labels: Invalid value", "metadata.labels: Invalid value"]
        );
        let big = "x".repeat(ANNOTATIONS_LIMIT);
        assert_eq!(
            fields(&cm, json!({"name": "a", "annotations": {"Big": big}})),
            ["metadata.annotations: Too long"]
        );
    }
}
