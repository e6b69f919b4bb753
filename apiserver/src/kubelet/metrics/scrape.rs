//! Scraping kubelets as metrics-server does: `GET /stats/summary` on each node's kubelet (its
//! address and port chosen as for the pod proxy), over TLS with the server's kubelet client
//! certificate and without checking the kubelet's serving certificate, all nodes at once, each
//! within a short timeout. A node that fails, or has no kubelet, is left out (logged at debug).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use http::{Request, StatusCode, header};
use serde_json::Value;

use super::usage::Summary;
use crate::kubelet::{identity::KubeletClientIdentity, location::node_connection, proxy::connect};

/// How long one node's scrape may take, connection included.
const TIMEOUT: Duration = Duration::from_secs(5);
/// The largest summary read.
const MAX_SUMMARY: usize = 64 * 1024 * 1024;
/// The path scraped (metrics-server asked for CPU and memory only).
const SUMMARY_PATH: &str = "/stats/summary?only_cpu_and_memory=true";

/// The summaries of `nodes` (stored Node objects) that answered, by node name.
pub(crate) async fn summaries(
    identity: &Arc<KubeletClientIdentity>,
    nodes: &[Arc<Value>],
) -> HashMap<String, Summary> {
    let scrapes = nodes.iter().map(|node| async move {
        let name = node["metadata"]["name"].as_str().unwrap_or_default().to_string();
        match tokio::time::timeout(TIMEOUT, summary(identity, node)).await {
            Ok(Ok(summary)) => Some((name, summary)),
            Ok(Err(error)) => {
                tracing::debug!(node = %name, %error, "metrics: kubelet not scraped");
                None
            }
            Err(_) => {
                tracing::debug!(node = %name, "metrics: kubelet scrape timed out");
                None
            }
        }
    });
    futures::future::join_all(scrapes)
        .await
        .into_iter()
        .flatten()
        .collect()
}

/// One node's summary.
async fn summary(identity: &KubeletClientIdentity, node: &Value) -> Result<Summary, String> {
    let (host, port) = node_connection(node).map_err(|err| err.message)?;
    let mut sender = connect(identity, &host, port).await.map_err(|err| err.message)?;
    let authority = if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    };
    let request = Request::get(SUMMARY_PATH)
        .header(header::HOST, authority)
        .header(header::ACCEPT, "application/json")
        .body(Body::empty())
        .map_err(|err| err.to_string())?;
    let response = sender
        .send_request(request)
        .await
        .map_err(|err| err.to_string())?;
    let status = response.status();
    let body = axum::body::to_bytes(Body::new(response.into_body()), MAX_SUMMARY)
        .await
        .map_err(|err| err.to_string())?;
    if status != StatusCode::OK {
        let text = String::from_utf8_lossy(&body);
        return Err(format!("{status}: {}", text.trim_end()));
    }
    serde_json::from_slice(&body).map_err(|err| format!("decoding the summary: {err}"))
}
