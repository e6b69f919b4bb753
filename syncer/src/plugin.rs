//! Plugins: library crates that extend vcsync through this SDK alone.
//!
//! A plugin has a name, which is also the key of its section in `vcsync.yaml`:
//!
//! ```yaml
//! plugins:
//!   pod-hooks:
//!     enabled: true      # default; `false` switches the plugin off
//!     config:            # the plugin's own type, checked like the rest of the file
//!       labels: {team: a}
//! ```
//!
//! A plugin runs when its section is present and not switched off. Its `config` is
//! deserialized into the plugin's own type from the original file text, so mistakes are
//! reported with file, line and column like every other config error.

use std::{fmt, marker::PhantomData};

use async_trait::async_trait;
use serde::{
    Deserializer,
    de::{DeserializeOwned, DeserializeSeed, IgnoredAny, MapAccess, Visitor},
};

use crate::{RegisterContext, Result, config::ConfigError};

/// A plugin crate's entry point.
#[async_trait]
pub trait Plugin: Send + Sync + 'static {
    /// The plugin's name: the key of its section under `plugins:`.
    fn name(&self) -> &str;

    /// Registers the plugin's syncers, fake syncers, hooks, indices and controllers on `ctx`.
    async fn register(&self, ctx: &RegisterContext, config: &PluginConfig) -> Result<()>;
}

/// One plugin's section of the configuration file, as the plugin receives it.
#[derive(Clone, Debug)]
pub struct PluginConfig {
    name: String,
    file: String,
    text: String,
}

impl PluginConfig {
    /// The section of plugin `name` in the configuration `text` read from `file`.
    pub fn new(name: &str, file: &str, text: &str) -> Self {
        Self {
            name: name.to_string(),
            file: file.to_string(),
            text: text.to_string(),
        }
    }

    /// The plugin's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Whether the section exists and is not switched off with `enabled: false`.
    pub fn is_enabled(&self) -> Result<bool, ConfigError> {
        let enabled: Option<Option<bool>> = self.at(&["plugins", &self.name, "enabled"])?;
        let present: Option<IgnoredAny> = self.at(&["plugins", &self.name])?;
        Ok(present.is_some() && enabled.flatten().unwrap_or(true))
    }

    /// The plugin's `config` deserialized into its own type; the type's default when absent.
    pub fn parse<C: DeserializeOwned + Default>(&self) -> Result<C, ConfigError> {
        Ok(self
            .at::<C>(&["plugins", &self.name, "config"])?
            .unwrap_or_default())
    }

    fn at<T: DeserializeOwned>(&self, path: &[&str]) -> Result<Option<T>, ConfigError> {
        if self.text.trim().is_empty() {
            return Ok(None);
        }
        let deserializer = serde_yaml_ng::Deserializer::from_str(&self.text);
        PathSeed::<T> {
            path,
            found: PhantomData,
        }
        .deserialize(deserializer)
        .map_err(|err| ConfigError {
            file: self.file.clone(),
            location: err.location().map(|l| (l.line(), l.column())),
            message: crate::config::strip_location(&err.to_string()),
        })
    }
}

/// Walks nested maps along `path` and deserializes what it finds there, from the original
/// deserializer so that error locations point into the file.
struct PathSeed<'a, T> {
    path: &'a [&'a str],
    found: PhantomData<T>,
}

impl<'de, T: DeserializeOwned> DeserializeSeed<'de> for PathSeed<'_, T> {
    type Value = Option<T>;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Option<T>, D::Error> {
        match self.path.split_first() {
            None => T::deserialize(deserializer).map(Some),
            Some(_) => deserializer.deserialize_any(self),
        }
    }
}

impl<'de, T: DeserializeOwned> Visitor<'de> for PathSeed<'_, T> {
    type Value = Option<T>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "a map with key {:?}",
            self.path.first().copied().unwrap_or_default()
        )
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Option<T>, A::Error> {
        let (key, rest) = self
            .path
            .split_first()
            .expect("visited only with a non-empty path");
        let mut found = None;
        while let Some(candidate) = map.next_key::<String>()? {
            if candidate == *key {
                found = map.next_value_seed(PathSeed::<T> {
                    path: rest,
                    found: PhantomData,
                })?;
            } else {
                map.next_value::<IgnoredAny>()?;
            }
        }
        Ok(found)
    }

    /// A null (`plugins:` with nothing under it) holds nothing.
    fn visit_unit<E: serde::de::Error>(self) -> Result<Option<T>, E> {
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use serde::Deserialize;

    use super::*;

    #[derive(Debug, Default, Deserialize, PartialEq)]
    #[serde(deny_unknown_fields)]
    struct Labels {
        labels: BTreeMap<String, String>,
    }

    const FILE: &str = "instance: a\nhostNamespace: b\nplugins:\n  pod-hooks:\n    config:\n      labels:\n        team: x\n  \
                        off:\n    enabled: false\n";

    #[test]
    fn a_plugin_reads_its_own_section() {
        let config = PluginConfig::new("pod-hooks", "f.yaml", FILE);
        assert!(config.is_enabled().unwrap());
        assert_eq!(config.parse::<Labels>().unwrap().labels["team"], "x");
    }

    #[test]
    fn absent_or_switched_off_plugins_are_not_enabled() {
        assert!(!PluginConfig::new("off", "f.yaml", FILE).is_enabled().unwrap());
        assert!(!PluginConfig::new("other", "f.yaml", FILE).is_enabled().unwrap());
        assert_eq!(
            PluginConfig::new("other", "f.yaml", FILE)
                .parse::<Labels>()
                .unwrap(),
            Labels::default()
        );
    }

    #[test]
    fn mistakes_in_a_plugin_section_point_into_the_file() {
        let text = "plugins:\n  pod-hooks:\n    config:\n      lables: {}\n";
        let err = PluginConfig::new("pod-hooks", "f.yaml", text)
            .parse::<Labels>()
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("f.yaml:4:7: plugins.pod-hooks.config: unknown field `lables`"),
            "{err}"
        );
    }
}
