//! The launcher of real control planes (`vcsync_envtest`), against the binaries in
//! `VCSYNC_KUBE_ASSETS` (tests/control-plane/build.sh prints that folder); without it, the tests
//! that need them print why they skip and pass.

use std::{
    io::{BufRead, BufReader},
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Service, ServiceAccount};
use kube::{
    Api, Client,
    api::{DeleteParams, ObjectMeta, PostParams},
};
use vcsync_envtest::{ControlPlane, ControlPlanePair, SERVICE_CIDR};

const PATIENCE: Duration = Duration::from_secs(60);

fn assets() -> Option<PathBuf> {
    match std::env::var_os("VCSYNC_KUBE_ASSETS") {
        Some(dir) if !dir.is_empty() => Some(PathBuf::from(dir)),
        _ => {
            println!(
                "skipped: VCSYNC_KUBE_ASSETS is not set (the folder tests/control-plane/build.sh \
                 prints)"
            );
            None
        }
    }
}

/// Whether `pid` is a live process (not gone, not a zombie).
fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        stat.rsplit(')')
            .next()
            .is_some_and(|rest| !rest.starts_with(" Z"))
    })
}

/// Polls `check` until it gives `Some`, for at most [`PATIENCE`].
async fn eventually<T, F, Fut>(what: &str, check: F) -> T
where
    F: Fn() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let started = Instant::now();
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(started.elapsed() < PATIENCE, "{what}: not within {PATIENCE:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn create_namespace(client: &Client, name: &str, plane: &str) -> Namespace {
    let namespace = Namespace {
        metadata: ObjectMeta {
            name: Some(name.into()),
            labels: Some([("plane".to_string(), plane.to_string())].into()),
            ..Default::default()
        },
        ..Default::default()
    };
    Api::<Namespace>::all(client.clone())
        .create(&PostParams::default(), &namespace)
        .await
        .unwrap_or_else(|err| panic!("creating namespace {name} in {plane}: {err}"))
}

/// The controller manager of `plane` fills a new namespace: `kube-root-ca.crt` (with this
/// plane's CA) and the `default` ServiceAccount.
async fn check_namespace_is_filled(plane: &ControlPlane, client: &Client, namespace: &str) {
    let config_maps = Api::<ConfigMap>::namespaced(client.clone(), namespace);
    let root_ca = eventually("kube-root-ca.crt", || async {
        config_maps.get_opt("kube-root-ca.crt").await.ok().flatten()
    })
    .await;
    let ca = std::fs::read_to_string(plane.dir().join("pki/ca.crt")).unwrap();
    let data = root_ca.data.unwrap_or_default();
    assert_eq!(data.get("ca.crt"), Some(&ca), "{}: the plane's CA", plane.name());
    let service_accounts = Api::<ServiceAccount>::namespaced(client.clone(), namespace);
    eventually("the default ServiceAccount", || async {
        service_accounts.get_opt("default").await.ok().flatten()
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pair_runs_real_controllers_independently_and_leaves_nothing_behind() {
    let Some(assets) = assets() else { return };
    let pair = ControlPlanePair::start(&assets).await.unwrap();
    println!(
        "control plane pair started in {:.2} s (host {:.2} s, virtual {:.2} s)",
        pair.started_in().as_secs_f64(),
        pair.host.started_in().as_secs_f64(),
        pair.virt.started_in().as_secs_f64()
    );
    let host = pair.host.client().await.unwrap();
    let virt = pair.virt.client().await.unwrap();
    assert_ne!(pair.host.server(), pair.virt.server());

    // The same name in both planes: two different namespaces.
    let name = "control-plane-test";
    let host_ns = create_namespace(&host, name, "host").await;
    let virt_ns = create_namespace(&virt, name, "virtual").await;
    assert_ne!(host_ns.metadata.uid, virt_ns.metadata.uid);
    check_namespace_is_filled(&pair.host, &host, name).await;
    check_namespace_is_filled(&pair.virt, &virt, name).await;
    let labels = |namespace: Namespace| namespace.metadata.labels.unwrap_or_default()["plane"].clone();
    let seen = Api::<Namespace>::all(virt.clone()).get(name).await.unwrap();
    assert_eq!(labels(seen), "virtual");

    // An object made in one plane is not in the other.
    let only_host = ConfigMap {
        metadata: ObjectMeta {
            name: Some("only-host".into()),
            ..Default::default()
        },
        ..Default::default()
    };
    Api::<ConfigMap>::namespaced(host.clone(), name)
        .create(&PostParams::default(), &only_host)
        .await
        .unwrap();
    let virt_config_maps = Api::<ConfigMap>::namespaced(virt.clone(), name);
    assert!(virt_config_maps.get_opt("only-host").await.unwrap().is_none());

    // One service range, so vcsync's service IP check agrees; the `kubernetes` Service's
    // Endpoints are kept.
    let first_ip = SERVICE_CIDR.replace(".0/", ".1/");
    let first_ip = first_ip.split('/').next().unwrap();
    for client in [&host, &virt] {
        let kubernetes = Api::<Service>::namespaced(client.clone(), "default")
            .get("kubernetes")
            .await
            .unwrap();
        let cluster_ip = kubernetes.spec.and_then(|spec| spec.cluster_ip);
        assert_eq!(cluster_ip.as_deref(), Some(first_ip));
    }

    // The namespace controller finalizes a deleted namespace (in the virtual plane only).
    let namespaces = Api::<Namespace>::all(virt.clone());
    namespaces.delete(name, &DeleteParams::default()).await.unwrap();
    eventually("the namespace to be finalized", || async {
        matches!(namespaces.get_opt(name).await, Ok(None)).then_some(())
    })
    .await;
    let host_namespaces = Api::<Namespace>::all(host.clone());
    assert!(host_namespaces.get_opt(name).await.unwrap().is_some());

    // Dropping the pair ends every process and removes both folders.
    let pids = pair.pids();
    assert_eq!(pids.len(), 8, "three processes and a watchdog per plane");
    assert!(pids.iter().all(|&pid| alive(pid)), "{pids:?}");
    let dirs: Vec<PathBuf> = pair.dirs().iter().map(|dir| dir.to_path_buf()).collect();
    let stopping = Instant::now();
    drop(pair);
    println!(
        "control plane pair stopped in {:.2} s",
        stopping.elapsed().as_secs_f64()
    );
    for pid in pids {
        assert!(!alive(pid), "pid {pid} outlived its control plane");
    }
    for dir in dirs {
        assert!(!dir.exists(), "{} outlived its control plane", dir.display());
    }
}

/// Processes whose command line mentions `dir`.
fn processes_mentioning(dir: &Path) -> Vec<u32> {
    let dir = dir.to_string_lossy().into_owned();
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|cmdline| String::from_utf8_lossy(&cmdline).contains(&dir))
                && alive(pid)
        })
        .collect()
}

/// `vcsync dev control-plane`, SIGKILLed: its watchdogs end the planes and remove the folders.
#[test]
fn the_cli_runs_a_pair_and_a_killed_cli_leaves_nothing_behind() {
    let Some(assets) = assets() else { return };
    let mut cli = Command::new(env!("CARGO_BIN_EXE_vcsync"))
        .args(["dev", "control-plane", "--kube-assets"])
        .arg(&assets)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut kubeconfigs = Vec::new();
    for line in BufReader::new(cli.stdout.take().unwrap()).lines() {
        let line = line.unwrap();
        println!("vcsync dev control-plane: {line}");
        if let Some((_, path)) = line.split_once("kubeconfig:") {
            kubeconfigs.push(PathBuf::from(path.trim()));
        }
        if line.starts_with("started in") {
            break;
        }
    }
    assert_eq!(kubeconfigs.len(), 2, "two kubeconfig lines before the start time");
    assert!(kubeconfigs.iter().all(|path| path.is_file()));
    let dirs: Vec<PathBuf> = kubeconfigs
        .iter()
        .map(|path| path.parent().unwrap().to_path_buf())
        .collect();
    let pids: Vec<u32> = dirs.iter().flat_map(|dir| processes_mentioning(dir)).collect();
    assert_eq!(
        pids.len(),
        6,
        "etcd, kube-apiserver, kube-controller-manager per plane"
    );

    cli.kill().unwrap();
    cli.wait().unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while (pids.iter().any(|&pid| alive(pid)) || dirs.iter().any(|dir| dir.exists()))
        && Instant::now() < deadline
    {
        std::thread::sleep(Duration::from_millis(50));
    }
    for pid in pids {
        assert!(!alive(pid), "pid {pid} outlived a killed vcsync");
    }
    for dir in dirs {
        assert!(!dir.exists(), "{} outlived a killed vcsync", dir.display());
    }
}

/// A wrong folder fails at once, saying what it must hold, and leaves no folder behind.
#[tokio::test]
async fn a_folder_without_the_binaries_is_a_clear_error() {
    let empty = std::env::temp_dir().join(format!("vcsync-no-assets-{}", std::process::id()));
    std::fs::create_dir_all(&empty).unwrap();
    let err = match ControlPlane::start(&empty, "nothing").await {
        Ok(_) => panic!("started without binaries"),
        Err(err) => format!("{err:#}"),
    };
    assert!(err.contains("etcd not found"), "{err}");
    assert!(err.contains("build.sh"), "{err}");
    std::fs::remove_dir_all(&empty).unwrap();
}

/// `vcsync dev --kube-assets`: the syncer between a real host and a real virtual control plane,
/// with fake kubelets on the host: a pod created with kubectl's client in the virtual cluster
/// runs on the host and comes up Running on a fake node; SIGTERM stops everything.
#[tokio::test]
async fn dev_runs_the_syncer_between_real_planes_and_pods_run() {
    let Some(assets) = assets() else { return };
    let dir = std::env::temp_dir().join(format!("vcsync-dev-real-{}", std::process::id()));
    let mut dev = Command::new(env!("CARGO_BIN_EXE_vcsync"))
        .args(["dev", "--nodes", "2", "--dir"])
        .arg(&dir)
        .arg("--kube-assets")
        .arg(&assets)
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(dir.with_extension("log")).unwrap())
        .spawn()
        .unwrap();
    let mut stdout = BufReader::new(dev.stdout.take().unwrap()).lines();
    let mut welcome = String::new();
    for line in stdout.by_ref() {
        let line = line.unwrap();
        welcome.push_str(&line);
        welcome.push('\n');
        if line.contains("host namespace:") {
            break;
        }
    }
    assert!(
        welcome.contains("real kube-apiserver control planes"),
        "{welcome}\nits log:\n{}",
        std::fs::read_to_string(dir.with_extension("log")).unwrap_or_default()
    );
    let virt = client_of(&dir.join("virtual.kubeconfig")).await;
    let host = client_of(&dir.join("host.kubeconfig")).await;
    let version = virt.apiserver_version().await.unwrap();
    assert_eq!(version.git_version, "v1.37.2", "a real kube-apiserver");

    let pod: k8s_openapi::api::core::v1::Pod = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "web"},
        "spec": {"containers": [{"name": "web", "image": "nginx"}]}
    }))
    .unwrap();
    let pods = Api::<k8s_openapi::api::core::v1::Pod>::namespaced(virt.clone(), "default");
    pods.create(&PostParams::default(), &pod).await.unwrap();
    let running = eventually("the virtual pod Running on a node", || async {
        let pod = pods.get("web").await.ok()?;
        let status = pod.status.as_ref()?;
        (status.phase.as_deref() == Some("Running")).then_some(pod)
    })
    .await;
    let node = running.spec.unwrap().node_name.unwrap();
    let nodes = Api::<k8s_openapi::api::core::v1::Node>::all(virt.clone());
    assert!(nodes.get_opt(&node).await.unwrap().is_some(), "fake node {node}");
    let host_pods = Api::<k8s_openapi::api::core::v1::Pod>::namespaced(host, "vcsync-dev");
    assert!(host_pods.get_opt("web-x-default").await.unwrap().is_some());

    let _ = Command::new("kill")
        .args(["-TERM", &dev.id().to_string()])
        .status();
    let deadline = Instant::now() + PATIENCE;
    while dev.try_wait().unwrap().is_none() {
        assert!(Instant::now() < deadline, "vcsync dev did not stop on SIGTERM");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(dev.wait().unwrap().success());
    let _ = std::fs::remove_dir_all(&dir);
    let _ = std::fs::remove_file(dir.with_extension("log"));
}

async fn client_of(kubeconfig: &Path) -> Client {
    let kubeconfig = kube::config::Kubeconfig::read_from(kubeconfig).unwrap();
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
        .await
        .unwrap();
    Client::try_from(config).unwrap()
}
