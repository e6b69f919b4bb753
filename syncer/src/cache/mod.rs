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
//! An encoded object that does not decode (a bug: it was encoded from the same type) is an
//! error, never an absence: [`Cache::try_get`] and [`Cache::try_map`] return it, and the
//! controller's reconcile reads through them, so the reconcile fails and is retried with
//! backoff instead of taking the (none, host) branch that deletes host objects. Every
//! failure is logged and counted in `vcsync_cache_decode_errors_total`. [`Cache::get`] and
//! [`Cache::map`] are for reads whose absence only delays (a create that meets the object, a
//! link left out until the next change), and skip such an object after counting it.

use std::{
    any::Any,
    collections::HashMap,
    marker::PhantomData,
    sync::{Arc, RwLock},
};

use k8s_openapi::{ByteString, api::core::v1::Secret};
use kube::runtime::{reflector::ObjectRef, watcher};
use tokio::sync::watch;

use crate::{
    metrics::{CACHE_DECODE_ERRORS, KindLabels},
    resource::SyncResource,
};

/// A cached object that does not decode.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("cached {kind} {} does not decode: {reason}", display_key(.namespace.as_deref(), .name))]
pub struct DecodeError {
    /// Kind of the object.
    pub kind: String,
    /// Its namespace; None for cluster-scoped objects.
    pub namespace: Option<String>,
    /// Its name.
    pub name: String,
    /// What the decoder said.
    pub reason: String,
}

fn display_key(namespace: Option<&str>, name: &str) -> String {
    match namespace {
        Some(ns) => format!("{ns}/{name}"),
        None => name.to_string(),
    }
}

impl From<DecodeError> for crate::Error {
    fn from(err: DecodeError) -> Self {
        crate::Error::CacheDecode {
            key: display_key(err.namespace.as_deref(), &err.name),
            kind: err.kind,
            reason: err.reason,
        }
    }
}

/// How a cache keeps its objects.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Storage {
    /// Typed, shared with readers as they are.
    Typed,
    /// As compressed JSON, decoded on every read.
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
    Encoded {
        dictionary: Arc<Dictionary>,
        /// The JSON's length, then the JSON compressed against `dictionary`.
        bytes: Arc<[u8]>,
    },
}

impl<K> Clone for Stored<K> {
    fn clone(&self) -> Self {
        match self {
            Stored::Typed(obj) => Stored::Typed(obj.clone()),
            Stored::Encoded { dictionary, bytes } => Stored::Encoded {
                dictionary: dictionary.clone(),
                bytes: bytes.clone(),
            },
        }
    }
}

/// The JSON of sample objects an encoded cache compresses against: its first object, and
/// each later one that compressed to more than a third of its size, up to [`MAX_SAMPLES`]
/// samples and [`MAX_DICTIONARY_BYTES`] (hashing the dictionary is most of the cost of
/// compressing a small object). Never changed once built: taking a sample makes a new one.
/// A Secret's sample has its values blanked, so that no secret outlives its object.
#[derive(Default)]
struct Dictionary(Box<[u8]>);

const MAX_SAMPLES: usize = 4;
const MAX_DICTIONARY_BYTES: usize = 16 * 1024;

impl Dictionary {
    fn compress(&self, json: &[u8]) -> Vec<u8> {
        lz4_flex::block::compress_prepend_size_with_dict(json, &self.0)
    }

    fn decompress(&self, bytes: &[u8]) -> Option<Vec<u8>> {
        lz4_flex::block::decompress_size_prepended_with_dict(bytes, &self.0).ok()
    }

    /// This dictionary with `sample` appended.
    fn with(&self, sample: &[u8]) -> Dictionary {
        Dictionary([&self.0[..], sample].concat().into_boxed_slice())
    }
}

/// The JSON an object adds to a dictionary: its own, or for a Secret, its own with every
/// value blanked.
fn sample_of<K: SyncResource>(obj: &K, json: &[u8]) -> Vec<u8> {
    let Some(secret) = (obj as &dyn Any).downcast_ref::<Secret>() else {
        return json.to_vec();
    };
    let mut blanked = secret.clone();
    blanked.string_data = None;
    for value in blanked.data.iter_mut().flat_map(|data| data.values_mut()) {
        *value = ByteString(Vec::new());
    }
    serde_json::to_vec(&blanked).unwrap_or_default()
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
    /// What encoded objects are compressed against from now on, and how many samples it has.
    dictionary: Arc<Dictionary>,
    samples: usize,
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
            dictionary: Arc::default(),
            samples: 0,
        },
    )
}

impl<K: SyncResource> Cache<K> {
    /// The object at `reference`, if cached; an error if it is cached but does not decode.
    /// What a reconcile decides on (above all, whether an object is gone) is read with this.
    pub fn try_get(&self, reference: &ObjectRef<K>) -> Result<Option<Arc<K>>, DecodeError> {
        let key = key(reference.namespace.as_deref(), &reference.name);
        let stored = self.shared.objects.read().expect("cache lock").get(&key).cloned();
        stored.map(|stored| decode(&key, stored)).transpose()
    }

    /// The object at `reference`, if cached and decodable: for reads whose absence only
    /// delays. A decode failure is logged and counted; see [`Self::try_get`].
    pub fn get(&self, reference: &ObjectRef<K>) -> Option<Arc<K>> {
        self.try_get(reference).ok().flatten()
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
    /// re-list of 10,000 pods then costs one decoded pod of memory, not 10,000. An object
    /// that does not decode is skipped (logged and counted); see [`Self::try_map`].
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
            .map(|(key, stored)| decode(&key, stored).map(|obj| f(&obj)))
            .collect()
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

    /// Resolves once the first list completed.
    pub async fn wait_until_ready(&self) {
        let mut ready = self.shared.ready.subscribe();
        let _ = ready.wait_for(|ready| *ready).await;
    }
}

/// The object `stored` at `key`; a failure is logged and counted.
fn decode<K: SyncResource>(key: &str, stored: Stored<K>) -> Result<Arc<K>, DecodeError> {
    let (dictionary, bytes) = match stored {
        Stored::Typed(obj) => return Ok(obj),
        Stored::Encoded { dictionary, bytes } => (dictionary, bytes),
    };
    // It was encoded from a K: a failure is a bug, which the error makes loud.
    let decoded = dictionary
        .decompress(&bytes)
        .ok_or_else(|| "does not decompress".to_string())
        .and_then(|json| serde_json::from_slice(&json).map_err(|err| err.to_string()));
    decoded.map(Arc::new).map_err(|reason| {
        let kind = K::kind(&()).into_owned();
        tracing::error!(%kind, key, %reason, "cached object does not decode");
        CACHE_DECODE_ERRORS
            .get_or_create(&KindLabels { kind: kind.clone() })
            .inc();
        let (namespace, name) = match key.split_once('/') {
            Some((ns, name)) => (Some(ns.to_string()), name.to_string()),
            None => (None, key.to_string()),
        };
        DecodeError {
            kind,
            namespace,
            name,
            reason,
        }
    })
}

impl<K: SyncResource> CacheWriter<K> {
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
                tracing::error!(kind = %K::kind(&()), error = %err, "object does not encode");
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

#[cfg(test)]
impl<K: SyncResource> Cache<K> {
    /// Test hook: replaces the bytes of the encoded object at `reference` with bytes that do
    /// not decode.
    pub(crate) fn corrupt(&self, reference: &ObjectRef<K>) {
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

    /// The compressed bytes held for every cached object, summed.
    fn stored_bytes<K>(cache: &Cache<K>) -> usize {
        let objects = cache.shared.objects.read().unwrap();
        objects
            .values()
            .map(|stored| match stored {
                Stored::Encoded { bytes, .. } => bytes.len(),
                Stored::Typed(_) => panic!("not encoded"),
            })
            .sum()
    }

    fn labelled_pod(i: usize) -> Pod {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": format!("pod-{i}"), "namespace": "team", "uid": format!("{i:08}-90d1-480f-9986-c0825444fe3a"),
                         "labels": {"app": "web", "tier": "front"}},
            "spec": {"nodeName": "node-1", "containers": [{"name": "app", "image": "nginx:1.27",
                     "env": [{"name": "KUBERNETES_SERVICE_HOST", "value": "10.96.0.1"}, {"name": "KUBERNETES_SERVICE_PORT", "value": "443"}],
                     "volumeMounts": [{"name": "config", "mountPath": "/etc/config"}]}],
                     "volumes": [{"name": "config", "configMap": {"name": format!("cm-{i}")}}]},
            "status": {"phase": "Running", "podIP": format!("10.244.0.{}", i % 250)}
        }))
        .unwrap()
    }

    #[test]
    fn objects_alike_are_kept_in_a_fraction_of_their_json() {
        let pods: Vec<Pod> = (0..200).map(labelled_pod).collect();
        let json: usize = pods.iter().map(|p| serde_json::to_vec(p).unwrap().len()).sum();
        let cache = filled(Storage::Encoded, pods.clone());
        let stored = stored_bytes(&cache);
        assert!(
            stored * 4 < json,
            "{stored} bytes stored for {json} bytes of JSON"
        );
        for pod in &pods {
            let reference = ObjectRef::from_obj(pod);
            assert_eq!(*cache.get(&reference).unwrap(), *pod);
        }
    }

    #[test]
    fn the_dictionary_stays_small_whatever_the_objects() {
        // Values that do not compress: every object is a poor fit for the dictionary.
        let mut state = 0x2545_f491_4f6c_dd1d_u64;
        let mut noise = |n: usize| -> String {
            (0..n)
                .map(|_| {
                    state ^= state << 13;
                    state ^= state >> 7;
                    state ^= state << 17;
                    char::from(b'a' + (state % 26) as u8)
                })
                .collect()
        };
        let maps: Vec<ConfigMap> = (0..50)
            .map(|i| config_map("a", &format!("m{i}"), &noise(3000)))
            .collect();
        let (cache, mut writer) = cache::<ConfigMap>(Storage::Encoded);
        for map in &maps {
            writer.apply_watcher_event(&watcher::Event::Apply(map.clone()));
        }
        assert!(writer.samples <= MAX_SAMPLES);
        assert!(writer.dictionary.0.len() <= MAX_DICTIONARY_BYTES);
        assert_eq!(*cache.get(&ObjectRef::new("m49").within("a")).unwrap(), maps[49]);
    }

    #[test]
    fn a_secret_sampled_into_the_dictionary_leaves_its_values_out() {
        let secret: Secret = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "db", "namespace": "team"},
            "data": {"password": ByteString(b"correct-horse-battery-staple".to_vec())},
            "stringData": {"token": "never-stored-either"}
        }))
        .unwrap();
        let (cache, mut writer) = cache::<Secret>(Storage::Encoded);
        writer.apply_watcher_event(&watcher::Event::Apply(secret.clone()));
        assert_eq!(writer.samples, 1);
        let dictionary = String::from_utf8_lossy(&writer.dictionary.0).into_owned();
        assert!(
            dictionary.contains("\"password\""),
            "the keys are sampled: {dictionary}"
        );
        for value in ["correct-horse", "Y29ycmVjdC1ob3Jz", "never-stored"] {
            assert!(!dictionary.contains(value), "{value} in {dictionary}");
        }
        assert_eq!(*cache.get(&ObjectRef::from_obj(&secret)).unwrap(), secret);
    }

    #[test]
    fn an_object_that_does_not_decode_is_an_error_and_counted_never_an_absence() {
        let count = || {
            CACHE_DECODE_ERRORS
                .get_or_create(&KindLabels {
                    kind: "ConfigMap".into(),
                })
                .get()
        };
        let before = count();
        let cache = filled(
            Storage::Encoded,
            [config_map("a", "bad", "1"), config_map("a", "good", "2")],
        );
        let bad = ObjectRef::new("bad").within("a");
        cache.corrupt(&bad);
        let err = cache.try_get(&bad).unwrap_err();
        assert_eq!(
            (err.kind.as_str(), err.namespace.as_deref(), err.name.as_str()),
            ("ConfigMap", Some("a"), "bad")
        );
        assert!(
            crate::Error::from(err)
                .to_string()
                .starts_with("cached ConfigMap a/bad does not decode: ")
        );
        assert!(
            cache
                .try_get(&ObjectRef::new("gone").within("a"))
                .unwrap()
                .is_none()
        );
        assert!(
            cache
                .try_get(&ObjectRef::new("good").within("a"))
                .unwrap()
                .is_some()
        );
        let mapped = cache.try_map(|cm| cm.metadata.name.clone());
        assert_eq!(mapped.iter().filter(|r| r.is_err()).count(), 1);
        assert_eq!(count() - before, 2);
        let text = crate::metrics::Metrics::new().encode();
        assert!(
            text.contains(&format!(
                r#"vcsync_cache_decode_errors_total{{kind="ConfigMap"}} {}"#,
                count()
            )),
            "{text}"
        );
    }

    #[test]
    fn the_kinds_with_one_or_more_objects_per_pod_are_encoded() {
        assert_eq!(Storage::for_kind("Pod"), Storage::Encoded);
        assert_eq!(Storage::for_kind("Secret"), Storage::Encoded);
        assert_eq!(Storage::for_kind("Service"), Storage::Typed);
    }
}
