//! The `local` driver: a virtual cluster on this machine, for trying vcsync without a host
//! cluster. A background `vcsync cluster serve-local` process runs two embedded API servers
//! (host, with simulated nodes, and virtual); a background `vcsync run` process is the syncer.
//! State lives in `<data-dir>/local/<name>/`: `values.yaml`, `vcsync.yaml`, both kubeconfigs,
//! `servers.pid`, `syncer.pid`, logs, a `paused` marker, and the servers' objects in
//! `host-state/` and `virtual-state/` (the embedded server's file persistence), so that the
//! servers can stop and start again without the virtual cluster losing anything. Pause stops the
//! syncer and the servers (as the kubernetes driver scales the control plane to 0); resume starts
//! the servers again from their state, on their previous ports when free, then the syncer; delete
//! stops both and removes the directory.

use std::{
    os::unix::process::CommandExt,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::Duration,
};

use anyhow::Context;
use k8s_openapi::api::core::v1::{Namespace, Node};
use kube::{Api, Client, api::ListParams};
use vcsync_apiserver::{ApiServer, ServerConfig, SimulatorConfig};

use super::{
    Changed, ClusterError, ClusterStatus, Created, Driver, DriverOptions, DriverRegistration, Phase,
    Progress, Result, Values,
    common::{replace_server, synced_counts},
};

inventory::submit! {
    DriverRegistration {
        name: "local",
        about: "embedded API servers and the syncer as background processes on this machine (not for production)",
        factory: |options| Ok(Box::new(LocalDriver::new(options)?)),
    }
}

const DEFAULT_NODES: usize = 3;

/// The state directories of the host and the virtual API server, in the cluster's directory.
const HOST_STATE: &str = "host-state";
const VIRTUAL_STATE: &str = "virtual-state";

/// The `local` driver.
pub struct LocalDriver {
    root: PathBuf,
}

impl LocalDriver {
    fn new(options: &DriverOptions) -> Result<LocalDriver> {
        let base = match &options.data_dir {
            Some(dir) => dir.clone(),
            None => match (std::env::var_os("XDG_STATE_HOME"), std::env::var_os("HOME")) {
                (Some(state), _) => PathBuf::from(state).join("vcsync"),
                (None, Some(home)) => PathBuf::from(home).join(".local/state/vcsync"),
                (None, None) => {
                    return Err(ClusterError::MissingDriverConfig {
                        driver: "local".into(),
                        detail: "no --data-dir, VCSYNC_DATA_DIR, XDG_STATE_HOME or HOME".into(),
                    });
                }
            },
        };
        Ok(LocalDriver {
            root: base.join("local"),
        })
    }

    fn dir(&self, name: &str) -> PathBuf {
        self.root.join(name)
    }

    fn existing(&self, name: &str) -> Result<PathBuf> {
        let dir = self.dir(name);
        if dir.join("values.yaml").is_file() {
            Ok(dir)
        } else {
            Err(ClusterError::NotFound(name.to_string()))
        }
    }
}

fn host_namespace(name: &str, values: &Values) -> String {
    values
        .namespace
        .clone()
        .unwrap_or_else(|| format!("vcsync-{name}"))
}

fn read_pid(path: &Path) -> Option<u32> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// Whether the process runs (a zombie does not).
fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| !rest.trim_start().starts_with(['Z', 'X'])),
        Err(_) => false,
    }
}

fn pid_alive(path: &Path) -> bool {
    read_pid(path).is_some_and(alive)
}

/// SIGTERM, then SIGKILL after 10 s; removes the pid file.
async fn stop(pid_file: &Path) {
    if let Some(pid) = read_pid(pid_file)
        && alive(pid)
    {
        {
            let _ = Command::new("kill").args(["-TERM", &pid.to_string()]).status();
            for _ in 0..100 {
                if !alive(pid) {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            if alive(pid) {
                let _ = Command::new("kill").args(["-KILL", &pid.to_string()]).status();
            }
        }
    }
    let _ = std::fs::remove_file(pid_file);
}

/// Starts `vcsync ARGS` in the background, in its own process group, logging to `log`.
fn spawn(args: &[&std::ffi::OsStr], log: &Path, pid_file: &Path, env: &[(&str, String)]) -> Result<()> {
    let exe = std::env::current_exe().context("locating the vcsync binary")?;
    let out = std::fs::File::create(log).with_context(|| format!("creating {}", log.display()))?;
    let err = out.try_clone().context("log file")?;
    let child = Command::new(exe)
        .args(args)
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .process_group(0)
        .spawn()
        .context("starting a background vcsync process")?;
    std::fs::write(pid_file, child.id().to_string()).context("writing the pid file")?;
    Ok(())
}

fn spawn_syncer(dir: &Path) -> Result<()> {
    let config = dir.join("vcsync.yaml");
    spawn(
        &["run".as_ref(), "--config".as_ref(), config.as_os_str()],
        &dir.join("syncer.log"),
        &dir.join("syncer.pid"),
        &[],
    )
}

/// Starts `vcsync cluster serve-local DIR` and waits until its servers answer (the `ready`
/// marker); on failure stops it and returns its log.
async fn spawn_servers(dir: &Path, nodes: usize) -> Result<()> {
    let ready = dir.join("ready");
    let _ = std::fs::remove_file(&ready);
    spawn(
        &["cluster".as_ref(), "serve-local".as_ref(), dir.as_os_str()],
        &dir.join("servers.log"),
        &dir.join("servers.pid"),
        &[("VCSYNC_LOCAL_NODES", nodes.to_string())],
    )?;
    for _ in 0..300 {
        if ready.exists() || !pid_alive(&dir.join("servers.pid")) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    if !ready.exists() {
        let log = std::fs::read_to_string(dir.join("servers.log")).unwrap_or_default();
        stop(&dir.join("servers.pid")).await;
        return Err(anyhow::anyhow!("the API servers did not start: {log}").into());
    }
    Ok(())
}

async fn client(kubeconfig: &Path) -> anyhow::Result<Client> {
    let kubeconfig = kube::config::Kubeconfig::read_from(kubeconfig)?;
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default()).await?;
    Ok(Client::try_from(config)?)
}

#[async_trait::async_trait]
impl Driver for LocalDriver {
    fn name(&self) -> &'static str {
        "local"
    }

    async fn create(&self, name: &str, values: &Values, progress: &Progress) -> Result<Created> {
        let dir = self.dir(name);
        if let Ok(dir) = self.existing(name) {
            let text = std::fs::read_to_string(dir.join("values.yaml")).context("reading values.yaml")?;
            let running = Values::parse(&text, "values.yaml")?;
            return match values.mismatch(&running) {
                None => Ok(Created::Unchanged),
                Some(detail) => Err(ClusterError::ConfigMismatch {
                    name: name.to_string(),
                    detail,
                }),
            };
        }
        let namespace = host_namespace(name, values);
        let mut config = values.syncer_config(name, &namespace)?;
        config.host.kubeconfig = Some(dir.join("host.kubeconfig"));
        config.virtual_cluster.kubeconfig = Some(dir.join("virtual.kubeconfig"));
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        std::fs::write(
            dir.join("vcsync.yaml"),
            serde_yaml_ng::to_string(&config).context("config")?,
        )
        .context("writing vcsync.yaml")?;
        progress.step(format!("starting the API servers of {name}"));
        if let Err(err) = spawn_servers(&dir, values.nodes.unwrap_or(DEFAULT_NODES)).await {
            let _ = std::fs::remove_dir_all(&dir);
            return Err(err);
        }
        progress.step(format!("starting the syncer of {name}"));
        spawn_syncer(&dir)?;
        // Written last: a directory with values.yaml is a cluster.
        std::fs::write(dir.join("values.yaml"), values.to_yaml()).context("writing values.yaml")?;
        Ok(Created::New)
    }

    async fn delete(&self, name: &str, progress: &Progress) -> Result<()> {
        let dir = self.existing(name)?;
        progress.step(format!("stopping the syncer and API servers of {name}"));
        stop(&dir.join("syncer.pid")).await;
        stop(&dir.join("servers.pid")).await;
        std::fs::remove_dir_all(&dir).with_context(|| format!("removing {}", dir.display()))?;
        Ok(())
    }

    async fn pause(&self, name: &str, progress: &Progress) -> Result<Changed> {
        let dir = self.existing(name)?;
        if dir.join("paused").exists()
            && !pid_alive(&dir.join("syncer.pid"))
            && !pid_alive(&dir.join("servers.pid"))
        {
            return Ok(Changed::AlreadySo);
        }
        progress.step(format!("stopping the syncer and API servers of {name}"));
        std::fs::write(dir.join("paused"), "").context("writing the paused marker")?;
        stop(&dir.join("syncer.pid")).await;
        // SIGTERM: the servers write their state on the way out.
        stop(&dir.join("servers.pid")).await;
        let _ = std::fs::remove_file(dir.join("ready"));
        Ok(Changed::Yes)
    }

    async fn resume(&self, name: &str, values: Option<&Values>, progress: &Progress) -> Result<Changed> {
        let dir = self.existing(name)?;
        if let Some(values) = values {
            let text = std::fs::read_to_string(dir.join("values.yaml")).context("reading values.yaml")?;
            if let Some(detail) = values.mismatch(&Values::parse(&text, "values.yaml")?) {
                return Err(ClusterError::ConfigMismatch {
                    name: name.to_string(),
                    detail,
                });
            }
        }
        let mut changed = Changed::AlreadySo;
        if !pid_alive(&dir.join("servers.pid")) {
            // Never an empty virtual cluster in place of the tenant's: without saved state
            // (a cluster of an older vcsync) there is nothing to resume from.
            if [HOST_STATE, VIRTUAL_STATE]
                .iter()
                .any(|state| !dir.join(state).join("state.json").is_file())
            {
                return Err(ClusterError::NotRunning(format!(
                    "{name}: its API servers are gone and left no saved state; delete and re-create it"
                )));
            }
            let text = std::fs::read_to_string(dir.join("values.yaml")).context("reading values.yaml")?;
            let nodes = Values::parse(&text, "values.yaml")?
                .nodes
                .unwrap_or(DEFAULT_NODES);
            progress.step(format!("starting the API servers of {name} from their state"));
            spawn_servers(&dir, nodes).await?;
            // A syncer that outlived its servers (they were killed) starts afresh with them.
            stop(&dir.join("syncer.pid")).await;
            changed = Changed::Yes;
        }
        if pid_alive(&dir.join("syncer.pid")) {
            let _ = std::fs::remove_file(dir.join("paused"));
            return Ok(changed);
        }
        progress.step(format!("starting the syncer of {name}"));
        spawn_syncer(&dir)?;
        let _ = std::fs::remove_file(dir.join("paused"));
        Ok(Changed::Yes)
    }

    async fn list(&self) -> Result<Vec<String>> {
        let mut names = Vec::new();
        if let Ok(entries) = std::fs::read_dir(&self.root) {
            for entry in entries.flatten() {
                if entry.path().join("values.yaml").is_file() {
                    names.push(entry.file_name().to_string_lossy().into_owned());
                }
            }
        }
        names.sort();
        Ok(names)
    }

    async fn status(&self, name: &str) -> Result<ClusterStatus> {
        let dir = self.existing(name)?;
        let servers = pid_alive(&dir.join("servers.pid"));
        let syncer = pid_alive(&dir.join("syncer.pid"));
        let paused = dir.join("paused").exists();
        let mut status = ClusterStatus {
            name: name.to_string(),
            driver: "local".into(),
            phase: Phase::Unknown,
            ready: false,
            control_plane_ready: false,
            nodes_total: 0,
            nodes_ready: 0,
            synced_objects: Default::default(),
            message: String::new(),
        };
        if servers {
            let probe = async {
                let virt = client(&dir.join("virtual.kubeconfig")).await?;
                Api::<Namespace>::all(virt)
                    .list_metadata(&ListParams::default().limit(1))
                    .await?;
                let host = client(&dir.join("host.kubeconfig")).await?;
                let nodes = Api::<Node>::all(host.clone())
                    .list(&ListParams::default())
                    .await?;
                anyhow::Ok((host, nodes))
            };
            if let Ok(Ok((host, nodes))) = tokio::time::timeout(Duration::from_secs(5), probe).await {
                status.control_plane_ready = true;
                status.nodes_total = nodes.items.len() as u32;
                status.nodes_ready = nodes.items.iter().filter(|n| node_ready(n)).count() as u32;
                status.synced_objects = synced_counts(&host, name).await;
            }
        }
        (status.phase, status.message) = match (servers, paused, syncer, status.control_plane_ready) {
            (false, true, _, _) => (
                Phase::Paused,
                "paused: the syncer and API servers are stopped".into(),
            ),
            (false, false, _, _) => (
                Phase::Failed,
                "the API servers are not running (resume starts them again from their state)".into(),
            ),
            (true, true, _, _) => (Phase::Paused, "paused: the syncer is stopped".into()),
            (true, false, false, _) => (Phase::Failed, "the syncer is not running (see syncer.log)".into()),
            (true, false, true, false) => (Phase::Pending, "the API servers do not answer yet".into()),
            (true, false, true, true) => (Phase::Running, "API servers and syncer running".into()),
        };
        status.ready = status.phase == Phase::Running;
        Ok(status)
    }

    async fn kubeconfig(&self, name: &str, server: Option<&str>) -> Result<String> {
        let dir = self.existing(name)?;
        if dir.join("paused").exists() || !pid_alive(&dir.join("servers.pid")) {
            return Err(ClusterError::NotRunning(name.to_string()));
        }
        let text =
            std::fs::read_to_string(dir.join("virtual.kubeconfig")).context("reading the kubeconfig")?;
        Ok(match server {
            Some(url) => replace_server(&text, url, None)?,
            None => text,
        })
    }
}

pub(crate) fn node_ready(node: &Node) -> bool {
    node.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// Starts one embedded server keeping its objects in `dir/<state>`, on the port of its previous
/// kubeconfig when there is one and the port is free (so that kubeconfigs handed out stay valid).
async fn start_server(name: &str, dir: &Path, state: &str, kubeconfig: &str) -> anyhow::Result<ApiServer> {
    let config = ServerConfig {
        name: name.to_string(),
        state_dir: Some(dir.join(state)),
        ..ServerConfig::default()
    };
    if let Some(port) = previous_port(&dir.join(kubeconfig)) {
        let previous = ServerConfig {
            bind: std::net::SocketAddr::from((std::net::Ipv4Addr::LOCALHOST, port)),
            ..config.clone()
        };
        match ApiServer::start(previous).await {
            Ok(server) => return Ok(server),
            Err(vcsync_apiserver::Error::Bind { .. }) => {
                eprintln!("port {port} of the {name} API server is taken; it gets a new one");
            }
            Err(err) => return Err(err).with_context(|| format!("starting the {name} API server")),
        }
    }
    ApiServer::start(config)
        .await
        .with_context(|| format!("starting the {name} API server"))
}

/// The port of the server in a kubeconfig written by [`serve`].
fn previous_port(kubeconfig: &Path) -> Option<u16> {
    let text = std::fs::read_to_string(kubeconfig).ok()?;
    let config: kube::config::Kubeconfig = serde_yaml_ng::from_str(&text).ok()?;
    let server = config.clusters.first()?.cluster.as_ref()?.server.as_deref()?;
    let url: http::Uri = server.parse().ok()?;
    url.port_u16()
}

/// `vcsync cluster serve-local DIR`: the API servers of a `local` cluster, until SIGTERM. Their
/// objects persist in `DIR/host-state` and `DIR/virtual-state`: a second start serves them again.
pub async fn serve(dir: PathBuf) -> anyhow::Result<()> {
    let config_text = std::fs::read_to_string(dir.join("vcsync.yaml")).context("reading vcsync.yaml")?;
    let config = vcsync_syncer::Config::from_yaml(&config_text, "vcsync.yaml")?;
    // values.yaml is written after the servers are up: read the node count from the
    // environment the creator passes, defaulting.
    let nodes = std::env::var("VCSYNC_LOCAL_NODES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(DEFAULT_NODES);
    let host = start_server("host", &dir, HOST_STATE, "host.kubeconfig").await?;
    let virt = start_server(&config.instance, &dir, VIRTUAL_STATE, "virtual.kubeconfig").await?;
    let simulator = (nodes > 0).then(|| {
        host.start_simulator(SimulatorConfig {
            nodes,
            ..SimulatorConfig::default()
        })
    });
    let host_client = crate::cluster_pair::client(&host.url())?;
    let namespaces = Api::<Namespace>::all(host_client.clone());
    if namespaces.get_opt(&config.host_namespace).await?.is_none() {
        crate::setup::create_namespace(&host_client, &config.host_namespace).await?;
    }
    for (file, text) in [
        ("host.kubeconfig", host.kubeconfig()),
        ("virtual.kubeconfig", virt.kubeconfig()),
    ] {
        let tmp = dir.join(format!("{file}.tmp"));
        std::fs::write(&tmp, text).context("writing a kubeconfig")?;
        std::fs::rename(&tmp, dir.join(file)).context("writing a kubeconfig")?;
    }
    std::fs::write(dir.join("ready"), "").context("writing the ready marker")?;
    println!("serving host {} and virtual {}", host.url(), virt.url());
    crate::shutdown::shutdown_signal().await;
    if let Some(simulator) = simulator {
        simulator.stop().await;
    }
    virt.shutdown().await;
    host.shutdown().await;
    Ok(())
}
