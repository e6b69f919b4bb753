//! Operations: the HTTP endpoints `/healthz`, `/readyz` and `/metrics`, and the tower layer
//! that counts the kube clients' requests into `vcsync_api_requests_total`.

use std::{
    net::SocketAddr,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
};

use anyhow::Context as _;
use axum::{
    Router,
    extract::State,
    http::{StatusCode, header},
    response::IntoResponse,
    routing::get,
};
use tower::{Layer, Service};
use vcsync_syncer::{Side, metrics::Metrics};

/// Binds `address` and serves the endpoints in the background; returns the bound address
/// (port 0 picks a free one), which is also logged.
pub async fn serve(address: SocketAddr, metrics: Arc<Metrics>) -> anyhow::Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind(address)
        .await
        .with_context(|| format!("binding the operations address {address}"))?;
    let bound = listener.local_addr().context("operations address")?;
    let app = Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics_text))
        .with_state(metrics);
    tokio::spawn(async move {
        if let Err(err) = axum::serve(listener, app).await {
            tracing::error!(error = %err, "operations server failed");
        }
    });
    tracing::info!(address = %bound, "operations endpoints listening (/healthz, /readyz, /metrics)");
    Ok(bound)
}

async fn readyz(State(metrics): State<Arc<Metrics>>) -> impl IntoResponse {
    let readiness = metrics.status().readiness();
    let code = if readiness.ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (code, readiness.to_string())
}

async fn metrics_text(State(metrics): State<Arc<Metrics>>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, vcsync_syncer::metrics::CONTENT_TYPE)],
        metrics.encode(),
    )
}

/// Counts every request of a kube client by cluster, verb and status code.
#[derive(Clone)]
pub struct CountingLayer {
    side: Side,
    metrics: Arc<Metrics>,
}

impl CountingLayer {
    /// Counts requests to the `side` API server into `metrics`.
    pub fn new(side: Side, metrics: Arc<Metrics>) -> Self {
        Self { side, metrics }
    }
}

impl<S> Layer<S> for CountingLayer {
    type Service = Counting<S>;

    fn layer(&self, inner: S) -> Counting<S> {
        Counting {
            inner,
            side: self.side,
            metrics: self.metrics.clone(),
        }
    }
}

/// The service of [`CountingLayer`].
#[derive(Clone)]
pub struct Counting<S> {
    inner: S,
    side: Side,
    metrics: Arc<Metrics>,
}

impl<S, B, RB> Service<http::Request<B>> for Counting<S>
where
    S: Service<http::Request<B>, Response = http::Response<RB>>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let (verb, resource) = request_of(request.method(), request.uri());
        let (side, metrics) = (self.side, self.metrics.clone());
        let response = self.inner.call(request);
        Box::pin(async move {
            let result = response.await;
            let code = match &result {
                Ok(response) => response.status().as_u16().to_string(),
                Err(_) => "error".to_string(),
            };
            metrics.record_api_request(side, verb, &resource, &code);
            result
        })
    }
}

/// The Kubernetes verb and resource of a request, as kube-apiserver's request info reads them:
/// the verb from the HTTP method, and for GETs whether the path names one object or a
/// collection and whether it watches; the resource (`pods`, `pods/status`) from the path after
/// `/api/<version>` or `/apis/<group>/<version>` and the namespace; empty for other paths.
fn request_of(method: &http::Method, uri: &http::Uri) -> (&'static str, String) {
    let query = uri.query().unwrap_or("");
    let path: Vec<&str> = uri.path().split('/').filter(|s| !s.is_empty()).collect();
    let rest = match path.first() {
        Some(&"api") => path.get(2..),
        Some(&"apis") => path.get(3..),
        _ => None,
    }
    .unwrap_or(&[]);
    // `namespaces/<ns>/<resource>...`, but `namespaces/<name>/status` is the namespace's own.
    let rest = match rest {
        ["namespaces", _, kind, ..] if !matches!(*kind, "status" | "finalize") => &rest[2..],
        other => other,
    };
    let names_object = rest.len() >= 2;
    let resource = match rest {
        [kind, _, subresource, ..] => format!("{kind}/{subresource}"),
        [kind, ..] => kind.to_string(),
        [] => String::new(),
    };
    let verb = match *method {
        http::Method::GET if query.split('&').any(|p| p == "watch=true" || p == "watch=1") => "watch",
        http::Method::GET if names_object => "get",
        http::Method::GET if uri.path().starts_with("/api") => "list",
        http::Method::GET => "get",
        http::Method::POST => "create",
        http::Method::PUT => "update",
        http::Method::PATCH => "patch",
        http::Method::DELETE if names_object => "delete",
        http::Method::DELETE => "deletecollection",
        _ => "other",
    };
    (verb, resource)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verbs_and_resources_follow_kubernetes() {
        let cases = [
            (
                "GET",
                "/api/v1/namespaces/ns/configmaps?labelSelector=a",
                "list",
                "configmaps",
            ),
            (
                "GET",
                "/api/v1/namespaces/ns/configmaps?watch=true&resourceVersion=1",
                "watch",
                "configmaps",
            ),
            ("GET", "/api/v1/namespaces/ns/configmaps/cm", "get", "configmaps"),
            ("GET", "/api/v1/namespaces/ns", "get", "namespaces"),
            (
                "PUT",
                "/api/v1/namespaces/ns/finalize",
                "update",
                "namespaces/finalize",
            ),
            ("GET", "/api/v1/namespaces", "list", "namespaces"),
            ("GET", "/api/v1/nodes/n1", "get", "nodes"),
            ("PATCH", "/api/v1/nodes/n1/status", "patch", "nodes/status"),
            ("GET", "/apis/apps/v1/deployments", "list", "deployments"),
            (
                "GET",
                "/apis/networking.k8s.io/v1/namespaces/ns/ingresses/i",
                "get",
                "ingresses",
            ),
            ("GET", "/version", "get", ""),
            ("POST", "/api/v1/namespaces/ns/pods", "create", "pods"),
            (
                "PUT",
                "/api/v1/namespaces/ns/pods/p/status",
                "update",
                "pods/status",
            ),
            (
                "POST",
                "/api/v1/namespaces/ns/pods/p/binding",
                "create",
                "pods/binding",
            ),
            ("PATCH", "/api/v1/namespaces/ns/pods/p", "patch", "pods"),
            ("DELETE", "/api/v1/namespaces/ns/pods/p", "delete", "pods"),
            ("DELETE", "/api/v1/namespaces/ns/pods", "deletecollection", "pods"),
        ];
        for (method, uri, verb, resource) in cases {
            let uri: http::Uri = uri.parse().unwrap();
            let got = request_of(&method.parse().unwrap(), &uri);
            assert_eq!(got, (verb, resource.to_string()), "{method} {uri}");
        }
    }

    #[tokio::test]
    async fn the_layer_counts_requests_by_code() {
        use tower::ServiceExt;
        let metrics = Arc::new(Metrics::new());
        let service = CountingLayer::new(Side::Host, metrics.clone()).layer(tower::service_fn(
            |request: http::Request<()>| async move {
                let status = if request.uri().path().ends_with("missing") {
                    404
                } else {
                    200
                };
                Ok::<_, std::convert::Infallible>(http::Response::builder().status(status).body(()).unwrap())
            },
        ));
        let get = |path: &str| http::Request::get(path).body(()).unwrap();
        let mut service = service;
        for path in ["/api/v1/namespaces/a/pods/p", "/api/v1/namespaces/a/pods/missing"] {
            service.ready().await.unwrap().call(get(path)).await.unwrap();
        }
        let text = metrics.encode();
        assert!(
            text.contains(
                r#"vcsync_api_requests_total{cluster="host",verb="get",resource="pods",code="200"} 1"#
            ),
            "{text}"
        );
        assert!(text.contains(
            r#"vcsync_api_requests_total{cluster="host",verb="get",resource="pods",code="404"} 1"#
        ));
    }
}
