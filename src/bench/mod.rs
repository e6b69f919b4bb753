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

use std::{
    collections::{BTreeMap, HashMap},
    path::{Path, PathBuf},
    process::{Child, Command},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use anyhow::{Context, bail};
use futures::{StreamExt, stream};
use k8s_openapi::{
    ByteString,
    api::core::v1::{ConfigMap, Pod, Secret},
    serde_json::{self, Value, json},
};
use kube::{
    Api, Client,
    api::{DeleteParams, ObjectMeta, Patch, PatchParams, PostParams},
    runtime::watcher,
};
use vcsync_apiserver::{RequestCounters, ServerConfig, SimulatorConfig};
use vcsync_translators::{MANAGED_BY_LABEL, OBJECT_NAME_ANNOTATION};

mod clusters;
mod figures;
mod harness;
mod kubelet;
mod objects;
mod scenarios;
mod syncer_process;
mod watches;

use self::{figures::*, harness::*, objects::*, scenarios::*, syncer_process::*, watches::*};
use crate::child::syncer_requests;

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
    /// Print one JSON object instead of a table.
    #[arg(long)]
    pub json: bool,
}

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

fn to_table(out: &BTreeMap<String, Value>) -> String {
    let mut text = String::from("vcsync bench report\n");
    let width = out.keys().map(String::len).max().unwrap_or(0);
    let mut nested = Vec::new();
    for (key, value) in out {
        match value {
            Value::Object(map) => nested.push((key, map)),
            Value::String(s) => text.push_str(&format!("  {key:<width$}  {s}\n")),
            other => text.push_str(&format!("  {key:<width$}  {other}\n")),
        }
    }
    for (key, map) in nested {
        // The kubelet scenario counts the syncer's requests per request through it.
        let per = match map.values().next() {
            Some(v) if v.get("per_request").is_some() => "per_request",
            _ => "per_pod",
        };
        text.push_str(&format!(
            "  {key} (syncer only; cluster verb resource: count, {})\n",
            per.replace('_', " ")
        ));
        for (what, v) in map {
            text.push_str(&format!("    {what:<40} {:>8}  {:>8}\n", v["count"], v[per]));
        }
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
