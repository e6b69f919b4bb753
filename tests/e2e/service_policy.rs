//! Services by policy (`sync.services`): external IPs, types, load-balancer classes,
//! annotations and the addresses of selector-less Endpoints that the configuration does not
//! allow never reach the host; the tenant is told by an event.

use k8s_openapi::api::core::v1::{Endpoints, Event, Pod, Service};
use kube::api::{DeleteParams, PostParams};
use serde_json::json;
use vcsync_translators::OBJECT_UID_ANNOTATION;

use crate::{
    env::{Env, eventually, get},
    kubelet::HostKubelet,
    pods::simple_pod,
    services::adopted_service,
};

const REFUSED: &str = "vcsync.dev/refused";

fn service(value: serde_json::Value) -> Service {
    serde_json::from_value(value).unwrap()
}

async fn create_service(env: &Env, value: serde_json::Value) {
    env.virt_api::<Service>()
        .create(&PostParams::default(), &service(value))
        .await
        .unwrap();
}

async fn host_service(env: &Env, name: &str) -> Service {
    eventually(&format!("host service of {name}"), || async {
        get(&env.host_api::<Service>(), &env.host_name(name)).await
    })
    .await
}

/// The event of `reason` about the virtual object `name` of `kind`.
async fn event(env: &Env, kind: &str, name: &str, reason: &str) -> Event {
    eventually(&format!("{reason} event on {kind} {name}"), || async {
        let events = env.virt_api::<Event>().list(&Default::default()).await.unwrap();
        events.items.into_iter().find(|e| {
            e.reason.as_deref() == Some(reason)
                && e.involved_object.kind.as_deref() == Some(kind)
                && e.involved_object.name.as_deref() == Some(name)
        })
    })
    .await
}

fn annotation<'a>(service: &'a Service, key: &str) -> Option<&'a str> {
    service
        .metadata
        .annotations
        .as_ref()?
        .get(key)
        .map(String::as_str)
}

#[tokio::test]
async fn external_ips_never_reach_the_host_by_default() {
    let mut env = Env::new().await;
    env.start_syncer("").await;
    create_service(
        &env,
        json!({"metadata": {"name": "hijack"},
            "spec": {"selector": {"app": "x"}, "externalIPs": ["8.8.8.8"], "ports": [{"port": 53, "protocol": "UDP"}]}}),
    )
    .await;
    let host = host_service(&env, "hijack").await;
    assert_eq!(host.spec.as_ref().unwrap().external_ips, None);
    assert_eq!(annotation(&host, REFUSED), Some("externalIPs=8.8.8.8"));
    let warning = event(&env, "Service", "hijack", "ExternalIPsRefused").await;
    assert_eq!(warning.type_.as_deref(), Some("Warning"));
    let message = warning.message.unwrap_or_default();
    assert!(
        message.contains("8.8.8.8") && message.contains("sync.services.allowedExternalIPs"),
        "{message}"
    );
    // The tenant's own service keeps working: it gets the host's cluster IP.
    let host_ip = host.spec.unwrap().cluster_ip.unwrap();
    eventually("virtual service with the host's cluster IP", || async {
        get(&env.virt_api::<Service>(), "hijack")
            .await
            .filter(|s| s.spec.as_ref().unwrap().cluster_ip.as_deref() == Some(host_ip.as_str()))
    })
    .await;
}

#[tokio::test]
async fn external_ips_in_the_allowed_ranges_reach_the_host_and_the_others_do_not() {
    let mut env = Env::new().await;
    env.start_syncer("sync:\n  services:\n    allowedExternalIPs: [203.0.113.0/24]\n")
        .await;
    create_service(
        &env,
        json!({"metadata": {"name": "edge"},
            "spec": {"selector": {"app": "edge"}, "externalIPs": ["203.0.113.10", "8.8.4.4"], "ports": [{"port": 80}]}}),
    )
    .await;
    let host = host_service(&env, "edge").await;
    assert_eq!(
        host.spec.as_ref().unwrap().external_ips.as_deref(),
        Some(&["203.0.113.10".to_string()][..])
    );
    let message = event(&env, "Service", "edge", "ExternalIPsRefused")
        .await
        .message
        .unwrap_or_default();
    assert!(
        message.contains("8.8.4.4") && !message.contains("203.0.113.10"),
        "{message}"
    );

    // Taking the refused address out: the host copy no longer records a refusal. (Once vcsync
    // has recreated the virtual service with the host's cluster IP: a tenant's update of the
    // service it replaces would conflict.)
    let mut virt = adopted_service(&env, "edge").await;
    virt.spec.as_mut().unwrap().external_ips = Some(vec!["203.0.113.10".into()]);
    env.virt_api::<Service>()
        .replace("edge", &PostParams::default(), &virt)
        .await
        .unwrap();
    eventually("refusal gone from the host copy", || async {
        get(&env.host_api::<Service>(), &env.host_name("edge"))
            .await
            .filter(|s| annotation(s, REFUSED).is_none())
    })
    .await;
}

#[tokio::test]
async fn a_refused_type_becomes_cluster_ip_on_the_host() {
    let mut env = Env::new().await;
    env.start_syncer("sync:\n  services:\n    allowedTypes: [ClusterIP, LoadBalancer]\n")
        .await;
    create_service(
        &env,
        json!({"metadata": {"name": "np"},
            "spec": {"type": "NodePort", "selector": {"app": "np"}, "ports": [{"port": 80}]}}),
    )
    .await;
    let host = host_service(&env, "np").await;
    let spec = host.spec.as_ref().unwrap();
    assert_eq!(spec.type_.as_deref(), Some("ClusterIP"));
    assert_eq!(spec.ports.as_ref().unwrap()[0].node_port, None);
    assert_eq!(spec.external_traffic_policy, None);
    assert_eq!(annotation(&host, REFUSED), Some("type=NodePort"));
    let warning = event(&env, "Service", "np", "ServiceTypeRefused").await;
    assert_eq!(warning.type_.as_deref(), Some("Warning"));
    let message = warning.message.unwrap_or_default();
    assert!(
        message.contains("NodePort") && message.contains("sync.services.allowedTypes"),
        "{message}"
    );
    // The virtual service stays a NodePort service and takes the host's cluster IP; the host
    // copy is not rewritten over and over.
    let host_ip = spec.cluster_ip.clone().unwrap();
    let virt = eventually("virtual service with the host's cluster IP", || async {
        get(&env.virt_api::<Service>(), "np")
            .await
            .filter(|s| s.spec.as_ref().unwrap().cluster_ip.as_deref() == Some(host_ip.as_str()))
    })
    .await;
    assert_eq!(virt.spec.unwrap().type_.as_deref(), Some("NodePort"));
    // The host copy records the recreated service's UID (one write), and then stays as it is.
    let settled = eventually("host copy naming the recreated virtual service", || async {
        get(&env.host_api::<Service>(), &env.host_name("np"))
            .await
            .filter(|s| annotation(s, OBJECT_UID_ANNOTATION) == virt.metadata.uid.as_deref())
    })
    .await;
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    let later = get(&env.host_api::<Service>(), &env.host_name("np"))
        .await
        .unwrap();
    assert_eq!(
        later.metadata.resource_version, settled.metadata.resource_version,
        "no repeated writes"
    );
    assert_eq!(later.spec, settled.spec);
}

#[tokio::test]
async fn load_balancer_classes_and_annotations_pass_only_when_allowed() {
    let mut env = Env::new().await;
    env.start_syncer(
        "sync:\n  services:\n    allowedLoadBalancerClasses: [example.com/allowed]\n    \
         allowedAnnotations: [\"prometheus.io/*\"]\n",
    )
    .await;
    create_service(
        &env,
        json!({"metadata": {"name": "lb", "annotations": {
                "prometheus.io/scrape": "true",
                "service.beta.kubernetes.io/aws-load-balancer-scheme": "internet-facing"}},
            "spec": {"type": "LoadBalancer", "loadBalancerClass": "example.com/other",
                "selector": {"app": "lb"}, "ports": [{"port": 80}]}}),
    )
    .await;
    create_service(
        &env,
        json!({"metadata": {"name": "lb-ok"},
            "spec": {"type": "LoadBalancer", "loadBalancerClass": "example.com/allowed",
                "selector": {"app": "lb"}, "ports": [{"port": 80}]}}),
    )
    .await;

    let host = host_service(&env, "lb").await;
    let spec = host.spec.as_ref().unwrap();
    assert_eq!(spec.type_.as_deref(), Some("LoadBalancer"));
    assert_eq!(spec.load_balancer_class, None);
    assert_eq!(annotation(&host, "prometheus.io/scrape"), Some("true"));
    assert_eq!(
        annotation(&host, "service.beta.kubernetes.io/aws-load-balancer-scheme"),
        None
    );
    let message = event(&env, "Service", "lb", "LoadBalancerClassRefused")
        .await
        .message
        .unwrap_or_default();
    assert!(
        message.contains("example.com/other") && message.contains("allowedLoadBalancerClasses"),
        "{message}"
    );
    let dropped = event(&env, "Service", "lb", "AnnotationsNotSynced").await;
    assert_eq!(dropped.type_.as_deref(), Some("Normal"));
    let message = dropped.message.unwrap_or_default();
    assert!(
        message.contains("service.beta.kubernetes.io/aws-load-balancer-scheme")
            && !message.contains("prometheus"),
        "{message}"
    );

    let allowed = host_service(&env, "lb-ok").await;
    assert_eq!(
        allowed.spec.as_ref().unwrap().load_balancer_class.as_deref(),
        Some("example.com/allowed")
    );
    assert_eq!(annotation(&allowed, REFUSED), None);
}

/// A selector-less service `name` and its Endpoints with `ips` (port 80) in the virtual
/// cluster, created once vcsync has given the service its host's cluster IP (see
/// [`adopted_service`]). A real virtual API server refuses link-local and loopback addresses
/// itself: then the Endpoints are created with `fallback` only, and false is returned.
async fn selector_less(env: &Env, name: &str, ips: &[&str], fallback: &[&str]) -> bool {
    create_service(
        env,
        json!({"metadata": {"name": name}, "spec": {"ports": [{"port": 80}]}}),
    )
    .await;
    adopted_service(env, name).await;
    let endpoints = |ips: &[&str]| -> Endpoints {
        let addresses: Vec<_> = ips.iter().map(|ip| json!({"ip": ip})).collect();
        serde_json::from_value(json!({"metadata": {"name": name},
            "subsets": [{"addresses": addresses, "ports": [{"port": 80}]}]}))
        .unwrap()
    };
    let api = env.virt_api::<Endpoints>();
    match api.create(&PostParams::default(), &endpoints(ips)).await {
        Ok(_) => true,
        Err(kube::Error::Api(status)) if status.code == 422 => {
            api.create(&PostParams::default(), &endpoints(fallback))
                .await
                .unwrap();
            false
        }
        Err(err) => panic!("creating endpoints {name}: {err}"),
    }
}

fn host_ips(endpoints: &Endpoints) -> Vec<String> {
    endpoints
        .subsets
        .iter()
        .flatten()
        .flat_map(|s| s.addresses.iter().flatten())
        .map(|a| a.ip.clone())
        .collect()
}

#[tokio::test]
async fn endpoints_to_the_metadata_service_never_reach_the_host() {
    let mut env = Env::new().await;
    env.start_syncer("").await;
    let accepted = selector_less(
        &env,
        "metadata",
        &["169.254.169.254", "192.0.2.20"],
        &["192.0.2.20"],
    )
    .await;
    let host = eventually("host copy of the endpoints", || async {
        get(&env.host_api::<Endpoints>(), &env.host_name("metadata")).await
    })
    .await;
    assert_eq!(
        host_ips(&host),
        Vec::<String>::new(),
        "no address reaches the host"
    );
    let refused = host.metadata.annotations.unwrap_or_default()[REFUSED].clone();
    let warning = event(&env, "Endpoints", "metadata", "EndpointsRefused").await;
    assert_eq!(warning.type_.as_deref(), Some("Warning"));
    let message = warning.message.unwrap_or_default();
    assert!(
        message.contains("192.0.2.20") && message.contains("allowedEndpointRanges"),
        "{message}"
    );
    if accepted {
        assert_eq!(refused, "addresses=169.254.169.254,192.0.2.20");
        assert!(message.contains("169.254.169.254"), "{message}");
    }
    // The tenant looks at the service: it is told there too.
    event(&env, "Service", "metadata", "EndpointsRefused").await;
}

#[tokio::test]
async fn endpoints_to_the_tenants_own_host_pod_reach_the_host_while_the_pod_lives() {
    let mut env = Env::new().await;
    let _kubelet = HostKubelet::start(&env).await;
    env.start_syncer("").await;
    // A host pod being deleted still holds its IP until its kubelet ends it, after its grace
    // period: a short one, so that the test sees it go.
    let mut backend = simple_pod("backend");
    backend.spec.as_mut().unwrap().termination_grace_period_seconds = Some(1);
    env.virt_api::<Pod>()
        .create(&PostParams::default(), &backend)
        .await
        .unwrap();
    let pod_ip = eventually("the host pod's IP", || async {
        get(&env.host_api::<Pod>(), &env.host_name("backend"))
            .await
            .and_then(|p| p.status?.pod_ip)
    })
    .await;
    selector_less(&env, "own", &[&pod_ip, "198.51.100.7"], &[]).await;
    let host = eventually("host endpoints with the pod's IP", || async {
        get(&env.host_api::<Endpoints>(), &env.host_name("own"))
            .await
            .filter(|e| !host_ips(e).is_empty())
    })
    .await;
    assert_eq!(host_ips(&host), std::slice::from_ref(&pod_ip));
    let message = event(&env, "Endpoints", "own", "EndpointsRefused")
        .await
        .message
        .unwrap_or_default();
    assert!(
        message.contains("198.51.100.7") && !message.contains(&pod_ip),
        "{message}"
    );

    // The pod goes (the host's kubelet ends it): its IP may be someone else's next, so it
    // leaves the host copy.
    env.virt_api::<Pod>()
        .delete("backend", &DeleteParams::default().grace_period(0))
        .await
        .unwrap();
    eventually("the pod's IP dropped from the host endpoints", || async {
        get(&env.host_api::<Endpoints>(), &env.host_name("own"))
            .await
            .filter(|e| host_ips(e).is_empty())
    })
    .await;
}

#[tokio::test]
async fn endpoints_in_an_allowed_range_reach_the_host() {
    let mut env = Env::new().await;
    env.start_syncer("sync:\n  services:\n    allowedEndpointRanges: [192.0.2.0/24]\n")
        .await;
    selector_less(&env, "db", &["192.0.2.10", "198.51.100.1"], &[]).await;
    let host = eventually("host endpoints", || async {
        get(&env.host_api::<Endpoints>(), &env.host_name("db")).await
    })
    .await;
    assert_eq!(host_ips(&host), ["192.0.2.10"]);
    assert_eq!(
        host.metadata.annotations.unwrap_or_default()[REFUSED],
        "addresses=198.51.100.1"
    );
    event(&env, "Endpoints", "db", "EndpointsRefused").await;
}

#[tokio::test]
async fn a_bad_range_in_the_configuration_stops_the_syncer_naming_it() {
    let env = Env::new().await;
    let path = std::env::temp_dir().join(format!("{}-bad-range.yaml", env.instance));
    std::fs::write(
        &path,
        env.config_text("sync:\n  services:\n    allowedEndpointRanges: [10.0.0.0/8, 192.0.2.1/24]\n"),
    )
    .unwrap();
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_vcsync"))
        .args(["run", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    let _ = std::fs::remove_file(&path);
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("sync.services.allowedEndpointRanges") && stderr.contains("\"192.0.2.1/24\""),
        "{stderr}"
    );
}
