//! What in-pod clients see of the cluster around them: the service environment variables a
//! kubelet would derive from the *virtual* cluster's services, and DNS through the virtual
//! cluster's DNS service.
//!
//! The host kubelet would derive both from the host namespace (where every tenant's services
//! live under translated names), so host pods get `enableServiceLinks: false` and the variables
//! below as explicit `env` entries; the `KUBERNETES_*` ones override the host's.

use k8s_openapi::api::core::v1::{Container, EnvVar, PodDNSConfig, PodDNSConfigOption, Service};

/// DNS domain of the virtual cluster's services.
pub const CLUSTER_DOMAIN: &str = "cluster.local";
/// Kubernetes allows at most this many nameservers and search domains in a pod's resolv.conf.
const MAX_NAMESERVERS: usize = 3;
const MAX_SEARCHES: usize = 32;

/// One port of a [`ServiceLink`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LinkPort {
    /// Port name, if any.
    pub name: Option<String>,
    /// Port number.
    pub port: i32,
    /// Protocol, upper case (`TCP` when unset).
    pub protocol: String,
}

/// A service as the docker-link-style variables describe it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServiceLink {
    /// Service name.
    pub name: String,
    /// Cluster IP (or host name) clients connect to.
    pub host: String,
    /// Ports, the first one being the service's main port.
    pub ports: Vec<LinkPort>,
}

impl ServiceLink {
    /// The link of `service`; None for services without a cluster IP (headless, ExternalName)
    /// or without ports, which a kubelet skips too.
    pub fn from_service(service: &Service) -> Option<Self> {
        let spec = service.spec.as_ref()?;
        let ip = spec
            .cluster_ip
            .as_deref()
            .filter(|ip| !ip.is_empty() && *ip != "None")?;
        let ports: Vec<LinkPort> = spec
            .ports
            .iter()
            .flatten()
            .map(|p| LinkPort {
                name: p.name.clone().filter(|n| !n.is_empty()),
                port: p.port,
                protocol: p.protocol.as_deref().unwrap_or("TCP").to_ascii_uppercase(),
            })
            .collect();
        if ports.is_empty() {
            return None;
        }
        Some(ServiceLink {
            name: service.metadata.name.clone()?,
            host: ip.to_string(),
            ports,
        })
    }

    /// The API server's link, `kubernetes`, at `host:port` (its port is named `https`).
    pub fn kubernetes(host: &str, port: i32) -> Self {
        ServiceLink {
            name: "kubernetes".into(),
            host: host.to_string(),
            ports: vec![LinkPort {
                name: Some("https".into()),
                port,
                protocol: "TCP".into(),
            }],
        }
    }

    /// The variables of this service, named and ordered as a kubelet makes them.
    pub fn env(&self) -> Vec<EnvVar> {
        let prefix = env_name(&self.name);
        let var = |name: String, value: String| EnvVar {
            name,
            value: Some(value),
            value_from: None,
        };
        let mut vars = vec![var(format!("{prefix}_SERVICE_HOST"), self.host.clone())];
        if let Some(first) = self.ports.first() {
            vars.push(var(format!("{prefix}_SERVICE_PORT"), first.port.to_string()));
        }
        for port in &self.ports {
            if let Some(name) = &port.name {
                vars.push(var(
                    format!("{prefix}_SERVICE_PORT_{}", env_name(name)),
                    port.port.to_string(),
                ));
            }
        }
        let host_port = |port: i32| match self.host.contains(':') {
            true => format!("[{}]:{port}", self.host),
            false => format!("{}:{port}", self.host),
        };
        for (i, port) in self.ports.iter().enumerate() {
            let proto = port.protocol.to_ascii_lowercase();
            let url = format!("{proto}://{}", host_port(port.port));
            if i == 0 {
                vars.push(var(format!("{prefix}_PORT"), url.clone()));
            }
            let port_prefix = format!("{prefix}_PORT_{}_{}", port.port, port.protocol);
            vars.push(var(port_prefix.clone(), url));
            vars.push(var(format!("{port_prefix}_PROTO"), proto));
            vars.push(var(format!("{port_prefix}_PORT"), port.port.to_string()));
            vars.push(var(format!("{port_prefix}_ADDR"), self.host.clone()));
        }
        vars
    }
}

/// `my-svc` -> `MY_SVC`.
fn env_name(name: &str) -> String {
    name.to_ascii_uppercase().replace('-', "_")
}

/// The variables for `kubernetes` and, unless the pod disabled service links, for `services`
/// (sorted by name; a service named `kubernetes` yields to the API server's link).
pub fn service_env(kubernetes: Option<&ServiceLink>, services: &[ServiceLink], links: bool) -> Vec<EnvVar> {
    let mut vars: Vec<EnvVar> = kubernetes.map(ServiceLink::env).unwrap_or_default();
    if links {
        let mut services: Vec<&ServiceLink> = services
            .iter()
            .filter(|s| kubernetes.is_none() || s.name != "kubernetes")
            .collect();
        services.sort_by(|a, b| a.name.cmp(&b.name));
        vars.extend(services.into_iter().flat_map(ServiceLink::env));
    }
    vars
}

/// Puts `vars` in front of the container's own variables, except those it defines itself: its
/// own values win, and its `$(VAR)` references can use the service variables, as with a kubelet.
pub fn add_env(container: &mut Container, vars: &[EnvVar]) {
    if vars.is_empty() {
        return;
    }
    let own = container.env.take().unwrap_or_default();
    let mut env: Vec<EnvVar> = vars
        .iter()
        .filter(|v| !own.iter().any(|o| o.name == v.name))
        .cloned()
        .collect();
    env.extend(own);
    container.env = Some(env);
}

/// The DNS configuration of a `ClusterFirst` pod of namespace `ns` resolving through the virtual
/// cluster's DNS server `server`: what a kubelet would write, plus the pod's own `dnsConfig`
/// (appended, its options overriding by name).
pub fn cluster_dns(ns: &str, server: &str, own: Option<&PodDNSConfig>) -> PodDNSConfig {
    let mut nameservers = vec![server.to_string()];
    nameservers.extend(own.iter().flat_map(|c| c.nameservers.iter().flatten()).cloned());
    nameservers.dedup();
    nameservers.truncate(MAX_NAMESERVERS);
    let mut searches = vec![
        format!("{ns}.svc.{CLUSTER_DOMAIN}"),
        format!("svc.{CLUSTER_DOMAIN}"),
        CLUSTER_DOMAIN.to_string(),
    ];
    searches.extend(own.iter().flat_map(|c| c.searches.iter().flatten()).cloned());
    searches.truncate(MAX_SEARCHES);
    let mut options = vec![PodDNSConfigOption {
        name: Some("ndots".into()),
        value: Some("5".into()),
    }];
    for option in own.iter().flat_map(|c| c.options.iter().flatten()) {
        options.retain(|o| o.name != option.name);
        options.push(option.clone());
    }
    PodDNSConfig {
        nameservers: Some(nameservers),
        searches: Some(searches),
        options: Some(options),
    }
}

/// Whether a pod with `dns_policy` and `host_network` resolves through the cluster's DNS, as a
/// kubelet decides: `ClusterFirst` (the default) unless on the host network, where only
/// `ClusterFirstWithHostNet` does.
pub fn uses_cluster_dns(dns_policy: Option<&str>, host_network: bool) -> bool {
    match dns_policy.unwrap_or("ClusterFirst") {
        "ClusterFirst" => !host_network,
        "ClusterFirstWithHostNet" => true,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use rstest::rstest;
    use serde_json::json;

    use super::*;

    fn names_and_values(vars: &[EnvVar]) -> Vec<(String, String)> {
        vars.iter()
            .map(|v| (v.name.clone(), v.value.clone().unwrap_or_default()))
            .collect()
    }

    #[test]
    fn kubelet_style_variables_of_a_service() {
        let service: Service = serde_json::from_value(json!({
            "metadata": {"name": "redis-primary"},
            "spec": {"clusterIP": "10.0.0.11", "ports": [
                {"name": "redis", "port": 6379, "protocol": "TCP"},
                {"name": "metrics", "port": 9121, "protocol": "UDP"}
            ]}
        }))
        .unwrap();
        let vars = ServiceLink::from_service(&service).unwrap().env();
        let expected = [
            ("REDIS_PRIMARY_SERVICE_HOST", "10.0.0.11"),
            ("REDIS_PRIMARY_SERVICE_PORT", "6379"),
            ("REDIS_PRIMARY_SERVICE_PORT_REDIS", "6379"),
            ("REDIS_PRIMARY_SERVICE_PORT_METRICS", "9121"),
            ("REDIS_PRIMARY_PORT", "tcp://10.0.0.11:6379"),
            ("REDIS_PRIMARY_PORT_6379_TCP", "tcp://10.0.0.11:6379"),
            ("REDIS_PRIMARY_PORT_6379_TCP_PROTO", "tcp"),
            ("REDIS_PRIMARY_PORT_6379_TCP_PORT", "6379"),
            ("REDIS_PRIMARY_PORT_6379_TCP_ADDR", "10.0.0.11"),
            ("REDIS_PRIMARY_PORT_9121_UDP", "udp://10.0.0.11:9121"),
            ("REDIS_PRIMARY_PORT_9121_UDP_PROTO", "udp"),
            ("REDIS_PRIMARY_PORT_9121_UDP_PORT", "9121"),
            ("REDIS_PRIMARY_PORT_9121_UDP_ADDR", "10.0.0.11"),
        ];
        let expected: Vec<(String, String)> = expected
            .iter()
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect();
        assert_eq!(names_and_values(&vars), expected);
    }

    #[rstest]
    #[case::headless(json!({"metadata": {"name": "h"}, "spec": {"clusterIP": "None", "ports": [{"port": 80}]}}))]
    #[case::external_name(json!({"metadata": {"name": "e"}, "spec": {"type": "ExternalName", "externalName": "x.example"}}))]
    #[case::no_ports(json!({"metadata": {"name": "n"}, "spec": {"clusterIP": "10.0.0.1"}}))]
    fn services_without_a_cluster_ip_or_ports_get_no_variables(#[case] service: serde_json::Value) {
        assert_eq!(
            ServiceLink::from_service(&serde_json::from_value(service).unwrap()),
            None
        );
    }

    #[test]
    fn ipv6_addresses_are_bracketed_in_urls() {
        let vars = ServiceLink::kubernetes("fd00::1", 443).env();
        assert!(names_and_values(&vars).contains(&("KUBERNETES_PORT".into(), "tcp://[fd00::1]:443".into())));
    }

    #[rstest]
    #[case::links(true, vec!["KUBERNETES_SERVICE_HOST", "A_SERVICE_HOST", "B_SERVICE_HOST"])]
    #[case::no_links(false, vec!["KUBERNETES_SERVICE_HOST"])]
    fn service_links_follow_enable_service_links(#[case] links: bool, #[case] hosts: Vec<&str>) {
        let link = |name: &str| ServiceLink {
            name: name.into(),
            host: "10.0.0.9".into(),
            ports: vec![LinkPort {
                name: None,
                port: 80,
                protocol: "TCP".into(),
            }],
        };
        let kubernetes = ServiceLink::kubernetes("10.0.0.1", 443);
        let vars = service_env(
            Some(&kubernetes),
            &[link("b"), link("kubernetes"), link("a")],
            links,
        );
        let got: Vec<&str> = vars
            .iter()
            .map(|v| v.name.as_str())
            .filter(|n| n.ends_with("_SERVICE_HOST"))
            .collect();
        assert_eq!(got, hosts);
        assert_eq!(vars[0].value.as_deref(), Some("10.0.0.1"));
    }

    #[test]
    fn container_variables_win_and_come_after_service_variables() {
        let mut container: Container = serde_json::from_value(json!({"name": "c", "env": [
            {"name": "KUBERNETES_SERVICE_HOST", "value": "mine"},
            {"name": "URL", "value": "http://$(KUBERNETES_SERVICE_PORT)"}
        ]}))
        .unwrap();
        add_env(&mut container, &ServiceLink::kubernetes("10.0.0.1", 443).env());
        let vars = names_and_values(container.env.as_ref().unwrap());
        assert_eq!(
            vars.iter()
                .filter(|(n, _)| n == "KUBERNETES_SERVICE_HOST")
                .collect::<Vec<_>>(),
            [&("KUBERNETES_SERVICE_HOST".to_string(), "mine".to_string())]
        );
        let port = vars
            .iter()
            .position(|(n, _)| n == "KUBERNETES_SERVICE_PORT")
            .unwrap();
        let url = vars.iter().position(|(n, _)| n == "URL").unwrap();
        assert!(port < url);
    }

    #[rstest]
    #[case::default(None, false, true)]
    #[case::cluster_first(Some("ClusterFirst"), false, true)]
    #[case::cluster_first_on_host_network(Some("ClusterFirst"), true, false)]
    #[case::with_host_net(Some("ClusterFirstWithHostNet"), true, true)]
    #[case::default_policy(Some("Default"), false, false)]
    #[case::none(Some("None"), false, false)]
    fn cluster_dns_policy(#[case] policy: Option<&str>, #[case] host_network: bool, #[case] expected: bool) {
        assert_eq!(uses_cluster_dns(policy, host_network), expected);
    }

    #[test]
    fn dns_config_merges_the_pods_own() {
        let own = PodDNSConfig {
            nameservers: Some(vec!["1.1.1.1".into()]),
            searches: Some(vec!["corp.example".into()]),
            options: Some(vec![
                PodDNSConfigOption {
                    name: Some("ndots".into()),
                    value: Some("2".into()),
                },
                PodDNSConfigOption {
                    name: Some("edns0".into()),
                    value: None,
                },
            ]),
        };
        let config = cluster_dns("team", "10.0.0.10", Some(&own));
        assert_eq!(
            serde_json::to_value(config).unwrap(),
            json!({
                "nameservers": ["10.0.0.10", "1.1.1.1"],
                "searches": ["team.svc.cluster.local", "svc.cluster.local", "cluster.local", "corp.example"],
                "options": [{"name": "ndots", "value": "2"}, {"name": "edns0"}]
            })
        );
    }
}
