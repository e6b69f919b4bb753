//! Where a pod spec names ConfigMaps, Secrets and claims, and whether each naming is optional:
//! what the [reference gate](super::reference_gate) decides on. Pure.
//!
//! The sites are the ones [`super::references::translate_references`] renames for the host: a
//! host pod names no object that is not listed here.

use k8s_openapi::api::core::v1::{Container, EmptyDirVolumeSource, PodSpec, Volume};
use vcsync_translators::RefKind;

/// One place where a pod spec names an object of its namespace.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Site {
    /// Kind of the named object.
    pub kind: RefKind,
    /// Its name in the virtual namespace.
    pub name: String,
    /// Whether the pod starts without it (`optional: true`; image pull secrets always).
    pub optional: bool,
}

impl Site {
    fn new(kind: RefKind, name: &str, optional: Option<bool>) -> Self {
        Self {
            kind,
            name: name.to_string(),
            optional: optional == Some(true),
        }
    }
}

/// Every site of `spec`, in spec order; empty names are skipped (the API server rejects them).
pub fn sites(spec: &PodSpec) -> Vec<Site> {
    let mut sites = Vec::new();
    for secret in spec.image_pull_secrets.iter().flatten() {
        // A missing pull secret only matters for a private image; the kubelet goes on without.
        sites.push(Site::new(RefKind::Secret, &secret.name, Some(true)));
    }
    for volume in spec.volumes.iter().flatten() {
        volume_sites(volume, &mut sites);
    }
    for container in spec
        .containers
        .iter()
        .chain(spec.init_containers.iter().flatten())
    {
        container_sites(container, &mut sites);
    }
    sites.retain(|site| !site.name.is_empty());
    sites
}

fn volume_sites(volume: &Volume, sites: &mut Vec<Site>) {
    if let Some(cm) = &volume.config_map {
        sites.push(Site::new(RefKind::ConfigMap, &cm.name, cm.optional));
    }
    if let Some(secret) = &volume.secret {
        let name = secret.secret_name.as_deref().unwrap_or_default();
        sites.push(Site::new(RefKind::Secret, name, secret.optional));
    }
    if let Some(claim) = &volume.persistent_volume_claim {
        sites.push(Site::new(RefKind::PersistentVolumeClaim, &claim.claim_name, None));
    }
    for source in volume.projected.iter().flat_map(|p| p.sources.iter().flatten()) {
        if let Some(cm) = &source.config_map {
            sites.push(Site::new(RefKind::ConfigMap, &cm.name, cm.optional));
        }
        if let Some(secret) = &source.secret {
            sites.push(Site::new(RefKind::Secret, &secret.name, secret.optional));
        }
    }
    let driver_secrets = [
        volume
            .csi
            .as_ref()
            .and_then(|v| v.node_publish_secret_ref.as_ref()),
        volume.cephfs.as_ref().and_then(|v| v.secret_ref.as_ref()),
        volume.rbd.as_ref().and_then(|v| v.secret_ref.as_ref()),
        volume.iscsi.as_ref().and_then(|v| v.secret_ref.as_ref()),
        volume.flex_volume.as_ref().and_then(|v| v.secret_ref.as_ref()),
        volume.scale_io.as_ref().map(|v| &v.secret_ref),
        volume.storageos.as_ref().and_then(|v| v.secret_ref.as_ref()),
    ];
    for secret in driver_secrets.into_iter().flatten() {
        sites.push(Site::new(RefKind::Secret, &secret.name, None));
    }
    if let Some(azure) = &volume.azure_file {
        sites.push(Site::new(RefKind::Secret, &azure.secret_name, None));
    }
}

fn container_sites(container: &Container, sites: &mut Vec<Site>) {
    for source in container
        .env
        .iter()
        .flatten()
        .filter_map(|var| var.value_from.as_ref())
    {
        if let Some(cm) = &source.config_map_key_ref {
            sites.push(Site::new(RefKind::ConfigMap, &cm.name, cm.optional));
        }
        if let Some(secret) = &source.secret_key_ref {
            sites.push(Site::new(RefKind::Secret, &secret.name, secret.optional));
        }
    }
    for source in container.env_from.iter().flatten() {
        if let Some(cm) = &source.config_map_ref {
            sites.push(Site::new(RefKind::ConfigMap, &cm.name, cm.optional));
        }
        if let Some(secret) = &source.secret_ref {
            sites.push(Site::new(RefKind::Secret, &secret.name, secret.optional));
        }
    }
}

/// Leaves out of `spec` the optional sites whose object is `missing` (for the gate: whose copy
/// is not there), as a kubelet would start the pod without them: a volume becomes an empty
/// directory (its mounts still resolve), a projected source, an env variable, an `envFrom`
/// entry or an image pull secret is dropped. The host pod then names nothing that is not there
/// for it.
pub fn without_missing_optional(spec: &mut PodSpec, missing: impl Fn(RefKind, &str) -> bool) {
    if let Some(secrets) = spec.image_pull_secrets.as_mut() {
        secrets.retain(|s| !missing(RefKind::Secret, &s.name));
    }
    for volume in spec.volumes.iter_mut().flatten() {
        let empty = match (&volume.config_map, &volume.secret) {
            (Some(cm), _) => cm.optional == Some(true) && missing(RefKind::ConfigMap, &cm.name),
            (_, Some(secret)) => {
                secret.optional == Some(true)
                    && missing(RefKind::Secret, secret.secret_name.as_deref().unwrap_or_default())
            }
            _ => false,
        };
        if empty {
            volume.config_map = None;
            volume.secret = None;
            volume.empty_dir = Some(EmptyDirVolumeSource::default());
        }
        if let Some(sources) = volume.projected.as_mut().and_then(|p| p.sources.as_mut()) {
            sources.retain(|source| {
                let cm = source
                    .config_map
                    .as_ref()
                    .is_some_and(|cm| cm.optional == Some(true) && missing(RefKind::ConfigMap, &cm.name));
                let secret = source
                    .secret
                    .as_ref()
                    .is_some_and(|s| s.optional == Some(true) && missing(RefKind::Secret, &s.name));
                !cm && !secret
            });
        }
    }
    for container in spec
        .containers
        .iter_mut()
        .chain(spec.init_containers.iter_mut().flatten())
    {
        if let Some(env) = container.env.as_mut() {
            env.retain(|var| {
                let Some(source) = &var.value_from else {
                    return true;
                };
                let cm = source
                    .config_map_key_ref
                    .as_ref()
                    .is_some_and(|r| r.optional == Some(true) && missing(RefKind::ConfigMap, &r.name));
                let secret = source
                    .secret_key_ref
                    .as_ref()
                    .is_some_and(|r| r.optional == Some(true) && missing(RefKind::Secret, &r.name));
                !cm && !secret
            });
        }
        if let Some(env_from) = container.env_from.as_mut() {
            env_from.retain(|source| {
                let cm = source
                    .config_map_ref
                    .as_ref()
                    .is_some_and(|r| r.optional == Some(true) && missing(RefKind::ConfigMap, &r.name));
                let secret = source
                    .secret_ref
                    .as_ref()
                    .is_some_and(|r| r.optional == Some(true) && missing(RefKind::Secret, &r.name));
                !cm && !secret
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use rstest::rstest;
    use serde_json::json;

    use super::*;

    fn spec(value: serde_json::Value) -> PodSpec {
        serde_json::from_value(value).unwrap()
    }

    fn container(extra: serde_json::Value) -> serde_json::Value {
        let mut c = json!({"name": "app", "image": "nginx"});
        c.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        c
    }

    #[rstest]
    #[case::config_map_volume(
        json!({"volumes": [{"name": "v", "configMap": {"name": "cm"}}]}), RefKind::ConfigMap, "cm", false)]
    #[case::optional_secret_volume(
        json!({"volumes": [{"name": "v", "secret": {"secretName": "s", "optional": true}}]}), RefKind::Secret, "s", true)]
    #[case::claim(
        json!({"volumes": [{"name": "v", "persistentVolumeClaim": {"claimName": "data"}}]}), RefKind::PersistentVolumeClaim, "data", false)]
    #[case::projected_secret(
        json!({"volumes": [{"name": "v", "projected": {"sources": [{"secret": {"name": "s"}}]}}]}), RefKind::Secret, "s", false)]
    #[case::csi_secret(
        json!({"volumes": [{"name": "v", "csi": {"driver": "d", "nodePublishSecretRef": {"name": "s"}}}]}), RefKind::Secret, "s", false)]
    #[case::azure_file(
        json!({"volumes": [{"name": "v", "azureFile": {"secretName": "s", "shareName": "x"}}]}), RefKind::Secret, "s", false)]
    #[case::image_pull_secret(json!({"imagePullSecrets": [{"name": "pull"}]}), RefKind::Secret, "pull", true)]
    #[case::env_secret_key(
        json!({"containers": [container(json!({"env": [{"name": "P", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}}]}))]}),
        RefKind::Secret, "s", false)]
    #[case::optional_env_from_config_map(
        json!({"initContainers": [container(json!({"envFrom": [{"configMapRef": {"name": "cm", "optional": true}}]}))]}),
        RefKind::ConfigMap, "cm", true)]
    fn every_site_is_found_with_its_optionality(
        #[case] value: serde_json::Value,
        #[case] kind: RefKind,
        #[case] name: &str,
        #[case] optional: bool,
    ) {
        let mut value = value;
        value
            .as_object_mut()
            .unwrap()
            .entry("containers")
            .or_insert(json!([container(json!({}))]));
        assert_eq!(
            sites(&spec(value)),
            [Site {
                kind,
                name: name.into(),
                optional
            }]
        );
    }

    #[test]
    fn missing_optional_sites_are_left_out_and_the_rest_kept() {
        let mut pod = spec(json!({
            "imagePullSecrets": [{"name": "gone"}, {"name": "pull"}],
            "volumes": [
                {"name": "a", "secret": {"secretName": "gone", "optional": true}},
                {"name": "b", "secret": {"secretName": "gone"}},
                {"name": "c", "projected": {"sources": [
                    {"configMap": {"name": "gone", "optional": true}}, {"configMap": {"name": "cm"}}]}}
            ],
            "containers": [container(json!({
                "env": [
                    {"name": "A", "valueFrom": {"secretKeyRef": {"name": "gone", "key": "k", "optional": true}}},
                    {"name": "B", "value": "plain"}
                ],
                "envFrom": [{"secretRef": {"name": "gone", "optional": true}}, {"configMapRef": {"name": "cm"}}]
            }))]
        }));
        without_missing_optional(&mut pod, |_, name| name == "gone");
        let left = serde_json::to_value(&pod).unwrap();
        assert_eq!(left["imagePullSecrets"], json!([{"name": "pull"}]));
        assert_eq!(left["volumes"][0], json!({"name": "a", "emptyDir": {}}));
        assert_eq!(
            left["volumes"][1]["secret"]["secretName"], "gone",
            "a required site stays: the gate waits for it instead"
        );
        assert_eq!(
            left["volumes"][2]["projected"]["sources"],
            json!([{"configMap": {"name": "cm"}}])
        );
        assert_eq!(
            left["containers"][0]["env"],
            json!([{"name": "B", "value": "plain"}])
        );
        assert_eq!(
            left["containers"][0]["envFrom"],
            json!([{"configMapRef": {"name": "cm"}}])
        );
    }
}
