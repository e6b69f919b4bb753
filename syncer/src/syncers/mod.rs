//! The built-in syncers.

pub mod data;
pub mod down;
pub mod from_host;
pub mod kinds;
pub mod nodes;
pub mod pods;
pub mod services;

pub use down::{DownKind, DownSyncer};

use crate::{RegisterContext, Result, register_syncer};

/// Registers every built-in syncer the configuration enables.
pub async fn register_builtin(ctx: &RegisterContext) -> Result<()> {
    let sync = ctx.clients().config().sync.clone();
    if ctx.clients().namespace_mapping().is_per_namespace() {
        // Each virtual namespace gets its host namespace; objects written before it exists fail
        // and are retried by their controllers.
        register_syncer(
            ctx,
            DownSyncer::<k8s_openapi::api::core::v1::Namespace>::with_translator(Box::new(
                vcsync_translators::HostNamespaceTranslator::new(ctx.clients().ownership().clone()),
            )),
        )
        .await?;
    }
    if sync.config_maps.enabled {
        register_syncer(
            ctx,
            DownSyncer::<k8s_openapi::api::core::v1::ConfigMap>::new(
                ctx.clients(),
                ctx.caches(),
                sync.config_maps.all,
            )?,
        )
        .await?;
    }
    if sync.secrets.enabled {
        register_syncer(
            ctx,
            DownSyncer::<k8s_openapi::api::core::v1::Secret>::new(
                ctx.clients(),
                ctx.caches(),
                sync.secrets.all,
            )?,
        )
        .await?;
    }
    register_down::<k8s_openapi::api::core::v1::ServiceAccount>(ctx, sync.service_accounts.enabled).await?;
    register_down::<k8s_openapi::api::core::v1::PersistentVolumeClaim>(
        ctx,
        sync.persistent_volume_claims.enabled,
    )
    .await?;
    register_down::<k8s_openapi::api::networking::v1::Ingress>(ctx, sync.ingresses.enabled).await?;
    register_down::<k8s_openapi::api::networking::v1::NetworkPolicy>(ctx, sync.network_policies.enabled)
        .await?;
    register_down::<k8s_openapi::api::policy::v1::PodDisruptionBudget>(
        ctx,
        sync.pod_disruption_budgets.enabled,
    )
    .await?;
    register_down::<k8s_openapi::api::scheduling::v1::PriorityClass>(ctx, sync.priority_classes.enabled)
        .await?;
    pods::register(ctx).await?;
    services::register(ctx).await?;
    nodes::register(ctx).await?;
    from_host::register(ctx).await?;
    Ok(())
}

async fn register_down<K: DownKind>(ctx: &RegisterContext, enabled: bool) -> Result<()> {
    if enabled {
        register_syncer(ctx, DownSyncer::<K>::new(ctx.clients(), ctx.caches(), true)?).await?;
    }
    Ok(())
}
