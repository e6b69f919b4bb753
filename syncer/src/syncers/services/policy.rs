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

use std::{collections::BTreeMap, fmt, net::IpAddr, str::FromStr};

use k8s_openapi::api::core::v1::{EndpointSubset, ServiceSpec};
use serde::{Deserialize, Serialize};

/// On host copies: what the policy kept from the host (absent when nothing).
pub const REFUSED_ANNOTATION: &str = "vcsync.dev/refused";

/// The `sync.services` section.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ServicesConfig {
    /// Whether Services and their Endpoints / EndpointSlices are synced.
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// CIDR ranges a service's `externalIPs` may be in; others never reach the host.
    #[serde(default, rename = "allowedExternalIPs")]
    pub allowed_external_ips: Vec<IpRange>,
    /// Service types synced as they are; others become ClusterIP (ExternalName: headless).
    #[serde(default = "default_types")]
    pub allowed_types: Vec<ServiceType>,
    /// `loadBalancerClass` values synced; others are dropped.
    #[serde(default)]
    pub allowed_load_balancer_classes: Vec<String>,
    /// Patterns of tenant annotation keys synced to host services: an exact key, or `*` as any
    /// run of characters (`service.beta.kubernetes.io/aws-load-balancer-*`, `prometheus.io/*`).
    #[serde(default)]
    pub allowed_annotations: Vec<String>,
    /// CIDR ranges selector-less Endpoints may point at, besides this instance's pods.
    #[serde(default)]
    pub allowed_endpoint_ranges: Vec<IpRange>,
}

fn default_true() -> bool {
    true
}

fn default_types() -> Vec<ServiceType> {
    vec![
        ServiceType::ClusterIP,
        ServiceType::NodePort,
        ServiceType::LoadBalancer,
    ]
}

impl Default for ServicesConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            allowed_external_ips: Vec::new(),
            allowed_types: default_types(),
            allowed_load_balancer_classes: Vec::new(),
            allowed_annotations: Vec::new(),
            allowed_endpoint_ranges: Vec::new(),
        }
    }
}

/// A Service type.
#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[allow(clippy::upper_case_acronyms)]
pub enum ServiceType {
    /// Always allowed: what refused types become.
    ClusterIP,
    /// A port on every host node.
    NodePort,
    /// A load balancer of the host's cloud.
    LoadBalancer,
    /// A DNS alias in the host's cluster DNS.
    ExternalName,
}

impl ServiceType {
    fn name(self) -> &'static str {
        match self {
            ServiceType::ClusterIP => "ClusterIP",
            ServiceType::NodePort => "NodePort",
            ServiceType::LoadBalancer => "LoadBalancer",
            ServiceType::ExternalName => "ExternalName",
        }
    }
}

/// A CIDR range (`203.0.113.0/24`, `2001:db8::/32`; a bare address is a single-address
/// range). Host bits must be zero, so that a typo is not silently widened or narrowed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IpRange {
    network: IpAddr,
    prefix: u8,
}

impl IpRange {
    /// Whether `ip` is inside (IPv4-mapped IPv6 addresses count as their IPv4 address).
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.network, ip.to_canonical()) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                mask(u128::from(u32::from(ip)), self.prefix, 32) == u128::from(u32::from(net))
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => mask(u128::from(ip), self.prefix, 128) == u128::from(net),
            _ => false,
        }
    }

    /// Whether every address of this range is inside `outer`.
    pub fn within(&self, outer: &IpRange) -> bool {
        self.prefix >= outer.prefix && outer.contains(self.network)
    }
}

/// `value` with all but the first `prefix` of its `bits` bits cleared.
fn mask(value: u128, prefix: u8, bits: u8) -> u128 {
    if prefix == 0 {
        return 0;
    }
    let host_bits = u32::from(bits - prefix);
    value >> host_bits << host_bits
}

impl FromStr for IpRange {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let (address, prefix) = match text.split_once('/') {
            Some((address, prefix)) => (address, Some(prefix)),
            None => (text, None),
        };
        let network: IpAddr = address
            .parse()
            .map_err(|_| format!("invalid CIDR range {text:?}: {address:?} is not an IP address"))?;
        let bits = if network.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => bits,
            Some(prefix) => prefix.parse::<u8>().ok().filter(|p| *p <= bits).ok_or_else(|| {
                format!("invalid CIDR range {text:?}: the prefix length must be 0 to {bits}")
            })?,
        };
        let range = IpRange { network, prefix };
        let masked = match network {
            IpAddr::V4(ip) => IpAddr::from(std::net::Ipv4Addr::from(
                u32::try_from(mask(u128::from(u32::from(ip)), prefix, 32)).unwrap_or_default(),
            )),
            IpAddr::V6(ip) => IpAddr::from(std::net::Ipv6Addr::from(mask(u128::from(ip), prefix, 128))),
        };
        if masked != network {
            return Err(format!(
                "invalid CIDR range {text:?}: host bits are set (the range is {masked}/{prefix})"
            ));
        }
        Ok(range)
    }
}

impl fmt::Display for IpRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix)
    }
}

impl Serialize for IpRange {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for IpRange {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

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
    refusals
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
mod tests {
    use k8s_openapi::api::core::v1::EndpointAddress;
    use rstest::rstest;
    use serde_json::json;

    use super::*;

    fn config(yaml: &str) -> ServicesConfig {
        serde_yaml_ng::from_str(yaml).unwrap()
    }

    #[rstest]
    #[case("203.0.113.0/24", "203.0.113.7", true)]
    #[case("203.0.113.0/24", "203.0.114.1", false)]
    #[case("203.0.113.9", "203.0.113.9", true)]
    #[case("203.0.113.9", "203.0.113.8", false)]
    #[case("0.0.0.0/0", "8.8.8.8", true)]
    #[case("0.0.0.0/0", "2001:db8::1", false)]
    #[case("10.0.0.0/8", "::ffff:10.1.2.3", true)]
    #[case("2001:db8::/32", "2001:db8:ffff::1", true)]
    #[case("2001:db8::/32", "2001:db9::1", false)]
    #[case("::/0", "fe80::1", true)]
    fn ranges_contain_addresses(#[case] range: &str, #[case] ip: &str, #[case] inside: bool) {
        let range: IpRange = range.parse().unwrap();
        assert_eq!(range.contains(ip.parse().unwrap()), inside, "{range} {ip}");
    }

    #[rstest]
    #[case("203.0.113.0/33", "the prefix length must be 0 to 32")]
    #[case("2001:db8::/129", "the prefix length must be 0 to 128")]
    #[case("203.0.113.0/x", "the prefix length must be 0 to 32")]
    #[case("203.0.113/24", "\"203.0.113\" is not an IP address")]
    #[case("example.com", "is not an IP address")]
    #[case("203.0.113.5/24", "host bits are set (the range is 203.0.113.0/24)")]
    fn bad_ranges_are_named(#[case] text: &str, #[case] error: &str) {
        let err = text.parse::<IpRange>().unwrap_err();
        assert!(err.contains(&format!("{text:?}")), "{err}");
        assert!(err.contains(error), "{err}");
    }

    #[test]
    fn a_bad_range_in_the_configuration_is_a_config_error_naming_it() {
        let err = crate::Config::from_yaml(
            "instance: a\nhostNamespace: b\nsync:\n  services:\n    allowedExternalIPs: [203.0.113.0/24, 10.0.0.1/8]\n",
            "f.yaml",
        )
        .unwrap_err()
        .to_string();
        assert!(err.starts_with("f.yaml:5:"), "{err}");
        assert!(err.contains("sync.services.allowedExternalIPs"), "{err}");
        assert!(err.contains("\"10.0.0.1/8\""), "{err}");
        assert!(!err.contains('\n'), "{err}");
    }

    #[test]
    fn defaults_and_a_full_section() {
        let default = crate::Config::from_yaml("instance: a\nhostNamespace: b\n", "f").unwrap();
        assert_eq!(default.sync.services, ServicesConfig::default());
        let full = config(
            "enabled: true\nallowedExternalIPs: [203.0.113.0/24]\nallowedTypes: [ClusterIP, ExternalName]\n\
             allowedLoadBalancerClasses: [example.com/lb]\nallowedAnnotations: [prometheus.io/*]\n\
             allowedEndpointRanges: [192.0.2.0/24, 169.254.20.10/32]\n",
        );
        assert_eq!(
            full.allowed_types,
            [ServiceType::ClusterIP, ServiceType::ExternalName]
        );
        assert_eq!(full.allowed_endpoint_ranges.len(), 2);
        // Written back, it reads the same.
        assert_eq!(config(&serde_yaml_ng::to_string(&full).unwrap()), full);
        assert!(serde_yaml_ng::from_str::<ServicesConfig>("allowedTypes: [Nodeport]").is_err());
    }

    fn spec(value: serde_json::Value) -> ServiceSpec {
        serde_json::from_value(value).unwrap()
    }

    #[rstest]
    #[case::refused_by_default("", &["8.8.8.8"], None, &["8.8.8.8"])]
    #[case::allowed_by_a_range(
        "allowedExternalIPs: [203.0.113.0/24]",
        &["203.0.113.5", "8.8.8.8"],
        Some(&["203.0.113.5"][..]),
        &["8.8.8.8"]
    )]
    #[case::all_allowed("allowedExternalIPs: [203.0.113.0/24]", &["203.0.113.5"], Some(&["203.0.113.5"][..]), &[])]
    #[case::not_an_address("allowedExternalIPs: [0.0.0.0/0]", &["nonsense"], None, &["nonsense"])]
    fn external_ips(
        #[case] yaml: &str,
        #[case] ips: &[&str],
        #[case] kept: Option<&[&str]>,
        #[case] refused: &[&str],
    ) {
        let mut spec = spec(json!({"externalIPs": ips, "ports": [{"port": 80}]}));
        let refusals = police_service_spec(&config(yaml), &mut spec, None);
        assert_eq!(
            spec.external_ips,
            kept.map(|k| k.iter().map(|s| s.to_string()).collect::<Vec<_>>())
        );
        assert_eq!(refusals.external_ips, refused);
    }

    #[rstest]
    #[case::cluster_ip_always("allowedTypes: []", "ClusterIP", "ClusterIP", false)]
    #[case::node_port_by_default("", "NodePort", "NodePort", false)]
    #[case::load_balancer_by_default("", "LoadBalancer", "LoadBalancer", false)]
    #[case::external_name_not_by_default("", "ExternalName", "ClusterIP", true)]
    #[case::external_name_allowed("allowedTypes: [ExternalName]", "ExternalName", "ExternalName", false)]
    #[case::node_port_refused("allowedTypes: [ClusterIP]", "NodePort", "ClusterIP", true)]
    #[case::load_balancer_refused("allowedTypes: [ClusterIP, NodePort]", "LoadBalancer", "ClusterIP", true)]
    fn types(#[case] yaml: &str, #[case] type_: &str, #[case] host_type: &str, #[case] refused: bool) {
        let mut spec = spec(json!({"type": type_, "externalName": "db.example.com",
            "externalTrafficPolicy": "Local", "allocateLoadBalancerNodePorts": true,
            "loadBalancerSourceRanges": ["0.0.0.0/0"], "healthCheckNodePort": 30000,
            "ports": [{"port": 80, "nodePort": 30001}]}));
        let refusals = police_service_spec(&config(yaml), &mut spec, None);
        assert_eq!(spec.type_.as_deref(), Some(host_type));
        assert_eq!(refusals.type_.is_some(), refused);
        if refused {
            assert_eq!(spec.external_traffic_policy, None);
            assert_eq!(spec.allocate_load_balancer_node_ports, None);
            assert_eq!(spec.load_balancer_source_ranges, None);
            assert_eq!(spec.health_check_node_port, None);
            assert_eq!(spec.ports.as_ref().unwrap()[0].node_port, None);
            assert!(refusals.events()[0].0, "a Warning");
            assert_eq!(refusals.events()[0].1, "ServiceTypeRefused");
        }
        if type_ == "ExternalName" && refused {
            assert_eq!(spec.external_name, None);
            assert_eq!(spec.cluster_ip.as_deref(), Some("None"), "headless");
        }
    }

    #[test]
    fn a_refused_type_keeps_the_hosts_defaults_so_they_are_no_drift() {
        let config = config("allowedTypes: [ClusterIP]");
        let observed = ServiceSpec {
            type_: Some("ClusterIP".into()),
            external_traffic_policy: Some("Cluster".into()),
            ..Default::default()
        };
        let mut spec =
            spec(json!({"type": "NodePort", "externalTrafficPolicy": "Local", "ports": [{"port": 80}]}));
        police_service_spec(&config, &mut spec, Some(&observed));
        assert_eq!(spec.external_traffic_policy.as_deref(), Some("Cluster"));
    }

    #[rstest]
    #[case::dropped_by_default("", Some("example.com/lb"), None)]
    #[case::allowed(
        "allowedLoadBalancerClasses: [example.com/lb]",
        Some("example.com/lb"),
        Some("example.com/lb")
    )]
    #[case::other_dropped("allowedLoadBalancerClasses: [example.com/lb]", Some("evil.com/lb"), None)]
    #[case::none("", None, None)]
    fn load_balancer_classes(#[case] yaml: &str, #[case] class: Option<&str>, #[case] kept: Option<&str>) {
        let mut spec =
            spec(json!({"type": "LoadBalancer", "loadBalancerClass": class, "ports": [{"port": 80}]}));
        let refusals = police_service_spec(&config(yaml), &mut spec, None);
        assert_eq!(spec.load_balancer_class.as_deref(), kept);
        assert_eq!(
            refusals.load_balancer_class.as_deref(),
            if kept.is_none() { class } else { None }
        );
    }

    #[rstest]
    #[case("prometheus.io/scrape", "prometheus.io/scrape", true)]
    #[case("prometheus.io/scrape", "prometheus.io/scraper", false)]
    #[case("prometheus.io/*", "prometheus.io/port", true)]
    #[case("prometheus.io/*", "xprometheus.io/port", false)]
    #[case(
        "service.beta.kubernetes.io/aws-load-balancer-*",
        "service.beta.kubernetes.io/aws-load-balancer-type",
        true
    )]
    #[case(
        "service.beta.kubernetes.io/aws-load-balancer-*",
        "service.beta.kubernetes.io/azure-dns-label-name",
        false
    )]
    #[case("*", "anything/at-all", true)]
    #[case("*.example.com/*", "lb.example.com/zone", true)]
    #[case("*.example.com/*", "example.com/zone", false)]
    #[case("a*b*c", "abc", true)]
    #[case("a*b*c", "acb", false)]
    #[case("a*a", "a", false)]
    fn annotation_patterns(#[case] pattern: &str, #[case] key: &str, #[case] matches: bool) {
        assert_eq!(key_matches(pattern, key), matches);
    }

    #[test]
    fn annotations_pass_only_when_allowed_and_vcsyncs_own_always() {
        let mut annotations = Some(BTreeMap::from([
            (
                "service.beta.kubernetes.io/aws-load-balancer-scheme".to_string(),
                "internet-facing".to_string(),
            ),
            ("prometheus.io/scrape".to_string(), "true".to_string()),
            ("vcsync.dev/object-name".to_string(), "web".to_string()),
        ]));
        let refused = filter_annotations(&config("allowedAnnotations: [prometheus.io/*]"), &mut annotations);
        assert_eq!(refused, ["service.beta.kubernetes.io/aws-load-balancer-scheme"]);
        let kept: Vec<_> = annotations.unwrap().into_keys().collect();
        assert_eq!(kept, ["prometheus.io/scrape", "vcsync.dev/object-name"]);
    }

    #[test]
    fn refusals_are_summarised_and_told() {
        let refusals = ServiceRefusals {
            external_ips: vec!["8.8.8.8".into()],
            type_: Some("NodePort".into()),
            load_balancer_class: None,
            annotations: vec!["a".into(), "b".into()],
        };
        assert_eq!(
            refusals.summary().as_deref(),
            Some("externalIPs=8.8.8.8;type=NodePort;annotations=a,b")
        );
        let events = refusals.events();
        let reasons: Vec<_> = events.iter().map(|e| e.1).collect();
        assert_eq!(
            reasons,
            ["ExternalIPsRefused", "ServiceTypeRefused", "AnnotationsNotSynced"]
        );
        assert!(events[0].2.contains("8.8.8.8") && events[0].2.contains("sync.services.allowedExternalIPs"));
        assert!(!events[2].0, "dropped annotations are Normal events");
        assert_eq!(ServiceRefusals::default().summary(), None);
        assert!(ServiceRefusals::default().is_empty());
    }

    #[rstest]
    #[case::metadata_service("", "169.254.169.254", false)]
    #[case::loopback("", "127.0.0.1", false)]
    #[case::ipv6_link_local("", "fe80::1", false)]
    #[case::ipv6_loopback("", "::1", false)]
    #[case::mapped_metadata("", "::ffff:169.254.169.254", false)]
    #[case::unspecified("", "0.0.0.0", false)]
    #[case::multicast("", "224.0.0.1", false)]
    #[case::any_other_by_default("", "192.0.2.10", false)]
    #[case::not_an_address("allowedEndpointRanges: [0.0.0.0/0]", "nonsense", false)]
    #[case::owned_pod("", "10.244.0.5", true)]
    #[case::allowed_range("allowedEndpointRanges: [192.0.2.0/24]", "192.0.2.10", true)]
    #[case::outside_the_range("allowedEndpointRanges: [192.0.2.0/24]", "198.51.100.1", false)]
    #[case::wide_range_not_metadata("allowedEndpointRanges: [0.0.0.0/0]", "169.254.169.254", false)]
    #[case::wide_range_other("allowedEndpointRanges: [0.0.0.0/0]", "198.51.100.1", true)]
    #[case::node_local_dns("allowedEndpointRanges: [169.254.20.10/32]", "169.254.20.10", true)]
    #[case::node_local_dns_not_metadata(
        "allowedEndpointRanges: [169.254.20.10/32]",
        "169.254.169.254",
        false
    )]
    fn endpoint_addresses(#[case] yaml: &str, #[case] ip: &str, #[case] allowed: bool) {
        let owned = |ip: IpAddr| ip == "10.244.0.5".parse::<IpAddr>().unwrap();
        assert_eq!(endpoint_address_allowed(&config(yaml), ip, owned), allowed);
    }

    #[test]
    fn refused_endpoint_addresses_are_dropped_and_named() {
        let address = |ip: &str| EndpointAddress {
            ip: ip.into(),
            ..Default::default()
        };
        let subset = |ips: &[&str], not_ready: &[&str]| EndpointSubset {
            addresses: Some(ips.iter().map(|ip| address(ip)).collect()),
            not_ready_addresses: Some(not_ready.iter().map(|ip| address(ip)).collect()),
            ports: Some(vec![k8s_openapi::api::core::v1::EndpointPort {
                port: 80,
                ..Default::default()
            }]),
        };
        let mut subsets = Some(vec![
            subset(&["169.254.169.254", "10.244.0.5"], &["169.254.169.254"]),
            subset(&["127.0.0.1"], &[]),
        ]);
        let owned = |ip: IpAddr| ip == "10.244.0.5".parse::<IpAddr>().unwrap();
        let refused = police_endpoint_subsets(&ServicesConfig::default(), &mut subsets, owned);
        assert_eq!(refused, ["169.254.169.254", "127.0.0.1"]);
        let subsets = subsets.unwrap();
        assert_eq!(subsets.len(), 1, "a subset without addresses goes");
        assert_eq!(subsets[0].addresses.as_ref().unwrap()[0].ip, "10.244.0.5");
        assert_eq!(subsets[0].not_ready_addresses, None);
        let (reason, message) = endpoints_event(&refused);
        assert_eq!(reason, "EndpointsRefused");
        assert!(message.contains("169.254.169.254, 127.0.0.1") && message.contains("allowedEndpointRanges"));

        let mut only_refused = Some(vec![subset(&["169.254.169.254"], &[])]);
        police_endpoint_subsets(&ServicesConfig::default(), &mut only_refused, owned);
        assert_eq!(only_refused, None);
    }
}
