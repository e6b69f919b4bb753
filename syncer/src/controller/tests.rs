//! Tests of the key queue with a scripted handler: retries and backoff, forgetting keys whose
//! objects are gone, and the metrics. Time is tokio's paused clock.

use std::{
    collections::{HashSet, VecDeque},
    sync::Mutex,
};

use kube::core::Status;
use tokio::time::Instant;

use super::*;

/// What one reconcile of the scripted handler returns.
#[derive(Clone, Copy, Debug)]
enum Outcome {
    Done,
    Conflict,
    Fail,
}

/// A handler whose objects and reconcile results the test sets.
#[derive(Default)]
struct Scripted {
    existing: Mutex<HashSet<VirtualKey>>,
    outcomes: Mutex<VecDeque<Outcome>>,
    calls: Mutex<Vec<(VirtualKey, Instant)>>,
}

impl Scripted {
    fn with_outcomes(outcomes: impl IntoIterator<Item = Outcome>) -> Arc<Self> {
        Arc::new(Self {
            outcomes: Mutex::new(outcomes.into_iter().collect()),
            ..Self::default()
        })
    }

    fn gaps(&self) -> Vec<Duration> {
        let calls = self.calls.lock().unwrap();
        calls.windows(2).map(|pair| pair[1].1 - pair[0].1).collect()
    }

    fn calls(&self) -> usize {
        self.calls.lock().unwrap().len()
    }
}

fn api_error(code: u16) -> Error {
    Error::Api {
        side: crate::Side::Host,
        verb: "update",
        kind: "ConfigMap".into(),
        key: "team/a".into(),
        source: Box::new(kube::Error::Api(
            Status {
                code,
                ..Status::failure("scripted", "Scripted")
            }
            .boxed(),
        )),
    }
}

#[async_trait::async_trait]
impl KeyHandler for Scripted {
    fn name(&self) -> &str {
        "scripted"
    }

    fn exists(&self, key: &VirtualKey) -> bool {
        self.existing.lock().unwrap().contains(key)
    }

    async fn handle(&self, key: &VirtualKey) -> Result<Action> {
        self.calls.lock().unwrap().push((key.clone(), Instant::now()));
        match self.outcomes.lock().unwrap().pop_front().unwrap_or(Outcome::Done) {
            Outcome::Done => Ok(Action::await_change()),
            Outcome::Conflict => Err(api_error(409)),
            Outcome::Fail => Err(api_error(500)),
        }
    }
}

/// Runs `queue` until the returned sender fires.
fn run(
    queue: &Arc<KeyQueue<Scripted>>,
    metrics: &SyncerMetrics,
) -> (tokio::sync::oneshot::Sender<()>, tokio::task::JoinHandle<()>) {
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let shutdown: Shutdown = stopped.map(|_| ()).boxed().shared();
    let task = tokio::spawn(queue.clone().run(4, shutdown, metrics.clone()));
    (stop, task)
}

#[test]
fn the_backoff_doubles_from_200_ms_up_to_300_s() {
    let ms = |attempt| backoff(attempt).as_millis();
    assert_eq!([ms(1), ms(2), ms(3), ms(11)], [200, 400, 800, 204_800]);
    assert_eq!([ms(12), ms(40), ms(u32::MAX)], [300_000; 3]);
}

#[tokio::test(start_paused = true)]
async fn failures_back_off_per_key_a_conflict_retries_after_50_ms_and_a_success_resets() {
    use Outcome::*;
    let handler = Scripted::with_outcomes([Fail, Fail, Conflict, Fail, Done, Fail, Done]);
    let key = VirtualKey::namespaced("team", "a");
    handler.existing.lock().unwrap().insert(key.clone());
    let queue = KeyQueue::new(handler.clone());
    let metrics = SyncerMetrics::default();
    let (stop, task) = run(&queue, &metrics);
    queue.enqueue(&key);
    tokio::time::sleep(Duration::from_secs(10)).await;
    let ms = Duration::from_millis;
    // Attempts 1 and 2 fail; the conflict does not count; attempt 3 fails; then success.
    assert_eq!(handler.gaps(), [ms(200), ms(400), ms(50), ms(800)]);

    // The success reset the count: the next failure waits 200 ms again.
    queue.enqueue(&key);
    tokio::time::sleep(Duration::from_secs(10)).await;
    assert_eq!(handler.gaps()[5..], [ms(200)]);
    assert_eq!(handler.calls(), 7);
    // A conflict counts as an error in the metrics, not in the backoff.
    assert_eq!((metrics.reconciles.get(), metrics.errors.get()), (7, 5));
    stop.send(()).unwrap();
    task.await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_key_is_forgotten_after_a_reconcile_that_finds_its_objects_gone_and_kept_while_they_exist() {
    let handler = Scripted::with_outcomes([]);
    let (kept, gone) = (VirtualKey::cluster("kept"), VirtualKey::cluster("gone"));
    handler.existing.lock().unwrap().insert(kept.clone());
    let queue = KeyQueue::new(handler.clone());
    let metrics = SyncerMetrics::default();
    let (stop, task) = run(&queue, &metrics);
    queue.enqueue(&kept);
    queue.enqueue(&gone);
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        handler.calls(),
        2,
        "both reconciled: a trigger may name what is yet to come"
    );
    assert!(queue.keys.is_live(&kept));
    assert!(!queue.keys.is_live(&gone));
    assert_eq!(queue.keys.entries(), 1);
    assert_eq!(metrics.queue_depth.get(), 0);
    stop.send(()).unwrap();
    task.await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_deleted_objects_key_is_forgotten_unless_its_twin_exists_which_is_reconciled() {
    let handler = Scripted::with_outcomes([]);
    let (host_only, gone) = (VirtualKey::cluster("host-only"), VirtualKey::cluster("gone"));
    let queue = KeyQueue::new(handler.clone());
    queue.enqueue(&host_only);
    queue.enqueue(&gone);
    handler.existing.lock().unwrap().insert(host_only.clone());
    queue.forget_or_enqueue(&host_only);
    queue.forget_or_enqueue(&gone);
    assert!(queue.keys.is_live(&host_only) && !queue.keys.is_live(&gone));
    let metrics = SyncerMetrics::default();
    let (stop, task) = run(&queue, &metrics);
    tokio::time::sleep(Duration::from_secs(1)).await;
    let calls: Vec<VirtualKey> = handler
        .calls
        .lock()
        .unwrap()
        .iter()
        .map(|c| c.0.clone())
        .collect();
    assert_eq!(calls, [host_only], "the gone key was dropped before its run");
    assert_eq!(queue.keys.entries(), 1);
    stop.send(()).unwrap();
    task.await.unwrap();
}

/// Feeders, driven by informer events and trigger streams.
mod feeders {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use k8s_openapi::api::core::v1::ConfigMap;
    use kube::{api::ObjectMeta, runtime::watcher};
    use tokio_stream::wrappers::UnboundedReceiverStream;

    use super::*;
    use crate::{
        cache::{Storage, cache_of},
        informer::Informer,
        resource::Kind,
    };

    fn cm(name: &str) -> Arc<ConfigMap> {
        Arc::new(ConfigMap {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some("team".into()),
                ..ObjectMeta::default()
            },
            ..ConfigMap::default()
        })
    }

    fn team(name: &str) -> VirtualKey {
        VirtualKey::namespaced("team", name)
    }

    async fn settle() {
        for _ in 0..50 {
            tokio::task::yield_now().await;
        }
    }

    #[tokio::test(start_paused = true)]
    async fn virtual_events_make_keys_live_forget_the_deleted_and_a_relist_adds_every_key() {
        let handler = Scripted::with_outcomes([]);
        handler.existing.lock().unwrap().insert(team("twin"));
        let queue = KeyQueue::new(handler.clone());
        let witnessed = Arc::new(Mutex::new(Vec::new()));
        let (events, subscription) = Subscription::channel(4);
        let feeding = tokio::spawn(feed_virtual(
            queue.clone(),
            subscription,
            || vec![team("listed")],
            {
                let witnessed = witnessed.clone();
                move |key: &VirtualKey| witnessed.lock().unwrap().push(key.to_string())
            },
            false,
        ));
        for name in ["a", "twin"] {
            events.send(InformerEvent::Applied(cm(name))).await.unwrap();
        }
        settle().await;
        assert!(queue.keys.is_live(&team("a")) && queue.keys.is_live(&team("twin")));

        // Deleted: forgotten unless its host twin still exists (then reconciled, to delete it).
        for name in ["a", "twin"] {
            events.send(InformerEvent::Deleted(cm(name))).await.unwrap();
        }
        events.send(InformerEvent::Relisted).await.unwrap();
        settle().await;
        assert_eq!(*witnessed.lock().unwrap(), ["team/a", "team/twin"]);
        assert!(!queue.keys.is_live(&team("a")));
        assert!(queue.keys.is_live(&team("twin")) && queue.keys.is_live(&team("listed")));
        // a's entry stays, dead, until it leaves the ready queue; it is not run.
        assert_eq!(queue.keys.entries(), 3);
        let metrics = SyncerMetrics::default();
        let (stop, task) = run(&queue, &metrics);
        settle().await;
        let mut ran: Vec<String> = handler
            .calls
            .lock()
            .unwrap()
            .iter()
            .map(|c| c.0.to_string())
            .collect();
        ran.sort();
        assert_eq!(ran, ["team/listed", "team/twin"]);
        stop.send(()).unwrap();
        task.await.unwrap();
        drop(events);
        feeding.await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn a_fake_syncers_deleted_object_is_reconciled_once_more_and_its_triggers_name_anything() {
        let handler = Scripted::with_outcomes([]);
        let queue = KeyQueue::new(handler.clone());
        let (events, subscription) = Subscription::channel(4);
        let feeding = tokio::spawn(feed_virtual(
            queue.clone(),
            subscription,
            Vec::new,
            |_: &VirtualKey| {},
            true,
        ));
        events.send(InformerEvent::Deleted(cm("node"))).await.unwrap();
        let (keys_tx, keys) = tokio::sync::mpsc::unbounded_channel();
        let triggering = tokio::spawn(feed_any_keys(
            queue.clone(),
            UnboundedReceiverStream::new(keys).boxed(),
        ));
        keys_tx.send(team("wanted")).unwrap();
        settle().await;
        assert!(queue.keys.is_live(&team("node")), "to recreate it if needed");
        assert!(queue.keys.is_live(&team("wanted")));

        let metrics = SyncerMetrics::default();
        let (stop, task) = run(&queue, &metrics);
        settle().await;
        assert_eq!(handler.calls(), 2);
        assert_eq!(queue.keys.entries(), 0, "both gone after their run");
        stop.send(()).unwrap();
        task.await.unwrap();
        drop((events, keys_tx));
        feeding.await.unwrap();
        triggering.await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn a_pair_syncers_triggers_only_matter_for_keys_whose_objects_exist() {
        let handler = Scripted::with_outcomes([]);
        handler.existing.lock().unwrap().insert(team("referenced"));
        let queue = KeyQueue::new(handler.clone());
        let keys = futures::stream::iter([team("referenced"), team("unknown")]).boxed();
        feed_existing_keys(queue.clone(), keys).await;
        assert!(queue.keys.is_live(&team("referenced")));
        assert!(!queue.keys.is_live(&team("unknown")));
        assert_eq!(queue.keys.entries(), 1);
    }

    /// A standby replica: the feeder reads its informer while no controller runs, so the watch
    /// is never held, and the keys wait, each once, for the controller to start.
    #[tokio::test(start_paused = true)]
    async fn feeders_keep_their_informer_going_before_the_controller_runs() {
        let (store, writer) = cache_of::<ConfigMap>("ConfigMap", Storage::for_kind("ConfigMap"));
        let informer = Arc::new(Informer::new(Kind::typed(), store, 2));
        let handler = Scripted::with_outcomes([]);
        let queue = KeyQueue::new(handler.clone());
        let feeding = tokio::spawn(feed_virtual(
            queue.clone(),
            informer.subscribe(),
            Vec::new,
            |_: &VirtualKey| {},
            false,
        ));
        let taken = Arc::new(AtomicUsize::new(0));
        let counter = taken.clone();
        let events = futures::stream::iter(
            (0..100)
                .chain(0..100)
                .map(|i| Ok(watcher::Event::Apply(cm(&format!("o{i}")).as_ref().clone()))),
        )
        .inspect(move |_| {
            counter.fetch_add(1, Ordering::SeqCst);
        });
        informer.clone().run(events, writer, crate::Side::Virtual).await;
        assert_eq!(taken.load(Ordering::SeqCst), 200, "the watch was read to its end");
        settle().await;
        assert_eq!(
            queue.keys.entries(),
            100,
            "one entry per key, however many events"
        );

        let metrics = SyncerMetrics::default();
        let (stop, task) = run(&queue, &metrics);
        settle().await;
        assert_eq!(handler.calls(), 100, "each key reconciled once");
        stop.send(()).unwrap();
        task.await.unwrap();
        drop(informer);
        feeding.await.unwrap();
    }
}

#[tokio::test(start_paused = true)]
async fn prepare_leaves_the_feeders_to_the_registrars_background_and_the_reconciles_to_the_controller() {
    let registrar = Registrar::default();
    let prepared = prepare(Scripted::default(), 4, &registrar, |queue, _, feeders| {
        let keys = futures::stream::iter([VirtualKey::cluster("a"), VirtualKey::cluster("b")]);
        feeders.spawn(feed_any_keys(queue.clone(), keys.boxed()));
    });
    let background = registrar.take_background();
    assert_eq!(background.len(), 1, "the feeder runs without the controller");
    futures::future::join_all(background).await;

    let metrics = Arc::new(Metrics::new());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let shutdown: Shutdown = stopped.map(|_| ()).boxed().shared();
    let controller = tokio::spawn((prepared.run)(shutdown, metrics.clone()));
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        metrics.syncer("scripted").reconciles.get(),
        2,
        "the keys queued before it ran"
    );
    stop.send(()).unwrap();
    controller.await.unwrap();
}
