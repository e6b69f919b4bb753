//! The changes a watch sees, for the harnesses that time them (`vcsync bench`, `vcsync soak`):
//! each added, changed or deleted object with the instant it arrived, across re-lists.

use std::time::Instant;

use futures::{Stream, StreamExt};
use kube::{
    Api,
    runtime::{WatchStreamExt, watcher},
};

/// The objects `api` sees under `config`: `(object, gone, when)`, gone for a delete. Errors
/// and re-list markers are skipped (the watcher re-lists on its own, backing off on errors).
pub(crate) fn changes<K>(api: Api<K>, config: watcher::Config) -> impl Stream<Item = (K, bool, Instant)>
where
    K: kube::Resource + Clone + std::fmt::Debug + serde::de::DeserializeOwned + Send + 'static,
{
    watcher(api, config)
        .default_backoff()
        .filter_map(|event| async move {
            let now = Instant::now();
            match event {
                Ok(watcher::Event::Apply(o) | watcher::Event::InitApply(o)) => Some((o, false, now)),
                Ok(watcher::Event::Delete(o)) => Some((o, true, now)),
                _ => None,
            }
        })
}
