//! Create, get, list, update and their errors.

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Pod};
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use serde_json::{Value, json};

use crate::env::{ROOT_CA, both, object, reason, status_code};

fn config_map(name: &str) -> ConfigMap {
    object(json!({"metadata": {"name": name}, "data": {"k": "v"}}))
}

both! {
    async fn create_get_update_round_trip(env: Env) -> TestResult {
        let api: Api<ConfigMap> = env.api();
        let created = api.create(&PostParams::default(), &config_map("one")).await?;
        let meta = &created.metadata;
        assert!(meta.uid.as_deref().is_some_and(|u| u.len() == 36));
        assert!(meta.creation_timestamp.is_some());
        assert_eq!(meta.namespace.as_deref(), Some(env.ns.as_str()));
        let rv1: u64 = meta.resource_version.as_deref().unwrap().parse()?;

        let mut fetched = api.get("one").await?;
        assert_eq!(fetched.data, created.data);
        fetched.data.as_mut().unwrap().insert("k".into(), "w".into());
        let updated = api.replace("one", &PostParams::default(), &fetched).await?;
        let rv2: u64 = updated.metadata.resource_version.as_deref().unwrap().parse()?;
        assert!(rv2 > rv1, "resourceVersion must increase: {rv1} -> {rv2}");
        assert_eq!(updated.metadata.uid, created.metadata.uid);
        assert_eq!(api.get("one").await?.data.unwrap()["k"], "w");
        env.finish().await;
        Ok(())
    }
}

both! {
    async fn conflicts_and_missing_objects(env: Env) -> TestResult {
        let api: Api<ConfigMap> = env.api();
        let created = api.create(&PostParams::default(), &config_map("c")).await?;
        let err = api
            .create(&PostParams::default(), &config_map("c"))
            .await
            .unwrap_err();
        assert_eq!((status_code(&err), reason(&err).as_str()), (409, "AlreadyExists"));

        let mut first = created.clone();
        first.data = Some([("k".to_string(), "first".to_string())].into());
        api.replace("c", &PostParams::default(), &first).await?;
        let mut stale = created;
        stale.data = Some([("k".to_string(), "stale".to_string())].into());
        let err = api
            .replace("c", &PostParams::default(), &stale)
            .await
            .unwrap_err();
        assert_eq!((status_code(&err), reason(&err).as_str()), (409, "Conflict"));

        let err = api.get("missing").await.unwrap_err();
        assert_eq!((status_code(&err), reason(&err).as_str()), (404, "NotFound"));
        let mut missing = config_map("missing");
        missing.metadata.resource_version = None;
        let err = api
            .replace("missing", &PostParams::default(), &missing)
            .await
            .unwrap_err();
        assert_eq!(status_code(&err), 404);
        env.finish().await;
        Ok(())
    }
}

both! {
    async fn generate_name_and_validation(env: Env) -> TestResult {
        let api: Api<ConfigMap> = env.api();
        let generated: ConfigMap = object(json!({"metadata": {"generateName": "gen-"}}));
        let a = api.create(&PostParams::default(), &generated).await?;
        let b = api.create(&PostParams::default(), &generated).await?;
        let (a, b) = (a.metadata.name.unwrap(), b.metadata.name.unwrap());
        assert!(a.starts_with("gen-") && a.len() == "gen-".len() + 5, "{a}");
        assert_ne!(a, b);

        for bad in ["Upper", "under_score", "-dash"] {
            let err = api
                .create(&PostParams::default(), &config_map(bad))
                .await
                .unwrap_err();
            assert_eq!(
                (status_code(&err), reason(&err).as_str()),
                (422, "Invalid"),
                "{bad}"
            );
        }
        let nameless: ConfigMap = object(json!({"metadata": {}}));
        assert_eq!(
            status_code(&api.create(&PostParams::default(), &nameless).await.unwrap_err()),
            422
        );

        let elsewhere: Api<ConfigMap> = Api::namespaced(env.client.clone(), "no-such-namespace-vt");
        let err = elsewhere
            .create(&PostParams::default(), &config_map("x"))
            .await
            .unwrap_err();
        assert_eq!((status_code(&err), reason(&err).as_str()), (404, "NotFound"));

        let mut mismatched = config_map("mismatch");
        mismatched.metadata.namespace = Some("kube-system".into());
        assert_eq!(
            status_code(&api.create(&PostParams::default(), &mismatched).await.unwrap_err()),
            400
        );
        env.finish().await;
        Ok(())
    }
}

both! {
    async fn lists_carry_kind_and_resource_version(env: Env) -> TestResult {
        let api: Api<ConfigMap> = env.api();
        for name in ["a", "b"] {
            api.create(&PostParams::default(), &config_map(name)).await?;
        }
        let request = http::Request::get(format!("/api/v1/namespaces/{}/configmaps", env.ns)).body(Vec::new())?;
        let list: Value = env.client.request(request).await?;
        assert_eq!(list["kind"], "ConfigMapList");
        assert_eq!(list["apiVersion"], "v1");
        assert!(
            list["metadata"]["resourceVersion"]
                .as_str()
                .is_some_and(|rv| !rv.is_empty())
        );
        let items = list["items"].as_array().unwrap();
        let mut names: Vec<&str> = items
            .iter()
            .map(|i| i["metadata"]["name"].as_str().unwrap())
            .collect();
        names.sort();
        assert_eq!(names, ["a", "b", ROOT_CA], "the namespace's own {ROOT_CA} is listed too");
        // The list carries the type; kube-apiserver's items of built-in kinds do not.
        assert!(
            items
                .iter()
                .all(|i| i.get("kind").is_none() && i.get("apiVersion").is_none()),
            "{items:?}"
        );

        // Cluster-wide list of a namespaced kind.
        let all: Api<ConfigMap> = Api::all(env.client.clone());
        let mine = all.list(&ListParams::default()).await?.items;
        assert_eq!(
            mine.iter()
                .filter(|c| c.metadata.namespace.as_deref() == Some(env.ns.as_str()))
                .count(),
            3
        );
        env.finish().await;
        Ok(())
    }
}

both! {
    async fn generation_and_status_subresource(env: Env) -> TestResult {
        let deployments: Api<Deployment> = env.api();
        let deployment: Deployment = object(json!({
            "metadata": {"name": "d"},
            "spec": {"selector": {"matchLabels": {"app": "d"}},
                     "template": {"metadata": {"labels": {"app": "d"}}, "spec": {"containers": [{"name": "c", "image": "nginx"}]}}}
        }));
        let created = deployments.create(&PostParams::default(), &deployment).await?;
        assert_eq!(created.metadata.generation, Some(1));
        // Patches, not replaces: a real deployment controller writes the status meanwhile.
        let patch = |body: Value| Patch::Merge(body);
        let labelled = deployments
            .patch("d", &PatchParams::default(), &patch(json!({"metadata": {"labels": {"x": "y"}}})))
            .await?;
        assert_eq!(
            labelled.metadata.generation,
            Some(1),
            "metadata changes keep the generation"
        );
        let scaled = deployments
            .patch("d", &PatchParams::default(), &patch(json!({"spec": {"replicas": 5}})))
            .await?;
        assert_eq!(scaled.metadata.generation, Some(2));

        let pods: Api<Pod> = env.api();
        let pod: Pod =
            object(json!({"metadata": {"name": "p"}, "spec": {"containers": [{"name": "c", "image": "nginx"}]}}));
        let mut pod = pods.create(&PostParams::default(), &pod).await?;
        assert_eq!(pod.status.as_ref().unwrap().phase.as_deref(), Some("Pending"));
        // Status written through the main resource is ignored ...
        pod.status.as_mut().unwrap().phase = Some("Running".into());
        let pod = pods.replace("p", &PostParams::default(), &pod).await?;
        assert_eq!(pod.status.as_ref().unwrap().phase.as_deref(), Some("Pending"));
        // ... and only status is taken from /status.
        let mut status_update = pod.clone();
        status_update.status.as_mut().unwrap().phase = Some("Running".into());
        let pod = pods
            .replace_status("p", &PostParams::default(), &status_update)
            .await?;
        assert_eq!(pod.status.as_ref().unwrap().phase.as_deref(), Some("Running"));
        env.finish().await;
        Ok(())
    }
}
