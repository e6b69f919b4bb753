//! Host Secrets holding the service-account tokens of host pods: issued by the virtual API
//! server, written, renewed and deleted (the rules are in [`super::token`]).

use std::{sync::Arc, time::Duration};

use futures::StreamExt;
use k8s_openapi::{
    api::{
        authentication::v1::{BoundObjectReference, TokenRequest, TokenRequestSpec},
        core::v1::{ConfigMap, Pod, Secret, ServiceAccount},
    },
    apimachinery::pkg::apis::meta::v1::ObjectMeta,
};
use kube::{
    Api, Resource, ResourceExt,
    api::{DeleteParams, PostParams, Preconditions},
    runtime::reflector::ObjectRef,
};
use tokio::sync::mpsc;
use vcsync_translators::VirtualKey;

use super::{
    token::{
        Audiences, IssuedTokens, TOKEN_POD_ANNOTATION, TOKEN_POD_NAME_ANNOTATION,
        TOKEN_POD_NAMESPACE_ANNOTATION, TokenMount, TokenOwner, TokenSecretState, blank_token_values,
        mounts_secret, refresh_time, token_audiences, token_secret, token_secret_name, wants_default_mount,
    },
    translate::service_account_of,
};
use crate::{
    Caches, Clients, RegisterContext, Result, SyncContext,
    cache::Cache,
    error::{Error, Side, api_error, status_code},
    events::EventType,
    informer::InformerEvent,
    writes::write_params,
};

/// How often orphaned token Secrets are looked for.
const SWEEP_INTERVAL: Duration = Duration::from_secs(60);
/// How old an orphaned token Secret must be to go (one being written with its pod is not an
/// orphan), and so when the second sweep after a start runs: a syncer restarted more often
/// than [`SWEEP_INTERVAL`] still sweeps what was orphaned while it was stopped.
const ORPHAN_MIN_AGE: Duration = Duration::from_secs(10);
/// Never renew tokens more often than this, whatever the clock says.
const MIN_REFRESH_DELAY: Duration = Duration::from_secs(1);

/// The token Secrets of one manager's host pods, and the caches they are decided from.
pub struct TokenSecrets {
    service_accounts: Cache<ServiceAccount>,
    config_maps: Cache<ConfigMap>,
    host_secrets: Cache<Secret>,
    /// Token Secrets this process created and the host cache may not show yet (by
    /// `namespace/name`): a cache miss for one of them is read, not issued again.
    created: dashmap::DashMap<String, std::time::Instant>,
}

/// Tokens decided for a pod: its mount, when to renew them, and the Secret still to write.
#[derive(Debug)]
pub struct PreparedTokens {
    /// How the pod mounts them.
    pub mount: TokenMount,
    refresh_at: jiff::Timestamp,
    write: Option<PendingWrite>,
}

/// A token Secret to create, or to put in place of `existing`.
#[derive(Debug)]
struct PendingWrite {
    desired: Secret,
    existing: Option<Arc<Secret>>,
    audiences: Audiences,
    pod_uid: String,
}

fn pod_uid(virt: &Pod) -> &str {
    virt.metadata.uid.as_deref().unwrap_or_default()
}

/// How long a created token Secret is trusted to exist while the host cache does not show it.
const CREATED_LAG: Duration = Duration::from_secs(5);

impl TokenSecrets {
    /// Token Secrets over the manager's shared informers.
    pub fn new(caches: &Caches) -> Self {
        let host_secrets = caches.host_informer::<Secret>();
        host_secrets.trim(blank_token_values);
        Self {
            service_accounts: caches.virtual_informer::<ServiceAccount>().store(),
            config_maps: caches.virtual_informer::<ConfigMap>().store(),
            host_secrets: host_secrets.store(),
            created: dashmap::DashMap::new(),
        }
    }

    /// Tokens for a pod about to be created: which it needs, issued, and the write that
    /// stores them ([`TokenSecrets::store`]), which the caller runs beside the pod's create:
    /// the host kubelet mounts the Secret only once the pod is scheduled, so the two need
    /// not wait for each other (one host round trip less on every pod's way down). A pod
    /// that only needs the default token vcsync mounts itself still starts, without a
    /// token, when the virtual API server cannot issue one (no such service account, no
    /// TokenRequest API).
    pub async fn for_new_pod(
        &self,
        ctx: &SyncContext<Pod>,
        virt: &Pod,
        host_pod: &str,
    ) -> Result<(Option<PreparedTokens>, bool)> {
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
        match self.prepare(ctx, virt, host_pod, &audiences, default_mount).await {
            Ok(prepared) => Ok((Some(prepared), default_mount)),
            Err(err) => {
                let tolerated = optional && matches!(err.status(), Some(403..=405));
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
    async fn ensure(
        &self,
        ctx: &SyncContext<Pod>,
        virt: &Pod,
        host_pod: &str,
        audiences: &Audiences,
        with_ca: bool,
    ) -> Result<(TokenMount, jiff::Timestamp)> {
        let prepared = self.prepare(ctx, virt, host_pod, audiences, with_ca).await?;
        let mount = prepared.mount.clone();
        let refresh_at = prepared.refresh_at;
        self.store(ctx, prepared).await?;
        Ok((mount, refresh_at))
    }

    /// What [`TokenSecrets::ensure`] decides before writing: the mount, when to renew, and
    /// the Secret to write (None when the cached one is fresh). Issues tokens when needed.
    async fn prepare(
        &self,
        ctx: &SyncContext<Pod>,
        virt: &Pod,
        host_pod: &str,
        audiences: &Audiences,
        with_ca: bool,
    ) -> Result<PreparedTokens> {
        let name = token_secret_name(host_pod);
        let host_ns = ctx
            .clients()
            .host_namespace_of(&virt.namespace().unwrap_or_default());
        let key = format!("{host_ns}/{name}");
        // A cache miss is a new pod's Secret, unless this process created it a moment ago:
        // then it is read rather than issued again. Otherwise no GET first (one round trip
        // less on every pod's way down); a create that finds the Secret reads it then.
        let existing = match self.host_secrets.get(&ObjectRef::new(&name).within(&host_ns)) {
            Some(secret) => {
                self.created.remove(&key);
                Some(secret)
            }
            None if self
                .created
                .get(&key)
                .is_some_and(|at| at.elapsed() < CREATED_LAG) =>
            {
                Api::<Secret>::namespaced(ctx.host_client().clone(), &host_ns)
                    .get_opt(&name)
                    .await
                    .map_err(api_error(Side::Host, "get", "Secret", &key))?
                    .map(Arc::new)
            }
            None => None,
        };
        let ownership = ctx.clients().ownership();
        if let Some(secret) = &existing
            && let Some((mount, refresh_at)) = self.fresh(ctx, secret, pod_uid(virt), &name, audiences)?
        {
            return Ok(PreparedTokens {
                mount,
                refresh_at,
                write: None,
            });
        }

        let issued = self.issue(ctx, virt, audiences, with_ca).await?;
        let ns = virt.namespace().unwrap_or_default();
        let owner = TokenOwner {
            ownership,
            host_namespace: &host_ns,
            host_pod,
            namespace: &ns,
            name: &virt.name_any(),
            uid: pod_uid(virt),
        };
        let desired = token_secret(owner, &issued);
        Ok(PreparedTokens {
            mount: TokenMount {
                secret_name: name,
                ca_cert: issued.ca_cert.is_some(),
            },
            refresh_at: issued.refresh_at,
            write: Some(PendingWrite {
                desired,
                existing,
                audiences: audiences.clone(),
                pod_uid: pod_uid(virt).to_string(),
            }),
        })
    }

    /// The mount and renewal time `secret` offers the pod of uid `pod_uid` needing `audiences`,
    /// if it is fresh for it; an error if the Secret is not this instance's.
    fn fresh(
        &self,
        ctx: &SyncContext<Pod>,
        secret: &Secret,
        pod_uid: &str,
        name: &str,
        audiences: &Audiences,
    ) -> Result<Option<(TokenMount, jiff::Timestamp)>> {
        let ownership = ctx.clients().ownership();
        if !ownership.owns(&secret.metadata) {
            return Err(Error::ForeignHostObject {
                host: format!("{}/{name}", secret.namespace().unwrap_or_default()),
                instance: ownership.instance().to_string(),
            });
        }
        let state = TokenSecretState::of(secret);
        Ok(state
            .is_fresh_for(pod_uid, audiences, jiff::Timestamp::now())
            .then_some(state.refresh_at)
            .flatten()
            .map(|refresh_at| {
                let mount = TokenMount {
                    secret_name: name.to_string(),
                    ca_cert: state.ca_cert,
                };
                (mount, refresh_at)
            }))
    }

    /// Writes the Secret `prepared` holds, if any: created, or replacing the one there. A
    /// create that finds a Secret fresh for the same pod (an earlier reconcile's, which the
    /// cache does not show yet) keeps it.
    pub async fn store(&self, ctx: &SyncContext<Pod>, prepared: PreparedTokens) -> Result<()> {
        let Some(PendingWrite {
            mut desired,
            existing,
            audiences,
            pod_uid,
        }) = prepared.write
        else {
            return Ok(());
        };
        let name = desired.name_any();
        let host_ns = desired.namespace().unwrap_or_default();
        let key = format!("{host_ns}/{name}");
        let secrets: Api<Secret> = Api::namespaced(ctx.host_client().clone(), &host_ns);
        let params = write_params();
        let resource_version = match existing {
            Some(secret) => secret.metadata.resource_version.clone(),
            None => match secrets.create(&params, &desired).await {
                Ok(_) => {
                    if self.created.len() >= 1024 {
                        self.created.retain(|_, at| at.elapsed() < CREATED_LAG);
                    }
                    self.created.insert(key.clone(), std::time::Instant::now());
                    tracing::info!(secret = %key, "stored service account tokens");
                    return Ok(());
                }
                // Written meanwhile (by an earlier reconcile the cache does not show yet):
                // kept if it serves this pod, replaced otherwise.
                Err(err) if status_code(&err) == Some(409) => {
                    let found =
                        secrets
                            .get_opt(&name)
                            .await
                            .map_err(api_error(Side::Host, "get", "Secret", &key))?;
                    let Some(found) = found else {
                        return Err(api_error(Side::Host, "create", "Secret", &key)(err));
                    };
                    if self.fresh(ctx, &found, &pod_uid, &name, &audiences)?.is_some() {
                        return Ok(());
                    }
                    found.metadata.resource_version
                }
                Err(err) => return Err(api_error(Side::Host, "create", "Secret", &key)(err)),
            },
        };
        desired.metadata.resource_version = resource_version;
        secrets
            .replace(&name, &params, &desired)
            .await
            .map_err(api_error(Side::Host, "update", "Secret", &key))?;
        tracing::info!(secret = %key, "renewed service account tokens");
        Ok(())
    }

    /// Requests a token per audience from the virtual API server, bound to the virtual pod.
    async fn issue(
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
    pub async fn refresh(&self, ctx: &SyncContext<Pod>, host: &Pod, virt: &Pod) -> Result<Option<Duration>> {
        let name = token_secret_name(&host.name_any());
        if !mounts_secret(host, &name) {
            return Ok(None);
        }
        let host_ns = host.namespace().unwrap_or_default();
        let cached = self.host_secrets.get(&ObjectRef::new(&name).within(&host_ns));
        let state = cached.as_deref().map(TokenSecretState::of);
        let audiences = match &state {
            Some(state) if !state.audiences.is_empty() => state.audiences.clone(),
            _ => token_audiences(
                virt.spec.as_ref().unwrap_or(&Default::default()),
                wants_default_mount(virt),
            ),
        };
        let with_ca = state.as_ref().is_none_or(|s| s.ca_cert);
        let (_, refresh_at) = self
            .ensure(ctx, virt, &host.name_any(), &audiences, with_ca)
            .await?;
        let delay = refresh_at.duration_since(jiff::Timestamp::now());
        Ok(Some(
            Duration::try_from(delay)
                .unwrap_or_default()
                .max(MIN_REFRESH_DELAY),
        ))
    }

    /// Deletes the token Secret of host pod `host_namespace/host_pod`, if there is one of ours
    /// issued for the virtual pod of uid `pod_uid` (any, when unknown). The host cache may not
    /// show a Secret written a moment ago (a pod deleted at once after its creation): the Secret
    /// is then read by name, so that it goes with its pod, not at the next sweep. The delete is
    /// bound to the uid of the Secret read, and a missing one is done.
    pub async fn delete(
        &self,
        ctx: &SyncContext<Pod>,
        host_namespace: &str,
        host_pod: &str,
        pod_uid: Option<&str>,
    ) -> Result<()> {
        let name = token_secret_name(host_pod);
        self.created.remove(&format!("{host_namespace}/{name}"));
        let secret = match self
            .host_secrets
            .get(&ObjectRef::new(&name).within(host_namespace))
        {
            Some(secret) => secret,
            None => {
                let api = Api::<Secret>::namespaced(ctx.clients().host_client().clone(), host_namespace);
                match api.get_opt(&name).await {
                    Ok(Some(secret)) => Arc::new(secret),
                    Ok(None) => {
                        tracing::debug!(secret = %name, "no token Secret to delete");
                        return Ok(());
                    }
                    Err(err) => {
                        return Err(api_error(
                            Side::Host,
                            "get",
                            "Secret",
                            &format!("{host_namespace}/{name}"),
                        )(err));
                    }
                }
            }
        };
        // A Secret of the same name issued for a newer pod of the same name is that pod's.
        if pod_uid.is_some_and(|uid| TokenSecretState::of(&secret).pod_uid != uid) {
            tracing::debug!(secret = %name, ?pod_uid, "token Secret of another pod kept");
            return Ok(());
        }
        delete_token_secret(ctx.clients(), &secret).await
    }

    /// The token Secret of host pod `host_namespace/host_pod` the host cache shows for virtual pod
    /// `key`, if any.
    pub fn orphan_candidate(
        &self,
        host_namespace: &str,
        host_pod: &str,
        key: &VirtualKey,
    ) -> Option<Arc<Secret>> {
        let name = token_secret_name(host_pod);
        self.host_secrets
            .get(&ObjectRef::new(&name).within(host_namespace))
            .filter(|secret| token_pod_key(secret).as_ref() == Some(key))
    }

    /// Deletes the token Secret of host pod `host_namespace/host_pod` if the host cache shows one
    /// of ours for virtual pod `key`: called when neither pod exists. A Secret the cache does
    /// not show yet brings a reconcile of `key` with its event, and goes then.
    pub async fn delete_orphaned(
        &self,
        ctx: &SyncContext<Pod>,
        host_namespace: &str,
        host_pod: &str,
        key: &VirtualKey,
    ) -> Result<()> {
        let Some(secret) = self.orphan_candidate(host_namespace, host_pod, key) else {
            return Ok(());
        };
        self.created
            .remove(&format!("{host_namespace}/{}", token_secret_name(host_pod)));
        delete_token_secret(ctx.clients(), &secret).await
    }

    /// Reconciles triggered by token Secret changes (one deleted by someone, say), and after a
    /// (re)list of the host Secrets one for every token Secret cached: one whose pods are both
    /// gone (a syncer stopped between deleting the host pod and its tokens) goes then, in
    /// [`PodSyncer::sync_gone`](super::PodSyncer), not at the next sweep.
    pub fn changes(
        &self,
        events: mpsc::UnboundedReceiver<InformerEvent<Secret>>,
    ) -> impl futures::Stream<Item = VirtualKey> + Send + 'static {
        let secrets = self.host_secrets.clone();
        tokio_stream::wrappers::UnboundedReceiverStream::new(events).flat_map(move |event| {
            let keys = match event {
                InformerEvent::Applied(secret) | InformerEvent::Deleted(secret) => {
                    vec![token_pod_key(&secret)]
                }
                InformerEvent::Relisted => secrets.map(|secret| token_pod_key(secret)),
            };
            futures::stream::iter(keys.into_iter().flatten())
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
async fn delete_token_secret(clients: &Clients, secret: &Secret) -> Result<()> {
    if !clients.ownership().owns(&secret.metadata) {
        tracing::debug!(secret = %secret.name_any(), "not our token Secret: kept");
        return Ok(());
    }
    let host_ns = secret
        .namespace()
        .unwrap_or_else(|| clients.host_namespace().to_string());
    let key = format!("{host_ns}/{}", secret.name_any());
    let params = DeleteParams {
        preconditions: secret.metadata.uid.clone().map(|uid| Preconditions {
            uid: Some(uid),
            resource_version: None,
        }),
        ..DeleteParams::background()
    };
    match Api::<Secret>::namespaced(clients.host_client().clone(), &host_ns)
        .delete(&secret.name_any(), &params)
        .await
    {
        Ok(_) => {
            tracing::info!(secret = %key, "deleted service account tokens");
            Ok(())
        }
        Err(err) if matches!(status_code(&err), Some(404 | 409)) => {
            tracing::debug!(secret = %key, error = %err, "token Secret already gone or replaced");
            Ok(())
        }
        Err(err) => Err(api_error(Side::Host, "delete", "Secret", &key)(err)),
    }
}

/// Removes token Secrets whose host pod and virtual pod are both gone (a crash between writing
/// the Secret and the pod, a deletion missed while stopped). Runs on the leader, from caches:
/// once they are synced, again [`ORPHAN_MIN_AGE`] later, then every [`SWEEP_INTERVAL`].
pub async fn sweep(ctx: RegisterContext) {
    let secrets = ctx.caches().host_informer::<Secret>().store();
    let host_pods = ctx.caches().host_informer::<Pod>().store();
    let virtual_pods = ctx.caches().virtual_informer::<Pod>().store();
    let mut pause = Duration::ZERO;
    loop {
        tokio::time::sleep(pause).await;
        pause = if pause.is_zero() {
            ORPHAN_MIN_AGE
        } else {
            SWEEP_INTERVAL
        };
        let cutoff =
            jiff::Timestamp::now() - jiff::SignedDuration::try_from(ORPHAN_MIN_AGE).unwrap_or_default();
        let orphans = secrets.map(|secret| {
            let host_pod = secret
                .metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(TOKEN_POD_ANNOTATION))?;
            let young = secret
                .metadata
                .creation_timestamp
                .as_ref()
                .is_none_or(|t| t.0 > cutoff);
            let pod_exists = host_pods
                .contains(&ObjectRef::new(host_pod).within(&secret.namespace().unwrap_or_default()))
                || token_pod_key(secret).is_some_and(|key| {
                    virtual_pods.contains(
                        &ObjectRef::new(&key.name).within(key.namespace.as_deref().unwrap_or_default()),
                    )
                });
            (!young && !pod_exists).then(|| secret.clone())
        });
        for secret in orphans.into_iter().flatten() {
            if let Err(err) = delete_token_secret(ctx.clients(), &secret).await {
                tracing::warn!(error = %err, "could not remove an orphaned token secret");
            }
        }
    }
}
