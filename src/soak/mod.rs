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
//! The report is a table or JSON; any violation makes the command fail.

mod check;
mod clusters;
mod plan;
mod report;
mod syncer;

use std::{
    collections::BTreeSet,
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use anyhow::{Context, bail};
use k8s_openapi::serde_json;
use vcsync_apiserver::ApiServer;
use vcsync_syncer::Config;

use check::check;
use clusters::{apply_with_retries, create_foreign, snapshot};
use plan::{Op, Rng, final_state, plan, virtual_namespace};
use report::Report;
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
    /// Bound of the wait for convergence after the final restart, in seconds.
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
        "vcsync soak: seed {seed}, {} objects, {} kills; files in {}",
        args.objects,
        args.kills,
        dir.display()
    );

    let (host_server, virt_server) = crate::dev::start_servers("virtual").await?;
    let result = soak(&args, seed, namespaces, &dir, &host_server, &virt_server).await;
    virt_server.shutdown().await;
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

async fn soak(
    args: &SoakArgs,
    seed: u64,
    namespaces: usize,
    dir: &Path,
    host_server: &ApiServer,
    virt_server: &ApiServer,
) -> anyhow::Result<Report> {
    let host_kubeconfig = dir.join("host.kubeconfig");
    let virtual_kubeconfig = dir.join("virtual.kubeconfig");
    crate::dev::write(&host_kubeconfig, &host_server.kubeconfig())?;
    crate::dev::write(&virtual_kubeconfig, &virt_server.kubeconfig())?;
    let host = crate::dev::client(&host_server.url())?;
    let virt = crate::dev::client(&virt_server.url())?;

    let config = Config::new(INSTANCE, HOST_NAMESPACE);
    let config_path = dir.join("vcsync.yaml");
    crate::dev::write(
        &config_path,
        &format!(
            "instance: {INSTANCE}\nhostNamespace: {HOST_NAMESPACE}\nhost:\n  kubeconfig: {}\n\
             virtual:\n  kubeconfig: {}\nsync:\n  configMaps:\n    all: true\n  secrets:\n    all: true\n",
            host_kubeconfig.display(),
            virtual_kubeconfig.display()
        ),
    )?;

    crate::dev::create_namespace(&host, HOST_NAMESPACE).await?;
    let virtual_namespaces: BTreeSet<String> = (0..namespaces).map(virtual_namespace).collect();
    for ns in &virtual_namespaces {
        crate::dev::create_namespace(&virt, ns).await?;
    }

    let ops = plan(seed, args.objects, namespaces);
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
    let (mut kills, mut kills_running, mut kills_starting) = (0, 0, 0);
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
            syncer.reap_crash();
            if syncer.running() {
                if syncer.kill() {
                    kills_running += 1;
                } else {
                    kills_starting += 1;
                }
                kills += 1;
                eprintln!(
                    "vcsync soak: SIGKILL {kills}/{} at operation {i}/{}",
                    args.kills,
                    ops.len()
                );
            }
            startup_kill_next = rng.chance(30);
            restart_at = (!startup_kill_next).then(|| i + rng.below(30));
        }
        apply_with_retries(&virt, op).await?;
        if args.pace_ms > 0 {
            tokio::time::sleep(Duration::from_millis(args.pace_ms)).await;
        }
    }
    let churn = churn_start.elapsed();

    // The final run: a last SIGKILL (if one is running) and a fresh start.
    syncer.reap_crash();
    if syncer.running() {
        if syncer.kill() {
            kills_running += 1;
        } else {
            kills_starting += 1;
        }
        kills += 1;
    }
    syncer.start()?;
    let final_start = Instant::now();
    let timeout = Duration::from_secs(args.timeout);
    let mut convergence = None;
    let mut findings;
    loop {
        let state = snapshot(&host, &virt, &virtual_namespaces).await?;
        findings = check(&config, &expected, &foreign, &state);
        if findings.violations() == 0 {
            convergence = Some(final_start.elapsed());
            break;
        }
        syncer.reap_crash();
        if final_start.elapsed() > timeout || !syncer.running() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    if convergence.is_some() {
        // Converged for good: the same verdict a little later.
        tokio::time::sleep(Duration::from_secs(2)).await;
        let state = snapshot(&host, &virt, &virtual_namespaces).await?;
        findings = check(&config, &expected, &foreign, &state);
        if findings.violations() > 0 {
            convergence = None;
        }
    }
    syncer.reap_crash();
    syncer.kill();

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
        kills,
        kills_running,
        kills_starting,
        crashes: std::mem::take(&mut syncer.crashes),
        foreign: foreign.len(),
        churn,
        convergence,
        findings,
        dir: dir.to_path_buf(),
    })
}
