//! Virtual nodes: fake nodes for the node names virtual pods are bound to, kept alive with
//! Leases; real mode mirroring host nodes.
//!
//! These tests create host Nodes, so they run against the embedded servers and this run's own
//! control planes (`VCSYNC_KUBE_ASSETS`), not against clusters started elsewhere.

use std::time::Duration;

use k8s_openapi::api::{
    coordination::v1::Lease,
    core::v1::{Node, Pod},
};
use kube::{
    Api,
    api::{DeleteParams, Patch, PatchParams, PostParams},
};
use serde_json::json;

use crate::env::{Env, eventually, get};

const FAKE_NODE_LABEL: &str = "vcsync.dev/fake-node";
const SYNCED_FROM_HOST_LABEL: &str = "vcsync.dev/synced-from-host";
const FAST_LEASES: &str = "sync:\n  nodes:\n    leaseRenewSeconds: 1\n";

fn host_node(name: &str, labels: serde_json::Value) -> Node {
    serde_json::from_value(json!({
        "metadata": {"name": name, "labels": labels},
        "status": {
            "capacity": {"cpu": "4", "memory": "16Gi", "pods": "110"},
            "allocatable": {"cpu": "3800m", "memory": "15Gi", "pods": "110"},
            "addresses": [{"type": "InternalIP", "address": "10.1.2.3"}, {"type": "ExternalIP", "address": "198.51.100.3"}],
            "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady", "message": "kubelet is posting ready status",
                            "lastHeartbeatTime": "2025-01-01T00:00:00Z", "lastTransitionTime": "2025-01-01T00:00:00Z"}],
            "nodeInfo": {"architecture": "arm64", "bootID": "", "containerRuntimeVersion": "containerd://2.0.0",
                         "kernelVersion": "6.6", "kubeProxyVersion": "", "kubeletVersion": "v1.37.0", "machineID": "",
                         "operatingSystem": "linux", "osImage": "Host OS", "systemUUID": ""}
        }
    }))
    .unwrap()
}

fn bound_pod(name: &str, node: &str) -> Pod {
    serde_json::from_value(json!({
        "metadata": {"name": name},
        "spec": {"nodeName": node, "containers": [{"name": "app", "image": "nginx"}]}
    }))
    .unwrap()
}

fn nodes(client: &kube::Client) -> Api<Node> {
    Api::all(client.clone())
}

fn leases(env: &Env) -> Api<Lease> {
    Api::namespaced(env.virt.clone(), "kube-node-lease")
}

fn renew_time(lease: &Lease) -> Option<k8s_openapi::jiff::Timestamp> {
    lease.spec.as_ref()?.renew_time.as_ref().map(|t| t.0)
}

/// Deletes a pod at once (a scheduled pod is otherwise deleted gracefully, waiting for a kubelet).
async fn delete_now(env: &Env, pod: &str) {
    env.virt_api::<Pod>()
        .delete(
            pod,
            &DeleteParams {
                grace_period_seconds: Some(0),
                ..DeleteParams::default()
            },
        )
        .await
        .unwrap();
}

async fn gone<K: Clone + serde::de::DeserializeOwned + std::fmt::Debug>(
    api: Api<K>,
    name: &str,
) -> Option<()> {
    get(&api, name).await.is_none().then_some(())
}

#[tokio::test]
async fn a_bound_pod_gets_a_fake_node_with_host_labels_and_a_renewed_lease() {
    let mut env = Env::new().await;
    if !env.throwaway_clusters() {
        eprintln!("skipped: creates host nodes, which a shared host cluster's owner would not want");
        return;
    }
    env.start_syncer(FAST_LEASES).await;
    let pp = PostParams::default();
    env.virt_api::<Pod>()
        .create(&pp, &bound_pod("web", "worker-a"))
        .await
        .unwrap();
    // No host node of that name yet: no fake node either (checked once the host node exists).
    let host_labels = json!({
        "kubernetes.io/hostname": "worker-a", "kubernetes.io/os": "linux", "kubernetes.io/arch": "arm64",
        "topology.kubernetes.io/zone": "zone-1", "node-pool": "infra"
    });
    nodes(&env.host)
        .create(&pp, &host_node("worker-a", host_labels))
        .await
        .unwrap();

    let node = eventually("fake node in the virtual cluster", || async {
        get(&nodes(&env.virt), "worker-a").await
    })
    .await;
    let labels = node.metadata.labels.clone().unwrap();
    assert_eq!(labels[FAKE_NODE_LABEL], "true");
    assert_eq!(labels["topology.kubernetes.io/zone"], "zone-1");
    assert_eq!(labels["kubernetes.io/arch"], "arm64");
    assert_eq!(labels["beta.kubernetes.io/arch"], "arm64");
    assert!(
        !labels.contains_key("node-pool"),
        "host-only label copied: {labels:?}"
    );
    let status = node.status.clone().unwrap();
    assert_eq!(status.capacity.unwrap()["cpu"].0, "4");
    assert_eq!(status.node_info.unwrap().kubelet_version, "v1.37.0");
    let addresses = status.addresses.unwrap();
    assert_eq!(addresses.len(), 1, "only the InternalIP: {addresses:?}");
    let ready = status
        .conditions
        .unwrap()
        .into_iter()
        .find(|c| c.type_ == "Ready")
        .unwrap();
    assert_eq!(ready.status, "True");
    assert!(
        ready.last_heartbeat_time.unwrap().0 > "2025-01-01T00:00:00Z".parse().unwrap(),
        "the heartbeat is vcsync's, not the host's"
    );

    let lease = eventually("node lease", || async { get(&leases(&env), "worker-a").await }).await;
    let spec = lease.spec.clone().unwrap();
    assert_eq!(spec.holder_identity.as_deref(), Some("worker-a"));
    assert_eq!(spec.lease_duration_seconds, Some(40));
    assert_eq!(
        lease.metadata.owner_references.as_ref().unwrap()[0].uid,
        node.metadata.uid.clone().unwrap()
    );
    let first = renew_time(&lease).unwrap();
    eventually("lease renewed", || async {
        get(&leases(&env), "worker-a")
            .await
            .filter(|l| renew_time(l).is_some_and(|t| t > first))
    })
    .await;

    // A tenant's label edit is reverted.
    nodes(&env.virt)
        .patch(
            "worker-a",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {"tampered": "yes"}}})),
        )
        .await
        .unwrap();
    eventually("label edit reverted", || async {
        get(&nodes(&env.virt), "worker-a")
            .await
            .filter(|n| !n.metadata.labels.as_ref().unwrap().contains_key("tampered"))
    })
    .await;

    // A second pod on the node keeps it when the first goes; the last one takes it away.
    env.virt_api::<Pod>()
        .create(&pp, &bound_pod("web-2", "worker-a"))
        .await
        .unwrap();
    delete_now(&env, "web").await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        get(&nodes(&env.virt), "worker-a").await.is_some(),
        "node removed while a pod still uses it"
    );
    delete_now(&env, "web-2").await;
    eventually("fake node removed with its last pod", || {
        gone(nodes(&env.virt), "worker-a")
    })
    .await;
    eventually("lease removed with its node", || gone(leases(&env), "worker-a")).await;
}

#[tokio::test]
async fn a_fake_node_goes_when_its_host_node_goes_and_comes_back_with_it() {
    let mut env = Env::new().await;
    if !env.throwaway_clusters() {
        eprintln!("skipped: creates host nodes, which a shared host cluster's owner would not want");
        return;
    }
    env.start_syncer(FAST_LEASES).await;
    let pp = PostParams::default();
    nodes(&env.host)
        .create(&pp, &host_node("worker-b", json!({})))
        .await
        .unwrap();
    env.virt_api::<Pod>()
        .create(&pp, &bound_pod("job", "worker-b"))
        .await
        .unwrap();
    eventually("fake node", || async { get(&nodes(&env.virt), "worker-b").await }).await;

    nodes(&env.host)
        .delete("worker-b", &DeleteParams::default())
        .await
        .unwrap();
    eventually("fake node removed with its host node", || {
        gone(nodes(&env.virt), "worker-b")
    })
    .await;

    nodes(&env.host)
        .create(
            &pp,
            &host_node("worker-b", json!({"topology.kubernetes.io/zone": "zone-2"})),
        )
        .await
        .unwrap();
    let node = eventually("fake node back with the host node", || async {
        get(&nodes(&env.virt), "worker-b").await
    })
    .await;
    assert_eq!(
        node.metadata.labels.unwrap()["topology.kubernetes.io/zone"],
        "zone-2"
    );
}

#[tokio::test]
async fn host_node_changes_reach_the_fake_node() {
    let mut env = Env::new().await;
    if !env.throwaway_clusters() {
        eprintln!("skipped: creates host nodes, which a shared host cluster's owner would not want");
        return;
    }
    env.start_syncer("").await;
    let pp = PostParams::default();
    nodes(&env.host)
        .create(&pp, &host_node("worker-c", json!({})))
        .await
        .unwrap();
    env.virt_api::<Pod>()
        .create(&pp, &bound_pod("db", "worker-c"))
        .await
        .unwrap();
    eventually("fake node", || async { get(&nodes(&env.virt), "worker-c").await }).await;

    let not_ready = json!({"status": {"conditions": [{"type": "Ready", "status": "False", "reason": "KubeletNotReady",
        "message": "runtime down", "lastHeartbeatTime": "2025-01-02T00:00:00Z", "lastTransitionTime": "2025-01-02T00:00:00Z"}]}});
    nodes(&env.host)
        .patch_status("worker-c", &PatchParams::default(), &Patch::Merge(&not_ready))
        .await
        .unwrap();
    eventually("NotReady mirrored", || async {
        get(&nodes(&env.virt), "worker-c").await.filter(|n| {
            n.status
                .as_ref()
                .and_then(|s| s.conditions.as_ref())
                .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "False"))
        })
    })
    .await;

    // A tenant deleting a fake node still in use gets it back.
    let before = get(&nodes(&env.virt), "worker-c").await.unwrap();
    nodes(&env.virt)
        .delete("worker-c", &DeleteParams::default())
        .await
        .unwrap();
    eventually("deleted fake node recreated", || async {
        get(&nodes(&env.virt), "worker-c")
            .await
            .filter(|n| n.metadata.uid != before.metadata.uid)
    })
    .await;
}

#[tokio::test]
async fn nodes_vcsync_did_not_create_are_never_touched() {
    let mut env = Env::new().await;
    if !env.throwaway_clusters() {
        eprintln!("skipped: creates host nodes, which a shared host cluster's owner would not want");
        return;
    }
    let pp = PostParams::default();
    let theirs: Node =
        serde_json::from_value(json!({"metadata": {"name": "theirs", "labels": {"owner": "tenant"}}}))
            .unwrap();
    let theirs = nodes(&env.virt).create(&pp, &theirs).await.unwrap();
    for name in ["theirs", "marker"] {
        nodes(&env.host)
            .create(&pp, &host_node(name, json!({})))
            .await
            .unwrap();
    }
    env.start_syncer(FAST_LEASES).await;
    env.virt_api::<Pod>()
        .create(&pp, &bound_pod("a", "theirs"))
        .await
        .unwrap();
    env.virt_api::<Pod>()
        .create(&pp, &bound_pod("b", "marker"))
        .await
        .unwrap();
    // The other node's lease proves the syncer and the heartbeat have been at work.
    eventually("lease of the other node", || async {
        get(&leases(&env), "marker").await
    })
    .await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    delete_now(&env, "a").await;
    delete_now(&env, "b").await;
    eventually("the other fake node removed", || gone(nodes(&env.virt), "marker")).await;

    let after = get(&nodes(&env.virt), "theirs")
        .await
        .expect("tenant's node deleted");
    if env.embedded().is_some() {
        assert_eq!(
            after.metadata.resource_version, theirs.metadata.resource_version,
            "tenant's node was written"
        );
    } else {
        // A real controller manager writes to every node (taints, conditions of a node whose
        // kubelet never reports): what vcsync would write shows as its field manager.
        let managers: Vec<&str> = after
            .metadata
            .managed_fields
            .iter()
            .flatten()
            .filter_map(|entry| entry.manager.as_deref())
            .collect();
        assert!(
            !managers.contains(&"vcsync"),
            "tenant's node was written by vcsync: {managers:?}"
        );
    }
    assert!(
        get(&leases(&env), "theirs").await.is_none(),
        "lease for a node vcsync does not own"
    );
}

#[tokio::test]
async fn real_mode_mirrors_host_nodes_matching_the_selector() {
    let mut env = Env::new().await;
    if !env.throwaway_clusters() {
        eprintln!("skipped: creates host nodes, which a shared host cluster's owner would not want");
        return;
    }
    env.start_syncer(
        "sync:\n  nodes:\n    mode: real\n    selector: pool=tenants\n    leaseRenewSeconds: 1\n",
    )
    .await;
    let pp = PostParams::default();
    nodes(&env.host)
        .create(&pp, &host_node("system-1", json!({"pool": "system"})))
        .await
        .unwrap();
    nodes(&env.host)
        .create(
            &pp,
            &host_node("tenant-1", json!({"pool": "tenants", "team": "blue"})),
        )
        .await
        .unwrap();

    let node = eventually("matching host node mirrored", || async {
        get(&nodes(&env.virt), "tenant-1").await
    })
    .await;
    let labels = node.metadata.labels.unwrap();
    assert_eq!(labels[SYNCED_FROM_HOST_LABEL], "true");
    assert_eq!(labels["team"], "blue", "real mode mirrors every label");
    let addresses = node.status.unwrap().addresses.unwrap();
    assert_eq!(addresses.len(), 2, "real mode mirrors every address");
    eventually("lease of the mirrored node", || async {
        get(&leases(&env), "tenant-1").await
    })
    .await;
    assert!(
        get(&nodes(&env.virt), "system-1").await.is_none(),
        "a node outside the selector was mirrored"
    );

    // Starting to match mirrors it; stopping to match removes it.
    nodes(&env.host)
        .patch(
            "system-1",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {"pool": "tenants"}}})),
        )
        .await
        .unwrap();
    eventually("relabelled host node mirrored", || async {
        get(&nodes(&env.virt), "system-1").await
    })
    .await;
    nodes(&env.host)
        .patch(
            "tenant-1",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {"pool": "other"}}})),
        )
        .await
        .unwrap();
    eventually("node no longer matching removed", || {
        gone(nodes(&env.virt), "tenant-1")
    })
    .await;
    eventually("its lease removed", || gone(leases(&env), "tenant-1")).await;

    nodes(&env.host)
        .delete("system-1", &DeleteParams::default())
        .await
        .unwrap();
    eventually("deleted host node removed", || gone(nodes(&env.virt), "system-1")).await;
}

#[tokio::test]
async fn restart_over_fresh_leases_writes_no_nodes_or_leases() {
    let mut env = Env::new().await;
    if !env.throwaway_clusters() {
        eprintln!("skipped: creates host nodes, which a shared host cluster's owner would not want");
        return;
    }
    env.start_syncer("").await;
    let pp = PostParams::default();
    nodes(&env.host)
        .create(&pp, &host_node("worker-r", json!({})))
        .await
        .unwrap();
    env.virt_api::<Pod>()
        .create(&pp, &bound_pod("app", "worker-r"))
        .await
        .unwrap();
    eventually("node lease", || async { get(&leases(&env), "worker-r").await }).await;

    // 2 s: well within the 10 s renew interval of the default configuration.
    let (_, counters) = env.restart_counting("").await;
    assert_eq!(
        counters.writes_to("nodes"),
        0,
        "node writes after restart: {counters:?}"
    );
    assert_eq!(
        counters.writes_to("leases"),
        0,
        "lease writes after restart: {counters:?}"
    );
}
