//! Log output: text for people, JSON for pipelines; `RUST_LOG` wins over the config level.

use tracing_subscriber::EnvFilter;
use vcsync_syncer::config::{LogConfig, LogFormat};

/// Installs the global subscriber, writing to stderr; colours only on a terminal and without
/// `NO_COLOR`, so log files and pipelines get plain text.
pub fn init(config: &LogConfig) {
    use std::io::IsTerminal;
    let colour = std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none();
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(&config.level));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(colour);
    match config.format {
        LogFormat::Json => builder.json().flatten_event(true).with_current_span(true).init(),
        LogFormat::Text => builder.init(),
    }
}
