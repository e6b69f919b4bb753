//! Label and field selectors, pagination.

use k8s_openapi::api::core::v1::{ConfigMap, Pod};
use kube::api::{ListParams, PostParams};
use serde_json::json;

use crate::env::{ROOT_CA, both, object};

fn names<K: kube::Resource>(items: &[K]) -> Vec<String> {
    let mut names: Vec<String> = items.iter().map(|i| i.meta().name.clone().unwrap()).collect();
    names.sort();
    names
}

both! {
    async fn label_and_field_selectors(env: Env) -> TestResult {
        let api = env.api::<ConfigMap>();
        for (name, labels) in [
            ("web", json!({"app": "web", "tier": "front"})),
            ("api", json!({"app": "api", "tier": "back"})),
            ("db", json!({"app": "db"})),
        ] {
            let cm: ConfigMap = object(json!({"metadata": {"name": name, "labels": labels}}));
            api.create(&PostParams::default(), &cm).await?;
        }
        let cases = [
            ("app=web", vec!["web"]),
            ("app==api", vec!["api"]),
            ("app!=web", vec!["api", "db", ROOT_CA]),
            ("tier in (front,back)", vec!["api", "web"]),
            ("app notin (web,api)", vec!["db", ROOT_CA]),
            ("tier", vec!["api", "web"]),
            ("!tier", vec!["db", ROOT_CA]),
            ("app=web,tier=front", vec!["web"]),
        ];
        for (selector, expected) in cases {
            let found = api.list(&ListParams::default().labels(selector)).await?.items;
            assert_eq!(names(&found), expected, "labelSelector {selector}");
        }
        let by_name = api
            .list(&ListParams::default().fields("metadata.name=db"))
            .await?
            .items;
        assert_eq!(names(&by_name), ["db"]);
        let not_name = api
            .list(&ListParams::default().fields("metadata.name!=db"))
            .await?
            .items;
        assert_eq!(names(&not_name), ["api", ROOT_CA, "web"]);
        let by_ns = api
            .list(&ListParams::default().fields(&format!("metadata.namespace={}", env.ns)))
            .await?
            .items;
        assert_eq!(by_ns.len(), 4, "with {ROOT_CA}");

        let pods = env.api::<Pod>();
        for (name, node) in [("on-a", "node-a"), ("on-b", "node-b")] {
            let pod: Pod = object(json!({"metadata": {"name": name},
                "spec": {"nodeName": node, "containers": [{"name": "c", "image": "nginx"}]}}));
            pods.create(&PostParams::default(), &pod).await?;
        }
        let on_a = pods
            .list(&ListParams::default().fields("spec.nodeName=node-a"))
            .await?
            .items;
        assert_eq!(names(&on_a), ["on-a"]);
        env.finish().await;
        Ok(())
    }
}

both! {
    async fn limit_and_continue(env: Env) -> TestResult {
        let api = env.api::<ConfigMap>();
        for i in 0..7 {
            let cm: ConfigMap = object(json!({"metadata": {"name": format!("cm-{i}")}}));
            api.create(&PostParams::default(), &cm).await?;
        }
        let mut seen = Vec::new();
        let mut token: Option<String> = None;
        let mut pages = 0;
        loop {
            let mut params = ListParams::default().limit(3);
            if let Some(t) = &token {
                params = params.continue_token(t);
            }
            let page = api.list(&params).await?;
            assert!(page.items.len() <= 3);
            seen.extend(names(&page.items));
            pages += 1;
            token = page.metadata.continue_.filter(|t| !t.is_empty());
            if token.is_none() {
                break;
            }
        }
        assert_eq!(pages, 3, "7 ConfigMaps and {ROOT_CA} in pages of 3");
        seen.sort();
        let mut expected: Vec<String> = (0..7).map(|i| format!("cm-{i}")).collect();
        expected.push(ROOT_CA.to_string());
        assert_eq!(seen, expected);
        env.finish().await;
        Ok(())
    }
}
