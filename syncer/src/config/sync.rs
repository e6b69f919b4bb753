//! The `sync` section: which kinds are synced and how (pods, nodes, referenced kinds).

use serde::{Deserialize, Serialize};

use super::services::ServicesConfig;

/// Per-kind sync switches.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SyncConfig {
    /// ConfigMaps (virtual -> host).
    #[serde(default)]
    pub config_maps: ReferencedKindConfig,
    /// Secrets (virtual -> host).
    #[serde(default)]
    pub secrets: ReferencedKindConfig,
    /// Pods (virtual -> host, status up).
    #[serde(default)]
    pub pods: PodsConfig,
    /// Services (virtual -> host; cluster IPs, node ports and load-balancer status up) and their
    /// Endpoints / EndpointSlices, with what of them may reach the host.
    #[serde(default)]
    pub services: ServicesConfig,
    /// ServiceAccounts (virtual -> host).
    #[serde(default = "disabled")]
    pub service_accounts: KindConfig,
    /// PersistentVolumeClaims (virtual -> host, bound status up).
    #[serde(default = "enabled")]
    pub persistent_volume_claims: KindConfig,
    /// Ingresses (virtual -> host, backend services and TLS secrets translated).
    #[serde(default = "disabled")]
    pub ingresses: KindConfig,
    /// NetworkPolicies (virtual -> host, selectors translated).
    #[serde(default = "disabled")]
    pub network_policies: KindConfig,
    /// PodDisruptionBudgets (virtual -> host, selectors translated).
    #[serde(default = "disabled")]
    pub pod_disruption_budgets: KindConfig,
    /// PriorityClasses (cluster-scoped, virtual -> host, names prefixed by the instance).
    #[serde(default = "disabled")]
    pub priority_classes: KindConfig,
    /// Events about synced objects (host -> virtual, involvedObject translated).
    #[serde(default = "enabled")]
    pub events: KindConfig,
    /// StorageClasses (host -> virtual, read-only).
    #[serde(default = "enabled")]
    pub storage_classes: KindConfig,
    /// IngressClasses (host -> virtual, read-only).
    #[serde(default = "enabled")]
    pub ingress_classes: KindConfig,
    /// Nodes of the virtual cluster: fake nodes or mirrored host nodes.
    #[serde(default)]
    pub nodes: NodesConfig,
}

impl Default for SyncConfig {
    fn default() -> Self {
        Self {
            config_maps: ReferencedKindConfig::default(),
            secrets: ReferencedKindConfig::default(),
            pods: PodsConfig::default(),
            services: Default::default(),
            service_accounts: disabled(),
            persistent_volume_claims: enabled(),
            ingresses: disabled(),
            network_policies: disabled(),
            pod_disruption_budgets: disabled(),
            priority_classes: disabled(),
            events: enabled(),
            storage_classes: enabled(),
            ingress_classes: enabled(),
            nodes: NodesConfig::default(),
        }
    }
}

/// The switch of a kind without further options.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct KindConfig {
    /// Whether the syncer runs.
    pub enabled: bool,
}

fn enabled() -> KindConfig {
    KindConfig { enabled: true }
}

fn disabled() -> KindConfig {
    KindConfig { enabled: false }
}

/// Options of the pod syncer.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PodsConfig {
    /// Tolerations added to every host pod (dedicated tenant nodes, say).
    #[serde(default)]
    pub extra_tolerations: Vec<k8s_openapi::api::core::v1::Toleration>,
    /// Node selector entries added to every host pod.
    #[serde(default)]
    pub extra_node_selector: std::collections::BTreeMap<String, String>,
    /// The virtual cluster's DNS service, `namespace/name`; host pods use its cluster IP as
    /// their nameserver. Default `kube-system/kube-dns`.
    #[serde(default)]
    pub dns_service: Option<String>,
    /// Where host pods reach the virtual API server (becomes `KUBERNETES_SERVICE_HOST/PORT`):
    /// a fixed `host`, or the cluster IP of a `hostService` in the host namespace (the Service
    /// in front of the virtual API server of a deployed cluster); default: the virtual
    /// cluster's `default/kubernetes` service IP and port, right only where that IP reaches
    /// the virtual API server from the host's pods too.
    #[serde(default)]
    pub kubernetes_service: Option<ServiceAddress>,
    /// Pod Security Standard every virtual pod must meet before it reaches the host:
    /// `baseline` (the default), `restricted`, or `privileged` (no check; logs a warning at
    /// start).
    #[serde(default)]
    pub pod_security_standard: PodSecurityLevel,
    /// Which of a tenant pod's tolerations its host pod keeps; the others are dropped.
    #[serde(default)]
    pub tolerations: TolerationPolicy,
}

/// `sync.pods.tolerations`: the tolerations of virtual pods that reach their host pods.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TolerationPolicy {
    /// A tenant toleration is kept when it tolerates no more than one of these allows.
    /// Default: the `node.kubernetes.io/not-ready` and `node.kubernetes.io/unreachable`
    /// `NoExecute` tolerations kube-apiserver's DefaultTolerationSeconds admission adds.
    #[serde(default = "default_allowed_tolerations")]
    pub allow: Vec<TolerationPattern>,
}

impl Default for TolerationPolicy {
    fn default() -> Self {
        Self {
            allow: default_allowed_tolerations(),
        }
    }
}

fn default_allowed_tolerations() -> Vec<TolerationPattern> {
    ["node.kubernetes.io/not-ready", "node.kubernetes.io/unreachable"]
        .into_iter()
        .map(|key| TolerationPattern {
            key: key.into(),
            operator: None,
            value: None,
            effect: Some("NoExecute".into()),
        })
        .collect()
}

/// Tolerations a tenant may give its pods (see
/// [`pattern_allows`](crate::syncers::pods::tolerations::pattern_allows)).
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TolerationPattern {
    /// Taint key: exact, `prefix*` for keys that start with `prefix`, or `*` for any key
    /// (including the empty key of `{operator: Exists}`, which tolerates every taint).
    pub key: String,
    /// `Exists` or absent: tolerations of any value; `Equal`: only `Equal` ones of `value`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub operator: Option<String>,
    /// The only value allowed (implies `Equal`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    /// The only effect allowed (a toleration without effect tolerates all, and is refused);
    /// absent: any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub effect: Option<String>,
}

/// An address host pods connect to: `{host, port}` or `{hostService, port}`, exactly one of
/// `host` and `hostService`.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(try_from = "ServiceAddressFields", into = "ServiceAddressFields")]
pub struct ServiceAddress {
    /// Where the address comes from.
    pub target: ServiceTarget,
    /// TCP port.
    pub port: u16,
}

/// The host part of a [`ServiceAddress`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ServiceTarget {
    /// A fixed IP or DNS name (`host`).
    Host(String),
    /// The cluster IP of this Service in the host namespace (`hostService`), read from the host
    /// API server.
    HostService(String),
}

impl ServiceAddress {
    /// A fixed `host:port`.
    pub fn host(host: &str, port: u16) -> Self {
        Self {
            target: ServiceTarget::Host(host.to_string()),
            port,
        }
    }

    /// The cluster IP of host Service `name` (in the host namespace), `port`.
    pub fn host_service(name: &str, port: u16) -> Self {
        Self {
            target: ServiceTarget::HostService(name.to_string()),
            port,
        }
    }

    /// The host Service named, if the address is one.
    pub fn host_service_name(&self) -> Option<&str> {
        match &self.target {
            ServiceTarget::HostService(name) => Some(name),
            ServiceTarget::Host(_) => None,
        }
    }
}

/// [`ServiceAddress`] as written in the file.
#[derive(Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct ServiceAddressFields {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    host: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    host_service: Option<String>,
    port: u16,
}

impl TryFrom<ServiceAddressFields> for ServiceAddress {
    type Error = String;

    fn try_from(fields: ServiceAddressFields) -> Result<Self, String> {
        let target = match (fields.host, fields.host_service) {
            (Some(host), None) if !host.is_empty() => ServiceTarget::Host(host),
            (None, Some(name)) if vcsync_translators::names::is_dns_label(&name) => {
                ServiceTarget::HostService(name)
            }
            (None, Some(name)) => {
                return Err(format!(
                    "kubernetesService: hostService: {name:?} is not a valid Service name (lowercase letters, digits \
                     and '-', at most 63 characters, starting and ending with a letter or digit)"
                ));
            }
            (Some(_), None) => return Err("kubernetesService: host: must not be empty".into()),
            (Some(_), Some(_)) | (None, None) => {
                return Err(
                    "kubernetesService: exactly one of `host` (an address) and `hostService` (a Service in the host \
                     namespace whose cluster IP is used) must be set"
                        .into(),
                );
            }
        };
        Ok(Self {
            target,
            port: fields.port,
        })
    }
}

impl From<ServiceAddress> for ServiceAddressFields {
    fn from(address: ServiceAddress) -> Self {
        let (host, host_service) = match address.target {
            ServiceTarget::Host(host) => (Some(host), None),
            ServiceTarget::HostService(name) => (None, Some(name)),
        };
        Self {
            host,
            host_service,
            port: address.port,
        }
    }
}

/// How the virtual cluster gets its nodes.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NodesConfig {
    /// `fake`: one virtual node per host node in use by virtual pods; `real`: mirror host nodes.
    #[serde(default)]
    pub mode: NodeMode,
    /// Real mode: only host nodes matching this label selector are mirrored.
    #[serde(default)]
    pub selector: Option<String>,
    /// Seconds between Lease renewals of a node (a kubelet's default is 10).
    #[serde(default = "default_lease_renew")]
    pub lease_renew_seconds: u32,
    /// Lease duration in seconds (a kubelet's default is 40).
    #[serde(default = "default_lease_duration")]
    pub lease_duration_seconds: u32,
    /// Seconds between refreshes of a node's status conditions.
    #[serde(default = "default_status_refresh")]
    pub status_refresh_seconds: u32,
}

fn default_lease_renew() -> u32 {
    10
}

fn default_lease_duration() -> u32 {
    40
}

fn default_status_refresh() -> u32 {
    60
}

impl Default for NodesConfig {
    fn default() -> Self {
        Self {
            mode: NodeMode::default(),
            selector: None,
            lease_renew_seconds: default_lease_renew(),
            lease_duration_seconds: default_lease_duration(),
            status_refresh_seconds: default_status_refresh(),
        }
    }
}

/// Node mode.
#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum NodeMode {
    /// Fake nodes for the host nodes virtual pods run on.
    #[default]
    Fake,
    /// Host nodes mirrored.
    Real,
}

/// Switches of a kind that is synced when pods reference it.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ReferencedKindConfig {
    /// Whether the syncer runs at all.
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// Sync every object of the kind, not only the ones virtual pods reference.
    #[serde(default)]
    pub all: bool,
}

fn default_true() -> bool {
    true
}

impl Default for ReferencedKindConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            all: false,
        }
    }
}

/// A level of the Pod Security Standards. The default is [`PodSecurityLevel::Baseline`]:
/// a config file without `sync.pods.podSecurityStandard` gets it.
#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, PartialEq, Eq, PartialOrd, Ord)]
#[serde(rename_all = "camelCase")]
pub enum PodSecurityLevel {
    /// No check: any pod reaches the host, privileged ones too (vcsync logs a warning at start).
    Privileged,
    /// Prevents known privilege escalations; allows the default pod.
    #[default]
    Baseline,
    /// Baseline plus current hardening practice (non-root, no escalation, drop ALL, seccomp).
    Restricted,
}

impl std::fmt::Display for PodSecurityLevel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Privileged => "privileged",
            Self::Baseline => "baseline",
            Self::Restricted => "restricted",
        })
    }
}
