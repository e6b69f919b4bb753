//! Helpers every driver may use, naming no driver: drivers do not import each other.

use std::collections::BTreeMap;

use anyhow::Context;
use k8s_openapi::api::core::v1::{ConfigMap, PersistentVolumeClaim, Pod, Secret, Service};
use kube::{Api, Client, api::ListParams};

use super::Result;

/// Replaces the server URL of every cluster of a kubeconfig; with `tls_server_name`, the
/// server's certificate is checked against that name instead of the URL's host (an address the
/// certificate does not hold: a load balancer's, a node's, a local port-forward's).
pub fn replace_server(kubeconfig: &str, url: &str, tls_server_name: Option<&str>) -> Result<String> {
    let mut value: serde_yaml_ng::Value =
        serde_yaml_ng::from_str(kubeconfig).context("parsing the kubeconfig")?;
    if let Some(clusters) = value.get_mut("clusters").and_then(|c| c.as_sequence_mut()) {
        for cluster in clusters {
            if let Some(c) = cluster.get_mut("cluster").and_then(|c| c.as_mapping_mut()) {
                c.insert("server".into(), url.into());
                if let Some(name) = tls_server_name {
                    c.insert("tls-server-name".into(), name.into());
                }
            }
        }
    }
    Ok(serde_yaml_ng::to_string(&value).context("kubeconfig")?)
}

/// Counts of host objects carrying the ownership label of `instance`, by kind.
pub async fn synced_counts(host: &Client, instance: &str) -> BTreeMap<String, u32> {
    let params =
        ListParams::default().labels(&format!("{}={instance}", vcsync_translators::MANAGED_BY_LABEL));
    let mut counts = BTreeMap::new();
    macro_rules! count {
        ($($kind:ty => $name:literal),*) => {$(
            if let Ok(list) = Api::<$kind>::all(host.clone()).list_metadata(&params).await {
                counts.insert($name.to_string(), list.items.len() as u32);
            }
        )*};
    }
    count!(Pod => "pods", ConfigMap => "configMaps", Secret => "secrets", Service => "services",
        PersistentVolumeClaim => "persistentVolumeClaims");
    counts
}
