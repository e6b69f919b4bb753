//! The only writer of a cache, its informer (or a test): applies watcher events, buffering a
//! re-list and swapping it in whole at its end, and encodes objects for an encoded cache.

use std::sync::Arc;

use kube::runtime::watcher;
use prometheus_client::metrics::gauge::Gauge;

use super::{
    encoding::{Dictionary, MAX_DICTIONARY_BYTES, MAX_SAMPLES, Storage, Stored, sample_of},
    store::{Cache, Objects, Shared, key},
};
use crate::{
    metrics::{CACHE_BYTES, CacheLabels},
    resource::AnyResource,
};

/// The only writer of a cache: its informer (or a test).
pub struct CacheWriter<K> {
    pub(super) shared: Arc<Shared<K>>,
    /// The objects of a list in progress, swapped in when it completes.
    pub(super) relisting: Option<Objects<K>>,
    /// What encoded objects are compressed against from now on, and how many samples it has.
    pub(super) dictionary: Arc<Dictionary>,
    pub(super) samples: usize,
    /// What `vcsync_cache_bytes` counts of the cached objects, and of a list in progress.
    pub(super) bytes: Bytes,
}

/// The bytes of a cache's objects, and the gauge they are reported to, if any.
#[derive(Default)]
pub(super) struct Bytes {
    cached: usize,
    relisting: usize,
    /// The gauge, and what this cache added to it so far (caches may share a label).
    gauge: Option<(Gauge, i64)>,
}

impl<K: AnyResource> CacheWriter<K> {
    /// The cache this writer fills.
    pub fn cache(&self) -> Cache<K> {
        Cache {
            shared: self.shared.clone(),
        }
    }

    /// Reports this cache's bytes to `vcsync_cache_bytes{cache="<label>"}` from now on.
    pub fn count_bytes_as(&mut self, label: String) {
        let gauge = CACHE_BYTES.get_or_create(&CacheLabels { cache: label }).clone();
        self.bytes.gauge = Some((gauge, 0));
        self.report_bytes();
    }

    fn report_bytes(&mut self) {
        let total = (self.bytes.cached + self.dictionary.0.len()) as i64;
        if let Some((gauge, reported)) = self.bytes.gauge.as_mut() {
            gauge.inc_by(total - *reported);
            *reported = total;
        }
    }

    fn store(&mut self, obj: &K) -> Option<(Box<str>, Stored<K>)> {
        let name = obj.meta().name.as_deref()?;
        let stored = match self.shared.storage {
            Storage::Typed => {
                let json_len = match self.bytes.gauge {
                    Some(_) => serde_json::to_vec(obj).map_or(0, |json| json.len()),
                    None => 0,
                };
                Stored::Typed(Arc::new(obj.clone()), json_len)
            }
            Storage::Encoded => self.encode(obj)?,
        };
        Some((key(obj.meta().namespace.as_deref(), name), stored))
    }

    /// `obj` as JSON compressed against the dictionary, which takes it as a sample first if
    /// it compresses poorly and there is room.
    fn encode(&mut self, obj: &K) -> Option<Stored<K>> {
        let json = match serde_json::to_vec(obj) {
            Ok(json) => json,
            Err(err) => {
                tracing::error!(kind = %self.shared.kind, error = %err, "object does not encode");
                return None;
            }
        };
        let mut bytes = self.dictionary.compress(&json);
        if bytes.len() * 3 > json.len()
            && self.samples < MAX_SAMPLES
            && self.dictionary.0.len() + json.len() <= MAX_DICTIONARY_BYTES
        {
            self.dictionary = Arc::new(self.dictionary.with(&sample_of(obj, &json)));
            self.samples += 1;
            bytes = self.dictionary.compress(&json);
        }
        Some(Stored::Encoded {
            dictionary: self.dictionary.clone(),
            bytes: bytes.into(),
        })
    }

    /// Applies one watcher event: an object changed or went, or a list began, brought an
    /// object or ended.
    pub fn apply_watcher_event(&mut self, event: &watcher::Event<K>) {
        match event {
            watcher::Event::Apply(obj) => {
                if let Some((key, stored)) = self.store(obj) {
                    let (key_len, added) = (key.len(), stored.counted_bytes());
                    let replaced = self
                        .shared
                        .objects
                        .write()
                        .expect("cache lock")
                        .insert(key, stored);
                    self.bytes.cached = counted_after(self.bytes.cached, key_len, added, replaced);
                }
            }
            watcher::Event::Delete(obj) => {
                if let Some(name) = obj.meta().name.as_deref() {
                    let key = key(obj.meta().namespace.as_deref(), name);
                    let removed = self.shared.objects.write().expect("cache lock").remove(&key);
                    if let Some(old) = removed {
                        self.bytes.cached = self.bytes.cached.saturating_sub(key.len() + old.counted_bytes());
                    }
                }
            }
            watcher::Event::Init => {
                self.relisting = Some(Objects::default());
                self.bytes.relisting = 0;
            }
            watcher::Event::InitApply(obj) => {
                if let Some((key, stored)) = self.store(obj) {
                    let (key_len, added) = (key.len(), stored.counted_bytes());
                    let replaced = self.relisting.get_or_insert_default().insert(key, stored);
                    self.bytes.relisting = counted_after(self.bytes.relisting, key_len, added, replaced);
                }
            }
            watcher::Event::InitDone => {
                let mut listed = self.relisting.take().unwrap_or_default();
                listed.shrink_to_fit();
                *self.shared.objects.write().expect("cache lock") = listed;
                self.bytes.cached = std::mem::take(&mut self.bytes.relisting);
                self.shared.ready.send_replace(true);
            }
        }
        self.report_bytes();
    }
}

/// `counted` after an object of `added` bytes was put at a key of `key_len` bytes, in place of
/// `replaced` (whose key stays counted once).
fn counted_after<K>(counted: usize, key_len: usize, added: usize, replaced: Option<Stored<K>>) -> usize {
    match replaced {
        Some(old) => (counted + added).saturating_sub(old.counted_bytes()),
        None => counted + key_len + added,
    }
}
