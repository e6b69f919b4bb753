//! The syncer under test as a child process ([`SyncerChild`]), with the soak's record of its
//! kills and crashes, and the wait for convergence.

use std::time::{Duration, Instant};

use crate::child::SyncerChild;

/// The syncer under test, its SIGKILLs and the runs that exited on their own.
pub(super) struct SyncerProcess {
    pub(super) child: SyncerChild,
    pub(super) crashes: Vec<String>,
    /// When each SIGKILL was sent.
    pub(super) kills: Vec<Instant>,
}

impl SyncerProcess {
    pub(super) fn new(child: SyncerChild) -> SyncerProcess {
        SyncerProcess {
            child: child.numbered(),
            crashes: Vec::new(),
            kills: Vec::new(),
        }
    }

    pub(super) fn start(&mut self) -> anyhow::Result<()> {
        self.child.start()
    }

    pub(super) fn running(&self) -> bool {
        self.child.running()
    }

    /// SIGKILLs the child; returns whether its controllers had started.
    pub(super) fn kill(&mut self) -> bool {
        if self.child.running() {
            self.kills.push(Instant::now());
        }
        self.child.kill()
    }

    /// Waits until the current run's controllers started (false: `timeout` passed or the
    /// syncer exited first).
    pub(super) async fn wait_started(&mut self, timeout: Duration) -> bool {
        let started = self
            .child
            .wait_started(timeout, Duration::from_millis(50))
            .await
            .is_ok();
        self.reap_crash();
        started
    }

    /// Records (and forgets) a child that exited on its own: a crash of the syncer.
    pub(super) fn reap_crash(&mut self) {
        if let Some(status) = self.child.exited() {
            self.crashes.push(format!(
                "run {} exited on its own with {status}",
                self.child.runs()
            ));
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
