//! A snapshot restored through the API into a virtual cluster that lost its datastore, on every
//! kind of control plane the suite runs against (the `local` driver's round trip is in
//! `cluster_snapshot`): every object comes back, and the syncer re-links the host copies made
//! for the snapshotted objects instead of keeping them aside or recreating them.

use k8s_openapi::api::core::v1::{ConfigMap, Pod};
use kube::ResourceExt;
use vcsync::cluster::{
    Progress,
    snapshot::{apply, take},
};
use vcsync_translators::{CLUSTER_UID_ANNOTATION, MANAGED_BY_LABEL, OBJECT_UID_ANNOTATION};

use crate::{
    env::{Env, eventually, get},
    identity::{host_objects, start, synced_workload, virtual_cluster_uid},
};

/// Whether every host copy of this instance (but the token Secrets, which are the syncer's own)
/// names the virtual cluster `uid`.
async fn all_stamped(env: &Env, uid: &str) -> bool {
    let selector = format!("{MANAGED_BY_LABEL}={}", env.instance);
    let params = kube::api::ListParams::default().labels(&selector);
    let pods = env.host_api::<Pod>().list(&params).await.unwrap().items;
    let maps = env.host_api::<ConfigMap>().list(&params).await.unwrap().items;
    let stamp = |annotations: &std::collections::BTreeMap<String, String>| {
        annotations.get(CLUSTER_UID_ANNOTATION).map(String::as_str) == Some(uid)
    };
    pods.iter().all(|p| stamp(p.annotations()))
        && maps
            .iter()
            .filter(|m| m.annotations().contains_key(CLUSTER_UID_ANNOTATION))
            .all(|m| stamp(m.annotations()))
}

#[tokio::test]
async fn a_restore_into_a_replaced_cluster_re_links_every_host_copy_and_recreates_none() {
    let Some((mut env, dir, mut syncer, before)) = synced_workload().await else {
        return;
    };
    // On real control planes, an aggregated API whose server does not exist: its group is
    // listed and does not answer, which must leave it out rather than fail the snapshot. It is
    // removed right after (the shared plane's namespace deletions would wait on it).
    let services = kube::core::ApiResource::from_gvk_with_plural(
        &kube::core::GroupVersionKind::gvk("apiregistration.k8s.io", "v1", "APIService"),
        "apiservices",
    );
    let api_services = kube::Api::<kube::api::DynamicObject>::all_with(env.virt.clone(), &services);
    if env.embedded().is_none() {
        let broken = serde_json::from_value(serde_json::json!({
            "apiVersion": "apiregistration.k8s.io/v1", "kind": "APIService",
            "metadata": {"name": "v1.broken.example.com"},
            "spec": {"group": "broken.example.com", "version": "v1", "groupPriorityMinimum": 100,
                "versionPriority": 100, "insecureSkipTLSVerify": true,
                "service": {"namespace": "default", "name": "nowhere", "port": 443}}
        }))
        .unwrap();
        api_services.create(&Default::default(), &broken).await.unwrap();
    }
    let progress = Progress::silent();
    let taken = take(&env.virt, "e2e", &progress).await;
    if env.embedded().is_none() {
        api_services
            .delete("v1.broken.example.com", &Default::default())
            .await
            .unwrap();
    }
    let (manifest, entries) = taken.unwrap();
    assert_eq!(manifest.objects, entries.len());
    assert!(manifest.counts.contains_key("v1/Pod"), "{:?}", manifest.counts);
    syncer.terminate().await;

    env.replace_virtual_server_empty().await;
    let new_cluster = virtual_cluster_uid(&env).await.unwrap();
    let (_syncer, _) = start(&env, dir.path(), "").await;
    let outcome = apply::restore(&env.virt, &entries, false, &progress)
        .await
        .unwrap();
    assert!(outcome.failed.is_empty(), "{:?}", outcome.failed);
    assert!(
        outcome
            .created
            .iter()
            .any(|o| o == &format!("Pod {}/web", env.virt_ns)),
        "{:?}",
        outcome.created
    );

    let pod = get(&env.virt_api::<Pod>(), "web")
        .await
        .expect("the restored pod");
    eventually("the host pod re-linked to the restored pod", || async {
        let host = get(&env.host_api::<Pod>(), &env.host_name("web")).await?;
        (host.annotations().get(OBJECT_UID_ANNOTATION) == pod.metadata.uid.as_ref()).then_some(())
    })
    .await;
    eventually("every host copy re-linked to the new cluster", || async {
        all_stamped(&env, &new_cluster).await.then_some(())
    })
    .await;
    let after = host_objects(&env).await;
    for (key, uid) in &before {
        if key.contains(".sa-token") {
            continue;
        }
        assert_eq!(after.get(key), Some(uid), "{key}: the host copy was replaced");
    }

    let again = apply::restore(&env.virt, &entries, true, &progress)
        .await
        .unwrap();
    assert!(again.created.is_empty(), "{:?}", again.created);
    assert!(again.failed.is_empty(), "{:?}", again.failed);
    let tenant = format!(" {}/", env.virt_ns);
    let differing: Vec<_> = again
        .differing
        .iter()
        .filter(|(object, _)| object.contains(&tenant))
        .collect();
    assert!(
        differing.is_empty(),
        "the tenant's objects as they were: {differing:?}"
    );
}
