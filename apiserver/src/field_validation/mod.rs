//! Server-side field validation, as kube-apiserver does it (k8s.io/apiserver
//! pkg/endpoints/handlers: create.go, update.go, patch.go, rest.go `fieldValidation`): the
//! `fieldValidation` query parameter (`Strict`, `Warn` when absent, `Ignore`) decides what
//! unknown and duplicate fields of a written object do: a 400 `strict decoding error: ...`, one
//! `Warning` response header each, or nothing. Unknown fields are dropped from what is stored in
//! every mode, as decoding into a typed object (or CRD pruning) drops them. Known fields come
//! from the OpenAPI schemas (the vendored documents; a CRD's structural schema), never from
//! lists per kind.
//!
//! Patches: a merge or strategic merge patch body is checked for duplicate fields, the patched
//! object for unknown fields; under Strict either is a 422 naming `patch` (the patched object
//! for merge and JSON patches, the patch as Go prints a map for strategic ones).
//! Not done: JSON patch operations' own fields, server-side apply (which kube-apiserver checks
//! against its type converter whatever the directive), YAML bodies' line-numbered messages
//! (YAML bodies are checked as their JSON), subresources other than `status`.

mod custom;
mod walk;

use std::sync::Arc;

use serde_json::Value;

use crate::openapi::schema::{Schema, Schemas};
use crate::patch::PatchKind;
use crate::resources::ResourceDef;
use crate::status::{ApiError, ApiResult};
use walk::{Found, Node, Problem};

/// The `fieldValidation` directive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Directive {
    Strict,
    Warn,
    Ignore,
}

impl Directive {
    /// From the raw query string; kube-apiserver's default (Warn) when absent.
    pub fn from_query(query: Option<&str>, options_kind: &str) -> ApiResult<Directive> {
        let given = form_urlencoded::parse(query.unwrap_or_default().as_bytes())
            .find(|(k, _)| k == "fieldValidation")
            .map(|(_, v)| v.into_owned());
        match given.as_deref() {
            None | Some("") | Some("Warn") => Ok(Directive::Warn),
            Some("Strict") => Ok(Directive::Strict),
            Some("Ignore") => Ok(Directive::Ignore),
            Some(other) => Err(ApiError::field_invalid(
                "meta.k8s.io",
                &format!("{options_kind}.meta.k8s.io"),
                "",
                "fieldValidation",
                "Unsupported value",
                &format!(
                    "{}: supported values: \"\", \"Ignore\", \"Strict\", \"Warn\"",
                    crate::admission::field::go_quote(other)
                ),
            )),
        }
    }
}

/// What a kind's objects are checked against.
enum Target {
    /// A built-in kind: the group version's schemas and the kind's.
    Typed { schemas: Arc<Schemas>, name: String },
    /// A custom resource: its version's structural schema (None: no schema, nothing pruned).
    Custom {
        schema: Option<Schema>,
        meta: Arc<Schemas>,
    },
}

/// Field validation of writes to one kind.
pub(crate) struct Checker {
    directive: Directive,
    target: Option<Target>,
    kind: String,
    version: String,
}

const OBJECT_META: &str = "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta";

impl Checker {
    /// The checker for writes of `def` (`crd`: its CustomResourceDefinition, for custom resources).
    pub fn new(def: &ResourceDef, crd: Option<&Value>, directive: Directive) -> Checker {
        let target = match crd {
            None => crate::openapi::vendored::v3(&def.group, &def.version).and_then(|doc| {
                let schemas = doc.schemas();
                let name = schemas
                    .kind_name(&def.group, &def.version, &def.kind)?
                    .to_string();
                Some(Target::Typed { schemas, name })
            }),
            Some(crd) => {
                let custom = crate::openapi::custom::CustomKind {
                    crd,
                    version: &def.version,
                };
                let meta = crate::openapi::vendored::v3("apiextensions.k8s.io", "v1").map(|d| d.schemas());
                let preserve_all = crd["spec"]["preserveUnknownFields"] == true;
                meta.map(|meta| Target::Custom {
                    schema: if preserve_all {
                        Some(Schema {
                            preserve_unknown_fields: Some(true),
                            ..Schema::default()
                        })
                    } else {
                        custom.schema().and_then(Schema::from_value)
                    },
                    meta,
                })
            }
        };
        Checker {
            directive,
            target,
            kind: def.kind.clone(),
            version: def.version.clone(),
        }
    }

    /// Finds the strict errors of a create or update body (`raw`: the JSON bytes, if it was
    /// JSON) and drops unknown fields from `value`. Returns the warnings to send.
    pub fn body(&self, raw: Option<&[u8]>, value: &mut Value) -> ApiResult<Vec<String>> {
        let errors = self.errors(raw, value);
        // rest.go transformDecodeError wraps the decoder's error.
        self.outcome(errors, |errors| {
            ApiError::bad_request(format!(
                "{kind} in version {version} cannot be handled as a {kind}: {}",
                strict_message(errors),
                kind = self.kind,
                version = crate::admission::field::go_quote(&self.version),
            ))
        })
    }

    fn errors(&self, raw: Option<&[u8]>, value: &mut Value) -> Vec<String> {
        match &self.target {
            None => Vec::new(),
            Some(Target::Typed { schemas, name }) => {
                let node = walk::node(schemas, schemas.named.get(name));
                let mut found = Found::default();
                if let Some(raw) = raw {
                    walk::walk_bytes(schemas, node, raw, &mut found);
                    walk::prune_typed(schemas, node, value, "", &mut Found::default());
                } else {
                    walk::prune_typed(schemas, node, value, "", &mut found);
                }
                found.messages()
            }
            Some(Target::Custom { schema, meta }) => {
                let mut found = Found::default();
                if let Some(raw) = raw {
                    walk::walk_bytes(meta, Node::Untyped, raw, &mut found);
                }
                if let Some(metadata) = value.get_mut("metadata").filter(|m| m.is_object()) {
                    let node = walk::node(meta, meta.named.get(OBJECT_META));
                    walk::prune_typed(meta, node, metadata, "metadata", &mut found);
                }
                let mut messages = found.messages();
                messages.extend(
                    custom::prune(value, schema.as_ref())
                        .iter()
                        .map(|path| walk::message(Problem::Unknown, path)),
                );
                messages
            }
        }
    }

    /// Checks a patch (`body`) and the object it gave (`patched`, pruned here).
    pub fn patched(&self, kind: PatchKind, body: &[u8], patched: &mut Value) -> ApiResult<Vec<String>> {
        if kind == PatchKind::Apply {
            // Unknown fields are dropped, as decoding into the type drops them.
            self.errors(None, patched);
            return Ok(Vec::new());
        }
        let mut errors = Vec::new();
        if matches!(kind, PatchKind::Merge | PatchKind::Strategic) && self.directive != Directive::Ignore {
            let mut found = Found::default();
            walk::walk_bytes(&Schemas::default(), Node::Untyped, body, &mut found);
            errors = found.messages();
        }
        let shown = match kind {
            PatchKind::Strategic => serde_json::from_slice::<Value>(body)
                .map(|patch| go_format(&patch))
                .unwrap_or_default(),
            _ => serde_json::to_string(patched).unwrap_or_default(),
        };
        let mut result = self.errors(None, patched);
        if kind == PatchKind::Strategic {
            result.sort();
        }
        errors.extend(result);
        self.outcome(errors, |errors| {
            ApiError::field_invalid(
                "",
                "",
                "",
                "patch",
                "Invalid value",
                &format!(
                    "{}: {}",
                    crate::admission::field::go_quote(&shown),
                    strict_message(errors)
                ),
            )
        })
    }

    fn outcome(
        &self,
        errors: Vec<String>,
        strict: impl FnOnce(&[String]) -> ApiError,
    ) -> ApiResult<Vec<String>> {
        match self.directive {
            _ if errors.is_empty() => Ok(Vec::new()),
            Directive::Strict => Err(strict(&errors)),
            Directive::Warn => Ok(errors),
            Directive::Ignore => Ok(Vec::new()),
        }
    }
}

/// The checker for a write of `def` with the request's query (`options_kind`: `CreateOptions`,
/// `UpdateOptions` or `PatchOptions`, for the error about a bad directive).
pub(crate) fn checker(
    objects: &crate::objects::Objects,
    def: &ResourceDef,
    query: Option<&str>,
    options_kind: &str,
) -> ApiResult<Checker> {
    let directive = Directive::from_query(query, options_kind)?;
    let crd = match &def.crd {
        None => None,
        Some(name) => {
            let crds = objects.registry.find(crate::crd::GROUP, "v1", crate::crd::PLURAL);
            crds.and_then(|crds| objects.get(&crds, "", name).ok())
        }
    };
    Ok(Checker::new(def, crd.as_deref(), directive))
}

/// Whether a request body of `content_type` is JSON (checked byte by byte for duplicates).
pub(crate) fn is_json(content_type: &str) -> bool {
    matches!(
        content_type.split(';').next().unwrap_or_default().trim(),
        "" | "application/json" | "*/*"
    )
}

/// apimachinery's `strictDecodingError` message.
fn strict_message(errors: &[String]) -> String {
    format!("strict decoding error: {}", errors.join(", "))
}

/// A JSON value as Go's `%+v` prints the `map[string]interface{}` it decodes into.
fn go_format(value: &Value) -> String {
    match value {
        Value::Null => "<nil>".into(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => match (n.as_i64(), n.as_f64()) {
            (Some(i), _) => i.to_string(),
            (None, Some(f)) if f.fract() == 0.0 && f.abs() < 1e21 => format!("{f:.0}"),
            (None, Some(f)) => f.to_string(),
            _ => n.to_string(),
        },
        Value::String(s) => s.clone(),
        Value::Array(items) => format!("[{}]", items.iter().map(go_format).collect::<Vec<_>>().join(" ")),
        Value::Object(map) => format!(
            "map[{}]",
            map.iter()
                .map(|(k, v)| format!("{k}:{}", go_format(v)))
                .collect::<Vec<_>>()
                .join(" ")
        ),
    }
}

/// Adds one `Warning: 299 - "<text>"` header per distinct warning, as k8s.io/apiserver's
/// warning recorder writes them.
pub(crate) fn add_warnings(response: &mut axum::response::Response, warnings: &[String]) {
    let mut sent: Vec<&String> = Vec::new();
    for warning in warnings {
        if sent.contains(&warning) {
            continue;
        }
        sent.push(warning);
        let escaped = warning.replace('\\', "\\\\").replace('"', "\\\"");
        if let Ok(value) = http::HeaderValue::from_str(&format!("299 - \"{escaped}\"")) {
            response.headers_mut().append(http::header::WARNING, value);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn config_maps(directive: Directive) -> Checker {
        let registry = crate::resources::Registry::builtin();
        let def = registry.find("", "v1", "configmaps").unwrap();
        Checker::new(&def, None, directive)
    }

    #[test]
    fn strict_rejects_unknown_top_level_field_of_a_config_map() {
        let raw = br#"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"a"},"data":{"k":"v"},"spec":{"foo":"bar"}}"#;
        let mut value: Value = serde_json::from_slice(raw).unwrap();
        let error = config_maps(Directive::Strict)
            .body(Some(raw), &mut value)
            .unwrap_err();
        assert_eq!(
            (error.code, error.message.as_str()),
            (
                400,
                r#"ConfigMap in version "v1" cannot be handled as a ConfigMap: strict decoding error: unknown field "spec""#
            )
        );
        let warnings = config_maps(Directive::Warn).body(Some(raw), &mut value).unwrap();
        assert_eq!(warnings, [r#"unknown field "spec""#]);
        assert!(value.get("spec").is_none() && value["data"]["k"] == "v");
    }

    #[test]
    fn pods_containers_are_walked() {
        let registry = crate::resources::Registry::builtin();
        let def = registry.find("", "v1", "pods").unwrap();
        let raw = br#"{"apiVersion":"v1","kind":"Pod","metadata":{"name":"p","labels":{"a":"b"}},
            "spec":{"containers":[{"name":"c","image":"i","imagePullPolcy":"Always",
            "resources":{"limits":{"cpu":"1"}},"ports":[{"containerPort":80}]}]}}"#;
        let mut value: Value = serde_json::from_slice(raw).unwrap();
        let warnings = Checker::new(&def, None, Directive::Warn)
            .body(Some(raw), &mut value)
            .unwrap();
        assert_eq!(warnings, [r#"unknown field "spec.containers[0].imagePullPolcy""#]);
    }

    #[test]
    fn go_prints_maps_sorted() {
        assert_eq!(
            go_format(&json!({"spec": {"foo": "bar"}, "data": {"n": 1, "f": 1.5, "l": [true, null]}})),
            "map[data:map[f:1.5 l:[true <nil>] n:1] spec:map[foo:bar]]"
        );
    }

    #[test]
    fn warning_headers_are_quoted() {
        let mut response = axum::response::Response::new(axum::body::Body::empty());
        add_warnings(
            &mut response,
            &[
                r#"unknown field "spec""#.to_string(),
                r#"unknown field "spec""#.to_string(),
            ],
        );
        let values: Vec<_> = response.headers().get_all("warning").iter().collect();
        assert_eq!(values, [r#"299 - "unknown field \"spec\"""#]);
    }
}
