//! The objects of a cluster, rendered from its values (`vcsync cluster render` prints them).

use std::collections::BTreeMap;

use anyhow::Context;
use k8s_openapi::{
    ByteString,
    api::{
        core::v1::{ConfigMap, Namespace, Secret, ServiceAccount},
        rbac::v1::{PolicyRule, Role, RoleBinding, RoleRef, Subject},
    },
};
use kube::api::ObjectMeta;
use serde_json::{Value, json};
use vcsync_syncer::config::ServiceAddress;

use crate::cluster::{Result, Values};

use super::{
    expose::{self, api_ingress, api_service},
    isolation::isolation_objects,
    names::*,
    pod_security::*,
    statefulset::*,
};

/// The host objects of cluster `name`, in apply order, as JSON.
pub fn render(name: &str, values: &Values) -> Result<Vec<Value>> {
    render_with(name, values, None)
}

/// [`render`], with the service CIDR `cluster create` detected (the stored values stay the
/// requested ones, so the same request later compares equal).
pub(super) fn render_with(name: &str, values: &Values, detected_cidr: Option<&str>) -> Result<Vec<Value>> {
    let stored = values;
    let mut effective;
    let values = match detected_cidr {
        Some(cidr) if explicit_service_cidr(values).is_none() => {
            effective = values.clone();
            effective.control_plane.service_cidr = Some(cidr.to_string());
            &effective
        }
        _ => values,
    };
    expose::check(values)?;
    let detects = explicit_service_cidr(values).is_none();
    let ns = namespace_of(name, values);
    let base = base_name(name);
    let mut config = with_pod_security_standard(values)?.syncer_config(name, &ns)?;
    config.virtual_cluster.kubeconfig = Some("/data/kubeconfig.yaml".into());
    // Synced pods reach the virtual API server through the cluster's Service, unless the values
    // say otherwise.
    config
        .sync
        .pods
        .kubernetes_service
        .get_or_insert_with(|| ServiceAddress::host_service(&base, SERVICE_PORT));
    // The kubelet API of the virtual nodes (kubectl logs, exec, port-forward), unless the values
    // have a kubelet section of their own.
    if !values.config.as_ref().is_some_and(|c| c.contains_key("kubelet")) {
        config.kubelet.listen = Some(KUBELET_LISTEN.parse().expect("a socket address"));
        config.kubelet.client_ca_file = Some(K3S_CLIENT_CA.into());
    }
    // The tenant's host copies are owned by a ConfigMap of the cluster's, unless the values
    // say otherwise or name an owner of their own.
    let owner =
        (values.set_owner != Some(false) && config.host_owner.is_none()).then(|| owner_config_map(name));
    if owner.is_some() {
        config.host_owner = owner.clone();
    }
    let config_yaml = serde_yaml_ng::to_string(&config).context("config")?;
    let meta = |object_name: &str, namespaced: bool| ObjectMeta {
        name: Some(object_name.into()),
        namespace: namespaced.then(|| ns.clone()),
        labels: Some(labels(name)),
        ..ObjectMeta::default()
    };
    let mut objects: Vec<Value> = Vec::new();
    let mut push = |kind: &str, api_version: &str, object: Value| {
        let mut object = object;
        object["apiVersion"] = json!(api_version);
        object["kind"] = json!(kind);
        // Fixed key order for readable manifests.
        let mut ordered = serde_json::Map::new();
        for key in ["apiVersion", "kind", "metadata"] {
            ordered.insert(key.into(), object[key].take());
        }
        if let Value::Object(rest) = object {
            for (k, v) in rest {
                if !ordered.contains_key(&k) {
                    ordered.insert(k, v);
                }
            }
        }
        objects.push(Value::Object(ordered));
    };
    let to_json = |v: &dyn erased::Ser| v.to_json();

    let mut namespace_meta = meta(&ns, false);
    namespace_meta
        .labels
        .get_or_insert_with(Default::default)
        .extend(pod_security_labels(values)?);
    push(
        "Namespace",
        "v1",
        to_json(&Namespace {
            metadata: namespace_meta,
            ..Default::default()
        }),
    );
    push(
        "ServiceAccount",
        "v1",
        to_json(&ServiceAccount {
            metadata: meta(&base, true),
            ..Default::default()
        }),
    );
    let rbac = vcsync_syncer::rbac::host_rbac(&config, &base);
    let relabel = |mut m: ObjectMeta| {
        m.labels = Some(labels(name));
        m
    };
    if let Some((mut role, mut binding)) = rbac.role {
        role.metadata = relabel(role.metadata);
        binding.metadata = relabel(binding.metadata);
        push("Role", "rbac.authorization.k8s.io/v1", to_json(&role));
        push("RoleBinding", "rbac.authorization.k8s.io/v1", to_json(&binding));
    }
    if let Some((mut role, mut binding)) = rbac.cluster_role {
        role.metadata = relabel(role.metadata);
        if detects {
            // The init container reads the host's ServiceCIDR objects.
            role.rules.get_or_insert_with(Vec::new).push(PolicyRule {
                api_groups: Some(vec!["networking.k8s.io".into()]),
                resources: Some(vec!["servicecidrs".into()]),
                verbs: vec!["get".into(), "list".into()],
                ..Default::default()
            });
        }
        binding.metadata = relabel(binding.metadata);
        push("ClusterRole", "rbac.authorization.k8s.io/v1", to_json(&role));
        push(
            "ClusterRoleBinding",
            "rbac.authorization.k8s.io/v1",
            to_json(&binding),
        );
    }
    // The control plane publishes its kubeconfig in one Secret of the namespace; the init
    // container `service-ip` (and vcsync, for the pods' KUBERNETES_SERVICE_HOST) reads the
    // cluster's Service; detecting the service CIDR, the init container creates a Service in
    // dry-run mode (the host's answer names the valid range).
    let cp = format!("{base}-control-plane");
    let mut cp_rules = vec![
        PolicyRule {
            api_groups: Some(vec![String::new()]),
            resources: Some(vec!["secrets".into()]),
            verbs: vec!["create".into(), "get".into(), "patch".into(), "update".into()],
            ..Default::default()
        },
        PolicyRule {
            api_groups: Some(vec![String::new()]),
            resources: Some(vec!["services".into()]),
            resource_names: Some(vec![base.clone()]),
            verbs: vec!["get".into()],
            ..Default::default()
        },
    ];
    if detects {
        cp_rules.push(PolicyRule {
            api_groups: Some(vec![String::new()]),
            resources: Some(vec!["services".into()]),
            verbs: vec!["create".into()],
            ..Default::default()
        });
    }
    push(
        "Role",
        "rbac.authorization.k8s.io/v1",
        to_json(&Role {
            metadata: meta(&cp, true),
            rules: Some(cp_rules),
        }),
    );
    push(
        "RoleBinding",
        "rbac.authorization.k8s.io/v1",
        to_json(&RoleBinding {
            metadata: meta(&cp, true),
            role_ref: RoleRef {
                api_group: Some("rbac.authorization.k8s.io".into()),
                kind: "Role".into(),
                name: cp.clone(),
            },
            subjects: Some(vec![Subject {
                kind: "ServiceAccount".into(),
                name: base.clone(),
                namespace: Some(ns.clone()),
                ..Default::default()
            }]),
        }),
    );
    push(
        "Secret",
        "v1",
        to_json(&Secret {
            metadata: meta(&config_secret(name), true),
            data: Some(BTreeMap::from([
                ("vcsync.yaml".to_string(), ByteString(config_yaml.into_bytes())),
                (
                    "values.yaml".to_string(),
                    ByteString(stored.to_yaml().into_bytes()),
                ),
            ])),
            ..Default::default()
        }),
    );
    if let Some(owner) = owner {
        let mut owner_meta = meta(&owner, true);
        owner_meta.annotations = Some(BTreeMap::from([(
            "vcsync.dev/purpose".to_string(),
            "owns the virtual cluster's host copies: deleting it deletes them".to_string(),
        )]));
        push(
            "ConfigMap",
            "v1",
            to_json(&ConfigMap {
                metadata: owner_meta,
                ..Default::default()
            }),
        );
    }
    push("Service", "v1", to_json(&api_service(name, &ns, values)));
    if let Some(ingress) = api_ingress(name, &ns, values) {
        push("Ingress", "networking.k8s.io/v1", ingress);
    }
    for object in isolation_objects(name, &ns, &values.isolation)? {
        let kind = object["kind"].as_str().unwrap_or_default().to_owned();
        let api_version = object["apiVersion"].as_str().unwrap_or_default().to_owned();
        push(&kind, &api_version, object);
    }
    push("StatefulSet", "apps/v1", to_json(&statefulset(name, &ns, values)));
    Ok(objects)
}

pub(super) mod erased {
    /// Serialization to JSON of any k8s-openapi object, for the one closure in `render`.
    pub trait Ser {
        fn to_json(&self) -> serde_json::Value;
    }
    impl<T: serde::Serialize> Ser for T {
        fn to_json(&self) -> serde_json::Value {
            serde_json::to_value(self).expect("objects serialize")
        }
    }
}

/// [`render`] as a multi-document YAML stream.
pub fn render_yaml(name: &str, values: &Values) -> Result<String> {
    let mut out = String::new();
    for object in render(name, values)? {
        out.push_str("---\n");
        out.push_str(&serde_yaml_ng::to_string(&object).context("yaml")?);
    }
    Ok(out)
}
