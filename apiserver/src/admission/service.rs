//! Service validation, after k8s.io/kubernetes pkg/apis/core/validation/validation.go
//! `validateService`, `validateServicePort` and, on update, `validateUpgradeDowngradeClusterIPs`
//! (a Service's cluster IP may not change once set). Left out: IP family and dual-stack rules,
//! load balancer source ranges, external IPs, traffic policy combinations, session affinity
//! config bounds (cluster IP syntax and range are the allocator's).

use std::collections::HashSet;

use serde_json::{Value, json};

use super::field::{self, Errors, check_enum, items, str_of};

fn is_headless(spec: &Value) -> bool {
    spec["clusterIP"] == "None"
}

/// Errors of a Service's spec; `old` on update.
pub(crate) fn validate(service: &Value, old: Option<&Value>) -> Errors {
    let mut errors = Errors::new();
    let spec = &service["spec"];
    if let Some(old) = old {
        cluster_ip_unchanged(&mut errors, spec, &old["spec"]);
    }
    let kind = str_of(&spec["type"]);
    let ports = items(&spec["ports"]);
    if ports.is_empty() && !is_headless(spec) && kind != "ExternalName" {
        errors.push(field::required("spec.ports", ""));
    }
    match kind {
        "LoadBalancer" | "NodePort" if is_headless(spec) => errors.push(field::invalid_str(
            "spec.clusterIPs[0]",
            "None",
            &format!("may not be set to 'None' for {kind} services"),
        )),
        "ExternalName" => {
            let cname = str_of(&spec["externalName"]);
            let cname = cname.strip_suffix('.').unwrap_or(cname);
            if cname.is_empty() {
                errors.push(field::required("spec.externalName", ""));
            } else {
                field::check_subdomain(&mut errors, "spec.externalName", cname);
            }
        }
        _ => {}
    }
    let mut names = HashSet::new();
    for (i, port) in ports.iter().enumerate() {
        let at = format!("spec.ports[{i}]");
        let name = str_of(&port["name"]);
        if ports.len() > 1 && name.is_empty() {
            errors.push(field::required(&format!("{at}.name"), ""));
        } else if !name.is_empty() {
            field::check_label(&mut errors, &format!("{at}.name"), name);
            if !names.insert(name) {
                errors.push(field::duplicate(&format!("{at}.name"), &json!(name)));
            }
        }
        let number = port["port"].as_i64().unwrap_or(0);
        for message in field::port_number(number) {
            errors.push(field::invalid(&format!("{at}.port"), &json!(number), &message));
        }
        check_enum(
            &mut errors,
            &format!("{at}.protocol"),
            &port["protocol"],
            &["SCTP", "TCP", "UDP"],
        );
        target_port(&mut errors, &port["targetPort"], &format!("{at}.targetPort"));
        if let Some(app) = port["appProtocol"].as_str() {
            field::check_qualified_name(&mut errors, &format!("{at}.appProtocol"), app);
        }
    }
    field::labels(&mut errors, "spec.selector", &spec["selector"]);
    check_enum(
        &mut errors,
        "spec.sessionAffinity",
        &spec["sessionAffinity"],
        &["ClientIP", "None"],
    );
    if spec["sessionAffinity"] == "None" && !spec["sessionAffinityConfig"].is_null() {
        errors.push(field::forbidden(
            "spec.sessionAffinityConfig",
            "must not be set when session affinity is None",
        ));
    }
    check_enum(
        &mut errors,
        "spec.type",
        &spec["type"],
        &["ClusterIP", "ExternalName", "LoadBalancer", "NodePort"],
    );
    if kind == "ClusterIP" {
        for (i, port) in ports.iter().enumerate() {
            if port["nodePort"].as_i64().is_some_and(|n| n != 0) {
                errors.push(field::forbidden(
                    &format!("spec.ports[{i}].nodePort"),
                    "may not be used when `type` is 'ClusterIP'",
                ));
            }
        }
    }
    let mut seen = HashSet::new();
    for (i, port) in ports.iter().enumerate() {
        let key = (str_of(&port["protocol"]), port["port"].as_i64().unwrap_or(0));
        if !seen.insert(key) {
            // `field.Duplicate` of a core.ServicePort: Go's JSON of the struct.
            let value = json!({"protocol": key.0, "port": key.1, "targetPort": 0});
            errors.push(field::duplicate(&format!("spec.ports[{i}]"), &value));
        }
    }
    if let Some(policy) = spec.get("internalTrafficPolicy").filter(|v| !v.is_null()) {
        field::check_optional_enum(
            &mut errors,
            "spec.internalTrafficPolicy",
            policy,
            &["Cluster", "Local"],
        );
    }
    errors
}

/// `ValidatePortNumOrName`.
fn target_port(errors: &mut Errors, value: &Value, at: &str) {
    match value {
        Value::Number(n) => {
            let n = n.as_i64().unwrap_or(0);
            for message in field::port_number(n) {
                errors.push(field::invalid(at, &json!(n), &message));
            }
        }
        Value::String(name) => field::push_invalid(errors, at, name, field::port_name(name)),
        _ => {}
    }
}

/// The primary cluster IP of a Service may not change (a headless or ExternalName Service
/// excepted); an empty one in the update keeps the old (kube-apiserver's `patchAllocatedValues`).
fn cluster_ip_unchanged(errors: &mut Errors, new: &Value, old: &Value) {
    if new["type"] == "ExternalName" || old["type"] == "ExternalName" {
        return;
    }
    let (old_ip, new_ip) = (str_of(&old["clusterIP"]), str_of(&new["clusterIP"]));
    if old_ip.is_empty() || new_ip.is_empty() || old_ip == new_ip || (old_ip == "None" && new_ip == "None") {
        return;
    }
    errors.push(field::invalid(
        "spec.clusterIPs[0]",
        &json!([new_ip]),
        "may not change once set",
    ));
}
