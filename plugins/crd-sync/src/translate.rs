//! Pure parts: reference-path translation, desired objects, comparisons.

use std::collections::BTreeMap;

use kube::api::{DynamicObject, ObjectMeta};
use serde_json::Value;
use vcsync_syncer::{Hooks, Side};
use vcsync_translators::{NameTranslator, NamespaceMapping, VirtualKey, is_reserved_key};

use crate::config::Direction;

/// Top-level fields that are not payload.
const NOT_PAYLOAD: &[&str] = &["metadata", "status", "apiVersion", "kind"];

/// Label on objects mirrored from the host, and whether an object carries it: the built-in host
/// mirrors' own.
pub use vcsync_syncer::syncers::from_host::{SYNCED_FROM_HOST_LABEL, is_synced_from_host as is_mirror};

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

/// The host copy of virtual object `virt`: host metadata from the translator, the payload with
/// the reference paths translated, no status.
///
/// A reference names an object of the referencing object's namespace (or a cluster-scoped one),
/// so it is translated with the same translator: `<name>-x-<namespace>` in the single mapping,
/// the name kept in the per-namespace mapping (the referenced object lands in the same host
/// namespace), `vcsync-<instance>-x-<name>` for cluster-scoped kinds.
pub fn desired_host(
    virt: &DynamicObject,
    kind: &str,
    translator: &dyn NameTranslator,
    references: &[String],
) -> DynamicObject {
    let metadata = translator.host_metadata(kind, &virt.metadata);
    let mut data = Value::Object(payload(virt).into_iter().collect());
    let namespace = virt.metadata.namespace.clone();
    let translate = |name: &str| {
        translator
            .host_key(&VirtualKey::new(namespace.clone(), name.to_string()))
            .name
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

/// The host namespace whose objects of a resource are watched; None: every namespace (or a
/// cluster-scoped kind).
///
/// - `toHost`: where the copies land: the one host namespace in the single mapping, every
///   namespace in the per-namespace mapping (filtered by the ownership label).
/// - `fromHost`: the host namespace of `virtual_namespace` under the mapping, i.e. the host
///   namespace whose objects appear in `virtual_namespace`: the one host namespace in the single
///   mapping, `<instance>-x-<virtual_namespace>` in the per-namespace mapping.
pub fn host_watch_namespace(
    mapping: &NamespaceMapping,
    namespaced: bool,
    direction: Direction,
    virtual_namespace: &str,
) -> Option<String> {
    match (namespaced, direction, mapping) {
        (false, _, _) => None,
        (true, Direction::ToHost, NamespaceMapping::Single { host_namespace }) => {
            Some(host_namespace.clone())
        }
        (true, Direction::ToHost, NamespaceMapping::PerNamespace { .. }) => None,
        (true, Direction::FromHost, _) => Some(mapping.host_namespace(virtual_namespace)),
    }
}

/// `obj` after the hooks registered for objects of `kind` written to `side`, so that a hook's
/// change is part of the desired state (compared, written once). A hook cannot move the object
/// or take vcsync's marks off it: name, namespace and the `vcsync.dev/` labels and annotations
/// are restored afterwards. An object a hook made unreadable is used without the hooks' changes.
pub fn with_hooks(hooks: &Hooks, side: Side, kind: &str, obj: DynamicObject) -> DynamicObject {
    if hooks.is_empty() {
        return obj;
    }
    let mut json = serde_json::to_value(&obj).expect("objects serialize");
    hooks.apply_json(side, kind, &mut json);
    let mut hooked: DynamicObject = match serde_json::from_value(json) {
        Ok(hooked) => hooked,
        Err(err) => {
            tracing::warn!(%kind, error = %err, "a hook produced an invalid object; ignoring the hooks' changes");
            return obj;
        }
    };
    hooked.metadata.name = obj.metadata.name.clone();
    hooked.metadata.namespace = obj.metadata.namespace.clone();
    restore_reserved(&mut hooked.metadata.labels, obj.metadata.labels.as_ref());
    restore_reserved(
        &mut hooked.metadata.annotations,
        obj.metadata.annotations.as_ref(),
    );
    hooked
}

/// Puts the `vcsync.dev/` entries of `original` back into `map` and drops reserved ones that
/// `original` does not have.
fn restore_reserved(map: &mut Option<BTreeMap<String, String>>, original: Option<&BTreeMap<String, String>>) {
    let reserved = original.into_iter().flatten().filter(|(k, _)| is_reserved_key(k));
    let mut restored: BTreeMap<String, String> = map
        .take()
        .unwrap_or_default()
        .into_iter()
        .filter(|(k, _)| !is_reserved_key(k))
        .collect();
    restored.extend(reserved.map(|(k, v)| (k.clone(), v.clone())));
    *map = (!restored.is_empty() || original.is_some()).then_some(restored);
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
    fn host_copy_of_a_namespaced_object_per_namespace() {
        let mapping = NamespaceMapping::PerNamespace {
            instance: "inst".into(),
        };
        let translator = mapping.translator(Ownership::new("inst").unwrap());
        let refs = vec![
            "spec.configMapName".to_string(),
            "spec.items[].secret".to_string(),
        ];
        let host = desired_host(&widget(), "Widget", translator.as_ref(), &refs);
        // Own host namespace per virtual namespace, names kept.
        assert_eq!(host.metadata.name.as_deref(), Some("w"));
        assert_eq!(host.metadata.namespace.as_deref(), Some("inst-x-team"));
        let labels = host.metadata.labels.as_ref().unwrap();
        assert_eq!(labels["vcsync.dev/managed-by"], "inst");
        assert_eq!(labels["app"], "x");
        let annotations = host.metadata.annotations.as_ref().unwrap();
        assert_eq!(annotations["vcsync.dev/object-name"], "w");
        assert_eq!(annotations["vcsync.dev/object-namespace"], "team");
        // Referenced objects land in the same host namespace under their own names.
        assert_eq!(host.data["spec"]["configMapName"], "cfg");
        assert_eq!(
            host.data["spec"]["items"],
            json!([{"secret": "a"}, {"secret": "b"}, {"other": 1}])
        );
        assert_eq!(
            host.data["spec"]["configMapName"],
            mapping.host_object_name("team", "cfg")
        );
        // Reverse mapping: the host copy leads back to its virtual key.
        assert_eq!(
            translator.virtual_key(&host.metadata),
            Some(vcsync_translators::VirtualKey::namespaced("team", "w"))
        );
        // ... and the forward mapping of that key is where the copy is.
        let key = translator.host_key(&vcsync_translators::VirtualKey::namespaced("team", "w"));
        assert_eq!(key.namespace, host.metadata.namespace);
        assert_eq!(Some(key.name), host.metadata.name);
    }

    #[test]
    fn same_name_in_two_virtual_namespaces_gets_two_host_objects_per_namespace() {
        let translator = NamespaceMapping::PerNamespace {
            instance: "inst".into(),
        }
        .translator(Ownership::new("inst").unwrap());
        let mut other = widget();
        other.metadata.namespace = Some("ops".into());
        let a = desired_host(&widget(), "Widget", translator.as_ref(), &[]);
        let b = desired_host(&other, "Widget", translator.as_ref(), &[]);
        assert_eq!(a.metadata.name, b.metadata.name);
        assert_ne!(a.metadata.namespace, b.metadata.namespace);
        assert_eq!(b.metadata.namespace.as_deref(), Some("inst-x-ops"));
        assert_eq!(
            translator.virtual_key(&b.metadata),
            Some(vcsync_translators::VirtualKey::namespaced("ops", "w"))
        );
    }

    #[rstest]
    #[case::to_host_single(true, Direction::ToHost, false, Some("host-ns"))]
    #[case::to_host_per_namespace(true, Direction::ToHost, true, None)]
    #[case::from_host_single(true, Direction::FromHost, false, Some("host-ns"))]
    #[case::from_host_per_namespace(true, Direction::FromHost, true, Some("inst-x-team"))]
    #[case::cluster_to_host(false, Direction::ToHost, true, None)]
    #[case::cluster_from_host(false, Direction::FromHost, false, None)]
    fn host_objects_are_watched_where_the_mapping_puts_them(
        #[case] namespaced: bool,
        #[case] direction: Direction,
        #[case] per_namespace: bool,
        #[case] expected: Option<&str>,
    ) {
        let mapping = if per_namespace {
            NamespaceMapping::PerNamespace {
                instance: "inst".into(),
            }
        } else {
            NamespaceMapping::Single {
                host_namespace: "host-ns".into(),
            }
        };
        assert_eq!(
            host_watch_namespace(&mapping, namespaced, direction, "team").as_deref(),
            expected
        );
    }

    /// Adds `team=a` to Widgets written to the host, and tries to rename them and take the
    /// ownership label off.
    struct Meddler;

    impl vcsync_syncer::Hook for Meddler {
        fn name(&self) -> &str {
            "meddler"
        }
        fn applies_to(&self, side: Side, kind: &str) -> bool {
            side == Side::Host && kind == "Widget"
        }
        fn mutate(&self, _side: Side, _kind: &str, object: &mut Value) {
            object["metadata"]["labels"]["team"] = json!("a");
            object["metadata"]["labels"]
                .as_object_mut()
                .unwrap()
                .remove("vcsync.dev/managed-by");
            object["metadata"]["name"] = json!("elsewhere");
            object["spec"]["hooked"] = json!(true);
        }
    }

    #[test]
    fn hooks_change_the_desired_object_before_it_is_compared() {
        let hooks = Hooks::default();
        hooks.add(std::sync::Arc::new(Meddler));
        let translator = NamespaceMapping::PerNamespace {
            instance: "inst".into(),
        }
        .translator(Ownership::new("inst").unwrap());
        let plain = desired_host(&widget(), "Widget", translator.as_ref(), &[]);
        let desired = with_hooks(&hooks, Side::Host, "Widget", plain.clone());
        let labels = desired.metadata.labels.as_ref().unwrap();
        assert_eq!(labels["team"], "a");
        assert_eq!(desired.data["spec"]["hooked"], true);
        // vcsync's marks and the place stay.
        assert_eq!(labels["vcsync.dev/managed-by"], "inst");
        assert_eq!(desired.metadata.name, plain.metadata.name);
        assert_eq!(desired.metadata.namespace, plain.metadata.namespace);
        // A host copy written with the hook's change is in sync: written once, not again.
        let observed = obj(serde_json::to_value(&desired).unwrap());
        let again = with_hooks(&hooks, Side::Host, "Widget", plain.clone());
        assert!(in_sync(&observed, &again));
        assert!(!in_sync(&observed, &plain));
        // Other sides and kinds are left alone.
        assert_eq!(with_hooks(&hooks, Side::Virtual, "Widget", plain.clone()), plain);
        assert_eq!(with_hooks(&hooks, Side::Host, "Gadget", plain.clone()), plain);
    }

    struct Breaker;

    impl vcsync_syncer::Hook for Breaker {
        fn name(&self) -> &str {
            "breaker"
        }
        fn applies_to(&self, _side: Side, _kind: &str) -> bool {
            true
        }
        fn mutate(&self, _side: Side, _kind: &str, object: &mut Value) {
            object["metadata"] = json!("not metadata");
        }
    }

    #[test]
    fn an_object_a_hook_breaks_is_used_without_the_hooks_changes() {
        let hooks = Hooks::default();
        hooks.add(std::sync::Arc::new(Breaker));
        let mirror = desired_mirror(&widget(), Some("default"));
        assert_eq!(
            with_hooks(&hooks, Side::Virtual, "Widget", mirror.clone()),
            mirror
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
