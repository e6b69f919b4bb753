//! The SDK's register functions: a [`Syncer`] or [`FakeSyncer`] becomes a controller queued
//! on the context's [`Registrar`](crate::context::Registrar), to start with the manager. Both
//! kinds go through the same steps (`setup`): `Initializer::init`,
//! `IndicesRegisterer::register_indices`, `ControllerModifier::modify_controller`. Typed kinds
//! are registered with [`register_syncer`] and [`register_fake_syncer`]; kinds known at run
//! time (custom resources) with [`register_dynamic_syncer`] and
//! [`register_dynamic_fake_syncer`], which take the [`Kind`] and share everything else.

use crate::{
    cache,
    context::{RegisterContext, SyncContext},
    controller::ControllerBuilder,
    error::Result,
    handlers::{FakeHandler, PairHandler, prepare_fake, prepare_pair},
    informer::Scope,
    resource::{Kind, SyncResource},
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

/// Registers a syncer of a typed kind: runs its initializer, lets it register indices and
/// modify its controller (in that order), and queues the controller to start with the
/// manager.
pub async fn register_syncer<S>(ctx: &RegisterContext, syncer: S) -> Result<()>
where
    S: Syncer<Resource: SyncResource>,
{
    register_dynamic_syncer(ctx, syncer, Kind::typed()).await
}

/// Registers a syncer of a kind known at run time (a custom resource as a `DynamicObject`,
/// say) exactly as [`register_syncer`] does a typed one (which comes here with
/// [`Kind::typed`]): same informers, caches, key queue and writes.
pub async fn register_dynamic_syncer<S: Syncer>(
    ctx: &RegisterContext,
    syncer: S,
    kind: Kind<S::Resource>,
) -> Result<()> {
    let builder = setup(
        ctx,
        &syncer,
        syncer.initializer(),
        syncer.indices_registerer(),
        syncer.controller_modifier(),
    )
    .await?;
    let informers = ctx.caches().informers();
    let virtual_informer = informers.get_of(Scope::VirtualAll, kind.clone());
    let host_informer = informers.get_of(Scope::HostOwned, kind.clone());
    let host_store = host_informer.store();
    ctx.oversight()
        .host_guard()
        .count_host_objects(move || host_store.len());
    let sync_ctx = SyncContext::of_kind(
        ctx,
        kind,
        virtual_informer.store(),
        host_informer.store(),
        syncer.name(),
    );
    ctx.registrar().add_controller(prepare_pair(
        ctx.registrar(),
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

/// Registers a fake syncer of a typed kind the same way as [`register_syncer`]; its controller
/// is fed by the virtual informer of its kind and by the triggers its [`ControllerModifier`]
/// adds.
pub async fn register_fake_syncer<F>(ctx: &RegisterContext, syncer: F) -> Result<()>
where
    F: FakeSyncer<Resource: SyncResource>,
{
    register_dynamic_fake_syncer(ctx, syncer, Kind::typed()).await
}

/// Registers a fake syncer of a kind known at run time, as [`register_fake_syncer`] does a
/// typed one (which comes here with [`Kind::typed`]).
pub async fn register_dynamic_fake_syncer<F: FakeSyncer>(
    ctx: &RegisterContext,
    syncer: F,
    kind: Kind<F::Resource>,
) -> Result<()> {
    let builder = setup(
        ctx,
        &syncer,
        syncer.initializer(),
        syncer.indices_registerer(),
        syncer.controller_modifier(),
    )
    .await?;
    let virtual_informer = ctx.caches().informers().get_of(Scope::VirtualAll, kind.clone());
    // Fake objects have no host twin; the host store stays empty and is never watched.
    let host_store = cache::empty_of(&kind.name());
    let sync_ctx = SyncContext::of_kind(ctx, kind, virtual_informer.store(), host_store, syncer.name());
    ctx.registrar().add_controller(prepare_fake(
        ctx.registrar(),
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
