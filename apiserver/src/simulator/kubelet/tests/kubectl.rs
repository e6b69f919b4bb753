//! kubectl 1.37 through a real kube-apiserver 1.37 to simulated kubelets: `logs` (tail,
//! timestamps, follow), `exec` (stdout, stdin, exit codes, a terminal), `attach -i` and
//! `port-forward`. Node `spdy-node` declares no features, so kube-apiserver speaks SPDY to its
//! kubelet whatever kubectl speaks; node `ws-node` declares `ExtendWebSocketsToKubelet`, so
//! kube-apiserver passes kubectl's WebSocket protocols (v5 channels, the SPDY tunnel) through.
//! Needs `VCSYNC_KUBE_ASSETS` (skipped without it) and kubectl (`VCSYNC_KUBECTL`, else `PATH`).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::json;

use super::Fixture;

const SPDY_NODE: (&str, Ipv4Addr) = ("spdy-node", Ipv4Addr::new(127, 0, 1, 201));
const WS_NODE: (&str, Ipv4Addr) = ("ws-node", Ipv4Addr::new(127, 0, 1, 202));

fn kubectl_binary() -> PathBuf {
    std::env::var_os("VCSYNC_KUBECTL").map_or_else(|| PathBuf::from("kubectl"), PathBuf::from)
}

/// Whether kubectl is there and at least 1.37 (older ones speak other protocols first).
fn kubectl_is_new_enough() -> bool {
    let Ok(output) = Command::new(kubectl_binary())
        .args(["version", "--client", "-o", "json"])
        .output()
    else {
        return false;
    };
    let version: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap_or_default();
    let minor = version["clientVersion"]["minor"].as_str().unwrap_or("0");
    minor
        .trim_end_matches('+')
        .parse::<u32>()
        .is_ok_and(|minor| minor >= 37)
}

/// kubectl with the plane's kubeconfig.
fn kubectl(kubeconfig: &Path, args: &[&str]) -> Command {
    let mut command = Command::new(kubectl_binary());
    command.arg("--kubeconfig").arg(kubeconfig).args(args);
    command
}

/// Runs kubectl with `stdin`, returning its output.
fn run(kubeconfig: &Path, args: &[&str], stdin: &str) -> Output {
    let mut child = kubectl(kubeconfig, args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("kubectl runs");
    child.stdin.take().unwrap().write_all(stdin.as_bytes()).unwrap();
    child.wait_with_output().unwrap()
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// Creates `object` (JSON) with kubectl.
fn create(kubeconfig: &Path, object: serde_json::Value) {
    let output = run(kubeconfig, &["create", "-f", "-"], &object.to_string());
    assert!(output.status.success(), "kubectl create: {output:?}");
}

/// Logs (`RUST_LOG`) to the test's output: which protocol each request speaks, for one.
fn log_to_test_output() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_reaches_simulated_kubelets_through_kube_apiserver() {
    log_to_test_output();
    let Some(assets) = std::env::var_os("VCSYNC_KUBE_ASSETS").filter(|_| kubectl_is_new_enough()) else {
        println!("skipped: VCSYNC_KUBE_ASSETS is not set or no kubectl >= 1.37");
        return;
    };
    let plane = vcsync_envtest::ControlPlane::start(Path::new(&assets), "simkubelet")
        .await
        .expect("a control plane");
    let ca = std::fs::read_to_string(plane.dir().join("pki").join("ca.crt")).expect("the plane's CA");
    let fixture = Fixture::start(&[SPDY_NODE, WS_NODE], Some(&ca)).await;
    let kubeconfig = plane.kubeconfig().to_path_buf();
    for ((name, ip), port) in [SPDY_NODE, WS_NODE].into_iter().zip(&fixture.ports) {
        let features = if name == WS_NODE.0 {
            json!(["ExtendWebSocketsToKubelet"])
        } else {
            json!([])
        };
        create(
            &kubeconfig,
            json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": name},
                "status": {"addresses": [{"type": "InternalIP", "address": ip.to_string()}],
                    "daemonEndpoints": {"kubeletEndpoint": {"Port": port}},
                    "declaredFeatures": features,
                    "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady",
                        "message": "simulated"}]}}),
        );
        let pod = format!("{name}-pod");
        fixture.add_pod("default", &pod, name, &["app"]);
        create(
            &kubeconfig,
            json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": pod, "namespace": "default"},
                "spec": {"nodeName": name, "containers": [{"name": "app", "image": "busybox"}]}}),
        );
        let status = json!({"status": {"phase": "Running", "podIP": "10.0.0.1",
            "conditions": [{"type": "Ready", "status": "True"}],
            "containerStatuses": [{"name": "app", "image": "busybox", "imageID": "", "ready": true,
                "restartCount": 0, "started": true, "containerID": "sim://app",
                "state": {"running": {"startedAt": "2025-01-01T00:00:00Z"}}}]}});
        let output = run(
            &kubeconfig,
            &[
                "patch",
                "pod",
                &pod,
                "--subresource=status",
                "--type=merge",
                "-p",
                &status.to_string(),
            ],
            "",
        );
        assert!(output.status.success(), "kubectl patch: {output:?}");
    }

    create(
        &kubeconfig,
        json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "ghost", "namespace": "default"},
            "spec": {"nodeName": SPDY_NODE.0, "containers": [{"name": "app", "image": "busybox"}]}}),
    );
    let checks = tokio::task::spawn_blocking(move || {
        for (node, _) in [SPDY_NODE, WS_NODE] {
            check_pod(&kubeconfig, &format!("{node}-pod"));
        }
        // A pod the kubelet does not run (bound to its node in kube-apiserver only): the
        // kubelet's 404 comes back through kube-apiserver.
        let output = run(&kubeconfig, &["logs", "ghost"], "");
        let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
        assert!(
            output.stdout.is_empty() && stderr.contains("(NotFound)"),
            "{output:?}"
        );
    });
    let result = checks.await;
    fixture.stop().await;
    drop(plane);
    if let Err(err) = result {
        std::panic::resume_unwind(err.into_panic());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_reaches_simulated_kubelets_through_the_embedded_server() {
    log_to_test_output();
    if !kubectl_is_new_enough() {
        println!("skipped: no kubectl >= 1.37 (VCSYNC_KUBECTL or PATH)");
        return;
    }
    let server = crate::ApiServer::start(crate::ServerConfig::default())
        .await
        .unwrap();
    let simulator = server.start_simulator(crate::SimulatorConfig {
        nodes: 1,
        ..Default::default()
    });
    let objects = server.inner.shared.objects.clone();
    let pods = objects.registry.find("", "v1", "pods").unwrap();
    let pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "web", "namespace": "default"},
        "spec": {"containers": [{"name": "app", "image": "busybox"}]}});
    objects.create(&pods, "default", pod).unwrap();
    let started = Instant::now();
    while objects.get(&pods, "default", "web").unwrap()["status"]["phase"] != "Running" {
        assert!(started.elapsed() < Duration::from_secs(10), "the pod runs");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let dir = std::env::temp_dir().join(format!("vcsync-sim-kubelet-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let kubeconfig = dir.join("kubeconfig");
    std::fs::write(&kubeconfig, server.kubeconfig()).unwrap();
    let checks = tokio::task::spawn_blocking(move || check_pod(&kubeconfig, "web"));
    let result = checks.await;
    simulator.stop().await;
    server.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
    if let Err(err) = result {
        std::panic::resume_unwind(err.into_panic());
    }
}

/// Everything kubectl does with one pod.
fn check_pod(kubeconfig: &Path, pod: &str) {
    let lines: String = (1..=10)
        .map(|n| format!("line {n} of default/{pod}/app\n"))
        .collect();
    let output = run(kubeconfig, &["logs", pod], "");
    assert_eq!(stdout(&output), lines, "{pod}: logs {output:?}");
    let output = run(kubeconfig, &["logs", pod, "--tail=1", "--timestamps"], "");
    assert_eq!(
        stdout(&output),
        format!("2025-01-01T00:00:09.123456789Z line 10 of default/{pod}/app\n"),
        "{pod}: {output:?}"
    );
    follow_logs(kubeconfig, pod);

    let output = run(kubeconfig, &["exec", pod, "--", "echo", "hi"], "");
    assert_eq!(
        (output.status.code(), stdout(&output).as_str()),
        (Some(0), "hi\n"),
        "{pod}: {output:?}"
    );
    let output = run(kubeconfig, &["exec", "-i", pod, "--", "cat"], "hello\nworld\n");
    assert_eq!(stdout(&output), "hello\nworld\n", "{pod}: {output:?}");
    let output = run(kubeconfig, &["exec", pod, "--", "sh", "-c", "exit 3"], "");
    assert_eq!(output.status.code(), Some(3), "{pod}: {output:?}");
    let output = run(kubeconfig, &["exec", pod, "--", "nope"], "");
    assert_eq!(output.status.code(), Some(127), "{pod}: {output:?}");
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("nope: not found"),
        "{output:?}"
    );
    terminal(kubeconfig, pod);

    let output = run(kubeconfig, &["attach", "-i", pod, "-c", "app"], "echoed back\n");
    assert!(
        stdout(&output).contains("echoed back\n"),
        "{pod}: attach {output:?}"
    );
    assert!(output.status.success(), "{pod}: attach {output:?}");

    port_forward(kubeconfig, pod, true);

    // kubectl's SPDY fallbacks.
    let mut command = kubectl(
        kubeconfig,
        &["exec", pod, "--", "sh", "-c", "echo $HOSTNAME; exit 7"],
    );
    let output = command
        .env("KUBECTL_REMOTE_COMMAND_WEBSOCKETS", "false")
        .output()
        .unwrap();
    assert_eq!(
        (output.status.code(), stdout(&output)),
        (Some(7), format!("{pod}\n")),
        "{pod}: {output:?}"
    );
    port_forward(kubeconfig, pod, false);
}

/// `logs -f`: the ten lines, then one more every 200 ms.
fn follow_logs(kubeconfig: &Path, pod: &str) {
    let mut child = kubectl(kubeconfig, &["logs", "-f", "--tail=1", pod])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut reader = BufReader::new(child.stdout.take().unwrap());
    let started = Instant::now();
    for n in 10..=13 {
        let mut line = String::new();
        reader.read_line(&mut line).unwrap();
        assert_eq!(line, format!("line {n} of default/{pod}/app\n"));
    }
    let elapsed = started.elapsed();
    assert!(
        elapsed >= Duration::from_millis(500) && elapsed < Duration::from_secs(10),
        "{elapsed:?}"
    );
    child.kill().unwrap();
    child.wait().unwrap();
}

/// `exec -it` under `script`, which gives kubectl a terminal.
fn terminal(kubeconfig: &Path, pod: &str) {
    if Command::new("script").arg("--version").output().is_err() {
        println!("no `script`: exec -it not checked");
        return;
    }
    let command = format!(
        "{} --kubeconfig {} exec -it {pod} -- sh",
        kubectl_binary().display(),
        kubeconfig.display()
    );
    let mut child = Command::new("script")
        .args(["-qec", &command, "/dev/null"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    std::thread::sleep(Duration::from_secs(2));
    stdin.write_all(b"typed\rexit 4\r").unwrap();
    let mut out = String::new();
    child.stdout.take().unwrap().read_to_string(&mut out).unwrap();
    let status = child.wait().unwrap();
    assert!(
        out.contains("typed\r\nexit 4\r\n"),
        "{pod}: exec -it printed {out:?}"
    );
    assert_eq!(status.code(), Some(4), "{pod}: exec -it {out:?}");
}

/// `port-forward`: 64 KiB through a forwarded port come back, twice (kubectl's WebSocket
/// tunnel, or SPDY).
fn port_forward(kubeconfig: &Path, pod: &str, websockets: bool) {
    let mut child = kubectl(kubeconfig, &["port-forward", pod, ":8080"])
        .env("KUBECTL_PORT_FORWARD_WEBSOCKETS", websockets.to_string())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut reader = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    reader.read_line(&mut line).unwrap();
    // "Forwarding from 127.0.0.1:PORT -> 8080"
    let port: u16 = line
        .split_whitespace()
        .nth(2)
        .and_then(|a| a.rsplit(':').next())
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("{pod}: port-forward said {line:?}"));
    // Keep reading kubectl's stdout: it dies of SIGPIPE otherwise.
    let drain = std::thread::spawn(move || {
        let mut rest = String::new();
        let _ = reader.read_to_string(&mut rest);
    });
    let payload: Vec<u8> = (0..64 * 1024).map(|i| (i % 251) as u8).collect();
    for _ in 0..2 {
        let mut tcp = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        tcp.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        let writer = {
            let mut tcp = tcp.try_clone().unwrap();
            let payload = payload.clone();
            std::thread::spawn(move || {
                tcp.write_all(&payload).unwrap();
                tcp.shutdown(std::net::Shutdown::Write).unwrap();
            })
        };
        let mut echoed = Vec::new();
        tcp.read_to_end(&mut echoed).unwrap();
        writer.join().unwrap();
        assert!(echoed == payload, "{pod}: {} bytes came back", echoed.len());
    }
    child.kill().unwrap();
    let mut stderr = String::new();
    child.stderr.take().unwrap().read_to_string(&mut stderr).unwrap();
    child.wait().unwrap();
    drain.join().unwrap();
    assert!(!stderr.contains("error"), "{pod}: port-forward stderr {stderr}");
}
