//! Which representation a client asked for in its Accept header: the object itself, a kubectl
//! Table (`as=Table`), or metadata only (`as=PartialObjectMetadata[List]`, used by kube-rs
//! metadata watchers to keep caches small).

use serde_json::{Value, json};

use crate::objects::ListPage;

/// The representation of objects in a response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Format {
    Object,
    Table,
    Metadata,
}

impl Format {
    /// Reads the first (preferred) media type of an Accept header.
    pub fn from_accept(accept: &str) -> Self {
        let first = accept.split(',').next().unwrap_or_default();
        if first.contains("as=Table") {
            Format::Table
        } else if first.contains("as=PartialObjectMetadata") {
            Format::Metadata
        } else {
            Format::Object
        }
    }
}

/// A `PartialObjectMetadata` for one object.
pub(crate) fn partial(object: &Value) -> Value {
    json!({ "kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": object["metadata"] })
}

/// A `PartialObjectMetadataList` for a list page.
pub(crate) fn partial_list(page: &ListPage) -> Value {
    let items: Vec<Value> = page.items.iter().map(|i| partial(i)).collect();
    json!({
        "kind": "PartialObjectMetadataList",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": page.metadata,
        "items": items,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn negotiates_from_the_first_media_type() {
        let table = "application/json;as=Table;v=v1;g=meta.k8s.io,application/json";
        assert_eq!(Format::from_accept(table), Format::Table);
        let meta = "application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1";
        assert_eq!(Format::from_accept(meta), Format::Metadata);
        assert_eq!(Format::from_accept("application/json"), Format::Object);
        let partial = partial(&json!({"metadata": {"name": "x"}, "data": {"a": "b"}}));
        assert_eq!(
            partial,
            json!({"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": {"name": "x"}})
        );
    }
}
