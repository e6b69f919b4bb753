//! Errors of the syncer SDK and the controller manager.

use std::fmt;

/// Which of the two API servers an operation talked to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Side {
    /// The virtual cluster's API server: where tenants create objects.
    Virtual,
    /// The host cluster's API server: where synced objects run.
    Host,
}

impl fmt::Display for Side {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Side::Virtual => "virtual",
            Side::Host => "host",
        })
    }
}

/// Everything that can go wrong while registering or running syncers.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A request to one of the API servers failed.
    #[error("{verb} {kind} {key} in the {side} cluster: {source}")]
    Api {
        /// The cluster the request went to.
        side: Side,
        /// What was attempted (create, update, delete, get, ...).
        verb: &'static str,
        /// Kind of the object.
        kind: String,
        /// `namespace/name` of the object.
        key: String,
        /// The client error.
        #[source]
        source: Box<kube::Error>,
    },
    /// A host object with the translated name exists but belongs to someone else.
    #[error(
        "host object {host} already exists and is not managed by vcsync instance {instance}; \
         rename the virtual object or remove the host object"
    )]
    ForeignHostObject {
        /// `namespace/name` of the host object.
        host: String,
        /// This instance's name.
        instance: String,
    },
    /// A syncer or plugin could not be registered.
    #[error("registering {name}: {reason}")]
    Registration {
        /// Name of the syncer.
        name: String,
        /// What went wrong.
        reason: String,
    },
    /// An API server could not be reached or its client not built.
    #[error("connecting to the {side} cluster: {reason}")]
    Connect {
        /// The cluster.
        side: Side,
        /// What went wrong, with the address.
        reason: String,
    },
    /// A configuration section (a plugin's, say) is invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The virtual cluster could not be identified, so vcsync cannot tell it from an earlier one.
    #[error("identifying the virtual cluster: {0}")]
    Identity(String),
    /// Leader election could not start or its lease manager stopped.
    #[error("leader election: {0}")]
    LeaderElection(String),
    /// The translators refused an input.
    #[error(transparent)]
    Translate(#[from] vcsync_translators::Error),
    /// A cached object did not decode (a bug): the reconcile that read it fails and is retried
    /// with backoff; the object is never taken for absent.
    #[error("cached {kind} {key} does not decode: {reason}")]
    CacheDecode {
        /// Kind of the object.
        kind: String,
        /// `namespace/name` of the object.
        key: String,
        /// What the decoder said.
        reason: String,
    },
}

impl Error {
    /// True for optimistic-concurrency conflicts (HTTP 409 other than AlreadyExists), which
    /// are expected under concurrent writers and are retried quickly without noise.
    pub fn is_conflict(&self) -> bool {
        matches!(self, Error::Api { source, .. }
            if matches!(source.as_ref(), kube::Error::Api(status) if status.code == 409 && status.reason != "AlreadyExists"))
    }

    /// The HTTP status of a failed API call; None for other errors.
    pub fn status(&self) -> Option<u16> {
        match self {
            Error::Api { source, .. } => status_code(source),
            _ => None,
        }
    }
}

/// Result with [`Error`] as the default error.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Builds an [`Error::Api`]; used with `map_err` on client calls.
pub fn api_error(
    side: Side,
    verb: &'static str,
    kind: &str,
    key: &str,
) -> impl FnOnce(kube::Error) -> Error + use<> {
    let (kind, key) = (kind.to_string(), key.to_string());
    move |source| Error::Api {
        side,
        verb,
        kind,
        key,
        source: Box::new(source),
    }
}

/// The HTTP status code of a failed API call, if the server answered.
pub fn status_code(err: &kube::Error) -> Option<u16> {
    match err {
        kube::Error::Api(status) => Some(status.code),
        _ => None,
    }
}

/// A configuration that could not be read or is invalid; `Display` is one line with the
/// location when the file has one.
#[derive(Debug, thiserror::Error)]
pub struct ConfigError {
    /// The file, or `<inline>`.
    pub file: String,
    /// 1-based line and column of the problem, when known.
    pub location: Option<(usize, usize)>,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.location {
            Some((line, column)) => write!(f, "{}:{line}:{column}: {}", self.file, self.message),
            None => write!(f, "{}: {}", self.file, self.message),
        }
    }
}
