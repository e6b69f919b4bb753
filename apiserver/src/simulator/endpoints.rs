//! The endpoints controllers: for every Service with a selector, a core/v1 Endpoints of the same
//! name and one discovery.k8s.io/v1 EndpointSlice named `<service>-sim`, listing the ready,
//! non-terminating pods the selector matches in the service's namespace.
//!
//! An index of pods and services, fed by watch events, says which services an event concerns; a
//! service is only rewritten when the content of its Endpoints or EndpointSlice changes. Target
//! ports are resolved per pod (numbers as they are, names through the pod's container ports); the
//! single EndpointSlice takes a named port's number from the first pod that resolves it.

use std::collections::{BTreeMap, HashMap};

use serde_json::{Map, Value, json};

use super::{KeySet, Simulation, labels};
use crate::deletion::DeleteOptions;
use crate::resources::ResourceDef;
use crate::store::ObjectKey;

/// Suffix of the name of the EndpointSlice the simulator maintains for a service.
pub(crate) const SLICE_SUFFIX: &str = "-sim";
/// The label that marks Endpoints written by an endpoints controller (the mirroring controller
/// skips them); the simulator deletes only Endpoints that carry it.
const SKIP_MIRROR: &str = "endpointslice.kubernetes.io/skip-mirror";
const SERVICE_NAME: &str = "kubernetes.io/service-name";
const MANAGED_BY: &str = "endpointslice.kubernetes.io/managed-by";
const MANAGER: &str = "endpointslice-controller.k8s.io";
const HEADLESS: &str = "service.kubernetes.io/headless";

/// What the controllers need of a pod.
#[derive(Debug, Clone, PartialEq)]
struct PodView {
    labels: BTreeMap<String, String>,
    /// Set for ready, non-terminating pods with an IP.
    endpoint: Option<PodEndpoint>,
}

#[derive(Debug, Clone, PartialEq)]
struct PodEndpoint {
    uid: String,
    ip: String,
    node: String,
    /// Container ports: (name, number, protocol).
    ports: Vec<(String, i64, String)>,
}

impl PodView {
    fn of(pod: &Value) -> Self {
        let status = &pod["status"];
        let ready = status["conditions"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|c| c["type"] == "Ready" && c["status"] == "True");
        let ip = status["podIP"].as_str().unwrap_or_default();
        let eligible = ready && !ip.is_empty() && pod["metadata"]["deletionTimestamp"].is_null();
        let endpoint = eligible.then(|| PodEndpoint {
            uid: pod["metadata"]["uid"].as_str().unwrap_or_default().to_string(),
            ip: ip.to_string(),
            node: pod["spec"]["nodeName"].as_str().unwrap_or_default().to_string(),
            ports: pod["spec"]["containers"]
                .as_array()
                .into_iter()
                .flatten()
                .flat_map(|c| c["ports"].as_array().into_iter().flatten())
                .filter_map(|p| {
                    Some((
                        p["name"].as_str().unwrap_or_default().to_string(),
                        p["containerPort"].as_i64()?,
                        p["protocol"].as_str().unwrap_or("TCP").to_string(),
                    ))
                })
                .collect(),
        });
        PodView {
            labels: labels(pod),
            endpoint,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
enum TargetPort {
    Number(i64),
    Name(String),
}

#[derive(Debug, Clone, PartialEq)]
struct ServicePort {
    name: String,
    port: i64,
    protocol: String,
    app_protocol: Value,
    target: TargetPort,
}

impl ServicePort {
    /// The port number on `pod`, if it has one.
    fn resolve(&self, pod: &PodEndpoint) -> Option<i64> {
        match &self.target {
            TargetPort::Number(n) => Some(*n),
            TargetPort::Name(name) => pod
                .ports
                .iter()
                .find(|(n, _, protocol)| n == name && *protocol == self.protocol)
                .map(|(_, number, _)| *number),
        }
    }

    /// The port entry of Endpoints and EndpointSlices.
    fn entry(&self, number: i64, named_always: bool) -> Value {
        let mut entry = json!({ "port": number, "protocol": self.protocol });
        if named_always || !self.name.is_empty() {
            entry["name"] = json!(self.name);
        }
        if !self.app_protocol.is_null() {
            entry["appProtocol"] = self.app_protocol.clone();
        }
        entry
    }
}

/// What the controllers need of a service with a selector.
#[derive(Debug, Clone, PartialEq)]
struct ServiceView {
    uid: Value,
    labels: Map<String, Value>,
    selector: BTreeMap<String, String>,
    ports: Vec<ServicePort>,
    headless: bool,
}

impl ServiceView {
    /// `None` for services the controllers leave alone: no selector, ExternalName, being deleted.
    fn of(service: &Value) -> Option<Self> {
        let spec = &service["spec"];
        let selector: BTreeMap<String, String> = spec["selector"]
            .as_object()?
            .iter()
            .filter_map(|(k, v)| v.as_str().map(|v| (k.clone(), v.to_string())))
            .collect();
        // An empty selector reads back as none from a real server (etcd drops empty maps).
        if selector.is_empty()
            || spec["type"] == "ExternalName"
            || !service["metadata"]["deletionTimestamp"].is_null()
        {
            return None;
        }
        let ports = spec["ports"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|p| {
                let port = p["port"].as_i64().unwrap_or_default();
                let target = match &p["targetPort"] {
                    Value::String(name) => TargetPort::Name(name.clone()),
                    other => TargetPort::Number(other.as_i64().unwrap_or(port)),
                };
                ServicePort {
                    name: p["name"].as_str().unwrap_or_default().to_string(),
                    port,
                    protocol: p["protocol"].as_str().unwrap_or("TCP").to_string(),
                    app_protocol: p["appProtocol"].clone(),
                    target,
                }
            })
            .collect();
        Some(ServiceView {
            uid: service["metadata"]["uid"].clone(),
            labels: service["metadata"]["labels"]
                .as_object()
                .cloned()
                .unwrap_or_default(),
            selector,
            ports,
            headless: spec["clusterIP"] == "None",
        })
    }

    fn selects(&self, labels: &BTreeMap<String, String>) -> bool {
        self.selector.iter().all(|(k, v)| labels.get(k) == Some(v))
    }

    /// Labels of the objects written for this service: its own plus `extra`.
    fn object_labels(&self, extra: &[(&str, &str)]) -> Value {
        let mut labels = self.labels.clone();
        for (k, v) in extra {
            labels.insert(k.to_string(), json!(v));
        }
        if self.headless {
            labels.insert(HEADLESS.to_string(), json!(""));
        }
        Value::Object(labels)
    }
}

/// Pods and services by key, and the services whose objects need a look.
#[derive(Debug, Default)]
pub(crate) struct EndpointIndex {
    /// Services with a selector: namespace -> name -> view.
    services: HashMap<String, BTreeMap<String, ServiceView>>,
    pods: BTreeMap<ObjectKey, PodView>,
    dirty: KeySet,
}

impl EndpointIndex {
    /// Takes note of a pod's new state (`None`: deleted) and marks the services it concerns.
    pub fn observe_pod(&mut self, key: &ObjectKey, pod: Option<&Value>) {
        let new = pod.map(PodView::of);
        let old = match &new {
            Some(view) => self.pods.insert(key.clone(), view.clone()),
            None => self.pods.remove(key),
        };
        if old == new {
            return;
        }
        let Some(services) = self.services.get(&key.0) else {
            return;
        };
        let listed = |view: &Option<PodView>, service: &ServiceView| {
            view.as_ref()
                .is_some_and(|v| v.endpoint.is_some() && service.selects(&v.labels))
        };
        for (name, service) in services {
            if listed(&old, service) || listed(&new, service) {
                self.dirty.insert((key.0.clone(), name.clone()));
            }
        }
    }

    /// Takes note of a service's new state (`None`: deleted).
    pub fn observe_service(&mut self, key: &ObjectKey, service: Option<&Value>) {
        let new = service.and_then(ServiceView::of);
        let in_namespace = self.services.entry(key.0.clone()).or_default();
        let old = match &new {
            Some(view) => in_namespace.insert(key.1.clone(), view.clone()),
            None => in_namespace.remove(&key.1),
        };
        if in_namespace.is_empty() {
            self.services.remove(&key.0);
        }
        if old != new {
            self.dirty.insert(key.clone());
        }
    }

    /// Every pod key in the index.
    pub fn pod_keys(&self) -> impl Iterator<Item = &ObjectKey> {
        self.pods.keys()
    }

    /// Every service key with a view (hence possibly objects to delete when it goes).
    pub fn service_keys(&self) -> impl Iterator<Item = ObjectKey> + '_ {
        self.services
            .iter()
            .flat_map(|(ns, names)| names.keys().map(move |name| (ns.clone(), name.clone())))
    }

    /// The desired Endpoints and EndpointSlice of a service; `None` when it should have none.
    fn desired(&self, key: &ObjectKey) -> Option<(Value, Value)> {
        let service = self.services.get(&key.0)?.get(&key.1)?;
        let (namespace, name) = key;
        let members: Vec<(&str, &PodEndpoint)> = self
            .pods
            .range((namespace.clone(), String::new())..)
            .take_while(|((ns, _), _)| ns == namespace)
            .filter_map(|((_, pod), view)| {
                let endpoint = view.endpoint.as_ref()?;
                service.selects(&view.labels).then_some((pod.as_str(), endpoint))
            })
            .collect();
        let target_ref = |pod: &str, endpoint: &PodEndpoint| json!({"kind": "Pod", "namespace": namespace, "name": pod, "uid": endpoint.uid});
        // Endpoints: addresses grouped by the port numbers they resolve to.
        let mut subsets: BTreeMap<Vec<(String, i64)>, Subset> = BTreeMap::new();
        let mut slice_endpoints = Vec::new();
        let mut resolved_ports: Vec<Option<i64>> = vec![None; service.ports.len()];
        for (pod, endpoint) in &members {
            let ports: Vec<(usize, i64)> = service
                .ports
                .iter()
                .enumerate()
                .filter_map(|(i, p)| p.resolve(endpoint).map(|n| (i, n)))
                .collect();
            let listed = if service.ports.is_empty() {
                service.headless
            } else {
                !ports.is_empty()
            };
            if !listed {
                continue;
            }
            for (i, n) in &ports {
                resolved_ports[*i].get_or_insert(*n);
            }
            let group = subsets
                .entry(
                    ports
                        .iter()
                        .map(|(i, n)| (service.ports[*i].name.clone(), *n))
                        .collect(),
                )
                .or_insert_with(|| {
                    let entries = ports
                        .iter()
                        .map(|(i, n)| service.ports[*i].entry(*n, false))
                        .collect();
                    (Vec::new(), entries)
                });
            group.0.push(json!({"ip": endpoint.ip, "nodeName": endpoint.node,
                "targetRef": target_ref(pod, endpoint)}));
            slice_endpoints.push(json!({
                "addresses": [endpoint.ip],
                "conditions": {"ready": true, "serving": true, "terminating": false},
                "nodeName": endpoint.node,
                "targetRef": target_ref(pod, endpoint),
            }));
        }
        let by_ip = |a: &Value, b: &Value| {
            let ip = |v: &Value| v["ip"].as_str().or(v["addresses"][0].as_str()).map(ip_order);
            ip(a).cmp(&ip(b))
        };
        let subsets: Vec<Value> = subsets
            .into_values()
            .map(|(mut addresses, ports)| {
                addresses.sort_by(by_ip);
                let mut subset = json!({ "addresses": addresses });
                if !ports.is_empty() {
                    subset["ports"] = Value::Array(ports);
                }
                subset
            })
            .collect();
        slice_endpoints.sort_by(by_ip);
        let mut endpoints = json!({
            "apiVersion": "v1",
            "kind": "Endpoints",
            "metadata": {"name": name, "namespace": namespace,
                "labels": service.object_labels(&[(SKIP_MIRROR, "true")])},
        });
        if !subsets.is_empty() {
            endpoints["subsets"] = Value::Array(subsets);
        }
        let numeric = |p: &ServicePort| match p.target {
            TargetPort::Number(n) => Some(n),
            TargetPort::Name(_) => None,
        };
        let slice_ports: Vec<Value> = service
            .ports
            .iter()
            .zip(&resolved_ports)
            .filter_map(|(p, resolved)| resolved.or_else(|| numeric(p)).map(|n| p.entry(n, true)))
            .collect();
        let slice = json!({
            "apiVersion": "discovery.k8s.io/v1",
            "kind": "EndpointSlice",
            "metadata": {
                "name": format!("{name}{SLICE_SUFFIX}"),
                "namespace": namespace,
                "labels": service.object_labels(&[(SERVICE_NAME, name), (MANAGED_BY, MANAGER)]),
                "ownerReferences": [{"apiVersion": "v1", "kind": "Service", "name": name,
                    "uid": service.uid, "controller": true, "blockOwnerDeletion": true}],
            },
            "addressType": "IPv4",
            "endpoints": slice_endpoints,
            "ports": slice_ports,
        });
        Some((endpoints, slice))
    }
}

/// One Endpoints subset being built: (addresses, ports).
type Subset = (Vec<Value>, Vec<Value>);

/// Sort key of an IPv4 address (numeric, so 10.0.0.9 comes before 10.0.0.10).
fn ip_order(ip: &str) -> (u32, String) {
    let number = ip
        .parse::<std::net::Ipv4Addr>()
        .map(u32::from)
        .unwrap_or(u32::MAX);
    (number, ip.to_string())
}

/// The fields the controllers own, for comparing a stored object with the desired one.
fn owned_fields(object: &Value) -> Value {
    let non_empty = |v: &Value| match v {
        Value::Array(a) if a.is_empty() => Value::Null,
        other => other.clone(),
    };
    json!({
        "labels": object["metadata"]["labels"],
        "ownerReferences": object["metadata"]["ownerReferences"],
        "subsets": non_empty(&object["subsets"]),
        "addressType": object["addressType"],
        "endpoints": non_empty(&object["endpoints"]),
        "ports": non_empty(&object["ports"]),
    })
}

impl Simulation {
    /// Brings the Endpoints and EndpointSlices of every marked service up to date.
    pub(super) async fn reconcile_endpoints(&mut self) {
        let dirty = std::mem::take(&mut self.endpoints.dirty);
        for key in dirty {
            let slice_name = format!("{}{SLICE_SUFFIX}", key.1);
            match self.endpoints.desired(&key) {
                Some((endpoints, slice)) => {
                    self.converge(&self.kinds.endpoints, &key.0, &key.1, endpoints);
                    self.converge(&self.kinds.slices, &key.0, &slice_name, slice);
                }
                None => {
                    let ours = |o: &Value| o["metadata"]["labels"][SKIP_MIRROR] == "true";
                    self.remove_if(&self.kinds.endpoints, &key.0, &key.1, ours);
                    let ours = |o: &Value| o["metadata"]["labels"][SERVICE_NAME] == key.1.as_str();
                    self.remove_if(&self.kinds.slices, &key.0, &slice_name, ours);
                }
            }
            self.wrote().await;
        }
    }

    /// Creates the object, or updates the fields the controllers own when they differ.
    fn converge(&self, def: &ResourceDef, namespace: &str, name: &str, desired: Value) {
        for _ in 0..3 {
            let result = match self.objects.get(def, namespace, name) {
                Ok(existing) if owned_fields(&existing) == owned_fields(&desired) => return,
                Ok(existing) => {
                    let mut object = Value::clone(&existing);
                    object["metadata"]["labels"] = desired["metadata"]["labels"].clone();
                    object["metadata"]["ownerReferences"] = desired["metadata"]["ownerReferences"].clone();
                    for field in ["subsets", "addressType", "endpoints", "ports"] {
                        match desired.get(field) {
                            Some(value) => object[field] = value.clone(),
                            None => {
                                if let Some(map) = object.as_object_mut() {
                                    map.remove(field);
                                }
                            }
                        }
                    }
                    if object["metadata"]["ownerReferences"].is_null()
                        && let Some(meta) = object["metadata"].as_object_mut()
                    {
                        meta.remove("ownerReferences");
                    }
                    self.write().update(def, namespace, name, None, object)
                }
                Err(_) => self.write().create(def, namespace, desired.clone()),
            };
            match result {
                Ok(_) => return,
                Err(e) if e.code == 409 => continue,
                Err(e) => {
                    tracing::debug!(namespace, name, kind = %def.kind, error = %e.message, "endpoints write failed");
                    return;
                }
            }
        }
    }

    /// Deletes the object if it exists and `ours` says the controllers wrote it.
    fn remove_if(&self, def: &ResourceDef, namespace: &str, name: &str, ours: impl Fn(&Value) -> bool) {
        let Ok(existing) = self.objects.get(def, namespace, name) else {
            return;
        };
        if !ours(&existing) {
            return;
        }
        let options = DeleteOptions {
            uid: existing["metadata"]["uid"].as_str().map(str::to_string),
            ..Default::default()
        };
        if let Err(e) = self.write().delete(def, namespace, name, &options) {
            tracing::debug!(namespace, name, kind = %def.kind, error = %e.message, "endpoints delete failed");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(name: &str) -> ObjectKey {
        ("ns".to_string(), name.to_string())
    }

    fn service(selector: Value, ports: Value) -> Value {
        json!({"metadata": {"name": "web", "namespace": "ns", "uid": "svc-uid", "labels": {"team": "a"}},
            "spec": {"selector": selector, "ports": ports, "clusterIP": "10.96.0.10"}})
    }

    fn pod(name: &str, ip: &str, ready: bool, app: &str) -> Value {
        json!({"metadata": {"name": name, "namespace": "ns", "uid": format!("{name}-uid"), "labels": {"app": app}},
            "spec": {"nodeName": "n1", "containers": [{"name": "c",
                "ports": [{"name": "http", "containerPort": 8080, "protocol": "TCP"}]}]},
            "status": {"podIP": ip, "conditions": [{"type": "Ready", "status": if ready { "True" } else { "False" }}]}})
    }

    fn index_with(pods: &[Value]) -> EndpointIndex {
        let mut index = EndpointIndex::default();
        let ports = json!([{"name": "web", "port": 80, "protocol": "TCP", "targetPort": "http"},
            {"name": "metrics", "port": 9090, "protocol": "TCP", "targetPort": 9090}]);
        index.observe_service(&key("web"), Some(&service(json!({"app": "web"}), ports)));
        for pod in pods {
            let name = pod["metadata"]["name"].as_str().unwrap();
            index.observe_pod(&key(name), Some(pod));
        }
        index
    }

    #[test]
    fn ready_matching_pods_are_listed_with_resolved_ports() {
        let index = index_with(&[
            pod("b", "10.244.0.10", true, "web"),
            pod("a", "10.244.0.9", true, "web"),
            pod("c", "10.244.0.11", false, "web"),
            pod("d", "10.244.0.12", true, "db"),
        ]);
        let (endpoints, slice) = index.desired(&key("web")).unwrap();
        let subset = &endpoints["subsets"][0];
        let ips: Vec<&str> = subset["addresses"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a["ip"].as_str().unwrap())
            .collect();
        assert_eq!(ips, ["10.244.0.9", "10.244.0.10"], "ready, matching, in IP order");
        assert_eq!(
            subset["ports"],
            json!([{"name": "web", "port": 8080, "protocol": "TCP"},
                {"name": "metrics", "port": 9090, "protocol": "TCP"}])
        );
        assert_eq!(subset["addresses"][0]["targetRef"]["name"], "a");
        assert_eq!(
            endpoints["metadata"]["labels"],
            json!({"team": "a", SKIP_MIRROR: "true"})
        );
        assert_eq!(slice["metadata"]["name"], "web-sim");
        assert_eq!(slice["metadata"]["labels"][SERVICE_NAME], "web");
        assert_eq!(slice["metadata"]["ownerReferences"][0]["uid"], "svc-uid");
        assert_eq!(slice["endpoints"].as_array().unwrap().len(), 2);
        assert_eq!(slice["endpoints"][0]["addresses"], json!(["10.244.0.9"]));
        assert_eq!(slice["ports"][0]["port"], 8080);
    }

    #[test]
    fn only_relevant_changes_mark_the_service() {
        let mut index = index_with(&[pod("a", "10.244.0.9", true, "web")]);
        index.dirty.clear();
        let mut annotated = pod("a", "10.244.0.9", true, "web");
        annotated["metadata"]["annotations"] = json!({"x": "y"});
        index.observe_pod(&key("a"), Some(&annotated));
        assert!(index.dirty.is_empty(), "an annotation is not endpoint content");
        index.observe_pod(&key("other"), Some(&pod("other", "10.244.0.20", true, "db")));
        assert!(index.dirty.is_empty(), "not selected");
        index.observe_pod(&key("late"), Some(&pod("late", "", false, "web")));
        assert!(index.dirty.is_empty(), "not ready yet");
        index.observe_pod(&key("late"), Some(&pod("late", "10.244.0.21", true, "web")));
        assert_eq!(index.dirty.len(), 1, "became ready");
        index.dirty.clear();
        index.observe_pod(&key("a"), Some(&pod("a", "10.244.0.9", true, "db")));
        assert_eq!(index.dirty.len(), 1, "relabelled out of the selector");
        index.dirty.clear();
        index.observe_pod(&key("late"), None);
        assert_eq!(index.dirty.len(), 1, "deleted");
    }

    #[test]
    fn empty_and_removed_services() {
        let index = index_with(&[]);
        let (endpoints, slice) = index.desired(&key("web")).unwrap();
        assert!(endpoints.get("subsets").is_none());
        assert_eq!(slice["endpoints"], json!([]));
        assert_eq!(
            slice["ports"],
            json!([{"name": "metrics", "port": 9090, "protocol": "TCP"}])
        );
        let mut index = index;
        index.observe_service(&key("web"), Some(&service(json!({}), json!([]))));
        assert!(index.desired(&key("web")).is_none(), "no selector, no endpoints");
        assert_eq!(index.service_keys().count(), 0);
        assert!(index.dirty.contains(&key("web")), "its objects are to be removed");
    }

    #[test]
    fn headless_services_without_ports_list_addresses() {
        let mut index = EndpointIndex::default();
        let mut headless = service(json!({"app": "web"}), json!([]));
        headless["spec"]["clusterIP"] = json!("None");
        index.observe_service(&key("web"), Some(&headless));
        index.observe_pod(&key("a"), Some(&pod("a", "10.244.0.9", true, "web")));
        let (endpoints, slice) = index.desired(&key("web")).unwrap();
        assert!(endpoints["subsets"][0].get("ports").is_none());
        assert_eq!(endpoints["metadata"]["labels"][HEADLESS], "");
        assert_eq!(slice["endpoints"].as_array().unwrap().len(), 1);
    }

    #[test]
    fn owned_fields_ignore_metadata_noise() {
        let index = index_with(&[pod("a", "10.244.0.9", true, "web")]);
        let (endpoints, _) = index.desired(&key("web")).unwrap();
        let mut stored = endpoints.clone();
        stored["metadata"]["resourceVersion"] = json!("7");
        stored["metadata"]["uid"] = json!("u");
        assert_eq!(owned_fields(&stored), owned_fields(&endpoints));
        stored["subsets"] = json!([]);
        assert_ne!(owned_fields(&stored), owned_fields(&endpoints));
    }
}
