//! The template's status on the host: a ConfigMap `vcsync-template-<instance>` in the host
//! namespace that tells the host's operators the plugin is active and what it stamps.
//!
//! It is a free-form controller ([`ControllerStarter`]), for work the syncer abstraction does
//! not fit: one host object, no virtual twin. It runs on the writing replica once the caches
//! are synced, watches that one object (a field selector on its name) and puts it back
//! whenever it is missing or changed; a failed write is retried with backoff.

use std::{collections::BTreeMap, time::Duration};

use async_trait::async_trait;
use futures::StreamExt;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::{
    Api,
    runtime::{WatchStreamExt, watcher},
};
use vcsync_syncer::{Base, ControllerStarter, RegisterContext, Result, Side};

use crate::{
    config::TemplateConfig,
    config_map::{self, Desired},
};

/// First and last wait before retrying a failed write.
const RETRY: (Duration, Duration) = (Duration::from_millis(100), Duration::from_secs(30));

/// The name of the status ConfigMap of instance `instance`.
pub fn status_name(instance: &str) -> String {
    format!("vcsync-template-{instance}")
}

/// Keeps the status ConfigMap on the host.
pub struct HostStatus {
    config: TemplateConfig,
}

impl HostStatus {
    /// The status controller of a plugin configured with `config`.
    pub fn new(config: TemplateConfig) -> Self {
        Self { config }
    }
}

impl Base for HostStatus {
    fn name(&self) -> &str {
        "template-status"
    }
}

#[async_trait]
impl ControllerStarter for HostStatus {
    async fn register(&self, ctx: &RegisterContext) -> Result<()> {
        let clients = ctx.clients();
        let instance = &clients.config().instance;
        let desired = Desired {
            name: status_name(instance),
            data: BTreeMap::from([
                ("instance".to_string(), instance.clone()),
                ("annotation".to_string(), self.config.annotation.clone()),
                ("kinds".to_string(), self.config.kinds.join(",")),
            ]),
        };
        let api: Api<ConfigMap> = Api::namespaced(clients.host_client().clone(), clients.host_namespace());
        ctx.registrar().spawn(self.name(), keep_status(api, desired));
        Ok(())
    }
}

/// Repairs the status ConfigMap after every event of its watch, for as long as it runs.
async fn keep_status(api: Api<ConfigMap>, desired: Desired) {
    let selector = format!("metadata.name={}", desired.name);
    let mut events = watcher(api.clone(), watcher::Config::default().fields(&selector))
        .default_backoff()
        .boxed();
    while let Some(event) = events.next().await {
        match event {
            Ok(watcher::Event::InitDone | watcher::Event::Apply(_) | watcher::Event::Delete(_)) => {
                repair(&api, &desired).await;
            }
            Ok(watcher::Event::Init | watcher::Event::InitApply(_)) => {}
            Err(err) => tracing::warn!(error = %err, name = %desired.name, "status watch failed; retrying"),
        }
    }
}

/// Reads the status ConfigMap live and writes it if it is not as desired, until that works.
async fn repair(api: &Api<ConfigMap>, desired: &Desired) {
    let mut wait = RETRY.0;
    loop {
        let kept = match config_map::read(api, Side::Host, &desired.name).await {
            Ok(existing) => config_map::keep(api, Side::Host, existing.as_ref(), desired).await,
            Err(err) => Err(err),
        };
        match kept {
            Ok(config_map::Kept::Unchanged) => return,
            Ok(kept) => {
                tracing::info!(?kept, name = %desired.name, "template status kept");
                return;
            }
            Err(err) => {
                tracing::warn!(error = %err, retry_in = ?wait, "keeping the template status");
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(RETRY.1);
            }
        }
    }
}
