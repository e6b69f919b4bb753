//! The [`PodSyncer`]: the I/O around the pure translation, status and update rules, one
//! file a stage of a pod's life:
//!
//! - [`creation`]: the virtual pod exists, its host pod does not: the checks a new host pod
//!   passes (Pod Security, the reference gate, the host Service's IP), its tokens and its
//!   creation;
//! - [`running`]: both exist: changes go down (updates, ephemeral containers, token renewal),
//!   the binding and the status come up;
//! - [`deletion`]: either is going or gone: graceful deletion both ways, a host pod lost
//!   outside vcsync, and a host pod whose virtual pod is gone ([`UpSyncer`]);
//! - [`host_service`]: the cluster IP of `kubernetesService.hostService`, followed.
//!
//! This file holds the syncer's state, what it remembers of its own writes, and the
//! [`Syncer`] entry points, which hand each case to its stage.

mod creation;
mod deletion;
mod host_service;
mod running;

use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use k8s_openapi::api::core::v1::{Pod, Secret, Service};
use kube::ResourceExt;
use vcsync_translators::{
    NameTranslator, NamespacedTranslator, OBJECT_UID_ANNOTATION, VirtualKey, is_copy_of_restored,
};

use self::host_service::HostServiceIp;
use super::{reference_gate::ReferenceGate, token_secrets::TokenSecrets, translate::PodTranslator};
use crate::{
    Action, Caches, Clients, ControllerBuilder, ControllerModifier, RegisterContext, Registrar, Result,
    SyncContext, Syncer, UpSyncer, cache::Cache, config::PodsConfig, informer::Subscription,
    resource::virtual_key_of, sdk::Base,
};

/// How long a host pod just created is trusted to exist while the host cache does not show it
/// yet; past that, the cache is believed again.
const CREATE_LAG: std::time::Duration = std::time::Duration::from_secs(5);

/// What this syncer wrote for one virtual pod (by UID) that its caches may not show yet. A
/// reconcile against a cache that is known to be behind would only repeat the write and get a
/// conflict (a second create, binding or status update): it waits for the watch instead, whose
/// event brings the next reconcile.
#[derive(Debug, Default)]
struct Written {
    /// When the host pod was created.
    host_created: Option<std::time::Instant>,
    /// The virtual pod's resourceVersion a binding or status write was based on: while the cache
    /// still shows that version, the cached pod is stale.
    virtual_based_on: Option<String>,
}

/// Syncs virtual pods to the host and their status, node and deletion back.
pub struct PodSyncer {
    pods: PodTranslator,
    config: PodsConfig,
    services: Cache<Service>,
    tokens: TokenSecrets,
    secret_events: Mutex<Option<Subscription<Secret>>>,
    /// Which references a new host pod may name (only this cluster's own copies).
    references: Arc<ReferenceGate>,
    /// Writes the caches may not show yet, by virtual pod UID.
    written: dashmap::DashMap<String, Written>,
    /// With `kubernetesService.hostService`: that Service's cluster IP (see [`HostServiceIp`]).
    host_service_ip: Option<HostServiceIp>,
}

impl PodSyncer {
    /// A pod syncer translating with `clients` over the shared `caches`; with
    /// `kubernetesService.hostService`, it follows that Service's cluster IP in a task of
    /// `registrar`'s, and the controllers wait for the first answer.
    pub fn new(clients: &Clients, caches: &Caches, registrar: &Registrar) -> Self {
        let sync = &clients.config().sync;
        let translator = NamespacedTranslator::new(clients.ownership().clone(), clients.host_namespace());
        let pods = PodTranslator::new(translator, sync.pods.clone())
            .with_mapping(clients.namespace_mapping().clone())
            .with_priority_classes(sync.priority_classes.enabled)
            .with_service_accounts(sync.service_accounts.enabled);
        let secrets = caches.host_informer::<Secret>();
        Self {
            pods,
            config: sync.pods.clone(),
            services: caches.virtual_informer::<Service>().store(),
            tokens: TokenSecrets::new(caches),
            secret_events: Mutex::new(Some(secrets.subscribe())),
            references: Arc::new(ReferenceGate::new(clients, caches)),
            written: dashmap::DashMap::new(),
            host_service_ip: sync
                .pods
                .kubernetes_service
                .as_ref()
                .and_then(|address| address.host_service_name())
                .map(|name| host_service::follow(clients, registrar, name)),
        }
    }

    fn uid(pod: &Pod) -> &str {
        pod.metadata.uid.as_deref().unwrap_or_default()
    }

    /// Whether the host pod of `virt` was created so recently that the host cache may not
    /// show it yet.
    fn created_recently(&self, virt: &Pod) -> bool {
        let uid = Self::uid(virt);
        let recent = self
            .written
            .get(uid)
            .and_then(|w| w.host_created)
            .is_some_and(|at| at.elapsed() < CREATE_LAG);
        if !recent {
            self.written.remove_if(uid, |_, w| w.host_created.is_some());
        }
        recent
    }

    /// Whether the cached `virt` is older than a binding or status write of ours; forgets
    /// what the cache shows now.
    fn virtual_cache_behind(&self, virt: &Pod) -> bool {
        let uid = Self::uid(virt);
        let Some(mut written) = self.written.get_mut(uid) else {
            return false;
        };
        written.host_created = None;
        if written.virtual_based_on.is_some() && written.virtual_based_on == virt.metadata.resource_version {
            return true;
        }
        drop(written);
        self.written.remove(uid);
        false
    }

    fn host_pod_name(&self, virt: &Pod) -> String {
        self.pods.translator().host_key(&virtual_key_of(virt)).name
    }

    fn host_pod_namespace(&self, virt: &Pod) -> String {
        self.pods
            .translator()
            .host_key(&virtual_key_of(virt))
            .namespace
            .unwrap_or_default()
    }

    /// Whether `host` was made for this very virtual pod, not for an earlier one of the same
    /// name (a StatefulSet's replacement pod, say); a pod `vcsync cluster restore` recreated is
    /// the twin of the copy made for the pod it was snapshotted from.
    fn is_twin(host: &Pod, virt: &Pod) -> bool {
        let host_uid = host
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(OBJECT_UID_ANNOTATION));
        host_uid.is_none()
            || host_uid == virt.metadata.uid.as_ref()
            || is_copy_of_restored(&virt.metadata, &host.metadata)
    }
}

fn display_key(pod: &Pod) -> String {
    format!("{}/{}", pod.namespace().unwrap_or_default(), pod.name_any())
}

impl Base for PodSyncer {
    fn name(&self) -> &str {
        "pods"
    }
}

#[async_trait]
impl Syncer for PodSyncer {
    type Resource = Pod;

    fn translator(&self) -> &dyn NameTranslator {
        self.pods.translator()
    }

    /// A token Secret for the pod of `key`.
    fn keeps_beside(&self, key: &VirtualKey) -> bool {
        let host = self.pods.translator().host_key(key);
        self.tokens
            .orphan_candidate(&host.namespace.unwrap_or_default(), &host.name, key)
            .is_some()
    }

    /// Neither pod exists: a token Secret still there was written for a pod that went before
    /// it reached the host (or whose deletion no reconcile met), and goes now.
    async fn sync_gone(&self, ctx: &SyncContext<Pod>, key: &VirtualKey) -> Result<Action> {
        let host = self.pods.translator().host_key(key);
        self.tokens
            .delete_orphaned(ctx, &host.namespace.unwrap_or_default(), &host.name, key)
            .await?;
        Ok(Action::await_change())
    }

    async fn sync_down(&self, ctx: &SyncContext<Pod>, virt: Arc<Pod>) -> Result<Action> {
        self.create_host_pod(ctx, virt).await
    }

    async fn sync(&self, ctx: &SyncContext<Pod>, host: Arc<Pod>, virt: Arc<Pod>) -> Result<Action> {
        self.sync_running(ctx, host, virt).await
    }

    /// The virtual pod is being deleted: its host pod goes with the same grace period, then
    /// the virtual pod is finished as a kubelet does (grace period 0).
    async fn sync_terminating(
        &self,
        ctx: &SyncContext<Pod>,
        virt: Arc<Pod>,
        host: Option<Arc<Pod>>,
    ) -> Result<Action> {
        self.finish_deletion(ctx, virt, host).await
    }

    fn up_syncer(&self) -> Option<&dyn UpSyncer<Pod>> {
        Some(self)
    }

    fn controller_modifier(&self) -> Option<&dyn ControllerModifier> {
        Some(self)
    }
}

impl ControllerModifier for PodSyncer {
    /// A token Secret changing (deleted by someone, say) reconciles its pod.
    fn modify_controller(
        &self,
        ctx: &RegisterContext,
        builder: ControllerBuilder,
    ) -> Result<ControllerBuilder> {
        let events = self.secret_events.lock().expect("secret events lock").take();
        let builder = match events {
            Some(events) => builder.watches(self.tokens.changes(events)),
            None => builder,
        };
        // A pod waiting at the reference gate goes on once the copy it waits for is there.
        Ok(self
            .references
            .ready_pods(ctx.registrar())
            .into_iter()
            .fold(builder, ControllerBuilder::watches))
    }
}

#[cfg(test)]
mod tests;
