//! `direction: toHost`: tenants' objects get a translated copy on the host.
//!
//! A [`Syncer`] of `DynamicObject`s, registered with the syncer runtime like every built-in
//! one ([`vcsync_syncer::register::register_dynamic_syncer`]): the shared informers and caches
//! of both sides (the host's filtered by the ownership label, in the one host namespace or, in
//! the per-namespace mapping, every namespace), the controller's key queue and backoff, and the
//! writes of [`vcsync_syncer::writes`] (ownership guard, UID precondition, name collisions
//! reported on the virtual object, the host guard). A deleted virtual object deletes its copy
//! (the runtime's default), copies made for an earlier virtual cluster are left alone.

use std::sync::Arc;

use async_trait::async_trait;
use kube::{ResourceExt, api::DynamicObject};
use vcsync_syncer::{
    Action, Base, RegisterContext, Result, Side, SyncContext, Syncer,
    error::api_error,
    writes::{create_host_object, update_host_object, write_params},
};
use vcsync_translators::{ClusterScopedTranslator, NameTranslator};

use crate::{
    config::{NAME, ResourceConfig},
    crd::Served,
    translate::{desired_host, in_sync, set_status, status, with_hooks},
};

/// The syncer of one configured `toHost` resource.
pub struct ToHost {
    name: String,
    served: Served,
    status_up: bool,
    /// Paths of the fields naming other synced objects.
    references: Vec<String>,
    /// Virtual key -> host key, in the configured namespace mapping.
    translator: Box<dyn NameTranslator>,
}

impl ToHost {
    /// The syncer of `config`, whose type the virtual cluster serves as `served`.
    pub fn new(ctx: &RegisterContext, config: &ResourceConfig, served: Served) -> Self {
        let translator: Box<dyn NameTranslator> = if served.namespaced {
            ctx.clients().namespaced_translator()
        } else {
            Box::new(ClusterScopedTranslator::new(ctx.clients().ownership().clone()))
        };
        Self {
            name: format!("{NAME}/{}", served.resource.plural),
            status_up: config.status_up,
            references: config.references.iter().map(|r| r.path.clone()).collect(),
            served,
            translator,
        }
    }

    fn kind(&self) -> &str {
        &self.served.resource.kind
    }

    /// The host copy `virt` should have, after the hooks for host objects of this kind.
    fn desired_host(&self, ctx: &SyncContext<DynamicObject>, virt: &DynamicObject) -> DynamicObject {
        let desired = desired_host(virt, self.kind(), self.translator.as_ref(), &self.references);
        with_hooks(ctx.oversight().hooks(), Side::Host, self.kind(), desired)
    }

    /// Copies the host object's status up to `virt` when it differs (through the `/status`
    /// subresource when the CRD declares one).
    async fn status_up(
        &self,
        ctx: &SyncContext<DynamicObject>,
        host: &DynamicObject,
        virt: &DynamicObject,
    ) -> Result<()> {
        let Some(host_status) = status(host).filter(|s| self.status_up && status(virt) != Some(*s)) else {
            return Ok(());
        };
        let mut up = virt.clone();
        set_status(&mut up, Some(host_status.clone()));
        let api = ctx.virtual_api_for(virt);
        let name = virt.name_any();
        let written = if self.served.has_status {
            api.replace_status(&name, &write_params(), &up).await
        } else {
            api.replace(&name, &write_params(), &up).await
        };
        let key = vcsync_syncer::resource::virtual_key_of(virt).to_string();
        written.map_err(api_error(Side::Virtual, "update status of", self.kind(), &key))?;
        tracing::info!(%key, kind = %self.kind(), "status synced up");
        Ok(())
    }
}

impl Base for ToHost {
    fn name(&self) -> &str {
        &self.name
    }
}

#[async_trait]
impl Syncer for ToHost {
    type Resource = DynamicObject;

    fn translator(&self) -> &dyn NameTranslator {
        self.translator.as_ref()
    }

    async fn sync_down(&self, ctx: &SyncContext<DynamicObject>, virt: Arc<DynamicObject>) -> Result<Action> {
        let desired = self.desired_host(ctx, &virt);
        create_host_object(ctx, &virt, &desired).await
    }

    async fn sync(
        &self,
        ctx: &SyncContext<DynamicObject>,
        host: Arc<DynamicObject>,
        virt: Arc<DynamicObject>,
    ) -> Result<Action> {
        if !ctx.clients().ownership().owns(&host.metadata) {
            return Ok(Action::await_change());
        }
        // Hooks changed `desired` already: their changes are in sync, not a reason to write.
        let desired = self.desired_host(ctx, &virt);
        if !in_sync(&host, &desired) {
            let mut update = desired;
            update.metadata.resource_version = host.metadata.resource_version.clone();
            set_status(&mut update, status(&host).cloned());
            update_host_object(ctx, &virt, &update).await?;
        }
        self.status_up(ctx, &host, &virt).await?;
        Ok(Action::await_change())
    }
}
