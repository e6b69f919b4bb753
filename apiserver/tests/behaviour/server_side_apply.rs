//! Field ownership and server-side apply (k8s.io/apimachinery pkg/util/managedfields/internal:
//! fieldmanager.go, managedfieldsupdater.go, conflict.go `NewConflictError`;
//! sigs.k8s.io/structured-merge-diff merge/update.go `Update`, `Apply`, `prune`; k8s.io/apiserver
//! handlers create.go `managerOrUserAgent`, patch.go `applyPatcher`). Raw requests, so that
//! codes, messages and managedFields are compared exactly.

use std::process::Command;

use serde_json::{Value, json};

use crate::env::{Env, both};

async fn send(
    env: &Env,
    method: &str,
    path: &str,
    content_type: &str,
    user_agent: &str,
    body: &Value,
) -> (u16, Value) {
    let bytes = match content_type {
        "application/apply-patch+yaml" => serde_yaml_ng::to_string(body).unwrap().into_bytes(),
        _ => serde_json::to_vec(body).unwrap(),
    };
    let request = http::Request::builder()
        .method(method)
        .uri(path)
        .header("content-type", content_type)
        .header("accept", "application/json")
        .header("user-agent", user_agent)
        .body(kube::client::Body::from(bytes))
        .expect("request");
    let response = env.client.send(request).await.expect("a response");
    let code = response.status().as_u16();
    let bytes = response.into_body().collect_bytes().await.expect("a body");
    (code, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
}

fn cm_path(env: &Env, name: &str, query: &str) -> String {
    format!("/api/v1/namespaces/{}/configmaps/{name}{query}", env.ns)
}

async fn apply(env: &Env, path: &str, manager: &str, force: bool, body: &Value) -> (u16, Value) {
    let query = format!(
        "{path}?fieldManager={manager}{}",
        if force { "&force=true" } else { "" }
    );
    send(
        env,
        "PATCH",
        &query,
        "application/apply-patch+yaml",
        "behaviour-test/1.0",
        body,
    )
    .await
}

fn config_map(name: &str, data: Value) -> Value {
    json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}, "data": data})
}

/// The entries without their times: (manager, operation, fieldsV1), as stored (in order).
fn owners(object: &Value) -> Vec<(String, String, Value)> {
    object["metadata"]["managedFields"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|e| {
            assert!(e["time"].is_string(), "{e}");
            assert_eq!(
                (&e["fieldsType"], &e["apiVersion"]),
                (&json!("FieldsV1"), &json!("v1")),
                "{e}"
            );
            (
                e["manager"].as_str().unwrap().to_string(),
                e["operation"].as_str().unwrap().to_string(),
                e["fieldsV1"].clone(),
            )
        })
        .collect()
}

fn owner(manager: &str, operation: &str, fields: Value) -> (String, String, Value) {
    (manager.into(), operation.into(), fields)
}

both! {
    // create.go managerOrUserAgent: the fieldManager parameter, else the User-Agent up to its
    // first '/'; managedfieldsupdater.go: an Update entry owning what the create set, ".": {}
    // on nodes that the creation added.
    async fn a_create_records_an_update_entry_for_its_manager(env: Env) -> TestResult {
        let body = json!({"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "created", "labels": {"app": "web"}}, "data": {"a": "1", "b": "2"}});
        let path = format!("/api/v1/namespaces/{}/configmaps", env.ns);
        let (code, created) = send(&env, "POST", &format!("{path}?fieldManager=kubectl-create"), "application/json", "kubectl/v1.37.2 (linux/amd64) kubernetes/abc", &body).await;
        assert_eq!(code, 201, "{created}");
        assert_eq!(owners(&created), [owner("kubectl-create", "Update", json!(
            {"f:data": {".": {}, "f:a": {}, "f:b": {}}, "f:metadata": {"f:labels": {".": {}, "f:app": {}}}}))]);
        let mut by_agent = body.clone();
        by_agent["metadata"]["name"] = json!("by-agent");
        let (code, created) = send(&env, "POST", &path, "application/json", "kubectl/v1.37.2 (linux/amd64) kubernetes/abc", &by_agent).await;
        assert_eq!(code, 201, "{created}");
        assert_eq!(created["metadata"]["managedFields"][0]["manager"], "kubectl");
        // An update that sends managedFields [{}] resets them (fieldmanager.go isResetManagedFields);
        // the object then stays untracked under updates (skipnonapplied.go).
        let mut reset = created.clone();
        reset["metadata"]["managedFields"] = json!([{}]);
        let (code, updated) = send(&env, "PUT", &cm_path(&env, "by-agent", "?fieldManager=editor"), "application/json", "x/1", &reset).await;
        assert_eq!(code, 200, "{updated}");
        assert!(updated["metadata"].get("managedFields").is_none(), "{updated}");
        env.finish().await;
        Ok(())
    }
}

both! {
    // update.go Apply: conflicts with another manager's differently valued field (409,
    // conflict.go's message and causes), force takes it over, shared values are co-owned, and
    // a field the applier owned alone and no longer applies is removed (prune).
    async fn two_appliers_conflict_force_share_and_prune(env: Env) -> TestResult {
        let path = cm_path(&env, "applied", "");
        let (code, a) = apply(&env, &path, "mgr-a", false,
            &config_map("applied", json!({"key": "a", "shared": "s", "only-a": "x"}))).await;
        assert_eq!(code, 201, "{a}");
        assert_eq!(owners(&a), [owner("mgr-a", "Apply", json!(
            {"f:data": {"f:key": {}, "f:only-a": {}, "f:shared": {}}}))]);

        let (code, conflict) = apply(&env, &path, "mgr-b", false, &config_map("applied", json!({"key": "b"}))).await;
        assert_eq!(code, 409, "{conflict}");
        assert_eq!(conflict["reason"], "Conflict");
        assert_eq!(conflict["message"], r#"Apply failed with 1 conflict: conflict with "mgr-a": .data.key"#);
        assert_eq!(conflict["details"]["causes"], json!([{"reason": "FieldManagerConflict",
            "message": "conflict with \"mgr-a\"", "field": ".data.key"}]));

        let (code, shared) = apply(&env, &path, "mgr-b", false, &config_map("applied", json!({"shared": "s"}))).await;
        assert_eq!(code, 200, "{shared}");
        let (code, forced) = apply(&env, &path, "mgr-b", true, &config_map("applied", json!({"key": "b", "shared": "s"}))).await;
        assert_eq!(code, 200, "{forced}");
        assert_eq!(forced["data"]["key"], "b");
        assert_eq!(owners(&forced), [
            owner("mgr-a", "Apply", json!({"f:data": {"f:only-a": {}, "f:shared": {}}})),
            owner("mgr-b", "Apply", json!({"f:data": {"f:key": {}, "f:shared": {}}})),
        ]);

        // mgr-a no longer applies only-a (removed) nor key (mgr-b's now: stays).
        let (code, pruned) = apply(&env, &path, "mgr-a", false, &config_map("applied", json!({"shared": "s"}))).await;
        assert_eq!(code, 200, "{pruned}");
        assert_eq!(pruned["data"], json!({"key": "b", "shared": "s"}));
        // mgr-b drops everything: key goes, shared stays with mgr-a.
        let (code, last) = apply(&env, &path, "mgr-b", false,
            &json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "applied"}})).await;
        assert_eq!(code, 200, "{last}");
        assert_eq!(last["data"], json!({"shared": "s"}));
        assert_eq!(owners(&last), [owner("mgr-a", "Apply", json!({"f:data": {"f:shared": {}}}))]);
        env.finish().await;
        Ok(())
    }
}

both! {
    // handlers/patch.go: ValidatePatchOptions wants a fieldManager for apply (errors.NewInvalid
    // of PatchOptions) and refuses force on other patches.
    async fn apply_needs_a_field_manager(env: Env) -> TestResult {
        let (code, status) = send(&env, "PATCH", &cm_path(&env, "nameless", ""), "application/apply-patch+yaml",
            "behaviour-test/1.0", &config_map("nameless", json!({"a": "1"}))).await;
        assert_eq!(code, 422, "{status}");
        assert_eq!(status["message"],
            r#"PatchOptions.meta.k8s.io "" is invalid: fieldManager: Required value: is required for apply patch"#);
        let (code, status) = send(&env, "PATCH", &cm_path(&env, "nameless", "?force=true"), "application/merge-patch+json",
            "behaviour-test/1.0", &json!({"data": {"a": "2"}})).await;
        assert_eq!(code, 422, "{status}");
        assert_eq!(status["message"],
            r#"PatchOptions.meta.k8s.io "" is invalid: force: Forbidden: may not be specified for non-apply patch"#);
        env.finish().await;
        Ok(())
    }
}

fn deployment(containers: Value) -> Value {
    json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"},
        "spec": {"selector": {"matchLabels": {"app": "web"}},
            "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": containers}}}})
}

both! {
    // Pod containers are a map list keyed by name (x-kubernetes-list-type: map): a second
    // manager adds its own container without conflict and owns only it.
    async fn a_second_manager_adds_a_container_by_name(env: Env) -> TestResult {
        let path = format!("/apis/apps/v1/namespaces/{}/deployments/web", env.ns);
        let (code, first) = apply(&env, &path, "mgr-a", false,
            &deployment(json!([{"name": "a", "image": "busybox:1"}]))).await;
        assert_eq!(code, 201, "{first}");
        let sidecar = json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"},
            "spec": {"template": {"spec": {"containers": [{"name": "b", "image": "busybox:2"}]}}}});
        let (code, both) = apply(&env, &path, "mgr-b", false, &sidecar).await;
        assert_eq!(code, 200, "{both}");
        let names: Vec<&str> = both["spec"]["template"]["spec"]["containers"].as_array().unwrap()
            .iter().map(|c| c["name"].as_str().unwrap()).collect();
        assert_eq!(names, ["a", "b"]);
        // The appliers' entries; on a real control plane the deployment controller may have
        // written the status and its revision annotation in between, with an entry of its own.
        let entries: Vec<&Value> = both["metadata"]["managedFields"].as_array().unwrap().iter()
            .filter(|entry| entry["manager"].as_str().is_some_and(|m| m.starts_with("mgr-")))
            .collect();
        assert_eq!(entries.len(), 2, "{both}");
        assert_eq!((&entries[1]["manager"], &entries[1]["apiVersion"]), (&json!("mgr-b"), &json!("apps/v1")));
        assert_eq!(entries[1]["fieldsV1"], json!({"f:spec": {"f:template": {"f:spec": {"f:containers": {
            "k:{\"name\":\"b\"}": {".": {}, "f:image": {}, "f:name": {}}}}}}}));
        assert_eq!(entries[0]["fieldsV1"]["f:spec"]["f:template"]["f:spec"]["f:containers"],
            json!({"k:{\"name\":\"a\"}": {".": {}, "f:image": {}, "f:name": {}}}));
        // mgr-b changing mgr-a's container image conflicts on that container's field only.
        let takeover = json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"},
            "spec": {"template": {"spec": {"containers": [{"name": "a", "image": "busybox:3"}]}}}});
        let (code, conflict) = apply(&env, &path, "mgr-b", false, &takeover).await;
        assert_eq!(code, 409, "{conflict}");
        assert_eq!(conflict["message"],
            r#"Apply failed with 1 conflict: conflict with "mgr-a": .spec.template.spec.containers[name="a"].image"#);
        env.finish().await;
        Ok(())
    }
}

both! {
    // managedfieldsupdater.go: an Update of a field moves it from the applier to the updater;
    // a later apply of another value conflicts with the Update manager, printed with its
    // apiVersion (conflict.go printManager).
    async fn an_update_after_an_apply_moves_ownership(env: Env) -> TestResult {
        let path = cm_path(&env, "moved", "");
        let (code, applied) = apply(&env, &path, "mgr-a", false, &config_map("moved", json!({"key": "a", "keep": "k"}))).await;
        assert_eq!(code, 201, "{applied}");
        let mut edited = applied.clone();
        edited["data"]["key"] = json!("edited");
        let (code, updated) = send(&env, "PUT", &cm_path(&env, "moved", "?fieldManager=editor"), "application/json", "x/1", &edited).await;
        assert_eq!(code, 200, "{updated}");
        assert_eq!(owners(&updated), [
            owner("mgr-a", "Apply", json!({"f:data": {"f:keep": {}}})),
            owner("editor", "Update", json!({"f:data": {"f:key": {}}})),
        ]);
        let (code, conflict) = apply(&env, &path, "mgr-a", false, &config_map("moved", json!({"key": "a", "keep": "k"}))).await;
        assert_eq!(code, 409, "{conflict}");
        assert_eq!(conflict["message"],
            r#"Apply failed with 1 conflict: conflict with "editor" using v1: .data.key"#);
        assert_eq!(conflict["details"]["causes"][0]["message"], "conflict with \"editor\" using v1");
        env.finish().await;
        Ok(())
    }
}

both! {
    // Leader election as kube-lease-manager does it: two standbys apply the free Lease with
    // their own identities (no force); the second conflicts on the fields the first took
    // (RELIABILITY.md "Leader election and failover").
    async fn two_standbys_racing_for_a_lease_only_one_wins(env: Env) -> TestResult {
        let leases = format!("/apis/coordination.k8s.io/v1/namespaces/{}/leases", env.ns);
        let (code, created) = send(&env, "POST", &leases, "application/json", "x/1",
            &json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": {"name": "vcsync-test"}, "spec": {}})).await;
        assert_eq!(code, 201, "{created}");
        let acquire = |who: &str, at: &str| json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
            "metadata": {"name": "vcsync-test"},
            "spec": {"acquireTime": at, "renewTime": at, "holderIdentity": who, "leaseDurationSeconds": 15}});
        let path = format!("{leases}/vcsync-test");
        let (code, won) = apply(&env, &path, "kube-lease-manager-a", false, &acquire("a", "2026-01-01T00:00:00.000000Z")).await;
        assert_eq!(code, 200, "{won}");
        let (code, lost) = apply(&env, &path, "kube-lease-manager-b", false, &acquire("b", "2026-01-01T00:00:00.100000Z")).await;
        assert_eq!(code, 409, "{lost}");
        assert_eq!(lost["message"], "Apply failed with 3 conflicts: conflicts with \"kube-lease-manager-a\":\n\
            - .spec.acquireTime\n- .spec.holderIdentity\n- .spec.renewTime");
        let fields: Vec<&Value> = lost["details"]["causes"].as_array().unwrap().iter().map(|c| &c["field"]).collect();
        assert_eq!(fields, [".spec.acquireTime", ".spec.holderIdentity", ".spec.renewTime"]);
        let (code, lease) = send(&env, "GET", &path, "application/json", "x/1", &Value::Null).await;
        assert_eq!(code, 200);
        assert_eq!(lease["spec"]["holderIdentity"], "a");
        env.finish().await;
        Ok(())
    }
}

both! {
    multi_thread;
    // kubectl apply --server-side (field manager "kubectl"), then another --field-manager
    // changing the same key: kubectl reports kube-apiserver's conflict and fails.
    async fn kubectl_server_side_apply_by_a_second_manager_conflicts(env: Env) -> TestResult {
        let kubectl = std::env::var("VCSYNC_KUBECTL").unwrap_or_else(|_| "kubectl".into());
        let dir = std::env::temp_dir().join(format!("vcsync-ssa-{}-{}", std::process::id(), env.ns));
        std::fs::create_dir_all(&dir)?;
        let write = |name: &str, value: &str| {
            let file = dir.join(name);
            std::fs::write(&file, format!("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: by-kubectl\ndata:\n  key: {value}\n")).unwrap();
            file
        };
        let run = |file: &std::path::Path, extra: &[&str]| {
            Command::new(&kubectl).arg("--kubeconfig").arg(env.kubeconfig()).args(["-n", &env.ns, "apply", "--server-side", "-f"])
                .arg(file).args(extra).output().expect("kubectl runs")
        };
        let first = run(&write("one.yaml", "one"), &[]);
        assert!(first.status.success(), "{}", String::from_utf8_lossy(&first.stderr));
        let second = run(&write("two.yaml", "two"), &["--field-manager", "other"]);
        let stderr = String::from_utf8_lossy(&second.stderr);
        assert!(!second.status.success());
        assert!(stderr.contains(r#"Apply failed with 1 conflict: conflict with "kubectl": .data.key"#), "{stderr}");
        let _ = std::fs::remove_dir_all(&dir);
        env.finish().await;
        Ok(())
    }
}
