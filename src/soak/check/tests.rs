//! The checker on deliberately broken states.

use super::*;
use crate::soak::{
    args::{HOST_NAMESPACE, INSTANCE},
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
