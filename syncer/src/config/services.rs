//! The `sync.services` section: what of a tenant's Services and selector-less Endpoints may
//! reach the host (the policy that applies it: `crate::syncers::services::policy`).

use std::{fmt, net::IpAddr, str::FromStr};

use serde::{Deserialize, Serialize};

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
    /// The type's name as the API writes it.
    pub fn name(self) -> &'static str {
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
