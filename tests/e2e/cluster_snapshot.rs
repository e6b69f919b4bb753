//! `vcsync cluster snapshot` and `restore` with the `local` driver: a round trip through a lost
//! datastore. The virtual cluster's objects are saved, its datastore is replaced by an empty one
//! (a new cluster, as after losing etcd), and the restore brings every object back while the
//! syncer re-links the host copies made for them: 0 differences, 0 host pods recreated.

use std::{collections::BTreeMap, path::Path};

use k8s_openapi::{
    api::{
        apps::v1::{Deployment, ReplicaSet},
        core::v1::{ConfigMap, Namespace, Pod, Secret, Service},
    },
    apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition,
};
use kube::{
    Api, Client, ResourceExt,
    api::{DynamicObject, ListParams, PostParams},
    core::{ApiResource, GroupVersionKind},
};
use serde::de::DeserializeOwned;
use serde_json::json;
use vcsync::cluster::snapshot::{archive, prepare};
use vcsync_translators::{CLUSTER_UID_ANNOTATION, MANAGED_BY_LABEL, OBJECT_NAME_ANNOTATION};

use crate::{
    cluster::vcsync,
    cluster_local_state::{client, kube_system_uid},
    env::eventually,
};

const NAME: &str = "snap";
const HOST_NAMESPACE: &str = "vcsync-snap";

/// `vcsync cluster -d local -q ARGS` with the data directory `data`: (exit code, stdout, stderr).
async fn cluster(data: &Path, args: &[&str]) -> (i32, String, String) {
    let mut all = vec!["-d", "local", "-q"];
    all.extend_from_slice(args);
    vcsync(&[("VCSYNC_DATA_DIR", data)], &all).await
}

fn object<K: DeserializeOwned>(value: serde_json::Value) -> K {
    serde_json::from_value(value).unwrap()
}

fn widgets() -> ApiResource {
    ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk("example.com", "v1", "Widget"), "widgets")
}

/// The tenant's application: a namespace, a ConfigMap and a Secret a pod mounts, a Service, a
/// Deployment with the ReplicaSet and pod it owns (written by hand: the embedded virtual server
/// runs no controllers), and a custom resource with its definition.
async fn create_app(virt: &Client) {
    let post = PostParams::default();
    Api::<Namespace>::all(virt.clone())
        .create(&post, &object(json!({"metadata": {"name": "shop"}})))
        .await
        .unwrap();
    let shop = |client: &Client| (client.clone(), "shop");
    let (c, ns) = shop(virt);
    Api::<ConfigMap>::namespaced(c.clone(), ns)
        .create(
            &post,
            &object(json!({"metadata": {"name": "conf"}, "data": {"greeting": "hello"}})),
        )
        .await
        .unwrap();
    Api::<Secret>::namespaced(c.clone(), ns)
        .create(
            &post,
            &object(json!({"metadata": {"name": "pw"}, "stringData": {"token": "t"}})),
        )
        .await
        .unwrap();
    Api::<Service>::namespaced(c.clone(), ns)
        .create(
            &post,
            &object(json!({"metadata": {"name": "web"},
                "spec": {"selector": {"app": "web"}, "ports": [{"port": 80}]}})),
        )
        .await
        .unwrap();
    let pod_spec = json!({"containers": [{"name": "web", "image": "nginx",
        "volumeMounts": [{"name": "c", "mountPath": "/c"}, {"name": "s", "mountPath": "/s"}]}],
        "volumes": [{"name": "c", "configMap": {"name": "conf"}}, {"name": "s", "secret": {"secretName": "pw"}}]});
    Api::<Pod>::namespaced(c.clone(), ns)
        .create(
            &post,
            &object(json!({"metadata": {"name": "solo", "labels": {"app": "web"}}, "spec": pod_spec})),
        )
        .await
        .unwrap();
    let deployment: Deployment = Api::namespaced(c.clone(), ns)
        .create(
            &post,
            &object(json!({"metadata": {"name": "web"}, "spec": {"replicas": 1,
                "selector": {"matchLabels": {"app": "web"}},
                "template": {"metadata": {"labels": {"app": "web"}}, "spec": pod_spec}}})),
        )
        .await
        .unwrap();
    let owner = |kind: &str, name: &str, uid: String| json!([{"apiVersion": "apps/v1", "kind": kind, "name": name, "uid": uid, "controller": true}]);
    let replicaset: ReplicaSet = Api::namespaced(c.clone(), ns)
        .create(
            &post,
            &object(json!({"metadata": {"name": "web-1", "ownerReferences": owner("Deployment", "web", deployment.uid().unwrap())},
                "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "web"}},
                "template": {"metadata": {"labels": {"app": "web"}}, "spec": pod_spec}}})),
        )
        .await
        .unwrap();
    Api::<Pod>::namespaced(c.clone(), ns)
        .create(
            &post,
            &object(json!({"metadata": {"name": "web-1-a", "labels": {"app": "web"},
                "ownerReferences": owner("ReplicaSet", "web-1", replicaset.uid().unwrap())}, "spec": pod_spec})),
        )
        .await
        .unwrap();
    Api::<CustomResourceDefinition>::all(c.clone())
        .create(
            &post,
            &object(json!({"metadata": {"name": "widgets.example.com"},
                "spec": {"group": "example.com", "scope": "Namespaced",
                    "names": {"plural": "widgets", "singular": "widget", "kind": "Widget", "listKind": "WidgetList"},
                    "versions": [{"name": "v1", "served": true, "storage": true,
                        "schema": {"openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}}}]}})),
        )
        .await
        .unwrap();
    let widget: DynamicObject = object(json!({"apiVersion": "example.com/v1", "kind": "Widget",
        "metadata": {"name": "w1"}, "spec": {"size": 3}}));
    eventually("the widget definition served", || async {
        Api::<DynamicObject>::namespaced_with(c.clone(), ns, &widgets())
            .create(&post, &widget)
            .await
            .ok()
    })
    .await;
}

/// Host pods of the cluster by the virtual name they serve: (host UID, cluster-uid annotation).
async fn host_pods(host: &Client) -> BTreeMap<String, (String, String)> {
    let params = ListParams::default().labels(&format!("{MANAGED_BY_LABEL}={NAME}"));
    Api::<Pod>::namespaced(host.clone(), HOST_NAMESPACE)
        .list(&params)
        .await
        .unwrap()
        .items
        .into_iter()
        .map(|pod| {
            let annotations = pod.annotations();
            (
                annotations[OBJECT_NAME_ANNOTATION].clone(),
                (
                    pod.uid().unwrap(),
                    annotations
                        .get(CLUSTER_UID_ANNOTATION)
                        .cloned()
                        .unwrap_or_default(),
                ),
            )
        })
        .collect()
}

/// Both virtual pods of the app run, as their host pods report.
async fn running(virt: &Client) -> bool {
    let Ok(pods) = Api::<Pod>::namespaced(virt.clone(), "shop")
        .list(&ListParams::default())
        .await
    else {
        return false;
    };
    pods.items.len() == 2
        && pods
            .items
            .iter()
            .all(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running"))
}

/// The archive's objects in the form a comparison sees, by kind and name.
fn comparable(file: &Path) -> BTreeMap<String, serde_json::Value> {
    let (_, entries) = archive::read(std::fs::File::open(file).unwrap()).unwrap();
    entries
        .into_iter()
        .map(|e| (e.display(), prepare::comparable(&e.resource, e.object.clone())))
        .collect()
}

#[tokio::test]
async fn a_snapshot_restored_into_an_emptied_cluster_brings_every_object_back_and_recreates_no_host_pod() {
    let data = tempfile::tempdir().unwrap();
    let dir = data.path().join("local").join(NAME);
    let (code, _, err) = cluster(data.path(), &["create", NAME, "--wait"]).await;
    assert_eq!(code, 0, "{err}");
    let virt = client(dir.join("virtual.kubeconfig")).await;
    let host = client(dir.join("host.kubeconfig")).await;
    create_app(&virt).await;
    eventually("both pods running on the host", || async {
        running(&virt).await.then_some(())
    })
    .await;
    let before = host_pods(&host).await;
    assert_eq!(before.len(), 2, "{before:?}");

    let first = data.path().join("first.snapshot");
    let (code, _, err) = cluster(data.path(), &["snapshot", NAME, "-o", first.to_str().unwrap()]).await;
    assert_eq!(code, 0, "{err}");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&first).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let (manifest, _) = archive::read(std::fs::File::open(&first).unwrap()).unwrap();
    for (kind, count) in [
        ("v1/Pod", 2),
        ("apps/v1/Deployment", 1),
        ("apps/v1/ReplicaSet", 1),
        ("example.com/v1/Widget", 1),
        ("apiextensions.k8s.io/v1/CustomResourceDefinition", 1),
    ] {
        assert_eq!(
            manifest.counts.get(kind),
            Some(&count),
            "{kind}: {:?}",
            manifest.counts
        );
    }
    assert_eq!(
        manifest.cluster_uid.as_deref(),
        Some(kube_system_uid(&virt).await.as_str())
    );
    assert!(
        !manifest
            .counts
            .keys()
            .any(|k| k.ends_with("/Event") || k.ends_with("/Node"))
    );

    // The datastore is lost: the virtual API server starts again from an empty one.
    let (code, _, err) = cluster(data.path(), &["pause", NAME]).await;
    assert_eq!(code, 0, "{err}");
    std::fs::write(
        dir.join("virtual-state/state.json"),
        r#"{"format":1,"resourceVersion":1,"clean":true,"tables":{}}"#,
    )
    .unwrap();
    let (code, _, err) = cluster(data.path(), &["resume", NAME, "--wait"]).await;
    assert_eq!(code, 0, "{err}");
    let virt = client(dir.join("virtual.kubeconfig")).await;
    let host = client(dir.join("host.kubeconfig")).await;
    let new_cluster = kube_system_uid(&virt).await;
    assert_ne!(Some(new_cluster.as_str()), manifest.cluster_uid.as_deref());
    assert!(
        Api::<Namespace>::all(virt.clone())
            .get_opt("shop")
            .await
            .unwrap()
            .is_none()
    );
    assert_eq!(
        host_pods(&host).await,
        before,
        "the host copies are kept while the tenant's objects are gone"
    );

    let (code, out, err) = cluster(
        data.path(),
        &["restore", NAME, "-f", first.to_str().unwrap(), "--dry-run"],
    )
    .await;
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("create   Pod shop/web-1-a"), "{out}");
    assert!(out.contains("create   Widget shop/w1"), "{out}");
    assert!(out.contains(" 0 differ, 0 failed"), "{out}");
    assert!(
        Api::<Namespace>::all(virt.clone())
            .get_opt("shop")
            .await
            .unwrap()
            .is_none(),
        "a dry run changes nothing"
    );

    let (code, out, err) = cluster(data.path(), &["restore", NAME, "-f", first.to_str().unwrap()]).await;
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains(" 0 differ, 0 failed"), "{out}");
    eventually("both restored pods running", || async {
        running(&virt).await.then_some(())
    })
    .await;
    let relinked = eventually("the host pods re-linked to the new cluster", || async {
        let now = host_pods(&host).await;
        now.values()
            .all(|(_, cluster)| *cluster == new_cluster)
            .then_some(now)
    })
    .await;
    let uids = |pods: &BTreeMap<String, (String, String)>| -> BTreeMap<String, String> {
        pods.iter()
            .map(|(name, (uid, _))| (name.clone(), uid.clone()))
            .collect()
    };
    assert_eq!(uids(&relinked), uids(&before), "no host pod recreated");

    let deployment = Api::<Deployment>::namespaced(virt.clone(), "shop")
        .get("web")
        .await
        .unwrap();
    let replicaset = Api::<ReplicaSet>::namespaced(virt.clone(), "shop")
        .get("web-1")
        .await
        .unwrap();
    let pod = Api::<Pod>::namespaced(virt.clone(), "shop")
        .get("web-1-a")
        .await
        .unwrap();
    assert_eq!(replicaset.owner_references()[0].uid, deployment.uid().unwrap());
    assert_eq!(pod.owner_references()[0].uid, replicaset.uid().unwrap());

    let (code, out, err) = cluster(
        data.path(),
        &["restore", NAME, "-f", first.to_str().unwrap(), "--dry-run"],
    )
    .await;
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("would create 0,") && out.contains(" 0 differ, 0 failed"),
        "{out}"
    );

    let second = data.path().join("second.snapshot");
    let (code, _, err) = cluster(data.path(), &["snapshot", NAME, "-o", second.to_str().unwrap()]).await;
    assert_eq!(code, 0, "{err}");
    let (a, b) = (comparable(&first), comparable(&second));
    assert_eq!(a.keys().collect::<Vec<_>>(), b.keys().collect::<Vec<_>>());
    for (key, object) in &a {
        assert_eq!(prepare::first_difference(object, &b[key]), None, "{key}");
    }
    assert_eq!(host_pods(&host).await.len(), 2);
    let (code, _, err) = cluster(data.path(), &["delete", NAME]).await;
    assert_eq!(code, 0, "{err}");
}

#[tokio::test]
async fn a_damaged_archive_or_a_missing_cluster_is_refused_with_what_is_wrong() {
    let data = tempfile::tempdir().unwrap();
    let (code, _, err) = cluster(data.path(), &["snapshot", "nope", "-o", "/dev/null"]).await;
    assert_eq!(code, 10, "{err}");
    let garbage = data.path().join("garbage");
    std::fs::write(&garbage, "not an archive").unwrap();
    let (code, _, err) = cluster(data.path(), &["restore", "nope", "-f", garbage.to_str().unwrap()]).await;
    assert_eq!(code, 2, "the archive is read before any cluster is asked: {err}");

    let (code, _, err) = cluster(data.path(), &["create", NAME, "--wait"]).await;
    assert_eq!(code, 0, "{err}");
    let (code, _, err) = cluster(data.path(), &["restore", NAME, "-f", garbage.to_str().unwrap()]).await;
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("garbage"), "{err}");
    let whole = data.path().join("whole");
    let (code, _, err) = cluster(data.path(), &["snapshot", NAME, "-o", whole.to_str().unwrap()]).await;
    assert_eq!(code, 0, "{err}");
    let bytes = std::fs::read(&whole).unwrap();
    let cut = data.path().join("cut");
    std::fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
    let (code, _, err) = cluster(data.path(), &["restore", NAME, "-f", cut.to_str().unwrap()]).await;
    assert_eq!(code, 2, "{err}");
    let (code, _, err) = cluster(data.path(), &["restore", NAME, "-f", "/nonexistent/file"]).await;
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("/nonexistent/file"), "{err}");
    let (code, _, err) = cluster(data.path(), &["delete", NAME]).await;
    assert_eq!(code, 0, "{err}");
}
