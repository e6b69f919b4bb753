//! In-memory object storage with a global resourceVersion, per-resource watch history and live
//! watch subscriptions.
//!
//! Everything sits behind one mutex: a write takes the next resourceVersion and hands its event
//! to the subscribers while still holding the lock, so every watcher sees events in resourceVersion
//! order and subscribing from a resourceVersion can never miss or duplicate an event.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};

use serde_json::Value;
use tokio::sync::mpsc;

/// (namespace, name); the namespace is empty for cluster-scoped objects.
pub(crate) type ObjectKey = (String, String);

/// The objects of one table, by store key, as [`State::snapshot`] returns them.
pub(crate) type TableSnapshot = (String, Vec<Arc<Value>>);

/// Type of a watch event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum EventType {
    Added,
    Modified,
    Deleted,
}

impl EventType {
    /// The wire name (`ADDED`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::Added => "ADDED",
            EventType::Modified => "MODIFIED",
            EventType::Deleted => "DELETED",
        }
    }
}

/// One change of one object.
#[derive(Debug)]
pub(crate) struct Event {
    pub kind: EventType,
    pub rv: u64,
    pub namespace: String,
    pub object: Arc<Value>,
    /// The object before a modification: filtered watches need it to turn "stopped matching" into
    /// DELETED and "started matching" into ADDED.
    pub previous: Option<Arc<Value>>,
}

/// The requested watch start is older than the kept history.
#[derive(Debug)]
pub(crate) struct TooOld {
    /// The oldest resourceVersion still watchable.
    pub oldest: u64,
}

/// Receiving end of a watch subscription; closed when history is compacted.
pub(crate) type Subscription = mpsc::UnboundedReceiver<Arc<Event>>;

struct Subscriber {
    namespace: Option<String>,
    tx: mpsc::UnboundedSender<Arc<Event>>,
}

#[derive(Default)]
struct Table {
    objects: BTreeMap<ObjectKey, Arc<Value>>,
    history: VecDeque<Arc<Event>>,
    /// Every event with a resourceVersion above this is in `history`.
    history_start: u64,
    subscribers: Vec<Subscriber>,
}

/// The store: a mutex around [`State`].
pub(crate) struct Store {
    state: Mutex<State>,
}

impl Store {
    /// An empty store keeping `history_limit` events per resource.
    pub fn new(history_limit: usize) -> Self {
        Store {
            state: Mutex::new(State {
                rv: 0,
                floor: 0,
                history_limit: history_limit.max(1),
                tables: HashMap::new(),
                changed: None,
            }),
        }
    }

    /// Locks the store; callers do a whole read-check-write under one lock.
    pub fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves consistent data (each write is one insert), so
        // poisoning is ignored rather than taking the whole server down.
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// All objects; see the module docs.
pub(crate) struct State {
    rv: u64,
    /// No resourceVersion below this can be watched from, in any table (events from before a
    /// restart from persisted state are not kept).
    floor: u64,
    history_limit: usize,
    tables: HashMap<String, Table>,
    /// Woken on every change when the state is persisted ([`crate::persist`]).
    changed: Option<Arc<tokio::sync::Notify>>,
}

impl State {
    /// The latest resourceVersion handed out.
    pub fn resource_version(&self) -> u64 {
        self.rv
    }

    /// One object.
    pub fn get(&self, resource: &str, namespace: &str, name: &str) -> Option<Arc<Value>> {
        let table = self.tables.get(resource)?;
        table
            .objects
            .get(&(namespace.to_string(), name.to_string()))
            .cloned()
    }

    /// Objects of `resource`, in key order, optionally in one namespace, starting after `after`.
    pub fn list<'a>(
        &'a self,
        resource: &str,
        namespace: Option<&'a str>,
        after: Option<&ObjectKey>,
    ) -> Box<dyn Iterator<Item = (&'a ObjectKey, &'a Arc<Value>)> + 'a> {
        use std::ops::Bound;
        let Some(table) = self.tables.get(resource) else {
            return Box::new(std::iter::empty());
        };
        let lower = match after {
            Some(key) => Bound::Excluded(key.clone()),
            None => match namespace {
                Some(ns) => Bound::Included((ns.to_string(), String::new())),
                None => Bound::Unbounded,
            },
        };
        let iter = table.objects.range((lower, Bound::Unbounded));
        match namespace {
            Some(ns) => Box::new(iter.take_while(move |((n, _), _)| n == ns)),
            None => Box::new(iter),
        }
    }

    /// Whether any object of `resource` lives in `namespace`.
    pub fn any_in_namespace(&self, resource: &str, namespace: &str) -> bool {
        self.list(resource, Some(namespace), None).next().is_some()
    }

    /// Stores `object` (created or replaced), stamping the next resourceVersion into
    /// `metadata.resourceVersion`, and notifies watchers.
    pub fn put(&mut self, resource: &str, mut object: Value) -> Arc<Value> {
        self.rv += 1;
        let rv = self.rv;
        object["metadata"]["resourceVersion"] = Value::String(rv.to_string());
        let key = object_key(&object);
        let object = Arc::new(object);
        let table = self.tables.entry(resource.to_string()).or_default();
        let previous = table.objects.insert(key.clone(), object.clone());
        let kind = if previous.is_some() {
            EventType::Modified
        } else {
            EventType::Added
        };
        let event = Event {
            kind,
            rv,
            namespace: key.0,
            object: object.clone(),
            previous,
        };
        self.publish(resource, event);
        self.notify();
        object
    }

    /// Removes an object and notifies watchers; the DELETED event carries a new resourceVersion.
    pub fn remove(&mut self, resource: &str, namespace: &str, name: &str) -> Option<Arc<Value>> {
        let table = self.tables.get_mut(resource)?;
        let old = table.objects.remove(&(namespace.to_string(), name.to_string()))?;
        self.rv += 1;
        let rv = self.rv;
        let mut last = (*old).clone();
        last["metadata"]["resourceVersion"] = Value::String(rv.to_string());
        let object = Arc::new(last);
        let event = Event {
            kind: EventType::Deleted,
            rv,
            namespace: namespace.to_string(),
            object: object.clone(),
            previous: None,
        };
        self.publish(resource, event);
        self.notify();
        Some(object)
    }

    fn notify(&self) {
        if let Some(changed) = &self.changed {
            changed.notify_one();
        }
    }

    /// Has `changed` woken on every later change.
    pub fn set_change_notify(&mut self, changed: Arc<tokio::sync::Notify>) {
        self.changed = Some(changed);
    }

    /// The resourceVersion and every object, by table (empty tables left out); the objects
    /// are shared, so this costs no deep copies.
    pub fn snapshot(&self) -> (u64, Vec<TableSnapshot>) {
        let tables = self
            .tables
            .iter()
            .filter(|(_, table)| !table.objects.is_empty())
            .map(|(key, table)| (key.clone(), table.objects.values().cloned().collect()))
            .collect();
        (self.rv, tables)
    }

    /// Loads persisted objects (as stored, resourceVersions included) into an empty store and
    /// sets the counter to `rv`. No events are published; watches from before `rv` get 410 Gone.
    pub fn restore(&mut self, rv: u64, tables: impl IntoIterator<Item = (String, Vec<Value>)>) {
        self.rv = rv;
        self.floor = rv;
        for (resource, objects) in tables {
            let table = self.tables.entry(resource).or_default();
            table.history_start = rv;
            for object in objects {
                table.objects.insert(object_key(&object), Arc::new(object));
            }
        }
    }

    fn publish(&mut self, resource: &str, event: Event) {
        let limit = self.history_limit;
        let table = self.tables.entry(resource.to_string()).or_default();
        let event = Arc::new(event);
        table.subscribers.retain(|s| {
            if s.namespace.as_ref().is_some_and(|ns| *ns != event.namespace) {
                return !s.tx.is_closed();
            }
            s.tx.send(event.clone()).is_ok()
        });
        table.history.push_back(event);
        while table.history.len() > limit {
            if let Some(dropped) = table.history.pop_front() {
                table.history_start = dropped.rv;
            }
        }
    }

    /// Subscribes to events of `resource` (optionally one namespace) after resourceVersion `since`,
    /// returning the kept events after `since` and the live channel.
    pub fn subscribe(
        &mut self,
        resource: &str,
        namespace: Option<&str>,
        since: u64,
    ) -> Result<(Vec<Arc<Event>>, Subscription), TooOld> {
        let table = self.tables.entry(resource.to_string()).or_default();
        let oldest = table.history_start.max(self.floor);
        if since < oldest {
            return Err(TooOld { oldest });
        }
        let backlog = table
            .history
            .iter()
            .filter(|e| e.rv > since && namespace.is_none_or(|ns| e.namespace == ns))
            .cloned()
            .collect();
        let (tx, rx) = mpsc::unbounded_channel();
        table.subscribers.push(Subscriber {
            namespace: namespace.map(str::to_string),
            tx,
        });
        Ok((backlog, rx))
    }

    /// Drops all watch history: every resourceVersion handed out so far becomes too old to watch
    /// from, and open watches are closed so clients re-watch (and get 410 Gone). The counter is
    /// bumped so that even the latest resourceVersion a client holds is expired.
    pub fn compact(&mut self) {
        self.rv += 1;
        self.floor = self.rv;
        for table in self.tables.values_mut() {
            table.history.clear();
            table.history_start = self.rv;
            table.subscribers.clear();
        }
    }

    /// Moves the resourceVersion counter on by one and returns the new value (fault injection:
    /// makes every resourceVersion handed out so far "old").
    pub fn bump_resource_version(&mut self) -> u64 {
        self.rv += 1;
        self.rv
    }

    /// Closes every watch (shutdown).
    pub fn close_watches(&mut self) {
        for table in self.tables.values_mut() {
            table.subscribers.clear();
        }
    }
}

/// (namespace, name) of an object.
pub(crate) fn object_key(object: &Value) -> ObjectKey {
    let meta = &object["metadata"];
    let text = |v: &Value| v.as_str().unwrap_or_default().to_string();
    (text(&meta["namespace"]), text(&meta["name"]))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn cm(ns: &str, name: &str) -> Value {
        json!({"metadata": {"namespace": ns, "name": name}})
    }

    #[test]
    fn resource_versions_increase_and_history_replays() {
        let store = Store::new(10);
        let mut state = store.lock();
        let a = state.put("/configmaps", cm("a", "x"));
        assert_eq!(a["metadata"]["resourceVersion"], "1");
        state.put("/configmaps", cm("b", "y"));
        state.put("/configmaps", cm("a", "x"));
        let (backlog, _rx) = state.subscribe("/configmaps", Some("a"), 1).unwrap();
        assert_eq!(backlog.len(), 1);
        assert_eq!(backlog[0].kind, EventType::Modified);
        let names: Vec<_> = state
            .list("/configmaps", Some("a"), None)
            .map(|(k, _)| k.1.clone())
            .collect();
        assert_eq!(names, ["x"]);
    }

    #[test]
    fn trimmed_history_and_compaction_expire_old_versions() {
        let store = Store::new(2);
        let mut state = store.lock();
        for i in 0..4 {
            state.put("/configmaps", cm("a", &format!("c{i}")));
        }
        assert_eq!(state.subscribe("/configmaps", None, 1).unwrap_err().oldest, 2);
        assert!(state.subscribe("/configmaps", None, 2).is_ok());
        state.compact();
        assert!(state.subscribe("/configmaps", None, 4).is_err());
        assert!(state.subscribe("/configmaps", None, 5).is_ok());
    }
}
