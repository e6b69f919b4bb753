//! `vcsync run`: the syncer between two API servers, until SIGTERM or Ctrl-C.

use anyhow::Context;
use k8s_openapi::api::core::v1::Namespace;
use kube::{Api, Client};
use vcsync_syncer::{Config, RegisterContext, Side, manager, syncers};

use crate::clients::client_for;

/// Connects to both clusters and runs the syncer until a shutdown signal.
pub async fn run(config: Config) -> anyhow::Result<()> {
    let virtual_client = client_for(Side::Virtual, &config.virtual_cluster).await?;
    let host_client = client_for(Side::Host, &config.host).await?;
    run_with_clients(config, virtual_client, host_client, shutdown_signal()).await
}

/// Runs the syncer over ready clients until `shutdown` resolves.
pub async fn run_with_clients(
    config: Config,
    virtual_client: Client,
    host_client: Client,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let namespaces: Api<Namespace> = Api::all(host_client.clone());
    namespaces
        .get_opt(&config.host_namespace)
        .await
        .context("reading the host namespace")?
        .with_context(|| {
            format!(
                "host namespace {} does not exist; create it first",
                config.host_namespace
            )
        })?;
    tracing::info!(instance = %config.instance, host_namespace = %config.host_namespace, "starting vcsync");
    let ctx = RegisterContext::new(virtual_client, host_client, config)?;
    syncers::register_builtin(&ctx).await?;
    manager::run(ctx, shutdown).await;
    tracing::info!("vcsync stopped");
    Ok(())
}

/// Resolves on Ctrl-C or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("SIGTERM handler");
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
    tracing::info!("shutdown requested; finishing in-flight reconciles");
}
