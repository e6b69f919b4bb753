//! `vcsync bench`: performance figures of the syncer against the embedded API servers.
//!
//! A host and a virtual embedded API server run in this process (the host with the simulator
//! of a scheduler and kubelets); the syncer runs as a child process (`vcsync run`), so that its
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
use vcsync_apiserver::{ApiServer, RequestCounters, ServerConfig, Simulator, SimulatorConfig};
use vcsync_translators::{MANAGED_BY_LABEL, OBJECT_NAME_ANNOTATION};

/// Instance name of the benchmarked syncer.
const INSTANCE: &str = "bench";
/// Host namespace of the benchmarked syncer.
const HOST_NAMESPACE: &str = "vcsync-bench";
/// Host namespace of the direct creations of `burst`.
const DIRECT_NAMESPACE: &str = "bench-direct";
/// Virtual namespace of the benchmark's objects.
const VIRTUAL_NAMESPACE: &str = "bench";
/// Resources of the fake nodes' heartbeats on the virtual side (periodic, not per pod).
const HEARTBEAT_RESOURCES: &[&str] = &["leases", "nodes/status"];
const WRITE_VERBS: &[&str] = &["create", "update", "patch", "delete", "deletecollection"];

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
    /// Print one JSON object instead of a table.
    #[arg(long)]
    pub json: bool,
}

// ---------------------------------------------------------------------------------------------
// The syncer child process and /proc

/// CPU seconds, current and peak resident memory of a process.
#[derive(Clone, Copy, Debug, Default)]
struct ProcStats {
    cpu_s: f64,
    rss: u64,
    hwm: u64,
}

fn clock_ticks() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse::<f64>().ok())
        .unwrap_or(100.0)
}

fn proc_stats(pid: u32, ticks: f64) -> anyhow::Result<ProcStats> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).context("reading /proc/<pid>/stat")?;
    // Fields after "(comm) ": state is field 3, utime 14 and stime 15.
    let rest = stat.rsplit_once(") ").map(|(_, r)| r).unwrap_or("");
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let tick = |i: usize| fields.get(i).and_then(|f| f.parse::<f64>().ok()).unwrap_or(0.0);
    let cpu_s = (tick(11) + tick(12)) / ticks;
    let status =
        std::fs::read_to_string(format!("/proc/{pid}/status")).context("reading /proc/<pid>/status")?;
    let kb = |key: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
            .unwrap_or(0)
            * 1024
    };
    Ok(ProcStats {
        cpu_s,
        rss: kb("VmRSS:"),
        hwm: kb("VmHWM:"),
    })
}

/// `vcsync run` as a child process, its stderr appended to a log file.
struct Syncer {
    config: PathBuf,
    log: Arc<Mutex<std::fs::File>>,
    child: Option<Child>,
    /// When the current run logged that its controllers started.
    ready: Arc<Mutex<Option<Instant>>>,
    spawned: Instant,
}

impl Syncer {
    fn start(&mut self) -> anyhow::Result<()> {
        let exe = std::env::current_exe().context("locating the vcsync binary")?;
        self.spawned = Instant::now();
        // VCSYNC_BENCH_WRAPPER runs the syncer under a profiler, e.g.
        // `valgrind --tool=massif --massif-out-file=/tmp/massif.out`.
        let wrapper = std::env::var("VCSYNC_BENCH_WRAPPER").unwrap_or_default();
        let mut words = wrapper.split_whitespace();
        let command = match words.next() {
            Some(program) => {
                let mut command = Command::new(program);
                command.args(words).arg(exe);
                command
            }
            None => Command::new(exe),
        };
        let (child, ready) =
            crate::child::spawn_syncer(command, &self.config, self.log.clone(), String::new())?;
        self.ready = ready;
        self.child = Some(child);
        Ok(())
    }

    fn pid(&self) -> anyhow::Result<u32> {
        self.child
            .as_ref()
            .map(Child::id)
            .context("the syncer is not running")
    }

    /// Waits until the controllers started; returns the time from spawn.
    async fn wait_ready(&mut self, timeout: Duration) -> anyhow::Result<Duration> {
        loop {
            if let Some(at) = *self.ready.lock().unwrap_or_else(|p| p.into_inner()) {
                return Ok(at - self.spawned);
            }
            if let Some(child) = &mut self.child
                && let Ok(Some(status)) = child.try_wait()
            {
                bail!("the syncer exited with {status} before it was ready");
            }
            if self.spawned.elapsed() > timeout {
                bail!("the syncer was not ready within {timeout:?}");
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// SIGTERM, then the exit (SIGKILL after 30 s).
    async fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill")
                .arg("-TERM")
                .arg(child.id().to_string())
                .status();
            let deadline = Instant::now() + Duration::from_secs(30);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Syncer {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Watching both clusters

/// What the watches saw of one pod (keyed by its virtual name).
#[derive(Clone, Debug, Default)]
struct PodTimes {
    host_seen: Option<Instant>,
    host_running: Option<Instant>,
    host_gone: Option<Instant>,
    virtual_running: Option<Instant>,
    virtual_gone: Option<Instant>,
}

/// What the watches saw, shared with the watch tasks.
#[derive(Debug, Default)]
struct Seen {
    pods: HashMap<String, PodTimes>,
    /// Host config maps by virtual name: when each `data.v` value was first seen.
    config_maps: HashMap<String, HashMap<String, Instant>>,
    /// Host config maps and secrets currently present (by virtual name).
    host_data_objects: usize,
    /// Pods created directly on the host (steady's baseline): when each was first seen.
    direct_seen: HashMap<String, Instant>,
}

type Shared = Arc<Mutex<Seen>>;

fn lock(seen: &Shared) -> std::sync::MutexGuard<'_, Seen> {
    seen.lock().unwrap_or_else(|p| p.into_inner())
}

fn is_running(pod: &Pod) -> bool {
    pod.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running")
}

fn virtual_name_of(meta: &ObjectMeta) -> Option<String> {
    meta.annotations.as_ref()?.get(OBJECT_NAME_ANNOTATION).cloned()
}

/// Spawns a watch of `api` that hands each added, changed (`gone` false) or deleted (`gone`
/// true) object of a known virtual name to `record`, with the instant it was seen.
fn spawn_watch<K>(
    api: Api<K>,
    config: watcher::Config,
    seen: &Shared,
    name_of: fn(&K) -> Option<String>,
    mut record: impl FnMut(&mut Seen, String, &K, bool, Instant) + Send + 'static,
) -> tokio::task::JoinHandle<()>
where
    K: kube::Resource + Clone + std::fmt::Debug + serde::de::DeserializeOwned + Send + 'static,
{
    let seen = seen.clone();
    tokio::spawn(async move {
        let mut events = std::pin::pin!(watcher(api, config));
        while let Some(event) = events.next().await {
            let now = Instant::now();
            let (object, gone) = match event {
                Ok(watcher::Event::Apply(o) | watcher::Event::InitApply(o)) => (o, false),
                Ok(watcher::Event::Delete(o)) => (o, true),
                _ => continue,
            };
            let Some(name) = name_of(&object) else {
                continue;
            };
            record(&mut lock(&seen), name, &object, gone, now);
        }
    })
}

/// Watches the host's synced pods, config maps and secrets, and the virtual pods.
fn start_watches(host: &Client, virt: &Client, seen: &Shared) -> Vec<tokio::task::JoinHandle<()>> {
    let selector = format!("{MANAGED_BY_LABEL}={INSTANCE}");
    let config = watcher::Config::default().labels(&selector);
    let host_pods = spawn_watch(
        Api::<Pod>::namespaced(host.clone(), HOST_NAMESPACE),
        config.clone(),
        seen,
        |pod| virtual_name_of(&pod.metadata),
        |seen, name, pod, gone, now| {
            let times = seen.pods.entry(name).or_default();
            times.host_seen.get_or_insert(now);
            if is_running(pod) {
                times.host_running.get_or_insert(now);
            }
            if gone {
                times.host_gone.get_or_insert(now);
            }
        },
    );
    let virtual_pods = spawn_watch(
        Api::<Pod>::namespaced(virt.clone(), VIRTUAL_NAMESPACE),
        watcher::Config::default(),
        seen,
        |pod| pod.metadata.name.clone(),
        |seen, name, pod, gone, now| {
            let times = seen.pods.entry(name).or_default();
            if is_running(pod) {
                times.virtual_running.get_or_insert(now);
            }
            if gone {
                times.virtual_gone.get_or_insert(now);
            }
        },
    );
    let host_config_maps = spawn_watch(
        Api::<ConfigMap>::namespaced(host.clone(), HOST_NAMESPACE),
        config.clone(),
        seen,
        |cm| virtual_name_of(&cm.metadata),
        |seen, name, cm, gone, now| {
            if gone {
                if seen.config_maps.remove(&name).is_some() {
                    seen.host_data_objects -= 1;
                }
                return;
            }
            let value = cm
                .data
                .as_ref()
                .and_then(|d| d.get("v"))
                .cloned()
                .unwrap_or_default();
            if !seen.config_maps.contains_key(&name) {
                seen.host_data_objects += 1;
            }
            seen.config_maps
                .entry(name)
                .or_default()
                .entry(value)
                .or_insert(now);
        },
    );
    let mut present = std::collections::HashSet::new();
    let host_secrets = spawn_watch(
        Api::<Secret>::namespaced(host.clone(), HOST_NAMESPACE),
        config,
        seen,
        |secret| virtual_name_of(&secret.metadata),
        move |seen, name, _, gone, _| {
            if gone {
                if present.remove(&name) {
                    seen.host_data_objects -= 1;
                }
            } else if present.insert(name) {
                seen.host_data_objects += 1;
            }
        },
    );
    vec![host_pods, virtual_pods, host_config_maps, host_secrets]
}

/// Polls `done` over the shared observations until it holds; fails after `timeout`.
async fn wait_for(
    seen: &Shared,
    what: &str,
    timeout: Duration,
    done: impl Fn(&Seen) -> bool,
) -> anyhow::Result<Instant> {
    let start = Instant::now();
    loop {
        if done(&lock(seen)) {
            return Ok(Instant::now());
        }
        if start.elapsed() > timeout {
            bail!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

// ---------------------------------------------------------------------------------------------
// Objects

fn pod_name(i: usize) -> String {
    format!("pod-{i}")
}

fn meta(name: String, namespace: &str) -> ObjectMeta {
    ObjectMeta {
        name: Some(name),
        namespace: Some(namespace.into()),
        labels: Some(BTreeMap::from([("app".to_string(), "bench".to_string())])),
        ..Default::default()
    }
}

fn config_map(i: usize, namespace: &str) -> ConfigMap {
    ConfigMap {
        metadata: meta(format!("cm-{i}"), namespace),
        data: Some(BTreeMap::from([("v".to_string(), "1".to_string())])),
        ..Default::default()
    }
}

fn secret(i: usize, namespace: &str) -> Secret {
    Secret {
        metadata: meta(format!("sec-{i}"), namespace),
        data: Some(BTreeMap::from([(
            "password".to_string(),
            ByteString(format!("secret-{i}").into_bytes()),
        )])),
        type_: Some("Opaque".into()),
        ..Default::default()
    }
}

fn pod(i: usize, namespace: &str, with_references: bool) -> Pod {
    let volumes = if with_references {
        json!([
            {"name": "config", "configMap": {"name": format!("cm-{i}")}},
            {"name": "secret", "secret": {"secretName": format!("sec-{i}")}},
        ])
    } else {
        json!([])
    };
    let mounts = if with_references {
        json!([
            {"name": "config", "mountPath": "/etc/config"},
            {"name": "secret", "mountPath": "/etc/secret"},
        ])
    } else {
        json!([])
    };
    let spec = json!({
        "containers": [{"name": "app", "image": "nginx:1.27", "volumeMounts": mounts}],
        "volumes": volumes,
    });
    Pod {
        metadata: meta(pod_name(i), namespace),
        spec: serde_json::from_value(spec).ok(),
        ..Default::default()
    }
}

/// The bench client's own writes per (cluster, verb, resource), subtracted from the servers'
/// counts.
#[derive(Debug, Default)]
struct ClientRequests {
    counts: Mutex<BTreeMap<(&'static str, &'static str, &'static str), u64>>,
}

impl ClientRequests {
    fn add(&self, cluster: &'static str, verb: &'static str, resource: &'static str, n: u64) {
        *self
            .counts
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry((cluster, verb, resource))
            .or_default() += n;
    }

    fn get(&self, cluster: &str, verb: &str, resource: &str) -> u64 {
        self.counts
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .filter(|((c, v, r), _)| *c == cluster && *v == verb && *r == resource)
            .map(|(_, n)| *n)
            .sum()
    }

    fn reset(&self) {
        self.counts.lock().unwrap_or_else(|p| p.into_inner()).clear();
    }
}

/// Creates pod `i` (with its ConfigMap and Secret first when `with_references`).
async fn create_set(
    client: &Client,
    cluster: &'static str,
    namespace: &str,
    i: usize,
    with_references: bool,
    counts: &ClientRequests,
) -> anyhow::Result<()> {
    let pp = PostParams::default();
    if with_references {
        Api::<ConfigMap>::namespaced(client.clone(), namespace)
            .create(&pp, &config_map(i, namespace))
            .await
            .context("creating a config map")?;
        counts.add(cluster, "create", "configmaps", 1);
        Api::<Secret>::namespaced(client.clone(), namespace)
            .create(&pp, &secret(i, namespace))
            .await
            .context("creating a secret")?;
        counts.add(cluster, "create", "secrets", 1);
    }
    Api::<Pod>::namespaced(client.clone(), namespace)
        .create(&pp, &pod(i, namespace, with_references))
        .await
        .context("creating a pod")?;
    counts.add(cluster, "create", "pods", 1);
    Ok(())
}

/// Creates sets `range` with `concurrency` in flight; returns the elapsed time.
async fn create_all(
    client: &Client,
    cluster: &'static str,
    namespace: &str,
    range: std::ops::Range<usize>,
    concurrency: usize,
    counts: &ClientRequests,
) -> anyhow::Result<Duration> {
    let start = Instant::now();
    let results: Vec<anyhow::Result<()>> = stream::iter(range)
        .map(|i| create_set(client, cluster, namespace, i, true, counts))
        .buffer_unordered(concurrency.max(1))
        .collect()
        .await;
    results.into_iter().collect::<anyhow::Result<Vec<()>>>()?;
    Ok(start.elapsed())
}

// ---------------------------------------------------------------------------------------------
// Figures

fn percentile(sorted: &[f64], p: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, sorted.len()) - 1])
}

/// p50, p95, p99 and max of latencies in milliseconds.
fn latency_fields(prefix: &str, mut ms: Vec<f64>, out: &mut BTreeMap<String, Value>) {
    ms.sort_by(f64::total_cmp);
    out.insert(format!("{prefix}_samples"), json!(ms.len()));
    for (name, p) in [("p50", 50.0), ("p95", 95.0), ("p99", 99.0), ("max", 100.0)] {
        if let Some(v) = percentile(&ms, p) {
            out.insert(format!("{prefix}_{name}_ms"), json!(round3(v)));
        }
    }
}

fn round3(v: f64) -> f64 {
    (v * 1000.0).round() / 1000.0
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// The syncer's requests: the servers' counts minus the bench client's.
struct SyncerRequests {
    /// (cluster, verb, resource) -> count.
    counts: BTreeMap<(String, String, String), u64>,
}

impl SyncerRequests {
    fn new(host: &RequestCounters, virt: &RequestCounters, client: &ClientRequests, watches: u64) -> Self {
        let mut counts = BTreeMap::new();
        for (cluster, counters) in [("host", host), ("virtual", virt)] {
            for (verb, resource, n) in counters.iter() {
                let mut mine = client.get(cluster, verb, resource);
                // The bench's watches: pods on both sides, config maps and secrets on the host.
                let watched = match cluster {
                    "host" => ["pods", "configmaps", "secrets"].contains(&resource),
                    _ => resource == "pods",
                };
                if watched && (verb == "list" || verb == "watch") {
                    mine += watches;
                }
                let n = n.saturating_sub(mine);
                if n > 0 {
                    counts.insert((cluster.to_string(), verb.to_string(), resource.to_string()), n);
                }
            }
        }
        SyncerRequests { counts }
    }

    fn writes(&self, filter: impl Fn(&str, &str) -> bool) -> u64 {
        self.counts
            .iter()
            .filter(|((c, v, r), _)| WRITE_VERBS.contains(&v.as_str()) && filter(c, r))
            .map(|(_, n)| n)
            .sum()
    }

    fn heartbeat_writes(&self) -> u64 {
        self.writes(|c, r| c == "virtual" && HEARTBEAT_RESOURCES.contains(&r))
    }

    /// Writes except heartbeats.
    fn object_writes(&self) -> u64 {
        self.writes(|c, r| !(c == "virtual" && HEARTBEAT_RESOURCES.contains(&r)))
    }

    /// Writes on pods and their subresources, both clusters.
    fn pod_writes(&self) -> u64 {
        self.writes(|_, r| r == "pods" || r.starts_with("pods/"))
    }

    fn to_json(&self, per: usize) -> Value {
        let per = per.max(1) as f64;
        let mut out = serde_json::Map::new();
        for ((cluster, verb, resource), n) in &self.counts {
            out.insert(
                format!("{cluster} {verb} {resource}"),
                json!({"count": n, "per_pod": round3(*n as f64 / per)}),
            );
        }
        Value::Object(out)
    }
}

// ---------------------------------------------------------------------------------------------
// The bench

struct Bench {
    host_server: ApiServer,
    virt_server: ApiServer,
    host: Client,
    virt: Client,
    syncer: Syncer,
    seen: Shared,
    watches: Vec<tokio::task::JoinHandle<()>>,
    client: ClientRequests,
    ticks: f64,
    timeout: Duration,
    /// RSS of the idle syncer (ready, no objects).
    baseline: ProcStats,
}

impl Bench {
    async fn new(args: &BenchArgs, dir: &Path) -> anyhow::Result<(Bench, Option<Simulator>)> {
        let host_server = ApiServer::start(ServerConfig {
            name: "host".into(),
            // The watch history must hold a whole burst: the syncer's watches never fall behind
            // into 410 Gone because the bench is large.
            watch_history: 100_000,
            ..ServerConfig::default()
        })
        .await
        .context("starting the host API server")?;
        let virt_server = ApiServer::start(ServerConfig {
            name: "virtual".into(),
            watch_history: 100_000,
            ..ServerConfig::default()
        })
        .await
        .context("starting the virtual API server")?;
        // Enough room on a few nodes for every pod of the run (direct ones included): few fake
        // nodes, so heartbeats stay a small constant.
        let simulator = (args.nodes > 0).then(|| {
            host_server.start_simulator(SimulatorConfig {
                nodes: args.nodes,
                max_pods_per_node: (2 * args.pods.max(args.rate as usize * args.seconds as usize))
                    .div_ceil(args.nodes)
                    + 110,
                ..SimulatorConfig::default()
            })
        });
        let host_kubeconfig = dir.join("host.kubeconfig");
        let virtual_kubeconfig = dir.join("virtual.kubeconfig");
        crate::dev::write(&host_kubeconfig, &host_server.kubeconfig())?;
        crate::dev::write(&virtual_kubeconfig, &virt_server.kubeconfig())?;
        let config_path = dir.join("vcsync.yaml");
        // No client-side rate limit: the bench measures the syncer, not its token bucket (with
        // the default 100 qps a burst of 10,000 pods would take minutes by design).
        crate::dev::write(
            &config_path,
            &format!(
                "instance: {INSTANCE}\nhostNamespace: {HOST_NAMESPACE}\n\
                 host:\n  kubeconfig: {}\n  qps: 1000000\n  burst: 1000000\n\
                 virtual:\n  kubeconfig: {}\n  qps: 1000000\n  burst: 1000000\n",
                host_kubeconfig.display(),
                virtual_kubeconfig.display()
            ),
        )?;
        let host = crate::dev::client(&host_server.url())?;
        let virt = crate::dev::client(&virt_server.url())?;
        crate::dev::create_namespace(&host, HOST_NAMESPACE).await?;
        crate::dev::create_namespace(&host, DIRECT_NAMESPACE).await?;
        crate::dev::create_namespace(&virt, VIRTUAL_NAMESPACE).await?;
        let log = std::fs::File::create(dir.join("syncer.log")).context("creating the syncer log")?;
        let syncer = Syncer {
            config: config_path,
            log: Arc::new(Mutex::new(log)),
            child: None,
            ready: Arc::new(Mutex::new(None)),
            spawned: Instant::now(),
        };
        let seen = Shared::default();
        let watches = start_watches(&host, &virt, &seen);
        let bench = Bench {
            host_server,
            virt_server,
            host,
            virt,
            syncer,
            seen,
            watches,
            client: ClientRequests::default(),
            ticks: clock_ticks(),
            timeout: Duration::from_secs(args.timeout),
            baseline: ProcStats::default(),
        };
        Ok((bench, simulator))
    }

    /// Starts the syncer and records its idle figures.
    async fn start_syncer(&mut self, out: &mut BTreeMap<String, Value>) -> anyhow::Result<()> {
        self.syncer.start()?;
        let ready = self.syncer.wait_ready(self.timeout).await?;
        out.insert("start_ready_s".into(), json!(round3(ready.as_secs_f64())));
        // Let the start settle (fake nodes, first heartbeats) before the idle figures.
        tokio::time::sleep(Duration::from_millis(1500)).await;
        self.baseline = proc_stats(self.syncer.pid()?, self.ticks)?;
        out.insert("idle_rss_bytes".into(), json!(self.baseline.rss));
        Ok(())
    }

    fn reset_counters(&self) {
        self.host_server.reset_counters();
        self.virt_server.reset_counters();
        self.client.reset();
    }

    /// The syncer's requests since the last reset. The bench's watches count only when they
    /// started after the reset (they never do: they start before the first reset).
    fn requests(&self) -> SyncerRequests {
        SyncerRequests::new(
            &self.host_server.counters(),
            &self.virt_server.counters(),
            &self.client,
            0,
        )
    }

    /// Waits until the syncer wrote nothing for `quiet` (heartbeats aside).
    async fn settle(&self, quiet: Duration) -> anyhow::Result<()> {
        let start = Instant::now();
        let mut last = self.requests().object_writes();
        let mut since = Instant::now();
        while since.elapsed() < quiet {
            tokio::time::sleep(Duration::from_millis(100)).await;
            let now = self.requests().object_writes();
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

    fn record_process(
        &self,
        out: &mut BTreeMap<String, Value>,
        pods: usize,
        prefix: &str,
    ) -> anyhow::Result<ProcStats> {
        let stats = proc_stats(self.syncer.pid()?, self.ticks)?;
        out.insert(format!("{prefix}cpu_s"), json!(round3(stats.cpu_s)));
        // This process: both API servers, the simulator and the bench client.
        if let Ok(own) = proc_stats(std::process::id(), self.ticks) {
            out.insert(
                format!("{prefix}servers_and_client_cpu_s"),
                json!(round3(own.cpu_s)),
            );
        }
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

    fn record_requests(
        &self,
        out: &mut BTreeMap<String, Value>,
        pods: usize,
        prefix: &str,
    ) -> SyncerRequests {
        let requests = self.requests();
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
        requests
    }

    /// CPU seconds used so far by this process (servers, simulator, client) and the syncer.
    fn cpu(&self) -> (f64, f64) {
        let of = |pid: anyhow::Result<u32>| {
            pid.and_then(|pid| proc_stats(pid, self.ticks))
                .map(|s| s.cpu_s)
                .unwrap_or(0.0)
        };
        (of(Ok(std::process::id())), of(self.syncer.pid()))
    }

    /// Creates `n` pods with their references in the virtual cluster and waits until all run
    /// in both clusters; returns (time until all exist on the host, until all run virtually),
    /// and the CPU seconds (this process, the syncer) used until all existed on the host.
    async fn sync_pods(
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

async fn burst(args: &BenchArgs, bench: &mut Bench, out: &mut BTreeMap<String, Value>) -> anyhow::Result<()> {
    let n = args.pods;
    // Direct: the same client creates the same objects on the host, before the syncer runs.
    let (own_before, _) = bench.cpu();
    let direct = create_all(
        &bench.host,
        "host",
        DIRECT_NAMESPACE,
        0..n,
        args.concurrency,
        &bench.client,
    )
    .await?;
    out.insert("direct_s".into(), json!(round3(direct.as_secs_f64())));
    out.insert(
        "direct_servers_and_client_cpu_s".into(),
        json!(round3(bench.cpu().0 - own_before)),
    );
    bench.start_syncer(out).await?;
    let idle = bench.record_process(&mut BTreeMap::new(), 0, "")?;
    bench.reset_counters();
    let (on_host, running, (servers_cpu, syncer_cpu)) = bench.sync_pods(n, args.concurrency).await?;
    out.insert("sync_s".into(), json!(round3(on_host.as_secs_f64())));
    out.insert(
        "sync_direct_ratio".into(),
        json!(round3(on_host.as_secs_f64() / direct.as_secs_f64())),
    );
    // What bounds the ratio on a machine the servers share with the syncer: the CPU of the
    // sync phase. Even a syncer costing nothing would wait for the servers' share of it.
    out.insert("sync_servers_and_client_cpu_s".into(), json!(round3(servers_cpu)));
    out.insert("sync_syncer_cpu_s".into(), json!(round3(syncer_cpu)));
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
    out.insert(
        "servers_bound_ratio".into(),
        json!(round3(servers_cpu / cores / direct.as_secs_f64())),
    );
    out.insert(
        "all_running_virtual_s".into(),
        json!(round3(running.as_secs_f64())),
    );
    bench.settle(Duration::from_secs(2)).await?;
    let stats = bench.record_process(out, n, "")?;
    out.insert("syncer_cpu_s".into(), json!(round3(stats.cpu_s - idle.cpu_s)));
    bench.record_requests(out, n, "");
    let seen = lock(&bench.seen);
    out.insert(
        "pods_synced".into(),
        json!(seen.pods.values().filter(|p| p.host_seen.is_some()).count()),
    );
    out.insert(
        "pods_running_virtual".into(),
        json!(seen.pods.values().filter(|p| p.virtual_running.is_some()).count()),
    );
    out.insert("host_data_objects".into(), json!(seen.host_data_objects));
    Ok(())
}

/// Creates `total` pods (without references) in `namespace` at `rate` per second, each
/// create in a task of its own at its due time; returns when each was sent, by name, and how
/// long the sending took.
async fn create_paced(
    client: &Client,
    namespace: &'static str,
    total: usize,
    rate: u32,
) -> anyhow::Result<(HashMap<String, Instant>, Duration)> {
    let interval = Duration::from_secs_f64(1.0 / f64::from(rate.max(1)));
    let sent: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
    let start = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..total {
        let due = start + interval * i as u32;
        tokio::time::sleep_until(due.into()).await;
        let (client, sent) = (client.clone(), sent.clone());
        tasks.spawn(async move {
            let pod = pod(i, namespace, false);
            let at = Instant::now();
            sent.lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(pod_name(i), at);
            Api::<Pod>::namespaced(client, namespace)
                .create(&PostParams::default(), &pod)
                .await
                .context("creating a pod")
                .map(|_| ())
        });
    }
    let sending = start.elapsed();
    while let Some(result) = tasks.join_next().await {
        result??;
    }
    let sent = std::mem::take(&mut *sent.lock().unwrap_or_else(|p| p.into_inner()));
    Ok((sent, sending))
}

async fn steady(
    args: &BenchArgs,
    bench: &mut Bench,
    out: &mut BTreeMap<String, Value>,
) -> anyhow::Result<()> {
    let total = args.rate as usize * args.seconds as usize;
    // Baseline, before the syncer starts: pods at the same rate created directly on the host,
    // seen by a host watch: one API round trip and one watch event, the floor of any
    // syncer's down latency on these servers at this load.
    let direct_watch = spawn_watch(
        Api::<Pod>::namespaced(bench.host.clone(), DIRECT_NAMESPACE),
        watcher::Config::default(),
        &bench.seen,
        |pod| pod.metadata.name.clone(),
        |seen, name, _, _, now| {
            seen.direct_seen.entry(name).or_insert(now);
        },
    );
    // Three seconds of it are enough samples; more would leave the host (and its simulated
    // kubelets) busier for the synced run than the synced pods alone make it.
    let direct_total = total.min(3 * args.rate as usize);
    let (direct_sent, _) = create_paced(&bench.host, DIRECT_NAMESPACE, direct_total, args.rate).await?;
    bench.client.add("host", "create", "pods", direct_total as u64);
    wait_for(&bench.seen, "all direct pods", bench.timeout, |s| {
        s.direct_seen.len() >= direct_total
    })
    .await?;
    direct_watch.abort();
    let direct: Vec<f64> = {
        let seen = lock(&bench.seen);
        direct_sent
            .iter()
            .filter_map(|(name, at)| Some(ms(seen.direct_seen.get(name)?.saturating_duration_since(*at))))
            .collect()
    };

    bench.start_syncer(out).await?;
    let idle = bench.record_process(&mut BTreeMap::new(), 0, "")?;
    bench.reset_counters();
    let (sent, sending) = create_paced(&bench.virt, VIRTUAL_NAMESPACE, total, args.rate).await?;
    bench.client.add("virtual", "create", "pods", total as u64);
    out.insert("offered_rate".into(), json!(args.rate));
    out.insert(
        "achieved_rate".into(),
        json!(round3(total as f64 / sending.as_secs_f64())),
    );
    wait_for(&bench.seen, "all virtual pods Running", bench.timeout, |s| {
        s.pods.values().filter(|p| p.virtual_running.is_some()).count() >= total
    })
    .await?;
    bench.settle(Duration::from_secs(2)).await?;
    let (mut down, mut up) = (Vec::new(), Vec::new());
    {
        let seen = lock(&bench.seen);
        for (name, at) in sent.iter() {
            let Some(times) = seen.pods.get(name) else {
                continue;
            };
            if let Some(host) = times.host_seen {
                down.push(ms(host.saturating_duration_since(*at)));
            }
            if let (Some(h), Some(v)) = (times.host_running, times.virtual_running) {
                up.push(ms(v.saturating_duration_since(h)));
            }
        }
    }
    latency_fields("down", down, out);
    latency_fields("up", up, out);
    latency_fields("direct", direct, out);
    let p50 = |prefix: &str| out.get(&format!("{prefix}_p50_ms")).and_then(Value::as_f64);
    if let (Some(d), Some(b)) = (p50("down"), p50("direct")) {
        out.insert("down_direct_p50_ratio".into(), json!(round3(d / b)));
    }
    let stats = bench.record_process(out, total, "")?;
    out.insert("syncer_cpu_s".into(), json!(round3(stats.cpu_s - idle.cpu_s)));
    bench.record_requests(out, total, "");
    out.insert("pods_synced".into(), json!(total));
    out.insert("pods".into(), json!(total));
    Ok(())
}

async fn restart(
    args: &BenchArgs,
    bench: &mut Bench,
    out: &mut BTreeMap<String, Value>,
) -> anyhow::Result<()> {
    let n = args.pods;
    bench.start_syncer(out).await?;
    bench.reset_counters();
    let (on_host, running, _) = bench.sync_pods(n, args.concurrency).await?;
    out.insert("sync_s".into(), json!(round3(on_host.as_secs_f64())));
    out.insert(
        "all_running_virtual_s".into(),
        json!(round3(running.as_secs_f64())),
    );
    bench.settle(Duration::from_secs(2)).await?;
    bench.record_process(out, n, "before_restart_")?;
    bench.record_requests(out, n, "");
    out.insert("pods_synced".into(), json!(n));

    bench.syncer.stop().await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    bench.reset_counters();
    bench.syncer.start()?;
    let ready = bench.syncer.wait_ready(bench.timeout).await?;
    out.insert("restart_ready_s".into(), json!(round3(ready.as_secs_f64())));
    // The resync: every object reconciled once after the start; a window well past it.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let requests = bench.record_requests(out, n, "restart_");
    out.insert("restart_writes".into(), json!(requests.object_writes()));
    let stats = bench.record_process(out, n, "restart_")?;
    out.insert("restart_cpu_s".into(), json!(round3(stats.cpu_s)));
    // After a restart the caches hold just the objects: the cleaner figure of memory per pod.
    out.insert(
        "rss_per_pod_bytes".into(),
        json!(stats.rss.saturating_sub(bench.baseline.rss) / n.max(1) as u64),
    );
    Ok(())
}

async fn churn(args: &BenchArgs, bench: &mut Bench, out: &mut BTreeMap<String, Value>) -> anyhow::Result<()> {
    let n = args.pods;
    bench.start_syncer(out).await?;
    bench.sync_pods(n, args.concurrency).await?;
    bench.settle(Duration::from_secs(2)).await?;

    // Updates: every ConfigMap's value 1 -> 2.
    bench.reset_counters();
    let sent: Mutex<HashMap<String, Instant>> = Mutex::default();
    let start = Instant::now();
    let results: Vec<kube::Result<ConfigMap>> = stream::iter(0..n)
        .map(|i| {
            let api = Api::<ConfigMap>::namespaced(bench.virt.clone(), VIRTUAL_NAMESPACE);
            let sent = &sent;
            async move {
                let name = format!("cm-{i}");
                sent.lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(name.clone(), Instant::now());
                api.patch(
                    &name,
                    &PatchParams::default(),
                    &Patch::Merge(json!({"data": {"v": "2"}})),
                )
                .await
            }
        })
        .buffer_unordered(args.concurrency.max(1))
        .collect()
        .await;
    results
        .into_iter()
        .collect::<kube::Result<Vec<_>>>()
        .context("updating config maps")?;
    bench.client.add("virtual", "patch", "configmaps", n as u64);
    let done = wait_for(&bench.seen, "all updates on the host", bench.timeout, |s| {
        s.config_maps.values().filter(|v| v.contains_key("2")).count() >= n
    })
    .await?;
    out.insert("update_all_s".into(), json!(round3((done - start).as_secs_f64())));
    bench.settle(Duration::from_secs(1)).await?;
    let mut latencies = Vec::new();
    {
        let seen = lock(&bench.seen);
        for (name, at) in sent.lock().unwrap_or_else(|p| p.into_inner()).iter() {
            if let Some(host) = seen.config_maps.get(name).and_then(|v| v.get("2")) {
                latencies.push(ms(host.saturating_duration_since(*at)));
            }
        }
    }
    latency_fields("update", latencies, out);
    bench.record_requests(out, n, "update_");

    // Deletes: every pod; its host copy goes, then its config map and secret (last reference).
    bench.reset_counters();
    let start = Instant::now();
    let results: Vec<anyhow::Result<()>> = stream::iter(0..n)
        .map(|i| {
            let api = Api::<Pod>::namespaced(bench.virt.clone(), VIRTUAL_NAMESPACE);
            async move {
                api.delete(&pod_name(i), &DeleteParams::default())
                    .await
                    .context("deleting a pod")
                    .map(|_| ())
            }
        })
        .buffer_unordered(args.concurrency.max(1))
        .collect()
        .await;
    results.into_iter().collect::<anyhow::Result<Vec<()>>>()?;
    bench.client.add("virtual", "delete", "pods", n as u64);
    let host_gone = wait_for(&bench.seen, "all host pods deleted", bench.timeout, |s| {
        s.pods.values().filter(|p| p.host_gone.is_some()).count() >= n
    })
    .await?;
    let virtual_gone = wait_for(&bench.seen, "all virtual pods gone", bench.timeout, |s| {
        s.pods.values().filter(|p| p.virtual_gone.is_some()).count() >= n
    })
    .await?;
    let data_gone = wait_for(
        &bench.seen,
        "host config maps and secrets removed",
        bench.timeout,
        |s| s.host_data_objects == 0,
    )
    .await?;
    out.insert(
        "delete_host_pods_s".into(),
        json!(round3((host_gone - start).as_secs_f64())),
    );
    out.insert(
        "delete_virtual_pods_s".into(),
        json!(round3((virtual_gone - start).as_secs_f64())),
    );
    out.insert(
        "delete_host_data_s".into(),
        json!(round3((data_gone - start).as_secs_f64())),
    );
    bench.settle(Duration::from_secs(1)).await?;
    bench.record_requests(out, n, "delete_");
    bench.record_process(out, 0, "")?;
    out.insert("pods_synced".into(), json!(n));
    Ok(())
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
    let (mut bench, simulator) = Bench::new(&args, &dir).await?;
    let mut out = BTreeMap::new();
    out.insert(
        "scenario".into(),
        json!(format!("{:?}", args.scenario).to_lowercase()),
    );
    out.insert("pods".into(), json!(args.pods));
    out.insert("simulated_nodes".into(), json!(args.nodes));
    out.insert("concurrency".into(), json!(args.concurrency));
    let result = match args.scenario {
        Scenario::Burst => burst(&args, &mut bench, &mut out).await,
        Scenario::Steady => steady(&args, &mut bench, &mut out).await,
        Scenario::Restart => restart(&args, &mut bench, &mut out).await,
        Scenario::Churn => churn(&args, &mut bench, &mut out).await,
    };
    bench.syncer.stop().await;
    for task in &bench.watches {
        task.abort();
    }
    if let Some(simulator) = simulator {
        simulator.stop().await;
    }
    bench.virt_server.shutdown().await;
    bench.host_server.shutdown().await;
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
        text.push_str(&format!(
            "  {key} (syncer only; cluster verb resource: count, per pod)\n"
        ));
        for (what, v) in map {
            text.push_str(&format!(
                "    {what:<40} {:>8}  {:>8}\n",
                v["count"], v["per_pod"]
            ));
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
