//! How a cache keeps an object ([`Storage`]): typed, or as JSON compressed with LZ4 against a
//! [`Dictionary`] of a few earlier objects of the same cache; and how it reads one back
//! ([`decode`], whose failure is logged, counted and returned).

use std::{any::Any, sync::Arc};

use k8s_openapi::{ByteString, api::core::v1::Secret};

use super::error::DecodeError;
use crate::{
    metrics::{CACHE_DECODE_ERRORS, KindLabels},
    resource::AnyResource,
};

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

pub(super) enum Stored<K> {
    /// The object, and the length of its JSON (what `vcsync_cache_bytes` counts for it).
    Typed(Arc<K>, usize),
    Encoded {
        dictionary: Arc<Dictionary>,
        /// The JSON's length, then the JSON compressed against `dictionary`.
        bytes: Arc<[u8]>,
    },
}

impl<K> Stored<K> {
    /// The bytes `vcsync_cache_bytes` counts for this object (its key aside): its compressed
    /// bytes, or (typed) its JSON's length.
    pub(super) fn counted_bytes(&self) -> usize {
        match self {
            Stored::Typed(_, json_len) => *json_len,
            Stored::Encoded { bytes, .. } => bytes.len(),
        }
    }
}

impl<K> Clone for Stored<K> {
    fn clone(&self) -> Self {
        match self {
            Stored::Typed(obj, json_len) => Stored::Typed(obj.clone(), *json_len),
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
pub(super) struct Dictionary(pub(super) Box<[u8]>);

pub(super) const MAX_SAMPLES: usize = 4;
pub(super) const MAX_DICTIONARY_BYTES: usize = 16 * 1024;

impl Dictionary {
    pub(super) fn compress(&self, json: &[u8]) -> Vec<u8> {
        lz4_flex::block::compress_prepend_size_with_dict(json, &self.0)
    }

    fn decompress(&self, bytes: &[u8]) -> Option<Vec<u8>> {
        lz4_flex::block::decompress_size_prepended_with_dict(bytes, &self.0).ok()
    }

    /// This dictionary with `sample` appended.
    pub(super) fn with(&self, sample: &[u8]) -> Dictionary {
        Dictionary([&self.0[..], sample].concat().into_boxed_slice())
    }
}

/// The JSON an object adds to a dictionary: its own, or for a Secret, its own with every
/// value blanked.
pub(super) fn sample_of<K: AnyResource>(obj: &K, json: &[u8]) -> Vec<u8> {
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

/// The object `stored` at `key`, of kind `kind`; a failure is logged and counted.
pub(super) fn decode<K: AnyResource>(
    kind: &str,
    key: &str,
    stored: Stored<K>,
) -> Result<Arc<K>, DecodeError> {
    let (dictionary, bytes) = match stored {
        Stored::Typed(obj, _) => return Ok(obj),
        Stored::Encoded { dictionary, bytes } => (dictionary, bytes),
    };
    // It was encoded from a K: a failure is a bug, which the error makes loud.
    let decoded = dictionary
        .decompress(&bytes)
        .ok_or_else(|| "does not decompress".to_string())
        .and_then(|json| serde_json::from_slice(&json).map_err(|err| err.to_string()));
    decoded.map(Arc::new).map_err(|reason| {
        tracing::error!(%kind, key, %reason, "cached object does not decode");
        CACHE_DECODE_ERRORS
            .get_or_create(&KindLabels {
                kind: kind.to_string(),
            })
            .inc();
        let (namespace, name) = match key.split_once('/') {
            Some((ns, name)) => (Some(ns.to_string()), name.to_string()),
            None => (None, key.to_string()),
        };
        DecodeError {
            kind: kind.to_string(),
            namespace,
            name,
            reason,
        }
    })
}
