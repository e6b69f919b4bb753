//! Tests of [`super`]: each rule of the Pod Security Standards, at each level.

use rstest::rstest;
use serde_json::json;

use super::*;

fn spec(value: serde_json::Value) -> PodSpec {
    serde_json::from_value(value).unwrap()
}

fn hardened_container() -> serde_json::Value {
    json!({"name": "app", "image": "nginx", "securityContext": {
        "allowPrivilegeEscalation": false, "runAsNonRoot": true,
        "seccompProfile": {"type": "RuntimeDefault"}, "capabilities": {"drop": ["ALL"]}}})
}

#[test]
fn the_default_pod_passes_baseline_but_not_restricted() {
    let pod = spec(json!({"containers": [{"name": "app", "image": "nginx"}]}));
    assert!(violations(PodSecurityLevel::Baseline, &pod, None).is_empty());
    let broken = violations(PodSecurityLevel::Restricted, &pod, None);
    assert_eq!(broken.len(), 4, "{broken:#?}");
}

#[test]
fn a_hardened_pod_passes_restricted() {
    let pod = spec(json!({"containers": [hardened_container()],
        "volumes": [{"name": "cfg", "configMap": {"name": "c"}}, {"name": "tmp", "emptyDir": {}}]}));
    assert_eq!(
        violations(PodSecurityLevel::Restricted, &pod, None),
        Vec::<String>::new()
    );
}

#[test]
fn pod_level_settings_satisfy_restricted_for_every_container() {
    let pod = spec(json!({
        "securityContext": {"runAsNonRoot": true, "seccompProfile": {"type": "Localhost", "localhostProfile": "p"}},
        "containers": [{"name": "app", "image": "nginx", "securityContext": {
            "allowPrivilegeEscalation": false, "capabilities": {"drop": ["ALL"], "add": ["NET_BIND_SERVICE"]}}}]}));
    assert_eq!(
        violations(PodSecurityLevel::Restricted, &pod, None),
        Vec::<String>::new()
    );
}

#[rstest]
#[case::host_network(json!({"hostNetwork": true}), "hostNetwork")]
#[case::host_pid(json!({"hostPID": true}), "hostPID")]
#[case::host_path(json!({"volumes": [{"name": "root", "hostPath": {"path": "/"}}]}), "hostPath")]
#[case::privileged(json!({"containers": [{"name": "app", "securityContext": {"privileged": true}}]}), "privileged")]
#[case::host_port(json!({"containers": [{"name": "app", "ports": [{"containerPort": 80, "hostPort": 80}]}]}), "hostPort")]
#[case::sys_admin(json!({"containers": [{"name": "app", "securityContext": {"capabilities": {"add": ["SYS_ADMIN"]}}}]}), "SYS_ADMIN")]
#[case::unsafe_sysctl(json!({"securityContext": {"sysctls": [{"name": "kernel.msgmax", "value": "1"}]}}), "kernel.msgmax")]
#[case::unconfined_seccomp(json!({"securityContext": {"seccompProfile": {"type": "Unconfined"}}}), "Unconfined")]
#[case::proc_mount(json!({"containers": [{"name": "app", "securityContext": {"procMount": "Unmasked"}}]}), "procMount")]
#[case::selinux_type(json!({"securityContext": {"seLinuxOptions": {"type": "spc_t"}}}), "spc_t")]
#[case::host_ipc(json!({"hostIPC": true}), "hostIPC")]
#[case::host_process_pod(json!({"securityContext": {"windowsOptions": {"hostProcess": true}}}), "hostProcess")]
#[case::host_process_container(json!({"containers": [{"name": "app", "securityContext": {"windowsOptions": {"hostProcess": true}}}]}), "hostProcess")]
#[case::net_raw(json!({"containers": [{"name": "app", "securityContext": {"capabilities": {"add": ["NET_RAW"]}}}]}), "NET_RAW")]
#[case::init_host_port(json!({"initContainers": [{"name": "init", "ports": [{"containerPort": 22, "hostPort": 22}]}]}), "hostPort")]
#[case::apparmor_pod_unconfined(json!({"securityContext": {"appArmorProfile": {"type": "Unconfined"}}}), "appArmorProfile")]
#[case::apparmor_container_unconfined(json!({"containers": [{"name": "app", "securityContext": {"appArmorProfile": {"type": "Unconfined"}}}]}), "appArmorProfile")]
#[case::selinux_user(json!({"containers": [{"name": "app", "securityContext": {"seLinuxOptions": {"user": "system_u"}}}]}), "user or role")]
#[case::selinux_role(json!({"securityContext": {"seLinuxOptions": {"role": "sysadm_r"}}}), "user or role")]
#[case::container_seccomp_unconfined(json!({"containers": [{"name": "app", "securityContext": {"seccompProfile": {"type": "Unconfined"}}}]}), "Unconfined")]
#[case::liveness_http_host(json!({"containers": [{"name": "app", "livenessProbe": {"httpGet": {"host": "10.0.0.1", "port": 10250}}}]}), "livenessProbe")]
#[case::readiness_tcp_host(json!({"containers": [{"name": "app", "readinessProbe": {"tcpSocket": {"host": "169.254.169.254", "port": 80}}}]}), "readinessProbe")]
#[case::startup_http_host(json!({"initContainers": [{"name": "init", "startupProbe": {"httpGet": {"host": "h", "port": 80}}}]}), "startupProbe")]
#[case::post_start_host(json!({"containers": [{"name": "app", "lifecycle": {"postStart": {"httpGet": {"host": "h", "port": 80}}}}]}), "postStart")]
#[case::pre_stop_host(json!({"containers": [{"name": "app", "lifecycle": {"preStop": {"tcpSocket": {"host": "h", "port": 80}}}}]}), "preStop")]
#[case::init_container(json!({"initContainers": [{"name": "init", "securityContext": {"privileged": true}}]}), "\"init\"")]
#[case::ephemeral(json!({"ephemeralContainers": [{"name": "debug", "securityContext": {"privileged": true}}]}), "\"debug\"")]
fn baseline_rejects_each_escalation(#[case] change: serde_json::Value, #[case] named: &str) {
    let mut value = json!({"containers": [{"name": "app", "image": "nginx"}]});
    json_patch::merge(&mut value, &change);
    let broken = violations(PodSecurityLevel::Baseline, &spec(value), None);
    assert_eq!(broken.len(), 1, "{broken:#?}");
    assert!(broken[0].contains(named), "{broken:#?}");
}

#[rstest]
#[case::baseline_capabilities(json!({"containers": [{"name": "app", "securityContext": {"capabilities": {"add": ["NET_BIND_SERVICE", "CHOWN", "SYS_CHROOT"], "drop": ["ALL"]}}}]}))]
#[case::safe_sysctls(json!({"securityContext": {"sysctls": [{"name": "net.ipv4.ip_local_port_range", "value": "1 2"}, {"name": "net.ipv4.tcp_keepalive_time", "value": "60"}]}}))]
#[case::host_port_zero(json!({"containers": [{"name": "app", "ports": [{"containerPort": 80, "hostPort": 0}]}]}))]
#[case::selinux_container_type_and_level(json!({"securityContext": {"seLinuxOptions": {"type": "container_init_t", "level": "s0:c1,c2"}}}))]
#[case::runtime_default_everything(json!({"securityContext": {"seccompProfile": {"type": "RuntimeDefault"}, "appArmorProfile": {"type": "RuntimeDefault"}}}))]
#[case::proc_mount_default(json!({"containers": [{"name": "app", "securityContext": {"procMount": "Default", "privileged": false}}]}))]
#[case::probes_without_host(json!({"containers": [{"name": "app", "livenessProbe": {"httpGet": {"port": 80, "host": ""}}, "readinessProbe": {"tcpSocket": {"port": 80}}}]}))]
#[case::host_namespaces_false(json!({"hostNetwork": false, "hostPID": false, "hostIPC": false}))]
fn baseline_allows_what_the_standard_allows(#[case] change: serde_json::Value) {
    let mut value = json!({"containers": [{"name": "app", "image": "nginx"}]});
    json_patch::merge(&mut value, &change);
    assert_eq!(
        violations(PodSecurityLevel::Baseline, &spec(value), None),
        Vec::<String>::new()
    );
}

/// The pod of the issue: every host escalation at once.
fn escape_pod() -> PodSpec {
    spec(json!({"hostNetwork": true, "hostPID": true,
        "containers": [{"name": "app", "image": "nginx", "securityContext": {"privileged": true},
                        "ports": [{"containerPort": 22, "hostPort": 22}]}],
        "volumes": [{"name": "root", "hostPath": {"path": "/"}}]}))
}

#[test]
fn the_escape_pod_breaks_five_baseline_rules_and_privileged_checks_nothing() {
    let broken = violations(PodSecurityLevel::Baseline, &escape_pod(), None);
    assert_eq!(broken.len(), 5, "{broken:#?}");
    assert!(violations(PodSecurityLevel::Privileged, &escape_pod(), None).is_empty());
}

#[test]
fn the_level_defaults_to_baseline_and_parses_all_three() {
    assert_eq!(PodSecurityLevel::default(), PodSecurityLevel::Baseline);
    for (text, level) in [
        ("privileged", PodSecurityLevel::Privileged),
        ("baseline", PodSecurityLevel::Baseline),
        ("restricted", PodSecurityLevel::Restricted),
    ] {
        assert_eq!(
            serde_json::from_value::<PodSecurityLevel>(json!(text)).unwrap(),
            level
        );
        assert_eq!(level.to_string(), text);
    }
    assert!(serde_json::from_value::<PodSecurityLevel>(json!("none")).is_err());
}

#[test]
fn apparmor_annotations_other_than_default_or_localhost_are_rejected() {
    let pod = spec(json!({"containers": [{"name": "app", "image": "nginx"}]}));
    let annotations = BTreeMap::from([(
        format!("{APPARMOR_ANNOTATION_PREFIX}app"),
        "unconfined".to_string(),
    )]);
    assert_eq!(
        violations(PodSecurityLevel::Baseline, &pod, Some(&annotations)).len(),
        1
    );
    let fine = BTreeMap::from([(
        format!("{APPARMOR_ANNOTATION_PREFIX}app"),
        "runtime/default".to_string(),
    )]);
    assert!(violations(PodSecurityLevel::Baseline, &pod, Some(&fine)).is_empty());
}

#[rstest]
#[case::root_user(json!({"securityContext": {"runAsUser": 0}}), "runAsUser")]
#[case::nfs_volume(json!({"volumes": [{"name": "n", "nfs": {"server": "s", "path": "/"}}]}), "nfs")]
fn restricted_rejects_what_baseline_allows(#[case] change: serde_json::Value, #[case] named: &str) {
    let mut value = json!({"containers": [hardened_container()]});
    json_patch::merge(&mut value, &change);
    let pod = spec(value);
    assert!(violations(PodSecurityLevel::Baseline, &pod, None).is_empty());
    let broken = violations(PodSecurityLevel::Restricted, &pod, None);
    assert_eq!(broken.len(), 1, "{broken:#?}");
    assert!(broken[0].contains(named), "{broken:#?}");
}
