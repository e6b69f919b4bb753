//! The churn of a seed: seeded randomness, the objects, and the plan of operations.

use std::collections::BTreeMap;

use vcsync_translators::MANAGED_BY_LABEL;

/// SplitMix64: small, seedable, good enough to pick operations.
#[derive(Default)]
pub(super) struct Rng(pub(super) u64);

impl Rng {
    pub(super) fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (n > 0).
    pub(super) fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    /// True with probability `percent`/100.
    pub(super) fn chance(&mut self, percent: usize) -> bool {
        self.below(100) < percent
    }
}

/// The kinds the soak churns.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(super) enum Kind {
    ConfigMap,
    Secret,
    Pod,
}

impl Kind {
    pub(super) fn as_str(self) -> &'static str {
        match self {
            Kind::ConfigMap => "ConfigMap",
            Kind::Secret => "Secret",
            Kind::Pod => "Pod",
        }
    }
}

/// An object of either cluster.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(super) struct Key {
    pub(super) kind: Kind,
    pub(super) namespace: String,
    pub(super) name: String,
}

impl std::fmt::Display for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}/{}", self.kind.as_str(), self.namespace, self.name)
    }
}

/// What the churn writes into a virtual object. A pod's `data` is what it references: its
/// ConfigMap volume ([`POD_CONFIG_MAP`]) and its Secret env ([`POD_SECRET`]), by name.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(super) struct Content {
    pub(super) data: BTreeMap<String, String>,
    pub(super) labels: BTreeMap<String, String>,
    /// Only keys starting with [`ANNOTATION_PREFIX`].
    pub(super) annotations: BTreeMap<String, String>,
}

/// Key of a pod's content naming the ConfigMap it mounts.
pub(super) const POD_CONFIG_MAP: &str = "configMap";
/// Key of a pod's content naming the Secret it takes an env var from.
pub(super) const POD_SECRET: &str = "secret";
/// The churn's annotations start with this: the checker compares these and nothing else (the
/// syncer and the control planes add their own).
pub(super) const ANNOTATION_PREFIX: &str = "soak-";

/// One churn operation on the virtual cluster.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum Op {
    Create(Key, Content),
    /// Key, content before, content after.
    Update(Key, Content, Content),
    /// Key and, for a pod, the grace period of the delete (0: forced).
    Delete(Key, Option<u32>),
    /// The virtual API server comes back empty (its datastore lost): every virtual object is
    /// gone, the namespaces are recreated, the churn goes on in the new cluster.
    EmptyVirtualRestart,
}

/// How much the churn does.
#[derive(Clone, Copy, Debug)]
pub(super) struct Sizes {
    /// ConfigMaps and Secrets created on their own (pods' references come on top).
    pub(super) objects: usize,
    /// Pods created.
    pub(super) pods: usize,
    pub(super) namespaces: usize,
    pub(super) empty_restarts: usize,
}

pub(super) fn virtual_namespace(i: usize) -> String {
    format!("tenant-{i}")
}

pub(super) fn random_data(rng: &mut Rng) -> BTreeMap<String, String> {
    (0..1 + rng.below(3))
        .map(|j| (format!("k{j}"), format!("{:x}", rng.next())))
        .collect()
}

pub(super) fn random_labels(rng: &mut Rng) -> BTreeMap<String, String> {
    let mut labels = BTreeMap::from([("app".to_string(), format!("a{}", rng.below(5)))]);
    if rng.chance(50) {
        labels.insert("tier".into(), format!("t{}", rng.below(3)));
    }
    if rng.chance(5) {
        // A tenant trying to forge ownership: the host copy must carry the real marker.
        labels.insert(MANAGED_BY_LABEL.into(), "forged".into());
    }
    labels
}

pub(super) fn random_annotations(rng: &mut Rng) -> BTreeMap<String, String> {
    (0..rng.below(3))
        .map(|j| {
            (
                format!("{ANNOTATION_PREFIX}note-{j}"),
                format!("{:x}", rng.next()),
            )
        })
        .collect()
}

/// The ConfigMap and the Secret pod `pod` references (its own, created with it).
pub(super) fn pod_references(pod: &Key) -> [Key; 2] {
    let reference = |kind, suffix| Key {
        kind,
        namespace: pod.namespace.clone(),
        name: format!("{}-{suffix}", pod.name),
    };
    [
        reference(Kind::ConfigMap, "config"),
        reference(Kind::Secret, "env"),
    ]
}

/// Salt of the stream that places the empty virtual restarts, so that the rest of a seed's plan
/// does not depend on how many there are.
const RESTART_SALT: u64 = 0x0e4b_7e5e_12a1_d00d;

/// The churn of a seed: creates until `sizes.objects` ConfigMaps and Secrets and `sizes.pods`
/// pods were created, updates (data, labels or annotations) and deletes in between; some names
/// are reused after a delete (a new object, a new UID), some are long or dotted so that they
/// take the hashed host form. A pod mounts a ConfigMap and takes an env var from a Secret of its
/// own, created just before it when not there and never deleted while it lives; pods are
/// deleted gracefully (1 to 3 s) or forced. `sizes.empty_restarts` times, at random points
/// between two creates, the virtual cluster comes back empty ([`Op::EmptyVirtualRestart`]):
/// the plan forgets its objects, and some of the lost names are reused in the new cluster.
pub(super) fn plan(seed: u64, sizes: Sizes) -> Vec<Op> {
    let mut planner = Planner {
        rng: Rng(seed),
        namespaces: sizes.namespaces.max(1),
        ..Planner::default()
    };
    let mut restarts = restart_points(seed, sizes.objects, sizes.empty_restarts)
        .into_iter()
        .peekable();
    while planner.created < sizes.objects || planner.pods_created < sizes.pods {
        if restarts.next_if_eq(&planner.created).is_some() {
            planner.empty_restart();
            continue;
        }
        let pod_step = if planner.created >= sizes.objects {
            true
        } else if planner.pods_created >= sizes.pods {
            false
        } else {
            planner.rng.below(sizes.objects + sizes.pods) < sizes.pods
        };
        if pod_step {
            planner.pod_step(planner.pods_created < sizes.pods);
        } else {
            planner.object_step(planner.created < sizes.objects);
        }
    }
    planner.ops
}

/// The state of a plan being made.
#[derive(Default)]
struct Planner {
    rng: Rng,
    namespaces: usize,
    /// Live ConfigMaps and Secrets (pods' references included).
    live: Vec<(Key, Content)>,
    /// Deleted ones: a create may reuse the name.
    deleted: Vec<Key>,
    /// Names of objects an empty restart lost: the new cluster may create namesakes.
    lost: Vec<Key>,
    live_pods: Vec<(Key, Content)>,
    deleted_pods: Vec<Key>,
    lost_pods: Vec<Key>,
    /// ConfigMaps and Secrets of live pods: never deleted.
    pinned: std::collections::BTreeSet<Key>,
    ops: Vec<Op>,
    /// ConfigMaps and Secrets created on their own.
    created: usize,
    pods_created: usize,
}

impl Planner {
    fn empty_restart(&mut self) {
        self.lost.extend(self.live.drain(..).map(|(key, _)| key));
        self.lost_pods
            .extend(self.live_pods.drain(..).map(|(key, _)| key));
        self.pinned.clear();
        self.ops.push(Op::EmptyVirtualRestart);
    }

    /// A key from `lost` (15 %) or `deleted` (10 %), else None.
    fn reused(rng: &mut Rng, lost: &mut Vec<Key>, deleted: &mut Vec<Key>) -> Option<Key> {
        if !lost.is_empty() && rng.chance(15) {
            Some(lost.swap_remove(rng.below(lost.len())))
        } else if !deleted.is_empty() && rng.chance(10) {
            Some(deleted.swap_remove(rng.below(deleted.len())))
        } else {
            None
        }
    }

    fn create_object(&mut self, key: Key) {
        let content = Content {
            data: random_data(&mut self.rng),
            labels: random_labels(&mut self.rng),
            annotations: random_annotations(&mut self.rng),
        };
        self.live.push((key.clone(), content.clone()));
        self.ops.push(Op::Create(key, content));
    }

    /// A changed copy of `before`: data (objects only), labels or annotations, or all.
    fn changed(&mut self, before: &Content, data: bool) -> Content {
        let mut after = before.clone();
        match self.rng.below(10) {
            0..=3 if data => after.data = random_data(&mut self.rng),
            0..=5 => after.labels = random_labels(&mut self.rng),
            6..=8 => after.annotations = random_annotations(&mut self.rng),
            _ => {
                if data {
                    after.data = random_data(&mut self.rng);
                }
                after.labels = random_labels(&mut self.rng);
                after.annotations = random_annotations(&mut self.rng);
            }
        }
        after
    }

    /// Creates (when `create`), updates or deletes a ConfigMap or Secret.
    fn object_step(&mut self, create: bool) {
        let roll = self.rng.below(100);
        if create && (self.live.is_empty() || roll < 50) {
            let key = match Self::reused(&mut self.rng, &mut self.lost, &mut self.deleted) {
                Some(key) => key,
                None => {
                    let kind = if self.rng.chance(50) {
                        Kind::ConfigMap
                    } else {
                        Kind::Secret
                    };
                    let prefix = if kind == Kind::ConfigMap { "cm" } else { "sec" };
                    let created = self.created;
                    let name = match self.rng.below(20) {
                        0 => format!("{prefix}-{created}-{}", "long".repeat(12)),
                        1 => format!("{prefix}.v1-{created}"),
                        _ => format!("{prefix}-{created}"),
                    };
                    Key {
                        kind,
                        namespace: virtual_namespace(self.rng.below(self.namespaces)),
                        name,
                    }
                }
            };
            // A reused name may be live again already (a pod's reference made it so).
            if self.live.iter().any(|(live, _)| *live == key) {
                return;
            }
            self.create_object(key);
            self.created += 1;
        } else if !self.live.is_empty() {
            let i = self.rng.below(self.live.len());
            if roll < 80 || self.pinned.contains(&self.live[i].0) {
                let before = self.live[i].1.clone();
                let after = self.changed(&before, true);
                self.live[i].1 = after.clone();
                self.ops.push(Op::Update(self.live[i].0.clone(), before, after));
            } else {
                let (key, _) = self.live.swap_remove(i);
                self.deleted.push(key.clone());
                self.ops.push(Op::Delete(key, None));
            }
        }
    }

    /// Creates (when `create`), updates or deletes a pod.
    fn pod_step(&mut self, create: bool) {
        let roll = self.rng.below(100);
        if create && (self.live_pods.is_empty() || roll < 50) {
            let key = Self::reused(&mut self.rng, &mut self.lost_pods, &mut self.deleted_pods)
                .unwrap_or_else(|| Key {
                    kind: Kind::Pod,
                    namespace: virtual_namespace(self.rng.below(self.namespaces)),
                    name: format!("pod-{}", self.pods_created),
                });
            let references = pod_references(&key);
            for reference in &references {
                if !self.live.iter().any(|(live, _)| live == reference) {
                    self.create_object(reference.clone());
                }
                self.pinned.insert(reference.clone());
            }
            let [config_map, secret] = references;
            let content = Content {
                data: BTreeMap::from([
                    (POD_CONFIG_MAP.to_string(), config_map.name),
                    (POD_SECRET.to_string(), secret.name),
                ]),
                labels: random_labels(&mut self.rng),
                annotations: random_annotations(&mut self.rng),
            };
            self.live_pods.push((key.clone(), content.clone()));
            self.ops.push(Op::Create(key, content));
            self.pods_created += 1;
        } else if !self.live_pods.is_empty() {
            let i = self.rng.below(self.live_pods.len());
            if roll < 75 {
                let before = self.live_pods[i].1.clone();
                let after = self.changed(&before, false);
                self.live_pods[i].1 = after.clone();
                self.ops
                    .push(Op::Update(self.live_pods[i].0.clone(), before, after));
            } else {
                let (key, _) = self.live_pods.swap_remove(i);
                for reference in pod_references(&key) {
                    self.pinned.remove(&reference);
                }
                let grace = if self.rng.chance(40) {
                    0
                } else {
                    1 + self.rng.below(3) as u32
                };
                self.deleted_pods.push(key.clone());
                self.ops.push(Op::Delete(key, Some(grace)));
            }
        }
    }
}

/// Before which create (its index) each empty restart happens: distinct, sorted, at least one
/// create before the first; at most `objects - 1` of them.
fn restart_points(seed: u64, objects: usize, empty_restarts: usize) -> Vec<usize> {
    let mut rng = Rng(seed ^ RESTART_SALT);
    let mut points = std::collections::BTreeSet::new();
    while points.len() < empty_restarts.min(objects.saturating_sub(1)) {
        points.insert(1 + rng.below(objects - 1));
    }
    points.into_iter().collect()
}

/// The virtual state the churn leaves.
pub(super) fn final_state(ops: &[Op]) -> BTreeMap<Key, Content> {
    let mut state = BTreeMap::new();
    for op in ops {
        match op {
            Op::Create(key, content) | Op::Update(key, _, content) => {
                state.insert(key.clone(), content.clone());
            }
            Op::Delete(key, _) => {
                state.remove(key);
            }
            Op::EmptyVirtualRestart => state.clear(),
        }
    }
    state
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    fn sizes(objects: usize, pods: usize, empty_restarts: usize) -> Sizes {
        Sizes {
            objects,
            pods,
            namespaces: 3,
            empty_restarts,
        }
    }

    fn creates(ops: &[Op], kind: Kind) -> usize {
        ops.iter()
            .filter(|op| matches!(op, Op::Create(key, _) if key.kind == kind))
            .count()
    }

    /// Checks that every update and delete is of an object live in the current cluster, that
    /// no object is created twice in one cluster, and that a pod's ConfigMap and Secret are
    /// live whenever it is; returns the names reused after an empty restart (namesakes of
    /// objects the restart lost).
    fn replay(ops: &[Op]) -> usize {
        let mut live = BTreeSet::new();
        let mut lost = BTreeSet::new();
        let mut namesakes = 0;
        for op in ops {
            match op {
                Op::Create(key, _) => {
                    assert!(live.insert(key.clone()), "{key} created twice");
                    namesakes += usize::from(lost.remove(key));
                }
                Op::Update(key, ..) => assert!(live.contains(key)),
                Op::Delete(key, grace) => {
                    assert!(live.remove(key));
                    assert_eq!(grace.is_some(), key.kind == Kind::Pod, "{op:?}");
                }
                Op::EmptyVirtualRestart => lost.append(&mut live),
            }
            for pod in live.iter().filter(|key| key.kind == Kind::Pod) {
                for reference in pod_references(pod) {
                    assert!(live.contains(&reference), "{pod} lives without {reference}");
                }
            }
        }
        namesakes
    }

    #[test]
    fn a_seed_gives_one_plan_that_creates_the_requested_objects() {
        let a = plan(42, sizes(300, 0, 0));
        assert_eq!(a, plan(42, sizes(300, 0, 0)));
        assert_ne!(a, plan(43, sizes(300, 0, 0)));
        assert_eq!(creates(&a, Kind::ConfigMap) + creates(&a, Kind::Secret), 300);
        assert_eq!(creates(&a, Kind::Pod), 0);
        assert!(a.iter().any(|op| matches!(op, Op::Update(..))));
        assert!(a.iter().any(|op| matches!(op, Op::Delete(..))));
        assert!(!a.contains(&Op::EmptyVirtualRestart));
        assert_eq!(replay(&a), 0);
    }

    #[test]
    fn pods_come_with_their_references_and_are_deleted_gracefully_or_forced() {
        let a = plan(42, sizes(200, 100, 0));
        assert_eq!(a, plan(42, sizes(200, 100, 0)));
        assert_eq!(creates(&a, Kind::Pod), 100);
        // Every pod's references on top of the 200 objects (some reused from a namesake).
        assert!(creates(&a, Kind::ConfigMap) + creates(&a, Kind::Secret) >= 300);
        let graces: BTreeSet<u32> = a
            .iter()
            .filter_map(|op| match op {
                Op::Delete(_, grace) => *grace,
                _ => None,
            })
            .collect();
        assert!(graces.contains(&0) && graces.iter().any(|g| *g > 0), "{graces:?}");
        let pod_updates = a
            .iter()
            .filter(|op| matches!(op, Op::Update(key, ..) if key.kind == Kind::Pod))
            .collect::<Vec<_>>();
        assert!(!pod_updates.is_empty());
        for op in pod_updates {
            let Op::Update(_, before, after) = op else {
                unreachable!()
            };
            assert_eq!(before.data, after.data, "a pod's references never change");
        }
        assert_eq!(replay(&a), 0);
    }

    #[test]
    fn empty_restarts_reset_the_plan_and_reuse_lost_names() {
        let a = plan(42, sizes(300, 60, 3));
        assert_eq!(a, plan(42, sizes(300, 60, 3)));
        let restarts: Vec<usize> = (0..a.len())
            .filter(|&i| a[i] == Op::EmptyVirtualRestart)
            .collect();
        assert_eq!(restarts.len(), 3, "{restarts:?}");
        assert!(matches!(a[0], Op::Create(..)), "a create comes first");
        assert_eq!(creates(&a, Kind::Pod), 60);
        // The plan before the first restart is the plan without restarts.
        assert_eq!(a[..restarts[0]], plan(42, sizes(300, 60, 0))[..restarts[0]]);
        assert!(replay(&a) > 0, "some lost names are reused in the new cluster");
        // The final state is only the last cluster's.
        let last = final_state(&a[restarts[2] + 1..]);
        assert_eq!(final_state(&a), last);
    }
}
