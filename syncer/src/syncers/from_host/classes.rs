//! StorageClasses and IngressClasses: the host's classes, visible read-only in the virtual
//! cluster so tenants' PVCs and Ingresses can name them.
//!
//! Each host object is mirrored under the same name with its labels and annotations (the
//! default-class annotations included, so defaulting works in the virtual cluster too) plus
//! [`SYNCED_FROM_HOST_LABEL`]. A tenant's edit of a mirror is overwritten, a deleted mirror
//! is recreated, and a mirror whose host object is gone is removed. Fields the API server
//! refuses to change (a StorageClass's provisioner, parameters, reclaim policy and binding
//! mode; an IngressClass's controller) are brought back by deleting and recreating the
//! mirror. A virtual object of the same name without the marker is the tenant's and is left
//! alone.
//!
//! Kinds the host or the virtual API server does not serve, or that vcsync may not read on
//! the host, are skipped at start with a log line.

use std::{marker::PhantomData, sync::Arc};

use async_trait::async_trait;
use k8s_openapi::{
    ClusterResourceScope,
    api::{networking::v1::IngressClass, storage::v1::StorageClass},
    apimachinery::pkg::apis::meta::v1::ObjectMeta,
};
use kube::{
    Api, Resource, ResourceExt,
    api::{DeleteParams, Preconditions},
    runtime::reflector::ObjectRef,
};
use vcsync_translators::{VirtualKey, is_reserved_key};

use super::shared::{Readable, SYNCED_FROM_HOST_LABEL, informer_keys, is_synced_from_host, probe};
use crate::{
    Action, Caches, Clients, ControllerModifier, FakeSyncer, Result, SyncContext,
    cache::Cache,
    controller::CACHE_LAG_RETRY,
    error::{Side, api_error, status_code},
    informer::{InformerEvent, Scope},
    sdk::Triggers,
    sdk::{Base, SyncResource},
    writes::write_params,
};

/// A cluster-scoped kind mirrored from the host.
pub trait MirroredKind: SyncResource + Resource<Scope = ClusterResourceScope> {
    /// Syncer name.
    const NAME: &'static str;

    /// A new object with `meta` and this object's payload (everything but metadata).
    fn with_payload(&self, meta: ObjectMeta) -> Self;

    /// Whether the payloads are equal.
    fn payload_eq(&self, other: &Self) -> bool;

    /// Whether the fields the API server refuses to update are equal.
    fn immutable_eq(&self, other: &Self) -> bool;
}

impl MirroredKind for StorageClass {
    const NAME: &'static str = "storageclasses";

    fn with_payload(&self, metadata: ObjectMeta) -> Self {
        StorageClass {
            metadata,
            ..self.clone()
        }
    }

    fn payload_eq(&self, other: &Self) -> bool {
        self.immutable_eq(other)
            && self.allow_volume_expansion == other.allow_volume_expansion
            && self.allowed_topologies == other.allowed_topologies
            && self.mount_options == other.mount_options
    }

    fn immutable_eq(&self, other: &Self) -> bool {
        // The API server defaults these two; an absent value equals the default.
        let reclaim = |s: &Self| s.reclaim_policy.clone().unwrap_or_else(|| "Delete".into());
        let binding = |s: &Self| {
            s.volume_binding_mode
                .clone()
                .unwrap_or_else(|| "Immediate".into())
        };
        self.provisioner == other.provisioner
            && self.parameters.clone().unwrap_or_default() == other.parameters.clone().unwrap_or_default()
            && reclaim(self) == reclaim(other)
            && binding(self) == binding(other)
    }
}

impl MirroredKind for IngressClass {
    const NAME: &'static str = "ingressclasses";

    fn with_payload(&self, metadata: ObjectMeta) -> Self {
        IngressClass {
            metadata,
            spec: self.spec.clone(),
        }
    }

    fn payload_eq(&self, other: &Self) -> bool {
        self.spec.clone().unwrap_or_default() == other.spec.clone().unwrap_or_default()
    }

    fn immutable_eq(&self, other: &Self) -> bool {
        let controller = |c: &Self| c.spec.as_ref().and_then(|s| s.controller.clone());
        controller(self) == controller(other)
    }
}

/// The mirror of `host`: same name and payload, host labels and annotations (keys under
/// `vcsync.dev/` dropped) plus the marker.
pub fn desired_mirror<K: MirroredKind>(host: &K) -> K {
    let meta = host.meta();
    let keep = |map: Option<&std::collections::BTreeMap<String, String>>| {
        map.into_iter()
            .flatten()
            .filter(|(k, _)| !is_reserved_key(k))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect::<std::collections::BTreeMap<_, _>>()
    };
    let mut labels = keep(meta.labels.as_ref());
    labels.insert(SYNCED_FROM_HOST_LABEL.to_string(), "true".to_string());
    let annotations = keep(meta.annotations.as_ref());
    host.with_payload(ObjectMeta {
        name: meta.name.clone(),
        labels: Some(labels),
        annotations: (!annotations.is_empty()).then_some(annotations),
        ..ObjectMeta::default()
    })
}

/// Whether `current` already is `desired` (payload, labels, annotations).
pub fn mirror_in_sync<K: MirroredKind>(current: &K, desired: &K) -> bool {
    let (c, d) = (current.meta(), desired.meta());
    current.payload_eq(desired)
        && c.labels.clone().unwrap_or_default() == d.labels.clone().unwrap_or_default()
        && c.annotations.clone().unwrap_or_default() == d.annotations.clone().unwrap_or_default()
}

/// Mirrors the host's objects of `K` into the virtual cluster.
pub struct HostMirror<K: MirroredKind> {
    host: Cache<K>,
    triggers: Triggers,
    kind: PhantomData<fn() -> K>,
}

impl<K: MirroredKind> HostMirror<K> {
    /// The host object `name`. These kinds are cached typed, which cannot fail to decode;
    /// were one kept encoded, a failure is an error, never an absence (which removes the
    /// mirror).
    fn host_object(&self, name: &str) -> Result<Option<Arc<K>>> {
        Ok(self.host.try_get(&ObjectRef::new(name))?)
    }
}

fn api<K: MirroredKind>(ctx: &SyncContext<K>) -> Api<K> {
    Api::all(ctx.virtual_client().clone())
}

impl<K: MirroredKind> Base for HostMirror<K> {
    fn name(&self) -> &str {
        K::NAME
    }
}

#[async_trait]
impl<K: MirroredKind> FakeSyncer for HostMirror<K> {
    type Resource = K;

    async fn fake_sync_up(&self, ctx: &SyncContext<K>, key: &VirtualKey) -> Result<Action> {
        let Some(host) = self.host_object(&key.name)? else {
            return Ok(Action::await_change());
        };
        let kind = K::kind(&());
        let params = write_params();
        match api(ctx).create(&params, &desired_mirror(host.as_ref())).await {
            Ok(_) => {
                tracing::info!(kind = %kind, name = %key.name, "mirrored host object into the virtual cluster");
                Ok(Action::await_change())
            }
            Err(err) if status_code(&err) == Some(409) => Ok(Action::requeue(CACHE_LAG_RETRY)),
            Err(err) => Err(api_error(Side::Virtual, "create", &kind, &key.name)(err)),
        }
    }

    async fn fake_sync(&self, ctx: &SyncContext<K>, virt: Arc<K>) -> Result<Action> {
        if !is_synced_from_host(virt.meta()) || virt.meta().deletion_timestamp.is_some() {
            return Ok(Action::await_change());
        }
        let name = virt.name_any();
        let kind = K::kind(&());
        let host = self.host_object(&name)?;
        let desired = host.as_deref().map(desired_mirror);
        match desired {
            Some(desired) if mirror_in_sync(virt.as_ref(), &desired) => Ok(Action::await_change()),
            Some(mut desired) if virt.immutable_eq(&desired) => {
                desired.meta_mut().resource_version = virt.meta().resource_version.clone();
                let params = write_params();
                api(ctx)
                    .replace(&name, &params, &desired)
                    .await
                    .map_err(api_error(Side::Virtual, "update", &kind, &name))?;
                tracing::info!(kind = %kind, %name, "reverted the virtual mirror to the host object");
                Ok(Action::await_change())
            }
            // Gone on the host, or differs where only re-creation helps (the deletion event
            // brings the key back to fake_sync_up).
            _ => {
                let params = DeleteParams {
                    preconditions: virt.meta().uid.clone().map(|uid| Preconditions {
                        uid: Some(uid),
                        resource_version: None,
                    }),
                    ..DeleteParams::background()
                };
                match api(ctx).delete(&name, &params).await {
                    Ok(_) => tracing::info!(kind = %kind, %name, "removed virtual mirror"),
                    Err(err) if status_code(&err) == Some(404) => {}
                    Err(err) => return Err(api_error(Side::Virtual, "delete", &kind, &name)(err)),
                }
                Ok(Action::await_change())
            }
        }
    }

    fn controller_modifier(&self) -> Option<&dyn ControllerModifier> {
        Some(&self.triggers)
    }
}

impl<K: MirroredKind> HostMirror<K> {
    /// The mirror of `K` over the shared `caches`, if both API servers of `clients` serve the
    /// kind and the host lets vcsync read it (None otherwise, said in the log).
    pub async fn new(clients: &Clients, caches: &Caches) -> Result<Option<Self>> {
        let kind = K::kind(&());
        for (client, side) in [
            (clients.host_client(), Side::Host),
            (clients.virtual_client(), Side::Virtual),
        ] {
            match probe::<K>(client, side, None, None).await? {
                Readable::Yes => {}
                Readable::NotServed => {
                    tracing::info!(%kind, %side, "not served by the {side} API server; not mirrored");
                    return Ok(None);
                }
                Readable::Forbidden(reason) => {
                    tracing::warn!(%kind, %side, %reason, "cannot list in the {side} cluster; not mirrored");
                    return Ok(None);
                }
            }
        }
        let host = caches.informers().get::<K>(Scope::Custom {
            side: Side::Host,
            namespace: None,
            labels: String::new(),
        });
        let virtual_informer = caches.virtual_informer::<K>();
        let (host_store, virtual_store) = (host.store(), virtual_informer.store());
        let triggers = vec![informer_keys(host.subscribe(), move |event| match event {
            InformerEvent::Applied(obj) | InformerEvent::Deleted(obj) => {
                vec![VirtualKey::cluster(obj.name_any())]
            }
            // Host objects deleted during a watch gap left no event: look at every mirror too.
            InformerEvent::Relisted => host_store
                .state()
                .iter()
                .map(|o| o.name_any())
                .chain(
                    virtual_store
                        .state()
                        .iter()
                        .filter(|o| is_synced_from_host(o.meta()))
                        .map(|o| o.name_any()),
                )
                .map(VirtualKey::cluster)
                .collect(),
        })];
        Ok(Some(Self {
            host: host.store(),
            triggers: Triggers::new(triggers),
            kind: PhantomData,
        }))
    }
}

#[cfg(test)]
mod tests {
    use rstest::rstest;
    use serde_json::json;

    use super::*;

    fn storage_class() -> StorageClass {
        serde_json::from_value(json!({
            "metadata": {"name": "fast", "uid": "host-uid", "resourceVersion": "9",
                "labels": {"tier": "ssd", "vcsync.dev/managed-by": "x"},
                "annotations": {"storageclass.kubernetes.io/is-default-class": "true"}},
            "provisioner": "ebs.csi.aws.com",
            "parameters": {"type": "gp3"},
            "reclaimPolicy": "Delete",
            "volumeBindingMode": "WaitForFirstConsumer",
            "allowVolumeExpansion": true
        }))
        .unwrap()
    }

    #[test]
    fn mirror_keeps_name_payload_labels_and_default_annotation_plus_marker() {
        let mirror = desired_mirror(&storage_class());
        assert_eq!(mirror.metadata.name.as_deref(), Some("fast"));
        assert_eq!(mirror.metadata.uid, None);
        assert_eq!(mirror.metadata.resource_version, None);
        let labels = mirror.metadata.labels.as_ref().unwrap();
        assert_eq!(labels["tier"], "ssd");
        assert_eq!(labels[SYNCED_FROM_HOST_LABEL], "true");
        assert!(!labels.contains_key("vcsync.dev/managed-by"));
        assert_eq!(
            mirror.metadata.annotations.as_ref().unwrap()["storageclass.kubernetes.io/is-default-class"],
            "true"
        );
        assert!(mirror.payload_eq(&storage_class()));
        assert!(is_synced_from_host(&mirror.metadata));
    }

    #[test]
    fn server_metadata_is_not_drift() {
        let desired = desired_mirror(&storage_class());
        let mut current = desired.clone();
        current.metadata.uid = Some("virtual-uid".into());
        current.metadata.resource_version = Some("3".into());
        assert!(mirror_in_sync(&current, &desired));
    }

    #[rstest]
    #[case::expansion(json!({"allowVolumeExpansion": false}), true)]
    #[case::mount_options(json!({"mountOptions": ["ro"]}), true)]
    #[case::label(json!({"metadata": {"labels": {"tier": "hdd"}}}), true)]
    #[case::annotation(json!({"metadata": {"annotations": {"storageclass.kubernetes.io/is-default-class": "false"}}}), true)]
    #[case::parameters(json!({"parameters": {"type": "io2"}}), false)]
    #[case::provisioner(json!({"provisioner": "other"}), false)]
    #[case::reclaim(json!({"reclaimPolicy": "Retain"}), false)]
    #[case::binding(json!({"volumeBindingMode": "Immediate"}), false)]
    fn tenant_edits_are_drift_some_only_fixed_by_recreation(
        #[case] edit: serde_json::Value,
        #[case] updatable: bool,
    ) {
        let desired = desired_mirror(&storage_class());
        let mut edited = serde_json::to_value(&desired).unwrap();
        json_patch::merge(&mut edited, &edit);
        let edited: StorageClass = serde_json::from_value(edited).unwrap();
        assert!(!mirror_in_sync(&edited, &desired));
        assert_eq!(edited.immutable_eq(&desired), updatable);
    }

    #[test]
    fn defaulted_storage_class_fields_equal_absent_ones() {
        let mut host = storage_class();
        host.reclaim_policy = None;
        host.volume_binding_mode = None;
        let mut server = desired_mirror(&host);
        server.reclaim_policy = Some("Delete".into());
        server.volume_binding_mode = Some("Immediate".into());
        assert!(mirror_in_sync(&server, &desired_mirror(&host)));
    }

    #[test]
    fn ingress_class_controller_is_immutable_parameters_are_not() {
        let host: IngressClass = serde_json::from_value(json!({
            "metadata": {"name": "nginx"},
            "spec": {"controller": "k8s.io/ingress-nginx",
                     "parameters": {"apiGroup": "k8s.example.com", "kind": "P", "name": "p"}}
        }))
        .unwrap();
        let desired = desired_mirror(&host);
        assert!(mirror_in_sync(&desired, &desired_mirror(&host)));
        let mut params = desired.clone();
        params.spec.as_mut().unwrap().parameters = None;
        assert!(!mirror_in_sync(&params, &desired) && params.immutable_eq(&desired));
        let mut controller = desired.clone();
        controller.spec.as_mut().unwrap().controller = Some("other".into());
        assert!(!controller.immutable_eq(&desired));
    }

    /// A host object that does not decode (were its kind kept encoded) once read as gone,
    /// and its virtual mirror was deleted. Now the reconcile fails (to be retried) and
    /// sends nothing.
    #[tokio::test]
    async fn a_host_object_that_does_not_decode_fails_the_reconcile_and_deletes_no_mirror() {
        use std::sync::atomic::Ordering;

        use crate::{
            Error, RegisterContext,
            cache::{Storage, cache, filled},
            config::Config,
        };

        let (client, connections) = crate::testing::silent_api_server().await;
        let register = RegisterContext::new(client.clone(), client, Config::new("demo", "vc-demo")).unwrap();
        let (host, mut writer) = cache::<StorageClass>(Storage::Encoded);
        writer.apply_watcher_event(&kube::runtime::watcher::Event::Apply(storage_class()));
        host.corrupt(&ObjectRef::new("fast"));
        let mirror = HostMirror::<StorageClass> {
            host,
            triggers: Triggers::new(Vec::new()),
            kind: PhantomData,
        };
        let mut virt = desired_mirror(&storage_class());
        virt.metadata.uid = Some("0f2d4c1e-8888-4a2b-9c3d-5e6f7a8b9c0d".into());
        let ctx = SyncContext::new(
            &register,
            filled(Storage::Typed, [virt.clone()]),
            filled(Storage::Typed, []),
            "storageclasses",
        );

        // A request would hang on the listener, which never answers.
        let reconcile = tokio::time::timeout(
            std::time::Duration::from_secs(5),
            mirror.fake_sync(&ctx, Arc::new(virt)),
        );
        let err = reconcile.await.expect("no request made").unwrap_err();
        assert!(matches!(err, Error::CacheDecode { .. }), "{err}");
        tokio::task::yield_now().await;
        assert_eq!(connections.load(Ordering::SeqCst), 0, "nothing was deleted");
    }
}
