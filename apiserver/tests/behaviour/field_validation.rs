//! Server-side field validation: the `fieldValidation` query parameter on create, update and
//! patch (k8s.io/apiserver pkg/endpoints/handlers create.go, patch.go, rest.go
//! `fieldValidation` and `transformDecodeError`; strict JSON decoding by sigs.k8s.io/json; for
//! custom resources apiextensions-apiserver customresource_handler.go and schema/pruning).
//! Raw requests, so that status codes, messages and `Warning` headers are compared exactly.

use std::time::Duration;

use serde_json::{Value, json};

use crate::env::{Env, both, eventually};

/// One raw answer: code, the `Warning` headers, the body.
struct Answer {
    code: u16,
    warnings: Vec<String>,
    body: Value,
}

async fn send(
    env: &Env,
    method: &str,
    path: &str,
    content_type: &str,
    body: &[u8],
) -> Result<Answer, kube::Error> {
    let request = http::Request::builder()
        .method(method)
        .uri(path)
        .header("content-type", content_type)
        .header("accept", "application/json")
        .body(kube::client::Body::from(body.to_vec()))
        .expect("request");
    let response = env.client.send(request).await?;
    let code = response.status().as_u16();
    let warnings = response
        .headers()
        .get_all("warning")
        .iter()
        .map(|v| v.to_str().unwrap_or_default().to_string())
        .collect();
    let bytes = response.into_body().collect_bytes().await?;
    let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    Ok(Answer { code, warnings, body })
}

fn config_maps(env: &Env, query: &str) -> String {
    format!("/api/v1/namespaces/{}/configmaps{query}", env.ns)
}

fn with_spec(name: &str) -> Vec<u8> {
    serde_json::to_vec(
        &json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name},
        "data": {"k": "v"}, "spec": {"foo": "bar"}}),
    )
    .unwrap()
}

const SPEC_WARNING: &str = r#"299 - "unknown field \"spec\"""#;

both! {
    // create.go: Strict is a 400 from transformDecodeError, Warn (also when absent) a warning
    // per strict error and the object without the field, Ignore nothing.
    async fn unknown_top_level_field_of_a_config_map_per_directive(env: Env) -> TestResult {
        let strict = send(&env, "POST", &config_maps(&env, "?fieldValidation=Strict"), "application/json", &with_spec("strict")).await?;
        assert_eq!(strict.code, 400, "{:?}", strict.body);
        assert_eq!(strict.body["reason"], "BadRequest");
        assert_eq!(strict.body["message"],
            r#"ConfigMap in version "v1" cannot be handled as a ConfigMap: strict decoding error: unknown field "spec""#);

        let warn = send(&env, "POST", &config_maps(&env, "?fieldValidation=Warn"), "application/json", &with_spec("warn")).await?;
        assert_eq!((warn.code, warn.warnings.clone()), (201, vec![SPEC_WARNING.to_string()]));
        assert!(warn.body.get("spec").is_none(), "{:?}", warn.body);
        assert_eq!(warn.body["data"]["k"], "v");

        let ignore = send(&env, "POST", &config_maps(&env, "?fieldValidation=Ignore"), "application/json", &with_spec("ignore")).await?;
        assert_eq!((ignore.code, ignore.warnings.len()), (201, 0));
        assert!(ignore.body.get("spec").is_none());

        let absent = send(&env, "POST", &config_maps(&env, ""), "application/json", &with_spec("absent")).await?;
        assert_eq!((absent.code, absent.warnings), (201, vec![SPEC_WARNING.to_string()]));

        // update.go: the same for PUT.
        let mut put = with_spec("warn");
        let mut value: Value = serde_json::from_slice(&put)?;
        value["metadata"]["resourceVersion"] = warn.body["metadata"]["resourceVersion"].clone();
        put = serde_json::to_vec(&value)?;
        let updated = send(&env, "PUT", &config_maps(&env, "/warn?fieldValidation=Strict"), "application/json", &put).await?;
        assert_eq!(updated.code, 400);
        assert_eq!(updated.body["message"],
            r#"ConfigMap in version "v1" cannot be handled as a ConfigMap: strict decoding error: unknown field "spec""#);

        let bad = send(&env, "POST", &config_maps(&env, "?fieldValidation=Loose"), "application/json", &with_spec("bad")).await?;
        assert_eq!(bad.code, 422);
        assert_eq!(bad.body["message"],
            r#"CreateOptions.meta.k8s.io "" is invalid: fieldValidation: Unsupported value: "Loose": supported values: "", "Ignore", "Strict", "Warn""#);
        Ok(())
    }
}

both! {
    // sigs.k8s.io/json: paths of typed objects join fields with '.' and indices as [i].
    async fn a_misspelled_container_field_is_an_unknown_field(env: Env) -> TestResult {
        let pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "web"},
            "spec": {"containers": [{"name": "app", "image": "nginx", "imagePullPolcy": "Always"}]}});
        let path = format!("/api/v1/namespaces/{}/pods", env.ns);
        let strict = send(&env, "POST", &format!("{path}?fieldValidation=Strict"), "application/json", &serde_json::to_vec(&pod)?).await?;
        assert_eq!(strict.code, 400);
        assert_eq!(strict.body["message"],
            r#"Pod in version "v1" cannot be handled as a Pod: strict decoding error: unknown field "spec.containers[0].imagePullPolcy""#);
        let warn = send(&env, "POST", &format!("{path}?fieldValidation=Warn"), "application/json", &serde_json::to_vec(&pod)?).await?;
        assert_eq!(warn.code, 201);
        assert_eq!(warn.warnings, [r#"299 - "unknown field \"spec.containers[0].imagePullPolcy\"""#]);
        Ok(())
    }
}

both! {
    // sigs.k8s.io/json DisallowDuplicateFields: errors in the order the decoder meets them.
    async fn duplicate_fields_are_reported_in_document_order(env: Env) -> TestResult {
        let body = br#"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"dup","name":"dup"},"spec":{},"data":{"a":"1","a":"2"}}"#;
        let strict = send(&env, "POST", &config_maps(&env, "?fieldValidation=Strict"), "application/json", body).await?;
        assert_eq!(strict.code, 400);
        assert_eq!(strict.body["message"],
            r#"ConfigMap in version "v1" cannot be handled as a ConfigMap: strict decoding error: duplicate field "metadata.name", unknown field "spec", duplicate field "data.a""#);
        let warn = send(&env, "POST", &config_maps(&env, ""), "application/json", body).await?;
        assert_eq!(warn.code, 201);
        assert_eq!(warn.warnings, [
            r#"299 - "duplicate field \"metadata.name\"""#,
            SPEC_WARNING,
            r#"299 - "duplicate field \"data.a\"""#,
        ]);
        assert_eq!(warn.body["data"]["a"], "2");
        Ok(())
    }
}

both! {
    // patch.go strategicPatchObject / applyPatchToObject: the patched object's unknown fields
    // are a 422 naming `patch` with the patch as Go prints it; jsonPatcher: the patched JSON.
    async fn patches_adding_an_unknown_field(env: Env) -> TestResult {
        let created = send(&env, "POST", &config_maps(&env, ""), "application/json",
            br#"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"p"},"data":{"k":"v"}}"#).await?;
        assert_eq!(created.code, 201);
        let path = config_maps(&env, "/p?fieldValidation=Strict");
        let patch = br#"{"spec":{"foo":"bar"}}"#;
        let strategic = send(&env, "PATCH", &path, "application/strategic-merge-patch+json", patch).await?;
        assert_eq!(strategic.code, 422, "{:?}", strategic.body);
        assert_eq!(strategic.body["reason"], "Invalid");
        assert_eq!(strategic.body["message"],
            r#" "" is invalid: patch: Invalid value: "map[spec:map[foo:bar]]": strict decoding error: unknown field "spec""#);
        assert_eq!(strategic.body["details"]["causes"][0]["field"], "patch");

        let merge = send(&env, "PATCH", &path, "application/merge-patch+json", patch).await?;
        assert_eq!(merge.code, 422);
        let message = merge.body["message"].as_str().unwrap_or_default();
        assert!(message.starts_with(r#" "" is invalid: patch: Invalid value: "{"#), "{message}");
        assert!(message.ends_with(r#"}": strict decoding error: unknown field "spec""#), "{message}");

        let warned = send(&env, "PATCH", &config_maps(&env, "/p"), "application/strategic-merge-patch+json", patch).await?;
        assert_eq!((warned.code, warned.warnings), (200, vec![SPEC_WARNING.to_string()]));
        assert!(warned.body.get("spec").is_none());
        Ok(())
    }
}

fn widget_crd(group: &str, preserve: bool) -> Value {
    let spec = if preserve {
        json!({"type": "object", "x-kubernetes-preserve-unknown-fields": true})
    } else {
        json!({"type": "object", "properties": {"size": {"type": "integer"}}})
    };
    json!({"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
        "metadata": {"name": format!("widgets.{group}")},
        "spec": {"group": group, "scope": "Namespaced",
            "names": {"plural": "widgets", "singular": "widget", "kind": "Widget", "listKind": "WidgetList"},
            "versions": [{"name": "v1", "served": true, "storage": true,
                "schema": {"openAPIV3Schema": {"type": "object", "properties": {"spec": spec}}}}]}})
}

/// Creates the CRD and waits until its resource answers.
async fn serve_widgets(
    env: &Env,
    group: &str,
    preserve: bool,
) -> Result<String, Box<dyn std::error::Error + Send + Sync>> {
    let crd = serde_json::to_vec(&widget_crd(group, preserve))?;
    let created = send(
        env,
        "POST",
        "/apis/apiextensions.k8s.io/v1/customresourcedefinitions",
        "application/json",
        &crd,
    )
    .await?;
    assert_eq!(created.code, 201, "{:?}", created.body);
    let path = format!("/apis/{group}/v1/namespaces/{}/widgets", env.ns);
    let served = eventually(Duration::from_secs(30), || async {
        let answer = send(env, "GET", &path, "application/json", b"").await.ok()?;
        (answer.code == 200).then_some(())
    })
    .await;
    assert!(served.is_some(), "{group} widgets never served");
    Ok(path)
}

async fn delete_crd(env: &Env, group: &str) {
    let path = format!("/apis/apiextensions.k8s.io/v1/customresourcedefinitions/widgets.{group}");
    let _ = send(env, "DELETE", &path, "application/json", b"").await;
}

both! {
    // customresource_handler.go schemaCoercingDecoder: unknown metadata fields first, then the
    // pruned paths sorted; preserve-unknown-fields keeps them and says nothing.
    async fn custom_resources_are_checked_against_their_structural_schema(env: Env) -> TestResult {
        let group = format!("fv{}.example.com", &env.ns[env.ns.len().saturating_sub(6)..]);
        let path = serve_widgets(&env, &group, false).await?;
        let widget = |name: &str| serde_json::to_vec(&json!({"apiVersion": format!("{group}/v1"), "kind": "Widget",
            "metadata": {"name": name, "bogus": 1}, "spec": {"zeta": 1, "size": 2, "colour": "red"}})).unwrap();
        let strict = send(&env, "POST", &format!("{path}?fieldValidation=Strict"), "application/json", &widget("a")).await?;
        assert_eq!(strict.code, 400, "{:?}", strict.body);
        assert_eq!(strict.body["message"],
            r#"Widget in version "v1" cannot be handled as a Widget: strict decoding error: unknown field "metadata.bogus", unknown field "spec.colour", unknown field "spec.zeta""#);
        let warn = send(&env, "POST", &path, "application/json", &widget("b")).await?;
        assert_eq!(warn.code, 201);
        assert_eq!(warn.warnings.len(), 3, "{:?}", warn.warnings);
        assert_eq!(warn.body["spec"], json!({"size": 2}));
        delete_crd(&env, &group).await;

        let open = format!("fvp{}.example.com", &env.ns[env.ns.len().saturating_sub(6)..]);
        let path = serve_widgets(&env, &open, true).await?;
        let body = serde_json::to_vec(&json!({"apiVersion": format!("{open}/v1"), "kind": "Widget",
            "metadata": {"name": "c"}, "spec": {"anything": {"goes": true}}}))?;
        let kept = send(&env, "POST", &format!("{path}?fieldValidation=Strict"), "application/json", &body).await?;
        assert_eq!((kept.code, kept.warnings.len()), (201, 0), "{:?}", kept.body);
        assert_eq!(kept.body["spec"]["anything"]["goes"], true);
        delete_crd(&env, &open).await;
        Ok(())
    }
}
