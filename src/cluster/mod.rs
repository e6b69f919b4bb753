//! `vcsync cluster`: the lifecycle of whole virtual clusters (create, delete, pause, resume,
//! list, status, exists, connect) through pluggable drivers.
//!
//! Drivers register themselves with [`inventory::submit!`] of a [`DriverRegistration`] in their
//! own module; the core looks them up by name and never names one. An unknown name is
//! [`ClusterError::DriverNotFound`], listing the registered ones. Drivers do not import each
//! other: what they share is in `common`. The `local` driver runs embedded API servers and comes
//! with the `dev-tools` feature; without it, `local` is registered as unavailable
//! ([`ClusterError::DriverUnavailable`]).

pub mod cli;
mod common;
mod discovery;
pub mod kubernetes;
#[cfg(feature = "dev-tools")]
pub mod local;
#[cfg(not(feature = "dev-tools"))]
mod local_unavailable;
mod progress;

use std::{collections::BTreeMap, path::PathBuf};

use serde::{Deserialize, Serialize};

pub use progress::Progress;

/// Typed errors of cluster operations; each has its own exit code ([`ClusterError::exit_code`]).
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// No cluster of this name (in this driver).
    #[error("cluster {0:?} not found")]
    NotFound(String),
    /// The operation needs a cluster that does not run yet (`create --fail-if-exists`).
    #[error("cluster {0:?} is already running")]
    AlreadyRunning(String),
    /// The operation needs a running cluster and this one is paused or stopped.
    #[error("cluster {0:?} is not running")]
    NotRunning(String),
    /// `create` or `resume` with values different from the ones the cluster runs with.
    #[error("cluster {name:?} runs with a different configuration: {detail}")]
    ConfigMismatch {
        /// The cluster.
        name: String,
        /// What differs.
        detail: String,
    },
    /// The cluster did not become ready in time (`--wait`), or is not ready for the operation.
    #[error("cluster {name:?} is not ready: {detail}")]
    NotReady {
        /// The cluster.
        name: String,
        /// Why, from its status.
        detail: String,
    },
    /// The driver lacks what it needs to reach its backend (e.g. no kubeconfig).
    #[error("driver {driver:?} is missing configuration: {detail}")]
    MissingDriverConfig {
        /// The driver.
        driver: String,
        /// What is missing.
        detail: String,
    },
    /// The driver is registered but this binary cannot run it (built without what it needs).
    #[error("cluster driver {name:?} is not available: {reason}")]
    DriverUnavailable {
        /// The driver.
        name: String,
        /// Why.
        reason: String,
    },
    /// No driver of this name is registered.
    #[error("cluster driver {name:?} not found (known drivers: {})", known.join(", "))]
    DriverNotFound {
        /// The name asked for.
        name: String,
        /// The registered names.
        known: Vec<String>,
    },
    /// Invalid input: a bad name or values file.
    #[error("{0}")]
    BadInput(String),
    /// Anything else (API errors, I/O).
    #[error(transparent)]
    Other(#[from] anyhow::Error),
}

/// Exit codes of `vcsync cluster`; 0 is success, 1 any other failure.
pub mod exit {
    /// Invalid input (flags, values file, name), as clap's usage errors.
    pub const BAD_INPUT: u8 = 2;
    /// The cluster does not exist.
    pub const NOT_FOUND: u8 = 10;
    /// The cluster already runs (`create --fail-if-exists`).
    pub const ALREADY_RUNNING: u8 = 11;
    /// The cluster is paused or stopped and the operation needs it running.
    pub const NOT_RUNNING: u8 = 12;
    /// The requested values differ from the running cluster's.
    pub const CONFIG_MISMATCH: u8 = 13;
    /// Not ready (in time, with `--wait`).
    pub const NOT_READY: u8 = 14;
    /// The driver lacks configuration (e.g. no kubeconfig for `kubernetes`).
    pub const MISSING_DRIVER_CONFIG: u8 = 15;
    /// No driver of that name, or one this binary cannot run (the `local` driver without the
    /// `dev-tools` feature).
    pub const DRIVER_NOT_FOUND: u8 = 16;
}

impl ClusterError {
    /// The process exit code of this error.
    pub fn exit_code(&self) -> u8 {
        match self {
            ClusterError::NotFound(_) => exit::NOT_FOUND,
            ClusterError::AlreadyRunning(_) => exit::ALREADY_RUNNING,
            ClusterError::NotRunning(_) => exit::NOT_RUNNING,
            ClusterError::ConfigMismatch { .. } => exit::CONFIG_MISMATCH,
            ClusterError::NotReady { .. } => exit::NOT_READY,
            ClusterError::MissingDriverConfig { .. } => exit::MISSING_DRIVER_CONFIG,
            ClusterError::DriverNotFound { .. } | ClusterError::DriverUnavailable { .. } => {
                exit::DRIVER_NOT_FOUND
            }
            ClusterError::BadInput(_) => exit::BAD_INPUT,
            ClusterError::Other(_) => 1,
        }
    }
}

/// Shorthand for results of cluster operations.
pub type Result<T, E = ClusterError> = std::result::Result<T, E>;

/// High-level lifecycle phase of a cluster.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Phase {
    /// Created, not (yet) up.
    Pending,
    /// Up (not necessarily ready: see [`ClusterStatus::ready`]).
    Running,
    /// Paused on purpose.
    Paused,
    /// Something that should run does not.
    Failed,
    /// The driver cannot tell.
    Unknown,
}

impl std::fmt::Display for Phase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(self, f)
    }
}

/// Status of a cluster as its driver sees it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ClusterStatus {
    /// Cluster name.
    pub name: String,
    /// The driver managing it.
    pub driver: String,
    /// Lifecycle phase.
    pub phase: Phase,
    /// Ready for workloads: control plane ready and the syncer running.
    pub ready: bool,
    /// The virtual control plane answers.
    pub control_plane_ready: bool,
    /// Infrastructure nodes: control-plane replicas (`kubernetes`) or simulated host nodes
    /// (`local`).
    pub nodes_total: u32,
    /// Of which ready.
    pub nodes_ready: u32,
    /// Host objects carrying this cluster's ownership label, by kind (best effort).
    pub synced_objects: BTreeMap<String, u32>,
    /// Human-readable detail.
    pub message: String,
}

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
    /// `local`: simulated host nodes (default 3).
    pub nodes: Option<usize>,
    /// The vcsync.yaml of the cluster's syncer, as a mapping.
    pub config: Option<serde_yaml_ng::Mapping>,
}

/// The control plane container of the `kubernetes` driver.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct ControlPlaneValues {
    /// Image (default [`kubernetes::DEFAULT_CONTROL_PLANE_IMAGE`]).
    pub image: Option<String>,
    /// Arguments added to the control plane's.
    pub extra_args: Vec<String>,
    /// The host's service CIDR, which the virtual control plane must use too; unset: detected
    /// from the host (`cluster create`, or the pod's init container).
    pub service_cidr: Option<String>,
}

/// The control plane's datastore volume of the `kubernetes` driver.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct PersistenceValues {
    /// A PersistentVolumeClaim per control-plane replica (default true); false: an emptyDir,
    /// and every restart starts an empty virtual cluster.
    pub enabled: Option<bool>,
    /// Requested size (default [`kubernetes::DEFAULT_PERSISTENCE_SIZE`]).
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
    /// `spec.hard`, merged over [`kubernetes::DEFAULT_QUOTA`]; a key set to null is removed.
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
    /// Image (default [`kubernetes::DEFAULT_VCSYNC_IMAGE`]).
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

/// Options every driver gets from the command line.
#[derive(Clone, Debug, Default)]
pub struct DriverOptions {
    /// Kubeconfig of the host cluster (`kubernetes`; default: KUBECONFIG, ~/.kube/config,
    /// in-cluster).
    pub kubeconfig: Option<PathBuf>,
    /// Kubeconfig context.
    pub context: Option<String>,
    /// Where drivers with local state keep it (`local`).
    pub data_dir: Option<PathBuf>,
}

/// What `create` did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Created {
    /// A new cluster.
    New,
    /// It existed with the same values: nothing done.
    Unchanged,
}

/// What `pause` / `resume` / `delete` did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Changed {
    /// The state changed.
    Yes,
    /// It already was in the requested state: nothing done.
    AlreadySo,
}

/// One backend of virtual clusters.
#[async_trait::async_trait]
pub trait Driver: Send + Sync {
    /// The registered name.
    fn name(&self) -> &'static str;
    /// Creates cluster `name` (idempotent: the same values again change nothing; different
    /// values are [`ClusterError::ConfigMismatch`]).
    async fn create(&self, name: &str, values: &Values, progress: &Progress) -> Result<Created>;
    /// Deletes everything the cluster created. Missing: [`ClusterError::NotFound`].
    async fn delete(&self, name: &str, progress: &Progress) -> Result<()>;
    /// Stops the cluster's workloads, keeping its state (idempotent).
    async fn pause(&self, name: &str, progress: &Progress) -> Result<Changed>;
    /// Starts a paused cluster again (idempotent); `values`, when given, must match.
    async fn resume(&self, name: &str, values: Option<&Values>, progress: &Progress) -> Result<Changed>;
    /// Names of this driver's clusters, sorted.
    async fn list(&self) -> Result<Vec<String>>;
    /// Status derived from the backend. Missing: [`ClusterError::NotFound`].
    async fn status(&self, name: &str) -> Result<ClusterStatus>;
    /// Whether the cluster exists.
    async fn exists(&self, name: &str) -> Result<bool> {
        Ok(self.list().await?.iter().any(|n| n == name))
    }
    /// A kubeconfig of the virtual cluster. Paused: [`ClusterError::NotRunning`].
    async fn kubeconfig(&self, name: &str, server: Option<&str>) -> Result<String>;
}

/// A driver's entry in the registry; submit one with `inventory::submit!` in the driver's
/// module.
pub struct DriverRegistration {
    /// The name `--driver` selects.
    pub name: &'static str,
    /// One line for `--help` and listings.
    pub about: &'static str,
    /// Builds the driver.
    pub factory: fn(&DriverOptions) -> Result<Box<dyn Driver>>,
}

inventory::collect!(DriverRegistration);

/// The driver `create` uses when none is chosen.
pub const DEFAULT_DRIVER: &str = "kubernetes";

/// Registered driver names, sorted.
pub fn driver_names() -> Vec<&'static str> {
    let mut names: Vec<&'static str> = inventory::iter::<DriverRegistration>
        .into_iter()
        .map(|d| d.name)
        .collect();
    names.sort_unstable();
    names
}

/// The driver registered as `name`.
pub fn driver(name: &str, options: &DriverOptions) -> Result<Box<dyn Driver>> {
    match inventory::iter::<DriverRegistration>
        .into_iter()
        .find(|d| d.name == name)
    {
        Some(registration) => (registration.factory)(options),
        None => Err(ClusterError::DriverNotFound {
            name: name.to_string(),
            known: driver_names().into_iter().map(str::to_string).collect(),
        }),
    }
}

/// Cluster names are DNS-1123 labels (they name namespaces, objects and the ownership label).
pub fn check_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 40
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !name.starts_with('-')
        && !name.ends_with('-');
    if ok {
        Ok(())
    } else {
        Err(ClusterError::BadInput(format!(
            "invalid cluster name {name:?}: lower-case letters, digits and '-', at most 40 characters, starting and ending alphanumeric"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registry_knows_both_drivers_and_names_them_when_one_is_unknown() {
        assert_eq!(driver_names(), vec!["kubernetes", "local"]);
        let err = driver("nope", &DriverOptions::default()).err().unwrap();
        assert_eq!(err.exit_code(), exit::DRIVER_NOT_FOUND);
        assert_eq!(
            err.to_string(),
            "cluster driver \"nope\" not found (known drivers: kubernetes, local)"
        );
    }

    #[test]
    fn exit_codes_are_distinct() {
        let codes = [
            exit::BAD_INPUT,
            exit::NOT_FOUND,
            exit::ALREADY_RUNNING,
            exit::NOT_RUNNING,
            exit::CONFIG_MISMATCH,
            exit::NOT_READY,
            exit::MISSING_DRIVER_CONFIG,
            exit::DRIVER_NOT_FOUND,
        ];
        let set: std::collections::BTreeSet<u8> = codes.iter().copied().collect();
        assert_eq!(set.len(), codes.len());
    }

    #[test]
    fn values_reject_unknown_keys_with_location_and_report_mismatches() {
        let err = Values::parse("replicas: 1\nreplica: 2\n", "v.yaml").unwrap_err();
        assert!(err.to_string().starts_with("v.yaml:2:1:"), "{err}");
        let a = Values::parse("replicas: 1\n", "a").unwrap();
        let b = Values::parse("replicas: 2\nnodes: 1\n", "b").unwrap();
        assert_eq!(a.mismatch(&a.clone()), None);
        assert!(a.mismatch(&b).unwrap().contains("nodes, replicas"));
        let config = a.syncer_config("c1", "ns1").unwrap();
        assert_eq!(
            (config.instance.as_str(), config.host_namespace.as_str()),
            ("c1", "ns1")
        );
        assert!(check_name("Bad_Name").is_err() && check_name("ok-1").is_ok());
    }
}
