//! The host's scheduler and kubelet, played by the tests so that a test that needs pods
//! scheduled or running holds on every host: the embedded host (no scheduler, no kubelet of its
//! own, but a simulator) and a real control plane without nodes. Through the host API only, as
//! the real ones: a Node object (kept alive by its Lease and heartbeats), `pods/binding`,
//! `pods/status`, and the deletion with grace period 0 that ends a terminating pod.
//!
//! Two ways to use it, not both in one test:
//! - [`HostKubelet::start`]: for the whole test, every host pod of the test's host namespace is
//!   bound, reported Running with an IP of its own, and deleted once its grace period is over
//!   (on the embedded host, its simulator does that, with its endpoints controller);
//! - step by step: [`run_host_pod`] (or [`bind_host_pod`] then [`report_running`]) and
//!   [`finish_host_pod_deletion`], the same on both kinds of host.

use std::{
    collections::HashMap,
    net::Ipv4Addr,
    sync::atomic::{AtomicU32, Ordering},
    time::{Duration, Instant},
};

use k8s_openapi::{
    api::{
        coordination::v1::Lease,
        core::v1::{Namespace, Node, Pod},
    },
    apimachinery::pkg::apis::meta::v1::{MicroTime, Time},
    jiff::Timestamp,
};
use kube::{
    Api, Client,
    api::{DeleteParams, ListParams, Patch, PatchParams, PostParams, Preconditions},
};
use serde_json::{Value, json};
use tokio::task::JoinHandle;
use vcsync_apiserver::{Simulator, SimulatorConfig};
use vcsync_translators::MANAGED_BY_LABEL;

use crate::env::{Env, eventually, get};

/// The host node the tests bind pods to (no kubelet runs for it on any host).
pub const NODE: &str = "vcsync-e2e-node";

/// The InternalIP of [`NODE`], the `hostIP` of its pods.
pub const NODE_IP: &str = "192.168.7.1";

const FIELD_MANAGER: &str = "vcsync-e2e-kubelet";

/// How often [`HostKubelet`] renews [`NODE`]'s lease and heartbeat on a real host (a node
/// controller marks a node silent for 40 s or more NotReady, and its pods with it).
const HEARTBEAT: Duration = Duration::from_secs(10);

/// A host pod that runs: the node it is bound to and its IP.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunningPod {
    pub node: String,
    pub ip: String,
}

/// The host's scheduler and kubelets for the whole test; they stop when this is dropped.
pub struct HostKubelet {
    _simulator: Option<Simulator>,
    task: Option<JoinHandle<()>>,
}

impl HostKubelet {
    /// Starts them: the embedded host's simulator, or on a real host a task that binds every
    /// pod of the test's host namespace to [`NODE`], reports it Running with an IP of its own,
    /// and deletes it once its grace period has passed after its deletion (a kubelet's part).
    pub async fn start(env: &Env) -> HostKubelet {
        if let Some((host, _)) = env.embedded() {
            return HostKubelet {
                _simulator: Some(host.start_simulator(SimulatorConfig::default())),
                task: None,
            };
        }
        ensure_node(&env.host)
            .await
            .unwrap_or_else(|err| panic!("host node {NODE}: {err}"));
        let (client, namespace, instance) = (env.host.clone(), env.host_ns.clone(), env.instance.clone());
        let task = tokio::spawn(async move { kubelet_loop(client, namespace, instance).await });
        HostKubelet {
            _simulator: None,
            task: Some(task),
        }
    }
}

impl Drop for HostKubelet {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

async fn kubelet_loop(client: Client, namespace: String, instance: String) {
    let pods: Api<Pod> = Api::namespaced(client.clone(), &namespace);
    let selector = ListParams::default().labels(&format!("{MANAGED_BY_LABEL}={instance}"));
    let mut deleting_since: HashMap<String, Instant> = HashMap::new();
    let mut heartbeat = Instant::now();
    loop {
        if heartbeat.elapsed() >= HEARTBEAT {
            if let Err(err) = ensure_node(&client).await {
                eprintln!("[kubelet] renewing host node {NODE}: {err}");
            }
            heartbeat = Instant::now();
        }
        let listed = match pods.list(&selector).await {
            Ok(listed) => listed.items,
            Err(err) => {
                eprintln!("[kubelet] listing host pods: {err}");
                Vec::new()
            }
        };
        for pod in listed {
            let (name, uid) = (
                pod.metadata.name.clone().unwrap_or_default(),
                pod.metadata.uid.clone(),
            );
            if pod.metadata.deletion_timestamp.is_some() {
                let since = *deleting_since
                    .entry(uid.clone().unwrap_or_default())
                    .or_insert_with(Instant::now);
                let grace = pod.metadata.deletion_grace_period_seconds.unwrap_or(0).max(0);
                if since.elapsed() >= Duration::from_secs(grace as u64)
                    && let Err(err) = delete_now(&pods, &name, uid).await
                {
                    eprintln!("[kubelet] deleting host pod {name}: {err}");
                }
                continue;
            }
            let node = pod.spec.as_ref().and_then(|s| s.node_name.clone());
            let result = match node.as_deref() {
                None => match bind(&pods, &name, NODE).await {
                    Ok(()) => report(&pods, &name, &next_pod_ip()).await,
                    Err(err) => Err(err),
                },
                Some(NODE) if pod_ip(&pod).is_none() => report(&pods, &name, &next_pod_ip()).await,
                Some(_) => Ok(()),
            };
            if let Err(err) = result {
                eprintln!("[kubelet] running host pod {name}: {err}");
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// What a host scheduler and kubelet do for host pod `host_pod` (waited for): bind it to
/// [`NODE`] (unless bound already) and report it Running with an IP of its own. Not with
/// [`HostKubelet`] in the same test.
pub async fn run_host_pod(env: &Env, host_pod: &str) -> RunningPod {
    let pods = env.host_api::<Pod>();
    let pod = eventually(&format!("host pod {host_pod}"), || async {
        get(&pods, host_pod).await
    })
    .await;
    let node = match pod.spec.as_ref().and_then(|s| s.node_name.clone()) {
        Some(node) => node,
        None => {
            bind_host_pod(env, host_pod, NODE).await;
            NODE.to_string()
        }
    };
    let ip = next_pod_ip();
    report_running(env, host_pod, &ip).await;
    RunningPod { node, ip }
}

/// What a host scheduler does: binds host pod `host_pod` to `node`. [`NODE`] is created (and
/// its heartbeat renewed) first; any other node is left as it is.
pub async fn bind_host_pod(env: &Env, host_pod: &str, node: &str) {
    if node == NODE {
        ensure_node(&env.host)
            .await
            .unwrap_or_else(|err| panic!("host node {NODE}: {err}"));
    }
    bind(&env.host_api::<Pod>(), host_pod, node)
        .await
        .unwrap_or_else(|err| panic!("binding host pod {host_pod} to {node}: {err}"));
}

/// What a host kubelet reports for host pod `host_pod` once all its containers run: phase
/// Running, `pod_ip`, Ready.
pub async fn report_running(env: &Env, host_pod: &str, pod_ip: &str) {
    report(&env.host_api::<Pod>(), host_pod, pod_ip)
        .await
        .unwrap_or_else(|err| panic!("reporting host pod {host_pod} Running: {err}"));
}

/// [`report_running`] for a host pod of `pods` (another host namespace than the test's).
pub async fn report_running_in(pods: &Api<Pod>, host_pod: &str, pod_ip: &str) {
    report(pods, host_pod, pod_ip)
        .await
        .unwrap_or_else(|err| panic!("reporting host pod {host_pod} Running: {err}"));
}

/// What a host kubelet does when host pod `host_pod` is deleted (waited for): its containers
/// stop at once and it deletes the pod for good (grace period 0, its UID as precondition).
pub async fn finish_host_pod_deletion(env: &Env, host_pod: &str) {
    let pods = env.host_api::<Pod>();
    let pod = eventually(&format!("host pod {host_pod} terminating"), || async {
        get(&pods, host_pod)
            .await
            .filter(|p| p.metadata.deletion_timestamp.is_some())
    })
    .await;
    delete_now(&pods, host_pod, pod.metadata.uid)
        .await
        .unwrap_or_else(|err| panic!("deleting host pod {host_pod}: {err}"));
}

/// A pod IP no other pod of this test process has, outside the simulator's 10.244.0.0/16.
pub fn next_pod_ip() -> String {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let n = (std::process::id().wrapping_mul(7919) + NEXT.fetch_add(1, Ordering::Relaxed)) % (254 * 256);
    Ipv4Addr::new(10, 245, (n / 254) as u8, (n % 254 + 1) as u8).to_string()
}

fn pod_ip(pod: &Pod) -> Option<&str> {
    pod.status.as_ref()?.pod_ip.as_deref()
}

async fn bind(pods: &Api<Pod>, host_pod: &str, node: &str) -> kube::Result<()> {
    let binding = json!({"apiVersion": "v1", "kind": "Binding", "metadata": {"name": host_pod},
        "target": {"apiVersion": "v1", "kind": "Node", "name": node}});
    pods.create_subresource::<Value, Value>("binding", host_pod, &PostParams::default(), &binding)
        .await
        .map(drop)
}

async fn report(pods: &Api<Pod>, host_pod: &str, pod_ip: &str) -> kube::Result<()> {
    let pod = pods.get(host_pod).await?;
    pods.patch_status(
        host_pod,
        &PatchParams::default(),
        &Patch::Merge(running_status(&pod, pod_ip)),
    )
    .await
    .map(drop)
}

/// Deletes host pod `host_pod` for good (grace period 0), if it still is the pod of `uid`.
async fn delete_now(pods: &Api<Pod>, host_pod: &str, uid: Option<String>) -> kube::Result<()> {
    let params = DeleteParams {
        grace_period_seconds: Some(0),
        preconditions: Some(Preconditions {
            uid,
            resource_version: None,
        }),
        ..Default::default()
    };
    match pods.delete(host_pod, &params).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(status)) if status.code == 404 || status.code == 409 => Ok(()),
        Err(err) => Err(err),
    }
}

fn now() -> Value {
    serde_json::to_value(Time(Timestamp::now())).unwrap()
}

/// The status a kubelet writes for `pod` running: every container started and ready.
fn running_status(pod: &Pod, pod_ip: &str) -> Value {
    let now = now();
    let spec = pod.spec.clone().unwrap_or_default();
    let image_id = |image: &Option<String>| {
        format!(
            "docker.io/library/{}@sha256:0000000000000000000000000000000000000000000000000000000000000000",
            image
                .as_deref()
                .unwrap_or("unknown")
                .split(':')
                .next()
                .unwrap_or_default()
        )
    };
    let containers: Vec<Value> = spec
        .containers
        .iter()
        .map(|c| {
            json!({"name": c.name, "image": c.image, "imageID": image_id(&c.image), "ready": true,
                "started": true, "restartCount": 0, "state": {"running": {"startedAt": now}}})
        })
        .collect();
    let init: Vec<Value> = spec
        .init_containers
        .iter()
        .flatten()
        .map(|c| {
            json!({"name": c.name, "image": c.image, "imageID": image_id(&c.image), "ready": true,
                "restartCount": 0, "state": {"terminated": {"exitCode": 0, "reason": "Completed",
                "startedAt": now, "finishedAt": now}}})
        })
        .collect();
    let condition = |type_: &str| json!({"type": type_, "status": "True", "lastTransitionTime": now});
    let conditions: Vec<Value> = [
        "PodReadyToStartContainers",
        "Initialized",
        "Ready",
        "ContainersReady",
        "PodScheduled",
    ]
    .map(condition)
    .into();
    let mut status = json!({
        "phase": "Running", "podIP": pod_ip, "podIPs": [{"ip": pod_ip}],
        "hostIP": NODE_IP, "hostIPs": [{"ip": NODE_IP}], "startTime": now,
        "conditions": conditions,
        "containerStatuses": containers,
    });
    if !init.is_empty() {
        status["initContainerStatuses"] = json!(init);
    }
    json!({ "status": status })
}

/// Makes sure [`NODE`] exists, Ready, with a fresh lease and heartbeat.
async fn ensure_node(client: &Client) -> kube::Result<()> {
    ensure_node_at(client, NODE, NODE_IP, None).await
}

/// Makes sure host node `name` exists, Ready, at `address` (its InternalIP, its only address),
/// with `kubelet_port` as its kubelet's port if given, with a fresh lease and heartbeat.
pub async fn ensure_node_at(
    client: &Client,
    name: &str,
    address: &str,
    kubelet_port: Option<u16>,
) -> kube::Result<()> {
    let apply = PatchParams::apply(FIELD_MANAGER).force();
    let nodes: Api<Node> = Api::all(client.clone());
    let node = json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": name,
        "labels": {"kubernetes.io/hostname": name, "kubernetes.io/os": "linux", "vcsync.dev/e2e": "kubelet"}}});
    nodes.patch(name, &apply, &Patch::Apply(&node)).await?;
    let now = now();
    let resources = json!({"cpu": "8", "memory": "32Gi", "pods": "110"});
    // The InternalIP only: a kube-apiserver calls a kubelet at a Hostname address first.
    let mut status = json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": name}, "status": {
        "capacity": resources, "allocatable": resources,
        "addresses": [{"type": "InternalIP", "address": address}],
        "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady",
            "message": "played by the e2e tests", "lastHeartbeatTime": now, "lastTransitionTime": now}],
        "nodeInfo": {"architecture": "amd64", "operatingSystem": "linux", "kubeletVersion": "v1.37.0",
            "containerRuntimeVersion": "e2e://1", "kernelVersion": "6", "osImage": "e2e", "bootID": "",
            "machineID": "", "systemUUID": "", "kubeProxyVersion": ""}}});
    if let Some(port) = kubelet_port {
        status["status"]["daemonEndpoints"] = json!({"kubeletEndpoint": {"Port": port}});
    }
    nodes.patch_status(name, &apply, &Patch::Apply(&status)).await?;
    let lease_namespace = "kube-node-lease";
    let namespace = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": lease_namespace}});
    if Api::<Namespace>::all(client.clone())
        .get_opt(lease_namespace)
        .await?
        .is_none()
    {
        let namespace: Namespace = serde_json::from_value(namespace).unwrap();
        let _ = Api::<Namespace>::all(client.clone())
            .create(&PostParams::default(), &namespace)
            .await;
    }
    let renew = serde_json::to_value(MicroTime(Timestamp::now())).unwrap();
    let lease = json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": {"name": name},
        "spec": {"holderIdentity": name, "leaseDurationSeconds": 40, "renewTime": renew}});
    Api::<Lease>::namespaced(client.clone(), lease_namespace)
        .patch(name, &apply, &Patch::Apply(&lease))
        .await
        .map(drop)
}
