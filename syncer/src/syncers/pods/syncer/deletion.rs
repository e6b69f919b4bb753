//! Deletion, both ways: a virtual pod deleted gracefully takes its host pod along and is
//! finished once that is gone, as a kubelet does; a host pod lost outside vcsync takes its
//! virtual pod (which its controller replaces); a host pod whose virtual pod is gone goes, once
//! the virtual API server confirms the absence.

use std::sync::Arc;

use async_trait::async_trait;
use k8s_openapi::api::core::v1::Pod;
use kube::{
    Api, Resource, ResourceExt,
    api::{DeleteParams, Preconditions},
};
use vcsync_translators::OBJECT_UID_ANNOTATION;

use super::{PodSyncer, display_key};
use crate::{
    Action, Result, SyncContext, Syncer, UpSyncer,
    error::{Side, api_error, status_code},
    events::EventType,
    writes::{delete_object, delete_object_with_grace},
};

impl PodSyncer {
    /// The virtual pod is being deleted: delete the host pod with the same grace period, and
    /// once it is gone finish the virtual deletion as a kubelet does (grace period 0).
    pub(super) async fn finish_deletion(
        &self,
        ctx: &SyncContext<Pod>,
        virt: Arc<Pod>,
        host: Option<Arc<Pod>>,
    ) -> Result<Action> {
        match host.filter(|h| Self::is_twin(h, &virt)) {
            Some(host) => {
                self.status_up(ctx, &host, &virt, None).await?;
                let grace = virt
                    .metadata
                    .deletion_grace_period_seconds
                    .map(|g| g.clamp(0, i64::from(u32::MAX)) as u32);
                let host_grace = host.metadata.deletion_grace_period_seconds;
                let shorter = matches!((grace, host_grace), (Some(g), Some(h)) if i64::from(g) < h);
                if host.metadata.deletion_timestamp.is_none() || shorter {
                    delete_object_with_grace(ctx, &host, grace).await?;
                    // A host pod deleted at once (grace 0, or never scheduled, so no kubelet
                    // confirms) is gone now; and an unscheduled virtual pod goes at once too,
                    // with no reconcile left that sees the one without the other: its tokens
                    // go now, not at the next sweep.
                    let unscheduled = |pod: &Pod| pod.spec.as_ref().is_none_or(|s| s.node_name.is_none());
                    if grace == Some(0) || unscheduled(&host) || unscheduled(&virt) {
                        self.delete_tokens(ctx, &virt).await?;
                    }
                }
                Ok(Action::await_change())
            }
            None => {
                self.written.remove(Self::uid(&virt));
                self.delete_tokens(ctx, &virt).await?;
                if virt.metadata.deletion_grace_period_seconds != Some(0) {
                    self.delete_virtual_now(ctx, &virt).await?;
                    tracing::info!(pod = %display_key(&virt), "finished deleting the virtual pod");
                }
                Ok(Action::await_change())
            }
        }
    }

    /// The host pod of a virtual pod that ran on the host is gone (deleted or evicted outside
    /// vcsync). Running it again behind its controller's back would hide that; delete it, as
    /// a node's pod would be, and let its controller replace it.
    pub(super) async fn host_pod_lost(&self, ctx: &SyncContext<Pod>, virt: &Pod) -> Result<Action> {
        let message = format!(
            "host pod {}/{} was deleted outside vcsync; deleting this pod so that its controller can replace it",
            self.host_pod_namespace(virt),
            self.host_pod_name(virt)
        );
        tracing::info!(pod = %display_key(virt), "{message}");
        ctx.events()
            .publish(
                &virt.object_ref(&()),
                EventType::Warning,
                "HostPodDeleted",
                &message,
            )
            .await;
        self.delete_tokens(ctx, virt).await?;
        self.delete_virtual_now(ctx, virt).await?;
        Ok(Action::await_change())
    }

    /// Deletes a virtual pod now (grace period 0) if it still is the pod of uid `virt.uid`.
    async fn delete_virtual_now(&self, ctx: &SyncContext<Pod>, virt: &Pod) -> Result<()> {
        let params = DeleteParams {
            grace_period_seconds: Some(0),
            preconditions: virt.metadata.uid.clone().map(|uid| Preconditions {
                uid: Some(uid),
                resource_version: None,
            }),
            ..DeleteParams::background()
        };
        match ctx.virtual_api_for(virt).delete(&virt.name_any(), &params).await {
            Ok(_) => Ok(()),
            Err(err) if matches!(status_code(&err), Some(404 | 409)) => Ok(()),
            Err(err) => Err(api_error(Side::Virtual, "delete", "Pod", &display_key(virt))(err)),
        }
    }

    /// Deletes the token Secret of `virt`'s host pod, if it was issued for `virt`.
    async fn delete_tokens(&self, ctx: &SyncContext<Pod>, virt: &Pod) -> Result<()> {
        let (namespace, name) = (self.host_pod_namespace(virt), self.host_pod_name(virt));
        let uid = virt.metadata.uid.as_deref();
        self.tokens.delete(ctx, &namespace, &name, uid).await
    }
}

#[async_trait]
impl UpSyncer<Pod> for PodSyncer {
    /// The virtual pod is gone (deleted at once: unscheduled, or by a force delete): the host
    /// pod goes with its own grace period, and its tokens with it. Only once the virtual API
    /// server confirms the virtual pod is gone: the cache saying so may be behind.
    async fn sync_up(&self, ctx: &SyncContext<Pod>, host: Arc<Pod>) -> Result<Action> {
        // Already terminating: deleting again would only write.
        if host.metadata.deletion_timestamp.is_none() {
            let Some(key) = self.translator().virtual_key(host.meta()) else {
                return Ok(Action::await_change());
            };
            let virtual_pods = Api::<Pod>::namespaced(
                ctx.virtual_client().clone(),
                key.namespace.as_deref().unwrap_or_default(),
            );
            let live = virtual_pods.get_metadata_opt(&key.name).await.map_err(api_error(
                Side::Virtual,
                "get",
                "Pod",
                &key.to_string(),
            ))?;
            if live.is_some() {
                // The cache is behind (a recreate, say): never delete on stale knowledge.
                return Ok(Action::requeue(crate::controller::CACHE_LAG_RETRY));
            }
            delete_object(ctx, &host).await?;
        }
        if let Some(uid) = host.annotations().get(OBJECT_UID_ANNOTATION) {
            self.written.remove(uid);
        }
        let pod_uid = host.annotations().get(OBJECT_UID_ANNOTATION).map(String::as_str);
        self.tokens
            .delete(
                ctx,
                &host.namespace().unwrap_or_default(),
                &host.name_any(),
                pod_uid,
            )
            .await?;
        Ok(Action::await_change())
    }
}
