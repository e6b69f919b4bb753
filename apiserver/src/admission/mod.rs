//! What kube-apiserver does to an object between decoding and storing it: defaulting
//! ([`defaults`]), the default admission plugins that fill pods ([`plugins`]) and per-kind
//! validation ([`validate`]: metadata and the kinds' own rules, with kube-apiserver's field
//! paths, error types and details).

mod cluster;
mod config;
mod defaults;
pub(crate) mod field;
mod metadata;
mod networking;
mod plugins;
mod pod;
mod service;
mod storage;

use serde_json::Value;

pub(crate) use defaults::{default_on_create, default_on_write};
pub(crate) use plugins::admit_create;

use crate::resources::ResourceDef;

/// The validation errors of `object` about to be stored: on create (`old` None) or as an update
/// of the main resource. Empty when the object is valid.
pub(crate) fn validate(def: &ResourceDef, object: &Value, old: Option<&Value>) -> field::Errors {
    let mut errors = match old {
        None => metadata::validate_create(def, object),
        Some(_) => metadata::validate_update(object),
    };
    if def.crd.is_some() {
        return errors;
    }
    let kind_errors = match (def.group.as_str(), def.kind.as_str()) {
        ("", "Pod") => {
            let mut found = pod::validate(object, old.is_none());
            if let Some(old) = old
                && let Err(e) = crate::pod_update::validate(object, old)
            {
                found.push(e);
            }
            found
        }
        ("", "Service") => service::validate(object, old),
        ("", "ConfigMap") => config::validate_config_map(object, old),
        ("", "Secret") => config::validate_secret(object, old),
        ("", "PersistentVolumeClaim") => storage::validate(object, old),
        ("", "Namespace") => cluster::validate_namespace(object),
        ("", "Node") => cluster::validate_node(object),
        ("", "Event") => cluster::validate_event(object),
        ("", "Endpoints") => networking::validate_endpoints(object),
        ("networking.k8s.io", "Ingress") => networking::validate_ingress(object),
        ("networking.k8s.io", "NetworkPolicy") => networking::validate_network_policy(object),
        ("discovery.k8s.io", "EndpointSlice") => networking::validate_endpoint_slice(object),
        ("scheduling.k8s.io", "PriorityClass") => cluster::validate_priority_class(object, old),
        ("coordination.k8s.io", "Lease") => cluster::validate_lease(object),
        ("policy", "PodDisruptionBudget") => cluster::validate_pod_disruption_budget(object),
        _ => Vec::new(),
    };
    errors.extend(kind_errors);
    errors
}
