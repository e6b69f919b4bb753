//! Discovery documents: `/version`, `/api`, `/apis`, and the APIResourceList of each group
//! version (`metrics.k8s.io` last, as kube-apiserver orders an aggregated API of its priority).
//! Always the legacy (non-aggregated) format: clients asking for aggregated discovery see a
//! plain `application/json` answer and fall back, as they do against older servers.

use std::net::SocketAddr;

use serde_json::{Value, json};

use crate::kubelet::metrics;
use crate::resources::{Registry, VERBS};

/// The Kubernetes version the server claims to be.
pub(crate) const MAJOR: &str = "1";
/// Minor version, matching the k8s-openapi feature the tests use.
pub(crate) const MINOR: &str = "37";

/// `/version`.
pub(crate) fn version() -> Value {
    json!({
        "major": MAJOR,
        "minor": MINOR,
        "emulationMajor": MAJOR,
        "emulationMinor": MINOR,
        "gitVersion": format!("v{MAJOR}.{MINOR}.0-vcsync"),
        "gitCommit": "0000000000000000000000000000000000000000",
        "gitTreeState": "clean",
        "buildDate": "2026-01-01T00:00:00Z",
        "goVersion": "n/a (vcsync-apiserver, Rust)",
        "compiler": "rustc",
        "platform": format!("{}/{}", std::env::consts::OS, std::env::consts::ARCH),
    })
}

/// `/api`: the core group's versions.
pub(crate) fn core_versions(addr: SocketAddr) -> Value {
    json!({
        "kind": "APIVersions",
        "versions": ["v1"],
        "serverAddressByClientCIDRs": [{ "clientCIDR": "0.0.0.0/0", "serverAddress": addr.to_string() }],
    })
}

/// `/apis`: every named group with its versions.
pub(crate) fn groups(registry: &Registry) -> Value {
    let mut groups: Vec<(String, Vec<String>)> = Vec::new();
    for def in registry.all().filter(|d| !d.group.is_empty()) {
        match groups.iter_mut().find(|(g, _)| *g == def.group) {
            Some((_, versions)) if !versions.contains(&def.version) => versions.push(def.version.clone()),
            Some(_) => {}
            None => groups.push((def.group.clone(), vec![def.version.clone()])),
        }
    }
    let mut groups: Vec<Value> = groups
        .into_iter()
        .map(|(name, versions)| {
            let entries: Vec<Value> = versions
                .iter()
                .map(|v| json!({ "groupVersion": format!("{name}/{v}"), "version": v }))
                .collect();
            json!({ "name": name, "versions": entries, "preferredVersion": entries[0] })
        })
        .collect();
    groups.push(metrics::api_group());
    json!({ "kind": "APIGroupList", "apiVersion": "v1", "groups": groups })
}

/// `/apis/{group}`: one APIGroup.
pub(crate) fn group(registry: &Registry, group: &str) -> Option<Value> {
    let all = groups(registry);
    all["groups"]
        .as_array()?
        .iter()
        .find(|g| g["name"] == group)
        .map(|g| {
            let mut g = g.clone();
            g["kind"] = json!("APIGroup");
            g["apiVersion"] = json!("v1");
            g
        })
}

/// `/api/v1` or `/apis/{group}/{version}`: the APIResourceList.
pub(crate) fn resources(registry: &Registry, group: &str, version: &str) -> Option<Value> {
    if (group, version) == (metrics::GROUP, metrics::VERSION) {
        return Some(metrics::api_resources());
    }
    if !registry.serves(group, version) {
        return None;
    }
    let mut resources = Vec::new();
    for def in registry
        .all()
        .filter(|d| d.group == group && d.version == version)
    {
        let mut main = json!({
            "name": def.plural,
            "singularName": def.singular,
            "namespaced": def.namespaced,
            "kind": def.kind,
            "verbs": if crate::reviews::is_review(&def) { &["create"][..] } else { VERBS },
        });
        if !def.short_names.is_empty() {
            main["shortNames"] = json!(def.short_names);
        }
        if !def.categories.is_empty() {
            main["categories"] = json!(def.categories);
        }
        resources.push(main);
        for sub in &def.subresources {
            // (group, version) is set for subresources whose kind lives in another group.
            let (kind, verbs, other_group): (&str, &[&str], Option<(&str, &str)>) = match sub.as_str() {
                "binding" => ("Binding", &["create"], None),
                "eviction" => ("Eviction", &["create"], Some(("policy", "v1"))),
                "token" => ("TokenRequest", &["create"], Some(("authentication.k8s.io", "v1"))),
                "scale" => ("Scale", &["get", "patch", "update"], None),
                "log" => ("Pod", &["get"], None),
                "exec" => ("PodExecOptions", &["create", "get"], None),
                "attach" => ("PodAttachOptions", &["create", "get"], None),
                "portforward" => ("PodPortForwardOptions", &["create", "get"], None),
                "finalize" => (def.kind.as_str(), &["update"], None),
                _ => (def.kind.as_str(), &["get", "patch", "update"], None),
            };
            let mut entry = json!({
                "name": format!("{}/{sub}", def.plural),
                "singularName": "",
                "namespaced": def.namespaced,
                "kind": kind,
                "verbs": verbs,
            });
            if let Some((group, version)) = other_group {
                entry["group"] = json!(group);
                entry["version"] = json!(version);
            }
            resources.push(entry);
        }
    }
    let group_version = if group.is_empty() {
        version.to_string()
    } else {
        format!("{group}/{version}")
    };
    Some(json!({
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": group_version,
        "resources": resources,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_groups_and_resources() {
        let registry = Registry::builtin();
        let groups = groups(&registry);
        let names: Vec<&str> = groups["groups"]
            .as_array()
            .unwrap()
            .iter()
            .map(|g| g["name"].as_str().unwrap())
            .collect();
        assert_eq!(
            names,
            [
                "coordination.k8s.io",
                "discovery.k8s.io",
                "apps",
                "storage.k8s.io",
                "networking.k8s.io",
                "policy",
                "scheduling.k8s.io",
                "authentication.k8s.io",
                "authorization.k8s.io",
                "apiextensions.k8s.io",
                "metrics.k8s.io"
            ]
        );
        let core = resources(&registry, "", "v1").unwrap();
        let pods_status = core["resources"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["name"] == "pods/status");
        assert!(pods_status.is_some());
        assert!(resources(&registry, "apps", "v2").is_none());
        let metrics = resources(&registry, "metrics.k8s.io", "v1beta1").unwrap();
        assert_eq!(metrics["resources"][1]["kind"], "PodMetrics");
        assert_eq!(group(&registry, "metrics.k8s.io").unwrap()["kind"], "APIGroup");
        assert_eq!(
            group(&registry, "apps").unwrap()["preferredVersion"]["groupVersion"],
            "apps/v1"
        );
    }
}
