//! Which representation a client asked for in its Accept header: the object itself, a kubectl
//! Table (`as=Table`), or metadata only (`as=PartialObjectMetadata[List]`, used by kube-rs
//! metadata watchers to keep caches small).

use std::sync::Arc;

use serde::ser::{SerializeMap, SerializeStruct};
use serde_json::{Value, json};

/// One page of a LIST. Items are shared with the store, so a large list costs no deep copies;
/// it is serialized straight from them.
#[derive(Debug)]
pub(crate) struct ListPage {
    pub kind: String,
    pub api_version: String,
    pub metadata: Value,
    pub items: Vec<Arc<Value>>,
    /// Whether the items keep their `kind` and `apiVersion` (stored objects carry them).
    pub item_types: bool,
}

impl serde::Serialize for ListPage {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let items: Vec<ListItem<'_>> = self
            .items
            .iter()
            .map(|object| ListItem(object, self.item_types))
            .collect();
        let mut list = serializer.serialize_struct("List", 4)?;
        list.serialize_field("kind", &self.kind)?;
        list.serialize_field("apiVersion", &self.api_version)?;
        list.serialize_field("metadata", &self.metadata)?;
        list.serialize_field("items", &items)?;
        list.end()
    }
}

/// An item of a list, with or without its `kind` and `apiVersion`.
struct ListItem<'a>(&'a Value, bool);

impl serde::Serialize for ListItem<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let (Value::Object(fields), false) = (self.0, self.1) else {
            return self.0.serialize(serializer);
        };
        let mut map = serializer.serialize_map(None)?;
        for (key, value) in fields {
            if key != "kind" && key != "apiVersion" {
                map.serialize_entry(key, value)?;
            }
        }
        map.end()
    }
}

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

    #[test]
    fn list_items_lose_their_types_unless_custom() {
        let object = json!({"kind": "ConfigMap", "apiVersion": "v1", "metadata": {"name": "x"}});
        let page = |item_types| ListPage {
            kind: "ConfigMapList".into(),
            api_version: "v1".into(),
            metadata: json!({"resourceVersion": "1"}),
            items: vec![Arc::new(object.clone())],
            item_types,
        };
        let builtin = serde_json::to_value(page(false)).unwrap();
        assert_eq!(builtin["items"], json!([{"metadata": {"name": "x"}}]));
        assert_eq!(
            (&builtin["kind"], &builtin["apiVersion"]),
            (&json!("ConfigMapList"), &json!("v1"))
        );
        let custom = serde_json::to_value(page(true)).unwrap();
        assert_eq!(custom["items"], json!([object]));
    }
}
