//! The node reports of vcsync's kubelet API: `/stats/summary`, `/metrics/resource` and
//! `/runningpods/` hold the tenant's running pods only, under their virtual names, with the
//! usage the host's `metrics.k8s.io` PodMetrics give for their host twins; and, on the embedded
//! servers (which serve `metrics.k8s.io` from the nodes' kubelets as metrics-server does),
//! `kubectl top pods` in the virtual cluster shows them.
//!
//! A real host here runs no metrics-server; the test stands in for one with a CustomResource
//! of the same group, version and resource, holding PodMetrics it writes for the host twins.

use http::{Request, StatusCode};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::{
    Api, Client,
    api::{ApiResource, DynamicObject, PostParams},
};
use serde_json::{Value, json};

use crate::{
    env::{Env, eventually, get},
    kubelet_api::{KubeletSetup, assert_success, body_text, service_account_token, text},
};

fn pod_metrics() -> ApiResource {
    ApiResource {
        group: "metrics.k8s.io".into(),
        version: "v1beta1".into(),
        api_version: "metrics.k8s.io/v1beta1".into(),
        kind: "PodMetrics".into(),
        plural: "pods".into(),
    }
}

/// Whether `client`'s server serves `metrics.k8s.io/v1beta1`.
async fn serves_metrics(client: &Client) -> bool {
    let request = Request::get("/apis/metrics.k8s.io/v1beta1")
        .body(Vec::new())
        .unwrap();
    client.request_text(request).await.is_ok()
}

/// On a host without a metrics API: a CustomResourceDefinition serving PodMetrics at the
/// address metrics-server's APIService has (created once; tests share it).
async fn stand_in_for_metrics_server(host: &Client) {
    if serves_metrics(host).await {
        return;
    }
    let definition: CustomResourceDefinition = serde_json::from_value(json!({
        "metadata": {
            "name": "pods.metrics.k8s.io",
            "annotations": {"api-approved.kubernetes.io": "unapproved, a test's stand-in for metrics-server"},
        },
        "spec": {
            "group": "metrics.k8s.io",
            "scope": "Namespaced",
            "names": {"plural": "pods", "singular": "podmetrics", "kind": "PodMetrics", "listKind": "PodMetricsList"},
            "versions": [{"name": "v1beta1", "served": true, "storage": true, "schema": {"openAPIV3Schema": {
                "type": "object",
                "properties": {
                    "timestamp": {"type": "string"},
                    "window": {"type": "string"},
                    "containers": {"type": "array", "items": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}},
                },
            }}}],
        },
    }))
    .unwrap();
    let definitions: Api<CustomResourceDefinition> = Api::all(host.clone());
    if let Err(err) = definitions.create(&PostParams::default(), &definition).await {
        assert!(
            matches!(&err, kube::Error::Api(status) if status.code == 409),
            "the PodMetrics stand-in: {err}"
        );
    }
    eventually("the host serving PodMetrics", || async {
        serves_metrics(host).await.then_some(())
    })
    .await;
}

/// Writes the stand-in PodMetrics of host pod `namespace/name` (its labels, as metrics-server
/// copies them): container `app` at `cpu` and `memory`.
async fn write_pod_metrics(host: &Client, namespace: &str, name: &str, cpu: &str, memory: &str) {
    let pod = Api::<Pod>::namespaced(host.clone(), namespace)
        .get(name)
        .await
        .unwrap();
    let sample: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "metrics.k8s.io/v1beta1",
        "kind": "PodMetrics",
        "metadata": {"name": name, "namespace": namespace, "labels": pod.metadata.labels},
        "timestamp": k8s_openapi::jiff::Timestamp::now().to_string(),
        "window": "15s",
        "containers": [{"name": "app", "usage": {"cpu": cpu, "memory": memory}}],
    }))
    .unwrap();
    Api::<DynamicObject>::namespaced_with(host.clone(), namespace, &pod_metrics())
        .create(&PostParams::default(), &sample)
        .await
        .unwrap();
}

/// The usage of container `app` the host's PodMetrics give for host pod `namespace/name`, in
/// nano-cores and bytes, once it has one.
async fn host_usage(host: &Client, namespace: &str, name: &str) -> (u64, u64) {
    let samples: Api<DynamicObject> = Api::namespaced_with(host.clone(), namespace, &pod_metrics());
    eventually(&format!("PodMetrics of host pod {namespace}/{name}"), || async {
        let sample = get(&samples, name).await?;
        let usage = sample.data["containers"]
            .as_array()?
            .iter()
            .find(|c| c["name"] == "app")?["usage"]
            .clone();
        Some((
            quantity(usage["cpu"].as_str()?, 1e9),
            quantity(usage["memory"].as_str()?, 1.0),
        ))
    })
    .await
}

/// A quantity (`"5m"`, `"8Mi"`, `"123456n"`, `"8192Ki"`) times `scale`, rounded.
fn quantity(text: &str, scale: f64) -> u64 {
    let split = text.find(|c: char| c.is_ascii_alphabetic()).unwrap_or(text.len());
    let (number, suffix) = text.split_at(split);
    let factor = match suffix {
        "" => 1.0,
        "n" => 1e-9,
        "u" => 1e-6,
        "m" => 1e-3,
        "k" => 1e3,
        "Ki" => 1024.0,
        "Mi" => 1024.0 * 1024.0,
        "Gi" => 1024.0 * 1024.0 * 1024.0,
        other => panic!("a quantity suffix the test does not know: {other} in {text}"),
    };
    (number.parse::<f64>().unwrap() * factor * scale).round() as u64
}

/// A client of the endpoint allowed everything: the virtual admin's certificate, or on the
/// embedded servers (which authorise every request) a token they issued.
async fn admin_of(setup: &KubeletSetup) -> Client {
    match setup.env.embedded() {
        None => {
            setup
                .endpoint_client(Some(setup.env.virtual_kubeconfig()), None)
                .await
        }
        Some(_) => {
            let token = service_account_token(&setup.env.virt, &setup.env.virt_ns, "stats-reader").await;
            setup.endpoint_client(None, Some(&token)).await
        }
    }
}

async fn fetch(client: &Client, path: &str) -> (StatusCode, String) {
    let request = Request::get(path).body(kube::client::Body::empty()).unwrap();
    let response = client.send(request).await.unwrap();
    let status = response.status();
    (status, body_text(response).await)
}

/// A host pod no virtual pod owns, carrying this instance's marker as if it were one of its own.
async fn stranger_on_host(env: &Env, namespace: &str) -> String {
    let name = format!("stranger-{}", env.instance);
    let pod: Pod = serde_json::from_value(json!({
        "metadata": {"name": name, "labels": {vcsync_translators::MANAGED_BY_LABEL: env.instance}},
        "spec": {"containers": [{"name": "app", "image": "busybox"}]},
    }))
    .unwrap();
    Api::<Pod>::namespaced(env.host.clone(), namespace)
        .create(&PostParams::default(), &pod)
        .await
        .unwrap();
    name
}

#[tokio::test]
async fn stats_and_metrics_hold_the_tenants_pods_only_under_virtual_names() {
    let Some(setup) = KubeletSetup::start().await else {
        return;
    };
    let env = &setup.env;
    let ns = env.virt_ns.clone();
    let other = format!("{ns}-m");
    setup.create_namespace(&other).await;
    setup.run_pod(&ns, "web").await;
    setup.run_pod(&other, "api").await;
    let web = env.mapping.host_key(&ns, "web");
    let api = env.mapping.host_key(&other, "api");
    let web_ns = web.namespace.clone().unwrap();
    let stranger = stranger_on_host(env, &web_ns).await;
    if env.embedded().is_none() {
        stand_in_for_metrics_server(&env.host).await;
        write_pod_metrics(&env.host, &web_ns, &web.name, "5m", "8Mi").await;
        write_pod_metrics(
            &env.host,
            api.namespace.as_deref().unwrap(),
            &api.name,
            "7m",
            "16Mi",
        )
        .await;
        write_pod_metrics(&env.host, &web_ns, &stranger, "900m", "1Gi").await;
    }
    let web_usage = host_usage(&env.host, &web_ns, &web.name).await;
    let api_usage = host_usage(&env.host, api.namespace.as_deref().unwrap(), &api.name).await;
    let admin = admin_of(&setup).await;
    // Host names that would give a host pod away (per namespace, pods keep their names).
    let host_names: Vec<&str> = [(&web.name, "web"), (&api.name, "api"), (&stranger, "")]
        .into_iter()
        .filter(|(host, name)| host.as_str() != *name)
        .map(|(host, _)| host.as_str())
        .collect();

    // The summary: the two pods under their virtual names with their twins' usage.
    let (status, body) = fetch(&admin, "/stats/summary").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let summary: Value = serde_json::from_str(&body).unwrap();
    let pods = summary["pods"].as_array().unwrap();
    for (namespace, name, (cpu, memory)) in [(&ns, "web", web_usage), (&other, "api", api_usage)] {
        let pod = pods
            .iter()
            .find(|p| p["podRef"]["name"] == name && p["podRef"]["namespace"] == namespace.as_str())
            .unwrap_or_else(|| panic!("{namespace}/{name} in the summary: {body}"));
        let app = &pod["containers"][0];
        assert_eq!(app["name"], "app");
        assert_eq!(app["cpu"]["usageNanoCores"], cpu, "{body}");
        assert_eq!(app["memory"]["workingSetBytes"], memory, "{body}");
        assert!(app["cpu"]["usageCoreNanoSeconds"].as_u64().is_some(), "{body}");
    }
    assert_eq!(pods.len(), 2, "the tenant's pods only: {body}");
    for host_name in &host_names {
        assert!(!body.contains(host_name), "a host name in the summary: {body}");
    }

    // The Prometheus form: the same figures, labelled with virtual names.
    let (status, metrics) = fetch(&admin, "/metrics/resource").await;
    assert_eq!(status, StatusCode::OK, "{metrics}");
    let line =
        format!("container_memory_working_set_bytes{{container=\"app\",namespace=\"{ns}\",pod=\"web\"}} ");
    let sample = metrics
        .lines()
        .find_map(|l| l.strip_prefix(&line))
        .unwrap_or_else(|| panic!("no working set of {ns}/web: {metrics}"));
    assert_eq!(sample.split(' ').next().unwrap(), web_usage.1.to_string());
    assert!(metrics.contains(&format!(
        "pod_cpu_usage_seconds_total{{namespace=\"{other}\",pod=\"api\"}} "
    )));
    for host_name in &host_names {
        assert!(
            !metrics.contains(host_name),
            "a host name in the metrics: {metrics}"
        );
    }

    // The running pods: virtual names and UIDs.
    let (status, body) = fetch(&admin, "/runningpods/").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let running: Value = serde_json::from_str(&body).unwrap();
    let mut names: Vec<String> = running["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            format!(
                "{}/{}",
                p["metadata"]["namespace"].as_str().unwrap(),
                p["metadata"]["name"].as_str().unwrap()
            )
        })
        .collect();
    names.sort();
    let mut expected = [format!("{ns}/web"), format!("{other}/api")];
    expected.sort();
    assert_eq!(names, expected);

    // Without credentials: nothing.
    let anonymous = setup.endpoint_client(None, None).await;
    assert_eq!(
        fetch(&anonymous, "/stats/summary").await.0,
        StatusCode::UNAUTHORIZED
    );

    if env.embedded().is_some() {
        // The embedded virtual server serves metrics.k8s.io from its nodes' kubelets (vcsync).
        let virtual_web = get(&Api::<Pod>::namespaced(env.virt.clone(), &ns), "web").await;
        assert!(virtual_web.is_some());
        let top = setup.kubectl(&ns, &["top", "pods", "--no-headers"], None).await;
        assert_success(&top, "kubectl top pods");
        let shown = text(&top);
        let row: Vec<&str> = shown
            .lines()
            .find(|l| l.starts_with("web "))
            .unwrap_or_else(|| panic!("web in kubectl top: {shown}"))
            .split_whitespace()
            .collect();
        let millicores = (web_usage.0 as f64 / 1e6).ceil() as u64;
        assert_eq!(row[1], format!("{millicores}m"), "{shown}");
        assert_eq!(row[2], format!("{}Mi", web_usage.1 / (1024 * 1024)), "{shown}");
    }
    setup.finish().await;
}
