//! `vcsync dev`: two embedded API servers (host and virtual) and the syncer between them, in
//! one process, for trying vcsync with kubectl. Not a production setup: see the README.

use std::path::Path;

use anyhow::Context;
use k8s_openapi::api::core::v1::Namespace;
use kube::{Api, Client, api::PostParams};
use vcsync_apiserver::{ApiServer, ServerConfig, Simulator, SimulatorConfig};
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
    std::fs::create_dir_all(&args.dir).with_context(|| format!("creating {}", args.dir.display()))?;
    let host_kubeconfig = args.dir.join("host.kubeconfig");
    let virtual_kubeconfig = args.dir.join("virtual.kubeconfig");
    let clusters = match &args.kube_assets {
        Some(assets) => DevClusters::real(assets, args.nodes).await?,
        None => DevClusters::embedded(args.nodes).await?,
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

    print_welcome(&clusters, &host_kubeconfig, &virtual_kubeconfig, args.nodes);
    let result = crate::sidecar::run_with_clients(
        config,
        &source,
        &plugins,
        virtual_client,
        host_client,
        crate::sidecar::shutdown_signal(),
    )
    .await;
    clusters.stop().await;
    result
}

/// The two clusters of `vcsync dev` and what runs their pods.
struct DevClusters {
    host_client: Client,
    virtual_client: Client,
    host_kubeconfig: String,
    virtual_kubeconfig: String,
    /// What the host is and who runs its pods, for the welcome text.
    description: String,
    kind: DevKind,
}

enum DevKind {
    /// Embedded servers; the host's scheduler and kubelets simulated in the server.
    Embedded {
        host: ApiServer,
        virt: ApiServer,
        simulator: Option<Simulator>,
    },
    /// Real control planes; fake kubelets (nodes, scheduler, pod status) through the host API.
    Real {
        pair: Box<vcsync_envtest::ControlPlanePair>,
        kubelets: Option<vcsync_envtest::FakeKubelets>,
    },
}

impl DevClusters {
    async fn embedded(nodes: usize) -> anyhow::Result<Self> {
        let (host, virt) = start_servers("virtual").await?;
        // The host's scheduler and kubelets, so pods become Running with IPs and nodes.
        let simulator = (nodes > 0).then(|| {
            host.start_simulator(SimulatorConfig {
                nodes,
                ..SimulatorConfig::default()
            })
        });
        Ok(Self {
            host_client: client(&host.url())?,
            virtual_client: client(&virt.url())?,
            host_kubeconfig: host.kubeconfig(),
            virtual_kubeconfig: virt.kubeconfig(),
            description: format!(
                "embedded API servers (virtual {}, host {}); simulated host nodes: {nodes}",
                virt.url(),
                host.url()
            ),
            kind: DevKind::Embedded {
                host,
                virt,
                simulator,
            },
        })
    }

    async fn real(assets: &Path, nodes: usize) -> anyhow::Result<Self> {
        println!(
            "starting a real host and virtual control plane from {}",
            assets.display()
        );
        let pair = vcsync_envtest::ControlPlanePair::start(assets).await?;
        let host_client = pair.host.client().await?;
        let kubelets = if nodes > 0 {
            Some(vcsync_envtest::FakeKubelets::start(host_client.clone(), nodes).await?)
        } else {
            None
        };
        let read = |path: &Path| {
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))
        };
        Ok(Self {
            virtual_client: pair.virt.client().await?,
            host_client,
            host_kubeconfig: read(pair.host.kubeconfig())?,
            virtual_kubeconfig: read(pair.virt.kubeconfig())?,
            description: format!(
                "real kube-apiserver control planes (virtual {}, host {}; started in {:.1} s); \
                 fake host nodes (kubelets through the host API): {nodes}",
                pair.virt.server(),
                pair.host.server(),
                pair.started_in().as_secs_f64()
            ),
            kind: DevKind::Real {
                pair: Box::new(pair),
                kubelets,
            },
        })
    }

    async fn stop(self) {
        match self.kind {
            DevKind::Embedded {
                host,
                virt,
                simulator,
            } => {
                if let Some(simulator) = simulator {
                    simulator.stop().await;
                }
                virt.shutdown().await;
                host.shutdown().await;
            }
            DevKind::Real { pair, kubelets } => {
                drop(kubelets);
                pair.stop();
            }
        }
    }
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

fn print_welcome(clusters: &DevClusters, host_kc: &Path, virtual_kc: &Path, nodes: usize) {
    let (h, v) = (host_kc.display(), virtual_kc.display());
    let nodes_hint = if nodes > 0 { "; kubectl get nodes" } else { "" };
    println!(
        "vcsync dev is running (Ctrl-C to stop).\n\
         \n  {}\
         \n  virtual kubeconfig: {v}\
         \n  host kubeconfig:    {h}\
         \n  host namespace:     {DEV_NAMESPACE}\n\
         \nTry, in another terminal:\
         \n  export KUBECONFIG={v}\
         \n  kubectl create configmap app-config --from-literal=greeting=hello\
         \n  kubectl run web --image=nginx --overrides='{{\"spec\":{{\"volumes\":[{{\"name\":\"c\",\"configMap\":{{\"name\":\"app-config\"}}}}]}}}}'\
         \n  kubectl --kubeconfig {h} -n {DEV_NAMESPACE} get configmaps --show-labels\
         \n  kubectl get pods -o wide{nodes_hint}\n",
        clusters.description,
    );
}
