//! `vcsync dev`: two embedded API servers (host and virtual) and the syncer between them, in
//! one process, for trying vcsync with kubectl. Not a production setup: see the README.

use std::path::Path;

use anyhow::Context;
use k8s_openapi::api::core::v1::Namespace;
use kube::{Api, Client, api::PostParams};
use vcsync_apiserver::{ApiServer, ServerConfig, SimulatorConfig};
use vcsync_syncer::Config;

use std::sync::Arc;

use vcsync_syncer::Plugin;

use crate::cli::{ConfigSource, DevArgs};

/// The host namespace of the dev setup.
const DEV_NAMESPACE: &str = "vcsync-dev";

/// Runs the dev setup until Ctrl-C.
pub async fn run(
    args: DevArgs,
    file_config: Option<(Config, ConfigSource)>,
    plugins: Vec<Arc<dyn Plugin>>,
) -> anyhow::Result<()> {
    let (file_config, source) = match file_config {
        Some((config, source)) => (Some(config), source),
        None => (
            None,
            ConfigSource {
                file: "dev".into(),
                text: String::new(),
            },
        ),
    };
    let (host, virt) = start_servers("virtual").await?;

    // The host's scheduler and kubelets, so pods become Running with IPs and nodes.
    let simulator = (args.nodes > 0).then(|| {
        host.start_simulator(SimulatorConfig {
            nodes: args.nodes,
            ..SimulatorConfig::default()
        })
    });

    std::fs::create_dir_all(&args.dir).with_context(|| format!("creating {}", args.dir.display()))?;
    let host_kubeconfig = args.dir.join("host.kubeconfig");
    let virtual_kubeconfig = args.dir.join("virtual.kubeconfig");
    write(&host_kubeconfig, &host.kubeconfig())?;
    write(&virtual_kubeconfig, &virt.kubeconfig())?;

    let host_client = client(&host.url())?;
    let virtual_client = client(&virt.url())?;
    create_namespace(&host_client, DEV_NAMESPACE).await?;

    let mut config = file_config.unwrap_or_else(|| Config::new("dev", DEV_NAMESPACE));
    config.instance = if config.instance.is_empty() {
        "dev".into()
    } else {
        config.instance
    };
    config.host_namespace = DEV_NAMESPACE.into();
    config.host.kubeconfig = Some(host_kubeconfig.clone());
    config.virtual_cluster.kubeconfig = Some(virtual_kubeconfig.clone());

    print_welcome(&host, &virt, &host_kubeconfig, &virtual_kubeconfig, args.nodes);
    let result = crate::sidecar::run_with_clients(
        config,
        &source,
        &plugins,
        virtual_client,
        host_client,
        crate::sidecar::shutdown_signal(),
    )
    .await;
    if let Some(simulator) = simulator {
        simulator.stop().await;
    }
    virt.shutdown().await;
    host.shutdown().await;
    result
}

/// A host and a virtual embedded API server (the virtual one named `virtual_name`), on
/// loopback ports of their own.
pub(crate) async fn start_servers(virtual_name: &str) -> anyhow::Result<(ApiServer, ApiServer)> {
    let host = ApiServer::start(ServerConfig {
        name: "host".into(),
        ..ServerConfig::default()
    })
    .await
    .context("starting the host API server")?;
    let virt = ApiServer::start(ServerConfig {
        name: virtual_name.into(),
        ..ServerConfig::default()
    })
    .await
    .context("starting the virtual API server")?;
    Ok((host, virt))
}

/// Creates namespace `name`.
pub(crate) async fn create_namespace(client: &Client, name: &str) -> anyhow::Result<()> {
    let namespace = Namespace {
        metadata: kube::api::ObjectMeta {
            name: Some(name.into()),
            ..Default::default()
        },
        ..Default::default()
    };
    Api::<Namespace>::all(client.clone())
        .create(&PostParams::default(), &namespace)
        .await
        .with_context(|| format!("creating namespace {name}"))?;
    Ok(())
}

pub(crate) fn client(url: &str) -> anyhow::Result<Client> {
    let config = kube::Config::new(url.parse().context("embedded server URL")?);
    Client::try_from(config).context("building a client for the embedded server")
}

pub(crate) fn write(path: &Path, text: &str) -> anyhow::Result<()> {
    std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))
}

fn print_welcome(host: &ApiServer, virt: &ApiServer, host_kc: &Path, virtual_kc: &Path, nodes: usize) {
    let (h, v) = (host_kc.display(), virtual_kc.display());
    println!(
        "vcsync dev is running (Ctrl-C to stop).\n\
         \n  virtual API server: {}   kubeconfig: {v}\
         \n  host API server:    {}   kubeconfig: {h}\
         \n  host namespace:     {DEV_NAMESPACE}\
         \n  simulated host nodes: {nodes}\n\
         \nTry, in another terminal:\
         \n  export KUBECONFIG={v}\
         \n  kubectl create configmap app-config --from-literal=greeting=hello\
         \n  kubectl run web --image=nginx --overrides='{{\"spec\":{{\"volumes\":[{{\"name\":\"c\",\"configMap\":{{\"name\":\"app-config\"}}}}]}}}}'\
         \n  kubectl --kubeconfig {h} -n {DEV_NAMESPACE} get configmaps --show-labels\
         \n  kubectl get pods -o wide; kubectl get nodes\n",
        virt.url(),
        host.url(),
    );
}
