//! Tests of the indices without an API server: the pod-reference index fed by an informer
//! that reads a stream of watch events, and the collision set.

use futures::FutureExt;
use k8s_openapi::api::core::v1::Pod;
use kube::runtime::{reflector::ObjectRef, watcher};
use tokio_stream::{StreamExt, wrappers::UnboundedReceiverStream};

use super::*;
use crate::{
    cache::{Storage, cache_of},
    error::Side,
    informer::{Informer, Subscription},
    resource::Kind,
};

/// A pod of namespace `team` mounting config map `config_map` and reading secret `secret`.
fn pod(name: &str, config_map: &str, secret: &str) -> Pod {
    serde_json::from_value(serde_json::json!({
        "metadata": {"name": name, "namespace": "team"},
        "spec": {
            "containers": [{"name": "c", "env": [
                {"name": "X", "valueFrom": {"secretKeyRef": {"name": secret, "key": "k"}}}
            ]}],
            "volumes": [{"name": "v", "configMap": {"name": config_map}}]
        }
    }))
    .unwrap()
}

fn team(name: &str) -> VirtualKey {
    VirtualKey::namespaced("team", name)
}

fn new_index() -> Arc<PodReferences> {
    Arc::new(PodReferences {
        index: ReferenceIndex::new(),
        listeners: Mutex::default(),
    })
}

/// What a listener has been told so far.
fn told(changes: &mut UnboundedReceiverStream<VirtualKey>) -> Vec<String> {
    let mut keys = Vec::new();
    while let Some(Some(key)) = changes.next().now_or_never() {
        keys.push(key.to_string());
    }
    keys
}

async fn settle() {
    for _ in 0..50 {
        tokio::task::yield_now().await;
    }
}

fn list(pods: impl IntoIterator<Item = Pod>) -> Vec<watcher::Event<Pod>> {
    let mut events = vec![watcher::Event::Init];
    events.extend(pods.into_iter().map(watcher::Event::InitApply));
    events.push(watcher::Event::InitDone);
    events
}

#[tokio::test]
async fn the_index_follows_applies_deletes_and_relists_and_tells_each_listener_its_kind() {
    let (store, writer) = cache_of::<Pod>("Pod", Storage::for_kind("Pod"));
    let informer = Arc::new(Informer::new(Kind::typed(), store.clone(), 2));
    let refs = new_index();
    let (mut config_maps, mut secrets) = (refs.changes(RefKind::ConfigMap), refs.changes(RefKind::Secret));
    let (ready_tx, ready) = watch::channel(false);
    let feeding = tokio::spawn(refs.clone().feed(store, informer.subscribe(), ready_tx));
    let (watch_tx, watch_rx) = mpsc::unbounded_channel();
    let running = tokio::spawn(informer.run(UnboundedReceiverStream::new(watch_rx), writer, Side::Virtual));
    let send =
        |events: Vec<watcher::Event<Pod>>| events.into_iter().for_each(|e| watch_tx.send(Ok(e)).unwrap());
    let cfg = |name| refs.referencing_pods(RefKind::ConfigMap, &team(name));

    send(list([pod("a", "cfg", "sec")]));
    settle().await;
    assert!(*ready.borrow(), "ready at the first list");
    assert_eq!(cfg("cfg"), [team("a")]);
    assert!(refs.is_referenced(RefKind::Secret, &team("sec")));
    assert_eq!(
        (told(&mut config_maps), told(&mut secrets)),
        (vec!["team/cfg".into()], vec!["team/sec".into()])
    );

    // b references cfg too: cfg's set changed; sec's did not.
    send(vec![watcher::Event::Apply(pod("b", "cfg", "other"))]);
    settle().await;
    assert_eq!(cfg("cfg"), [team("a"), team("b")]);
    assert_eq!(told(&mut config_maps), ["team/cfg"]);
    assert_eq!(told(&mut secrets), ["team/other"]);

    // a is deleted: sec loses its only pod.
    send(vec![watcher::Event::Delete(pod("a", "cfg", "sec"))]);
    settle().await;
    assert!(!refs.is_referenced(RefKind::Secret, &team("sec")));
    assert_eq!(cfg("cfg"), [team("b")]);
    assert_eq!(
        (told(&mut config_maps), told(&mut secrets)),
        (vec!["team/cfg".into()], vec!["team/sec".into()])
    );

    // b went during a watch gap: the re-list drops its references, without a delete event.
    send(list([]));
    settle().await;
    assert!(cfg("cfg").is_empty());
    assert!(!refs.is_referenced(RefKind::Secret, &team("other")));
    assert_eq!(
        (told(&mut config_maps), told(&mut secrets)),
        (vec!["team/cfg".into()], vec!["team/other".into()])
    );

    // A listener that went away is dropped; the others still hear.
    drop(secrets);
    send(vec![watcher::Event::Apply(pod("c", "cfg2", "sec2"))]);
    settle().await;
    assert_eq!(told(&mut config_maps), ["team/cfg2"]);
    assert_eq!(refs.listeners.lock().unwrap().len(), 1);

    drop(watch_tx);
    running.await.unwrap();
    feeding.await.unwrap();
}

#[tokio::test]
async fn a_relist_keeps_the_references_of_a_pod_that_does_not_decode() {
    let (store, mut writer) = cache_of::<Pod>("Pod", Storage::Encoded);
    let refs = new_index();
    let mut config_maps = refs.changes(RefKind::ConfigMap);
    let (events_tx, events) = Subscription::channel(4);
    let (ready_tx, _ready) = watch::channel(false);
    let feeding = tokio::spawn(refs.clone().feed(store.clone(), events, ready_tx));
    let listed = pod("a", "cfg", "sec");
    for event in list([listed.clone()]) {
        writer.apply_watcher_event(&event);
    }
    events_tx.send(InformerEvent::Relisted).await.unwrap();
    settle().await;
    assert_eq!(told(&mut config_maps), ["team/cfg"]);

    store.corrupt(&ObjectRef::new("a").within("team"));
    events_tx.send(InformerEvent::Relisted).await.unwrap();
    settle().await;
    assert_eq!(
        refs.referencing_pods(RefKind::ConfigMap, &team("cfg")),
        [team("a")],
        "dropping them would let the host copies go"
    );
    assert!(told(&mut config_maps).is_empty());
    drop(events_tx);
    feeding.await.unwrap();
}

#[tokio::test]
async fn a_collision_is_noted_once_told_to_listeners_and_cleared() {
    let collisions = Collisions::default();
    let mut noted = collisions.noted();
    assert!(collisions.is_empty());
    collisions.note("Secret", &team("s"));
    collisions.note("Secret", &team("s"));
    assert!(collisions.contains("Secret", &team("s")));
    assert!(!collisions.contains("ConfigMap", &team("s")), "by kind");
    assert_eq!(noted.try_recv().unwrap(), ("Secret".to_string(), team("s")));
    assert!(noted.try_recv().is_err(), "told once");
    collisions.clear("Secret", &team("s"));
    assert!(collisions.is_empty() && !collisions.contains("Secret", &team("s")));
}
