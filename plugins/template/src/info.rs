//! The virtual cluster's info ConfigMap, `kube-public/vcsync-info`: which vcsync instance syncs
//! this virtual cluster and which kinds' host copies the template stamps, readable by tenants'
//! tools the way `kube-public/cluster-info` is.
//!
//! It is kept by a [`FakeSyncer`] (a virtual object with no host twin, created and repaired by
//! the syncer), and shows the optional SDK traits a syncer can add:
//! - an [`Initializer`] ([`KindCheck`]) that refuses, before anything runs, kinds the host
//!   does not serve (a typo in `kinds` would otherwise stamp nothing, silently);
//! - a [`Starter`] ([`OwnKeyOnly`]) around every reconcile: the controller of a fake syncer of
//!   ConfigMaps hears of every virtual ConfigMap, and the starter lets through only the info
//!   ConfigMap's key, so the syncer itself never sees another tenant object;
//! - a [`ControllerModifier`] ([`Triggers`]) that names the info key once at start, so the
//!   ConfigMap is created without waiting for a change.

use std::{
    collections::{BTreeMap, BTreeSet},
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
};

use async_trait::async_trait;
use futures::{StreamExt, stream};
use k8s_openapi::api::core::v1::ConfigMap;
use kube::{Api, discovery::Discovery};
use vcsync_syncer::{
    Action, Base, ControllerModifier, Error, FakeSyncer, Initializer, RegisterContext, Result, Side, Starter,
    SyncContext, Triggers,
};
use vcsync_translators::VirtualKey;

use crate::{
    config::TemplateConfig,
    config_map::{self, Desired},
};

/// The namespace of the info ConfigMap (every cluster has it).
pub const INFO_NAMESPACE: &str = "kube-public";

/// The name of the info ConfigMap.
pub const INFO_NAME: &str = "vcsync-info";

/// Keeps the info ConfigMap in the virtual cluster.
pub struct InfoSyncer {
    desired: Desired,
    starter: OwnKeyOnly,
    kind_check: KindCheck,
    triggers: Triggers,
}

impl InfoSyncer {
    /// The info syncer of instance `instance` configured with `config`.
    pub fn new(instance: &str, config: &TemplateConfig) -> Self {
        let key = VirtualKey::new(Some(INFO_NAMESPACE.to_string()), INFO_NAME.to_string());
        Self {
            desired: Desired {
                name: INFO_NAME.to_string(),
                data: BTreeMap::from([
                    ("instance".to_string(), instance.to_string()),
                    ("stampedKinds".to_string(), config.kinds.join(",")),
                ]),
            },
            triggers: Triggers::new(vec![stream::once(std::future::ready(key.clone())).boxed()]),
            starter: OwnKeyOnly {
                key,
                tally: Arc::default(),
            },
            kind_check: KindCheck {
                kinds: config.kinds.clone(),
            },
        }
    }

    /// The reconciles its starter saw so far.
    pub fn tally(&self) -> Arc<ReconcileTally> {
        self.starter.tally.clone()
    }

    async fn keep(&self, ctx: &SyncContext<ConfigMap>, existing: Option<&ConfigMap>) -> Result<Action> {
        let api: Api<ConfigMap> = Api::namespaced(ctx.virtual_client().clone(), INFO_NAMESPACE);
        let kept = config_map::keep(&api, Side::Virtual, existing, &self.desired).await?;
        if kept != config_map::Kept::Unchanged {
            tracing::info!(?kept, "{INFO_NAMESPACE}/{INFO_NAME} kept");
        }
        Ok(Action::await_change())
    }
}

impl Base for InfoSyncer {
    fn name(&self) -> &str {
        "template-info"
    }
}

#[async_trait]
impl FakeSyncer for InfoSyncer {
    type Resource = ConfigMap;

    /// Only the info key gets here (see [`OwnKeyOnly`]): it is missing, create it.
    async fn fake_sync_up(&self, ctx: &SyncContext<ConfigMap>, _key: &VirtualKey) -> Result<Action> {
        self.keep(ctx, None).await
    }

    /// The info ConfigMap changed (a tenant edited it, say): put its data back.
    async fn fake_sync(&self, ctx: &SyncContext<ConfigMap>, virt: Arc<ConfigMap>) -> Result<Action> {
        self.keep(ctx, Some(&virt)).await
    }

    fn starter(&self) -> Option<&dyn Starter<ConfigMap>> {
        Some(&self.starter)
    }

    fn initializer(&self) -> Option<&dyn Initializer> {
        Some(&self.kind_check)
    }

    fn controller_modifier(&self) -> Option<&dyn ControllerModifier> {
        Some(&self.triggers)
    }
}

/// How many reconciles a [`Starter`] let through, skipped and saw end.
#[derive(Debug, Default)]
pub struct ReconcileTally {
    passed: AtomicU64,
    skipped: AtomicU64,
    ended: AtomicU64,
}

impl ReconcileTally {
    /// Reconciles let through to the syncer.
    pub fn passed(&self) -> u64 {
        self.passed.load(Ordering::SeqCst)
    }

    /// Reconciles skipped (keys of other ConfigMaps).
    pub fn skipped(&self) -> u64 {
        self.skipped.load(Ordering::SeqCst)
    }

    /// Reconciles that ended, whether passed or skipped.
    pub fn ended(&self) -> u64 {
        self.ended.load(Ordering::SeqCst)
    }
}

/// A [`Starter`] that lets only one key through to its syncer.
pub struct OwnKeyOnly {
    key: VirtualKey,
    tally: Arc<ReconcileTally>,
}

#[async_trait]
impl Starter<ConfigMap> for OwnKeyOnly {
    async fn reconcile_start(&self, _ctx: &SyncContext<ConfigMap>, key: &VirtualKey) -> Result<bool> {
        let skip = *key != self.key;
        let counter = if skip {
            &self.tally.skipped
        } else {
            &self.tally.passed
        };
        counter.fetch_add(1, Ordering::SeqCst);
        Ok(skip)
    }

    fn reconcile_end(&self, _key: &VirtualKey) {
        self.tally.ended.fetch_add(1, Ordering::SeqCst);
    }
}

/// An [`Initializer`] that fails the registration when a configured kind is not served by the
/// host API server.
pub struct KindCheck {
    kinds: Vec<String>,
}

#[async_trait]
impl Initializer for KindCheck {
    async fn init(&self, ctx: &RegisterContext) -> Result<()> {
        let discovery = Discovery::new(ctx.clients().host_client().clone())
            .run()
            .await
            .map_err(|err| Error::Registration {
                name: "template".to_string(),
                reason: format!("reading the host API server's kinds: {err}"),
            })?;
        let served: BTreeSet<String> = discovery
            .groups()
            .flat_map(|group| group.recommended_resources())
            .map(|(resource, _)| resource.kind)
            .collect();
        match unserved(&self.kinds, &served) {
            None => Ok(()),
            Some(missing) => Err(Error::Registration {
                name: "template".to_string(),
                reason: format!(
                    "plugins.template.config.kinds names {missing}, which the host API server does \
                     not serve (kinds are written as in `kind:`, e.g. ConfigMap)"
                ),
            }),
        }
    }
}

/// The configured kinds the host does not serve, quoted and joined (None: all are served).
fn unserved(kinds: &[String], served: &BTreeSet<String>) -> Option<String> {
    let missing: Vec<String> = kinds
        .iter()
        .filter(|kind| !served.contains(kind.as_str()))
        .map(|kind| format!("{kind:?}"))
        .collect();
    (!missing.is_empty()).then(|| missing.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_kinds_the_host_does_not_serve_are_named() {
        let served = BTreeSet::from(["ConfigMap".to_string(), "Secret".to_string()]);
        let kinds = |names: &[&str]| names.iter().map(|n| n.to_string()).collect::<Vec<_>>();
        assert_eq!(unserved(&kinds(&["ConfigMap", "Secret"]), &served), None);
        assert_eq!(
            unserved(&kinds(&["Configmap", "Secret", "Widget"]), &served).as_deref(),
            Some("\"Configmap\", \"Widget\"")
        );
    }
}
