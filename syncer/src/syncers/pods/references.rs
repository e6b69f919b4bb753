//! References inside a pod spec, renamed for the host: the objects a pod names (config maps,
//! secrets, claims) and the downward-API fields that would otherwise show host values.
//!
//! Names go through [`NamespaceMapping::host_object_name`], the function that names the referenced objects on the host,
//! so a reference resolves to the copy the ConfigMap / Secret / PVC syncers keep there.

use k8s_openapi::api::core::v1::{
    DownwardAPIVolumeFile, EnvFromSource, EnvVar, ObjectFieldSelector, PodSpec, Volume,
};
use vcsync_translators::{
    NamespaceMapping, OBJECT_NAME_ANNOTATION, OBJECT_NAMESPACE_ANNOTATION, OBJECT_UID_ANNOTATION,
};

/// Annotation on host pods holding the virtual pod's service account, for downward-API
/// references to `spec.serviceAccountName` (the host pod runs as another account).
pub const SERVICE_ACCOUNT_ANNOTATION: &str = "vcsync.dev/service-account-name";

/// Renames every object reference of `spec` (a pod of virtual namespace `ns`) and points
/// downward-API fields that differ on the host at annotations that hold the virtual values.
///
/// Covered: configMap, secret and persistentVolumeClaim volumes, projected configMap / secret /
/// downwardAPI sources, downwardAPI volumes, the secret references of csi, cephfs, rbd, iscsi,
/// flexVolume, scaleIO, storageos and azureFile volumes, `env[].valueFrom` (configMapKeyRef,
/// secretKeyRef, fieldRef) and `envFrom` of containers, init containers and ephemeral
/// containers, imagePullSecrets.
/// Service-account token projections are handled by [`super::token`].
pub fn translate_references(mapping: &NamespaceMapping, ns: &str, spec: &mut PodSpec) {
    let rename = |name: &mut String| {
        if !name.is_empty() {
            *name = mapping.host_object_name(ns, name);
        }
    };
    for secret in spec.image_pull_secrets.iter_mut().flatten() {
        rename(&mut secret.name);
    }
    for volume in spec.volumes.iter_mut().flatten() {
        translate_volume(mapping, ns, volume);
    }
    for container in spec
        .containers
        .iter_mut()
        .chain(spec.init_containers.iter_mut().flatten())
    {
        translate_env(mapping, ns, &mut container.env, &mut container.env_from);
    }
    for container in spec.ephemeral_containers.iter_mut().flatten() {
        translate_env(mapping, ns, &mut container.env, &mut container.env_from);
    }
}

fn translate_volume(mapping: &NamespaceMapping, ns: &str, volume: &mut Volume) {
    let rename = |name: &mut String| {
        if !name.is_empty() {
            *name = mapping.host_object_name(ns, name);
        }
    };
    if let Some(cm) = volume.config_map.as_mut() {
        rename(&mut cm.name);
    }
    if let Some(name) = volume.secret.as_mut().and_then(|s| s.secret_name.as_mut()) {
        rename(name);
    }
    if let Some(claim) = volume.persistent_volume_claim.as_mut() {
        rename(&mut claim.claim_name);
    }
    for source in volume
        .projected
        .iter_mut()
        .flat_map(|p| p.sources.iter_mut().flatten())
    {
        if let Some(cm) = source.config_map.as_mut() {
            rename(&mut cm.name);
        }
        if let Some(secret) = source.secret.as_mut() {
            rename(&mut secret.name);
        }
        if let Some(downward) = source.downward_api.as_mut() {
            downward
                .items
                .iter_mut()
                .flatten()
                .for_each(translate_downward_file);
        }
    }
    if let Some(downward) = volume.downward_api.as_mut() {
        downward
            .items
            .iter_mut()
            .flatten()
            .for_each(translate_downward_file);
    }
    let driver_secrets = [
        volume
            .csi
            .as_mut()
            .and_then(|v| v.node_publish_secret_ref.as_mut()),
        volume.cephfs.as_mut().and_then(|v| v.secret_ref.as_mut()),
        volume.rbd.as_mut().and_then(|v| v.secret_ref.as_mut()),
        volume.iscsi.as_mut().and_then(|v| v.secret_ref.as_mut()),
        volume.flex_volume.as_mut().and_then(|v| v.secret_ref.as_mut()),
        volume.scale_io.as_mut().map(|v| &mut v.secret_ref),
        volume.storageos.as_mut().and_then(|v| v.secret_ref.as_mut()),
    ];
    for secret in driver_secrets.into_iter().flatten() {
        rename(&mut secret.name);
    }
    if let Some(azure) = volume.azure_file.as_mut() {
        rename(&mut azure.secret_name);
    }
}

/// The `env` and `envFrom` of a container (regular, init or ephemeral).
fn translate_env(
    mapping: &NamespaceMapping,
    ns: &str,
    env: &mut Option<Vec<EnvVar>>,
    env_from: &mut Option<Vec<EnvFromSource>>,
) {
    for var in env.iter_mut().flatten() {
        translate_env_var(mapping, ns, var);
    }
    for source in env_from.iter_mut().flatten() {
        translate_env_from(mapping, ns, source);
    }
}

fn translate_env_var(mapping: &NamespaceMapping, ns: &str, var: &mut EnvVar) {
    let Some(source) = var.value_from.as_mut() else {
        return;
    };
    if let Some(cm) = source.config_map_key_ref.as_mut()
        && !cm.name.is_empty()
    {
        cm.name = mapping.host_object_name(ns, &cm.name);
    }
    if let Some(secret) = source.secret_key_ref.as_mut()
        && !secret.name.is_empty()
    {
        secret.name = mapping.host_object_name(ns, &secret.name);
    }
    if let Some(field) = source.field_ref.as_mut() {
        translate_field(field);
    }
}

fn translate_env_from(mapping: &NamespaceMapping, ns: &str, source: &mut EnvFromSource) {
    if let Some(cm) = source.config_map_ref.as_mut()
        && !cm.name.is_empty()
    {
        cm.name = mapping.host_object_name(ns, &cm.name);
    }
    if let Some(secret) = source.secret_ref.as_mut()
        && !secret.name.is_empty()
    {
        secret.name = mapping.host_object_name(ns, &secret.name);
    }
}

fn translate_downward_file(file: &mut DownwardAPIVolumeFile) {
    if let Some(field) = file.field_ref.as_mut() {
        translate_field(field);
    }
}

fn translate_field(field: &mut ObjectFieldSelector) {
    if let Some(path) = host_field_path(&field.field_path) {
        field.field_path = path;
    }
}

/// The host field that holds what `path` means on the virtual pod, when the plain field would
/// show the host pod's value (name, namespace, uid, service account); None for fields that are
/// the same on both sides (labels, annotations, IPs, node name, resources).
pub fn host_field_path(path: &str) -> Option<String> {
    let annotation = match path {
        "metadata.name" => OBJECT_NAME_ANNOTATION,
        "metadata.namespace" => OBJECT_NAMESPACE_ANNOTATION,
        "metadata.uid" => OBJECT_UID_ANNOTATION,
        "spec.serviceAccountName" => SERVICE_ACCOUNT_ANNOTATION,
        _ => return None,
    };
    Some(format!("metadata.annotations['{annotation}']"))
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::core::v1::Pod;
    use rstest::rstest;
    use serde_json::{Value, json};

    use super::*;

    /// Translates a pod spec given as JSON and returns it as JSON.
    fn translated(spec: Value) -> Value {
        let pod: Pod =
            serde_json::from_value(json!({"metadata": {"name": "p", "namespace": "team"}, "spec": spec}))
                .unwrap();
        let mut spec = pod.spec.unwrap();
        let mapping = NamespaceMapping::Single {
            host_namespace: "host".into(),
        };
        translate_references(&mapping, "team", &mut spec);
        serde_json::to_value(spec).unwrap()
    }

    fn containers(container: Value) -> Value {
        json!({"containers": [container]})
    }

    #[rstest]
    #[case::config_map_volume(
        json!({"containers": [], "volumes": [{"name": "v", "configMap": {"name": "cfg"}}]}),
        "/volumes/0/configMap/name", "cfg-x-team")]
    #[case::secret_volume(
        json!({"containers": [], "volumes": [{"name": "v", "secret": {"secretName": "s"}}]}),
        "/volumes/0/secret/secretName", "s-x-team")]
    #[case::claim_volume(
        json!({"containers": [], "volumes": [{"name": "v", "persistentVolumeClaim": {"claimName": "data"}}]}),
        "/volumes/0/persistentVolumeClaim/claimName", "data-x-team")]
    #[case::projected_config_map(
        json!({"containers": [], "volumes": [{"name": "v", "projected": {"sources": [{"configMap": {"name": "kube-root-ca.crt"}}]}}]}),
        "/volumes/0/projected/sources/0/configMap/name", vcsync_translators::host_name("team", "kube-root-ca.crt"))]
    #[case::projected_secret(
        json!({"containers": [], "volumes": [{"name": "v", "projected": {"sources": [{"secret": {"name": "s"}}]}}]}),
        "/volumes/0/projected/sources/0/secret/name", "s-x-team")]
    #[case::csi_secret(
        json!({"containers": [], "volumes": [{"name": "v", "csi": {"driver": "d", "nodePublishSecretRef": {"name": "s"}}}]}),
        "/volumes/0/csi/nodePublishSecretRef/name", "s-x-team")]
    #[case::azure_file_secret(
        json!({"containers": [], "volumes": [{"name": "v", "azureFile": {"secretName": "s", "shareName": "x"}}]}),
        "/volumes/0/azureFile/secretName", "s-x-team")]
    #[case::env_config_map_key(
        containers(json!({"name": "c", "env": [{"name": "A", "valueFrom": {"configMapKeyRef": {"name": "cfg", "key": "k"}}}]})),
        "/containers/0/env/0/valueFrom/configMapKeyRef/name", "cfg-x-team")]
    #[case::env_secret_key(
        containers(json!({"name": "c", "env": [{"name": "A", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}}]})),
        "/containers/0/env/0/valueFrom/secretKeyRef/name", "s-x-team")]
    #[case::env_from_config_map(
        containers(json!({"name": "c", "envFrom": [{"configMapRef": {"name": "cfg"}}]})),
        "/containers/0/envFrom/0/configMapRef/name", "cfg-x-team")]
    #[case::env_from_secret(
        containers(json!({"name": "c", "envFrom": [{"secretRef": {"name": "s"}}]})),
        "/containers/0/envFrom/0/secretRef/name", "s-x-team")]
    #[case::init_container_env(
        json!({"containers": [], "initContainers": [{"name": "i", "envFrom": [{"secretRef": {"name": "s"}}]}]}),
        "/initContainers/0/envFrom/0/secretRef/name", "s-x-team")]
    #[case::image_pull_secret(
        json!({"containers": [], "imagePullSecrets": [{"name": "registry"}]}),
        "/imagePullSecrets/0/name", "registry-x-team")]
    #[case::env_pod_name(
        containers(json!({"name": "c", "env": [{"name": "N", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}]})),
        "/containers/0/env/0/valueFrom/fieldRef/fieldPath", "metadata.annotations['vcsync.dev/object-name']")]
    #[case::env_pod_ip_is_kept(
        containers(json!({"name": "c", "env": [{"name": "N", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}}]})),
        "/containers/0/env/0/valueFrom/fieldRef/fieldPath", "status.podIP")]
    #[case::downward_volume_namespace(
        json!({"containers": [], "volumes": [{"name": "v", "downwardAPI": {"items": [{"path": "ns", "fieldRef": {"fieldPath": "metadata.namespace"}}]}}]}),
        "/volumes/0/downwardAPI/items/0/fieldRef/fieldPath", "metadata.annotations['vcsync.dev/object-namespace']")]
    #[case::projected_downward_uid(
        json!({"containers": [], "volumes": [{"name": "v", "projected": {"sources": [{"downwardAPI": {"items": [{"path": "u", "fieldRef": {"fieldPath": "metadata.uid"}}]}}]}}]}),
        "/volumes/0/projected/sources/0/downwardAPI/items/0/fieldRef/fieldPath", "metadata.annotations['vcsync.dev/object-uid']")]
    fn references_are_renamed_like_their_objects(
        #[case] spec: Value,
        #[case] pointer: &str,
        #[case] expected: impl Into<String>,
    ) {
        let out = translated(spec);
        assert_eq!(
            out.pointer(pointer),
            Some(&Value::String(expected.into())),
            "{out:#}"
        );
    }

    /// In the per-namespace mapping names are kept, but not the root CA config map the host
    /// publishes in every namespace of its own: the reference names the virtual one's copy.
    #[test]
    fn per_namespace_references_avoid_the_hosts_own_objects() {
        let pod: Pod = serde_json::from_value(json!({"metadata": {"name": "p", "namespace": "team"}, "spec": {
            "containers": [{"name": "c", "envFrom": [{"configMapRef": {"name": "cfg"}}]}],
            "volumes": [{"name": "v", "projected": {"sources": [{"configMap": {"name": "kube-root-ca.crt"}}]}}],
        }}))
        .unwrap();
        let mut spec = pod.spec.unwrap();
        let mapping = NamespaceMapping::PerNamespace {
            instance: "inst".into(),
        };
        translate_references(&mapping, "team", &mut spec);
        let out = serde_json::to_value(spec).unwrap();
        let root_ca = out.pointer("/volumes/0/projected/sources/0/configMap/name");
        assert_eq!(root_ca, Some(&json!("vcsync-x-kube-root-ca.crt")));
        assert_eq!(
            root_ca,
            Some(&json!(mapping.host_object_name("team", "kube-root-ca.crt")))
        );
        assert_eq!(
            out.pointer("/containers/0/envFrom/0/configMapRef/name"),
            Some(&json!("cfg"))
        );
    }

    #[rstest]
    #[case("metadata.name", Some("metadata.annotations['vcsync.dev/object-name']"))]
    #[case(
        "metadata.namespace",
        Some("metadata.annotations['vcsync.dev/object-namespace']")
    )]
    #[case("metadata.uid", Some("metadata.annotations['vcsync.dev/object-uid']"))]
    #[case(
        "spec.serviceAccountName",
        Some("metadata.annotations['vcsync.dev/service-account-name']")
    )]
    #[case("spec.nodeName", None)]
    #[case("metadata.labels['app']", None)]
    fn downward_fields(#[case] path: &str, #[case] expected: Option<&str>) {
        assert_eq!(host_field_path(path).as_deref(), expected);
    }
}
