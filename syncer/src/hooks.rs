//! Hooks: plugins inspect and mutate objects just before vcsync writes them.
//!
//! Syncers apply the hooks to the object they want to write *before* comparing it with what
//! exists, so a hook's change is part of the desired state and never causes repeated writes.
//! Hooks run in registration order (plugins in the order the binary lists them).

use std::sync::{Arc, RwLock};

use crate::{error::Side, resource::SyncResource};

/// Mutates objects of some kinds before they are written to one side.
pub trait Hook: Send + Sync + 'static {
    /// Name, for logs.
    fn name(&self) -> &str;

    /// Whether the hook wants objects of `kind` (`Pod`, `ConfigMap`, ...) written to `side`.
    fn applies_to(&self, side: Side, kind: &str) -> bool;

    /// Changes `object` (the full object as JSON) in place.
    fn mutate(&self, side: Side, kind: &str, object: &mut serde_json::Value);
}

/// The hooks registered on a manager.
#[derive(Clone, Default)]
pub struct Hooks {
    hooks: Arc<RwLock<Vec<Arc<dyn Hook>>>>,
}

impl Hooks {
    /// Adds a hook after those already registered.
    pub fn add(&self, hook: Arc<dyn Hook>) {
        self.hooks.write().expect("hooks lock").push(hook);
    }

    /// Number of registered hooks.
    pub fn len(&self) -> usize {
        self.hooks.read().expect("hooks lock").len()
    }

    /// Whether no hook is registered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The hooks that want objects of `kind` written to `side`, in order.
    fn applicable(&self, side: Side, kind: &str) -> Vec<Arc<dyn Hook>> {
        let hooks = self.hooks.read().expect("hooks lock");
        hooks
            .iter()
            .filter(|h| h.applies_to(side, kind))
            .cloned()
            .collect()
    }

    /// Runs every hook that applies to `K` on `side` over `object`.
    pub fn apply<K: SyncResource>(&self, side: Side, object: &mut K) {
        let kind = K::kind(&());
        let hooks = self.applicable(side, &kind);
        if hooks.is_empty() {
            return;
        }
        let mut json = serde_json::to_value(&*object).expect("Kubernetes objects serialize");
        run(&hooks, side, &kind, &mut json);
        match serde_json::from_value(json) {
            Ok(mutated) => *object = mutated,
            Err(err) => tracing::warn!(
                kind = %kind,
                error = %err,
                hooks = ?hooks.iter().map(|h| h.name().to_string()).collect::<Vec<_>>(),
                "a hook produced an invalid object; ignoring the hooks' changes"
            ),
        }
    }

    /// Runs every hook that applies to `kind` on `side` over an untyped object (custom
    /// resources, say).
    pub fn apply_json(&self, side: Side, kind: &str, object: &mut serde_json::Value) {
        run(&self.applicable(side, kind), side, kind, object);
    }
}

fn run(hooks: &[Arc<dyn Hook>], side: Side, kind: &str, object: &mut serde_json::Value) {
    for hook in hooks {
        hook.mutate(side, kind, object);
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::core::v1::{ConfigMap, Pod};

    use super::*;

    struct AddLabel(&'static str, &'static str);

    impl Hook for AddLabel {
        fn name(&self) -> &str {
            "add-label"
        }
        fn applies_to(&self, side: Side, kind: &str) -> bool {
            side == Side::Host && kind == "Pod"
        }
        fn mutate(&self, _side: Side, _kind: &str, object: &mut serde_json::Value) {
            object["metadata"]["labels"][self.0] = serde_json::Value::String(self.1.to_string());
        }
    }

    #[test]
    fn hooks_run_in_order_for_their_kinds_and_side_only() {
        let hooks = Hooks::default();
        hooks.add(Arc::new(AddLabel("team", "a")));
        hooks.add(Arc::new(AddLabel("team", "b")));
        let mut pod = Pod::default();
        hooks.apply(Side::Host, &mut pod);
        assert_eq!(pod.metadata.labels.unwrap()["team"], "b", "the later hook wins");
        let mut virtual_pod = Pod::default();
        hooks.apply(Side::Virtual, &mut virtual_pod);
        assert!(virtual_pod.metadata.labels.is_none());
        let mut config_map = ConfigMap::default();
        hooks.apply(Side::Host, &mut config_map);
        assert!(config_map.metadata.labels.is_none());
    }

    #[test]
    fn untyped_objects_get_the_same_hooks() {
        let hooks = Hooks::default();
        hooks.add(Arc::new(AddLabel("team", "a")));
        let mut object = serde_json::json!({"metadata": {"name": "x"}});
        hooks.apply_json(Side::Host, "Pod", &mut object);
        assert_eq!(object["metadata"]["labels"]["team"], "a");
        hooks.apply_json(Side::Host, "Widget", &mut object);
        assert_eq!(object["metadata"]["labels"].as_object().unwrap().len(), 1);
    }
}
