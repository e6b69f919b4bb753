//! Host names for virtual objects.
//!
//! Every virtual namespace lands in one host namespace, so a host name has to encode both the
//! virtual namespace and the virtual name, and must stay a DNS-1123 label (at most 63 characters).
//! The scheme has two forms:
//!
//! * **plain** `<name>-x-<namespace>` (cluster-scoped: `vcsync-<instance>-x-<name>`), used only when
//!   both parts are DNS-1123 labels, the result fits in 63 characters and the result contains the
//!   separator `-x-` exactly once (overlapping occurrences counted, so `a-x-x-b` contains it twice);
//! * **hashed** `<readable prefix>-<hash>`, everything else: the prefix is the parts joined by `-`
//!   ('.' and other characters outside the label alphabet become `-`), cut to fit, and written so
//!   that it never contains `-x-`; the hash is 10 hex characters of SHA-256 over the parts joined by
//!   NUL (which no Kubernetes name contains), so it is stable across runs, releases and platforms.
//!
//! Why this is injective:
//! * plain vs plain: a plain name contains `-x-` exactly once, so the position of the separator,
//!   and therefore both parts, can be read back from the name; equal names mean equal keys.
//! * plain vs hashed: a plain name contains `-x-` once, a hashed name never; they cannot be equal.
//! * hashed vs hashed: distinct keys hash distinct SHA-256 inputs; two names are equal only if the
//!   40-bit hash suffixes collide *and* the readable prefixes are equal. That is "injective for all
//!   practical purposes", and the syncer still detects it: the host object's annotations name the
//!   virtual object it belongs to.
//!
//! The host name starts with the first character of the virtual name (plain and hashed), so a
//! virtual name that is a DNS-1035 label (Service names) gives a host name that is one too.
//!
//! Neither form can be a name the host's control plane puts in every namespace
//! ([`CONTROL_PLANE_NAMES`]): a plain name contains `-x-`, a hashed one ends in its hash.
//!
//! # Per-namespace mapping
//!
//! When each virtual namespace has a host namespace of its own, names need no namespace part and
//! are kept ([`per_namespace_name`]), except where the host's control plane already holds the name
//! in every namespace: kube-controller-manager publishes ConfigMap `kube-root-ca.crt` and creates
//! ServiceAccount `default` in each one (OpenShift adds ConfigMap `openshift-service-ca.crt`). The
//! virtual cluster has its own objects of those names, and every pod references them (its
//! projected service-account token volume names `kube-root-ca.crt`), so kept as they are they would
//! land on the host's own objects. Those names, and every name that already starts with the escape
//! prefix [`PER_NAMESPACE_ESCAPE`] (`vcsync-x-`), take the prefix: `kube-root-ca.crt` becomes
//! `vcsync-x-kube-root-ca.crt`, `vcsync-x-a` becomes `vcsync-x-vcsync-x-a`. A prefixed name that
//! would outgrow a DNS-1123 label or subdomain (a first label over 63 characters, or over 253 in
//! all) takes the hashed form `vcsync-x-h-<readable>-<hash>` instead, a DNS-1123 label valid for
//! every kind.
//!
//! The translation does not know the kind (the callers translate names of every kind through one
//! function), so the names are reserved for every kind: a virtual Service named `default` becomes
//! `vcsync-x-default` on the host too. Consistent, merely less readable.
//!
//! Why this is injective within a host namespace, and never gives a control-plane name:
//! * kept vs escaped or hashed: a kept name does not start with the prefix, the others do.
//! * escaped vs escaped: `prefix + a == prefix + b` means `a == b`.
//! * escaped vs hashed: `prefix + m == prefix + "h-..."` needs an escaped `m` starting with `h-`,
//!   but an escaped name is a control-plane name or starts with `vcsync-x-`, and none starts with
//!   `h-`.
//! * hashed vs hashed: distinct names hash distinct SHA-256 inputs (as above, 40 bits).
//! * a control-plane name is never kept, and no control-plane name starts with the prefix, so no
//!   result is one.

use sha2::{Digest, Sha256};

/// Maximum length of a DNS-1123 label, and so of every host name and label value produced here.
pub const MAX_NAME_LEN: usize = 63;

/// Hex characters of SHA-256 kept in a hashed name: 40 bits, readable and short enough to leave
/// most of the 63 characters to the readable prefix.
const HASH_LEN: usize = 10;

/// Separator between the two parts of a plain name. Chosen because it is rare in real names and
/// visibly not part of either ("web-x-default").
const SEPARATOR: &str = "-x-";

/// First part of every cluster-scoped host name: cluster-scoped host objects are shared by every
/// virtual cluster on the host, so they say who made them.
const CLUSTER_PREFIX: &str = "vcsync";

/// Prefix of a hashed name whose readable part came out empty (only for invalid input).
const EMPTY_PREFIX: &str = "h";

/// Maximum length of a DNS-1123 subdomain, the limit of most object names.
const MAX_SUBDOMAIN_LEN: usize = 253;

/// Names the host's control plane itself puts in every namespace, which [`per_namespace_name`]
/// never keeps: ConfigMap `kube-root-ca.crt` (kube-controller-manager's root CA publisher),
/// ServiceAccount `default` (its service-account controller) and ConfigMap
/// `openshift-service-ca.crt` (OpenShift's service CA publisher). Reserved for every kind.
pub const CONTROL_PLANE_NAMES: [&str; 3] = ["kube-root-ca.crt", "default", "openshift-service-ca.crt"];

/// Prefix [`per_namespace_name`] puts before a control-plane name, and before any name that
/// already starts with it (which keeps the mapping injective).
pub const PER_NAMESPACE_ESCAPE: &str = "vcsync-x-";

/// Marker after [`PER_NAMESPACE_ESCAPE`] of a hashed per-namespace name; no escaped name starts
/// with it.
const PER_NAMESPACE_HASHED: &str = "h-";

/// Host name of the namespaced virtual object `namespace/name`, in the single host namespace.
///
/// `("default", "web")` gives `web-x-default`; long, dotted or ambiguous keys get a hashed form
/// such as `my-app-config-default-1a2b3c4d5e`. Always a DNS-1123 label, deterministic, and injective
/// over (namespace, name) (see the module documentation). Any input is accepted; names that are not
/// valid Kubernetes names simply take the hashed form.
pub fn host_name(namespace: &str, name: &str) -> String {
    if is_dns_label(namespace) && is_dns_label(name) {
        let plain = format!("{name}{SEPARATOR}{namespace}");
        if plain.len() <= MAX_NAME_LEN && separator_count(&plain) == 1 {
            return plain;
        }
    }
    hashed_dns_label(&[name, namespace], &digest(&[namespace, name]))
}

/// Host name of the cluster-scoped virtual object `name` of vcsync instance `instance`.
///
/// `("team-a", "fast")` gives `vcsync-team-a-x-fast`; otherwise a hashed form such as
/// `vcsync-team-a-fast-ssd-1a2b3c4d5e`. Cluster-scoped host objects are shared by every virtual
/// cluster, so the instance is part of the name and the mapping is injective over (instance, name):
/// two instances never collide. The fixed `vcsync-` prefix ends in `-`, so an instance starting with
/// `x-` adds a second `-x-` and forces the hashed form; the decoding argument of the module
/// documentation therefore holds unchanged.
pub fn host_cluster_name(instance: &str, name: &str) -> String {
    if is_dns_label(instance) && is_dns_label(name) {
        let plain = format!("{CLUSTER_PREFIX}-{instance}{SEPARATOR}{name}");
        if plain.len() <= MAX_NAME_LEN && separator_count(&plain) == 1 {
            return plain;
        }
    }
    hashed_dns_label(&[CLUSTER_PREFIX, instance, name], &digest(&[instance, name]))
}

/// Host namespace of the virtual namespace `namespace` of vcsync instance `instance` in the
/// per-namespace mapping (each virtual namespace gets a host namespace of its own).
///
/// `("team-a", "default")` gives `team-a-x-default`; otherwise a hashed form such as
/// `team-a-my-long-namespace-1a2b3c4d5e`. The same scheme as [`host_name`] with the instance first,
/// so it is a DNS-1123 label (a valid namespace name), deterministic, and injective over
/// (instance, namespace): two instances on one host never share a namespace.
pub fn host_namespace_name(instance: &str, namespace: &str) -> String {
    if is_dns_label(instance) && is_dns_label(namespace) {
        let plain = format!("{instance}{SEPARATOR}{namespace}");
        if plain.len() <= MAX_NAME_LEN && separator_count(&plain) == 1 {
            return plain;
        }
    }
    hashed_dns_label(&[instance, namespace], &digest(&["ns", instance, namespace]))
}

/// Host name of a namespaced virtual object named `name` in the per-namespace mapping, where the
/// host namespace already says which virtual namespace it belongs to.
///
/// `name` itself, unless it is one of [`CONTROL_PLANE_NAMES`] or starts with
/// [`PER_NAMESPACE_ESCAPE`]: then `vcsync-x-<name>` (`vcsync-x-kube-root-ca.crt`), or, when that
/// would be too long (a first label, up to the first `.`, over 63 characters, or more than 253 in
/// all), the hashed DNS-1123 label `vcsync-x-h-<readable>-<hash>`. A valid name stays valid for its kind (a DNS-1035
/// label stays one), and the mapping is injective and never gives a control-plane name (see the
/// module documentation).
pub fn per_namespace_name(name: &str) -> String {
    if !CONTROL_PLANE_NAMES.contains(&name) && !name.starts_with(PER_NAMESPACE_ESCAPE) {
        return name.to_owned();
    }
    let escaped = format!("{PER_NAMESPACE_ESCAPE}{name}");
    // The prefix lengthens the first label: a label or subdomain stays one if that label and the
    // whole name still fit.
    let first_label = escaped.split('.').next().unwrap_or_default();
    if first_label.len() <= MAX_NAME_LEN && escaped.len() <= MAX_SUBDOMAIN_LEN {
        return escaped;
    }
    let head = format!("{PER_NAMESPACE_ESCAPE}{PER_NAMESPACE_HASHED}");
    let budget = MAX_NAME_LEN - head.len() - 1 - HASH_LEN;
    let rest = name.strip_prefix(PER_NAMESPACE_ESCAPE).unwrap_or(name);
    let readable: String = rest
        .chars()
        .map(|c| match c {
            'a'..='z' | '0'..='9' => c,
            'A'..='Z' => c.to_ascii_lowercase(),
            _ => '-',
        })
        .take(budget)
        .collect();
    let readable = readable.trim_matches('-');
    let readable = if readable.is_empty() {
        EMPTY_PREFIX
    } else {
        readable
    };
    format!("{head}{readable}-{}", digest(&["per-namespace", name]))
}

/// `value` made into a valid label value: at most 63 characters of `[A-Za-z0-9._-]`, starting and
/// ending with an alphanumeric character (or empty).
///
/// A valid value is returned unchanged, unless it ends in `-` followed by 10 lowercase hex
/// characters: that is the shape of a hashed value, so such values are hashed too, which keeps the
/// mapping injective (an unchanged value never equals the hashed form of another). Everything else
/// becomes `<sanitized prefix>-<10 hex of SHA-256(value)>`.
pub fn safe_label_value(value: &str) -> String {
    if is_label_value(value) && !looks_hashed(value) {
        return value.to_owned();
    }
    let budget = MAX_NAME_LEN - 1 - HASH_LEN;
    let sanitized: String = value
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' || c == '_' {
                c
            } else {
                '-'
            }
        })
        .take(budget)
        .collect();
    let prefix = sanitized.trim_matches(|c: char| !c.is_ascii_alphanumeric());
    let prefix = if prefix.is_empty() { EMPTY_PREFIX } else { prefix };
    format!("{prefix}-{}", digest(&[value]))
}

/// Whether `s` is a DNS-1123 label: 1 to 63 characters of `[a-z0-9-]`, alphanumeric at both ends.
pub fn is_dns_label(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= MAX_NAME_LEN
        && b.iter()
            .all(|&c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-')
        && b[0] != b'-'
        && b[b.len() - 1] != b'-'
}

/// Whether `s` is a valid label value: empty, or 1 to 63 characters of `[A-Za-z0-9._-]` that start
/// and end with an alphanumeric character.
pub fn is_label_value(s: &str) -> bool {
    let b = s.as_bytes();
    if b.is_empty() {
        return true;
    }
    b.len() <= MAX_NAME_LEN
        && b.iter()
            .all(|&c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'))
        && b[0].is_ascii_alphanumeric()
        && b[b.len() - 1].is_ascii_alphanumeric()
}

/// Whether a label value has the shape of [`safe_label_value`]'s hashed form: `-` and 10 lowercase
/// hex characters at the end.
fn looks_hashed(value: &str) -> bool {
    let b = value.as_bytes();
    b.len() > HASH_LEN
        && b[b.len() - HASH_LEN - 1] == b'-'
        && b[b.len() - HASH_LEN..]
            .iter()
            .all(|&c| c.is_ascii_digit() || (b'a'..=b'f').contains(&c))
}

/// Occurrences of [`SEPARATOR`] in `s`, overlapping ones included.
fn separator_count(s: &str) -> usize {
    s.as_bytes()
        .windows(SEPARATOR.len())
        .filter(|w| *w == SEPARATOR.as_bytes())
        .count()
}

/// First [`HASH_LEN`] hex characters of SHA-256 over `parts` joined by NUL.
fn digest(parts: &[&str]) -> String {
    let mut hasher = Sha256::new();
    for (i, part) in parts.iter().enumerate() {
        if i > 0 {
            hasher.update([0u8]);
        }
        hasher.update(part.as_bytes());
    }
    let hash = hasher.finalize();
    let mut hex = String::with_capacity(HASH_LEN);
    for byte in hash.iter().take(HASH_LEN.div_ceil(2)) {
        hex.push_str(&format!("{byte:02x}"));
    }
    hex.truncate(HASH_LEN);
    hex
}

/// `<readable prefix>-<hash>` where the prefix is `parts` joined by `-`, cut so the whole fits in
/// 63 characters, and guaranteed to produce no `-x-` anywhere in the result.
///
/// To keep `-x-` out, every `x` that has a `-` on both sides (the `-` before the hash counts) is
/// dropped: `a-x-b` reads `a--b`. Dropping such an `x` cannot create a new `-x-`, because its
/// neighbours are dashes, not other `x`s; and trimming trailing dashes afterwards cannot expose a
/// final `-x` either, since that `x` was followed by a dash and would have been dropped.
fn hashed_dns_label(parts: &[&str], hash: &str) -> String {
    let budget = MAX_NAME_LEN - 1 - HASH_LEN;
    let mut raw: Vec<u8> = Vec::with_capacity(budget);
    'parts: for (i, part) in parts.iter().enumerate() {
        for c in (if i > 0 { "-" } else { "" }).chars().chain(part.chars()) {
            if raw.len() == budget {
                break 'parts;
            }
            raw.push(match c {
                'a'..='z' | '0'..='9' => c as u8,
                'A'..='Z' => c.to_ascii_lowercase() as u8,
                _ => b'-',
            });
        }
    }
    let start = raw.iter().position(|&c| c != b'-').unwrap_or(raw.len());
    let raw = &raw[start..];
    let mut prefix = String::with_capacity(raw.len());
    for (i, &c) in raw.iter().enumerate() {
        let after_dash = i > 0 && raw[i - 1] == b'-';
        let before_dash = raw.get(i + 1).is_none_or(|&n| n == b'-');
        if !(c == b'x' && after_dash && before_dash) {
            prefix.push(c as char);
        }
    }
    let prefix = prefix.trim_end_matches('-');
    let prefix = if prefix.is_empty() { EMPTY_PREFIX } else { prefix };
    format!("{prefix}-{hash}")
}
