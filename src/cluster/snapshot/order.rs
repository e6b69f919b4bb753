//! The order a restore creates objects in, pure.
//!
//! Hard rules: a CustomResourceDefinition before its custom resources, a namespace before what
//! lives in it, and an owned object before its owners. The last one is what a controller needs
//! to take a restored object over instead of making a new one: a ReplicaSet restored before its
//! pods would create fresh pods at once, while one restored after them adopts them (the owner
//! references are written afterwards for servers without controllers). Between objects the rules
//! leave free, kinds go in the order a workload needs them (accounts, Secrets and ConfigMaps
//! before the pods that mount them), then by the archive's order.

use std::{
    cmp::Reverse,
    collections::{BinaryHeap, HashMap},
};

use super::archive::Entry;

/// Where `entry`'s kind goes among the kinds the rules leave free; lower first.
fn rank(entry: &Entry) -> u8 {
    let resource = &entry.resource;
    match (resource.group.as_str(), resource.kind.as_str()) {
        ("apiextensions.k8s.io", "CustomResourceDefinition") => 0,
        ("", "Namespace") => 1,
        (_, "StorageClass" | "PriorityClass" | "RuntimeClass" | "IngressClass") => 2,
        ("rbac.authorization.k8s.io", "ClusterRole") => 3,
        ("rbac.authorization.k8s.io", "ClusterRoleBinding") => 4,
        ("", "PersistentVolume") => 5,
        ("", "ServiceAccount") => 6,
        ("rbac.authorization.k8s.io", "Role") => 7,
        ("rbac.authorization.k8s.io", "RoleBinding") => 8,
        ("", "Secret") => 9,
        ("", "ConfigMap") => 10,
        ("", "LimitRange" | "ResourceQuota") => 11,
        ("", "PersistentVolumeClaim") => 12,
        ("", "Service" | "Endpoints") | ("discovery.k8s.io", _) => 13,
        ("", "Pod") => 14,
        ("apps", "ReplicaSet" | "ControllerRevision") | ("", "ReplicationController") => 15,
        ("apps", _) => 16,
        ("batch", "Job") => 17,
        ("batch", _) => 18,
        (group, _) if group.is_empty() || group.ends_with(".k8s.io") => 19,
        _ => 20,
    }
}

/// Indices of `entries` in the order to create them.
pub fn restore_order(entries: &[Entry]) -> Vec<usize> {
    let n = entries.len();
    let mut after: Vec<Vec<usize>> = vec![Vec::new(); n];
    let mut before_count = vec![0usize; n];
    let mut edge = |first: usize, then: usize| {
        if first != then {
            after[first].push(then);
            before_count[then] += 1;
        }
    };
    let namespaces: HashMap<&str, usize> = index_of(entries, |e| {
        (e.resource.group.is_empty() && e.resource.kind == "Namespace").then(|| e.name())
    });
    let definitions: HashMap<(&str, &str), usize> = entries
        .iter()
        .enumerate()
        .filter(|(_, e)| e.resource.kind == "CustomResourceDefinition")
        .filter_map(|(i, e)| {
            let spec = &e.object["spec"];
            Some(((spec["group"].as_str()?, spec["names"]["plural"].as_str()?), i))
        })
        .collect();
    let uids: HashMap<&str, usize> = index_of(entries, Entry::uid);
    for (i, entry) in entries.iter().enumerate() {
        if let Some(&ns) = entry.namespace().and_then(|ns| namespaces.get(ns)) {
            edge(ns, i);
        }
        let served_as = (entry.resource.group.as_str(), entry.resource.plural.as_str());
        if let Some(&crd) = definitions.get(&served_as) {
            edge(crd, i);
        }
        for owner in owner_uids(entry) {
            if let Some(&owner) = uids.get(owner) {
                edge(i, owner);
            }
        }
    }
    let key = |i: usize| Reverse((rank(&entries[i]), i));
    let mut ready: BinaryHeap<_> = (0..n).filter(|&i| before_count[i] == 0).map(key).collect();
    let mut placed = vec![false; n];
    let mut order = Vec::with_capacity(n);
    while order.len() < n {
        let next = match ready.pop() {
            Some(Reverse((_, i))) if !placed[i] => i,
            Some(_) => continue,
            // A cycle (owners owning each other): break it at the first kind in rank.
            None => (0..n)
                .filter(|&i| !placed[i])
                .min_by_key(|&i| (rank(&entries[i]), i))
                .expect("unplaced"),
        };
        placed[next] = true;
        order.push(next);
        for &then in &after[next] {
            before_count[then] -= 1;
            if before_count[then] == 0 && !placed[then] {
                ready.push(key(then));
            }
        }
    }
    order
}

fn index_of<'a>(entries: &'a [Entry], key: impl Fn(&'a Entry) -> Option<&'a str>) -> HashMap<&'a str, usize> {
    entries
        .iter()
        .enumerate()
        .filter_map(|(i, e)| Some((key(e)?, i)))
        .collect()
}

/// The UIDs `entry`'s owner references name.
pub fn owner_uids(entry: &Entry) -> impl Iterator<Item = &str> {
    entry.object["metadata"]["ownerReferences"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|owner| owner["uid"].as_str())
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use super::*;
    use crate::cluster::snapshot::archive::Resource;

    fn entry(group: &str, kind: &str, plural: &str, metadata: Value, spec: Value) -> Entry {
        Entry {
            resource: Resource {
                group: group.into(),
                version: "v1".into(),
                kind: kind.into(),
                plural: plural.into(),
                namespaced: metadata.get("namespace").is_some(),
            },
            object: json!({"metadata": metadata, "spec": spec}),
        }
    }

    fn names(entries: &[Entry]) -> Vec<String> {
        restore_order(entries)
            .into_iter()
            .map(|i| format!("{}/{}", entries[i].resource.kind, entries[i].name()))
            .collect()
    }

    #[test]
    fn definitions_and_namespaces_come_first_owned_objects_before_owners() {
        let owned_by = |uid: &str| json!([{"apiVersion": "apps/v1", "kind": "X", "name": "x", "uid": uid}]);
        let entries = vec![
            entry(
                "apps",
                "Deployment",
                "deployments",
                json!({"name": "web", "namespace": "shop", "uid": "d"}),
                json!({}),
            ),
            entry(
                "example.com",
                "Widget",
                "widgets",
                json!({"name": "w", "namespace": "shop", "uid": "w"}),
                json!({}),
            ),
            entry(
                "apps",
                "ReplicaSet",
                "replicasets",
                json!({"name": "web-1", "namespace": "shop", "uid": "rs", "ownerReferences": owned_by("d")}),
                json!({}),
            ),
            entry(
                "",
                "Pod",
                "pods",
                json!({"name": "web-1-a", "namespace": "shop", "uid": "p", "ownerReferences": owned_by("rs")}),
                json!({}),
            ),
            entry(
                "",
                "ConfigMap",
                "configmaps",
                json!({"name": "conf", "namespace": "shop", "uid": "c"}),
                json!({}),
            ),
            entry(
                "",
                "ServiceAccount",
                "serviceaccounts",
                json!({"name": "app", "namespace": "shop", "uid": "sa"}),
                json!({}),
            ),
            entry(
                "",
                "Namespace",
                "namespaces",
                json!({"name": "shop", "uid": "ns"}),
                json!({}),
            ),
            entry(
                "apiextensions.k8s.io",
                "CustomResourceDefinition",
                "customresourcedefinitions",
                json!({"name": "widgets.example.com", "uid": "crd"}),
                json!({"group": "example.com", "names": {"plural": "widgets"}}),
            ),
        ];
        assert_eq!(
            names(&entries),
            [
                "CustomResourceDefinition/widgets.example.com",
                "Namespace/shop",
                "ServiceAccount/app",
                "ConfigMap/conf",
                "Pod/web-1-a",
                "ReplicaSet/web-1",
                "Deployment/web",
                "Widget/w",
            ]
        );
    }

    #[test]
    fn an_owner_of_an_earlier_rank_still_follows_what_it_owns_and_cycles_do_not_hang() {
        let entries = vec![
            entry(
                "",
                "ConfigMap",
                "configmaps",
                json!({"name": "owner", "namespace": "a", "uid": "o"}),
                json!({}),
            ),
            entry(
                "example.com",
                "Widget",
                "widgets",
                json!({"name": "owned", "namespace": "a", "uid": "w", "ownerReferences": [{"uid": "o"}]}),
                json!({}),
            ),
        ];
        assert_eq!(names(&entries), ["Widget/owned", "ConfigMap/owner"]);

        let cycle = vec![
            entry(
                "",
                "ConfigMap",
                "configmaps",
                json!({"name": "a", "namespace": "n", "uid": "a", "ownerReferences": [{"uid": "b"}]}),
                json!({}),
            ),
            entry(
                "",
                "Secret",
                "secrets",
                json!({"name": "b", "namespace": "n", "uid": "b", "ownerReferences": [{"uid": "a"}]}),
                json!({}),
            ),
        ];
        assert_eq!(names(&cycle), ["Secret/b", "ConfigMap/a"]);
    }
}
