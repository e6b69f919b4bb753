//! `/metrics/resource`: the kubelet's resource metrics in the Prometheus text format (0.0.4),
//! built from the same figures as the summary ([`super::stats`]): the families the kubelet's
//! resource metrics collector exposes, sorted by name, with their HELP and TYPE lines, labels
//! in name order, samples in label order and millisecond timestamps where the kubelet gives
//! them (all but `container_start_time_seconds` and `resource_scrape_error`). Pure.

use std::fmt::Write;

use jiff::Timestamp;

use super::stats::PodUsage;

/// The content type the kubelet answers with.
pub(crate) const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// A sample: its labels (name order), value and timestamp in milliseconds.
type Sample = (Vec<(&'static str, String)>, f64, Option<i64>);

/// One metric family: name, help, type and its samples.
struct Family {
    name: &'static str,
    help: &'static str,
    kind: &'static str,
    samples: Vec<Sample>,
}

/// The text of a node whose `pods` are measured at `now`.
pub(crate) fn render(pods: &[PodUsage], now: Timestamp) -> String {
    let millis = Some(now.as_millisecond());
    let seconds = |nanos: u64| nanos as f64 / 1e9;
    let family = |name, help, kind| Family {
        name,
        help,
        kind,
        samples: Vec::new(),
    };
    let mut container_cpu = family(
        "container_cpu_usage_seconds_total",
        "Cumulative cpu time consumed by the container in core-seconds",
        "counter",
    );
    let mut container_memory = family(
        "container_memory_working_set_bytes",
        "Current working set of the container in bytes",
        "gauge",
    );
    let mut container_start = family(
        "container_start_time_seconds",
        "Start time of the container since unix epoch in seconds",
        "gauge",
    );
    let mut pod_cpu = family(
        "pod_cpu_usage_seconds_total",
        "Cumulative cpu time consumed by the pod in core-seconds",
        "counter",
    );
    let mut pod_memory = family(
        "pod_memory_working_set_bytes",
        "Current working set of the pod in bytes",
        "gauge",
    );
    for pod in pods {
        for c in &pod.containers {
            let labels = vec![
                ("container", c.name.clone()),
                ("namespace", pod.namespace.clone()),
                ("pod", pod.name.clone()),
            ];
            container_cpu
                .samples
                .push((labels.clone(), seconds(c.core_nano_seconds), millis));
            container_memory
                .samples
                .push((labels.clone(), c.working_set_bytes as f64, millis));
            let start = c.start.as_nanosecond() as f64 / 1e9;
            container_start.samples.push((labels, start, None));
        }
        let labels = vec![("namespace", pod.namespace.clone()), ("pod", pod.name.clone())];
        pod_cpu
            .samples
            .push((labels.clone(), seconds(pod.core_nano_seconds()), millis));
        pod_memory
            .samples
            .push((labels, pod.working_set_bytes() as f64, millis));
    }
    let sum = |figure: fn(&PodUsage) -> u64| pods.iter().map(figure).sum::<u64>();
    let mut node_cpu = family(
        "node_cpu_usage_seconds_total",
        "Cumulative cpu time consumed by the node in core-seconds",
        "counter",
    );
    node_cpu
        .samples
        .push((Vec::new(), seconds(sum(PodUsage::core_nano_seconds)), millis));
    let mut node_memory = family(
        "node_memory_working_set_bytes",
        "Current working set of the node in bytes",
        "gauge",
    );
    node_memory
        .samples
        .push((Vec::new(), sum(PodUsage::working_set_bytes) as f64, millis));
    let mut scrape_error = family(
        "resource_scrape_error",
        "1 if there was an error while getting container metrics, 0 otherwise",
        "gauge",
    );
    scrape_error.samples.push((Vec::new(), 0.0, None));

    let mut text = String::new();
    for mut family in [
        container_cpu,
        container_memory,
        container_start,
        node_cpu,
        node_memory,
        pod_cpu,
        pod_memory,
        scrape_error,
    ] {
        if family.samples.is_empty() {
            continue;
        }
        family.samples.sort_by(|a, b| a.0.cmp(&b.0));
        let _ = writeln!(text, "# HELP {} [STABLE] {}", family.name, family.help);
        let _ = writeln!(text, "# TYPE {} {}", family.name, family.kind);
        for (labels, value, timestamp) in &family.samples {
            text.push_str(family.name);
            if !labels.is_empty() {
                let pairs: Vec<String> = labels
                    .iter()
                    .map(|(name, value)| format!("{name}=\"{}\"", escape(value)))
                    .collect();
                let _ = write!(text, "{{{}}}", pairs.join(","));
            }
            let _ = write!(text, " {}", go_float(*value));
            if let Some(timestamp) = timestamp {
                let _ = write!(text, " {timestamp}");
            }
            text.push('\n');
        }
    }
    text
}

/// A label value escaped for the text format.
fn escape(value: &str) -> String {
    value
        .replace('\\', r"\\")
        .replace('"', "\\\"")
        .replace('\n', r"\n")
}

/// `value` as Go's `strconv.FormatFloat(value, 'g', -1, 64)` writes it (the Prometheus text
/// format's numbers): the shortest digits that read back the same, in exponent form when the
/// exponent is below -4 or at least 6 (`1.2715470848e+10`, `60.351628`, `0`).
fn go_float(value: f64) -> String {
    if value == 0.0 {
        return "0".to_string();
    }
    if !value.is_finite() {
        return if value.is_nan() {
            "NaN".into()
        } else if value > 0.0 {
            "+Inf".into()
        } else {
            "-Inf".into()
        };
    }
    let scientific = format!("{value:e}");
    let (mantissa, exponent) = scientific.split_once('e').expect("an exponent");
    let exponent: i32 = exponent.parse().expect("a number");
    if (-4..6).contains(&exponent) {
        format!("{value}")
    } else {
        let sign = if exponent < 0 { '-' } else { '+' };
        format!("{mantissa}e{sign}{:02}", exponent.abs())
    }
}

#[cfg(test)]
mod tests {
    use super::super::stats::ContainerUsage;
    use super::*;

    #[test]
    fn floats_read_as_go_writes_them() {
        assert_eq!(go_float(0.0), "0");
        assert_eq!(go_float(60.351628), "60.351628");
        assert_eq!(go_float(32479.158256), "32479.158256");
        assert_eq!(go_float(1.2715470848e10), "1.2715470848e+10");
        assert_eq!(go_float(1_000_000.0), "1e+06");
        assert_eq!(go_float(123456.0), "123456");
        assert_eq!(go_float(0.00012), "0.00012");
        assert_eq!(go_float(0.000012), "1.2e-05");
        assert_eq!(go_float(1.7672256e9), "1.7672256e+09");
    }

    #[test]
    fn families_are_sorted_and_timestamped_as_the_kubelet_writes_them() {
        let now: Timestamp = "2026-01-01T00:01:10Z".parse().unwrap();
        let container = |name: &str, nano_cores: u64| ContainerUsage {
            name: name.into(),
            start: "2026-01-01T00:00:10Z".parse().unwrap(),
            nano_cores,
            core_nano_seconds: nano_cores * 60,
            working_set_bytes: 8192,
            usage_bytes: 8192,
            limit_bytes: None,
        };
        let pod = PodUsage {
            namespace: "ns".into(),
            name: "web".into(),
            uid: "u1".into(),
            start: "2026-01-01T00:00:00Z".parse().unwrap(),
            containers: vec![container("side", 2_000_000), container("app", 1_500_000)],
        };
        let text = render(&[pod], now);
        let expected = "\
# HELP container_cpu_usage_seconds_total [STABLE] Cumulative cpu time consumed by the container in core-seconds
# TYPE container_cpu_usage_seconds_total counter
container_cpu_usage_seconds_total{container=\"app\",namespace=\"ns\",pod=\"web\"} 0.09 1767225670000
container_cpu_usage_seconds_total{container=\"side\",namespace=\"ns\",pod=\"web\"} 0.12 1767225670000
# HELP container_memory_working_set_bytes [STABLE] Current working set of the container in bytes
# TYPE container_memory_working_set_bytes gauge
container_memory_working_set_bytes{container=\"app\",namespace=\"ns\",pod=\"web\"} 8192 1767225670000
container_memory_working_set_bytes{container=\"side\",namespace=\"ns\",pod=\"web\"} 8192 1767225670000
# HELP container_start_time_seconds [STABLE] Start time of the container since unix epoch in seconds
# TYPE container_start_time_seconds gauge
container_start_time_seconds{container=\"app\",namespace=\"ns\",pod=\"web\"} 1.76722561e+09
container_start_time_seconds{container=\"side\",namespace=\"ns\",pod=\"web\"} 1.76722561e+09
# HELP node_cpu_usage_seconds_total [STABLE] Cumulative cpu time consumed by the node in core-seconds
# TYPE node_cpu_usage_seconds_total counter
node_cpu_usage_seconds_total 0.21 1767225670000
# HELP node_memory_working_set_bytes [STABLE] Current working set of the node in bytes
# TYPE node_memory_working_set_bytes gauge
node_memory_working_set_bytes 16384 1767225670000
# HELP pod_cpu_usage_seconds_total [STABLE] Cumulative cpu time consumed by the pod in core-seconds
# TYPE pod_cpu_usage_seconds_total counter
pod_cpu_usage_seconds_total{namespace=\"ns\",pod=\"web\"} 0.21 1767225670000
# HELP pod_memory_working_set_bytes [STABLE] Current working set of the pod in bytes
# TYPE pod_memory_working_set_bytes gauge
pod_memory_working_set_bytes{namespace=\"ns\",pod=\"web\"} 16384 1767225670000
# HELP resource_scrape_error [STABLE] 1 if there was an error while getting container metrics, 0 otherwise
# TYPE resource_scrape_error gauge
resource_scrape_error 0
";
        assert_eq!(text, expected);
        let empty = render(&[], now);
        assert!(empty.starts_with("# HELP node_cpu_usage_seconds_total"));
        assert!(empty.ends_with("resource_scrape_error 0\n"));
    }
}
