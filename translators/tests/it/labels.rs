//! Labels, annotations, selectors and the ownership marker.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, LabelSelectorRequirement, ObjectMeta};
use proptest::prelude::*;
use rstest::rstest;
use vcsync_translators::{
    Error, MANAGED_BY_LABEL, NAMESPACE_LABEL, OBJECT_KIND_ANNOTATION, OBJECT_NAME_ANNOTATION,
    OBJECT_NAMESPACE_ANNOTATION, OBJECT_UID_ANNOTATION, Ownership, host_annotations, host_label_selector,
    host_labels, host_map_selector, is_reserved_key, safe_label_value, virtual_labels_from_host,
};

fn own() -> Ownership {
    Ownership::new("tenant-a").unwrap()
}

fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[rstest]
#[case::simple("tenant-a")]
#[case::one_char("a")]
#[case::label_value_chars("Team_A.v1-2")]
#[case::max_len(&"a".repeat(63))]
fn valid_instances(#[case] instance: &str) {
    let own = Ownership::new(instance).unwrap();
    assert_eq!(own.instance(), instance);
    assert_eq!(own.label_selector(), format!("vcsync.dev/managed-by={instance}"));
}

#[rstest]
#[case::empty("", "must not be empty")]
#[case::too_long(&"a".repeat(64), "64 characters")]
#[case::slash("a/b", "valid label value")]
#[case::leading_dash("-a", "valid label value")]
#[case::trailing_dot("a.", "valid label value")]
#[case::space("a b", "valid label value")]
fn invalid_instances(#[case] instance: &str, #[case] reason_part: &str) {
    let err = Ownership::new(instance).unwrap_err();
    let Error::InvalidInstance {
        instance: got,
        reason,
    } = &err;
    assert_eq!(got, instance);
    assert!(reason.contains(reason_part), "{reason:?}");
    assert!(err.to_string().contains("invalid vcsync instance name"), "{err}");
}

#[rstest]
#[case::ours(Some(map(&[(MANAGED_BY_LABEL, "tenant-a")])), true)]
#[case::other_instance(Some(map(&[(MANAGED_BY_LABEL, "tenant-b")])), false)]
#[case::prefix_of_ours(Some(map(&[(MANAGED_BY_LABEL, "tenant")])), false)]
#[case::no_label(Some(map(&[("app", "web")])), false)]
#[case::no_labels(None, false)]
fn ownership_is_the_label(#[case] labels: Option<BTreeMap<String, String>>, #[case] owned: bool) {
    let meta = ObjectMeta {
        labels,
        ..ObjectMeta::default()
    };
    assert_eq!(own().owns(&meta), owned);
}

#[rstest]
#[case::ours("vcsync.dev/managed-by", true)]
#[case::any_under_prefix("vcsync.dev/anything", true)]
#[case::subdomain_is_not_ours("sub.vcsync.dev/managed-by", false)]
#[case::similar("vcsync.dev.evil/x", false)]
#[case::plain("app", false)]
fn reserved_keys(#[case] key: &str, #[case] reserved: bool) {
    assert_eq!(is_reserved_key(key), reserved);
}

#[test]
fn tenant_cannot_forge_ownership_or_namespace() {
    let virtual_labels = map(&[
        ("app", "web"),
        (MANAGED_BY_LABEL, "tenant-b"),
        (NAMESPACE_LABEL, "kube-system"),
        ("vcsync.dev/other", "x"),
    ]);
    let labels = host_labels(&own(), Some("default"), Some(&virtual_labels));
    assert_eq!(
        labels,
        map(&[
            ("app", "web"),
            (MANAGED_BY_LABEL, "tenant-a"),
            (NAMESPACE_LABEL, "default")
        ])
    );
}

#[rstest]
#[case::namespaced(Some("default"), map(&[("app", "web"), (MANAGED_BY_LABEL, "tenant-a"), (NAMESPACE_LABEL, "default")]))]
#[case::cluster_scoped(None, map(&[("app", "web"), (MANAGED_BY_LABEL, "tenant-a")]))]
#[case::namespace_made_safe(Some("ns-0123456789"), map(&[("app", "web"), (MANAGED_BY_LABEL, "tenant-a"), (NAMESPACE_LABEL, &safe_label_value("ns-0123456789"))]))]
fn host_labels_add_markers(#[case] ns: Option<&str>, #[case] expected: BTreeMap<String, String>) {
    assert_eq!(host_labels(&own(), ns, Some(&map(&[("app", "web")]))), expected);
}

#[test]
fn host_labels_without_virtual_labels() {
    assert_eq!(
        host_labels(&own(), None, None),
        map(&[(MANAGED_BY_LABEL, "tenant-a")])
    );
}

#[test]
fn virtual_labels_from_host_drops_ours() {
    let host = map(&[
        ("app", "web"),
        (MANAGED_BY_LABEL, "tenant-a"),
        (NAMESPACE_LABEL, "default"),
    ]);
    assert_eq!(virtual_labels_from_host(Some(&host)), map(&[("app", "web")]));
    assert_eq!(virtual_labels_from_host(None), BTreeMap::new());
}

fn label_map() -> impl Strategy<Value = BTreeMap<String, String>> {
    prop::collection::btree_map(
        prop_oneof![
            "[a-z]{1,8}",
            "vcsync\\.dev/[a-z-]{1,12}",
            "[a-z]{1,5}\\.io/[a-z]{1,5}"
        ],
        "[a-z0-9]{0,8}",
        0..8,
    )
}

proptest! {
    #[test]
    fn label_round_trip_keeps_non_reserved(labels in label_map(), ns in proptest::option::of("[a-z]{1,10}")) {
        let host = host_labels(&own(), ns.as_deref(), Some(&labels));
        prop_assert_eq!(host.get(MANAGED_BY_LABEL).map(String::as_str), Some("tenant-a"));
        prop_assert_eq!(host.get(NAMESPACE_LABEL), ns.as_ref());
        let expected: BTreeMap<String, String> =
            labels.into_iter().filter(|(k, _)| !is_reserved_key(k)).collect();
        prop_assert_eq!(virtual_labels_from_host(Some(&host)), expected);
    }

    #[test]
    fn map_selectors_select_within_the_namespace(selector in label_map(), ns in "[a-z]{1,10}") {
        let host = host_map_selector(&own(), &ns, &selector);
        prop_assert_eq!(host.get(NAMESPACE_LABEL), Some(&ns));
        prop_assert_eq!(host.get(MANAGED_BY_LABEL).map(String::as_str), Some("tenant-a"));
        // The translated selector matches the translated labels of any object it matched virtually.
        let object_labels = host_labels(&own(), Some(&ns), Some(&selector));
        prop_assert!(host.iter().all(|(k, v)| object_labels.get(k) == Some(v)));
    }
}

#[test]
fn annotations_carry_the_virtual_identity() {
    let meta = ObjectMeta {
        name: Some("web".into()),
        namespace: Some("default".into()),
        uid: Some("1234".into()),
        annotations: Some(map(&[
            ("team", "a"),
            ("kubectl.kubernetes.io/last-applied-configuration", "{}"),
            (OBJECT_NAME_ANNOTATION, "forged"),
            ("vcsync.dev/other", "x"),
        ])),
        ..ObjectMeta::default()
    };
    assert_eq!(
        host_annotations("Pod", &meta),
        map(&[
            ("team", "a"),
            (OBJECT_NAME_ANNOTATION, "web"),
            (OBJECT_NAMESPACE_ANNOTATION, "default"),
            (OBJECT_UID_ANNOTATION, "1234"),
            (OBJECT_KIND_ANNOTATION, "Pod"),
        ])
    );
}

#[test]
fn annotations_of_cluster_scoped_objects_without_uid() {
    let meta = ObjectMeta {
        name: Some("fast".into()),
        ..ObjectMeta::default()
    };
    assert_eq!(
        host_annotations("StorageClass", &meta),
        map(&[
            (OBJECT_NAME_ANNOTATION, "fast"),
            (OBJECT_KIND_ANNOTATION, "StorageClass")
        ])
    );
}

#[test]
fn map_selector_drops_reserved_keys() {
    let selector = map(&[
        ("app", "web"),
        (MANAGED_BY_LABEL, "tenant-b"),
        (NAMESPACE_LABEL, "other"),
    ]);
    assert_eq!(
        host_map_selector(&own(), "default", &selector),
        map(&[
            ("app", "web"),
            (MANAGED_BY_LABEL, "tenant-a"),
            (NAMESPACE_LABEL, "default")
        ])
    );
}

fn requirement(key: &str, operator: &str, values: &[&str]) -> LabelSelectorRequirement {
    LabelSelectorRequirement {
        key: key.into(),
        operator: operator.into(),
        values: Some(values.iter().map(|v| v.to_string()).collect()),
    }
}

#[rstest]
#[case::empty_selects_the_namespace(LabelSelector::default(), map(&[]), None)]
#[case::match_labels(
    LabelSelector { match_labels: Some(map(&[("app", "web")])), match_expressions: None },
    map(&[("app", "web")]),
    None,
)]
#[case::expressions_kept(
    LabelSelector { match_labels: None, match_expressions: Some(vec![requirement("tier", "In", &["a", "b"])]) },
    map(&[]),
    Some(vec![requirement("tier", "In", &["a", "b"])]),
)]
#[case::reserved_dropped_everywhere(
    LabelSelector {
        match_labels: Some(map(&[("app", "web"), (NAMESPACE_LABEL, "kube-system")])),
        match_expressions: Some(vec![
            requirement(MANAGED_BY_LABEL, "NotIn", &["tenant-a"]),
            requirement("tier", "Exists", &[]),
        ]),
    },
    map(&[("app", "web")]),
    Some(vec![requirement("tier", "Exists", &[])]),
)]
#[case::empty_expressions_are_omitted(
    LabelSelector { match_labels: None, match_expressions: Some(vec![]) },
    map(&[]),
    None,
)]
#[case::only_reserved_expressions(
    LabelSelector { match_labels: None, match_expressions: Some(vec![requirement(MANAGED_BY_LABEL, "Exists", &[])]) },
    map(&[]),
    None,
)]
fn label_selectors(
    #[case] selector: LabelSelector,
    #[case] expected_labels: BTreeMap<String, String>,
    #[case] expected_expressions: Option<Vec<LabelSelectorRequirement>>,
) {
    let mut labels = expected_labels;
    labels.insert(MANAGED_BY_LABEL.into(), "tenant-a".into());
    labels.insert(NAMESPACE_LABEL.into(), "default".into());
    let host = host_label_selector(&own(), "default", &selector);
    assert_eq!(
        host,
        LabelSelector {
            match_labels: Some(labels),
            match_expressions: expected_expressions
        }
    );
}
