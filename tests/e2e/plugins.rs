//! The built-in plugins: pod hooks on host pods, host secrets imported into the virtual cluster.

use std::time::Duration;

use k8s_openapi::{
    ByteString,
    api::core::v1::{Event, Namespace, Pod, Secret},
};
use kube::{
    Api,
    api::{DeleteParams, ListParams, ObjectMeta, Patch, PatchParams, PostParams},
};
use serde_json::json;

use crate::env::{Env, eventually, get, writes_besides_heartbeats};

const POD_HOOKS: &str = "plugins:
  pod-hooks:
    config:
      labels: {tenant: blue}
      annotations: {cost-center: \"42\"}
      tolerations:
        - {key: dedicated, operator: Equal, value: blue, effect: NoSchedule}
      nodeSelector: {pool: blue}
";

fn pod(name: &str) -> Pod {
    serde_json::from_value(json!({
        "metadata": {"name": name, "labels": {"app": name}},
        "spec": {"containers": [{"name": "app", "image": "nginx:1.27"}]}
    }))
    .unwrap()
}

#[tokio::test]
async fn pod_hooks_put_host_pods_on_tenant_nodes_and_write_once() {
    let mut env = Env::new().await;
    env.start_syncer(POD_HOOKS).await;
    let names = ["hooked-0", "hooked-1", "hooked-2"];
    for name in names {
        env.virt_api::<Pod>()
            .create(&PostParams::default(), &pod(name))
            .await
            .unwrap();
    }
    for name in names {
        let host = eventually("host pod", || async {
            get(&env.host_api::<Pod>(), &env.host_name(name)).await
        })
        .await;
        let labels = host.metadata.labels.clone().unwrap();
        assert_eq!(
            (labels["tenant"].as_str(), labels["app"].as_str()),
            ("blue", name)
        );
        assert_eq!(host.metadata.annotations.clone().unwrap()["cost-center"], "42");
        let spec = host.spec.clone().unwrap();
        assert_eq!(spec.node_selector.unwrap()["pool"], "blue");
        let toleration = spec
            .tolerations
            .iter()
            .flatten()
            .find(|t| t.key.as_deref() == Some("dedicated"))
            .expect("the hook's toleration");
        assert_eq!(
            (toleration.value.as_deref(), toleration.effect.as_deref()),
            (Some("blue"), Some("NoSchedule"))
        );

        let virt = get(&env.virt_api::<Pod>(), name).await.unwrap();
        assert!(!virt.metadata.labels.unwrap().contains_key("tenant"));
        assert!(
            !virt
                .metadata
                .annotations
                .unwrap_or_default()
                .contains_key("cost-center")
        );
        let vspec = virt.spec.unwrap();
        assert!(vspec.node_selector.is_none());
        assert!(
            !vspec
                .tolerations
                .iter()
                .flatten()
                .any(|t| t.key.as_deref() == Some("dedicated"))
        );
    }

    // A tenant label change reaches the host pod, and the hook's label stays.
    env.virt_api::<Pod>()
        .patch(
            "hooked-0",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {"tier": "gold"}}})),
        )
        .await
        .unwrap();
    eventually("tenant label on the host pod", || async {
        get(&env.host_api::<Pod>(), &env.host_name("hooked-0"))
            .await
            .filter(|p| p.metadata.labels.as_ref().unwrap().get("tier").is_some())
    })
    .await;
    let labels = get(&env.host_api::<Pod>(), &env.host_name("hooked-0"))
        .await
        .unwrap()
        .metadata
        .labels
        .unwrap();
    assert_eq!(labels["tenant"], "blue");

    // Steady: reconciles of hooked pods write nothing, now and after a restart.
    // (The syncer's own count, as the host may be a real server.)
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (before, _) = env.syncer_requests().await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (after, _) = env.syncer_requests().await;
    assert_eq!(
        writes_besides_heartbeats(&after),
        writes_besides_heartbeats(&before),
        "host writes while steady"
    );

    let (host_restart, virt_restart) = env.restart_counting(POD_HOOKS).await;
    assert_eq!(
        writes_besides_heartbeats(&host_restart),
        Vec::<String>::new(),
        "host writes after restart"
    );
    assert_eq!(
        writes_besides_heartbeats(&virt_restart),
        Vec::<String>::new(),
        "virtual writes after restart"
    );
    assert!(
        host_restart.get("list", "pods") >= 1,
        "the restarted syncer did not even list"
    );
}

fn secret(name: &str, value: &str) -> Secret {
    Secret {
        metadata: ObjectMeta {
            name: Some(name.into()),
            labels: Some([("team".to_string(), "infra".to_string())].into()),
            ..ObjectMeta::default()
        },
        data: Some([("token".to_string(), ByteString(value.as_bytes().to_vec()))].into()),
        ..Secret::default()
    }
}

fn token(secret: &Secret) -> Option<String> {
    let value = secret.data.as_ref()?.get("token")?;
    Some(String::from_utf8_lossy(&value.0).into_owned())
}

fn imported(secret: &Secret) -> bool {
    secret
        .metadata
        .labels
        .as_ref()
        .is_some_and(|l| l.contains_key("vcsync.dev/imported-from"))
}

#[tokio::test]
async fn imported_host_secrets_are_kept_read_only_in_the_virtual_namespaces() {
    let mut env = Env::new().await;
    let pp = PostParams::default();
    let other_ns = format!("{}-b", env.virt_ns);
    let ns = Namespace {
        metadata: ObjectMeta {
            name: Some(other_ns.clone()),
            ..ObjectMeta::default()
        },
        ..Namespace::default()
    };
    Api::<Namespace>::all(env.virt.clone())
        .create(&pp, &ns)
        .await
        .unwrap();
    let other: Api<Secret> = Api::namespaced(env.virt.clone(), &other_ns);
    Api::<Secret>::namespaced(env.host.clone(), &env.syncer_ns)
        .create(&pp, &secret("registry", "one"))
        .await
        .unwrap();
    // The tenant's own secret of a target's name: never touched.
    let mine = env
        .virt_api::<Secret>()
        .create(&pp, &secret("mine", "tenant"))
        .await
        .unwrap();
    let config = format!(
        "plugins:
  import-secrets:
    config:
      imports:
        - hostSecret: registry
          targets:
            - namespace: {virt}
            - namespace: {other_ns}
              name: pull
            - namespace: {virt}
              name: mine
",
        virt = env.virt_ns
    );
    env.start_syncer(&config).await;

    let copies = || async {
        (
            get(&env.virt_api::<Secret>(), "registry").await,
            get(&other, "pull").await,
        )
    };
    let with_token = |value: &'static str| {
        move |(a, b): (Option<Secret>, Option<Secret>)| {
            let ok = |s: &Option<Secret>| {
                s.as_ref()
                    .is_some_and(|s| imported(s) && token(s).as_deref() == Some(value))
            };
            (ok(&a) && ok(&b)).then(|| (a.unwrap(), b.unwrap()))
        }
    };
    let (first, second) = eventually("copies in both namespaces", || async {
        with_token("one")(copies().await)
    })
    .await;
    for copy in [&first, &second] {
        assert_eq!(copy.metadata.labels.as_ref().unwrap()["team"], "infra");
        assert_eq!(
            copy.metadata.labels.as_ref().unwrap()["vcsync.dev/imported-from"],
            "registry"
        );
    }

    let event = eventually("a warning on the tenant's secret", || async {
        env.virt_api::<Event>()
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
            .into_iter()
            .find(|e| {
                e.involved_object.uid == mine.metadata.uid && e.reason.as_deref() == Some("ImportConflict")
            })
    })
    .await;
    assert_eq!(event.type_.as_deref(), Some("Warning"));

    // A tenant's edit is reverted.
    env.virt_api::<Secret>()
        .patch(
            "registry",
            &PatchParams::default(),
            &Patch::Merge(json!({"data": {"token": "ZWRpdGVk"}})),
        )
        .await
        .unwrap();
    eventually("edit reverted", || async {
        get(&env.virt_api::<Secret>(), "registry").await.filter(|s| {
            token(s).as_deref() == Some("one")
                && s.metadata.resource_version != first.metadata.resource_version
        })
    })
    .await;

    // A tenant's delete is undone.
    other.delete("pull", &DeleteParams::default()).await.unwrap();
    eventually("copy recreated", || async {
        get(&other, "pull")
            .await
            .filter(|s| s.metadata.uid != second.metadata.uid && token(s).as_deref() == Some("one"))
    })
    .await;

    // Host updates flow.
    Api::<Secret>::namespaced(env.host.clone(), &env.syncer_ns)
        .patch(
            "registry",
            &PatchParams::default(),
            &Patch::Merge(json!({"data": {"token": "dHdv"}})),
        )
        .await
        .unwrap();
    eventually("host update in both copies", || async {
        with_token("two")(copies().await)
    })
    .await;

    // The host secret goes: so do the copies, and only they.
    Api::<Secret>::namespaced(env.host.clone(), &env.syncer_ns)
        .delete("registry", &DeleteParams::default())
        .await
        .unwrap();
    eventually("copies removed", || async {
        let (a, b) = copies().await;
        (a.is_none() && b.is_none()).then_some(())
    })
    .await;
    let after = get(&env.virt_api::<Secret>(), "mine")
        .await
        .expect("the tenant's secret");
    assert_eq!(after.metadata.resource_version, mine.metadata.resource_version);
    assert_eq!(token(&after).as_deref(), Some("tenant"));
    assert!(!imported(&after));
}

#[tokio::test]
async fn an_import_is_written_once_and_removed_with_its_config_entry() {
    let mut env = Env::new().await;
    Api::<Secret>::namespaced(env.host.clone(), &env.syncer_ns)
        .create(&PostParams::default(), &secret("shared", "x"))
        .await
        .unwrap();
    let config = format!(
        "plugins:\n  import-secrets:\n    config:\n      imports:\n        - hostSecret: shared\n          targets:\n            - namespace: {}\n",
        env.virt_ns
    );
    env.start_syncer(&config).await;
    eventually("copy", || async {
        get(&env.virt_api::<Secret>(), "shared").await
    })
    .await;
    // A restart from a fully synced state (on a real virtual cluster there is more to sync).
    env.settle_syncer().await;
    env.stop_syncer().await;
    {
        // Unchanged configuration: a restart writes nothing.
        let (host, virt) = env.restart_counting(&config).await;
        assert_eq!(
            writes_besides_heartbeats(&host),
            Vec::<String>::new(),
            "host writes after restart"
        );
        assert_eq!(
            writes_besides_heartbeats(&virt),
            Vec::<String>::new(),
            "virtual writes after restart"
        );
        env.stop_syncer().await;
    }
    env.start_syncer("plugins:\n  import-secrets:\n    config:\n      imports: []\n")
        .await;
    eventually("copy removed", || async {
        get(&env.virt_api::<Secret>(), "shared")
            .await
            .is_none()
            .then_some(())
    })
    .await;
}

/// Plugins read their sections when they register, after connecting: `vcsync dev` brings the
/// servers.
#[test]
fn a_reserved_label_in_pod_hooks_is_refused_at_start_with_its_location() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("vcsync.yaml");
    std::fs::write(
        &path,
        "instance: a\nhostNamespace: b\nplugins:\n  pod-hooks:\n    config:\n      labels: {vcsync.dev/managed-by: x}\n",
    )
    .unwrap();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_vcsync"))
        .args(["dev", "--nodes", "0", "--dir"])
        .arg(dir.path().join("dev"))
        .arg("--config")
        .arg(&path)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + crate::env::PATIENCE;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("vcsync dev accepted a reserved label");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
    assert_eq!(status.code(), Some(2), "{stderr}");
    let line = stderr.lines().last().unwrap_or_default();
    assert!(
        line.contains("vcsync.yaml:6:")
            && line.contains("`vcsync.dev/managed-by`")
            && line.contains("reserved"),
        "{stderr}"
    );
}
