//! The `vcsync` command as a library, so that a custom binary is vcsync's main plus a list of
//! plugins:
//!
//! ```no_run
//! fn main() -> std::process::ExitCode {
//!     let mut plugins = vcsync::builtin_plugins();
//!     // plugins.push(std::sync::Arc::new(my_plugin::MyPlugin));
//!     vcsync::main_with_plugins(plugins)
//! }
//! ```
#![forbid(unsafe_code)]

// The product: `run` (the sidecar), `rbac`, `cluster` with the kubernetes driver.
mod cli;
mod clients;
pub mod cluster;
mod config_source;
mod kubelet;
mod logging;
mod ops;
mod pushback;
mod rate_limit;
mod shutdown;
mod sidecar;

// The development tools (`dev`, `bench`, `soak`, the `local` cluster driver in `cluster`), with
// the embedded API server and the real control planes they run on: the `dev-tools` feature.
#[cfg(feature = "dev-tools")]
mod bench;
#[cfg(feature = "dev-tools")]
mod child;
#[cfg(feature = "dev-tools")]
mod cluster_pair;
#[cfg(feature = "dev-tools")]
mod dev;
#[cfg(feature = "dev-tools")]
mod dev_tools;
#[cfg(feature = "dev-tools")]
mod setup;
#[cfg(feature = "dev-tools")]
mod soak;
#[cfg(feature = "dev-tools")]
mod watch_events;

use std::{process::ExitCode, sync::Arc};

use vcsync_syncer::Plugin;

/// The plugins of the stock `vcsync` binary; each runs only when its section of `vcsync.yaml`
/// is present and not switched off.
/// (`vcsync_plugin_template` is an example to copy, not a built-in.)
pub fn builtin_plugins() -> Vec<Arc<dyn Plugin>> {
    vec![
        Arc::new(vcsync_plugin_pod_hooks::PodHooksPlugin),
        Arc::new(vcsync_plugin_import_secrets::ImportSecretsPlugin),
        Arc::new(vcsync_plugin_crd_sync::CrdSyncPlugin),
    ]
}

/// Parses the command line and runs it with `plugins`; returns the process exit code.
pub fn main_with_plugins(plugins: Vec<Arc<dyn Plugin>>) -> ExitCode {
    cli::main(plugins)
}
