//! `direction: fromHost`: the host's objects are mirrored read-only into the virtual cluster.
//!
//! A [`FakeSyncer`] of `DynamicObject`s, as the built-in host mirrors (StorageClasses,
//! IngressClasses) are: its keys are the mirrors' virtual keys, its controller is fed by the
//! virtual informer of the kind and, through extra triggers, by a host informer (the host
//! namespace of `virtualNamespace`, or the cluster scope; vcsync's own copies excluded). That
//! gives it the runtime's caches, key queue, per-key serialisation, backoff and the wait for
//! full caches. Tenant edits of a mirror are reverted, mirrors of deleted host objects removed,
//! virtual objects without the mirror label left alone.

use std::sync::Arc;

use async_trait::async_trait;
use futures::StreamExt;
use kube::{
    ResourceExt,
    api::{DynamicObject, ObjectMeta},
};
use vcsync_syncer::{
    Action, Base, ControllerModifier, FakeSyncer, Kind, RegisterContext, Result, Side, SyncContext, Triggers,
    cache::Cache,
    controller::CACHE_LAG_RETRY,
    error::{api_error, status_code},
    informer::{InformerEvent, Scope},
    register_dynamic_fake_syncer,
    writes::{delete_params, write_params},
};
use vcsync_translators::{MANAGED_BY_LABEL, VirtualKey};

use crate::{
    config::{NAME, ResourceConfig},
    crd::Served,
    translate::{desired_mirror, host_watch_namespace, in_sync, is_mirror, set_status, status, with_hooks},
};

/// The mirror syncer of one configured `fromHost` resource.
pub struct FromHost {
    name: String,
    served: Served,
    /// The host namespace mirrored (None: a cluster-scoped kind).
    host_namespace: Option<String>,
    host: Cache<DynamicObject>,
    triggers: Triggers,
}

/// Where the mirror of the host object `name` lives: `virtual_namespace` for namespaced kinds.
fn mirror_key(namespaced: bool, virtual_namespace: &str, name: &str) -> VirtualKey {
    VirtualKey::new(
        namespaced.then(|| virtual_namespace.to_string()),
        name.to_string(),
    )
}

impl FromHost {
    fn kind(&self) -> &str {
        &self.served.resource.kind
    }

    /// The host object mirrored at `key` (its name, in the mirrored namespace); never one of
    /// vcsync's own copies. A cached one that does not decode is an error, never an absence
    /// (which removes the mirror).
    fn host_object(
        &self,
        ctx: &SyncContext<DynamicObject>,
        key: &VirtualKey,
    ) -> Result<Option<Arc<DynamicObject>>> {
        Ok(self
            .host
            .try_get(&ctx.kind().object_ref(self.host_namespace.as_deref(), &key.name))?
            .filter(|host| !host.labels().contains_key(MANAGED_BY_LABEL)))
    }

    /// The virtual mirror `host` should have at `key`, after the hooks for virtual objects of
    /// this kind.
    fn desired_mirror(
        &self,
        ctx: &SyncContext<DynamicObject>,
        host: &DynamicObject,
        key: &VirtualKey,
    ) -> DynamicObject {
        let desired = desired_mirror(host, key.namespace.as_deref());
        with_hooks(ctx.oversight().hooks(), Side::Virtual, self.kind(), desired)
    }
}

impl Base for FromHost {
    fn name(&self) -> &str {
        &self.name
    }
}

#[async_trait]
impl FakeSyncer for FromHost {
    type Resource = DynamicObject;

    /// No mirror at `key`: make one if the host object is there.
    async fn fake_sync_up(&self, ctx: &SyncContext<DynamicObject>, key: &VirtualKey) -> Result<Action> {
        let Some(host) = self.host_object(ctx, key)? else {
            return Ok(Action::await_change());
        };
        let desired = self.desired_mirror(ctx, &host, key);
        let api = ctx
            .kind()
            .api(ctx.virtual_client().clone(), key.namespace.as_deref());
        match api.create(&write_params(), &desired).await {
            Ok(_) => {
                tracing::info!(%key, kind = %self.kind(), "mirrored host object into the virtual cluster");
                Ok(Action::await_change())
            }
            Err(err) if status_code(&err) == Some(409) => Ok(Action::requeue(CACHE_LAG_RETRY)),
            Err(err) => Err(api_error(Side::Virtual, "create", self.kind(), &key.to_string())(
                err,
            )),
        }
    }

    /// A virtual object at a mirror's key: a mirror is reverted to its host object, or removed
    /// with it; the tenant's own objects (without the label) are left alone.
    async fn fake_sync(&self, ctx: &SyncContext<DynamicObject>, virt: Arc<DynamicObject>) -> Result<Action> {
        if !is_mirror(&virt.metadata) || virt.metadata.deletion_timestamp.is_some() {
            return Ok(Action::await_change());
        }
        let key = vcsync_syncer::resource::virtual_key_of(virt.as_ref());
        let api = ctx.virtual_api_for(&virt);
        let kind = self.kind();
        let Some(host) = self.host_object(ctx, &key)? else {
            match api.delete(&key.name, &delete_params(&virt.metadata, None)).await {
                Ok(_) => tracing::info!(%key, %kind, "removed virtual mirror"),
                Err(err) if status_code(&err) == Some(404) => {}
                Err(err) => return Err(api_error(Side::Virtual, "delete", kind, &key.to_string())(err)),
            }
            return Ok(Action::await_change());
        };
        let desired = self.desired_mirror(ctx, &host, &key);
        let status_differs = status(&virt) != status(&desired);
        if !in_sync(&virt, &desired) || (status_differs && !self.served.has_status) {
            let mut update = desired;
            update.metadata.resource_version = virt.metadata.resource_version.clone();
            if self.served.has_status {
                set_status(&mut update, status(&virt).cloned());
            }
            api.replace(&key.name, &write_params(), &update)
                .await
                .map_err(api_error(Side::Virtual, "update", kind, &key.to_string()))?;
            tracing::info!(%key, %kind, "reverted the virtual mirror to the host object");
            // The status (if it differs too) follows on the update's event.
            return Ok(Action::await_change());
        }
        if status_differs {
            let mut update = virt.as_ref().clone();
            set_status(&mut update, status(&desired).cloned());
            api.replace_status(&key.name, &write_params(), &update)
                .await
                .map_err(api_error(
                    Side::Virtual,
                    "update status of",
                    kind,
                    &key.to_string(),
                ))?;
        }
        Ok(Action::await_change())
    }

    fn controller_modifier(&self) -> Option<&dyn ControllerModifier> {
        Some(&self.triggers)
    }
}

/// Registers the mirror syncer of `config`, whose type the virtual cluster serves as `served`.
pub async fn register(
    ctx: &RegisterContext,
    config: &ResourceConfig,
    served: Served,
    kind: Kind<DynamicObject>,
) -> Result<()> {
    let host_namespace = host_watch_namespace(
        ctx.clients().namespace_mapping(),
        served.namespaced,
        config.direction,
        &config.virtual_namespace,
    );
    let informers = ctx.caches().informers();
    let host = informers.get_of(
        Scope::Custom {
            side: Side::Host,
            namespace: host_namespace.clone(),
            // vcsync's own copies are not the host's objects.
            labels: format!("!{MANAGED_BY_LABEL}"),
        },
        kind.clone(),
    );
    let virtual_store = informers.get_of(Scope::VirtualAll, kind.clone()).store();
    let (host_store, namespaced) = (host.store(), served.namespaced);
    let virtual_namespace = config.virtual_namespace.clone();
    let key_of = move |name: &str| mirror_key(namespaced, &virtual_namespace, name);
    let keys_of = move |event: InformerEvent<DynamicObject>| -> Vec<VirtualKey> {
        match event {
            InformerEvent::Applied(obj) | InformerEvent::Deleted(obj) => vec![key_of(&obj.name_any())],
            // Host objects deleted during a watch gap left no event: look at every mirror too.
            InformerEvent::Relisted => host_store
                .map(|o| key_of(&o.name_any()))
                .into_iter()
                .chain(
                    virtual_store
                        .map(|o| mirror_of(&o.metadata))
                        .into_iter()
                        .flatten(),
                )
                .collect(),
        }
    };
    let events = futures::stream::unfold(host.subscribe(), |mut events| async move {
        events.recv().await.map(|event| (event, events))
    });
    let triggers = events
        .flat_map(move |event| futures::stream::iter(keys_of(event)))
        .boxed();
    let syncer = FromHost {
        name: format!("{NAME}/{}", served.resource.plural),
        served,
        host_namespace,
        host: host.store(),
        triggers: Triggers::new(vec![triggers]),
    };
    register_dynamic_fake_syncer(ctx, syncer, kind).await
}

/// The key of a virtual object if it is a mirror.
fn mirror_of(meta: &ObjectMeta) -> Option<VirtualKey> {
    is_mirror(meta).then(|| VirtualKey::new(meta.namespace.clone(), meta.name.clone().unwrap_or_default()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mirrors_of_namespaced_kinds_land_in_the_virtual_namespace() {
        assert_eq!(mirror_key(true, "team", "w"), VirtualKey::namespaced("team", "w"));
        assert_eq!(mirror_key(false, "team", "w"), VirtualKey::cluster("w"));
    }

    /// A cache of `kind` kept encoded (as the built-in kinds with one object per pod are),
    /// holding `objects`.
    fn encoded(kind: &str, objects: &[DynamicObject]) -> Cache<DynamicObject> {
        use kube::runtime::watcher::Event;
        let (cache, mut writer) =
            vcsync_syncer::cache::cache_of(kind, vcsync_syncer::cache::Storage::Encoded);
        writer.apply_watcher_event(&Event::Init);
        for obj in objects {
            writer.apply_watcher_event(&Event::InitApply(obj.clone()));
        }
        writer.apply_watcher_event(&Event::InitDone);
        cache
    }

    /// A host object that does not decode once read as gone, and its virtual mirror was
    /// deleted. Now the reconcile fails (to be retried) and sends nothing.
    #[tokio::test]
    async fn a_host_object_that_does_not_decode_fails_the_reconcile_and_deletes_no_mirror() {
        let (client, connections) = vcsync_syncer::testing::silent_api_server().await;
        let register = RegisterContext::new(
            client.clone(),
            client,
            vcsync_syncer::Config::new("demo", "vc-demo"),
        )
        .unwrap();
        let resource = kube::api::ApiResource {
            group: "example.com".into(),
            version: "v1".into(),
            api_version: "example.com/v1".into(),
            kind: "Widget".into(),
            plural: "widgets".into(),
        };
        let object = |namespace: &str, labels: serde_json::Value| -> DynamicObject {
            serde_json::from_value(serde_json::json!({
                "apiVersion": "example.com/v1", "kind": "Widget",
                "metadata": {"name": "w", "namespace": namespace, "uid": "0f2d4c1e-4444-4a2b-9c3d-5e6f7a8b9c0d",
                    "labels": labels},
                "spec": {"size": 3}
            }))
            .unwrap()
        };
        let host = encoded("Widget", &[object("shared", serde_json::json!({}))]);
        host.corrupt(&kube::runtime::reflector::ObjectRef::new_with("w", resource.clone()).within("shared"));
        let mirror = desired_mirror(&object("shared", serde_json::json!({})), Some("team"));
        assert!(is_mirror(&mirror.metadata));
        let syncer = FromHost {
            name: "crd-sync/widgets".into(),
            served: Served {
                resource: resource.clone(),
                namespaced: true,
                has_status: false,
            },
            host_namespace: Some("shared".into()),
            host: host.clone(),
            triggers: Triggers::new(Vec::new()),
        };
        let ctx = SyncContext::with_kind(
            &register,
            Kind::dynamic(resource, true),
            encoded("Widget", std::slice::from_ref(&mirror)),
            host,
            "crd-sync/widgets",
        );

        // A request would hang on the listener, which never answers.
        let reconcile = tokio::time::timeout(
            std::time::Duration::from_secs(5),
            syncer.fake_sync(&ctx, Arc::new(mirror)),
        );
        let err = reconcile.await.expect("no request made").unwrap_err();
        assert!(matches!(err, vcsync_syncer::Error::CacheDecode { .. }), "{err}");
        tokio::task::yield_now().await;
        assert_eq!(
            connections.load(std::sync::atomic::Ordering::SeqCst),
            0,
            "nothing was deleted"
        );
    }
}
