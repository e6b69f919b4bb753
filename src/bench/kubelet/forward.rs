//! Port-forward throughput: the same bytes pushed through the pod's echo by `kubectl
//! port-forward` on each side, in alternating rounds.

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use std::{
    collections::BTreeMap,
    path::Path,
    time::{Duration, Instant},
};

use anyhow::{Context, bail};
use k8s_openapi::serde_json::{Value, json};

use super::{kubectl::*, target::*};
use crate::bench::figures::*;
use crate::bench::harness::*;

/// Transfers of each port-forward (the median is reported).
const FORWARD_ROUNDS: usize = 3;
/// Chunks of the port-forward transfer.
const CHUNK: usize = 64 * 1024;
/// Bytes the port-forward transfer sends ahead of what came back. Bounded as an application
/// protocol bounds it: unbounded, the loopback sockets of the chain hold megabytes each, and
/// the simulated kubelet resets a port-forward stream that has more than 16 MiB unread (a
/// client that ignores flow control cannot make it buffer without end).
const WINDOW: usize = 4 * 1024 * 1024;

/// kubectl on each side, `bytes` pushed through each echo, in alternating rounds on a new
/// connection each; the median round of each side, the rounds, and the CPU of each side.
pub(super) async fn forward_phase(
    kubectl: &Path,
    [direct, through]: [&Target; 2],
    dir: &Path,
    bytes: usize,
    bench: &Bench,
    out: &mut BTreeMap<String, Value>,
) -> anyhow::Result<()> {
    let forwards = [
        PortForward::start(kubectl, direct, dir, bench.timeout).await?,
        PortForward::start(kubectl, through, dir, bench.timeout).await?,
    ];
    let mut rates: [Vec<f64>; 2] = Default::default();
    // CPU seconds of all rounds of each side: this process (and the planes), the syncer,
    // kubectl.
    let mut cpu = [[0.0; 3]; 2];
    for round in 0..FORWARD_ROUNDS {
        let order = if round % 2 == 0 { [0, 1] } else { [1, 0] };
        for side in order {
            let (forward, label) = (&forwards[side], [direct, through][side].label);
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
    Ok(())
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
}
