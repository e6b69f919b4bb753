//! Host Events about this instance's host objects, mirrored into the virtual cluster.
//!
//! The host's scheduler, kubelets and controllers report on the translated objects (host pod
//! `web-x-team` was scheduled, pulled, started ...). Tenants look for those events on their
//! own objects, so each host event in a host namespace of this instance whose `involvedObject` is a host
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

use std::{collections::BTreeSet, sync::Arc};

use async_trait::async_trait;
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
    api::{DeleteParams, Preconditions},
    runtime::reflector::ObjectRef,
};
use tokio::sync::{mpsc, watch};
use vcsync_translators::{NamespaceMapping, VirtualKey};

use super::{
    event_router::EventRouter,
    event_translation::{EventTarget, HOST_EVENT_ANNOTATION, desired_virtual_event, event_in_sync},
    shared::is_synced_from_host,
};
use crate::{
    Action, Caches, Clients, ControllerModifier, FakeSyncer, Registrar, Result, SyncContext,
    cache::Cache,
    controller::CACHE_LAG_RETRY,
    error::{Side, api_error, status_code},
    informer::{InformerEvent, Scope, Subscription},
    resource::virtual_key_of,
    sdk::Triggers,
    sdk::{Base, SyncResource},
    writes::write_params,
};

/// This instance's host objects of one kind, type-erased for the router.
trait OwnedObjects: Send + Sync {
    fn kind(&self) -> &str;
    fn metadata(&self, namespace: &str, name: &str) -> Option<ObjectMeta>;
}

struct OwnedStore<K: SyncResource> {
    kind: String,
    store: Cache<K>,
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

/// A host object of `kind` appeared or changed (`Some((namespace, name))`), or its informer
/// re-listed.
type Appearance = (String, Option<(String, String)>);

/// Adds the owned host objects of `K` to what events are resolved against.
fn watch_owned<K: SyncResource>(
    caches: &Caches,
    objects: &mut Vec<Arc<dyn OwnedObjects>>,
    appearances: &mut SelectAll<BoxStream<'static, Appearance>>,
) {
    let informer = caches.host_informer::<K>();
    let kind = K::kind(&()).to_string();
    objects.push(Arc::new(OwnedStore {
        kind: kind.clone(),
        store: informer.store(),
    }));
    appearances.push(
        informer
            .subscribe()
            .filter_map(move |event| {
                let appearance = match event {
                    InformerEvent::Applied(obj) => {
                        let meta = obj.meta();
                        let object = meta.namespace.clone().zip(meta.name.clone());
                        Some((kind.clone(), object))
                    }
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
    host_events: Cache<Event>,
    mut events: Subscription<Event>,
    objects: Vec<Arc<dyn OwnedObjects>>,
    mut appearances: SelectAll<BoxStream<'static, Appearance>>,
    keys: mpsc::UnboundedSender<VirtualKey>,
    ready: watch::Sender<bool>,
) {
    let lookup = |kind: &str, namespace: &str, name: &str| {
        objects
            .iter()
            .find(|o| o.kind() == kind)
            .and_then(|o| o.metadata(namespace, name))
    };
    let event_named = |namespace: &str, name: &str| host_events.get(&ObjectRef::new(name).within(namespace));
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
                Some((namespace, name)) => {
                    router.object_appeared(&kind, &namespace, &name, &event_named, &lookup)
                }
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
    host_events: Cache<Event>,
    mapping: NamespaceMapping,
    triggers: Triggers,
}

impl EventSyncer {
    /// The cached host event `namespace/name`; one that does not decode is an error, never
    /// an absence (which removes its mirror).
    fn host_event(&self, namespace: &str, name: &str) -> Result<Option<Arc<Event>>> {
        Ok(self
            .host_events
            .try_get(&ObjectRef::new(name).within(namespace))?)
    }
}

impl Base for EventSyncer {
    fn name(&self) -> &str {
        "events"
    }
}

#[async_trait]
impl FakeSyncer for EventSyncer {
    type Resource = Event;

    async fn fake_sync_up(&self, ctx: &SyncContext<Event>, key: &VirtualKey) -> Result<Action> {
        let Some(((host_namespace, host_name), target)) = self.router.target_of(key) else {
            return Ok(Action::await_change());
        };
        let Some(host) = self.host_event(&host_namespace, &host_name)? else {
            return Ok(Action::await_change());
        };
        let desired = desired_virtual_event(&host, &target);
        let namespace = key.namespace.clone().unwrap_or_default();
        match Api::<Event>::namespaced(ctx.virtual_client().clone(), &namespace)
            .create(&write_params(), &desired)
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
        // restart the router cannot resolve it any more, but the mirror stays current). The
        // host event lives in the host namespace of the mirror's namespace.
        let host_namespace = self
            .mapping
            .host_namespace(key.namespace.as_deref().unwrap_or_default());
        let host = match virt
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(HOST_EVENT_ANNOTATION))
        {
            Some(name) => self.host_event(&host_namespace, name)?,
            None => None,
        };
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
        api.replace(&key.name, &write_params(), &desired)
            .await
            .map_err(api_error(Side::Virtual, "update", "Event", &key.to_string()))?;
        tracing::debug!(event = %key, "updated mirrored host event");
        Ok(Action::await_change())
    }

    fn controller_modifier(&self) -> Option<&dyn ControllerModifier> {
        Some(&self.triggers)
    }
}

impl EventSyncer {
    /// The event mirror: an unfiltered watch of host events in the host namespace (in every
    /// namespace in the per-namespace mapping, whose host namespaces come and go), resolved
    /// against this instance's host objects of the kinds the configuration of `clients`
    /// syncs, in `caches`, by a task of `registrar`'s (controllers wait for its first pass).
    pub fn new(clients: &Clients, caches: &Caches, registrar: &Registrar) -> Self {
        let sync = clients.config().sync.clone();
        let mut objects: Vec<Arc<dyn OwnedObjects>> = Vec::new();
        let mut appearances = SelectAll::new();
        watch_owned::<Pod>(caches, &mut objects, &mut appearances);
        if sync.services.enabled {
            watch_owned::<Service>(caches, &mut objects, &mut appearances);
        }
        if sync.persistent_volume_claims.enabled {
            watch_owned::<PersistentVolumeClaim>(caches, &mut objects, &mut appearances);
        }
        if sync.config_maps.enabled {
            watch_owned::<ConfigMap>(caches, &mut objects, &mut appearances);
        }
        if sync.secrets.enabled {
            watch_owned::<Secret>(caches, &mut objects, &mut appearances);
        }

        let mapping = clients.namespace_mapping().clone();
        let host_events = caches.informers().get::<Event>(Scope::Custom {
            side: Side::Host,
            namespace: (!mapping.is_per_namespace()).then(|| clients.host_namespace().to_string()),
            labels: String::new(),
        });
        let router = Arc::new(EventRouter::new(mapping.clone(), clients.namespaced_translator()));
        let (keys_tx, keys_rx) = mpsc::unbounded_channel();
        let (ready_tx, mut ready_rx) = watch::channel(false);
        registrar.spawn_background(route(
            router.clone(),
            host_events.store(),
            host_events.subscribe(),
            objects,
            appearances,
            keys_tx,
            ready_tx,
        ));
        registrar.add_readiness(async move {
            let _ = ready_rx.wait_for(|ready| *ready).await;
        });
        Self {
            router,
            host_events: host_events.store(),
            mapping,
            triggers: Triggers::new(vec![
                tokio_stream::wrappers::UnboundedReceiverStream::new(keys_rx).boxed(),
            ]),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::Ordering;

    use super::*;
    use crate::{
        Error, RegisterContext,
        cache::{Storage, filled},
        config::Config,
        syncers::from_host::shared::SYNCED_FROM_HOST_LABEL,
    };

    /// A host event that does not decode once read as gone, and its virtual mirror was
    /// deleted. Now the reconcile fails (to be retried) and sends nothing.
    #[tokio::test]
    async fn a_host_event_that_does_not_decode_fails_the_reconcile_and_deletes_no_mirror() {
        let (client, connections) = crate::testing::silent_api_server().await;
        let register = RegisterContext::new(client.clone(), client, Config::new("demo", "vc-demo")).unwrap();
        let clients = register.clients();
        let mapping = clients.namespace_mapping().clone();
        let host_namespace = mapping.host_namespace("team");
        let host_event: Event = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "web-x-team.17a", "namespace": host_namespace},
            "involvedObject": {"kind": "Pod", "name": "web-x-team", "namespace": host_namespace},
            "reason": "Scheduled"
        }))
        .unwrap();
        let host_events = filled(Storage::Encoded, [host_event]);
        host_events.corrupt(&ObjectRef::new("web-x-team.17a").within(&host_namespace));
        let mirror: Event = serde_json::from_value(serde_json::json!({
            "metadata": {
                "name": "web.17a", "namespace": "team", "uid": "0f2d4c1e-2222-4a2b-9c3d-5e6f7a8b9c0d",
                "labels": {SYNCED_FROM_HOST_LABEL: "true"},
                "annotations": {HOST_EVENT_ANNOTATION: "web-x-team.17a"}
            },
            "involvedObject": {"kind": "Pod", "name": "web", "namespace": "team"},
            "reason": "Scheduled"
        }))
        .unwrap();
        let syncer = EventSyncer {
            router: Arc::new(EventRouter::new(mapping.clone(), clients.namespaced_translator())),
            host_events: host_events.clone(),
            mapping,
            triggers: Triggers::new(Vec::new()),
        };
        let ctx = SyncContext::new(
            &register,
            filled(Storage::Encoded, [mirror.clone()]),
            host_events,
            "events",
        );

        // A request would hang on the listener, which never answers.
        let reconcile = tokio::time::timeout(
            std::time::Duration::from_secs(5),
            syncer.fake_sync(&ctx, Arc::new(mirror)),
        );
        let err = reconcile.await.expect("no request made").unwrap_err();
        assert!(matches!(err, Error::CacheDecode { .. }), "{err}");
        tokio::task::yield_now().await;
        assert_eq!(connections.load(Ordering::SeqCst), 0, "nothing was deleted");
    }
}
