//! The operations endpoints (`/healthz`, `/readyz`, `/metrics`), JSON logs and a graceful
//! SIGTERM, on a syncer started here with `operations.address: 127.0.0.1:0`.

use std::{
    path::Path,
    time::{Duration, Instant},
};

use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::PostParams;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use vcsync_apiserver::RequestCounters;

use crate::{
    data_sync::config_map,
    env::{Env, PATIENCE, SyncerProcess, eventually, get},
};

/// A `vcsync run` child with JSON logs and the ops address on a free port.
pub(crate) struct Syncer(pub(crate) SyncerProcess);

impl Syncer {
    /// Starts `vcsync run` with JSON logs and the ops address on a free port; `host_kubeconfig`
    /// replaces the environment's.
    pub(crate) fn start(env: &Env, dir: &Path, host_kubeconfig: &Path, extra: &str) -> Syncer {
        let path = dir.join("vcsync.yaml");
        let extra = format!("operations:\n  address: 127.0.0.1:0\nlog:\n  format: json\n{extra}");
        std::fs::write(&path, env.config_text_with_host(host_kubeconfig, &extra)).unwrap();
        Syncer(SyncerProcess::spawn(&path, "info"))
    }

    /// The JSON log lines so far (every line must be JSON).
    fn log(&self) -> Vec<serde_json::Value> {
        self.0
            .lines()
            .iter()
            .map(|line| serde_json::from_str(line).unwrap_or_else(|err| panic!("not JSON ({err}): {line}")))
            .collect()
    }

    /// The bound ops address, from the log.
    pub(crate) async fn ops_address(&mut self) -> String {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let found = self.log().into_iter().find_map(|line| {
                (line["message"]
                    .as_str()?
                    .starts_with("operations endpoints listening"))
                .then(|| line["address"].as_str().map(str::to_string))
                .flatten()
            });
            if let Some(address) = found {
                return address;
            }
            if let Ok(Some(status)) = self.0.child.try_wait() {
                panic!("vcsync exited with {status} before serving its endpoints");
            }
            assert!(Instant::now() < deadline, "no ops address in the log");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// SIGTERM, and the exit status within [`PATIENCE`].
    pub(crate) async fn terminate(&mut self) -> std::process::ExitStatus {
        self.0.terminate();
        self.0.wait_exit().await
    }
}

/// GET `path` on `address`: status code and body.
pub(crate) async fn http_get(address: &str, path: &str) -> (u16, String) {
    let mut stream = tokio::net::TcpStream::connect(address).await.expect("connect");
    stream
        .write_all(format!("GET {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    let (head, body) = response.split_once("\r\n\r\n").expect("HTTP response");
    let code = head
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .expect("status code");
    (code, body.to_string())
}

/// Sum of the samples of `name` whose labels contain every one of `labels` (`key="value"`).
pub(crate) fn sample_sum(metrics: &str, name: &str, labels: &[&str]) -> f64 {
    metrics
        .lines()
        .filter(|line| !line.starts_with('#'))
        .filter_map(|line| {
            let (series, value) = line.rsplit_once(' ')?;
            let (metric, rest) = series.split_once('{').unwrap_or((series, ""));
            (metric == name && labels.iter().all(|l| rest.contains(l))).then(|| value.parse::<f64>().ok())?
        })
        .sum()
}

/// The (host, virtual) requests of the syncer serving its operations endpoint at `address`
/// since it started, by its own count (`vcsync_api_requests_total`, summed over status codes):
/// what it did, whatever else talks to the same API servers.
pub(crate) async fn syncer_requests_at(address: &str) -> (RequestCounters, RequestCounters) {
    let (code, metrics) = http_get(address, "/metrics").await;
    assert_eq!(code, 200, "the syncer's /metrics");
    let counts = vcsync_syncer::metrics::api_requests_in(&metrics);
    let side = |cluster: &str| {
        counts
            .iter()
            .filter(|((c, _, _), _)| c == cluster)
            .map(|((_, verb, resource), n)| (verb.clone(), resource.clone(), *n))
            .collect()
    };
    (side("host"), side("virtual"))
}

#[tokio::test]
async fn ops_endpoints_report_readiness_metrics_and_health_and_sigterm_is_graceful() {
    let env = Env::new().await;
    let dir = tempfile::tempdir().unwrap();
    let mut syncer = Syncer::start(
        &env,
        dir.path(),
        env.host_kubeconfig(),
        "sync:\n  configMaps:\n    all: true\n",
    );
    let address = syncer.ops_address().await;
    let readyz = eventually("/readyz answers 200", || async {
        let (code, body) = http_get(&address, "/readyz").await;
        (code == 200).then_some(body)
    })
    .await;
    assert_eq!(
        readyz,
        "ready: caches synced; controllers started\nrole: leader\n"
    );
    assert_eq!(http_get(&address, "/healthz").await, (200, "ok\n".to_string()));

    let (code, before) = http_get(&address, "/metrics").await;
    assert_eq!(code, 200);
    assert!(before.contains("# TYPE vcsync_reconciles counter"), "{before}");
    assert!(before.contains("vcsync_leader 1\n"), "{before}");
    let reconciles = |text: &str| sample_sum(text, "vcsync_reconciles_total", &[r#"syncer="configmaps""#]);
    let host_creates = |text: &str| {
        sample_sum(
            text,
            "vcsync_api_requests_total",
            &[r#"cluster="host""#, r#"verb="create""#, r#"code="201""#],
        )
    };
    assert!(
        sample_sum(
            &before,
            "vcsync_api_requests_total",
            &[r#"cluster="virtual""#, r#"verb="list""#]
        ) > 0.0
    );

    env.virt_api::<ConfigMap>()
        .create(&PostParams::default(), &config_map("ops-cm", &[("a", "1")]))
        .await
        .unwrap();
    let host_name = env.host_name("ops-cm");
    eventually("the config map on the host", || async {
        get(&env.host_api::<ConfigMap>(), &host_name).await.map(|_| ())
    })
    .await;
    let after = eventually("metrics counting the sync", || async {
        let (_, text) = http_get(&address, "/metrics").await;
        // The gauge follows the host cache, which sees the copy a moment after its create.
        let synced = sample_sum(&text, "vcsync_synced_objects", &[r#"kind="ConfigMap""#]);
        (reconciles(&text) > reconciles(&before)
            && host_creates(&text) > host_creates(&before)
            && synced >= 1.0)
            .then_some(text)
    })
    .await;
    assert!(
        sample_sum(&after, "vcsync_synced_objects", &[r#"kind="ConfigMap""#]) >= 1.0,
        "{after}"
    );
    assert!(
        sample_sum(
            &after,
            "vcsync_reconcile_duration_seconds_count",
            &[r#"syncer="configmaps""#]
        ) >= 1.0
    );
    assert!(after.contains(r#"vcsync_queue_depth{syncer="configmaps"}"#));

    // The reconcile's log line is JSON and carries the syncer and the object key.
    let key = format!("{}/ops-cm", env.virt_ns);
    let created = eventually("the create logged", || async {
        syncer
            .log()
            .into_iter()
            .find(|line| line["message"] == "created host object" && line["span"]["key"] == key.as_str())
    })
    .await;
    assert_eq!(created["span"]["syncer"], "configmaps", "{created}");

    let status = syncer.terminate().await;
    assert!(status.success(), "vcsync exited with {status} on SIGTERM");
    let log = syncer.log();
    let messages: Vec<&str> = log.iter().filter_map(|l| l["message"].as_str()).collect();
    assert!(messages.contains(&"controllers stopped"), "{messages:?}");
    assert!(messages.contains(&"vcsync stopped"), "{messages:?}");
}

#[tokio::test]
async fn readyz_is_503_while_the_host_is_unreachable() {
    let env = Env::new().await;
    let dir = tempfile::tempdir().unwrap();
    // Nothing listens on the discard port.
    let unreachable = dir.path().join("unreachable.kubeconfig");
    std::fs::write(
        &unreachable,
        "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster:\n    server: http://127.0.0.1:9\n\
         contexts:\n- name: c\n  context:\n    cluster: c\n    user: u\nusers:\n- name: u\n  user: {}\n\
         current-context: c\n",
    )
    .unwrap();
    let mut syncer = Syncer::start(&env, dir.path(), &unreachable, "");
    let address = syncer.ops_address().await;
    assert_eq!(http_get(&address, "/healthz").await.0, 200);
    let (_, text) = eventually("a failed host request counted", || async {
        let (code, text) = http_get(&address, "/metrics").await;
        (sample_sum(
            &text,
            "vcsync_api_requests_total",
            &[r#"cluster="host""#, r#"code="error""#],
        ) > 0.0)
            .then_some((code, text))
    })
    .await;
    assert!(text.contains("vcsync_leader 1\n"));
    for _ in 0..3 {
        let (code, body) = http_get(&address, "/readyz").await;
        assert_eq!(code, 503, "{body}");
        assert_eq!(body, "not ready: caches not synced yet\nrole: leader\n");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
