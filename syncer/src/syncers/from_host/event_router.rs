//! Which virtual event each host event becomes: the routing state of the event mirror.
//!
//! Fed by the host event informer (`apply`, `delete`, `reset`) and by the informers of the
//! objects events are about (`object_appeared`, `retry_parked`). Pure apart from the lookups
//! it is handed, and tested as a data structure. Host events and objects are named by
//! namespace and name, so the same router serves both namespace mappings.

use std::{collections::BTreeSet, sync::Arc};

use dashmap::{DashMap, mapref::entry::Entry};
use k8s_openapi::{api::core::v1::Event, apimachinery::pkg::apis::meta::v1::ObjectMeta};
use vcsync_translators::{NameTranslator, NamespaceMapping, VirtualKey};

use super::event_translation::{EventTarget, resolve};

/// Host metadata of this instance's objects by kind, namespace and name, for resolving events.
pub type HostObjectLookup<'a> = &'a dyn Fn(&str, &str, &str) -> Option<ObjectMeta>;

/// Host events by namespace and name, for retrying parked ones.
pub type HostEventLookup<'a> = &'a dyn Fn(&str, &str) -> Option<Arc<Event>>;

/// Namespace and name of a host event.
pub type HostEventKey = (String, String);

/// Kind, namespace and name of the host object parked events are about.
type ObjectKey = (String, String, String);

/// Which virtual event each host event becomes, and which host events wait for their object.
///
/// Fed by the host event informer (`apply`, `delete`, `reset`) and by the informers of the
/// objects events are about (`object_appeared`, `retry_parked`); each call returns the
/// virtual event keys to reconcile.
pub struct EventRouter {
    translator: Box<dyn NameTranslator>,
    mapping: NamespaceMapping,
    resolved: DashMap<HostEventKey, EventTarget>,
    by_virtual: DashMap<VirtualKey, HostEventKey>,
    parked: DashMap<ObjectKey, BTreeSet<HostEventKey>>,
}

impl std::fmt::Debug for EventRouter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventRouter")
            .field("mapping", &self.mapping)
            .field("resolved", &self.resolved.len())
            .field("parked", &self.parked_len())
            .finish()
    }
}

fn event_key(event: &Event) -> Option<HostEventKey> {
    Some((
        event.metadata.namespace.clone().unwrap_or_default(),
        event.metadata.name.clone()?,
    ))
}

impl EventRouter {
    /// An empty router for this instance's objects in `mapping`.
    pub fn new(mapping: NamespaceMapping, translator: Box<dyn NameTranslator>) -> Self {
        Self {
            translator,
            mapping,
            resolved: DashMap::new(),
            by_virtual: DashMap::new(),
            parked: DashMap::new(),
        }
    }

    /// Whether objects of this instance can live in host namespace `namespace`: the host
    /// namespace in the single mapping, any namespace in the per-namespace one (whose host
    /// namespaces come and go; ownership is checked on the object itself).
    fn may_hold_ours(&self, namespace: &str) -> bool {
        match &self.mapping {
            NamespaceMapping::Single { host_namespace } => namespace == host_namespace,
            NamespaceMapping::PerNamespace { .. } => !namespace.is_empty(),
        }
    }

    /// A host event was added or changed.
    pub fn apply(&self, event: &Event, lookup: HostObjectLookup<'_>) -> Vec<VirtualKey> {
        let Some(event_key) = event_key(event) else {
            return Vec::new();
        };
        if let Some(target) = self.resolved.get(&event_key) {
            return vec![target.event.clone()];
        }
        let involved = &event.involved_object;
        let namespace = involved.namespace.clone().unwrap_or_default();
        if !self.may_hold_ours(&namespace) {
            // Never about an object of this instance.
            return Vec::new();
        }
        let object: ObjectKey = (
            involved.kind.clone().unwrap_or_default(),
            namespace,
            involved.name.clone().unwrap_or_default(),
        );
        let meta = lookup(&object.0, &object.1, &object.2);
        match resolve(&event_key.1, involved, meta.as_ref(), self.translator.as_ref()) {
            Some(target) => {
                match self.by_virtual.entry(target.event.clone()) {
                    Entry::Occupied(entry) if *entry.get() != event_key => {
                        tracing::debug!(host_event = ?event_key, other = ?entry.get(), virtual_event = %target.event,
                            "two host events map to one virtual name; the first one is mirrored");
                        return Vec::new();
                    }
                    entry => {
                        entry.insert(event_key.clone());
                    }
                }
                self.unpark(&object, &event_key);
                let key = target.event.clone();
                self.resolved.insert(event_key, target);
                vec![key]
            }
            None => {
                self.parked.entry(object).or_default().insert(event_key);
                Vec::new()
            }
        }
    }

    /// A host event was deleted.
    pub fn delete(&self, event: &Event) -> Vec<VirtualKey> {
        let Some(event_key) = event_key(event) else {
            return Vec::new();
        };
        let involved = &event.involved_object;
        self.unpark(
            &(
                involved.kind.clone().unwrap_or_default(),
                involved.namespace.clone().unwrap_or_default(),
                involved.name.clone().unwrap_or_default(),
            ),
            &event_key,
        );
        self.forget(&event_key).into_iter().collect()
    }

    /// The host object `kind` `namespace/name` appeared or changed: its parked events are
    /// tried again.
    pub fn object_appeared(
        &self,
        kind: &str,
        namespace: &str,
        name: &str,
        events: HostEventLookup<'_>,
        lookup: HostObjectLookup<'_>,
    ) -> Vec<VirtualKey> {
        let object = (kind.to_string(), namespace.to_string(), name.to_string());
        let Some((_, parked)) = self.parked.remove(&object) else {
            return Vec::new();
        };
        parked
            .iter()
            .filter_map(|(namespace, name)| events(namespace, name))
            .flat_map(|event| self.apply(&event, lookup))
            .collect()
    }

    /// The informer of `kind` re-listed: every parked event about that kind is tried again.
    pub fn retry_parked(
        &self,
        kind: &str,
        events: HostEventLookup<'_>,
        lookup: HostObjectLookup<'_>,
    ) -> Vec<VirtualKey> {
        let objects: Vec<ObjectKey> = self
            .parked
            .iter()
            .filter(|e| e.key().0 == kind)
            .map(|e| e.key().clone())
            .collect();
        objects
            .iter()
            .flat_map(|(kind, namespace, name)| self.object_appeared(kind, namespace, name, events, lookup))
            .collect()
    }

    /// Replaces the state with `events` (a relist). Returns every mirrored key and every key
    /// whose host event is gone.
    pub fn reset(&self, events: &[Arc<Event>], lookup: HostObjectLookup<'_>) -> Vec<VirtualKey> {
        let listed: BTreeSet<HostEventKey> = events.iter().filter_map(|e| event_key(e)).collect();
        let stale: Vec<HostEventKey> = self
            .resolved
            .iter()
            .map(|e| e.key().clone())
            .filter(|key| !listed.contains(key))
            .collect();
        let mut keys: BTreeSet<VirtualKey> = stale.iter().filter_map(|key| self.forget(key)).collect();
        self.parked.clear();
        for event in events {
            keys.extend(self.apply(event, lookup));
        }
        keys.into_iter().collect()
    }

    /// The host event mirrored at the virtual key `key`, and where it goes.
    pub fn target_of(&self, key: &VirtualKey) -> Option<(HostEventKey, EventTarget)> {
        let event_key = self.by_virtual.get(key)?.clone();
        let target = self.resolved.get(&event_key)?.clone();
        Some((event_key, target))
    }

    /// Number of host events waiting for their object.
    pub fn parked_len(&self) -> usize {
        self.parked.iter().map(|e| e.value().len()).sum()
    }

    fn forget(&self, host_event: &HostEventKey) -> Option<VirtualKey> {
        let (_, target) = self.resolved.remove(host_event)?;
        self.by_virtual
            .remove_if(&target.event, |_, key| key == host_event);
        Some(target.event)
    }

    fn unpark(&self, object: &ObjectKey, host_event: &HostEventKey) {
        if let Entry::Occupied(mut parked) = self.parked.entry(object.clone()) {
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
        MANAGED_BY_LABEL, NamespacedTranslator, OBJECT_NAME_ANNOTATION, OBJECT_NAMESPACE_ANNOTATION,
        OBJECT_UID_ANNOTATION, Ownership, PerNamespaceTranslator,
    };

    use super::*;

    const HOST_NS: &str = "vc-host";

    fn router() -> EventRouter {
        EventRouter::new(
            NamespaceMapping::Single {
                host_namespace: HOST_NS.into(),
            },
            Box::new(NamespacedTranslator::new(
                Ownership::new("tenant-a").unwrap(),
                HOST_NS,
            )),
        )
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

        fn lookup(&self) -> impl Fn(&str, &str, &str) -> Option<ObjectMeta> + '_ {
            |kind, namespace, name| {
                self.objects
                    .get(&(kind.to_string(), name.to_string()))
                    .filter(|meta| meta.namespace.as_deref() == Some(namespace))
                    .cloned()
            }
        }

        fn events(&self) -> impl Fn(&str, &str) -> Option<Arc<Event>> + '_ {
            |namespace, name| {
                self.events
                    .get(name)
                    .filter(|e| e.metadata.namespace.as_deref() == Some(namespace))
                    .cloned()
            }
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
        assert_eq!(host, (HOST_NS.to_string(), "web-x-team.1".to_string()));
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
        let keys = router.object_appeared("Pod", HOST_NS, "web-x-team", &world.events(), &world.lookup());
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
                .object_appeared(
                    "ConfigMap",
                    HOST_NS,
                    "web-x-team",
                    &world.events(),
                    &world.lookup()
                )
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
                .object_appeared("Pod", HOST_NS, "web-x-team", &world.events(), &world.lookup())
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
        assert_eq!(host, (HOST_NS.to_string(), "web-x-team.1".to_string()));
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

    #[test]
    fn in_the_per_namespace_mapping_events_of_each_host_namespace_are_routed() {
        let router = EventRouter::new(
            NamespaceMapping::PerNamespace {
                instance: "tenant-a".into(),
            },
            Box::new(PerNamespaceTranslator::new(Ownership::new("tenant-a").unwrap())),
        );
        let (_, mut meta) = owned("Pod", "web", "web");
        meta.namespace = Some("tenant-a-x-team".into());
        let lookup = |kind: &str, namespace: &str, name: &str| {
            (kind == "Pod" && namespace == "tenant-a-x-team" && name == "web").then(|| meta.clone())
        };
        let mut e = (*event("web.1", "Pod", "web", "tenant-a-x-team")).clone();
        e.metadata.namespace = Some("tenant-a-x-team".into());
        assert_eq!(router.apply(&e, &lookup), [key("web.1")]);
        let (host, _) = router.target_of(&key("web.1")).unwrap();
        assert_eq!(host, ("tenant-a-x-team".to_string(), "web.1".to_string()));
        // The same event name in another host namespace is another event.
        let mut other = e.clone();
        other.metadata.namespace = Some("tenant-a-x-other".into());
        other.involved_object.namespace = Some("tenant-a-x-other".into());
        assert!(router.apply(&other, &lookup).is_empty());
        assert_eq!(router.parked_len(), 1);
        assert_eq!(router.delete(&e), [key("web.1")]);
    }
}
