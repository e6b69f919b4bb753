//! Objects a pod references, one case per reference site.

use std::collections::BTreeSet;

use k8s_openapi::api::core::v1::Pod;
use rstest::rstest;
use serde_json::{Value, json};
use vcsync_translators::{RefKind, RefTarget, pod_references};

use RefKind::{ConfigMap, PersistentVolumeClaim, Secret, ServiceAccount};

/// A pod in `shop` with `spec` merged over a minimal container list.
fn pod(spec: Value) -> Pod {
    let mut full = json!({ "containers": [{ "name": "main", "image": "nginx" }] });
    for (k, v) in spec.as_object().unwrap() {
        full[k] = v.clone();
    }
    serde_json::from_value(json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": { "name": "web", "namespace": "shop" },
        "spec": full,
    }))
    .unwrap()
}

/// The expected targets, in namespace `shop`, plus the default ServiceAccount unless one is listed.
fn expected(targets: &[(RefKind, &str)]) -> BTreeSet<RefTarget> {
    let mut set: BTreeSet<RefTarget> = targets
        .iter()
        .map(|(k, n)| RefTarget::new(*k, "shop", *n))
        .collect();
    if !targets.iter().any(|(k, _)| *k == ServiceAccount) {
        set.insert(RefTarget::new(ServiceAccount, "shop", "default"));
    }
    set
}

fn container_with(field: &str, value: Value) -> Value {
    json!([{ "name": "c", "image": "busybox", field: value }])
}

#[rstest]
#[case::nothing_but_the_default_service_account(json!({}), &[])]
#[case::service_account_name(json!({ "serviceAccountName": "builder" }), &[(ServiceAccount, "builder")])]
#[case::deprecated_service_account(json!({ "serviceAccount": "old" }), &[(ServiceAccount, "old")])]
#[case::service_account_name_wins(json!({ "serviceAccountName": "new", "serviceAccount": "old" }), &[(ServiceAccount, "new")])]
#[case::no_automount_is_still_a_reference(json!({ "automountServiceAccountToken": false }), &[])]
#[case::image_pull_secrets(json!({ "imagePullSecrets": [{ "name": "regcred" }, { "name": "mirror" }] }), &[(Secret, "regcred"), (Secret, "mirror")])]
#[case::config_map_volume(json!({ "volumes": [{ "name": "v", "configMap": { "name": "settings" } }] }), &[(ConfigMap, "settings")])]
#[case::secret_volume(json!({ "volumes": [{ "name": "v", "secret": { "secretName": "tls" } }] }), &[(Secret, "tls")])]
#[case::optional_secret_volume(json!({ "volumes": [{ "name": "v", "secret": { "secretName": "tls", "optional": true } }] }), &[(Secret, "tls")])]
#[case::projected(json!({ "volumes": [{ "name": "v", "projected": { "sources": [
    { "configMap": { "name": "ca" } },
    { "secret": { "name": "token" } },
    { "serviceAccountToken": { "path": "t" } },
    { "downwardAPI": { "items": [] } },
] } }] }), &[(ConfigMap, "ca"), (Secret, "token")])]
#[case::pvc_volume(json!({ "volumes": [{ "name": "v", "persistentVolumeClaim": { "claimName": "data" } }] }), &[(PersistentVolumeClaim, "data")])]
#[case::ephemeral_volume(json!({ "volumes": [{ "name": "scratch", "ephemeral": { "volumeClaimTemplate": { "spec": {} } } }] }), &[(PersistentVolumeClaim, "web-scratch")])]
#[case::csi_secret(json!({ "volumes": [{ "name": "v", "csi": { "driver": "d", "nodePublishSecretRef": { "name": "csi-creds" } } }] }), &[(Secret, "csi-creds")])]
#[case::cephfs_secret(json!({ "volumes": [{ "name": "v", "cephfs": { "monitors": ["m"], "secretRef": { "name": "ceph" } } }] }), &[(Secret, "ceph")])]
#[case::rbd_secret(json!({ "volumes": [{ "name": "v", "rbd": { "monitors": ["m"], "image": "i", "secretRef": { "name": "rbd" } } }] }), &[(Secret, "rbd")])]
#[case::iscsi_secret(json!({ "volumes": [{ "name": "v", "iscsi": { "targetPortal": "p", "iqn": "q", "lun": 0, "secretRef": { "name": "chap" } } }] }), &[(Secret, "chap")])]
#[case::flex_secret(json!({ "volumes": [{ "name": "v", "flexVolume": { "driver": "d", "secretRef": { "name": "flex" } } }] }), &[(Secret, "flex")])]
#[case::scale_io_secret(json!({ "volumes": [{ "name": "v", "scaleIO": { "gateway": "g", "system": "s", "secretRef": { "name": "sio" } } }] }), &[(Secret, "sio")])]
#[case::storageos_secret(json!({ "volumes": [{ "name": "v", "storageos": { "secretRef": { "name": "sos" } } }] }), &[(Secret, "sos")])]
#[case::azure_file_secret(json!({ "volumes": [{ "name": "v", "azureFile": { "secretName": "azure", "shareName": "s" } }] }), &[(Secret, "azure")])]
#[case::volumes_without_references(json!({ "volumes": [{ "name": "e", "emptyDir": {} }, { "name": "h", "hostPath": { "path": "/" } }] }), &[])]
#[case::env_config_map_key(json!({ "containers": container_with("env", json!([{ "name": "A", "valueFrom": { "configMapKeyRef": { "name": "env-cm", "key": "k" } } }])) }), &[(ConfigMap, "env-cm")])]
#[case::env_secret_key(json!({ "containers": container_with("env", json!([{ "name": "A", "valueFrom": { "secretKeyRef": { "name": "env-secret", "key": "k" } } }])) }), &[(Secret, "env-secret")])]
#[case::env_literal_and_field_ref(json!({ "containers": container_with("env", json!([{ "name": "A", "value": "x" }, { "name": "B", "valueFrom": { "fieldRef": { "fieldPath": "metadata.name" } } }])) }), &[])]
#[case::env_from_config_map(json!({ "containers": container_with("envFrom", json!([{ "configMapRef": { "name": "all-cm" } }])) }), &[(ConfigMap, "all-cm")])]
#[case::env_from_secret(json!({ "containers": container_with("envFrom", json!([{ "secretRef": { "name": "all-secret" }, "prefix": "S_" }])) }), &[(Secret, "all-secret")])]
#[case::init_container_env(json!({ "initContainers": container_with("env", json!([{ "name": "A", "valueFrom": { "secretKeyRef": { "name": "init-secret", "key": "k" } } }])) }), &[(Secret, "init-secret")])]
#[case::init_container_env_from(json!({ "initContainers": container_with("envFrom", json!([{ "configMapRef": { "name": "init-cm" } }])) }), &[(ConfigMap, "init-cm")])]
#[case::ephemeral_container_env(json!({ "ephemeralContainers": container_with("env", json!([{ "name": "A", "valueFrom": { "configMapKeyRef": { "name": "debug-cm", "key": "k" } } }])) }), &[(ConfigMap, "debug-cm")])]
#[case::ephemeral_container_env_from(json!({ "ephemeralContainers": container_with("envFrom", json!([{ "secretRef": { "name": "debug-secret" } }])) }), &[(Secret, "debug-secret")])]
#[case::same_object_twice_is_one_reference(json!({
    "volumes": [{ "name": "v", "secret": { "secretName": "s" } }],
    "imagePullSecrets": [{ "name": "s" }],
}), &[(Secret, "s")])]
#[case::same_name_different_kinds(json!({
    "volumes": [{ "name": "a", "secret": { "secretName": "app" } }, { "name": "b", "configMap": { "name": "app" } }],
}), &[(Secret, "app"), (ConfigMap, "app")])]
fn pod_reference_sites(#[case] spec: Value, #[case] targets: &[(RefKind, &str)]) {
    assert_eq!(pod_references(&pod(spec)), expected(targets));
}

#[test]
fn pod_without_spec_references_nothing() {
    let pod = Pod {
        spec: None,
        ..pod(json!({}))
    };
    assert!(pod_references(&pod).is_empty());
}

#[test]
fn references_live_in_the_pods_namespace() {
    let mut p = pod(json!({ "volumes": [{ "name": "v", "configMap": { "name": "c" } }] }));
    p.metadata.namespace = Some("other".into());
    assert!(
        pod_references(&p)
            .iter()
            .all(|t| t.key.namespace.as_deref() == Some("other"))
    );
}

#[test]
fn empty_names_are_skipped() {
    let p = pod(json!({ "imagePullSecrets": [{ "name": "" }], "serviceAccountName": "" }));
    assert_eq!(pod_references(&p), expected(&[]));
}
