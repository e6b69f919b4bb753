//! `vcsync cluster`: the lifecycle of whole virtual clusters (create, delete, pause, resume,
//! list, status, exists, connect, snapshot, restore) through pluggable drivers.
//!
//! Drivers register themselves with [`inventory::submit!`] of a [`DriverRegistration`] in their
//! own module; the core looks them up by name and never names one. An unknown name is
//! [`ClusterError::DriverNotFound`], listing the registered ones. Drivers do not import each
//! other: what they share is in `common`. The `local` driver runs embedded API servers and comes
//! with the `dev-tools` feature; without it, `local` is registered as unavailable
//! ([`ClusterError::DriverUnavailable`]).

pub mod cli;
mod common;
mod connect;
mod discovery;
pub mod kubeconfig;
pub mod kubernetes;
#[cfg(feature = "dev-tools")]
pub mod local;
#[cfg(not(feature = "dev-tools"))]
mod local_unavailable;
mod output;
pub mod port_forward;
mod private_file;
mod progress;
mod reach;
pub mod snapshot;
mod values;

use std::{collections::BTreeMap, path::PathBuf};

use serde::{Deserialize, Serialize};

pub use progress::Progress;
pub use values::*;

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
    /// The command `connect NAME -- CMD` ran exited with this status (its exit code).
    #[error("the command exited with status {0}")]
    CommandExited(u8),
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
            ClusterError::CommandExited(status) => *status,
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
    /// A forward from `127.0.0.1:local_port` (0: any) to the cluster's API server; asked for
    /// when its kubeconfig names an address reachable only inside the cluster's host. None when
    /// this driver's kubeconfigs work from here as they are (the default).
    async fn forward_api_server(&self, name: &str, local_port: u16) -> Result<Option<port_forward::Forward>> {
        let _ = (name, local_port);
        Ok(None)
    }
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
