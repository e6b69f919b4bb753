//! The node syncer: a [`FakeSyncer`] of virtual Nodes for both modes.
//!
//! - Fake mode: a node is wanted while a virtual pod is bound to its name and, when host nodes
//!   are readable, while the host node of that name exists.
//! - Real mode: a node is wanted while the host node exists and matches the selector (the
//!   host watch is filtered by it, so "in the host cache" is the whole test).
//!
//! Keys are node names. Only nodes carrying a vcsync marker are updated or deleted; a node
//! of the same name created by someone else is left alone. The syncer owns labels and status
//! of its nodes; annotations, taints and the rest of the spec are the virtual control plane's
//! (the node-lifecycle controller taints nodes whose heartbeat stops, the TTL controller
//! annotates them), and vcsync neither sets nor removes them.

use std::sync::Arc;

use async_trait::async_trait;
use futures::stream::BoxStream;
use k8s_openapi::api::{coordination::v1::Lease, core::v1::Node};
use kube::{
    Api,
    api::{DeleteParams, Preconditions},
    runtime::reflector::ObjectRef,
};
use vcsync_translators::VirtualKey;

use super::{
    leases::delete_lease,
    node_status::{
        DesiredNode, SyntheticNode, desired_node, is_vcsync_node, labels_in_sync, status_for_write,
        status_in_sync,
    },
    pods_by_node::PodsByNode,
};
use crate::{
    Action, ControllerModifier, FakeSyncer, Result, SyncContext,
    cache::Cache,
    config::NodeMode,
    controller::CACHE_LAG_RETRY,
    error::{Side, api_error, status_code},
    kubelet_config::KubeletEndpoint,
    sdk::Base,
    sdk::Triggers,
    writes::write_params,
};

/// Creates, updates and removes vcsync's virtual nodes.
pub struct NodeSyncer {
    mode: NodeMode,
    /// Host nodes (real mode: only those matching the selector); None when unreadable.
    host_nodes: Option<Cache<Node>>,
    /// Fake mode: which node names virtual pods are bound to.
    pods: Option<Arc<PodsByNode>>,
    leases: Cache<Lease>,
    synthetic: SyntheticNode,
    /// vcsync's kubelet API, which every virtual node names as its kubelet; None when not served.
    kubelet: Option<KubeletEndpoint>,
    triggers: Triggers,
}

impl NodeSyncer {
    /// A syncer in `mode`; `triggers` are added to its controller.
    pub fn new(
        mode: NodeMode,
        host_nodes: Option<Cache<Node>>,
        pods: Option<Arc<PodsByNode>>,
        leases: Cache<Lease>,
        synthetic: SyntheticNode,
        kubelet: Option<KubeletEndpoint>,
        triggers: Vec<BoxStream<'static, VirtualKey>>,
    ) -> Self {
        Self {
            mode,
            host_nodes,
            pods,
            leases,
            synthetic,
            kubelet,
            triggers: Triggers::new(triggers),
        }
    }

    /// The host node `name`. Nodes are cached typed, which cannot fail to decode; were they
    /// kept encoded, a failure is an error, never an absence (which deletes the virtual node).
    fn host_node(&self, name: &str) -> Result<Option<Arc<Node>>> {
        let Some(host_nodes) = self.host_nodes.as_ref() else {
            return Ok(None);
        };
        Ok(host_nodes.try_get(&ObjectRef::new(name))?)
    }

    /// The desired node, or None when the node should not exist.
    fn desired(&self, name: &str) -> Result<Option<DesiredNode>> {
        let host = self.host_node(name)?;
        let wanted = match self.mode {
            NodeMode::Fake => {
                self.pods.as_ref().is_some_and(|p| p.is_used(name))
                    && (self.host_nodes.is_none() || host.is_some())
            }
            NodeMode::Real => host.is_some(),
        };
        Ok(wanted.then(|| desired_node(name, self.mode, host.as_deref(), &self.synthetic, self.kubelet)))
    }

    async fn create(&self, ctx: &SyncContext<Node>, name: &str, desired: DesiredNode) -> Result<Action> {
        let node = Node {
            metadata: kube::api::ObjectMeta {
                name: Some(name.to_string()),
                labels: Some(desired.labels),
                ..Default::default()
            },
            status: Some(status_for_write(None, &desired.status, jiff::Timestamp::now())),
            ..Node::default()
        };
        let params = write_params();
        match nodes_api(ctx).create(&params, &node).await {
            Ok(_) => {
                tracing::info!(node = name, mode = ?self.mode, "created virtual node");
                Ok(Action::await_change())
            }
            // Ours and the cache is behind, or someone else's, which fake_sync leaves alone.
            Err(err) if status_code(&err) == Some(409) => Ok(Action::requeue(CACHE_LAG_RETRY)),
            Err(err) => Err(api_error(Side::Virtual, "create", "Node", name)(err)),
        }
    }

    async fn delete(&self, ctx: &SyncContext<Node>, virt: &Node) -> Result<Action> {
        let name = virt.metadata.name.clone().unwrap_or_default();
        let params = DeleteParams {
            preconditions: virt.metadata.uid.clone().map(|uid| Preconditions {
                uid: Some(uid),
                resource_version: None,
            }),
            ..DeleteParams::background()
        };
        match nodes_api(ctx).delete(&name, &params).await {
            Ok(_) => tracing::info!(node = %name, "deleted virtual node"),
            Err(err) if status_code(&err) == Some(404) => {}
            Err(err) => return Err(api_error(Side::Virtual, "delete", "Node", &name)(err)),
        }
        delete_lease(ctx.virtual_client(), &self.leases, &name).await?;
        Ok(Action::await_change())
    }
}

fn nodes_api(ctx: &SyncContext<Node>) -> Api<Node> {
    Api::all(ctx.virtual_client().clone())
}

impl Base for NodeSyncer {
    fn name(&self) -> &str {
        "nodes"
    }
}

#[async_trait]
impl FakeSyncer for NodeSyncer {
    type Resource = Node;

    async fn fake_sync_up(&self, ctx: &SyncContext<Node>, key: &VirtualKey) -> Result<Action> {
        match self.desired(&key.name)? {
            Some(desired) => self.create(ctx, &key.name, desired).await,
            None => Ok(Action::await_change()),
        }
    }

    async fn fake_sync(&self, ctx: &SyncContext<Node>, virt: Arc<Node>) -> Result<Action> {
        if !is_vcsync_node(&virt) || virt.metadata.deletion_timestamp.is_some() {
            return Ok(Action::await_change());
        }
        let name = virt.metadata.name.clone().unwrap_or_default();
        let Some(desired) = self.desired(&name)? else {
            return self.delete(ctx, &virt).await;
        };
        let params = write_params();
        if !labels_in_sync(&virt, &desired) {
            // With the cached resourceVersion; a main-resource write leaves the status alone.
            let mut updated = (*virt).clone();
            updated.metadata.labels = Some(desired.labels.clone());
            nodes_api(ctx)
                .replace(&name, &params, &updated)
                .await
                .map_err(api_error(Side::Virtual, "update labels of", "Node", &name))?;
            tracing::info!(node = %name, "updated virtual node labels");
            // The status is looked at again with the new resourceVersion.
            return Ok(Action::await_change());
        }
        if !status_in_sync(virt.status.as_ref(), &desired.status) {
            let mut updated = (*virt).clone();
            updated.status = Some(status_for_write(
                virt.status.as_ref(),
                &desired.status,
                jiff::Timestamp::now(),
            ));
            nodes_api(ctx)
                .replace_status(&name, &params, &updated)
                .await
                .map_err(api_error(Side::Virtual, "update status of", "Node", &name))?;
            tracing::info!(node = %name, "updated virtual node status");
        }
        Ok(Action::await_change())
    }

    fn controller_modifier(&self) -> Option<&dyn ControllerModifier> {
        Some(&self.triggers)
    }
}

#[cfg(test)]
mod tests {
    use rstest::rstest;

    use super::*;
    use crate::syncers::{from_host::SYNCED_FROM_HOST_LABEL, nodes::node_status::FAKE_NODE_LABEL};

    /// A syncer whose host cache holds `host_nodes` (None: host nodes unreadable) and whose
    /// pods are bound to `used`.
    fn syncer(mode: NodeMode, host_nodes: Option<&[&str]>, used: &[&str]) -> NodeSyncer {
        let host = host_nodes.map(|names| {
            let nodes = names.iter().map(|name| Node {
                metadata: kube::api::ObjectMeta {
                    name: Some(name.to_string()),
                    ..Default::default()
                },
                ..Default::default()
            });
            crate::cache::filled(crate::cache::Storage::Typed, nodes)
        });
        let pods = (mode == NodeMode::Fake).then(|| {
            let index = Arc::new(PodsByNode::new());
            for (i, node) in used.iter().enumerate() {
                index.apply(VirtualKey::namespaced("team", format!("pod-{i}")), Some(node));
            }
            index
        });
        NodeSyncer::new(
            mode,
            host,
            pods,
            crate::cache::empty::<Lease>(),
            SyntheticNode::default(),
            None,
            Vec::new(),
        )
    }

    #[rstest]
    #[case::used_with_host(NodeMode::Fake, Some(&["n1"][..]), &["n1"][..], Some(FAKE_NODE_LABEL))]
    #[case::used_without_host(NodeMode::Fake, Some(&[][..]), &["n1"][..], None)]
    #[case::unused_with_host(NodeMode::Fake, Some(&["n1"][..]), &[][..], None)]
    #[case::used_host_unreadable(NodeMode::Fake, None, &["n1"][..], Some(FAKE_NODE_LABEL))]
    #[case::unused_host_unreadable(NodeMode::Fake, None, &[][..], None)]
    #[case::real_host_present(NodeMode::Real, Some(&["n1"][..]), &[][..], Some(SYNCED_FROM_HOST_LABEL))]
    #[case::real_host_absent(NodeMode::Real, Some(&["n2"][..]), &[][..], None)]
    fn when_a_node_is_wanted(
        #[case] mode: NodeMode,
        #[case] host_nodes: Option<&[&str]>,
        #[case] used: &[&str],
        #[case] marker: Option<&str>,
    ) {
        let desired = syncer(mode, host_nodes, used).desired("n1").unwrap();
        assert_eq!(desired.is_some(), marker.is_some());
        if let (Some(desired), Some(marker)) = (desired, marker) {
            assert_eq!(desired.labels[marker], "true");
        }
    }

    #[test]
    fn unreadable_host_nodes_give_synthetic_data() {
        let desired = syncer(NodeMode::Fake, None, &["n1"])
            .desired("n1")
            .unwrap()
            .unwrap();
        let ready = desired
            .status
            .conditions
            .unwrap()
            .into_iter()
            .find(|c| c.type_ == "Ready")
            .unwrap();
        assert!(ready.message.unwrap().contains("not readable"));
    }

    /// A host node that does not decode (were nodes kept encoded) once read as gone, and in
    /// the real mode its virtual node was deleted. Now deciding the node is an error, which
    /// fails the reconcile before any write.
    #[rstest]
    #[case::real(NodeMode::Real)]
    #[case::fake(NodeMode::Fake)]
    fn a_host_node_that_does_not_decode_is_an_error_not_an_unwanted_node(#[case] mode: NodeMode) {
        let node = Node {
            metadata: kube::api::ObjectMeta {
                name: Some("n1".into()),
                ..Default::default()
            },
            ..Default::default()
        };
        let host = crate::cache::filled(crate::cache::Storage::Encoded, [node]);
        host.corrupt(&ObjectRef::new("n1"));
        let mut syncer = syncer(mode, Some(&[]), &["n1"]);
        syncer.host_nodes = Some(host);
        let err = syncer.desired("n1").unwrap_err();
        assert!(matches!(err, crate::Error::CacheDecode { .. }), "{err}");
    }
}
