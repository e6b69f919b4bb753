//! Host names: examples, pinned hashes, and the properties the syncer relies on (validity,
//! determinism, injectivity).

use std::collections::HashMap;

use proptest::prelude::*;
use rstest::rstest;
use vcsync_translators::names::{is_dns_label, is_label_value};
use vcsync_translators::{MAX_NAME_LEN, host_cluster_name, host_name, host_namespace_name, safe_label_value};

/// Whether `s` ends in `-` and 10 lowercase hex characters, the hash suffix of hashed names.
fn has_hash_suffix(s: &str) -> bool {
    let Some((_, hash)) = s.rsplit_once('-') else {
        return false;
    };
    hash.len() == 10
        && hash
            .bytes()
            .all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(&c))
}

fn separator_count(s: &str) -> usize {
    s.as_bytes().windows(3).filter(|w| *w == b"-x-").count()
}

/// Checks the structural guarantees of one host name of the key (`ns`, `name`).
fn check_host_name(ns: &str, name: &str) -> String {
    let host = host_name(ns, name);
    assert!(
        is_dns_label(&host),
        "{host:?} of {ns}/{name} is not a DNS-1123 label"
    );
    assert!(host.len() <= MAX_NAME_LEN);
    assert_eq!(host, host_name(ns, name), "not deterministic");
    if host == format!("{name}-x-{ns}") {
        assert_eq!(
            separator_count(&host),
            1,
            "plain form {host:?} must contain -x- once"
        );
    } else {
        assert!(!host.contains("-x-"), "hashed form {host:?} must not contain -x-");
        assert!(has_hash_suffix(&host), "hashed form {host:?} must end in a hash");
    }
    if let Some(first) = name
        .chars()
        .next()
        .filter(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
    {
        assert!(host.starts_with(first), "{host:?} must start like {name:?}");
    }
    host
}

/// Asserts that distinct keys got distinct names.
fn assert_injective<'a>(names: impl IntoIterator<Item = (String, (&'a str, &'a str))>) {
    let mut seen: HashMap<String, (&str, &str)> = HashMap::new();
    for (host, key) in names {
        if let Some(other) = seen.insert(host.clone(), key) {
            assert_eq!(other, key, "{other:?} and {key:?} both map to {host:?}");
        }
    }
}

#[rstest]
#[case::plain("default", "web", "web-x-default")]
#[case::plain_digits("ns1", "0abc", "0abc-x-ns1")]
#[case::name_ends_in_x("default", "box", "box-x-default")]
#[case::namespace_starts_with_x("xns", "web", "web-x-xns")]
#[case::exactly_63("n", &"a".repeat(59), &format!("{}-x-n", "a".repeat(59)))]
fn plain_names(#[case] ns: &str, #[case] name: &str, #[case] expected: &str) {
    assert_eq!(check_host_name(ns, name), expected);
}

/// Pinned outputs: host names must never change between releases, or a new vcsync would no longer
/// find the objects the old one created.
#[rstest]
#[case::dotted("default", "my.app.config", "my-app-config-default-6f6a6c4307")]
#[case::separator_in_name("c", "a-x-b", "a--b-c-ad64adb224")]
#[case::separator_in_namespace("b-x-c", "a", "a-b--c-8ece2be2bc")]
#[case::name_ends_in_dash_x("b", "a-x", "a--b-c4138840d9")]
#[case::namespace_starts_with_x_dash("x-b", "a", "a--b-be6030131b")]
#[case::too_long_64("n", &"a".repeat(60), "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa-bacabf883e")]
#[case::subdomain_253("default", &format!("{}.{}.{}.{}", "b".repeat(63), "c".repeat(63), "d".repeat(63), "e".repeat(61)), "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb-f032331992")]
#[case::empty_namespace("", "web", "web-b3273abcb4")]
#[case::invalid_name("default", "Web_1", "web-1-default-a4d88fafaf")]
#[case::empty_everything("", "", "h-6e340b9cff")]
fn hashed_names(#[case] ns: &str, #[case] name: &str, #[case] expected: &str) {
    assert_eq!(check_host_name(ns, name), expected);
}

#[rstest]
#[case::separator_moves(("c", "a-x-b"), ("b-x-c", "a"))]
#[case::dash_x_boundary(("b", "a-x"), ("x-b", "a"))]
#[case::double_separator(("x-b", "a-x"), ("b", "a-x-x"))]
#[case::dot_vs_dash(("default", "a.b"), ("default", "a-b"))]
#[case::dot_vs_separator(("default", "a.x.b"), ("default", "a-x-b"))]
#[case::long_common_prefix(("n", &*"a".repeat(70)), ("n", &*"a".repeat(71)))]
fn targeted_collisions_are_avoided(#[case] a: (&str, &str), #[case] b: (&str, &str)) {
    assert_ne!(check_host_name(a.0, a.1), check_host_name(b.0, b.1));
}

/// A hashed name can never be produced as the plain form of another key: whatever split of it into
/// `<name>-x-<ns>` or `<name>-<ns>` one tries, that key maps elsewhere.
#[test]
fn hashed_names_are_not_plain_names_of_other_keys() {
    let keys = [
        ("c", "a-x-b"),
        ("default", "my.app"),
        ("n", &*"ab-x-".repeat(20)),
        ("", "web"),
    ];
    for (ns, name) in keys {
        let hashed = check_host_name(ns, name);
        for (i, _) in hashed.match_indices('-') {
            let (left, right) = (&hashed[..i], &hashed[i + 1..]);
            assert_ne!(host_name(right, left), hashed);
            if let Some(right) = right.strip_prefix("x-") {
                assert_ne!(host_name(right, left), hashed);
            }
        }
    }
}

/// The same for cluster-scoped names: no split of a hashed name after `vcsync-` gives a key whose
/// plain form is that name.
#[test]
fn hashed_cluster_names_are_not_plain_names_of_other_keys() {
    let keys = [
        ("a-x-b", "c"),
        ("x-b", "c"),
        ("team.a", "fast"),
        ("t", "system:controller:x"),
    ];
    for (instance, name) in keys {
        let hashed = check_cluster_name(instance, name);
        let rest = hashed.strip_prefix("vcsync-").unwrap();
        for (i, _) in rest.match_indices('-') {
            let (left, right) = (&rest[..i], &rest[i + 1..]);
            assert_ne!(host_cluster_name(left, right), hashed);
            if let Some(right) = right.strip_prefix("x-") {
                assert_ne!(host_cluster_name(left, right), hashed);
            }
        }
    }
}

/// All DNS labels over {a, x, -} up to `max_len` characters: the alphabet that provokes `-x-`.
fn small_labels(max_len: usize) -> Vec<String> {
    let mut all = vec![String::new()];
    let mut frontier = vec![String::new()];
    for _ in 0..max_len {
        frontier = frontier
            .iter()
            .flat_map(|s| ["a", "x", "-"].map(|c| format!("{s}{c}")))
            .collect();
        all.extend(frontier.iter().cloned());
    }
    all.retain(|s| is_dns_label(s));
    all
}

#[test]
fn exhaustive_small_alphabet_is_injective() {
    let labels = small_labels(5);
    let mut names: Vec<String> = labels.clone();
    names.extend(labels.iter().filter(|l| l.len() <= 3).flat_map(|a| {
        labels
            .iter()
            .filter(|l| l.len() <= 3)
            .map(move |b| format!("{a}.{b}"))
    }));
    let hosts = labels.iter().flat_map(|ns| {
        names
            .iter()
            .map(move |name| (check_host_name(ns, name), (ns.as_str(), name.as_str())))
    });
    assert_injective(hosts);
}

#[test]
fn exhaustive_small_alphabet_cluster_names_are_injective() {
    let labels = small_labels(5);
    let hosts = labels.iter().flat_map(|instance| {
        labels.iter().map(move |name| {
            (
                check_cluster_name(instance, name),
                (instance.as_str(), name.as_str()),
            )
        })
    });
    assert_injective(hosts);
}

fn check_cluster_name(instance: &str, name: &str) -> String {
    let host = host_cluster_name(instance, name);
    assert!(
        is_dns_label(&host),
        "{host:?} of {instance}/{name} is not a DNS-1123 label"
    );
    assert_eq!(host, host_cluster_name(instance, name), "not deterministic");
    assert!(host.starts_with("vcsync-"), "{host:?} must say it is vcsync's");
    if host == format!("vcsync-{instance}-x-{name}") {
        assert_eq!(separator_count(&host), 1);
    } else {
        assert!(!host.contains("-x-"), "hashed form {host:?} must not contain -x-");
        assert!(has_hash_suffix(&host));
    }
    host
}

#[rstest]
#[case::plain("team-a", "fast", "vcsync-team-a-x-fast")]
#[case::dotted_instance("team.a", "fast", "vcsync-team-a-fast-3da53269f5")]
#[case::separator_in_instance("a-x-b", "c", "vcsync-a--b-c-a560ccee58")]
#[case::instance_starts_with_x_dash("x-b", "c", "vcsync--b-c-666071d8a4")]
#[case::colon_in_name("t", "system:controller:x", "vcsync-t-system-controller-0bac980d89")]
fn cluster_names(#[case] instance: &str, #[case] name: &str, #[case] expected: &str) {
    assert_eq!(check_cluster_name(instance, name), expected);
}

#[rstest]
#[case::kept("web", "web")]
#[case::empty("", "")]
#[case::kept_mixed("Team_A.v1-2", "Team_A.v1-2")]
#[case::hash_shaped_is_hashed("web-0123456789", "web-0123456789-a11f9cb6ac")]
#[case::too_long(&"a".repeat(64), "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa-ffe054fe7a")]
#[case::invalid_chars("a/b c", "a-b-c-0af99a6091")]
#[case::only_symbols("///", "h-732c4e9711")]
fn label_values(#[case] value: &str, #[case] expected: &str) {
    let safe = safe_label_value(value);
    assert!(is_label_value(&safe));
    assert_eq!(safe, expected);
}

fn dns_label() -> impl Strategy<Value = String> {
    "[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?"
}

/// DNS-1123 subdomains up to 253 characters: dotted labels, some of them long.
fn dns_subdomain() -> impl Strategy<Value = String> {
    prop::collection::vec("[a-z0-9]([a-z0-9-]{0,40}[a-z0-9])?", 1..8)
        .prop_map(|labels| labels.join("."))
        .prop_filter("at most 253 characters", |s| s.len() <= 253)
}

/// Labels over {a, x, -}: `-x-` everywhere.
fn adversarial_label() -> impl Strategy<Value = String> {
    "[ax]([ax-]{0,14}[ax])?"
}

/// Subdomains over {a, x, -, .}.
fn adversarial_subdomain() -> impl Strategy<Value = String> {
    prop::collection::vec(adversarial_label(), 1..4).prop_map(|labels| labels.join("."))
}

fn any_namespace() -> impl Strategy<Value = String> {
    prop_oneof![dns_label(), adversarial_label()]
}

fn any_name() -> impl Strategy<Value = String> {
    prop_oneof![
        dns_label(),
        dns_subdomain(),
        adversarial_label(),
        adversarial_subdomain()
    ]
}

proptest! {
    #[test]
    fn host_names_are_valid_and_deterministic(ns in any_namespace(), name in any_name()) {
        check_host_name(&ns, &name);
    }

    #[test]
    fn host_names_are_injective(keys in prop::collection::vec((any_namespace(), any_name()), 2..60)) {
        assert_injective(keys.iter().map(|(ns, name)| (check_host_name(ns, name), (ns.as_str(), name.as_str()))));
    }

    /// Small namespaces and names from a tiny alphabet collide often at the readable level, so this
    /// hammers the separator and truncation rules.
    #[test]
    fn adversarial_keys_are_injective(
        keys in prop::collection::vec((adversarial_label(), adversarial_subdomain()), 2..100),
    ) {
        assert_injective(keys.iter().map(|(ns, name)| (check_host_name(ns, name), (ns.as_str(), name.as_str()))));
    }

    #[test]
    fn arbitrary_input_still_gives_valid_names(ns in "\\PC{0,80}", name in "\\PC{0,300}") {
        check_host_name(&ns, &name);
        check_cluster_name(&ns, &name);
    }

    #[test]
    fn cluster_names_are_valid_and_injective(
        keys in prop::collection::vec((any_namespace(), any_name()), 2..60),
    ) {
        assert_injective(keys.iter().map(|(i, name)| (check_cluster_name(i, name), (i.as_str(), name.as_str()))));
    }

    #[test]
    fn label_values_are_valid_and_injective(values in prop::collection::vec(
        prop_oneof!["\\PC{0,100}", "[a-zA-Z0-9._-]{0,70}", dns_label(), adversarial_subdomain()], 1..40,
    )) {
        // Feeding outputs back in as inputs tries to hit an unchanged value equal to a hashed one.
        let mut inputs: Vec<String> = values.clone();
        inputs.extend(values.iter().map(|v| safe_label_value(v)));
        inputs.sort();
        inputs.dedup();
        let outputs: Vec<(String, (&str, &str))> = inputs.iter().map(|v| {
            let safe = safe_label_value(v);
            assert!(is_label_value(&safe), "{safe:?} of {v:?} is not a label value");
            assert_eq!(safe, safe_label_value(v));
            (safe, (v.as_str(), ""))
        }).collect();
        assert_injective(outputs);
    }

    #[test]
    fn valid_label_values_are_kept(value in "[a-zA-Z0-9]([a-zA-Z0-9._-]{0,40}[a-zA-Z0-9])?") {
        prop_assume!(!has_hash_suffix(&value));
        prop_assert_eq!(safe_label_value(&value), value);
    }
}

/// Host namespaces of the per-namespace mapping: readable when possible, always a DNS-1123 label.
#[rstest]
#[case::plain("team-a", "default", "team-a-x-default")]
#[case::plain_kube_system("t", "kube-system", "t-x-kube-system")]
fn host_namespace_names(#[case] instance: &str, #[case] ns: &str, #[case] expected: &str) {
    assert_eq!(host_namespace_name(instance, ns), expected);
}

#[rstest]
#[case::too_long("team-a", &"n".repeat(60))]
#[case::second_separator("team-a", "x-y")]
#[case::separator_in_instance("a-x-b", "default")]
fn host_namespace_names_hashed(#[case] instance: &str, #[case] ns: &str) {
    let host = host_namespace_name(instance, ns);
    assert!(has_hash_suffix(&host), "{host:?}");
    assert!(is_dns_label(&host), "{host:?}");
    assert_eq!(separator_count(&host), 0, "{host:?}");
    assert!(host.starts_with(&instance[..1]), "{host:?} is not readable");
}

fn check_namespace_name(instance: &str, ns: &str) -> String {
    let host = host_namespace_name(instance, ns);
    assert!(is_dns_label(&host), "{host:?} of {instance}/{ns}");
    assert_eq!(host, host_namespace_name(instance, ns), "not deterministic");
    host
}

proptest! {
    #[test]
    fn host_namespace_names_are_valid_and_injective(
        keys in prop::collection::vec((any_namespace(), any_namespace()), 2..60),
    ) {
        assert_injective(keys.iter().map(|(i, ns)| (check_namespace_name(i, ns), (i.as_str(), ns.as_str()))));
    }

    #[test]
    fn adversarial_namespaces_are_injective(
        keys in prop::collection::vec((adversarial_label(), adversarial_label()), 2..100),
    ) {
        assert_injective(keys.iter().map(|(i, ns)| (check_namespace_name(i, ns), (i.as_str(), ns.as_str()))));
    }

    #[test]
    fn arbitrary_input_gives_valid_namespaces(i in "\\PC{0,80}", ns in "\\PC{0,80}") {
        check_namespace_name(&i, &ns);
    }
}
