//! The syncer under test as a child process.

use std::{
    io::Write,
    path::PathBuf,
    process::{Child, Command},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use anyhow::Context;

/// The syncer under test: `vcsync run` as a child process, its stderr appended to a log file.
pub(super) struct SyncerProcess {
    pub(super) config: PathBuf,
    pub(super) log: Arc<Mutex<std::fs::File>>,
    pub(super) child: Option<Child>,
    /// Whether the current run logged that its controllers started.
    pub(super) started: crate::child::Started,
    pub(super) runs: usize,
    pub(super) crashes: Vec<String>,
    /// When each SIGKILL was sent.
    pub(super) kills: Vec<Instant>,
}

impl SyncerProcess {
    pub(super) fn start(&mut self) -> anyhow::Result<()> {
        self.runs += 1;
        let exe = std::env::current_exe().context("locating the vcsync binary")?;
        let (child, started) = crate::child::spawn_syncer(
            Command::new(exe),
            &self.config,
            self.log.clone(),
            format!("[run {}] ", self.runs),
        )?;
        if let Ok(mut file) = self.log.lock() {
            let _ = writeln!(file, "==== run {} (pid {})", self.runs, child.id());
        }
        self.started = started;
        self.child = Some(child);
        Ok(())
    }

    pub(super) fn running(&self) -> bool {
        self.child.is_some()
    }

    /// SIGKILLs the child; returns whether its controllers had started.
    pub(super) fn kill(&mut self) -> bool {
        if let Some(mut child) = self.child.take() {
            self.kills.push(Instant::now());
            let _ = child.kill();
            let _ = child.wait();
        }
        crate::child::has_started(&self.started)
    }

    /// Waits until the current run's controllers started (false: `timeout` passed or the
    /// syncer exited first).
    pub(super) async fn wait_started(&mut self, timeout: Duration) -> bool {
        let start = Instant::now();
        while !crate::child::has_started(&self.started) {
            self.reap_crash();
            if !self.running() || start.elapsed() > timeout {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        true
    }

    /// Records (and forgets) a child that exited on its own: a crash of the syncer.
    pub(super) fn reap_crash(&mut self) {
        if let Some(child) = &mut self.child
            && let Ok(Some(status)) = child.try_wait()
        {
            self.crashes
                .push(format!("run {} exited on its own with {status}", self.runs));
            self.child = None;
        }
    }
}

impl SyncerProcess {
    /// Polls `probe` (its violations, one of them, and findings) every 200 ms from now until it
    /// finds no violation, `timeout` passes or the syncer exits; a pass is confirmed 2 s later.
    /// Says every 10 s what it still waits for. Returns the last findings and the time to the
    /// first pass (None: not converged).
    pub(super) async fn converge<T>(
        &mut self,
        timeout: Duration,
        mut probe: impl AsyncFnMut() -> anyhow::Result<(usize, Option<String>, T)>,
    ) -> anyhow::Result<(T, Option<Duration>)> {
        let start = Instant::now();
        let mut said = Instant::now();
        loop {
            let (violations, example, findings) = probe().await?;
            if violations == 0 {
                let convergence = start.elapsed();
                // Converged for good: the same verdict a little later.
                tokio::time::sleep(Duration::from_secs(2)).await;
                let (violations, _, findings) = probe().await?;
                return Ok((findings, (violations == 0).then_some(convergence)));
            }
            if said.elapsed() >= Duration::from_secs(10) {
                said = Instant::now();
                eprintln!(
                    "vcsync soak: {violations} violations left after {:.0} s, e.g. {}",
                    start.elapsed().as_secs_f64(),
                    example.unwrap_or_default()
                );
            }
            self.reap_crash();
            if start.elapsed() > timeout || !self.running() {
                return Ok((findings, None));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

impl Drop for SyncerProcess {
    fn drop(&mut self) {
        self.kill();
    }
}
