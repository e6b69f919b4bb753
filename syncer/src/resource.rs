//! The crate's shared vocabulary about Kubernetes resources: the bounds of a synced kind
//! ([`SyncResource`]), the `Api` of a kind in a namespace ([`api_in`]), the virtual key of an
//! object and the parameters of every write. A leaf: it imports nothing of the crate, so that
//! the caches, informers, hooks, contexts and the SDK can all name it.

use std::fmt::Debug;

use k8s_openapi::{ClusterResourceScope, NamespaceResourceScope};
use kube::{Api, Client, Resource, api::PostParams, runtime::reflector::ObjectRef};
use serde::{Serialize, de::DeserializeOwned};
use vcsync_translators::VirtualKey;

/// The bounds every kind handled by a syncer meets (all k8s-openapi types do).
pub trait SyncResource:
    Resource<DynamicType = (), Scope: ScopeOf>
    + Clone
    + Debug
    + Serialize
    + DeserializeOwned
    + Send
    + Sync
    + 'static
{
}

impl<T> SyncResource for T where
    T: Resource<DynamicType = (), Scope: ScopeOf>
        + Clone
        + Debug
        + Serialize
        + DeserializeOwned
        + Send
        + Sync
        + 'static
{
}

/// Namespaced or cluster-scoped: lets generic code build the right [`Api`] for a kind.
pub trait ScopeOf: Sized {
    /// True for namespaced kinds.
    const NAMESPACED: bool;

    /// An `Api` in `namespace` for namespaced kinds (all namespaces when `None`); the cluster
    /// scope for cluster-scoped kinds, whatever `namespace` says.
    fn api<K: Resource<DynamicType = (), Scope = Self>>(client: Client, namespace: Option<&str>) -> Api<K>;
}

impl ScopeOf for NamespaceResourceScope {
    const NAMESPACED: bool = true;

    fn api<K: Resource<DynamicType = (), Scope = Self>>(client: Client, namespace: Option<&str>) -> Api<K> {
        match namespace {
            Some(ns) => Api::namespaced(client, ns),
            None => Api::all(client),
        }
    }
}

impl ScopeOf for ClusterResourceScope {
    const NAMESPACED: bool = false;

    fn api<K: Resource<DynamicType = (), Scope = Self>>(client: Client, _namespace: Option<&str>) -> Api<K> {
        Api::all(client)
    }
}

/// The `Api` of kind `K` in `namespace` (ignored for cluster-scoped kinds).
pub fn api_in<K: SyncResource>(client: Client, namespace: Option<&str>) -> Api<K> {
    <K::Scope as ScopeOf>::api::<K>(client, namespace)
}

/// The virtual key of a virtual object.
pub fn virtual_key_of<K: Resource>(obj: &K) -> VirtualKey {
    VirtualKey::new(
        obj.meta().namespace.clone(),
        obj.meta().name.clone().unwrap_or_default(),
    )
}

/// The cache reference of the object `name` in `namespace` (None: cluster-scoped).
pub fn object_ref<K: Resource<DynamicType = ()>>(namespace: Option<&str>, name: &str) -> ObjectRef<K> {
    let obj_ref = ObjectRef::new(name);
    match namespace {
        Some(ns) => obj_ref.within(ns),
        None => obj_ref,
    }
}

/// Field manager recorded on every write, so owners of fields are visible on the server.
pub const FIELD_MANAGER: &str = "vcsync";

/// Parameters of every create and update vcsync makes: its field manager, so that the
/// owners of fields are visible on the server.
pub fn write_params() -> PostParams {
    PostParams {
        field_manager: Some(FIELD_MANAGER.to_string()),
        ..PostParams::default()
    }
}
