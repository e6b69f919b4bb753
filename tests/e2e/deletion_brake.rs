//! The brake on mass deletion: host deletes whose reason no watch saw (objects found missing
//! after a restart, a datastore rolled back) are limited per minute; deletes the syncer saw
//! happen in the virtual cluster, however many, are not.

use std::time::Duration;

use k8s_openapi::api::core::v1::{ConfigMap, Namespace};
use kube::{
    Api,
    api::{DeleteParams, ListParams, ObjectMeta, PostParams},
};

use crate::{
    data_sync::config_map,
    env::{Env, eventually},
    ops::{Syncer, http_get, sample_sum},
};

/// Host copies of this instance's ConfigMaps of virtual namespace `ns`.
async fn host_copies(env: &Env, ns: &str) -> usize {
    let api: Api<ConfigMap> = Api::namespaced(env.host.clone(), &env.mapping.host_namespace(ns));
    let selector = format!("{}={}", vcsync_translators::MANAGED_BY_LABEL, env.instance);
    api.list(&ListParams::default().labels(&selector))
        .await
        .unwrap()
        .items
        .iter()
        // The test's own: a real cluster also has kube-root-ca.crt in every namespace.
        .filter(|c| {
            let annotations = c.metadata.annotations.as_ref();
            let virtual_of = |key| annotations.and_then(|a| a.get(key)).map(String::as_str);
            virtual_of(vcsync_translators::OBJECT_NAMESPACE_ANNOTATION) == Some(ns)
                && virtual_of(vcsync_translators::OBJECT_NAME_ANNOTATION)
                    .is_some_and(|n| n.starts_with("cfg-"))
        })
        .count()
}

async fn create_config_maps(api: &Api<ConfigMap>, prefix: &str, count: usize) {
    for i in 0..count {
        api.create(
            &PostParams::default(),
            &config_map(&format!("{prefix}-{i}"), &[("i", "x")]),
        )
        .await
        .unwrap();
    }
}

async fn delete_config_maps(api: &Api<ConfigMap>, prefix: &str, range: std::ops::Range<usize>) {
    for i in range {
        api.delete(&format!("{prefix}-{i}"), &DeleteParams::default())
            .await
            .unwrap();
    }
}

async fn copies_reach(env: &Env, ns: &str, count: usize, what: &str) {
    eventually(what, || async {
        (host_copies(env, ns).await == count).then_some(())
    })
    .await;
}

#[tokio::test]
async fn the_brake_holds_deletes_nobody_witnessed_and_lets_witnessed_ones_through() {
    let env = Env::new().await;
    let dir = tempfile::tempdir().unwrap();
    // At most 5 unwitnessed deletes a minute, whatever else this instance owns on the host.
    let extra = "sync:\n  configMaps:\n    all: true\nsafety:\n  deletionBrake:\n    minObjects: 5\n    maxPercent: 1\n";
    let mut syncer = Syncer::start(&env, dir.path(), env.host_kubeconfig(), extra);
    let api = env.virt_api::<ConfigMap>();
    create_config_maps(&api, "cfg", 40).await;
    copies_reach(&env, &env.virt_ns, 40, "40 host copies").await;

    // Seen deleted: all 20 go, although 20 is past the limit for unwitnessed deletes (5).
    delete_config_maps(&api, "cfg", 0..20).await;
    copies_reach(&env, &env.virt_ns, 20, "20 witnessed deletes on the host").await;
    syncer.terminate().await;

    // Deleted while the syncer was down: on restart only their absence is seen.
    delete_config_maps(&api, "cfg", 20..40).await;
    let mut syncer = Syncer::start(&env, dir.path(), env.host_kubeconfig(), extra);
    let address = syncer.ops_address().await;
    let readyz = eventually("the brake reported in /readyz", || async {
        let (code, body) = http_get(&address, "/readyz").await;
        (code == 200 && body.contains("warning: deletion brake: host deletes are paused")).then_some(body)
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    // At most 5 unwitnessed deletes happened, ours among them. (On a shared real cluster this
    // instance also owns copies of other tests' namespaces' kube-root-ca.crt, some of which
    // went while it was down: they count against the same limit.)
    let left = host_copies(&env, &env.virt_ns).await;
    assert!(
        (15..=20).contains(&left),
        "{left} of 20 left: at most 5 deletes, then none: {readyz}"
    );
    let metrics = http_get(&address, "/metrics").await.1;
    assert_eq!(sample_sum(&metrics, "vcsync_deletion_brake_engaged", &[]), 1.0);
    assert!(
        sample_sum(&metrics, "vcsync_host_deletes_held_total", &[]) >= 1.0,
        "{metrics}"
    );
    syncer.terminate().await;

    // The operator decides the deletion is wanted.
    let off = "sync:\n  configMaps:\n    all: true\nsafety:\n  deletionBrake:\n    enabled: false\n";
    let mut syncer = Syncer::start(&env, dir.path(), env.host_kubeconfig(), off);
    copies_reach(&env, &env.virt_ns, 0, "the rest deleted with the brake off").await;
    syncer.terminate().await;
}

#[tokio::test]
async fn deleting_a_namespace_of_hundreds_of_objects_is_not_held() {
    let env = Env::new().await;
    let dir = tempfile::tempdir().unwrap();
    let mut syncer = Syncer::start(
        &env,
        dir.path(),
        env.host_kubeconfig(),
        "sync:\n  configMaps:\n    all: true\n",
    );
    let ns = format!("bulk-{}", env.instance);
    let namespaces: Api<Namespace> = Api::all(env.virt.clone());
    namespaces
        .create(
            &PostParams::default(),
            &Namespace {
                metadata: ObjectMeta {
                    name: Some(ns.clone()),
                    ..ObjectMeta::default()
                },
                ..Namespace::default()
            },
        )
        .await
        .unwrap();
    let api: Api<ConfigMap> = Api::namespaced(env.virt.clone(), &ns);
    create_config_maps(&api, "cfg", 300).await;
    copies_reach(&env, &ns, 300, "300 host copies").await;

    namespaces.delete(&ns, &DeleteParams::default()).await.unwrap();
    copies_reach(&env, &ns, 0, "every host copy deleted with the namespace").await;
    let address = syncer.ops_address().await;
    let metrics = http_get(&address, "/metrics").await.1;
    assert_eq!(sample_sum(&metrics, "vcsync_deletion_brake_engaged", &[]), 0.0);
    syncer.terminate().await;
}
