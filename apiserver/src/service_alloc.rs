//! Cluster-IP and node-port allocation for Services.

use std::collections::HashSet;
use std::net::Ipv4Addr;

use serde_json::{Value, json};

use crate::ip_pool::IpPool;

/// Allocates cluster IPs from the service CIDR and node ports from 30000-32767.
#[derive(Debug)]
pub(crate) struct ServiceAllocator {
    ips: IpPool,
    next_port: u16,
    ports: HashSet<u16>,
}

const NODE_PORTS: std::ops::RangeInclusive<u16> = 30000..=32767;

impl ServiceAllocator {
    /// An allocator for `cidr` (IPv4, such as `10.96.0.0/12`).
    pub fn new(cidr: &str) -> Result<Self, String> {
        Ok(ServiceAllocator {
            ips: IpPool::new(cidr)?,
            next_port: 30000,
            ports: HashSet::new(),
        })
    }

    /// A requested cluster IP, parsed and checked against the service CIDR.
    fn requested_ip(&self, ip: &str) -> Result<Ipv4Addr, String> {
        let parsed: Ipv4Addr = ip
            .parse()
            .map_err(|_| format!("{ip:?} is not a valid IPv4 address"))?;
        if !self.ips.contains(parsed) {
            return Err(format!("the provided IP ({parsed}) is not in the valid range"));
        }
        Ok(parsed)
    }

    fn allocate_port(&mut self) -> Option<u16> {
        for _ in NODE_PORTS {
            let port = self.next_port;
            self.next_port = if port >= *NODE_PORTS.end() {
                *NODE_PORTS.start()
            } else {
                port + 1
            };
            if self.ports.insert(port) {
                return Some(port);
            }
        }
        None
    }

    /// Fills `spec.clusterIP(s)` and node ports of a Service being written. `old` is the stored
    /// Service on update, whose addresses are kept (they are immutable) and whose node ports are
    /// released when the update drops them. Returns a field error; nothing is allocated then.
    pub fn assign(&mut self, service: &mut Value, old: Option<&Value>) -> Result<(), String> {
        let kind = service["spec"]["type"]
            .as_str()
            .unwrap_or("ClusterIP")
            .to_string();
        let old_ports: HashSet<u16> = old.map(node_ports).unwrap_or_default();
        let wants_node_ports = kind == "NodePort"
            || (kind == "LoadBalancer" && service["spec"]["allocateLoadBalancerNodePorts"] != false);
        if matches!(kind.as_str(), "ClusterIP" | "ExternalName") {
            // As Kubernetes drops type-dependent fields when the type changes away from NodePort.
            for port in service["spec"]["ports"].as_array_mut().into_iter().flatten() {
                if let Some(port) = port.as_object_mut() {
                    port.remove("nodePort");
                }
            }
        }
        self.check_node_ports(&service["spec"], &old_ports)?;
        self.assign_cluster_ip(&mut service["spec"], &kind, old)?;
        let spec = &mut service["spec"];
        let previous_ports = old
            .and_then(|o| o["spec"]["ports"].as_array())
            .cloned()
            .unwrap_or_default();
        let mut kept = HashSet::new();
        for port in spec["ports"].as_array_mut().into_iter().flatten() {
            if let Some(n) = port_number(&port["nodePort"]) {
                self.ports.insert(n);
                kept.insert(n);
                continue;
            }
            if !wants_node_ports {
                continue;
            }
            let previous = previous_ports
                .iter()
                .find(|p| p["port"] == port["port"])
                .and_then(|p| port_number(&p["nodePort"]))
                .filter(|n| !kept.contains(n));
            let n = match previous {
                Some(n) => n,
                None => self
                    .allocate_port()
                    .ok_or("spec.ports: Internal error: the node port range is full")?,
            };
            port["nodePort"] = json!(n);
            kept.insert(n);
        }
        for released in old_ports.difference(&kept) {
            self.ports.remove(released);
        }
        Ok(())
    }

    /// Explicit node ports must be in range and not held by another Service.
    fn check_node_ports(&self, spec: &Value, old_ports: &HashSet<u16>) -> Result<(), String> {
        for (i, port) in spec["ports"].as_array().into_iter().flatten().enumerate() {
            let value = &port["nodePort"];
            if value.is_null() {
                continue;
            }
            let n = port_number(value)
                .filter(|n| NODE_PORTS.contains(n))
                .ok_or_else(|| {
                    format!(
                        "spec.ports[{i}].nodePort: Invalid value: {value}: provided port is not in the valid \
                     range. The range of valid ports is {}-{}",
                        NODE_PORTS.start(),
                        NODE_PORTS.end()
                    )
                })?;
            if self.ports.contains(&n) && !old_ports.contains(&n) {
                return Err(format!(
                    "spec.ports[{i}].nodePort: Invalid value: {n}: provided port is already allocated"
                ));
            }
        }
        Ok(())
    }

    fn assign_cluster_ip(&mut self, spec: &mut Value, kind: &str, old: Option<&Value>) -> Result<(), String> {
        let old_ip = old
            .and_then(|o| o["spec"]["clusterIP"].as_str())
            .map(str::to_string);
        let requested = spec["clusterIP"]
            .as_str()
            .filter(|s| !s.is_empty())
            .map(str::to_string);
        match (old_ip, requested) {
            (Some(old_ip), Some(new_ip)) if old_ip != new_ip => {
                return Err(format!(
                    "spec.clusterIP: Invalid value: \"{new_ip}\": field is immutable"
                ));
            }
            (Some(old_ip), _) => spec["clusterIP"] = json!(old_ip),
            (None, _) if kind == "ExternalName" => {}
            (None, Some(ip)) if ip == "None" => {}
            (None, Some(ip)) => {
                let requested = self
                    .requested_ip(&ip)
                    .map_err(|e| format!("spec.clusterIP: Invalid value: \"{ip}\": {e}"))?;
                if !self.ips.reserve(requested) {
                    return Err(format!(
                        "spec.clusterIP: Invalid value: \"{ip}\": provided IP is already allocated"
                    ));
                }
            }
            (None, None) => {
                let ip = self
                    .ips
                    .allocate()
                    .ok_or("spec.clusterIP: Internal error: range is full")?;
                spec["clusterIP"] = json!(ip.to_string());
            }
        }
        if let Some(ip) = spec["clusterIP"].as_str().map(str::to_string) {
            spec["clusterIPs"] = json!([ip]);
        }
        Ok(())
    }

    /// Marks the cluster IP and node ports of a stored Service (loaded from persisted state) as
    /// taken; false when one of them was outside the ranges or already taken.
    pub fn restore(&mut self, service: &Value) -> bool {
        let mut ok = true;
        if let Some(ip) = service["spec"]["clusterIP"]
            .as_str()
            .filter(|ip| !ip.is_empty() && *ip != "None")
        {
            ok &= ip.parse().is_ok_and(|ip| self.ips.reserve(ip));
        }
        for n in node_ports(service) {
            ok &= NODE_PORTS.contains(&n) && self.ports.insert(n);
        }
        ok
    }

    /// Frees the addresses of a deleted Service.
    pub fn release(&mut self, service: &Value) {
        if let Some(ip) = service["spec"]["clusterIP"].as_str()
            && let Ok(ip) = ip.parse::<Ipv4Addr>()
        {
            self.ips.release(ip);
        }
        for n in node_ports(service) {
            self.ports.remove(&n);
        }
    }
}

/// The node ports a Service holds.
fn node_ports(service: &Value) -> HashSet<u16> {
    service["spec"]["ports"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|p| port_number(&p["nodePort"]))
        .collect()
}

fn port_number(value: &Value) -> Option<u16> {
    value.as_u64().and_then(|n| u16::try_from(n).ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allocates_releases_and_reserves() {
        let mut alloc = ServiceAllocator::new("10.96.0.0/30").unwrap();
        let mut a = json!({"spec": {}});
        alloc.assign(&mut a, None).unwrap();
        assert_eq!(a["spec"]["clusterIP"], "10.96.0.1");
        assert_eq!(a["spec"]["clusterIPs"], json!(["10.96.0.1"]));
        let mut b = json!({"spec": {}});
        alloc.assign(&mut b, None).unwrap();
        assert_eq!(b["spec"]["clusterIP"], "10.96.0.2");
        assert!(alloc.assign(&mut json!({"spec": {}}), None).is_err());
        alloc.release(&a);
        assert!(
            alloc
                .assign(&mut json!({"spec": {"clusterIP": "10.96.0.2"}}), None)
                .is_err()
        );
        assert!(
            alloc
                .assign(&mut json!({"spec": {"clusterIP": "10.96.0.1"}}), None)
                .is_ok()
        );
        let mut headless = json!({"spec": {"clusterIP": "None"}});
        alloc.assign(&mut headless, None).unwrap();
        assert_eq!(headless["spec"]["clusterIPs"], json!(["None"]));
        assert!(ServiceAllocator::new("10.96.0.0").is_err());
    }

    #[test]
    fn keeps_addresses_on_update_and_allocates_node_ports() {
        let mut alloc = ServiceAllocator::new("10.96.0.0/12").unwrap();
        let mut svc = json!({"spec": {"type": "NodePort", "ports": [{"port": 80}]}});
        alloc.assign(&mut svc, None).unwrap();
        assert_eq!(svc["spec"]["ports"][0]["nodePort"], 30000);
        let mut update = json!({"spec": {"type": "NodePort", "ports": [{"port": 80}]}});
        alloc.assign(&mut update, Some(&svc)).unwrap();
        assert_eq!(update["spec"]["clusterIP"], svc["spec"]["clusterIP"]);
        assert_eq!(update["spec"]["ports"][0]["nodePort"], 30000);
        let mut changed = json!({"spec": {"clusterIP": "10.96.0.99"}});
        assert!(alloc.assign(&mut changed, Some(&svc)).is_err());
    }

    #[test]
    fn node_ports_are_checked_and_released() {
        let mut alloc = ServiceAllocator::new("10.96.0.0/12").unwrap();
        let node_port =
            |n: u64| json!({"spec": {"type": "NodePort", "ports": [{"port": 80, "nodePort": n}]}});
        let mut a = node_port(30080);
        alloc.assign(&mut a, None).unwrap();
        let taken = alloc.assign(&mut node_port(30080), None).unwrap_err();
        assert!(taken.contains("already allocated"), "{taken}");
        let range = alloc.assign(&mut node_port(80), None).unwrap_err();
        assert!(range.contains("valid range"), "{range}");
        // Nothing leaked from the refused requests: the next cluster IP is the second one.
        let mut b = json!({"spec": {"type": "LoadBalancer", "ports": [{"port": 80}, {"port": 81}]}});
        alloc.assign(&mut b, None).unwrap();
        assert_eq!(b["spec"]["clusterIP"], "10.96.0.2");
        assert_eq!(b["spec"]["ports"][0]["nodePort"], 30000);
        assert_eq!(b["spec"]["ports"][1]["nodePort"], 30001);
        // Re-sending the own node port is fine; switching to ClusterIP drops and frees them.
        let mut same = node_port(30080);
        alloc.assign(&mut same, Some(&a)).unwrap();
        let mut cluster_ip =
            json!({"spec": {"type": "ClusterIP", "ports": [{"port": 80, "nodePort": 30080}]}});
        alloc.assign(&mut cluster_ip, Some(&a)).unwrap();
        assert!(cluster_ip["spec"]["ports"][0].get("nodePort").is_none());
        alloc.assign(&mut node_port(30080), None).unwrap();
        // Without allocateLoadBalancerNodePorts a LoadBalancer gets none.
        let mut bare = json!({"spec": {"type": "LoadBalancer", "allocateLoadBalancerNodePorts": false,
            "ports": [{"port": 80}]}});
        alloc.assign(&mut bare, None).unwrap();
        assert!(bare["spec"]["ports"][0].get("nodePort").is_none());
        alloc.release(&b);
        alloc.assign(&mut node_port(30001), None).unwrap();
    }
}
