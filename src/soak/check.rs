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
        match snapshot.host.get(key) {
            None => findings.foreign_touched.push(format!("{key}: deleted")),
            Some(now) if now.resource_version != before.resource_version || now != before => {
                findings.foreign_touched.push(format!(
                    "{key}: modified (resourceVersion {} -> {})",
                    before.resource_version, now.resource_version
                ))
            }
            Some(_) => {}
        }
    }

    // Earlier clusters' copies: untouched.
    for (key, before) in earlier {
        match snapshot.host.get(key) {
            None => findings
                .earlier_touched
                .push(format!("{key}: an earlier cluster's copy was deleted")),
            Some(now) if now != before => findings.earlier_touched.push(format!(
                "{key}: an earlier cluster's copy was modified (uid {} -> {}, resourceVersion {} -> {})",
                before.uid, now.uid, before.resource_version, now.resource_version
            )),
            Some(_) => findings.earlier_kept += 1,
        }
    }
    findings
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::soak::{
        HOST_NAMESPACE, INSTANCE,
        plan::{Kind, POD_CONFIG_MAP, Sizes, final_state, plan},
    };

    /// A consistent world: `expected`'s objects in the virtual cluster, their host copies, one
    /// foreign object at a colliding name and one elsewhere.
    fn world() -> (Config, BTreeMap<Key, Content>, BTreeMap<Key, Observed>, Snapshot) {
        let config = Config::new(INSTANCE, HOST_NAMESPACE);
        let sizes = Sizes {
            objects: 40,
            pods: 10,
            namespaces: 2,
            empty_restarts: 0,
        };
        let expected = final_state(&plan(7, sizes));
        let mut snapshot = Snapshot {
            cluster_uid: Some("cluster-b".into()),
            namespaces: expected.keys().map(|key| key.namespace.clone()).collect(),
            ..Default::default()
        };
        for (i, (key, content)) in expected.iter().enumerate() {
            let uid = format!("uid-{i}");
            snapshot.virt.insert(
                key.clone(),
                Observed {
                    uid: uid.clone(),
                    resource_version: i.to_string(),
                    labels: content.labels.clone(),
                    annotations: content.annotations.clone(),
                    data: content.data.clone(),
                    terminating: false,
                },
            );
            let mut labels = without_reserved(&content.labels);
            labels.insert(MANAGED_BY_LABEL.into(), INSTANCE.into());
            let mut annotations = content.annotations.clone();
            annotations.extend([
                (OBJECT_NAME_ANNOTATION.into(), key.name.clone()),
                (OBJECT_NAMESPACE_ANNOTATION.into(), key.namespace.clone()),
                (OBJECT_UID_ANNOTATION.into(), uid.clone()),
                (CLUSTER_UID_ANNOTATION.into(), "cluster-b".into()),
            ]);
            let host_key = host_key_of(&config, key);
            let data = match key.kind {
                Kind::Pod => host_references(&config, key, &content.data)
                    .into_iter()
                    .map(|(what, host)| (what, host.name))
                    .collect(),
                _ => content.data.clone(),
            };
            if key.kind == Kind::Pod {
                let (token_key, token) = token_secret_for(&host_key, &uid);
                snapshot.host.insert(token_key, token);
            }
            snapshot.host.insert(
                host_key,
                Observed {
                    uid: format!("host-{uid}"),
                    resource_version: i.to_string(),
                    labels,
                    annotations,
                    data,
                    terminating: false,
                },
            );
        }
        // A foreign object holds the host name of the first ConfigMap of its own.
        let blocked = expected
            .keys()
            .find(|key| key.name.starts_with("cm-"))
            .map(|key| host_key_of(&config, key))
            .unwrap();
        let foreign_object = Observed {
            uid: "foreign".into(),
            resource_version: "1".into(),
            data: BTreeMap::from([("foreign".into(), "yes".into())]),
            ..Default::default()
        };
        snapshot.host.insert(blocked.clone(), foreign_object.clone());
        let elsewhere = Key {
            kind: Kind::Secret,
            namespace: HOST_NAMESPACE.into(),
            name: "foreign-0".into(),
        };
        snapshot.host.insert(elsewhere.clone(), foreign_object.clone());
        let foreign = BTreeMap::from([(blocked, foreign_object.clone()), (elsewhere, foreign_object)]);
        (config, expected, foreign, snapshot)
    }

    /// The token Secret of host pod `host_pod`, issued for virtual pod `uid`.
    fn token_secret_for(host_pod: &Key, uid: &str) -> (Key, Observed) {
        let key = Key {
            kind: Kind::Secret,
            namespace: host_pod.namespace.clone(),
            name: token_secret_name(&host_pod.name),
        };
        let token = Observed {
            uid: format!("token-{uid}"),
            labels: BTreeMap::from([(MANAGED_BY_LABEL.into(), INSTANCE.into())]),
            annotations: BTreeMap::from([
                (TOKEN_POD_ANNOTATION.into(), host_pod.name.clone()),
                (TOKEN_POD_UID_ANNOTATION.into(), uid.into()),
            ]),
            ..Default::default()
        };
        (key, token)
    }

    /// A synced pod of `world()`: its virtual key and host key.
    fn a_pod(config: &Config, expected: &BTreeMap<Key, Content>) -> (Key, Key) {
        let key = expected.keys().find(|key| key.kind == Kind::Pod).unwrap().clone();
        let host_key = host_key_of(config, &key);
        (key, host_key)
    }

    #[test]
    fn a_pod_needs_its_references_translated_its_annotations_and_its_token_secret() {
        let (config, expected, foreign, snapshot) = world();
        let (_, host_key) = a_pod(&config, &expected);
        let token_key = Key {
            kind: Kind::Secret,
            namespace: host_key.namespace.clone(),
            name: token_secret_name(&host_key.name),
        };
        type Breakage<'a> = (&'a str, Box<dyn Fn(&mut Snapshot) + 'a>);
        let breakages: [Breakage; 4] = [
            (
                "references",
                Box::new(|s: &mut Snapshot| {
                    let pod = s.host.get_mut(&host_key).unwrap();
                    pod.data.insert(POD_CONFIG_MAP.into(), "untranslated".into());
                }),
            ),
            (
                "annotations",
                Box::new(|s: &mut Snapshot| {
                    let pod = s.host.get_mut(&host_key).unwrap();
                    pod.annotations.insert("soak-note-9".into(), "stale".into());
                }),
            ),
            (
                "token Secret",
                Box::new(|s: &mut Snapshot| {
                    s.host.remove(&token_key);
                }),
            ),
            (
                "token Secret",
                Box::new(|s: &mut Snapshot| {
                    let token = s.host.get_mut(&token_key).unwrap();
                    token
                        .annotations
                        .insert(TOKEN_POD_UID_ANNOTATION.into(), "an-older-pod".into());
                }),
            ),
        ];
        for (problem, broken) in breakages {
            let mut snapshot = snapshot.clone();
            broken(&mut snapshot);
            let findings = check(&config, &expected, &foreign, &BTreeMap::new(), &snapshot);
            assert_eq!(findings.wrong.len(), 1, "{problem}: {findings:#?}");
            assert!(findings.wrong[0].contains(problem), "{findings:#?}");
            // A token Secret of an older pod of that name is also one without its pod.
            assert!(findings.violations() <= 2, "{findings:#?}");
        }
    }

    #[test]
    fn a_token_secret_whose_pod_is_gone_is_left_over() {
        let (config, mut expected, foreign, mut snapshot) = world();
        let (key, host_key) = a_pod(&config, &expected);
        expected.remove(&key);
        snapshot.virt.remove(&key);
        snapshot.host.remove(&host_key);
        let findings = check(&config, &expected, &foreign, &BTreeMap::new(), &snapshot);
        assert_eq!(findings.leftover_tokens.len(), 1, "{findings:#?}");
        assert_eq!(findings.violations(), 1, "{findings:#?}");
    }

    #[test]
    fn a_consistent_world_passes() {
        let (config, expected, foreign, snapshot) = world();
        let findings = check(&config, &expected, &foreign, &BTreeMap::new(), &snapshot);
        assert_eq!(findings.violations(), 0, "{findings:#?}");
        assert_eq!(findings.blocked, 1);
        assert_eq!(findings.synced, expected.len() - 1);
    }

    fn second_synced(config: &Config, expected: &BTreeMap<Key, Content>) -> (Key, Key) {
        let key = expected.keys().nth(1).unwrap().clone();
        let host_key = host_key_of(config, &key);
        (key, host_key)
    }

    #[test]
    fn a_missing_host_copy_is_a_loss() {
        let (config, expected, foreign, mut snapshot) = world();
        let (_, host_key) = second_synced(&config, &expected);
        snapshot.host.remove(&host_key);
        let findings = check(&config, &expected, &foreign, &BTreeMap::new(), &snapshot);
        assert_eq!(findings.losses.len(), 1, "{findings:#?}");
        assert_eq!(findings.violations(), 1);
    }

    #[test]
    fn stale_data_labels_or_uid_are_wrong_copies() {
        let (config, expected, foreign, snapshot) = world();
        let (_, host_key) = second_synced(&config, &expected);
        for broken in [
            |o: &mut Observed| {
                o.data.insert("k0".into(), "stale".into());
            },
            |o: &mut Observed| {
                o.labels.insert("app".into(), "stale".into());
            },
            |o: &mut Observed| {
                o.annotations
                    .insert(OBJECT_UID_ANNOTATION.into(), "an-older-object".into());
            },
        ] {
            let mut snapshot = snapshot.clone();
            broken(snapshot.host.get_mut(&host_key).unwrap());
            let findings = check(&config, &expected, &foreign, &BTreeMap::new(), &snapshot);
            assert_eq!(findings.wrong.len(), 1, "{findings:#?}");
            assert_eq!(findings.violations(), 1);
        }
    }

    #[test]
    fn a_copy_left_after_the_virtual_delete_is_an_orphan() {
        let (config, mut expected, foreign, mut snapshot) = world();
        let (key, _) = second_synced(&config, &expected);
        expected.remove(&key);
        snapshot.virt.remove(&key);
        let findings = check(&config, &expected, &foreign, &BTreeMap::new(), &snapshot);
        assert_eq!(findings.orphans.len(), 1, "{findings:#?}");
        assert_eq!(findings.violations(), 1);
    }

    #[test]
    fn the_control_planes_root_ca_is_no_drift_and_other_namespaces_copies_are_not_judged() {
        let (config, expected, foreign, mut snapshot) = world();
        let namespace = expected.keys().next().unwrap().namespace.clone();
        let synced_before = check(&config, &expected, &foreign, &BTreeMap::new(), &snapshot).synced;
        let mut published = |namespace: &str, in_view: bool| {
            let key = Key {
                kind: Kind::ConfigMap,
                namespace: namespace.to_string(),
                name: "kube-root-ca.crt".into(),
            };
            let data = BTreeMap::from([("ca.crt".to_string(), "PEM".to_string())]);
            let virtual_object = Observed {
                uid: format!("ca-{namespace}"),
                data: data.clone(),
                ..Default::default()
            };
            let host_key = host_key_of(&config, &key);
            let annotations = BTreeMap::from([
                (OBJECT_NAME_ANNOTATION.to_string(), key.name.clone()),
                (OBJECT_NAMESPACE_ANNOTATION.to_string(), key.namespace.clone()),
                (OBJECT_UID_ANNOTATION.to_string(), virtual_object.uid.clone()),
                (CLUSTER_UID_ANNOTATION.to_string(), "cluster-b".to_string()),
            ]);
            let labels = BTreeMap::from([(MANAGED_BY_LABEL.to_string(), INSTANCE.to_string())]);
            snapshot.host.insert(
                host_key,
                Observed {
                    labels,
                    annotations,
                    data,
                    ..Default::default()
                },
            );
            if in_view {
                snapshot.virt.insert(key, virtual_object);
            }
        };
        published(&namespace, true);
        published("kube-system", false);
        let findings = check(&config, &expected, &foreign, &BTreeMap::new(), &snapshot);
        assert_eq!(findings.violations(), 0, "{findings:#?}");
        assert_eq!(
            findings.synced,
            synced_before + 1,
            "the root CA's copy is checked"
        );
    }

    #[test]
    fn a_second_copy_under_another_name_is_a_duplicate() {
        let (config, expected, foreign, mut snapshot) = world();
        let (_, host_key) = second_synced(&config, &expected);
        let copy = snapshot.host[&host_key].clone();
        let other = Key {
            name: format!("{}-2", host_key.name),
            ..host_key
        };
        snapshot.host.insert(other, copy);
        let findings = check(&config, &expected, &foreign, &BTreeMap::new(), &snapshot);
        assert_eq!(findings.duplicates.len(), 1, "{findings:#?}");
        assert_eq!(findings.violations(), 1);
    }

    #[test]
    fn an_overwritten_or_deleted_foreign_object_is_touched() {
        let (config, expected, foreign, snapshot) = world();
        let blocked = foreign.keys().next().unwrap().clone();
        let mut overwritten = snapshot.clone();
        let object = overwritten.host.get_mut(&blocked).unwrap();
        object.resource_version = "2".into();
        object.labels.insert(MANAGED_BY_LABEL.into(), INSTANCE.into());
        let findings = check(&config, &expected, &foreign, &BTreeMap::new(), &overwritten);
        assert_eq!(findings.foreign_touched.len(), 1, "{findings:#?}");

        let mut deleted = snapshot;
        deleted.host.remove(&blocked);
        let findings = check(&config, &expected, &foreign, &BTreeMap::new(), &deleted);
        assert_eq!(findings.foreign_touched.len(), 1, "{findings:#?}");
    }

    #[test]
    fn a_virtual_object_changed_behind_the_churn_is_drift() {
        let (config, expected, foreign, mut snapshot) = world();
        let (key, _) = second_synced(&config, &expected);
        snapshot
            .virt
            .get_mut(&key)
            .unwrap()
            .labels
            .insert("synced-up".into(), "oops".into());
        let findings = check(&config, &expected, &foreign, &BTreeMap::new(), &snapshot);
        assert_eq!(findings.virtual_drift.len(), 1, "{findings:#?}");
    }

    #[test]
    fn a_copy_made_for_another_cluster_is_wrong() {
        let (config, expected, foreign, mut snapshot) = world();
        let (_, host_key) = second_synced(&config, &expected);
        let copy = snapshot.host.get_mut(&host_key).unwrap();
        copy.annotations
            .insert(CLUSTER_UID_ANNOTATION.into(), "cluster-a".into());
        let findings = check(&config, &expected, &foreign, &BTreeMap::new(), &snapshot);
        assert_eq!(findings.wrong.len(), 1, "{findings:#?}");
        assert_eq!(findings.violations(), 1);
    }

    /// `world()` after an empty restart of the virtual cluster: an earlier cluster's copy of an
    /// object the restart lost, and one at the host name of the second virtual object (its
    /// namesake in the new cluster, which therefore has no copy); returns them as recorded.
    /// Host objects by key.
    type Objects = BTreeMap<Key, Observed>;

    fn world_with_earlier_copies() -> (Config, BTreeMap<Key, Content>, Objects, Objects, Snapshot) {
        let (config, expected, foreign, mut snapshot) = world();
        let earlier_copy = |name: &str, namespace: &str| Observed {
            uid: format!("host-{name}"),
            resource_version: "7".into(),
            labels: BTreeMap::from([(MANAGED_BY_LABEL.into(), INSTANCE.into())]),
            annotations: BTreeMap::from([
                (OBJECT_NAME_ANNOTATION.into(), name.into()),
                (OBJECT_NAMESPACE_ANNOTATION.into(), namespace.into()),
                (OBJECT_UID_ANNOTATION.into(), format!("old-{name}")),
                (CLUSTER_UID_ANNOTATION.into(), "cluster-a".into()),
            ]),
            data: BTreeMap::from([("old".into(), "data".into())]),
            terminating: false,
        };
        let lost = Key {
            kind: Kind::ConfigMap,
            namespace: "tenant-0".into(),
            name: "lost".into(),
        };
        let (namesake, namesake_host) = second_synced(&config, &expected);
        let mut earlier = BTreeMap::from([(
            host_key_of(&config, &lost),
            earlier_copy(&lost.name, &lost.namespace),
        )]);
        earlier.insert(namesake_host, earlier_copy(&namesake.name, &namesake.namespace));
        snapshot
            .host
            .extend(earlier.iter().map(|(k, v)| (k.clone(), v.clone())));
        (config, expected, foreign, earlier, snapshot)
    }

    #[test]
    fn earlier_copies_kept_untouched_pass_and_block_their_namesakes() {
        let (config, expected, foreign, earlier, snapshot) = world_with_earlier_copies();
        let findings = check(&config, &expected, &foreign, &earlier, &snapshot);
        assert_eq!(findings.violations(), 0, "{findings:#?}");
        assert_eq!(findings.earlier_kept, 2);
        assert_eq!(findings.blocked_by_earlier, 1);
        assert_eq!(findings.synced, expected.len() - 2);

        // Unrecorded, the same copies are an orphan and a stale copy.
        let findings = check(&config, &expected, &foreign, &BTreeMap::new(), &snapshot);
        assert_eq!(findings.orphans.len(), 1, "{findings:#?}");
        assert_eq!(findings.wrong.len(), 1, "{findings:#?}");
    }

    #[test]
    fn a_deleted_or_modified_earlier_copy_is_touched() {
        let (config, expected, foreign, earlier, snapshot) = world_with_earlier_copies();
        for key in earlier.keys() {
            let mut deleted = snapshot.clone();
            deleted.host.remove(key);
            let findings = check(&config, &expected, &foreign, &earlier, &deleted);
            assert_eq!(findings.earlier_touched.len(), 1, "{findings:#?}");
            assert_eq!(findings.violations(), 1, "{findings:#?}");

            let mut modified = snapshot.clone();
            let copy = modified.host.get_mut(key).unwrap();
            copy.resource_version = "8".into();
            copy.annotations
                .insert(CLUSTER_UID_ANNOTATION.into(), "cluster-b".into());
            let findings = check(&config, &expected, &foreign, &earlier, &modified);
            assert_eq!(findings.earlier_touched.len(), 1, "{findings:#?}");
            assert_eq!(findings.violations(), 1, "{findings:#?}");
        }
    }
}
