//! `vcsync soak`: a bounded crash-consistency soak of the syncer.
//!
//! Starts a host and a virtual embedded API server in this process, runs `vcsync run` as a child
//! process between them, and drives a seeded create/update/delete churn of ConfigMaps and Secrets
//! over several virtual namespaces while killing the child with SIGKILL at random points and
//! restarting it. Foreign host objects (not this instance's, some at the very names the syncer
//! would use) are created first. After the churn the syncer is killed and restarted a last time,
//! and once it has converged (bounded wait) the state is checked:
//!
//! - every virtual object has exactly one host copy, under the translated name, with the virtual
//!   object's data, labels and UID (a virtual object whose host name is held by a foreign object
//!   has none, by design: it is counted as blocked);
//! - no owned host object without a virtual twin (orphans), none under a wrong name (duplicates);
//! - every foreign host object still exists with its original resourceVersion;
//! - the virtual objects are exactly what the churn made (the syncer never rewrote them);
//! - the syncer never exited on its own.
//!
//! With `--empty-virtual-restarts N` the virtual API server is also replaced N times by an empty
//! one at random points of the churn (the syncer SIGKILLed first, restarted after), as a virtual
//! control plane whose datastore was lost comes back ([`earlier`]); the churn goes on in the new
//! cluster. The final check then also demands that every host copy made for an earlier cluster
//! is still there as it was when its cluster was replaced (and is no orphan), and a last run
//! with `safety.earlierCopies.prune` must delete those copies and nothing else.
//!
//! The report is a table or JSON; any violation makes the command fail.

mod check;
mod clusters;
mod earlier;
mod plan;
mod report;
mod syncer;

use std::{
    collections::{BTreeMap, BTreeSet},
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use anyhow::{Context, bail};
use k8s_openapi::serde_json;
use vcsync_apiserver::ApiServer;
use vcsync_syncer::Config;

use check::check;
use clusters::{apply_with_retries, create_foreign, list_all, snapshot};
use earlier::Virtual;
use plan::{Op, Rng, final_state, plan, virtual_namespace};
use report::{PruneReport, Report};
use syncer::SyncerProcess;

/// Instance name of the soaked syncer.
const INSTANCE: &str = "soak";
/// Host namespace of the soaked syncer.
const HOST_NAMESPACE: &str = "vcsync-soak";
/// Foreign host objects at names the syncer would use for virtual objects of the churn.
const FOREIGN_COLLISIONS: usize = 6;
/// Foreign host objects at unrelated names.
const FOREIGN_OTHERS: usize = 6;
/// Examples of each kind of violation kept in the report.
const EXAMPLES: usize = 5;

/// Flags of `vcsync soak`.
#[derive(Debug, clap::Args)]
pub struct SoakArgs {
    /// Distinct virtual objects (ConfigMaps and Secrets) the churn creates.
    #[arg(long, default_value_t = 1000)]
    pub objects: usize,
    /// SIGKILLs of the syncer at random points of the churn (one more precedes the final run).
    #[arg(long, default_value_t = 20)]
    pub kills: usize,
    /// Seed of the churn and of the kill schedule (default: from the clock; the report prints it).
    #[arg(long)]
    pub seed: Option<u64>,
    /// Virtual namespaces the objects are spread over.
    #[arg(long, default_value_t = 4)]
    pub namespaces: usize,
    /// Pause between two churn operations, in milliseconds.
    #[arg(long, default_value_t = 2)]
    pub pace_ms: u64,
    /// Times the virtual API server is replaced by an empty one (a lost datastore) at random
    /// points of the churn; then a last run prunes the earlier clusters' host copies.
    #[arg(long, default_value_t = 0)]
    pub empty_virtual_restarts: usize,
    /// Bound of the wait for convergence after the final restart (and after the prune run), in
    /// seconds.
    #[arg(long, default_value_t = 120)]
    pub timeout: u64,
    /// Directory for the kubeconfigs, vcsync.yaml and the syncer's log (default: a fresh
    /// temporary directory, removed when the soak passes).
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
}

/// Runs the soak; fails when any invariant does not hold.
pub async fn run(args: SoakArgs) -> anyhow::Result<()> {
    let seed = args.seed.unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(1)
    });
    let namespaces = args.namespaces.max(1);
    let (dir, temporary) = match &args.dir {
        Some(dir) => (dir.clone(), false),
        None => (
            std::env::temp_dir().join(format!("vcsync-soak-{}-{seed}", std::process::id())),
            true,
        ),
    };
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    eprintln!(
        "vcsync soak: seed {seed}, {} objects, {} kills, {} empty virtual restarts; files in {}",
        args.objects,
        args.kills,
        args.empty_virtual_restarts,
        dir.display()
    );

    let (host_server, virt_server) = crate::dev::start_servers("virtual").await?;
    let mut virt = Virtual::new(virt_server, dir.join("virtual.kubeconfig"))?;
    let result = soak(&args, seed, namespaces, &dir, &host_server, &mut virt).await;
    virt.server.shutdown().await;
    host_server.shutdown().await;
    let report = result?;

    if args.json {
        println!("{}", serde_json::to_string_pretty(&report.to_json())?);
    } else {
        print!("{}", report.to_text());
    }
    let violations = report.violations();
    if violations > 0 {
        bail!(
            "soak failed: {violations} violations (seed {seed}; syncer log in {})",
            dir.join("syncer.log").display()
        );
    }
    if temporary {
        let _ = std::fs::remove_dir_all(&dir);
    }
    Ok(())
}

/// SIGKILLs of the syncer, by whether its controllers had started.
#[derive(Default)]
struct Kills {
    total: usize,
    after_startup: usize,
    during_startup: usize,
}

impl Kills {
    /// SIGKILLs the syncer if it runs; returns whether it did.
    fn kill(&mut self, syncer: &mut SyncerProcess) -> bool {
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

async fn soak(
    args: &SoakArgs,
    seed: u64,
    namespaces: usize,
    dir: &Path,
    host_server: &ApiServer,
    virt: &mut Virtual,
) -> anyhow::Result<Report> {
    let host_kubeconfig = dir.join("host.kubeconfig");
    crate::dev::write(&host_kubeconfig, &host_server.kubeconfig())?;
    let host = crate::cluster_pair::client(&host_server.url())?;

    let config = Config::new(INSTANCE, HOST_NAMESPACE);
    let config_path = dir.join("vcsync.yaml");
    let config_text = format!(
        "instance: {INSTANCE}\nhostNamespace: {HOST_NAMESPACE}\nhost:\n  kubeconfig: {}\n\
         virtual:\n  kubeconfig: {}\nsync:\n  configMaps:\n    all: true\n  secrets:\n    all: true\n",
        host_kubeconfig.display(),
        virt.kubeconfig.display()
    );
    crate::dev::write(&config_path, &config_text)?;
    // The last run's: earlier clusters' copies deleted.
    let prune_config_path = dir.join("vcsync-prune.yaml");
    crate::dev::write(
        &prune_config_path,
        &format!("{config_text}safety:\n  earlierCopies:\n    prune: true\n"),
    )?;

    crate::dev::create_namespace(&host, HOST_NAMESPACE).await?;
    let virtual_namespaces: BTreeSet<String> = (0..namespaces).map(virtual_namespace).collect();
    virt.create_namespaces(&virtual_namespaces).await?;

    let ops = plan(seed, args.objects, namespaces, args.empty_virtual_restarts);
    let expected = final_state(&ops);
    // A second stream for everything but the plan, so the plan of a seed does not depend on
    // the other flags.
    let mut rng = Rng(seed ^ 0x5eed_cafe_f00d_d00d);
    let foreign = create_foreign(&host, &config, &ops, &mut rng).await?;

    // Kill points: distinct operation indices; after a kill the syncer stays down for a few
    // operations, so that some changes happen while nobody watches.
    let mut kill_points: Vec<usize> = Vec::new();
    if !ops.is_empty() {
        let mut set = BTreeSet::new();
        while set.len() < args.kills.min(ops.len()) {
            set.insert(rng.below(ops.len()));
        }
        kill_points = set.into_iter().collect();
    }
    let log = std::fs::File::create(dir.join("syncer.log")).context("creating the syncer log")?;
    let mut syncer = SyncerProcess {
        config: config_path,
        log: Arc::new(Mutex::new(log)),
        child: None,
        started: Default::default(),
        runs: 0,
        crashes: Vec::new(),
    };
    let mut kills = Kills::default();
    let mut scheduled_kills = 0;
    // Host copies made for the clusters the empty restarts replaced, as they were then.
    let mut earlier = BTreeMap::new();
    let mut empty_restarts = 0;
    // After a kill the syncer stays down for a few operations (`restart_at`), or (30%) until the
    // next kill point, which then starts it and kills it during its start-up.
    let mut restart_at: Option<usize> = None;
    let mut startup_kill_next = false;
    syncer.start()?;
    let churn_start = Instant::now();
    let mut next_kill = kill_points.iter().peekable();
    for (i, op) in ops.iter().enumerate() {
        syncer.reap_crash();
        let kill_here = next_kill.peek() == Some(&&i);
        if !syncer.running() && (kill_here || restart_at.is_none_or(|at| i >= at) && !startup_kill_next) {
            syncer.start()?;
            restart_at = None;
        }
        if kill_here {
            next_kill.next();
            if startup_kill_next {
                // Within its first moments: listing, filling caches, starting controllers.
                tokio::time::sleep(Duration::from_millis(rng.below(40) as u64)).await;
            } else if rng.chance(50) {
                // Otherwise half the kills land mid-churn, half after a pause (catching up or idle).
                tokio::time::sleep(Duration::from_millis(rng.below(1500) as u64)).await;
            }
            if kills.kill(&mut syncer) {
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
            kills.kill(&mut syncer);
            earlier::record(&config, &list_all(&host, None).await?, &mut earlier);
            virt.replace_empty(&virtual_namespaces).await?;
            empty_restarts += 1;
            eprintln!(
                "vcsync soak: the virtual cluster restarted empty at operation {i}/{} ({} earlier copies)",
                ops.len(),
                earlier.len()
            );
        } else {
            apply_with_retries(&virt.client, op).await?;
        }
        if args.pace_ms > 0 {
            tokio::time::sleep(Duration::from_millis(args.pace_ms)).await;
        }
    }
    let churn = churn_start.elapsed();

    // The final run: a last SIGKILL (if one is running) and a fresh start.
    kills.kill(&mut syncer);
    syncer.start()?;
    let timeout = Duration::from_secs(args.timeout);
    let virt_client = virt.client.clone();
    let ((findings, converged), convergence) = syncer
        .converge(timeout, async || {
            let state = snapshot(&host, &virt_client, &virtual_namespaces).await?;
            let findings = check(&config, &expected, &foreign, &earlier, &state);
            Ok((findings.violations(), (findings, state)))
        })
        .await?;
    syncer.reap_crash();
    syncer.kill();

    // The prune run: the earlier clusters' copies go, nothing else does.
    let mut prune = None;
    if empty_restarts > 0 && convergence.is_some() {
        syncer.config = prune_config_path;
        syncer.start()?;
        let none = BTreeMap::new();
        let ((findings, pruned), convergence) = syncer
            .converge(timeout, async || {
                let state = snapshot(&host, &virt_client, &virtual_namespaces).await?;
                let findings = check(&config, &expected, &foreign, &none, &state);
                let pruned = earlier::check_pruned(&config, &earlier, &converged, &state);
                Ok((findings.violations() + pruned.violations(), (findings, pruned)))
            })
            .await?;
        syncer.reap_crash();
        syncer.kill();
        prune = Some(PruneReport {
            findings,
            pruned,
            convergence,
        });
    }

    let count = |f: fn(&Op) -> bool| ops.iter().filter(|op| f(op)).count();
    Ok(Report {
        seed,
        namespaces,
        operations: ops.len(),
        created: count(|op| matches!(op, Op::Create(..))),
        updated: count(|op| matches!(op, Op::Update(..))),
        deleted: count(|op| matches!(op, Op::Delete(..))),
        final_objects: expected.len(),
        runs: syncer.runs,
        kills: kills.total,
        kills_running: kills.after_startup,
        kills_starting: kills.during_startup,
        crashes: std::mem::take(&mut syncer.crashes),
        foreign: foreign.len(),
        churn,
        convergence,
        findings,
        empty_restarts,
        earlier_copies: earlier.len(),
        prune,
        dir: dir.to_path_buf(),
    })
}
