//! The crd-sync plugin: CRDs from the host become available in the virtual cluster; custom
//! resources flow down translated, status flows up, drift is reverted, foreign objects are
//! left alone, a restart writes nothing; a bad config section is exit 2 with a location.
//! Every test holds in both namespace mappings (`VCSYNC_E2E_NAMESPACE_MAPPING`): host
//! namespaces and names come from `env.mapping`.

use std::time::Duration;

use k8s_openapi::{
    api::core::v1::{Event, Namespace},
    apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition,
};
use kube::{
    Api,
    api::{ApiResource, DeleteParams, DynamicObject, ObjectMeta, Patch, PatchParams, PostParams},
};
use serde_json::{Value, json};
use vcsync_translators::{MANAGED_BY_LABEL, OBJECT_NAME_ANNOTATION, OBJECT_NAMESPACE_ANNOTATION};

use crate::env::{Env, eventually, get};

const GROUP: &str = "e2e.vcsync.dev";

fn widgets() -> ApiResource {
    ApiResource {
        group: GROUP.into(),
        version: "v1".into(),
        api_version: format!("{GROUP}/v1"),
        kind: "Widget".into(),
        plural: "widgets".into(),
    }
}

fn widget_crd() -> CustomResourceDefinition {
    serde_json::from_value(json!({
        "metadata": {"name": format!("widgets.{GROUP}"), "labels": {"team": "platform"}},
        "spec": {"group": GROUP, "scope": "Namespaced",
            "names": {"plural": "widgets", "singular": "widget", "kind": "Widget", "listKind": "WidgetList"},
            "versions": [{"name": "v1", "served": true, "storage": true,
                "schema": {"openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}},
                "subresources": {"status": {}}}]}}))
    .unwrap()
}

fn widget(name: &str, spec: Value) -> DynamicObject {
    serde_json::from_value(json!({"apiVersion": format!("{GROUP}/v1"), "kind": "Widget",
        "metadata": {"name": name, "labels": {"app": "shop"}}, "spec": spec}))
    .unwrap()
}

const CONFIG: &str = "plugins:\n  crd-sync:\n    config:\n      resources:\n      - group: e2e.vcsync.dev\n        version: v1\n        kind: Widget\n        references:\n        - path: spec.configMapName\n          kind: ConfigMap\n";

async fn create_host_crd(env: &Env) {
    create_host_crd_of(env, widget_crd(), &widgets()).await;
}

/// Creates `crd` on the host (an earlier test's is taken as it is: CRDs outlive tests on real
/// clusters) and waits until its resource `resource` is served: a real API server
/// establishes a new CRD a moment after creating it.
async fn create_host_crd_of(env: &Env, crd: CustomResourceDefinition, resource: &ApiResource) {
    let crds: Api<CustomResourceDefinition> = Api::all(env.host.clone());
    match crds.create(&PostParams::default(), &crd).await {
        Ok(_) => {}
        Err(kube::Error::Api(status)) if status.code == 409 => {}
        Err(err) => panic!("creating the host CRD: {err}"),
    }
    let objects: Api<DynamicObject> = Api::all_with(env.host.clone(), resource);
    eventually("the host CRD served", || async {
        objects.list(&Default::default()).await.ok()
    })
    .await;
}

#[tokio::test]
async fn crd_sync_to_host_round_trip() {
    let mut env = Env::new().await;
    create_host_crd(&env).await;
    env.start_syncer(CONFIG).await;

    // The CRD is available in the virtual cluster.
    let virtual_crds: Api<CustomResourceDefinition> = Api::all(env.virt.clone());
    let copied = get(&virtual_crds, &format!("widgets.{GROUP}"))
        .await
        .expect("CRD copied");
    assert_eq!(copied.spec.names.kind, "Widget");
    assert_eq!(copied.metadata.labels.unwrap()["team"], "platform");

    let virt: Api<DynamicObject> = Api::namespaced_with(env.virt.clone(), &env.virt_ns, &widgets());
    let host: Api<DynamicObject> = Api::namespaced_with(env.host.clone(), &env.host_ns, &widgets());
    let pp = PostParams::default();
    virt.create(&pp, &widget("w1", json!({"configMapName": "cfg", "size": 1})))
        .await
        .unwrap();
    let host_name = env.host_name("w1");
    let copy = eventually("the widget on the host", || async {
        get(&host, &host_name).await
    })
    .await;
    let labels = copy.metadata.labels.clone().unwrap();
    assert_eq!(labels[MANAGED_BY_LABEL], env.instance);
    assert_eq!(labels["app"], "shop");
    let annotations = copy.metadata.annotations.clone().unwrap();
    assert_eq!(annotations[OBJECT_NAME_ANNOTATION], "w1");
    assert_eq!(annotations[OBJECT_NAMESPACE_ANNOTATION], env.virt_ns);
    assert_eq!(copy.data["spec"]["configMapName"], env.host_name("cfg"));
    assert_eq!(copy.data["spec"]["size"], 1);

    // An edit flows down.
    let merge = |v: Value| Patch::Merge(v);
    virt.patch(
        "w1",
        &PatchParams::default(),
        &merge(json!({"spec": {"size": 2}})),
    )
    .await
    .unwrap();
    let size_is = |n: i64| {
        let (host, host_name) = (host.clone(), host_name.clone());
        async move {
            get(&host, &host_name)
                .await
                .filter(|o| o.data["spec"]["size"] == n)
        }
    };
    eventually("the edit on the host", || size_is(2)).await;

    // Host drift is reverted.
    host.patch(
        &host_name,
        &PatchParams::default(),
        &merge(json!({"spec": {"size": 99}})),
    )
    .await
    .unwrap();
    eventually("the drift reverted", || size_is(2)).await;

    // Status set on the host comes up.
    host.patch_status(
        &host_name,
        &PatchParams::default(),
        &merge(json!({"status": {"phase": "Ready"}})),
    )
    .await
    .unwrap();
    eventually("status up", || async {
        get(&virt, "w1")
            .await
            .filter(|o| o.data["status"]["phase"] == "Ready")
    })
    .await;

    // A restart over the synced state writes nothing. (Before the collision below: a key that
    // collides with a foreign object is retried with a create, which the server refuses.)
    {
        let (host, virt) = env.restart_counting(CONFIG).await;
        assert_eq!(host.writes(), 0, "host writes after restart: {host:?}");
        assert_eq!(virt.writes(), 0, "virtual writes after restart: {virt:?}");
        assert!(
            host.get("list", "widgets") >= 1,
            "the restarted syncer did not list widgets"
        );
    }

    // A foreign host object of the translated name is left alone; the tenant is told.
    let foreign_name = env.host_name("w2");
    let mut foreign = widget(&foreign_name, json!({"owner": "someone else"}));
    foreign.metadata.labels = None;
    let foreign = host.create(&pp, &foreign).await.unwrap();
    virt.create(&pp, &widget("w2", json!({"size": 5}))).await.unwrap();
    eventually("a HostNameCollision event", || async {
        let events: Api<Event> = Api::namespaced(env.virt.clone(), &env.virt_ns);
        events
            .list(&Default::default())
            .await
            .unwrap()
            .items
            .into_iter()
            .find(|e| {
                e.reason.as_deref() == Some("HostNameCollision")
                    && e.involved_object.name.as_deref() == Some("w2")
            })
    })
    .await;
    let after = get(&host, &foreign_name)
        .await
        .expect("foreign object still there");
    assert_eq!(after.metadata.resource_version, foreign.metadata.resource_version);

    // Deleting the virtual object removes the host copy, and only that.
    virt.delete("w1", &Default::default()).await.unwrap();
    eventually("the host copy removed", || async {
        get(&host, &host_name).await.is_none().then_some(())
    })
    .await;
    virt.delete("w2", &Default::default()).await.unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        get(&host, &foreign_name).await.is_some(),
        "a foreign object was deleted"
    );
}

#[tokio::test]
async fn crd_sync_from_host_mirrors_read_only() {
    let mut env = Env::new().await;
    create_host_crd(&env).await;
    let host: Api<DynamicObject> = Api::namespaced_with(env.host.clone(), &env.host_ns, &widgets());
    host.create(&PostParams::default(), &widget("shared", json!({"size": 3})))
        .await
        .unwrap();
    // Status through its subresource, as the host's controller writes it (a create drops it).
    host.patch_status(
        "shared",
        &PatchParams::default(),
        &Patch::Merge(json!({"status": {"phase": "Up"}})),
    )
    .await
    .unwrap();
    // vcsync's own copies in that namespace are not the host's objects.
    let mut owned = widget("owned", json!({"size": 1}));
    owned.metadata.labels = Some([(MANAGED_BY_LABEL.to_string(), env.instance.clone())].into());
    host.create(&PostParams::default(), &owned).await.unwrap();
    // The mirrored namespace is the host namespace of `virtualNamespace`; in the per-namespace
    // mapping that is not the syncer's own namespace, whose objects then stay on the host.
    if env.syncer_ns != env.host_ns {
        let syncer_ns: Api<DynamicObject> =
            Api::namespaced_with(env.host.clone(), &env.syncer_ns, &widgets());
        syncer_ns
            .create(&PostParams::default(), &widget("elsewhere", json!({"size": 4})))
            .await
            .unwrap();
    }
    env.start_syncer(&format!(
        "plugins:\n  crd-sync:\n    config:\n      resources:\n      - group: {GROUP}\n        version: v1\n        kind: Widget\n        direction: fromHost\n        virtualNamespace: {}\n",
        env.virt_ns
    ))
    .await;
    let virt: Api<DynamicObject> = Api::namespaced_with(env.virt.clone(), &env.virt_ns, &widgets());
    let mirror = eventually("the mirror", || async { get(&virt, "shared").await }).await;
    assert_eq!(mirror.data["spec"]["size"], 3);
    assert_eq!(
        mirror.metadata.labels.unwrap()["vcsync.dev/synced-from-host"],
        "true"
    );
    eventually("status mirrored", || async {
        get(&virt, "shared")
            .await
            .filter(|o| o.data["status"]["phase"] == "Up")
    })
    .await;
    // Listed together with "shared": had they been mirrored, they would be there by now.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        get(&virt, "owned").await.is_none(),
        "vcsync's own copy was mirrored"
    );
    assert!(
        get(&virt, "elsewhere").await.is_none(),
        "an object outside the host namespace of virtualNamespace was mirrored"
    );
    // A tenant's edit is reverted.
    virt.patch(
        "shared",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"size": 7}})),
    )
    .await
    .unwrap();
    eventually("the edit reverted", || async {
        get(&virt, "shared").await.filter(|o| o.data["spec"]["size"] == 3)
    })
    .await;
    // Gone on the host: gone in the virtual cluster.
    host.delete("shared", &Default::default()).await.unwrap();
    eventually("the mirror removed", || async {
        get(&virt, "shared").await.is_none().then_some(())
    })
    .await;
}

#[tokio::test]
async fn crd_sync_bad_config_section_is_exit_2_with_location() {
    let env = Env::new().await;
    let dir = tempfile::tempdir().unwrap();
    let (h, v, config) = (
        env.host_kubeconfig(),
        env.virtual_kubeconfig(),
        dir.path().join("vcsync.yaml"),
    );
    std::fs::write(
        &config,
        format!(
            "instance: bad\nhostNamespace: {}\nhost:\n  kubeconfig: {}\nvirtual:\n  kubeconfig: {}\nplugins:\n  crd-sync:\n    config:\n      resources:\n      - group: {GROUP}\n        version: v1\n        kind: Widget\n        direction: sideways\n",
            env.host_ns,
            h.display(),
            v.display()
        ),
    )
    .unwrap();
    let path = config.clone();
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_vcsync"))
            .args(["run", "--config"])
            .arg(&path)
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    let expected = format!("{}:14:20:", config.display());
    assert!(stderr.contains(&expected), "expected {expected} in: {stderr}");
    assert!(stderr.contains("sideways"), "{stderr}");
}

#[tokio::test]
async fn crd_sync_cluster_scoped_kinds_get_instance_prefixed_host_names() {
    let mut env = Env::new().await;
    let mut crd = widget_crd();
    crd.metadata.name = Some(format!("gadgets.{GROUP}"));
    crd.spec.scope = "Cluster".into();
    crd.spec.names.plural = "gadgets".into();
    crd.spec.names.singular = Some("gadget".into());
    crd.spec.names.kind = "Gadget".into();
    crd.spec.names.list_kind = Some("GadgetList".into());
    crd.spec.versions[0].subresources = None;
    let resource = ApiResource {
        kind: "Gadget".into(),
        plural: "gadgets".into(),
        ..widgets()
    };
    create_host_crd_of(&env, crd, &resource).await;
    env.start_syncer(&format!(
        "plugins:\n  crd-sync:\n    config:\n      resources:\n      - group: {GROUP}\n        version: v1\n        kind: Gadget\n        plural: gadgets\n        references:\n        - path: spec.parents[]\n          kind: Gadget\n"
    ))
    .await;
    let virt: Api<DynamicObject> = Api::all_with(env.virt.clone(), &resource);
    let host: Api<DynamicObject> = Api::all_with(env.host.clone(), &resource);
    let mut gadget = widget("g1", json!({"parents": ["p1", "p2"]}));
    gadget.types.as_mut().unwrap().kind = "Gadget".into();
    virt.create(&PostParams::default(), &gadget).await.unwrap();
    let host_name = vcsync_translators::host_cluster_name(&env.instance, "g1");
    let copy = eventually("the gadget on the host", || async {
        get(&host, &host_name).await
    })
    .await;
    assert_eq!(
        copy.data["spec"]["parents"],
        json!([
            vcsync_translators::host_cluster_name(&env.instance, "p1"),
            vcsync_translators::host_cluster_name(&env.instance, "p2")
        ])
    );
    // No status subresource: status comes up through a full update.
    host.patch(
        &host_name,
        &PatchParams::default(),
        &Patch::Merge(json!({"status": {"ok": true}})),
    )
    .await
    .unwrap();
    eventually("status up", || async {
        get(&virt, "g1").await.filter(|o| o.data["status"]["ok"] == true)
    })
    .await;
    virt.delete("g1", &Default::default()).await.unwrap();
    eventually("the host copy removed", || async {
        get(&host, &host_name).await.is_none().then_some(())
    })
    .await;
}

/// Objects of the same name in two virtual namespaces: two host copies where the mapping puts
/// them (one host namespace, translated names; or a host namespace each, names kept),
/// references translated per namespace, status of each host copy back to its own virtual
/// object, deleting one removes only its copy.
#[tokio::test]
async fn crd_sync_same_name_in_two_virtual_namespaces() {
    let mut env = Env::new().await;
    create_host_crd(&env).await;
    let other_ns = format!("{}-b", env.virt_ns);
    let namespaces: Api<Namespace> = Api::all(env.virt.clone());
    let namespace = Namespace {
        metadata: ObjectMeta {
            name: Some(other_ns.clone()),
            ..Default::default()
        },
        ..Default::default()
    };
    namespaces
        .create(&PostParams::default(), &namespace)
        .await
        .unwrap();
    env.start_syncer(CONFIG).await;

    let pp = PostParams::default();
    let mut host_keys = Vec::new();
    for ns in [env.virt_ns.clone(), other_ns.clone()] {
        let virt: Api<DynamicObject> = Api::namespaced_with(env.virt.clone(), &ns, &widgets());
        virt.create(&pp, &widget("dup", json!({"configMapName": "cfg", "from": ns})))
            .await
            .unwrap();
        host_keys.push((ns.clone(), env.mapping.host_key(&ns, "dup")));
    }
    let host_api = |ns: &str| Api::<DynamicObject>::namespaced_with(env.host.clone(), ns, &widgets());
    for (ns, key) in &host_keys {
        let host_ns = key.namespace.clone().unwrap();
        let copy = eventually(&format!("the widget of {ns} on the host"), || async {
            get(&host_api(&host_ns), &key.name).await
        })
        .await;
        assert_eq!(copy.data["spec"]["from"], ns.as_str());
        assert_eq!(
            copy.data["spec"]["configMapName"],
            env.mapping.host_object_name(ns, "cfg")
        );
        let annotations = copy.metadata.annotations.clone().unwrap();
        assert_eq!(annotations[OBJECT_NAME_ANNOTATION], "dup");
        assert_eq!(&annotations[OBJECT_NAMESPACE_ANNOTATION], ns);
        assert_eq!(copy.metadata.labels.unwrap()[MANAGED_BY_LABEL], env.instance);
    }
    assert_ne!(
        host_keys[0].1, host_keys[1].1,
        "two virtual objects share a host copy"
    );
    if env.mapping.is_per_namespace() {
        assert_ne!(host_keys[0].1.namespace, host_keys[1].1.namespace);
        assert_eq!(host_keys[1].1.name, "dup");
    }

    // Status of the second host copy reaches the second virtual object, and only it.
    let (other_host_ns, other_host_name) = (
        host_keys[1].1.namespace.clone().unwrap(),
        host_keys[1].1.name.clone(),
    );
    host_api(&other_host_ns)
        .patch_status(
            &other_host_name,
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"phase": "Ready"}})),
        )
        .await
        .unwrap();
    let other_virt: Api<DynamicObject> = Api::namespaced_with(env.virt.clone(), &other_ns, &widgets());
    let first_virt: Api<DynamicObject> = Api::namespaced_with(env.virt.clone(), &env.virt_ns, &widgets());
    eventually("status up to the second namespace's widget", || async {
        get(&other_virt, "dup")
            .await
            .filter(|o| o.data["status"]["phase"] == "Ready")
    })
    .await;
    assert!(
        get(&first_virt, "dup")
            .await
            .unwrap()
            .data
            .get("status")
            .is_none(),
        "status reached the widget of the other namespace"
    );

    // Deleting the second removes its host copy only.
    other_virt.delete("dup", &Default::default()).await.unwrap();
    eventually("the second host copy removed", || async {
        get(&host_api(&other_host_ns), &other_host_name)
            .await
            .is_none()
            .then_some(())
    })
    .await;
    let (first_host_ns, first_host_name) = (
        host_keys[0].1.namespace.clone().unwrap(),
        host_keys[0].1.name.clone(),
    );
    assert!(
        get(&host_api(&first_host_ns), &first_host_name).await.is_some(),
        "the first namespace's host copy was deleted"
    );
    let _ = namespaces.delete(&other_ns, &DeleteParams::default()).await;
}
