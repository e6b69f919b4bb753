//! How token Secrets go: with their pod (bound to the uid they were issued for), when both
//! pods are gone and a reconcile meets the Secret, and, for what no reconcile meets, a sweep on
//! the leader.

use std::{sync::Arc, time::Duration};

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Pod, Secret};
use kube::{
    Api, ResourceExt,
    api::{DeleteParams, Preconditions},
    runtime::reflector::ObjectRef,
};
use vcsync_translators::VirtualKey;

use super::TokenSecrets;
use crate::{
    Caches, Clients, Result, SyncContext,
    error::{Side, api_error, status_code},
    informer::{InformerEvent, Subscription},
    syncers::pods::token::{
        TOKEN_POD_ANNOTATION, TOKEN_POD_NAME_ANNOTATION, TOKEN_POD_NAMESPACE_ANNOTATION, TokenSecretState,
        token_secret_name,
    },
};

/// How often orphaned token Secrets are looked for.
const SWEEP_INTERVAL: Duration = Duration::from_secs(60);
/// How old an orphaned token Secret must be to go (one being written with its pod is not an
/// orphan), and so when the second sweep after a start runs: a syncer restarted more often
/// than [`SWEEP_INTERVAL`] still sweeps what was orphaned while it was stopped.
const ORPHAN_MIN_AGE: Duration = Duration::from_secs(10);

impl TokenSecrets {
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
        events: Subscription<Secret>,
    ) -> impl futures::Stream<Item = VirtualKey> + Send + 'static {
        let secrets = self.host_secrets.clone();
        events.flat_map(move |event| {
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
pub async fn sweep(clients: Clients, caches: Caches) {
    let secrets = caches.host_informer::<Secret>().store();
    let host_pods = caches.host_informer::<Pod>().store();
    let virtual_pods = caches.virtual_informer::<Pod>().store();
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
            if let Err(err) = delete_token_secret(&clients, &secret).await {
                tracing::warn!(error = %err, "could not remove an orphaned token secret");
            }
        }
    }
}
