//! Timed samples of both paths, alternating, and the figures of a phase made of them.

use std::{collections::BTreeMap, time::Instant};

use k8s_openapi::serde_json::{self, Value, json};

use super::target::*;
use crate::bench::figures::*;
use crate::bench::harness::*;

/// `n` timed requests on each target, alternating (which goes first alternates too); the
/// latencies in milliseconds, (through, direct).
pub(super) async fn alternate<'a, F>(
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
pub(super) async fn record_phase(
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
