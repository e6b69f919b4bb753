//! Endpoints of selector-less services: written by the tenant, synced down.
//!
//! Pod references inside them are translated to host pod names. Endpoints of selector
//! services are never touched here: they are mirrored up by the service syncer.
//!
//! Only addresses of this instance's host pods and of `sync.services.allowedEndpointRanges`
//! reach the host (see [`super::policy`]); the others are dropped from the host copy, recorded
//! in its `vcsync.dev/refused` annotation and told to the tenant by a Warning event on the
//! virtual Endpoints and Service. Whether an address is one of this instance's pods can change
//! (a pod starts, or goes and its IP is reused by someone else's), so host pod events reconcile
//! the endpoints that name their IPs.

use std::{collections::HashSet, net::IpAddr, sync::Arc};

use async_trait::async_trait;
use dashmap::DashMap;
use futures::StreamExt;
use k8s_openapi::api::core::v1::{Endpoints, Pod, Service};
use kube::{Resource, ResourceExt, runtime::reflector::ObjectRef};
use vcsync_translators::{NameTranslator, NamespaceMapping, VirtualKey};

use super::{
    policy::{self, REFUSED_ANNOTATION, ServicesConfig},
    translate::MIRRORED_LABEL,
};
use crate::{
    Action, Caches, Clients, ControllerBuilder, ControllerModifier, RegisterContext, Result, SyncContext,
    Syncer,
    cache::Cache,
    delete_object,
    events::EventType,
    informer::InformerEvent,
    resource::virtual_key_of,
    sdk::Base,
    writes::{create_host_object, labels_and_annotations_match, update_host_object},
};

/// Syncs the Endpoints of selector-less virtual services down.
pub struct EndpointsSyncer {
    translator: Box<dyn NameTranslator>,
    mapping: NamespaceMapping,
    virtual_services: Cache<Service>,
    host_pods: Cache<Pod>,
    policy: ServicesConfig,
    /// The addresses each synced Endpoints object names: host pod events with these IPs
    /// reconcile it.
    addresses: Arc<DashMap<VirtualKey, Vec<IpAddr>>>,
}

/// The IPs of a host pod that holds them (a finished pod's IP may be given to another pod).
fn pod_ips(pod: &Pod) -> Vec<IpAddr> {
    let Some(status) = pod.status.as_ref() else {
        return Vec::new();
    };
    if matches!(status.phase.as_deref(), Some("Succeeded" | "Failed")) {
        return Vec::new();
    }
    let mut ips: Vec<IpAddr> = status
        .pod_ips
        .iter()
        .flatten()
        .map(|p| p.ip.as_str())
        .chain(status.pod_ip.as_deref())
        .filter_map(|ip| ip.parse().ok())
        .collect();
    ips.dedup();
    ips
}

impl EndpointsSyncer {
    /// A syncer translating with `clients` over the shared `caches`.
    pub fn new(clients: &Clients, caches: &Caches) -> Self {
        Self {
            translator: clients.namespaced_translator(),
            mapping: clients.namespace_mapping().clone(),
            virtual_services: caches.virtual_informer::<Service>().store(),
            host_pods: caches.host_informer::<Pod>().store(),
            policy: clients.config().sync.services.clone(),
            addresses: Arc::default(),
        }
    }

    /// Which of `ips` belong to this instance's running host pods. A cached host pod that
    /// does not decode is an error: read as absent, its addresses would be refused and the
    /// host copy written without them.
    fn owned_pod_ips(&self, ips: &HashSet<IpAddr>) -> Result<HashSet<IpAddr>> {
        if ips.is_empty() {
            return Ok(HashSet::new());
        }
        let mut owned = HashSet::new();
        for pod_ips in self.host_pods.try_map(|pod| pod_ips(pod)) {
            owned.extend(pod_ips?.into_iter().filter(|ip| ips.contains(ip)));
        }
        Ok(owned)
    }

    /// Only endpoints of an existing selector-less service that vcsync does not mirror.
    fn is_wanted(&self, endpoints: &Endpoints) -> bool {
        if endpoints.labels().contains_key(MIRRORED_LABEL) {
            return false;
        }
        let service = self
            .virtual_services
            .get(&ObjectRef::new(&endpoints.name_any()).within(&endpoints.namespace().unwrap_or_default()));
        service.is_some_and(|s| s.spec.as_ref().and_then(|spec| spec.selector.as_ref()).is_none())
    }

    /// The host copy, and the addresses the policy refused.
    fn desired(&self, virt: &Endpoints) -> Result<(Endpoints, Vec<String>)> {
        let namespace = virt.namespace().unwrap_or_default();
        let mut subsets = virt.subsets.clone();
        let named: HashSet<IpAddr> = subsets
            .iter()
            .flatten()
            .flat_map(|s| {
                s.addresses
                    .iter()
                    .flatten()
                    .chain(s.not_ready_addresses.iter().flatten())
            })
            .filter_map(|address| address.ip.parse::<IpAddr>().ok())
            .map(|ip| ip.to_canonical())
            .collect();
        self.addresses
            .insert(virtual_key_of(virt), named.iter().copied().collect());
        let owned = self.owned_pod_ips(&named)?;
        let refused = policy::police_endpoint_subsets(&self.policy, &mut subsets, |ip| owned.contains(&ip));
        for address in subsets.iter_mut().flatten().flat_map(|s| {
            s.addresses
                .iter_mut()
                .flatten()
                .chain(s.not_ready_addresses.iter_mut().flatten())
        }) {
            if let Some(target) = address.target_ref.as_mut()
                && target.kind.as_deref() == Some("Pod")
            {
                target.name = target
                    .name
                    .as_deref()
                    .map(|name| self.mapping.host_object_name(&namespace, name));
                target.namespace = Some(self.mapping.host_namespace(&namespace));
                target.uid = None;
                target.resource_version = None;
            }
        }
        let mut metadata = self.translator.host_metadata("Endpoints", &virt.metadata);
        if !refused.is_empty() {
            metadata.annotations.get_or_insert_with(Default::default).insert(
                REFUSED_ANNOTATION.to_string(),
                format!("addresses={}", refused.join(",")),
            );
        }
        Ok((Endpoints { metadata, subsets }, refused))
    }

    /// Tells the tenant, on the Endpoints and on their Service, which addresses were dropped.
    async fn report_refused(&self, ctx: &SyncContext<Endpoints>, virt: &Endpoints, refused: &[String]) {
        if refused.is_empty() {
            return;
        }
        let (reason, message) = policy::endpoints_event(refused);
        tracing::info!(%reason, %message, "endpoints policy");
        ctx.events()
            .publish(&virt.object_ref(&()), EventType::Warning, reason, &message)
            .await;
        let service = self
            .virtual_services
            .get(&ObjectRef::new(&virt.name_any()).within(&virt.namespace().unwrap_or_default()));
        if let Some(service) = service {
            ctx.events()
                .publish(&service.object_ref(&()), EventType::Warning, reason, &message)
                .await;
        }
    }
}

impl ControllerModifier for EndpointsSyncer {
    /// A service appearing, changing its selector or going away decides whether its
    /// endpoints are synced: reconcile them then.
    fn modify_controller(
        &self,
        ctx: &RegisterContext,
        builder: ControllerBuilder,
    ) -> Result<ControllerBuilder> {
        let services =
            ctx.caches()
                .virtual_informer::<Service>()
                .subscribe()
                .filter_map(|event| async move {
                    match event {
                        InformerEvent::Applied(s) | InformerEvent::Deleted(s) => {
                            Some(virtual_key_of(s.as_ref()))
                        }
                        InformerEvent::Relisted => None,
                    }
                });
        // A host pod starting or going changes which addresses are this instance's pods'.
        let addresses = self.addresses.clone();
        let pods = ctx
            .caches()
            .host_informer::<Pod>()
            .subscribe()
            .flat_map(move |event| {
                let keys: Vec<VirtualKey> = match event {
                    InformerEvent::Applied(pod) | InformerEvent::Deleted(pod) => {
                        // Every IP in the status, a finished pod's too: it no longer holds them.
                        let ips: Vec<IpAddr> = pod
                            .status
                            .iter()
                            .flat_map(|s| {
                                s.pod_ips
                                    .iter()
                                    .flatten()
                                    .map(|p| p.ip.as_str())
                                    .chain(s.pod_ip.as_deref())
                            })
                            .filter_map(|ip| ip.parse().ok())
                            .collect();
                        if ips.is_empty() {
                            Vec::new()
                        } else {
                            addresses
                                .iter()
                                .filter(|entry| entry.value().iter().any(|ip| ips.contains(ip)))
                                .map(|entry| entry.key().clone())
                                .collect()
                        }
                    }
                    InformerEvent::Relisted => addresses.iter().map(|entry| entry.key().clone()).collect(),
                };
                futures::stream::iter(keys)
            });
        Ok(builder.watches(services).watches(pods))
    }
}

impl Base for EndpointsSyncer {
    fn name(&self) -> &str {
        "endpoints"
    }
}

#[async_trait]
impl Syncer for EndpointsSyncer {
    type Resource = Endpoints;

    fn translator(&self) -> &dyn NameTranslator {
        self.translator.as_ref()
    }

    async fn sync_down(&self, ctx: &SyncContext<Endpoints>, virt: Arc<Endpoints>) -> Result<Action> {
        if !self.is_wanted(&virt) {
            return Ok(Action::await_change());
        }
        let (desired, refused) = self.desired(&virt)?;
        let action = create_host_object(ctx, &virt, &desired).await?;
        self.report_refused(ctx, &virt, &refused).await;
        Ok(action)
    }

    async fn sync(
        &self,
        ctx: &SyncContext<Endpoints>,
        host: Arc<Endpoints>,
        virt: Arc<Endpoints>,
    ) -> Result<Action> {
        if !self.is_wanted(&virt) {
            self.addresses.remove(&virtual_key_of(virt.as_ref()));
            return delete_object(ctx, &host).await;
        }
        let (mut desired, refused) = self.desired(&virt)?;
        if desired.subsets == host.subsets && labels_and_annotations_match(&host.metadata, &desired.metadata)
        {
            return Ok(Action::await_change());
        }
        let refused_annotation = |e: &Endpoints| e.annotations().get(REFUSED_ANNOTATION).cloned();
        let newly_refused = refused_annotation(&host) != refused_annotation(&desired);
        desired.metadata.resource_version = host.metadata.resource_version.clone();
        let action = update_host_object(ctx, &virt, &desired).await?;
        if newly_refused {
            self.report_refused(ctx, &virt, &refused).await;
        }
        Ok(action)
    }

    fn controller_modifier(&self) -> Option<&dyn ControllerModifier> {
        Some(self)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::Ordering;

    use super::*;
    use crate::{
        Error,
        cache::{Storage, filled},
        config::Config,
    };

    /// A host pod that does not decode once read as absent: its address was refused and
    /// the host Endpoints overwritten without it. Now the reconcile fails (to be retried)
    /// and writes nothing.
    #[tokio::test]
    async fn a_host_pod_that_does_not_decode_fails_the_reconcile_and_drops_no_address() {
        let (client, connections) = crate::testing::silent_api_server().await;
        let register = RegisterContext::new(client.clone(), client, Config::new("demo", "vc-demo")).unwrap();
        let clients = register.clients();
        let mapping = clients.namespace_mapping().clone();
        let host_ns = mapping.host_namespace("team");
        let host_pod: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": mapping.host_object_name("team", "web"), "namespace": host_ns},
            "status": {"phase": "Running", "podIP": "10.1.2.3", "podIPs": [{"ip": "10.1.2.3"}]}
        }))
        .unwrap();
        let host_pods = filled(Storage::Encoded, [host_pod]);
        host_pods.corrupt(&ObjectRef::new(&mapping.host_object_name("team", "web")).within(&host_ns));
        let service: Service = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "db", "namespace": "team"},
            "spec": {"ports": [{"port": 5432}]}
        }))
        .unwrap();
        let syncer = EndpointsSyncer {
            translator: clients.namespaced_translator(),
            mapping: mapping.clone(),
            virtual_services: filled(Storage::Typed, [service]),
            host_pods,
            policy: clients.config().sync.services.clone(),
            addresses: Arc::default(),
        };
        let virt: Endpoints = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "db", "namespace": "team", "uid": "0f2d4c1e-5555-4a2b-9c3d-5e6f7a8b9c0d"},
            "subsets": [{"addresses": [{"ip": "10.1.2.3"}], "ports": [{"port": 5432}]}]
        }))
        .unwrap();
        // The host copy as synced while the pod decoded, with the address.
        let mut host = virt.clone();
        host.metadata = syncer.translator.host_metadata("Endpoints", &virt.metadata);
        host.metadata.resource_version = Some("7".into());
        let ctx = SyncContext::new(
            &register,
            filled(Storage::Typed, [virt.clone()]),
            filled(Storage::Typed, [host.clone()]),
            "endpoints",
        );

        // A request would hang on the listener, which never answers.
        let reconcile = tokio::time::timeout(
            std::time::Duration::from_secs(5),
            syncer.sync(&ctx, Arc::new(host), Arc::new(virt)),
        );
        let err = reconcile.await.expect("no request made").unwrap_err();
        assert!(matches!(err, Error::CacheDecode { .. }), "{err}");
        tokio::task::yield_now().await;
        assert_eq!(connections.load(Ordering::SeqCst), 0, "nothing was written");
    }
}
