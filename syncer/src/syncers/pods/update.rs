//! Changes of a virtual pod that reach an existing host pod.
//!
//! Most of a pod is immutable once created; what the API allows to change, and what follows
//! the virtual pod, is: container and init-container images, `activeDeadlineSeconds`, added
//! tolerations, removed scheduling gates, labels and annotations. Labels and annotations that
//! host components add (a CNI's annotations, say) are kept: only the keys vcsync copied (listed
//! in [`MANAGED_LABELS`] / [`MANAGED_ANNOTATIONS`]) and vcsync's own are rewritten.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::core::v1::{Pod, PodSpec, Toleration};
use vcsync_translators::is_reserved_key;

use super::translate::{MANAGED_ANNOTATIONS, MANAGED_LABELS, MutableFields};

/// The host pod updated to `desired`, or None when `observed` already matches (no write).
/// Runs on every reconcile of a synced pod, so it decides from the fields alone and copies
/// the pod only when something changes.
pub fn host_update(observed: &Pod, desired: &MutableFields) -> Option<Pod> {
    let managed = |key: &str| -> BTreeSet<String> {
        observed
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(key))
            .into_iter()
            .flat_map(|list| list.split(','))
            .filter(|k| !k.is_empty())
            .map(str::to_string)
            .collect()
    };
    let labels = merge_managed(
        observed.metadata.labels.as_ref(),
        &desired.labels,
        &managed(MANAGED_LABELS),
    );
    let annotations = merge_managed(
        observed.metadata.annotations.as_ref(),
        &desired.annotations,
        &managed(MANAGED_ANNOTATIONS),
    );
    // "No labels" and an empty map are the same.
    let same = |merged: &BTreeMap<String, String>, observed: Option<&BTreeMap<String, String>>| {
        observed.map_or(merged.is_empty(), |o| o == merged)
    };
    let default_spec = PodSpec::default();
    let spec = observed.spec.as_ref().unwrap_or(&default_spec);
    let images_differ = spec
        .containers
        .iter()
        .chain(spec.init_containers.iter().flatten())
        .any(|c| {
            desired
                .images
                .get(&c.name)
                .is_some_and(|image| c.image.as_ref() != Some(image))
        });
    let deadline_differs = desired.active_deadline_seconds.is_some()
        && spec.active_deadline_seconds != desired.active_deadline_seconds;
    let missing: Vec<Toleration> = desired
        .tolerations
        .iter()
        .filter(|t| !spec.tolerations.iter().flatten().any(|o| o == *t))
        .cloned()
        .collect();
    let gates_removed = spec
        .scheduling_gates
        .iter()
        .flatten()
        .any(|g| !desired.scheduling_gates.contains(g));
    if same(&labels, observed.metadata.labels.as_ref())
        && same(&annotations, observed.metadata.annotations.as_ref())
        && !images_differ
        && !deadline_differs
        && missing.is_empty()
        && !gates_removed
    {
        return None;
    }

    let mut updated = observed.clone();
    updated.metadata.labels = Some(labels);
    updated.metadata.annotations = Some(annotations);
    let spec = updated.spec.get_or_insert_default();
    for container in spec
        .containers
        .iter_mut()
        .chain(spec.init_containers.iter_mut().flatten())
    {
        if let Some(image) = desired.images.get(&container.name) {
            container.image = Some(image.clone());
        }
    }
    if desired.active_deadline_seconds.is_some() {
        spec.active_deadline_seconds = desired.active_deadline_seconds;
    }
    if !missing.is_empty() {
        spec.tolerations.get_or_insert_default().extend(missing);
    }
    if let Some(gates) = spec.scheduling_gates.as_mut() {
        gates.retain(|g| desired.scheduling_gates.contains(g));
        if gates.is_empty() {
            spec.scheduling_gates = None;
        }
    }
    Some(updated)
}

/// `observed` with the keys vcsync manages replaced by `desired`: host-added keys stay, keys
/// vcsync copied before but no longer wants go, vcsync's own keys are exactly the desired ones.
fn merge_managed(
    observed: Option<&BTreeMap<String, String>>,
    desired: &BTreeMap<String, String>,
    previously_managed: &BTreeSet<String>,
) -> BTreeMap<String, String> {
    let mut merged: BTreeMap<String, String> = observed
        .into_iter()
        .flatten()
        .filter(|(k, _)| !is_reserved_key(k) && !previously_managed.contains(*k))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    merged.extend(desired.iter().map(|(k, v)| (k.clone(), v.clone())));
    merged
}

#[cfg(test)]
mod tests {
    use rstest::rstest;
    use serde_json::{Value, json};
    use vcsync_translators::{NamespacedTranslator, Ownership};

    use super::*;
    use crate::syncers::pods::translate::{PodEnvironment, PodTranslator};

    fn translator() -> PodTranslator {
        PodTranslator::new(
            NamespacedTranslator::new(Ownership::new("tenant-a").unwrap(), "host-ns"),
            // The tenant tolerations of these pods, allowed.
            serde_json::from_value(json!({"tolerations": {"allow": [{"key": "a"}, {"key": "b"}]}})).unwrap(),
        )
    }

    fn virtual_pod() -> Pod {
        serde_json::from_value(json!({
            "metadata": {"name": "web", "namespace": "team", "uid": "u1",
                "labels": {"app": "web"}, "annotations": {"note": "a"}},
            "spec": {
                "containers": [{"name": "app", "image": "app:1"}],
                "initContainers": [{"name": "init", "image": "init:1"}],
                "tolerations": [{"key": "a", "operator": "Exists"}],
                "schedulingGates": [{"name": "g1"}, {"name": "g2"}]
            }
        }))
        .unwrap()
    }

    /// The host pod as the host API server returns it after creation: defaults and additions
    /// of host components on top of what vcsync sent.
    fn observed_host() -> Pod {
        let mut host =
            serde_json::to_value(translator().host_pod(&virtual_pod(), &PodEnvironment::default())).unwrap();
        json_patch::merge(
            &mut host,
            &json!({
                "metadata": {"uid": "host-uid", "resourceVersion": "9", "creationTimestamp": "2030-01-01T00:00:00Z",
                    "annotations": {"cni.projectcalico.org/podIP": "10.1.2.3/32"}},
                "spec": {"restartPolicy": "Always", "dnsPolicy": "ClusterFirst", "nodeName": "node-1"},
                "status": {"phase": "Running"}
            }),
        );
        let mut host: Pod = serde_json::from_value(host).unwrap();
        host.spec
            .as_mut()
            .unwrap()
            .tolerations
            .get_or_insert_default()
            .push(
                serde_json::from_value(
                    json!({"key": "node.kubernetes.io/not-ready", "operator": "Exists",
                "effect": "NoExecute", "tolerationSeconds": 300}),
                )
                .unwrap(),
            );
        host
    }

    fn changed(change: Value) -> Pod {
        let mut virt = serde_json::to_value(virtual_pod()).unwrap();
        json_patch::merge(&mut virt, &change);
        serde_json::from_value(virt).unwrap()
    }

    #[test]
    fn an_in_sync_pod_needs_no_write() {
        let desired = translator().mutable_fields(&virtual_pod());
        assert_eq!(host_update(&observed_host(), &desired), None);
    }

    #[rstest]
    #[case::image(json!({"spec": {"containers": [{"name": "app", "image": "app:2"}]}}), "/spec/containers/0/image", json!("app:2"))]
    #[case::init_image(json!({"spec": {"initContainers": [{"name": "init", "image": "init:2"}]}}), "/spec/initContainers/0/image", json!("init:2"))]
    #[case::deadline(json!({"spec": {"activeDeadlineSeconds": 30}}), "/spec/activeDeadlineSeconds", json!(30))]
    #[case::label(json!({"metadata": {"labels": {"app": "web", "tier": "gold"}}}), "/metadata/labels/tier", json!("gold"))]
    #[case::annotation(json!({"metadata": {"annotations": {"note": "b"}}}), "/metadata/annotations/note", json!("b"))]
    #[case::gate_removed(json!({"spec": {"schedulingGates": [{"name": "g2"}]}}), "/spec/schedulingGates", json!([{"name": "g2"}]))]
    #[case::all_gates_removed(json!({"spec": {"schedulingGates": null}}), "/spec/schedulingGates", Value::Null)]
    fn mutable_changes_flow_down(#[case] change: Value, #[case] pointer: &str, #[case] expected: Value) {
        let desired = translator().mutable_fields(&changed(change));
        let updated =
            serde_json::to_value(host_update(&observed_host(), &desired).expect("an update")).unwrap();
        assert_eq!(updated.pointer(pointer).cloned().unwrap_or(Value::Null), expected);
        assert_eq!(
            updated["metadata"]["resourceVersion"], "9",
            "optimistic concurrency"
        );
        assert_eq!(
            updated["metadata"]["annotations"]["cni.projectcalico.org/podIP"], "10.1.2.3/32",
            "host annotations are kept"
        );
    }

    #[test]
    fn removed_tenant_keys_are_removed_but_host_keys_stay() {
        let desired = translator().mutable_fields(&changed(
            json!({"metadata": {"labels": null, "annotations": null}}),
        ));
        let updated = host_update(&observed_host(), &desired).expect("an update");
        let labels = updated.metadata.labels.unwrap();
        assert!(!labels.contains_key("app"));
        assert_eq!(labels["vcsync.dev/managed-by"], "tenant-a");
        let annotations = updated.metadata.annotations.unwrap();
        assert!(!annotations.contains_key("note"));
        assert!(!annotations.contains_key(MANAGED_ANNOTATIONS));
        assert!(annotations.contains_key("cni.projectcalico.org/podIP"));
    }

    #[test]
    fn tolerations_are_only_added() {
        let desired = translator().mutable_fields(&changed(
            json!({"spec": {"tolerations": [{"key": "b", "operator": "Exists"}]}}),
        ));
        let updated = host_update(&observed_host(), &desired).expect("an update");
        let keys: Vec<_> = updated
            .spec
            .unwrap()
            .tolerations
            .unwrap()
            .into_iter()
            .map(|t| t.key.unwrap())
            .collect();
        assert_eq!(keys, ["a", "node.kubernetes.io/not-ready", "b"]);
    }

    #[test]
    fn a_forged_vcsync_annotation_on_the_host_is_reverted() {
        let mut host = observed_host();
        host.metadata
            .annotations
            .as_mut()
            .unwrap()
            .insert("vcsync.dev/object-name".into(), "other".into());
        let desired = translator().mutable_fields(&virtual_pod());
        let updated = host_update(&host, &desired).expect("an update");
        assert_eq!(
            updated.metadata.annotations.unwrap()["vcsync.dev/object-name"],
            "web"
        );
    }
}
