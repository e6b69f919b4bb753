//! The least-privilege host RBAC of a configuration: exactly the resources and verbs the
//! syncers it switches on use on the host, and nothing for those it switches off.
//!
//! Pure: a [`Config`] in, Kubernetes RBAC objects out (`vcsync rbac` prints them; deploy/
//! holds the output for the example configuration, kept equal by a test).
//!
//! Choices:
//! - vcsync writes host objects with create, update (full replace) and delete only; it never
//!   patches, so `patch` is not granted.
//! - In the `single` mapping everything namespaced is a Role in the host namespace. In the
//!   `perNamespace` mapping vcsync creates and deletes host namespaces and watches its objects
//!   in all of them; Kubernetes RBAC cannot limit a grant to namespaces matching a name
//!   prefix, so the namespaced rules become cluster-wide (the price of that mode, stated in
//!   SECURITY.md).
//! - Cluster-wide reads of nodes, storage classes and ingress classes appear only when those
//!   syncers are on; nodes are read in both node modes (fake nodes copy the host node's
//!   labels and conditions; without the grant they fall back to synthetic values).
//! - Plugins that sync other kinds (crd-sync) need rules of their own; they are not derived
//!   here.
//! - In the `single` mapping the one cluster-scoped object read besides those is the host
//!   namespace itself (`resourceNames`-limited), for the start-up check that it exists.
//! - The kubelet API (`kubelet.listen`) reads host pods' `log` and opens their `exec`,
//!   `attach` and `portforward` subresources, in the namespaces vcsync writes pods to; it never
//!   needs `nodes/proxy`, which would reach every pod of a host node. Its stats and metrics
//!   come from the host's PodMetrics (`metrics.k8s.io` pods, get and list) in those namespaces.
//! - The virtual cluster needs no RBAC: vcsync uses its admin kubeconfig there (the kubelet API
//!   creates TokenReviews and SubjectAccessReviews with it).

use std::collections::BTreeMap;

use k8s_openapi::{
    api::rbac::v1::{ClusterRole, ClusterRoleBinding, PolicyRule, Role, RoleBinding, RoleRef, Subject},
    apimachinery::pkg::apis::meta::v1::ObjectMeta,
};

use crate::config::{Config, NamespaceMappingMode};

/// Verbs of a kind vcsync reads.
const READ: &[&str] = &["get", "list", "watch"];
/// Verbs of a kind vcsync writes.
const WRITE: &[&str] = &["get", "list", "watch", "create", "update", "delete"];
/// Verbs of the one object vcsync keeps for itself: the identity record (a ConfigMap).
const RECORD: &[&str] = &["get", "create", "update"];
/// Verbs of what vcsync only reports: Events on the host.
const REPORT: &[&str] = &["create"];
/// Verbs of a host pod's log, which the kubelet API reads for `kubectl logs`.
const LOG: &[&str] = &["get"];
/// Verbs of a host pod's streams (exec, attach, port-forward), which the kubelet API opens:
/// `create` for SPDY (POST), `get` for WebSocket (GET).
const STREAM: &[&str] = &["get", "create"];
/// Verbs of host PodMetrics (`metrics.k8s.io`), which the kubelet API reads for its stats.
const METRICS: &[&str] = &["get", "list"];

/// What vcsync does with one host resource.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Access {
    Read,
    Write,
    Record,
    Report,
    Log,
    Stream,
    Metrics,
}

/// One host resource vcsync uses: API group, plural, whether namespaced, access.
#[derive(Clone, Copy, Debug)]
struct Use {
    group: &'static str,
    resource: &'static str,
    namespaced: bool,
    access: Access,
}

const fn namespaced(group: &'static str, resource: &'static str, access: Access) -> Use {
    Use {
        group,
        resource,
        namespaced: true,
        access,
    }
}

const fn cluster(group: &'static str, resource: &'static str, access: Access) -> Use {
    Use {
        group,
        resource,
        namespaced: false,
        access,
    }
}

/// The host resources the syncers `config` switches on use.
fn uses(config: &Config) -> Vec<Use> {
    use Access::{Read, Write};
    let sync = &config.sync;
    let kubelet = config.kubelet.listen.is_some();
    // Pods are always synced; each pod's service account token lives in a host secret.
    // The identity record (a ConfigMap) and the Events that report what the host guard holds
    // back are always needed (crate::safety).
    let mut uses = vec![
        namespaced("", "pods", Write),
        namespaced("", "secrets", Write),
        namespaced("", "events", Access::Report),
    ];
    let switched = [
        (sync.config_maps.enabled, namespaced("", "configmaps", Write)),
        (
            !sync.config_maps.enabled,
            namespaced("", "configmaps", Access::Record),
        ),
        // The owner of the host copies (`hostOwner`) is watched.
        (
            !sync.config_maps.enabled && config.host_owner.is_some(),
            namespaced("", "configmaps", Read),
        ),
        (sync.services.enabled, namespaced("", "services", Write)),
        // Selector-less services' Endpoints go down; selector services' come up.
        (sync.services.enabled, namespaced("", "endpoints", Write)),
        (
            sync.services.enabled,
            namespaced("discovery.k8s.io", "endpointslices", Read),
        ),
        (
            sync.persistent_volume_claims.enabled,
            namespaced("", "persistentvolumeclaims", Write),
        ),
        (
            sync.service_accounts.enabled,
            namespaced("", "serviceaccounts", Write),
        ),
        (
            sync.ingresses.enabled,
            namespaced("networking.k8s.io", "ingresses", Write),
        ),
        (
            sync.network_policies.enabled,
            namespaced("networking.k8s.io", "networkpolicies", Write),
        ),
        (
            sync.pod_disruption_budgets.enabled,
            namespaced("policy", "poddisruptionbudgets", Write),
        ),
        (sync.events.enabled, namespaced("", "events", Read)),
        (
            sync.priority_classes.enabled,
            cluster("scheduling.k8s.io", "priorityclasses", Write),
        ),
        (
            sync.storage_classes.enabled,
            cluster("storage.k8s.io", "storageclasses", Read),
        ),
        (
            sync.ingress_classes.enabled,
            cluster("networking.k8s.io", "ingressclasses", Read),
        ),
        (true, cluster("", "nodes", Read)),
        // The kubelet API of the virtual nodes: namespaced pod subresources, never nodes/proxy.
        (kubelet, namespaced("", "pods/log", Access::Log)),
        (kubelet, namespaced("", "pods/exec", Access::Stream)),
        (kubelet, namespaced("", "pods/attach", Access::Stream)),
        (kubelet, namespaced("", "pods/portforward", Access::Stream)),
        (kubelet, namespaced("metrics.k8s.io", "pods", Access::Metrics)),
        (
            config.namespace_mapping == NamespaceMappingMode::PerNamespace,
            cluster("", "namespaces", Write),
        ),
    ];
    uses.extend(switched.into_iter().filter(|(on, _)| *on).map(|(_, u)| u));
    uses
}

/// Rules for `uses`, one per (group, verbs), resources sorted: stable output.
fn rules<'a>(uses: impl Iterator<Item = &'a Use>) -> Vec<PolicyRule> {
    let mut grouped: BTreeMap<(&str, Access), Vec<&str>> = BTreeMap::new();
    for u in uses {
        grouped.entry((u.group, u.access)).or_default().push(u.resource);
    }
    grouped
        .into_iter()
        .map(|((group, access), mut resources)| {
            resources.sort_unstable();
            let verbs = match access {
                Access::Read => READ,
                Access::Write => WRITE,
                Access::Record => RECORD,
                Access::Report => REPORT,
                Access::Log => LOG,
                Access::Stream => STREAM,
                Access::Metrics => METRICS,
            };
            PolicyRule {
                api_groups: Some(vec![group.to_string()]),
                resources: Some(resources.into_iter().map(str::to_string).collect()),
                verbs: verbs.iter().map(|v| v.to_string()).collect(),
                ..PolicyRule::default()
            }
        })
        .collect()
}

/// The host RBAC objects of a configuration.
#[derive(Clone, Debug, PartialEq)]
pub struct HostRbac {
    /// Namespaced grants in the host namespace (`single` mapping).
    pub role: Option<(Role, RoleBinding)>,
    /// Cluster-wide grants.
    pub cluster_role: Option<(ClusterRole, ClusterRoleBinding)>,
}

/// Least-privilege host RBAC for `config`, bound to `service_account` in the host namespace.
pub fn host_rbac(config: &Config, service_account: &str) -> HostRbac {
    let uses = uses(config);
    let per_namespace = config.namespace_mapping == NamespaceMappingMode::PerNamespace;
    let (in_namespace, cluster_wide): (Vec<&Use>, Vec<&Use>) =
        uses.iter().partition(|u| u.namespaced && !per_namespace);
    let name = format!("vcsync-{}", config.instance);
    // Not the ownership label: these objects are installed for vcsync, not synced by it.
    let labels = BTreeMap::from([
        ("app.kubernetes.io/name".to_string(), "vcsync".to_string()),
        ("app.kubernetes.io/instance".to_string(), config.instance.clone()),
    ]);
    let subject = Subject {
        kind: "ServiceAccount".into(),
        name: service_account.into(),
        namespace: Some(config.host_namespace.clone()),
        ..Subject::default()
    };
    let meta = |namespace: Option<&str>| ObjectMeta {
        name: Some(name.clone()),
        namespace: namespace.map(str::to_string),
        labels: Some(labels.clone()),
        ..ObjectMeta::default()
    };
    let role_ref = |kind: &str| RoleRef {
        api_group: Some("rbac.authorization.k8s.io".into()),
        kind: kind.into(),
        name: name.clone(),
    };
    let namespace = Some(config.host_namespace.as_str());
    let role = (!in_namespace.is_empty()).then(|| {
        (
            Role {
                metadata: meta(namespace),
                rules: Some(rules(in_namespace.into_iter())),
            },
            RoleBinding {
                metadata: meta(namespace),
                role_ref: role_ref("Role"),
                subjects: Some(vec![subject.clone()]),
            },
        )
    });
    let mut cluster_rules = rules(cluster_wide.into_iter());
    if !per_namespace {
        // The start-up check that the host namespace exists reads that one object.
        cluster_rules.push(PolicyRule {
            api_groups: Some(vec![String::new()]),
            resources: Some(vec!["namespaces".into()]),
            resource_names: Some(vec![config.host_namespace.clone()]),
            verbs: vec!["get".into()],
            ..PolicyRule::default()
        });
    }
    let cluster_role = (!cluster_rules.is_empty()).then(|| {
        (
            ClusterRole {
                metadata: meta(None),
                rules: Some(cluster_rules),
                ..ClusterRole::default()
            },
            ClusterRoleBinding {
                metadata: meta(None),
                role_ref: role_ref("ClusterRole"),
                subjects: Some(vec![subject]),
            },
        )
    });
    HostRbac { role, cluster_role }
}

impl HostRbac {
    /// The objects as one multi-document YAML stream, in apply order.
    pub fn to_yaml(&self) -> String {
        let mut docs: Vec<String> = Vec::new();
        let mut push = |value: serde_json::Value| {
            docs.push(serde_yaml_ng::to_string(&value).expect("RBAC objects serialize"));
        };
        if let Some((role, binding)) = &self.role {
            push(with_type("Role", role));
            push(with_type("RoleBinding", binding));
        }
        if let Some((role, binding)) = &self.cluster_role {
            push(with_type("ClusterRole", role));
            push(with_type("ClusterRoleBinding", binding));
        }
        docs.join("---\n")
    }
}

/// `object` with its apiVersion and kind (k8s-openapi adds them only through `Resource`,
/// whose constants need a version feature this library crate does not pick).
fn with_type(kind: &str, object: &impl serde::Serialize) -> serde_json::Value {
    let mut value = serde_json::to_value(object).expect("RBAC objects serialize");
    let fields = value.as_object_mut().expect("an object");
    fields.insert("apiVersion".into(), "rbac.authorization.k8s.io/v1".into());
    fields.insert("kind".into(), kind.into());
    let mut ordered = serde_json::Map::new();
    for key in ["apiVersion", "kind", "metadata"] {
        if let Some(v) = fields.remove(key) {
            ordered.insert(key.into(), v);
        }
    }
    ordered.extend(std::mem::take(fields));
    serde_json::Value::Object(ordered)
}

#[cfg(test)]
mod tests {
    use serde::Deserialize;

    use super::*;

    fn config(extra: &str) -> Config {
        Config::from_yaml(&format!("instance: vc\nhostNamespace: vc-ns\n{extra}"), "t.yaml").unwrap()
    }

    fn granted(rules: &[PolicyRule], group: &str, resource: &str) -> Vec<String> {
        rules
            .iter()
            .filter(|r| r.api_groups.as_deref() == Some(&[group.to_string()][..]))
            .filter(|r| r.resources.iter().flatten().any(|x| x == resource))
            .flat_map(|r| r.verbs.clone())
            .collect()
    }

    #[test]
    fn defaults_grant_writes_in_the_host_namespace_and_cluster_reads_only() {
        let rbac = host_rbac(&config(""), "vcsync");
        let (role, binding) = rbac.role.unwrap();
        let rules = role.rules.unwrap();
        assert_eq!(role.metadata.namespace.as_deref(), Some("vc-ns"));
        assert_eq!(granted(&rules, "", "pods"), WRITE);
        let mut events = granted(&rules, "", "events");
        events.sort();
        assert_eq!(
            events,
            ["create", "get", "list", "watch"],
            "read, and report on the host"
        );
        assert_eq!(granted(&rules, "", "configmaps"), WRITE);
        assert_eq!(granted(&rules, "discovery.k8s.io", "endpointslices"), READ);
        assert!(
            granted(&rules, "", "serviceaccounts").is_empty(),
            "off by default"
        );
        assert!(
            rules
                .iter()
                .all(|r| !r.verbs.iter().any(|v| v == "patch" || v == "*"))
        );
        let subject = &binding.subjects.unwrap()[0];
        assert_eq!(
            (subject.name.as_str(), subject.namespace.as_deref()),
            ("vcsync", Some("vc-ns"))
        );

        let (cluster_role, _) = rbac.cluster_role.unwrap();
        let cluster_rules = cluster_role.rules.unwrap();
        assert!(
            cluster_rules
                .iter()
                .all(|r| r.verbs.iter().all(|v| READ.contains(&v.as_str()))),
            "{cluster_rules:?}"
        );
        let namespace_read = cluster_rules.iter().find(|r| r.resource_names.is_some()).unwrap();
        assert_eq!(
            namespace_read.resource_names.as_deref(),
            Some(&["vc-ns".to_string()][..])
        );
        assert_eq!(granted(&cluster_rules, "", "nodes"), READ);
        assert_eq!(granted(&cluster_rules, "storage.k8s.io", "storageclasses"), READ);
        assert_eq!(granted(&cluster_rules, "", "namespaces"), ["get"], "its own only");
    }

    #[test]
    fn the_kubelet_api_gets_pod_streams_in_the_host_namespace_and_never_node_proxy() {
        let without = host_rbac(&config(""), "vcsync");
        let rules = without.role.unwrap().0.rules.unwrap();
        assert!(
            granted(&rules, "", "pods/exec").is_empty(),
            "no kubelet API, no streams"
        );
        for mapping in ["single", "perNamespace"] {
            let rbac = host_rbac(
                &config(&format!(
                    "namespaceMapping: {mapping}
kubelet:
  listen: 0.0.0.0:10250
"
                )),
                "vcsync",
            );
            let mut rules = rbac.role.map(|r| r.0.rules.unwrap()).unwrap_or_default();
            let cluster_rules = rbac.cluster_role.unwrap().0.rules.unwrap();
            if mapping == "perNamespace" {
                rules = cluster_rules.clone();
            }
            assert_eq!(granted(&rules, "", "pods/log"), LOG, "{mapping}");
            for stream in ["pods/exec", "pods/attach", "pods/portforward"] {
                assert_eq!(granted(&rules, "", stream), STREAM, "{mapping}: {stream}");
            }
            assert_eq!(granted(&rules, "metrics.k8s.io", "pods"), METRICS, "{mapping}");
            let everything = rules.iter().chain(&cluster_rules);
            let resources: Vec<&String> = everything.flat_map(|r| r.resources.iter().flatten()).collect();
            assert!(
                !resources.iter().any(|r| r.starts_with("nodes/")),
                "{mapping}: {resources:?}"
            );
        }
    }

    #[test]
    fn the_identity_record_is_granted_without_config_map_sync() {
        let rbac = host_rbac(&config("sync:\n  configMaps: {enabled: false}\n"), "vcsync");
        let rules = rbac.role.unwrap().0.rules.unwrap();
        assert_eq!(granted(&rules, "", "configmaps"), RECORD);
        let owned = host_rbac(
            &config("hostOwner: vcsync-demo-owner\nsync:\n  configMaps: {enabled: false}\n"),
            "vcsync",
        );
        let mut verbs = granted(&owned.role.unwrap().0.rules.unwrap(), "", "configmaps");
        verbs.sort();
        assert_eq!(
            verbs,
            ["create", "get", "get", "list", "update", "watch"],
            "the owner is watched"
        );
    }

    #[test]
    fn switched_off_syncers_get_nothing() {
        let rbac = host_rbac(
            &config(
                "sync:\n  storageClasses: {enabled: false}\n  ingressClasses: {enabled: false}\n  \
                 services: {enabled: false}\n  events: {enabled: false}\n",
            ),
            "vcsync",
        );
        let rules = rbac.role.unwrap().0.rules.unwrap();
        assert!(granted(&rules, "", "services").is_empty());
        assert_eq!(
            granted(&rules, "", "events"),
            REPORT,
            "only the host guard's reports"
        );
        let cluster_rules = rbac.cluster_role.unwrap().0.rules.unwrap();
        assert_eq!(
            cluster_rules.len(),
            2,
            "only nodes and the host namespace: {cluster_rules:?}"
        );
    }

    #[test]
    fn per_namespace_mapping_moves_namespaced_grants_cluster_wide_and_manages_namespaces() {
        let rbac = host_rbac(&config("namespaceMapping: perNamespace\n"), "vcsync");
        assert!(rbac.role.is_none());
        let rules = rbac.cluster_role.unwrap().0.rules.unwrap();
        assert_eq!(granted(&rules, "", "namespaces"), WRITE);
        assert_eq!(granted(&rules, "", "pods"), WRITE);
    }

    #[test]
    fn priority_classes_are_the_one_cluster_scoped_write() {
        let rbac = host_rbac(&config("sync:\n  priorityClasses: {enabled: true}\n"), "vcsync");
        let rules = rbac.cluster_role.unwrap().0.rules.unwrap();
        assert_eq!(granted(&rules, "scheduling.k8s.io", "priorityclasses"), WRITE);
        let writes: Vec<_> = rules.iter().filter(|r| r.verbs == WRITE).collect();
        assert_eq!(writes.len(), 1, "{writes:?}");
    }

    #[test]
    fn yaml_is_four_typed_documents() {
        let yaml = host_rbac(&config(""), "vcsync").to_yaml();
        let kinds: Vec<String> = serde_yaml_ng::Deserializer::from_str(&yaml)
            .map(|doc| {
                let value = serde_json::Value::deserialize(doc).unwrap();
                value["kind"].as_str().unwrap().to_string()
            })
            .collect();
        assert_eq!(
            kinds,
            ["Role", "RoleBinding", "ClusterRole", "ClusterRoleBinding"]
        );
    }
}
