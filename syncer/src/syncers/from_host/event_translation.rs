//! Pure translation of host Events into virtual ones: which virtual object a host event is
//! about, the virtual event's name, its content, and when a mirror is out of date.

use std::collections::BTreeMap;

use k8s_openapi::{
    api::core::v1::{Event, ObjectReference},
    apimachinery::pkg::apis::meta::v1::ObjectMeta,
};
use vcsync_translators::{NameTranslator, OBJECT_UID_ANNOTATION, VirtualKey};

use super::shared::SYNCED_FROM_HOST_LABEL;

/// Annotation on a mirrored event naming the host event it mirrors.
pub const HOST_EVENT_ANNOTATION: &str = "vcsync.dev/host-event";

/// Longest object name the API server accepts for events (a DNS subdomain).
const MAX_EVENT_NAME: usize = 253;

/// Where a host event goes in the virtual cluster.
#[derive(Clone, Debug, PartialEq)]
pub struct EventTarget {
    /// Namespace and name of the virtual event.
    pub event: VirtualKey,
    /// The virtual object the event is about.
    pub involved: ObjectReference,
}

/// The target of a host event about the object `involved`, given that object's host
/// metadata (None when not in the cache of this instance's objects).
///
/// None unless the object lies in the namespace the event names, carries this instance's
/// ownership marker and annotations (as `translator`, the namespaced translator of the
/// configured namespace mapping, reads them), and is the incarnation the event names (same
/// UID, when the event says one).
pub fn resolve(
    host_event_name: &str,
    involved: &ObjectReference,
    host_object: Option<&ObjectMeta>,
    translator: &dyn NameTranslator,
) -> Option<EventTarget> {
    let host_object = host_object?;
    if involved.namespace.is_none() || involved.namespace != host_object.namespace {
        return None;
    }
    if let (Some(event_uid), Some(object_uid)) = (&involved.uid, &host_object.uid)
        && event_uid != object_uid
    {
        return None;
    }
    let object = translator.virtual_key(host_object)?;
    let virtual_namespace = object.namespace.clone()?;
    let host_object_name = involved.name.as_deref().unwrap_or_default();
    let uid = host_object
        .annotations
        .as_ref()
        .and_then(|a| a.get(OBJECT_UID_ANNOTATION))
        .cloned();
    Some(EventTarget {
        event: VirtualKey::namespaced(
            virtual_namespace.clone(),
            virtual_event_name(host_event_name, host_object_name, &object.name),
        ),
        involved: ObjectReference {
            api_version: involved.api_version.clone(),
            kind: involved.kind.clone(),
            name: Some(object.name),
            namespace: Some(virtual_namespace),
            uid,
            field_path: involved.field_path.clone(),
            resource_version: None,
        },
    })
}

/// The virtual event's name: the virtual object's name with the host event's suffix
/// (`web-x-default.17f3a...` -> `web.17f3a...`), or with a hash of the host event's name when
/// it does not follow the `<object>.<suffix>` convention. Deterministic, so a restart finds
/// the mirrors it made.
pub fn virtual_event_name(
    host_event_name: &str,
    host_object_name: &str,
    virtual_object_name: &str,
) -> String {
    let suffix = host_event_name
        .strip_prefix(host_object_name)
        .and_then(|rest| rest.strip_prefix('.'))
        .filter(|suffix| !suffix.is_empty())
        .map(str::to_string)
        .unwrap_or_else(|| format!("{:016x}", fnv1a(host_event_name)));
    let room = MAX_EVENT_NAME.saturating_sub(suffix.len() + 1);
    let prefix: String = virtual_object_name.chars().take(room).collect();
    let prefix = prefix.trim_end_matches(['.', '-']);
    format!("{prefix}.{suffix}")
}

/// 64-bit FNV-1a: a stable hash (std's is randomised per process).
fn fnv1a(text: &str) -> u64 {
    text.bytes().fold(0xcbf2_9ce4_8422_2325, |hash, byte| {
        (hash ^ u64::from(byte)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// `message` with the host object's names replaced by the virtual ones
/// ("Successfully assigned vc-host/web-x-default to n1" -> "... default/web to n1").
pub fn translate_message(
    message: &str,
    host_namespace: &str,
    host_name: &str,
    involved: &ObjectReference,
) -> String {
    let (Some(virtual_namespace), Some(virtual_name)) = (&involved.namespace, &involved.name) else {
        return message.to_string();
    };
    if host_name.is_empty() {
        return message.to_string();
    }
    message
        .replace(
            &format!("{host_namespace}/{host_name}"),
            &format!("{virtual_namespace}/{virtual_name}"),
        )
        .replace(host_name, virtual_name)
}

/// The virtual mirror of `host` at `target`.
pub fn desired_virtual_event(host: &Event, target: &EventTarget) -> Event {
    let host_namespace = host.metadata.namespace.as_deref().unwrap_or_default();
    let host_name = host.involved_object.name.as_deref().unwrap_or_default();
    Event {
        metadata: ObjectMeta {
            name: Some(target.event.name.clone()),
            namespace: target.event.namespace.clone(),
            labels: Some(BTreeMap::from([(
                SYNCED_FROM_HOST_LABEL.to_string(),
                "true".to_string(),
            )])),
            annotations: Some(BTreeMap::from([(
                HOST_EVENT_ANNOTATION.to_string(),
                host.metadata.name.clone().unwrap_or_default(),
            )])),
            ..ObjectMeta::default()
        },
        involved_object: target.involved.clone(),
        message: host
            .message
            .as_deref()
            .map(|m| translate_message(m, host_namespace, host_name, &target.involved)),
        // A related object is a host object; the virtual cluster has no name for it.
        related: None,
        ..host.clone()
    }
}

/// Whether `current` shows what `desired` does (the fields a host event changes as it
/// repeats, and the rest of its content).
pub fn event_in_sync(current: &Event, desired: &Event) -> bool {
    current.involved_object == desired.involved_object
        && current.count == desired.count
        && current.last_timestamp == desired.last_timestamp
        && current.first_timestamp == desired.first_timestamp
        && current.event_time == desired.event_time
        && current.series == desired.series
        && current.message == desired.message
        && current.reason == desired.reason
        && current.type_ == desired.type_
        && current.source == desired.source
        && current.action == desired.action
        && current.reporting_component == desired.reporting_component
        && current.reporting_instance == desired.reporting_instance
        && current.metadata.labels == desired.metadata.labels
        && current.metadata.annotations == desired.metadata.annotations
}

#[cfg(test)]
mod tests {
    use rstest::rstest;
    use serde_json::json;
    use vcsync_translators::{
        MANAGED_BY_LABEL, NamespacedTranslator, OBJECT_NAME_ANNOTATION, OBJECT_NAMESPACE_ANNOTATION,
        Ownership,
    };

    use super::*;

    fn translator() -> NamespacedTranslator {
        NamespacedTranslator::new(Ownership::new("tenant-a").unwrap(), "vc-host")
    }

    fn owned_pod_meta() -> ObjectMeta {
        serde_json::from_value(json!({
            "name": "web-x-team", "namespace": "vc-host", "uid": "host-uid",
            "labels": {MANAGED_BY_LABEL: "tenant-a"},
            "annotations": {OBJECT_NAME_ANNOTATION: "web", OBJECT_NAMESPACE_ANNOTATION: "team",
                            OBJECT_UID_ANNOTATION: "virtual-uid"}
        }))
        .unwrap()
    }

    fn host_event() -> Event {
        serde_json::from_value(json!({
            "metadata": {"name": "web-x-team.17f3a9c2b1d0e4f5", "namespace": "vc-host", "uid": "e1",
                         "resourceVersion": "5"},
            "involvedObject": {"apiVersion": "v1", "kind": "Pod", "name": "web-x-team", "namespace": "vc-host",
                               "uid": "host-uid", "fieldPath": "spec.containers{app}", "resourceVersion": "4"},
            "reason": "Scheduled", "type": "Normal",
            "message": "Successfully assigned vc-host/web-x-team to node-1",
            "source": {"component": "default-scheduler"},
            "count": 1,
            "firstTimestamp": "2025-01-01T00:00:00Z", "lastTimestamp": "2025-01-01T00:00:00Z",
            "related": {"kind": "Node", "name": "node-1"}
        }))
        .unwrap()
    }

    fn target() -> EventTarget {
        let event = host_event();
        resolve(
            event.metadata.name.as_deref().unwrap(),
            &event.involved_object,
            Some(&owned_pod_meta()),
            &translator(),
        )
        .unwrap()
    }

    #[test]
    fn an_event_about_an_owned_object_targets_its_virtual_twin() {
        let target = target();
        assert_eq!(
            target.event,
            VirtualKey::namespaced("team", "web.17f3a9c2b1d0e4f5")
        );
        let involved = &target.involved;
        assert_eq!(
            (
                involved.kind.as_deref(),
                involved.name.as_deref(),
                involved.namespace.as_deref()
            ),
            (Some("Pod"), Some("web"), Some("team"))
        );
        assert_eq!(involved.uid.as_deref(), Some("virtual-uid"));
        assert_eq!(involved.field_path.as_deref(), Some("spec.containers{app}"));
        assert_eq!(involved.resource_version, None);
    }

    #[rstest]
    #[case::unknown_object(None, "vc-host", Some("host-uid"))]
    #[case::other_namespace(Some(owned_pod_meta()), "elsewhere", Some("host-uid"))]
    #[case::older_incarnation(Some(owned_pod_meta()), "vc-host", Some("old-uid"))]
    fn events_that_are_not_ours_have_no_target(
        #[case] meta: Option<ObjectMeta>,
        #[case] namespace: &str,
        #[case] uid: Option<&str>,
    ) {
        let mut event = host_event();
        event.involved_object.namespace = Some(namespace.into());
        event.involved_object.uid = uid.map(str::to_string);
        assert_eq!(
            resolve("e", &event.involved_object, meta.as_ref(), &translator()),
            None
        );
    }

    #[rstest]
    #[case::foreign_owner(json!({"labels": {MANAGED_BY_LABEL: "tenant-b"}}))]
    #[case::unowned(json!({"labels": {MANAGED_BY_LABEL: null}}))]
    #[case::no_name_annotation(json!({"annotations": {OBJECT_NAME_ANNOTATION: null}}))]
    fn objects_of_others_are_not_resolved(#[case] change: serde_json::Value) {
        let mut meta = serde_json::to_value(owned_pod_meta()).unwrap();
        json_patch::merge(&mut meta, &change);
        let meta: ObjectMeta = serde_json::from_value(meta).unwrap();
        let event = host_event();
        assert_eq!(
            resolve("e", &event.involved_object, Some(&meta), &translator()),
            None
        );
    }

    #[test]
    fn an_event_without_uid_matches_the_current_object() {
        let mut event = host_event();
        event.involved_object.uid = None;
        assert!(
            resolve(
                "e",
                &event.involved_object,
                Some(&owned_pod_meta()),
                &translator()
            )
            .is_some()
        );
    }

    #[test]
    fn in_the_per_namespace_mapping_an_event_resolves_in_its_own_host_namespace() {
        let translator = vcsync_translators::PerNamespaceTranslator::new(Ownership::new("tenant-a").unwrap());
        let mut meta = owned_pod_meta();
        meta.name = Some("web".into());
        meta.namespace = Some("tenant-a-x-team".into());
        let mut event = host_event();
        event.involved_object.name = Some("web".into());
        event.involved_object.namespace = Some("tenant-a-x-team".into());
        let target = resolve("web.17f3a", &event.involved_object, Some(&meta), &translator).unwrap();
        assert_eq!(target.event, VirtualKey::namespaced("team", "web.17f3a"));
        assert_eq!(target.involved.namespace.as_deref(), Some("team"));
        event.involved_object.namespace = Some("vc-host".into());
        assert_eq!(
            resolve("web.17f3a", &event.involved_object, Some(&meta), &translator),
            None
        );
    }

    #[rstest]
    #[case::conventional("web-x-team.17f3a", "web-x-team", "web", "web.17f3a")]
    #[case::hashed_host_name(
        "my-app-team-6f6a6c4307.abc",
        "my-app-team-6f6a6c4307",
        "my.app",
        "my.app.abc"
    )]
    #[case::unconventional("custom-name", "web-x-team", "web", "web.88369f0ae5479512")]
    #[case::prefix_without_dot("web-x-teamextra", "web-x-team", "web", "web.c667b791b3692020")]
    fn virtual_event_names(
        #[case] host_event: &str,
        #[case] host_object: &str,
        #[case] virtual_object: &str,
        #[case] expected: &str,
    ) {
        assert_eq!(
            virtual_event_name(host_event, host_object, virtual_object),
            expected
        );
    }

    #[test]
    fn virtual_event_names_are_deterministic_and_distinct() {
        let a = virtual_event_name("custom-a", "x", "web");
        assert_eq!(a, virtual_event_name("custom-a", "x", "web"));
        assert_ne!(a, virtual_event_name("custom-b", "x", "web"));
    }

    #[test]
    fn long_virtual_event_names_fit_the_limit() {
        let virtual_object = "a".repeat(250);
        let name = virtual_event_name("h.0123456789abcdef", "h", &virtual_object);
        assert!(name.len() <= MAX_EVENT_NAME, "{}", name.len());
        assert!(name.ends_with(".0123456789abcdef"));
    }

    #[test]
    fn messages_name_the_virtual_object() {
        let involved = target().involved;
        assert_eq!(
            translate_message(
                "Successfully assigned vc-host/web-x-team to node-1",
                "vc-host",
                "web-x-team",
                &involved
            ),
            "Successfully assigned team/web to node-1"
        );
        assert_eq!(
            translate_message("Created pod web-x-team", "vc-host", "web-x-team", &involved),
            "Created pod web"
        );
        assert_eq!(
            translate_message("Pulled image nginx", "vc-host", "web-x-team", &involved),
            "Pulled image nginx"
        );
    }

    #[test]
    fn desired_event_is_the_host_event_about_the_virtual_object() {
        let host = host_event();
        let desired = desired_virtual_event(&host, &target());
        assert_eq!(desired.metadata.name.as_deref(), Some("web.17f3a9c2b1d0e4f5"));
        assert_eq!(desired.metadata.namespace.as_deref(), Some("team"));
        assert_eq!(desired.metadata.uid, None);
        assert_eq!(desired.metadata.resource_version, None);
        assert_eq!(
            desired.metadata.labels.as_ref().unwrap()[SYNCED_FROM_HOST_LABEL],
            "true"
        );
        assert_eq!(
            desired.metadata.annotations.as_ref().unwrap()[HOST_EVENT_ANNOTATION],
            "web-x-team.17f3a9c2b1d0e4f5"
        );
        assert_eq!(desired.involved_object.name.as_deref(), Some("web"));
        assert_eq!(
            desired.message.as_deref(),
            Some("Successfully assigned team/web to node-1")
        );
        assert_eq!((desired.reason, desired.count), (host.reason, host.count));
        assert_eq!(desired.related, None);
    }

    #[rstest]
    #[case::count(json!({"count": 2}))]
    #[case::last_timestamp(json!({"lastTimestamp": "2025-01-01T00:01:00Z"}))]
    #[case::message(json!({"message": "Back-off restarting failed container"}))]
    #[case::series(json!({"series": {"count": 3, "lastObservedTime": "2025-01-01T00:01:00.000000Z"}}))]
    fn repeats_of_the_host_event_are_drift(#[case] change: serde_json::Value) {
        let first = desired_virtual_event(&host_event(), &target());
        let mut repeated = serde_json::to_value(host_event()).unwrap();
        json_patch::merge(&mut repeated, &change);
        let repeated: Event = serde_json::from_value(repeated).unwrap();
        assert!(!event_in_sync(
            &first,
            &desired_virtual_event(&repeated, &target())
        ));
    }

    #[test]
    fn a_mirror_with_server_metadata_is_in_sync() {
        let desired = desired_virtual_event(&host_event(), &target());
        let mut current = desired.clone();
        current.metadata.uid = Some("v".into());
        current.metadata.resource_version = Some("77".into());
        current.metadata.creation_timestamp = desired.first_timestamp.clone();
        assert!(event_in_sync(&current, &desired));
    }
}
