//! `vcsync.yaml`: the sidecar's configuration file.
//!
//! Unknown keys and wrong types are rejected with the file, line and column, so a typo never
//! silently falls back to a default.

use std::path::Path;

use serde::{Deserialize, Serialize};

mod runtime;
mod services;
mod sync;

pub use crate::error::ConfigError;
pub use runtime::{
    ClusterConfig, ControllersConfig, LeaderElectionConfig, LogConfig, LogFormat, OperationsConfig,
    PluginSection,
};
pub use services::{IpRange, ServiceType, ServicesConfig};
pub use sync::{
    KindConfig, NodeMode, NodesConfig, PodSecurityLevel, PodsConfig, ReferencedKindConfig, ServiceAddress,
    ServiceTarget, SyncConfig, TolerationPattern, TolerationPolicy,
};

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
    pub leader_election: LeaderElectionConfig,
    /// What protects the tenant's host objects: earlier clusters' copies, the mass-deletion brake.
    #[serde(default)]
    pub safety: crate::safety::SafetyConfig,
    /// A ConfigMap in `hostNamespace` that owns every host copy in that namespace, so that
    /// deleting it (with the Helm release or the cluster) lets the host's garbage collector
    /// delete the copies (see [`crate::host_owner`]). None: copies have no owner.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_owner: Option<String>,
    /// Plugin sections, by plugin name (see [`crate::plugin`]).
    #[serde(default)]
    pub plugins: std::collections::BTreeMap<String, PluginSection>,
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
            host_owner: None,
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
            Config::from_yaml(include_str!("../../../deploy/vcsync.yaml"), "deploy/vcsync.yaml").unwrap();
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
