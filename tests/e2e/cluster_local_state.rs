//! The `local` driver keeps its clusters across a stop of the API servers: `pause` stops the
//! syncer and the servers, `resume` starts them from their saved state, and every virtual object
//! and every host copy is still there with the same UID (nothing deleted and recreated). A
//! kill -9 of the servers loses at most the last moments before it.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use k8s_openapi::{
    NamespaceResourceScope,
    api::core::v1::{ConfigMap, Namespace, PersistentVolumeClaim, Pod, Secret},
};
use kube::{
    Api, Client, Resource, ResourceExt,
    api::{ListParams, PostParams},
};
use serde::de::DeserializeOwned;
use serde_json::json;
use vcsync_translators::{MANAGED_BY_LABEL, OBJECT_NAME_ANNOTATION, OBJECT_NAMESPACE_ANNOTATION};

use crate::{cluster::vcsync, env::eventually};

const NAME: &str = "keep";
const HOST_NAMESPACE: &str = "vcsync-keep";

/// Runs `vcsync cluster -d local -q ARGS` with the data directory `data`; (exit code, stderr).
async fn cluster(data: &Path, args: &[&str]) -> (i32, String) {
    let mut all = vec!["-d", "local", "-q"];
    all.extend_from_slice(args);
    let (code, _, stderr) = vcsync(&[("VCSYNC_DATA_DIR", data)], &all).await;
    (code, stderr)
}

pub(crate) async fn client(kubeconfig: PathBuf) -> Client {
    let kubeconfig = kube::config::Kubeconfig::read_from(kubeconfig).unwrap();
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
        .await
        .unwrap();
    Client::try_from(config).unwrap()
}

/// Clients of the virtual and the host server, from the kubeconfigs the driver wrote.
async fn clients(dir: &Path) -> (Client, Client) {
    (
        client(dir.join("virtual.kubeconfig")).await,
        client(dir.join("host.kubeconfig")).await,
    )
}

fn object<K: DeserializeOwned>(value: serde_json::Value) -> K {
    serde_json::from_value(value).unwrap()
}

/// The host copy of virtual object `default/name`, found by its ownership marks.
async fn host_copy<K>(host: &Client, name: &str) -> Option<K>
where
    K: Resource<Scope = NamespaceResourceScope, DynamicType = ()>
        + Clone
        + DeserializeOwned
        + std::fmt::Debug,
{
    let params = ListParams::default().labels(&format!("{MANAGED_BY_LABEL}={NAME}"));
    let list = Api::<K>::namespaced(host.clone(), HOST_NAMESPACE)
        .list(&params)
        .await
        .ok()?;
    list.items.into_iter().find(|o| {
        let annotations = o.annotations();
        annotations.get(OBJECT_NAME_ANNOTATION).map(String::as_str) == Some(name)
            && annotations.get(OBJECT_NAMESPACE_ANNOTATION).map(String::as_str) == Some("default")
    })
}

/// UIDs of the virtual objects and of their host copies, by "kind/name": waits until every host
/// copy exists and every pod runs.
async fn uids(virt: &Client, host: &Client, names: &[(&str, &str)]) -> BTreeMap<String, (String, String)> {
    let mut all = BTreeMap::new();
    for (kind, name) in names {
        let what = format!("{kind}/{name} synced to the host");
        let (v, h) = eventually(&what, || async {
            macro_rules! pair {
                ($k:ty) => {{
                    let v = Api::<$k>::namespaced(virt.clone(), "default")
                        .get_opt(name)
                        .await
                        .ok()??;
                    let h = host_copy::<$k>(host, name).await?;
                    (v.uid()?, h.uid()?)
                }};
            }
            Some(match *kind {
                "configmap" => pair!(ConfigMap),
                "secret" => pair!(Secret),
                "pvc" => pair!(PersistentVolumeClaim),
                "pod" => {
                    let pod = Api::<Pod>::namespaced(virt.clone(), "default")
                        .get_opt(name)
                        .await
                        .ok()??;
                    let phase = pod.status.as_ref()?.phase.as_deref()?;
                    (phase == "Running").then_some(())?;
                    pair!(Pod)
                }
                other => panic!("unknown kind {other}"),
            })
        })
        .await;
        all.insert(format!("{kind}/{name}"), (v, h));
    }
    all
}

/// Creates a ConfigMap, a Secret, a PVC and a Pod using the three, all named after `prefix`.
async fn create_app(virt: &Client, prefix: &str) -> Vec<(&'static str, String)> {
    let post = PostParams::default();
    let (cm, secret, pvc, pod) = (
        format!("{prefix}-config"),
        format!("{prefix}-secret"),
        format!("{prefix}-data"),
        prefix.to_string(),
    );
    Api::<ConfigMap>::namespaced(virt.clone(), "default")
        .create(
            &post,
            &object(json!({"metadata": {"name": cm}, "data": {"greeting": "hello"}})),
        )
        .await
        .unwrap();
    Api::<Secret>::namespaced(virt.clone(), "default")
        .create(
            &post,
            &object(json!({"metadata": {"name": secret}, "stringData": {"token": "t"}})),
        )
        .await
        .unwrap();
    Api::<PersistentVolumeClaim>::namespaced(virt.clone(), "default")
        .create(
            &post,
            &object(json!({"metadata": {"name": pvc},
                "spec": {"accessModes": ["ReadWriteOnce"],
                    "resources": {"requests": {"storage": "1Gi"}}}})),
        )
        .await
        .unwrap();
    Api::<Pod>::namespaced(virt.clone(), "default")
        .create(
            &post,
            &object(json!({"metadata": {"name": pod},
                "spec": {"containers": [{"name": "web", "image": "nginx",
                    "volumeMounts": [{"name": "c", "mountPath": "/c"}, {"name": "s", "mountPath": "/s"},
                        {"name": "d", "mountPath": "/d"}]}],
                    "volumes": [{"name": "c", "configMap": {"name": cm}},
                        {"name": "s", "secret": {"secretName": secret}},
                        {"name": "d", "persistentVolumeClaim": {"claimName": pvc}}]}})),
        )
        .await
        .unwrap();
    vec![("configmap", cm), ("secret", secret), ("pvc", pvc), ("pod", pod)]
}

pub(crate) async fn kube_system_uid(virt: &Client) -> String {
    Api::<Namespace>::all(virt.clone())
        .get("kube-system")
        .await
        .unwrap()
        .uid()
        .unwrap()
}

fn pid(dir: &Path, file: &str) -> u32 {
    std::fs::read_to_string(dir.join(file))
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        !stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z'))
    })
}

async fn status_phase(data: &Path) -> String {
    let (_, out, _) = vcsync(
        &[("VCSYNC_DATA_DIR", data)],
        &["-d", "local", "status", NAME, "-o", "json"],
    )
    .await;
    let status: serde_json::Value = serde_json::from_str(&out).unwrap_or_default();
    status["phase"].as_str().unwrap_or_default().to_string()
}

/// Checks that every object of `before` is there with the same UIDs, now and a few seconds later
/// (a restarted syncer must not replace host copies).
async fn assert_same(virt: &Client, host: &Client, before: &BTreeMap<String, (String, String)>) {
    let keys: Vec<(String, String)> = before
        .keys()
        .map(|k| {
            let (kind, name) = k.split_once('/').unwrap();
            (kind.to_string(), name.to_string())
        })
        .collect();
    let refs: Vec<(&str, &str)> = keys.iter().map(|(k, n)| (k.as_str(), n.as_str())).collect();
    for round in 0..2 {
        let after = uids(virt, host, &refs).await;
        for (key, (v, h)) in before {
            let (v2, h2) = &after[key];
            assert_eq!(v, v2, "{key}: the virtual object was replaced (round {round})");
            assert_eq!(h, h2, "{key}: the host copy was replaced (round {round})");
        }
        tokio::time::sleep(Duration::from_secs(3)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn cluster_local_state_survives_pause_resume_and_kill() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let dir = data.join("local").join(NAME);
    let (code, err) = cluster(&data, &["create", NAME, "--wait", "--timeout", "60s"]).await;
    assert_eq!(code, 0, "{err}");
    let (virt, host) = clients(&dir).await;
    let system = kube_system_uid(&virt).await;
    let app = create_app(&virt, "web").await;
    let refs: Vec<(&str, &str)> = app.iter().map(|(k, n)| (*k, n.as_str())).collect();
    let before = uids(&virt, &host, &refs).await;

    // Pause stops the syncer and the servers; resume brings the same cluster back, on the same
    // address (a kubeconfig handed out before stays valid).
    let kubeconfig = std::fs::read_to_string(dir.join("virtual.kubeconfig")).unwrap();
    let servers = pid(&dir, "servers.pid");
    let (code, err) = cluster(&data, &["pause", NAME]).await;
    assert_eq!(code, 0, "{err}");
    assert!(!alive(servers), "pause stops the API servers");
    assert_eq!(status_phase(&data).await, "Paused");
    assert_eq!(cluster(&data, &["pause", NAME]).await.0, 0, "idempotent");
    let (code, err) = cluster(&data, &["resume", NAME, "--wait", "--timeout", "60s"]).await;
    assert_eq!(code, 0, "{err}");
    assert_eq!(status_phase(&data).await, "Running");
    assert_eq!(
        std::fs::read_to_string(dir.join("virtual.kubeconfig")).unwrap(),
        kubeconfig
    );
    let (virt, host) = clients(&dir).await;
    assert_eq!(kube_system_uid(&virt).await, system, "the same virtual cluster");
    assert_same(&virt, &host, &before).await;

    // kill -9 of the servers: what was written a few seconds before survives.
    let more = create_app(&virt, "api").await;
    let refs: Vec<(&str, &str)> = more.iter().map(|(k, n)| (*k, n.as_str())).collect();
    let mut before_kill = before.clone();
    before_kill.extend(uids(&virt, &host, &refs).await);
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let servers = pid(&dir, "servers.pid");
    assert!(
        Command::new("kill")
            .args(["-KILL", &servers.to_string()])
            .status()
            .unwrap()
            .success()
    );
    eventually("the servers to die", || async { (!alive(servers)).then_some(()) }).await;
    assert_eq!(status_phase(&data).await, "Failed");
    let (code, err) = cluster(&data, &["resume", NAME, "--wait", "--timeout", "60s"]).await;
    assert_eq!(code, 0, "{err}");
    let (virt, host) = clients(&dir).await;
    assert_eq!(kube_system_uid(&virt).await, system, "the same virtual cluster");
    assert_same(&virt, &host, &before_kill).await;

    assert_eq!(cluster(&data, &["delete", NAME]).await.0, 0);
    assert!(!dir.exists());
}
