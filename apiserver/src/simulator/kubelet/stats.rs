//! What a simulated node's containers use, and the kubelet documents that report it: the
//! stats/v1alpha1 `Summary` of `/stats/summary` and the `PodList` of `/runningpods/`. Pure: pods
//! and a time in, JSON out (the Prometheus text of `/metrics/resource` is built from the same
//! figures in [`super::resource_metrics`]).
//!
//! Usage is deterministic and plausible: a container's CPU rate (a few millicores) and memory
//! working set (a few MiB, whole pages) come from a stable hash of the pod's uid and the
//! container's name, bounded by the container's limit (for CPU: its limit, else its request);
//! cumulative CPU is that rate times the seconds since the container started. A pod's figures
//! are the sum of its containers', the node's the sum of its pods'.

use crate::quantity::quantity;
use jiff::Timestamp;
use serde_json::{Value, json};

use crate::simulator::nodes::fnv1a;

/// Bytes in a memory page: working sets are whole pages, as the kernel counts them.
const PAGE: u64 = 4096;
const MIB: u64 = 1024 * 1024;
/// Nano-cores in a millicore.
const MILLICORE: u64 = 1_000_000;

/// One running container's usage at a time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ContainerUsage {
    pub name: String,
    pub start: Timestamp,
    pub nano_cores: u64,
    pub core_nano_seconds: u64,
    pub working_set_bytes: u64,
    pub usage_bytes: u64,
    /// The memory limit, when the container has one (`availableBytes` is what is left of it).
    pub limit_bytes: Option<u64>,
}

/// One running pod's usage: its containers'.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PodUsage {
    pub namespace: String,
    pub name: String,
    pub uid: String,
    pub start: Timestamp,
    pub containers: Vec<ContainerUsage>,
}

impl PodUsage {
    pub fn nano_cores(&self) -> u64 {
        self.containers.iter().map(|c| c.nano_cores).sum()
    }

    pub fn core_nano_seconds(&self) -> u64 {
        self.containers.iter().map(|c| c.core_nano_seconds).sum()
    }

    pub fn working_set_bytes(&self) -> u64 {
        self.containers.iter().map(|c| c.working_set_bytes).sum()
    }

    pub fn usage_bytes(&self) -> u64 {
        self.containers.iter().map(|c| c.usage_bytes).sum()
    }
}

/// `now` to the whole second, as the kubelet's stats times are written.
pub(crate) fn whole_second(now: Timestamp) -> Timestamp {
    Timestamp::from_second(now.as_second()).unwrap_or(now)
}

/// The usage of `pod` at `now` if it is Running: its containers that run (a container whose
/// status says it waits or has ended uses nothing).
pub(crate) fn pod_usage(pod: &Value, now: Timestamp) -> Option<PodUsage> {
    if pod["status"]["phase"].as_str() != Some("Running") {
        return None;
    }
    let uid = pod["metadata"]["uid"].as_str().unwrap_or_default();
    let pod_start = timestamp(&pod["status"]["startTime"])
        .or_else(|| timestamp(&pod["metadata"]["creationTimestamp"]))
        .unwrap_or(now);
    let statuses = pod["status"]["containerStatuses"].as_array();
    let containers = pod["spec"]["containers"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|container| {
            let name = container["name"].as_str()?;
            let status = statuses.and_then(|s| s.iter().find(|s| s["name"].as_str() == Some(name)));
            let start = match status.map(|s| &s["state"]) {
                Some(state) if state["running"].is_object() => {
                    timestamp(&state["running"]["startedAt"]).unwrap_or(pod_start)
                }
                Some(state) if state.is_object() => return None,
                _ => pod_start,
            };
            Some(container_usage(uid, name, &container["resources"], start, now))
        })
        .collect();
    Some(PodUsage {
        namespace: pod["metadata"]["namespace"]
            .as_str()
            .unwrap_or_default()
            .to_string(),
        name: pod["metadata"]["name"].as_str().unwrap_or_default().to_string(),
        uid: uid.to_string(),
        start: pod_start,
        containers,
    })
}

/// Container `name` of the pod with `uid`, with `resources`, started at `start`, at `now`.
fn container_usage(
    uid: &str,
    name: &str,
    resources: &Value,
    start: Timestamp,
    now: Timestamp,
) -> ContainerUsage {
    let hash = fnv1a(format!("{uid}/{name}").as_bytes());
    // 1 to 10 millicores, to the nano-core.
    let mut nano_cores = MILLICORE + hash % (9 * MILLICORE);
    let cpu_bound = quantity(&resources["limits"]["cpu"]).or_else(|| quantity(&resources["requests"]["cpu"]));
    if let Some(bound) = cpu_bound {
        nano_cores = nano_cores.min((bound * 1e9) as u64);
    }
    // 4 to 64 MiB in whole pages, and up to 4 MiB of page cache on top.
    let mut working_set_bytes = (4 * MIB + (hash >> 16) % (60 * MIB)) / PAGE * PAGE;
    let mut usage_bytes = working_set_bytes + (hash >> 40) % (4 * MIB) / PAGE * PAGE;
    let limit_bytes = quantity(&resources["limits"]["memory"]).map(|limit| limit as u64);
    if let Some(limit) = limit_bytes {
        working_set_bytes = working_set_bytes.min(limit / PAGE * PAGE);
        usage_bytes = usage_bytes.min(limit.max(working_set_bytes));
    }
    let seconds = now.as_second().saturating_sub(start.as_second()).max(0) as u64;
    ContainerUsage {
        name: name.to_string(),
        start,
        nano_cores,
        core_nano_seconds: nano_cores.saturating_mul(seconds),
        working_set_bytes,
        usage_bytes,
        limit_bytes,
    }
}

/// The `/stats/summary` of node `node_name` (started at `node_start`, with `memory_capacity`
/// bytes if known) running `pods`, measured at `now` (a whole second).
pub(crate) fn summary(
    node_name: &str,
    node_start: Timestamp,
    memory_capacity: Option<u64>,
    pods: &[PodUsage],
    now: Timestamp,
) -> Value {
    let time = now.to_string();
    let cpu = |nano_cores: u64, core_nano_seconds: u64| json!({"time": time, "usageNanoCores": nano_cores, "usageCoreNanoSeconds": core_nano_seconds});
    let memory = |working_set: u64, usage: u64, limit: Option<u64>| {
        let mut memory = json!({"time": time, "usageBytes": usage, "workingSetBytes": working_set});
        if let Some(limit) = limit {
            memory["availableBytes"] = json!(limit.saturating_sub(working_set));
        }
        memory
    };
    let pod_stats: Vec<Value> = pods
        .iter()
        .map(|pod| {
            let containers: Vec<Value> = pod
                .containers
                .iter()
                .map(|c| {
                    json!({
                        "name": c.name,
                        "startTime": c.start.to_string(),
                        "cpu": cpu(c.nano_cores, c.core_nano_seconds),
                        "memory": memory(c.working_set_bytes, c.usage_bytes, c.limit_bytes),
                    })
                })
                .collect();
            json!({
                "podRef": {"name": pod.name, "namespace": pod.namespace, "uid": pod.uid},
                "startTime": pod.start.to_string(),
                "containers": containers,
                "cpu": cpu(pod.nano_cores(), pod.core_nano_seconds()),
                "memory": memory(pod.working_set_bytes(), pod.usage_bytes(), None),
            })
        })
        .collect();
    let sum = |figure: fn(&PodUsage) -> u64| pods.iter().map(figure).sum::<u64>();
    json!({
        "node": {
            "nodeName": node_name,
            "startTime": node_start.to_string(),
            "cpu": cpu(sum(PodUsage::nano_cores), sum(PodUsage::core_nano_seconds)),
            "memory": memory(sum(PodUsage::working_set_bytes), sum(PodUsage::usage_bytes), memory_capacity),
        },
        "pods": pod_stats,
    })
}

/// The `/runningpods/` PodList: each running pod as the container runtime sees it (uid, name,
/// namespace, and its containers' names and images), as a kubelet encodes it.
pub(crate) fn running_pods(pods: &[&Value]) -> Value {
    let items: Vec<Value> = pods
        .iter()
        .filter(|pod| pod["status"]["phase"].as_str() == Some("Running"))
        .map(|pod| {
            let containers: Vec<Value> = pod["spec"]["containers"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|c| json!({"name": c["name"], "image": c["image"], "resources": {}}))
                .collect();
            let meta = &pod["metadata"];
            json!({
                "metadata": {"name": meta["name"], "namespace": meta["namespace"], "uid": meta["uid"],
                    "creationTimestamp": null},
                "spec": {"containers": containers},
                "status": {},
            })
        })
        .collect();
    json!({"kind": "PodList", "apiVersion": "v1", "metadata": {}, "items": items})
}

fn timestamp(value: &Value) -> Option<Timestamp> {
    value.as_str()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> Timestamp {
        text.parse().unwrap()
    }

    fn running(uid: &str, containers: Value) -> Value {
        json!({"metadata": {"name": "web", "namespace": "ns", "uid": uid},
            "spec": {"nodeName": "n1", "containers": containers},
            "status": {"phase": "Running", "startTime": "2026-01-01T00:00:00Z",
                "containerStatuses": [{"name": "app", "state": {"running": {"startedAt": "2026-01-01T00:00:10Z"}}}]}})
    }

    #[test]
    fn usage_is_stable_bounded_and_accumulates() {
        let now = at("2026-01-01T00:01:10Z");
        let pod = running(
            "u1",
            json!([{"name": "app", "image": "nginx"}, {"name": "side", "image": "busybox"}]),
        );
        let usage = pod_usage(&pod, now).unwrap();
        assert_eq!(usage, pod_usage(&pod, now).unwrap(), "deterministic");
        let app = &usage.containers[0];
        assert_eq!(app.start, at("2026-01-01T00:00:10Z"));
        assert!(
            (MILLICORE..10 * MILLICORE).contains(&app.nano_cores),
            "{}",
            app.nano_cores
        );
        assert_eq!(app.core_nano_seconds, app.nano_cores * 60);
        assert!((4 * MIB..64 * MIB).contains(&app.working_set_bytes));
        assert_eq!(app.working_set_bytes % PAGE, 0);
        assert!(app.usage_bytes >= app.working_set_bytes);
        // No status of its own: the pod's start.
        assert_eq!(
            usage.containers[1].core_nano_seconds,
            usage.containers[1].nano_cores * 70
        );
        assert_ne!(usage.containers[0].nano_cores, usage.containers[1].nano_cores);
        let other = pod_usage(&running("u2", pod["spec"]["containers"].clone()), now).unwrap();
        assert_ne!(
            other.containers[0], usage.containers[0],
            "another uid, other figures"
        );

        let limited = running(
            "u1",
            json!([{"name": "app", "resources":
            {"limits": {"cpu": "500u", "memory": "1Mi"}}}]),
        );
        let app = &pod_usage(&limited, now).unwrap().containers[0];
        assert_eq!((app.nano_cores, app.working_set_bytes), (500_000, MIB));
        assert_eq!((app.usage_bytes, app.limit_bytes), (MIB, Some(MIB)));
        let requested = running(
            "u1",
            json!([{"name": "app", "resources": {"requests": {"cpu": "1m"}}}]),
        );
        assert_eq!(
            pod_usage(&requested, now).unwrap().containers[0].nano_cores,
            MILLICORE
        );
    }

    #[test]
    fn only_running_pods_and_containers_count() {
        let now = at("2026-01-01T00:01:10Z");
        let mut pod = running("u1", json!([{"name": "app"}]));
        pod["status"]["containerStatuses"][0]["state"] = json!({"waiting": {"reason": "CrashLoopBackOff"}});
        assert!(pod_usage(&pod, now).unwrap().containers.is_empty());
        pod["status"]["phase"] = json!("Pending");
        assert_eq!(pod_usage(&pod, now), None);
    }

    #[test]
    fn the_summary_sums_containers_into_pods_and_pods_into_the_node() {
        let now = at("2026-01-01T00:01:10Z");
        let a = pod_usage(&running("u1", json!([{"name": "app"}, {"name": "side"}])), now).unwrap();
        let mut b = pod_usage(&running("u2", json!([{"name": "app"}])), now).unwrap();
        b.name = "db".into();
        let summary = summary(
            "n1",
            at("2026-01-01T00:00:00Z"),
            Some(64 * MIB * 1024),
            &[a.clone(), b.clone()],
            now,
        );
        let node = &summary["node"];
        assert_eq!(node["nodeName"], "n1");
        assert_eq!(node["startTime"], "2026-01-01T00:00:00Z");
        assert_eq!(node["cpu"]["time"], "2026-01-01T00:01:10Z");
        assert_eq!(node["cpu"]["usageNanoCores"], a.nano_cores() + b.nano_cores());
        assert_eq!(
            node["cpu"]["usageCoreNanoSeconds"],
            a.core_nano_seconds() + b.core_nano_seconds()
        );
        let working_set = a.working_set_bytes() + b.working_set_bytes();
        assert_eq!(node["memory"]["workingSetBytes"], working_set);
        assert_eq!(node["memory"]["availableBytes"], 64 * MIB * 1024 - working_set);
        let pod = &summary["pods"][0];
        assert_eq!(
            pod["podRef"],
            json!({"name": "web", "namespace": "ns", "uid": "u1"})
        );
        assert_eq!(pod["startTime"], "2026-01-01T00:00:00Z");
        assert_eq!(pod["cpu"]["usageNanoCores"], a.nano_cores());
        assert_eq!(pod["memory"]["usageBytes"], a.usage_bytes());
        assert!(pod["memory"].get("availableBytes").is_none());
        let container = &pod["containers"][0];
        assert_eq!(container["name"], "app");
        assert_eq!(container["startTime"], "2026-01-01T00:00:10Z");
        assert_eq!(container["cpu"]["usageNanoCores"], a.containers[0].nano_cores);
        assert_eq!(
            container["memory"]["workingSetBytes"],
            a.containers[0].working_set_bytes
        );
        assert_eq!(summary["pods"][1]["podRef"]["name"], "db");
    }

    #[test]
    fn running_pods_are_listed_as_the_runtime_sees_them() {
        let pod = running(
            "u1",
            json!([{"name": "app", "image": "nginx:1", "ports": [{"containerPort": 80}]}]),
        );
        let pending = json!({"metadata": {"name": "p"}, "status": {"phase": "Pending"}});
        let list = running_pods(&[&pod, &pending]);
        assert_eq!(
            list,
            json!({"kind": "PodList", "apiVersion": "v1", "metadata": {}, "items": [{
                "metadata": {"name": "web", "namespace": "ns", "uid": "u1", "creationTimestamp": null},
                "spec": {"containers": [{"name": "app", "image": "nginx:1", "resources": {}}]},
                "status": {}}]})
        );
    }

    #[test]
    fn quantities_in_base_units() {
        let q = |text: &str| quantity(&json!(text));
        assert_eq!(q("500m"), Some(0.5));
        assert_eq!(q("2"), Some(2.0));
        assert_eq!(q("64Mi"), Some(64.0 * 1024.0 * 1024.0));
        assert_eq!(q("1G"), Some(1e9));
        assert_eq!(q("1e3"), Some(1000.0));
        assert_eq!(q("x"), None);
        assert_eq!(quantity(&Value::Null), None);
    }
}
