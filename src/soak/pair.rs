//! The two clusters a soak runs on: embedded API servers started here (the default), real
//! control planes started here (`--kube-assets`), or a pair the user gives (`--host-kubeconfig`
//! and `--virtual-kubeconfig`); and the namespaces the soak makes in them.

use std::{
    collections::BTreeSet,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use anyhow::{Context, bail};
use k8s_openapi::api::core::v1::{Namespace, Pod, ServiceAccount};
use kube::{
    Api, Client,
    api::{DeleteParams, ListParams},
    config::{KubeConfigOptions, Kubeconfig},
};
use vcsync_apiserver::{ServerConfig, SimulatorConfig};

use crate::cluster_pair::ClusterPair;

/// Nodes of the host (simulated, or fake kubelets on a real host).
const NODES: usize = 3;
/// Bound of the wait for a namespace's `default` ServiceAccount, and for namespaces to go.
const NAMESPACE_WAIT: Duration = Duration::from_secs(120);

/// Where the clusters come from.
pub(super) enum Source {
    /// Embedded API servers in this process, the host with a simulated scheduler and kubelets.
    Embedded,
    /// Real control planes from the binaries in this folder, fake kubelets on the host.
    Real(PathBuf),
    /// The clusters of these kubeconfig files (host, virtual): nothing is started.
    Given(PathBuf, PathBuf),
}

/// The clusters under soak.
pub(super) struct Clusters {
    pub(super) host: Client,
    pub(super) virt: Client,
    pub(super) host_kubeconfig: PathBuf,
    /// Rewritten when the virtual cluster is replaced.
    pub(super) virtual_kubeconfig: PathBuf,
    /// None for a given pair.
    started: Option<ClusterPair>,
}

async fn client_of(kubeconfig: &Path) -> anyhow::Result<Client> {
    let file = Kubeconfig::read_from(kubeconfig)
        .with_context(|| format!("reading the kubeconfig {}", kubeconfig.display()))?;
    let config = kube::Config::from_custom_kubeconfig(file, &KubeConfigOptions::default())
        .await
        .with_context(|| format!("loading the kubeconfig {}", kubeconfig.display()))?;
    let client = Client::try_from(config)?;
    client
        .apiserver_version()
        .await
        .with_context(|| format!("reaching the API server of {}", kubeconfig.display()))?;
    Ok(client)
}

impl Clusters {
    /// The clusters of `source`; the kubeconfigs of started ones are written into `dir`.
    pub(super) async fn start(source: &Source, dir: &Path) -> anyhow::Result<Self> {
        let pair = match source {
            Source::Given(host, virt) => {
                // The syncer's configuration names them: absolute, wherever it resolves paths.
                let absolute = |path: &Path| {
                    std::fs::canonicalize(path).with_context(|| format!("finding {}", path.display()))
                };
                return Ok(Self {
                    host: client_of(host).await?,
                    virt: client_of(virt).await?,
                    host_kubeconfig: absolute(host)?,
                    virtual_kubeconfig: absolute(virt)?,
                    started: None,
                });
            }
            Source::Real(assets) => ClusterPair::real(assets, NODES).await?,
            Source::Embedded => {
                let server = |name: &str| ServerConfig {
                    name: name.into(),
                    ..ServerConfig::default()
                };
                let simulator = SimulatorConfig {
                    nodes: NODES,
                    ..SimulatorConfig::default()
                };
                ClusterPair::embedded(server, Some(simulator)).await?
            }
        };
        let host_kubeconfig = dir.join("host.kubeconfig");
        let virtual_kubeconfig = dir.join("virtual.kubeconfig");
        crate::setup::write(&host_kubeconfig, &pair.host_kubeconfig)?;
        crate::setup::write(&virtual_kubeconfig, &pair.virtual_kubeconfig)?;
        Ok(Self {
            host: pair.host_client.clone(),
            virt: pair.virtual_client.clone(),
            host_kubeconfig,
            virtual_kubeconfig,
            started: Some(pair),
        })
    }

    /// What serves the clusters, for the report.
    pub(super) fn kind(&self) -> &'static str {
        self.started.as_ref().map_or("given", ClusterPair::kind)
    }

    /// Replaces the virtual cluster by an empty one, as a virtual control plane whose
    /// datastore was lost comes back, and makes `namespaces` in it. The syncer must be
    /// stopped.
    pub(super) async fn replace_virtual_empty(
        &mut self,
        namespaces: &BTreeSet<String>,
    ) -> anyhow::Result<()> {
        let Some(pair) = &mut self.started else {
            bail!("a given virtual cluster cannot be replaced");
        };
        pair.replace_virtual_empty().await?;
        crate::setup::write(&self.virtual_kubeconfig, &pair.virtual_kubeconfig)?;
        self.virt = pair.virtual_client.clone();
        create_namespaces(&self.virt, namespaces, "virtual").await
    }

    /// Makes the soak's namespaces: `host_namespace` on the host and `virtual_namespaces`. In a
    /// given pair none of them may exist yet: the checks need them to themselves.
    pub(super) async fn create_namespaces(
        &self,
        host_namespace: &str,
        virtual_namespaces: &BTreeSet<String>,
    ) -> anyhow::Result<()> {
        let host_namespace = BTreeSet::from([host_namespace.to_string()]);
        if self.started.is_none() {
            for (client, names, side) in [
                (&self.host, &host_namespace, "host"),
                (&self.virt, virtual_namespaces, "virtual"),
            ] {
                for name in names {
                    if Api::<Namespace>::all(client.clone())
                        .get_opt(name)
                        .await?
                        .is_some()
                    {
                        bail!(
                            "namespace {name} already exists in the {side} cluster: the soak needs \
                             its namespaces to itself (delete it, or give another pair)"
                        );
                    }
                }
            }
        }
        create_namespaces(&self.host, &host_namespace, "host").await?;
        create_namespaces(&self.virt, virtual_namespaces, "virtual").await
    }

    /// Removes the soak's namespaces from a given pair (started clusters go whole), pods at
    /// once first, and waits until they are gone.
    pub(super) async fn remove_namespaces(
        &self,
        host_namespace: &str,
        virtual_namespaces: &BTreeSet<String>,
    ) -> anyhow::Result<()> {
        if self.started.is_some() {
            return Ok(());
        }
        let host_namespace = BTreeSet::from([host_namespace.to_string()]);
        let sides = [(&self.virt, virtual_namespaces), (&self.host, &host_namespace)];
        let now = DeleteParams {
            grace_period_seconds: Some(0),
            ..DeleteParams::default()
        };
        for (client, names) in sides {
            for name in names {
                let pods = Api::<Pod>::namespaced(client.clone(), name);
                pods.delete_collection(&now, &ListParams::default()).await?;
                let namespaces = Api::<Namespace>::all(client.clone());
                namespaces.delete(name, &DeleteParams::default()).await?;
            }
        }
        let start = Instant::now();
        for (client, names) in sides {
            for name in names {
                while Api::<Namespace>::all(client.clone())
                    .get_opt(name)
                    .await?
                    .is_some()
                {
                    if start.elapsed() > NAMESPACE_WAIT {
                        bail!("namespace {name} was not gone after {NAMESPACE_WAIT:?}");
                    }
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
            }
        }
        Ok(())
    }

    /// Stops what was started.
    pub(super) async fn stop(self) {
        if let Some(pair) = self.started {
            pair.stop().await;
        }
    }
}

/// Creates `names` in the cluster of `client` and waits for each one's `default`
/// ServiceAccount, without which a real API server refuses pods.
async fn create_namespaces(client: &Client, names: &BTreeSet<String>, side: &str) -> anyhow::Result<()> {
    for name in names {
        crate::setup::create_namespace(client, name)
            .await
            .with_context(|| format!("in the {side} cluster"))?;
    }
    let start = Instant::now();
    for name in names {
        let accounts = Api::<ServiceAccount>::namespaced(client.clone(), name);
        while accounts.get_opt("default").await?.is_none() {
            if start.elapsed() > NAMESPACE_WAIT {
                bail!("no default ServiceAccount in the {side} namespace {name} after {NAMESPACE_WAIT:?}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    Ok(())
}
