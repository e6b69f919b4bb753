//! ConfigMaps and Secrets: objects that carry data for pods.
//!
//! By default only the objects virtual pods reference are synced (the reference index says
//! which); with `all: true` every one is. Data, labels and annotations flow down, host drift
//! is reverted, and an object no longer wanted is removed from the host.

use std::{marker::PhantomData, sync::Arc, sync::OnceLock};

use async_trait::async_trait;
use k8s_openapi::{
    NamespaceResourceScope,
    api::core::v1::{ConfigMap, Secret},
    apimachinery::pkg::apis::meta::v1::ObjectMeta,
};
use kube::{Resource, runtime::controller::Action};
use vcsync_translators::{NameTranslator, NamespacedTranslator, RefKind};

use crate::{
    ControllerBuilder, ControllerModifier, IndicesRegisterer, RegisterContext, Result, SyncContext, Syncer,
    controller::virtual_key_of,
    delete_object,
    indices::PodReferences,
    sdk::{Base, SyncResource},
    writes::{create_host_object, labels_and_annotations_match, update_host_object},
};

/// A kind whose objects hold data that pods consume.
pub trait DataKind: SyncResource + Resource<Scope = NamespaceResourceScope> {
    /// Syncer name, also the config key.
    const NAME: &'static str;
    /// How pods reference this kind.
    const REF_KIND: RefKind;

    /// Objects of the kind that must never leave the virtual cluster.
    fn is_syncable(&self) -> bool {
        true
    }

    /// A new object with `meta` and this object's payload (everything but metadata).
    fn with_payload(&self, meta: ObjectMeta) -> Self;

    /// Whether the payloads are equal.
    fn payload_eq(&self, other: &Self) -> bool;

    /// Whether the object refuses payload updates (`immutable: true`).
    fn is_immutable(&self) -> bool;
}

impl DataKind for ConfigMap {
    const NAME: &'static str = "configmaps";
    const REF_KIND: RefKind = RefKind::ConfigMap;

    fn with_payload(&self, metadata: ObjectMeta) -> Self {
        ConfigMap {
            metadata,
            data: self.data.clone(),
            binary_data: self.binary_data.clone(),
            immutable: self.immutable,
        }
    }

    fn payload_eq(&self, other: &Self) -> bool {
        self.data == other.data && self.binary_data == other.binary_data && self.immutable == other.immutable
    }

    fn is_immutable(&self) -> bool {
        self.immutable == Some(true)
    }
}

impl DataKind for Secret {
    const NAME: &'static str = "secrets";
    const REF_KIND: RefKind = RefKind::Secret;

    /// Service account tokens of the virtual cluster are credentials for the virtual API
    /// server; the host has no use for them.
    fn is_syncable(&self) -> bool {
        self.type_.as_deref() != Some("kubernetes.io/service-account-token")
    }

    fn with_payload(&self, metadata: ObjectMeta) -> Self {
        Secret {
            metadata,
            data: self.data.clone(),
            string_data: None,
            type_: self.type_.clone(),
            immutable: self.immutable,
        }
    }

    fn payload_eq(&self, other: &Self) -> bool {
        self.data == other.data
            && self.type_.as_deref().unwrap_or("Opaque") == other.type_.as_deref().unwrap_or("Opaque")
            && self.immutable == other.immutable
    }

    fn is_immutable(&self) -> bool {
        self.immutable == Some(true)
    }
}

/// The host object a virtual one should have: translated metadata, same payload.
pub fn desired_host_object<K: DataKind>(translator: &dyn NameTranslator, virt: &K) -> K {
    virt.with_payload(translator.host_metadata(&K::kind(&()), virt.meta()))
}

/// Whether `host` already is what `desired` describes (payload, labels, annotations).
pub fn is_in_sync<K: DataKind>(host: &K, desired: &K) -> bool {
    host.payload_eq(desired) && labels_and_annotations_match(host.meta(), desired.meta())
}

/// Syncs a [`DataKind`] down to the host.
pub struct DataSyncer<K: DataKind> {
    translator: NamespacedTranslator,
    sync_all: bool,
    references: OnceLock<Arc<PodReferences>>,
    kind: PhantomData<fn() -> K>,
}

impl<K: DataKind> DataSyncer<K> {
    /// A syncer for the manager of `ctx`; `sync_all` syncs unreferenced objects too.
    pub fn new(ctx: &RegisterContext, sync_all: bool) -> Result<Self> {
        let translator = NamespacedTranslator::new(ctx.ownership().clone(), ctx.host_namespace());
        Ok(Self {
            translator,
            sync_all,
            references: OnceLock::new(),
            kind: PhantomData,
        })
    }

    fn is_wanted(&self, virt: &K) -> bool {
        virt.is_syncable()
            && (self.sync_all
                || self
                    .references
                    .get()
                    .is_some_and(|refs| refs.is_referenced(K::REF_KIND, &virtual_key_of(virt))))
    }
}

impl<K: DataKind> Base for DataSyncer<K> {
    fn name(&self) -> &str {
        K::NAME
    }
}

#[async_trait]
impl<K: DataKind> Syncer for DataSyncer<K> {
    type Resource = K;

    fn translator(&self) -> &dyn NameTranslator {
        &self.translator
    }

    async fn sync_down(&self, ctx: &SyncContext<K>, virt: Arc<K>) -> Result<Action> {
        if !self.is_wanted(&virt) {
            return Ok(Action::await_change());
        }
        create_host_object(ctx, &virt, &desired_host_object(&self.translator, virt.as_ref())).await
    }

    async fn sync(&self, ctx: &SyncContext<K>, host: Arc<K>, virt: Arc<K>) -> Result<Action> {
        if !self.is_wanted(&virt) {
            return delete_object(ctx, &host).await;
        }
        let mut desired = desired_host_object(&self.translator, virt.as_ref());
        if is_in_sync(host.as_ref(), &desired) {
            return Ok(Action::await_change());
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

impl<K: DataKind> IndicesRegisterer for DataSyncer<K> {
    fn register_indices(&self, ctx: &RegisterContext) -> Result<()> {
        if !self.sync_all {
            let _ = self.references.set(ctx.indices().pod_references(ctx));
        }
        Ok(())
    }
}

impl<K: DataKind> ControllerModifier for DataSyncer<K> {
    /// A pod starting or ceasing to reference an object reconciles that object.
    fn modify_controller(
        &self,
        _ctx: &RegisterContext,
        builder: ControllerBuilder,
    ) -> Result<ControllerBuilder> {
        Ok(match self.references.get() {
            Some(refs) => builder.watches(refs.changes(K::REF_KIND)),
            None => builder,
        })
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::ByteString;
    use rstest::rstest;
    use serde_json::json;
    use vcsync_translators::{MANAGED_BY_LABEL, OBJECT_UID_ANNOTATION, Ownership};

    use super::*;

    fn translator() -> NamespacedTranslator {
        NamespacedTranslator::new(Ownership::new("tenant-a").unwrap(), "host-ns")
    }

    fn virtual_config_map() -> ConfigMap {
        serde_json::from_value(json!({
            "metadata": {"name": "cfg", "namespace": "team", "uid": "u-1", "resourceVersion": "7",
                         "labels": {"app": "web", "vcsync.dev/managed-by": "forged"},
                         "annotations": {"note": "x"}, "finalizers": ["keep"]},
            "data": {"k": "v"}, "immutable": false
        }))
        .unwrap()
    }

    #[test]
    fn desired_config_map_has_translated_metadata_and_the_same_payload() {
        let desired = desired_host_object(&translator(), &virtual_config_map());
        let meta = &desired.metadata;
        assert_eq!(meta.name.as_deref(), Some("cfg-x-team"));
        assert_eq!(meta.namespace.as_deref(), Some("host-ns"));
        assert_eq!(meta.labels.as_ref().unwrap()[MANAGED_BY_LABEL], "tenant-a");
        assert_eq!(meta.annotations.as_ref().unwrap()[OBJECT_UID_ANNOTATION], "u-1");
        assert_eq!(
            (
                meta.uid.as_ref(),
                meta.resource_version.as_ref(),
                meta.finalizers.as_ref()
            ),
            (None, None, None)
        );
        assert!(desired.payload_eq(&virtual_config_map()));
    }

    #[test]
    fn secret_string_data_never_goes_down_and_type_defaults_compare_equal() {
        let virt = Secret {
            metadata: ObjectMeta {
                name: Some("s".into()),
                namespace: Some("n".into()),
                ..Default::default()
            },
            data: Some([("a".to_string(), ByteString(b"1".to_vec()))].into()),
            string_data: Some([("b".to_string(), "2".to_string())].into()),
            ..Default::default()
        };
        let desired = desired_host_object(&translator(), &virt);
        assert_eq!(desired.string_data, None);
        let mut host = desired.clone();
        host.type_ = Some("Opaque".into());
        assert!(is_in_sync(&host, &desired));
    }

    #[rstest]
    #[case::data(json!({"data": {"k": "other"}}))]
    #[case::label(json!({"metadata": {"labels": {"app": "db"}}}))]
    #[case::annotation(json!({"metadata": {"annotations": {"note": "y"}}}))]
    #[case::immutable(json!({"immutable": true}))]
    fn any_drift_is_detected(#[case] change: serde_json::Value) {
        let desired = desired_host_object(&translator(), &virtual_config_map());
        let mut host_json = serde_json::to_value(&desired).unwrap();
        json_patch::merge(&mut host_json, &change);
        let host: ConfigMap = serde_json::from_value(host_json).unwrap();
        assert!(!is_in_sync(&host, &desired));
    }

    #[test]
    fn server_added_metadata_is_not_drift() {
        let desired = desired_host_object(&translator(), &virtual_config_map());
        let mut host = desired.clone();
        host.metadata.uid = Some("host-uid".into());
        host.metadata.resource_version = Some("99".into());
        host.metadata.creation_timestamp = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
            jiff::Timestamp::now(),
        ));
        assert!(is_in_sync(&host, &desired));
    }

    #[test]
    fn service_account_tokens_are_never_synced() {
        let token = Secret {
            type_: Some("kubernetes.io/service-account-token".into()),
            ..Default::default()
        };
        assert!(!token.is_syncable());
        assert!(Secret::default().is_syncable());
    }
}
