//! Fault injection (`ApiServer::faults`) as a real kube-rs client sees it: Status bodies and codes,
//! Retry-After, latency, dropped and early-closed watches, 410 Gone. Embedded server only: a real
//! kube-apiserver has no fault injection.

use std::time::{Duration, Instant};

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, ListParams, PostParams, WatchEvent, WatchParams};
use kube::{Client, Error};
use serde_json::json;
use tokio::time::timeout;
use vcsync_apiserver::{ApiServer, Fault, Verb};

use crate::env::{ROOT_CA, embedded, object};

const WAIT: Duration = Duration::from_secs(10);

fn config_map(name: &str) -> ConfigMap {
    object(json!({"metadata": {"name": name}, "data": {"v": "1"}}))
}

fn api_status(result: kube::Result<impl std::fmt::Debug>) -> Box<kube::core::Status> {
    match result {
        Err(Error::Api(status)) => status,
        other => panic!("expected an API error, got {other:?}"),
    }
}

/// A client without kube's default retry layer (which retries 429 by itself).
fn no_retry_client(server: &ApiServer) -> Client {
    let mut config = kube::Config::new(server.url().parse().unwrap());
    config.default_retry = false;
    Client::try_from(config).unwrap()
}

embedded! {
    async fn internal_error_for_the_next_matching_request_only(env: Env) -> TestResult {
        let server = env.embedded_server().clone();
        let api = env.api::<ConfigMap>();
        server.reset_counters();
        let rule = server
            .faults()
            .add(Fault::on(Verb::Create, "configmaps").times(1).internal_error());
        let status = api_status(api.create(&PostParams::default(), &config_map("a")).await);
        assert_eq!(status.code, 500);
        assert_eq!(status.reason, "InternalError");
        assert_eq!(status.status, Some(kube::core::response::StatusSummary::Failure));
        assert!(status.message.contains("injected"), "{}", status.message);
        assert!(
            api.get_opt("a").await?.is_none(),
            "a faulted create must not write"
        );
        api.create(&PostParams::default(), &config_map("a")).await?;
        assert_eq!(rule.fired(), 1);
        // Faulted requests are counted like any other request.
        assert_eq!(server.counters().get("create", "configmaps"), 2);
        assert_eq!(server.counters().writes(), 2);
        assert_eq!(server.faults().injected(), 1);
        // A create is matched by the name in its body.
        server
            .faults()
            .add(Fault::on(Verb::Create, "configmaps").name("named"));
        api.create(&PostParams::default(), &config_map("other")).await?;
        let status = api_status(api.create(&PostParams::default(), &config_map("named")).await);
        assert_eq!(status.code, 500);
        env.finish().await;
        Ok(())
    }
}

embedded! {
    async fn too_many_requests_carries_retry_after_and_kube_honours_it(env: Env) -> TestResult {
        let server = env.embedded_server().clone();
        server
            .faults()
            .add(Fault::on(Verb::Get, "configmaps").times(1).too_many_requests(7));
        // The raw answer: code, Status body and header.
        let client = no_retry_client(&server);
        let request = http::Request::get(format!("/api/v1/namespaces/{}/configmaps/missing", env.ns))
            .body(kube::client::Body::empty())?;
        let response = client.send(request).await?;
        assert_eq!(response.status(), 429);
        assert_eq!(response.headers().get(http::header::RETRY_AFTER).unwrap(), "7");
        let api: Api<ConfigMap> = Api::namespaced(client.clone(), &env.ns);
        server
            .faults()
            .add(Fault::on(Verb::Get, "configmaps").times(1).too_many_requests(7));
        let status = api_status(api.get("missing").await);
        assert_eq!(status.code, 429);
        assert_eq!(status.reason, "TooManyRequests");
        assert_eq!(
            status.details.as_ref().unwrap().retry_after_seconds,
            7,
            "{status:?}"
        );

        // kube's default client retries a 429 after Retry-After and then succeeds.
        server.faults().clear();
        server.reset_counters();
        let rule = server.faults().add(
            Fault::on(Verb::Create, "configmaps")
                .times(2)
                .too_many_requests(1),
        );
        let start = Instant::now();
        env.api::<ConfigMap>()
            .create(&PostParams::default(), &config_map("retried"))
            .await?;
        assert_eq!(rule.fired(), 2);
        assert_eq!(server.counters().get("create", "configmaps"), 3);
        assert!(
            start.elapsed() >= Duration::from_millis(1900),
            "{:?}",
            start.elapsed()
        );
        env.finish().await;
        Ok(())
    }
}

embedded! {
    async fn conflict_on_update_and_scoping_by_name_and_namespace(env: Env) -> TestResult {
        let server = env.embedded_server().clone();
        let api = env.api::<ConfigMap>();
        for name in ["a", "b"] {
            api.create(&PostParams::default(), &config_map(name)).await?;
        }
        let rule = server.faults().add(
            Fault::on_writes("configmaps")
                .namespace(&env.ns)
                .name("a")
                .conflict(),
        );
        let mut a = api.get("a").await?;
        a.data = Some([("v".to_string(), "2".to_string())].into());
        let status = api_status(api.replace("a", &PostParams::default(), &a).await);
        assert_eq!((status.code, status.reason.as_str()), (409, "Conflict"));
        assert!(
            status.message.contains("the object has been modified"),
            "{}",
            status.message
        );
        assert_eq!(status.details.as_ref().unwrap().name, "a");
        assert_eq!(api.get("a").await?.data.unwrap()["v"], "1");
        // Another name, and reads of the faulted one, are not affected.
        let mut b = api.get("b").await?;
        b.data = Some([("v".to_string(), "2".to_string())].into());
        api.replace("b", &PostParams::default(), &b).await?;
        // Another namespace is not affected.
        let other: Api<ConfigMap> = Api::namespaced(env.client.clone(), "default");
        other.create(&PostParams::default(), &config_map("a")).await?;
        assert_eq!(rule.fired(), 1);
        // Removing the rule restores normal behaviour.
        rule.remove();
        api.replace("a", &PostParams::default(), &a).await?;
        assert_eq!(api.get("a").await?.data.unwrap()["v"], "2");
        env.finish().await;
        Ok(())
    }
}

embedded! {
    async fn probability_and_clear(env: Env) -> TestResult {
        let server = env.embedded_server().clone();
        let client = no_retry_client(&server);
        let api: Api<ConfigMap> = Api::namespaced(client, &env.ns);
        server.faults().seed(42);
        let never = server
            .faults()
            .add(Fault::on(Verb::List, "configmaps").probability(0.0));
        let half = server.faults().add(
            Fault::on(Verb::List, "configmaps")
                .probability(0.5)
                .internal_error(),
        );
        let mut failed = 0;
        for _ in 0..200 {
            if api.list(&ListParams::default()).await.is_err() {
                failed += 1;
            }
        }
        assert_eq!(never.fired(), 0);
        assert_eq!(half.fired(), failed);
        assert!((60..140).contains(&failed), "{failed} of 200 failed at p=0.5");
        server.faults().clear();
        for _ in 0..20 {
            api.list(&ListParams::default()).await?;
        }
        assert_eq!(half.fired(), failed);
        env.finish().await;
        Ok(())
    }
}

embedded! {
    async fn latency_delays_then_serves(env: Env) -> TestResult {
        let server = env.embedded_server().clone();
        let api = env.api::<ConfigMap>();
        api.create(&PostParams::default(), &config_map("slow")).await?;
        let rule = server.faults().add(
            Fault::on(Verb::Get, "configmaps")
                .times(1)
                .latency(Duration::from_millis(400)),
        );
        let start = Instant::now();
        let cm = api.get("slow").await?;
        assert!(
            start.elapsed() >= Duration::from_millis(400),
            "{:?}",
            start.elapsed()
        );
        assert_eq!(cm.data.unwrap()["v"], "1");
        assert_eq!(rule.fired(), 1);
        env.finish().await;
        Ok(())
    }
}

embedded! {
    async fn drop_watches_ends_open_watches_of_the_resource(env: Env) -> TestResult {
        let server = env.embedded_server().clone();
        let api = env.api::<ConfigMap>();
        let params = WatchParams::default().disable_bookmarks();
        let mut cms = api.watch(&params, "0").await?.boxed();
        let secrets: Api<k8s_openapi::api::core::v1::Secret> = env.api();
        let mut other = secrets.watch(&params, "0").await?.boxed();
        // Let the watches register.
        api.create(&PostParams::default(), &config_map("x")).await?;
        // The namespace's root CA first, then "x".
        for expected in [ROOT_CA, "x"] {
            let added = timeout(WAIT, cms.try_next()).await??.unwrap();
            assert!(
                matches!(&added, WatchEvent::Added(cm) if cm.metadata.name.as_deref() == Some(expected)),
                "{added:?}"
            );
        }
        assert_eq!(server.faults().drop_watches("configmaps", Some(&env.ns)), 1);
        let end = timeout(WAIT, cms.try_next()).await?;
        assert!(matches!(end, Ok(None)), "the dropped watch must end: {end:?}");
        // The secrets watch is still open.
        assert!(
            timeout(Duration::from_millis(300), other.try_next())
                .await
                .is_err()
        );
        assert_eq!(server.faults().drop_watches("configmaps", None), 0);
        env.finish().await;
        Ok(())
    }
}

embedded! {
    async fn next_watch_closes_after_n_events(env: Env) -> TestResult {
        let server = env.embedded_server().clone();
        let api = env.api::<ConfigMap>();
        for name in ["a", "b", "c"] {
            api.create(&PostParams::default(), &config_map(name)).await?;
        }
        let rule = server
            .faults()
            .add(Fault::on(Verb::Watch, "configmaps").times(1).close_watch_after(2));
        let params = WatchParams::default().disable_bookmarks();
        let events: Vec<_> = timeout(WAIT, api.watch(&params, "0").await?.try_collect::<Vec<_>>()).await??;
        assert_eq!(events.len(), 2, "{events:?}");
        assert_eq!(rule.fired(), 1);
        // The next watch is normal again: four initial events (with the root CA), then it stays
        // open.
        let mut normal = api.watch(&params, "0").await?.boxed();
        for _ in 0..4 {
            timeout(WAIT, normal.try_next()).await??.unwrap();
        }
        assert!(
            timeout(Duration::from_millis(300), normal.try_next())
                .await
                .is_err()
        );
        env.finish().await;
        Ok(())
    }
}

embedded! {
    async fn gone_expires_old_resource_versions_for_watch_and_list(env: Env) -> TestResult {
        let server = env.embedded_server().clone();
        let api = env.api::<ConfigMap>();
        api.create(&PostParams::default(), &config_map("a")).await?;
        let old = api
            .list(&ListParams::default())
            .await?
            .metadata
            .resource_version
            .unwrap();
        let rule = server
            .faults()
            .add(Fault::on_verbs(&[Verb::Watch, Verb::List], "configmaps").gone());
        // Watching from the old resourceVersion: an ERROR event with 410 Expired, then the end.
        let params = WatchParams::default().disable_bookmarks();
        let mut events = api.watch(&params, &old).await?.boxed();
        match timeout(WAIT, events.try_next()).await??.unwrap() {
            WatchEvent::Error(status) => {
                assert_eq!((status.code, status.reason.as_str()), (410, "Expired"));
            }
            other => panic!("expected a 410 ERROR event, got {other:?}"),
        }
        assert!(matches!(timeout(WAIT, events.try_next()).await?, Ok(None)));
        // A list at the old resourceVersion: HTTP 410.
        let status = api_status(api.list(&ListParams::default().at(&old)).await);
        assert_eq!((status.code, status.reason.as_str()), (410, "Expired"));
        // A fresh list (no resourceVersion) works, and a watch from its resourceVersion is served.
        let fresh = api
            .list(&ListParams::default())
            .await?
            .metadata
            .resource_version
            .unwrap();
        assert!(fresh.parse::<u64>()? > old.parse::<u64>()?);
        let mut events = api.watch(&params, &fresh).await?.boxed();
        api.create(&PostParams::default(), &config_map("b")).await?;
        let added = timeout(WAIT, events.try_next()).await??.unwrap();
        assert!(matches!(added, WatchEvent::Added(_)), "{added:?}");
        assert_eq!(rule.fired(), 2);
        env.finish().await;
        Ok(())
    }
}

embedded! {
    async fn runtime_watcher_recovers_from_dropped_and_expired_watches(env: Env) -> TestResult {
        use kube::runtime::watcher;
        let server = env.embedded_server().clone();
        let api = env.api::<ConfigMap>();
        let mut stream = watcher(api.clone(), watcher::Config::default()).boxed();
        timeout(WAIT, async {
            while let Some(event) = stream.next().await {
                if matches!(event, Ok(watcher::Event::InitDone)) {
                    break;
                }
            }
        })
        .await?;
        server.faults().add(Fault::on(Verb::Watch, "configmaps").gone());
        server.faults().drop_watches("configmaps", None);
        api.create(&PostParams::default(), &config_map("after-drop"))
            .await?;
        let seen = timeout(Duration::from_secs(20), async {
            while let Some(event) = stream.next().await {
                if let Ok(watcher::Event::Apply(cm) | watcher::Event::InitApply(cm)) = event
                    && cm.metadata.name.as_deref() == Some("after-drop")
                {
                    return true;
                }
            }
            false
        })
        .await?;
        assert!(
            seen,
            "the watcher must see a change made after its watch was dropped"
        );
        env.finish().await;
        Ok(())
    }
}
