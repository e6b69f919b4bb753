//! The switchable kinds that go down (ServiceAccounts, PVCs, ...).

use k8s_openapi::api::{
    core::v1::{PersistentVolume, PersistentVolumeClaim, Service, ServiceAccount},
    scheduling::v1::PriorityClass,
    storage::v1::StorageClass,
};
use kube::{
    Api,
    api::{ListParams, Patch, PatchParams, PostParams},
};
use serde_json::json;
use vcsync_translators::MANAGED_BY_LABEL;

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
    let claim = eventually("host claim", || async {
        get(&env.host_api::<PersistentVolumeClaim>(), &host_name).await
    })
    .await;

    // What the host's volume binder does (none runs on a bare control plane, nor on the
    // embedded host): a volume for the claim, the claim bound to it, both Bound.
    let volume = bind_host_claim(&env, &claim, "1Gi").await;
    eventually("bound status in the virtual cluster", || async {
        get(&env.virt_api::<PersistentVolumeClaim>(), "data")
            .await
            .filter(|pvc| pvc.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Bound"))
    })
    .await;
    Api::<PersistentVolume>::all(env.host.clone())
        .delete(&volume, &Default::default())
        .await
        .unwrap();
}

/// Acts as the host's volume binder for host claim `claim`: a PersistentVolume of `size`
/// (`pvc-<claim's UID>`, as provisioners name them, reclaim policy Retain: nothing deletes
/// its storage) reserved for it, the claim bound to it, both Bound. Returns the volume's name
/// (cluster-scoped: the test deletes it).
async fn bind_host_claim(env: &Env, claim: &PersistentVolumeClaim, size: &str) -> String {
    let name = format!("pvc-{}", claim.metadata.uid.as_deref().unwrap());
    let spec = claim.spec.clone().unwrap_or_default();
    let volume: PersistentVolume = serde_json::from_value(json!({
        "metadata": {"name": name},
        "spec": {"capacity": {"storage": size}, "accessModes": spec.access_modes,
            "storageClassName": spec.storage_class_name.unwrap_or_default(),
            "persistentVolumeReclaimPolicy": "Retain", "hostPath": {"path": format!("/tmp/{name}")},
            "claimRef": {"apiVersion": "v1", "kind": "PersistentVolumeClaim", "namespace": env.host_ns,
                "name": claim.metadata.name, "uid": claim.metadata.uid}}}))
    .unwrap();
    let volumes = Api::<PersistentVolume>::all(env.host.clone());
    volumes.create(&PostParams::default(), &volume).await.unwrap();
    let params = PatchParams::default();
    let bound = Patch::Merge(json!({"status": {"phase": "Bound"}}));
    volumes.patch_status(&name, &params, &bound).await.unwrap();
    let claims = env.host_api::<PersistentVolumeClaim>();
    let claim_name = claim.metadata.name.as_deref().unwrap();
    let bind = Patch::Merge(
        json!({"metadata": {"annotations": {"pv.kubernetes.io/bind-completed": "yes"}},
        "spec": {"volumeName": name}}),
    );
    claims.patch(claim_name, &params, &bind).await.unwrap();
    let bound = Patch::Merge(
        json!({"status": {"phase": "Bound", "accessModes": spec.access_modes,
        "capacity": {"storage": size}}}),
    );
    claims.patch_status(claim_name, &params, &bound).await.unwrap();
    name
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
    create_down::<K>(env, object).await;
    update_drift_delete(env, &name, update, drift, updated).await;
}

/// Creates a namespaced virtual object; returns its host copy once there.
async fn create_down<K>(env: &Env, object: serde_json::Value) -> K
where
    K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
        + Clone
        + serde::de::DeserializeOwned
        + serde::Serialize
        + std::fmt::Debug,
{
    let name = object["metadata"]["name"].as_str().unwrap().to_string();
    let host_name = env.host_name(&name);
    env.virt_api::<K>()
        .create(&PostParams::default(), &serde_json::from_value(object).unwrap())
        .await
        .unwrap();
    eventually(&format!("{} on the host", K::kind(&())), || async {
        get(&env.host_api::<K>(), &host_name).await
    })
    .await
}

/// The rest of [`lifecycle`], once the object `name` is down.
async fn update_drift_delete<K>(
    env: &Env,
    name: &str,
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
    let kind = K::kind(&());
    let (virt, host) = (env.virt_api::<K>(), env.host_api::<K>());
    let host_name = env.host_name(name);
    // Refused (403) while the object is not yet in a state that allows the update: a claim
    // grows only while Bound, and a virtual cluster that runs a volume binder of its own (the
    // test pair's controller manager does; a deployed one does not) sets a claim whose volume
    // it does not know back to Pending now and then, until vcsync brings Bound up again.
    eventually(&format!("{kind} update accepted"), || async {
        match virt
            .patch(name, &PatchParams::default(), &Patch::Merge(update.clone()))
            .await
        {
            Ok(_) => Some(()),
            Err(kube::Error::Api(status)) if status.code == 403 => None,
            Err(err) => panic!("updating {kind} {name}: {err}"),
        }
    })
    .await;
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

    virt.delete(name, &Default::default()).await.unwrap();
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
    create_down::<Service>(
        &env,
        json!({"metadata": {"name": "svc"}, "spec": {"selector": {"app": "a"}, "ports": [{"port": 80}]}}),
    )
    .await;
    with_the_host_cluster_ip(&env, "svc").await;
    update_drift_delete::<Service>(
        &env,
        "svc",
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
    create_down::<Service>(
        &env,
        json!({"metadata": {"name": "ext"}, "spec": {"ports": [{"port": 5432}]}}),
    )
    .await;
    with_the_host_cluster_ip(&env, "ext").await;
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
    // Only a bound claim of a class that allows it may grow: a host class (mirrored to the
    // virtual cluster) that does, and the claim bound on the host.
    let class = expandable_storage_class(&env).await;
    let claim = create_down::<PersistentVolumeClaim>(
        &env,
        json!({"metadata": {"name": "pvc"}, "spec": {"accessModes": ["ReadWriteOnce"], "storageClassName": class,
            "resources": {"requests": {"storage": "1Gi"}}}}),
    )
    .await;
    let volume = bind_host_claim(&env, &claim, "1Gi").await;
    eventually("the virtual claim bound", || async {
        get(&env.virt_api::<PersistentVolumeClaim>(), "pvc")
            .await
            .filter(|pvc| pvc.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Bound"))
    })
    .await;
    update_drift_delete::<PersistentVolumeClaim>(
        &env,
        "pvc",
        json!({"spec": {"resources": {"requests": {"storage": "2Gi"}}}}),
        json!({"spec": {"resources": {"requests": {"storage": "5Gi"}}}}),
        |p| {
            p.spec
                .as_ref()
                .unwrap()
                .resources
                .as_ref()
                .unwrap()
                .requests
                .as_ref()
                .unwrap()["storage"]
                .0
                == "2Gi"
        },
    )
    .await;
    Api::<PersistentVolume>::all(env.host.clone())
        .delete(&volume, &Default::default())
        .await
        .unwrap();
    Api::<StorageClass>::all(env.host.clone())
        .delete(&class, &Default::default())
        .await
        .unwrap();
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
    delete_host_priority_classes(&env).await;
}

/// Waits until the virtual service `name` has its host copy's cluster IP (where the virtual API
/// server keeps cluster IPs immutable, it is recreated with it): edits go to that one.
async fn with_the_host_cluster_ip(env: &Env, name: &str) {
    let cluster_ip = |s: &Service| s.spec.as_ref().and_then(|s| s.cluster_ip.clone());
    eventually(
        &format!("the virtual service {name} with the host's cluster IP"),
        || async {
            let host = get(&env.host_api::<Service>(), &env.host_name(name)).await?;
            get(&env.virt_api::<Service>(), name)
                .await
                .filter(|s| cluster_ip(s).is_some() && cluster_ip(s) == cluster_ip(&host))
        },
    )
    .await;
}

/// A host storage class of the test's own that allows volume expansion, once mirrored to the
/// virtual cluster; returns its name (cluster-scoped: the test deletes it).
async fn expandable_storage_class(env: &Env) -> String {
    let name = format!("{}-expandable", env.instance);
    let class: StorageClass = serde_json::from_value(json!({"metadata": {"name": name},
        "provisioner": "e2e.vcsync.dev/none", "allowVolumeExpansion": true}))
    .unwrap();
    Api::<StorageClass>::all(env.host.clone())
        .create(&PostParams::default(), &class)
        .await
        .unwrap();
    eventually("the storage class mirrored", || async {
        get(&Api::<StorageClass>::all(env.virt.clone()), &name).await
    })
    .await;
    name
}

/// The highest priority a class of the tenant's may have, on the host as in Kubernetes (higher
/// values are reserved for system classes).
const MAX_TENANT_PRIORITY: i32 = 1_000_000_000;

#[tokio::test]
async fn priority_classes_go_down_prefixed_capped_and_come_back_after_drift() {
    let mut env = Env::new().await;
    env.start_syncer(ALL_KINDS).await;
    let (virt, host) = (
        Api::<PriorityClass>::all(env.virt.clone()),
        Api::<PriorityClass>::all(env.host.clone()),
    );
    // The highest value a tenant's own class may have (Kubernetes reserves higher ones), as the
    // default: it comes down as it is, never as the host's default. An earlier run's class
    // would be a second default.
    if virt.delete("urgent", &Default::default()).await.is_ok() {
        eventually("an earlier run's class gone", || async {
            get(&virt, "urgent").await.is_none().then_some(())
        })
        .await;
    }
    let class: PriorityClass = serde_json::from_value(
        json!({"metadata": {"name": "urgent"}, "value": MAX_TENANT_PRIORITY, "globalDefault": true}),
    )
    .unwrap();
    virt.create(&PostParams::default(), &class).await.unwrap();
    let host_name = vcsync_translators::host_cluster_name(&env.instance, "urgent");
    let copy = eventually("priority class on the host", || async {
        get(&host, &host_name).await
    })
    .await;
    assert_eq!(copy.value, Some(MAX_TENANT_PRIORITY));
    // Not the default (a real API server omits `false`).
    assert!(
        !copy.global_default.unwrap_or(false),
        "the host copy is a global default"
    );

    // A system class of the virtual cluster (its API server makes them) comes down capped.
    let critical: PriorityClass = serde_json::from_value(
        json!({"metadata": {"name": "system-cluster-critical"}, "value": 2_000_000_000}),
    )
    .unwrap();
    match virt.create(&PostParams::default(), &critical).await {
        Ok(_) => {}
        Err(kube::Error::Api(status)) if status.code == 409 => {}
        Err(err) => panic!("creating system-cluster-critical: {err}"),
    }
    let critical_copy = eventually("system-cluster-critical on the host", || async {
        get(
            &host,
            &vcsync_translators::host_cluster_name(&env.instance, "system-cluster-critical"),
        )
        .await
    })
    .await;
    assert_eq!(critical_copy.value, Some(MAX_TENANT_PRIORITY));

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
    delete_host_priority_classes(&env).await;
}

/// Deletes the test's host copies of priority classes (cluster-scoped: no namespace takes
/// them along; the virtual cluster's system classes outlive the test).
async fn delete_host_priority_classes(env: &Env) {
    let selector = ListParams::default().labels(&format!("{MANAGED_BY_LABEL}={}", env.instance));
    Api::<PriorityClass>::all(env.host.clone())
        .delete_collection(&Default::default(), &selector)
        .await
        .unwrap();
}
