//! Each endpoint and protocol on a real socket, with Rust clients: HTTPS requests, WebSocket
//! channels (tokio-tungstenite) and SPDY (this module's own frame codec on the client side).

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use bytes::BytesMut;
use futures::{SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;
use tokio_rustls::rustls::pki_types::ServerName;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

use super::Fixture;

pub(super) const NODE: (&str, Ipv4Addr) = ("sim-node-0", Ipv4Addr::new(127, 0, 1, 1));

/// A TLS connection to the fixture's first kubelet, with the server's client certificate (or
/// none).
pub(super) async fn connect(
    fixture: &Fixture,
    with_certificate: bool,
) -> std::io::Result<TlsStream<TcpStream>> {
    let identity = fixture.client_identity();
    let config = crate::kubelet::client_tls::client_config(with_certificate.then_some(&identity)).unwrap();
    let tcp = TcpStream::connect((NODE.1, fixture.ports[0])).await?;
    let name = ServerName::IpAddress(NODE.1.into());
    let mut tls = TlsConnector::from(config).connect(name, tcp).await?;
    // TLS 1.3 reports a refused client certificate only on the first read.
    tls.write_all(b"").await?;
    Ok(tls)
}

/// Sends a raw HTTP/1.1 request; returns the response head and the stream after it.
pub(super) async fn request<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> (u16, Vec<(String, String)>, BytesMut) {
    let mut text = format!("{method} {path} HTTP/1.1\r\nhost: kubelet\r\n");
    for (name, value) in headers {
        text.push_str(&format!("{name}: {value}\r\n"));
    }
    text.push_str("\r\n");
    stream.write_all(text.as_bytes()).await.unwrap();
    let mut buffer = BytesMut::new();
    let end = loop {
        if let Some(end) = buffer.windows(4).position(|w| w == b"\r\n\r\n") {
            break end;
        }
        assert!(
            stream.read_buf(&mut buffer).await.unwrap() > 0,
            "the response ended early"
        );
    };
    let head = String::from_utf8(buffer.split_to(end + 4).to_vec()).unwrap();
    let mut lines = head.lines();
    let status = lines.next().unwrap().split(' ').nth(1).unwrap().parse().unwrap();
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    (status, headers, buffer)
}

/// A GET's status and whole body (connection closed after it).
pub(super) async fn get(fixture: &Fixture, path: &str) -> (u16, String) {
    let mut tls = connect(fixture, true).await.unwrap();
    let (status, headers, mut rest) = request(&mut tls, "GET", path, &[("connection", "close")]).await;
    while tls.read_buf(&mut rest).await.unwrap_or(0) > 0 {}
    let chunked = headers
        .iter()
        .any(|(n, v)| n == "transfer-encoding" && v == "chunked");
    let body = if chunked { dechunk(&rest) } else { rest.to_vec() };
    (status, String::from_utf8(body).unwrap())
}

fn dechunk(mut bytes: &[u8]) -> Vec<u8> {
    let mut body = Vec::new();
    loop {
        let line_end = bytes.windows(2).position(|w| w == b"\r\n").unwrap();
        let size = usize::from_str_radix(std::str::from_utf8(&bytes[..line_end]).unwrap(), 16).unwrap();
        if size == 0 {
            return body;
        }
        body.extend_from_slice(&bytes[line_end + 2..line_end + 2 + size]);
        bytes = &bytes[line_end + 4 + size..];
    }
}

#[tokio::test]
async fn health_logs_and_refusals() {
    let fixture = Fixture::start(&[NODE], None).await;
    fixture.add_pod("default", "web", NODE.0, &["app", "sidecar"]);
    fixture.add_pod("default", "elsewhere", "sim-node-9", &["app"]);
    assert_eq!(get(&fixture, "/healthz").await, (200, "ok".into()));
    let (status, body) = get(&fixture, "/containerLogs/default/web/sidecar?tailLines=2").await;
    assert_eq!(
        (status, body.as_str()),
        (
            200,
            "line 9 of default/web/sidecar\nline 10 of default/web/sidecar\n"
        )
    );
    assert_eq!(
        get(&fixture, "/containerLogs/default/elsewhere/app").await,
        (404, "pod \"elsewhere\" does not exist".into())
    );
    assert_eq!(
        get(&fixture, "/containerLogs/default/web/db").await,
        (404, "container \"db\" not found in pod \"web\"".into())
    );
    assert_eq!(
        get(&fixture, "/containerLogs/default/web/app?previous=true").await,
        (
            400,
            "previous terminated container \"app\" in pod \"web\" not found".into()
        )
    );
    assert_eq!(
        get(&fixture, "/exec/default/web/app?output=1").await,
        (400, "no command given".into())
    );
    assert_eq!(
        get(&fixture, "/exec/default/nope/app?output=1&command=ls").await,
        (404, "pod does not exist".into())
    );
    assert_eq!(
        get(&fixture, "/portForward/default/web/not-the-uid").await,
        (404, "pod not found".into())
    );
    assert_eq!(
        get(&fixture, "/exec/default/web/app?output=1&command=ls").await.0,
        400,
        "not an upgrade request"
    );
    assert_eq!(get(&fixture, "/pods").await.0, 404);
    // No client certificate, no kubelet.
    let refused = async {
        let mut tls = connect(&fixture, false).await?;
        tls.write_all(b"GET /healthz HTTP/1.1\r\nhost: k\r\n\r\n").await?;
        let mut byte = [0u8; 1];
        tls.read_exact(&mut byte).await?;
        Ok::<_, std::io::Error>(())
    };
    assert!(refused.await.is_err());
    fixture.stop().await;
}

/// A WebSocket to `path` offering `protocols`.
pub(super) async fn websocket(
    fixture: &Fixture,
    path: &str,
    protocols: &str,
) -> (WebSocketStream<TlsStream<TcpStream>>, Option<String>) {
    let tls = connect(fixture, true).await.unwrap();
    let mut request = format!("wss://{}:{}{path}", NODE.1, fixture.ports[0])
        .into_client_request()
        .unwrap();
    if !protocols.is_empty() {
        request
            .headers_mut()
            .insert("sec-websocket-protocol", protocols.parse().unwrap());
    }
    let (ws, response) = tokio_tungstenite::client_async(request, tls).await.unwrap();
    let protocol = response
        .headers()
        .get("sec-websocket-protocol")
        .map(|p| p.to_str().unwrap().to_string());
    (ws, protocol)
}

/// Reads channel messages until the server closes: what each channel got.
async fn channels(ws: &mut WebSocketStream<TlsStream<TcpStream>>, base64: bool) -> BTreeMap<u8, Vec<u8>> {
    let mut got: BTreeMap<u8, Vec<u8>> = BTreeMap::new();
    while let Some(Ok(message)) = ws.next().await {
        let (channel, data) = match message {
            Message::Binary(bytes) => (bytes[0], bytes[1..].to_vec()),
            Message::Text(text) if base64 => (
                text.as_bytes()[0] - b'0',
                STANDARD.decode(&text.as_str()[1..]).unwrap(),
            ),
            Message::Close(frame) => {
                assert_eq!(frame.unwrap().code, CloseCode::Normal);
                break;
            }
            other => panic!("unexpected {other:?}"),
        };
        got.entry(channel).or_default().extend_from_slice(&data);
    }
    got
}

fn text(got: &BTreeMap<u8, Vec<u8>>, channel: u8) -> String {
    String::from_utf8(got.get(&channel).cloned().unwrap_or_default()).unwrap()
}

#[tokio::test]
async fn exec_and_attach_over_websocket_channels() {
    let fixture = Fixture::start(&[NODE], None).await;
    fixture.add_pod("default", "web", NODE.0, &["app"]);

    // v5: stdin ends with the close signal; cat returns it; the status is JSON.
    let path = "/exec/default/web/app?command=cat&input=1&output=1&error=1";
    let (mut ws, protocol) = websocket(&fixture, path, "v5.channel.k8s.io, v4.channel.k8s.io").await;
    assert_eq!(protocol.as_deref(), Some("v5.channel.k8s.io"));
    ws.send(Message::binary(b"\x00hello ".to_vec())).await.unwrap();
    ws.send(Message::binary(b"\x00world".to_vec())).await.unwrap();
    ws.send(Message::binary(vec![255, 0])).await.unwrap();
    let got = channels(&mut ws, false).await;
    assert_eq!(text(&got, 1), "hello world");
    assert_eq!(text(&got, 3), r#"{"status":"Success"}"#);

    // v4: exit codes and stderr.
    let path = "/exec/default/web/app?command=sh&command=-c&command=nope%3B%20exit%203&output=1&error=1";
    let (mut ws, protocol) = websocket(&fixture, path, "v4.channel.k8s.io").await;
    assert_eq!(protocol.as_deref(), Some("v4.channel.k8s.io"));
    let got = channels(&mut ws, false).await;
    assert_eq!(text(&got, 2), "nope: not found\n");
    let status: serde_json::Value = serde_json::from_slice(&got[&3]).unwrap();
    assert_eq!(status["reason"], "NonZeroExitCode");
    assert_eq!(
        status["details"]["causes"][0],
        serde_json::json!({"reason": "ExitCode", "message": "3"})
    );

    // No subprotocol (channel.k8s.io): a failure's message only.
    let (mut ws, protocol) = websocket(&fixture, "/exec/default/web/app?command=false&output=1", "").await;
    assert_eq!(protocol, None);
    let got = channels(&mut ws, false).await;
    assert_eq!(
        text(&got, 3),
        "command terminated with non-zero exit code: command exited with code 1"
    );

    // base64: text messages.
    let path = "/exec/default/web/app?command=hostname&output=1";
    let (mut ws, _) = websocket(&fixture, path, "v4.base64.channel.k8s.io").await;
    let got = channels(&mut ws, true).await;
    assert_eq!(text(&got, 1), "web\n");

    // attach with a terminal: stdin echoed, LF as CR LF; resizes are read (and logged).
    let path = "/attach/default/web/app?input=1&output=1&tty=1";
    let (mut ws, _) = websocket(&fixture, path, "v5.channel.k8s.io").await;
    ws.send(Message::binary(b"\x04{\"Width\":80,\"Height\":24}".to_vec()))
        .await
        .unwrap();
    ws.send(Message::binary(b"\x00a\nb".to_vec())).await.unwrap();
    ws.send(Message::binary(vec![255, 0])).await.unwrap();
    let got = channels(&mut ws, false).await;
    assert_eq!(text(&got, 1), "a\r\nb");
    assert_eq!(text(&got, 3), r#"{"status":"Success"}"#);
    fixture.stop().await;
}
