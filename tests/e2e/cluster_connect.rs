//! `vcsync cluster connect` from outside the host cluster: a `kubernetes` cluster whose
//! kubeconfig names its in-cluster Service is reached through a port-forward to its control
//! plane's pod (kube-rs, over the host API server's `pods/portforward`), for a command
//! (`connect demo -- kubectl get ns`), a snapshot, or as long as `connect` runs.
//!
//! The embedded host's simulated kubelet stands in for the pod's process: the pod's annotation
//! `simulator.vcsync.dev/forward-6443` points its port 6443 at an embedded virtual API server.

use std::{path::Path, time::Duration};

use k8s_openapi::api::{apps::v1::StatefulSet, core::v1::Pod};
use kube::{
    Api,
    api::{DeleteParams, PostParams},
};
use serde_json::json;
use vcsync_apiserver::{ApiServer, ServerConfig, SimulatorConfig};

use crate::{
    cluster::{host_for_the_driver, publish_kubeconfig, vcsync},
    env::eventually,
};

const NAME: &str = "pf";
const NS: &str = "vcsync-pf";

/// `vcsync cluster --kubeconfig KC -q ARGS`.
async fn cluster(kubeconfig: &Path, args: &[&str]) -> (i32, String, String) {
    let kubeconfig = kubeconfig.display().to_string();
    let mut all = vec!["--kubeconfig", kubeconfig.as_str(), "-q"];
    all.extend_from_slice(args);
    vcsync(&[], &all).await
}

#[tokio::test(flavor = "multi_thread")]
async fn connect_forwards_to_the_control_plane_pod_when_only_the_host_reaches_the_cluster() {
    let (host, dir, kc, client) = host_for_the_driver().await;
    let _simulator = host.start_simulator(SimulatorConfig {
        nodes: 1,
        ..SimulatorConfig::default()
    });
    let (code, _, err) = cluster(&kc, &["create", NAME]).await;
    assert_eq!(code, 0, "{err}");

    // The virtual API server the control plane's pod would run.
    let virt = ApiServer::start(ServerConfig {
        name: "virtual".into(),
        ..Default::default()
    })
    .await
    .unwrap();
    let port = virt
        .url()
        .trim_end_matches('/')
        .rsplit(':')
        .next()
        .unwrap()
        .to_string();
    // As the control plane publishes it: the Service's in-cluster name, unresolvable here.
    let published = virt.kubeconfig().replace(
        virt.url().trim_end_matches('/'),
        "http://vcsync-pf.vcsync-pf.svc:443",
    );
    assert!(published.contains("vcsync-pf.vcsync-pf.svc"), "{published}");
    publish_kubeconfig(&client, NS, NAME, published).await;

    // No control-plane pod runs yet: nothing to forward to.
    let (code, _, err) = cluster(&kc, &["connect", NAME, "--", "true"]).await;
    assert_eq!(code, 14, "{err}");
    assert!(err.contains("no running control-plane pod"), "{err}");

    // The StatefulSet's pod (no controller runs on the embedded host: made here).
    let set = Api::<StatefulSet>::namespaced(client.clone(), NS)
        .get("vcsync-pf")
        .await
        .unwrap();
    let labels = set.spec.selector.match_labels.clone().unwrap();
    let pods = Api::<Pod>::namespaced(client.clone(), NS);
    pods.create(
        &PostParams::default(),
        &serde_json::from_value(json!({
            "metadata": {"name": "vcsync-pf-0", "labels": labels,
                "annotations": {"simulator.vcsync.dev/forward-6443": format!("127.0.0.1:{port}")}},
            "spec": {"containers": [{"name": "control-plane", "image": "rancher/k3s"}]},
        }))
        .unwrap(),
    )
    .await
    .unwrap();
    eventually("the control plane's pod running", || async {
        let pod = pods.get("vcsync-pf-0").await.ok()?;
        (pod.status?.phase.as_deref() == Some("Running")).then_some(())
    })
    .await;

    let kubectl = std::env::var("VCSYNC_KUBECTL").unwrap_or_else(|_| "kubectl".into());
    let (code, out, err) = cluster(&kc, &["connect", NAME, "--", &kubectl, "get", "ns", "-o", "name"]).await;
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("namespace/kube-system"), "{out}");

    // A snapshot goes through the same forward.
    let archive = dir.path().join("pf.snapshot");
    let (code, _, err) = cluster(&kc, &["snapshot", NAME, "-o", archive.to_str().unwrap()]).await;
    assert_eq!(code, 0, "{err}");

    // Without a command, connect prints a kubeconfig that works while it runs.
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_vcsync"))
        .args(["cluster", "--kubeconfig"])
        .arg(&kc)
        .args(["connect", NAME, "-o"])
        .arg(dir.path().join("pf.kubeconfig"))
        .env_remove("KUBERNETES_SERVICE_HOST")
        .env("VCSYNC_DATA_DIR", "/nonexistent/vcsync-test-state")
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let written = dir.path().join("pf.kubeconfig");
    let forwarded = eventually("the kubeconfig written", || async {
        std::fs::read_to_string(&written)
            .ok()
            .filter(|t| t.contains("127.0.0.1"))
    })
    .await;
    let config = kube::Config::from_custom_kubeconfig(
        kube::config::Kubeconfig::from_yaml(&forwarded).unwrap(),
        &Default::default(),
    )
    .await
    .unwrap();
    let through = kube::Client::try_from(config).unwrap();
    let namespaces = Api::<k8s_openapi::api::core::v1::Namespace>::all(through);
    eventually("the virtual cluster answering through the forward", || async {
        namespaces.get("default").await.ok()
    })
    .await;
    interrupt(&mut child);

    // The pod gone: connect says so instead of hanging.
    pods.delete("vcsync-pf-0", &DeleteParams::default().grace_period(0))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (code, _, err) = cluster(&kc, &["connect", NAME, "--", "true"]).await;
    assert_eq!(code, 14, "{err}");
}

/// Ends `connect` as Ctrl+C would.
fn interrupt(child: &mut std::process::Child) {
    let _ = std::process::Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status();
    let status = child.wait().unwrap();
    assert!(status.success() || status.code().is_none(), "{status:?}");
}
