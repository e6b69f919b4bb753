use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use vcsync_translators::{CLUSTER_UID_ANNOTATION, OBJECT_UID_ANNOTATION, RESTORED_UID_ANNOTATION};

use super::*;

fn established(uid: &str, startup: identity::Startup) -> record::Established {
    record::Established {
        current: ClusterIdentity {
            uid: uid.into(),
            created: Some("2026-12-01T10:00:00Z".parse().unwrap()),
        },
        startup,
        record: identity::IdentityRecord::default(),
        record_ref: ObjectReference::default(),
    }
}

fn guard(policy: EarlierCopies) -> (HostGuard, Arc<Metrics>) {
    let metrics = Arc::new(Metrics::new());
    let config = SafetyConfig {
        earlier_copies: policy,
        ..SafetyConfig::default()
    };
    let guard = HostGuard::new(
        &config,
        &established("now", identity::Startup::Same),
        metrics.clone(),
        None,
    );
    (guard, metrics)
}

fn host(cluster: &str, name: &str) -> ObjectMeta {
    ObjectMeta {
        annotations: Some(
            [
                (CLUSTER_UID_ANNOTATION.to_string(), cluster.to_string()),
                (OBJECT_NAME_ANNOTATION.to_string(), name.to_string()),
                (OBJECT_NAMESPACE_ANNOTATION.to_string(), "default".to_string()),
            ]
            .into(),
        ),
        creation_timestamp: Some(Time("2026-12-01T11:00:00Z".parse().unwrap())),
        ..ObjectMeta::default()
    }
}

/// A virtual namesake of a host copy, made by the tenant (not restored).
fn namesake() -> ObjectMeta {
    ObjectMeta::default()
}

fn key(name: &str) -> VirtualKey {
    VirtualKey::namespaced("default", name)
}

#[test]
fn an_earlier_clusters_copy_is_kept_and_reported_by_default() {
    let (guard, metrics) = guard(EarlierCopies::default());
    assert_eq!(
        guard.verdict("ConfigMap", &key("a"), &host("now", "a"), None),
        Verdict::Sync
    );
    assert_eq!(
        guard.verdict("ConfigMap", &key("b"), &host("before", "b"), None),
        Verdict::Keep
    );
    assert_eq!(
        guard.verdict("ConfigMap", &key("b"), &host("before", "b"), Some(&namesake())),
        Verdict::Keep,
        "not even over a namesake"
    );
    assert_eq!(guard.earlier_objects(), 1);
    assert_eq!(metrics.safety().earlier_cluster_objects.get(), 1);
    let readiness = metrics.status().readiness();
    assert!(
        readiness
            .warnings
            .iter()
            .any(|w| w.contains("1 host objects made for an earlier")),
        "{readiness:?}"
    );
    assert_eq!(
        guard.admit_delete("ConfigMap", &host("before", "b"), false),
        Admission::Earlier
    );
    guard.forget_earlier("ConfigMap", &key("b"));
    assert_eq!(metrics.safety().earlier_cluster_objects.get(), 0);
    assert!(metrics.status().readiness().warnings.is_empty());
}

#[test]
fn adoption_re_links_copies_with_a_namesake_and_keeps_the_others() {
    let (guard, _) = guard(EarlierCopies {
        adopt: true,
        ..EarlierCopies::default()
    });
    assert_eq!(
        guard.verdict("Pod", &key("web"), &host("before", "web"), Some(&namesake())),
        Verdict::Sync
    );
    assert_eq!(
        guard.admit_delete("Pod", &host("before", "web"), true),
        Admission::Allowed,
        "a re-linked pod of another UID is replaced as usual"
    );
    assert_eq!(
        guard.verdict(
            "ConfigMap",
            &key("web"),
            &host("before", "web"),
            Some(&namesake())
        ),
        Verdict::Sync
    );
    assert_eq!(
        guard.admit_delete("ConfigMap", &host("before", "web"), true),
        Admission::Earlier,
        "a re-linked config map is updated, never deleted"
    );
    assert_eq!(
        guard.verdict("Pod", &key("old"), &host("before", "old"), None),
        Verdict::Keep
    );
    assert_eq!(
        guard.admit_delete("Pod", &host("before", "old"), false),
        Admission::Earlier
    );
}

#[test]
fn a_restored_objects_copy_is_re_linked_whatever_the_policy_and_others_are_not() {
    let restored_from = |uid: &str| ObjectMeta {
        annotations: Some([(RESTORED_UID_ANNOTATION.to_string(), uid.to_string())].into()),
        ..ObjectMeta::default()
    };
    let mut copy = host("before", "web");
    copy.annotations
        .as_mut()
        .unwrap()
        .insert(OBJECT_UID_ANNOTATION.to_string(), "old-web".to_string());
    for policy in [
        EarlierCopies::default(),
        EarlierCopies {
            prune: true,
            ..EarlierCopies::default()
        },
    ] {
        let (guard, _) = guard(policy);
        assert_eq!(
            guard.verdict("Pod", &key("web"), &copy, Some(&restored_from("old-web"))),
            Verdict::Sync,
            "{policy:?}"
        );
        assert_eq!(guard.earlier_objects(), 0);
        assert_ne!(
            guard.verdict("Pod", &key("web"), &copy, Some(&restored_from("another-uid"))),
            Verdict::Sync,
            "restored from another object: {policy:?}"
        );
    }
}

#[test]
fn the_control_planes_root_ca_bundle_follows_the_new_cluster_whatever_the_policy() {
    let (guard, _) = guard(EarlierCopies::default());
    let root_ca = host("before", "kube-root-ca.crt");
    assert_eq!(
        guard.verdict("ConfigMap", &key("kube-root-ca.crt"), &root_ca, Some(&namesake())),
        Verdict::Sync
    );
    assert_eq!(
        guard.verdict("ConfigMap", &key("kube-root-ca.crt"), &root_ca, None),
        Verdict::Keep,
        "without a namesake it is kept like any other copy"
    );
    assert_eq!(
        guard.verdict(
            "Secret",
            &key("kube-root-ca.crt"),
            &host("before", "kube-root-ca.crt"),
            Some(&namesake())
        ),
        Verdict::Keep,
        "only the ConfigMap"
    );
}

#[test]
fn pruning_deletes_earlier_copies_and_adopt_and_prune_keeps_namesakes() {
    let (prune, _) = guard(EarlierCopies {
        prune: true,
        ..EarlierCopies::default()
    });
    assert_eq!(
        prune.verdict("Pod", &key("web"), &host("before", "web"), Some(&namesake())),
        Verdict::Prune
    );
    assert_eq!(
        prune.admit_delete("Pod", &host("before", "web"), false),
        Admission::Allowed
    );
    let (both, _) = guard(EarlierCopies {
        adopt: true,
        prune: true,
        restore: false,
    });
    assert_eq!(
        both.verdict("Pod", &key("web"), &host("before", "web"), Some(&namesake())),
        Verdict::Sync
    );
    assert_eq!(
        both.verdict("Pod", &key("old"), &host("before", "old"), None),
        Verdict::Prune
    );
}

#[tokio::test(start_paused = true)]
async fn unwitnessed_deletes_engage_the_brake_and_witnessed_ones_do_not_count() {
    let (guard, metrics) = guard(EarlierCopies::default());
    guard.count_host_objects(|| 200);
    for i in 0..150 {
        let name = format!("w-{i}");
        guard.witness_deleted("ConfigMap", &key(&name));
        assert_eq!(
            guard.admit_delete("ConfigMap", &host("now", &name), false),
            Admission::Allowed
        );
    }
    for i in 0..100 {
        assert_eq!(
            guard.admit_delete("ConfigMap", &host("now", &format!("u-{i}")), false),
            Admission::Allowed
        );
    }
    assert_eq!(
        guard.admit_delete("ConfigMap", &host("now", "u-100"), false),
        Admission::Held
    );
    assert_eq!(metrics.safety().deletion_brake_engaged.get(), 1);
    assert!(
        metrics
            .status()
            .readiness()
            .warnings
            .iter()
            .any(|w| w.starts_with("deletion brake: host deletes are paused"))
    );
    assert_eq!(
        guard.admit_delete("ConfigMap", &host("now", "present"), true),
        Admission::Allowed,
        "a delete decided on a virtual object that exists is not held"
    );
    guard.witness_deleted("ConfigMap", &key("late"));
    assert_eq!(
        guard.admit_delete("ConfigMap", &host("now", "late"), false),
        Admission::Allowed
    );
}

#[test]
fn a_replaced_cluster_is_reported_at_start() {
    let metrics = Arc::new(Metrics::new());
    let previous = ClusterIdentity {
        uid: "before".into(),
        created: None,
    };
    let _guard = HostGuard::new(
        &SafetyConfig::default(),
        &established("now", identity::Startup::Replaced { previous }),
        metrics.clone(),
        None,
    );
    assert_eq!(metrics.safety().cluster_replaced.get(), 1);
    let readiness = metrics.status().readiness();
    assert!(
        readiness.warnings[0].starts_with("identity: the virtual cluster was replaced"),
        "{readiness:?}"
    );
    assert!(metrics.encode().contains("vcsync_cluster_replaced 1"));
}

#[test]
fn restoring_implies_adopting() {
    let (guard, _) = guard(EarlierCopies {
        restore: true,
        ..EarlierCopies::default()
    });
    assert!(guard.restores());
    assert_eq!(
        guard.verdict("ConfigMap", &key("a"), &host("before", "a"), Some(&namesake())),
        Verdict::Sync
    );
    assert_eq!(
        guard.verdict("ConfigMap", &key("b"), &host("before", "b"), None),
        Verdict::Keep
    );
}

#[test]
fn pruning_never_deletes_a_host_namespace_the_current_cluster_uses() {
    let (prune, _) = guard(EarlierCopies {
        prune: true,
        ..EarlierCopies::default()
    });
    let ns = |name: &str| ObjectMeta {
        annotations: Some(
            [
                (CLUSTER_UID_ANNOTATION.to_string(), "before".to_string()),
                (OBJECT_NAME_ANNOTATION.to_string(), name.to_string()),
            ]
            .into(),
        ),
        ..ObjectMeta::default()
    };
    assert_eq!(
        prune.verdict(
            "Namespace",
            &VirtualKey::cluster("default"),
            &ns("default"),
            Some(&namesake())
        ),
        Verdict::Sync
    );
    assert_eq!(
        prune.verdict("Namespace", &VirtualKey::cluster("gone"), &ns("gone"), None),
        Verdict::Prune
    );
}
