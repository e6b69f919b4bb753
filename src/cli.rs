//! Command-line interface.

use std::{path::PathBuf, process::ExitCode};

use clap::{Parser, Subcommand};
use std::sync::Arc;

use vcsync_syncer::{Config, Plugin, config::LogFormat};

use crate::config_source::{ConfigSource, check_plugin_names, read_config};

/// Exit code for bad input (invalid config, flags): the same as clap's usage errors.
pub const EXIT_BAD_INPUT: u8 = 2;

/// vcsync: syncs workloads of a virtual Kubernetes cluster to its host cluster.
#[derive(Debug, Parser)]
#[command(name = "vcsync", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the syncer as a sidecar between a virtual and a host API server.
    Run(RunArgs),
    /// Start a host and a virtual embedded API server and the syncer between them, for trying
    /// vcsync with kubectl on this machine (not for production).
    #[cfg(feature = "dev-tools")]
    Dev(crate::dev::DevArgs),
    /// Soak the syncer: SIGKILL and restart it at random points of a seeded create/update/delete
    /// churn, then check that every virtual object has exactly one correct host copy.
    #[cfg(feature = "dev-tools")]
    Soak(crate::soak::SoakArgs),
    /// Print the least-privilege host RBAC (Role, ClusterRole and bindings) for a config: just
    /// the resources and verbs of the syncers it switches on.
    Rbac(RbacArgs),
    /// Benchmark the syncer against embedded API servers (burst, steady, restart, churn,
    /// kubelet) and report latencies, requests per pod, CPU and memory.
    #[cfg(feature = "dev-tools")]
    Bench(crate::bench::BenchArgs),
    /// Manage whole virtual clusters (create, delete, pause, resume, list, status, exists,
    /// connect) through drivers: `kubernetes` (in a host cluster) or `local` (this machine).
    Cluster(crate::cluster::cli::ClusterArgs),
}

/// Flags of `vcsync rbac`.
#[derive(Debug, clap::Args)]
struct RbacArgs {
    /// The vcsync.yaml the RBAC is for.
    #[arg(long, short = 'c', env = "VCSYNC_CONFIG")]
    config: PathBuf,
    /// The host service account vcsync runs as (in the config's hostNamespace).
    #[arg(long, default_value = "vcsync")]
    service_account: String,
}

/// Flags of `vcsync run`; each overrides the config file.
#[derive(Debug, clap::Args)]
struct RunArgs {
    /// The vcsync.yaml to read.
    #[arg(long, short = 'c', env = "VCSYNC_CONFIG")]
    config: Option<PathBuf>,
    #[command(flatten)]
    overrides: Overrides,
}

/// Settings a flag can override.
#[derive(Debug, Default, clap::Args)]
pub struct Overrides {
    /// Name of this virtual cluster (ownership label value).
    #[arg(long)]
    instance: Option<String>,
    /// Host namespace synced objects land in.
    #[arg(long)]
    host_namespace: Option<String>,
    /// Kubeconfig of the host cluster (default: in-cluster).
    #[arg(long)]
    host_kubeconfig: Option<PathBuf>,
    /// Kubeconfig of the virtual cluster.
    #[arg(long)]
    virtual_kubeconfig: Option<PathBuf>,
    /// Log format.
    #[arg(long, value_parser = ["text", "json"])]
    log_format: Option<String>,
    /// Log level or tracing filter (RUST_LOG takes precedence).
    #[arg(long)]
    log_level: Option<String>,
    /// Address of /healthz, /readyz and /metrics (`host:port`; port 0: any free port).
    #[arg(long)]
    ops_address: Option<std::net::SocketAddr>,
    /// Re-link host copies made for an earlier virtual cluster (an emptied or replaced
    /// datastore) to the current cluster's objects of the same kind and name, once they exist.
    #[arg(long)]
    adopt_previous: bool,
    /// Delete host copies made for an earlier virtual cluster (with --adopt-previous: those
    /// with no namesake in the current cluster).
    #[arg(long)]
    prune_previous: bool,
    /// Recreate in the virtual cluster the ConfigMaps, Secrets and PersistentVolumeClaims whose
    /// host copies were made for an earlier virtual cluster, and re-link them.
    #[arg(long)]
    restore_from_host: bool,
}

impl Overrides {
    fn apply(self, config: &mut Config) {
        if let Some(instance) = self.instance {
            config.instance = instance;
        }
        if let Some(ns) = self.host_namespace {
            config.host_namespace = ns;
        }
        if let Some(path) = self.host_kubeconfig {
            config.host.kubeconfig = Some(path);
        }
        if let Some(path) = self.virtual_kubeconfig {
            config.virtual_cluster.kubeconfig = Some(path);
        }
        if let Some(format) = self.log_format {
            config.log.format = if format == "json" {
                LogFormat::Json
            } else {
                LogFormat::Text
            };
        }
        if let Some(level) = self.log_level {
            config.log.level = level;
        }
        if let Some(address) = self.ops_address {
            config.operations.address = Some(address);
        }
        let earlier = &mut config.safety.earlier_copies;
        earlier.adopt |= self.adopt_previous;
        earlier.prune |= self.prune_previous;
        earlier.restore |= self.restore_from_host;
    }
}

/// Parses the command line and runs it with `plugins`; returns the process exit code.
pub fn main(plugins: Vec<Arc<dyn Plugin>>) -> ExitCode {
    let cli = Cli::parse();
    let cli = match cli.command {
        // Its own runtime and exit codes (see `crate::cluster::exit`).
        Command::Cluster(args) => return crate::cluster::cli::main(args),
        command => Cli { command },
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let result = match cli.command {
        Command::Run(args) => {
            let (mut config, source) = match args.config {
                Some(path) => match read_config(&path) {
                    Ok(read) => read,
                    Err(err) => return bad_input(&err),
                },
                None => (
                    Config::new("", ""),
                    ConfigSource {
                        file: "flags".into(),
                        text: String::new(),
                    },
                ),
            };
            if let Err(err) = check_plugin_names(&config, &source, &plugins) {
                return bad_input(&err);
            }
            args.overrides.apply(&mut config);
            if let Err(err) = config.validate() {
                let file = "configuration";
                return bad_input(&format!("{file}: {err}"));
            }
            crate::logging::init(&config.log);
            runtime.block_on(crate::sidecar::run(config, source, plugins))
        }
        #[cfg(feature = "dev-tools")]
        Command::Dev(crate::dev::DevArgs { tool: Some(tool), .. }) => runtime.block_on(tool.run()),
        #[cfg(feature = "dev-tools")]
        Command::Dev(args) => {
            let config = match crate::dev::file_config(&args, &plugins) {
                Ok(config) => config,
                Err(err) => return bad_input(&err),
            };
            crate::logging::init(&vcsync_syncer::config::LogConfig {
                format: LogFormat::Text,
                level: args.log_level.clone(),
            });
            runtime.block_on(crate::dev::run(args, config, plugins))
        }
        #[cfg(feature = "dev-tools")]
        Command::Soak(args) => runtime.block_on(crate::soak::run(args)),
        #[cfg(feature = "dev-tools")]
        Command::Bench(args) => runtime.block_on(crate::bench::run(args)),
        Command::Cluster(_) => unreachable!("handled before the runtime is built"),
        Command::Rbac(args) => match read_config(&args.config) {
            Ok((config, _)) => {
                let rbac = vcsync_syncer::rbac::host_rbac(&config, &args.service_account);
                print!("{}", rbac.to_yaml());
                Ok(())
            }
            Err(err) => return bad_input(&err),
        },
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        // A plugin found its section invalid: bad input, like any config error.
        Err(err) if matches!(err.downcast_ref(), Some(vcsync_syncer::Error::Config(_))) => {
            bad_input(&err.to_string())
        }
        Err(err) => {
            eprintln!("vcsync: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn bad_input(message: &str) -> ExitCode {
    eprintln!("vcsync: {message}");
    ExitCode::from(EXIT_BAD_INPUT)
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::Cli;

    /// `dev`, `bench` and `soak` exist exactly when the `dev-tools` feature is on; the product's
    /// subcommands always.
    #[test]
    fn the_dev_subcommands_come_with_the_dev_tools_feature_only() {
        let names: Vec<String> = Cli::command()
            .get_subcommands()
            .map(|c| c.get_name().to_string())
            .collect();
        for product in ["run", "rbac", "cluster"] {
            assert!(names.iter().any(|n| n == product), "{names:?}");
        }
        for dev in ["dev", "bench", "soak"] {
            assert_eq!(
                names.iter().any(|n| n == dev),
                cfg!(feature = "dev-tools"),
                "{dev} in {names:?}"
            );
        }
    }
}
