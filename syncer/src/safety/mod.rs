//! The host guard: nothing is deleted on the host because a virtual cluster forgot it.
//!
//! Two failures could wipe a tenant's host objects, and the guard stands in the way of both:
//!
//! - **A replaced virtual cluster** (an emptied datastore after a pod restart, a restored
//!   backup of another cluster): its objects are all "gone". Every host object names the
//!   virtual cluster it was made for ([`identity`]); copies made for an earlier one are left
//!   alone and reported until an operator decides (`--adopt-previous`, `--prune-previous`).
//! - **Mass deletion for any other reason** (a datastore rolled back, a bug): deletes whose
//!   reason no watch event witnessed are limited per minute ([`brake`]); past the limit they
//!   are held and reported.
//!
//! The guard is consulted by the controllers before they act on a host object and by every
//! host delete; it reports through the `vcsync_*` safety metrics, `/readyz` warnings, logs and
//! Events on the host-side identity record.

pub mod brake;
pub mod identity;
pub mod record;

use std::{
    collections::{HashMap, HashSet},
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use k8s_openapi::{api::core::v1::ObjectReference, apimachinery::pkg::apis::meta::v1::ObjectMeta};
use serde::{Deserialize, Serialize};
use tokio::time::Instant;
use vcsync_translators::{
    OBJECT_NAME_ANNOTATION, OBJECT_NAMESPACE_ANNOTATION, VirtualKey, is_copy_of_restored,
};

use crate::{
    events::{EventRecorder, EventType},
    metrics::{Metrics, SafetyMetrics},
};
use brake::{Brake, BrakeConfig, DeletionBrake};
use identity::{ClusterIdentity, Lineage};

/// `safety` in vcsync.yaml.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SafetyConfig {
    /// What to do with host copies made for an earlier virtual cluster.
    #[serde(default)]
    pub earlier_copies: EarlierCopies,
    /// The brake on mass deletion.
    #[serde(default)]
    pub deletion_brake: BrakeConfig,
}

/// `safety.earlierCopies`: what to do with host copies made for an earlier virtual cluster.
/// Nothing (keep them untouched and report them) by default; the flags `--adopt-previous`,
/// `--prune-previous` and `--restore-from-host` switch these on.
#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EarlierCopies {
    /// Re-link each to the current cluster's object of the same kind and name once that
    /// exists: updated in place (a pod, which cannot be, is replaced).
    #[serde(default)]
    pub adopt: bool,
    /// Delete those not re-linked.
    #[serde(default)]
    pub prune: bool,
    /// Recreate the virtual objects of copies that describe them fully (ConfigMaps, Secrets,
    /// PersistentVolumeClaims) and re-link them; implies `adopt`.
    #[serde(default)]
    pub restore: bool,
}

impl EarlierCopies {
    fn adopts(self) -> bool {
        self.adopt || self.restore
    }

    fn prunes(self) -> bool {
        self.prune
    }

    fn any(self) -> bool {
        self.adopt || self.prune || self.restore
    }
}

/// What a controller does with a host object, given its lineage.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// The current cluster's (or a re-linked) copy: sync as usual.
    Sync,
    /// An earlier cluster's copy: touch nothing.
    Keep,
    /// An earlier cluster's copy the operator asked to prune: delete it.
    Prune,
}

/// What the guard says to one host delete.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Admission {
    /// Delete.
    Allowed,
    /// Do not: the object is an earlier cluster's copy.
    Earlier,
    /// Do not yet: the mass-deletion brake holds deletes.
    Held,
}

/// The ConfigMap the control plane publishes into every namespace with its root CA.
const ROOT_CA_CONFIG_MAP: &str = "kube-root-ca.crt";

/// A virtual deletion seen by a watch is remembered this long: enough for its host delete.
const WITNESS_TTL: Duration = Duration::from_secs(600);

type KindKey = (String, VirtualKey);
type HostCount = Box<dyn Fn() -> usize + Send + Sync>;

/// Where the guard reports to: metrics, `/readyz` and Events on the host.
struct Reports {
    metrics: SafetyMetrics,
    status: Option<Arc<Metrics>>,
    host_events: Option<(EventRecorder, ObjectReference)>,
}

impl Reports {
    fn warn(&self, topic: &'static str, text: Option<String>) {
        if let Some(metrics) = &self.status {
            metrics.status().set_warning(topic, text);
        }
    }

    fn host_event(&self, reason: &'static str, message: String) {
        if let Some((events, record)) = self.host_events.clone()
            && let Ok(runtime) = tokio::runtime::Handle::try_current()
        {
            runtime.spawn(async move {
                events
                    .publish(&record, EventType::Warning, reason, &message)
                    .await;
            });
        }
    }
}

/// The guard of one manager (see the module doc).
pub struct HostGuard {
    identity: Option<ClusterIdentity>,
    policy: EarlierCopies,
    brake: Mutex<DeletionBrake>,
    host_counts: Mutex<Vec<HostCount>>,
    witnessed: Mutex<HashMap<KindKey, Instant>>,
    earlier: Mutex<HashSet<KindKey>>,
    earlier_count: AtomicUsize,
    reports: Reports,
}

impl HostGuard {
    /// A guard that knows no identity (every object is current) with `config`'s brake,
    /// reporting nowhere: for contexts built without [`record::establish`].
    pub fn unidentified(config: &SafetyConfig) -> Self {
        Self {
            identity: None,
            policy: config.earlier_copies,
            brake: Mutex::new(DeletionBrake::new(config.deletion_brake.clone())),
            host_counts: Mutex::default(),
            witnessed: Mutex::default(),
            earlier: Mutex::default(),
            earlier_count: AtomicUsize::new(0),
            reports: Reports {
                metrics: SafetyMetrics::default(),
                status: None,
                host_events: None,
            },
        }
    }

    /// A guard for the virtual cluster `established` names, reporting into `metrics` and, with
    /// `host_events`, as Events on the identity record.
    pub fn new(
        config: &SafetyConfig,
        established: &record::Established,
        metrics: Arc<Metrics>,
        host_events: Option<EventRecorder>,
    ) -> Self {
        let mut guard = Self::unidentified(config);
        guard.identity = Some(established.current.clone());
        guard.reports = Reports {
            metrics: metrics.safety().clone(),
            host_events: host_events.map(|events| (events, established.record_ref.clone())),
            status: Some(metrics),
        };
        if config.earlier_copies.any() {
            tracing::warn!(policy = ?config.earlier_copies, "host copies made for an earlier virtual cluster are re-linked or deleted as the policy says");
        }
        if let identity::Startup::Replaced { previous } = &established.startup {
            let text = format!(
                "the virtual cluster was replaced (kube-system UID {} where the host record names {}): \
                 its datastore was emptied or swapped. Host copies made for the earlier cluster are \
                 left untouched; restart vcsync with --adopt-previous to re-link those whose \
                 namesakes are recreated, --restore-from-host to recreate ConfigMaps, Secrets and \
                 claims from them, or --prune-previous to delete them",
                established.current.uid, previous.uid
            );
            tracing::error!("{text}");
            guard.reports.metrics.cluster_replaced.set(1);
            guard.reports.warn("identity", Some(text.clone()));
            guard.reports.host_event("VirtualClusterReplaced", text);
        }
        guard
    }

    /// Whether earlier copies are to be recreated in the virtual cluster (`--restore-from-host`).
    pub fn restores(&self) -> bool {
        self.policy.restore
    }

    /// The virtual cluster's identity, if known.
    pub fn identity(&self) -> Option<&ClusterIdentity> {
        self.identity.as_ref()
    }

    /// Counts `count()` among this instance's host objects, for the brake's share.
    pub fn count_host_objects(&self, count: impl Fn() -> usize + Send + Sync + 'static) {
        self.host_counts
            .lock()
            .expect("counts lock")
            .push(Box::new(count));
    }

    /// Notes that a watch saw the virtual `kind` object `key` deleted: deleting its host copy
    /// is then witnessed and does not count against the brake.
    pub fn witness_deleted(&self, kind: &str, key: &VirtualKey) {
        let now = Instant::now();
        let mut witnessed = self.witnessed.lock().expect("witnessed lock");
        if witnessed.len() >= 4096 {
            witnessed.retain(|_, at| now.duration_since(*at) < WITNESS_TTL);
        }
        witnessed.insert((kind.to_string(), key.clone()), now);
    }

    /// What to do with the host `kind` object `host` of virtual key `key`, given its virtual
    /// namesake's metadata when it exists.
    pub fn verdict(
        &self,
        kind: &str,
        key: &VirtualKey,
        host: &ObjectMeta,
        virt: Option<&ObjectMeta>,
    ) -> Verdict {
        let Lineage::Earlier { uid } = identity::lineage(self.identity.as_ref(), host) else {
            self.forget_earlier(kind, key);
            return Verdict::Sync;
        };
        // `vcsync cluster restore` recreated the very object this copy was made for, or this is
        // the control plane's own root CA bundle, which holds nothing of the tenant's and whose
        // earlier content verifies no server now: whatever the policy, the copy is re-linked
        // to its namesake (updated in place).
        let relinked = virt.is_some_and(|virt| {
            is_copy_of_restored(virt, host) || (kind == "ConfigMap" && key.name == ROOT_CA_CONFIG_MAP)
        });
        if relinked {
            tracing::info!(kind, key = %key, earlier = ?uid, "re-linking the host copy of a restored or control-plane object");
            self.forget_earlier(kind, key);
            return Verdict::Sync;
        }
        let virtual_present = virt.is_some();
        // A namespace is a container both clusters' copies may live in: pruning one whose
        // namesake exists would delete the current cluster's objects with it, so it re-links.
        if virtual_present && (self.policy.adopts() || (kind == "Namespace" && self.policy.prunes())) {
            tracing::info!(kind, key = %key, earlier = ?uid, "re-linking a copy made for an earlier virtual cluster");
            self.forget_earlier(kind, key);
            return Verdict::Sync;
        }
        if self.policy.prunes() {
            return Verdict::Prune;
        }
        self.remember_earlier(kind, key, uid.as_deref());
        Verdict::Keep
    }

    /// Whether the host `kind` object `host` may be deleted now; `virtual_present` says whether
    /// its virtual namesake is in the cache (then the syncer decided on what it sees, not on an
    /// absence).
    pub fn admit_delete(&self, kind: &str, host: &ObjectMeta, virtual_present: bool) -> Admission {
        let key = virtual_key_of_host(host);
        let lineage = identity::lineage(self.identity.as_ref(), host);
        // A re-linked copy is updated in place, never deleted (a ConfigMap the new cluster does
        // not use yet may still serve the earlier cluster's pods), except a pod, which cannot
        // be updated into its namesake and is replaced.
        let replaced = self.policy.adopts() && virtual_present && kind == "Pod";
        if lineage != Lineage::Current && !self.policy.prunes() && !replaced {
            self.reports.metrics.host_deletes_held.inc();
            return Admission::Earlier;
        }
        let witnessed = virtual_present
            || key.as_ref().is_some_and(|key| {
                self.witnessed
                    .lock()
                    .expect("witnessed lock")
                    .contains_key(&(kind.to_string(), key.clone()))
            })
            || (lineage != Lineage::Current && self.policy.prunes());
        if witnessed {
            return Admission::Allowed;
        }
        let owned: usize = self
            .host_counts
            .lock()
            .expect("counts lock")
            .iter()
            .map(|c| c())
            .sum();
        let answer = self
            .brake
            .lock()
            .expect("brake lock")
            .request(Instant::now(), owned);
        match answer {
            Brake::Released => Admission::Allowed,
            Brake::Engaged { limit } => {
                let text = format!(
                    "host deletes are paused: more than {limit} of this instance's {owned} host objects \
                     were to be deleted within a minute without a virtual deletion seen by a watch \
                     (a datastore rolled back or emptied?). Nothing more is deleted until vcsync \
                     restarts; if the deletion is wanted, set safety.deletionBrake.enabled: false"
                );
                tracing::error!("{text}");
                self.reports.metrics.deletion_brake_engaged.set(1);
                self.reports.metrics.host_deletes_held.inc();
                self.reports.warn("deletion brake", Some(text.clone()));
                self.reports.host_event("MassDeletionHeld", text);
                Admission::Held
            }
            Brake::Held => {
                self.reports.metrics.host_deletes_held.inc();
                Admission::Held
            }
        }
    }

    /// Counts a pod kept off the host because a name it references is held by a foreign
    /// host object (`vcsync_foreign_references`).
    pub fn report_foreign_reference(&self) {
        self.reports.metrics.foreign_references.inc();
    }

    /// Host objects of an earlier cluster seen and left untouched so far.
    pub fn earlier_objects(&self) -> usize {
        self.earlier_count.load(Ordering::Relaxed)
    }

    fn remember_earlier(&self, kind: &str, key: &VirtualKey, uid: Option<&str>) {
        let mut earlier = self.earlier.lock().expect("earlier lock");
        if !earlier.insert((kind.to_string(), key.clone())) {
            return;
        }
        let count = earlier.len();
        self.earlier_count.store(count, Ordering::Relaxed);
        self.reports.metrics.earlier_cluster_objects.set(count as i64);
        if count == 1 {
            tracing::warn!(
                kind,
                key = %key,
                earlier_cluster = uid.unwrap_or("unrecorded"),
                "leaving host copies made for an earlier virtual cluster untouched"
            );
        }
        self.reports.warn(
            "earlier copies",
            Some(format!(
                "{count} host objects made for an earlier virtual cluster are left untouched \
                 (--adopt-previous re-links those whose namesakes are recreated, \
                 --restore-from-host recreates what they describe, --prune-previous deletes them)"
            )),
        );
    }

    /// Notes that the host `kind` object of `key` is no earlier cluster's copy (any more): gone,
    /// re-linked or pruned.
    pub fn forget_earlier(&self, kind: &str, key: &VirtualKey) {
        if self.earlier_count.load(Ordering::Relaxed) == 0 {
            return;
        }
        let mut earlier = self.earlier.lock().expect("earlier lock");
        if earlier.remove(&(kind.to_string(), key.clone())) {
            let count = earlier.len();
            self.earlier_count.store(count, Ordering::Relaxed);
            self.reports.metrics.earlier_cluster_objects.set(count as i64);
            if count == 0 {
                self.reports.warn("earlier copies", None);
            }
        }
    }
}

/// The virtual key a host object names in its annotations (every translator writes them).
pub fn virtual_key_of_host(host: &ObjectMeta) -> Option<VirtualKey> {
    let annotations = host.annotations.as_ref()?;
    Some(VirtualKey::new(
        annotations.get(OBJECT_NAMESPACE_ANNOTATION).cloned(),
        annotations.get(OBJECT_NAME_ANNOTATION)?.clone(),
    ))
}

#[cfg(test)]
mod tests;
