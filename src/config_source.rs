//! Reading a `vcsync.yaml`: the configuration, where it came from (for plugins to read their
//! sections with locations), and the check that every plugin section names a plugin of this
//! binary. Shared by `vcsync run` and `vcsync dev`.

use std::sync::Arc;

use vcsync_syncer::{Config, Plugin};

/// Where a configuration came from, for plugins to read their sections with locations.
pub struct ConfigSource {
    /// File name as given.
    pub file: String,
    /// The whole text.
    pub text: String,
}

/// Reads and parses the vcsync.yaml at `path`.
pub fn read_config(path: &std::path::Path) -> Result<(Config, ConfigSource), String> {
    let file = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|err| format!("{file}: cannot read: {err}"))?;
    let config = Config::from_yaml(&text, &file).map_err(|err| err.to_string())?;
    Ok((config, ConfigSource { file, text }))
}

/// Every `plugins:` section must name a plugin of this binary.
pub fn check_plugin_names(
    config: &Config,
    source: &ConfigSource,
    plugins: &[Arc<dyn Plugin>],
) -> Result<(), String> {
    let known: Vec<&str> = plugins.iter().map(|p| p.name()).collect();
    match config.plugins.keys().find(|name| !known.contains(&name.as_str())) {
        Some(name) => Err(format!(
            "{}: plugins.{name}: this binary has no such plugin (it has: {})",
            source.file,
            if known.is_empty() {
                "none".to_string()
            } else {
                known.join(", ")
            }
        )),
        None => Ok(()),
    }
}
