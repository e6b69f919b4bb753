//! Pure parts: reference-path translation, desired objects, comparisons.

use std::collections::BTreeMap;

use kube::api::{DynamicObject, ObjectMeta};
use serde_json::Value;
use vcsync_translators::{NameTranslator, is_reserved_key};

/// Top-level fields that are not payload.
const NOT_PAYLOAD: &[&str] = &["metadata", "status", "apiVersion", "kind"];

/// Label on objects mirrored from the host (same as the built-in host mirrors').
pub const SYNCED_FROM_HOST_LABEL: &str = "vcsync.dev/synced-from-host";

/// Applies `f` to every string found at the dot-separated `path` of `value`; a segment ending
/// in `[]` walks every element of the array there. Missing fields and non-strings are skipped.
pub fn map_path(value: &mut Value, path: &str, f: &dyn Fn(&str) -> String) {
    let segments: Vec<&str> = path.split('.').filter(|s| !s.is_empty()).collect();
    walk(value, &segments, f);
}

fn walk(value: &mut Value, segments: &[&str], f: &dyn Fn(&str) -> String) {
    let Some((first, rest)) = segments.split_first() else {
        if let Value::String(s) = value {
            *s = f(s);
        }
        return;
    };
    let (field, each) = match first.strip_suffix("[]") {
        Some(field) => (field, true),
        None => (*first, false),
    };
    let target = if field.is_empty() {
        Some(value)
    } else {
        value.as_object_mut().and_then(|m| m.get_mut(field))
    };
    match (target, each) {
        (Some(Value::Array(items)), true) => items.iter_mut().for_each(|item| walk(item, rest, f)),
        (Some(_), true) | (None, _) => {}
        (Some(next), false) => walk(next, rest, f),
    }
}

/// The payload of an object: every top-level field but metadata, status, apiVersion, kind.
pub fn payload(obj: &DynamicObject) -> BTreeMap<String, Value> {
    obj.data
        .as_object()
        .into_iter()
        .flatten()
        .filter(|(k, _)| !NOT_PAYLOAD.contains(&k.as_str()))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

/// The status of an object, None when absent or null.
pub fn status(obj: &DynamicObject) -> Option<&Value> {
    obj.data.get("status").filter(|s| !s.is_null())
}

/// Sets (or with None removes) the status of `obj`.
pub fn set_status(obj: &mut DynamicObject, status: Option<Value>) {
    if !obj.data.is_object() {
        obj.data = Value::Object(Default::default());
    }
    let map = obj.data.as_object_mut().expect("made an object");
    match status {
        Some(s) => {
            map.insert("status".into(), s);
        }
        None => {
            map.remove("status");
        }
    }
}

fn with_payload(
    types: &Option<kube::api::TypeMeta>,
    metadata: ObjectMeta,
    payload: BTreeMap<String, Value>,
) -> DynamicObject {
    DynamicObject {
        types: types.clone(),
        metadata,
        data: Value::Object(payload.into_iter().collect()),
    }
}

/// How reference names are translated.
pub enum RefNames<'a> {
    /// Namespaced objects: `host_name(namespace, name)`.
    Namespaced(&'a str),
    /// Cluster-scoped objects: `host_cluster_name(instance, name)`.
    Cluster(&'a str),
}

/// The host copy of virtual object `virt`: host metadata from the translator, the payload with
/// the reference paths translated, no status.
pub fn desired_host(
    virt: &DynamicObject,
    kind: &str,
    translator: &dyn NameTranslator,
    references: &[String],
) -> DynamicObject {
    let metadata = translator.host_metadata(kind, &virt.metadata);
    let names = match virt.metadata.namespace.as_deref() {
        Some(ns) => RefNames::Namespaced(ns),
        None => RefNames::Cluster(translator.ownership().instance()),
    };
    let mut data = Value::Object(payload(virt).into_iter().collect());
    let translate = |name: &str| match names {
        RefNames::Namespaced(ns) => vcsync_translators::host_name(ns, name),
        RefNames::Cluster(instance) => vcsync_translators::host_cluster_name(instance, name),
    };
    for path in references {
        map_path(&mut data, path, &translate);
    }
    DynamicObject {
        types: virt.types.clone(),
        metadata,
        data,
    }
}

/// The read-only virtual mirror of host object `host`: same name (in `namespace` for
/// namespaced kinds), host labels and annotations but `vcsync.dev/` keys plus the marker,
/// payload and status.
pub fn desired_mirror(host: &DynamicObject, namespace: Option<&str>) -> DynamicObject {
    let keep = |map: Option<&BTreeMap<String, String>>| -> BTreeMap<String, String> {
        map.into_iter()
            .flatten()
            .filter(|(k, _)| !is_reserved_key(k))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    };
    let mut labels = keep(host.metadata.labels.as_ref());
    labels.insert(SYNCED_FROM_HOST_LABEL.into(), "true".into());
    let annotations = keep(host.metadata.annotations.as_ref());
    let metadata = ObjectMeta {
        name: host.metadata.name.clone(),
        namespace: namespace.map(str::to_string),
        labels: Some(labels),
        annotations: (!annotations.is_empty()).then_some(annotations),
        ..ObjectMeta::default()
    };
    let mut mirror = with_payload(&host.types, metadata, payload(host));
    set_status(&mut mirror, status(host).cloned());
    mirror
}

/// Whether a virtual object is a mirror made by [`desired_mirror`].
pub fn is_mirror(meta: &ObjectMeta) -> bool {
    meta.labels
        .as_ref()
        .and_then(|l| l.get(SYNCED_FROM_HOST_LABEL))
        .is_some_and(|v| v == "true")
}

/// Whether `observed` already carries `desired`'s labels, annotations and payload (server
/// fields such as uid, resourceVersion and status are not compared).
pub fn in_sync(observed: &DynamicObject, desired: &DynamicObject) -> bool {
    vcsync_syncer::writes::labels_and_annotations_match(&observed.metadata, &desired.metadata)
        && payload(observed) == payload(desired)
}

#[cfg(test)]
mod tests {
    use rstest::rstest;
    use serde_json::json;
    use vcsync_translators::{ClusterScopedTranslator, NamespacedTranslator, Ownership};

    use super::*;

    fn obj(value: Value) -> DynamicObject {
        serde_json::from_value(value).unwrap()
    }

    fn widget() -> DynamicObject {
        obj(json!({"apiVersion": "example.com/v1", "kind": "Widget",
            "metadata": {"name": "w", "namespace": "team", "uid": "u1", "resourceVersion": "7",
                "labels": {"app": "x", "vcsync.dev/managed-by": "forged"}, "annotations": {"note": "n"}},
            "spec": {"configMapName": "cfg", "size": 2, "items": [{"secret": "a"}, {"secret": "b"}, {"other": 1}]},
            "extra": {"keep": true},
            "status": {"ready": true}}))
    }

    #[rstest]
    #[case::plain("spec.configMapName", json!({"spec": {"configMapName": "h(cfg)", "items": [{"secret": "a"}]}}))]
    #[case::array("spec.items[].secret", json!({"spec": {"configMapName": "cfg", "items": [{"secret": "h(a)"}]}}))]
    #[case::missing("spec.nothing.deeper", json!({"spec": {"configMapName": "cfg", "items": [{"secret": "a"}]}}))]
    #[case::not_an_array("spec.configMapName[]", json!({"spec": {"configMapName": "cfg", "items": [{"secret": "a"}]}}))]
    #[case::not_a_string("spec.items", json!({"spec": {"configMapName": "cfg", "items": [{"secret": "a"}]}}))]
    fn paths_translate_only_strings_they_reach(#[case] path: &str, #[case] expected: Value) {
        let mut value = json!({"spec": {"configMapName": "cfg", "items": [{"secret": "a"}]}});
        map_path(&mut value, path, &|s| format!("h({s})"));
        assert_eq!(value, expected);
    }

    #[test]
    fn top_level_arrays_of_strings() {
        let mut value = json!({"names": ["a", "b", 3]});
        map_path(&mut value, "names[]", &|s| s.to_uppercase());
        assert_eq!(value, json!({"names": ["A", "B", 3]}));
    }

    #[test]
    fn host_copy_of_a_namespaced_object() {
        let translator = NamespacedTranslator::new(Ownership::new("inst").unwrap(), "host-ns");
        let refs = vec![
            "spec.configMapName".to_string(),
            "spec.items[].secret".to_string(),
        ];
        let host = desired_host(&widget(), "Widget", &translator, &refs);
        assert_eq!(host.metadata.name.as_deref(), Some("w-x-team"));
        assert_eq!(host.metadata.namespace.as_deref(), Some("host-ns"));
        assert_eq!(host.metadata.uid, None);
        assert_eq!(host.metadata.resource_version, None);
        let labels = host.metadata.labels.as_ref().unwrap();
        assert_eq!(labels["vcsync.dev/managed-by"], "inst");
        assert_eq!(labels["app"], "x");
        let annotations = host.metadata.annotations.as_ref().unwrap();
        assert_eq!(annotations["vcsync.dev/object-name"], "w");
        assert_eq!(annotations["vcsync.dev/object-namespace"], "team");
        assert_eq!(annotations["vcsync.dev/object-uid"], "u1");
        assert_eq!(host.data["spec"]["configMapName"], "cfg-x-team");
        assert_eq!(
            host.data["spec"]["items"],
            json!([{"secret": "a-x-team"}, {"secret": "b-x-team"}, {"other": 1}])
        );
        assert_eq!(host.data["extra"], json!({"keep": true}));
        assert_eq!(status(&host), None);
        assert_eq!(
            translator.virtual_key(&host.metadata),
            Some(vcsync_translators::VirtualKey::namespaced("team", "w"))
        );
    }

    #[test]
    fn host_copy_of_a_cluster_scoped_object() {
        let translator = ClusterScopedTranslator::new(Ownership::new("inst").unwrap());
        let mut virt = widget();
        virt.metadata.namespace = None;
        let host = desired_host(&virt, "Widget", &translator, &["spec.configMapName".into()]);
        assert_eq!(host.metadata.name.as_deref(), Some("vcsync-inst-x-w"));
        assert_eq!(host.metadata.namespace, None);
        assert_eq!(host.data["spec"]["configMapName"], "vcsync-inst-x-cfg");
    }

    #[rstest]
    #[case::server_fields(json!({"metadata": {"uid": "other", "resourceVersion": "99"}}), true)]
    #[case::status(json!({"status": {"ready": false}}), true)]
    #[case::spec(json!({"spec": {"size": 3}}), false)]
    #[case::new_top_level_field(json!({"more": 1}), false)]
    #[case::label(json!({"metadata": {"labels": {"app": "y"}}}), false)]
    #[case::annotation(json!({"metadata": {"annotations": {"x": "y"}}}), false)]
    fn only_payload_and_metadata_maps_are_drift(#[case] edit: Value, #[case] same: bool) {
        let translator = NamespacedTranslator::new(Ownership::new("inst").unwrap(), "host-ns");
        let desired = desired_host(&widget(), "Widget", &translator, &[]);
        let mut observed = serde_json::to_value(&desired).unwrap();
        merge(&mut observed, &edit);
        assert_eq!(in_sync(&obj(observed), &desired), same);
    }

    fn merge(target: &mut Value, patch: &Value) {
        match (target, patch) {
            (Value::Object(t), Value::Object(p)) => {
                for (k, v) in p {
                    merge(t.entry(k.clone()).or_insert(Value::Null), v);
                }
            }
            (t, p) => *t = p.clone(),
        }
    }

    #[test]
    fn mirror_keeps_payload_status_and_marks_itself() {
        let mirror = desired_mirror(&widget(), Some("default"));
        assert_eq!(mirror.metadata.namespace.as_deref(), Some("default"));
        assert!(is_mirror(&mirror.metadata));
        assert!(
            !mirror
                .metadata
                .labels
                .as_ref()
                .unwrap()
                .contains_key("vcsync.dev/managed-by")
        );
        assert_eq!(status(&mirror), Some(&json!({"ready": true})));
        assert_eq!(payload(&mirror), payload(&widget()));
    }
}
