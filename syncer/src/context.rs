//! What syncers are given: [`RegisterContext`] while they are registered, [`SyncContext`]
//! in every reconcile.

use std::sync::{Arc, Mutex};

use futures::future::BoxFuture;
use kube::{Api, Client};
use vcsync_translators::{NameTranslator, NamespaceMapping, Ownership};

use crate::{
    cache::Cache,
    config::Config,
    controller::PreparedController,
    events::EventRecorder,
    hooks::Hooks,
    indices::Indices,
    informer::{Informer, Informers, Scope},
    resource::{SyncResource, api_in},
    safety::HostGuard,
};

/// Shared state of one manager, handed to every syncer at registration.
#[derive(Clone)]
pub struct RegisterContext {
    inner: Arc<RegisterInner>,
}

struct RegisterInner {
    virtual_client: Client,
    host_client: Client,
    ownership: Ownership,
    mapping: NamespaceMapping,
    config: Arc<Config>,
    informers: Informers,
    indices: Indices,
    events: EventRecorder,
    host_guard: Arc<HostGuard>,
    hooks: Hooks,
    controllers: Mutex<Vec<PreparedController>>,
    background: Mutex<Vec<BoxFuture<'static, ()>>>,
    leader_tasks: Mutex<Vec<(String, BoxFuture<'static, ()>)>>,
    readiness: Mutex<Vec<BoxFuture<'static, ()>>>,
}

impl RegisterContext {
    /// A context over the two clients whose guard knows no virtual cluster identity (see
    /// [`RegisterContext::guarded`]); fails when the configured instance name is invalid.
    pub fn new(virtual_client: Client, host_client: Client, config: Config) -> crate::Result<Self> {
        let guard = HostGuard::unidentified(&config.safety);
        Self::guarded(virtual_client, host_client, config, guard)
    }

    /// A context whose host objects name the virtual cluster `guard` knows, and whose host
    /// writes `guard` watches over.
    pub fn guarded(
        virtual_client: Client,
        host_client: Client,
        config: Config,
        guard: HostGuard,
    ) -> crate::Result<Self> {
        let mut ownership = Ownership::new(&config.instance)?;
        if let Some(identity) = guard.identity() {
            ownership = ownership.with_cluster_uid(identity.uid.clone());
        }
        let mapping = config.namespace_mapping();
        let informers = Informers::new(
            virtual_client.clone(),
            host_client.clone(),
            (!mapping.is_per_namespace()).then_some(config.host_namespace.as_str()),
            &ownership.label_selector(),
        );
        let events = EventRecorder::new(virtual_client.clone(), "vcsync");
        Ok(Self {
            inner: Arc::new(RegisterInner {
                virtual_client,
                host_client,
                ownership,
                mapping,
                config: Arc::new(config),
                informers,
                indices: Indices::default(),
                events,
                host_guard: Arc::new(guard),
                hooks: Hooks::default(),
                controllers: Mutex::default(),
                background: Mutex::default(),
                leader_tasks: Mutex::default(),
                readiness: Mutex::default(),
            }),
        })
    }

    /// Client of the virtual cluster's API server.
    pub fn virtual_client(&self) -> &Client {
        &self.inner.virtual_client
    }

    /// Client of the host cluster's API server.
    pub fn host_client(&self) -> &Client {
        &self.inner.host_client
    }

    /// The host namespace vcsync runs in; in the single mapping all namespaced virtual objects
    /// land in it. Where a given virtual object lands: [`Self::namespace_mapping`].
    pub fn host_namespace(&self) -> &str {
        &self.inner.config.host_namespace
    }

    /// Where namespaced virtual objects land on the host (`namespaceMapping` in the config).
    pub fn namespace_mapping(&self) -> &NamespaceMapping {
        &self.inner.mapping
    }

    /// Host namespace of the objects of virtual namespace `virtual_namespace`.
    pub fn host_namespace_of(&self, virtual_namespace: &str) -> String {
        self.inner.mapping.host_namespace(virtual_namespace)
    }

    /// The name translator for namespaced kinds in the configured mapping.
    pub fn namespaced_translator(&self) -> Box<dyn NameTranslator> {
        self.inner.mapping.translator(self.inner.ownership.clone())
    }

    /// What stands between the syncers and a wiped host (see [`crate::safety`]).
    pub fn host_guard(&self) -> &Arc<HostGuard> {
        &self.inner.host_guard
    }

    /// This instance's ownership marker.
    pub fn ownership(&self) -> &Ownership {
        &self.inner.ownership
    }

    /// The configuration the manager runs with.
    pub fn config(&self) -> &Config {
        &self.inner.config
    }

    /// The shared informers: one watch per kind and scope, whoever asks.
    pub fn informers(&self) -> &Informers {
        &self.inner.informers
    }

    /// Shorthand for the informer of `K` across the virtual cluster.
    pub fn virtual_informer<K: SyncResource>(&self) -> Arc<Informer<K>> {
        self.inner.informers.get::<K>(Scope::VirtualAll)
    }

    /// Shorthand for the informer of this instance's `K` objects on the host.
    pub fn host_informer<K: SyncResource>(&self) -> Arc<Informer<K>> {
        self.inner.informers.get::<K>(Scope::HostOwned)
    }

    /// The shared indices.
    pub fn indices(&self) -> &Indices {
        &self.inner.indices
    }

    /// Records events on virtual objects.
    pub fn events(&self) -> &EventRecorder {
        &self.inner.events
    }

    /// The hooks plugins registered; syncers apply them to what they are about to write.
    pub fn hooks(&self) -> &Hooks {
        &self.inner.hooks
    }

    /// Runs `task` from the start of the manager on, on every replica (feeding an index, say).
    pub fn spawn_background(&self, task: impl Future<Output = ()> + Send + 'static) {
        self.inner
            .background
            .lock()
            .expect("background lock")
            .push(Box::pin(task));
    }

    /// Runs `task` once caches are synced, on the replica that writes.
    pub fn spawn(&self, name: &str, task: impl Future<Output = ()> + Send + 'static) {
        self.inner
            .leader_tasks
            .lock()
            .expect("tasks lock")
            .push((name.to_string(), Box::pin(task)));
    }

    /// Holds every controller back until `ready` resolves (an index filled from a watch, say),
    /// so that nothing acts on partial knowledge.
    pub fn add_readiness(&self, ready: impl Future<Output = ()> + Send + 'static) {
        self.inner
            .readiness
            .lock()
            .expect("readiness lock")
            .push(Box::pin(ready));
    }

    pub(crate) fn add_controller(&self, controller: PreparedController) {
        self.inner
            .controllers
            .lock()
            .expect("controllers lock")
            .push(controller);
    }

    pub(crate) fn take_controllers(&self) -> Vec<PreparedController> {
        std::mem::take(&mut *self.inner.controllers.lock().expect("controllers lock"))
    }

    pub(crate) fn take_background(&self) -> Vec<BoxFuture<'static, ()>> {
        std::mem::take(&mut *self.inner.background.lock().expect("background lock"))
    }

    pub(crate) fn take_leader_tasks(&self) -> Vec<(String, BoxFuture<'static, ()>)> {
        std::mem::take(&mut *self.inner.leader_tasks.lock().expect("tasks lock"))
    }

    /// Resolves when every informer has listed once and every registered readiness resolved.
    pub(crate) fn wait_until_ready(&self) -> BoxFuture<'static, ()> {
        let informers = self.inner.informers.wait_until_ready();
        let extra: Vec<_> = std::mem::take(&mut *self.inner.readiness.lock().expect("readiness lock"));
        Box::pin(async move {
            informers.await;
            futures::future::join_all(extra).await;
        })
    }
}

/// What a reconcile of kind `K` works with: both caches, both clients, events.
pub struct SyncContext<K: SyncResource> {
    register: RegisterContext,
    virtual_store: Cache<K>,
    host_store: Cache<K>,
    syncer: String,
}

impl<K: SyncResource> SyncContext<K> {
    pub(crate) fn new(
        register: RegisterContext,
        virtual_store: Cache<K>,
        host_store: Cache<K>,
        syncer: &str,
    ) -> Self {
        Self {
            register,
            virtual_store,
            host_store,
            syncer: syncer.to_string(),
        }
    }

    /// The registration context (clients, config, indices).
    pub fn register_context(&self) -> &RegisterContext {
        &self.register
    }

    /// Name of the syncer this context belongs to.
    pub fn syncer_name(&self) -> &str {
        &self.syncer
    }

    /// Cache of `K` in the virtual cluster.
    pub fn virtual_store(&self) -> &Cache<K> {
        &self.virtual_store
    }

    /// Cache of this instance's `K` objects on the host.
    pub fn host_store(&self) -> &Cache<K> {
        &self.host_store
    }

    /// Client of the virtual cluster.
    pub fn virtual_client(&self) -> &Client {
        self.register.virtual_client()
    }

    /// Client of the host cluster.
    pub fn host_client(&self) -> &Client {
        self.register.host_client()
    }

    /// The host namespace.
    pub fn host_namespace(&self) -> &str {
        self.register.host_namespace()
    }

    /// The `Api` of `K` on the host in the namespace of the host object `host` (the single host
    /// namespace when it has none set; ignored for cluster-scoped kinds).
    pub fn host_api_for(&self, host: &K) -> Api<K> {
        let namespace = host.meta().namespace.as_deref().unwrap_or(self.host_namespace());
        api_in::<K>(self.host_client().clone(), Some(namespace))
    }

    /// The `Api` of `K` in the virtual cluster, in the namespace of `virt`.
    pub fn virtual_api_for(&self, virt: &K) -> Api<K> {
        api_in::<K>(self.virtual_client().clone(), virt.meta().namespace.as_deref())
    }

    /// Records events on virtual objects.
    pub fn events(&self) -> &EventRecorder {
        self.register.events()
    }
}
