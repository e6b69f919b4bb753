//! `metrics.k8s.io/v1beta1` on the embedded server with its simulator: the metrics API answers
//! with what each node's kubelet reports in `/stats/summary` (read here straight from the
//! simulated kubelet, with the kubelet client certificate the server keeps in its state
//! directory), and `kubectl top` / `kubectl get podmetrics` work against it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use k8s_openapi::api::core::v1::{Namespace, Node, Pod};
use kube::api::{Api, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};
use serde_json::{Value, json};
use vcsync_apiserver::{ApiServer, ServerConfig, SimulatorConfig};

type TestResult = Result<(), Box<dyn std::error::Error + Send + Sync>>;

const NS: &str = "metrics";
const API: &str = "/apis/metrics.k8s.io/v1beta1";

async fn get(client: &Client, path: &str) -> Result<Value, kube::Error> {
    client
        .request::<Value>(http::Request::get(path).body(Vec::new()).unwrap())
        .await
}

/// The API error code of a failed request.
fn code(result: Result<Value, kube::Error>) -> (u16, String) {
    match result {
        Err(kube::Error::Api(status)) => (status.code, status.message),
        other => panic!("expected an API error, got {other:?}"),
    }
}

/// Nano-cores of a CPU quantity (`2500123n`, `2500u`, `3m`, `1`).
fn nano_cores(quantity: &str) -> u64 {
    let (number, scale) = match quantity.char_indices().last() {
        Some((i, 'n')) => (&quantity[..i], 1),
        Some((i, 'u')) => (&quantity[..i], 1_000),
        Some((i, 'm')) => (&quantity[..i], 1_000_000),
        _ => (quantity, 1_000_000_000),
    };
    number.parse::<u64>().unwrap() * scale
}

/// Bytes of a memory quantity (`8196Ki`, `4Mi`, `5000000`).
fn bytes(quantity: &str) -> u64 {
    let powers = [("Ki", 1u64 << 10), ("Mi", 1 << 20), ("Gi", 1 << 30)];
    for (suffix, scale) in powers {
        if let Some(number) = quantity.strip_suffix(suffix) {
            return number.parse::<u64>().unwrap() * scale;
        }
    }
    quantity.parse().unwrap()
}

/// A client for a simulated node's kubelet, presenting the server's kubelet client certificate
/// (kept in `state_dir`) and not checking the kubelet's self-signed serving certificate.
async fn kubelet_client(state_dir: &Path, node: &Node) -> Client {
    let text = std::fs::read_to_string(state_dir.join("kubelet-client.json")).unwrap();
    let [_ca, cert, key]: [String; 3] = serde_json::from_str(&text).unwrap();
    let status = node.status.as_ref().unwrap();
    let address = &status.addresses.as_ref().unwrap()[0].address;
    let port = status
        .daemon_endpoints
        .as_ref()
        .unwrap()
        .kubelet_endpoint
        .as_ref()
        .unwrap()
        .port;
    let kubeconfig = json!({
        "apiVersion": "v1", "kind": "Config", "current-context": "kubelet",
        "clusters": [{"name": "kubelet", "cluster": {"server": format!("https://{address}:{port}"),
            "insecure-skip-tls-verify": true}}],
        "users": [{"name": "kubelet", "user": {"client-certificate-data": STANDARD.encode(cert),
            "client-key-data": STANDARD.encode(key)}}],
        "contexts": [{"name": "kubelet", "context": {"cluster": "kubelet", "user": "kubelet"}}],
    });
    let kubeconfig: Kubeconfig = serde_json::from_value(kubeconfig).unwrap();
    let config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .unwrap();
    Client::try_from(config).unwrap()
}

fn pod(name: &str, app: &str, containers: Value) -> Pod {
    serde_json::from_value(json!({"metadata": {"name": name, "labels": {"app": app}},
        "spec": {"containers": containers}}))
    .unwrap()
}

/// Starts a server (with a state directory) and a simulator, and runs pods in namespace `NS`:
/// web-0 and web-1 (app=web, two containers, one with limits) and db (app=db). `case` names
/// the state directory.
async fn start(case: &str) -> (ApiServer, Client, PathBuf, BTreeMap<String, Pod>) {
    let state_dir = std::env::temp_dir().join(format!("vcsync-metrics-{}-{case}", std::process::id()));
    let _ = std::fs::remove_dir_all(&state_dir);
    std::fs::create_dir_all(&state_dir).unwrap();
    let server = ApiServer::start(ServerConfig {
        state_dir: Some(state_dir.clone()),
        ..ServerConfig::default()
    })
    .await
    .unwrap();
    // The simulator runs until the server shuts down.
    drop(server.start_simulator(SimulatorConfig::default()));
    let client = Client::try_from(Config::new(server.url().parse().unwrap())).unwrap();
    let namespace: Namespace = serde_json::from_value(json!({"metadata": {"name": NS}})).unwrap();
    Api::<Namespace>::all(client.clone())
        .create(&PostParams::default(), &namespace)
        .await
        .unwrap();
    let pods: Api<Pod> = Api::namespaced(client.clone(), NS);
    let web = json!([{"name": "app", "image": "nginx:1"},
        {"name": "side", "image": "busybox", "resources": {"limits": {"cpu": "2m", "memory": "2Mi"}}}]);
    for (name, app, containers) in [
        ("web-0", "web", web.clone()),
        ("web-1", "web", web),
        ("db", "db", json!([{"name": "postgres", "image": "postgres:17"}])),
    ] {
        pods.create(&PostParams::default(), &pod(name, app, containers))
            .await
            .unwrap();
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let list = pods.list(&Default::default()).await.unwrap();
        let running = list
            .items
            .iter()
            .filter(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running"))
            .count();
        if running == 3 {
            let by_name = list
                .items
                .into_iter()
                .map(|p| (p.metadata.name.clone().unwrap(), p))
                .collect();
            return (server, client, state_dir, by_name);
        }
        assert!(tokio::time::Instant::now() < deadline, "the pods did not run");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pod_and_node_metrics_are_what_the_kubelets_report() -> TestResult {
    let (server, client, state_dir, pods) = start("api").await;
    let nodes: Api<Node> = Api::all(client.clone());

    let list = get(&client, &format!("{API}/namespaces/{NS}/pods")).await?;
    assert_eq!(list["kind"], "PodMetricsList");
    assert_eq!(list["apiVersion"], "metrics.k8s.io/v1beta1");
    let items = list["items"].as_array().unwrap();
    let names: Vec<&str> = items
        .iter()
        .map(|i| i["metadata"]["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["db", "web-0", "web-1"]);

    // Each pod's usage is its node's summary's, container by container.
    let mut per_node: BTreeMap<String, (u64, u64)> = BTreeMap::new();
    for item in items {
        let name = item["metadata"]["name"].as_str().unwrap();
        let pod = &pods[name];
        assert_eq!(item["metadata"]["namespace"], NS);
        assert_eq!(
            item["metadata"]["labels"]["app"],
            name.trim_end_matches(['-', '0', '1'])
        );
        assert_eq!(item["window"], "30s");
        let node_name = pod.spec.as_ref().unwrap().node_name.clone().unwrap();
        let kubelet = kubelet_client(&state_dir, &nodes.get(&node_name).await?).await;
        let summary: Value = serde_json::from_str(
            &kubelet
                .request_text(http::Request::get("/stats/summary").body(Vec::new())?)
                .await?,
        )?;
        let stats = summary["pods"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["podRef"]["name"] == name)
            .unwrap_or_else(|| panic!("{name} in the summary of {node_name}"));
        let containers = item["containers"].as_array().unwrap();
        assert_eq!(containers.len(), stats["containers"].as_array().unwrap().len());
        for (metrics, stats) in containers.iter().zip(stats["containers"].as_array().unwrap()) {
            assert_eq!(metrics["name"], stats["name"]);
            let cpu = nano_cores(metrics["usage"]["cpu"].as_str().unwrap());
            let memory = bytes(metrics["usage"]["memory"].as_str().unwrap());
            assert_eq!(cpu, stats["cpu"]["usageNanoCores"].as_u64().unwrap(), "{name}");
            assert_eq!(
                memory,
                stats["memory"]["workingSetBytes"].as_u64().unwrap(),
                "{name}"
            );
            if metrics["name"] == "side" {
                assert!(cpu <= 2_000_000 && memory <= 2 << 20, "within its limits");
            }
            let total = per_node.entry(node_name.clone()).or_default();
            total.0 += cpu;
            total.1 += memory;
        }
    }

    // Selectors, a single pod, and what is not there.
    let web = get(
        &client,
        &format!("{API}/namespaces/{NS}/pods?labelSelector=app%3Dweb"),
    )
    .await?;
    assert_eq!(web["items"].as_array().unwrap().len(), 2);
    let db = get(&client, &format!("{API}/pods?fieldSelector=metadata.name%3Ddb")).await?;
    assert_eq!(db["items"].as_array().unwrap().len(), 1);
    let one = get(&client, &format!("{API}/namespaces/{NS}/pods/web-1")).await?;
    assert_eq!(one["kind"], "PodMetrics");
    assert_eq!(one["containers"].as_array().unwrap().len(), 2);
    assert_eq!(
        code(get(&client, &format!("{API}/namespaces/{NS}/pods/nope")).await),
        (404, "pods \"nope\" not found".to_string())
    );
    // A pod that does not run has no metrics (as metrics-server words it).
    let stuck: Pod = serde_json::from_value(json!({"metadata": {"name": "stuck"},
        "spec": {"nodeSelector": {"nowhere": "true"}, "containers": [{"name": "app", "image": "nginx"}]}}))?;
    Api::<Pod>::namespaced(client.clone(), NS)
        .create(&PostParams::default(), &stuck)
        .await?;
    assert_eq!(
        code(get(&client, &format!("{API}/namespaces/{NS}/pods/stuck")).await),
        (404, format!("podmetrics.metrics.k8s.io \"{NS}/stuck\" not found"))
    );
    let post = http::Request::post(format!("{API}/namespaces/{NS}/pods")).body(b"{}".to_vec())?;
    assert_eq!(code(client.request::<Value>(post).await).0, 405);

    // Nodes: the sum of their pods (the only pods there are).
    let node_list = get(&client, &format!("{API}/nodes")).await?;
    assert_eq!(node_list["kind"], "NodeMetricsList");
    for item in node_list["items"].as_array().unwrap() {
        let name = item["metadata"]["name"].as_str().unwrap();
        let (cpu, memory) = per_node.get(name).copied().unwrap_or_default();
        assert_eq!(nano_cores(item["usage"]["cpu"].as_str().unwrap()), cpu, "{name}");
        assert_eq!(bytes(item["usage"]["memory"].as_str().unwrap()), memory, "{name}");
    }
    assert_eq!(node_list["items"].as_array().unwrap().len(), 3);
    let node = get(&client, &format!("{API}/nodes/sim-node-0")).await?;
    assert_eq!(node["kind"], "NodeMetrics");
    assert_eq!(node["metadata"]["labels"]["kubernetes.io/hostname"], "sim-node-0");

    // Discovery.
    let groups = get(&client, "/apis").await?;
    assert!(
        groups["groups"]
            .as_array()
            .unwrap()
            .iter()
            .any(|g| g["name"] == "metrics.k8s.io")
    );
    let resources = get(&client, API).await?;
    assert_eq!(resources["resources"].as_array().unwrap().len(), 2);

    server.shutdown().await;
    let _ = std::fs::remove_dir_all(&state_dir);
    Ok(())
}

/// kubectl, if one is at hand (`VCSYNC_KUBECTL`, or on PATH).
fn kubectl() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("VCSYNC_KUBECTL") {
        return Some(PathBuf::from(path));
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|dir| dir.join("kubectl"))
        .find(|candidate| {
            Command::new(candidate)
                .args(["version", "--client"])
                .output()
                .is_ok_and(|o| o.status.success())
        })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_top_and_get_podmetrics() -> TestResult {
    let Some(kubectl) = kubectl() else {
        eprintln!("kubectl_top_and_get_podmetrics skipped: no kubectl (VCSYNC_KUBECTL or PATH)");
        return Ok(());
    };
    let (server, _client, state_dir, _pods) = start("kubectl").await;
    let kubeconfig = state_dir.join("kubeconfig");
    std::fs::write(&kubeconfig, server.kubeconfig())?;
    let cache = state_dir.join("kube-cache");
    let run = |args: &[&str]| {
        let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        let mut command = Command::new(&kubectl);
        command
            .arg("--kubeconfig")
            .arg(&kubeconfig)
            .arg("--cache-dir")
            .arg(&cache)
            .args(&args);
        async move {
            let output = tokio::task::spawn_blocking(move || command.output())
                .await
                .unwrap()
                .unwrap();
            let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
            let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
            assert!(output.status.success(), "kubectl {args:?}: {stderr}");
            stdout
        }
    };
    let top = run(&["top", "pods", "-n", NS]).await;
    let lines: Vec<&str> = top.lines().collect();
    assert!(
        lines[0].starts_with("NAME") && lines[0].contains("CPU(cores)"),
        "{top}"
    );
    let rows: Vec<&str> = lines[1..]
        .iter()
        .map(|l| l.split_whitespace().next().unwrap())
        .collect();
    assert_eq!(rows.len(), 3, "{top}");
    for row in &lines[1..] {
        let cells: Vec<&str> = row.split_whitespace().collect();
        assert!(cells[1].ends_with('m') && cells[2].ends_with("Mi"), "{row}");
    }
    let all = run(&["top", "pods", "-A"]).await;
    assert!(
        all.lines().any(|l| l.starts_with(NS) && l.contains("web-0")),
        "{all}"
    );
    let containers = run(&["top", "pod", "web-0", "-n", NS, "--containers"]).await;
    assert!(containers.contains("side"), "{containers}");
    let nodes = run(&["top", "nodes"]).await;
    assert!(
        nodes.contains("sim-node-0") && nodes.contains("CPU(cores)"),
        "{nodes}"
    );
    let table = run(&["get", "podmetrics", "-n", NS]).await;
    assert!(table.lines().next().unwrap().contains("WINDOW"), "{table}");
    assert!(table.contains("web-1") && table.contains("30s"), "{table}");

    server.shutdown().await;
    let _ = std::fs::remove_dir_all(&state_dir);
    Ok(())
}
