//! Kubernetes clients from the configuration, and waiting for an API server to answer.

use std::{sync::Arc, time::Duration};

use anyhow::Context;
use kube::{
    Client,
    config::{KubeConfigOptions, Kubeconfig},
};
use vcsync_syncer::{Side, config::ClusterConfig, metrics::Metrics};

use crate::{ops::CountingLayer, rate_limit::TokenBucketLayer};

/// A client for one side: the configured kubeconfig, or in-cluster / the usual inference.
/// Its requests are counted into `metrics`.
pub async fn client_for(
    side: Side,
    cluster: &ClusterConfig,
    metrics: &Arc<Metrics>,
) -> anyhow::Result<Client> {
    let config = kube_config_for(side, cluster).await?;
    let url = config.cluster_url.clone();
    let client = kube::client::ClientBuilder::try_from(config)
        .with_context(|| format!("building the {side} client for {url}"))?
        .with_layer(&CountingLayer::new(side, metrics.clone()))
        .with_layer(&TokenBucketLayer::new(cluster.qps, cluster.burst))
        .build();
    wait_until_reachable(side, &url.to_string(), &client).await;
    Ok(client)
}

/// A client for one side's long streams (followed logs, exec, port-forward): no read timeout,
/// and no share of the syncer's request budget. Requests are counted into `metrics`.
pub async fn stream_client_for(
    side: Side,
    cluster: &ClusterConfig,
    metrics: &Arc<Metrics>,
) -> anyhow::Result<Client> {
    let mut config = kube_config_for(side, cluster).await?;
    config.read_timeout = None;
    let url = config.cluster_url.clone();
    Ok(kube::client::ClientBuilder::try_from(config)
        .with_context(|| format!("building the {side} stream client for {url}"))?
        .with_layer(&CountingLayer::new(side, metrics.clone()))
        .build())
}

/// The connection settings of one side: the configured kubeconfig, or in-cluster / the usual
/// inference.
async fn kube_config_for(side: Side, cluster: &ClusterConfig) -> anyhow::Result<kube::Config> {
    Ok(match &cluster.kubeconfig {
        Some(path) => {
            let kubeconfig = Kubeconfig::read_from(path)
                .with_context(|| format!("reading the {side} kubeconfig {}", path.display()))?;
            let options = KubeConfigOptions {
                context: cluster.context.clone(),
                ..KubeConfigOptions::default()
            };
            kube::Config::from_custom_kubeconfig(kubeconfig, &options)
                .await
                .with_context(|| format!("loading the {side} kubeconfig {}", path.display()))?
        }
        None => kube::Config::infer().await.with_context(|| {
            format!("no kubeconfig configured for the {side} cluster and none could be inferred")
        })?,
    })
}

/// Retries until the API server answers, saying clearly in the log what it waits for;
/// an API server that starts after the sidecar is normal in a pod.
async fn wait_until_reachable(side: Side, url: &str, client: &Client) {
    let mut delay = Duration::from_millis(200);
    loop {
        match client.apiserver_version().await {
            Ok(version) => {
                tracing::info!(%side, url, version = %version.git_version, "API server reachable");
                return;
            }
            Err(err) => {
                tracing::warn!(%side, url, error = %err, retry_in = ?delay, "API server not reachable yet");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(10));
            }
        }
    }
}
