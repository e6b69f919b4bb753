//! The whole workload story, as a tenant lives it: kubectl in the virtual cluster, a host
//! that schedules and runs pods (the embedded server's simulator, or a real host), and what
//! comes back up: the node, its lease, the service IP, endpoints and events.

use k8s_openapi::{
    api::{
        coordination::v1::Lease,
        core::v1::{Endpoints, Event, Node, Pod, Service},
    },
    apimachinery::pkg::apis::meta::v1::MicroTime,
};
use kube::{Api, api::PostParams};
use serde_json::json;

use crate::{
    env::{Env, eventually, get},
    kubectl::run,
    kubelet::HostKubelet,
};

#[tokio::test]
async fn a_kubectl_pod_runs_gets_a_fake_node_with_a_live_lease_a_service_ip_endpoints_and_events() {
    let mut env = Env::new().await;
    let _kubelet = HostKubelet::start(&env).await;
    env.start_syncer("sync:\n  nodes:\n    leaseRenewSeconds: 1\n")
        .await;

    run(&env, &["run", "web", "--image=nginx", "--labels=app=web"], None).await;
    run(
        &env,
        &["create", "service", "clusterip", "web", "--tcp=80:8080"],
        None,
    )
    .await;

    // Running in the virtual cluster, on a node the host chose.
    let pod = eventually("virtual pod Running with a node", || async {
        get(&env.virt_api::<Pod>(), "web").await.filter(|p| {
            p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running")
                && p.spec.as_ref().and_then(|s| s.node_name.as_ref()).is_some()
        })
    })
    .await;
    let node_name = pod.spec.unwrap().node_name.unwrap();
    let pod_ip = pod.status.unwrap().pod_ip.unwrap();

    // A fake node of that name, whose lease keeps being renewed.
    let nodes: Api<Node> = Api::all(env.virt.clone());
    eventually("fake node", || async { get(&nodes, &node_name).await }).await;
    let leases: Api<Lease> = Api::namespaced(env.virt.clone(), "kube-node-lease");
    let renew_time = |lease: &Lease| {
        lease
            .spec
            .as_ref()
            .and_then(|s| s.renew_time.clone())
            .map(|MicroTime(t)| t)
    };
    let first = eventually("node lease", || async {
        get(&leases, &node_name).await.and_then(|l| renew_time(&l))
    })
    .await;
    eventually("lease renewed", || async {
        get(&leases, &node_name)
            .await
            .and_then(|l| renew_time(&l))
            .filter(|t| *t > first)
    })
    .await;

    // The service carries the host's cluster IP, and its endpoints point at the pod.
    let host_service = eventually("host service", || async {
        get(&env.host_api::<Service>(), &env.host_name("web")).await
    })
    .await;
    let host_ip = host_service.spec.unwrap().cluster_ip.unwrap();
    eventually("virtual service with the host's cluster IP", || async {
        get(&env.virt_api::<Service>(), "web")
            .await
            .filter(|s| s.spec.as_ref().and_then(|s| s.cluster_ip.as_deref()) == Some(host_ip.as_str()))
    })
    .await;
    let endpoints = eventually("endpoints pointing at the pod", || async {
        get(&env.virt_api::<Endpoints>(), "web")
            .await
            .filter(|e| e.subsets.is_some())
    })
    .await;
    let address = &endpoints.subsets.unwrap()[0].addresses.clone().unwrap()[0];
    assert_eq!(address.ip, pod_ip);
    assert_eq!(
        address.target_ref.as_ref().and_then(|t| t.name.as_deref()),
        Some("web")
    );

    // A host event about the host pod (as the host's kubelet writes) appears in the virtual cluster.
    let host_pod = get(&env.host_api::<Pod>(), &env.host_name("web")).await.unwrap();
    let event: Event = serde_json::from_value(json!({
        "metadata": {"name": format!("{}.pulled", env.host_name("web"))},
        "involvedObject": {"kind": "Pod", "apiVersion": "v1", "namespace": env.host_ns, "name": env.host_name("web"),
                           "uid": host_pod.metadata.uid},
        "reason": "Pulled", "message": "Successfully pulled image \"nginx\"", "type": "Normal",
        "source": {"component": "kubelet", "host": node_name}
    }))
    .unwrap();
    env.host_api::<Event>()
        .create(&PostParams::default(), &event)
        .await
        .unwrap();
    let mirrored = eventually("host event about the pod in the virtual cluster", || async {
        let events = env.virt_api::<Event>().list(&Default::default()).await.unwrap();
        events
            .items
            .into_iter()
            .find(|e| e.reason.as_deref() == Some("Pulled"))
    })
    .await;
    assert_eq!(mirrored.involved_object.name.as_deref(), Some("web"));
    assert_eq!(
        mirrored.involved_object.namespace.as_deref(),
        Some(env.virt_ns.as_str())
    );

    // Deleting the pod removes the host pod (after the grace period, which the host's kubelet
    // honours) and, with the last pod on it, the fake node.
    run(&env, &["delete", "pod", "web", "--grace-period=1"], None).await;
    eventually("host pod gone", || async {
        get(&env.host_api::<Pod>(), &env.host_name("web"))
            .await
            .is_none()
            .then_some(())
    })
    .await;
    eventually("virtual pod gone", || async {
        get(&env.virt_api::<Pod>(), "web").await.is_none().then_some(())
    })
    .await;
    eventually("fake node gone", || async {
        get(&nodes, &node_name).await.is_none().then_some(())
    })
    .await;
    eventually("its lease gone", || async {
        get(&leases, &node_name).await.is_none().then_some(())
    })
    .await;
}
