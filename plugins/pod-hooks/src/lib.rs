//! `pod-hooks`: puts every host pod of the virtual cluster on dedicated tenant nodes.
//!
//! ```yaml
//! plugins:
//!   pod-hooks:
//!     config:
//!       labels: {tenant: a}
//!       annotations: {cost-center: "42"}
//!       tolerations:
//!         - {key: dedicated, operator: Equal, value: tenant-a, effect: NoSchedule}
//!       nodeSelector: {pool: tenant-a}
//! ```
//!
//! A [`Hook`] on the host side for kind `Pod` adds the labels, annotations and tolerations
//! (those not already present) and the node-selector entries to every host pod; the virtual
//! pods are never changed. The pod syncer applies hooks to the desired host pod before it
//! compares it with the observed one, so a configured pod is written once, not on every
//! reconcile.
//!
//! What reaches existing pods when the configuration changes follows what the host allows
//! to change on a pod: labels and annotations are updated (and a label or annotation removed
//! from the configuration is removed from the pods), tolerations are only ever added, and the
//! node selector is immutable after creation: it applies to pods created from then on.
//!
//! Label and annotation keys under `vcsync.dev/` are vcsync's own and refused in the
//! configuration.

use std::{collections::BTreeMap, sync::Arc};

use async_trait::async_trait;
use k8s_openapi::api::core::v1::Toleration;
use serde::{Deserialize, Deserializer};
use vcsync_syncer::{Hook, Plugin, PluginConfig, RegisterContext, Result, Side};

/// Prefix of the keys vcsync reserves for itself.
const RESERVED_PREFIX: &str = "vcsync.dev/";

/// The plugin's `config`.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct PodHooksConfig {
    /// Labels added to every host pod.
    #[serde(default, deserialize_with = "unreserved")]
    pub labels: BTreeMap<String, String>,
    /// Annotations added to every host pod.
    #[serde(default, deserialize_with = "unreserved")]
    pub annotations: BTreeMap<String, String>,
    /// Tolerations added to every host pod (those it does not carry already).
    #[serde(default)]
    pub tolerations: Vec<Toleration>,
    /// Node-selector entries set on every host pod at creation.
    #[serde(default)]
    pub node_selector: BTreeMap<String, String>,
}

/// A map of labels or annotations without vcsync's reserved keys.
fn unreserved<'de, D: Deserializer<'de>>(deserializer: D) -> Result<BTreeMap<String, String>, D::Error> {
    let map = BTreeMap::<String, String>::deserialize(deserializer)?;
    match map.keys().find(|k| k.starts_with(RESERVED_PREFIX)) {
        Some(key) => Err(serde::de::Error::custom(format!(
            "key `{key}`: keys under `{RESERVED_PREFIX}` are reserved for vcsync"
        ))),
        None => Ok(map),
    }
}

/// The plugin.
#[derive(Clone, Copy, Debug, Default)]
pub struct PodHooksPlugin;

#[async_trait]
impl Plugin for PodHooksPlugin {
    fn name(&self) -> &str {
        "pod-hooks"
    }

    async fn register(&self, ctx: &RegisterContext, config: &PluginConfig) -> Result<()> {
        let config: PodHooksConfig = config.parse()?;
        tracing::info!(
            labels = config.labels.len(),
            annotations = config.annotations.len(),
            tolerations = config.tolerations.len(),
            node_selector = config.node_selector.len(),
            "pod hooks registered"
        );
        ctx.oversight().hooks().add(Arc::new(PodHook { config }));
        Ok(())
    }
}

/// The hook: adds the configured fields to host pods.
#[derive(Clone, Debug)]
pub struct PodHook {
    config: PodHooksConfig,
}

impl PodHook {
    /// A hook adding what `config` lists.
    pub fn new(config: PodHooksConfig) -> Self {
        Self { config }
    }
}

fn insert_all(object: &mut serde_json::Value, pointer: &str, entries: &BTreeMap<String, String>) {
    if entries.is_empty() {
        return;
    }
    let (parent, field) = pointer.rsplit_once('/').expect("a pointer with a field");
    let Some(parent) = object.pointer_mut(parent).and_then(|p| p.as_object_mut()) else {
        return;
    };
    let map = parent
        .entry(field)
        .or_insert_with(|| serde_json::Value::Object(Default::default()));
    if !map.is_object() {
        *map = serde_json::Value::Object(Default::default());
    }
    let map = map.as_object_mut().expect("an object");
    for (k, v) in entries {
        map.insert(k.clone(), serde_json::Value::String(v.clone()));
    }
}

impl Hook for PodHook {
    fn name(&self) -> &str {
        "pod-hooks"
    }

    fn applies_to(&self, side: Side, kind: &str) -> bool {
        side == Side::Host && kind == "Pod"
    }

    fn mutate(&self, _side: Side, _kind: &str, object: &mut serde_json::Value) {
        let Some(pod) = object.as_object_mut() else {
            return;
        };
        pod.entry("metadata")
            .or_insert_with(|| serde_json::Value::Object(Default::default()));
        pod.entry("spec")
            .or_insert_with(|| serde_json::Value::Object(Default::default()));
        insert_all(object, "/metadata/labels", &self.config.labels);
        insert_all(object, "/metadata/annotations", &self.config.annotations);
        insert_all(object, "/spec/nodeSelector", &self.config.node_selector);
        if self.config.tolerations.is_empty() {
            return;
        }
        let Some(spec) = object.pointer_mut("/spec").and_then(|s| s.as_object_mut()) else {
            return;
        };
        let list = spec
            .entry("tolerations")
            .or_insert_with(|| serde_json::Value::Array(Vec::new()));
        if !list.is_array() {
            *list = serde_json::Value::Array(Vec::new());
        }
        let list = list.as_array_mut().expect("an array");
        for toleration in &self.config.tolerations {
            let present = list
                .iter()
                .any(|t| serde_json::from_value::<Toleration>(t.clone()).ok().as_ref() == Some(toleration));
            if !present {
                list.push(serde_json::to_value(toleration).expect("tolerations serialize"));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::core::v1::Pod;
    use serde_json::json;
    use vcsync_syncer::Hooks;

    use super::*;

    fn config(text: &str) -> Result<PodHooksConfig, vcsync_syncer::config::ConfigError> {
        PluginConfig::new("pod-hooks", "vcsync.yaml", text).parse()
    }

    const FILE: &str = "plugins:\n  pod-hooks:\n    config:\n      labels: {tenant: a}\n      annotations: {note: x}\n      \
                        tolerations:\n        - {key: dedicated, operator: Equal, value: a, effect: NoSchedule}\n      \
                        nodeSelector: {pool: a}\n";

    #[test]
    fn the_hook_adds_everything_once_and_leaves_other_kinds_and_sides_alone() {
        let hooks = Hooks::default();
        hooks.add(Arc::new(PodHook::new(config(FILE).unwrap())));
        let mut pod: Pod = serde_json::from_value(json!({
            "metadata": {"name": "p", "labels": {"app": "web"}},
            "spec": {"containers": [{"name": "c"}], "tolerations": [{"key": "other", "operator": "Exists"}]}
        }))
        .unwrap();
        hooks.apply(Side::Host, &mut pod);
        let once = pod.clone();
        hooks.apply(Side::Host, &mut pod);
        assert_eq!(pod, once, "idempotent");
        let labels = pod.metadata.labels.as_ref().unwrap();
        assert_eq!((labels["app"].as_str(), labels["tenant"].as_str()), ("web", "a"));
        assert_eq!(pod.metadata.annotations.as_ref().unwrap()["note"], "x");
        let spec = pod.spec.as_ref().unwrap();
        assert_eq!(spec.node_selector.as_ref().unwrap()["pool"], "a");
        let keys: Vec<_> = spec
            .tolerations
            .iter()
            .flatten()
            .map(|t| t.key.clone().unwrap())
            .collect();
        assert_eq!(keys, ["other", "dedicated"]);

        let mut virtual_pod = Pod::default();
        hooks.apply(Side::Virtual, &mut virtual_pod);
        assert_eq!(virtual_pod, Pod::default());
    }

    #[test]
    fn an_empty_pod_gets_its_maps_created() {
        let hooks = Hooks::default();
        hooks.add(Arc::new(PodHook::new(config(FILE).unwrap())));
        let mut pod = Pod::default();
        hooks.apply(Side::Host, &mut pod);
        assert_eq!(pod.metadata.labels.unwrap()["tenant"], "a");
        assert_eq!(pod.spec.unwrap().tolerations.unwrap().len(), 1);
    }

    #[test]
    fn reserved_keys_and_unknown_fields_are_refused_with_a_location() {
        let err = config("plugins:\n  pod-hooks:\n    config:\n      labels: {vcsync.dev/managed-by: x}\n")
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("vcsync.yaml:4:"), "{err}");
        assert!(
            err.contains("`vcsync.dev/managed-by`") && err.contains("reserved"),
            "{err}"
        );
        let err = config("plugins:\n  pod-hooks:\n    config:\n      nodeselector: {}\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("unknown field `nodeselector`"), "{err}");
    }
}
