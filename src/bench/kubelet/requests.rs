//! The timed requests, as kubectl sends them: `logs --tail=1` with kube's client, and `exec --
//! echo hi` over WebSocket.
//!
//! The exec upgrade goes through kube's client (its TLS and credentials) and hyper's upgrade, as
//! vcsync's kubelet API makes its own upgrades (kube's `ws` feature is not in the build);
//! tokio-tungstenite then speaks WebSocket on the upgraded connection.

use http::{Request, StatusCode, header};
use hyper_util::rt::TokioIo;
use kube::api::LogParams;
use tokio_tungstenite::{
    WebSocketStream,
    tungstenite::{
        Message,
        handshake::{client::generate_key, derive_accept_key},
        protocol::{CloseFrame, Role, frame::coding::CloseCode},
    },
};

use anyhow::{Context, bail};
use futures::StreamExt;
use k8s_openapi::{
    api::core::v1::Pod,
    serde_json::{self, Value},
};
use kube::Api;

use super::target::*;

/// Channels of the exec stream protocol.
const STDOUT: u8 = 1;
const STDERR: u8 = 2;
const STATUS: u8 = 3;

/// `logs POD -c app --tail=1`: the text.
pub(super) async fn logs_once(target: &Target) -> anyhow::Result<String> {
    let params = LogParams {
        container: Some(CONTAINER.into()),
        tail_lines: Some(1),
        ..LogParams::default()
    };
    Api::<Pod>::namespaced(target.client.clone(), &target.namespace)
        .logs(&target.pod, &params)
        .await
        .with_context(|| format!("logs {}", target.label))
}

/// `exec POD -c app -- echo hi` over WebSocket, as kubectl 1.37 sends it: the output must be
/// `hi` and the status Success.
pub(super) async fn exec_once(target: &Target) -> anyhow::Result<()> {
    exec_echo(target)
        .await
        .with_context(|| format!("exec {}", target.label))
}

async fn exec_echo(target: &Target) -> anyhow::Result<()> {
    let mut ws = exec_upgrade(target).await?;
    let (mut stdout, mut stderr) = (Vec::new(), Vec::new());
    // Pings are answered by tungstenite as the stream is read; a fragmented message comes
    // whole.
    let status = loop {
        let data = match ws.next().await.transpose()? {
            None | Some(Message::Close(_)) => break None,
            Some(Message::Binary(data)) => data,
            Some(Message::Text(text)) => text.into(),
            Some(_) => continue,
        };
        match data.split_first() {
            Some((&STDOUT, data)) => stdout.extend_from_slice(data),
            Some((&STDERR, data)) => stderr.extend_from_slice(data),
            Some((&STATUS, data)) if !data.is_empty() => break Some(data.to_vec()),
            _ => {}
        }
    };
    // Close (1000, normal) and leave: the command is over.
    let _ = ws
        .close(Some(CloseFrame {
            code: CloseCode::Normal,
            reason: "".into(),
        }))
        .await;
    let status: Value = match &status {
        Some(status) => serde_json::from_slice(status).context("the exec status")?,
        None => bail!("the stream closed without a status"),
    };
    if status["status"] != "Success" || stdout != b"hi\n" {
        bail!(
            "status {status}, stdout {:?}, stderr {:?}",
            String::from_utf8_lossy(&stdout),
            String::from_utf8_lossy(&stderr)
        );
    }
    Ok(())
}

/// The exec request's WebSocket upgrade offering `v5.channel.k8s.io` (and v4), through the
/// target's client; the server's accept key is checked.
async fn exec_upgrade(target: &Target) -> anyhow::Result<WebSocketStream<TokioIo<hyper::upgrade::Upgraded>>> {
    let path = format!(
        "/api/v1/namespaces/{}/pods/{}/exec?container={CONTAINER}&command=echo&command=hi&stdout=true&stderr=true",
        target.namespace, target.pod
    );
    let key = generate_key();
    let request = Request::get(path)
        .header(header::CONNECTION, "Upgrade")
        .header(header::UPGRADE, "websocket")
        .header(header::SEC_WEBSOCKET_VERSION, "13")
        .header(header::SEC_WEBSOCKET_KEY, &key)
        .header(
            header::SEC_WEBSOCKET_PROTOCOL,
            "v5.channel.k8s.io, v4.channel.k8s.io",
        )
        .body(kube::client::Body::empty())?;
    let mut response = target.client.send(request).await?;
    if response.status() != StatusCode::SWITCHING_PROTOCOLS {
        let status = response.status();
        let body = axum::body::to_bytes(axum::body::Body::new(response.into_body()), 1 << 16)
            .await
            .unwrap_or_default();
        bail!("{status}: {}", String::from_utf8_lossy(&body).trim_end());
    }
    let accept = response.headers().get(header::SEC_WEBSOCKET_ACCEPT);
    if accept.map(|a| a.as_bytes()) != Some(derive_accept_key(key.as_bytes()).as_bytes()) {
        bail!("the upgrade's {} is {accept:?}", header::SEC_WEBSOCKET_ACCEPT);
    }
    let io = TokioIo::new(hyper::upgrade::on(&mut response).await?);
    Ok(WebSocketStream::from_raw_socket(io, Role::Client, None).await)
}
