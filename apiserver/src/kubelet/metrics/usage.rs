//! From kubelet summaries to metrics.k8s.io objects, as metrics-server builds them (pure): the
//! few summary fields it reads, `PodMetrics` and `NodeMetrics` with their usage as canonical
//! quantities (CPU in cores, DecimalSI; memory working set in bytes, BinarySI), and the Table
//! `kubectl get podmetrics` asks for (Name, cpu, memory, Window).

use serde::Deserialize;
use serde_json::{Value, json};

/// The interval the usage figures stand for, as a `metav1.Duration`.
pub(crate) const WINDOW: &str = "30s";

/// A stats/v1alpha1 `Summary`: what metrics-server reads of it.
#[derive(Debug, Default, Deserialize)]
pub(crate) struct Summary {
    #[serde(default)]
    pub node: NodeStats,
    #[serde(default)]
    pub pods: Vec<PodStats>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct NodeStats {
    pub cpu: Option<CpuStats>,
    pub memory: Option<MemoryStats>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct PodStats {
    pub pod_ref: PodRef,
    #[serde(default)]
    pub containers: Vec<ContainerStats>,
}

#[derive(Debug, Deserialize)]
pub(crate) struct PodRef {
    pub name: String,
    pub namespace: String,
    #[serde(default)]
    pub uid: String,
}

#[derive(Debug, Deserialize)]
pub(crate) struct ContainerStats {
    pub name: String,
    pub cpu: Option<CpuStats>,
    pub memory: Option<MemoryStats>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct CpuStats {
    pub time: Option<String>,
    pub usage_nano_cores: Option<u64>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct MemoryStats {
    pub working_set_bytes: Option<u64>,
}

/// A metrics object and its usage totals (for the Table).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Item {
    pub object: Value,
    pub nano_cores: u64,
    pub bytes: u64,
}

/// CPU usage and memory working set at a time, if both are reported.
fn usage<'a>(cpu: Option<&'a CpuStats>, memory: Option<&MemoryStats>) -> Option<(u64, u64, Option<&'a str>)> {
    let cpu = cpu?;
    Some((
        cpu.usage_nano_cores?,
        memory?.working_set_bytes?,
        cpu.time.as_deref(),
    ))
}

/// The stats of `pod` (a stored Pod) in `summary`, if the node reports it: same namespace and
/// name, and the same uid where both name one (not a deleted pod of the same name).
pub(crate) fn find_pod<'a>(summary: &'a Summary, pod: &Value) -> Option<&'a PodStats> {
    let meta = &pod["metadata"];
    let uid = meta["uid"].as_str().unwrap_or_default();
    summary.pods.iter().find(|stats| {
        let found = &stats.pod_ref;
        Some(found.name.as_str()) == meta["name"].as_str()
            && Some(found.namespace.as_str()) == meta["namespace"].as_str()
            && (found.uid.is_empty() || uid.is_empty() || found.uid == uid)
    })
}

/// The metadata of a metrics object named after `object` (a Pod or Node): its name, namespace
/// and labels, created `now` (metrics are made when asked for).
fn metadata(object: &Value, now: &str) -> Value {
    let meta = &object["metadata"];
    let mut metadata = json!({"name": meta["name"], "creationTimestamp": now});
    if let Some(namespace) = meta["namespace"].as_str() {
        metadata["namespace"] = json!(namespace);
    }
    if meta["labels"].as_object().is_some_and(|l| !l.is_empty()) {
        metadata["labels"] = meta["labels"].clone();
    }
    metadata
}

/// The `PodMetrics` of `pod` from its `stats`, made at `now`; None when a container's CPU or
/// memory is missing or the pod has no containers (metrics-server leaves such a pod out).
pub(crate) fn pod_metrics(pod: &Value, stats: &PodStats, now: &str) -> Option<Item> {
    let mut containers = Vec::new();
    let (mut nano_cores, mut bytes, mut timestamp) = (0, 0, None::<&str>);
    for container in &stats.containers {
        let (cpu, memory, time) = usage(container.cpu.as_ref(), container.memory.as_ref())?;
        nano_cores += cpu;
        bytes += memory;
        timestamp = timestamp.max(time);
        containers.push(json!({"name": container.name,
            "usage": {"cpu": cpu_quantity(cpu), "memory": memory_quantity(memory)}}));
    }
    if containers.is_empty() {
        return None;
    }
    let object = json!({
        "kind": "PodMetrics",
        "apiVersion": "metrics.k8s.io/v1beta1",
        "metadata": metadata(pod, now),
        "timestamp": timestamp.unwrap_or(now),
        "window": WINDOW,
        "containers": containers,
    });
    Some(Item {
        object,
        nano_cores,
        bytes,
    })
}

/// The `NodeMetrics` of `node` from its `stats`, made at `now`; None without CPU or memory.
pub(crate) fn node_metrics(node: &Value, stats: &NodeStats, now: &str) -> Option<Item> {
    let (nano_cores, bytes, time) = usage(stats.cpu.as_ref(), stats.memory.as_ref())?;
    let object = json!({
        "kind": "NodeMetrics",
        "apiVersion": "metrics.k8s.io/v1beta1",
        "metadata": metadata(node, now),
        "timestamp": time.unwrap_or(now),
        "window": WINDOW,
        "usage": {"cpu": cpu_quantity(nano_cores), "memory": memory_quantity(bytes)},
    });
    Some(Item {
        object,
        nano_cores,
        bytes,
    })
}

/// `nano_cores` as a canonical DecimalSI quantity (`resource.NewScaledQuantity(n, -9)`):
/// the largest of n, u, m, (cores), k, M, G that keeps the number whole.
pub(crate) fn cpu_quantity(nano_cores: u64) -> String {
    if nano_cores == 0 {
        return "0".to_string();
    }
    let (mut number, mut suffix) = (nano_cores, 0);
    const SUFFIXES: [&str; 7] = ["n", "u", "m", "", "k", "M", "G"];
    while number % 1000 == 0 && suffix + 1 < SUFFIXES.len() {
        number /= 1000;
        suffix += 1;
    }
    format!("{number}{}", SUFFIXES[suffix])
}

/// `bytes` as a canonical BinarySI quantity (`resource.NewQuantity(n, BinarySI)`): below 1024
/// plain, else the largest of Ki, Mi, Gi, ... that keeps the number whole (none: plain bytes).
pub(crate) fn memory_quantity(bytes: u64) -> String {
    if bytes < 1024 {
        return bytes.to_string();
    }
    let (mut number, mut suffix) = (bytes, 0);
    const SUFFIXES: [&str; 7] = ["", "Ki", "Mi", "Gi", "Ti", "Pi", "Ei"];
    while number % 1024 == 0 && suffix + 1 < SUFFIXES.len() {
        number /= 1024;
        suffix += 1;
    }
    format!("{number}{}", SUFFIXES[suffix])
}

/// The `meta.k8s.io/v1` Table of `items`, as metrics-server converts them: Name, one column
/// per resource (summed over a pod's containers) and Window; each row carries its object's
/// metadata.
pub(crate) fn table(items: &[Item], metadata: Value) -> Value {
    let rows: Vec<Value> = items
        .iter()
        .map(|item| {
            let meta = &item.object["metadata"];
            json!({
                "cells": [meta["name"], cpu_quantity(item.nano_cores), memory_quantity(item.bytes), WINDOW],
                "object": {"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": meta},
            })
        })
        .collect();
    let column = |name: &str, format: &str, description: &str| json!({"name": name, "type": "string", "format": format, "description": description, "priority": 0});
    json!({
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": metadata,
        "columnDefinitions": [
            column("Name", "name", "Name of the resource"),
            column("cpu", "quantity", ""),
            column("memory", "quantity", ""),
            column("Window", "duration", ""),
        ],
        "rows": rows,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn summary() -> Summary {
        serde_json::from_value(json!({
            "node": {"nodeName": "n1", "startTime": "2026-01-01T00:00:00Z",
                "cpu": {"time": "2026-01-01T00:01:00Z", "usageNanoCores": 7_500_000, "usageCoreNanoSeconds": 9},
                "memory": {"time": "2026-01-01T00:01:00Z", "workingSetBytes": 12_582_912u64, "usageBytes": 13_000_000u64}},
            "pods": [{"podRef": {"name": "web", "namespace": "ns", "uid": "u1"}, "startTime": "2026-01-01T00:00:00Z",
                "containers": [
                    {"name": "app", "startTime": "2026-01-01T00:00:00Z",
                        "cpu": {"time": "2026-01-01T00:01:00Z", "usageNanoCores": 2_500_000, "usageCoreNanoSeconds": 1},
                        "memory": {"time": "2026-01-01T00:01:00Z", "workingSetBytes": 4_194_304u64}},
                    {"name": "side", "startTime": "2026-01-01T00:00:00Z",
                        "cpu": {"time": "2026-01-01T00:01:01Z", "usageNanoCores": 5_000_123},
                        "memory": {"time": "2026-01-01T00:01:00Z", "workingSetBytes": 8_392_704u64}}],
                "cpu": {"time": "2026-01-01T00:01:00Z", "usageNanoCores": 7_500_123},
                "memory": {"time": "2026-01-01T00:01:00Z", "workingSetBytes": 12_587_008u64}},
                {"podRef": {"name": "cold", "namespace": "ns", "uid": "u2"}, "containers": [{"name": "app"}]}]
        }))
        .unwrap()
    }

    #[test]
    fn quantities_are_canonical() {
        assert_eq!(cpu_quantity(0), "0");
        assert_eq!(cpu_quantity(2_500_000), "2500u");
        assert_eq!(cpu_quantity(5_000_123), "5000123n");
        assert_eq!(cpu_quantity(3_000_000), "3m");
        assert_eq!(cpu_quantity(2_000_000_000), "2");
        assert_eq!(memory_quantity(0), "0");
        assert_eq!(memory_quantity(1000), "1000");
        assert_eq!(memory_quantity(4_194_304), "4Mi");
        assert_eq!(memory_quantity(8_392_704), "8196Ki");
        assert_eq!(memory_quantity(5_000_000), "5000000");
    }

    #[test]
    fn pod_metrics_follow_the_summary() {
        let summary = summary();
        let pod =
            json!({"metadata": {"name": "web", "namespace": "ns", "uid": "u1", "labels": {"app": "web"}}});
        let stats = find_pod(&summary, &pod).unwrap();
        let item = pod_metrics(&pod, stats, "2026-01-01T00:01:05Z").unwrap();
        assert_eq!(
            item.object,
            json!({"kind": "PodMetrics", "apiVersion": "metrics.k8s.io/v1beta1",
                "metadata": {"name": "web", "namespace": "ns", "labels": {"app": "web"},
                    "creationTimestamp": "2026-01-01T00:01:05Z"},
                "timestamp": "2026-01-01T00:01:01Z", "window": "30s",
                "containers": [{"name": "app", "usage": {"cpu": "2500u", "memory": "4Mi"}},
                    {"name": "side", "usage": {"cpu": "5000123n", "memory": "8196Ki"}}]})
        );
        assert_eq!((item.nano_cores, item.bytes), (7_500_123, 12_587_008));
        // Another pod of the same name (another uid) is not this one.
        let recreated = json!({"metadata": {"name": "web", "namespace": "ns", "uid": "u9"}});
        assert!(find_pod(&summary, &recreated).is_none());
        // A container without figures: no metrics for the pod.
        let cold = json!({"metadata": {"name": "cold", "namespace": "ns"}});
        assert!(pod_metrics(&cold, find_pod(&summary, &cold).unwrap(), "now").is_none());
    }

    #[test]
    fn node_metrics_and_tables() {
        let summary = summary();
        let node = json!({"metadata": {"name": "n1", "labels": {"kubernetes.io/hostname": "n1"}}});
        let item = node_metrics(&node, &summary.node, "2026-01-01T00:01:05Z").unwrap();
        assert_eq!(
            item.object,
            json!({"kind": "NodeMetrics", "apiVersion": "metrics.k8s.io/v1beta1",
                "metadata": {"name": "n1", "labels": {"kubernetes.io/hostname": "n1"},
                    "creationTimestamp": "2026-01-01T00:01:05Z"},
                "timestamp": "2026-01-01T00:01:00Z", "window": "30s",
                "usage": {"cpu": "7500u", "memory": "12Mi"}})
        );
        assert!(node_metrics(&node, &NodeStats::default(), "now").is_none());
        let table = table(&[item], json!({}));
        assert_eq!(table["rows"][0]["cells"], json!(["n1", "7500u", "12Mi", "30s"]));
        assert_eq!(table["rows"][0]["object"]["metadata"]["name"], "n1");
        let names: Vec<&str> = table["columnDefinitions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["name"].as_str().unwrap())
            .collect();
        assert_eq!(names, ["Name", "cpu", "memory", "Window"]);
    }
}
