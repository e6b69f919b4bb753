//! What the host -> virtual syncers (and the node syncer) share: the marker label of mirrored
//! objects, reconcile keys from informer events and the probe of whether a kind can be listed.

use futures::{StreamExt, stream::BoxStream};
use kube::{Client, api::ListParams};
use vcsync_translators::VirtualKey;

use crate::{
    Result,
    error::{Side, api_error, status_code},
    informer::{InformerEvent, Subscription},
    sdk::{SyncResource, api_in},
};

/// Marker label of objects mirrored from the host into the virtual cluster (also carried by
/// real-mode nodes).
pub const SYNCED_FROM_HOST_LABEL: &str = "vcsync.dev/synced-from-host";

/// Whether a virtual object carries [`SYNCED_FROM_HOST_LABEL`].
pub fn is_synced_from_host(meta: &kube::api::ObjectMeta) -> bool {
    meta.labels
        .as_ref()
        .and_then(|l| l.get(SYNCED_FROM_HOST_LABEL))
        .is_some_and(|v| v == "true")
}

/// Reconcile keys from an informer's events: `keys_of` says which keys an event concerns.
pub(crate) fn informer_keys<K: SyncResource>(
    events: Subscription<K>,
    keys_of: impl Fn(&InformerEvent<K>) -> Vec<VirtualKey> + Send + 'static,
) -> BoxStream<'static, VirtualKey> {
    events
        .flat_map(move |event| futures::stream::iter(keys_of(&event)))
        .boxed()
}

/// Whether a collection can be listed, probed once at registration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Readable {
    /// Listing works.
    Yes,
    /// The API server refuses (401/403); the text says why.
    Forbidden(String),
    /// The API server does not serve the kind (404).
    NotServed,
}

/// Lists at most one object of `K` (cluster-wide, or in `namespace`) with `labels`, to learn
/// whether a watch would work: a watch that can never list would hold every controller back.
pub(crate) async fn probe<K: SyncResource>(
    client: &Client,
    side: Side,
    namespace: Option<&str>,
    labels: Option<&str>,
) -> Result<Readable> {
    let mut params = ListParams::default().limit(1);
    if let Some(labels) = labels.filter(|l| !l.is_empty()) {
        params = params.labels(labels);
    }
    let kind = K::kind(&());
    match api_in::<K>(client.clone(), namespace).list(&params).await {
        Ok(_) => Ok(Readable::Yes),
        Err(err) if matches!(status_code(&err), Some(401 | 403)) => Ok(Readable::Forbidden(err.to_string())),
        Err(err) if status_code(&err) == Some(404) => Ok(Readable::NotServed),
        Err(err) => Err(api_error(side, "list", &kind, namespace.unwrap_or("(all)"))(err)),
    }
}
