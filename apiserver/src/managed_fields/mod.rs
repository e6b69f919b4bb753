//! Field ownership and server-side apply, as kube-apiserver 1.37 keeps them
//! (k8s.io/apimachinery pkg/util/managedfields/internal: fieldmanager.go, managedfields.go,
//! managedfieldsupdater.go, skipnonapplied.go, capmanagers.go, stripmeta.go, conflict.go;
//! sigs.k8s.io/structured-merge-diff merge/update.go; k8s.io/apiserver
//! pkg/endpoints/handlers create.go `managerOrUserAgent`).
//!
//! Every create, update and non-apply patch records an `Update` entry for its manager (the
//! `fieldManager` parameter, else the User-Agent's first segment) owning what it added or
//! changed; what it changed leaves the other managers' sets. An apply (`Apply` entry) owns
//! exactly the fields of its configuration: a field another manager owns with a different
//! value is a conflict (409) unless `force`, and a field it owned alone and no longer applies
//! is removed. Objects without managedFields (created before tracking, or reset with `[{}]`)
//! stay untracked under updates; the first apply makes `before-first-apply` own what exists.
//! Field sets are computed on the defaulted object, before admission, as kube-apiserver does.

mod apply;
mod set;
mod typed;
mod types;

use std::cell::RefCell;

use serde_json::{Value, json};

use crate::admission::field::go_quote;
use crate::resources::ResourceDef;
use crate::status::{ApiError, ApiResult};
use crate::store::State;
use set::{Pe, Set};
use types::{Ty, Types};

pub(crate) use apply::apply_patch;

/// Who writes: read from the request by the HTTP layer.
#[derive(Clone, Debug, Default)]
pub(crate) struct Writer {
    /// The `fieldManager` query parameter.
    pub field_manager: Option<String>,
    pub user_agent: String,
    /// The `force` query parameter.
    pub force: Option<bool>,
    /// Set while an apply stores what it computed: the managedFields to store.
    applied: Option<Value>,
}

thread_local! {
    static WRITER: RefCell<Option<Writer>> = const { RefCell::new(None) };
}

/// Runs `f` (a synchronous write) on behalf of `writer`.
pub(crate) fn with_writer<T>(writer: Writer, f: impl FnOnce() -> T) -> T {
    let previous = WRITER.with(|w| w.replace(Some(writer)));
    let result = f();
    WRITER.with(|w| *w.borrow_mut() = previous);
    result
}

fn current() -> Writer {
    WRITER.with(|w| w.borrow().clone()).unwrap_or_default()
}

impl Writer {
    pub fn new(field_manager: Option<String>, force: Option<bool>, user_agent: &str) -> Writer {
        Writer {
            field_manager,
            user_agent: user_agent.to_string(),
            force,
            applied: None,
        }
    }

    /// The manager name (`managerOrUserAgent`); writes of the server itself are
    /// `kube-apiserver`'s.
    pub fn manager(&self) -> String {
        if let Some(manager) = self.field_manager.as_deref().filter(|m| !m.is_empty()) {
            return manager.to_string();
        }
        if self.user_agent.is_empty() {
            return "kube-apiserver".into();
        }
        let mut out = String::new();
        for c in self.user_agent.split('/').next().unwrap_or_default().chars() {
            if c.is_control() {
                continue;
            }
            if out.len() + c.len_utf8() > 128 {
                break;
            }
            out.push(c);
        }
        out
    }

    /// `ValidatePatchOptions`.
    pub fn check_patch(&self, apply: bool) -> ApiResult<()> {
        let invalid = |field: &str, type_: &str, detail: &str| {
            Err(ApiError::field_invalid(
                "meta.k8s.io",
                "PatchOptions.meta.k8s.io",
                "",
                field,
                type_,
                detail,
            ))
        };
        if apply && self.field_manager.as_deref().unwrap_or_default().is_empty() {
            return invalid("fieldManager", "Required value", "is required for apply patch");
        }
        if !apply && self.force.is_some() {
            return invalid("force", "Forbidden", "may not be specified for non-apply patch");
        }
        Ok(())
    }
}

/// One managedFields entry.
#[derive(Clone, Debug, PartialEq)]
struct Entry {
    manager: String,
    apply: bool,
    api_version: String,
    time: Option<String>,
    subresource: String,
    set: Set,
}

impl Entry {
    /// `BuildManagerIdentifier`: appliers are the same manager whatever the version.
    fn same_manager(&self, other: &Entry) -> bool {
        self.manager == other.manager
            && self.apply == other.apply
            && self.subresource == other.subresource
            && (self.apply || self.api_version == other.api_version)
    }

    /// `printManager`.
    fn printed(&self) -> String {
        let mut out = go_quote(&self.manager);
        if !self.subresource.is_empty() {
            out.push_str(&format!(" with subresource {}", go_quote(&self.subresource)));
        }
        if !self.apply {
            out.push_str(&format!(" using {}", self.api_version));
        }
        out
    }

    fn encode(&self) -> Value {
        let mut entry = json!({
            "manager": self.manager,
            "operation": if self.apply { "Apply" } else { "Update" },
            "apiVersion": self.api_version,
            "fieldsType": "FieldsV1",
            "fieldsV1": self.set.to_fields_v1(),
        });
        if let Some(time) = &self.time {
            entry["time"] = json!(time);
        }
        if !self.subresource.is_empty() {
            entry["subresource"] = json!(self.subresource);
        }
        entry
    }

    fn decode(value: &Value) -> Option<Entry> {
        let apply = match value["operation"].as_str()? {
            "Apply" => true,
            "Update" => false,
            _ => return None,
        };
        let api_version = value["apiVersion"].as_str().filter(|v| !v.is_empty())?;
        if value["fieldsType"] != "FieldsV1" {
            return None;
        }
        Some(Entry {
            manager: value["manager"].as_str().unwrap_or_default().to_string(),
            apply,
            api_version: api_version.to_string(),
            time: value["time"].as_str().map(str::to_string),
            subresource: value["subresource"].as_str().unwrap_or_default().to_string(),
            set: match value.get("fieldsV1") {
                None | Some(Value::Null) => Set::default(),
                Some(fields) => Set::from_fields_v1(fields)?,
            },
        })
    }
}

/// `DecodeManagedFields`: None when any entry is invalid.
fn decode_all(object: &Value) -> Option<Vec<Entry>> {
    match &object["metadata"]["managedFields"] {
        Value::Null => Some(Vec::new()),
        Value::Array(entries) => entries.iter().map(Entry::decode).collect(),
        _ => None,
    }
}

/// `[]` or `[{}]`: the request resets managedFields.
fn is_reset(object: &Value) -> bool {
    match object["metadata"]["managedFields"].as_array() {
        Some(entries) => entries.is_empty() || (entries.len() == 1 && entries[0] == json!({})),
        None => false,
    }
}

/// Stores `entries`, sorted as `sortEncodedManagedFields` sorts them; none: no field.
fn encode_all(object: &mut Value, mut entries: Vec<Entry>) {
    entries.retain(|e| !e.set.is_empty());
    entries.sort_by(|p, q| {
        (!p.apply)
            .cmp(&!q.apply)
            .then_with(|| {
                p.time
                    .as_deref()
                    .unwrap_or("")
                    .cmp(q.time.as_deref().unwrap_or(""))
            })
            .then_with(|| p.manager.cmp(&q.manager))
            .then_with(|| p.api_version.cmp(&q.api_version))
            .then_with(|| p.subresource.cmp(&q.subresource))
    });
    let Some(meta) = object["metadata"].as_object_mut() else {
        return;
    };
    if entries.is_empty() {
        meta.remove("managedFields");
    } else {
        meta.insert(
            "managedFields".into(),
            entries.iter().map(Entry::encode).collect(),
        );
    }
}

/// The types of `def`'s objects (a custom resource's from its CRD in `state`).
fn types_for(state: &State, def: &ResourceDef) -> Types {
    match &def.crd {
        None => Types::builtin(def).unwrap_or_else(|| Types::custom(None)),
        Some(crd_name) => {
            let key = format!("{}/{}", crate::crd::GROUP, crate::crd::PLURAL);
            let crd = state.get(&key, "", crd_name);
            let schema = crd.as_ref().and_then(|crd| {
                if crd["spec"]["preserveUnknownFields"] == true {
                    return None;
                }
                crd["spec"]["versions"]
                    .as_array()?
                    .iter()
                    .find(|v| v["name"] == def.version.as_str())?
                    .pointer("/schema/openAPIV3Schema")
                    .cloned()
            });
            Types::custom(schema.as_ref())
        }
    }
}

/// The fields no manager owns (`stripmeta.go`).
fn strip(set: &Set) -> Set {
    let mut stripped = Set::default();
    for path in [
        &["apiVersion"][..],
        &["kind"],
        &["metadata"],
        &["metadata", "name"],
        &["metadata", "namespace"],
        &["metadata", "creationTimestamp"],
        &["metadata", "selfLink"],
        &["metadata", "uid"],
        &["metadata", "clusterName"],
        &["metadata", "generation"],
        &["metadata", "managedFields"],
        &["metadata", "resourceVersion"],
    ] {
        let path: Vec<Pe> = path.iter().map(|f| Pe::Field(f.to_string())).collect();
        stripped.insert(&path);
    }
    let mut out = set.difference(&stripped);
    // The whole managedFields subtree, whatever it held.
    if let Some(meta) = out.children.get_mut(&Pe::Field("metadata".into())) {
        meta.children.remove(&Pe::Field("managedFields".into()));
    }
    out
}

/// The strategies' reset fields: a main-resource write never owns `status`; a status write
/// owns nothing else.
fn reset_filter(def: &ResourceDef, sub: Option<&str>, set: &Set) -> Set {
    let status = Pe::Field("status".into());
    match sub {
        Some(_) => {
            let mut out = Set::default();
            if set.members.contains(&status) {
                out.members.insert(status.clone());
            }
            if let Some(child) = set.children.get(&status) {
                out.children.insert(status, child.clone());
            }
            out
        }
        None if def.has_status() => {
            let mut out = set.clone();
            out.members.remove(&status);
            out.children.remove(&status);
            out
        }
        None => set.clone(),
    }
}

/// `capmanagers.go`: at most 10 Update entries; the oldest are merged into `ancient-changes`.
fn cap_update_managers(entries: &mut Vec<Entry>) {
    const MAX: usize = 10;
    let mut updaters: Vec<usize> = (0..entries.len()).filter(|i| !entries[*i].apply).collect();
    if updaters.len() <= MAX {
        return;
    }
    updaters.sort_by(|a, b| {
        let (p, q) = (&entries[*a], &entries[*b]);
        p.time.cmp(&q.time).then_with(|| p.manager.cmp(&q.manager))
    });
    let excess = updaters.len() - MAX;
    let mut removed = Vec::new();
    let mut bucket: Option<Entry> = None;
    for &i in updaters.iter().take(excess + 1) {
        let entry = entries[i].clone();
        removed.push(i);
        bucket = Some(match bucket {
            None => Entry {
                manager: "ancient-changes".into(),
                ..entry
            },
            Some(b) => Entry {
                set: b.set.union(&entry.set),
                time: entry.time,
                ..b
            },
        });
    }
    removed.sort_unstable_by(|a, b| b.cmp(a));
    for i in removed {
        entries.remove(i);
    }
    entries.extend(bucket);
}

/// The zero value of a kind as Go encodes it: non-pointer structs (`default: {}`) present,
/// required lists, maps and pointers null. What it holds is never "added" by the creator.
fn zero_object(types: &Types) -> Value {
    types.zero(types.root(), 0)
}

/// `Updater.Update` for manager `me` from `old` to `new` (both whole objects).
fn update_entries(
    types: &Types,
    def: &ResourceDef,
    sub: Option<&str>,
    old: &Value,
    new: &Value,
    mut entries: Vec<Entry>,
    me: Entry,
) -> Vec<Entry> {
    let comparison = typed::compare(types, types.root(), old, new);
    let changed = reset_filter(def, sub, &comparison.modified.union(&comparison.added));
    let removed = reset_filter(def, sub, &comparison.removed);
    let mut previous: Option<Entry> = None;
    entries.retain_mut(|entry| {
        if entry.same_manager(&me) {
            previous = Some(entry.clone());
            return false;
        }
        entry.set = entry.set.difference(&changed).difference(&removed);
        !entry.set.is_empty()
    });
    let mine = previous.as_ref().map(|p| p.set.clone()).unwrap_or_default();
    let current_operation = strip(&changed);
    let set = strip(&reset_filter(
        def,
        sub,
        &mine.difference(&removed).union(&changed),
    ));
    if !set.is_empty() {
        let time = match previous {
            Some(previous) if current_operation.is_empty() => previous.time,
            _ => me.time.clone(),
        };
        entries.push(Entry { set, time, ..me });
    }
    cap_update_managers(&mut entries);
    entries
}

fn writer_entry(def: &ResourceDef, sub: Option<&str>, apply: bool) -> Entry {
    Entry {
        manager: current().manager(),
        apply,
        api_version: def.api_version(),
        time: Some(crate::objects::now_rfc3339()),
        subresource: sub.unwrap_or_default().to_string(),
        set: Set::default(),
    }
}

/// Create: the writer owns what it set (hook of `Objects::create_in`, after defaulting).
pub(crate) fn on_create(state: &State, def: &ResourceDef, body: &mut Value) {
    if let Some(applied) = current().applied {
        return set_applied(body, applied);
    }
    let types = types_for(state, def);
    let base = if is_reset(body) {
        Vec::new()
    } else {
        decode_all(body).unwrap_or_default()
    };
    let zero = zero_object(&types);
    let entries = update_entries(
        &types,
        def,
        None,
        &zero,
        body,
        base,
        writer_entry(def, None, false),
    );
    encode_all(body, entries);
}

/// Update, patch and subresource writes (hook of `Objects::write_existing`, after defaulting):
/// the writer owns what it added or changed; others lose what changed.
pub(crate) fn on_update(state: &State, def: &ResourceDef, sub: Option<&str>, old: &Value, new: &mut Value) {
    if let Some(applied) = current().applied {
        return set_applied(new, applied);
    }
    let types = types_for(state, def);
    let base = if sub.is_some() {
        decode_all(old).unwrap_or_default()
    } else if is_reset(new) {
        Vec::new()
    } else {
        match decode_all(new) {
            Some(entries) if !entries.is_empty() => entries,
            _ => decode_all(old).unwrap_or_default(),
        }
    };
    if base.is_empty() {
        // skipnonapplied.go: an existing object without managedFields stays untracked.
        if let Some(meta) = new["metadata"].as_object_mut() {
            meta.remove("managedFields");
        }
        return;
    }
    let entries = update_entries(&types, def, sub, old, new, base, writer_entry(def, sub, false));
    encode_all(new, entries);
}

fn set_applied(object: &mut Value, managed_fields: Value) {
    if let Some(meta) = object["metadata"].as_object_mut() {
        match managed_fields {
            Value::Null => meta.remove("managedFields"),
            entries => meta.insert("managedFields".into(), entries),
        };
    }
}

/// When a write changes nothing but managedFields timestamps, the old managedFields stay
/// (fieldmanager/equality.go `IgnoreManagedFieldsTimestampsTransformer`): a no-op stays one.
pub(crate) fn keep_times_if_noop(new: &mut Value, old: &Value) {
    let without = |v: &Value| {
        let mut v = v.clone();
        if let Some(meta) = v["metadata"].as_object_mut() {
            meta.remove("managedFields");
        }
        v
    };
    if without(new) != without(old) {
        return;
    }
    let times_cleared = |v: &Value| {
        let mut entries = v["metadata"]["managedFields"].clone();
        for entry in entries.as_array_mut().into_iter().flatten() {
            if let Some(e) = entry.as_object_mut() {
                e.remove("time");
            }
        }
        entries
    };
    if times_cleared(new) == times_cleared(old) {
        new["metadata"]["managedFields"] = old["metadata"]["managedFields"].clone();
        if new["metadata"]["managedFields"].is_null()
            && let Some(meta) = new["metadata"].as_object_mut()
        {
            meta.remove("managedFields");
        }
    }
}

/// `NewConflictError`: 409 with one cause per conflicting field.
fn conflict_error(conflicts: &[(Entry, set::Path)]) -> ApiError {
    let causes: Vec<Value> = conflicts
        .iter()
        .map(|(entry, path)| {
            json!({"reason": "FieldManagerConflict", "message": format!("conflict with {}", entry.printed()),
                "field": set::path_string(path)})
        })
        .collect();
    let message = if let [(entry, path)] = conflicts {
        format!(
            "Apply failed with 1 conflict: conflict with {}: {}",
            entry.printed(),
            set::path_string(path)
        )
    } else {
        let mut managers: Vec<String> = conflicts.iter().map(|(e, _)| e.printed()).collect();
        managers.sort();
        managers.dedup();
        let mut lines = Vec::new();
        for manager in managers {
            lines.push(format!("conflicts with {manager}:"));
            for (_, path) in conflicts.iter().filter(|(e, _)| e.printed() == manager) {
                lines.push(format!("- {}", set::path_string(path)));
            }
        }
        format!(
            "Apply failed with {} conflicts: {}",
            conflicts.len(),
            lines.join("\n")
        )
    };
    ApiError {
        code: 409,
        reason: "Conflict",
        message,
        details: Some(Box::new(crate::status::Details {
            name: String::new(),
            group: String::new(),
            kind: String::new(),
            causes,
        })),
        retry_after_seconds: 0,
    }
}

impl Types {
    fn zero(&self, ty: Ty, depth: usize) -> Value {
        let Ty::Schema(schema, _) = ty else {
            return json!({});
        };
        let schema = self.resolved(schema);
        let mut out = serde_json::Map::new();
        let required: Vec<&str> = schema["required"]
            .as_array()
            .map(|r| r.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        for (name, property) in schema["properties"].as_object().into_iter().flatten() {
            if property.get("default") == Some(&json!({})) && depth < 8 {
                out.insert(name.clone(), self.zero(Ty::Schema(property, None), depth + 1));
            } else if required.contains(&name.as_str()) {
                let target = self.resolved(property);
                if matches!(target["type"].as_str(), Some("array" | "object")) {
                    out.insert(name.clone(), Value::Null);
                }
            }
        }
        Value::Object(out)
    }
}

#[cfg(test)]
mod tests;
