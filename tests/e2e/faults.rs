//! The syncer converges through injected API server faults (`ApiServer::faults`): 500s, 429s with
//! Retry-After, 409 conflicts, latency, dropped watches, watches cut after a few events, and 410
//! Gone on re-watch. Each test runs the same workload of config map and pod creates, updates and
//! deletes while the fault is active and then checks the full state: every virtual object has
//! its correct host copy, deletes reached the host, no extra host objects. Embedded servers only
//! (the faults are the embedded server's); skipped against real clusters.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use k8s_openapi::api::core::v1::{ConfigMap, Pod};
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use serde_json::json;
use vcsync_apiserver::{ApiServer, Fault, Simulator, SimulatorConfig, Verb};
use vcsync_translators::{MANAGED_BY_LABEL, NAMESPACE_LABEL, OBJECT_KIND_ANNOTATION, OBJECT_NAME_ANNOTATION};

use crate::{
    data_sync::config_map,
    env::{Env, eventually, get},
};

const ALL_CONFIG_MAPS: &str = "sync:\n  configMaps:\n    all: true\n";

/// What the virtual cluster should hold after [`workload`], and so the host.
#[derive(Clone, Default)]
struct Expected {
    config_maps: BTreeMap<String, BTreeMap<String, String>>,
    pods: BTreeSet<String>,
    /// Virtual config maps not (yet) expected on the host.
    virtual_only: BTreeSet<String>,
}

/// A syncer over embedded servers with a simulator on the host (pods get scheduled and run, so
/// status flows up and pod deletes are graceful). None against real clusters.
async fn start(env: &mut Env) -> Option<(ApiServer, ApiServer, Simulator)> {
    let Some((host, virt)) = env.embedded().cloned() else {
        eprintln!("skipped: fault injection needs the embedded API servers");
        return None;
    };
    let simulator = host.start_simulator(SimulatorConfig::default());
    env.start_syncer(ALL_CONFIG_MAPS).await;
    Some((host, virt, simulator))
}

fn simple_pod(name: &str, config_map: &str) -> Pod {
    serde_json::from_value(json!({
        "metadata": {"name": name, "labels": {"app": name}},
        "spec": {
            "terminationGracePeriodSeconds": 1,
            "containers": [{"name": "app", "image": "nginx:1.27"}],
            "volumes": [{"name": "config", "configMap": {"name": config_map}}]
        }
    }))
    .unwrap()
}

fn data(value: &str) -> BTreeMap<String, String> {
    [("v".to_string(), value.to_string())].into()
}

/// Creates, updates and deletes config maps and pods in the virtual cluster (names prefixed with
/// `round`), and returns what should remain.
async fn workload(env: &Env, round: &str) -> Expected {
    let pp = PostParams::default();
    let cms = env.virt_api::<ConfigMap>();
    let pods = env.virt_api::<Pod>();
    let name = |n: &str| format!("{round}-{n}");
    for n in ["c1", "c2", "c3", "c4"] {
        cms.create(&pp, &config_map(&name(n), &[("v", "1")]))
            .await
            .unwrap();
    }
    for n in ["p1", "p2"] {
        pods.create(&pp, &simple_pod(&name(n), &name("c1")))
            .await
            .unwrap();
    }
    for n in ["c1", "c2"] {
        cms.patch(
            &name(n),
            &PatchParams::default(),
            &Patch::Merge(json!({"data": {"v": "2"}})),
        )
        .await
        .unwrap();
    }
    cms.delete(&name("c3"), &DeleteParams::default()).await.unwrap();
    pods.delete(&name("p2"), &DeleteParams::default().grace_period(1))
        .await
        .unwrap();
    Expected {
        config_maps: [
            (name("c1"), data("2")),
            (name("c2"), data("2")),
            (name("c4"), data("1")),
        ]
        .into(),
        pods: [name("p1")].into(),
        virtual_only: BTreeSet::new(),
    }
}

fn merge(a: Expected, b: Expected) -> Expected {
    Expected {
        config_maps: a.config_maps.into_iter().chain(b.config_maps).collect(),
        pods: a.pods.into_iter().chain(b.pods).collect(),
        virtual_only: a.virtual_only.into_iter().chain(b.virtual_only).collect(),
    }
}

/// The host objects of this syncer of kind `K`, by virtual name; an error when two host objects
/// claim the same virtual object (a duplicate), or the list failed (an injected fault).
async fn host_objects<K>(env: &Env, kind: &str) -> Result<BTreeMap<String, K>, String>
where
    K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug,
{
    // This test's virtual namespace only: every namespace has a `kube-root-ca.crt`, and with
    // `configMaps.all` each has a host copy.
    let selector = format!(
        "{MANAGED_BY_LABEL}={},{NAMESPACE_LABEL}={}",
        env.instance, env.virt_ns
    );
    let list = env
        .host_api::<K>()
        .list(&ListParams::default().labels(&selector))
        .await
        .map_err(|e| format!("listing host {kind}s: {e}"))?;
    let mut by_name = BTreeMap::new();
    for object in list.items {
        let annotations = object.meta().annotations.clone().unwrap_or_default();
        if annotations.get(OBJECT_KIND_ANNOTATION).map(String::as_str) != Some(kind) {
            continue;
        }
        let Some(name) = annotations.get(OBJECT_NAME_ANNOTATION).cloned() else {
            return Err(format!(
                "host {kind} {:?} without its virtual name",
                object.meta().name
            ));
        };
        if by_name.insert(name.clone(), object).is_some() {
            return Err(format!("two host {kind}s for virtual {name}"));
        }
    }
    Ok(by_name)
}

/// One look at both clusters: the differences from `expected`, empty when converged.
async fn differences(env: &Env, expected: &Expected) -> Vec<String> {
    let mut diffs = Vec::new();
    let host_cms = match host_objects::<ConfigMap>(env, "ConfigMap").await {
        Ok(objects) => objects,
        Err(e) => return vec![e],
    };
    let host_data: BTreeMap<String, BTreeMap<String, String>> = host_cms
        .into_iter()
        .filter(|(name, _)| !name.starts_with("kube-"))
        .map(|(name, cm)| (name, cm.data.unwrap_or_default()))
        .collect();
    if host_data != expected.config_maps {
        diffs.push(format!(
            "host config maps {host_data:?}, expected {:?}",
            expected.config_maps
        ));
    }
    let virt_cms = match env.virt_api::<ConfigMap>().list(&ListParams::default()).await {
        Ok(list) => list.items,
        Err(e) => return vec![format!("listing virtual config maps: {e}")],
    };
    let virt_cms: BTreeMap<String, BTreeMap<String, String>> = virt_cms
        .into_iter()
        .filter(|cm| {
            let name = cm.metadata.name.as_deref().unwrap_or_default();
            !name.starts_with("kube-") && !expected.virtual_only.contains(name)
        })
        .map(|cm| (cm.metadata.name.unwrap(), cm.data.unwrap_or_default()))
        .collect();
    if virt_cms != expected.config_maps {
        diffs.push(format!("virtual config maps {virt_cms:?}"));
    }
    let host_pods = match host_objects::<Pod>(env, "Pod").await {
        Ok(objects) => objects,
        Err(e) => return vec![e],
    };
    let host_pod_names: BTreeSet<String> = host_pods.keys().cloned().collect();
    if host_pod_names != expected.pods {
        diffs.push(format!(
            "host pods {host_pod_names:?}, expected {:?}",
            expected.pods
        ));
    }
    let virt_pods = match env.virt_api::<Pod>().list(&ListParams::default()).await {
        Ok(list) => list.items,
        Err(e) => return vec![format!("listing virtual pods: {e}")],
    };
    let virt_pod_names: BTreeSet<String> = virt_pods
        .iter()
        .map(|p| p.metadata.name.clone().unwrap())
        .collect();
    if virt_pod_names != expected.pods {
        diffs.push(format!("virtual pods {virt_pod_names:?}"));
    }
    // Status flows up: each remaining virtual pod runs where its host pod runs, with its IP.
    for pod in &virt_pods {
        let name = pod.metadata.name.clone().unwrap();
        let Some(host) = host_pods.get(&name) else {
            continue;
        };
        let status = |p: &Pod| {
            let s = p.status.clone().unwrap_or_default();
            (
                p.spec.as_ref().and_then(|s| s.node_name.clone()),
                s.phase,
                s.pod_ip,
            )
        };
        let (virt_status, host_status) = (status(pod), status(host));
        if virt_status != host_status || host_status.1.as_deref() != Some("Running") {
            diffs.push(format!(
                "pod {name}: virtual {virt_status:?}, host {host_status:?}"
            ));
        }
    }
    diffs
}

/// Waits until both clusters hold exactly `expected` (with its host copies), panicking with the
/// remaining differences otherwise.
async fn converged(env: &Env, expected: &Expected, what: &str) {
    let mut last = Vec::new();
    let result = tokio::time::timeout(crate::env::PATIENCE, async {
        loop {
            last = differences(env, expected).await;
            if last.is_empty() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    assert!(result.is_ok(), "{what}: not converged: {last:#?}");
}

#[tokio::test]
async fn faults_internal_errors_on_writes() {
    let mut env = Env::new().await;
    let Some((host, virt, _simulator)) = start(&mut env).await else {
        return;
    };
    let cm_writes = host
        .faults()
        .add(Fault::on_writes("configmaps").times(4).internal_error());
    let pod_writes = host
        .faults()
        .add(Fault::on_writes("pods").times(2).internal_error());
    // The syncer's status writes on the virtual side.
    let status_writes = virt.faults().add(
        Fault::on_verbs(&[Verb::Update, Verb::Patch], "pods/status")
            .times(2)
            .internal_error(),
    );
    let expected = workload(&env, "a").await;
    converged(&env, &expected, "after 500s on writes").await;
    assert_eq!(cm_writes.fired(), 4, "the config map write faults were hit");
    assert_eq!(pod_writes.fired(), 2, "the pod write faults were hit");
    assert_eq!(status_writes.fired(), 2, "the pod status write faults were hit");

    // Random failures of every write, on both sides, while the next round runs.
    host.faults().clear();
    virt.faults().clear();
    host.faults().seed(7);
    virt.faults().seed(11);
    let random_host = host
        .faults()
        .add(Fault::on_writes("*").probability(0.3).internal_error());
    virt.faults().add(
        Fault::on_verbs(&[Verb::Update, Verb::Patch], "pods/status")
            .probability(0.3)
            .internal_error(),
    );
    let expected = merge(expected, workload(&env, "b").await);
    converged(&env, &expected, "with 30% of writes failing").await;
    assert!(random_host.fired() > 0, "no host write failed");
}

#[tokio::test]
async fn faults_too_many_requests_honour_retry_after() {
    let mut env = Env::new().await;
    let Some((host, _virt, _simulator)) = start(&mut env).await else {
        return;
    };
    // Every create of one host config map is throttled for a while, with Retry-After: 3.
    let throttled = host.faults().add(
        Fault::on(Verb::Create, "configmaps")
            .name(&env.host_name("throttled"))
            .too_many_requests(3),
    );
    env.virt_api::<ConfigMap>()
        .create(&PostParams::default(), &config_map("throttled", &[("v", "1")]))
        .await
        .unwrap();
    eventually("the throttled create was tried", || async {
        (throttled.fired() >= 1).then_some(())
    })
    .await;
    // Other objects are not held up by the throttled one.
    let mut expected = workload(&env, "a").await;
    expected.virtual_only.insert("throttled".into());
    converged(&env, &expected, "beside a throttled object").await;
    // Within the 3s Retry-After window at most one retry: a client ignoring Retry-After (kube's
    // own backoff starts at 5ms, the syncer's at 200ms) would have sent many more.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let fired = throttled.fired();
    assert!(
        fired <= 2,
        "{fired} throttled creates within about 2s of a Retry-After: 3 answer"
    );
    throttled.remove();
    expected.virtual_only.clear();
    expected.config_maps.insert("throttled".into(), data("1"));
    let expected = merge(expected, workload(&env, "b").await);
    converged(&env, &expected, "after the throttling ended").await;

    // 429s on every host write type, a few times each, with a short Retry-After.
    let writes = host
        .faults()
        .add(Fault::on_writes("*").times(5).too_many_requests(1));
    host.reset_counters();
    let expected = merge(expected, workload(&env, "c").await);
    converged(&env, &expected, "through throttled writes").await;
    assert_eq!(writes.fired(), 5);
    // Each throttled write was retried: the writes include the five refused ones.
    assert!(host.counters().writes() >= 5 + 7, "{:?}", host.counters());
}

#[tokio::test]
async fn faults_conflicts_on_updates() {
    let mut env = Env::new().await;
    let Some((host, virt, _simulator)) = start(&mut env).await else {
        return;
    };
    let expected = workload(&env, "a").await;
    converged(&env, &expected, "before the conflicts").await;

    // Host updates of one config map and one pod conflict three times each.
    let cm_conflicts = host.faults().add(
        Fault::on_verbs(&[Verb::Update, Verb::Patch], "configmaps")
            .name(&env.host_name("a-c1"))
            .times(3)
            .conflict(),
    );
    let pod_conflicts = host.faults().add(
        Fault::on_verbs(&[Verb::Update, Verb::Patch], "pods")
            .name(&env.host_name("a-p1"))
            .times(3)
            .conflict(),
    );
    // Host deletes (vcsync deletes with a UID precondition) conflict too: `a-c2` is synced
    // already, so its delete surely reaches the host (a fresh object may be deleted
    // virtually before its host copy exists).
    let delete_conflicts = host.faults().add(
        Fault::on(Verb::Delete, "configmaps")
            .name(&env.host_name("a-c2"))
            .times(2)
            .conflict(),
    );
    let pod_delete_conflicts = host.faults().add(
        Fault::on(Verb::Delete, "pods")
            .name(&env.host_name("b-p2"))
            .times(2)
            .conflict(),
    );
    // And the syncer's status updates on the virtual side.
    let status_conflicts = virt.faults().add(
        Fault::on_verbs(&[Verb::Update, Verb::Patch], "pods/status")
            .times(3)
            .conflict(),
    );
    env.virt_api::<ConfigMap>()
        .patch(
            "a-c1",
            &PatchParams::default(),
            &Patch::Merge(json!({"data": {"v": "3"}})),
        )
        .await
        .unwrap();
    let image = Patch::Strategic(json!({"spec": {"containers": [{"name": "app", "image": "nginx:1.28"}]}}));
    env.virt_api::<Pod>()
        .patch("a-p1", &PatchParams::default(), &image)
        .await
        .unwrap();
    env.virt_api::<ConfigMap>()
        .delete("a-c2", &DeleteParams::default())
        .await
        .unwrap();
    let mut expected = merge(expected, workload(&env, "b").await);
    expected.config_maps.insert("a-c1".into(), data("3"));
    expected.config_maps.remove("a-c2");
    converged(&env, &expected, "through conflicts").await;
    eventually("new image on the host despite conflicts", || async {
        get(&env.host_api::<Pod>(), &env.host_name("a-p1"))
            .await
            .filter(|p| p.spec.as_ref().unwrap().containers[0].image.as_deref() == Some("nginx:1.28"))
    })
    .await;
    assert_eq!(cm_conflicts.fired(), 3, "the config map conflicts were hit");
    assert_eq!(pod_conflicts.fired(), 3, "the pod conflicts were hit");
    assert_eq!(status_conflicts.fired(), 3, "the status conflicts were hit");
    assert_eq!(
        delete_conflicts.fired(),
        2,
        "the config map delete conflicts were hit"
    );
    // The pod may be deleted on the virtual side before its host pod was created.
    assert!(pod_delete_conflicts.fired() <= 2);
}

#[tokio::test]
async fn faults_latency() {
    let mut env = Env::new().await;
    let Some((host, virt, _simulator)) = start(&mut env).await else {
        return;
    };
    let slow_host = host.faults().add(
        Fault::on_verbs(
            &[
                Verb::Create,
                Verb::Update,
                Verb::Patch,
                Verb::Delete,
                Verb::Get,
                Verb::Watch,
            ],
            "*",
        )
        .latency(Duration::from_millis(150)),
    );
    let slow_virt = virt.faults().add(
        Fault::on_verbs(&[Verb::Update, Verb::Patch, Verb::Watch], "*").latency(Duration::from_millis(150)),
    );
    // Slow re-watches: the syncer's watches are re-opened under latency.
    host.faults().drop_watches("*", None);
    virt.faults().drop_watches("*", None);
    let expected = workload(&env, "a").await;
    converged(&env, &expected, "under latency").await;
    assert!(slow_host.fired() > 0 && slow_virt.fired() > 0);
}

#[tokio::test]
async fn faults_dropped_watches() {
    let mut env = Env::new().await;
    let Some((host, virt, _simulator)) = start(&mut env).await else {
        return;
    };
    let expected = workload(&env, "a").await;
    converged(&env, &expected, "before the drops").await;
    let dropped = host.faults().drop_watches("*", None) + virt.faults().drop_watches("*", None);
    assert!(dropped > 0, "the syncer had no open watches to drop");
    // Changes made right after the drop, while the syncer re-watches, with more drops between.
    let cms = env.virt_api::<ConfigMap>();
    cms.patch(
        "a-c2",
        &PatchParams::default(),
        &Patch::Merge(json!({"data": {"v": "3"}})),
    )
    .await
    .unwrap();
    cms.delete("a-c4", &DeleteParams::default()).await.unwrap();
    let b = workload(&env, "b").await;
    virt.faults().drop_watches("*", None);
    host.faults().drop_watches("*", None);
    let c = workload(&env, "c").await;
    virt.faults().drop_watches("configmaps", None);
    let mut expected = merge(merge(expected, b), c);
    expected.config_maps.insert("a-c2".into(), data("3"));
    expected.config_maps.remove("a-c4");
    converged(&env, &expected, "after dropped watches").await;

    // Host drift made right after a drop of the host watches is still noticed and reverted.
    host.faults().drop_watches("*", None);
    env.host_api::<ConfigMap>()
        .patch(
            &env.host_name("a-c1"),
            &PatchParams::default(),
            &Patch::Merge(json!({"data": {"v": "tampered"}})),
        )
        .await
        .unwrap();
    converged(&env, &expected, "host drift after a dropped watch").await;
}

#[tokio::test]
async fn faults_watches_cut_after_a_few_events() {
    let mut env = Env::new().await;
    let Some((host, virt, _simulator)) = start(&mut env).await else {
        return;
    };
    // Every watch of config maps and pods, on both sides, ends after two events.
    let mut rules = Vec::new();
    for server in [&host, &virt] {
        for resource in ["configmaps", "pods"] {
            rules.push(
                server
                    .faults()
                    .add(Fault::on(Verb::Watch, resource).close_watch_after(2)),
            );
        }
        server.faults().drop_watches("*", None);
    }
    let a = workload(&env, "a").await;
    let b = workload(&env, "b").await;
    let expected = merge(a, b);
    converged(&env, &expected, "with watches cut after two events").await;
    assert!(
        rules.iter().any(|r| r.fired() > 1),
        "the syncer's watches were not cut"
    );
}

#[tokio::test]
async fn faults_gone_on_rewatch() {
    let mut env = Env::new().await;
    let Some((host, virt, _simulator)) = start(&mut env).await else {
        return;
    };
    let expected = workload(&env, "a").await;
    converged(&env, &expected, "before the expiry").await;
    // Every resourceVersion handed out so far is too old, and every watch is dropped: the syncer
    // re-watches, gets 410, and must re-list.
    let gone_host = host
        .faults()
        .add(Fault::on_verbs(&[Verb::Watch, Verb::List], "*").gone());
    let gone_virt = virt
        .faults()
        .add(Fault::on_verbs(&[Verb::Watch, Verb::List], "*").gone());
    // Changes while the syncer is not watching, before and after the drop.
    let cms = env.virt_api::<ConfigMap>();
    cms.delete("a-c1", &DeleteParams::default()).await.unwrap();
    host.faults().drop_watches("*", None);
    virt.faults().drop_watches("*", None);
    cms.patch(
        "a-c2",
        &PatchParams::default(),
        &Patch::Merge(json!({"data": {"v": "3"}})),
    )
    .await
    .unwrap();
    env.virt_api::<Pod>()
        .delete("a-p1", &DeleteParams::default().grace_period(1))
        .await
        .unwrap();
    let b = workload(&env, "b").await;
    let mut expected = merge(expected, b);
    expected.config_maps.remove("a-c1");
    expected.config_maps.insert("a-c2".into(), data("3"));
    expected.pods.remove("a-p1");
    converged(&env, &expected, "after 410 Gone on re-watch").await;
    assert!(
        gone_host.fired() > 0,
        "the syncer never re-watched the host from an old resourceVersion"
    );
    assert!(
        gone_virt.fired() > 0,
        "the syncer never re-watched the virtual cluster from an old resourceVersion"
    );

    // Once more with the whole server compacted, as after an etcd compaction.
    host.compact();
    virt.compact();
    let c = workload(&env, "c").await;
    let expected = merge(expected, c);
    converged(&env, &expected, "after compaction").await;
}

#[tokio::test]
async fn faults_list_and_watch_errors() {
    let mut env = Env::new().await;
    let Some((host, virt)) = env.embedded().cloned() else {
        eprintln!("skipped: fault injection needs the embedded API servers");
        return;
    };
    // Before the syncer starts: its first list of config maps and pods fails on each side, and
    // so do its first watch (500) and second watch (429, retried by the client after
    // Retry-After). Bounded counts, because kube-runtime's watcher backs off exponentially
    // (0.8s, 1.6s, ... up to 30s) on consecutive errors.
    let mut rules = Vec::new();
    for server in [&host, &virt] {
        for resource in ["configmaps", "pods"] {
            let faults = server.faults();
            rules.push(faults.add(Fault::on(Verb::List, resource).times(1).internal_error()));
            rules.push(faults.add(Fault::on(Verb::Watch, resource).times(1).internal_error()));
            rules.push(faults.add(Fault::on(Verb::Watch, resource).times(1).too_many_requests(1)));
        }
    }
    let _simulator = host.start_simulator(SimulatorConfig::default());
    env.start_syncer(ALL_CONFIG_MAPS).await;
    let a = workload(&env, "a").await;
    let b = workload(&env, "b").await;
    let expected = merge(a, b);
    converged(&env, &expected, "through failing lists and watches").await;
    for rule in &rules {
        assert_eq!(rule.fired(), 1, "a list or watch fault was not hit");
    }
    // Once more after dropping every watch, with the next re-watches failing.
    for server in [&host, &virt] {
        server
            .faults()
            .add(Fault::on(Verb::Watch, "*").times(2).internal_error());
        server.faults().drop_watches("*", None);
    }
    let expected = merge(expected, workload(&env, "c").await);
    converged(&env, &expected, "through failing re-watches").await;
}
