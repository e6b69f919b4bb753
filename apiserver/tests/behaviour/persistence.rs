//! File persistence (`ServerConfig::state_dir`): objects survive a restart with their uids and
//! resourceVersions, the counter and Service addresses carry on, CRDs are served again, watches
//! from before the restart get 410 Gone, a crash loses only the last moments, and a corrupt or
//! locked state is an error at start. Always against the embedded server.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Pod, Secret, Service};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, DynamicObject, ListParams, Patch, PatchParams, PostParams, WatchEvent, WatchParams};
use kube::core::{ApiResource, GroupVersionKind};
use kube::{Client, ResourceExt};
use serde_json::json;
use tokio::time::timeout;
use vcsync_apiserver::{ApiServer, ServerConfig};

use crate::env::{embedded, object};

const WAIT: Duration = Duration::from_secs(10);

/// A directory under the system temp dir, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> TempDir {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        let dir = std::env::temp_dir().join(format!("vcsync-persist-{name}-{}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }

    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

async fn start(dir: &Path) -> vcsync_apiserver::Result<(ApiServer, Client)> {
    let server = ApiServer::start(ServerConfig {
        state_dir: Some(dir.to_path_buf()),
        ..ServerConfig::default()
    })
    .await?;
    let client = Client::try_from(kube::Config::new(server.url().parse().unwrap())).unwrap();
    Ok((server, client))
}

async fn start_error(dir: &Path) -> String {
    match start(dir).await {
        Ok(_) => panic!("the server started"),
        Err(e) => e.to_string(),
    }
}

fn rv_of(object: &impl kube::Resource) -> u64 {
    object
        .meta()
        .resource_version
        .as_deref()
        .unwrap()
        .parse()
        .unwrap()
}

fn widget_crd() -> CustomResourceDefinition {
    object(json!({
        "metadata": {"name": "widgets.example.com"},
        "spec": {"group": "example.com", "scope": "Namespaced",
            "names": {"plural": "widgets", "singular": "widget", "kind": "Widget"},
            "versions": [{"name": "v1", "served": true, "storage": true,
                "schema": {"openAPIV3Schema": {"type": "object",
                    "x-kubernetes-preserve-unknown-fields": true}}}]}
    }))
}

embedded! {
    async fn objects_survive_a_restart_with_uids_and_resource_versions() -> TestResult {
        let dir = TempDir::new("restart");
        let (server, client) = start(dir.path()).await?;
        let namespaces: Api<Namespace> = Api::all(client.clone());
        let kube_system = namespaces.get("kube-system").await?;
        namespaces
            .create(
                &PostParams::default(),
                &object(json!({"metadata": {"name": "app"}})),
            )
            .await?;
        let config_maps: Api<ConfigMap> = Api::namespaced(client.clone(), "app");
        let cm = config_maps
            .create(
                &PostParams::default(),
                &object(json!({"metadata": {"name": "cm"}, "data": {"a": "1"}})),
            )
            .await?;
        let secrets: Api<Secret> = Api::namespaced(client.clone(), "app");
        let secret = secrets
            .create(
                &PostParams::default(),
                &object(json!({"metadata": {"name": "s"}, "stringData": {"k": "v"}})),
            )
            .await?;
        let pods: Api<Pod> = Api::namespaced(client.clone(), "app");
        let pod = pods
            .create(
                &PostParams::default(),
                &object(json!({"metadata": {"name": "p"},
                    "spec": {"containers": [{"name": "c", "image": "nginx"}]}})),
            )
            .await?;
        let services: Api<Service> = Api::namespaced(client.clone(), "app");
        let node_port = services
            .create(
                &PostParams::default(),
                &object(json!({"metadata": {"name": "np"},
                    "spec": {"type": "NodePort", "ports": [{"port": 80}]}})),
            )
            .await?;
        let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
        crds.create(&PostParams::default(), &widget_crd()).await?;
        let widget_type =
            ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk("example.com", "v1", "Widget"), "widgets");
        let widgets: Api<DynamicObject> = Api::namespaced_with(client.clone(), "app", &widget_type);
        let widget = widgets
            .create(
                &PostParams::default(),
                &serde_json::from_value(json!({"apiVersion": "example.com/v1", "kind": "Widget",
                    "metadata": {"name": "w"}, "spec": {"size": 3}}))?,
            )
            .await?;
        let before = config_maps.list(&ListParams::default()).await?;
        let list_rv: u64 = before.metadata.resource_version.as_deref().unwrap().parse()?;
        server.shutdown().await;

        let (server, client) = start(dir.path()).await?;
        let namespaces: Api<Namespace> = Api::all(client.clone());
        let again = namespaces.get("kube-system").await?;
        assert_eq!(again.uid(), kube_system.uid(), "kube-system keeps its uid");
        let config_maps: Api<ConfigMap> = Api::namespaced(client.clone(), "app");
        let cm2 = config_maps.get("cm").await?;
        assert_eq!(
            (cm2.uid(), cm2.resource_version(), cm2.creation_timestamp()),
            (cm.uid(), cm.resource_version(), cm.creation_timestamp())
        );
        assert_eq!(cm2.data, cm.data);
        let secret2 = Api::<Secret>::namespaced(client.clone(), "app").get("s").await?;
        assert_eq!(
            (secret2.uid(), secret2.resource_version()),
            (secret.uid(), secret.resource_version())
        );
        let pod2 = Api::<Pod>::namespaced(client.clone(), "app").get("p").await?;
        assert_eq!(
            (pod2.uid(), pod2.resource_version()),
            (pod.uid(), pod.resource_version())
        );
        let widgets: Api<DynamicObject> = Api::namespaced_with(client.clone(), "app", &widget_type);
        let widget2 = widgets.get("w").await?;
        assert_eq!(widget2.uid(), widget.uid(), "custom resources are served again");
        assert_eq!(widget2.data["spec"]["size"], 3);

        // The counter carries on: lists are not older, writes get higher versions.
        let listed = config_maps.list(&ListParams::default()).await?;
        let list_rv2: u64 = listed.metadata.resource_version.as_deref().unwrap().parse()?;
        assert!(list_rv2 >= list_rv, "{list_rv2} >= {list_rv}");
        let updated = config_maps
            .patch(
                "cm",
                &PatchParams::default(),
                &Patch::Merge(json!({"data": {"a": "2"}})),
            )
            .await?;
        assert!(rv_of(&updated) > list_rv, "{} > {list_rv}", rv_of(&updated));
        assert_eq!(updated.uid(), cm.uid());
        // A write with the pre-restart resourceVersion is a conflict, as it should be.
        let mut stale = cm2.clone();
        stale.data = Some([("a".to_string(), "3".to_string())].into());
        let err = config_maps
            .replace("cm", &PostParams::default(), &stale)
            .await
            .unwrap_err();
        assert_eq!(crate::env::status_code(&err), 409);

        // Service addresses are not handed out twice.
        let services: Api<Service> = Api::namespaced(client.clone(), "app");
        let taken_ip = node_port.spec.as_ref().unwrap().cluster_ip.clone().unwrap();
        let taken_port = node_port.spec.as_ref().unwrap().ports.as_ref().unwrap()[0].node_port;
        let fresh = services
            .create(
                &PostParams::default(),
                &object(json!({"metadata": {"name": "np2"},
                    "spec": {"type": "NodePort", "ports": [{"port": 80}]}})),
            )
            .await?;
        let spec = fresh.spec.unwrap();
        assert_ne!(spec.cluster_ip.unwrap(), taken_ip);
        assert_ne!(spec.ports.unwrap()[0].node_port, taken_port);
        let kubernetes = Api::<Service>::namespaced(client.clone(), "default")
            .get("kubernetes")
            .await?;
        assert_ne!(kubernetes.spec.unwrap().cluster_ip.unwrap(), taken_ip);
        server.shutdown().await;
        Ok(())
    }
}

embedded! {
    async fn watches_from_before_a_restart_get_410_and_from_after_see_changes() -> TestResult {
        let dir = TempDir::new("watch");
        let (server, client) = start(dir.path()).await?;
        let api: Api<ConfigMap> = Api::namespaced(client, "default");
        let first = api
            .create(
                &PostParams::default(),
                &object(json!({"metadata": {"name": "one"}})),
            )
            .await?;
        api.create(
            &PostParams::default(),
            &object(json!({"metadata": {"name": "two"}})),
        )
        .await?;
        server.shutdown().await;

        let (server, client) = start(dir.path()).await?;
        let api: Api<ConfigMap> = Api::namespaced(client, "default");
        let mut events = api
            .watch(
                &WatchParams::default(),
                first.resource_version().as_deref().unwrap(),
            )
            .await?
            .boxed();
        match timeout(WAIT, events.try_next()).await??.expect("an event") {
            WatchEvent::Error(status) => assert_eq!(status.code, 410, "{}", status.message),
            other => panic!("expected a 410 ERROR event, got {other:?}"),
        }
        // From the version a list returns now, the stream is complete.
        let list = api.list(&ListParams::default()).await?;
        let rv = list.metadata.resource_version.unwrap();
        let mut events = api.watch(&WatchParams::default(), &rv).await?.boxed();
        api.create(
            &PostParams::default(),
            &object(json!({"metadata": {"name": "three"}})),
        )
        .await?;
        match timeout(WAIT, events.try_next()).await??.expect("an event") {
            WatchEvent::Added(cm) => assert_eq!(cm.name_any(), "three"),
            other => panic!("expected ADDED three, got {other:?}"),
        }
        server.shutdown().await;
        Ok(())
    }
}

embedded! {
    async fn a_crash_keeps_what_was_written_a_moment_before() -> TestResult {
        let dir = TempDir::new("crash");
        let (server, client) = start(dir.path()).await?;
        let api: Api<ConfigMap> = Api::namespaced(client, "default");
        let early = api
            .create(
                &PostParams::default(),
                &object(json!({"metadata": {"name": "early"}})),
            )
            .await?;
        tokio::time::sleep(Duration::from_millis(1000)).await;
        // What a kill -9 now leaves behind: the state file as it is on disk.
        let crashed = TempDir::new("crash-copy");
        std::fs::copy(dir.path().join("state.json"), crashed.path().join("state.json"))?;
        api.create(
            &PostParams::default(),
            &object(json!({"metadata": {"name": "late"}})),
        )
        .await?;

        let (restarted, client) = start(crashed.path()).await?;
        let api2: Api<ConfigMap> = Api::namespaced(client, "default");
        let kept = api2.get("early").await?;
        assert_eq!(
            (kept.uid(), kept.resource_version()),
            (early.uid(), early.resource_version())
        );
        // Versions the crashed server may have handed out after its last write are never reused.
        let next = api2
            .create(
                &PostParams::default(),
                &object(json!({"metadata": {"name": "after"}})),
            )
            .await?;
        assert!(rv_of(&next) > rv_of(&early) + 1_000_000, "{}", rv_of(&next));
        restarted.shutdown().await;
        server.shutdown().await;
        Ok(())
    }
}

embedded! {
    async fn a_corrupt_or_locked_state_is_an_error_at_start() -> TestResult {
        let dir = TempDir::new("corrupt");
        let (server, _client) = start(dir.path()).await?;
        let locked = start_error(dir.path()).await;
        assert!(locked.contains("another API server"), "{locked}");
        server.shutdown().await;

        let file = dir.path().join("state.json");
        let text = std::fs::read_to_string(&file)?;
        std::fs::write(&file, &text[..text.len() / 2])?;
        let corrupt = start_error(dir.path()).await;
        assert!(
            corrupt.contains("state.json") && corrupt.contains("corrupt"),
            "{corrupt}"
        );
        std::fs::write(&file, "")?;
        assert!(
            start(dir.path()).await.is_err(),
            "an empty file is not an empty server"
        );
        Ok(())
    }
}

/// Creates `n` pods in `default`, 32 at a time; how long it took.
async fn create_pods(client: &Client, n: usize) -> Result<Duration, kube::Error> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let started = Instant::now();
    futures::stream::iter(0..n)
        .map(|i| {
            let pods = pods.clone();
            async move {
                pods.create(
                    &PostParams::default(),
                    &object(json!({"metadata": {"name": format!("pod-{i}"),
                        "labels": {"app": "bench", "vcsync.dev/managed-by": "bench"},
                        "annotations": {"vcsync.dev/object-name": format!("pod-{i}"),
                            "vcsync.dev/object-namespace": "default"}},
                        "spec": {"containers": [{"name": "c", "image": "nginx:1.27",
                            "ports": [{"containerPort": 80}],
                            "env": [{"name": "A", "value": "b"}]}]}})),
                )
                .await
            }
        })
        .buffer_unordered(32)
        .try_collect::<Vec<_>>()
        .await?;
    Ok(started.elapsed())
}

embedded! {
    multi_thread;
    /// The cost of persistence with 10,000 pods: one write of the state, and a start that loads
    /// it. `cargo test --release -p vcsync-apiserver --test behaviour persistence_cost -- --ignored --nocapture`
    #[ignore = "a measurement"]
    async fn persistence_cost_10k_pods() -> TestResult {
        let in_memory = ApiServer::start(ServerConfig::default()).await?;
        let client = Client::try_from(kube::Config::new(in_memory.url().parse().unwrap())).unwrap();
        let without = create_pods(&client, 10_000).await?;
        in_memory.shutdown().await;
        let dir = TempDir::new("cost");
        let (server, client) = start(dir.path()).await?;
        let created = create_pods(&client, 10_000).await?;
        let started = Instant::now();
        server.shutdown().await;
        let shutdown = started.elapsed();
        let size = std::fs::metadata(dir.path().join("state.json"))?.len();
        let started = Instant::now();
        let (server, client) = start(dir.path()).await?;
        let load = started.elapsed();
        let n = Api::<Pod>::namespaced(client, "default")
            .list(&ListParams::default())
            .await?
            .items
            .len();
        assert_eq!(n, 10_000);
        println!(
            "10k pods: created in {created:?} ({without:?} without a state directory); shutdown with the final write {shutdown:?}; \
             state file {:.1} MB; start with load and first write {load:?}",
            size as f64 / 1e6
        );
        server.shutdown().await;
        Ok(())
    }
}
