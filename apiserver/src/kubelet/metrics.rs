//! `metrics.k8s.io/v1beta1`, served by the embedded API server itself the way metrics-server
//! serves it behind kube-apiserver: `PodMetrics` (`pods`, namespaced) and `NodeMetrics`
//! (`nodes`), get and list only, computed when asked from the `/stats/summary` of the kubelets
//! of the nodes concerned ([`scrape`], [`usage`]). So `kubectl top pods|nodes` and `kubectl get
//! podmetrics` work against a host server (its simulated kubelets) and a virtual one (vcsync's
//! kubelet API) alike.
//!
//! Lists take a label selector (on the pods' or nodes' labels) and a field selector
//! (`metadata.name`, `metadata.namespace`); only Running pods bound to a node whose kubelet
//! reports them have metrics. Other verbs are refused with 405, as an aggregated read-only API
//! refuses them.

mod scrape;
mod usage;

use std::collections::BTreeSet;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::Request;
use axum::response::{IntoResponse, Response};
use http::{Method, StatusCode, header};
use serde_json::{Value, json};

use crate::http::Shared;
use crate::query::Query;
use crate::representation::{Format, partial};
use crate::status::{ApiError, ApiResult};
use usage::Item;

/// The API group and version.
pub(crate) const GROUP: &str = "metrics.k8s.io";
pub(crate) const VERSION: &str = "v1beta1";
const GROUP_VERSION: &str = "metrics.k8s.io/v1beta1";

/// `/apis`' entry for the group.
pub(crate) fn api_group() -> Value {
    let version = json!({"groupVersion": GROUP_VERSION, "version": VERSION});
    json!({"name": GROUP, "versions": [version], "preferredVersion": version})
}

/// `/apis/metrics.k8s.io/v1beta1`: the APIResourceList.
pub(crate) fn api_resources() -> Value {
    let resource = |name: &str, namespaced: bool, kind: &str| {
        json!({"name": name, "singularName": "", "namespaced": namespaced, "kind": kind,
            "verbs": ["get", "list"]})
    };
    json!({
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": GROUP_VERSION,
        "resources": [resource("nodes", false, "NodeMetrics"), resource("pods", true, "PodMetrics")],
    })
}

/// What a request names.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Target {
    Pods {
        namespace: Option<String>,
        name: Option<String>,
    },
    Nodes {
        name: Option<String>,
    },
}

impl Target {
    /// The resource as counted and as named in errors.
    fn resource(&self) -> &'static str {
        match self {
            Target::Pods { .. } => "pods",
            Target::Nodes { .. } => "nodes",
        }
    }
}

/// The target of a path under `/apis/metrics.k8s.io/v1beta1/`, None for any other path
/// (discovery included).
fn target(path: &str) -> Option<ApiResult<Target>> {
    let rest = path
        .trim_end_matches('/')
        .strip_prefix("/apis/metrics.k8s.io/v1beta1/")?;
    let segments: Vec<&str> = rest.split('/').collect();
    let named = |s: &str| (!s.is_empty()).then(|| s.to_string());
    Some(match segments.as_slice() {
        ["pods"] => Ok(Target::Pods {
            namespace: None,
            name: None,
        }),
        ["namespaces", ns, "pods", name @ ..] if !ns.is_empty() && name.len() <= 1 => Ok(Target::Pods {
            namespace: named(ns),
            name: name.first().and_then(|n| named(n)),
        }),
        ["nodes", name @ ..] if name.len() <= 1 => Ok(Target::Nodes {
            name: name.first().and_then(|n| named(n)),
        }),
        _ => Err(ApiError::no_route(path)),
    })
}

/// Whether `path` is a metrics resource (served by [`serve`]).
pub(crate) fn serves(path: &str) -> bool {
    target(path).is_some()
}

/// Answers a request for a metrics resource.
pub(crate) async fn serve(shared: &Arc<Shared>, request: Request) -> Response {
    answer(shared, request).await.unwrap_or_else(crate::http::error)
}

async fn answer(shared: &Arc<Shared>, request: Request) -> ApiResult<Response> {
    let path = request.uri().path();
    let target = target(path).unwrap_or_else(|| Err(ApiError::no_route(path)))?;
    let query = Query::parse(request.uri().query())?;
    let named = matches!(
        target,
        Target::Pods { name: Some(_), .. } | Target::Nodes { name: Some(_) }
    );
    let verb = match (request.method(), named) {
        (&Method::GET | &Method::HEAD, _) if query.watch => "watch",
        (&Method::GET | &Method::HEAD, true) => "get",
        (&Method::GET | &Method::HEAD, false) => "list",
        _ => "other",
    };
    shared
        .counters
        .record(verb, &format!("{}.{GROUP}", target.resource()));
    match verb {
        "get" | "list" => {}
        "watch" => {
            return Err(ApiError::method_not_allowed(format!(
                "watch is not supported on resources of kind \"{}.{GROUP}\"",
                target.resource()
            )));
        }
        _ => {
            return Err(ApiError::method_not_allowed(
                "the server does not allow this method on the requested resource",
            ));
        }
    }
    let accept = request
        .headers()
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let format = Format::from_accept(accept);
    let now = jiff::Timestamp::now();
    let now = jiff::Timestamp::from_second(now.as_second())
        .unwrap_or(now)
        .to_string();
    match target {
        Target::Pods {
            namespace,
            name: Some(name),
        } => {
            let namespace = namespace.unwrap_or_default();
            let pod = stored(shared, "pods", &namespace, &name)?;
            let item = pod_items(shared, vec![pod], &now).await.pop();
            let item =
                item.ok_or_else(|| ApiError::not_found(GROUP, "podmetrics", &format!("{namespace}/{name}")))?;
            Ok(one(item, format))
        }
        Target::Pods {
            namespace,
            name: None,
        } => {
            let pods = listed(shared, "pods", namespace.as_deref(), &query)?;
            Ok(list(
                "PodMetricsList",
                pod_items(shared, pods, &now).await,
                format,
            ))
        }
        Target::Nodes { name: Some(name) } => {
            let node = stored(shared, "nodes", "", &name)?;
            let item = node_items(shared, vec![node], &now).await.pop();
            let item = item.ok_or_else(|| ApiError::not_found(GROUP, "nodemetrics", &name))?;
            Ok(one(item, format))
        }
        Target::Nodes { name: None } => {
            let nodes = listed(shared, "nodes", None, &query)?;
            Ok(list(
                "NodeMetricsList",
                node_items(shared, nodes, &now).await,
                format,
            ))
        }
    }
}

/// The stored pod or node (404 as for the core resource when there is none).
fn stored(shared: &Shared, plural: &str, namespace: &str, name: &str) -> ApiResult<Arc<Value>> {
    let def = (shared.objects.registry.find("", "v1", plural))
        .ok_or_else(|| ApiError::not_found("", plural, name))?;
    shared.objects.get(&def, namespace, name)
}

/// The stored pods or nodes a list selects, in namespace and name order.
fn listed(
    shared: &Shared,
    plural: &str,
    namespace: Option<&str>,
    query: &Query,
) -> ApiResult<Vec<Arc<Value>>> {
    let def = (shared.objects.registry.find("", "v1", plural)).ok_or_else(|| ApiError::no_route(plural))?;
    let mut items = shared
        .objects
        .list(&def, namespace, &query.selectors, None, None)?
        .items;
    let key = |o: &Value| {
        let meta = &o["metadata"];
        (
            meta["namespace"].as_str().unwrap_or_default().to_string(),
            meta["name"].as_str().unwrap_or_default().to_string(),
        )
    };
    items.sort_by_key(|o| key(o));
    Ok(items)
}

/// The metrics of `pods` that are Running on a node whose kubelet reports them.
async fn pod_items(shared: &Shared, pods: Vec<Arc<Value>>, now: &str) -> Vec<Item> {
    let running: Vec<Arc<Value>> = pods
        .into_iter()
        .filter(|p| {
            p["status"]["phase"] == "Running" && p["spec"]["nodeName"].as_str().is_some_and(|n| !n.is_empty())
        })
        .collect();
    let node_names: BTreeSet<&str> = running
        .iter()
        .filter_map(|p| p["spec"]["nodeName"].as_str())
        .collect();
    let nodes: Vec<Arc<Value>> = node_names
        .into_iter()
        .filter_map(|name| stored(shared, "nodes", "", name).ok())
        .collect();
    let summaries = scrape::summaries(&shared.kubelet_identity, &nodes).await;
    running
        .iter()
        .filter_map(|pod| {
            let summary = summaries.get(pod["spec"]["nodeName"].as_str()?)?;
            usage::pod_metrics(pod, usage::find_pod(summary, pod)?, now)
        })
        .collect()
}

/// The metrics of `nodes` whose kubelets answer.
async fn node_items(shared: &Shared, nodes: Vec<Arc<Value>>, now: &str) -> Vec<Item> {
    let summaries = scrape::summaries(&shared.kubelet_identity, &nodes).await;
    nodes
        .iter()
        .filter_map(|node| {
            let summary = summaries.get(node["metadata"]["name"].as_str()?)?;
            usage::node_metrics(node, &summary.node, now)
        })
        .collect()
}

fn json_ok(value: &Value) -> Response {
    let body = serde_json::to_vec(value).unwrap_or_default();
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/json")],
        Body::from(body),
    )
        .into_response()
}

/// One object in the representation asked for.
fn one(item: Item, format: Format) -> Response {
    match format {
        Format::Object => json_ok(&item.object),
        Format::Metadata => json_ok(&partial(&item.object)),
        Format::Table => json_ok(&usage::table(&[item], json!({}))),
    }
}

/// A list of `kind` in the representation asked for (its items without kind and apiVersion,
/// as typed lists are written).
fn list(kind: &str, items: Vec<Item>, format: Format) -> Response {
    match format {
        Format::Table => json_ok(&usage::table(&items, json!({"resourceVersion": ""}))),
        Format::Metadata => {
            let items: Vec<Value> = items.iter().map(|i| partial(&i.object)).collect();
            json_ok(
                &json!({"kind": "PartialObjectMetadataList", "apiVersion": "meta.k8s.io/v1",
                "metadata": {}, "items": items}),
            )
        }
        Format::Object => {
            let items: Vec<Value> = items
                .into_iter()
                .map(|mut item| {
                    if let Some(fields) = item.object.as_object_mut() {
                        fields.remove("kind");
                        fields.remove("apiVersion");
                    }
                    item.object
                })
                .collect();
            json_ok(&json!({"kind": kind, "apiVersion": GROUP_VERSION, "metadata": {}, "items": items}))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_name_pods_and_nodes() {
        let base = "/apis/metrics.k8s.io/v1beta1";
        let parsed = |path: &str| target(&format!("{base}{path}")).map(|t| t.ok());
        let pods = |namespace: Option<&str>, name: Option<&str>| {
            Some(Some(Target::Pods {
                namespace: namespace.map(str::to_string),
                name: name.map(str::to_string),
            }))
        };
        assert_eq!(parsed("/pods"), pods(None, None));
        assert_eq!(parsed("/namespaces/ns/pods"), pods(Some("ns"), None));
        assert_eq!(parsed("/namespaces/ns/pods/web"), pods(Some("ns"), Some("web")));
        assert_eq!(
            parsed("/nodes/n1"),
            Some(Some(Target::Nodes {
                name: Some("n1".into())
            }))
        );
        for other in ["/namespaces/ns/nodes", "/pods/web", "/namespaces/ns", "/services"] {
            let answer = target(&format!("{base}{other}")).unwrap();
            assert_eq!(answer.unwrap_err().code, 404, "{other}");
        }
        assert!(!serves(base) && !serves(&format!("{base}/")) && !serves("/apis/metrics.k8s.io"));
        assert!(!serves("/api/v1/pods") && serves(&format!("{base}/nodes")));
    }

    #[test]
    fn discovery_lists_both_kinds_read_only() {
        let resources = api_resources();
        assert_eq!(resources["groupVersion"], "metrics.k8s.io/v1beta1");
        assert_eq!(resources["resources"][1]["kind"], "PodMetrics");
        assert_eq!(resources["resources"][1]["namespaced"], true);
        assert_eq!(resources["resources"][0]["verbs"], json!(["get", "list"]));
        assert_eq!(api_group()["preferredVersion"]["version"], "v1beta1");
    }
}
