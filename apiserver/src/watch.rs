//! WATCH: newline-delimited JSON events, one HTTP chunk per event.
//!
//! A watch starts either from the current state (synthetic ADDED events, for resourceVersion
//! absent or "0", or sendInitialEvents=true) or from a given resourceVersion (replayed from the
//! kept history; an expired one yields an ERROR event with a 410 Status, as Kubernetes does).
//! Selectors are applied per event with the previous object, so an object that stops matching is
//! sent as DELETED and one that starts matching as ADDED.

use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use serde::Serialize;
use serde_json::{Value, json};
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;

use crate::faults::WatchCloser;
use crate::objects::Objects;
use crate::query::Query;
use crate::representation::{self, Format};
use crate::resources::ResourceDef;
use crate::selectors::Selectors;
use crate::status::{ApiError, ApiResult};
use crate::store::{Event, EventType, Subscription};
use crate::table;

/// How often bookmarks are sent to clients that allow them.
const BOOKMARK_INTERVAL: Duration = Duration::from_secs(1);

/// What to watch and how to encode it.
pub(crate) struct WatchRequest {
    pub def: Arc<ResourceDef>,
    pub namespace: Option<String>,
    pub query: Query,
    /// Objects, kubectl Tables or metadata only.
    pub format: Format,
    /// Injected faults.
    pub faults: WatchFaults,
}

/// Faults injected into one watch (see [`crate::faults`]).
#[derive(Default)]
pub(crate) struct WatchFaults {
    /// Ends the watch when signalled ([`crate::Faults::drop_watches`]).
    pub closer: Option<WatchCloser>,
    /// End the watch after this many events.
    pub close_after: Option<usize>,
    /// Answer as for an expired resourceVersion.
    pub gone: bool,
}

#[derive(Serialize)]
struct Line<'a> {
    #[serde(rename = "type")]
    kind: &'a str,
    object: &'a Value,
}

/// Encodes events for one watcher: selectors, table mode, last resourceVersion sent.
struct Encoder {
    def: Arc<ResourceDef>,
    selectors: Selectors,
    format: Format,
    columns_sent: bool,
    last_rv: u64,
}

impl Encoder {
    fn line(&mut self, kind: &str, object: &Value) -> Bytes {
        let rendered;
        let object = match self.format {
            _ if kind == "ERROR" || kind == "BOOKMARK" => object,
            Format::Object => object,
            Format::Table => {
                rendered = table::render(&self.def, &[object], json!({}), !self.columns_sent);
                self.columns_sent = true;
                &rendered
            }
            Format::Metadata => {
                rendered = representation::partial(object);
                &rendered
            }
        };
        let mut bytes = serde_json::to_vec(&Line { kind, object }).unwrap_or_default();
        bytes.push(b'\n');
        Bytes::from(bytes)
    }

    /// The line for a store event after selector filtering, if any.
    fn event(&mut self, event: &Event) -> Option<Bytes> {
        self.last_rv = self.last_rv.max(event.rv);
        let now = self.selectors.matches(&event.object);
        let before = event.previous.as_ref().map(|p| self.selectors.matches(p));
        let kind = match (event.kind, before, now) {
            (EventType::Deleted, _, true) => EventType::Deleted,
            (EventType::Deleted, _, false) => return None,
            (_, Some(true), true) => EventType::Modified,
            (_, Some(true), false) => EventType::Deleted,
            (_, _, true) => EventType::Added,
            (_, _, false) => return None,
        };
        Some(self.line(kind.as_str(), &event.object))
    }

    fn bookmark(&mut self, rv: u64, initial_events_end: bool) -> Bytes {
        let rv = rv.max(self.last_rv);
        self.last_rv = rv;
        let mut metadata = json!({ "resourceVersion": rv.to_string() });
        if initial_events_end {
            metadata["annotations"] = json!({ "k8s.io/initial-events-end": "true" });
        }
        let object =
            json!({ "kind": self.def.kind, "apiVersion": self.def.api_version(), "metadata": metadata });
        self.line("BOOKMARK", &object)
    }
}

/// Starts a watch and returns the streaming response body.
pub(crate) fn start(
    objects: Arc<Objects>,
    shutdown: watch::Receiver<bool>,
    request: WatchRequest,
) -> ApiResult<Body> {
    let WatchRequest {
        def,
        namespace,
        query,
        format,
        faults,
    } = request;
    let from = query.resource_version_number()?;
    let initial = query.send_initial_events || from.is_none();
    let mut encoder = Encoder {
        def: def.clone(),
        selectors: query.selectors.clone(),
        format,
        columns_sent: false,
        last_rv: 0,
    };
    let mut first = Vec::new();
    let subscription = {
        let mut state = objects.store.lock();
        let key = def.store_key();
        if initial {
            let now = state.resource_version();
            for (_, object) in state.list(&key, namespace.as_deref(), None) {
                if encoder.selectors.matches(object) {
                    first.push(encoder.line("ADDED", object));
                }
            }
            encoder.last_rv = now;
            if query.send_initial_events {
                first.push(encoder.bookmark(now, true));
            }
            let (_, rx) = state.subscribe(&key, namespace.as_deref(), now).map_err(|_| {
                ApiError::expired("the current resource version was compacted concurrently; retry")
            })?;
            Some(rx)
        } else {
            let since = from.unwrap_or_default();
            let subscribed = if faults.gone {
                Err(crate::store::TooOld {
                    oldest: state.resource_version(),
                })
            } else {
                state.subscribe(&key, namespace.as_deref(), since)
            };
            match subscribed {
                Ok((backlog, rx)) => {
                    encoder.last_rv = since;
                    first.extend(backlog.iter().filter_map(|e| encoder.event(e)));
                    Some(rx)
                }
                Err(too_old) => {
                    let status =
                        ApiError::expired(format!("too old resource version: {since} ({})", too_old.oldest))
                            .to_status();
                    first.push(encoder.line("ERROR", &status));
                    None
                }
            }
        }
    };
    let (tx, rx) = mpsc::channel::<Result<Bytes, std::convert::Infallible>>(64);
    let run = Run {
        objects,
        encoder,
        subscription,
        tx,
        shutdown,
        bookmarks: query.bookmarks,
        timeout: query.timeout,
        closer: faults.closer,
        events_left: faults.close_after,
    };
    tokio::spawn(run.serve(first));
    Ok(Body::from_stream(ReceiverStream::new(rx)))
}

struct Run {
    objects: Arc<Objects>,
    encoder: Encoder,
    subscription: Option<Subscription>,
    tx: mpsc::Sender<Result<Bytes, std::convert::Infallible>>,
    shutdown: watch::Receiver<bool>,
    bookmarks: bool,
    timeout: Option<Duration>,
    closer: Option<WatchCloser>,
    /// Events still to send before an injected close.
    events_left: Option<usize>,
}

impl Run {
    async fn send(&self, line: Bytes) -> bool {
        self.tx.send(Ok(line)).await.is_ok()
    }

    fn is_bookmark(&self, line: &Bytes) -> bool {
        line.starts_with(br#"{"type":"BOOKMARK""#)
    }

    /// Sends an event line; false when the watch is to end (client gone, or an injected close
    /// after this event).
    async fn send_event(&mut self, line: Bytes) -> bool {
        if self.events_left == Some(0) {
            return false;
        }
        if !self.send(line).await {
            return false;
        }
        if let Some(left) = &mut self.events_left {
            *left -= 1;
            if *left == 0 {
                return false;
            }
        }
        true
    }

    async fn serve(mut self, first: Vec<Bytes>) {
        if self.events_left == Some(0) {
            return;
        }
        let initial_events = first.len();
        for (i, line) in first.into_iter().enumerate() {
            // The last initial line may be the initial-events-end bookmark, which is no event;
            // an ERROR line ends the watch anyway.
            let sent = if self.subscription.is_some() && !(i + 1 == initial_events && self.is_bookmark(&line))
            {
                self.send_event(line).await
            } else {
                self.send(line).await
            };
            if !sent {
                return;
            }
        }
        let Some(mut events) = self.subscription.take() else {
            return;
        };
        let mut closer = self.closer.take();
        let deadline = self.timeout.map(|t| tokio::time::Instant::now() + t);
        let mut ticker =
            tokio::time::interval_at(tokio::time::Instant::now() + BOOKMARK_INTERVAL, BOOKMARK_INTERVAL);
        if *self.shutdown.borrow() {
            return;
        }
        loop {
            tokio::select! {
                event = events.recv() => {
                    let Some(event) = event else { return };
                    if let Some(line) = self.encoder.event(&event)
                        && !self.send_event(line).await
                    {
                        return;
                    }
                }
                _ = ticker.tick(), if self.bookmarks => {
                    // Drain under the store lock so the bookmark's resourceVersion is not ahead of
                    // an event still queued for this watcher.
                    let (rv, pending) = {
                        let state = self.objects.store.lock();
                        let mut pending = Vec::new();
                        while let Ok(event) = events.try_recv() {
                            pending.push(event);
                        }
                        (state.resource_version(), pending)
                    };
                    for event in pending {
                        if let Some(line) = self.encoder.event(&event)
                            && !self.send_event(line).await
                        {
                            return;
                        }
                    }
                    let line = self.encoder.bookmark(rv, false);
                    if !self.send(line).await {
                        return;
                    }
                }
                _ = sleep_until(deadline) => return,
                _ = self.shutdown.changed() => return,
                _ = self.tx.closed() => return,
                _ = closed(&mut closer) => return,
            }
        }
    }
}

/// Resolves when [`crate::Faults::drop_watches`] ends this watch (never without a closer).
async fn closed(closer: &mut Option<WatchCloser>) {
    match closer {
        Some(receiver) => {
            if receiver.await.is_err() {
                // A dropped sender is no drop request; never poll the receiver again.
                *closer = None;
                std::future::pending::<()>().await;
            }
        }
        None => std::future::pending().await,
    }
}

async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}
