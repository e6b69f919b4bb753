//! `vcsync cluster`: the `kubernetes` driver against an embedded host server and the `local`
//! driver end to end, through the binary (exit codes included).

use std::{path::Path, process::Command};

use k8s_openapi::{
    api::{
        apps::v1::StatefulSet,
        core::v1::{ConfigMap, Namespace, Pod, Secret, Service, ServiceAccount},
    },
    apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition,
};
use kube::{
    Api, Client,
    api::{DynamicObject, ListParams, ObjectMeta, Patch, PatchParams, PostParams},
    core::{ApiResource, GroupVersionKind},
};
use serde::Deserialize;
use serde_json::json;
use vcsync_apiserver::{ApiServer, ServerConfig};

/// Runs `vcsync cluster ARGS` on a blocking thread; (exit code, stdout, stderr). Hermetic: the
/// `local` driver's state directory and the kubeconfig do not exist unless `envs` set
/// `VCSYNC_DATA_DIR` or `KUBECONFIG` (commands without `-d` ask every driver).
pub(crate) async fn vcsync(envs: &[(&str, &Path)], args: &[&str]) -> (i32, String, String) {
    let envs: Vec<(String, std::path::PathBuf)> = envs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_path_buf()))
        .collect();
    let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    tokio::task::spawn_blocking(move || {
        let out = Command::new(env!("CARGO_BIN_EXE_vcsync"))
            .arg("cluster")
            .args(&args)
            .env("VCSYNC_DATA_DIR", "/nonexistent/vcsync-test-state")
            .env("KUBECONFIG", "/nonexistent/vcsync-test-kubeconfig")
            .env_remove("KUBERNETES_SERVICE_HOST")
            .env_remove("VCSYNC_CLUSTER_DRIVER")
            .envs(envs)
            .output()
            .unwrap();
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    })
    .await
    .unwrap()
}

/// An embedded host for the kubernetes driver: the server, a folder holding its kubeconfig, the
/// kubeconfig's path and a client; RBAC kinds served (see [`serve_rbac`]).
pub(crate) async fn host_for_the_driver() -> (ApiServer, tempfile::TempDir, std::path::PathBuf, Client) {
    let host = ApiServer::start(ServerConfig {
        name: "host".into(),
        ..Default::default()
    })
    .await
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let kc = dir.path().join("host.kubeconfig");
    std::fs::write(&kc, host.kubeconfig()).unwrap();
    let client = Client::try_from(kube::Config::new(host.url().parse().unwrap())).unwrap();
    serve_rbac(&client).await;
    (host, dir, kc, client)
}

/// The embedded server serves no RBAC kinds: serve them as CRDs of the same group.
pub(crate) async fn serve_rbac(client: &Client) {
    for (kind, plural, scope) in [
        ("Role", "roles", "Namespaced"),
        ("RoleBinding", "rolebindings", "Namespaced"),
        ("ClusterRole", "clusterroles", "Cluster"),
        ("ClusterRoleBinding", "clusterrolebindings", "Cluster"),
    ] {
        let crd: CustomResourceDefinition = serde_json::from_value(json!({
            "metadata": {"name": format!("{plural}.rbac.authorization.k8s.io")},
            "spec": {
                "group": "rbac.authorization.k8s.io",
                "names": {"kind": kind, "plural": plural, "singular": kind.to_lowercase()},
                "scope": scope,
                "versions": [{"name": "v1", "served": true, "storage": true,
                    "schema": {"openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}}}],
            },
        }))
        .unwrap();
        Api::<CustomResourceDefinition>::all(client.clone())
            .create(&PostParams::default(), &crd)
            .await
            .unwrap();
    }
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
}

fn rbac(kind: &str, plural: &str) -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("rbac.authorization.k8s.io", "v1", kind),
        plural,
    )
}

fn labelled(name: &str, instance: &str) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.into()),
        labels: Some([("vcsync.dev/managed-by".to_string(), instance.to_string())].into()),
        ..Default::default()
    }
}

/// Creates namespace `name` on the host: one the driver did not create (kept on delete).
pub(crate) async fn create_namespace(client: &Client, name: &str) {
    let namespace = Namespace {
        metadata: ObjectMeta {
            name: Some(name.into()),
            ..Default::default()
        },
        ..Default::default()
    };
    Api::<Namespace>::all(client.clone())
        .create(&PostParams::default(), &namespace)
        .await
        .unwrap();
}

/// Publishes `kubeconfig` as cluster `cluster`'s control plane would (no control plane runs on
/// an embedded host): the Secret `vcsync-<cluster>-kubeconfig` in `namespace`.
pub(crate) async fn publish_kubeconfig(client: &Client, namespace: &str, cluster: &str, kubeconfig: String) {
    let secret = Secret {
        metadata: ObjectMeta {
            name: Some(format!("vcsync-{cluster}-kubeconfig")),
            ..Default::default()
        },
        string_data: Some([("config".to_string(), kubeconfig)].into()),
        ..Default::default()
    };
    Api::<Secret>::namespaced(client.clone(), namespace)
        .create(&PostParams::default(), &secret)
        .await
        .unwrap();
}

pub(crate) fn status_json(stdout: &str) -> serde_json::Value {
    serde_json::from_str(stdout).unwrap_or_else(|err| panic!("{err}: {stdout}"))
}

#[tokio::test(flavor = "multi_thread")]
async fn cluster_kubernetes_driver_objects_status_pause_resume_delete_and_exit_codes() {
    let (host, dir, kc, client) = host_for_the_driver().await;
    let kc_s = kc.display().to_string();
    let k = |args: &[&str]| {
        let mut all = vec!["--kubeconfig", kc_s.as_str(), "-q"];
        all.extend_from_slice(args);
        all.into_iter().map(str::to_string).collect::<Vec<_>>()
    };
    macro_rules! run {
        ($($arg:expr),*) => {{
            let args = k(&[$($arg),*]);
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            vcsync(&[], &args).await
        }};
    }

    // Errors before anything exists.
    assert_eq!(run!("status", "c1").0, 10);
    assert_eq!(run!("exists", "c1").0, 10);
    assert_eq!(run!("delete", "c1").0, 10);
    assert_eq!(run!("delete", "c1", "--ignore-not-found").0, 0);
    assert_eq!(run!("-d", "nope", "list").0, 16);
    let (code, _, err) = vcsync(&[], &["-d", "kubernetes", "--kubeconfig", "/nonexistent", "list"]).await;
    assert_eq!(code, 15, "{err}");
    let (code, out, err) = vcsync(&[], &["--kubeconfig", "/nonexistent", "list"]).await;
    assert_eq!(
        code, 0,
        "without -d a driver lacking its configuration is skipped: {err}"
    );
    assert!(err.contains("note: driver kubernetes skipped"), "{err}");
    assert_eq!(out.lines().count(), 1, "only the header: {out}");

    // Create: every object is there.
    let (code, _, err) = run!("create", "c1");
    assert_eq!(code, 0, "{err}");
    let ns = "vcsync-c1";
    Api::<Namespace>::all(client.clone()).get(ns).await.unwrap();
    Api::<ServiceAccount>::namespaced(client.clone(), ns)
        .get("vcsync-c1")
        .await
        .unwrap();
    Api::<Service>::namespaced(client.clone(), ns)
        .get("vcsync-c1")
        .await
        .unwrap();
    let secret = Api::<Secret>::namespaced(client.clone(), ns)
        .get("vcsync-c1-config")
        .await
        .unwrap();
    let config = String::from_utf8(secret.data.unwrap()["vcsync.yaml"].0.clone()).unwrap();
    assert!(
        config.contains("instance: c1") && config.contains("hostNamespace: vcsync-c1"),
        "{config}"
    );
    // The owner of the tenant's host copies (setOwner, on by default).
    assert!(config.contains("hostOwner: vcsync-c1-owner"), "{config}");
    Api::<ConfigMap>::namespaced(client.clone(), ns)
        .get("vcsync-c1-owner")
        .await
        .unwrap();
    let sts = Api::<StatefulSet>::namespaced(client.clone(), ns);
    let set = sts.get("vcsync-c1").await.unwrap();
    let containers: Vec<String> = set
        .spec
        .template
        .spec
        .unwrap()
        .containers
        .into_iter()
        .map(|c| c.name)
        .collect();
    assert_eq!(containers, ["control-plane", "vcsync"]);
    for (kind, plural) in [("Role", "roles"), ("RoleBinding", "rolebindings")] {
        let api = Api::<DynamicObject>::namespaced_with(client.clone(), ns, &rbac(kind, plural));
        api.get("vcsync-c1").await.unwrap();
        api.get("vcsync-c1-control-plane").await.unwrap();
    }
    for (kind, plural) in [
        ("ClusterRole", "clusterroles"),
        ("ClusterRoleBinding", "clusterrolebindings"),
    ] {
        Api::<DynamicObject>::all_with(client.clone(), &rbac(kind, plural))
            .get("vcsync-c1")
            .await
            .unwrap();
    }
    assert_eq!(run!("exists", "c1").0, 0);

    // Idempotent create; different values: config mismatch; --fail-if-exists: already running.
    assert_eq!(run!("create", "c1").0, 0);
    assert_eq!(run!("create", "c1", "--fail-if-exists").0, 11);
    let values = dir.path().join("values.yaml");
    std::fs::write(&values, "replicas: 2\n").unwrap();
    let (code, _, err) = run!("create", "c1", "--values", values.to_str().unwrap());
    assert_eq!(code, 13, "{err}");
    assert!(err.contains("replicas"), "{err}");

    // Status derived from the StatefulSet: pending until its replica is ready.
    let (code, out, _) = run!("status", "c1", "-o", "json");
    assert_eq!(code, 0);
    let status = status_json(&out);
    assert_eq!(status["phase"], "Pending");
    assert_eq!(status["ready"], false);
    assert_eq!(
        (status["nodesTotal"].as_u64(), status["nodesReady"].as_u64()),
        (Some(1), Some(0))
    );
    let (code, _, err) = run!("status", "c1", "--wait", "--timeout", "1s");
    assert_eq!(code, 14, "{err}");
    sts.patch_status(
        "vcsync-c1",
        &PatchParams::default(),
        &Patch::Merge(json!({"status": {"replicas": 1, "readyReplicas": 1}})),
    )
    .await
    .unwrap();
    // Objects the syncer would have synced.
    Api::<Pod>::namespaced(client.clone(), ns)
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": labelled("web-x-default", "c1"),
                "spec": {"containers": [{"name": "c", "image": "nginx"}]}}))
            .unwrap(),
        )
        .await
        .unwrap();
    Api::<ConfigMap>::namespaced(client.clone(), ns)
        .create(
            &PostParams::default(),
            &ConfigMap {
                metadata: labelled("cfg-x-default", "c1"),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let (code, out, _) = run!("status", "c1", "--wait", "--timeout", "10s", "-o", "yaml");
    assert_eq!(code, 0);
    let status: serde_json::Value = serde_yaml_ng::from_str(&out).unwrap();
    assert_eq!(status["phase"], "Running");
    assert_eq!(status["ready"], true);
    assert_eq!(status["controlPlaneReady"], true);
    assert_eq!(status["syncedObjects"]["pods"], 1);
    assert_eq!(status["syncedObjects"]["configMaps"], 1);
    let (_, out, _) = run!("list");
    assert!(out.lines().nth(1).unwrap().starts_with("c1 "), "{out}");

    // connect: not ready until the control plane published its kubeconfig.
    assert_eq!(run!("connect", "c1").0, 14);
    publish_kubeconfig(&client, ns, "c1", host.kubeconfig()).await;
    let (code, out, err) = run!("connect", "c1", "--server", "https://127.0.0.1:7443");
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("server: https://127.0.0.1:7443"), "{out}");

    // Pause: scaled to zero, synced pods gone from the host; idempotent.
    assert_eq!(run!("pause", "c1").0, 0);
    assert_eq!(sts.get("vcsync-c1").await.unwrap().spec.replicas, Some(0));
    let pods = Api::<Pod>::namespaced(client.clone(), ns)
        .list(&ListParams::default())
        .await
        .unwrap();
    assert!(pods.items.is_empty(), "{:?}", pods.items);
    assert_eq!(run!("pause", "c1").0, 0);
    let (_, out, _) = run!("status", "c1", "-o", "json");
    assert_eq!(status_json(&out)["phase"], "Paused");
    assert_eq!(run!("connect", "c1").0, 12);
    std::fs::write(&values, "replicas: 3\n").unwrap();
    assert_eq!(run!("resume", "c1", "--values", values.to_str().unwrap()).0, 13);

    // Resume: scaled back; idempotent.
    assert_eq!(run!("resume", "c1").0, 0);
    assert_eq!(sts.get("vcsync-c1").await.unwrap().spec.replicas, Some(1));
    assert_eq!(run!("resume", "c1").0, 0);

    // Delete: nothing left behind.
    let (code, _, err) = run!("delete", "c1");
    assert_eq!(code, 0, "{err}");
    assert!(
        Api::<Namespace>::all(client.clone())
            .get_opt(ns)
            .await
            .unwrap()
            .is_none()
    );
    for (kind, plural) in [
        ("ClusterRole", "clusterroles"),
        ("ClusterRoleBinding", "clusterrolebindings"),
    ] {
        let left = Api::<DynamicObject>::all_with(client.clone(), &rbac(kind, plural))
            .list(&ListParams::default())
            .await
            .unwrap();
        assert!(left.items.is_empty(), "{kind}: {:?}", left.items);
    }
    for (kind, plural) in [("Role", "roles"), ("RoleBinding", "rolebindings")] {
        let left = Api::<DynamicObject>::all_with(client.clone(), &rbac(kind, plural))
            .list(&ListParams::default())
            .await
            .unwrap();
        assert!(left.items.is_empty(), "{kind}: {:?}", left.items);
    }
    let cms = Api::<ConfigMap>::all(client.clone())
        .list(&ListParams::default().labels("vcsync.dev/managed-by=c1"))
        .await
        .unwrap();
    assert!(cms.items.is_empty());
    let sets = Api::<StatefulSet>::all(client.clone())
        .list(&ListParams::default())
        .await
        .unwrap();
    assert!(sets.items.is_empty());
    assert_eq!(run!("exists", "c1").0, 10);
    assert_eq!(run!("delete", "c1").0, 10);
    host.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn cluster_local_driver_create_connect_kubectl_pause_resume_delete() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let env = [("VCSYNC_DATA_DIR", data.as_path())];
    fn run<'a>(args: &[&'a str]) -> Vec<&'a str> {
        let mut all = vec!["-d", "local", "-q"];
        all.extend_from_slice(args);
        all
    }
    let (code, _, err) = vcsync(&env, &run(&["create", "demo", "--wait", "--timeout", "60s"])).await;
    assert_eq!(code, 0, "{err}");
    assert_eq!(vcsync(&env, &run(&["create", "demo"])).await.0, 0, "idempotent");
    assert_eq!(vcsync(&env, &run(&["exists", "demo"])).await.0, 0);
    let (code, out, _) = vcsync(&env, &run(&["status", "demo", "-o", "json"])).await;
    assert_eq!(code, 0);
    let status = status_json(&out);
    assert_eq!(
        (status["phase"].as_str(), status["ready"].as_bool()),
        (Some("Running"), Some(true))
    );
    assert_eq!(status["nodesTotal"], 3);

    // connect, then kubectl works against the virtual cluster, and the syncer syncs.
    let kc = dir.path().join("demo.kubeconfig");
    let kc_s = kc.display().to_string();
    let (code, _, err) = vcsync(&env, &["-d", "local", "connect", "demo", "-o", &kc_s]).await;
    assert_eq!(code, 0, "{err}");
    let kubectl = crate::kubectl::kubectl();
    let kubectl_run = |args: Vec<String>| {
        let kubectl = kubectl.clone();
        let kc = kc.clone();
        tokio::task::spawn_blocking(move || {
            Command::new(kubectl)
                .arg("--kubeconfig")
                .arg(kc)
                .args(args)
                .output()
                .unwrap()
        })
    };
    let out = kubectl_run(vec![
        "create".into(),
        "configmap".into(),
        "app".into(),
        "--from-literal=a=b".into(),
    ])
    .await
    .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let out = kubectl_run(vec![
        "get".into(),
        "configmap".into(),
        "app".into(),
        "-o".into(),
        "name".into(),
    ])
    .await
    .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "configmap/app");

    // Pause stops the syncer; connect refuses; resume starts it again.
    assert_eq!(vcsync(&env, &run(&["pause", "demo"])).await.0, 0);
    assert_eq!(vcsync(&env, &run(&["pause", "demo"])).await.0, 0, "idempotent");
    let (_, out, _) = vcsync(&env, &run(&["status", "demo", "-o", "json"])).await;
    assert_eq!(status_json(&out)["phase"], "Paused");
    assert_eq!(vcsync(&env, &run(&["connect", "demo"])).await.0, 12);
    let values = dir.path().join("values.yaml");
    std::fs::write(&values, "nodes: 1\n").unwrap();
    let values_s = values.to_str().unwrap();
    assert_eq!(
        vcsync(&env, &run(&["resume", "demo", "--values", values_s]))
            .await
            .0,
        13
    );
    assert_eq!(
        vcsync(&env, &run(&["create", "demo", "--values", values_s]))
            .await
            .0,
        13
    );
    let (code, _, err) = vcsync(&env, &run(&["resume", "demo", "--wait", "--timeout", "30s"])).await;
    assert_eq!(code, 0, "{err}");
    let (_, out, _) = vcsync(&env, &run(&["list"])).await;
    assert!(out.contains("demo") && out.contains("Running"), "{out}");
    let out = kubectl_run(vec!["get".into(), "namespaces".into()])
        .await
        .unwrap();
    assert!(out.status.success());

    // Delete stops everything and removes the state.
    let pids: Vec<u32> = ["servers.pid", "syncer.pid"]
        .iter()
        .map(|f| {
            std::fs::read_to_string(data.join("local/demo").join(f))
                .unwrap()
                .trim()
                .parse()
                .unwrap()
        })
        .collect();
    assert_eq!(vcsync(&env, &run(&["delete", "demo"])).await.0, 0);
    assert!(!data.join("local/demo").exists());
    for pid in pids {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        assert!(
            stat.is_empty() || stat.contains(") Z"),
            "process {pid} still runs: {stat}"
        );
    }
    assert_eq!(vcsync(&env, &run(&["delete", "demo"])).await.0, 10);
    assert_eq!(vcsync(&env, &run(&["status", "demo"])).await.0, 10);
}

/// deploy/manifests/my-vcluster.yaml is `vcsync cluster render` of the example values (what the
/// `kubernetes` driver applies), and every document parses into its k8s-openapi type.
#[test]
fn cluster_render_matches_deploy_manifests_and_parses_into_typed_objects() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = Command::new(env!("CARGO_BIN_EXE_vcsync"))
        .args(["cluster", "render", "my-vcluster", "-f"])
        .arg(root.join("deploy/examples/values.yaml"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let rendered = String::from_utf8(out.stdout).unwrap();
    let committed = std::fs::read_to_string(root.join("deploy/manifests/my-vcluster.yaml")).unwrap();
    assert_eq!(
        rendered, committed,
        "regenerate: vcsync cluster render my-vcluster -f deploy/examples/values.yaml > deploy/manifests/my-vcluster.yaml"
    );
    let mut kinds = Vec::new();
    for doc in serde_yaml_ng::Deserializer::from_str(&committed) {
        let value = serde_json::Value::deserialize(doc).unwrap();
        let kind = value["kind"].as_str().unwrap().to_string();
        macro_rules! typed {
            ($($name:literal => $ty:ty),*) => {
                match kind.as_str() {
                    $($name => { serde_json::from_value::<$ty>(value.clone()).unwrap_or_else(|e| panic!("{kind}: {e}")); })*
                    other => panic!("unexpected kind {other}"),
                }
            };
        }
        use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, Role, RoleBinding};
        typed!("Namespace" => Namespace, "ServiceAccount" => ServiceAccount, "Role" => Role,
            "RoleBinding" => RoleBinding, "ClusterRole" => ClusterRole,
            "ClusterRoleBinding" => ClusterRoleBinding, "Secret" => Secret, "Service" => Service,
            "StatefulSet" => StatefulSet, "ConfigMap" => ConfigMap);
        kinds.push(kind);
    }
    for kind in [
        "Namespace",
        "ServiceAccount",
        "Role",
        "RoleBinding",
        "Secret",
        "ConfigMap",
        "Service",
        "StatefulSet",
    ] {
        assert!(kinds.iter().any(|k| k == kind), "{kind} missing: {kinds:?}");
    }
}
