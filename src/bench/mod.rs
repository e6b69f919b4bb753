//! `vcsync bench`: performance figures of the syncer against the embedded API servers.
//!
//! A host and a virtual embedded API server run in this process (the host with the simulator
//! of a scheduler and kubelets), or with `--kube-assets` a real host and virtual control plane
//! (etcd, kube-apiserver and kube-controller-manager each, fake kubelets on the host); the
//! syncer runs as a child process (`vcsync run`), so that its
//! CPU seconds (`/proc/<pid>/stat`) and its resident memory (`/proc/<pid>/status`) are its
//! alone. The bench client (this process) creates objects and watches both clusters:
//!
//! - `burst`: N pods, each referencing a ConfigMap and a Secret, created in the virtual cluster
//!   as fast as the client can (`--concurrency` requests in flight); the time until all N pods
//!   exist on the host, against the time the same client takes to create the same 3N objects
//!   directly on the host (same run, before the syncer starts): `sync_direct_ratio`. The CPU
//!   this process (servers, simulator, client) used until all pods were on the host, over the
//!   cores and the direct time, is `servers_bound_ratio`: the ratio a syncer costing no CPU
//!   would reach on a machine whose cores it shares with the servers.
//! - `steady`: R pods per second for T seconds; per pod the latency down (virtual create sent ->
//!   host pod seen by a host watch) and up (host pod Running seen -> virtual pod Running seen).
//! - `restart`: N pods synced, the syncer stopped (SIGTERM) and started again: time to ready,
//!   writes of the resync, memory of the refilled caches.
//! - `churn`: N pods synced, then every ConfigMap updated, then every pod deleted: latencies
//!   and requests per operation.
//! - `kubelet`: one pod, the syncer's kubelet API on: `logs --tail=1` and `exec -- echo hi`
//!   latencies (N requests each way) and `kubectl port-forward` throughput through the syncer
//!   (virtual API server, the pod by its virtual name) against directly on the host (its host
//!   twin), in the same run.
//!
//! Request counts come from the servers' counters, minus the bench client's own requests
//! (its creates, patches and deletes are counted here; its watches start on empty collections:
//! one list and one watch each). The fake nodes' Lease renewals and node status refreshes are
//! periodic writes independent of the pods: they are counted apart (`heartbeat_writes`).

use std::collections::BTreeMap;

use anyhow::{Context, bail};
use k8s_openapi::serde_json::{self, Value, json};

mod args;
mod clusters;
mod figures;
mod harness;
mod kubelet;
mod objects;
mod proc_stats;
mod report;
mod scenarios;
mod watches;

pub use self::args::BenchArgs;
use self::{args::*, harness::*, report::*, scenarios::*};

/// Runs a scenario and prints its report.
pub async fn run(args: BenchArgs) -> anyhow::Result<()> {
    let (dir, temporary) = match &args.dir {
        Some(dir) => (dir.clone(), false),
        None => (
            std::env::temp_dir().join(format!("vcsync-bench-{}", std::process::id())),
            true,
        ),
    };
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    if args.rate == 0 || args.seconds == 0 {
        bail!("--rate and --seconds must be positive");
    }
    // Before any server starts: the kubelet scenario's port-forwards need kubectl.
    let kubectl = match args.scenario {
        Scenario::Kubelet => Some(kubelet::find_kubectl()?),
        _ => None,
    };
    let mut bench = Bench::new(&args, &dir).await?;
    let mut out = BTreeMap::new();
    out.insert(
        "scenario".into(),
        json!(format!("{:?}", args.scenario).to_lowercase()),
    );
    out.insert("pods".into(), json!(args.pods));
    out.insert("simulated_nodes".into(), json!(args.nodes));
    out.insert("servers".into(), json!(bench.clusters.kind()));
    out.insert("concurrency".into(), json!(args.concurrency));
    let limits = if args.default_limits {
        "default"
    } else {
        "unlimited"
    };
    out.insert("client_limits".into(), json!(limits));
    let result = match args.scenario {
        Scenario::Burst => burst(&args, &mut bench, &mut out).await,
        Scenario::Steady => steady(&args, &mut bench, &mut out).await,
        Scenario::Restart => restart(&args, &mut bench, &mut out).await,
        Scenario::Churn => churn(&args, &mut bench, &mut out).await,
        Scenario::Kubelet => kubelet::kubelet(&args, kubectl.as_deref(), &dir, &mut bench, &mut out).await,
    };
    bench.syncer.stop().await;
    for task in &bench.watches {
        task.abort();
    }
    bench.clusters.stop().await;
    if let Err(err) = result {
        return Err(err.context(format!("syncer log in {}", dir.join("syncer.log").display())));
    }
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&Value::Object(out.into_iter().collect()))?
        );
    } else {
        print!("{}", to_table(&out));
    }
    if temporary {
        let _ = std::fs::remove_dir_all(&dir);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::{
        figures::{cache_bytes_per_pod, percentile, reconciles_per_pod},
        objects::pod,
    };

    #[test]
    fn percentiles_are_nearest_rank() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&v, 50.0), Some(50.0));
        assert_eq!(percentile(&v, 99.0), Some(99.0));
        assert_eq!(percentile(&v, 100.0), Some(100.0));
        assert_eq!(percentile(&[], 50.0), None);
    }

    #[test]
    fn the_pod_references_its_config_map_and_secret() {
        let pod = pod(7, "ns", true);
        let refs = vcsync_translators::pod_references(&pod);
        // The config map, the secret and the (default) service account.
        assert_eq!(refs.len(), 3, "{refs:?}");
    }

    #[test]
    fn per_pod_figures_are_read_from_the_syncers_metrics() {
        let metrics = "# TYPE vcsync_reconciles_total counter\n\
            vcsync_reconciles_total{syncer=\"pods\"} 40\n\
            vcsync_reconciles_total{syncer=\"events\"} 0\n\
            vcsync_cache_bytes{cache=\"host/Pod\"} 3000\n\
            vcsync_cache_bytes{cache=\"virtual/Pod\"} 1000\n\
            vcsync_cache_bytes{cache=\"host/Node\"} 0\n";
        assert_eq!(
            reconciles_per_pod(metrics, 10),
            serde_json::json!({"pods": 4.0}),
            "syncers that never ran are left out"
        );
        assert_eq!(
            cache_bytes_per_pod(metrics, 10),
            serde_json::json!({"host/Pod": 300.0, "virtual/Pod": 100.0, "all": 400.0})
        );
    }
}
