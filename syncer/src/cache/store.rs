//! The state a cache's readers and its writer share: the objects by key, how they are kept and
//! whether the first list completed.

use std::{
    collections::HashMap,
    marker::PhantomData,
    sync::{Arc, RwLock},
};

use tokio::sync::watch;

use super::encoding::{Storage, Stored};

/// `namespace/name`, or `name` for cluster-scoped objects (names never contain a slash).
pub(super) fn key(namespace: Option<&str>, name: &str) -> Box<str> {
    match namespace {
        Some(ns) => format!("{ns}/{name}").into_boxed_str(),
        None => name.into(),
    }
}

pub(super) type Objects<K> = HashMap<Box<str>, Stored<K>>;

pub(super) struct Shared<K> {
    /// The kind's name, for errors, logs and metrics.
    pub(super) kind: Box<str>,
    pub(super) storage: Storage,
    pub(super) objects: RwLock<Objects<K>>,
    pub(super) ready: watch::Sender<bool>,
    pub(super) _kind: PhantomData<fn() -> K>,
}

/// A read handle of a cache; cheap to clone.
pub struct Cache<K> {
    pub(super) shared: Arc<Shared<K>>,
}

impl<K> Clone for Cache<K> {
    fn clone(&self) -> Self {
        Self {
            shared: self.shared.clone(),
        }
    }
}
