//! The keys of one controller and the queue that runs their reconciles: the single owner of
//! per-key state.
//!
//! A [`WorkQueue`] holds, under one lock, the live keys (a key is live while an object behind
//! it may exist), each key's counters (enqueues since its last reconcile, failures in a row,
//! whether it waits, runs or has a timer), the ready queue and the timers of delayed
//! requeues. Feeders call [`WorkQueue::enqueue`], [`WorkQueue::trigger_or_forget`] and
//! [`WorkQueue::relist`], which never wait; [`WorkQueue::run`] starts the reconciles. No
//! channel sits in between: a key is in the ready queue at most once, so the key set is the
//! bound on what is queued, and a controller that does not run yet (a standby replica)
//! accumulates at most one entry per object.
//!
//! Each key runs at most once at a time and at most `concurrency` keys at once (0 =
//! unbounded); a key triggered while it waits runs once, a key triggered while it runs runs
//! again right after; a requeue waits until due unless a trigger comes first (the earlier
//! time wins). A key found gone ([`WorkQueue::trigger_or_forget`], or after a reconcile that
//! saw no new enqueue, [`WorkQueue::succeeded`]) is forgotten under the same lock as the
//! check, so no enqueue can slip in between; if it is waiting or running, its entry stays,
//! dead, until it leaves the ready queue or its run ends, and an enqueue meanwhile revives it.
//!
//! kube-runtime's controller runner does the same, but its scheduler holds even an immediate
//! request in a delay queue until the next tick of a millisecond timer wheel: 0.5 to 2 ms
//! before every reconcile, which was a third of vcsync's down and up latency at steady load
//! (see BENCHMARKS.md). Here a trigger goes straight to the ready queue; only delayed
//! requeues go through a timer.

use std::{
    collections::{HashMap, VecDeque},
    future::Future,
    hash::Hash,
    sync::{Mutex, MutexGuard, OnceLock},
    task::{Context, Poll},
    time::Duration,
};

use futures::{FutureExt, StreamExt, future::BoxFuture, stream::FuturesUnordered};
use prometheus_client::metrics::gauge::Gauge;
use tokio::{sync::Notify, time::Instant};
use tokio_util::time::{DelayQueue, delay_queue};

/// The keys of one controller, their state and their runs.
pub(crate) struct WorkQueue<K> {
    state: Mutex<State<K>>,
    /// Wakes the runner when the ready queue gets a key after being empty.
    wake: Notify,
    /// The `vcsync_queue_depth` gauge, from the start of [`WorkQueue::run`] on.
    depth: OnceLock<Gauge>,
}

/// What one live (or dead but still queued or running) key has.
#[derive(Debug, Default)]
struct KeyState {
    /// Enqueues since its last reconcile ended: a key enqueued while it is being reconciled is
    /// not forgotten by that reconcile, since the pending run must still find it (a fake
    /// syncer's trigger names an object that does not exist yet). Only compared for equality.
    enqueued: u32,
    /// Reconciles failed in a row, for the backoff.
    failures: u32,
    /// An object behind it may exist; false once forgotten while queued or running.
    live: bool,
    /// Triggered, and its run not started yet (counted in the queue depth); a due requeue
    /// queues the key without it.
    pending: bool,
    /// In the ready queue.
    queued: bool,
    /// Being reconciled.
    running: bool,
    /// Its delayed requeue.
    timer: Option<delay_queue::Key>,
}

struct State<K> {
    keys: HashMap<K, KeyState>,
    runs: Runs<K>,
}

/// The ready queue, the timers and the depth, apart from the key map so both can be borrowed.
struct Runs<K> {
    ready: VecDeque<K>,
    timers: DelayQueue<K>,
    /// Keys pending (the queue depth) and the part of it already added to the gauge.
    pending: i64,
    published: i64,
}

impl<K: Clone + Eq + Hash> Runs<K> {
    /// Asks for a run of the live key `key` as soon as possible; true if the ready queue was
    /// empty before (the runner may be asleep).
    fn trigger(&mut self, state: &mut KeyState, key: impl FnOnce() -> K) -> bool {
        if let Some(timer) = state.timer.take() {
            self.timers.remove(&timer);
        }
        if !state.pending {
            state.pending = true;
            self.pending += 1;
        }
        if state.running || state.queued {
            return false;
        }
        state.queued = true;
        let was_empty = self.ready.is_empty();
        self.ready.push_back(key());
        was_empty
    }

    /// Marks `key` dead; its entry goes at once unless it is queued or running.
    fn forget(&mut self, keys: &mut HashMap<K, KeyState>, key: &K) {
        let Some(state) = keys.get_mut(key) else {
            return;
        };
        state.live = false;
        state.enqueued = 0;
        state.failures = 0;
        if std::mem::take(&mut state.pending) {
            self.pending -= 1;
        }
        if let Some(timer) = state.timer.take() {
            self.timers.remove(&timer);
        }
        if !state.queued && !state.running {
            keys.remove(key);
        }
    }

    /// Runs `key` at `at`, unless it is already due to run sooner.
    fn schedule(&mut self, state: &mut KeyState, key: K, at: Instant) {
        match &state.timer {
            Some(timer) if self.timers.deadline(timer) <= at => {}
            Some(timer) => self.timers.reset_at(timer, at),
            None => state.timer = Some(self.timers.insert_at(key, at)),
        }
    }
}

/// The state of `key`, made live if it was not (a dead entry revives with fresh counters).
fn live<'k, K: Clone + Eq + Hash>(keys: &'k mut HashMap<K, KeyState>, key: &K) -> &'k mut KeyState {
    // Two lookups rather than `entry`, which would clone the key on every call.
    if !keys.contains_key(key) {
        keys.insert(key.clone(), KeyState::default());
    }
    let state = keys.get_mut(key).expect("inserted above");
    if !state.live {
        *state = KeyState {
            live: true,
            queued: state.queued,
            running: state.running,
            ..KeyState::default()
        };
    }
    state
}

impl<K> Default for WorkQueue<K> {
    fn default() -> Self {
        Self {
            state: Mutex::new(State {
                keys: HashMap::new(),
                runs: Runs {
                    ready: VecDeque::new(),
                    timers: DelayQueue::new(),
                    pending: 0,
                    published: 0,
                },
            }),
            wake: Notify::new(),
            depth: OnceLock::new(),
        }
    }
}

/// The lock of a [`WorkQueue`]; publishes the queue depth when released.
struct Guard<'q, K> {
    state: MutexGuard<'q, State<K>>,
    depth: &'q OnceLock<Gauge>,
}

impl<K> Drop for Guard<'_, K> {
    fn drop(&mut self) {
        let runs = &mut self.state.runs;
        if runs.pending != runs.published
            && let Some(depth) = self.depth.get()
        {
            depth.inc_by(runs.pending - runs.published);
            runs.published = runs.pending;
        }
    }
}

impl<K: Clone + Eq + Hash + Send + 'static> WorkQueue<K> {
    fn lock(&self) -> Guard<'_, K> {
        Guard {
            state: self.state.lock().expect("work queue lock"),
            depth: &self.depth,
        }
    }

    /// Makes `key` live, counts an enqueue and runs it as soon as possible.
    pub(crate) fn enqueue(&self, key: &K) {
        let mut guard = self.lock();
        let State { keys, runs } = &mut *guard.state;
        let state = live(keys, key);
        state.enqueued = state.enqueued.wrapping_add(1);
        let wake = runs.trigger(state, || key.clone());
        drop(guard);
        if wake {
            self.wake.notify_one();
        }
    }

    /// Runs `key` as soon as possible if `exists` says an object behind it is still there,
    /// else forgets it; `exists` is asked under the queue's lock, so no enqueue of `key` can
    /// come between the answer and the removal.
    pub(crate) fn trigger_or_forget(&self, key: &K, exists: impl FnOnce(&K) -> bool) {
        let mut guard = self.lock();
        let State { keys, runs } = &mut *guard.state;
        if !exists(key) {
            runs.forget(keys, key);
            return;
        }
        let wake = runs.trigger(live(keys, key), || key.clone());
        drop(guard);
        if wake {
            self.wake.notify_one();
        }
    }

    /// After a (re-)list: makes every key of `listed` live and runs every live key, which for
    /// synced pairs writes nothing. Keys already live stay until their run: a fake syncer's
    /// triggers name objects that do not exist yet, and a key whose objects are really gone
    /// is forgotten after its (no-op) reconcile.
    pub(crate) fn relist(&self, listed: impl IntoIterator<Item = K>) {
        let mut guard = self.lock();
        let State { keys, runs } = &mut *guard.state;
        for key in listed {
            live(keys, &key);
        }
        keys.shrink_to_fit();
        let mut wake = false;
        for (key, state) in keys.iter_mut().filter(|(_, state)| state.live) {
            wake |= runs.trigger(state, || key.clone());
        }
        drop(guard);
        if wake {
            self.wake.notify_one();
        }
    }

    /// After a reconcile of `key` that succeeded, having started at `enqueued` enqueues: resets
    /// its failures and, unless it was enqueued meanwhile, forgets it if `exists` says nothing
    /// is behind it any more (asked under the lock, as in [`WorkQueue::trigger_or_forget`]).
    pub(crate) fn succeeded(&self, key: &K, enqueued: u32, exists: impl FnOnce(&K) -> bool) {
        let mut guard = self.lock();
        let State { keys, runs } = &mut *guard.state;
        let Some(state) = keys.get_mut(key).filter(|state| state.live) else {
            return;
        };
        state.failures = 0;
        if state.enqueued != enqueued {
            return;
        }
        state.enqueued = 0;
        if !exists(key) {
            runs.forget(keys, key);
        }
    }

    /// After a failed reconcile of `key`: how many failed in a row.
    pub(crate) fn failed(&self, key: &K) -> u32 {
        let mut guard = self.lock();
        match guard.state.keys.get_mut(key).filter(|state| state.live) {
            Some(state) => {
                state.failures = state.failures.saturating_add(1);
                state.failures
            }
            None => 1,
        }
    }

    /// The next key to run and its enqueues so far, now marked running; dead keys are dropped.
    fn start_next(&self) -> Option<(K, u32)> {
        let mut guard = self.lock();
        let State { keys, runs } = &mut *guard.state;
        loop {
            let key = runs.ready.pop_front()?;
            let state = keys.get_mut(&key).expect("a queued key has an entry");
            state.queued = false;
            if !state.live {
                keys.remove(&key);
                continue;
            }
            state.running = true;
            if std::mem::take(&mut state.pending) {
                runs.pending -= 1;
            }
            return Some((key, state.enqueued));
        }
    }

    /// `key`'s run ended, asking to run again after `requeue`: it runs again at once if it was
    /// triggered meanwhile; a dead key's entry goes.
    fn finished(&self, key: K, requeue: Option<Duration>) {
        let mut guard = self.lock();
        let State { keys, runs } = &mut *guard.state;
        let state = keys.get_mut(&key).expect("a running key has an entry");
        state.running = false;
        if !state.live {
            keys.remove(&key);
        } else if state.pending {
            state.queued = true;
            runs.ready.push_back(key);
        } else if let Some(after) = requeue {
            runs.schedule(state, key, Instant::now() + after);
        }
    }

    /// Moves the keys whose requeue is due to the ready queue; ready if there was any.
    fn poll_timers(&self, cx: &mut Context<'_>) -> Poll<()> {
        let mut guard = self.lock();
        let State { keys, runs } = &mut *guard.state;
        let mut fired = false;
        // `Ready(None)` (no timer) leaves the waker registered, for the next insert.
        while let Poll::Ready(Some(expired)) = runs.timers.poll_expired(cx) {
            let key = expired.into_inner();
            let state = keys.get_mut(&key).expect("a timer's key has an entry");
            state.timer = None;
            // A due requeue is not a trigger: it joins the ready queue without counting in
            // the queue depth (`vcsync_queue_depth` leaves retries out).
            if !state.running && !state.queued {
                state.queued = true;
                runs.ready.push_back(key);
                fired = true;
            }
        }
        if fired { Poll::Ready(()) } else { Poll::Pending }
    }

    /// Runs `reconcile` for the keys triggered (and the requeues it asks for) until
    /// `shutdown` resolves, then lets the reconciles in flight finish. `reconcile` gets the
    /// key and its enqueues at the start (for [`WorkQueue::succeeded`]) and returns when to
    /// run the key again without a trigger, if at all. `depth` becomes the queue-depth gauge.
    pub(crate) async fn run<F>(
        &self,
        concurrency: usize,
        depth: Gauge,
        shutdown: impl Future<Output = ()>,
        reconcile: F,
    ) where
        F: Fn(K, u32) -> BoxFuture<'static, Option<Duration>>,
    {
        if self.depth.set(depth).is_ok() {
            drop(self.lock()); // publishes what was queued before the start
        }
        let limit = if concurrency == 0 { usize::MAX } else { concurrency };
        let mut in_flight = FuturesUnordered::new();
        let mut shutdown = std::pin::pin!(shutdown.fuse());
        let mut stopping = false;
        loop {
            while !stopping && in_flight.len() < limit {
                let Some((key, enqueued)) = self.start_next() else {
                    break;
                };
                let run = reconcile(key.clone(), enqueued);
                in_flight.push(async move { (key, run.await) });
            }
            if stopping && in_flight.is_empty() {
                return;
            }
            tokio::select! {
                biased;
                () = &mut shutdown, if !stopping => stopping = true,
                Some((key, requeue)) = in_flight.next(), if !in_flight.is_empty() => {
                    self.finished(key, requeue);
                }
                () = self.wake.notified(), if !stopping => {}
                () = std::future::poll_fn(|cx| self.poll_timers(cx)), if !stopping => {}
            }
        }
    }

    /// Whether `key` is live.
    #[cfg(test)]
    pub(crate) fn is_live(&self, key: &K) -> bool {
        self.lock().state.keys.get(key).is_some_and(|state| state.live)
    }

    /// Entries held (live keys and dead ones still queued or running).
    #[cfg(test)]
    pub(crate) fn entries(&self) -> usize {
        self.lock().state.keys.len()
    }
}

#[cfg(test)]
#[path = "work_queue_tests.rs"]
mod tests;
