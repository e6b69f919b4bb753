//! `vcsync cluster connect` of a `kubernetes` cluster exposed by its values: the kubeconfig
//! points at the load balancer's address, else a node's address and the node port, checking the
//! certificate against the Service's in-cluster name (which it holds); `--server` still wins.

use k8s_openapi::api::core::v1::{Node, Service};
use kube::{
    Api,
    api::{Patch, PatchParams, PostParams},
    config::Kubeconfig,
};
use serde_json::json;

use crate::cluster::{host_for_the_driver, publish_kubeconfig, vcsync};

#[tokio::test(flavor = "multi_thread")]
async fn connect_points_at_the_load_balancer_or_a_node_port_and_checks_the_in_cluster_name() {
    let (host, dir, kc, client) = host_for_the_driver().await;
    let values = dir.path().join("values.yaml");
    std::fs::write(
        &values,
        "controlPlane:\n  service:\n    type: LoadBalancer\n    nodePort: 31443\n    \
         annotations: {lb.example/internal: \"true\"}\n  extraSans: [203.0.113.7]\n",
    )
    .unwrap();
    let kc_s = kc.display().to_string();
    let values_s = values.display().to_string();
    let run = |args: &[&str]| {
        let mut all = vec!["--kubeconfig", kc_s.as_str(), "-q"];
        all.extend_from_slice(args);
        all.into_iter().map(str::to_string).collect::<Vec<_>>()
    };
    let call = |args: Vec<String>| async move {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        vcsync(&[], &args).await
    };
    let (code, _, err) = call(run(&["create", "web", "-f", &values_s])).await;
    assert_eq!(code, 0, "{err}");
    let ns = "vcsync-web";
    let services = Api::<Service>::namespaced(client.clone(), ns);
    let service = services.get("vcsync-web").await.unwrap();
    let spec = service.spec.clone().unwrap();
    assert_eq!(spec.type_.as_deref(), Some("LoadBalancer"));
    assert_eq!(spec.ports.unwrap()[0].node_port, Some(31443));
    assert_eq!(
        service.metadata.annotations.unwrap()["lb.example/internal"],
        "true"
    );
    publish_kubeconfig(&client, ns, "web", host.kubeconfig()).await;
    let connect = || call(run(&["connect", "web"]));
    let server_of = |out: &str| {
        let config = Kubeconfig::from_yaml(out).unwrap_or_else(|err| panic!("{err}: {out}"));
        let cluster = config.clusters[0].cluster.clone().unwrap();
        (cluster.server.unwrap_or_default(), cluster.tls_server_name)
    };

    // No address yet, no node: only the in-cluster address is known.
    let (code, out, err) = connect().await;
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        server_of(&out),
        (host.url(), None),
        "the published kubeconfig, as it is"
    );

    // A node: its address and the node port, until the balancer has an address.
    Api::<Node>::all(client.clone())
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({
                "metadata": {"name": "host-node-1"},
                "status": {
                    "conditions": [{"type": "Ready", "status": "True"}],
                    "addresses": [{"type": "InternalIP", "address": "192.0.2.10"}],
                },
            }))
            .unwrap(),
        )
        .await
        .unwrap();
    let (_, out, _) = connect().await;
    assert_eq!(
        server_of(&out),
        (
            "https://192.0.2.10:31443".to_string(),
            Some("vcsync-web.vcsync-web.svc".to_string())
        )
    );

    // The balancer's address once the host reports one.
    services
        .patch_status(
            "vcsync-web",
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"loadBalancer": {"ingress": [{"ip": "203.0.113.7"}]}}})),
        )
        .await
        .unwrap();
    let (_, out, _) = connect().await;
    assert_eq!(
        server_of(&out),
        (
            "https://203.0.113.7:443".to_string(),
            Some("vcsync-web.vcsync-web.svc".to_string())
        )
    );
    // --server wins, and checks the certificate against the URL's host as usual.
    let (_, out, _) = call(run(&["connect", "web", "--server", "https://127.0.0.1:7443"])).await;
    assert_eq!(server_of(&out), ("https://127.0.0.1:7443".to_string(), None));
}
