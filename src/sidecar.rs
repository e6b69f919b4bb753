//! `vcsync run`: the syncer between two API servers, until SIGTERM or Ctrl-C.

use anyhow::Context;
use k8s_openapi::api::core::v1::Namespace;
use kube::{Api, Client};
use std::sync::Arc;

use vcsync_syncer::{
    Config, Plugin, PluginConfig, RegisterContext, Side,
    events::EventRecorder,
    manager,
    metrics::Metrics,
    safety::{HostGuard, record},
    syncers,
    syncers::pods::security::PodSecurityLevel,
};

use crate::{
    clients::{client_for, stream_client_for},
    config_source::ConfigSource,
    kubelet::{KubeletServer, PodResolver},
    shutdown::shutdown_signal,
};

/// Serves the operations endpoints (when configured), connects to both clusters and runs the
/// syncer until a shutdown signal.
pub async fn run(config: Config, source: ConfigSource, plugins: Vec<Arc<dyn Plugin>>) -> anyhow::Result<()> {
    let metrics = Arc::new(Metrics::new());
    if let Some(address) = config.operations.address {
        // Before the clients: /healthz answers and /readyz says why not ready while an API
        // server is still unreachable.
        crate::ops::serve(address, metrics.clone()).await?;
    }
    let virtual_client = client_for(Side::Virtual, &config.virtual_cluster, &metrics).await?;
    let host_client = client_for(Side::Host, &config.host, &metrics).await?;
    run_with_metrics(
        config,
        &source,
        &plugins,
        virtual_client,
        host_client,
        metrics,
        shutdown_signal(),
    )
    .await
}

/// Runs the syncer over ready clients until `shutdown` resolves (`vcsync dev`).
#[cfg(feature = "dev-tools")]
pub async fn run_with_clients(
    config: Config,
    source: &ConfigSource,
    plugins: &[Arc<dyn Plugin>],
    virtual_client: Client,
    host_client: Client,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let metrics = Arc::new(Metrics::new());
    run_with_metrics(
        config,
        source,
        plugins,
        virtual_client,
        host_client,
        metrics,
        shutdown,
    )
    .await
}

/// [`run_with_clients`], recording metrics and readiness into `metrics`.
pub async fn run_with_metrics(
    config: Config,
    source: &ConfigSource,
    plugins: &[Arc<dyn Plugin>],
    virtual_client: Client,
    host_client: Client,
    metrics: Arc<Metrics>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    check_host_namespace(&host_client, &config.host_namespace).await?;
    tracing::info!(instance = %config.instance, host_namespace = %config.host_namespace, "starting vcsync");
    if config.sync.pods.pod_security_standard == PodSecurityLevel::Privileged {
        tracing::warn!(
            "sync.pods.podSecurityStandard is privileged: tenant pods reach the host unchecked (host network, privileged containers, hostPath); only the host's own admission stands in the way"
        );
    }
    let guard = host_guard(&config, &virtual_client, &host_client, &metrics).await?;
    let (config, kubelet) = bind_kubelet(config).await?;
    let ctx = RegisterContext::guarded(virtual_client, host_client, config, guard)?;
    if let Some(server) = kubelet {
        let pods = PodResolver {
            virtual_client: stream_client_for(
                Side::Virtual,
                &ctx.clients().config().virtual_cluster,
                &metrics,
            )
            .await?,
            host_client: stream_client_for(Side::Host, &ctx.clients().config().host, &metrics).await?,
            translator: ctx.clients().namespaced_translator(),
        };
        ctx.registrar().spawn_background(server.serve(pods));
    }
    syncers::register_builtin(&ctx).await?;
    for plugin in plugins {
        let plugin_config = PluginConfig::new(plugin.name(), &source.file, &source.text);
        if plugin_config.is_enabled().map_err(vcsync_syncer::Error::from)? {
            tracing::info!(plugin = plugin.name(), "registering plugin");
            plugin.register(&ctx, &plugin_config).await?;
        }
    }
    manager::run_with_metrics(ctx, metrics, shutdown).await?;
    tracing::info!("vcsync stopped");
    Ok(())
}

/// Binds the kubelet API when one is configured, and returns the configuration with the bound
/// address (so virtual nodes advertise the port chosen for port 0).
async fn bind_kubelet(mut config: Config) -> anyhow::Result<(Config, Option<KubeletServer>)> {
    if config.kubelet.listen.is_none() {
        return Ok((config, None));
    }
    // The address first: a configuration that names none fails before anything is bound.
    let configured = config.kubelet.listen.context("kubelet.listen")?;
    let names = [crate::kubelet::advertised(&config.kubelet, configured)?
        .address
        .to_string()];
    let server = KubeletServer::bind(&config.kubelet, &names).await?;
    let bound = server.local_addr()?;
    config.kubelet.listen = Some(bound);
    let endpoint = crate::kubelet::advertised(&config.kubelet, bound)?;
    tracing::info!(listen = %bound, advertised = %format!("{}:{}", endpoint.address, endpoint.port), "serving the kubelet API of the virtual nodes");
    Ok((config, Some(server)))
}

/// The guard of the virtual cluster served now: its identity read and recorded on the host,
/// replacements reported. Without access to the record (the RBAC of an older chart), the guard
/// still tells copies apart by the identity on them.
async fn host_guard(
    config: &Config,
    virtual_client: &Client,
    host_client: &Client,
    metrics: &Arc<Metrics>,
) -> anyhow::Result<HostGuard> {
    let established = match record::establish(
        virtual_client,
        host_client,
        &config.host_namespace,
        &config.instance,
    )
    .await
    {
        Ok(established) => established,
        Err(err) if record::is_forbidden(&err) => {
            tracing::warn!(error = %err, "may not keep the identity record on the host; grant configmaps get/create/update in the host namespace (vcsync rbac)");
            record::Established::unrecorded(record::virtual_identity(virtual_client).await?)
        }
        Err(err) => return Err(err).context("recording the virtual cluster's identity on the host"),
    };
    tracing::info!(virtual_cluster = %established.current.uid, startup = ?established.startup, "virtual cluster identified");
    let host_events = EventRecorder::new(host_client.clone(), "vcsync");
    Ok(HostGuard::new(
        &config.safety,
        &established,
        metrics.clone(),
        Some(host_events),
    ))
}

/// Fails clearly when the host namespace does not exist. Least-privilege RBAC grants
/// nothing cluster-scoped in that mode, so a 403 on reading the namespace object is not an
/// error: the namespace's own informers report a missing namespace soon enough.
async fn check_host_namespace(host_client: &Client, name: &str) -> anyhow::Result<()> {
    match Api::<Namespace>::all(host_client.clone()).get_opt(name).await {
        Ok(Some(_)) => Ok(()),
        Ok(None) => anyhow::bail!("host namespace {name} does not exist; create it first"),
        Err(kube::Error::Api(status)) if status.code == 403 => {
            tracing::debug!(
                namespace = name,
                "may not read the host namespace object; not checking it"
            );
            Ok(())
        }
        Err(err) => Err(err).context("reading the host namespace"),
    }
}
