//! Minimal end-to-end check that kube-rs can talk to the server (CRUD + list).

use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, ListParams, PostParams};
use vcsync_apiserver::{ApiServer, ServerConfig};

#[tokio::test]
async fn kube_client_creates_and_lists() -> Result<(), Box<dyn std::error::Error>> {
    let server = ApiServer::start(ServerConfig::default()).await?;
    let client = kube::Client::try_from(kube::Config::new(server.url().parse()?))?;
    let api: Api<ConfigMap> = Api::namespaced(client, "default");
    let mut cm = ConfigMap::default();
    cm.metadata.name = Some("smoke".into());
    let created = api.create(&PostParams::default(), &cm).await?;
    assert!(created.metadata.uid.is_some());
    let list = api.list(&ListParams::default()).await?;
    assert_eq!(list.items.len(), 1);
    server.shutdown().await;
    Ok(())
}
