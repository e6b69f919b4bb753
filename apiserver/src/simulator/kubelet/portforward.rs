//! Port forwarding (`portforward.k8s.io`) over SPDY/3.1, directly or tunnelled through a
//! WebSocket (`SPDY/3.1+portforward.k8s.io`: the same SPDY bytes in binary messages). For each
//! forwarded connection the client opens an `error` and a `data` stream with the same `port` and
//! `requestID` headers; every port of a simulated pod is an echo server: the data stream's bytes
//! come back until the client half-closes it, then both streams end.

use std::collections::HashMap;
use std::time::Duration;

use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, DuplexStream};
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

use super::Task;
use super::spdy::{Connection, Stream, frame};

/// How long the second stream of a pair may take, as a kubelet waits.
const STREAM_CREATION_TIMEOUT: Duration = Duration::from_secs(30);

/// What a stream of a port-forwarding connection is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct StreamKind {
    pub(crate) port: u16,
    pub(crate) data: bool,
}

/// Checks a new stream's headers as a kubelet does before replying (the error is why it is
/// reset instead).
pub(crate) fn stream_kind(stream_type: Option<&str>, port: Option<&str>) -> Result<StreamKind, String> {
    let port = port
        .filter(|p| !p.is_empty())
        .ok_or("\"port\" header is required")?;
    let port: u16 = port
        .parse()
        .map_err(|_| format!("unable to parse {port:?} as a port"))?;
    if port < 1 {
        return Err(format!("port \"{port}\" must be > 0"));
    }
    match stream_type {
        None | Some("") => Err("\"streamType\" header is required".to_string()),
        Some("data") => Ok(StreamKind { port, data: true }),
        Some("error") => Ok(StreamKind { port, data: false }),
        Some(other) => Err(format!("invalid stream type {other:?}")),
    }
}

/// The request a stream belongs to: its `requestID`, or for old clients one derived from the
/// stream ids (an error stream's id; a data stream's id less 2).
pub(crate) fn request_id(header: Option<&str>, stream_id: u32, data: bool) -> String {
    match header.filter(|h| !h.is_empty()) {
        Some(id) => id.to_string(),
        None if data => stream_id.saturating_sub(2).to_string(),
        None => stream_id.to_string(),
    }
}

/// The streams of one request so far.
#[derive(Default)]
struct Pair {
    serial: u64,
    error: Option<Stream>,
    data: Option<(Stream, u16)>,
}

impl Pair {
    /// Writes `message` on the error stream, if it has come.
    async fn print_error(&self, message: String) {
        if let Some(error) = &self.error {
            let _ = error.writer().write(Bytes::from(message)).await;
        }
    }
}

/// Serves one port-forwarding connection until the client goes away.
pub(crate) async fn serve(mut connection: Connection, pod: String) {
    let mut pairs: HashMap<String, Pair> = HashMap::new();
    let (expired_tx, mut expired) = mpsc::unbounded_channel::<(String, u64)>();
    let mut timers = JoinSet::new();
    let mut echoes = JoinSet::new();
    let mut serial = 0;
    loop {
        tokio::select! {
            stream = connection.accept() => {
                let Some(stream) = stream else { break };
                let kind = match stream_kind(stream.header("streamtype"), stream.header("port")) {
                    Ok(kind) => kind,
                    Err(reason) => {
                        tracing::debug!(%reason, "simulated kubelet: port-forward stream refused");
                        let _ = stream.writer().reset(frame::CANCEL).await;
                        continue;
                    }
                };
                if stream.reply().await.is_err() {
                    break;
                }
                let id = request_id(stream.header("requestid"), stream.id, kind.data);
                let pair = pairs.entry(id.clone()).or_insert_with(|| {
                    serial += 1;
                    let (expired, id, serial) = (expired_tx.clone(), id.clone(), serial);
                    timers.spawn(async move {
                        tokio::time::sleep(STREAM_CREATION_TIMEOUT).await;
                        let _ = expired.send((id, serial));
                    });
                    Pair { serial, ..Pair::default() }
                });
                let duplicate = match kind.data {
                    true if pair.data.is_some() => Some("data stream already assigned"),
                    false if pair.error.is_some() => Some("error stream already assigned"),
                    true => {
                        pair.data = Some((stream, kind.port));
                        None
                    }
                    false => {
                        pair.error = Some(stream);
                        None
                    }
                };
                if let Some(problem) = duplicate {
                    pair.print_error(format!("error processing stream for request {id}: {problem}")).await;
                    continue;
                }
                if pair.error.is_some() && pair.data.is_some() {
                    let pair = pairs.remove(&id).expect("the pair just completed");
                    let (Some(error), Some((data, port))) = (pair.error, pair.data) else { continue };
                    echoes.spawn(echo(data, error, port, pod.clone()));
                }
            }
            Some((id, serial)) = expired.recv() => {
                if pairs.get(&id).is_some_and(|p| p.serial == serial) {
                    let pair = pairs.remove(&id).expect("an incomplete pair");
                    pair.print_error(format!("timed out waiting for streams of request {id}")).await;
                }
            }
            Some(_) = echoes.join_next(), if !echoes.is_empty() => {}
            Some(_) = timers.join_next(), if !timers.is_empty() => {}
        }
    }
    drop(echoes);
    connection.shutdown().await;
}

/// Echoes the data stream until the client half-closes it, then ends both streams.
async fn echo(mut data: Stream, error: Stream, port: u16, pod: String) {
    let writer = data.writer();
    let mut echoed = 0;
    while let Some(chunk) = data.read().await {
        echoed += chunk.len();
        if writer.write(chunk).await.is_err() {
            break;
        }
    }
    tracing::debug!(%pod, port, echoed, "simulated kubelet: port forward ended");
    let _ = error.writer().finish().await;
    let _ = writer.finish().await;
}

/// The byte stream a `SPDY/3.1+portforward.k8s.io` WebSocket carries, and the task that
/// carries it (it ends with a normal close once the returned end is shut down, or when the
/// client closes).
pub(crate) fn tunnel<S>(ws: WebSocketStream<S>) -> (DuplexStream, Task)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (near, far) = tokio::io::duplex(64 << 10);
    let (mut sink, mut source) = ws.split();
    let (mut from_spdy, mut to_spdy) = tokio::io::split(far);
    let task = Task::spawn(async move {
        let inbound = async move {
            while let Some(Ok(message)) = source.next().await {
                let bytes = match message {
                    Message::Binary(bytes) => bytes,
                    Message::Close(_) => break,
                    _ => continue,
                };
                if to_spdy.write_all(&bytes).await.is_err() {
                    break;
                }
            }
            let _ = to_spdy.shutdown().await;
        };
        let outbound = async move {
            let mut buffer = vec![0; 32 << 10];
            loop {
                match from_spdy.read(&mut buffer).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        if sink.send(Message::binary(buffer[..n].to_vec())).await.is_err() {
                            return;
                        }
                    }
                }
            }
            let close = CloseFrame {
                code: CloseCode::Normal,
                reason: "".into(),
            };
            let _ = sink.send(Message::Close(Some(close))).await;
        };
        tokio::join!(inbound, outbound);
    });
    (near, task)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn streams_are_checked_as_a_kubelet_does() {
        assert_eq!(
            stream_kind(Some("data"), Some("8080")),
            Ok(StreamKind {
                port: 8080,
                data: true
            })
        );
        assert_eq!(
            stream_kind(Some("error"), Some("1")),
            Ok(StreamKind { port: 1, data: false })
        );
        assert_eq!(
            stream_kind(Some("data"), None),
            Err("\"port\" header is required".into())
        );
        assert_eq!(
            stream_kind(Some("data"), Some("0")),
            Err("port \"0\" must be > 0".into())
        );
        assert_eq!(
            stream_kind(Some("data"), Some("70000")),
            Err("unable to parse \"70000\" as a port".into())
        );
        assert_eq!(
            stream_kind(None, Some("80")),
            Err("\"streamType\" header is required".into())
        );
        assert_eq!(
            stream_kind(Some("stdin"), Some("80")),
            Err("invalid stream type \"stdin\"".into())
        );
    }

    #[test]
    fn request_ids_come_from_the_header_or_the_stream_ids() {
        assert_eq!(request_id(Some("7"), 99, true), "7");
        assert_eq!(request_id(None, 1, false), "1");
        assert_eq!(request_id(Some(""), 3, true), "1");
    }
}
