//! A kubelet's requests: routing, the pod and container checks, the log response, the upgrade
//! of exec, attach and port-forward requests to the session that serves them, and the stats of
//! the pods the store shows running here.

use std::sync::Arc;

use axum::body::Body;
use http::{HeaderValue, Request, Response, StatusCode, header};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use serde_json::Value;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::protocol::Role;

use super::process::{Action, Container, Session};
use super::routes::{self, Asking, Refusal, Route};
use super::upgrade::{self, Service, Upgrade};
use super::{
    LINGER, Stopping, logs, portforward, portforward_ws, remotecommand, resource_metrics, spdy, stats,
    websocket,
};
use crate::objects::Objects;
use crate::resources::ResourceDef;
use crate::selectors::{FieldSelector, Selectors};

/// One node's kubelet.
pub(super) struct Node {
    pub(super) name: String,
    pub(super) objects: Arc<Objects>,
    pub(super) pods: Arc<ResourceDef>,
    pub(super) stopping: Stopping,
}

impl Node {
    pub(super) async fn handle(self: &Arc<Self>, request: Request<Incoming>) -> Response<Body> {
        tracing::debug!(
            node = %self.name, method = %request.method(), uri = %request.uri(),
            upgrade = ?request.headers().get(header::UPGRADE),
            websocket_protocol = ?request.headers().get(header::SEC_WEBSOCKET_PROTOCOL),
            stream_protocol = ?request.headers().get_all("x-stream-protocol-version").iter().collect::<Vec<_>>(),
            "simulated kubelet: request"
        );
        let route = match routes::route(request.method(), request.uri().path()) {
            Ok(route) => route,
            Err(refusal) => return refused(refusal),
        };
        let query = routes::query_pairs(request.uri().query());
        let result = match route {
            Route::Healthz => Ok(text(StatusCode::OK, "ok")),
            Route::StatsSummary => Ok(self.summary()),
            Route::ResourceMetrics => {
                let now = stats::whole_second(jiff::Timestamp::now());
                let text = resource_metrics::render(&self.usage(now), now);
                Ok(with_type(StatusCode::OK, text, resource_metrics::CONTENT_TYPE))
            }
            Route::RunningPods => {
                let pods = self.bound_pods();
                let list = stats::running_pods(&pods.iter().map(|p| &**p).collect::<Vec<_>>());
                Ok(with_type(StatusCode::OK, list.to_string(), "application/json"))
            }
            Route::Logs {
                namespace,
                pod,
                container,
            } => self.logs(&query, namespace, pod, container),
            Route::Exec {
                namespace,
                pod,
                uid,
                container,
            } => routes::exec_action(&query).and_then(|action| {
                let container = Container {
                    namespace,
                    pod,
                    name: container,
                };
                self.remote_command(request, &query, container, uid, action)
            }),
            Route::Attach {
                namespace,
                pod,
                uid,
                container,
            } => {
                let container = Container {
                    namespace,
                    pod,
                    name: container,
                };
                self.remote_command(request, &query, container, uid, Action::Attach)
            }
            Route::PortForward { namespace, pod, uid } => {
                self.port_forward(request, &query, namespace, pod, uid)
            }
        };
        result.unwrap_or_else(refused)
    }

    /// The pods the store shows bound to this node.
    fn bound_pods(&self) -> Vec<Arc<Value>> {
        let fields = FieldSelector::parse(&format!("spec.nodeName={}", self.name)).unwrap_or_default();
        let selectors = Selectors {
            fields,
            ..Selectors::default()
        };
        self.objects
            .list(&self.pods, None, &selectors, None, None)
            .map(|page| page.items)
            .unwrap_or_default()
    }

    /// What the running pods here use at `now`.
    fn usage(&self, now: jiff::Timestamp) -> Vec<stats::PodUsage> {
        let pods = self.bound_pods();
        pods.iter().filter_map(|pod| stats::pod_usage(pod, now)).collect()
    }

    /// `/stats/summary`: the node (started when it registered) and its running pods.
    fn summary(&self) -> Response<Body> {
        let now = stats::whole_second(jiff::Timestamp::now());
        let node = (self.objects.registry.find("", "v1", "nodes"))
            .and_then(|nodes| self.objects.get(&nodes, "", &self.name).ok());
        let node = node.as_deref().unwrap_or(&Value::Null);
        let start = node["metadata"]["creationTimestamp"]
            .as_str()
            .and_then(|t| t.parse().ok())
            .unwrap_or(now);
        let capacity =
            crate::quantity::quantity(&node["status"]["capacity"]["memory"]).map(|bytes| bytes as u64);
        let summary = stats::summary(&self.name, start, capacity, &self.usage(now), now);
        with_type(StatusCode::OK, summary.to_string(), "application/json")
    }

    /// The pod as stored, if it exists.
    fn pod(&self, namespace: &str, name: &str) -> Option<Arc<Value>> {
        self.objects.get(&self.pods, namespace, name).ok()
    }

    fn logs(
        &self,
        query: &[(String, String)],
        namespace: String,
        pod: String,
        container: String,
    ) -> Result<Response<Body>, Refusal> {
        let options = logs::LogOptions::parse(query)
            .map_err(|message| Refusal::new(StatusCode::BAD_REQUEST, message))?;
        let stored = self.pod(&namespace, &pod);
        routes::check_pod(stored.as_deref(), &pod, &self.name, None, Asking::Logs)?;
        routes::check_container(
            stored.as_deref().expect("checked"),
            &pod,
            &container,
            Asking::Logs,
        )?;
        if options.previous {
            return Err(Refusal::new(
                StatusCode::BAD_REQUEST,
                logs::no_previous(&pod, &container),
            ));
        }
        let body = Body::from_stream(logs::body(options, namespace, pod, container));
        let mut response = Response::new(body);
        response
            .headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
        Ok(response)
    }

    fn remote_command(
        self: &Arc<Self>,
        mut request: Request<Incoming>,
        query: &[(String, String)],
        container: Container,
        uid: Option<String>,
        action: Action,
    ) -> Result<Response<Body>, Refusal> {
        let options = routes::stream_options(query)?;
        let stored = self.pod(&container.namespace, &container.pod);
        routes::check_pod(
            stored.as_deref(),
            &container.pod,
            &self.name,
            uid.as_deref(),
            Asking::Exec,
        )?;
        routes::check_container(
            stored.as_deref().expect("checked"),
            &container.pod,
            &container.name,
            Asking::Exec,
        )?;
        let upgrade = negotiate(&request, Service::RemoteCommand)?;
        let session = Session {
            container,
            action,
            options,
        };
        let on_upgrade = hyper::upgrade::on(&mut request);
        let switched = upgrade.clone();
        self.spawn_session(async move {
            let Ok(upgraded) = on_upgrade.await else { return };
            let io = TokioIo::new(upgraded);
            match upgrade {
                Upgrade::WebSocket { protocol, .. } => {
                    let ws = WebSocketStream::from_raw_socket(io, Role::Server, None).await;
                    websocket::serve(ws, protocol, session).await;
                }
                Upgrade::Spdy { version } => {
                    remotecommand::serve(spdy::Connection::start(io), &version, session).await;
                }
            }
        });
        Ok(switching(&switched))
    }

    fn port_forward(
        self: &Arc<Self>,
        mut request: Request<Incoming>,
        query: &[(String, String)],
        namespace: String,
        pod: String,
        uid: Option<String>,
    ) -> Result<Response<Body>, Refusal> {
        let stored = self.pod(&namespace, &pod);
        routes::check_pod(
            stored.as_deref(),
            &pod,
            &self.name,
            uid.as_deref(),
            Asking::PortForward,
        )?;
        let upgrade = negotiate(&request, Service::PortForward)?;
        // The channel subprotocols name their ports in the query (the SPDY ones per stream).
        let channel_ports = match &upgrade {
            Upgrade::WebSocket { protocol, .. }
                if protocol.as_deref() != Some(upgrade::PORT_FORWARD_TUNNEL) =>
            {
                let ports = portforward_ws::ports(query)
                    .map_err(|message| Refusal::new(StatusCode::BAD_REQUEST, message))?;
                let targets = ports
                    .into_iter()
                    .map(|port| (port, portforward_ws::target(stored.as_deref(), port)))
                    .collect();
                Some(targets)
            }
            _ => None,
        };
        let on_upgrade = hyper::upgrade::on(&mut request);
        let switched = upgrade.clone();
        let name = format!("{namespace}/{pod}");
        self.spawn_session(async move {
            let Ok(upgraded) = on_upgrade.await else { return };
            let io = TokioIo::new(upgraded);
            match upgrade {
                Upgrade::WebSocket { protocol, .. } if let Some(ports) = channel_ports => {
                    let ws = WebSocketStream::from_raw_socket(io, Role::Server, None).await;
                    portforward_ws::serve(ws, protocol, ports, name).await;
                }
                Upgrade::WebSocket { .. } => {
                    let ws = WebSocketStream::from_raw_socket(io, Role::Server, None).await;
                    let (bytes, mut carrier) = portforward::tunnel(ws);
                    portforward::serve(spdy::Connection::start(bytes), name).await;
                    let _ = tokio::time::timeout(LINGER, carrier.join()).await;
                }
                Upgrade::Spdy { .. } => portforward::serve(spdy::Connection::start(io), name).await,
            }
        });
        Ok(switching(&switched))
    }

    /// Runs an upgraded session until it ends or the kubelets stop.
    fn spawn_session(&self, session: impl Future<Output = ()> + Send + 'static) {
        let mut stopping = self.stopping.clone();
        tokio::spawn(async move {
            tokio::select! {
                _ = session => {}
                _ = stopping.wait() => {}
            }
        });
    }
}

/// The upgrade a request gets, or its refusal.
fn negotiate(request: &Request<Incoming>, service: Service) -> Result<Upgrade, Refusal> {
    upgrade::negotiate(request.headers(), service)
}

fn switching(upgrade: &Upgrade) -> Response<Body> {
    let mut response = Response::new(Body::empty());
    *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    *response.headers_mut() = upgrade::switching_headers(upgrade);
    response
}

/// The response to a refused request.
fn refused(refusal: Refusal) -> Response<Body> {
    let mut response = text(refusal.status, refusal.message);
    for version in refusal.accepted_versions {
        response.headers_mut().append(
            "x-accepted-stream-protocol-versions",
            HeaderValue::from_static(version),
        );
    }
    response
}

/// A plain-text response, as a kubelet writes its errors.
fn text(status: StatusCode, message: impl Into<String>) -> Response<Body> {
    let mut response = with_type(status, message.into(), "text/plain; charset=utf-8");
    response
        .headers_mut()
        .insert("x-content-type-options", HeaderValue::from_static("nosniff"));
    response
}

/// A response of `content_type`.
fn with_type(status: StatusCode, body: String, content_type: &'static str) -> Response<Body> {
    let mut response = Response::new(Body::from(body));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}
