//! Pods: virtual pods run on the host; their status, node and deletion come back.
//!
//! Pods are always synced. Every virtual pod gets a host pod in the host namespace
//! ([`translate`], pure and table-tested); the host's scheduler and kubelets run it; vcsync plays
//! the virtual cluster's kubelet: it reports status ([`status`]), binds the virtual pod to the
//! node the host chose, and completes graceful deletions.
//!
//! # Translation
//!
//! - **Metadata**: translated name, labels carried over and rewritten so selectors select per
//!   virtual namespace (a tenant cannot forge `vcsync.dev/*`), annotations plus
//!   `vcsync.dev/object-*`; owner references and finalizers stay virtual.
//! - **References** (volumes, projected sources, driver secrets, `env[].valueFrom`, `envFrom`,
//!   imagePullSecrets) are renamed with [`vcsync_translators::host_name`], the names the
//!   ConfigMap / Secret / PVC syncers give the referenced objects, which the ConfigMap and Secret
//!   syncers sync because pods reference them. Downward-API fields whose host value differs
//!   (`metadata.name|namespace|uid`, `spec.serviceAccountName`) read annotations that hold the
//!   virtual values. Generic ephemeral volumes are left to the host's ephemeral-volume controller.
//! - **Service account**: the host pod never holds a host token. It runs as the host namespace's
//!   `default` account (the translated account when the service-account syncer is enabled) with
//!   `automountServiceAccountToken: false`; its tokens are issued by the virtual API server and
//!   kept in a host Secret per pod ([`token`] explains the two cases: rewritten token projections,
//!   and vcsync's own mount for virtual API servers without ServiceAccount admission). Tokens are
//!   bound to the virtual pod, renewed at 80% of their lifetime (the reconcile requeues itself
//!   for that), and the Secret is deleted with the pod; a leader task removes orphans.
//! - **Reaching the virtual cluster**: `KUBERNETES_SERVICE_*` / `KUBERNETES_PORT*` point at
//!   `sync.pods.kubernetesService` or the virtual `default/kubernetes` service (whose IP, in a
//!   deployed cluster, is the host's own API server on the host: there `hostService` names the
//!   host Service in front of the virtual API server, whose cluster IP is read at start and
//!   every 30 s, and pods wait while it is not known); the virtual
//!   namespace's services get kubelet-style link variables unless `enableServiceLinks: false`
//!   (host links are disabled: they would list every tenant's services). The variables are
//!   computed at creation (a kubelet recomputes them at each container start). `ClusterFirst`
//!   pods resolve through the virtual DNS service (`sync.pods.dnsService`, default
//!   `kube-system/kube-dns`) with the usual search path and `ndots:5`; without that service, and
//!   for other DNS policies, the pod's own settings stay. hostAliases are kept. The hostname is
//!   the virtual pod's name; `subdomain` is translated like a service name.
//! - **Scheduling**: nodeSelector plus `extraNodeSelector` (the configuration wins on a key
//!   clash), the tenant's tolerations that `sync.pods.tolerations.allow` admits (by default only
//!   the not-ready / unreachable ones Kubernetes adds; a `TolerationsDropped` event names the
//!   others: [`tolerations`]) plus `extraTolerations`, node affinity as is (it only narrows the host scheduler's
//!   choice). Pod (anti-)affinity and
//!   topology-spread selectors are translated so they select the same pods; the namespaces of an
//!   affinity term become a requirement on the virtual-namespace label (an empty
//!   `namespaceSelector` means all of this virtual cluster's namespaces; a non-empty one, which
//!   would need the virtual namespaces' labels, counts as the pod's own namespace).
//!   `priorityClassName` is dropped unless the PriorityClass syncer is enabled; then it is
//!   translated like any cluster-scoped name, `system-node-critical` and
//!   `system-cluster-critical` included: the PriorityClass syncer copies those too, capped below
//!   the host's system range, so a tenant's "critical" pod never outranks the host's system pods
//!   (kept by name, they would). `priority`, `preemptionPolicy` and `overhead` are left to
//!   the host's admission, ephemeral containers (not creatable with a pod) and readiness gates
//!   (evaluated on the virtual pod, see [`status`]) stay virtual.
//! - **Privileges**: hostNetwork, hostPID, hostPath volumes, privileged containers and the like
//!   are passed as they are once the pod meets `sync.pods.podSecurityStandard` ([`security`]:
//!   one that breaks it never reaches the host, and a `PodSecurityViolation` event says why);
//!   the host's own Pod Security admission (the host namespace's labels) applies on top.
//! - **Node names**: `spec.nodeName` is never copied down; the host schedules. A virtual pod
//!   created with a node name gets a node affinity to that node instead, so the host scheduler
//!   places it there (virtual nodes carry host node names). DaemonSet pods need nothing special:
//!   the DaemonSet controller pins them with exactly such an affinity, kept as is, so they run on
//!   the host node of their virtual node.
//!
//! # Updates, status, binding
//!
//! Only what the API lets change on a pod goes down ([`update`]): images, activeDeadlineSeconds,
//! added tolerations, removed scheduling gates, labels and annotations (host components' own
//! keys are kept). Status comes up through `pods/status` (phase, conditions, IPs, start time,
//! container statuses, QoS class, message, reason). When the host pod gets a node and the
//! virtual pod has none, the virtual pod is bound through `pods/binding`; the node syncer creates
//! the virtual node. Every write is preceded by a comparison: a restart over synced pods writes
//! nothing. A change the host refuses gets a `SyncFailed` Warning event; status keeps flowing.
//!
//! # Deletion
//!
//! - A virtual pod deleted with a grace period (it gets a `deletionTimestamp`) has its host pod
//!   deleted with the same grace period and a UID precondition (a shorter grace period later is
//!   passed on too); once the host pod is gone, vcsync deletes the virtual pod with grace period
//!   0, as a kubelet does.
//! - A virtual pod deleted at once (unscheduled, forced) takes its host pod with it, with the host
//!   pod's own grace period.
//! - A host pod deleted or evicted outside vcsync is not silently recreated: if the virtual pod
//!   shows it ran on the host (a host-owned condition, a start time, an IP or container statuses
//!   in its status: robust across restarts, no extra write to mark it), the virtual pod is deleted
//!   with a `HostPodDeleted` Warning event, and its controller replaces it. Finished pods
//!   (Succeeded / Failed) stay as the record they are. A host pod deleted before it reported
//!   anything is simply created again.
//! - A host pod left by an earlier virtual pod of the same name (a StatefulSet's replacement) is
//!   deleted first; the new pod follows once it is gone.

pub mod environment;
pub mod ephemeral;
pub mod reference_gate;
pub mod reference_sites;
pub mod references;
pub mod security;
pub mod status;
mod syncer;
pub mod token;
mod token_secrets;
pub mod tolerations;
pub mod translate;
pub mod update;

pub use syncer::PodSyncer;
pub use translate::{PodEnvironment, PodTranslator};

use crate::{RegisterContext, Result, register_syncer};

/// Registers the pod syncer (pods are always synced) and its token-Secret sweeper.
pub async fn register(ctx: &RegisterContext) -> Result<()> {
    let syncer = PodSyncer::new(ctx.clients(), ctx.caches(), ctx.registrar());
    let sweep = token_secrets::cleanup::sweep(ctx.clients().clone(), ctx.caches().clone());
    ctx.registrar().spawn("pod-token-secret-sweeper", sweep);
    register_syncer(ctx, syncer).await
}
