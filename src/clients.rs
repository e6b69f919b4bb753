//! Kubernetes clients from the configuration, and waiting for an API server to answer.

use std::{sync::Arc, time::Duration};

use anyhow::Context;
use http::{Request, Response};
use hyper_timeout::TimeoutConnector;
use hyper_util::{client::legacy::connect::HttpConnector, rt::TokioExecutor};
use kube::{
    Client,
    client::{Body, ClientBuilder, ConfigExt, DynBody},
    config::{KubeConfigOptions, Kubeconfig},
};
use tower::{
    BoxError, ServiceBuilder, ServiceExt,
    util::{BoxService, option_layer},
};
use tower_http::trace::TraceLayer;
use vcsync_syncer::{Side, config::ClusterConfig, metrics::Metrics};

use crate::{ops::CountingLayer, pushback::PushbackLayer, rate_limit::TokenBucketLayer};

/// A client for one side: the configured kubeconfig, or in-cluster / the usual inference.
/// Its requests (each attempt) are counted into `metrics`; with `qps` set, a token bucket paces
/// them (by default none: the API server's Priority and Fairness is the brake, and its 429s make
/// the client hold back, src/pushback.rs).
pub async fn client_for(
    side: Side,
    cluster: &ClusterConfig,
    metrics: &Arc<Metrics>,
) -> anyhow::Result<Client> {
    let config = kube_config_for(side, cluster).await?;
    let url = config.cluster_url.clone();
    let client = client_builder(config, Some(CountingLayer::new(side, metrics.clone())))
        .with_context(|| format!("building the {side} client for {url}"))?
        .with_layer(&option_layer(TokenBucketLayer::for_config(
            cluster.qps,
            cluster.burst,
        )))
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
    Ok(
        client_builder(config, Some(CountingLayer::new(side, metrics.clone())))
            .with_context(|| format!("building the {side} stream client for {url}"))?
            .build(),
    )
}

/// The service stack of kube's clients, as kube's `ClientBuilder::try_from(config)` builds it.
type KubeService = BoxService<Request<Body>, Response<Box<DynBody>>, BoxError>;

/// kube's client stack for `config`, as `ClientBuilder::try_from(config)` builds it (rustls,
/// the config's timeouts, auth and extra headers, an HTTP trace span), but on TCP connections
/// with `TCP_NODELAY` on, with vcsync's handling of a server's pushback (src/pushback.rs) in
/// place of kube's retry policy (which retries 429, 503 and 504 per request, up to 15 times,
/// with no shared hold: both at once would retry each other's retries), and `counting` inside
/// it, so that each attempt is counted. kube's builder takes hyper-util's `HttpConnector`
/// as it comes, Nagle on; a stream spliced onto such a connection (an exec whose caller writes
/// several small frames) has each small write after the first wait for the API server's
/// delayed ACK, ~40 ms (found with `vcsync bench kubelet --kube-assets`). Single-write requests
/// do not notice either way. kube offers no setting for it: only the connector differs here.
///
/// With a proxy configured, kube's own builder (this build has none of kube's proxy features:
/// it says so).
pub(crate) fn client_builder(
    config: kube::Config,
    counting: Option<CountingLayer>,
) -> kube::Result<ClientBuilder<KubeService>> {
    if config.proxy_url.is_some() {
        return ClientBuilder::try_from(config);
    }
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_nodelay(true);
    let mut connector = TimeoutConnector::new(config.rustls_https_connector_with_connector(http)?);
    connector.set_connect_timeout(config.connect_timeout);
    connector.set_read_timeout(config.read_timeout);
    connector.set_write_timeout(config.write_timeout);
    connector.set_reset_reader_on_write(config.reset_reader_on_write);
    let client = hyper_util::client::legacy::Builder::new(TokioExecutor::new()).build(connector);
    let service = ServiceBuilder::new()
        .layer(config.base_uri_layer())
        .option_layer(
            config
                .default_retry
                .then(|| PushbackLayer::new(config.cluster_url.to_string())),
        )
        .option_layer(counting)
        .option_layer(config.auth_layer()?)
        .layer(config.extra_headers_layer()?)
        .layer(TraceLayer::new_for_http())
        .map_err(BoxError::from)
        .service(client)
        .map_response(|response| {
            response
                .map(|body| Box::new(http_body_util::BodyExt::map_err(body, BoxError::from)) as Box<DynBody>)
        })
        .boxed();
    Ok(ClientBuilder::new(service, config.default_namespace))
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

#[cfg(test)]
mod tests {
    use tokio::{
        io::{AsyncReadExt, AsyncWriteExt},
        net::TcpListener,
    };

    use super::*;

    /// The stack built here in place of kube's own sends what kube's would: the request on the
    /// configured server's path, its token, its impersonation headers.
    #[tokio::test]
    async fn clients_send_the_configs_base_path_auth_and_headers() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let mut config = kube::Config::new(format!("http://{address}/prefix").parse().unwrap());
        config.auth_info.token = Some("secret-token".to_string().into());
        config.auth_info.impersonate = Some("alice".into());
        config.default_namespace = "tenant".into();
        let client = client_builder(config, None).unwrap().build();
        assert_eq!(client.default_namespace(), "tenant");
        let server = tokio::spawn(async move {
            let (mut stream, _) = listener.accept().await.unwrap();
            let mut head = Vec::new();
            while !head.ends_with(b"\r\n\r\n") {
                let mut byte = [0u8];
                stream.read_exact(&mut byte).await.unwrap();
                head.push(byte[0]);
            }
            stream
                .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
                .await
                .unwrap();
            String::from_utf8(head).unwrap().to_lowercase()
        });
        let request = Request::get("/version").body(Vec::new()).unwrap();
        assert_eq!(client.request_text(request).await.unwrap(), "ok");
        let head = server.await.unwrap();
        assert!(head.starts_with("get /prefix/version http/1.1\r\n"), "{head}");
        assert!(
            head.contains("\r\nauthorization: bearer secret-token\r\n"),
            "{head}"
        );
        assert!(head.contains("\r\nimpersonate-user: alice\r\n"), "{head}");
    }

    /// An embedded API server and a cluster config for it (the default client settings).
    async fn server_and_config(dir: &std::path::Path) -> (vcsync_apiserver::ApiServer, ClusterConfig) {
        use vcsync_apiserver::{ApiServer, ServerConfig};
        let server = ApiServer::start(ServerConfig::default()).await.unwrap();
        let kubeconfig = dir.join("kubeconfig");
        std::fs::write(&kubeconfig, server.kubeconfig()).unwrap();
        let cluster = ClusterConfig {
            kubeconfig: Some(kubeconfig),
            ..ClusterConfig::default()
        };
        (server, cluster)
    }

    /// The default client retries a 429 after its Retry-After, and counts both attempts.
    #[tokio::test]
    async fn the_default_client_retries_a_429_and_counts_each_attempt() {
        use k8s_openapi::api::core::v1::ConfigMap;
        use vcsync_apiserver::{Fault, Verb};
        let dir = tempfile::tempdir().unwrap();
        let (server, cluster) = server_and_config(dir.path()).await;
        let metrics = Arc::new(Metrics::new());
        let client = client_for(Side::Host, &cluster, &metrics).await.unwrap();
        let throttle = server
            .faults()
            .add(Fault::on(Verb::Get, "configmaps").times(1).too_many_requests(1));
        let api: kube::Api<ConfigMap> = kube::Api::namespaced(client, "default");
        assert!(api.get_opt("missing").await.unwrap().is_none());
        assert_eq!(throttle.fired(), 1);
        let text = metrics.encode();
        for code in ["429", "404"] {
            assert!(
                text.lines()
                    .any(|line| line.starts_with("vcsync_api_requests_total{")
                        && line.contains("verb=\"get\"")
                        && line.contains("resource=\"configmaps\"")
                        && line.contains(&format!("code=\"{code}\""))
                        && line.ends_with(" 1")),
                "no {code} counted:\n{text}"
            );
        }
        server.shutdown().await;
    }

    /// An explicit `qps` still paces a client (the default, `qps: 0`, has no bucket:
    /// `rate_limit::tests`).
    #[tokio::test]
    async fn an_explicit_qps_paces_the_client() {
        let dir = tempfile::tempdir().unwrap();
        let (server, mut cluster) = server_and_config(dir.path()).await;
        (cluster.qps, cluster.burst) = (5, 1);
        let metrics = Arc::new(Metrics::new());
        let client = client_for(Side::Host, &cluster, &metrics).await.unwrap();
        // The bucket's one token went to the reachability check: 5 more at 5 per second.
        let start = std::time::Instant::now();
        for _ in 0..5 {
            client.apiserver_version().await.unwrap();
        }
        let elapsed = start.elapsed();
        assert!(elapsed >= Duration::from_millis(900), "{elapsed:?}");
        server.shutdown().await;
    }
}
