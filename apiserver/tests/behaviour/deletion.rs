//! Deletion: finalizers, preconditions, collections, namespaces.

use k8s_openapi::api::core::v1::{ConfigMap, Namespace};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams, Preconditions};
use serde_json::json;

use crate::env::{ROOT_CA, both, object, status_code};

both! {
    async fn finalizers_hold_deletion_until_removed(env: Env) -> TestResult {
        let api = env.api::<ConfigMap>();
        let cm: ConfigMap = object(json!({"metadata": {"name": "held", "finalizers": ["vcsync.dev/test"]}}));
        api.create(&PostParams::default(), &cm).await?;
        api.delete("held", &DeleteParams::default()).await?;
        let marked = api.get("held").await?;
        assert!(
            marked.metadata.deletion_timestamp.is_some(),
            "deletionTimestamp must be set"
        );
        // Deleting again is harmless; the object stays until the finalizer goes.
        api.delete("held", &DeleteParams::default()).await?;
        assert!(api.get_opt("held").await?.is_some());
        api.patch(
            "held",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"finalizers": null}})),
        )
        .await?;
        assert!(
            api.get_opt("held").await?.is_none(),
            "gone once the finalizers are removed"
        );
        env.finish().await;
        Ok(())
    }
}

both! {
    async fn delete_preconditions(env: Env) -> TestResult {
        let api = env.api::<ConfigMap>();
        let cm: ConfigMap = object(json!({"metadata": {"name": "pre"}}));
        let created = api.create(&PostParams::default(), &cm).await?;
        let wrong_uid = DeleteParams {
            preconditions: Some(Preconditions {
                uid: Some("00000000-0000-0000-0000-000000000000".into()),
                resource_version: None,
            }),
            ..Default::default()
        };
        assert_eq!(
            status_code(&api.delete("pre", &wrong_uid).await.unwrap_err()),
            409
        );
        let wrong_rv = DeleteParams {
            preconditions: Some(Preconditions {
                uid: None,
                resource_version: Some("1".into()),
            }),
            ..Default::default()
        };
        assert_eq!(status_code(&api.delete("pre", &wrong_rv).await.unwrap_err()), 409);
        let right = DeleteParams {
            preconditions: Some(Preconditions {
                uid: created.metadata.uid.clone(),
                resource_version: created.metadata.resource_version.clone(),
            }),
            ..Default::default()
        };
        api.delete("pre", &right).await?;
        assert!(api.get_opt("pre").await?.is_none());
        assert_eq!(
            status_code(&api.delete("pre", &DeleteParams::default()).await.unwrap_err()),
            404
        );
        env.finish().await;
        Ok(())
    }
}

both! {
    async fn delete_collection_by_label(env: Env) -> TestResult {
        let api = env.api::<ConfigMap>();
        for (name, app) in [("a", "x"), ("b", "x"), ("c", "y")] {
            let cm: ConfigMap = object(json!({"metadata": {"name": name, "labels": {"app": app}}}));
            api.create(&PostParams::default(), &cm).await?;
        }
        api.delete_collection(&DeleteParams::default(), &ListParams::default().labels("app=x"))
            .await?;
        let left: Vec<String> = api
            .list(&ListParams::default())
            .await?
            .items
            .into_iter()
            .map(|c| c.metadata.name.unwrap())
            .collect();
        assert_eq!(left, ["c", ROOT_CA]);
        env.finish().await;
        Ok(())
    }
}

both! {
    async fn namespace_deletion_removes_its_objects(env: Env) -> TestResult {
        let namespaces: Api<Namespace> = Api::all(env.client.clone());
        let name = format!("{}-doomed", env.ns);
        let ns: Namespace = object(json!({"metadata": {"name": name}}));
        namespaces.create(&PostParams::default(), &ns).await?;
        let api: Api<ConfigMap> = Api::namespaced(env.client.clone(), &name);
        let cm: ConfigMap = object(json!({"metadata": {"name": "inside"}}));
        api.create(&PostParams::default(), &cm).await?;
        namespaces.delete(&name, &DeleteParams::default()).await?;
        // A real cluster's namespace controller takes a moment; the embedded server is immediate.
        let gone = tokio::time::timeout(std::time::Duration::from_secs(60), async {
            while namespaces.get_opt(&name).await.ok().flatten().is_some() {
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
        })
        .await;
        assert!(gone.is_ok(), "namespace {name} was not removed");
        let again = api.create(&PostParams::default(), &cm).await.unwrap_err();
        assert_eq!(status_code(&again), 404);
        env.finish().await;
        Ok(())
    }
}

both! {
    async fn terminating_namespace_waits_for_finalized_objects(env: Env) -> TestResult {
        let namespaces: Api<Namespace> = Api::all(env.client.clone());
        let name = format!("{}-held", env.ns);
        let ns: Namespace = object(json!({"metadata": {"name": name}}));
        namespaces.create(&PostParams::default(), &ns).await?;
        let api: Api<ConfigMap> = Api::namespaced(env.client.clone(), &name);
        let held: ConfigMap = object(json!({"metadata": {"name": "held", "finalizers": ["vcsync.dev/test"]}}));
        api.create(&PostParams::default(), &held).await?;
        namespaces.delete(&name, &DeleteParams::default()).await?;
        let terminating = namespaces.get(&name).await?;
        assert!(terminating.metadata.deletion_timestamp.is_some());
        let late: ConfigMap = object(json!({"metadata": {"name": "late"}}));
        assert_eq!(
            status_code(&api.create(&PostParams::default(), &late).await.unwrap_err()),
            403
        );
        // Wait for the (real or embedded) namespace controller to mark the held object.
        let marked = tokio::time::timeout(std::time::Duration::from_secs(60), async {
            loop {
                if api
                    .get("held")
                    .await
                    .is_ok_and(|cm| cm.metadata.deletion_timestamp.is_some())
                {
                    break;
                }
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
        })
        .await;
        assert!(marked.is_ok());
        api.patch(
            "held",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"finalizers": null}})),
        )
        .await?;
        let gone = tokio::time::timeout(std::time::Duration::from_secs(60), async {
            while namespaces.get_opt(&name).await.ok().flatten().is_some() {
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
        })
        .await;
        assert!(
            gone.is_ok(),
            "namespace {name} must go once its last object is finalized"
        );
        env.finish().await;
        Ok(())
    }
}
