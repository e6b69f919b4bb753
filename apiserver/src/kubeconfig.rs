//! The kubeconfig text that points kubectl and kube-rs at a running server.

/// A kubeconfig with one cluster, user and context, all named `name`, served at `url` without
/// credentials (the server does no authentication).
pub(crate) fn render(name: &str, url: &str) -> String {
    // JSON strings are valid YAML scalars, so quoting through serde_json escapes any name safely.
    let name = serde_json::to_string(name).unwrap_or_else(|_| "\"vcsync\"".to_string());
    let url = serde_json::to_string(url).unwrap_or_default();
    format!(
        "apiVersion: v1
kind: Config
clusters:
- name: {name}
  cluster:
    server: {url}
users:
- name: {name}
  user: {{}}
contexts:
- name: {name}
  context:
    cluster: {name}
    user: {name}
    namespace: default
current-context: {name}
preferences: {{}}
"
    )
}

#[cfg(test)]
mod tests {
    #[test]
    fn is_valid_yaml_with_current_context() {
        let text = super::render("host", "http://127.0.0.1:1234");
        let value: serde_json::Value = serde_yaml_ng::from_str(&text).unwrap();
        assert_eq!(value["current-context"], "host");
        assert_eq!(value["clusters"][0]["cluster"]["server"], "http://127.0.0.1:1234");
        assert_eq!(value["contexts"][0]["context"]["user"], "host");
    }
}
