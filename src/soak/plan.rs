//! The churn of a seed: seeded randomness, the objects, and the plan of operations.

use std::collections::BTreeMap;

use vcsync_translators::MANAGED_BY_LABEL;

/// SplitMix64: small, seedable, good enough to pick operations.
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
}

impl Kind {
    pub(super) fn as_str(self) -> &'static str {
        match self {
            Kind::ConfigMap => "ConfigMap",
            Kind::Secret => "Secret",
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

/// What the churn writes into a virtual object.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(super) struct Content {
    pub(super) data: BTreeMap<String, String>,
    pub(super) labels: BTreeMap<String, String>,
}

/// One churn operation on the virtual cluster.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum Op {
    Create(Key, Content),
    /// Key, content before, content after.
    Update(Key, Content, Content),
    Delete(Key),
    /// The virtual API server comes back empty (its datastore lost): every virtual object is
    /// gone, the namespaces are recreated, the churn goes on in the new cluster.
    EmptyVirtualRestart,
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

/// Salt of the stream that places the empty virtual restarts, so that the rest of a seed's plan
/// does not depend on how many there are.
const RESTART_SALT: u64 = 0x0e4b_7e5e_12a1_d00d;

/// The churn of a seed: creates until `objects` objects were created, updates (data or labels)
/// and deletes in between; some names are reused after a delete (a new object, a new UID), some
/// are long or dotted so that they take the hashed host form. `empty_restarts` times, at random
/// points between two creates, the virtual cluster comes back empty ([`Op::EmptyVirtualRestart`]):
/// the plan forgets its objects, and some of the lost names are reused in the new cluster.
pub(super) fn plan(seed: u64, objects: usize, namespaces: usize, empty_restarts: usize) -> Vec<Op> {
    let mut rng = Rng(seed);
    let mut live: Vec<(Key, Content)> = Vec::new();
    let mut deleted: Vec<Key> = Vec::new();
    // Names of objects an empty restart lost: the new cluster may create namesakes.
    let mut lost: Vec<Key> = Vec::new();
    let mut ops = Vec::new();
    let mut created = 0;
    let mut restarts = restart_points(seed, objects, empty_restarts)
        .into_iter()
        .peekable();
    while created < objects {
        if restarts.next_if_eq(&created).is_some() {
            lost.extend(live.drain(..).map(|(key, _)| key));
            ops.push(Op::EmptyVirtualRestart);
            continue;
        }
        let roll = rng.below(100);
        if live.is_empty() || roll < 50 {
            let key = if !lost.is_empty() && rng.chance(15) {
                lost.swap_remove(rng.below(lost.len()))
            } else if !deleted.is_empty() && rng.chance(10) {
                deleted.swap_remove(rng.below(deleted.len()))
            } else {
                let kind = if rng.chance(50) {
                    Kind::ConfigMap
                } else {
                    Kind::Secret
                };
                let prefix = if kind == Kind::ConfigMap { "cm" } else { "sec" };
                let name = match rng.below(20) {
                    0 => format!("{prefix}-{created}-{}", "long".repeat(12)),
                    1 => format!("{prefix}.v1-{created}"),
                    _ => format!("{prefix}-{created}"),
                };
                Key {
                    kind,
                    namespace: virtual_namespace(rng.below(namespaces.max(1))),
                    name,
                }
            };
            let content = Content {
                data: random_data(&mut rng),
                labels: random_labels(&mut rng),
            };
            live.push((key.clone(), content.clone()));
            ops.push(Op::Create(key, content));
            created += 1;
        } else if roll < 80 {
            let i = rng.below(live.len());
            let before = live[i].1.clone();
            let mut after = before.clone();
            match rng.below(10) {
                0..=4 => after.data = random_data(&mut rng),
                5..=8 => after.labels = random_labels(&mut rng),
                _ => {
                    after.data = random_data(&mut rng);
                    after.labels = random_labels(&mut rng);
                }
            }
            live[i].1 = after.clone();
            ops.push(Op::Update(live[i].0.clone(), before, after));
        } else {
            let (key, _) = live.swap_remove(rng.below(live.len()));
            deleted.push(key.clone());
            ops.push(Op::Delete(key));
        }
    }
    ops
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
            Op::Delete(key) => {
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

    /// Checks that every update and delete is of an object live in the current cluster and
    /// that no object is created twice in one cluster; returns the names reused after an empty
    /// restart (namesakes of objects the restart lost).
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
                Op::Delete(key) => assert!(live.remove(key)),
                Op::EmptyVirtualRestart => lost.append(&mut live),
            }
        }
        namesakes
    }

    #[test]
    fn a_seed_gives_one_plan_that_creates_the_requested_objects() {
        let a = plan(42, 300, 3, 0);
        assert_eq!(a, plan(42, 300, 3, 0));
        assert_ne!(a, plan(43, 300, 3, 0));
        let creates = a.iter().filter(|op| matches!(op, Op::Create(..))).count();
        assert_eq!(creates, 300);
        assert!(a.iter().any(|op| matches!(op, Op::Update(..))));
        assert!(a.iter().any(|op| matches!(op, Op::Delete(..))));
        assert!(!a.contains(&Op::EmptyVirtualRestart));
        assert_eq!(replay(&a), 0);
    }

    #[test]
    fn empty_restarts_reset_the_plan_and_reuse_lost_names() {
        let a = plan(42, 300, 3, 3);
        assert_eq!(a, plan(42, 300, 3, 3));
        let restarts: Vec<usize> = (0..a.len())
            .filter(|&i| a[i] == Op::EmptyVirtualRestart)
            .collect();
        assert_eq!(restarts.len(), 3, "{restarts:?}");
        assert!(matches!(a[0], Op::Create(..)), "a create comes first");
        let creates = a.iter().filter(|op| matches!(op, Op::Create(..))).count();
        assert_eq!(creates, 300);
        // The plan before the first restart is the plan without restarts.
        assert_eq!(a[..restarts[0]], plan(42, 300, 3, 0)[..restarts[0]]);
        assert!(replay(&a) > 0, "some lost names are reused in the new cluster");
        // The final state is only the last cluster's.
        let last = final_state(&a[restarts[2] + 1..]);
        assert_eq!(final_state(&a), last);
    }
}
