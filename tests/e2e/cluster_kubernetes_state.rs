//! `vcsync cluster` with the `kubernetes` driver keeps the control plane's state: its datastore
//! claim survives pause and resume and goes with `delete`; `status` says where the state is
//! (or that there is none); `detect-service-cidr` reads the host's service CIDR the way a
//! kube-apiserver gives it away.

use std::path::Path;

use axum::{
    Json, Router,
    extract::{Path as UrlPath, RawQuery},
    http::StatusCode,
    routing::{get, post},
};
use k8s_openapi::api::{
    apps::v1::StatefulSet,
    core::v1::{Namespace, PersistentVolumeClaim},
};
use kube::{
    Api,
    api::{ObjectMeta, PostParams},
};
use serde_json::{Value, json};

use crate::cluster::{create_namespace, host_for_the_driver, status_json, vcsync};

/// Runs `vcsync cluster --kubeconfig KC -q ARGS` on a blocking thread; (exit code, stdout,
/// stderr).
async fn cluster(kubeconfig: &Path, args: &[&str]) -> (i32, String, String) {
    cluster_with(kubeconfig, true, args).await
}

/// [`cluster`], with progress on stderr unless `quiet`.
async fn cluster_with(kubeconfig: &Path, quiet: bool, args: &[&str]) -> (i32, String, String) {
    let kubeconfig = kubeconfig.display().to_string();
    let mut all = vec!["--kubeconfig", kubeconfig.as_str()];
    all.extend(quiet.then_some("-q"));
    all.extend_from_slice(args);
    vcsync(&[], &all).await
}

/// A claim as the StatefulSet controller makes it from the template `data`.
fn claim(name: &str, labels: &[(&str, &str)]) -> PersistentVolumeClaim {
    PersistentVolumeClaim {
        metadata: ObjectMeta {
            name: Some(name.into()),
            labels: Some(
                labels
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            ),
            ..Default::default()
        },
        spec: Some(
            serde_json::from_value(
                json!({"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "5Gi"}}}),
            )
            .unwrap(),
        ),
        ..Default::default()
    }
}

fn message(stdout: &str) -> String {
    status_json(stdout)["message"].as_str().unwrap().to_string()
}

#[tokio::test(flavor = "multi_thread")]
async fn cluster_kubernetes_state_claim_survives_pause_and_goes_with_delete() {
    let (host, dir, kc, client) = host_for_the_driver().await;
    // A namespace the driver does not own (kept on delete), with a claim of someone else.
    let ns = "team-a";
    create_namespace(&client, ns).await;
    let claims = Api::<PersistentVolumeClaim>::namespaced(client.clone(), ns);
    claims
        .create(
            &PostParams::default(),
            &claim("data-other-0", &[("app", "other")]),
        )
        .await
        .unwrap();
    let values = dir.path().join("values.yaml");
    std::fs::write(&values, format!("namespace: {ns}\n")).unwrap();
    let values = values.to_str().unwrap();

    // Create: the StatefulSet keeps k3s's data dir on a claim template. The embedded host
    // names no range when refusing an out-of-range cluster IP, so the pod's init container is
    // left to detect the service CIDR.
    let (code, _, err) = cluster(&kc, &["create", "c2", "-f", values]).await;
    assert_eq!(code, 0, "{err}");
    let set = Api::<StatefulSet>::namespaced(client.clone(), ns)
        .get("vcsync-c2")
        .await
        .unwrap();
    let templates = set.spec.volume_claim_templates.clone().unwrap();
    assert_eq!(templates[0].metadata.name.as_deref(), Some("data"));
    let policy = set.spec.persistent_volume_claim_retention_policy.clone().unwrap();
    assert_eq!(policy.when_scaled.as_deref(), Some("Retain"));
    let pod = set.spec.template.spec.clone().unwrap();
    assert_eq!(pod.init_containers.unwrap()[0].name, "detect-service-cidr");

    // No claim yet; then the one the StatefulSet controller would make.
    let (_, out, _) = cluster(&kc, &["status", "c2", "-o", "json"]).await;
    assert!(
        message(&out).contains("persistence: PersistentVolumeClaim per replica (5Gi)"),
        "{out}"
    );
    let labels = [
        ("app.kubernetes.io/instance", "c2"),
        ("app.kubernetes.io/name", "vcsync"),
        ("vcsync.dev/cluster", "c2"),
    ];
    claims
        .create(&PostParams::default(), &claim("data-vcsync-c2-0", &labels))
        .await
        .unwrap();
    let (_, out, _) = cluster(&kc, &["status", "c2", "-o", "json"]).await;
    assert!(
        message(&out).ends_with("; persistence: 5Gi PersistentVolumeClaim data-vcsync-c2-0 (Pending)"),
        "{out}"
    );

    // Pause and resume keep the claim.
    assert_eq!(cluster(&kc, &["pause", "c2"]).await.0, 0);
    assert!(claims.get_opt("data-vcsync-c2-0").await.unwrap().is_some());
    let (_, out, _) = cluster(&kc, &["status", "c2", "-o", "json"]).await;
    assert!(
        message(&out).starts_with("scaled to zero; persistence: 5Gi"),
        "{out}"
    );
    assert_eq!(cluster(&kc, &["resume", "c2"]).await.0, 0);
    assert!(claims.get_opt("data-vcsync-c2-0").await.unwrap().is_some());

    // Delete takes the cluster's claim, not the other one; the namespace stays.
    let (code, _, err) = cluster(&kc, &["delete", "c2"]).await;
    assert_eq!(code, 0, "{err}");
    assert!(claims.get_opt("data-vcsync-c2-0").await.unwrap().is_none());
    assert!(claims.get_opt("data-other-0").await.unwrap().is_some());
    assert!(
        Api::<Namespace>::all(client.clone())
            .get_opt(ns)
            .await
            .unwrap()
            .is_some()
    );

    // A throwaway cluster: an emptyDir, and status says what that means.
    let throwaway = dir.path().join("throwaway.yaml");
    std::fs::write(
        &throwaway,
        "persistence:\n  enabled: false\ncontrolPlane:\n  serviceCidr: 10.96.0.0/12\n",
    )
    .unwrap();
    let (code, _, err) = cluster(&kc, &["create", "c3", "-f", throwaway.to_str().unwrap()]).await;
    assert_eq!(code, 0, "{err}");
    let set = Api::<StatefulSet>::namespaced(client.clone(), "vcsync-c3")
        .get("vcsync-c3")
        .await
        .unwrap();
    assert_eq!(set.spec.volume_claim_templates, None);
    let (_, out, _) = cluster(&kc, &["status", "c3"]).await;
    assert!(
        out.contains("persistence: none (state is lost on restart)"),
        "{out}"
    );
    assert_eq!(cluster(&kc, &["delete", "c3"]).await.0, 0);

    // The embedded server's answer names no range: detection fails and says what to set.
    let (code, _, err) = cluster(&kc, &["detect-service-cidr", "-n", ns]).await;
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("set controlPlane.serviceCidr"), "{err}");
    host.shutdown().await;
}

fn pod_security(labels: &std::collections::BTreeMap<String, String>) -> Vec<(&str, &str)> {
    labels
        .iter()
        .filter(|(k, _)| k.starts_with("pod-security.kubernetes.io/"))
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect()
}

/// The driver labels the host namespace it creates for Pod Security Admission (and one it
/// created before, left by an interrupted create); a namespace it did not create keeps its
/// labels, and create says how to label it.
#[tokio::test(flavor = "multi_thread")]
async fn cluster_kubernetes_state_host_namespace_pod_security_labels() {
    let (host, dir, kc, client) = host_for_the_driver().await;
    let namespaces = Api::<Namespace>::all(client.clone());
    let labels_of = |ns: &'static str| {
        let namespaces = namespaces.clone();
        async move {
            namespaces
                .get(ns)
                .await
                .unwrap()
                .metadata
                .labels
                .unwrap_or_default()
        }
    };
    let namespace = |name: &str, labels: &[(&str, &str)]| Namespace {
        metadata: ObjectMeta {
            name: Some(name.into()),
            labels: Some(
                labels
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            ),
            ..Default::default()
        },
        ..Default::default()
    };
    let values = |name: &str, text: &str| {
        let path = dir.path().join(format!("{name}.yaml"));
        std::fs::write(
            &path,
            format!("controlPlane:\n  serviceCidr: 10.96.0.0/12\n{text}"),
        )
        .unwrap();
        path.to_str().unwrap().to_string()
    };

    // A namespace the driver creates: enforce baseline (the default), and warn as asked.
    let c4 = values("c4", "podSecurity:\n  warn: restricted\n");
    let (code, _, err) = cluster(&kc, &["create", "c4", "-f", &c4]).await;
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        pod_security(&labels_of("vcsync-c4").await),
        [
            ("pod-security.kubernetes.io/enforce", "baseline"),
            ("pod-security.kubernetes.io/enforce-version", "latest"),
            ("pod-security.kubernetes.io/warn", "restricted"),
            ("pod-security.kubernetes.io/warn-version", "latest"),
        ]
    );

    // The operator's namespace keeps its labels; create says how to label it.
    namespaces
        .create(
            &PostParams::default(),
            &namespace("team-b", &[("pod-security.kubernetes.io/enforce", "privileged")]),
        )
        .await
        .unwrap();
    let c5 = values("c5", "namespace: team-b\n");
    let (code, _, err) = cluster_with(&kc, false, &["create", "c5", "-f", &c5]).await;
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        pod_security(&labels_of("team-b").await),
        [("pod-security.kubernetes.io/enforce", "privileged")]
    );
    assert!(
        err.contains(
            "namespace team-b was not created by vcsync, its Pod Security labels are left as they are; \
             to have the host enforce the same level as vcsync: kubectl label --overwrite namespace team-b \
             pod-security.kubernetes.io/enforce=baseline pod-security.kubernetes.io/enforce-version=latest"
        ),
        "{err}"
    );

    // A namespace the driver made for the cluster before (an interrupted create) is labelled.
    namespaces
        .create(
            &PostParams::default(),
            &namespace("vcsync-c6", &[("vcsync.dev/cluster", "c6")]),
        )
        .await
        .unwrap();
    let c6 = values("c6", "");
    let (code, _, err) = cluster(&kc, &["create", "c6", "-f", &c6]).await;
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        pod_security(&labels_of("vcsync-c6").await),
        [
            ("pod-security.kubernetes.io/enforce", "baseline"),
            ("pod-security.kubernetes.io/enforce-version", "latest"),
        ]
    );
    for name in ["c4", "c5", "c6"] {
        let (code, _, err) = cluster(&kc, &["delete", name]).await;
        assert_eq!(code, 0, "{err}");
    }
    assert!(namespaces.get_opt("team-b").await.unwrap().is_some());
    host.shutdown().await;
}

/// A host that answers like kube-apiserver: ServiceCIDRs listed when `servicecidrs` is Some,
/// else 404 for them; a Service create with an out-of-range cluster IP refused with the range.
async fn fake_host(servicecidrs: Option<Value>) -> (String, tokio::task::JoinHandle<()>) {
    let status = |code: u16, reason: &str, message: String| {
        (
            StatusCode::from_u16(code).unwrap(),
            Json(json!({"kind": "Status", "apiVersion": "v1", "status": "Failure",
                "code": code, "reason": reason, "message": message})),
        )
    };
    let app = Router::new()
        .route(
            "/apis/networking.k8s.io/v1/servicecidrs",
            get(move || async move {
                match servicecidrs {
                    Some(list) => (StatusCode::OK, Json(list)),
                    None => status(404, "NotFound", "the server could not find the requested resource".into()),
                }
            }),
        )
        .route(
            "/api/v1/namespaces/{ns}/services",
            post(move |UrlPath(ns): UrlPath<String>, RawQuery(query): RawQuery, Json(body): Json<Value>| async move {
                assert_eq!(ns, "team-a");
                assert!(query.unwrap_or_default().contains("dryRun=All"), "probes are dry runs");
                let ip = body["spec"]["clusterIP"].as_str().unwrap().to_string();
                status(
                    422,
                    "Invalid",
                    format!(
                        "Service \"vcsync-service-cidr-probe-x\" is invalid: spec.clusterIPs[0]: Invalid value: \
                         \"{ip}\": failed to allocate IP {ip}: the provided IP ({ip}) is not in the valid \
                         range. The range of valid IPs is 10.112.0.0/12 "
                    ),
                )
            }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let server = tokio::spawn(async move {
        axum::serve(listener, app).await.unwrap();
    });
    (url, server)
}

fn kubeconfig_for(dir: &Path, url: &str) -> std::path::PathBuf {
    let path = dir.join(format!("{}.kubeconfig", url.rsplit(':').next().unwrap()));
    std::fs::write(
        &path,
        format!(
            "apiVersion: v1\nkind: Config\nclusters: [{{name: h, cluster: {{server: \"{url}\"}}}}]\n\
             users: [{{name: u, user: {{}}}}]\ncontexts: [{{name: h, context: {{cluster: h, user: u}}}}]\n\
             current-context: h\n"
        ),
    )
    .unwrap();
    path
}

#[tokio::test(flavor = "multi_thread")]
async fn cluster_kubernetes_state_detect_service_cidr_from_servicecidrs_or_the_refused_probe() {
    let dir = tempfile::tempdir().unwrap();
    // Before 1.33 (or without the right to list them): the probe's refusal names the range.
    let (url, server) = fake_host(None).await;
    let kc = kubeconfig_for(dir.path(), &url);
    let out_file = dir.path().join("service-cidr");
    let (code, out, err) = cluster(
        &kc,
        &[
            "detect-service-cidr",
            "--namespace",
            "team-a",
            "--output",
            out_file.to_str().unwrap(),
        ],
    )
    .await;
    assert_eq!(code, 0, "{err}");
    assert_eq!(out, "10.112.0.0/12\n");
    assert_eq!(std::fs::read_to_string(&out_file).unwrap(), "10.112.0.0/12");
    server.abort();

    // 1.33+: the `kubernetes` ServiceCIDR, before any other.
    let list = json!({"kind": "ServiceCIDRList", "apiVersion": "networking.k8s.io/v1", "metadata": {},
    "items": [
        {"metadata": {"name": "extra"}, "spec": {"cidrs": ["10.200.0.0/16"]}},
        {"metadata": {"name": "kubernetes"}, "spec": {"cidrs": ["10.43.0.0/16", "fd00:43::/112"]}},
    ]});
    let (url, server) = fake_host(Some(list)).await;
    let kc = kubeconfig_for(dir.path(), &url);
    let (code, out, err) = cluster(&kc, &["detect-service-cidr", "-n", "team-a"]).await;
    assert_eq!(code, 0, "{err}");
    assert_eq!(out, "10.43.0.0/16\n");
    server.abort();
}
