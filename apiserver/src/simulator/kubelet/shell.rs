//! What "runs" in a simulated container: a handful of built-in commands and a tiny shell, the
//! same as the Go fake kubelet's (`tests/control-plane/cmd/fake-kubelet/commands.go`), so that
//! tests see one behaviour on every kind of host.
//!
//! `echo [-n]`, `cat [-]` (stdin to stdout), `env`/`printenv`, `hostname`, `true`, `false`,
//! `exit [N]`, `sleep N|infinity` and `sh|bash|ash|dash` (`-c SCRIPT`, a script on stdin, or on a
//! terminal an echo of what is typed until `exit [N]`, Ctrl-D or the end of stdin); anything else
//! is `NAME: not found` on stderr with exit code 127. Scripts split commands at newlines, `;`,
//! `&&` and `||`, with sh's quoting, comments and `$NAME`/`${NAME}`.

use std::collections::HashMap;
use std::pin::Pin;
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::mpsc;

use super::script::{Op, parse_script};

/// A process's standard input: chunks until the client closes it.
pub(crate) struct Input {
    chunks: mpsc::Receiver<Bytes>,
    pending: Bytes,
}

impl Input {
    pub(crate) fn new(chunks: mpsc::Receiver<Bytes>) -> Self {
        Input {
            chunks,
            pending: Bytes::new(),
        }
    }

    /// The next bytes; `None` at the end.
    pub(crate) async fn read(&mut self) -> Option<Bytes> {
        if !self.pending.is_empty() {
            return Some(std::mem::take(&mut self.pending));
        }
        loop {
            let chunk = self.chunks.recv().await?;
            if !chunk.is_empty() {
                return Some(chunk);
            }
        }
    }

    async fn read_byte(&mut self) -> Option<u8> {
        if self.pending.is_empty() {
            self.pending = self.read().await?;
        }
        let byte = self.pending[0];
        self.pending = self.pending.slice(1..);
        Some(byte)
    }

    async fn read_all(&mut self) -> Vec<u8> {
        let mut all = Vec::new();
        while let Some(chunk) = self.read().await {
            all.extend_from_slice(&chunk);
        }
        all
    }
}

/// Where one command runs: the container's environment and the client's streams.
pub(crate) struct Shell {
    env: HashMap<String, String>,
    stdin: Option<Input>,
    stdout: Option<mpsc::Sender<Bytes>>,
    stderr: Option<mpsc::Sender<Bytes>>,
    /// With a terminal, output lines end in CR LF and stderr shows on stdout.
    tty: bool,
    /// The last byte written through the terminal's output processing.
    last: u8,
    /// An `exit` ran: the scripts around it end.
    stopped: bool,
}

impl Shell {
    /// A shell in pod `namespace/pod`, writing to the streams the client asked for.
    pub(crate) fn new(
        namespace: &str,
        pod: &str,
        stdin: Option<Input>,
        stdout: Option<mpsc::Sender<Bytes>>,
        stderr: Option<mpsc::Sender<Bytes>>,
        tty: bool,
    ) -> Self {
        let env = HashMap::from([
            ("HOSTNAME".to_string(), pod.to_string()),
            ("POD_NAMESPACE".to_string(), namespace.to_string()),
        ]);
        Shell {
            env,
            stdin,
            stdout,
            stderr,
            tty,
            last: 0,
            stopped: false,
        }
    }

    /// Writes to stdout, through the terminal's LF to CR LF when there is one.
    pub(crate) async fn out(&mut self, bytes: &[u8]) {
        if self.tty {
            let mut converted = Vec::with_capacity(bytes.len() + 8);
            for &byte in bytes {
                if byte == b'\n' && self.last != b'\r' {
                    converted.push(b'\r');
                }
                converted.push(byte);
                self.last = byte;
            }
            self.raw(&converted).await;
        } else {
            self.raw(bytes).await;
        }
    }

    /// Writes to stderr (stdout on a terminal).
    async fn err(&mut self, text: &str) {
        if self.tty {
            return self.out(text.as_bytes()).await;
        }
        if let Some(stderr) = &self.stderr {
            let _ = stderr.send(Bytes::copy_from_slice(text.as_bytes())).await;
        }
    }

    /// Writes to stdout as is (what a terminal echoes).
    async fn raw(&mut self, bytes: &[u8]) {
        if let (Some(stdout), false) = (&self.stdout, bytes.is_empty()) {
            let _ = stdout.send(Bytes::copy_from_slice(bytes)).await;
        }
    }

    /// The attached process: stdin comes back on stdout until it ends; without stdin it runs
    /// until the client goes away (the caller drops this future then).
    pub(crate) async fn echo_stdin(&mut self) {
        let Some(mut stdin) = self.stdin.take() else {
            return std::future::pending().await;
        };
        while let Some(chunk) = stdin.read().await {
            self.out(&chunk).await;
        }
    }

    /// Runs `argv` and returns its exit code.
    pub(crate) fn run<'a>(
        &'a mut self,
        argv: &'a [String],
    ) -> Pin<Box<dyn Future<Output = i32> + Send + 'a>> {
        Box::pin(async move {
            let Some(command) = argv.first() else { return 0 };
            let args = &argv[1..];
            match base_name(command) {
                "sh" | "bash" | "ash" | "dash" => {
                    if args.len() >= 2 && args[0] == "-c" {
                        return self.script(&args[1]).await;
                    }
                    let Some(stdin) = self.stdin.as_mut() else {
                        return 0;
                    };
                    if self.tty {
                        return self.terminal().await;
                    }
                    let script = stdin.read_all().await;
                    self.script(&String::from_utf8_lossy(&script)).await
                }
                "echo" => {
                    let (words, newline) = match args.first() {
                        Some(flag) if flag == "-n" => (&args[1..], false),
                        _ => (args, true),
                    };
                    let mut text = words.join(" ");
                    if newline {
                        text.push('\n');
                    }
                    self.out(text.as_bytes()).await;
                    0
                }
                "cat" => {
                    if let Some(file) = args.iter().find(|f| *f != "-") {
                        self.err(&format!("cat: {file}: No such file or directory\n"))
                            .await;
                        return 1;
                    }
                    if let Some(mut stdin) = self.stdin.take() {
                        while let Some(chunk) = stdin.read().await {
                            self.out(&chunk).await;
                        }
                        self.stdin = Some(stdin);
                    }
                    0
                }
                "env" | "printenv" => {
                    let text = format!(
                        "HOSTNAME={}\nPOD_NAMESPACE={}\n",
                        self.env["HOSTNAME"], self.env["POD_NAMESPACE"]
                    );
                    self.out(text.as_bytes()).await;
                    0
                }
                "hostname" => {
                    let text = format!("{}\n", self.env["HOSTNAME"]);
                    self.out(text.as_bytes()).await;
                    0
                }
                "true" => 0,
                "false" => 1,
                "exit" => {
                    self.stopped = true;
                    let Some(code) = args.first() else { return 0 };
                    match code.parse::<i64>() {
                        Ok(code) if code >= 0 => (code & 0xff) as i32,
                        _ => {
                            self.err(&format!("sh: exit: Illegal number: {code}\n")).await;
                            2
                        }
                    }
                }
                "sleep" => {
                    let Some(time) = args.first() else {
                        self.err("sleep: missing operand\n").await;
                        return 1;
                    };
                    let seconds = match time.as_str() {
                        "infinity" => Some(f64::INFINITY),
                        time => time.parse::<f64>().ok(),
                    };
                    match seconds {
                        // NaN is no error: it sleeps for ever, as Go's comparison has it.
                        Some(seconds) if seconds.is_nan() || seconds >= 0.0 => {
                            sleep(seconds).await;
                            0
                        }
                        _ => {
                            self.err(&format!("sleep: invalid number '{time}'\n")).await;
                            1
                        }
                    }
                }
                _ => {
                    self.err(&format!("{command}: not found\n")).await;
                    127
                }
            }
        })
    }

    /// Runs a script; its exit code is the last command's.
    async fn script(&mut self, text: &str) -> i32 {
        let mut code = 0;
        for step in parse_script(text, &self.env) {
            if (step.op == Op::And && code != 0) || (step.op == Op::Or && code == 0) {
                continue;
            }
            code = self.run(&step.argv).await;
            if self.stopped {
                break;
            }
        }
        code
    }

    /// An interactive shell on a terminal: echoes what is typed (Enter as CR LF) until stdin
    /// ends, an `exit [N]` line is entered, or Ctrl-D is typed on an empty line.
    async fn terminal(&mut self) -> i32 {
        let mut line: Vec<u8> = Vec::new();
        loop {
            let Some(byte) = (match self.stdin.as_mut() {
                Some(stdin) => stdin.read_byte().await,
                None => None,
            }) else {
                return 0;
            };
            match byte {
                b'\r' | b'\n' => {
                    self.raw(b"\r\n").await;
                    let words: Vec<String> = String::from_utf8_lossy(&line)
                        .split_whitespace()
                        .map(str::to_string)
                        .collect();
                    line.clear();
                    if words.first().is_some_and(|w| w == "exit") {
                        return self.run(&words).await;
                    }
                }
                4 if line.is_empty() => {
                    self.raw(b"exit\r\n").await;
                    return 0;
                }
                4 => {}
                0x7f | 0x08 => {
                    if line.pop().is_some() {
                        self.raw(b"\x08 \x08").await;
                    }
                }
                byte => {
                    line.push(byte);
                    self.raw(&[byte]).await;
                }
            }
        }
    }
}

/// Waits `seconds` (forever for infinity, NaN or more than the clock holds).
async fn sleep(seconds: f64) {
    if seconds.is_finite() && seconds < (i64::MAX / 1_000_000_000) as f64 {
        tokio::time::sleep(Duration::from_secs_f64(seconds)).await;
    } else {
        std::future::pending::<()>().await;
    }
}

/// The last element of a slash-separated path, as Go's `path.Base`.
fn base_name(path: &str) -> &str {
    if path.is_empty() {
        return ".";
    }
    let trimmed = path.trim_end_matches('/');
    if trimmed.is_empty() {
        return "/";
    }
    trimmed.rsplit('/').next().unwrap_or(trimmed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base_names_are_go_paths() {
        assert_eq!(base_name("/bin/sh"), "sh");
        assert_eq!(base_name("sh/"), "sh");
        assert_eq!(base_name("///"), "/");
        assert_eq!(base_name(""), ".");
    }

    /// Runs `argv` with `input` on stdin; returns (code, stdout, stderr).
    async fn run(argv: &[&str], input: Option<&str>, tty: bool) -> (i32, String, String) {
        let (out_tx, mut out_rx) = mpsc::channel(1024);
        let (err_tx, mut err_rx) = mpsc::channel(1024);
        let stdin = input.map(|text| {
            let (tx, rx) = mpsc::channel(4);
            let text = Bytes::copy_from_slice(text.as_bytes());
            tokio::spawn(async move {
                for chunk in text.chunks(3) {
                    let _ = tx.send(Bytes::copy_from_slice(chunk)).await;
                }
            });
            Input::new(rx)
        });
        let argv: Vec<String> = argv.iter().map(|a| a.to_string()).collect();
        let mut shell = Shell::new("ns", "web-0", stdin, Some(out_tx), Some(err_tx), tty);
        let code = shell.run(&argv).await;
        drop(shell);
        let collect = |rx: &mut mpsc::Receiver<Bytes>| {
            let mut text = Vec::new();
            while let Ok(chunk) = rx.try_recv() {
                text.extend_from_slice(&chunk);
            }
            String::from_utf8(text).unwrap()
        };
        (code, collect(&mut out_rx), collect(&mut err_rx))
    }

    #[tokio::test]
    async fn built_in_commands_behave_as_the_go_fake_kubelets() {
        assert_eq!(
            run(&["echo", "hi", "there"], None, false).await,
            (0, "hi there\n".into(), "".into())
        );
        assert_eq!(
            run(&["echo", "-n", "hi"], None, false).await,
            (0, "hi".into(), "".into())
        );
        assert_eq!(
            run(&["cat"], Some("abc\ndef"), false).await,
            (0, "abc\ndef".into(), "".into())
        );
        assert_eq!(run(&["cat", "-", "x"], Some("abc"), false).await.0, 1);
        assert_eq!(
            run(&["cat", "/etc/passwd"], None, false).await,
            (
                1,
                "".into(),
                "cat: /etc/passwd: No such file or directory\n".into()
            )
        );
        assert_eq!(
            run(&["/usr/bin/env"], None, false).await.1,
            "HOSTNAME=web-0\nPOD_NAMESPACE=ns\n"
        );
        assert_eq!(run(&["hostname"], None, false).await.1, "web-0\n");
        assert_eq!(run(&["true"], None, false).await.0, 0);
        assert_eq!(run(&["false"], None, false).await.0, 1);
        assert_eq!(run(&["exit", "300"], None, false).await.0, 300 & 0xff);
        assert_eq!(
            run(&["exit", "-1"], None, false).await,
            (2, "".into(), "sh: exit: Illegal number: -1\n".into())
        );
        assert_eq!(
            run(&["nope", "x"], None, false).await,
            (127, "".into(), "nope: not found\n".into())
        );
        assert_eq!(
            run(&["sleep"], None, false).await,
            (1, "".into(), "sleep: missing operand\n".into())
        );
        assert_eq!(
            run(&["sleep", "x"], None, false).await,
            (1, "".into(), "sleep: invalid number 'x'\n".into())
        );
        assert_eq!(run(&["sleep", "0.01"], None, false).await.0, 0);
        assert_eq!(run(&[], None, false).await.0, 0);
    }

    #[tokio::test]
    async fn shells_run_scripts_from_arguments_and_stdin() {
        assert_eq!(run(&["sh", "-c", "exit 3"], None, false).await.0, 3);
        assert_eq!(
            run(
                &[
                    "sh",
                    "-c",
                    "echo a; false || echo b; true && echo $HOSTNAME; exit 4; echo no"
                ],
                None,
                false
            )
            .await,
            (4, "a\nb\nweb-0\n".into(), "".into())
        );
        assert_eq!(
            run(&["bash", "-c", "false && echo no"], None, false).await,
            (1, "".into(), "".into())
        );
        assert_eq!(run(&["sh"], None, false).await.0, 0);
        assert_eq!(
            run(&["sh"], Some("echo piped\nexit 5\n"), false).await,
            (5, "piped\n".into(), "".into())
        );
    }

    #[tokio::test]
    async fn terminals_echo_typing_and_convert_line_ends() {
        assert_eq!(
            run(&["sh"], Some("ls\x7fx\rexit 2\r"), true).await,
            (2, "ls\x08 \x08x\r\nexit 2\r\n".into(), "".into())
        );
        assert_eq!(run(&["sh"], Some("a\x04\x04"), true).await.1, "a");
        assert_eq!(
            run(&["sh"], Some("\x04"), true).await,
            (0, "exit\r\n".into(), "".into())
        );
        // Output processing: LF becomes CR LF, and stderr shows on the terminal.
        assert_eq!(
            run(&["sh", "-c", "echo a; nope"], None, true).await,
            (127, "a\r\nnope: not found\r\n".into(), "".into())
        );
    }
}
