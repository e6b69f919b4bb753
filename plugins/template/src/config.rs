//! The plugin's section of `vcsync.yaml`, `plugins.template.config`.

use serde::Deserialize;

/// The plugin's `config`: its own type, checked with file:line:col errors like the rest of
/// `vcsync.yaml` (an unknown field is refused).
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TemplateConfig {
    /// Annotation key stamped on host objects.
    pub annotation: String,
    /// Kinds (`ConfigMap`, `Pod`, ...) whose host objects get it.
    #[serde(default = "default_kinds")]
    pub kinds: Vec<String>,
}

fn default_kinds() -> Vec<String> {
    vec!["ConfigMap".into()]
}

impl Default for TemplateConfig {
    fn default() -> Self {
        Self {
            annotation: "example.com/synced-by".into(),
            kinds: default_kinds(),
        }
    }
}
