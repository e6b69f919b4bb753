//! Request counters per (verb, resource), for tests asserting how many requests a client made.

use std::collections::BTreeMap;
use std::sync::Mutex;

/// A snapshot of request counts per (verb, resource).
///
/// Verbs are `get list watch create update patch delete deletecollection`; the resource is the
/// plural name, with `/status`, `/binding`, ... appended for subresources (`pods/status`).
/// Only HTTP requests are counted: the [`crate::Simulator`]'s writes are not, so that a benchmark
/// counts its client's requests alone.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RequestCounters {
    counts: BTreeMap<(String, String), u64>,
}

const WRITE_VERBS: &[&str] = &["create", "update", "patch", "delete", "deletecollection"];

impl RequestCounters {
    /// Requests with this verb on this resource.
    pub fn get(&self, verb: &str, resource: &str) -> u64 {
        self.counts
            .get(&(verb.to_string(), resource.to_string()))
            .copied()
            .unwrap_or(0)
    }

    /// All writes (create, update, patch, delete, deletecollection) on all resources.
    pub fn writes(&self) -> u64 {
        self.iter()
            .filter(|(verb, _, _)| WRITE_VERBS.contains(verb))
            .map(|(_, _, n)| n)
            .sum()
    }

    /// All writes on one resource (`pods`, or `pods/status`).
    pub fn writes_to(&self, resource: &str) -> u64 {
        self.iter()
            .filter(|(verb, r, _)| WRITE_VERBS.contains(verb) && *r == resource)
            .map(|(_, _, n)| n)
            .sum()
    }

    /// All counted requests.
    pub fn total(&self) -> u64 {
        self.counts.values().sum()
    }

    /// (verb, resource, count) in sorted order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str, u64)> {
        self.counts
            .iter()
            .map(|((verb, resource), n)| (verb.as_str(), resource.as_str(), *n))
    }

    pub(crate) fn add(&mut self, verb: &str, resource: &str) {
        *self
            .counts
            .entry((verb.to_string(), resource.to_string()))
            .or_default() += 1;
    }
}

/// Counters from (verb, resource, count) triples: another count of requests (a client's own)
/// read the same way.
impl FromIterator<(String, String, u64)> for RequestCounters {
    fn from_iter<I: IntoIterator<Item = (String, String, u64)>>(triples: I) -> Self {
        let mut counters = Self::default();
        for (verb, resource, n) in triples {
            *counters.counts.entry((verb, resource)).or_default() += n;
        }
        counters
    }
}

/// The live counters of a server.
#[derive(Debug, Default)]
pub(crate) struct LiveCounters {
    inner: Mutex<RequestCounters>,
}

impl LiveCounters {
    fn lock(&self) -> std::sync::MutexGuard<'_, RequestCounters> {
        self.inner.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Counts one request.
    pub fn record(&self, verb: &str, resource: &str) {
        self.lock().add(verb, resource);
    }

    /// A copy of the current counts.
    pub fn snapshot(&self) -> RequestCounters {
        self.lock().clone()
    }

    /// Sets every count back to zero.
    pub fn reset(&self) {
        *self.lock() = RequestCounters::default();
    }

    /// Prometheus text exposition of `apiserver_request_total`.
    pub fn prometheus(&self) -> String {
        let mut text = String::from(
            "# HELP apiserver_request_total Counter of apiserver requests by verb and resource.\n\
             # TYPE apiserver_request_total counter\n",
        );
        for (verb, resource, n) in self.snapshot().iter() {
            text.push_str(&format!(
                "apiserver_request_total{{verb=\"{verb}\",resource=\"{resource}\"}} {n}\n"
            ));
        }
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sums_and_exposition() {
        let live = LiveCounters::default();
        for (verb, resource) in [
            ("create", "pods"),
            ("create", "pods"),
            ("patch", "pods/status"),
            ("list", "pods"),
        ] {
            live.record(verb, resource);
        }
        let counters = live.snapshot();
        assert_eq!(counters.get("create", "pods"), 2);
        assert_eq!(counters.writes(), 3);
        assert_eq!(counters.writes_to("pods"), 2);
        assert_eq!(counters.total(), 4);
        assert!(
            live.prometheus()
                .contains("apiserver_request_total{verb=\"create\",resource=\"pods\"} 2\n")
        );
        live.reset();
        assert_eq!(live.snapshot().total(), 0);
    }
}
