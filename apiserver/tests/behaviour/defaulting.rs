//! Defaulting: the fields kube-apiserver fills in minimal objects, compared field for field
//! (k8s.io/kubernetes pkg/apis/core/v1/defaults.go `SetDefaults_PodSpec`, `SetDefaults_Pod`,
//! `SetDefaults_Container`, `SetDefaults_Service`, `SetDefaults_Secret`,
//! `SetDefaults_PersistentVolumeClaimSpec`; the admission plugins `Priority`,
//! `DefaultTolerationSeconds` and `ServiceAccount`; the registries' ClusterIP allocation).
//! The `kube-api-access-*` volume and its mounts that `ServiceAccount` admission adds are
//! left out of the comparison (the embedded server does not add them).

use k8s_openapi::api::scheduling::v1::PriorityClass;
use kube::api::{Api, DeleteParams, PostParams};
use serde_json::{Value, json};

use crate::env::{Env, both, object};

/// POSTs `body` to `path` and returns the stored object as JSON.
pub async fn post(env: &Env, path: &str, body: Value) -> Result<Value, kube::Error> {
    let request = http::Request::post(path)
        .header("content-type", "application/json")
        .body(serde_json::to_vec(&body).unwrap())
        .unwrap();
    env.client.request::<Value>(request).await
}

/// `value` without the fields a server fills in per object (uids, times, addresses) and the
/// token volume.
fn without_volatile(mut pod_spec: Value) -> Value {
    if let Some(map) = pod_spec.as_object_mut() {
        map.remove("volumes");
    }
    for container in pod_spec["containers"].as_array_mut().into_iter().flatten() {
        if let Some(map) = container.as_object_mut() {
            map.remove("volumeMounts");
        }
    }
    pod_spec
}

both! {
    async fn a_minimal_pod_is_defaulted_as_kube_apiserver_does(env: Env) -> TestResult {
        let path = format!("/api/v1/namespaces/{}/pods", env.ns);
        let pod = post(&env, &path, json!({"metadata": {"name": "p"}, "spec": {"containers": [
            {"name": "a", "image": "nginx", "ports": [{"containerPort": 80}]},
            {"name": "b", "image": "registry.example:5000/app:1.2",
                "resources": {"limits": {"cpu": "1"}}}
        ]}})).await?;
        let expected = json!({
            "containers": [
                {"name": "a", "image": "nginx", "ports": [{"containerPort": 80, "protocol": "TCP"}],
                 "resources": {}, "terminationMessagePath": "/dev/termination-log",
                 "terminationMessagePolicy": "File", "imagePullPolicy": "Always"},
                {"name": "b", "image": "registry.example:5000/app:1.2",
                 "resources": {"limits": {"cpu": "1"}, "requests": {"cpu": "1"}},
                 "terminationMessagePath": "/dev/termination-log",
                 "terminationMessagePolicy": "File", "imagePullPolicy": "IfNotPresent"}
            ],
            "restartPolicy": "Always",
            "terminationGracePeriodSeconds": 30,
            "dnsPolicy": "ClusterFirst",
            "serviceAccountName": "default",
            "serviceAccount": "default",
            "securityContext": {},
            "schedulerName": "default-scheduler",
            "tolerations": [
                {"key": "node.kubernetes.io/not-ready", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300},
                {"key": "node.kubernetes.io/unreachable", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300}
            ],
            "priority": 0,
            "enableServiceLinks": true,
            "preemptionPolicy": "PreemptLowerPriority"
        });
        assert_eq!(without_volatile(pod["spec"].clone()), expected);
        assert_eq!(pod["status"], json!({"phase": "Pending", "qosClass": "Burstable"}));

        // A toleration of every NoExecute taint covers both defaults.
        let tolerant = post(&env, &path, json!({"metadata": {"name": "t"}, "spec": {
            "containers": [{"name": "a", "image": "nginx@sha256:0000000000000000000000000000000000000000000000000000000000000000"}],
            "tolerations": [{"operator": "Exists", "effect": "NoExecute"}]}})).await?;
        assert_eq!(tolerant["spec"]["tolerations"], json!([{"operator": "Exists", "effect": "NoExecute"}]));
        assert_eq!(tolerant["spec"]["containers"][0]["imagePullPolicy"], "IfNotPresent");
        env.finish().await;
        Ok(())
    }
}

both! {
    async fn a_pod_gets_the_priority_of_its_class(env: Env) -> TestResult {
        let classes: Api<PriorityClass> = Api::all(env.client.clone());
        let name = format!("{}-pc", env.ns);
        let class: PriorityClass = object(json!({"metadata": {"name": name}, "value": 1000,
            "preemptionPolicy": "Never"}));
        classes.create(&PostParams::default(), &class).await?;
        let path = format!("/api/v1/namespaces/{}/pods", env.ns);
        let container = json!([{"name": "a", "image": "nginx"}]);
        let pod = post(&env, &path, json!({"metadata": {"name": "p"},
            "spec": {"containers": container, "priorityClassName": name}})).await?;
        assert_eq!((pod["spec"]["priority"].clone(), pod["spec"]["preemptionPolicy"].clone()),
            (json!(1000), json!("Never")));
        // A built-in system class.
        let critical = post(&env, &path, json!({"metadata": {"name": "c"},
            "spec": {"containers": container, "priorityClassName": "system-node-critical"}})).await?;
        assert_eq!(critical["spec"]["priority"], 2_000_001_000);
        // An unknown class is refused by the Priority admission plugin.
        let err = post(&env, &path, json!({"metadata": {"name": "u"},
            "spec": {"containers": container, "priorityClassName": "no-such-class"}})).await.unwrap_err();
        let kube::Error::Api(status) = err else { panic!("expected an API error, got {err:?}") };
        assert_eq!((status.code, status.reason.as_str()), (403, "Forbidden"));
        assert_eq!(status.message, "pods \"u\" is forbidden: no PriorityClass with name no-such-class was found");
        // A priority that differs from the class's is refused.
        let err = post(&env, &path, json!({"metadata": {"name": "v"},
            "spec": {"containers": container, "priority": 5}})).await.unwrap_err();
        let kube::Error::Api(status) = err else { panic!("expected an API error, got {err:?}") };
        assert_eq!(status.code, 403);
        assert!(status.message.contains("the integer value of priority (5) must not be provided in pod spec"), "{}", status.message);
        classes.delete(&name, &DeleteParams::default()).await?;
        env.finish().await;
        Ok(())
    }
}

both! {
    async fn services_secrets_and_claims_are_defaulted(env: Env) -> TestResult {
        let ns = &env.ns;
        let service = post(&env, &format!("/api/v1/namespaces/{ns}/services"), json!({
            "metadata": {"name": "s"}, "spec": {"selector": {"app": "a"}, "ports": [{"port": 80}]}})).await?;
        let mut spec = service["spec"].clone();
        assert!(spec["clusterIP"].as_str().is_some_and(|ip| !ip.is_empty()));
        assert_eq!(spec["clusterIPs"], json!([spec["clusterIP"].clone()]));
        for allocated in ["clusterIP", "clusterIPs"] {
            spec.as_object_mut().unwrap().remove(allocated);
        }
        assert_eq!(spec, json!({"selector": {"app": "a"},
            "ports": [{"port": 80, "protocol": "TCP", "targetPort": 80}],
            "type": "ClusterIP", "sessionAffinity": "None", "ipFamilies": ["IPv4"],
            "ipFamilyPolicy": "SingleStack", "internalTrafficPolicy": "Cluster"}));
        assert_eq!(service["status"], json!({"loadBalancer": {}}));

        let affinity = post(&env, &format!("/api/v1/namespaces/{ns}/services"), json!({
            "metadata": {"name": "n"}, "spec": {"type": "NodePort", "sessionAffinity": "ClientIP",
            "ports": [{"port": 80, "targetPort": "http"}]}})).await?;
        assert_eq!(affinity["spec"]["sessionAffinityConfig"], json!({"clientIP": {"timeoutSeconds": 10800}}));
        assert_eq!(affinity["spec"]["externalTrafficPolicy"], "Cluster");
        assert_eq!(affinity["spec"]["ports"][0]["targetPort"], "http");

        let secret = post(&env, &format!("/api/v1/namespaces/{ns}/secrets"), json!({
            "metadata": {"name": "x"}, "data": {"a": "eA=="}})).await?;
        assert_eq!(secret["type"], "Opaque");

        let claim = post(&env, &format!("/api/v1/namespaces/{ns}/persistentvolumeclaims"), json!({
            "metadata": {"name": "c"}, "spec": {"accessModes": ["ReadWriteOnce"],
            "resources": {"requests": {"storage": "1Gi"}}}})).await?;
        assert_eq!(claim["spec"], json!({"accessModes": ["ReadWriteOnce"],
            "resources": {"requests": {"storage": "1Gi"}}, "volumeMode": "Filesystem"}));
        assert_eq!(claim["status"], json!({"phase": "Pending"}));
        env.finish().await;
        Ok(())
    }
}
