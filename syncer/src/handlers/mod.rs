//! What a syncer's controller does with a key: the handlers of the SDK's [`Syncer`] (both
//! twins, [`PairHandler`]) and [`FakeSyncer`] (virtual objects only, [`FakeHandler`]), and how
//! their informers and triggers are wired into a [`crate::controller`] key queue. Both
//! handlers read the virtual cache the same way and run every reconcile inside the syncer's
//! [`Starter`].

use std::{borrow::Cow, sync::Arc};

use kube::Resource;
use vcsync_translators::VirtualKey;

mod earlier;

use crate::{
    Action,
    context::SyncContext,
    controller::{
        CACHE_LAG_RETRY, ControllerBuilder, KeyHandler, KeyQueue, feed_any_keys, feed_existing_keys,
        feed_virtual, prepare,
    },
    error::Result,
    informer::{InformerEvent, Subscription},
    registrar::{PreparedController, Registrar},
    resource::AnyResource,
    sdk::{FakeSyncer, Starter, Syncer},
    writes::{delete_object, own_host_copy},
};

/// The cached virtual object of `key`; an object that does not decode fails the reconcile,
/// which is retried, rather than reading as absent (the way to deleting its host twin).
fn cached_virtual<K: AnyResource>(ctx: &SyncContext<K>, key: &VirtualKey) -> Result<Option<Arc<K>>> {
    Ok(ctx
        .virtual_store()
        .try_get(&ctx.kind().object_ref(key.namespace.as_deref(), &key.name))?)
}

/// Whether the virtual cache holds `key`.
fn virtual_cached<K: AnyResource>(ctx: &SyncContext<K>, key: &VirtualKey) -> bool {
    ctx.virtual_store()
        .contains(&ctx.kind().object_ref(key.namespace.as_deref(), &key.name))
}

pub(crate) struct PairHandler<S: Syncer> {
    pub syncer: S,
    pub ctx: SyncContext<S::Resource>,
}

impl<S: Syncer> PairHandler<S> {
    /// Asks the virtual API server itself, bypassing the cache; one GET per host deletion.
    async fn virtual_exists_live(&self, key: &VirtualKey) -> Result<bool> {
        let api = self
            .ctx
            .kind()
            .api(self.ctx.virtual_client().clone(), key.namespace.as_deref());
        let kind = self.ctx.kind().name();
        let found = api
            .get_metadata_opt(&key.name)
            .await
            .map_err(crate::error::api_error(
                crate::Side::Virtual,
                "get",
                &kind,
                &key.to_string(),
            ))?;
        Ok(found.is_some())
    }

    fn host_object(&self, key: &VirtualKey) -> Result<Option<Arc<S::Resource>>> {
        let translator = self.syncer.translator();
        let host_key = translator.host_key(key);
        Ok(self
            .ctx
            .host_store()
            .try_get(
                &self
                    .ctx
                    .kind()
                    .object_ref(host_key.namespace.as_deref(), &host_key.name),
            )?
            // A host object only counts as this key's twin if its annotations say so.
            .filter(|host| translator.virtual_key(host.meta()).as_ref() == Some(key)))
    }
}

#[async_trait::async_trait]
impl<S: Syncer> KeyHandler for PairHandler<S> {
    fn name(&self) -> &str {
        self.syncer.name()
    }

    fn exists(&self, key: &VirtualKey) -> bool {
        virtual_cached(&self.ctx, key)
            // One that does not decode keeps the key, for the reconcile to fail on.
            || !matches!(self.host_object(key), Ok(None))
            || self.syncer.keeps_beside(key)
    }

    fn synced_objects(&self) -> Option<(Cow<'static, str>, usize)> {
        Some((
            Cow::Owned(self.ctx.kind().name().into_owned()),
            self.ctx.host_store().len(),
        ))
    }

    async fn handle(&self, key: &VirtualKey) -> Result<Action> {
        with_starter(self.syncer.starter(), &self.ctx, key, async {
            let (virt, host) = (cached_virtual(&self.ctx, key)?, self.host_object(key)?);
            if let Some(action) = self.guard_earlier(key, virt.as_deref(), host.as_deref()).await? {
                return Ok(action);
            }
            match (virt, host) {
                (Some(virt), host) if virt.meta().deletion_timestamp.is_some() => {
                    self.syncer.sync_terminating(&self.ctx, virt, host).await
                }
                (Some(virt), None) => self.syncer.sync_down(&self.ctx, virt).await,
                (Some(virt), Some(host)) => match own_host_copy(&self.ctx, &host).await? {
                    Some(action) => Ok(action),
                    None => self.syncer.sync(&self.ctx, host, virt).await,
                },
                (None, Some(host)) => match self.syncer.up_syncer() {
                    Some(up) => up.sync_up(&self.ctx, host).await,
                    None if self.virtual_exists_live(key).await? => {
                        // The cache is behind (a recreate, say): never delete on stale knowledge.
                        Ok(Action::requeue(CACHE_LAG_RETRY))
                    }
                    None => delete_object(&self.ctx, &host).await,
                },
                (None, None) => self.syncer.sync_gone(&self.ctx, key).await,
            }
        })
        .await
    }
}

/// Runs `reconcile` between the starter's `reconcile_start` and `reconcile_end`, unless the
/// starter asks to skip it (or fails).
async fn with_starter<K: AnyResource>(
    starter: Option<&dyn Starter<K>>,
    ctx: &SyncContext<K>,
    key: &VirtualKey,
    reconcile: impl Future<Output = Result<Action>>,
) -> Result<Action> {
    let Some(starter) = starter else {
        return reconcile.await;
    };
    let result = match starter.reconcile_start(ctx, key).await {
        Ok(false) => reconcile.await,
        Ok(true) => Ok(Action::await_change()),
        Err(err) => Err(err),
    };
    starter.reconcile_end(key);
    result
}

/// The handler of a [`FakeSyncer`](FakeSyncer): creates what is missing, maintains what exists.
pub(crate) struct FakeHandler<F: FakeSyncer> {
    pub syncer: F,
    pub ctx: SyncContext<F::Resource>,
}

#[async_trait::async_trait]
impl<F: FakeSyncer> KeyHandler for FakeHandler<F> {
    fn name(&self) -> &str {
        self.syncer.name()
    }

    fn exists(&self, key: &VirtualKey) -> bool {
        virtual_cached(&self.ctx, key)
    }

    async fn handle(&self, key: &VirtualKey) -> Result<Action> {
        with_starter(self.syncer.starter(), &self.ctx, key, async {
            match cached_virtual(&self.ctx, key)? {
                Some(virt) => self.syncer.fake_sync(&self.ctx, virt).await,
                None => self.syncer.fake_sync_up(&self.ctx, key).await,
            }
        })
        .await
    }
}

/// Wires a pair syncer's informers and triggers into a key queue and returns the runnable.
pub(crate) fn prepare_pair<S: Syncer>(
    registrar: &Registrar,
    handler: PairHandler<S>,
    virtual_events: Subscription<S::Resource>,
    host_events: Subscription<S::Resource>,
    builder: ControllerBuilder,
) -> PreparedController {
    prepare(
        handler,
        builder.concurrency,
        registrar,
        move |queue, handler, feeders| {
            let all = handler.clone();
            let guard = handler.ctx.oversight().host_guard().clone();
            let kind = handler.ctx.kind().name().into_owned();
            feeders.spawn(feed_virtual(
                queue.clone(),
                virtual_events,
                move || all_keys(&all),
                move |key| guard.witness_deleted(&kind, key),
                false,
            ));
            feeders.spawn(feed_host(queue.clone(), host_events, handler.clone()));
            for keys in builder.triggers {
                feeders.spawn(feed_existing_keys(queue.clone(), keys));
            }
        },
    )
}

/// Wires a fake syncer's informer and triggers into a key queue and returns the runnable.
pub(crate) fn prepare_fake<F: FakeSyncer>(
    registrar: &Registrar,
    handler: FakeHandler<F>,
    virtual_events: Subscription<F::Resource>,
    builder: ControllerBuilder,
) -> PreparedController {
    prepare(
        handler,
        builder.concurrency,
        registrar,
        move |queue, handler, feeders| {
            let store = handler.ctx.virtual_store().clone();
            feeders.spawn(feed_virtual(
                queue.clone(),
                virtual_events,
                move || store.virtual_keys(),
                |_| {},
                true,
            ));
            for keys in builder.triggers {
                feeders.spawn(feed_any_keys(queue.clone(), keys));
            }
        },
    )
}

fn all_keys<S: Syncer>(handler: &PairHandler<S>) -> Vec<VirtualKey> {
    let translator = handler.syncer.translator();
    let mut keys: Vec<VirtualKey> = handler.ctx.virtual_store().virtual_keys();
    keys.extend(
        handler
            .ctx
            .host_store()
            .map(|h| translator.virtual_key(h.meta()))
            .into_iter()
            .flatten(),
    );
    keys.sort();
    keys.dedup();
    keys
}

async fn feed_host<S: Syncer>(
    queue: Arc<KeyQueue<PairHandler<S>>>,
    mut events: Subscription<S::Resource>,
    handler: Arc<PairHandler<S>>,
) {
    while let Some(event) = events.recv().await {
        let key_of = |host: &S::Resource| handler.syncer.translator().virtual_key(host.meta());
        match event {
            InformerEvent::Applied(host) => {
                if let Some(key) = key_of(&host) {
                    queue.enqueue(&key);
                }
            }
            InformerEvent::Deleted(host) => {
                if let Some(key) = key_of(&host) {
                    queue.forget_or_enqueue(&key);
                }
            }
            InformerEvent::Relisted => queue.rebuild(all_keys(&handler)),
        }
    }
}
