//! The load-balancer controller: Services of type LoadBalancer (without a `loadBalancerClass`,
//! which would name another implementation) get `status.loadBalancer.ingress` with an address
//! from the TEST-NET-1 range 192.0.2.0/24 (254 addresses; further services stay pending). The
//! address is released, and the status cleared, when the service goes or changes type.

use std::collections::HashMap;
use std::net::Ipv4Addr;

use serde_json::{Value, json};

use super::{KeySet, Simulation};
use crate::ip_pool::IpPool;
use crate::store::ObjectKey;

/// Where load-balancer addresses come from.
pub(crate) const LOAD_BALANCER_CIDR: &str = "192.0.2.0/24";

/// Addresses handed out, by service.
#[derive(Debug)]
pub(crate) struct LoadBalancers {
    pool: IpPool,
    /// Service key -> (uid, address).
    assigned: HashMap<ObjectKey, (String, Ipv4Addr)>,
    /// Services whose status needs a look.
    dirty: KeySet,
}

impl LoadBalancers {
    pub fn new() -> Self {
        LoadBalancers {
            pool: IpPool::new(LOAD_BALANCER_CIDR).expect("a valid constant"),
            assigned: HashMap::new(),
            dirty: KeySet::new(),
        }
    }

    /// Every service with an address.
    pub fn keys(&self) -> impl Iterator<Item = &ObjectKey> {
        self.assigned.keys()
    }

    /// Takes note of a service's new state (`None`: deleted).
    pub fn observe(&mut self, key: &ObjectKey, service: Option<&Value>) {
        let uid = service
            .and_then(|s| s["metadata"]["uid"].as_str())
            .unwrap_or_default();
        let stale = self.assigned.get(key).is_some_and(|(u, _)| u != uid);
        let wanted = service.is_some_and(wants_address);
        if (stale || !wanted)
            && let Some((_, ip)) = self.assigned.remove(key)
        {
            self.pool.release(ip);
            if service.is_some() {
                // Clear the status this controller wrote.
                self.dirty.insert(key.clone());
            }
        }
        let Some(service) = service.filter(|_| wanted) else {
            return;
        };
        if !self.assigned.contains_key(key) {
            // Keep an address this controller gave out before (a restarted simulator).
            let reported = service["status"]["loadBalancer"]["ingress"][0]["ip"]
                .as_str()
                .and_then(|ip| ip.parse().ok())
                .filter(|ip| self.pool.reserve(*ip));
            match reported.or_else(|| self.pool.allocate()) {
                Some(ip) => {
                    self.assigned.insert(key.clone(), (uid.to_string(), ip));
                }
                None => {
                    tracing::warn!(service = ?key, "load-balancer addresses exhausted; the service stays pending");
                    return;
                }
            }
        }
        if service["status"]["loadBalancer"] != self.desired(key) {
            self.dirty.insert(key.clone());
        }
    }

    /// `status.loadBalancer` as it should be.
    fn desired(&self, key: &ObjectKey) -> Value {
        match self.assigned.get(key) {
            Some((_, ip)) => json!({"ingress": [{"ip": ip.to_string(), "ipMode": "VIP"}]}),
            None => json!({}),
        }
    }
}

/// Whether the controller gives the service an address.
fn wants_address(service: &Value) -> bool {
    let spec = &service["spec"];
    spec["type"] == "LoadBalancer"
        && spec["loadBalancerClass"].as_str().is_none_or(str::is_empty)
        && service["metadata"]["deletionTimestamp"].is_null()
}

impl Simulation {
    /// Writes the load-balancer status of every marked service whose status differs.
    pub(super) async fn reconcile_balancers(&mut self) {
        let dirty = std::mem::take(&mut self.balancers.dirty);
        for key in dirty {
            let desired = self.balancers.desired(&key);
            for _ in 0..3 {
                let Ok(service) = self.objects.get(&self.kinds.services, &key.0, &key.1) else {
                    break;
                };
                if service["status"]["loadBalancer"] == desired {
                    break;
                }
                let mut status = service["status"].clone();
                status["loadBalancer"] = desired.clone();
                match self.write_status(&self.kinds.services, &service, status) {
                    Err(e) if e.code == 409 => continue,
                    Err(e) => {
                        tracing::debug!(service = ?key, error = %e.message, "load-balancer status write failed");
                        break;
                    }
                    Ok(_) => break,
                }
            }
            self.wrote().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn service(uid: &str, kind: &str, status: Value) -> Value {
        json!({"metadata": {"name": "lb", "namespace": "ns", "uid": uid},
            "spec": {"type": kind}, "status": status})
    }

    #[test]
    fn addresses_follow_type_and_identity() {
        let mut balancers = LoadBalancers::new();
        let key = ("ns".to_string(), "lb".to_string());
        balancers.observe(
            &key,
            Some(&service("u1", "LoadBalancer", json!({"loadBalancer": {}}))),
        );
        let desired = balancers.desired(&key);
        assert_eq!(desired["ingress"][0]["ip"], "192.0.2.1");
        assert!(balancers.dirty.contains(&key));
        balancers.dirty.clear();
        // Once the status says so, nothing more to write.
        balancers.observe(
            &key,
            Some(&service("u1", "LoadBalancer", json!({"loadBalancer": desired}))),
        );
        assert!(balancers.dirty.is_empty());
        // Changing the type releases the address and clears the status.
        balancers.observe(
            &key,
            Some(&service("u1", "ClusterIP", json!({"loadBalancer": desired}))),
        );
        assert_eq!(balancers.desired(&key), json!({}));
        assert!(balancers.dirty.contains(&key));
        // A new service of the same name gets a fresh address; the old one was released.
        balancers.observe(&key, Some(&service("u2", "LoadBalancer", json!({}))));
        assert_eq!(balancers.desired(&key)["ingress"][0]["ip"], "192.0.2.2");
        balancers.observe(&key, None);
        assert_eq!(balancers.keys().count(), 0);
    }

    #[test]
    fn classes_and_reported_addresses() {
        let mut balancers = LoadBalancers::new();
        let key = ("ns".to_string(), "lb".to_string());
        let mut classed = service("u1", "LoadBalancer", json!({}));
        classed["spec"]["loadBalancerClass"] = json!("example.com/lb");
        balancers.observe(&key, Some(&classed));
        assert!(balancers.dirty.is_empty() && balancers.keys().count() == 0);
        let reported = json!({"loadBalancer": {"ingress": [{"ip": "192.0.2.77", "ipMode": "VIP"}]}});
        balancers.observe(&key, Some(&service("u1", "LoadBalancer", reported)));
        assert_eq!(balancers.desired(&key)["ingress"][0]["ip"], "192.0.2.77");
        assert!(balancers.dirty.is_empty(), "already reported");
    }
}
