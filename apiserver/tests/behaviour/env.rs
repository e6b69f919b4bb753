//! The environment a behaviour test runs in: the embedded server by default, or a real API server
//! when `VCSYNC_TEST_KUBECONFIG` names a kubeconfig. Every test gets a fresh namespace, so the same
//! test code is valid against both; server-internal checks (counters, compaction) use
//! [`Env::server`], which is `None` against a real cluster.

use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Api, DeleteParams, PostParams};
use kube::{Client, Resource};
use serde_json::json;
use vcsync_apiserver::{ApiServer, ServerConfig};

pub type TestResult = Result<(), Box<dyn std::error::Error + Send + Sync>>;

pub struct Env {
    pub client: Client,
    /// A namespace created for this test.
    pub ns: String,
    server: Option<ApiServer>,
}

impl Env {
    /// Starts (or connects to) a server and creates the test namespace `vt-{name}-{suffix}`.
    pub async fn new(name: &str) -> Env {
        Self::with_config(name, ServerConfig::default()).await
    }

    pub async fn with_config(name: &str, config: ServerConfig) -> Env {
        let (client, server) = match std::env::var("VCSYNC_TEST_KUBECONFIG") {
            Ok(path) if !path.is_empty() => {
                let kubeconfig =
                    kube::config::Kubeconfig::read_from(&path).expect("read VCSYNC_TEST_KUBECONFIG");
                let options = kube::config::KubeConfigOptions::default();
                let config = kube::Config::from_custom_kubeconfig(kubeconfig, &options)
                    .await
                    .expect("kubeconfig");
                (Client::try_from(config).expect("client"), None)
            }
            _ => {
                let server = ApiServer::start(config)
                    .await
                    .expect("start the embedded API server");
                let url = server.url().parse().expect("url");
                (
                    Client::try_from(kube::Config::new(url)).expect("client"),
                    Some(server),
                )
            }
        };
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos();
        let ns = format!("vt-{name}-{:05}", nanos % 100_000);
        let namespaces: Api<Namespace> = Api::all(client.clone());
        let namespace: Namespace = serde_json::from_value(json!({"metadata": {"name": ns}})).unwrap();
        namespaces
            .create(&PostParams::default(), &namespace)
            .await
            .expect("create the test namespace");
        Env { client, ns, server }
    }

    /// The embedded server, or `None` when testing a real cluster.
    pub fn server(&self) -> Option<&ApiServer> {
        self.server.as_ref()
    }

    /// A namespaced API in the test namespace.
    pub fn api<K>(&self) -> Api<K>
    where
        K: Resource<Scope = k8s_openapi::NamespaceResourceScope>,
        <K as Resource>::DynamicType: Default,
    {
        Api::namespaced(self.client.clone(), &self.ns)
    }

    /// Deletes the test namespace and stops the embedded server.
    pub async fn finish(self) {
        let namespaces: Api<Namespace> = Api::all(self.client.clone());
        let _ = namespaces.delete(&self.ns, &DeleteParams::default()).await;
        if let Some(server) = self.server {
            server.shutdown().await;
        }
    }
}

/// Builds a typed object from JSON.
pub fn object<K: serde::de::DeserializeOwned>(value: serde_json::Value) -> K {
    serde_json::from_value(value).expect("valid object JSON")
}

/// The HTTP status code of a kube API error.
pub fn status_code(error: &kube::Error) -> u16 {
    match error {
        kube::Error::Api(status) => status.code,
        other => panic!("expected an API error, got {other:?}"),
    }
}

/// The reason of a kube API error.
pub fn reason(error: &kube::Error) -> String {
    match error {
        kube::Error::Api(status) => status.reason.clone(),
        other => panic!("expected an API error, got {other:?}"),
    }
}

/// Polls `check` every 10ms until it returns `Some`, for at most `limit`.
pub async fn eventually<T, F, Fut>(limit: std::time::Duration, mut check: F) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    tokio::time::timeout(limit, async {
        loop {
            if let Some(value) = check().await {
                return value;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    })
    .await
    .ok()
}
