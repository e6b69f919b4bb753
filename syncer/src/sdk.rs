//! The plugin-facing SDK: the capabilities a syncer can have.
//!
//! Capabilities are additive. Everything registered has a [`Base`] name; a [`Syncer`] mirrors
//! one kind between the virtual and the host cluster, a [`FakeSyncer`] creates virtual objects
//! that something else needs, and the optional traits ([`UpSyncer`], [`Starter`],
//! [`Initializer`], [`IndicesRegisterer`], [`ControllerModifier`]) are reached through
//! accessor methods that return `None` unless a syncer opts in. Before a controller is built
//! the manager calls, in this order, `Initializer::init`, `IndicesRegisterer::register_indices`
//! and `ControllerModifier::modify_controller`.

use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use futures::stream::BoxStream;
use vcsync_translators::{NameTranslator, VirtualKey};

use crate::{
    Action,
    context::{RegisterContext, SyncContext},
    controller::ControllerBuilder,
    error::Result,
};

pub use crate::resource::{AnyResource, Kind, ScopeOf, SyncResource, api_in};

/// Identity of anything registered with the manager; names appear in logs, metrics and events.
pub trait Base: Send + Sync + 'static {
    /// A short, unique, stable name such as `configmaps`.
    fn name(&self) -> &str;
}

/// Mirrors one kind between the virtual cluster and the host.
///
/// The manager runs one controller per syncer, keyed by the virtual object's key. It calls
/// [`Syncer::sync_down`] when only the virtual object exists, [`Syncer::sync`] when both exist
/// and either changed, and for a host object without a virtual twin either
/// [`UpSyncer::sync_up`] or, by default, a guarded delete of the host object.
#[async_trait]
pub trait Syncer: Base {
    /// The kind this syncer mirrors; namespaced and cluster-scoped kinds both work, typed ones
    /// (registered with [`register_syncer`](crate::register_syncer)) and dynamic ones
    /// (`DynamicObject`, registered with
    /// [`register_dynamic_syncer`](crate::register::register_dynamic_syncer)).
    type Resource: AnyResource;

    /// How virtual keys map to host names and back.
    fn translator(&self) -> &dyn NameTranslator;

    /// Only the virtual object exists: usually create its translated copy on the host.
    async fn sync_down(&self, ctx: &SyncContext<Self::Resource>, virt: Arc<Self::Resource>)
    -> Result<Action>;

    /// Both objects exist and one of them changed; the syncer must not care which. Spec flows
    /// down, status flows up, and equal objects are left alone (no write).
    async fn sync(
        &self,
        ctx: &SyncContext<Self::Resource>,
        host: Arc<Self::Resource>,
        virt: Arc<Self::Resource>,
    ) -> Result<Action>;

    /// The virtual object is being deleted (it has a `deletionTimestamp`; finalizers or a
    /// grace period hold it), and `host` is its host twin if that still exists.
    ///
    /// The default deletes the host twin (ownership-guarded, UID precondition) and then waits
    /// for the virtual object to go. Syncers of kinds whose deletion someone must complete
    /// (pods: the kubelet's final grace-0 delete) override it.
    async fn sync_terminating(
        &self,
        ctx: &SyncContext<Self::Resource>,
        virt: Arc<Self::Resource>,
        host: Option<Arc<Self::Resource>>,
    ) -> Result<Action> {
        let _ = virt;
        match host {
            Some(host) => crate::writes::delete_object(ctx, &host).await,
            None => Ok(Action::await_change()),
        }
    }

    /// Whether the syncer keeps objects of its own for `key` beside the virtual object and its
    /// host twin (a pod's token Secret). Such a key stays live when both twins are gone, so that
    /// a delete or a change of those objects still reconciles it, in [`Syncer::sync_gone`].
    /// Default: none.
    fn keeps_beside(&self, key: &VirtualKey) -> bool {
        let _ = key;
        false
    }

    /// Neither the virtual object nor its host twin exists (both absent from the caches, after
    /// a delete, say), and [`Syncer::keeps_beside`] said the syncer keeps something for `key`:
    /// clean it up. The default does nothing; pods delete their token Secret here, which a pod
    /// deleted before it reached the host (or while the syncer was stopped between deleting the
    /// host pod and its tokens) would otherwise leave behind until the next sweep.
    async fn sync_gone(&self, ctx: &SyncContext<Self::Resource>, key: &VirtualKey) -> Result<Action> {
        let _ = (ctx, key);
        Ok(Action::await_change())
    }

    /// The virtual object a host copy made for an earlier, lost virtual cluster describes, for
    /// `--restore-from-host`; None (the default) when this kind cannot be restored from its
    /// copy.
    fn restore(&self, host: &Self::Resource) -> Option<Self::Resource> {
        let _ = host;
        None
    }

    /// Takes over the case of a host object without a virtual twin.
    fn up_syncer(&self) -> Option<&dyn UpSyncer<Self::Resource>> {
        None
    }

    /// Runs around every reconcile.
    fn starter(&self) -> Option<&dyn Starter<Self::Resource>> {
        None
    }

    /// Runs once before the controller is built.
    fn initializer(&self) -> Option<&dyn Initializer> {
        None
    }

    /// Registers the indices this syncer reads.
    fn indices_registerer(&self) -> Option<&dyn IndicesRegisterer> {
        None
    }

    /// Adds triggers to, or changes options of, this syncer's controller.
    fn controller_modifier(&self) -> Option<&dyn ControllerModifier> {
        None
    }
}

/// Handles a host object whose virtual twin does not exist.
///
/// Without it the host object is deleted, and only if it carries this instance's ownership
/// marker. Syncers that mirror host objects into the virtual cluster (nodes, say) implement it.
#[async_trait]
pub trait UpSyncer<K: AnyResource>: Send + Sync {
    /// Only the host object exists.
    async fn sync_up(&self, ctx: &SyncContext<K>, host: Arc<K>) -> Result<Action>;
}

/// Creates and maintains virtual objects that others need but that have no host twin to
/// mirror, such as a node for a pod's `spec.nodeName`.
#[async_trait]
pub trait FakeSyncer: Base {
    /// The kind of the fake objects, typed or dynamic as for [`Syncer::Resource`].
    type Resource: AnyResource;

    /// The object `key` is expected to exist in the virtual cluster but does not.
    async fn fake_sync_up(&self, ctx: &SyncContext<Self::Resource>, key: &VirtualKey) -> Result<Action>;

    /// The object exists, and it or something related changed: update or remove it.
    async fn fake_sync(&self, ctx: &SyncContext<Self::Resource>, virt: Arc<Self::Resource>)
    -> Result<Action>;

    /// Runs around every reconcile.
    fn starter(&self) -> Option<&dyn Starter<Self::Resource>> {
        None
    }

    /// Runs once before the controller is built.
    fn initializer(&self) -> Option<&dyn Initializer> {
        None
    }

    /// Registers the indices this fake syncer reads.
    fn indices_registerer(&self) -> Option<&dyn IndicesRegisterer> {
        None
    }

    /// Fake syncers are usually driven by other kinds: this is where they add those triggers.
    fn controller_modifier(&self) -> Option<&dyn ControllerModifier> {
        None
    }
}

/// Runs before and after every reconcile of a syncer or fake syncer.
#[async_trait]
pub trait Starter<K: AnyResource>: Send + Sync {
    /// Returns true to skip the rest of this reconcile; an error fails it and retries later.
    async fn reconcile_start(&self, ctx: &SyncContext<K>, key: &VirtualKey) -> Result<bool>;

    /// Runs after the reconcile, whether it failed or not.
    fn reconcile_end(&self, key: &VirtualKey);
}

/// One-time setup before a syncer's controller exists (install CRDs, apply manifests, ...).
///
/// Informers are not running yet: use the clients of the context for any reads.
#[async_trait]
pub trait Initializer: Send + Sync {
    /// Runs once, first.
    async fn init(&self, ctx: &RegisterContext) -> Result<()>;
}

/// Registers indices (through [`Caches::indices`](crate::context::Caches::indices)) that
/// syncers read.
pub trait IndicesRegisterer: Send + Sync {
    /// Runs after [`Initializer::init`].
    fn register_indices(&self, ctx: &RegisterContext) -> Result<()>;
}

/// Changes a syncer's controller before it starts: extra triggers, concurrency.
pub trait ControllerModifier: Send + Sync {
    /// Runs last, with the builder of this syncer's controller.
    fn modify_controller(
        &self,
        ctx: &RegisterContext,
        builder: ControllerBuilder,
    ) -> Result<ControllerBuilder>;
}

/// A free-form controller for what the syncer abstraction does not fit. It is registered
/// with [`register_controller_starter`](crate::register_controller_starter) and usually
/// spawns its work through [`Registrar::spawn`](crate::registrar::Registrar::spawn).
#[async_trait]
pub trait ControllerStarter: Base {
    /// Sets the controller up.
    async fn register(&self, ctx: &RegisterContext) -> Result<()>;
}

/// Extra triggers a syncer has from the moment it is built. As the syncer's
/// [`ControllerModifier`], they are handed to its controller.
#[derive(Default)]
pub struct Triggers(Mutex<Vec<BoxStream<'static, VirtualKey>>>);

impl Triggers {
    /// The triggers `streams`.
    pub fn new(streams: Vec<BoxStream<'static, VirtualKey>>) -> Self {
        Self(Mutex::new(streams))
    }
}

impl ControllerModifier for Triggers {
    fn modify_controller(
        &self,
        _ctx: &RegisterContext,
        builder: ControllerBuilder,
    ) -> Result<ControllerBuilder> {
        let streams = std::mem::take(&mut *self.0.lock().expect("triggers lock"));
        Ok(streams.into_iter().fold(builder, ControllerBuilder::watches))
    }
}
