//! Objects a pod depends on.
//!
//! A pod can only start on the host once the ConfigMaps, Secrets, ServiceAccount and claims it
//! names exist there too, and a change to one of them must reach the host. The syncer keeps a
//! [`crate::ReferenceIndex`] of these references to know what to sync and when to stop syncing it.
//!
//! Every place a pod spec names such an object is listed once, in the walk behind
//! [`visit_pod_sites`] and [`visit_pod_sites_mut`]: the index reads the sites through the first
//! ([`pod_references`]), and so does the syncer's reference gate (which copies a new host pod
//! may name); the syncer renames them for the host, and leaves out missing optional ones,
//! through the second. A site added to the walk reaches all of them; they cannot drift apart.

use std::collections::BTreeSet;

use k8s_openapi::api::core::v1::{Pod, PodSpec};
use serde::{Deserialize, Serialize};

use crate::keys::VirtualKey;

/// Kinds of objects a pod can reference by name in its own namespace.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum RefKind {
    /// A ConfigMap (volumes, projected volumes, env, envFrom).
    ConfigMap,
    /// A Secret (volumes, projected volumes, env, envFrom, imagePullSecrets, volume driver secrets).
    Secret,
    /// The pod's ServiceAccount.
    ServiceAccount,
    /// A PersistentVolumeClaim (claim volumes and generic ephemeral volumes).
    PersistentVolumeClaim,
}

/// One object referenced by a pod: its kind and virtual key.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct RefTarget {
    /// What kind of object is referenced.
    pub kind: RefKind,
    /// The referenced object, always in the pod's namespace.
    pub key: VirtualKey,
}

impl RefTarget {
    /// Target of `kind` named `name` in namespace `ns`.
    pub fn new(kind: RefKind, ns: impl Into<String>, name: impl Into<String>) -> Self {
        Self {
            kind,
            key: VirtualKey::namespaced(ns, name),
        }
    }
}

/// Name of the ServiceAccount a pod without one runs as; admission requires it to exist.
const DEFAULT_SERVICE_ACCOUNT: &str = "default";

/// One place in a pod spec that names something of the pod's namespace, or a field of the pod
/// itself; `S` is `&String` or `&mut String`.
#[derive(Debug, PartialEq, Eq)]
pub enum PodSite<S> {
    /// The name of an object of the pod's namespace (never empty: empty names are invalid and
    /// not visited).
    Object {
        /// What kind of object it names.
        kind: RefKind,
        /// The name.
        name: S,
        /// Whether the pod starts without the object: `optional: true`, and image pull
        /// secrets always (a missing one only matters for a private image).
        optional: bool,
    },
    /// A generic ephemeral volume, named `volume`: the ephemeral volume controller makes the
    /// claim `<pod>-<volume>` for it. Nothing in the spec names that claim.
    EphemeralClaim {
        /// The volume's name.
        volume: S,
    },
    /// A downward-API field path (`fieldRef.fieldPath` of an env variable, a downwardAPI volume
    /// file or a projected downwardAPI source).
    Field(S),
}

/// Passes an object site to `visit` unless its name is empty.
fn object<S: AsRef<str>>(visit: &mut impl FnMut(PodSite<S>), kind: RefKind, name: S, optional: Option<bool>) {
    if !name.as_ref().is_empty() {
        visit(PodSite::Object {
            kind,
            name,
            optional: optional == Some(true),
        });
    }
}

/// The one list of a pod spec's sites, for both kinds of access: `$iter`/`$as` are
/// `iter`/`as_ref` or `iter_mut`/`as_mut`, `$($m)?` is empty or `mut`.
macro_rules! pod_sites {
    ($(#[$doc:meta])* $name:ident, $iter:ident, $as:ident $(, $m:tt)?) => {
        $(#[$doc])*
        pub fn $name(spec: &$($m)? PodSpec, mut visit: impl FnMut(PodSite<&$($m)? String>)) {
            let visit = &mut visit;
            // The pod's identity: `serviceAccountName`, or the deprecated `serviceAccount`.
            let service_account = match spec.service_account_name.$as() {
                Some(name) if !name.is_empty() => Some(name),
                _ => spec.service_account.$as(),
            };
            if let Some(name) = service_account {
                object(visit, RefKind::ServiceAccount, name, None);
            }
            for secret in spec.image_pull_secrets.$iter().flatten() {
                object(visit, RefKind::Secret, &$($m)? secret.name, Some(true));
            }
            for volume in spec.volumes.$iter().flatten() {
                if let Some(cm) = volume.config_map.$as() {
                    object(visit, RefKind::ConfigMap, &$($m)? cm.name, cm.optional);
                }
                if let Some(secret) = volume.secret.$as() {
                    let optional = secret.optional;
                    if let Some(name) = secret.secret_name.$as() {
                        object(visit, RefKind::Secret, name, optional);
                    }
                }
                if let Some(claim) = volume.persistent_volume_claim.$as() {
                    object(visit, RefKind::PersistentVolumeClaim, &$($m)? claim.claim_name, None);
                }
                if volume.ephemeral.as_ref().is_some_and(|e| e.volume_claim_template.is_some())
                    && !volume.name.is_empty()
                {
                    visit(PodSite::EphemeralClaim { volume: &$($m)? volume.name });
                }
                for source in volume.projected.$iter().flat_map(|p| p.sources.$iter().flatten()) {
                    if let Some(cm) = source.config_map.$as() {
                        object(visit, RefKind::ConfigMap, &$($m)? cm.name, cm.optional);
                    }
                    if let Some(secret) = source.secret.$as() {
                        object(visit, RefKind::Secret, &$($m)? secret.name, secret.optional);
                    }
                    for file in source.downward_api.$iter().flat_map(|d| d.items.$iter().flatten()) {
                        if let Some(field) = file.field_ref.$as() {
                            visit(PodSite::Field(&$($m)? field.field_path));
                        }
                    }
                }
                for file in volume.downward_api.$iter().flat_map(|d| d.items.$iter().flatten()) {
                    if let Some(field) = file.field_ref.$as() {
                        visit(PodSite::Field(&$($m)? field.field_path));
                    }
                }
                let driver_secrets = [
                    volume.csi.$as().and_then(|v| v.node_publish_secret_ref.$as()),
                    volume.cephfs.$as().and_then(|v| v.secret_ref.$as()),
                    volume.rbd.$as().and_then(|v| v.secret_ref.$as()),
                    volume.iscsi.$as().and_then(|v| v.secret_ref.$as()),
                    volume.flex_volume.$as().and_then(|v| v.secret_ref.$as()),
                    volume.scale_io.$as().map(|v| &$($m)? v.secret_ref),
                    volume.storageos.$as().and_then(|v| v.secret_ref.$as()),
                ];
                for secret in driver_secrets.into_iter().flatten() {
                    object(visit, RefKind::Secret, &$($m)? secret.name, None);
                }
                if let Some(azure) = volume.azure_file.$as() {
                    object(visit, RefKind::Secret, &$($m)? azure.secret_name, None);
                }
            }
            // Containers, init containers and ephemeral containers: their env and envFrom.
            let containers = spec
                .containers
                .$iter()
                .map(|c| (&$($m)? c.env, &$($m)? c.env_from))
                .chain(spec.init_containers.$iter().flatten().map(|c| (&$($m)? c.env, &$($m)? c.env_from)))
                .chain(spec.ephemeral_containers.$iter().flatten().map(|c| (&$($m)? c.env, &$($m)? c.env_from)));
            for (env, env_from) in containers {
                for source in env.$iter().flatten().filter_map(|var| var.value_from.$as()) {
                    if let Some(cm) = source.config_map_key_ref.$as() {
                        object(visit, RefKind::ConfigMap, &$($m)? cm.name, cm.optional);
                    }
                    if let Some(secret) = source.secret_key_ref.$as() {
                        object(visit, RefKind::Secret, &$($m)? secret.name, secret.optional);
                    }
                    if let Some(field) = source.field_ref.$as() {
                        visit(PodSite::Field(&$($m)? field.field_path));
                    }
                }
                for source in env_from.$iter().flatten() {
                    if let Some(cm) = source.config_map_ref.$as() {
                        object(visit, RefKind::ConfigMap, &$($m)? cm.name, cm.optional);
                    }
                    if let Some(secret) = source.secret_ref.$as() {
                        object(visit, RefKind::Secret, &$($m)? secret.name, secret.optional);
                    }
                }
            }
        }
    };
}

pod_sites!(
    /// Every site of `spec`, in spec order: the service account, image pull secrets, volumes
    /// (configMap, secret, persistentVolumeClaim, generic ephemeral, projected configMap /
    /// secret / downwardAPI sources, downwardAPI, and the secrets of csi, cephfs, rbd, iscsi,
    /// flexVolume, scaleIO, storageos and azureFile volumes), then `env[].valueFrom`
    /// (configMapKeyRef, secretKeyRef, fieldRef) and `envFrom` of containers, init containers
    /// and ephemeral containers. Service-account token projections and cluster trust bundles
    /// name nothing of the namespace.
    visit_pod_sites, iter, as_ref
);

pod_sites!(
    /// The sites of [`visit_pod_sites`], in the same order, for changing them in place.
    visit_pod_sites_mut, iter_mut, as_mut, mut
);

/// Every object `pod` references, in the pod's namespace (`""` if the pod has none): the object
/// sites of [`visit_pod_sites`], the claim of each generic ephemeral volume (`<pod>-<volume>`),
/// and the ServiceAccount `default` when the pod names none (still a reference).
/// Optional references are included: the object is still wanted on the host when it exists.
pub fn pod_references(pod: &Pod) -> BTreeSet<RefTarget> {
    let ns = pod.metadata.namespace.as_deref().unwrap_or_default();
    let pod_name = pod.metadata.name.as_deref().unwrap_or_default();
    let mut refs = BTreeSet::new();
    let Some(spec) = &pod.spec else {
        return refs;
    };
    let mut service_account = false;
    visit_pod_sites(spec, |site| match site {
        PodSite::Object { kind, name, .. } => {
            service_account |= kind == RefKind::ServiceAccount;
            refs.insert(RefTarget::new(kind, ns, name.as_str()));
        }
        // The pod cannot start on the host before that claim is there.
        PodSite::EphemeralClaim { volume } if !pod_name.is_empty() => {
            refs.insert(RefTarget::new(
                RefKind::PersistentVolumeClaim,
                ns,
                format!("{pod_name}-{volume}"),
            ));
        }
        PodSite::EphemeralClaim { .. } | PodSite::Field(_) => {}
    });
    if !service_account {
        refs.insert(RefTarget::new(
            RefKind::ServiceAccount,
            ns,
            DEFAULT_SERVICE_ACCOUNT,
        ));
    }
    refs
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    /// A pod spec with one site of each kind, every name distinct.
    fn every_site() -> PodSpec {
        let env = |n: &str| {
            json!({
                "env": [
                    {"name": "A", "valueFrom": {"configMapKeyRef": {"name": format!("{n}-env-cm"), "key": "k"}}},
                    {"name": "B", "valueFrom": {"secretKeyRef": {"name": format!("{n}-env-secret"), "key": "k", "optional": true}}},
                    {"name": "C", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
                    {"name": "D", "value": "plain"}
                ],
                "envFrom": [{"configMapRef": {"name": format!("{n}-from-cm")}}, {"secretRef": {"name": format!("{n}-from-secret")}}]
            })
        };
        let container = |name: &str| {
            let mut c = env(name);
            c["name"] = json!(name);
            c
        };
        serde_json::from_value(json!({
            "serviceAccountName": "runner",
            "imagePullSecrets": [{"name": "pull"}],
            "volumes": [
                {"name": "a", "configMap": {"name": "vol-cm", "optional": true}},
                {"name": "b", "secret": {"secretName": "vol-secret"}},
                {"name": "c", "persistentVolumeClaim": {"claimName": "claim"}},
                {"name": "d", "ephemeral": {"volumeClaimTemplate": {"spec": {}}}},
                {"name": "e", "projected": {"sources": [
                    {"configMap": {"name": "proj-cm"}}, {"secret": {"name": "proj-secret"}},
                    {"downwardAPI": {"items": [{"path": "u", "fieldRef": {"fieldPath": "metadata.uid"}}]}},
                    {"serviceAccountToken": {"path": "t"}}
                ]}},
                {"name": "f", "downwardAPI": {"items": [{"path": "n", "fieldRef": {"fieldPath": "metadata.namespace"}}]}},
                {"name": "g", "csi": {"driver": "d", "nodePublishSecretRef": {"name": "csi"}}},
                {"name": "h", "cephfs": {"monitors": [], "secretRef": {"name": "cephfs"}}},
                {"name": "i", "rbd": {"monitors": [], "image": "i", "secretRef": {"name": "rbd"}}},
                {"name": "j", "iscsi": {"targetPortal": "p", "iqn": "q", "lun": 0, "secretRef": {"name": "iscsi"}}},
                {"name": "k", "flexVolume": {"driver": "d", "secretRef": {"name": "flex"}}},
                {"name": "l", "scaleIO": {"gateway": "g", "system": "s", "secretRef": {"name": "scaleio"}}},
                {"name": "m", "storageos": {"secretRef": {"name": "storageos"}}},
                {"name": "n", "azureFile": {"secretName": "azure", "shareName": "s"}},
                {"name": "o", "emptyDir": {}}
            ],
            "containers": [container("app")],
            "initContainers": [container("init")],
            "ephemeralContainers": [container("debug")]
        }))
        .unwrap()
    }

    /// A site as a comparable string.
    fn describe(site: PodSite<&String>) -> String {
        match site {
            PodSite::Object { kind, name, optional } => {
                format!("{kind:?} {name}{}", if optional { " (optional)" } else { "" })
            }
            PodSite::EphemeralClaim { volume } => format!("ephemeral {volume}"),
            PodSite::Field(path) => format!("field {path}"),
        }
    }

    #[test]
    fn every_site_is_visited_once_in_spec_order() {
        let mut seen = Vec::new();
        visit_pod_sites(&every_site(), |site| seen.push(describe(site)));
        let mut expected: Vec<String> = [
            "ServiceAccount runner",
            "Secret pull (optional)",
            "ConfigMap vol-cm (optional)",
            "Secret vol-secret",
            "PersistentVolumeClaim claim",
            "ephemeral d",
            "ConfigMap proj-cm",
            "Secret proj-secret",
            "field metadata.uid",
            "field metadata.namespace",
            "Secret csi",
            "Secret cephfs",
            "Secret rbd",
            "Secret iscsi",
            "Secret flex",
            "Secret scaleio",
            "Secret storageos",
            "Secret azure",
        ]
        .map(String::from)
        .into();
        for container in ["app", "init", "debug"] {
            expected.extend([
                format!("ConfigMap {container}-env-cm"),
                format!("Secret {container}-env-secret (optional)"),
                "field metadata.name".to_string(),
                format!("ConfigMap {container}-from-cm"),
                format!("Secret {container}-from-secret"),
            ]);
        }
        assert_eq!(seen, expected);
    }

    /// The two entry points are one walk: the mutable one reaches the same sites, and what it
    /// writes there is what the read-only one then sees.
    #[test]
    fn the_mutable_walk_reaches_the_same_sites() {
        let spec = every_site();
        let mut read = Vec::new();
        visit_pod_sites(&spec, |site| read.push(describe(site)));

        let mut changed = spec.clone();
        let mut written = Vec::new();
        visit_pod_sites_mut(&mut changed, |site| {
            let (PodSite::Object { name: s, .. } | PodSite::EphemeralClaim { volume: s } | PodSite::Field(s)) =
                site;
            written.push(s.clone());
            s.push_str("-renamed");
        });
        let mut reread = Vec::new();
        visit_pod_sites(&changed, |site| reread.push(describe(site)));

        assert_eq!(written.len(), read.len());
        let renamed: Vec<String> = read
            .iter()
            .map(|site| match site.split_once(" (optional)") {
                Some((site, _)) => format!("{site}-renamed (optional)"),
                None => format!("{site}-renamed"),
            })
            .collect();
        assert_eq!(reread, renamed);
    }

    #[test]
    fn empty_names_are_not_sites_and_the_deprecated_service_account_is_one() {
        let spec: PodSpec = serde_json::from_value(json!({
            "serviceAccountName": "",
            "serviceAccount": "legacy",
            "imagePullSecrets": [{"name": ""}],
            "containers": [{"name": "c", "envFrom": [{"configMapRef": {"name": ""}}]}]
        }))
        .unwrap();
        let mut seen = Vec::new();
        visit_pod_sites(&spec, |site| seen.push(describe(site)));
        assert_eq!(seen, ["ServiceAccount legacy"]);
    }
}
