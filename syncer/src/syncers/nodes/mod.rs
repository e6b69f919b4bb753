//! Nodes of the virtual cluster (`sync.nodes`).
//!
//! A virtual cluster has no nodes of its own, yet its pods name one (`spec.nodeName`, set
//! through the binding subresource once the host scheduled the host pod), and tenants expect
//! `kubectl get nodes` and node-aware tools to work. Two modes:
//!
//! - **fake** (default): one virtual node per node name in use by a virtual pod, carrying
//!   `vcsync.dev/fake-node=true`. When host nodes are readable, the fake node copies the host
//!   node's identity, platform, instance-type and topology labels, capacity, allocatable,
//!   InternalIP/Hostname addresses, node info and conditions, and exists only while the host
//!   node does. When the host API refuses to list nodes (a tenant's service account usually
//!   cannot), vcsync says so once and fake nodes carry synthetic data: a Ready linux/amd64
//!   node with placeholder capacity and the virtual API server's version as kubelet version.
//! - **real**: every host node matching `selector` is mirrored with all its labels and its
//!   status, carrying `vcsync.dev/synced-from-host=true`, and removed when the host node goes
//!   or stops matching. Reading host nodes is required; registration fails clearly otherwise.
//!
//! Choices:
//! - A node is in use by any pod bound to it, whatever the pod's phase: finished and
//!   terminating pods still show their node.
//! - Taints are not copied in either mode. Host taints steer the host scheduler, which places
//!   the pods; copying NoExecute taints would make the virtual node-lifecycle controller evict
//!   virtual pods the host still runs, and vcsync must not remove the taints that controller
//!   itself sets when heartbeats stop. So vcsync owns labels and status only.
//! - Node conditions mirror the host's (fake mode too): a NotReady host node is NotReady in
//!   the virtual cluster, which is what tenants expect to see.
//! - Tenant edits of labels on vcsync's nodes are reverted (the node is a mirror); nodes
//!   without a marker (created by someone else) are never touched.
//!
//! Both modes keep their nodes alive like a kubelet, with Leases and status heartbeats
//! ([`heartbeat`]): the one deliberate periodic write of vcsync.

pub mod heartbeat;
pub mod kubelet_endpoint;
pub mod leases;
pub mod node_status;
pub mod node_syncer;
pub mod pods_by_node;

use std::sync::Arc;

use k8s_openapi::api::{
    coordination::v1::Lease,
    core::v1::{Node, Pod},
};
use kube::{ResourceExt, runtime::reflector::ObjectRef};
use tokio::sync::{mpsc, watch};
use vcsync_translators::VirtualKey;

pub use node_syncer::NodeSyncer;

use self::{
    heartbeat::HeartbeatConfig,
    leases::{NODE_LEASE_LABEL, NODE_LEASE_NAMESPACE, VirtualHeartbeat},
    node_status::{SyntheticNode, is_vcsync_node},
    pods_by_node::PodsByNode,
};
use crate::{
    Caches, Clients, Error, RegisterContext, Registrar, Result,
    config::{NodeMode, NodesConfig},
    error::Side,
    informer::{Informer, InformerEvent, Scope},
    kubelet_config::POD_IP_ENV,
    register_fake_syncer,
    syncers::from_host::{Readable, informer_keys, probe},
};

/// Registers the node syncer and the heartbeat in the configured mode.
pub async fn register(ctx: &RegisterContext) -> Result<()> {
    let (clients, caches, registrar) = (ctx.clients(), ctx.caches(), ctx.registrar());
    let config = clients.config().sync.nodes.clone();
    let host_nodes = host_node_informer(clients, caches, &config).await?;
    let virtual_nodes = caches.virtual_informer::<Node>();
    let leases = caches.informers().get::<Lease>(Scope::Custom {
        side: Side::Virtual,
        namespace: Some(NODE_LEASE_NAMESPACE.to_string()),
        labels: format!("{NODE_LEASE_LABEL}=true"),
    });

    // (A node deleted by someone else comes back through the fake syncer's own virtual
    // watch: its deleted keys are reconciled, and recreated if still wanted.)
    let mut triggers = Vec::new();
    let pods = match config.mode {
        NodeMode::Fake => {
            let (index, changes) = pods_by_node_index(caches, registrar);
            triggers.push(changes);
            Some(index)
        }
        NodeMode::Real => None,
    };
    if let Some(host) = &host_nodes {
        let (host_store, virtual_store, in_use) = (host.store(), virtual_nodes.store(), pods.clone());
        // Fake mode looks only at host nodes that virtual pods use or that have a virtual
        // node: a large host's node status updates cost nothing otherwise.
        let relevant = move |name: &str| {
            in_use.as_ref().is_none_or(|pods| pods.is_used(name))
                || virtual_store.get(&ObjectRef::new(name)).is_some()
        };
        let ours = virtual_nodes.store();
        triggers.push(informer_keys(host.subscribe(), move |event| match event {
            InformerEvent::Applied(node) | InformerEvent::Deleted(node) => {
                let name = node.name_any();
                if relevant(&name) {
                    vec![VirtualKey::cluster(name)]
                } else {
                    Vec::new()
                }
            }
            // Host nodes deleted during a watch gap left no event: look at all of ours too.
            InformerEvent::Relisted => host_store
                .state()
                .iter()
                .map(|n| n.name_any())
                .filter(|name| relevant(name))
                .chain(
                    ours.state()
                        .iter()
                        .filter(|n| is_vcsync_node(n))
                        .map(|n| n.name_any()),
                )
                .map(VirtualKey::cluster)
                .collect(),
        }));
    }
    let synthetic = match (&host_nodes, config.mode) {
        (None, NodeMode::Fake) => synthetic_node(clients).await,
        _ => SyntheticNode::default(),
    };

    let kubelet = clients
        .config()
        .kubelet
        .endpoint(std::env::var(POD_IP_ENV).ok().as_deref())
        .map_err(|message| {
            Error::Config(crate::config::ConfigError {
                file: "configuration".to_string(),
                location: None,
                message,
            })
        })?;
    register_fake_syncer(
        ctx,
        NodeSyncer::new(
            config.mode,
            host_nodes.map(|h| h.store()),
            pods,
            leases.store(),
            synthetic,
            kubelet,
            triggers,
        ),
    )
    .await?;

    let heartbeat = VirtualHeartbeat::new(
        clients.virtual_client().clone(),
        virtual_nodes.store(),
        leases.store(),
        HeartbeatConfig::from_config(&config),
    );
    registrar.spawn(
        "node-heartbeat",
        heartbeat::run(
            HeartbeatConfig::from_config(&config),
            heartbeat,
            heartbeat::system_clock(),
        ),
    );
    Ok(())
}

/// The host node informer: unfiltered in fake mode, by the selector in real mode. None in
/// fake mode when host nodes cannot be read (said once, here).
async fn host_node_informer(
    clients: &Clients,
    caches: &Caches,
    config: &NodesConfig,
) -> Result<Option<Arc<Informer<Node>>>> {
    let selector = match config.mode {
        NodeMode::Fake => String::new(),
        NodeMode::Real => config.selector.clone().unwrap_or_default(),
    };
    let readable = probe::<Node>(clients.host_client(), Side::Host, None, Some(&selector))
        .await
        .map_err(|err| match config.mode {
            NodeMode::Real => Error::Registration {
                name: "nodes".to_string(),
                reason: format!("listing host nodes with selector {selector:?} failed: {err}"),
            },
            NodeMode::Fake => err,
        })?;
    match (readable, config.mode) {
        (Readable::Yes, _) => Ok(Some(caches.informers().get::<Node>(Scope::Custom {
            side: Side::Host,
            namespace: None,
            labels: selector,
        }))),
        (Readable::Forbidden(reason), NodeMode::Fake) => {
            tracing::warn!(
                %reason,
                "host nodes are not readable; fake nodes get synthetic labels and status \
                 (grant list/watch on nodes to vcsync's host service account for real data)"
            );
            Ok(None)
        }
        (Readable::NotServed, NodeMode::Fake) => {
            tracing::warn!("the host API server does not serve nodes; fake nodes get synthetic data");
            Ok(None)
        }
        (Readable::Forbidden(reason), NodeMode::Real) => Err(Error::Registration {
            name: "nodes".to_string(),
            reason: format!(
                "real node mode mirrors host nodes but listing them is forbidden ({reason}); grant \
                 list/watch on nodes to vcsync's host service account or use sync.nodes.mode: fake"
            ),
        }),
        (Readable::NotServed, NodeMode::Real) => Err(Error::Registration {
            name: "nodes".to_string(),
            reason: "real node mode mirrors host nodes but the host API server does not serve nodes"
                .to_string(),
        }),
    }
}

/// The pods-by-node index fed from the virtual pod informer, and the stream of nodes whose
/// use changed. Controllers wait for its first full list.
fn pods_by_node_index(
    caches: &Caches,
    registrar: &Registrar,
) -> (Arc<PodsByNode>, futures::stream::BoxStream<'static, VirtualKey>) {
    use futures::StreamExt;

    let informer = caches.virtual_informer::<Pod>();
    let events = informer.subscribe();
    let index = Arc::new(PodsByNode::new());
    let (changes_tx, changes_rx) = mpsc::unbounded_channel();
    let (ready_tx, mut ready_rx) = watch::channel(false);
    registrar.spawn_background(index.clone().feed(informer.store(), events, changes_tx, ready_tx));
    registrar.add_readiness(async move {
        let _ = ready_rx.wait_for(|ready| *ready).await;
    });
    (
        index,
        tokio_stream::wrappers::UnboundedReceiverStream::new(changes_rx).boxed(),
    )
}

/// Synthetic node data, with the virtual API server's version as kubelet version.
async fn synthetic_node(clients: &Clients) -> SyntheticNode {
    match clients.virtual_client().apiserver_version().await {
        Ok(info) => SyntheticNode {
            kubelet_version: info.git_version,
        },
        Err(err) => {
            tracing::debug!(error = %err, "virtual API server version unknown; using a placeholder");
            SyntheticNode::default()
        }
    }
}
