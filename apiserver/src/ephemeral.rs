//! The `pods/{name}/ephemeralcontainers` subresource (`kubectl debug`): a write that may only add
//! ephemeral containers to a pod, checked as kube-apiserver's `ValidatePodEphemeralContainersUpdate`
//! and `validateEphemeralContainers` check it.

use serde_json::Value;

use crate::pod_update::FieldError;

/// Fields an ephemeral container may not set (it gets no guarantees, ports or probes).
const FORBIDDEN: &[&str] = &[
    "ports",
    "livenessProbe",
    "readinessProbe",
    "startupProbe",
    "lifecycle",
    "resources",
    "resizePolicy",
    "restartPolicy",
];

fn error(field: String, type_: &'static str, detail: impl Into<String>) -> FieldError {
    FieldError {
        field,
        type_,
        detail: detail.into(),
    }
}

/// `old` with the ephemeral containers of `new` (the body of the write), if they only add to
/// `old`'s and each added one is valid.
pub(crate) fn merged(new: &Value, old: &Value) -> Result<Value, FieldError> {
    let empty = Vec::new();
    let wanted = new["spec"]["ephemeralContainers"].as_array().unwrap_or(&empty);
    let existing = old["spec"]["ephemeralContainers"].as_array().unwrap_or(&empty);
    for (i, before) in existing.iter().enumerate() {
        if wanted.get(i) != Some(before) {
            let name = before["name"].as_str().unwrap_or_default();
            return Err(error(
                "spec.ephemeralContainers".to_string(),
                "Forbidden",
                format!("existing ephemeral containers \"{name}\" may not be changed"),
            ));
        }
    }
    let names = |list: &str| -> Vec<String> {
        old["spec"][list]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|c| c["name"].as_str().map(str::to_string))
            .collect()
    };
    let regular = names("containers");
    let mut taken: Vec<String> = regular
        .iter()
        .cloned()
        .chain(names("initContainers"))
        .chain(names("ephemeralContainers"))
        .collect();
    for (i, added) in wanted.iter().enumerate().skip(existing.len()) {
        let at = |field: &str| format!("spec.ephemeralContainers[{i}].{field}");
        let name = added["name"].as_str().unwrap_or_default();
        if name.is_empty() {
            return Err(error(at("name"), "Required value", ""));
        }
        if taken.iter().any(|t| t == name) {
            return Err(error(at("name"), "Duplicate value", format!("\"{name}\"")));
        }
        if added["image"].as_str().is_none_or(str::is_empty) {
            return Err(error(at("image"), "Required value", ""));
        }
        // Unset as a typed struct reads it: absent, null, or empty.
        let set = |value: &Value| match value {
            Value::Null => false,
            Value::Object(map) => !map.is_empty(),
            Value::Array(list) => !list.is_empty(),
            _ => true,
        };
        if let Some(field) = FORBIDDEN.iter().find(|f| set(&added[**f])) {
            return Err(error(
                at(field),
                "Forbidden",
                "cannot be set for an Ephemeral Container",
            ));
        }
        if let Some(target) = added["targetContainerName"].as_str()
            && !regular.iter().any(|c| c == target)
        {
            return Err(error(
                at("targetContainerName"),
                "Not found",
                format!("\"{target}\""),
            ));
        }
        taken.push(name.to_string());
    }
    let mut merged = old.clone();
    merged["spec"]["ephemeralContainers"] = Value::Array(wanted.clone());
    merged["metadata"]["resourceVersion"] = new["metadata"]["resourceVersion"].clone();
    Ok(merged)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn pod(ephemeral: Value) -> Value {
        json!({"metadata": {"name": "web", "resourceVersion": "5"},
            "spec": {"containers": [{"name": "app", "image": "nginx"}], "ephemeralContainers": ephemeral},
            "status": {"phase": "Running"}})
    }

    #[test]
    fn an_added_ephemeral_container_is_kept_and_nothing_else_changes() {
        let old = pod(json!([]));
        let mut new = pod(
            json!([{"name": "debugger", "image": "busybox", "targetContainerName": "app", "resources": {}}]),
        );
        new["spec"]["containers"][0]["image"] = json!("changed");
        let merged = merged(&new, &old).unwrap();
        assert_eq!(merged["spec"]["ephemeralContainers"][0]["name"], "debugger");
        assert_eq!(
            merged["spec"]["containers"][0]["image"], "nginx",
            "only ephemeral containers change"
        );
    }

    #[test]
    fn existing_ones_stay_and_added_ones_must_be_valid() {
        let old = pod(json!([{"name": "d1", "image": "busybox"}]));
        let removed = merged(&pod(json!([])), &old).unwrap_err();
        assert_eq!(
            removed.detail,
            "existing ephemeral containers \"d1\" may not be changed"
        );
        let cases = [
            (
                json!({"name": "app", "image": "busybox"}),
                "spec.ephemeralContainers[1].name",
                "Duplicate value",
            ),
            (
                json!({"name": "d2"}),
                "spec.ephemeralContainers[1].image",
                "Required value",
            ),
            (
                json!({"name": "d2", "image": "b", "ports": [{"containerPort": 80}]}),
                "spec.ephemeralContainers[1].ports",
                "Forbidden",
            ),
            (
                json!({"name": "d2", "image": "b", "targetContainerName": "nope"}),
                "spec.ephemeralContainers[1].targetContainerName",
                "Not found",
            ),
        ];
        for (added, field, type_) in cases {
            let new = pod(json!([{"name": "d1", "image": "busybox"}, added]));
            let err = merged(&new, &old).unwrap_err();
            assert_eq!((err.field.as_str(), err.type_), (field, type_), "{added}");
        }
    }
}
