use k8s_openapi::api::core::v1::Pod;
use kube::core::{DynamicObject, ObjectList, WatchEvent};
use serde_json::json;

use super::*;

fn pod_json() -> serde_json::Value {
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": "web",
            "namespace": "team-a",
            "labels": {"app": "web"},
            "annotations": {
                LAST_APPLIED: "{\"apiVersion\":\"v1\",\"kind\":\"Pod\"}",
                "team": "a"
            },
            "managedFields": [{
                "manager": "kubectl-client-side-apply",
                "operation": "Update",
                "apiVersion": "v1",
                "fieldsType": "FieldsV1",
                "fieldsV1": {"f:metadata": {"f:labels": {".": {}, "f:app": {}}}}
            }],
            "resourceVersion": "7"
        },
        "spec": {"containers": [{"name": "web", "image": "nginx"}]},
        "status": {"phase": "Pending"}
    })
}

/// The full decode of `value`, then the unread fields dropped.
fn decoded_then_stripped<K: serde::de::DeserializeOwned + Resource>(value: &serde_json::Value) -> K {
    let mut object: K = serde_json::from_value(value.clone()).unwrap();
    strip_unread_fields(object.meta_mut());
    object
}

#[test]
fn decodes_as_the_kind_does_without_managed_fields_and_the_last_applied_annotation() {
    let text = pod_json().to_string();
    let Wire(pod) = serde_json::from_str::<Wire<Pod>>(&text).unwrap();
    assert_eq!(pod, decoded_then_stripped::<Pod>(&pod_json()));
    assert_eq!(pod.metadata.managed_fields, None);
    assert_eq!(
        pod.metadata.annotations.unwrap().into_keys().collect::<Vec<_>>(),
        ["team"]
    );
    assert_eq!(pod.spec.unwrap().containers[0].image.as_deref(), Some("nginx"));
}

#[test]
fn only_the_metadatas_managed_fields_are_skipped() {
    // A member of that name elsewhere (a custom resource's spec, say) is data.
    let mut value = pod_json();
    value["kind"] = json!("Widget");
    value["apiVersion"] = json!("example.com/v1");
    value["spec"] = json!({"managedFields": [1, 2], "size": 3});
    let Wire(widget) = serde_json::from_str::<Wire<DynamicObject>>(&value.to_string()).unwrap();
    assert_eq!(widget.data["spec"], json!({"managedFields": [1, 2], "size": 3}));
    assert_eq!(widget.metadata.managed_fields, None);
    assert_eq!(widget, decoded_then_stripped::<DynamicObject>(&value));
}

#[test]
fn keys_with_escapes_decode_as_well() {
    // "na\u006de" is "name": a key that cannot be borrowed from the text.
    let text = pod_json()
        .to_string()
        .replacen("\"name\":\"web\"", "\"na\\u006de\":\"web\"", 1)
        .replacen("\"managedFields\"", "\"managed\\u0046ields\"", 1);
    let Wire(pod) = serde_json::from_str::<Wire<Pod>>(&text).unwrap();
    assert_eq!(pod, decoded_then_stripped::<Pod>(&pod_json()));
}

#[test]
fn watch_events_and_lists_decode_wire_objects_as_kube_reads_them() {
    for line in [
        json!({"type": "MODIFIED", "object": pod_json()}).to_string(),
        // The object before its type: serde buffers it, and the wrapper reads the buffer.
        format!("{{\"object\":{},\"type\":\"MODIFIED\"}}", pod_json()),
    ] {
        let WatchEvent::Modified(Wire(pod)) = serde_json::from_str::<WatchEvent<Wire<Pod>>>(&line).unwrap()
        else {
            panic!("not a modification: {line}");
        };
        assert_eq!(pod, decoded_then_stripped::<Pod>(&pod_json()));
    }
    let list = json!({
        "apiVersion": "v1",
        "kind": "PodList",
        "metadata": {"resourceVersion": "9"},
        "items": [pod_json(), pod_json()]
    })
    .to_string();
    let list = serde_json::from_str::<ObjectList<Wire<Pod>>>(&list).unwrap();
    assert_eq!(list.items.len(), 2);
    assert!(
        list.items
            .iter()
            .all(|Wire(pod)| pod.metadata.managed_fields.is_none())
    );
}

#[test]
fn a_malformed_object_is_an_error_not_a_default() {
    let text = pod_json().to_string().replacen("\"7\"", "7", 1);
    assert!(serde_json::from_str::<Wire<Pod>>(&text).is_err());
    let text = pod_json()
        .to_string()
        .replacen("\"managedFields\":[", "\"managedFields\":[}", 1);
    assert!(serde_json::from_str::<Wire<Pod>>(&text).is_err());
}

#[test]
fn an_api_of_wire_objects_addresses_the_kinds_urls() {
    assert_eq!(
        <Wire<Pod> as Resource>::url_path(&(), Some("ns")),
        "/api/v1/namespaces/ns/pods"
    );
    assert_eq!(<Wire<Pod> as Resource>::kind(&()), "Pod");
}

#[test]
fn managed_fields_are_skipped_unread() {
    // Not a list of entries: decoding it would fail.
    let mut value = pod_json();
    value["metadata"]["managedFields"] = json!("not read");
    assert!(serde_json::from_value::<Pod>(value.clone()).is_err());
    let Wire(pod) = serde_json::from_str::<Wire<Pod>>(&value.to_string()).unwrap();
    assert_eq!(pod.metadata.name.as_deref(), Some("web"));
}
