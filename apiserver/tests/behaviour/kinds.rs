//! Per-kind behaviour (secrets, services, pods), discovery, kubeconfig and request counters.

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{ConfigMap, Pod, Secret, Service};
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::discovery::Discovery;
use serde_json::{Value, json};

use crate::env::{both, embedded, object, status_code};

both! {
    async fn secret_string_data_is_merged_into_data(env: Env) -> TestResult {
        let api = env.api::<Secret>();
        let secret: Secret =
            object(json!({"metadata": {"name": "s"}, "data": {"a": "eA=="}, "stringData": {"b": "hello"}}));
        let created = api.create(&PostParams::default(), &secret).await?;
        assert_eq!(created.type_.as_deref(), Some("Opaque"));
        assert!(created.string_data.is_none());
        let data = created.data.unwrap();
        assert_eq!(data["a"], ByteString(b"x".to_vec()));
        assert_eq!(data["b"], ByteString(b"hello".to_vec()));
        env.finish().await;
        Ok(())
    }
}

both! {
    async fn services_get_cluster_ips(env: Env) -> TestResult {
        let api = env.api::<Service>();
        let service = |name: &str, extra: Value| -> Service {
            let mut spec = json!({"ports": [{"port": 80}]});
            json_patch::merge(&mut spec, &extra);
            object(json!({"metadata": {"name": name}, "spec": spec}))
        };
        let a = api
            .create(&PostParams::default(), &service("a", json!({})))
            .await?;
        let b = api
            .create(&PostParams::default(), &service("b", json!({})))
            .await?;
        let ip = |s: &Service| s.spec.as_ref().unwrap().cluster_ip.clone().unwrap();
        assert_ne!(ip(&a), ip(&b));
        assert_eq!(
            a.spec.as_ref().unwrap().cluster_ips.as_ref().unwrap(),
            &vec![ip(&a)]
        );
        assert_eq!(a.spec.as_ref().unwrap().type_.as_deref(), Some("ClusterIP"));
        assert_eq!(
            a.spec.as_ref().unwrap().ports.as_ref().unwrap()[0]
                .protocol
                .as_deref(),
            Some("TCP")
        );
        let headless = api
            .create(
                &PostParams::default(),
                &service("headless", json!({"clusterIP": "None"})),
            )
            .await?;
        assert_eq!(ip(&headless), "None");
        // Updates keep the allocated address.
        let relabelled = api
            .patch(
                "a",
                &PatchParams::default(),
                &Patch::Merge(json!({"metadata": {"labels": {"x": "y"}}})),
            )
            .await?;
        assert_eq!(ip(&relabelled), ip(&a));
        // From the range the `kubernetes` Service got the first address of (a /12 or smaller).
        let kubernetes: Api<Service> = Api::namespaced(env.client.clone(), "default");
        let first = ip(&kubernetes.get("kubernetes").await?);
        let net12 = |ip: &str| ip.parse::<std::net::Ipv4Addr>().map(|a| a.to_bits() >> 20).ok();
        assert_eq!(net12(&ip(&a)), net12(&first), "{} is outside the range of {first}", ip(&a));
        // A released address can be requested explicitly again; a taken one cannot.
        api.delete("a", &DeleteParams::default()).await?;
        let again = api
            .create(
                &PostParams::default(),
                &service("again", json!({"clusterIP": ip(&a)})),
            )
            .await?;
        assert_eq!(ip(&again), ip(&a));
        let taken = api
            .create(
                &PostParams::default(),
                &service("taken", json!({"clusterIP": ip(&b)})),
            )
            .await;
        assert_eq!(status_code(&taken.unwrap_err()), 422);
        env.finish().await;
        Ok(())
    }
}

both! {
    async fn pods_are_defaulted_and_bound(env: Env) -> TestResult {
        let api = env.api::<Pod>();
        let pod: Pod = object(
            json!({"metadata": {"name": "p"}, "spec": {"containers": [{"name": "c", "image": "nginx:1"}]}}),
        );
        let created = api.create(&PostParams::default(), &pod).await?;
        let spec = created.spec.unwrap();
        assert_eq!(spec.restart_policy.as_deref(), Some("Always"));
        assert_eq!(spec.dns_policy.as_deref(), Some("ClusterFirst"));
        assert_eq!(spec.scheduler_name.as_deref(), Some("default-scheduler"));
        assert_eq!(spec.termination_grace_period_seconds, Some(30));
        assert_eq!(created.status.unwrap().qos_class.as_deref(), Some("BestEffort"));

        // Binding does not check that the node exists.
        let binding = json!({"apiVersion": "v1", "kind": "Binding", "metadata": {"name": "p"},
            "target": {"apiVersion": "v1", "kind": "Node", "name": "node-1"}});
        let request = http::Request::post(format!("/api/v1/namespaces/{}/pods/p/binding", env.ns))
            .header(http::header::CONTENT_TYPE, "application/json")
            .body(serde_json::to_vec(&binding)?)?;
        let status: Value = env.client.request(request).await?;
        assert_eq!(status["status"], "Success");
        assert_eq!(
            api.get("p").await?.spec.unwrap().node_name.as_deref(),
            Some("node-1")
        );
        env.finish().await;
        Ok(())
    }
}

both! {
    async fn discovery_and_version(env: Env) -> TestResult {
        let version = env.client.apiserver_version().await?;
        assert!(!version.git_version.is_empty());
        let discovery = Discovery::new(env.client.clone()).run().await?;
        let kinds: Vec<String> = discovery
            .groups()
            .flat_map(|g| {
                g.recommended_resources()
                    .into_iter()
                    .map(|(r, _)| format!("{}/{}", r.group, r.plural))
            })
            .collect();
        for expected in [
            "/pods",
            "/configmaps",
            "/namespaces",
            "apps/deployments",
            "coordination.k8s.io/leases",
        ] {
            assert!(
                kinds.iter().any(|k| k == expected),
                "{expected} missing from {kinds:?}"
            );
        }
        env.finish().await;
        Ok(())
    }
}

embedded! {
    async fn request_counters_and_metrics(env: Env) -> TestResult {
        let server = env.embedded_server();
        server.reset_counters();
        let api = env.api::<ConfigMap>();
        let cm: ConfigMap = object(json!({"metadata": {"name": "counted"}}));
        api.create(&PostParams::default(), &cm).await?;
        api.get("counted").await?;
        api.patch(
            "counted",
            &PatchParams::default(),
            &Patch::Merge(json!({"data": {"a": "b"}})),
        )
        .await?;
        api.delete("counted", &DeleteParams::default()).await?;
        let counters = server.counters();
        assert_eq!(counters.get("create", "configmaps"), 1);
        assert_eq!(counters.get("get", "configmaps"), 1);
        assert_eq!(counters.get("patch", "configmaps"), 1);
        assert_eq!(counters.writes_to("configmaps"), 3);
        assert_eq!(counters.writes(), 3);
        assert_eq!(counters.total(), 4);
        assert_eq!(counters.iter().count(), 4);

        let request = http::Request::get("/metrics").body(Vec::new())?;
        let metrics = env.client.request_text(request).await?;
        assert!(
            metrics.contains("apiserver_request_total{verb=\"create\",resource=\"configmaps\"} 1"),
            "{metrics}"
        );
        server.reset_counters();
        assert_eq!(server.counters().total(), 0);

        // The kubeconfig is accepted by kube-rs.
        let kubeconfig = kube::config::Kubeconfig::from_yaml(&server.kubeconfig())?;
        let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default()).await?;
        assert_eq!(config.cluster_url.to_string().trim_end_matches('/'), server.url());
        env.finish().await;
        Ok(())
    }
}
