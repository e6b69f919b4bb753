//! A virtual node whose kubelet is vcsync's endpoint: the address and port a virtual API server
//! calls for `kubectl logs`, `exec`, `attach` and `port-forward` of the node's pods.

use k8s_openapi::api::core::v1::{DaemonEndpoint, NodeAddress, NodeDaemonEndpoints, NodeStatus};

use crate::kubelet_config::KubeletEndpoint;

/// Points a node status at `endpoint`: its one address the endpoint's InternalIP (a
/// kube-apiserver prefers a Hostname, which it would have to resolve, so none is left), its
/// kubelet port the endpoint's.
pub fn point_at(status: &mut NodeStatus, endpoint: KubeletEndpoint) {
    status.addresses = Some(vec![NodeAddress {
        type_: "InternalIP".to_string(),
        address: endpoint.address.to_string(),
    }]);
    status.daemon_endpoints = Some(NodeDaemonEndpoints {
        kubelet_endpoint: Some(DaemonEndpoint {
            port: i32::from(endpoint.port),
        }),
    });
}

/// The kubelet port a node status names; a kube-apiserver writes an absent one as port 0.
pub fn port(status: &NodeStatus) -> Option<i32> {
    let endpoints = status.daemon_endpoints.as_ref()?;
    endpoints
        .kubelet_endpoint
        .as_ref()
        .map(|e| e.port)
        .filter(|port| *port != 0)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::{
        config::NodeMode,
        syncers::nodes::node_status::{SyntheticNode, desired_node, status_for_write, status_in_sync},
    };

    fn endpoint() -> KubeletEndpoint {
        KubeletEndpoint {
            address: "10.9.8.7".parse().unwrap(),
            port: 10250,
        }
    }

    fn host_node() -> k8s_openapi::api::core::v1::Node {
        serde_json::from_value(json!({
            "metadata": {"name": "worker-1"},
            "status": {
                "addresses": [
                    {"type": "InternalIP", "address": "10.0.0.7"},
                    {"type": "Hostname", "address": "worker-1.internal"}
                ],
                "daemonEndpoints": {"kubeletEndpoint": {"Port": 10250}}
            }
        }))
        .unwrap()
    }

    #[test]
    fn with_an_endpoint_every_node_names_it_and_no_host_address() {
        let host = host_node();
        for (mode, host) in [
            (NodeMode::Fake, Some(&host)),
            (NodeMode::Real, Some(&host)),
            (NodeMode::Fake, None),
        ] {
            let desired = desired_node(
                "worker-1",
                mode,
                host,
                &SyntheticNode::default(),
                Some(endpoint()),
            );
            let addresses = desired.status.addresses.clone().unwrap();
            assert_eq!(addresses.len(), 1, "{mode:?}: {addresses:?}");
            assert_eq!(
                (addresses[0].type_.as_str(), addresses[0].address.as_str()),
                ("InternalIP", "10.9.8.7")
            );
            assert_eq!(port(&desired.status), Some(10250));
        }
    }

    #[test]
    fn without_an_endpoint_no_kubelet_port_is_named() {
        let desired = desired_node(
            "worker-1",
            NodeMode::Fake,
            Some(&host_node()),
            &SyntheticNode::default(),
            None,
        );
        assert_eq!(port(&desired.status), None);
        assert_eq!(desired.status.addresses.unwrap()[0].address, "10.0.0.7");
    }

    #[test]
    fn the_port_is_written_once_and_port_zero_means_none() {
        let now = jiff::Timestamp::now();
        let desired = desired_node(
            "n",
            NodeMode::Fake,
            None,
            &SyntheticNode::default(),
            Some(endpoint()),
        );
        let written = status_for_write(None, &desired.status, now);
        assert!(status_in_sync(Some(&written), &desired.status));
        // A node written by kube-apiserver without a port reads back with port 0: no endpoint,
        // so a node without one is in sync and one that gets one is not.
        let without = desired_node("n", NodeMode::Fake, None, &SyntheticNode::default(), None);
        let mut from_server = status_for_write(None, &without.status, now);
        from_server.daemon_endpoints = Some(NodeDaemonEndpoints {
            kubelet_endpoint: Some(DaemonEndpoint { port: 0 }),
        });
        assert!(status_in_sync(Some(&from_server), &without.status));
        assert!(!status_in_sync(Some(&from_server), &desired.status));
        let rewritten = status_for_write(Some(&from_server), &desired.status, now);
        assert_eq!(port(&rewritten), Some(10250));
    }
}
