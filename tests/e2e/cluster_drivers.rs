//! `vcsync cluster` without `-d`: commands find the driver that has the cluster, `list` lists
//! every driver's, and what cannot be told is said, never guessed. Both drivers: `local`, and
//! `kubernetes` against an embedded host.

use std::path::Path;

use k8s_openapi::api::{
    authentication::v1::{TokenReview, TokenReviewSpec},
    rbac::v1::ClusterRoleBinding,
};
use kube::{Api, Client, api::PostParams, config::Kubeconfig};

use crate::cluster::{host_for_the_driver, serve_rbac, status_json, vcsync};

/// (name, driver) of each line of `list`'s table, header left out.
fn listed(table: &str) -> Vec<(String, String)> {
    let mut lines = table.lines();
    let header = lines.next().unwrap_or_default();
    assert!(header.starts_with("NAME") && header.contains("DRIVER"), "{table}");
    lines
        .map(|line| {
            let mut columns = line.split_whitespace();
            let name = columns.next().unwrap().to_string();
            (name, columns.next().unwrap().to_string())
        })
        .collect()
}

fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
    list.iter().map(|(a, b)| (a.to_string(), b.to_string())).collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn cluster_commands_find_the_driver_that_has_the_cluster_and_list_every_drivers() {
    let (host, dir, kc, _client) = host_for_the_driver().await;
    let data = dir.path().join("data");
    let env = [("VCSYNC_DATA_DIR", data.as_path()), ("KUBECONFIG", kc.as_path())];
    let run = |args: &'static [&'static str]| vcsync(&env, args);

    // A local cluster, created with -d; the rest finds it without.
    let (code, _, err) = run(&[
        "-d",
        "local",
        "-q",
        "create",
        "demo",
        "--wait",
        "--timeout",
        "60s",
    ])
    .await;
    assert_eq!(code, 0, "{err}");
    let (code, out, err) = run(&["-q", "status", "demo", "-o", "json"]).await;
    assert_eq!(code, 0, "{err}");
    assert_eq!(status_json(&out)["driver"], "local");
    assert_eq!(run(&["exists", "demo"]).await.0, 0);
    let (code, out, err) = run(&["-q", "connect", "demo"]).await;
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("server:"), "{out}");
    // connect -- CMD: the command runs against the cluster, and its status is vcsync's.
    let kubectl = crate::kubectl::kubectl();
    let kubectl = kubectl.to_str().unwrap();
    let (code, out, err) = vcsync(
        &env,
        &["-q", "connect", "demo", "--", kubectl, "get", "ns", "-o", "name"],
    )
    .await;
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("namespace/default"), "{out}");
    let (code, _, _) = vcsync(&env, &["-q", "connect", "demo", "--", "sh", "-c", "exit 7"]).await;
    assert_eq!(code, 7);
    // --update-current: a context in the user's kubeconfig, made current, next to theirs.
    let mine = dir.path().join("mine.kubeconfig");
    std::fs::write(
        &mine,
        "apiVersion: v1\nkind: Config\nclusters:\n- name: prod\n  cluster: {server: https://prod.example}\n\
         contexts:\n- name: prod\n  context: {cluster: prod, user: prod}\nusers:\n- name: prod\n  user: {token: t}\n\
         current-context: prod\n",
    )
    .unwrap();
    let mine_s = mine.to_str().unwrap();
    let (code, _, err) = vcsync(
        &env,
        &[
            "-q",
            "connect",
            "demo",
            "--update-current",
            "--kube-config",
            mine_s,
        ],
    )
    .await;
    assert_eq!(code, 0, "{err}");
    let out = std::process::Command::new(kubectl)
        .args(["--kubeconfig", mine_s, "config", "get-contexts", "-o", "name"])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "prod\nvcsync-demo");
    let out = std::process::Command::new(kubectl)
        .args(["--kubeconfig", mine_s, "get", "ns", "default", "-o", "name"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "the current context is the cluster's: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    service_account_tokens(&env).await;

    // A kubernetes cluster: create's driver without -d.
    let (code, _, err) = run(&["-q", "create", "k1"]).await;
    assert_eq!(code, 0, "{err}");
    let (code, out, err) = run(&["-q", "status", "k1", "-o", "json"]).await;
    assert_eq!(code, 0, "{err}");
    assert_eq!(status_json(&out)["driver"], "kubernetes");

    // list: every driver's clusters, with their driver.
    let (code, out, err) = run(&["-q", "list"]).await;
    assert_eq!(code, 0, "{err}");
    assert_eq!(listed(&out), pairs(&[("demo", "local"), ("k1", "kubernetes")]));
    let (code, out, _) = run(&["-q", "list", "-o", "json"]).await;
    assert_eq!(code, 0);
    let listed_json: Vec<(String, String)> = status_json(&out)
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["name"].as_str().unwrap().into(),
                s["driver"].as_str().unwrap().into(),
            )
        })
        .collect();
    assert_eq!(listed_json, pairs(&[("demo", "local"), ("k1", "kubernetes")]));
    let (_, out, _) = run(&["-q", "list", "-o", "yaml"]).await;
    assert!(
        out.contains("driver: local") && out.contains("driver: kubernetes"),
        "{out}"
    );
    let (_, out, _) = run(&["-q", "-d", "local", "list"]).await;
    assert_eq!(listed(&out), pairs(&[("demo", "local")]), "-d lists one driver");

    // The same name in both drivers: the user chooses, with -d or VCSYNC_CLUSTER_DRIVER.
    let (code, _, err) = run(&["-q", "-d", "kubernetes", "create", "demo"]).await;
    assert_eq!(code, 0, "{err}");
    let (code, _, err) = run(&["-q", "status", "demo"]).await;
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("kubernetes, local") && err.contains("-d"), "{err}");
    assert_eq!(
        run(&["-q", "delete", "demo"]).await.0,
        2,
        "no guess on a delete either"
    );
    let (_, out, _) = run(&["-q", "-d", "local", "status", "demo", "-o", "json"]).await;
    assert_eq!(status_json(&out)["driver"], "local");
    let chosen = [
        ("VCSYNC_DATA_DIR", data.as_path()),
        ("KUBECONFIG", kc.as_path()),
        ("VCSYNC_CLUSTER_DRIVER", Path::new("kubernetes")),
    ];
    let (code, out, err) = vcsync(&chosen, &["-q", "status", "demo", "-o", "json"]).await;
    assert_eq!(code, 0, "{err}");
    assert_eq!(status_json(&out)["driver"], "kubernetes");
    let (code, _, err) = run(&["-q", "-d", "kubernetes", "delete", "demo"]).await;
    assert_eq!(code, 0, "{err}");

    // A driver without its configuration is skipped, with a note unless -q.
    let unconfigured = [("VCSYNC_DATA_DIR", data.as_path())];
    let (code, out, err) = vcsync(&unconfigured, &["list"]).await;
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("note: driver kubernetes skipped"), "{err}");
    assert_eq!(listed(&out), pairs(&[("demo", "local")]));
    let (code, _, err) = vcsync(&unconfigured, &["-q", "status", "demo"]).await;
    assert_eq!(code, 0, "{err}");
    assert!(err.is_empty(), "-q: no note: {err}");
    assert_eq!(vcsync(&unconfigured, &["-q", "status", "k1"]).await.0, 10);

    // A host that does not answer: absence is not confirmed, and a delete does not guess.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead_url = format!("https://{}", closed.local_addr().unwrap());
    drop(closed);
    let dead = dir.path().join("dead.kubeconfig");
    std::fs::write(&dead, host.kubeconfig().replace(&host.url(), &dead_url)).unwrap();
    let unreachable = [
        ("VCSYNC_DATA_DIR", data.as_path()),
        ("KUBECONFIG", dead.as_path()),
    ];
    let (code, _, err) = vcsync(&unreachable, &["-q", "status", "nothere"]).await;
    assert_eq!(code, 1, "not 10: the host could not say: {err}");
    assert!(err.contains("driver kubernetes could not be asked"), "{err}");
    let (code, out, err) = vcsync(&unreachable, &["status", "demo", "-o", "json"]).await;
    assert_eq!(code, 0, "{err}");
    assert_eq!(status_json(&out)["driver"], "local");
    assert!(
        err.contains("note: driver kubernetes could not be asked"),
        "{err}"
    );
    let (code, _, err) = vcsync(&unreachable, &["-q", "delete", "demo"]).await;
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("not deleting") && err.contains("-d local"), "{err}");
    assert!(data.join("local/demo/values.yaml").is_file(), "nothing deleted");
    let (code, out, err) = vcsync(&unreachable, &["-q", "list"]).await;
    assert_eq!(code, 1, "a partial list: {err}");
    assert_eq!(listed(&out), pairs(&[("demo", "local")]));

    // Pause, resume and delete without -d, each on the driver that has the cluster.
    assert_eq!(run(&["-q", "pause", "demo"]).await.0, 0);
    let (_, out, _) = run(&["-q", "-d", "local", "status", "demo", "-o", "json"]).await;
    assert_eq!(status_json(&out)["phase"], "Paused");
    let (code, _, err) = run(&["-q", "resume", "demo", "--wait", "--timeout", "60s"]).await;
    assert_eq!(code, 0, "{err}");
    assert_eq!(run(&["-q", "delete", "demo"]).await.0, 0);
    assert!(!data.join("local/demo").exists());
    assert_eq!(run(&["-q", "delete", "k1"]).await.0, 0);
    let (code, out, _) = run(&["-q", "list"]).await;
    assert_eq!((code, listed(&out)), (0, vec![]));
    assert_eq!(run(&["-q", "status", "demo"]).await.0, 10);
    assert_eq!(run(&["-q", "exists", "demo"]).await.0, 10);
    assert_eq!(run(&["-q", "delete", "demo", "--ignore-not-found"]).await.0, 0);
}

/// A client of the cluster a kubeconfig text names.
async fn client_of(kubeconfig: &str) -> Client {
    let parsed = Kubeconfig::from_yaml(kubeconfig).unwrap_or_else(|err| panic!("{err}: {kubeconfig}"));
    let config = kube::Config::from_custom_kubeconfig(parsed, &Default::default())
        .await
        .unwrap();
    Client::try_from(config).unwrap()
}

/// `connect --service-account`: the kubeconfig carries a token of that account (the cluster's
/// own TokenReview says whose), bound to a ClusterRole when asked.
async fn service_account_tokens(env: &[(&str, &Path)]) {
    let (code, out, err) = vcsync(env, &["-q", "connect", "demo", "--service-account", "default/ci"]).await;
    assert_eq!(code, 0, "{err}");
    let value: serde_yaml_ng::Value = serde_yaml_ng::from_str(&out).unwrap();
    let token = value["users"][0]["user"]["token"]
        .as_str()
        .expect("a token")
        .to_string();
    assert!(
        value["users"][0]["user"].get("client-certificate-data").is_none(),
        "{out}"
    );
    let (_, admin, _) = vcsync(env, &["-q", "connect", "demo"]).await;
    let admin = client_of(&admin).await;
    let review = Api::<TokenReview>::all(admin.clone())
        .create(
            &PostParams::default(),
            &TokenReview {
                spec: TokenReviewSpec {
                    token,
                    ..Default::default()
                },
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let status = review.status.unwrap();
    assert_eq!(status.authenticated, Some(true));
    assert_eq!(
        status.user.unwrap().username.as_deref(),
        Some("system:serviceaccount:default:ci")
    );
    // The embedded virtual server serves no RBAC kinds: as CRDs of the same group here.
    serve_rbac(&admin).await;
    let args = [
        "-q",
        "connect",
        "demo",
        "--service-account",
        "default/ci",
        "--cluster-role",
        "view",
    ];
    let (code, _, err) = vcsync(env, &args).await;
    assert_eq!(code, 0, "{err}");
    let binding = Api::<ClusterRoleBinding>::all(admin)
        .get("vcsync-connect-default-ci-view")
        .await
        .unwrap();
    assert_eq!(binding.role_ref.name, "view");
    let subject = &binding.subjects.unwrap()[0];
    assert_eq!(
        (subject.name.as_str(), subject.namespace.as_deref()),
        ("ci", Some("default"))
    );
    let (code, _, err) = vcsync(env, &["-q", "connect", "demo", "--service-account", "ci"]).await;
    assert_eq!(code, 2, "{err}");
}
