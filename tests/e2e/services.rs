//! Services: down with translated selectors, cluster IPs and node ports up, endpoints mirrored.

use k8s_openapi::api::{
    core::v1::{EndpointAddress, Endpoints, Pod, Service},
    discovery::v1::EndpointSlice,
};
use kube::api::{ListParams, PostParams};
use serde_json::json;
use vcsync_syncer::syncers::services::{
    slices::SERVICE_NAME_LABEL as SERVICE_NAME, translate::MIRRORED_LABEL as MIRRORED,
};
use vcsync_translators::{MANAGED_BY_LABEL, NAMESPACE_LABEL};

use crate::{
    env::{Env, eventually, get},
    kubelet::HostKubelet,
    pods::simple_pod,
};

fn service(value: serde_json::Value) -> Service {
    serde_json::from_value(value).unwrap()
}

#[tokio::test]
async fn service_goes_down_and_the_virtual_one_takes_the_host_cluster_ip_and_node_port() {
    let mut env = Env::new().await;
    // Occupy an address on the host so that its allocations differ from the virtual server's.
    let placeholder = service(json!({"metadata": {"name": "placeholder"}, "spec": {"ports": [{"port": 1}]}}));
    env.host_api::<Service>()
        .create(&PostParams::default(), &placeholder)
        .await
        .unwrap();
    env.start_syncer("").await;

    let web = service(json!({"metadata": {"name": "web", "labels": {"tier": "front"}},
        "spec": {"type": "NodePort", "selector": {"app": "web"}, "ports": [{"name": "http", "port": 80, "targetPort": 8080}]}}));
    let created = env
        .virt_api::<Service>()
        .create(&PostParams::default(), &web)
        .await
        .unwrap();

    let host = eventually("host service", || async {
        get(&env.host_api::<Service>(), &env.host_name("web")).await
    })
    .await;
    let host_spec = host.spec.unwrap();
    let selector = host_spec.selector.unwrap();
    assert_eq!(selector["app"], "web");
    assert_eq!(selector[NAMESPACE_LABEL], env.virt_ns);
    assert_eq!(selector[MANAGED_BY_LABEL], env.instance);
    let host_ip = host_spec.cluster_ip.unwrap();
    let host_node_port = host_spec.ports.unwrap()[0].node_port.unwrap();

    let virt = eventually(
        "virtual service with the host's cluster IP and node port",
        || async {
            get(&env.virt_api::<Service>(), "web").await.filter(|s| {
                let spec = s.spec.as_ref().unwrap();
                spec.cluster_ip.as_deref() == Some(host_ip.as_str())
                    && spec.ports.as_ref().unwrap()[0].node_port == Some(host_node_port)
            })
        },
    )
    .await;
    if env.embedded().is_some() {
        assert_ne!(
            created.spec.unwrap().cluster_ip.as_deref(),
            Some(host_ip.as_str()),
            "test setup: IPs must differ"
        );
    }
    assert_eq!(
        virt.metadata.labels.unwrap()["tier"],
        "front",
        "labels survive the recreate"
    );
    let still = get(&env.host_api::<Service>(), &env.host_name("web"))
        .await
        .unwrap();
    assert_eq!(
        still.metadata.uid, host.metadata.uid,
        "the host service must survive the virtual recreate"
    );
}

#[tokio::test]
async fn host_endpoints_of_a_selector_service_are_mirrored_up_with_virtual_pod_references() {
    let mut env = Env::new().await;
    // The host's endpoints controller owns the Endpoints of a selector service (a real one
    // refuses a second writer's create): the test runs the selected pod on the host instead,
    // and the controller writes its address and a reference to the host pod.
    let _kubelet = HostKubelet::start(&env).await;
    env.start_syncer("").await;
    let web = service(
        json!({"metadata": {"name": "api"}, "spec": {"selector": {"app": "api"}, "ports": [{"port": 80}]}}),
    );
    env.virt_api::<Service>()
        .create(&PostParams::default(), &web)
        .await
        .unwrap();
    env.virt_api::<Pod>()
        .create(&PostParams::default(), &simple_pod("api"))
        .await
        .unwrap();
    let host_pod = env.host_name("api");
    let host_address = eventually("host endpoints naming the running host pod", || async {
        let endpoints = get(&env.host_api::<Endpoints>(), &env.host_name("api")).await?;
        addresses(&endpoints)
            .find(|a| a.target_ref.as_ref().and_then(|t| t.name.as_deref()) == Some(host_pod.as_str()))
            .cloned()
    })
    .await;

    let mirrored = eventually("endpoints mirrored into the virtual cluster", || async {
        let endpoints = get(&env.virt_api::<Endpoints>(), "api").await?;
        addresses(&endpoints).find(|a| a.ip == host_address.ip).cloned()
    })
    .await;
    let target = mirrored.target_ref.expect("a pod reference");
    assert_eq!(target.kind.as_deref(), Some("Pod"));
    assert_eq!(target.name.as_deref(), Some("api"), "the virtual pod's name");
    assert_eq!(target.namespace.as_deref(), Some(env.virt_ns.as_str()));

    // The host's EndpointSlices come up too, as slices of vcsync's own (a virtual control
    // plane's endpoint controllers, where they run, write theirs beside them and cannot
    // write these).
    let slice = eventually("a mirrored EndpointSlice of the service", || async {
        let slices = env
            .virt_api::<EndpointSlice>()
            .list(&ListParams::default().labels(&format!("{SERVICE_NAME}=api,{MIRRORED}=true")))
            .await
            .unwrap();
        slices.items.into_iter().find_map(|slice| {
            slice
                .endpoints
                .into_iter()
                .flatten()
                .find(|e| e.addresses.contains(&host_address.ip))
        })
    })
    .await;
    let target = slice.target_ref.expect("a pod reference");
    assert_eq!(
        (target.name.as_deref(), target.namespace.as_deref()),
        (Some("api"), Some(env.virt_ns.as_str()))
    );
}

/// The ready addresses of `endpoints`.
fn addresses(endpoints: &Endpoints) -> impl Iterator<Item = &EndpointAddress> {
    endpoints
        .subsets
        .iter()
        .flatten()
        .flat_map(|s| s.addresses.iter().flatten())
}

/// Waits until the virtual service `name` carries its host service's cluster IP, and returns it.
///
/// vcsync recreates the virtual service for that (the field is immutable). A virtual control
/// plane that runs its own endpoints controller (the real pair of the tests does; `deploy/` and
/// the kubernetes driver disable it) deletes the Endpoints of a service while it is gone, so a
/// test that gives a service its own Endpoints waits for this first.
pub(crate) async fn adopted_service(env: &Env, name: &str) -> Service {
    eventually(
        &format!("virtual service {name} with its host's cluster IP"),
        || async {
            let host = get(&env.host_api::<Service>(), &env.host_name(name)).await?;
            let host_ip = host.spec?.cluster_ip?;
            get(&env.virt_api::<Service>(), name).await.filter(|s| {
                s.spec.as_ref().and_then(|spec| spec.cluster_ip.as_deref()) == Some(host_ip.as_str())
            })
        },
    )
    .await
}

#[tokio::test]
async fn endpoints_of_a_selector_less_service_go_down() {
    let mut env = Env::new().await;
    // Addresses other than the tenant's own pods' go down only when allowed (service_policy.rs).
    env.start_syncer("sync:\n  services:\n    allowedEndpointRanges: [192.0.2.0/24]\n")
        .await;
    let external = service(json!({"metadata": {"name": "db"}, "spec": {"ports": [{"port": 5432}]}}));
    env.virt_api::<Service>()
        .create(&PostParams::default(), &external)
        .await
        .unwrap();
    adopted_service(&env, "db").await;
    let endpoints: Endpoints = serde_json::from_value(json!({"metadata": {"name": "db"},
        "subsets": [{"addresses": [{"ip": "192.0.2.10"}], "ports": [{"port": 5432}]}]}))
    .unwrap();
    env.virt_api::<Endpoints>()
        .create(&PostParams::default(), &endpoints)
        .await
        .unwrap();
    let host = eventually("tenant endpoints on the host", || async {
        get(&env.host_api::<Endpoints>(), &env.host_name("db")).await
    })
    .await;
    assert_eq!(
        host.subsets.unwrap()[0].addresses.as_ref().unwrap()[0].ip,
        "192.0.2.10"
    );
    assert_eq!(host.metadata.labels.unwrap()[MANAGED_BY_LABEL], env.instance);
}

#[tokio::test]
async fn the_virtual_api_servers_own_service_never_reaches_the_host() {
    let mut env = Env::new().await;
    env.start_syncer("").await;
    let marker = service(json!({"metadata": {"name": "marker"}, "spec": {"ports": [{"port": 1}]}}));
    env.virt_api::<Service>()
        .create(&PostParams::default(), &marker)
        .await
        .unwrap();
    eventually("a later service synced", || async {
        get(&env.host_api::<Service>(), &env.host_name("marker")).await
    })
    .await;
    let names: Vec<String> = env
        .host_api::<Service>()
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter_map(|s| s.metadata.name)
        .collect();
    let kubernetes = vcsync_translators::host_name("default", "kubernetes");
    assert!(!names.contains(&kubernetes), "{names:?}");
}
