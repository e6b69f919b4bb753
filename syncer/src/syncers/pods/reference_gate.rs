//! A host pod names only host objects this virtual cluster owns.
//!
//! A pod's references are renamed for the host ([`super::references`]); whatever holds the
//! translated name there is what the kubelet mounts. So before a host pod is created, every
//! ConfigMap, Secret and claim it names must be this instance's copy of the virtual object of
//! that name (in the host cache of objects with its ownership label): a required reference to an object the virtual
//! cluster lacks, or whose copy is not on the host yet, keeps the pod waiting (as a kubelet
//! waits for a missing Secret); an optional one to a missing object is left out of the host
//! pod; one whose name a foreign object holds keeps the pod off the host with a
//! `HostNameCollision` event. The service-account token Secrets vcsync issues for the pod are
//! its own and not gated here.

use std::{
    collections::{BTreeSet, HashMap},
    sync::Mutex,
};

use k8s_openapi::api::core::v1::{ConfigMap, PersistentVolumeClaim, Pod, Secret};
use kube::{Resource, ResourceExt, runtime::reflector::ObjectRef};
use tokio::sync::mpsc;
use vcsync_translators::{NamespaceMapping, RefKind, RefTarget, VirtualKey};

use super::reference_sites::{sites, without_missing_optional};
use crate::{
    Action, Caches, Clients, Registrar, Result, SyncContext, cache::Cache, events::EventType,
    informer::InformerEvent, resource::virtual_key_of, safety::virtual_key_of_host, sdk::SyncResource,
};

/// Where one referenced object stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RefState {
    /// This instance's copy of the virtual object is on the host.
    Ready,
    /// The virtual cluster has no such object.
    Missing,
    /// The virtual object exists; its host copy does not yet.
    Pending,
    /// The kind's syncer is switched off: no copy will ever be made.
    NotSynced,
    /// A foreign host object holds the translated name.
    Foreign,
}

/// What the gate says to a pod about to be created on the host.
#[derive(Debug)]
pub enum Decision {
    /// Create it from the virtual pod.
    Go,
    /// Create it from this copy of the virtual pod, without the optional references in
    /// `left_out` (missing from the virtual cache).
    GoWithout { pod: Box<Pod>, left_out: Vec<RefTarget> },
    /// Not yet: the first reference that is not ready, and where it stands.
    Wait(RefTarget, RefState),
}

/// The two caches of one referenced kind, when its syncer runs.
struct Copies<K: SyncResource> {
    virtual_objects: Cache<K>,
    host_objects: Cache<K>,
}

impl<K: SyncResource> Copies<K> {
    fn of(caches: &Caches, synced: bool) -> Option<Self> {
        synced.then(|| Self {
            virtual_objects: caches.virtual_informer::<K>().store(),
            host_objects: caches.host_informer::<K>().store(),
        })
    }

    /// Decodes nothing: the host cache holds only objects with this instance's ownership
    /// label, and translated names are injective, so an object there at the translated name is
    /// this cluster's copy of that virtual object (an older one of the same name at worst,
    /// which its syncer is about to update).
    fn state(&self, gate: &ReferenceGate, target: &RefTarget) -> RefState {
        let ns = target.key.namespace.as_deref().unwrap_or_default();
        if !self
            .virtual_objects
            .contains(&ObjectRef::new(&target.key.name).within(ns))
        {
            return RefState::Missing;
        }
        if gate.collisions(&K::kind(&()), &target.key) {
            return RefState::Foreign;
        }
        let host_name = gate.mapping.host_object_name(ns, &target.key.name);
        let host_ns = gate.mapping.host_namespace(ns);
        if self
            .host_objects
            .contains(&ObjectRef::new(&host_name).within(&host_ns))
        {
            RefState::Ready
        } else {
            RefState::Pending
        }
    }
}

/// The gate of one pod syncer (see the module doc).
pub struct ReferenceGate {
    mapping: NamespaceMapping,
    caches: Caches,
    config_maps: Option<Copies<ConfigMap>>,
    secrets: Option<Copies<Secret>>,
    claims: Option<Copies<PersistentVolumeClaim>>,
    /// Pods waiting for a reference, by reference: reconciled when its copy shows up.
    waiting: Mutex<HashMap<RefTarget, BTreeSet<VirtualKey>>>,
}

impl ReferenceGate {
    /// The gate over the `caches` of the referenced kinds whose syncers the configuration of
    /// `clients` runs (references of the others never resolve).
    pub fn new(clients: &Clients, caches: &Caches) -> Self {
        let sync = &clients.config().sync;
        Self {
            mapping: clients.namespace_mapping().clone(),
            caches: caches.clone(),
            config_maps: Copies::of(caches, sync.config_maps.enabled),
            secrets: Copies::of(caches, sync.secrets.enabled),
            claims: Copies::of(caches, sync.persistent_volume_claims.enabled),
            waiting: Mutex::default(),
        }
    }

    fn collisions(&self, kind: &str, key: &VirtualKey) -> bool {
        self.caches.indices().collisions().contains(kind, key)
    }

    /// Where the object `target` stands.
    pub fn state(&self, target: &RefTarget) -> RefState {
        let state = match target.kind {
            RefKind::ConfigMap => self.config_maps.as_ref().map(|c| c.state(self, target)),
            RefKind::Secret => self.secrets.as_ref().map(|c| c.state(self, target)),
            RefKind::PersistentVolumeClaim => self.claims.as_ref().map(|c| c.state(self, target)),
            RefKind::ServiceAccount => Some(RefState::Ready),
        };
        state.unwrap_or(RefState::NotSynced)
    }

    /// Whether `virt` may be created on the host, and from what. A pod told to wait is
    /// reconciled again when the copy it waits for appears (see [`ReferenceGate::ready_pods`]).
    pub fn decide(&self, virt: &Pod) -> Decision {
        let Some(spec) = virt.spec.as_ref() else {
            return Decision::Go;
        };
        let ns = virt.namespace().unwrap_or_default();
        let mut missing_optional = false;
        let mut optional = Vec::new();
        for site in sites(spec) {
            let target = RefTarget::new(site.kind, ns.as_str(), site.name.as_str());
            let state = self.state(&target);
            if site.optional {
                optional.push(target.clone());
            }
            match state {
                RefState::Ready => {}
                RefState::Missing if site.optional => missing_optional = true,
                state => {
                    self.waiting
                        .lock()
                        .expect("waiting lock")
                        .entry(target.clone())
                        .or_default()
                        .insert(virtual_key_of(virt));
                    return Decision::Wait(target, state);
                }
            }
        }
        if !missing_optional {
            return Decision::Go;
        }
        // An optional reference goes unless its copy is there now: one found missing above may
        // have come since (a Secret created a moment before its pod), its host name held by a
        // foreign object; kept, the host pod would name that object.
        optional.retain(|target| self.state(target) != RefState::Ready);
        let mut pod = virt.clone();
        if let Some(spec) = pod.spec.as_mut() {
            without_missing_optional(spec, |kind, name| {
                optional.contains(&RefTarget::new(kind, ns.as_str(), name))
            });
        }
        Decision::GoWithout {
            pod: Box::new(pod),
            left_out: optional,
        }
    }

    /// The first reference of the running pod `virt` whose host name a foreign object holds
    /// now (its copy was replaced behind vcsync's back), if any.
    pub fn foreign_reference(&self, virt: &Pod) -> Option<RefTarget> {
        if virt.spec.is_none() || self.caches.indices().collisions().is_empty() {
            return None;
        }
        let ns = virt.namespace().unwrap_or_default();
        sites(virt.spec.as_ref()?)
            .into_iter()
            .map(|site| RefTarget::new(site.kind, ns.as_str(), site.name.as_str()))
            .find(|target| self.state(target) == RefState::Foreign)
    }

    /// The pods waiting for a copy that appeared on the host, as the host informers of the
    /// referenced kinds report them (read by tasks of `registrar`'s).
    pub fn ready_pods(
        self: &std::sync::Arc<Self>,
        registrar: &Registrar,
    ) -> Vec<futures::stream::BoxStream<'static, VirtualKey>> {
        let mut streams = Vec::new();
        if self.config_maps.is_some() {
            streams.push(self.ready_pods_of::<ConfigMap>(registrar, RefKind::ConfigMap));
        }
        if self.secrets.is_some() {
            streams.push(self.ready_pods_of::<Secret>(registrar, RefKind::Secret));
        }
        if self.claims.is_some() {
            streams
                .push(self.ready_pods_of::<PersistentVolumeClaim>(registrar, RefKind::PersistentVolumeClaim));
        }
        streams.push(self.collided_pods(registrar));
        streams
    }

    /// The pods waiting for a copy that a foreign object turned out to block: they are told.
    fn collided_pods(
        self: &std::sync::Arc<Self>,
        registrar: &Registrar,
    ) -> futures::stream::BoxStream<'static, VirtualKey> {
        use futures::StreamExt;
        let mut noted = self.caches.indices().collisions().noted();
        let gate = self.clone();
        let (tx, rx) = mpsc::unbounded_channel();
        registrar.spawn_background(async move {
            while let Some((kind, key)) = noted.recv().await {
                let kind = match kind.as_str() {
                    "ConfigMap" => RefKind::ConfigMap,
                    "Secret" => RefKind::Secret,
                    "PersistentVolumeClaim" => RefKind::PersistentVolumeClaim,
                    _ => continue,
                };
                for pod in gate.take_waiting(&RefTarget { kind, key }) {
                    if tx.send(pod).is_err() {
                        return;
                    }
                }
            }
        });
        tokio_stream::wrappers::UnboundedReceiverStream::new(rx).boxed()
    }

    fn take_all_waiting(&self, kind: RefKind) -> Vec<VirtualKey> {
        let mut waiting = self.waiting.lock().expect("waiting lock");
        let targets: Vec<RefTarget> = waiting.keys().filter(|t| t.kind == kind).cloned().collect();
        let pods = targets.iter().filter_map(|t| waiting.remove(t)).flatten();
        pods.collect::<BTreeSet<_>>().into_iter().collect()
    }

    fn take_waiting(&self, target: &RefTarget) -> Vec<VirtualKey> {
        let waiting = self.waiting.lock().expect("waiting lock").remove(target);
        waiting.into_iter().flatten().collect()
    }

    fn ready_pods_of<K: SyncResource>(
        self: &std::sync::Arc<Self>,
        registrar: &Registrar,
        kind: RefKind,
    ) -> futures::stream::BoxStream<'static, VirtualKey> {
        use futures::StreamExt;
        let mut events = self.caches.host_informer::<K>().subscribe();
        let gate = self.clone();
        let (tx, rx) = mpsc::unbounded_channel();
        registrar.spawn_background(async move {
            while let Some(event) = events.recv().await {
                let pods = match event {
                    InformerEvent::Applied(host) => match virtual_key_of_host(host.meta()) {
                        Some(key) => gate.take_waiting(&RefTarget { kind, key }),
                        None => continue,
                    },
                    // A re-list (after a 410, say) brings copies without an event of their own.
                    InformerEvent::Relisted => gate.take_all_waiting(kind),
                    InformerEvent::Deleted(_) => continue,
                };
                for pod in pods {
                    if tx.send(pod).is_err() {
                        return;
                    }
                }
            }
        });
        tokio_stream::wrappers::UnboundedReceiverStream::new(rx).boxed()
    }
}

/// How often a pod waiting for a reference is looked at again without a trigger.
const WAIT_RETRY: std::time::Duration = std::time::Duration::from_secs(30);

/// Keeps `virt` off the host for `target`: tells the tenant why (unless the copy is merely on
/// its way) and counts a foreign reference.
pub async fn wait_for(
    ctx: &SyncContext<Pod>,
    virt: &Pod,
    target: &RefTarget,
    state: RefState,
) -> Result<Action> {
    let ns = target.key.namespace.as_deref().unwrap_or_default();
    let host_name = ctx
        .clients()
        .namespace_mapping()
        .host_object_name(ns, &target.key.name);
    if state == RefState::Foreign {
        ctx.oversight().host_guard().report_foreign_reference();
    }
    if let Some((reason, message)) = waiting_message(target, state, &host_name) {
        tracing::info!(pod = %virtual_key_of(virt), reason, "{message}");
        ctx.events()
            .publish(&virt.object_ref(&()), EventType::Warning, reason, &message)
            .await;
    }
    Ok(Action::requeue(WAIT_RETRY))
}

/// What a waiting pod is told (None: nothing to say, the copy is on its way).
pub fn waiting_message(
    target: &RefTarget,
    state: RefState,
    host_name: &str,
) -> Option<(&'static str, String)> {
    let kind = match target.kind {
        RefKind::ConfigMap => "ConfigMap",
        RefKind::Secret => "Secret",
        RefKind::PersistentVolumeClaim => "PersistentVolumeClaim",
        RefKind::ServiceAccount => "ServiceAccount",
    };
    let name = &target.key.name;
    match state {
        RefState::Ready | RefState::Pending => None,
        RefState::NotSynced => Some((
            "WaitingForReference",
            format!(
                "not running on the host: it references {kind} {name}, and {kind} sync is switched \
                 off in vcsync's configuration, so the host has no copy of it"
            ),
        )),
        RefState::Missing => Some((
            "WaitingForReference",
            format!("not running on the host yet: {kind} {name} does not exist in this namespace"),
        )),
        RefState::Foreign => Some((
            "HostNameCollision",
            format!(
                "not running on the host: the host name {host_name} of {kind} {name} is held by an \
                 object this virtual cluster does not own; rename the {kind} or have the host \
                 object removed"
            ),
        )),
    }
}
