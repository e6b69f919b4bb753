//! The kubelet's resource figures for the tenant's pods, in the kubelet's three forms:
//! `/stats/summary` (stats/v1alpha1 Summary JSON), `/metrics/resource` (Prometheus text) and
//! `/runningpods/` (a PodList). Pure: usage in, documents out.
//!
//! Usage comes from the host's `metrics.k8s.io` PodMetrics (a rate per container and a working
//! set), read by [`super::usage`]. A kubelet also reports cumulative CPU time, which PodMetrics
//! does not carry: [`CpuTotals`] integrates the rates of successive samples into a counter that
//! starts at this process's first sample of a container (a counter reset, as after a restart),
//! so a scraper that takes the rate of the counter (metrics-server does) gets the host's rate.
//!
//! One kubelet endpoint serves every virtual node of an instance and cannot tell which node a
//! caller dialled, so these documents hold every pod of the tenant, once, and the node figures
//! are the tenant's total, under the instance's name.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::Mutex;

use k8s_openapi::jiff::{SignedDuration, Timestamp};
use serde_json::{Value, json};

/// One container's usage at a sample time.
#[derive(Clone, Debug, PartialEq)]
pub struct ContainerUsage {
    pub name: String,
    pub started: Option<Timestamp>,
    /// CPU rate in nano-cores.
    pub cpu_nano_cores: Option<u64>,
    /// CPU time consumed, in core-nanoseconds (see [`CpuTotals`]).
    pub cpu_core_nano_seconds: Option<u64>,
    pub memory_working_set_bytes: Option<u64>,
}

/// One tenant pod, under its virtual name, and its containers' usage.
#[derive(Clone, Debug, PartialEq)]
pub struct PodUsage {
    pub namespace: String,
    pub name: String,
    pub uid: String,
    pub started: Option<Timestamp>,
    /// When the host sampled the figures (`now` where it has none).
    pub sampled: Timestamp,
    pub containers: Vec<ContainerUsage>,
}

/// Sums of optional figures: None only when every part is None.
fn sum(parts: impl Iterator<Item = Option<u64>>) -> Option<u64> {
    parts.fold(None, |total, part| match (total, part) {
        (None, None) => None,
        (total, part) => Some(total.unwrap_or(0).saturating_add(part.unwrap_or(0))),
    })
}

fn cpu_json(time: Timestamp, rate: Option<u64>, total: Option<u64>) -> Value {
    let mut cpu = json!({"time": time.to_string()});
    if let Some(rate) = rate {
        cpu["usageNanoCores"] = json!(rate);
    }
    if let Some(total) = total {
        cpu["usageCoreNanoSeconds"] = json!(total);
    }
    cpu
}

fn memory_json(time: Timestamp, working_set: Option<u64>) -> Value {
    let mut memory = json!({"time": time.to_string()});
    if let Some(bytes) = working_set {
        memory["workingSetBytes"] = json!(bytes);
        memory["usageBytes"] = json!(bytes);
    }
    memory
}

impl PodUsage {
    fn cpu_rate(&self) -> Option<u64> {
        sum(self.containers.iter().map(|c| c.cpu_nano_cores))
    }

    fn cpu_total(&self) -> Option<u64> {
        sum(self.containers.iter().map(|c| c.cpu_core_nano_seconds))
    }

    fn memory(&self) -> Option<u64> {
        sum(self.containers.iter().map(|c| c.memory_working_set_bytes))
    }
}

/// The stats/v1alpha1 Summary of `pods`, with a node section named `node` summing them.
pub fn summary(node: &str, pods: &[PodUsage], now: Timestamp) -> Value {
    let pod_stats: Vec<Value> = pods
        .iter()
        .map(|pod| {
            let containers: Vec<Value> = pod
                .containers
                .iter()
                .map(|c| {
                    let mut stats = json!({
                        "name": c.name,
                        "cpu": cpu_json(pod.sampled, c.cpu_nano_cores, c.cpu_core_nano_seconds),
                        "memory": memory_json(pod.sampled, c.memory_working_set_bytes),
                    });
                    if let Some(started) = c.started.or(pod.started) {
                        stats["startTime"] = json!(started.to_string());
                    }
                    stats
                })
                .collect();
            let mut stats = json!({
                "podRef": {"name": pod.name, "namespace": pod.namespace, "uid": pod.uid},
                "containers": containers,
                "cpu": cpu_json(pod.sampled, pod.cpu_rate(), pod.cpu_total()),
                "memory": memory_json(pod.sampled, pod.memory()),
            });
            if let Some(started) = pod.started {
                stats["startTime"] = json!(started.to_string());
            }
            stats
        })
        .collect();
    let node_rate = sum(pods.iter().map(PodUsage::cpu_rate));
    let node_total = sum(pods.iter().map(PodUsage::cpu_total));
    let node_memory = sum(pods.iter().map(PodUsage::memory));
    let node_started = pods.iter().filter_map(|pod| pod.started).min().unwrap_or(now);
    json!({
        "node": {
            "nodeName": node,
            "startTime": node_started.to_string(),
            "cpu": cpu_json(now, node_rate, node_total),
            "memory": memory_json(now, node_memory),
        },
        "pods": pod_stats,
    })
}

/// A metric family of the kubelet's `/metrics/resource`.
struct Family {
    name: &'static str,
    help: &'static str,
    kind: &'static str,
    samples: Vec<(String, f64, Timestamp)>,
}

fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn container_labels(pod: &PodUsage, container: &str) -> String {
    format!(
        "{{container=\"{}\",namespace=\"{}\",pod=\"{}\"}}",
        escape(container),
        escape(&pod.namespace),
        escape(&pod.name)
    )
}

fn pod_labels(pod: &PodUsage) -> String {
    format!(
        "{{namespace=\"{}\",pod=\"{}\"}}",
        escape(&pod.namespace),
        escape(&pod.name)
    )
}

impl Family {
    fn new(name: &'static str, kind: &'static str, help: &'static str) -> Self {
        Family {
            name,
            help,
            kind,
            samples: Vec::new(),
        }
    }

    fn push(&mut self, labels: String, value: f64, time: Timestamp) {
        self.samples.push((labels, value, time));
    }
}

/// The Prometheus text of the kubelet's `/metrics/resource` for `pods`.
pub fn resource_metrics(pods: &[PodUsage], now: Timestamp) -> String {
    let seconds = |nanos: u64| nanos as f64 / 1e9;
    let mut container_cpu = Family::new(
        "container_cpu_usage_seconds_total",
        "counter",
        "[STABLE] Cumulative cpu time consumed by the container in core-seconds",
    );
    let mut container_memory = Family::new(
        "container_memory_working_set_bytes",
        "gauge",
        "[STABLE] Current working set of the container in bytes",
    );
    let mut container_start = Family::new(
        "container_start_time_seconds",
        "gauge",
        "[STABLE] Start time of the container since unix epoch in seconds",
    );
    let mut node_cpu = Family::new(
        "node_cpu_usage_seconds_total",
        "counter",
        "[STABLE] Cumulative cpu time consumed by the node in core-seconds",
    );
    let mut node_memory = Family::new(
        "node_memory_working_set_bytes",
        "gauge",
        "[STABLE] Current working set of the node in bytes",
    );
    let mut pod_cpu = Family::new(
        "pod_cpu_usage_seconds_total",
        "counter",
        "[STABLE] Cumulative cpu time consumed by the pod in core-seconds",
    );
    let mut pod_memory = Family::new(
        "pod_memory_working_set_bytes",
        "gauge",
        "[STABLE] Current working set of the pod in bytes",
    );
    let mut scrape_error = Family::new(
        "resource_scrape_error",
        "gauge",
        "[STABLE] 1 if there was an error while getting container metrics, 0 otherwise",
    );
    scrape_error.push(String::new(), 0.0, now);
    for pod in pods {
        for container in &pod.containers {
            let labels = container_labels(pod, &container.name);
            if let Some(total) = container.cpu_core_nano_seconds {
                container_cpu.push(labels.clone(), seconds(total), pod.sampled);
            }
            if let Some(bytes) = container.memory_working_set_bytes {
                container_memory.push(labels.clone(), bytes as f64, pod.sampled);
            }
            if let Some(started) = container.started.or(pod.started) {
                let started = started.as_millisecond() as f64 / 1e3;
                container_start.push(labels, started, pod.sampled);
            }
        }
        if let Some(total) = pod.cpu_total() {
            pod_cpu.push(pod_labels(pod), seconds(total), pod.sampled);
        }
        if let Some(bytes) = pod.memory() {
            pod_memory.push(pod_labels(pod), bytes as f64, pod.sampled);
        }
    }
    if let Some(total) = sum(pods.iter().map(PodUsage::cpu_total)) {
        node_cpu.push(String::new(), seconds(total), now);
    }
    if let Some(bytes) = sum(pods.iter().map(PodUsage::memory)) {
        node_memory.push(String::new(), bytes as f64, now);
    }
    let families = [
        container_cpu,
        container_memory,
        container_start,
        node_cpu,
        node_memory,
        pod_cpu,
        pod_memory,
        scrape_error,
    ];
    let mut text = String::new();
    for family in families.iter().filter(|f| !f.samples.is_empty()) {
        let _ = writeln!(text, "# HELP {} {}", family.name, family.help);
        let _ = writeln!(text, "# TYPE {} {}", family.name, family.kind);
        for (labels, value, time) in &family.samples {
            let _ = writeln!(text, "{}{labels} {value} {}", family.name, time.as_millisecond());
        }
    }
    text
}

/// The kubelet's `/runningpods/`: a PodList of the running pods, each with its name,
/// namespace, UID and containers (name and image), as the container runtime knows them.
pub fn running_pods(pods: &[k8s_openapi::api::core::v1::Pod]) -> Value {
    let items: Vec<Value> = pods
        .iter()
        .map(|pod| {
            let containers: Vec<Value> = pod
                .spec
                .iter()
                .flat_map(|spec| &spec.containers)
                .map(|c| json!({"name": c.name, "image": c.image.clone().unwrap_or_default(), "resources": {}}))
                .collect();
            json!({
                "metadata": {
                    "name": pod.metadata.name,
                    "namespace": pod.metadata.namespace,
                    "uid": pod.metadata.uid,
                    "creationTimestamp": null,
                },
                "spec": {"containers": containers},
                "status": {},
            })
        })
        .collect();
    json!({"kind": "PodList", "apiVersion": "v1", "metadata": {}, "items": items})
}

/// Cumulative CPU time per container, integrated from successive rate samples. Keyed by pod UID
/// and container name; an entry not sampled for [`CpuTotals::FORGET_AFTER`] is dropped.
#[derive(Debug, Default)]
pub struct CpuTotals {
    totals: Mutex<HashMap<(String, String), Counter>>,
}

#[derive(Clone, Copy, Debug)]
struct Counter {
    sampled: Timestamp,
    core_nanos: u64,
    seen: Timestamp,
}

impl CpuTotals {
    /// How long a container's counter outlives its last sample.
    pub const FORGET_AFTER: SignedDuration = SignedDuration::from_secs(600);

    /// The counter of `(pod_uid, container)` after a sample of `rate` nano-cores at `sampled`,
    /// covering `window` (the first sample of a container counts its window; a repeated sample
    /// adds nothing; a later one adds the rate times the time since the last).
    pub fn advance(
        &self,
        key: (&str, &str),
        sampled: Timestamp,
        window: SignedDuration,
        rate: u64,
        now: Timestamp,
    ) -> u64 {
        let mut totals = self.totals.lock().unwrap_or_else(|e| e.into_inner());
        let key = (key.0.to_string(), key.1.to_string());
        let counter = totals.entry(key).or_insert(Counter {
            sampled,
            core_nanos: core_nanos(rate, window),
            seen: now,
        });
        if sampled > counter.sampled {
            let elapsed = sampled.duration_since(counter.sampled);
            counter.core_nanos = counter.core_nanos.saturating_add(core_nanos(rate, elapsed));
            counter.sampled = sampled;
        }
        counter.seen = now;
        counter.core_nanos
    }

    /// Drops the counters not sampled since `now - FORGET_AFTER`.
    pub fn forget_stale(&self, now: Timestamp) {
        let mut totals = self.totals.lock().unwrap_or_else(|e| e.into_inner());
        totals.retain(|_, counter| now.duration_since(counter.seen) < Self::FORGET_AFTER);
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.totals.lock().unwrap().len()
    }
}

/// Core-nanoseconds used at `rate` nano-cores over `span`.
fn core_nanos(rate: u64, span: SignedDuration) -> u64 {
    let nanos = span.as_nanos().max(0) as u128;
    (rate as u128 * nanos / 1_000_000_000).min(u64::MAX as u128) as u64
}

#[cfg(test)]
#[path = "stats_tests.rs"]
mod tests;
