//! Empty restarts of the virtual cluster: the host copies made for the earlier cluster recorded
//! when it is replaced ([`super::pair::Clusters::replace_virtual_empty`]), and the last phase
//! that prunes them.
//!
//! A virtual API server that comes back empty (a lost datastore) has a new `kube-system` UID.
//! The syncer must keep every host copy made for the earlier cluster exactly as it was (same
//! uid and resourceVersion), sync the new cluster as usual, and delete the earlier copies only
//! when restarted with `safety.earlierCopies.prune`: those and nothing else.

use std::collections::BTreeMap;

use vcsync_syncer::{Config, syncers::pods::token::TOKEN_POD_UID_ANNOTATION};
use vcsync_translators::{OBJECT_NAME_ANNOTATION, OBJECT_UID_ANNOTATION};

use super::{
    check::{Observed, Snapshot, change, owned, token_secret_of},
    plan::{Key, Kind},
};

/// Adds this instance's host objects in `host` to `earlier` (copies made for the cluster being
/// replaced; the syncer is stopped). A copy recorded at an earlier replacement keeps its first
/// record, so a change since then is caught.
///
/// A pod being deleted is not recorded: its deletion was decided for the earlier cluster and
/// goes on. Neither is a token Secret whose pod is not recorded (it goes with its pod), nor a
/// copy of the control plane's `kube-root-ca.crt`, which follows the new cluster's by design.
pub(super) fn record(config: &Config, host: &BTreeMap<Key, Observed>, earlier: &mut BTreeMap<Key, Observed>) {
    let kept = |o: &Observed| owned(config, o) && !o.terminating;
    let root_ca = |key: &Key, o: &Observed| {
        key.kind == Kind::ConfigMap
            && o.annotations.get(OBJECT_NAME_ANNOTATION).map(String::as_str) == Some("kube-root-ca.crt")
    };
    for (key, object) in host.iter().filter(|(key, o)| kept(o) && !root_ca(key, o)) {
        if let Some((pod, _)) = token_secret_of(config, object) {
            let pod = Key {
                kind: Kind::Pod,
                namespace: key.namespace.clone(),
                name: pod.clone(),
            };
            if !host.get(&pod).is_some_and(kept) {
                continue;
            }
        }
        earlier.entry(key.clone()).or_insert_with(|| object.clone());
    }
}

/// The virtual object a host object was made for: a copy's virtual UID, a token Secret's pod
/// UID. A token Secret of an earlier pod is rewritten in place for a namesake pod of the
/// current cluster: the same object, no longer the earlier cluster's.
fn made_for(object: &Observed) -> [Option<&String>; 2] {
    [OBJECT_UID_ANNOTATION, TOKEN_POD_UID_ANNOTATION].map(|key| object.annotations.get(key))
}

/// What the prune run did to the host copies.
#[derive(Clone, Debug, Default)]
pub(super) struct Pruned {
    /// Earlier clusters' copies deleted.
    pub(super) deleted: usize,
    /// Earlier clusters' copies still there.
    pub(super) left: Vec<String>,
    /// The current cluster's copies (of before the prune run) still there, unchanged.
    pub(super) current_kept: usize,
    /// The current cluster's copies deleted or modified by the prune run.
    pub(super) current_touched: Vec<String>,
}

impl Pruned {
    pub(super) fn violations(&self) -> usize {
        self.left.len() + self.current_touched.len()
    }
}

/// Checks `now` after a prune run: every `earlier` copy is gone (its name free, or taken by a
/// new copy: another uid), and every copy of the current cluster in `before` (the converged
/// state before the prune run) is still there, unchanged.
pub(super) fn check_pruned(
    config: &Config,
    earlier: &BTreeMap<Key, Observed>,
    before: &Snapshot,
    now: &Snapshot,
) -> Pruned {
    let mut pruned = Pruned::default();
    for (key, copy) in earlier {
        match now.host.get(key) {
            Some(object) if object.uid == copy.uid && made_for(object) == made_for(copy) => pruned
                .left
                .push(format!("{key}: an earlier cluster's copy was not pruned")),
            _ => pruned.deleted += 1,
        }
    }
    let current = before
        .host
        .iter()
        .filter(|(key, o)| owned(config, o) && !earlier.contains_key(*key));
    for (key, copy) in current {
        match change(copy, now.host.get(key)) {
            Some(change) => pruned
                .current_touched
                .push(format!("{key}: the current cluster's copy was {change}")),
            None => pruned.current_kept += 1,
        }
    }
    pruned
}

#[cfg(test)]
mod tests {
    use vcsync_translators::MANAGED_BY_LABEL;

    use super::*;
    use crate::soak::args::{HOST_NAMESPACE, INSTANCE};

    fn copy(uid: &str, owner: &str) -> Observed {
        Observed {
            uid: uid.into(),
            resource_version: "1".into(),
            labels: BTreeMap::from([(MANAGED_BY_LABEL.into(), owner.into())]),
            ..Default::default()
        }
    }

    fn key(name: &str) -> Key {
        Key {
            kind: Kind::ConfigMap,
            namespace: HOST_NAMESPACE.into(),
            name: name.into(),
        }
    }

    /// Before the prune run: an earlier copy `old`, one `taken` whose name a namesake takes
    /// after the prune, a current copy `new` and a foreign object.
    fn before() -> (Config, BTreeMap<Key, Observed>, Snapshot) {
        let config = Config::new(INSTANCE, HOST_NAMESPACE);
        let mut snapshot = Snapshot::default();
        snapshot.host.insert(key("old"), copy("u-old", INSTANCE));
        snapshot.host.insert(key("taken"), copy("u-taken", INSTANCE));
        snapshot.host.insert(key("new"), copy("u-new", INSTANCE));
        snapshot.host.insert(key("foreign"), copy("u-foreign", "another"));
        let mut earlier = BTreeMap::new();
        let mut at_replacement = snapshot.host.clone();
        at_replacement.remove(&key("new"));
        record(&config, &at_replacement, &mut earlier);
        (config, earlier, snapshot)
    }

    #[test]
    fn recording_keeps_owned_objects_and_their_first_record() {
        let (config, mut earlier, before) = before();
        assert_eq!(
            earlier.keys().cloned().collect::<Vec<_>>(),
            vec![key("old"), key("taken")]
        );
        let mut later = before.host.clone();
        later.get_mut(&key("old")).unwrap().resource_version = "9".into();
        record(&config, &later, &mut earlier);
        assert_eq!(earlier[&key("old")].resource_version, "1");
        assert!(earlier.contains_key(&key("new")));
    }

    #[test]
    fn pods_being_deleted_and_their_token_secrets_are_not_recorded() {
        use vcsync_syncer::syncers::pods::token::{TOKEN_POD_ANNOTATION, TOKEN_POD_UID_ANNOTATION};
        let config = Config::new(INSTANCE, HOST_NAMESPACE);
        let pod = |name: &str, terminating: bool| {
            let key = Key {
                kind: Kind::Pod,
                namespace: HOST_NAMESPACE.into(),
                name: name.into(),
            };
            let object = Observed {
                terminating,
                ..copy(&format!("u-{name}"), INSTANCE)
            };
            (key, object)
        };
        let token = |name: &str| {
            let mut object = copy(&format!("u-{name}-token"), INSTANCE);
            object.annotations.extend([
                (TOKEN_POD_ANNOTATION.to_string(), name.to_string()),
                (TOKEN_POD_UID_ANNOTATION.to_string(), format!("v-{name}")),
            ]);
            (key(&format!("{name}.sa-token")), object)
        };
        let host = BTreeMap::from([
            pod("running", false),
            token("running"),
            pod("going", true),
            token("going"),
            token("gone"),
        ]);
        let mut earlier = BTreeMap::new();
        record(&config, &host, &mut earlier);
        let recorded: Vec<String> = earlier.keys().map(|key| key.name.clone()).collect();
        assert_eq!(recorded, vec!["running.sa-token", "running"]);
    }

    #[test]
    fn a_clean_prune_deletes_the_earlier_copies_only() {
        let (config, earlier, before) = before();
        let mut now = before.clone();
        now.host.remove(&key("old"));
        now.host.insert(key("taken"), copy("u-namesake", INSTANCE));
        let pruned = check_pruned(&config, &earlier, &before, &now);
        assert_eq!(pruned.violations(), 0, "{pruned:?}");
        assert_eq!((pruned.deleted, pruned.current_kept), (2, 1));

        // Rewritten in place for a namesake of the current cluster (a token Secret): pruned too;
        // untouched: left.
        let mut rewritten = now.clone();
        let mut same_object = before.host[&key("taken")].clone();
        same_object
            .annotations
            .insert(TOKEN_POD_UID_ANNOTATION.into(), "the-namesake".into());
        rewritten.host.insert(key("taken"), same_object);
        assert_eq!(
            check_pruned(&config, &earlier, &before, &rewritten).violations(),
            0
        );
        rewritten
            .host
            .insert(key("taken"), before.host[&key("taken")].clone());
        assert_eq!(check_pruned(&config, &earlier, &before, &rewritten).left.len(), 1);
    }

    #[test]
    fn a_copy_left_or_a_current_copy_touched_is_a_violation() {
        let (config, earlier, before) = before();
        let pruned = check_pruned(&config, &earlier, &before, &before);
        assert_eq!(pruned.left.len(), 2, "{pruned:?}");

        let mut now = before.clone();
        now.host.remove(&key("old"));
        now.host.remove(&key("taken"));
        now.host.get_mut(&key("new")).unwrap().resource_version = "2".into();
        let pruned = check_pruned(&config, &earlier, &before, &now);
        assert_eq!(pruned.current_touched.len(), 1, "{pruned:?}");
        now.host.remove(&key("new"));
        let pruned = check_pruned(&config, &earlier, &before, &now);
        assert_eq!(pruned.current_touched.len(), 1, "{pruned:?}");
    }
}
