//! Cluster-IP and node-port allocation for Services.

use std::collections::HashSet;
use std::net::Ipv4Addr;

use serde_json::{Value, json};

/// Allocates cluster IPs from the service CIDR and node ports from 30000-32767.
#[derive(Debug)]
pub(crate) struct ServiceAllocator {
    base: u32,
    size: u32,
    next_ip: u32,
    ips: HashSet<u32>,
    next_port: u16,
    ports: HashSet<u16>,
}

const NODE_PORTS: std::ops::RangeInclusive<u16> = 30000..=32767;

impl ServiceAllocator {
    /// An allocator for `cidr` (IPv4, such as `10.96.0.0/12`).
    pub fn new(cidr: &str) -> Result<Self, String> {
        let (addr, bits) = cidr.split_once('/').ok_or("expected ADDRESS/PREFIX")?;
        let addr: Ipv4Addr = addr.parse().map_err(|e| format!("bad address: {e}"))?;
        let bits: u32 = bits.parse().map_err(|e| format!("bad prefix length: {e}"))?;
        if !(1..=30).contains(&bits) {
            return Err("prefix length must be between 1 and 30".to_string());
        }
        let size = 1u32 << (32 - bits);
        let base = u32::from(addr) & !(size - 1);
        Ok(ServiceAllocator {
            base,
            size,
            next_ip: 1,
            ips: HashSet::new(),
            next_port: 30000,
            ports: HashSet::new(),
        })
    }

    fn allocate_ip(&mut self) -> Option<Ipv4Addr> {
        // Next-fit over the usable offsets 1..size-1 (network and broadcast addresses skipped).
        for _ in 1..self.size - 1 {
            let offset = self.next_ip;
            self.next_ip = if offset + 1 >= self.size - 1 {
                1
            } else {
                offset + 1
            };
            if self.ips.insert(offset) {
                return Some(Ipv4Addr::from(self.base + offset));
            }
        }
        None
    }

    fn offset_of(&self, ip: &str) -> Result<u32, String> {
        let ip: Ipv4Addr = ip
            .parse()
            .map_err(|_| format!("{ip:?} is not a valid IPv4 address"))?;
        let value = u32::from(ip);
        if value <= self.base || value >= self.base + self.size - 1 {
            return Err(format!("the provided IP ({ip}) is not in the valid range"));
        }
        Ok(value - self.base)
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
    /// Service on update, whose addresses are kept (they are immutable). Returns a field error.
    pub fn assign(&mut self, service: &mut Value, old: Option<&Value>) -> Result<(), String> {
        let spec = &mut service["spec"];
        let kind = spec["type"].as_str().unwrap_or("ClusterIP").to_string();
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
                let offset = self
                    .offset_of(&ip)
                    .map_err(|e| format!("spec.clusterIP: Invalid value: \"{ip}\": {e}"))?;
                if !self.ips.insert(offset) {
                    return Err(format!(
                        "spec.clusterIP: Invalid value: \"{ip}\": provided IP is already allocated"
                    ));
                }
            }
            (None, None) => {
                let ip = self
                    .allocate_ip()
                    .ok_or("spec.clusterIP: Internal error: range is full")?;
                spec["clusterIP"] = json!(ip.to_string());
            }
        }
        if let Some(ip) = spec["clusterIP"].as_str().map(str::to_string) {
            spec["clusterIPs"] = json!([ip]);
        }
        if matches!(kind.as_str(), "NodePort" | "LoadBalancer") {
            let old_ports = old
                .and_then(|o| o["spec"]["ports"].as_array())
                .cloned()
                .unwrap_or_default();
            if let Some(Value::Array(ports)) = spec.get_mut("ports") {
                for port in ports {
                    if port.get("nodePort").is_some_and(|p| !p.is_null()) {
                        if let Some(n) = port["nodePort"].as_u64().and_then(|n| u16::try_from(n).ok()) {
                            self.ports.insert(n);
                        }
                        continue;
                    }
                    let previous = old_ports
                        .iter()
                        .find(|p| p["port"] == port["port"])
                        .map(|p| p["nodePort"].clone());
                    match previous.filter(|p| !p.is_null()) {
                        Some(n) => port["nodePort"] = n,
                        None => {
                            let n = self
                                .allocate_port()
                                .ok_or("spec.ports: node port range is full")?;
                            port["nodePort"] = json!(n);
                        }
                    }
                }
            }
        }
        Ok(())
    }

    /// Frees the addresses of a deleted Service.
    pub fn release(&mut self, service: &Value) {
        if let Some(ip) = service["spec"]["clusterIP"].as_str()
            && let Ok(offset) = self.offset_of(ip)
        {
            self.ips.remove(&offset);
        }
        for port in service["spec"]["ports"].as_array().into_iter().flatten() {
            if let Some(n) = port["nodePort"].as_u64().and_then(|n| u16::try_from(n).ok()) {
                self.ports.remove(&n);
            }
        }
    }
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
}
