//! `vcsync run` as a child process of the harnesses (`vcsync bench`, `vcsync soak`): the one
//! wrapper both use. Its stderr is appended to a shared log file, the moment its controllers
//! started is noted, it is stopped with SIGTERM or killed with SIGKILL, and its own count of
//! its requests is read from its `/metrics`.

use std::{
    collections::BTreeMap,
    io::{BufRead, BufReader, Write},
    net::SocketAddr,
    path::PathBuf,
    process::{Child, Command, ExitStatus, Stdio},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use anyhow::{Context, bail};

/// When the current run logged that its controllers started (None until then).
type Started = Arc<Mutex<Option<Instant>>>;

/// The syncer under test: `vcsync run --config <config>` as a child process, started again as
/// often as the harness wants, its stderr appended to one log file.
pub(crate) struct SyncerChild {
    /// The vcsync.yaml of the next start.
    pub(crate) config: PathBuf,
    log: Arc<Mutex<std::fs::File>>,
    child: Option<Child>,
    started: Started,
    spawned: Instant,
    /// Starts so far.
    runs: usize,
    /// Each run's log lines carry `[run N] ` and a `==== run N (pid P)` line precedes them.
    numbered: bool,
    /// A program (and its arguments) the syncer runs under, e.g. a profiler.
    wrapper: Vec<String>,
}

impl SyncerChild {
    /// A syncer to be started with `config`, logging into `log`.
    pub(crate) fn new(config: PathBuf, log: std::fs::File) -> SyncerChild {
        SyncerChild {
            config,
            log: Arc::new(Mutex::new(log)),
            child: None,
            started: Arc::default(),
            spawned: Instant::now(),
            runs: 0,
            numbered: false,
            wrapper: Vec::new(),
        }
    }

    /// Marks each run's lines in the log with its number.
    pub(crate) fn numbered(mut self) -> SyncerChild {
        self.numbered = true;
        self
    }

    /// Runs the syncer under `wrapper` (whitespace-separated program and arguments; empty:
    /// none).
    pub(crate) fn wrapped_by(mut self, wrapper: &str) -> SyncerChild {
        self.wrapper = wrapper.split_whitespace().map(str::to_string).collect();
        self
    }

    /// Starts a run, with info logs.
    pub(crate) fn start(&mut self) -> anyhow::Result<()> {
        self.runs += 1;
        let exe = std::env::current_exe().context("locating the vcsync binary")?;
        let mut command = match self.wrapper.split_first() {
            Some((program, args)) => {
                let mut command = Command::new(program);
                command.args(args).arg(exe);
                command
            }
            None => Command::new(exe),
        };
        self.spawned = Instant::now();
        let mut child = command
            .args(["run", "--config"])
            .arg(&self.config)
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .context("starting the syncer")?;
        let prefix = match self.numbered {
            true => {
                if let Ok(mut file) = self.log.lock() {
                    let _ = writeln!(file, "==== run {} (pid {})", self.runs, child.id());
                }
                format!("[run {}] ", self.runs)
            }
            false => String::new(),
        };
        let stderr = child.stderr.take().context("syncer stderr")?;
        let started: Started = Arc::default();
        let (seen, log) = (started.clone(), self.log.clone());
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if line.contains("controllers started")
                    && let Ok(mut seen) = seen.lock()
                {
                    seen.get_or_insert_with(Instant::now);
                }
                if let Ok(mut file) = log.lock() {
                    let _ = writeln!(file, "{prefix}{line}");
                }
            }
        });
        self.started = started;
        self.child = Some(child);
        Ok(())
    }

    /// Starts so far.
    pub(crate) fn runs(&self) -> usize {
        self.runs
    }

    /// Whether a run is going (not stopped, killed, or found exited).
    pub(crate) fn running(&self) -> bool {
        self.child.is_some()
    }

    /// The process id of the current run.
    pub(crate) fn pid(&self) -> anyhow::Result<u32> {
        self.child
            .as_ref()
            .map(Child::id)
            .context("the syncer is not running")
    }

    /// Whether the current run logged that its controllers started.
    pub(crate) fn has_started(&self) -> bool {
        self.started.lock().map(|s| s.is_some()).unwrap_or(true)
    }

    /// The exit status of a run that exited on its own, which is then forgotten.
    pub(crate) fn exited(&mut self) -> Option<ExitStatus> {
        let status = self.child.as_mut()?.try_wait().ok()??;
        self.child = None;
        Some(status)
    }

    /// Waits until the current run's controllers started, polling every `poll`; returns the
    /// time from its spawn. Fails when it exits first (it is then not forgotten: see
    /// [`SyncerChild::exited`]) or `timeout` passes.
    pub(crate) async fn wait_started(
        &mut self,
        timeout: Duration,
        poll: Duration,
    ) -> anyhow::Result<Duration> {
        let start = Instant::now();
        loop {
            if let Some(at) = *self.started.lock().unwrap_or_else(|p| p.into_inner()) {
                return Ok(at - self.spawned);
            }
            match &mut self.child {
                None => bail!("the syncer is not running"),
                Some(child) => {
                    if let Ok(Some(status)) = child.try_wait() {
                        bail!("the syncer exited with {status} before it was ready");
                    }
                }
            }
            if start.elapsed() > timeout {
                bail!("the syncer was not ready within {timeout:?}");
            }
            tokio::time::sleep(poll).await;
        }
    }

    /// SIGTERM, then the exit (SIGKILL after 30 s).
    pub(crate) async fn stop(&mut self) {
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

    /// SIGKILLs the current run, if any; returns whether its controllers had started.
    pub(crate) fn kill(&mut self) -> bool {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        self.has_started()
    }
}

impl Drop for SyncerChild {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The syncer's own count of its requests (`vcsync_api_requests_total` on its `/metrics`), by
/// (cluster, verb, resource): what a real API server cannot tell apart from its other clients'.
pub(crate) async fn syncer_requests(
    address: SocketAddr,
) -> anyhow::Result<BTreeMap<(String, String, String), u64>> {
    Ok(vcsync_syncer::metrics::api_requests_in(
        &syncer_metrics(address).await?,
    ))
}

/// The syncer's `/metrics` page, as text.
pub(crate) async fn syncer_metrics(address: SocketAddr) -> anyhow::Result<String> {
    let response = tokio::task::spawn_blocking(move || -> anyhow::Result<String> {
        use std::io::{Read, Write};
        let mut stream = std::net::TcpStream::connect(address)
            .with_context(|| format!("connecting to the syncer's /metrics at {address}"))?;
        stream.write_all(b"GET /metrics HTTP/1.0\r\nHost: localhost\r\n\r\n")?;
        let mut response = String::new();
        stream.read_to_string(&mut response)?;
        Ok(response)
    })
    .await??;
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, body)| body)
        .context("no body in the syncer's /metrics answer")?;
    Ok(body.to_string())
}
