//! A host pod names only host objects this virtual cluster owns: a foreign object at a
//! translated name is never referenced, a missing Secret keeps the pod waiting, a missing
//! optional one is left out.

use std::time::Duration;

use k8s_openapi::api::core::v1::{ConfigMap, Event, PersistentVolumeClaim, Pod, Secret};
use kube::{
    ResourceExt,
    api::{ObjectMeta, PostParams},
};
use serde_json::{Value, json};

use crate::{
    data_sync::{config_map, secret},
    env::{Env, eventually, get},
};

/// A pod whose one container runs `nginx` with `extra` merged into its spec.
fn pod_with(name: &str, extra: Value) -> Pod {
    let mut spec = json!({"containers": [{"name": "app", "image": "nginx"}]});
    for (key, value) in extra.as_object().unwrap() {
        if key == "container" {
            let container = spec["containers"][0].as_object_mut().unwrap();
            container.extend(value.as_object().unwrap().clone());
        } else {
            spec[key] = value.clone();
        }
    }
    serde_json::from_value(json!({"metadata": {"name": name}, "spec": spec})).unwrap()
}

/// A foreign object (no ownership label) at the host name of virtual object `name`.
async fn foreign<K>(env: &Env, name: &str, mut object: K)
where
    K: kube::Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + serde::Serialize
        + serde::de::DeserializeOwned
        + std::fmt::Debug,
{
    *object.meta_mut() = ObjectMeta {
        name: Some(env.host_name(name)),
        namespace: Some(env.host_ns.clone()),
        ..ObjectMeta::default()
    };
    env.host_api::<K>()
        .create(&PostParams::default(), &object)
        .await
        .unwrap();
}

fn platform_secret() -> Secret {
    serde_json::from_value(json!({"metadata": {}, "stringData": {"password": "host-only"}})).unwrap()
}

/// The reasons of the events about the virtual object `name` (a pod, say).
pub(crate) async fn reasons(env: &Env, name: &str) -> Vec<String> {
    env.virt_api::<Event>()
        .list(&Default::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|e| e.involved_object.name.as_deref() == Some(name))
        .filter_map(|e| e.reason)
        .collect()
}

async fn no_host_pod(env: &Env, pod: &str) -> bool {
    get(&env.host_api::<Pod>(), &env.host_name(pod)).await.is_none()
}

/// The try: a tenant names a host Secret it does not own, with no Secret of that name
/// in the virtual cluster, and then with one (whose copy the foreign object blocks).
#[tokio::test]
async fn a_pod_never_references_a_foreign_host_secret() {
    let mut env = Env::new().await;
    foreign(&env, "platform", platform_secret()).await;
    env.start_syncer("").await;
    let thief = pod_with(
        "thief",
        json!({
            "volumes": [{"name": "s", "secret": {"secretName": "platform"}}],
            "container": {"env": [{"name": "P", "valueFrom": {"secretKeyRef": {"name": "platform", "key": "password"}}}]}
        }),
    );
    env.virt_api::<Pod>()
        .create(&PostParams::default(), &thief)
        .await
        .unwrap();
    eventually("the pod told it waits for Secret platform", || async {
        reasons(&env, "thief")
            .await
            .contains(&"WaitingForReference".to_string())
            .then_some(())
    })
    .await;
    assert!(no_host_pod(&env, "thief").await);

    // The tenant creates its own `platform`: its copy cannot take the name, so still no pod.
    env.virt_api::<Secret>()
        .create(&PostParams::default(), &secret("platform"))
        .await
        .unwrap();
    eventually("the pod told the name is held by a foreign object", || async {
        reasons(&env, "thief")
            .await
            .contains(&"HostNameCollision".to_string())
            .then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(
        no_host_pod(&env, "thief").await,
        "the foreign Secret is never mounted"
    );
    let kept = get(&env.host_api::<Secret>(), &env.host_name("platform"))
        .await
        .unwrap();
    assert!(kept.labels().is_empty(), "the foreign Secret is untouched");
}

/// Every kind of reference, each to a virtual object whose host name a foreign object holds:
/// no host pod names any of them.
#[tokio::test]
async fn no_reference_of_any_kind_reaches_a_foreign_host_object() {
    let mut env = Env::new().await;
    let cases: Vec<(&str, Value)> = vec![
        (
            "cm-volume",
            json!({"volumes": [{"name": "v", "configMap": {"name": "cm-volume"}}]}),
        ),
        (
            "secret-volume",
            json!({"volumes": [{"name": "v", "secret": {"secretName": "secret-volume"}}]}),
        ),
        (
            "projected-cm",
            json!({"volumes": [{"name": "v", "projected": {"sources": [{"configMap": {"name": "projected-cm"}}]}}]}),
        ),
        (
            "projected-secret",
            json!({"volumes": [{"name": "v", "projected": {"sources": [{"secret": {"name": "projected-secret"}}]}}]}),
        ),
        (
            "env-cm",
            json!({"container": {"env": [{"name": "A", "valueFrom": {"configMapKeyRef": {"name": "env-cm", "key": "k"}}}]}}),
        ),
        (
            "env-secret",
            json!({"container": {"env": [{"name": "A", "valueFrom": {"secretKeyRef": {"name": "env-secret", "key": "k"}}}]}}),
        ),
        (
            "envfrom-cm",
            json!({"container": {"envFrom": [{"configMapRef": {"name": "envfrom-cm"}}]}}),
        ),
        (
            "envfrom-secret",
            json!({"container": {"envFrom": [{"secretRef": {"name": "envfrom-secret"}}]}}),
        ),
        (
            "pull-secret",
            json!({"imagePullSecrets": [{"name": "pull-secret"}]}),
        ),
        (
            "csi-secret",
            json!({"volumes": [{"name": "v", "csi": {"driver": "csi.example.com", "nodePublishSecretRef": {"name": "csi-secret"}}}]}),
        ),
        (
            "claim",
            json!({"volumes": [{"name": "v", "persistentVolumeClaim": {"claimName": "claim"}}]}),
        ),
    ];
    for (name, _) in &cases {
        if name.contains("cm") {
            foreign(&env, name, config_map("x", &[])).await;
        } else if *name == "claim" {
            foreign(&env, name, claim()).await;
        } else {
            foreign(&env, name, platform_secret()).await;
        }
    }
    env.start_syncer("").await;
    let pp = PostParams::default();
    for (name, extra) in &cases {
        if name.contains("cm") {
            env.virt_api::<ConfigMap>()
                .create(&pp, &config_map(name, &[("k", "v")]))
                .await
                .unwrap();
        } else if *name == "claim" {
            let mut object = claim();
            object.metadata.name = Some(name.to_string());
            env.virt_api::<PersistentVolumeClaim>()
                .create(&pp, &object)
                .await
                .unwrap();
        } else {
            env.virt_api::<Secret>().create(&pp, &secret(name)).await.unwrap();
        }
        env.virt_api::<Pod>()
            .create(&pp, &pod_with(&format!("p-{name}"), extra.clone()))
            .await
            .unwrap();
    }
    for (name, _) in &cases {
        let pod = format!("p-{name}");
        eventually(&format!("HostNameCollision on {pod}"), || async {
            reasons(&env, &pod)
                .await
                .contains(&"HostNameCollision".to_string())
                .then_some(())
        })
        .await;
        assert!(no_host_pod(&env, &pod).await, "{pod} reached the host");
    }
}

fn claim() -> PersistentVolumeClaim {
    serde_json::from_value(json!({
        "metadata": {},
        "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}
    }))
    .unwrap()
}

/// A kubelet starts a pod without an optional Secret that does not exist; the host pod does
/// too, without naming it, even though a foreign object holds its host name. A required
/// Secret that appears later lets a waiting pod start.
#[tokio::test]
async fn optional_references_to_missing_objects_are_left_out_and_required_ones_waited_for() {
    let mut env = Env::new().await;
    foreign(&env, "nothere", platform_secret()).await;
    env.start_syncer("").await;
    let pp = PostParams::default();
    let optional = pod_with(
        "optional",
        json!({
            "volumes": [{"name": "s", "secret": {"secretName": "nothere", "optional": true}}],
            "container": {
                "volumeMounts": [{"name": "s", "mountPath": "/s"}],
                "env": [{"name": "P", "valueFrom": {"secretKeyRef": {"name": "nothere", "key": "k", "optional": true}}}],
                "envFrom": [{"secretRef": {"name": "nothere", "optional": true}}]
            }
        }),
    );
    env.virt_api::<Pod>().create(&pp, &optional).await.unwrap();
    let host = eventually("the pod with optional references on the host", || async {
        get(&env.host_api::<Pod>(), &env.host_name("optional")).await
    })
    .await;
    let spec = serde_json::to_value(host.spec.unwrap()).unwrap();
    let text = spec.to_string();
    assert!(
        !text.contains(&env.host_name("nothere")),
        "the host pod names the foreign Secret: {text}"
    );
    let volume = spec["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == "s")
        .unwrap();
    assert_eq!(volume["emptyDir"], json!({}), "mounts still resolve");

    let waiting = pod_with(
        "waiting",
        json!({"volumes": [{"name": "s", "secret": {"secretName": "later"}}]}),
    );
    env.virt_api::<Pod>().create(&pp, &waiting).await.unwrap();
    eventually("the pod told it waits for Secret later", || async {
        reasons(&env, "waiting")
            .await
            .contains(&"WaitingForReference".to_string())
            .then_some(())
    })
    .await;
    assert!(no_host_pod(&env, "waiting").await);
    env.virt_api::<Secret>()
        .create(&pp, &secret("later"))
        .await
        .unwrap();
    let started = eventually("the pod on the host once its Secret is", || async {
        get(&env.host_api::<Pod>(), &env.host_name("waiting")).await
    })
    .await;
    let copy = get(&env.host_api::<Secret>(), &env.host_name("later"))
        .await
        .expect("the Secret's own copy");
    assert_eq!(
        copy.labels().get(vcsync_translators::MANAGED_BY_LABEL),
        Some(&env.instance),
        "the pod names this cluster's copy"
    );
    let volumes = serde_json::to_value(started.spec.unwrap().volumes).unwrap();
    assert_eq!(volumes[0]["secret"]["secretName"], env.host_name("later"));
}

/// An Ingress's TLS entries name only this cluster's own Secret copies: one naming a Secret
/// whose host name a foreign object holds loses its Secret on the host (the host's ingress
/// controller serves its default certificate, never the foreign one); one naming the tenant's
/// own synced Secret keeps it.
#[tokio::test]
async fn an_ingress_never_names_a_foreign_tls_secret() {
    let mut env = Env::new().await;
    foreign(&env, "platform-cert", platform_secret()).await;
    env.start_syncer("sync:\n  ingresses:\n    enabled: true\n  secrets:\n    all: true\n")
        .await;
    let pp = PostParams::default();
    for name in ["platform-cert", "own-cert"] {
        env.virt_api::<Secret>().create(&pp, &secret(name)).await.unwrap();
    }
    let ingress: k8s_openapi::api::networking::v1::Ingress = serde_json::from_value(json!({
        "metadata": {"name": "web"},
        "spec": {"defaultBackend": {"service": {"name": "web", "port": {"number": 80}}}, "tls": [
            {"hosts": ["admin.example.com"], "secretName": "platform-cert"},
            {"hosts": ["shop.example.com"], "secretName": "own-cert"}
        ]}
    }))
    .unwrap();
    env.virt_api::<k8s_openapi::api::networking::v1::Ingress>()
        .create(&pp, &ingress)
        .await
        .unwrap();
    let own = env.host_name("own-cert");
    let host = eventually("the host Ingress naming the tenant's own Secret", || async {
        let host = get(
            &env.host_api::<k8s_openapi::api::networking::v1::Ingress>(),
            &env.host_name("web"),
        )
        .await?;
        let tls = host.spec.clone()?.tls?;
        (tls[1].secret_name.as_deref() == Some(own.as_str())).then_some(tls)
    })
    .await;
    assert_eq!(host[0].secret_name, None, "the foreign Secret is never named");
    assert_eq!(host[0].hosts, Some(vec!["admin.example.com".to_string()]));
}
