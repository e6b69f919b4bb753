//! What of a tenant's Services and selector-less Endpoints may reach the host: the
//! `sync.services` configuration and pure policy functions (no I/O).
//!
//! - `externalIPs` make kube-proxy send the whole host cluster's traffic for those addresses to
//!   the service (CVE-2020-8554): none reach the host unless inside `allowedExternalIPs`.
//! - Service types other than ClusterIP are allowed by `allowedTypes` (default ClusterIP,
//!   NodePort, LoadBalancer). A refused type becomes ClusterIP on the host, so the tenant's own
//!   traffic keeps working; a refused ExternalName becomes a headless service (tenant pods
//!   resolve names through the virtual cluster's DNS, so they do not need the host copy).
//! - `loadBalancerClass` passes only when listed in `allowedLoadBalancerClasses` (default none:
//!   the host's default load balancer applies); tenant annotations pass only when a pattern of
//!   `allowedAnnotations` matches them (default none: cloud load-balancer annotations can make a
//!   load balancer internet-facing or name other accounts' resources).
//! - Addresses of selector-less Endpoints (CVE-2021-25740) pass when they are the IPs of this
//!   instance's host pods or inside `allowedEndpointRanges`. Loopback, link-local, unspecified
//!   and multicast addresses pass only through a range that lies inside such a block (naming
//!   `169.254.20.10/32` allows a node-local DNS cache; `0.0.0.0/0` never allows the cloud
//!   metadata address).
//!
//! What is refused is written as the host copy's [`REFUSED_ANNOTATION`] (so a refusal is
//! reported once, when it changes, and a restart writes nothing) and told to the tenant as an
//! event on the virtual object.

use std::{collections::BTreeMap, net::IpAddr};

use k8s_openapi::api::core::v1::{EndpointSubset, ServiceSpec};

pub use crate::config::{IpRange, ServiceType, ServicesConfig};

/// On host copies: what the policy kept from the host (absent when nothing).
pub const REFUSED_ANNOTATION: &str = "vcsync.dev/refused";

/// What the policy kept from a host service.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ServiceRefusals {
    /// `externalIPs` not synced.
    pub external_ips: Vec<String>,
    /// The type refused (the host copy is ClusterIP).
    pub type_: Option<String>,
    /// The `loadBalancerClass` dropped.
    pub load_balancer_class: Option<String>,
    /// Tenant annotation keys not synced.
    pub annotations: Vec<String>,
}

impl ServiceRefusals {
    /// Nothing refused.
    pub fn is_empty(&self) -> bool {
        self == &ServiceRefusals::default()
    }

    /// The value of [`REFUSED_ANNOTATION`] (None when nothing was refused).
    pub fn summary(&self) -> Option<String> {
        let mut parts = Vec::new();
        if !self.external_ips.is_empty() {
            parts.push(format!("externalIPs={}", self.external_ips.join(",")));
        }
        if let Some(type_) = &self.type_ {
            parts.push(format!("type={type_}"));
        }
        if let Some(class) = &self.load_balancer_class {
            parts.push(format!("loadBalancerClass={class}"));
        }
        if !self.annotations.is_empty() {
            parts.push(format!("annotations={}", self.annotations.join(",")));
        }
        (!parts.is_empty()).then(|| parts.join(";"))
    }

    /// The events that tell the tenant: (warning?, reason, message).
    pub fn events(&self) -> Vec<(bool, &'static str, String)> {
        let mut events = Vec::new();
        if !self.external_ips.is_empty() {
            events.push((
                true,
                "ExternalIPsRefused",
                format!(
                    "externalIPs {} not synced to the host: not in sync.services.allowedExternalIPs of the \
                     vcsync configuration (an external IP takes over that address for the whole host cluster, \
                     CVE-2020-8554)",
                    self.external_ips.join(", ")
                ),
            ));
        }
        if let Some(type_) = &self.type_ {
            let becomes = if type_ == "ExternalName" {
                "a headless ClusterIP service"
            } else {
                "ClusterIP"
            };
            events.push((
                true,
                "ServiceTypeRefused",
                format!(
                    "type {type_} is not in sync.services.allowedTypes of the vcsync configuration: the host \
                     service is {becomes}"
                ),
            ));
        }
        if let Some(class) = &self.load_balancer_class {
            events.push((
                true,
                "LoadBalancerClassRefused",
                format!(
                    "loadBalancerClass {class} not synced to the host: not in \
                     sync.services.allowedLoadBalancerClasses of the vcsync configuration; the host's default \
                     load balancer applies"
                ),
            ));
        }
        if !self.annotations.is_empty() {
            events.push((
                false,
                "AnnotationsNotSynced",
                format!(
                    "annotations {} not synced to the host service: not matched by \
                     sync.services.allowedAnnotations of the vcsync configuration",
                    self.annotations.join(", ")
                ),
            ));
        }
        events
    }
}

/// Whether an annotation key matches a pattern (`*`: any run of characters).
pub fn key_matches(pattern: &str, key: &str) -> bool {
    let mut parts = pattern.split('*');
    let first = parts.next().unwrap_or_default();
    let Some(mut rest) = key.strip_prefix(first) else {
        return false;
    };
    let parts: Vec<&str> = parts.collect();
    let Some((last, middle)) = parts.split_last() else {
        return rest.is_empty();
    };
    for part in middle {
        match rest.find(part) {
            Some(at) => rest = &rest[at + part.len()..],
            None => return false,
        }
    }
    rest.len() >= last.len() && rest.ends_with(last)
}

/// Removes the tenant annotations no pattern allows; returns their keys. Keys under
/// `vcsync.dev/` are vcsync's own and left alone.
pub fn filter_annotations(
    config: &ServicesConfig,
    annotations: &mut Option<BTreeMap<String, String>>,
) -> Vec<String> {
    let Some(map) = annotations.as_mut() else {
        return Vec::new();
    };
    let refused: Vec<String> = map
        .keys()
        .filter(|key| {
            !vcsync_translators::is_reserved_key(key)
                && !config
                    .allowed_annotations
                    .iter()
                    .any(|pattern| key_matches(pattern, key))
        })
        .cloned()
        .collect();
    for key in &refused {
        map.remove(key);
    }
    refused
}

/// Applies the policy to the spec a host service would get. `observed` is the host's current
/// spec, if any: a type the policy changes takes the host's defaults for the fields that depend
/// on the type.
pub fn police_service_spec(
    config: &ServicesConfig,
    spec: &mut ServiceSpec,
    observed: Option<&ServiceSpec>,
) -> ServiceRefusals {
    let mut refusals = ServiceRefusals::default();
    if let Some(ips) = spec.external_ips.take() {
        let (kept, refused): (Vec<String>, Vec<String>) = ips.into_iter().partition(|ip| {
            ip.parse::<IpAddr>()
                .is_ok_and(|ip| config.allowed_external_ips.iter().any(|r| r.contains(ip)))
        });
        refusals.external_ips = refused;
        spec.external_ips = (!kept.is_empty()).then_some(kept);
    }
    let type_ = spec.type_.clone().unwrap_or_else(|| "ClusterIP".to_string());
    let allowed = type_ == "ClusterIP" || config.allowed_types.iter().any(|allowed| allowed.name() == type_);
    if !allowed {
        if type_ == "ExternalName" {
            spec.external_name = None;
            if spec.cluster_ip.as_deref().unwrap_or_default().is_empty() {
                spec.cluster_ip = Some("None".to_string());
                spec.cluster_ips = Some(vec!["None".to_string()]);
            }
        }
        spec.type_ = Some("ClusterIP".to_string());
        spec.external_traffic_policy = observed.and_then(|o| o.external_traffic_policy.clone());
        spec.health_check_node_port = None;
        spec.allocate_load_balancer_node_ports = None;
        spec.load_balancer_class = None;
        spec.load_balancer_source_ranges = None;
        spec.load_balancer_ip = None;
        for port in spec.ports.iter_mut().flatten() {
            port.node_port = None;
        }
        refusals.type_ = Some(type_);
    }
    if let Some(class) = spec.load_balancer_class.take() {
        if config.allowed_load_balancer_classes.contains(&class) {
            spec.load_balancer_class = Some(class);
        } else {
            refusals.load_balancer_class = Some(class);
        }
    }
    drop_fields_the_host_refuses(spec);
    refusals
}

/// Whether traffic from outside the cluster reaches the service (Kubernetes'
/// `ExternallyAccessible`): node ports, a load balancer, or external IPs.
fn externally_accessible(spec: &ServiceSpec) -> bool {
    match spec.type_.as_deref().unwrap_or("ClusterIP") {
        "NodePort" | "LoadBalancer" => true,
        "ClusterIP" => spec.external_ips.as_ref().is_some_and(|ips| !ips.is_empty()),
        _ => false,
    }
}

/// Clears the fields that only the types and addresses the policy took away use: the host API
/// server refuses a service that keeps them (`externalTrafficPolicy` "may only be set for
/// externally-accessible services", so a ClusterIP service whose external IPs were all refused
/// loses the policy its virtual server defaulted; `healthCheckNodePort` only for a LoadBalancer
/// with the Local policy; the load-balancer fields only for a LoadBalancer).
fn drop_fields_the_host_refuses(spec: &mut ServiceSpec) {
    if !externally_accessible(spec) {
        spec.external_traffic_policy = None;
    }
    let load_balancer = spec.type_.as_deref() == Some("LoadBalancer");
    if !(load_balancer && spec.external_traffic_policy.as_deref() == Some("Local")) {
        spec.health_check_node_port = None;
    }
    if !load_balancer {
        spec.allocate_load_balancer_node_ports = None;
        spec.load_balancer_class = None;
        spec.load_balancer_source_ranges = None;
        spec.load_balancer_ip = None;
    }
}

/// Blocks no tenant endpoint may point at unless a range inside the block allows it.
fn special_blocks() -> [IpRange; 8] {
    let range = |text: &str| text.parse::<IpRange>().expect("a valid built-in range");
    [
        range("127.0.0.0/8"),
        range("169.254.0.0/16"),
        range("0.0.0.0/32"),
        range("224.0.0.0/4"),
        range("::1/128"),
        range("fe80::/10"),
        range("::/128"),
        range("ff00::/8"),
    ]
}

/// Whether a selector-less endpoint address may reach the host: an IP of this instance's host
/// pods (`owned_pod`) or inside an allowed range; loopback, link-local, unspecified and multicast
/// addresses only through an allowed range inside their block.
pub fn endpoint_address_allowed(
    config: &ServicesConfig,
    ip: &str,
    owned_pod: impl Fn(IpAddr) -> bool,
) -> bool {
    let Ok(ip) = ip.parse::<IpAddr>().map(|ip| ip.to_canonical()) else {
        return false;
    };
    let allowed = config.allowed_endpoint_ranges.iter();
    match special_blocks().iter().find(|block| block.contains(ip)) {
        Some(block) => allowed
            .filter(|range| range.within(block))
            .any(|range| range.contains(ip)),
        None => owned_pod(ip) || allowed.into_iter().any(|range| range.contains(ip)),
    }
}

/// Drops the addresses of tenant endpoint subsets that may not reach the host; returns them.
/// A subset left without addresses is dropped.
pub fn police_endpoint_subsets(
    config: &ServicesConfig,
    subsets: &mut Option<Vec<EndpointSubset>>,
    owned_pod: impl Fn(IpAddr) -> bool,
) -> Vec<String> {
    let mut refused = Vec::new();
    let Some(list) = subsets.as_mut() else {
        return refused;
    };
    for subset in list.iter_mut() {
        for addresses in [&mut subset.addresses, &mut subset.not_ready_addresses] {
            if let Some(all) = addresses.as_mut() {
                all.retain(|address| {
                    let keep = endpoint_address_allowed(config, &address.ip, &owned_pod);
                    if !keep && !refused.contains(&address.ip) {
                        refused.push(address.ip.clone());
                    }
                    keep
                });
                if all.is_empty() {
                    *addresses = None;
                }
            }
        }
    }
    list.retain(|s| s.addresses.is_some() || s.not_ready_addresses.is_some());
    if list.is_empty() {
        *subsets = None;
    }
    refused
}

/// The Warning event about refused endpoint addresses: (reason, message).
pub fn endpoints_event(refused: &[String]) -> (&'static str, String) {
    (
        "EndpointsRefused",
        format!(
            "addresses {} not synced to the host: neither pods of this virtual cluster nor in \
             sync.services.allowedEndpointRanges of the vcsync configuration (loopback and link-local \
             addresses such as the cloud metadata service only when a range inside them is listed; \
             CVE-2021-25740)",
            refused.join(", ")
        ),
    )
}

#[cfg(test)]
#[path = "policy_tests.rs"]
mod tests;
