//! Backing off when an API server pushes back: a tower layer in each kube client's stack
//! (src/clients.rs, in place of kube's `RetryPolicy`) that retries what the server asks to be
//! retried, after the wait it names, and keeps a client's requests from storming a server that
//! refuses them.
//!
//! - **429** (kube-apiserver's API Priority and Fairness, its max-in-flight filter, a server
//!   shutting down) and **503 with `Retry-After`**: the request is sent again after
//!   `Retry-After` seconds (at most [`MAX_WAIT`]; a 429 without the header: a short backoff with
//!   jitter, 250 ms doubling up to 4 s, ±50 %).
//! - Other **5xx with `Retry-After`** (a server-side timeout): that request alone waits and is
//!   sent again, as client-go does. 5xx without the header are not retried here (the syncer's
//!   per-key backoff and kube-runtime's watcher backoff handle them).
//! - **A shared hold**: the first 429 in a while may be about one request (a per-object limit);
//!   when a second request is refused while the first one's wait is still running, the server is
//!   pushing back on this client, and from then on every request of the client (new ones and
//!   retries alike) waits until the latest `Retry-After` has passed. N requests refused together
//!   make N retries after the wait, and a client that keeps making new requests sends none
//!   while held.
//! - **Bounded**: at most [`MAX_RETRIES`] retries per request (client-go's default); then the
//!   last answer is returned. A request whose body cannot be replayed is sent once.
//!
//! Only the answer's head is looked at: a watch or a followed log that got its 200 streams on
//! untouched, one that got a 429 is simply started again after the wait.
//!
//! kube-apiserver names the APF flow schema and priority level of each request in the headers
//! `X-Kubernetes-PF-FlowSchema-UID` / `X-Kubernetes-PF-PriorityLevel-UID`; the log line of a hold
//! carries them, so an operator can find the FlowSchema that throttles vcsync.

use std::{
    pin::Pin,
    sync::{
        Arc, Mutex, MutexGuard,
        atomic::{AtomicU64, Ordering},
    },
    task::{Context, Poll},
    time::Duration,
};

use http::{Request, Response, StatusCode, header::RETRY_AFTER};
use kube::client::Body;
use tokio::time::Instant;
use tower::{
    Layer, Service, ServiceExt,
    util::rng::{HasherRng, Rng},
};

/// Retries of one request at most (client-go's `maxRetries`).
pub const MAX_RETRIES: u32 = 10;
/// The longest wait honoured from one `Retry-After` (longer ones are waited this long).
pub const MAX_WAIT: Duration = Duration::from_secs(10);
/// First backoff of a 429 without `Retry-After`, doubling per retry up to [`BACKOFF_MAX`].
const BACKOFF_BASE: Duration = Duration::from_millis(250);
const BACKOFF_MAX: Duration = Duration::from_secs(4);

const FLOW_SCHEMA_HEADER: &str = "x-kubernetes-pf-flowschema-uid";
const PRIORITY_LEVEL_HEADER: &str = "x-kubernetes-pf-prioritylevel-uid";

/// Adds the pushback handling to a client's stack; every service it makes shares one hold.
#[derive(Clone)]
pub struct PushbackLayer {
    hold: Arc<Hold>,
}

impl PushbackLayer {
    /// A layer for the client of `server` (named in the log).
    pub fn new(server: impl Into<String>) -> Self {
        Self {
            hold: Arc::new(Hold {
                server: server.into(),
                state: Mutex::default(),
                next_call: AtomicU64::new(0),
                rng: Mutex::new(HasherRng::new()),
            }),
        }
    }
}

impl<S> Layer<S> for PushbackLayer {
    type Service = Pushback<S>;

    fn layer(&self, inner: S) -> Pushback<S> {
        Pushback {
            inner,
            hold: self.hold.clone(),
        }
    }
}

/// The service of [`PushbackLayer`].
#[derive(Clone)]
pub struct Pushback<S> {
    inner: S,
    hold: Arc<Hold>,
}

impl<S, B> Service<Request<Body>> for Pushback<S>
where
    S: Service<Request<Body>, Response = Response<B>> + Clone + Send + 'static,
    S::Future: Send,
    S::Error: Send,
    B: Send + 'static,
{
    type Response = Response<B>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Response<B>, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<Body>) -> Self::Future {
        // The service made ready by `poll_ready` serves this request; a clone takes its place.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let hold = self.hold.clone();
        Box::pin(async move {
            let call = hold.next_call.fetch_add(1, Ordering::Relaxed);
            let mut request = request;
            let mut retries = 0;
            loop {
                hold.wait().await;
                let again = (retries < MAX_RETRIES).then(|| replay(&request)).flatten();
                let response = inner.ready().await?.call(request).await?;
                let Some(again) = again else {
                    return Ok(response);
                };
                let Some(refusal) = refusal_of(&response) else {
                    return Ok(response);
                };
                let until = hold.refused(call, refusal, retries, &response);
                drop(response);
                tokio::time::sleep_until(until).await;
                retries += 1;
                request = again;
            }
        })
    }
}

/// What an answer asks of the client.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Refusal {
    /// The server refuses work (429, 503): wait this long (None: no `Retry-After`, back off),
    /// and hold the whole client if other requests are refused too.
    Server(Option<Duration>),
    /// This request alone waits this long.
    Request(Duration),
}

fn refusal_of<B>(response: &Response<B>) -> Option<Refusal> {
    let retry_after = response
        .headers()
        .get(RETRY_AFTER)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.trim().parse::<u64>().ok())
        .filter(|&seconds| seconds > 0)
        .map(|seconds| Duration::from_secs(seconds).min(MAX_WAIT));
    match (response.status(), retry_after) {
        (StatusCode::TOO_MANY_REQUESTS, wait) => Some(Refusal::Server(wait)),
        (StatusCode::SERVICE_UNAVAILABLE, Some(wait)) => Some(Refusal::Server(Some(wait))),
        (status, Some(wait)) if status.is_server_error() => Some(Refusal::Request(wait)),
        _ => None,
    }
}

/// A copy of `request` to send again, if its body can be replayed (kube's `RetryPolicy` copies
/// requests the same way).
fn replay(request: &Request<Body>) -> Option<Request<Body>> {
    let body = request.body().try_clone()?;
    let mut copy = Request::new(body);
    *copy.method_mut() = request.method().clone();
    *copy.uri_mut() = request.uri().clone();
    *copy.version_mut() = request.version();
    *copy.headers_mut() = request.headers().clone();
    *copy.extensions_mut() = request.extensions().clone();
    Some(copy)
}

/// The pushback state one client's requests share.
struct Hold {
    server: String,
    state: Mutex<HoldState>,
    next_call: AtomicU64,
    rng: Mutex<HasherRng>,
}

#[derive(Default)]
struct HoldState {
    /// Every request waits until then before it is sent.
    until: Option<Instant>,
    /// The latest end of a server pushback, and the request that met it first.
    window: Option<(Instant, u64)>,
}

impl Hold {
    fn lock(&self) -> MutexGuard<'_, HoldState> {
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Waits while the client is held.
    async fn wait(&self) {
        loop {
            let until = self.lock().until;
            match until {
                Some(until) if until > Instant::now() => tokio::time::sleep_until(until).await,
                _ => return,
            }
        }
    }

    /// Records that request `call` was refused (after `retries` retries); returns when it may be
    /// sent again.
    fn refused<B>(&self, call: u64, refusal: Refusal, retries: u32, response: &Response<B>) -> Instant {
        let now = Instant::now();
        let server_wide = matches!(refusal, Refusal::Server(_));
        let wait = match refusal {
            Refusal::Server(Some(wait)) | Refusal::Request(wait) => wait,
            Refusal::Server(None) => self.backoff(retries),
        };
        let end = now + wait;
        let header = |name| {
            response
                .headers()
                .get(name)
                .and_then(|v: &http::HeaderValue| v.to_str().ok())
                .unwrap_or("")
                .to_string()
        };
        if server_wide {
            let mut state = self.lock();
            let (window_end, first) = match state.window {
                Some((window_end, first)) if window_end > now => (window_end.max(end), first),
                _ => (end, call),
            };
            state.window = Some((window_end, first));
            if first != call && state.until.is_none_or(|until| until < window_end) {
                if state.until.is_none_or(|until| until <= now) {
                    tracing::warn!(
                        server = %self.server,
                        status = response.status().as_u16(),
                        hold = ?(window_end - now),
                        flow_schema = %header(FLOW_SCHEMA_HEADER),
                        priority_level = %header(PRIORITY_LEVEL_HEADER),
                        "the API server is pushing back: holding this client's requests until its Retry-After has passed"
                    );
                }
                state.until = Some(window_end);
            }
        }
        tracing::debug!(
            server = %self.server,
            status = response.status().as_u16(),
            retry = retries + 1,
            ?wait,
            "request refused by the API server, retrying after the wait"
        );
        end
    }

    /// 250 ms doubling per retry, at most 4 s, times 0.5 to 1.5.
    fn backoff(&self, retries: u32) -> Duration {
        let base = BACKOFF_BASE.saturating_mul(1 << retries.min(8)).min(BACKOFF_MAX);
        let jitter = self.rng.lock().unwrap_or_else(|p| p.into_inner()).next_f64();
        base.mul_f64(0.5 + jitter)
    }
}

#[cfg(test)]
mod tests;
