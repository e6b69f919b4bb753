//! The kubelet API vcsync serves for its virtual nodes, used as users use it: `kubectl logs`,
//! `exec`, `attach` and `port-forward` against the virtual API server, which calls the kubelet
//! of the pod's (virtual) node, vcsync, which calls the host API server's pod subresources, which
//! call the host node's kubelet. On real clusters that last kubelet is the fake kubelet of
//! `tests/control-plane` (`fake-kubelet` in `VCSYNC_KUBE_ASSETS`): its containers log
//! `line N of {namespace}/{pod}/{container}` in host names, echo what is written to them and
//! know a few commands, so every answer shows which host pod it came from.

use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Output, Stdio},
    time::Duration,
};

use base64::Engine as _;
use http::{Request, StatusCode};
use k8s_openapi::api::core::v1::{Namespace, Node, Pod};
use kube::{
    Api, Client,
    api::{DeleteParams, ObjectMeta, PostParams},
    config::{KubeConfigOptions, Kubeconfig},
};
use serde_json::json;
use vcsync_envtest::KubeletApi;

use crate::{
    env::{Env, eventually, get},
    kubectl::kubectl,
    kubelet::{HostKubelet, bind_host_pod, ensure_node_at, next_pod_ip, report_running},
};

/// A test's clusters with vcsync's kubelet API on, and host nodes whose kubelets answer.
pub(crate) struct KubeletSetup {
    pub(crate) env: Env,
    host_nodes: HostNodes,
    /// Folder of the CA files (the virtual plane's, for the syncer; the host's, for the kubelet).
    _dir: tempfile::TempDir,
}

/// Who runs the host pods and answers as their kubelet.
enum HostNodes {
    /// The embedded host's simulator: it schedules and runs pods, and each simulated node
    /// serves a kubelet API.
    Simulated { _simulator: HostKubelet },
    /// On real clusters: a node of the test's own, whose pods the test binds and reports
    /// running, and whose kubelet is the fake kubelet of `VCSYNC_KUBE_ASSETS`.
    Fake { node: String, _kubelet: KubeletApi },
}

/// Why a test cannot run here, printed as it returns.
fn skip(why: &str) -> Option<KubeletSetup> {
    eprintln!("skipping: {why}");
    None
}

impl KubeletSetup {
    /// The setup, or None (printed) where the clusters cannot call a kubelet on this machine.
    pub(crate) async fn start() -> Option<KubeletSetup> {
        let env = Env::new().await;
        let dir = tempfile::tempdir().unwrap();
        let virtual_ca = dir.path().join("virtual-ca.crt");
        let host_nodes = match env.embedded() {
            Some((_, virt)) => {
                std::fs::write(&virtual_ca, virt.kubelet_client_ca_pem()).unwrap();
                HostNodes::Simulated {
                    _simulator: HostKubelet::start(&env).await,
                }
            }
            None => {
                let virtual_server = server_of(env.virtual_kubeconfig());
                let host_server = server_of(env.host_kubeconfig());
                if !is_loopback(&virtual_server) || !is_loopback(&host_server) {
                    return skip(
                        "the clusters' API servers are not on this machine's loopback: they cannot call a kubelet here",
                    );
                }
                let Some(assets) = std::env::var_os("VCSYNC_KUBE_ASSETS").filter(|a| !a.is_empty()) else {
                    return skip("no VCSYNC_KUBE_ASSETS: no fake-kubelet for the host node");
                };
                let host_ca = write_ca(env.host_kubeconfig(), &dir.path().join("host-ca.crt"));
                write_ca(env.virtual_kubeconfig(), &virtual_ca);
                let kubelet = KubeletApi::start(&PathBuf::from(assets).join("fake-kubelet"), &host_ca)
                    .unwrap_or_else(|err| panic!("the fake kubelet: {err:#}"));
                let node = format!("kubelet-{}", env.instance);
                ensure_node_at(&env.host, &node, "127.0.0.1", Some(kubelet.port()))
                    .await
                    .unwrap_or_else(|err| panic!("host node {node}: {err}"));
                HostNodes::Fake {
                    node,
                    _kubelet: kubelet,
                }
            }
        };
        let mut setup = KubeletSetup {
            env,
            host_nodes,
            _dir: dir,
        };
        let config = format!(
            "kubelet:\n  listen: 127.0.0.1:0\n  clientCaFile: {}\n",
            virtual_ca.display()
        );
        setup.env.start_syncer(&config).await;
        Some(setup)
    }

    /// Creates virtual pod `namespace/name` (one container `app`), has its host twin run (on the
    /// test's node, or where the simulator puts it) and waits until the virtual pod is Running
    /// on the virtual twin of that node, which names vcsync's kubelet endpoint.
    pub(crate) async fn run_pod(&self, namespace: &str, name: &str) {
        let env = &self.env;
        let pod: Pod = serde_json::from_value(json!({
            "metadata": {"name": name},
            "spec": {"containers": [{"name": "app", "image": "busybox"}]}
        }))
        .unwrap();
        Api::<Pod>::namespaced(env.virt.clone(), namespace)
            .create(&PostParams::default(), &pod)
            .await
            .unwrap();
        if let HostNodes::Fake { node, .. } = &self.host_nodes {
            let host = env.mapping.host_key(namespace, name);
            let host_pods: Api<Pod> = Api::namespaced(env.host.clone(), host.namespace.as_deref().unwrap());
            eventually(&format!("host pod {host}"), || async {
                get(&host_pods, &host.name).await
            })
            .await;
            bind_in(env, &host, node).await;
        }
        let virtual_pods: Api<Pod> = Api::namespaced(env.virt.clone(), namespace);
        eventually(&format!("virtual pod {namespace}/{name} Running"), || async {
            get(&virtual_pods, name).await.filter(|pod| {
                pod.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running")
                    && pod.spec.as_ref().and_then(|s| s.node_name.as_deref()).is_some()
            })
        })
        .await;
        self.endpoint_port().await;
    }

    /// The kubelet port the virtual nodes name (vcsync's endpoint), once one names it.
    async fn endpoint_port(&self) -> u16 {
        let nodes: Api<Node> = Api::all(self.env.virt.clone());
        eventually("a virtual node naming a kubelet port", || async {
            let listed = nodes.list(&Default::default()).await.ok()?;
            listed.items.into_iter().find_map(|node| {
                let port = node.status?.daemon_endpoints?.kubelet_endpoint?.port;
                u16::try_from(port).ok().filter(|port| *port != 0)
            })
        })
        .await
    }

    /// kubectl against the virtual cluster in `namespace`, with `stdin`.
    pub(crate) async fn kubectl(&self, namespace: &str, args: &[&str], stdin: Option<&str>) -> Output {
        let mut command = Command::new(kubectl());
        command
            .arg("--kubeconfig")
            .arg(self.env.virtual_kubeconfig())
            .args(["-n", namespace])
            .args(args);
        let stdin = stdin.map(str::to_string);
        tokio::task::spawn_blocking(move || {
            use std::io::Write;
            let mut child = command
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .expect("running kubectl");
            let mut input = child.stdin.take().unwrap();
            if let Some(text) = stdin {
                input.write_all(text.as_bytes()).unwrap();
            }
            drop(input);
            child.wait_with_output().unwrap()
        })
        .await
        .unwrap()
    }

    /// What the host node's kubelet logs for container `app` of virtual pod `namespace/name`:
    /// its line `n`, in host names.
    fn log_line(&self, namespace: &str, name: &str, n: usize) -> String {
        let host = self.env.mapping.host_key(namespace, name);
        format!("line {n} of {}/{}/app", host.namespace.unwrap(), host.name)
    }

    /// A client of vcsync's endpoint with the credentials of `kubeconfig`'s user (none without),
    /// and `token` as bearer token if given, trusting the endpoint's self-signed certificate.
    pub(crate) async fn endpoint_client(&self, kubeconfig: Option<&Path>, token: Option<&str>) -> Client {
        let port = self.endpoint_port().await;
        let mut config = match kubeconfig {
            Some(path) => {
                let kubeconfig = Kubeconfig::read_from(path).unwrap();
                kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
                    .await
                    .unwrap()
            }
            None => kube::Config::new("https://127.0.0.1".parse().unwrap()),
        };
        config.cluster_url = format!("https://127.0.0.1:{port}").parse().unwrap();
        config.root_cert = None;
        config.accept_invalid_certs = true;
        if let Some(token) = token {
            config.auth_info.token = Some(token.to_string().into());
        }
        Client::try_from(config).unwrap()
    }

    /// Creates virtual namespace `name`, and waits for its host namespace where it has one.
    pub(crate) async fn create_namespace(&self, name: &str) {
        let namespace: Namespace = serde_json::from_value(json!({"metadata": {"name": name}})).unwrap();
        Api::<Namespace>::all(self.env.virt.clone())
            .create(&PostParams::default(), &namespace)
            .await
            .unwrap();
        if self.env.mapping.is_per_namespace() {
            let host_ns = self.env.mapping.host_namespace(name);
            eventually(&format!("host namespace {host_ns}"), || async {
                get(&Api::<Namespace>::all(self.env.host.clone()), &host_ns).await
            })
            .await;
        }
    }

    /// Deletes the test's host node (cluster-wide, so not left to the namespaces' clean-up).
    pub(crate) async fn finish(self) {
        if let HostNodes::Fake { node, .. } = &self.host_nodes {
            let _ = Api::<Node>::all(self.env.host.clone())
                .delete(node, &DeleteParams::default())
                .await;
        }
    }
}

/// Binds host pod `host` to `node` and reports it Running, as a host scheduler and kubelet do.
async fn bind_in(env: &Env, host: &vcsync_translators::HostKey, node: &str) {
    let namespace = host.namespace.as_deref().unwrap();
    if namespace == env.host_ns {
        bind_host_pod(env, &host.name, node).await;
        report_running(env, &host.name, &next_pod_ip()).await;
        return;
    }
    // A pod of another virtual namespace, in a host namespace of its own (per-namespace).
    let pods: Api<Pod> = Api::namespaced(env.host.clone(), namespace);
    let binding = json!({"apiVersion": "v1", "kind": "Binding", "metadata": {"name": host.name},
        "target": {"apiVersion": "v1", "kind": "Node", "name": node}});
    pods.create_subresource::<serde_json::Value, serde_json::Value>(
        "binding",
        &host.name,
        &PostParams::default(),
        &binding,
    )
    .await
    .unwrap();
    crate::kubelet::report_running_in(&pods, &host.name, &next_pod_ip()).await;
}

fn server_of(kubeconfig: &Path) -> String {
    let kubeconfig = Kubeconfig::read_from(kubeconfig).unwrap();
    kubeconfig.clusters[0]
        .cluster
        .as_ref()
        .unwrap()
        .server
        .clone()
        .unwrap_or_default()
}

fn is_loopback(server: &str) -> bool {
    let host = server.split("://").nth(1).unwrap_or(server);
    host.starts_with("127.") || host.starts_with("localhost") || host.starts_with("[::1]")
}

/// Writes the CA of `kubeconfig`'s cluster to `path`.
fn write_ca(kubeconfig: &Path, path: &Path) -> PathBuf {
    let kubeconfig = Kubeconfig::read_from(kubeconfig).unwrap();
    let cluster = kubeconfig.clusters[0].cluster.clone().unwrap();
    let pem = match (cluster.certificate_authority_data, cluster.certificate_authority) {
        (Some(data), _) => base64::engine::general_purpose::STANDARD.decode(data).unwrap(),
        (None, Some(file)) => std::fs::read(file).unwrap(),
        (None, None) => panic!("the kubeconfig names no CA"),
    };
    std::fs::write(path, pem).unwrap();
    path.to_path_buf()
}

pub(crate) fn text(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).to_string()
}

pub(crate) fn assert_success(output: &Output, what: &str) {
    assert!(
        output.status.success(),
        "{what} failed ({}): {}{}",
        output.status,
        String::from_utf8_lossy(&output.stderr),
        text(output)
    );
}

#[tokio::test]
async fn kubectl_logs_come_from_the_host_twin_through_the_syncer() {
    let Some(setup) = KubeletSetup::start().await else {
        return;
    };
    let ns = setup.env.virt_ns.clone();
    setup.run_pod(&ns, "web").await;

    let all = setup.kubectl(&ns, &["logs", "web"], None).await;
    assert_success(&all, "kubectl logs");
    let expected: Vec<String> = (1..=10).map(|n| setup.log_line(&ns, "web", n)).collect();
    assert_eq!(text(&all).lines().collect::<Vec<_>>(), expected);

    let tail = setup.kubectl(&ns, &["logs", "web", "--tail=3"], None).await;
    assert_success(&tail, "kubectl logs --tail=3");
    assert_eq!(text(&tail).lines().collect::<Vec<_>>(), expected[7..].to_vec());

    let stamped = setup
        .kubectl(
            &ns,
            &["logs", "web", "-c", "app", "--timestamps", "--tail=1"],
            None,
        )
        .await;
    assert_success(&stamped, "kubectl logs --timestamps");
    let line = text(&stamped);
    let (stamp, rest) = line.trim_end().split_once(' ').unwrap();
    assert!(stamp.parse::<k8s_openapi::jiff::Timestamp>().is_ok(), "{line}");
    assert_eq!(rest, expected[9]);

    // Followed: lines go on coming after the first ten, until kubectl is stopped.
    let mut follow = Command::new(kubectl())
        .arg("--kubeconfig")
        .arg(setup.env.virtual_kubeconfig())
        .args(["-n", &ns, "logs", "web", "-f"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = follow.stdout.take().unwrap();
    let want = setup.log_line(&ns, "web", 13);
    let seen = tokio::task::spawn_blocking(move || {
        use std::io::BufRead;
        std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
            .take_while(|line| *line != want)
            .count()
    });
    let seen = tokio::time::timeout(Duration::from_secs(20), seen).await;
    let _ = follow.kill();
    let _ = follow.wait();
    assert_eq!(seen.expect("line 13 within 20 s").unwrap(), 12);

    // A pod the virtual cluster does not have: kube-apiserver's own answer, as for any pod.
    let missing = setup.kubectl(&ns, &["logs", "nothing-here"], None).await;
    assert!(!missing.status.success());
    let stderr = String::from_utf8_lossy(&missing.stderr);
    assert!(stderr.contains("pods \"nothing-here\" not found"), "{stderr}");
    setup.finish().await;
}

#[tokio::test]
async fn kubectl_exec_and_attach_carry_stdin_stdout_and_exit_codes() {
    let Some(setup) = KubeletSetup::start().await else {
        return;
    };
    let ns = setup.env.virt_ns.clone();
    setup.run_pod(&ns, "shell").await;

    let echo = setup
        .kubectl(&ns, &["exec", "shell", "--", "echo", "hello", "tenant"], None)
        .await;
    assert_success(&echo, "kubectl exec echo");
    assert_eq!(text(&echo), "hello tenant\n");

    let host_name = setup.env.mapping.host_key(&ns, "shell").name;
    let hostname = setup
        .kubectl(&ns, &["exec", "shell", "-c", "app", "--", "hostname"], None)
        .await;
    assert_success(&hostname, "kubectl exec hostname");
    assert_eq!(
        text(&hostname).trim(),
        host_name,
        "the command ran in the host twin"
    );

    let cat = setup
        .kubectl(&ns, &["exec", "-i", "shell", "--", "cat"], Some("one\ntwo\n"))
        .await;
    assert_success(&cat, "kubectl exec -i cat");
    assert_eq!(text(&cat), "one\ntwo\n");

    let exit = setup
        .kubectl(&ns, &["exec", "shell", "--", "sh", "-c", "exit 3"], None)
        .await;
    assert_eq!(exit.status.code(), Some(3), "{exit:?}");
    let unknown = setup
        .kubectl(&ns, &["exec", "shell", "--", "no-such-command"], None)
        .await;
    assert_eq!(unknown.status.code(), Some(127), "{unknown:?}");
    assert!(String::from_utf8_lossy(&unknown.stderr).contains("no-such-command: not found"));

    let attach = setup
        .kubectl(&ns, &["attach", "-i", "shell", "-c", "app"], Some("attached\n"))
        .await;
    assert_success(&attach, "kubectl attach -i");
    assert!(text(&attach).contains("attached\n"), "{attach:?}");

    let missing = setup
        .kubectl(&ns, &["exec", "nothing-here", "--", "true"], None)
        .await;
    assert!(!missing.status.success());
    assert!(String::from_utf8_lossy(&missing.stderr).contains("pods \"nothing-here\" not found"));
    setup.finish().await;
}

#[tokio::test]
async fn kubectl_port_forward_carries_bytes_both_ways_in_a_second_namespace() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let Some(setup) = KubeletSetup::start().await else {
        return;
    };
    let other = format!("{}-b", setup.env.virt_ns);
    setup.create_namespace(&other).await;
    setup.run_pod(&other, "db").await;
    let logs = setup.kubectl(&other, &["logs", "db", "--tail=1"], None).await;
    assert_success(&logs, "kubectl logs in a second namespace");
    assert_eq!(text(&logs).trim(), setup.log_line(&other, "db", 10));

    let (mut forward, local) = port_forward(setup.env.virtual_kubeconfig(), &other, "pod/db", 5432).await;
    for round in 0..2u8 {
        let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", local))
            .await
            .unwrap();
        let payload: Vec<u8> = (0..64 * 1024).map(|i| (i * 7) as u8 ^ round).collect();
        let (mut read, mut write) = stream.split();
        let send = write.write_all(&payload);
        let mut echoed = vec![0u8; payload.len()];
        let receive = read.read_exact(&mut echoed);
        let (sent, received) =
            tokio::time::timeout(Duration::from_secs(20), async { tokio::join!(send, receive) })
                .await
                .expect("the echo within 20 s");
        sent.unwrap();
        received.unwrap_or_else(|err| panic!("round {round}: {err}"));
        assert!(echoed == payload, "round {round}: the bytes came back changed");
    }
    let _ = forward.kill();
    let _ = forward.wait();
    setup.finish().await;
}

/// Starts `kubectl port-forward TARGET :REMOTE` on loopback; returns it and its local port.
/// Its output is drained for as long as it runs (kubectl dies of SIGPIPE when its stdout closes).
async fn port_forward(kubeconfig: &Path, namespace: &str, target: &str, remote: u16) -> (Child, u16) {
    let mut forward = Command::new(kubectl())
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .args([
            "-n",
            namespace,
            "port-forward",
            target,
            &format!(":{remote}"),
            "--address",
            "127.0.0.1",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let stdout = forward.stdout.take().unwrap();
    let (first_line, line) = tokio::sync::oneshot::channel();
    std::thread::spawn(move || {
        use std::io::BufRead;
        let mut lines = std::io::BufReader::new(stdout).lines().map_while(Result::ok);
        let _ = first_line.send(lines.next());
        lines.for_each(drop);
    });
    let line = tokio::time::timeout(Duration::from_secs(20), line)
        .await
        .expect("kubectl port-forward said where it listens within 20 s")
        .unwrap()
        .expect("kubectl port-forward printed a line");
    // "Forwarding from 127.0.0.1:PORT -> REMOTE"
    let local = line
        .split_whitespace()
        .nth(2)
        .and_then(|address| address.rsplit(':').next())
        .and_then(|port| port.parse().ok())
        .unwrap_or_else(|| panic!("unexpected port-forward line {line:?}"));
    (forward, local)
}

#[tokio::test]
async fn the_kubelet_endpoint_answers_only_callers_with_node_rights_and_only_for_its_pods() {
    let Some(setup) = KubeletSetup::start().await else {
        return;
    };
    let ns = setup.env.virt_ns.clone();
    setup.run_pod(&ns, "web").await;
    let logs = |ns: &str, pod: &str| {
        Request::get(format!("/containerLogs/{ns}/{pod}/app?tailLines=1"))
            .body(kube::client::Body::empty())
            .unwrap()
    };
    let answer = |client: Client, request: Request<kube::client::Body>| async move {
        let response = client.send(request).await.unwrap();
        let status = response.status();
        (status, body_text(response).await)
    };

    // The virtual cluster's admin certificate (on the embedded servers, which authorise every
    // request, a token they issued): its own pod answers, another pod does not.
    let admin = match setup.env.embedded() {
        None => {
            setup
                .endpoint_client(Some(setup.env.virtual_kubeconfig()), None)
                .await
        }
        Some(_) => {
            let token = service_account_token(&setup.env.virt, &ns, "reader").await;
            setup.endpoint_client(None, Some(&token)).await
        }
    };
    let (status, body) = answer(admin.clone(), logs(&ns, "web")).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body.trim(), setup.log_line(&ns, "web", 10));
    let (status, body) = answer(admin.clone(), logs(&ns, "nothing-here")).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    let (status, _) = answer(admin.clone(), logs("kube-system", "web")).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, body) = answer(
        admin.clone(),
        Request::get("/healthz")
            .body(kube::client::Body::empty())
            .unwrap(),
    )
    .await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, "ok"));

    // No credentials: 401, nothing forwarded.
    let anonymous = setup.endpoint_client(None, None).await;
    let (status, body) = answer(anonymous, logs(&ns, "web")).await;
    assert_eq!(
        (status, body.as_str()),
        (StatusCode::UNAUTHORIZED, "Unauthorized")
    );

    if setup.env.embedded().is_some() {
        // The embedded servers authorise every request and issue no client certificates.
        setup.finish().await;
        return;
    }
    // A service account of the tenant without node rights: authenticated, then 403.
    let token = service_account_token(&setup.env.virt, &ns, "nobody").await;
    let nobody = setup.endpoint_client(None, Some(&token)).await;
    let (status, body) = answer(nobody, logs(&ns, "web")).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert!(body.contains("subresource=proxy"), "{body}");

    // A certificate of another CA (the host's admin): no TLS session at all.
    let stranger = setup
        .endpoint_client(Some(setup.env.host_kubeconfig()), None)
        .await;
    let refused = stranger.send(logs(&ns, "web")).await;
    assert!(
        refused.is_err(),
        "a foreign certificate got an answer: {:?}",
        refused.map(|r| r.status())
    );
    setup.finish().await;
}

/// A token of service account `name` (created) of namespace `namespace`.
pub(crate) async fn service_account_token(client: &Client, namespace: &str, name: &str) -> String {
    use k8s_openapi::api::{authentication::v1::TokenRequest, core::v1::ServiceAccount};
    let accounts: Api<ServiceAccount> = Api::namespaced(client.clone(), namespace);
    let account = ServiceAccount {
        metadata: ObjectMeta {
            name: Some(name.to_string()),
            ..ObjectMeta::default()
        },
        ..ServiceAccount::default()
    };
    accounts.create(&PostParams::default(), &account).await.unwrap();
    let request: TokenRequest = serde_json::from_value(json!({"spec": {"audiences": []}})).unwrap();
    let issued: TokenRequest = accounts
        .create_subresource("token", name, &PostParams::default(), &request)
        .await
        .unwrap();
    issued.status.and_then(|status| status.token).expect("a token")
}

pub(crate) async fn body_text(response: http::Response<kube::client::Body>) -> String {
    use http_body_util::BodyExt;
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    String::from_utf8_lossy(&bytes).to_string()
}

/// What the host node's kubelet reports once ephemeral container `name` of host pod `host`
/// starts (on real clusters the tests play that kubelet).
async fn report_ephemeral_running(env: &Env, host: &vcsync_translators::HostKey, name: &str) {
    use kube::api::{Patch, PatchParams};
    let pods: Api<Pod> = Api::namespaced(env.host.clone(), host.namespace.as_deref().unwrap());
    let status = json!({"status": {"ephemeralContainerStatuses": [{"name": name, "image": "busybox",
        "imageID": "", "ready": false, "restartCount": 0,
        "state": {"running": {"startedAt": k8s_openapi::jiff::Timestamp::now().to_string()}}}]}});
    pods.patch_status(&host.name, &PatchParams::default(), &Patch::Merge(&status))
        .await
        .unwrap_or_else(|err| panic!("reporting ephemeral container {name} of {host} running: {err}"));
}

/// The names of the ephemeral containers host pod `host` has.
async fn host_ephemeral_containers(env: &Env, host: &vcsync_translators::HostKey) -> Vec<String> {
    let pods: Api<Pod> = Api::namespaced(env.host.clone(), host.namespace.as_deref().unwrap());
    let pod = get(&pods, &host.name).await.expect("the host pod");
    pod.spec
        .and_then(|s| s.ephemeral_containers)
        .unwrap_or_default()
        .into_iter()
        .map(|c| c.name)
        .collect()
}

#[tokio::test]
async fn kubectl_debug_adds_an_ephemeral_container_to_the_host_twin_and_attaches_to_it() {
    let Some(setup) = KubeletSetup::start().await else {
        return;
    };
    let ns = setup.env.virt_ns.clone();
    setup.run_pod(&ns, "web").await;
    let host = setup.env.mapping.host_key(&ns, "web");

    // kubectl waits for the container to run, then attaches with stdin: the echo comes back.
    let debug = setup.kubectl(
        &ns,
        &[
            "debug",
            "web",
            "-i",
            "--image=busybox",
            "--container=debugger",
            "--profile=baseline",
            "--",
            "cat",
        ],
        Some("hello from the debugger\n"),
    );
    let report = async {
        eventually("the debugger on the host pod", || async {
            host_ephemeral_containers(&setup.env, &host)
                .await
                .contains(&"debugger".to_string())
                .then_some(())
        })
        .await;
        if setup.env.embedded().is_none() {
            report_ephemeral_running(&setup.env, &host, "debugger").await;
        }
    };
    let (output, ()) = tokio::join!(debug, report);
    assert_success(&output, "kubectl debug -i");
    assert!(text(&output).contains("hello from the debugger"), "{output:?}");
    let virtual_pod = get(&Api::<Pod>::namespaced(setup.env.virt.clone(), &ns), "web")
        .await
        .unwrap();
    let statuses = virtual_pod
        .status
        .unwrap()
        .ephemeral_container_statuses
        .unwrap_or_default();
    assert_eq!(
        statuses.first().map(|s| s.name.as_str()),
        Some("debugger"),
        "the host's status came up"
    );

    // The general profile's SYS_PTRACE for --target breaks the baseline Pod Security Standard:
    // the container never reaches the host, and kubectl learns why at once.
    let refused = setup
        .kubectl(
            &ns,
            &[
                "debug",
                "web",
                "-i",
                "--image=busybox",
                "--container=prying",
                "--target=app",
                "--profile=general",
                "--",
                "cat",
            ],
            Some(""),
        )
        .await;
    let virtual_pod = eventually("the refused container's status", || async {
        let pod = get(&Api::<Pod>::namespaced(setup.env.virt.clone(), &ns), "web").await?;
        let status = pod
            .status?
            .ephemeral_container_statuses?
            .into_iter()
            .find(|s| s.name == "prying")?;
        status.state?.terminated
    })
    .await;
    assert_eq!(
        virtual_pod.reason.as_deref(),
        Some("PodSecurityViolation"),
        "{refused:?}"
    );
    assert!(
        !host_ephemeral_containers(&setup.env, &host)
            .await
            .contains(&"prying".to_string())
    );
    setup.finish().await;
}
