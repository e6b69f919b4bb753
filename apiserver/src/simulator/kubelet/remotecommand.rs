//! Exec and attach over SPDY/3.1 (`X-Stream-Protocol-Version` `v4.channel.k8s.io` down to
//! `channel.k8s.io`), as kubectl's fallback and kube-apiserver speak them: the client opens one
//! stream per standard stream it wants, each named by its `streamType` header (`error`,
//! `stdin`, `stdout`, `stderr`, and `resize` with a terminal from v3 on), and the session starts
//! once all have been replied to. The status goes on the error stream: JSON from v4 on, the
//! failure's text before.

use std::time::Duration;

use super::Task;
use super::process::{self, Outcome, ResizeReader, Session};
use super::spdy::{Connection, Stream, StreamWriter, frame};

/// How long the client has to open its streams, as a kubelet waits.
const STREAM_CREATION_TIMEOUT: Duration = Duration::from_secs(30);

/// What a protocol version changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Version {
    json_status: bool,
    resize: bool,
}

fn version(name: &str) -> Version {
    match name {
        "v4.channel.k8s.io" => Version {
            json_status: true,
            resize: true,
        },
        "v3.channel.k8s.io" => Version {
            json_status: false,
            resize: true,
        },
        _ => Version {
            json_status: false,
            resize: false,
        },
    }
}

/// The streams the client opened.
#[derive(Default)]
struct Streams {
    error: Option<Stream>,
    stdin: Option<Stream>,
    stdout: Option<Stream>,
    stderr: Option<Stream>,
    resize: Option<Stream>,
}

/// Serves one exec or attach on `connection` (negotiated as `version`).
pub(crate) async fn serve(mut connection: Connection, version_name: &str, session: Session) {
    let version = version(version_name);
    let options = session.options;
    let expected = 1
        + usize::from(options.stdin)
        + usize::from(options.stdout)
        + usize::from(options.stderr)
        + usize::from(options.tty && version.resize);
    let mut streams = Streams::default();
    let deadline = tokio::time::sleep(STREAM_CREATION_TIMEOUT);
    tokio::pin!(deadline);
    let mut received = 0;
    while received < expected {
        tokio::select! {
            stream = connection.accept() => {
                let Some(stream) = stream else { return };
                if stream.reply().await.is_err() {
                    return;
                }
                let slot = match stream.header("streamtype") {
                    Some("error") => &mut streams.error,
                    Some("stdin") => &mut streams.stdin,
                    Some("stdout") => &mut streams.stdout,
                    Some("stderr") => &mut streams.stderr,
                    Some("resize") if version.resize => &mut streams.resize,
                    other => {
                        tracing::debug!(stream_type = ?other, "simulated kubelet: unexpected stream type");
                        continue;
                    }
                };
                *slot = Some(stream);
                received += 1;
            }
            _ = &mut deadline => {
                tracing::debug!("simulated kubelet: timed out waiting for the client to create streams");
                connection.shutdown().await;
                return;
            }
        }
    }

    let (stdio, pipes) = process::pipes(options);
    let mut helpers = Vec::new();
    let mut resets = Vec::new();
    if let Some(mut stream) = streams.stdin.take() {
        resets.push(stream.writer());
        let stdin = pipes.stdin;
        helpers.push(Task::spawn(async move {
            let Some(stdin) = stdin else { return };
            while let Some(chunk) = stream.read().await {
                if stdin.send(chunk).await.is_err() {
                    return;
                }
            }
        }));
    }
    if let Some(mut stream) = streams.resize.take() {
        resets.push(stream.writer());
        let container = session.container.clone();
        helpers.push(Task::spawn(async move {
            let mut sizes = ResizeReader::default();
            while let Some(chunk) = stream.read().await {
                process::log_resizes(&container, &sizes.push(&chunk));
            }
        }));
    }
    let mut outputs: Vec<StreamWriter> = Vec::new();
    let mut pumps = Vec::new();
    for (output, stream) in [
        (pipes.stdout, streams.stdout.take()),
        (pipes.stderr, streams.stderr.take()),
    ] {
        let writer = stream.as_ref().map(Stream::writer);
        if let Some(writer) = &writer {
            outputs.push(writer.clone());
        }
        let Some(mut output) = output else { continue };
        pumps.push(Task::spawn(async move {
            while let Some(chunk) = output.recv().await {
                if let Some(writer) = &writer {
                    let _ = writer.write(chunk).await;
                }
            }
        }));
    }

    let closed = connection.closed();
    tokio::pin!(closed);
    let outcome = tokio::select! {
        outcome = process::run(&session.container, &session.action, stdio, options.tty) => outcome,
        _ = &mut closed => {
            tracing::debug!(container = ?session.container, "simulated kubelet: the client went away; the session ends");
            return;
        }
    };
    for pump in &mut pumps {
        tokio::select! {
            _ = pump.join() => {}
            _ = &mut closed => return,
        }
    }
    if let Some(error) = &streams.error {
        let writer = error.writer();
        if let Some(status) = status(version, &outcome) {
            let _ = writer.write(status).await;
        }
        outputs.push(writer);
    }
    // Output streams end with FIN after their last bytes; the client's own streams are reset,
    // as a kubelet closing the connection does.
    for writer in &outputs {
        let _ = writer.finish().await;
    }
    for writer in &resets {
        let _ = writer.reset(frame::CANCEL).await;
    }
    drop(helpers);
    connection.shutdown().await;
}

fn status(version: Version, outcome: &Outcome) -> Option<bytes::Bytes> {
    if version.json_status {
        Some(process::status_json(outcome))
    } else {
        process::status_text(outcome)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_decide_status_form_and_resizing() {
        let v4 = version("v4.channel.k8s.io");
        assert!(v4.resize && v4.json_status);
        assert_eq!(status(v4, &Outcome::Success).unwrap(), r#"{"status":"Success"}"#);
        let v3 = version("v3.channel.k8s.io");
        assert!(v3.resize && !v3.json_status);
        assert_eq!(status(v3, &Outcome::Success), None);
        assert!(!version("v2.channel.k8s.io").resize);
        assert!(!version("channel.k8s.io").resize);
        assert!(status(version("channel.k8s.io"), &Outcome::Exit(1)).is_some());
    }
}
