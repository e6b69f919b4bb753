//! Simulated nodes: the Node objects a kubelet would register, their Leases in `kube-node-lease`
//! and the periodic heartbeats of both.

use std::net::Ipv4Addr;

use serde_json::{Value, json};

use super::{Simulation, SimulatorConfig};

/// Namespace of node leases.
pub(crate) const LEASE_NAMESPACE: &str = "kube-node-lease";
/// `leaseDurationSeconds` of node leases, as kubelets set it.
const LEASE_DURATION_SECONDS: i64 = 40;
/// Node addresses: the `i`-th node gets this address plus `i`, on loopback (Linux routes all of
/// 127/8 there), where its kubelet API listens.
const FIRST_NODE_IP: Ipv4Addr = Ipv4Addr::new(127, 0, 1, 1);
/// The kubelet port a node names when its kubelet API could not be served.
pub(crate) const DEFAULT_KUBELET_PORT: u16 = 10250;
/// The kubelet version simulated nodes report.
pub(crate) const KUBELET_VERSION: &str = "v1.37.0-sim";
/// The node conditions a kubelet reports: (type, status, reason, message).
const CONDITIONS: [(&str, &str, &str, &str); 4] = [
    (
        "MemoryPressure",
        "False",
        "KubeletHasSufficientMemory",
        "kubelet has sufficient memory available",
    ),
    (
        "DiskPressure",
        "False",
        "KubeletHasNoDiskPressure",
        "kubelet has no disk pressure",
    ),
    (
        "PIDPressure",
        "False",
        "KubeletHasSufficientPID",
        "kubelet has sufficient PID available",
    ),
    ("Ready", "True", "KubeletReady", "kubelet is posting ready status"),
];

/// One simulated node.
#[derive(Debug, Clone)]
pub(crate) struct SimNode {
    pub name: String,
    pub ip: Ipv4Addr,
    /// Where its kubelet API listens (`status.daemonEndpoints.kubeletEndpoint.Port`).
    pub kubelet_port: u16,
}

impl SimNode {
    /// The `index`-th node of `config`.
    pub fn new(config: &SimulatorConfig, index: usize) -> Self {
        SimNode {
            name: format!("{}{index}", config.node_name_prefix),
            ip: Ipv4Addr::from(u32::from(FIRST_NODE_IP).wrapping_add(index as u32)),
            kubelet_port: DEFAULT_KUBELET_PORT,
        }
    }

    /// The Node object as a kubelet registers it, status included.
    pub fn object(&self, config: &SimulatorConfig, now: &str) -> Value {
        let resources = json!({
            "cpu": config.node_cpu,
            "memory": config.node_memory,
            "pods": config.max_pods_per_node.to_string(),
            "ephemeral-storage": "100Gi",
        });
        let conditions: Vec<Value> = CONDITIONS
            .iter()
            .map(|(kind, status, reason, message)| {
                json!({"type": kind, "status": status, "reason": reason, "message": message,
                    "lastHeartbeatTime": now, "lastTransitionTime": now})
            })
            .collect();
        let id = format!("{:032x}", fnv1a(self.name.as_bytes()) as u128);
        json!({
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {
                "name": self.name,
                "labels": {
                    "kubernetes.io/hostname": self.name,
                    "kubernetes.io/os": "linux",
                    "kubernetes.io/arch": "amd64",
                    "node.kubernetes.io/instance-type": "sim",
                },
                "annotations": { "vcsync.dev/simulated": "true" },
            },
            "spec": { "providerID": format!("sim://{}", self.name) },
            "status": {
                "capacity": resources,
                "allocatable": resources,
                // No Hostname address: kube-apiserver would try it first, and it resolves nowhere.
                "addresses": [{ "type": "InternalIP", "address": self.ip.to_string() }],
                "conditions": conditions,
                "daemonEndpoints": { "kubeletEndpoint": { "Port": self.kubelet_port } },
                "nodeInfo": {
                    "machineID": id,
                    "systemUUID": id,
                    "bootID": id,
                    "kernelVersion": "6.0.0-sim",
                    "osImage": "vcsync simulated node",
                    "containerRuntimeVersion": "sim://1.0.0",
                    "kubeletVersion": KUBELET_VERSION,
                    "kubeProxyVersion": "",
                    "operatingSystem": "linux",
                    "architecture": "amd64",
                },
            },
        })
    }

    /// The node's Lease, renewed `now`.
    pub fn lease(&self, node_uid: &Value, now: &str) -> Value {
        json!({
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": {
                "name": self.name,
                "namespace": LEASE_NAMESPACE,
                "ownerReferences": [{ "apiVersion": "v1", "kind": "Node", "name": self.name,
                    "uid": node_uid }],
            },
            "spec": {
                "holderIdentity": self.name,
                "leaseDurationSeconds": LEASE_DURATION_SECONDS,
                "renewTime": now,
            },
        })
    }
}

/// `status` of a node with every kubelet condition's heartbeat set to `now` (transition times are
/// kept, missing conditions added).
pub(crate) fn with_heartbeat(node: &Value, fresh: &Value, now: &str) -> Value {
    let mut status = node["status"].clone();
    if !status.is_object() {
        return fresh["status"].clone();
    }
    let mut conditions = status["conditions"].as_array().cloned().unwrap_or_default();
    for wanted in fresh["status"]["conditions"].as_array().into_iter().flatten() {
        match conditions.iter_mut().find(|c| c["type"] == wanted["type"]) {
            Some(existing) => existing["lastHeartbeatTime"] = json!(now),
            None => conditions.push(wanted.clone()),
        }
    }
    status["conditions"] = Value::Array(conditions);
    status
}

/// A `metav1.MicroTime` (RFC 3339 with microseconds), as lease renew times are written.
pub(crate) fn now_micro() -> String {
    jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%S.%6fZ")
        .to_string()
}

/// Whether `text` looks like a Kubernetes quantity (`8`, `500m`, `1.5`, `32Gi`, `1e3`).
pub(crate) fn is_quantity(text: &str) -> bool {
    let digits_end = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, suffix) = text.split_at(digits_end);
    let number_ok = !number.is_empty() && number.parse::<f64>().is_ok();
    let suffix_ok = matches!(
        suffix,
        "" | "m" | "k" | "M" | "G" | "T" | "P" | "E" | "Ki" | "Mi" | "Gi" | "Ti" | "Pi" | "Ei"
    ) || suffix
        .strip_prefix(['e', 'E'])
        .is_some_and(|e| !e.is_empty() && e.parse::<i32>().is_ok());
    number_ok && suffix_ok
}

/// Whether `name` is a lowercase RFC 1123 subdomain, as node names must be.
pub(crate) fn is_dns_subdomain(name: &str) -> bool {
    name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
}

/// FNV-1a: stable identifiers derived from names.
pub(crate) fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, b| {
        (hash ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

impl Simulation {
    /// Creates the nodes (or takes over existing ones, refreshing their status) and their leases.
    pub(super) fn register_nodes(&self) {
        let now = crate::objects::now_rfc3339();
        for node in &self.nodes {
            let fresh = node.object(&self.config, &now);
            let stored = match self.write().create(&self.kinds.nodes, "", fresh.clone()) {
                Ok(stored) => Some(stored),
                Err(e) if e.reason == "AlreadyExists" => self
                    .objects
                    .get(&self.kinds.nodes, "", &node.name)
                    .ok()
                    .and_then(|existing| {
                        self.write_status(&self.kinds.nodes, &existing, fresh["status"].clone())
                            .ok()
                    }),
                Err(e) => {
                    tracing::warn!(node = %node.name, error = %e.message, "could not register a simulated node");
                    None
                }
            };
            if let Some(stored) = stored {
                self.renew_lease(node, &stored["metadata"]["uid"]);
            }
        }
    }

    /// Renews every node's lease.
    pub(super) fn renew_leases(&self) {
        for node in &self.nodes {
            let uid = self
                .objects
                .get(&self.kinds.nodes, "", &node.name)
                .map(|n| n["metadata"]["uid"].clone())
                .unwrap_or(Value::Null);
            self.renew_lease(node, &uid);
        }
    }

    fn renew_lease(&self, node: &SimNode, node_uid: &Value) {
        let leases = &self.kinds.leases;
        let now = now_micro();
        let result = match self.objects.get(leases, LEASE_NAMESPACE, &node.name) {
            Ok(existing) => {
                let mut lease = Value::clone(&existing);
                lease["spec"]["holderIdentity"] = json!(node.name);
                lease["spec"]["leaseDurationSeconds"] = json!(LEASE_DURATION_SECONDS);
                lease["spec"]["renewTime"] = json!(now);
                self.write()
                    .update(leases, LEASE_NAMESPACE, &node.name, None, lease)
            }
            Err(_) => self
                .write()
                .create(leases, LEASE_NAMESPACE, node.lease(node_uid, &now)),
        };
        if let Err(e) = result {
            tracing::debug!(node = %node.name, error = %e.message, "lease renewal failed; retried next period");
        }
    }

    /// Refreshes the heartbeat times of every node's conditions, re-registering deleted nodes.
    pub(super) fn heartbeat(&self) {
        let now = crate::objects::now_rfc3339();
        for node in &self.nodes {
            let fresh = node.object(&self.config, &now);
            let result = match self.objects.get(&self.kinds.nodes, "", &node.name) {
                Ok(existing) => {
                    let status = with_heartbeat(&existing, &fresh, &now);
                    self.write_status(&self.kinds.nodes, &existing, status)
                }
                Err(_) => self.write().create(&self.kinds.nodes, "", fresh),
            };
            if let Err(e) = result {
                tracing::debug!(node = %node.name, error = %e.message, "node heartbeat failed; retried next period");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_objects_look_like_registered_kubelets() {
        let config = SimulatorConfig::default();
        let node = SimNode::new(&config, 1);
        let object = node.object(&config, "2026-01-01T00:00:00Z");
        assert_eq!(object["metadata"]["name"], "sim-node-1");
        assert_eq!(
            object["metadata"]["labels"]["kubernetes.io/hostname"],
            "sim-node-1"
        );
        assert_eq!(
            object["status"]["addresses"],
            json!([{"type": "InternalIP", "address": "127.0.1.2"}])
        );
        assert_eq!(
            object["status"]["daemonEndpoints"]["kubeletEndpoint"]["Port"],
            DEFAULT_KUBELET_PORT
        );
        assert_eq!(object["status"]["allocatable"]["pods"], "110");
        assert_eq!(object["status"]["nodeInfo"]["kubeletVersion"], KUBELET_VERSION);
        let ready = object["status"]["conditions"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["type"] == "Ready")
            .unwrap();
        assert_eq!(ready["status"], "True");
        let lease = node.lease(&json!("uid-1"), "2026-01-01T00:00:00.000000Z");
        assert_eq!(lease["spec"]["holderIdentity"], "sim-node-1");
        assert_eq!(lease["metadata"]["ownerReferences"][0]["uid"], "uid-1");
    }

    #[test]
    fn heartbeats_keep_transition_times() {
        let config = SimulatorConfig::default();
        let node = SimNode::new(&config, 0);
        let old = node.object(&config, "2026-01-01T00:00:00Z");
        let fresh = node.object(&config, "2026-01-01T00:01:00Z");
        let status = with_heartbeat(&old, &fresh, "2026-01-01T00:01:00Z");
        for condition in status["conditions"].as_array().unwrap() {
            assert_eq!(condition["lastHeartbeatTime"], "2026-01-01T00:01:00Z");
            assert_eq!(condition["lastTransitionTime"], "2026-01-01T00:00:00Z");
        }
    }

    #[test]
    fn quantities_and_names() {
        for good in ["8", "500m", "1.5", "32Gi", "1e3"] {
            assert!(is_quantity(good), "{good}");
        }
        for bad in ["", "Gi", "8 cores", "1x"] {
            assert!(!is_quantity(bad), "{bad}");
        }
        assert!(is_dns_subdomain("sim-node-0"));
        assert!(!is_dns_subdomain("Sim_Node"));
        assert!(now_micro().ends_with('Z'));
    }
}
