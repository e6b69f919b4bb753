//! `vcsync.yaml`: the sidecar's configuration file.
//!
//! Unknown keys and wrong types are rejected with the file, line and column, so a typo never
//! silently falls back to a default.

use std::{fmt, path::Path, path::PathBuf};

use serde::{Deserialize, Serialize};

/// The whole configuration.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Config {
    /// Name of this virtual cluster; the value of the ownership label on every host object.
    pub instance: String,
    /// Host namespace vcsync runs in; in the `single` mapping all namespaced virtual objects land
    /// in it.
    pub host_namespace: String,
    /// Where namespaced virtual objects land: `single` (all in `hostNamespace`, names translated)
    /// or `perNamespace` (one host namespace per virtual namespace, names kept except those the
    /// host's control plane puts in every namespace: `vcsync_translators::per_namespace_name`).
    #[serde(default)]
    pub namespace_mapping: NamespaceMappingMode,
    /// How to reach the host API server.
    #[serde(default)]
    pub host: ClusterConfig,
    /// How to reach the virtual API server.
    #[serde(default, rename = "virtual")]
    pub virtual_cluster: ClusterConfig,
    /// Which kinds are synced and how.
    #[serde(default)]
    pub sync: SyncConfig,
    /// Controller options shared by all syncers.
    #[serde(default)]
    pub controllers: ControllersConfig,
    /// Log format and level.
    #[serde(default)]
    pub log: LogConfig,
    /// The operations endpoints (`/healthz`, `/readyz`, `/metrics`).
    #[serde(default)]
    pub operations: OperationsConfig,
    /// The kubelet API served for the virtual nodes (`kubectl logs`, `exec`, `port-forward`).
    #[serde(default)]
    pub kubelet: crate::kubelet_config::KubeletConfig,
    /// Leader election between replicas (off by default).
    #[serde(default)]
    pub leader_election: crate::leader::LeaderElectionConfig,
    /// What protects the tenant's host objects: earlier clusters' copies, the mass-deletion brake.
    #[serde(default)]
    pub safety: crate::safety::SafetyConfig,
    /// Plugin sections, by plugin name (see [`crate::plugin`]).
    #[serde(default)]
    pub plugins: std::collections::BTreeMap<String, crate::plugin::PluginSection>,
}

/// The `namespaceMapping` key: see [`vcsync_translators::NamespaceMapping`].
#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub enum NamespaceMappingMode {
    /// Every virtual namespace lands in `hostNamespace`, names `<name>-x-<namespace>`.
    #[default]
    Single,
    /// Each virtual namespace gets a host namespace `<instance>-x-<namespace>`, names kept except
    /// `kube-root-ca.crt`, `default` and `openshift-service-ca.crt`, which the host's control plane
    /// puts in every namespace (`vcsync-x-<name>`, see `vcsync_translators::per_namespace_name`).
    PerNamespace,
}

/// Connection to one API server.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ClusterConfig {
    /// Path of a kubeconfig file; when absent the in-cluster service account (or the usual
    /// kubeconfig inference: `$KUBECONFIG`, `~/.kube/config`) is used.
    #[serde(default)]
    pub kubeconfig: Option<PathBuf>,
    /// Kubeconfig context to use instead of the current one.
    #[serde(default)]
    pub context: Option<String>,
    /// Sustained client requests per second.
    #[serde(default = "default_qps")]
    pub qps: u32,
    /// Requests allowed in a burst above `qps`.
    #[serde(default = "default_burst")]
    pub burst: u32,
}

fn default_qps() -> u32 {
    100
}

fn default_burst() -> u32 {
    200
}

impl Default for ClusterConfig {
    fn default() -> Self {
        Self {
            kubeconfig: None,
            context: None,
            qps: default_qps(),
            burst: default_burst(),
        }
    }
}

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
    pub services: crate::syncers::services::policy::ServicesConfig,
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
    pub pod_security_standard: crate::syncers::pods::security::PodSecurityLevel,
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
/// [`pattern_allows`](crate::syncers::pods::security::pattern_allows)).
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

/// Options of every syncer's controller.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ControllersConfig {
    /// Reconciles a controller runs at once (0 = unbounded).
    #[serde(default = "default_concurrency")]
    pub concurrency: u16,
    /// On shutdown, how long in-flight reconciles may take to finish before they are aborted.
    #[serde(default = "default_shutdown_timeout_seconds")]
    pub shutdown_timeout_seconds: u64,
}

fn default_concurrency() -> u16 {
    16
}

fn default_shutdown_timeout_seconds() -> u64 {
    // Below Kubernetes' default termination grace period of 30 s.
    25
}

impl Default for ControllersConfig {
    fn default() -> Self {
        Self {
            concurrency: default_concurrency(),
            shutdown_timeout_seconds: default_shutdown_timeout_seconds(),
        }
    }
}

/// The operations endpoints.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct OperationsConfig {
    /// Address (`host:port`) of the HTTP server with `/healthz`, `/readyz` and `/metrics`;
    /// port 0 picks a free port (logged). Absent: no server.
    #[serde(default)]
    pub address: Option<std::net::SocketAddr>,
}

/// Logging.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LogConfig {
    /// `text` for people, `json` for log pipelines.
    #[serde(default)]
    pub format: LogFormat,
    /// A tracing filter: `info`, `debug`, `vcsync_syncer=debug,info`, ...
    #[serde(default = "default_level")]
    pub level: String,
}

fn default_level() -> String {
    "info".to_string()
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            format: LogFormat::default(),
            level: default_level(),
        }
    }
}

/// Log line format.
#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// A configuration that could not be read or is invalid; `Display` is one line with the
/// location when the file has one.
#[derive(Debug, thiserror::Error)]
pub struct ConfigError {
    /// The file, or `<inline>`.
    pub file: String,
    /// 1-based line and column of the problem, when known.
    pub location: Option<(usize, usize)>,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.location {
            Some((line, column)) => write!(f, "{}:{line}:{column}: {}", self.file, self.message),
            None => write!(f, "{}: {}", self.file, self.message),
        }
    }
}

impl Config {
    /// A configuration with defaults for everything but the two required names.
    pub fn new(instance: &str, host_namespace: &str) -> Self {
        Self {
            instance: instance.to_string(),
            host_namespace: host_namespace.to_string(),
            namespace_mapping: NamespaceMappingMode::default(),
            host: ClusterConfig::default(),
            virtual_cluster: ClusterConfig::default(),
            sync: SyncConfig::default(),
            controllers: ControllersConfig::default(),
            log: LogConfig::default(),
            operations: OperationsConfig::default(),
            kubelet: Default::default(),
            leader_election: Default::default(),
            safety: Default::default(),
            plugins: Default::default(),
        }
    }

    /// The namespace mapping this configuration selects.
    pub fn namespace_mapping(&self) -> vcsync_translators::NamespaceMapping {
        match self.namespace_mapping {
            NamespaceMappingMode::Single => vcsync_translators::NamespaceMapping::Single {
                host_namespace: self.host_namespace.clone(),
            },
            NamespaceMappingMode::PerNamespace => vcsync_translators::NamespaceMapping::PerNamespace {
                instance: self.instance.clone(),
            },
        }
    }

    /// Reads and validates a file.
    pub fn from_file(path: &Path) -> Result<Self, ConfigError> {
        let file = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|err| ConfigError {
            file: file.clone(),
            location: None,
            message: format!("cannot read: {err}"),
        })?;
        Self::from_yaml(&text, &file)
    }

    /// Parses and validates YAML text; `file` names it in errors.
    pub fn from_yaml(text: &str, file: &str) -> Result<Self, ConfigError> {
        let config: Config = serde_yaml_ng::from_str(text).map_err(|err| ConfigError {
            file: file.to_string(),
            location: err.location().map(|l| (l.line(), l.column())),
            message: strip_location(&err.to_string()),
        })?;
        config.validate().map_err(|message| ConfigError {
            file: file.to_string(),
            location: None,
            message,
        })?;
        Ok(config)
    }

    /// Checks what the types cannot: names that must be valid Kubernetes names.
    pub fn validate(&self) -> Result<(), String> {
        vcsync_translators::Ownership::new(&self.instance).map_err(|err| format!("instance: {err}"))?;
        if !vcsync_translators::names::is_dns_label(&self.host_namespace) {
            return Err(format!(
                "hostNamespace: {:?} is not a valid namespace name (lowercase letters, digits and '-', \
                 at most 63 characters, starting and ending with a letter or digit)",
                self.host_namespace
            ));
        }
        self.leader_election.validate()?;
        self.kubelet.validate()?;
        Ok(())
    }
}

/// serde_yaml puts " at line L column C" into its messages; the location is printed once, up
/// front, so those phrases are removed (other context, such as "while scanning ...", stays).
pub(crate) fn strip_location(message: &str) -> String {
    let mut out = String::with_capacity(message.len());
    let mut rest = message;
    while let Some(at) = rest.find(" at line ") {
        out.push_str(&rest[..at]);
        let after = &rest[at + " at line ".len()..];
        let skip_digits = |s: &str| s.trim_start_matches(|c: char| c.is_ascii_digit()).len();
        let after_line = &after[after.len() - skip_digits(after)..];
        rest = match after_line.strip_prefix(" column ") {
            Some(column) => &column[column.len() - skip_digits(column)..],
            None => after_line,
        };
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use rstest::rstest;

    use super::*;

    #[test]
    fn minimal_file_gets_defaults() {
        let config = Config::from_yaml("instance: demo\nhostNamespace: vc-demo\n", "f.yaml").unwrap();
        assert_eq!(config, Config::new("demo", "vc-demo"));
        assert!(config.sync.config_maps.enabled && !config.sync.config_maps.all);
    }

    #[test]
    fn the_example_in_deploy_parses_and_matches_the_defaults() {
        let config =
            Config::from_yaml(include_str!("../../deploy/vcsync.yaml"), "deploy/vcsync.yaml").unwrap();
        let mut expected = Config::new("my-vcluster", "vcluster-my-vcluster");
        expected.virtual_cluster.kubeconfig = Some("/data/virtual.kubeconfig".into());
        assert_eq!(config, expected, "the example documents the defaults");
    }

    #[test]
    fn full_file_parses() {
        let text = "instance: demo\nhostNamespace: vc-demo\nhost:\n  kubeconfig: /h.yaml\n  qps: 5\n\
                    virtual:\n  kubeconfig: /v.yaml\nsync:\n  configMaps:\n    all: true\n  secrets:\n    enabled: false\n\
                    controllers:\n  concurrency: 4\nlog:\n  format: json\n  level: debug\n";
        let config = Config::from_yaml(text, "f.yaml").unwrap();
        assert_eq!(config.host.kubeconfig.as_deref(), Some(Path::new("/h.yaml")));
        assert_eq!(config.host.qps, 5);
        assert!(config.sync.config_maps.all);
        assert!(!config.sync.secrets.enabled);
        assert_eq!(config.log.format, LogFormat::Json);
    }

    #[rstest]
    #[case::default("", NamespaceMappingMode::Single, "vc-demo")]
    #[case::single("namespaceMapping: single\n", NamespaceMappingMode::Single, "vc-demo")]
    #[case::per_namespace(
        "namespaceMapping: perNamespace\n",
        NamespaceMappingMode::PerNamespace,
        "demo-x-shop"
    )]
    fn namespace_mapping_modes(
        #[case] extra: &str,
        #[case] mode: NamespaceMappingMode,
        #[case] shop_host_namespace: &str,
    ) {
        let text = format!("instance: demo\nhostNamespace: vc-demo\n{extra}");
        let config = Config::from_yaml(&text, "f.yaml").unwrap();
        assert_eq!(config.namespace_mapping, mode);
        assert_eq!(
            config.namespace_mapping().host_namespace("shop"),
            shop_host_namespace
        );
    }

    #[rstest]
    #[case::bad_mapping(
        "instance: a\nhostNamespace: b\nnamespaceMapping: perNamespaces\n",
        "f.yaml:3:19: namespaceMapping: unknown variant `perNamespaces`"
    )]
    #[case::unknown_key(
        "instance: a\nhostNamespace: b\nsyncc: {}\n",
        "f.yaml:3:1: unknown field `syncc`"
    )]
    #[case::wrong_type(
        "instance: a\nhostNamespace: b\ncontrollers:\n  concurrency: many\n",
        "f.yaml:4:16: controllers.concurrency: invalid type"
    )]
    #[case::missing("instance: a\n", "f.yaml:1:1: missing field `hostNamespace`")]
    #[case::bad_namespace(
        "instance: a\nhostNamespace: Not_Valid\n",
        "f.yaml: hostNamespace: \"Not_Valid\" is not a valid"
    )]
    #[case::bad_yaml(
        "instance: a\nhostNamespace: \"open\n",
        "f.yaml:3:1: found unexpected end of stream, while scanning a quoted scalar"
    )]
    fn invalid_files_are_one_clear_line(#[case] text: &str, #[case] expected_start: &str) {
        let err = Config::from_yaml(text, "f.yaml").unwrap_err().to_string();
        assert!(err.starts_with(expected_start), "{err}");
        assert!(!err.contains('\n'), "{err}");
    }

    fn kubernetes_service(yaml: &str) -> Result<Option<ServiceAddress>, ConfigError> {
        let text = format!("instance: a\nhostNamespace: b\nsync:\n  pods:\n    kubernetesService: {yaml}\n");
        Config::from_yaml(&text, "f.yaml").map(|c| c.sync.pods.kubernetes_service)
    }

    #[rstest]
    #[case::address("{host: 10.0.0.7, port: 443}", ServiceAddress::host("10.0.0.7", 443))]
    #[case::dns_name(
        "{host: api.example.com, port: 6443}",
        ServiceAddress::host("api.example.com", 6443)
    )]
    #[case::host_service(
        "{hostService: vcsync-demo, port: 443}",
        ServiceAddress::host_service("vcsync-demo", 443)
    )]
    fn the_kubernetes_service_is_an_address_or_a_host_service(
        #[case] yaml: &str,
        #[case] expected: ServiceAddress,
    ) {
        let address = kubernetes_service(yaml).unwrap().unwrap();
        assert_eq!(address, expected);
        // Written back, it reads the same (the driver and the chart write it).
        let text = serde_yaml_ng::to_string(&address).unwrap();
        assert!(!text.contains("null"), "{text}");
        assert_eq!(serde_yaml_ng::from_str::<ServiceAddress>(&text).unwrap(), address);
        assert_eq!(
            address.host_service_name(),
            yaml.contains("hostService").then_some("vcsync-demo")
        );
    }

    #[rstest]
    #[case::both(
        "{host: 10.0.0.7, hostService: vcsync-demo, port: 443}",
        "exactly one of `host`"
    )]
    #[case::neither("{port: 443}", "exactly one of `host`")]
    #[case::empty_host("{host: '', port: 443}", "host: must not be empty")]
    #[case::bad_service_name(
        "{hostService: Not_A_Name, port: 443}",
        "hostService: \"Not_A_Name\" is not a valid Service name"
    )]
    #[case::unknown_key("{hostServce: vcsync-demo, port: 443}", "unknown field `hostServce`")]
    #[case::no_port("{hostService: vcsync-demo}", "missing field `port`")]
    fn a_wrong_kubernetes_service_is_a_clear_error(#[case] yaml: &str, #[case] expected: &str) {
        let err = kubernetes_service(yaml).unwrap_err().to_string();
        assert!(err.starts_with("f.yaml:5:"), "{err}");
        // serde names the path to the value, or to its parent for the checks after parsing.
        assert!(
            err.contains("sync.pods.kubernetesService") || err.contains("sync.pods: kubernetesService: "),
            "{err}"
        );
        assert!(err.contains(expected), "{err}");
        assert!(!err.contains('\n'), "{err}");
    }
}
