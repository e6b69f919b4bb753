//! Names, labels and constants of a cluster's objects, and what the values say of them.

use std::collections::BTreeMap;

use crate::cluster::Values;

/// The control plane image unless `controlPlane.image` says otherwise.
pub const DEFAULT_CONTROL_PLANE_IMAGE: &str = "rancher/k3s:v1.33.1-k3s1";
/// The vcsync image unless `vcsync.image` says otherwise (built from deploy/Dockerfile).
pub const DEFAULT_VCSYNC_IMAGE: &str = "vcsync:0.1.0";
/// Size of the control plane's datastore claim unless `persistence.size` says otherwise.
pub const DEFAULT_PERSISTENCE_SIZE: &str = "5Gi";
/// Label on every object the driver creates: the cluster's name.
pub const CLUSTER_LABEL: &str = "vcsync.dev/cluster";
/// The k3s argument that takes the service CIDR the init container detected (the start script
/// reads it into `$SERVICE_CIDR`); the only argument quoted for the shell to expand.
pub(super) const DETECTED_CIDR_ARG: &str = "--service-cidr=$SERVICE_CIDR";
/// The k3s argument that takes the cluster IP of the cluster's Service, which the init container
/// `service-ip` wrote (the start script reads it into `$SERVICE_IP`): synced pods reach the
/// virtual API server at that IP, so its serving certificate must name it.
pub(super) const SERVICE_IP_ARG: &str = "--tls-san=$SERVICE_IP";
/// Where the init containers write what they detected (an emptyDir, volume [`DETECTED_VOLUME`]).
pub(super) const DETECTED_CIDR_DIR: &str = "/run/vcsync";
pub(super) const DETECTED_CIDR_FILE: &str = "/run/vcsync/service-cidr";
pub(super) const SERVICE_IP_FILE: &str = "/run/vcsync/service-ip";
pub(super) const DETECTED_VOLUME: &str = "detected";
/// The port the control plane's API server (k3s) listens on in its pod.
pub(super) const API_SERVER_PORT: u16 = 6443;
/// Port of the cluster's Service (the virtual API server's 6443 behind it).
pub(super) const SERVICE_PORT: u16 = 443;

/// Where vcsync serves the kubelet API of the virtual nodes: loopback, for k3s in the same pod.
pub(super) const KUBELET_LISTEN: &str = "127.0.0.1:10250";

/// The CA of k3s's client certificates, its API server's kubelet client certificate among them.
pub(super) const K3S_CLIENT_CA: &str = "/data/k3s/server/tls/client-ca.crt";
/// The message the status carries when the datastore is on an emptyDir.
pub const NO_PERSISTENCE: &str = "persistence: none (state is lost on restart)";
pub(super) const MANAGED_BY: (&str, &str) = ("app.kubernetes.io/managed-by", "vcsync-cluster");
/// Prefix of the Pod Security Admission labels of a namespace.
pub(super) const POD_SECURITY_LABEL: &str = "pod-security.kubernetes.io/";
/// The level the host namespace enforces unless `podSecurity.enforce` says otherwise: the
/// default of vcsync's own gate too.
pub const DEFAULT_POD_SECURITY_LEVEL: &str = "baseline";
/// The Pod Security levels, loosest first.
pub(super) const POD_SECURITY_LEVELS: [&str; 3] = ["privileged", "baseline", "restricted"];
pub(super) const RESUME_REPLICAS: &str = "vcsync.dev/resume-replicas";

/// Names of a cluster's objects.
pub(super) fn base_name(name: &str) -> String {
    format!("vcsync-{name}")
}
pub(super) fn config_secret(name: &str) -> String {
    format!("vcsync-{name}-config")
}
/// The ConfigMap that owns the tenant's host copies (`setOwner`).
pub(super) fn owner_config_map(name: &str) -> String {
    format!("vcsync-{name}-owner")
}
/// The Secret the control plane publishes its kubeconfig in (key `config`).
pub fn kubeconfig_secret(name: &str) -> String {
    format!("vcsync-{name}-kubeconfig")
}

pub(super) fn labels(name: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        ("app.kubernetes.io/name".into(), "vcsync".into()),
        ("app.kubernetes.io/instance".into(), name.into()),
        (MANAGED_BY.0.into(), MANAGED_BY.1.into()),
        (CLUSTER_LABEL.into(), name.into()),
    ])
}

pub(super) fn selector_labels(name: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        ("app.kubernetes.io/name".into(), "vcsync".into()),
        ("app.kubernetes.io/instance".into(), name.into()),
    ])
}

/// Labels of the datastore claims: the same whoever renders the StatefulSet (chart or driver),
/// so `cluster delete` finds the claims of a Helm release too.
pub(super) fn claim_labels(name: &str) -> BTreeMap<String, String> {
    let mut labels = selector_labels(name);
    labels.insert(CLUSTER_LABEL.into(), name.into());
    labels
}

/// The values' service CIDR; None (or empty): detected from the host.
pub(super) fn explicit_service_cidr(values: &Values) -> Option<&str> {
    values
        .control_plane
        .service_cidr
        .as_deref()
        .filter(|cidr| !cidr.is_empty())
}

pub(super) fn persistence_enabled(values: &Values) -> bool {
    values.persistence.enabled.unwrap_or(true)
}

/// The host namespace of cluster `name`.
pub fn namespace_of(name: &str, values: &Values) -> String {
    values
        .namespace
        .clone()
        .unwrap_or_else(|| format!("vcsync-{name}"))
}
