//! The only writer of a cache, its informer (or a test): applies watcher events, buffering a
//! re-list and swapping it in whole at its end, and encodes objects for an encoded cache.

use std::sync::Arc;

use kube::runtime::watcher;

use super::{
    encoding::{Dictionary, MAX_DICTIONARY_BYTES, MAX_SAMPLES, Storage, Stored, sample_of},
    store::{Cache, Objects, Shared, key},
};
use crate::resource::AnyResource;

/// The only writer of a cache: its informer (or a test).
pub struct CacheWriter<K> {
    pub(super) shared: Arc<Shared<K>>,
    /// The objects of a list in progress, swapped in when it completes.
    pub(super) relisting: Option<Objects<K>>,
    /// What encoded objects are compressed against from now on, and how many samples it has.
    pub(super) dictionary: Arc<Dictionary>,
    pub(super) samples: usize,
}

impl<K: AnyResource> CacheWriter<K> {
    /// The cache this writer fills.
    pub fn cache(&self) -> Cache<K> {
        Cache {
            shared: self.shared.clone(),
        }
    }

    fn store(&mut self, obj: &K) -> Option<(Box<str>, Stored<K>)> {
        let name = obj.meta().name.as_deref()?;
        let stored = match self.shared.storage {
            Storage::Typed => Stored::Typed(Arc::new(obj.clone())),
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
                    self.shared
                        .objects
                        .write()
                        .expect("cache lock")
                        .insert(key, stored);
                }
            }
            watcher::Event::Delete(obj) => {
                if let Some(name) = obj.meta().name.as_deref() {
                    let key = key(obj.meta().namespace.as_deref(), name);
                    self.shared.objects.write().expect("cache lock").remove(&key);
                }
            }
            watcher::Event::Init => self.relisting = Some(Objects::default()),
            watcher::Event::InitApply(obj) => {
                if let Some((key, stored)) = self.store(obj) {
                    self.relisting.get_or_insert_default().insert(key, stored);
                }
            }
            watcher::Event::InitDone => {
                let mut listed = self.relisting.take().unwrap_or_default();
                listed.shrink_to_fit();
                *self.shared.objects.write().expect("cache lock") = listed;
                self.shared.ready.send_replace(true);
            }
        }
    }
}
