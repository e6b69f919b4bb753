//! `vcsync soak`: a bounded crash-consistency soak of the syncer.
//!
//! Runs `vcsync run` as a child process between a host and a virtual cluster ([`pair`]:
//! embedded API servers started here, real control planes started here, or a pair the user
//! gives) and drives a seeded churn over several virtual namespaces ([`plan`]): ConfigMaps,
//! Secrets, and pods that mount a ConfigMap and take a Secret as env; creates, data, label and
//! annotation updates, graceful and forced deletes, names reused with new UIDs. It kills the
//! child with SIGKILL at random points, also during its start-up, and restarts it. Foreign
//! host objects (not this instance's, some at the very names the syncer would use) are created
//! first, and the host is watched throughout ([`host_watch`]): host pods replaced while their
//! virtual pod lives, token Secrets that outlive their pod. After the churn the syncer is
//! killed and restarted, and once it has converged (bounded wait) the state is checked
//! ([`check`]):
//!
//! - every virtual object has exactly one host copy, under the translated name, with the virtual
//!   object's data (a pod: its references, translated), labels, annotations and UID, a pod also
//!   its token Secret (a virtual object whose host name is held by a foreign object has none,
//!   by design: it is counted as blocked);
//! - no owned host object without a virtual twin (orphans), none under a wrong name
//!   (duplicates), no token Secret without its pod;
//! - every foreign host object still exists with its original resourceVersion;
//! - the virtual objects are exactly what the churn made (the syncer never rewrote them);
//! - the syncer never exited on its own.
//!
//! Then it is killed and restarted once more over the converged state: in the next
//! `--quiet-seconds` it must make no host write at all (its own request count), and the check
//! must still pass.
//!
//! With `--empty-virtual-restarts N` the virtual cluster is also replaced N times by an empty
//! one at random points of the churn (the syncer SIGKILLed first, restarted after), as a virtual
//! control plane whose datastore was lost comes back ([`earlier`]); the churn goes on in the new
//! cluster. The final check then also demands that every host copy made for an earlier cluster
//! is still there as it was when its cluster was replaced (and is no orphan), and a last run
//! with `safety.earlierCopies.prune` must delete those copies and nothing else.
//!
//! The report is a table or JSON; any violation makes the command fail.

mod args;
mod check;
mod churn;
mod clusters;
mod earlier;
mod host_watch;
mod objects;
mod pair;
mod plan;
mod report;
mod syncer;

use std::{
    collections::{BTreeMap, BTreeSet},
    path::{Path, PathBuf},
    time::Duration,
};

use anyhow::{Context, bail};
use k8s_openapi::serde_json;
use vcsync_syncer::Config;

pub use args::SoakArgs;
use args::{HOST_NAMESPACE, INSTANCE};
use check::check;
use clusters::snapshot;
use host_watch::HostWatch;
use pair::{Clusters, Source};
use plan::{Op, Sizes, final_state, plan, virtual_namespace};
use report::{PruneReport, QuietReport, Report};
use syncer::SyncerProcess;

use crate::child::SyncerChild;

impl SoakArgs {
    fn source(&self) -> Source {
        match (&self.kube_assets, &self.host_kubeconfig, &self.virtual_kubeconfig) {
            (Some(assets), _, _) => Source::Real(assets.clone()),
            (None, Some(host), Some(virt)) => Source::Given(host.clone(), virt.clone()),
            _ => Source::Embedded,
        }
    }
}

/// Runs the soak; fails when any invariant does not hold.
pub async fn run(args: SoakArgs) -> anyhow::Result<()> {
    let seed = args.seed.unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(1)
    });
    let source = args.source();
    if matches!(source, Source::Given(..)) && args.empty_virtual_restarts > 0 {
        bail!(
            "--empty-virtual-restarts needs clusters the soak starts itself (embedded, or \
             --kube-assets): a given virtual cluster cannot be replaced"
        );
    }
    let (dir, temporary) = match &args.dir {
        Some(dir) => (dir.clone(), false),
        None => (
            std::env::temp_dir().join(format!("vcsync-soak-{}-{seed}", std::process::id())),
            true,
        ),
    };
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    eprintln!(
        "vcsync soak: seed {seed}, {} objects, {} pods, {} kills, {} empty virtual restarts; files in {}",
        args.objects,
        args.pods,
        args.kills,
        args.empty_virtual_restarts,
        dir.display()
    );

    let mut clusters = Clusters::start(&source, &dir).await?;
    let virtual_namespaces: BTreeSet<String> = (0..args.namespaces.max(1)).map(virtual_namespace).collect();
    let result = soak(&args, seed, &dir, &mut clusters, &virtual_namespaces).await;
    if let Ok(report) = &result
        && report.violations() == 0
    {
        clusters
            .remove_namespaces(HOST_NAMESPACE, &virtual_namespaces)
            .await
            .context("removing the soak's namespaces")?;
    }
    clusters.stop().await;
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

/// The syncer's configuration files: the normal one and the prune run's.
fn write_configs(dir: &Path, clusters: &Clusters, operations: &str) -> anyhow::Result<(PathBuf, PathBuf)> {
    let config_path = dir.join("vcsync.yaml");
    let config_text = format!(
        "instance: {INSTANCE}\nhostNamespace: {HOST_NAMESPACE}\nhost:\n  kubeconfig: {}\n\
         virtual:\n  kubeconfig: {}\nsync:\n  configMaps:\n    all: true\n  secrets:\n    all: true\n\
         operations:\n  address: {operations}\n",
        clusters.host_kubeconfig.display(),
        clusters.virtual_kubeconfig.display()
    );
    crate::setup::write(&config_path, &config_text)?;
    // The last run's: earlier clusters' copies deleted.
    let prune_config_path = dir.join("vcsync-prune.yaml");
    crate::setup::write(
        &prune_config_path,
        &format!("{config_text}safety:\n  earlierCopies:\n    prune: true\n"),
    )?;
    Ok((config_path, prune_config_path))
}

async fn soak(
    args: &SoakArgs,
    seed: u64,
    dir: &Path,
    clusters: &mut Clusters,
    virtual_namespaces: &BTreeSet<String>,
) -> anyhow::Result<Report> {
    let config = Config::new(INSTANCE, HOST_NAMESPACE);
    let operations = {
        let probe = std::net::TcpListener::bind((std::net::Ipv4Addr::LOCALHOST, 0))?;
        probe.local_addr()?
    };
    let (config_path, prune_config_path) = write_configs(dir, clusters, &operations.to_string())?;
    clusters
        .create_namespaces(HOST_NAMESPACE, virtual_namespaces)
        .await?;

    let sizes = Sizes {
        objects: args.objects,
        pods: args.pods,
        namespaces: virtual_namespaces.len(),
        empty_restarts: args.empty_virtual_restarts,
    };
    let ops = plan(seed, sizes);
    let expected = final_state(&ops);
    let log = std::fs::File::create(dir.join("syncer.log")).context("creating the syncer log")?;
    let mut syncer = SyncerProcess::new(SyncerChild::new(config_path, log));
    let host_watch = HostWatch::start(&clusters.host, HOST_NAMESPACE, INSTANCE);
    let mut churned = churn::churn(args, seed, &ops, clusters, virtual_namespaces, &mut syncer).await?;

    // The final run: a last SIGKILL (if one is running) and a fresh start.
    churned.kills.kill(&mut syncer);
    syncer.start()?;
    let timeout = Duration::from_secs(args.timeout);
    let (host, virt) = (clusters.host.clone(), clusters.virt.clone());
    let probe = async |earlier: &BTreeMap<_, _>| {
        let state = snapshot(&host, &virt, virtual_namespaces).await?;
        let findings = check(&config, &expected, &churned.foreign, earlier, &state);
        anyhow::Ok((findings.violations(), findings.example(), (findings, state)))
    };
    let ((findings, converged), convergence) = syncer
        .converge(timeout, async || probe(&churned.earlier).await)
        .await?;

    // Restarted over the converged state, the syncer writes nothing to the host.
    let mut quiet = None;
    if convergence.is_some() {
        churned.kills.kill(&mut syncer);
        syncer.start()?;
        let started = syncer.wait_started(timeout).await;
        tokio::time::sleep(Duration::from_secs(args.quiet_seconds)).await;
        let requests = crate::child::syncer_requests(operations).await.ok();
        let (_, _, (findings, _)) = probe(&churned.earlier).await?;
        quiet = Some(QuietReport::new(started, args.quiet_seconds, requests, findings));
    }
    syncer.reap_crash();
    syncer.kill();

    // The prune run: the earlier clusters' copies go, nothing else does.
    let mut prune = None;
    if churned.empty_restarts > 0 && convergence.is_some() {
        syncer.child.config = prune_config_path;
        syncer.start()?;
        let none = BTreeMap::new();
        let ((findings, pruned), convergence) = syncer
            .converge(timeout, async || {
                let state = snapshot(&host, &virt, virtual_namespaces).await?;
                let findings = check(&config, &expected, &churned.foreign, &none, &state);
                let pruned = earlier::check_pruned(&config, &churned.earlier, &converged, &state);
                let example = findings.example().or_else(|| pruned.left.first().cloned());
                Ok((
                    findings.violations() + pruned.violations(),
                    example,
                    (findings, pruned),
                ))
            })
            .await?;
        let requests = crate::child::syncer_requests(operations).await.ok();
        let host_deletes = requests.map(|requests| {
            requests
                .iter()
                .filter(|((cluster, verb, _), _)| cluster == "host" && verb == "delete")
                .map(|(_, n)| n)
                .sum()
        });
        syncer.reap_crash();
        syncer.kill();
        prune = Some(PruneReport {
            findings,
            pruned,
            convergence,
            host_deletes,
            earlier_copies: churned.earlier.len(),
        });
    }

    let (late_tokens, longest_token_lag) =
        host_watch.read(|history| history.late_tokens(&syncer.kills, std::time::Instant::now()));
    let recreations = host_watch.read(|history| history.recreations.clone());
    let count = |f: fn(&Op) -> bool| ops.iter().filter(|op| f(op)).count();
    let kills = &churned.kills;
    Ok(Report {
        seed,
        clusters: clusters.kind(),
        namespaces: virtual_namespaces.len(),
        operations: ops.len(),
        created: count(|op| matches!(op, Op::Create(..))),
        updated: count(|op| matches!(op, Op::Update(..))),
        deleted: count(|op| matches!(op, Op::Delete(..))),
        pods_created: count(|op| matches!(op, Op::Create(key, _) if key.kind == plan::Kind::Pod)),
        final_objects: expected.len(),
        runs: syncer.child.runs(),
        kills: kills.total,
        kills_running: kills.after_startup,
        kills_starting: kills.during_startup,
        crashes: std::mem::take(&mut syncer.crashes),
        foreign: churned.foreign.len(),
        churn: churned.duration,
        convergence,
        findings,
        recreations,
        late_tokens,
        longest_token_lag,
        quiet,
        empty_restarts: churned.empty_restarts,
        earlier_copies: churned.earlier.len(),
        prune,
        dir: dir.to_path_buf(),
    })
}
