//! The two clusters a bench runs on (see [`crate::cluster_pair`]).

use crate::cluster_pair::ClusterPair;

use vcsync_apiserver::{ServerConfig, SimulatorConfig};

use super::args::*;

/// The clusters of `args`: real control planes with `--kube-assets`, else embedded servers
/// whose watch history holds a whole burst and whose simulated nodes have room for every pod
/// of the run (direct ones included; few nodes, so heartbeats stay a small constant).
pub(super) async fn start(args: &BenchArgs) -> anyhow::Result<ClusterPair> {
    if let Some(assets) = &args.kube_assets {
        return ClusterPair::real(assets, args.nodes).await;
    }
    let server = |name: &str| ServerConfig {
        name: name.into(),
        // The syncer's watches never fall behind into 410 Gone because the bench is large.
        watch_history: 100_000,
        ..ServerConfig::default()
    };
    let pods = args.pods.max(args.rate as usize * args.seconds as usize);
    let simulator = (args.nodes > 0).then(|| SimulatorConfig {
        nodes: args.nodes,
        max_pods_per_node: (2 * pods).div_ceil(args.nodes) + 110,
        ..SimulatorConfig::default()
    });
    ClusterPair::embedded(server, simulator).await
}
