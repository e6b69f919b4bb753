//! Pods: translated down with their references, status and node up, updates, graceful
//! deletion, host pods deleted behind vcsync's back, and restarts that write nothing.

use k8s_openapi::api::core::v1::{ConfigMap, Event, Pod, Secret, Service};
use kube::{
    Api,
    api::{DeleteParams, ListParams, Patch, PatchParams, PostParams},
};
use serde_json::json;
use vcsync_translators::{MANAGED_BY_LABEL, NAMESPACE_LABEL, OBJECT_NAME_ANNOTATION};

use crate::{
    data_sync::config_map,
    env::{Env, eventually, get, writes_besides_heartbeats},
    kubelet::{HostKubelet, NODE, bind_host_pod, finish_host_pod_deletion, report_running, run_host_pod},
};

const TOKEN_MOUNT_PATH: &str = "/var/run/secrets/kubernetes.io/serviceaccount";

/// A pod referencing a config map and a secret in every way a pod can.
pub(crate) fn rich_pod(name: &str) -> Pod {
    serde_json::from_value(json!({
        "metadata": {"name": name, "labels": {"app": "web"}},
        "spec": {
            "imagePullSecrets": [{"name": "app-secret"}],
            "containers": [{
                "name": "app", "image": "nginx:1.27",
                "env": [
                    {"name": "PASSWORD", "valueFrom": {"secretKeyRef": {"name": "app-secret", "key": "password"}}},
                    {"name": "GREETING", "valueFrom": {"configMapKeyRef": {"name": "app-config", "key": "greeting"}}},
                    {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}
                ],
                "envFrom": [{"configMapRef": {"name": "app-config"}}],
                "volumeMounts": [{"name": "config", "mountPath": "/etc/app"}]
            }],
            "volumes": [
                {"name": "config", "configMap": {"name": "app-config"}},
                {"name": "both", "projected": {"sources": [
                    {"configMap": {"name": "app-config"}}, {"secret": {"name": "app-secret"}}]}}
            ]
        }
    }))
    .unwrap()
}

/// The ConfigMap and Secret [`rich_pod`] references, in the virtual cluster (a pod whose
/// references are missing waits off the host).
async fn rich_pod_data(env: &Env) {
    let pp = PostParams::default();
    env.virt_api::<ConfigMap>()
        .create(&pp, &config_map("app-config", &[("greeting", "hello")]))
        .await
        .unwrap();
    env.virt_api::<Secret>()
        .create(
            &pp,
            &serde_json::from_value(
                json!({"metadata": {"name": "app-secret"}, "stringData": {"password": "pw"}}),
            )
            .unwrap(),
        )
        .await
        .unwrap();
}

pub(crate) fn simple_pod(name: &str) -> Pod {
    serde_json::from_value(json!({
        "metadata": {"name": name, "labels": {"app": name}},
        "spec": {"containers": [{"name": "app", "image": "nginx:1.27"}]}
    }))
    .unwrap()
}

async fn create_pod(env: &Env, pod: &Pod) -> Pod {
    env.virt_api::<Pod>()
        .create(&PostParams::default(), pod)
        .await
        .unwrap()
}

async fn host_pod(env: &Env, name: &str) -> Pod {
    eventually(&format!("host pod of {name}"), || async {
        get(&env.host_api::<Pod>(), &env.host_name(name)).await
    })
    .await
}

fn phase(pod: &Pod) -> Option<&str> {
    pod.status.as_ref()?.phase.as_deref()
}

fn node_name(pod: &Pod) -> Option<&str> {
    pod.spec.as_ref()?.node_name.as_deref()
}

#[tokio::test]
async fn a_virtual_pod_runs_on_the_host_with_its_references_translated() {
    let mut env = Env::new().await;
    let pp = PostParams::default();
    if env.embedded().is_some() {
        // The virtual cluster's DNS service, as a real one has.
        let dns: Service = serde_json::from_value(
            json!({"metadata": {"name": "kube-dns", "namespace": "kube-system"},
            "spec": {"ports": [{"name": "dns", "port": 53, "protocol": "UDP"}]}}),
        )
        .unwrap();
        Api::<Service>::namespaced(env.virt.clone(), "kube-system")
            .create(&pp, &dns)
            .await
            .unwrap();
    }
    env.start_syncer("").await;
    rich_pod_data(&env).await;
    create_pod(&env, &rich_pod("web")).await;

    let host = host_pod(&env, "web").await;
    let meta = &host.metadata;
    assert_eq!(meta.labels.as_ref().unwrap()[MANAGED_BY_LABEL], env.instance);
    assert_eq!(meta.labels.as_ref().unwrap()[NAMESPACE_LABEL], env.virt_ns);
    assert_eq!(meta.labels.as_ref().unwrap()["app"], "web");
    assert_eq!(meta.annotations.as_ref().unwrap()[OBJECT_NAME_ANNOTATION], "web");

    let spec = serde_json::to_value(host.spec.as_ref().unwrap()).unwrap();
    let (cm, secret) = (env.host_name("app-config"), env.host_name("app-secret"));
    assert_eq!(spec["volumes"][0]["configMap"]["name"], cm.as_str());
    assert_eq!(
        spec["volumes"][1]["projected"]["sources"][0]["configMap"]["name"],
        cm.as_str()
    );
    assert_eq!(
        spec["volumes"][1]["projected"]["sources"][1]["secret"]["name"],
        secret.as_str()
    );
    let app = &spec["containers"][0];
    let env_var = |name: &str| {
        app["env"]
            .as_array()
            .unwrap()
            .iter()
            .find(|v| v["name"] == name)
            .cloned()
            .unwrap_or_else(|| panic!("no {name} in {app:#}"))
    };
    assert_eq!(
        env_var("PASSWORD")["valueFrom"]["secretKeyRef"]["name"],
        secret.as_str()
    );
    assert_eq!(
        env_var("GREETING")["valueFrom"]["configMapKeyRef"]["name"],
        cm.as_str()
    );
    assert_eq!(
        env_var("POD_NAME")["valueFrom"]["fieldRef"]["fieldPath"],
        "metadata.annotations['vcsync.dev/object-name']"
    );
    assert_eq!(app["envFrom"][0]["configMapRef"]["name"], cm.as_str());
    assert_eq!(spec["imagePullSecrets"][0]["name"], secret.as_str());

    // Never a host token: the host pod's tokens come from the virtual API server.
    assert_eq!(spec["automountServiceAccountToken"], false);
    assert_eq!(spec["enableServiceLinks"], false);
    let token_secret = format!("{}.sa-token", env.host_name("web"));
    let token_volume = spec["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| {
            v["projected"]["sources"]
                .as_array()
                .is_some_and(|s| s.iter().any(|s| s["secret"]["name"] == token_secret.as_str()))
        })
        .unwrap_or_else(|| panic!("no token volume in {spec:#}"));
    assert!(
        app["volumeMounts"]
            .as_array()
            .unwrap()
            .iter()
            .any(|m| m["name"] == token_volume["name"] && m["mountPath"] == TOKEN_MOUNT_PATH)
    );
    let tokens = get(&env.host_api::<Secret>(), &token_secret)
        .await
        .expect("token secret on the host");
    let data = tokens.data.unwrap();
    assert!(!data["token"].0.is_empty());
    assert!(
        !tokens
            .metadata
            .annotations
            .unwrap_or_default()
            .contains_key(OBJECT_NAME_ANNOTATION),
        "the secret syncer must not see the token secret as a copy of a virtual secret"
    );

    // In-pod clients reach the virtual API server and resolve through the virtual DNS.
    let kubernetes = get(
        &Api::<Service>::namespaced(env.virt.clone(), "default"),
        "kubernetes",
    )
    .await
    .unwrap();
    let ip = kubernetes.spec.unwrap().cluster_ip.unwrap();
    assert_eq!(env_var("KUBERNETES_SERVICE_HOST")["value"], ip.as_str());
    if let Some(dns) = get(
        &Api::<Service>::namespaced(env.virt.clone(), "kube-system"),
        "kube-dns",
    )
    .await
    {
        assert_eq!(spec["dnsPolicy"], "None");
        assert_eq!(
            spec["dnsConfig"]["nameservers"][0],
            json!(dns.spec.unwrap().cluster_ip)
        );
        assert_eq!(
            spec["dnsConfig"]["searches"][0],
            format!("{}.svc.cluster.local", env.virt_ns)
        );
    }

    // What the pod references is there too.
    eventually("referenced config map and secret on the host", || async {
        get(&env.host_api::<ConfigMap>(), &cm).await?;
        get(&env.host_api::<Secret>(), &secret).await
    })
    .await;
}

#[tokio::test]
async fn the_host_runs_the_pod_and_its_status_and_node_come_up() {
    let mut env = Env::new().await;
    let _kubelet = HostKubelet::start(&env).await;
    env.start_syncer("").await;
    create_pod(&env, &simple_pod("runner")).await;
    let virt = eventually("virtual pod bound and running", || async {
        get(&env.virt_api::<Pod>(), "runner")
            .await
            .filter(|p| node_name(p).is_some() && phase(p) == Some("Running"))
    })
    .await;
    let host = get(&env.host_api::<Pod>(), &env.host_name("runner"))
        .await
        .unwrap();
    assert_eq!(node_name(&virt), node_name(&host));
    let (vs, hs) = (virt.status.unwrap(), host.status.unwrap());
    assert_eq!(vs.pod_ip, hs.pod_ip);
    assert!(vs.pod_ip.is_some());
    assert_eq!(vs.container_statuses, hs.container_statuses);
}

#[tokio::test]
async fn status_reported_on_the_host_comes_up_and_binds_the_virtual_pod() {
    let mut env = Env::new().await;
    env.start_syncer("").await;
    create_pod(&env, &simple_pod("reported")).await;
    host_pod(&env, "reported").await;
    bind_host_pod(&env, &env.host_name("reported"), NODE).await;
    report_running(&env, &env.host_name("reported"), "10.244.1.9").await;

    let virt = eventually("virtual pod bound with the host's status", || async {
        get(&env.virt_api::<Pod>(), "reported").await.filter(|p| {
            node_name(p) == Some(NODE)
                && p.status.as_ref().and_then(|s| s.pod_ip.as_deref()) == Some("10.244.1.9")
        })
    })
    .await;
    let host = get(&env.host_api::<Pod>(), &env.host_name("reported"))
        .await
        .unwrap();
    let (vs, hs) = (virt.status.unwrap(), host.status.unwrap());
    assert_eq!(vs.phase.as_deref(), Some("Running"));
    assert_eq!(vs.start_time, hs.start_time);
    assert_eq!(vs.host_ip, hs.host_ip);
    assert_eq!(vs.container_statuses, hs.container_statuses);
    let ready = vs
        .conditions
        .unwrap()
        .into_iter()
        .find(|c| c.type_ == "Ready")
        .unwrap();
    assert_eq!(ready.status, "True");
}

#[tokio::test]
async fn an_image_update_flows_down() {
    let mut env = Env::new().await;
    env.start_syncer("").await;
    create_pod(&env, &simple_pod("upgraded")).await;
    host_pod(&env, "upgraded").await;
    let patch = Patch::Strategic(json!({"spec": {"containers": [{"name": "app", "image": "nginx:1.28"}]}}));
    env.virt_api::<Pod>()
        .patch("upgraded", &PatchParams::default(), &patch)
        .await
        .unwrap();
    eventually("new image on the host", || async {
        get(&env.host_api::<Pod>(), &env.host_name("upgraded"))
            .await
            .filter(|p| p.spec.as_ref().unwrap().containers[0].image.as_deref() == Some("nginx:1.28"))
    })
    .await;
}

#[tokio::test]
async fn a_graceful_virtual_delete_reaches_the_host_with_its_grace_period() {
    let mut env = Env::new().await;
    env.start_syncer("").await;
    create_pod(&env, &simple_pod("leaving")).await;
    host_pod(&env, "leaving").await;
    // Scheduled pods are deleted gracefully (unscheduled ones at once).
    bind_host_pod(&env, &env.host_name("leaving"), NODE).await;
    eventually("virtual pod bound", || async {
        get(&env.virt_api::<Pod>(), "leaving")
            .await
            .filter(|p| node_name(p).is_some())
    })
    .await;

    env.virt_api::<Pod>()
        .delete("leaving", &DeleteParams::default().grace_period(7))
        .await
        .unwrap();
    let terminating = eventually("host pod terminating", || async {
        get(&env.host_api::<Pod>(), &env.host_name("leaving"))
            .await
            .filter(|p| p.metadata.deletion_timestamp.is_some())
    })
    .await;
    assert_eq!(terminating.metadata.deletion_grace_period_seconds, Some(7));
    let virt = get(&env.virt_api::<Pod>(), "leaving").await;
    assert!(
        virt.is_some_and(|p| p.metadata.deletion_timestamp.is_some()),
        "the virtual pod must wait for its host pod"
    );
    // The host kubelet finishes.
    finish_host_pod_deletion(&env, &env.host_name("leaving")).await;
    eventually("virtual pod gone after its host pod", || async {
        get(&env.virt_api::<Pod>(), "leaving")
            .await
            .is_none()
            .then_some(())
    })
    .await;
    eventually("token secret gone", || async {
        let name = format!("{}.sa-token", env.host_name("leaving"));
        get(&env.host_api::<Secret>(), &name)
            .await
            .is_none()
            .then_some(())
    })
    .await;
}

#[tokio::test]
async fn a_host_pod_deleted_outside_vcsync_deletes_the_virtual_pod_instead_of_recreating_it() {
    let mut env = Env::new().await;
    env.start_syncer("").await;
    let created = create_pod(&env, &simple_pod("evicted")).await;
    run_host_pod(&env, &env.host_name("evicted")).await;
    eventually("virtual pod running", || async {
        get(&env.virt_api::<Pod>(), "evicted")
            .await
            .filter(|p| phase(p) == Some("Running"))
    })
    .await;

    env.host_api::<Pod>()
        .delete(
            &env.host_name("evicted"),
            &DeleteParams::default().grace_period(0),
        )
        .await
        .unwrap();
    eventually("virtual pod deleted", || async {
        get(&env.virt_api::<Pod>(), "evicted")
            .await
            .is_none()
            .then_some(())
    })
    .await;
    let event = eventually("event saying why", || async {
        env.virt_api::<Event>()
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
            .into_iter()
            .find(|e| {
                e.involved_object.uid == created.metadata.uid && e.reason.as_deref() == Some("HostPodDeleted")
            })
    })
    .await;
    assert_eq!(event.type_.as_deref(), Some("Warning"));

    // A later pod syncing proves the syncer looked again; the lost one was not recreated.
    create_pod(&env, &simple_pod("later")).await;
    host_pod(&env, "later").await;
    assert!(
        get(&env.host_api::<Pod>(), &env.host_name("evicted"))
            .await
            .is_none(),
        "the host pod was recreated"
    );
}

#[tokio::test]
async fn restart_over_synced_pods_writes_nothing() {
    let mut env = Env::new().await;
    env.start_syncer("").await;
    rich_pod_data(&env).await;
    let names: Vec<String> = (0..6).map(|i| format!("steady-{i}")).collect();
    for name in &names {
        create_pod(&env, &rich_pod(name)).await;
    }
    for (i, name) in names.iter().enumerate() {
        host_pod(&env, name).await;
        // Half of them scheduled and running, half still pending.
        if i % 2 == 0 {
            run_host_pod(&env, &env.host_name(name)).await;
        }
    }
    for name in &names {
        eventually("status and node up", || async {
            let host = get(&env.host_api::<Pod>(), &env.host_name(name)).await?;
            let virt = get(&env.virt_api::<Pod>(), name).await?;
            let conditions = |p: &Pod| p.status.as_ref().and_then(|s| s.conditions.clone());
            (node_name(&virt) == node_name(&host) && conditions(&virt) == conditions(&host)).then_some(())
        })
        .await;
    }

    // Fake nodes keep their leases and heartbeats alive (another syncer's writes, by design).
    let (host_restart, virt_restart) = env.restart_counting("").await;
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

    // And it is alive.
    create_pod(&env, &simple_pod("after-restart")).await;
    host_pod(&env, "after-restart").await;
}

#[tokio::test]
async fn a_token_secret_deleted_on_the_host_is_issued_again() {
    let mut env = Env::new().await;
    env.start_syncer("").await;
    create_pod(&env, &simple_pod("tokened")).await;
    host_pod(&env, "tokened").await;
    let name = format!("{}.sa-token", env.host_name("tokened"));
    let first = eventually("token secret", || async {
        get(&env.host_api::<Secret>(), &name).await
    })
    .await;
    env.host_api::<Secret>()
        .delete(&name, &DeleteParams::default())
        .await
        .unwrap();
    eventually("token secret issued again", || async {
        get(&env.host_api::<Secret>(), &name)
            .await
            .filter(|s| s.metadata.uid != first.metadata.uid)
    })
    .await;
}

#[tokio::test]
async fn a_replacement_pod_of_the_same_name_gets_a_host_pod_of_its_own() {
    let mut env = Env::new().await;
    env.start_syncer("").await;
    let old = create_pod(&env, &simple_pod("web-0")).await;
    host_pod(&env, "web-0").await;
    // Unscheduled, so deleted at once; its replacement follows right away (a StatefulSet's way).
    env.virt_api::<Pod>()
        .delete("web-0", &DeleteParams::default())
        .await
        .unwrap();
    let new = create_pod(&env, &simple_pod("web-0")).await;
    assert_ne!(old.metadata.uid, new.metadata.uid);
    eventually("host pod of the replacement", || async {
        get(&env.host_api::<Pod>(), &env.host_name("web-0"))
            .await
            .filter(|p| {
                p.metadata
                    .annotations
                    .as_ref()
                    .and_then(|a| a.get("vcsync.dev/object-uid"))
                    == new.metadata.uid.as_ref()
            })
    })
    .await;
}

/// A Service in the syncer's host namespace in front of the virtual API server, as a deployed
/// cluster's (`vcsync-<name>`, port 443); returns its cluster IP.
async fn create_front_service(env: &Env, name: &str) -> String {
    let service: Service = serde_json::from_value(json!({
        "metadata": {"name": name},
        "spec": {"ports": [{"name": "https", "port": 443, "targetPort": 6443, "protocol": "TCP"}]}
    }))
    .unwrap();
    let created = Api::<Service>::namespaced(env.host.clone(), &env.syncer_ns)
        .create(&PostParams::default(), &service)
        .await
        .unwrap();
    let ip = created.spec.unwrap().cluster_ip.unwrap();
    assert!(!ip.is_empty() && ip != "None", "{ip:?}");
    ip
}

/// The value of `name` in the first container's env of a host pod.
fn env_value(pod: &Pod, name: &str) -> Option<String> {
    pod.spec.as_ref()?.containers[0]
        .env
        .iter()
        .flatten()
        .find(|v| v.name == name)?
        .value
        .clone()
}

fn kubernetes_service_config(service: &str) -> String {
    format!("sync:\n  pods:\n    kubernetesService: {{hostService: {service}, port: 443}}\n")
}

#[tokio::test]
async fn host_pods_reach_the_virtual_api_server_at_the_cluster_ip_of_the_host_service_in_front_of_it() {
    let mut env = Env::new().await;
    let front = format!("{}-front", env.instance);
    let ip = create_front_service(&env, &front).await;
    env.start_syncer(&kubernetes_service_config(&front)).await;
    create_pod(&env, &simple_pod("api-client")).await;

    let host = host_pod(&env, "api-client").await;
    assert_eq!(env_value(&host, "KUBERNETES_SERVICE_HOST"), Some(ip.clone()));
    assert_eq!(
        env_value(&host, "KUBERNETES_SERVICE_PORT").as_deref(),
        Some("443")
    );
    assert_eq!(
        env_value(&host, "KUBERNETES_PORT"),
        Some(format!("tcp://{ip}:443"))
    );
    assert_eq!(env_value(&host, "KUBERNETES_PORT_443_TCP_ADDR"), Some(ip.clone()));
    // Not the virtual `default/kubernetes` IP: on the host, that one is the host's API server.
    let virtual_kubernetes = get(
        &Api::<Service>::namespaced(env.virt.clone(), "default"),
        "kubernetes",
    )
    .await
    .unwrap();
    if virtual_kubernetes.spec.unwrap().cluster_ip.as_deref() == Some(ip.as_str()) {
        panic!("the test's host Service has the virtual kubernetes IP {ip}: nothing is shown");
    }
}

#[tokio::test]
async fn pods_wait_for_the_host_service_in_front_of_the_virtual_api_server() {
    let mut env = Env::new().await;
    let front = format!("{}-late", env.instance);
    env.start_syncer(&kubernetes_service_config(&front)).await;
    create_pod(&env, &simple_pod("early")).await;
    // No Service yet: no address for KUBERNETES_SERVICE_HOST, so no host pod either.
    tokio::time::sleep(std::time::Duration::from_secs(3)).await;
    assert!(
        get(&env.host_api::<Pod>(), &env.host_name("early"))
            .await
            .is_none(),
        "a host pod without the address of the virtual API server"
    );

    let ip = create_front_service(&env, &front).await;
    let host = host_pod(&env, "early").await;
    assert_eq!(env_value(&host, "KUBERNETES_SERVICE_HOST"), Some(ip));
}
