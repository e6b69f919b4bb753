//! SPDY exec and port forwarding, directly and through the WebSocket tunnel, with a client made
//! of the module's own frame codec.

use std::collections::BTreeMap;

use bytes::{Bytes, BytesMut};
use futures::{SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_tungstenite::tungstenite::Message;

use super::Fixture;
use super::protocols::{NODE, connect, request, websocket};
use crate::simulator::kubelet::spdy::frame::{Decoder, Encoder, Frame};

/// A SPDY client on `io`.
struct Client<S> {
    io: S,
    encoder: Encoder,
    decoder: Decoder,
    buffer: BytesMut,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Client<S> {
    fn new(io: S, buffer: BytesMut) -> Self {
        Client {
            io,
            encoder: Encoder::new(),
            decoder: Decoder::new(),
            buffer,
        }
    }

    async fn send(&mut self, frame: Frame) {
        let mut bytes = Vec::new();
        self.encoder.encode(&frame, &mut bytes);
        self.io.write_all(&bytes).await.unwrap();
    }

    async fn open(&mut self, id: u32, headers: &[(&str, &str)]) {
        let headers = headers
            .iter()
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect();
        self.send(Frame::SynStream {
            stream_id: id,
            associated_to: 0,
            priority: 0,
            fin: false,
            unidirectional: false,
            headers,
        })
        .await;
    }

    async fn data(&mut self, id: u32, data: &[u8], fin: bool) {
        let data = Bytes::copy_from_slice(data);
        self.send(Frame::Data {
            stream_id: id,
            fin,
            data,
        })
        .await;
    }

    /// The next frame; `None` at the end of the connection.
    async fn next(&mut self) -> Option<Frame> {
        loop {
            if let Some(frame) = self.decoder.decode(&mut self.buffer).unwrap() {
                return Some(frame);
            }
            if self.io.read_buf(&mut self.buffer).await.unwrap_or(0) == 0 {
                return None;
            }
        }
    }

    /// Frames until the end: each stream's data, the ids that got FIN, replies, resets and
    /// whether GOAWAY came.
    async fn rest(&mut self) -> Seen {
        let mut seen = Seen::default();
        while let Some(frame) = self.next().await {
            match frame {
                Frame::Data { stream_id, fin, data } => {
                    seen.data.entry(stream_id).or_default().extend_from_slice(&data);
                    if fin {
                        seen.fin.push(stream_id);
                    }
                }
                Frame::SynReply { stream_id, .. } => seen.replied.push(stream_id),
                Frame::RstStream { stream_id, .. } => seen.reset.push(stream_id),
                Frame::GoAway { .. } => seen.goaway = true,
                Frame::Ping { id } => seen.pings.push(id),
                _ => {}
            }
        }
        seen
    }
}

#[derive(Default, Debug)]
struct Seen {
    data: BTreeMap<u32, Vec<u8>>,
    fin: Vec<u32>,
    replied: Vec<u32>,
    reset: Vec<u32>,
    pings: Vec<u32>,
    goaway: bool,
}

impl Seen {
    fn text(&self, id: u32) -> String {
        String::from_utf8(self.data.get(&id).cloned().unwrap_or_default()).unwrap()
    }
}

/// A SPDY connection to `path` upgraded with `version`.
async fn upgrade(fixture: &Fixture, path: &str, version: &str) -> Client<TlsStream<TcpStream>> {
    let mut tls = connect(fixture, true).await.unwrap();
    let headers = [
        ("connection", "Upgrade"),
        ("upgrade", "SPDY/3.1"),
        ("x-stream-protocol-version", version),
    ];
    let (status, headers, rest) = request(&mut tls, "POST", path, &headers).await;
    assert_eq!(status, 101, "{headers:?}");
    assert!(headers.contains(&("x-stream-protocol-version".to_string(), version.to_string())));
    Client::new(tls, rest)
}

#[tokio::test]
async fn exec_over_spdy() {
    let fixture = Fixture::start(&[NODE], None).await;
    fixture.add_pod("default", "web", NODE.0, &["app"]);
    let path = "/exec/default/web/app?command=sh&command=-c&command=cat%3B%20nope&input=1&output=1&error=1";
    let mut client = upgrade(&fixture, path, "v4.channel.k8s.io").await;
    for (id, kind) in [(1, "error"), (3, "stdin"), (5, "stdout"), (7, "stderr")] {
        client.open(id, &[("streamType", kind)]).await;
    }
    client.send(Frame::Ping { id: 1 }).await;
    client.data(3, b"piped ", false).await;
    client.data(3, b"in", true).await;
    let seen = client.rest().await;
    assert_eq!(seen.replied, [1, 3, 5, 7]);
    assert_eq!(seen.pings, [1]);
    assert_eq!(seen.text(5), "piped in");
    assert_eq!(seen.text(7), "nope: not found\n");
    let status: serde_json::Value = serde_json::from_slice(&seen.data[&1]).unwrap();
    assert_eq!(status["details"]["causes"][0]["message"], "127");
    for id in [1, 5, 7] {
        assert!(seen.fin.contains(&id), "FIN on {id}: {seen:?}");
    }
    assert!(seen.reset.contains(&3));
    assert!(seen.goaway);

    // Older versions: no resize stream, the failure's text as status.
    let mut client = upgrade(
        &fixture,
        "/exec/default/web/app?command=false&output=1&tty=1",
        "v2.channel.k8s.io",
    )
    .await;
    client.open(1, &[("streamType", "error")]).await;
    client.open(3, &[("streamType", "stdout")]).await;
    let seen = client.rest().await;
    assert_eq!(
        seen.text(1),
        "command terminated with non-zero exit code: command exited with code 1"
    );
    fixture.stop().await;
}

/// One forwarded connection on `client` (an echo of `payload`), and a refused stream.
async fn forward<S: AsyncRead + AsyncWrite + Unpin>(client: &mut Client<S>, payload: &[u8]) {
    client
        .open(
            1,
            &[("streamType", "error"), ("port", "8080"), ("requestID", "0")],
        )
        .await;
    client.data(1, b"", true).await;
    client
        .open(3, &[("streamType", "data"), ("port", "8080"), ("requestID", "0")])
        .await;
    client.open(5, &[("streamType", "data")]).await;
    for chunk in payload.chunks(10_000) {
        client.data(3, chunk, false).await;
    }
    client.data(3, b"", true).await;
    let mut seen = Seen::default();
    while !(seen.fin.contains(&1) && seen.fin.contains(&3)) {
        match client.next().await.expect("the connection stays") {
            Frame::Data { stream_id, fin, data } => {
                seen.data.entry(stream_id).or_default().extend_from_slice(&data);
                if fin {
                    seen.fin.push(stream_id);
                }
            }
            Frame::SynReply { stream_id, .. } => seen.replied.push(stream_id),
            Frame::RstStream { stream_id, .. } => seen.reset.push(stream_id),
            _ => {}
        }
    }
    assert_eq!(seen.replied, [1, 3]);
    assert_eq!(seen.reset, [5], "no port: refused");
    assert!(seen.data[&3] == payload, "{} bytes echoed", seen.data[&3].len());
    assert_eq!(seen.text(1), "", "no error");
}

#[tokio::test]
async fn port_forward_over_spdy_and_the_websocket_tunnel() {
    let fixture = Fixture::start(&[NODE], None).await;
    fixture.add_pod("default", "web", NODE.0, &["app"]);
    let payload: Vec<u8> = (0..100_000).map(|i| (i % 253) as u8).collect();

    let mut client = upgrade(&fixture, "/portForward/default/web", "portforward.k8s.io").await;
    forward(&mut client, &payload).await;
    client
        .send(Frame::GoAway {
            last_good_stream_id: 0,
            status: 0,
        })
        .await;
    assert!(client.rest().await.goaway, "the server goes away too");

    let (ws, protocol) = websocket(
        &fixture,
        "/portForward/default/web",
        "SPDY/3.1+portforward.k8s.io",
    )
    .await;
    assert_eq!(protocol.as_deref(), Some("SPDY/3.1+portforward.k8s.io"));
    let (near, far) = tokio::io::duplex(1 << 16);
    let carrier = tokio::spawn(async move {
        let (mut sink, mut source) = ws.split();
        let (mut read, mut write) = tokio::io::split(far);
        let up = async move {
            let mut buffer = vec![0; 8192];
            while let Ok(n @ 1..) = read.read(&mut buffer).await {
                sink.send(Message::binary(buffer[..n].to_vec())).await.unwrap();
            }
        };
        let down = async move {
            while let Some(Ok(Message::Binary(bytes))) = source.next().await {
                write.write_all(&bytes).await.unwrap();
            }
        };
        tokio::select! { _ = up => {}, _ = down => {} }
    });
    let mut client = Client::new(near, BytesMut::new());
    forward(&mut client, &payload).await;
    drop(client);
    carrier.await.unwrap();
    fixture.stop().await;
}
