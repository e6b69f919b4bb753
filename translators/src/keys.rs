//! Keys of objects on either side of the translation.
//!
//! One key type, [`ObjectKey`], marked with the cluster it belongs to: [`VirtualKey`] and
//! [`HostKey`] are the same data (namespace and name) but distinct types, so that a virtual key
//! can never be passed where a host key is expected (looking up or deleting a host object by a
//! virtual name compiles to nothing). The whole point of the crate is that these live in
//! different name spaces; [`crate::NameTranslator::host_key`] is the way from one to the other.

use std::{fmt, marker::PhantomData};

use serde::{Deserialize, Serialize};

/// The cluster a key belongs to: [`Virtual`] or [`Host`].
pub trait Cluster: 'static {
    /// Name of the key type, for `Debug`.
    const KEY: &'static str;
}

/// Marks keys of the virtual cluster.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Virtual {}

/// Marks keys of the host cluster.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Host {}

impl Cluster for Virtual {
    const KEY: &'static str = "VirtualKey";
}

impl Cluster for Host {
    const KEY: &'static str = "HostKey";
}

/// The key of an object in cluster `C`: namespace (None for cluster-scoped kinds) and name.
///
/// Displays as `namespace/name`, or `name` when cluster-scoped, like `kube_runtime::reflector::ObjectRef`.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(bound = "")]
pub struct ObjectKey<C> {
    /// Namespace; None for cluster-scoped objects.
    pub namespace: Option<String>,
    /// Object name.
    pub name: String,
    #[serde(skip)]
    side: PhantomData<fn() -> C>,
}

/// The key of an object in the virtual cluster.
pub type VirtualKey = ObjectKey<Virtual>;

/// The key of an object in the host cluster.
pub type HostKey = ObjectKey<Host>;

impl<C> ObjectKey<C> {
    /// Key of the object named `name` in `namespace` (None: cluster-scoped).
    pub fn new(namespace: Option<String>, name: impl Into<String>) -> Self {
        Self {
            namespace,
            name: name.into(),
            side: PhantomData,
        }
    }

    /// Key of a namespaced object.
    pub fn namespaced(ns: impl Into<String>, name: impl Into<String>) -> Self {
        Self::new(Some(ns.into()), name)
    }

    /// Key of a cluster-scoped object.
    pub fn cluster(name: impl Into<String>) -> Self {
        Self::new(None, name)
    }
}

impl<C: Cluster> fmt::Debug for ObjectKey<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct(C::KEY)
            .field("namespace", &self.namespace)
            .field("name", &self.name)
            .finish()
    }
}

impl<C> fmt::Display for ObjectKey<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.namespace {
            Some(ns) => write!(f, "{ns}/{}", self.name),
            None => f.write_str(&self.name),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_sides_display_debug_and_serialize_as_namespace_and_name() {
        let virt = VirtualKey::namespaced("team", "web");
        assert_eq!(virt.to_string(), "team/web");
        assert_eq!(HostKey::cluster("n").to_string(), "n");
        assert_eq!(
            format!("{virt:?}"),
            r#"VirtualKey { namespace: Some("team"), name: "web" }"#
        );
        assert_eq!(
            format!("{:?}", HostKey::cluster("n")),
            r#"HostKey { namespace: None, name: "n" }"#
        );
        let json = serde_json::to_value(&virt).unwrap();
        assert_eq!(json, serde_json::json!({"namespace": "team", "name": "web"}));
        assert_eq!(serde_json::from_value::<VirtualKey>(json).unwrap(), virt);
        assert!(VirtualKey::namespaced("a", "z") < VirtualKey::namespaced("b", "a"));
    }
}
