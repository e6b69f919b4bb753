//! The flags of `vcsync soak` and the constants of the soak: what its parts share.

use std::path::PathBuf;

/// Instance name of the soaked syncer.
pub(super) const INSTANCE: &str = "soak";
/// Host namespace of the soaked syncer.
pub(super) const HOST_NAMESPACE: &str = "vcsync-soak";
/// Foreign host objects at names the syncer would use for virtual objects of the churn.
pub(super) const FOREIGN_COLLISIONS: usize = 6;
/// Foreign host objects at unrelated names.
pub(super) const FOREIGN_OTHERS: usize = 6;
/// Examples of each kind of violation kept in the report.
pub(super) const EXAMPLES: usize = 5;

/// Flags of `vcsync soak`.
#[derive(Debug, clap::Args)]
pub struct SoakArgs {
    /// Distinct ConfigMaps and Secrets the churn creates (pods' own come on top).
    #[arg(long, default_value_t = 1000)]
    pub objects: usize,
    /// Pods the churn creates, each with a ConfigMap volume and a Secret env var of its own.
    #[arg(long, default_value_t = 200)]
    pub pods: usize,
    /// SIGKILLs of the syncer at random points of the churn (one more precedes the final run).
    #[arg(long, default_value_t = 20)]
    pub kills: usize,
    /// Seed of the churn and of the kill schedule (default: from the clock; the report prints it).
    #[arg(long)]
    pub seed: Option<u64>,
    /// Virtual namespaces the objects are spread over.
    #[arg(long, default_value_t = 4)]
    pub namespaces: usize,
    /// Pause between two churn operations, in milliseconds.
    #[arg(long, default_value_t = 2)]
    pub pace_ms: u64,
    /// Times the virtual API server is replaced by an empty one (a lost datastore) at random
    /// points of the churn; then a last run prunes the earlier clusters' host copies. Not with
    /// a given pair.
    #[arg(long, default_value_t = 0)]
    pub empty_virtual_restarts: usize,
    /// Bound of the wait for convergence after the final restart (and after the prune run), in
    /// seconds.
    #[arg(long, default_value_t = 120)]
    pub timeout: u64,
    /// How long the syncer restarted over the converged state is watched for host writes (there
    /// must be none), in seconds.
    #[arg(long, default_value_t = 30)]
    pub quiet_seconds: u64,
    /// Soak real control planes (etcd, kube-apiserver, kube-controller-manager) started from the
    /// binaries in this folder (`tests/control-plane/build.sh` prints it), fake kubelets on the
    /// host, instead of embedded API servers.
    #[arg(long, value_name = "DIR", conflicts_with_all = ["host_kubeconfig", "virtual_kubeconfig"])]
    pub kube_assets: Option<PathBuf>,
    /// Soak the host cluster of this kubeconfig (with `--virtual-kubeconfig`); the soak makes
    /// and at the end (when it passed) removes its namespaces there, which must not exist.
    #[arg(long, requires = "virtual_kubeconfig")]
    pub host_kubeconfig: Option<PathBuf>,
    /// Soak the virtual cluster of this kubeconfig (with `--host-kubeconfig`).
    #[arg(long, requires = "host_kubeconfig")]
    pub virtual_kubeconfig: Option<PathBuf>,
    /// Directory for the kubeconfigs, vcsync.yaml and the syncer's log (default: a fresh
    /// temporary directory, removed when the soak passes).
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
}
