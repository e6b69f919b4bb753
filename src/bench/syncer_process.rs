//! The benchmarked syncer as a child process, and what /proc says of a process.

use std::{
    path::PathBuf,
    process::{Child, Command},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use anyhow::{Context, bail};

/// CPU seconds, current and peak resident memory of a process.
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct ProcStats {
    pub(super) cpu_s: f64,
    pub(super) rss: u64,
    pub(super) hwm: u64,
}

pub(super) fn clock_ticks() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse::<f64>().ok())
        .unwrap_or(100.0)
}

pub(super) fn proc_stats(pid: u32, ticks: f64) -> anyhow::Result<ProcStats> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).context("reading /proc/<pid>/stat")?;
    // Fields after "(comm) ": state is field 3, utime 14 and stime 15.
    let rest = stat.rsplit_once(") ").map(|(_, r)| r).unwrap_or("");
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let tick = |i: usize| fields.get(i).and_then(|f| f.parse::<f64>().ok()).unwrap_or(0.0);
    let cpu_s = (tick(11) + tick(12)) / ticks;
    let status =
        std::fs::read_to_string(format!("/proc/{pid}/status")).context("reading /proc/<pid>/status")?;
    let kb = |key: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
            .unwrap_or(0)
            * 1024
    };
    Ok(ProcStats {
        cpu_s,
        rss: kb("VmRSS:"),
        hwm: kb("VmHWM:"),
    })
}

/// `vcsync run` as a child process, its stderr appended to a log file.
pub(super) struct Syncer {
    pub(super) config: PathBuf,
    pub(super) log: Arc<Mutex<std::fs::File>>,
    pub(super) child: Option<Child>,
    /// When the current run logged that its controllers started.
    pub(super) ready: Arc<Mutex<Option<Instant>>>,
    pub(super) spawned: Instant,
}

impl Syncer {
    pub(super) fn start(&mut self) -> anyhow::Result<()> {
        let exe = std::env::current_exe().context("locating the vcsync binary")?;
        self.spawned = Instant::now();
        // VCSYNC_BENCH_WRAPPER runs the syncer under a profiler, e.g.
        // `valgrind --tool=massif --massif-out-file=/tmp/massif.out`.
        let wrapper = std::env::var("VCSYNC_BENCH_WRAPPER").unwrap_or_default();
        let mut words = wrapper.split_whitespace();
        let command = match words.next() {
            Some(program) => {
                let mut command = Command::new(program);
                command.args(words).arg(exe);
                command
            }
            None => Command::new(exe),
        };
        let (child, ready) =
            crate::child::spawn_syncer(command, &self.config, self.log.clone(), String::new())?;
        self.ready = ready;
        self.child = Some(child);
        Ok(())
    }

    pub(super) fn pid(&self) -> anyhow::Result<u32> {
        self.child
            .as_ref()
            .map(Child::id)
            .context("the syncer is not running")
    }

    /// Waits until the controllers started; returns the time from spawn.
    pub(super) async fn wait_ready(&mut self, timeout: Duration) -> anyhow::Result<Duration> {
        loop {
            if let Some(at) = *self.ready.lock().unwrap_or_else(|p| p.into_inner()) {
                return Ok(at - self.spawned);
            }
            if let Some(child) = &mut self.child
                && let Ok(Some(status)) = child.try_wait()
            {
                bail!("the syncer exited with {status} before it was ready");
            }
            if self.spawned.elapsed() > timeout {
                bail!("the syncer was not ready within {timeout:?}");
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// SIGTERM, then the exit (SIGKILL after 30 s).
    pub(super) async fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill")
                .arg("-TERM")
                .arg(child.id().to_string())
                .status();
            let deadline = Instant::now() + Duration::from_secs(30);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Syncer {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
