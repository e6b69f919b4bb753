//! Shared informers: one watch per kind and scope per cluster, whatever the number of
//! syncers reading it.
//!
//! An informer runs a kube-runtime watcher into a [`Cache`] and fans the events out to
//! subscribers. Caches keep only what syncers read: managed fields and kubectl's
//! last-applied annotation are dropped on the way in, and the kinds with an object or more
//! per pod are kept encoded (see [`crate::cache`]). Typed and dynamic kinds share the
//! informers alike: an informer is known by its kind's [`Kind::identity`] and scope.

use std::{
    any::{Any, TypeId},
    collections::HashMap,
    sync::{Arc, Mutex, RwLock},
};

use futures::{StreamExt, future::BoxFuture};
use kube::{
    Api, Client,
    runtime::{WatchStreamExt, watcher},
};
use tokio::sync::mpsc;

use crate::{
    cache::{Cache, CacheWriter, Storage, cache_of},
    error::Side,
    resource::{AnyResource, Kind, SyncResource},
};

const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";

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

/// A change every object of an informer undergoes before it is cached and sent out.
pub type Trim<K> = Box<dyn Fn(&mut K) + Send + Sync>;

/// One watched collection, its cache and its subscribers.
pub struct Informer<K: AnyResource> {
    kind: Kind<K>,
    store: Cache<K>,
    subscribers: Mutex<Vec<mpsc::UnboundedSender<InformerEvent<K>>>>,
    trims: RwLock<Vec<Trim<K>>>,
}

impl<K: AnyResource> Informer<K> {
    /// The kind this informer watches.
    pub fn kind(&self) -> &Kind<K> {
        &self.kind
    }

    /// The cache; empty until the first list completed.
    pub fn store(&self) -> Cache<K> {
        self.store.clone()
    }

    /// A stream of this informer's events from its start on. Subscribe during registration:
    /// a subscriber added after the start misses what came before.
    pub fn subscribe(&self) -> mpsc::UnboundedReceiver<InformerEvent<K>> {
        let (tx, rx) = mpsc::unbounded_channel();
        self.subscribers.lock().expect("subscribers lock").push(tx);
        rx
    }

    /// Has `trim` drop from every object what no reader of this informer needs (all its
    /// syncers share it: a trim is registered by the one that knows nobody reads those
    /// fields). Register it before the informers start: objects cached earlier keep what it
    /// would have dropped.
    pub fn trim(&self, trim: impl Fn(&mut K) + Send + Sync + 'static) {
        self.trims.write().expect("trims lock").push(Box::new(trim));
    }

    fn notify(&self, make: impl Fn() -> InformerEvent<K>) {
        self.subscribers
            .lock()
            .expect("subscribers lock")
            .retain(|tx| tx.send(make()).is_ok());
    }

    async fn run(
        self: Arc<Self>,
        api: Api<K>,
        config: watcher::Config,
        mut writer: CacheWriter<K>,
        side: Side,
    ) {
        let kind = self.kind.name().into_owned();
        let this = self.clone();
        let mut events = watcher(api, config)
            .default_backoff()
            .modify(move |obj| {
                strip_unread_fields(obj);
                let trims = this.trims.read().expect("trims lock");
                trims.iter().for_each(|trim| trim(obj));
            })
            .boxed();
        while let Some(event) = events.next().await {
            let event = match event {
                Ok(event) => event,
                Err(err) => {
                    tracing::warn!(%side, %kind, error = %err, "watch failed; retrying with backoff");
                    continue;
                }
            };
            writer.apply_watcher_event(&event);
            match event {
                watcher::Event::Apply(obj) => {
                    let obj = Arc::new(obj);
                    self.notify(|| InformerEvent::Applied(obj.clone()));
                }
                watcher::Event::Delete(obj) => {
                    let obj = Arc::new(obj);
                    self.notify(|| InformerEvent::Deleted(obj.clone()));
                }
                watcher::Event::InitDone => {
                    tracing::debug!(%side, %kind, objects = self.store.len(), "cache filled");
                    self.notify(|| InformerEvent::Relisted);
                }
                watcher::Event::Init | watcher::Event::InitApply(_) => {}
            }
        }
    }
}

fn strip_unread_fields<K: AnyResource>(obj: &mut K) {
    let meta = obj.meta_mut();
    meta.managed_fields = None;
    if let Some(annotations) = meta.annotations.as_mut() {
        annotations.remove(LAST_APPLIED);
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
        let (store, writer) = cache_of::<K>(&name, Storage::for_kind(&name));
        let (api, config, side) = self.api_for(&kind, &scope);
        let informer = Arc::new(Informer {
            kind,
            store: store.clone(),
            subscribers: Mutex::default(),
            trims: RwLock::default(),
        });
        let runner = informer.clone();
        self.starters
            .lock()
            .expect("starters lock")
            .push(Box::new(move || Box::pin(runner.run(api, config, writer, side))));
        self.stores_ready
            .lock()
            .expect("ready lock")
            .push(Box::pin(async move {
                store.wait_until_ready().await;
            }));
        informers.insert(key, informer.clone());
        informer
    }

    fn api_for<K: AnyResource>(&self, kind: &Kind<K>, scope: &Scope) -> (Api<K>, watcher::Config, Side) {
        match scope {
            Scope::VirtualAll => (
                kind.api(self.virtual_client.clone(), None),
                watcher::Config::default(),
                Side::Virtual,
            ),
            Scope::HostOwned => {
                let api = kind.api(self.host_client.clone(), self.host_namespace.as_deref());
                (
                    api,
                    watcher::Config::default().labels(&self.owner_selector),
                    Side::Host,
                )
            }
            Scope::Custom {
                side,
                namespace,
                labels,
            } => {
                let client = match side {
                    Side::Virtual => self.virtual_client.clone(),
                    Side::Host => self.host_client.clone(),
                };
                let api = kind.api(client, namespace.as_deref());
                let mut config = watcher::Config::default();
                if !labels.is_empty() {
                    config = config.labels(labels);
                }
                (api, config, *side)
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
