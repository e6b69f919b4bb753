//! Prometheus metrics and the readiness / leadership status that the operations endpoints
//! (`/metrics`, `/readyz`) report.
//!
//! One [`Metrics`] per process: the binary creates it, instruments its clients with it, hands
//! it to [`crate::manager::run_with_metrics`] and serves it. Every name has the `vcsync_`
//! prefix; the README lists them.

use std::{collections::BTreeMap, fmt, sync::LazyLock};

use prometheus_client::{
    encoding::{EncodeLabelSet, text::encode},
    metrics::{counter::Counter, family::Family, gauge::Gauge, histogram::Histogram},
    registry::{Registry, Unit},
};

use crate::error::Side;

mod controller;
mod status;

use controller::reconcile_histogram;
pub use controller::{CacheLabels, KindLabels, ReconcileTimer, SafetyMetrics, SyncerMetrics};
pub use status::{Readiness, Role, Status};

/// Content type of [`Metrics::encode`]'s output.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Labels of the per-syncer metrics.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SyncerLabels {
    /// Name of the syncer.
    pub syncer: String,
}

/// Labels of the API request counter.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    /// `virtual` or `host`.
    pub cluster: String,
    /// Kubernetes verb: get, list, watch, create, update, patch, delete, deletecollection.
    pub verb: String,
    /// The resource, with its subresource (`pods`, `pods/status`); empty for other paths.
    pub resource: String,
    /// HTTP status code, or `error` when no response came back.
    pub code: String,
}

type HistogramFamily = Family<SyncerLabels, Histogram, fn() -> Histogram>;

/// Cached objects that did not decode, per kind (`vcsync_cache_decode_errors_total`): a bug
/// that fails the reconcile reading the object, never an absence. Process-wide, because caches
/// are built by the informers, far from the [`Metrics`] of the process; every [`Metrics`]
/// serves it.
pub static CACHE_DECODE_ERRORS: LazyLock<Family<KindLabels, Counter>> = LazyLock::new(Family::default);

/// Bytes the informers' caches hold, per cache (`vcsync_cache_bytes{cache="host/Pod"}`):
/// keys, compressed objects and the current compression dictionary for the kinds kept
/// encoded, keys and the objects' JSON for the kinds kept typed (a lower bound of their memory:
/// a typed object takes five to ten times its JSON). Process-wide, as
/// [`CACHE_DECODE_ERRORS`] is.
pub static CACHE_BYTES: LazyLock<Family<CacheLabels, Gauge>> = LazyLock::new(Family::default);

/// The process's metrics registry and status.
pub struct Metrics {
    registry: Registry,
    reconciles: Family<SyncerLabels, Counter>,
    reconcile_errors: Family<SyncerLabels, Counter>,
    reconcile_duration: HistogramFamily,
    queue_depth: Family<SyncerLabels, Gauge>,
    in_flight: Family<SyncerLabels, Gauge>,
    synced_objects: Family<KindLabels, Gauge>,
    api_requests: Family<RequestLabels, Counter>,
    safety: SafetyMetrics,
    status: Status,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for Metrics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Metrics")
            .field("status", &self.status)
            .finish_non_exhaustive()
    }
}

impl Metrics {
    /// A registry with every vcsync metric registered, the role [`Role::Leader`] and nothing
    /// synced yet.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("vcsync");
        let reconciles = Family::<SyncerLabels, Counter>::default();
        registry.register("reconciles", "Reconciles run, per syncer", reconciles.clone());
        let reconcile_errors = Family::<SyncerLabels, Counter>::default();
        registry.register(
            "reconcile_errors",
            "Reconciles that returned an error (conflicts included), per syncer",
            reconcile_errors.clone(),
        );
        let reconcile_duration: HistogramFamily = Family::new_with_constructor(reconcile_histogram);
        registry.register_with_unit(
            "reconcile_duration",
            "Duration of reconciles, per syncer",
            Unit::Seconds,
            reconcile_duration.clone(),
        );
        let queue_depth = Family::<SyncerLabels, Gauge>::default();
        registry.register(
            "queue_depth",
            "Keys queued for a reconcile that has not started yet, per syncer",
            queue_depth.clone(),
        );
        let in_flight = Family::<SyncerLabels, Gauge>::default();
        registry.register(
            "reconciles_in_flight",
            "Reconciles running now, per syncer",
            in_flight.clone(),
        );
        let synced_objects = Family::<KindLabels, Gauge>::default();
        registry.register(
            "synced_objects",
            "Host objects owned by this instance in the informer caches, per kind",
            synced_objects.clone(),
        );
        registry.register(
            "cache_decode_errors",
            "Cached objects that did not decode (a bug; the reconcile reading one fails and is retried), per kind",
            CACHE_DECODE_ERRORS.clone(),
        );
        registry.register(
            "cache_bytes",
            "Bytes the informers' caches hold, per cache (side/kind): keys, compressed objects and dictionary of the encoded kinds, keys and JSON of the typed ones",
            CACHE_BYTES.clone(),
        );
        let api_requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "api_requests",
            "Requests to the API servers, per cluster (virtual, host), verb, resource and status code",
            api_requests.clone(),
        );
        let leader = Gauge::default();
        registry.register(
            "leader",
            "1 when this replica is the leader (writes), 0 when it is a standby",
            leader.clone(),
        );
        let safety = SafetyMetrics::default();
        registry.register(
            "cluster_replaced",
            "1 when the virtual cluster is not the one the host record named at start (emptied or \
             replaced datastore)",
            safety.cluster_replaced.clone(),
        );
        registry.register(
            "earlier_cluster_objects",
            "Host objects made for an earlier virtual cluster, left untouched",
            safety.earlier_cluster_objects.clone(),
        );
        registry.register(
            "deletion_brake_engaged",
            "1 when host deletes are paused by the mass-deletion brake",
            safety.deletion_brake_engaged.clone(),
        );
        registry.register(
            "foreign_references",
            "Pods kept off the host because a host name they reference is held by an object this \
             virtual cluster does not own",
            safety.foreign_references.clone(),
        );
        registry.register(
            "host_deletes_held",
            "Host deletes not made: held by the brake or refused for an earlier cluster's copy",
            safety.host_deletes_held.clone(),
        );
        Self {
            registry,
            reconciles,
            reconcile_errors,
            reconcile_duration,
            queue_depth,
            in_flight,
            synced_objects,
            api_requests,
            safety,
            status: Status::new(leader),
        }
    }

    /// The text exposition (OpenMetrics), served at `/metrics` with [`CONTENT_TYPE`].
    pub fn encode(&self) -> String {
        let mut out = String::new();
        encode(&mut out, &self.registry).expect("writing to a String cannot fail");
        out
    }

    /// Readiness and leadership.
    pub fn status(&self) -> &Status {
        &self.status
    }

    /// The handles of the data-safety metrics.
    pub fn safety(&self) -> &SafetyMetrics {
        &self.safety
    }

    /// The metric handles of syncer `name`.
    pub fn syncer(&self, name: &str) -> SyncerMetrics {
        let labels = SyncerLabels {
            syncer: name.to_string(),
        };
        SyncerMetrics {
            reconciles: self.reconciles.get_or_create(&labels).clone(),
            errors: self.reconcile_errors.get_or_create(&labels).clone(),
            duration: self.reconcile_duration.get_or_create(&labels).clone(),
            queue_depth: self.queue_depth.get_or_create(&labels).clone(),
            in_flight: self.in_flight.get_or_create(&labels).clone(),
            synced_objects: self.synced_objects.clone(),
        }
    }

    /// Counts one request to the `side` API server.
    pub fn record_api_request(&self, side: Side, verb: &str, resource: &str, code: &str) {
        self.api_requests
            .get_or_create(&RequestLabels {
                cluster: side.to_string(),
                verb: verb.to_string(),
                resource: resource.to_string(),
                code: code.to_string(),
            })
            .inc();
    }
}

/// The API requests counted in a metrics text as `/metrics` serves it
/// (`vcsync_api_requests_total`), by (cluster, verb, resource), summed over status codes: the
/// reading side of [`Metrics::record_api_request`], for the bench and tests that tell the
/// syncer's requests apart from every other client's of a real API server.
pub fn api_requests_in(text: &str) -> BTreeMap<(String, String, String), u64> {
    let mut counts = BTreeMap::new();
    for line in text.lines() {
        let Some((labels, value)) = line
            .strip_prefix("vcsync_api_requests_total{")
            .and_then(|rest| rest.split_once("} "))
        else {
            continue;
        };
        let label = |name: &str| {
            labels
                .split(',')
                .find_map(|pair| pair.strip_prefix(name)?.strip_prefix("=\""))
                .and_then(|value| value.strip_suffix('"'))
                .unwrap_or_default()
                .to_string()
        };
        let n = value.trim().parse::<f64>().unwrap_or_default() as u64;
        *counts
            .entry((label("cluster"), label("verb"), label("resource")))
            .or_default() += n;
    }
    counts
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line<'a>(text: &'a str, prefix: &str) -> &'a str {
        text.lines()
            .find(|l| l.starts_with(prefix))
            .unwrap_or_else(|| panic!("no line starting with {prefix:?} in:\n{text}"))
    }

    #[test]
    fn reconciles_are_counted_timed_and_encoded_per_syncer() {
        let metrics = Metrics::new();
        let cm = metrics.syncer("configmaps");
        drop(cm.start_reconcile());
        let mut failing = cm.start_reconcile();
        assert_eq!(cm.in_flight.get(), 2 - 1);
        failing.failed();
        drop(failing);
        cm.queue_depth.set(3);
        cm.set_synced_objects("ConfigMap", 7);
        let text = metrics.encode();
        assert_eq!(
            line(&text, "vcsync_reconciles_total{"),
            r#"vcsync_reconciles_total{syncer="configmaps"} 2"#
        );
        assert_eq!(
            line(&text, "vcsync_reconcile_errors_total{"),
            r#"vcsync_reconcile_errors_total{syncer="configmaps"} 1"#
        );
        assert_eq!(
            line(&text, "vcsync_reconcile_duration_seconds_count{"),
            r#"vcsync_reconcile_duration_seconds_count{syncer="configmaps"} 2"#
        );
        assert!(text.contains("# TYPE vcsync_reconcile_duration_seconds histogram"));
        assert!(text.contains("# UNIT vcsync_reconcile_duration_seconds seconds"));
        assert_eq!(
            line(&text, "vcsync_queue_depth{"),
            r#"vcsync_queue_depth{syncer="configmaps"} 3"#
        );
        assert_eq!(
            line(&text, "vcsync_reconciles_in_flight{"),
            r#"vcsync_reconciles_in_flight{syncer="configmaps"} 0"#
        );
        assert_eq!(
            line(&text, "vcsync_synced_objects{"),
            r#"vcsync_synced_objects{kind="ConfigMap"} 7"#
        );
        assert!(text.ends_with("# EOF\n"), "{text}");
    }

    #[test]
    fn api_requests_are_counted_per_cluster_verb_and_code() {
        let metrics = Metrics::new();
        metrics.record_api_request(Side::Host, "create", "pods", "201");
        metrics.record_api_request(Side::Host, "create", "pods", "201");
        metrics.record_api_request(Side::Virtual, "list", "configmaps", "error");
        let text = metrics.encode();
        assert!(text.contains("# TYPE vcsync_api_requests counter"), "{text}");
        assert!(text.contains(
            r#"vcsync_api_requests_total{cluster="host",verb="create",resource="pods",code="201"} 2"#
        ));
        assert!(text.contains(
            r#"vcsync_api_requests_total{cluster="virtual",verb="list",resource="configmaps",code="error"} 1"#
        ));
        metrics.record_api_request(Side::Host, "create", "pods", "409");
        let counts = api_requests_in(&metrics.encode());
        let key = |c: &str, v: &str, r: &str| (c.to_string(), v.to_string(), r.to_string());
        assert_eq!(counts[&key("host", "create", "pods")], 3, "summed over codes");
        assert_eq!(counts[&key("virtual", "list", "configmaps")], 1);
        assert_eq!(counts.len(), 2, "{counts:?}");
    }

    #[test]
    fn the_same_syncer_shares_its_series() {
        let metrics = Metrics::new();
        drop(metrics.syncer("pods").start_reconcile());
        drop(metrics.syncer("pods").start_reconcile());
        assert_eq!(metrics.syncer("pods").reconciles.get(), 2);
    }

    #[test]
    fn readiness_follows_caches_controllers_role_and_shutdown() {
        let metrics = Metrics::new();
        let status = metrics.status();
        assert!(metrics.encode().contains("vcsync_leader 1\n"));
        let r = status.readiness();
        assert!(!r.ready);
        assert_eq!(r.to_string(), "not ready: caches not synced yet\nrole: leader\n");
        status.set_caches_synced(true);
        assert!(!status.readiness().ready);
        status.set_controllers_started(true);
        assert_eq!(
            status.readiness().to_string(),
            "ready: caches synced; controllers started\nrole: leader\n"
        );
        status.set_role(Role::Standby);
        status.set_controllers_started(false);
        let r = status.readiness();
        assert!(r.ready);
        assert_eq!(r.role, Role::Standby);
        assert!(r.to_string().ends_with("role: standby\n"));
        assert!(metrics.encode().contains("vcsync_leader 0\n"));
        status.set_shutting_down();
        assert_eq!(
            status.readiness().to_string(),
            "not ready: shutting down\nrole: standby\n"
        );
    }
}
