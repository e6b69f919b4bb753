//! PATCH in every supported format.

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Pod};
use kube::api::{Patch, PatchParams, PostParams};
use serde_json::json;

use crate::env::{Env, both, object, status_code};

fn pod() -> serde_json::Value {
    json!({
        "metadata": {"name": "p", "labels": {"a": "1"}},
        "spec": {"containers": [
            {"name": "app", "image": "app:1", "env": [{"name": "A", "value": "1"}]},
            {"name": "side", "image": "side:1"}
        ]}
    })
}

both! {
    async fn merge_json_and_strategic_patches(env: Env) -> TestResult {
        let pods = env.api::<Pod>();
        pods.create(&PostParams::default(), &object(pod())).await?;
        let params = PatchParams::default();

        let merged = pods
            .patch(
                "p",
                &params,
                &Patch::Merge(json!({"metadata": {"labels": {"a": null, "b": "2"}}})),
            )
            .await?;
        assert_eq!(
            merged.metadata.labels.unwrap(),
            [("b".to_string(), "2".to_string())].into()
        );

        let ops = json!([
            {"op": "add", "path": "/metadata/annotations", "value": {"note": "x"}},
            {"op": "replace", "path": "/spec/containers/1/image", "value": "side:2"}
        ]);
        let patched: Pod = json_patch(&env, &ops).await?;
        assert_eq!(patched.metadata.annotations.unwrap()["note"], "x");
        assert_eq!(
            patched.spec.as_ref().unwrap().containers[1].image.as_deref(),
            Some("side:2")
        );

        // Strategic merge: containers merge by name.
        let strategic = json!({"spec": {"containers": [{"name": "app", "image": "app:2"}]}});
        let patched = pods.patch("p", &params, &Patch::Strategic(strategic)).await?;
        let containers = patched.spec.unwrap().containers;
        assert_eq!(containers.len(), 2);
        assert_eq!(containers[0].image.as_deref(), Some("app:2"));
        assert_eq!(containers[0].env.as_ref().unwrap().len(), 1);
        assert_eq!(containers[1].image.as_deref(), Some("side:2"));

        // A pod's spec is immutable but for images and a few scheduling fields.
        let env_var = json!({"spec": {"containers": [
            {"name": "app", "env": [{"name": "B", "value": "2"}]}
        ]}});
        let err = pods
            .patch("p", &params, &Patch::Strategic(env_var))
            .await
            .unwrap_err();
        let kube::Error::Api(status) = err else {
            panic!("expected an API error, got {err:?}")
        };
        assert_eq!((status.code, status.reason.as_str()), (422, "Invalid"));
        let forbidden = "spec: Forbidden: pod updates may not change fields other than \
            `spec.containers[*].image`,`spec.initContainers[*].image`,`spec.activeDeadlineSeconds`,";
        assert!(
            status.message.starts_with(&format!("Pod \"p\" is invalid: {forbidden}")),
            "{}",
            status.message
        );
        let causes = status.details.unwrap().causes;
        assert_eq!(
            (causes[0].reason.as_str(), causes[0].field.as_str()),
            ("FieldValueForbidden", "spec")
        );
        // Removing a container is refused as well.
        let removed = json!({"spec": {"$setElementOrder/containers": [{"name": "app"}],
            "containers": [{"name": "side", "$patch": "delete"}]}});
        let err = pods
            .patch("p", &params, &Patch::Strategic(removed))
            .await
            .unwrap_err();
        assert_eq!(status_code(&err), 422);

        // Lists of a pod template merge by name, env included.
        let deployments = env.api::<Deployment>();
        let template = json!({"metadata": {"labels": {"app": "d"}}, "spec": pod()["spec"].clone()});
        let deployment: Deployment = object(json!({"metadata": {"name": "d"},
            "spec": {"selector": {"matchLabels": {"app": "d"}}, "template": template}}));
        deployments.create(&PostParams::default(), &deployment).await?;
        let env_var = json!({"spec": {"template": {"spec": {"containers": [
            {"name": "app", "env": [{"name": "B", "value": "2"}]}
        ]}}}});
        let patched = deployments
            .patch("d", &params, &Patch::Strategic(env_var))
            .await?;
        let containers = patched.spec.template.spec.unwrap().containers;
        assert_eq!(containers.len(), 2);
        let names: Vec<String> = containers[0]
            .env
            .iter()
            .flatten()
            .map(|e| e.name.clone())
            .collect();
        assert_eq!(names, ["B", "A"], "merged by name, the patch's entries first");

        let failing = json!([{"op": "test", "path": "/metadata/name", "value": "other"}]);
        let err = json_patch::<Pod>(&env, &failing).await.unwrap_err();
        assert_eq!(status_code(&err), 422);
        env.finish().await;
        Ok(())
    }
}

both! {
    async fn server_side_apply_creates_then_updates(env: Env) -> TestResult {
        let api = env.api::<ConfigMap>();
        let params = PatchParams::apply("vcsync-test").force();
        let body =
            json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "ssa"}, "data": {"a": "1"}});
        let created = api.patch("ssa", &params, &Patch::Apply(&body)).await?;
        assert_eq!(created.data.unwrap()["a"], "1");
        let body =
            json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "ssa"}, "data": {"a": "2"}});
        let updated = api.patch("ssa", &params, &Patch::Apply(&body)).await?;
        assert_eq!(updated.data.unwrap()["a"], "2");
        assert_eq!(updated.metadata.uid, created.metadata.uid);
        env.finish().await;
        Ok(())
    }
}

/// Sends a JSON patch (RFC 6902) to pod "p" (kube's typed JSON patch needs an optional feature).
async fn json_patch<K: serde::de::DeserializeOwned>(env: &Env, ops: &serde_json::Value) -> kube::Result<K> {
    let request = http::Request::patch(format!("/api/v1/namespaces/{}/pods/p", env.ns))
        .header(http::header::CONTENT_TYPE, "application/json-patch+json")
        .body(serde_json::to_vec(ops).unwrap())
        .unwrap();
    env.client.request(request).await
}
