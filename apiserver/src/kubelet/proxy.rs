//! `pods/log`, `exec`, `attach` and `portforward`, served as kube-apiserver serves them: by
//! calling the kubelet of the pod's node over HTTPS with the server's kubelet client certificate
//! (the kubelet's serving certificate is not checked, as kube-apiserver does without
//! `--kubelet-certificate-authority`). A log streams back as the kubelet writes it; an upgrade
//! (SPDY or WebSocket, whatever the client offers) goes to the kubelet as it came, and once the
//! kubelet switches protocols the two connections are spliced byte for byte.

use std::{sync::Arc, time::Duration};

use axum::{
    body::Body,
    extract::Request,
    response::{IntoResponse, Response},
};
use http::{HeaderMap, HeaderName, StatusCode, header};
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use serde_json::Value;
use tokio::net::TcpStream;
use tokio_rustls::{TlsConnector, rustls::pki_types::ServerName};

use super::{
    client_tls::client_config,
    identity::KubeletClientIdentity,
    location::{KubeletLocation, PodStream, locate},
};
use crate::{
    http::Shared,
    status::{ApiError, ApiResult},
};

/// How long the kubelet may take to accept a connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Request headers an upgrade carries to the kubelet.
const UPGRADE_REQUEST_HEADERS: &[&str] = &[
    "connection",
    "upgrade",
    "sec-websocket-key",
    "sec-websocket-version",
    "sec-websocket-protocol",
    "sec-websocket-extensions",
    "x-stream-protocol-version",
];

/// Response headers a switch of protocols carries back.
const UPGRADE_RESPONSE_HEADERS: &[&str] = &[
    "connection",
    "upgrade",
    "sec-websocket-accept",
    "sec-websocket-protocol",
    "sec-websocket-extensions",
    "x-stream-protocol-version",
];

/// Serves `stream` of pod `namespace/name` for `request`.
pub(crate) async fn serve(
    shared: &Arc<Shared>,
    stream: PodStream,
    namespace: &str,
    name: &str,
    request: Request,
) -> Response {
    match proxy(shared, stream, namespace, name, request).await {
        Ok(response) => response,
        Err(err) => crate::http::error(err),
    }
}

async fn proxy(
    shared: &Arc<Shared>,
    stream: PodStream,
    namespace: &str,
    name: &str,
    request: Request,
) -> ApiResult<Response> {
    let (pod, node) = pod_and_node(shared, namespace, name)?;
    let location = locate(
        stream,
        &pod,
        node.as_ref(),
        request.uri().query().unwrap_or_default(),
    )?;
    let Some((host, port)) = location.host.clone() else {
        // No node, no kubelet: the log is empty.
        return Ok((StatusCode::OK, [(header::CONTENT_TYPE, "text/plain")], "").into_response());
    };
    if stream.upgrades() && !request.headers().contains_key(header::UPGRADE) {
        return Err(ApiError::bad_request("Upgrade request required"));
    }
    let (mut parts, _body) = request.into_parts();
    let caller_upgrade = parts.extensions.remove::<OnUpgrade>();
    let mut sender = connect(&shared.kubelet_identity, &host, port).await?;
    let outgoing = kubelet_request(&location, &host, port, stream, &parts.method, &parts.headers)?;
    let mut response = sender
        .send_request(outgoing)
        .await
        .map_err(|err| ApiError::internal(format!("error dialing backend: {err}")))?;
    let status = response.status();
    if stream.upgrades() && status == StatusCode::SWITCHING_PROTOCOLS {
        let caller_upgrade =
            caller_upgrade.ok_or_else(|| ApiError::bad_request("Upgrade request required"))?;
        let kubelet_upgrade = hyper::upgrade::on(&mut response);
        let mut switching = Response::builder().status(StatusCode::SWITCHING_PROTOCOLS);
        if let Some(headers) = switching.headers_mut() {
            copy(response.headers(), headers, UPGRADE_RESPONSE_HEADERS);
        }
        tokio::spawn(splice(caller_upgrade, kubelet_upgrade));
        return switching
            .body(Body::empty())
            .map_err(|err| ApiError::internal(err.to_string()));
    }
    if stream.upgrades() || status.is_success() {
        // A log as it comes; a refused upgrade as the kubelet answered it.
        let mut answer = Response::builder().status(status);
        if let Some(content_type) = response.headers().get(header::CONTENT_TYPE) {
            answer = answer.header(header::CONTENT_TYPE, content_type.clone());
        }
        return answer
            .body(Body::new(response.into_body()))
            .map_err(|err| ApiError::internal(err.to_string()));
    }
    let body = axum::body::to_bytes(Body::new(response.into_body()), 1 << 20)
        .await
        .unwrap_or_default();
    Err(ApiError::from_kubelet(
        status.as_u16(),
        String::from_utf8_lossy(&body).trim_end(),
    ))
}

/// The pod and the node it is bound to (None when unbound).
fn pod_and_node(shared: &Shared, namespace: &str, name: &str) -> ApiResult<(Value, Option<Value>)> {
    let store = shared.objects.store.lock();
    let pod = store
        .get("/pods", namespace, name)
        .ok_or_else(|| ApiError::not_found("", "pods", name))?;
    let node_name = pod["spec"]["nodeName"].as_str().filter(|n| !n.is_empty());
    let node = match node_name {
        Some(node_name) => Some(
            store
                .get("/nodes", "", node_name)
                .map(|node| (*node).clone())
                .ok_or_else(|| ApiError::not_found("", "nodes", node_name))?,
        ),
        None => None,
    };
    Ok(((*pod).clone(), node))
}

fn kubelet_request(
    location: &KubeletLocation,
    host: &str,
    port: u16,
    stream: PodStream,
    method: &http::Method,
    headers: &HeaderMap,
) -> ApiResult<http::Request<Body>> {
    let authority = if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    };
    let method = if stream.upgrades() {
        method.clone()
    } else {
        http::Method::GET
    };
    let mut request = http::Request::builder()
        .method(method)
        .uri(&location.path_and_query)
        .header(header::HOST, authority);
    if stream.upgrades()
        && let Some(out) = request.headers_mut()
    {
        copy(headers, out, UPGRADE_REQUEST_HEADERS);
    }
    request
        .body(Body::empty())
        .map_err(|err| ApiError::internal(format!("kubelet request: {err}")))
}

/// An HTTP/1.1 connection to the kubelet at `host:port` over TLS with `identity` (the
/// kubelet's serving certificate is not checked, as kube-apiserver does not by default).
pub(crate) async fn connect(
    identity: &KubeletClientIdentity,
    host: &str,
    port: u16,
) -> ApiResult<hyper::client::conn::http1::SendRequest<Body>> {
    let unreachable = |err: String| ApiError::internal(format!("error dialing backend: {err}"));
    let tcp = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect((host, port)))
        .await
        .map_err(|_| unreachable(format!("dial tcp {host}:{port}: i/o timeout")))?
        .map_err(|err| unreachable(format!("dial tcp {host}:{port}: {err}")))?;
    let _ = tcp.set_nodelay(true);
    let server_name = ServerName::try_from(host.to_string()).map_err(|err| unreachable(err.to_string()))?;
    let tls = TlsConnector::from(client_config(Some(identity)).map_err(|err| unreachable(err.to_string()))?)
        .connect(server_name, tcp)
        .await
        .map_err(|err| unreachable(format!("TLS with the kubelet at {host}:{port}: {err}")))?;
    let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .map_err(|err| unreachable(err.to_string()))?;
    tokio::spawn(async move {
        if let Err(err) = connection.with_upgrades().await {
            tracing::debug!(error = %err, "kubelet connection ended");
        }
    });
    Ok(sender)
}

/// Copies bytes both ways between the client's and the kubelet's upgraded connections until
/// one side closes.
async fn splice(caller: OnUpgrade, kubelet: OnUpgrade) {
    match tokio::try_join!(caller, kubelet) {
        Ok((caller, kubelet)) => {
            let (mut caller, mut kubelet) = (TokioIo::new(caller), TokioIo::new(kubelet));
            if let Err(err) = tokio::io::copy_bidirectional(&mut caller, &mut kubelet).await {
                tracing::debug!(error = %err, "kubelet stream ended");
            }
        }
        Err(err) => tracing::debug!(error = %err, "kubelet stream: upgrade failed"),
    }
}

fn copy(from: &HeaderMap, to: &mut HeaderMap, names: &[&'static str]) {
    for name in names {
        let name = HeaderName::from_static(name);
        for value in from.get_all(&name) {
            to.append(name.clone(), value.clone());
        }
    }
}
