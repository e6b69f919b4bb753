//! Both pods exist: what may change on a running pod goes down (updates, ephemeral
//! containers, token renewal), the binding and the status come up.

use std::sync::Arc;

use k8s_openapi::{
    api::core::v1::{Binding, ObjectReference, Pod, PodStatus},
    apimachinery::pkg::apis::meta::v1::ObjectMeta,
};
use kube::{ResourceExt, api::PostParams};

use super::{
    PodSyncer,
    creation::{apply_hooks, refuse_insecure},
    display_key,
};
use crate::{
    Action, Result, SyncContext,
    error::{Side, api_error, status_code},
    syncers::pods::{
        ephemeral,
        reference_gate::{RefState, wait_for},
        status::{collision_status, virtual_status},
        translate::{MutableFields, PodEnvironment},
        update::host_update,
    },
    wire,
    writes::{delete_object, update_host_object, write_params},
};

impl PodSyncer {
    /// Both pods exist: changes go down, the binding and the status come up.
    pub(super) async fn sync_running(
        &self,
        ctx: &SyncContext<Pod>,
        host: Arc<Pod>,
        virt: Arc<Pod>,
    ) -> Result<Action> {
        if let Some(target) = self.references.foreign_reference(&virt) {
            // Its copy was replaced by a foreign object: the running pod is reported; a new
            // host pod would wait at the gate.
            wait_for(ctx, &virt, &target, RefState::Foreign).await?;
        }
        if !Self::is_twin(&host, &virt) {
            // The host pod of an earlier virtual pod of this name: let it go first.
            if host.metadata.deletion_timestamp.is_none() {
                delete_object(ctx, &host).await?;
            }
            return Ok(Action::await_change());
        }
        let mut action = Action::await_change();
        // Why the virtual pod's new ephemeral containers stay off the host, if they do.
        let mut refused = None;
        if host.metadata.deletion_timestamp.is_none() {
            if let Some(update) = host_update(&host, &self.mutable_fields(ctx, &virt)) {
                match update_host_object(ctx, &virt, &update).await {
                    Ok(_) => {}
                    // Refused (an immutable field, say): the Warning event is recorded; status
                    // and binding still flow, and the next change of either pod tries again.
                    Err(err) if !err.is_conflict() && err.status().is_some_and(|c| c < 500) => {
                        tracing::warn!(pod = %display_key(&virt), error = %err, "host refused the update");
                    }
                    Err(err) => return Err(err),
                }
            }
            let ephemeral = self.pods.host_ephemeral_containers(&virt);
            if let Some(updated) = ephemeral::with_added(&host, &ephemeral) {
                refused = self.add_ephemeral_containers(ctx, &virt, &updated).await?;
            }
            if let Some(delay) = self.tokens.refresh(ctx, &host, &virt).await? {
                action = Action::requeue(delay);
            }
        }
        if self.virtual_cache_behind(&virt) {
            // Our last write to the virtual pod is not in the cache yet: its event comes.
            return Ok(action);
        }
        // Binding first: it changes the virtual pod (and its PodScheduled condition), whose
        // update brings the next reconcile, which writes the status once against it.
        let wrote = self.bind(ctx, &host, &virt).await?
            || self.status_up(ctx, &host, &virt, refused.as_deref()).await?;
        if wrote {
            self.written
                .entry(Self::uid(&virt).to_string())
                .or_default()
                .virtual_based_on = virt.metadata.resource_version.clone();
        }
        Ok(action)
    }

    /// The fields of the host pod that follow the virtual pod, with the hooks' changes: the
    /// hooks see the host pod as created (but for its environment, which they must not
    /// depend on), so what they added at creation is desired on every update too and never
    /// causes a write. Only the mutable fields are taken: a hook's node selector, say,
    /// matters at creation only (the host refuses changes of it afterwards).
    fn mutable_fields(&self, ctx: &SyncContext<Pod>, virt: &Pod) -> MutableFields {
        let hooks = ctx.oversight().hooks();
        if hooks.is_empty() {
            return self.pods.mutable_fields(virt);
        }
        let mut pod = self.pods.host_pod(virt, &PodEnvironment::default());
        apply_hooks(ctx.oversight(), &mut pod);
        let spec = pod.spec.unwrap_or_default();
        MutableFields {
            labels: pod.metadata.labels.unwrap_or_default(),
            annotations: pod.metadata.annotations.unwrap_or_default(),
            images: spec
                .containers
                .iter()
                .chain(spec.init_containers.iter().flatten())
                .filter_map(|c| Some((c.name.clone(), c.image.clone()?)))
                .collect(),
            active_deadline_seconds: spec.active_deadline_seconds,
            tolerations: spec.tolerations.unwrap_or_default(),
            scheduling_gates: spec.scheduling_gates.unwrap_or_default(),
        }
    }

    /// Gives the host pod the ephemeral containers `updated` has (`kubectl debug` on the virtual
    /// pod), through its `ephemeralcontainers` subresource, if the virtual pod with them still
    /// meets the Pod Security Standard. Otherwise the pod runs on unchanged, a Warning event says
    /// why, and so does the returned message (the refused containers' status).
    async fn add_ephemeral_containers(
        &self,
        ctx: &SyncContext<Pod>,
        virt: &Pod,
        updated: &Pod,
    ) -> Result<Option<String>> {
        let what = "ephemeral containers not added on the host";
        if let Some(refused) = refuse_insecure(ctx, virt, what).await {
            return Ok(Some(refused));
        }
        let name = updated.metadata.name.as_deref().unwrap_or_default();
        ctx.host_api_for(updated)
            .replace_subresource("ephemeralcontainers", name, &write_params(), updated)
            .await
            .map_err(api_error(
                Side::Host,
                "update ephemeral containers of",
                "Pod",
                &display_key(updated),
            ))?;
        tracing::info!(pod = %display_key(virt), host = %display_key(updated), "added ephemeral containers on the host");
        Ok(None)
    }

    /// Status up, when it differs (pods/status of the virtual pod); true if it wrote.
    pub(super) async fn status_up(
        &self,
        ctx: &SyncContext<Pod>,
        host: &Pod,
        virt: &Pod,
        refused: Option<&str>,
    ) -> Result<bool> {
        match virtual_status(host, virt, refused) {
            Some(status) => self.write_status(ctx, virt, status).await,
            None => Ok(false),
        }
    }

    /// The host name of `virt` is held by a foreign object: its status says so (once), as a
    /// scheduler's says why it cannot place a pod.
    pub(super) async fn report_collision(&self, ctx: &SyncContext<Pod>, virt: &Pod) -> Result<bool> {
        let message = format!(
            "host pod {}/{} exists and is not managed by vcsync instance {}: this pod is not run \
             until that name is free",
            self.host_pod_namespace(virt),
            self.host_pod_name(virt),
            ctx.clients().ownership().instance()
        );
        match collision_status(virt, &message) {
            Some(status) => self.write_status(ctx, virt, status).await,
            None => Ok(false),
        }
    }

    /// Writes `status` to the virtual pod (pods/status); true if it wrote, false if the pod is
    /// gone.
    async fn write_status(&self, ctx: &SyncContext<Pod>, virt: &Pod, status: PodStatus) -> Result<bool> {
        let mut updated = virt.clone();
        updated.status = Some(status);
        let params = write_params();
        match wire::replace_status(&ctx.virtual_api_for(virt), &virt.name_any(), &params, &updated).await {
            Ok(_) => Ok(true),
            Err(err) if status_code(&err) == Some(404) => Ok(false),
            Err(err) => Err(api_error(
                Side::Virtual,
                "update status of",
                "Pod",
                &display_key(virt),
            )(err)),
        }
    }

    /// Binds the virtual pod to the node the host scheduled its twin on; true if it did now.
    async fn bind(&self, ctx: &SyncContext<Pod>, host: &Pod, virt: &Pod) -> Result<bool> {
        let Some(node) = host
            .spec
            .as_ref()
            .and_then(|s| s.node_name.as_deref())
            .filter(|n| !n.is_empty())
        else {
            return Ok(false);
        };
        let bound = virt
            .spec
            .as_ref()
            .and_then(|s| s.node_name.as_deref())
            .is_some_and(|n| !n.is_empty());
        if bound || virt.metadata.deletion_timestamp.is_some() {
            return Ok(false);
        }
        let binding = Binding {
            metadata: ObjectMeta {
                name: virt.metadata.name.clone(),
                namespace: virt.metadata.namespace.clone(),
                uid: virt.metadata.uid.clone(),
                ..ObjectMeta::default()
            },
            target: ObjectReference {
                api_version: Some("v1".into()),
                kind: Some("Node".into()),
                name: Some(node.to_string()),
                ..ObjectReference::default()
            },
        };
        // The answer (a Status) is not read.
        let result: std::result::Result<serde::de::IgnoredAny, _> = ctx
            .virtual_api_for(virt)
            .create_subresource("binding", &virt.name_any(), &PostParams::default(), &binding)
            .await;
        match result {
            Ok(_) => {
                tracing::info!(pod = %display_key(virt), node, "bound virtual pod");
                Ok(true)
            }
            // Bound meanwhile, replaced, or gone: the cache will tell.
            Err(err) if matches!(status_code(&err), Some(404 | 409)) => {
                tracing::debug!(pod = %display_key(virt), error = %err, "binding refused");
                Ok(false)
            }
            Err(err) => Err(api_error(Side::Virtual, "bind", "Pod", &display_key(virt))(err)),
        }
    }
}
