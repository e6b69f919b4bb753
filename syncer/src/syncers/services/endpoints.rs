//! Endpoints of selector-less services: written by the tenant, synced down.
//!
//! Pod references inside them are translated to host pod names. Endpoints of selector
//! services are never touched here: they are mirrored up by the service syncer.

use std::sync::Arc;

use async_trait::async_trait;
use futures::StreamExt;
use k8s_openapi::api::core::v1::{Endpoints, Service};
use kube::{ResourceExt, runtime::reflector::ObjectRef};
use tokio_stream::wrappers::UnboundedReceiverStream;
use vcsync_translators::{NameTranslator, NamespaceMapping};

use super::translate::MIRRORED_LABEL;
use crate::{
    Action, ControllerBuilder, ControllerModifier, RegisterContext, Result, SyncContext, Syncer,
    cache::Cache,
    controller::virtual_key_of,
    delete_object,
    informer::InformerEvent,
    sdk::Base,
    writes::{create_host_object, labels_and_annotations_match, update_host_object},
};

/// Syncs the Endpoints of selector-less virtual services down.
pub struct EndpointsSyncer {
    translator: Box<dyn NameTranslator>,
    mapping: NamespaceMapping,
    virtual_services: Cache<Service>,
}

impl EndpointsSyncer {
    /// A syncer over the shared informers of `ctx`.
    pub fn new(ctx: &RegisterContext) -> Self {
        Self {
            translator: ctx.namespaced_translator(),
            mapping: ctx.namespace_mapping().clone(),
            virtual_services: ctx.virtual_informer::<Service>().store(),
        }
    }

    /// Only endpoints of an existing selector-less service that vcsync does not mirror.
    fn is_wanted(&self, endpoints: &Endpoints) -> bool {
        if endpoints.labels().contains_key(MIRRORED_LABEL) {
            return false;
        }
        let service = self
            .virtual_services
            .get(&ObjectRef::new(&endpoints.name_any()).within(&endpoints.namespace().unwrap_or_default()));
        service.is_some_and(|s| s.spec.as_ref().and_then(|spec| spec.selector.as_ref()).is_none())
    }

    fn desired(&self, virt: &Endpoints) -> Endpoints {
        let namespace = virt.namespace().unwrap_or_default();
        let mut subsets = virt.subsets.clone();
        for address in subsets.iter_mut().flatten().flat_map(|s| {
            s.addresses
                .iter_mut()
                .flatten()
                .chain(s.not_ready_addresses.iter_mut().flatten())
        }) {
            if let Some(target) = address.target_ref.as_mut()
                && target.kind.as_deref() == Some("Pod")
            {
                target.name = target
                    .name
                    .as_deref()
                    .map(|name| self.mapping.host_object_name(&namespace, name));
                target.namespace = Some(self.mapping.host_namespace(&namespace));
                target.uid = None;
                target.resource_version = None;
            }
        }
        Endpoints {
            metadata: self.translator.host_metadata("Endpoints", &virt.metadata),
            subsets,
        }
    }
}

impl ControllerModifier for EndpointsSyncer {
    /// A service appearing, changing its selector or going away decides whether its
    /// endpoints are synced: reconcile them then.
    fn modify_controller(
        &self,
        ctx: &RegisterContext,
        builder: ControllerBuilder,
    ) -> Result<ControllerBuilder> {
        let services = UnboundedReceiverStream::new(ctx.virtual_informer::<Service>().subscribe())
            .filter_map(|event| async move {
                match event {
                    InformerEvent::Applied(s) | InformerEvent::Deleted(s) => Some(virtual_key_of(s.as_ref())),
                    InformerEvent::Relisted => None,
                }
            });
        Ok(builder.watches(services))
    }
}

impl Base for EndpointsSyncer {
    fn name(&self) -> &str {
        "endpoints"
    }
}

#[async_trait]
impl Syncer for EndpointsSyncer {
    type Resource = Endpoints;

    fn translator(&self) -> &dyn NameTranslator {
        self.translator.as_ref()
    }

    async fn sync_down(&self, ctx: &SyncContext<Endpoints>, virt: Arc<Endpoints>) -> Result<Action> {
        if !self.is_wanted(&virt) {
            return Ok(Action::await_change());
        }
        create_host_object(ctx, &virt, &self.desired(&virt)).await
    }

    async fn sync(
        &self,
        ctx: &SyncContext<Endpoints>,
        host: Arc<Endpoints>,
        virt: Arc<Endpoints>,
    ) -> Result<Action> {
        if !self.is_wanted(&virt) {
            return delete_object(ctx, &host).await;
        }
        let mut desired = self.desired(&virt);
        if desired.subsets == host.subsets && labels_and_annotations_match(&host.metadata, &desired.metadata)
        {
            return Ok(Action::await_change());
        }
        desired.metadata.resource_version = host.metadata.resource_version.clone();
        update_host_object(ctx, &virt, &desired).await
    }

    fn controller_modifier(&self) -> Option<&dyn ControllerModifier> {
        Some(self)
    }
}
