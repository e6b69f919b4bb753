//! Watches: raw event streams, bookmarks, selectors, 410 Gone, and kube-runtime's watcher,
//! reflector and Controller.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams, WatchEvent, WatchParams};
use kube::runtime::controller::Action;
use kube::runtime::{Controller, WatchStreamExt, reflector, watcher};
use serde_json::json;
use tokio::time::timeout;

use crate::env::{Env, ROOT_CA, TestResult, both, embedded, object};

const WAIT: Duration = Duration::from_secs(10);

fn config_map(name: &str, labels: serde_json::Value) -> ConfigMap {
    object(json!({"metadata": {"name": name, "labels": labels}, "data": {"v": "1"}}))
}

async fn touch(api: &Api<ConfigMap>, name: &str, value: &str) -> kube::Result<ConfigMap> {
    api.patch(
        name,
        &PatchParams::default(),
        &Patch::Merge(json!({"data": {"v": value}})),
    )
    .await
}

both! {
    async fn raw_watch_sees_every_change_and_bookmarks(env: Env) -> TestResult {
        let api = env.api::<ConfigMap>();
        api.create(&PostParams::default(), &config_map("before", json!({})))
            .await?;
        let mut events = api.watch(&WatchParams::default(), "0").await?.boxed();
        // The current state first: "before" and the namespace's own root CA.
        let mut initial = Vec::new();
        while initial.len() < 2 {
            match timeout(WAIT, events.try_next()).await??.expect("stream open") {
                WatchEvent::Added(cm) => initial.push(cm.metadata.name.unwrap()),
                WatchEvent::Bookmark(_) => {}
                other => panic!("unexpected {other:?}"),
            }
        }
        initial.sort();
        assert_eq!(initial, ["before", ROOT_CA]);

        api.create(&PostParams::default(), &config_map("w", json!({})))
            .await?;
        touch(&api, "w", "2").await?;
        api.delete("w", &DeleteParams::default()).await?;
        let mut kinds = Vec::new();
        while kinds.len() < 3 {
            match timeout(WAIT, events.try_next()).await??.expect("stream open") {
                WatchEvent::Added(_) => kinds.push("ADDED"),
                WatchEvent::Modified(_) => kinds.push("MODIFIED"),
                WatchEvent::Deleted(_) => kinds.push("DELETED"),
                WatchEvent::Bookmark(_) => {}
                WatchEvent::Error(e) => panic!("watch error {e:?}"),
            }
        }
        assert_eq!(kinds, ["ADDED", "MODIFIED", "DELETED"]);
        // Bookmarks: kube-apiserver sends one about every minute and shortly before the watch's
        // timeout; the embedded server about every second.
        let params = WatchParams::default().timeout(4);
        let mut short = api.watch(&params, "0").await?.boxed();
        let bookmark = timeout(Duration::from_secs(8), async {
            while let Some(event) = short.try_next().await? {
                if let WatchEvent::Bookmark(bookmark) = event {
                    return Ok::<_, kube::Error>(Some(bookmark));
                }
            }
            Ok(None)
        })
        .await??;
        let bookmark = bookmark.expect("a bookmark before the watch timed out");
        assert!(!bookmark.metadata.resource_version.is_empty());
        env.finish().await;
        Ok(())
    }
}

both! {
    async fn watch_from_resource_version_and_selector_transitions(env: Env) -> TestResult {
        let api = env.api::<ConfigMap>();
        let created = api
            .create(&PostParams::default(), &config_map("s", json!({"app": "x"})))
            .await?;
        let rv = created.metadata.resource_version.clone().unwrap();
        touch(&api, "s", "2").await?;
        // Replayed from history: the modification after `rv`.
        let params = WatchParams::default().labels("app=x").disable_bookmarks();
        let mut events = api.watch(&params, &rv).await?.boxed();
        let replayed = timeout(WAIT, events.try_next()).await??.unwrap();
        assert!(matches!(replayed, WatchEvent::Modified(ref cm) if cm.data.as_ref().unwrap()["v"] == "2"));
        // Losing the label turns into DELETED for this filtered watch; regaining it into ADDED.
        api.patch(
            "s",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {"app": "y"}}})),
        )
        .await?;
        let gone = timeout(WAIT, events.try_next()).await??.unwrap();
        assert!(matches!(gone, WatchEvent::Deleted(_)), "{gone:?}");
        api.patch(
            "s",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {"app": "x"}}})),
        )
        .await?;
        let back = timeout(WAIT, events.try_next()).await??.unwrap();
        assert!(matches!(back, WatchEvent::Added(_)), "{back:?}");
        env.finish().await;
        Ok(())
    }
}

both! {
    async fn streaming_list_ends_with_initial_events_bookmark(env: Env) -> TestResult {
        let api = env.api::<ConfigMap>();
        for name in ["a", "b"] {
            api.create(&PostParams::default(), &config_map(name, json!({})))
                .await?;
        }
        let mut events = api.watch(&WatchParams::streaming_lists(), "0").await?.boxed();
        let mut added = 0;
        loop {
            match timeout(WAIT, events.try_next()).await??.expect("stream open") {
                WatchEvent::Added(_) => added += 1,
                WatchEvent::Bookmark(b) => {
                    assert_eq!(
                        b.metadata
                            .annotations
                            .get("k8s.io/initial-events-end")
                            .map(String::as_str),
                        Some("true")
                    );
                    break;
                }
                other => panic!("unexpected {other:?}"),
            }
        }
        assert_eq!(added, 3, "a, b and {ROOT_CA}");
        env.finish().await;
        Ok(())
    }
}

both! {
    async fn watch_timeout_closes_the_stream(env: Env) -> TestResult {
        let api = env.api::<ConfigMap>();
        let mut events = api
            .watch(&WatchParams::default().timeout(1).disable_bookmarks(), "0")
            .await?
            .boxed();
        let ended = timeout(Duration::from_secs(5), async {
            while events.try_next().await.ok().flatten().is_some() {}
        })
        .await;
        assert!(ended.is_ok(), "the watch must end after timeoutSeconds");
        env.finish().await;
        Ok(())
    }
}

/// Runs a kube-runtime watcher and checks it reports create, update and delete.
async fn watcher_sees_changes(env: &Env, config: watcher::Config) -> TestResult {
    let api = env.api::<ConfigMap>();
    let mut stream = watcher(api.clone(), config).boxed();
    // Wait until the initial list is done before writing.
    timeout(WAIT, async {
        while let Some(event) = stream.next().await {
            if matches!(event, Ok(watcher::Event::InitDone)) {
                break;
            }
        }
    })
    .await?;
    api.create(&PostParams::default(), &config_map("rt", json!({})))
        .await?;
    touch(&api, "rt", "2").await?;
    api.delete("rt", &DeleteParams::default()).await?;
    let mut seen = Vec::new();
    timeout(WAIT, async {
        while let Some(event) = stream.next().await {
            match event {
                Ok(watcher::Event::Apply(cm)) => seen.push(format!("apply:{}", cm.data.unwrap()["v"])),
                Ok(watcher::Event::Delete(_)) => {
                    seen.push("delete".to_string());
                    break;
                }
                _ => {}
            }
        }
    })
    .await?;
    assert_eq!(seen, ["apply:1", "apply:2", "delete"]);
    Ok(())
}

both! {
    async fn runtime_watcher_list_watch(env: Env) -> TestResult {
        watcher_sees_changes(&env, watcher::Config::default()).await?;
        env.finish().await;
        Ok(())
    }
}

both! {
    async fn runtime_watcher_streaming_lists(env: Env) -> TestResult {
        watcher_sees_changes(&env, watcher::Config::default().streaming_lists()).await?;
        env.finish().await;
        Ok(())
    }
}

embedded! {
    async fn gone_after_compaction_and_watcher_recovers(env: Env) -> TestResult {
        let server = env.embedded_server();
        let api = env.api::<ConfigMap>();
        let created = api
            .create(&PostParams::default(), &config_map("old", json!({})))
            .await?;
        server.compact();
        let rv = created.metadata.resource_version.unwrap();
        let mut events = api.watch(&WatchParams::default(), &rv).await?.boxed();
        match timeout(WAIT, events.try_next()).await??.expect("an event") {
            WatchEvent::Error(status) => {
                assert_eq!(status.code, 410);
                assert!(
                    status.message.contains("too old resource version"),
                    "{}",
                    status.message
                );
            }
            other => panic!("expected a 410 ERROR event, got {other:?}"),
        }

        // A running watcher is cut off by compaction, gets 410 on re-watch, re-lists and carries on.
        let (reader, writer) = reflector::store::<ConfigMap>();
        let stream = reflector(
            writer,
            watcher(api.clone(), watcher::Config::default()).default_backoff(),
        );
        let task = tokio::spawn(stream.applied_objects().for_each(|_| async {}));
        timeout(WAIT, reader.wait_until_ready()).await??;
        assert_eq!(reader.state().len(), 2, "old and {ROOT_CA}");
        server.compact();
        api.create(&PostParams::default(), &config_map("new", json!({})))
            .await?;
        timeout(WAIT, async {
            while reader.state().len() < 3 {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await?;
        task.abort();
        env.finish().await;
        Ok(())
    }
}

both! {
    async fn controller_reconciles_objects(env: Env) -> TestResult {
        let api = env.api::<ConfigMap>();
        for name in ["one", "two"] {
            api.create(&PostParams::default(), &config_map(name, json!({})))
                .await?;
        }
        let reconciled = Arc::new(AtomicUsize::new(0));
        let controller = Controller::new(api.clone(), watcher::Config::default())
            .run(
                |_cm: Arc<ConfigMap>, count: Arc<AtomicUsize>| async move {
                    count.fetch_add(1, Ordering::SeqCst);
                    Ok::<_, kube::Error>(Action::await_change())
                },
                |_, _, _| Action::requeue(Duration::from_secs(1)),
                reconciled.clone(),
            )
            .for_each(|_| async {});
        let task = tokio::spawn(controller);
        timeout(WAIT, async {
            while reconciled.load(Ordering::SeqCst) < 2 {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await?;
        task.abort();
        env.finish().await;
        Ok(())
    }
}

embedded! {
    async fn shutdown_ends_open_watches() -> TestResult {
        let server = vcsync_apiserver::ApiServer::start(Default::default()).await?;
        let client = kube::Client::try_from(kube::Config::new(server.url().parse()?))?;
        let api: Api<ConfigMap> = Api::namespaced(client, "default");
        let mut events = api.watch(&WatchParams::default(), "0").await?.boxed();
        let stopped = tokio::spawn(server.clone().shutdown());
        let ended = timeout(Duration::from_secs(5), async {
            while let Ok(Some(_)) = events.try_next().await {}
        })
        .await;
        assert!(ended.is_ok(), "the watch must end at shutdown");
        timeout(Duration::from_secs(6), stopped).await??;
        assert!(api.list(&Default::default()).await.is_err(), "no longer serving");
        Ok(())
    }
}

both! {
    async fn metadata_watcher_gets_partial_objects(env: Env) -> TestResult {
        let api = env.api::<ConfigMap>();
        api.create(&PostParams::default(), &config_map("m", json!({"app": "x"})))
            .await?;
        let listed = api.list_metadata(&Default::default()).await?;
        let mut names: Vec<_> = listed.items.iter().map(|i| i.metadata.name.clone().unwrap()).collect();
        names.sort();
        assert_eq!(names, [ROOT_CA, "m"]);
        let metadata: Api<kube::core::PartialObjectMeta<ConfigMap>> =
            Api::namespaced(env.client.clone(), &env.ns);
        let mut stream = watcher(metadata, watcher::Config::default()).boxed();
        let first = timeout(WAIT, async {
            loop {
                if let Some(Ok(watcher::Event::InitApply(meta))) = stream.next().await
                    && meta.metadata.name.as_deref() == Some("m")
                {
                    return meta;
                }
            }
        })
        .await?;
        assert_eq!(
            first.types.as_ref().map(|t| t.kind.as_str()),
            Some("PartialObjectMetadata")
        );
        assert_eq!(first.metadata.labels.unwrap()["app"], "x");
        env.finish().await;
        Ok(())
    }
}
