//! The values a cluster is created from (`--values FILE`, the chart's values.yaml): their
//! types, parsing with located errors, and comparison with the values a cluster runs with.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::{ClusterError, Result};

/// What a cluster is created from: `--values FILE`. Each driver reads the parts it needs;
/// `config` is the cluster's `vcsync.yaml` (its `instance` and `hostNamespace` are set by the
/// driver).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct Values {
    /// `kubernetes`: the host namespace (default `vcsync-<name>`).
    pub namespace: Option<String>,
    /// The chart only: render the host namespace as an object of the release (with its Pod
    /// Security labels). The driver creates the namespace whenever it does not exist.
    pub create_namespace: Option<bool>,
    /// `kubernetes`: the Pod Security Admission labels of the host namespace, and the level of
    /// vcsync's own gate (`sync.pods.podSecurityStandard`).
    pub pod_security: PodSecurityValues,
    /// `kubernetes`: the virtual control plane container.
    pub control_plane: ControlPlaneValues,
    /// `kubernetes`: the vcsync sidecar container.
    pub vcsync: VcsyncValues,
    /// `kubernetes`: control-plane replicas while running (default 1).
    pub replicas: Option<i32>,
    /// `kubernetes`: where the control plane keeps its state.
    pub persistence: PersistenceValues,
    /// `kubernetes`: the virtual cluster's own DNS.
    pub dns: DnsValues,
    /// `kubernetes`: opt-in ResourceQuota, LimitRange and NetworkPolicy of the host namespace.
    pub isolation: IsolationValues,
    /// `kubernetes`: the tenant's host copies are owned by ConfigMap `vcsync-<name>-owner`
    /// (config `hostOwner`), so deleting the cluster's objects (`helm uninstall`) lets the host's
    /// garbage collector delete them (default true; the single namespace mapping only).
    pub set_owner: Option<bool>,
    /// `local`: simulated host nodes (default 3).
    pub nodes: Option<usize>,
    /// The vcsync.yaml of the cluster's syncer, as a mapping.
    pub config: Option<serde_yaml_ng::Mapping>,
}

/// The control plane container of the `kubernetes` driver.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct ControlPlaneValues {
    /// Image (default [`DEFAULT_CONTROL_PLANE_IMAGE`](super::kubernetes::DEFAULT_CONTROL_PLANE_IMAGE)).
    pub image: Option<String>,
    /// Arguments added to the control plane's.
    pub extra_args: Vec<String>,
    /// The host's service CIDR, which the virtual control plane must use too; unset: detected
    /// from the host (`cluster create`, or the pod's init container).
    pub service_cidr: Option<String>,
    /// The Service in front of the virtual API server.
    pub service: ApiServiceValues,
    /// More names and addresses the API server's serving certificate holds (`--tls-san`).
    pub extra_sans: Vec<String>,
    /// An Ingress in front of the virtual API server (TLS passed through to it).
    pub ingress: ApiIngressValues,
}

/// The Service in front of the virtual API server (`kubernetes`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct ApiServiceValues {
    /// `ClusterIP` (default), `NodePort` or `LoadBalancer`.
    #[serde(rename = "type")]
    pub type_: Option<String>,
    /// Annotations of the Service (a cloud's load balancer settings, say).
    pub annotations: BTreeMap<String, String>,
    /// The node port (`NodePort`, `LoadBalancer`); unset: the host picks one.
    pub node_port: Option<i32>,
}

/// An Ingress in front of the virtual API server (`kubernetes`): TLS is passed through, so the
/// ingress controller must support it (ingress-nginx with `--enable-ssl-passthrough`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct ApiIngressValues {
    /// Render it (default false).
    pub enabled: Option<bool>,
    /// The host name clients use; it joins the certificate's names.
    pub host: Option<String>,
    /// The ingress class; unset: the host's default.
    pub ingress_class_name: Option<String>,
    /// Annotations, over the defaults (ingress-nginx's ssl-passthrough and backend protocol).
    pub annotations: BTreeMap<String, String>,
}

/// The control plane's datastore volume of the `kubernetes` driver.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct PersistenceValues {
    /// A PersistentVolumeClaim per control-plane replica (default true); false: an emptyDir,
    /// and every restart starts an empty virtual cluster.
    pub enabled: Option<bool>,
    /// Requested size (default [`DEFAULT_PERSISTENCE_SIZE`](super::kubernetes::DEFAULT_PERSISTENCE_SIZE)).
    pub size: Option<String>,
    /// Storage class; unset: the host's default.
    pub storage_class: Option<String>,
    /// Access modes (default `[ReadWriteOnce]`).
    pub access_modes: Option<Vec<String>>,
}

/// The virtual cluster's DNS of the `kubernetes` driver.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct DnsValues {
    /// k3s's bundled CoreDNS (`kube-system/kube-dns`) runs in the virtual cluster (default true).
    pub enabled: Option<bool>,
}

/// The Pod Security Admission labels (`pod-security.kubernetes.io/<mode>`) the `kubernetes`
/// driver puts on a host namespace it creates; levels are `privileged`, `baseline`,
/// `restricted`, or `""` for no label.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct PodSecurityValues {
    /// The level the host enforces (default `baseline`; `restricted` is refused: the control
    /// plane runs as root). Also vcsync's `sync.pods.podSecurityStandard` unless the config
    /// sets a stricter one.
    pub enforce: Option<String>,
    /// The level the host warns about (default: no label).
    pub warn: Option<String>,
    /// The level the host's audit log annotates (default: no label).
    pub audit: Option<String>,
    /// The version of the standards (`latest` or `v1.N`, default `latest`).
    pub version: Option<String>,
}

/// What keeps a tenant within its share of the host (`kubernetes`), each off unless enabled.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct IsolationValues {
    /// A ResourceQuota on the host namespace.
    pub resource_quota: ResourceQuotaValues,
    /// A LimitRange on the host namespace: defaults for containers that set no resources.
    pub limit_range: LimitRangeValues,
    /// A NetworkPolicy on the tenant's pods.
    pub network_policy: NetworkPolicyValues,
}

/// The host namespace's ResourceQuota.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct ResourceQuotaValues {
    /// Render it (default false).
    pub enabled: Option<bool>,
    /// `spec.hard`, merged over [`DEFAULT_QUOTA`](super::kubernetes::DEFAULT_QUOTA); a key set to null is removed.
    pub hard: BTreeMap<String, Option<String>>,
}

/// The host namespace's LimitRange (one item of type Container).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct LimitRangeValues {
    /// Render it (default false).
    pub enabled: Option<bool>,
    /// Limits of a container that sets none, merged over the defaults; null removes a key.
    pub default: BTreeMap<String, Option<String>>,
    /// Requests of a container that sets none, merged over the defaults; null removes a key.
    pub default_request: BTreeMap<String, Option<String>>,
}

/// The NetworkPolicy on the tenant's pods in the host namespace.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct NetworkPolicyValues {
    /// Render it (default false).
    pub enabled: Option<bool>,
    /// Where else the tenant's pods may connect: a CIDR (default `0.0.0.0/0`) ...
    pub outgoing_cidr: Option<String>,
    /// ... less these (default: the private ranges, 10/8, 172.16/12, 192.168/16, 100.64/10).
    pub outgoing_except: Option<Vec<String>>,
}

/// The vcsync sidecar of the `kubernetes` driver.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct VcsyncValues {
    /// Image (default [`DEFAULT_VCSYNC_IMAGE`](super::kubernetes::DEFAULT_VCSYNC_IMAGE)).
    pub image: Option<String>,
}

impl Values {
    /// Reads a values file; errors are [`ClusterError::BadInput`] naming file, line and column.
    pub fn read(path: &std::path::Path) -> Result<Values> {
        let text = std::fs::read_to_string(path)
            .map_err(|err| ClusterError::BadInput(format!("{}: cannot read: {err}", path.display())))?;
        Values::parse(&text, &path.display().to_string())
    }

    /// Parses values YAML (empty text: defaults).
    pub fn parse(text: &str, file: &str) -> Result<Values> {
        if text.trim().is_empty() {
            return Ok(Values::default());
        }
        serde_yaml_ng::from_str(text).map_err(|err| match err.location() {
            Some(l) => ClusterError::BadInput(format!("{file}:{}:{}: {err}", l.line(), l.column())),
            None => ClusterError::BadInput(format!("{file}: {err}")),
        })
    }

    /// The vcsync.yaml of cluster `name` in `host_namespace`, validated.
    pub fn syncer_config(&self, name: &str, host_namespace: &str) -> Result<vcsync_syncer::Config> {
        let mut map = self.config.clone().unwrap_or_default();
        map.insert("instance".into(), name.into());
        map.insert("hostNamespace".into(), host_namespace.into());
        let text = serde_yaml_ng::to_string(&map).map_err(anyhow::Error::from)?;
        let config = vcsync_syncer::Config::from_yaml(&text, "values: config")
            .map_err(|err| ClusterError::BadInput(err.to_string()))?;
        config
            .validate()
            .map_err(|err| ClusterError::BadInput(format!("values: config: {err}")))?;
        Ok(config)
    }

    /// The values as YAML, for storing with the cluster and comparing later.
    pub fn to_yaml(&self) -> String {
        serde_yaml_ng::to_string(self).expect("values serialize")
    }

    /// How `self` (requested) differs from `running`, or None when equal.
    pub fn mismatch(&self, running: &Values) -> Option<String> {
        if self == running {
            return None;
        }
        let (want, have) = (
            serde_json::to_value(self).unwrap_or_default(),
            serde_json::to_value(running).unwrap_or_default(),
        );
        let keys: Vec<String> = match (want.as_object(), have.as_object()) {
            (Some(w), Some(h)) => w
                .keys()
                .chain(h.keys())
                .filter(|k| w.get(*k) != h.get(*k))
                .cloned()
                .collect::<std::collections::BTreeSet<_>>()
                .into_iter()
                .collect(),
            _ => vec![],
        };
        Some(format!(
            "values differ in {} (delete and re-create it, or pass the values it runs with)",
            keys.join(", ")
        ))
    }
}
