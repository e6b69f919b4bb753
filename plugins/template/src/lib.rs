//! A complete vcsync plugin to copy (see README.md), using every part of the SDK once:
//! - a [`Hook`](vcsync_syncer::Hook) ([`stamp`]) that stamps an annotation on every object of
//!   the configured kinds that vcsync writes to the host;
//! - a fake syncer ([`info`]) that keeps `kube-public/vcsync-info` in the virtual cluster, with
//!   an `Initializer`, a `Starter` and a `ControllerModifier`;
//! - a free-form controller ([`status`], a `ControllerStarter`) that keeps a status ConfigMap in
//!   the host namespace.
//!
//! ```yaml
//! plugins:
//!   template:
//!     config:
//!       annotation: example.com/synced-by   # the key; the value is the instance name
//!       kinds: [ConfigMap, Secret]          # default: ConfigMap
//! ```

pub mod config;
pub mod config_map;
pub mod info;
pub mod stamp;
pub mod status;

use std::sync::Arc;

use async_trait::async_trait;
use vcsync_syncer::{
    Plugin, PluginConfig, RegisterContext, Result, register_controller_starter, register_fake_syncer,
};

pub use config::TemplateConfig;
pub use info::InfoSyncer;
pub use stamp::StampHook;
pub use status::HostStatus;

/// The plugin: its name is its section under `plugins:`.
#[derive(Clone, Copy, Debug, Default)]
pub struct TemplatePlugin;

#[async_trait]
impl Plugin for TemplatePlugin {
    fn name(&self) -> &str {
        "template"
    }

    async fn register(&self, ctx: &RegisterContext, config: &PluginConfig) -> Result<()> {
        let config: TemplateConfig = config.parse()?;
        let instance = ctx.clients().config().instance.clone();
        // The info syncer's initializer checks the kinds first: a mistake stops the start
        // before the hook is added.
        register_fake_syncer(ctx, InfoSyncer::new(&instance, &config)).await?;
        ctx.oversight()
            .hooks()
            .add(Arc::new(StampHook::new(config.clone(), &instance)));
        register_controller_starter(ctx, HostStatus::new(config)).await
    }
}
