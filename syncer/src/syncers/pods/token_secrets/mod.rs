//! Host Secrets holding the service-account tokens of host pods: issued by the virtual API
//! server, written beside a new pod and renewed for a running one (the rules are in
//! [`super::token`]). How they go, with their pod or as orphans: [`cleanup`].

pub(super) mod cleanup;

use std::{sync::Arc, time::Duration};

use k8s_openapi::{
    api::{
        authentication::v1::{BoundObjectReference, TokenRequest, TokenRequestSpec},
        core::v1::{ConfigMap, Pod, Secret, ServiceAccount},
    },
    apimachinery::pkg::apis::meta::v1::ObjectMeta,
};
use kube::{Api, Resource, ResourceExt, api::PostParams, runtime::reflector::ObjectRef};

use super::{
    token::{
        Audiences, IssuedTokens, TokenMount, TokenOwner, TokenSecretState, blank_token_values, mounts_secret,
        refresh_time, token_audiences, token_secret, token_secret_name, wants_default_mount,
    },
    translate::service_account_of,
};
use crate::{
    Caches, Result, SyncContext,
    cache::Cache,
    error::{Error, Side, api_error, status_code},
    events::EventType,
    host_owner::give_owner,
    wire,
    writes::write_params,
};

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
        let existing = match self
            .host_secrets
            .try_get(&ObjectRef::new(&name).within(&host_ns))?
        {
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
        ctx.oversight().host_owner().stamp(&mut desired.metadata);
        let name = desired.name_any();
        let host_ns = desired.namespace().unwrap_or_default();
        let key = format!("{host_ns}/{name}");
        let secrets: Api<Secret> = Api::namespaced(ctx.host_client().clone(), &host_ns);
        let params = write_params();
        let resource_version = match existing {
            Some(secret) => secret.metadata.resource_version.clone(),
            None => match wire::create(&secrets, &params, &desired).await {
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
        wire::replace(&secrets, &name, &params, &desired)
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
        // The CA bundle the root-CA publisher keeps in every namespace; optional. Read first:
        // one that does not decode fails the reconcile (retried) before a token is issued,
        // rather than write the pod's Secret without its CA.
        let ca_cert = if with_ca {
            self.config_maps
                .try_get(&ObjectRef::new("kube-root-ca.crt").within(&ns))?
                .and_then(|cm| cm.data.as_ref()?.get("ca.crt").cloned())
        } else {
            None
        };
        let now = jiff::Timestamp::now();
        let mut issued = IssuedTokens {
            audiences: audiences.clone(),
            refresh_at: now + jiff::SignedDuration::from_hours(24),
            ca_cert,
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
        Ok(issued)
    }

    /// Renews the tokens of a running pod when due; returns when to look again.
    pub async fn refresh(&self, ctx: &SyncContext<Pod>, host: &Pod, virt: &Pod) -> Result<Option<Duration>> {
        let name = token_secret_name(&host.name_any());
        if !mounts_secret(host, &name) {
            return Ok(None);
        }
        let host_ns = host.namespace().unwrap_or_default();
        // One that does not decode fails the refresh: read as absent, the Secret would be
        // replaced for audiences taken from the pod's spec, not the ones it serves.
        let cached = self
            .host_secrets
            .try_get(&ObjectRef::new(&name).within(&host_ns))?;
        let owner = ctx.oversight().host_owner();
        if let Some(secret) = cached.as_deref()
            && owner.missing_from(&secret.metadata).is_some()
        {
            // One written before `hostOwner` was set gets the owner (a conflict: just rewritten,
            // owned then).
            let secrets: Api<Secret> = Api::namespaced(ctx.host_client().clone(), &host_ns);
            match give_owner(&secrets, owner, secret).await {
                Ok(_) => {}
                Err(err) if status_code(&err) == Some(409) => {}
                Err(err) => return Err(api_error(Side::Host, "set the owner of", "Secret", &name)(err)),
            }
        }
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
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::Ordering;

    use super::*;
    use crate::{
        RegisterContext,
        cache::{Storage, empty, filled},
        config::Config,
    };

    /// A CA bundle that does not decode once read as absent, and the pod's token Secret was
    /// written without its `ca.crt`. Now the issue fails (the reconcile is retried) before a
    /// token is requested or anything written.
    #[tokio::test]
    async fn a_ca_bundle_that_does_not_decode_fails_the_issue_before_any_request() {
        let (client, connections) = crate::testing::silent_api_server().await;
        let register = RegisterContext::new(client.clone(), client, Config::new("demo", "vc-demo")).unwrap();
        let bundle: ConfigMap = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "kube-root-ca.crt", "namespace": "team"},
            "data": {"ca.crt": "-----BEGIN CERTIFICATE-----"}
        }))
        .unwrap();
        let config_maps = filled(Storage::Encoded, [bundle]);
        config_maps.corrupt(&ObjectRef::new("kube-root-ca.crt").within("team"));
        let tokens = TokenSecrets {
            service_accounts: empty(),
            config_maps,
            host_secrets: empty(),
            created: Default::default(),
        };
        let virt: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "web", "namespace": "team", "uid": "0f2d4c1e-7777-4a2b-9c3d-5e6f7a8b9c0d"},
            "spec": {"containers": [{"name": "app", "image": "nginx"}]}
        }))
        .unwrap();
        let audiences = token_audiences(virt.spec.as_ref().unwrap(), true);
        assert!(!audiences.is_empty());
        let ctx = SyncContext::new(&register, empty(), empty(), "pods");

        // A request would hang on the listener, which never answers.
        let issue = tokio::time::timeout(
            std::time::Duration::from_secs(5),
            tokens.issue(&ctx, &virt, &audiences, true),
        );
        let err = issue.await.expect("no request made").unwrap_err();
        assert!(matches!(err, Error::CacheDecode { .. }), "{err}");
        tokio::task::yield_now().await;
        assert_eq!(
            connections.load(Ordering::SeqCst),
            0,
            "nothing was requested or written"
        );
    }
}
