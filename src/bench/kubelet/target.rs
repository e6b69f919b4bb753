//! One end of the kubelet scenario's comparison, and retrying a request on it.

use std::{
    path::PathBuf,
    time::{Duration, Instant},
};

use kube::Client;

/// The container of the bench's pods.
pub(super) const CONTAINER: &str = "app";

/// One end of the comparison: a cluster's client and kubeconfig, and the pod there.
pub(super) struct Target {
    pub(super) label: &'static str,
    pub(super) client: Client,
    pub(super) kubeconfig: PathBuf,
    pub(super) namespace: String,
    pub(super) pod: String,
}

/// Retries `request` on `target` until it succeeds (at most `timeout`).
pub(super) async fn until_ok<'a, T, F>(
    target: &'a Target,
    timeout: Duration,
    what: &str,
    request: impl Fn(&'a Target) -> F,
) -> anyhow::Result<T>
where
    F: Future<Output = anyhow::Result<T>>,
{
    let start = Instant::now();
    loop {
        match request(target).await {
            Ok(value) => return Ok(value),
            Err(err) if start.elapsed() > timeout => {
                return Err(err.context(format!("{what} {} within {timeout:?}", target.label)));
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}
