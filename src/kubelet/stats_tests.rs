use super::*;

fn at(seconds: i64) -> Timestamp {
    Timestamp::from_second(1_800_000_000 + seconds).unwrap()
}

fn web() -> PodUsage {
    PodUsage {
        namespace: "shop".into(),
        name: "web".into(),
        uid: "u1".into(),
        started: Some(at(-100)),
        sampled: at(0),
        containers: vec![
            ContainerUsage {
                name: "nginx".into(),
                started: Some(at(-90)),
                cpu_nano_cores: Some(2_000_000),
                cpu_core_nano_seconds: Some(3_000_000_000),
                memory_working_set_bytes: Some(4096),
            },
            ContainerUsage {
                name: "sidecar".into(),
                started: None,
                cpu_nano_cores: Some(1_000_000),
                cpu_core_nano_seconds: Some(1_000_000_000),
                memory_working_set_bytes: None,
            },
        ],
    }
}

#[test]
fn the_summary_holds_each_pod_under_its_virtual_name_with_container_and_pod_sums() {
    let summary = summary("demo", &[web()], at(5));
    let pod = &summary["pods"][0];
    assert_eq!(
        pod["podRef"],
        json!({"name": "web", "namespace": "shop", "uid": "u1"})
    );
    assert_eq!(pod["cpu"]["usageNanoCores"], 3_000_000);
    assert_eq!(pod["cpu"]["usageCoreNanoSeconds"], 4_000_000_000u64);
    assert_eq!(pod["memory"]["workingSetBytes"], 4096);
    assert_eq!(pod["containers"][0]["name"], "nginx");
    assert_eq!(pod["containers"][0]["startTime"], at(-90).to_string());
    // A container with no start of its own started with its pod.
    assert_eq!(pod["containers"][1]["startTime"], at(-100).to_string());
    // A figure the host did not give is absent, not zero.
    assert!(pod["containers"][1]["memory"].get("workingSetBytes").is_none());
    assert_eq!(summary["node"]["nodeName"], "demo");
    assert_eq!(summary["node"]["cpu"]["usageNanoCores"], 3_000_000);
    assert_eq!(summary["node"]["memory"]["workingSetBytes"], 4096);
}

#[test]
fn a_summary_of_no_pods_has_a_node_without_figures() {
    let summary = summary("demo", &[], at(5));
    assert_eq!(summary["pods"], json!([]));
    assert!(summary["node"]["cpu"].get("usageNanoCores").is_none());
    assert_eq!(summary["node"]["startTime"], at(5).to_string());
}

#[test]
fn resource_metrics_are_prometheus_text_with_the_kubelets_names_and_labels() {
    let text = resource_metrics(&[web()], at(5));
    let ms = at(0).as_millisecond();
    assert!(
        text.contains("# TYPE container_cpu_usage_seconds_total counter\n"),
        "{text}"
    );
    assert!(
        text.contains(&format!(
            "container_cpu_usage_seconds_total{{container=\"nginx\",namespace=\"shop\",pod=\"web\"}} 3 {ms}\n"
        )),
        "{text}"
    );
    assert!(
        text.contains(&format!(
            "container_memory_working_set_bytes{{container=\"nginx\",namespace=\"shop\",pod=\"web\"}} 4096 {ms}\n"
        )),
        "{text}"
    );
    assert!(
        text.contains(&format!(
            "pod_cpu_usage_seconds_total{{namespace=\"shop\",pod=\"web\"}} 4 {ms}\n"
        )),
        "{text}"
    );
    assert!(text.contains("node_memory_working_set_bytes 4096 "), "{text}");
    assert!(text.contains("resource_scrape_error 0 "), "{text}");
    // The sidecar has no memory figure: no sample, rather than a zero.
    assert!(
        !text.contains("container_memory_working_set_bytes{container=\"sidecar\""),
        "{text}"
    );
    // Every sample line belongs to a family announced before it.
    let mut announced = Vec::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            announced.push(rest.split(' ').next().unwrap().to_string());
        } else if !line.starts_with('#') {
            let name = line.split(['{', ' ']).next().unwrap();
            assert_eq!(announced.last().map(String::as_str), Some(name), "{line}");
        }
    }
}

#[test]
fn label_values_are_escaped() {
    let mut pod = web();
    pod.name = "we\"b".into();
    let text = resource_metrics(&[pod], at(0));
    assert!(text.contains("pod=\"we\\\"b\""), "{text}");
}

#[test]
fn running_pods_list_names_uids_and_container_images() {
    let pod: k8s_openapi::api::core::v1::Pod = serde_json::from_value(json!({
        "metadata": {"name": "web", "namespace": "shop", "uid": "u1", "labels": {"a": "b"}},
        "spec": {"containers": [{"name": "nginx", "image": "nginx:1"}]},
    }))
    .unwrap();
    let list = running_pods(&[pod]);
    assert_eq!(list["kind"], "PodList");
    assert_eq!(list["items"][0]["metadata"]["name"], "web");
    assert_eq!(list["items"][0]["metadata"]["uid"], "u1");
    assert!(list["items"][0]["metadata"].get("labels").is_none());
    assert_eq!(list["items"][0]["spec"]["containers"][0]["image"], "nginx:1");
}

#[test]
fn cpu_totals_integrate_successive_samples_and_forget_stale_containers() {
    let totals = CpuTotals::default();
    let window = SignedDuration::from_secs(10);
    let rate = 500_000_000; // half a core
    // First sample: the window's worth.
    assert_eq!(
        totals.advance(("u1", "c"), at(0), window, rate, at(0)),
        5_000_000_000
    );
    // The same sample again adds nothing.
    assert_eq!(
        totals.advance(("u1", "c"), at(0), window, rate, at(1)),
        5_000_000_000
    );
    // Four seconds later at a full core: four core-seconds more.
    assert_eq!(
        totals.advance(("u1", "c"), at(4), window, 1_000_000_000, at(4)),
        9_000_000_000
    );
    // Another container is counted apart.
    assert_eq!(totals.advance(("u1", "d"), at(4), window, 0, at(4)), 0);
    assert_eq!(totals.len(), 2);
    totals.forget_stale(at(4) + CpuTotals::FORGET_AFTER);
    assert_eq!(totals.len(), 0);
}
