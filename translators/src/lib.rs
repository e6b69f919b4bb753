//! Pure translation between a virtual cluster and its host namespace.
//!
//! Everything here is a function of its inputs: no I/O, no Kubernetes client, no async runtime.
//! The syncer decides *when* to translate; this crate decides *what* the host side looks like
//! (names, labels, annotations, selectors), which objects a pod depends on, and keeps the in-memory
//! indices fed by watch events. Keeping it pure lets every rule be tested as a data transformation.
#![forbid(unsafe_code)]

pub mod indices;
pub mod keys;
pub mod kubelet;
pub mod labels;
pub mod names;
pub mod ownership;
pub mod references;
pub mod restored;
pub mod translator;

pub use indices::ReferenceIndex;
pub use keys::{HostKey, VirtualKey};
pub use labels::{
    host_annotations, host_label_selector, host_labels, host_map_selector, is_reserved_key,
    virtual_labels_from_host, virtual_metadata_from_host,
};
pub use names::{
    CONTROL_PLANE_NAMES, MAX_NAME_LEN, PER_NAMESPACE_ESCAPE, host_cluster_name, host_name,
    host_namespace_name, per_namespace_name, safe_label_value,
};
pub use ownership::{
    CLUSTER_UID_ANNOTATION, MANAGED_BY_LABEL, NAMESPACE_LABEL, OBJECT_KIND_ANNOTATION,
    OBJECT_NAME_ANNOTATION, OBJECT_NAMESPACE_ANNOTATION, OBJECT_UID_ANNOTATION, Ownership, RESERVED_PREFIX,
};
pub use references::{PodSite, RefKind, RefTarget, pod_references, visit_pod_sites, visit_pod_sites_mut};
pub use restored::{RESTORED_UID_ANNOTATION, is_copy_of_restored};
pub use translator::{
    ClusterScopedTranslator, HostNamespaceTranslator, NameTranslator, NamespaceMapping, NamespacedTranslator,
    PerNamespaceTranslator,
};

/// Errors of this crate. Translation itself cannot fail (every input maps to a valid host name);
/// only configuration, such as the instance name, is validated.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// The instance name is unusable as the value of the ownership label.
    #[error("invalid vcsync instance name {instance:?}: {reason}")]
    InvalidInstance {
        /// The rejected instance name, verbatim.
        instance: String,
        /// What is wrong with it, phrased so the user can fix the configuration.
        reason: String,
    },
}

/// Result with this crate's [`Error`] as the default error type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
