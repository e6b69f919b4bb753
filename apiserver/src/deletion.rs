//! Deletion: preconditions, finalizers and graceful deletion via `deletionTimestamp`, namespace
//! termination, and delete-collection.
//!
//! Namespace deletion is a simplified version of the namespace controller: the namespace is
//! marked Terminating (deletionTimestamp set, status.phase Terminating), every object in it is
//! deleted at once by the same rules as a single delete, and the namespace disappears as soon as
//! it holds no objects (immediately, unless objects with finalizers remain; then when the last one
//! goes). Objects with finalizers wait for them to be removed.
//!
//! Pods are deleted gracefully, as Kubernetes does: a scheduled pod deleted with a grace period
//! (by default its `terminationGracePeriodSeconds`) gets `deletionTimestamp` (now + grace) and
//! `deletionGracePeriodSeconds` and stays until someone (a kubelet, the simulator's node agent)
//! deletes it with grace period 0. A repeated delete may only shorten the grace period. Unscheduled
//! and terminated pods go at once. Namespace termination deletes pods with grace period 0.

use std::sync::Arc;

use serde_json::{Value, json};

use crate::objects::{NAMESPACES, Objects, format_timestamp, now_rfc3339};
use crate::resources::ResourceDef;
use crate::selectors::Selectors;
use crate::status::{ApiError, ApiResult};
use crate::store::State;

/// DeleteOptions, from the body or the query.
#[derive(Debug, Clone, Default)]
pub(crate) struct DeleteOptions {
    pub uid: Option<String>,
    pub resource_version: Option<String>,
    pub grace_period_seconds: Option<i64>,
}

impl DeleteOptions {
    /// Reads a DeleteOptions body (possibly empty); `query_grace` is the query parameter.
    pub fn parse(body: &[u8], query_grace: Option<i64>) -> ApiResult<Self> {
        let mut options = DeleteOptions {
            grace_period_seconds: query_grace,
            ..Default::default()
        };
        if body.iter().all(u8::is_ascii_whitespace) {
            return Ok(options);
        }
        let value: Value = serde_json::from_slice(body)
            .map_err(|e| ApiError::bad_request(format!("invalid DeleteOptions body: {e}")))?;
        options.merge(&value);
        Ok(options)
    }

    /// DeleteOptions from a JSON object (the `deleteOptions` of an Eviction, say).
    pub fn from_value(value: &Value) -> Self {
        let mut options = DeleteOptions::default();
        options.merge(value);
        options
    }

    fn merge(&mut self, value: &Value) {
        let text = |v: &Value| v.as_str().map(str::to_string);
        self.uid = text(&value["preconditions"]["uid"]);
        self.resource_version = text(&value["preconditions"]["resourceVersion"]);
        if let Some(grace) = value["gracePeriodSeconds"].as_i64() {
            self.grace_period_seconds = Some(grace);
        }
    }
}

impl Objects {
    /// DELETE of one object: returns the object as last stored (deleted or marked for deletion).
    pub fn delete(
        &self,
        def: &ResourceDef,
        namespace: &str,
        name: &str,
        options: &DeleteOptions,
    ) -> ApiResult<Arc<Value>> {
        let mut state = self.store.lock();
        let old = state
            .get(&def.store_key(), namespace, name)
            .ok_or_else(|| ApiError::not_found(&def.group, &def.plural, name))?;
        let meta = &old["metadata"];
        if let Some(uid) = &options.uid
            && meta["uid"] != uid.as_str()
        {
            let why = format!(
                "Precondition failed: UID in precondition: {uid}, UID in object meta: {}",
                meta["uid"].as_str().unwrap_or_default()
            );
            return Err(ApiError::conflict(&def.group, &def.plural, name, &why));
        }
        if let Some(rv) = &options.resource_version
            && meta["resourceVersion"] != rv.as_str()
        {
            let why = format!(
                "Precondition failed: ResourceVersion in precondition: {rv}, ResourceVersion in object meta: {}",
                meta["resourceVersion"].as_str().unwrap_or_default()
            );
            return Err(ApiError::conflict(&def.group, &def.plural, name, &why));
        }
        if def.store_key() == NAMESPACES {
            return Ok(self.terminate_namespace(&mut state, def, name, &old));
        }
        let grace = options.grace_period_seconds;
        Ok(self.delete_in(&mut state, def, namespace, name, &old, grace))
    }

    /// POST pods/{name}/eviction: a delete with the Eviction's `deleteOptions`. Disruption
    /// budgets are not consulted (nothing computes their status here).
    pub fn evict(&self, def: &ResourceDef, namespace: &str, name: &str, body: &Value) -> ApiResult<()> {
        if let Some(named) = body["metadata"]["name"]
            .as_str()
            .filter(|n| !n.is_empty() && n != &name)
        {
            return Err(ApiError::bad_request(format!(
                "name in URL ({name}) does not match name in Eviction object ({named})"
            )));
        }
        let options = DeleteOptions::from_value(&body["deleteOptions"]);
        self.delete(def, namespace, name, &options).map(|_| ())
    }

    /// Deletes, or marks for deletion when finalizers or a grace period (pods) hold the object.
    fn delete_in(
        &self,
        state: &mut State,
        def: &ResourceDef,
        namespace: &str,
        name: &str,
        old: &Arc<Value>,
        requested_grace: Option<i64>,
    ) -> Arc<Value> {
        let meta = &old["metadata"];
        let has_finalizers = meta["finalizers"].as_array().is_some_and(|f| !f.is_empty());
        let grace = if is_pod(def) {
            pod_grace_period(old, requested_grace)
        } else {
            0
        };
        if let Some(marked_at) = deletion_deadline(old) {
            // Already being deleted: only a shorter grace period changes anything.
            let current = meta["deletionGracePeriodSeconds"].as_i64().unwrap_or(0);
            if grace >= current {
                return old.clone();
            }
            if grace == 0 && !has_finalizers {
                return remove_now(self, state, def, namespace, name).unwrap_or_else(|| old.clone());
            }
            let deadline = marked_at - jiff::SignedDuration::from_secs(current - grace);
            return self.mark_deleted(state, def, old, deadline, grace, false);
        }
        if grace == 0 && !has_finalizers {
            return remove_now(self, state, def, namespace, name).unwrap_or_else(|| old.clone());
        }
        let deadline = jiff::Timestamp::now() + jiff::SignedDuration::from_secs(grace);
        // As for every kind with graceful deletion, marking a pod bumps its generation.
        self.mark_deleted(state, def, old, deadline, grace, is_pod(def))
    }

    fn mark_deleted(
        &self,
        state: &mut State,
        def: &ResourceDef,
        old: &Arc<Value>,
        deadline: jiff::Timestamp,
        grace: i64,
        bump_generation: bool,
    ) -> Arc<Value> {
        let mut marked = Value::clone(old);
        marked["metadata"]["deletionTimestamp"] = json!(format_timestamp(deadline));
        marked["metadata"]["deletionGracePeriodSeconds"] = json!(grace);
        if let Some(generation) = old["metadata"]["generation"]
            .as_i64()
            .filter(|g| bump_generation && *g > 0)
        {
            marked["metadata"]["generation"] = json!(generation + 1);
        }
        state.put(&def.store_key(), marked)
    }

    fn terminate_namespace(
        &self,
        state: &mut State,
        def: &ResourceDef,
        name: &str,
        old: &Arc<Value>,
    ) -> Arc<Value> {
        let mut current = old.clone();
        if old["metadata"]["deletionTimestamp"].is_null() {
            let mut marked = Value::clone(old);
            marked["metadata"]["deletionTimestamp"] = json!(now_rfc3339());
            marked["status"]["phase"] = json!("Terminating");
            current = state.put(&def.store_key(), marked);
        }
        let namespaced: Vec<Arc<ResourceDef>> = self.registry.all().filter(|d| d.namespaced).collect();
        for kind in &namespaced {
            let victims: Vec<(String, Arc<Value>)> = state
                .list(&kind.store_key(), Some(name), None)
                .map(|((_, n), o)| (n.clone(), o.clone()))
                .collect();
            for (object_name, object) in victims {
                // Grace period 0: a terminating namespace must not wait for pods' kubelets.
                self.delete_in(state, kind, name, &object_name, &object, Some(0));
            }
        }
        // delete_in may already have removed the namespace when its last object went.
        finish_namespace(self, state, name).unwrap_or(current)
    }

    /// DELETE on a collection: deletes every matching object, returning them as a List.
    pub fn delete_collection(
        &self,
        def: &ResourceDef,
        namespace: Option<&str>,
        selectors: &Selectors,
        options: &DeleteOptions,
    ) -> ApiResult<Value> {
        let keys: Vec<(String, String)> = {
            let state = self.store.lock();
            state
                .list(&def.store_key(), namespace, None)
                .filter(|(_, o)| selectors.matches(o))
                .map(|(k, _)| k.clone())
                .collect()
        };
        let mut items = Vec::new();
        for (ns, name) in keys {
            match self.delete(def, &ns, &name, options) {
                Ok(object) => items.push(Value::clone(&object)),
                Err(e) if e.code == 404 => {}
                Err(e) => return Err(e),
            }
        }
        let rv = self.store.lock().resource_version();
        Ok(json!({
            "kind": format!("{}List", def.kind),
            "apiVersion": def.api_version(),
            "metadata": { "resourceVersion": rv.to_string() },
            "items": items,
        }))
    }
}

fn is_pod(def: &ResourceDef) -> bool {
    def.group.is_empty() && def.kind == "Pod"
}

/// The grace period of a pod deletion, as the pod registry computes it: the requested one, else
/// the pod's `terminationGracePeriodSeconds`; 0 for unscheduled or terminated pods; negative means 1.
pub(crate) fn pod_grace_period(pod: &Value, requested: Option<i64>) -> i64 {
    let scheduled = pod["spec"]["nodeName"].as_str().is_some_and(|n| !n.is_empty());
    let terminated = matches!(pod["status"]["phase"].as_str(), Some("Succeeded" | "Failed"));
    if !scheduled || terminated {
        return 0;
    }
    let grace = requested
        .or_else(|| pod["spec"]["terminationGracePeriodSeconds"].as_i64())
        .unwrap_or(0);
    if grace < 0 { 1 } else { grace }
}

/// The `deletionTimestamp` of an object being deleted.
fn deletion_deadline(object: &Value) -> Option<jiff::Timestamp> {
    let text = object["metadata"]["deletionTimestamp"].as_str()?;
    Some(text.parse().unwrap_or_else(|_| jiff::Timestamp::now()))
}

/// Removes an object now, releasing what it held, and completes the termination of its namespace
/// if it was the last object there.
pub(crate) fn remove_now(
    objects: &Objects,
    state: &mut State,
    def: &ResourceDef,
    namespace: &str,
    name: &str,
) -> Option<Arc<Value>> {
    let removed = state.remove(&def.store_key(), namespace, name)?;
    if def.kind == "Service" && def.group.is_empty() {
        objects.allocator().release(&removed);
    }
    if crate::crd::is_crd(def) {
        objects.registry.set_crd(name, Vec::new());
    }
    if def.namespaced {
        finish_namespace(objects, state, namespace);
    }
    if crate::namespace_content::is_namespace_content(def, name) {
        // The controllers put it back while the namespace lives.
        objects.fill_namespace(state, namespace);
    }
    Some(removed)
}

/// Removes a Terminating namespace once it is empty and has no finalizers of its own.
pub(crate) fn finish_namespace(objects: &Objects, state: &mut State, namespace: &str) -> Option<Arc<Value>> {
    let ns = state.get(NAMESPACES, "", namespace)?;
    let terminating = !ns["metadata"]["deletionTimestamp"].is_null();
    let finalizers = ns["metadata"]["finalizers"]
        .as_array()
        .is_some_and(|f| !f.is_empty());
    if !terminating || finalizers {
        return None;
    }
    let empty = !objects
        .registry
        .all()
        .any(|d| d.namespaced && state.any_in_namespace(&d.store_key(), namespace));
    if empty {
        state.remove(NAMESPACES, "", namespace)
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delete_options_from_body_and_query() {
        let body = br#"{"kind":"DeleteOptions","apiVersion":"v1","preconditions":{"uid":"u1","resourceVersion":"7"},"propagationPolicy":"Background"}"#;
        let options = DeleteOptions::parse(body, Some(5)).unwrap();
        assert_eq!(options.uid.as_deref(), Some("u1"));
        assert_eq!(options.resource_version.as_deref(), Some("7"));
        assert_eq!(options.grace_period_seconds, Some(5));
        assert!(DeleteOptions::parse(b"", None).unwrap().uid.is_none());
        assert!(DeleteOptions::parse(b"{", None).is_err());
    }

    #[test]
    fn pod_grace_periods() {
        let pod = |node: &str, phase: &str| {
            json!({"spec": {"nodeName": node, "terminationGracePeriodSeconds": 30},
                "status": {"phase": phase}})
        };
        assert_eq!(pod_grace_period(&pod("n", "Running"), None), 30);
        assert_eq!(pod_grace_period(&pod("n", "Running"), Some(5)), 5);
        assert_eq!(pod_grace_period(&pod("n", "Running"), Some(-1)), 1);
        assert_eq!(pod_grace_period(&pod("", "Pending"), Some(5)), 0);
        assert_eq!(pod_grace_period(&pod("n", "Succeeded"), None), 0);
    }
}
