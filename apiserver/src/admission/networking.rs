//! Ingress, NetworkPolicy, EndpointSlice and Endpoints validation, after k8s.io/kubernetes
//! pkg/apis/networking/validation (`validateHTTPIngressRuleValue`, `validateHTTPIngressPath`,
//! `ValidateNetworkPolicySpec`, `ValidateNetworkPolicyPort`), pkg/apis/discovery/validation
//! (`validateEndpoints`, `validatePorts`, `validateAddressType`) and pkg/apis/core/validation
//! (`validateEndpointSubsets`, `validateEndpointPort`). Left out: ingress backends and TLS,
//! network policy peers and CIDRs, special (loopback, link-local) endpoint addresses, topology
//! hints.

use std::net::IpAddr;

use serde_json::{Value, json};

use super::field::{self, Errors, check_enum, items, str_of};

const PROTOCOLS: &[&str] = &["SCTP", "TCP", "UDP"];
const INVALID_IP: &str = "must be a valid IP address, (e.g. 10.9.8.7 or 2001:db8::ffff)";

/// Errors of an Ingress.
pub(crate) fn validate_ingress(ingress: &Value) -> Errors {
    let mut errors = Errors::new();
    for (i, rule) in items(&ingress["spec"]["rules"]).iter().enumerate() {
        let at = format!("spec.rules[{i}]");
        let host = str_of(&rule["host"]);
        if let Some(rest) = host.strip_prefix("*.") {
            if !field::dns1123_subdomain(rest).is_empty() {
                errors.push(field::invalid_str(
                    &format!("{at}.host"),
                    host,
                    "a wildcard DNS-1123 subdomain must start with '*.', followed by a valid DNS subdomain, which must consist of lower case alphanumeric characters, '-' or '.' and end with an alphanumeric character (e.g. '*.example.com', regex used for validation is '\\*\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')",
                ));
            }
        } else if !host.is_empty() {
            field::check_subdomain(&mut errors, &format!("{at}.host"), host);
        }
        if !rule["http"].is_object() {
            continue;
        }
        let paths = items(&rule["http"]["paths"]);
        if paths.is_empty() {
            errors.push(field::required(&format!("{at}.http.paths"), ""));
        }
        for (j, path) in paths.iter().enumerate() {
            let at = format!("{at}.http.paths[{j}]");
            let value = str_of(&path["path"]);
            match path["pathType"].as_str() {
                None => errors.push(field::required(
                    &format!("{at}.pathType"),
                    "pathType must be specified",
                )),
                Some("Exact" | "Prefix") => {
                    if !value.starts_with('/') {
                        errors.push(field::invalid_str(
                            &format!("{at}.path"),
                            value,
                            "must be an absolute path",
                        ));
                    }
                }
                Some("ImplementationSpecific") => {
                    if !value.is_empty() && !value.starts_with('/') {
                        errors.push(field::invalid_str(
                            &format!("{at}.path"),
                            value,
                            "must be an absolute path",
                        ));
                    }
                }
                Some(_) => errors.push(field::not_supported(
                    &format!("{at}.pathType"),
                    &path["pathType"],
                    &["Exact", "ImplementationSpecific", "Prefix"],
                )),
            }
        }
    }
    errors
}

/// Errors of a NetworkPolicy.
pub(crate) fn validate_network_policy(policy: &Value) -> Errors {
    let mut errors = Errors::new();
    let spec = &policy["spec"];
    field::labels(
        &mut errors,
        "spec.podSelector.matchLabels",
        &spec["podSelector"]["matchLabels"],
    );
    for direction in ["ingress", "egress"] {
        for (i, rule) in items(&spec[direction]).iter().enumerate() {
            for (j, port) in items(&rule["ports"]).iter().enumerate() {
                let at = format!("spec.{direction}[{i}].ports[{j}]");
                if let Some(protocol) = port.get("protocol").filter(|p| !p.is_null())
                    && !matches!(protocol.as_str(), Some("TCP" | "UDP" | "SCTP"))
                {
                    errors.push(field::not_supported(
                        &format!("{at}.protocol"),
                        protocol,
                        &["TCP", "UDP", "SCTP"],
                    ));
                }
                if let Some(n) = port["port"].as_i64() {
                    for message in field::port_number(n) {
                        errors.push(field::invalid(&format!("{at}.port"), &json!(n), &message));
                    }
                }
            }
        }
    }
    let types = items(&spec["policyTypes"]);
    for (i, kind) in types.iter().enumerate() {
        if !matches!(kind.as_str(), Some("Ingress" | "Egress")) {
            errors.push(field::not_supported(
                &format!("spec.policyTypes[{i}]"),
                kind,
                &["Ingress", "Egress"],
            ));
        }
    }
    errors
}

/// Errors of an EndpointSlice.
pub(crate) fn validate_endpoint_slice(slice: &Value) -> Errors {
    let mut errors = Errors::new();
    let address_type = str_of(&slice["addressType"]);
    for (i, endpoint) in items(&slice["endpoints"]).iter().enumerate() {
        let at = format!("endpoints[{i}].addresses");
        let addresses = items(&endpoint["addresses"]);
        if addresses.is_empty() {
            errors.push(field::required(&at, "must contain at least 1 address"));
        }
        for (j, address) in addresses.iter().enumerate() {
            let address = str_of(address);
            let parsed = address.parse::<IpAddr>();
            match (address_type, parsed) {
                ("IPv4" | "IPv6", Err(_)) => {
                    errors.push(field::invalid_str(&format!("{at}[{j}]"), address, INVALID_IP))
                }
                ("IPv4", Ok(IpAddr::V6(_))) => {
                    errors.push(field::invalid_str(&at, address, "must be an IPv4 address"))
                }
                ("IPv6", Ok(IpAddr::V4(_))) => {
                    errors.push(field::invalid_str(&at, address, "must be an IPv6 address"))
                }
                _ => {}
            }
        }
        let node = str_of(&endpoint["nodeName"]);
        if !node.is_empty() {
            field::check_subdomain(&mut errors, &format!("endpoints[{i}].nodeName"), node);
        }
    }
    let mut names = Vec::new();
    for (i, port) in items(&slice["ports"]).iter().enumerate() {
        let at = format!("ports[{i}]");
        let name = str_of(&port["name"]);
        if !name.is_empty() {
            field::check_label(&mut errors, &format!("{at}.name"), name);
        }
        if names.contains(&name) {
            errors.push(field::duplicate(&format!("{at}.name"), &json!(name)));
        } else {
            names.push(name);
        }
        if port["protocol"].is_null() {
            errors.push(field::required(&format!("{at}.protocol"), ""));
        } else {
            field::check_optional_enum(
                &mut errors,
                &format!("{at}.protocol"),
                &port["protocol"],
                PROTOCOLS,
            );
        }
    }
    check_enum(
        &mut errors,
        "addressType",
        &slice["addressType"],
        &["FQDN", "IPv4", "IPv6"],
    );
    errors
}

/// Errors of an Endpoints object.
pub(crate) fn validate_endpoints(endpoints: &Value) -> Errors {
    let mut errors = Errors::new();
    for (i, subset) in items(&endpoints["subsets"]).iter().enumerate() {
        let at = format!("subsets[{i}]");
        let (ready, not_ready) = (items(&subset["addresses"]), items(&subset["notReadyAddresses"]));
        if ready.is_empty() && not_ready.is_empty() {
            errors.push(field::required(
                &at,
                "must specify `addresses` or `notReadyAddresses`",
            ));
        }
        for (list, addresses) in [("addresses", ready), ("notReadyAddresses", not_ready)] {
            for (j, address) in addresses.iter().enumerate() {
                let ip = str_of(&address["ip"]);
                if ip.parse::<IpAddr>().is_err() {
                    errors.push(field::invalid_str(
                        &format!("{at}.{list}[{j}].ip"),
                        ip,
                        INVALID_IP,
                    ));
                }
            }
        }
        let ports = items(&subset["ports"]);
        for (j, port) in ports.iter().enumerate() {
            let port_at = format!("{at}.ports[{j}]");
            let name = str_of(&port["name"]);
            if ports.len() > 1 && name.is_empty() {
                errors.push(field::required(&format!("{port_at}.name"), ""));
            } else if !name.is_empty() {
                field::check_label(&mut errors, &format!("{port_at}.name"), name);
            }
            let n = port["port"].as_i64().unwrap_or(0);
            for message in field::port_number(n) {
                errors.push(field::invalid(&format!("{port_at}.port"), &json!(n), &message));
            }
            check_enum(
                &mut errors,
                &format!("{port_at}.protocol"),
                &port["protocol"],
                PROTOCOLS,
            );
        }
    }
    errors
}
