//! The host object that owns every host copy in the host namespace (`hostOwner` in
//! vcsync.yaml), so that deleting it (with the Helm release or the cluster) lets the host's
//! garbage collector delete the copies: nothing is left running after an uninstall.
//!
//! The owner is a ConfigMap the chart and the `kubernetes` driver create for this purpose
//! alone. Copies are stamped with an owner reference to it when written (created or replaced),
//! and copies written before (an older vcsync, the option just turned on) when reconciled.
//! Only objects in the owner's own namespace are stamped: a namespaced owner cannot own objects
//! of other namespaces or cluster-scoped ones (the collector would take such a reference for
//! a missing owner). The reference neither marks a controller nor blocks the owner's deletion.
//!
//! The owner is watched: while it is missing nothing is stamped (a copy owned by a missing
//! owner would be collected at once), and one re-created is stamped with its new UID.

use std::sync::{Arc, RwLock};

use futures::StreamExt;
use k8s_openapi::{
    api::core::v1::ConfigMap,
    apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference},
};
use kube::{
    Api, Client, Resource,
    api::PostParams,
    runtime::{WatchStreamExt, watcher},
};
use tokio::sync::watch;

/// The owner of the host copies, as last seen.
#[derive(Debug, Default)]
pub struct HostOwner {
    /// The owner's namespace (the host namespace); None when no owner is configured.
    namespace: Option<String>,
    current: RwLock<Option<OwnerReference>>,
}

impl HostOwner {
    /// No owner: nothing is stamped.
    pub fn none() -> Self {
        Self::default()
    }

    /// The owner reference `meta` (a host copy about to be written) is to carry, if any.
    pub fn reference_for(&self, meta: &ObjectMeta) -> Option<OwnerReference> {
        if meta.namespace.is_none() || meta.namespace != self.namespace {
            return None;
        }
        self.current.read().expect("owner lock").clone()
    }

    /// Adds the owner reference to `meta` if it is to carry one and lacks it; true if it added.
    pub fn stamp(&self, meta: &mut ObjectMeta) -> bool {
        match self.reference_for(meta) {
            Some(owner) => with_owner(meta, owner),
            None => false,
        }
    }

    /// The reference a copy with `meta` lacks, if it lacks one (a copy to stamp on reconcile).
    pub fn missing_from(&self, meta: &ObjectMeta) -> Option<OwnerReference> {
        self.reference_for(meta).filter(|owner| !owns(meta, owner))
    }

    fn set(&self, owner: Option<OwnerReference>) {
        *self.current.write().expect("owner lock") = owner;
    }
}

/// The reference to owner `config_map`.
pub fn owner_reference(config_map: &ConfigMap) -> Option<OwnerReference> {
    Some(OwnerReference {
        api_version: "v1".into(),
        kind: "ConfigMap".into(),
        name: config_map.metadata.name.clone()?,
        uid: config_map.metadata.uid.clone()?,
        controller: None,
        block_owner_deletion: None,
    })
}

fn owns(meta: &ObjectMeta, owner: &OwnerReference) -> bool {
    meta.owner_references
        .iter()
        .flatten()
        .any(|existing| existing.uid == owner.uid)
}

/// Adds `owner` to `meta`'s owner references unless there; true if it added. A reference to an
/// earlier owner of the same name (re-created since) is replaced, not kept beside.
pub fn with_owner(meta: &mut ObjectMeta, owner: OwnerReference) -> bool {
    if owns(meta, &owner) {
        return false;
    }
    let owners = meta.owner_references.get_or_insert_with(Vec::new);
    owners.retain(|existing| !(existing.kind == owner.kind && existing.name == owner.name));
    owners.push(owner);
    true
}

/// Gives `object`, a host copy written without it, the owner reference the copies carry;
/// true if it wrote. The live object is read and replaced (vcsync holds no `patch` grant, and a
/// cached copy may be trimmed), at the version read: a concurrent change makes it fail.
pub async fn give_owner<K>(api: &Api<K>, owner: &HostOwner, object: &K) -> kube::Result<bool>
where
    K: Resource + Clone + serde::de::DeserializeOwned + serde::Serialize + std::fmt::Debug,
{
    let meta = object.meta();
    if meta.deletion_timestamp.is_some() || owner.missing_from(meta).is_none() {
        return Ok(false);
    }
    let name = meta.name.clone().unwrap_or_default();
    let Some(mut live) = api.get_opt(&name).await? else {
        return Ok(false);
    };
    if !owner.stamp(live.meta_mut()) {
        return Ok(false);
    }
    let params = PostParams {
        field_manager: Some(crate::resource::FIELD_MANAGER.to_string()),
        ..PostParams::default()
    };
    api.replace(&name, &params, &live).await?;
    Ok(true)
}

/// The owner named `name` in `namespace`, watched for as long as the returned task runs; the
/// receiver turns true once the first list answered (found or not).
pub fn watch_owner(
    client: Client,
    namespace: &str,
    name: &str,
) -> (
    Arc<HostOwner>,
    impl Future<Output = ()> + Send + 'static,
    watch::Receiver<bool>,
) {
    let owner = Arc::new(HostOwner {
        namespace: Some(namespace.to_string()),
        current: RwLock::default(),
    });
    let (listed, ready) = watch::channel(false);
    let api = Api::<ConfigMap>::namespaced(client, namespace);
    let config = watcher::Config::default().fields(&format!("metadata.name={name}"));
    let (task_owner, name) = (owner.clone(), name.to_string());
    let task = async move {
        let mut events = watcher(api, config).default_backoff().boxed();
        let mut seen = None;
        while let Some(event) = events.next().await {
            // Whether the first list is complete with this event.
            let listed_now = match event {
                Ok(watcher::Event::InitApply(cm)) => {
                    seen = owner_reference(&cm);
                    false
                }
                Ok(watcher::Event::Init) => {
                    seen = None;
                    false
                }
                Ok(watcher::Event::Apply(cm)) => {
                    seen = owner_reference(&cm);
                    true
                }
                Ok(watcher::Event::Delete(_)) => {
                    seen = None;
                    true
                }
                Ok(watcher::Event::InitDone) => {
                    if seen.is_none() {
                        tracing::warn!(
                            owner = %name,
                            "hostOwner ConfigMap not found: host copies are written without an owner (an uninstall leaves them)"
                        );
                    }
                    true
                }
                Err(err) => {
                    tracing::warn!(owner = %name, error = %err, "watching the hostOwner ConfigMap");
                    continue;
                }
            };
            // A re-list (after a watch expired) changes nothing until it is complete.
            if listed_now {
                task_owner.set(seen.clone());
                listed.send_replace(true);
            }
        }
    };
    (owner, task, ready)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn owner(uid: &str) -> OwnerReference {
        owner_reference(&ConfigMap {
            metadata: ObjectMeta {
                name: Some("vcsync-demo-owner".into()),
                uid: Some(uid.into()),
                ..ObjectMeta::default()
            },
            ..ConfigMap::default()
        })
        .unwrap()
    }

    fn meta(namespace: Option<&str>) -> ObjectMeta {
        ObjectMeta {
            name: Some("web-x-shop".into()),
            namespace: namespace.map(str::to_string),
            ..ObjectMeta::default()
        }
    }

    fn configured(current: Option<OwnerReference>) -> HostOwner {
        HostOwner {
            namespace: Some("vc-demo".into()),
            current: RwLock::new(current),
        }
    }

    #[test]
    fn only_copies_in_the_owners_namespace_are_stamped_and_only_while_it_exists() {
        let owned = configured(Some(owner("u1")));
        let mut copy = meta(Some("vc-demo"));
        assert!(owned.stamp(&mut copy));
        assert!(!owned.stamp(&mut copy), "once");
        let reference = &copy.owner_references.as_ref().unwrap()[0];
        assert_eq!(
            (
                reference.uid.as_str(),
                reference.controller,
                reference.block_owner_deletion
            ),
            ("u1", None, None)
        );
        assert_eq!(owned.missing_from(&copy), None);

        assert!(!owned.stamp(&mut meta(Some("other"))), "another namespace");
        assert!(!owned.stamp(&mut meta(None)), "cluster-scoped");
        assert!(
            !configured(None).stamp(&mut meta(Some("vc-demo"))),
            "owner missing"
        );
        assert!(
            !HostOwner::none().stamp(&mut meta(Some("vc-demo"))),
            "not configured"
        );
    }

    #[test]
    fn a_re_created_owner_replaces_the_reference_to_the_earlier_one_and_others_stay() {
        let mut copy = meta(Some("vc-demo"));
        copy.owner_references = Some(vec![
            owner("old"),
            OwnerReference {
                kind: "Deployment".into(),
                name: "someone-else".into(),
                uid: "d1".into(),
                ..OwnerReference::default()
            },
        ]);
        let owned = configured(Some(owner("new")));
        assert_eq!(owned.missing_from(&copy).map(|o| o.uid), Some("new".into()));
        assert!(owned.stamp(&mut copy));
        let uids: Vec<&str> = copy
            .owner_references
            .iter()
            .flatten()
            .map(|o| o.uid.as_str())
            .collect();
        assert_eq!(uids, ["d1", "new"]);
    }
}
