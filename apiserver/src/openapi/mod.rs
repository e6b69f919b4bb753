//! OpenAPI as kube-apiserver serves it (k8s.io/kube-openapi pkg/handler3 and pkg/handler): the
//! official v3 documents of the built-in group versions and the official v2 document, vendored
//! in `apiserver/openapi/` and decompressed on first use; documents of custom resources built
//! from their CRDs ([`custom`]). `/openapi/v3` lists every group version with the SHA-512 of its
//! document as `hash`; a group version asked for with another hash is redirected (301) to the
//! current one, with the right one it is served immutable. Only JSON is offered: a client that
//! accepts nothing but protobuf gets 406 Not Acceptable, as kube-openapi answers for a format it
//! cannot produce.

pub(crate) mod custom;
pub(crate) mod schema;
pub(crate) mod vendored;

use std::hash::{DefaultHasher, Hasher as _};
use std::sync::Arc;

use axum::response::{IntoResponse, Response};
use http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use serde_json::{Value, json};

use crate::objects::Objects;

/// `api/v1` or `apis/{group}/{version}`.
pub(crate) fn gv_path(group: &str, version: &str) -> String {
    if group.is_empty() {
        format!("api/{version}")
    } else {
        format!("apis/{group}/{version}")
    }
}

/// A served document: its bytes and hash.
struct Served {
    bytes: Arc<Vec<u8>>,
    hash: String,
}

fn hash_of(bytes: &[u8]) -> String {
    // Custom resource documents change with their CRDs; any stable digest serves as `hash`.
    let mut a = DefaultHasher::new();
    a.write(bytes);
    let mut b = DefaultHasher::new();
    b.write_u64(a.finish());
    b.write(bytes);
    format!("{:016X}{:016X}", a.finish(), b.finish())
}

/// The CRDs serving `group/version`, by the registry's types.
fn crds_of(objects: &Objects, group: &str, version: &str) -> Vec<Arc<Value>> {
    let Some(crd_def) = objects.registry.find(crate::crd::GROUP, "v1", crate::crd::PLURAL) else {
        return Vec::new();
    };
    let mut names: Vec<String> = objects
        .registry
        .all()
        .filter(|d| d.group == group && d.version == version)
        .filter_map(|d| d.crd.clone())
        .collect();
    names.sort();
    names.dedup();
    names
        .iter()
        .filter_map(|name| objects.get(&crd_def, "", name).ok())
        .collect()
}

/// The v3 document of `group/version`, if served.
fn v3_document(objects: &Objects, group: &str, version: &str) -> Option<Served> {
    let builtin = objects
        .registry
        .all()
        .any(|d| d.group == group && d.version == version && d.crd.is_none());
    if builtin {
        let doc = vendored::v3(group, version)?;
        return Some(Served {
            bytes: doc.bytes(),
            hash: doc.hash.clone(),
        });
    }
    let crds = crds_of(objects, group, version);
    if crds.is_empty() {
        return None;
    }
    let bytes = serde_json::to_vec(&custom::v3_document(&crds, version)).ok()?;
    let hash = hash_of(&bytes);
    Some(Served {
        bytes: Arc::new(bytes),
        hash,
    })
}

/// `/openapi/v3`: every served group version with the hash of its document.
fn v3_index(objects: &Objects) -> Value {
    let mut gvs: Vec<(String, String)> = objects
        .registry
        .all()
        .map(|d| (d.group.clone(), d.version.clone()))
        .collect();
    gvs.sort();
    gvs.dedup();
    let mut paths = serde_json::Map::new();
    for (group, version) in gvs {
        if let Some(doc) = v3_document(objects, &group, &version) {
            let path = gv_path(&group, &version);
            let url = format!("/openapi/v3/{path}?hash={}", doc.hash);
            paths.insert(path, json!({ "serverRelativeURL": url }));
        }
    }
    json!({ "paths": paths })
}

/// `/openapi/v2`: the vendored document, with the definitions of custom resources added.
fn v2_document(objects: &Objects) -> Served {
    let doc = &vendored::vendored().v2;
    let crds: Vec<(Arc<Value>, String)> = objects
        .registry
        .all()
        .filter(|d| d.crd.is_some())
        .flat_map(|d| {
            crds_of(objects, &d.group, &d.version)
                .into_iter()
                .map(move |crd| (crd, d.version.clone()))
        })
        .collect();
    if crds.is_empty() {
        return Served {
            bytes: doc.bytes(),
            hash: doc.hash.clone(),
        };
    }
    let mut swagger: Value = serde_json::from_slice(&doc.bytes()).unwrap_or_default();
    for (crd, version) in &crds {
        let kind = custom::CustomKind { crd, version };
        let preserve = kind
            .schema()
            .is_some_and(|s| s["x-kubernetes-preserve-unknown-fields"] == true);
        for (name, mut schema) in custom::kind_schemas(&kind, "#/definitions/") {
            if preserve && !name.ends_with("List") {
                // v2 cannot say "unknown fields allowed": kube-apiserver publishes a bare object.
                schema = json!({"type": "object",
                    "x-kubernetes-group-version-kind": schema["x-kubernetes-group-version-kind"].take()});
            }
            swagger["definitions"][name] = schema;
        }
    }
    let bytes = serde_json::to_vec(&swagger).unwrap_or_default();
    Served {
        hash: hash_of(&bytes),
        bytes: Arc::new(bytes),
    }
}

/// Whether the Accept header admits JSON (absent means anything).
fn accepts_json(headers: &HeaderMap) -> bool {
    let accept = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    accept.trim().is_empty()
        || accept.split(',').any(|clause| {
            let media = clause.split(';').next().unwrap_or_default().trim();
            matches!(media, "application/json" | "application/*" | "*/*")
        })
}

fn json_bytes(bytes: &[u8], etag: &str) -> Response {
    let mut response = (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/json")],
        bytes.to_vec(),
    )
        .into_response();
    let headers = response.headers_mut();
    headers.insert(header::VARY, HeaderValue::from_static("Accept"));
    if let Ok(etag) = HeaderValue::from_str(&format!("\"{etag}\"")) {
        headers.insert(header::ETAG, etag);
    }
    response
}

/// Serves `/openapi/v2`, `/openapi/v3` and `/openapi/v3/{group version}`; None for other paths.
pub(crate) fn serve(
    objects: &Objects,
    method: &Method,
    path: &str,
    query: Option<&str>,
    headers: &HeaderMap,
) -> Option<Response> {
    if method != Method::GET && method != Method::HEAD {
        return None;
    }
    let rest = path.strip_prefix("/openapi/")?.trim_end_matches('/');
    if !accepts_json(headers) && rest != "v3" {
        return Some(StatusCode::NOT_ACCEPTABLE.into_response());
    }
    if rest == "v2" {
        let doc = v2_document(objects);
        return Some(json_bytes(&doc.bytes, &doc.hash));
    }
    if rest == "v3" {
        let index = serde_json::to_vec(&v3_index(objects)).unwrap_or_default();
        return Some(json_bytes(&index, &hash_of(&index)));
    }
    let gv = rest.strip_prefix("v3/")?;
    let (group, version) = match gv.split('/').collect::<Vec<_>>().as_slice() {
        ["api", version] => ("", *version),
        ["apis", group, version] => (*group, *version),
        _ => return None,
    };
    let doc = v3_document(objects, group, version)?;
    let asked = form_urlencoded::parse(query.unwrap_or_default().as_bytes())
        .find(|(k, _)| k == "hash")
        .map(|(_, v)| v.into_owned());
    let mut response = json_bytes(&doc.bytes, &doc.hash);
    if let Some(asked) = asked {
        if asked != doc.hash {
            let location = format!("/openapi/v3/{}?hash={}", gv_path(group, version), doc.hash);
            let mut redirect = StatusCode::MOVED_PERMANENTLY.into_response();
            if let Ok(location) = HeaderValue::from_str(&location) {
                redirect.headers_mut().insert(header::LOCATION, location);
            }
            return Some(redirect);
        }
        let headers = response.headers_mut();
        headers.insert(
            header::CACHE_CONTROL,
            HeaderValue::from_static("public, immutable"),
        );
        let expires = jiff::Timestamp::now()
            .checked_add(jiff::SignedDuration::from_hours(24 * 365))
            .unwrap_or_else(|_| jiff::Timestamp::now());
        let expires = expires.strftime("%a, %d %b %Y %H:%M:%S GMT").to_string();
        if let Ok(expires) = HeaderValue::from_str(&expires) {
            headers.insert(header::EXPIRES, expires);
        }
    }
    Some(response)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accept_negotiation() {
        let mut headers = HeaderMap::new();
        assert!(accepts_json(&headers));
        headers.insert(
            header::ACCEPT,
            HeaderValue::from_static("application/com.github.proto-openapi.spec.v2@v1.0+protobuf"),
        );
        assert!(!accepts_json(&headers));
        headers.insert(header::ACCEPT, HeaderValue::from_static("application/json, */*"));
        assert!(accepts_json(&headers));
    }

    #[test]
    fn custom_hashes_are_long_and_stable() {
        assert_eq!(hash_of(b"x"), hash_of(b"x"));
        assert_ne!(hash_of(b"x"), hash_of(b"y"));
        assert_eq!(hash_of(b"x").len(), 32);
    }
}
