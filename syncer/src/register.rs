//! The SDK's register functions: a [`Syncer`] or [`FakeSyncer`] becomes a controller queued
//! on the context's [`Registrar`](crate::context::Registrar), to start with the manager. Both
//! kinds go through the same steps ([`setup`]): `Initializer::init`,
//! `IndicesRegisterer::register_indices`, `ControllerModifier::modify_controller`.

use crate::{
    cache,
    context::{RegisterContext, SyncContext},
    controller::ControllerBuilder,
    error::Result,
    handlers::{FakeHandler, PairHandler, prepare_fake, prepare_pair},
    sdk::{Base, ControllerModifier, ControllerStarter, FakeSyncer, IndicesRegisterer, Initializer, Syncer},
};

/// Runs what a syncer of either kind asks for before its controller exists, in the SDK's
/// order, and returns its controller's builder.
async fn setup(
    ctx: &RegisterContext,
    syncer: &dyn Base,
    initializer: Option<&dyn Initializer>,
    registerer: Option<&dyn IndicesRegisterer>,
    modifier: Option<&dyn ControllerModifier>,
) -> Result<ControllerBuilder> {
    if let Some(initializer) = initializer {
        initializer.init(ctx).await?;
    }
    if let Some(registerer) = registerer {
        registerer.register_indices(ctx)?;
    }
    let mut builder = ControllerBuilder::new(syncer.name(), ctx.clients().config().controllers.concurrency);
    if let Some(modifier) = modifier {
        builder = modifier.modify_controller(ctx, builder)?;
    }
    Ok(builder)
}

/// Registers a syncer: runs its initializer, lets it register indices and modify its
/// controller (in that order), and queues the controller to start with the manager.
pub async fn register_syncer<S: Syncer>(ctx: &RegisterContext, syncer: S) -> Result<()> {
    let builder = setup(
        ctx,
        &syncer,
        syncer.initializer(),
        syncer.indices_registerer(),
        syncer.controller_modifier(),
    )
    .await?;
    let virtual_informer = ctx.caches().virtual_informer::<S::Resource>();
    let host_informer = ctx.caches().host_informer::<S::Resource>();
    let host_store = host_informer.store();
    ctx.oversight()
        .host_guard()
        .count_host_objects(move || host_store.len());
    let sync_ctx = SyncContext::new(
        ctx,
        virtual_informer.store(),
        host_informer.store(),
        syncer.name(),
    );
    ctx.registrar().add_controller(prepare_pair(
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
    let builder = setup(
        ctx,
        &syncer,
        syncer.initializer(),
        syncer.indices_registerer(),
        syncer.controller_modifier(),
    )
    .await?;
    let virtual_informer = ctx.caches().virtual_informer::<F::Resource>();
    // Fake objects have no host twin; the host store stays empty and is never watched.
    let sync_ctx = SyncContext::new(ctx, virtual_informer.store(), cache::empty(), syncer.name());
    ctx.registrar().add_controller(prepare_fake(
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
