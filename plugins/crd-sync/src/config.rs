//! The plugin's section of `vcsync.yaml`.

use serde::Deserialize;

/// Name of the plugin and of its configuration section.
pub const NAME: &str = "crd-sync";

/// `plugins: crd-sync: config:`.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct CrdSyncConfig {
    /// The custom resource types to sync.
    #[serde(default)]
    pub resources: Vec<ResourceConfig>,
}

/// One custom resource type.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ResourceConfig {
    /// API group, e.g. `example.com`.
    pub group: String,
    /// Version, e.g. `v1`.
    pub version: String,
    /// Kind, e.g. `Widget`.
    pub kind: String,
    /// Plural; from the CRD when absent.
    #[serde(default)]
    pub plural: Option<String>,
    /// Which way objects flow.
    #[serde(default)]
    pub direction: Direction,
    /// Where the CRD put into the virtual cluster comes from.
    #[serde(default)]
    pub crd_source: CrdSource,
    /// The CRD manifest (YAML or JSON) when `crdSource: file`.
    #[serde(default)]
    pub crd_file: Option<String>,
    /// toHost: copy the host object's status up to the virtual one.
    #[serde(default = "yes")]
    pub status_up: bool,
    /// fromHost, namespaced kinds: the virtual namespace mirrors land in; the objects mirrored
    /// are those of its host namespace under the namespace mapping (`hostNamespace` in the
    /// single mapping, `<instance>-x-<virtualNamespace>` in the per-namespace mapping).
    #[serde(default = "default_namespace")]
    pub virtual_namespace: String,
    /// Fields naming other synced objects, translated like those objects' names.
    #[serde(default)]
    pub references: Vec<ReferenceConfig>,
}

/// A field holding the name of another synced object.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ReferenceConfig {
    /// Dot-separated path; a segment ending in `[]` walks every element of an array.
    pub path: String,
    /// Kind of the referenced object (documentation and logs).
    pub kind: String,
}

/// Which way objects flow.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub enum Direction {
    /// Tenants create objects; translated copies run on the host, status comes back up.
    #[default]
    ToHost,
    /// The host's objects are shown read-only in the virtual cluster.
    FromHost,
}

/// Where the CRD comes from.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub enum CrdSource {
    /// Copied from the host cluster.
    #[default]
    Host,
    /// Read from `crdFile`.
    File,
}

fn yes() -> bool {
    true
}

fn default_namespace() -> String {
    "default".to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use vcsync_syncer::PluginConfig;

    #[test]
    fn defaults_and_full_section() {
        let text = "plugins:\n  crd-sync:\n    config:\n      resources:\n      - group: example.com\n        version: v1\n        kind: Widget\n        references:\n        - path: spec.configMapName\n          kind: ConfigMap\n";
        let config: CrdSyncConfig = PluginConfig::new("crd-sync", "f.yaml", text).parse().unwrap();
        let r = &config.resources[0];
        assert_eq!(r.direction, Direction::ToHost);
        assert_eq!(r.crd_source, CrdSource::Host);
        assert!(r.status_up && r.plural.is_none());
        assert_eq!(r.references[0].path, "spec.configMapName");
    }

    #[test]
    fn unknown_fields_point_into_the_file() {
        let text = "plugins:\n  crd-sync:\n    config:\n      resources:\n      - group: g\n        version: v1\n        kind: K\n        directon: toHost\n";
        let err = PluginConfig::new("crd-sync", "f.yaml", text)
            .parse::<CrdSyncConfig>()
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("f.yaml:8:9:"), "{err}");
    }
}
