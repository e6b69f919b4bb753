//! Which virtual event each host event becomes: the routing state of the event mirror.
//!
//! Fed by the host event informer (`apply`, `delete`, `reset`) and by the informers of the
//! objects events are about (`object_appeared`, `retry_parked`). Pure apart from the lookups
//! it is handed, and tested as a data structure.

use std::{collections::BTreeSet, sync::Arc};

use dashmap::{DashMap, mapref::entry::Entry};
use k8s_openapi::{api::core::v1::Event, apimachinery::pkg::apis::meta::v1::ObjectMeta};
use vcsync_translators::{NamespacedTranslator, VirtualKey};

use super::event_translation::{EventTarget, resolve};

/// Host metadata of this instance's objects by kind and name, for resolving events.
pub type HostObjectLookup<'a> = &'a dyn Fn(&str, &str) -> Option<ObjectMeta>;

/// Which virtual event each host event becomes, and which host events wait for their object.
///
/// Fed by the host event informer (`apply`, `delete`, `reset`) and by the informers of the
/// objects events are about (`object_appeared`, `retry_parked`); each call returns the
/// virtual event keys to reconcile.
#[derive(Debug)]
pub struct EventRouter {
    translator: NamespacedTranslator,
    resolved: DashMap<String, EventTarget>,
    by_virtual: DashMap<VirtualKey, String>,
    parked: DashMap<(String, String), BTreeSet<String>>,
}

impl EventRouter {
    /// An empty router for `translator`'s instance and host namespace.
    pub fn new(translator: NamespacedTranslator) -> Self {
        Self {
            translator,
            resolved: DashMap::new(),
            by_virtual: DashMap::new(),
            parked: DashMap::new(),
        }
    }

    /// A host event was added or changed.
    pub fn apply(&self, event: &Event, lookup: HostObjectLookup<'_>) -> Vec<VirtualKey> {
        let Some(name) = event.metadata.name.as_deref() else {
            return Vec::new();
        };
        if let Some(target) = self.resolved.get(name) {
            return vec![target.event.clone()];
        }
        let involved = &event.involved_object;
        if involved.namespace.as_deref() != Some(self.translator.host_namespace()) {
            // Not in the host namespace: never about an object of this instance.
            return Vec::new();
        }
        let (kind, object) = (
            involved.kind.clone().unwrap_or_default(),
            involved.name.clone().unwrap_or_default(),
        );
        let meta = lookup(&kind, &object);
        match resolve(name, involved, meta.as_ref(), &self.translator) {
            Some(target) => {
                match self.by_virtual.entry(target.event.clone()) {
                    Entry::Occupied(entry) if entry.get() != name => {
                        tracing::debug!(host_event = name, other = %entry.get(), virtual_event = %target.event,
                            "two host events map to one virtual name; the first one is mirrored");
                        return Vec::new();
                    }
                    entry => {
                        entry.insert(name.to_string());
                    }
                }
                self.unpark(&kind, &object, name);
                let key = target.event.clone();
                self.resolved.insert(name.to_string(), target);
                vec![key]
            }
            None => {
                self.parked
                    .entry((kind, object))
                    .or_default()
                    .insert(name.to_string());
                Vec::new()
            }
        }
    }

    /// A host event was deleted.
    pub fn delete(&self, event: &Event) -> Vec<VirtualKey> {
        let name = event.metadata.name.clone().unwrap_or_default();
        let involved = &event.involved_object;
        self.unpark(
            involved.kind.as_deref().unwrap_or_default(),
            involved.name.as_deref().unwrap_or_default(),
            &name,
        );
        self.forget(&name).into_iter().collect()
    }

    /// The host object `kind`/`name` appeared or changed: its parked events are tried again.
    pub fn object_appeared(
        &self,
        kind: &str,
        name: &str,
        events: &dyn Fn(&str) -> Option<Arc<Event>>,
        lookup: HostObjectLookup<'_>,
    ) -> Vec<VirtualKey> {
        let Some((_, parked)) = self.parked.remove(&(kind.to_string(), name.to_string())) else {
            return Vec::new();
        };
        parked
            .iter()
            .filter_map(|event| events(event))
            .flat_map(|event| self.apply(&event, lookup))
            .collect()
    }

    /// The informer of `kind` re-listed: every parked event about that kind is tried again.
    pub fn retry_parked(
        &self,
        kind: &str,
        events: &dyn Fn(&str) -> Option<Arc<Event>>,
        lookup: HostObjectLookup<'_>,
    ) -> Vec<VirtualKey> {
        let objects: Vec<String> = self
            .parked
            .iter()
            .filter(|e| e.key().0 == kind)
            .map(|e| e.key().1.clone())
            .collect();
        objects
            .iter()
            .flat_map(|object| self.object_appeared(kind, object, events, lookup))
            .collect()
    }

    /// Replaces the state with `events` (a relist). Returns every mirrored key and every key
    /// whose host event is gone.
    pub fn reset(&self, events: &[Arc<Event>], lookup: HostObjectLookup<'_>) -> Vec<VirtualKey> {
        let names: BTreeSet<&str> = events.iter().filter_map(|e| e.metadata.name.as_deref()).collect();
        let stale: Vec<String> = self
            .resolved
            .iter()
            .map(|e| e.key().clone())
            .filter(|name| !names.contains(name.as_str()))
            .collect();
        let mut keys: BTreeSet<VirtualKey> = stale.iter().filter_map(|name| self.forget(name)).collect();
        self.parked.clear();
        for event in events {
            keys.extend(self.apply(event, lookup));
        }
        keys.into_iter().collect()
    }

    /// The host namespace whose events are routed.
    pub fn host_namespace(&self) -> &str {
        self.translator.host_namespace()
    }

    /// The host event mirrored at the virtual key `key`, and where it goes.
    pub fn target_of(&self, key: &VirtualKey) -> Option<(String, EventTarget)> {
        let name = self.by_virtual.get(key)?.clone();
        let target = self.resolved.get(&name)?.clone();
        Some((name, target))
    }

    /// Number of host events waiting for their object.
    pub fn parked_len(&self) -> usize {
        self.parked.iter().map(|e| e.value().len()).sum()
    }

    fn forget(&self, host_event: &str) -> Option<VirtualKey> {
        let (_, target) = self.resolved.remove(host_event)?;
        self.by_virtual
            .remove_if(&target.event, |_, name| name == host_event);
        Some(target.event)
    }

    fn unpark(&self, kind: &str, object: &str, host_event: &str) {
        if let Entry::Occupied(mut parked) = self.parked.entry((kind.to_string(), object.to_string())) {
            parked.get_mut().remove(host_event);
            if parked.get().is_empty() {
                parked.remove();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use serde_json::json;
    use vcsync_translators::{
        MANAGED_BY_LABEL, OBJECT_NAME_ANNOTATION, OBJECT_NAMESPACE_ANNOTATION, OBJECT_UID_ANNOTATION,
        Ownership,
    };

    use super::*;
    use crate::syncers::from_host::event_translation::translator;

    const HOST_NS: &str = "vc-host";

    fn router() -> EventRouter {
        EventRouter::new(translator(&Ownership::new("tenant-a").unwrap(), HOST_NS))
    }

    fn owned(kind: &str, host_name: &str, virtual_name: &str) -> ((String, String), ObjectMeta) {
        let meta = serde_json::from_value(json!({
            "name": host_name, "namespace": HOST_NS, "uid": format!("uid-{host_name}"),
            "labels": {MANAGED_BY_LABEL: "tenant-a"},
            "annotations": {OBJECT_NAME_ANNOTATION: virtual_name, OBJECT_NAMESPACE_ANNOTATION: "team",
                            OBJECT_UID_ANNOTATION: format!("v-{virtual_name}")}
        }))
        .unwrap();
        ((kind.to_string(), host_name.to_string()), meta)
    }

    fn event(name: &str, kind: &str, object: &str, namespace: &str) -> Arc<Event> {
        Arc::new(
            serde_json::from_value(json!({
                "metadata": {"name": name, "namespace": HOST_NS},
                "involvedObject": {"kind": kind, "name": object, "namespace": namespace},
                "reason": "Started", "count": 1
            }))
            .unwrap(),
        )
    }

    struct World {
        objects: HashMap<(String, String), ObjectMeta>,
        events: HashMap<String, Arc<Event>>,
    }

    impl World {
        fn new() -> Self {
            Self {
                objects: HashMap::new(),
                events: HashMap::new(),
            }
        }

        fn with_object(mut self, kind: &str, host: &str, virt: &str) -> Self {
            let (key, meta) = owned(kind, host, virt);
            self.objects.insert(key, meta);
            self
        }

        fn lookup(&self) -> impl Fn(&str, &str) -> Option<ObjectMeta> + '_ {
            |kind, name| self.objects.get(&(kind.to_string(), name.to_string())).cloned()
        }

        fn events(&self) -> impl Fn(&str) -> Option<Arc<Event>> + '_ {
            |name| self.events.get(name).cloned()
        }
    }

    fn key(name: &str) -> VirtualKey {
        VirtualKey::namespaced("team", name)
    }

    #[test]
    fn an_event_about_an_owned_object_is_routed_to_its_virtual_name() {
        let world = World::new().with_object("Pod", "web-x-team", "web");
        let router = router();
        let keys = router.apply(
            &event("web-x-team.1", "Pod", "web-x-team", HOST_NS),
            &world.lookup(),
        );
        assert_eq!(keys, [key("web.1")]);
        let (host, target) = router.target_of(&key("web.1")).unwrap();
        assert_eq!(host, "web-x-team.1");
        assert_eq!(target.involved.name.as_deref(), Some("web"));
    }

    #[test]
    fn a_repeated_event_routes_to_the_same_key_without_another_lookup() {
        let world = World::new().with_object("Pod", "web-x-team", "web");
        let router = router();
        let e = event("web-x-team.1", "Pod", "web-x-team", HOST_NS);
        router.apply(&e, &world.lookup());
        let no_objects = World::new();
        assert_eq!(router.apply(&e, &no_objects.lookup()), [key("web.1")]);
    }

    #[test]
    fn events_outside_the_host_namespace_are_ignored_not_parked() {
        let world = World::new();
        let router = router();
        assert!(
            router
                .apply(&event("n.1", "Node", "n", ""), &world.lookup())
                .is_empty()
        );
        assert_eq!(router.parked_len(), 0);
    }

    #[test]
    fn an_event_about_a_foreign_object_is_never_routed() {
        let world = World::new();
        let router = router();
        let foreign = event("other.1", "Pod", "other", HOST_NS);
        assert!(router.apply(&foreign, &world.lookup()).is_empty());
        assert_eq!(router.parked_len(), 1);
        assert!(router.target_of(&key("other.1")).is_none());
    }

    #[test]
    fn an_event_waits_for_its_object_and_is_routed_when_it_appears() {
        let mut world = World::new();
        let router = router();
        let e = event("web-x-team.1", "Pod", "web-x-team", HOST_NS);
        world.events.insert("web-x-team.1".into(), e.clone());
        assert!(router.apply(&e, &world.lookup()).is_empty());
        let world = World {
            events: world.events,
            ..World::new()
        }
        .with_object("Pod", "web-x-team", "web");
        let keys = router.object_appeared("Pod", "web-x-team", &world.events(), &world.lookup());
        assert_eq!(keys, [key("web.1")]);
        assert_eq!(router.parked_len(), 0);
    }

    #[test]
    fn an_object_of_another_kind_with_the_same_name_does_not_resolve_the_event() {
        let mut world = World::new().with_object("ConfigMap", "web-x-team", "web");
        let router = router();
        let e = event("web-x-team.1", "Pod", "web-x-team", HOST_NS);
        world.events.insert("web-x-team.1".into(), e.clone());
        assert!(router.apply(&e, &world.lookup()).is_empty());
        assert!(
            router
                .object_appeared("ConfigMap", "web-x-team", &world.events(), &world.lookup())
                .is_empty()
        );
        assert_eq!(router.parked_len(), 1);
    }

    #[test]
    fn a_parked_event_deleted_before_its_object_appears_is_dropped() {
        let world = World::new().with_object("Pod", "web-x-team", "web");
        let router = router();
        let e = event("web-x-team.1", "Pod", "web-x-team", HOST_NS);
        router.apply(&e, &World::new().lookup());
        assert!(router.delete(&e).is_empty());
        assert_eq!(router.parked_len(), 0);
        // The event is no longer in the host cache either.
        assert!(
            router
                .object_appeared("Pod", "web-x-team", &world.events(), &world.lookup())
                .is_empty()
        );
    }

    #[test]
    fn retry_after_a_relist_of_objects_resolves_parked_events_of_that_kind() {
        let mut world = World::new();
        let router = router();
        for (name, kind, object) in [
            ("web-x-team.1", "Pod", "web-x-team"),
            ("cfg-x-team.1", "ConfigMap", "cfg-x-team"),
        ] {
            let e = event(name, kind, object, HOST_NS);
            world.events.insert(name.into(), e.clone());
            router.apply(&e, &world.lookup());
        }
        let world = World {
            events: world.events,
            ..World::new()
        }
        .with_object("Pod", "web-x-team", "web")
        .with_object("ConfigMap", "cfg-x-team", "cfg");
        assert_eq!(
            router.retry_parked("Pod", &world.events(), &world.lookup()),
            [key("web.1")]
        );
        assert_eq!(router.parked_len(), 1);
    }

    #[test]
    fn deleting_a_routed_event_returns_its_key_and_forgets_it() {
        let world = World::new().with_object("Pod", "web-x-team", "web");
        let router = router();
        let e = event("web-x-team.1", "Pod", "web-x-team", HOST_NS);
        router.apply(&e, &world.lookup());
        assert_eq!(router.delete(&e), [key("web.1")]);
        assert!(router.target_of(&key("web.1")).is_none());
        assert!(router.delete(&e).is_empty());
    }

    #[test]
    fn two_host_events_with_one_virtual_name_mirror_only_the_first() {
        // A pod and a config map both called `web` in the virtual namespace, with host
        // events of the same suffix: both would become `team/web.1`.
        let world = World::new().with_object("Pod", "web-x-team", "web").with_object(
            "ConfigMap",
            "cfg-x-team",
            "web",
        );
        let router = router();
        let first = event("web-x-team.1", "Pod", "web-x-team", HOST_NS);
        assert_eq!(router.apply(&first, &world.lookup()), [key("web.1")]);
        let clash = event("cfg-x-team.1", "ConfigMap", "cfg-x-team", HOST_NS);
        assert!(router.apply(&clash, &world.lookup()).is_empty());
        let (host, _) = router.target_of(&key("web.1")).unwrap();
        assert_eq!(host, "web-x-team.1");
        // Once the first is gone, the key is free again.
        assert_eq!(router.delete(&first), [key("web.1")]);
        assert_eq!(router.apply(&clash, &world.lookup()), [key("web.1")]);
    }

    #[test]
    fn reset_forgets_vanished_events_and_reports_all_keys() {
        let world = World::new()
            .with_object("Pod", "a-x-team", "a")
            .with_object("Pod", "b-x-team", "b");
        let router = router();
        router.apply(&event("a-x-team.1", "Pod", "a-x-team", HOST_NS), &world.lookup());
        router.apply(&event("other.1", "Pod", "other", HOST_NS), &world.lookup());
        let keys = router.reset(
            &[event("b-x-team.1", "Pod", "b-x-team", HOST_NS)],
            &world.lookup(),
        );
        assert_eq!(keys, [key("a.1"), key("b.1")]);
        assert!(router.target_of(&key("a.1")).is_none());
        assert!(router.target_of(&key("b.1")).is_some());
        assert_eq!(router.parked_len(), 0, "parked events that vanished are dropped");
    }
}
