//! Indices shared by syncers, fed by informers.

use std::sync::{Arc, Mutex, OnceLock};

use k8s_openapi::api::core::v1::Pod;
use tokio::sync::{mpsc, watch};
use vcsync_translators::{RefKind, RefTarget, ReferenceIndex, VirtualKey, pod_references};

use crate::cache::Cache;
use crate::{context::RegisterContext, controller::virtual_key_of, informer::InformerEvent};

/// The indices of one manager, each created by the first syncer that asks for it.
#[derive(Default)]
pub struct Indices {
    pod_references: OnceLock<Arc<PodReferences>>,
}

impl Indices {
    /// Which objects virtual pods reference (config maps, secrets, ...), fed by the virtual
    /// pod informer. Controllers wait until it has seen the first full list.
    pub fn pod_references(&self, ctx: &RegisterContext) -> Arc<PodReferences> {
        self.pod_references
            .get_or_init(|| {
                let informer = ctx.virtual_informer::<Pod>();
                let events = informer.subscribe();
                let (ready_tx, mut ready_rx) = watch::channel(false);
                let index = Arc::new(PodReferences {
                    index: ReferenceIndex::new(),
                    listeners: Mutex::default(),
                });
                ctx.spawn_background(index.clone().feed(informer.store(), events, ready_tx));
                ctx.add_readiness(async move {
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
        mut events: mpsc::UnboundedReceiver<InformerEvent<Pod>>,
        ready: watch::Sender<bool>,
    ) {
        while let Some(event) = events.recv().await {
            let changed = match event {
                InformerEvent::Applied(pod) => self
                    .index
                    .apply(virtual_key_of(pod.as_ref()), pod_references(&pod)),
                InformerEvent::Deleted(pod) => self.index.delete(&virtual_key_of(pod.as_ref())),
                InformerEvent::Relisted => {
                    let changed = self
                        .index
                        .reset(pods.map(|pod| (virtual_key_of(pod.as_ref()), pod_references(pod))));
                    let _ = ready.send(true);
                    changed
                }
            };
            self.notify(changed);
        }
    }
}
