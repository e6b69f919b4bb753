//! The ownership rules without a server.

use serde_json::json;

use super::*;

fn config_maps() -> std::sync::Arc<ResourceDef> {
    crate::resources::Registry::builtin()
        .find("", "v1", "configmaps")
        .unwrap()
}

fn entry(manager: &str, apply: bool) -> Entry {
    Entry {
        manager: manager.into(),
        apply,
        api_version: "v1".into(),
        time: Some("2026-01-01T00:00:00Z".into()),
        subresource: String::new(),
        set: Set::default(),
    }
}

#[test]
fn manager_names_come_from_the_user_agent() {
    let w = |ua: &str| Writer {
        user_agent: ua.into(),
        ..Default::default()
    };
    assert_eq!(
        w("kubectl/v1.37.2 (linux/amd64) kubernetes/abc").manager(),
        "kubectl"
    );
    assert_eq!(w("").manager(), "kube-apiserver");
    let named = Writer {
        field_manager: Some("mine".into()),
        ..w("kubectl/v1")
    };
    assert_eq!(named.manager(), "mine");
    let error = Writer::default().check_patch(true).unwrap_err();
    assert_eq!(
        error.message,
        r#"PatchOptions.meta.k8s.io "" is invalid: fieldManager: Required value: is required for apply patch"#
    );
}

#[test]
fn an_update_takes_changed_fields_from_others() {
    let def = config_maps();
    let types = Types::builtin(&def).unwrap();
    let zero = zero_object(&types);
    let created = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c", "labels": {"a": "1"}},
        "data": {"k": "v", "x": "y"}});
    let entries = update_entries(
        &types,
        &def,
        None,
        &zero,
        &created,
        Vec::new(),
        entry("kubectl-create", false),
    );
    assert_eq!(entries.len(), 1);
    assert_eq!(
        entries[0].set.to_fields_v1(),
        json!({"f:data": {".": {}, "f:k": {}, "f:x": {}}, "f:metadata": {"f:labels": {".": {}, "f:a": {}}}})
    );
    let mut edited = created.clone();
    edited["data"]["k"] = json!("changed");
    let entries = update_entries(
        &types,
        &def,
        None,
        &created,
        &edited,
        entries,
        entry("kubectl-edit", false),
    );
    let by = |m: &str| {
        entries
            .iter()
            .find(|e| e.manager == m)
            .unwrap()
            .set
            .to_fields_v1()
    };
    assert_eq!(by("kubectl-edit"), json!({"f:data": {"f:k": {}}}));
    assert_eq!(
        by("kubectl-create"),
        json!({"f:data": {".": {}, "f:x": {}}, "f:metadata": {"f:labels": {".": {}, "f:a": {}}}})
    );
}

#[test]
fn conflicts_are_worded_as_kube_apiserver_words_them() {
    let mut a = entry("mgr-a", true);
    a.set.insert(&[Pe::Field("data".into()), Pe::Field("key".into())]);
    let path = vec![Pe::Field("data".into()), Pe::Field("key".into())];
    let one = conflict_error(&[(a.clone(), path.clone())]);
    assert_eq!((one.code, one.reason), (409, "Conflict"));
    assert_eq!(
        one.message,
        r#"Apply failed with 1 conflict: conflict with "mgr-a": .data.key"#
    );
    let b = entry("kubectl-edit", false);
    let two = conflict_error(&[(a, path.clone()), (b, path)]);
    assert_eq!(
        two.message,
        "Apply failed with 2 conflicts: conflicts with \"kubectl-edit\" using v1:\n- .data.key\nconflicts with \"mgr-a\":\n- .data.key"
    );
    let causes = &two.details.unwrap().causes;
    assert_eq!(
        causes[0],
        json!({"reason": "FieldManagerConflict", "message": "conflict with \"mgr-a\"", "field": ".data.key"})
    );
}
