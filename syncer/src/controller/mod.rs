//! One controller per syncer, keyed by the virtual object's key.
//!
//! A syncer must also act when only the host object is left (the virtual one was deleted), so
//! a controller keeps a set of live keys: the union of the virtual objects and, mapped back
//! through the translator, this instance's host objects. Its `KeyQueue` keeps them in a
//! `WorkQueue` (`work_queue.rs`), the one owner of every key's state (live or not, pending,
//! enqueues, failures, running, its requeue timer): "is either object still there?" is asked
//! under the queue's lock, so a key's removal is atomic with the check, and a triggered key
//! no longer live is dropped. Feeders turn informer events and triggers into keys and never
//! wait on the queue; they run from the manager's start on every replica (background tasks of
//! the registrar, as informers wait for readers that fall behind), while the reconciles start
//! only once caches are synced and this replica leads, and find the keys queued meanwhile,
//! each once.
//!
//! Retries: a conflict after [`CONFLICT_RETRY`], a cache behind the API server after
//! [`CACHE_LAG_RETRY`], other failures after a per-key exponential backoff (200 ms doubling
//! up to 300 s, reset by a success).

use std::{borrow::Cow, sync::Arc, time::Duration};

use futures::{FutureExt, Stream, StreamExt, stream::BoxStream};
use tracing::Instrument;
use vcsync_translators::VirtualKey;

use crate::{
    Action,
    error::{Error, Result},
    informer::{InformerEvent, Subscription},
    metrics::{Metrics, SyncerMetrics},
    registrar::{PreparedController, Registrar, Shutdown},
    resource::{AnyResource, virtual_key_of},
    work_queue::WorkQueue,
};

/// Quick retry after an optimistic-concurrency conflict: someone else wrote first, the
/// cache will catch up within milliseconds.
pub const CONFLICT_RETRY: Duration = Duration::from_millis(50);
/// Retry when the cache has not caught up with the API server yet (a create that raced
/// with the cache, a recreate in flight).
pub const CACHE_LAG_RETRY: Duration = Duration::from_millis(100);
const FIRST_BACKOFF: Duration = Duration::from_millis(200);
const MAX_BACKOFF: Duration = Duration::from_secs(300);

/// Options and extra triggers of one syncer's controller, handed to
/// [`ControllerModifier`](crate::ControllerModifier).
pub struct ControllerBuilder {
    name: String,
    pub(crate) concurrency: u16,
    pub(crate) triggers: Vec<BoxStream<'static, VirtualKey>>,
}

impl ControllerBuilder {
    pub(crate) fn new(name: &str, concurrency: u16) -> Self {
        Self {
            name: name.to_string(),
            concurrency,
            triggers: Vec::new(),
        }
    }

    /// Name of the syncer whose controller this is.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Also reconcile the virtual keys this stream yields (objects referenced by pods, say).
    pub fn watches(mut self, keys: impl Stream<Item = VirtualKey> + Send + 'static) -> Self {
        self.triggers.push(keys.boxed());
        self
    }

    /// Reconciles run at once (0 = unbounded).
    pub fn concurrency(mut self, concurrency: u16) -> Self {
        self.concurrency = concurrency;
        self
    }
}

/// What a controller does with one key.
#[async_trait::async_trait]
pub(crate) trait KeyHandler: Send + Sync + 'static {
    /// Syncer name, for logs.
    fn name(&self) -> &str;
    /// Whether any object behind `key` still exists (else the key may be forgotten).
    fn exists(&self, key: &VirtualKey) -> bool;
    /// Reconciles `key`.
    async fn handle(&self, key: &VirtualKey) -> Result<Action>;
    /// Kind and number of this instance's host objects in the cache, for the
    /// `vcsync_synced_objects` gauge (None: the syncer has no host objects).
    fn synced_objects(&self) -> Option<(Cow<'static, str>, usize)> {
        None
    }
}

/// The key set of one controller and its runs: the [`WorkQueue`] that owns every key's
/// state, and the handler that says whether a key's objects still exist.
pub(crate) struct KeyQueue<H: KeyHandler> {
    handler: Arc<H>,
    keys: WorkQueue<VirtualKey>,
}

impl<H: KeyHandler> KeyQueue<H> {
    fn new(handler: Arc<H>) -> Arc<Self> {
        Arc::new(Self {
            handler,
            keys: WorkQueue::default(),
        })
    }

    /// Makes `key` live and asks for its reconcile.
    pub(crate) fn enqueue(&self, key: &VirtualKey) {
        self.keys.enqueue(key);
    }

    /// Asks for `key`'s reconcile if an object behind it still exists, else forgets it.
    pub(crate) fn forget_or_enqueue(&self, key: &VirtualKey) {
        self.keys.trigger_or_forget(key, |key| self.handler.exists(key));
    }

    /// Adds the keys of a re-list (deletions during a watch gap left no event) and reconciles
    /// every key, which for synced pairs writes nothing (see [`WorkQueue::relist`]).
    pub(crate) fn rebuild(&self, all: impl IntoIterator<Item = VirtualKey>) {
        self.keys.relist(all);
    }

    async fn reconcile(&self, key: &VirtualKey, enqueued: u32, metrics: &SyncerMetrics) -> Option<Duration> {
        let span = tracing::info_span!("reconcile", syncer = self.handler.name(), key = %key);
        let mut timer = metrics.start_reconcile();
        let result = async {
            let action = self.handler.handle(key).await?;
            self.keys.succeeded(key, enqueued, |key| self.handler.exists(key));
            Ok(action)
        }
        .instrument(span)
        .await;
        if result.is_err() {
            timer.failed();
        }
        drop(timer);
        if let Some((kind, count)) = self.handler.synced_objects() {
            metrics.set_synced_objects(&kind, count);
        }
        match result {
            Ok(action) => action.requeue_after(),
            Err(err) => self.error_policy(key, &err).requeue_after(),
        }
    }

    fn error_policy(&self, vkey: &VirtualKey, err: &Error) -> Action {
        if err.is_conflict() {
            tracing::debug!(syncer = self.handler.name(), key = %vkey, "conflict; retrying");
            return Action::requeue(CONFLICT_RETRY);
        }
        let attempt = self.keys.failed(vkey);
        let delay = backoff(attempt);
        tracing::warn!(syncer = self.handler.name(), key = %vkey, attempt, retry_in = ?delay, error = %err, "reconcile failed");
        Action::requeue(delay)
    }

    /// Reconciles the triggered keys until `shutdown` resolves, then lets the reconciles in
    /// flight finish.
    async fn run(self: Arc<Self>, concurrency: u16, shutdown: Shutdown, metrics: SyncerMetrics) {
        if let Some((kind, count)) = self.handler.synced_objects() {
            metrics.set_synced_objects(&kind, count);
        }
        let metrics = Arc::new(metrics);
        let reconcile = |key: VirtualKey, enqueued: u32| {
            let (queue, metrics) = (self.clone(), metrics.clone());
            async move { queue.reconcile(&key, enqueued, &metrics).await }.boxed()
        };
        let depth = metrics.queue_depth.clone();
        self.keys
            .run(concurrency.into(), depth, shutdown, reconcile)
            .await;
    }
}

/// The delay before retrying a key that failed `attempt` times in a row: 200 ms, doubling,
/// at most 300 s.
fn backoff(attempt: u32) -> Duration {
    FIRST_BACKOFF
        .saturating_mul(1 << attempt.min(12).saturating_sub(1))
        .min(MAX_BACKOFF)
}

/// Where a controller's feeders go: background tasks of the manager, which run from its start
/// on, on every replica, whether or not this one leads and its controllers run. Feeders read
/// informer subscriptions, so they must: an informer waits for a full subscriber (see
/// [`crate::informer`]). They only update the key queue, which never waits.
pub(crate) struct Feeders<'r>(&'r Registrar);

impl Feeders<'_> {
    /// Runs `feeder` from the manager's start on.
    pub(crate) fn spawn(&mut self, feeder: impl Future<Output = ()> + Send + 'static) {
        self.0.spawn_background(feeder);
    }
}

/// A runnable controller over `handler`. Its key queue exists from now on: `feed` spawns the
/// tasks that fill it, which `registrar` runs from the manager's start; the returned
/// controller, started once caches are synced (and this replica leads), runs its reconciles.
pub(crate) fn prepare<H: KeyHandler>(
    handler: H,
    concurrency: u16,
    registrar: &Registrar,
    feed: impl FnOnce(&Arc<KeyQueue<H>>, &Arc<H>, &mut Feeders<'_>),
) -> PreparedController {
    let name = handler.name().to_string();
    let handler = Arc::new(handler);
    let queue = KeyQueue::new(handler.clone());
    feed(&queue, &handler, &mut Feeders(registrar));
    let run = move |shutdown: Shutdown, metrics: Arc<Metrics>| {
        let metrics = metrics.syncer(handler.name());
        queue.run(concurrency, shutdown, metrics).boxed()
    };
    PreparedController {
        name,
        run: Box::new(run),
    }
}

/// Feeds virtual informer events into `queue`. A deleted object's key is first handed to
/// `witness` (a deletion seen by a watch), then forgotten unless something else still exists
/// behind it, or, with `reconcile_deleted` (fake syncers, which may have to recreate it),
/// reconciled once and forgotten afterwards if still gone.
pub(crate) async fn feed_virtual<K: AnyResource, H: KeyHandler>(
    queue: Arc<KeyQueue<H>>,
    mut events: Subscription<K>,
    all_keys: impl Fn() -> Vec<VirtualKey> + Send + 'static,
    witness: impl Fn(&VirtualKey) + Send + 'static,
    reconcile_deleted: bool,
) {
    while let Some(event) = events.recv().await {
        match event {
            InformerEvent::Applied(obj) => queue.enqueue(&virtual_key_of(obj.as_ref())),
            InformerEvent::Deleted(obj) => {
                let key = virtual_key_of(obj.as_ref());
                witness(&key);
                if reconcile_deleted {
                    queue.enqueue(&key);
                } else {
                    queue.forget_or_enqueue(&key);
                }
            }
            InformerEvent::Relisted => queue.rebuild(all_keys()),
        }
    }
}

/// Triggers from other kinds only matter for keys whose objects exist.
pub(crate) async fn feed_existing_keys<H: KeyHandler>(
    queue: Arc<KeyQueue<H>>,
    mut keys: BoxStream<'static, VirtualKey>,
) {
    while let Some(key) = keys.next().await {
        if queue.handler.exists(&key) {
            queue.enqueue(&key);
        }
    }
}

/// A fake syncer's triggers name objects that may not exist yet: that is the point.
pub(crate) async fn feed_any_keys<H: KeyHandler>(
    queue: Arc<KeyQueue<H>>,
    mut keys: BoxStream<'static, VirtualKey>,
) {
    while let Some(key) = keys.next().await {
        queue.enqueue(&key);
    }
}

#[cfg(test)]
mod tests;
