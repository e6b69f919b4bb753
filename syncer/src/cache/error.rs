//! A cached object that does not decode: an error, never an absence.

/// A cached object that does not decode.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("cached {kind} {} does not decode: {reason}", display_key(.namespace.as_deref(), .name))]
pub struct DecodeError {
    /// Kind of the object.
    pub kind: String,
    /// Its namespace; None for cluster-scoped objects.
    pub namespace: Option<String>,
    /// Its name.
    pub name: String,
    /// What the decoder said.
    pub reason: String,
}

fn display_key(namespace: Option<&str>, name: &str) -> String {
    match namespace {
        Some(ns) => format!("{ns}/{name}"),
        None => name.to_string(),
    }
}

impl From<DecodeError> for crate::Error {
    fn from(err: DecodeError) -> Self {
        crate::Error::CacheDecode {
            key: display_key(err.namespace.as_deref(), &err.name),
            kind: err.kind,
            reason: err.reason,
        }
    }
}
