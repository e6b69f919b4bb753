//! Port forwarding over a WebSocket with a channel subprotocol (`v4.channel.k8s.io`,
//! `v4.base64.channel.k8s.io`), as a kubelet serves it to kube-rs and older kubectl: the ports
//! come in the request's `port` query (comma-separated); port i has data channel 2i and error
//! channel 2i+1, and the server's first message on each is the port, two bytes little-endian.
//!
//! A port of a simulated pod echoes, unless the pod's annotation
//! `simulator.vcsync.dev/forward-<port>` names a loopback `host:port` to connect to instead: a
//! test's stand-in for the process the pod would run (an API server, say).

use std::collections::HashMap;
use std::net::SocketAddr;

use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use serde_json::Value;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::tcp::OwnedWriteHalf;
use tokio::sync::mpsc;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

use super::websocket::{Channels, Inbound};

/// The annotation prefix that points a simulated pod's port at a loopback address.
pub const FORWARD_ANNOTATION_PREFIX: &str = "simulator.vcsync.dev/forward-";

/// The ports of a request's query (`port=80,443`, or the parameter repeated), as a kubelet
/// reads them.
pub(crate) fn ports(query: &[(String, String)]) -> Result<Vec<u16>, String> {
    let mut ports = Vec::new();
    for (_, value) in query.iter().filter(|(k, _)| k == "port") {
        for port in value.split(',').filter(|p| !p.is_empty()) {
            match port.parse::<u16>() {
                Ok(p) if p > 0 => ports.push(p),
                _ => return Err(format!("unable to parse {port:?} as a port")),
            }
        }
    }
    if ports.is_empty() {
        return Err("query parameter \"port\" is required".into());
    }
    Ok(ports)
}

/// Where `pod`'s `port` is served: the loopback address its annotation names, or None (echo).
pub(crate) fn target(pod: Option<&Value>, port: u16) -> Option<SocketAddr> {
    let address = pod?["metadata"]["annotations"][format!("{FORWARD_ANNOTATION_PREFIX}{port}")].as_str()?;
    address.parse().ok().filter(|a: &SocketAddr| a.ip().is_loopback())
}

/// Serves one port-forwarding WebSocket until the client or a forwarded connection closes it.
pub(crate) async fn serve<S>(
    ws: WebSocketStream<S>,
    protocol: Option<String>,
    ports: Vec<(u16, Option<SocketAddr>)>,
    pod: String,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let channels = Channels::for_protocol(protocol.as_deref());
    let (mut sink, mut source) = ws.split();
    // What the ports send back, in order: (data channel, bytes); empty bytes: the port closed.
    let (back, mut from_ports) = mpsc::channel::<(u8, Bytes)>(64);
    let mut writers: HashMap<u8, Option<OwnedWriteHalf>> = HashMap::new();
    for (i, (port, target)) in ports.iter().enumerate() {
        let data = (2 * i) as u8;
        for channel in [data, data + 1] {
            if sink
                .send(channels.encode(channel, &port.to_le_bytes()))
                .await
                .is_err()
            {
                return;
            }
        }
        let Some(address) = target else {
            writers.insert(data, None);
            continue;
        };
        match tokio::net::TcpStream::connect(address).await {
            Ok(stream) => {
                let (mut reader, writer) = stream.into_split();
                writers.insert(data, Some(writer));
                let back = back.clone();
                tokio::spawn(async move {
                    let mut buffer = vec![0; 32 << 10];
                    loop {
                        match reader.read(&mut buffer).await {
                            Ok(0) | Err(_) => break,
                            Ok(n) => {
                                if back
                                    .send((data, Bytes::copy_from_slice(&buffer[..n])))
                                    .await
                                    .is_err()
                                {
                                    return;
                                }
                            }
                        }
                    }
                    let _ = back.send((data, Bytes::new())).await;
                });
            }
            Err(err) => {
                let message = format!("error forwarding port {port} to pod {pod}: {err}");
                let _ = sink.send(channels.encode(data + 1, message.as_bytes())).await;
            }
        }
    }
    drop(back);
    loop {
        tokio::select! {
            message = source.next() => {
                let Some(Ok(message)) = message else { break };
                match channels.decode(message) {
                    Inbound::Data(channel, bytes) if channel % 2 == 0 => {
                        let written = match writers.get_mut(&channel) {
                            Some(Some(writer)) => writer.write_all(&bytes).await.is_ok(),
                            // An echoing port.
                            Some(None) => sink.send(channels.encode(channel, &bytes)).await.is_ok(),
                            None => true,
                        };
                        if !written {
                            break;
                        }
                    }
                    Inbound::End => break,
                    _ => {}
                }
            }
            Some((channel, bytes)) = from_ports.recv() => {
                // A forwarded connection closed: v4 has no way to say so but closing.
                if bytes.is_empty() {
                    break;
                }
                if sink.send(channels.encode(channel, &bytes)).await.is_err() {
                    break;
                }
            }
        }
    }
    tracing::debug!(%pod, "simulated kubelet: WebSocket port forward ended");
    let close = CloseFrame {
        code: CloseCode::Normal,
        reason: "".into(),
    };
    let _ = sink.send(Message::Close(Some(close))).await;
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn query(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn ports_are_read_as_a_kubelet_reads_them() {
        assert_eq!(ports(&query(&[("port", "80,443")])), Ok(vec![80, 443]));
        assert_eq!(ports(&query(&[("port", "80"), ("port", "81")])), Ok(vec![80, 81]));
        assert!(ports(&query(&[])).is_err());
        assert!(ports(&query(&[("port", "0")])).is_err());
        assert!(ports(&query(&[("port", "http")])).is_err());
    }

    #[test]
    fn only_a_loopback_address_a_pod_names_is_a_target() {
        let pod = json!({"metadata": {"annotations": {
            "simulator.vcsync.dev/forward-6443": "127.0.0.1:4000",
            "simulator.vcsync.dev/forward-80": "10.0.0.1:80"}}});
        assert_eq!(target(Some(&pod), 6443), Some("127.0.0.1:4000".parse().unwrap()));
        assert_eq!(target(Some(&pod), 80), None, "not loopback");
        assert_eq!(target(Some(&pod), 443), None);
        assert_eq!(target(None, 6443), None);
    }
}
