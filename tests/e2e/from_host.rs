//! Host -> virtual: events about synced objects, storage and ingress classes.

use k8s_openapi::api::{
    core::v1::{ConfigMap, Event},
    networking::v1::IngressClass,
    storage::v1::StorageClass,
};
use kube::{
    Api,
    api::{DeleteParams, ListParams, Patch, PatchParams, PostParams},
};
use serde_json::json;

use crate::{
    data_sync::{config_map, pod},
    env::{Env, eventually, get},
};

const SYNCED_FROM_HOST_LABEL: &str = "vcsync.dev/synced-from-host";

fn host_event(env: &Env, name: &str, kind: &str, object: &str, uid: Option<&str>, message: &str) -> Event {
    serde_json::from_value(json!({
        "metadata": {"name": name},
        "involvedObject": {"apiVersion": "v1", "kind": kind, "name": object, "namespace": env.host_ns, "uid": uid},
        "reason": "Checked", "type": "Normal", "message": message,
        "source": {"component": "host-controller"},
        "count": 1,
        "firstTimestamp": "2025-01-01T00:00:00Z", "lastTimestamp": "2025-01-01T00:00:00Z"
    }))
    .unwrap()
}

async fn virtual_events_about(env: &Env, name: &str) -> Vec<Event> {
    env.virt_api::<Event>()
        .list(&ListParams::default().fields(&format!("involvedObject.name={name}")))
        .await
        .unwrap()
        .items
}

#[tokio::test]
async fn a_host_event_about_a_synced_config_map_appears_translated() {
    let mut env = Env::new().await;
    env.start_syncer("").await;
    let pp = PostParams::default();
    let virtual_cm = env
        .virt_api::<ConfigMap>()
        .create(&pp, &config_map("app-config", &[("k", "v")]))
        .await
        .unwrap();
    env.virt_api::<k8s_openapi::api::core::v1::Pod>()
        .create(&pp, &pod("web", "app-config", "none"))
        .await
        .unwrap();
    let host_name = env.host_name("app-config");
    let host_cm = eventually("config map on the host", || async {
        get(&env.host_api::<ConfigMap>(), &host_name).await
    })
    .await;

    // An event about an object that is not this instance's: never mirrored.
    let foreign = env
        .host_api::<ConfigMap>()
        .create(&pp, &config_map("someone-elses", &[]))
        .await
        .unwrap();
    let host_events = env.host_api::<Event>();
    host_events
        .create(
            &pp,
            &host_event(
                &env,
                "someone-elses.1",
                "ConfigMap",
                "someone-elses",
                foreign.metadata.uid.as_deref(),
                "foreign",
            ),
        )
        .await
        .unwrap();

    let event_name = format!("{host_name}.17f3a9c2b1d0e4f5");
    let message = format!("checked {}/{host_name}", env.host_ns);
    host_events
        .create(
            &pp,
            &host_event(
                &env,
                &event_name,
                "ConfigMap",
                &host_name,
                host_cm.metadata.uid.as_deref(),
                &message,
            ),
        )
        .await
        .unwrap();

    let mirrored = eventually("mirrored event in the virtual namespace", || async {
        virtual_events_about(&env, "app-config").await.into_iter().next()
    })
    .await;
    assert_eq!(
        mirrored.metadata.name.as_deref(),
        Some("app-config.17f3a9c2b1d0e4f5")
    );
    assert_eq!(mirrored.metadata.namespace.as_deref(), Some(env.virt_ns.as_str()));
    let involved = &mirrored.involved_object;
    assert_eq!(involved.kind.as_deref(), Some("ConfigMap"));
    assert_eq!(involved.namespace.as_deref(), Some(env.virt_ns.as_str()));
    assert_eq!(involved.uid, virtual_cm.metadata.uid);
    assert_eq!(
        mirrored.message.as_deref(),
        Some(format!("checked {}/app-config", env.virt_ns).as_str())
    );
    assert_eq!(mirrored.reason.as_deref(), Some("Checked"));
    assert_eq!(
        mirrored.metadata.labels.as_ref().unwrap()[SYNCED_FROM_HOST_LABEL],
        "true"
    );

    // The host event repeats: the mirror follows.
    host_events
        .patch(
            &event_name,
            &PatchParams::default(),
            &Patch::Merge(json!({"count": 2, "lastTimestamp": "2025-01-01T00:05:00Z"})),
        )
        .await
        .unwrap();
    eventually("count updated", || async {
        get(&env.virt_api::<Event>(), "app-config.17f3a9c2b1d0e4f5")
            .await
            .filter(|e| e.count == Some(2))
    })
    .await;
    assert!(
        virtual_events_about(&env, "someone-elses").await.is_empty(),
        "an event about a foreign object was mirrored"
    );
    let all = env
        .virt_api::<Event>()
        .list(&ListParams::default().labels(&format!("{SYNCED_FROM_HOST_LABEL}=true")))
        .await
        .unwrap();
    assert_eq!(all.items.len(), 1, "{:?}", all.items);

    host_events
        .delete(&event_name, &DeleteParams::default())
        .await
        .unwrap();
    eventually("mirror removed with the host event", || async {
        get(&env.virt_api::<Event>(), "app-config.17f3a9c2b1d0e4f5")
            .await
            .is_none()
            .then_some(())
    })
    .await;
}

#[tokio::test]
async fn an_event_that_arrives_before_its_object_is_mirrored_once_the_object_is_known() {
    let mut env = Env::new().await;
    env.start_syncer("sync:\n  configMaps:\n    all: true\n").await;
    let pp = PostParams::default();
    let host_name = env.host_name("early");
    // The event names the host object before vcsync has created it (no UID known).
    env.host_api::<Event>()
        .create(
            &pp,
            &host_event(
                &env,
                &format!("{host_name}.1"),
                "ConfigMap",
                &host_name,
                None,
                "early bird",
            ),
        )
        .await
        .unwrap();
    env.virt_api::<ConfigMap>()
        .create(&pp, &config_map("early", &[]))
        .await
        .unwrap();
    let mirrored = eventually("event mirrored after its object synced", || async {
        get(&env.virt_api::<Event>(), "early.1").await
    })
    .await;
    assert_eq!(mirrored.involved_object.name.as_deref(), Some("early"));
}

/// Whether both embedded servers serve `K` (an older server may not).
async fn served<K>(env: &Env) -> bool
where
    K: kube::Resource<DynamicType = (), Scope = k8s_openapi::ClusterResourceScope>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug,
{
    for client in [&env.host, &env.virt] {
        if Api::<K>::all(client.clone())
            .list(&ListParams::default().limit(1))
            .await
            .is_err()
        {
            return false;
        }
    }
    true
}

#[tokio::test]
async fn storage_classes_are_mirrored_read_only() {
    let mut env = Env::new().await;
    if !env.throwaway_clusters() || !served::<StorageClass>(&env).await {
        eprintln!("skipped: creates host storage classes, on the run's own clusters only");
        return;
    }
    // Cluster-scoped: a name of the test's own, so that it runs again on the same clusters.
    let fast = format!("{}-fast", env.instance);
    env.start_syncer("").await;
    let host_classes: Api<StorageClass> = Api::all(env.host.clone());
    let virtual_classes: Api<StorageClass> = Api::all(env.virt.clone());
    let class: StorageClass = serde_json::from_value(json!({
        "metadata": {"name": fast, "labels": {"tier": "ssd"},
                     "annotations": {"storageclass.kubernetes.io/is-default-class": "true"}},
        "provisioner": "csi.example.com", "parameters": {"type": "nvme"},
        "reclaimPolicy": "Delete", "volumeBindingMode": "WaitForFirstConsumer", "allowVolumeExpansion": true
    }))
    .unwrap();
    host_classes.create(&PostParams::default(), &class).await.unwrap();

    let mirror = eventually("storage class mirrored", || async {
        get(&virtual_classes, &fast).await
    })
    .await;
    assert_eq!(mirror.provisioner, "csi.example.com");
    assert_eq!(mirror.parameters.as_ref().unwrap()["type"], "nvme");
    let labels = mirror.metadata.labels.as_ref().unwrap();
    assert_eq!(
        (labels["tier"].as_str(), labels[SYNCED_FROM_HOST_LABEL].as_str()),
        ("ssd", "true")
    );
    assert_eq!(
        mirror.metadata.annotations.as_ref().unwrap()["storageclass.kubernetes.io/is-default-class"],
        "true"
    );

    // A tenant's edit is reverted.
    virtual_classes
        .patch(
            &fast,
            &PatchParams::default(),
            &Patch::Merge(
                json!({"allowVolumeExpansion": false, "metadata": {"labels": {"tier": "tampered"}}}),
            ),
        )
        .await
        .unwrap();
    eventually("tenant edit reverted", || async {
        get(&virtual_classes, &fast).await.filter(|c| {
            c.allow_volume_expansion == Some(true) && c.metadata.labels.as_ref().unwrap()["tier"] == "ssd"
        })
    })
    .await;

    // A tenant's delete is undone.
    virtual_classes
        .delete(&fast, &DeleteParams::default())
        .await
        .unwrap();
    eventually("deleted mirror recreated", || async {
        get(&virtual_classes, &fast)
            .await
            .filter(|c| c.metadata.uid != mirror.metadata.uid)
    })
    .await;

    // The host's change flows up; its delete removes the mirror.
    host_classes
        .patch(
            &fast,
            &PatchParams::default(),
            &Patch::Merge(json!({"mountOptions": ["discard"]})),
        )
        .await
        .unwrap();
    eventually("host change mirrored", || async {
        get(&virtual_classes, &fast)
            .await
            .filter(|c| c.mount_options == Some(vec!["discard".to_string()]))
    })
    .await;
    host_classes
        .delete(&fast, &DeleteParams::default())
        .await
        .unwrap();
    eventually("mirror removed with the host class", || async {
        get(&virtual_classes, &fast).await.is_none().then_some(())
    })
    .await;
}

#[tokio::test]
async fn a_tenants_own_class_is_left_alone_and_ingress_classes_are_mirrored() {
    let mut env = Env::new().await;
    if !env.throwaway_clusters() || !served::<IngressClass>(&env).await {
        eprintln!("skipped: creates host ingress classes, on the run's own clusters only");
        return;
    }
    // Cluster-scoped: names of the test's own, so that it runs again on the same clusters.
    let (shared, nginx) = (
        format!("{}-shared", env.instance),
        format!("{}-nginx", env.instance),
    );
    let pp = PostParams::default();
    let ingress_class = |name: &str, controller: &str| -> IngressClass {
        serde_json::from_value(json!({"metadata": {"name": name}, "spec": {"controller": controller}}))
            .unwrap()
    };
    let host_classes: Api<IngressClass> = Api::all(env.host.clone());
    let virtual_classes: Api<IngressClass> = Api::all(env.virt.clone());
    let tenants = virtual_classes
        .create(&pp, &ingress_class(&shared, "tenant.example.com/own"))
        .await
        .unwrap();
    host_classes
        .create(&pp, &ingress_class(&shared, "k8s.io/ingress-nginx"))
        .await
        .unwrap();
    host_classes
        .create(&pp, &ingress_class(&nginx, "k8s.io/ingress-nginx"))
        .await
        .unwrap();
    env.start_syncer("").await;

    let mirror = eventually("ingress class mirrored", || async {
        get(&virtual_classes, &nginx).await
    })
    .await;
    assert_eq!(
        mirror.spec.unwrap().controller.as_deref(),
        Some("k8s.io/ingress-nginx")
    );
    let after = get(&virtual_classes, &shared).await.unwrap();
    assert_eq!(
        after.metadata.resource_version, tenants.metadata.resource_version,
        "the tenant's own class was overwritten"
    );

    // Leave nothing behind: the host classes (their mirror goes with them) and the tenant's.
    for name in [&shared, &nginx] {
        host_classes.delete(name, &DeleteParams::default()).await.unwrap();
    }
    virtual_classes
        .delete(&shared, &DeleteParams::default())
        .await
        .unwrap();
    eventually("mirror removed with the host class", || async {
        get(&virtual_classes, &nginx).await.is_none().then_some(())
    })
    .await;
}

#[tokio::test]
async fn classes_are_not_mirrored_when_switched_off() {
    let mut env = Env::new().await;
    if !env.throwaway_clusters() || !served::<StorageClass>(&env).await {
        eprintln!("skipped: creates host storage classes, on the run's own clusters only");
        return;
    }
    // Cluster-scoped: names of the test's own, so that it runs again on the same clusters.
    let (slow, marker) = (
        format!("{}-slow", env.instance),
        format!("{}-marker", env.instance),
    );
    let pp = PostParams::default();
    let class: StorageClass =
        serde_json::from_value(json!({"metadata": {"name": slow}, "provisioner": "p"})).unwrap();
    Api::<StorageClass>::all(env.host.clone())
        .create(&pp, &class)
        .await
        .unwrap();
    let ingress: IngressClass = serde_json::from_value(
        json!({"metadata": {"name": marker}, "spec": {"controller": "e2e.vcsync.dev/c"}}),
    )
    .unwrap();
    Api::<IngressClass>::all(env.host.clone())
        .create(&pp, &ingress)
        .await
        .unwrap();
    env.start_syncer("sync:\n  storageClasses:\n    enabled: false\n")
        .await;
    // Ingress classes are still on: once one is mirrored, the storage class had its chance.
    eventually("ingress class mirrored", || async {
        get(&Api::<IngressClass>::all(env.virt.clone()), &marker).await
    })
    .await;
    assert!(
        get(&Api::<StorageClass>::all(env.virt.clone()), &slow)
            .await
            .is_none()
    );

    // Leave nothing behind: the host classes (the ingress class's mirror goes with it).
    Api::<StorageClass>::all(env.host.clone())
        .delete(&slow, &DeleteParams::default())
        .await
        .unwrap();
    Api::<IngressClass>::all(env.host.clone())
        .delete(&marker, &DeleteParams::default())
        .await
        .unwrap();
    eventually("mirror removed with the host class", || async {
        get(&Api::<IngressClass>::all(env.virt.clone()), &marker)
            .await
            .is_none()
            .then_some(())
    })
    .await;
}
