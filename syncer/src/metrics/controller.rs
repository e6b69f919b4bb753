//! The metrics of the controllers and of the host guard: per-syncer reconcile counters, the
//! reconcile timer, synced objects per kind, and what the host guard reports.

use std::time::Instant;

use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{
        counter::Counter,
        family::Family,
        gauge::Gauge,
        histogram::{Histogram, exponential_buckets},
    },
};

/// Labels of the per-kind metrics.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabels {
    /// Kubernetes kind.
    pub kind: String,
}

/// Labels of the per-cache metrics.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CacheLabels {
    /// The cache: its side and kind (`host/Pod`).
    pub cache: String,
}

pub(crate) fn reconcile_histogram() -> Histogram {
    // 1 ms .. ~16 s.
    Histogram::new(exponential_buckets(0.001, 2.0, 15))
}

/// What the host guard ([`crate::safety`]) reports; detached from any registry by default.
#[derive(Clone, Debug, Default)]
pub struct SafetyMetrics {
    /// 1 when the virtual cluster was replaced since the record was written.
    pub cluster_replaced: Gauge,
    /// Host objects of an earlier virtual cluster left untouched.
    pub earlier_cluster_objects: Gauge,
    /// 1 while the mass-deletion brake holds deletes.
    pub deletion_brake_engaged: Gauge,
    /// Host deletes held back.
    pub host_deletes_held: Counter,
    /// Pods kept off the host for a reference to a foreign host object.
    pub foreign_references: Counter,
}

/// The metrics of one syncer's controller; detached from any registry by default (tests).
#[derive(Clone, Debug)]
pub struct SyncerMetrics {
    /// Reconciles run.
    pub reconciles: Counter,
    /// Reconciles that failed.
    pub errors: Counter,
    /// Reconcile durations.
    pub duration: Histogram,
    /// Keys waiting for a reconcile.
    pub queue_depth: Gauge,
    /// Reconciles running.
    pub in_flight: Gauge,
    pub(crate) synced_objects: Family<KindLabels, Gauge>,
}

impl Default for SyncerMetrics {
    fn default() -> Self {
        Self {
            reconciles: Counter::default(),
            errors: Counter::default(),
            duration: reconcile_histogram(),
            queue_depth: Gauge::default(),
            in_flight: Gauge::default(),
            synced_objects: Family::default(),
        }
    }
}

impl SyncerMetrics {
    /// Marks a reconcile as started; dropping the guard records it as ended (an error when
    /// [`ReconcileTimer::failed`] was called).
    pub fn start_reconcile(&self) -> ReconcileTimer<'_> {
        self.in_flight.inc();
        ReconcileTimer {
            metrics: self,
            started: Instant::now(),
            failed: false,
        }
    }

    /// Sets the number of this instance's host objects of `kind` in the cache.
    pub fn set_synced_objects(&self, kind: &str, count: usize) {
        self.synced_objects
            .get_or_create(&KindLabels {
                kind: kind.to_string(),
            })
            .set(i64::try_from(count).unwrap_or(i64::MAX));
    }
}

/// A reconcile in progress; see [`SyncerMetrics::start_reconcile`].
pub struct ReconcileTimer<'a> {
    metrics: &'a SyncerMetrics,
    started: Instant,
    failed: bool,
}

impl ReconcileTimer<'_> {
    /// The reconcile returned an error.
    pub fn failed(&mut self) {
        self.failed = true;
    }
}

impl Drop for ReconcileTimer<'_> {
    fn drop(&mut self) {
        self.metrics.in_flight.dec();
        self.metrics.reconciles.inc();
        if self.failed {
            self.metrics.errors.inc();
        }
        self.metrics
            .duration
            .observe(self.started.elapsed().as_secs_f64());
    }
}
