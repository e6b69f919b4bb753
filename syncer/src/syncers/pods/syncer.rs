//! The [`PodSyncer`]: the I/O around the pure translation, status and update rules.

use std::{sync::Arc, sync::Mutex, time::Duration};

use async_trait::async_trait;
use futures::StreamExt;
use k8s_openapi::{
    api::{
        authentication::v1::{BoundObjectReference, TokenRequest, TokenRequestSpec},
        core::v1::{Binding, ConfigMap, ObjectReference, Pod, Secret, Service, ServiceAccount},
    },
    apimachinery::pkg::apis::meta::v1::ObjectMeta,
};
use kube::{
    Api, Resource, ResourceExt,
    api::{DeleteParams, PostParams, Preconditions},
    runtime::{controller::Action, reflector::ObjectRef, reflector::Store},
};
use tokio::sync::mpsc;
use vcsync_translators::{NameTranslator, NamespacedTranslator, OBJECT_UID_ANNOTATION, VirtualKey};

use super::{
    environment::ServiceLink,
    status::{is_terminal, virtual_status, was_running_on_host},
    token::{
        Audiences, IssuedTokens, TOKEN_POD_ANNOTATION, TOKEN_POD_NAME_ANNOTATION,
        TOKEN_POD_NAMESPACE_ANNOTATION, TokenMount, TokenOwner, TokenSecretState, mounts_secret,
        refresh_time, token_audiences, token_secret, token_secret_name, wants_default_mount,
    },
    translate::{PodEnvironment, PodTranslator, service_account_of},
    update::host_update,
};
use crate::{
    ControllerBuilder, ControllerModifier, RegisterContext, Result, SyncContext, Syncer, UpSyncer,
    config::PodsConfig,
    controller::virtual_key_of,
    error::{Error, Side, api_error, status_code},
    events::EventType,
    informer::InformerEvent,
    sdk::Base,
    writes::{
        FIELD_MANAGER, create_host_object, delete_object, delete_object_with_grace, update_host_object,
    },
};

/// Default DNS service of the virtual cluster.
const DEFAULT_DNS_SERVICE: (&str, &str) = ("kube-system", "kube-dns");
/// How often orphaned token Secrets are looked for, and how old one must be to count.
const SWEEP_INTERVAL: Duration = Duration::from_secs(60);
/// Never renew tokens more often than this, whatever the clock says.
const MIN_REFRESH_DELAY: Duration = Duration::from_secs(1);

/// Syncs virtual pods to the host and their status, node and deletion back.
pub struct PodSyncer {
    pods: PodTranslator,
    config: PodsConfig,
    services: Store<Service>,
    service_accounts: Store<ServiceAccount>,
    config_maps: Store<ConfigMap>,
    host_secrets: Store<Secret>,
    secret_events: Mutex<Option<mpsc::UnboundedReceiver<InformerEvent<Secret>>>>,
}

impl PodSyncer {
    /// A pod syncer for the manager of `ctx`.
    pub fn new(ctx: &RegisterContext) -> Self {
        let sync = &ctx.config().sync;
        let translator = NamespacedTranslator::new(ctx.ownership().clone(), ctx.host_namespace());
        let pods = PodTranslator::new(translator, sync.pods.clone())
            .with_priority_classes(sync.priority_classes.enabled)
            .with_service_accounts(sync.service_accounts.enabled);
        let secrets = ctx.host_informer::<Secret>();
        Self {
            pods,
            config: sync.pods.clone(),
            services: ctx.virtual_informer::<Service>().store(),
            service_accounts: ctx.virtual_informer::<ServiceAccount>().store(),
            config_maps: ctx.virtual_informer::<ConfigMap>().store(),
            host_secrets: secrets.store(),
            secret_events: Mutex::new(Some(secrets.subscribe())),
        }
    }

    /// What the host pod of `virt` depends on, from the caches.
    fn environment(
        &self,
        virt: &Pod,
        token: Option<TokenMount>,
        default_token_mount: bool,
    ) -> PodEnvironment {
        let ns = virt.namespace().unwrap_or_default();
        let service = |ns: &str, name: &str| self.services.get(&ObjectRef::new(name).within(ns));
        let kubernetes = match &self.config.kubernetes_service {
            Some(address) => Some(ServiceLink::kubernetes(&address.host, address.port.into())),
            None => service("default", "kubernetes").and_then(|s| ServiceLink::from_service(&s)),
        };
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
        let (dns_ns, dns_name) = match self.config.dns_service.as_deref().and_then(|s| s.split_once('/')) {
            Some((ns, name)) => (ns, name),
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

    fn host_pod_name(&self, virt: &Pod) -> String {
        self.pods.translator().host_key(&virtual_key_of(virt)).name
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

    /// Tokens for a pod about to be created: which it needs, issued and stored. A pod that only
    /// needs the default token vcsync mounts itself still starts, without a token, when the
    /// virtual API server cannot issue one (no such service account, no TokenRequest API).
    async fn tokens_for_new_pod(
        &self,
        ctx: &SyncContext<Pod>,
        virt: &Pod,
    ) -> Result<(Option<TokenMount>, bool)> {
        let Some(spec) = virt.spec.as_ref() else {
            return Ok((None, false));
        };
        let mut default_mount = wants_default_mount(virt);
        if default_mount && self.service_account_opts_out(virt) {
            default_mount = false;
        }
        let audiences = token_audiences(spec, default_mount);
        if audiences.is_empty() {
            return Ok((None, false));
        }
        let optional = token_audiences(spec, false).is_empty();
        match self.ensure_tokens(ctx, virt, &audiences, default_mount).await {
            Ok((mount, _)) => Ok((Some(mount), default_mount)),
            Err(err) => {
                let tolerated = optional && matches!(client_status(&err), Some(403..=405));
                let message = if tolerated {
                    format!("{err}; the pod runs without a service account token")
                } else {
                    err.to_string()
                };
                ctx.events()
                    .publish(
                        &virt.object_ref(&()),
                        EventType::Warning,
                        "ServiceAccountTokenFailed",
                        &message,
                    )
                    .await;
                if tolerated { Ok((None, false)) } else { Err(err) }
            }
        }
    }

    /// Whether the pod's service account says `automountServiceAccountToken: false` (a real API
    /// server's admission would then have mounted nothing).
    fn service_account_opts_out(&self, virt: &Pod) -> bool {
        let ns = virt.namespace().unwrap_or_default();
        self.service_accounts
            .get(&ObjectRef::new(service_account_of(virt)).within(&ns))
            .is_some_and(|a| a.automount_service_account_token == Some(false))
    }

    /// The token Secret of `virt` holding tokens for `audiences`, renewed (and written) only if
    /// missing, stale, or bound to another pod. Returns it and when to renew it.
    async fn ensure_tokens(
        &self,
        ctx: &SyncContext<Pod>,
        virt: &Pod,
        audiences: &Audiences,
        with_ca: bool,
    ) -> Result<(TokenMount, jiff::Timestamp)> {
        let host_pod = self.host_pod_name(virt);
        let name = token_secret_name(&host_pod);
        let secrets: Api<Secret> = Api::namespaced(ctx.host_client().clone(), ctx.host_namespace());
        let key = format!("{}/{name}", ctx.host_namespace());
        let existing = match self
            .host_secrets
            .get(&ObjectRef::new(&name).within(ctx.host_namespace()))
        {
            Some(secret) => Some((*secret).clone()),
            // Just written and not yet seen by the watch: read it rather than issue again.
            None => secrets
                .get_opt(&name)
                .await
                .map_err(api_error(Side::Host, "get", "Secret", &key))?,
        };
        let ownership = ctx.register_context().ownership();
        if let Some(secret) = &existing {
            if !ownership.owns(&secret.metadata) {
                return Err(Error::ForeignHostObject {
                    host: key,
                    instance: ownership.instance().to_string(),
                });
            }
            let state = TokenSecretState::of(secret);
            let uid = virt.metadata.uid.as_deref().unwrap_or_default();
            if state.is_fresh_for(uid, audiences, jiff::Timestamp::now())
                && let Some(refresh_at) = state.refresh_at
            {
                let mount = TokenMount {
                    secret_name: name,
                    ca_cert: state.ca_cert,
                };
                return Ok((mount, refresh_at));
            }
        }

        let issued = self.issue_tokens(ctx, virt, audiences, with_ca).await?;
        let ns = virt.namespace().unwrap_or_default();
        let owner = TokenOwner {
            ownership,
            host_namespace: ctx.host_namespace(),
            host_pod: &host_pod,
            namespace: &ns,
            name: &virt.name_any(),
            uid: virt.metadata.uid.as_deref().unwrap_or_default(),
        };
        let mut desired = token_secret(owner, &issued);
        let params = PostParams {
            field_manager: Some(FIELD_MANAGER.to_string()),
            ..PostParams::default()
        };
        match existing {
            Some(secret) => {
                desired.metadata.resource_version = secret.metadata.resource_version.clone();
                secrets
                    .replace(&name, &params, &desired)
                    .await
                    .map_err(api_error(Side::Host, "update", "Secret", &key))?;
                tracing::info!(secret = %key, "renewed service account tokens");
            }
            None => {
                secrets.create(&params, &desired).await.map_err(api_error(
                    Side::Host,
                    "create",
                    "Secret",
                    &key,
                ))?;
                tracing::info!(secret = %key, "stored service account tokens");
            }
        }
        let mount = TokenMount {
            secret_name: name,
            ca_cert: issued.ca_cert.is_some(),
        };
        Ok((mount, issued.refresh_at))
    }

    /// Requests a token per audience from the virtual API server, bound to the virtual pod.
    async fn issue_tokens(
        &self,
        ctx: &SyncContext<Pod>,
        virt: &Pod,
        audiences: &Audiences,
        with_ca: bool,
    ) -> Result<IssuedTokens> {
        let ns = virt.namespace().unwrap_or_default();
        let account = service_account_of(virt);
        let accounts = Api::<ServiceAccount>::namespaced(ctx.virtual_client().clone(), &ns);
        let key = format!("{ns}/{account}");
        let now = jiff::Timestamp::now();
        let mut issued = IssuedTokens {
            audiences: audiences.clone(),
            refresh_at: now + jiff::SignedDuration::from_hours(24),
            ..IssuedTokens::default()
        };
        for (audience, seconds) in audiences {
            let request = TokenRequest {
                metadata: ObjectMeta::default(),
                spec: Some(TokenRequestSpec {
                    audiences: Some(if audience.is_empty() {
                        Vec::new()
                    } else {
                        vec![audience.clone()]
                    }),
                    expiration_seconds: Some(*seconds),
                    bound_object_ref: Some(BoundObjectReference {
                        api_version: Some("v1".into()),
                        kind: Some("Pod".into()),
                        name: virt.metadata.name.clone(),
                        uid: virt.metadata.uid.clone(),
                    }),
                    ..TokenRequestSpec::default()
                }),
                status: None,
            };
            let response: TokenRequest = accounts
                .create_subresource("token", account, &PostParams::default(), &request)
                .await
                .map_err(api_error(
                    Side::Virtual,
                    "request token for",
                    "ServiceAccount",
                    &key,
                ))?;
            let status = response.status.unwrap_or_default();
            let expires = status
                .expiration_timestamp
                .map(|t| t.0)
                .unwrap_or_else(|| now + jiff::SignedDuration::from_secs(*seconds));
            issued.refresh_at = issued.refresh_at.min(refresh_time(now, expires));
            issued
                .tokens
                .insert(audience.clone(), status.token.unwrap_or_default());
        }
        if with_ca {
            // The CA bundle the root-CA publisher keeps in every namespace; optional.
            issued.ca_cert = self
                .config_maps
                .get(&ObjectRef::new("kube-root-ca.crt").within(&ns))
                .and_then(|cm| cm.data.as_ref()?.get("ca.crt").cloned());
        }
        Ok(issued)
    }

    /// Renews the tokens of a running pod when due; returns when to look again.
    async fn refresh_tokens(
        &self,
        ctx: &SyncContext<Pod>,
        host: &Pod,
        virt: &Pod,
    ) -> Result<Option<Duration>> {
        let name = token_secret_name(&host.name_any());
        if !mounts_secret(host, &name) {
            return Ok(None);
        }
        let cached = self
            .host_secrets
            .get(&ObjectRef::new(&name).within(ctx.host_namespace()));
        let state = cached.as_deref().map(TokenSecretState::of);
        let audiences = match &state {
            Some(state) if !state.audiences.is_empty() => state.audiences.clone(),
            _ => token_audiences(
                virt.spec.as_ref().unwrap_or(&Default::default()),
                wants_default_mount(virt),
            ),
        };
        let with_ca = state.as_ref().is_none_or(|s| s.ca_cert);
        let (_, refresh_at) = self.ensure_tokens(ctx, virt, &audiences, with_ca).await?;
        let delay = refresh_at.duration_since(jiff::Timestamp::now());
        Ok(Some(
            Duration::try_from(delay)
                .unwrap_or_default()
                .max(MIN_REFRESH_DELAY),
        ))
    }

    /// Deletes the token Secret of host pod `host_pod`, if there is one of ours.
    async fn delete_tokens(&self, ctx: &SyncContext<Pod>, host_pod: &str) -> Result<()> {
        let name = token_secret_name(host_pod);
        let Some(secret) = self
            .host_secrets
            .get(&ObjectRef::new(&name).within(ctx.host_namespace()))
        else {
            return Ok(());
        };
        delete_token_secret(ctx.register_context(), &secret).await
    }

    /// Status up, when it differs (pods/status of the virtual pod).
    async fn status_up(&self, ctx: &SyncContext<Pod>, host: &Pod, virt: &Pod) -> Result<()> {
        let Some(status) = virtual_status(host, virt) else {
            return Ok(());
        };
        let mut updated = virt.clone();
        updated.status = Some(status);
        let params = PostParams {
            field_manager: Some(FIELD_MANAGER.to_string()),
            ..PostParams::default()
        };
        match ctx
            .virtual_api_for(virt)
            .replace_status(&virt.name_any(), &params, &updated)
            .await
        {
            Ok(_) => Ok(()),
            Err(err) if status_code(&err) == Some(404) => Ok(()),
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

    /// The host pod of a virtual pod that ran on the host is gone (deleted or evicted outside
    /// vcsync). Running it again behind its controller's back would hide that; delete it, as
    /// a node's pod would be, and let its controller replace it.
    async fn host_pod_lost(&self, ctx: &SyncContext<Pod>, virt: &Pod) -> Result<Action> {
        let message = format!(
            "host pod {}/{} was deleted outside vcsync; deleting this pod so that its controller can replace it",
            ctx.host_namespace(),
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
        self.delete_tokens(ctx, &self.host_pod_name(virt)).await?;
        self.delete_virtual_now(ctx, virt).await?;
        Ok(Action::await_change())
    }

    /// Reconciles triggered by token Secret changes (one deleted by someone, say).
    fn token_secret_keys(
        events: mpsc::UnboundedReceiver<InformerEvent<Secret>>,
    ) -> impl futures::Stream<Item = VirtualKey> + Send + 'static {
        tokio_stream::wrappers::UnboundedReceiverStream::new(events).filter_map(|event| {
            let key = match event {
                InformerEvent::Applied(secret) | InformerEvent::Deleted(secret) => token_pod_key(&secret),
                InformerEvent::Relisted => None,
            };
            futures::future::ready(key)
        })
    }
}

/// The virtual pod a token Secret belongs to.
fn token_pod_key(secret: &Secret) -> Option<VirtualKey> {
    let annotations = secret.metadata.annotations.as_ref()?;
    Some(VirtualKey::namespaced(
        annotations.get(TOKEN_POD_NAMESPACE_ANNOTATION)?.clone(),
        annotations.get(TOKEN_POD_NAME_ANNOTATION)?.clone(),
    ))
}

/// Deletes one of this instance's token Secrets (UID precondition).
async fn delete_token_secret(ctx: &RegisterContext, secret: &Secret) -> Result<()> {
    if !ctx.ownership().owns(&secret.metadata) {
        return Ok(());
    }
    let key = format!("{}/{}", ctx.host_namespace(), secret.name_any());
    let params = DeleteParams {
        preconditions: secret.metadata.uid.clone().map(|uid| Preconditions {
            uid: Some(uid),
            resource_version: None,
        }),
        ..DeleteParams::background()
    };
    match Api::<Secret>::namespaced(ctx.host_client().clone(), ctx.host_namespace())
        .delete(&secret.name_any(), &params)
        .await
    {
        Ok(_) => {
            tracing::info!(secret = %key, "deleted service account tokens");
            Ok(())
        }
        Err(err) if matches!(status_code(&err), Some(404 | 409)) => Ok(()),
        Err(err) => Err(api_error(Side::Host, "delete", "Secret", &key)(err)),
    }
}

/// Removes token Secrets whose host pod and virtual pod are both gone (a crash between writing
/// the Secret and the pod, a deletion missed while stopped). Runs on the leader, from caches.
pub(crate) async fn sweep_token_secrets(ctx: RegisterContext) {
    let secrets = ctx.host_informer::<Secret>().store();
    let host_pods = ctx.host_informer::<Pod>().store();
    let virtual_pods = ctx.virtual_informer::<Pod>().store();
    let mut interval = tokio::time::interval(SWEEP_INTERVAL);
    loop {
        interval.tick().await;
        let cutoff =
            jiff::Timestamp::now() - jiff::SignedDuration::try_from(SWEEP_INTERVAL).unwrap_or_default();
        for secret in secrets.state() {
            let Some(host_pod) = secret
                .metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(TOKEN_POD_ANNOTATION))
            else {
                continue;
            };
            let young = secret
                .metadata
                .creation_timestamp
                .as_ref()
                .is_none_or(|t| t.0 > cutoff);
            let pod_exists = host_pods
                .get(&ObjectRef::new(host_pod).within(ctx.host_namespace()))
                .is_some()
                || token_pod_key(&secret).is_some_and(|key| {
                    virtual_pods
                        .get(&ObjectRef::new(&key.name).within(key.namespace.as_deref().unwrap_or_default()))
                        .is_some()
                });
            if !young
                && !pod_exists
                && let Err(err) = delete_token_secret(&ctx, &secret).await
            {
                tracing::warn!(error = %err, "could not remove an orphaned token secret");
            }
        }
    }
}

fn display_key(pod: &Pod) -> String {
    format!("{}/{}", pod.namespace().unwrap_or_default(), pod.name_any())
}

/// The HTTP status of a failed API call, for errors of this crate.
fn client_status(err: &Error) -> Option<u16> {
    match err {
        Error::Api { source, .. } => status_code(source),
        _ => None,
    }
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

    async fn sync_down(&self, ctx: &SyncContext<Pod>, virt: Arc<Pod>) -> Result<Action> {
        if is_terminal(&virt) {
            // A finished pod is a record: nothing runs it again, nothing deletes it.
            return Ok(Action::await_change());
        }
        if was_running_on_host(&virt) {
            return self.host_pod_lost(ctx, &virt).await;
        }
        let (token, default_mount) = self.tokens_for_new_pod(ctx, &virt).await?;
        let env = self.environment(&virt, token, default_mount);
        let desired = self.pods.host_pod(&virt, &env);
        create_host_object(ctx, &virt, &desired).await
    }

    async fn sync(&self, ctx: &SyncContext<Pod>, host: Arc<Pod>, virt: Arc<Pod>) -> Result<Action> {
        if !Self::is_twin(&host, &virt) {
            // The host pod of an earlier virtual pod of this name: let it go first.
            if host.metadata.deletion_timestamp.is_none() {
                delete_object(ctx, &host).await?;
            }
            return Ok(Action::await_change());
        }
        let mut action = Action::await_change();
        if host.metadata.deletion_timestamp.is_none() {
            if let Some(update) = host_update(&host, &self.pods.mutable_fields(&virt)) {
                match update_host_object(ctx, &virt, &update).await {
                    Ok(_) => {}
                    // Refused (an immutable field, say): the Warning event is recorded; status
                    // and binding still flow, and the next change of either pod tries again.
                    Err(err) if !err.is_conflict() && client_status(&err).is_some_and(|c| c < 500) => {
                        tracing::warn!(pod = %display_key(&virt), error = %err, "host refused the update");
                    }
                    Err(err) => return Err(err),
                }
            }
            if let Some(delay) = self.refresh_tokens(ctx, &host, &virt).await? {
                action = Action::requeue(delay);
            }
        }
        // Binding first: it changes the virtual pod (and its PodScheduled condition), whose
        // update brings the next reconcile, which writes the status once against it.
        if !self.bind(ctx, &host, &virt).await? {
            self.status_up(ctx, &host, &virt).await?;
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
                self.status_up(ctx, &host, &virt).await?;
                let grace = virt
                    .metadata
                    .deletion_grace_period_seconds
                    .map(|g| g.clamp(0, i64::from(u32::MAX)) as u32);
                let host_grace = host.metadata.deletion_grace_period_seconds;
                let shorter = matches!((grace, host_grace), (Some(g), Some(h)) if i64::from(g) < h);
                if host.metadata.deletion_timestamp.is_none() || shorter {
                    delete_object_with_grace(ctx, &host, grace).await?;
                }
                Ok(Action::await_change())
            }
            None => {
                self.delete_tokens(ctx, &self.host_pod_name(&virt)).await?;
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
    /// pod goes with its own grace period, and its tokens with it.
    async fn sync_up(&self, ctx: &SyncContext<Pod>, host: Arc<Pod>) -> Result<Action> {
        // Already terminating: deleting again would only write.
        if host.metadata.deletion_timestamp.is_none() {
            delete_object(ctx, &host).await?;
        }
        self.delete_tokens(ctx, &host.name_any()).await?;
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
        Ok(match events {
            Some(events) => builder.watches(Self::token_secret_keys(events)),
            None => builder,
        })
    }
}
