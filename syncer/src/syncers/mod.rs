//! The built-in syncers.

pub mod data;
pub mod from_host;
pub mod nodes;
pub mod pods;
pub mod services;

pub use data::{DataKind, DataSyncer};

use crate::{RegisterContext, Result, register_syncer};

/// Registers every built-in syncer the configuration enables.
pub async fn register_builtin(ctx: &RegisterContext) -> Result<()> {
    let sync = ctx.config().sync.clone();
    if sync.config_maps.enabled {
        register_syncer(
            ctx,
            DataSyncer::<k8s_openapi::api::core::v1::ConfigMap>::new(ctx, sync.config_maps.all)?,
        )
        .await?;
    }
    if sync.secrets.enabled {
        register_syncer(
            ctx,
            DataSyncer::<k8s_openapi::api::core::v1::Secret>::new(ctx, sync.secrets.all)?,
        )
        .await?;
    }
    pods::register(ctx).await?;
    services::register(ctx).await?;
    nodes::register(ctx).await?;
    from_host::register(ctx).await?;
    Ok(())
}
