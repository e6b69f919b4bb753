//! The crate's shared vocabulary about Kubernetes resources: the bounds of a kind the runtime
//! handles ([`AnyResource`], typed or dynamic; [`SyncResource`], typed), what the runtime keeps
//! of a kind at run time ([`Kind`]: its dynamic type and scope), the `Api` of a kind in a
//! namespace ([`api_in`], [`Kind::api`]), the virtual key of an object and the parameters of
//! every write. A leaf: it imports nothing of the crate, so that the caches, informers, hooks,
//! contexts and the SDK can all name it.

use std::{borrow::Cow, fmt::Debug};

use k8s_openapi::{ClusterResourceScope, NamespaceResourceScope, api::core::v1::ObjectReference};
use kube::{
    Api, Client, Resource, api::PostParams, core::DynamicResourceScope, runtime::reflector::ObjectRef,
};
use serde::{Serialize, de::DeserializeOwned};
use vcsync_translators::VirtualKey;

/// The bounds every kind handled by the runtime meets, typed (k8s-openapi, `DynamicType = ()`)
/// or dynamic (kube's `DynamicObject`, `DynamicType = ApiResource`). Generic code that needs
/// the dynamic type or the scope takes them from a [`Kind`].
pub trait AnyResource:
    Resource<DynamicType: Clone + Debug + Send + Sync>
    + Clone
    + Debug
    + Serialize
    + DeserializeOwned
    + Send
    + Sync
    + 'static
{
}

impl<T> AnyResource for T where
    T: Resource<DynamicType: Clone + Debug + Send + Sync>
        + Clone
        + Debug
        + Serialize
        + DeserializeOwned
        + Send
        + Sync
        + 'static
{
}

/// A typed kind (all k8s-openapi types): no dynamic type, a scope known at compile time.
pub trait SyncResource: AnyResource + Resource<DynamicType = (), Scope: ScopeOf> {}

impl<T> SyncResource for T where T: AnyResource + Resource<DynamicType = (), Scope: ScopeOf> {}

/// Namespaced or cluster-scoped: lets generic code build the right [`Api`] for a typed kind.
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

/// Builds the `Api` of a kind in a namespace (already None for cluster-scoped kinds).
type ApiBuilder<K> = fn(Client, Option<&str>, &<K as Resource>::DynamicType) -> Api<K>;

/// What the runtime knows of kind `K` at run time: its dynamic type (`()` for typed kinds, the
/// `ApiResource` of a dynamic one), whether it is namespaced, and how its `Api` is built. The
/// caches, informers and contexts of a kind keep one; cheap to clone for typed kinds.
pub struct Kind<K: Resource> {
    dyntype: K::DynamicType,
    namespaced: bool,
    api: ApiBuilder<K>,
}

impl<K: AnyResource> Clone for Kind<K> {
    fn clone(&self) -> Self {
        Self {
            dyntype: self.dyntype.clone(),
            namespaced: self.namespaced,
            api: self.api,
        }
    }
}

impl<K: AnyResource> Debug for Kind<K> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Kind")
            .field("dyntype", &self.dyntype)
            .field("namespaced", &self.namespaced)
            .finish()
    }
}

impl<K: SyncResource> Kind<K> {
    /// The typed kind `K`.
    pub fn typed() -> Self {
        Self {
            dyntype: (),
            namespaced: <K::Scope as ScopeOf>::NAMESPACED,
            api: |client, namespace, _| api_in::<K>(client, namespace),
        }
    }
}

impl<K: SyncResource> Default for Kind<K> {
    fn default() -> Self {
        Self::typed()
    }
}

impl<K: AnyResource<Scope = DynamicResourceScope>> Kind<K> {
    /// A kind known at run time (a custom resource): its dynamic type and whether it is
    /// namespaced (from its CRD, say).
    pub fn dynamic(dyntype: K::DynamicType, namespaced: bool) -> Self {
        Self {
            dyntype,
            namespaced,
            api: |client, namespace, dyntype| match namespace {
                Some(ns) => Api::namespaced_with(client, ns, dyntype),
                None => Api::all_with(client, dyntype),
            },
        }
    }
}

impl<K: AnyResource> Kind<K> {
    /// The dynamic type (`()` for typed kinds).
    pub fn dyntype(&self) -> &K::DynamicType {
        &self.dyntype
    }

    /// True for namespaced kinds.
    pub fn is_namespaced(&self) -> bool {
        self.namespaced
    }

    /// The kind's name (`Pod`, `Widget`).
    pub fn name(&self) -> Cow<'_, str> {
        K::kind(&self.dyntype)
    }

    /// What tells this kind apart from every other, typed or dynamic: its API version and
    /// plural (all `DynamicObject`s are one Rust type).
    pub fn identity(&self) -> String {
        format!("{}/{}", K::api_version(&self.dyntype), K::plural(&self.dyntype))
    }

    /// The `Api` of this kind in `namespace` (all namespaces when None; ignored for
    /// cluster-scoped kinds).
    pub fn api(&self, client: Client, namespace: Option<&str>) -> Api<K> {
        (self.api)(client, namespace.filter(|_| self.namespaced), &self.dyntype)
    }

    /// The cache reference of the object `name` in `namespace` (None: cluster-scoped).
    pub fn object_ref(&self, namespace: Option<&str>, name: &str) -> ObjectRef<K> {
        let obj_ref = ObjectRef::new_with(name, self.dyntype.clone());
        match namespace {
            Some(ns) => obj_ref.within(ns),
            None => obj_ref,
        }
    }

    /// The reference of `obj` that events are recorded on.
    pub fn reference_of(&self, obj: &K) -> ObjectReference {
        obj.object_ref(&self.dyntype)
    }
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

#[cfg(test)]
mod tests {
    use k8s_openapi::api::core::v1::{ConfigMap, Node};
    use kube::api::{ApiResource, DynamicObject};

    use super::*;

    fn client() -> Client {
        Client::try_from(kube::Config::new("http://127.0.0.1:1".parse().unwrap())).unwrap()
    }

    fn widgets() -> ApiResource {
        ApiResource {
            group: "example.com".into(),
            version: "v1".into(),
            api_version: "example.com/v1".into(),
            kind: "Widget".into(),
            plural: "widgets".into(),
        }
    }

    #[tokio::test]
    async fn a_typed_kind_builds_the_api_api_in_builds() {
        let maps = Kind::<ConfigMap>::typed();
        assert!(maps.is_namespaced());
        assert_eq!(maps.name(), "ConfigMap");
        for namespace in [Some("team"), None] {
            assert_eq!(
                maps.api(client(), namespace).resource_url(),
                api_in::<ConfigMap>(client(), namespace).resource_url()
            );
        }
        let nodes = Kind::<Node>::typed();
        assert!(!nodes.is_namespaced());
        assert_eq!(nodes.api(client(), Some("team")).resource_url(), "/api/v1/nodes");
    }

    #[tokio::test]
    async fn a_dynamic_kind_builds_its_api_from_its_api_resource_and_scope() {
        let namespaced = Kind::<DynamicObject>::dynamic(widgets(), true);
        assert_eq!(namespaced.name(), "Widget");
        assert_eq!(
            namespaced.api(client(), Some("team")).resource_url(),
            "/apis/example.com/v1/namespaces/team/widgets"
        );
        assert_eq!(
            namespaced.api(client(), None).resource_url(),
            "/apis/example.com/v1/widgets"
        );
        let cluster = Kind::<DynamicObject>::dynamic(widgets(), false);
        assert_eq!(
            cluster.api(client(), Some("team")).resource_url(),
            "/apis/example.com/v1/widgets",
            "a namespace is ignored for a cluster-scoped kind"
        );
        let reference = namespaced.object_ref(Some("team"), "w");
        assert_eq!(
            (
                reference.dyntype.kind.as_str(),
                reference.namespace.as_deref(),
                reference.name.as_str()
            ),
            ("Widget", Some("team"), "w")
        );
    }

    #[test]
    fn kinds_are_told_apart_by_api_version_and_plural_not_by_rust_type() {
        let gadgets = ApiResource {
            kind: "Gadget".into(),
            plural: "gadgets".into(),
            ..widgets()
        };
        let (w, g) = (
            Kind::<DynamicObject>::dynamic(widgets(), true),
            Kind::<DynamicObject>::dynamic(gadgets, true),
        );
        assert_eq!(w.identity(), "example.com/v1/widgets");
        assert_ne!(w.identity(), g.identity());
        assert_eq!(Kind::<ConfigMap>::typed().identity(), "v1/configmaps");
    }
}
