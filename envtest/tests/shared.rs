//! Shared planes across test processes, against the binaries in `VCSYNC_KUBE_ASSETS` (without
//! it, the test prints why it skips and passes).

use std::{
    path::PathBuf,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use vcsync_envtest::SharedPlanes;

/// The variable a child process (this binary, run by the test) is told to act on.
const CHILD: &str = "VCSYNC_ENVTEST_SHARED_CHILD";

fn assets() -> Option<PathBuf> {
    std::env::var_os("VCSYNC_KUBE_ASSETS")
        .filter(|dir| !dir.is_empty())
        .map(PathBuf::from)
}

fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        stat.rsplit_once(')')
            .is_some_and(|(_, rest)| !rest.starts_with(" Z"))
    })
}

/// Run as a child: asks for the shared plane and prints its kubeconfig and pids.
#[tokio::test]
#[ignore = "run by two_test_processes_of_a_run_share_one_plane_which_ends_with_the_run"]
async fn child_asks_for_the_shared_plane() {
    if std::env::var_os(CHILD).is_none() {
        return;
    }
    let planes = SharedPlanes::single(&assets().unwrap(), "shared-test")
        .await
        .unwrap();
    let client = kube::Client::try_from(
        kube::Config::from_custom_kubeconfig(
            kube::config::Kubeconfig::read_from(planes.host_kubeconfig()).unwrap(),
            &Default::default(),
        )
        .await
        .unwrap(),
    )
    .unwrap();
    client.apiserver_version().await.expect("the plane answers");
    println!("KUBECONFIG={}", planes.host_kubeconfig().display());
}

/// Two test processes of one run (children of one runner, as under nextest) get the same plane,
/// started once; it outlives them and ends with the runner, its folder removed.
#[test]
fn two_test_processes_of_a_run_share_one_plane_which_ends_with_the_run() {
    let Some(assets) = assets() else {
        println!("skipped: VCSYNC_KUBE_ASSETS is not set (the folder tests/control-plane/build.sh prints)");
        return;
    };
    let me = std::env::current_exe().unwrap();
    // The runner: a shell that starts two test processes at once, waits for both, and lingers
    // a moment, as a runner would between tests.
    let child = format!(
        "{} --exact child_asks_for_the_shared_plane --ignored --nocapture",
        me.display()
    );
    let output = Command::new("sh")
        .args(["-c", &format!("{child} & {child} & wait; sleep 1")])
        .env(CHILD, "1")
        .env("NEXTEST_EXECUTION_MODE", "process-per-test")
        .env("VCSYNC_KUBE_ASSETS", &assets)
        .stderr(Stdio::inherit())
        .output()
        .unwrap();
    assert!(output.status.success(), "the children failed");
    let stdout = String::from_utf8_lossy(&output.stdout);
    // The children's lines interleave with the test harness's fragments ("test result: ok"
    // then the other child's line, then "."): the marker is looked for anywhere, and each
    // child writes its line in one piece.
    let kubeconfigs: Vec<&str> = stdout
        .match_indices("KUBECONFIG=")
        .filter_map(|(at, marker)| stdout[at + marker.len()..].split_whitespace().next())
        .collect();
    assert_eq!(kubeconfigs.len(), 2, "both children report a plane: {stdout}");
    assert_eq!(kubeconfigs[0], kubeconfigs[1], "one plane for the run");
    let plane_dir = PathBuf::from(kubeconfigs[0]).parent().unwrap().to_path_buf();
    let shared_dir = plane_dir.parent().unwrap().to_path_buf();
    // The runner has ended: the watchdog notices within a second or two.
    let deadline = Instant::now() + Duration::from_secs(20);
    while shared_dir.exists() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(!shared_dir.exists(), "{} outlived the run", shared_dir.display());
    let leftovers = Command::new("pgrep")
        .args(["-f", &plane_dir.display().to_string()])
        .output()
        .unwrap();
    let pids: Vec<u32> = String::from_utf8_lossy(&leftovers.stdout)
        .lines()
        .filter_map(|line| line.trim().parse().ok())
        .filter(|pid| alive(*pid))
        .collect();
    assert!(
        pids.is_empty(),
        "processes of the plane outlived the run: {pids:?}"
    );
}
