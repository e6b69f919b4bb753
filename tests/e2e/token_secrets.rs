//! A pod's token Secret goes with its pod, also when the pod is deleted before the syncer's
//! cache has seen the Secret (on a real host an unscheduled pod is deleted at once).

use std::time::Duration;

use k8s_openapi::api::core::v1::{Pod, Secret};
use kube::api::{DeleteParams, ListParams, PostParams};

use crate::{
    env::{Env, eventually, get},
    pods::simple_pod,
};

/// Well under the 60 s of the sweep that removes token Secrets whose pods are gone.
const WITH_THEIR_PODS: Duration = Duration::from_secs(10);

/// The token Secrets of this test's host pods.
async fn token_secrets(env: &Env, names: &[String]) -> Vec<String> {
    let wanted: Vec<String> = names
        .iter()
        .map(|name| format!("{}.sa-token", env.host_name(name)))
        .collect();
    env.host_api::<Secret>()
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter_map(|secret| secret.metadata.name)
        .filter(|name| wanted.contains(name))
        .collect()
}

#[tokio::test]
async fn token_secrets_go_with_pods_deleted_right_after_they_reached_the_host() {
    let mut env = Env::new().await;
    env.start_syncer("").await;
    let names: Vec<String> = (0..20).map(|i| format!("brief-{i}")).collect();
    let pods = env.virt_api::<Pod>();
    for name in &names {
        pods.create(&PostParams::default(), &simple_pod(name))
            .await
            .unwrap();
    }
    // Each virtual pod is deleted at once as soon as its host pod exists: its token Secret
    // was written with the pod a moment before, and the cache may not hold it yet.
    let now = DeleteParams {
        grace_period_seconds: Some(0),
        ..DeleteParams::default()
    };
    for name in &names {
        eventually("the host pod", || async {
            get(&env.host_api::<Pod>(), &env.host_name(name)).await
        })
        .await;
        pods.delete(name, &now).await.unwrap();
    }
    let started = std::time::Instant::now();
    loop {
        let left = token_secrets(&env, &names).await;
        if left.is_empty() {
            break;
        }
        assert!(
            started.elapsed() < WITH_THEIR_PODS,
            "token Secrets outlived their pods: {left:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for name in &names {
        assert!(get(&env.host_api::<Pod>(), &env.host_name(name)).await.is_none());
    }
}

/// Pods deleted on both sides while the syncer was stopped leave token Secrets that no
/// reconcile will meet: the sweep after the next start removes them, even when the syncer never
/// runs a whole sweep interval (60 s) between restarts.
#[tokio::test]
async fn token_secrets_orphaned_while_stopped_go_soon_after_the_next_start() {
    let mut env = Env::new().await;
    env.start_syncer("").await;
    let names: Vec<String> = (0..5).map(|i| format!("left-{i}")).collect();
    for name in &names {
        env.virt_api::<Pod>()
            .create(&PostParams::default(), &simple_pod(name))
            .await
            .unwrap();
    }
    eventually("every token Secret written", || async {
        (token_secrets(&env, &names).await.len() == names.len()).then_some(())
    })
    .await;
    env.stop_syncer().await;
    let now = DeleteParams {
        grace_period_seconds: Some(0),
        ..DeleteParams::default()
    };
    for name in &names {
        env.virt_api::<Pod>().delete(name, &now).await.unwrap();
        env.host_api::<Pod>()
            .delete(&env.host_name(name), &now)
            .await
            .unwrap();
    }
    env.start_syncer("").await;
    eventually("no token Secret left", || async {
        token_secrets(&env, &names).await.is_empty().then_some(())
    })
    .await;
}
