//! The pushback layer in the clients' real stack (`clients::client_builder`) against the
//! embedded API server's injected 429s (real clock: Retry-After is in whole seconds), and its
//! answer classification and retry bound on their own.

use std::{convert::Infallible, sync::atomic::AtomicU32};

use k8s_openapi::api::core::v1::ConfigMap;
use kube::{
    Api, Client,
    api::{ObjectMeta, PostParams},
    config::Kubeconfig,
};
use tower::service_fn;
use vcsync_apiserver::{ApiServer, Fault, ServerConfig, Verb};

use super::*;

/// A client with vcsync's stack for `server`.
async fn client_of(server: &ApiServer) -> Client {
    let kubeconfig = Kubeconfig::from_yaml(&server.kubeconfig()).unwrap();
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
        .await
        .unwrap();
    crate::clients::client_builder(config, None).unwrap().build()
}

async fn server_with_config_maps(names: &[&str]) -> (ApiServer, Api<ConfigMap>) {
    let server = ApiServer::start(ServerConfig::default()).await.unwrap();
    let api: Api<ConfigMap> = Api::namespaced(client_of(&server).await, "default");
    for name in names {
        let cm = ConfigMap {
            metadata: ObjectMeta {
                name: Some(name.to_string()),
                ..ObjectMeta::default()
            },
            ..ConfigMap::default()
        };
        api.create(&PostParams::default(), &cm).await.unwrap();
    }
    server.reset_counters();
    (server, api)
}

#[tokio::test]
async fn a_throttled_request_succeeds_after_waiting_retry_after() {
    let (server, api) = server_with_config_maps(&["a"]).await;
    let throttle = server.faults().add(
        Fault::on(Verb::Get, "configmaps")
            .name("a")
            .times(2)
            .too_many_requests(1),
    );
    let start = Instant::now();
    api.get("a").await.expect("the GET succeeds once the 429s end");
    let waited = start.elapsed();
    assert!(
        waited >= Duration::from_secs(2),
        "two Retry-After: 1 waits, took {waited:?}"
    );
    assert_eq!(throttle.fired(), 2);
    assert_eq!(
        server.counters().get("get", "configmaps"),
        3,
        "two refused, one served"
    );
    server.shutdown().await;
}

/// 32 requests refused at once, then 20 new ones while the client is held: nothing reaches
/// the server until the Retry-After has passed, then each request is sent once more.
#[tokio::test]
async fn a_client_refused_on_many_requests_holds_them_all_no_retry_storm() {
    let (server, api) = server_with_config_maps(&["a"]).await;
    let throttle = server
        .faults()
        .add(Fault::on(Verb::Get, "configmaps").too_many_requests(1));
    let start = Instant::now();
    let get = |api: Api<ConfigMap>| tokio::spawn(async move { api.get("a").await.map(|_| Instant::now()) });
    let mut requests: Vec<_> = (0..32).map(|_| get(api.clone())).collect();
    while throttle.fired() < 32 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // Every first attempt refused: the client is held for the Retry-After (1 s from the last
    // refusal). New requests wait too instead of meeting 429s of their own.
    requests.extend((0..20).map(|_| get(api.clone())));
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        throttle.fired(),
        32,
        "requests reached the server while the client was held"
    );
    assert_eq!(server.counters().get("get", "configmaps"), 32);
    throttle.remove();
    for request in requests {
        let done = request.await.unwrap().expect("every GET succeeds after the hold");
        assert!(
            done - start >= Duration::from_secs(1),
            "a request did not wait the Retry-After"
        );
    }
    // 32 refused + 32 retried + 20 held ones sent once.
    assert_eq!(server.counters().get("get", "configmaps"), 32 + 32 + 20);
    server.shutdown().await;
}

/// One request refused over and over (a per-object limit) does not hold the client's others.
#[tokio::test]
async fn one_refused_request_does_not_hold_the_others() {
    let (server, api) = server_with_config_maps(&["slow", "other"]).await;
    let throttle = server.faults().add(
        Fault::on(Verb::Get, "configmaps")
            .name("slow")
            .too_many_requests(2),
    );
    let slow = tokio::spawn({
        let api = api.clone();
        async move { api.get("slow").await }
    });
    while throttle.fired() < 1 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    for _ in 0..3 {
        api.get("other").await.unwrap();
    }
    assert!(
        !slow.is_finished(),
        "the throttled GET is still waiting its Retry-After"
    );
    assert_eq!(server.counters().get("get", "configmaps"), 1 + 3);
    throttle.remove();
    slow.await.unwrap().unwrap();
    server.shutdown().await;
}

/// A watch that met a 429 is started again after the wait and then streams events.
#[tokio::test]
async fn a_throttled_watch_is_started_again_and_streams() {
    use futures::{StreamExt, TryStreamExt};
    use kube::api::WatchParams;
    let (server, api) = server_with_config_maps(&[]).await;
    let throttle = server
        .faults()
        .add(Fault::on(Verb::Watch, "configmaps").times(1).too_many_requests(1));
    let mut events = api.watch(&WatchParams::default(), "0").await.unwrap().boxed();
    assert_eq!(throttle.fired(), 1);
    let cm = ConfigMap {
        metadata: ObjectMeta {
            name: Some("late".into()),
            ..ObjectMeta::default()
        },
        ..ConfigMap::default()
    };
    api.create(&PostParams::default(), &cm).await.unwrap();
    let event = tokio::time::timeout(Duration::from_secs(10), events.try_next())
        .await
        .expect("an event")
        .unwrap();
    assert!(event.is_some());
    server.shutdown().await;
}

fn answer(status: u16, retry_after: Option<&str>) -> Response<()> {
    let mut response = Response::builder().status(status);
    if let Some(value) = retry_after {
        response = response.header(RETRY_AFTER, value);
    }
    response.body(()).unwrap()
}

#[test]
fn what_is_retried_and_how() {
    let secs = Duration::from_secs;
    assert_eq!(
        refusal_of(&answer(429, Some("3"))),
        Some(Refusal::Server(Some(secs(3))))
    );
    assert_eq!(refusal_of(&answer(429, None)), Some(Refusal::Server(None)));
    assert_eq!(refusal_of(&answer(429, Some("0"))), Some(Refusal::Server(None)));
    assert_eq!(
        refusal_of(&answer(429, Some("soon"))),
        Some(Refusal::Server(None))
    );
    assert_eq!(
        refusal_of(&answer(429, Some("3600"))),
        Some(Refusal::Server(Some(MAX_WAIT)))
    );
    assert_eq!(
        refusal_of(&answer(503, Some("2"))),
        Some(Refusal::Server(Some(secs(2))))
    );
    assert_eq!(
        refusal_of(&answer(504, Some("1"))),
        Some(Refusal::Request(secs(1)))
    );
    assert_eq!(refusal_of(&answer(503, None)), None);
    assert_eq!(refusal_of(&answer(504, None)), None);
    assert_eq!(refusal_of(&answer(500, None)), None);
    assert_eq!(refusal_of(&answer(409, Some("1"))), None);
    assert_eq!(refusal_of(&answer(200, None)), None);
}

/// A server that never stops refusing gets the first attempt and [`MAX_RETRIES`] retries, each
/// after a backoff (no Retry-After), and the client gets the last 429.
#[tokio::test(start_paused = true)]
async fn retries_are_bounded() {
    let sent = Arc::new(AtomicU32::new(0));
    let server = service_fn({
        let sent = sent.clone();
        move |_: Request<Body>| {
            sent.fetch_add(1, Ordering::SeqCst);
            async { Ok::<_, Infallible>(answer(429, None)) }
        }
    });
    let mut client = PushbackLayer::new("test").layer(server);
    let start = Instant::now();
    let response = client
        .ready()
        .await
        .unwrap()
        .call(Request::new(Body::empty()))
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(sent.load(Ordering::SeqCst), 1 + MAX_RETRIES);
    // At least half of 0.25 + 0.5 + 1 + 2 + 4 * 6 s.
    assert!(start.elapsed() >= Duration::from_secs_f64(27.75 / 2.0));
}
