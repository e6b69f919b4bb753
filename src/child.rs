//! `vcsync run` as a child process of the harnesses (`vcsync soak`, `vcsync bench`): stderr
//! appended to a shared log file, the moment its controllers started noted, and its own count
//! of its requests read from its `/metrics`.

use std::{
    collections::BTreeMap,
    io::{BufRead, BufReader, Write},
    net::SocketAddr,
    path::Path,
    process::{Child, Command, Stdio},
    sync::{Arc, Mutex},
    time::Instant,
};

use anyhow::Context;

/// When the child logged that its controllers started (None until then).
pub(crate) type Started = Arc<Mutex<Option<Instant>>>;

/// Starts `command run --config <config>` (command is the vcsync binary, or a wrapper such as
/// a profiler followed by it) with info logs; each stderr line is appended to `log` with
/// `prefix`.
pub(crate) fn spawn_syncer(
    mut command: Command,
    config: &Path,
    log: Arc<Mutex<std::fs::File>>,
    prefix: String,
) -> anyhow::Result<(Child, Started)> {
    let mut child = command
        .args(["run", "--config"])
        .arg(config)
        .env("RUST_LOG", "info")
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .context("starting the syncer")?;
    let stderr = child.stderr.take().context("syncer stderr")?;
    let started: Started = Arc::new(Mutex::new(None));
    let seen = started.clone();
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
    Ok((child, started))
}

/// Whether the child behind `started` logged that its controllers started.
pub(crate) fn has_started(started: &Started) -> bool {
    started.lock().map(|s| s.is_some()).unwrap_or(true)
}

/// The syncer's own count of its requests (`vcsync_api_requests_total` on its `/metrics`), by
/// (cluster, verb, resource): what a real API server cannot tell apart from its other clients'.
pub(crate) async fn syncer_requests(
    address: SocketAddr,
) -> anyhow::Result<BTreeMap<(String, String, String), u64>> {
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
    Ok(vcsync_syncer::metrics::api_requests_in(body))
}
