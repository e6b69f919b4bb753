//! Walks of typed values, as structured-merge-diff's typed package does them: the field set of
//! a value (tofieldset.go), the comparison of two values (compare.go: added, modified,
//! removed), the merge of an applied configuration into a live object (merge.go, the applied
//! side winning, list order as `visitListItems` gives it) and removing a set of items
//! (remove.go). Nulls on one side of a struct, map or list count as an empty one.

use serde_json::{Map, Value};

use super::set::{Json, Path, Pe, Set};
use super::types::{ListKind, Shape, Ty, Types};

/// What changed between two values.
#[derive(Default, Debug)]
pub(crate) struct Comparison {
    pub added: Set,
    pub modified: Set,
    pub removed: Set,
}

/// The path element of list item `item` (`listItemToPathElement`).
pub(crate) fn item_pe(types: &Types, kind: &ListKind, item_ty: Ty, item: &Value, index: usize) -> Pe {
    match kind {
        ListKind::Map(keys) if !keys.is_empty() => {
            let mut fields: Vec<(String, Json)> = keys
                .iter()
                .filter_map(|key| {
                    let value = item.get(*key).or_else(|| types.key_default(item_ty, key))?;
                    Some((key.to_string(), Json(value.clone())))
                })
                .collect();
            fields.sort_by(|a, b| a.0.cmp(&b.0));
            if item.is_object() {
                Pe::Key(fields)
            } else {
                Pe::Index(index)
            }
        }
        _ if !item.is_object() => Pe::Value(Json(item.clone())),
        _ => Pe::Index(index),
    }
}

fn shape_of<'a>(types: &'a Types, ty: Ty<'a>, lhs: Option<&Value>, rhs: Option<&Value>) -> Shape<'a> {
    let pick = match (lhs, rhs) {
        (_, Some(r)) if !r.is_null() => r,
        (Some(l), _) => l,
        (None, Some(r)) => r,
        (None, None) => &Value::Null,
    };
    types.shape(ty, pick)
}

fn empty(v: Option<&Value>) -> bool {
    match v {
        None | Some(Value::Null) => true,
        Some(Value::Object(m)) => m.is_empty(),
        Some(Value::Array(a)) => a.is_empty(),
        _ => false,
    }
}

/// The field set of `value` (`TypedValue.ToFieldSet`).
pub(crate) fn field_set(types: &Types, ty: Ty, value: &Value) -> Set {
    let mut set = Set::default();
    walk_set(types, ty, value, &mut Vec::new(), &mut set);
    set
}

fn walk_set(types: &Types, ty: Ty, value: &Value, path: &mut Path, set: &mut Set) {
    match types.shape(ty, value) {
        Shape::Leaf => set.insert(path),
        Shape::Map { fields, elements } => {
            for (key, child) in value.as_object().into_iter().flatten() {
                let (child_ty, declared) = Types::field(fields, elements, key);
                path.push(Pe::Field(key.clone()));
                walk_set(types, child_ty, child, path, set);
                if child.is_null() || child.as_object().is_some_and(Map::is_empty) || !declared {
                    set.insert(path);
                }
                path.pop();
            }
        }
        Shape::List(kind, item_ty) => {
            let items = value.as_array().map(Vec::as_slice).unwrap_or_default();
            let pes: Vec<Pe> = items
                .iter()
                .enumerate()
                .map(|(i, item)| item_pe(types, &kind, item_ty, item, i))
                .collect();
            for (i, item) in items.iter().enumerate() {
                path.push(pes[i].clone());
                if pes.iter().filter(|pe| **pe == pes[i]).count() > 1 {
                    set.insert(path);
                } else {
                    walk_set(types, item_ty, item, path, set);
                    set.insert(path);
                }
                path.pop();
            }
        }
    }
}

/// Compares `lhs` (old) with `rhs` (new) (`TypedValue.Compare`).
pub(crate) fn compare(types: &Types, ty: Ty, lhs: &Value, rhs: &Value) -> Comparison {
    let mut out = Comparison::default();
    walk_compare(types, ty, Some(lhs), Some(rhs), &mut Vec::new(), &mut out);
    out
}

fn walk_compare(
    types: &Types,
    ty: Ty,
    lhs: Option<&Value>,
    rhs: Option<&Value>,
    path: &mut Path,
    out: &mut Comparison,
) {
    let mut leaf = false;
    match shape_of(types, ty, lhs, rhs) {
        Shape::Map { .. } | Shape::List(..) if empty(lhs) && empty(rhs) => leaf = true,
        Shape::Leaf => leaf = true,
        Shape::Map { fields, elements } => {
            let (l, r) = (lhs.and_then(Value::as_object), rhs.and_then(Value::as_object));
            let mut keys: Vec<&String> = l.into_iter().flat_map(|m| m.keys()).collect();
            keys.extend(r.into_iter().flat_map(|m| m.keys()));
            keys.sort();
            keys.dedup();
            for key in keys {
                let (child_ty, _) = Types::field(fields, elements, key);
                path.push(Pe::Field(key.clone()));
                walk_compare(
                    types,
                    child_ty,
                    l.and_then(|m| m.get(key)),
                    r.and_then(|m| m.get(key)),
                    path,
                    out,
                );
                path.pop();
            }
        }
        Shape::List(kind, item_ty) => {
            let index = |side: Option<&Value>| -> Vec<(Pe, Vec<Value>)> {
                let mut out: Vec<(Pe, Vec<Value>)> = Vec::new();
                for (i, item) in side.and_then(Value::as_array).into_iter().flatten().enumerate() {
                    let pe = item_pe(types, &kind, item_ty, item, i);
                    match out.iter_mut().find(|(p, _)| *p == pe) {
                        Some((_, items)) => items.push(item.clone()),
                        None => out.push((pe, vec![item.clone()])),
                    }
                }
                out
            };
            let (l, r) = (index(lhs), index(rhs));
            let mut all: Vec<&Pe> = l.iter().map(|(pe, _)| pe).collect();
            all.extend(
                r.iter()
                    .map(|(pe, _)| pe)
                    .filter(|pe| !l.iter().any(|(p, _)| p == *pe)),
            );
            let get = |side: &[(Pe, Vec<Value>)], pe: &Pe| -> Vec<Value> {
                side.iter()
                    .find(|(p, _)| p == pe)
                    .map(|(_, v)| v.clone())
                    .unwrap_or_default()
            };
            for pe in all {
                let (ls, rs) = (get(&l, pe), get(&r, pe));
                path.push(pe.clone());
                match (ls.len(), rs.len()) {
                    (a, b) if a <= 1 && b <= 1 => {
                        walk_compare(types, item_ty, ls.first(), rs.first(), path, out)
                    }
                    (a, b) if a >= 2 && b >= 2 => {
                        if ls != rs {
                            out.modified.insert(path);
                        }
                    }
                    (a, _) if a >= 2 => out.removed.insert(path),
                    _ => out.added.insert(path),
                }
                path.pop();
            }
        }
    }
    if leaf {
        match (lhs, rhs) {
            (None, Some(_)) => out.added.insert(path),
            (Some(_), None) => out.removed.insert(path),
            (Some(l), Some(r)) if l != r => out.modified.insert(path),
            _ => {}
        }
        return;
    }
    match (lhs, rhs) {
        (None, Some(_)) => out.added.insert(path),
        (Some(_), None) => out.removed.insert(path),
        _ => {}
    }
}

/// Merges the applied `rhs` into the live `lhs` (`TypedValue.Merge`).
pub(crate) fn merge(types: &Types, ty: Ty, lhs: Option<&Value>, rhs: Option<&Value>) -> Option<Value> {
    let (l, r) = match (lhs, rhs) {
        (l, None) => return l.cloned(),
        (None, r) => return r.cloned(),
        (Some(l), Some(r)) => (l, r),
    };
    match shape_of(types, ty, lhs, rhs) {
        Shape::Map { .. } | Shape::List(..) if empty(lhs) && empty(rhs) => Some(r.clone()),
        Shape::Leaf => Some(r.clone()),
        Shape::Map { fields, elements } => {
            let (Some(lm), Some(rm)) = (l.as_object(), r.as_object()) else {
                return Some(r.clone());
            };
            let mut out = lm.clone();
            for (key, value) in rm {
                let (child_ty, _) = Types::field(fields, elements, key);
                if let Some(merged) = merge(types, child_ty, lm.get(key), Some(value)) {
                    out.insert(key.clone(), merged);
                }
            }
            Some(Value::Object(out))
        }
        Shape::List(kind, item_ty) => {
            let empty_list = Vec::new();
            let la = l.as_array().unwrap_or(&empty_list);
            let Some(ra) = r.as_array() else {
                return Some(r.clone());
            };
            Some(Value::Array(merge_list(types, &kind, item_ty, la, ra)))
        }
    }
}

/// The item order of merge.go `visitListItems`.
fn merge_list(types: &Types, kind: &ListKind, item_ty: Ty, lhs: &[Value], rhs: &[Value]) -> Vec<Value> {
    let pes = |items: &[Value]| -> Vec<Pe> {
        let mut seen: Vec<Pe> = Vec::new();
        for (i, item) in items.iter().enumerate() {
            let pe = item_pe(types, kind, item_ty, item, i);
            if !seen.contains(&pe) {
                seen.push(pe);
            }
        }
        seen
    };
    let find = |items: &[Value], pe: &Pe| -> Option<Value> {
        items
            .iter()
            .enumerate()
            .find(|(i, item)| item_pe(types, kind, item_ty, item, *i) == *pe)
            .map(|(_, item)| item.clone())
    };
    let (lpes, rpes) = (pes(lhs), pes(rhs));
    let mut shared: std::collections::VecDeque<&Pe> = rpes.iter().filter(|pe| lpes.contains(pe)).collect();
    let mut next_shared = shared.pop_front();
    let mut merged_rhs: Vec<Pe> = Vec::new();
    let mut out = Vec::new();
    let (mut li, mut ri) = (0, 0);
    let push = |l: Option<Value>, r: Option<Value>, out: &mut Vec<Value>| {
        if let Some(v) = merge(types, item_ty, l.as_ref(), r.as_ref()) {
            out.push(v);
        }
    };
    while li < lpes.len() || ri < rpes.len() {
        if li < lpes.len() && ri < rpes.len() {
            let pe = &lpes[li];
            if *pe == rpes[ri] {
                merged_rhs.push(pe.clone());
                push(find(lhs, pe), find(rhs, pe), &mut out);
                li += 1;
                ri += 1;
                next_shared = shared.pop_front();
                continue;
            }
            if rpes.contains(pe) && next_shared.is_some_and(|n| n != pe) {
                li += 1;
                continue;
            }
        }
        if li < lpes.len() {
            let pe = &lpes[li];
            if !rpes.contains(pe) {
                push(find(lhs, pe), None, &mut out);
                li += 1;
                continue;
            } else if merged_rhs.contains(pe) {
                li += 1;
            }
        }
        if ri < rpes.len() {
            let pe = &rpes[ri];
            merged_rhs.push(pe.clone());
            push(find(lhs, pe), find(rhs, pe), &mut out);
            ri += 1;
            if next_shared.is_some_and(|n| n == pe) {
                next_shared = shared.pop_front();
            }
        }
    }
    out
}

/// Removes the members of `set` from `value` (whole subtrees) and descends into its children
/// (`TypedValue.RemoveItems`).
pub(crate) fn remove_items(types: &Types, ty: Ty, value: &mut Value, set: &Set) {
    match types.shape(ty, value) {
        Shape::Leaf => {}
        Shape::Map { fields, elements } => {
            let Some(map) = value.as_object_mut() else { return };
            let keys: Vec<String> = map.keys().cloned().collect();
            for key in keys {
                let pe = Pe::Field(key.clone());
                if set.members.contains(&pe) {
                    map.remove(&key);
                } else if let (Some(child_set), Some(child)) = (set.child(&pe), map.get_mut(&key)) {
                    let (child_ty, _) = Types::field(fields, elements, &key);
                    remove_items(types, child_ty, child, child_set);
                }
            }
        }
        Shape::List(kind, item_ty) => {
            let Some(items) = value.as_array_mut() else { return };
            let old = std::mem::take(items);
            for (i, mut item) in old.into_iter().enumerate() {
                let pe = item_pe(types, &kind, item_ty, &item, i);
                if set.members.contains(&pe) {
                    continue;
                }
                if let Some(child_set) = set.child(&pe) {
                    remove_items(types, item_ty, &mut item, child_set);
                }
                items.push(item);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn deployment_types() -> Types {
        let registry = crate::resources::Registry::builtin();
        Types::builtin(&registry.find("apps", "v1", "deployments").unwrap()).unwrap()
    }

    #[test]
    fn field_sets_mark_map_keys_and_list_items() {
        let types = deployment_types();
        let d = json!({"metadata": {"labels": {"app": "a"}},
            "spec": {"selector": {"matchLabels": {"app": "a"}},
                "template": {"spec": {"containers": [{"name": "c", "image": "i",
                    "ports": [{"containerPort": 80}]}]}}}});
        let set = field_set(&types, types.root(), &d);
        assert_eq!(
            set.to_fields_v1(),
            json!({"f:metadata": {"f:labels": {"f:app": {}}},
                "f:spec": {"f:selector": {}, "f:template": {"f:spec": {"f:containers": {
                    "k:{\"name\":\"c\"}": {".": {}, "f:image": {}, "f:name": {},
                        "f:ports": {"k:{\"containerPort\":80,\"protocol\":\"TCP\"}": {".": {}, "f:containerPort": {}}}}}}}}})
        );
    }

    #[test]
    fn compare_and_merge_by_keys() {
        let types = deployment_types();
        let old = json!({"spec": {"template": {"spec": {"containers": [{"name": "a", "image": "1"}]}}}});
        let applied = json!({"spec": {"template": {"spec": {"containers": [{"name": "b", "image": "2"}]}}}});
        let merged = merge(&types, types.root(), Some(&old), Some(&applied)).unwrap();
        let names: Vec<&str> = merged["spec"]["template"]["spec"]["containers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["name"].as_str().unwrap())
            .collect();
        assert_eq!(names, ["a", "b"]);
        let cmp = compare(&types, types.root(), &old, &merged);
        assert!(cmp.removed.is_empty() && cmp.modified.is_empty());
        assert_eq!(
            cmp.added.to_fields_v1(),
            json!({"f:spec": {"f:template": {"f:spec": {"f:containers": {
                "k:{\"name\":\"b\"}": {".": {}, "f:image": {}, "f:name": {}}}}}}})
        );
        let mut pruned = merged.clone();
        remove_items(&types, types.root(), &mut pruned, &cmp.added);
        assert_eq!(pruned, old);
    }
}
