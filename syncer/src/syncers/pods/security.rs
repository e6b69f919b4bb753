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
//! Which of a tenant's tolerations reach the host is the other half of keeping tenants off
//! what the host reserves: [`super::tolerations`].

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    Capabilities, Container, EphemeralContainer, Lifecycle, LifecycleHandler, PodSecurityContext, PodSpec,
    Probe, SecurityContext,
};

pub use crate::config::PodSecurityLevel;

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

#[cfg(test)]
#[path = "security_tests.rs"]
mod tests;
