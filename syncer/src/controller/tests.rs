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
