//! Services and their endpoints.
//!
//! - Services go down with their selector translated; the host allocates cluster IPs and node
//!   ports. The virtual service is recreated once with the host's cluster IPs (the field is
//!   immutable; name, labels, annotations and spec are kept, so clients see the same service),
//!   node ports and load-balancer status come back up.
//! - Endpoints of selector services are mirrored up from the host with pod references
//!   translated to the virtual pods. The virtual control plane should run without its own
//!   endpoints controller (as `deploy/` configures it), or the two would take turns.
//! - Endpoints of selector-less services are the tenant's: they go down (see [`endpoints`]).
//! - `default/kubernetes` is the virtual API server's own service and is never synced.
//! - What of a service and of selector-less endpoints may reach the host is decided by
//!   `sync.services` (see [`policy`]): external IPs, types, load-balancer classes, annotations
//!   and endpoint addresses the configuration does not allow are left out, with an event.

pub mod endpoints;
pub mod policy;
pub mod slices;
pub mod translate;

use std::{cell::Cell, collections::HashSet, sync::Arc};

use async_trait::async_trait;
use dashmap::DashSet;
use futures::StreamExt;
use k8s_openapi::api::{
    core::v1::{Endpoints, Pod, Service, ServiceSpec},
    discovery::v1::EndpointSlice,
};
use kube::{
    Resource, ResourceExt,
    api::{DeleteParams, Preconditions},
};
use vcsync_translators::{NameTranslator, VirtualKey};

use crate::{
    Action, Caches, Clients, ControllerBuilder, ControllerModifier, RegisterContext, Result, Side,
    SyncContext, Syncer,
    cache::{Cache, DecodeError},
    error::api_error,
    events::EventType,
    informer::{InformerEvent, Scope},
    register_syncer,
    resource::virtual_key_of,
    sdk::{Base, SyncResource},
    writes::{create_host_object, labels_and_annotations_match, update_host_object, write_params},
};

use translate::{
    MIRRORED_LABEL, desired_host_spec, mirrored_endpoints_labels, needs_host_cluster_ip, node_ports_up,
    recreated_virtual_service, virtual_endpoints_subsets, without_held_node_ports,
};

/// How soon a service retries taking a cluster IP or node port of its host service that another
/// virtual service holds.
const HELD_RETRY: std::time::Duration = std::time::Duration::from_secs(5);
/// When to look again at host Endpoints that name a host pod the pod cache does not show yet.
const POD_CACHE_LAG_RETRY: std::time::Duration = std::time::Duration::from_millis(200);

/// Registers the service and endpoints syncers when services are enabled.
pub async fn register(ctx: &RegisterContext) -> Result<()> {
    if !ctx.clients().config().sync.services.enabled {
        return Ok(());
    }
    register_syncer(ctx, ServiceSyncer::new(ctx.clients(), ctx.caches())).await?;
    register_syncer(ctx, endpoints::EndpointsSyncer::new(ctx.clients(), ctx.caches())).await
}

/// Whether a virtual service is synced at all.
fn is_synced(service: &Service) -> bool {
    !(service.metadata.namespace.as_deref() == Some("default")
        && service.metadata.name.as_deref() == Some("kubernetes"))
}

/// Syncs Services down and their cluster IPs, node ports, load-balancer status and endpoints up.
pub struct ServiceSyncer {
    translator: Arc<dyn NameTranslator>,
    host_services: Cache<Service>,
    host_endpoints: Cache<Endpoints>,
    virtual_endpoints: Cache<Endpoints>,
    host_pods: Cache<Pod>,
    host_slices: Cache<EndpointSlice>,
    virtual_slices: Cache<EndpointSlice>,
    virtual_services: Cache<Service>,
    /// Services whose host cluster IP the virtual API server refused (CIDR mismatch): not
    /// retried until vcsync restarts, so a misconfiguration cannot cause a delete loop.
    adoption_failed: DashSet<VirtualKey>,
    policy: policy::ServicesConfig,
}

impl ServiceSyncer {
    /// A syncer translating with `clients` over the shared `caches`.
    pub fn new(clients: &Clients, caches: &Caches) -> Self {
        Self {
            translator: Arc::from(clients.namespaced_translator()),
            host_services: caches.host_informer::<Service>().store(),
            host_endpoints: host_informer::<Endpoints>(clients, caches).store(),
            virtual_endpoints: caches.virtual_informer::<Endpoints>().store(),
            host_pods: caches.host_informer::<Pod>().store(),
            host_slices: host_informer::<EndpointSlice>(clients, caches).store(),
            virtual_slices: caches.virtual_informer::<EndpointSlice>().store(),
            virtual_services: caches.virtual_informer::<Service>().store(),
            adoption_failed: DashSet::new(),
            policy: clients.config().sync.services.clone(),
        }
    }

    /// The host service a virtual one should have, before hooks, and what the policy refused.
    fn desired_host_service(
        &self,
        virt: &Service,
        observed: Option<&ServiceSpec>,
    ) -> (Service, policy::ServiceRefusals) {
        let mut spec = desired_host_spec(self.translator.as_ref(), virt, observed);
        let mut refusals = policy::police_service_spec(&self.policy, &mut spec, observed);
        let mut virtual_meta = virt.metadata.clone();
        refusals.annotations = policy::filter_annotations(&self.policy, &mut virtual_meta.annotations);
        let mut metadata = self.translator.host_metadata("Service", &virtual_meta);
        if let Some(summary) = refusals.summary() {
            metadata
                .annotations
                .get_or_insert_with(Default::default)
                .insert(policy::REFUSED_ANNOTATION.to_string(), summary);
        }
        let service = Service {
            metadata,
            spec: Some(spec),
            status: None,
        };
        (service, refusals)
    }

    /// Tells the tenant what the policy kept from the host.
    async fn report_refusals(
        &self,
        ctx: &SyncContext<Service>,
        virt: &Service,
        refusals: &policy::ServiceRefusals,
    ) {
        for (warning, reason, message) in refusals.events() {
            let type_ = if warning {
                EventType::Warning
            } else {
                EventType::Normal
            };
            tracing::info!(%reason, %message, "service policy");
            ctx.events()
                .publish(&virt.object_ref(&()), type_, reason, &message)
                .await;
        }
    }

    /// The cluster IPs and node ports the virtual services other than `virt` hold.
    fn held_by_others(&self, virt: &Service) -> (HashSet<String>, HashSet<i32>) {
        let (mut ips, mut node_ports) = (HashSet::new(), HashSet::new());
        for other in self.virtual_services.state() {
            if other.metadata.uid == virt.metadata.uid {
                continue;
            }
            let Some(spec) = other.spec.as_ref() else {
                continue;
            };
            ips.extend(spec.cluster_ips.iter().flatten().cloned());
            ips.extend(spec.cluster_ip.iter().cloned());
            node_ports.extend(spec.ports.iter().flatten().filter_map(|p| p.node_port));
        }
        (ips, node_ports)
    }

    async fn adopt_host_cluster_ip(
        &self,
        ctx: &SyncContext<Service>,
        virt: &Service,
        host: &ServiceSpec,
        held_node_ports: &HashSet<i32>,
    ) -> Result<()> {
        let key = virtual_key_of(virt);
        let api = ctx.virtual_api_for(virt);
        let delete = DeleteParams {
            preconditions: Some(Preconditions {
                uid: virt.metadata.uid.clone(),
                resource_version: None,
            }),
            ..DeleteParams::default()
        };
        let kind = "Service";
        api.delete(&virt.name_any(), &delete).await.map_err(api_error(
            Side::Virtual,
            "delete",
            kind,
            &key.to_string(),
        ))?;
        let params = write_params();
        let recreated = recreated_virtual_service(virt, host, |port| held_node_ports.contains(&port));
        match api.create(&params, &recreated).await {
            Ok(created) => {
                tracing::info!(cluster_ip = ?host.cluster_ip, "virtual service recreated with the host's cluster IP");
                ctx.events()
                    .publish(
                        &created.object_ref(&()),
                        EventType::Normal,
                        "ClusterIPAdopted",
                        "recreated with the host service's cluster IP",
                    )
                    .await;
                Ok(())
            }
            Err(err) => {
                self.adoption_failed.insert(key.clone());
                // The tenant's service comes back as it was, node ports included: the host's
                // may be held in the virtual cluster by another service (two services whose
                // ports the servers allocated the other way round), and a restore with them
                // would fail too and lose the service.
                let mut restore = recreated;
                restore.spec = virt.spec.clone();
                let restored = api.create(&params, &restore).await.map_err(api_error(
                    Side::Virtual,
                    "create",
                    kind,
                    &key.to_string(),
                ))?;
                let message = format!(
                    "the virtual API server refused the host cluster IP {} or the host's node ports: {err}; \
                     run the virtual API server with the host cluster's service CIDR \
                     (--service-cluster-ip-range)",
                    host.cluster_ip.as_deref().unwrap_or_default()
                );
                tracing::warn!(%message, "service CIDR mismatch");
                ctx.events()
                    .publish(
                        &restored.object_ref(&()),
                        EventType::Warning,
                        "ServiceCIDRMismatch",
                        &message,
                    )
                    .await;
                Ok(())
            }
        }
    }

    /// The virtual pod behind a host pod name, if the pod is this instance's. A cached pod
    /// that does not decode is recorded in `undecoded` and left out: the caller fails the
    /// reconcile on it before writing, rather than mirror the addresses without that pod's.
    fn host_pod_virtual_key(
        &self,
        host_ns: &str,
        host_pod: &str,
        undecoded: &Cell<Option<DecodeError>>,
    ) -> Option<VirtualKey> {
        let pod = self
            .host_pods
            .try_get(&kube::runtime::reflector::ObjectRef::new(host_pod).within(host_ns))
            .unwrap_or_else(|err| {
                undecoded.set(Some(err));
                None
            })?;
        self.translator.virtual_key(pod.meta())
    }

    /// Whether the host Endpoints of `host` name a pod of the host namespace that the host pod
    /// cache does not hold (yet).
    fn names_unseen_host_pods(&self, host: &Service) -> bool {
        let host_ns = host.namespace().unwrap_or_default();
        let Some(endpoints) = self
            .host_endpoints
            .get(&kube::runtime::reflector::ObjectRef::new(&host.name_any()).within(&host_ns))
        else {
            return false;
        };
        let subsets = endpoints.subsets.iter().flatten();
        let addresses = subsets.flat_map(|subset| {
            let ready = subset.addresses.iter().flatten();
            ready.chain(subset.not_ready_addresses.iter().flatten())
        });
        addresses
            .filter_map(|address| address.target_ref.as_ref())
            .filter(|target| target.kind.as_deref() == Some("Pod"))
            .filter(|target| target.namespace.as_deref().is_none_or(|ns| ns == host_ns))
            .filter_map(|target| target.name.as_deref())
            .any(|pod| {
                !self
                    .host_pods
                    .contains(&kube::runtime::reflector::ObjectRef::new(pod).within(&host_ns))
            })
    }

    /// Mirrors the host Endpoints of a selector service up; returns whether it wrote.
    async fn mirror_endpoints(
        &self,
        ctx: &SyncContext<Service>,
        virt: &Service,
        host: &Service,
    ) -> Result<bool> {
        if virt.spec.as_ref().and_then(|s| s.selector.as_ref()).is_none() {
            return Ok(false);
        }
        let key = virtual_key_of(virt);
        let host_ns = host.namespace().unwrap_or_default();
        let host_endpoints = self
            .host_endpoints
            .get(&kube::runtime::reflector::ObjectRef::new(&host.name_any()).within(&host_ns));
        let undecoded = Cell::new(None);
        let subsets = host_endpoints.as_ref().and_then(|h| {
            virtual_endpoints_subsets(h, |pod| self.host_pod_virtual_key(&host_ns, pod, &undecoded))
        });
        if let Some(err) = undecoded.take() {
            return Err(err.into());
        }
        let observed = self.virtual_endpoints.get(
            &kube::runtime::reflector::ObjectRef::new(&key.name)
                .within(key.namespace.as_deref().unwrap_or_default()),
        );
        let labels = mirrored_endpoints_labels(virt);
        let api: kube::Api<Endpoints> = kube::Api::namespaced(
            ctx.virtual_client().clone(),
            key.namespace.as_deref().unwrap_or_default(),
        );
        let params = write_params();
        let write = |verb| api_error(Side::Virtual, verb, "Endpoints", &key.to_string());
        match observed {
            None if subsets.is_none() => Ok(false),
            None => {
                let mut endpoints = Endpoints {
                    subsets,
                    ..Endpoints::default()
                };
                endpoints.metadata.name = Some(key.name.clone());
                endpoints.metadata.namespace = key.namespace.clone();
                endpoints.metadata.labels = Some(labels);
                api.create(&params, &endpoints).await.map_err(write("create"))?;
                Ok(true)
            }
            Some(current)
                if current.subsets == subsets && current.metadata.labels.as_ref() == Some(&labels) =>
            {
                Ok(false)
            }
            Some(current) => {
                let mut endpoints = (*current).clone();
                endpoints.subsets = subsets;
                endpoints.metadata.labels = Some(labels);
                api.replace(&key.name, &params, &endpoints)
                    .await
                    .map_err(write("update"))?;
                Ok(true)
            }
        }
    }
}

/// The informer of the host's own `K` objects (endpoints and slices, which the host's
/// controllers create, not vcsync: not filtered by ownership), in the single host namespace, or
/// in all namespaces in the per-namespace mapping.
fn host_informer<K: SyncResource>(clients: &Clients, caches: &Caches) -> Arc<crate::informer::Informer<K>> {
    let per_namespace = clients.namespace_mapping().is_per_namespace();
    caches.informers().get::<K>(Scope::Custom {
        side: Side::Host,
        namespace: (!per_namespace).then(|| clients.host_namespace().to_string()),
        labels: String::new(),
    })
}

impl Base for ServiceSyncer {
    fn name(&self) -> &str {
        "services"
    }
}

#[async_trait]
impl Syncer for ServiceSyncer {
    type Resource = Service;

    fn translator(&self) -> &dyn NameTranslator {
        self.translator.as_ref()
    }

    async fn sync_down(&self, ctx: &SyncContext<Service>, virt: Arc<Service>) -> Result<Action> {
        if !is_synced(&virt) {
            return Ok(Action::await_change());
        }
        let (mut desired, refusals) = self.desired_host_service(&virt, None);
        // Hooks are the operator's: they come after the policy.
        ctx.oversight().hooks().apply(Side::Host, &mut desired);
        let action = create_host_object(ctx, &virt, &desired).await?;
        self.report_refusals(ctx, &virt, &refusals).await;
        Ok(action)
    }

    async fn sync(
        &self,
        ctx: &SyncContext<Service>,
        host: Arc<Service>,
        virt: Arc<Service>,
    ) -> Result<Action> {
        let host_spec = host.spec.clone().unwrap_or_default();
        let (mut hooked, refusals) = self.desired_host_service(&virt, Some(&host_spec));
        // Hooks change the desired service before the comparison, so they never cause
        // repeated writes.
        ctx.oversight().hooks().apply(Side::Host, &mut hooked);
        let (desired_meta, desired_spec) = (hooked.metadata, hooked.spec.unwrap_or_default());
        if desired_spec != host_spec || !labels_and_annotations_match(&host.metadata, &desired_meta) {
            let refused = |meta: &kube::api::ObjectMeta| {
                meta.annotations
                    .as_ref()
                    .and_then(|a| a.get(policy::REFUSED_ANNOTATION).cloned())
            };
            // Told once per change of what is refused (the host copy records it).
            let newly_refused = refused(&host.metadata) != refused(&desired_meta);
            let mut desired = (*host).clone();
            desired.metadata.labels = desired_meta.labels;
            desired.metadata.annotations = desired_meta.annotations;
            desired.spec = Some(desired_spec);
            let action = update_host_object(ctx, &virt, &desired).await?;
            if newly_refused {
                self.report_refusals(ctx, &virt, &refusals).await;
            }
            return Ok(action);
        }

        let key = virtual_key_of(virt.as_ref());
        let virt_spec = virt.spec.clone().unwrap_or_default();
        if needs_host_cluster_ip(&virt_spec, &host_spec) && !self.adoption_failed.contains(&key) {
            let (held_ips, held_node_ports) = self.held_by_others(&virt);
            // Another virtual service holds the host's cluster IP (one being deleted, say): the
            // recreate would fail, so the service stays as it is until the IP is free.
            if host_spec
                .cluster_ip
                .as_ref()
                .is_some_and(|ip| held_ips.contains(ip))
            {
                tracing::info!(cluster_ip = ?host_spec.cluster_ip, "host cluster IP held by another virtual service; adoption waits");
                return Ok(Action::requeue(HELD_RETRY));
            }
            self.adopt_host_cluster_ip(ctx, &virt, &host_spec, &held_node_ports)
                .await?;
            return Ok(Action::await_change());
        }
        let api = ctx.virtual_api_for(&virt);
        let params = write_params();
        // Node ports another virtual service holds come up once it lets them go.
        let mut done = Action::await_change();
        if let Some(ports) = node_ports_up(&virt_spec, &host_spec) {
            let own = virt_spec.ports.clone().unwrap_or_default();
            let (_, held_node_ports) = self.held_by_others(&virt);
            let (ports, held) = without_held_node_ports(ports, &own, |port| held_node_ports.contains(&port));
            if held {
                done = Action::requeue(HELD_RETRY);
            }
            if ports != own {
                let mut updated = (*virt).clone();
                updated.spec.get_or_insert_with(Default::default).ports = Some(ports);
                api.replace(&virt.name_any(), &params, &updated)
                    .await
                    .map_err(api_error(Side::Virtual, "update", "Service", &key.to_string()))?;
                return Ok(done);
            }
        }
        let host_lb = host.status.as_ref().and_then(|s| s.load_balancer.clone());
        let virt_lb = virt.status.as_ref().and_then(|s| s.load_balancer.clone());
        if host_lb.unwrap_or_default() != virt_lb.unwrap_or_default() {
            let mut updated = (*virt).clone();
            updated.status.get_or_insert_with(Default::default).load_balancer =
                host.status.as_ref().and_then(|s| s.load_balancer.clone());
            api.replace_status(&virt.name_any(), &params, &updated)
                .await
                .map_err(api_error(
                    Side::Virtual,
                    "update status",
                    "Service",
                    &key.to_string(),
                ))?;
            return Ok(Action::await_change());
        }
        if virt.spec.as_ref().and_then(|s| s.selector.as_ref()).is_some() {
            self.mirror_endpoints(ctx, &virt, &host).await?;
            let host_ns = host.namespace().unwrap_or_default();
            let host_slices: Vec<_> = self
                .host_slices
                .state()
                .into_iter()
                .filter(|slice| slice.namespace().as_deref() == Some(host_ns.as_str()))
                .collect();
            let undecoded = Cell::new(None);
            let desired = slices::virtual_slices(&virt, &host.name_any(), &host_slices, |pod| {
                self.host_pod_virtual_key(&host_ns, pod, &undecoded)
            });
            if let Some(err) = undecoded.take() {
                return Err(err.into());
            }
            let api = kube::Api::namespaced(
                ctx.virtual_client().clone(),
                &virt.namespace().unwrap_or_default(),
            );
            slices::apply_virtual_slices(&api, &self.virtual_slices, &virt, desired).await?;
            // An address of a host pod the pod cache does not show yet was left out: its
            // arrival brings no event here, so look again once the cache caught up.
            if self.names_unseen_host_pods(&host) {
                return Ok(Action::requeue(POD_CACHE_LAG_RETRY));
            }
        }
        Ok(done)
    }

    fn controller_modifier(&self) -> Option<&dyn ControllerModifier> {
        Some(self)
    }
}

impl ControllerModifier for ServiceSyncer {
    /// Endpoints changing on either side reconcile their service.
    fn modify_controller(
        &self,
        ctx: &RegisterContext,
        builder: ControllerBuilder,
    ) -> Result<ControllerBuilder> {
        let host_services = self.host_services.clone();
        let translator = self.translator.clone();
        let host_keys = host_informer::<Endpoints>(ctx.clients(), ctx.caches())
            .subscribe()
            .flat_map(move |event| {
                let names: Vec<(String, String)> = match event {
                    InformerEvent::Applied(e) | InformerEvent::Deleted(e) => {
                        vec![(e.namespace().unwrap_or_default(), e.name_any())]
                    }
                    InformerEvent::Relisted => host_services
                        .state()
                        .iter()
                        .map(|s| (s.namespace().unwrap_or_default(), s.name_any()))
                        .collect(),
                };
                let keys: Vec<VirtualKey> = names
                    .iter()
                    .filter_map(|(ns, name)| {
                        host_services.get(&kube::runtime::reflector::ObjectRef::new(name).within(ns))
                    })
                    .filter_map(|service| translator.virtual_key(service.meta()))
                    .collect();
                futures::stream::iter(keys)
            });
        let virtual_keys = ctx
            .caches()
            .virtual_informer::<Endpoints>()
            .subscribe()
            .filter_map(|event| async move {
                match event {
                    InformerEvent::Applied(e) | InformerEvent::Deleted(e)
                        if e.labels().get(MIRRORED_LABEL).is_some() =>
                    {
                        Some(virtual_key_of(e.as_ref()))
                    }
                    _ => None,
                }
            });
        let services = self.host_services.clone();
        let translator = self.translator.clone();
        let host_slice_keys = host_informer::<EndpointSlice>(ctx.clients(), ctx.caches())
            .subscribe()
            .filter_map(move |event| {
                let key = match event {
                    InformerEvent::Applied(s) | InformerEvent::Deleted(s) => {
                        s.labels().get(slices::SERVICE_NAME_LABEL).and_then(|service| {
                            let host_ns = s.namespace().unwrap_or_default();
                            let service = services
                                .get(&kube::runtime::reflector::ObjectRef::new(service).within(&host_ns))?;
                            translator.virtual_key(service.meta())
                        })
                    }
                    InformerEvent::Relisted => None,
                };
                futures::future::ready(key)
            });
        let virtual_slice_keys = ctx
            .caches()
            .virtual_informer::<EndpointSlice>()
            .subscribe()
            .filter_map(|event| {
                let key = match event {
                    InformerEvent::Applied(s) | InformerEvent::Deleted(s)
                        if s.labels().contains_key(MIRRORED_LABEL) =>
                    {
                        s.labels()
                            .get(slices::SERVICE_NAME_LABEL)
                            .map(|service| VirtualKey::new(s.namespace(), service.clone()))
                    }
                    _ => None,
                };
                futures::future::ready(key)
            });
        Ok(builder
            .watches(host_keys)
            .watches(virtual_keys)
            .watches(host_slice_keys)
            .watches(virtual_slice_keys))
    }
}

#[cfg(test)]
mod tests;
