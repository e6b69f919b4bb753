//! Unknown fields of custom resources, as kube-apiserver's crdHandler finds them
//! (apiextensions-apiserver pkg/apiserver/customresource_handler.go `unstructuredSchemaCoercer`):
//! `metadata` decoded strictly into ObjectMeta (its unknown fields first, in key order), then
//! structural pruning (pkg/apiserver/schema/pruning/algorithm.go) against the version's schema:
//! every pruned path, sorted. `apiVersion`, `kind` and `metadata` of the root and of embedded
//! resources are never pruned; `x-kubernetes-preserve-unknown-fields` keeps unknown fields but
//! still prunes inside the known ones.

use serde_json::Value;

use crate::openapi::schema::{Additional, Schema};

const META_FIELDS: [&str; 3] = ["apiVersion", "kind", "metadata"];

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

/// Prunes `object` against the version's structural schema; returns the pruned paths, sorted.
pub(crate) fn prune(object: &mut Value, schema: Option<&Schema>) -> Vec<String> {
    let mut out = Vec::new();
    walk(object, schema, "", true, &mut out);
    out.sort();
    out
}

fn child_of<'a>(schema: &'a Schema, key: &str) -> Option<Option<&'a Schema>> {
    if let Some(property) = schema.properties.get(key) {
        return Some(Some(property));
    }
    match &schema.additional_properties {
        Some(Additional::Schema(values)) => Some(Some(values)),
        Some(Additional::Allowed(_)) => Some(None),
        None => None,
    }
}

fn walk(x: &mut Value, schema: Option<&Schema>, path: &str, embedded_root: bool, out: &mut Vec<String>) {
    let preserve = schema.is_some_and(|s| s.preserve_unknown_fields == Some(true));
    let embedded = embedded_root || schema.is_some_and(|s| s.embedded_resource == Some(true));
    match x {
        Value::Object(object) => {
            let Some(schema) = schema else {
                if !preserve {
                    out.extend(object.keys().map(|k| join(path, k)));
                    object.clear();
                }
                return;
            };
            let keys: Vec<String> = object.keys().cloned().collect();
            for key in keys {
                if embedded && META_FIELDS.contains(&key.as_str()) {
                    continue;
                }
                match child_of(schema, &key) {
                    Some(child) => {
                        if let Some(v) = object.get_mut(&key) {
                            walk(v, child, &join(path, &key), false, out);
                        }
                    }
                    None if preserve => {}
                    None => {
                        out.push(join(path, &key));
                        object.remove(&key);
                    }
                }
            }
        }
        Value::Array(items) => {
            let item = schema.and_then(Schema::item);
            for (i, v) in items.iter_mut().enumerate() {
                walk(v, item, &format!("{path}[{i}]"), false, out);
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn prunes_unknown_and_keeps_preserved() {
        let schema = Schema::from_value(&json!({"type": "object", "properties": {
            "spec": {"type": "object", "properties": {"size": {"type": "integer"},
                "free": {"type": "object", "x-kubernetes-preserve-unknown-fields": true,
                    "properties": {"inner": {"type": "object", "properties": {}}}},
                "list": {"type": "array", "items": {"type": "object", "properties": {"a": {"type": "string"}}}}}}}}))
        .unwrap();
        let mut object = json!({"apiVersion": "x/v1", "kind": "W", "metadata": {"name": "a"},
            "spec": {"size": 1, "zeta": 1, "free": {"any": 1, "inner": {"drop": 1}},
                "list": [{"a": "x", "b": 1}]}, "alpha": {}});
        let pruned = prune(&mut object, Some(&schema));
        assert_eq!(
            pruned,
            ["alpha", "spec.free.inner.drop", "spec.list[0].b", "spec.zeta"]
        );
        assert_eq!(object["spec"]["free"]["any"], 1);
        assert_eq!(object["metadata"]["name"], "a");
    }
}
