//! `crd-sync`: syncs custom resources between the virtual cluster and the host.
//!
//! ```yaml
//! plugins:
//!   crd-sync:
//!     config:
//!       resources:
//!       - group: example.com
//!         version: v1
//!         kind: Widget
//!         plural: widgets          # optional: from the CRD otherwise
//!         direction: toHost         # toHost (default) | fromHost
//!         crdSource: host           # host (default) | file
//!         crdFile: /path/crd.yaml   # when crdSource: file
//!         statusUp: true            # toHost: status flows up (default true)
//!         virtualNamespace: default # fromHost, namespaced kinds: where mirrors land (the
//!                                   # objects of its host namespace under namespaceMapping)
//!         references:               # fields naming other synced objects
//!         - path: spec.configMapName
//!           kind: ConfigMap
//! ```
//!
//! At registration the CRD is made available in the virtual cluster (copied from the host or
//! read from a file; updated when it differs). Then one dynamic controller per resource
//! ([`controller`]) keeps the objects in sync with the same rules as the built-in syncers, in
//! either `namespaceMapping` (`single`: `<name>-x-<ns>` in the one host namespace;
//! `perNamespace`: names kept in `<instance>-x-<ns>`), and with the SDK's hooks applied to every
//! object it writes.
#![forbid(unsafe_code)]

pub mod config;
pub mod controller;
pub mod crd;
pub mod translate;

use async_trait::async_trait;
use vcsync_syncer::{Plugin, PluginConfig, RegisterContext, Result};

pub use config::{CrdSource, CrdSyncConfig, Direction, ReferenceConfig, ResourceConfig};

/// The plugin; its section is `plugins: crd-sync:`.
pub struct CrdSyncPlugin;

/// Name of the plugin and of its configuration section.
pub const NAME: &str = "crd-sync";

#[async_trait]
impl Plugin for CrdSyncPlugin {
    fn name(&self) -> &str {
        NAME
    }

    async fn register(&self, ctx: &RegisterContext, config: &PluginConfig) -> Result<()> {
        let config: CrdSyncConfig = config.parse()?;
        for resource in config.resources {
            let served = crd::ensure_crd(ctx, &resource).await?;
            controller::register(ctx, resource, served);
        }
        Ok(())
    }
}
