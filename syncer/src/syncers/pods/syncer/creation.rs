//! A virtual pod without a host pod gets one: unless it is finished or ran on the host
//! already, it must meet the Pod Security Standard, pass the reference gate and know where the
//! virtual API server is; then its tokens and the host pod are written together.

use std::{collections::BTreeMap, sync::Arc};

use k8s_openapi::api::core::v1::{ConfigMap, PersistentVolumeClaim, Pod, Secret};
use kube::{Api, Resource, ResourceExt, runtime::reflector::ObjectRef};
use vcsync_translators::{RefKind, RefTarget, is_reserved_key};

use super::{CREATE_LAG, PodSyncer, display_key, host_service::HOST_SERVICE_RETRY};
use crate::{
    Action, Oversight, Result, SyncContext,
    config::ServiceTarget,
    error::{Side, api_error},
    events::EventType,
    resource::virtual_key_of,
    syncers::pods::{
        environment::ServiceLink,
        reference_gate::{Decision, wait_for},
        security::violations,
        status::{is_terminal, was_running_on_host},
        token::TokenMount,
        tolerations::report_dropped_tolerations,
        translate::{MANAGED_ANNOTATIONS, MANAGED_LABELS, PodEnvironment},
    },
    writes::create_host_object,
};

/// Default DNS service of the virtual cluster.
const DEFAULT_DNS_SERVICE: (&str, &str) = ("kube-system", "kube-dns");

/// How soon a pod whose optional reference the virtual cache does not show yet (but the API
/// server does) is looked at again.
const REFERENCE_CACHE_LAG: std::time::Duration = std::time::Duration::from_millis(100);

impl PodSyncer {
    /// The virtual pod exists, its host pod does not: checks, waits or creates it.
    pub(super) async fn create_host_pod(&self, ctx: &SyncContext<Pod>, virt: Arc<Pod>) -> Result<Action> {
        if is_terminal(&virt) {
            // A finished pod is a record: nothing runs it again, nothing deletes it.
            return Ok(Action::await_change());
        }
        if was_running_on_host(&virt) {
            return self.host_pod_lost(ctx, &virt).await;
        }
        // Breaking the Pod Security Standard: no host pod, and no retry (a pod's spec is fixed;
        // a new pod is checked anew).
        if refuse_insecure(ctx, &virt, "not running on the host")
            .await
            .is_some()
        {
            return Ok(Action::await_change());
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
}

/// Checks `virt` against the configured Pod Security Standard. When it breaks a rule, says so,
/// and what vcsync does not do because of it (`what`): a warning in the log and a Warning event
/// `PodSecurityViolation` on the virtual pod naming each broken rule; returns that message.
pub(super) async fn refuse_insecure(ctx: &SyncContext<Pod>, virt: &Pod, what: &str) -> Option<String> {
    let level = ctx.clients().config().sync.pods.pod_security_standard;
    let broken = violations(
        level,
        virt.spec.as_ref().unwrap_or(&Default::default()),
        virt.metadata.annotations.as_ref(),
    );
    if broken.is_empty() {
        return None;
    }
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
    Some(message)
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
pub(super) fn apply_hooks(oversight: &Oversight, pod: &mut Pod) {
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
