//! Tenant versus host: the Pod Security Standard gate (on by default, at `baseline`), tenant
//! tolerations filtered by `sync.pods.tolerations`, and host requests that stay within the
//! least-privilege RBAC `vcsync rbac` generates for the same configuration.

use k8s_openapi::api::{
    core::v1::{ConfigMap, Event, PersistentVolumeClaim, Pod, Secret, Service},
    rbac::v1::PolicyRule,
};
use kube::api::{DeleteParams, PostParams};
use serde_json::json;
use vcsync_syncer::rbac::host_rbac;

use crate::{
    data_sync::{config_map, pod, secret},
    env::{Env, SyncerProcess, eventually, get},
    pods::simple_pod,
};

/// The node escape of the issue: host network and PIDs, a privileged container, the node's
/// root filesystem.
fn privileged_pod(name: &str) -> Pod {
    serde_json::from_value(json!({
        "metadata": {"name": name},
        "spec": {"hostNetwork": true, "hostPID": true,
                 "containers": [{"name": "app", "image": "nginx", "securityContext": {"privileged": true},
                                 "volumeMounts": [{"name": "root", "mountPath": "/host"}]}],
                 "volumes": [{"name": "root", "hostPath": {"path": "/"}}]}
    }))
    .unwrap()
}

/// With the default configuration (no `podSecurityStandard`: baseline).
#[tokio::test]
async fn a_pod_that_breaks_the_pod_security_standard_never_reaches_the_host_and_says_why() {
    let mut env = Env::new().await;
    env.start_syncer("").await;
    let pods = env.virt_api::<Pod>();
    pods.create(&PostParams::default(), &privileged_pod("root"))
        .await
        .unwrap();
    pods.create(&PostParams::default(), &simple_pod("web"))
        .await
        .unwrap();

    let warning = eventually("PodSecurityViolation event on the virtual pod", || async {
        let events = env.virt_api::<Event>().list(&Default::default()).await.unwrap();
        events.items.into_iter().find(|e| {
            e.reason.as_deref() == Some("PodSecurityViolation")
                && e.involved_object.name.as_deref() == Some("root")
        })
    })
    .await;
    assert_eq!(warning.type_.as_deref(), Some("Warning"));
    let message = warning.message.unwrap_or_default();
    for rule in ["hostNetwork", "hostPID", "privileged", "hostPath"] {
        assert!(message.contains(rule), "{rule} missing from {message}");
    }

    // A compliant pod of the same tenant goes down; by then the other would have too.
    eventually("host pod of the compliant pod", || async {
        get(&env.host_api::<Pod>(), &env.host_name("web")).await
    })
    .await;
    assert!(
        get(&env.host_api::<Pod>(), &env.host_name("root"))
            .await
            .is_none(),
        "the privileged pod must not reach the host"
    );
}

/// `privileged` turns the gate off, and only when asked for, with a warning at start.
#[tokio::test]
async fn the_privileged_level_must_be_chosen_and_is_warned_about() {
    let env = Env::new().await;
    let path = std::env::temp_dir().join(format!("vcsync-{}-privileged.yaml", env.instance));
    std::fs::write(
        &path,
        env.config_text("sync:\n  pods:\n    podSecurityStandard: privileged\n"),
    )
    .unwrap();
    let mut syncer = SyncerProcess::spawn(&path, "info");
    syncer.wait_for_log("controllers started").await;
    assert!(
        syncer.logged("podSecurityStandard is privileged"),
        "{:#?}",
        syncer.lines()
    );
    env.virt_api::<Pod>()
        .create(&PostParams::default(), &privileged_pod("root"))
        .await
        .unwrap();
    if env.embedded().is_some() {
        // A real host may refuse it by its own Pod Security admission, as it should.
        eventually("host pod of the privileged pod", || async {
            get(&env.host_api::<Pod>(), &env.host_name("root")).await
        })
        .await;
    }
    syncer.terminate();
    syncer.wait_exit().await;
    let _ = std::fs::remove_file(&path);
}

/// With the default configuration: a toleration of every taint (`{operator: Exists}`) is left
/// off the host pod, the DefaultTolerationSeconds ones stay, the pod runs and says what was
/// dropped.
#[tokio::test]
async fn a_toleration_of_every_taint_never_reaches_the_host() {
    let mut env = Env::new().await;
    env.start_syncer("").await;
    let pod: Pod = serde_json::from_value(json!({
        "metadata": {"name": "everywhere"},
        "spec": {"containers": [{"name": "app", "image": "nginx:1.27"}],
                 "tolerations": [
                     {"operator": "Exists"},
                     {"key": "node-role.kubernetes.io/control-plane", "operator": "Exists", "effect": "NoSchedule"},
                     {"key": "node.kubernetes.io/unreachable", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 120}]}
    }))
    .unwrap();
    env.virt_api::<Pod>()
        .create(&PostParams::default(), &pod)
        .await
        .unwrap();

    let host = eventually("host pod", || async {
        get(&env.host_api::<Pod>(), &env.host_name("everywhere")).await
    })
    .await;
    let tolerations = host.spec.unwrap().tolerations.unwrap_or_default();
    assert!(
        !tolerations
            .iter()
            .any(|t| t.key.as_deref().unwrap_or_default().is_empty()
                || t.key.as_deref() == Some("node-role.kubernetes.io/control-plane")),
        "dropped tolerations reached the host: {tolerations:#?}"
    );
    assert!(
        tolerations
            .iter()
            .any(|t| t.key.as_deref() == Some("node.kubernetes.io/unreachable")
                && t.toleration_seconds == Some(120)),
        "the allowed toleration is kept: {tolerations:#?}"
    );

    let event = eventually("TolerationsDropped event on the virtual pod", || async {
        let events = env.virt_api::<Event>().list(&Default::default()).await.unwrap();
        events.items.into_iter().find(|e| {
            e.reason.as_deref() == Some("TolerationsDropped")
                && e.involved_object.name.as_deref() == Some("everywhere")
        })
    })
    .await;
    let message = event.message.unwrap_or_default();
    assert!(
        message.contains("operator: Exists") && message.contains("node-role.kubernetes.io/control-plane"),
        "{message}"
    );
    assert!(!message.contains("unreachable"), "{message}");
}

/// Whether `rules` grant `verb` on `resource` (a plural, with `/subresource` when there is one).
fn grants(rules: &[PolicyRule], verb: &str, resource: &str) -> bool {
    rules.iter().any(|rule| {
        rule.verbs.iter().any(|v| v == verb) && rule.resources.iter().flatten().any(|r| r == resource)
    })
}

#[tokio::test]
async fn host_requests_of_a_workload_stay_within_the_generated_rbac() {
    let mut env = Env::new().await;
    let Some((host, _)) = env.embedded() else {
        eprintln!(
            "skipped: checking every host request against the RBAC needs the embedded host's request log"
        );
        return;
    };
    host.reset_counters();
    env.start_syncer("sync:\n  serviceAccounts: {enabled: true}\n")
        .await;

    let post = PostParams::default();
    env.virt_api::<ConfigMap>()
        .create(&post, &config_map("app-config", &[("k", "v")]))
        .await
        .unwrap();
    env.virt_api::<Secret>()
        .create(&post, &secret("app-secret"))
        .await
        .unwrap();
    env.virt_api::<Pod>()
        .create(&post, &pod("web", "app-config", "app-secret"))
        .await
        .unwrap();
    let service: Service = serde_json::from_value(json!({
        "metadata": {"name": "web"},
        "spec": {"selector": {"app": "web"}, "ports": [{"port": 80}]}
    }))
    .unwrap();
    env.virt_api::<Service>().create(&post, &service).await.unwrap();
    let claim: PersistentVolumeClaim = serde_json::from_value(json!({
        "metadata": {"name": "data"},
        "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}
    }))
    .unwrap();
    env.virt_api::<PersistentVolumeClaim>()
        .create(&post, &claim)
        .await
        .unwrap();
    eventually("host pod, service and claim", || async {
        let pod = get(&env.host_api::<Pod>(), &env.host_name("web")).await?;
        get(&env.host_api::<Service>(), &env.host_name("web")).await?;
        get(&env.host_api::<PersistentVolumeClaim>(), &env.host_name("data")).await?;
        Some(pod)
    })
    .await;
    env.virt_api::<Pod>()
        .delete("web", &DeleteParams::default().grace_period(0))
        .await
        .unwrap();
    eventually("host pod gone", || async {
        get(&env.host_api::<Pod>(), &env.host_name("web"))
            .await
            .is_none()
            .then_some(())
    })
    .await;

    let rbac = host_rbac(&env.config(), "vcsync");
    let rules: Vec<PolicyRule> = rbac
        .role
        .iter()
        .flat_map(|(role, _)| role.rules.clone().unwrap_or_default())
        .chain(
            rbac.cluster_role
                .iter()
                .flat_map(|(role, _)| role.rules.clone().unwrap_or_default()),
        )
        .collect();
    let counters = env.embedded().unwrap().0.counters();
    let denied: Vec<String> = counters
        .iter()
        .filter(|(verb, resource, _)| !grants(&rules, verb, resource))
        .map(|(verb, resource, n)| format!("{verb} {resource} x{n}"))
        .collect();
    assert!(counters.writes() > 0, "the syncer wrote to the host");
    assert!(
        denied.is_empty(),
        "host requests outside the generated RBAC: {denied:?}"
    );
}

#[tokio::test]
async fn secret_values_never_reach_the_log_even_at_trace_level() {
    let env = Env::new().await;
    let value = "s3cret-value-that-must-not-be-logged";
    let path = std::env::temp_dir().join(format!("vcsync-{}-secrets.yaml", env.instance));
    std::fs::write(&path, env.config_text("sync:\n  secrets: {all: true}\n")).unwrap();
    let mut syncer = SyncerProcess::spawn(&path, "trace");
    let secret: Secret = serde_json::from_value(json!({
        "metadata": {"name": "db"}, "stringData": {"password": value}
    }))
    .unwrap();
    env.virt_api::<Secret>()
        .create(&PostParams::default(), &secret)
        .await
        .unwrap();
    let host_copy = eventually("host copy of the secret", || async {
        get(&env.host_api::<Secret>(), &env.host_name("db")).await
    })
    .await;
    assert_eq!(host_copy.data.unwrap()["password"].0, value.as_bytes());

    syncer.terminate();
    syncer.wait_exit().await;
    let log = syncer.lines().join("\n");
    assert!(
        log.contains("created host object"),
        "the log is the syncer's, at trace level"
    );
    let encoded = base64_of(value.as_bytes());
    assert!(!log.contains(value), "the secret value is in the log");
    assert!(!log.contains(&encoded), "the base64 secret value is in the log");
}

fn base64_of(bytes: &[u8]) -> String {
    // The JSON form of Secret data, as k8s-openapi serializes ByteString.
    let json = serde_json::to_value(k8s_openapi::ByteString(bytes.to_vec())).unwrap();
    json.as_str().unwrap().to_string()
}
