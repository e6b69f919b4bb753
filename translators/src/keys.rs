//! Keys of objects on either side of the translation.
//!
//! Two distinct types so that a virtual key can never be passed where a host key is expected: the
//! whole point of the crate is that these live in different name spaces.

use std::fmt;

use serde::{Deserialize, Serialize};

/// The key of an object in the virtual cluster: namespace (None for cluster-scoped kinds) and name.
///
/// Displays as `namespace/name`, or `name` when cluster-scoped, like `kube_runtime::reflector::ObjectRef`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct VirtualKey {
    /// Virtual namespace; None for cluster-scoped objects.
    pub namespace: Option<String>,
    /// Virtual object name.
    pub name: String,
}

impl VirtualKey {
    /// Key of a namespaced virtual object.
    pub fn namespaced(ns: impl Into<String>, name: impl Into<String>) -> Self {
        Self {
            namespace: Some(ns.into()),
            name: name.into(),
        }
    }

    /// Key of a cluster-scoped virtual object.
    pub fn cluster(name: impl Into<String>) -> Self {
        Self {
            namespace: None,
            name: name.into(),
        }
    }
}

impl fmt::Display for VirtualKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.namespace {
            Some(ns) => write!(f, "{ns}/{}", self.name),
            None => f.write_str(&self.name),
        }
    }
}

/// The key of an object in the host cluster: namespace (None for cluster-scoped kinds) and name.
///
/// Displays as `namespace/name`, or `name` when cluster-scoped.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct HostKey {
    /// Host namespace; None for cluster-scoped objects.
    pub namespace: Option<String>,
    /// Host object name.
    pub name: String,
}

impl HostKey {
    /// Key of a namespaced host object.
    pub fn namespaced(ns: impl Into<String>, name: impl Into<String>) -> Self {
        Self {
            namespace: Some(ns.into()),
            name: name.into(),
        }
    }

    /// Key of a cluster-scoped host object.
    pub fn cluster(name: impl Into<String>) -> Self {
        Self {
            namespace: None,
            name: name.into(),
        }
    }
}

impl fmt::Display for HostKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.namespace {
            Some(ns) => write!(f, "{ns}/{}", self.name),
            None => f.write_str(&self.name),
        }
    }
}
