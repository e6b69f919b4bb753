//! PATCH bodies: JSON merge patch (RFC 7386), JSON patch (RFC 6902) and a subset of Kubernetes
//! strategic merge patch.
//!
//! Strategic merge here is merge patch plus: lists of objects known to Kubernetes as "merge by key"
//! (containers, volumes, env, ports, conditions, ...) are merged element-wise by their key,
//! `metadata.finalizers` is merged as a set, `$patch: replace|delete` and
//! `$deleteFromPrimitiveList/<field>` are honoured, merged lists are ordered as kube-apiserver
//! orders them (honouring `$setElementOrder/<field>`), and `$retainKeys` is accepted and ignored. There is no OpenAPI schema behind it, so keys are chosen
//! by field name; that covers the built-in kinds vcsync syncs.

use serde_json::{Map, Value};

/// The supported patch formats, by Content-Type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PatchKind {
    Merge,
    Json,
    Strategic,
    /// Server-side apply (`application/apply-patch+yaml`).
    Apply,
}

impl PatchKind {
    /// The format named by a Content-Type header value.
    pub fn from_content_type(content_type: &str) -> Option<Self> {
        let essence = content_type.split(';').next().unwrap_or_default().trim();
        match essence {
            "application/merge-patch+json" => Some(PatchKind::Merge),
            "application/json-patch+json" => Some(PatchKind::Json),
            "application/strategic-merge-patch+json" => Some(PatchKind::Strategic),
            "application/apply-patch+yaml" | "application/apply-patch+cbor" => Some(PatchKind::Apply),
            _ => None,
        }
    }
}

/// Applies a patch of format `kind` (not Apply, which the caller handles) to `target`.
pub(crate) fn apply(kind: PatchKind, target: &mut Value, body: &[u8]) -> Result<(), String> {
    match kind {
        PatchKind::Json => {
            let patch: json_patch::Patch =
                serde_json::from_slice(body).map_err(|e| format!("invalid JSON patch: {e}"))?;
            json_patch::patch(target, &patch).map_err(|e| format!("the JSON patch could not be applied: {e}"))
        }
        PatchKind::Merge => {
            let patch: Value = parse_object(body)?;
            json_patch::merge(target, &patch);
            Ok(())
        }
        PatchKind::Strategic | PatchKind::Apply => {
            let patch: Value = parse_object(body)?;
            strategic_merge(target, &patch);
            Ok(())
        }
    }
}

fn parse_object(body: &[u8]) -> Result<Value, String> {
    let value: Value = serde_json::from_slice(body).map_err(|e| format!("invalid patch body: {e}"))?;
    if value.is_object() {
        Ok(value)
    } else {
        Err("the patch body must be a JSON object".to_string())
    }
}

/// The merge key of a list field, if the list is merged element-wise.
fn merge_key(field: &str, sample: Option<&Value>) -> Option<&'static str> {
    match field {
        "containers" | "initContainers" | "ephemeralContainers" | "volumes" | "env" | "imagePullSecrets" => {
            Some("name")
        }
        "volumeMounts" => Some("mountPath"),
        "volumeDevices" => Some("devicePath"),
        "conditions" | "addresses" => Some("type"),
        "ownerReferences" => Some("uid"),
        "hostAliases" => Some("ip"),
        // Container ports merge on containerPort, Service ports on port.
        "ports" => Some(if sample.is_some_and(|s| s.get("containerPort").is_some()) {
            "containerPort"
        } else {
            "port"
        }),
        _ => None,
    }
}

/// Lists of scalars merged as sets.
fn is_set_list(field: &str) -> bool {
    field == "finalizers"
}

/// Strategic merge of `patch` into `target`.
pub(crate) fn strategic_merge(target: &mut Value, patch: &Value) {
    let Value::Object(patch_map) = patch else {
        *target = patch.clone();
        return;
    };
    if patch_map.get("$patch").and_then(Value::as_str) == Some("replace") {
        let mut replacement = patch_map.clone();
        replacement.remove("$patch");
        *target = Value::Object(replacement);
        return;
    }
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    let Value::Object(target_map) = target else { return };
    for (key, value) in patch_map {
        if let Some(field) = key.strip_prefix("$deleteFromPrimitiveList/") {
            if let (Some(Value::Array(items)), Value::Array(remove)) = (target_map.get_mut(field), value) {
                items.retain(|item| !remove.contains(item));
            }
            continue;
        }
        if key.starts_with('$') {
            // $setElementOrder/..., $retainKeys, $patch: accepted, not needed for correctness here.
            continue;
        }
        if value.is_null() {
            target_map.remove(key);
            continue;
        }
        if value.get("$patch").and_then(Value::as_str) == Some("delete") {
            target_map.remove(key);
            continue;
        }
        match (target_map.get_mut(key), value) {
            (Some(Value::Array(existing)), Value::Array(items)) => {
                let order = patch_map
                    .get(&format!("$setElementOrder/{key}"))
                    .and_then(Value::as_array);
                merge_list(key, existing, items, order)
            }
            (Some(existing @ Value::Object(_)), Value::Object(_)) => strategic_merge(existing, value),
            (_, _) => {
                target_map.insert(key.clone(), strip_directives(value));
            }
        }
    }
}

/// Merges `items` into the list `existing`; `order` is the patch's `$setElementOrder/<field>`.
fn merge_list(field: &str, existing: &mut Vec<Value>, items: &[Value], order: Option<&Vec<Value>>) {
    if items
        .iter()
        .any(|i| i.get("$patch").and_then(Value::as_str) == Some("replace"))
    {
        *existing = items
            .iter()
            .filter(|i| i.get("$patch").is_none())
            .map(strip_directives)
            .collect();
        return;
    }
    if is_set_list(field) {
        for item in items {
            if !existing.contains(item) {
                existing.push(item.clone());
            }
        }
        return;
    }
    let Some(key) = merge_key(field, items.first().or(existing.first())) else {
        *existing = items.iter().map(strip_directives).collect();
        return;
    };
    let live: Vec<Value> = existing.iter().map(|e| e[key].clone()).collect();
    for item in items {
        let id = item.get(key);
        let position = id.and_then(|id| existing.iter().position(|e| e.get(key) == Some(id)));
        let delete = item.get("$patch").and_then(Value::as_str) == Some("delete");
        match (position, delete) {
            (Some(i), true) => {
                existing.remove(i);
            }
            (None, true) => {}
            (Some(i), false) => strategic_merge(&mut existing[i], item),
            (None, false) => existing.push(strip_directives(item)),
        }
    }
    let patch_order: Vec<Value> = match order {
        Some(order) => order.iter().map(|o| o[key].clone()).collect(),
        None => items
            .iter()
            .filter(|i| i.get("$patch").is_none())
            .map(|i| i[key].clone())
            .collect(),
    };
    order_elements(existing, key, &live, &patch_order);
}

/// Orders a merged list as kube-apiserver does: the items the patch names in the patch's order
/// (or its `$setElementOrder`), the others in their live order, interleaved where both were live
/// by their live positions; new items go before the live ones they meet.
fn order_elements(merged: &mut Vec<Value>, key: &str, live: &[Value], patch_order: &[Value]) {
    let position = |list: &[Value], item: &Value| list.iter().position(|k| *k == item[key]);
    let (mut named, server_only): (Vec<Value>, Vec<Value>) = std::mem::take(merged)
        .into_iter()
        .partition(|item| position(patch_order, item).is_some());
    named.sort_by_key(|item| position(patch_order, item));
    let (mut left, mut right) = (server_only.into_iter().peekable(), named.into_iter().peekable());
    loop {
        let take_left = match (left.peek(), right.peek()) {
            (Some(l), Some(r)) => matches!(
                (position(live, l), position(live, r)),
                (Some(li), Some(ri)) if li < ri
            ),
            (Some(_), None) => true,
            (None, Some(_)) => false,
            (None, None) => break,
        };
        let next = if take_left { left.next() } else { right.next() };
        merged.extend(next);
    }
}

/// A patch value with `$` directives removed, for inserting where nothing existed.
fn strip_directives(value: &Value) -> Value {
    match value {
        Value::Object(map) => Value::Object(
            map.iter()
                .filter(|(k, v)| !k.starts_with('$') && !v.is_null())
                .map(|(k, v)| (k.clone(), strip_directives(v)))
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.iter().map(strip_directives).collect()),
        other => other.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod() -> Value {
        json!({
            "metadata": {"name": "p", "labels": {"a": "1"}, "finalizers": ["x"]},
            "spec": {"containers": [
                {"name": "app", "image": "app:1", "env": [{"name": "A", "value": "1"}],
                 "ports": [{"containerPort": 80, "name": "http"}]},
                {"name": "side", "image": "side:1"}
            ]}
        })
    }

    #[test]
    fn strategic_merges_containers_by_name() {
        let mut target = pod();
        let patch = json!({"spec": {"containers": [
            {"name": "app", "image": "app:2", "env": [{"name": "B", "value": "2"}],
             "ports": [{"containerPort": 80, "protocol": "TCP"}]}
        ]}, "metadata": {"labels": {"a": null, "b": "2"}, "finalizers": ["y", "x"]}});
        strategic_merge(&mut target, &patch);
        let containers = target["spec"]["containers"].as_array().unwrap();
        assert_eq!(containers.len(), 2);
        assert_eq!(containers[0]["image"], "app:2");
        assert_eq!(containers[0]["env"].as_array().unwrap().len(), 2);
        assert_eq!(
            containers[0]["ports"],
            json!([{"containerPort": 80, "name": "http", "protocol": "TCP"}])
        );
        assert_eq!(target["metadata"]["labels"], json!({"b": "2"}));
        assert_eq!(target["metadata"]["finalizers"], json!(["x", "y"]));
    }

    #[test]
    fn strategic_directives() {
        let mut target = pod();
        let patch = json!({
            "$setElementOrder/containers": [{"name": "side"}],
            "metadata": {"$deleteFromPrimitiveList/finalizers": ["x"]},
            "spec": {"containers": [{"name": "app", "$patch": "delete"}]}
        });
        strategic_merge(&mut target, &patch);
        assert_eq!(
            target["spec"]["containers"],
            json!([{"name": "side", "image": "side:1"}])
        );
        assert_eq!(target["metadata"]["finalizers"], json!([]));

        let patch = json!({"metadata": {"labels": {"$patch": "replace", "z": "9"}}});
        strategic_merge(&mut target, &patch);
        assert_eq!(target["metadata"]["labels"], json!({"z": "9"}));
    }

    #[test]
    fn merged_lists_are_ordered_like_kube_apiserver() {
        let mut target = json!({"env": [{"name": "A"}, {"name": "B"}, {"name": "C"}]});
        strategic_merge(
            &mut target,
            &json!({"env": [{"name": "N"}, {"name": "B", "value": "2"}]}),
        );
        let names: Vec<&str> = target["env"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["name"].as_str().unwrap())
            .collect();
        assert_eq!(names, ["N", "A", "B", "C"]);
        let patch = json!({"$setElementOrder/env": [{"name": "C"}, {"name": "A"}],
            "env": [{"name": "A", "value": "1"}]});
        strategic_merge(&mut target, &patch);
        let names: Vec<&str> = target["env"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["name"].as_str().unwrap())
            .collect();
        assert_eq!(names, ["N", "B", "C", "A"]);
    }

    #[test]
    fn merge_and_json_patch() {
        let mut target = pod();
        apply(PatchKind::Merge, &mut target, br#"{"spec":{"containers":[]}}"#).unwrap();
        assert_eq!(target["spec"]["containers"], json!([]));
        let ops = br#"[{"op":"add","path":"/metadata/labels/c","value":"3"},{"op":"test","path":"/metadata/name","value":"p"}]"#;
        apply(PatchKind::Json, &mut target, ops).unwrap();
        assert_eq!(target["metadata"]["labels"]["c"], "3");
        assert!(
            apply(
                PatchKind::Json,
                &mut target,
                br#"[{"op":"remove","path":"/nope"}]"#
            )
            .is_err()
        );
        assert_eq!(
            PatchKind::from_content_type("application/merge-patch+json; charset=utf-8"),
            Some(PatchKind::Merge)
        );
    }
}
