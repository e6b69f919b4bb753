//! Errors returned by the public API of the crate (starting the server).
//!
//! Errors returned to HTTP clients are Kubernetes `Status` objects; see [`crate::status`].

use std::net::SocketAddr;
use std::path::PathBuf;

/// Errors from starting or configuring an [`crate::ApiServer`].
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The listening socket could not be bound.
    #[error("failed to bind the API server to {addr}: {source}")]
    Bind {
        /// The address that was requested.
        addr: SocketAddr,
        /// The underlying I/O error.
        source: std::io::Error,
    },
    /// `ServerConfig::service_cidr` is not an IPv4 CIDR such as `10.96.0.0/12`.
    #[error("invalid service CIDR {cidr:?}: {reason}")]
    InvalidServiceCidr {
        /// The CIDR as configured.
        cidr: String,
        /// Why it was rejected.
        reason: String,
    },
    /// A [`crate::SimulatorConfig`] field has a value the simulator cannot use.
    #[error("invalid simulator configuration: {field} {value:?}: {reason}")]
    InvalidSimulatorConfig {
        /// The field, such as `pod_cidr`.
        field: &'static str,
        /// The value as configured.
        value: String,
        /// Why it was rejected.
        reason: String,
    },
    /// The server's kubelet client certificate could not be made or read back.
    #[error("the API server's kubelet client identity: {0}")]
    KubeletIdentity(String),
    /// The state directory ([`crate::ServerConfig::state_dir`]) or its state file cannot be
    /// used: unreadable, corrupt, locked by another server, or not writable.
    #[error("cannot use the API server state {path}: {reason}")]
    State {
        /// The directory or file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
}

/// Result type of the crate's public API.
pub type Result<T, E = Error> = std::result::Result<T, E>;
