//! ConfigMaps and Secrets: objects that carry data for pods, synced down by
//! [`DownSyncer`](super::down::DownSyncer).
//!
//! By default only the objects virtual pods reference are synced (the reference index says
//! which); with `all: true` every one is.

use k8s_openapi::{
    api::core::v1::{ConfigMap, Secret},
    apimachinery::pkg::apis::meta::v1::ObjectMeta,
};
use vcsync_translators::{NameTranslator, RefKind};

use super::down::DownKind;
#[cfg(test)]
use super::down::{desired_host_object, is_in_sync};

impl DownKind for ConfigMap {
    const NAME: &'static str = "configmaps";
    const REF_KIND: Option<RefKind> = Some(RefKind::ConfigMap);

    fn with_payload(&self, metadata: ObjectMeta, _translator: &dyn NameTranslator) -> Self {
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

    /// The data is the tenant's, unchanged on the host.
    fn restored(&self, metadata: ObjectMeta) -> Option<Self> {
        Some(ConfigMap {
            metadata,
            ..self.clone()
        })
    }
}

impl DownKind for Secret {
    const NAME: &'static str = "secrets";
    const REF_KIND: Option<RefKind> = Some(RefKind::Secret);

    /// Service account tokens of the virtual cluster are credentials for the virtual API
    /// server; the host has no use for them.
    fn is_syncable(&self) -> bool {
        self.type_.as_deref() != Some("kubernetes.io/service-account-token")
    }

    fn with_payload(&self, metadata: ObjectMeta, _translator: &dyn NameTranslator) -> Self {
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

    /// The data is the tenant's, unchanged on the host.
    fn restored(&self, metadata: ObjectMeta) -> Option<Self> {
        Some(Secret {
            metadata,
            string_data: None,
            ..self.clone()
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
    use vcsync_translators::NamespacedTranslator;

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
