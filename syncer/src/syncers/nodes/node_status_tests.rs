//! Tests of [`super`]: labels, status and the comparisons of virtual nodes.

use rstest::rstest;
use serde_json::json;

use super::*;

fn host_node() -> Node {
    serde_json::from_value(json!({
        "metadata": {"name": "worker-1", "labels": {
            "kubernetes.io/hostname": "worker-1.internal",
            "kubernetes.io/os": "linux",
            "kubernetes.io/arch": "arm64",
            "node.kubernetes.io/instance-type": "m7g.large",
            "topology.kubernetes.io/zone": "eu-west-1a",
            "topology.kubernetes.io/region": "eu-west-1",
            "failure-domain.beta.kubernetes.io/zone": "eu-west-1a",
            "node-pool": "tenants",
            "vcsync.dev/managed-by": "other",
        }},
        "status": {
            "capacity": {"cpu": "2", "memory": "8Gi", "pods": "110"},
            "allocatable": {"cpu": "1900m", "memory": "7Gi", "pods": "110"},
            "addresses": [
                {"type": "InternalIP", "address": "10.0.0.7"},
                {"type": "ExternalIP", "address": "203.0.113.7"},
                {"type": "Hostname", "address": "worker-1.internal"}
            ],
            "conditions": [
                {"type": "Ready", "status": "True", "reason": "KubeletReady", "message": "ok",
                 "lastHeartbeatTime": "2025-01-01T00:00:00Z", "lastTransitionTime": "2024-12-01T00:00:00Z"},
                {"type": "MemoryPressure", "status": "False", "reason": "KubeletHasSufficientMemory",
                 "lastHeartbeatTime": "2025-01-01T00:00:00Z", "lastTransitionTime": "2024-12-01T00:00:00Z"}
            ],
            "nodeInfo": {"architecture": "arm64", "bootID": "b", "containerRuntimeVersion": "containerd://2.0",
                         "kernelVersion": "6.1", "kubeProxyVersion": "", "kubeletVersion": "v1.36.2",
                         "machineID": "m", "operatingSystem": "linux", "osImage": "Bottlerocket", "systemUUID": "s"},
            "images": [{"names": ["nginx"], "sizeBytes": 1}],
            "daemonEndpoints": {"kubeletEndpoint": {"Port": 10250}}
        }
    }))
    .unwrap()
}

fn ts(s: &str) -> jiff::Timestamp {
    s.parse().unwrap()
}

#[rstest]
#[case::hostname("kubernetes.io/hostname", Some("worker-1.internal"))]
#[case::os("kubernetes.io/os", Some("linux"))]
#[case::arch("kubernetes.io/arch", Some("arm64"))]
#[case::beta_os_completed("beta.kubernetes.io/os", Some("linux"))]
#[case::beta_arch_completed("beta.kubernetes.io/arch", Some("arm64"))]
#[case::instance_type("node.kubernetes.io/instance-type", Some("m7g.large"))]
#[case::zone("topology.kubernetes.io/zone", Some("eu-west-1a"))]
#[case::region("topology.kubernetes.io/region", Some("eu-west-1"))]
#[case::legacy_zone("failure-domain.beta.kubernetes.io/zone", Some("eu-west-1a"))]
#[case::marker(FAKE_NODE_LABEL, Some("true"))]
#[case::host_pool_stays_on_the_host("node-pool", None)]
#[case::host_ownership_never_copied("vcsync.dev/managed-by", None)]
fn fake_node_labels_from_a_host_node(#[case] key: &str, #[case] value: Option<&str>) {
    let labels = fake_node_labels("worker-1", Some(&host_node()));
    assert_eq!(labels.get(key).map(String::as_str), value, "{labels:?}");
}

#[rstest]
#[case::hostname("kubernetes.io/hostname", Some("ghost"))]
#[case::os("kubernetes.io/os", Some("linux"))]
#[case::arch("kubernetes.io/arch", Some("amd64"))]
#[case::beta_arch("beta.kubernetes.io/arch", Some("amd64"))]
#[case::marker(FAKE_NODE_LABEL, Some("true"))]
#[case::no_zone("topology.kubernetes.io/zone", None)]
fn synthetic_fake_node_labels(#[case] key: &str, #[case] value: Option<&str>) {
    let labels = fake_node_labels("ghost", None);
    assert_eq!(labels.get(key).map(String::as_str), value, "{labels:?}");
}

#[test]
fn a_host_node_without_labels_still_gets_hostname_and_marker_but_no_invented_platform() {
    let mut host = host_node();
    host.metadata.labels = None;
    let labels = fake_node_labels("bare", Some(&host));
    assert_eq!(
        labels.keys().map(String::as_str).collect::<Vec<_>>(),
        ["kubernetes.io/hostname", FAKE_NODE_LABEL]
    );
}

#[test]
fn real_mode_mirrors_every_label_but_reserved_ones() {
    let labels = real_node_labels(&host_node());
    assert_eq!(labels["node-pool"], "tenants");
    assert_eq!(labels[SYNCED_FROM_HOST_LABEL], "true");
    assert!(!labels.contains_key("vcsync.dev/managed-by"));
    assert!(!labels.contains_key(FAKE_NODE_LABEL));
}

#[rstest]
#[case::fake(NodeMode::Fake, vec!["InternalIP", "Hostname"])]
#[case::real(NodeMode::Real, vec!["InternalIP", "ExternalIP", "Hostname"])]
fn addresses_by_mode(#[case] mode: NodeMode, #[case] types: Vec<&str>) {
    let status = status_from_host(&host_node(), mode);
    let got: Vec<&str> = status
        .addresses
        .as_ref()
        .unwrap()
        .iter()
        .map(|a| a.type_.as_str())
        .collect();
    assert_eq!(got, types);
}

#[test]
fn host_status_is_copied_without_heartbeats_images_or_endpoints() {
    let status = status_from_host(&host_node(), NodeMode::Fake);
    assert_eq!(status.capacity.as_ref().unwrap()["cpu"], Quantity("2".into()));
    assert_eq!(
        status.allocatable.as_ref().unwrap()["cpu"],
        Quantity("1900m".into())
    );
    assert_eq!(status.node_info.as_ref().unwrap().kubelet_version, "v1.36.2");
    let conditions = status.conditions.as_ref().unwrap();
    assert!(conditions.iter().all(|c| c.last_heartbeat_time.is_none()));
    assert_eq!(
        conditions[0].last_transition_time,
        Some(Time(ts("2024-12-01T00:00:00Z")))
    );
    assert_eq!(status.images, None);
    assert_eq!(status.daemon_endpoints, None);
}

#[test]
fn synthetic_status_is_ready_and_reports_the_configured_version() {
    let synthetic = SyntheticNode {
        kubelet_version: "v1.37.0".into(),
    };
    let status = synthetic_status("ghost", &synthetic);
    let ready = status
        .conditions
        .as_ref()
        .unwrap()
        .iter()
        .find(|c| c.type_ == "Ready")
        .unwrap();
    assert_eq!(ready.status, "True");
    assert_eq!(status.node_info.as_ref().unwrap().kubelet_version, "v1.37.0");
    assert_eq!(status.addresses.as_ref().unwrap()[0].address, "ghost");
}

#[rstest]
#[case::real_with_host(NodeMode::Real, true, SYNCED_FROM_HOST_LABEL)]
#[case::fake_with_host(NodeMode::Fake, true, FAKE_NODE_LABEL)]
#[case::fake_without_host(NodeMode::Fake, false, FAKE_NODE_LABEL)]
fn desired_node_carries_the_marker_of_its_mode(
    #[case] mode: NodeMode,
    #[case] with_host: bool,
    #[case] marker: &str,
) {
    let host = host_node();
    let desired = desired_node(
        "worker-1",
        mode,
        with_host.then_some(&host),
        &SyntheticNode::default(),
        None,
    );
    assert_eq!(desired.labels[marker], "true");
    let node = Node {
        metadata: kube::api::ObjectMeta {
            labels: Some(desired.labels.clone()),
            ..Default::default()
        },
        ..Default::default()
    };
    assert!(is_vcsync_node(&node));
}

#[test]
fn written_status_is_in_sync_with_what_was_desired() {
    for desired in [
        status_from_host(&host_node(), NodeMode::Fake),
        synthetic_status("n", &SyntheticNode::default()),
    ] {
        let written = status_for_write(None, &desired, ts("2025-02-02T00:00:00Z"));
        assert!(status_in_sync(Some(&written), &desired));
        assert!(
            written
                .conditions
                .iter()
                .flatten()
                .all(|c| c.last_heartbeat_time == Some(Time(ts("2025-02-02T00:00:00Z"))))
        );
    }
}

#[test]
fn heartbeat_times_are_not_drift() {
    let desired = status_from_host(&host_node(), NodeMode::Fake);
    let written = status_for_write(None, &desired, ts("2025-02-02T00:00:00Z"));
    let later = with_heartbeat(&written, ts("2025-02-02T00:05:00Z"));
    assert!(status_in_sync(Some(&later), &desired));
    assert_eq!(last_heartbeat(Some(&later)), Some(ts("2025-02-02T00:05:00Z")));
}

#[rstest]
#[case::capacity(json!({"capacity": {"cpu": "4", "memory": "8Gi", "pods": "110"}}))]
#[case::allocatable(json!({"allocatable": {"cpu": "1", "memory": "7Gi", "pods": "110"}}))]
#[case::addresses(json!({"addresses": [{"type": "InternalIP", "address": "10.0.0.8"}]}))]
#[case::node_info(json!({"nodeInfo": {"kubeletVersion": "v1.37.0"}}))]
#[case::ready_false(json!({"conditions": [{"type": "Ready", "status": "False", "reason": "KubeletNotReady",
    "lastTransitionTime": "2024-12-01T00:00:00Z"}, {"type": "MemoryPressure", "status": "False",
    "reason": "KubeletHasSufficientMemory", "lastTransitionTime": "2024-12-01T00:00:00Z"}]}))]
#[case::condition_gone(json!({"conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady",
    "message": "ok", "lastTransitionTime": "2024-12-01T00:00:00Z"}]}))]
fn host_status_changes_are_drift(#[case] change: serde_json::Value) {
    let written = status_for_write(
        None,
        &status_from_host(&host_node(), NodeMode::Fake),
        ts("2025-02-02T00:00:00Z"),
    );
    let mut host = serde_json::to_value(host_node()).unwrap();
    json_patch::merge(&mut host["status"], &change);
    let changed: Node = serde_json::from_value(host).unwrap();
    assert!(!status_in_sync(
        Some(&written),
        &status_from_host(&changed, NodeMode::Fake)
    ));
}

#[test]
fn virtual_control_plane_marking_a_node_unknown_is_drift_and_is_reverted() {
    let desired = synthetic_status("n", &SyntheticNode::default());
    let first = ts("2025-02-02T00:00:00Z");
    let mut current = status_for_write(None, &desired, first);
    for c in current.conditions.iter_mut().flatten() {
        c.status = "Unknown".into();
        c.reason = Some("NodeStatusUnknown".into());
    }
    assert!(!status_in_sync(Some(&current), &desired));
    let now = ts("2025-02-02T00:10:00Z");
    let fixed = status_for_write(Some(&current), &desired, now);
    assert!(status_in_sync(Some(&fixed), &desired));
    // The status changed, so the transition is now.
    assert!(
        fixed
            .conditions
            .iter()
            .flatten()
            .all(|c| c.last_transition_time == Some(Time(now)))
    );
}

#[test]
fn unchanged_synthetic_conditions_keep_their_transition_time() {
    let desired = synthetic_status("n", &SyntheticNode::default());
    let first = ts("2025-02-02T00:00:00Z");
    let current = status_for_write(None, &desired, first);
    let rewritten = status_for_write(Some(&current), &desired, ts("2025-02-02T01:00:00Z"));
    assert!(
        rewritten
            .conditions
            .iter()
            .flatten()
            .all(|c| c.last_transition_time == Some(Time(first)))
    );
}

#[test]
fn fields_the_syncer_does_not_own_are_kept_on_write() {
    let current = NodeStatus {
        volumes_in_use: Some(vec!["vol".into()]),
        ..Default::default()
    };
    let written = status_for_write(
        Some(&current),
        &synthetic_status("n", &SyntheticNode::default()),
        ts("2025-02-02T00:00:00Z"),
    );
    assert_eq!(written.volumes_in_use, Some(vec!["vol".into()]));
}

#[test]
fn label_edits_are_drift() {
    let desired = desired_node("n", NodeMode::Fake, None, &SyntheticNode::default(), None);
    let mut node = Node {
        metadata: kube::api::ObjectMeta {
            labels: Some(desired.labels.clone()),
            ..Default::default()
        },
        ..Default::default()
    };
    assert!(labels_in_sync(&node, &desired));
    node.metadata
        .labels
        .as_mut()
        .unwrap()
        .insert("tenant".into(), "edit".into());
    assert!(!labels_in_sync(&node, &desired));
}
