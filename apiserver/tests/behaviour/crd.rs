//! CustomResourceDefinitions: a created CRD is established and its type served like a built-in
//! kind (discovery, CRUD, selectors, patches, watch, status subresource).

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, ApiResource, DeleteParams, DynamicObject, ListParams, Patch, PatchParams, PostParams};
use kube::discovery::{Discovery, Scope};
use kube::runtime::{WatchStreamExt, watcher};
use serde_json::{Value, json};

use crate::env::{Env, TestResult, both, object, status_code};

fn crd(group: &str, scope: &str, status: bool) -> CustomResourceDefinition {
    let mut version = json!({"name": "v1", "served": true, "storage": true,
        "schema": {"openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}}});
    if status {
        version["subresources"] = json!({"status": {}});
    }
    object(json!({"metadata": {"name": format!("widgets.{group}")},
        "spec": {"group": group, "scope": scope,
            "names": {"plural": "widgets", "singular": "widget", "kind": "Widget", "listKind": "WidgetList"},
            "versions": [version]}}))
}

async fn create_established(env: &Env, crd: &CustomResourceDefinition) -> TestResult {
    let crds: Api<CustomResourceDefinition> = Api::all(env.client.clone());
    let name = crd.metadata.name.clone().unwrap();
    crds.create(&PostParams::default(), crd).await?;
    let established = |c: &CustomResourceDefinition| {
        c.status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Established" && c.status == "True"))
    };
    for _ in 0..100 {
        if established(&crds.get(&name).await?) {
            return Ok(());
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    Err("CRD not established".into())
}

async fn remove(env: &Env, name: &str) {
    let crds: Api<CustomResourceDefinition> = Api::all(env.client.clone());
    let _ = crds.delete(name, &DeleteParams::default()).await;
}

both! {
    async fn crd_types_are_served_like_builtin_kinds(env: Env) -> TestResult {
        let group = format!("{}.example.com", env.ns);
        create_established(&env, &crd(&group, "Namespaced", true)).await?;
        let crds: Api<CustomResourceDefinition> = Api::all(env.client.clone());
        let stored = crds.get(&format!("widgets.{group}")).await?;
        let accepted = stored.status.unwrap().accepted_names.unwrap();
        assert_eq!(
            (accepted.kind.as_str(), accepted.plural.as_str()),
            ("Widget", "widgets")
        );

        let discovery = Discovery::new(env.client.clone()).run().await?;
        let (resource, caps) = discovery
            .resolve_gvk(&kube::api::GroupVersionKind::gvk(&group, "v1", "Widget"))
            .expect("the CRD's type is discovered");
        assert_eq!(resource.plural, "widgets");
        assert_eq!(caps.scope, Scope::Namespaced);
        assert!(
            caps.subresources
                .iter()
                .any(|(r, _)| r.plural.ends_with("status"))
        );

        let api: Api<DynamicObject> = Api::namespaced_with(env.client.clone(), &env.ns, &resource);
        let widget = |name: &str, color: &str| -> DynamicObject {
            object(json!({"apiVersion": format!("{group}/v1"), "kind": "Widget",
                "metadata": {"name": name, "labels": {"color": color}}, "spec": {"size": 1}}))
        };
        let mut events = watcher(api.clone(), watcher::Config::default())
            .applied_objects()
            .boxed();
        let a = api.create(&PostParams::default(), &widget("a", "red")).await?;
        api.create(&PostParams::default(), &widget("b", "blue")).await?;
        assert_eq!(a.metadata.generation, Some(1));
        let first = tokio::time::timeout(std::time::Duration::from_secs(5), events.try_next()).await??;
        assert!(first.is_some());
        let err = api
            .create(&PostParams::default(), &widget("a", "red"))
            .await
            .unwrap_err();
        assert_eq!(status_code(&err), 409);

        let red = api.list(&ListParams::default().labels("color=red")).await?;
        assert_eq!(red.items.len(), 1);

        // Main-resource writes ignore status; the status subresource sets only status.
        let patched = api
            .patch(
                "a",
                &PatchParams::default(),
                &Patch::Merge(json!({"spec": {"size": 2}, "status": {"ready": true}})),
            )
            .await?;
        assert_eq!(patched.data["spec"]["size"], 2);
        assert_eq!(patched.data.get("status"), None);
        assert_eq!(patched.metadata.generation, Some(2));
        let status = api
            .patch_status(
                "a",
                &PatchParams::default(),
                &Patch::Merge(json!({"status": {"ready": true}, "spec": {"size": 9}})),
            )
            .await?;
        assert_eq!(status.data["status"]["ready"], true);
        assert_eq!(status.data["spec"]["size"], 2);
        assert_eq!(status.metadata.generation, Some(2));

        api.delete("a", &DeleteParams::default()).await?;
        assert!(api.get_opt("a").await?.is_none());
        remove(&env, &format!("widgets.{group}")).await;
        env.finish().await;
        Ok(())
    }
}

both! {
    async fn cluster_scoped_crd_without_status_and_removal(env: Env) -> TestResult {
        let group = format!("{}.example.org", env.ns);
        create_established(&env, &crd(&group, "Cluster", false)).await?;
        let resource = ApiResource {
            group: group.clone(),
            version: "v1".into(),
            api_version: format!("{group}/v1"),
            kind: "Widget".into(),
            plural: "widgets".into(),
        };
        let api: Api<DynamicObject> = Api::all_with(env.client.clone(), &resource);
        let created = api
            .create(
                &PostParams::default(),
                &object(json!({"apiVersion": format!("{group}/v1"), "kind": "Widget",
                "metadata": {"name": "w"}, "spec": {"x": 1}, "status": {"s": 1}})),
            )
            .await?;
        assert_eq!(created.metadata.namespace, None);
        // No status subresource: status is an ordinary field.
        let updated = api
            .patch(
                "w",
                &PatchParams::default(),
                &Patch::Merge(json!({"status": {"s": 2}})),
            )
            .await?;
        assert_eq!(updated.data["status"]["s"], 2);
        let groups: Value = serde_json::from_slice(
            &env.client
                .request_text(http::Request::get("/apis").body(Vec::new())?)
                .await?
                .into_bytes(),
        )?;
        assert!(
            groups["groups"]
                .as_array()
                .unwrap()
                .iter()
                .any(|g| g["name"] == group.as_str())
        );
        let resources: Value = serde_json::from_str(
            &env.client
                .request_text(http::Request::get(format!("/apis/{group}/v1")).body(Vec::new())?)
                .await?,
        )?;
        let entry = &resources["resources"][0];
        assert_eq!(
            (
                entry["name"].as_str(),
                entry["namespaced"].as_bool(),
                entry["kind"].as_str()
            ),
            (Some("widgets"), Some(false), Some("Widget"))
        );
        assert!(entry["verbs"].as_array().unwrap().iter().any(|v| v == "watch"));

        // Invalid definitions are refused.
        let crds: Api<CustomResourceDefinition> = Api::all(env.client.clone());
        let mut bad = crd(&format!("bad.{group}"), "Cluster", false);
        bad.metadata.name = Some("wrong".into());
        let err = crds.create(&PostParams::default(), &bad).await.unwrap_err();
        assert_eq!(status_code(&err), 422);

        // Once the CRD is gone its type is not served any more.
        api.delete("w", &DeleteParams::default()).await?;
        remove(&env, &format!("widgets.{group}")).await;
        let mut gone = false;
        for _ in 0..100 {
            if let Err(err) = api.list(&ListParams::default()).await {
                gone = status_code(&err) == 404;
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        assert!(gone);
        env.finish().await;
        Ok(())
    }
}
