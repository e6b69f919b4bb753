//! OpenAPI of custom resources, built from their CRDs' structural schemas as kube-apiserver's
//! crdHandler publishes them (apiextensions-apiserver pkg/controller/openapi/builder): the kind's
//! schema is the version's `openAPIV3Schema` with `apiVersion`, `kind` and `metadata` (a
//! reference to ObjectMeta) added, at the root and in every `x-kubernetes-embedded-resource`,
//! tagged with `x-kubernetes-group-version-kind`; a list schema beside it; the
//! `io.k8s.apimachinery` schemas they reference; paths for the resource's operations.

use std::sync::{Arc, OnceLock};

use serde_json::{Map, Value, json};

const META: &str = "io.k8s.apimachinery.pkg.apis.meta.v1.";
const API_VERSION_DOC: &str = "APIVersion defines the versioned schema of this representation of an object. Servers should convert recognized schemas to the latest internal value, and may reject unrecognized values. More info: https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#resources";
const KIND_DOC: &str = "Kind is a string value representing the REST resource this object represents. Servers may infer this from the endpoint the client submits requests to. Cannot be updated. In CamelCase. More info: https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#types-kinds";
const METADATA_DOC: &str = "Standard object's metadata. More info: https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#metadata";
const LIST_METADATA_DOC: &str = "Standard list metadata. More info: https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#lists-and-simple-lists";

/// One served version of a CRD.
pub(crate) struct CustomKind<'a> {
    pub crd: &'a Value,
    pub version: &'a str,
}

impl CustomKind<'_> {
    fn names(&self) -> (&str, &str, &str, String) {
        let spec = &self.crd["spec"];
        let kind = spec["names"]["kind"].as_str().unwrap_or_default();
        let list_kind = spec["names"]["listKind"]
            .as_str()
            .map_or_else(|| format!("{kind}List"), str::to_string);
        (
            spec["group"].as_str().unwrap_or_default(),
            kind,
            spec["names"]["plural"].as_str().unwrap_or_default(),
            list_kind,
        )
    }

    /// The version's structural schema, if it has one.
    pub fn schema(&self) -> Option<&Value> {
        self.crd["spec"]["versions"]
            .as_array()?
            .iter()
            .find(|v| v["name"] == self.version)?
            .get("schema")?
            .get("openAPIV3Schema")
    }
}

/// `com.example.v1.Widget` for group `example.com`.
pub(crate) fn model_name(group: &str, version: &str, kind: &str) -> String {
    let reversed: Vec<&str> = group.split('.').rev().collect();
    format!("{}.{version}.{kind}", reversed.join("."))
}

/// The `io.k8s.apimachinery` schemas (ObjectMeta, ListMeta, Status, ...) of the vendored
/// apiextensions document, parsed once.
fn meta_schemas() -> &'static Map<String, Value> {
    static META_SCHEMAS: OnceLock<Map<String, Value>> = OnceLock::new();
    META_SCHEMAS.get_or_init(|| {
        let doc = super::vendored::v3("apiextensions.k8s.io", "v1").expect("vendored");
        let mut value: Value = serde_json::from_slice(&doc.bytes()).unwrap_or_default();
        let Some(schemas) = value["components"]["schemas"].as_object_mut() else {
            return Map::new();
        };
        std::mem::take(schemas)
            .into_iter()
            .filter(|(name, _)| name.starts_with("io.k8s.apimachinery."))
            .collect()
    })
}

fn with_type_meta(schema: &mut Value, prefix: &str) {
    let Some(object) = schema.as_object_mut() else {
        return;
    };
    let properties = object.entry("properties").or_insert_with(|| json!({}));
    properties["apiVersion"] = json!({"description": API_VERSION_DOC, "type": "string"});
    properties["kind"] = json!({"description": KIND_DOC, "type": "string"});
    properties["metadata"] =
        json!({"$ref": format!("{prefix}{META}ObjectMeta"), "description": METADATA_DOC});
}

/// Adds TypeMeta and ObjectMeta to every embedded resource below `schema`.
fn embed(schema: &mut Value, prefix: &str) {
    if schema["x-kubernetes-embedded-resource"] == true {
        with_type_meta(schema, prefix);
    }
    for key in ["properties", "patternProperties"] {
        if let Some(children) = schema.get_mut(key).and_then(Value::as_object_mut) {
            for (name, child) in children.iter_mut() {
                if !(name == "metadata" && child.get("$ref").is_some()) {
                    embed(child, prefix);
                }
            }
        }
    }
    for key in ["items", "additionalProperties"] {
        if let Some(child) = schema.get_mut(key).filter(|c| c.is_object()) {
            embed(child, prefix);
        }
    }
}

/// The kind's schema and its list's, named, with references in `prefix` style
/// (`#/components/schemas/` or `#/definitions/`).
pub(crate) fn kind_schemas(custom: &CustomKind, prefix: &str) -> [(String, Value); 2] {
    let (group, kind, _, list_kind) = custom.names();
    let gvk = |kind: &str| json!([{"group": group, "version": custom.version, "kind": kind}]);
    let name = model_name(group, custom.version, kind);
    let mut schema = match custom.schema() {
        Some(structural) => {
            let mut schema = structural.clone();
            embed(&mut schema, prefix);
            with_type_meta(&mut schema, prefix);
            schema
        }
        None => json!({"type": "object"}),
    };
    schema["x-kubernetes-group-version-kind"] = gvk(kind);
    let list = json!({
        "description": format!("{list_kind} is a list of {kind}"),
        "type": "object",
        "required": ["items"],
        "properties": {
            "apiVersion": {"description": API_VERSION_DOC, "type": "string"},
            "kind": {"description": KIND_DOC, "type": "string"},
            "items": {"type": "array", "items": {"$ref": format!("{prefix}{name}")},
                "description": format!("List of {}. More info: https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md", custom.names().2)},
            "metadata": {"$ref": format!("{prefix}{META}ListMeta"), "description": LIST_METADATA_DOC},
        },
        "x-kubernetes-group-version-kind": gvk(&list_kind),
    });
    [(name.clone(), schema), (format!("{name}List"), list)]
}

fn operation(
    verb: &str,
    action: &str,
    gvk: &Value,
    parameters: &[&str],
    body: Option<&str>,
    response: &str,
) -> Value {
    let params: Vec<Value> = parameters
        .iter()
        .map(|p| {
            let type_ = if matches!(*p, "watch" | "allowWatchBookmarks" | "sendInitialEvents") {
                "boolean"
            } else if matches!(*p, "limit" | "timeoutSeconds" | "gracePeriodSeconds") {
                "integer"
            } else {
                "string"
            };
            json!({"in": "query", "name": p, "schema": {"type": type_, "uniqueItems": true}})
        })
        .collect();
    let mut op = json!({
        "operationId": format!("{verb}{}", gvk["kind"].as_str().unwrap_or_default()),
        "x-kubernetes-action": action,
        "x-kubernetes-group-version-kind": gvk,
        "parameters": params,
        "responses": {"200": {"description": "OK", "content": {"application/json": {"schema": {"$ref": response}}}},
            "401": {"description": "Unauthorized"}},
    });
    if let Some(content) = body {
        let schema = if content == "patch" {
            json!({"$ref": format!("#/components/schemas/{META}Patch")})
        } else {
            json!({"$ref": content})
        };
        let types = if content == "patch" {
            vec![
                "application/apply-patch+yaml",
                "application/json-patch+json",
                "application/merge-patch+json",
            ]
        } else {
            vec!["*/*"]
        };
        let content: Map<String, Value> = types
            .into_iter()
            .map(|t| (t.to_string(), json!({"schema": schema})))
            .collect();
        op["requestBody"] = json!({"content": content, "required": true});
    }
    op
}

/// The paths of one custom resource type.
fn paths(custom: &CustomKind, namespaced: bool, has_status: bool, out: &mut Map<String, Value>) {
    let (group, kind, plural, _) = custom.names();
    let name = model_name(group, custom.version, kind);
    let scope = if namespaced { "namespaces/{namespace}/" } else { "" };
    let base = format!("/apis/{group}/{}/{scope}{plural}", custom.version);
    let gvk = json!({"group": group, "version": custom.version, "kind": kind});
    let object = format!("#/components/schemas/{name}");
    let list = format!("#/components/schemas/{name}List");
    let status = format!("#/components/schemas/{META}Status");
    let write = ["dryRun", "fieldManager", "fieldValidation"];
    let lists = [
        "allowWatchBookmarks",
        "continue",
        "fieldSelector",
        "labelSelector",
        "limit",
        "resourceVersion",
        "resourceVersionMatch",
        "sendInitialEvents",
        "timeoutSeconds",
        "watch",
    ];
    let verb_kind = |verb: &str| format!("{verb}{}", if namespaced { "Namespaced" } else { "" });
    out.insert(base.clone(), json!({
        "get": operation(&verb_kind("list"), "list", &gvk, &lists, None, &list),
        "post": operation(&verb_kind("create"), "post", &gvk, &write, Some(&object), &object),
        "delete": operation(&format!("{}Collection", verb_kind("delete")), "deletecollection", &gvk, &["gracePeriodSeconds", "propagationPolicy"], None, &status),
    }));
    out.insert(format!("{base}/{{name}}"), json!({
        "get": operation(&verb_kind("read"), "get", &gvk, &["resourceVersion"], None, &object),
        "put": operation(&verb_kind("replace"), "put", &gvk, &write, Some(&object), &object),
        "patch": operation(&verb_kind("patch"), "patch", &gvk, &["dryRun", "fieldManager", "fieldValidation", "force"], Some("patch"), &object),
        "delete": operation(&verb_kind("delete"), "delete", &gvk, &["dryRun", "gracePeriodSeconds", "propagationPolicy"], None, &status),
    }));
    if has_status {
        out.insert(format!("{base}/{{name}}/status"), json!({
            "get": operation(&format!("{}Status", verb_kind("read")), "get", &gvk, &["resourceVersion"], None, &object),
            "put": operation(&format!("{}Status", verb_kind("replace")), "put", &gvk, &write, Some(&object), &object),
            "patch": operation(&format!("{}Status", verb_kind("patch")), "patch", &gvk, &["dryRun", "fieldManager", "fieldValidation", "force"], Some("patch"), &object),
        }));
    }
}

/// The v3 document of a group version served by `crds` (each serving `version`).
pub(crate) fn v3_document(crds: &[Arc<Value>], version: &str) -> Value {
    let mut schemas = meta_schemas().clone();
    let mut all_paths = Map::new();
    for crd in crds {
        let custom = CustomKind { crd, version };
        for (name, schema) in kind_schemas(&custom, "#/components/schemas/") {
            schemas.insert(name, schema);
        }
        let namespaced = crd["spec"]["scope"] == "Namespaced";
        let has_status = crd["spec"]["versions"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|v| v["name"] == version && v["subresources"]["status"].is_object());
        paths(&custom, namespaced, has_status, &mut all_paths);
    }
    json!({
        "openapi": "3.0.0",
        "info": {"title": "Kubernetes CRD Swagger", "version": "v0.1.0"},
        "paths": all_paths,
        "components": {"schemas": schemas},
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn widget_schema_gets_type_meta_and_gvk() {
        let crd = json!({"spec": {"group": "example.com", "scope": "Namespaced",
            "names": {"kind": "Widget", "plural": "widgets"},
            "versions": [{"name": "v1", "served": true, "schema": {"openAPIV3Schema": {"type": "object",
                "properties": {"spec": {"type": "object", "properties": {"size": {"type": "integer"}}}}}}}]}});
        let doc = v3_document(&[Arc::new(crd)], "v1");
        let widget = &doc["components"]["schemas"]["com.example.v1.Widget"];
        assert_eq!(
            widget["properties"]["metadata"]["$ref"],
            "#/components/schemas/io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"
        );
        assert_eq!(widget["x-kubernetes-group-version-kind"][0]["kind"], "Widget");
        assert!(doc["components"]["schemas"]["io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"].is_object());
        assert!(
            doc["paths"]["/apis/example.com/v1/namespaces/{namespace}/widgets/{name}"]["patch"].is_object()
        );
    }
}
