//! Server-side apply (`application/apply-patch+yaml`): k8s.io/apiserver handlers/patch.go
//! `applyPatcher`, managedfields/internal structuredmerge.go and skipnonapplied.go,
//! structured-merge-diff merge/update.go `Apply` and `prune`.

use std::sync::Arc;

use serde_json::Value;

use super::set::{Path, Set};
use super::typed;
use super::types::Types;
use super::{
    Entry, Writer, conflict_error, current, decode_all, encode_all, reset_filter, strip, types_for,
    update_entries, with_writer, writer_entry, zero_object,
};
use crate::objects::Objects;
use crate::patch::PatchKind;
use crate::resources::ResourceDef;
use crate::status::{ApiError, ApiResult};

/// PATCH with an apply configuration: creates the object when missing.
pub(crate) fn apply_patch(
    objects: &Objects,
    def: &ResourceDef,
    namespace: &str,
    name: &str,
    sub: Option<&str>,
    body: &[u8],
    check: &dyn Fn(PatchKind, &mut Value) -> ApiResult<()>,
) -> ApiResult<Arc<Value>> {
    let writer = current();
    writer.check_patch(true)?;
    let mut applied: Value = serde_yaml_ng::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("error decoding patch: {e}")))?;
    if !applied.is_object() {
        return Err(ApiError::bad_request(
            "error decoding patch: the patch is not an object",
        ));
    }
    if !applied["metadata"]["managedFields"].is_null() {
        return Err(ApiError::bad_request("metadata.managedFields must be nil"));
    }
    if let Some(version) = applied["apiVersion"].as_str()
        && version != def.api_version()
    {
        return Err(ApiError::bad_request(format!(
            "Incorrect version specified in apply patch. Specified patch version: {version}, expected: {}",
            def.api_version()
        )));
    }
    check(PatchKind::Apply, &mut applied)?;
    let mut state = objects.store.lock();
    let types = types_for(&state, def);
    let live = state.get(&def.store_key(), namespace, name);
    let base = match (&live, sub) {
        (Some(live), _) => Value::clone(live),
        (None, None) => zero_object(&types),
        (None, Some(_)) => return Err(ApiError::not_found(&def.group, &def.plural, name)),
    };
    let entries = match &live {
        Some(live) => {
            decode_all(live).ok_or_else(|| ApiError::internal("failed to decode managed fields"))?
        }
        None => Vec::new(),
    };
    let me = writer_entry(def, sub, true);
    let force = writer.force.unwrap_or(false);
    let (mut object, entries) = server_side_apply(
        &types,
        def,
        sub,
        &base,
        &applied,
        entries,
        me,
        force,
        live.is_some(),
    )?;
    encode_all(&mut object, entries);
    if object["metadata"]["name"].is_null() {
        object["metadata"]["name"] = Value::from(name);
    }
    let applying = Writer {
        applied: Some(object["metadata"]["managedFields"].clone()),
        ..writer
    };
    with_writer(applying, || match &live {
        Some(live) => objects.write_existing(&mut state, def, sub, object, live),
        None => objects.create_in(&mut state, def, namespace, object),
    })
}

/// `Updater.Apply` (after skipnonapplied's `before-first-apply` for untracked objects): the
/// merged and pruned object and the new entries, or the conflicts.
#[allow(clippy::too_many_arguments)]
fn server_side_apply(
    types: &Types,
    def: &ResourceDef,
    sub: Option<&str>,
    live: &Value,
    applied: &Value,
    mut entries: Vec<Entry>,
    me: Entry,
    force: bool,
    exists: bool,
) -> ApiResult<(Value, Vec<Entry>)> {
    let root = types.root();
    if entries.is_empty() && exists {
        let before = Entry {
            manager: "before-first-apply".into(),
            apply: false,
            ..me.clone()
        };
        let zero = zero_object(types);
        entries = update_entries(types, def, sub, &zero, live, Vec::new(), before);
    }
    let merged = typed::merge(types, root, Some(live), Some(applied)).unwrap_or_else(|| live.clone());
    let config = reset_filter(def, sub, &typed::field_set(types, root, applied));
    let previous = entries
        .iter()
        .position(|e| e.same_manager(&me))
        .map(|i| entries.remove(i));
    let mine = Entry {
        set: config.clone(),
        ..me.clone()
    };
    let keep = entries
        .iter()
        .fold(config.clone(), |all, e| all.union(&e.set))
        .with_named_fields();
    let mut pruned = merged;
    if let Some(last) = previous.as_ref().filter(|p| !p.set.is_empty()) {
        let remove = last.set.with_named_fields().difference(&keep);
        typed::remove_items(types, root, &mut pruned, &remove);
    }
    let comparison = typed::compare(types, root, live, &pruned);
    let changed = reset_filter(def, sub, &comparison.modified.union(&comparison.added));
    let removed = reset_filter(def, sub, &comparison.removed);
    let mut conflicts: Vec<(Entry, Path)> = Vec::new();
    let mut others: Vec<(Entry, Set)> = entries
        .into_iter()
        .map(|e| {
            let clash = e.set.intersection(&changed);
            (e, clash)
        })
        .collect();
    others.sort_by_key(|(e, _)| e.printed());
    for (entry, clash) in &others {
        for path in clash.paths() {
            conflicts.push((entry.clone(), path));
        }
    }
    if !force && !conflicts.is_empty() {
        return Err(conflict_error(&conflicts));
    }
    let mut entries: Vec<Entry> = others
        .into_iter()
        .map(|(mut e, clash)| {
            e.set = e.set.difference(&clash).difference(&removed);
            e
        })
        .filter(|e| !e.set.is_empty())
        .collect();
    let unchanged = without_managed_fields(live) == without_managed_fields(&pruned);
    let set = strip(&mine.set);
    if !set.is_empty() {
        let time = if unchanged && exists {
            previous.and_then(|p| p.time)
        } else {
            me.time.clone()
        };
        entries.push(Entry { set, time, ..mine });
    }
    Ok((pruned, entries))
}

fn without_managed_fields(v: &Value) -> Value {
    let mut v = v.clone();
    if let Some(meta) = v["metadata"].as_object_mut() {
        meta.remove("managedFields");
    }
    v
}
