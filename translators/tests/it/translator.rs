//! Name translators: keys both ways and the full host metadata.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ManagedFieldsEntry, ObjectMeta, OwnerReference};
use proptest::prelude::*;
use rstest::rstest;
use vcsync_translators::{
    ClusterScopedTranslator, HostKey, HostNamespaceTranslator, MANAGED_BY_LABEL, NameTranslator,
    NamespaceMapping, NamespacedTranslator, OBJECT_NAME_ANNOTATION, OBJECT_NAMESPACE_ANNOTATION, Ownership,
    PerNamespaceTranslator, VirtualKey, per_namespace_name,
};

fn namespaced() -> NamespacedTranslator {
    NamespacedTranslator::new(Ownership::new("tenant-a").unwrap(), "vcluster-a")
}

fn cluster() -> ClusterScopedTranslator {
    ClusterScopedTranslator::new(Ownership::new("tenant-a").unwrap())
}

fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// A virtual object with everything a real one carries, most of which must not reach the host.
fn sample_meta() -> ObjectMeta {
    ObjectMeta {
        name: Some("web-7d4b9c8f6-abcde".into()),
        namespace: Some("shop".into()),
        uid: Some("6f1c9a52-8a3e-4d1b-9f7e-2c5b8d0e4a11".into()),
        resource_version: Some("4711".into()),
        generation: Some(3),
        generate_name: Some("web-7d4b9c8f6-".into()),
        labels: Some(map(&[
            ("app", "web"),
            ("pod-template-hash", "7d4b9c8f6"),
            ("vcsync.dev/managed-by", "someone-else"),
        ])),
        annotations: Some(map(&[
            (
                "kubectl.kubernetes.io/last-applied-configuration",
                "{\"apiVersion\":\"v1\"}",
            ),
            ("prometheus.io/scrape", "true"),
            ("vcsync.dev/object-name", "forged"),
        ])),
        owner_references: Some(vec![OwnerReference {
            api_version: "apps/v1".into(),
            kind: "ReplicaSet".into(),
            name: "web-7d4b9c8f6".into(),
            uid: "0a0b0c0d".into(),
            controller: Some(true),
            block_owner_deletion: Some(true),
        }]),
        finalizers: Some(vec!["example.com/cleanup".into()]),
        managed_fields: Some(vec![ManagedFieldsEntry {
            manager: Some("kube-controller-manager".into()),
            operation: Some("Update".into()),
            ..ManagedFieldsEntry::default()
        }]),
        ..ObjectMeta::default()
    }
}

#[test]
fn namespaced_host_metadata() {
    insta::assert_yaml_snapshot!(namespaced().host_metadata("Pod", &sample_meta()));
}

#[test]
fn cluster_scoped_host_metadata() {
    let meta = ObjectMeta {
        name: Some("fast.ssd".into()),
        uid: Some("77".into()),
        labels: Some(map(&[("tier", "gold")])),
        ..ObjectMeta::default()
    };
    insta::assert_yaml_snapshot!(cluster().host_metadata("StorageClass", &meta));
}

#[rstest]
#[case::plain(
    VirtualKey::namespaced("default", "web"),
    HostKey::namespaced("vcluster-a", "web-x-default")
)]
#[case::no_namespace(
    VirtualKey::cluster("web"),
    HostKey::namespaced("vcluster-a", "web-b3273abcb4")
)]
fn namespaced_host_keys(#[case] key: VirtualKey, #[case] expected: HostKey) {
    assert_eq!(namespaced().host_key(&key), expected);
    assert_eq!(namespaced().host_namespace(), "vcluster-a");
}

#[rstest]
#[case::plain(VirtualKey::cluster("fast"), HostKey::cluster("vcsync-tenant-a-x-fast"))]
#[case::namespace_ignored(
    VirtualKey::namespaced("x", "fast"),
    HostKey::cluster("vcsync-tenant-a-x-fast")
)]
fn cluster_host_keys(#[case] key: VirtualKey, #[case] expected: HostKey) {
    assert_eq!(cluster().host_key(&key), expected);
}

#[test]
fn keys_display_like_object_refs() {
    assert_eq!(
        VirtualKey::namespaced("default", "web").to_string(),
        "default/web"
    );
    assert_eq!(VirtualKey::cluster("fast").to_string(), "fast");
    assert_eq!(
        HostKey::namespaced("vcluster-a", "web-x-default").to_string(),
        "vcluster-a/web-x-default"
    );
    assert_eq!(HostKey::cluster("n").to_string(), "n");
}

fn host_meta(labels: &[(&str, &str)], annotations: &[(&str, &str)]) -> ObjectMeta {
    ObjectMeta {
        labels: Some(map(labels)),
        annotations: Some(map(annotations)),
        ..ObjectMeta::default()
    }
}

const OURS: (&str, &str) = (MANAGED_BY_LABEL, "tenant-a");

#[rstest]
#[case::owned(host_meta(&[OURS], &[(OBJECT_NAME_ANNOTATION, "web"), (OBJECT_NAMESPACE_ANNOTATION, "default")]), Some(VirtualKey::namespaced("default", "web")))]
#[case::other_instance(host_meta(&[(MANAGED_BY_LABEL, "tenant-b")], &[(OBJECT_NAME_ANNOTATION, "web"), (OBJECT_NAMESPACE_ANNOTATION, "default")]), None)]
#[case::unlabelled(host_meta(&[], &[(OBJECT_NAME_ANNOTATION, "web"), (OBJECT_NAMESPACE_ANNOTATION, "default")]), None)]
#[case::no_namespace(host_meta(&[OURS], &[(OBJECT_NAME_ANNOTATION, "web")]), None)]
#[case::empty_namespace(host_meta(&[OURS], &[(OBJECT_NAME_ANNOTATION, "web"), (OBJECT_NAMESPACE_ANNOTATION, "")]), None)]
#[case::no_name(host_meta(&[OURS], &[(OBJECT_NAMESPACE_ANNOTATION, "default")]), None)]
#[case::empty_name(host_meta(&[OURS], &[(OBJECT_NAME_ANNOTATION, ""), (OBJECT_NAMESPACE_ANNOTATION, "default")]), None)]
#[case::no_annotations(ObjectMeta { labels: Some(map(&[OURS])), ..ObjectMeta::default() }, None)]
fn namespaced_virtual_keys(#[case] host: ObjectMeta, #[case] expected: Option<VirtualKey>) {
    assert_eq!(namespaced().virtual_key(&host), expected);
}

#[rstest]
#[case::owned(host_meta(&[OURS], &[(OBJECT_NAME_ANNOTATION, "fast")]), Some(VirtualKey::cluster("fast")))]
#[case::namespaced_object(host_meta(&[OURS], &[(OBJECT_NAME_ANNOTATION, "web"), (OBJECT_NAMESPACE_ANNOTATION, "default")]), None)]
#[case::other_instance(host_meta(&[(MANAGED_BY_LABEL, "tenant-b")], &[(OBJECT_NAME_ANNOTATION, "fast")]), None)]
#[case::no_name(host_meta(&[OURS], &[]), None)]
fn cluster_virtual_keys(#[case] host: ObjectMeta, #[case] expected: Option<VirtualKey>) {
    assert_eq!(cluster().virtual_key(&host), expected);
}

/// Translators are shared between controllers and tasks.
#[test]
fn translators_are_object_safe_and_shareable() {
    let translators: Vec<std::sync::Arc<dyn NameTranslator>> =
        vec![std::sync::Arc::new(namespaced()), std::sync::Arc::new(cluster())];
    assert!(translators.iter().all(|t| t.ownership().instance() == "tenant-a"));
}

proptest! {
    /// host_metadata followed by virtual_key gives the virtual key back, and the metadata names the
    /// host object host_key picks: the round trip the reconcile contract relies on.
    #[test]
    fn metadata_round_trip(ns in "[a-z0-9]([a-z0-9-]{0,20}[a-z0-9])?", name in "[a-z0-9]([a-z0-9.-]{0,80}[a-z0-9])?") {
        let key = VirtualKey::namespaced(ns.clone(), name.clone());
        let meta = ObjectMeta { name: Some(name.clone()), namespace: Some(ns), ..ObjectMeta::default() };
        let host = namespaced().host_metadata("ConfigMap", &meta);
        let host_key = namespaced().host_key(&key);
        prop_assert_eq!(host.name.as_ref(), Some(&host_key.name));
        prop_assert_eq!(host.namespace.as_ref(), host_key.namespace.as_ref());
        prop_assert!(namespaced().ownership().owns(&host));
        prop_assert_eq!(namespaced().virtual_key(&host), Some(key));

        let cluster_meta = ObjectMeta { name: Some(name.clone()), ..ObjectMeta::default() };
        let host = cluster().host_metadata("PersistentVolume", &cluster_meta);
        prop_assert_eq!(host.namespace.as_ref(), None);
        prop_assert_eq!(cluster().virtual_key(&host), Some(VirtualKey::cluster(name)));
    }
}

fn per_namespace() -> PerNamespaceTranslator {
    PerNamespaceTranslator::new(Ownership::new("tenant-a").unwrap())
}

#[test]
fn per_namespace_keeps_names_and_maps_namespaces() {
    let key = VirtualKey::namespaced("shop", "web");
    assert_eq!(
        per_namespace().host_key(&key),
        HostKey::namespaced("tenant-a-x-shop", "web")
    );
    let host = per_namespace().host_metadata("ConfigMap", &sample_meta());
    assert_eq!(host.name.as_deref(), Some("web-7d4b9c8f6-abcde"));
    assert_eq!(host.namespace.as_deref(), Some("tenant-a-x-shop"));
}

#[rstest]
#[case::owned(host_meta(&[OURS], &[(OBJECT_NAME_ANNOTATION, "web"), (OBJECT_NAMESPACE_ANNOTATION, "default")]), Some(VirtualKey::namespaced("default", "web")))]
#[case::other_instance(host_meta(&[(MANAGED_BY_LABEL, "tenant-b")], &[(OBJECT_NAME_ANNOTATION, "web"), (OBJECT_NAMESPACE_ANNOTATION, "default")]), None)]
#[case::no_namespace(host_meta(&[OURS], &[(OBJECT_NAME_ANNOTATION, "web")]), None)]
#[case::empty_name(host_meta(&[OURS], &[(OBJECT_NAME_ANNOTATION, ""), (OBJECT_NAMESPACE_ANNOTATION, "default")]), None)]
fn per_namespace_virtual_keys(#[case] host: ObjectMeta, #[case] expected: Option<VirtualKey>) {
    assert_eq!(per_namespace().virtual_key(&host), expected);
}

#[rstest]
#[case::single(
    NamespaceMapping::Single { host_namespace: "vcluster-a".into() },
    "vcluster-a",
    "web-x-shop"
)]
#[case::per_namespace(
    NamespaceMapping::PerNamespace { instance: "tenant-a".into() },
    "tenant-a-x-shop",
    "web"
)]
fn namespace_mappings(#[case] mapping: NamespaceMapping, #[case] ns: &str, #[case] name: &str) {
    assert_eq!(mapping.host_namespace("shop"), ns);
    assert_eq!(mapping.host_object_name("shop", "web"), name);
    assert_eq!(mapping.host_key("shop", "web"), HostKey::namespaced(ns, name));
    let translator = mapping.translator(Ownership::new("tenant-a").unwrap());
    assert_eq!(
        translator.host_key(&VirtualKey::namespaced("shop", "web")),
        mapping.host_key("shop", "web")
    );
    assert_eq!(mapping.is_per_namespace(), ns != "vcluster-a");
}

proptest! {
    /// The per-namespace round trip, as for the single namespace.
    #[test]
    fn per_namespace_round_trip(ns in "[a-z0-9]([a-z0-9-]{0,20}[a-z0-9])?", name in "[a-z0-9]([a-z0-9.-]{0,80}[a-z0-9])?") {
        let key = VirtualKey::namespaced(ns.clone(), name.clone());
        let meta = ObjectMeta { name: Some(name.clone()), namespace: Some(ns), ..ObjectMeta::default() };
        let host = per_namespace().host_metadata("ConfigMap", &meta);
        let host_key = per_namespace().host_key(&key);
        prop_assert_eq!(host.name.as_ref(), Some(&per_namespace_name(&name)));
        prop_assert_eq!(host.name.as_ref(), Some(&host_key.name));
        prop_assert_eq!(host.namespace.as_ref(), host_key.namespace.as_ref());
        prop_assert_eq!(per_namespace().virtual_key(&host), Some(key));
    }
}

#[test]
fn host_namespaces_of_virtual_namespaces() {
    let translator = HostNamespaceTranslator::new(Ownership::new("tenant-a").unwrap());
    assert_eq!(
        translator.host_key(&VirtualKey::cluster("shop")),
        HostKey::cluster("tenant-a-x-shop")
    );
    let virt = ObjectMeta {
        name: Some("shop".into()),
        ..ObjectMeta::default()
    };
    let host = translator.host_metadata("Namespace", &virt);
    assert_eq!(host.name.as_deref(), Some("tenant-a-x-shop"));
    assert_eq!(host.namespace, None);
    assert_eq!(translator.virtual_key(&host), Some(VirtualKey::cluster("shop")));
    // The host namespace is where the per-namespace mapping puts the objects of `shop`.
    let mapping = NamespaceMapping::PerNamespace {
        instance: "tenant-a".into(),
    };
    assert_eq!(Some(mapping.host_namespace("shop")), host.name);
}

#[test]
fn host_metadata_names_the_virtual_cluster_when_the_ownership_does() {
    let unstamped = namespaced().host_metadata("Pod", &sample_meta());
    assert!(
        !unstamped
            .annotations
            .unwrap()
            .contains_key(vcsync_translators::CLUSTER_UID_ANNOTATION)
    );
    let stamped = NamespacedTranslator::new(
        Ownership::new("tenant-a").unwrap().with_cluster_uid("vc-uid-1"),
        "vcluster-a",
    )
    .host_metadata("Pod", &sample_meta());
    assert_eq!(
        stamped.annotations.unwrap()[vcsync_translators::CLUSTER_UID_ANNOTATION],
        "vc-uid-1"
    );
}

#[test]
fn a_tenant_cannot_forge_the_cluster_uid() {
    let mut meta = sample_meta();
    meta.annotations
        .get_or_insert_default()
        .insert(vcsync_translators::CLUSTER_UID_ANNOTATION.into(), "forged".into());
    let host = namespaced().host_metadata("Pod", &meta);
    assert!(
        !host
            .annotations
            .unwrap()
            .contains_key(vcsync_translators::CLUSTER_UID_ANNOTATION)
    );
}

#[test]
fn a_host_copy_gives_back_the_virtual_metadata_it_was_made_from() {
    let virtual_meta = sample_meta();
    let host = NamespacedTranslator::new(
        Ownership::new("tenant-a").unwrap().with_cluster_uid("vc-1"),
        "vcluster-a",
    )
    .host_metadata("ConfigMap", &virtual_meta);
    let restored = vcsync_translators::virtual_metadata_from_host(&host).unwrap();
    assert_eq!(restored.name, virtual_meta.name);
    assert_eq!(restored.namespace, virtual_meta.namespace);
    assert_eq!(
        restored.labels,
        Some(map(&[("app", "web"), ("pod-template-hash", "7d4b9c8f6")])),
        "the tenant's labels, not vcsync's"
    );
    let annotations = restored.annotations.unwrap_or_default();
    assert!(
        annotations.keys().all(|k| !k.starts_with("vcsync.dev/")),
        "{annotations:?}"
    );
    assert!(restored.uid.is_none() && restored.owner_references.is_none());
    assert_eq!(
        vcsync_translators::virtual_metadata_from_host(&ObjectMeta::default()),
        None,
        "a copy that names no virtual object"
    );
}
