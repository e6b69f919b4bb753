//! One dynamic controller per configured resource: a watch of the virtual objects and one of
//! the host objects (toHost: this instance's, in the one host namespace or, in the
//! per-namespace mapping, in every namespace; fromHost: the host's own, in the host namespace
//! of `virtualNamespace`), both into reflector caches, feeding a keyed work queue of virtual keys. The queue is worked on the
//! writing replica only, after every cache has listed once; a key is reconciled by one
//! reconcile at a time; conflicts are retried after 50 ms, other errors back off per key.

use std::{
    collections::{BTreeSet, HashMap},
    sync::Arc,
    time::Duration,
};

use futures::StreamExt;
use kube::{
    Api, Client, Resource, ResourceExt,
    api::{DeleteParams, DynamicObject, PostParams, Preconditions},
    runtime::{
        WatchStreamExt,
        reflector::{self, ObjectRef, Store, reflector},
        watcher,
    },
};
use tokio::sync::Notify;
use vcsync_syncer::safety::{Admission, Verdict};
use vcsync_syncer::{
    Error, RegisterContext, Result, Side,
    error::{api_error, status_code},
    events::EventType,
    writes::FIELD_MANAGER,
};
use vcsync_translators::{ClusterScopedTranslator, HostKey, MANAGED_BY_LABEL, NameTranslator, VirtualKey};

use crate::{
    config::{Direction, ResourceConfig},
    crd::Served,
    translate::{
        desired_host, desired_mirror, host_watch_namespace, in_sync, is_mirror, set_status, status,
        with_hooks,
    },
};

/// A conflict: someone wrote in between; look again soon.
const CONFLICT_RETRY: Duration = Duration::from_millis(50);
/// A cache is behind a write that just happened.
const CACHE_LAG_RETRY: Duration = Duration::from_millis(100);
/// A foreign object holds the name; it will not go away soon.
const FOREIGN_RETRY: Duration = Duration::from_secs(300);
/// First and last backoff of a failing key.
const BACKOFF: (Duration, Duration) = (Duration::from_millis(200), Duration::from_secs(300));

/// One resource's controller state.
struct Sync {
    ctx: RegisterContext,
    config: ResourceConfig,
    served: Served,
    /// Virtual key -> host key (toHost), in the configured namespace mapping.
    translator: Arc<dyn NameTranslator>,
    /// The host namespace watched (None: all namespaces, or a cluster-scoped kind); fromHost:
    /// the namespace mirrored.
    host_namespace: Option<String>,
    virtual_store: Store<DynamicObject>,
    host_store: Store<DynamicObject>,
}

/// Starts the watches of `config` (on every replica) and queues its controller.
pub fn register(ctx: &RegisterContext, config: ResourceConfig, served: Served) {
    let translator: Arc<dyn NameTranslator> = if served.namespaced {
        Arc::from(ctx.clients().namespaced_translator())
    } else {
        Arc::new(ClusterScopedTranslator::new(ctx.clients().ownership().clone()))
    };
    let host_namespace = host_watch_namespace(
        ctx.clients().namespace_mapping(),
        served.namespaced,
        config.direction,
        &config.virtual_namespace,
    );
    let ar = served.resource.clone();
    let virtual_api: Api<DynamicObject> = Api::all_with(ctx.clients().virtual_client().clone(), &ar);
    let host_api = api_in(ctx.clients().host_client(), host_namespace.as_deref(), &ar);
    let host_watch = match config.direction {
        Direction::ToHost => watcher::Config::default().labels(&ctx.clients().ownership().label_selector()),
        // vcsync's own copies are not the host's objects.
        Direction::FromHost => watcher::Config::default().labels(&format!("!{MANAGED_BY_LABEL}")),
    };
    let queue = Arc::new(Queue::default());
    let (virtual_store, virtual_events) = cache(ctx, virtual_api, watcher::Config::default(), &ar);
    let (host_store, host_events) = cache(ctx, host_api, host_watch, &ar);
    let sync = Arc::new(Sync {
        ctx: ctx.clone(),
        config,
        served,
        translator,
        host_namespace,
        virtual_store,
        host_store,
    });
    for (events, host) in [(virtual_events, false), (host_events, true)] {
        let (sync, queue) = (sync.clone(), queue.clone());
        ctx.registrar().spawn_background(events.for_each(move |event| {
            let keys = match event {
                Ok(watcher::Event::Delete(obj)) if !host => {
                    let keys = sync.keys_of(&obj, host);
                    for key in &keys {
                        sync.ctx
                            .oversight()
                            .host_guard()
                            .witness_deleted(sync.kind(), key);
                    }
                    keys
                }
                Ok(watcher::Event::Apply(obj) | watcher::Event::Delete(obj)) => sync.keys_of(&obj, host),
                // After a (re)list, deletions missed during a watch gap show only as absence.
                Ok(watcher::Event::InitDone) => sync.all_keys(),
                Ok(_) => Vec::new(),
                Err(err) => {
                    tracing::debug!(error = %err, kind = %sync.served.resource.kind, "watch error; retrying");
                    Vec::new()
                }
            };
            queue.add(keys);
            futures::future::ready(())
        }));
    }
    let name = format!("{}/{}", crate::NAME, sync.served.resource.plural);
    ctx.registrar().spawn(&name, work(sync, queue));
}

/// The `Api` of the resource in `namespace` (None: all namespaces, or a cluster-scoped kind).
fn api_in(client: &Client, namespace: Option<&str>, ar: &kube::api::ApiResource) -> Api<DynamicObject> {
    match namespace {
        Some(ns) => Api::namespaced_with(client.clone(), ns, ar),
        None => Api::all_with(client.clone(), ar),
    }
}

type Events =
    futures::stream::BoxStream<'static, std::result::Result<watcher::Event<DynamicObject>, watcher::Error>>;

/// A reflector cache over `api`; the manager waits for its first list before controllers run.
fn cache(
    ctx: &RegisterContext,
    api: Api<DynamicObject>,
    config: watcher::Config,
    ar: &kube::api::ApiResource,
) -> (Store<DynamicObject>, Events) {
    let writer = reflector::store::Writer::new(ar.clone());
    let store = writer.as_reader();
    let ready = store.clone();
    ctx.registrar().add_readiness(async move {
        let _ = ready.wait_until_ready().await;
    });
    let events = reflector(
        writer,
        watcher(api, config)
            .default_backoff()
            .modify(|obj| obj.managed_fields_mut().clear()),
    )
    .boxed();
    (store, events)
}

/// Keys waiting for a reconcile: a set, so that a replica that does not write (or a busy one)
/// holds each key once however many events arrive.
#[derive(Default)]
struct Queue {
    pending: std::sync::Mutex<BTreeSet<VirtualKey>>,
    wake: Notify,
}

impl Queue {
    fn add(&self, keys: impl IntoIterator<Item = VirtualKey>) {
        let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        let before = pending.len();
        pending.extend(keys);
        if pending.len() > before {
            self.wake.notify_one();
        }
    }

    /// Waits for keys and takes them all.
    async fn take(&self) -> BTreeSet<VirtualKey> {
        loop {
            let batch = std::mem::take(&mut *self.pending.lock().unwrap_or_else(|p| p.into_inner()));
            if !batch.is_empty() {
                return batch;
            }
            self.wake.notified().await;
        }
    }
}

/// Works the queue: batches of distinct keys, one reconcile per key at a time.
async fn work(sync: Arc<Sync>, queue: Arc<Queue>) {
    queue.add(sync.all_keys());
    let mut failures: HashMap<VirtualKey, u32> = HashMap::new();
    loop {
        for key in queue.take().await {
            let retry = match sync.reconcile(&key).await {
                Ok(retry) => {
                    failures.remove(&key);
                    retry
                }
                Err(err) if err.is_conflict() => Some(CONFLICT_RETRY),
                Err(err) => {
                    let attempts = failures.entry(key.clone()).or_default();
                    *attempts += 1;
                    let delay = BACKOFF
                        .0
                        .saturating_mul(1 << (*attempts - 1).min(16))
                        .min(BACKOFF.1);
                    tracing::warn!(error = %err, key = ?key, retry_in = ?delay, "reconcile failed");
                    Some(delay)
                }
            };
            if let Some(delay) = retry {
                let queue = queue.clone();
                tokio::spawn(async move {
                    tokio::time::sleep(delay).await;
                    queue.add([key]);
                });
            }
        }
    }
}

fn post_params() -> PostParams {
    PostParams {
        field_manager: Some(FIELD_MANAGER.to_string()),
        ..PostParams::default()
    }
}

fn delete_params(obj: &DynamicObject) -> DeleteParams {
    DeleteParams {
        preconditions: obj.metadata.uid.clone().map(|uid| Preconditions {
            uid: Some(uid),
            resource_version: None,
        }),
        ..DeleteParams::background()
    }
}

fn display(key: &VirtualKey) -> String {
    match &key.namespace {
        Some(ns) => format!("{ns}/{}", key.name),
        None => key.name.clone(),
    }
}

impl Sync {
    fn kind(&self) -> &str {
        &self.served.resource.kind
    }

    /// The virtual keys an object of either side concerns.
    fn keys_of(&self, obj: &DynamicObject, host: bool) -> Vec<VirtualKey> {
        let key = match (host, self.config.direction) {
            (true, Direction::ToHost) => self.translator.virtual_key(&obj.metadata),
            (true, Direction::FromHost) => Some(self.mirror_key(&obj.name_any())),
            (false, _) => Some(VirtualKey::new(obj.metadata.namespace.clone(), obj.name_any())),
        };
        key.into_iter().collect()
    }

    fn all_keys(&self) -> Vec<VirtualKey> {
        let virt = self
            .virtual_store
            .state()
            .into_iter()
            .flat_map(|o| self.keys_of(&o, false));
        let host = self
            .host_store
            .state()
            .into_iter()
            .flat_map(|o| self.keys_of(&o, true));
        virt.chain(host).collect()
    }

    /// fromHost: the virtual key of the mirror of host object `name`.
    fn mirror_key(&self, name: &str) -> VirtualKey {
        VirtualKey::new(
            self.served
                .namespaced
                .then(|| self.config.virtual_namespace.clone()),
            name.to_string(),
        )
    }

    fn virtual_object(&self, key: &VirtualKey) -> Option<Arc<DynamicObject>> {
        let mut r = ObjectRef::new_with(&key.name, self.served.resource.clone());
        if let Some(ns) = &key.namespace {
            r = r.within(ns);
        }
        self.virtual_store.get(&r)
    }

    fn host_object(&self, key: &HostKey) -> Option<Arc<DynamicObject>> {
        let mut r = ObjectRef::new_with(&key.name, self.served.resource.clone());
        if let Some(ns) = &key.namespace {
            r = r.within(ns);
        }
        self.host_store.get(&r)
    }

    /// The `Api` for the host object `key` (its namespace; the cluster scope when it has none).
    fn host_api(&self, key: &HostKey) -> Api<DynamicObject> {
        api_in(
            self.ctx.clients().host_client(),
            key.namespace.as_deref(),
            &self.served.resource,
        )
    }

    fn virtual_api(&self, namespace: Option<&str>) -> Api<DynamicObject> {
        api_in(
            self.ctx.clients().virtual_client(),
            namespace,
            &self.served.resource,
        )
    }

    /// The host copy `virt` should have, after the hooks for host objects of this kind.
    fn desired_host(&self, virt: &DynamicObject) -> DynamicObject {
        let desired = desired_host(virt, self.kind(), self.translator.as_ref(), &self.references());
        with_hooks(self.ctx.oversight().hooks(), Side::Host, self.kind(), desired)
    }

    /// The virtual mirror `host` should have at `key`, after the hooks for virtual objects of
    /// this kind.
    fn desired_mirror(&self, host: &DynamicObject, key: &VirtualKey) -> DynamicObject {
        let desired = desired_mirror(host, key.namespace.as_deref());
        with_hooks(self.ctx.oversight().hooks(), Side::Virtual, self.kind(), desired)
    }

    async fn reconcile(&self, key: &VirtualKey) -> Result<Option<Duration>> {
        match self.config.direction {
            Direction::ToHost => self.sync_to_host(key).await,
            Direction::FromHost => self.sync_from_host(key).await,
        }
    }

    async fn sync_to_host(&self, key: &VirtualKey) -> Result<Option<Duration>> {
        let host_key = self.translator.host_key(key);
        let host_name = host_key.name.clone();
        let virt = self
            .virtual_object(key)
            .filter(|v| v.metadata.deletion_timestamp.is_none());
        let host = self.host_object(&host_key);
        let guard = self.ctx.oversight().host_guard();
        match &host {
            None => guard.forget_earlier(self.kind(), key),
            Some(host) => match guard.verdict(self.kind(), key, &host.metadata, virt.is_some()) {
                Verdict::Sync => {}
                Verdict::Keep => return Ok(None),
                Verdict::Prune => {
                    self.delete_host(host, virt.is_some()).await?;
                    return Ok(Some(Duration::from_millis(100)));
                }
            },
        }
        match (virt, host) {
            (None, None) => Ok(None),
            (None, Some(host)) => self.delete_host(&host, false).await,
            (Some(virt), None) => self.create_host(&virt).await,
            (Some(virt), Some(host)) => {
                if !self.ctx.clients().ownership().owns(&host.metadata) {
                    return Ok(None);
                }
                // Hooks changed `desired` already: their changes are in sync, not a reason to write.
                let desired = self.desired_host(&virt);
                if !in_sync(&host, &desired) {
                    let mut update = desired;
                    update.metadata.resource_version = host.metadata.resource_version.clone();
                    set_status(&mut update, status(&host).cloned());
                    self.host_api(&host_key)
                        .replace(&host_name, &post_params(), &update)
                        .await
                        .map_err(api_error(Side::Host, "update", self.kind(), &host_name))?;
                    tracing::info!(host = %host_name, kind = %self.kind(), "updated host object");
                }
                if self.config.status_up
                    && let Some(host_status) = status(&host)
                    && status(&virt) != Some(host_status)
                {
                    let mut up = DynamicObject::clone(&virt);
                    set_status(&mut up, Some(host_status.clone()));
                    let api = self.virtual_api(virt.metadata.namespace.as_deref());
                    let name = virt.name_any();
                    let written = if self.served.has_status {
                        api.replace_status(&name, &post_params(), &up).await
                    } else {
                        api.replace(&name, &post_params(), &up).await
                    };
                    written.map_err(api_error(
                        Side::Virtual,
                        "update status of",
                        self.kind(),
                        &display(key),
                    ))?;
                    tracing::info!(key = %display(key), kind = %self.kind(), "status synced up");
                }
                Ok(None)
            }
        }
    }

    fn references(&self) -> Vec<String> {
        self.config.references.iter().map(|r| r.path.clone()).collect()
    }

    async fn create_host(&self, virt: &DynamicObject) -> Result<Option<Duration>> {
        let desired = self.desired_host(virt);
        let host_key = HostKey::new(desired.metadata.namespace.clone(), desired.name_any());
        let name = desired.name_any();
        match self.host_api(&host_key).create(&post_params(), &desired).await {
            Ok(_) => {
                tracing::info!(host = %name, kind = %self.kind(), "created host object");
                Ok(None)
            }
            Err(err) if status_code(&err) == Some(409) => {
                let existing = self.host_api(&host_key).get_opt(&name).await.map_err(api_error(
                    Side::Host,
                    "get",
                    self.kind(),
                    &name,
                ))?;
                match existing {
                    Some(existing) if !self.ctx.clients().ownership().owns(&existing.metadata) => {
                        let error = Error::ForeignHostObject {
                            host: name,
                            instance: self.ctx.clients().ownership().instance().to_string(),
                        };
                        tracing::warn!(error = %error, "name collision with a foreign host object");
                        self.ctx
                            .oversight()
                            .events()
                            .publish(
                                &virt.object_ref(&self.served.resource),
                                EventType::Warning,
                                "HostNameCollision",
                                &error.to_string(),
                            )
                            .await;
                        Ok(Some(FOREIGN_RETRY))
                    }
                    _ => Ok(Some(CACHE_LAG_RETRY)),
                }
            }
            // The per-namespace mapping: the host namespace is not there yet (the namespace
            // syncer makes it); back off without telling the tenant about it.
            Err(err) if status_code(&err) == Some(404) => {
                Err(api_error(Side::Host, "create", self.kind(), &name)(err))
            }
            Err(err) => {
                let error = api_error(Side::Host, "create", self.kind(), &name)(err);
                if let Error::Api { source, .. } = &error
                    && let kube::Error::Api(status) = source.as_ref()
                    && (400..500).contains(&status.code)
                {
                    self.ctx
                        .oversight()
                        .events()
                        .publish(
                            &virt.object_ref(&self.served.resource),
                            EventType::Warning,
                            "SyncFailed",
                            &error.to_string(),
                        )
                        .await;
                }
                Err(error)
            }
        }
    }

    /// Deletes a host copy whose virtual object is gone: only ours, only that very object.
    /// `virtual_present`: whether the virtual namesake exists (the delete is not decided on an
    /// absence), for the host guard.
    async fn delete_host(&self, host: &DynamicObject, virtual_present: bool) -> Result<Option<Duration>> {
        if !self.ctx.clients().ownership().owns(&host.metadata) {
            return Ok(None);
        }
        match self
            .ctx
            .oversight()
            .host_guard()
            .admit_delete(self.kind(), &host.metadata, virtual_present)
        {
            Admission::Allowed => {}
            Admission::Earlier => return Ok(None),
            Admission::Held => return Ok(Some(Duration::from_secs(300))),
        }
        let name = host.name_any();
        let host_key = HostKey::new(host.metadata.namespace.clone(), name.clone());
        match self.host_api(&host_key).delete(&name, &delete_params(host)).await {
            Ok(_) => tracing::info!(host = %name, kind = %self.kind(), "deleted host object"),
            Err(err) if status_code(&err) == Some(404) => {}
            Err(err) => return Err(api_error(Side::Host, "delete", self.kind(), &name)(err)),
        }
        Ok(None)
    }

    async fn sync_from_host(&self, key: &VirtualKey) -> Result<Option<Duration>> {
        let host_key = HostKey::new(self.host_namespace.clone(), key.name.clone());
        let host = self
            .host_object(&host_key)
            .filter(|h| !h.labels().contains_key(MANAGED_BY_LABEL));
        let virt = self.virtual_object(key);
        let api = self.virtual_api(key.namespace.as_deref());
        let kind = self.kind().to_string();
        match (host, virt) {
            (_, Some(virt)) if !is_mirror(&virt.metadata) || virt.metadata.deletion_timestamp.is_some() => {
                Ok(None)
            }
            (None, None) => Ok(None),
            (None, Some(virt)) => {
                match api.delete(&key.name, &delete_params(&virt)).await {
                    Ok(_) => tracing::info!(key = %display(key), %kind, "removed virtual mirror"),
                    Err(err) if status_code(&err) == Some(404) => {}
                    Err(err) => return Err(api_error(Side::Virtual, "delete", &kind, &display(key))(err)),
                }
                Ok(None)
            }
            (Some(host), None) => {
                let desired = self.desired_mirror(&host, key);
                match api.create(&post_params(), &desired).await {
                    Ok(_) => {
                        tracing::info!(key = %display(key), %kind, "mirrored host object into the virtual cluster");
                        Ok(None)
                    }
                    Err(err) if status_code(&err) == Some(409) => Ok(Some(CACHE_LAG_RETRY)),
                    Err(err) => Err(api_error(Side::Virtual, "create", &kind, &display(key))(err)),
                }
            }
            (Some(host), Some(virt)) => {
                let desired = self.desired_mirror(&host, key);
                let status_differs = status(&virt) != status(&desired);
                if !in_sync(&virt, &desired) || (status_differs && !self.served.has_status) {
                    let mut update = desired.clone();
                    update.metadata.resource_version = virt.metadata.resource_version.clone();
                    if self.served.has_status {
                        set_status(&mut update, status(&virt).cloned());
                    }
                    api.replace(&key.name, &post_params(), &update)
                        .await
                        .map_err(api_error(Side::Virtual, "update", &kind, &display(key)))?;
                    tracing::info!(key = %display(key), %kind, "reverted the virtual mirror to the host object");
                    // The status (if it differs too) follows on the update's event.
                    return Ok(None);
                }
                if status_differs {
                    let mut update = DynamicObject::clone(&virt);
                    set_status(&mut update, status(&desired).cloned());
                    api.replace_status(&key.name, &post_params(), &update)
                        .await
                        .map_err(api_error(Side::Virtual, "update status of", &kind, &display(key)))?;
                }
                Ok(None)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_queue_holds_each_key_once_and_wakes_the_worker() {
        let queue = Arc::new(Queue::default());
        let key = |n: &str| VirtualKey::namespaced("ns", n);
        queue.add([key("a"), key("b"), key("a")]);
        queue.add([key("a")]);
        assert_eq!(queue.take().await, BTreeSet::from([key("a"), key("b")]));
        let waiting = tokio::spawn({
            let queue = queue.clone();
            async move { queue.take().await }
        });
        tokio::task::yield_now().await;
        queue.add([key("c")]);
        assert_eq!(waiting.await.unwrap(), BTreeSet::from([key("c")]));
    }
}
