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

#[cfg(feature = "dev-tools")]
mod bench;
#[cfg(feature = "dev-tools")]
mod child;
mod cli;
mod clients;
pub mod cluster;
#[cfg(feature = "dev-tools")]
mod cluster_pair;
mod config_source;
#[cfg(feature = "dev-tools")]
mod dev;
#[cfg(feature = "dev-tools")]
mod dev_tools;
mod kubelet;
mod logging;
mod ops;
mod rate_limit;
#[cfg(feature = "dev-tools")]
mod setup;
mod shutdown;
mod sidecar;
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
