//! Where a pod spec names ConfigMaps, Secrets and claims, and whether each naming is optional:
//! what the [reference gate](super::reference_gate) decides on. Pure.
//!
//! The sites are those of [`visit_pod_sites`], the one list of where a pod names other objects:
//! the pod-reference index reads it ([`vcsync_translators::pod_references`]) and
//! [`super::references::translate_references`] renames its sites for the host, so the gate
//! sees every object a host pod names, and the index makes the syncers copy each of them.

use k8s_openapi::api::core::v1::{EmptyDirVolumeSource, PodSpec};
use vcsync_translators::{PodSite, RefKind, visit_pod_sites, visit_pod_sites_mut};

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

/// Every object site of `spec` but the service account (the host pod's identity, which the
/// pod syncer sets), in spec order; empty names are skipped (the API server rejects them).
pub fn sites(spec: &PodSpec) -> Vec<Site> {
    let mut sites = Vec::new();
    visit_pod_sites(spec, |site| {
        if let PodSite::Object { kind, name, optional } = site
            && kind != RefKind::ServiceAccount
        {
            sites.push(Site {
                kind,
                name: name.clone(),
                optional,
            });
        }
    });
    sites
}

/// Leaves out of `spec` the optional sites whose object is `missing` (for the gate: whose copy
/// is not there), as a kubelet would start the pod without them: a volume becomes an empty
/// directory (its mounts still resolve), a projected source, an env variable, an `envFrom`
/// entry or an image pull secret is dropped. The host pod then names nothing that is not there
/// for it.
///
/// The sites are found by [`visit_pod_sites_mut`], which empties the names of those to leave
/// out; what names nothing then is dropped (`drop_emptied`).
pub fn without_missing_optional(spec: &mut PodSpec, missing: impl Fn(RefKind, &str) -> bool) {
    let mut emptied = false;
    visit_pod_sites_mut(spec, |site| {
        if let PodSite::Object {
            kind,
            name,
            optional: true,
        } = site
            && missing(kind, name)
        {
            name.clear();
            emptied = true;
        }
    });
    if emptied {
        drop_emptied(spec);
    }
}

/// Drops what names an object by an empty name, the way a kubelet goes on without a missing
/// optional object: a configMap or secret volume becomes an empty directory; a projected
/// source, an env variable read from a key, an `envFrom` entry and an image pull secret go.
/// Only optional sites can be emptied: required ones (claims, volume drivers' secrets) are
/// waited for instead, never left out.
fn drop_emptied(spec: &mut PodSpec) {
    let named = |name: &String| !name.is_empty();
    if let Some(secrets) = spec.image_pull_secrets.as_mut() {
        secrets.retain(|s| named(&s.name));
    }
    for volume in spec.volumes.iter_mut().flatten() {
        let emptied = volume.config_map.as_ref().is_some_and(|cm| !named(&cm.name))
            || volume
                .secret
                .as_ref()
                .is_some_and(|s| s.secret_name.as_deref() == Some(""));
        if emptied {
            volume.config_map = None;
            volume.secret = None;
            volume.empty_dir = Some(EmptyDirVolumeSource::default());
        }
        if let Some(sources) = volume.projected.as_mut().and_then(|p| p.sources.as_mut()) {
            sources.retain(|source| {
                source.config_map.as_ref().is_none_or(|cm| named(&cm.name))
                    && source.secret.as_ref().is_none_or(|s| named(&s.name))
            });
        }
    }
    let containers = spec
        .containers
        .iter_mut()
        .map(|c| (&mut c.env, &mut c.env_from))
        .chain(
            spec.init_containers
                .iter_mut()
                .flatten()
                .map(|c| (&mut c.env, &mut c.env_from)),
        )
        .chain(
            spec.ephemeral_containers
                .iter_mut()
                .flatten()
                .map(|c| (&mut c.env, &mut c.env_from)),
        );
    for (env, env_from) in containers {
        if let Some(env) = env.as_mut() {
            env.retain(|var| {
                var.value_from.as_ref().is_none_or(|source| {
                    source.config_map_key_ref.as_ref().is_none_or(|r| named(&r.name))
                        && source.secret_key_ref.as_ref().is_none_or(|r| named(&r.name))
                })
            });
        }
        if let Some(env_from) = env_from.as_mut() {
            env_from.retain(|source| {
                source.config_map_ref.as_ref().is_none_or(|r| named(&r.name))
                    && source.secret_ref.as_ref().is_none_or(|r| named(&r.name))
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
    #[case::ephemeral_container_env(
        json!({"ephemeralContainers": [container(json!({"env": [{"name": "P", "valueFrom": {"configMapKeyRef": {"name": "cm", "key": "k"}}}]}))]}),
        RefKind::ConfigMap, "cm", false)]
    #[case::projected_config_map(
        json!({"volumes": [{"name": "v", "projected": {"sources": [{"configMap": {"name": "cm", "optional": true}}]}}]}), RefKind::ConfigMap, "cm", true)]
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

    /// The service account is the host pod's identity, set by the pod syncer: not gated.
    #[test]
    fn the_service_account_is_no_site_of_the_gate() {
        let pod = spec(json!({"serviceAccountName": "runner", "containers": [container(json!({}))]}));
        assert_eq!(sites(&pod), []);
    }

    /// Nothing is left out, and nothing dropped, when nothing optional is missing (an image
    /// pull secret with an empty name stays as the tenant wrote it).
    #[test]
    fn a_pod_without_missing_optional_sites_is_left_as_it_is() {
        let mut pod = spec(json!({
            "imagePullSecrets": [{"name": ""}, {"name": "pull"}],
            "volumes": [{"name": "a", "secret": {"secretName": "s", "optional": true}}],
            "containers": [container(json!({}))]
        }));
        let before = pod.clone();
        without_missing_optional(&mut pod, |_, name| name == "gone");
        assert_eq!(pod, before);
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
            }))],
            "ephemeralContainers": [container(json!({
                "envFrom": [{"configMapRef": {"name": "gone", "optional": true}}, {"secretRef": {"name": "s"}}]
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
        assert_eq!(
            left["ephemeralContainers"][0]["envFrom"],
            json!([{"secretRef": {"name": "s"}}])
        );
    }
}
