//! Objects decoded from an API server without what no reader needs.
//!
//! Every object an API server sends carries its `metadata.managedFields` (server-side apply's
//! record of who set which field). vcsync reads none of it, and it is large: a synced host pod
//! is 6.5 KB of JSON of which 3 KB are managed fields, and decoding them into k8s-openapi's
//! types (each entry's `fieldsV1` a `serde_json::Value`, a map allocation per field) is more
//! than half of the pod's decoding time.
//!
//! A [`Wire<K>`] decodes as `K` does, except that the member `managedFields` of the object's
//! `metadata` is skipped unread (scanned, not decoded): the deserializer is wrapped down to the
//! metadata's members, nothing deeper ([`Object`], [`Metadata`]). Watches and write responses
//! decode `Wire<K>` in place of `K`: `Wire<K>` is a [`Resource`] of `K`'s kind, so an
//! `Api<Wire<K>>` ([`wire_api`]) addresses the same URLs. The last-applied annotation of
//! `kubectl apply`, which no reader needs either, is dropped after decoding
//! ([`strip_unread_fields`]); it is one string. [`create`], [`replace`] and
//! [`replace_status`] are kube's writes of the same names, their answers decoded so.

use std::{
    borrow::Cow,
    fmt::{self, Debug},
};

use kube::{
    Api, Client, Resource,
    api::{ObjectMeta, PostParams},
    core::{DynamicResourceScope, Request},
};
use serde::{
    Deserialize, Deserializer, Serialize, Serializer,
    de::{
        DeserializeOwned, DeserializeSeed, IgnoredAny, MapAccess, Visitor,
        value::{BorrowedStrDeserializer, StringDeserializer},
    },
};

/// The annotation `kubectl apply` keeps its last applied configuration in.
pub const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";

/// The member of an object's metadata that is skipped.
const MANAGED_FIELDS: &str = "managedFields";

/// An object decoded without its managed fields and its last-applied annotation.
#[derive(Clone, PartialEq)]
pub struct Wire<K>(pub K);

impl<K> Wire<K> {
    /// The object.
    pub fn into_inner(self) -> K {
        self.0
    }
}

impl<K: Debug> Debug for Wire<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl<K: Serialize> Serialize for Wire<K> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(serializer)
    }
}

impl<'de, K: Deserialize<'de> + Resource> Deserialize<'de> for Wire<K> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let mut object = K::deserialize(Object(deserializer))?;
        strip_unread_fields(object.meta_mut());
        Ok(Wire(object))
    }
}

/// Drops managed fields and the last-applied annotation from decoded metadata.
pub fn strip_unread_fields(meta: &mut ObjectMeta) {
    meta.managed_fields = None;
    if let Some(annotations) = meta.annotations.as_mut() {
        annotations.remove(LAST_APPLIED);
    }
}

impl<K: Resource> Resource for Wire<K> {
    type DynamicType = K::DynamicType;
    type Scope = DynamicResourceScope;

    fn kind(dt: &Self::DynamicType) -> Cow<'_, str> {
        K::kind(dt)
    }

    fn group(dt: &Self::DynamicType) -> Cow<'_, str> {
        K::group(dt)
    }

    fn version(dt: &Self::DynamicType) -> Cow<'_, str> {
        K::version(dt)
    }

    fn api_version(dt: &Self::DynamicType) -> Cow<'_, str> {
        K::api_version(dt)
    }

    fn plural(dt: &Self::DynamicType) -> Cow<'_, str> {
        K::plural(dt)
    }

    fn meta(&self) -> &ObjectMeta {
        self.0.meta()
    }

    fn meta_mut(&mut self) -> &mut ObjectMeta {
        self.0.meta_mut()
    }
}

/// The `Api` of `K`'s kind (dynamic type `dyntype`) in `namespace` (all namespaces, or the
/// cluster scope, when None), answering with [`Wire`] objects.
pub fn wire_api<K: Resource>(
    client: Client,
    namespace: Option<&str>,
    dyntype: &K::DynamicType,
) -> Api<Wire<K>> {
    match namespace {
        Some(ns) => Api::namespaced_with(client, ns, dyntype),
        None => Api::all_with(client, dyntype),
    }
}

/// `api.create(pp, data)`, the answer decoded as a [`Wire`] object.
pub async fn create<K: Resource + Clone + Serialize + DeserializeOwned>(
    api: &Api<K>,
    pp: &PostParams,
    data: &K,
) -> kube::Result<K> {
    send(api, data, "create", |request, body| request.create(pp, body)).await
}

/// `api.replace(name, pp, data)`, the answer decoded as a [`Wire`] object.
pub async fn replace<K: Resource + Clone + Serialize + DeserializeOwned>(
    api: &Api<K>,
    name: &str,
    pp: &PostParams,
    data: &K,
) -> kube::Result<K> {
    send(api, data, "replace", |request, body| {
        request.replace(name, pp, body)
    })
    .await
}

/// `api.replace_status(name, pp, data)`, the answer decoded as a [`Wire`] object.
pub async fn replace_status<K: Resource + Clone + Serialize + DeserializeOwned>(
    api: &Api<K>,
    name: &str,
    pp: &PostParams,
    data: &K,
) -> kube::Result<K> {
    send(api, data, "replace_status", |request, body| {
        request.replace_subresource("status", name, pp, body)
    })
    .await
}

/// Sends `data` as the body of the request `build` makes of `api`'s URL (named `verb` in kube's
/// trace spans, as kube's own methods do) with `api`'s client, and decodes the answer as a
/// [`Wire`] object.
async fn send<K: Resource + Clone + Serialize + DeserializeOwned>(
    api: &Api<K>,
    data: &K,
    verb: &'static str,
    build: impl FnOnce(Request, Vec<u8>) -> Result<http::Request<Vec<u8>>, kube::core::request::Error>,
) -> kube::Result<K> {
    let body = serde_json::to_vec(data).map_err(kube::Error::SerdeError)?;
    let mut request = build(Request::new(api.resource_url()), body).map_err(kube::Error::BuildRequest)?;
    request.extensions_mut().insert(verb);
    let Wire(object) = api.clone().into_client().request::<Wire<K>>(request).await?;
    Ok(object)
}

/// Forwards the `deserialize_*` methods a wrapper leaves alone to the deserializer it wraps.
macro_rules! forward_unchanged {
    ($($method:ident($($arg:ident: $ty:ty),*)),* $(,)?) => {
        $(
            fn $method<V: Visitor<'de>>(self, $($arg: $ty,)* visitor: V) -> Result<V::Value, Self::Error> {
                self.0.$method($($arg,)* visitor)
            }
        )*
    };
}

/// Implements `Deserializer` for a wrapper whose maps (and structs, read as maps) are visited
/// through `$visitor`, everything else unchanged.
macro_rules! map_wrapping_deserializer {
    ($wrapper:ident, $visitor:ident, $some:ident, $members:ident) => {
        impl<'de, D: Deserializer<'de>> Deserializer<'de> for $wrapper<D> {
            type Error = D::Error;

            fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, D::Error> {
                self.0.deserialize_any($visitor(visitor))
            }

            fn deserialize_map<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, D::Error> {
                self.0.deserialize_map($visitor(visitor))
            }

            fn deserialize_struct<V: Visitor<'de>>(
                self,
                name: &'static str,
                fields: &'static [&'static str],
                visitor: V,
            ) -> Result<V::Value, D::Error> {
                self.0.deserialize_struct(name, fields, $visitor(visitor))
            }

            // `Option<T>` fields (k8s-openapi reads `metadata` as one) are wrapped inside.
            fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, D::Error> {
                self.0.deserialize_option($some(visitor))
            }

            fn is_human_readable(&self) -> bool {
                self.0.is_human_readable()
            }

            forward_unchanged! {
                deserialize_bool(), deserialize_i8(), deserialize_i16(), deserialize_i32(),
                deserialize_i64(), deserialize_i128(), deserialize_u8(), deserialize_u16(),
                deserialize_u32(), deserialize_u64(), deserialize_u128(), deserialize_f32(),
                deserialize_f64(), deserialize_char(), deserialize_str(), deserialize_string(),
                deserialize_bytes(), deserialize_byte_buf(),
                deserialize_unit(), deserialize_unit_struct(name: &'static str),
                deserialize_newtype_struct(name: &'static str), deserialize_seq(),
                deserialize_tuple(len: usize),
                deserialize_tuple_struct(name: &'static str, len: usize),
                deserialize_enum(name: &'static str, variants: &'static [&'static str]),
                deserialize_identifier(), deserialize_ignored_any(),
            }
        }

        impl<'de, V: Visitor<'de>> Visitor<'de> for $visitor<V> {
            type Value = V::Value;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.expecting(f)
            }

            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<V::Value, A::Error> {
                self.0.visit_map($members(map))
            }
        }

        struct $some<V>(V);

        impl<'de, V: Visitor<'de>> Visitor<'de> for $some<V> {
            type Value = V::Value;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.expecting(f)
            }

            fn visit_none<E: serde::de::Error>(self) -> Result<V::Value, E> {
                self.0.visit_none()
            }

            fn visit_unit<E: serde::de::Error>(self) -> Result<V::Value, E> {
                self.0.visit_unit()
            }

            fn visit_some<D: Deserializer<'de>>(self, deserializer: D) -> Result<V::Value, D::Error> {
                self.0.visit_some($wrapper(deserializer))
            }
        }
    };
}

/// The deserializer of a whole object: the value of its member `metadata` is read through
/// [`Metadata`].
struct Object<D>(D);
struct ObjectVisitor<V>(V);
map_wrapping_deserializer!(Object, ObjectVisitor, ObjectSome, object_members);

fn object_members<A>(map: A) -> ObjectMembers<A> {
    ObjectMembers {
        map,
        metadata_next: false,
    }
}

/// The deserializer of an object's metadata: its member `managedFields` is skipped unread.
struct Metadata<D>(D);
struct MetadataVisitor<V>(V);
map_wrapping_deserializer!(Metadata, MetadataVisitor, MetadataSome, MetadataMembers);

/// A member's key, borrowed from the input where it can be.
struct Key<'de>(Cow<'de, str>);

impl<'de> Deserialize<'de> for Key<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct KeyVisitor;
        impl<'de> Visitor<'de> for KeyVisitor {
            type Value = Key<'de>;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a member name")
            }

            fn visit_borrowed_str<E>(self, key: &'de str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Borrowed(key)))
            }

            fn visit_str<E>(self, key: &str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Owned(key.to_string())))
            }

            fn visit_string<E>(self, key: String) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Owned(key)))
            }
        }
        deserializer.deserialize_str(KeyVisitor)
    }
}

impl<'de> Key<'de> {
    /// Hands the key to the seed that reads it (a struct's field visitor, say).
    fn into_seed<S: DeserializeSeed<'de>, E: serde::de::Error>(self, seed: S) -> Result<S::Value, E> {
        match self.0 {
            Cow::Borrowed(key) => seed.deserialize(BorrowedStrDeserializer::new(key)),
            Cow::Owned(key) => seed.deserialize(StringDeserializer::new(key)),
        }
    }
}

/// The members of an object, the value of `metadata` read through [`Metadata`].
struct ObjectMembers<A> {
    map: A,
    metadata_next: bool,
}

impl<'de, A: MapAccess<'de>> MapAccess<'de> for ObjectMembers<A> {
    type Error = A::Error;

    fn next_key_seed<S: DeserializeSeed<'de>>(&mut self, seed: S) -> Result<Option<S::Value>, A::Error> {
        let Some(key) = self.map.next_key::<Key<'de>>()? else {
            return Ok(None);
        };
        self.metadata_next = key.0 == "metadata";
        key.into_seed(seed).map(Some)
    }

    fn next_value_seed<S: DeserializeSeed<'de>>(&mut self, seed: S) -> Result<S::Value, A::Error> {
        if std::mem::take(&mut self.metadata_next) {
            self.map.next_value_seed(MetadataSeed(seed))
        } else {
            self.map.next_value_seed(seed)
        }
    }

    fn size_hint(&self) -> Option<usize> {
        self.map.size_hint()
    }
}

/// Reads the value of `metadata` through [`Metadata`] for the seed that wants it.
struct MetadataSeed<S>(S);

impl<'de, S: DeserializeSeed<'de>> DeserializeSeed<'de> for MetadataSeed<S> {
    type Value = S::Value;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<S::Value, D::Error> {
        self.0.deserialize(Metadata(deserializer))
    }
}

/// The members of an object's metadata without `managedFields`.
struct MetadataMembers<A>(A);

impl<'de, A: MapAccess<'de>> MapAccess<'de> for MetadataMembers<A> {
    type Error = A::Error;

    fn next_key_seed<S: DeserializeSeed<'de>>(&mut self, seed: S) -> Result<Option<S::Value>, A::Error> {
        loop {
            let Some(key) = self.0.next_key::<Key<'de>>()? else {
                return Ok(None);
            };
            if key.0 == MANAGED_FIELDS {
                self.0.next_value::<IgnoredAny>()?;
                continue;
            }
            return key.into_seed(seed).map(Some);
        }
    }

    fn next_value_seed<S: DeserializeSeed<'de>>(&mut self, seed: S) -> Result<S::Value, A::Error> {
        self.0.next_value_seed(seed)
    }
}

#[cfg(test)]
#[path = "wire_tests.rs"]
mod tests;
