//! Restarting the syncer over an already-synced state writes nothing, also where a foreign
//! object holds a host name.

use k8s_openapi::api::core::v1::{ConfigMap, Pod, Secret};
use kube::{
    ResourceExt,
    api::{Patch, PatchParams, PostParams},
};
use serde_json::json;

use crate::{
    data_sync::{config_map, pod},
    env::{Env, eventually, get},
    pods::simple_pod,
    references::reasons,
};

#[tokio::test]
async fn restart_over_a_synced_state_makes_zero_writes() {
    let mut env = Env::new().await;
    env.start_syncer("").await;
    let pp = PostParams::default();
    for i in 0..20 {
        let name = format!("cfg-{i}");
        env.virt_api::<ConfigMap>()
            .create(&pp, &config_map(&name, &[("i", &i.to_string())]))
            .await
            .unwrap();
        env.virt_api::<Secret>()
            .create(
                &pp,
                &serde_json::from_value(json!({"metadata": {"name": format!("sec-{i}")}, "data": {}}))
                    .unwrap(),
            )
            .await
            .unwrap();
        env.virt_api::<Pod>()
            .create(&pp, &pod(&format!("pod-{i}"), &name, &format!("sec-{i}")))
            .await
            .unwrap();
    }
    eventually("all 40 objects on the host", || async {
        // Copies of the test's config maps only: not vcsync's identity record, nor the copy of
        // the namespace's root CA (a real cluster's pods project it).
        let cms = env
            .host_api::<ConfigMap>()
            .list(&Default::default())
            .await
            .unwrap()
            .items
            .iter()
            .filter(|c| {
                c.metadata
                    .annotations
                    .as_ref()
                    .and_then(|a| a.get(vcsync_translators::OBJECT_NAME_ANNOTATION))
                    .is_some_and(|name| name.starts_with("cfg-"))
            })
            .count();
        // Copies of the test's secrets only: not the pods' service-account token secrets.
        let secrets = env
            .host_api::<Secret>()
            .list(&Default::default())
            .await
            .unwrap()
            .items
            .iter()
            .filter(|s| {
                s.metadata
                    .annotations
                    .as_ref()
                    .and_then(|a| a.get(vcsync_translators::OBJECT_NAME_ANNOTATION))
                    .is_some_and(|name| name.starts_with("sec-"))
            })
            .count();
        (cms == 20 && secrets == 20).then_some(())
    })
    .await;
    // The pods sync too (token secrets, statuses): restart_counting waits until they are.
    let (host_restart, virt_restart) = env.restart_counting("").await;
    assert_eq!(
        host_restart.writes(),
        0,
        "host writes after restart: {host_restart:?}"
    );
    assert_eq!(
        virt_restart.writes(),
        0,
        "virtual writes after restart: {virt_restart:?}"
    );
    assert!(
        host_restart.get("list", "configmaps") >= 1,
        "the restarted syncer did not even list"
    );

    // And it is alive: a change still flows down.
    env.virt_api::<ConfigMap>()
        .patch(
            "cfg-3",
            &PatchParams::default(),
            &Patch::Merge(json!({"data": {"i": "changed"}})),
        )
        .await
        .unwrap();
    eventually("change after restart synced", || async {
        get(&env.host_api::<ConfigMap>(), &env.host_name("cfg-3"))
            .await
            .filter(|cm| cm.data.as_ref().unwrap()["i"] == "changed")
    })
    .await;
}

#[tokio::test]
async fn objects_deleted_while_the_syncer_was_down_are_cleaned_up_after_restart() {
    let mut env = Env::new().await;
    env.start_syncer("sync:\n  configMaps:\n    all: true\n").await;
    let cms = env.virt_api::<ConfigMap>();
    cms.create(&PostParams::default(), &config_map("gone-later", &[]))
        .await
        .unwrap();
    cms.create(&PostParams::default(), &config_map("stays", &[]))
        .await
        .unwrap();
    eventually("both on the host", || async {
        get(&env.host_api::<ConfigMap>(), &env.host_name("gone-later")).await?;
        get(&env.host_api::<ConfigMap>(), &env.host_name("stays")).await
    })
    .await;
    env.stop_syncer().await;
    cms.delete("gone-later", &Default::default()).await.unwrap();
    env.start_syncer("sync:\n  configMaps:\n    all: true\n").await;
    eventually("orphan removed after restart", || async {
        get(&env.host_api::<ConfigMap>(), &env.host_name("gone-later"))
            .await
            .is_none()
            .then_some(())
    })
    .await;
    assert!(
        get(&env.host_api::<ConfigMap>(), &env.host_name("stays"))
            .await
            .is_some()
    );
}

/// A host name a foreign object holds is met with a read, not with a create refused again at
/// every start: a restart over a collision writes nothing on the host, and the collision is
/// still reported.
#[tokio::test]
async fn restart_over_a_name_collision_writes_nothing() {
    let mut env = Env::new().await;
    let foreign = config_map(&env.host_name("clash"), &[("owner", "platform")]);
    env.host_api::<ConfigMap>()
        .create(&PostParams::default(), &foreign)
        .await
        .unwrap();
    let all = "sync:\n  configMaps:\n    all: true\n";
    env.start_syncer(all).await;
    env.virt_api::<ConfigMap>()
        .create(
            &PostParams::default(),
            &config_map("clash", &[("owner", "tenant")]),
        )
        .await
        .unwrap();
    eventually("the collision reported", || async {
        let reasons = reasons(&env, "clash").await;
        reasons.iter().any(|r| r == "HostNameCollision").then_some(())
    })
    .await;

    let (host_restart, _) = env.restart_counting(all).await;
    assert_eq!(
        host_restart.writes(),
        0,
        "host writes after restart: {host_restart:?}"
    );
    assert!(
        host_restart.get("get", "configmaps") >= 1,
        "the collision was looked at: {host_restart:?}"
    );
    let kept = get(&env.host_api::<ConfigMap>(), &env.host_name("clash"))
        .await
        .unwrap();
    assert_eq!(
        kept.data.unwrap()["owner"],
        "platform",
        "the foreign object untouched"
    );
}

/// A foreign host pod holds a virtual pod's host name: the virtual pod says why it is not run
/// (`PodScheduled` False, `HostNameCollision`), once, and a restart writes nothing to the host
/// and nothing to that status.
#[tokio::test]
async fn restart_over_a_pod_name_collision_writes_nothing_and_the_pod_says_why() {
    let mut env = Env::new().await;
    env.host_api::<Pod>()
        .create(&PostParams::default(), &simple_pod(&env.host_name("clash")))
        .await
        .unwrap();
    env.start_syncer("").await;
    env.virt_api::<Pod>()
        .create(&PostParams::default(), &simple_pod("clash"))
        .await
        .unwrap();
    let reported = eventually("the virtual pod says why it is not run", || async {
        let pod = get(&env.virt_api::<Pod>(), "clash").await?;
        let conditions = pod.status.as_ref()?.conditions.clone()?;
        let scheduled = conditions.into_iter().find(|c| c.type_ == "PodScheduled")?;
        (scheduled.reason.as_deref() == Some("HostNameCollision")).then_some(scheduled)
    })
    .await;
    assert_eq!(reported.status, "False");
    assert!(
        reported
            .message
            .as_deref()
            .unwrap_or_default()
            .contains(&env.host_name("clash")),
        "{reported:?}"
    );

    let (host_restart, virtual_restart) = env.restart_counting("").await;
    assert_eq!(
        host_restart.writes(),
        0,
        "host writes after restart: {host_restart:?}"
    );
    assert_eq!(
        virtual_restart.get("update", "pods/status"),
        0,
        "the status already said so: {virtual_restart:?}"
    );
    let foreign = get(&env.host_api::<Pod>(), &env.host_name("clash"))
        .await
        .unwrap();
    assert!(
        foreign
            .annotations()
            .get(vcsync_translators::OBJECT_UID_ANNOTATION)
            .is_none(),
        "the foreign pod untouched: {foreign:?}"
    );
}
