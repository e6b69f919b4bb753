//! How the virtual API server is reached from outside the host namespace (`controlPlane.service`,
//! `controlPlane.ingress`, `controlPlane.extraSans`): the Service's type and annotations, an
//! optional Ingress passing TLS through, and the names the serving certificate holds. The
//! chart renders the same (`deploy/chart/vcsync/templates/config.yaml`, `expose.yaml`).

use std::collections::BTreeMap;

use k8s_openapi::{
    api::core::v1::{Service, ServicePort, ServiceSpec},
    apimachinery::pkg::util::intstr::IntOrString,
};
use kube::api::ObjectMeta;
use serde_json::{Value, json};

use crate::cluster::{ClusterError, Values};

use super::names::{SERVICE_PORT, base_name, labels, selector_labels};

/// The Service types the values may name.
pub const SERVICE_TYPES: [&str; 3] = ["ClusterIP", "NodePort", "LoadBalancer"];

/// Annotations of the Ingress unless the values override them: ingress-nginx passes TLS
/// through to the API server (which needs the controller's `--enable-ssl-passthrough`).
pub const INGRESS_ANNOTATIONS: &[(&str, &str)] = &[
    ("nginx.ingress.kubernetes.io/backend-protocol", "HTTPS"),
    ("nginx.ingress.kubernetes.io/ssl-passthrough", "true"),
];

/// Checks the values of this module: a known Service type, a node port only where one is
/// opened, an Ingress with a host, certificate names that are names or addresses.
pub(super) fn check(values: &Values) -> Result<(), ClusterError> {
    let bad = |message: String| Err(ClusterError::BadInput(message));
    let service = &values.control_plane.service;
    let service_type = service.type_.as_deref().unwrap_or("ClusterIP");
    if !SERVICE_TYPES.contains(&service_type) {
        return bad(format!(
            "controlPlane.service.type: {service_type:?} is not one of {}",
            SERVICE_TYPES.join(", ")
        ));
    }
    if service.node_port.is_some() && service_type == "ClusterIP" {
        return bad("controlPlane.service.nodePort needs type NodePort or LoadBalancer".into());
    }
    let ingress = &values.control_plane.ingress;
    if ingress.enabled.unwrap_or(false) && ingress.host.as_deref().unwrap_or_default().is_empty() {
        return bad("controlPlane.ingress.enabled needs controlPlane.ingress.host".into());
    }
    for san in certificate_names(values) {
        let name_or_address = !san.is_empty()
            && san
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b':' | b'*'));
        if !name_or_address {
            return bad(format!(
                "controlPlane.extraSans: {san:?} is not a DNS name or an IP address"
            ));
        }
    }
    Ok(())
}

/// The names the serving certificate holds besides the Service's own: `extraSans`, then the
/// Ingress's host.
pub(super) fn certificate_names(values: &Values) -> Vec<String> {
    let mut names = values.control_plane.extra_sans.clone();
    let ingress = &values.control_plane.ingress;
    if ingress.enabled.unwrap_or(false)
        && let Some(host) = ingress.host.as_ref().filter(|h| !h.is_empty())
        && !names.contains(host)
    {
        names.push(host.clone());
    }
    names
}

/// The Service in front of the control plane (port 443 to k3s's 6443).
pub(super) fn api_service(name: &str, ns: &str, values: &Values) -> Service {
    let service = &values.control_plane.service;
    Service {
        metadata: ObjectMeta {
            name: Some(base_name(name)),
            namespace: Some(ns.into()),
            labels: Some(labels(name)),
            annotations: (!service.annotations.is_empty()).then(|| service.annotations.clone()),
            ..Default::default()
        },
        spec: Some(ServiceSpec {
            type_: Some(service.type_.clone().unwrap_or_else(|| "ClusterIP".into())),
            selector: Some(selector_labels(name)),
            ports: Some(vec![ServicePort {
                name: Some("https".into()),
                port: SERVICE_PORT.into(),
                target_port: Some(IntOrString::Int(6443)),
                protocol: Some("TCP".into()),
                node_port: service.node_port,
                ..Default::default()
            }]),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// The Ingress in front of the control plane, when the values enable it.
pub(super) fn api_ingress(name: &str, ns: &str, values: &Values) -> Option<Value> {
    let ingress = &values.control_plane.ingress;
    if !ingress.enabled.unwrap_or(false) {
        return None;
    }
    let mut annotations: BTreeMap<String, String> = INGRESS_ANNOTATIONS
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    annotations.extend(ingress.annotations.clone());
    let mut spec = json!({
        "rules": [{
            "host": ingress.host,
            "http": { "paths": [{
                "path": "/",
                "pathType": "ImplementationSpecific",
                "backend": { "service": { "name": base_name(name), "port": { "number": SERVICE_PORT } } },
            }]},
        }],
    });
    if let Some(class) = ingress.ingress_class_name.as_ref().filter(|c| !c.is_empty()) {
        spec["ingressClassName"] = json!(class);
    }
    Some(json!({
        "apiVersion": "networking.k8s.io/v1",
        "kind": "Ingress",
        "metadata": {
            "name": base_name(name),
            "namespace": ns,
            "labels": labels(name),
            "annotations": annotations,
        },
        "spec": spec,
    }))
}

/// Where a client outside the host cluster reaches the API server, by the values and the
/// Service as the host reports it.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Reach {
    /// `https://<host>` through the Ingress (the host is in the certificate, and TLS must
    /// carry it as the server name for the ingress controller to route).
    Ingress(String),
    /// The load balancer's address, port 443.
    LoadBalancer(String),
    /// A node's address, at this node port.
    NodePort(i32),
    /// Only from inside the host cluster (a ClusterIP Service, or a load balancer with neither
    /// an address nor a node port yet).
    InCluster,
}

pub(super) fn reach(values: Option<&Values>, service: Option<&Service>) -> Reach {
    if let Some(host) = values
        .map(|v| &v.control_plane.ingress)
        .filter(|ingress| ingress.enabled.unwrap_or(false))
        .and_then(|ingress| ingress.host.clone())
        .filter(|host| !host.is_empty())
    {
        return Reach::Ingress(host);
    }
    let Some(service) = service else {
        return Reach::InCluster;
    };
    let balancer = service
        .status
        .as_ref()
        .and_then(|s| s.load_balancer.as_ref()?.ingress.as_ref()?.first().cloned())
        .and_then(|ingress| ingress.ip.or(ingress.hostname));
    let spec = service.spec.as_ref();
    let service_type = spec.and_then(|s| s.type_.as_deref()).unwrap_or("ClusterIP");
    let node_port = spec
        .and_then(|s| s.ports.as_ref()?.first()?.node_port)
        .filter(|_| service_type != "ClusterIP");
    match (balancer, node_port) {
        (Some(address), _) if service_type == "LoadBalancer" => Reach::LoadBalancer(address),
        (_, Some(port)) => Reach::NodePort(port),
        _ => Reach::InCluster,
    }
}

/// The address clients reach a node at: the first ready node's ExternalIP, else its
/// InternalIP (a kind or minikube host has only that).
pub(super) fn node_address(nodes: &[k8s_openapi::api::core::v1::Node]) -> Option<String> {
    let ready = |node: &&k8s_openapi::api::core::v1::Node| {
        node.status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
    };
    let addresses = |node: &k8s_openapi::api::core::v1::Node| {
        node.status
            .as_ref()
            .and_then(|s| s.addresses.clone())
            .unwrap_or_default()
    };
    let node = nodes.iter().find(ready).or(nodes.first())?;
    let addresses = addresses(node);
    ["ExternalIP", "InternalIP"]
        .iter()
        .find_map(|kind| addresses.iter().find(|a| a.type_ == *kind))
        .map(|a| a.address.clone())
}

/// `https://host:port`, an IPv6 address in brackets.
pub(super) fn https_url(host: &str, port: i32) -> String {
    if host.contains(':') {
        format!("https://[{host}]:{port}")
    } else {
        format!("https://{host}:{port}")
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::{core::v1::Node, networking::v1::Ingress};

    use super::*;

    fn values(yaml: &str) -> Values {
        Values::parse(yaml, "values.yaml").unwrap()
    }

    #[test]
    fn the_service_takes_its_type_annotations_and_node_port() {
        let service = api_service("demo", "ns", &values(""));
        assert_eq!(service.spec.as_ref().unwrap().type_.as_deref(), Some("ClusterIP"));
        assert!(service.metadata.annotations.is_none());
        let v = values(
            "controlPlane:\n  service:\n    type: NodePort\n    nodePort: 31443\n    annotations: {a.example/x: y}\n",
        );
        check(&v).unwrap();
        let service = api_service("demo", "ns", &v);
        let spec = service.spec.unwrap();
        assert_eq!(spec.type_.as_deref(), Some("NodePort"));
        assert_eq!(spec.ports.unwrap()[0].node_port, Some(31443));
        assert_eq!(service.metadata.annotations.unwrap()["a.example/x"], "y");
    }

    #[test]
    fn bad_exposure_values_are_refused_with_the_key_that_is_wrong() {
        for (yaml, key) in [
            (
                "controlPlane:\n  service: {type: External}\n",
                "controlPlane.service.type",
            ),
            (
                "controlPlane:\n  service: {nodePort: 31000}\n",
                "controlPlane.service.nodePort",
            ),
            (
                "controlPlane:\n  ingress: {enabled: true}\n",
                "controlPlane.ingress.host",
            ),
            (
                "controlPlane:\n  extraSans: [\"a b\"]\n",
                "controlPlane.extraSans",
            ),
            (
                "controlPlane:\n  extraSans: [\"x';rm -rf /'\"]\n",
                "controlPlane.extraSans",
            ),
        ] {
            let err = check(&values(yaml)).unwrap_err();
            assert!(err.to_string().contains(key), "{yaml}: {err}");
            assert_eq!(err.exit_code(), crate::cluster::exit::BAD_INPUT);
        }
    }

    #[test]
    fn the_ingress_passes_tls_through_to_the_service_and_its_host_joins_the_certificate() {
        assert!(api_ingress("demo", "ns", &values("")).is_none());
        let v = values(
            "controlPlane:\n  extraSans: [1.2.3.4]\n  ingress:\n    enabled: true\n    host: demo.example.com\n    \
             ingressClassName: nginx\n    annotations: {nginx.ingress.kubernetes.io/backend-protocol: HTTPS, x/y: z}\n",
        );
        check(&v).unwrap();
        let ingress: Ingress = serde_json::from_value(api_ingress("demo", "ns", &v).unwrap()).unwrap();
        let annotations = ingress.metadata.annotations.unwrap();
        assert_eq!(annotations["nginx.ingress.kubernetes.io/ssl-passthrough"], "true");
        assert_eq!(annotations["x/y"], "z");
        let spec = ingress.spec.unwrap();
        assert_eq!(spec.ingress_class_name.as_deref(), Some("nginx"));
        let rule = &spec.rules.unwrap()[0];
        assert_eq!(rule.host.as_deref(), Some("demo.example.com"));
        let backend = rule.http.as_ref().unwrap().paths[0]
            .backend
            .service
            .clone()
            .unwrap();
        assert_eq!(
            (backend.name.as_str(), backend.port.unwrap().number),
            ("vcsync-demo", Some(443))
        );
        assert_eq!(certificate_names(&v), ["1.2.3.4", "demo.example.com"]);
    }

    fn service(yaml: &str) -> Service {
        serde_yaml_ng::from_str(yaml).unwrap()
    }

    #[test]
    fn clients_outside_reach_the_ingress_the_balancer_or_a_node_port_else_only_the_cluster() {
        let ingress = values("controlPlane:\n  ingress: {enabled: true, host: demo.example.com}\n");
        assert_eq!(
            reach(Some(&ingress), None),
            Reach::Ingress("demo.example.com".into())
        );
        let balancer = service(
            "spec: {type: LoadBalancer, ports: [{port: 443, nodePort: 31443}]}\n\
             status: {loadBalancer: {ingress: [{ip: 203.0.113.7}]}}\n",
        );
        assert_eq!(
            reach(Some(&values("")), Some(&balancer)),
            Reach::LoadBalancer("203.0.113.7".into())
        );
        let pending = service("spec: {type: LoadBalancer, ports: [{port: 443, nodePort: 31443}]}\n");
        assert_eq!(
            reach(None, Some(&pending)),
            Reach::NodePort(31443),
            "no address yet: the node port"
        );
        let node_port = service("spec: {type: NodePort, ports: [{port: 443, nodePort: 30001}]}\n");
        assert_eq!(reach(None, Some(&node_port)), Reach::NodePort(30001));
        let cluster_ip = service("spec: {type: ClusterIP, ports: [{port: 443}]}\n");
        assert_eq!(reach(None, Some(&cluster_ip)), Reach::InCluster);
        assert_eq!(reach(None, None), Reach::InCluster);
    }

    #[test]
    fn a_node_is_reached_at_its_external_address_else_its_internal_one_ready_nodes_first() {
        let nodes: Vec<Node> = serde_yaml_ng::from_str(
            "- status: {conditions: [{type: Ready, status: \"False\"}], addresses: [{type: ExternalIP, address: 198.51.100.1}]}\n\
             - status: {conditions: [{type: Ready, status: \"True\"}], addresses: [{type: InternalIP, address: 10.0.0.2}]}\n",
        )
        .unwrap();
        assert_eq!(node_address(&nodes).as_deref(), Some("10.0.0.2"));
        assert_eq!(node_address(&[]), None);
        assert_eq!(https_url("10.0.0.2", 30001), "https://10.0.0.2:30001");
        assert_eq!(https_url("fd00::2", 443), "https://[fd00::2]:443");
    }
}
