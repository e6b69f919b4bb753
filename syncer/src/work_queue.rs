//! The queue that runs one controller's reconciles.
//!
//! Each key runs at most once at a time and at most `concurrency` keys at once; a key
//! triggered while it waits runs once, a key triggered while it runs runs again right after;
//! a requeue waits until due unless a trigger comes first (the earlier time wins).
//!
//! kube-runtime's controller runner does the same, but its scheduler holds even an immediate
//! request in a delay queue until the next tick of a millisecond timer wheel: 0.5 to 2 ms
//! before every reconcile, which was a third of vcsync's down and up latency at steady load
//! (see BENCHMARKS.md). Here a trigger goes straight to the ready queue; only delayed
//! requeues go through a timer.

use std::{
    collections::{HashMap, HashSet, VecDeque},
    future::Future,
    time::Duration,
};

use futures::{FutureExt, StreamExt, future::BoxFuture, stream::FuturesUnordered};
use tokio::{sync::mpsc, time::Instant};
use tokio_util::time::{DelayQueue, delay_queue};

/// Runs `reconcile` for the keys of `triggers` (and the requeues it asks for) until
/// `shutdown` resolves, then lets the reconciles in flight finish. `reconcile` returns when
/// to run the key again without a trigger, if at all.
pub(crate) async fn run<K, F>(
    mut triggers: mpsc::UnboundedReceiver<K>,
    concurrency: usize,
    shutdown: impl Future<Output = ()>,
    reconcile: F,
) where
    K: Clone + Eq + std::hash::Hash + Send + 'static,
    F: Fn(K) -> BoxFuture<'static, Option<Duration>>,
{
    let mut queue = Queue::<K>::default();
    let mut in_flight = FuturesUnordered::new();
    let mut shutdown = std::pin::pin!(shutdown.fuse());
    let mut stopping = false;
    loop {
        while !stopping && in_flight.len() < concurrency.max(1) {
            let Some(key) = queue.next_ready() else {
                break;
            };
            let run = reconcile(key.clone());
            in_flight.push(async move { (key, run.await) });
        }
        if stopping && in_flight.is_empty() {
            return;
        }
        tokio::select! {
            biased;
            () = &mut shutdown, if !stopping => stopping = true,
            Some((key, requeue)) = in_flight.next(), if !in_flight.is_empty() => {
                queue.finished(key, requeue);
            }
            Some(key) = triggers.recv(), if !stopping => queue.trigger(key),
            Some(expired) = queue.delayed.next(), if !stopping && !queue.delayed.is_empty() => {
                let key = expired.into_inner();
                queue.delayed_keys.remove(&key);
                queue.trigger(key);
            }
            else => {
                // Triggers closed, nothing running, nothing delayed: nothing can come any more.
                if queue.ready.is_empty() {
                    return;
                }
            }
        }
    }
}

/// The keys waiting, running and delayed.
struct Queue<K> {
    ready: VecDeque<K>,
    waiting: HashSet<K>,
    running: HashSet<K>,
    /// Running keys triggered again meanwhile.
    rerun: HashSet<K>,
    delayed: DelayQueue<K>,
    delayed_keys: HashMap<K, (delay_queue::Key, Instant)>,
}

impl<K> Default for Queue<K> {
    fn default() -> Self {
        Self {
            ready: VecDeque::new(),
            waiting: HashSet::new(),
            running: HashSet::new(),
            rerun: HashSet::new(),
            delayed: DelayQueue::new(),
            delayed_keys: HashMap::new(),
        }
    }
}

impl<K: Clone + Eq + std::hash::Hash> Queue<K> {
    /// Runs `key` as soon as possible.
    fn trigger(&mut self, key: K) {
        if let Some((timer, _)) = self.delayed_keys.remove(&key) {
            self.delayed.remove(&timer);
        }
        if self.running.contains(&key) {
            self.rerun.insert(key);
        } else if self.waiting.insert(key.clone()) {
            self.ready.push_back(key);
        }
    }

    /// The next key to run, now marked running.
    fn next_ready(&mut self) -> Option<K> {
        let key = self.ready.pop_front()?;
        self.waiting.remove(&key);
        self.running.insert(key.clone());
        Some(key)
    }

    /// `key`'s run ended, asking to run again after `requeue`.
    fn finished(&mut self, key: K, requeue: Option<Duration>) {
        self.running.remove(&key);
        if self.rerun.remove(&key) {
            self.trigger(key);
        } else if let Some(after) = requeue {
            self.schedule(key, Instant::now() + after);
        }
    }

    /// Runs `key` at `at`, unless it is already due to run sooner.
    fn schedule(&mut self, key: K, at: Instant) {
        if self.waiting.contains(&key) || self.running.contains(&key) {
            return;
        }
        match self.delayed_keys.get(&key) {
            Some((_, due)) if *due <= at => {}
            Some((timer, _)) => {
                let timer = *timer;
                self.delayed.reset_at(&timer, at);
                self.delayed_keys.insert(key, (timer, at));
            }
            None => {
                let timer = self.delayed.insert_at(key.clone(), at);
                self.delayed_keys.insert(key, (timer, at));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;

    /// Records (key, start) of every run; each run takes `hold`.
    fn recorder(
        log: Arc<Mutex<Vec<(&'static str, Instant)>>>,
        hold: Duration,
        requeue: Option<Duration>,
    ) -> impl Fn(&'static str) -> BoxFuture<'static, Option<Duration>> {
        move |key| {
            let log = log.clone();
            async move {
                log.lock().unwrap().push((key, Instant::now()));
                tokio::time::sleep(hold).await;
                requeue
            }
            .boxed()
        }
    }

    fn keys(log: &Mutex<Vec<(&'static str, Instant)>>) -> Vec<&'static str> {
        log.lock().unwrap().iter().map(|(k, _)| *k).collect()
    }

    #[tokio::test(start_paused = true)]
    async fn triggers_of_a_waiting_key_run_it_once_and_of_a_running_key_once_more() {
        let log = Arc::default();
        let (tx, rx) = mpsc::unbounded_channel();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let runner = tokio::spawn(run(
            rx,
            1,
            stopped.map(|_| ()),
            recorder(Arc::clone(&log), Duration::from_millis(10), None),
        ));
        // "a" starts; "b" waits behind it (concurrency 1) and is triggered twice more.
        tx.send("a").unwrap();
        tokio::time::sleep(Duration::from_millis(1)).await;
        for key in ["b", "b", "a", "b"] {
            tx.send(key).unwrap();
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(keys(&log), ["a", "b", "a"]);
        stop.send(()).unwrap();
        runner.await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn a_requeue_runs_when_due_and_a_trigger_before_it_runs_at_once() {
        let log = Arc::default();
        let (tx, rx) = mpsc::unbounded_channel();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let start = Instant::now();
        let runner = tokio::spawn(run(
            rx,
            4,
            stopped.map(|_| ()),
            recorder(Arc::clone(&log), Duration::ZERO, Some(Duration::from_secs(60))),
        ));
        tx.send("a").unwrap();
        tokio::time::sleep(Duration::from_secs(61)).await;
        let runs = log.lock().unwrap().clone();
        assert_eq!(runs.len(), 2, "{runs:?}");
        assert!(runs[1].1 - start >= Duration::from_secs(60));

        // A trigger before the next requeue is due runs at once, and replaces it.
        tx.send("a").unwrap();
        tokio::time::sleep(Duration::from_millis(1)).await;
        assert_eq!(log.lock().unwrap().len(), 3);
        tokio::time::sleep(Duration::from_secs(59)).await;
        assert_eq!(log.lock().unwrap().len(), 3, "the replaced requeue did not run");
        stop.send(()).unwrap();
        runner.await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn no_more_than_concurrency_run_at_once_and_shutdown_waits_for_them() {
        let running = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let most = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let (tx, rx) = mpsc::unbounded_channel();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let (r, m) = (running.clone(), most.clone());
        let runner = tokio::spawn(run(rx, 3, stopped.map(|_| ()), move |_key: u32| {
            let (r, m) = (r.clone(), m.clone());
            async move {
                let now = r.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
                m.fetch_max(now, std::sync::atomic::Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(50)).await;
                r.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
                None
            }
            .boxed()
        }));
        for key in 0..10 {
            tx.send(key).unwrap();
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
        stop.send(()).unwrap();
        runner.await.unwrap();
        assert_eq!(most.load(std::sync::atomic::Ordering::SeqCst), 3);
        assert_eq!(
            running.load(std::sync::atomic::Ordering::SeqCst),
            0,
            "stopped mid-run"
        );
    }
}
