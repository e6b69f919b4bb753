//! Workload semantics: graceful pod deletion, binding, eviction, service account tokens and
//! defaults, node ports, and the storage / networking / policy / scheduling / apps kinds.

use std::time::Duration;

use k8s_openapi::api::apps::v1::{DaemonSet, ReplicaSet, StatefulSet};
use k8s_openapi::api::authentication::v1::TokenRequest;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Event, Namespace, Node, Pod, Service, ServiceAccount};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::networking::v1::{Ingress, IngressClass, NetworkPolicy};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::api::scheduling::v1::PriorityClass;
use k8s_openapi::api::storage::v1::StorageClass;
use kube::api::{Api, DeleteParams, EvictParams, ListParams, Patch, PatchParams, PostParams, Preconditions};
use serde_json::{Value, json};

use crate::env::{Env, both, eventually, object, status_code};

fn pod(name: &str) -> Pod {
    object(json!({"metadata": {"name": name},
        "spec": {"containers": [{"name": "c", "image": "nginx:1"}]}}))
}

/// The node `node` of this case: one of its own, named after its namespace. On a real control
/// plane the controllers act on a node no kubelet reports for (the pod garbage collector fails
/// and deletes pods bound to a node that does not exist; the node lifecycle controller taints one
/// that never posted its status, after a minute): a node shared by the cases of a run would be
/// old enough for that, a fresh one is not.
fn node_of(env: &Env, node: &str) -> String {
    format!("{}-{node}", env.ns)
}

/// POSTs a Binding of pod `name` to this case's `node` (made first if missing, see
/// [`node_of`]); the error is the HTTP status code.
async fn bind(env: &Env, name: &str, node: &str) -> Result<(), u16> {
    let node = &node_of(env, node);
    let nodes: Api<Node> = Api::all(env.client.clone());
    let made: Node = object(json!({"metadata": {"name": node}}));
    match nodes.create(&PostParams::default(), &made).await {
        Ok(_) => {}
        Err(kube::Error::Api(status)) if status.code == 409 => {}
        Err(err) => panic!("node {node}: {err}"),
    }
    let binding = json!({"apiVersion": "v1", "kind": "Binding", "metadata": {"name": name},
        "target": {"apiVersion": "v1", "kind": "Node", "name": node}});
    let request = http::Request::post(format!("/api/v1/namespaces/{}/pods/{name}/binding", env.ns))
        .header(http::header::CONTENT_TYPE, "application/json")
        .body(serde_json::to_vec(&binding).unwrap())
        .unwrap();
    env.client
        .request::<Value>(request)
        .await
        .map(|_| ())
        .map_err(|e| status_code(&e))
}

fn grace(seconds: i64) -> DeleteParams {
    DeleteParams {
        grace_period_seconds: Some(seconds as u32),
        ..Default::default()
    }
}

both! {
    async fn graceful_pod_deletion(env: Env) -> TestResult {
        let api = env.api::<Pod>();
        api.create(&PostParams::default(), &pod("p")).await?;
        bind(&env, "p", "node-1").await.expect("bind");

        let marked = api
            .delete("p", &DeleteParams::default())
            .await?
            .left()
            .expect("a graceful delete returns the pod");
        let meta = &marked.metadata;
        assert!(meta.deletion_timestamp.is_some());
        assert_eq!(meta.deletion_grace_period_seconds, Some(30));
        assert_eq!(
            meta.generation,
            Some(2),
            "marking a pod for deletion bumps its generation"
        );
        let stored = api.get("p").await?;
        assert_eq!(stored.metadata.deletion_grace_period_seconds, Some(30));
        assert_eq!(
            stored.status.unwrap().phase.as_deref(),
            Some("Pending"),
            "phase unchanged"
        );
        let first_deadline = stored.metadata.deletion_timestamp.unwrap().0;

        // A longer grace period changes nothing, a shorter one moves the deadline forward.
        api.delete("p", &grace(60)).await?;
        assert_eq!(
            api.get("p").await?.metadata.deletion_grace_period_seconds,
            Some(30)
        );
        api.delete("p", &grace(10)).await?;
        let shortened = api.get("p").await?.metadata;
        assert_eq!(shortened.deletion_grace_period_seconds, Some(10));
        let moved = first_deadline.duration_since(shortened.deletion_timestamp.unwrap().0);
        assert_eq!(moved.as_secs(), 20);

        // Preconditions still apply; grace 0 deletes for real.
        let wrong_uid = DeleteParams {
            grace_period_seconds: Some(0),
            preconditions: Some(Preconditions {
                uid: Some("00000000-0000-0000-0000-000000000000".into()),
                resource_version: None,
            }),
            ..Default::default()
        };
        assert_eq!(status_code(&api.delete("p", &wrong_uid).await.unwrap_err()), 409);
        api.delete("p", &grace(0)).await?;
        assert!(api.get_opt("p").await?.is_none());

        // Unscheduled pods go at once, whatever the grace period.
        api.create(&PostParams::default(), &pod("unscheduled")).await?;
        api.delete("unscheduled", &grace(30)).await?;
        assert!(api.get_opt("unscheduled").await?.is_none());
        env.finish().await;
        Ok(())
    }
}

both! {
    async fn graceful_deletion_with_finalizers(env: Env) -> TestResult {
        let api = env.api::<Pod>();
        let held: Pod = object(
            json!({"metadata": {"name": "held", "finalizers": ["vcsync.dev/test"]},
            "spec": {"containers": [{"name": "c", "image": "nginx:1"}]}}),
        );
        api.create(&PostParams::default(), &held).await?;
        bind(&env, "held", "node-1").await.expect("bind");
        api.delete("held", &grace(5)).await?;
        let unfinalize = Patch::Merge(json!({"metadata": {"finalizers": null}}));
        api.patch("held", &PatchParams::default(), &unfinalize).await?;
        // The grace period is still pending: the pod stays until the grace-0 delete.
        let pending = api.get("held").await?;
        assert_eq!(pending.metadata.deletion_grace_period_seconds, Some(5));
        api.delete("held", &grace(0)).await?;
        assert!(api.get_opt("held").await?.is_none());
        env.finish().await;
        Ok(())
    }
}

both! {
    async fn binding_conflicts(env: Env) -> TestResult {
        let api = env.api::<Pod>();
        api.create(&PostParams::default(), &pod("p")).await?;
        bind(&env, "p", "node-1").await.expect("first binding");
        let bound = api.get("p").await?;
        assert_eq!(bound.spec.unwrap().node_name, Some(node_of(&env, "node-1")));
        let scheduled = bound.status.unwrap().conditions.unwrap_or_default();
        assert!(
            scheduled
                .iter()
                .any(|c| c.type_ == "PodScheduled" && c.status == "True")
        );
        assert_eq!(bind(&env, "p", "node-2").await, Err(409));
        assert_eq!(bind(&env, "p", "node-1").await, Err(409));
        assert_eq!(bind(&env, "missing", "node-1").await, Err(404));
        env.finish().await;
        Ok(())
    }
}

both! {
    async fn eviction_deletes_gracefully(env: Env) -> TestResult {
        let api = env.api::<Pod>();
        for name in ["a", "b"] {
            api.create(&PostParams::default(), &pod(name)).await?;
            bind(&env, name, "node-1").await.expect("bind");
        }
        let eviction = json!({"apiVersion": "policy/v1", "kind": "Eviction", "metadata": {"name": "a"},
            "deleteOptions": {"gracePeriodSeconds": 7}});
        let request = http::Request::post(format!("/api/v1/namespaces/{}/pods/a/eviction", env.ns))
            .header(http::header::CONTENT_TYPE, "application/json")
            .body(serde_json::to_vec(&eviction)?)?;
        let status: Value = env.client.request(request).await?;
        assert_eq!(status["status"], "Success");
        assert_eq!(
            api.get("a").await?.metadata.deletion_grace_period_seconds,
            Some(7)
        );
        // kube-rs' own helper: the pod's default grace period.
        api.evict("b", &EvictParams::default()).await?;
        assert_eq!(
            api.get("b").await?.metadata.deletion_grace_period_seconds,
            Some(30)
        );
        let missing = api.evict("missing", &EvictParams::default()).await.unwrap_err();
        assert_eq!(status_code(&missing), 404);
        env.finish().await;
        Ok(())
    }
}

both! {
    async fn service_account_tokens(env: Env) -> TestResult {
        let api = env.api::<ServiceAccount>();
        let account: ServiceAccount = object(json!({"metadata": {"name": "robot"}}));
        api.create(&PostParams::default(), &account).await?;
        let request: TokenRequest = object(json!({"spec": {"audiences": ["vcsync"], "expirationSeconds": 7200}}));
        let before = jiff::Timestamp::now();
        let issued = api
            .create_token_request("robot", &PostParams::default(), &request)
            .await?;
        let status = issued.status.expect("status");
        let token = status.token.expect("token");
        assert_eq!(token.split('.').count(), 3, "JWT-shaped");
        let expires = status.expiration_timestamp.expect("expiration").0;
        let lifetime = expires.duration_since(before).as_secs();
        assert!((7190..=7210).contains(&lifetime), "{lifetime}");
        // The claims are readable (the embedded server's tokens are unsigned, real ones signed).
        use base64::Engine as _;
        let claims = token.split('.').nth(1).unwrap();
        let claims = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(claims)?;
        let claims: Value = serde_json::from_slice(&claims)?;
        assert_eq!(claims["sub"], format!("system:serviceaccount:{}:robot", env.ns));
        assert_eq!(claims["aud"], json!(["vcsync"]));
        let default_expiry: TokenRequest = object(json!({"spec": {"audiences": []}}));
        let issued = api
            .create_token_request("robot", &PostParams::default(), &default_expiry)
            .await?;
        let expires = issued.status.unwrap().expiration_timestamp.unwrap().0;
        let lifetime = expires.duration_since(before);
        assert!((3590..=3610).contains(&lifetime.as_secs()));
        let too_short: TokenRequest = object(json!({"spec": {"audiences": [], "expirationSeconds": 60}}));
        let refused = api
            .create_token_request("robot", &PostParams::default(), &too_short)
            .await
            .unwrap_err();
        assert_eq!(status_code(&refused), 422);
        let missing = api
            .create_token_request("nobody", &PostParams::default(), &request)
            .await
            .unwrap_err();
        assert_eq!(status_code(&missing), 404);
        env.finish().await;
        Ok(())
    }
}

both! {
    async fn namespaces_get_a_default_service_account(env: Env) -> TestResult {
        let limit = Duration::from_secs(30);
        let in_namespace = |ns: String| {
            let api: Api<ServiceAccount> = Api::namespaced(env.client.clone(), &ns);
            async move { api.get_opt("default").await.ok().flatten() }
        };
        for ns in [
            "default",
            "kube-system",
            "kube-public",
            "kube-node-lease",
            &env.ns,
        ] {
            let found = eventually(limit, || in_namespace(ns.to_string())).await;
            assert!(found.is_some(), "no default service account in {ns}");
        }
        let namespaces: Api<Namespace> = Api::all(env.client.clone());
        let later = format!("{}-later", env.ns);
        namespaces
            .create(
                &PostParams::default(),
                &object(json!({"metadata": {"name": later}})),
            )
            .await?;
        assert!(eventually(limit, || in_namespace(later.clone())).await.is_some());
        // Deleted, it comes back.
        let api = env.api::<ServiceAccount>();
        let old_uid = api.get("default").await?.metadata.uid;
        api.delete("default", &DeleteParams::default()).await?;
        let recreated = eventually(limit, || {
            let api = api.clone();
            let old_uid = old_uid.clone();
            async move {
                api.get_opt("default")
                    .await
                    .ok()
                    .flatten()
                    .filter(|sa| sa.metadata.uid != old_uid)
            }
        })
        .await;
        assert!(recreated.is_some());
        namespaces.delete(&later, &DeleteParams::default()).await?;
        env.finish().await;
        Ok(())
    }
}

both! {
    async fn the_kubernetes_service_exists(env: Env) -> TestResult {
        let api: Api<Service> = Api::namespaced(env.client.clone(), "default");
        let service = api.get("kubernetes").await?;
        let spec = service.spec.unwrap();
        assert_eq!(spec.ports.unwrap()[0].port, 443);
        assert!(spec.selector.is_none());
        // The first address of the Service range (10.96.0.0/12 for the embedded server).
        let ip = spec.cluster_ip.unwrap();
        assert!(ip.ends_with(".1"), "{ip}");
        env.finish().await;
        Ok(())
    }
}

both! {
    async fn node_ports_are_allocated_once(env: Env) -> TestResult {
        let api = env.api::<Service>();
        let service = |name: &str, port: Value| -> Service {
            object(json!({"metadata": {"name": name},
                "spec": {"type": "NodePort", "ports": [{"port": 80, "nodePort": port}]}}))
        };
        let auto = api
            .create(&PostParams::default(), &service("auto", Value::Null))
            .await?;
        let assigned = auto.spec.unwrap().ports.unwrap()[0].node_port.unwrap();
        assert!((30000..=32767).contains(&assigned), "{assigned}");
        let taken = api
            .create(&PostParams::default(), &service("taken", json!(assigned)))
            .await
            .unwrap_err();
        assert_eq!(status_code(&taken), 422);
        let outside = api
            .create(&PostParams::default(), &service("outside", json!(80)))
            .await
            .unwrap_err();
        assert_eq!(status_code(&outside), 422);
        api.delete("auto", &DeleteParams::default()).await?;
        let reused = api
            .create(&PostParams::default(), &service("reused", json!(assigned)))
            .await?;
        assert_eq!(reused.spec.unwrap().ports.unwrap()[0].node_port, Some(assigned));
        env.finish().await;
        Ok(())
    }
}

both! {
    async fn pod_and_event_field_selectors(env: Env) -> TestResult {
        let pods = env.api::<Pod>();
        for name in ["bound", "pending"] {
            pods.create(&PostParams::default(), &pod(name)).await?;
        }
        bind(&env, "bound", "node-1").await.expect("bind");
        let names = |items: Vec<Pod>| -> Vec<String> {
            let mut names: Vec<String> = items.into_iter().map(|p| p.metadata.name.unwrap()).collect();
            names.sort();
            names
        };
        let on_node = format!("spec.nodeName={}", node_of(&env, "node-1"));
        let cases = [
            (on_node.as_str(), vec!["bound"]),
            ("spec.nodeName=", vec!["pending"]),
            ("spec.nodeName!=", vec!["bound"]),
            ("status.phase=Pending", vec!["bound", "pending"]),
            ("status.phase!=Pending", vec![]),
        ];
        for (selector, expected) in cases {
            let found = pods.list(&ListParams::default().fields(selector)).await?.items;
            assert_eq!(names(found), expected, "{selector}");
        }

        let events = env.api::<Event>();
        for (name, kind, object_name) in [
            ("e1", "Pod", "bound"),
            ("e2", "Pod", "pending"),
            ("e3", "Node", "n"),
        ] {
            let event: Event = object(json!({"metadata": {"name": name},
                "involvedObject": {"kind": kind, "name": object_name, "namespace": env.ns},
                "reason": "Tested", "message": "m", "type": "Normal"}));
            events.create(&PostParams::default(), &event).await?;
        }
        let found = events
            .list(&ListParams::default().fields("involvedObject.kind=Pod,involvedObject.name=bound"))
            .await?
            .items;
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].metadata.name.as_deref(), Some("e1"));
        let pods_only = events
            .list(&ListParams::default().fields("involvedObject.kind=Pod"))
            .await?
            .items;
        assert_eq!(pods_only.len(), 2);
        env.finish().await;
        Ok(())
    }
}

both! {
    async fn leases_and_endpoint_slices(env: Env) -> TestResult {
        let leases = env.api::<Lease>();
        let lease: Lease = object(json!({"metadata": {"name": "l"},
            "spec": {"holderIdentity": "me", "leaseDurationSeconds": 15,
                "renewTime": "2026-01-01T00:00:00.000000Z"}}));
        leases.create(&PostParams::default(), &lease).await?;
        let renew = Patch::Merge(json!({"spec": {"renewTime": "2026-01-01T00:00:10.000000Z"}}));
        let renewed = leases.patch("l", &PatchParams::default(), &renew).await?;
        assert_eq!(
            renewed.spec.unwrap().renew_time.unwrap().0.to_string(),
            "2026-01-01T00:00:10Z"
        );
        let slices = env.api::<EndpointSlice>();
        let slice: EndpointSlice = object(json!({"metadata": {"name": "s-1",
                "labels": {"kubernetes.io/service-name": "s"}},
            "addressType": "IPv4",
            "endpoints": [{"addresses": ["10.0.0.1"], "conditions": {"ready": true}}],
            "ports": [{"name": "http", "port": 80, "protocol": "TCP"}]}));
        slices.create(&PostParams::default(), &slice).await?;
        let listed = slices
            .list(&ListParams::default().labels("kubernetes.io/service-name=s"))
            .await?
            .items;
        assert_eq!(listed.len(), 1);
        let endpoints = listed[0].endpoints.clone().unwrap();
        assert_eq!(endpoints[0].addresses, ["10.0.0.1"]);
        env.finish().await;
        Ok(())
    }
}

both! {
    async fn storage_networking_policy_and_scheduling_kinds(env: Env) -> TestResult {
        let pp = PostParams::default();
        // Cluster-scoped kinds get names unique to this test (real clusters are shared).
        let name = |what: &str| format!("{}-{what}", env.ns);
        let classes: Api<StorageClass> = Api::all(env.client.clone());
        let class: StorageClass =
            object(json!({"metadata": {"name": name("sc")}, "provisioner": "example.com/x"}));
        let created = classes.create(&pp, &class).await?;
        assert_eq!(created.reclaim_policy.as_deref(), Some("Delete"));
        assert_eq!(created.volume_binding_mode.as_deref(), Some("Immediate"));
        classes.delete(&name("sc"), &DeleteParams::default()).await?;

        let ingress_classes: Api<IngressClass> = Api::all(env.client.clone());
        let ingress_class: IngressClass =
            object(json!({"metadata": {"name": name("ic")}, "spec": {"controller": "example.com/ingress"}}));
        ingress_classes.create(&pp, &ingress_class).await?;
        ingress_classes
            .delete(&name("ic"), &DeleteParams::default())
            .await?;

        let priorities: Api<PriorityClass> = Api::all(env.client.clone());
        let priority: PriorityClass = object(json!({"metadata": {"name": name("pc")}, "value": 1000}));
        let created = priorities.create(&pp, &priority).await?;
        assert_eq!(created.preemption_policy.as_deref(), Some("PreemptLowerPriority"));
        priorities.delete(&name("pc"), &DeleteParams::default()).await?;

        let ingresses = env.api::<Ingress>();
        let ingress: Ingress = object(
            json!({"metadata": {"name": "web"}, "spec": {"rules": [{"host": "x.example",
            "http": {"paths": [{"path": "/", "pathType": "Prefix",
                "backend": {"service": {"name": "web", "port": {"number": 80}}}}]}}]}}),
        );
        ingresses.create(&pp, &ingress).await?;
        let lb = json!({"status": {"loadBalancer": {"ingress": [{"ip": "192.0.2.1"}]}}});
        // The patch's answer, not a later read: on a real cluster a controller may own the status.
        let stored = ingresses
            .patch_status("web", &PatchParams::default(), &Patch::Merge(lb))
            .await?;
        assert_eq!(
            stored.status.unwrap().load_balancer.unwrap().ingress.unwrap()[0]
                .ip
                .as_deref(),
            Some("192.0.2.1")
        );

        let policies = env.api::<NetworkPolicy>();
        let policy: NetworkPolicy = object(json!({"metadata": {"name": "deny"},
            "spec": {"podSelector": {}, "egress": [{}]}}));
        let created = policies.create(&pp, &policy).await?;
        assert_eq!(created.spec.unwrap().policy_types.unwrap(), ["Ingress", "Egress"]);

        let budgets = env.api::<PodDisruptionBudget>();
        let budget: PodDisruptionBudget = object(json!({"metadata": {"name": "pdb"},
            "spec": {"minAvailable": 1, "selector": {"matchLabels": {"app": "web"}}}}));
        budgets.create(&pp, &budget).await?;
        let status = json!({"status": {"disruptionsAllowed": 2, "currentHealthy": 3, "desiredHealthy": 1,
            "expectedPods": 3}});
        let patched = budgets
            .patch_status("pdb", &PatchParams::default(), &Patch::Merge(status))
            .await?;
        assert_eq!(patched.status.unwrap().disruptions_allowed, Some(2));
        env.finish().await;
        Ok(())
    }
}

both! {
    async fn apps_workload_kinds_are_stored(env: Env) -> TestResult {
        let pp = PostParams::default();
        let template = json!({"metadata": {"labels": {"app": "w"}},
            "spec": {"containers": [{"name": "c", "image": "nginx:1"}]}});
        let spec = json!({"selector": {"matchLabels": {"app": "w"}}, "template": template});
        let replica_sets = env.api::<ReplicaSet>();
        let created = replica_sets
            .create(&pp, &object(json!({"metadata": {"name": "rs"}, "spec": spec})))
            .await?;
        assert_eq!(created.spec.replicas, Some(1));
        let daemon_sets = env.api::<DaemonSet>();
        daemon_sets
            .create(&pp, &object(json!({"metadata": {"name": "ds"}, "spec": spec})))
            .await?;
        let stateful_sets = env.api::<StatefulSet>();
        let mut sts_spec = spec.clone();
        sts_spec["serviceName"] = json!("w");
        let created = stateful_sets
            .create(
                &pp,
                &object(json!({"metadata": {"name": "sts"}, "spec": sts_spec})),
            )
            .await?;
        assert_eq!(
            created.spec.pod_management_policy.as_deref(),
            Some("OrderedReady")
        );
        let status = json!({"status": {"replicas": 2, "readyReplicas": 2}});
        let patched = replica_sets
            .patch_status("rs", &PatchParams::default(), &Patch::Merge(status))
            .await?;
        assert_eq!(patched.status.unwrap().ready_replicas, Some(2));
        assert_eq!(daemon_sets.list(&ListParams::default()).await?.items.len(), 1);
        assert_eq!(stateful_sets.list(&ListParams::default()).await?.items.len(), 1);
        env.finish().await;
        Ok(())
    }
}
