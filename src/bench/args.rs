//! The flags of `vcsync bench` and the names every scenario shares.

use std::path::PathBuf;

/// Instance name of the benchmarked syncer.
pub(super) const INSTANCE: &str = "bench";
/// Host namespace of the benchmarked syncer.
pub(super) const HOST_NAMESPACE: &str = "vcsync-bench";
/// Host namespace of the direct creations of `burst`.
pub(super) const DIRECT_NAMESPACE: &str = "bench-direct";
/// Virtual namespace of the benchmark's objects.
pub(super) const VIRTUAL_NAMESPACE: &str = "bench";
/// Resources of the fake nodes' heartbeats on the virtual side (periodic, not per pod).
pub(super) const HEARTBEAT_RESOURCES: &[&str] = &["leases", "nodes/status"];
pub(super) const WRITE_VERBS: &[&str] = &["create", "update", "patch", "delete", "deletecollection"];

/// The scenarios of `vcsync bench`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Scenario {
    /// N pods (each with a ConfigMap and a Secret) as fast as possible, against direct creation.
    Burst,
    /// R pods per second for T seconds: latency down and up.
    Steady,
    /// Restart the syncer over N synced pods: writes and time to ready.
    Restart,
    /// Update and delete N synced objects.
    Churn,
    /// Logs, exec and port-forward of one pod through the syncer's kubelet API, against
    /// directly on the host.
    Kubelet,
}

/// Flags of `vcsync bench`.
#[derive(Debug, clap::Args)]
pub struct BenchArgs {
    /// The scenario to run.
    #[arg(value_enum)]
    pub scenario: Scenario,
    /// Pods of burst, restart and churn.
    #[arg(long, default_value_t = 1000)]
    pub pods: usize,
    /// Pods per second of steady.
    #[arg(long, default_value_t = 200)]
    pub rate: u32,
    /// Duration of steady, in seconds.
    #[arg(long, default_value_t = 10)]
    pub seconds: u64,
    /// Requests the bench client keeps in flight (burst, setup of restart and churn).
    #[arg(long, default_value_t = 32)]
    pub concurrency: usize,
    /// Requests of kubelet, each way (through the syncer and directly): logs and exec each.
    #[arg(long, default_value_t = 50)]
    pub requests: usize,
    /// MiB pushed through each port-forward of kubelet (and echoed back).
    #[arg(long, default_value_t = 64)]
    pub forward_mib: usize,
    /// Simulated host nodes (0: no simulator; pods then never run, and nothing comes up).
    #[arg(long, default_value_t = 3)]
    pub nodes: usize,
    /// Bound of every wait, in seconds.
    #[arg(long, default_value_t = 600)]
    pub timeout: u64,
    /// Directory for the kubeconfigs, vcsync.yaml and the syncer's log (default: a temporary
    /// directory, removed afterwards).
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// Run on a real host and a real virtual control plane (kube-apiserver,
    /// kube-controller-manager and etcd each, as processes of their own) from this folder of
    /// binaries (the last line that tests/control-plane/build.sh prints) instead of the embedded
    /// servers; `--nodes` fake kubelets then run the host's pods through its API. The servers'
    /// CPU is then the planes' processes', and the syncer's requests its own count of them.
    #[arg(long)]
    pub kube_assets: Option<PathBuf>,
    /// Run the syncer with the shipped client configuration (no `qps`/`burst` in its
    /// vcsync.yaml) instead of client limits too high to matter; the report's `client_limits`
    /// says which ("default" or "unlimited").
    #[arg(long)]
    pub default_limits: bool,
    /// Print one JSON object instead of a table.
    #[arg(long)]
    pub json: bool,
}
