//! The switchable kinds that go down (ServiceAccounts, PVCs, ...).

use k8s_openapi::api::core::v1::{PersistentVolumeClaim, ServiceAccount};
use kube::api::{Patch, PatchParams, PostParams};
use serde_json::json;

use crate::env::{Env, eventually, get};

#[tokio::test]
async fn pvc_goes_down_and_its_bound_status_comes_up() {
    let mut env = Env::new().await;
    env.start_syncer("").await;
    let pvc: PersistentVolumeClaim = serde_json::from_value(json!({"metadata": {"name": "data"},
        "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}}))
    .unwrap();
    env.virt_api::<PersistentVolumeClaim>()
        .create(&PostParams::default(), &pvc)
        .await
        .unwrap();
    let host_name = env.host_name("data");
    eventually("host claim", || async {
        get(&env.host_api::<PersistentVolumeClaim>(), &host_name).await
    })
    .await;

    // What the host's volume binder would do.
    let bound = Patch::Merge(json!({"status": {"phase": "Bound", "capacity": {"storage": "1Gi"}}}));
    env.host_api::<PersistentVolumeClaim>()
        .patch_status(&host_name, &PatchParams::default(), &bound)
        .await
        .unwrap();
    eventually("bound status in the virtual cluster", || async {
        get(&env.virt_api::<PersistentVolumeClaim>(), "data")
            .await
            .filter(|pvc| pvc.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Bound"))
    })
    .await;
}

#[tokio::test]
async fn service_accounts_sync_only_when_switched_on() {
    let mut env = Env::new().await;
    env.start_syncer("sync:\n  serviceAccounts:\n    enabled: true\n")
        .await;
    let sa: ServiceAccount = serde_json::from_value(json!({"metadata": {"name": "builder"}})).unwrap();
    env.virt_api::<ServiceAccount>()
        .create(&PostParams::default(), &sa)
        .await
        .unwrap();
    let host = eventually("host service account", || async {
        get(&env.host_api::<ServiceAccount>(), &env.host_name("builder")).await
    })
    .await;
    assert_eq!(host.automount_service_account_token, Some(false));
}

/// Create, update, host drift and delete of one namespaced kind: the update (a JSON merge
/// patch of the virtual object) must reach the host (`updated` says so), a conflicting edit
/// of the host copy (`drift`) must be reverted, and the virtual delete must remove the host copy.
async fn lifecycle<K>(
    env: &Env,
    object: serde_json::Value,
    update: serde_json::Value,
    drift: serde_json::Value,
    updated: impl Fn(&K) -> bool,
) where
    K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
        + Clone
        + serde::de::DeserializeOwned
        + serde::Serialize
        + std::fmt::Debug,
{
    let name = object["metadata"]["name"].as_str().unwrap().to_string();
    let kind = K::kind(&());
    let (virt, host) = (env.virt_api::<K>(), env.host_api::<K>());
    let host_name = env.host_name(&name);
    virt.create(&PostParams::default(), &serde_json::from_value(object).unwrap())
        .await
        .unwrap();
    eventually(&format!("{kind} on the host"), || async {
        get(&host, &host_name).await
    })
    .await;

    virt.patch(&name, &PatchParams::default(), &Patch::Merge(update))
        .await
        .unwrap();
    eventually(&format!("{kind} update on the host"), || async {
        get(&host, &host_name).await.filter(|o| updated(o))
    })
    .await;

    host.patch(&host_name, &PatchParams::default(), &Patch::Merge(drift))
        .await
        .unwrap();
    eventually(&format!("{kind} drift reverted"), || async {
        get(&host, &host_name).await.filter(|o| updated(o))
    })
    .await;

    virt.delete(&name, &Default::default()).await.unwrap();
    eventually(&format!("{kind} removed from the host"), || async {
        get(&host, &host_name).await.is_none().then_some(())
    })
    .await;
}

const ALL_KINDS: &str = "sync:\n  serviceAccounts:\n    enabled: true\n  ingresses:\n    enabled: true\n  \
                         networkPolicies:\n    enabled: true\n  podDisruptionBudgets:\n    enabled: true\n  \
                         priorityClasses:\n    enabled: true\n  configMaps:\n    all: true\n  \
                         secrets:\n    all: true\n  services:\n    allowedEndpointRanges: [192.0.2.0/24]\n";

#[tokio::test]
async fn every_namespaced_kind_goes_through_create_update_drift_and_delete() {
    let mut env = Env::new().await;
    env.start_syncer(ALL_KINDS).await;
    lifecycle::<k8s_openapi::api::core::v1::Service>(
        &env,
        json!({"metadata": {"name": "svc"}, "spec": {"selector": {"app": "a"}, "ports": [{"port": 80}]}}),
        json!({"spec": {"ports": [{"port": 81}]}}),
        json!({"spec": {"ports": [{"port": 82}]}}),
        |s| s.spec.as_ref().unwrap().ports.as_ref().unwrap()[0].port == 81,
    )
    .await;
    lifecycle::<k8s_openapi::api::core::v1::ConfigMap>(
        &env,
        json!({"metadata": {"name": "cm"}, "data": {"k": "1"}}),
        json!({"data": {"k": "2"}}),
        json!({"data": {"k": "tampered"}}),
        |c| c.data.as_ref().unwrap()["k"] == "2",
    )
    .await;
    lifecycle::<k8s_openapi::api::core::v1::Secret>(
        &env,
        json!({"metadata": {"name": "sec"}, "stringData": {"k": "1"}}),
        json!({"stringData": {"k": "2"}}),
        json!({"stringData": {"k": "tampered"}}),
        |s| s.data.as_ref().unwrap()["k"].0 == b"2",
    )
    .await;
    // Endpoints are the tenant's only for a selector-less service.
    let external: k8s_openapi::api::core::v1::Service =
        serde_json::from_value(json!({"metadata": {"name": "ext"}, "spec": {"ports": [{"port": 5432}]}}))
            .unwrap();
    env.virt_api()
        .create(&PostParams::default(), &external)
        .await
        .unwrap();
    lifecycle::<k8s_openapi::api::core::v1::Endpoints>(
        &env,
        json!({"metadata": {"name": "ext"}, "subsets": [{"addresses": [{"ip": "192.0.2.1"}], "ports": [{"port": 5432}]}]}),
        json!({"subsets": [{"addresses": [{"ip": "192.0.2.2"}], "ports": [{"port": 5432}]}]}),
        json!({"subsets": [{"addresses": [{"ip": "192.0.2.99"}], "ports": [{"port": 5432}]}]}),
        |e| e.subsets.as_ref().unwrap()[0].addresses.as_ref().unwrap()[0].ip == "192.0.2.2",
    )
    .await;
    lifecycle::<ServiceAccount>(
        &env,
        json!({"metadata": {"name": "sa", "labels": {"v": "1"}}}),
        json!({"metadata": {"labels": {"v": "2"}}}),
        json!({"metadata": {"labels": {"v": "tampered"}}}),
        |s| s.metadata.labels.as_ref().unwrap()["v"] == "2",
    )
    .await;
    lifecycle::<PersistentVolumeClaim>(
        &env,
        json!({"metadata": {"name": "pvc"}, "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}}),
        json!({"spec": {"resources": {"requests": {"storage": "2Gi"}}}}),
        json!({"spec": {"resources": {"requests": {"storage": "5Gi"}}}}),
        |p| p.spec.as_ref().unwrap().resources.as_ref().unwrap().requests.as_ref().unwrap()["storage"].0 == "2Gi",
    )
    .await;
    let backend_name = env.host_name("svc");
    lifecycle::<k8s_openapi::api::networking::v1::Ingress>(
        &env,
        json!({"metadata": {"name": "ing"}, "spec": {"defaultBackend": {"service": {"name": "svc", "port": {"number": 80}}}}}),
        json!({"spec": {"defaultBackend": {"service": {"name": "svc", "port": {"number": 81}}}}}),
        json!({"spec": {"defaultBackend": {"service": {"name": "svc", "port": {"number": 99}}}}}),
        move |i| {
            let backend = i.spec.as_ref().unwrap().default_backend.as_ref().unwrap().service.as_ref().unwrap();
            backend.port.as_ref().unwrap().number == Some(81) && backend.name == backend_name
        },
    )
    .await;
    lifecycle::<k8s_openapi::api::networking::v1::NetworkPolicy>(
        &env,
        json!({"metadata": {"name": "np"}, "spec": {"podSelector": {"matchLabels": {"app": "a"}}, "policyTypes": ["Ingress"]}}),
        json!({"spec": {"podSelector": {"matchLabels": {"app": "b"}}}}),
        json!({"spec": {"podSelector": {"matchLabels": {"app": "tampered"}}}}),
        |n| n.spec.as_ref().unwrap().pod_selector.as_ref().unwrap().match_labels.as_ref().unwrap()["app"] == "b",
    )
    .await;
    lifecycle::<k8s_openapi::api::policy::v1::PodDisruptionBudget>(
        &env,
        json!({"metadata": {"name": "pdb"}, "spec": {"minAvailable": 1, "selector": {"matchLabels": {"app": "a"}}}}),
        json!({"spec": {"minAvailable": 2}}),
        json!({"spec": {"minAvailable": 9}}),
        |p| p.spec.as_ref().unwrap().min_available == Some(k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::Int(2)),
    )
    .await;
}

#[tokio::test]
async fn priority_classes_go_down_prefixed_capped_and_come_back_after_drift() {
    use k8s_openapi::api::scheduling::v1::PriorityClass;
    let mut env = Env::new().await;
    env.start_syncer(ALL_KINDS).await;
    let class: PriorityClass = serde_json::from_value(
        json!({"metadata": {"name": "urgent"}, "value": 2_000_000_000, "globalDefault": true}),
    )
    .unwrap();
    let (virt, host) = (
        kube::Api::<PriorityClass>::all(env.virt.clone()),
        kube::Api::<PriorityClass>::all(env.host.clone()),
    );
    virt.create(&PostParams::default(), &class).await.unwrap();
    let host_name = vcsync_translators::host_cluster_name(&env.instance, "urgent");
    let copy = eventually("priority class on the host", || async {
        get(&host, &host_name).await
    })
    .await;
    assert_eq!(copy.value, Some(1_000_000_000));
    assert_eq!(copy.global_default, Some(false));
    host.patch(
        &host_name,
        &PatchParams::default(),
        &Patch::Merge(json!({"description": "tampered"})),
    )
    .await
    .unwrap();
    eventually("drift reverted", || async {
        get(&host, &host_name).await.filter(|c| c.description.is_none())
    })
    .await;
    virt.delete("urgent", &Default::default()).await.unwrap();
    eventually("removed from the host", || async {
        get(&host, &host_name).await.is_none().then_some(())
    })
    .await;
}
