//! The object write and read paths: create, get, list, update (main resource and `/status`),
//! patch (including server-side apply) and pod binding, with Kubernetes metadata semantics
//! (uid, generation, resourceVersion preconditions, immutable fields). Deletion lives in
//! [`crate::deletion`].

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use base64::Engine as _;
use serde_json::{Value, json};

use crate::admission;
use crate::patch::{self, PatchKind};
use crate::representation::ListPage;
use crate::resources::{Registry, ResourceDef};
use crate::selectors::Selectors;
use crate::service_alloc::ServiceAllocator;
use crate::status::{ApiError, ApiResult};
use crate::store::{State, Store, object_key};

/// The object layer: the store plus the registry and the allocators it needs.
pub(crate) struct Objects {
    pub registry: Registry,
    pub store: Store,
    allocator: Mutex<ServiceAllocator>,
}

/// The store key of the namespaces table.
pub(crate) const NAMESPACES: &str = "/namespaces";

impl Objects {
    /// An object layer holding `restored` (persisted state) if given, with the built-in
    /// namespaces (each with its default ServiceAccount and root CA ConfigMap) and the
    /// `kubernetes` Service created when missing.
    pub fn new(
        registry: Registry,
        history: usize,
        allocator: ServiceAllocator,
        restored: Option<crate::persist::Restored>,
    ) -> Self {
        let objects = Objects {
            registry,
            store: Store::new(history),
            allocator: Mutex::new(allocator),
        };
        if let Some(restored) = restored {
            objects.restore(restored);
            objects.fill_all_namespaces();
        }
        let namespaces = objects
            .registry
            .find("", "v1", "namespaces")
            .expect("namespaces are built in");
        for name in ["default", "kube-system", "kube-public", "kube-node-lease"] {
            if objects.store.lock().get(NAMESPACES, "", name).is_some() {
                continue;
            }
            let body = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}});
            objects.create(&namespaces, "", body).expect("built-in namespace");
        }
        // The API server's own Service; created first, it gets the first address of the range.
        let services = objects
            .registry
            .find("", "v1", "services")
            .expect("services are built in");
        if objects
            .store
            .lock()
            .get(&services.store_key(), "default", "kubernetes")
            .is_none()
        {
            let kubernetes = json!({"apiVersion": "v1", "kind": "Service",
                "metadata": {"name": "kubernetes", "namespace": "default",
                    "labels": {"component": "apiserver", "provider": "kubernetes"}},
                "spec": {"type": "ClusterIP",
                    "ports": [{"name": "https", "port": 443, "protocol": "TCP", "targetPort": 6443}]}});
            objects
                .create(&services, "default", kubernetes)
                .expect("the kubernetes service");
        }
        objects
    }

    /// Loads persisted objects: the types of stored CRDs are served again and the addresses of
    /// stored Services are taken, so that none is handed out twice.
    fn restore(&self, restored: crate::persist::Restored) {
        let crds = format!("{}/{}", crate::crd::GROUP, crate::crd::PLURAL);
        for crd in restored.tables.get(&crds).into_iter().flatten() {
            let name = crd["metadata"]["name"].as_str().unwrap_or_default();
            match crate::crd::defs_of(crd) {
                Ok(types) => self.registry.set_crd(name, types),
                Err(e) => {
                    tracing::warn!(crd = name, error = %e, "a stored CRD is invalid; its types are not served")
                }
            }
        }
        {
            let mut allocator = self.allocator();
            for service in restored.tables.get("/services").into_iter().flatten() {
                if !allocator.restore(service) {
                    let (namespace, name) = object_key(service);
                    tracing::warn!(%namespace, %name,
                        "a stored Service has an address outside the ranges or taken twice");
                }
            }
        }
        self.store
            .lock()
            .restore(restored.resource_version, restored.tables);
    }

    pub(crate) fn allocator(&self) -> MutexGuard<'_, ServiceAllocator> {
        self.allocator
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// GET of one object.
    pub fn get(&self, def: &ResourceDef, namespace: &str, name: &str) -> ApiResult<Arc<Value>> {
        self.store
            .lock()
            .get(&def.store_key(), namespace, name)
            .ok_or_else(|| ApiError::not_found(&def.group, &def.plural, name))
    }

    /// LIST, with selectors and limit/continue pagination. Pages are cut from the current state
    /// (not a snapshot at the first page's resourceVersion): a documented simplification.
    pub fn list(
        &self,
        def: &ResourceDef,
        namespace: Option<&str>,
        selectors: &Selectors,
        limit: Option<usize>,
        continue_token: Option<&str>,
    ) -> ApiResult<ListPage> {
        let after = continue_token.map(decode_continue).transpose()?;
        let state = self.store.lock();
        let mut items = Vec::new();
        let mut next = None;
        let mut matching = state
            .list(&def.store_key(), namespace, after.as_ref())
            .filter(|(_, object)| selectors.matches(object));
        for (key, object) in matching.by_ref() {
            items.push(object.clone());
            if limit.is_some_and(|l| items.len() >= l) {
                next = Some(key.clone());
                break;
            }
        }
        let remaining = next.as_ref().map(|_| matching.count()).unwrap_or(0);
        let mut metadata = json!({ "resourceVersion": state.resource_version().to_string() });
        if let Some(key) = next.filter(|_| remaining > 0) {
            metadata["continue"] = json!(encode_continue(&key));
            metadata["remainingItemCount"] = json!(remaining);
        }
        Ok(ListPage {
            kind: format!("{}List", def.kind),
            api_version: def.api_version(),
            metadata,
            items,
            // kube-apiserver's items of built-in kinds have no kind and apiVersion; custom
            // resources (unstructured) keep theirs.
            item_types: def.crd.is_some(),
        })
    }

    /// POST: creates an object in `namespace` (empty for cluster-scoped kinds).
    pub fn create(&self, def: &ResourceDef, namespace: &str, body: Value) -> ApiResult<Arc<Value>> {
        let mut state = self.store.lock();
        self.create_in(&mut state, def, namespace, body)
    }

    /// Create under a held store lock.
    pub(crate) fn create_in(
        &self,
        state: &mut State,
        def: &ResourceDef,
        namespace: &str,
        mut body: Value,
    ) -> ApiResult<Arc<Value>> {
        check_type(def, &mut body)?;
        check_namespace(def, namespace, &mut body)?;
        let meta = &mut body["metadata"];
        let generate = meta["generateName"].as_str().map(str::to_string);
        let explicit = meta["name"]
            .as_str()
            .filter(|n| !n.is_empty())
            .map(str::to_string);
        if let Some(meta) = meta.as_object_mut() {
            for field in [
                "resourceVersion",
                "deletionTimestamp",
                "deletionGracePeriodSeconds",
                "selfLink",
            ] {
                meta.remove(field);
            }
        }
        meta["uid"] = json!(new_uid());
        meta["creationTimestamp"] = json!(now_rfc3339());
        if body.get("spec").is_some() {
            body["metadata"]["generation"] = json!(1);
        }
        admission::default_on_create(def, &mut body);
        admission::default_on_write(def, &mut body);
        crate::managed_fields::on_create(state, def, &mut body);

        if def.namespaced {
            check_namespace_open(state, namespace)?;
        }
        let name = match (explicit, generate) {
            (Some(name), _) => name,
            (None, Some(prefix)) if !prefix.is_empty() => {
                // Retry on the rare suffix collision, as the real server's generator effectively does.
                (0..16)
                    .map(|_| format!("{prefix}{}", random_suffix()))
                    .find(|n| state.get(&def.store_key(), namespace, n).is_none())
                    .unwrap_or_else(|| format!("{prefix}{}", random_suffix()))
            }
            _ => String::new(),
        };
        body["metadata"]["name"] = json!(name);
        admission::admit_create(state, def, &mut body, None)?;
        let errors = admission::validate(def, &body, None);
        if !errors.is_empty() {
            return Err(ApiError::invalid_fields(&def.group, &def.kind, &name, &errors));
        }
        if state.get(&def.store_key(), namespace, &name).is_some() {
            return Err(ApiError::already_exists(&def.group, &def.plural, &name));
        }
        if def.kind == "Service" && def.group.is_empty() {
            self.allocator()
                .assign(&mut body, None)
                .map_err(|e| ApiError::invalid("", "Service", &name, e))?;
        }
        let crd_types = self.check_crd(def, &name, &mut body)?;
        let created = state.put(&def.store_key(), body);
        if let Some(types) = crd_types {
            self.registry.set_crd(&name, types);
        }
        if def.store_key() == NAMESPACES {
            self.fill_namespace(state, &name);
        }
        Ok(created)
    }

    /// PUT of the main resource (`sub` None) or of `status`.
    pub fn update(
        &self,
        def: &ResourceDef,
        namespace: &str,
        name: &str,
        sub: Option<&str>,
        mut body: Value,
    ) -> ApiResult<Arc<Value>> {
        check_type(def, &mut body)?;
        check_namespace(def, namespace, &mut body)?;
        let body_name = body["metadata"]["name"].as_str().unwrap_or_default();
        if body_name != name {
            return Err(ApiError::bad_request(format!(
                "the name of the object ({body_name}) does not match the name on the URL ({name})"
            )));
        }
        let mut state = self.store.lock();
        let old = state
            .get(&def.store_key(), namespace, name)
            .ok_or_else(|| ApiError::not_found(&def.group, &def.plural, name))?;
        self.write_existing(&mut state, def, sub, body, &old)
    }

    /// PATCH (all formats; apply creates when missing).
    #[allow(clippy::too_many_arguments)]
    pub fn patch(
        &self,
        def: &ResourceDef,
        namespace: &str,
        name: &str,
        sub: Option<&str>,
        kind: PatchKind,
        body: &[u8],
        // Field validation of the patched object (crate::field_validation); may prune it.
        check: &dyn Fn(PatchKind, &mut Value) -> ApiResult<()>,
    ) -> ApiResult<Arc<Value>> {
        let invalid = |e: String| ApiError::invalid(&def.group, &def.kind, name, e);
        if kind == PatchKind::Apply {
            return crate::managed_fields::apply_patch(self, def, namespace, name, sub, body, check);
        }
        let mut state = self.store.lock();
        let old = state
            .get(&def.store_key(), namespace, name)
            .ok_or_else(|| ApiError::not_found(&def.group, &def.plural, name))?;
        let mut patched = Value::clone(&old);
        patch::apply(kind, &mut patched, body).map_err(invalid)?;
        check(kind, &mut patched)?;
        self.write_existing(&mut state, def, sub, patched, &old)
    }

    /// The common end of update and patch: subresource rules, preconditions, immutable metadata,
    /// defaulting, generation, no-op detection and finalizer-completed removal.
    pub(crate) fn write_existing(
        &self,
        state: &mut State,
        def: &ResourceDef,
        sub: Option<&str>,
        mut new: Value,
        old: &Arc<Value>,
    ) -> ApiResult<Arc<Value>> {
        let (namespace, name) = object_key(old);
        match sub {
            Some("status") => {
                let mut merged = Value::clone(old);
                merged["status"] = new["status"].take();
                merged["metadata"]["resourceVersion"] = new["metadata"]["resourceVersion"].take();
                new = merged;
            }
            Some("ephemeralcontainers") if def.kind == "Pod" => {
                new = crate::ephemeral::merged(&new, old)
                    .map_err(|e| ApiError::field_invalid("", "Pod", &name, &e.field, e.type_, &e.detail))?;
            }
            Some(other) => return Err(ApiError::no_route(&format!("{}/{other}", def.plural))),
            None if def.has_status() => new["status"] = old["status"].clone(),
            None => {}
        }
        if new["status"].is_null()
            && let Some(map) = new.as_object_mut()
        {
            map.remove("status");
        }
        let requested_rv = new["metadata"]["resourceVersion"].as_str().unwrap_or_default();
        if !requested_rv.is_empty() && requested_rv != old["metadata"]["resourceVersion"] {
            return Err(ApiError::stale(&def.group, &def.plural, &name));
        }
        for field in [
            "uid",
            "creationTimestamp",
            "deletionTimestamp",
            "deletionGracePeriodSeconds",
            "generation",
        ] {
            match old["metadata"].get(field) {
                Some(value) => new["metadata"][field] = value.clone(),
                None => {
                    if let Some(meta) = new["metadata"].as_object_mut() {
                        meta.remove(field);
                    }
                }
            }
        }
        new["metadata"]["name"] = json!(name);
        if def.namespaced {
            new["metadata"]["namespace"] = json!(namespace);
        }
        new["kind"] = json!(def.kind);
        new["apiVersion"] = json!(def.api_version());
        admission::default_on_write(def, &mut new);
        crate::managed_fields::on_update(state, def, sub, old, &mut new);
        if sub.is_none() {
            admission::admit_create(state, def, &mut new, Some(old))?;
            let errors = admission::validate(def, &new, Some(old));
            if !errors.is_empty() {
                return Err(ApiError::invalid_fields(&def.group, &def.kind, &name, &errors));
            }
        }
        if def.kind == "Service" && def.group.is_empty() {
            self.allocator()
                .assign(&mut new, Some(old))
                .map_err(|e| ApiError::invalid("", "Service", &name, e))?;
        }
        let crd_types = self.check_crd(def, &name, &mut new)?;
        if new.get("spec") != old.get("spec") {
            let generation = old["metadata"]["generation"].as_i64().unwrap_or(0) + 1;
            new["metadata"]["generation"] = json!(generation);
        }
        new["metadata"]["resourceVersion"] = old["metadata"]["resourceVersion"].clone();
        crate::managed_fields::keep_times_if_noop(&mut new, old);
        if new == **old {
            return Ok(old.clone());
        }
        // Removing the last finalizer completes a deletion, unless a grace period (a pod's) is
        // still pending: then the grace-0 delete completes it.
        let finalized = !new["metadata"]["deletionTimestamp"].is_null()
            && new["metadata"]["finalizers"].as_array().is_none_or(Vec::is_empty)
            && new["metadata"]["deletionGracePeriodSeconds"]
                .as_i64()
                .unwrap_or(0)
                == 0;
        let is_namespace = def.store_key() == NAMESPACES;
        if finalized && !is_namespace {
            return Ok(crate::deletion::remove_now(self, state, def, &namespace, &name)
                .unwrap_or_else(|| old.clone()));
        }
        let stored = state.put(&def.store_key(), new);
        if let Some(types) = crd_types {
            self.registry.set_crd(&name, types);
        }
        // A Terminating namespace whose own finalizers were just removed may now be done.
        if is_namespace && let Some(removed) = crate::deletion::finish_namespace(self, state, &name) {
            return Ok(removed);
        }
        Ok(stored)
    }

    /// For a CustomResourceDefinition: validates it, marks it established and returns the
    /// types it defines (registered once it is stored). None for other kinds.
    fn check_crd(
        &self,
        def: &ResourceDef,
        name: &str,
        body: &mut Value,
    ) -> ApiResult<Option<Vec<ResourceDef>>> {
        if !crate::crd::is_crd(def) {
            return Ok(None);
        }
        let types =
            crate::crd::defs_of(body).map_err(|e| ApiError::invalid(&def.group, &def.kind, name, e))?;
        crate::crd::accept(body);
        Ok(Some(types))
    }

    /// POST pods/{name}/binding: assigns the pod to a node.
    /// Returns the bound pod.
    pub fn bind(
        &self,
        def: &ResourceDef,
        namespace: &str,
        name: &str,
        body: &Value,
    ) -> ApiResult<Arc<Value>> {
        let node = body["target"]["name"]
            .as_str()
            .filter(|n| !n.is_empty())
            .ok_or_else(|| {
                ApiError::invalid(
                    "",
                    "Binding",
                    name,
                    "target.name: Required value: a node name is required",
                )
            })?;
        if let Some(named) = body["metadata"]["name"]
            .as_str()
            .filter(|n| !n.is_empty() && n != &name)
        {
            return Err(ApiError::bad_request(format!(
                "name in URL ({name}) does not match name in Binding object ({named})"
            )));
        }
        let mut state = self.store.lock();
        let old = state
            .get(&def.store_key(), namespace, name)
            .ok_or_else(|| ApiError::not_found(&def.group, &def.plural, name))?;
        if let Some(uid) = body["metadata"]["uid"].as_str().filter(|u| !u.is_empty())
            && old["metadata"]["uid"] != uid
        {
            return Err(ApiError::conflict(
                "",
                "pods/binding",
                name,
                &format!("Precondition failed: UID in precondition: {uid}"),
            ));
        }
        let refuse = |why: String| Err(ApiError::conflict("", "pods/binding", name, &why));
        if let Some(current) = old["spec"]["nodeName"].as_str().filter(|n| !n.is_empty()) {
            return refuse(format!("pod {name} is already assigned to node \"{current}\""));
        }
        if !old["metadata"]["deletionTimestamp"].is_null() {
            return refuse(format!(
                "pod {name} is being deleted, cannot be assigned to a host"
            ));
        }
        let mut pod = Value::clone(&old);
        pod["spec"]["nodeName"] = json!(node);
        // As the pod registry does: the binding's annotations are copied onto the pod.
        if let Some(annotations) = body["metadata"]["annotations"].as_object() {
            for (key, value) in annotations {
                pod["metadata"]["annotations"][key] = value.clone();
            }
        }
        let condition = json!({"type": "PodScheduled", "status": "True", "lastProbeTime": null,
            "lastTransitionTime": now_rfc3339()});
        patch::strategic_merge(&mut pod["status"], &json!({ "conditions": [condition] }));
        Ok(state.put(&def.store_key(), pod))
    }
}

/// Checks `kind` / `apiVersion` of a body against the URL's type and fills them in when absent.
fn check_type(def: &ResourceDef, body: &mut Value) -> ApiResult<()> {
    if !body.is_object() {
        return Err(ApiError::bad_request("the request body must be a JSON object"));
    }
    let api_version = def.api_version();
    match body["apiVersion"].as_str() {
        Some(v) if v != api_version => {
            return Err(ApiError::bad_request(format!(
                "the API version in the data ({v}) does not match the expected API version ({api_version})"
            )));
        }
        _ => body["apiVersion"] = json!(api_version),
    }
    match body["kind"].as_str() {
        Some(k) if k != def.kind => {
            return Err(ApiError::bad_request(format!(
                "the kind in the data ({k}) does not match the expected kind ({})",
                def.kind
            )));
        }
        _ => body["kind"] = json!(def.kind),
    }
    if !body["metadata"].is_object() {
        body["metadata"] = json!({});
    }
    Ok(())
}

fn check_namespace(def: &ResourceDef, namespace: &str, body: &mut Value) -> ApiResult<()> {
    let meta = &mut body["metadata"];
    if !def.namespaced {
        if let Some(m) = meta.as_object_mut() {
            m.remove("namespace");
        }
        return Ok(());
    }
    match meta["namespace"].as_str() {
        Some(ns) if !ns.is_empty() && ns != namespace => Err(ApiError::bad_request(
            "the namespace of the provided object does not match the namespace sent on the request",
        )),
        _ => {
            meta["namespace"] = json!(namespace);
            Ok(())
        }
    }
}

/// Namespaced writes need an existing namespace that is not being deleted.
pub(crate) fn check_namespace_open(state: &State, namespace: &str) -> ApiResult<()> {
    let ns = state
        .get(NAMESPACES, "", namespace)
        .ok_or_else(|| ApiError::not_found("", "namespaces", namespace))?;
    if !ns["metadata"]["deletionTimestamp"].is_null() {
        return Err(ApiError::forbidden(format!(
            "unable to create new content in namespace {namespace} because it is being terminated"
        )));
    }
    Ok(())
}

fn encode_continue(key: &(String, String)) -> String {
    let text = json!({ "start": [key.0, key.1] }).to_string();
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(text)
}

fn decode_continue(token: &str) -> ApiResult<(String, String)> {
    let bad = || ApiError::bad_request(format!("invalid continue token {token:?}"));
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(token)
        .map_err(|_| bad())?;
    let value: Value = serde_json::from_slice(&bytes).map_err(|_| bad())?;
    let part = |i: usize| value["start"][i].as_str().map(str::to_string).ok_or_else(bad);
    Ok((part(0)?, part(1)?))
}

/// The current time as Kubernetes writes timestamps (RFC 3339, seconds, UTC).
pub(crate) fn now_rfc3339() -> String {
    format_timestamp(jiff::Timestamp::now())
}

/// A timestamp as Kubernetes writes them (RFC 3339, seconds, UTC).
pub(crate) fn format_timestamp(at: jiff::Timestamp) -> String {
    at.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
}

/// splitmix64 over a process-wide counter seeded from the clock: unique enough for uids and
/// generateName suffixes without a random-number dependency.
fn next_random() -> u64 {
    static STATE: AtomicU64 = AtomicU64::new(0);
    let seed = STATE.load(Ordering::Relaxed);
    if seed == 0 {
        let now = jiff::Timestamp::now().as_nanosecond() as u64;
        let _ = STATE.compare_exchange(0, now | 1, Ordering::Relaxed, Ordering::Relaxed);
    }
    let mut z = STATE
        .fetch_add(0x9E37_79B9_7F4A_7C15, Ordering::Relaxed)
        .wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

fn new_uid() -> String {
    let (a, b) = (next_random(), next_random());
    format!(
        "{:08x}-{:04x}-4{:03x}-{:04x}-{:012x}",
        a >> 32,
        (a >> 16) & 0xffff,
        a & 0xfff,
        0x8000 | (b >> 48) & 0x3fff,
        b & 0xffff_ffff_ffff
    )
}

/// Five characters from the alphabet Kubernetes uses for generateName (no vowels, no confusables).
fn random_suffix() -> String {
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let mut n = next_random();
    (0..5)
        .map(|_| {
            let c = ALPHABET[(n % ALPHABET.len() as u64) as usize] as char;
            n /= ALPHABET.len() as u64;
            c
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn continue_tokens_round_trip() {
        let key = ("ns".to_string(), "name".to_string());
        assert_eq!(decode_continue(&encode_continue(&key)).unwrap(), key);
        assert!(decode_continue("garbage!").is_err());
    }

    #[test]
    fn identifiers_look_right() {
        let uid = new_uid();
        assert_eq!(uid.len(), 36);
        assert_ne!(uid, new_uid());
        assert_eq!(random_suffix().len(), 5);
        assert!(now_rfc3339().ends_with('Z'));
    }
}
