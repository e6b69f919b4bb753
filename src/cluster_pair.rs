//! A host and a virtual cluster to run the syncer between, for `vcsync dev` and `vcsync bench`:
//! embedded API servers in this process (the host with the simulator of a scheduler and
//! kubelets), or real control planes (etcd, kube-apiserver and kube-controller-manager each, as
//! processes of their own; `--kube-assets`) with fake kubelets on the host working through its
//! API.

use std::path::{Path, PathBuf};

use anyhow::Context;
use kube::Client;
use vcsync_apiserver::{ApiServer, RequestCounters, ServerConfig, Simulator, SimulatorConfig};
use vcsync_envtest::{ControlPlane, ControlPlanePair, FakeKubelets, KubeletApi};

/// The two clusters, their clients and kubeconfigs.
pub struct ClusterPair {
    pub host_client: Client,
    pub virtual_client: Client,
    /// The host's kubeconfig (its text).
    pub host_kubeconfig: String,
    /// The virtual cluster's kubeconfig (its text).
    pub virtual_kubeconfig: String,
    servers: Servers,
}

enum Servers {
    Embedded {
        host: ApiServer,
        virt: ApiServer,
        /// What the virtual server was started with (an empty replacement starts the same).
        virtual_config: ServerConfig,
        simulator: Option<Simulator>,
    },
    Real {
        pair: Box<ControlPlanePair>,
        kubelets: Option<FakeKubelets>,
        assets: PathBuf,
    },
}

impl ClusterPair {
    /// Real control planes from the binaries in `assets`, with `nodes` fake kubelets on the host
    /// (none: the host's pods stay Pending).
    pub async fn real(assets: &Path, nodes: usize) -> anyhow::Result<Self> {
        let pair = ControlPlanePair::start(assets).await?;
        let host_client = pair.host.client().await?;
        let kubelets = match nodes {
            0 => None,
            _ => {
                // The host nodes' kubelet API, when the assets hold the fake kubelet: then
                // kubectl logs, exec and port-forward reach the host pods.
                let binary = assets.join("fake-kubelet");
                let api = match binary.exists() {
                    true => Some(KubeletApi::start(&binary, &pair.host.ca_cert())?),
                    false => None,
                };
                Some(FakeKubelets::start_with_api(host_client.clone(), nodes, api).await?)
            }
        };
        Ok(Self {
            virtual_client: pair.virt.client().await?,
            host_client,
            host_kubeconfig: read(pair.host.kubeconfig())?,
            virtual_kubeconfig: read(pair.virt.kubeconfig())?,
            servers: Servers::Real {
                pair: Box::new(pair),
                kubelets,
                assets: assets.to_path_buf(),
            },
        })
    }

    /// Embedded servers made by `server(name)` for `host` and `virtual`, the host with the
    /// simulator `simulator` (none: the host's pods stay Pending).
    pub async fn embedded(
        server: impl Fn(&str) -> ServerConfig,
        simulator: Option<SimulatorConfig>,
    ) -> anyhow::Result<Self> {
        let host = ApiServer::start(server("host"))
            .await
            .context("starting the host API server")?;
        let virtual_config = server("virtual");
        let virt = ApiServer::start(virtual_config.clone())
            .await
            .context("starting the virtual API server")?;
        let simulator = simulator.map(|config| host.start_simulator(config));
        Ok(Self {
            host_client: client(&host.url())?,
            virtual_client: client(&virt.url())?,
            host_kubeconfig: host.kubeconfig(),
            virtual_kubeconfig: virt.kubeconfig(),
            servers: Servers::Embedded {
                host,
                virt,
                virtual_config,
                simulator,
            },
        })
    }

    /// Replaces the virtual cluster by an empty one, as a virtual control plane whose datastore
    /// was lost comes back: a new server (a new `kube-system` UID, none of the tenant's
    /// objects) on a new address, with a new kubeconfig and client. Whoever uses the old one
    /// must be stopped first.
    pub async fn replace_virtual_empty(&mut self) -> anyhow::Result<()> {
        match &mut self.servers {
            Servers::Embedded {
                virt, virtual_config, ..
            } => {
                let fresh = ApiServer::start(virtual_config.clone())
                    .await
                    .context("starting the empty virtual API server")?;
                self.virtual_client = client(&fresh.url())?;
                self.virtual_kubeconfig = fresh.kubeconfig();
                std::mem::replace(virt, fresh).shutdown().await;
            }
            Servers::Real { pair, assets, .. } => {
                // The old plane stops (and its datastore goes) when it is dropped here.
                pair.virt = ControlPlane::start_virtual(assets, "virtual").await?;
                self.virtual_client = pair.virt.client().await?;
                self.virtual_kubeconfig = read(pair.virt.kubeconfig())?;
            }
        }
        Ok(())
    }

    /// The CA (PEM) of the client certificate the virtual API server presents to kubelets: what
    /// vcsync's kubelet API must trust (`kubelet.clientCaFile`).
    pub fn virtual_kubelet_client_ca(&self) -> anyhow::Result<String> {
        match &self.servers {
            Servers::Embedded { virt, .. } => Ok(virt.kubelet_client_ca_pem().to_string()),
            Servers::Real { pair, .. } => read(&pair.virt.ca_cert()),
        }
    }

    /// What serves the clusters: `embedded` or `kube-apiserver`.
    pub fn kind(&self) -> &'static str {
        match self.servers {
            Servers::Embedded { .. } => "embedded",
            Servers::Real { .. } => "kube-apiserver",
        }
    }

    /// Where the API servers listen and how long real ones took to start, for people.
    pub fn description(&self) -> String {
        match &self.servers {
            Servers::Embedded { host, virt, .. } => format!(
                "embedded API servers (virtual {}, host {})",
                virt.url(),
                host.url()
            ),
            Servers::Real { pair, .. } => format!(
                "real kube-apiserver control planes (virtual {}, host {}; started in {:.1} s)",
                pair.virt.server(),
                pair.host.server(),
                pair.started_in().as_secs_f64()
            ),
        }
    }

    /// The processes serving the clusters besides this one: none for embedded servers.
    pub fn server_pids(&self) -> Vec<u32> {
        match &self.servers {
            Servers::Embedded { .. } => Vec::new(),
            Servers::Real { pair, .. } => pair.pids(),
        }
    }

    /// The (host, virtual) servers' own request counters: embedded servers only.
    pub fn counters(&self) -> Option<(RequestCounters, RequestCounters)> {
        match &self.servers {
            Servers::Embedded { host, virt, .. } => Some((host.counters(), virt.counters())),
            Servers::Real { .. } => None,
        }
    }

    /// Zeroes the embedded servers' request counters.
    pub fn reset_counters(&self) {
        if let Servers::Embedded { host, virt, .. } = &self.servers {
            host.reset_counters();
            virt.reset_counters();
        }
    }

    /// Stops the simulator or the fake kubelets, then the servers.
    pub async fn stop(self) {
        match self.servers {
            Servers::Embedded {
                host,
                virt,
                simulator,
                ..
            } => {
                if let Some(simulator) = simulator {
                    simulator.stop().await;
                }
                virt.shutdown().await;
                host.shutdown().await;
            }
            Servers::Real { pair, kubelets, .. } => {
                drop(kubelets);
                pair.stop();
            }
        }
    }
}

/// A client of an embedded server at `url`.
pub fn client(url: &str) -> anyhow::Result<Client> {
    let config = kube::Config::new(url.parse().context("embedded server URL")?);
    Client::try_from(config).context("building a client for the embedded server")
}

fn read(path: &Path) -> anyhow::Result<String> {
    std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))
}
