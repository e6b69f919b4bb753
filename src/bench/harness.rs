//! The bench: both clusters, the syncer, the watches and the measurements every scenario uses.

use crate::cluster_pair::ClusterPair;

use std::{
    collections::BTreeMap,
    path::Path,
    sync::Mutex,
    time::{Duration, Instant},
};

use anyhow::{Context, bail};
use k8s_openapi::serde_json::{Value, json};
use kube::Client;

use super::clusters;
use super::{args::*, figures::*, objects::*, proc_stats::*, watches::*};
use crate::child::{SyncerChild, syncer_requests};

pub(super) struct Bench {
    pub(super) clusters: ClusterPair,
    pub(super) host: Client,
    pub(super) virt: Client,
    pub(super) syncer: SyncerChild,
    /// The syncer's operations endpoint (its `/metrics` counts its requests).
    pub(super) metrics: std::net::SocketAddr,
    /// The syncer's request counts at the last reset (real control planes only: the embedded
    /// servers' own counters are reset instead).
    pub(super) requests_at_reset: Mutex<BTreeMap<(String, String, String), u64>>,
    pub(super) seen: Shared,
    pub(super) watches: Vec<tokio::task::JoinHandle<()>>,
    pub(super) client: ClientRequests,
    pub(super) ticks: f64,
    pub(super) timeout: Duration,
    /// RSS of the idle syncer (ready, no objects).
    pub(super) baseline: ProcStats,
}

impl Bench {
    pub(super) async fn new(args: &BenchArgs, dir: &Path) -> anyhow::Result<Bench> {
        let clusters = clusters::start(args).await?;
        let host_kubeconfig = dir.join("host.kubeconfig");
        let virtual_kubeconfig = dir.join("virtual.kubeconfig");
        crate::setup::write(&host_kubeconfig, &clusters.host_kubeconfig)?;
        crate::setup::write(&virtual_kubeconfig, &clusters.virtual_kubeconfig)?;
        let metrics = {
            let probe = std::net::TcpListener::bind((std::net::Ipv4Addr::LOCALHOST, 0))?;
            probe.local_addr()?
        };
        let config_path = dir.join("vcsync.yaml");
        // Client limits too high to matter, so that the bench measures the syncer; with
        // `--default-limits` none in the file: the shipped defaults (no client-side bucket
        // since `qps: 0` became the default; 100 qps before, which made a burst of 10,000
        // pods take minutes).
        let limits = match args.default_limits {
            true => "",
            false => "  qps: 1000000\n  burst: 1000000\n",
        };
        let mut config = format!(
            "instance: {INSTANCE}\nhostNamespace: {HOST_NAMESPACE}\n\
             host:\n  kubeconfig: {}\n{limits}\
             virtual:\n  kubeconfig: {}\n{limits}\
             operations:\n  address: {metrics}\n",
            host_kubeconfig.display(),
            virtual_kubeconfig.display()
        );
        if args.scenario == Scenario::Kubelet {
            // The kubelet API of the virtual nodes on loopback, trusting the virtual API
            // server's kubelet client certificate, as `vcsync dev` runs it.
            let ca = dir.join("virtual-kubelet-client-ca.crt");
            crate::setup::write(&ca, &clusters.virtual_kubelet_client_ca()?)?;
            config.push_str(&format!(
                "kubelet:\n  listen: 127.0.0.1:0\n  clientCaFile: {}\n",
                ca.display()
            ));
        }
        crate::setup::write(&config_path, &config)?;
        let (host, virt) = (clusters.host_client.clone(), clusters.virtual_client.clone());
        crate::setup::create_namespace(&host, HOST_NAMESPACE).await?;
        crate::setup::create_namespace(&host, DIRECT_NAMESPACE).await?;
        crate::setup::create_namespace(&virt, VIRTUAL_NAMESPACE).await?;
        let log = std::fs::File::create(dir.join("syncer.log")).context("creating the syncer log")?;
        // VCSYNC_BENCH_WRAPPER runs the syncer under a profiler, e.g.
        // `valgrind --tool=massif --massif-out-file=/tmp/massif.out`.
        let wrapper = std::env::var("VCSYNC_BENCH_WRAPPER").unwrap_or_default();
        let syncer = SyncerChild::new(config_path, log).wrapped_by(&wrapper);
        let seen = Shared::default();
        let watches = start_watches(&host, &virt, &seen);
        Ok(Bench {
            clusters,
            host,
            virt,
            syncer,
            metrics,
            requests_at_reset: Mutex::default(),
            seen,
            watches,
            client: ClientRequests::default(),
            ticks: clock_ticks(),
            timeout: Duration::from_secs(args.timeout),
            baseline: ProcStats::default(),
        })
    }

    /// Starts the syncer and records its idle figures.
    pub(super) async fn start_syncer(&mut self, out: &mut BTreeMap<String, Value>) -> anyhow::Result<()> {
        self.syncer.start()?;
        let ready = self
            .syncer
            .wait_started(self.timeout, Duration::from_millis(5))
            .await?;
        out.insert("start_ready_s".into(), json!(round3(ready.as_secs_f64())));
        // Let the start settle (fake nodes, first heartbeats) before the idle figures.
        tokio::time::sleep(Duration::from_millis(1500)).await;
        self.baseline = proc_stats(self.syncer.pid()?, self.ticks)?;
        out.insert("idle_rss_bytes".into(), json!(self.baseline.rss));
        Ok(())
    }

    pub(super) async fn reset_counters(&self) -> anyhow::Result<()> {
        self.clusters.reset_counters();
        self.client.reset();
        if self.clusters.counters().is_none() {
            // A syncer started after this counts from zero.
            let now = match self.syncer.running() {
                true => syncer_requests(self.metrics).await?,
                false => BTreeMap::new(),
            };
            *self.requests_at_reset.lock().unwrap_or_else(|p| p.into_inner()) = now;
        }
        Ok(())
    }

    /// The syncer's requests since the last reset: the embedded servers' counts of them (the
    /// bench's watches count only when they started after the reset; they never do: they
    /// start before the first reset), or on real control planes the syncer's own count.
    pub(super) async fn requests(&self) -> anyhow::Result<SyncerRequests> {
        if let Some((host, virt)) = self.clusters.counters() {
            return Ok(SyncerRequests::new(&host, &virt, &self.client, 0));
        }
        let mut counts = syncer_requests(self.metrics).await?;
        let at_reset = self.requests_at_reset.lock().unwrap_or_else(|p| p.into_inner());
        for (key, n) in counts.iter_mut() {
            *n = n.saturating_sub(at_reset.get(key).copied().unwrap_or(0));
        }
        counts.retain(|_, n| *n > 0);
        Ok(SyncerRequests { counts })
    }

    /// Waits until the syncer wrote nothing for `quiet` (heartbeats aside).
    pub(super) async fn settle(&self, quiet: Duration) -> anyhow::Result<()> {
        let start = Instant::now();
        let mut last = self.requests().await?.object_writes();
        let mut since = Instant::now();
        while since.elapsed() < quiet {
            tokio::time::sleep(Duration::from_millis(100)).await;
            let now = self.requests().await?.object_writes();
            if now != last {
                last = now;
                since = Instant::now();
            }
            if start.elapsed() > self.timeout {
                bail!("the syncer kept writing for {:?}", self.timeout);
            }
        }
        Ok(())
    }

    pub(super) fn record_process(
        &self,
        out: &mut BTreeMap<String, Value>,
        pods: usize,
        prefix: &str,
    ) -> anyhow::Result<ProcStats> {
        let stats = proc_stats(self.syncer.pid()?, self.ticks)?;
        out.insert(format!("{prefix}cpu_s"), json!(round3(stats.cpu_s)));
        // Both API servers, the simulator and the bench client.
        out.insert(
            format!("{prefix}servers_and_client_cpu_s"),
            json!(round3(self.cpu().0)),
        );
        out.insert(format!("{prefix}rss_bytes"), json!(stats.rss));
        out.insert(format!("{prefix}peak_rss_bytes"), json!(stats.hwm));
        if pods > 0 {
            out.insert(
                format!("{prefix}rss_per_pod_bytes"),
                json!(stats.rss.saturating_sub(self.baseline.rss) / pods as u64),
            );
        }
        Ok(stats)
    }

    pub(super) async fn record_requests(
        &self,
        out: &mut BTreeMap<String, Value>,
        pods: usize,
        prefix: &str,
    ) -> anyhow::Result<SyncerRequests> {
        let requests = self.requests().await?;
        let per = pods.max(1) as f64;
        out.insert(format!("{prefix}writes"), json!(requests.object_writes()));
        out.insert(
            format!("{prefix}heartbeat_writes"),
            json!(requests.heartbeat_writes()),
        );
        out.insert(
            format!("{prefix}writes_per_pod"),
            json!(round3(requests.pod_writes() as f64 / per)),
        );
        out.insert(
            format!("{prefix}writes_per_pod_all_kinds"),
            json!(round3(requests.object_writes() as f64 / per)),
        );
        out.insert(format!("{prefix}requests"), requests.to_json(pods));
        Ok(requests)
    }

    /// CPU seconds used so far by the servers, the simulator and the client (this process,
    /// and the control planes' processes on real ones), and by the syncer.
    pub(super) fn cpu(&self) -> (f64, f64) {
        let of = |pid: anyhow::Result<u32>| {
            pid.and_then(|pid| proc_stats(pid, self.ticks))
                .map(|s| s.cpu_s)
                .unwrap_or(0.0)
        };
        let servers: f64 = self
            .clusters
            .server_pids()
            .into_iter()
            .map(|pid| of(Ok(pid)))
            .sum();
        (of(Ok(std::process::id())) + servers, of(self.syncer.pid()))
    }

    /// Creates `n` pods with their references in the virtual cluster and waits until all run
    /// in both clusters; returns (time until all exist on the host, until all run virtually),
    /// and the CPU seconds (this process, the syncer) used until all existed on the host.
    pub(super) async fn sync_pods(
        &self,
        n: usize,
        concurrency: usize,
    ) -> anyhow::Result<(Duration, Duration, (f64, f64))> {
        let (own_before, syncer_before) = self.cpu();
        let start = Instant::now();
        create_all(
            &self.virt,
            "virtual",
            VIRTUAL_NAMESPACE,
            0..n,
            concurrency,
            &self.client,
        )
        .await?;
        let all_on_host = wait_for(&self.seen, "all pods on the host", self.timeout, |s| {
            s.pods.values().filter(|p| p.host_seen.is_some()).count() >= n
        })
        .await?;
        let (own, syncer) = self.cpu();
        let cpu = (own - own_before, syncer - syncer_before);
        let all_running = wait_for(&self.seen, "all virtual pods Running", self.timeout, |s| {
            s.pods.values().filter(|p| p.virtual_running.is_some()).count() >= n
        })
        .await?;
        Ok((all_on_host - start, all_running - start, cpu))
    }
}
