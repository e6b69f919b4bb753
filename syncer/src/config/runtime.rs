//! How vcsync itself runs: connections to the API servers, controller options, logging, the
//! operations endpoints, leader election and plugin sections.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

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
    /// Sustained client requests per second of a client-side token bucket; 0 (the default):
    /// no client-side limit, the API server's Priority and Fairness is the brake and its 429s
    /// (Retry-After) make the client hold back.
    #[serde(default = "default_qps")]
    pub qps: u32,
    /// Requests allowed in a burst above `qps` (only with `qps` above 0).
    #[serde(default = "default_burst")]
    pub burst: u32,
}

fn default_qps() -> u32 {
    0
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

/// The `leaderElection` section.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LeaderElectionConfig {
    /// Whether replicas elect a leader; off: this replica is the leader.
    #[serde(default)]
    pub enabled: bool,
    /// Namespace of the Lease in the virtual cluster (created when missing).
    #[serde(default = "default_namespace")]
    pub namespace: String,
    /// Name of the Lease; default `vcsync-<instance>`.
    #[serde(default)]
    pub lease_name: Option<String>,
    /// How long a lease is valid without renewal: the longest a standby waits after the
    /// leader died.
    #[serde(default = "default_lease_duration")]
    pub lease_duration_seconds: u64,
    /// How long before expiry the leader renews (also the clock skew tolerated between
    /// replicas); below `leaseDurationSeconds`.
    #[serde(default = "default_renew_grace")]
    pub renew_grace_seconds: u64,
    /// This replica's identity; default: `$POD_NAME`, else host name and process id.
    #[serde(default)]
    pub identity: Option<String>,
}

fn default_namespace() -> String {
    "kube-system".into()
}

fn default_lease_duration() -> u64 {
    15
}

fn default_renew_grace() -> u64 {
    5
}

impl Default for LeaderElectionConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            namespace: default_namespace(),
            lease_name: None,
            lease_duration_seconds: default_lease_duration(),
            renew_grace_seconds: default_renew_grace(),
            identity: None,
        }
    }
}

impl LeaderElectionConfig {
    /// Checks what kube-lease-manager would otherwise panic on.
    pub fn validate(&self) -> std::result::Result<(), String> {
        if self.lease_duration_seconds == 0 || self.renew_grace_seconds == 0 {
            return Err("leaderElection: leaseDurationSeconds and renewGraceSeconds must be above 0".into());
        }
        if self.renew_grace_seconds >= self.lease_duration_seconds {
            return Err(format!(
                "leaderElection: renewGraceSeconds ({}) must be below leaseDurationSeconds ({})",
                self.renew_grace_seconds, self.lease_duration_seconds
            ));
        }
        Ok(())
    }

    /// The Lease's name for `instance`.
    pub fn lease_name(&self, instance: &str) -> String {
        self.lease_name
            .clone()
            .unwrap_or_else(|| format!("vcsync-{instance}"))
    }

    /// This replica's identity.
    pub fn identity(&self) -> String {
        self.identity.clone().unwrap_or_else(default_identity)
    }
}

fn default_identity() -> String {
    if let Ok(pod) = std::env::var("POD_NAME")
        && !pod.is_empty()
    {
        return pod;
    }
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "vcsync".into());
    format!("{host}-{}", std::process::id())
}

/// The shape of one plugin section, for validating the file as a whole.
#[derive(Clone, Debug, Default, Deserialize, serde::Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct PluginSection {
    /// `false` switches the plugin off.
    #[serde(default)]
    pub enabled: Option<bool>,
    /// The plugin's own configuration, checked by the plugin.
    #[serde(default)]
    pub config: Option<serde_yaml_ng::Value>,
}
