//! `/stats/summary`, `/metrics/resource` and `/runningpods/` on a real socket: the pods the store
//! shows Running on the node, and nothing else.

use serde_json::{Value, json};

use super::Fixture;
use super::protocols::{NODE, connect, get, request};

/// Stores pod `name` on `node` and marks it Running since `started`.
fn running(fixture: &Fixture, name: &str, node: &str, containers: &[&str], started: &str) -> Value {
    let pod = fixture.add_pod("default", name, node, containers);
    let mut pod = (*pod).clone();
    let statuses: Vec<Value> = containers
        .iter()
        .map(|c| json!({"name": c, "ready": true, "state": {"running": {"startedAt": started}}}))
        .collect();
    pod["status"] = json!({"phase": "Running", "startTime": started, "containerStatuses": statuses});
    let objects = &fixture.server.inner.shared.objects;
    let pods = objects.registry.find("", "v1", "pods").unwrap();
    let updated = objects
        .update(&pods, "default", name, Some("status"), pod)
        .unwrap();
    (*updated).clone()
}

#[tokio::test]
async fn the_summary_reports_the_running_pods_of_the_node() {
    let fixture = Fixture::start(&[NODE], None).await;
    running(
        &fixture,
        "web",
        NODE.0,
        &["app", "sidecar"],
        "2026-01-01T00:00:00Z",
    );
    running(
        &fixture,
        "elsewhere",
        "sim-node-9",
        &["app"],
        "2026-01-01T00:00:00Z",
    );
    fixture.add_pod("default", "pending", NODE.0, &["app"]);

    let (status, body) = get(&fixture, "/stats/summary").await;
    assert_eq!(status, 200, "{body}");
    let summary: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(summary["node"]["nodeName"], NODE.0);
    let pods = summary["pods"].as_array().unwrap();
    assert_eq!(pods.len(), 1, "only the running pod bound here: {summary}");
    let pod = &pods[0];
    assert_eq!(pod["podRef"]["name"], "web");
    assert_eq!(pod["startTime"], "2026-01-01T00:00:00Z");
    let containers = pod["containers"].as_array().unwrap();
    let names: Vec<&str> = containers.iter().map(|c| c["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["app", "sidecar"]);
    let figure = |stats: &Value, path: [&str; 2]| stats[path[0]][path[1]].as_u64().unwrap();
    for path in [["cpu", "usageNanoCores"], ["memory", "workingSetBytes"]] {
        let sum: u64 = containers.iter().map(|c| figure(c, path)).sum();
        assert!(sum > 0);
        assert_eq!(figure(pod, path), sum, "{path:?}");
        assert_eq!(figure(&summary["node"], path), sum, "{path:?}");
    }
    // A second look: the same rates, more cumulative time (or the same within a second).
    let (_, again) = get(&fixture, "/stats/summary?only_cpu_and_memory=true").await;
    let again: Value = serde_json::from_str(&again).unwrap();
    let container = &again["pods"][0]["containers"][0];
    assert_eq!(
        container["cpu"]["usageNanoCores"],
        containers[0]["cpu"]["usageNanoCores"]
    );
    assert!(
        figure(container, ["cpu", "usageCoreNanoSeconds"])
            >= figure(&containers[0], ["cpu", "usageCoreNanoSeconds"])
    );
    fixture.stop().await;
}

#[tokio::test]
async fn resource_metrics_and_running_pods() {
    let fixture = Fixture::start(&[NODE], None).await;
    running(&fixture, "web", NODE.0, &["app"], "2026-01-01T00:00:00Z");

    let mut tls = connect(&fixture, true).await.unwrap();
    let (status, headers, _) = request(&mut tls, "GET", "/metrics/resource", &[]).await;
    assert_eq!(status, 200);
    assert!(headers.contains(&(
        "content-type".into(),
        "text/plain; version=0.0.4; charset=utf-8".into()
    )));
    let (_, text) = get(&fixture, "/metrics/resource").await;
    let sample = text
        .lines()
        .find(|l| l.starts_with("container_memory_working_set_bytes{"))
        .unwrap();
    assert!(
        sample.starts_with(
            r#"container_memory_working_set_bytes{container="app",namespace="default",pod="web"} "#
        ),
        "{sample}"
    );
    assert_eq!(sample.split(' ').count(), 3, "value and timestamp: {sample}");
    assert!(text.contains("# TYPE pod_cpu_usage_seconds_total counter\n"));
    assert!(text.ends_with("resource_scrape_error 0\n"));

    let (status, body) = get(&fixture, "/runningpods/").await;
    assert_eq!(status, 200);
    let list: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(list["kind"], "PodList");
    assert_eq!(list["items"].as_array().unwrap().len(), 1);
    assert_eq!(list["items"][0]["metadata"]["name"], "web");
    assert_eq!(list["items"][0]["spec"]["containers"][0]["image"], "busybox");
    fixture.stop().await;
}
