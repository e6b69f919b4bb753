//! The bench's objects (pods with a ConfigMap and a Secret each) and the client that creates
//! them, counting its own requests.

use std::{
    collections::BTreeMap,
    sync::Mutex,
    time::{Duration, Instant},
};

use anyhow::Context;
use futures::{StreamExt, stream};
use k8s_openapi::{
    ByteString,
    api::core::v1::{ConfigMap, Pod, Secret},
    serde_json::{self, json},
};
use kube::{
    Api, Client,
    api::{ObjectMeta, PostParams},
};

pub(super) fn pod_name(i: usize) -> String {
    format!("pod-{i}")
}

pub(super) fn meta(name: String, namespace: &str) -> ObjectMeta {
    ObjectMeta {
        name: Some(name),
        namespace: Some(namespace.into()),
        labels: Some(BTreeMap::from([("app".to_string(), "bench".to_string())])),
        ..Default::default()
    }
}

pub(super) fn config_map(i: usize, namespace: &str) -> ConfigMap {
    ConfigMap {
        metadata: meta(format!("cm-{i}"), namespace),
        data: Some(BTreeMap::from([("v".to_string(), "1".to_string())])),
        ..Default::default()
    }
}

pub(super) fn secret(i: usize, namespace: &str) -> Secret {
    Secret {
        metadata: meta(format!("sec-{i}"), namespace),
        data: Some(BTreeMap::from([(
            "password".to_string(),
            ByteString(format!("secret-{i}").into_bytes()),
        )])),
        type_: Some("Opaque".into()),
        ..Default::default()
    }
}

pub(super) fn pod(i: usize, namespace: &str, with_references: bool) -> Pod {
    let volumes = if with_references {
        json!([
            {"name": "config", "configMap": {"name": format!("cm-{i}")}},
            {"name": "secret", "secret": {"secretName": format!("sec-{i}")}},
        ])
    } else {
        json!([])
    };
    let mounts = if with_references {
        json!([
            {"name": "config", "mountPath": "/etc/config"},
            {"name": "secret", "mountPath": "/etc/secret"},
        ])
    } else {
        json!([])
    };
    let spec = json!({
        "containers": [{"name": "app", "image": "nginx:1.27", "volumeMounts": mounts}],
        "volumes": volumes,
    });
    Pod {
        metadata: meta(pod_name(i), namespace),
        spec: serde_json::from_value(spec).ok(),
        ..Default::default()
    }
}

/// The bench client's own writes per (cluster, verb, resource), subtracted from the servers'
/// counts.
#[derive(Debug, Default)]
pub(super) struct ClientRequests {
    pub(super) counts: Mutex<BTreeMap<(&'static str, &'static str, &'static str), u64>>,
}

impl ClientRequests {
    pub(super) fn add(&self, cluster: &'static str, verb: &'static str, resource: &'static str, n: u64) {
        *self
            .counts
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry((cluster, verb, resource))
            .or_default() += n;
    }

    pub(super) fn get(&self, cluster: &str, verb: &str, resource: &str) -> u64 {
        self.counts
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .filter(|((c, v, r), _)| *c == cluster && *v == verb && *r == resource)
            .map(|(_, n)| *n)
            .sum()
    }

    pub(super) fn reset(&self) {
        self.counts.lock().unwrap_or_else(|p| p.into_inner()).clear();
    }
}

/// Creates pod `i` (with its ConfigMap and Secret first when `with_references`).
pub(super) async fn create_set(
    client: &Client,
    cluster: &'static str,
    namespace: &str,
    i: usize,
    with_references: bool,
    counts: &ClientRequests,
) -> anyhow::Result<()> {
    let pp = PostParams::default();
    if with_references {
        Api::<ConfigMap>::namespaced(client.clone(), namespace)
            .create(&pp, &config_map(i, namespace))
            .await
            .context("creating a config map")?;
        counts.add(cluster, "create", "configmaps", 1);
        Api::<Secret>::namespaced(client.clone(), namespace)
            .create(&pp, &secret(i, namespace))
            .await
            .context("creating a secret")?;
        counts.add(cluster, "create", "secrets", 1);
    }
    Api::<Pod>::namespaced(client.clone(), namespace)
        .create(&pp, &pod(i, namespace, with_references))
        .await
        .context("creating a pod")?;
    counts.add(cluster, "create", "pods", 1);
    Ok(())
}

/// Creates sets `range` with `concurrency` in flight; returns the elapsed time.
pub(super) async fn create_all(
    client: &Client,
    cluster: &'static str,
    namespace: &str,
    range: std::ops::Range<usize>,
    concurrency: usize,
    counts: &ClientRequests,
) -> anyhow::Result<Duration> {
    let start = Instant::now();
    let results: Vec<anyhow::Result<()>> = stream::iter(range)
        .map(|i| create_set(client, cluster, namespace, i, true, counts))
        .buffer_unordered(concurrency.max(1))
        .collect()
        .await;
    results.into_iter().collect::<anyhow::Result<Vec<()>>>()?;
    Ok(start.elapsed())
}
