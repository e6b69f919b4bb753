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
//! At registration the CRD is made available in the virtual cluster ([`crd`]: copied from the
//! host or read from a file; updated when it differs). Then each resource gets a syncer of
//! `DynamicObject`s registered with the syncer runtime, as the built-in syncers are (the same
//! informers, caches, key queue, backoff and guarded writes): [`to_host::ToHost`], a
//! `Syncer`, or [`from_host::FromHost`], a `FakeSyncer` fed by a host informer. Objects are
//! kept in sync in either `namespaceMapping` (`single`: `<name>-x-<ns>` in the one host
//! namespace; `perNamespace`: names kept in `<instance>-x-<ns>`), with the SDK's hooks applied
//! to every object written ([`translate`]).
//!
//! Modules import one way: [`config`] first, then [`translate`] and [`crd`], then the two
//! syncers; this file only declares them and registers the plugin.
#![forbid(unsafe_code)]

pub mod config;
pub mod crd;
pub mod from_host;
pub mod to_host;
pub mod translate;

use async_trait::async_trait;
use kube::api::DynamicObject;
use vcsync_syncer::{Kind, Plugin, PluginConfig, RegisterContext, Result, register_dynamic_syncer};

pub use config::{CrdSource, CrdSyncConfig, Direction, NAME, ReferenceConfig, ResourceConfig};

/// The plugin; its section is `plugins: crd-sync:`.
pub struct CrdSyncPlugin;

#[async_trait]
impl Plugin for CrdSyncPlugin {
    fn name(&self) -> &str {
        NAME
    }

    async fn register(&self, ctx: &RegisterContext, config: &PluginConfig) -> Result<()> {
        let config: CrdSyncConfig = config.parse()?;
        for resource in config.resources {
            let served = crd::ensure_crd(ctx, &resource).await?;
            let kind = Kind::<DynamicObject>::dynamic(served.resource.clone(), served.namespaced);
            match resource.direction {
                Direction::ToHost => {
                    let syncer = to_host::ToHost::new(ctx, &resource, served);
                    register_dynamic_syncer(ctx, syncer, kind).await?;
                }
                Direction::FromHost => from_host::register(ctx, &resource, served, kind).await?,
            }
        }
        Ok(())
    }
}
