//! The engine of every syncer that sends a kind down unchanged but for its metadata and the
//! references inside it: ConfigMaps, Secrets, ServiceAccounts, PVCs, Ingresses, ...
//!
//! A [`DownKind`] says how its payload is translated and compared; [`DownSyncer`] does the
//! rest: create when missing, update when different (never when equal), revert host drift,
//! delete when no longer wanted, optionally bring status up. Kinds that pods reference
//! (`REF_KIND`) are by default only synced while a virtual pod references them.

use std::{marker::PhantomData, sync::Arc, sync::OnceLock};

use async_trait::async_trait;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::ResourceExt;
use vcsync_translators::{ClusterScopedTranslator, NameTranslator, RefKind, virtual_metadata_from_host};

use crate::{
    Action, ControllerBuilder, ControllerModifier, IndicesRegisterer, RegisterContext, Result, Side,
    SyncContext, Syncer,
    controller::virtual_key_of,
    delete_object,
    error::api_error,
    indices::PodReferences,
    sdk::{Base, ScopeOf, SyncResource},
    writes::{create_host_object, labels_and_annotations_match, update_host_object, write_params},
};

/// A kind that goes down with translated metadata and a translated payload.
pub trait DownKind: SyncResource {
    /// Syncer name.
    const NAME: &'static str;
    /// How pods reference this kind, for kinds synced only while referenced.
    const REF_KIND: Option<RefKind> = None;

    /// Objects of the kind that must never leave the virtual cluster.
    fn is_syncable(&self) -> bool {
        true
    }

    /// A new object with `meta` and this object's payload (everything but metadata and
    /// status), with references inside it translated for the host by `translator`.
    fn with_payload(&self, meta: ObjectMeta, translator: &dyn NameTranslator) -> Self;

    /// Whether the payloads are equal (fields the host API server defaults count as equal).
    fn payload_eq(&self, other: &Self) -> bool;

    /// Whether the object refuses payload updates (`immutable: true`).
    fn is_immutable(&self) -> bool {
        false
    }

    /// Called on the virtual object: the same object with the host's status, if that differs.
    fn status_up(&self, _host: &Self) -> Option<Self> {
        None
    }

    /// Called on a host copy: the virtual object with `metadata` that it describes, for
    /// restoring a lost virtual cluster; None (the default) when the copy's payload names host
    /// objects and cannot be read back.
    fn restored(&self, _metadata: ObjectMeta) -> Option<Self> {
        None
    }
}

/// The host object a virtual one should have: translated metadata, same payload.
pub fn desired_host_object<K: DownKind>(translator: &dyn NameTranslator, virt: &K) -> K {
    virt.with_payload(translator.host_metadata(&K::kind(&()), virt.meta()), translator)
}

/// Whether `host` already is what `desired` describes (payload, labels, annotations).
pub fn is_in_sync<K: DownKind>(host: &K, desired: &K) -> bool {
    host.payload_eq(desired) && labels_and_annotations_match(host.meta(), desired.meta())
}

/// Syncs a [`DownKind`] down to the host.
pub struct DownSyncer<K: DownKind> {
    translator: Box<dyn NameTranslator>,
    sync_all: bool,
    references: OnceLock<Arc<PodReferences>>,
    kind: PhantomData<fn() -> K>,
}

impl<K: DownKind> DownSyncer<K> {
    /// A syncer for the manager of `ctx`; `sync_all` syncs unreferenced objects too (kinds
    /// without `REF_KIND` always sync every object).
    pub fn new(ctx: &RegisterContext, sync_all: bool) -> Result<Self> {
        let translator: Box<dyn NameTranslator> = if <K::Scope as ScopeOf>::NAMESPACED {
            ctx.namespaced_translator()
        } else {
            Box::new(ClusterScopedTranslator::new(ctx.ownership().clone()))
        };
        let sync_all = sync_all || K::REF_KIND.is_none();
        Ok(Self {
            translator,
            sync_all,
            references: OnceLock::new(),
            kind: PhantomData,
        })
    }

    /// A syncer of every object of `K` with a translator of its own (host namespaces of virtual
    /// namespaces, say).
    pub fn with_translator(translator: Box<dyn NameTranslator>) -> Self {
        Self {
            translator,
            sync_all: true,
            references: OnceLock::new(),
            kind: PhantomData,
        }
    }

    fn is_wanted(&self, virt: &K) -> bool {
        virt.is_syncable()
            && (self.sync_all
                || self
                    .references
                    .get()
                    .zip(K::REF_KIND)
                    .is_some_and(|(refs, kind)| refs.is_referenced(kind, &virtual_key_of(virt))))
    }
}

impl<K: DownKind> DownSyncer<K> {
    async fn status_up(&self, ctx: &SyncContext<K>, host: &K, virt: &K) -> Result<Action> {
        if let Some(updated) = virt.status_up(host) {
            let key = virtual_key_of(virt).to_string();
            let params = write_params();
            ctx.virtual_api_for(virt)
                .replace_status(&virt.name_any(), &params, &updated)
                .await
                .map_err(api_error(Side::Virtual, "update status", &K::kind(&()), &key))?;
        }
        Ok(Action::await_change())
    }
}

impl<K: DownKind> Base for DownSyncer<K> {
    fn name(&self) -> &str {
        K::NAME
    }
}

#[async_trait]
impl<K: DownKind> Syncer for DownSyncer<K> {
    type Resource = K;

    fn translator(&self) -> &dyn NameTranslator {
        self.translator.as_ref()
    }

    fn restore(&self, host: &K) -> Option<K> {
        host.restored(virtual_metadata_from_host(host.meta())?)
    }

    async fn sync_down(&self, ctx: &SyncContext<K>, virt: Arc<K>) -> Result<Action> {
        if !self.is_wanted(&virt) {
            return Ok(Action::await_change());
        }
        let mut desired = desired_host_object(self.translator.as_ref(), virt.as_ref());
        ctx.register_context().hooks().apply(Side::Host, &mut desired);
        create_host_object(ctx, &virt, &desired).await
    }

    async fn sync(&self, ctx: &SyncContext<K>, host: Arc<K>, virt: Arc<K>) -> Result<Action> {
        if !self.is_wanted(&virt) {
            return delete_object(ctx, &host).await;
        }
        let mut desired = desired_host_object(self.translator.as_ref(), virt.as_ref());
        // Hooks change the desired object before the comparison: their changes are part of
        // what is in sync, never a reason to write again.
        ctx.register_context().hooks().apply(Side::Host, &mut desired);
        if is_in_sync(host.as_ref(), &desired) {
            return self.status_up(ctx, &host, &virt).await;
        }
        if host.is_immutable() && !host.payload_eq(&desired) {
            // The API server refuses payload changes of immutable objects: replace the object.
            return delete_object(ctx, &host).await;
        }
        desired.meta_mut().resource_version = host.meta().resource_version.clone();
        update_host_object(ctx, &virt, &desired).await
    }

    fn indices_registerer(&self) -> Option<&dyn IndicesRegisterer> {
        Some(self)
    }

    fn controller_modifier(&self) -> Option<&dyn ControllerModifier> {
        (!self.sync_all).then_some(self as &dyn ControllerModifier)
    }
}

impl<K: DownKind> IndicesRegisterer for DownSyncer<K> {
    fn register_indices(&self, ctx: &RegisterContext) -> Result<()> {
        if !self.sync_all {
            let _ = self.references.set(ctx.indices().pod_references(ctx));
        }
        Ok(())
    }
}

impl<K: DownKind> ControllerModifier for DownSyncer<K> {
    /// A pod starting or ceasing to reference an object reconciles that object.
    fn modify_controller(
        &self,
        _ctx: &RegisterContext,
        builder: ControllerBuilder,
    ) -> Result<ControllerBuilder> {
        Ok(match (self.references.get(), K::REF_KIND) {
            (Some(refs), Some(kind)) => builder.watches(refs.changes(kind)),
            _ => builder,
        })
    }
}
