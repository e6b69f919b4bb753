//! Shared informers: one watch per kind and scope per cluster, whatever the number of
//! syncers reading it.
//!
//! An informer runs a kube-runtime watcher into a [`Cache`] and fans the events out to
//! subscribers. Caches keep only what syncers read: managed fields are skipped unread while
//! an object is decoded and kubectl's last-applied annotation dropped after (see
//! [`crate::wire`]), and the kinds with an object or more per pod are kept encoded (see
//! [`crate::cache`]). Typed and dynamic kinds share the
//! informers alike: an informer is known by its kind's [`Kind::identity`] and scope.
//!
//! The fan-out is bounded, with backpressure, as kube-runtime's shared reflector does it:
//! each [`Subscription`] buffers at most [`SUBSCRIBER_BUFFER`] events, and while one is full
//! the informer waits for it and does not read its watch stream any further, so memory stays
//! bounded whatever a reader's pace (the API server holds the rest, and a watch that falls
//! too far behind ends in a re-list). A dropped subscription is removed at the next event.
//!
//! The price of backpressure: a subscriber must read its subscription from the manager's start
//! on, on every replica, and must never wait, between two reads, for anything that needs the
//! informer it reads to progress (its cache to change, a controller to run, a bounded channel
//! that another reader of the same informer drains). The readers in this crate only update
//! an index, a key queue (`work_queue.rs`) or an unbounded channel, and return to
//! their subscription; controllers' feeders run as background tasks for that reason.

use std::{
    any::{Any, TypeId},
    collections::HashMap,
    pin::{Pin, pin},
    sync::{
        Arc, Mutex, RwLock,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    task::{Context, Poll},
    time::Duration,
};

use futures::{Stream, StreamExt, future::BoxFuture};
use kube::{
    Api, Client,
    runtime::{WatchStreamExt, watcher},
};
use tokio::sync::mpsc::{self, error::TrySendError};

use crate::{
    cache::{Cache, CacheWriter, Storage, cache_of},
    error::Side,
    resource::{AnyResource, Kind, SyncResource},
    wire::{Wire, strip_unread_fields, wire_api},
};

/// Events one subscriber may have waiting before its informer waits for it.
pub const SUBSCRIBER_BUFFER: usize = 1024;

/// How long an informer waits for a full subscriber before it says so (and waits on).
const STALL_WARNING: Duration = Duration::from_secs(30);

/// What an informer tells its subscribers.
#[derive(Debug)]
pub enum InformerEvent<K> {
    /// An object was created or changed (the store already holds it).
    Applied(Arc<K>),
    /// An object was deleted (the store no longer holds it).
    Deleted(Arc<K>),
    /// The watch was re-listed (at start or after a 410): the store was replaced wholesale,
    /// so deletions in between produced no event. Subscribers re-read the store.
    Relisted,
}

impl<K> Clone for InformerEvent<K> {
    fn clone(&self) -> Self {
        match self {
            Self::Applied(obj) => Self::Applied(obj.clone()),
            Self::Deleted(obj) => Self::Deleted(obj.clone()),
            Self::Relisted => Self::Relisted,
        }
    }
}

/// The events of one informer for one reader, in order: a [`Stream`], or read with
/// [`Subscription::recv`]. Ends when the informer stops; dropping it unsubscribes.
#[derive(Debug)]
pub struct Subscription<K>(mpsc::Receiver<InformerEvent<K>>);

impl<K> Subscription<K> {
    /// The next event, or None once the informer stopped.
    pub async fn recv(&mut self) -> Option<InformerEvent<K>> {
        self.0.recv().await
    }

    /// A subscription fed by hand through the returned sender (for tests of readers).
    pub fn channel(capacity: usize) -> (mpsc::Sender<InformerEvent<K>>, Self) {
        let (tx, rx) = mpsc::channel(capacity);
        (tx, Self(rx))
    }
}

impl<K> Stream for Subscription<K> {
    type Item = InformerEvent<K>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.0.poll_recv(cx)
    }
}

/// A change every object of an informer undergoes before it is cached and sent out.
pub type Trim<K> = Box<dyn Fn(&mut K) + Send + Sync>;

/// One watched collection, its cache and its subscribers.
pub struct Informer<K: AnyResource> {
    kind: Kind<K>,
    store: Cache<K>,
    trims: RwLock<Vec<Trim<K>>>,
    /// Subscribers not yet taken over by the running informer (which owns the others).
    joining: Mutex<Vec<mpsc::Sender<InformerEvent<K>>>>,
    has_joining: AtomicBool,
    /// Subscribers, joining or taken over, not yet found dropped.
    subscribers: AtomicUsize,
    buffer: usize,
}

impl<K: AnyResource> Informer<K> {
    /// An informer of `kind` writing into `store`'s cache, buffering `buffer` events per
    /// subscriber; it runs once [`Informer::run`] is polled.
    pub(crate) fn new(kind: Kind<K>, store: Cache<K>, buffer: usize) -> Self {
        Self {
            kind,
            store,
            trims: RwLock::default(),
            joining: Mutex::default(),
            has_joining: AtomicBool::new(false),
            subscribers: AtomicUsize::new(0),
            buffer: buffer.max(1),
        }
    }

    /// The kind this informer watches.
    pub fn kind(&self) -> &Kind<K> {
        &self.kind
    }

    /// The cache; empty until the first list completed.
    pub fn store(&self) -> Cache<K> {
        self.store.clone()
    }

    /// This informer's events from now on. Subscribe during registration (a subscriber added
    /// after the start misses what came before), and read it from the manager's start on
    /// without waiting on this informer in between: see the module documentation.
    pub fn subscribe(&self) -> Subscription<K> {
        let (tx, rx) = mpsc::channel(self.buffer);
        self.joining.lock().expect("subscribers lock").push(tx);
        self.subscribers.fetch_add(1, Ordering::Relaxed);
        self.has_joining.store(true, Ordering::Release);
        Subscription(rx)
    }

    /// Subscriptions not yet found dropped (a dropped one is noticed at the next event).
    pub fn subscribers(&self) -> usize {
        self.subscribers.load(Ordering::Relaxed)
    }

    /// Has `trim` drop from every object what no reader of this informer needs (all its
    /// syncers share it: a trim is registered by the one that knows nobody reads those
    /// fields). Register it before the informers start: objects cached earlier keep what it
    /// would have dropped.
    pub fn trim(&self, trim: impl Fn(&mut K) + Send + Sync + 'static) {
        self.trims.write().expect("trims lock").push(Box::new(trim));
    }

    fn trim_object(&self, obj: &mut K) {
        strip_unread_fields(obj.meta_mut());
        let trims = self.trims.read().expect("trims lock");
        trims.iter().for_each(|trim| trim(obj));
    }

    /// Applies `events` (a watcher's, or a test's) to the cache and sends them on to the
    /// subscribers, waiting for a full one before reading the next event. Watch errors are
    /// logged and skipped (the watcher retries). Ends with the stream.
    pub(crate) async fn run(
        self: Arc<Self>,
        events: impl Stream<Item = Result<watcher::Event<K>, watcher::Error>>,
        mut writer: CacheWriter<K>,
        side: Side,
    ) {
        let kind = self.kind.name().into_owned();
        let mut events = pin!(events);
        let mut subscribers = Vec::new();
        while let Some(event) = events.next().await {
            let event = match event {
                Ok(event) => event.modify(|obj| self.trim_object(obj)),
                Err(err) => {
                    tracing::warn!(%side, %kind, error = %err, "watch failed; retrying with backoff");
                    continue;
                }
            };
            writer.apply_watcher_event(&event);
            let event = match event {
                watcher::Event::Apply(obj) => InformerEvent::Applied(Arc::new(obj)),
                watcher::Event::Delete(obj) => InformerEvent::Deleted(Arc::new(obj)),
                watcher::Event::InitDone => {
                    tracing::debug!(%side, %kind, objects = self.store.len(), "cache filled");
                    InformerEvent::Relisted
                }
                watcher::Event::Init | watcher::Event::InitApply(_) => continue,
            };
            if self.has_joining.load(Ordering::Acquire) {
                let mut joining = self.joining.lock().expect("subscribers lock");
                subscribers.append(&mut joining);
                self.has_joining.store(false, Ordering::Release);
            }
            self.send(&mut subscribers, event, side, &kind).await;
        }
    }

    /// Sends `event` to every subscriber, waiting for those that are full; drops the gone.
    async fn send(
        &self,
        subscribers: &mut Vec<mpsc::Sender<InformerEvent<K>>>,
        event: InformerEvent<K>,
        side: Side,
        kind: &str,
    ) {
        let mut i = 0;
        while i < subscribers.len() {
            let delivered = match subscribers[i].try_send(event.clone()) {
                Ok(()) => true,
                Err(TrySendError::Closed(_)) => false,
                Err(TrySendError::Full(event)) => {
                    let tx = &subscribers[i];
                    let permit = match tokio::time::timeout(STALL_WARNING, tx.reserve()).await {
                        Ok(permit) => permit,
                        Err(_) => {
                            tracing::warn!(
                                %side,
                                kind,
                                waited = ?STALL_WARNING,
                                "a subscriber reads none of this informer's events; the watch waits for it"
                            );
                            tx.reserve().await
                        }
                    };
                    permit.map(|permit| permit.send(event)).is_ok()
                }
            };
            if delivered {
                i += 1;
            } else {
                subscribers.remove(i); // keeps the order: subscribers are served in turn
                self.subscribers.fetch_sub(1, Ordering::Relaxed);
            }
        }
    }
}

/// The watch of `api` with `config`, retried with kube-runtime's default backoff; its objects
/// are decoded without their managed fields (see [`crate::wire`]).
fn watch<K: AnyResource>(
    api: Api<Wire<K>>,
    config: watcher::Config,
) -> impl Stream<Item = Result<watcher::Event<K>, watcher::Error>> + Send {
    watcher(api, config)
        .default_backoff()
        .map(|event| event.map(unwrap_event))
}

fn unwrap_event<K>(event: watcher::Event<Wire<K>>) -> watcher::Event<K> {
    match event {
        watcher::Event::Apply(Wire(obj)) => watcher::Event::Apply(obj),
        watcher::Event::Delete(Wire(obj)) => watcher::Event::Delete(obj),
        watcher::Event::Init => watcher::Event::Init,
        watcher::Event::InitApply(Wire(obj)) => watcher::Event::InitApply(obj),
        watcher::Event::InitDone => watcher::Event::InitDone,
    }
}

/// Where an informer watches.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Scope {
    /// Every namespace of the virtual cluster (or the cluster scope for cluster-scoped kinds).
    VirtualAll,
    /// The host namespace (all namespaces in the per-namespace mapping; the cluster scope for
    /// cluster-scoped kinds), only objects carrying this instance's ownership label.
    HostOwned,
    /// Any other collection: cluster, namespace (None = all) and label selector.
    Custom {
        /// Which cluster.
        side: Side,
        /// Namespace to watch, or all.
        namespace: Option<String>,
        /// Label selector, empty for none.
        labels: String,
    },
}

type Starter = Box<dyn FnOnce() -> BoxFuture<'static, ()> + Send>;

/// An informer is known by its Rust type, its kind's identity (all dynamic kinds are one Rust
/// type) and its scope.
type InformerKey = (TypeId, String, Scope);

/// The set of informers of one manager, created on first request and started together.
pub struct Informers {
    virtual_client: Client,
    host_client: Client,
    host_namespace: Option<String>,
    owner_selector: String,
    informers: Mutex<HashMap<InformerKey, Arc<dyn Any + Send + Sync>>>,
    starters: Mutex<Vec<Starter>>,
    stores_ready: Mutex<Vec<BoxFuture<'static, ()>>>,
}

impl Informers {
    /// An empty set; `owner_selector` filters host watches (`vcsync.dev/managed-by=<instance>`).
    /// `host_namespace` is the namespace [`Scope::HostOwned`] watches: the single host namespace,
    /// or None (all namespaces) in the per-namespace mapping.
    pub fn new(
        virtual_client: Client,
        host_client: Client,
        host_namespace: Option<&str>,
        owner_selector: &str,
    ) -> Self {
        Self {
            virtual_client,
            host_client,
            host_namespace: host_namespace.map(str::to_string),
            owner_selector: owner_selector.to_string(),
            informers: Mutex::default(),
            starters: Mutex::default(),
            stores_ready: Mutex::default(),
        }
    }

    /// The informer of the typed kind `K` over `scope`, shared with every other caller.
    pub fn get<K: SyncResource>(&self, scope: Scope) -> Arc<Informer<K>> {
        self.get_of(scope, Kind::typed())
    }

    /// The informer of `kind` (typed or dynamic) over `scope`, shared with every other caller.
    pub fn get_of<K: AnyResource>(&self, scope: Scope, kind: Kind<K>) -> Arc<Informer<K>> {
        let mut informers = self.informers.lock().expect("informers lock");
        let key = (TypeId::of::<K>(), kind.identity(), scope.clone());
        if let Some(existing) = informers.get(&key) {
            return existing
                .clone()
                .downcast::<Informer<K>>()
                .expect("informer type matches its TypeId key");
        }
        let name = kind.name().into_owned();
        let (api, config, side) = self.api_for(&kind, &scope);
        let (store, mut writer) = cache_of::<K>(&name, Storage::for_kind(&name));
        writer.count_bytes_as(format!("{side}/{name}"));
        let informer = Arc::new(Informer::new(kind, store.clone(), SUBSCRIBER_BUFFER));
        let runner = informer.clone();
        self.starters
            .lock()
            .expect("starters lock")
            .push(Box::new(move || {
                Box::pin(runner.run(watch(api, config), writer, side))
            }));
        self.stores_ready
            .lock()
            .expect("ready lock")
            .push(Box::pin(async move {
                store.wait_until_ready().await;
            }));
        informers.insert(key, informer.clone());
        informer
    }

    fn api_for<K: AnyResource>(
        &self,
        kind: &Kind<K>,
        scope: &Scope,
    ) -> (Api<Wire<K>>, watcher::Config, Side) {
        let api = |client: &Client, namespace: Option<&str>| {
            wire_api::<K>(
                client.clone(),
                namespace.filter(|_| kind.is_namespaced()),
                kind.dyntype(),
            )
        };
        match scope {
            Scope::VirtualAll => (
                api(&self.virtual_client, None),
                watcher::Config::default(),
                Side::Virtual,
            ),
            Scope::HostOwned => (
                api(&self.host_client, self.host_namespace.as_deref()),
                watcher::Config::default().labels(&self.owner_selector),
                Side::Host,
            ),
            Scope::Custom {
                side,
                namespace,
                labels,
            } => {
                let client = match side {
                    Side::Virtual => &self.virtual_client,
                    Side::Host => &self.host_client,
                };
                let mut config = watcher::Config::default();
                if !labels.is_empty() {
                    config = config.labels(labels);
                }
                (api(client, namespace.as_deref()), config, *side)
            }
        }
    }

    /// Starts every informer requested so far; later requests are started by a later call.
    pub fn start(&self) -> Vec<tokio::task::JoinHandle<()>> {
        let starters: Vec<Starter> = std::mem::take(&mut *self.starters.lock().expect("starters lock"));
        starters.into_iter().map(|start| tokio::spawn(start())).collect()
    }

    /// Resolves once every informer requested so far has completed its first list.
    pub fn wait_until_ready(&self) -> BoxFuture<'static, ()> {
        let waits: Vec<_> = std::mem::take(&mut *self.stores_ready.lock().expect("ready lock"));
        Box::pin(async move {
            futures::future::join_all(waits).await;
        })
    }
}

#[cfg(test)]
#[path = "informer_tests.rs"]
mod tests;
