//! Walks a JSON request body against a schema, in document order, as kube-apiserver's strict
//! JSON decoder (sigs.k8s.io/json, `UnmarshalStrict`) walks it into a typed object: a key that
//! is no field of its struct is an `unknown field` (its value is not looked into), a field or map
//! key given twice is a `duplicate field` (both values are looked into), paths join keys with
//! `.` and indices as `[i]`, each error once, at most 100. Values the schema leaves open
//! (`x-kubernetes-preserve-unknown-fields`, int-or-string, objects without properties: types
//! with their own JSON decoding) are not looked into. Untyped mode (custom resources, which
//! kube-apiserver decodes into `map[string]any`) reports duplicates everywhere and no unknowns.

use std::collections::HashSet;
use std::fmt;

use serde::de::{DeserializeSeed, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::Value;

use crate::openapi::schema::{Additional, Schema, Schemas};

/// How a value is decoded.
#[derive(Clone, Copy)]
pub(crate) enum Node<'a> {
    /// A struct: known properties only.
    Struct(&'a Schema),
    /// A map with values of this kind.
    Map(Option<&'a Schema>),
    /// A list with items of this kind.
    List(Option<&'a Schema>),
    /// Decoded by the type itself: nothing looked into.
    Opaque,
    /// `map[string]any` / `[]any`: duplicates only, everywhere.
    Untyped,
}

/// Follows `$ref` and single `allOf` wrappers and says how `schema` decodes.
pub(crate) fn node<'a>(schemas: &'a Schemas, schema: Option<&'a Schema>) -> Node<'a> {
    let Some(mut schema) = schema else {
        return Node::Opaque;
    };
    for _ in 0..16 {
        if let Some(target) = schema.reference.as_deref().and_then(|r| schemas.resolve(r)) {
            schema = target;
        } else if schema.properties.is_empty()
            && let Some(first) = schema.all_of.first()
        {
            schema = first;
        } else {
            break;
        }
    }
    if schema.preserve_unknown_fields == Some(true)
        || schema.int_or_string == Some(true)
        || schema.format.as_deref() == Some("int-or-string")
    {
        return Node::Opaque;
    }
    if !schema.properties.is_empty() {
        return Node::Struct(schema);
    }
    match (&schema.additional_properties, schema.type_.as_deref()) {
        (Some(Additional::Schema(values)), _) => Node::Map(Some(values)),
        (Some(Additional::Allowed(true)), _) => Node::Map(None),
        (_, Some("array")) => Node::List(schema.item()),
        _ => Node::Opaque,
    }
}

/// `unknown field` or `duplicate field`.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub(crate) enum Problem {
    Unknown,
    Duplicate,
}

/// The strict errors found, in order, each once.
#[derive(Default, Debug)]
pub(crate) struct Found {
    pub list: Vec<(Problem, String)>,
    seen: HashSet<(Problem, String)>,
}

impl Found {
    pub fn add(&mut self, problem: Problem, path: String) {
        if self.list.len() >= 100 || self.seen.contains(&(problem, path.clone())) {
            return;
        }
        self.seen.insert((problem, path.clone()));
        self.list.push((problem, path));
    }

    /// The messages, as kube-apiserver words them.
    pub fn messages(&self) -> Vec<String> {
        self.list.iter().map(|(p, path)| message(*p, path)).collect()
    }
}

/// `unknown field "a.b"`: Go's `strconv.Quote` of the path.
pub(crate) fn message(problem: Problem, path: &str) -> String {
    let kind = match problem {
        Problem::Unknown => "unknown field",
        Problem::Duplicate => "duplicate field",
    };
    format!("{kind} {}", crate::admission::field::go_quote(path))
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

/// Walks raw JSON `body` from `node`; errors go to `found`. A body that is not JSON is left to
/// the decoder that reports it.
pub(crate) fn walk_bytes(schemas: &Schemas, node: Node, body: &[u8], found: &mut Found) {
    let mut de = serde_json::Deserializer::from_slice(body);
    let _ = Walk {
        schemas,
        node,
        path: String::new(),
        found,
    }
    .deserialize(&mut de);
}

struct Walk<'s, 'f> {
    schemas: &'s Schemas,
    node: Node<'s>,
    path: String,
    found: &'f mut Found,
}

impl<'de> DeserializeSeed<'de> for Walk<'_, '_> {
    type Value = ();
    fn deserialize<D: serde::Deserializer<'de>>(self, de: D) -> Result<(), D::Error> {
        if matches!(self.node, Node::Opaque) {
            return IgnoredAny::deserialize(de).map(|_| ());
        }
        de.deserialize_any(self)
    }
}

use serde::Deserialize as _;

impl<'de> Visitor<'de> for Walk<'_, '_> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_bool<E>(self, _: bool) -> Result<(), E> {
        Ok(())
    }
    fn visit_i64<E>(self, _: i64) -> Result<(), E> {
        Ok(())
    }
    fn visit_u64<E>(self, _: u64) -> Result<(), E> {
        Ok(())
    }
    fn visit_f64<E>(self, _: f64) -> Result<(), E> {
        Ok(())
    }
    fn visit_str<E>(self, _: &str) -> Result<(), E> {
        Ok(())
    }
    fn visit_unit<E>(self) -> Result<(), E> {
        Ok(())
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let item = match self.node {
            Node::List(item) => node(self.schemas, item),
            Node::Untyped => Node::Untyped,
            _ => Node::Opaque,
        };
        let mut index = 0;
        loop {
            let path = format!("{}[{index}]", self.path);
            let walk = Walk {
                schemas: self.schemas,
                node: item,
                path,
                found: &mut *self.found,
            };
            if seq.next_element_seed(walk)?.is_none() {
                return Ok(());
            }
            index += 1;
        }
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let mut seen = HashSet::new();
        while let Some(key) = map.next_key::<String>()? {
            let child = match self.node {
                Node::Struct(schema) => match schema.properties.get(&key) {
                    Some(property) => Some(node(self.schemas, Some(property))),
                    None => None,
                },
                Node::Map(values) => Some(node(self.schemas, values)),
                Node::Untyped => Some(Node::Untyped),
                Node::List(_) | Node::Opaque => Some(Node::Opaque),
            };
            let path = join(&self.path, &key);
            match child {
                None => {
                    self.found.add(Problem::Unknown, path);
                    map.next_value::<IgnoredAny>()?;
                }
                Some(child) => {
                    if !matches!(self.node, Node::List(_) | Node::Opaque) && !seen.insert(key) {
                        self.found.add(Problem::Duplicate, path.clone());
                    }
                    let walk = Walk {
                        schemas: self.schemas,
                        node: child,
                        path,
                        found: &mut *self.found,
                    };
                    map.next_value_seed(walk)?;
                }
            }
        }
        Ok(())
    }
}

/// Removes what a typed decoding drops (unknown fields) from `value`, recording them in `found`
/// in key order (as of a re-encoded object: Go's encoder sorts map keys).
pub(crate) fn prune_typed(schemas: &Schemas, at: Node, value: &mut Value, path: &str, found: &mut Found) {
    match (at, value) {
        (Node::Struct(schema), Value::Object(object)) => {
            let keys: Vec<String> = object.keys().cloned().collect();
            for key in keys {
                let child_path = join(path, &key);
                match schema.properties.get(&key) {
                    Some(property) => {
                        let child = node_of(schemas, property);
                        if let Some(v) = object.get_mut(&key) {
                            prune_typed(schemas, child, v, &child_path, found);
                        }
                    }
                    None => {
                        object.remove(&key);
                        found.add(Problem::Unknown, child_path);
                    }
                }
            }
        }
        (Node::Map(values), Value::Object(object)) => {
            let child = node(schemas, values);
            for (key, v) in object.iter_mut() {
                prune_typed(schemas, child, v, &join(path, key), found);
            }
        }
        (Node::List(item), Value::Array(items)) => {
            let child = node(schemas, item);
            for (i, v) in items.iter_mut().enumerate() {
                prune_typed(schemas, child, v, &format!("{path}[{i}]"), found);
            }
        }
        _ => {}
    }
}

fn node_of<'a>(schemas: &'a Schemas, schema: &'a Schema) -> Node<'a> {
    node(schemas, Some(schema))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn schemas() -> Schemas {
        Schemas::from_document(br##"{"components":{"schemas":{
            "Pod":{"type":"object","properties":{"metadata":{"allOf":[{"$ref":"#/components/schemas/Meta"}]},
                "spec":{"$ref":"#/components/schemas/Spec"}}},
            "Meta":{"type":"object","properties":{"name":{"type":"string"},
                "labels":{"type":"object","additionalProperties":{"type":"string"}}}},
            "Spec":{"type":"object","properties":{"containers":{"type":"array","items":{"$ref":"#/components/schemas/C"}}}},
            "C":{"type":"object","properties":{"name":{"type":"string"},"port":{"format":"int-or-string"}}}}}}"##)
        .unwrap()
    }

    #[test]
    fn unknown_and_duplicate_fields_in_document_order() {
        let schemas = schemas();
        let pod = node(&schemas, schemas.named.get("Pod"));
        let body =
            br#"{"spec":{"containers":[{"name":"a","imagePullPolcy":{"x":1},"name":"b","port":{"q":1}}]},
            "metadata":{"labels":{"a":"1","a":"2"},"bogus":1},"extra":true,"extra":false}"#;
        let mut found = Found::default();
        walk_bytes(&schemas, pod, body, &mut found);
        assert_eq!(
            found.messages(),
            [
                r#"unknown field "spec.containers[0].imagePullPolcy""#,
                r#"duplicate field "spec.containers[0].name""#,
                r#"duplicate field "metadata.labels.a""#,
                r#"unknown field "metadata.bogus""#,
                r#"unknown field "extra""#,
            ]
        );
    }

    #[test]
    fn untyped_reports_duplicates_only() {
        let schemas = schemas();
        let mut found = Found::default();
        walk_bytes(
            &schemas,
            Node::Untyped,
            br#"{"a":[{"b":1,"b":2}],"a":1}"#,
            &mut found,
        );
        assert_eq!(
            found.messages(),
            [r#"duplicate field "a[0].b""#, r#"duplicate field "a""#]
        );
    }

    #[test]
    fn prune_drops_unknown_fields_in_key_order() {
        let schemas = schemas();
        let pod = node(&schemas, schemas.named.get("Pod"));
        let mut value = serde_json::json!({"z": 1, "spec": {"containers": [{"name": "a", "y": 2}]}, "a": 0});
        let mut found = Found::default();
        prune_typed(&schemas, pod, &mut value, "", &mut found);
        assert_eq!(
            found.messages(),
            [
                r#"unknown field "a""#,
                r#"unknown field "spec.containers[0].y""#,
                r#"unknown field "z""#
            ]
        );
        assert_eq!(
            value,
            serde_json::json!({"spec": {"containers": [{"name": "a"}]}})
        );
    }
}
