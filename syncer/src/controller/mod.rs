//! One controller per syncer, keyed by the virtual object's key.
//!
//! A syncer must also act when only the host object is left (the virtual one was deleted), so
//! a controller keeps a set of live keys: the union of the virtual objects and, mapped back
//! through the translator, this instance's host objects. Both informers feed it under one
//! lock, which makes "is either object still there?" decisions atomic with the key's removal;
//! a triggered key no longer in the set is dropped. The reconciles run on a
//! [`crate::work_queue`].

use std::{
    borrow::Cow,
    collections::HashMap,
    sync::{Arc, Mutex, MutexGuard},
    time::Duration,
};

use futures::{FutureExt, Stream, StreamExt, stream::BoxStream};
use tokio::sync::mpsc;
use tracing::Instrument;
use vcsync_translators::VirtualKey;

use crate::{
    Action,
    error::{Error, Result},
    informer::InformerEvent,
    metrics::{Metrics, SyncerMetrics},
    registrar::{PreparedController, Shutdown},
    resource::{AnyResource, virtual_key_of},
};

/// Quick retry after an optimistic-concurrency conflict: someone else wrote first, the
/// cache will catch up within milliseconds.
const CONFLICT_RETRY: Duration = Duration::from_millis(50);
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

/// What a controller keeps per live key (one map entry, one copy of the key).
#[derive(Debug, Default)]
struct KeyState {
    /// Enqueues since its last reconcile ended: a key enqueued while it is being reconciled is
    /// not forgotten by that reconcile, since the pending run must still find it (a fake
    /// syncer's trigger names an object that does not exist yet).
    enqueued: u32,
    /// Triggered, and its reconcile not started yet (the `vcsync_queue_depth` gauge).
    pending: bool,
    /// Reconciles failed in a row, for the backoff.
    failures: u32,
}

type Keys = HashMap<VirtualKey, KeyState>;

/// The key set of one controller and the channel that triggers reconciles.
pub(crate) struct KeyQueue<H: KeyHandler> {
    handler: Arc<H>,
    /// The live keys; its lock also orders "does either object exist?" with removals.
    keys: Mutex<Keys>,
    trigger: mpsc::UnboundedSender<VirtualKey>,
    metrics: SyncerMetrics,
}

impl<H: KeyHandler> KeyQueue<H> {
    fn new(handler: Arc<H>, metrics: SyncerMetrics) -> (Arc<Self>, mpsc::UnboundedReceiver<VirtualKey>) {
        let (trigger, rx) = mpsc::unbounded_channel();
        let queue = Arc::new(Self {
            handler,
            keys: Mutex::default(),
            trigger,
            metrics,
        });
        (queue, rx)
    }

    fn keys(&self) -> MutexGuard<'_, Keys> {
        self.keys.lock().expect("keys lock")
    }

    /// Asks the controller to reconcile the live key `key`.
    fn trigger(&self, state: &mut KeyState, key: &VirtualKey) {
        if !state.pending {
            state.pending = true;
            self.metrics.queue_depth.inc();
        }
        let _ = self.trigger.send(key.clone());
    }

    fn forget(&self, keys: &mut Keys, key: &VirtualKey) {
        if keys.remove(key).is_some_and(|state| state.pending) {
            self.metrics.queue_depth.dec();
        }
    }

    pub(crate) fn enqueue(&self, key: &VirtualKey) {
        let mut keys = self.keys();
        let state = live(&mut keys, key);
        // Only compared for equality: wrapping is harmless.
        state.enqueued = state.enqueued.wrapping_add(1);
        self.trigger(state, key);
    }

    /// `key`'s reconcile starts: the enqueues seen so far, or None if the key was forgotten
    /// meanwhile (both objects gone).
    fn start(&self, key: &VirtualKey) -> Option<u32> {
        let mut keys = self.keys();
        let state = keys.get_mut(key)?;
        if std::mem::take(&mut state.pending) {
            self.metrics.queue_depth.dec();
        }
        Some(state.enqueued)
    }

    /// After a reconcile of `key` that succeeded, having started at `enqueued` enqueues.
    fn succeeded(&self, key: &VirtualKey, enqueued: u32) {
        let mut keys = self.keys();
        let Some(state) = keys.get_mut(key) else {
            return;
        };
        state.failures = 0;
        if state.enqueued != enqueued {
            return;
        }
        state.enqueued = 0;
        if !self.handler.exists(key) {
            self.forget(&mut keys, key);
        }
    }

    /// After a failed reconcile of `key`: how many failed in a row.
    fn failed(&self, key: &VirtualKey) -> u32 {
        let mut keys = self.keys();
        keys.get_mut(key).map_or(1, |state| {
            state.failures = state.failures.saturating_add(1);
            state.failures
        })
    }

    pub(crate) fn forget_or_enqueue(&self, key: &VirtualKey) {
        let mut keys = self.keys();
        if self.handler.exists(key) {
            let state = live(&mut keys, key);
            self.trigger(state, key);
        } else {
            self.forget(&mut keys, key);
        }
    }

    /// Whether `key` is live (a triggered key no longer live is dropped).
    #[cfg(test)]
    fn is_live(&self, key: &VirtualKey) -> bool {
        self.keys().contains_key(key)
    }

    /// Adds the keys of a re-list (deletions during a watch gap left no event) and reconciles
    /// every key, which for synced pairs writes nothing. Keys already queued stay until their
    /// reconcile: a fake syncer's triggers name objects that do not exist yet, and a key whose
    /// objects are really gone is forgotten after its (no-op) reconcile.
    pub(crate) fn rebuild(&self, all: impl IntoIterator<Item = VirtualKey>) {
        let mut keys = self.keys();
        for key in all {
            keys.entry(key).or_default();
        }
        keys.shrink_to_fit();
        for (key, state) in keys.iter_mut() {
            self.trigger(state, key);
        }
    }

    async fn reconcile(vkey: &VirtualKey, enqueued: u32, queue: &Self) -> Result<Action> {
        let span = tracing::info_span!("reconcile", syncer = queue.handler.name(), key = %vkey);
        let mut timer = queue.metrics.start_reconcile();
        let result = async {
            let action = queue.handler.handle(vkey).await?;
            queue.succeeded(vkey, enqueued);
            Ok(action)
        }
        .instrument(span)
        .await;
        if result.is_err() {
            timer.failed();
        }
        drop(timer);
        if let Some((kind, count)) = queue.handler.synced_objects() {
            queue.metrics.set_synced_objects(&kind, count);
        }
        result
    }

    fn error_policy(vkey: &VirtualKey, err: &Error, queue: &Self) -> Action {
        if err.is_conflict() {
            tracing::debug!(syncer = queue.handler.name(), key = %vkey, "conflict; retrying");
            return Action::requeue(CONFLICT_RETRY);
        }
        let attempt = queue.failed(vkey);
        let delay = FIRST_BACKOFF
            .saturating_mul(1 << attempt.min(12).saturating_sub(1))
            .min(MAX_BACKOFF);
        tracing::warn!(syncer = queue.handler.name(), key = %vkey, attempt, retry_in = ?delay, error = %err, "reconcile failed");
        Action::requeue(delay)
    }

    /// Reconciles the triggered keys until `shutdown` resolves, then lets the reconciles in
    /// flight finish.
    async fn run(
        self: Arc<Self>,
        triggers: mpsc::UnboundedReceiver<VirtualKey>,
        concurrency: u16,
        shutdown: Shutdown,
    ) {
        if let Some((kind, count)) = self.handler.synced_objects() {
            self.metrics.set_synced_objects(&kind, count);
        }
        let reconcile = |key: VirtualKey| {
            let queue = self.clone();
            async move {
                // Forgotten between trigger and run: both objects are gone.
                let enqueued = queue.start(&key)?;
                let action = match Self::reconcile(&key, enqueued, &queue).await {
                    Ok(action) => action,
                    Err(err) => Self::error_policy(&key, &err, &queue),
                };
                action.requeue_after()
            }
            .boxed()
        };
        crate::work_queue::run(triggers, concurrency.into(), shutdown, reconcile).await;
    }
}

/// The state of the live key `key`, made live if it was not.
fn live<'k>(keys: &'k mut Keys, key: &VirtualKey) -> &'k mut KeyState {
    if !keys.contains_key(key) {
        keys.insert(key.clone(), KeyState::default());
    }
    keys.get_mut(key).expect("inserted above")
}

/// A runnable controller over `handler`; `feed` spawns the tasks that fill its key queue.
pub(crate) fn prepare<H: KeyHandler>(
    handler: H,
    concurrency: u16,
    feed: impl FnOnce(&Arc<KeyQueue<H>>, &Arc<H>, &mut tokio::task::JoinSet<()>) + Send + 'static,
) -> PreparedController {
    let name = handler.name().to_string();
    let run = move |shutdown: Shutdown, metrics: Arc<Metrics>| {
        async move {
            let handler = Arc::new(handler);
            let (queue, triggers) = KeyQueue::new(handler.clone(), metrics.syncer(handler.name()));
            let mut feeders = tokio::task::JoinSet::new();
            feed(&queue, &handler, &mut feeders);
            queue.run(triggers, concurrency, shutdown).await;
            feeders.abort_all();
        }
        .boxed()
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
    mut events: mpsc::UnboundedReceiver<InformerEvent<K>>,
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
mod tests {
    use super::*;

    /// A fake syncer's view: nothing exists; each reconcile waits until released.
    struct Waiting {
        release: tokio::sync::Semaphore,
    }

    #[async_trait::async_trait]
    impl KeyHandler for Waiting {
        fn name(&self) -> &str {
            "waiting"
        }

        fn exists(&self, _key: &VirtualKey) -> bool {
            false
        }

        async fn handle(&self, _key: &VirtualKey) -> Result<Action> {
            self.release.acquire().await.expect("open").forget();
            Ok(Action::await_change())
        }
    }

    fn queued(queue: &KeyQueue<Waiting>, key: &VirtualKey) -> bool {
        queue.is_live(key)
    }

    #[tokio::test]
    async fn a_key_enqueued_during_its_reconcile_is_not_forgotten_by_it() {
        let (queue, _triggers) = KeyQueue::new(
            Arc::new(Waiting {
                release: tokio::sync::Semaphore::new(0),
            }),
            SyncerMetrics::default(),
        );
        let key = VirtualKey::cluster("n1");
        queue.enqueue(&key);
        let enqueued = queue.start(&key).unwrap();
        let running = tokio::spawn({
            let (queue, key) = (queue.clone(), key.clone());
            async move { KeyQueue::reconcile(&key, enqueued, &queue).await }
        });
        tokio::task::yield_now().await;
        queue.enqueue(&key);
        queue.handler.release.add_permits(1);
        running.await.unwrap().unwrap();
        assert!(queued(&queue, &key), "the pending run would not find its key");
        assert_eq!(
            queue.metrics.queue_depth.get(),
            1,
            "the second enqueue is pending"
        );

        // The pending run, with nothing enqueued meanwhile, forgets the key of a missing object.
        queue.handler.release.add_permits(1);
        let enqueued = queue.start(&key).unwrap();
        KeyQueue::reconcile(&key, enqueued, &queue).await.unwrap();
        assert!(!queued(&queue, &key));
        assert!(queue.keys().is_empty());
        assert_eq!(queue.metrics.queue_depth.get(), 0);
    }

    #[tokio::test]
    async fn shutdown_lets_the_reconcile_in_flight_finish() {
        let (queue, triggers) = KeyQueue::new(
            Arc::new(Waiting {
                release: tokio::sync::Semaphore::new(0),
            }),
            SyncerMetrics::default(),
        );
        let metrics = queue.metrics.clone();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let shutdown: Shutdown = stopped.map(|_| ()).boxed().shared();
        queue.rebuild([VirtualKey::cluster("slow")]);
        let running = tokio::spawn(queue.clone().run(triggers, 4, shutdown));
        while metrics.in_flight.get() == 0 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert_eq!(metrics.queue_depth.get(), 0);
        stop.send(()).unwrap();
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(!running.is_finished(), "stopped with a reconcile in flight");
        queue.handler.release.add_permits(1);
        tokio::time::timeout(Duration::from_secs(5), running)
            .await
            .expect("stops once the reconcile finished")
            .unwrap();
        assert_eq!((metrics.reconciles.get(), metrics.in_flight.get()), (1, 0));
    }

    #[tokio::test]
    async fn a_relist_keeps_keys_queued_for_objects_that_do_not_exist_yet() {
        let (queue, _triggers) = KeyQueue::new(
            Arc::new(Waiting {
                release: tokio::sync::Semaphore::new(0),
            }),
            SyncerMetrics::default(),
        );
        let (wanted, listed) = (VirtualKey::cluster("wanted"), VirtualKey::cluster("listed"));
        queue.enqueue(&wanted);
        queue.rebuild([listed.clone()]);
        assert!(queued(&queue, &wanted) && queued(&queue, &listed));
    }
}
