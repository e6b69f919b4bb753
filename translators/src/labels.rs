//! Labels, annotations and selectors, translated between virtual and host objects.
//!
//! All virtual namespaces share one host namespace, so a selector such as `app=web` would match
//! pods of every tenant namespace on the host. Host objects therefore carry the virtual namespace
//! in [`NAMESPACE_LABEL`] and every translated selector requires it, plus the ownership label so a
//! selector never reaches objects vcsync does not manage. Keys under [`RESERVED_PREFIX`] are dropped
//! from everything a tenant writes: a tenant cannot forge ownership or escape its namespace.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};

use crate::names::safe_label_value;
use crate::ownership::{
    MANAGED_BY_LABEL, NAMESPACE_LABEL, OBJECT_KIND_ANNOTATION, OBJECT_NAME_ANNOTATION,
    OBJECT_NAMESPACE_ANNOTATION, OBJECT_UID_ANNOTATION, Ownership, RESERVED_PREFIX,
};

/// Client-side state of `kubectl apply` in the virtual cluster: large, and meaningless on the host.
const LAST_APPLIED_ANNOTATION: &str = "kubectl.kubernetes.io/last-applied-configuration";

/// Whether `key` (label or annotation) belongs to vcsync and must never be copied from a tenant.
pub fn is_reserved_key(key: &str) -> bool {
    key.starts_with(RESERVED_PREFIX)
}

/// Labels of the host object for a virtual object in `virtual_namespace` (None: cluster-scoped).
///
/// Virtual labels are carried over unchanged except reserved keys, which are dropped; then
/// [`MANAGED_BY_LABEL`] and, for namespaced objects, [`NAMESPACE_LABEL`] are set.
pub fn host_labels(
    own: &Ownership,
    virtual_namespace: Option<&str>,
    virtual_labels: Option<&BTreeMap<String, String>>,
) -> BTreeMap<String, String> {
    let mut labels = without_reserved(virtual_labels);
    add_markers(&mut labels, own, virtual_namespace);
    labels
}

/// Labels of the virtual object for a host object: the host labels without vcsync's keys.
pub fn virtual_labels_from_host(host_labels: Option<&BTreeMap<String, String>>) -> BTreeMap<String, String> {
    without_reserved(host_labels)
}

/// The metadata of the virtual object a host copy was made from, as far as the copy tells (for
/// restoring a lost virtual cluster): name and namespace from its annotations, labels and
/// annotations without vcsync's keys. UID, owner references, finalizers and the last-applied
/// configuration are not on the copy and are lost. None if the copy names no virtual object.
pub fn virtual_metadata_from_host(host: &ObjectMeta) -> Option<ObjectMeta> {
    let annotations = host.annotations.as_ref()?;
    Some(ObjectMeta {
        name: Some(annotations.get(OBJECT_NAME_ANNOTATION)?.clone()),
        namespace: annotations.get(OBJECT_NAMESPACE_ANNOTATION).cloned(),
        labels: Some(without_reserved(host.labels.as_ref())).filter(|l| !l.is_empty()),
        annotations: Some(without_reserved(Some(annotations))).filter(|a| !a.is_empty()),
        ..ObjectMeta::default()
    })
}

/// Annotations of the host object for a virtual object of `kind`.
///
/// Virtual annotations minus reserved keys and minus `kubectl.kubernetes.io/last-applied-configuration`,
/// plus the object-name, object-namespace (namespaced only), object-uid (when the virtual object has
/// one) and object-kind annotations through which host events map back to the virtual object.
pub fn host_annotations(kind: &str, virtual_meta: &ObjectMeta) -> BTreeMap<String, String> {
    let mut annotations = without_reserved(virtual_meta.annotations.as_ref());
    annotations.remove(LAST_APPLIED_ANNOTATION);
    annotations.insert(
        OBJECT_NAME_ANNOTATION.to_owned(),
        virtual_meta.name.clone().unwrap_or_default(),
    );
    if let Some(ns) = &virtual_meta.namespace {
        annotations.insert(OBJECT_NAMESPACE_ANNOTATION.to_owned(), ns.clone());
    }
    if let Some(uid) = &virtual_meta.uid {
        annotations.insert(OBJECT_UID_ANNOTATION.to_owned(), uid.clone());
    }
    annotations.insert(OBJECT_KIND_ANNOTATION.to_owned(), kind.to_owned());
    annotations
}

/// A map-style selector (Service `spec.selector`, ReplicationController) of `virtual_namespace`,
/// translated for the host: same keys minus reserved ones, plus namespace and ownership labels.
pub fn host_map_selector(
    own: &Ownership,
    virtual_namespace: &str,
    selector: &BTreeMap<String, String>,
) -> BTreeMap<String, String> {
    let mut labels = without_reserved(Some(selector));
    add_markers(&mut labels, own, Some(virtual_namespace));
    labels
}

/// A `LabelSelector` (Deployments, PDBs, affinity, network policies) of `virtual_namespace`,
/// translated for the host.
///
/// `matchLabels` and `matchExpressions` are kept without reserved keys (an expression list left
/// empty becomes None, as the API server would return it), and `matchLabels` gains the
/// namespace and ownership labels, so the host selector matches exactly the translated objects of
/// that virtual namespace. An empty virtual selector (everything in the namespace) becomes "every
/// object of this virtual namespace".
pub fn host_label_selector(
    own: &Ownership,
    virtual_namespace: &str,
    selector: &LabelSelector,
) -> LabelSelector {
    let mut match_labels = without_reserved(selector.match_labels.as_ref());
    add_markers(&mut match_labels, own, Some(virtual_namespace));
    let match_expressions: Vec<_> = selector
        .match_expressions
        .iter()
        .flatten()
        .filter(|e| !is_reserved_key(&e.key))
        .cloned()
        .collect();
    // The API server omits an empty list, so an empty one here would never compare equal to the
    // observed host object and every reconcile would write.
    let match_expressions = (!match_expressions.is_empty()).then_some(match_expressions);
    LabelSelector {
        match_labels: Some(match_labels),
        match_expressions,
    }
}

/// Copy of `map` without reserved keys.
fn without_reserved(map: Option<&BTreeMap<String, String>>) -> BTreeMap<String, String> {
    map.into_iter()
        .flatten()
        .filter(|(k, _)| !is_reserved_key(k))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

/// Sets the ownership label and, for namespaced objects, the virtual-namespace label.
fn add_markers(labels: &mut BTreeMap<String, String>, own: &Ownership, virtual_namespace: Option<&str>) {
    labels.insert(MANAGED_BY_LABEL.to_owned(), own.instance().to_owned());
    if let Some(ns) = virtual_namespace {
        labels.insert(NAMESPACE_LABEL.to_owned(), safe_label_value(ns));
    }
}
