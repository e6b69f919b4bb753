//! `hostOwner`: every host copy in the host namespace is owned by one ConfigMap, so that
//! deleting it (a `helm uninstall`) lets the host's garbage collector delete the copies; copies
//! written before the option was on are given the owner when reconciled.

use k8s_openapi::api::core::v1::{ConfigMap, Pod, Secret};
use kube::{
    Api, ResourceExt,
    api::{DeleteParams, ListParams, PostParams},
};
use vcsync_translators::MANAGED_BY_LABEL;

use crate::{
    data_sync::{config_map, pod, secret},
    env::{Env, eventually},
};

/// Names of this instance's host copies of kind `K` in the host namespace, and the owner UIDs
/// each names.
async fn copies<K>(env: &Env) -> Vec<(String, Vec<String>)>
where
    K: kube::Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug,
{
    let params = ListParams::default().labels(&format!("{MANAGED_BY_LABEL}={}", env.instance));
    Api::<K>::namespaced(env.host.clone(), &env.host_ns)
        .list(&params)
        .await
        .unwrap()
        .items
        .iter()
        .map(|o| {
            let owners = o.owner_references().iter().map(|r| r.uid.clone()).collect();
            (o.name_any(), owners)
        })
        .collect()
}

async fn all_copies(env: &Env) -> Vec<(String, Vec<String>)> {
    let mut all = copies::<Pod>(env).await;
    all.extend(copies::<ConfigMap>(env).await);
    all.extend(copies::<Secret>(env).await);
    all
}

async fn app(env: &Env, name: &str) {
    let pp = PostParams::default();
    env.virt_api::<ConfigMap>()
        .create(&pp, &config_map(name, &[("k", "v")]))
        .await
        .unwrap();
    env.virt_api::<Secret>().create(&pp, &secret(name)).await.unwrap();
    env.virt_api::<Pod>()
        .create(&pp, &pod(name, name, name))
        .await
        .unwrap();
}

#[tokio::test]
async fn host_copies_are_owned_by_the_host_owner_and_collected_with_it() {
    let mut env = Env::new().await;
    let owner_name = format!("vcsync-{}-owner", env.instance);
    let owners = Api::<ConfigMap>::namespaced(env.host.clone(), &env.syncer_ns);
    let owner = owners
        .create(
            &PostParams::default(),
            &serde_json::from_value(serde_json::json!({"metadata": {"name": owner_name}})).unwrap(),
        )
        .await
        .unwrap();
    let owner_uid = owner.uid().unwrap();

    // Copies written without the option: an older vcsync's.
    env.start_syncer("").await;
    app(&env, "early").await;
    eventually("the early copies", || async {
        (all_copies(&env).await.len() >= 4).then_some(())
    })
    .await;
    assert!(all_copies(&env).await.iter().all(|(_, owners)| owners.is_empty()));
    env.stop_syncer().await;

    env.start_syncer(&format!("hostOwner: {owner_name}\n")).await;
    app(&env, "late").await;
    // Pod, ConfigMap, Secret and token Secret of each app.
    if env.syncer_ns != env.host_ns {
        // The per-namespace mapping: the copies live in namespaces the owner cannot own.
        eventually("the late copies", || async {
            (all_copies(&env).await.len() >= 8).then_some(())
        })
        .await;
        assert!(all_copies(&env).await.iter().all(|(_, owners)| owners.is_empty()));
        return;
    }
    eventually("every copy owned by the hostOwner", || async {
        let all = all_copies(&env).await;
        let owned = all
            .iter()
            .all(|(_, owners)| owners == std::slice::from_ref(&owner_uid));
        (all.len() >= 8 && owned).then_some(())
    })
    .await;

    if env.embedded().is_some() {
        // No garbage collector runs on the embedded host.
        return;
    }
    // The uninstall: the syncer goes, and the owner with it.
    env.stop_syncer().await;
    owners
        .delete(&owner_name, &DeleteParams::background())
        .await
        .unwrap();
    eventually("the host's garbage collector deleted every copy", || async {
        all_copies(&env).await.is_empty().then_some(())
    })
    .await;
}

/// Runs helm against the host cluster of `env`; panics with its output when it fails.
fn helm(env: &Env, args: &[&str]) {
    let out = std::process::Command::new(crate::helm::helm())
        .args(args)
        .arg("--kubeconfig")
        .arg(env.host_kubeconfig())
        .output()
        .expect("running helm (install it or set VCSYNC_HELM)");
    assert!(
        out.status.success(),
        "helm {args:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test]
async fn helm_uninstall_lets_the_hosts_garbage_collector_delete_the_tenants_host_copies() {
    let mut env = Env::new().await;
    if env.embedded().is_some() || env.syncer_ns != env.host_ns {
        eprintln!("skipped: needs a real host (its garbage collector) and the single mapping");
        return;
    }
    // The release is the cluster: its name is the instance, its namespace the host namespace.
    let chart = crate::helm::root().join("deploy/chart/vcsync");
    let release = env.instance.clone();
    helm(
        &env,
        &[
            "install",
            &release,
            chart.to_str().unwrap(),
            "--namespace",
            &env.syncer_ns,
            "--set",
            "persistence.enabled=false,replicas=0,podSecurity.enforce=",
        ],
    );
    let owner = format!("vcsync-{release}-owner");
    Api::<ConfigMap>::namespaced(env.host.clone(), &env.syncer_ns)
        .get(&owner)
        .await
        .expect("the chart's owner ConfigMap");
    // The test's syncer stands in for the release's (whose control plane does not run here).
    env.start_syncer(&format!("hostOwner: {owner}\n")).await;
    app(&env, "web").await;
    eventually("the app's copies owned by the release", || async {
        let all = all_copies(&env).await;
        (all.len() >= 4 && all.iter().all(|(_, owners)| owners.len() == 1)).then_some(())
    })
    .await;
    env.stop_syncer().await;
    helm(
        &env,
        &["uninstall", &release, "--namespace", &env.syncer_ns, "--wait"],
    );
    eventually("no host copy left after the uninstall", || async {
        all_copies(&env).await.is_empty().then_some(())
    })
    .await;
}
