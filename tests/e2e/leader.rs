//! Leader election: replicas of one instance share a Lease in the virtual cluster; only the
//! holder writes; a standby takes over when the leader dies (SIGKILL) or stops (SIGTERM,
//! releasing the lease). Failover times are printed, not asserted.

use std::time::{Duration, Instant};

use k8s_openapi::api::{coordination::v1::Lease, core::v1::ConfigMap};
use kube::{Api, api::PostParams};

use crate::{
    data_sync::config_map,
    env::{Env, SyncerProcess, eventually, get},
};

const LEASE: &str = "leaderElection:\n  enabled: true\n  leaseDurationSeconds: 4\n  renewGraceSeconds: 2\n";

/// One `vcsync run` replica of the instance, with its identity.
fn replica(env: &Env, identity: &str) -> SyncerProcess {
    let extra = format!("sync:\n  configMaps: {{all: true}}\n{LEASE}  identity: {identity}\n");
    let path = std::env::temp_dir().join(format!("vcsync-{}-{identity}.yaml", env.instance));
    std::fs::write(&path, env.config_text(&extra)).unwrap();
    SyncerProcess::spawn(&path, "info")
}

async fn create_and_await_host_copy(env: &Env, name: &str) -> Duration {
    let started = Instant::now();
    env.virt_api::<ConfigMap>()
        .create(&PostParams::default(), &config_map(name, &[("k", "v")]))
        .await
        .unwrap();
    eventually("host copy", || async {
        get(&env.host_api::<ConfigMap>(), &env.host_name(name)).await
    })
    .await;
    started.elapsed()
}

async fn holder(env: &Env) -> Option<String> {
    let leases: Api<Lease> = Api::namespaced(env.virt.clone(), "kube-system");
    get(&leases, &format!("vcsync-{}", env.instance))
        .await
        .and_then(|l| l.spec?.holder_identity)
}

#[tokio::test]
async fn one_leader_writes_and_a_standby_takes_over_when_it_dies_or_stops() {
    let env = Env::new().await;
    let mut first = replica(&env, "first");
    first.wait_for_log("acquired the leader lease").await;
    let mut second = replica(&env, "second");
    second
        .wait_for_log("standby until this replica holds the lease")
        .await;
    assert_eq!(holder(&env).await.as_deref(), Some("first"));

    create_and_await_host_copy(&env, "before").await;
    // The leader wrote the host copy (its log line may trail the object by a moment).
    first.wait_for_log("created host object").await;
    assert!(
        !second.logged("created host object") && !second.logged("controllers started"),
        "a standby writes nothing"
    );

    // The leader dies without releasing the lease: the standby waits for it to expire.
    first.child.kill().unwrap();
    let killed = Instant::now();
    second.wait_for_log("acquired the leader lease").await;
    let takeover = killed.elapsed();
    let synced = create_and_await_host_copy(&env, "after-kill").await;
    assert_eq!(holder(&env).await.as_deref(), Some("second"));
    eprintln!(
        "failover after SIGKILL (lease 4 s, grace 2 s): leader in {takeover:?}, then a new object synced in {synced:?}"
    );

    // A leader stopping gracefully releases the lease: a new replica takes over at once.
    let mut third = replica(&env, "third");
    third
        .wait_for_log("standby until this replica holds the lease")
        .await;
    second.terminate();
    let stopped = Instant::now();
    third.wait_for_log("acquired the leader lease").await;
    let handover = stopped.elapsed();
    create_and_await_host_copy(&env, "after-stop").await;
    assert_eq!(holder(&env).await.as_deref(), Some("third"));
    let status = second.wait_exit().await;
    assert!(status.success(), "a leader stopping on SIGTERM exits 0: {status}");
    eprintln!("handover after SIGTERM: new leader in {handover:?}");
    assert!(
        second.logged("released the leader lease"),
        "the stopping leader released its lease"
    );
}
