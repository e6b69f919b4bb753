//! The table of served resource types: one row per kind, so adding a kind (or a CRD later) is one
//! line or one `Registry::add` call.

use std::sync::{Arc, RwLock};

/// One served resource type (group, version, kind, plural, ...).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ResourceDef {
    pub group: String,
    pub version: String,
    pub kind: String,
    pub plural: String,
    pub singular: String,
    pub namespaced: bool,
    pub short_names: Vec<String>,
    /// Subresources such as `status` or `binding`.
    pub subresources: Vec<String>,
    /// Categories for `kubectl get all`.
    pub categories: Vec<String>,
    /// Name of the CustomResourceDefinition that defines the type; None for built-in kinds.
    pub crd: Option<String>,
}

impl ResourceDef {
    /// `apiVersion` of objects of this type: `v1` or `group/version`.
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.clone()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    /// Key of this type in the store: independent of the version.
    pub fn store_key(&self) -> String {
        format!("{}/{}", self.group, self.plural)
    }

    /// Whether the type has a `status` subresource (main-resource writes then ignore status).
    pub fn has_status(&self) -> bool {
        self.has_subresource("status")
    }

    /// Whether `sub` is a subresource of this type.
    pub fn has_subresource(&self, sub: &str) -> bool {
        self.subresources.iter().any(|s| s == sub)
    }
}

/// Row of the built-in table: (group, version, kind, plural, namespaced, shortNames, subresources,
/// categories).
type Row = (
    &'static str,
    &'static str,
    &'static str,
    &'static str,
    bool,
    &'static [&'static str],
    &'static [&'static str],
    &'static [&'static str],
);

/// The built-in kinds. Verbs are the full set for every kind.
#[rustfmt::skip]
const BUILTIN: &[Row] = &[
    ("", "v1", "Namespace", "namespaces", false, &["ns"], &["status"], &[]),
    ("", "v1", "ConfigMap", "configmaps", true, &["cm"], &[], &[]),
    ("", "v1", "Secret", "secrets", true, &[], &[], &[]),
    ("", "v1", "Pod", "pods", true, &["po"], &["status", "binding", "eviction", "ephemeralcontainers", "log", "exec", "attach", "portforward"], &["all"]),
    ("", "v1", "Service", "services", true, &["svc"], &["status"], &["all"]),
    ("", "v1", "ServiceAccount", "serviceaccounts", true, &["sa"], &["token"], &[]),
    ("", "v1", "Endpoints", "endpoints", true, &["ep"], &[], &[]),
    ("", "v1", "Event", "events", true, &["ev"], &[], &[]),
    ("", "v1", "Node", "nodes", false, &["no"], &["status"], &[]),
    ("", "v1", "PersistentVolumeClaim", "persistentvolumeclaims", true, &["pvc"], &["status"], &[]),
    ("", "v1", "PersistentVolume", "persistentvolumes", false, &["pv"], &["status"], &[]),
    ("", "v1", "ResourceQuota", "resourcequotas", true, &["quota"], &["status"], &[]),
    ("", "v1", "LimitRange", "limitranges", true, &["limits"], &[], &[]),
    ("coordination.k8s.io", "v1", "Lease", "leases", true, &[], &[], &[]),
    ("discovery.k8s.io", "v1", "EndpointSlice", "endpointslices", true, &[], &[], &[]),
    ("apps", "v1", "Deployment", "deployments", true, &["deploy"], &["status"], &["all"]),
    ("apps", "v1", "ReplicaSet", "replicasets", true, &["rs"], &["status"], &["all"]),
    ("apps", "v1", "DaemonSet", "daemonsets", true, &["ds"], &["status"], &["all"]),
    ("apps", "v1", "StatefulSet", "statefulsets", true, &["sts"], &["status"], &["all"]),
    ("storage.k8s.io", "v1", "StorageClass", "storageclasses", false, &["sc"], &[], &[]),
    ("networking.k8s.io", "v1", "Ingress", "ingresses", true, &["ing"], &["status"], &[]),
    ("networking.k8s.io", "v1", "IngressClass", "ingressclasses", false, &[], &[], &[]),
    ("networking.k8s.io", "v1", "NetworkPolicy", "networkpolicies", true, &["netpol"], &[], &[]),
    ("policy", "v1", "PodDisruptionBudget", "poddisruptionbudgets", true, &["pdb"], &["status"], &[]),
    ("scheduling.k8s.io", "v1", "PriorityClass", "priorityclasses", false, &["pc"], &[], &[]),
    ("authentication.k8s.io", "v1", "TokenReview", "tokenreviews", false, &[], &[], &[]),
    ("authentication.k8s.io", "v1", "SelfSubjectReview", "selfsubjectreviews", false, &[], &[], &[]),
    ("authorization.k8s.io", "v1", "SubjectAccessReview", "subjectaccessreviews", false, &[], &[], &[]),
    ("authorization.k8s.io", "v1", "SelfSubjectAccessReview", "selfsubjectaccessreviews", false, &[], &[], &[]),
    ("authorization.k8s.io", "v1", "LocalSubjectAccessReview", "localsubjectaccessreviews", true, &[], &[], &[]),
    ("apiextensions.k8s.io", "v1", "CustomResourceDefinition", "customresourcedefinitions", false, &["crd", "crds"], &["status"], &["api-extensions"]),
];

/// The standard verbs of every main resource.
pub(crate) const VERBS: &[&str] = &[
    "create",
    "delete",
    "deletecollection",
    "get",
    "list",
    "patch",
    "update",
    "watch",
];

/// All served resource types: the built-in ones plus those of the CustomResourceDefinitions
/// created so far (which come and go while the server runs, hence the lock; no method hands
/// out a guard, so it is never held across other locks).
#[derive(Debug)]
pub(crate) struct Registry {
    defs: RwLock<Vec<Arc<ResourceDef>>>,
}

impl Registry {
    /// The registry holding the built-in kinds.
    pub fn builtin() -> Self {
        let registry = Registry {
            defs: RwLock::new(Vec::new()),
        };
        for (group, version, kind, plural, namespaced, short, subs, categories) in BUILTIN {
            registry.add(ResourceDef {
                group: group.to_string(),
                version: version.to_string(),
                kind: kind.to_string(),
                plural: plural.to_string(),
                singular: kind.to_lowercase(),
                namespaced: *namespaced,
                short_names: short.iter().map(|s| s.to_string()).collect(),
                subresources: subs.iter().map(|s| s.to_string()).collect(),
                categories: categories.iter().map(|s| s.to_string()).collect(),
                crd: None,
            });
        }
        registry
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Vec<Arc<ResourceDef>>> {
        self.defs.read().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Adds a resource type.
    pub fn add(&self, def: ResourceDef) {
        self.defs
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .push(Arc::new(def));
    }

    /// Replaces the types defined by CustomResourceDefinition `crd` with `defs` (none: the CRD
    /// is gone). A type another definition or a built-in kind already serves is not taken over.
    pub fn set_crd(&self, crd: &str, defs: Vec<ResourceDef>) {
        let mut all = self.defs.write().unwrap_or_else(|poisoned| poisoned.into_inner());
        all.retain(|d| d.crd.as_deref() != Some(crd));
        for def in defs {
            let taken = all
                .iter()
                .any(|d| d.group == def.group && d.version == def.version && d.plural == def.plural);
            if !taken {
                all.push(Arc::new(ResourceDef {
                    crd: Some(crd.to_string()),
                    ..def
                }));
            }
        }
    }

    /// The type served at `/apis/{group}/{version}/{plural}` (or `/api/v1/{plural}`).
    pub fn find(&self, group: &str, version: &str, plural: &str) -> Option<Arc<ResourceDef>> {
        self.read()
            .iter()
            .find(|d| d.group == group && d.version == version && d.plural == plural)
            .cloned()
    }

    /// All types, in table order (CRD-defined ones last), as a snapshot.
    pub fn all(&self) -> std::vec::IntoIter<Arc<ResourceDef>> {
        self.read().clone().into_iter()
    }

    /// Whether `group/version` is served.
    pub fn serves(&self, group: &str, version: &str) -> bool {
        self.read()
            .iter()
            .any(|d| d.group == group && d.version == version)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_builtin_types() {
        let registry = Registry::builtin();
        let pods = registry.find("", "v1", "pods").expect("pods");
        assert_eq!(pods.kind, "Pod");
        assert!(pods.has_status() && pods.has_subresource("binding"));
        assert_eq!(
            registry.find("apps", "v1", "deployments").unwrap().api_version(),
            "apps/v1"
        );
        assert!(registry.find("apps", "v1", "pods").is_none());
        assert!(!registry.find("", "v1", "nodes").unwrap().namespaced);
    }
}
