//! A host-side cluster simulator (the KWOK idea): nodes that "run" pods, so `vcsync dev`, tests and
//! benchmarks see pod life without kubelets.
//!
//! One task acts for a scheduler, the kubelets of the simulated nodes, the endpoints and
//! EndpointSlice controllers and a load-balancer controller. It is event driven: it subscribes to
//! the store's watch channels for pods, services and nodes (as an in-process watcher), handles a
//! burst of events at once, and sleeps only until the next timer (a pod's start delay or grace
//! period, a lease renewal, a node heartbeat).
//!
//! Its writes go through the same object layer as HTTP requests, so they get resourceVersions and
//! reach every watcher; they are **not** counted in [`crate::RequestCounters`], which count HTTP
//! requests only, so that a benchmark of the syncer counts the syncer's requests alone. No write is
//! made when the object already has the desired content.

mod endpoints;
mod ephemeral;
mod kubelet;
mod load_balancer;
mod node_agent;
mod nodes;
mod scheduler;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde_json::Value;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::{Instant, MissedTickBehavior};

use crate::ApiServer;
use crate::errors::{Error, Result};
use crate::objects::Objects;
use crate::resources::ResourceDef;
use crate::status::ApiResult;
use crate::store::{EventType, ObjectKey, Subscription};

use crate::ip_pool::IpPool;
use endpoints::EndpointIndex;
use load_balancer::LoadBalancers;
use node_agent::NodeAgent;
use nodes::SimNode;
use scheduler::Scheduler;

/// Configuration of a [`Simulator`]. Durations are honoured as given: tests use small ones.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SimulatorConfig {
    /// Number of simulated nodes (default 3).
    pub nodes: usize,
    /// Node names are this prefix plus 0, 1, ... (default `sim-node-`).
    pub node_name_prefix: String,
    /// CPU capacity of each node, a Kubernetes quantity (default `8`).
    pub node_cpu: String,
    /// Memory capacity of each node, a Kubernetes quantity (default `32Gi`).
    pub node_memory: String,
    /// Pods per node; the scheduler does not place more (default 110).
    pub max_pods_per_node: usize,
    /// Time from a pod's binding to its Running status (default 0).
    pub start_delay: Duration,
    /// Image patterns that fail to pull: `prefix*`, `*suffix`, `*part*` or an exact image. A pod
    /// with such a container stays Pending with the container waiting in `ErrImagePull`.
    pub fail_images: Vec<String>,
    /// IPv4 CIDR pod IPs are allocated from (default `10.244.0.0/16`).
    pub pod_cidr: String,
    /// How often each node's Lease in `kube-node-lease` is renewed (default 10 s).
    pub lease_renew: Duration,
    /// How often node conditions get a fresh `lastHeartbeatTime` (default 60 s).
    pub node_heartbeat: Duration,
}

impl Default for SimulatorConfig {
    fn default() -> Self {
        SimulatorConfig {
            nodes: 3,
            node_name_prefix: "sim-node-".to_string(),
            node_cpu: "8".to_string(),
            node_memory: "32Gi".to_string(),
            max_pods_per_node: 110,
            start_delay: Duration::ZERO,
            fail_images: Vec::new(),
            pod_cidr: "10.244.0.0/16".to_string(),
            lease_renew: Duration::from_secs(10),
            node_heartbeat: Duration::from_secs(60),
        }
    }
}

impl SimulatorConfig {
    /// Checks the fields [`ApiServer::start_simulator`] would refuse, for configuration coming
    /// from users.
    pub fn validate(&self) -> Result<()> {
        let invalid = |field: &'static str, value: &str, reason: &str| Error::InvalidSimulatorConfig {
            field,
            value: value.to_string(),
            reason: reason.to_string(),
        };
        IpPool::new(&self.pod_cidr).map_err(|e| invalid("pod_cidr", &self.pod_cidr, &e))?;
        for (field, value) in [("node_cpu", &self.node_cpu), ("node_memory", &self.node_memory)] {
            if !nodes::is_quantity(value) {
                return Err(invalid(
                    field,
                    value,
                    "not a Kubernetes quantity such as 8, 500m or 32Gi",
                ));
            }
        }
        let name = format!("{}{}", self.node_name_prefix, self.nodes.saturating_sub(1));
        if !nodes::is_dns_subdomain(&name) {
            return Err(invalid(
                "node_name_prefix",
                &self.node_name_prefix,
                "node names must be lowercase RFC 1123 subdomains",
            ));
        }
        for (field, value) in [
            ("lease_renew", self.lease_renew),
            ("node_heartbeat", self.node_heartbeat),
        ] {
            if value.is_zero() {
                return Err(invalid(field, "0s", "must be longer than zero"));
            }
        }
        Ok(())
    }
}

/// Handle to a running simulator. Dropping it leaves the simulator running until the server shuts
/// down; [`Simulator::stop`] ends it earlier. Simulated nodes and their pods stay in the store.
#[derive(Debug)]
pub struct Simulator {
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
    kubelets: kubelet::Kubelets,
    node_names: Vec<String>,
    writes: Arc<AtomicU64>,
}

impl Simulator {
    /// Stops the simulator and waits for its task to end and its kubelets' listeners to
    /// close (their sessions end too).
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        if let Err(e) = self.task.await {
            tracing::warn!(error = %e, "the simulator task failed");
        }
        self.kubelets.stopped().await;
    }

    /// Names of the simulated nodes.
    pub fn node_names(&self) -> Vec<String> {
        self.node_names.clone()
    }

    /// Write requests (create, update, delete, bind) the simulator has made so far, including
    /// any the store found to change nothing: for tests that the simulator writes only changes.
    pub fn writes(&self) -> u64 {
        self.writes.load(Ordering::Relaxed)
    }
}

impl ApiServer {
    /// Starts a simulator acting on this server's objects. The nodes and their leases exist when
    /// this returns, and each node's kubelet API listens on the node's InternalIP (127.0.1.1 for
    /// the first node, and so on) at the port its `daemonEndpoints` names, accepting client
    /// certificates under [`ApiServer::kubelet_client_ca_pem`]; the rest happens on tasks of the
    /// current tokio runtime. Run one simulator per server.
    ///
    /// # Panics
    ///
    /// When `config` fails [`SimulatorConfig::validate`], or outside a tokio runtime.
    pub fn start_simulator(&self, config: SimulatorConfig) -> Simulator {
        if let Err(e) = config.validate() {
            panic!("{e}");
        }
        let shared = &self.inner.shared;
        let (stop, stopped) = watch::channel(false);
        let shutdown = shared.shutdown.clone();
        let mut nodes: Vec<SimNode> = (0..config.nodes).map(|i| SimNode::new(&config, i)).collect();
        let addresses: Vec<(String, std::net::Ipv4Addr)> =
            nodes.iter().map(|n| (n.name.clone(), n.ip)).collect();
        let stopping = kubelet::Stopping::new(stop.subscribe(), shutdown.clone());
        let (kubelets, ports) = kubelet::Kubelets::start(
            &addresses,
            self.kubelet_client_ca_pem(),
            shared.objects.clone(),
            stopping,
        );
        for (node, port) in nodes.iter_mut().zip(ports) {
            node.kubelet_port = port.unwrap_or(nodes::DEFAULT_KUBELET_PORT);
        }
        let simulation = Simulation::new(shared.objects.clone(), config, nodes);
        let node_names = simulation.nodes.iter().map(|n| n.name.clone()).collect();
        let writes = simulation.writes.clone();
        let task = tokio::spawn(simulation.run(stopped, shutdown));
        Simulator {
            stop,
            task,
            kubelets,
            node_names,
            writes,
        }
    }
}

/// The resource types the simulator reads and writes.
struct Kinds {
    pods: Arc<ResourceDef>,
    services: Arc<ResourceDef>,
    nodes: Arc<ResourceDef>,
    leases: Arc<ResourceDef>,
    endpoints: Arc<ResourceDef>,
    slices: Arc<ResourceDef>,
}

impl Kinds {
    fn new(objects: &Objects) -> Self {
        let find = |group: &str, plural: &str| {
            objects
                .registry
                .find(group, "v1", plural)
                .expect("the simulator's kinds are built in")
        };
        Kinds {
            pods: find("", "pods"),
            services: find("", "services"),
            nodes: find("", "nodes"),
            leases: find("coordination.k8s.io", "leases"),
            endpoints: find("", "endpoints"),
            slices: find("discovery.k8s.io", "endpointslices"),
        }
    }
}

/// The live watch channels.
struct Feeds {
    pods: Subscription,
    services: Subscription,
    nodes: Subscription,
}

/// Events handled per resource before acting on them, so that a steady stream of events still
/// gets flushed.
const MAX_BATCH: usize = 10_000;

/// Writes between two yields to the runtime, so a large burst does not hog a worker thread.
const WRITES_PER_YIELD: usize = 64;

/// The simulator's state; one task owns it.
struct Simulation {
    objects: Arc<Objects>,
    kinds: Kinds,
    config: SimulatorConfig,
    nodes: Vec<SimNode>,
    agent: NodeAgent,
    scheduler: Scheduler,
    endpoints: EndpointIndex,
    balancers: LoadBalancers,
    /// Pods with ephemeral containers to report started.
    ephemeral: KeySet,
    writes_since_yield: usize,
    /// Write requests made, shared with the handle.
    writes: Arc<AtomicU64>,
}

impl Simulation {
    /// Registers the nodes and their leases.
    fn new(objects: Arc<Objects>, config: SimulatorConfig, nodes: Vec<SimNode>) -> Self {
        let kinds = Kinds::new(&objects);
        let pool = IpPool::new(&config.pod_cidr).expect("validated");
        let agent = NodeAgent::new(&nodes, pool, &config);
        let simulation = Simulation {
            objects,
            kinds,
            nodes,
            agent,
            scheduler: Scheduler::default(),
            endpoints: EndpointIndex::default(),
            balancers: LoadBalancers::new(),
            ephemeral: KeySet::new(),
            writes_since_yield: 0,
            writes: Arc::new(AtomicU64::new(0)),
            config,
        };
        simulation.register_nodes();
        simulation
    }

    async fn run(mut self, stop: watch::Receiver<bool>, shutdown: watch::Receiver<bool>) {
        let mut feeds = self.subscribe();
        let mut leases = ticker(self.config.lease_renew);
        let mut heartbeats = ticker(self.config.node_heartbeat);
        let stopping = async move {
            // A dropped handle leaves the simulator running; a dropped server stops it.
            let mut stop = stop;
            let mut shutdown = shutdown;
            tokio::select! {
                Ok(_) = stop.wait_for(|s| *s) => {}
                _ = shutdown.wait_for(|s| *s) => {}
            }
        };
        tokio::pin!(stopping);
        loop {
            self.flush().await;
            let deadline = self.agent.next_deadline();
            // Timers first: a steady stream of events must not hold back starts and deletions.
            let resync = tokio::select! {
                biased;
                _ = &mut stopping => break,
                _ = sleep_until(deadline) => {
                    self.fire_timers().await;
                    false
                }
                _ = leases.tick() => {
                    self.renew_leases();
                    false
                }
                _ = heartbeats.tick() => {
                    self.heartbeat();
                    false
                }
                event = feeds.pods.recv() => self.on_event(Resource::Pods, event),
                event = feeds.services.recv() => self.on_event(Resource::Services, event),
                event = feeds.nodes.recv() => self.on_event(Resource::Nodes, event),
            };
            // Take the rest of a burst now, so that it is handled by one flush.
            let resync = resync || self.drain(&mut feeds);
            if resync {
                // The store closed the channels (compaction or shutdown): list and watch again.
                if stopping_now(&mut stopping).await {
                    break;
                }
                feeds = self.subscribe();
            }
        }
        tracing::debug!("simulator stopped");
    }

    /// Handles one received event; true when the channel is closed.
    fn on_event(&mut self, resource: Resource, event: Option<Arc<crate::store::Event>>) -> bool {
        let Some(event) = event else { return true };
        let object = (event.kind != EventType::Deleted).then_some(&event.object);
        let key = crate::store::object_key(&event.object);
        match resource {
            Resource::Pods => self.on_pod(&key, object),
            Resource::Services => self.on_service(&key, object),
            Resource::Nodes => self.on_node(&key.1),
        }
        false
    }

    /// Handles the queued events (up to a batch); true when a channel is closed.
    fn drain(&mut self, feeds: &mut Feeds) -> bool {
        use tokio::sync::mpsc::error::TryRecvError;
        let mut closed = false;
        for resource in [Resource::Pods, Resource::Services, Resource::Nodes] {
            let channel = match resource {
                Resource::Pods => &mut feeds.pods,
                Resource::Services => &mut feeds.services,
                Resource::Nodes => &mut feeds.nodes,
            };
            for _ in 0..MAX_BATCH {
                match channel.try_recv() {
                    Ok(event) => {
                        self.on_event(resource, Some(event));
                    }
                    Err(TryRecvError::Empty) => break,
                    Err(TryRecvError::Disconnected) => {
                        closed = true;
                        break;
                    }
                }
            }
        }
        closed
    }

    /// Lists pods, services and nodes and subscribes from that resourceVersion, under one lock,
    /// then brings every index up to date with the listed state.
    fn subscribe(&mut self) -> Feeds {
        let (pods, services, feeds) = {
            let mut state = self.objects.store.lock();
            let snapshot = |state: &crate::store::State, def: &ResourceDef| -> Vec<(ObjectKey, Arc<Value>)> {
                state
                    .list(&def.store_key(), None, None)
                    .map(|(k, o)| (k.clone(), o.clone()))
                    .collect()
            };
            let pods = snapshot(&state, &self.kinds.pods);
            let services = snapshot(&state, &self.kinds.services);
            let rv = state.resource_version();
            let mut subscribe = |def: &ResourceDef| {
                state
                    .subscribe(&def.store_key(), None, rv)
                    .map(|(_, rx)| rx)
                    .expect("subscribing at the current resourceVersion")
            };
            let feeds = Feeds {
                pods: subscribe(&self.kinds.pods),
                services: subscribe(&self.kinds.services),
                nodes: subscribe(&self.kinds.nodes),
            };
            (pods, services, feeds)
        };
        let listed: std::collections::HashSet<&ObjectKey> = pods.iter().map(|(k, _)| k).collect();
        let gone: Vec<ObjectKey> = self
            .agent
            .keys()
            .chain(self.endpoints.pod_keys())
            .chain(self.scheduler.keys())
            .filter(|k| !listed.contains(k))
            .cloned()
            .collect();
        for key in gone {
            self.on_pod(&key, None);
        }
        for (key, pod) in &pods {
            self.on_pod(key, Some(pod));
        }
        let listed: std::collections::HashSet<&ObjectKey> = services.iter().map(|(k, _)| k).collect();
        let gone: Vec<ObjectKey> = self
            .endpoints
            .service_keys()
            .chain(self.balancers.keys().cloned())
            .filter(|k| !listed.contains(k))
            .collect();
        for key in gone {
            self.on_service(&key, None);
        }
        for (key, service) in &services {
            self.on_service(key, Some(service));
        }
        self.scheduler.retry_unschedulable();
        feeds
    }

    fn on_pod(&mut self, key: &ObjectKey, pod: Option<&Arc<Value>>) {
        let freed = self.agent.observe(key, pod.map(|p| &**p));
        self.scheduler.observe(key, pod.map(|p| &**p));
        if freed {
            self.scheduler.retry_unschedulable();
        }
        self.endpoints.observe_pod(key, pod.map(|p| &**p));
        self.observe_ephemeral(key, pod.map(|p| &**p));
    }

    fn on_service(&mut self, key: &ObjectKey, service: Option<&Arc<Value>>) {
        self.endpoints.observe_service(key, service.map(|s| &**s));
        self.balancers.observe(key, service.map(|s| &**s));
    }

    fn on_node(&mut self, name: &str) {
        if self.nodes.iter().any(|n| n.name == name) {
            // Labels, cordoning or capacity may have changed.
            self.scheduler.retry_unschedulable();
        }
    }

    /// Acts on everything the events made necessary.
    async fn flush(&mut self) {
        self.schedule_pending().await;
        self.reconcile_endpoints().await;
        self.reconcile_balancers().await;
        self.start_ephemeral().await;
    }

    /// The object layer, for a write: counted in [`Simulator::writes`].
    fn write(&self) -> &Objects {
        self.writes.fetch_add(1, Ordering::Relaxed);
        &self.objects
    }

    /// Counts a write and yields to the runtime now and then.
    async fn wrote(&mut self) {
        self.writes_since_yield += 1;
        if self.writes_since_yield >= WRITES_PER_YIELD {
            self.writes_since_yield = 0;
            tokio::task::yield_now().await;
        }
    }

    /// Replaces the status of `current` (a stored object), with its resourceVersion as the
    /// precondition.
    fn write_status(&self, def: &ResourceDef, current: &Value, status: Value) -> ApiResult<Arc<Value>> {
        let (namespace, name) = crate::store::object_key(current);
        let mut body = current.clone();
        body["status"] = status;
        self.write().update(def, &namespace, &name, Some("status"), body)
    }
}

#[derive(Debug, Clone, Copy)]
enum Resource {
    Pods,
    Services,
    Nodes,
}

/// An interval whose first tick is one period from now, skipping missed ticks.
fn ticker(period: Duration) -> tokio::time::Interval {
    let mut interval = tokio::time::interval_at(Instant::now() + period, period);
    interval.set_missed_tick_behavior(MissedTickBehavior::Delay);
    interval
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

/// Whether the stop future has completed (without waiting for it).
async fn stopping_now(stopping: &mut std::pin::Pin<&mut impl std::future::Future<Output = ()>>) -> bool {
    tokio::select! {
        biased;
        _ = stopping.as_mut() => true,
        _ = std::future::ready(()) => false,
    }
}

/// Keys in order, for deterministic processing.
type KeySet = std::collections::BTreeSet<ObjectKey>;

/// Label map of an object.
fn labels(object: &Value) -> BTreeMap<String, String> {
    object["metadata"]["labels"]
        .as_object()
        .map(|m| {
            m.iter()
                .filter_map(|(k, v)| v.as_str().map(|v| (k.clone(), v.to_string())))
                .collect()
        })
        .unwrap_or_default()
}
