//! vcsync's syncer SDK and controller manager.
//!
//! Syncers implement the traits of [`sdk`] and are registered on a [`RegisterContext`] with
//! [`register_syncer`] or [`register_fake_syncer`]; [`manager::run`] then runs them all. The
//! built-in syncers live in [`syncers`]; plugins register theirs the same way.
#![forbid(unsafe_code)]

pub mod action;
pub mod cache;
pub mod config;
pub mod context;
pub mod controller;
pub mod error;
pub mod events;
pub mod hooks;
pub mod indices;
pub mod informer;
pub mod kubelet_config;
pub mod leader;
pub mod manager;
pub mod metrics;
pub mod plugin;
pub mod rbac;
pub mod resource;
pub mod safety;
pub mod sdk;
pub mod syncers;
mod work_queue;
pub mod writes;

pub use action::Action;
pub use config::Config;
pub use context::{RegisterContext, SyncContext};
pub use controller::ControllerBuilder;
pub use error::{Error, Result, Side};
pub use hooks::{Hook, Hooks};
pub use plugin::{Plugin, PluginConfig};
pub use sdk::{
    Base, ControllerModifier, ControllerStarter, FakeSyncer, IndicesRegisterer, Initializer, Starter,
    SyncResource, Syncer, UpSyncer,
};
pub use writes::delete_object;

use controller::{FakeHandler, PairHandler, prepare_fake, prepare_pair};

/// Registers a syncer: runs its initializer, lets it register indices and modify its
/// controller (in that order), and queues the controller to start with the manager.
pub async fn register_syncer<S: Syncer>(ctx: &RegisterContext, syncer: S) -> Result<()> {
    if let Some(initializer) = syncer.initializer() {
        initializer.init(ctx).await?;
    }
    if let Some(registerer) = syncer.indices_registerer() {
        registerer.register_indices(ctx)?;
    }
    let virtual_informer = ctx.virtual_informer::<S::Resource>();
    let host_informer = ctx.host_informer::<S::Resource>();
    let host_store = host_informer.store();
    ctx.host_guard().count_host_objects(move || host_store.len());
    let mut builder = ControllerBuilder::new(syncer.name(), ctx.config().controllers.concurrency);
    if let Some(modifier) = syncer.controller_modifier() {
        builder = modifier.modify_controller(ctx, builder)?;
    }
    let sync_ctx = SyncContext::new(
        ctx.clone(),
        virtual_informer.store(),
        host_informer.store(),
        syncer.name(),
    );
    ctx.add_controller(prepare_pair(
        PairHandler {
            syncer,
            ctx: sync_ctx,
        },
        virtual_informer.subscribe(),
        host_informer.subscribe(),
        builder,
    ));
    Ok(())
}

/// Registers a fake syncer the same way as [`register_syncer`]; its controller is fed by the
/// virtual informer of its kind and by the triggers its [`ControllerModifier`] adds.
pub async fn register_fake_syncer<F: FakeSyncer>(ctx: &RegisterContext, syncer: F) -> Result<()> {
    if let Some(initializer) = syncer.initializer() {
        initializer.init(ctx).await?;
    }
    if let Some(registerer) = syncer.indices_registerer() {
        registerer.register_indices(ctx)?;
    }
    let virtual_informer = ctx.virtual_informer::<F::Resource>();
    let mut builder = ControllerBuilder::new(syncer.name(), ctx.config().controllers.concurrency);
    if let Some(modifier) = syncer.controller_modifier() {
        builder = modifier.modify_controller(ctx, builder)?;
    }
    // Fake objects have no host twin; the host store stays empty and is never watched.
    let sync_ctx = SyncContext::new(
        ctx.clone(),
        virtual_informer.store(),
        cache::empty(),
        syncer.name(),
    );
    ctx.add_controller(prepare_fake(
        FakeHandler {
            syncer,
            ctx: sync_ctx,
        },
        virtual_informer.subscribe(),
        builder,
    ));
    Ok(())
}

/// Registers a free-form controller.
pub async fn register_controller_starter<C: ControllerStarter>(
    ctx: &RegisterContext,
    starter: C,
) -> Result<()> {
    starter.register(ctx).await
}
