//! The `vcsync cluster` command line.

use std::{path::PathBuf, process::ExitCode, time::Duration};

use clap::{Args, Subcommand};

use super::{
    Changed, ClusterError, ClusterStatus, Created, DEFAULT_DRIVER, Driver, DriverOptions, Progress, Result,
    Values,
    discovery::{self, Answer, Purpose},
    output::{Format, print_statuses},
    reach::reach,
};

/// Flags of `vcsync cluster`.
#[derive(Debug, Args)]
pub struct ClusterArgs {
    /// Driver managing the cluster (see `vcsync cluster drivers`). Without it, `create` uses
    /// `kubernetes`, `list` lists the clusters of every driver, and the other commands use the
    /// driver that has the cluster.
    #[arg(long, short = 'd', global = true, env = "VCSYNC_CLUSTER_DRIVER")]
    driver: Option<String>,
    /// Host cluster kubeconfig (`kubernetes`; default: KUBECONFIG, ~/.kube/config, in-cluster).
    #[arg(long, global = true)]
    kubeconfig: Option<PathBuf>,
    /// Kubeconfig context (`kubernetes`).
    #[arg(long, global = true)]
    context: Option<String>,
    /// State directory (`local`; default: $XDG_STATE_HOME/vcsync or ~/.local/state/vcsync).
    #[arg(long, global = true, env = "VCSYNC_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// No progress output.
    #[arg(long, short = 'q', global = true)]
    quiet: bool,
    #[command(subcommand)]
    command: ClusterCommand,
}

#[derive(Debug, Subcommand)]
enum ClusterCommand {
    /// Create a virtual cluster. Idempotent: the same values again change nothing (exit 0);
    /// different values exit 13 (config mismatch).
    Create {
        /// Cluster name (DNS label, at most 40 characters).
        name: String,
        /// Values file (see deploy/examples/values.yaml).
        #[arg(long, short = 'f')]
        values: Option<PathBuf>,
        /// Exit 11 (already running) instead of 0 when the cluster already exists.
        #[arg(long)]
        fail_if_exists: bool,
        #[command(flatten)]
        wait: WaitArgs,
    },
    /// Delete a cluster and everything it created. Missing: exit 10, unless --ignore-not-found.
    Delete {
        /// Cluster name.
        name: String,
        /// Exit 0 when the cluster does not exist (idempotent delete).
        #[arg(long)]
        ignore_not_found: bool,
    },
    /// Pause a cluster: stop its control plane and syncer, remove its workloads from the host
    /// (`kubernetes`), keep its state. Idempotent.
    Pause {
        /// Cluster name.
        name: String,
    },
    /// Resume a paused cluster. Idempotent; with --values, they must match (else exit 13).
    Resume {
        /// Cluster name.
        name: String,
        /// Values the cluster is expected to run with.
        #[arg(long, short = 'f')]
        values: Option<PathBuf>,
        #[command(flatten)]
        wait: WaitArgs,
    },
    /// List the clusters with their driver and phase (of every driver without -d).
    List {
        #[arg(long, short = 'o', value_enum, default_value = "table")]
        output: Format,
    },
    /// Status of a cluster: phase, readiness, nodes, synced objects.
    Status {
        /// Cluster name.
        name: String,
        #[arg(long, short = 'o', value_enum, default_value = "table")]
        output: Format,
        #[command(flatten)]
        wait: WaitArgs,
    },
    /// Exit 0 if the cluster exists, 10 if not (prints nothing).
    Exists {
        /// Cluster name.
        name: String,
    },
    /// Write a kubeconfig of the virtual cluster, merge it into yours as the current context
    /// (--update-current), or run a command against the cluster (`connect demo -- kubectl get
    /// ns`, exiting with the command's status). A `kubernetes` cluster reachable only inside its
    /// host is reached through a port-forward to its control plane's pod, which runs until the
    /// command ends (or, without one, until Ctrl+C). Paused: exit 12.
    Connect(super::connect::ConnectArgs),
    /// Save every object of the virtual cluster (all served kinds, custom resources with their
    /// definitions; no status, events, nodes or volume data) to one compressed archive.
    Snapshot(super::snapshot::SnapshotArgs),
    /// Recreate a snapshot's objects in the virtual cluster (a new or emptied one): existing
    /// objects are compared and left as they are, and the syncer re-links the host copies made
    /// for the snapshotted objects instead of recreating them. Exit 1 if any object failed.
    Restore(super::snapshot::RestoreArgs),
    /// Print the host manifests the `kubernetes` driver applies for a cluster.
    Render {
        /// Cluster name.
        name: String,
        /// Values file.
        #[arg(long, short = 'f')]
        values: Option<PathBuf>,
    },
    /// Print the host cluster's service CIDR (`kubernetes`): its `kubernetes` ServiceCIDR, or
    /// the range the API server names when refusing (dry run) a Service whose cluster IP is out
    /// of it. The control plane's init container runs this when `controlPlane.serviceCidr` is
    /// not set.
    DetectServiceCidr {
        /// Namespace of the dry-run probe Service.
        #[arg(long, short = 'n', default_value = "default")]
        namespace: String,
        /// Also write it to this file (without a newline).
        #[arg(long, short = 'o')]
        output: Option<PathBuf>,
    },
    /// Print the cluster IP of a host Service (`kubernetes`), waiting until it has one. The
    /// control plane's init container runs this for the cluster's own Service: synced pods reach
    /// the virtual API server at that IP, so k3s's serving certificate must name it.
    ServiceIp {
        /// Service name.
        name: String,
        /// Namespace of the Service.
        #[arg(long, short = 'n', default_value = "default")]
        namespace: String,
        /// Also write it to this file (without a newline).
        #[arg(long, short = 'o')]
        output: Option<PathBuf>,
        /// Give up (exit 1) after this many seconds without a cluster IP.
        #[arg(long, default_value_t = 300)]
        timeout: u64,
    },
    /// List the registered drivers.
    Drivers,
    /// (internal) Serve a `local` cluster's API servers in the foreground.
    #[cfg(feature = "dev-tools")]
    #[command(hide = true)]
    ServeLocal {
        /// The cluster's state directory.
        dir: PathBuf,
    },
}

/// `--wait` and `--timeout`.
#[derive(Debug, Args)]
struct WaitArgs {
    /// Wait until the cluster is ready (exit 14 when not within --timeout).
    #[arg(long)]
    wait: bool,
    /// How long --wait waits: seconds, or with a unit (`90s`, `5m`).
    #[arg(long, default_value = "5m", value_parser = super::connect::parse_duration)]
    timeout: Duration,
}

/// Runs `vcsync cluster ...`; returns the exit code.
pub fn main(args: ClusterArgs) -> ExitCode {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    #[cfg(feature = "dev-tools")]
    if let ClusterCommand::ServeLocal { dir } = &args.command {
        return match runtime.block_on(super::local::serve(dir.clone())) {
            Ok(()) => ExitCode::SUCCESS,
            Err(err) => {
                eprintln!("vcsync: {err:#}");
                ExitCode::FAILURE
            }
        };
    }
    match runtime.block_on(run(args)) {
        Ok(()) => ExitCode::SUCCESS,
        // The command `connect -- CMD` ran has said what it had to.
        Err(ClusterError::CommandExited(status)) => ExitCode::from(status),
        Err(err) => {
            eprintln!("vcsync: {err:#}");
            ExitCode::from(err.exit_code())
        }
    }
}

async fn run(args: ClusterArgs) -> Result<()> {
    let options = DriverOptions {
        kubeconfig: args.kubeconfig,
        context: args.context,
        data_dir: args.data_dir,
    };
    let mut progress = Progress::new(args.quiet);
    let chosen = args.driver.as_deref();
    let result = match args.command {
        ClusterCommand::Create {
            name,
            values,
            fail_if_exists,
            wait,
        } => {
            super::check_name(&name)?;
            let values = read_values(values.as_deref())?;
            let driver = super::driver(chosen.unwrap_or(DEFAULT_DRIVER), &options)?;
            match driver.create(&name, &values, &progress).await? {
                Created::New => progress.step(format!("cluster {name} created ({})", driver.name())),
                Created::Unchanged if fail_if_exists => return Err(ClusterError::AlreadyRunning(name)),
                Created::Unchanged => progress.step(format!(
                    "cluster {name} already exists with these values: unchanged"
                )),
            }
            wait_ready(&*driver, &name, &wait, &progress).await
        }
        ClusterCommand::Delete {
            name,
            ignore_not_found,
        } => {
            let deleted = match open_for(chosen, &name, Purpose::Delete, &options, &progress).await {
                Ok(driver) => driver.delete(&name, &progress).await,
                Err(err) => Err(err),
            };
            match deleted {
                Ok(()) => {
                    progress.step(format!("cluster {name} deleted"));
                    Ok(())
                }
                Err(ClusterError::NotFound(_)) if ignore_not_found => {
                    progress.step(format!("cluster {name} not found: nothing to delete"));
                    Ok(())
                }
                Err(err) => Err(err),
            }
        }
        ClusterCommand::Pause { name } => {
            match open_for(chosen, &name, Purpose::Use, &options, &progress)
                .await?
                .pause(&name, &progress)
                .await?
            {
                Changed::Yes => progress.step(format!("cluster {name} paused")),
                Changed::AlreadySo => progress.step(format!("cluster {name} already paused")),
            }
            Ok(())
        }
        ClusterCommand::Resume { name, values, wait } => {
            let values = values
                .as_deref()
                .map(|path| read_values(Some(path)))
                .transpose()?;
            let driver = open_for(chosen, &name, Purpose::Use, &options, &progress).await?;
            match driver.resume(&name, values.as_ref(), &progress).await? {
                Changed::Yes => progress.step(format!("cluster {name} resumed")),
                Changed::AlreadySo => progress.step(format!("cluster {name} already running")),
            }
            wait_ready(&*driver, &name, &wait, &progress).await
        }
        ClusterCommand::List { output } => {
            let (statuses, unanswered) = match chosen {
                Some(name) => (statuses_of(&*super::driver(name, &options)?).await?, Vec::new()),
                None => list_every_driver(&options, &progress).await,
            };
            progress.finish();
            print_statuses(&statuses, output, true);
            if unanswered.is_empty() {
                Ok(())
            } else {
                Err(anyhow::anyhow!("{}", unanswered.join("; ")).into())
            }
        }
        ClusterCommand::Status { name, output, wait } => {
            let driver = open_for(chosen, &name, Purpose::Use, &options, &progress).await?;
            let status = driver.status(&name).await?;
            wait_ready(&*driver, &name, &wait, &progress).await?;
            let status = if wait.wait {
                driver.status(&name).await?
            } else {
                status
            };
            progress.finish();
            print_statuses(&[status], output, false);
            Ok(())
        }
        ClusterCommand::Exists { name } => {
            let driver = open_for(chosen, &name, Purpose::Use, &options, &progress).await?;
            // Without -d the driver was found by asking each whether it has the cluster.
            if chosen.is_none() || driver.exists(&name).await? {
                Ok(())
            } else {
                Err(ClusterError::NotFound(name))
            }
        }
        ClusterCommand::Connect(args) => {
            let driver = open_for(chosen, &args.name, Purpose::Use, &options, &progress).await?;
            super::connect::connect(args, &*driver, &mut progress).await
        }
        ClusterCommand::Snapshot(args) => {
            let driver = open_for(chosen, &args.name, Purpose::Use, &options, &progress).await?;
            let (kubeconfig, _forward) =
                reach(&*driver, &args.name, args.server.as_deref(), 0, &progress).await?;
            super::snapshot::snapshot(&args, &kubeconfig, &progress).await
        }
        ClusterCommand::Restore(args) => {
            let loaded = super::snapshot::load(&args)?;
            let driver = open_for(chosen, &args.name, Purpose::Use, &options, &progress).await?;
            let (kubeconfig, _forward) =
                reach(&*driver, &args.name, args.server.as_deref(), 0, &progress).await?;
            super::snapshot::restore(&args, loaded, &kubeconfig, &progress).await
        }
        ClusterCommand::Render { name, values } => {
            super::check_name(&name)?;
            let values = read_values(values.as_deref())?;
            print!("{}", super::kubernetes::render_yaml(&name, &values)?);
            Ok(())
        }
        ClusterCommand::DetectServiceCidr { namespace, output } => {
            let cidr = super::kubernetes::detect_service_cidr_with(&options, &namespace).await?;
            if let Some(path) = &output {
                std::fs::write(path, &cidr)
                    .map_err(|err| anyhow::anyhow!("writing {}: {err}", path.display()))?;
            }
            progress.finish();
            println!("{cidr}");
            Ok(())
        }
        ClusterCommand::ServiceIp {
            name,
            namespace,
            output,
            timeout,
        } => {
            let ip = super::kubernetes::wait_for_service_ip_with(
                &options,
                &namespace,
                &name,
                Duration::from_secs(timeout),
            )
            .await?;
            if let Some(path) = &output {
                std::fs::write(path, &ip)
                    .map_err(|err| anyhow::anyhow!("writing {}: {err}", path.display()))?;
            }
            progress.finish();
            println!("{ip}");
            Ok(())
        }
        ClusterCommand::Drivers => {
            for registration in inventory::iter::<super::DriverRegistration> {
                println!("{}\t{}", registration.name, registration.about);
            }
            Ok(())
        }
        #[cfg(feature = "dev-tools")]
        ClusterCommand::ServeLocal { .. } => unreachable!("handled before"),
    };
    progress.finish();
    result
}

/// The driver of cluster `name`: the chosen one (`-d`), or the one that has it.
async fn open_for(
    chosen: Option<&str>,
    name: &str,
    purpose: Purpose,
    options: &DriverOptions,
    progress: &Progress,
) -> Result<Box<dyn Driver>> {
    if let Some(driver) = chosen {
        return super::driver(driver, options);
    }
    let mut notes = Vec::new();
    let found = discovery::find(name, options, purpose, &mut notes).await;
    for note in notes {
        progress.note(note);
    }
    found
}

/// The status of each of `driver`'s clusters.
async fn statuses_of(driver: &dyn Driver) -> Result<Vec<ClusterStatus>> {
    let mut statuses = Vec::new();
    for name in driver.list().await? {
        statuses.push(driver.status(&name).await?);
    }
    Ok(statuses)
}

/// The clusters of every driver that can be asked, by name, and a line per driver that could
/// not answer; drivers without their configuration are skipped with a note.
async fn list_every_driver(
    options: &DriverOptions,
    progress: &Progress,
) -> (Vec<ClusterStatus>, Vec<String>) {
    let mut drivers = discovery::open_all(options);
    let answers = discovery::ask_each(&drivers.open, |driver| Box::pin(statuses_of(driver))).await;
    let (mut statuses, mut unanswered) = (Vec::new(), Vec::new());
    for (driver, answer) in drivers.open.iter().zip(answers) {
        match answer {
            Answer::Given(found) => statuses.extend(found),
            Answer::Skipped(err) => drivers.notes.extend(discovery::skipped(driver.name(), &err)),
            Answer::Failed(err) => {
                unanswered.push(format!("driver {} could not be asked: {err:#}", driver.name()))
            }
        }
    }
    for note in drivers.notes {
        progress.note(note);
    }
    statuses.sort_by(|a, b| (&a.name, &a.driver).cmp(&(&b.name, &b.driver)));
    (statuses, unanswered)
}

fn read_values(path: Option<&std::path::Path>) -> Result<Values> {
    match path {
        Some(path) => Values::read(path),
        None => Ok(Values::default()),
    }
}

async fn wait_ready(
    driver: &dyn super::Driver,
    name: &str,
    wait: &WaitArgs,
    progress: &Progress,
) -> Result<()> {
    if !wait.wait {
        return Ok(());
    }
    progress.step(format!("waiting for cluster {name} to be ready"));
    let deadline = tokio::time::Instant::now() + wait.timeout;
    loop {
        let status = driver.status(name).await?;
        if status.ready {
            progress.step(format!("cluster {name} is ready"));
            return Ok(());
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(ClusterError::NotReady {
                name: name.to_string(),
                detail: format!(
                    "not ready after {:?} (phase {}: {})",
                    wait.timeout, status.phase, status.message
                ),
            });
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}
