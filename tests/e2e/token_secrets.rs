//! A pod's token Secret goes with its pod, also when the pod is deleted before the syncer's
//! cache has seen the Secret (on a real host an unscheduled pod is deleted at once).

use std::{
    collections::HashMap,
    path::Path,
    time::{Duration, Instant},
};

use k8s_openapi::api::core::v1::{Pod, Secret};
use kube::api::{DeleteParams, ListParams, PostParams};

use crate::{
    env::{Env, SyncerProcess, eventually, get},
    kubelet::HostKubelet,
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

/// Asserts that the syncer's log has the deletion of each pod's token Secret in a reconcile of
/// the pods syncer: it went with its pod, not at a sweep (which logs outside any reconcile).
async fn assert_deleted_by_reconciles(env: &Env, names: &[String]) {
    for name in names {
        let secret = format!("secret={}/{}.sa-token", env.host_ns, env.host_name(name));
        // The log is collected by a background thread: the line may come in just after the
        // Secret is gone.
        let line = eventually(&format!("the log line of {secret}'s deletion"), || async {
            env.syncer_lines()
                .into_iter()
                .find(|line| line.contains("deleted service account tokens") && line.ends_with(&secret))
        })
        .await;
        assert!(line.contains("reconcile{syncer=\"pods\""), "{secret}: {line}");
    }
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
    let started = Instant::now();
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
    // With their pods: the sweep, which would also remove them, had no part in it.
    assert_deleted_by_reconciles(&env, &names).await;
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
    // Each went in its pod's first reconcile after the start (neither pod there, the Secret
    // is), not at a sweep: these are younger than the age a sweep waits for.
    assert_deleted_by_reconciles(&env, &names).await;
}

/// How long a deleted test pod stays on the host once its delete reached it
/// (`terminationGracePeriodSeconds`, which a plain delete uses).
const GRACE_SECONDS: i64 = 2;

/// Start to start of the syncer while the pods go.
const RESTART_EVERY: Duration = Duration::from_secs(10);

/// From a syncer's start until its second sweep has run (10 s after the first, which runs at
/// the start), and a moment more: its next sweep is 60 s later.
const PAST_THE_SECOND_SWEEP: Duration = Duration::from_secs(12);

/// How long deleted pods and their token Secrets may take to go once checked for, after the
/// restarts and after the last batch's deletes: their grace period and slack for a loaded
/// machine. Both checks end at most 12 s + 2 × 20 s after the last start, well before its
/// sweep 60 s after the second (70 s after the start), the only one that could still help.
const GONE_WITHIN: Duration = Duration::from_secs(20);

/// A syncer of the test's own on `config`, started (its controllers run), to be killed rather
/// than stopped: [`Env::stop_syncer`] sends SIGTERM, after which it finishes what it does.
async fn start_killable_syncer(config: &Path) -> SyncerProcess {
    let mut syncer = SyncerProcess::spawn(config, "info");
    syncer.wait_for_log("controllers started").await;
    syncer
}

/// SIGKILL: the syncer stops wherever it is (between a host pod's delete and its tokens', say).
fn kill(mut syncer: SyncerProcess) {
    syncer.child.kill().expect("SIGKILL to vcsync");
    let _ = syncer.child.wait();
}

/// A plain delete (the pod's grace period: the host pod terminates for [`GRACE_SECONDS`], and
/// the virtual pod waits for it), or a forced one (grace period 0: the virtual pod goes at once).
fn delete_params(graceful: bool) -> DeleteParams {
    if graceful {
        DeleteParams::default()
    } else {
        DeleteParams {
            grace_period_seconds: Some(0),
            ..DeleteParams::default()
        }
    }
}

/// What is wrong with the pods `deleted` and `kept` on both sides: anything left of a deleted
/// pod; a kept pod whose host pod or token Secret is missing, being deleted or was replaced
/// (`uids`: a kept pod's host pod and token Secret UIDs before the restarts); a token Secret in
/// the host namespace that is no kept pod's.
async fn misfits(
    env: &Env,
    deleted: &[String],
    kept: &[String],
    uids: &HashMap<String, (String, String)>,
) -> Vec<String> {
    let host_pods: HashMap<String, Pod> = env
        .host_api::<Pod>()
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .map(|pod| (pod.metadata.name.clone().unwrap_or_default(), pod))
        .collect();
    let secrets: HashMap<String, Secret> = env
        .host_api::<Secret>()
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .map(|secret| (secret.metadata.name.clone().unwrap_or_default(), secret))
        .filter(|(name, _)| name.ends_with(".sa-token"))
        .collect();
    let virtual_pods: Vec<String> = env
        .virt_api::<Pod>()
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter_map(|pod| pod.metadata.name)
        .collect();
    let mut misfits = Vec::new();
    for name in deleted {
        let host = env.host_name(name);
        if virtual_pods.contains(name) {
            misfits.push(format!("{name}: the virtual pod is left"));
        }
        if host_pods.contains_key(&host) {
            misfits.push(format!("{name}: the host pod is left"));
        }
        if secrets.contains_key(&format!("{host}.sa-token")) {
            misfits.push(format!("{name}: the token Secret is left"));
        }
    }
    for name in kept {
        let host = env.host_name(name);
        let (pod_uid, secret_uid) = &uids[name];
        match host_pods.get(&host) {
            None => misfits.push(format!("{name} (kept): no host pod")),
            Some(pod) if pod.metadata.uid.as_ref() != Some(pod_uid) => {
                misfits.push(format!("{name} (kept): the host pod was replaced"))
            }
            Some(pod) if pod.metadata.deletion_timestamp.is_some() => {
                misfits.push(format!("{name} (kept): the host pod is being deleted"))
            }
            Some(_) => {}
        }
        match secrets.get(&format!("{host}.sa-token")) {
            None => misfits.push(format!("{name} (kept): no token Secret")),
            Some(secret) if secret.metadata.uid.as_ref() != Some(secret_uid) => {
                misfits.push(format!("{name} (kept): the token Secret was replaced"))
            }
            Some(_) => {}
        }
    }
    let theirs: Vec<String> = kept
        .iter()
        .map(|name| format!("{}.sa-token", env.host_name(name)))
        .collect();
    let mut strays: Vec<&String> = secrets.keys().filter(|name| !theirs.contains(name)).collect();
    strays.sort();
    misfits.extend(
        strays
            .into_iter()
            .map(|name| format!("token Secret {name} is no kept pod's")),
    );
    misfits
}

/// Polls [`misfits`] until there are none, and returns how long that took after `since`;
/// panics with them, saying `when`, once `bound` has passed since `since`.
async fn no_misfits_within(
    env: &Env,
    (deleted, kept): (&[String], &[String]),
    uids: &HashMap<String, (String, String)>,
    (when, since): (&str, Instant),
    bound: Duration,
) -> Duration {
    loop {
        let left = misfits(env, deleted, kept, uids).await;
        if left.is_empty() {
            return since.elapsed();
        }
        assert!(since.elapsed() < bound, "{:?} {when}: {left:#?}", since.elapsed());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Pods deleted while the syncer is killed (SIGKILL) and started again every 10 s leave no
/// token Secret behind, and take no other pod's: plain and forced deletes, made just before a
/// kill, while no syncer runs, and right after a start. The pods are scheduled and run on the
/// host, so a plain delete is graceful on both sides (2 s). A Secret orphaned by a kill may go
/// with the sweep at the next start; the last batch of pods goes after the last syncer's second
/// sweep (10 s after its start), so that its Secrets, whose next sweep would be 60 s later,
/// can only go with their pods.
#[tokio::test]
async fn token_secrets_go_with_their_pods_while_the_syncer_is_killed_every_ten_seconds() {
    let env = Env::new().await;
    let _kubelet = HostKubelet::start(&env).await;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("vcsync.yaml");
    std::fs::write(&config, env.config_text("")).unwrap();
    let mut syncer = start_killable_syncer(&config).await;

    let names: Vec<String> = (0..24).map(|i| format!("churn-{i}")).collect();
    // Three per restart (just before the kill, while stopped, right after the start), then
    // four after the last syncer's second sweep; five stay.
    let (during_restarts, rest) = names.split_at(15);
    let (last_batch, kept) = rest.split_at(4);
    let pods = env.virt_api::<Pod>();
    for name in &names {
        let mut pod = simple_pod(name);
        pod.spec.as_mut().unwrap().termination_grace_period_seconds = Some(GRACE_SECONDS);
        pods.create(&PostParams::default(), &pod).await.unwrap();
    }
    // Bound on the virtual side too, so that a plain delete there waits for the host pod.
    eventually(
        "every virtual pod bound and every token Secret written",
        || async {
            let bound = pods
                .list(&ListParams::default())
                .await
                .unwrap()
                .items
                .iter()
                .filter(|pod| pod.spec.as_ref().is_some_and(|s| s.node_name.is_some()))
                .count();
            (bound == names.len() && token_secrets(&env, &names).await.len() == names.len()).then_some(())
        },
    )
    .await;
    let mut uids = HashMap::new();
    for name in rest {
        let host = env.host_name(name);
        let pod = get(&env.host_api::<Pod>(), &host).await.unwrap();
        let secret = get(&env.host_api::<Secret>(), &format!("{host}.sa-token"))
            .await
            .unwrap();
        uids.insert(
            name.clone(),
            (pod.metadata.uid.unwrap(), secret.metadata.uid.unwrap()),
        );
    }

    // Each kill comes at another point of the syncer's work on the delete made just before it,
    // and two stops outlast the grace period (host pods finish with no syncer watching).
    let before_kill = [0, 20, 100, 300, 1000].map(Duration::from_millis);
    let stopped_for = [0, 300, 2500, 0, 1000].map(Duration::from_millis);
    let mut started = Instant::now();
    for (cycle, three) in during_restarts.chunks(3).enumerate() {
        let [just_before, while_stopped, right_after] = three else {
            unreachable!("15 pods in threes")
        };
        // Each moment sees plain and forced deletes over the cycles.
        let plain = cycle % 2 == 0;
        tokio::time::sleep(RESTART_EVERY.saturating_sub(started.elapsed() + before_kill[cycle])).await;
        pods.delete(just_before, &delete_params(plain)).await.unwrap();
        tokio::time::sleep(before_kill[cycle]).await;
        kill(syncer);
        pods.delete(while_stopped, &delete_params(!plain)).await.unwrap();
        tokio::time::sleep(stopped_for[cycle]).await;
        started = Instant::now();
        syncer = start_killable_syncer(&config).await;
        pods.delete(right_after, &delete_params(plain)).await.unwrap();
    }

    // By the last syncer's second sweep the pods deleted during the restarts are gone with
    // their Secrets, and the others untouched.
    tokio::time::sleep(PAST_THE_SECOND_SWEEP.saturating_sub(started.elapsed())).await;
    let since_start = started.elapsed();
    let restarts_clean = no_misfits_within(
        &env,
        (during_restarts, rest),
        &uids,
        ("after the last start's second sweep", Instant::now()),
        GONE_WITHIN,
    )
    .await;

    // The last syncer swept twice: the last batch's Secrets can only go with their pods.
    let deleted_at = Instant::now();
    for (i, name) in last_batch.iter().enumerate() {
        pods.delete(name, &delete_params(i % 2 == 0)).await.unwrap();
    }
    let deleted = &names[..during_restarts.len() + last_batch.len()];
    let last_batch_gone = no_misfits_within(
        &env,
        (deleted, kept),
        &uids,
        ("after the last batch's deletes", deleted_at),
        GONE_WITHIN,
    )
    .await;
    eprintln!(
        "restarts' pods gone {:?} after the last start; the last batch's {last_batch_gone:?} after its deletes",
        since_start + restarts_clean
    );
    kill(syncer);
}
