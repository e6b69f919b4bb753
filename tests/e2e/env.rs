//! The test environment: two API servers, a host namespace, and the syncer as a child process.

use std::{
    io::{BufRead, BufReader},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use k8s_openapi::api::core::v1::{Namespace, Pod};
use kube::{
    Api, Client, Resource,
    api::{DeleteParams, ObjectMeta, PostParams},
    config::{KubeConfigOptions, Kubeconfig},
};
use serde::de::DeserializeOwned;
use vcsync_apiserver::{ApiServer, RequestCounters, ServerConfig};
use vcsync_envtest::{Exclusive, SharedPlanes};

/// How long to wait for anything that should happen "within a second" and then some slack
/// for a loaded CI machine.
pub const PATIENCE: Duration = Duration::from_secs(20);

/// One test's world.
pub struct Env {
    /// Embedded servers (None against real clusters).
    pub servers: Option<(ApiServer, ApiServer)>,
    /// Client of the host cluster.
    pub host: Client,
    /// Client of the virtual cluster.
    pub virt: Client,
    /// Host namespace of the test's virtual namespace: the syncer's own namespace in the single
    /// mapping, `<instance>-x-<virt_ns>` (made by the syncer) in the per-namespace mapping.
    pub host_ns: String,
    /// The namespace the syncer runs in (`hostNamespace` of its config).
    pub syncer_ns: String,
    /// The namespace mapping of this run (`VCSYNC_E2E_NAMESPACE_MAPPING`: `single` (default) or
    /// `perNamespace`).
    pub mapping: vcsync_translators::NamespaceMapping,
    /// Virtual namespace of this test (default on embedded servers).
    pub virt_ns: String,
    /// Instance name of this test's syncer.
    pub instance: String,
    dir: tempfile::TempDir,
    host_kubeconfig: PathBuf,
    virtual_kubeconfig: PathBuf,
    syncer: Option<SyncerProcess>,
    /// The operations endpoint of the syncer last started (`host:port`).
    ops_address: String,
    /// The real clusters and this test's exclusive use of them (None on embedded servers);
    /// dropped after `Drop` has cleaned up.
    real: Option<RealClusters>,
    /// The empty virtual control plane that replaced the shared one (real clusters of the
    /// run's own, after [`Env::replace_virtual_server_empty`]).
    replacement: Option<vcsync_envtest::ControlPlane>,
}

/// How many real pairs a run starts from `VCSYNC_KUBE_ASSETS`: as many tests run at once (the
/// machines have 2 cores; nextest runs as many tests at a time).
const REAL_PAIRS: usize = 2;

/// Real clusters under test: started elsewhere (`VCSYNC_E2E_HOST_KUBECONFIG` and
/// `VCSYNC_E2E_VIRTUAL_KUBECONFIG`), or a pair of real control planes that the first test of the
/// run starts from `VCSYNC_KUBE_ASSETS` and the tests of the run share ([`REAL_PAIRS`] of them).
/// One test at a time uses a pair: each test's syncer watches the whole virtual cluster, as a
/// syncer does, so two at once would sync each other's tenants.
struct RealClusters {
    host: PathBuf,
    virt: PathBuf,
    throwaway: bool,
    _exclusive: Exclusive,
}

impl RealClusters {
    async fn of_this_run() -> Option<Self> {
        let given = std::env::var("VCSYNC_E2E_HOST_KUBECONFIG")
            .ok()
            .zip(std::env::var("VCSYNC_E2E_VIRTUAL_KUBECONFIG").ok());
        if let Some((host, virt)) = given {
            return Some(Self {
                _exclusive: Exclusive::take(&virt).expect("exclusive use of the real clusters"),
                host: host.into(),
                virt: virt.into(),
                throwaway: false,
            });
        }
        let assets = std::env::var_os("VCSYNC_KUBE_ASSETS").filter(|dir| !dir.is_empty())?;
        let (planes, exclusive) = SharedPlanes::lease_pair(Path::new(&assets), "e2e", REAL_PAIRS)
            .await
            .expect("starting the real control planes of VCSYNC_KUBE_ASSETS");
        Some(Self {
            _exclusive: exclusive,
            host: planes.host_kubeconfig().to_path_buf(),
            virt: planes.virtual_kubeconfig().to_path_buf(),
            throwaway: true,
        })
    }
}

fn unique(prefix: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!("{prefix}-{:x}", nanos ^ std::process::id())
}

async fn client_from(path: &PathBuf) -> Client {
    let kubeconfig = Kubeconfig::read_from(path).expect("kubeconfig");
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .unwrap();
    Client::try_from(config).unwrap()
}

async fn create_namespace(client: &Client, name: &str) {
    let ns = Namespace {
        metadata: ObjectMeta {
            name: Some(name.into()),
            ..Default::default()
        },
        ..Default::default()
    };
    match Api::<Namespace>::all(client.clone())
        .create(&PostParams::default(), &ns)
        .await
    {
        Ok(_) => {}
        Err(kube::Error::Api(status)) if status.code == 409 => {}
        Err(err) => panic!("creating namespace {name}: {err}"),
    }
}

impl Env {
    /// A fresh environment; the syncer is not started yet.
    pub async fn new() -> Env {
        let dir = tempfile::tempdir().unwrap();
        let real = RealClusters::of_this_run().await;
        let (servers, host_kubeconfig, virtual_kubeconfig) = match &real {
            // Copies of the test's own, which it may rewrite (a replaced virtual cluster).
            Some(real) => {
                let (h, v) = (
                    dir.path().join("host.kubeconfig"),
                    dir.path().join("virtual.kubeconfig"),
                );
                std::fs::copy(&real.host, &h).expect("copying the host kubeconfig");
                std::fs::copy(&real.virt, &v).expect("copying the virtual kubeconfig");
                (None, h, v)
            }
            None => {
                let host = ApiServer::start(ServerConfig {
                    name: "host".into(),
                    ..Default::default()
                })
                .await
                .unwrap();
                let virt = ApiServer::start(ServerConfig {
                    name: "virtual".into(),
                    ..Default::default()
                })
                .await
                .unwrap();
                let (h, v) = (
                    dir.path().join("host.kubeconfig"),
                    dir.path().join("virtual.kubeconfig"),
                );
                std::fs::write(&h, host.kubeconfig()).unwrap();
                std::fs::write(&v, virt.kubeconfig()).unwrap();
                (Some((host, virt)), h, v)
            }
        };
        let host = client_from(&host_kubeconfig).await;
        let virt = client_from(&virtual_kubeconfig).await;
        let on_real_clusters = servers.is_none();
        let host_ns = if on_real_clusters {
            unique("vcsync-e2e")
        } else {
            "vcsync-host".to_string()
        };
        let virt_ns = if on_real_clusters {
            unique("tenant")
        } else {
            "default".to_string()
        };
        create_namespace(&host, &host_ns).await;
        create_namespace(&virt, &virt_ns).await;
        let instance = unique("e2e");
        let mapping = match std::env::var("VCSYNC_E2E_NAMESPACE_MAPPING").as_deref() {
            Ok("perNamespace") => vcsync_translators::NamespaceMapping::PerNamespace {
                instance: instance.clone(),
            },
            Ok("single") | Err(_) => vcsync_translators::NamespaceMapping::Single {
                host_namespace: host_ns.clone(),
            },
            Ok(other) => panic!("VCSYNC_E2E_NAMESPACE_MAPPING={other:?}: expected single or perNamespace"),
        };
        if mapping.is_per_namespace() {
            // The host namespace of the test's virtual namespace, as vcsync's namespace syncer
            // makes it, so that tests can put host objects there before the syncer starts.
            use vcsync_translators::NameTranslator;
            let translator = vcsync_translators::HostNamespaceTranslator::new(
                vcsync_translators::Ownership::new(&instance).unwrap(),
            );
            let virtual_namespace = ObjectMeta {
                name: Some(virt_ns.clone()),
                ..Default::default()
            };
            let ns = Namespace {
                metadata: translator.host_metadata("Namespace", &virtual_namespace),
                ..Default::default()
            };
            match Api::<Namespace>::all(host.clone())
                .create(&PostParams::default(), &ns)
                .await
            {
                Ok(_) => {}
                Err(kube::Error::Api(status)) if status.code == 409 => {}
                Err(err) => panic!("creating the test's host namespace: {err}"),
            }
        }
        Env {
            servers,
            host,
            virt,
            host_ns: mapping.host_namespace(&virt_ns),
            syncer_ns: host_ns,
            mapping,
            virt_ns,
            instance,
            dir,
            host_kubeconfig,
            virtual_kubeconfig,
            syncer: None,
            ops_address: String::new(),
            real,
            replacement: None,
        }
    }

    /// Whether the clusters are this run's own (embedded, or started from
    /// `VCSYNC_KUBE_ASSETS`), so a test may create cluster-wide objects on the host (nodes,
    /// storage classes) that a shared cluster's owner would not want.
    pub fn throwaway_clusters(&self) -> bool {
        self.real.as_ref().is_none_or(|real| real.throwaway)
    }

    /// Path of the virtual cluster's kubeconfig (for kubectl).
    pub fn virtual_kubeconfig(&self) -> &PathBuf {
        &self.virtual_kubeconfig
    }

    /// Path of the host cluster's kubeconfig.
    pub fn host_kubeconfig(&self) -> &PathBuf {
        &self.host_kubeconfig
    }

    /// The configuration the syncer was last started with.
    pub fn config(&self) -> vcsync_syncer::Config {
        let path = self.dir.path().join("vcsync.yaml");
        let text = std::fs::read_to_string(&path).expect("the syncer was started");
        vcsync_syncer::Config::from_yaml(&text, &path.display().to_string()).expect("the test's config")
    }

    /// A complete `vcsync.yaml` for this environment with `extra` YAML appended.
    pub fn config_text(&self, extra: &str) -> String {
        self.config_text_with_host(&self.host_kubeconfig, extra)
    }

    /// [`Self::config_text`] with another host kubeconfig (an unreachable server, say).
    pub fn config_text_with_host(&self, host_kubeconfig: &Path, extra: &str) -> String {
        format!(
            "instance: {}\nhostNamespace: {}\nnamespaceMapping: {}\nhost:\n  kubeconfig: {}\nvirtual:\n  kubeconfig: {}\n{extra}",
            self.instance,
            self.syncer_ns,
            if self.mapping.is_per_namespace() {
                "perNamespace"
            } else {
                "single"
            },
            host_kubeconfig.display(),
            self.virtual_kubeconfig.display()
        )
    }

    /// Writes a config file with `extra` YAML appended and starts `vcsync run` on it; returns
    /// once the syncer logged that its controllers started.
    pub async fn start_syncer(&mut self, extra: &str) {
        let path = self.dir.path().join("vcsync.yaml");
        // Its operations endpoint, whose /metrics counts its requests (see `syncer_requests`).
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|probe| probe.local_addr())
            .unwrap()
            .port();
        self.ops_address = format!("127.0.0.1:{port}");
        let extra = format!("operations:\n  address: {}\n{extra}", self.ops_address);
        std::fs::write(&path, self.config_text(&extra)).unwrap();
        let mut syncer = SyncerProcess::spawn(&path, "info,vcsync_syncer=debug");
        syncer.wait_for_log("controllers started").await;
        self.syncer = Some(syncer);
    }

    /// Lets a running syncer settle first (what it had to sync is synced: a restart is measured
    /// from a synced state), stops it, starts it again with `extra` and gives every controller
    /// 2 s to reconcile every key once; returns the (host, virtual) requests of that restart: as
    /// the embedded servers counted them (zeroed before the start), or on real clusters as the
    /// new syncer counted its own.
    pub async fn restart_counting(&mut self, extra: &str) -> (RequestCounters, RequestCounters) {
        if self.syncer.is_some() {
            self.settle_syncer().await;
        }
        self.stop_syncer().await;
        if let Some((host, virt)) = self.embedded() {
            host.reset_counters();
            virt.reset_counters();
        }
        self.start_syncer(extra).await;
        tokio::time::sleep(Duration::from_secs(2)).await;
        match self.embedded() {
            Some((host, virt)) => (host.counters(), virt.counters()),
            None => self.syncer_requests().await,
        }
    }

    /// Waits (at most 20 s) until the running syncer has written nothing for half a second:
    /// what it had to sync is synced.
    pub async fn settle_syncer(&self) {
        let writes = || async {
            let (host, virt) = self.syncer_requests().await;
            host.writes() + virt.writes()
        };
        let mut last = writes().await;
        for _ in 0..40 {
            tokio::time::sleep(Duration::from_millis(500)).await;
            let now = writes().await;
            if now == last {
                break;
            }
            last = now;
        }
    }

    /// The (host, virtual) requests of the running syncer since it started, by its own count
    /// (`vcsync_api_requests_total` on its /metrics): on any API server, whatever else talks
    /// to it.
    pub async fn syncer_requests(&self) -> (RequestCounters, RequestCounters) {
        crate::ops::syncer_requests_at(&self.ops_address).await
    }

    /// The log lines of the syncer last started, so far.
    pub fn syncer_lines(&self) -> Vec<String> {
        self.syncer.as_ref().map(SyncerProcess::lines).unwrap_or_default()
    }

    /// Stops the syncer with SIGKILL-free shutdown (SIGTERM) and waits for it.
    pub async fn stop_syncer(&mut self) {
        if let Some(mut syncer) = self.syncer.take() {
            syncer.terminate();
            let status = syncer.wait_exit().await;
            assert!(status.success(), "vcsync exited with {status} on SIGTERM");
        }
    }

    /// Whether [`Env::replace_virtual_server_empty`] can: on embedded servers and on the run's
    /// own control planes, not on clusters started elsewhere.
    pub fn can_replace_virtual_cluster(&self) -> bool {
        self.throwaway_clusters()
    }

    /// Replaces the virtual API server with an empty one, as a virtual control plane whose
    /// datastore was lost comes back: a new `kube-system` namespace UID, none of the tenant's
    /// objects. On real control planes a new virtual plane is started for the rest of the test
    /// (the shared one stays as it is). The syncer must be stopped; the virtual kubeconfig is
    /// rewritten.
    pub async fn replace_virtual_server_empty(&mut self) {
        assert!(self.syncer.is_none(), "stop the syncer first");
        assert!(
            self.can_replace_virtual_cluster(),
            "a shared cluster cannot be emptied"
        );
        if let Some((host, old)) = self.servers.take() {
            old.shutdown().await;
            let virt = ApiServer::start(ServerConfig {
                name: "virtual".into(),
                ..Default::default()
            })
            .await
            .unwrap();
            std::fs::write(&self.virtual_kubeconfig, virt.kubeconfig()).unwrap();
            self.servers = Some((host, virt));
        } else {
            let assets = std::env::var_os("VCSYNC_KUBE_ASSETS").expect("the run's own planes");
            let plane = vcsync_envtest::ControlPlane::start_virtual(Path::new(&assets), "virtual")
                .await
                .expect("starting an empty virtual control plane");
            std::fs::copy(plane.kubeconfig(), &self.virtual_kubeconfig).unwrap();
            self.replacement = Some(plane);
        }
        self.virt = client_from(&self.virtual_kubeconfig).await;
        create_namespace(&self.virt, &self.virt_ns).await;
    }

    /// The embedded servers, or None against real clusters (tests of counters skip then).
    pub fn embedded(&self) -> Option<&(ApiServer, ApiServer)> {
        self.servers.as_ref()
    }

    /// Api of `K` in the test's virtual namespace.
    pub fn virt_api<K>(&self) -> Api<K>
    where
        K: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>,
    {
        Api::namespaced(self.virt.clone(), &self.virt_ns)
    }

    /// Api of `K` in the test's host namespace.
    pub fn host_api<K>(&self) -> Api<K>
    where
        K: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>,
    {
        Api::namespaced(self.host.clone(), &self.host_ns)
    }

    /// The host name of a virtual object in the test's virtual namespace.
    pub fn host_name(&self, name: &str) -> String {
        self.mapping.host_object_name(&self.virt_ns, name)
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        drop(self.syncer.take());
        if self.servers.is_none() {
            // Real clusters: leave nothing behind. With clients of their own: the test's clients
            // run their request buffers on the test's runtime, which this drop blocks.
            // The shared virtual cluster's namespace, also when the test replaced it.
            let shared_virtual = self.real.as_ref().map(|real| real.virt.clone());
            let (host_kubeconfig, virtual_kubeconfig, host_ns, syncer_ns, virt_ns) = (
                self.host_kubeconfig.clone(),
                shared_virtual.unwrap_or_else(|| self.virtual_kubeconfig.clone()),
                self.host_ns.clone(),
                self.syncer_ns.clone(),
                self.virt_ns.clone(),
            );
            let _ = std::thread::spawn(move || {
                tokio::runtime::Runtime::new().unwrap().block_on(async {
                    let host = client_from(&host_kubeconfig).await;
                    let virt = client_from(&virtual_kubeconfig).await;
                    // No kubelet confirms a bound pod's graceful deletion here: pods go at once,
                    // or their namespaces would wait for them for ever.
                    let now = DeleteParams {
                        grace_period_seconds: Some(0),
                        ..Default::default()
                    };
                    for (client, namespace) in [(&host, &host_ns), (&virt, &virt_ns)] {
                        let _ = Api::<Pod>::namespaced(client.clone(), namespace)
                            .delete_collection(&now, &Default::default())
                            .await;
                    }
                    let _ = Api::<Namespace>::all(host.clone())
                        .delete(&host_ns, &DeleteParams::default())
                        .await;
                    if syncer_ns != host_ns {
                        let _ = Api::<Namespace>::all(host)
                            .delete(&syncer_ns, &DeleteParams::default())
                            .await;
                    }
                    // Gone before the next test's syncer starts, which would otherwise see
                    // (and sync) this test's objects while the namespace controller deletes them.
                    let namespaces = Api::<Namespace>::all(virt);
                    let _ = namespaces.delete(&virt_ns, &DeleteParams::default()).await;
                    let deadline = Instant::now() + Duration::from_secs(60);
                    while matches!(namespaces.get_opt(&virt_ns).await, Ok(Some(_)))
                        && Instant::now() < deadline
                    {
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                })
            })
            .join();
        }
    }
}

/// Polls `check` until it returns Some, or panics with `what` after [`PATIENCE`].
pub async fn eventually<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + PATIENCE;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// Gets an object, None if it does not exist.
pub async fn get<K: Clone + DeserializeOwned + std::fmt::Debug>(api: &Api<K>, name: &str) -> Option<K> {
    api.get_opt(name).await.expect("get")
}

/// A `vcsync run` child process whose log lines (stderr) are kept; killed when dropped.
pub struct SyncerProcess {
    /// The process.
    pub child: Child,
    lines: Arc<Mutex<Vec<String>>>,
}

impl SyncerProcess {
    /// Starts `vcsync run --config <config>` with `RUST_LOG=<log_filter>`.
    pub fn spawn(config: &Path, log_filter: &str) -> SyncerProcess {
        let mut child = Command::new(env!("CARGO_BIN_EXE_vcsync"))
            .args(["run", "--config"])
            .arg(config)
            .env("RUST_LOG", log_filter)
            .stderr(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .expect("spawn vcsync");
        let stderr = child.stderr.take().unwrap();
        let lines = Arc::new(Mutex::new(Vec::new()));
        let sink = lines.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if std::env::var_os("VCSYNC_E2E_LOG").is_some() {
                    eprintln!("[vcsync] {line}");
                }
                sink.lock().unwrap().push(line);
            }
        });
        SyncerProcess { child, lines }
    }

    /// The log lines so far.
    pub fn lines(&self) -> Vec<String> {
        self.lines.lock().unwrap().clone()
    }

    /// Whether a log line so far contains `text`.
    pub fn logged(&self, text: &str) -> bool {
        self.lines.lock().unwrap().iter().any(|line| line.contains(text))
    }

    /// Waits (polling, so that embedded servers on the test's runtime keep serving) until a
    /// log line contains `text`; panics if the process exits first or after [`PATIENCE`].
    pub async fn wait_for_log(&mut self, text: &str) {
        let deadline = Instant::now() + PATIENCE;
        while !self.logged(text) {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("vcsync exited with {status} before logging {text:?}");
            }
            assert!(Instant::now() < deadline, "vcsync did not log {text:?}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Sends SIGTERM.
    pub fn terminate(&self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
    }

    /// Waits for the process to exit, at most [`PATIENCE`], then for its log to be read.
    pub async fn wait_exit(&mut self) -> std::process::ExitStatus {
        let deadline = Instant::now() + PATIENCE;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                // The reader thread sees end of file right after the exit.
                tokio::time::sleep(Duration::from_millis(50)).await;
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "vcsync did not exit within {PATIENCE:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for SyncerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Writes in `counters` other than fake nodes' Lease renewals and Node heartbeats (periodic by
/// design), as `verb resource: n` lines.
pub fn writes_besides_heartbeats(counters: &RequestCounters) -> Vec<String> {
    counters
        .iter()
        .filter(|(verb, resource, _)| {
            !matches!(*verb, "get" | "list" | "watch")
                && !resource.starts_with("nodes")
                && !resource.starts_with("leases")
        })
        .map(|(verb, resource, n)| format!("{verb} {resource}: {n}"))
        .collect()
}
