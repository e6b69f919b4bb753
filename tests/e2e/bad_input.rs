//! Bad input: objects the host refuses after translation, and names at their maximum lengths.
//! The syncer says why on the virtual object, keeps syncing everything else, retries with
//! backoff, and loses nothing.

use k8s_openapi::api::core::v1::{ConfigMap, Event, Namespace, Service};
use kube::{
    Api,
    api::{ObjectMeta, PostParams},
};
use serde_json::json;
use vcsync_apiserver::{Fault, Verb};
use vcsync_translators::{OBJECT_NAME_ANNOTATION, OBJECT_NAMESPACE_ANNOTATION};

use crate::{
    data_sync::config_map,
    env::{Env, eventually, get},
};

#[tokio::test]
async fn an_object_the_host_denies_gets_a_warning_is_retried_and_syncs_once_allowed() {
    let mut env = Env::new().await;
    let Some((host, _)) = env.embedded() else {
        eprintln!("skipped: playing a denying policy engine needs the embedded host's fault injection");
        return;
    };
    let denial = host.faults().add(
        Fault::on(Verb::Create, "configmaps")
            .name(&env.host_name("blocked"))
            .denied("config maps named blocked are not allowed"),
    );
    env.start_syncer("sync:\n  configMaps: {all: true}\n").await;
    let cms = env.virt_api::<ConfigMap>();
    for name in ["blocked", "fine"] {
        cms.create(&PostParams::default(), &config_map(name, &[("k", "v")]))
            .await
            .unwrap();
    }

    let warning = eventually("a Warning event on the denied virtual object", || async {
        let events = env.virt_api::<Event>().list(&Default::default()).await.unwrap();
        events.items.into_iter().find(|e| {
            e.reason.as_deref() == Some("SyncFailed") && e.involved_object.name.as_deref() == Some("blocked")
        })
    })
    .await;
    assert_eq!(warning.type_.as_deref(), Some("Warning"));
    assert!(
        warning.message.unwrap_or_default().contains("denied the request"),
        "the event carries the host's reason"
    );
    eventually("the other object syncs meanwhile", || async {
        get(&env.host_api::<ConfigMap>(), &env.host_name("fine")).await
    })
    .await;
    eventually("the denied create is retried", || async {
        (denial.fired() >= 2).then_some(())
    })
    .await;

    denial.remove();
    eventually("synced once the host allows it", || async {
        get(&env.host_api::<ConfigMap>(), &env.host_name("blocked")).await
    })
    .await;
}

/// The host copy of the virtual object `namespace/name`, found by its annotations (its name may
/// be hashed), in any host namespace.
async fn host_copy<K>(env: &Env, namespace: &str, name: &str) -> Option<K>
where
    K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug,
    K::DynamicType: Default,
{
    let all: Api<K> = Api::all(env.host.clone());
    let list = all.list(&Default::default()).await.ok()?;
    list.items.into_iter().find(|o| {
        let annotations = o.meta().annotations.clone().unwrap_or_default();
        annotations.get(OBJECT_NAME_ANNOTATION).map(String::as_str) == Some(name)
            && annotations.get(OBJECT_NAMESPACE_ANNOTATION).map(String::as_str) == Some(namespace)
    })
}

#[tokio::test]
async fn names_at_their_maximum_lengths_sync_under_valid_host_names() {
    let mut env = Env::new().await;
    // A 63-character namespace (the longest label), a 253-character config map name (the
    // longest subdomain) and a 63-character service name.
    let namespace = format!("ns-{}", "n".repeat(58) + "-z");
    assert_eq!(namespace.len(), 63);
    let cm_name = format!("{}.{}", "c".repeat(126), "d".repeat(126));
    assert_eq!(cm_name.len(), 253);
    let svc_name = format!("s{}", "v".repeat(61) + "e");
    assert_eq!(svc_name.len(), 63);

    Api::<Namespace>::all(env.virt.clone())
        .create(
            &PostParams::default(),
            &Namespace {
                metadata: ObjectMeta {
                    name: Some(namespace.clone()),
                    ..Default::default()
                },
                ..Default::default()
            },
        )
        .await
        .unwrap();
    env.start_syncer("sync:\n  configMaps: {all: true}\n").await;
    Api::<ConfigMap>::namespaced(env.virt.clone(), &namespace)
        .create(&PostParams::default(), &config_map(&cm_name, &[("k", "v")]))
        .await
        .unwrap();
    let service: Service = serde_json::from_value(json!({
        "metadata": {"name": svc_name},
        "spec": {"ports": [{"port": 80}]}
    }))
    .unwrap();
    Api::<Service>::namespaced(env.virt.clone(), &namespace)
        .create(&PostParams::default(), &service)
        .await
        .unwrap();

    let cm = eventually("host copy of the longest config map name", || async {
        host_copy::<ConfigMap>(&env, &namespace, &cm_name).await
    })
    .await;
    let host_cm_name = cm.metadata.name.unwrap();
    assert!(host_cm_name.len() <= 253, "{host_cm_name}");
    assert_eq!(cm.data.unwrap()["k"], "v");
    let svc = eventually("host copy of the longest service name", || async {
        host_copy::<Service>(&env, &namespace, &svc_name).await
    })
    .await;
    let host_svc_name = svc.metadata.name.unwrap();
    assert!(
        host_svc_name.len() <= 63,
        "a service name is a DNS label: {host_svc_name}"
    );
    // The virtual service gets the host's cluster IP back: the round trip works at that length.
    eventually("virtual service with the host's cluster IP", || async {
        get(
            &Api::<Service>::namespaced(env.virt.clone(), &namespace),
            &svc_name,
        )
        .await
        .filter(|s| {
            s.spec.as_ref().and_then(|s| s.cluster_ip.as_ref())
                == svc.spec.as_ref().and_then(|s| s.cluster_ip.as_ref())
        })
    })
    .await;
}
