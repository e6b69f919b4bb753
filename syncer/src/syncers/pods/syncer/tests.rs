//! Tests of the [`PodSyncer`](super::PodSyncer) against API servers that count or script
//! what they are sent.

use std::sync::{Arc, Mutex, atomic::Ordering};

use k8s_openapi::api::core::v1::Pod;
use kube::runtime::reflector::ObjectRef;
use vcsync_translators::VirtualKey;

use super::*;
use crate::{
    Error,
    cache::{Storage, filled},
    config::Config,
    controller::KeyHandler,
    handlers::PairHandler,
    metrics::{CACHE_DECODE_ERRORS, KindLabels},
    syncers::pods::translate::PodEnvironment,
};

/// A pod syncer whose clusters are both `client`, a virtual pod `team/web` and its host twin.
fn syncer_and_web_pod(client: kube::Client) -> (RegisterContext, PodSyncer, Pod, Pod) {
    let register = RegisterContext::new(client.clone(), client, Config::new("demo", "vc-demo")).unwrap();
    let syncer = PodSyncer::new(register.clients(), register.caches(), register.registrar());
    let virt: Pod = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "web", "namespace": "team", "uid": "0f2d4c1e-1111-4a2b-9c3d-5e6f7a8b9c0d"},
        "spec": {"containers": [{"name": "app", "image": "nginx"}]}
    }))
    .unwrap();
    let host = syncer.pods.host_pod(&virt, &PodEnvironment::default());
    (register, syncer, virt, host)
}

/// A cached virtual pod that does not decode once read as absent, and the reconcile went
/// on to `sync_up`, which deleted its host pod. Now the reconcile fails (to be retried
/// with backoff), sends nothing to either API server and the failure is counted.
#[tokio::test]
async fn a_virtual_pod_that_does_not_decode_fails_the_reconcile_and_deletes_nothing() {
    let (client, connections) = crate::testing::silent_api_server().await;
    let (register, syncer, virt, host) = syncer_and_web_pod(client);
    let virtual_store = filled(Storage::Encoded, [virt]);
    virtual_store.corrupt(&ObjectRef::new("web").within("team"));
    let host_store = filled(Storage::Encoded, [host]);
    let handler = PairHandler {
        syncer,
        ctx: SyncContext::new(&register, virtual_store, host_store, "pods"),
    };
    let decode_errors = || {
        CACHE_DECODE_ERRORS
            .get_or_create(&KindLabels { kind: "Pod".into() })
            .get()
    };
    let before = decode_errors();

    let key = VirtualKey::namespaced("team", "web");
    assert!(handler.exists(&key), "the key stays live");
    // A request would hang on the listener, which never answers.
    let reconcile = tokio::time::timeout(std::time::Duration::from_secs(5), handler.handle(&key));
    let err = reconcile.await.expect("no request made").unwrap_err();
    assert!(matches!(err, Error::CacheDecode { .. }), "{err}");
    assert!(!err.is_conflict(), "retried with backoff");
    assert_eq!(decode_errors() - before, 1);
    tokio::task::yield_now().await;
    assert_eq!(
        connections.load(Ordering::SeqCst),
        0,
        "no request went out, so nothing was deleted"
    );
}

/// An API server that answers every request with `status` and `body`, and the request
/// lines it got (plain threads: the crate's tokio has no io-util).
fn answering(status: &'static str, body: &'static str) -> (kube::Client, Arc<Mutex<Vec<String>>>) {
    use std::io::{BufRead, BufReader, Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let requests = Arc::new(Mutex::new(Vec::new()));
    let seen = requests.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let (seen, mut stream) = (seen.clone(), BufReader::new(stream.unwrap()));
            std::thread::spawn(move || {
                loop {
                    let (mut line, mut length) = (String::new(), 0);
                    if stream.read_line(&mut line).unwrap_or(0) == 0 {
                        return;
                    }
                    seen.lock().unwrap().push(line.trim_end().to_string());
                    loop {
                        let mut header = String::new();
                        stream.read_line(&mut header).unwrap();
                        if let Some(n) = header.to_ascii_lowercase().strip_prefix("content-length:") {
                            length = n.trim().parse().unwrap();
                        }
                        if header == "\r\n" {
                            break;
                        }
                    }
                    stream.read_exact(&mut vec![0; length]).unwrap();
                    let response = format!(
                        "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
                        body.len()
                    );
                    stream.get_mut().write_all(response.as_bytes()).unwrap();
                }
            });
        }
    });
    let client = kube::Client::try_from(kube::Config::new(url.parse().unwrap())).unwrap();
    (client, requests)
}

/// `sync_up` of a host pod whose virtual pod the cache does not show, the virtual API
/// server answering the live GET with `status`; the request lines both servers got.
async fn sync_up_with_live(status: &'static str, body: &'static str) -> (Action, Vec<String>) {
    let (client, requests) = answering(status, body);
    let (register, syncer, _, host) = syncer_and_web_pod(client);
    let ctx = SyncContext::new(
        &register,
        filled(Storage::Encoded, []),
        filled(Storage::Encoded, [host.clone()]),
        "pods",
    );
    let action = tokio::time::timeout(
        std::time::Duration::from_secs(10),
        syncer.sync_up(&ctx, Arc::new(host)),
    )
    .await
    .expect("answered")
    .unwrap_or_else(|err| panic!("{err}"));
    let requests = requests.lock().unwrap().clone();
    (action, requests)
}

/// The virtual cache says the pod is gone, the virtual API server says it is there (the
/// cache is behind): the host pod stays, and the reconcile comes back soon.
#[tokio::test]
async fn sync_up_keeps_the_host_pod_while_the_virtual_pod_is_live() {
    let live = r#"{"apiVersion": "meta.k8s.io/v1", "kind": "PartialObjectMetadata", "metadata": {"name": "web", "namespace": "team"}}"#;
    let (action, requests) = sync_up_with_live("200 OK", live).await;
    assert_eq!(requests, ["GET /api/v1/namespaces/team/pods/web HTTP/1.1"]);
    assert_eq!(action, Action::requeue(crate::controller::CACHE_LAG_RETRY));
}

/// The live GET confirms the absence: then the host pod is deleted.
#[tokio::test]
async fn sync_up_deletes_the_host_pod_once_the_virtual_pod_is_confirmed_gone() {
    let gone =
        r#"{"apiVersion": "v1", "kind": "Status", "status": "Failure", "reason": "NotFound", "code": 404}"#;
    let (_, requests) = sync_up_with_live("404 Not Found", gone).await;
    assert_eq!(requests[0], "GET /api/v1/namespaces/team/pods/web HTTP/1.1");
    assert!(
        requests[1].starts_with("DELETE /api/v1/namespaces/vc-demo/pods/web-x-team"),
        "{requests:?}"
    );
}
