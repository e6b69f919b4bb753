//! Which changes of a pod's spec an update of the main resource may make, as kube-apiserver's
//! `ValidatePodUpdate` decides: container and init container images, `activeDeadlineSeconds`
//! (set, or lowered), additions to `tolerations` (and changes of their `tolerationSeconds`),
//! removal of `schedulingGates`, `terminationGracePeriodSeconds` from negative to 1 and, while the
//! pod is gated, additions to `nodeSelector`. Anything else is 422 Invalid with kube-apiserver's
//! `spec: Forbidden: pod updates may not change fields other than ...` and a diff.
//!
//! Specs are compared as kube-apiserver compares its typed structs: a missing field, `null`,
//! an empty list or map and a zero value are the same.

use serde_json::{Map, Value};

/// One field error: its path, its type as it reads in messages, and its detail.
#[derive(Debug, PartialEq)]
pub(crate) struct FieldError {
    pub field: String,
    pub type_: &'static str,
    pub detail: String,
}

fn error(field: impl Into<String>, type_: &'static str, detail: impl Into<String>) -> FieldError {
    FieldError {
        field: field.into(),
        type_,
        detail: detail.into(),
    }
}

/// The message kube-apiserver 1.37 gives, before its diff.
const NOT_UPDATABLE: &str = "pod updates may not change fields other than `spec.containers[*].image`,\
`spec.initContainers[*].image`,`spec.activeDeadlineSeconds`,`spec.tolerations` (only additions to \
existing tolerations),`spec.terminationGracePeriodSeconds` (allow it to be set to 1 if it was \
previously negative)";

/// Checks the update of a pod's spec from `old` to `new` (whole pods, both defaulted).
pub(crate) fn validate(new: &Value, old: &Value) -> Result<(), FieldError> {
    let (new, old) = (&new["spec"], &old["spec"]);
    for list in ["containers", "initContainers"] {
        check_containers(list, &new[list], &old[list])?;
    }
    check_active_deadline(&new["activeDeadlineSeconds"], &old["activeDeadlineSeconds"])?;
    check_tolerations(&new["tolerations"], &old["tolerations"])?;
    check_scheduling_gates(&new["schedulingGates"], &old["schedulingGates"])?;
    if normalized(new) == normalized(old) {
        return Ok(());
    }
    let mut munged = new.clone();
    for list in ["containers", "initContainers"] {
        let Some(containers) = munged[list].as_array_mut() else {
            continue;
        };
        for (i, container) in containers.iter_mut().enumerate() {
            container["image"] = old[list][i]["image"].clone();
        }
    }
    for field in ["activeDeadlineSeconds", "tolerations", "schedulingGates"] {
        munged[field] = old[field].clone();
    }
    if old["terminationGracePeriodSeconds"]
        .as_i64()
        .is_some_and(|s| s < 0)
        && munged["terminationGracePeriodSeconds"].as_i64() == Some(1)
    {
        munged["terminationGracePeriodSeconds"] = old["terminationGracePeriodSeconds"].clone();
    }
    let gated = old["schedulingGates"].as_array().is_some_and(|g| !g.is_empty());
    if gated && only_added(&munged["nodeSelector"], &old["nodeSelector"]) {
        munged["nodeSelector"] = old["nodeSelector"].clone();
    }
    let (munged, old) = (normalized(&munged), normalized(old));
    if munged == old {
        return Ok(());
    }
    let mut lines = Vec::new();
    diff("spec", &old, &munged, &mut lines);
    Err(error(
        "spec",
        "Forbidden",
        format!("{NOT_UPDATABLE}\n{}", lines.join("\n")),
    ))
}

fn check_containers(list: &str, new: &Value, old: &Value) -> Result<(), FieldError> {
    let (new, old) = (items(new), items(old));
    if new.len() != old.len() {
        return Err(error(
            format!("spec.{list}"),
            "Forbidden",
            "pod updates may not add or remove containers",
        ));
    }
    match new
        .iter()
        .position(|c| c["image"].as_str().is_none_or(str::is_empty))
    {
        Some(i) => Err(error(format!("spec.{list}[{i}].image"), "Required value", "")),
        None => Ok(()),
    }
}

fn check_active_deadline(new: &Value, old: &Value) -> Result<(), FieldError> {
    let field = "spec.activeDeadlineSeconds";
    match (new.as_i64(), old.as_i64()) {
        (Some(n), _) if !(0..=i64::from(i32::MAX)).contains(&n) => Err(error(
            field,
            "Invalid value",
            format!("{n}: must be between 0 and {}, inclusive", i32::MAX),
        )),
        (Some(n), Some(o)) if o < n => Err(error(
            field,
            "Invalid value",
            format!("{n}: must be less than or equal to previous value"),
        )),
        (None, Some(_)) => Err(error(
            field,
            "Invalid value",
            "null: must not update from a positive integer to nil value",
        )),
        _ => Ok(()),
    }
}

/// Every old toleration must still be there; only its `tolerationSeconds` may change.
fn check_tolerations(new: &Value, old: &Value) -> Result<(), FieldError> {
    let without_seconds = |t: &Value| {
        let mut t = normalized(t);
        if let Some(map) = t.as_object_mut() {
            map.remove("tolerationSeconds");
        }
        t
    };
    let new: Vec<Value> = items(new).iter().map(without_seconds).collect();
    if items(old).iter().all(|t| new.contains(&without_seconds(t))) {
        return Ok(());
    }
    Err(error(
        "spec.tolerations",
        "Forbidden",
        "existing toleration can not be modified except its tolerationSeconds",
    ))
}

/// Scheduling gates may only be removed.
fn check_scheduling_gates(new: &Value, old: &Value) -> Result<(), FieldError> {
    let old = items(old);
    match items(new).iter().enumerate().find(|(_, g)| !old.contains(g)) {
        Some((i, gate)) => Err(error(
            format!("spec.schedulingGates[{i}]"),
            "Forbidden",
            format!(
                "only deletion is allowed, but found new scheduling gate '{}'",
                gate["name"].as_str().unwrap_or_default()
            ),
        )),
        None => Ok(()),
    }
}

/// Whether map `new` holds every entry of map `old`, unchanged.
fn only_added(new: &Value, old: &Value) -> bool {
    let empty = Map::new();
    let new = new.as_object().unwrap_or(&empty);
    old.as_object()
        .unwrap_or(&empty)
        .iter()
        .all(|(k, v)| new.get(k) == Some(v))
}

fn items(value: &Value) -> &[Value] {
    value.as_array().map(Vec::as_slice).unwrap_or_default()
}

/// `value` without the fields a typed Go struct could not tell from missing: null, false, zero,
/// empty strings, lists and maps.
fn normalized(value: &Value) -> Value {
    match value {
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(k, v)| (k.clone(), normalized(v)))
                .filter(|(_, v)| !is_zero(v))
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.iter().map(normalized).collect()),
        other => other.clone(),
    }
}

fn is_zero(value: &Value) -> bool {
    match value {
        Value::Null => true,
        Value::Bool(b) => !b,
        Value::Number(n) => n.as_f64() == Some(0.0),
        Value::String(s) => s.is_empty(),
        Value::Array(items) => items.is_empty(),
        Value::Object(map) => map.is_empty(),
    }
}

/// Lines `- path: old` and `+ path: new` for every leaf where `old` and `new` differ.
fn diff(path: &str, old: &Value, new: &Value, lines: &mut Vec<String>) {
    if old == new {
        return;
    }
    match (old, new) {
        (Value::Object(o), Value::Object(n)) => {
            let mut keys: Vec<&String> = o.keys().chain(n.keys()).collect();
            keys.sort();
            keys.dedup();
            for key in keys {
                let (o, n) = (
                    o.get(key).unwrap_or(&Value::Null),
                    n.get(key).unwrap_or(&Value::Null),
                );
                diff(&format!("{path}.{key}"), o, n, lines);
            }
        }
        (Value::Array(o), Value::Array(n)) if o.len() == n.len() => {
            for (i, (o, n)) in o.iter().zip(n).enumerate() {
                diff(&format!("{path}[{i}]"), o, n, lines);
            }
        }
        _ => {
            lines.push(format!("- {path}: {old}"));
            lines.push(format!("+ {path}: {new}"));
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn pod(spec: Value) -> Value {
        json!({"spec": spec})
    }

    fn base() -> Value {
        json!({"containers": [{"name": "app", "image": "app:1", "env": [{"name": "A", "value": "1"}]}],
            "tolerations": [{"key": "k", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 5}],
            "schedulingGates": [{"name": "g"}], "activeDeadlineSeconds": 100,
            "terminationGracePeriodSeconds": 30})
    }

    fn check(change: impl FnOnce(&mut Value)) -> Result<(), FieldError> {
        let mut new = base();
        change(&mut new);
        validate(&pod(new), &pod(base()))
    }

    #[test]
    fn the_mutable_fields_may_change() {
        assert_eq!(
            check(|s| {
                s["containers"][0]["image"] = json!("app:2");
                s["activeDeadlineSeconds"] = json!(50);
                s["tolerations"][0]["tolerationSeconds"] = json!(9);
                s["tolerations"]
                    .as_array_mut()
                    .unwrap()
                    .push(json!({"key": "new", "operator": "Exists"}));
                s["schedulingGates"] = json!([]);
                s["nodeSelector"] = json!({"zone": "a"});
                s["hostNetwork"] = json!(false);
            }),
            Ok(())
        );
    }

    #[test]
    fn other_fields_are_forbidden_with_a_diff() {
        let err = check(|s| s["containers"][0]["env"][0]["value"] = json!("2")).unwrap_err();
        assert_eq!((err.field.as_str(), err.type_), ("spec", "Forbidden"));
        assert!(err.detail.starts_with(NOT_UPDATABLE), "{}", err.detail);
        assert!(
            err.detail.ends_with(
                "\n- spec.containers[0].env[0].value: \"1\"\n+ spec.containers[0].env[0].value: \"2\""
            ),
            "{}",
            err.detail
        );
        let err = check(|s| s["containers"][0]["env"] = json!([])).unwrap_err();
        assert_eq!(err.field, "spec");
        let err = check(|s| s["terminationGracePeriodSeconds"] = json!(1)).unwrap_err();
        assert_eq!(err.field, "spec");
    }

    #[test]
    fn the_rules_of_the_mutable_fields() {
        let field = |change: fn(&mut Value)| check(change).unwrap_err().field;
        assert_eq!(
            field(|s| s["activeDeadlineSeconds"] = json!(101)),
            "spec.activeDeadlineSeconds"
        );
        assert_eq!(
            field(|s| s["activeDeadlineSeconds"] = Value::Null),
            "spec.activeDeadlineSeconds"
        );
        assert_eq!(field(|s| s["tolerations"] = json!([])), "spec.tolerations");
        assert_eq!(
            field(|s| s["schedulingGates"] = json!([{"name": "g"}, {"name": "h"}])),
            "spec.schedulingGates[1]"
        );
        assert_eq!(field(|s| s["containers"] = json!([])), "spec.containers");
        assert_eq!(
            field(|s| s["containers"][0]["image"] = json!("")),
            "spec.containers[0].image"
        );
    }

    #[test]
    fn a_negative_grace_period_may_become_one() {
        let mut old = base();
        old["terminationGracePeriodSeconds"] = json!(-1);
        let mut new = old.clone();
        new["terminationGracePeriodSeconds"] = json!(1);
        assert_eq!(validate(&pod(new), &pod(old)), Ok(()));
    }
}
