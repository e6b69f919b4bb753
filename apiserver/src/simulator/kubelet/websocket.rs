//! Exec and attach over a WebSocket with Kubernetes' channel subprotocols: each message is one
//! channel's bytes behind a channel byte (0 stdin, 1 stdout, 2 stderr, 3 error/status,
//! 4 resize). `v5.channel.k8s.io` adds `[255, N]`, the client closing its channel N (stdin's
//! end); `v4` and later put a JSON status on channel 3, earlier versions the failure's text
//! only; the `base64.` variants send text messages: the channel as an ASCII digit, then the
//! bytes in base64.

use std::collections::VecDeque;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::mpsc;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

use super::Task;
use super::process::{self, Outcome, ResizeReader, Session};

pub(crate) const STDIN: u8 = 0;
pub(crate) const STDOUT: u8 = 1;
pub(crate) const STDERR: u8 = 2;
pub(crate) const ERROR: u8 = 3;
pub(crate) const RESIZE: u8 = 4;
/// v5's close signal: `[CLOSE, channel]`.
pub(crate) const CLOSE: u8 = 255;

/// Stdin bytes held for a process that does not read them before more are dropped.
const MAX_QUEUED_STDIN: usize = 16 << 20;

/// The framing of one negotiated subprotocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Channels {
    base64: bool,
    close_signal: bool,
    json_status: bool,
}

/// A message from the client, read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Inbound {
    Data(u8, Bytes),
    /// v5: the client will send nothing more on this channel.
    Close(u8),
    /// Control frames, empty or unreadable messages.
    Nothing,
    /// The client closed the WebSocket.
    End,
}

impl Channels {
    /// The framing of `protocol` (`None`: the client named none, which is `channel.k8s.io`).
    pub(crate) fn for_protocol(protocol: Option<&str>) -> Self {
        let protocol = protocol.unwrap_or("channel.k8s.io");
        Channels {
            base64: protocol.contains("base64."),
            close_signal: protocol == "v5.channel.k8s.io",
            json_status: protocol.starts_with("v4.") || protocol.starts_with("v5."),
        }
    }

    pub(crate) fn encode(&self, channel: u8, data: &[u8]) -> Message {
        if self.base64 {
            let mut text = String::with_capacity(1 + data.len().div_ceil(3) * 4);
            text.push(char::from(b'0' + channel));
            STANDARD.encode_string(data, &mut text);
            return Message::text(text);
        }
        let mut bytes = Vec::with_capacity(1 + data.len());
        bytes.push(channel);
        bytes.extend_from_slice(data);
        Message::binary(bytes)
    }

    pub(crate) fn decode(&self, message: Message) -> Inbound {
        match message {
            Message::Binary(bytes) if !bytes.is_empty() => {
                if self.close_signal && bytes[0] == CLOSE {
                    return match bytes.len() {
                        2 => Inbound::Close(bytes[1]),
                        _ => Inbound::Nothing,
                    };
                }
                Inbound::Data(bytes[0], bytes.slice(1..))
            }
            Message::Text(text) if self.base64 && !text.is_empty() => {
                let text = text.as_str();
                let channel = text.as_bytes()[0].wrapping_sub(b'0');
                match STANDARD.decode(&text[1..]) {
                    Ok(data) => Inbound::Data(channel, Bytes::from(data)),
                    Err(_) => Inbound::Nothing,
                }
            }
            Message::Close(_) => Inbound::End,
            _ => Inbound::Nothing,
        }
    }

    /// What goes on the error channel when the session ends.
    pub(crate) fn status(&self, outcome: &Outcome) -> Option<Bytes> {
        if self.json_status {
            Some(process::status_json(outcome))
        } else {
            process::status_text(outcome)
        }
    }
}

/// Serves exec or attach on an upgraded WebSocket until the process ends (status, then a
/// normal close) or the client goes away (the process is dropped).
pub(crate) async fn serve<S>(ws: WebSocketStream<S>, protocol: Option<String>, session: Session)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let channels = Channels::for_protocol(protocol.as_deref());
    let (mut sink, source) = ws.split();
    let options = session.options;
    let (stdio, pipes) = process::pipes(options);
    let (queue, mut queued) = mpsc::channel::<Message>(process::CHANNEL_CHUNKS);
    // The first message says the streams are ready, as a kubelet's does.
    let ready = match (options.stdout, options.stderr) {
        (true, _) => STDOUT,
        (false, true) => STDERR,
        _ => ERROR,
    };
    let _ = queue.send(channels.encode(ready, &[])).await;
    let writer = Task::spawn(async move {
        while let Some(message) = queued.recv().await {
            if sink.send(message).await.is_err() {
                return;
            }
        }
    });
    let mut pumps = Vec::new();
    for (output, channel) in [(pipes.stdout, STDOUT), (pipes.stderr, STDERR)] {
        let (Some(mut output), queue) = (output, queue.clone()) else {
            continue;
        };
        pumps.push(Task::spawn(async move {
            while let Some(chunk) = output.recv().await {
                if queue.send(channels.encode(channel, &chunk)).await.is_err() {
                    return;
                }
            }
        }));
    }
    let mut reader = Task::spawn(read_client(source, channels, pipes.stdin, session.clone()));
    let process = process::run(&session.container, &session.action, stdio, options.tty);
    let outcome = tokio::select! {
        outcome = process => outcome,
        _ = reader.join() => {
            tracing::debug!(container = ?session.container, "simulated kubelet: the client went away; the session ends");
            return;
        }
    };
    for pump in &mut pumps {
        tokio::select! {
            _ = pump.join() => {}
            _ = reader.join() => return,
        }
    }
    if let Some(status) = channels.status(&outcome) {
        let _ = queue.send(channels.encode(ERROR, &status)).await;
    }
    let close = CloseFrame {
        code: CloseCode::Normal,
        reason: "".into(),
    };
    let _ = queue.send(Message::Close(Some(close))).await;
    drop(queue);
    let mut writer = writer;
    writer.join().await;
    // The client answers the close; then the connection ends.
    let _ = tokio::time::timeout(super::LINGER, reader.join()).await;
}

/// Reads the client's messages until it goes away: stdin to the process (queued, so that the
/// socket is read on while the process does not read), resizes to the log.
async fn read_client<S>(
    mut source: futures::stream::SplitStream<WebSocketStream<S>>,
    channels: Channels,
    stdin: Option<mpsc::Sender<Bytes>>,
    session: Session,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let mut stdin = stdin;
    let mut queue: VecDeque<Bytes> = VecDeque::new();
    let mut queued_bytes = 0;
    let mut closing = false;
    let mut resizes = ResizeReader::default();
    loop {
        let deliver = async {
            match (&stdin, queue.is_empty()) {
                (Some(stdin), false) => stdin.clone().reserve_owned().await.ok(),
                _ => std::future::pending().await,
            }
        };
        tokio::select! {
            permit = deliver => match permit {
                Some(permit) => {
                    let chunk = queue.pop_front().expect("a queued chunk");
                    queued_bytes -= chunk.len();
                    permit.send(chunk);
                }
                // The process is done with stdin.
                None => {
                    stdin = None;
                    queue.clear();
                }
            },
            message = source.next() => {
                let inbound = match message {
                    Some(Ok(message)) => channels.decode(message),
                    _ => Inbound::End,
                };
                match inbound {
                    Inbound::Data(STDIN, data) if stdin.is_some() && !closing => {
                        if queued_bytes + data.len() > MAX_QUEUED_STDIN {
                            tracing::debug!("simulated kubelet: stdin not read; dropping input");
                        } else {
                            queued_bytes += data.len();
                            queue.push_back(data);
                        }
                    }
                    Inbound::Data(RESIZE, data) => process::log_resizes(&session.container, &resizes.push(&data)),
                    Inbound::Close(STDIN) => closing = true,
                    Inbound::End => return,
                    _ => {}
                }
            }
        }
        if closing && queue.is_empty() {
            // The end of stdin, once the process has everything sent before it.
            stdin = None;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn channel_framing_by_protocol() {
        let v5 = Channels::for_protocol(Some("v5.channel.k8s.io"));
        assert_eq!(v5.encode(STDOUT, b"hi"), Message::binary(vec![1, b'h', b'i']));
        assert_eq!(
            v5.decode(Message::binary(vec![0, b'x'])),
            Inbound::Data(STDIN, Bytes::from_static(b"x"))
        );
        assert_eq!(v5.decode(Message::binary(vec![255, 0])), Inbound::Close(STDIN));
        assert_eq!(v5.decode(Message::binary(vec![255, 0, 1])), Inbound::Nothing);
        assert_eq!(v5.decode(Message::binary(Vec::new())), Inbound::Nothing);
        assert_eq!(v5.decode(Message::Close(None)), Inbound::End);
        assert_eq!(v5.status(&Outcome::Success).unwrap(), r#"{"status":"Success"}"#);

        let v4 = Channels::for_protocol(Some("v4.channel.k8s.io"));
        assert_eq!(
            v4.decode(Message::binary(vec![255, 0])),
            Inbound::Data(255, Bytes::from_static(&[0]))
        );
        assert!(
            v4.status(&Outcome::Exit(2))
                .unwrap()
                .starts_with(b"{\"status\":\"Failure\"")
        );

        let v1 = Channels::for_protocol(None);
        assert_eq!(v1.status(&Outcome::Success), None);
        assert_eq!(
            v1.status(&Outcome::Exit(2)).unwrap(),
            "command terminated with non-zero exit code: command exited with code 2"
        );

        let base64 = Channels::for_protocol(Some("v4.base64.channel.k8s.io"));
        assert_eq!(base64.encode(STDERR, b"hi!"), Message::text("2aGkh"));
        assert_eq!(
            base64.decode(Message::text("0aGkh")),
            Inbound::Data(STDIN, Bytes::from_static(b"hi!"))
        );
        assert_eq!(base64.decode(Message::text("0***")), Inbound::Nothing);
        assert!(base64.status(&Outcome::Success).is_some());
    }
}
