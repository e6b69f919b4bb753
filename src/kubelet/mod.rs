//! The kubelet API of vcsync's virtual nodes: HTTPS on `kubelet.listen`, where a virtual API
//! server calls a node's kubelet for `kubectl logs`, `exec`, `attach` and `port-forward`.
//!
//! Each request is authenticated and authorised as a kubelet does it ([`auth`]), its pod
//! resolved to the host twin this instance owns ([`pods`]), and passed on to the host API
//! server's pod subresource ([`forward`]): namespaced rights on the host, never a host kubelet.
//! The pure part (paths and the host request they become) is
//! `vcsync_translators::kubelet`.

mod auth;
mod forward;
mod pods;
mod stats;
mod tls;
mod ttl_cache;
mod usage;

use std::{net::SocketAddr, sync::Arc, time::Duration};

use anyhow::Context;
use axum::body::Body;
use http::{Request, Response, StatusCode};
use hyper::{body::Incoming, server::conn::http1, service::service_fn};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use vcsync_syncer::kubelet_config::{KubeletConfig, KubeletEndpoint};
use vcsync_translators::kubelet::{KubeletPathError, parse_pod_request};

pub use self::pods::PodResolver;
use self::{
    auth::{Caller, Refusal, Reviewer},
    forward::plain,
    pods::NoPod,
    stats::CpuTotals,
};

/// What the serve loop shares with each request.
struct Shared {
    pods: PodResolver,
    /// Who callers are and what they may do, asked of the virtual API server.
    reviewer: Reviewer,
    /// Cumulative CPU time of the tenant's containers, for stats and metrics.
    cpu: CpuTotals,
}

/// How long a caller may take to finish the TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// A bound kubelet endpoint, not yet serving.
pub struct KubeletServer {
    listener: TcpListener,
    acceptor: TlsAcceptor,
}

impl KubeletServer {
    /// Binds `config.listen` and prepares TLS; `advertised` names go into a self-signed
    /// certificate.
    pub async fn bind(config: &KubeletConfig, advertised: &[String]) -> anyhow::Result<Self> {
        let address = config.listen.context("kubelet.listen is not set")?;
        let tls = tls::server_config(config, advertised)?;
        let listener = TcpListener::bind(address)
            .await
            .with_context(|| format!("binding the kubelet API to {address}"))?;
        Ok(Self {
            listener,
            acceptor: TlsAcceptor::from(tls),
        })
    }

    /// The bound address (the port chosen for port 0).
    pub fn local_addr(&self) -> anyhow::Result<SocketAddr> {
        Ok(self.listener.local_addr()?)
    }

    /// Serves until the task is dropped or aborted. `pods`' clients should have no read
    /// timeout: a followed log or a shell may be quiet for long.
    pub async fn serve(self, pods: PodResolver) {
        let shared = Arc::new(Shared {
            reviewer: Reviewer::new(pods.virtual_client.clone()),
            pods,
            cpu: CpuTotals::default(),
        });
        loop {
            let (stream, peer) = match self.listener.accept().await {
                Ok(accepted) => accepted,
                Err(err) => {
                    tracing::warn!(error = %err, "kubelet API: accepting a connection");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            // No Nagle: an answer's last small write would otherwise wait for the caller's
            // delayed ACK (about 40 ms per request, measured by `vcsync bench kubelet`).
            if let Err(err) = stream.set_nodelay(true) {
                tracing::debug!(error = %err, "kubelet API: could not set TCP_NODELAY");
            }
            let (acceptor, shared) = (self.acceptor.clone(), shared.clone());
            tokio::spawn(async move {
                let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                    Ok(Ok(tls)) => tls,
                    Ok(Err(err)) => {
                        tracing::debug!(%peer, error = %err, "kubelet API: TLS handshake failed");
                        return;
                    }
                    Err(_) => return,
                };
                let certificate = tls
                    .get_ref()
                    .1
                    .peer_certificates()
                    .and_then(|chain| chain.first());
                let caller = certificate.and_then(tls::certificate_caller);
                let service = service_fn(move |request| {
                    let (shared, caller) = (shared.clone(), caller.clone());
                    async move {
                        Ok::<_, std::convert::Infallible>(handle(&shared, caller.as_ref(), request).await)
                    }
                });
                let connection = http1::Builder::new()
                    .serve_connection(TokioIo::new(tls), service)
                    .with_upgrades();
                if let Err(err) = connection.await {
                    tracing::debug!(%peer, error = %err, "kubelet API: connection ended");
                }
            });
        }
    }
}

/// The endpoint the virtual nodes advertise for `config`, with the bound port.
pub fn advertised(config: &KubeletConfig, bound: SocketAddr) -> anyhow::Result<KubeletEndpoint> {
    let config = KubeletConfig {
        listen: Some(bound),
        ..config.clone()
    };
    let pod_ip = std::env::var(vcsync_syncer::kubelet_config::POD_IP_ENV).ok();
    config
        .endpoint(pod_ip.as_deref())
        .map_err(anyhow::Error::msg)?
        .context("kubelet.listen is not set")
}

/// One request: who, which pod, may they, and then the host's answer.
async fn handle(shared: &Shared, certificate: Option<&Caller>, request: Request<Incoming>) -> Response<Body> {
    let pods = &shared.pods;
    let path = request.uri().path().to_string();
    let query = request.uri().query().unwrap_or_default().to_string();
    let access = auth::node_access(request.method(), &path);
    let caller = match shared.reviewer.authenticate(certificate, request.headers()).await {
        Ok(caller) => caller,
        Err(refusal) => return refused(refusal),
    };
    if let Some(report) = NodeReport::of(&path) {
        // About the node, not one pod: the caller needs its rights on every node, since one
        // endpoint serves them all.
        if let Err(refusal) = shared.reviewer.authorize(&caller, &access, None).await {
            return refused(refusal);
        }
        return node_report(shared, report).await;
    }
    let pod_request = match parse_pod_request(&path, &query) {
        Ok(pod_request) => pod_request,
        Err(KubeletPathError::NotFound(_)) => {
            return plain(StatusCode::NOT_FOUND, "404 page not found".into());
        }
        Err(err @ KubeletPathError::Malformed(_)) => return plain(StatusCode::BAD_REQUEST, err.to_string()),
    };
    let pod = pods
        .virtual_pod(&pod_request.pod, pod_request.uid.as_deref())
        .await;
    // Authorised on the pod's node; a caller may learn that a pod does not exist only if it
    // could have reached it on any node.
    let node = pod
        .as_ref()
        .ok()
        .and_then(|pod| pod.spec.as_ref()?.node_name.clone());
    if let Err(refusal) = shared.reviewer.authorize(&caller, &access, node.as_deref()).await {
        return refused(refusal);
    }
    let pair = match pod {
        Ok(pod) => pods.host_twin(&pod_request.pod, &pod).await,
        Err(err) => Err(err),
    };
    let pair = match pair {
        Ok(pair) => pair,
        Err(NoPod::NotFound(text)) => return plain(StatusCode::NOT_FOUND, text),
        Err(NoPod::Unavailable(text)) => return plain(StatusCode::SERVICE_UNAVAILABLE, text),
    };
    tracing::debug!(pod = %pod_request.pod, host = %pair.host, user = %caller.user, subresource = pod_request.verb.subresource(), "kubelet request");
    forward::forward(&pods.host_client, &pod_request, &pair.host, request).await
}

/// The kubelet's answers about the node rather than one pod.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum NodeReport {
    Healthz,
    StatsSummary,
    ResourceMetrics,
    RunningPods,
}

impl NodeReport {
    fn of(path: &str) -> Option<Self> {
        match path {
            "/healthz" => Some(Self::Healthz),
            "/stats/summary" | "/stats/summary/" => Some(Self::StatsSummary),
            "/metrics/resource" => Some(Self::ResourceMetrics),
            "/runningpods" | "/runningpods/" => Some(Self::RunningPods),
            _ => None,
        }
    }
}

/// The node report `report`, from the virtual pods and the host's usage of their twins.
async fn node_report(shared: &Shared, report: NodeReport) -> Response<Body> {
    let now = k8s_openapi::jiff::Timestamp::now();
    let node = shared.pods.translator.ownership().to_string();
    let answer = match report {
        NodeReport::Healthz => return plain(StatusCode::OK, "ok".into()),
        NodeReport::RunningPods => usage::running_pods(&shared.pods.virtual_client)
            .await
            .map(|pods| json(&stats::running_pods(&pods))),
        NodeReport::StatsSummary => usage::tenant_usage(&shared.pods, &shared.cpu)
            .await
            .map(|pods| json(&stats::summary(&node, &pods, now))),
        NodeReport::ResourceMetrics => usage::tenant_usage(&shared.pods, &shared.cpu).await.map(|pods| {
            let text = stats::resource_metrics(&pods, now);
            with_type(text.into_bytes(), "text/plain; version=0.0.4; charset=utf-8")
        }),
    };
    answer.unwrap_or_else(|err| {
        tracing::warn!(error = %err, "kubelet API: node report");
        plain(StatusCode::INTERNAL_SERVER_ERROR, err)
    })
}

fn json(value: &serde_json::Value) -> Response<Body> {
    with_type(serde_json::to_vec(value).unwrap_or_default(), "application/json")
}

fn with_type(body: Vec<u8>, content_type: &'static str) -> Response<Body> {
    let mut response = Response::new(Body::from(body));
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static(content_type),
    );
    response
}

fn refused(refusal: Refusal) -> Response<Body> {
    let status = match refusal {
        Refusal::Unauthenticated => StatusCode::UNAUTHORIZED,
        Refusal::Forbidden(_) => StatusCode::FORBIDDEN,
        Refusal::Unavailable(_) => StatusCode::INTERNAL_SERVER_ERROR,
    };
    plain(status, refusal.to_string())
}
