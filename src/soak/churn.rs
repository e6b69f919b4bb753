//! The churn phase: the plan's operations applied to the virtual cluster while the syncer is
//! SIGKILLed at random points (also during its start-up) and restarted, and the virtual cluster
//! replaced by an empty one where the plan says.

use std::{
    collections::{BTreeMap, BTreeSet},
    time::{Duration, Instant},
};

use vcsync_syncer::Config;

use super::{
    args::{HOST_NAMESPACE, INSTANCE, SoakArgs},
    check::Observed,
    clusters::{create_foreign, list_all},
    earlier,
    objects::apply_with_retries,
    pair::Clusters,
    plan::{Key, Op, Rng},
    syncer::SyncerProcess,
};

/// SIGKILLs of the syncer, by whether its controllers had started.
#[derive(Default)]
pub(super) struct Kills {
    pub(super) total: usize,
    pub(super) after_startup: usize,
    pub(super) during_startup: usize,
}

impl Kills {
    /// SIGKILLs the syncer if it runs; returns whether it did.
    pub(super) fn kill(&mut self, syncer: &mut SyncerProcess) -> bool {
        syncer.reap_crash();
        if !syncer.running() {
            return false;
        }
        if syncer.kill() {
            self.after_startup += 1;
        } else {
            self.during_startup += 1;
        }
        self.total += 1;
        true
    }
}

/// What the churn did besides its operations.
pub(super) struct Churned {
    pub(super) kills: Kills,
    /// The foreign host objects, as created before the syncer first ran.
    pub(super) foreign: BTreeMap<Key, Observed>,
    /// Host copies made for the clusters the empty restarts replaced, as they were then.
    pub(super) earlier: BTreeMap<Key, Observed>,
    pub(super) empty_restarts: usize,
    pub(super) duration: Duration,
}

/// Creates the foreign host objects, then applies `ops` with `args.kills` SIGKILLs of `syncer`
/// at operation indices drawn from `seed`.
pub(super) async fn churn(
    args: &SoakArgs,
    seed: u64,
    ops: &[Op],
    clusters: &mut Clusters,
    virtual_namespaces: &BTreeSet<String>,
    syncer: &mut SyncerProcess,
) -> anyhow::Result<Churned> {
    let config = Config::new(INSTANCE, HOST_NAMESPACE);
    // A second stream for everything but the plan, so the plan of a seed does not depend on
    // the other flags.
    let mut rng = Rng(seed ^ 0x5eed_cafe_f00d_d00d);
    let foreign = create_foreign(&clusters.host, &config, ops, &mut rng).await?;

    // Kill points: distinct operation indices; after a kill the syncer stays down for a few
    // operations, so that some changes happen while nobody watches.
    let mut kill_points = BTreeSet::new();
    while kill_points.len() < args.kills.min(ops.len()) {
        kill_points.insert(rng.below(ops.len()));
    }
    let mut kills = Kills::default();
    let mut scheduled_kills = 0;
    let mut earlier = BTreeMap::new();
    let mut empty_restarts = 0;
    // After a kill the syncer stays down for a few operations (`restart_at`), or (30%) until the
    // next kill point, which then starts it and kills it during its start-up.
    let mut restart_at: Option<usize> = None;
    let mut startup_kill_next = false;
    syncer.start()?;
    let start = Instant::now();
    for (i, op) in ops.iter().enumerate() {
        syncer.reap_crash();
        let kill_here = kill_points.contains(&i);
        if !syncer.running() && (kill_here || restart_at.is_none_or(|at| i >= at) && !startup_kill_next) {
            syncer.start()?;
            restart_at = None;
        }
        if kill_here {
            if startup_kill_next {
                // Within its first moments: listing, filling caches, starting controllers.
                tokio::time::sleep(Duration::from_millis(rng.below(40) as u64)).await;
            } else if rng.chance(50) {
                // Otherwise half the kills land mid-churn, half after a pause (catching up or idle).
                tokio::time::sleep(Duration::from_millis(rng.below(1500) as u64)).await;
            }
            if kills.kill(syncer) {
                scheduled_kills += 1;
                eprintln!(
                    "vcsync soak: SIGKILL {scheduled_kills}/{} at operation {i}/{}",
                    args.kills,
                    ops.len()
                );
            }
            startup_kill_next = rng.chance(30);
            restart_at = (!startup_kill_next).then(|| i + rng.below(30));
        }
        if *op == Op::EmptyVirtualRestart {
            // The syncer goes down with the control plane; when it comes back (at the next
            // operation if it was running, else as scheduled) the virtual cluster is empty.
            kills.kill(syncer);
            earlier::record(&config, &list_all(&clusters.host, None).await?, &mut earlier);
            clusters.replace_virtual_empty(virtual_namespaces).await?;
            empty_restarts += 1;
            eprintln!(
                "vcsync soak: the virtual cluster restarted empty at operation {i}/{} ({} earlier copies)",
                ops.len(),
                earlier.len()
            );
        } else {
            apply_with_retries(&clusters.virt, op).await?;
        }
        if args.pace_ms > 0 {
            tokio::time::sleep(Duration::from_millis(args.pace_ms)).await;
        }
    }
    Ok(Churned {
        kills,
        foreign,
        earlier,
        empty_restarts,
        duration: start.elapsed(),
    })
}
