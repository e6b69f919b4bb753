//! The opt-in isolation objects of a cluster's host namespace (`isolation` in the values): a
//! ResourceQuota, a LimitRange, and a NetworkPolicy that keeps the tenant's pods from other
//! namespaces while they still reach each other, the control plane and DNS. The chart renders
//! the same objects (`deploy/chart/vcsync/templates/isolation.yaml`).

use std::collections::BTreeMap;

use serde_json::{Value, json};

use crate::cluster::{ClusterError, IsolationValues, Result};

use super::names::{base_name, labels};

/// `spec.hard` of the ResourceQuota unless the values change it.
pub const DEFAULT_QUOTA: &[(&str, &str)] = &[
    ("requests.cpu", "10"),
    ("requests.memory", "20Gi"),
    ("limits.cpu", "20"),
    ("limits.memory", "40Gi"),
    ("requests.storage", "100Gi"),
    ("requests.ephemeral-storage", "60Gi"),
    ("limits.ephemeral-storage", "160Gi"),
    ("count/pods", "100"),
    ("count/services", "30"),
    ("services.nodeports", "0"),
    ("services.loadbalancers", "1"),
    ("count/persistentvolumeclaims", "20"),
    ("count/configmaps", "200"),
    ("count/secrets", "300"),
];

/// Limits of a container that sets none, unless the values change them.
pub const DEFAULT_LIMITS: &[(&str, &str)] = &[("cpu", "1"), ("memory", "1Gi"), ("ephemeral-storage", "8Gi")];

/// Requests of a container that sets none, unless the values change them.
pub const DEFAULT_REQUESTS: &[(&str, &str)] =
    &[("cpu", "100m"), ("memory", "128Mi"), ("ephemeral-storage", "1Gi")];

/// Where the tenant's pods may connect beyond their namespace and DNS, unless the values say.
pub const DEFAULT_OUTGOING_CIDR: &str = "0.0.0.0/0";
/// ... less the private ranges (other tenants, the host's own services).
pub const DEFAULT_OUTGOING_EXCEPT: &[&str] =
    &["10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "100.64.0.0/10"];

/// `defaults` with `overrides` merged over them (a null override removes the key), as Helm
/// merges a values file over the chart's values.
fn merged(
    defaults: &[(&str, &str)],
    overrides: &BTreeMap<String, Option<String>>,
) -> BTreeMap<String, String> {
    let mut map: BTreeMap<String, String> = defaults
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    for (key, value) in overrides {
        match value {
            Some(value) => map.insert(key.clone(), value.clone()),
            None => map.remove(key),
        };
    }
    map
}

/// A quota on compute resources refuses every pod whose containers set none; with the
/// LimitRange off, the control plane's own pod (which sets none) would never start.
fn check(values: &IsolationValues, hard: &BTreeMap<String, String>) -> Result<()> {
    // The resources every container must then set (an extended resource's quota, a GPU's,
    // binds only the pods that request it).
    let limits_compute = hard.keys().any(|key| {
        let resource = key
            .strip_prefix("requests.")
            .or_else(|| key.strip_prefix("limits."))
            .unwrap_or(key);
        matches!(resource, "cpu" | "memory" | "ephemeral-storage")
    });
    if limits_compute && !values.limit_range.enabled.unwrap_or(false) {
        return Err(ClusterError::BadInput(
            "isolation.resourceQuota limits cpu, memory or ephemeral storage: enable \
             isolation.limitRange too (containers that set no resources, the control plane's \
             among them, are refused under such a quota), or remove those keys (null)"
                .into(),
        ));
    }
    Ok(())
}

/// The isolation objects the values enable, in apply order (before the StatefulSet, so the
/// control plane's pod is admitted under them).
pub(super) fn isolation_objects(name: &str, namespace: &str, values: &IsolationValues) -> Result<Vec<Value>> {
    let metadata =
        |object_name: String| json!({ "name": object_name, "namespace": namespace, "labels": labels(name) });
    let mut objects = Vec::new();
    if values.resource_quota.enabled.unwrap_or(false) {
        let hard = merged(DEFAULT_QUOTA, &values.resource_quota.hard);
        check(values, &hard)?;
        objects.push(json!({
            "apiVersion": "v1",
            "kind": "ResourceQuota",
            "metadata": metadata(base_name(name)),
            "spec": { "hard": hard },
        }));
    }
    if values.limit_range.enabled.unwrap_or(false) {
        objects.push(json!({
            "apiVersion": "v1",
            "kind": "LimitRange",
            "metadata": metadata(base_name(name)),
            "spec": { "limits": [{
                "type": "Container",
                "default": merged(DEFAULT_LIMITS, &values.limit_range.default),
                "defaultRequest": merged(DEFAULT_REQUESTS, &values.limit_range.default_request),
            }]},
        }));
    }
    let policy = &values.network_policy;
    if policy.enabled.unwrap_or(false) {
        let except = policy
            .outgoing_except
            .clone()
            .unwrap_or_else(|| DEFAULT_OUTGOING_EXCEPT.iter().map(|s| s.to_string()).collect());
        let mut block = json!({ "cidr": policy.outgoing_cidr.as_deref().unwrap_or(DEFAULT_OUTGOING_CIDR) });
        if !except.is_empty() {
            block["except"] = json!(except);
        }
        objects.push(json!({
            "apiVersion": "networking.k8s.io/v1",
            "kind": "NetworkPolicy",
            "metadata": metadata(format!("{}-workloads", base_name(name))),
            "spec": {
                // The tenant's pods: every host pod vcsync made for this cluster.
                "podSelector": { "matchLabels": { vcsync_translators::MANAGED_BY_LABEL: name } },
                "policyTypes": ["Ingress", "Egress"],
                // From the namespace only: each other and the control plane.
                "ingress": [{ "from": [{ "podSelector": {} }] }],
                "egress": [
                    // Each other, the control plane (its Service's endpoints) and the virtual
                    // cluster's DNS, all in this namespace.
                    { "to": [{ "podSelector": {} }] },
                    // The host's DNS, wherever it runs.
                    {
                        "to": [{
                            "namespaceSelector": {},
                            "podSelector": { "matchLabels": { "k8s-app": "kube-dns" } },
                        }],
                        "ports": [
                            { "protocol": "UDP", "port": 53 },
                            { "protocol": "TCP", "port": 53 },
                        ],
                    },
                    { "to": [{ "ipBlock": block }] },
                ],
            },
        }));
    }
    Ok(objects)
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::{
        core::v1::{LimitRange, ResourceQuota},
        networking::v1::NetworkPolicy,
    };

    use super::*;
    use crate::cluster::Values;

    fn values(yaml: &str) -> IsolationValues {
        Values::parse(yaml, "values.yaml").unwrap().isolation
    }

    #[test]
    fn nothing_is_rendered_unless_enabled() {
        assert!(isolation_objects("demo", "ns", &values("")).unwrap().is_empty());
    }

    #[test]
    fn the_quota_merges_the_values_over_the_defaults_and_a_null_removes_a_key() {
        let isolation = values(
            "isolation:\n  limitRange: {enabled: true}\n  resourceQuota:\n    enabled: true\n    hard:\n      \
             count/pods: \"10\"\n      services.loadbalancers: null\n      count/ingresses.networking.k8s.io: \"2\"\n",
        );
        let objects = isolation_objects("demo", "ns", &isolation).unwrap();
        let quota: ResourceQuota = serde_json::from_value(objects[0].clone()).unwrap();
        let hard = quota.spec.unwrap().hard.unwrap();
        assert_eq!(hard["count/pods"].0, "10");
        assert_eq!(hard["requests.cpu"].0, "10", "a default kept");
        assert_eq!(hard["count/ingresses.networking.k8s.io"].0, "2", "a key added");
        assert!(!hard.contains_key("services.loadbalancers"), "a default removed");
        assert_eq!(quota.metadata.name.as_deref(), Some("vcsync-demo"));
        assert_eq!(quota.metadata.namespace.as_deref(), Some("ns"));
        let limits: LimitRange = serde_json::from_value(objects[1].clone()).unwrap();
        let item = &limits.spec.unwrap().limits[0];
        assert_eq!(item.type_, "Container");
        assert_eq!(item.default.as_ref().unwrap()["memory"].0, "1Gi");
        assert_eq!(item.default_request.as_ref().unwrap()["cpu"].0, "100m");
    }

    #[test]
    fn a_compute_quota_without_the_limit_range_is_refused_a_count_quota_is_not() {
        let err = isolation_objects(
            "demo",
            "ns",
            &values("isolation:\n  resourceQuota: {enabled: true}\n"),
        )
        .unwrap_err();
        assert_eq!(err.exit_code(), crate::cluster::exit::BAD_INPUT);
        assert!(err.to_string().contains("isolation.limitRange"), "{err}");
        let counts_only = "isolation:\n  resourceQuota:\n    enabled: true\n    hard:\n      requests.cpu: null\n      \
             requests.memory: null\n      limits.cpu: null\n      limits.memory: null\n      \
             requests.ephemeral-storage: null\n      limits.ephemeral-storage: null\n";
        let objects = isolation_objects("demo", "ns", &values(counts_only)).unwrap();
        assert_eq!(objects.len(), 1);
        let gpus =
            format!("{counts_only}      requests.nvidia.com/gpu: \"4\"\n      requests.storage: 1Ti\n");
        let objects = isolation_objects("demo", "ns", &values(&gpus)).unwrap();
        assert_eq!(
            objects.len(),
            1,
            "an extended resource's quota binds only the pods asking for it"
        );
    }

    #[test]
    fn the_network_policy_selects_the_tenants_pods_and_lets_them_reach_the_namespace_dns_and_the_internet() {
        let objects = isolation_objects(
            "demo",
            "ns",
            &values("isolation:\n  networkPolicy: {enabled: true}\n"),
        )
        .unwrap();
        let policy: NetworkPolicy = serde_json::from_value(objects[0].clone()).unwrap();
        let spec = policy.spec.unwrap();
        assert_eq!(
            spec.pod_selector.unwrap().match_labels.unwrap()["vcsync.dev/managed-by"],
            "demo"
        );
        let ingress = spec.ingress.unwrap();
        let from = ingress[0].from.as_ref().unwrap();
        assert!(from[0].namespace_selector.is_none(), "same namespace only");
        let egress = spec.egress.unwrap();
        assert_eq!(egress.len(), 3);
        let dns = &egress[1];
        assert_eq!(dns.ports.as_ref().unwrap().len(), 2);
        let block = egress[2].to.as_ref().unwrap()[0].ip_block.clone().unwrap();
        assert_eq!(block.cidr, "0.0.0.0/0");
        assert!(block.except.unwrap().contains(&"10.0.0.0/8".to_string()));
        let open = isolation_objects(
            "demo",
            "ns",
            &values("isolation:\n  networkPolicy: {enabled: true, outgoingExcept: []}\n"),
        )
        .unwrap();
        assert!(open[0].pointer("/spec/egress/2/to/0/ipBlock/except").is_none());
    }
}
