use std::collections::BTreeMap;

use k8s_openapi::{
    ByteString,
    api::core::v1::{Service, ServicePort, ServiceSpec},
};
use kube::{
    Api, Client,
    api::{ObjectMeta, PostParams},
};
use serde_json::Value;

use super::{
    names::{POD_SECURITY_LABEL, claim_labels, explicit_service_cidr},
    render::render_with,
    statefulset::statefulset,
    *,
};
use crate::cluster::{ClusterError, Result, Values};

#[test]
fn the_service_cidr_is_read_from_the_api_servers_out_of_range_answers() {
    // kube-apiserver before the ServiceCIDR allocator, with the IP in the message or not.
    for message in [
        "Service \"p\" is invalid: spec.clusterIPs: Invalid value: []string{\"1.1.1.1\"}: failed to \
         allocate IP 1.1.1.1: the provided IP (1.1.1.1) is not in the valid range. The range of \
         valid IPs is 10.96.0.0/12",
        "spec.clusterIPs: Invalid value: []string{\"1.1.1.1\"}: failed to allocated ip:1.1.1.1 \
         with error:provided IP is not in the valid range. The range of valid IPs is 10.96.0.0/12",
    ] {
        assert_eq!(parse_service_cidr_error(message).as_deref(), Some("10.96.0.0/12"));
    }
    // The ServiceCIDR allocator (1.31+): every range, space-separated, trailing space.
    let multi = "Service \"p\" is invalid: spec.clusterIPs[0]: Invalid value: \"1.1.1.1\": failed to \
                 allocate IP 1.1.1.1: the provided IP (1.1.1.1) is not in the valid range. The \
                 range of valid IPs is 10.43.0.0/16 10.45.0.0/24 ";
    assert_eq!(parse_service_cidr_error(multi).as_deref(), Some("10.43.0.0/16"));
    // IPv6, quoted, at the end of a sentence.
    assert_eq!(
        parse_service_cidr_error("... The range of valid IPs is \"fd00:10:96::/108\".").as_deref(),
        Some("fd00:10:96::/108")
    );
    // Other answers name no range.
    for message in [
        "spec.clusterIP: Invalid value: \"1.1.1.1\": the provided IP (1.1.1.1) is not in the valid range",
        "provided port is not in the valid range. The range of valid ports is 30000-32767",
        "The range of valid IPs is 10.96.0.0/33",
        "The range of valid IPs is 300.96.0.0/12",
        "",
    ] {
        assert_eq!(parse_service_cidr_error(message), None, "{message}");
    }
}

#[test]
fn claims_are_labelled_for_delete_and_empty_values_mean_unset() {
    assert_eq!(
        claim_labels("c1"),
        BTreeMap::from([
            ("app.kubernetes.io/instance".to_string(), "c1".to_string()),
            ("app.kubernetes.io/name".to_string(), "vcsync".to_string()),
            (CLUSTER_LABEL.to_string(), "c1".to_string()),
        ])
    );
    let values = Values::parse("controlPlane:\n  serviceCidr: \"\"\n", "v").unwrap();
    assert_eq!(explicit_service_cidr(&values), None);
    // A detected CIDR is rendered, but the stored values stay the requested ones.
    let objects = render_with("c1", &values, Some("10.43.0.0/16")).unwrap();
    let text = serde_json::to_string(&objects).unwrap();
    assert!(text.contains("--service-cidr=10.43.0.0/16") && !text.contains("detect-service-cidr"));
    let secret = objects.iter().find(|o| o["kind"] == "Secret").unwrap();
    let stored: ByteString = serde_json::from_value(secret["data"]["values.yaml"].clone()).unwrap();
    assert_eq!(
        Values::parse(&String::from_utf8(stored.0).unwrap(), "stored").unwrap(),
        values
    );
}

fn rendered(values: &str) -> Result<Vec<Value>> {
    render("c1", &Values::parse(values, "v").unwrap())
}

fn namespace_labels(objects: &[Value]) -> BTreeMap<String, String> {
    serde_json::from_value(objects[0]["metadata"]["labels"].clone()).unwrap()
}

/// vcsync.yaml's `sync.pods.podSecurityStandard` as rendered.
fn gate(objects: &[Value]) -> Value {
    let secret = objects.iter().find(|o| o["kind"] == "Secret").unwrap();
    let text: ByteString = serde_json::from_value(secret["data"]["vcsync.yaml"].clone()).unwrap();
    let config = vcsync_syncer::Config::from_yaml(&String::from_utf8(text.0).unwrap(), "c").unwrap();
    serde_json::to_value(&config.sync.pods).unwrap()["podSecurityStandard"].clone()
}

#[test]
fn the_host_namespace_enforces_baseline_by_default_and_vcsyncs_gate_agrees() {
    let objects = rendered("").unwrap();
    assert_eq!(objects[0]["kind"], "Namespace");
    let labels = namespace_labels(&objects);
    let psa: BTreeMap<&str, &str> = labels
        .iter()
        .filter(|(k, _)| k.starts_with(POD_SECURITY_LABEL))
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    assert_eq!(
        psa,
        BTreeMap::from([
            ("pod-security.kubernetes.io/enforce", "baseline"),
            ("pod-security.kubernetes.io/enforce-version", "latest"),
        ])
    );
    assert_eq!(labels[CLUSTER_LABEL], "c1");
    assert_eq!(gate(&objects), "baseline");

    // warn / audit / version; privileged is labelled too, and turns vcsync's gate off.
    let objects = rendered(
        "podSecurity:\n  enforce: privileged\n  warn: restricted\n  audit: baseline\n  version: v1.33\n",
    )
    .unwrap();
    let labels = namespace_labels(&objects);
    for (key, value) in [
        ("enforce", "privileged"),
        ("enforce-version", "v1.33"),
        ("warn", "restricted"),
        ("warn-version", "v1.33"),
        ("audit", "baseline"),
        ("audit-version", "v1.33"),
    ] {
        assert_eq!(labels[&format!("{POD_SECURITY_LABEL}{key}")], value, "{key}");
    }
    assert_eq!(gate(&objects), "privileged");

    // "": no label, and the config's own gate (its default) decides.
    let objects = rendered("podSecurity:\n  enforce: \"\"\n").unwrap();
    assert!(
        !namespace_labels(&objects)
            .keys()
            .any(|k| k.starts_with(POD_SECURITY_LABEL))
    );
    assert_eq!(gate(&objects), gate(&render("c1", &Values::default()).unwrap()));
}

#[test]
fn a_stricter_gate_of_the_config_is_kept_and_a_looser_one_or_a_bad_level_refused() {
    let objects = rendered("config:\n  sync:\n    pods:\n      podSecurityStandard: restricted\n").unwrap();
    assert_eq!(gate(&objects), "restricted");
    assert_eq!(
        namespace_labels(&objects)["pod-security.kubernetes.io/enforce"],
        "baseline"
    );
    for (values, expected) in [
        (
            "config:\n  sync:\n    pods:\n      podSecurityStandard: privileged\n",
            "privileged is looser than podSecurity.enforce: baseline",
        ),
        ("podSecurity:\n  enforce: restricted\n", "k3s runs as root"),
        (
            "podSecurity:\n  warn: strict\n",
            "podSecurity.warn: \"strict\" is not a Pod Security level",
        ),
        (
            "podSecurity:\n  version: \"1.30\"\n",
            "podSecurity.version: \"1.30\"",
        ),
        ("podSecurity:\n  level: baseline\n", "unknown field `level`"),
    ] {
        let err = Values::parse(values, "v")
            .and_then(|v| render("c1", &v))
            .unwrap_err();
        assert!(matches!(err, ClusterError::BadInput(_)), "{err}");
        assert!(err.to_string().contains(expected), "{values}: {err}");
    }
}

/// The control plane's own pod (k3s and vcsync) is admissible where the host enforces
/// baseline (no privileged container, host namespace, hostPath or added capability); it is
/// not under restricted (k3s runs as root), which `podSecurity.enforce` refuses.
#[test]
fn the_control_plane_pod_meets_baseline() {
    use vcsync_syncer::syncers::pods::security::{PodSecurityLevel, violations};
    for values in [
        "",
        "persistence:\n  enabled: false\ncontrolPlane:\n  serviceCidr: 10.43.0.0/16\n",
    ] {
        let values = Values::parse(values, "v").unwrap();
        let set = statefulset("c1", "vcsync-c1", &values);
        let pod = set.spec.template.spec.unwrap();
        assert_eq!(
            violations(PodSecurityLevel::Baseline, &pod, None),
            Vec::<String>::new()
        );
        assert!(!violations(PodSecurityLevel::Restricted, &pod, None).is_empty());
    }
}

/// `vcsync cluster service-ip` (the control plane's init container) against a real HTTP
/// API server: it waits for the Service, answers its cluster IP, and says why it gave up.
#[tokio::test]
async fn the_service_ip_is_waited_for_and_a_missing_or_headless_service_is_explained() {
    use vcsync_apiserver::{ApiServer, ServerConfig};
    let server = ApiServer::start(ServerConfig::default()).await.unwrap();
    let kubeconfig = kube::config::Kubeconfig::from_yaml(&server.kubeconfig()).unwrap();
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
        .await
        .unwrap();
    let client = Client::try_from(config).unwrap();
    let services = Api::<Service>::namespaced(client.clone(), "default");
    let service = |name: &str, cluster_ip: Option<&str>| Service {
        metadata: ObjectMeta {
            name: Some(name.into()),
            ..Default::default()
        },
        spec: Some(ServiceSpec {
            cluster_ip: cluster_ip.map(String::from),
            ports: Some(vec![ServicePort {
                port: 443,
                ..Default::default()
            }]),
            ..Default::default()
        }),
        ..Default::default()
    };
    let timeout = std::time::Duration::from_secs(20);

    // Created while it waits (Helm and the driver create the Service before the pod).
    let waiting = tokio::spawn({
        let client = client.clone();
        async move { wait_for_service_ip(&client, "default", "vcsync-c1", timeout).await }
    });
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    let created = services
        .create(&PostParams::default(), &service("vcsync-c1", None))
        .await
        .unwrap();
    let ip = created.spec.unwrap().cluster_ip.unwrap();
    assert_eq!(waiting.await.unwrap().unwrap(), ip);

    let missing = wait_for_service_ip(&client, "default", "absent", std::time::Duration::from_secs(1))
        .await
        .unwrap_err()
        .to_string();
    assert!(
        missing.contains("no cluster IP of Service default/absent within 1s: it does not exist"),
        "{missing}"
    );

    services
        .create(&PostParams::default(), &service("headless", Some("None")))
        .await
        .unwrap();
    let headless = wait_for_service_ip(&client, "default", "headless", timeout)
        .await
        .unwrap_err()
        .to_string();
    assert!(headless.contains("is headless"), "{headless}");
    server.shutdown().await;
}
