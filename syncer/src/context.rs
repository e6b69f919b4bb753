//! What syncers are given, split by capability so that a signature shows what its code may
//! use:
//!
//! - [`Clients`]: both clients and the translation (ownership marker, namespace mapping, host
//!   namespace, name translators) and the configuration;
//! - [`Caches`]: the shared informers and indices;
//! - [`Oversight`]: what watches over writes: events on virtual objects, the plugins' hooks and
//!   the host guard;
//! - [`Registrar`]: the registration sink (controllers, tasks, readiness), in
//!   [`crate::registrar`].
//!
//! [`RegisterContext`] bundles the four for registration (the SDK's `Initializer`,
//! `IndicesRegisterer`, `ControllerModifier` and the register functions take it);
//! [`SyncContext`] is what every reconcile gets: the first three, its [`Kind`] (typed or
//! dynamic) and the two caches of that kind.

use std::sync::Arc;

use futures::future::BoxFuture;
use kube::{Api, Client};
use vcsync_translators::{NameTranslator, NamespaceMapping, Ownership};

pub use crate::registrar::Registrar;
use crate::{
    cache::Cache,
    config::Config,
    events::EventRecorder,
    hooks::Hooks,
    host_owner::{HostOwner, watch_owner},
    indices::{Indices, PodReferences},
    informer::{Informer, Informers, Scope},
    resource::{AnyResource, Kind, SyncResource},
    safety::HostGuard,
};

/// Both clients and how virtual objects translate to host ones; cheap to clone.
#[derive(Clone)]
pub struct Clients {
    inner: Arc<ClientsInner>,
}

struct ClientsInner {
    virtual_client: Client,
    host_client: Client,
    ownership: Ownership,
    mapping: NamespaceMapping,
    config: Arc<Config>,
}

impl Clients {
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

    /// This instance's ownership marker.
    pub fn ownership(&self) -> &Ownership {
        &self.inner.ownership
    }

    /// The configuration the manager runs with.
    pub fn config(&self) -> &Config {
        &self.inner.config
    }
}

/// The shared informers (one watch per kind and scope, whoever asks) and indices.
#[derive(Clone)]
pub struct Caches {
    informers: Arc<Informers>,
    indices: Arc<Indices>,
}

impl Caches {
    /// The shared informers.
    pub fn informers(&self) -> &Informers {
        &self.informers
    }

    /// Shorthand for the informer of `K` across the virtual cluster.
    pub fn virtual_informer<K: SyncResource>(&self) -> Arc<Informer<K>> {
        self.informers.get::<K>(Scope::VirtualAll)
    }

    /// Shorthand for the informer of this instance's `K` objects on the host.
    pub fn host_informer<K: SyncResource>(&self) -> Arc<Informer<K>> {
        self.informers.get::<K>(Scope::HostOwned)
    }

    /// The shared indices.
    pub fn indices(&self) -> &Indices {
        &self.indices
    }

    /// The index of what virtual pods reference, fed (from `registrar`'s start on) by the
    /// virtual pod informer; see [`Indices::pod_references`].
    pub fn pod_references(&self, registrar: &Registrar) -> Arc<PodReferences> {
        self.indices.pod_references(&self.informers, registrar)
    }
}

/// What watches over writes: events recorded on virtual objects, the hooks plugins
/// registered (syncers apply them to what they are about to write) and the host guard.
#[derive(Clone)]
pub struct Oversight {
    events: EventRecorder,
    hooks: Hooks,
    host_guard: Arc<HostGuard>,
    host_owner: Arc<HostOwner>,
}

impl Oversight {
    /// Records events on virtual objects.
    pub fn events(&self) -> &EventRecorder {
        &self.events
    }

    /// The hooks plugins registered; syncers apply them to what they are about to write.
    pub fn hooks(&self) -> &Hooks {
        &self.hooks
    }

    /// What stands between the syncers and a wiped host (see [`crate::safety`]).
    pub fn host_guard(&self) -> &Arc<HostGuard> {
        &self.host_guard
    }

    /// The owner of the host copies, if configured (see [`crate::host_owner`]).
    pub fn host_owner(&self) -> &HostOwner {
        &self.host_owner
    }
}

/// Everything of one manager, handed to every syncer at registration: the four capabilities.
#[derive(Clone)]
pub struct RegisterContext {
    clients: Clients,
    caches: Caches,
    oversight: Oversight,
    registrar: Registrar,
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
        let registrar = Registrar::default();
        let host_owner = match &config.host_owner {
            Some(name) => {
                let (owner, task, mut listed) =
                    watch_owner(host_client.clone(), &config.host_namespace, name);
                registrar.spawn_background(task);
                registrar.add_readiness(async move {
                    let _ = listed.wait_for(|listed| *listed).await;
                });
                owner
            }
            None => Arc::new(HostOwner::none()),
        };
        Ok(Self {
            clients: Clients {
                inner: Arc::new(ClientsInner {
                    virtual_client,
                    host_client,
                    ownership,
                    mapping,
                    config: Arc::new(config),
                }),
            },
            caches: Caches {
                informers: Arc::new(informers),
                indices: Arc::default(),
            },
            oversight: Oversight {
                events,
                hooks: Hooks::default(),
                host_guard: Arc::new(guard),
                host_owner,
            },
            registrar,
        })
    }

    /// Both clients, the translation and the configuration.
    pub fn clients(&self) -> &Clients {
        &self.clients
    }

    /// The shared informers and indices.
    pub fn caches(&self) -> &Caches {
        &self.caches
    }

    /// Events, hooks and the host guard.
    pub fn oversight(&self) -> &Oversight {
        &self.oversight
    }

    /// Where controllers, tasks and readiness conditions are registered.
    pub fn registrar(&self) -> &Registrar {
        &self.registrar
    }

    /// Resolves when every informer has listed once and every registered readiness resolved.
    pub(crate) fn wait_until_ready(&self) -> BoxFuture<'static, ()> {
        let informers = self.caches.informers.wait_until_ready();
        let extra = self.registrar.take_readiness();
        Box::pin(async move {
            informers.await;
            futures::future::join_all(extra).await;
        })
    }
}

/// What a reconcile of kind `K` works with: both caches, both clients, events.
pub struct SyncContext<K: AnyResource> {
    kind: Kind<K>,
    clients: Clients,
    caches: Caches,
    oversight: Oversight,
    virtual_store: Cache<K>,
    host_store: Cache<K>,
    syncer: String,
}

#[cfg(any(test, feature = "test-util"))]
impl<K: SyncResource> SyncContext<K> {
    /// A context of the typed kind `K` over the given caches, for tests (feature
    /// `test-util`).
    pub fn new(
        register: &RegisterContext,
        virtual_store: Cache<K>,
        host_store: Cache<K>,
        syncer: &str,
    ) -> Self {
        Self::of_kind(register, Kind::typed(), virtual_store, host_store, syncer)
    }
}

#[cfg(any(test, feature = "test-util"))]
impl<K: AnyResource> SyncContext<K> {
    /// A context of `kind` (a dynamic one, say) over the given caches, for tests (feature
    /// `test-util`).
    pub fn with_kind(
        register: &RegisterContext,
        kind: Kind<K>,
        virtual_store: Cache<K>,
        host_store: Cache<K>,
        syncer: &str,
    ) -> Self {
        Self::of_kind(register, kind, virtual_store, host_store, syncer)
    }
}

impl<K: AnyResource> SyncContext<K> {
    pub(crate) fn of_kind(
        register: &RegisterContext,
        kind: Kind<K>,
        virtual_store: Cache<K>,
        host_store: Cache<K>,
        syncer: &str,
    ) -> Self {
        Self {
            kind,
            clients: register.clients.clone(),
            caches: register.caches.clone(),
            oversight: register.oversight.clone(),
            virtual_store,
            host_store,
            syncer: syncer.to_string(),
        }
    }

    /// The kind this context's syncer handles: its name, dynamic type, scope and `Api`.
    pub fn kind(&self) -> &Kind<K> {
        &self.kind
    }

    /// Both clients, the translation and the configuration.
    pub fn clients(&self) -> &Clients {
        &self.clients
    }

    /// The shared informers and indices.
    pub fn caches(&self) -> &Caches {
        &self.caches
    }

    /// Events, hooks and the host guard.
    pub fn oversight(&self) -> &Oversight {
        &self.oversight
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
        self.clients.virtual_client()
    }

    /// Client of the host cluster.
    pub fn host_client(&self) -> &Client {
        self.clients.host_client()
    }

    /// The host namespace.
    pub fn host_namespace(&self) -> &str {
        self.clients.host_namespace()
    }

    /// The `Api` of `K` on the host in the namespace of the host object `host` (the single host
    /// namespace when it has none set; ignored for cluster-scoped kinds).
    pub fn host_api_for(&self, host: &K) -> Api<K> {
        let namespace = host.meta().namespace.as_deref().unwrap_or(self.host_namespace());
        self.kind.api(self.host_client().clone(), Some(namespace))
    }

    /// The `Api` of `K` in the virtual cluster, in the namespace of `virt`.
    pub fn virtual_api_for(&self, virt: &K) -> Api<K> {
        self.kind
            .api(self.virtual_client().clone(), virt.meta().namespace.as_deref())
    }

    /// Records events on virtual objects.
    pub fn events(&self) -> &EventRecorder {
        self.oversight.events()
    }
}
