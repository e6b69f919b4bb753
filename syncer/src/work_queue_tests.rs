//! Tests of [`WorkQueue`]: ordering and deduplication of runs, requeues, concurrency,
//! forgetting and the queue depth. Time is tokio's paused clock.

use std::sync::{
    Arc, Mutex,
    atomic::{AtomicUsize, Ordering},
};

use futures::FutureExt;
use tokio::sync::Semaphore;

use super::*;

/// What the test reconciles record and how they behave.
#[derive(Default)]
struct Script {
    /// (key, enqueues at start, start time) of every run.
    runs: Mutex<Vec<(&'static str, u32, Instant)>>,
    /// Runs wait for a permit when set.
    gate: Option<Arc<Semaphore>>,
    requeue: Option<Duration>,
}

impl Script {
    fn keys(&self) -> Vec<&'static str> {
        self.runs.lock().unwrap().iter().map(|(key, _, _)| *key).collect()
    }
}

/// A runner of `queue` with `concurrency` and `reconcile`: the queue depth it keeps, the sender
/// that stops it and its task.
fn run_queue<K, F>(
    queue: &Arc<WorkQueue<K>>,
    concurrency: usize,
    reconcile: F,
) -> (
    Gauge,
    tokio::sync::oneshot::Sender<()>,
    tokio::task::JoinHandle<()>,
)
where
    K: Clone + Eq + std::hash::Hash + Send + Sync + 'static,
    F: Fn(K, u32) -> BoxFuture<'static, Option<Duration>> + Send + 'static,
{
    let depth = Gauge::default();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let runner = tokio::spawn({
        let (queue, depth) = (queue.clone(), depth.clone());
        async move {
            queue
                .run(concurrency, depth, stopped.map(|_| ()), reconcile)
                .await;
        }
    });
    (depth, stop, runner)
}

/// Reconciles that record their runs in `script`, wait for its gate and ask for its requeue.
fn scripted(script: Arc<Script>) -> impl Fn(&'static str, u32) -> BoxFuture<'static, Option<Duration>> {
    move |key, enqueued| {
        let script = script.clone();
        async move {
            script.runs.lock().unwrap().push((key, enqueued, Instant::now()));
            if let Some(gate) = &script.gate {
                gate.acquire().await.unwrap().forget();
            }
            script.requeue
        }
        .boxed()
    }
}

/// A new queue running under `script` with `concurrency`, stopped by the returned sender.
fn start(
    script: Arc<Script>,
    concurrency: usize,
) -> (
    Arc<WorkQueue<&'static str>>,
    Gauge,
    tokio::sync::oneshot::Sender<()>,
    tokio::task::JoinHandle<()>,
) {
    let queue = Arc::new(WorkQueue::default());
    let (depth, stop, runner) = run_queue(&queue, concurrency, scripted(script));
    (queue, depth, stop, runner)
}

/// Lets every task that can run, run.
async fn settle() {
    for _ in 0..20 {
        tokio::task::yield_now().await;
    }
}

#[tokio::test(start_paused = true)]
async fn triggers_of_a_waiting_key_run_it_once_and_of_a_running_key_once_more() {
    let gate = Arc::new(Semaphore::new(0));
    let script = Arc::new(Script {
        gate: Some(gate.clone()),
        ..Script::default()
    });
    let (queue, _, stop, runner) = start(script.clone(), 1);
    // "a" starts; "b" waits behind it (concurrency 1) and is enqueued twice more.
    queue.enqueue(&"a");
    settle().await;
    for key in ["b", "b", "a", "b"] {
        queue.enqueue(&key);
    }
    gate.add_permits(10);
    settle().await;
    assert_eq!(script.keys(), ["a", "b", "a"]);
    stop.send(()).unwrap();
    runner.await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_key_never_runs_twice_at_once_whatever_the_concurrency() {
    let gate = Arc::new(Semaphore::new(0));
    let script = Arc::new(Script {
        gate: Some(gate.clone()),
        ..Script::default()
    });
    let (queue, _, stop, runner) = start(script.clone(), 4);
    queue.enqueue(&"a");
    settle().await;
    queue.enqueue(&"a");
    queue.relist(["a"]);
    queue.trigger_or_forget(&"a", |_| true);
    settle().await;
    assert_eq!(script.keys(), ["a"], "the second run waits for the first");
    gate.add_permits(1);
    settle().await;
    assert_eq!(script.keys(), ["a", "a"], "and then runs once");
    gate.add_permits(1);
    settle().await;
    assert_eq!(script.keys(), ["a", "a"]);
    stop.send(()).unwrap();
    runner.await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_requeue_runs_when_due_and_a_trigger_before_it_runs_at_once() {
    let script = Arc::new(Script {
        requeue: Some(Duration::from_secs(60)),
        ..Script::default()
    });
    let (queue, _, stop, runner) = start(script.clone(), 4);
    let begin = Instant::now();
    queue.enqueue(&"a");
    tokio::time::sleep(Duration::from_secs(61)).await;
    let starts: Vec<Duration> = script.runs.lock().unwrap().iter().map(|r| r.2 - begin).collect();
    assert_eq!(starts, [Duration::ZERO, Duration::from_secs(60)]);

    // A trigger before the next requeue is due runs at once, and replaces it.
    queue.enqueue(&"a");
    settle().await;
    assert_eq!(script.keys().len(), 3);
    tokio::time::sleep(Duration::from_secs(59)).await;
    assert_eq!(script.keys().len(), 3, "the replaced requeue did not run");
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(script.keys().len(), 4, "the trigger's own requeue did");
    stop.send(()).unwrap();
    runner.await.unwrap();
}

/// Reconciles that count how many run at once; each holds until released.
fn counting(
    running: Arc<AtomicUsize>,
    most: Arc<AtomicUsize>,
    gate: Arc<Semaphore>,
) -> impl Fn(u32, u32) -> BoxFuture<'static, Option<Duration>> {
    move |_, _| {
        let (running, most, gate) = (running.clone(), most.clone(), gate.clone());
        async move {
            let now = running.fetch_add(1, Ordering::SeqCst) + 1;
            most.fetch_max(now, Ordering::SeqCst);
            gate.acquire().await.unwrap().forget();
            running.fetch_sub(1, Ordering::SeqCst);
            None
        }
        .boxed()
    }
}

#[tokio::test(start_paused = true)]
async fn no_more_than_concurrency_run_at_once_and_shutdown_waits_for_them() {
    let (running, most, gate) = (Arc::default(), Arc::default(), Arc::new(Semaphore::new(0)));
    let queue = Arc::new(WorkQueue::<u32>::default());
    for key in 0..10 {
        queue.enqueue(&key);
    }
    let (_, stop, runner) = run_queue(
        &queue,
        3,
        counting(Arc::clone(&running), Arc::clone(&most), gate.clone()),
    );
    settle().await;
    assert_eq!(running.load(Ordering::SeqCst), 3);
    stop.send(()).unwrap();
    settle().await;
    assert!(!runner.is_finished(), "stopped with reconciles in flight");
    gate.add_permits(3);
    runner.await.unwrap();
    assert_eq!(most.load(Ordering::SeqCst), 3);
    assert_eq!(running.load(Ordering::SeqCst), 0, "stopped mid-run");
}

#[tokio::test(start_paused = true)]
async fn a_concurrency_of_zero_is_unbounded() {
    let (running, most, gate) = (Arc::default(), Arc::default(), Arc::new(Semaphore::new(0)));
    let queue = Arc::new(WorkQueue::<u32>::default());
    for key in 0..50 {
        queue.enqueue(&key);
    }
    let (_, stop, runner) = run_queue(
        &queue,
        0,
        counting(Arc::clone(&running), Arc::clone(&most), gate.clone()),
    );
    settle().await;
    assert_eq!(running.load(Ordering::SeqCst), 50);
    gate.add_permits(50);
    stop.send(()).unwrap();
    runner.await.unwrap();
    assert_eq!(most.load(Ordering::SeqCst), 50);
}

#[tokio::test(start_paused = true)]
async fn the_depth_counts_keys_triggered_and_not_started_including_those_queued_before_the_run() {
    let gate = Arc::new(Semaphore::new(0));
    let script = Arc::new(Script {
        gate: Some(gate.clone()),
        ..Script::default()
    });
    let queue = Arc::new(WorkQueue::default());
    // Queued before the controller runs (a standby): counted once it runs.
    for key in ["a", "b", "b"] {
        queue.enqueue(&key);
    }
    let (depth, stop, runner) = run_queue(&queue, 1, scripted(script.clone()));
    settle().await;
    assert_eq!(depth.get(), 1, "a runs, b waits");
    queue.enqueue(&"a");
    assert_eq!(depth.get(), 2, "a is pending again while it runs");
    gate.add_permits(1);
    settle().await;
    assert_eq!(script.keys(), ["a", "b"]);
    assert_eq!(depth.get(), 1, "b runs, a waits");
    gate.add_permits(2);
    settle().await;
    assert_eq!(script.keys(), ["a", "b", "a"]);
    assert_eq!(depth.get(), 0);
    stop.send(()).unwrap();
    runner.await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_due_requeue_waiting_for_a_slot_is_not_counted_in_the_depth_but_a_trigger_is() {
    let gate = Arc::new(Semaphore::new(0));
    let script = Arc::new(Script {
        gate: Some(gate.clone()),
        requeue: Some(Duration::from_secs(1)),
        ..Script::default()
    });
    let (queue, depth, stop, runner) = start(script.clone(), 1);
    queue.enqueue(&"a");
    settle().await;
    gate.add_permits(1);
    settle().await;
    // a waits for its requeue; b takes the only slot before a is due.
    queue.enqueue(&"b");
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(script.keys(), ["a", "b"]);
    assert_eq!(depth.get(), 0, "a is due and waits, as a retry");
    queue.enqueue(&"a");
    assert_eq!(depth.get(), 1, "triggered now");
    gate.add_permits(1);
    settle().await;
    assert_eq!(script.keys(), ["a", "b", "a"], "and queued once");
    assert_eq!(depth.get(), 0);
    gate.add_permits(10);
    stop.send(()).unwrap();
    runner.await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_key_enqueued_during_its_run_survives_the_runs_forget_and_runs_again() {
    let gate = Arc::new(Semaphore::new(0));
    let script = Arc::new(Script {
        gate: Some(gate.clone()),
        ..Script::default()
    });
    let (queue, depth, stop, runner) = start(script.clone(), 4);
    queue.enqueue(&"n1");
    settle().await;
    let (_, enqueued, _) = script.runs.lock().unwrap()[0];
    assert_eq!(enqueued, 1);
    queue.enqueue(&"n1");
    // The first run ends, finding nothing behind the key: the second enqueue keeps it.
    queue.succeeded(&"n1", enqueued, |_| false);
    assert!(queue.is_live(&"n1"), "the pending run would not find its key");
    assert_eq!(depth.get(), 1, "the second enqueue is pending");
    gate.add_permits(1);
    settle().await;
    let (_, enqueued, _) = script.runs.lock().unwrap()[1];
    assert_eq!((script.keys(), enqueued), (vec!["n1", "n1"], 2));

    // The pending run, with nothing enqueued meanwhile, forgets the key of a missing object.
    queue.succeeded(&"n1", enqueued, |_| false);
    assert!(!queue.is_live(&"n1"));
    gate.add_permits(1);
    settle().await;
    assert_eq!(queue.entries(), 0, "a dead key's entry goes when its run ends");
    assert_eq!(depth.get(), 0);
    stop.send(()).unwrap();
    runner.await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_key_forgotten_while_it_waits_does_not_run_unless_enqueued_again() {
    let gate = Arc::new(Semaphore::new(0));
    let script = Arc::new(Script {
        gate: Some(gate.clone()),
        ..Script::default()
    });
    let (queue, depth, stop, runner) = start(script.clone(), 1);
    for key in ["busy", "gone", "back"] {
        queue.enqueue(&key);
    }
    settle().await;
    assert_eq!(depth.get(), 2);
    queue.trigger_or_forget(&"gone", |_| false);
    queue.trigger_or_forget(&"back", |_| false);
    assert_eq!(depth.get(), 0, "forgotten keys are not pending");
    assert!(!queue.is_live(&"gone") && !queue.is_live(&"back"));
    queue.enqueue(&"back");
    assert_eq!(depth.get(), 1);
    gate.add_permits(10);
    settle().await;
    assert_eq!(script.keys(), ["busy", "back"], "queued once, not twice");
    assert_eq!(queue.entries(), 2, "busy and back stay live; gone left");
    stop.send(()).unwrap();
    runner.await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn trigger_or_forget_keeps_a_key_whose_object_exists_and_runs_it() {
    let script = Arc::new(Script::default());
    let (queue, _, stop, runner) = start(script.clone(), 1);
    queue.trigger_or_forget(&"host-only", |_| true);
    settle().await;
    assert_eq!(script.keys(), ["host-only"]);
    let (_, enqueued, _) = script.runs.lock().unwrap()[0];
    assert_eq!(enqueued, 0, "a trigger is not an enqueue");
    assert!(queue.is_live(&"host-only"));
    stop.send(()).unwrap();
    runner.await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_key_forgotten_during_its_run_drops_its_requeue() {
    let gate = Arc::new(Semaphore::new(0));
    let script = Arc::new(Script {
        gate: Some(gate.clone()),
        requeue: Some(Duration::from_secs(1)),
        ..Script::default()
    });
    let (queue, _, stop, runner) = start(script.clone(), 1);
    queue.enqueue(&"a");
    settle().await;
    // Deleted while its run is in flight: the run is not cut short, but not repeated either.
    queue.trigger_or_forget(&"a", |_| false);
    gate.add_permits(10);
    tokio::time::sleep(Duration::from_secs(10)).await;
    assert_eq!(script.keys(), ["a"]);
    assert_eq!(queue.entries(), 0);
    stop.send(()).unwrap();
    runner.await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_key_forgotten_while_its_requeue_waits_is_not_run_by_it() {
    let script = Arc::new(Script {
        requeue: Some(Duration::from_secs(5)),
        ..Script::default()
    });
    let (queue, _, stop, runner) = start(script.clone(), 1);
    queue.enqueue(&"a");
    settle().await;
    queue.trigger_or_forget(&"a", |_| false);
    assert_eq!(queue.entries(), 0, "its timer went with it");
    tokio::time::sleep(Duration::from_secs(10)).await;
    assert_eq!(script.keys(), ["a"]);
    stop.send(()).unwrap();
    runner.await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_relist_runs_every_live_key_once_and_keeps_keys_of_objects_that_do_not_exist_yet() {
    let script = Arc::new(Script::default());
    let queue = Arc::new(WorkQueue::default());
    queue.enqueue(&"wanted");
    queue.relist(["listed", "wanted", "listed"]);
    assert!(queue.is_live(&"wanted") && queue.is_live(&"listed"));
    let (depth, stop, runner) = run_queue(&queue, 4, scripted(script.clone()));
    settle().await;
    let mut keys = script.keys();
    keys.sort();
    assert_eq!(keys, ["listed", "wanted"]);
    assert_eq!(depth.get(), 0);
    stop.send(()).unwrap();
    runner.await.unwrap();
}

#[test]
fn failures_count_in_a_row_and_a_success_resets_them() {
    let queue = WorkQueue::default();
    queue.enqueue(&"a");
    assert_eq!((queue.failed(&"a"), queue.failed(&"a")), (1, 2));
    queue.succeeded(&"a", 0, |_| true);
    assert_eq!(queue.failed(&"a"), 1);
    assert_eq!(queue.failed(&"unknown"), 1);
}
