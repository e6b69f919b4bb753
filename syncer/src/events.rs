//! Kubernetes events on virtual objects, so tenants see why something did not sync
//! (`kubectl describe` / `kubectl get events`).

use std::time::{Duration, Instant};

use dashmap::DashMap;
use k8s_openapi::{
    api::core::v1::{Event, EventSource, ObjectReference},
    apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time},
};
use kube::{Api, Client, api::PostParams};

/// How long an identical event is not posted again; repeated retries of the same failure
/// would otherwise write one event per backoff step.
const REPEAT_WINDOW: Duration = Duration::from_secs(600);

/// Severity of an event.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum EventType {
    /// Something worth knowing.
    Normal,
    /// Something failed and needs attention.
    Warning,
}

impl EventType {
    fn as_str(self) -> &'static str {
        match self {
            EventType::Normal => "Normal",
            EventType::Warning => "Warning",
        }
    }
}

/// Posts core/v1 events about virtual objects into the virtual cluster.
#[derive(Clone)]
pub struct EventRecorder {
    client: Client,
    component: String,
    recent: std::sync::Arc<DashMap<(String, String, String), Instant>>,
}

impl EventRecorder {
    /// A recorder that writes through `client` as `component`.
    pub fn new(client: Client, component: &str) -> Self {
        Self {
            client,
            component: component.to_string(),
            recent: Default::default(),
        }
    }

    /// Records an event on `object`; failures to record are logged, never returned, because an
    /// event is a courtesy and must not fail the reconcile that reports something else.
    pub async fn publish(&self, object: &ObjectReference, type_: EventType, reason: &str, message: &str) {
        let identity = (
            object.uid.clone().unwrap_or_default(),
            reason.to_string(),
            message.to_string(),
        );
        let now = Instant::now();
        if let Some(last) = self.recent.get(&identity)
            && now.duration_since(*last) < REPEAT_WINDOW
        {
            return;
        }
        self.recent.insert(identity, now);
        self.recent
            .retain(|_, at| now.duration_since(*at) < REPEAT_WINDOW);

        let namespace = object.namespace.clone().unwrap_or_else(|| "default".to_string());
        let stamp = jiff::Timestamp::now();
        let event = Event {
            metadata: ObjectMeta {
                name: Some(format!(
                    "{}.{:x}",
                    object.name.as_deref().unwrap_or("object"),
                    stamp.as_nanosecond()
                )),
                namespace: Some(namespace.clone()),
                ..ObjectMeta::default()
            },
            involved_object: object.clone(),
            reason: Some(reason.to_string()),
            message: Some(message.to_string()),
            type_: Some(type_.as_str().to_string()),
            source: Some(EventSource {
                component: Some(self.component.clone()),
                host: None,
            }),
            reporting_component: Some(self.component.clone()),
            first_timestamp: Some(Time(stamp)),
            last_timestamp: Some(Time(stamp)),
            count: Some(1),
            ..Event::default()
        };
        let api: Api<Event> = Api::namespaced(self.client.clone(), &namespace);
        if let Err(err) = api.create(&PostParams::default(), &event).await {
            tracing::warn!(error = %err, reason, "could not record event");
        }
    }
}
