//! Host Events about this instance's host objects, mirrored into the virtual cluster.
//!
//! The host's scheduler, kubelets and controllers report on the translated objects (host pod
//! `web-x-team` was scheduled, pulled, started ...). Tenants look for those events on their
//! own objects, so each host event in the host namespace whose `involvedObject` is a host
//! object owned by this instance (a pod, service, PVC, config map or secret in the host
//! informers' caches, with the same UID) appears in the virtual object's namespace, about
//! the virtual object (name, namespace and UID from the host object's annotations), with
//! host names in the message replaced by virtual ones. Events about anything else are never
//! mirrored.
//!
//! Choices:
//! - The virtual event's name is derived from the host event's (`<virtual name>.<host
//!   suffix>`), so repeats update the same mirror and a restart finds it again; count, last
//!   timestamp and message are updated only when they changed.
//! - A host event whose object is not (yet) in the cache waits, parked under the object's
//!   name, until the object appears: events often arrive before the watch of their object.
//! - A mirror is removed when its host event is removed, so the host's event TTL applies to
//!   the virtual cluster too; like every mirror, one deleted in the virtual cluster is
//!   recreated while its host event exists.

use std::{
    collections::BTreeSet,
    sync::{Arc, Mutex},
    time::Duration,
};

use async_trait::async_trait;
use dashmap::{DashMap, mapref::entry::Entry};
use futures::{
    StreamExt,
    stream::{BoxStream, SelectAll},
};
use k8s_openapi::{
    api::core::v1::{ConfigMap, Event, PersistentVolumeClaim, Pod, Secret, Service},
    apimachinery::pkg::apis::meta::v1::ObjectMeta,
};
use kube::{
    Api,
    api::{DeleteParams, PostParams, Preconditions},
    runtime::{
        controller::Action,
        reflector::{ObjectRef, Store},
    },
};
use tokio::sync::{mpsc, watch};
use vcsync_translators::{NamespacedTranslator, VirtualKey};

use super::{
    event_translation::{
        EventTarget, HOST_EVENT_ANNOTATION, desired_virtual_event, event_in_sync, resolve, translator,
    },
    is_synced_from_host,
};
use crate::{
    ControllerBuilder, ControllerModifier, FakeSyncer, RegisterContext, Result, SyncContext,
    controller::virtual_key_of,
    error::{Side, api_error, status_code},
    informer::{InformerEvent, Scope},
    register_fake_syncer,
    sdk::{Base, SyncResource},
    writes::FIELD_MANAGER,
};

/// A create raced with the cache: look again once it caught up.
const CACHE_LAG_RETRY: Duration = Duration::from_millis(100);

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

/// This instance's host objects of one kind, type-erased for the router.
trait OwnedObjects: Send + Sync {
    fn kind(&self) -> &str;
    fn metadata(&self, namespace: &str, name: &str) -> Option<ObjectMeta>;
}

struct OwnedStore<K: SyncResource> {
    kind: String,
    store: Store<K>,
}

impl<K: SyncResource> OwnedObjects for OwnedStore<K> {
    fn kind(&self) -> &str {
        &self.kind
    }

    fn metadata(&self, namespace: &str, name: &str) -> Option<ObjectMeta> {
        self.store
            .get(&ObjectRef::new(name).within(namespace))
            .map(|o| o.meta().clone())
    }
}

/// A host object of `kind` appeared or changed (`Some(name)`), or its informer re-listed.
type Appearance = (String, Option<String>);

/// Adds the owned host objects of `K` to what events are resolved against.
fn watch_owned<K: SyncResource>(
    ctx: &RegisterContext,
    objects: &mut Vec<Arc<dyn OwnedObjects>>,
    appearances: &mut SelectAll<BoxStream<'static, Appearance>>,
) {
    let informer = ctx.host_informer::<K>();
    let kind = K::kind(&()).to_string();
    objects.push(Arc::new(OwnedStore {
        kind: kind.clone(),
        store: informer.store(),
    }));
    appearances.push(
        tokio_stream::wrappers::UnboundedReceiverStream::new(informer.subscribe())
            .filter_map(move |event| {
                let appearance = match event {
                    InformerEvent::Applied(obj) => Some((kind.clone(), obj.meta().name.clone())),
                    InformerEvent::Relisted => Some((kind.clone(), None)),
                    InformerEvent::Deleted(_) => None,
                };
                futures::future::ready(appearance)
            })
            .boxed(),
    );
}

/// Feeds the router and sends the keys to reconcile. `ready` flips once host events and
/// every kind of object have been listed, after one more full pass, so no mirror is removed
/// for want of knowledge.
///
/// Readiness comes from the informers' relist events rather than `Store::wait_until_ready`:
/// kube-runtime wakes only the last of several concurrent waiters of one store, and the
/// manager already waits on each.
async fn route(
    router: Arc<EventRouter>,
    host_events: Store<Event>,
    mut events: mpsc::UnboundedReceiver<InformerEvent<Event>>,
    objects: Vec<Arc<dyn OwnedObjects>>,
    mut appearances: SelectAll<BoxStream<'static, Appearance>>,
    keys: mpsc::UnboundedSender<VirtualKey>,
    ready: watch::Sender<bool>,
) {
    let host_namespace = router.translator.host_namespace().to_string();
    let lookup = |kind: &str, name: &str| {
        objects
            .iter()
            .find(|o| o.kind() == kind)
            .and_then(|o| o.metadata(&host_namespace, name))
    };
    let event_named = |name: &str| host_events.get(&ObjectRef::new(name).within(&host_namespace));
    let mut unlisted: BTreeSet<String> = objects.iter().map(|o| o.kind().to_string()).collect();
    let mut events_listed = false;
    loop {
        let mut routed = tokio::select! {
            event = events.recv() => match event {
                Some(InformerEvent::Applied(event)) => router.apply(&event, &lookup),
                Some(InformerEvent::Deleted(event)) => router.delete(&event),
                Some(InformerEvent::Relisted) => {
                    events_listed = true;
                    router.reset(&host_events.state(), &lookup)
                }
                None => break,
            },
            Some((kind, name)) = appearances.next() => match name {
                Some(name) => router.object_appeared(&kind, &name, &event_named, &lookup),
                None => {
                    unlisted.remove(&kind);
                    router.retry_parked(&kind, &event_named, &lookup)
                }
            },
        };
        if events_listed && unlisted.is_empty() && !*ready.borrow() {
            routed.extend(router.reset(&host_events.state(), &lookup));
            ready.send_replace(true);
            tracing::debug!(parked = router.parked_len(), "host events routed");
        }
        for key in routed {
            let _ = keys.send(key);
        }
    }
}

/// Mirrors host events into the virtual cluster.
pub struct EventSyncer {
    router: Arc<EventRouter>,
    host_events: Store<Event>,
    host_namespace: String,
    triggers: Mutex<Vec<BoxStream<'static, VirtualKey>>>,
}

impl EventSyncer {
    fn host_event(&self, name: &str) -> Option<Arc<Event>> {
        self.host_events
            .get(&ObjectRef::new(name).within(&self.host_namespace))
    }
}

impl Base for EventSyncer {
    fn name(&self) -> &str {
        "events"
    }
}

fn params() -> PostParams {
    PostParams {
        field_manager: Some(FIELD_MANAGER.to_string()),
        ..PostParams::default()
    }
}

#[async_trait]
impl FakeSyncer for EventSyncer {
    type Resource = Event;

    async fn fake_sync_up(&self, ctx: &SyncContext<Event>, key: &VirtualKey) -> Result<Action> {
        let Some((host_name, target)) = self.router.target_of(key) else {
            return Ok(Action::await_change());
        };
        let Some(host) = self.host_event(&host_name) else {
            return Ok(Action::await_change());
        };
        let desired = desired_virtual_event(&host, &target);
        let namespace = key.namespace.clone().unwrap_or_default();
        match Api::<Event>::namespaced(ctx.virtual_client().clone(), &namespace)
            .create(&params(), &desired)
            .await
        {
            Ok(_) => {
                tracing::debug!(event = %key, host_event = %host_name, "mirrored host event");
                Ok(Action::await_change())
            }
            Err(err) if status_code(&err) == Some(409) => Ok(Action::requeue(CACHE_LAG_RETRY)),
            // The virtual namespace is gone or terminating: nobody will read this event.
            Err(err) if matches!(status_code(&err), Some(403 | 404)) => {
                tracing::debug!(event = %key, error = %err, "not mirroring an event into a closed namespace");
                Ok(Action::await_change())
            }
            Err(err) => Err(api_error(Side::Virtual, "create", "Event", &key.to_string())(err)),
        }
    }

    async fn fake_sync(&self, ctx: &SyncContext<Event>, virt: Arc<Event>) -> Result<Action> {
        if !is_synced_from_host(&virt.metadata) {
            return Ok(Action::await_change());
        }
        let key = virtual_key_of(virt.as_ref());
        let api = Api::<Event>::namespaced(
            ctx.virtual_client().clone(),
            key.namespace.as_deref().unwrap_or_default(),
        );
        // The annotation finds the host event even when its object is gone by now (after a
        // restart the router cannot resolve it any more, but the mirror stays current).
        let host = virt
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(HOST_EVENT_ANNOTATION))
            .and_then(|name| self.host_event(name));
        let Some(host) = host else {
            let params = DeleteParams {
                preconditions: virt.metadata.uid.clone().map(|uid| Preconditions {
                    uid: Some(uid),
                    resource_version: None,
                }),
                ..DeleteParams::background()
            };
            match api.delete(&key.name, &params).await {
                Ok(_) => tracing::debug!(event = %key, "removed mirror of a deleted host event"),
                Err(err) if status_code(&err) == Some(404) => {}
                Err(err) => return Err(api_error(Side::Virtual, "delete", "Event", &key.to_string())(err)),
            }
            return Ok(Action::await_change());
        };
        let target = self
            .router
            .target_of(&key)
            .map(|(_, target)| target)
            .unwrap_or_else(|| EventTarget {
                event: key.clone(),
                involved: virt.involved_object.clone(),
            });
        let mut desired = desired_virtual_event(&host, &target);
        if event_in_sync(&virt, &desired) {
            return Ok(Action::await_change());
        }
        desired.metadata.resource_version = virt.metadata.resource_version.clone();
        api.replace(&key.name, &params(), &desired)
            .await
            .map_err(api_error(Side::Virtual, "update", "Event", &key.to_string()))?;
        tracing::debug!(event = %key, "updated mirrored host event");
        Ok(Action::await_change())
    }

    fn controller_modifier(&self) -> Option<&dyn ControllerModifier> {
        Some(self)
    }
}

impl ControllerModifier for EventSyncer {
    /// Host events (through the router) reconcile their virtual mirrors.
    fn modify_controller(
        &self,
        _ctx: &RegisterContext,
        builder: ControllerBuilder,
    ) -> Result<ControllerBuilder> {
        let triggers = std::mem::take(&mut *self.triggers.lock().expect("triggers lock"));
        Ok(triggers.into_iter().fold(builder, |b, t| b.watches(t)))
    }
}

/// Registers the event mirror: an unfiltered watch of host events in the host namespace,
/// resolved against this instance's host objects of the kinds that are synced.
pub async fn register(ctx: &RegisterContext) -> Result<()> {
    let sync = ctx.config().sync.clone();
    let mut objects: Vec<Arc<dyn OwnedObjects>> = Vec::new();
    let mut appearances = SelectAll::new();
    watch_owned::<Pod>(ctx, &mut objects, &mut appearances);
    if sync.services.enabled {
        watch_owned::<Service>(ctx, &mut objects, &mut appearances);
    }
    if sync.persistent_volume_claims.enabled {
        watch_owned::<PersistentVolumeClaim>(ctx, &mut objects, &mut appearances);
    }
    if sync.config_maps.enabled {
        watch_owned::<ConfigMap>(ctx, &mut objects, &mut appearances);
    }
    if sync.secrets.enabled {
        watch_owned::<Secret>(ctx, &mut objects, &mut appearances);
    }

    let host_events = ctx.informers().get::<Event>(Scope::Custom {
        side: Side::Host,
        namespace: Some(ctx.host_namespace().to_string()),
        labels: String::new(),
    });
    let router = Arc::new(EventRouter::new(translator(
        ctx.ownership(),
        ctx.host_namespace(),
    )));
    let (keys_tx, keys_rx) = mpsc::unbounded_channel();
    let (ready_tx, mut ready_rx) = watch::channel(false);
    ctx.spawn_background(route(
        router.clone(),
        host_events.store(),
        host_events.subscribe(),
        objects,
        appearances,
        keys_tx,
        ready_tx,
    ));
    ctx.add_readiness(async move {
        let _ = ready_rx.wait_for(|ready| *ready).await;
    });
    register_fake_syncer(
        ctx,
        EventSyncer {
            router,
            host_events: host_events.store(),
            host_namespace: ctx.host_namespace().to_string(),
            triggers: Mutex::new(vec![
                tokio_stream::wrappers::UnboundedReceiverStream::new(keys_rx).boxed(),
            ]),
        },
    )
    .await
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
