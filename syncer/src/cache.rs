//! The cache of one watched collection, filled by an informer and read by syncers.
//!
//! Kinds with an object or more per pod (pods, config maps, secrets, events) are kept
//! *encoded*: each object as its JSON, decoded on read. A typed k8s-openapi object takes five
//! to ten times its JSON size in memory (every optional field of a `Volume` or a `Container`
//! is inline: 3,280 and 2,336 bytes before any content; a synced pod with three volumes is
//! 30 KB typed, 2.9 KB as JSON), while a syncer reads a cached object a few times per change
//! of it: decoding (10-20 µs for a pod) costs far less than the memory it saves. Other kinds
//! (services, nodes, leases, ...) are few and read in loops, and are kept as typed objects.
//!
//! The API follows kube-runtime's reflector store, which this replaces: `get`, `state`,
//! `wait_until_ready`, and a [`CacheWriter`] applying watcher events (a re-list is buffered
//! and swapped in whole at its end, so readers never see a half-filled cache).

use std::{
    collections::HashMap,
    marker::PhantomData,
    sync::{Arc, RwLock},
};

use kube::runtime::{reflector::ObjectRef, watcher};
use tokio::sync::watch;

use crate::sdk::SyncResource;

/// How a cache keeps its objects.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Storage {
    /// Typed, shared with readers as they are.
    Typed,
    /// As JSON, decoded on every read.
    Encoded,
}

impl Storage {
    /// The storage of the kinds of which there are one or more per pod.
    pub fn for_kind(kind: &str) -> Self {
        match kind {
            "Pod" | "ConfigMap" | "Secret" | "Event" => Storage::Encoded,
            _ => Storage::Typed,
        }
    }
}

enum Stored<K> {
    Typed(Arc<K>),
    Encoded(Arc<[u8]>),
}

impl<K> Clone for Stored<K> {
    fn clone(&self) -> Self {
        match self {
            Stored::Typed(obj) => Stored::Typed(obj.clone()),
            Stored::Encoded(bytes) => Stored::Encoded(bytes.clone()),
        }
    }
}

/// `namespace/name`, or `name` for cluster-scoped objects (names never contain a slash).
fn key(namespace: Option<&str>, name: &str) -> Box<str> {
    match namespace {
        Some(ns) => format!("{ns}/{name}").into_boxed_str(),
        None => name.into(),
    }
}

type Objects<K> = HashMap<Box<str>, Stored<K>>;

struct Shared<K> {
    storage: Storage,
    objects: RwLock<Objects<K>>,
    ready: watch::Sender<bool>,
    _kind: PhantomData<fn() -> K>,
}

/// A read handle of a cache; cheap to clone.
pub struct Cache<K> {
    shared: Arc<Shared<K>>,
}

impl<K> Clone for Cache<K> {
    fn clone(&self) -> Self {
        Self {
            shared: self.shared.clone(),
        }
    }
}

/// The only writer of a cache: its informer (or a test).
pub struct CacheWriter<K> {
    shared: Arc<Shared<K>>,
    /// The objects of a list in progress, swapped in when it completes.
    relisting: Option<Objects<K>>,
}

/// A new, empty cache keeping its objects as `storage` says, and its writer.
pub fn cache<K: SyncResource>(storage: Storage) -> (Cache<K>, CacheWriter<K>) {
    let shared = Arc::new(Shared {
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
        },
    )
}

impl<K: SyncResource> Cache<K> {
    /// The object at `reference`, if cached.
    pub fn get(&self, reference: &ObjectRef<K>) -> Option<Arc<K>> {
        let stored = self
            .shared
            .objects
            .read()
            .expect("cache lock")
            .get(&key(reference.namespace.as_deref(), &reference.name))
            .cloned()?;
        decode(stored)
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
    /// large collection, [`Cache::map`] holds one decoded object at a time.
    pub fn state(&self) -> Vec<Arc<K>> {
        self.map(|obj| obj.clone())
    }

    /// `f` of every cached object, decoding (for an encoded cache) one object at a time: a
    /// re-list of 10,000 pods then costs one decoded pod of memory, not 10,000.
    pub fn map<T>(&self, mut f: impl FnMut(&Arc<K>) -> T) -> Vec<T> {
        let stored: Vec<Stored<K>> = self
            .shared
            .objects
            .read()
            .expect("cache lock")
            .values()
            .cloned()
            .collect();
        stored.into_iter().filter_map(decode).map(|obj| f(&obj)).collect()
    }

    /// The cached objects for which `keep` holds.
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

    /// How the objects are kept.
    pub fn storage(&self) -> Storage {
        self.shared.storage
    }

    /// Resolves once the first list completed.
    pub async fn wait_until_ready(&self) {
        let mut ready = self.shared.ready.subscribe();
        let _ = ready.wait_for(|ready| *ready).await;
    }
}

fn decode<K: SyncResource>(stored: Stored<K>) -> Option<Arc<K>> {
    match stored {
        Stored::Typed(obj) => Some(obj),
        Stored::Encoded(bytes) => match serde_json::from_slice(&bytes) {
            Ok(obj) => Some(Arc::new(obj)),
            Err(err) => {
                // It was encoded from a K a moment ago: a decoding failure is a bug.
                tracing::error!(kind = %K::kind(&()), error = %err, "cached object does not decode");
                None
            }
        },
    }
}

impl<K: SyncResource> CacheWriter<K> {
    /// The cache this writer fills.
    pub fn cache(&self) -> Cache<K> {
        Cache {
            shared: self.shared.clone(),
        }
    }

    fn store(&self, obj: &K) -> Option<(Box<str>, Stored<K>)> {
        let name = obj.meta().name.as_deref()?;
        let stored = match self.shared.storage {
            Storage::Typed => Stored::Typed(Arc::new(obj.clone())),
            Storage::Encoded => match serde_json::to_vec(obj) {
                Ok(bytes) => Stored::Encoded(bytes.into()),
                Err(err) => {
                    tracing::error!(kind = %K::kind(&()), error = %err, "object does not encode");
                    return None;
                }
            },
        };
        Some((key(obj.meta().namespace.as_deref(), name), stored))
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

/// An empty, ready cache: for sides that are never watched.
pub fn empty<K: SyncResource>() -> Cache<K> {
    filled(Storage::Typed, std::iter::empty())
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::core::v1::{ConfigMap, Pod};
    use kube::api::ObjectMeta;
    use rstest::rstest;

    use super::*;

    fn config_map(ns: &str, name: &str, value: &str) -> ConfigMap {
        ConfigMap {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some(ns.into()),
                ..ObjectMeta::default()
            },
            data: Some([("k".to_string(), value.to_string())].into()),
            ..ConfigMap::default()
        }
    }

    #[rstest]
    #[case::typed(Storage::Typed)]
    #[case::encoded(Storage::Encoded)]
    fn reads_back_what_was_applied_and_forgets_what_was_deleted(#[case] storage: Storage) {
        let (cache, mut writer) = cache::<ConfigMap>(storage);
        writer.apply_watcher_event(&watcher::Event::Apply(config_map("a", "one", "1")));
        writer.apply_watcher_event(&watcher::Event::Apply(config_map("b", "one", "2")));
        writer.apply_watcher_event(&watcher::Event::Apply(config_map("a", "one", "3")));
        let got = cache.get(&ObjectRef::new("one").within("a")).unwrap();
        assert_eq!(*got, config_map("a", "one", "3"));
        assert_eq!(cache.len(), 2);
        writer.apply_watcher_event(&watcher::Event::Delete(config_map("a", "one", "3")));
        assert!(cache.get(&ObjectRef::new("one").within("a")).is_none());
        assert_eq!(*cache.state()[0], config_map("b", "one", "2"));
    }

    #[tokio::test]
    async fn a_relist_replaces_the_objects_only_when_it_is_complete() {
        let (cache, mut writer) = cache::<ConfigMap>(Storage::Encoded);
        writer.apply_watcher_event(&watcher::Event::Init);
        writer.apply_watcher_event(&watcher::Event::InitApply(config_map("a", "old", "1")));
        assert!(cache.is_empty(), "a list in progress is not visible");
        writer.apply_watcher_event(&watcher::Event::InitDone);
        cache.wait_until_ready().await;
        assert_eq!(cache.len(), 1);

        // After a 410 the watch lists again: the old objects stay readable until it ends.
        writer.apply_watcher_event(&watcher::Event::Init);
        writer.apply_watcher_event(&watcher::Event::InitApply(config_map("a", "new", "2")));
        assert!(cache.get(&ObjectRef::new("old").within("a")).is_some());
        writer.apply_watcher_event(&watcher::Event::InitDone);
        assert!(cache.get(&ObjectRef::new("old").within("a")).is_none());
        assert!(cache.get(&ObjectRef::new("new").within("a")).is_some());
    }

    #[test]
    fn cluster_scoped_objects_are_found_by_name() {
        let mut pod = Pod::default();
        pod.metadata.name = Some("n".into());
        let cache = filled(Storage::Encoded, [pod.clone()]);
        assert_eq!(*cache.get(&ObjectRef::new("n")).unwrap(), pod);
        assert!(cache.get(&ObjectRef::new("n").within("x")).is_none());
    }

    #[test]
    fn the_kinds_with_one_or_more_objects_per_pod_are_encoded() {
        assert_eq!(Storage::for_kind("Pod"), Storage::Encoded);
        assert_eq!(Storage::for_kind("Secret"), Storage::Encoded);
        assert_eq!(Storage::for_kind("Service"), Storage::Typed);
    }
}
