//! Kubelet requests passed on to the host API server's pod subresources, streaming.
//!
//! Container logs are a GET whose body streams back as it comes (follow included), with the
//! backpressure of the two connections. Exec, attach and port-forward are upgrades: the caller's
//! upgrade request goes to the host with the protocol headers it offered (SPDY or WebSocket, as
//! a kube-apiserver speaks them), and once the host has switched protocols, so does the caller,
//! and the two connections are spliced byte for byte until either side closes. vcsync never reads
//! the stream protocol, so whatever the two ends agree on works.

use axum::body::Body;
use axum::body::Bytes;
use http::{HeaderMap, HeaderName, Request, Response, StatusCode, header};
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use kube::Client;
use vcsync_translators::{HostKey, kubelet::PodRequest};

/// Request headers an upgrade carries to the host: the protocols offered and their handshake.
const UPGRADE_REQUEST_HEADERS: &[HeaderName] = &[
    header::CONNECTION,
    header::UPGRADE,
    header::SEC_WEBSOCKET_KEY,
    header::SEC_WEBSOCKET_VERSION,
    header::SEC_WEBSOCKET_PROTOCOL,
    header::SEC_WEBSOCKET_EXTENSIONS,
];

/// Response headers a switch of protocols carries back: the protocol chosen and its handshake.
const UPGRADE_RESPONSE_HEADERS: &[HeaderName] = &[
    header::CONNECTION,
    header::UPGRADE,
    header::SEC_WEBSOCKET_ACCEPT,
    header::SEC_WEBSOCKET_PROTOCOL,
    header::SEC_WEBSOCKET_EXTENSIONS,
];

/// The stream protocol versions a caller offers and the host chooses from (SPDY).
const STREAM_PROTOCOL_VERSION: &str = "x-stream-protocol-version";

/// Sends `request` (already translated) to the host and answers with the host's response:
/// logs streamed, an upgrade spliced. `incoming` is the caller's request (its upgrade half, for
/// streams). The host's error messages name the pod by its virtual name.
pub async fn forward(
    host_client: &Client,
    request: &PodRequest,
    host: &HostKey,
    incoming: Request<hyper::body::Incoming>,
) -> Response<Body> {
    let uri = request.host_path_and_query(host);
    let streams = request.verb.streams();
    let (mut parts, _body) = incoming.into_parts();
    let mut outgoing = Request::builder().method(parts.method.clone()).uri(&uri);
    if let Some(headers) = outgoing.headers_mut() {
        let names = if streams { UPGRADE_REQUEST_HEADERS } else { &[] };
        copy_headers(&parts.headers, headers, names);
        if streams {
            copy_all(
                &parts.headers,
                headers,
                &HeaderName::from_static(STREAM_PROTOCOL_VERSION),
            );
        }
    }
    let outgoing = match outgoing.body(kube::client::Body::empty()) {
        Ok(outgoing) => outgoing,
        Err(err) => return plain(StatusCode::BAD_REQUEST, format!("bad request: {err}")),
    };
    let mut response = match host_client.send(outgoing).await {
        Ok(response) => response,
        Err(err) => {
            tracing::warn!(%host, subresource = request.verb.subresource(), error = %err, "host API server unreachable for a kubelet request");
            return plain(StatusCode::BAD_GATEWAY, format!("host API server: {err}"));
        }
    };
    let status = response.status();
    if status == StatusCode::SWITCHING_PROTOCOLS && streams {
        let Some(caller_upgrade) = parts.extensions.remove::<OnUpgrade>() else {
            return plain(
                StatusCode::BAD_REQUEST,
                "an upgrade was answered to a request that offered none".into(),
            );
        };
        let host_upgrade = hyper::upgrade::on(&mut response);
        let mut switching = Response::builder().status(StatusCode::SWITCHING_PROTOCOLS);
        if let Some(headers) = switching.headers_mut() {
            copy_headers(response.headers(), headers, UPGRADE_RESPONSE_HEADERS);
            copy_all(
                response.headers(),
                headers,
                &HeaderName::from_static(STREAM_PROTOCOL_VERSION),
            );
        }
        tokio::spawn(splice(
            caller_upgrade,
            host_upgrade,
            host.clone(),
            request.verb.subresource(),
        ));
        return switching
            .body(Body::empty())
            .unwrap_or_else(|_| plain(StatusCode::INTERNAL_SERVER_ERROR, String::new()));
    }
    if !status.is_success() {
        // An error: a Status object (or text) naming the host pod. A kubelet answers errors in
        // plain text, which the virtual API server passes on; the tenant knows the pod by its
        // virtual name.
        let body = match axum::body::to_bytes(Body::new(response.into_body()), 1 << 20).await {
            Ok(body) => body,
            Err(err) => Bytes::from(format!("reading the host's answer: {err}")),
        };
        return plain(status, error_text(&body).replace(&host.name, &request.pod.name));
    }
    let mut answer = Response::builder().status(status);
    for name in [header::CONTENT_TYPE, header::TRANSFER_ENCODING] {
        if let Some(value) = response.headers().get(&name) {
            answer = answer.header(name, value.clone());
        }
    }
    answer
        .body(Body::new(response.into_body()))
        .unwrap_or_else(|_| plain(StatusCode::INTERNAL_SERVER_ERROR, String::new()))
}

/// The message of an error body: a Status object's `message`, else the text.
fn error_text(body: &[u8]) -> String {
    let status: Option<serde_json::Value> = serde_json::from_slice(body).ok();
    match status.as_ref().and_then(|s| s["message"].as_str()) {
        Some(message) => message.to_string(),
        None => String::from_utf8_lossy(body).trim_end().to_string(),
    }
}

/// Copies bytes both ways between the caller's and the host's upgraded connections until one
/// side closes; then the other is shut down.
async fn splice(caller: OnUpgrade, host: OnUpgrade, pod: HostKey, subresource: &'static str) {
    let (caller, host) = match tokio::try_join!(caller, host) {
        Ok(both) => both,
        Err(err) => {
            tracing::warn!(%pod, subresource, error = %err, "kubelet stream: upgrade failed");
            return;
        }
    };
    let (mut caller, mut host) = (TokioIo::new(caller), TokioIo::new(host));
    tracing::debug!(%pod, subresource, "kubelet stream opened");
    match tokio::io::copy_bidirectional(&mut caller, &mut host).await {
        Ok((up, down)) => {
            tracing::debug!(%pod, subresource, bytes_to_host = up, bytes_from_host = down, "kubelet stream closed")
        }
        Err(err) => tracing::debug!(%pod, subresource, error = %err, "kubelet stream ended"),
    }
}

fn copy_headers(from: &HeaderMap, to: &mut HeaderMap, names: &[HeaderName]) {
    for name in names {
        copy_all(from, to, name);
    }
}

fn copy_all(from: &HeaderMap, to: &mut HeaderMap, name: &HeaderName) {
    for value in from.get_all(name) {
        to.append(name.clone(), value.clone());
    }
}

/// A plain-text answer, as a kubelet gives its errors.
pub fn plain(status: StatusCode, text: String) -> Response<Body> {
    let mut response = Response::new(Body::from(text));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::error_text;

    #[test]
    fn an_error_is_the_message_of_a_status_or_the_text() {
        let status = br#"{"kind":"Status","code":400,"message":"container \"app\" in pod \"web-x-shop\" is waiting to start"}"#;
        assert_eq!(
            error_text(status),
            "container \"app\" in pod \"web-x-shop\" is waiting to start"
        );
        assert_eq!(
            error_text(b"previous terminated container not found\n"),
            "previous terminated container not found"
        );
    }
}
