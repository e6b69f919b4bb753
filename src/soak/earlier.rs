//! Empty restarts of the virtual cluster: the server replaced by an empty one, the host copies
//! made for the earlier cluster recorded then, and the last phase that prunes them.
//!
//! A virtual API server that comes back empty (a lost datastore) has a new `kube-system` UID.
//! The syncer must keep every host copy made for the earlier cluster exactly as it was (same
//! uid and resourceVersion), sync the new cluster as usual, and delete the earlier copies only
//! when restarted with `safety.earlierCopies.prune`: those and nothing else.

use std::{
    collections::{BTreeMap, BTreeSet},
    path::PathBuf,
};

use anyhow::Context;
use kube::Client;
use vcsync_apiserver::{ApiServer, ServerConfig};
use vcsync_syncer::Config;

use super::{
    check::{Observed, Snapshot, owned},
    plan::Key,
};

/// The virtual API server, its client and its kubeconfig file (which the syncer reads).
pub(super) struct Virtual {
    pub(super) server: ApiServer,
    pub(super) client: Client,
    pub(super) kubeconfig: PathBuf,
}

impl Virtual {
    /// `server`, with its kubeconfig written to `kubeconfig`.
    pub(super) fn new(server: ApiServer, kubeconfig: PathBuf) -> anyhow::Result<Self> {
        crate::dev::write(&kubeconfig, &server.kubeconfig())?;
        let client = crate::cluster_pair::client(&server.url())?;
        Ok(Self {
            server,
            client,
            kubeconfig,
        })
    }

    /// Creates the churn's namespaces.
    pub(super) async fn create_namespaces(&self, namespaces: &BTreeSet<String>) -> anyhow::Result<()> {
        for ns in namespaces {
            crate::dev::create_namespace(&self.client, ns).await?;
        }
        Ok(())
    }

    /// Replaces the server with an empty one, as a virtual control plane whose datastore was
    /// lost comes back (a new `kube-system` UID, none of the tenant's objects), rewrites the
    /// kubeconfig and recreates `namespaces`. The syncer must be stopped.
    pub(super) async fn replace_empty(&mut self, namespaces: &BTreeSet<String>) -> anyhow::Result<()> {
        let fresh = ApiServer::start(ServerConfig {
            name: "virtual".into(),
            ..ServerConfig::default()
        })
        .await
        .context("starting the empty virtual API server")?;
        let old = std::mem::replace(self, Self::new(fresh, self.kubeconfig.clone())?);
        old.server.shutdown().await;
        self.create_namespaces(namespaces).await
    }
}

/// Adds this instance's host objects in `host` to `earlier` (copies made for the cluster being
/// replaced; the syncer is stopped). A copy recorded at an earlier replacement keeps its first
/// record, so a change since then is caught.
pub(super) fn record(config: &Config, host: &BTreeMap<Key, Observed>, earlier: &mut BTreeMap<Key, Observed>) {
    for (key, object) in host.iter().filter(|(_, o)| owned(config, o)) {
        earlier.entry(key.clone()).or_insert_with(|| object.clone());
    }
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
            Some(object) if object.uid == copy.uid => pruned
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
        match now.host.get(key) {
            None => pruned
                .current_touched
                .push(format!("{key}: the current cluster's copy was deleted")),
            Some(object) if object != copy => pruned.current_touched.push(format!(
                "{key}: the current cluster's copy changed (uid {} -> {}, resourceVersion {} -> {})",
                copy.uid, object.uid, copy.resource_version, object.resource_version
            )),
            Some(_) => pruned.current_kept += 1,
        }
    }
    pruned
}

#[cfg(test)]
mod tests {
    use vcsync_translators::MANAGED_BY_LABEL;

    use super::*;
    use crate::soak::{HOST_NAMESPACE, INSTANCE, plan::Kind};

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
    fn a_clean_prune_deletes_the_earlier_copies_only() {
        let (config, earlier, before) = before();
        let mut now = before.clone();
        now.host.remove(&key("old"));
        now.host.insert(key("taken"), copy("u-namesake", INSTANCE));
        let pruned = check_pruned(&config, &earlier, &before, &now);
        assert_eq!(pruned.violations(), 0, "{pruned:?}");
        assert_eq!((pruned.deleted, pruned.current_kept), (2, 1));
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
