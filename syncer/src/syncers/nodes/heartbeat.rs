//! Keeping vcsync's virtual nodes alive the way a kubelet does: one background task renews
//! every node's Lease in `kube-node-lease` each `leaseRenewSeconds` and refreshes the status
//! conditions' `lastHeartbeatTime` each `statusRefreshSeconds`, so the virtual cluster's
//! node-lifecycle controller can stay enabled and never marks them unreachable.
//!
//! These are the one deliberate periodic write of vcsync (N nodes cost N / renew-interval
//! Lease writes per second plus N / refresh-interval status writes); benchmarks that count
//! writes subtract them.
//!
//! The task ticks several times per renew interval and asks, per node, whether a renewal or a
//! refresh is due: due means the last one (the later of what the cache shows and what this
//! task wrote, so a lagging cache causes no double write) is at least one interval old. The
//! cached times make a restart over fresh leases write nothing until they are due; a failed
//! write is simply due again at the next tick.

use std::{
    collections::{HashMap, HashSet},
    sync::Arc,
    time::Duration,
};

use async_trait::async_trait;
use futures::StreamExt;
use jiff::{SignedDuration, Timestamp};

use crate::{config::NodesConfig, error::Result};

/// Renewals and refreshes run at once, so a thousand nodes do not renew one after another.
const CONCURRENT_WRITES: usize = 16;

/// Intervals of the heartbeat, from the `sync.nodes` configuration.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HeartbeatConfig {
    /// Time between Lease renewals of a node.
    pub renew: Duration,
    /// `leaseDurationSeconds` written into each Lease.
    pub lease_duration_seconds: i32,
    /// Time between status heartbeat refreshes of a node.
    pub status_refresh: Duration,
}

impl HeartbeatConfig {
    /// From the configuration; zero intervals are raised to one second.
    pub fn from_config(config: &NodesConfig) -> Self {
        Self {
            renew: Duration::from_secs(config.lease_renew_seconds.max(1).into()),
            lease_duration_seconds: i32::try_from(config.lease_duration_seconds.max(1)).unwrap_or(i32::MAX),
            status_refresh: Duration::from_secs(config.status_refresh_seconds.max(1).into()),
        }
    }

    /// How often the task looks for due work: a quarter of the renew interval, between 100 ms
    /// and 1 s, so a renewal is at most that late.
    pub fn tick(&self) -> Duration {
        (self.renew / 4).clamp(Duration::from_millis(100), Duration::from_secs(1))
    }

    /// How long a Lease stays valid.
    pub fn lease_duration(&self) -> Duration {
        Duration::from_secs(self.lease_duration_seconds.max(0) as u64)
    }
}

/// One node as the heartbeat sees it at a tick.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeBeat {
    /// Node name (also the Lease name).
    pub node: String,
    /// `renewTime` of its Lease in the cache, if it has one.
    pub lease_renewed: Option<Timestamp>,
    /// Latest `lastHeartbeatTime` of its conditions in the cache.
    pub status_heartbeat: Option<Timestamp>,
}

/// The work due at one tick.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DueWork {
    /// Nodes whose Lease needs renewing (or creating).
    pub leases: Vec<String>,
    /// Nodes whose status heartbeat needs refreshing.
    pub statuses: Vec<String>,
}

/// When each node was last renewed and refreshed by this task.
#[derive(Debug)]
pub struct Schedule {
    config: HeartbeatConfig,
    leases_written: HashMap<String, Timestamp>,
    statuses_written: HashMap<String, Timestamp>,
}

impl Schedule {
    /// A schedule that has written nothing yet.
    pub fn new(config: HeartbeatConfig) -> Self {
        Self {
            config,
            leases_written: HashMap::new(),
            statuses_written: HashMap::new(),
        }
    }

    /// What is due at `now` for `beats`; forgets nodes that are no longer among them.
    pub fn due(&mut self, now: Timestamp, beats: &[NodeBeat]) -> DueWork {
        let present: HashSet<&str> = beats.iter().map(|b| b.node.as_str()).collect();
        self.leases_written
            .retain(|node, _| present.contains(node.as_str()));
        self.statuses_written
            .retain(|node, _| present.contains(node.as_str()));
        let mut work = DueWork::default();
        for beat in beats {
            let lease_last = later(beat.lease_renewed, self.leases_written.get(&beat.node).copied());
            if is_due(now, lease_last, self.config.renew) {
                work.leases.push(beat.node.clone());
            }
            let status_last = later(
                beat.status_heartbeat,
                self.statuses_written.get(&beat.node).copied(),
            );
            if is_due(now, status_last, self.config.status_refresh) {
                work.statuses.push(beat.node.clone());
            }
        }
        work
    }

    /// Records a successful Lease renewal of `node` at `at`.
    pub fn lease_renewed(&mut self, node: &str, at: Timestamp) {
        self.leases_written.insert(node.to_string(), at);
    }

    /// Records a successful status refresh of `node` at `at`.
    pub fn status_refreshed(&mut self, node: &str, at: Timestamp) {
        self.statuses_written.insert(node.to_string(), at);
    }
}

fn later(a: Option<Timestamp>, b: Option<Timestamp>) -> Option<Timestamp> {
    a.max(b)
}

/// Due when never done, when `interval` has passed, or when the last time lies more than an
/// interval in the future (a clock that jumped back must not stop the heartbeat).
pub fn is_due(now: Timestamp, last: Option<Timestamp>, interval: Duration) -> bool {
    let Some(last) = last else { return true };
    let interval = SignedDuration::try_from(interval).unwrap_or(SignedDuration::MAX);
    let age = now.duration_since(last);
    age >= interval || -age > interval
}

/// Where the heartbeat reads nodes from and writes to: the virtual cluster in production
/// ([`super::leases::VirtualHeartbeat`]), a recorder in tests.
#[async_trait]
pub trait HeartbeatTarget: Send + Sync {
    /// The nodes to keep alive now.
    fn beats(&self) -> Vec<NodeBeat>;

    /// Renews (or creates) the Lease of `node` with `renewTime` `now`.
    async fn renew_lease(&self, node: &str, now: Timestamp) -> Result<()>;

    /// Sets the heartbeat time of `node`'s conditions to `now`.
    async fn refresh_status(&self, node: &str, now: Timestamp) -> Result<()>;

    /// Removes what outlived its node (expired Leases, say); runs every tick.
    async fn collect_garbage(&self, _now: Timestamp) {}
}

/// A source of the current time, so tests can run on tokio's paused clock.
pub type Clock = Arc<dyn Fn() -> Timestamp + Send + Sync>;

/// The wall clock.
pub fn system_clock() -> Clock {
    Arc::new(Timestamp::now)
}

/// Runs the heartbeat until the task is dropped.
pub async fn run(config: HeartbeatConfig, target: impl HeartbeatTarget, clock: Clock) {
    let mut schedule = Schedule::new(config);
    let mut failing: HashSet<(&'static str, String)> = HashSet::new();
    let mut ticks = tokio::time::interval(config.tick());
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tracing::info!(
        renew = ?config.renew,
        lease_duration_seconds = config.lease_duration_seconds,
        status_refresh = ?config.status_refresh,
        "node heartbeat started"
    );
    loop {
        ticks.tick().await;
        let now = clock();
        let work = schedule.due(now, &target.beats());
        let target = &target;
        let leases: Vec<(String, Result<()>)> = futures::stream::iter(work.leases)
            .map(|node| async move {
                let result = target.renew_lease(&node, now).await;
                (node, result)
            })
            .buffer_unordered(CONCURRENT_WRITES)
            .collect()
            .await;
        for (node, result) in leases {
            if report(&mut failing, "renew lease", &node, result) {
                schedule.lease_renewed(&node, now);
            }
        }
        let statuses: Vec<(String, Result<()>)> = futures::stream::iter(work.statuses)
            .map(|node| async move {
                let result = target.refresh_status(&node, now).await;
                (node, result)
            })
            .buffer_unordered(CONCURRENT_WRITES)
            .collect()
            .await;
        for (node, result) in statuses {
            if report(&mut failing, "refresh status", &node, result) {
                schedule.status_refreshed(&node, now);
            }
        }
        target.collect_garbage(now).await;
    }
}

/// Logs a failure once per streak (the next tick retries, and a warning per tick would
/// drown the log); returns whether the write succeeded.
fn report(
    failing: &mut HashSet<(&'static str, String)>,
    what: &'static str,
    node: &str,
    result: Result<()>,
) -> bool {
    let key = (what, node.to_string());
    match result {
        Ok(()) => {
            if failing.remove(&key) {
                tracing::info!(node, "{what} works again");
            }
            true
        }
        Err(err) if err.is_conflict() => {
            tracing::debug!(node, error = %err, "{what}: conflict; retrying at the next tick");
            false
        }
        Err(err) => {
            if failing.insert(key) {
                tracing::warn!(node, error = %err, "{what} failed; retrying every tick");
            } else {
                tracing::debug!(node, error = %err, "{what} failed again");
            }
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use rstest::rstest;

    use super::*;
    use crate::error::Error;

    fn config(renew: u64, refresh: u64) -> HeartbeatConfig {
        HeartbeatConfig {
            renew: Duration::from_secs(renew),
            lease_duration_seconds: 40,
            status_refresh: Duration::from_secs(refresh),
        }
    }

    fn at(seconds: i64) -> Timestamp {
        Timestamp::from_second(1_700_000_000 + seconds).unwrap()
    }

    fn beat(node: &str, lease: Option<i64>, status: Option<i64>) -> NodeBeat {
        NodeBeat {
            node: node.to_string(),
            lease_renewed: lease.map(at),
            status_heartbeat: status.map(at),
        }
    }

    #[rstest]
    #[case::never(None, 0, true)]
    #[case::fresh(Some(5), 10, false)]
    #[case::just_due(Some(0), 10, true)]
    #[case::overdue(Some(-30), 10, true)]
    #[case::slightly_in_the_future(Some(15), 10, false)]
    #[case::clock_jumped_back(Some(100), 10, true)]
    fn due_rule(#[case] last: Option<i64>, #[case] now: i64, #[case] due: bool) {
        assert_eq!(
            is_due(at(now), last.map(at), Duration::from_secs(10)),
            due,
            "last {last:?} now {now}"
        );
    }

    #[rstest]
    #[case::default(10, Duration::from_secs(1))]
    #[case::one_second(1, Duration::from_millis(250))]
    #[case::long(3600, Duration::from_secs(1))]
    fn tick_is_a_quarter_of_the_renew_interval_within_bounds(#[case] renew: u64, #[case] tick: Duration) {
        assert_eq!(config(renew, 60).tick(), tick);
    }

    #[test]
    fn config_from_file_values() {
        let mut nodes = NodesConfig::default();
        assert_eq!(HeartbeatConfig::from_config(&nodes), config(10, 60));
        nodes.lease_renew_seconds = 0;
        nodes.status_refresh_seconds = 0;
        let raised = HeartbeatConfig::from_config(&nodes);
        assert_eq!(
            (raised.renew, raised.status_refresh),
            (Duration::from_secs(1), Duration::from_secs(1))
        );
    }

    #[test]
    fn a_new_node_is_due_for_both() {
        let mut schedule = Schedule::new(config(10, 60));
        let work = schedule.due(at(0), &[beat("n1", None, None)]);
        assert_eq!(work.leases, ["n1"]);
        assert_eq!(work.statuses, ["n1"]);
    }

    #[test]
    fn fresh_cached_times_after_a_restart_write_nothing() {
        let mut schedule = Schedule::new(config(10, 60));
        let work = schedule.due(at(100), &[beat("n1", Some(95), Some(70))]);
        assert_eq!(work, DueWork::default());
        let work = schedule.due(at(105), &[beat("n1", Some(95), Some(70))]);
        assert_eq!(work.leases, ["n1"]);
        assert!(work.statuses.is_empty());
    }

    #[test]
    fn a_write_not_yet_in_the_cache_is_not_repeated() {
        let mut schedule = Schedule::new(config(10, 60));
        schedule.lease_renewed("n1", at(100));
        schedule.status_refreshed("n1", at(100));
        // The cache still shows the previous renewal.
        let work = schedule.due(at(101), &[beat("n1", Some(90), Some(40))]);
        assert_eq!(work, DueWork::default());
    }

    #[test]
    fn nodes_that_vanish_are_forgotten() {
        let mut schedule = Schedule::new(config(10, 60));
        schedule.lease_renewed("gone", at(100));
        schedule.due(at(101), &[]);
        let work = schedule.due(at(102), &[beat("gone", None, Some(102))]);
        assert_eq!(work.leases, ["gone"], "a node that comes back starts afresh");
    }

    #[test]
    fn each_node_has_its_own_cadence() {
        let mut schedule = Schedule::new(config(10, 60));
        let beats = [beat("a", Some(0), Some(0)), beat("b", Some(5), Some(0))];
        assert_eq!(schedule.due(at(10), &beats).leases, ["a"]);
        assert_eq!(schedule.due(at(15), &beats).leases, ["a", "b"]);
    }

    /// Records writes; fails the first `fail_first` lease renewals.
    struct Recorder {
        nodes: Vec<String>,
        leases: Mutex<Vec<(String, Timestamp)>>,
        statuses: Mutex<Vec<(String, Timestamp)>>,
        fail_first: Mutex<usize>,
    }

    impl Recorder {
        fn new(nodes: &[&str], fail_first: usize) -> Arc<Self> {
            Arc::new(Self {
                nodes: nodes.iter().map(|n| n.to_string()).collect(),
                leases: Mutex::default(),
                statuses: Mutex::default(),
                fail_first: Mutex::new(fail_first),
            })
        }

        fn lease_seconds(&self, node: &str, start: Timestamp) -> Vec<i64> {
            self.leases
                .lock()
                .unwrap()
                .iter()
                .filter(|(n, _)| n == node)
                .map(|(_, t)| t.duration_since(start).as_secs())
                .collect()
        }

        fn status_seconds(&self, start: Timestamp) -> Vec<i64> {
            self.statuses
                .lock()
                .unwrap()
                .iter()
                .map(|(_, t)| t.duration_since(start).as_secs())
                .collect()
        }
    }

    #[async_trait]
    impl HeartbeatTarget for Arc<Recorder> {
        fn beats(&self) -> Vec<NodeBeat> {
            self.nodes.iter().map(|n| beat(n, None, None)).collect()
        }

        async fn renew_lease(&self, node: &str, now: Timestamp) -> Result<()> {
            let mut fail = self.fail_first.lock().unwrap();
            if *fail > 0 {
                *fail -= 1;
                return Err(Error::Registration {
                    name: "test".into(),
                    reason: "injected".into(),
                });
            }
            self.leases.lock().unwrap().push((node.to_string(), now));
            Ok(())
        }

        async fn refresh_status(&self, node: &str, now: Timestamp) -> Result<()> {
            self.statuses.lock().unwrap().push((node.to_string(), now));
            Ok(())
        }
    }

    /// Wall time that follows tokio's (paused) clock.
    fn paused_clock(start: Timestamp) -> Clock {
        let origin = tokio::time::Instant::now();
        Arc::new(move || start + origin.elapsed())
    }

    #[tokio::test(start_paused = true)]
    async fn leases_renew_every_interval_and_status_every_refresh() {
        let recorder = Recorder::new(&["n1", "n2"], 0);
        let task = tokio::spawn(run(config(10, 60), recorder.clone(), paused_clock(at(0))));
        tokio::time::sleep(Duration::from_millis(65_500)).await;
        task.abort();
        for node in ["n1", "n2"] {
            assert_eq!(recorder.lease_seconds(node, at(0)), [0, 10, 20, 30, 40, 50, 60]);
        }
        assert_eq!(recorder.status_seconds(at(0)), [0, 0, 60, 60]);
    }

    #[tokio::test(start_paused = true)]
    async fn one_second_leases_renew_every_second() {
        let recorder = Recorder::new(&["n1"], 0);
        let task = tokio::spawn(run(config(1, 60), recorder.clone(), paused_clock(at(0))));
        tokio::time::sleep(Duration::from_millis(5_100)).await;
        task.abort();
        assert_eq!(recorder.lease_seconds("n1", at(0)), [0, 1, 2, 3, 4, 5]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_failed_renewal_is_retried_at_the_next_tick() {
        let recorder = Recorder::new(&["n1"], 2);
        let task = tokio::spawn(run(config(10, 60), recorder.clone(), paused_clock(at(0))));
        tokio::time::sleep(Duration::from_millis(12_500)).await;
        task.abort();
        // Failed at 0 s and 1 s, renewed at 2 s, next due at 12 s.
        assert_eq!(recorder.lease_seconds("n1", at(0)), [2, 12]);
    }
}
