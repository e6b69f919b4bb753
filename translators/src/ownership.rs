//! Marks that say which host objects this vcsync instance owns.
//!
//! Reconcile rule 1: never touch a host object without this instance's marker. The marker is a label
//! (so watches and garbage collection can filter on it server-side) plus annotations naming the
//! virtual object (so host events map back to virtual keys without a mapping store of our own).

use std::fmt;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use crate::names::{MAX_NAME_LEN, is_label_value};
use crate::{Error, Result};

/// Label on every host object vcsync creates; its value is the instance name.
pub const MANAGED_BY_LABEL: &str = "vcsync.dev/managed-by";
/// Label carrying the virtual namespace (through `safe_label_value`), so that translated selectors
/// only match objects of the same virtual namespace although all land in one host namespace.
pub const NAMESPACE_LABEL: &str = "vcsync.dev/namespace";
/// Annotation with the virtual object's name.
pub const OBJECT_NAME_ANNOTATION: &str = "vcsync.dev/object-name";
/// Annotation with the virtual object's namespace; absent for cluster-scoped objects.
pub const OBJECT_NAMESPACE_ANNOTATION: &str = "vcsync.dev/object-namespace";
/// Annotation with the virtual object's UID, to tell a re-created virtual object from the old one.
pub const OBJECT_UID_ANNOTATION: &str = "vcsync.dev/object-uid";
/// Annotation with the virtual object's kind, for humans and for sharing one host namespace safely.
pub const OBJECT_KIND_ANNOTATION: &str = "vcsync.dev/object-kind";
/// Annotation with the UID of the virtual cluster (its `kube-system` namespace) the host object was
/// made for, so that copies made for an earlier, replaced virtual cluster are told apart from the
/// current one's and never deleted because the new cluster does not know them.
pub const CLUSTER_UID_ANNOTATION: &str = "vcsync.dev/cluster-uid";
/// Prefix of every label and annotation key vcsync owns; tenants cannot set keys under it.
pub const RESERVED_PREFIX: &str = "vcsync.dev/";

/// The identity of one vcsync instance (one virtual cluster) on the host: a validated instance name.
///
/// The name is used as the value of [`MANAGED_BY_LABEL`], so it must be a valid label value; it is
/// validated once here so that every later translation is infallible.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Ownership {
    instance: String,
    /// The virtual cluster's identity, stamped on the host objects made from now on.
    cluster_uid: Option<String>,
}

impl Ownership {
    /// Validates `instance`: 1 to 63 characters of `[A-Za-z0-9._-]`, alphanumeric at both ends.
    pub fn new(instance: &str) -> Result<Self> {
        let reason = if instance.is_empty() {
            Some("it must not be empty".to_owned())
        } else if instance.len() > MAX_NAME_LEN {
            Some(format!(
                "it has {} characters, at most {MAX_NAME_LEN} are allowed",
                instance.len()
            ))
        } else if !is_label_value(instance) {
            Some(
                "it must be a valid label value: letters, digits, '-', '_' and '.', \
                 starting and ending with a letter or digit"
                    .to_owned(),
            )
        } else {
            None
        };
        match reason {
            Some(reason) => Err(Error::InvalidInstance {
                instance: instance.to_owned(),
                reason,
            }),
            None => Ok(Self {
                instance: instance.to_owned(),
                cluster_uid: None,
            }),
        }
    }

    /// The instance name, the value of [`MANAGED_BY_LABEL`] on owned host objects.
    pub fn instance(&self) -> &str {
        &self.instance
    }

    /// The same marker, also naming the virtual cluster (by the UID of its `kube-system`
    /// namespace) that host objects are made for: [`CLUSTER_UID_ANNOTATION`].
    pub fn with_cluster_uid(mut self, uid: impl Into<String>) -> Self {
        self.cluster_uid = Some(uid.into());
        self
    }

    /// The virtual cluster's UID stamped on new host objects, if known.
    pub fn cluster_uid(&self) -> Option<&str> {
        self.cluster_uid.as_deref()
    }

    /// Whether the host object carries this instance's ownership label. Objects of other instances
    /// or of nobody are not ours, whatever their annotations say.
    pub fn owns(&self, host: &ObjectMeta) -> bool {
        host.labels
            .as_ref()
            .and_then(|l| l.get(MANAGED_BY_LABEL))
            .is_some_and(|v| *v == self.instance)
    }

    /// Label selector for host watches and lists: `vcsync.dev/managed-by=<instance>`.
    pub fn label_selector(&self) -> String {
        format!("{MANAGED_BY_LABEL}={}", self.instance)
    }
}

impl fmt::Display for Ownership {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.instance)
    }
}
