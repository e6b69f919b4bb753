//! The checker: a snapshot of both clusters against what the churn left.

use std::collections::{BTreeMap, BTreeSet};

use vcsync_syncer::Config;
use vcsync_translators::{
    CLUSTER_UID_ANNOTATION, MANAGED_BY_LABEL, OBJECT_NAME_ANNOTATION, OBJECT_NAMESPACE_ANNOTATION,
    OBJECT_UID_ANNOTATION, RESERVED_PREFIX,
};

use vcsync_syncer::syncers::pods::token::{
    TOKEN_POD_ANNOTATION, TOKEN_POD_UID_ANNOTATION, token_secret_name,
};

use super::plan::{ANNOTATION_PREFIX, Content, Key, Kind};

/// An object as listed from either cluster.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(super) struct Observed {
    pub(super) uid: String,
    pub(super) resource_version: String,
    pub(super) labels: BTreeMap<String, String>,
    pub(super) annotations: BTreeMap<String, String>,
    pub(super) data: BTreeMap<String, String>,
    /// Being deleted (a pod in its grace period).
    pub(super) terminating: bool,
}

/// Both clusters' ConfigMaps and Secrets (virtual: the soak's namespaces only).
#[derive(Clone, Debug, Default)]
pub(super) struct Snapshot {
    pub(super) virt: BTreeMap<Key, Observed>,
    pub(super) host: BTreeMap<Key, Observed>,
    /// UID of the virtual `kube-system` namespace: the cluster current copies are made for.
    pub(super) cluster_uid: Option<String>,
    /// The virtual namespaces `virt` holds (the churn's): host copies of other namespaces'
    /// objects (`kube-system`'s, say) are not judged.
    pub(super) namespaces: BTreeSet<String>,
}

/// Objects the control plane itself puts in every namespace (kube-controller-manager's root CA
/// publisher; the embedded server does the same): no churn made them, and they are synced as
/// any other.
fn published_by_the_control_plane(key: &Key) -> bool {
    key.kind == Kind::ConfigMap && key.name == "kube-root-ca.crt"
}

/// Violations found by [`check`], each with a description; and the counts of what was fine.
#[derive(Clone, Debug, Default)]
pub(super) struct Findings {
    /// Virtual objects checked.
    pub(super) checked: usize,
    /// Virtual objects with their one correct host copy.
    pub(super) synced: usize,
    /// Virtual objects whose host name a foreign object holds (no copy expected).
    pub(super) blocked: usize,
    /// Virtual objects whose host name an earlier cluster's copy holds (no copy expected).
    pub(super) blocked_by_earlier: usize,
    /// Earlier clusters' copies found untouched.
    pub(super) earlier_kept: usize,
    /// Virtual objects without a host copy.
    pub(super) losses: Vec<String>,
    /// Host copies with the wrong data, labels, annotations or UID.
    pub(super) wrong: Vec<String>,
    /// Owned host objects without a virtual twin.
    pub(super) orphans: Vec<String>,
    /// Owned host objects of a virtual object under another name than the translated one.
    pub(super) duplicates: Vec<String>,
    /// Foreign host objects deleted or modified.
    pub(super) foreign_touched: Vec<String>,
    /// Virtual objects that differ from what the churn wrote.
    pub(super) virtual_drift: Vec<String>,
    /// Earlier clusters' copies deleted or modified.
    pub(super) earlier_touched: Vec<String>,
    /// Token Secrets whose pod is gone.
    pub(super) leftover_tokens: Vec<String>,
}

impl Findings {
    pub(super) fn violations(&self) -> usize {
        self.losses.len()
            + self.wrong.len()
            + self.orphans.len()
            + self.duplicates.len()
            + self.foreign_touched.len()
            + self.virtual_drift.len()
            + self.earlier_touched.len()
            + self.leftover_tokens.len()
    }

    /// One of the violations, for a progress line.
    pub(super) fn example(&self) -> Option<String> {
        [
            &self.losses,
            &self.wrong,
            &self.orphans,
            &self.duplicates,
            &self.foreign_touched,
            &self.virtual_drift,
            &self.earlier_touched,
            &self.leftover_tokens,
        ]
        .into_iter()
        .find_map(|list| list.first().cloned())
    }
}

pub(super) fn without_reserved(map: &BTreeMap<String, String>) -> BTreeMap<String, String> {
    map.iter()
        .filter(|(k, _)| !k.starts_with(RESERVED_PREFIX))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

/// The churn's annotations of `map` (the syncer and the control planes add their own).
fn churn_annotations(map: &BTreeMap<String, String>) -> BTreeMap<&String, &String> {
    map.iter()
        .filter(|(k, _)| k.starts_with(ANNOTATION_PREFIX))
        .collect()
}

/// The host keys of what pod `key` references, by what its content calls them (its data: the
/// virtual names).
fn host_references(config: &Config, key: &Key, data: &BTreeMap<String, String>) -> BTreeMap<String, Key> {
    use super::plan::{POD_CONFIG_MAP, POD_SECRET};
    [(POD_CONFIG_MAP, Kind::ConfigMap), (POD_SECRET, Kind::Secret)]
        .into_iter()
        .filter_map(|(what, kind)| {
            let reference = Key {
                kind,
                namespace: key.namespace.clone(),
                name: data.get(what)?.clone(),
            };
            Some((what.to_string(), host_key_of(config, &reference)))
        })
        .collect()
}

/// A token Secret of this instance: the name of the host pod it is for, and the virtual pod
/// UID its tokens are bound to.
pub(super) fn token_secret_of<'a>(config: &Config, secret: &'a Observed) -> Option<(&'a String, &'a String)> {
    if !owned(config, secret) {
        return None;
    }
    Some((
        secret.annotations.get(TOKEN_POD_ANNOTATION)?,
        secret.annotations.get(TOKEN_POD_UID_ANNOTATION)?,
    ))
}

pub(super) fn host_key_of(config: &Config, key: &Key) -> Key {
    let host = config.namespace_mapping().host_key(&key.namespace, &key.name);
    Key {
        kind: key.kind,
        namespace: host.namespace.unwrap_or_default(),
        name: host.name,
    }
}

/// Whether `object` carries the ownership label of `config`'s instance.
pub(super) fn owned(config: &Config, object: &Observed) -> bool {
    object.labels.get(MANAGED_BY_LABEL).map(String::as_str) == Some(config.instance.as_str())
}

/// Checks `snapshot` against the churn's final virtual state `expected`, the `foreign` host
/// objects recorded before the syncer first ran, and the copies made for `earlier` virtual
/// clusters, recorded when each was replaced (they must be kept as they were).
pub(super) fn check(
    config: &Config,
    expected: &BTreeMap<Key, Content>,
    foreign: &BTreeMap<Key, Observed>,
    earlier: &BTreeMap<Key, Observed>,
    snapshot: &Snapshot,
) -> Findings {
    let mut findings = Findings::default();

    // The virtual side is the churn's, untouched by the syncer.
    for (key, content) in expected {
        match snapshot.virt.get(key) {
            None => findings
                .virtual_drift
                .push(format!("{key}: missing in the virtual cluster")),
            Some(v)
                if v.data != content.data
                    || v.labels != content.labels
                    || churn_annotations(&v.annotations) != churn_annotations(&content.annotations) =>
            {
                findings
                    .virtual_drift
                    .push(format!("{key}: differs from what the churn wrote"))
            }
            Some(_) => {}
        }
    }
    for key in snapshot
        .virt
        .keys()
        .filter(|k| !expected.contains_key(k) && !published_by_the_control_plane(k))
    {
        findings
            .virtual_drift
            .push(format!("{key}: not made by the churn"));
    }

    let owned = |o: &Observed| owned(config, o);

    // Every virtual object: exactly its one correct copy.
    for (key, v) in &snapshot.virt {
        findings.checked += 1;
        let host_key = host_key_of(config, key);
        if foreign.contains_key(&host_key) {
            findings.blocked += 1;
            continue;
        }
        if earlier.contains_key(&host_key) {
            findings.blocked_by_earlier += 1;
            continue;
        }
        // A pod waits for its references' copies: one held by an earlier cluster's copy holds
        // the pod back too.
        let host_references = match key.kind {
            Kind::Pod => host_references(config, key, &v.data),
            _ => BTreeMap::new(),
        };
        if host_references.values().any(|r| earlier.contains_key(r)) {
            findings.blocked_by_earlier += 1;
            continue;
        }
        let Some(h) = snapshot.host.get(&host_key) else {
            findings.losses.push(format!("{key}: no host copy {host_key}"));
            continue;
        };
        if !owned(h) {
            findings
                .losses
                .push(format!("{key}: {host_key} exists but is not this instance's"));
            continue;
        }
        let mut problems = Vec::new();
        if h.annotations.get(OBJECT_NAME_ANNOTATION) != Some(&key.name)
            || h.annotations.get(OBJECT_NAMESPACE_ANNOTATION) != Some(&key.namespace)
        {
            problems.push("owner annotations");
        }
        if h.annotations.get(OBJECT_UID_ANNOTATION) != Some(&v.uid) {
            problems.push("UID (a stale copy)");
        }
        if let Some(cluster) = &snapshot.cluster_uid
            && h.annotations.get(CLUSTER_UID_ANNOTATION) != Some(cluster)
        {
            problems.push("cluster UID");
        }
        let data_wanted = match key.kind {
            Kind::Pod => host_references
                .into_iter()
                .map(|(what, host)| (what, host.name))
                .collect(),
            _ => v.data.clone(),
        };
        if h.data != data_wanted {
            problems.push(if key.kind == Kind::Pod {
                "references"
            } else {
                "data"
            });
        }
        if without_reserved(&h.labels) != without_reserved(&v.labels) {
            problems.push("labels");
        }
        if churn_annotations(&h.annotations) != churn_annotations(&v.annotations) {
            problems.push("annotations");
        }
        if key.kind == Kind::Pod {
            let token_key = Key {
                kind: Kind::Secret,
                namespace: host_key.namespace.clone(),
                name: token_secret_name(&host_key.name),
            };
            let token = snapshot.host.get(&token_key);
            if token.and_then(|t| token_secret_of(config, t)).map(|(_, uid)| uid) != Some(&v.uid) {
                problems.push("token Secret (missing or another pod's)");
            }
        }
        if problems.is_empty() {
            findings.synced += 1;
        } else {
            findings.wrong.push(format!(
                "{key}: host copy {host_key} has the wrong {}",
                problems.join(", ")
            ));
        }
    }

    // Every owned host object: a copy of a living virtual object, under its translated name.
    // Earlier clusters' copies are checked below, not counted as orphans.
    for (host_key, h) in snapshot
        .host
        .iter()
        .filter(|(key, h)| owned(h) && !earlier.contains_key(key) && token_secret_of(config, h).is_none())
    {
        let (Some(name), Some(namespace)) = (
            h.annotations.get(OBJECT_NAME_ANNOTATION),
            h.annotations.get(OBJECT_NAMESPACE_ANNOTATION),
        ) else {
            findings
                .orphans
                .push(format!("{host_key}: owned but names no virtual object"));
            continue;
        };
        let virtual_key = Key {
            kind: host_key.kind,
            namespace: namespace.clone(),
            name: name.clone(),
        };
        if !snapshot.namespaces.contains(namespace) {
            continue;
        }
        if host_key_of(config, &virtual_key) != *host_key {
            findings
                .duplicates
                .push(format!("{host_key}: a copy of {virtual_key} under another name"));
        } else if !snapshot.virt.contains_key(&virtual_key) {
            findings
                .orphans
                .push(format!("{host_key}: its virtual object {virtual_key} is gone"));
        }
    }

    // Every token Secret: its host pod is there, made for the virtual pod its tokens are for.
    for (host_key, (pod, uid)) in snapshot
        .host
        .iter()
        .filter(|(key, _)| key.kind == Kind::Secret)
        .filter_map(|(key, h)| Some((key, token_secret_of(config, h)?)))
    {
        let pod_key = Key {
            kind: Kind::Pod,
            namespace: host_key.namespace.clone(),
            name: pod.clone(),
        };
        let pod_uid = snapshot
            .host
            .get(&pod_key)
            .and_then(|p| p.annotations.get(OBJECT_UID_ANNOTATION));
        if pod_uid != Some(uid) {
            findings.leftover_tokens.push(format!(
                "{host_key}: its pod {pod_key} (virtual uid {uid}) is gone"
            ));
        }
    }

    // Foreign objects: untouched.
    for (key, before) in foreign {
        if let Some(change) = change(before, snapshot.host.get(key)) {
            findings.foreign_touched.push(format!("{key}: {change}"));
        }
    }

    // Earlier clusters' copies: untouched.
    for (key, before) in earlier {
        match change(before, snapshot.host.get(key)) {
            Some(change) => findings
                .earlier_touched
                .push(format!("{key}: an earlier cluster's copy was {change}")),
            None => findings.earlier_kept += 1,
        }
    }
    findings
}

/// How `now` differs from `before`, the same host object as recorded earlier: `deleted`, or
/// `modified (...)`; None when it is there unchanged.
pub(super) fn change(before: &Observed, now: Option<&Observed>) -> Option<String> {
    match now {
        None => Some("deleted".into()),
        Some(now) if now != before => Some(format!(
            "modified (uid {} -> {}, resourceVersion {} -> {})",
            before.uid, now.uid, before.resource_version, now.resource_version
        )),
        Some(_) => None,
    }
}

#[cfg(test)]
mod tests;
