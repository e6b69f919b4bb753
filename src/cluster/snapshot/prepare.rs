//! What a snapshot keeps of a cluster and of each object, and what a restore sends: pure
//! functions over JSON objects.
//!
//! A snapshot holds what a user or a tool created, not what the control plane derives: events,
//! nodes (the syncer makes them from the host's), leases, endpoints a controller or the syncer
//! maintains, and objects being deleted are left out. Of each object it keeps the spec and
//! metadata a create accepts, plus the UID (a restore links host copies and owner references
//! by it); status and the fields the server sets are removed.

use serde_json::{Map, Value};
use vcsync_translators::RESTORED_UID_ANNOTATION;

use super::archive::{Entry, Resource};

/// Why objects of `resource` are not snapshotted, if they are not.
pub fn left_out(resource: &Resource) -> Option<&'static str> {
    match (resource.group.as_str(), resource.kind.as_str()) {
        ("" | "events.k8s.io", "Event") => Some("a record of what happened, not state"),
        ("", "Node") => Some("the syncer makes virtual nodes from the host's"),
        ("coordination.k8s.io", _) => Some("held by running components"),
        ("apiregistration.k8s.io", "APIService") => Some("served by the control plane itself"),
        ("", "ComponentStatus") => Some("reported by the control plane"),
        _ => None,
    }
}

/// Removes the entries a controller or the syncer derives from others: EndpointSlices a
/// controller manages, the Endpoints of services with a selector (mirrored up by the syncer; a
/// selector-less service's Endpoints are the tenant's and stay), the `kube-root-ca.crt`
/// ConfigMaps and the trust bundles of the control plane's own signers.
pub fn drop_derived(entries: &mut Vec<Entry>) {
    let selected: std::collections::HashSet<(String, String)> = entries
        .iter()
        .filter(|e| e.resource.group.is_empty() && e.resource.kind == "Service")
        .filter(|e| {
            e.object["spec"]["selector"]
                .as_object()
                .is_some_and(|s| !s.is_empty())
        })
        .map(|e| {
            (
                e.namespace().unwrap_or_default().to_string(),
                e.name().to_string(),
            )
        })
        .collect();
    entries.retain(|e| match (e.resource.group.as_str(), e.resource.kind.as_str()) {
        ("discovery.k8s.io", "EndpointSlice") => e.object["metadata"]["labels"]
            .get("endpointslice.kubernetes.io/managed-by")
            .is_none(),
        // Published into every namespace by the control plane, with its own CA.
        ("", "ConfigMap") => e.name() != "kube-root-ca.crt",
        // The control plane publishes the bundles of its own signers (and only it may).
        ("certificates.k8s.io", "ClusterTrustBundle") => !e.object["spec"]["signerName"]
            .as_str()
            .is_some_and(|signer| signer.starts_with("kubernetes.io/")),
        ("", "Endpoints") => {
            let key = (
                e.namespace().unwrap_or_default().to_string(),
                e.name().to_string(),
            );
            !selected.contains(&key)
                && e.object["metadata"]["labels"]
                    .get("endpoints.kubernetes.io/managed-by")
                    .is_none()
        }
        _ => true,
    });
}

/// The snapshot's form of `object` (served as `resource`), or None when it is not kept (being
/// deleted).
pub fn for_snapshot(resource: &Resource, mut object: Value) -> Option<Value> {
    let metadata = object.get_mut("metadata")?.as_object_mut()?;
    if metadata.contains_key("deletionTimestamp") {
        return None;
    }
    for field in [
        "resourceVersion",
        "creationTimestamp",
        "generation",
        "managedFields",
        "selfLink",
        "deletionGracePeriodSeconds",
    ] {
        metadata.remove(field);
    }
    let root = object.as_object_mut()?;
    root.remove("status");
    root.insert("apiVersion".into(), Value::String(resource.api_version()));
    root.insert("kind".into(), Value::String(resource.kind.clone()));
    if resource.group == "batch" && resource.kind == "Job" {
        without_generated_job_selector(&mut object);
    }
    Some(object)
}

/// A Job's selector and the pod-template labels behind it are generated from its UID unless
/// `manualSelector` is set; the API refuses them on a new Job, which generates its own.
fn without_generated_job_selector(job: &mut Value) {
    if job["spec"]["manualSelector"].as_bool() == Some(true) {
        return;
    }
    if let Some(spec) = job.get_mut("spec").and_then(Value::as_object_mut) {
        spec.remove("selector");
    }
    if let Some(labels) = job
        .pointer_mut("/spec/template/metadata/labels")
        .and_then(Value::as_object_mut)
    {
        labels.remove("controller-uid");
        labels.remove("batch.kubernetes.io/controller-uid");
    }
}

/// What a restore creates for `entry`: without UID and owner references (set once the owners
/// exist), marked with the UID it had ([`RESTORED_UID_ANNOTATION`]).
pub fn for_create(entry: &Entry) -> Value {
    let mut object = entry.object.clone();
    if let Some(metadata) = object.get_mut("metadata").and_then(Value::as_object_mut) {
        let uid = metadata.remove("uid");
        metadata.remove("ownerReferences");
        if let Some(Value::String(uid)) = uid {
            let annotations = metadata
                .entry("annotations")
                .or_insert_with(|| Value::Object(Map::new()));
            if let Some(annotations) = annotations.as_object_mut() {
                annotations.insert(RESTORED_UID_ANNOTATION.into(), Value::String(uid));
            }
        }
    }
    object
}

/// `object` (a Service) without the addresses and ports the cluster allocates, for a second
/// try when the ones it had are taken or out of the new cluster's range.
pub fn without_allocations(mut object: Value) -> Value {
    if let Some(spec) = object.get_mut("spec").and_then(Value::as_object_mut) {
        let headless = spec.get("clusterIP").and_then(Value::as_str) == Some("None");
        if !headless {
            spec.remove("clusterIP");
            spec.remove("clusterIPs");
        }
        spec.remove("healthCheckNodePort");
        for port in spec
            .get_mut("ports")
            .and_then(Value::as_array_mut)
            .into_iter()
            .flatten()
        {
            if let Some(port) = port.as_object_mut() {
                port.remove("nodePort");
            }
        }
    }
    object
}

/// `object` as a comparison between a snapshot and a live cluster sees it: the snapshot's
/// form without what necessarily differs after a restore (UIDs, owners' UIDs, the restore
/// mark).
pub fn comparable(resource: &Resource, object: Value) -> Value {
    let Some(mut object) = for_snapshot(resource, object) else {
        return Value::Null;
    };
    if let Some(metadata) = object.get_mut("metadata").and_then(Value::as_object_mut) {
        metadata.remove("uid");
        if let Some(owners) = metadata.get_mut("ownerReferences").and_then(Value::as_array_mut) {
            for owner in owners.iter_mut().filter_map(Value::as_object_mut) {
                owner.remove("uid");
            }
        }
        let empty = match metadata.get_mut("annotations").and_then(Value::as_object_mut) {
            Some(annotations) => {
                annotations.remove(RESTORED_UID_ANNOTATION);
                annotations.is_empty()
            }
            None => false,
        };
        if empty {
            metadata.remove("annotations");
        }
    }
    object
}

/// The first path where `a` and `b` differ (`/spec/replicas`), if they do.
pub fn first_difference(a: &Value, b: &Value) -> Option<String> {
    /// Whether `a` and `b` differ; `path` then ends with where.
    fn walk(a: &Value, b: &Value, path: &mut String) -> bool {
        // `a` and `b` under `segment`: the path keeps the segment only where they differ.
        let mut child = |segment: &dyn std::fmt::Display, a: &Value, b: &Value| {
            let len = path.len();
            path.push_str(&format!("/{segment}"));
            let differs = walk(a, b, path);
            if !differs {
                path.truncate(len);
            }
            differs
        };
        let null = Value::Null;
        match (a, b) {
            (Value::Object(x), Value::Object(y)) => {
                let keys: std::collections::BTreeSet<&String> = x.keys().chain(y.keys()).collect();
                keys.into_iter()
                    .any(|key| child(key, x.get(key).unwrap_or(&null), y.get(key).unwrap_or(&null)))
            }
            (Value::Array(x), Value::Array(y)) if x.len() == y.len() => {
                x.iter().zip(y).enumerate().any(|(i, (x, y))| child(&i, x, y))
            }
            _ => a != b,
        }
    }
    let mut path = String::new();
    walk(a, b, &mut path).then(|| if path.is_empty() { "/".into() } else { path })
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn resource(group: &str, kind: &str, plural: &str) -> Resource {
        Resource {
            group: group.into(),
            version: "v1".into(),
            kind: kind.into(),
            plural: plural.into(),
            namespaced: true,
        }
    }

    fn entry(resource: Resource, object: Value) -> Entry {
        Entry { resource, object }
    }

    #[test]
    fn a_snapshot_keeps_spec_metadata_and_uid_and_drops_status_and_server_fields() {
        let pod = json!({
            "metadata": {"name": "web", "namespace": "shop", "uid": "u1", "resourceVersion": "7",
                "creationTimestamp": "2026-12-07T00:00:00Z", "generation": 1,
                "managedFields": [{"manager": "kubectl"}], "labels": {"app": "web"},
                "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "web-1", "uid": "rs1"}]},
            "spec": {"nodeName": "n1", "containers": [{"name": "c", "image": "nginx"}]},
            "status": {"phase": "Running"}
        });
        let kept = for_snapshot(&resource("", "Pod", "pods"), pod).unwrap();
        assert_eq!(
            kept,
            json!({
                "apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": "web", "namespace": "shop", "uid": "u1", "labels": {"app": "web"},
                    "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "web-1", "uid": "rs1"}]},
                "spec": {"nodeName": "n1", "containers": [{"name": "c", "image": "nginx"}]}
            })
        );
        let terminating = json!({"metadata": {"name": "x", "deletionTimestamp": "2026-12-07T00:00:00Z"}});
        assert_eq!(for_snapshot(&resource("", "Pod", "pods"), terminating), None);
    }

    #[test]
    fn a_jobs_generated_selector_is_dropped_and_a_manual_one_kept() {
        let job = |manual: bool| {
            json!({"metadata": {"name": "j"}, "spec": {"manualSelector": manual,
                "selector": {"matchLabels": {"batch.kubernetes.io/controller-uid": "x"}},
                "template": {"metadata": {"labels": {"batch.kubernetes.io/controller-uid": "x",
                    "controller-uid": "x", "job-name": "j"}}}}})
        };
        let jobs = resource("batch", "Job", "jobs");
        let generated = for_snapshot(&jobs, job(false)).unwrap();
        assert_eq!(generated["spec"].get("selector"), None);
        assert_eq!(
            generated["spec"]["template"]["metadata"]["labels"],
            json!({"job-name": "j"})
        );
        let manual = for_snapshot(&jobs, job(true)).unwrap();
        assert!(manual["spec"]["selector"].is_object());
    }

    #[test]
    fn kinds_the_control_plane_derives_are_left_out() {
        assert!(left_out(&resource("", "Event", "events")).is_some());
        assert!(left_out(&resource("events.k8s.io", "Event", "events")).is_some());
        assert!(left_out(&resource("", "Node", "nodes")).is_some());
        assert!(left_out(&resource("coordination.k8s.io", "Lease", "leases")).is_some());
        assert!(left_out(&resource("", "ConfigMap", "configmaps")).is_none());
        assert!(left_out(&resource("example.com", "Widget", "widgets")).is_none());

        let service = |name: &str, selector: Value| {
            entry(
                resource("", "Service", "services"),
                json!({"metadata": {"name": name, "namespace": "shop"}, "spec": {"selector": selector}}),
            )
        };
        let endpoints = |name: &str| {
            entry(
                resource("", "Endpoints", "endpoints"),
                json!({"metadata": {"name": name, "namespace": "shop"}}),
            )
        };
        let slice = |name: &str, labels: Value| {
            entry(
                resource("discovery.k8s.io", "EndpointSlice", "endpointslices"),
                json!({"metadata": {"name": name, "namespace": "shop", "labels": labels}}),
            )
        };
        let mut entries = vec![
            service("web", json!({"app": "web"})),
            service("external", Value::Null),
            endpoints("web"),
            endpoints("external"),
            slice(
                "web-abc",
                json!({"endpointslice.kubernetes.io/managed-by": "vcsync"}),
            ),
            slice("mine", json!({"team": "a"})),
            entry(
                resource("", "ConfigMap", "configmaps"),
                json!({"metadata": {"name": "kube-root-ca.crt", "namespace": "shop"}}),
            ),
            entry(
                resource("certificates.k8s.io", "ClusterTrustBundle", "clustertrustbundles"),
                json!({"metadata": {"name": "kubernetes.io:kube-apiserver-serving:abc"},
                    "spec": {"signerName": "kubernetes.io/kube-apiserver-serving"}}),
            ),
            entry(
                resource("certificates.k8s.io", "ClusterTrustBundle", "clustertrustbundles"),
                json!({"metadata": {"name": "example.com:ca:x"}, "spec": {"signerName": "example.com/ca"}}),
            ),
        ];
        drop_derived(&mut entries);
        let kept: Vec<String> = entries.iter().map(Entry::display).collect();
        assert_eq!(
            kept,
            [
                "Service shop/web",
                "Service shop/external",
                "Endpoints shop/external",
                "EndpointSlice shop/mine",
                "ClusterTrustBundle example.com:ca:x"
            ]
        );
    }

    #[test]
    fn a_create_carries_the_old_uid_as_a_mark_and_no_uid_or_owners() {
        let e = entry(
            resource("", "ConfigMap", "configmaps"),
            json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c", "uid": "old",
                "ownerReferences": [{"uid": "o"}]}, "data": {"k": "v"}}),
        );
        assert_eq!(
            for_create(&e),
            json!({"apiVersion": "v1", "kind": "ConfigMap",
                "metadata": {"name": "c", "annotations": {RESTORED_UID_ANNOTATION: "old"}}, "data": {"k": "v"}})
        );
    }

    #[test]
    fn a_second_try_drops_allocated_addresses_but_keeps_headless() {
        let service = json!({"spec": {"clusterIP": "10.0.0.5", "clusterIPs": ["10.0.0.5"],
            "ports": [{"port": 80, "nodePort": 30080}]}});
        assert_eq!(
            without_allocations(service),
            json!({"spec": {"ports": [{"port": 80}]}})
        );
        let headless = json!({"spec": {"clusterIP": "None", "clusterIPs": ["None"]}});
        assert_eq!(without_allocations(headless.clone()), headless);
    }

    #[test]
    fn a_restored_object_compares_equal_to_its_snapshot_and_a_change_is_located() {
        let configmaps = resource("", "ConfigMap", "configmaps");
        let snapped = json!({"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "c", "uid": "old", "ownerReferences": [{"name": "o", "uid": "o1"}]},
            "data": {"k": "v"}});
        let live = json!({"metadata": {"name": "c", "uid": "new", "resourceVersion": "9",
            "annotations": {RESTORED_UID_ANNOTATION: "old"},
            "ownerReferences": [{"name": "o", "uid": "o2"}]}, "data": {"k": "v"}});
        let (a, b) = (
            comparable(&configmaps, snapped),
            comparable(&configmaps, live.clone()),
        );
        assert_eq!(first_difference(&a, &b), None);
        let mut changed = live;
        changed["data"]["k"] = json!("w");
        assert_eq!(
            first_difference(&a, &comparable(&configmaps, changed)).as_deref(),
            Some("/data/k")
        );
        assert_eq!(
            first_difference(
                &json!({"spec": {"ports": [{"port": 80}, {"port": 443}]}}),
                &json!({"spec": {"ports": [{"port": 80}, {"port": 8443}]}})
            )
            .as_deref(),
            Some("/spec/ports/1/port")
        );
        assert_eq!(
            first_difference(&json!([1]), &json!([1, 2])).as_deref(),
            Some("/")
        );
    }
}
