//! The two clusters a bench runs on: embedded API servers in this process (the host with the
//! simulator of a scheduler and kubelets), or real control planes (`--kube-assets`: etcd,
//! kube-apiserver and kube-controller-manager per side, as processes of their own, with fake
//! kubelets on the host working through its API).

use std::net::SocketAddr;

use super::*;

pub(super) enum BenchClusters {
    Embedded {
        host: ApiServer,
        virt: ApiServer,
        simulator: Option<Simulator>,
    },
    Real {
        pair: Box<vcsync_envtest::ControlPlanePair>,
        kubelets: Option<vcsync_envtest::FakeKubelets>,
    },
}

impl BenchClusters {
    pub(super) async fn start(args: &BenchArgs) -> anyhow::Result<Self> {
        let Some(assets) = &args.kube_assets else {
            return Self::embedded(args).await;
        };
        let pair = vcsync_envtest::ControlPlanePair::start(assets).await?;
        let kubelets = if args.nodes > 0 {
            let host = pair.host.client().await?;
            Some(vcsync_envtest::FakeKubelets::start(host, args.nodes).await?)
        } else {
            None
        };
        Ok(Self::Real {
            pair: Box::new(pair),
            kubelets,
        })
    }

    async fn embedded(args: &BenchArgs) -> anyhow::Result<Self> {
        let server = |name: &str| ServerConfig {
            name: name.into(),
            // The watch history must hold a whole burst: the syncer's watches never fall behind
            // into 410 Gone because the bench is large.
            watch_history: 100_000,
            ..ServerConfig::default()
        };
        let host = ApiServer::start(server("host"))
            .await
            .context("starting the host API server")?;
        let virt = ApiServer::start(server("virtual"))
            .await
            .context("starting the virtual API server")?;
        // Enough room on a few nodes for every pod of the run (direct ones included): few fake
        // nodes, so heartbeats stay a small constant.
        let simulator = (args.nodes > 0).then(|| {
            host.start_simulator(SimulatorConfig {
                nodes: args.nodes,
                max_pods_per_node: (2 * args.pods.max(args.rate as usize * args.seconds as usize))
                    .div_ceil(args.nodes)
                    + 110,
                ..SimulatorConfig::default()
            })
        });
        Ok(Self::Embedded {
            host,
            virt,
            simulator,
        })
    }

    /// What the servers are, for the report.
    pub(super) fn kind(&self) -> &'static str {
        match self {
            Self::Embedded { .. } => "embedded",
            Self::Real { .. } => "kube-apiserver",
        }
    }

    /// The (host, virtual) kubeconfigs' texts.
    pub(super) fn kubeconfigs(&self) -> anyhow::Result<(String, String)> {
        Ok(match self {
            Self::Embedded { host, virt, .. } => (host.kubeconfig(), virt.kubeconfig()),
            Self::Real { pair, .. } => {
                let read = |path: &Path| {
                    std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))
                };
                (read(pair.host.kubeconfig())?, read(pair.virt.kubeconfig())?)
            }
        })
    }

    /// Clients of the (host, virtual) cluster.
    pub(super) async fn clients(&self) -> anyhow::Result<(Client, Client)> {
        Ok(match self {
            Self::Embedded { host, virt, .. } => {
                (crate::dev::client(&host.url())?, crate::dev::client(&virt.url())?)
            }
            Self::Real { pair, .. } => (pair.host.client().await?, pair.virt.client().await?),
        })
    }

    /// The processes that serve the clusters besides this one (whose CPU counts as the
    /// servers'): none for embedded servers.
    pub(super) fn server_pids(&self) -> Vec<u32> {
        match self {
            Self::Embedded { .. } => Vec::new(),
            Self::Real { pair, .. } => pair.pids(),
        }
    }

    /// The servers' own request counters (embedded servers only).
    pub(super) fn counters(&self) -> Option<(RequestCounters, RequestCounters)> {
        match self {
            Self::Embedded { host, virt, .. } => Some((host.counters(), virt.counters())),
            Self::Real { .. } => None,
        }
    }

    pub(super) fn reset_counters(&self) {
        if let Self::Embedded { host, virt, .. } = self {
            host.reset_counters();
            virt.reset_counters();
        }
    }

    pub(super) async fn stop(self) {
        match self {
            Self::Embedded {
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
            Self::Real { pair, kubelets } => {
                drop(kubelets);
                pair.stop();
            }
        }
    }
}

/// The syncer's own count of its requests (`vcsync_api_requests_total` on its `/metrics`), by
/// (cluster, verb, resource): what a real API server cannot tell apart from its other clients'.
pub(super) async fn syncer_requests(
    address: SocketAddr,
) -> anyhow::Result<BTreeMap<(String, String, String), u64>> {
    let response = tokio::task::spawn_blocking(move || -> anyhow::Result<String> {
        use std::io::{Read, Write};
        let mut stream = std::net::TcpStream::connect(address)
            .with_context(|| format!("connecting to the syncer's /metrics at {address}"))?;
        stream.write_all(b"GET /metrics HTTP/1.0\r\nHost: localhost\r\n\r\n")?;
        let mut response = String::new();
        stream.read_to_string(&mut response)?;
        Ok(response)
    })
    .await??;
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, body)| body)
        .context("no body in the syncer's /metrics answer")?;
    Ok(parse_requests(body))
}

/// The `vcsync_api_requests_total` samples of a metrics text, summed over status codes.
fn parse_requests(text: &str) -> BTreeMap<(String, String, String), u64> {
    let mut counts = BTreeMap::new();
    for line in text.lines() {
        let Some(rest) = line.strip_prefix("vcsync_api_requests_total{") else {
            continue;
        };
        let Some((labels, value)) = rest.split_once("} ") else {
            continue;
        };
        let label = |name: &str| {
            labels
                .split(',')
                .find_map(|pair| pair.strip_prefix(name)?.strip_prefix("=\""))
                .and_then(|value| value.strip_suffix('"'))
                .unwrap_or("")
                .to_string()
        };
        let n = value.trim().parse::<f64>().unwrap_or(0.0) as u64;
        *counts
            .entry((label("cluster"), label("verb"), label("resource")))
            .or_insert(0) += n;
    }
    counts
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_samples_are_summed_over_codes() {
        let text = "# TYPE vcsync_api_requests counter\n\
            vcsync_api_requests_total{cluster=\"host\",verb=\"create\",resource=\"pods\",code=\"201\"} 3\n\
            vcsync_api_requests_total{cluster=\"host\",verb=\"create\",resource=\"pods\",code=\"409\"} 1\n\
            vcsync_api_requests_total{cluster=\"virtual\",verb=\"patch\",resource=\"pods/status\",code=\"200\"} 2\n\
            vcsync_reconciles_total{syncer=\"pods\"} 9\n";
        let counts = parse_requests(text);
        let key = |c: &str, v: &str, r: &str| (c.to_string(), v.to_string(), r.to_string());
        assert_eq!(counts[&key("host", "create", "pods")], 4);
        assert_eq!(counts[&key("virtual", "patch", "pods/status")], 2);
        assert_eq!(counts.len(), 2);
    }
}
