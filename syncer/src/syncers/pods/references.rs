//! References inside a pod spec, renamed for the host: the objects a pod names (config maps,
//! secrets, claims) and the downward-API fields that would otherwise show host values.
//!
//! Names go through [`NamespaceMapping::host_object_name`], the function that names the referenced objects on the host,
//! so a reference resolves to the copy the ConfigMap / Secret / PVC syncers keep there. The sites
//! are those of [`visit_pod_sites_mut`], the walk the pod-reference index reads too
//! ([`vcsync_translators::pod_references`]): whatever the index makes the syncers copy to the
//! host is what the host pod names.

use k8s_openapi::api::core::v1::PodSpec;
use vcsync_translators::{
    NamespaceMapping, OBJECT_NAME_ANNOTATION, OBJECT_NAMESPACE_ANNOTATION, OBJECT_UID_ANNOTATION, PodSite,
    RefKind, visit_pod_sites_mut,
};

/// Annotation on host pods holding the virtual pod's service account, for downward-API
/// references to `spec.serviceAccountName` (the host pod runs as another account).
pub const SERVICE_ACCOUNT_ANNOTATION: &str = "vcsync.dev/service-account-name";

/// Renames every object reference of `spec` (a pod of virtual namespace `ns`) and points
/// downward-API fields that differ on the host at annotations that hold the virtual values.
///
/// Left alone: the service account (the host pod's identity, which
/// [`super::translate::PodTranslator::host_pod`] sets from the configuration) and generic
/// ephemeral volumes (the host's ephemeral volume controller names the host pod's claim).
/// Service-account token projections are handled by [`super::token`].
pub fn translate_references(mapping: &NamespaceMapping, ns: &str, spec: &mut PodSpec) {
    visit_pod_sites_mut(spec, |site| match site {
        PodSite::Object {
            kind: RefKind::ServiceAccount,
            ..
        }
        | PodSite::EphemeralClaim { .. } => {}
        PodSite::Object { name, .. } => *name = mapping.host_object_name(ns, name),
        PodSite::Field(path) => {
            if let Some(host_path) = host_field_path(path) {
                *path = host_path;
            }
        }
    });
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
    use std::collections::BTreeSet;

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

    /// Every string leaf of `value` with its JSON pointer.
    fn leaves(value: &Value, at: String, out: &mut Vec<(String, String)>) {
        match value {
            Value::String(s) => out.push((at, s.clone())),
            Value::Array(items) => items
                .iter()
                .enumerate()
                .for_each(|(i, v)| leaves(v, format!("{at}/{i}"), out)),
            Value::Object(map) => map.iter().for_each(|(k, v)| leaves(v, format!("{at}/{k}"), out)),
            _ => {}
        }
    }

    /// The index and the rewrite use one walk: every object a pod references according to the
    /// index (but the service account, which `host_pod` sets, and the ephemeral volume's
    /// claim, which the spec does not name) is a name the rewrite changes, and the rewrite
    /// changes nothing else but downward-API fields. The pod has a site of each kind, every
    /// name distinct.
    #[test]
    fn the_rewrite_changes_exactly_the_names_the_index_lists() {
        let env = json!({
            "env": [
                {"name": "A", "valueFrom": {"configMapKeyRef": {"name": "env-cm", "key": "k"}}},
                {"name": "B", "valueFrom": {"secretKeyRef": {"name": "env-secret", "key": "k", "optional": true}}},
                {"name": "C", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}
            ],
            "envFrom": [{"configMapRef": {"name": "from-cm"}}, {"secretRef": {"name": "from-secret"}}]
        });
        let with_name = |name: &str, prefix: &str| {
            let text = env
                .to_string()
                .replace("\"name\":\"", &format!("\"name\":\"{prefix}"));
            let mut c: Value = serde_json::from_str(&text).unwrap();
            c["name"] = json!(name);
            c
        };
        let pod: Pod = serde_json::from_value(json!({"metadata": {"name": "p", "namespace": "team"}, "spec": {
            "serviceAccountName": "runner",
            "imagePullSecrets": [{"name": "pull"}],
            "volumes": [
                {"name": "a", "configMap": {"name": "vol-cm"}},
                {"name": "b", "secret": {"secretName": "vol-secret"}},
                {"name": "c", "persistentVolumeClaim": {"claimName": "claim"}},
                {"name": "d", "ephemeral": {"volumeClaimTemplate": {"spec": {}}}},
                {"name": "e", "projected": {"sources": [
                    {"configMap": {"name": "proj-cm"}}, {"secret": {"name": "proj-secret"}},
                    {"downwardAPI": {"items": [{"path": "u", "fieldRef": {"fieldPath": "metadata.uid"}}]}}
                ]}},
                {"name": "f", "downwardAPI": {"items": [{"path": "n", "fieldRef": {"fieldPath": "metadata.namespace"}}]}},
                {"name": "g", "csi": {"driver": "d", "nodePublishSecretRef": {"name": "csi"}}},
                {"name": "h", "cephfs": {"monitors": [], "secretRef": {"name": "cephfs"}}},
                {"name": "i", "rbd": {"monitors": [], "image": "i", "secretRef": {"name": "rbd"}}},
                {"name": "j", "iscsi": {"targetPortal": "p", "iqn": "q", "lun": 0, "secretRef": {"name": "iscsi"}}},
                {"name": "k", "flexVolume": {"driver": "d", "secretRef": {"name": "flex"}}},
                {"name": "l", "scaleIO": {"gateway": "g", "system": "s", "secretRef": {"name": "scaleio"}}},
                {"name": "m", "storageos": {"secretRef": {"name": "storageos"}}},
                {"name": "n", "azureFile": {"secretName": "azure", "shareName": "s"}}
            ],
            "containers": [with_name("app", "app-")],
            "initContainers": [with_name("init", "init-")],
            "ephemeralContainers": [with_name("debug", "debug-")]
        }}))
        .unwrap();

        let indexed: BTreeSet<String> = vcsync_translators::pod_references(&pod)
            .into_iter()
            .filter(|target| target.kind != RefKind::ServiceAccount)
            .map(|target| target.key.name)
            .filter(|name| name != "p-d")
            .collect();
        assert_eq!(indexed.len(), 14 + 3 * 4, "{indexed:?}");

        let before = serde_json::to_value(pod.spec.as_ref().unwrap()).unwrap();
        let mut spec = pod.spec.clone().unwrap();
        let mapping = NamespaceMapping::Single {
            host_namespace: "host".into(),
        };
        translate_references(&mapping, "team", &mut spec);
        let after = serde_json::to_value(spec).unwrap();
        let (mut old, mut new) = (Vec::new(), Vec::new());
        leaves(&before, String::new(), &mut old);
        leaves(&after, String::new(), &mut new);
        assert_eq!(old.len(), new.len());
        let (mut renamed, mut fields) = (BTreeSet::new(), 0);
        for ((at, was), (_, is)) in old.iter().zip(&new).filter(|((_, was), (_, is))| was != is) {
            if at.ends_with("/fieldPath") {
                fields += 1;
            } else {
                assert_eq!(*is, mapping.host_object_name("team", was), "{at}");
                renamed.insert(was.clone());
            }
        }
        assert_eq!(renamed, indexed);
        assert_eq!(fields, 2 + 3, "downward-API fields of volumes and containers");
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
