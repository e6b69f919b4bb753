//! HTTP front end: URL routing, verbs, content negotiation, request counting, responses.
//!
//! One fallback handler parses Kubernetes URL shapes itself (`/api/v1/namespaces/{ns}/{plural}/
//! {name}/{sub}`, `/apis/{group}/{version}/...`, legacy `/watch/` prefixes), which is simpler than
//! expressing every shape as an axum route.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use http::{HeaderMap, Method, StatusCode, header};
use serde_json::Value;
use tokio::sync::watch;

use crate::counters::LiveCounters;
use crate::deletion::DeleteOptions;
use crate::discovery;
use crate::faults::{Faults, RequestInfo};
use crate::objects::Objects;
use crate::openapi;
use crate::patch::PatchKind;
use crate::query::Query;
use crate::representation::{self, Format};
use crate::resources::ResourceDef;
use crate::status::{ApiError, ApiResult, success};
use crate::table;
use crate::watch::{self as watching, WatchRequest};

/// Largest request body accepted.
const MAX_BODY: usize = 64 * 1024 * 1024;

/// State shared by all requests.
pub(crate) struct Shared {
    pub objects: Arc<Objects>,
    pub counters: LiveCounters,
    pub faults: Faults,
    pub shutdown: watch::Receiver<bool>,
    pub addr: SocketAddr,
    /// What the server presents when it calls a node's kubelet.
    pub kubelet_identity: Arc<crate::kubelet::identity::KubeletClientIdentity>,
    /// Whether creates of workload kinds say that no controller makes their pods.
    pub warn_without_controllers: bool,
}

/// The router: everything goes through [`handle`].
pub(crate) fn router(shared: Arc<Shared>) -> Router {
    Router::new().fallback(handle).with_state(shared)
}

async fn handle(State(shared): State<Arc<Shared>>, request: Request) -> Response {
    if let Some((stream, namespace, name)) = pod_stream(request.uri().path()) {
        // Served by the pod's kubelet: the request goes there as it came (an upgrade included).
        let verb = if stream.upgrades() && request.method() == Method::POST {
            "create"
        } else {
            "get"
        };
        let sub = request
            .uri()
            .path()
            .rsplit('/')
            .next()
            .unwrap_or_default()
            .to_string();
        shared.counters.record(verb, &format!("pods/{sub}"));
        return crate::kubelet::proxy::serve(&shared, stream, &namespace, &name, request).await;
    }
    if crate::kubelet::metrics::serves(request.uri().path()) {
        // metrics.k8s.io: computed from the kubelets' summaries, not stored.
        return crate::kubelet::metrics::serve(&shared, request).await;
    }
    let (parts, body) = request.into_parts();
    let body = match axum::body::to_bytes(body, MAX_BODY).await {
        Ok(body) => body,
        Err(e) => {
            return error(ApiError::bad_request(format!(
                "failed to read the request body: {e}"
            )));
        }
    };
    let path = parts.uri.path().trim_end_matches('/');
    tracing::debug!(method = %parts.method, uri = %parts.uri, "request");
    if let Some(response) = openapi::serve(
        &shared.objects,
        &parts.method,
        path,
        parts.uri.query(),
        &parts.headers,
    ) {
        return response;
    }
    let result = match non_resource(&shared, &parts.method, path) {
        Some(response) => Ok(response),
        None => {
            resource(
                &shared,
                &parts.method,
                path,
                parts.uri.query(),
                &parts.headers,
                body,
            )
            .await
        }
    };
    result.unwrap_or_else(error)
}

/// `/api/v1/namespaces/{namespace}/pods/{name}/{log|exec|attach|portforward}`: the stream and
/// the pod.
fn pod_stream(path: &str) -> Option<(crate::kubelet::location::PodStream, String, String)> {
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    match segments.as_slice() {
        ["api", "v1", "namespaces", namespace, "pods", name, sub]
            if !namespace.is_empty() && !name.is_empty() =>
        {
            let stream = crate::kubelet::location::PodStream::of(sub)?;
            Some((stream, namespace.to_string(), name.to_string()))
        }
        _ => None,
    }
}

pub(crate) fn error(e: ApiError) -> Response {
    tracing::debug!(code = e.code, reason = e.reason, message = %e.message, "request failed");
    let mut response = json_response(
        StatusCode::from_u16(e.code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
        &e.to_status(),
    );
    if e.retry_after_seconds > 0 {
        response.headers_mut().insert(
            header::RETRY_AFTER,
            http::HeaderValue::from(e.retry_after_seconds),
        );
    }
    response
}

fn json_response(code: StatusCode, value: &impl serde::Serialize) -> Response {
    let body = serde_json::to_vec(value).unwrap_or_default();
    (code, [(header::CONTENT_TYPE, "application/json")], body).into_response()
}

fn text_response(text: String) -> Response {
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        text,
    )
        .into_response()
}

/// Discovery, health and metrics endpoints.
fn non_resource(shared: &Shared, method: &Method, path: &str) -> Option<Response> {
    if method != Method::GET && method != Method::HEAD {
        return None;
    }
    let registry = &shared.objects.registry;
    let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let ok = |v: Value| Some(json_response(StatusCode::OK, &v));
    match segments.as_slice() {
        ["version"] => ok(discovery::version()),
        [probe, ..] if matches!(*probe, "healthz" | "readyz" | "livez") => Some(text_response("ok".into())),
        ["metrics"] => Some(text_response(shared.counters.prometheus())),
        ["api"] => ok(discovery::core_versions(shared.addr)),
        ["api", version] => ok(discovery::resources(registry, "", version)?),
        ["apis"] => ok(discovery::groups(registry)),
        ["apis", group] => ok(discovery::group(registry, group)?),
        ["apis", group, version] => ok(discovery::resources(registry, group, version)?),
        _ => None,
    }
}

/// A parsed resource URL.
struct Target {
    def: Arc<ResourceDef>,
    namespace: Option<String>,
    name: Option<String>,
    sub: Option<String>,
    legacy_watch: bool,
}

fn parse_target(objects: &Objects, path: &str) -> ApiResult<Target> {
    let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let (group, version, mut rest) = match segments.as_slice() {
        ["api", version, rest @ ..] => ("", *version, rest),
        ["apis", group, version, rest @ ..] => (*group, *version, rest),
        _ => return Err(ApiError::no_route(path)),
    };
    let legacy_watch = rest.first() == Some(&"watch");
    if legacy_watch {
        rest = &rest[1..];
    }
    let registry = &objects.registry;
    let scoped = rest.len() >= 3
        && rest[0] == "namespaces"
        && registry
            .find(group, version, rest[2])
            .is_some_and(|d| d.namespaced);
    let (namespace, rest) = if scoped {
        (Some(rest[1].to_string()), &rest[2..])
    } else {
        (None, rest)
    };
    let (plural, name, sub) = match rest {
        [plural] => (*plural, None, None),
        [plural, name] => (*plural, Some(name.to_string()), None),
        [plural, name, sub] => (*plural, Some(name.to_string()), Some(sub.to_string())),
        _ => return Err(ApiError::no_route(path)),
    };
    let def = registry
        .find(group, version, plural)
        .ok_or_else(|| ApiError::no_route(path))?;
    if let Some(sub) = &sub
        && !def.has_subresource(sub)
    {
        return Err(ApiError::no_route(path));
    }
    Ok(Target {
        def,
        namespace,
        name,
        sub,
        legacy_watch,
    })
}

async fn resource(
    shared: &Arc<Shared>,
    method: &Method,
    path: &str,
    raw_query: Option<&str>,
    headers: &HeaderMap,
    body: Bytes,
) -> ApiResult<Response> {
    let objects = &shared.objects;
    let target = parse_target(objects, path)?;
    let mut query = Query::parse(raw_query)?;
    query.watch |= target.legacy_watch;
    let def = target.def.clone();
    let resource_name = match &target.sub {
        Some(sub) => format!("{}/{sub}", def.plural),
        None => def.plural.clone(),
    };
    let namespace = if def.namespaced {
        target.namespace.clone()
    } else {
        None
    };
    let ns = namespace.as_deref().unwrap_or_default();
    let accept = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let format = Format::from_accept(accept);
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let needs_namespace = || -> ApiResult<()> {
        if def.namespaced && namespace.is_none() {
            return Err(ApiError::method_not_allowed(format!(
                "{} must be addressed in a namespace: /namespaces/{{namespace}}/{}",
                def.plural, def.plural
            )));
        }
        Ok(())
    };
    let verb = match (method.clone(), target.name.is_some()) {
        (Method::GET, _) if query.watch => "watch",
        (Method::GET, true) => "get",
        (Method::GET, false) => "list",
        (Method::POST, _) => "create",
        (Method::PUT, _) => "update",
        (Method::PATCH, _) => "patch",
        (Method::DELETE, true) => "delete",
        (Method::DELETE, false) => "deletecollection",
        _ => {
            return Err(ApiError::method_not_allowed(format!(
                "method {method} is not supported"
            )));
        }
    };
    shared.counters.record(verb, &resource_name);
    if let Some(sub) = target.sub.as_deref()
        && sub != "status"
        && sub != "ephemeralcontainers"
        && verb != "create"
    {
        return Err(ApiError::method_not_allowed(format!(
            "{verb} is not supported on {}/{sub}",
            def.plural
        )));
    }
    if query.dry_run && !matches!(verb, "get" | "list" | "watch") {
        // Refused rather than ignored: ignoring would make a dry run write for real.
        return Err(ApiError::bad_request(
            "dryRun is not supported by the vcsync embedded API server",
        ));
    }
    // A list or watch names an object through a field selector, a create in its body.
    let selected_name = match (verb, target.name.is_some()) {
        ("create", false) if shared.faults.has_rules() => serde_json::from_slice::<Value>(&body)
            .ok()
            .and_then(|v| v["metadata"]["name"].as_str().map(str::to_string)),
        _ => query.selectors.fields.equals("metadata.name"),
    };
    let injection = shared.faults.check(&RequestInfo {
        verb,
        group: &def.group,
        resource: &resource_name,
        namespace: namespace.as_deref(),
        name: target.name.as_deref().or(selected_name.as_deref()),
        resource_version: query.resource_version_number().ok().flatten(),
        has_continue: query.continue_token.is_some(),
    });
    if !injection.delay.is_zero() {
        tokio::time::sleep(injection.delay).await;
    }
    if let Some(error) = injection.error {
        return Err(error);
    }
    if injection.gone && verb == "list" {
        return Err(ApiError::expired(format!(
            "The provided continue parameter or resourceVersion is too old ({})",
            query.resource_version.as_deref().unwrap_or_default()
        )));
    }
    let user_agent = headers.get(header::USER_AGENT).and_then(|v| v.to_str().ok());
    let writer = crate::managed_fields::Writer::new(
        query.field_manager.clone(),
        query.force,
        user_agent.unwrap_or_default(),
    );
    let ok = |object: &Value| Ok(json_response(StatusCode::OK, object));
    if crate::reviews::is_review(&def) {
        return match (verb, target.name.as_deref()) {
            ("create", None) => {
                let request = decode_body(content_type, &body)?;
                let answered = crate::reviews::answer(&def, namespace.as_deref(), request)?;
                Ok(json_response(StatusCode::CREATED, &answered))
            }
            _ => Err(ApiError::method_not_allowed(format!(
                "{verb} is not supported on {}",
                def.plural
            ))),
        };
    }
    match (verb, target.name.as_deref()) {
        ("watch", name) => {
            if let Some(name) = name {
                let by_name = format!("metadata.name={name}");
                query.selectors.fields =
                    crate::selectors::FieldSelector::parse(&by_name).map_err(ApiError::bad_request)?;
            }
            let closer = shared.faults.register_watch(&resource_name, namespace.as_deref());
            let request = WatchRequest {
                def,
                namespace,
                query,
                format,
                faults: watching::WatchFaults {
                    closer: Some(closer),
                    close_after: injection.close_after,
                    gone: injection.gone,
                },
            };
            let body: Body = watching::start(objects.clone(), shared.shutdown.clone(), request)?;
            Ok((StatusCode::OK, [(header::CONTENT_TYPE, "application/json")], body).into_response())
        }
        ("get", Some(name)) => {
            let object = objects.get(&def, ns, name)?;
            match format {
                Format::Table => {
                    let rv = object["metadata"]["resourceVersion"].clone();
                    ok(&table::render(
                        &def,
                        &[&object],
                        serde_json::json!({"resourceVersion": rv}),
                        true,
                    ))
                }
                Format::Metadata => ok(&representation::partial(&object)),
                Format::Object => ok(&object),
            }
        }
        ("list", _) => {
            let list = objects.list(
                &def,
                namespace.as_deref(),
                &query.selectors,
                query.limit,
                query.continue_token.as_deref(),
            )?;
            match format {
                Format::Table => {
                    let items: Vec<&Value> = list.items.iter().map(|i| &**i).collect();
                    ok(&table::render(&def, &items, list.metadata.clone(), true))
                }
                Format::Metadata => ok(&representation::partial_list(&list)),
                Format::Object => Ok(json_response(StatusCode::OK, &list)),
            }
        }
        ("create", None) => {
            needs_namespace()?;
            let mut object = decode_body(content_type, &body)?;
            let raw = crate::field_validation::is_json(content_type).then_some(&body[..]);
            let fields = crate::field_validation::checker(objects, &def, raw_query, "CreateOptions")?;
            let mut warnings = fields.body(raw, &mut object)?;
            let created = crate::managed_fields::with_writer(writer, || objects.create(&def, ns, object))?;
            if shared.warn_without_controllers {
                warnings.extend(crate::no_controllers::warning(&def));
            }
            let mut response = json_response(StatusCode::CREATED, &created);
            crate::field_validation::add_warnings(&mut response, &warnings);
            Ok(response)
        }
        ("create", Some(name)) if target.sub.as_deref() == Some("binding") => {
            objects.bind(&def, ns, name, &decode_body(content_type, &body)?)?;
            Ok(json_response(StatusCode::CREATED, &success(201, None)))
        }
        ("create", Some(name)) if target.sub.as_deref() == Some("eviction") => {
            objects.evict(&def, ns, name, &decode_body(content_type, &body)?)?;
            Ok(json_response(StatusCode::CREATED, &success(201, None)))
        }
        ("create", Some(name)) if target.sub.as_deref() == Some("token") => {
            let token = objects.request_token(&def, ns, name, decode_body(content_type, &body)?)?;
            Ok(json_response(StatusCode::CREATED, &token))
        }
        ("update", Some(name)) => {
            needs_namespace()?;
            let mut object = decode_body(content_type, &body)?;
            let raw = crate::field_validation::is_json(content_type).then_some(&body[..]);
            let fields = crate::field_validation::checker(objects, &def, raw_query, "UpdateOptions")?;
            let warnings = fields.body(raw, &mut object)?;
            let updated = crate::managed_fields::with_writer(writer, || {
                objects.update(&def, ns, name, target.sub.as_deref(), object)
            })?;
            let mut response = json_response(StatusCode::OK, &updated);
            crate::field_validation::add_warnings(&mut response, &warnings);
            Ok(response)
        }
        ("patch", Some(name)) => {
            needs_namespace()?;
            let kind = PatchKind::from_content_type(content_type)
                .ok_or_else(|| ApiError::unsupported_media_type(content_type))?;
            let fields = crate::field_validation::checker(objects, &def, raw_query, "PatchOptions")?;
            let warnings = std::sync::Mutex::new(Vec::new());
            let check = |kind: PatchKind, patched: &mut Value| -> ApiResult<()> {
                let found = fields.patched(kind, &body, patched)?;
                warnings.lock().unwrap_or_else(|p| p.into_inner()).extend(found);
                Ok(())
            };
            writer.check_patch(kind == PatchKind::Apply)?;
            // An apply that creates answers 201, as kube-apiserver's patch handler does.
            let creates = kind == PatchKind::Apply && objects.get(&def, ns, name).is_err();
            let patched = crate::managed_fields::with_writer(writer, || {
                objects.patch(&def, ns, name, target.sub.as_deref(), kind, &body, &check)
            })?;
            let code = if creates {
                StatusCode::CREATED
            } else {
                StatusCode::OK
            };
            let mut response = json_response(code, &*patched);
            let warnings = warnings.into_inner().unwrap_or_else(|p| p.into_inner());
            crate::field_validation::add_warnings(&mut response, &warnings);
            Ok(response)
        }
        ("delete", Some(name)) => {
            needs_namespace()?;
            let options = DeleteOptions::parse(&body, query.grace_period_seconds)?;
            ok(&*objects.delete(&def, ns, name, &options)?)
        }
        ("deletecollection", None) => {
            let options = DeleteOptions::parse(&body, query.grace_period_seconds)?;
            ok(&objects.delete_collection(&def, namespace.as_deref(), &query.selectors, &options)?)
        }
        _ => Err(ApiError::method_not_allowed(format!(
            "{verb} is not supported on {path}"
        ))),
    }
}

/// Decodes a JSON, YAML or (for a few kinds) protobuf request body; CBOR is refused.
fn decode_body(content_type: &str, body: &[u8]) -> ApiResult<Value> {
    let essence = content_type.split(';').next().unwrap_or_default().trim();
    match essence {
        "" | "application/json" | "*/*" => serde_json::from_slice(body)
            .map_err(|e| ApiError::bad_request(format!("error decoding the request body as JSON: {e}"))),
        "application/vnd.kubernetes.protobuf" => crate::protobuf::decode(body)
            .map_err(|e| ApiError::unsupported_media_type(&format!("{essence} ({e})"))),
        "application/yaml" | "application/x-yaml" | "text/yaml" => serde_yaml_ng::from_slice(body)
            .map_err(|e| ApiError::bad_request(format!("error decoding the request body as YAML: {e}"))),
        other => Err(ApiError::unsupported_media_type(other)),
    }
}
