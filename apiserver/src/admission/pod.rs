//! Pod validation on create and update, after k8s.io/kubernetes pkg/apis/core/validation/
//! validation.go: `validatePodMetadataAndSpec`, `ValidatePodSpec`, `validateContainers`,
//! `validateContainerCommon`, `validateContainerPorts`, `ValidateEnv`, `ValidateVolumes`,
//! `ValidateVolumeMounts`, `ValidateTolerations`, `validateRestartPolicy`, `validateDNSPolicy`,
//! `ValidatePodCreate` and `ValidatePodUpdate` (the spec rules of an update are in
//! `crate::pod_update`). Left out: probes, lifecycle handlers, security contexts, affinity,
//! topology spread, resource quantities and claims, DNS config, host aliases, OS-specific rules.

use std::collections::HashSet;

use serde_json::{Value, json};

use super::field::{self, Errors, check_enum, items, str_of};

const PROTOCOLS: &[&str] = &["SCTP", "TCP", "UDP"];

/// Errors of the pod's spec (and the pod-only rules) at `spec`.
pub(crate) fn validate(pod: &Value, create: bool) -> Errors {
    let mut errors = Errors::new();
    let spec = &pod["spec"];
    validate_spec(&mut errors, spec, "spec");
    field::check_nonnegative(
        &mut errors,
        "spec.terminationGracePeriodSeconds",
        &spec["terminationGracePeriodSeconds"],
    );
    if create {
        if !items(&spec["ephemeralContainers"]).is_empty() {
            errors.push(field::forbidden(
                "spec.ephemeralContainers",
                "cannot be set on create",
            ));
        }
        if !str_of(&spec["nodeName"]).is_empty() && !items(&spec["schedulingGates"]).is_empty() {
            errors.push(field::forbidden(
                "spec.nodeName",
                "cannot be set until all schedulingGates have been cleared",
            ));
        }
    }
    errors
}

/// `ValidatePodSpec` (also for pod templates of workloads).
pub(crate) fn validate_spec(errors: &mut Errors, spec: &Value, path: &str) {
    if spec["terminationGracePeriodSeconds"].is_null() {
        errors.push(field::required(
            &format!("{path}.terminationGracePeriodSeconds"),
            "",
        ));
    }
    let volumes = validate_volumes(errors, &spec["volumes"], &format!("{path}.volumes"));
    let containers = items(&spec["containers"]);
    let containers_path = format!("{path}.containers");
    if containers.is_empty() {
        errors.push(field::required(&containers_path, ""));
    }
    let mut names = HashSet::new();
    for (i, container) in containers.iter().enumerate() {
        let at = format!("{containers_path}[{i}]");
        validate_container(errors, container, &at, &volumes);
        let name = str_of(&container["name"]);
        if !names.insert(name) {
            errors.push(field::duplicate(&format!("{at}.name"), &json!(name)));
        }
    }
    for (i, container) in items(&spec["initContainers"]).iter().enumerate() {
        let at = format!("{path}.initContainers[{i}]");
        validate_container(errors, container, &at, &volumes);
        let name = str_of(&container["name"]);
        if !name.is_empty() && !names.insert(name) {
            errors.push(field::duplicate(&format!("{at}.name"), &json!(name)));
        }
    }
    check_enum(
        errors,
        &format!("{path}.restartPolicy"),
        &spec["restartPolicy"],
        &["Always", "OnFailure", "Never"],
    );
    check_enum(
        errors,
        &format!("{path}.dnsPolicy"),
        &spec["dnsPolicy"],
        &["ClusterFirstWithHostNet", "ClusterFirst", "Default", "None"],
    );
    if spec["dnsPolicy"] == "None" && spec["dnsConfig"].is_null() {
        errors.push(field::required(
            &format!("{path}.dnsConfig"),
            "must provide `dnsConfig` when `dnsPolicy` is None",
        ));
    }
    field::labels(errors, &format!("{path}.nodeSelector"), &spec["nodeSelector"]);
    for (i, secret) in items(&spec["imagePullSecrets"]).iter().enumerate() {
        if str_of(&secret["name"]).is_empty() {
            errors.push(field::required(&format!("{path}.imagePullSecrets[{i}].name"), ""));
        }
    }
    for (key, rule) in [
        (
            "serviceAccountName",
            field::dns1123_subdomain as fn(&str) -> Vec<String>,
        ),
        ("nodeName", field::dns1123_subdomain),
    ] {
        let value = str_of(&spec[key]);
        if !value.is_empty() {
            field::push_invalid(errors, &format!("{path}.{key}"), value, rule(value));
        }
    }
    if let Some(deadline) = spec["activeDeadlineSeconds"].as_i64()
        && !(1..=i64::from(i32::MAX)).contains(&deadline)
    {
        errors.push(field::invalid(
            &format!("{path}.activeDeadlineSeconds"),
            &json!(deadline),
            &format!("must be between 1 and {}, inclusive", i32::MAX),
        ));
    }
    for key in ["hostname", "subdomain"] {
        let value = str_of(&spec[key]);
        if !value.is_empty() {
            field::check_label(errors, &format!("{path}.{key}"), value);
        }
    }
    validate_tolerations(errors, &spec["tolerations"], &format!("{path}.tolerations"));
    let class = str_of(&spec["priorityClassName"]);
    if !class.is_empty() {
        field::check_subdomain(errors, &format!("{path}.priorityClassName"), class);
    }
    if !spec["preemptionPolicy"].is_null() {
        check_enum(
            errors,
            &format!("{path}.preemptionPolicy"),
            &spec["preemptionPolicy"],
            &["PreemptLowerPriority", "Never"],
        );
    }
}

/// `ValidateVolumes`: the names of the valid volumes.
fn validate_volumes<'a>(errors: &mut Errors, volumes: &'a Value, path: &str) -> HashSet<&'a str> {
    let mut names = HashSet::new();
    for (i, volume) in items(volumes).iter().enumerate() {
        let at = format!("{path}[{i}]");
        let mut found = Errors::new();
        for (source, key) in [
            ("secret", "secretName"),
            ("configMap", "name"),
            ("persistentVolumeClaim", "claimName"),
            ("hostPath", "path"),
        ] {
            if volume[source].is_object() && str_of(&volume[source][key]).is_empty() {
                found.push(field::required(&format!("{at}.{source}.{key}"), ""));
            }
        }
        let name = str_of(&volume["name"]);
        if name.is_empty() {
            found.push(field::required(&format!("{at}.name"), ""));
        } else {
            field::check_label(&mut found, &format!("{at}.name"), name);
        }
        if names.contains(name) {
            found.push(field::duplicate(&format!("{at}.name"), &json!(name)));
        }
        if found.is_empty() {
            names.insert(name);
        }
        errors.extend(found);
    }
    names
}

/// `validateContainerCommon`.
fn validate_container(errors: &mut Errors, container: &Value, at: &str, volumes: &HashSet<&str>) {
    let name = str_of(&container["name"]);
    if name.is_empty() {
        errors.push(field::required(&format!("{at}.name"), ""));
    } else {
        field::check_label(errors, &format!("{at}.name"), name);
    }
    if str_of(&container["image"]).is_empty() {
        errors.push(field::required(&format!("{at}.image"), ""));
    }
    check_enum(
        errors,
        &format!("{at}.terminationMessagePolicy"),
        &container["terminationMessagePolicy"],
        &["File", "FallbackToLogsOnError"],
    );
    validate_ports(errors, &container["ports"], &format!("{at}.ports"));
    for (i, var) in items(&container["env"]).iter().enumerate() {
        let field_path = format!("{at}.env[{i}].name");
        let name = str_of(&var["name"]);
        if name.is_empty() {
            errors.push(field::required(&field_path, ""));
        } else if name.bytes().any(|b| !(0x20..0x7f).contains(&b) || b == b'=') {
            errors.push(field::invalid_str(
                &field_path,
                name,
                "a valid environment variable name must consist only of printable ASCII characters other than '='",
            ));
        }
    }
    let mut mount_paths = HashSet::new();
    for (i, mount) in items(&container["volumeMounts"]).iter().enumerate() {
        let mount_at = format!("{at}.volumeMounts[{i}]");
        let name = str_of(&mount["name"]);
        if name.is_empty() {
            errors.push(field::required(&format!("{mount_at}.name"), ""));
        }
        if !volumes.contains(name) {
            errors.push(field::FieldError {
                field: format!("{mount_at}.name"),
                type_: "Not found",
                detail: field::go_quote(name),
            });
        }
        let mount_path = str_of(&mount["mountPath"]);
        if mount_path.is_empty() {
            errors.push(field::required(&format!("{mount_at}.mountPath"), ""));
        }
        if !mount_paths.insert(mount_path) {
            errors.push(field::invalid_str(
                &format!("{mount_at}.mountPath"),
                mount_path,
                "must be unique",
            ));
        }
    }
    check_enum(
        errors,
        &format!("{at}.imagePullPolicy"),
        &container["imagePullPolicy"],
        &["Always", "IfNotPresent", "Never"],
    );
}

/// `validateContainerPorts`.
fn validate_ports(errors: &mut Errors, ports: &Value, path: &str) {
    let mut names = HashSet::new();
    for (i, port) in items(ports).iter().enumerate() {
        let at = format!("{path}[{i}]");
        let name = str_of(&port["name"]);
        if !name.is_empty() {
            let messages = field::port_name(name);
            if !messages.is_empty() {
                field::push_invalid(errors, &format!("{at}.name"), name, messages);
            } else if !names.insert(name) {
                errors.push(field::duplicate(&format!("{at}.name"), &json!(name)));
            }
        }
        match port["containerPort"].as_i64().unwrap_or(0) {
            0 => errors.push(field::required(&format!("{at}.containerPort"), "")),
            n => {
                for message in field::port_number(n) {
                    errors.push(field::invalid(
                        &format!("{at}.containerPort"),
                        &json!(n),
                        &message,
                    ));
                }
            }
        }
        if let Some(n) = port["hostPort"].as_i64().filter(|n| *n != 0) {
            for message in field::port_number(n) {
                errors.push(field::invalid(&format!("{at}.hostPort"), &json!(n), &message));
            }
        }
        check_enum(errors, &format!("{at}.protocol"), &port["protocol"], PROTOCOLS);
    }
}

/// `ValidateTolerations`.
fn validate_tolerations(errors: &mut Errors, tolerations: &Value, path: &str) {
    for (i, toleration) in items(tolerations).iter().enumerate() {
        let at = format!("{path}[{i}]");
        let key = str_of(&toleration["key"]);
        let operator = str_of(&toleration["operator"]);
        let effect = str_of(&toleration["effect"]);
        let value = str_of(&toleration["value"]);
        if !key.is_empty() {
            field::push_invalid(errors, &format!("{at}.key"), key, field::qualified_name(key));
        }
        if key.is_empty() && operator != "Exists" {
            errors.push(field::invalid_str(
                &format!("{at}.operator"),
                operator,
                "operator must be Exists when `key` is empty, which means \"match all values and all keys\"",
            ));
        }
        if !toleration["tolerationSeconds"].is_null() && effect != "NoExecute" {
            errors.push(field::invalid_str(
                &format!("{at}.effect"),
                effect,
                "effect must be 'NoExecute' when `tolerationSeconds` is set",
            ));
        }
        match operator {
            "Equal" | "" => {
                let messages = field::label_value(value);
                if !messages.is_empty() {
                    errors.push(field::invalid_str(
                        &format!("{at}.operator"),
                        value,
                        &messages.join(";"),
                    ));
                }
            }
            "Exists" => {
                if !value.is_empty() {
                    errors.push(field::invalid_str(
                        &format!("{at}.operator"),
                        value,
                        "value must be empty when `operator` is 'Exists'",
                    ));
                }
            }
            _ => errors.push(field::not_supported(
                &format!("{at}.operator"),
                &toleration["operator"],
                &["Equal", "Exists"],
            )),
        }
        if !effect.is_empty() {
            field::check_optional_enum(
                errors,
                &format!("{at}.effect"),
                &toleration["effect"],
                &["NoSchedule", "PreferNoSchedule", "NoExecute"],
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(pod: Value) -> Vec<String> {
        validate(&pod, true)
            .into_iter()
            .map(|e| format!("{}: {}", e.field, e.type_))
            .collect()
    }

    fn defaulted(spec: Value) -> Value {
        let mut pod = json!({ "spec": spec });
        super::super::defaults::default_pod_spec(&mut pod["spec"]);
        pod
    }

    #[test]
    fn a_minimal_pod_is_valid() {
        assert!(fields(defaulted(json!({"containers": [{"name": "a", "image": "x"}]}))).is_empty());
    }

    #[test]
    fn containers_ports_and_enums() {
        assert_eq!(
            fields(defaulted(
                json!({"containers": [{"name": "A", "ports": [{"containerPort": 70000, "protocol": "HTTP"}]}],
                "restartPolicy": "Sometimes"})
            )),
            [
                "spec.containers[0].name: Invalid value",
                "spec.containers[0].image: Required value",
                "spec.containers[0].ports[0].containerPort: Invalid value",
                "spec.containers[0].ports[0].protocol: Unsupported value",
                "spec.restartPolicy: Unsupported value",
            ]
        );
        assert_eq!(
            fields(defaulted(json!({"containers": []}))),
            ["spec.containers: Required value"]
        );
        assert_eq!(
            fields(defaulted(json!({"containers": [{"name": "a", "image": "x",
                "volumeMounts": [{"name": "v", "mountPath": "/v"}]}]}))),
            ["spec.containers[0].volumeMounts[0].name: Not found"]
        );
    }
}
