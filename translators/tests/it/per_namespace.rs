//! Host names in the per-namespace mapping: names are kept, except the ones the host's control
//! plane puts in every namespace, which must never land on the host's own objects.

use std::collections::HashMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use proptest::prelude::*;
use rstest::rstest;
use vcsync_translators::names::is_dns_label;
use vcsync_translators::{
    CONTROL_PLANE_NAMES, HostKey, NameTranslator, NamespaceMapping, Ownership, PER_NAMESPACE_ESCAPE,
    PerNamespaceTranslator, VirtualKey, host_name, per_namespace_name,
};

fn mapping() -> NamespaceMapping {
    NamespaceMapping::PerNamespace {
        instance: "tenant-a".into(),
    }
}

fn translator() -> PerNamespaceTranslator {
    PerNamespaceTranslator::new(Ownership::new("tenant-a").unwrap())
}

/// Whether `s` is a DNS-1123 subdomain: dot-separated DNS-1123 labels, at most 253 characters.
fn is_dns_subdomain(s: &str) -> bool {
    s.len() <= 253 && s.split('.').all(is_dns_label)
}

/// Whether `s` is a DNS-1035 label (Service names): a DNS-1123 label starting with a letter.
fn is_dns1035_label(s: &str) -> bool {
    is_dns_label(s) && s.as_bytes()[0].is_ascii_lowercase()
}

/// Checks the guarantees of one per-namespace host name and returns it.
fn check(name: &str) -> String {
    let host = per_namespace_name(name);
    assert_eq!(host, per_namespace_name(name), "not deterministic");
    assert!(
        !CONTROL_PLANE_NAMES.contains(&host.as_str()),
        "{name:?} lands on the host's own {host:?}"
    );
    if is_dns_label(name) {
        assert!(is_dns_label(&host), "label {name:?} gave {host:?}");
    }
    if is_dns1035_label(name) {
        assert!(is_dns1035_label(&host), "DNS-1035 label {name:?} gave {host:?}");
    }
    if is_dns_subdomain(name) {
        assert!(is_dns_subdomain(&host), "subdomain {name:?} gave {host:?}");
    }
    host
}

/// Panics unless the names map to distinct host names.
fn assert_injective<'a>(names: impl IntoIterator<Item = &'a str>) {
    let mut seen: HashMap<String, &str> = HashMap::new();
    for name in names {
        let host = check(name);
        if let Some(other) = seen.insert(host.clone(), name) {
            assert_eq!(other, name, "{other:?} and {name:?} both map to {host:?}");
        }
    }
}

#[rstest]
#[case::root_ca("kube-root-ca.crt", "vcsync-x-kube-root-ca.crt")]
#[case::default_service_account("default", "vcsync-x-default")]
#[case::openshift_service_ca("openshift-service-ca.crt", "vcsync-x-openshift-service-ca.crt")]
#[case::kept("web", "web")]
#[case::kept_dotted("app.config", "app.config")]
#[case::kept_like_the_single_form("default-x-team", "default-x-team")]
#[case::kept_unlike_the_prefix("vcsync-default", "vcsync-default")]
#[case::escaped("vcsync-x-default", "vcsync-x-vcsync-x-default")]
#[case::escaped_twice("vcsync-x-vcsync-x-a", "vcsync-x-vcsync-x-vcsync-x-a")]
#[case::escaped_hashed_look("vcsync-x-h-a", "vcsync-x-vcsync-x-h-a")]
fn per_namespace_names(#[case] name: &str, #[case] expected: &str) {
    assert_eq!(check(name), expected);
}

#[test]
fn control_plane_names_never_map_onto_themselves() {
    for name in CONTROL_PLANE_NAMES {
        let host = check(name);
        assert_ne!(host, name);
        assert!(host.starts_with(PER_NAMESPACE_ESCAPE));
        // The prefix itself keeps the mapping injective, so it must not begin a reserved name.
        assert!(!name.starts_with(PER_NAMESPACE_ESCAPE));
    }
}

#[test]
fn escaped_names_past_the_label_limit_are_hashed() {
    let long = format!(
        "{PER_NAMESPACE_ESCAPE}{}",
        "a".repeat(63 - PER_NAMESPACE_ESCAPE.len())
    );
    let host = check(&long);
    assert!(host.starts_with("vcsync-x-h-aaaa"), "{host}");
    assert_eq!(host.len(), 63);
    // A label that still fits after the prefix is only prefixed.
    let fits = format!(
        "{PER_NAMESPACE_ESCAPE}{}",
        "a".repeat(63 - 2 * PER_NAMESPACE_ESCAPE.len())
    );
    assert_eq!(check(&fits), format!("{PER_NAMESPACE_ESCAPE}{fits}"));
    // A subdomain has up to 253 characters.
    let dotted = format!("{PER_NAMESPACE_ESCAPE}a.{}", "b".repeat(100));
    assert_eq!(check(&dotted), format!("{PER_NAMESPACE_ESCAPE}{dotted}"));
    let dotted = format!("{PER_NAMESPACE_ESCAPE}a.{}", "b".repeat(250));
    assert!(is_dns_label(&check(&dotted)));
    // A subdomain whose first label would outgrow 63 characters.
    let first_label_long = "vcsync-x-h-vcsync-x-defaultvcsync-x-openshift-service-ca.crt";
    assert!(is_dns_label(&check(first_label_long)));
    // The hashed form is not the escaped form of the name a tenant could give it.
    let hashed = check(&long);
    let forged = hashed.strip_prefix(PER_NAMESPACE_ESCAPE).unwrap();
    assert_injective([long.as_str(), forged, hashed.as_str()]);
}

/// Names near every edge of the scheme: control-plane names, the prefix, the hashed marker, and
/// their combinations, in every combination of two pieces.
#[test]
fn adversarial_names_are_injective() {
    let long = "a".repeat(60);
    let pieces = [
        "",
        "a",
        "h-a",
        "default",
        "kube-root-ca.crt",
        "openshift-service-ca.crt",
        PER_NAMESPACE_ESCAPE,
        "vcsync-x-h-",
        "vcsync-",
        "x-",
        "-x-",
        long.as_str(),
    ];
    let mut names = Vec::new();
    for a in pieces {
        for b in pieces {
            names.push(format!("{a}{b}"));
            names.push(format!("{a}{PER_NAMESPACE_ESCAPE}{b}"));
        }
    }
    names.sort();
    names.dedup();
    let hosts: Vec<String> = names.iter().map(|n| per_namespace_name(n)).collect();
    // The host names too, as virtual names: a tenant can name an object after another's host name.
    assert_injective(names.iter().chain(&hosts).map(String::as_str));
}

#[test]
fn mapping_and_translator_agree_on_control_plane_names() {
    for name in CONTROL_PLANE_NAMES.into_iter().chain(["web", "vcsync-x-web"]) {
        let expected = HostKey::namespaced("tenant-a-x-shop", per_namespace_name(name));
        assert_eq!(mapping().host_key("shop", name), expected);
        assert_eq!(mapping().host_object_name("shop", name), expected.name);
        let key = VirtualKey::namespaced("shop", name);
        assert_eq!(translator().host_key(&key), expected);
        let boxed = mapping().translator(Ownership::new("tenant-a").unwrap());
        assert_eq!(boxed.host_key(&key), expected);
        // The reverse lookup reads the annotations, so it finds the virtual object again.
        let meta = ObjectMeta {
            name: Some(name.into()),
            namespace: Some("shop".into()),
            ..ObjectMeta::default()
        };
        let host = translator().host_metadata("ConfigMap", &meta);
        assert_eq!(host.name.as_deref(), Some(expected.name.as_str()));
        assert_eq!(translator().virtual_key(&host), Some(key));
    }
}

#[test]
fn the_single_mapping_never_gives_a_control_plane_name() {
    for name in CONTROL_PLANE_NAMES {
        for ns in ["default", "kube-system", "team"] {
            assert!(!CONTROL_PLANE_NAMES.contains(&host_name(ns, name).as_str()));
        }
    }
}

fn adversarial_name() -> impl Strategy<Value = String> {
    let piece = prop::sample::select(vec![
        "a",
        "h",
        "-",
        ".",
        "x",
        "default",
        "kube-root-ca.crt",
        "openshift-service-ca.crt",
        PER_NAMESPACE_ESCAPE,
        "vcsync-x-h-",
    ]);
    prop::collection::vec(piece, 1..12).prop_map(|p| p.concat())
}

proptest! {
    #[test]
    fn per_namespace_names_are_valid_and_injective(
        names in prop::collection::vec(
            prop_oneof![
                "[a-z0-9]([a-z0-9.-]{0,80}[a-z0-9])?",
                "vcsync-x-[a-z0-9]([a-z0-9-]{0,60}[a-z0-9])?",
                adversarial_name(),
            ],
            2..60,
        )
    ) {
        let mut names = names;
        names.sort();
        names.dedup();
        assert_injective(names.iter().map(String::as_str));
    }

    #[test]
    fn arbitrary_input_never_gives_a_control_plane_name(name in "\\PC{0,300}") {
        let host = per_namespace_name(&name);
        prop_assert!(!CONTROL_PLANE_NAMES.contains(&host.as_str()));
    }
}
