//! What a virtual node should look like: pure functions from a host node (or from nothing,
//! when host nodes cannot be read) to labels and status, and the comparisons that keep
//! reconciles free of no-op writes.
//!
//! Heartbeat timestamps (`lastHeartbeatTime`) are never part of a comparison: they belong to
//! the heartbeat, which refreshes them on its own schedule. Everything else the syncer owns
//! (labels, capacity, allocatable, addresses, node info, the conditions' type, status, reason,
//! message and transition time) is compared exactly.

use std::collections::BTreeMap;

use k8s_openapi::{
    api::core::v1::{Node, NodeAddress, NodeCondition, NodeStatus, NodeSystemInfo},
    apimachinery::pkg::{api::resource::Quantity, apis::meta::v1::Time},
};
use vcsync_translators::is_reserved_key;

use super::kubelet_endpoint;
use crate::{config::NodeMode, kubelet_config::KubeletEndpoint, syncers::from_host::SYNCED_FROM_HOST_LABEL};

/// Marker label of fake nodes (fake mode); only nodes carrying it or
/// [`SYNCED_FROM_HOST_LABEL`] are ever updated or deleted.
pub const FAKE_NODE_LABEL: &str = "vcsync.dev/fake-node";

/// Host labels a fake node carries: identity, platform and placement, which tenants use in
/// affinities and topology spread constraints. Anything else on a host node (node pools,
/// other tenants' dedications) is host business and stays there.
const FAKE_NODE_LABELS: &[&str] = &[
    "kubernetes.io/hostname",
    "kubernetes.io/os",
    "kubernetes.io/arch",
    "beta.kubernetes.io/os",
    "beta.kubernetes.io/arch",
    "node.kubernetes.io/instance-type",
    "beta.kubernetes.io/instance-type",
];

/// Prefixes of topology labels a fake node carries.
const FAKE_NODE_LABEL_PREFIXES: &[&str] = &["topology.kubernetes.io/", "failure-domain.beta.kubernetes.io/"];

/// Stable platform labels and the deprecated twins that the node-lifecycle controller keeps
/// equal to them; setting both avoids fighting that controller.
const BETA_TWINS: &[(&str, &str)] = &[
    ("kubernetes.io/os", "beta.kubernetes.io/os"),
    ("kubernetes.io/arch", "beta.kubernetes.io/arch"),
];

/// Which nodes this syncer may touch: those carrying either marker.
pub fn is_vcsync_node(node: &Node) -> bool {
    node.metadata.labels.as_ref().is_some_and(|labels| {
        labels.get(FAKE_NODE_LABEL).is_some_and(|v| v == "true")
            || labels.get(SYNCED_FROM_HOST_LABEL).is_some_and(|v| v == "true")
    })
}

/// What a fake node says when the host node cannot be read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SyntheticNode {
    /// Reported as the kubelet version (the virtual API server's version, so version-skew
    /// checks of tools pass).
    pub kubelet_version: String,
}

impl Default for SyntheticNode {
    fn default() -> Self {
        Self {
            kubelet_version: "v0.0.0-vcsync".to_string(),
        }
    }
}

/// Labels and status the syncer wants on a virtual node. Condition heartbeat times are left
/// empty; [`status_for_write`] fills them in.
#[derive(Clone, Debug, PartialEq)]
pub struct DesiredNode {
    /// The complete label set.
    pub labels: BTreeMap<String, String>,
    /// The status fields the syncer owns.
    pub status: NodeStatus,
}

/// The virtual node `name` in `mode`, from its host node if readable.
///
/// Real mode always has a host node (it mirrors existing ones); fake mode without one gets
/// synthetic data.
pub fn desired_node(
    name: &str,
    mode: NodeMode,
    host: Option<&Node>,
    synthetic: &SyntheticNode,
    kubelet: Option<KubeletEndpoint>,
) -> DesiredNode {
    let mut desired = match (mode, host) {
        (NodeMode::Real, Some(host)) => DesiredNode {
            labels: real_node_labels(host),
            status: status_from_host(host, mode),
        },
        (NodeMode::Fake, Some(host)) => DesiredNode {
            labels: fake_node_labels(name, Some(host)),
            status: status_from_host(host, mode),
        },
        (_, None) => DesiredNode {
            labels: fake_node_labels(name, None),
            status: synthetic_status(name, synthetic),
        },
    };
    if let Some(endpoint) = kubelet {
        kubelet_endpoint::point_at(&mut desired.status, endpoint);
    }
    desired
}

/// Fake mode: the host's identity, platform and topology labels plus the marker; without a
/// host node, the hostname and a linux/amd64 platform.
pub fn fake_node_labels(name: &str, host: Option<&Node>) -> BTreeMap<String, String> {
    let mut labels: BTreeMap<String, String> = match host.and_then(|h| h.metadata.labels.as_ref()) {
        Some(host_labels) => host_labels
            .iter()
            .filter(|(key, _)| {
                FAKE_NODE_LABELS.contains(&key.as_str())
                    || FAKE_NODE_LABEL_PREFIXES.iter().any(|p| key.starts_with(p))
            })
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
        None if host.is_some() => BTreeMap::new(),
        None => [("kubernetes.io/os", "linux"), ("kubernetes.io/arch", "amd64")]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    };
    labels
        .entry("kubernetes.io/hostname".to_string())
        .or_insert_with(|| name.to_string());
    complete_beta_twins(&mut labels);
    labels.insert(FAKE_NODE_LABEL.to_string(), "true".to_string());
    labels
}

/// Real mode: every host label (keys under `vcsync.dev/` excepted) plus the marker.
pub fn real_node_labels(host: &Node) -> BTreeMap<String, String> {
    let mut labels: BTreeMap<String, String> = host
        .metadata
        .labels
        .iter()
        .flatten()
        .filter(|(key, _)| !is_reserved_key(key))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    complete_beta_twins(&mut labels);
    labels.insert(SYNCED_FROM_HOST_LABEL.to_string(), "true".to_string());
    labels
}

fn complete_beta_twins(labels: &mut BTreeMap<String, String>) {
    for (stable, beta) in BETA_TWINS {
        if let Some(value) = labels.get(*stable).cloned() {
            labels.entry(beta.to_string()).or_insert(value);
        }
    }
}

/// The owned status fields of a host node: capacity, allocatable, node info, conditions
/// (without heartbeat times) and addresses (fake mode: only InternalIP and Hostname, which
/// is what in-cluster tools use; real mode: all).
///
/// Deliberately not copied: images (large, and nothing in the virtual cluster pulls),
/// daemonEndpoints (the host kubelet is not reachable through the virtual API server; with a
/// kubelet endpoint of vcsync's, [`desired_node`] puts that in),
/// volumes (host business).
pub fn status_from_host(host: &Node, mode: NodeMode) -> NodeStatus {
    let empty = NodeStatus::default();
    let source = host.status.as_ref().unwrap_or(&empty);
    let addresses = source.addresses.as_ref().map(|addresses| {
        addresses
            .iter()
            .filter(|a| mode == NodeMode::Real || a.type_ == "InternalIP" || a.type_ == "Hostname")
            .cloned()
            .collect::<Vec<_>>()
    });
    let conditions = source.conditions.as_ref().map(|conditions| {
        conditions
            .iter()
            .map(|c| NodeCondition {
                last_heartbeat_time: None,
                ..c.clone()
            })
            .collect::<Vec<_>>()
    });
    NodeStatus {
        capacity: source.capacity.clone(),
        allocatable: source.allocatable.clone(),
        addresses: addresses.filter(|a| !a.is_empty()),
        conditions,
        node_info: source.node_info.clone(),
        ..NodeStatus::default()
    }
}

/// A healthy, roomy node: what a fake node reports when the host node is unknown. The
/// numbers are placeholders (the host scheduler, not the virtual one, places pods), chosen
/// large enough that nothing in the virtual cluster considers the node full.
pub fn synthetic_status(name: &str, synthetic: &SyntheticNode) -> NodeStatus {
    let resources: BTreeMap<String, Quantity> = [
        ("cpu", "16"),
        ("memory", "64Gi"),
        ("pods", "110"),
        ("ephemeral-storage", "100Gi"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), Quantity(v.to_string())))
    .collect();
    let condition = |type_: &str, status: &str, reason: &str, message: &str| NodeCondition {
        type_: type_.to_string(),
        status: status.to_string(),
        reason: Some(reason.to_string()),
        message: Some(message.to_string()),
        last_heartbeat_time: None,
        last_transition_time: None,
    };
    NodeStatus {
        capacity: Some(resources.clone()),
        allocatable: Some(resources),
        addresses: Some(vec![NodeAddress {
            type_: "Hostname".to_string(),
            address: name.to_string(),
        }]),
        conditions: Some(vec![
            condition(
                "MemoryPressure",
                "False",
                "KubeletHasSufficientMemory",
                "vcsync fake node: host node data not readable",
            ),
            condition(
                "DiskPressure",
                "False",
                "KubeletHasNoDiskPressure",
                "vcsync fake node: host node data not readable",
            ),
            condition(
                "PIDPressure",
                "False",
                "KubeletHasSufficientPID",
                "vcsync fake node: host node data not readable",
            ),
            condition(
                "Ready",
                "True",
                "KubeletReady",
                "vcsync fake node: host node data not readable",
            ),
        ]),
        node_info: Some(NodeSystemInfo {
            architecture: "amd64".to_string(),
            operating_system: "linux".to_string(),
            kubelet_version: synthetic.kubelet_version.clone(),
            os_image: "vcsync fake node".to_string(),
            ..NodeSystemInfo::default()
        }),
        ..NodeStatus::default()
    }
}

/// Whether the labels of `current` are exactly `desired`.
pub fn labels_in_sync(current: &Node, desired: &DesiredNode) -> bool {
    current.metadata.labels.clone().unwrap_or_default() == desired.labels
}

/// Whether the owned status fields of `current` match `desired`, ignoring heartbeat times
/// (and transition times where `desired` leaves them to the syncer).
pub fn status_in_sync(current: Option<&NodeStatus>, desired: &NodeStatus) -> bool {
    let empty = NodeStatus::default();
    let current = current.unwrap_or(&empty);
    current.capacity == desired.capacity
        && current.allocatable == desired.allocatable
        && current.addresses == desired.addresses
        && kubelet_endpoint::port(current) == kubelet_endpoint::port(desired)
        && current.node_info == desired.node_info
        && conditions_in_sync(current.conditions.as_deref(), desired.conditions.as_deref())
}

fn conditions_in_sync(current: Option<&[NodeCondition]>, desired: Option<&[NodeCondition]>) -> bool {
    let (current, desired) = (current.unwrap_or_default(), desired.unwrap_or_default());
    current.len() == desired.len()
        && desired.iter().all(|want| {
            current.iter().any(|have| {
                have.type_ == want.type_
                    && have.status == want.status
                    && have.reason == want.reason
                    && have.message == want.message
                    && (want.last_transition_time.is_none()
                        || have.last_transition_time == want.last_transition_time)
            })
        })
}

/// The status to write: `current` with the owned fields replaced by `desired`, every
/// condition's heartbeat set to `now`, and transition times taken from `desired`, else kept
/// from `current` while a condition's status is unchanged, else `now`. Fields the syncer does
/// not own (set by the virtual control plane, say) are kept.
pub fn status_for_write(
    current: Option<&NodeStatus>,
    desired: &NodeStatus,
    now: jiff::Timestamp,
) -> NodeStatus {
    let mut status = current.cloned().unwrap_or_default();
    let previous = status.conditions.take().unwrap_or_default();
    status.capacity = desired.capacity.clone();
    status.allocatable = desired.allocatable.clone();
    status.addresses = desired.addresses.clone();
    if kubelet_endpoint::port(&status) != kubelet_endpoint::port(desired) {
        status.daemon_endpoints = desired.daemon_endpoints.clone();
    }
    status.node_info = desired.node_info.clone();
    status.conditions = desired.conditions.as_ref().map(|conditions| {
        conditions
            .iter()
            .map(|want| {
                let transition = want.last_transition_time.clone().or_else(|| {
                    previous
                        .iter()
                        .find(|have| have.type_ == want.type_ && have.status == want.status)
                        .and_then(|have| have.last_transition_time.clone())
                });
                NodeCondition {
                    last_heartbeat_time: Some(Time(now)),
                    last_transition_time: Some(transition.unwrap_or(Time(now))),
                    ..want.clone()
                }
            })
            .collect()
    });
    status
}

/// `status` with every condition's heartbeat set to `now` (the periodic status refresh).
pub fn with_heartbeat(status: &NodeStatus, now: jiff::Timestamp) -> NodeStatus {
    let mut status = status.clone();
    for condition in status.conditions.iter_mut().flatten() {
        condition.last_heartbeat_time = Some(Time(now));
    }
    status
}

/// The latest heartbeat a node's conditions carry, if any.
pub fn last_heartbeat(status: Option<&NodeStatus>) -> Option<jiff::Timestamp> {
    status?
        .conditions
        .as_ref()?
        .iter()
        .filter_map(|c| c.last_heartbeat_time.as_ref().map(|t| t.0))
        .max()
}

#[cfg(test)]
#[path = "node_status_tests.rs"]
mod tests;
