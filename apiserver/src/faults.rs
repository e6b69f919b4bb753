//! Fault injection for tests: rules that make matching requests fail, slow down, or end their
//! watches early, and an operation that drops open watches.
//!
//! A [`Fault`] rule matches requests by verb, resource (plural, `pods/status` for a subresource,
//! `*` for any) and optionally namespace and name; it fires for every matching request, the next
//! N ([`Fault::times`]) or with a probability ([`Fault::probability`]). Requests that match no
//! rule are served normally, and [`Faults::clear`] restores normal behaviour.
//!
//! Faulted requests are counted in [`crate::RequestCounters`] like any other request (the client
//! did send them); [`FaultRule::fired`] and [`Faults::injected`] count the faults themselves.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::oneshot;

use crate::objects::Objects;
use crate::status::ApiError;

/// A request verb, as in Kubernetes RBAC and [`crate::RequestCounters`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Verb {
    /// GET of one object.
    Get,
    /// GET of a collection.
    List,
    /// GET with `watch=true`.
    Watch,
    /// POST (including subresources such as `pods/binding`).
    Create,
    /// PUT.
    Update,
    /// PATCH.
    Patch,
    /// DELETE of one object.
    Delete,
    /// DELETE of a collection.
    DeleteCollection,
}

impl Verb {
    /// The verb as the counters name it.
    pub fn as_str(self) -> &'static str {
        match self {
            Verb::Get => "get",
            Verb::List => "list",
            Verb::Watch => "watch",
            Verb::Create => "create",
            Verb::Update => "update",
            Verb::Patch => "patch",
            Verb::Delete => "delete",
            Verb::DeleteCollection => "deletecollection",
        }
    }

    pub(crate) fn parse(verb: &str) -> Option<Verb> {
        Some(match verb {
            "get" => Verb::Get,
            "list" => Verb::List,
            "watch" => Verb::Watch,
            "create" => Verb::Create,
            "update" => Verb::Update,
            "patch" => Verb::Patch,
            "delete" => Verb::Delete,
            "deletecollection" => Verb::DeleteCollection,
            _ => return None,
        })
    }
}

/// What a rule does to a request it fires on.
#[derive(Debug, Clone, PartialEq)]
pub enum FaultAction {
    /// 500 InternalError with a `Status` body.
    InternalError,
    /// 429 TooManyRequests with a `Retry-After: {seconds}` header and
    /// `details.retryAfterSeconds` in the `Status` body (at least 1 second).
    TooManyRequests {
        /// Seconds the client should wait before retrying.
        retry_after_seconds: u32,
    },
    /// 409 Conflict ("the object has been modified"), as for a stale resourceVersion.
    Conflict,
    /// 403 Forbidden `admission webhook "policy.example" denied the request: {message}`, as a
    /// host policy engine (an admission webhook) refuses an object.
    Denied(String),
    /// Wait this long, then serve the request normally (or as a later rule says).
    Latency(Duration),
    /// The watch is served normally but ends after this many events (ADDED, MODIFIED, DELETED,
    /// including the initial ADDED events; bookmarks are not counted), as when a connection is cut.
    /// Only for [`Verb::Watch`].
    CloseWatchAfter(usize),
    /// 410 Gone for watches and lists that start from a resourceVersion handed out before the rule
    /// was added (or that carry a `continue` token): a watch gets the same `ERROR` event with an
    /// `Expired` Status as after [`crate::ApiServer::compact`], a list gets HTTP 410 `Expired`.
    /// Adding the rule moves the resourceVersion counter on by one, as `compact()` does, so a
    /// client's latest resourceVersion is old too and its re-list yields a watchable one. Requests
    /// without an old resourceVersion do not match (and do not use up [`Fault::times`]).
    Gone,
}

/// When a matching rule fires.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Trigger {
    Always,
    Times(u64),
    Probability(f64),
}

/// A fault rule under construction; add it with [`Faults::add`].
#[derive(Debug, Clone, PartialEq)]
pub struct Fault {
    verbs: Vec<Verb>,
    resource: String,
    namespace: Option<String>,
    name: Option<String>,
    trigger: Trigger,
    action: FaultAction,
}

impl Fault {
    /// A rule for `verb` requests on `resource` (plural; `pods/status` for a subresource; `*` for
    /// every resource). By default it fires on every matching request with a 500.
    pub fn on(verb: Verb, resource: &str) -> Fault {
        Fault::on_verbs(&[verb], resource)
    }

    /// A rule for any of `verbs` on `resource`.
    pub fn on_verbs(verbs: &[Verb], resource: &str) -> Fault {
        Fault {
            verbs: verbs.to_vec(),
            resource: resource.to_string(),
            namespace: None,
            name: None,
            trigger: Trigger::Always,
            action: FaultAction::InternalError,
        }
    }

    /// A rule for the writes (create, update, patch, delete, deletecollection) on `resource`.
    pub fn on_writes(resource: &str) -> Fault {
        Fault::on_verbs(
            &[
                Verb::Create,
                Verb::Update,
                Verb::Patch,
                Verb::Delete,
                Verb::DeleteCollection,
            ],
            resource,
        )
    }

    /// Only requests in this namespace.
    pub fn namespace(mut self, namespace: &str) -> Fault {
        self.namespace = Some(namespace.to_string());
        self
    }

    /// Only requests for the object of this name: the name in the URL, for a create the
    /// `metadata.name` of a JSON body, for a watch or list the `metadata.name=` field selector (as
    /// kube-rs sends for a single-object watch); requests without a name do not match.
    pub fn name(mut self, name: &str) -> Fault {
        self.name = Some(name.to_string());
        self
    }

    /// Fire on the next `n` matching requests only, then stay inert.
    pub fn times(mut self, n: u64) -> Fault {
        self.trigger = Trigger::Times(n);
        self
    }

    /// Fire on each matching request with probability `p` (0..=1), from the seeded generator of
    /// [`Faults::seed`].
    pub fn probability(mut self, p: f64) -> Fault {
        self.trigger = Trigger::Probability(p.clamp(0.0, 1.0));
        self
    }

    /// Set the action.
    pub fn action(mut self, action: FaultAction) -> Fault {
        self.action = action;
        self
    }

    /// Answer 500 InternalError.
    pub fn internal_error(self) -> Fault {
        self.action(FaultAction::InternalError)
    }

    /// Answer 429 TooManyRequests with `Retry-After: seconds`.
    pub fn too_many_requests(self, retry_after_seconds: u32) -> Fault {
        self.action(FaultAction::TooManyRequests { retry_after_seconds })
    }

    /// Answer 409 Conflict.
    pub fn conflict(self) -> Fault {
        self.action(FaultAction::Conflict)
    }

    /// Answer 403 Forbidden as an admission webhook denying the request with `message`.
    pub fn denied(self, message: &str) -> Fault {
        self.action(FaultAction::Denied(message.to_string()))
    }

    /// Delay the request.
    pub fn latency(self, delay: Duration) -> Fault {
        self.action(FaultAction::Latency(delay))
    }

    /// End the watch after `events` events.
    pub fn close_watch_after(self, events: usize) -> Fault {
        self.action(FaultAction::CloseWatchAfter(events))
    }

    /// 410 Gone for old resourceVersions.
    pub fn gone(self) -> Fault {
        self.action(FaultAction::Gone)
    }
}

/// Handle to an added rule.
#[derive(Debug, Clone)]
pub struct FaultRule {
    id: u64,
    fired: Arc<AtomicU64>,
    faults: Faults,
}

impl FaultRule {
    /// How many requests this rule has fired on.
    pub fn fired(&self) -> u64 {
        self.fired.load(Ordering::SeqCst)
    }

    /// Removes the rule (requests it would match are served normally again).
    pub fn remove(&self) {
        self.faults.lock().rules.retain(|r| r.id != self.id);
    }
}

struct Rule {
    id: u64,
    fault: Fault,
    /// For [`FaultAction::Gone`]: resourceVersions up to this one are old.
    gone_before: u64,
    fired: Arc<AtomicU64>,
}

struct OpenWatch {
    resource: String,
    namespace: Option<String>,
    close: oneshot::Sender<()>,
}

struct State {
    next_id: u64,
    rules: Vec<Rule>,
    rng: u64,
    injected: u64,
    watches: Vec<OpenWatch>,
}

/// The fault injection of one server ([`crate::ApiServer::faults`]); cheap to clone.
#[derive(Clone)]
pub struct Faults {
    state: Arc<Mutex<State>>,
    objects: Arc<Objects>,
}

impl std::fmt::Debug for Faults {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = self.lock();
        f.debug_struct("Faults")
            .field("rules", &state.rules.iter().map(|r| &r.fault).collect::<Vec<_>>())
            .field("injected", &state.injected)
            .finish()
    }
}

/// What a request is, for matching.
pub(crate) struct RequestInfo<'a> {
    pub verb: &'a str,
    /// API group of the resource.
    pub group: &'a str,
    /// Plural, with `/sub` for a subresource.
    pub resource: &'a str,
    pub namespace: Option<&'a str>,
    /// The object name, or for list/watch the `metadata.name=` field selector value.
    pub name: Option<&'a str>,
    /// `resourceVersion` as a number ("0" and absent are None).
    pub resource_version: Option<u64>,
    pub has_continue: bool,
}

/// The outcome of fault matching for one request.
#[derive(Debug, Default)]
pub(crate) struct Injection {
    /// Wait this long first.
    pub delay: Duration,
    /// Then answer this error instead of serving the request.
    pub error: Option<ApiError>,
    /// Watches: end after this many events.
    pub close_after: Option<usize>,
    /// Watches and lists: answer 410 Expired.
    pub gone: bool,
}

/// A watch's receiving end of [`Faults::drop_watches`].
pub(crate) type WatchCloser = oneshot::Receiver<()>;

impl Faults {
    pub(crate) fn new(objects: Arc<Objects>) -> Faults {
        Faults {
            state: Arc::new(Mutex::new(State {
                next_id: 0,
                rules: Vec::new(),
                rng: 0x9E37_79B9_7F4A_7C15,
                injected: 0,
                watches: Vec::new(),
            })),
            objects,
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Adds a rule; rules are evaluated in the order added (see the crate README).
    pub fn add(&self, fault: Fault) -> FaultRule {
        let gone_before = if fault.action == FaultAction::Gone {
            self.objects.store.lock().bump_resource_version() - 1
        } else {
            0
        };
        let fired = Arc::new(AtomicU64::new(0));
        let mut state = self.lock();
        state.next_id += 1;
        let id = state.next_id;
        state.rules.push(Rule {
            id,
            fault,
            gone_before,
            fired: fired.clone(),
        });
        FaultRule {
            id,
            fired,
            faults: self.clone(),
        }
    }

    pub(crate) fn has_rules(&self) -> bool {
        !self.lock().rules.is_empty()
    }

    /// Removes every rule: all requests are served normally from now on.
    pub fn clear(&self) {
        self.lock().rules.clear();
    }

    /// Seeds the generator of probabilistic rules (a fixed default seed otherwise).
    pub fn seed(&self, seed: u64) {
        self.lock().rng = seed | 1;
    }

    /// Faults injected so far (every fired rule action, latency included).
    pub fn injected(&self) -> u64 {
        self.lock().injected
    }

    /// Ends every open watch of `resource` (plural, `*` for all), optionally only those in
    /// `namespace` (cluster-wide watches of the resource are ended as well), as when connections
    /// are cut. Returns how many were ended. Clients re-watch from their last resourceVersion.
    pub fn drop_watches(&self, resource: &str, namespace: Option<&str>) -> usize {
        let mut state = self.lock();
        let mut dropped = 0;
        let watches = std::mem::take(&mut state.watches);
        for watch in watches {
            let matches = (resource == "*" || watch.resource == resource)
                && (namespace.is_none()
                    || watch.namespace.is_none()
                    || watch.namespace.as_deref() == namespace);
            if watch.close.is_closed() {
                continue;
            }
            if matches {
                if watch.close.send(()).is_ok() {
                    dropped += 1;
                }
            } else {
                state.watches.push(watch);
            }
        }
        if dropped > 0 {
            state.injected += dropped as u64;
        }
        dropped
    }

    /// Registers an open watch for [`Faults::drop_watches`].
    pub(crate) fn register_watch(&self, resource: &str, namespace: Option<&str>) -> WatchCloser {
        let (close, closed) = oneshot::channel();
        let mut state = self.lock();
        state.watches.retain(|w| !w.close.is_closed());
        state.watches.push(OpenWatch {
            resource: resource.to_string(),
            namespace: namespace.map(str::to_string),
            close,
        });
        closed
    }

    /// Matches a request against the rules.
    pub(crate) fn check(&self, request: &RequestInfo<'_>) -> Injection {
        let mut injection = Injection::default();
        let mut state = self.lock();
        if state.rules.is_empty() {
            return injection;
        }
        let verb = Verb::parse(request.verb);
        let State {
            rules, rng, injected, ..
        } = &mut *state;
        for rule in rules.iter_mut() {
            let fault = &mut rule.fault;
            if !verb.is_some_and(|v| fault.verbs.contains(&v))
                || !(fault.resource == "*" || fault.resource == request.resource)
                || fault
                    .namespace
                    .as_deref()
                    .is_some_and(|ns| Some(ns) != request.namespace)
                || fault.name.as_deref().is_some_and(|n| Some(n) != request.name)
            {
                continue;
            }
            match fault.action {
                FaultAction::Gone => {
                    let old = request.resource_version.is_some_and(|rv| rv <= rule.gone_before)
                        || (request.verb == "list" && request.has_continue);
                    if !old || !matches!(request.verb, "watch" | "list") {
                        continue;
                    }
                }
                FaultAction::CloseWatchAfter(_) if request.verb != "watch" => continue,
                _ => {}
            }
            let fires = match &mut fault.trigger {
                Trigger::Always => true,
                Trigger::Times(0) => false,
                Trigger::Times(n) => {
                    *n -= 1;
                    true
                }
                Trigger::Probability(p) => next_unit(rng) < *p,
            };
            if !fires {
                continue;
            }
            rule.fired.fetch_add(1, Ordering::SeqCst);
            *injected += 1;
            let resource = request.resource.split('/').next().unwrap_or_default();
            let name = request.name.unwrap_or_default();
            let error = match fault.action {
                FaultAction::Latency(delay) => {
                    injection.delay += delay;
                    continue;
                }
                FaultAction::CloseWatchAfter(n) => {
                    injection.close_after = Some(injection.close_after.map_or(n, |m| m.min(n)));
                    continue;
                }
                FaultAction::Gone => {
                    injection.gone = true;
                    break;
                }
                FaultAction::InternalError => ApiError::injected_internal_error(),
                FaultAction::TooManyRequests { retry_after_seconds } => {
                    ApiError::too_many_requests(retry_after_seconds)
                }
                FaultAction::Conflict => ApiError::stale(request.group, resource, name),
                FaultAction::Denied(ref message) => ApiError::denied_by_webhook(message),
            };
            injection.error = Some(error);
            break;
        }
        injection
    }
}

/// xorshift64*: a uniform number in [0, 1).
fn next_unit(state: &mut u64) -> f64 {
    let mut x = *state;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    *state = x;
    (x.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 11) as f64 / (1u64 << 53) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generator_is_roughly_uniform() {
        let mut state = 0x1234_5678 | 1;
        let n = 10_000;
        let below = (0..n).filter(|_| next_unit(&mut state) < 0.3).count();
        assert!((2_700..3_300).contains(&below), "{below}");
    }
}
