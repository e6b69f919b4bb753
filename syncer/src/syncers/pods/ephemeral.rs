//! Ephemeral containers (`kubectl debug`): added to a running virtual pod through its
//! `ephemeralcontainers` subresource, they reach the host pod the same way, translated like
//! the pod's other containers (their config map and secret references renamed), once the host
//! pod exists. A pod cannot be created with them and they are never removed, so the host pod
//! only ever gains the ones it lacks, by name.

use k8s_openapi::api::core::v1::{EphemeralContainer, Pod};

/// The host pod with the ephemeral containers of `translated` it lacks added, or None when it
/// has them all (no write). `translated` are the virtual pod's, translated for the host.
pub fn with_added(host: &Pod, translated: &[EphemeralContainer]) -> Option<Pod> {
    let present = host
        .spec
        .as_ref()
        .and_then(|s| s.ephemeral_containers.as_deref())
        .unwrap_or_default();
    let missing: Vec<EphemeralContainer> = translated
        .iter()
        .filter(|c| !present.iter().any(|p| p.name == c.name))
        .cloned()
        .collect();
    if missing.is_empty() {
        return None;
    }
    let mut updated = host.clone();
    let spec = updated.spec.get_or_insert_with(Default::default);
    spec.ephemeral_containers
        .get_or_insert_with(Vec::new)
        .extend(missing);
    Some(updated)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn pod(ephemeral: &[&str]) -> Pod {
        let containers: Vec<_> = ephemeral
            .iter()
            .map(|n| json!({"name": n, "image": "busybox"}))
            .collect();
        serde_json::from_value(json!({
            "metadata": {"name": "web-x-shop", "resourceVersion": "7"},
            "spec": {"containers": [{"name": "app"}], "ephemeralContainers": containers}
        }))
        .unwrap()
    }

    fn containers(names: &[&str]) -> Vec<EphemeralContainer> {
        pod(names).spec.unwrap().ephemeral_containers.unwrap()
    }

    #[test]
    fn only_missing_ephemeral_containers_are_added_to_the_host_pod() {
        let host = pod(&["debug-1"]);
        assert_eq!(with_added(&host, &containers(&["debug-1"])), None);
        assert_eq!(with_added(&host, &[]), None);
        let updated = with_added(&host, &containers(&["debug-1", "debug-2"])).unwrap();
        let names: Vec<_> = updated
            .spec
            .as_ref()
            .unwrap()
            .ephemeral_containers
            .iter()
            .flatten()
            .map(|c| c.name.as_str())
            .collect();
        assert_eq!(names, ["debug-1", "debug-2"]);
        assert_eq!(
            updated.metadata.resource_version.as_deref(),
            Some("7"),
            "a write against what was read"
        );
        let bare: Pod =
            serde_json::from_value(json!({"metadata": {"name": "p"}, "spec": {"containers": []}})).unwrap();
        assert_eq!(
            with_added(&bare, &containers(&["d"]))
                .unwrap()
                .spec
                .unwrap()
                .ephemeral_containers
                .unwrap()
                .len(),
            1
        );
    }
}
