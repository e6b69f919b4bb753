//! Pure translation of Services and Endpoints between the virtual cluster and the host.
//!
//! Down: the virtual spec, with the selector translated so it selects the same pods on the
//! host. The host allocates cluster IPs and node ports; they come back up (the virtual API
//! server must run with the host's service CIDR, as vcluster requires too). Fields the host
//! API server defaults (IP families, traffic policies, ...) are taken from the observed host
//! object unless the tenant set them, so defaults never look like drift.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    EndpointAddress, EndpointSubset, Endpoints, ObjectReference, Service, ServicePort, ServiceSpec,
};
use vcsync_translators::{NameTranslator, VirtualKey, host_map_selector};

/// The host spec a virtual service should have, given the host object observed (if any).
pub fn desired_host_spec(
    translator: &dyn NameTranslator,
    virt: &Service,
    host: Option<&ServiceSpec>,
) -> ServiceSpec {
    let vspec = virt.spec.clone().unwrap_or_default();
    let vns = virt.metadata.namespace.as_deref().unwrap_or_default();
    let mut spec = host.cloned().unwrap_or_default();
    spec.type_ = vspec.type_.clone().or(spec.type_);
    spec.selector = vspec
        .selector
        .as_ref()
        .map(|sel| host_map_selector(translator.ownership(), vns, sel));
    spec.ports = vspec.ports.as_ref().map(|ports| {
        ports
            .iter()
            .map(|port| host_port(port, host.and_then(|h| h.ports.as_deref())))
            .collect()
    });
    spec.session_affinity = vspec.session_affinity.clone().or(spec.session_affinity);
    spec.session_affinity_config = vspec.session_affinity_config.clone();
    spec.external_name = vspec.external_name.clone();
    spec.external_ips = vspec.external_ips.clone();
    spec.load_balancer_source_ranges = vspec.load_balancer_source_ranges.clone();
    spec.load_balancer_class = vspec.load_balancer_class.clone().or(spec.load_balancer_class);
    spec.publish_not_ready_addresses = vspec
        .publish_not_ready_addresses
        .or(spec.publish_not_ready_addresses);
    spec.external_traffic_policy = vspec
        .external_traffic_policy
        .clone()
        .or(spec.external_traffic_policy);
    spec.internal_traffic_policy = vspec
        .internal_traffic_policy
        .clone()
        .or(spec.internal_traffic_policy);
    spec.allocate_load_balancer_node_ports = vspec
        .allocate_load_balancer_node_ports
        .or(spec.allocate_load_balancer_node_ports);
    if host.is_none() {
        // Headless stays headless; any other IP is the host's to allocate.
        let headless = vspec.cluster_ip.as_deref() == Some("None");
        spec.cluster_ip = headless.then(|| "None".to_string());
        spec.cluster_ips = headless.then(|| vec!["None".to_string()]);
        spec.ip_families = vspec.ip_families.clone();
        spec.ip_family_policy = vspec.ip_family_policy.clone();
    }
    spec
}

/// A virtual port for the host: the node port is the host's (kept when already allocated).
fn host_port(port: &ServicePort, host_ports: Option<&[ServicePort]>) -> ServicePort {
    let node_port = host_ports
        .and_then(|ports| ports.iter().find(|h| same_port(h, port)))
        .and_then(|h| h.node_port);
    ServicePort {
        node_port,
        ..port.clone()
    }
}

fn same_port(a: &ServicePort, b: &ServicePort) -> bool {
    a.port == b.port && a.protocol.as_deref().unwrap_or("TCP") == b.protocol.as_deref().unwrap_or("TCP")
}

/// The virtual ports with the node ports the host allocated, or None when they already match.
pub fn node_ports_up(virt: &ServiceSpec, host: &ServiceSpec) -> Option<Vec<ServicePort>> {
    let (vports, hports) = (virt.ports.as_deref()?, host.ports.as_deref()?);
    let updated: Vec<ServicePort> = vports
        .iter()
        .map(|vp| {
            let node_port = hports
                .iter()
                .find(|hp| same_port(hp, vp))
                .and_then(|hp| hp.node_port);
            ServicePort {
                node_port: node_port.or(vp.node_port),
                ..vp.clone()
            }
        })
        .collect();
    (updated.as_slice() != vports).then_some(updated)
}

/// Whether the virtual service must be recreated to carry the host's cluster IPs (the field
/// is immutable). Headless services and services the host has not allocated yet never are.
pub fn needs_host_cluster_ip(virt: &ServiceSpec, host: &ServiceSpec) -> bool {
    let host_ip = host.cluster_ip.as_deref().unwrap_or_default();
    !host_ip.is_empty() && host_ip != "None" && virt.cluster_ip.as_deref() != Some(host_ip)
}

/// `up` (the virtual ports with the host's node ports, from [`node_ports_up`]) with the node
/// ports that `held` says another virtual service holds put back to the virtual port's own
/// (`own`, in the same order): the virtual API server would refuse them. Also whether any was.
pub fn without_held_node_ports(
    mut up: Vec<ServicePort>,
    own: &[ServicePort],
    held: impl Fn(i32) -> bool,
) -> (Vec<ServicePort>, bool) {
    let mut any = false;
    for (port, own) in up.iter_mut().zip(own) {
        if port.node_port != own.node_port && port.node_port.is_some_and(&held) {
            port.node_port = own.node_port;
            any = true;
        }
    }
    (up, any)
}

/// A copy of the virtual service, as it will be recreated: same name, labels, annotations and
/// spec, with the host's cluster IPs and node ports; a node port that `held` says another virtual
/// service holds stays the virtual service's own until that one lets it go.
pub fn recreated_virtual_service(virt: &Service, host: &ServiceSpec, held: impl Fn(i32) -> bool) -> Service {
    let mut spec = virt.spec.clone().unwrap_or_default();
    spec.cluster_ip = host.cluster_ip.clone();
    spec.cluster_ips = host.cluster_ips.clone();
    if let Some(ports) = node_ports_up(&spec, host) {
        let own = spec.ports.clone().unwrap_or_default();
        spec.ports = Some(without_held_node_ports(ports, &own, held).0);
    }
    let meta = &virt.metadata;
    Service {
        metadata: k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
            name: meta.name.clone(),
            namespace: meta.namespace.clone(),
            labels: meta.labels.clone(),
            annotations: meta.annotations.clone(),
            owner_references: meta.owner_references.clone(),
            finalizers: meta.finalizers.clone(),
            ..Default::default()
        },
        spec: Some(spec),
        status: None,
    }
}

/// Host Endpoints of a selector service, translated up: same addresses and ports, pod
/// references pointing at the virtual pods. `virtual_pod` maps a host pod name to its virtual
/// key (None for pods that are not this instance's; their addresses are dropped).
pub fn virtual_endpoints_subsets(
    host: &Endpoints,
    virtual_pod: impl Fn(&str) -> Option<VirtualKey>,
) -> Option<Vec<EndpointSubset>> {
    let translate = |addresses: &Option<Vec<EndpointAddress>>| -> Option<Vec<EndpointAddress>> {
        let translated: Vec<EndpointAddress> = addresses
            .iter()
            .flatten()
            .filter_map(|address| {
                let mut address = address.clone();
                pod_reference_up(address.target_ref.as_mut(), &virtual_pod).then_some(address)
            })
            .collect();
        (!translated.is_empty()).then_some(translated)
    };
    let subsets: Vec<EndpointSubset> = host
        .subsets
        .iter()
        .flatten()
        .map(|subset| EndpointSubset {
            addresses: translate(&subset.addresses),
            not_ready_addresses: translate(&subset.not_ready_addresses),
            ports: subset.ports.clone(),
        })
        .filter(|subset| subset.addresses.is_some() || subset.not_ready_addresses.is_some())
        .collect();
    (!subsets.is_empty()).then_some(subsets)
}

/// Points a host pod reference at the virtual pod it stands for. False when the pod is not
/// this instance's (the caller drops the address); references to other kinds are kept.
pub fn pod_reference_up(
    target: Option<&mut ObjectReference>,
    virtual_pod: &impl Fn(&str) -> Option<VirtualKey>,
) -> bool {
    let Some(target) = target.filter(|t| t.kind.as_deref() == Some("Pod")) else {
        return true;
    };
    let Some(key) = target.name.as_deref().and_then(virtual_pod) else {
        return false;
    };
    target.name = Some(key.name);
    target.namespace = key.namespace;
    target.uid = None;
    target.resource_version = None;
    true
}

/// Labels of a mirrored virtual Endpoints object: the service's labels and a marker that says
/// vcsync maintains it.
pub fn mirrored_endpoints_labels(service: &Service) -> BTreeMap<String, String> {
    let mut labels = service.metadata.labels.clone().unwrap_or_default();
    labels.retain(|key, _| !vcsync_translators::is_reserved_key(key));
    labels.insert(MIRRORED_LABEL.to_string(), "true".to_string());
    labels
}

/// Marks virtual Endpoints that vcsync mirrors up from the host.
pub const MIRRORED_LABEL: &str = "vcsync.dev/mirrored";

#[cfg(test)]
mod tests {
    use serde_json::json;
    use vcsync_translators::{MANAGED_BY_LABEL, NAMESPACE_LABEL, NamespacedTranslator, Ownership};

    use super::*;

    fn translator() -> NamespacedTranslator {
        NamespacedTranslator::new(Ownership::new("t").unwrap(), "host")
    }

    fn service(value: serde_json::Value) -> Service {
        serde_json::from_value(value).unwrap()
    }

    #[test]
    fn new_host_service_gets_a_translated_selector_and_no_cluster_ip() {
        let virt = service(json!({"metadata": {"name": "web", "namespace": "shop"},
            "spec": {"selector": {"app": "web"}, "clusterIP": "10.96.0.9", "ports": [{"port": 80, "nodePort": 30001}]}}));
        let spec = desired_host_spec(&translator(), &virt, None);
        let selector = spec.selector.unwrap();
        assert_eq!(selector["app"], "web");
        assert_eq!(selector[NAMESPACE_LABEL], "shop");
        assert_eq!(selector[MANAGED_BY_LABEL], "t");
        assert_eq!(spec.cluster_ip, None);
        assert_eq!(
            spec.ports.unwrap()[0].node_port,
            None,
            "node ports are the host's to allocate"
        );
    }

    #[test]
    fn headless_stays_headless() {
        let virt =
            service(json!({"metadata": {"name": "db", "namespace": "n"}, "spec": {"clusterIP": "None"}}));
        assert_eq!(
            desired_host_spec(&translator(), &virt, None)
                .cluster_ip
                .as_deref(),
            Some("None")
        );
    }

    #[test]
    fn host_defaults_and_allocations_are_not_drift() {
        let virt = service(json!({"metadata": {"name": "web", "namespace": "n"},
            "spec": {"type": "NodePort", "selector": {"app": "web"}, "ports": [{"port": 80}]}}));
        let first = desired_host_spec(&translator(), &virt, None);
        let mut observed = first.clone();
        observed.cluster_ip = Some("10.96.0.20".into());
        observed.cluster_ips = Some(vec!["10.96.0.20".into()]);
        observed.ip_families = Some(vec!["IPv4".into()]);
        observed.session_affinity = Some("None".into());
        observed.external_traffic_policy = Some("Cluster".into());
        observed.ports.as_mut().unwrap()[0].node_port = Some(31000);
        assert_eq!(desired_host_spec(&translator(), &virt, Some(&observed)), observed);
    }

    #[test]
    fn node_ports_come_up_once() {
        let virt = ServiceSpec {
            ports: Some(vec![ServicePort {
                port: 80,
                ..Default::default()
            }]),
            ..Default::default()
        };
        let host = ServiceSpec {
            ports: Some(vec![ServicePort {
                port: 80,
                node_port: Some(31111),
                ..Default::default()
            }]),
            ..Default::default()
        };
        let up = node_ports_up(&virt, &host).unwrap();
        assert_eq!(up[0].node_port, Some(31111));
        let synced = ServiceSpec {
            ports: Some(up),
            ..Default::default()
        };
        assert_eq!(node_ports_up(&synced, &host), None);
    }

    /// Two services whose node ports the two servers allocated the other way round (or a
    /// virtual service that keeps its own node port, its type refused on the host): the virtual
    /// server would refuse the recreate with the host's, and the cluster IP would not come up.
    #[test]
    fn a_node_port_another_virtual_service_holds_stays_the_virtual_ones_own() {
        let virt = service(json!({"metadata": {"name": "web", "namespace": "n"},
            "spec": {"type": "NodePort", "clusterIP": "10.96.0.9",
                "ports": [{"port": 80, "nodePort": 30001}, {"port": 443, "nodePort": 30002}]}}));
        let host: ServiceSpec = serde_json::from_value(json!({"type": "NodePort", "clusterIP": "10.96.0.20",
            "clusterIPs": ["10.96.0.20"],
            "ports": [{"port": 80, "nodePort": 31000}, {"port": 443, "nodePort": 31001}]}))
        .unwrap();
        let recreated = recreated_virtual_service(&virt, &host, |port| port == 31001);
        let spec = recreated.spec.unwrap();
        assert_eq!(spec.cluster_ip.as_deref(), Some("10.96.0.20"));
        let node_ports: Vec<_> = spec.ports.iter().flatten().map(|p| p.node_port).collect();
        assert_eq!(node_ports, [Some(31000), Some(30002)]);

        let all_free = recreated_virtual_service(&virt, &host, |_| false).spec.unwrap();
        let node_ports: Vec<_> = all_free.ports.iter().flatten().map(|p| p.node_port).collect();
        assert_eq!(node_ports, [Some(31000), Some(31001)]);
    }

    #[test]
    fn cluster_ip_adoption_only_when_the_host_has_a_different_one() {
        let spec = |ip: Option<&str>| ServiceSpec {
            cluster_ip: ip.map(str::to_string),
            ..Default::default()
        };
        assert!(needs_host_cluster_ip(
            &spec(Some("10.0.0.1")),
            &spec(Some("10.0.0.2"))
        ));
        assert!(!needs_host_cluster_ip(
            &spec(Some("10.0.0.2")),
            &spec(Some("10.0.0.2"))
        ));
        assert!(!needs_host_cluster_ip(&spec(Some("None")), &spec(Some("None"))));
        assert!(!needs_host_cluster_ip(&spec(Some("10.0.0.1")), &spec(None)));
    }

    #[test]
    fn endpoints_point_at_virtual_pods_and_foreign_addresses_are_dropped() {
        let address = |ip: &str, pod: &str| EndpointAddress {
            ip: ip.into(),
            target_ref: Some(ObjectReference {
                kind: Some("Pod".into()),
                name: Some(pod.into()),
                namespace: Some("host".into()),
                uid: Some("host-uid".into()),
                ..Default::default()
            }),
            ..Default::default()
        };
        let host = Endpoints {
            subsets: Some(vec![EndpointSubset {
                addresses: Some(vec![
                    address("10.244.0.1", "web-x-shop"),
                    address("10.244.0.2", "foreign"),
                ]),
                ..Default::default()
            }]),
            ..Default::default()
        };
        let subsets = virtual_endpoints_subsets(&host, |name| {
            (name == "web-x-shop").then(|| VirtualKey::namespaced("shop", "web"))
        })
        .unwrap();
        let addresses = subsets[0].addresses.as_ref().unwrap();
        assert_eq!(addresses.len(), 1);
        let target = addresses[0].target_ref.as_ref().unwrap();
        assert_eq!(
            (
                target.name.as_deref(),
                target.namespace.as_deref(),
                target.uid.as_ref()
            ),
            (Some("web"), Some("shop"), None)
        );
    }
}
