//! `vcsync cluster snapshot` and `vcsync cluster restore`: a virtual cluster's objects saved
//! through its API (so for any datastore) and recreated from that.
//!
//! A snapshot holds every object of every kind the cluster serves that can be listed and
//! created, custom resources with their definitions, in the order a restore creates them,
//! status and server-set fields removed ([`prepare`] says what is left out and why). It holds no
//! volume data, no events, no nodes, and Secrets in the clear: keep the file as safe as the
//! cluster's Secrets. Kinds are listed one after another, so objects changed during a snapshot
//! may be seen before or after the change, not at one instant.
//!
//! A restore never overwrites: objects that exist are compared and left as they are. Each object
//! it creates carries the UID it had ([`vcsync_translators::RESTORED_UID_ANNOTATION`]), by which
//! the syncer re-links the host copy made for it, instead of keeping that copy aside (a
//! replaced cluster) or replacing it (a pod).

pub mod apply;
pub mod archive;
mod collect;
pub mod order;
pub mod prepare;

use std::{
    io::Write,
    path::{Path, PathBuf},
};

use anyhow::Context;
use clap::Args;

use super::{ClusterError, Progress, Result, kubeconfig::client_of, private_file};

/// Flags of `vcsync cluster snapshot`.
#[derive(Debug, Args)]
pub struct SnapshotArgs {
    /// Cluster name.
    pub name: String,
    /// The archive to write (gzip-compressed JSON lines; `-`: stdout). It holds the cluster's
    /// Secrets: it is written readable by its owner only.
    #[arg(long, short = 'o')]
    pub output: PathBuf,
    /// The cluster's API server URL, when its own is not reachable from here (e.g. through a
    /// port-forward).
    #[arg(long)]
    pub server: Option<String>,
}

/// Flags of `vcsync cluster restore`.
#[derive(Debug, Args)]
pub struct RestoreArgs {
    /// Cluster name.
    pub name: String,
    /// The archive `vcsync cluster snapshot` wrote (`-`: stdin).
    #[arg(long, short = 'f')]
    pub file: PathBuf,
    /// Only say what would be created and what exists otherwise; change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// The cluster's API server URL, when its own is not reachable from here.
    #[arg(long)]
    pub server: Option<String>,
}

pub use collect::take;

/// Takes a snapshot of cluster `name` through `kubeconfig` and writes it where `args` say.
pub async fn snapshot(args: &SnapshotArgs, kubeconfig: &str, progress: &Progress) -> Result<()> {
    let client = client_of(kubeconfig).await?;
    let (manifest, entries) = collect::take(&client, &args.name, progress).await?;
    let written = if args.output == Path::new("-") {
        let mut bytes = Vec::new();
        archive::write(&mut bytes, &manifest, &entries).context("compressing the snapshot")?;
        std::io::stdout()
            .write_all(&bytes)
            .context("writing the snapshot to stdout")?;
        bytes.len() as u64
    } else {
        write_private(&args.output, |file| archive::write(file, &manifest, &entries))?
    };
    progress.step(format!(
        "snapshot of {}: {} objects of {} kinds, {} KiB, written to {}",
        args.name,
        manifest.objects,
        manifest.counts.len(),
        written.div_ceil(1024),
        args.output.display()
    ));
    Ok(())
}

/// Writes `path` through `write` (a temporary file beside it, owner-only, renamed into place
/// once complete, so a failed snapshot never leaves a truncated archive under the name);
/// returns its size.
fn write_private(path: &Path, write: impl FnOnce(&std::fs::File) -> std::io::Result<()>) -> Result<u64> {
    let partial = path.with_extension(format!("partial-{}", std::process::id()));
    let file = private_file::create(&partial).with_context(|| format!("writing {}", partial.display()))?;
    let written = write(&file)
        .and_then(|()| file.sync_all())
        .and_then(|()| file.metadata())
        .and_then(|meta| std::fs::rename(&partial, path).map(|()| meta.len()));
    if written.is_err() {
        let _ = std::fs::remove_file(&partial);
    }
    Ok(written.with_context(|| format!("writing {}", path.display()))?)
}

/// A snapshot read from the file a restore names.
pub struct Loaded {
    manifest: archive::Manifest,
    entries: Vec<archive::Entry>,
}

/// Reads and checks the archive `args` name (before any cluster is asked).
pub fn load(args: &RestoreArgs) -> Result<Loaded> {
    let bad = |err: &dyn std::fmt::Display| ClusterError::BadInput(format!("{}: {err}", args.file.display()));
    let (manifest, entries) = if args.file == Path::new("-") {
        archive::read(std::io::stdin().lock())
    } else {
        let file = std::fs::File::open(&args.file).map_err(|err| bad(&err))?;
        archive::read(std::io::BufReader::new(file))
    }
    .map_err(|err| bad(&err))?;
    Ok(Loaded { manifest, entries })
}

/// Restores `loaded` into cluster `name` through `kubeconfig` (or compares, dry).
pub async fn restore(
    args: &RestoreArgs,
    loaded: Loaded,
    kubeconfig: &str,
    progress: &Progress,
) -> Result<()> {
    let Loaded { manifest, entries } = loaded;
    if manifest.cluster != args.name {
        progress.note(format!(
            "the snapshot is of cluster {}; restoring it into {}",
            manifest.cluster, args.name
        ));
    }
    progress.step(format!(
        "{} {} objects of {} taken {}",
        if args.dry_run { "comparing" } else { "restoring" },
        manifest.objects,
        manifest.cluster,
        manifest.created
    ));
    let client = client_of(kubeconfig).await?;
    let outcome = apply::restore(&client, &entries, args.dry_run, progress).await?;
    report(&outcome, args.dry_run);
    if outcome.failed.is_empty() {
        Ok(())
    } else {
        Err(anyhow::anyhow!("{} objects could not be restored", outcome.failed.len()).into())
    }
}

/// Prints what a restore did: one line per object created (dry run), differing or failed, and
/// a summary, on stdout.
fn report(outcome: &apply::Outcome, dry_run: bool) {
    let mut out = std::io::stdout().lock();
    if dry_run {
        for object in &outcome.created {
            let _ = writeln!(out, "create   {object}");
        }
    }
    for (object, path) in &outcome.differing {
        let _ = writeln!(out, "differs  {object} (at {path}; left as it is)");
    }
    for object in &outcome.reallocated {
        let _ = writeln!(
            out,
            "created  {object} with a new cluster IP or node port (its own was taken)"
        );
    }
    for owner in &outcome.owners_dropped {
        let _ = writeln!(out, "no owner {owner} (not in the snapshot; restored without it)");
    }
    for (object, error) in &outcome.failed {
        let _ = writeln!(out, "failed   {object}: {error}");
    }
    let _ = writeln!(
        out,
        "{} {}, {} unchanged, {} differ, {} failed",
        if dry_run { "would create" } else { "created" },
        outcome.created.len(),
        outcome.unchanged,
        outcome.differing.len(),
        outcome.failed.len()
    );
}
