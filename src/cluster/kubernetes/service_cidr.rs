//! The host's service CIDR and a Service's cluster IP, as the control plane's init containers
//! and `cluster create` find them.

use k8s_openapi::api::{
    core::v1::{Service, ServicePort, ServiceSpec},
    networking::v1::ServiceCIDR,
};
use kube::{
    Api, Client,
    api::{ListParams, ObjectMeta, PostParams},
};

use crate::cluster::{DriverOptions, Result};

use super::host::*;

/// The first CIDR a kube-apiserver names as the valid range when it refuses a Service's cluster
/// IP: "... the provided IP (1.1.1.1) is not in the valid range. The range of valid IPs is
/// 10.96.0.0/12" (with several ServiceCIDRs, 1.31+, the ranges follow separated by spaces).
pub fn parse_service_cidr_error(message: &str) -> Option<String> {
    const MARKER: &str = "range of valid ips is";
    let start = message.to_ascii_lowercase().find(MARKER)? + MARKER.len();
    message[start..]
        .split(|c: char| c.is_whitespace() || c == ',')
        .map(|token| token.trim_matches(|c: char| !(c.is_ascii_hexdigit() || c == ':')))
        .find_map(parse_cidr)
}

/// `token` as a CIDR (`address/prefix`, IPv4 or IPv6), normalized to the text it was.
pub(super) fn parse_cidr(token: &str) -> Option<String> {
    let (address, prefix) = token.split_once('/')?;
    let address: std::net::IpAddr = address.parse().ok()?;
    let prefix: u8 = prefix.parse().ok()?;
    let max = if address.is_ipv4() { 32 } else { 128 };
    (prefix <= max).then(|| format!("{address}/{prefix}"))
}

/// Cluster IPs no host service range is expected to hold, tried in turn.
pub(super) const PROBE_IPS: [&str; 2] = ["1.1.1.1", "203.0.113.1"];

/// The host cluster's service CIDR: the `kubernetes` ServiceCIDR (networking.k8s.io/v1, 1.33+)
/// when it can be listed, else the range the API server names when refusing, in a dry run, a
/// Service in `namespace` with a cluster IP out of it (nothing is created either way).
pub async fn detect_service_cidr(client: &Client, namespace: &str) -> Result<String> {
    if let Ok(list) = Api::<ServiceCIDR>::all(client.clone())
        .list(&ListParams::default())
        .await
    {
        let mut items = list.items;
        // The default one first.
        items.sort_by_key(|c| c.metadata.name.as_deref() != Some("kubernetes"));
        if let Some(cidr) = items
            .into_iter()
            .filter_map(|c| c.spec?.cidrs?.into_iter().next())
            .find_map(|c| parse_cidr(&c))
        {
            return Ok(cidr);
        }
    }
    let services = Api::<Service>::namespaced(client.clone(), namespace);
    let params = PostParams {
        dry_run: true,
        ..Default::default()
    };
    let mut answers = Vec::new();
    for ip in PROBE_IPS {
        let probe = Service {
            metadata: ObjectMeta {
                generate_name: Some("vcsync-service-cidr-probe-".into()),
                ..Default::default()
            },
            spec: Some(ServiceSpec {
                cluster_ip: Some(ip.into()),
                ports: Some(vec![ServicePort {
                    port: 443,
                    ..Default::default()
                }]),
                ..Default::default()
            }),
            ..Default::default()
        };
        match services.create(&params, &probe).await {
            // In range: the dry run was accepted; try the next address.
            Ok(_) => answers.push(format!("{ip}: accepted")),
            Err(kube::Error::Api(status)) => match parse_service_cidr_error(&status.message) {
                Some(cidr) => return Ok(cidr),
                None => answers.push(format!("{ip}: {} {}", status.code, status.message)),
            },
            Err(err) => {
                return Err(anyhow::Error::from(err)
                    .context(format!(
                        "creating a probe Service in namespace {namespace} (dry run)"
                    ))
                    .into());
            }
        }
    }
    Err(anyhow::anyhow!(
        "cannot detect the host's service CIDR (no ServiceCIDR could be listed, and the API server's \
         answers to out-of-range cluster IPs name no range: {}); set controlPlane.serviceCidr",
        answers.join("; ")
    )
    .into())
}

/// The cluster IP of Service `name` in `namespace`, waiting (polling every 2 s) until the
/// Service exists and has one, at most `timeout`. A headless Service is an error at once.
pub async fn wait_for_service_ip(
    client: &Client,
    namespace: &str,
    name: &str,
    timeout: std::time::Duration,
) -> Result<String> {
    let services = Api::<Service>::namespaced(client.clone(), namespace);
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let last = match services.get_opt(name).await {
            Ok(Some(service)) => {
                let ip = service.spec.and_then(|s| s.cluster_ip).unwrap_or_default();
                if ip == "None" {
                    return Err(anyhow::anyhow!(
                        "Service {namespace}/{name} is headless: it has no cluster IP"
                    )
                    .into());
                }
                if !ip.is_empty() {
                    return Ok(ip);
                }
                "it has no cluster IP yet".to_string()
            }
            Ok(None) => "it does not exist".to_string(),
            Err(err) => format!("reading it failed: {err}"),
        };
        if tokio::time::Instant::now() + std::time::Duration::from_secs(2) > deadline {
            return Err(anyhow::anyhow!(
                "no cluster IP of Service {namespace}/{name} within {}s: {last}",
                timeout.as_secs()
            )
            .into());
        }
        tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    }
}

/// `vcsync cluster service-ip`: [`wait_for_service_ip`] with the driver's host client.
pub async fn wait_for_service_ip_with(
    options: &DriverOptions,
    namespace: &str,
    name: &str,
    timeout: std::time::Duration,
) -> Result<String> {
    let driver = KubernetesDriver {
        options: options.clone(),
    };
    wait_for_service_ip(&driver.client().await?, namespace, name, timeout).await
}

/// `vcsync cluster detect-service-cidr`: [`detect_service_cidr`] with the driver's host client.
pub async fn detect_service_cidr_with(options: &DriverOptions, namespace: &str) -> Result<String> {
    let driver = KubernetesDriver {
        options: options.clone(),
    };
    detect_service_cidr(&driver.client().await?, namespace).await
}
