//! `vcsync bench`: the harness runs and reports sane figures (no timing assertions: those are
//! BENCHMARKS.md's, from release builds).

use std::process::Command;

use serde_json::Value;

fn bench(args: &[&str]) -> Value {
    let output = Command::new(env!("CARGO_BIN_EXE_vcsync"))
        .arg("bench")
        .args(args)
        .arg("--json")
        .output()
        .expect("running vcsync bench");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "vcsync bench failed ({}):\n{stdout}\n{stderr}",
        output.status
    );
    serde_json::from_str(&stdout).expect("a JSON report")
}

fn number(report: &Value, field: &str) -> f64 {
    report[field]
        .as_f64()
        .unwrap_or_else(|| panic!("{field} missing in {report:#}"))
}

#[test]
fn a_small_burst_syncs_every_pod_and_reports_its_figures() {
    let report = bench(&["burst", "--pods", "50"]);
    assert_eq!(number(&report, "pods_synced"), 50.0, "{report:#}");
    assert_eq!(number(&report, "pods_running_virtual"), 50.0, "{report:#}");
    // Each pod's config map and secret on the host.
    assert_eq!(number(&report, "host_data_objects"), 100.0, "{report:#}");
    for field in [
        "sync_direct_ratio",
        "direct_s",
        "sync_s",
        "cpu_s",
        "peak_rss_bytes",
        "idle_rss_bytes",
        "sync_servers_and_client_cpu_s",
        "servers_bound_ratio",
    ] {
        assert!(number(&report, field) > 0.0, "{field} in {report:#}");
    }
    assert_rss_per_pod_is_plausible(&report, 50.0, "peak_rss_bytes");
    // CPU seconds over the cores cannot exceed the wall time, so the bound cannot exceed the
    // measured ratio (up to twice it: /proc counts in 10 ms ticks, and this run is short).
    assert!(
        number(&report, "servers_bound_ratio") <= number(&report, "sync_direct_ratio") * 2.0,
        "{report:#}"
    );
    // At least the host create, the virtual binding and the virtual status of each pod.
    assert!(number(&report, "writes_per_pod") >= 3.0, "{report:#}");
    // Every pod and its config map created on the host (a create repeated against a lagging
    // cache is possible, so at least once).
    let requests = report["requests"]
        .as_object()
        .expect("requests by verb and cluster");
    for what in [
        "host create pods",
        "host create configmaps",
        "virtual create pods/binding",
    ] {
        let count = requests[what]["count"].as_u64().unwrap_or(0);
        assert!(count >= 50, "{what} in {report:#}");
    }
}

#[test]
fn a_restart_over_synced_pods_writes_nothing() {
    let report = bench(&["restart", "--pods", "30"]);
    assert_eq!(number(&report, "pods_synced"), 30.0, "{report:#}");
    assert_eq!(number(&report, "restart_writes"), 0.0, "{report:#}");
    assert!(number(&report, "restart_ready_s") > 0.0, "{report:#}");
    assert_rss_per_pod_is_plausible(&report, 30.0, "restart_peak_rss_bytes");
}

/// Memory per pod is what the syncer grew by over its baseline, per pod: at most what the whole
/// process peaked at, and far below 1 MiB (a few KiB per pod in the benchmarks; it is 0 when a
/// short run grows by less than the allocator's noise, so no lower bound).
fn assert_rss_per_pod_is_plausible(report: &Value, pods: f64, peak: &str) {
    let per_pod = number(report, "rss_per_pod_bytes");
    assert!(per_pod < 1024.0 * 1024.0, "rss_per_pod_bytes in {report:#}");
    assert!(
        per_pod * pods <= number(report, peak),
        "rss_per_pod_bytes in {report:#}"
    );
}

#[test]
fn kubelet_reports_logs_exec_and_port_forward_through_the_syncer_and_directly() {
    let report = bench(&["kubelet", "--requests", "5", "--forward-mib", "1"]);
    let mut fields = Vec::new();
    for phase in ["logs", "exec"] {
        for path in ["through", "direct"] {
            assert_eq!(
                number(&report, &format!("{phase}_{path}_samples")),
                5.0,
                "{report:#}"
            );
            for p in ["p50", "p99"] {
                fields.push(format!("{phase}_{path}_{p}_ms"));
            }
        }
        for p in ["p50", "p99"] {
            fields.push(format!("{phase}_through_direct_{p}_ratio"));
            // What the syncer adds: a difference of two latencies, finite but of either sign.
            let added = number(&report, &format!("{phase}_added_{p}_ms"));
            assert!(added.is_finite(), "{phase}_added_{p}_ms in {report:#}");
        }
        // Each request through the syncer is forwarded to the host's pod subresource; the
        // caller's access review is asked once and then remembered.
        let requests = &report[format!("{phase}_syncer_requests")];
        let subresource = if phase == "logs" { "pods/log" } else { "pods/exec" };
        let forwarded: u64 = requests
            .as_object()
            .into_iter()
            .flatten()
            .filter(|(key, _)| key.starts_with("host ") && key.ends_with(subresource))
            .filter_map(|(_, count)| count["count"].as_u64())
            .sum();
        assert!(forwarded >= 5, "{phase}: {report:#}");
        let reviews = requests["virtual create subjectaccessreviews"]["count"].as_u64();
        assert!(reviews.unwrap_or(0) <= 1, "{phase}: {report:#}");
    }
    for path in ["through", "direct"] {
        fields.push(format!("forward_{path}_mib_s"));
        let rounds = report[format!("forward_{path}_rounds_mib_s")]
            .as_array()
            .unwrap_or_else(|| panic!("forward_{path}_rounds_mib_s in {report:#}"));
        assert_eq!(
            rounds.len() as f64,
            number(&report, "forward_rounds"),
            "{report:#}"
        );
        assert!(
            rounds
                .iter()
                .all(|r| r.as_f64().is_some_and(|r| r.is_finite() && r > 0.0)),
            "{report:#}"
        );
    }
    fields.push("forward_through_direct_ratio".into());
    for field in &fields {
        let value = number(&report, field);
        assert!(value.is_finite() && value > 0.0, "{field} in {report:#}");
    }
}
