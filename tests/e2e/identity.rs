//! A virtual cluster that comes back empty (its datastore lost, as an emptyDir is on a pod
//! restart) never makes the syncer wipe the tenant's host objects: copies made for the
//! earlier cluster are kept and reported until an operator adopts or prunes them.

use std::{collections::BTreeMap, time::Duration};

use k8s_openapi::api::core::v1::{ConfigMap, Event, Namespace, PersistentVolumeClaim, Pod, Secret, Service};
use kube::{
    Api, Resource, ResourceExt,
    api::{DeleteParams, ListParams, PostParams},
};
use serde::de::DeserializeOwned;
use serde_json::json;
use vcsync_translators::{CLUSTER_UID_ANNOTATION, MANAGED_BY_LABEL};

use crate::{
    data_sync::{config_map, pod, secret},
    env::{Env, eventually, get},
    ops::{Syncer, http_get, sample_sum, syncer_requests_at},
};

/// `kind/name -> uid` of this instance's host objects of kind `K`.
async fn owned<K>(env: &Env) -> BTreeMap<String, String>
where
    K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + DeserializeOwned
        + std::fmt::Debug,
{
    let api: Api<K> = Api::namespaced(env.host.clone(), &env.host_ns);
    let selector = format!("{MANAGED_BY_LABEL}={}", env.instance);
    api.list(&ListParams::default().labels(&selector))
        .await
        .unwrap()
        .items
        .iter()
        .map(|o| (format!("{}/{}", K::kind(&()), o.name_any()), o.uid().unwrap()))
        .collect()
}

/// Every host object of the kinds the tenant's workload left there.
pub(crate) async fn host_objects(env: &Env) -> BTreeMap<String, String> {
    let mut all = owned::<Pod>(env).await;
    all.extend(owned::<ConfigMap>(env).await);
    all.extend(owned::<Secret>(env).await);
    all.extend(owned::<PersistentVolumeClaim>(env).await);
    all.extend(owned::<Service>(env).await);
    all
}

fn pvc(name: &str) -> PersistentVolumeClaim {
    serde_json::from_value(json!({
        "metadata": {"name": name},
        "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}
    }))
    .unwrap()
}

fn service(name: &str) -> Service {
    serde_json::from_value(json!({
        "metadata": {"name": name},
        "spec": {"selector": {"app": "web"}, "ports": [{"port": 80}]}
    }))
    .unwrap()
}

/// ConfigMap `settings`, Secret `password` and pod `pod` using both, in the virtual cluster.
async fn pod_with_data(env: &Env, pod_name: &str) {
    let pp = PostParams::default();
    env.virt_api::<ConfigMap>()
        .create(&pp, &config_map("settings", &[("greeting", "hello")]))
        .await
        .unwrap();
    env.virt_api::<Secret>()
        .create(&pp, &secret("password"))
        .await
        .unwrap();
    env.virt_api::<Pod>()
        .create(&pp, &pod(pod_name, "settings", "password"))
        .await
        .unwrap();
}

/// The tenant's workload: a pod with a ConfigMap and a Secret, a claim and a service, synced.
async fn workload(env: &Env) -> BTreeMap<String, String> {
    pod_with_data(env, "web").await;
    let pp = PostParams::default();
    env.virt_api::<PersistentVolumeClaim>()
        .create(&pp, &pvc("data"))
        .await
        .unwrap();
    env.virt_api::<Service>()
        .create(&pp, &service("web"))
        .await
        .unwrap();
    eventually("the workload on the host", || async {
        let objects = host_objects(env).await;
        // Pod, ConfigMap, Secret, token Secret, claim, service (and, where the virtual
        // cluster publishes one, the root CA the pod's token volume projects).
        let parts = [
            "Pod/web",
            "ConfigMap/settings",
            "Secret/password",
            ".sa-token",
            "PersistentVolumeClaim/data",
            "Service/web",
        ];
        let all = parts
            .iter()
            .all(|part| objects.keys().any(|key| key.contains(part)));
        all.then_some(objects)
    })
    .await
}

/// The identity of the virtual cluster: its `kube-system` namespace's UID.
pub(crate) async fn virtual_cluster_uid(env: &Env) -> Option<String> {
    Api::<Namespace>::all(env.virt.clone())
        .get("kube-system")
        .await
        .unwrap()
        .uid()
}

/// The host deletes of the syncer at `address` since it started.
async fn host_deletes(address: &str) -> u64 {
    let (host, _) = syncer_requests_at(address).await;
    host.iter()
        .filter(|(verb, _, _)| matches!(*verb, "delete" | "deletecollection"))
        .map(|(_, _, n)| n)
        .sum()
}

pub(crate) async fn start(env: &Env, dir: &std::path::Path, extra: &str) -> (Syncer, String) {
    let mut syncer = Syncer::start(env, dir, env.host_kubeconfig(), extra);
    let address = syncer.ops_address().await;
    eventually("/readyz answers 200", || async {
        (http_get(&address, "/readyz").await.0 == 200).then_some(())
    })
    .await;
    (syncer, address)
}

/// The tenant's workload synced by a running syncer, in an environment whose virtual cluster
/// can be replaced: the environment, the syncer's directory, the syncer and the host objects
/// (None against clusters started elsewhere, whose virtual cluster cannot be replaced here).
pub(crate) async fn synced_workload() -> Option<(Env, tempfile::TempDir, Syncer, BTreeMap<String, String>)> {
    let env = Env::new().await;
    if !env.can_replace_virtual_cluster() {
        eprintln!("skipped: replacing the virtual cluster needs clusters of the run's own");
        return None;
    }
    let dir = tempfile::tempdir().unwrap();
    let (syncer, _) = start(&env, dir.path(), "").await;
    let before = workload(&env).await;
    Some((env, dir, syncer, before))
}

/// [`synced_workload`], then the syncer stopped and the virtual server replaced by an empty
/// one.
async fn workload_of_a_lost_cluster() -> Option<(Env, tempfile::TempDir, BTreeMap<String, String>)> {
    let (mut env, dir, mut syncer, before) = synced_workload().await?;
    syncer.terminate().await;
    env.replace_virtual_server_empty().await;
    Some((env, dir, before))
}

/// Lets every controller reconcile every key of a fresh start.
async fn settle() {
    tokio::time::sleep(Duration::from_secs(3)).await;
}

#[tokio::test]
async fn a_virtual_cluster_restarted_empty_deletes_nothing_on_the_host_and_says_so() {
    let Some((mut env, dir, mut syncer, before)) = synced_workload().await else {
        return;
    };
    assert!(
        before.keys().any(|k| k.starts_with("PersistentVolumeClaim/")),
        "{before:?}"
    );
    syncer.terminate().await;

    env.replace_virtual_server_empty().await;
    let (mut syncer, address) = start(&env, dir.path(), "").await;
    settle().await;
    assert_eq!(
        host_objects(&env).await,
        before,
        "every host object is still there, the very same"
    );
    assert_eq!(host_deletes(&address).await, 0, "no delete reached the host");

    let (code, readyz) = http_get(&address, "/readyz").await;
    assert_eq!(code, 200, "tenants keep their cluster: {readyz}");
    assert!(
        readyz.contains("warning: identity: the virtual cluster was replaced"),
        "{readyz}"
    );
    assert!(
        readyz.contains("host objects made for an earlier virtual cluster are left untouched"),
        "{readyz}"
    );
    let metrics = http_get(&address, "/metrics").await.1;
    assert_eq!(sample_sum(&metrics, "vcsync_cluster_replaced", &[]), 1.0);
    assert!(sample_sum(&metrics, "vcsync_earlier_cluster_objects", &[]) >= 5.0);
    let events: Api<Event> = Api::namespaced(env.host.clone(), &env.syncer_ns);
    eventually("a host Event on the identity record", || async {
        let listed = events.list(&ListParams::default()).await.unwrap().items;
        listed
            .iter()
            .any(|e| e.reason.as_deref() == Some("VirtualClusterReplaced"))
            .then_some(())
    })
    .await;

    // The new cluster is synced as usual, its own deletes included.
    let pp = PostParams::default();
    env.virt_api::<ConfigMap>()
        .create(&pp, &config_map("fresh", &[("a", "b")]))
        .await
        .unwrap();
    // Its pod's Secret too: a pod whose Secret is missing waits off the host.
    env.virt_api::<Secret>()
        .create(&pp, &secret("fresh"))
        .await
        .unwrap();
    env.virt_api::<Pod>()
        .create(&pp, &pod("fresh", "fresh", "fresh"))
        .await
        .unwrap();
    let fresh = env.host_name("fresh");
    let copy = eventually("the new cluster's pod on the host", || async {
        get(&env.host_api::<Pod>(), &fresh).await
    })
    .await;
    assert_eq!(
        copy.annotations().get(CLUSTER_UID_ANNOTATION),
        virtual_cluster_uid(&env).await.as_ref(),
        "stamped with the new cluster's identity"
    );
    env.virt_api::<Pod>()
        .delete("fresh", &DeleteParams::default().grace_period(0))
        .await
        .unwrap();
    eventually("the new cluster's pod deleted on the host", || async {
        get(&env.host_api::<Pod>(), &fresh).await.is_none().then_some(())
    })
    .await;

    // A namesake of an earlier copy does not overwrite it: the tenant is told why.
    env.virt_api::<ConfigMap>()
        .create(&pp, &config_map("settings", &[("greeting", "bonjour")]))
        .await
        .unwrap();
    let virtual_events: Api<Event> = Api::namespaced(env.virt.clone(), &env.virt_ns);
    eventually("an EarlierClusterCopy event on the namesake", || async {
        let listed = virtual_events.list(&ListParams::default()).await.unwrap().items;
        listed
            .iter()
            .any(|e| e.reason.as_deref() == Some("EarlierClusterCopy"))
            .then_some(())
    })
    .await;
    let kept = get(&env.host_api::<ConfigMap>(), &env.host_name("settings"))
        .await
        .unwrap();
    assert_eq!(kept.data.unwrap()["greeting"], "hello", "untouched");
    syncer.terminate().await;
}

#[tokio::test]
async fn adopt_previous_relinks_namesakes_and_prune_previous_deletes_the_rest() {
    let Some((env, dir, before)) = workload_of_a_lost_cluster().await else {
        return;
    };

    // Adopting with no namesake yet re-links nothing and writes nothing but the record.
    let adopt = "safety:\n  earlierCopies:\n    adopt: true\n";
    let (mut syncer, address) = start(&env, dir.path(), adopt).await;
    settle().await;
    // Events are reports (the replacement's), not the tenant's objects. In the per-namespace
    // mapping the host namespaces of the new cluster's namespaces (default, kube-system, ...)
    // are namesakes at once and re-linked by an update each (a second one when a reconcile
    // raced with the cache and met a conflict).
    let (host, _) = syncer_requests_at(&address).await;
    for (verb, resource, n) in host.iter() {
        let expected = match (verb, resource) {
            (_, "events") | ("get" | "list" | "watch", _) => continue,
            ("update", "configmaps") => n == 1,
            ("update", "namespaces") => env.mapping.is_per_namespace(),
            _ => n == 0,
        };
        assert!(
            expected,
            "{verb} {resource} x{n}: only the identity record and re-linked namesakes"
        );
    }
    assert_eq!(host_objects(&env).await, before);

    // The tenant (or GitOps) recreates the config map and secret and a pod using them: their
    // host copies are re-linked in place.
    pod_with_data(&env, "web-2").await;
    let now = virtual_cluster_uid(&env).await;
    let settings = env.host_name("settings");
    let relinked = eventually("the earlier copy re-linked", || async {
        let copy = get(&env.host_api::<ConfigMap>(), &settings).await?;
        (copy.annotations().get(CLUSTER_UID_ANNOTATION) == now.as_ref()).then_some(copy)
    })
    .await;
    assert_eq!(
        relinked.uid(),
        before.get(&format!("ConfigMap/{settings}")).cloned(),
        "updated in place, not recreated"
    );
    let web = env.host_name("web");
    assert_eq!(
        get(&env.host_api::<Pod>(), &web).await.and_then(|p| p.uid()),
        before.get(&format!("Pod/{web}")).cloned(),
        "the earlier pod without a namesake is kept"
    );
    syncer.terminate().await;

    // Pruning deletes the earlier copies that were not re-linked, and only those.
    let prune = "safety:\n  earlierCopies:\n    prune: true\n";
    let (mut syncer, address) = start(&env, dir.path(), prune).await;
    let left = eventually("the earlier copies pruned", || async {
        let left = host_objects(&env).await;
        let gone = [
            format!("Pod/{web}"),
            format!("PersistentVolumeClaim/{}", env.host_name("data")),
        ];
        gone.iter().all(|k| !left.contains_key(k)).then_some(left)
    })
    .await;
    assert_eq!(
        left.get(&format!("ConfigMap/{settings}")),
        before.get(&format!("ConfigMap/{settings}")),
        "the re-linked copy stays"
    );
    eventually("no earlier copies reported any more", || async {
        let readyz = http_get(&address, "/readyz").await.1;
        (!readyz.contains("earlier virtual cluster are left untouched")).then_some(())
    })
    .await;
    syncer.terminate().await;
}

#[tokio::test]
async fn restore_from_host_recreates_config_maps_secrets_and_claims_and_relinks_their_copies() {
    let Some((env, dir, before)) = workload_of_a_lost_cluster().await else {
        return;
    };

    let restore = "safety:\n  earlierCopies:\n    restore: true\n";
    let (mut syncer, _) = start(&env, dir.path(), restore).await;
    let settings = eventually("the config map restored", || async {
        get(&env.virt_api::<ConfigMap>(), "settings").await
    })
    .await;
    assert_eq!(settings.data.as_ref().unwrap()["greeting"], "hello");
    assert_eq!(
        settings.labels().get("app").map(String::as_str),
        Some("web"),
        "the tenant's labels come back"
    );
    assert!(
        settings.labels().keys().all(|k| !k.starts_with("vcsync.dev/")),
        "vcsync's own do not"
    );
    let password = eventually("the secret restored", || async {
        get(&env.virt_api::<Secret>(), "password").await
    })
    .await;
    assert!(password.data.unwrap().contains_key("password"));
    let claim = eventually("the claim restored", || async {
        get(&env.virt_api::<PersistentVolumeClaim>(), "data").await
    })
    .await;
    assert_eq!(
        claim.spec.unwrap().resources.unwrap().requests.unwrap()["storage"].0,
        "1Gi"
    );
    // Pods and services are not restored (their controllers and manifests bring them back).
    assert!(get(&env.virt_api::<Pod>(), "web").await.is_none());

    // The claim's copy is re-linked in place: same host object, the new cluster's identity.
    let now = virtual_cluster_uid(&env).await;
    let data = env.host_name("data");
    let relinked = eventually("the claim's copy re-linked", || async {
        let copy = get(&env.host_api::<PersistentVolumeClaim>(), &data).await?;
        (copy.annotations().get(CLUSTER_UID_ANNOTATION) == now.as_ref()).then_some(copy)
    })
    .await;
    assert_eq!(
        relinked.uid(),
        before.get(&format!("PersistentVolumeClaim/{data}")).cloned()
    );
    assert_eq!(
        host_objects(&env).await,
        before,
        "nothing deleted or recreated on the host"
    );
    syncer.terminate().await;
}
