//! The tenant's pods and their usage, for the kubelet's stats and metrics: the running virtual
//! pods, their host twins (this instance's own copies, checked as for any kubelet request), and
//! the host's `metrics.k8s.io` PodMetrics of those twins, read with namespaced list rights in
//! the host namespaces the pods map to. Names go back to the virtual ones; containers the host
//! pod has and the virtual pod does not (added on the way down) are left out.
//!
//! Where the host serves no PodMetrics (no metrics-server), or has none yet for a pod, the pod
//! is reported without figures, as a kubelet reports a container it has no stats for.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::api::{ApiResource, DynamicObject, ListParams, ObjectMeta};
use kube::{Api, Client};
use serde::Deserialize;
use vcsync_translators::VirtualKey;

use super::pods::{PodResolver, is_twin};
use super::stats::{ContainerUsage, CpuTotals, PodUsage};

/// The pods a kubelet runs: bound to a node and running.
const RUNNING: &str = "status.phase=Running";

/// A PodMetrics of `metrics.k8s.io/v1beta1`, as metrics-server serves it.
#[derive(Clone, Debug, Default, Deserialize)]
struct PodMetrics {
    metadata: ObjectMeta,
    timestamp: Option<String>,
    window: Option<String>,
    #[serde(default)]
    containers: Vec<ContainerMetrics>,
}

#[derive(Clone, Debug, Default, Deserialize)]
struct ContainerMetrics {
    name: String,
    #[serde(default)]
    usage: BTreeMap<String, String>,
}

/// The virtual cluster's running pods that are bound to a node.
pub async fn running_pods(virtual_client: &Client) -> Result<Vec<Pod>, String> {
    let list = Api::<Pod>::all(virtual_client.clone())
        .list(&ListParams::default().fields(RUNNING))
        .await
        .map_err(|err| format!("listing the virtual cluster's pods: {err}"))?;
    Ok(list
        .items
        .into_iter()
        .filter(|pod| pod.spec.as_ref().and_then(|s| s.node_name.as_ref()).is_some())
        .collect())
}

/// Each running tenant pod with the usage of its host twin, under virtual names.
pub async fn tenant_usage(pods: &PodResolver, totals: &CpuTotals) -> Result<Vec<PodUsage>, String> {
    let now = Timestamp::now();
    let running = running_pods(&pods.virtual_client).await?;
    let keyed: Vec<(VirtualKey, &Pod)> = running
        .iter()
        .filter_map(|pod| {
            let key =
                VirtualKey::namespaced(pod.metadata.namespace.as_deref()?, pod.metadata.name.as_deref()?);
            Some((key, pod))
        })
        .collect();
    let host_namespaces: BTreeSet<String> = keyed
        .iter()
        .filter_map(|(key, _)| pods.translator.host_key(key).namespace)
        .collect();
    let mut twins = HashMap::new();
    let mut metrics = HashMap::new();
    for namespace in &host_namespaces {
        for twin in host_pods(pods, namespace).await? {
            twins.insert(
                (namespace.clone(), twin.metadata.name.clone().unwrap_or_default()),
                twin,
            );
        }
        for sample in host_pod_metrics(pods, namespace).await {
            metrics.insert(
                (
                    namespace.clone(),
                    sample.metadata.name.clone().unwrap_or_default(),
                ),
                sample,
            );
        }
    }
    let mut usage = Vec::with_capacity(keyed.len());
    for (key, pod) in keyed {
        let host = pods.translator.host_key(&key);
        let host = (host.namespace.unwrap_or_default(), host.name);
        let Some(twin) = twins.get(&host) else { continue };
        if !is_twin(pods.translator.as_ref(), &key, pod, twin) {
            continue;
        }
        usage.push(pod_usage(pod, metrics.get(&host), totals, now));
    }
    totals.forget_stale(now);
    Ok(usage)
}

/// This instance's pods in host namespace `namespace`.
async fn host_pods(pods: &PodResolver, namespace: &str) -> Result<Vec<Pod>, String> {
    let selector = pods.translator.ownership().label_selector();
    Api::<Pod>::namespaced(pods.host_client.clone(), namespace)
        .list(&ListParams::default().labels(&selector))
        .await
        .map(|list| list.items)
        .map_err(|err| format!("listing host pods in {namespace}: {err}"))
}

/// The host's PodMetrics of this instance's pods in `namespace`; none when the host serves no
/// metrics API or cannot answer.
async fn host_pod_metrics(pods: &PodResolver, namespace: &str) -> Vec<PodMetrics> {
    let resource = ApiResource {
        group: "metrics.k8s.io".into(),
        version: "v1beta1".into(),
        api_version: "metrics.k8s.io/v1beta1".into(),
        kind: "PodMetrics".into(),
        plural: "pods".into(),
    };
    let selector = pods.translator.ownership().label_selector();
    let list = Api::<DynamicObject>::namespaced_with(pods.host_client.clone(), namespace, &resource)
        .list(&ListParams::default().labels(&selector))
        .await;
    match list {
        Ok(list) => list
            .items
            .into_iter()
            .filter_map(|item| serde_json::from_value(serde_json::to_value(item).ok()?).ok())
            .collect(),
        Err(err) => {
            tracing::debug!(%namespace, error = %err, "kubelet API: no PodMetrics from the host");
            Vec::new()
        }
    }
}

/// `pod`'s usage from its twin's `sample` (None: no figures).
fn pod_usage(pod: &Pod, sample: Option<&PodMetrics>, totals: &CpuTotals, now: Timestamp) -> PodUsage {
    let uid = pod.metadata.uid.clone().unwrap_or_default();
    let status = pod.status.as_ref();
    let started_at = |container: &str| {
        status
            .and_then(|s| s.container_statuses.as_ref())
            .and_then(|statuses| statuses.iter().find(|s| s.name == container))
            .and_then(|s| s.state.as_ref()?.running.as_ref()?.started_at.as_ref())
            .map(|time| time.0)
    };
    let sampled = sample
        .and_then(|s| s.timestamp.as_deref()?.parse::<Timestamp>().ok())
        .unwrap_or(now);
    let window = sample
        .and_then(|s| parse_go_duration(s.window.as_deref()?))
        .unwrap_or(SignedDuration::ZERO);
    let containers = pod
        .spec
        .iter()
        .flat_map(|spec| &spec.containers)
        .map(|container| {
            let usage = sample
                .and_then(|s| s.containers.iter().find(|c| c.name == container.name))
                .map(|c| &c.usage);
            let cpu = usage.and_then(|u| nano_cores(u.get("cpu")?));
            let memory = usage.and_then(|u| bytes(u.get("memory")?));
            let total = cpu.map(|rate| totals.advance((&uid, &container.name), sampled, window, rate, now));
            ContainerUsage {
                name: container.name.clone(),
                started: started_at(&container.name),
                cpu_nano_cores: cpu,
                cpu_core_nano_seconds: total,
                memory_working_set_bytes: memory,
            }
        })
        .collect();
    PodUsage {
        namespace: pod.metadata.namespace.clone().unwrap_or_default(),
        name: pod.metadata.name.clone().unwrap_or_default(),
        uid,
        started: status.and_then(|s| s.start_time.as_ref()).map(|time| time.0),
        sampled,
        containers,
    }
}

/// A quantity's value in its base unit (`"250m"` is 0.25, `"64Mi"` is 67108864).
fn quantity(text: &str) -> Option<f64> {
    let text = text.trim();
    let split = text
        .find(|c: char| c.is_ascii_alphabetic() && c != 'e' && c != 'E')
        .unwrap_or(text.len());
    let (number, suffix) = text.split_at(split);
    let factor = match suffix {
        "" => 1.0,
        "n" => 1e-9,
        "u" => 1e-6,
        "m" => 1e-3,
        "k" => 1e3,
        "M" => 1e6,
        "G" => 1e9,
        "T" => 1e12,
        "P" => 1e15,
        "E" => 1e18,
        "Ki" => 1024.0,
        "Mi" => 1024f64.powi(2),
        "Gi" => 1024f64.powi(3),
        "Ti" => 1024f64.powi(4),
        "Pi" => 1024f64.powi(5),
        "Ei" => 1024f64.powi(6),
        _ => return None,
    };
    let value: f64 = number.parse().ok()?;
    (value.is_finite() && value >= 0.0).then_some(value * factor)
}

/// A CPU quantity in nano-cores.
fn nano_cores(text: &str) -> Option<u64> {
    quantity(text).map(|cores| (cores * 1e9).round() as u64)
}

/// A memory quantity in bytes.
fn bytes(text: &str) -> Option<u64> {
    quantity(text).map(|bytes| bytes.round() as u64)
}

/// A Go `time.Duration` string as metrics-server writes a window (`"30s"`, `"1m0.5s"`).
fn parse_go_duration(text: &str) -> Option<SignedDuration> {
    let mut rest = text.trim();
    let mut nanos = 0f64;
    if rest.is_empty() {
        return None;
    }
    while !rest.is_empty() {
        let number_end = rest.find(|c: char| !(c.is_ascii_digit() || c == '.'))?;
        let (number, tail) = rest.split_at(number_end);
        let value: f64 = number.parse().ok()?;
        let unit_end = tail
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(tail.len());
        let (unit, tail) = tail.split_at(unit_end);
        let scale = match unit {
            "ns" => 1.0,
            "us" | "µs" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            "m" => 60e9,
            "h" => 3600e9,
            _ => return None,
        };
        nanos += value * scale;
        rest = tail;
    }
    Some(SignedDuration::from_nanos(nanos as i64))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantities_read_as_metrics_server_writes_them() {
        assert_eq!(nano_cores("1234567n"), Some(1_234_567));
        assert_eq!(nano_cores("250m"), Some(250_000_000));
        assert_eq!(nano_cores("2"), Some(2_000_000_000));
        assert_eq!(nano_cores("15u"), Some(15_000));
        assert_eq!(bytes("12345Ki"), Some(12_641_280));
        assert_eq!(bytes("64Mi"), Some(67_108_864));
        assert_eq!(bytes("1e3"), Some(1000));
        assert_eq!(bytes("100"), Some(100));
        assert_eq!(bytes("12Zi"), None);
        assert_eq!(bytes("-1"), None);
        assert_eq!(bytes(""), None);
    }

    #[test]
    fn windows_read_as_go_durations() {
        assert_eq!(parse_go_duration("30s"), Some(SignedDuration::from_secs(30)));
        assert_eq!(
            parse_go_duration("1m0.5s"),
            Some(SignedDuration::from_millis(60_500))
        );
        assert_eq!(parse_go_duration("1.5h"), Some(SignedDuration::from_secs(5400)));
        assert_eq!(parse_go_duration("20ms"), Some(SignedDuration::from_millis(20)));
        assert_eq!(parse_go_duration("0s"), Some(SignedDuration::ZERO));
        assert_eq!(parse_go_duration("30"), None);
        assert_eq!(parse_go_duration(""), None);
    }

    #[test]
    fn a_pods_usage_keeps_its_own_containers_under_virtual_names() {
        let pod: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "web", "namespace": "shop", "uid": "u1"},
            "spec": {"containers": [{"name": "nginx"}, {"name": "log"}]},
            "status": {
                "startTime": "2027-01-15T08:00:00Z",
                "containerStatuses": [{"name": "nginx", "ready": true, "restartCount": 0, "image": "", "imageID": "",
                    "state": {"running": {"startedAt": "2027-01-15T08:00:05Z"}}}],
            },
        }))
        .unwrap();
        let sample: PodMetrics = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "web-x-shop-x-demo", "namespace": "vc"},
            "timestamp": "2027-01-15T08:10:00Z",
            "window": "10s",
            "containers": [
                {"name": "nginx", "usage": {"cpu": "5m", "memory": "2Mi"}},
                {"name": "injected", "usage": {"cpu": "1", "memory": "1Gi"}},
            ],
        }))
        .unwrap();
        let now: Timestamp = "2027-01-15T08:10:03Z".parse().unwrap();
        let usage = pod_usage(&pod, Some(&sample), &CpuTotals::default(), now);
        assert_eq!((usage.namespace.as_str(), usage.name.as_str()), ("shop", "web"));
        assert_eq!(
            usage.sampled,
            "2027-01-15T08:10:00Z".parse::<Timestamp>().unwrap()
        );
        assert_eq!(usage.containers.len(), 2, "only the virtual pod's containers");
        let nginx = &usage.containers[0];
        assert_eq!(nginx.cpu_nano_cores, Some(5_000_000));
        assert_eq!(nginx.memory_working_set_bytes, Some(2 * 1024 * 1024));
        assert_eq!(
            nginx.cpu_core_nano_seconds,
            Some(50_000_000),
            "5m over a 10s window"
        );
        assert_eq!(nginx.started, Some("2027-01-15T08:00:05Z".parse().unwrap()));
        let log = &usage.containers[1];
        assert_eq!((log.cpu_nano_cores, log.memory_working_set_bytes), (None, None));
        // No sample at all: the pod, without figures, sampled now.
        let bare = pod_usage(&pod, None, &CpuTotals::default(), now);
        assert_eq!(bare.sampled, now);
        assert!(bare.containers.iter().all(|c| c.cpu_nano_cores.is_none()));
    }
}
