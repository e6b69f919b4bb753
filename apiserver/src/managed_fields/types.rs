//! The types structured-merge-diff walks, read from OpenAPI v3 schemas as kube-openapi's
//! schemaconv converts them (pkg/schemaconv/openapi.go, smd.go): `$ref` (or a single `allOf`
//! reference) names a type, `x-kubernetes-map-type` on the reference or the type makes a map or
//! struct atomic, lists are associative by `x-kubernetes-list-type: map` and its keys (`set`:
//! by value), else by `x-kubernetes-patch-strategy: merge` with its `patch-merge-key`, else
//! atomic; objects without properties (or preserving unknown fields) hold "deduced" values;
//! types without `type` (int-or-string, ...) are deduced from the value; Quantity is a scalar and
//! RawExtension atomic. The vendored documents are parsed once per group version, without
//! descriptions (the structural model in crate::openapi::schema drops the extensions needed here).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use serde_json::{Map, Value};

use crate::resources::ResourceDef;

/// The named schemas of one document and the root type.
pub(crate) struct Types {
    named: Arc<Map<String, Value>>,
    root: Root,
}

enum Root {
    Named(String),
    Owned(Value),
}

/// How a position decodes.
#[derive(Clone, Copy)]
pub(crate) enum Ty<'a> {
    /// A schema (resolved lazily), with the map-type override of the reference to it.
    Schema(&'a Value, Option<bool>),
    /// `__untyped_deduced_`: scalars, atomic lists, granular maps of deduced values.
    Deduced,
    /// `__untyped_atomic_`.
    Atomic,
}

/// A list's relationship.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum ListKind<'a> {
    Atomic,
    Set,
    Map(Vec<&'a str>),
}

/// What a value of a type is, given the value.
pub(crate) enum Shape<'a> {
    /// A leaf: scalars, atomic lists and maps.
    Leaf,
    /// A struct or map: declared fields, the type of other keys (None: none allowed).
    Map {
        fields: Option<&'a Map<String, Value>>,
        elements: Option<Ty<'a>>,
    },
    List(ListKind<'a>, Ty<'a>),
}

const QUANTITY: &str = "io.k8s.apimachinery.pkg.api.resource.Quantity";
const RAW_EXTENSION: &str = "io.k8s.apimachinery.pkg.runtime.RawExtension";

fn strip_descriptions(value: &mut Value) {
    match value {
        Value::Object(map) => {
            map.remove("description");
            map.values_mut().for_each(strip_descriptions);
        }
        Value::Array(items) => items.iter_mut().for_each(strip_descriptions),
        _ => {}
    }
}

type Schemas = Arc<Map<String, Value>>;

fn document_schemas(group: &str, version: &str) -> Option<Arc<Map<String, Value>>> {
    static CACHE: OnceLock<Mutex<HashMap<String, Schemas>>> = OnceLock::new();
    let key = format!("{group}/{version}");
    let cache = CACHE.get_or_init(Default::default);
    if let Some(found) = cache.lock().unwrap_or_else(|p| p.into_inner()).get(&key) {
        return Some(found.clone());
    }
    let doc = crate::openapi::vendored::v3(group, version)?;
    let mut value: Value = serde_json::from_slice(&doc.bytes()).ok()?;
    let mut schemas = match value["components"]["schemas"].take() {
        Value::Object(map) => map,
        _ => return None,
    };
    schemas.values_mut().for_each(strip_descriptions);
    let schemas = Arc::new(schemas);
    cache
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .insert(key, schemas.clone());
    Some(schemas)
}

impl Types {
    /// The types of a built-in kind; None when its group version is not vendored.
    pub fn builtin(def: &ResourceDef) -> Option<Types> {
        static ROOTS: OnceLock<Mutex<HashMap<String, String>>> = OnceLock::new();
        let named = document_schemas(&def.group, &def.version)?;
        let key = format!("{}/{}/{}", def.group, def.version, def.kind);
        let roots = ROOTS.get_or_init(Default::default);
        let known = roots.lock().unwrap_or_else(|p| p.into_inner()).get(&key).cloned();
        let root = match known {
            Some(root) => root,
            None => {
                let root = named
                    .iter()
                    .find(|(_, s)| {
                        s["x-kubernetes-group-version-kind"]
                            .as_array()
                            .is_some_and(|gvks| {
                                gvks.iter().any(|g| {
                                    g["group"].as_str().unwrap_or_default() == def.group
                                        && g["version"] == def.version.as_str()
                                        && g["kind"] == def.kind.as_str()
                                })
                            })
                    })?
                    .0
                    .clone();
                roots
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(key, root.clone());
                root
            }
        };
        Some(Types {
            named,
            root: Root::Named(root),
        })
    }

    /// The types of a custom resource: its version's structural schema (None: everything
    /// deduced), with ObjectMeta for `metadata`.
    pub fn custom(schema: Option<&Value>) -> Types {
        static META: OnceLock<Arc<Map<String, Value>>> = OnceLock::new();
        let named = META
            .get_or_init(|| {
                Arc::new(
                    document_schemas("apiextensions.k8s.io", "v1")
                        .map(|s| {
                            s.iter()
                                .filter(|(k, _)| k.starts_with("io.k8s.apimachinery."))
                                .map(|(k, v)| (k.clone(), v.clone()))
                                .collect::<Map<String, Value>>()
                        })
                        .unwrap_or_default(),
                )
            })
            .clone();
        let mut root = schema.cloned().unwrap_or_else(
            || serde_json::json!({"type": "object", "x-kubernetes-preserve-unknown-fields": true}),
        );
        strip_descriptions(&mut root);
        if let Some(properties) = root
            .as_object_mut()
            .map(|o| o.entry("properties").or_insert_with(|| Value::Object(Map::new())))
        {
            properties["metadata"] = serde_json::json!(
                {"$ref": "#/components/schemas/io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"});
            properties["apiVersion"] = serde_json::json!({"type": "string"});
            properties["kind"] = serde_json::json!({"type": "string"});
        }
        Types {
            named,
            root: Root::Owned(root),
        }
    }

    pub fn root(&self) -> Ty<'_> {
        match &self.root {
            Root::Named(name) => match self.named.get(name) {
                Some(schema) => Ty::Schema(schema, None),
                None => Ty::Deduced,
            },
            Root::Owned(schema) => Ty::Schema(schema, None),
        }
    }

    fn resolve<'a>(
        &'a self,
        mut schema: &'a Value,
        mut atomic: Option<bool>,
    ) -> (Option<&'a str>, &'a Value, Option<bool>) {
        let mut name = None;
        for _ in 0..16 {
            let reference = schema["$ref"]
                .as_str()
                .or_else(|| match schema["allOf"].as_array() {
                    Some(all) if all.len() == 1 => all[0]["$ref"].as_str(),
                    _ => None,
                });
            let Some(reference) = reference else { break };
            if atomic.is_none() {
                atomic = map_type(schema);
            }
            let target = reference.rsplit('/').next().unwrap_or_default();
            match self.named.get(target) {
                Some(found) => {
                    name = Some(target);
                    schema = found;
                }
                None => break,
            }
        }
        (name, schema, atomic)
    }

    /// The schema a reference names.
    pub fn resolved<'a>(&'a self, schema: &'a Value) -> &'a Value {
        self.resolve(schema, None).1
    }

    /// The shape of `value` at `ty`.
    pub fn shape<'a>(&'a self, ty: Ty<'a>, value: &Value) -> Shape<'a> {
        let (schema, atomic) = match ty {
            Ty::Atomic => return Shape::Leaf,
            Ty::Deduced => {
                return match value {
                    Value::Object(_) => Shape::Map {
                        fields: None,
                        elements: Some(Ty::Deduced),
                    },
                    _ => Shape::Leaf,
                };
            }
            Ty::Schema(schema, atomic) => (schema, atomic),
        };
        let (name, schema, override_atomic) = self.resolve(schema, atomic);
        if matches!(name, Some(QUANTITY | RAW_EXTENSION)) {
            return Shape::Leaf;
        }
        let typ = schema["type"].as_str().unwrap_or_default();
        let object = typ == "object" || (typ.is_empty() && value.is_object());
        let array = typ == "array" || (typ.is_empty() && value.is_array());
        if object && value.is_object() {
            let atomic = override_atomic.or_else(|| map_type(schema)).unwrap_or(false);
            if atomic {
                return Shape::Leaf;
            }
            let fields = schema["properties"].as_object().filter(|p| !p.is_empty());
            let preserve = schema["x-kubernetes-preserve-unknown-fields"] == true;
            let elements = match &schema["additionalProperties"] {
                Value::Object(additional) if !additional.is_empty() || fields.is_none() => {
                    Some(Ty::Schema(&schema["additionalProperties"], None))
                }
                Value::Bool(true) => Some(Ty::Deduced),
                Value::Null if preserve || fields.is_none() => Some(Ty::Deduced),
                Value::Object(_) => Some(Ty::Deduced),
                _ => None,
            };
            return Shape::Map { fields, elements };
        }
        if array && value.is_array() {
            let item = match &schema["items"] {
                Value::Object(_) => Ty::Schema(&schema["items"], None),
                _ => Ty::Atomic,
            };
            return match list_kind(schema) {
                ListKind::Atomic => Shape::Leaf,
                kind => Shape::List(kind, item),
            };
        }
        Shape::Leaf
    }

    /// The type of the value of field or key `name` in a map shape.
    pub fn field<'a>(
        fields: Option<&'a Map<String, Value>>,
        elements: Option<Ty<'a>>,
        name: &str,
    ) -> (Ty<'a>, bool) {
        match fields.and_then(|f| f.get(name)) {
            Some(schema) => (Ty::Schema(schema, None), true),
            None => (elements.unwrap_or(Ty::Deduced), false),
        }
    }

    /// The default of key field `name` of list items of type `item` (SMD uses it for absent keys).
    pub fn key_default<'a>(&'a self, item: Ty<'a>, name: &str) -> Option<&'a Value> {
        let Ty::Schema(schema, atomic) = item else {
            return None;
        };
        let (_, schema, _) = self.resolve(schema, atomic);
        schema["properties"][name].get("default")
    }
}

fn map_type(schema: &Value) -> Option<bool> {
    match schema["x-kubernetes-map-type"].as_str()? {
        "atomic" => Some(true),
        _ => Some(false),
    }
}

fn list_kind(schema: &Value) -> ListKind<'_> {
    match schema["x-kubernetes-list-type"].as_str() {
        Some("set") => return ListKind::Set,
        Some("map") => {
            let keys = schema["x-kubernetes-list-map-keys"]
                .as_array()
                .map(|k| k.iter().filter_map(Value::as_str).collect())
                .unwrap_or_default();
            return ListKind::Map(keys);
        }
        Some(_) => return ListKind::Atomic,
        None => {}
    }
    match schema["x-kubernetes-patch-strategy"].as_str() {
        Some("merge" | "merge,retainKeys") => match schema["x-kubernetes-patch-merge-key"].as_str() {
            Some(key) => ListKind::Map(vec![key]),
            None => ListKind::Set,
        },
        _ => ListKind::Atomic,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn pod_containers_are_a_map_list_and_tolerations_atomic() {
        let registry = crate::resources::Registry::builtin();
        let pods = registry.find("", "v1", "pods").unwrap();
        let types = Types::builtin(&pods).unwrap();
        let pod = json!({"spec": {"containers": [], "tolerations": []}});
        let Shape::Map { fields, elements } = types.shape(types.root(), &pod) else {
            panic!("a pod is a struct")
        };
        let (spec, declared) = Types::field(fields, elements, "spec");
        assert!(declared);
        let Shape::Map { fields, elements } = types.shape(spec, &pod["spec"]) else {
            panic!("spec is a struct")
        };
        let (containers, _) = Types::field(fields, elements, "containers");
        let Shape::List(kind, item) = types.shape(containers, &json!([])) else {
            panic!("containers are a list")
        };
        assert_eq!(kind, ListKind::Map(vec!["name"]));
        assert_eq!(types.key_default(item, "name"), Some(&json!("")));
        let (tolerations, _) = Types::field(fields, elements, "tolerations");
        assert!(matches!(types.shape(tolerations, &json!([])), Shape::Leaf));
    }
}
