//! The two clusters a bench runs on (see [`crate::cluster_pair`]), and the syncer's own count
//! of its requests, which is what tells them apart on a real API server.

use std::net::SocketAddr;

use crate::cluster_pair::ClusterPair;

use super::*;

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

/// The syncer's own count of its requests (`vcsync_api_requests_total` on its `/metrics`), by
/// (cluster, verb, resource): what a real API server cannot tell apart from its other clients'.
pub(super) async fn syncer_requests(
    address: SocketAddr,
) -> anyhow::Result<BTreeMap<(String, String, String), u64>> {
    let response = tokio::task::spawn_blocking(move || -> anyhow::Result<String> {
        use std::io::{Read, Write};
        let mut stream = std::net::TcpStream::connect(address)
            .with_context(|| format!("connecting to the syncer's /metrics at {address}"))?;
        stream.write_all(b"GET /metrics HTTP/1.0\r\nHost: localhost\r\n\r\n")?;
        let mut response = String::new();
        stream.read_to_string(&mut response)?;
        Ok(response)
    })
    .await??;
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, body)| body)
        .context("no body in the syncer's /metrics answer")?;
    Ok(vcsync_syncer::metrics::api_requests_in(body))
}
