//! What a pair controller does with a host copy made for an earlier virtual cluster (see
//! [`crate::safety`]): keep it and tell the tenant, prune it, or restore its virtual object.

use kube::Resource;
use vcsync_translators::VirtualKey;

use super::PairHandler;
use crate::{
    Action,
    error::{Result, api_error, status_code},
    events::EventType,
    resource::virtual_key_of,
    safety::Verdict,
    writes::write_params,
};

impl<S: crate::Syncer> PairHandler<S> {
    /// Stops the reconcile (Some) when the host object was made for an earlier virtual cluster:
    /// it is kept untouched (and the virtual namesake told why it is not synced) or, as the
    /// operator asked, pruned or its virtual object restored; None lets the reconcile go on
    /// (the current cluster's copy, or one being re-linked).
    pub(super) async fn guard_earlier(
        &self,
        key: &VirtualKey,
        virt: Option<&S::Resource>,
        host: Option<&S::Resource>,
    ) -> Result<Option<Action>> {
        let guard = self.ctx.oversight().host_guard();
        let kind = self.ctx.kind().name();
        let Some(host) = host else {
            guard.forget_earlier(&kind, key);
            return Ok(None);
        };
        match guard.verdict(&kind, key, host.meta(), virt.map(|v| v.meta())) {
            Verdict::Sync => Ok(None),
            // Deleted once: the delete event (or, for a pod in its grace period, the one that
            // ends it) brings the namesake's reconcile; deleting again would only write.
            Verdict::Prune => {
                if host.meta().deletion_timestamp.is_none() {
                    crate::delete_object(&self.ctx, host).await?;
                }
                Ok(Some(Action::await_change()))
            }
            Verdict::Keep if virt.is_none() && guard.restores() => match self.syncer.restore(host) {
                Some(restored) => self.restore(restored).await.map(Some),
                None => Ok(Some(Action::await_change())),
            },
            Verdict::Keep => {
                if let Some(virt) = virt {
                    let message = format!(
                        "host object {} was made for an earlier virtual cluster and is left untouched; \
                         vcsync run --adopt-previous re-links it to this object, --prune-previous \
                         deletes it, --restore-from-host recreates what it describes",
                        host.meta().name.as_deref().unwrap_or_default()
                    );
                    self.ctx
                        .events()
                        .publish(
                            &self.ctx.kind().reference_of(virt),
                            EventType::Warning,
                            "EarlierClusterCopy",
                            &message,
                        )
                        .await;
                }
                Ok(Some(Action::await_change()))
            }
        }
    }

    /// Creates `restored` (rebuilt from an earlier cluster's host copy) in the virtual
    /// cluster, and its namespace if that is missing too; the copy is re-linked to it by the
    /// reconcile its creation triggers.
    async fn restore(&self, restored: S::Resource) -> Result<Action> {
        let kind = self.ctx.kind().name();
        let key = virtual_key_of(&restored);
        let api = self
            .ctx
            .kind()
            .api(self.ctx.virtual_client().clone(), key.namespace.as_deref());
        let params = write_params();
        let mut result = api.create(&params, &restored).await;
        if let (Err(err), Some(ns)) = (&result, &key.namespace)
            && status_code(err) == Some(404)
        {
            create_namespace(self.ctx.virtual_client(), ns).await?;
            result = api.create(&params, &restored).await;
        }
        match result {
            Ok(_) => {
                tracing::info!(kind = %kind, key = %key, "restored a virtual object from its host copy");
                Ok(Action::await_change())
            }
            Err(err) if status_code(&err) == Some(409) => Ok(Action::await_change()),
            Err(err) => Err(api_error(crate::Side::Virtual, "create", &kind, &key.to_string())(err)),
        }
    }
}

/// Creates the virtual namespace `name` (already there is fine).
async fn create_namespace(client: &kube::Client, name: &str) -> Result<()> {
    use k8s_openapi::api::core::v1::Namespace;
    let namespace = Namespace {
        metadata: kube::api::ObjectMeta {
            name: Some(name.to_string()),
            ..Default::default()
        },
        ..Namespace::default()
    };
    match kube::Api::<Namespace>::all(client.clone())
        .create(&write_params(), &namespace)
        .await
    {
        Ok(_) => Ok(()),
        Err(err) if status_code(&err) == Some(409) => Ok(()),
        Err(err) => Err(api_error(crate::Side::Virtual, "create", "Namespace", name)(err)),
    }
}
