//! An in-memory, Kubernetes-compatible API server over plain HTTP on loopback, for `vcsync dev`,
//! tests and benchmarks. Real clients (kube-rs, kubectl) accept it: discovery, CRUD, list and
//! watch with resourceVersion semantics, selectors, patches, finalizers, subresources.
//!
//! It is not a production control plane: no authentication, no workload controllers, and only
//! optional file persistence for the local driver ([`ServerConfig::state_dir`]). An optional [`Simulator`] plays scheduler, kubelets, endpoints and load-balancer
//! controllers. See the crate README for what is supported and the deliberate simplifications.
//!
//! ```no_run
//! # async fn demo() -> vcsync_apiserver::Result<()> {
//! let server = vcsync_apiserver::ApiServer::start(Default::default()).await?;
//! std::fs::write("/tmp/kubeconfig", server.kubeconfig()).ok();
//! server.shutdown().await;
//! # Ok(()) }
//! ```
#![forbid(unsafe_code)]

mod admission;
mod counters;
mod crd;
mod deletion;
mod discovery;
mod ephemeral;
mod errors;
mod faults;
mod field_validation;
mod http;
mod ip_pool;
mod kubeconfig;
mod kubelet;
mod managed_fields;
mod namespace_content;
mod no_controllers;
mod objects;
mod openapi;
mod patch;
mod persist;
mod pod_update;
mod protobuf;
mod quantity;
mod query;
mod representation;
mod resources;
mod reviews;
mod selectors;
mod service_alloc;
mod simulator;
mod status;
mod store;
mod table;
mod tokens;
mod watch;

use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::task::JoinHandle;

pub use counters::RequestCounters;
pub use errors::{Error, Result};
pub use faults::{Fault, FaultAction, FaultRule, Faults, Verb};
pub use simulator::{Simulator, SimulatorConfig};

/// Configuration of an [`ApiServer`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerConfig {
    /// Name of the server, used for the kubeconfig cluster, user and context (e.g. "host").
    pub name: String,
    /// IPv4 CIDR from which Service cluster IPs are allocated.
    pub service_cidr: String,
    /// Events kept per resource for watches from an older resourceVersion.
    pub watch_history: usize,
    /// Address to listen on; port 0 picks a free port. Use loopback.
    pub bind: SocketAddr,
    /// Directory to keep the objects in across restarts (None: in memory only, the default).
    /// At start the server loads `state.json` from it (objects keep their uid, resourceVersion
    /// and creationTimestamp; the resourceVersion counter and Service addresses carry on); while
    /// running it writes the file atomically, debounced (at most every 250 ms), and on
    /// [`ApiServer::shutdown`]. An unreadable or corrupt file fails the start. Watches from a
    /// resourceVersion of before the restart get 410 Gone. Changes of the last fraction of a
    /// second before an unclean stop (kill -9) are lost.
    pub state_dir: Option<PathBuf>,
    /// Creates of workload kinds (Deployments, Jobs, ...) get a `Warning` header saying that no
    /// controller here makes pods of them (`vcsync dev`'s virtual server; default false).
    pub warn_without_controllers: bool,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            name: "vcsync".to_string(),
            service_cidr: "10.96.0.0/12".to_string(),
            watch_history: 10_000,
            bind: SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
            state_dir: None,
            warn_without_controllers: false,
        }
    }
}

/// Handle to a running server; cheap to clone.
#[derive(Clone)]
pub struct ApiServer {
    inner: Arc<Inner>,
}

struct Inner {
    config: ServerConfig,
    addr: SocketAddr,
    shared: Arc<http::Shared>,
    stop: tokio::sync::watch::Sender<bool>,
    task: Mutex<Option<JoinHandle<()>>>,
    persister: Option<persist::Persister>,
}

impl std::fmt::Debug for ApiServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiServer")
            .field("name", &self.inner.config.name)
            .field("addr", &self.inner.addr)
            .finish()
    }
}

impl ApiServer {
    /// Binds, spawns the serving task on the current tokio runtime, and returns once the server
    /// accepts connections.
    pub async fn start(config: ServerConfig) -> Result<ApiServer> {
        let allocator = service_alloc::ServiceAllocator::new(&config.service_cidr).map_err(|reason| {
            Error::InvalidServiceCidr {
                cidr: config.service_cidr.clone(),
                reason,
            }
        })?;
        let listener = tokio::net::TcpListener::bind(config.bind)
            .await
            .map_err(|source| Error::Bind {
                addr: config.bind,
                source,
            })?;
        let addr = listener.local_addr().map_err(|source| Error::Bind {
            addr: config.bind,
            source,
        })?;
        let mut state_dir = config
            .state_dir
            .as_deref()
            .map(persist::StateDir::open)
            .transpose()?;
        let objects = Arc::new(objects::Objects::new(
            resources::Registry::builtin(),
            config.watch_history,
            allocator,
            state_dir.as_mut().and_then(|s| s.restored.take()),
        ));
        let persister = state_dir
            .map(|dir| persist::Persister::start(dir, objects.clone()))
            .transpose()?;
        let kubelet_identity = kubelet::identity::KubeletClientIdentity::load_or_generate(
            &config.name,
            config.state_dir.as_deref(),
        )?;
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let shared = Arc::new(http::Shared {
            kubelet_identity: Arc::new(kubelet_identity),
            faults: faults::Faults::new(objects.clone()),
            objects,
            counters: counters::LiveCounters::default(),
            shutdown: stopped.clone(),
            addr,
            warn_without_controllers: config.warn_without_controllers,
        });
        let app = http::router(shared.clone());
        let mut signal = stopped;
        let task = tokio::spawn(async move {
            // No Nagle: watch events and responses are small writes that must leave at once
            // (with Nagle and delayed ACKs a watch event waited up to ~40 ms on loopback).
            let listener = axum::serve::ListenerExt::tap_io(listener, |tcp| {
                if let Err(err) = tcp.set_nodelay(true) {
                    tracing::debug!(error = %err, "could not set TCP_NODELAY");
                }
            });
            let serve = axum::serve(listener, app).with_graceful_shutdown(async move {
                let _ = signal.wait_for(|stop| *stop).await;
            });
            if let Err(e) = serve.await {
                tracing::warn!(error = %e, "API server stopped with an error");
            }
        });
        tracing::info!(name = %config.name, %addr, "API server listening");
        Ok(ApiServer {
            inner: Arc::new(Inner {
                config,
                addr,
                shared,
                stop,
                task: Mutex::new(Some(task)),
                persister,
            }),
        })
    }

    /// Base URL, `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.inner.addr)
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.inner.addr
    }

    /// Kubeconfig YAML pointing at this server; cluster, user and context are named after
    /// `ServerConfig::name`, which is also the current context.
    pub fn kubeconfig(&self) -> String {
        kubeconfig::render(&self.inner.config.name, &self.url())
    }

    /// The CA of the client certificate this server presents to kubelets (PEM): what a kubelet
    /// serving its nodes must trust (vcsync's `kubelet.clientCaFile`).
    pub fn kubelet_client_ca_pem(&self) -> &str {
        &self.inner.shared.kubelet_identity.ca_pem
    }

    /// A snapshot of the request counters.
    pub fn counters(&self) -> RequestCounters {
        self.inner.shared.counters.snapshot()
    }

    /// Sets all request counters to zero.
    pub fn reset_counters(&self) {
        self.inner.shared.counters.reset();
    }

    /// Fault injection: rules that make matching requests fail (500, 429, 409, 410), slow down or
    /// end their watches early, and [`Faults::drop_watches`]. See the crate README.
    pub fn faults(&self) -> Faults {
        self.inner.shared.faults.clone()
    }

    /// Drops all watch history and closes open watches, so that every resourceVersion handed out
    /// so far is answered with 410 Gone when watched from (clients then re-list), as after an etcd
    /// compaction.
    pub fn compact(&self) {
        self.inner.shared.objects.store.lock().compact();
    }

    /// Stops accepting connections, ends open watches, and waits (up to a few seconds) for
    /// in-flight requests to finish; with a state directory, then writes the final state.
    pub async fn shutdown(self) {
        let _ = self.inner.stop.send(true);
        self.inner.shared.objects.store.lock().close_watches();
        let task = self.inner.task.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(task) = task
            && tokio::time::timeout(Duration::from_secs(5), task).await.is_err()
        {
            tracing::warn!("API server did not stop within 5s");
        }
        if let Some(persister) = &self.inner.persister {
            persister.shutdown().await;
        }
    }
}
