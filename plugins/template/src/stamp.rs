//! The hook: an annotation on the host copies of the configured kinds.

use vcsync_syncer::{Hook, Side};

use crate::config::TemplateConfig;

/// Adds `annotation: <value>` to host objects of the configured kinds.
pub struct StampHook {
    config: TemplateConfig,
    value: String,
}

impl StampHook {
    /// A hook stamping `value`.
    pub fn new(config: TemplateConfig, value: &str) -> Self {
        Self {
            config,
            value: value.to_string(),
        }
    }
}

impl Hook for StampHook {
    fn name(&self) -> &str {
        "template"
    }

    fn applies_to(&self, side: Side, kind: &str) -> bool {
        side == Side::Host && self.config.kinds.iter().any(|k| k == kind)
    }

    /// Must be idempotent and depend only on the object: syncers run hooks on the desired
    /// object before comparing it with the observed one on every reconcile.
    fn mutate(&self, _side: Side, _kind: &str, object: &mut serde_json::Value) {
        if let Some(meta) = object.get_mut("metadata").and_then(|m| m.as_object_mut()) {
            let annotations = meta
                .entry("annotations")
                .or_insert_with(|| serde_json::Value::Object(Default::default()));
            if let Some(annotations) = annotations.as_object_mut() {
                annotations.insert(
                    self.config.annotation.clone(),
                    serde_json::Value::String(self.value.clone()),
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::core::v1::{ConfigMap, Pod};
    use vcsync_syncer::Hooks;

    use std::sync::Arc;

    use vcsync_syncer::PluginConfig;

    use super::*;

    #[test]
    fn stamps_host_objects_of_its_kinds_only() {
        let text = "plugins:\n  template:\n    config:\n      annotation: example.com/by\n";
        let config: TemplateConfig = PluginConfig::new("template", "f.yaml", text).parse().unwrap();
        assert_eq!(config.kinds, ["ConfigMap"]);
        let hooks = Hooks::default();
        hooks.add(Arc::new(StampHook::new(config, "tenant-a")));

        let mut config_map = ConfigMap::default();
        hooks.apply(Side::Host, &mut config_map);
        assert_eq!(
            config_map.metadata.annotations.unwrap()["example.com/by"],
            "tenant-a"
        );

        let mut virtual_copy = ConfigMap::default();
        hooks.apply(Side::Virtual, &mut virtual_copy);
        assert_eq!(virtual_copy.metadata.annotations, None);
        let mut pod = Pod::default();
        hooks.apply(Side::Host, &mut pod);
        assert_eq!(pod.metadata.annotations, None);
    }

    #[test]
    fn mistakes_are_reported_with_a_location() {
        let text = "plugins:\n  template:\n    config:\n      anotation: x\n";
        let err = PluginConfig::new("template", "f.yaml", text)
            .parse::<TemplateConfig>()
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("f.yaml:4:7:"), "{err}");
    }
}
