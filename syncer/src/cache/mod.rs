//! The cache of one watched collection, filled by an informer and read by syncers.
//!
//! Kinds with an object or more per pod (pods, config maps, secrets, events) are kept
//! *encoded*: each object as its JSON, compressed, decoded on read. A typed k8s-openapi
//! object takes five to ten times its JSON size in memory (every optional field of a `Volume`
//! or a `Container` is inline: 3,280 and 2,336 bytes before any content; a synced pod with
//! three volumes is 30 KB typed, 2.9 KB as JSON), while a syncer reads a cached object a few
//! times per change of it: decoding (10-20 µs for a pod) costs far less than the memory it
//! saves. Other kinds (services, nodes, leases, ...) are few and read in loops, and are kept
//! as typed objects.
//!
//! Objects of one collection are alike: the same field names, labels, annotations, images
//! and volumes, differing in names, uids and timestamps. So each encoded object is LZ4
//! compressed against a dictionary of a few earlier objects of the same cache, which
//! shrinks it four to nine times (a host pod of 3,051 bytes of JSON to about 340; LZ4
//! decompresses it in under a microsecond). Objects compressed while the dictionary was
//! shorter keep the one they were compressed with.
//!
//! The API follows kube-runtime's reflector store, which this replaces: `get`, `state`,
//! `wait_until_ready`, and a [`CacheWriter`] applying watcher events (a re-list is buffered
//! and swapped in whole at its end, so readers never see a half-filled cache).
//!
//! The reads of a cache are here; its shared state is in `store.rs`, how objects are kept and
//! read back in `encoding.rs`, the writer in `writer.rs`, the error in `error.rs`. A cache
//! serves typed and dynamic kinds alike (it knows its kind by name, for errors and metrics).
//!
//! An encoded object that does not decode (a bug: it was encoded from the same type) is an
//! error, never an absence: [`Cache::try_get`] and [`Cache::try_map`] return it, and the
//! controller's reconcile reads through them, so the reconcile fails and is retried with
//! backoff instead of taking the (none, host) branch that deletes host objects. Every
//! failure is logged and counted in `vcsync_cache_decode_errors_total`. [`Cache::get`],
//! [`Cache::map`], [`Cache::state`] and [`Cache::state_filter`] are for reads whose absence
//! only delays (a trigger, a requeue, a create that meets the object), and skip such an
//! object after counting it. Never decide on their absence to delete an object or to write
//! one with less (an Endpoints without an address, a Secret without its CA): read such
//! decisions through `try_get`/`try_map`, or [`Cache::contains`] when existence is all that
//! matters, and fail the reconcile (or skip the object in a sweep) on a failure.

use std::{
    marker::PhantomData,
    sync::{Arc, RwLock},
};

use kube::runtime::{reflector::ObjectRef, watcher};
use tokio::sync::watch;
use vcsync_translators::VirtualKey;

mod encoding;
mod error;
mod store;
mod writer;

pub use encoding::Storage;
use encoding::{Stored, decode};
pub use error::DecodeError;
pub use store::Cache;
use store::{Shared, key};
pub use writer::CacheWriter;

use crate::resource::{AnyResource, SyncResource};

/// A new, empty cache of the typed kind `K` keeping its objects as `storage` says, and its
/// writer.
pub fn cache<K: SyncResource>(storage: Storage) -> (Cache<K>, CacheWriter<K>) {
    cache_of(&K::kind(&()), storage)
}

/// A new, empty cache of objects of kind `kind` (a dynamic kind's name, say) keeping them as
/// `storage` says, and its writer.
pub fn cache_of<K: AnyResource>(kind: &str, storage: Storage) -> (Cache<K>, CacheWriter<K>) {
    let shared = Arc::new(Shared {
        kind: kind.into(),
        storage,
        objects: RwLock::default(),
        ready: watch::Sender::new(false),
        _kind: PhantomData,
    });
    (
        Cache {
            shared: shared.clone(),
        },
        CacheWriter {
            shared,
            relisting: None,
            dictionary: Arc::default(),
            samples: 0,
            bytes: Default::default(),
        },
    )
}

impl<K: AnyResource> Cache<K> {
    /// The object at `reference`, if cached; an error if it is cached but does not decode.
    /// What a reconcile decides on (above all, whether an object is gone) is read with this.
    pub fn try_get(&self, reference: &ObjectRef<K>) -> Result<Option<Arc<K>>, DecodeError> {
        let key = key(reference.namespace.as_deref(), &reference.name);
        let stored = self.shared.objects.read().expect("cache lock").get(&key).cloned();
        stored
            .map(|stored| decode(&self.shared.kind, &key, stored))
            .transpose()
    }

    /// The object at `reference`, if cached and decodable: for reads whose absence only
    /// delays, never for a decision to delete or to write less. A decode failure is logged,
    /// counted and read as absent; see [`Self::try_get`].
    pub fn get(&self, reference: &ObjectRef<K>) -> Option<Arc<K>> {
        self.try_get(reference).ok().flatten()
    }

    /// The virtual key of every cached object, read from the cache's own keys: nothing is
    /// decoded (a re-list of 10,000 encoded pods names its keys without 10,000 decodes).
    pub fn virtual_keys(&self) -> Vec<VirtualKey> {
        self.shared
            .objects
            .read()
            .expect("cache lock")
            .keys()
            // Names never hold a '/', so the first one ends a namespace.
            .map(|key| match key.split_once('/') {
                Some((namespace, name)) => VirtualKey::new(Some(namespace.to_string()), name.to_string()),
                None => VirtualKey::new(None, key.to_string()),
            })
            .collect()
    }

    /// Whether an object is cached at `reference` (nothing decoded).
    pub fn contains(&self, reference: &ObjectRef<K>) -> bool {
        self.shared
            .objects
            .read()
            .expect("cache lock")
            .contains_key(&key(reference.namespace.as_deref(), &reference.name))
    }

    /// Every cached object. For an encoded cache this decodes them all at once: to go over a
    /// large collection, [`Cache::map`] holds one decoded object at a time. An object that
    /// does not decode is left out (logged and counted), as [`Self::map`] does.
    pub fn state(&self) -> Vec<Arc<K>> {
        self.map(|obj| obj.clone())
    }

    /// `f` of every cached object, decoding (for an encoded cache) one object at a time: a
    /// re-list of 10,000 pods then costs one decoded pod of memory, not 10,000. An object
    /// that does not decode is skipped (logged and counted): for triggers and lookups whose
    /// miss only delays, never for a sweep that deletes what it does not see; see
    /// [`Self::try_map`].
    pub fn map<T>(&self, mut f: impl FnMut(&Arc<K>) -> T) -> Vec<T> {
        self.try_map(|obj| f(obj)).into_iter().flatten().collect()
    }

    /// `f` of every cached object as [`Self::map`] does it, with an error in place of each
    /// object that does not decode, for callers that must not take it for absent.
    pub fn try_map<T>(&self, mut f: impl FnMut(&Arc<K>) -> T) -> Vec<Result<T, DecodeError>> {
        let stored: Vec<(Box<str>, Stored<K>)> = self
            .shared
            .objects
            .read()
            .expect("cache lock")
            .iter()
            .map(|(key, stored)| (key.clone(), stored.clone()))
            .collect();
        stored
            .into_iter()
            .map(|(key, stored)| decode(&self.shared.kind, &key, stored).map(|obj| f(&obj)))
            .collect()
    }

    /// The cached objects for which `keep` holds; one that does not decode is left out, as
    /// [`Self::map`] does.
    pub fn state_filter(&self, keep: impl Fn(&K) -> bool) -> Vec<Arc<K>> {
        self.map(|obj| keep(obj).then(|| obj.clone()))
            .into_iter()
            .flatten()
            .collect()
    }

    /// How many objects are cached.
    pub fn len(&self) -> usize {
        self.shared.objects.read().expect("cache lock").len()
    }

    /// Whether no object is cached.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Resolves once the first list completed.
    pub async fn wait_until_ready(&self) {
        let mut ready = self.shared.ready.subscribe();
        let _ = ready.wait_for(|ready| *ready).await;
    }
}

#[cfg(any(test, feature = "test-util"))]
impl<K: AnyResource> Cache<K> {
    /// Test hook (feature `test-util`): replaces the bytes of the encoded object at
    /// `reference` with bytes that do not decode.
    pub fn corrupt(&self, reference: &ObjectRef<K>) {
        let key = key(reference.namespace.as_deref(), &reference.name);
        let mut objects = self.shared.objects.write().expect("cache lock");
        match objects.get_mut(&key) {
            Some(Stored::Encoded { bytes, .. }) => *bytes = Arc::from(&[0xff_u8; 16][..]),
            _ => panic!("no encoded object at {key}"),
        }
    }
}

/// A cache holding `objects` and ready, for tests and for fixed sets.
pub fn filled<K: SyncResource>(storage: Storage, objects: impl IntoIterator<Item = K>) -> Cache<K> {
    let (cache, mut writer) = cache(storage);
    writer.apply_watcher_event(&watcher::Event::Init);
    for obj in objects {
        writer.apply_watcher_event(&watcher::Event::InitApply(obj));
    }
    writer.apply_watcher_event(&watcher::Event::InitDone);
    cache
}

/// An empty, ready cache of the typed kind `K`: for sides that are never watched.
pub fn empty<K: SyncResource>() -> Cache<K> {
    empty_of(&K::kind(&()))
}

/// An empty, ready cache of objects of kind `kind`: for sides that are never watched.
pub fn empty_of<K: AnyResource>(kind: &str) -> Cache<K> {
    let (cache, mut writer) = cache_of(kind, Storage::Typed);
    writer.apply_watcher_event(&watcher::Event::InitDone);
    cache
}

#[cfg(test)]
mod tests;
