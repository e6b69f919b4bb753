//! Leader election: replicas of one instance share a Lease in the virtual cluster; only the
//! holder writes; a standby takes over when the leader dies (SIGKILL) or stops (SIGTERM,
//! releasing the lease). Failover times are printed, not asserted.

use std::{
    io::{BufRead, BufReader},
    process::{Child, Command, Stdio},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use k8s_openapi::api::{coordination::v1::Lease, core::v1::ConfigMap};
use kube::{Api, api::PostParams};

use crate::{
    data_sync::config_map,
    env::{Env, PATIENCE, eventually, get},
};

const LEASE: &str = "leaderElection:\n  enabled: true\n  leaseDurationSeconds: 4\n  renewGraceSeconds: 2\n";

/// One `vcsync run` replica whose log lines are kept.
struct Replica {
    child: Child,
    log: Arc<Mutex<Vec<String>>>,
}

impl Replica {
    fn spawn(env: &Env, identity: &str) -> Replica {
        let extra = format!("sync:\n  configMaps: {{all: true}}\n{LEASE}  identity: {identity}\n");
        let path = std::env::temp_dir().join(format!("vcsync-{}-{identity}.yaml", env.instance));
        std::fs::write(&path, env.config_text(&extra)).unwrap();
        let mut child = Command::new(env!("CARGO_BIN_EXE_vcsync"))
            .args(["run", "--config"])
            .arg(&path)
            .env("RUST_LOG", "info")
            .stderr(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .expect("spawn vcsync");
        let log = Arc::new(Mutex::new(Vec::new()));
        let lines = log.clone();
        let stderr = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if std::env::var_os("VCSYNC_E2E_LOG").is_some() {
                    eprintln!("[vcsync] {line}");
                }
                lines.lock().unwrap().push(line);
            }
        });
        Replica { child, log }
    }

    fn logged(&self, text: &str) -> bool {
        self.log.lock().unwrap().iter().any(|line| line.contains(text))
    }

    async fn wait_for_log(&mut self, text: &str) {
        let deadline = Instant::now() + PATIENCE;
        while !self.logged(text) {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("vcsync exited with {status} before logging {text:?}");
            }
            assert!(Instant::now() < deadline, "vcsync did not log {text:?}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn terminate(&self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
    }
}

impl Drop for Replica {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
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
    let mut first = Replica::spawn(&env, "first");
    first.wait_for_log("acquired the leader lease").await;
    let mut second = Replica::spawn(&env, "second");
    second
        .wait_for_log("standby until this replica holds the lease")
        .await;
    assert_eq!(holder(&env).await.as_deref(), Some("first"));

    create_and_await_host_copy(&env, "before").await;
    assert!(
        first.logged("created host object"),
        "the leader wrote the host copy"
    );
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
    let mut third = Replica::spawn(&env, "third");
    third
        .wait_for_log("standby until this replica holds the lease")
        .await;
    second.terminate();
    let stopped = Instant::now();
    third.wait_for_log("acquired the leader lease").await;
    let handover = stopped.elapsed();
    create_and_await_host_copy(&env, "after-stop").await;
    assert_eq!(holder(&env).await.as_deref(), Some("third"));
    let status = second.child.wait().unwrap();
    assert!(status.success(), "a leader stopping on SIGTERM exits 0: {status}");
    eprintln!("handover after SIGTERM: new leader in {handover:?}");
    let deadline = Instant::now() + PATIENCE;
    while !second.logged("released the leader lease") {
        assert!(
            Instant::now() < deadline,
            "the stopping leader released its lease"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
