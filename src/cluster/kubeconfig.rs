//! A virtual cluster's kubeconfig merged into a user's kubeconfig file as one context
//! (`vcsync cluster connect --update-current`), the way `kubectl config` edits it: entries of
//! the same name are replaced, everything else is kept as it was; and clients from one.

use std::path::{Path, PathBuf};

use anyhow::Context;
use serde_yaml_ng::{Mapping, Value};

use super::Result;

/// A client of the cluster a kubeconfig's text describes (its current context).
pub async fn client_of(kubeconfig: &str) -> Result<kube::Client> {
    let parsed = kube::config::Kubeconfig::from_yaml(kubeconfig).context("the cluster's kubeconfig")?;
    let config = kube::Config::from_custom_kubeconfig(parsed, &Default::default())
        .await
        .context("the cluster's kubeconfig")?;
    Ok(kube::Client::try_from(config).context("a client of the cluster")?)
}

/// Whether `kubeconfig`'s (first) server is an address only the cluster's host resolves: a
/// Service's in-cluster name (`<service>.<namespace>.svc[.cluster.local]`).
pub fn only_inside_its_host(kubeconfig: &str) -> bool {
    first_cluster(kubeconfig)
        .ok()
        .and_then(|(uri, _)| uri.host().map(str::to_string))
        .is_some_and(|host| host.ends_with(".svc") || host.contains(".svc."))
}

/// The server of `kubeconfig`'s first cluster, and whether that cluster names a
/// `tls-server-name`.
fn first_cluster(kubeconfig: &str) -> Result<(http::Uri, bool)> {
    let value: Value = serde_yaml_ng::from_str(kubeconfig).context("the cluster's kubeconfig")?;
    let cluster = &value["clusters"][0]["cluster"];
    let server = cluster["server"]
        .as_str()
        .context("the cluster's kubeconfig has no server")?;
    let uri = server.parse().context("the kubeconfig's server")?;
    Ok((uri, cluster["tls-server-name"].as_str().is_some()))
}

/// `kubeconfig` pointed at `127.0.0.1:port` (a port-forward to its server), the server's
/// certificate still checked against the name it was published with.
pub fn through_local_port(kubeconfig: &str, port: u16) -> Result<String> {
    let (uri, named) = first_cluster(kubeconfig)?;
    let scheme = uri.scheme_str().unwrap_or("https");
    let name = uri.host().filter(|_| scheme == "https" && !named);
    super::common::replace_server(kubeconfig, &format!("{scheme}://127.0.0.1:{port}"), name)
}

/// The name of cluster `name`'s context (and of its cluster and user entries).
pub fn context_name(name: &str) -> String {
    format!("vcsync-{name}")
}

/// The kubeconfig file `--update-current` writes: `--kube-config`, else the first file of
/// `KUBECONFIG`, else `~/.kube/config`.
pub fn target_file(explicit: Option<&Path>) -> Result<PathBuf> {
    if let Some(path) = explicit {
        return Ok(path.to_path_buf());
    }
    if let Some(first) = std::env::var_os("KUBECONFIG")
        .as_deref()
        .and_then(|list| std::env::split_paths(list).find(|p| !p.as_os_str().is_empty()))
    {
        return Ok(first);
    }
    let home = std::env::var_os("HOME").context("no --kube-config, KUBECONFIG or HOME")?;
    Ok(PathBuf::from(home).join(".kube/config"))
}

/// `existing` (a kubeconfig file's text, empty for a new file) with the first cluster and user
/// of `cluster_kubeconfig` added under `context`, and that context made current.
pub fn merge(existing: &str, cluster_kubeconfig: &str, context: &str) -> Result<String> {
    let source: Value = serde_yaml_ng::from_str(cluster_kubeconfig).context("the cluster's kubeconfig")?;
    let first = |list: &str, field: &str| -> Result<Value> {
        let value = source[list][0][field].clone();
        if value.is_null() {
            return Err(anyhow::anyhow!("the cluster's kubeconfig has no {list}").into());
        }
        Ok(value)
    };
    let (cluster, user) = (first("clusters", "cluster")?, first("users", "user")?);
    let mut target: Value = if existing.trim().is_empty() {
        Value::Mapping(Mapping::new())
    } else {
        serde_yaml_ng::from_str(existing).context("the kubeconfig file")?
    };
    let map = target
        .as_mapping_mut()
        .context("the kubeconfig file is not a mapping")?;
    map.entry("apiVersion".into()).or_insert("v1".into());
    map.entry("kind".into()).or_insert("Config".into());
    let entry = |field: &str, body: Value| {
        let mut entry = Mapping::new();
        entry.insert("name".into(), context.into());
        entry.insert(field.into(), body);
        Value::Mapping(entry)
    };
    let mut context_body = Mapping::new();
    context_body.insert("cluster".into(), context.into());
    context_body.insert("user".into(), context.into());
    for (list, field, body) in [
        ("clusters", "cluster", cluster),
        ("users", "user", user),
        ("contexts", "context", Value::Mapping(context_body)),
    ] {
        let entries = map.entry(list.into()).or_insert(Value::Sequence(Vec::new()));
        if entries.is_null() {
            *entries = Value::Sequence(Vec::new());
        }
        let entries = entries
            .as_sequence_mut()
            .with_context(|| format!("{list} in the kubeconfig file is not a list"))?;
        entries.retain(|e| e["name"].as_str() != Some(context));
        entries.push(entry(field, body));
    }
    map.insert("current-context".into(), context.into());
    Ok(serde_yaml_ng::to_string(&target).context("kubeconfig")?)
}

/// `kubeconfig` with every user's credentials replaced by `token` (a service account's).
pub fn with_token(kubeconfig: &str, token: &str) -> Result<String> {
    let mut value: Value = serde_yaml_ng::from_str(kubeconfig).context("the cluster's kubeconfig")?;
    let users = value
        .get_mut("users")
        .and_then(Value::as_sequence_mut)
        .filter(|users| !users.is_empty())
        .context("the cluster's kubeconfig has no users")?;
    for user in users {
        let mut credentials = Mapping::new();
        credentials.insert("token".into(), token.into());
        user["user"] = Value::Mapping(credentials);
    }
    Ok(serde_yaml_ng::to_string(&value).context("kubeconfig")?)
}

#[cfg(test)]
mod tests {
    use super::*;

    const CLUSTER: &str = "apiVersion: v1\nkind: Config\nclusters:\n- name: default\n  cluster:\n    \
        server: https://10.0.0.1:443\n    certificate-authority-data: Q0E=\nusers:\n- name: default\n  user:\n    \
        client-certificate-data: Q0VSVA==\ncontexts:\n- name: default\n  context: {cluster: default, user: default}\n\
        current-context: default\n";

    #[test]
    fn a_new_file_gets_one_context_made_current() {
        let merged = merge("", CLUSTER, "vcsync-demo").unwrap();
        let config = kube::config::Kubeconfig::from_yaml(&merged).unwrap();
        assert_eq!(config.current_context.as_deref(), Some("vcsync-demo"));
        assert_eq!(config.clusters.len(), 1);
        let cluster = config.clusters[0].cluster.clone().unwrap();
        assert_eq!(cluster.server.as_deref(), Some("https://10.0.0.1:443"));
        assert_eq!(
            config.contexts[0].context.as_ref().unwrap().user.as_deref(),
            Some("vcsync-demo")
        );
    }

    #[test]
    fn other_entries_are_kept_and_the_clusters_own_are_replaced() {
        let existing = "apiVersion: v1\nkind: Config\npreferences: {colors: true}\nclusters:\n- name: prod\n  cluster: {server: https://prod}\n\
            - name: vcsync-demo\n  cluster: {server: https://old}\nusers:\n- name: prod\n  user: {token: t}\n\
            contexts:\n- name: prod\n  context: {cluster: prod, user: prod}\ncurrent-context: prod\n";
        let merged = merge(existing, CLUSTER, "vcsync-demo").unwrap();
        let config = kube::config::Kubeconfig::from_yaml(&merged).unwrap();
        let names: Vec<&str> = config.clusters.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, ["prod", "vcsync-demo"]);
        let demo = config.clusters.iter().find(|c| c.name == "vcsync-demo").unwrap();
        assert_eq!(
            demo.cluster.as_ref().unwrap().server.as_deref(),
            Some("https://10.0.0.1:443")
        );
        assert_eq!(config.auth_infos.len(), 2);
        assert_eq!(config.current_context.as_deref(), Some("vcsync-demo"));
        assert!(merged.contains("colors: true"), "{merged}");
        assert!(merge("- a list\n", CLUSTER, "vcsync-demo").is_err());
        assert!(merge("", "clusters: []\n", "vcsync-demo").is_err());
    }

    #[test]
    fn a_service_accounts_token_replaces_the_admin_certificate() {
        let text = with_token(CLUSTER, "eyJ.token").unwrap();
        kube::config::Kubeconfig::from_yaml(&text).unwrap();
        let value: Value = serde_yaml_ng::from_str(&text).unwrap();
        let user = &value["users"][0]["user"];
        assert_eq!(user["token"].as_str(), Some("eyJ.token"));
        assert!(
            user.get("client-certificate-data").is_none(),
            "the admin's certificate is gone"
        );
        assert_eq!(
            value["clusters"][0]["cluster"]["server"].as_str(),
            Some("https://10.0.0.1:443")
        );
        assert!(with_token("users: []\n", "t").is_err());
    }
}

#[cfg(test)]
mod forward_tests {
    use super::*;

    const PUBLISHED: &str = "apiVersion: v1\nkind: Config\nclusters:\n- name: default\n  cluster:\n    \
        server: https://vcsync-demo.vcsync-demo.svc:443\n    certificate-authority-data: Q0E=\n\
        users: []\ncontexts: []\n";

    #[test]
    fn an_in_cluster_server_goes_through_the_local_port_with_its_name_checked() {
        assert!(only_inside_its_host(PUBLISHED));
        assert!(only_inside_its_host(
            &PUBLISHED.replace(".svc:443", ".svc.cluster.local:443")
        ));
        assert!(!only_inside_its_host(
            &PUBLISHED.replace("vcsync-demo.vcsync-demo.svc", "203.0.113.7")
        ));
        assert!(!only_inside_its_host(
            &PUBLISHED.replace("vcsync-demo.vcsync-demo.svc", "api.example.com")
        ));
        let local = through_local_port(PUBLISHED, 41234).unwrap();
        let value: Value = serde_yaml_ng::from_str(&local).unwrap();
        let cluster = &value["clusters"][0]["cluster"];
        assert_eq!(cluster["server"].as_str(), Some("https://127.0.0.1:41234"));
        assert_eq!(
            cluster["tls-server-name"].as_str(),
            Some("vcsync-demo.vcsync-demo.svc")
        );
        assert_eq!(cluster["certificate-authority-data"].as_str(), Some("Q0E="));
        let plain = through_local_port(&PUBLISHED.replace("https://", "http://"), 80).unwrap();
        let value: Value = serde_yaml_ng::from_str(&plain).unwrap();
        assert_eq!(
            value["clusters"][0]["cluster"]["server"].as_str(),
            Some("http://127.0.0.1:80")
        );
        assert!(value["clusters"][0]["cluster"]["tls-server-name"].is_null());
    }
}
