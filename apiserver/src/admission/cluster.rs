//! Validation of Namespace, Node, PriorityClass, Lease, Event and PodDisruptionBudget, after
//! k8s.io/kubernetes pkg/apis/core/validation (`ValidateNamespace`, `ValidateNode`,
//! `legacyValidateEvent`), pkg/apis/scheduling/validation (`ValidatePriorityClass`,
//! `ValidatePriorityClassUpdate`), pkg/apis/coordination/validation (`ValidateLeaseSpec`) and
//! pkg/apis/policy/validation (`ValidatePodDisruptionBudgetSpec`). Left out: node taints,
//! addresses and pod CIDRs, new-style (events.k8s.io) event fields, lease strategies.

use serde_json::{Value, json};

use super::field::{self, Errors, items, str_of};

/// `scheduling.HighestUserDefinablePriority`.
pub(crate) const HIGHEST_USER_PRIORITY: i64 = 1_000_000_000;

/// The system classes every kube-apiserver creates at start: (name, value).
pub(crate) const SYSTEM_CLASSES: &[(&str, i64)] = &[
    ("system-node-critical", 2_000_001_000),
    ("system-cluster-critical", 2_000_000_000),
];

/// Errors of a Namespace.
pub(crate) fn validate_namespace(namespace: &Value) -> Errors {
    let mut errors = Errors::new();
    for finalizer in items(&namespace["spec"]["finalizers"]) {
        let finalizer = str_of(finalizer);
        field::push_invalid(
            &mut errors,
            "spec.finalizers",
            finalizer,
            field::qualified_name(finalizer),
        );
    }
    errors
}

/// Errors of a Node.
pub(crate) fn validate_node(node: &Value) -> Errors {
    let mut errors = Errors::new();
    for (i, taint) in items(&node["spec"]["taints"]).iter().enumerate() {
        let at = format!("spec.taints[{i}]");
        let key = str_of(&taint["key"]);
        if key.is_empty() {
            errors.push(field::required(&format!("{at}.key"), ""));
        } else {
            field::push_invalid(&mut errors, &format!("{at}.key"), key, field::qualified_name(key));
        }
        field::check_enum(
            &mut errors,
            &format!("{at}.effect"),
            &taint["effect"],
            &["NoSchedule", "PreferNoSchedule", "NoExecute"],
        );
    }
    errors
}

/// Errors of a PriorityClass; `old` on update.
pub(crate) fn validate_priority_class(class: &Value, old: Option<&Value>) -> Errors {
    let mut errors = Errors::new();
    if let Some(old) = old {
        if class["value"] != old["value"] {
            errors.push(field::forbidden("value", "may not be changed in an update."));
        }
        if class["preemptionPolicy"] != old["preemptionPolicy"] {
            errors.push(field::invalid(
                "preemptionPolicy",
                &class["preemptionPolicy"],
                "field is immutable",
            ));
        }
        return errors;
    }
    let name = str_of(&class["metadata"]["name"]);
    let value = class["value"].as_i64().unwrap_or(0);
    if name.starts_with("system-") {
        let why = match SYSTEM_CLASSES.iter().find(|(n, _)| *n == name) {
            None => format!("{name} is not a known system priority class"),
            Some((_, v)) if *v != value => format!("value of {name} PriorityClass must be {v}"),
            Some(_) if class["globalDefault"] == true => {
                format!("globalDefault of {name} PriorityClass must be false")
            }
            Some(_) => String::new(),
        };
        if !why.is_empty() {
            errors.push(field::forbidden(
                "metadata.name",
                &format!("priority class names with 'system-' prefix are reserved for system use only. error: {why}"),
            ));
        }
    } else if value > HIGHEST_USER_PRIORITY {
        errors.push(field::forbidden(
            "value",
            &format!("maximum allowed value of a user defined priority is {HIGHEST_USER_PRIORITY}"),
        ));
    }
    if !class["preemptionPolicy"].is_null() {
        field::check_enum(
            &mut errors,
            "preemptionPolicy",
            &class["preemptionPolicy"],
            &["PreemptLowerPriority", "Never"],
        );
    }
    errors
}

/// Errors of a Lease.
pub(crate) fn validate_lease(lease: &Value) -> Errors {
    let mut errors = Errors::new();
    let spec = &lease["spec"];
    if let Some(d) = spec["leaseDurationSeconds"].as_i64().filter(|d| *d <= 0) {
        errors.push(field::invalid(
            "spec.leaseDurationSeconds",
            &json!(d),
            "must be greater than 0",
        ));
    }
    if let Some(t) = spec["leaseTransitions"].as_i64().filter(|t| *t < 0) {
        errors.push(field::invalid(
            "spec.leaseTransitions",
            &json!(t),
            "must be greater than or equal to 0",
        ));
    }
    errors
}

/// Errors of a (core/v1) Event: its namespace must be the involved object's.
pub(crate) fn validate_event(event: &Value) -> Errors {
    let mut errors = Errors::new();
    if !event["eventTime"].is_null() {
        return errors;
    }
    let namespace = str_of(&event["metadata"]["namespace"]);
    let involved = str_of(&event["involvedObject"]["namespace"]);
    let matches = if involved.is_empty() {
        namespace.is_empty() || namespace == "default"
    } else {
        namespace == involved
    };
    if !matches {
        errors.push(field::invalid_str(
            "involvedObject.namespace",
            involved,
            "does not match event.namespace",
        ));
    }
    errors
}

/// Errors of a PodDisruptionBudget.
pub(crate) fn validate_pod_disruption_budget(budget: &Value) -> Errors {
    let mut errors = Errors::new();
    let spec = &budget["spec"];
    if !spec["minAvailable"].is_null() && !spec["maxUnavailable"].is_null() {
        errors.push(field::invalid(
            "spec",
            spec,
            "minAvailable and maxUnavailable cannot be both set",
        ));
    }
    if let Some(policy) = spec.get("unhealthyPodEvictionPolicy").filter(|v| !v.is_null()) {
        field::check_optional_enum(
            &mut errors,
            "spec.unhealthyPodEvictionPolicy",
            policy,
            &["AlwaysAllow", "IfHealthyBudget"],
        );
    }
    errors
}
