//! The structural part of OpenAPI schemas: what field validation walks (properties,
//! additionalProperties, items, `$ref`/`allOf`, the `x-kubernetes-*` markers). Descriptions and
//! everything else are skipped while parsing, so the model of a whole group version is small.

use std::collections::{BTreeMap, HashMap};

use serde::Deserialize;
use serde_json::Value;

/// One schema node.
#[derive(Debug, Default, Deserialize)]
pub(crate) struct Schema {
    #[serde(default)]
    pub properties: BTreeMap<String, Schema>,
    #[serde(rename = "additionalProperties", default)]
    pub additional_properties: Option<Additional>,
    #[serde(default)]
    pub items: Option<Box<Items>>,
    #[serde(rename = "$ref", default)]
    pub reference: Option<String>,
    #[serde(rename = "allOf", default)]
    pub all_of: Vec<Schema>,
    #[serde(rename = "type", default)]
    pub type_: Option<String>,
    #[serde(default)]
    pub format: Option<String>,
    #[serde(rename = "x-kubernetes-preserve-unknown-fields", default)]
    pub preserve_unknown_fields: Option<bool>,
    #[serde(rename = "x-kubernetes-int-or-string", default)]
    pub int_or_string: Option<bool>,
    #[serde(rename = "x-kubernetes-embedded-resource", default)]
    pub embedded_resource: Option<bool>,
    #[serde(rename = "x-kubernetes-group-version-kind", default)]
    pub gvk: Vec<Gvk>,
}

/// `additionalProperties`: a boolean or a schema.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub(crate) enum Additional {
    Allowed(bool),
    Schema(Box<Schema>),
}

/// `items`: one schema (an array of schemas is not structural; kept to parse leniently).
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub(crate) enum Items {
    One(Schema),
    Many(Vec<Schema>),
}

/// One entry of `x-kubernetes-group-version-kind`.
#[derive(Debug, Deserialize, PartialEq, Eq)]
pub(crate) struct Gvk {
    #[serde(default)]
    pub group: String,
    #[serde(default)]
    pub version: String,
    #[serde(default)]
    pub kind: String,
}

impl Schema {
    /// The schema of `items` (the first one of a list of schemas).
    pub fn item(&self) -> Option<&Schema> {
        match self.items.as_deref()? {
            Items::One(schema) => Some(schema),
            Items::Many(list) => list.first(),
        }
    }

    /// Whether a CRD structural schema value parses into this model.
    pub fn from_value(value: &Value) -> Option<Schema> {
        Schema::deserialize(value).ok()
    }
}

/// The named schemas of one document (`components.schemas`).
#[derive(Debug, Default)]
pub(crate) struct Schemas {
    pub named: HashMap<String, Schema>,
}

#[derive(Deserialize)]
struct DocumentShape {
    #[serde(default)]
    components: Components,
}

#[derive(Deserialize, Default)]
struct Components {
    #[serde(default)]
    schemas: HashMap<String, Schema>,
}

impl Schemas {
    /// The schemas of a v3 document.
    pub fn from_document(bytes: &[u8]) -> serde_json::Result<Schemas> {
        let doc: DocumentShape = serde_json::from_slice(bytes)?;
        Ok(Schemas {
            named: doc.components.schemas,
        })
    }

    /// The schema `$ref` names (`#/components/schemas/<name>` or `#/definitions/<name>`).
    pub fn resolve(&self, reference: &str) -> Option<&Schema> {
        let name = reference
            .strip_prefix("#/components/schemas/")
            .or_else(|| reference.strip_prefix("#/definitions/"))?;
        self.named.get(name)
    }

    /// The name of the schema of objects of `group/version` `kind`.
    pub fn kind_name(&self, group: &str, version: &str, kind: &str) -> Option<&str> {
        let wanted = Gvk {
            group: group.to_string(),
            version: version.to_string(),
            kind: kind.to_string(),
        };
        self.named
            .iter()
            .find(|(_, s)| s.gvk.contains(&wanted))
            .map(|(name, _)| name.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_structure_only() {
        let doc = br##"{"components":{"schemas":{
            "a.ConfigMap":{"description":"x","type":"object",
                "properties":{"data":{"type":"object","additionalProperties":{"type":"string"}},
                    "metadata":{"allOf":[{"$ref":"#/components/schemas/a.Meta"}],"default":{}}},
                "x-kubernetes-group-version-kind":[{"group":"","version":"v1","kind":"ConfigMap"}]},
            "a.Meta":{"type":"object","properties":{"name":{"type":"string"}}}}}}"##;
        let schemas = Schemas::from_document(doc).unwrap();
        let cm = &schemas.named[schemas.kind_name("", "v1", "ConfigMap").unwrap()];
        assert!(matches!(
            cm.properties["data"].additional_properties,
            Some(Additional::Schema(_))
        ));
        let meta = &cm.properties["metadata"].all_of[0];
        assert!(schemas.resolve(meta.reference.as_deref().unwrap()).is_some());
    }
}
