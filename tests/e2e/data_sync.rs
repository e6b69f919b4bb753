//! ConfigMaps and Secrets: referenced-only and all modes, updates, drift, deletes, foreign
//! objects.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{ConfigMap, Event, Pod, Secret};
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use serde_json::json;
use vcsync_translators::{MANAGED_BY_LABEL, NAMESPACE_LABEL, OBJECT_KIND_ANNOTATION, OBJECT_NAME_ANNOTATION};

use crate::env::{Env, eventually, get};

pub fn config_map(name: &str, data: &[(&str, &str)]) -> ConfigMap {
    serde_json::from_value(json!({
        "metadata": {"name": name, "labels": {"app": "web"}},
        "data": data.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect::<BTreeMap<_, _>>(),
    }))
    .unwrap()
}

pub(crate) fn secret(name: &str) -> Secret {
    serde_json::from_value(json!({"metadata": {"name": name}, "stringData": {"password": "s3cret"}})).unwrap()
}

/// A pod that references a config map by volume and a secret by env.
pub fn pod(name: &str, config_map: &str, secret: &str) -> Pod {
    serde_json::from_value(json!({
        "metadata": {"name": name},
        "spec": {
            "containers": [{"name": "app", "image": "nginx",
                "env": [{"name": "PASSWORD", "valueFrom": {"secretKeyRef": {"name": secret, "key": "password"}}}]}],
            "volumes": [{"name": "config", "configMap": {"name": config_map}}]
        }
    }))
    .unwrap()
}

async fn host_data(env: &Env, name: &str) -> Option<BTreeMap<String, String>> {
    get(&env.host_api::<ConfigMap>(), &env.host_name(name))
        .await
        .map(|cm| cm.data.unwrap_or_default())
}

#[tokio::test]
async fn referenced_config_map_and_secret_appear_on_the_host_translated() {
    let mut env = Env::new().await;
    env.start_syncer("").await;
    let pp = PostParams::default();
    env.virt_api::<ConfigMap>()
        .create(&pp, &config_map("app-config", &[("greeting", "hello")]))
        .await
        .unwrap();
    env.virt_api::<Secret>()
        .create(&pp, &secret("app-secret"))
        .await
        .unwrap();
    env.virt_api::<Pod>()
        .create(&pp, &pod("web", "app-config", "app-secret"))
        .await
        .unwrap();

    let host_cm = eventually("config map on the host", || async {
        get(&env.host_api::<ConfigMap>(), &env.host_name("app-config")).await
    })
    .await;
    assert_eq!(host_cm.data.unwrap()["greeting"], "hello");
    let labels = host_cm.metadata.labels.unwrap();
    assert_eq!(labels[MANAGED_BY_LABEL], env.instance);
    assert_eq!(labels[NAMESPACE_LABEL], env.virt_ns);
    assert_eq!(labels["app"], "web");
    let annotations = host_cm.metadata.annotations.unwrap();
    assert_eq!(annotations[OBJECT_NAME_ANNOTATION], "app-config");
    assert_eq!(annotations[OBJECT_KIND_ANNOTATION], "ConfigMap");

    let host_secret = eventually("secret on the host", || async {
        get(&env.host_api::<Secret>(), &env.host_name("app-secret")).await
    })
    .await;
    assert_eq!(host_secret.data.unwrap()["password"].0, b"s3cret");
}

#[tokio::test]
async fn unreferenced_objects_stay_virtual_until_a_pod_references_them() {
    let mut env = Env::new().await;
    env.start_syncer("").await;
    let pp = PostParams::default();
    let cms = env.virt_api::<ConfigMap>();
    cms.create(&pp, &config_map("lonely", &[("a", "1")]))
        .await
        .unwrap();
    cms.create(&pp, &config_map("used", &[("a", "1")])).await.unwrap();
    env.virt_api::<Pod>()
        .create(&pp, &pod("user", "used", "none"))
        .await
        .unwrap();
    // The referenced one syncing proves the syncer has processed the earlier create too.
    eventually("referenced config map on the host", || host_data(&env, "used")).await;
    assert_eq!(
        host_data(&env, "lonely").await,
        None,
        "an unreferenced config map was synced"
    );

    env.virt_api::<Pod>()
        .create(&pp, &pod("late", "lonely", "none"))
        .await
        .unwrap();
    eventually("newly referenced config map on the host", || {
        host_data(&env, "lonely")
    })
    .await;

    // Removing the last referencing pod removes the host copy.
    env.virt_api::<Pod>()
        .delete("late", &DeleteParams::default())
        .await
        .unwrap();
    eventually("host copy removed with its last reference", || async {
        host_data(&env, "lonely").await.is_none().then_some(())
    })
    .await;
    assert!(
        host_data(&env, "used").await.is_some(),
        "a still-referenced copy was removed"
    );
}

#[tokio::test]
async fn all_mode_syncs_every_object() {
    let mut env = Env::new().await;
    env.start_syncer("sync:\n  configMaps:\n    all: true\n").await;
    env.virt_api::<ConfigMap>()
        .create(&PostParams::default(), &config_map("free", &[("k", "v")]))
        .await
        .unwrap();
    let data = eventually("unreferenced config map on the host in all mode", || {
        host_data(&env, "free")
    })
    .await;
    assert_eq!(data["k"], "v");
}

#[tokio::test]
async fn virtual_edits_flow_down_and_host_drift_is_reverted() {
    let mut env = Env::new().await;
    env.start_syncer("sync:\n  configMaps:\n    all: true\n").await;
    let cms = env.virt_api::<ConfigMap>();
    cms.create(&PostParams::default(), &config_map("settings", &[("mode", "a")]))
        .await
        .unwrap();
    eventually("first version on the host", || async {
        host_data(&env, "settings").await.filter(|d| d["mode"] == "a")
    })
    .await;

    let patch = Patch::Merge(json!({"data": {"mode": "b"}, "metadata": {"labels": {"tier": "gold"}}}));
    cms.patch("settings", &PatchParams::default(), &patch)
        .await
        .unwrap();
    let host = eventually("edited version on the host", || async {
        get(&env.host_api::<ConfigMap>(), &env.host_name("settings"))
            .await
            .filter(|cm| cm.data.as_ref().unwrap()["mode"] == "b")
    })
    .await;
    assert_eq!(host.metadata.labels.unwrap()["tier"], "gold");

    let drift = Patch::Merge(json!({"data": {"mode": "tampered", "extra": "x"}}));
    env.host_api::<ConfigMap>()
        .patch(&env.host_name("settings"), &PatchParams::default(), &drift)
        .await
        .unwrap();
    eventually("host drift reverted", || async {
        host_data(&env, "settings")
            .await
            .filter(|d| d.get("mode").map(String::as_str) == Some("b") && !d.contains_key("extra"))
    })
    .await;
}

#[tokio::test]
async fn host_copy_deleted_by_someone_is_recreated_and_virtual_delete_removes_it() {
    let mut env = Env::new().await;
    env.start_syncer("sync:\n  configMaps:\n    all: true\n").await;
    let cms = env.virt_api::<ConfigMap>();
    cms.create(&PostParams::default(), &config_map("keep", &[("k", "v")]))
        .await
        .unwrap();
    let first = eventually("host copy", || async {
        get(&env.host_api::<ConfigMap>(), &env.host_name("keep")).await
    })
    .await;

    env.host_api::<ConfigMap>()
        .delete(&env.host_name("keep"), &DeleteParams::default())
        .await
        .unwrap();
    eventually("host copy recreated", || async {
        get(&env.host_api::<ConfigMap>(), &env.host_name("keep"))
            .await
            .filter(|cm| cm.metadata.uid != first.metadata.uid)
    })
    .await;

    cms.delete("keep", &DeleteParams::default()).await.unwrap();
    eventually("host copy removed after the virtual delete", || async {
        host_data(&env, "keep").await.is_none().then_some(())
    })
    .await;
}

#[tokio::test]
async fn foreign_host_object_with_the_same_name_is_never_modified() {
    let mut env = Env::new().await;
    let foreign_name = env.host_name("clash");
    let mut foreign = config_map(&foreign_name, &[("owner", "someone-else")]);
    foreign.metadata.labels = None;
    let foreign = env
        .host_api::<ConfigMap>()
        .create(&PostParams::default(), &foreign)
        .await
        .unwrap();
    env.start_syncer("sync:\n  configMaps:\n    all: true\n").await;

    env.virt_api::<ConfigMap>()
        .create(
            &PostParams::default(),
            &config_map("clash", &[("owner", "tenant")]),
        )
        .await
        .unwrap();
    let event = eventually("warning event on the virtual object", || async {
        let events = env
            .virt_api::<Event>()
            .list(&ListParams::default())
            .await
            .unwrap();
        events.items.into_iter().find(|e| {
            e.involved_object.name.as_deref() == Some("clash")
                && e.reason.as_deref() == Some("HostNameCollision")
        })
    })
    .await;
    assert_eq!(event.type_.as_deref(), Some("Warning"));
    assert!(event.message.unwrap().contains("not managed by vcsync"));

    let after = get(&env.host_api::<ConfigMap>(), &foreign_name).await.unwrap();
    assert_eq!(
        after.metadata.resource_version, foreign.metadata.resource_version,
        "foreign object was written"
    );
    assert_eq!(after.data.unwrap()["owner"], "someone-else");

    // Deleting the virtual object must not delete the foreign one either.
    env.virt_api::<ConfigMap>()
        .delete("clash", &DeleteParams::default())
        .await
        .unwrap();
    env.virt_api::<ConfigMap>()
        .create(&PostParams::default(), &config_map("marker", &[]))
        .await
        .unwrap();
    eventually("a later object synced", || host_data(&env, "marker")).await;
    assert!(
        get(&env.host_api::<ConfigMap>(), &foreign_name).await.is_some(),
        "foreign object was deleted"
    );
}
