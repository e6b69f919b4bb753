//! Node Leases in the virtual cluster's `kube-node-lease` namespace, and the heartbeat target
//! that renews them and refreshes node status in the virtual cluster.
//!
//! A Lease is named after its node, held by it (`holderIdentity`), owned by it (an owner
//! reference, so the virtual cluster's garbage collector also removes it with the node) and
//! carries [`NODE_LEASE_LABEL`]; Leases without that label are never written.

use std::sync::Arc;

use async_trait::async_trait;
use jiff::Timestamp;
use k8s_openapi::{
    api::{
        coordination::v1::{Lease, LeaseSpec},
        core::v1::{Namespace, Node},
    },
    apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta, OwnerReference},
};
use kube::{
    Api, Client,
    api::{DeleteParams, Patch, PatchParams, Preconditions},
    runtime::reflector::ObjectRef,
};

use super::{
    heartbeat::{HeartbeatConfig, HeartbeatTarget, NodeBeat},
    node_status::{is_vcsync_node, last_heartbeat, with_heartbeat},
};
use crate::{
    cache::{Cache, DecodeError},
    error::{Result, Side, api_error, status_code},
    writes::{FIELD_MANAGER, write_params},
};

/// The namespace of node Leases.
pub const NODE_LEASE_NAMESPACE: &str = "kube-node-lease";

/// Marker label of the Leases vcsync keeps.
pub const NODE_LEASE_LABEL: &str = "vcsync.dev/node-lease";

/// Whether the Lease carries vcsync's marker.
pub fn is_vcsync_lease(lease: &Lease) -> bool {
    lease
        .metadata
        .labels
        .as_ref()
        .and_then(|l| l.get(NODE_LEASE_LABEL))
        .is_some_and(|v| v == "true")
}

/// The Lease of `node`, renewed at `now`.
pub fn node_lease(node: &Node, lease_duration_seconds: i32, now: Timestamp) -> Lease {
    let name = node.metadata.name.clone().unwrap_or_default();
    Lease {
        metadata: ObjectMeta {
            name: Some(name.clone()),
            namespace: Some(NODE_LEASE_NAMESPACE.to_string()),
            labels: Some([(NODE_LEASE_LABEL.to_string(), "true".to_string())].into()),
            owner_references: owner_of(node).map(|o| vec![o]),
            ..ObjectMeta::default()
        },
        spec: Some(LeaseSpec {
            holder_identity: Some(name),
            lease_duration_seconds: Some(lease_duration_seconds),
            renew_time: Some(MicroTime(now)),
            ..LeaseSpec::default()
        }),
    }
}

fn owner_of(node: &Node) -> Option<OwnerReference> {
    Some(OwnerReference {
        api_version: "v1".to_string(),
        kind: "Node".to_string(),
        name: node.metadata.name.clone()?,
        uid: node.metadata.uid.clone()?,
        ..OwnerReference::default()
    })
}

/// The Lease store key of `node`.
fn lease_ref(node: &str) -> ObjectRef<Lease> {
    ObjectRef::new(node).within(NODE_LEASE_NAMESPACE)
}

fn leases_api(client: &Client) -> Api<Lease> {
    Api::namespaced(client.clone(), NODE_LEASE_NAMESPACE)
}

/// Deletes the Lease of `node` if the cache shows one of vcsync's, with a UID precondition.
pub async fn delete_lease(client: &Client, leases: &Cache<Lease>, node: &str) -> Result<()> {
    let Some(lease) = leases.get(&lease_ref(node)).filter(|l| is_vcsync_lease(l)) else {
        return Ok(());
    };
    let params = DeleteParams {
        preconditions: lease.metadata.uid.clone().map(|uid| Preconditions {
            uid: Some(uid),
            resource_version: None,
        }),
        ..DeleteParams::default()
    };
    match leases_api(client).delete(node, &params).await {
        Ok(_) => {
            tracing::info!(node, "deleted node lease");
            Ok(())
        }
        Err(err) if matches!(status_code(&err), Some(404 | 409)) => Ok(()),
        Err(err) => Err(api_error(
            Side::Virtual,
            "delete",
            "Lease",
            &format!("{NODE_LEASE_NAMESPACE}/{node}"),
        )(err)),
    }
}

/// The heartbeat's view of the virtual cluster: vcsync's nodes and their Leases.
pub struct VirtualHeartbeat {
    client: Client,
    nodes: Cache<Node>,
    leases: Cache<Lease>,
    config: HeartbeatConfig,
}

impl VirtualHeartbeat {
    /// A target over the virtual node and Lease caches.
    pub fn new(client: Client, nodes: Cache<Node>, leases: Cache<Lease>, config: HeartbeatConfig) -> Self {
        Self {
            client,
            nodes,
            leases,
            config,
        }
    }

    fn node(&self, name: &str) -> Option<Arc<Node>> {
        self.try_node(name).ok().flatten()
    }

    /// [`Self::node`], with an error for a cached node that does not decode (nodes are
    /// cached typed, so never today): for the garbage collection, which must not take it
    /// for gone.
    fn try_node(&self, name: &str) -> Result<Option<Arc<Node>>, DecodeError> {
        Ok(self
            .nodes
            .try_get(&ObjectRef::new(name))?
            .filter(|n| is_vcsync_node(n) && n.metadata.deletion_timestamp.is_none()))
    }

    async fn create_lease(&self, node: &Node, now: Timestamp) -> Result<()> {
        let lease = node_lease(node, self.config.lease_duration_seconds, now);
        let name = lease.metadata.name.clone().unwrap_or_default();
        let params = write_params();
        let mut result = leases_api(&self.client).create(&params, &lease).await;
        if result.as_ref().is_err_and(|err| status_code(err) == Some(404)) {
            // A control plane that has not made the namespace (real ones do at start).
            self.create_namespace().await?;
            result = leases_api(&self.client).create(&params, &lease).await;
        }
        match result {
            Ok(_) => {
                tracing::info!(node = %name, "created node lease");
                Ok(())
            }
            // The cache is behind (or a Lease without vcsync's marker holds the name, which
            // is left alone): nothing to write now.
            Err(err) if status_code(&err) == Some(409) => Ok(()),
            Err(err) => Err(api_error(
                Side::Virtual,
                "create",
                "Lease",
                &format!("{NODE_LEASE_NAMESPACE}/{name}"),
            )(err)),
        }
    }

    async fn create_namespace(&self) -> Result<()> {
        let namespace = Namespace {
            metadata: ObjectMeta {
                name: Some(NODE_LEASE_NAMESPACE.to_string()),
                ..ObjectMeta::default()
            },
            ..Namespace::default()
        };
        let params = write_params();
        match Api::<Namespace>::all(self.client.clone())
            .create(&params, &namespace)
            .await
        {
            Ok(_) => {
                tracing::info!(
                    namespace = NODE_LEASE_NAMESPACE,
                    "created the node lease namespace"
                );
                Ok(())
            }
            Err(err) if status_code(&err) == Some(409) => Ok(()),
            Err(err) => Err(api_error(
                Side::Virtual,
                "create",
                "Namespace",
                NODE_LEASE_NAMESPACE,
            )(err)),
        }
    }
}

#[async_trait]
impl HeartbeatTarget for VirtualHeartbeat {
    fn beats(&self) -> Vec<NodeBeat> {
        self.nodes
            .state()
            .iter()
            .filter(|n| is_vcsync_node(n) && n.metadata.deletion_timestamp.is_none())
            .filter_map(|node| {
                let name = node.metadata.name.clone()?;
                let lease_renewed = self
                    .leases
                    .get(&lease_ref(&name))
                    .and_then(|l| l.spec.as_ref()?.renew_time.as_ref().map(|t| t.0));
                Some(NodeBeat {
                    lease_renewed,
                    status_heartbeat: last_heartbeat(node.status.as_ref()),
                    node: name,
                })
            })
            .collect()
    }

    async fn renew_lease(&self, name: &str, now: Timestamp) -> Result<()> {
        let Some(node) = self.node(name) else {
            return Ok(());
        };
        let Some(_lease) = self.leases.get(&lease_ref(name)) else {
            return self.create_lease(&node, now).await;
        };
        // Only vcsync's Leases are in the cache (the watch selects the marker). A merge patch
        // needs no resourceVersion: this task is the Lease's only writer.
        let renewed = node_lease(&node, self.config.lease_duration_seconds, now);
        let patch = serde_json::json!({
            "metadata": {"ownerReferences": renewed.metadata.owner_references},
            "spec": renewed.spec,
        });
        let params = PatchParams {
            field_manager: Some(FIELD_MANAGER.to_string()),
            ..PatchParams::default()
        };
        match leases_api(&self.client)
            .patch(name, &params, &Patch::Merge(&patch))
            .await
        {
            Ok(_) => Ok(()),
            Err(err) if status_code(&err) == Some(404) => self.create_lease(&node, now).await,
            Err(err) => Err(api_error(
                Side::Virtual,
                "renew",
                "Lease",
                &format!("{NODE_LEASE_NAMESPACE}/{name}"),
            )(err)),
        }
    }

    async fn refresh_status(&self, name: &str, now: Timestamp) -> Result<()> {
        let Some(node) = self.node(name) else {
            return Ok(());
        };
        let Some(status) = node.status.as_ref().filter(|s| s.conditions.is_some()) else {
            // Nothing to refresh until the syncer wrote conditions.
            return Ok(());
        };
        let mut refreshed = (*node).clone();
        refreshed.status = Some(with_heartbeat(status, now));
        let params = write_params();
        // With the cached resourceVersion: a concurrent status write (the syncer's, or the
        // node-lifecycle controller's) wins and this refresh retries at the next tick.
        match Api::<Node>::all(self.client.clone())
            .replace_status(name, &params, &refreshed)
            .await
        {
            Ok(_) => Ok(()),
            Err(err) if status_code(&err) == Some(404) => Ok(()),
            Err(err) => Err(api_error(Side::Virtual, "refresh status of", "Node", name)(err)),
        }
    }

    /// Leases of vcsync whose node is gone and that have expired: left over when vcsync
    /// stopped between deleting a node and its Lease.
    async fn collect_garbage(&self, now: Timestamp) {
        for lease in self.leases.state() {
            let Some(name) = lease.metadata.name.as_deref() else {
                continue;
            };
            // A node that does not decode keeps its Lease this round.
            if !matches!(self.try_node(name), Ok(None)) || !is_vcsync_lease(&lease) {
                continue;
            }
            let renewed = lease
                .spec
                .as_ref()
                .and_then(|s| s.renew_time.as_ref())
                .map(|t| t.0);
            let expired = renewed.is_none_or(|at| {
                now.duration_since(at)
                    > jiff::SignedDuration::try_from(self.config.lease_duration()).unwrap_or_default()
            });
            if expired && let Err(err) = delete_lease(&self.client, &self.leases, name).await {
                tracing::debug!(node = name, error = %err, "could not remove an expired lease");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lease_is_held_and_owned_by_its_node() {
        let node = Node {
            metadata: ObjectMeta {
                name: Some("n1".into()),
                uid: Some("u1".into()),
                ..Default::default()
            },
            ..Default::default()
        };
        let now = Timestamp::from_second(1_700_000_000).unwrap();
        let lease = node_lease(&node, 40, now);
        assert_eq!(lease.metadata.namespace.as_deref(), Some(NODE_LEASE_NAMESPACE));
        assert!(is_vcsync_lease(&lease));
        let spec = lease.spec.unwrap();
        assert_eq!(spec.holder_identity.as_deref(), Some("n1"));
        assert_eq!(spec.lease_duration_seconds, Some(40));
        assert_eq!(spec.renew_time, Some(MicroTime(now)));
        let owner = &lease.metadata.owner_references.unwrap()[0];
        assert_eq!((owner.kind.as_str(), owner.uid.as_str()), ("Node", "u1"));
    }

    #[test]
    fn a_node_without_uid_yet_gets_a_lease_without_owner() {
        let node = Node {
            metadata: ObjectMeta {
                name: Some("n1".into()),
                ..Default::default()
            },
            ..Default::default()
        };
        let lease = node_lease(&node, 40, Timestamp::UNIX_EPOCH);
        assert_eq!(lease.metadata.owner_references, None);
    }

    /// A node that does not decode (were nodes kept encoded) once read as gone, and the
    /// garbage collection deleted its expired Lease. Now it is kept this round, no request.
    #[tokio::test]
    async fn the_lease_of_a_node_that_does_not_decode_is_not_collected() {
        use std::sync::atomic::Ordering;

        use crate::cache::{Storage, filled};

        let (client, connections) = crate::testing::silent_api_server().await;
        let node = Node {
            metadata: ObjectMeta {
                name: Some("n1".into()),
                uid: Some("u1".into()),
                labels: Some(
                    [(
                        super::super::node_status::FAKE_NODE_LABEL.to_string(),
                        "true".to_string(),
                    )]
                    .into(),
                ),
                ..Default::default()
            },
            ..Default::default()
        };
        let long_ago = Timestamp::from_second(1_700_000_000).unwrap();
        let lease = node_lease(&node, 40, long_ago);
        assert!(is_vcsync_lease(&lease));
        let nodes = filled(Storage::Encoded, [node]);
        nodes.corrupt(&ObjectRef::new("n1"));
        let config = HeartbeatConfig {
            renew: std::time::Duration::from_secs(10),
            lease_duration_seconds: 40,
            status_refresh: std::time::Duration::from_secs(60),
        };
        let heartbeat = VirtualHeartbeat::new(client, nodes, filled(Storage::Typed, [lease]), config);

        tokio::time::timeout(
            std::time::Duration::from_secs(5),
            heartbeat.collect_garbage(Timestamp::now()),
        )
        .await
        .expect("no request made");
        tokio::task::yield_now().await;
        assert_eq!(connections.load(Ordering::SeqCst), 0, "the Lease was not deleted");
    }
}
