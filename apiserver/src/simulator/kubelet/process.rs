//! Exec and attach whatever the transport: the process ([`super::shell`]) reads stdin from and
//! writes stdout and stderr to channels that a transport (WebSocket channels, SPDY streams)
//! pumps; its outcome becomes the status the client reads on the error stream, in the form the
//! negotiated protocol version asks for.

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

use super::shell::{Input, Shell};

/// Chunks a pump may hold before the process waits.
pub(crate) const CHANNEL_CHUNKS: usize = 64;

/// The container a session runs in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Container {
    pub(crate) namespace: String,
    pub(crate) pod: String,
    pub(crate) name: String,
}

/// What the client asked for: exec's `input`, `output`, `error` and `tty` (`stderr` is off with
/// a terminal, as a kubelet has it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct StreamOptions {
    pub(crate) stdin: bool,
    pub(crate) stdout: bool,
    pub(crate) stderr: bool,
    pub(crate) tty: bool,
}

/// Exec runs a command; attach echoes stdin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Action {
    Exec(Vec<String>),
    Attach,
}

/// One exec or attach request: where, what, and with which streams.
#[derive(Debug, Clone)]
pub(crate) struct Session {
    pub(crate) container: Container,
    pub(crate) action: Action,
    pub(crate) options: StreamOptions,
}

/// The process's ends of its streams; a transport holds the other ends.
pub(crate) struct Stdio {
    pub(crate) stdin: Option<mpsc::Receiver<Bytes>>,
    pub(crate) stdout: Option<mpsc::Sender<Bytes>>,
    pub(crate) stderr: Option<mpsc::Sender<Bytes>>,
}

/// The transport's ends.
pub(crate) struct Pipes {
    pub(crate) stdin: Option<mpsc::Sender<Bytes>>,
    pub(crate) stdout: Option<mpsc::Receiver<Bytes>>,
    pub(crate) stderr: Option<mpsc::Receiver<Bytes>>,
}

/// Channels for the streams `options` asks for.
pub(crate) fn pipes(options: StreamOptions) -> (Stdio, Pipes) {
    fn pair(wanted: bool) -> (Option<mpsc::Sender<Bytes>>, Option<mpsc::Receiver<Bytes>>) {
        if !wanted {
            return (None, None);
        }
        let (tx, rx) = mpsc::channel(CHANNEL_CHUNKS);
        (Some(tx), Some(rx))
    }
    let (stdin_tx, stdin_rx) = pair(options.stdin);
    let (stdout_tx, stdout_rx) = pair(options.stdout);
    let (stderr_tx, stderr_rx) = pair(options.stderr);
    (
        Stdio {
            stdin: stdin_rx,
            stdout: stdout_tx,
            stderr: stderr_tx,
        },
        Pipes {
            stdin: stdin_tx,
            stdout: stdout_rx,
            stderr: stderr_rx,
        },
    )
}

/// How a session ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Outcome {
    Success,
    /// The command exited with a code other than 0.
    Exit(i32),
}

/// Runs `action` in `container` until it ends (a caller drops the future when the client goes
/// away first: that ends `sleep` and an attach without stdin).
pub(crate) async fn run(container: &Container, action: &Action, stdio: Stdio, tty: bool) -> Outcome {
    let stdin = stdio.stdin.map(Input::new);
    let mut shell = Shell::new(
        &container.namespace,
        &container.pod,
        stdin,
        stdio.stdout,
        stdio.stderr,
        tty,
    );
    let Container { namespace, pod, name } = container;
    match action {
        Action::Exec(command) => {
            tracing::debug!(%namespace, %pod, container = %name, ?command, tty, "simulated kubelet: exec");
            let code = shell.run(command).await;
            tracing::debug!(%namespace, %pod, container = %name, ?command, code, "simulated kubelet: exec ended");
            if code == 0 {
                Outcome::Success
            } else {
                Outcome::Exit(code)
            }
        }
        Action::Attach => {
            tracing::debug!(%namespace, %pod, container = %name, tty, "simulated kubelet: attach");
            shell.echo_stdin().await;
            Outcome::Success
        }
    }
}

/// The status of `v4.channel.k8s.io` and later: JSON of a `metav1.Status` subset.
pub(crate) fn status_json(outcome: &Outcome) -> Bytes {
    #[derive(Serialize)]
    struct Status {
        status: &'static str,
        #[serde(skip_serializing_if = "Option::is_none")]
        message: Option<String>,
        #[serde(skip_serializing_if = "Option::is_none")]
        reason: Option<&'static str>,
        #[serde(skip_serializing_if = "Option::is_none")]
        details: Option<Details>,
    }
    #[derive(Serialize)]
    struct Details {
        causes: Vec<Cause>,
    }
    #[derive(Serialize)]
    struct Cause {
        reason: &'static str,
        message: String,
    }
    let status = match outcome {
        Outcome::Success => Status {
            status: "Success",
            message: None,
            reason: None,
            details: None,
        },
        Outcome::Exit(code) => Status {
            status: "Failure",
            message: Some(exit_message(*code)),
            reason: Some("NonZeroExitCode"),
            details: Some(Details {
                causes: vec![Cause {
                    reason: "ExitCode",
                    message: code.to_string(),
                }],
            }),
        },
    };
    Bytes::from(serde_json::to_vec(&status).expect("a status serializes"))
}

/// The status of the protocol versions before 4: the message of a failure, nothing on success.
pub(crate) fn status_text(outcome: &Outcome) -> Option<Bytes> {
    match outcome {
        Outcome::Success => None,
        Outcome::Exit(code) => Some(Bytes::from(exit_message(*code))),
    }
}

fn exit_message(code: i32) -> String {
    format!("command terminated with non-zero exit code: command exited with code {code}")
}

/// A terminal size as clients send them on the resize stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub(crate) struct TerminalSize {
    #[serde(rename = "Width")]
    pub(crate) width: u16,
    #[serde(rename = "Height")]
    pub(crate) height: u16,
}

/// Reads the JSON terminal sizes of a resize stream, which may arrive split anywhere.
#[derive(Default)]
pub(crate) struct ResizeReader {
    pending: Vec<u8>,
}

impl ResizeReader {
    /// The sizes `chunk` completes.
    pub(crate) fn push(&mut self, chunk: &[u8]) -> Vec<TerminalSize> {
        self.pending.extend_from_slice(chunk);
        let mut sizes = Vec::new();
        let mut stream = serde_json::Deserializer::from_slice(&self.pending).into_iter::<TerminalSize>();
        let mut used = 0;
        loop {
            match stream.next() {
                Some(Ok(size)) => {
                    sizes.push(size);
                    used = stream.byte_offset();
                }
                Some(Err(err)) if err.is_eof() => break,
                Some(Err(_)) => {
                    // Not a size: drop what was sent so far.
                    used = self.pending.len();
                    break;
                }
                None => break,
            }
        }
        self.pending.drain(..used);
        sizes
    }
}

/// Logs the sizes a resize stream carries, as the Go fake kubelet does.
pub(crate) fn log_resizes(container: &Container, sizes: &[TerminalSize]) {
    for size in sizes {
        tracing::debug!(
            namespace = %container.namespace, pod = %container.pod, container = %container.name,
            columns = size.width, rows = size.height, "simulated kubelet: terminal resized"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_are_what_clients_decode() {
        assert_eq!(status_json(&Outcome::Success), r#"{"status":"Success"}"#);
        assert_eq!(
            status_json(&Outcome::Exit(3)),
            r#"{"status":"Failure","message":"command terminated with non-zero exit code: command exited with code 3","reason":"NonZeroExitCode","details":{"causes":[{"reason":"ExitCode","message":"3"}]}}"#
        );
        assert_eq!(status_text(&Outcome::Success), None);
        assert_eq!(
            status_text(&Outcome::Exit(127)).unwrap(),
            "command terminated with non-zero exit code: command exited with code 127"
        );
    }

    #[test]
    fn resize_sizes_are_read_across_chunks() {
        let mut reader = ResizeReader::default();
        assert_eq!(reader.push(br#"{"Width":80,"Hei"#), vec![]);
        assert_eq!(
            reader.push(b"ght\":24}\n{\"Width\":100,\"Height\":40}{\"Wid"),
            vec![
                TerminalSize {
                    width: 80,
                    height: 24
                },
                TerminalSize {
                    width: 100,
                    height: 40
                }
            ]
        );
        assert_eq!(
            reader.push(br#"th":1,"Height":2}"#),
            vec![TerminalSize { width: 1, height: 2 }]
        );
        assert_eq!(reader.push(b"garbage"), vec![]);
        assert_eq!(
            reader.push(br#"{"Width":5,"Height":6}"#),
            vec![TerminalSize { width: 5, height: 6 }]
        );
    }

    #[tokio::test]
    async fn attach_echoes_stdin_and_exec_reports_exit_codes() {
        let container = Container {
            namespace: "ns".into(),
            pod: "p".into(),
            name: "c".into(),
        };
        let options = StreamOptions {
            stdin: true,
            stdout: true,
            stderr: false,
            tty: true,
        };
        let (stdio, mut pipes) = pipes(options);
        let stdin = pipes.stdin.take().unwrap();
        stdin.send(Bytes::from_static(b"a\nb")).await.unwrap();
        drop(stdin);
        assert_eq!(
            run(&container, &Action::Attach, stdio, true).await,
            Outcome::Success
        );
        let mut stdout = pipes.stdout.take().unwrap();
        let mut echoed = Vec::new();
        while let Some(chunk) = stdout.recv().await {
            echoed.extend_from_slice(&chunk);
        }
        assert_eq!(echoed, b"a\r\nb");

        let (stdio, _pipes) = super::pipes(StreamOptions::default());
        let exit = Action::Exec(vec!["sh".into(), "-c".into(), "exit 3".into()]);
        assert_eq!(run(&container, &exit, stdio, false).await, Outcome::Exit(3));
    }
}
