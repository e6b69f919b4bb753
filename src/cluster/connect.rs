//! What `vcsync cluster connect` does with a cluster's kubeconfig besides printing it: run a
//! command against the cluster, or merge it into the user's kubeconfig file.

use std::{
    io::Write,
    os::unix::{fs::OpenOptionsExt, process::ExitStatusExt},
    path::Path,
    process::Command,
};

use anyhow::Context;

use super::{ClusterError, Result, kubeconfig};

/// Writes `text` to `path`, readable by its owner only (it holds credentials).
fn write_private(path: &Path, text: &str) -> Result<()> {
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("writing {}", path.display()))?;
    file.write_all(text.as_bytes())
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

/// Runs `command` with `KUBECONFIG` set to a private copy of cluster `name`'s `kubeconfig`
/// (removed afterwards); the command's exit status becomes vcsync's
/// ([`ClusterError::CommandExited`]; 128 + the signal when one ended it).
pub fn run_with(name: &str, kubeconfig: &str, command: &[String]) -> Result<()> {
    let dir = std::env::temp_dir().join(format!("vcsync-connect-{}", std::process::id()));
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let path = dir.join(format!("{name}.kubeconfig"));
    write_private(&path, kubeconfig)?;
    let status = Command::new(&command[0])
        .args(&command[1..])
        .env("KUBECONFIG", &path)
        .status();
    let _ = std::fs::remove_dir_all(&dir);
    let status = status.with_context(|| format!("running {}", command[0]))?;
    match status.code() {
        Some(0) => Ok(()),
        Some(code) => Err(ClusterError::CommandExited(u8::try_from(code).unwrap_or(1))),
        None => Err(ClusterError::CommandExited(
            status
                .signal()
                .map_or(1, |signal| 128u8.saturating_add(signal as u8)),
        )),
    }
}

/// Merges cluster `name`'s `kubeconfig` into `file` (created, with its folder, when missing)
/// as context `vcsync-<name>`, made current.
pub fn update_current(name: &str, kubeconfig: &str, file: &Path) -> Result<()> {
    let existing = match std::fs::read_to_string(file) {
        Ok(text) => text,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(err) => return Err(anyhow::anyhow!("reading {}: {err}", file.display()).into()),
    };
    let merged = kubeconfig::merge(&existing, kubeconfig, &kubeconfig::context_name(name))?;
    if let Some(parent) = file.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
    }
    write_private(file, &merged)
}
