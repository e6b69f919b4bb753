//! Kubelets without machines, for a control plane that runs none (as kwok does): nodes that
//! renew their Leases, a scheduler that binds every unscheduled pod to one of them, and kubelets
//! that report each bound pod Running with an IP and confirm each graceful deletion at once.
//! Everything goes through the API, so the control plane's own controllers see a cluster that
//! runs its pods. For `vcsync dev` and the benchmarks on real control planes; tests that need
//! one pod to run act as the kubelet themselves.

use std::{
    sync::atomic::{AtomicU32, Ordering},
    time::Duration,
};

use anyhow::Context;
use futures::StreamExt;
use k8s_openapi::{
    api::{
        coordination::v1::{Lease, LeaseSpec},
        core::v1::{Binding, Node, Pod},
    },
    apimachinery::pkg::apis::meta::v1::MicroTime,
    jiff::Timestamp,
};
use kube::{
    Api, Client,
    api::{DeleteParams, Patch, PatchParams, PostParams},
    runtime::{WatchStreamExt, watcher},
};
use serde_json::json;

/// The label that marks the nodes made here.
pub const FAKE_KUBELET_LABEL: &str = "vcsync.dev/fake-kubelet";

/// How often each node renews its Lease (the controller manager's grace period is 40 s).
const LEASE_RENEWAL: Duration = Duration::from_secs(10);

/// Running fake kubelets; they stop when dropped.
pub struct FakeKubelets {
    tasks: Vec<tokio::task::JoinHandle<()>>,
    nodes: Vec<String>,
    _api: Option<KubeletApi>,
}

/// A kubelet API answering for pods of nodes: the fake kubelet of `tests/control-plane`
/// (`fake-kubelet` among the assets), a process on a loopback port. Its containers log
/// `line N of {namespace}/{pod}/{container}`, echo what is written to them and know a few
/// commands (see its source). It stops when dropped.
pub struct KubeletApi {
    child: std::process::Child,
    port: u16,
}

impl KubeletApi {
    /// Starts `binary`, accepting only client certificates of the CA in `client_ca` (a
    /// kube-apiserver's kubelet client certificate).
    pub fn start(binary: &std::path::Path, client_ca: &std::path::Path) -> anyhow::Result<Self> {
        use std::io::BufRead;
        let mut child = std::process::Command::new(binary)
            .args(["--listen", "127.0.0.1:0", "--client-ca"])
            .arg(client_ca)
            .args(["--parent-pid", &std::process::id().to_string()])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .with_context(|| format!("starting {}", binary.display()))?;
        let mut line = String::new();
        let stdout = child.stdout.take().context("its stdout")?;
        std::io::BufReader::new(stdout).read_line(&mut line)?;
        let port = line.trim().rsplit(':').next().and_then(|port| port.parse().ok());
        let Some(port) = port else {
            let _ = child.kill();
            anyhow::bail!(
                "{} said {line:?}, not `listening on 127.0.0.1:PORT`",
                binary.display()
            );
        };
        Ok(Self { child, port })
    }

    /// Its port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }
}

impl Drop for KubeletApi {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl FakeKubelets {
    /// Makes (or takes back) `count` nodes named `node-1` ... and starts their scheduler,
    /// kubelets and Lease renewals on `client`'s cluster.
    pub async fn start(client: Client, count: usize) -> anyhow::Result<Self> {
        Self::start_with_api(client, count, None).await
    }

    /// [`Self::start`], the nodes' kubelet API `api` (their address 127.0.0.1 and its port), so
    /// that the API server's `pods/log`, `exec`, `attach` and `portforward` reach it.
    pub async fn start_with_api(
        client: Client,
        count: usize,
        api: Option<KubeletApi>,
    ) -> anyhow::Result<Self> {
        let nodes: Vec<String> = (1..=count).map(|i| format!("node-{i}")).collect();
        let node_api: Api<Node> = Api::all(client.clone());
        for (index, name) in nodes.iter().enumerate() {
            let node = node_object(name, index, api.as_ref().map(KubeletApi::port));
            match node_api.create(&PostParams::default(), &node).await {
                Ok(_) => {}
                Err(kube::Error::Api(status)) if status.code == 409 => {}
                Err(err) => return Err(err).with_context(|| format!("creating node {name}")),
            }
        }
        let mut tasks = vec![tokio::spawn(renew_leases(client.clone(), nodes.clone()))];
        if !nodes.is_empty() {
            tasks.push(tokio::spawn(run_pods(client, nodes.clone())));
        }
        Ok(Self {
            tasks,
            nodes,
            _api: api,
        })
    }

    /// The names of the nodes.
    pub fn nodes(&self) -> &[String] {
        &self.nodes
    }
}

impl Drop for FakeKubelets {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// The node `name`, Ready, with an InternalIP of its own, or with `kubelet_port` at 127.0.0.1
/// (the address of its kubelet API, which kube-apiserver calls; no Hostname address then, which
/// it would try first).
fn node_object(name: &str, index: usize, kubelet_port: Option<u16>) -> Node {
    let now = Timestamp::now().to_string();
    let mut node = json!({
        "metadata": {"name": name, "labels": {
            FAKE_KUBELET_LABEL: "true", "kubernetes.io/hostname": name,
            "kubernetes.io/os": "linux", "kubernetes.io/arch": "amd64"}},
        "status": {
            "capacity": {"cpu": "32", "memory": "128Gi", "pods": "1000"},
            "allocatable": {"cpu": "32", "memory": "128Gi", "pods": "1000"},
            "addresses": [{"type": "InternalIP", "address": format!("10.0.0.{}", index + 10)},
                          {"type": "Hostname", "address": name}],
            "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady",
                            "message": "fake kubelet", "lastHeartbeatTime": now,
                            "lastTransitionTime": now}],
            "nodeInfo": {"architecture": "amd64", "bootID": "", "containerRuntimeVersion": "fake://1",
                         "kernelVersion": "", "kubeProxyVersion": "", "kubeletVersion": "v1.37.2",
                         "machineID": "", "operatingSystem": "linux", "osImage": "fake",
                         "systemUUID": ""}
        }
    });
    if let Some(port) = kubelet_port {
        node["status"]["addresses"] = json!([{"type": "InternalIP", "address": "127.0.0.1"}]);
        node["status"]["daemonEndpoints"] = json!({"kubeletEndpoint": {"Port": port}});
    }
    serde_json::from_value(node).expect("a valid node")
}

/// Renews each node's Lease in `kube-node-lease`, creating it first.
async fn renew_leases(client: Client, nodes: Vec<String>) {
    let leases: Api<Lease> = Api::namespaced(client, "kube-node-lease");
    loop {
        for node in &nodes {
            // Typed, for the renew time's wire form (MicroTime: exactly six fractional digits).
            let lease = Lease {
                metadata: kube::api::ObjectMeta {
                    name: Some(node.clone()),
                    ..Default::default()
                },
                spec: Some(LeaseSpec {
                    holder_identity: Some(node.clone()),
                    lease_duration_seconds: Some(40),
                    renew_time: Some(MicroTime(Timestamp::now())),
                    ..Default::default()
                }),
            };
            let params = PatchParams::apply("fake-kubelet").force();
            if let Err(err) = leases.patch(node, &params, &Patch::Apply(lease)).await {
                tracing::warn!(%node, error = %err, "renewing the node's lease");
            }
        }
        tokio::time::sleep(LEASE_RENEWAL).await;
    }
}

/// The scheduler and the kubelets: binds, runs and finishes pods as their events come.
async fn run_pods(client: Client, nodes: Vec<String>) {
    let pods: Api<Pod> = Api::all(client.clone());
    let next_node = AtomicU32::new(0);
    let next_ip = AtomicU32::new(0);
    let events = watcher(pods, watcher::Config::default())
        .default_backoff()
        .applied_objects();
    events
        .map(|event| {
            let client = client.clone();
            let (nodes, next_node, next_ip) = (&nodes, &next_node, &next_ip);
            async move {
                let result = match event {
                    Ok(pod) => handle(&client, &pod, nodes, next_node, next_ip).await,
                    Err(err) => Err(err.into()),
                };
                if let Err(err) = result {
                    tracing::debug!(error = %err, "fake kubelets");
                }
            }
        })
        .buffer_unordered(64)
        .for_each(|()| async {})
        .await;
}

async fn handle(
    client: &Client,
    pod: &Pod,
    nodes: &[String],
    next_node: &AtomicU32,
    next_ip: &AtomicU32,
) -> anyhow::Result<()> {
    let (Some(name), Some(namespace)) = (&pod.metadata.name, &pod.metadata.namespace) else {
        return Ok(());
    };
    let api: Api<Pod> = Api::namespaced(client.clone(), namespace);
    let spec = pod.spec.as_ref().context("a pod without spec")?;
    let node = spec.node_name.as_deref();
    if pod.metadata.deletion_timestamp.is_some() {
        // The kubelet has stopped the containers: the pod may go.
        if node.is_some_and(|node| nodes.iter().any(|n| n == node)) {
            let now = DeleteParams {
                grace_period_seconds: Some(0),
                ..Default::default()
            };
            api.delete(name, &now).await?;
        }
        return Ok(());
    }
    let Some(node) = node else {
        let default_scheduler = spec
            .scheduler_name
            .as_deref()
            .is_none_or(|scheduler| scheduler == "default-scheduler");
        if default_scheduler && spec.scheduling_gates.as_ref().is_none_or(Vec::is_empty) {
            let index = next_node.fetch_add(1, Ordering::Relaxed) as usize % nodes.len();
            let binding: Binding = serde_json::from_value(json!({
                "metadata": {"name": name},
                "target": {"kind": "Node", "name": nodes[index]}
            }))?;
            api.create_subresource::<Binding, serde_json::Value>(
                "binding",
                name,
                &PostParams::default(),
                &binding,
            )
            .await?;
        }
        return Ok(());
    };
    let running = pod
        .status
        .as_ref()
        .and_then(|status| status.phase.as_deref())
        .is_some_and(|phase| phase != "Pending");
    if running || !nodes.iter().any(|n| n == node) {
        return Ok(());
    }
    let ip = next_ip.fetch_add(1, Ordering::Relaxed);
    let pod_ip = format!("10.244.{}.{}", (ip / 250) % 250, ip % 250 + 2);
    let node_index = nodes.iter().position(|n| n == node).unwrap_or(0);
    api.patch_status(
        name,
        &PatchParams::default(),
        &Patch::Merge(running_status(spec, &pod_ip, node_index)),
    )
    .await?;
    Ok(())
}

/// The status a kubelet reports for a pod whose containers all started.
fn running_status(
    spec: &k8s_openapi::api::core::v1::PodSpec,
    pod_ip: &str,
    node: usize,
) -> serde_json::Value {
    let now = Timestamp::now().to_string();
    let condition = |kind: &str| json!({"type": kind, "status": "True", "lastTransitionTime": now});
    let containers: Vec<serde_json::Value> = spec
        .containers
        .iter()
        .map(|container| {
            json!({
                "name": container.name, "image": container.image.clone().unwrap_or_default(),
                "imageID": "", "ready": true, "started": true, "restartCount": 0,
                "state": {"running": {"startedAt": now}}
            })
        })
        .collect();
    let conditions: Vec<serde_json::Value> = ["PodScheduled", "Initialized", "ContainersReady", "Ready"]
        .into_iter()
        .map(condition)
        .collect();
    json!({"status": {
        "phase": "Running", "podIP": pod_ip, "podIPs": [{"ip": pod_ip}],
        "hostIP": format!("10.0.0.{}", node + 10), "startTime": now,
        "conditions": conditions, "containerStatuses": containers,
    }})
}
