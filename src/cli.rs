//! Command-line interface.

use std::{path::PathBuf, process::ExitCode};

use clap::{Parser, Subcommand};
use vcsync_syncer::{Config, config::LogFormat};

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
    Dev(DevArgs),
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
    }
}

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
}

/// Parses the command line and runs it; returns the process exit code.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let result = match cli.command {
        Command::Run(args) => {
            let mut config = match args.config {
                Some(path) => match Config::from_file(&path) {
                    Ok(config) => config,
                    Err(err) => return bad_input(&err.to_string()),
                },
                None => Config::new("", ""),
            };
            args.overrides.apply(&mut config);
            if let Err(err) = config.validate() {
                let file = "configuration";
                return bad_input(&format!("{file}: {err}"));
            }
            crate::logging::init(&config.log);
            runtime.block_on(crate::sidecar::run(config))
        }
        Command::Dev(args) => {
            let config = match &args.config {
                Some(path) => match Config::from_file(path) {
                    Ok(config) => Some(config),
                    Err(err) => return bad_input(&err.to_string()),
                },
                None => None,
            };
            crate::logging::init(&vcsync_syncer::config::LogConfig {
                format: LogFormat::Text,
                level: args.log_level.clone(),
            });
            runtime.block_on(crate::dev::run(args, config))
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
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
