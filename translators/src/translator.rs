//! Name translators: the mapping between virtual keys and host keys for one kind of object.
//!
//! The forward direction is a pure function of the key ([`crate::names`]); the backward direction
//! reads the annotations vcsync wrote on the host object, so no mapping store is needed and a
//! restarted syncer rebuilds everything from a host list.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use crate::keys::{HostKey, VirtualKey};
use crate::labels::{host_annotations, host_labels};
use crate::names::{host_cluster_name, host_name, host_namespace_name, per_namespace_name};
use crate::ownership::{
    CLUSTER_UID_ANNOTATION, OBJECT_NAME_ANNOTATION, OBJECT_NAMESPACE_ANNOTATION, Ownership,
};

/// Maps virtual objects of one kind to host objects and back. Shared by the controllers of a
/// syncer, hence `Send + Sync + 'static`.
pub trait NameTranslator: Send + Sync + 'static {
    /// The host key of a virtual object. Pure and deterministic: the same key on every replica and
    /// after every restart, so a restart finds the objects it created.
    fn host_key(&self, virtual_key: &VirtualKey) -> HostKey;

    /// The virtual key a host object belongs to, read from its annotations; None unless the object
    /// is owned by this instance.
    fn virtual_key(&self, host: &ObjectMeta) -> Option<VirtualKey>;

    /// The ownership marker of this instance.
    fn ownership(&self) -> &Ownership;

    /// Full host metadata for a virtual object: name/namespace from host_key, labels via host_labels,
    /// annotations via host_annotations plus the virtual cluster's UID when the ownership names
    /// it; nothing else (no uid, resourceVersion, ownerReferences,
    /// finalizers, managedFields), because those belong to the host API server or to the syncer.
    fn host_metadata(&self, kind: &str, virtual_meta: &ObjectMeta) -> ObjectMeta {
        let virtual_key = VirtualKey::new(
            virtual_meta.namespace.clone(),
            virtual_meta.name.clone().unwrap_or_default(),
        );
        let host_key = self.host_key(&virtual_key);
        let mut annotations = host_annotations(kind, virtual_meta);
        if let Some(uid) = self.ownership().cluster_uid() {
            annotations.insert(CLUSTER_UID_ANNOTATION.to_owned(), uid.to_owned());
        }
        ObjectMeta {
            name: Some(host_key.name),
            namespace: host_key.namespace,
            labels: Some(host_labels(
                self.ownership(),
                virtual_meta.namespace.as_deref(),
                virtual_meta.labels.as_ref(),
            )),
            annotations: Some(annotations),
            ..ObjectMeta::default()
        }
    }
}

/// Translator for namespaced kinds: every virtual namespace lands in one host namespace, names
/// through [`host_name`].
#[derive(Clone, Debug)]
pub struct NamespacedTranslator {
    ownership: Ownership,
    host_namespace: String,
}

impl NamespacedTranslator {
    /// Translator into `host_namespace` (the namespace the virtual cluster runs in) for `ownership`.
    pub fn new(ownership: Ownership, host_namespace: impl Into<String>) -> Self {
        Self {
            ownership,
            host_namespace: host_namespace.into(),
        }
    }

    /// The host namespace all virtual namespaces land in.
    pub fn host_namespace(&self) -> &str {
        &self.host_namespace
    }
}

impl NameTranslator for NamespacedTranslator {
    /// `ns/name` -> `<host namespace>/host_name(ns, name)`. A key without a namespace (a bug in
    /// the caller) is treated as namespace `""`: it gets a hashed name that cannot collide with any
    /// real key.
    fn host_key(&self, virtual_key: &VirtualKey) -> HostKey {
        let ns = virtual_key.namespace.as_deref().unwrap_or_default();
        HostKey::namespaced(self.host_namespace.clone(), host_name(ns, &virtual_key.name))
    }

    /// Requires the ownership label and both the object-name and object-namespace annotations.
    fn virtual_key(&self, host: &ObjectMeta) -> Option<VirtualKey> {
        let (name, namespace) = owned_annotations(&self.ownership, host)?;
        Some(VirtualKey::namespaced(namespace?, name))
    }

    fn ownership(&self) -> &Ownership {
        &self.ownership
    }
}

/// Where the namespaced virtual objects of a virtual cluster land on the host.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NamespaceMapping {
    /// Every virtual namespace lands in `host_namespace`; names through [`host_name`].
    Single {
        /// The one host namespace (the namespace the virtual cluster runs in).
        host_namespace: String,
    },
    /// Each virtual namespace lands in a host namespace of its own
    /// ([`host_namespace_name`]`(instance, namespace)`); object names are kept, except the names
    /// the host's control plane puts in every namespace ([`per_namespace_name`]).
    PerNamespace {
        /// The vcsync instance name, first part of every host namespace name.
        instance: String,
    },
}

impl NamespaceMapping {
    /// Host namespace of the objects of `virtual_namespace`.
    pub fn host_namespace(&self, virtual_namespace: &str) -> String {
        match self {
            Self::Single { host_namespace } => host_namespace.clone(),
            Self::PerNamespace { instance } => host_namespace_name(instance, virtual_namespace),
        }
    }

    /// Host name of the namespaced virtual object `virtual_namespace/name`.
    pub fn host_object_name(&self, virtual_namespace: &str, name: &str) -> String {
        match self {
            Self::Single { .. } => host_name(virtual_namespace, name),
            Self::PerNamespace { .. } => per_namespace_name(name),
        }
    }

    /// Host key of the namespaced virtual object `virtual_namespace/name`.
    pub fn host_key(&self, virtual_namespace: &str, name: &str) -> HostKey {
        HostKey::namespaced(
            self.host_namespace(virtual_namespace),
            self.host_object_name(virtual_namespace, name),
        )
    }

    /// Whether each virtual namespace has a host namespace of its own.
    pub fn is_per_namespace(&self) -> bool {
        matches!(self, Self::PerNamespace { .. })
    }

    /// The translator for namespaced kinds in this mapping.
    pub fn translator(&self, ownership: Ownership) -> Box<dyn NameTranslator> {
        match self {
            Self::Single { host_namespace } => {
                Box::new(NamespacedTranslator::new(ownership, host_namespace.clone()))
            }
            Self::PerNamespace { .. } => Box::new(PerNamespaceTranslator::new(ownership)),
        }
    }
}

/// Translator for namespaced kinds in the per-namespace mapping: `ns/name` lands in
/// `host_namespace_name(instance, ns)` under its own name, or, for a name the host's control plane
/// puts in every namespace (`kube-root-ca.crt`), under [`per_namespace_name`]'s translation.
#[derive(Clone, Debug)]
pub struct PerNamespaceTranslator {
    ownership: Ownership,
}

impl PerNamespaceTranslator {
    /// Translator for `ownership`; the instance of `ownership` is part of every host namespace.
    pub fn new(ownership: Ownership) -> Self {
        Self { ownership }
    }
}

impl NameTranslator for PerNamespaceTranslator {
    /// `ns/name` -> `host_namespace_name(instance, ns)/per_namespace_name(name)`, the same as
    /// [`NamespaceMapping::host_key`]. A key without a namespace (a bug in the caller) is treated
    /// as namespace `""`, which gets a hashed namespace no real one has.
    fn host_key(&self, virtual_key: &VirtualKey) -> HostKey {
        let ns = virtual_key.namespace.as_deref().unwrap_or_default();
        HostKey::namespaced(
            host_namespace_name(self.ownership.instance(), ns),
            per_namespace_name(&virtual_key.name),
        )
    }

    /// Same as [`NamespacedTranslator`]: the ownership label and both object annotations.
    fn virtual_key(&self, host: &ObjectMeta) -> Option<VirtualKey> {
        let (name, namespace) = owned_annotations(&self.ownership, host)?;
        Some(VirtualKey::namespaced(namespace?, name))
    }

    fn ownership(&self) -> &Ownership {
        &self.ownership
    }
}

/// Translator for virtual namespaces in the per-namespace mapping: virtual namespace `ns` is the
/// host namespace [`host_namespace_name`]`(instance, ns)` (cluster-scoped keys on both sides).
#[derive(Clone, Debug)]
pub struct HostNamespaceTranslator {
    ownership: Ownership,
}

impl HostNamespaceTranslator {
    /// Translator for `ownership`.
    pub fn new(ownership: Ownership) -> Self {
        Self { ownership }
    }
}

impl NameTranslator for HostNamespaceTranslator {
    /// `ns` -> `host_namespace_name(instance, ns)`, the namespace every object of `ns` lands in.
    fn host_key(&self, virtual_key: &VirtualKey) -> HostKey {
        HostKey::cluster(host_namespace_name(self.ownership.instance(), &virtual_key.name))
    }

    /// As for other cluster-scoped kinds: the ownership label and the object-name annotation only.
    fn virtual_key(&self, host: &ObjectMeta) -> Option<VirtualKey> {
        cluster_virtual_key(&self.ownership, host)
    }

    fn ownership(&self) -> &Ownership {
        &self.ownership
    }
}

/// Translator for cluster-scoped kinds: names through [`host_cluster_name`], no host namespace.
#[derive(Clone, Debug)]
pub struct ClusterScopedTranslator {
    ownership: Ownership,
}

impl ClusterScopedTranslator {
    /// Translator for `ownership`; the instance name is part of every host name, because
    /// cluster-scoped host objects are shared by all virtual clusters on the host.
    pub fn new(ownership: Ownership) -> Self {
        Self { ownership }
    }
}

impl NameTranslator for ClusterScopedTranslator {
    /// `name` -> `host_cluster_name(instance, name)`; a namespace on the key is ignored, since
    /// cluster-scoped kinds have none.
    fn host_key(&self, virtual_key: &VirtualKey) -> HostKey {
        HostKey::cluster(host_cluster_name(self.ownership.instance(), &virtual_key.name))
    }

    /// Requires the ownership label and the object-name annotation; an object-namespace annotation
    /// means the object was made for a namespaced kind, so it is not ours to map here.
    fn virtual_key(&self, host: &ObjectMeta) -> Option<VirtualKey> {
        cluster_virtual_key(&self.ownership, host)
    }

    fn ownership(&self) -> &Ownership {
        &self.ownership
    }
}

/// The key of a cluster-scoped virtual object behind an owned host object: the ownership label
/// and the object-name annotation; an object-namespace annotation means the object was made for
/// a namespaced kind, so it maps to nothing here.
fn cluster_virtual_key(own: &Ownership, host: &ObjectMeta) -> Option<VirtualKey> {
    match owned_annotations(own, host)? {
        (name, None) => Some(VirtualKey::cluster(name)),
        (_, Some(_)) => None,
    }
}

/// Object name and namespace annotations of a host object owned by `own`; None if not owned or
/// the name annotation is missing or empty. An empty namespace annotation counts as absent.
fn owned_annotations(own: &Ownership, host: &ObjectMeta) -> Option<(String, Option<String>)> {
    if !own.owns(host) {
        return None;
    }
    let annotations = host.annotations.as_ref()?;
    let name = annotations
        .get(OBJECT_NAME_ANNOTATION)
        .filter(|n| !n.is_empty())?;
    let namespace = annotations
        .get(OBJECT_NAMESPACE_ANNOTATION)
        .filter(|n| !n.is_empty())
        .cloned();
    Some((name.clone(), namespace))
}
