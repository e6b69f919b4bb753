//! Real Kubernetes control planes for development and tests, started the way controller-runtime's
//! envtest starts them: `etcd`, `kube-apiserver` and `kube-controller-manager` binaries from an
//! assets folder (`tests/control-plane/build.sh` builds them and prints the folder), each plane
//! with its own etcd data, certificates and free loopback ports, in a temporary folder that goes
//! away with it. Nothing runs pods (no scheduler, no kubelet). Not used by `vcsync run`.
//!
//! ```no_run
//! # async fn example() -> anyhow::Result<()> {
//! let pair = vcsync_envtest::ControlPlanePair::start("target/kube-assets/x".as_ref()).await?;
//! let host = pair.host.client().await?;
//! let virt = pair.virt.client().await?;
//! # Ok(()) }
//! ```
//!
//! Dropping a plane (also while panicking) stops every process it started, by pid, and removes
//! its folder; a killed test process leaves nothing running either (see the `processes`
//! module). [`SharedPlanes`] are planes that every test process of one test run shares.

#![forbid(unsafe_code)]

mod certificates;
mod kubeconfig;
mod kubelets;
mod processes;
mod shared;

pub use kubelets::{FAKE_KUBELET_LABEL, FakeKubelets, KubeletApi};
pub use shared::{Exclusive, SharedPlanes};

use std::{
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use anyhow::{Context, bail};
use k8s_openapi::api::core::v1::ServiceAccount;
use tracing::instrument::WithSubscriber;

use processes::{Lifetime, Process, STOP_GRACE, Watchdog};

/// The Services' range of every plane started here: host and virtual planes must agree, since
/// vcsync keeps the host's cluster IPs (`vcsync dev` gives its embedded servers one range too).
pub const SERVICE_CIDR: &str = "10.96.0.0/16";

/// How long a plane may take to become ready.
const READY_TIMEOUT: Duration = Duration::from_secs(90);

/// Lines of each process's log shown when a plane fails to start.
const TAIL_LINES: usize = 25;

/// One running control plane: etcd, kube-apiserver and kube-controller-manager.
pub struct ControlPlane {
    name: String,
    dir: PathBuf,
    kubeconfig: PathBuf,
    server: String,
    processes: Vec<Process>,
    watchdog: Option<Watchdog>,
    lifetime: Lifetime,
    role: Role,
    started_in: Duration,
}

/// What a plane is for, which decides the controllers its controller manager runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Role {
    /// A host cluster: every controller.
    Host,
    /// A virtual cluster: [`VIRTUAL_CONTROLLERS`].
    Virtual,
}

/// The controllers of a virtual cluster's controller manager: those a deployed virtual cluster
/// runs (`deploy/` and the kubernetes driver turn off the same ones, and `cloud-node-lifecycle`,
/// which kube-controller-manager 1.37 no longer has): none that needs nodes or volumes of its
/// own, and no endpoints controllers, since vcsync writes a virtual service's endpoints from
/// the host's.
pub const VIRTUAL_CONTROLLERS: &str = "*,-nodeipam,-persistentvolume-binder,-attachdetach,\
     -persistentvolume-expander,-endpoint,-endpointslice,-endpointslicemirroring";

impl ControlPlane {
    /// Starts a plane from the binaries in `assets`, named `name` (its kubeconfig's cluster,
    /// user and context, and part of its folder's name), and waits until it is ready: the API
    /// server answers `/readyz` to its admin, the controller manager `/healthz`, and the
    /// `default` ServiceAccount exists (the controllers run).
    /// It runs every controller, as a host cluster does.
    pub async fn start(assets: &Path, name: &str) -> anyhow::Result<Self> {
        Self::start_in(
            assets,
            name,
            Role::Host,
            &std::env::temp_dir(),
            Lifetime::ThisProcess,
        )
        .await
    }

    /// [`ControlPlane::start`] for a virtual cluster: its controller manager runs the
    /// controllers a deployed virtual cluster runs ([`VIRTUAL_CONTROLLERS`]).
    pub async fn start_virtual(assets: &Path, name: &str) -> anyhow::Result<Self> {
        Self::start_in(
            assets,
            name,
            Role::Virtual,
            &std::env::temp_dir(),
            Lifetime::ThisProcess,
        )
        .await
    }

    /// A plane of `role`, with its folder under `parent` and its watchdog's `lifetime`.
    async fn start_in(
        assets: &Path,
        name: &str,
        role: Role,
        parent: &Path,
        lifetime: Lifetime,
    ) -> anyhow::Result<Self> {
        let started = Instant::now();
        let binaries = Binaries::find(assets)?;
        let dir = new_dir(parent, name)?;
        let mut plane = Self {
            lifetime,
            role,
            name: name.to_string(),
            kubeconfig: dir.join("kubeconfig"),
            dir,
            server: String::new(),
            processes: Vec::new(),
            watchdog: None,
            started_in: Duration::ZERO,
        };
        // From here on, an error drops `plane`: whatever started is stopped, the folder removed.
        plane
            .launch(&binaries)
            .await
            .with_context(|| format!("starting control plane {name} (folder {})", plane.dir.display()))?;
        plane.started_in = started.elapsed();
        Ok(plane)
    }

    async fn launch(&mut self, binaries: &Binaries) -> anyhow::Result<()> {
        let [etcd_client, etcd_peer, apiserver_port, kcm_port] = processes::free_ports(4)?[..] else {
            unreachable!("four ports were asked for")
        };
        self.watchdog = Some(Watchdog::start(&self.dir, &self.lifetime)?);
        let pki = self.dir.join("pki");
        let material = certificates::Material::generate(SERVICE_CIDR)?;
        let files = material.write(&pki)?;
        self.server = format!("https://127.0.0.1:{apiserver_port}");
        kubeconfig::write(
            &self.kubeconfig,
            &self.name,
            &self.server,
            &material.ca.cert,
            &material.admin,
        )?;
        let kcm_kubeconfig = self.dir.join("controller-manager.kubeconfig");
        kubeconfig::write(
            &kcm_kubeconfig,
            &self.name,
            &self.server,
            &material.ca.cert,
            &material.controller_manager,
        )?;

        let etcd_url = |port: u16| format!("http://127.0.0.1:{port}");
        let etcd_args = [
            "--name=default".to_string(),
            format!("--data-dir={}", self.dir.join("etcd").display()),
            format!("--listen-client-urls={}", etcd_url(etcd_client)),
            format!("--advertise-client-urls={}", etcd_url(etcd_client)),
            format!("--listen-peer-urls={}", etcd_url(etcd_peer)),
            format!("--initial-advertise-peer-urls={}", etcd_url(etcd_peer)),
            format!("--initial-cluster=default={}", etcd_url(etcd_peer)),
            // Throwaway data: no fsync (as envtest does), which makes writes much faster.
            "--unsafe-no-fsync=true".to_string(),
        ];
        self.spawn("etcd", &binaries.etcd, &etcd_args)?;

        let path = |path: &Path| path.display().to_string();
        let apiserver_args = [
            "--advertise-address=127.0.0.1".to_string(),
            "--bind-address=127.0.0.1".to_string(),
            format!("--secure-port={apiserver_port}"),
            // The endpoint reconciler refuses a loopback address (the `kubernetes` Service gets
            // no Endpoints, as with envtest; nothing in a pod could reach it anyway).
            "--endpoint-reconciler-type=none".to_string(),
            format!("--cert-dir={}", self.dir.join("apiserver-certs").display()),
            format!("--etcd-servers={}", etcd_url(etcd_client)),
            format!("--service-cluster-ip-range={SERVICE_CIDR}"),
            format!("--tls-cert-file={}", path(&files.serving_cert)),
            format!("--tls-private-key-file={}", path(&files.serving_key)),
            format!("--client-ca-file={}", path(&files.ca_cert)),
            // Its identity at kubelets (those of the virtual nodes are vcsync's endpoint, which
            // accepts certificates of this plane's CA).
            format!(
                "--kubelet-client-certificate={}",
                path(&files.kubelet_client_cert)
            ),
            format!("--kubelet-client-key={}", path(&files.kubelet_client_key)),
            "--authorization-mode=RBAC".to_string(),
            "--allow-privileged=true".to_string(),
            "--service-account-issuer=https://kubernetes.default.svc.cluster.local".to_string(),
            format!("--service-account-key-file={}", path(&files.service_account_pub)),
            format!(
                "--service-account-signing-key-file={}",
                path(&files.service_account_key)
            ),
            format!(
                "--requestheader-client-ca-file={}",
                path(&files.front_proxy_ca_cert)
            ),
            "--requestheader-allowed-names=front-proxy-client".to_string(),
            "--requestheader-username-headers=X-Remote-User".to_string(),
            "--requestheader-group-headers=X-Remote-Group".to_string(),
            "--requestheader-extra-headers-prefix=X-Remote-Extra-".to_string(),
            format!(
                "--proxy-client-cert-file={}",
                path(&files.front_proxy_client_cert)
            ),
            format!("--proxy-client-key-file={}", path(&files.front_proxy_client_key)),
        ];
        self.spawn("kube-apiserver", &binaries.apiserver, &apiserver_args)?;
        let client = self.client().await?;
        self.wait("kube-apiserver /readyz", || async {
            let request = http::Request::get("/readyz").body(Vec::new())?;
            client.request_text(request).await?;
            Ok(true)
        })
        .await?;

        let kcm_args = [
            format!("--kubeconfig={}", path(&kcm_kubeconfig)),
            format!("--authentication-kubeconfig={}", path(&kcm_kubeconfig)),
            format!("--authorization-kubeconfig={}", path(&kcm_kubeconfig)),
            "--bind-address=127.0.0.1".to_string(),
            format!("--secure-port={kcm_port}"),
            format!(
                "--cert-dir={}",
                self.dir.join("controller-manager-certs").display()
            ),
            format!("--client-ca-file={}", path(&files.ca_cert)),
            format!(
                "--requestheader-client-ca-file={}",
                path(&files.front_proxy_ca_cert)
            ),
            format!("--root-ca-file={}", path(&files.ca_cert)),
            format!(
                "--service-account-private-key-file={}",
                path(&files.service_account_key)
            ),
            format!("--cluster-signing-cert-file={}", path(&files.ca_cert)),
            format!("--cluster-signing-key-file={}", path(&files.ca_key)),
            format!("--service-cluster-ip-range={SERVICE_CIDR}"),
            "--use-service-account-credentials=true".to_string(),
            "--leader-elect=false".to_string(),
            format!(
                "--controllers={}",
                match self.role {
                    Role::Host => "*",
                    Role::Virtual => VIRTUAL_CONTROLLERS,
                }
            ),
        ];
        self.spawn("kube-controller-manager", &binaries.controller_manager, &kcm_args)?;
        let mut health = kube::Config::new(format!("https://127.0.0.1:{kcm_port}").parse()?);
        health.accept_invalid_certs = true; // its certificate is self-signed, made at start
        health.read_timeout = Some(Duration::from_secs(5));
        let health = kube::Client::try_from(health)?;
        self.wait("kube-controller-manager /healthz", || async {
            let request = http::Request::get("/healthz").body(Vec::new())?;
            health.request_text(request).await?;
            Ok(true)
        })
        .await?;
        let service_accounts = kube::Api::<ServiceAccount>::namespaced(client, "default");
        self.wait("the default ServiceAccount", || async {
            Ok(service_accounts.get_opt("default").await?.is_some())
        })
        .await
    }

    /// Starts a process of this plane (see [`processes::spawn`]).
    fn spawn(&mut self, name: &str, program: &Path, args: &[String]) -> anyhow::Result<()> {
        let watchdog = self.watchdog.as_mut().context("no watchdog")?;
        let process = processes::spawn(name, program, args, &self.dir, watchdog)?;
        self.processes.push(process);
        Ok(())
    }

    /// Polls `check` until it returns true; fails with the logs' tails when a process exits or
    /// [`READY_TIMEOUT`] passes.
    async fn wait<F, Fut>(&mut self, what: &str, check: F) -> anyhow::Result<()>
    where
        F: Fn() -> Fut,
        Fut: Future<Output = anyhow::Result<bool>>,
    {
        let started = Instant::now();
        loop {
            // A probe's failures are expected while the plane starts: kube's client would log
            // each at error level.
            let probe = check().with_subscriber(tracing::subscriber::NoSubscriber::default());
            let last = match probe.await {
                Ok(true) => return Ok(()),
                Ok(false) => "not yet".to_string(),
                Err(err) => format!("{err:#}"),
            };
            if let Some((name, status)) = self
                .processes
                .iter_mut()
                .find_map(|process| Some((process.name.clone(), process.exited()?)))
            {
                bail!(
                    "{name} exited ({status}) while waiting for {what}\n{}",
                    self.logs()
                );
            }
            if started.elapsed() > READY_TIMEOUT {
                bail!(
                    "{what} not ready after {:?} (last: {last})\n{}",
                    READY_TIMEOUT,
                    self.logs()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The tails of every process's log.
    fn logs(&self) -> String {
        self.processes
            .iter()
            .map(|process| {
                format!(
                    "--- last lines of {} ---\n{}",
                    process.log.display(),
                    process.log_tail(TAIL_LINES)
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Its name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The kubeconfig of its admin (`system:masters`), certificates inline.
    pub fn kubeconfig(&self) -> &Path {
        &self.kubeconfig
    }

    /// The API server's URL, `https://127.0.0.1:PORT`.
    pub fn server(&self) -> &str {
        &self.server
    }

    /// Its folder: pki/, etcd/, the kubeconfigs and a log per process.
    /// The plane's CA (PEM file): its clients' certificates, the kubelet client certificate its
    /// kube-apiserver presents among them, chain to it.
    pub fn ca_cert(&self) -> PathBuf {
        self.dir.join("pki").join("ca.crt")
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// How long [`ControlPlane::start`] took.
    pub fn started_in(&self) -> Duration {
        self.started_in
    }

    /// The pids of every process it started (the watchdog included).
    pub fn pids(&self) -> Vec<u32> {
        let mut pids: Vec<u32> = self.processes.iter().map(Process::pid).collect();
        pids.extend(self.watchdog.as_ref().map(Watchdog::pid));
        pids
    }

    /// A client of its admin, from [`ControlPlane::kubeconfig`].
    pub async fn client(&self) -> anyhow::Result<kube::Client> {
        let kubeconfig = kube::config::Kubeconfig::read_from(&self.kubeconfig)?;
        let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default()).await?;
        Ok(kube::Client::try_from(config)?)
    }

    /// Stops every process and removes the folder (what `Drop` does).
    pub fn stop(self) {}

    /// Leaves the plane running for its watchdog to end with its shared lifetime's owner.
    fn release(mut self) {
        self.processes.clear(); // dropping a `Child` neither kills nor waits
        if let Some(watchdog) = self.watchdog.take() {
            watchdog.release();
        }
        self.lifetime = Lifetime::Released;
    }

    /// Its `stage`th process (0: etcd, 1: kube-apiserver, 2: kube-controller-manager).
    fn process_mut(&mut self, stage: usize) -> Option<&mut Process> {
        self.processes.get_mut(stage)
    }
}

impl Drop for ControlPlane {
    fn drop(&mut self) {
        if matches!(self.lifetime, Lifetime::Released) {
            return;
        }
        // In the reverse order of their start: kube-apiserver, stopped after etcd, would wait
        // for it until killed.
        for process in self.processes.iter_mut().rev() {
            processes::stop_all([process], STOP_GRACE);
        }
        if let Some(mut watchdog) = self.watchdog.take() {
            watchdog.stop();
        }
        processes::remove_dir(&self.dir);
    }
}

/// A host and a virtual plane, started together, with the same [`SERVICE_CIDR`].
pub struct ControlPlanePair {
    /// The host cluster (named `host`).
    pub host: ControlPlane,
    /// The virtual cluster (named `virtual`).
    pub virt: ControlPlane,
    started_in: Duration,
}

impl ControlPlanePair {
    /// Starts both planes at once from the binaries in `assets`.
    pub async fn start(assets: &Path) -> anyhow::Result<Self> {
        let started = Instant::now();
        let (host, virt) = tokio::try_join!(
            ControlPlane::start(assets, "host"),
            ControlPlane::start_virtual(assets, "virtual"),
        )?;
        let started_in = started.elapsed();
        tracing::info!(?started_in, "control plane pair started");
        Ok(Self {
            host,
            virt,
            started_in,
        })
    }

    /// How long [`ControlPlanePair::start`] took.
    pub fn started_in(&self) -> Duration {
        self.started_in
    }

    /// The pids of every process of both planes.
    pub fn pids(&self) -> Vec<u32> {
        let mut pids = self.host.pids();
        pids.extend(self.virt.pids());
        pids
    }

    /// The folders of both planes.
    pub fn dirs(&self) -> [&Path; 2] {
        [self.host.dir(), self.virt.dir()]
    }

    /// Stops both planes and removes their folders (what `Drop` does).
    pub fn stop(self) {}
}

impl Drop for ControlPlanePair {
    fn drop(&mut self) {
        // Both planes at once, each in the reverse order of the start (as `ControlPlane`'s
        // `Drop`, which then ends the watchdogs and removes the folders).
        let (host, virt) = (&mut self.host, &mut self.virt);
        for stage in (0..host.processes.len().max(virt.processes.len())).rev() {
            let both = host.process_mut(stage).into_iter();
            processes::stop_all(both.chain(virt.process_mut(stage)), STOP_GRACE);
        }
    }
}

/// The three programs in an assets folder.
struct Binaries {
    etcd: PathBuf,
    apiserver: PathBuf,
    controller_manager: PathBuf,
}

impl Binaries {
    fn find(assets: &Path) -> anyhow::Result<Self> {
        let find = |name: &str| -> anyhow::Result<PathBuf> {
            let path = assets.join(name);
            if !path.is_file() {
                bail!(
                    "{} not found: the assets folder must hold etcd, kube-apiserver and \
                     kube-controller-manager (tests/control-plane/build.sh builds them and prints \
                     the folder)",
                    path.display()
                );
            }
            // Absolute, since the processes run in their plane's folder.
            std::path::absolute(&path).with_context(|| format!("{}", path.display()))
        };
        Ok(Self {
            etcd: find("etcd")?,
            apiserver: find("kube-apiserver")?,
            controller_manager: find("kube-controller-manager")?,
        })
    }
}

/// A new, empty folder for a plane under `base`.
fn new_dir(base: &Path, name: &str) -> anyhow::Result<PathBuf> {
    use std::sync::atomic::{AtomicU32, Ordering};
    static COUNT: AtomicU32 = AtomicU32::new(0);
    loop {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .subsec_nanos();
        let count = COUNT.fetch_add(1, Ordering::Relaxed);
        let dir = base.join(format!(
            "vcsync-control-plane-{name}-{}-{count}-{nanos:08x}",
            std::process::id()
        ));
        match std::fs::create_dir(&dir) {
            Ok(()) => return Ok(dir),
            Err(err) if err.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(err) => return Err(err).with_context(|| format!("creating {}", dir.display())),
        }
    }
}
