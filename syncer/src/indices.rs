//! Indices shared by syncers, fed by informers.
//!
//! [`PodReferences`] reads the virtual pod informer's subscription in a background task, from
//! the manager's start on, and tells listeners (controllers' triggers) which referenced
//! objects gained or lost a referencing pod; it flips ready at the first list, and controllers
//! wait for that. [`Collisions`] is fed by the syncers themselves. Both only update memory and
//! unbounded listener channels between two events, so they never hold their informer back.

use std::sync::{Arc, Mutex, OnceLock};

use k8s_openapi::api::core::v1::Pod;
use tokio::sync::{mpsc, watch};
use vcsync_translators::{RefKind, RefTarget, ReferenceIndex, VirtualKey, pod_references};

use crate::cache::Cache;
use crate::{
    informer::{InformerEvent, Informers, Scope, Subscription},
    registrar::Registrar,
    resource::virtual_key_of,
};

/// The indices of one manager, each created by the first syncer that asks for it.
#[derive(Default)]
pub struct Indices {
    pod_references: OnceLock<Arc<PodReferences>>,
    collisions: Collisions,
}

/// Virtual objects whose translated host name is held by a foreign object (the create met it),
/// by kind: nothing may reference them on the host until their own copy exists.
#[derive(Default)]
pub struct Collisions(
    dashmap::DashSet<(String, VirtualKey)>,
    Mutex<Vec<mpsc::UnboundedSender<(String, VirtualKey)>>>,
);

impl Collisions {
    /// The host name of virtual `kind` object `key` is held by a foreign object.
    pub fn note(&self, kind: &str, key: &VirtualKey) {
        if self.0.insert((kind.to_string(), key.clone())) {
            let mut listeners = self.1.lock().expect("collision listeners lock");
            listeners.retain(|tx| tx.send((kind.to_string(), key.clone())).is_ok());
        }
    }

    /// The (kind, key) of each collision noted from now on.
    pub fn noted(&self) -> mpsc::UnboundedReceiver<(String, VirtualKey)> {
        let (tx, rx) = mpsc::unbounded_channel();
        self.1.lock().expect("collision listeners lock").push(tx);
        rx
    }

    /// The virtual `kind` object `key` has its own host copy now.
    pub fn clear(&self, kind: &str, key: &VirtualKey) {
        if !self.0.is_empty() {
            self.0.remove(&(kind.to_string(), key.clone()));
        }
    }

    /// Whether no host name is known to be held by a foreign object (the usual case).
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Whether the host name of virtual `kind` object `key` is held by a foreign object.
    pub fn contains(&self, kind: &str, key: &VirtualKey) -> bool {
        !self.0.is_empty() && self.0.contains(&(kind.to_string(), key.clone()))
    }
}

impl Indices {
    /// Virtual objects whose host name a foreign object holds.
    pub fn collisions(&self) -> &Collisions {
        &self.collisions
    }

    /// Which objects virtual pods reference (config maps, secrets, ...), fed by the virtual
    /// pod informer. Controllers wait until it has seen the first full list.
    pub fn pod_references(&self, informers: &Informers, registrar: &Registrar) -> Arc<PodReferences> {
        self.pod_references
            .get_or_init(|| {
                let informer = informers.get::<Pod>(Scope::VirtualAll);
                let events = informer.subscribe();
                let (ready_tx, mut ready_rx) = watch::channel(false);
                let index = Arc::new(PodReferences {
                    index: ReferenceIndex::new(),
                    listeners: Mutex::default(),
                });
                registrar.spawn_background(index.clone().feed(informer.store(), events, ready_tx));
                registrar.add_readiness(async move {
                    let _ = ready_rx.wait_for(|ready| *ready).await;
                });
                index
            })
            .clone()
    }
}

/// Objects referenced by virtual pods, and who wants to hear when that changes.
pub struct PodReferences {
    index: ReferenceIndex,
    listeners: Mutex<Vec<(RefKind, mpsc::UnboundedSender<VirtualKey>)>>,
}

impl PodReferences {
    /// Whether any virtual pod references the object.
    pub fn is_referenced(&self, kind: RefKind, key: &VirtualKey) -> bool {
        self.index.is_referenced(&RefTarget {
            kind,
            key: key.clone(),
        })
    }

    /// The virtual pods that reference the object.
    pub fn referencing_pods(&self, kind: RefKind, key: &VirtualKey) -> Vec<VirtualKey> {
        self.index.referencing_pods(&RefTarget {
            kind,
            key: key.clone(),
        })
    }

    /// Keys of `kind` whose set of referencing pods changed, from now on.
    pub fn changes(&self, kind: RefKind) -> tokio_stream::wrappers::UnboundedReceiverStream<VirtualKey> {
        let (tx, rx) = mpsc::unbounded_channel();
        self.listeners.lock().expect("listeners lock").push((kind, tx));
        tokio_stream::wrappers::UnboundedReceiverStream::new(rx)
    }

    fn notify(&self, changed: Vec<RefTarget>) {
        let mut listeners = self.listeners.lock().expect("listeners lock");
        for target in changed {
            listeners.retain(|(kind, tx)| *kind != target.kind || tx.send(target.key.clone()).is_ok());
        }
    }

    async fn feed(
        self: Arc<Self>,
        pods: Cache<Pod>,
        mut events: Subscription<Pod>,
        ready: watch::Sender<bool>,
    ) {
        while let Some(event) = events.recv().await {
            let changed = match event {
                InformerEvent::Applied(pod) => self
                    .index
                    .apply(virtual_key_of(pod.as_ref()), pod_references(&pod)),
                InformerEvent::Deleted(pod) => self.index.delete(&virtual_key_of(pod.as_ref())),
                InformerEvent::Relisted => {
                    // A pod that does not decode (counted by the cache) keeps the references
                    // it had: dropping them would let its objects' host copies go.
                    let listed = pods.try_map(|pod| (virtual_key_of(pod.as_ref()), pod_references(pod)));
                    let listed: Vec<_> = listed
                        .into_iter()
                        .map(|entry| {
                            entry.unwrap_or_else(|err| {
                                let pod = VirtualKey::new(err.namespace, err.name);
                                let kept = self.index.references_of(&pod);
                                (pod, kept)
                            })
                        })
                        .collect();
                    let changed = self.index.reset(listed);
                    let _ = ready.send(true);
                    changed
                }
            };
            self.notify(changed);
        }
    }
}

#[cfg(test)]
#[path = "indices_tests.rs"]
mod tests;
