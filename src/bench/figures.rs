//! Figures: percentiles, rounding, and the syncer's requests by cluster, verb and resource.

use std::{collections::BTreeMap, time::Duration};

use k8s_openapi::serde_json::{self, Value, json};
use vcsync_apiserver::RequestCounters;

use super::{args::*, objects::*};

pub(super) fn percentile(sorted: &[f64], p: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, sorted.len()) - 1])
}

/// p50, p95, p99 and max of latencies in milliseconds.
pub(super) fn latency_fields(prefix: &str, mut ms: Vec<f64>, out: &mut BTreeMap<String, Value>) {
    ms.sort_by(f64::total_cmp);
    out.insert(format!("{prefix}_samples"), json!(ms.len()));
    for (name, p) in [("p50", 50.0), ("p95", 95.0), ("p99", 99.0), ("max", 100.0)] {
        if let Some(v) = percentile(&ms, p) {
            out.insert(format!("{prefix}_{name}_ms"), json!(round3(v)));
        }
    }
}

/// Reconciles per pod of each syncer, read from the syncer's `/metrics` text
/// (`vcsync_reconciles_total{syncer="..."}`).
pub(super) fn reconciles_per_pod(metrics: &str, pods: usize) -> Value {
    per_pod_by_label(metrics, "vcsync_reconciles_total{syncer=\"", pods)
}

/// Bytes per pod each informer's cache holds, with their sum under `"all"`, read from the
/// syncer's `/metrics` text (`vcsync_cache_bytes{cache="..."}`).
pub(super) fn cache_bytes_per_pod(metrics: &str, pods: usize) -> Value {
    let mut per_cache = per_pod_by_label(metrics, "vcsync_cache_bytes{cache=\"", pods);
    if let Value::Object(caches) = &mut per_cache {
        let all: f64 = caches.values().filter_map(Value::as_f64).sum();
        caches.insert("all".into(), json!(all.round()));
    }
    per_cache
}

/// The non-zero samples of one single-label metric, each divided by `pods`: `prefix` is the
/// metric's name up to its label's value.
fn per_pod_by_label(metrics: &str, prefix: &str, pods: usize) -> Value {
    let per_label: serde_json::Map<String, Value> = metrics
        .lines()
        .filter_map(|line| line.strip_prefix(prefix))
        .filter_map(|rest| rest.split_once("\"} "))
        .filter_map(|(label, n)| Some((label.to_string(), n.trim().parse::<f64>().ok()?)))
        .filter(|(_, n)| *n > 0.0)
        .map(|(label, n)| (label, json!(round3(n / pods.max(1) as f64))))
        .collect();
    Value::Object(per_label)
}

pub(super) fn round3(v: f64) -> f64 {
    (v * 1000.0).round() / 1000.0
}

pub(super) fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// The syncer's requests: the servers' counts minus the bench client's.
pub(super) struct SyncerRequests {
    /// (cluster, verb, resource) -> count.
    pub(super) counts: BTreeMap<(String, String, String), u64>,
}

impl SyncerRequests {
    pub(super) fn new(
        host: &RequestCounters,
        virt: &RequestCounters,
        client: &ClientRequests,
        watches: u64,
    ) -> Self {
        let mut counts = BTreeMap::new();
        for (cluster, counters) in [("host", host), ("virtual", virt)] {
            for (verb, resource, n) in counters.iter() {
                let mut mine = client.get(cluster, verb, resource);
                // The bench's watches: pods on both sides, config maps and secrets on the host.
                let watched = match cluster {
                    "host" => ["pods", "configmaps", "secrets"].contains(&resource),
                    _ => resource == "pods",
                };
                if watched && (verb == "list" || verb == "watch") {
                    mine += watches;
                }
                let n = n.saturating_sub(mine);
                if n > 0 {
                    counts.insert((cluster.to_string(), verb.to_string(), resource.to_string()), n);
                }
            }
        }
        SyncerRequests { counts }
    }

    pub(super) fn writes(&self, filter: impl Fn(&str, &str) -> bool) -> u64 {
        self.counts
            .iter()
            .filter(|((c, v, r), _)| WRITE_VERBS.contains(&v.as_str()) && filter(c, r))
            .map(|(_, n)| n)
            .sum()
    }

    pub(super) fn heartbeat_writes(&self) -> u64 {
        self.writes(|c, r| c == "virtual" && HEARTBEAT_RESOURCES.contains(&r))
    }

    /// Writes except heartbeats.
    pub(super) fn object_writes(&self) -> u64 {
        self.writes(|c, r| !(c == "virtual" && HEARTBEAT_RESOURCES.contains(&r)))
    }

    /// Writes on pods and their subresources, both clusters.
    pub(super) fn pod_writes(&self) -> u64 {
        self.writes(|_, r| r == "pods" || r.starts_with("pods/"))
    }

    pub(super) fn to_json(&self, per: usize) -> Value {
        let per = per.max(1) as f64;
        let mut out = serde_json::Map::new();
        for ((cluster, verb, resource), n) in &self.counts {
            out.insert(
                format!("{cluster} {verb} {resource}"),
                json!({"count": n, "per_pod": round3(*n as f64 / per)}),
            );
        }
        Value::Object(out)
    }
}
