//! The watch-fed indices: small pure tests plus a model check.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use k8s_openapi::api::core::v1::Pod;
use proptest::prelude::*;
use vcsync_translators::{RefKind, RefTarget, ReferenceIndex, VirtualKey, pod_references};

fn pod(name: &str) -> VirtualKey {
    VirtualKey::namespaced("shop", name)
}

fn cm(name: &str) -> RefTarget {
    RefTarget::new(RefKind::ConfigMap, "shop", name)
}

fn secret(name: &str) -> RefTarget {
    RefTarget::new(RefKind::Secret, "shop", name)
}

fn refs(targets: &[RefTarget]) -> BTreeSet<RefTarget> {
    targets.iter().cloned().collect()
}

#[test]
fn new_index_is_empty() {
    let index = ReferenceIndex::new();
    assert!(index.is_empty());
    assert_eq!(index.len(), 0);
    assert!(!index.is_referenced(&cm("a")));
    assert!(index.referencing_pods(&cm("a")).is_empty());
    assert!(index.referenced_targets().is_empty());
}

#[test]
fn apply_new_pod_returns_all_its_targets() {
    let index = ReferenceIndex::default();
    assert_eq!(
        index.apply(pod("p"), refs(&[secret("s"), cm("a")])),
        vec![cm("a"), secret("s")]
    );
    assert_eq!(index.len(), 1);
    assert!(index.is_referenced(&cm("a")));
    assert_eq!(index.referencing_pods(&secret("s")), vec![pod("p")]);
    assert_eq!(index.references_of(&pod("p")), refs(&[cm("a"), secret("s")]));
}

#[test]
fn reapplying_the_same_references_changes_nothing() {
    let index = ReferenceIndex::new();
    index.apply(pod("p"), refs(&[cm("a")]));
    assert!(index.apply(pod("p"), refs(&[cm("a")])).is_empty());
}

#[test]
fn apply_returns_only_the_difference() {
    let index = ReferenceIndex::new();
    index.apply(pod("p"), refs(&[cm("a"), cm("b")]));
    assert_eq!(
        index.apply(pod("p"), refs(&[cm("b"), cm("c")])),
        vec![cm("a"), cm("c")]
    );
    assert!(!index.is_referenced(&cm("a")));
    assert!(index.is_referenced(&cm("b")));
    assert!(index.is_referenced(&cm("c")));
}

#[test]
fn applying_no_references_is_a_delete() {
    let index = ReferenceIndex::new();
    index.apply(pod("p"), refs(&[cm("a")]));
    assert_eq!(index.apply(pod("p"), BTreeSet::new()), vec![cm("a")]);
    assert!(index.is_empty());
    assert!(index.apply(pod("q"), BTreeSet::new()).is_empty());
    assert!(index.is_empty());
}

#[test]
fn delete_returns_the_targets_that_lost_the_pod() {
    let index = ReferenceIndex::new();
    index.apply(pod("p"), refs(&[cm("a"), secret("s")]));
    assert_eq!(index.delete(&pod("p")), vec![cm("a"), secret("s")]);
    assert!(index.is_empty());
    assert!(index.referenced_targets().is_empty());
}

#[test]
fn deleting_an_unknown_pod_changes_nothing() {
    let index = ReferenceIndex::new();
    index.apply(pod("p"), refs(&[cm("a")]));
    assert!(index.delete(&pod("q")).is_empty());
    assert_eq!(index.len(), 1);
}

#[test]
fn shared_target_stays_referenced_until_the_last_pod_goes() {
    let index = ReferenceIndex::new();
    index.apply(pod("p"), refs(&[cm("shared")]));
    // The set of referencing pods changes, so the target is reported although it was referenced.
    assert_eq!(index.apply(pod("q"), refs(&[cm("shared")])), vec![cm("shared")]);
    assert_eq!(index.referencing_pods(&cm("shared")), vec![pod("p"), pod("q")]);
    assert_eq!(index.delete(&pod("p")), vec![cm("shared")]);
    assert!(index.is_referenced(&cm("shared")));
    assert_eq!(index.referencing_pods(&cm("shared")), vec![pod("q")]);
    assert_eq!(index.delete(&pod("q")), vec![cm("shared")]);
    assert!(!index.is_referenced(&cm("shared")));
}

#[test]
fn same_name_in_other_namespace_or_kind_is_another_target() {
    let index = ReferenceIndex::new();
    index.apply(pod("p"), refs(&[cm("a")]));
    assert!(!index.is_referenced(&secret("a")));
    assert!(!index.is_referenced(&RefTarget::new(RefKind::ConfigMap, "other", "a")));
}

#[test]
fn reset_removes_stale_pods() {
    let index = ReferenceIndex::new();
    index.apply(pod("gone"), refs(&[cm("old")]));
    index.apply(pod("kept"), refs(&[cm("a")]));
    let changed = index.reset([(pod("kept"), refs(&[cm("a")]))]);
    assert_eq!(changed, vec![cm("old")]);
    assert_eq!(index.len(), 1);
    assert!(!index.is_referenced(&cm("old")));
    assert!(index.references_of(&pod("gone")).is_empty());
}

#[test]
fn reset_reports_exactly_the_changed_targets() {
    let index = ReferenceIndex::new();
    index.apply(pod("p"), refs(&[cm("a"), cm("shared")]));
    index.apply(pod("q"), refs(&[cm("shared")]));
    // p is gone, q now also uses b, r is new and uses shared: a and b change, shared loses p and
    // gains r, so it changes too.
    let changed = index.reset([
        (pod("q"), refs(&[cm("shared"), cm("b")])),
        (pod("r"), refs(&[cm("shared")])),
    ]);
    assert_eq!(changed, vec![cm("a"), cm("b"), cm("shared")]);
    assert_eq!(index.referencing_pods(&cm("shared")), vec![pod("q"), pod("r")]);
}

#[test]
fn reset_to_the_same_state_reports_nothing() {
    let index = ReferenceIndex::new();
    index.apply(pod("p"), refs(&[cm("a")]));
    index.apply(pod("q"), refs(&[cm("a"), secret("s")]));
    let same = [
        (pod("q"), refs(&[cm("a"), secret("s")])),
        (pod("p"), refs(&[cm("a")])),
    ];
    assert!(index.reset(same).is_empty());
}

#[test]
fn reset_to_nothing_empties_the_index() {
    let index = ReferenceIndex::new();
    index.apply(pod("p"), refs(&[cm("a")]));
    assert_eq!(index.reset([]), vec![cm("a")]);
    assert!(index.is_empty());
}

#[test]
fn reset_with_a_repeated_pod_takes_the_last() {
    let index = ReferenceIndex::new();
    let changed = index.reset([(pod("p"), refs(&[cm("a")])), (pod("p"), refs(&[cm("b")]))]);
    assert_eq!(changed, vec![cm("b")]);
    assert_eq!(index.references_of(&pod("p")), refs(&[cm("b")]));
}

#[test]
fn index_is_shareable_across_threads() {
    let index = Arc::new(ReferenceIndex::new());
    let handles: Vec<_> = (0..4)
        .map(|t| {
            let index = Arc::clone(&index);
            std::thread::spawn(move || {
                for i in 0..50 {
                    let p = pod(&format!("p{t}-{i}"));
                    index.apply(p.clone(), refs(&[cm("shared"), cm(&format!("c{i}"))]));
                    if i % 2 == 0 {
                        index.delete(&p);
                    }
                }
            })
        })
        .collect();
    for handle in handles {
        handle.join().unwrap();
    }
    assert_eq!(index.len(), 100);
    assert_eq!(index.referencing_pods(&cm("shared")).len(), 100);
    assert!(!index.is_referenced(&cm("c0")));
    assert_eq!(index.referencing_pods(&cm("c1")).len(), 4);
}

/// The way the syncer feeds the index: pod events through `pod_references`.
#[test]
fn fed_from_pod_references() {
    let pod_json = |sa: &str| {
        serde_json::from_value::<Pod>(serde_json::json!({
            "metadata": { "name": "web", "namespace": "shop" },
            "spec": {
                "serviceAccountName": sa,
                "containers": [{ "name": "c", "envFrom": [{ "configMapRef": { "name": "a" } }] }],
            },
        }))
        .unwrap()
    };
    let sa = |name: &str| RefTarget::new(RefKind::ServiceAccount, "shop", name);
    let index = ReferenceIndex::new();
    assert_eq!(
        index.apply(pod("web"), pod_references(&pod_json("one"))),
        vec![cm("a"), sa("one")]
    );
    assert_eq!(
        index.apply(pod("web"), pod_references(&pod_json("two"))),
        vec![sa("one"), sa("two")]
    );
    assert_eq!(index.delete(&pod("web")), vec![cm("a"), sa("two")]);
}

#[derive(Clone, Debug)]
enum Event {
    Apply(VirtualKey, BTreeSet<RefTarget>),
    Delete(VirtualKey),
    Reset(Vec<(VirtualKey, BTreeSet<RefTarget>)>),
}

fn small_pod() -> impl Strategy<Value = VirtualKey> {
    (0..6u8).prop_map(|i| pod(&format!("p{i}")))
}

fn small_refs() -> impl Strategy<Value = BTreeSet<RefTarget>> {
    let target = (0..2u8, 0..4u8).prop_map(|(k, i)| {
        if k == 0 {
            cm(&format!("c{i}"))
        } else {
            secret(&format!("s{i}"))
        }
    });
    prop::collection::btree_set(target, 0..4)
}

fn event() -> impl Strategy<Value = Event> {
    prop_oneof![
        6 => (small_pod(), small_refs()).prop_map(|(p, r)| Event::Apply(p, r)),
        3 => small_pod().prop_map(Event::Delete),
        1 => prop::collection::vec((small_pod(), small_refs()), 0..5).prop_map(Event::Reset),
    ]
}

/// target -> referencing pods, computed from a plain pod -> references model.
fn inverted(model: &BTreeMap<VirtualKey, BTreeSet<RefTarget>>) -> BTreeMap<RefTarget, Vec<VirtualKey>> {
    let mut by_target: BTreeMap<RefTarget, Vec<VirtualKey>> = BTreeMap::new();
    for (pod, refs) in model {
        for target in refs {
            by_target.entry(target.clone()).or_default().push(pod.clone());
        }
    }
    by_target
}

/// Everything observable about a reference index.
fn observe(index: &ReferenceIndex) -> BTreeMap<RefTarget, Vec<VirtualKey>> {
    index
        .referenced_targets()
        .into_iter()
        .map(|t| (t.clone(), index.referencing_pods(&t)))
        .collect()
}

proptest! {
    /// After any sequence of events the index equals one rebuilt from scratch, and every event
    /// reported exactly the targets whose referencing pods changed.
    #[test]
    fn index_matches_a_rebuild(events in prop::collection::vec(event(), 0..40)) {
        let index = ReferenceIndex::new();
        let mut model: BTreeMap<VirtualKey, BTreeSet<RefTarget>> = BTreeMap::new();
        for event in events {
            let before = inverted(&model);
            let changed = match event {
                Event::Apply(pod, refs) => {
                    if refs.is_empty() { model.remove(&pod); } else { model.insert(pod.clone(), refs.clone()); }
                    index.apply(pod, refs)
                }
                Event::Delete(pod) => {
                    model.remove(&pod);
                    index.delete(&pod)
                }
                Event::Reset(pods) => {
                    // A later entry for the same pod wins, also when it has no references.
                    model.clear();
                    for (pod, refs) in &pods {
                        if refs.is_empty() { model.remove(pod); } else { model.insert(pod.clone(), refs.clone()); }
                    }
                    index.reset(pods)
                }
            };
            let after = inverted(&model);
            let expected: Vec<RefTarget> = before.keys().chain(after.keys())
                .filter(|t| before.get(*t) != after.get(*t))
                .cloned()
                .collect::<BTreeSet<_>>()
                .into_iter()
                .collect();
            prop_assert_eq!(changed, expected);
            prop_assert_eq!(observe(&index), after.clone());
            prop_assert_eq!(index.len(), model.len());
        }
        let rebuilt = ReferenceIndex::new();
        rebuilt.reset(model.clone());
        prop_assert_eq!(observe(&index), observe(&rebuilt));
        for pod in model.keys() {
            prop_assert_eq!(index.references_of(pod), rebuilt.references_of(pod));
        }
    }
}
