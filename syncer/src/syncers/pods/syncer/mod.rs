//! The [`PodSyncer`]: the I/O around the pure translation, status and update rules.

use std::{
    collections::BTreeMap,
    sync::{Arc, Mutex},
};

use async_trait::async_trait;
use k8s_openapi::{
    api::core::v1::{
        Binding, ConfigMap, ObjectReference, PersistentVolumeClaim, Pod, PodStatus, Secret, Service,
    },
    apimachinery::pkg::apis::meta::v1::ObjectMeta,
};
use kube::{
    Api, Resource, ResourceExt,
    api::{DeleteParams, PostParams, Preconditions},
    runtime::reflector::ObjectRef,
};
use tokio::sync::{mpsc, watch};
use vcsync_translators::{
    NameTranslator, NamespacedTranslator, OBJECT_UID_ANNOTATION, RefKind, RefTarget, VirtualKey,
    is_reserved_key,
};

use super::{
    environment::ServiceLink,
    ephemeral,
    reference_gate::{Decision, RefState, ReferenceGate, wait_for},
    security::{PodSecurityLevel, violations},
    status::{collision_status, is_terminal, virtual_status, was_running_on_host},
    token::TokenMount,
    token_secrets::TokenSecrets,
    tolerations::report_dropped_tolerations,
    translate::{MANAGED_ANNOTATIONS, MANAGED_LABELS, MutableFields, PodEnvironment, PodTranslator},
    update::host_update,
};
use crate::{
    Action, ControllerBuilder, ControllerModifier, Oversight, RegisterContext, Result, SyncContext, Syncer,
    UpSyncer,
    cache::Cache,
    config::{PodsConfig, ServiceTarget},
    error::{Side, api_error, status_code},
    events::EventType,
    informer::InformerEvent,
    resource::virtual_key_of,
    sdk::Base,
    writes::{create_host_object, delete_object, delete_object_with_grace, update_host_object, write_params},
};

/// How often the cluster IP of `kubernetesService.hostService` is read again once known (a
/// changed IP reaches the pods created afterwards, as a kubelet's variables would).
const HOST_SERVICE_REFRESH: std::time::Duration = std::time::Duration::from_secs(30);
/// How often it is read, and a pod waiting for it is tried again, while it is not known.
const HOST_SERVICE_RETRY: std::time::Duration = std::time::Duration::from_secs(2);

/// Default DNS service of the virtual cluster.
const DEFAULT_DNS_SERVICE: (&str, &str) = ("kube-system", "kube-dns");
/// How long a host pod just created is trusted to exist while the host cache does not show it
/// yet; past that, the cache is believed again.
const CREATE_LAG: std::time::Duration = std::time::Duration::from_secs(5);
/// How soon a pod whose optional reference the virtual cache does not show yet (but the API
/// server does) is looked at again.
const REFERENCE_CACHE_LAG: std::time::Duration = std::time::Duration::from_millis(100);

/// What this syncer wrote for one virtual pod (by UID) that its caches may not show yet. A
/// reconcile against a cache that is known to be behind would only repeat the write and get a
/// conflict (a second create, binding or status update): it waits for the watch instead, whose
/// event brings the next reconcile.
#[derive(Debug, Default)]
struct Written {
    /// When the host pod was created.
    host_created: Option<std::time::Instant>,
    /// The virtual pod's resourceVersion a binding or status write was based on: while the cache
    /// still shows that version, the cached pod is stale.
    virtual_based_on: Option<String>,
}
/// Syncs virtual pods to the host and their status, node and deletion back.
pub struct PodSyncer {
    pods: PodTranslator,
    config: PodsConfig,
    services: Cache<Service>,
    tokens: TokenSecrets,
    secret_events: Mutex<Option<mpsc::UnboundedReceiver<InformerEvent<Secret>>>>,
    /// Which references a new host pod may name (only this cluster's own copies).
    references: Arc<ReferenceGate>,
    /// Writes the caches may not show yet, by virtual pod UID.
    written: dashmap::DashMap<String, Written>,
    /// With `kubernetesService.hostService`: that Service's cluster IP (see [`HostServiceIp`]).
    host_service_ip: Option<HostServiceIp>,
}

/// The cluster IP of the host Service that `sync.pods.kubernetesService.hostService` names:
/// None until it was first read, then Some(the IP, or None while the Service is missing or has
/// none). Read at start (the controllers wait for that first answer) and every
/// [`HOST_SERVICE_REFRESH`] after, on every replica.
type HostServiceIp = watch::Receiver<Option<Option<String>>>;

/// Starts following the cluster IP of host Service `name` in the host namespace.
fn follow_host_service(ctx: &RegisterContext, name: &str) -> HostServiceIp {
    let (tx, rx) = watch::channel(None);
    let api = Api::<Service>::namespaced(
        ctx.clients().host_client().clone(),
        ctx.clients().host_namespace(),
    );
    let service = format!("{}/{name}", ctx.clients().host_namespace());
    ctx.registrar()
        .spawn_background(read_host_service(api, name.to_string(), service, tx));
    let mut first = rx.clone();
    ctx.registrar().add_readiness(async move {
        // Err: the reader is gone (shutting down); nothing to wait for.
        let _ = first.wait_for(Option::is_some).await;
    });
    rx
}

/// The loop behind [`follow_host_service`]. A missing Service, or one without a cluster IP,
/// makes new pods wait (with a warning now and then); a failed read keeps what was known.
async fn read_host_service(
    api: Api<Service>,
    name: String,
    service: String,
    tx: watch::Sender<Option<Option<String>>>,
) {
    let mut misses: u32 = 0;
    loop {
        let read = match api.get_opt(&name).await {
            Ok(service) => Ok(service.as_ref().and_then(host_service_ip)),
            Err(err) => Err(err),
        };
        let known = tx.borrow().clone().flatten();
        let ip = match read {
            Ok(Some(ip)) => {
                misses = 0;
                if known.as_deref() != Some(ip.as_str()) {
                    tracing::info!(
                        service,
                        ip,
                        "host pods reach the virtual API server at this host Service's cluster IP"
                    );
                }
                Some(ip)
            }
            Ok(None) => {
                if misses.is_multiple_of(15) {
                    tracing::warn!(
                        service,
                        "sync.pods.kubernetesService.hostService: the host Service is missing or has no \
                         cluster IP; new pods wait for it"
                    );
                }
                misses += 1;
                None
            }
            Err(err) => {
                if misses.is_multiple_of(15) {
                    tracing::warn!(
                        service,
                        error = %err,
                        "cannot read the host Service of sync.pods.kubernetesService.hostService"
                    );
                }
                misses += 1;
                known
            }
        };
        let delay = if ip.is_some() {
            HOST_SERVICE_REFRESH
        } else {
            HOST_SERVICE_RETRY
        };
        tx.send_replace(Some(ip));
        tokio::time::sleep(delay).await;
    }
}

/// A Service's cluster IP, None for headless and ExternalName ones.
fn host_service_ip(service: &Service) -> Option<String> {
    service
        .spec
        .as_ref()?
        .cluster_ip
        .clone()
        .filter(|ip| !ip.is_empty() && ip != "None")
}

impl PodSyncer {
    /// A pod syncer for the manager of `ctx`.
    pub fn new(ctx: &RegisterContext) -> Self {
        let sync = &ctx.clients().config().sync;
        let translator =
            NamespacedTranslator::new(ctx.clients().ownership().clone(), ctx.clients().host_namespace());
        let pods = PodTranslator::new(translator, sync.pods.clone())
            .with_mapping(ctx.clients().namespace_mapping().clone())
            .with_priority_classes(sync.priority_classes.enabled)
            .with_service_accounts(sync.service_accounts.enabled);
        let secrets = ctx.caches().host_informer::<Secret>();
        Self {
            pods,
            config: sync.pods.clone(),
            services: ctx.caches().virtual_informer::<Service>().store(),
            tokens: TokenSecrets::new(ctx.caches()),
            secret_events: Mutex::new(Some(secrets.subscribe())),
            references: Arc::new(ReferenceGate::new(ctx)),
            written: dashmap::DashMap::new(),
            host_service_ip: sync
                .pods
                .kubernetes_service
                .as_ref()
                .and_then(|address| address.host_service_name())
                .map(|name| follow_host_service(ctx, name)),
        }
    }

    /// Where host pods reach the virtual API server: the configured address, the configured
    /// host Service's cluster IP, or the virtual `default/kubernetes` Service. Err: the host
    /// Service's cluster IP is not known (yet); the pod waits.
    fn kubernetes_link(&self) -> std::result::Result<Option<ServiceLink>, ()> {
        let Some(address) = &self.config.kubernetes_service else {
            let kubernetes = self.services.get(&ObjectRef::new("kubernetes").within("default"));
            return Ok(kubernetes.and_then(|s| ServiceLink::from_service(&s)));
        };
        let port = address.port.into();
        match &address.target {
            ServiceTarget::Host(host) => Ok(Some(ServiceLink::kubernetes(host, port))),
            ServiceTarget::HostService(_) => {
                let ip = self
                    .host_service_ip
                    .as_ref()
                    .and_then(|ip| ip.borrow().clone().flatten());
                ip.map(|ip| Some(ServiceLink::kubernetes(&ip, port))).ok_or(())
            }
        }
    }

    /// What the host pod of `virt` depends on, from the caches.
    fn environment(
        &self,
        virt: &Pod,
        kubernetes: Option<ServiceLink>,
        token: Option<TokenMount>,
        default_token_mount: bool,
    ) -> PodEnvironment {
        let ns = virt.namespace().unwrap_or_default();
        let service = |ns: &str, name: &str| self.services.get(&ObjectRef::new(name).within(ns));
        let links = virt.spec.as_ref().and_then(|s| s.enable_service_links) != Some(false);
        let mut services: Vec<ServiceLink> = Vec::new();
        if links {
            services = self
                .services
                .state()
                .iter()
                .filter(|s| s.metadata.namespace.as_deref() == Some(ns.as_str()))
                .filter_map(|s| ServiceLink::from_service(s))
                .collect();
        }
        // `namespace/name`; a bare name is looked for where DNS services live, in kube-system.
        let (dns_ns, dns_name) = match self.config.dns_service.as_deref() {
            Some(service) => service
                .split_once('/')
                .unwrap_or((DEFAULT_DNS_SERVICE.0, service)),
            None => DEFAULT_DNS_SERVICE,
        };
        let dns_server = service(dns_ns, dns_name)
            .and_then(|s| s.spec.as_ref()?.cluster_ip.clone())
            .filter(|ip| !ip.is_empty() && ip != "None");
        PodEnvironment {
            kubernetes,
            services,
            dns_server,
            token,
            default_token_mount,
        }
    }

    /// The fields of the host pod that follow the virtual pod, with the hooks' changes: the
    /// hooks see the host pod as created (but for its environment, which they must not
    /// depend on), so what they added at creation is desired on every update too and never
    /// causes a write. Only the mutable fields are taken: a hook's node selector, say,
    /// matters at creation only (the host refuses changes of it afterwards).
    fn mutable_fields(&self, ctx: &SyncContext<Pod>, virt: &Pod) -> MutableFields {
        let hooks = ctx.oversight().hooks();
        if hooks.is_empty() {
            return self.pods.mutable_fields(virt);
        }
        let mut pod = self.pods.host_pod(virt, &PodEnvironment::default());
        apply_hooks(ctx.oversight(), &mut pod);
        let spec = pod.spec.unwrap_or_default();
        MutableFields {
            labels: pod.metadata.labels.unwrap_or_default(),
            annotations: pod.metadata.annotations.unwrap_or_default(),
            images: spec
                .containers
                .iter()
                .chain(spec.init_containers.iter().flatten())
                .filter_map(|c| Some((c.name.clone(), c.image.clone()?)))
                .collect(),
            active_deadline_seconds: spec.active_deadline_seconds,
            tolerations: spec.tolerations.unwrap_or_default(),
            scheduling_gates: spec.scheduling_gates.unwrap_or_default(),
        }
    }

    fn uid(pod: &Pod) -> &str {
        pod.metadata.uid.as_deref().unwrap_or_default()
    }

    /// Whether the host pod of `virt` was created so recently that the host cache may not
    /// show it yet.
    fn created_recently(&self, virt: &Pod) -> bool {
        let uid = Self::uid(virt);
        let recent = self
            .written
            .get(uid)
            .and_then(|w| w.host_created)
            .is_some_and(|at| at.elapsed() < CREATE_LAG);
        if !recent {
            self.written.remove_if(uid, |_, w| w.host_created.is_some());
        }
        recent
    }

    /// Whether the cached `virt` is older than a binding or status write of ours; forgets
    /// what the cache shows now.
    fn virtual_cache_behind(&self, virt: &Pod) -> bool {
        let uid = Self::uid(virt);
        let Some(mut written) = self.written.get_mut(uid) else {
            return false;
        };
        written.host_created = None;
        if written.virtual_based_on.is_some() && written.virtual_based_on == virt.metadata.resource_version {
            return true;
        }
        drop(written);
        self.written.remove(uid);
        false
    }

    fn host_pod_name(&self, virt: &Pod) -> String {
        self.pods.translator().host_key(&virtual_key_of(virt)).name
    }

    fn host_pod_namespace(&self, virt: &Pod) -> String {
        self.pods
            .translator()
            .host_key(&virtual_key_of(virt))
            .namespace
            .unwrap_or_default()
    }

    /// Whether `host` was made for this very virtual pod, not for an earlier one of the same
    /// name (a StatefulSet's replacement pod, say).
    fn is_twin(host: &Pod, virt: &Pod) -> bool {
        let host_uid = host
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(OBJECT_UID_ANNOTATION));
        host_uid.is_none() || host_uid == virt.metadata.uid.as_ref()
    }

    /// Deletes the token Secret of `virt`'s host pod, if it was issued for `virt`.
    async fn delete_tokens(&self, ctx: &SyncContext<Pod>, virt: &Pod) -> Result<()> {
        let (namespace, name) = (self.host_pod_namespace(virt), self.host_pod_name(virt));
        let uid = virt.metadata.uid.as_deref();
        self.tokens.delete(ctx, &namespace, &name, uid).await
    }

    /// Status up, when it differs (pods/status of the virtual pod); true if it wrote.
    async fn status_up(
        &self,
        ctx: &SyncContext<Pod>,
        host: &Pod,
        virt: &Pod,
        refused: Option<&str>,
    ) -> Result<bool> {
        match virtual_status(host, virt, refused) {
            Some(status) => self.write_status(ctx, virt, status).await,
            None => Ok(false),
        }
    }

    /// The host name of `virt` is held by a foreign object: its status says so (once), as a
    /// scheduler's says why it cannot place a pod.
    async fn report_collision(&self, ctx: &SyncContext<Pod>, virt: &Pod) -> Result<bool> {
        let message = format!(
            "host pod {}/{} exists and is not managed by vcsync instance {}: this pod is not run \
             until that name is free",
            self.host_pod_namespace(virt),
            self.host_pod_name(virt),
            ctx.clients().ownership().instance()
        );
        match collision_status(virt, &message) {
            Some(status) => self.write_status(ctx, virt, status).await,
            None => Ok(false),
        }
    }

    /// Writes `status` to the virtual pod (pods/status); true if it wrote, false if the pod is
    /// gone.
    async fn write_status(&self, ctx: &SyncContext<Pod>, virt: &Pod, status: PodStatus) -> Result<bool> {
        let mut updated = virt.clone();
        updated.status = Some(status);
        let params = write_params();
        match ctx
            .virtual_api_for(virt)
            .replace_status(&virt.name_any(), &params, &updated)
            .await
        {
            Ok(_) => Ok(true),
            Err(err) if status_code(&err) == Some(404) => Ok(false),
            Err(err) => Err(api_error(
                Side::Virtual,
                "update status of",
                "Pod",
                &display_key(virt),
            )(err)),
        }
    }

    /// Binds the virtual pod to the node the host scheduled its twin on; true if it did now.
    async fn bind(&self, ctx: &SyncContext<Pod>, host: &Pod, virt: &Pod) -> Result<bool> {
        let Some(node) = host
            .spec
            .as_ref()
            .and_then(|s| s.node_name.as_deref())
            .filter(|n| !n.is_empty())
        else {
            return Ok(false);
        };
        let bound = virt
            .spec
            .as_ref()
            .and_then(|s| s.node_name.as_deref())
            .is_some_and(|n| !n.is_empty());
        if bound || virt.metadata.deletion_timestamp.is_some() {
            return Ok(false);
        }
        let binding = Binding {
            metadata: ObjectMeta {
                name: virt.metadata.name.clone(),
                namespace: virt.metadata.namespace.clone(),
                uid: virt.metadata.uid.clone(),
                ..ObjectMeta::default()
            },
            target: ObjectReference {
                api_version: Some("v1".into()),
                kind: Some("Node".into()),
                name: Some(node.to_string()),
                ..ObjectReference::default()
            },
        };
        let result: std::result::Result<serde_json::Value, _> = ctx
            .virtual_api_for(virt)
            .create_subresource("binding", &virt.name_any(), &PostParams::default(), &binding)
            .await;
        match result {
            Ok(_) => {
                tracing::info!(pod = %display_key(virt), node, "bound virtual pod");
                Ok(true)
            }
            // Bound meanwhile, replaced, or gone: the cache will tell.
            Err(err) if matches!(status_code(&err), Some(404 | 409)) => {
                tracing::debug!(pod = %display_key(virt), error = %err, "binding refused");
                Ok(false)
            }
            Err(err) => Err(api_error(Side::Virtual, "bind", "Pod", &display_key(virt))(err)),
        }
    }

    /// Deletes a virtual pod now (grace period 0) if it still is the pod of uid `virt.uid`.
    async fn delete_virtual_now(&self, ctx: &SyncContext<Pod>, virt: &Pod) -> Result<()> {
        let params = DeleteParams {
            grace_period_seconds: Some(0),
            preconditions: virt.metadata.uid.clone().map(|uid| Preconditions {
                uid: Some(uid),
                resource_version: None,
            }),
            ..DeleteParams::background()
        };
        match ctx.virtual_api_for(virt).delete(&virt.name_any(), &params).await {
            Ok(_) => Ok(()),
            Err(err) if matches!(status_code(&err), Some(404 | 409)) => Ok(()),
            Err(err) => Err(api_error(Side::Virtual, "delete", "Pod", &display_key(virt))(err)),
        }
    }

    /// `virt` breaks the configured Pod Security Standard: no host pod, a Warning event that
    /// names each broken rule, and no retry (a pod's spec is fixed; a new pod is checked anew).
    async fn refuse_insecure(
        &self,
        ctx: &SyncContext<Pod>,
        virt: &Pod,
        level: PodSecurityLevel,
        broken: &[String],
    ) -> Result<Action> {
        report_violation(ctx, virt, "not running on the host", level, broken).await;
        Ok(Action::await_change())
    }

    /// Gives the host pod the ephemeral containers `updated` has (`kubectl debug` on the virtual
    /// pod), through its `ephemeralcontainers` subresource, if the virtual pod with them still
    /// meets the Pod Security Standard. Otherwise the pod runs on unchanged, a Warning event says
    /// why, and so does the returned message (the refused containers' status).
    async fn add_ephemeral_containers(
        &self,
        ctx: &SyncContext<Pod>,
        virt: &Pod,
        updated: &Pod,
    ) -> Result<Option<String>> {
        let level = ctx.clients().config().sync.pods.pod_security_standard;
        let broken = violations(
            level,
            virt.spec.as_ref().unwrap_or(&Default::default()),
            virt.metadata.annotations.as_ref(),
        );
        if !broken.is_empty() {
            let what = "ephemeral containers not added on the host";
            return Ok(Some(report_violation(ctx, virt, what, level, &broken).await));
        }
        let name = updated.metadata.name.as_deref().unwrap_or_default();
        ctx.host_api_for(updated)
            .replace_subresource("ephemeralcontainers", name, &write_params(), updated)
            .await
            .map_err(api_error(
                Side::Host,
                "update ephemeral containers of",
                "Pod",
                &display_key(updated),
            ))?;
        tracing::info!(pod = %display_key(virt), host = %display_key(updated), "added ephemeral containers on the host");
        Ok(None)
    }

    /// The host pod of a virtual pod that ran on the host is gone (deleted or evicted outside
    /// vcsync). Running it again behind its controller's back would hide that; delete it, as
    /// a node's pod would be, and let its controller replace it.
    async fn host_pod_lost(&self, ctx: &SyncContext<Pod>, virt: &Pod) -> Result<Action> {
        let message = format!(
            "host pod {}/{} was deleted outside vcsync; deleting this pod so that its controller can replace it",
            self.host_pod_namespace(virt),
            self.host_pod_name(virt)
        );
        tracing::info!(pod = %display_key(virt), "{message}");
        ctx.events()
            .publish(
                &virt.object_ref(&()),
                EventType::Warning,
                "HostPodDeleted",
                &message,
            )
            .await;
        self.delete_tokens(ctx, virt).await?;
        self.delete_virtual_now(ctx, virt).await?;
        Ok(Action::await_change())
    }
}

/// Reports that `virt` breaks Pod Security `level` (`broken` names each rule) and what vcsync
/// does not do because of it (`what`): a warning in the log and a Warning event on the virtual
/// pod. Returns the message.
async fn report_violation(
    ctx: &SyncContext<Pod>,
    virt: &Pod,
    what: &str,
    level: PodSecurityLevel,
    broken: &[String],
) -> String {
    let message = format!("{what}: violates PodSecurity {level:?}: {}", broken.join("; "));
    tracing::warn!(pod = %display_key(virt), "{message}");
    ctx.events()
        .publish(
            &virt.object_ref(&()),
            EventType::Warning,
            "PodSecurityViolation",
            &message,
        )
        .await;
    message
}

/// Whether one of `targets`, references the virtual cache does not show, exists in the virtual
/// cluster after all (read from its API server, not the cache).
async fn any_exists(ctx: &SyncContext<Pod>, targets: &[RefTarget]) -> Result<bool> {
    let client = ctx.clients().virtual_client().clone();
    for target in targets {
        let ns = target.key.namespace.as_deref().unwrap_or_default();
        let name = target.key.name.as_str();
        let found = match target.kind {
            RefKind::ConfigMap => Api::<ConfigMap>::namespaced(client.clone(), ns)
                .get_metadata_opt(name)
                .await
                .map(|o| o.is_some()),
            RefKind::Secret => Api::<Secret>::namespaced(client.clone(), ns)
                .get_metadata_opt(name)
                .await
                .map(|o| o.is_some()),
            RefKind::PersistentVolumeClaim => Api::<PersistentVolumeClaim>::namespaced(client.clone(), ns)
                .get_metadata_opt(name)
                .await
                .map(|o| o.is_some()),
            RefKind::ServiceAccount => Ok(false),
        };
        let found = found.map_err(|err| {
            api_error(
                Side::Virtual,
                "get",
                &format!("{:?}", target.kind),
                &format!("{ns}/{name}"),
            )(err)
        })?;
        if found {
            return Ok(true);
        }
    }
    Ok(false)
}

/// Runs the hooks over a desired host pod, and lists the label and annotation keys they added
/// among the managed ones, so that a key a hook no longer adds is removed by the next update.
fn apply_hooks(oversight: &Oversight, pod: &mut Pod) {
    let hooks = oversight.hooks();
    if hooks.is_empty() {
        return;
    }
    hooks.apply(Side::Host, pod);
    let tenant_keys = |map: Option<&BTreeMap<String, String>>| {
        map.into_iter()
            .flatten()
            .map(|(k, _)| k)
            .filter(|k| !is_reserved_key(k))
            .cloned()
            .collect::<Vec<_>>()
            .join(",")
    };
    let labels = tenant_keys(pod.metadata.labels.as_ref());
    let annotations = tenant_keys(pod.metadata.annotations.as_ref());
    let map = pod.metadata.annotations.get_or_insert_default();
    for (key, keys) in [(MANAGED_ANNOTATIONS, annotations), (MANAGED_LABELS, labels)] {
        if keys.is_empty() {
            map.remove(key);
        } else {
            map.insert(key.to_string(), keys);
        }
    }
}

fn display_key(pod: &Pod) -> String {
    format!("{}/{}", pod.namespace().unwrap_or_default(), pod.name_any())
}

impl Base for PodSyncer {
    fn name(&self) -> &str {
        "pods"
    }
}

#[async_trait]
impl Syncer for PodSyncer {
    type Resource = Pod;

    fn translator(&self) -> &dyn NameTranslator {
        self.pods.translator()
    }

    /// A token Secret for the pod of `key`.
    fn keeps_beside(&self, key: &VirtualKey) -> bool {
        let host = self.pods.translator().host_key(key);
        self.tokens
            .orphan_candidate(&host.namespace.unwrap_or_default(), &host.name, key)
            .is_some()
    }

    /// Neither pod exists: a token Secret still there was written for a pod that went before
    /// it reached the host (or whose deletion no reconcile met), and goes now.
    async fn sync_gone(&self, ctx: &SyncContext<Pod>, key: &VirtualKey) -> Result<Action> {
        let host = self.pods.translator().host_key(key);
        self.tokens
            .delete_orphaned(ctx, &host.namespace.unwrap_or_default(), &host.name, key)
            .await?;
        Ok(Action::await_change())
    }

    async fn sync_down(&self, ctx: &SyncContext<Pod>, virt: Arc<Pod>) -> Result<Action> {
        if is_terminal(&virt) {
            // A finished pod is a record: nothing runs it again, nothing deletes it.
            return Ok(Action::await_change());
        }
        if was_running_on_host(&virt) {
            return self.host_pod_lost(ctx, &virt).await;
        }
        let level = ctx.clients().config().sync.pods.pod_security_standard;
        let broken = violations(
            level,
            virt.spec.as_ref().unwrap_or(&Default::default()),
            virt.metadata.annotations.as_ref(),
        );
        if !broken.is_empty() {
            return self.refuse_insecure(ctx, &virt, level, &broken).await;
        }
        report_dropped_tolerations(ctx, &virt).await;
        if self.created_recently(&virt) {
            // Created a moment ago: the host watch brings it (and the next reconcile).
            return Ok(Action::requeue(CREATE_LAG));
        }
        let without_missing_optional;
        let virt_for_host: &Pod = match self.references.decide(&virt) {
            Decision::Go => &virt,
            Decision::GoWithout { pod, left_out } => {
                if any_exists(ctx, &left_out).await? {
                    // The virtual cache is behind (a Secret created a moment before its pod):
                    // an object that exists is waited for, never left out.
                    return Ok(Action::requeue(REFERENCE_CACHE_LAG));
                }
                without_missing_optional = pod;
                &without_missing_optional
            }
            Decision::Wait(target, state) => return wait_for(ctx, &virt, &target, state).await,
        };
        let Ok(kubernetes) = self.kubernetes_link() else {
            tracing::debug!(pod = %display_key(&virt), "waiting for the cluster IP of kubernetesService.hostService");
            return Ok(Action::requeue(HOST_SERVICE_RETRY));
        };
        let (tokens, default_mount) = self
            .tokens
            .for_new_pod(ctx, &virt, &self.host_pod_name(&virt))
            .await?;
        let token = tokens.as_ref().map(|t| t.mount.clone());
        let env = self.environment(&virt, kubernetes, token, default_mount);
        let mut desired = self.pods.host_pod(virt_for_host, &env);
        apply_hooks(ctx.oversight(), &mut desired);
        // The token Secret and the pod are written together (see `TokenSecrets::for_new_pod`).
        let store_tokens = async {
            match tokens {
                Some(tokens) => self.tokens.store(ctx, tokens).await,
                None => Ok(()),
            }
        };
        let (stored, created) = tokio::join!(store_tokens, create_host_object(ctx, &virt, &desired));
        let action = created?;
        let collisions = ctx.caches().indices().collisions();
        if collisions.contains("Pod", &virtual_key_of(virt.as_ref())) {
            self.report_collision(ctx, &virt).await?;
        }
        if action == Action::await_change() {
            self.written
                .entry(Self::uid(&virt).to_string())
                .or_default()
                .host_created = Some(std::time::Instant::now());
        }
        // A pod created without its Secret gets it from the next reconcile's token refresh.
        stored?;
        Ok(action)
    }

    async fn sync(&self, ctx: &SyncContext<Pod>, host: Arc<Pod>, virt: Arc<Pod>) -> Result<Action> {
        if let Some(target) = self.references.foreign_reference(&virt) {
            // Its copy was replaced by a foreign object: the running pod is reported; a new
            // host pod would wait at the gate.
            wait_for(ctx, &virt, &target, RefState::Foreign).await?;
        }
        if !Self::is_twin(&host, &virt) {
            // The host pod of an earlier virtual pod of this name: let it go first.
            if host.metadata.deletion_timestamp.is_none() {
                delete_object(ctx, &host).await?;
            }
            return Ok(Action::await_change());
        }
        let mut action = Action::await_change();
        // Why the virtual pod's new ephemeral containers stay off the host, if they do.
        let mut refused = None;
        if host.metadata.deletion_timestamp.is_none() {
            if let Some(update) = host_update(&host, &self.mutable_fields(ctx, &virt)) {
                match update_host_object(ctx, &virt, &update).await {
                    Ok(_) => {}
                    // Refused (an immutable field, say): the Warning event is recorded; status
                    // and binding still flow, and the next change of either pod tries again.
                    Err(err) if !err.is_conflict() && err.status().is_some_and(|c| c < 500) => {
                        tracing::warn!(pod = %display_key(&virt), error = %err, "host refused the update");
                    }
                    Err(err) => return Err(err),
                }
            }
            let ephemeral = self.pods.host_ephemeral_containers(&virt);
            if let Some(updated) = ephemeral::with_added(&host, &ephemeral) {
                refused = self.add_ephemeral_containers(ctx, &virt, &updated).await?;
            }
            if let Some(delay) = self.tokens.refresh(ctx, &host, &virt).await? {
                action = Action::requeue(delay);
            }
        }
        if self.virtual_cache_behind(&virt) {
            // Our last write to the virtual pod is not in the cache yet: its event comes.
            return Ok(action);
        }
        // Binding first: it changes the virtual pod (and its PodScheduled condition), whose
        // update brings the next reconcile, which writes the status once against it.
        let wrote = self.bind(ctx, &host, &virt).await?
            || self.status_up(ctx, &host, &virt, refused.as_deref()).await?;
        if wrote {
            self.written
                .entry(Self::uid(&virt).to_string())
                .or_default()
                .virtual_based_on = virt.metadata.resource_version.clone();
        }
        Ok(action)
    }

    /// The virtual pod is being deleted: delete the host pod with the same grace period, and
    /// once it is gone finish the virtual deletion as a kubelet does (grace period 0).
    async fn sync_terminating(
        &self,
        ctx: &SyncContext<Pod>,
        virt: Arc<Pod>,
        host: Option<Arc<Pod>>,
    ) -> Result<Action> {
        match host.filter(|h| Self::is_twin(h, &virt)) {
            Some(host) => {
                self.status_up(ctx, &host, &virt, None).await?;
                let grace = virt
                    .metadata
                    .deletion_grace_period_seconds
                    .map(|g| g.clamp(0, i64::from(u32::MAX)) as u32);
                let host_grace = host.metadata.deletion_grace_period_seconds;
                let shorter = matches!((grace, host_grace), (Some(g), Some(h)) if i64::from(g) < h);
                if host.metadata.deletion_timestamp.is_none() || shorter {
                    delete_object_with_grace(ctx, &host, grace).await?;
                    // A host pod deleted at once (grace 0, or never scheduled, so no kubelet
                    // confirms) is gone now; and an unscheduled virtual pod goes at once too,
                    // with no reconcile left that sees the one without the other: its tokens
                    // go now, not at the next sweep.
                    let unscheduled = |pod: &Pod| pod.spec.as_ref().is_none_or(|s| s.node_name.is_none());
                    if grace == Some(0) || unscheduled(&host) || unscheduled(&virt) {
                        self.delete_tokens(ctx, &virt).await?;
                    }
                }
                Ok(Action::await_change())
            }
            None => {
                self.written.remove(Self::uid(&virt));
                self.delete_tokens(ctx, &virt).await?;
                if virt.metadata.deletion_grace_period_seconds != Some(0) {
                    self.delete_virtual_now(ctx, &virt).await?;
                    tracing::info!(pod = %display_key(&virt), "finished deleting the virtual pod");
                }
                Ok(Action::await_change())
            }
        }
    }

    fn up_syncer(&self) -> Option<&dyn UpSyncer<Pod>> {
        Some(self)
    }

    fn controller_modifier(&self) -> Option<&dyn ControllerModifier> {
        Some(self)
    }
}

#[async_trait]
impl UpSyncer<Pod> for PodSyncer {
    /// The virtual pod is gone (deleted at once: unscheduled, or by a force delete): the host
    /// pod goes with its own grace period, and its tokens with it. Only once the virtual API
    /// server confirms the virtual pod is gone: the cache saying so may be behind.
    async fn sync_up(&self, ctx: &SyncContext<Pod>, host: Arc<Pod>) -> Result<Action> {
        // Already terminating: deleting again would only write.
        if host.metadata.deletion_timestamp.is_none() {
            let Some(key) = self.translator().virtual_key(host.meta()) else {
                return Ok(Action::await_change());
            };
            let virtual_pods = Api::<Pod>::namespaced(
                ctx.virtual_client().clone(),
                key.namespace.as_deref().unwrap_or_default(),
            );
            let live = virtual_pods.get_metadata_opt(&key.name).await.map_err(api_error(
                Side::Virtual,
                "get",
                "Pod",
                &key.to_string(),
            ))?;
            if live.is_some() {
                // The cache is behind (a recreate, say): never delete on stale knowledge.
                return Ok(Action::requeue(crate::controller::CACHE_LAG_RETRY));
            }
            delete_object(ctx, &host).await?;
        }
        if let Some(uid) = host.annotations().get(OBJECT_UID_ANNOTATION) {
            self.written.remove(uid);
        }
        let pod_uid = host.annotations().get(OBJECT_UID_ANNOTATION).map(String::as_str);
        self.tokens
            .delete(
                ctx,
                &host.namespace().unwrap_or_default(),
                &host.name_any(),
                pod_uid,
            )
            .await?;
        Ok(Action::await_change())
    }
}

impl ControllerModifier for PodSyncer {
    /// A token Secret changing (deleted by someone, say) reconciles its pod.
    fn modify_controller(
        &self,
        _ctx: &RegisterContext,
        builder: ControllerBuilder,
    ) -> Result<ControllerBuilder> {
        let events = self.secret_events.lock().expect("secret events lock").take();
        let builder = match events {
            Some(events) => builder.watches(self.tokens.changes(events)),
            None => builder,
        };
        // A pod waiting at the reference gate goes on once the copy it waits for is there.
        Ok(self
            .references
            .ready_pods()
            .into_iter()
            .fold(builder, ControllerBuilder::watches))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;
    use crate::{
        Error,
        cache::{Storage, filled},
        config::Config,
        controller::KeyHandler,
        handlers::PairHandler,
        metrics::{CACHE_DECODE_ERRORS, KindLabels},
        syncers::pods::translate::PodEnvironment,
    };

    /// A cached virtual pod that does not decode once read as absent, and the reconcile went
    /// on to `sync_up`, which deleted its host pod. Now the reconcile fails (to be retried
    /// with backoff), sends nothing to either API server and the failure is counted.
    #[tokio::test]
    async fn a_virtual_pod_that_does_not_decode_fails_the_reconcile_and_deletes_nothing() {
        // Both API servers: a listener that counts the connections made to it.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let connections = Arc::new(AtomicUsize::new(0));
        tokio::spawn({
            let connections = connections.clone();
            async move {
                while let Ok(_stream) = listener.accept().await {
                    connections.fetch_add(1, Ordering::SeqCst);
                }
            }
        });
        let client = kube::Client::try_from(kube::Config::new(url.parse().unwrap())).unwrap();
        let register = RegisterContext::new(client.clone(), client, Config::new("demo", "vc-demo")).unwrap();
        let syncer = PodSyncer::new(&register);

        let virt: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "web", "namespace": "team", "uid": "0f2d4c1e-1111-4a2b-9c3d-5e6f7a8b9c0d"},
            "spec": {"containers": [{"name": "app", "image": "nginx"}]}
        }))
        .unwrap();
        let host = syncer.pods.host_pod(&virt, &PodEnvironment::default());
        let virtual_store = filled(Storage::Encoded, [virt]);
        virtual_store.corrupt(&ObjectRef::new("web").within("team"));
        let host_store = filled(Storage::Encoded, [host]);
        let handler = PairHandler {
            syncer,
            ctx: SyncContext::new(&register, virtual_store, host_store, "pods"),
        };
        let decode_errors = || {
            CACHE_DECODE_ERRORS
                .get_or_create(&KindLabels { kind: "Pod".into() })
                .get()
        };
        let before = decode_errors();

        let key = VirtualKey::namespaced("team", "web");
        assert!(handler.exists(&key), "the key stays live");
        // A request would hang on the listener, which never answers.
        let reconcile = tokio::time::timeout(std::time::Duration::from_secs(5), handler.handle(&key));
        let err = reconcile.await.expect("no request made").unwrap_err();
        assert!(matches!(err, Error::CacheDecode { .. }), "{err}");
        assert!(!err.is_conflict(), "retried with backoff");
        assert_eq!(decode_errors() - before, 1);
        tokio::task::yield_now().await;
        assert_eq!(
            connections.load(Ordering::SeqCst),
            0,
            "no request went out, so nothing was deleted"
        );
    }

    /// An API server that answers every request with `status` and `body`, and the request
    /// lines it got (plain threads: the crate's tokio has no io-util).
    fn answering(status: &'static str, body: &'static str) -> (kube::Client, Arc<Mutex<Vec<String>>>) {
        use std::io::{BufRead, BufReader, Read, Write};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let requests = Arc::new(Mutex::new(Vec::new()));
        let seen = requests.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let (seen, mut stream) = (seen.clone(), BufReader::new(stream.unwrap()));
                std::thread::spawn(move || {
                    loop {
                        let (mut line, mut length) = (String::new(), 0);
                        if stream.read_line(&mut line).unwrap_or(0) == 0 {
                            return;
                        }
                        seen.lock().unwrap().push(line.trim_end().to_string());
                        loop {
                            let mut header = String::new();
                            stream.read_line(&mut header).unwrap();
                            if let Some(n) = header.to_ascii_lowercase().strip_prefix("content-length:") {
                                length = n.trim().parse().unwrap();
                            }
                            if header == "\r\n" {
                                break;
                            }
                        }
                        stream.read_exact(&mut vec![0; length]).unwrap();
                        let response = format!(
                            "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
                            body.len()
                        );
                        stream.get_mut().write_all(response.as_bytes()).unwrap();
                    }
                });
            }
        });
        let client = kube::Client::try_from(kube::Config::new(url.parse().unwrap())).unwrap();
        (client, requests)
    }

    /// `sync_up` of a host pod whose virtual pod the cache does not show, the virtual API
    /// server answering the live GET with `status`; the request lines both servers got.
    async fn sync_up_with_live(status: &'static str, body: &'static str) -> (Action, Vec<String>) {
        let (client, requests) = answering(status, body);
        let register = RegisterContext::new(client.clone(), client, Config::new("demo", "vc-demo")).unwrap();
        let syncer = PodSyncer::new(&register);
        let virt: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "web", "namespace": "team", "uid": "0f2d4c1e-1111-4a2b-9c3d-5e6f7a8b9c0d"},
            "spec": {"containers": [{"name": "app", "image": "nginx"}]}
        }))
        .unwrap();
        let host = syncer.pods.host_pod(&virt, &PodEnvironment::default());
        let ctx = SyncContext::new(
            &register,
            filled(Storage::Encoded, []),
            filled(Storage::Encoded, [host.clone()]),
            "pods",
        );
        let action = tokio::time::timeout(
            std::time::Duration::from_secs(10),
            syncer.sync_up(&ctx, Arc::new(host)),
        )
        .await
        .expect("answered")
        .unwrap_or_else(|err| panic!("{err}"));
        let requests = requests.lock().unwrap().clone();
        (action, requests)
    }

    /// The virtual cache says the pod is gone, the virtual API server says it is there (the
    /// cache is behind): the host pod stays, and the reconcile comes back soon.
    #[tokio::test]
    async fn sync_up_keeps_the_host_pod_while_the_virtual_pod_is_live() {
        let live = r#"{"apiVersion": "meta.k8s.io/v1", "kind": "PartialObjectMetadata", "metadata": {"name": "web", "namespace": "team"}}"#;
        let (action, requests) = sync_up_with_live("200 OK", live).await;
        assert_eq!(requests, ["GET /api/v1/namespaces/team/pods/web HTTP/1.1"]);
        assert_eq!(action, Action::requeue(crate::controller::CACHE_LAG_RETRY));
    }

    /// The live GET confirms the absence: then the host pod is deleted.
    #[tokio::test]
    async fn sync_up_deletes_the_host_pod_once_the_virtual_pod_is_confirmed_gone() {
        let gone = r#"{"apiVersion": "v1", "kind": "Status", "status": "Failure", "reason": "NotFound", "code": 404}"#;
        let (_, requests) = sync_up_with_live("404 Not Found", gone).await;
        assert_eq!(requests[0], "GET /api/v1/namespaces/team/pods/web HTTP/1.1");
        assert!(
            requests[1].starts_with("DELETE /api/v1/namespaces/vc-demo/pods/web-x-team"),
            "{requests:?}"
        );
    }
}
