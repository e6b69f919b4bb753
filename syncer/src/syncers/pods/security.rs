//! The Pod Security Standards, checked on a virtual pod before it reaches the host.
//!
//! A tenant is admin of its virtual cluster, so the virtual API server's own Pod Security
//! admission is the tenant's to switch off. `sync.pods.podSecurityStandard` makes vcsync the
//! gate instead: a pod that breaks the configured level never gets a host pod, and the
//! virtual pod gets a Warning event `PodSecurityViolation` naming every broken rule.
//!
//! The level defaults to `baseline`; `privileged` (no check) must be chosen explicitly.
//!
//! The checks follow the published standards (Kubernetes 1.37), field by field, for the pod
//! and every init, regular and ephemeral container: baseline's hostProcess, host namespaces,
//! privileged, capabilities, hostPath volumes, host ports, AppArmor, SELinux, `/proc` mount
//! type, seccomp, sysctls and host probes / lifecycle hooks; restricted adds volume types,
//! privilege escalation, non-root, seccomp and capabilities. Pure: a spec (and annotations)
//! in, the list of violations out.
//!
//! Tenant tolerations are filtered here too ([`tenant_tolerations`]): a toleration lets a pod
//! onto host nodes whose taints keep everyone else off, so only the ones
//! `sync.pods.tolerations.allow` matches reach the host pod; the others are dropped (the pod
//! still runs, where the host scheduler puts it) and the virtual pod gets a Normal event
//! `TolerationsDropped` naming them.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    Capabilities, Container, EphemeralContainer, Lifecycle, LifecycleHandler, Pod, PodSecurityContext,
    PodSpec, Probe, SecurityContext, Toleration,
};
use kube::Resource;

pub use crate::config::PodSecurityLevel;
use crate::config::{TolerationPattern, TolerationPolicy};

/// Capabilities baseline allows a container to add.
const BASELINE_CAPABILITIES: &[&str] = &[
    "AUDIT_WRITE",
    "CHOWN",
    "DAC_OVERRIDE",
    "FOWNER",
    "FSETID",
    "KILL",
    "MKNOD",
    "NET_BIND_SERVICE",
    "SETFCAP",
    "SETGID",
    "SETPCAP",
    "SETUID",
    "SYS_CHROOT",
];

/// Sysctls baseline allows.
const SAFE_SYSCTLS: &[&str] = &[
    "kernel.shm_rmid_forced",
    "net.ipv4.ip_local_port_range",
    "net.ipv4.ip_unprivileged_port_start",
    "net.ipv4.tcp_syncookies",
    "net.ipv4.ping_group_range",
    "net.ipv4.ip_local_reserved_ports",
    "net.ipv4.tcp_keepalive_time",
    "net.ipv4.tcp_fin_timeout",
    "net.ipv4.tcp_keepalive_intvl",
    "net.ipv4.tcp_keepalive_probes",
];

/// SELinux types baseline allows (besides none).
const SELINUX_TYPES: &[&str] = &[
    "container_t",
    "container_init_t",
    "container_kvm_t",
    "container_engine_t",
];

/// Volume sources restricted allows.
const RESTRICTED_VOLUMES: &[&str] = &[
    "configMap",
    "csi",
    "downwardAPI",
    "emptyDir",
    "ephemeral",
    "image",
    "name",
    "persistentVolumeClaim",
    "projected",
    "secret",
];

const APPARMOR_ANNOTATION_PREFIX: &str = "container.apparmor.security.beta.kubernetes.io/";

/// One container of any sort, as the checks see it.
struct ContainerView<'a> {
    name: &'a str,
    security: Option<&'a SecurityContext>,
    host_ports: Vec<i32>,
    /// `(where, host)` of every probe and lifecycle handler that names a `host`.
    handler_hosts: Vec<(&'static str, &'a str)>,
}

/// The `host` fields of a container's probes and lifecycle handlers (`httpGet.host`,
/// `tcpSocket.host`), non-empty ones only.
fn handler_hosts<'a>(
    probes: [(&'static str, Option<&'a Probe>); 3],
    lifecycle: Option<&'a Lifecycle>,
) -> Vec<(&'static str, &'a str)> {
    let probes = probes.into_iter().filter_map(|(field, probe)| {
        let probe = probe?;
        Some((field, probe.http_get.as_ref(), probe.tcp_socket.as_ref()))
    });
    let hooks = [
        (
            "lifecycle.postStart",
            lifecycle.and_then(|l| l.post_start.as_ref()),
        ),
        ("lifecycle.preStop", lifecycle.and_then(|l| l.pre_stop.as_ref())),
    ]
    .into_iter()
    .filter_map(|(field, handler): (&'static str, Option<&'a LifecycleHandler>)| {
        let handler = handler?;
        Some((field, handler.http_get.as_ref(), handler.tcp_socket.as_ref()))
    });
    probes
        .chain(hooks)
        .flat_map(|(field, http, tcp)| {
            [
                http.and_then(|h| h.host.as_deref()),
                tcp.and_then(|t| t.host.as_deref()),
            ]
            .into_iter()
            .flatten()
            .filter(|host| !host.is_empty())
            .map(move |host| (field, host))
        })
        .collect()
}

fn containers(spec: &PodSpec) -> Vec<ContainerView<'_>> {
    let plain = spec
        .init_containers
        .iter()
        .flatten()
        .chain(spec.containers.iter())
        .map(|c: &Container| ContainerView {
            name: &c.name,
            security: c.security_context.as_ref(),
            host_ports: c.ports.iter().flatten().filter_map(|p| p.host_port).collect(),
            handler_hosts: handler_hosts(
                [
                    ("livenessProbe", c.liveness_probe.as_ref()),
                    ("readinessProbe", c.readiness_probe.as_ref()),
                    ("startupProbe", c.startup_probe.as_ref()),
                ],
                c.lifecycle.as_ref(),
            ),
        });
    let ephemeral = spec
        .ephemeral_containers
        .iter()
        .flatten()
        .map(|c: &EphemeralContainer| ContainerView {
            name: &c.name,
            security: c.security_context.as_ref(),
            host_ports: c.ports.iter().flatten().filter_map(|p| p.host_port).collect(),
            handler_hosts: handler_hosts(
                [
                    ("livenessProbe", c.liveness_probe.as_ref()),
                    ("readinessProbe", c.readiness_probe.as_ref()),
                    ("startupProbe", c.startup_probe.as_ref()),
                ],
                c.lifecycle.as_ref(),
            ),
        });
    plain.chain(ephemeral).collect()
}

/// Every rule of `level` that the pod (`spec` and `annotations`) breaks, one readable line
/// each; empty when it may run (always, at `privileged`).
pub fn violations(
    level: PodSecurityLevel,
    spec: &PodSpec,
    annotations: Option<&BTreeMap<String, String>>,
) -> Vec<String> {
    let mut found = Vec::new();
    if level == PodSecurityLevel::Privileged {
        return found;
    }
    let pod_sc = spec.security_context.as_ref();
    let containers = containers(spec);
    baseline(spec, pod_sc, &containers, annotations, &mut found);
    if level == PodSecurityLevel::Restricted {
        restricted(spec, pod_sc, &containers, &mut found);
    }
    found
}

fn baseline(
    spec: &PodSpec,
    pod_sc: Option<&PodSecurityContext>,
    containers: &[ContainerView<'_>],
    annotations: Option<&BTreeMap<String, String>>,
    found: &mut Vec<String>,
) {
    for (on, field) in [
        (spec.host_network, "hostNetwork"),
        (spec.host_pid, "hostPID"),
        (spec.host_ipc, "hostIPC"),
    ] {
        if on == Some(true) {
            found.push(format!("host namespaces: {field}=true"));
        }
    }
    if pod_sc
        .and_then(|s| s.windows_options.as_ref())
        .and_then(|w| w.host_process)
        == Some(true)
    {
        found.push("hostProcess: pod securityContext.windowsOptions.hostProcess=true".into());
    }
    for volume in spec.volumes.iter().flatten() {
        if volume.host_path.is_some() {
            found.push(format!("hostPath volumes: volume {:?}", volume.name));
        }
    }
    if let Some(sc) = pod_sc {
        check_selinux("pod", sc.se_linux_options.as_ref(), found);
        check_seccomp_not_unconfined(
            "pod",
            sc.seccomp_profile.as_ref().map(|p| p.type_.as_str()),
            found,
        );
        check_apparmor(
            "pod",
            sc.app_armor_profile.as_ref().map(|p| p.type_.as_str()),
            found,
        );
        for sysctl in sc.sysctls.iter().flatten() {
            if !SAFE_SYSCTLS.contains(&sysctl.name.as_str()) {
                found.push(format!("sysctls: {:?} is not a safe sysctl", sysctl.name));
            }
        }
    }
    for c in containers {
        let who = format!("container {:?}", c.name);
        if c.host_ports.iter().any(|p| *p != 0) {
            found.push(format!("host ports: {who} uses hostPort {:?}", c.host_ports));
        }
        for (field, host) in &c.handler_hosts {
            found.push(format!(
                "host probes / lifecycle hooks: {who} sets {field} host {host:?}"
            ));
        }
        let Some(sc) = c.security else { continue };
        if sc.privileged == Some(true) {
            found.push(format!("privileged: {who} sets securityContext.privileged=true"));
        }
        if sc.windows_options.as_ref().and_then(|w| w.host_process) == Some(true) {
            found.push(format!("hostProcess: {who} sets windowsOptions.hostProcess=true"));
        }
        let added = added_capabilities(sc.capabilities.as_ref());
        let disallowed: Vec<&str> = added
            .iter()
            .copied()
            .filter(|cap| !BASELINE_CAPABILITIES.contains(cap))
            .collect();
        if !disallowed.is_empty() {
            found.push(format!("capabilities: {who} adds {disallowed:?}"));
        }
        check_selinux(&who, sc.se_linux_options.as_ref(), found);
        check_seccomp_not_unconfined(&who, sc.seccomp_profile.as_ref().map(|p| p.type_.as_str()), found);
        check_apparmor(
            &who,
            sc.app_armor_profile.as_ref().map(|p| p.type_.as_str()),
            found,
        );
        if sc.proc_mount.as_deref().is_some_and(|m| m != "Default") {
            found.push(format!(
                "procMount: {who} sets procMount={:?}",
                sc.proc_mount.as_deref().unwrap_or_default()
            ));
        }
    }
    for (key, value) in annotations.into_iter().flatten() {
        if key.starts_with(APPARMOR_ANNOTATION_PREFIX)
            && value != "runtime/default"
            && !value.starts_with("localhost/")
        {
            found.push(format!("appArmor: annotation {key}={value:?}"));
        }
    }
}

fn restricted(
    spec: &PodSpec,
    pod_sc: Option<&PodSecurityContext>,
    containers: &[ContainerView<'_>],
    found: &mut Vec<String>,
) {
    for volume in spec.volumes.iter().flatten() {
        let value = serde_json::to_value(volume).unwrap_or_default();
        let kinds: Vec<&String> = value
            .as_object()
            .into_iter()
            .flat_map(|o| o.keys())
            .filter(|k| !RESTRICTED_VOLUMES.contains(&k.as_str()))
            .collect();
        // hostPath is reported by baseline already.
        if let Some(kind) = kinds.into_iter().find(|k| k.as_str() != "hostPath") {
            found.push(format!("volume types: volume {:?} uses {kind}", volume.name));
        }
    }
    let pod_non_root = pod_sc.and_then(|s| s.run_as_non_root);
    let pod_seccomp = pod_sc
        .and_then(|s| s.seccomp_profile.as_ref())
        .map(|p| p.type_.as_str());
    if pod_non_root == Some(false) {
        found.push("runAsNonRoot: pod sets runAsNonRoot=false".into());
    }
    if pod_sc.and_then(|s| s.run_as_user) == Some(0) {
        found.push("runAsUser: pod sets runAsUser=0".into());
    }
    for c in containers {
        let who = format!("container {:?}", c.name);
        let sc = c.security;
        if sc.and_then(|s| s.allow_privilege_escalation) != Some(false) {
            found.push(format!(
                "allowPrivilegeEscalation: {who} must set securityContext.allowPrivilegeEscalation=false"
            ));
        }
        match sc.and_then(|s| s.run_as_non_root) {
            Some(false) => found.push(format!("runAsNonRoot: {who} sets runAsNonRoot=false")),
            None if pod_non_root != Some(true) => found.push(format!(
                "runAsNonRoot: pod or {who} must set securityContext.runAsNonRoot=true"
            )),
            _ => {}
        }
        if sc.and_then(|s| s.run_as_user) == Some(0) {
            found.push(format!("runAsUser: {who} sets runAsUser=0"));
        }
        let seccomp = sc
            .and_then(|s| s.seccomp_profile.as_ref())
            .map(|p| p.type_.as_str())
            .or(pod_seccomp);
        if !matches!(seccomp, Some("RuntimeDefault" | "Localhost")) {
            found.push(format!(
                "seccompProfile: pod or {who} must set securityContext.seccompProfile.type to RuntimeDefault or Localhost"
            ));
        }
        let capabilities = sc.and_then(|s| s.capabilities.as_ref());
        let drops_all = capabilities
            .and_then(|c| c.drop.as_ref())
            .is_some_and(|d| d.iter().any(|cap| cap == "ALL"));
        if !drops_all {
            found.push(format!(
                "capabilities: {who} must set securityContext.capabilities.drop=[\"ALL\"]"
            ));
        }
        let extra: Vec<&str> = added_capabilities(capabilities)
            .into_iter()
            .filter(|cap| *cap != "NET_BIND_SERVICE")
            .collect();
        if !extra.is_empty() {
            found.push(format!(
                "capabilities: {who} may add only NET_BIND_SERVICE, adds {extra:?}"
            ));
        }
    }
}

fn added_capabilities(capabilities: Option<&Capabilities>) -> Vec<&str> {
    capabilities
        .and_then(|c| c.add.as_ref())
        .into_iter()
        .flatten()
        .map(String::as_str)
        .collect()
}

fn check_selinux(
    who: &str,
    options: Option<&k8s_openapi::api::core::v1::SELinuxOptions>,
    found: &mut Vec<String>,
) {
    let Some(options) = options else { return };
    if let Some(kind) = options.type_.as_deref()
        && !kind.is_empty()
        && !SELINUX_TYPES.contains(&kind)
    {
        found.push(format!("seLinuxOptions: {who} sets type {kind:?}"));
    }
    if options.user.as_deref().is_some_and(|u| !u.is_empty())
        || options.role.as_deref().is_some_and(|r| !r.is_empty())
    {
        found.push(format!("seLinuxOptions: {who} sets a user or role"));
    }
}

fn check_seccomp_not_unconfined(who: &str, kind: Option<&str>, found: &mut Vec<String>) {
    if kind == Some("Unconfined") {
        found.push(format!("seccompProfile: {who} sets type Unconfined"));
    }
}

fn check_apparmor(who: &str, kind: Option<&str>, found: &mut Vec<String>) {
    if kind == Some("Unconfined") {
        found.push(format!("appArmorProfile: {who} sets type Unconfined"));
    }
}

/// Splits a tenant pod's tolerations into the ones `policy` allows (kept, in order) and the
/// ones it does not (dropped). `extra` (the configured `extraTolerations`, added to every host
/// pod anyway) counts as allowed.
pub fn tenant_tolerations<'a>(
    policy: &TolerationPolicy,
    extra: &[Toleration],
    tolerations: impl IntoIterator<Item = &'a Toleration>,
) -> (Vec<Toleration>, Vec<Toleration>) {
    tolerations
        .into_iter()
        .cloned()
        .partition(|t| extra.contains(t) || policy.allow.iter().any(|p| pattern_allows(p, t)))
}

/// Whether a toleration tolerates no more than `pattern` allows: its key matches (exactly, by
/// prefix for `prefix*`, any key for `*`, the empty key that tolerates every taint only for
/// `*`); with a pattern value (or `operator: Equal`), only `Equal` tolerations of that value;
/// with a pattern effect, only tolerations of that effect (an empty effect tolerates all).
pub fn pattern_allows(pattern: &TolerationPattern, toleration: &Toleration) -> bool {
    let key = toleration.key.as_deref().unwrap_or_default();
    let key_matches = match pattern.key.strip_suffix('*') {
        Some("") => true,
        Some(prefix) => !key.is_empty() && key.starts_with(prefix),
        None => !key.is_empty() && key == pattern.key,
    };
    let exists = toleration.operator.as_deref() == Some("Exists");
    let value_matches = match (pattern.operator.as_deref(), pattern.value.as_deref()) {
        (Some("Equal"), value) | (None, value @ Some(_)) => {
            !exists && toleration.value.as_deref().unwrap_or_default() == value.unwrap_or_default()
        }
        _ => true,
    };
    let effect_matches = pattern
        .effect
        .as_deref()
        .is_none_or(|effect| !effect.is_empty() && toleration.effect.as_deref() == Some(effect));
    key_matches && value_matches && effect_matches
}

/// One line per toleration, as `kubectl` would show them.
fn describe(tolerations: &[Toleration]) -> String {
    tolerations
        .iter()
        .map(|t| {
            let mut line = format!(
                "{{key: {:?}, operator: {}",
                t.key.as_deref().unwrap_or_default(),
                t.operator.as_deref().unwrap_or("Equal")
            );
            if let Some(value) = t.value.as_deref().filter(|v| !v.is_empty()) {
                line.push_str(&format!(", value: {value:?}"));
            }
            if let Some(effect) = t.effect.as_deref().filter(|e| !e.is_empty()) {
                line.push_str(&format!(", effect: {effect}"));
            }
            line.push('}');
            line
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// Tells the virtual pod which of its tolerations its host pod does not get (a Normal event
/// `TolerationsDropped`; repeats are folded by the event recorder). Nothing when none is.
pub(super) async fn report_dropped_tolerations(ctx: &crate::SyncContext<Pod>, virt: &Pod) {
    let config = &ctx.clients().config().sync.pods;
    let (_, dropped) = tenant_tolerations(
        &config.tolerations,
        &config.extra_tolerations,
        virt.spec.iter().flat_map(|s| s.tolerations.iter().flatten()),
    );
    if dropped.is_empty() {
        return;
    }
    let message = format!(
        "tolerations not allowed by sync.pods.tolerations, left off the host pod: {}",
        describe(&dropped)
    );
    ctx.events()
        .publish(
            &virt.object_ref(&()),
            crate::events::EventType::Normal,
            "TolerationsDropped",
            &message,
        )
        .await;
}

#[cfg(test)]
mod tests {
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

    fn toleration(value: serde_json::Value) -> Toleration {
        serde_json::from_value(value).unwrap()
    }

    fn policy(allow: serde_json::Value) -> TolerationPolicy {
        serde_json::from_value(json!({ "allow": allow })).unwrap()
    }

    #[rstest]
    // The default policy: what DefaultTolerationSeconds adds, nothing else.
    #[case::default_not_ready(None, json!({"key": "node.kubernetes.io/not-ready", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300}), true)]
    #[case::default_unreachable(None, json!({"key": "node.kubernetes.io/unreachable", "operator": "Exists", "effect": "NoExecute"}), true)]
    #[case::default_everything(None, json!({"operator": "Exists"}), false)]
    #[case::default_every_effect_of_not_ready(None, json!({"key": "node.kubernetes.io/not-ready", "operator": "Exists"}), false)]
    #[case::default_not_ready_no_schedule(None, json!({"key": "node.kubernetes.io/not-ready", "operator": "Exists", "effect": "NoSchedule"}), false)]
    #[case::default_control_plane(None, json!({"key": "node-role.kubernetes.io/control-plane", "operator": "Exists", "effect": "NoSchedule"}), false)]
    #[case::default_unschedulable(None, json!({"key": "node.kubernetes.io/unschedulable", "operator": "Exists", "effect": "NoSchedule"}), false)]
    // Configured patterns.
    #[case::exact_key(Some(json!([{"key": "gpu"}])), json!({"key": "gpu", "operator": "Exists"}), true)]
    #[case::exact_key_other(Some(json!([{"key": "gpu"}])), json!({"key": "gpus", "operator": "Exists"}), false)]
    #[case::prefix(Some(json!([{"key": "tenants.example.com/*"}])), json!({"key": "tenants.example.com/a", "value": "x", "effect": "NoSchedule"}), true)]
    #[case::prefix_other(Some(json!([{"key": "tenants.example.com/*"}])), json!({"key": "example.com/a", "operator": "Exists"}), false)]
    #[case::prefix_not_the_empty_key(Some(json!([{"key": "tenants.example.com/*"}])), json!({"operator": "Exists"}), false)]
    #[case::star_allows_all(Some(json!([{"key": "*"}])), json!({"operator": "Exists"}), true)]
    #[case::value_equal(Some(json!([{"key": "pool", "value": "a"}])), json!({"key": "pool", "operator": "Equal", "value": "a"}), true)]
    #[case::value_default_operator(Some(json!([{"key": "pool", "value": "a"}])), json!({"key": "pool", "value": "a"}), true)]
    #[case::value_other(Some(json!([{"key": "pool", "value": "a"}])), json!({"key": "pool", "value": "b"}), false)]
    #[case::value_exists_is_wider(Some(json!([{"key": "pool", "value": "a"}])), json!({"key": "pool", "operator": "Exists"}), false)]
    #[case::operator_equal_empty_value(Some(json!([{"key": "pool", "operator": "Equal"}])), json!({"key": "pool", "operator": "Exists"}), false)]
    #[case::effect(Some(json!([{"key": "pool", "effect": "NoSchedule"}])), json!({"key": "pool", "operator": "Exists", "effect": "NoSchedule"}), true)]
    #[case::effect_missing_is_wider(Some(json!([{"key": "pool", "effect": "NoSchedule"}])), json!({"key": "pool", "operator": "Exists"}), false)]
    #[case::nothing_allowed(Some(json!([])), json!({"key": "node.kubernetes.io/not-ready", "operator": "Exists", "effect": "NoExecute"}), false)]
    fn tolerations_pass_only_what_the_policy_allows(
        #[case] allow: Option<serde_json::Value>,
        #[case] tenant: serde_json::Value,
        #[case] kept: bool,
    ) {
        let policy = allow.map(policy).unwrap_or_default();
        let tenant = toleration(tenant);
        let (passed, dropped) = tenant_tolerations(&policy, &[], [&tenant]);
        assert_eq!(passed.len(), usize::from(kept), "{passed:?}");
        assert_eq!(dropped.len(), usize::from(!kept), "{dropped:?}");
    }

    #[test]
    fn configured_extra_tolerations_count_as_allowed_and_order_is_kept() {
        let extra = toleration(
            json!({"key": "dedicated", "operator": "Equal", "value": "tenant-a", "effect": "NoSchedule"}),
        );
        let tenant = [
            toleration(json!({"operator": "Exists"})),
            extra.clone(),
            toleration(
                json!({"key": "node.kubernetes.io/unreachable", "operator": "Exists", "effect": "NoExecute"}),
            ),
            toleration(json!({"key": "node-role.kubernetes.io/control-plane", "operator": "Exists"})),
        ];
        let (kept, dropped) = tenant_tolerations(
            &TolerationPolicy::default(),
            std::slice::from_ref(&extra),
            &tenant,
        );
        assert_eq!(kept, vec![tenant[1].clone(), tenant[2].clone()]);
        assert_eq!(dropped, vec![tenant[0].clone(), tenant[3].clone()]);
        assert_eq!(
            describe(&dropped),
            "{key: \"\", operator: Exists}, {key: \"node-role.kubernetes.io/control-plane\", operator: Exists}"
        );
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
}
