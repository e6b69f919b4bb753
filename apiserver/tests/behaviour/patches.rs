//! PATCH in every supported format.

use k8s_openapi::api::core::v1::{ConfigMap, Pod};
use kube::api::{Patch, PatchParams, PostParams};
use serde_json::json;

use crate::env::{Env, TestResult, object, status_code};

fn pod() -> Pod {
    object(json!({
        "metadata": {"name": "p", "labels": {"a": "1"}},
        "spec": {"containers": [
            {"name": "app", "image": "app:1", "env": [{"name": "A", "value": "1"}]},
            {"name": "side", "image": "side:1"}
        ]}
    }))
}

#[tokio::test]
async fn merge_json_and_strategic_patches() -> TestResult {
    let env = Env::new("patch").await;
    let pods = env.api::<Pod>();
    pods.create(&PostParams::default(), &pod()).await?;
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

    // Strategic merge: containers merge by name, env by name.
    let strategic = json!({"spec": {"containers": [
        {"name": "app", "image": "app:2", "env": [{"name": "B", "value": "2"}]}
    ]}});
    let patched = pods.patch("p", &params, &Patch::Strategic(strategic)).await?;
    let containers = patched.spec.unwrap().containers;
    assert_eq!(containers.len(), 2);
    assert_eq!(containers[0].image.as_deref(), Some("app:2"));
    assert_eq!(containers[0].env.as_ref().unwrap().len(), 2);
    assert_eq!(containers[1].image.as_deref(), Some("side:2"));

    let failing = json!([{"op": "test", "path": "/metadata/name", "value": "other"}]);
    let err = json_patch::<Pod>(&env, &failing).await.unwrap_err();
    assert_eq!(status_code(&err), 422);
    env.finish().await;
    Ok(())
}

#[tokio::test]
async fn server_side_apply_creates_then_updates() -> TestResult {
    let env = Env::new("apply").await;
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

/// Sends a JSON patch (RFC 6902) to pod "p" (kube's typed JSON patch needs an optional feature).
async fn json_patch<K: serde::de::DeserializeOwned>(env: &Env, ops: &serde_json::Value) -> kube::Result<K> {
    let request = http::Request::patch(format!("/api/v1/namespaces/{}/pods/p", env.ns))
        .header(http::header::CONTENT_TYPE, "application/json-patch+json")
        .body(serde_json::to_vec(ops).unwrap())
        .unwrap();
    env.client.request(request).await
}
