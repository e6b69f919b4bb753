//! Test support for the syncer's and plugins' unit tests (compiled for the crate's tests and
//! with the `test-util` feature, never into the product).

use std::sync::{
    Arc,
    atomic::{AtomicUsize, Ordering},
};

/// A client of an API server that accepts connections and never answers, and how many
/// connections it got: code under test that must send nothing (a reconcile that fails on a
/// cached object that does not decode, say) leaves the count at 0.
pub async fn silent_api_server() -> (kube::Client, Arc<AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let connections = Arc::new(AtomicUsize::new(0));
    tokio::spawn({
        let connections = connections.clone();
        async move {
            while let Ok(_stream) = listener.accept().await {
                connections.fetch_add(1, Ordering::SeqCst);
            }
        }
    });
    let client = kube::Client::try_from(kube::Config::new(url.parse().unwrap())).unwrap();
    (client, connections)
}
