//! `vcsync dev`: two embedded API servers (host and virtual) and the syncer between them, in
//! one process, for trying vcsync with kubectl. Not a production setup: see the README.

use std::{
    path::{Path, PathBuf},
    sync::Arc,
};

use anyhow::Context;
use vcsync_apiserver::{ServerConfig, SimulatorConfig};
use vcsync_syncer::{Config, Plugin};

use crate::{
    cluster_pair::ClusterPair,
    config_source::{ConfigSource, check_plugin_names, read_config},
    setup::{create_namespace, write},
};

/// Flags of `vcsync dev`.
#[derive(Debug, clap::Args)]
pub struct DevArgs {
    /// Where the kubeconfigs of both servers are written.
    #[arg(long, default_value = ".vcsync-dev")]
    pub dir: PathBuf,
    /// Optional vcsync.yaml for the syncer (instance, namespace and kubeconfigs are set by dev).
    #[arg(long, short = 'c')]
    pub config: Option<PathBuf>,
    /// Log level or tracing filter.
    #[arg(long, default_value = "info")]
    pub log_level: String,
    /// Simulated host nodes that schedule and "run" synced pods (0: no simulator, pods stay
    /// Pending on the host).
    #[arg(long, default_value_t = 3)]
    pub nodes: usize,
    /// Run on a real host and a real virtual control plane (kube-apiserver,
    /// kube-controller-manager and etcd each) from this folder of binaries (the last line that
    /// tests/control-plane/build.sh prints) instead of the embedded servers; `--nodes` fake
    /// kubelets then schedule and run the host's pods through its API.
    #[arg(long)]
    pub kube_assets: Option<PathBuf>,
    /// A development tool instead of the syncer.
    #[command(subcommand)]
    pub tool: Option<crate::dev_tools::DevTool>,
}

/// The vcsync.yaml that `--config` names, checked against `plugins`, or None without one; the
/// error is bad input.
pub fn file_config(
    args: &DevArgs,
    plugins: &[Arc<dyn Plugin>],
) -> Result<Option<(Config, ConfigSource)>, String> {
    let Some(path) = &args.config else {
        return Ok(None);
    };
    let (config, source) = read_config(path)?;
    check_plugin_names(&config, &source, plugins)?;
    Ok(Some((config, source)))
}

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
    std::fs::create_dir_all(&args.dir).with_context(|| format!("creating {}", args.dir.display()))?;
    let host_kubeconfig = args.dir.join("host.kubeconfig");
    let virtual_kubeconfig = args.dir.join("virtual.kubeconfig");
    let clusters = match &args.kube_assets {
        Some(assets) => {
            println!(
                "starting a real host and virtual control plane from {}",
                assets.display()
            );
            ClusterPair::real(assets, args.nodes).await?
        }
        None => {
            let simulator = SimulatorConfig {
                nodes: args.nodes,
                ..SimulatorConfig::default()
            };
            // The host's scheduler and kubelets, so pods become Running with IPs and nodes.
            ClusterPair::embedded(server_config, (args.nodes > 0).then_some(simulator)).await?
        }
    };
    write(&host_kubeconfig, &clusters.host_kubeconfig)?;
    write(&virtual_kubeconfig, &clusters.virtual_kubeconfig)?;
    let host_client = clusters.host_client.clone();
    let virtual_client = clusters.virtual_client.clone();
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
    if config.kubelet.listen.is_none() {
        // The kubelet API of the virtual nodes on loopback, for kubectl logs, exec and
        // port-forward, trusting the virtual API server's kubelet client certificate.
        let ca = args.dir.join("virtual-kubelet-client-ca.crt");
        write(&ca, &clusters.virtual_kubelet_client_ca()?)?;
        config.kubelet.listen = Some(std::net::SocketAddr::from(([127, 0, 0, 1], 0)));
        config.kubelet.client_ca_file = Some(ca);
    }

    print_welcome(&clusters, &host_kubeconfig, &virtual_kubeconfig, args.nodes);
    let result = crate::sidecar::run_with_clients(
        config,
        &source,
        &plugins,
        virtual_client,
        host_client,
        crate::shutdown::shutdown_signal(),
    )
    .await;
    clusters.stop().await;
    result
}

/// An embedded server named `name` as `vcsync dev` runs it.
fn server_config(name: &str) -> ServerConfig {
    ServerConfig {
        name: name.into(),
        // Its virtual side runs no controllers: a Deployment there says so.
        warn_without_controllers: name == "virtual",
        ..ServerConfig::default()
    }
}

fn print_welcome(clusters: &ClusterPair, host_kc: &Path, virtual_kc: &Path, nodes: usize) {
    let (h, v) = (host_kc.display(), virtual_kc.display());
    let nodes_hint = if nodes > 0 { "; kubectl get nodes" } else { "" };
    let controllers = match clusters.kind() {
        "embedded" => {
            "none: a Deployment or StatefulSet is stored and makes no pods (--kube-assets runs them)"
        }
        _ => "kube-controller-manager",
    };
    println!(
        "vcsync dev is running (Ctrl-C to stop).\n\
         \n  {}\
         \n  virtual kubeconfig: {v}\
         \n  host kubeconfig:    {h}\
         \n  host namespace:     {DEV_NAMESPACE}\
         \n  host nodes:         {nodes} (pods stay Pending without)\
         \n  virtual controllers: {controllers}\n\
         \nTry, in another terminal:\
         \n  export KUBECONFIG={v}\
         \n  kubectl create configmap app-config --from-literal=greeting=hello\
         \n  kubectl run web --image=nginx --overrides='{{\"spec\":{{\"volumes\":[{{\"name\":\"c\",\"configMap\":{{\"name\":\"app-config\"}}}}]}}}}'\
         \n  kubectl --kubeconfig {h} -n {DEV_NAMESPACE} get configmaps --show-labels\
         \n  kubectl get pods -o wide{nodes_hint}\n",
        clusters.description(),
    );
}
