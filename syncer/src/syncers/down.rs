//! The engine of every syncer that sends a kind down unchanged but for its metadata and the
//! references inside it: ConfigMaps, Secrets, ServiceAccounts, PVCs, Ingresses, ...
//!
//! A [`DownKind`] says how its payload is translated and compared; [`DownSyncer`] does the
//! rest: create when missing, update when different (never when equal), revert host drift,
//! delete when no longer wanted, optionally bring status up. Kinds that pods reference
//! (`REF_KIND`) are by default only synced while a virtual pod references them.

use std::{marker::PhantomData, sync::Arc, sync::OnceLock};

use async_trait::async_trait;
use k8s_openapi::{api::core::v1::Secret, apimachinery::pkg::apis::meta::v1::ObjectMeta};
use kube::{ResourceExt, runtime::reflector::ObjectRef};
use vcsync_translators::{
    ClusterScopedTranslator, NameTranslator, NamespaceMapping, RefKind, VirtualKey,
    virtual_metadata_from_host,
};

use crate::{
    Action, Caches, Clients, ControllerBuilder, ControllerModifier, IndicesRegisterer, RegisterContext,
    Registrar, Result, Side, SyncContext, Syncer,
    cache::Cache,
    delete_object,
    error::api_error,
    events::EventType,
    indices::PodReferences,
    resource::virtual_key_of,
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

    /// Called on the desired host object before it is compared with `host`, the host copy:
    /// takes over what the host's own controllers own in it (a claim's volume and the binder's
    /// annotations, say), so that their writes are neither drift nor overwritten.
    fn keep_host_owned(&mut self, _host: &Self) {}

    /// Called on the virtual object: the same object with the host's status, if that differs.
    fn status_up(&self, _host: &Self) -> Option<Self> {
        None
    }

    /// Whether the host copy can name Secrets of its namespace (an Ingress's TLS Secrets).
    const NAMES_SECRETS: bool = false;

    /// The Secrets of its namespace the host copy would name.
    fn named_secrets(&self) -> Vec<String> {
        Vec::new()
    }

    /// Stops naming Secret `name`: its host copy is not this cluster's (or not there).
    fn forget_secret(&mut self, _name: &str) {}

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
    /// For kinds that name Secrets: the Secrets' caches (None: Secret sync is off).
    secrets: Option<SecretCopies>,
    kind: PhantomData<fn() -> K>,
}

/// The virtual Secrets and this instance's host copies of them, and the names held by foreign
/// objects: what a host copy may name.
struct SecretCopies {
    mapping: NamespaceMapping,
    caches: Caches,
    virtual_secrets: Cache<Secret>,
    host_secrets: Cache<Secret>,
}

impl SecretCopies {
    /// Whether Secret `name` of virtual namespace `ns` has this cluster's own copy on the host.
    fn owned_copy(&self, ns: &str, name: &str) -> bool {
        let mapping = &self.mapping;
        let key = VirtualKey::namespaced(ns, name);
        self.virtual_secrets.contains(&ObjectRef::new(name).within(ns))
            && !self.caches.indices().collisions().contains("Secret", &key)
            && self.host_secrets.contains(
                &ObjectRef::new(&mapping.host_object_name(ns, name)).within(&mapping.host_namespace(ns)),
            )
    }
}

impl<K: DownKind> DownSyncer<K> {
    /// A syncer translating with `clients` over the shared `caches`; `sync_all` syncs
    /// unreferenced objects too (kinds
    /// without `REF_KIND` always sync every object).
    pub fn new(clients: &Clients, caches: &Caches, sync_all: bool) -> Result<Self> {
        let translator: Box<dyn NameTranslator> = if <K::Scope as ScopeOf>::NAMESPACED {
            clients.namespaced_translator()
        } else {
            Box::new(ClusterScopedTranslator::new(clients.ownership().clone()))
        };
        let sync_all = sync_all || K::REF_KIND.is_none();
        let secrets = (K::NAMES_SECRETS && clients.config().sync.secrets.enabled).then(|| SecretCopies {
            mapping: clients.namespace_mapping().clone(),
            caches: caches.clone(),
            virtual_secrets: caches.virtual_informer::<Secret>().store(),
            host_secrets: caches.host_informer::<Secret>().store(),
        });
        Ok(Self {
            translator,
            sync_all,
            references: OnceLock::new(),
            secrets,
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
            secrets: None,
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
        let virt = self.naming_owned_secrets(ctx, virt).await;
        let mut desired = desired_host_object(self.translator.as_ref(), virt.as_ref());
        ctx.oversight().hooks().apply(Side::Host, &mut desired);
        create_host_object(ctx, &virt, &desired).await
    }

    async fn sync(&self, ctx: &SyncContext<K>, host: Arc<K>, virt: Arc<K>) -> Result<Action> {
        if !self.is_wanted(&virt) {
            return delete_object(ctx, &host).await;
        }
        let virt = self.naming_owned_secrets(ctx, virt).await;
        let mut desired = desired_host_object(self.translator.as_ref(), virt.as_ref());
        // Hooks change the desired object before the comparison: their changes are part of
        // what is in sync, never a reason to write again.
        ctx.oversight().hooks().apply(Side::Host, &mut desired);
        desired.keep_host_owned(&host);
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
        (!self.sync_all || self.secrets.is_some()).then_some(self as &dyn ControllerModifier)
    }
}

impl<K: DownKind> DownSyncer<K> {
    /// `virt` without the Secrets whose host names are not this cluster's own copies (missing,
    /// not synced, or held by a foreign object): its host copy never names a Secret the tenant
    /// does not own. The tenant is told which were left out.
    async fn naming_owned_secrets(&self, ctx: &SyncContext<K>, virt: Arc<K>) -> Arc<K> {
        if !K::NAMES_SECRETS {
            return virt;
        }
        let ns = virt.meta().namespace.clone().unwrap_or_default();
        let not_owned: Vec<String> = virt
            .named_secrets()
            .into_iter()
            .filter(|name| !self.secrets.as_ref().is_some_and(|s| s.owned_copy(&ns, name)))
            .collect();
        if not_owned.is_empty() {
            return virt;
        }
        let message = format!(
            "Secrets {} are left out of the host copy: a host object may only name this virtual \
             cluster's own copies (are they synced? sync.secrets.all: true syncs Secrets no pod \
             references)",
            not_owned.join(", ")
        );
        ctx.events()
            .publish(
                &virt.object_ref(&()),
                EventType::Warning,
                "SecretNotSynced",
                &message,
            )
            .await;
        let mut trimmed = virt.as_ref().clone();
        for name in &not_owned {
            trimmed.forget_secret(name);
        }
        Arc::new(trimmed)
    }
}

impl<K: DownKind> IndicesRegisterer for DownSyncer<K> {
    fn register_indices(&self, ctx: &RegisterContext) -> Result<()> {
        if !self.sync_all {
            let _ = self.references.set(ctx.caches().pod_references(ctx.registrar()));
        }
        Ok(())
    }
}

impl<K: DownKind> ControllerModifier for DownSyncer<K> {
    /// A pod starting or ceasing to reference an object reconciles that object; a Secret's
    /// host copy appearing reconciles the objects of its namespace that name it.
    fn modify_controller(
        &self,
        ctx: &RegisterContext,
        builder: ControllerBuilder,
    ) -> Result<ControllerBuilder> {
        let builder = match (self.references.get(), K::REF_KIND) {
            (Some(refs), Some(kind)) => builder.watches(refs.changes(kind)),
            _ => builder,
        };
        Ok(match &self.secrets {
            Some(_) => builder.watches(naming_objects::<K>(ctx.caches(), ctx.registrar())),
            None => builder,
        })
    }
}

/// The keys of the virtual `K` objects that name a Secret whose host copy just appeared.
fn naming_objects<K: DownKind>(
    caches: &Caches,
    registrar: &Registrar,
) -> impl futures::Stream<Item = VirtualKey> + use<K> {
    let mut events = caches.host_informer::<Secret>().subscribe();
    let objects = caches.virtual_informer::<K>().store();
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    registrar.spawn_background(async move {
        while let Some(event) = events.recv().await {
            let crate::informer::InformerEvent::Applied(secret) = event else {
                continue;
            };
            let Some(key) = crate::safety::virtual_key_of_host(&secret.metadata) else {
                continue;
            };
            let naming = objects.map(|o| {
                (o.meta().namespace == key.namespace && o.named_secrets().contains(&key.name))
                    .then(|| virtual_key_of(o.as_ref()))
            });
            for object in naming.into_iter().flatten() {
                if tx.send(object).is_err() {
                    return;
                }
            }
        }
    });
    tokio_stream::wrappers::UnboundedReceiverStream::new(rx)
}
