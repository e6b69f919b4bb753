//! Tests of [`Informer`] without an API server: its run loop reads a stream of watch events
//! fed by hand, as kube-runtime's watcher would produce them.

use std::sync::atomic::AtomicUsize;

use k8s_openapi::{api::core::v1::ConfigMap, apimachinery::pkg::apis::meta::v1::ManagedFieldsEntry};
use kube::{ResourceExt, api::ObjectMeta, runtime::reflector::ObjectRef};
use tokio::sync::mpsc::UnboundedSender;
use tokio_stream::wrappers::UnboundedReceiverStream;

use super::*;
use crate::wire::LAST_APPLIED;

type WatchEvent = Result<watcher::Event<ConfigMap>, watcher::Error>;

fn cm(name: &str) -> ConfigMap {
    ConfigMap {
        metadata: ObjectMeta {
            name: Some(name.into()),
            namespace: Some("team".into()),
            ..ObjectMeta::default()
        },
        ..ConfigMap::default()
    }
}

/// What a subscriber was told, in words.
fn told(event: &InformerEvent<ConfigMap>) -> String {
    match event {
        InformerEvent::Applied(obj) => format!("applied {}", obj.name_any()),
        InformerEvent::Deleted(obj) => format!("deleted {}", obj.name_any()),
        InformerEvent::Relisted => "relisted".into(),
    }
}

/// Everything `subscription` holds right now.
fn drain(subscription: &mut Subscription<ConfigMap>) -> Vec<String> {
    let mut seen = Vec::new();
    while let Ok(event) = subscription.0.try_recv() {
        seen.push(told(&event));
    }
    seen
}

/// The names in the cache, sorted.
fn cached(informer: &Informer<ConfigMap>) -> Vec<String> {
    let mut names = informer.store().map(|obj| obj.name_any());
    names.sort();
    names
}

/// An informer buffering `buffer` events per subscriber, running on a stream fed through the
/// returned sender; the counter says how many events it has taken from the stream.
struct Running {
    informer: Arc<Informer<ConfigMap>>,
    watch: UnboundedSender<WatchEvent>,
    taken: Arc<AtomicUsize>,
}

impl Running {
    fn new(buffer: usize) -> (Self, impl Future<Output = ()>) {
        let (store, writer) = cache_of::<ConfigMap>("ConfigMap", Storage::for_kind("ConfigMap"));
        let informer = Arc::new(Informer::new(Kind::typed(), store, buffer));
        let (watch, events) = mpsc::unbounded_channel();
        let taken = Arc::new(AtomicUsize::new(0));
        let counter = taken.clone();
        let events = UnboundedReceiverStream::new(events).inspect(move |_| {
            counter.fetch_add(1, Ordering::SeqCst);
        });
        let run = informer.clone().run(events, writer, Side::Virtual);
        (
            Self {
                informer,
                watch,
                taken,
            },
            run,
        )
    }

    fn send(&self, events: impl IntoIterator<Item = watcher::Event<ConfigMap>>) {
        for event in events {
            self.watch.send(Ok(event)).unwrap();
        }
    }

    fn taken(&self) -> usize {
        self.taken.load(Ordering::SeqCst)
    }
}

/// Lets every task that can run, run.
async fn settle() {
    for _ in 0..50 {
        tokio::task::yield_now().await;
    }
}

fn list(names: &[&str]) -> Vec<watcher::Event<ConfigMap>> {
    let mut events = vec![watcher::Event::Init];
    events.extend(names.iter().map(|name| watcher::Event::InitApply(cm(name))));
    events.push(watcher::Event::InitDone);
    events
}

#[tokio::test(start_paused = true)]
async fn applies_deletes_and_relists_reach_the_cache_and_every_subscriber_in_order() {
    let (running, run) = Running::new(16);
    let (mut first, mut second) = (running.informer.subscribe(), running.informer.subscribe());
    let task = tokio::spawn(run);

    running.send(list(&["a", "b"]));
    settle().await;
    assert_eq!(cached(&running.informer), ["a", "b"]);
    assert_eq!(
        drain(&mut first),
        ["relisted"],
        "a list's objects come as one relist"
    );

    running.send([watcher::Event::Apply(cm("c")), watcher::Event::Delete(cm("a"))]);
    settle().await;
    assert_eq!(cached(&running.informer), ["b", "c"]);
    assert_eq!(drain(&mut first), ["applied c", "deleted a"]);

    // A re-list without c (deleted during a watch gap): no delete event, the cache follows.
    running.send(list(&["b"]));
    settle().await;
    assert_eq!(cached(&running.informer), ["b"]);
    assert_eq!(drain(&mut first), ["relisted"]);
    assert_eq!(
        drain(&mut second),
        ["relisted", "applied c", "deleted a", "relisted"],
        "every subscriber gets every event"
    );

    // The watch ends (the informer is stopped): so do the subscriptions.
    drop(running.watch);
    task.await.unwrap();
    assert!(first.recv().await.is_none() && second.recv().await.is_none());
}

#[tokio::test(start_paused = true)]
async fn objects_are_trimmed_before_the_cache_and_the_subscribers_see_them() {
    let (running, run) = Running::new(16);
    running.informer.trim(|obj: &mut ConfigMap| obj.data = None);
    let mut events = running.informer.subscribe();
    let task = tokio::spawn(run);
    let mut fat = cm("fat");
    fat.metadata.managed_fields = Some(vec![ManagedFieldsEntry::default()]);
    fat.annotations_mut().insert(LAST_APPLIED.into(), "{}".into());
    fat.annotations_mut().insert("kept".into(), "yes".into());
    fat.data = Some([("k".to_string(), "v".to_string())].into());
    running.send(list(&[]));
    running.send([watcher::Event::Apply(fat)]);
    settle().await;

    let cached = running
        .informer
        .store()
        .get(&ObjectRef::new("fat").within("team"))
        .unwrap();
    let Some(InformerEvent::Applied(told)) = events.recv().await.and(events.recv().await) else {
        panic!("no apply");
    };
    for obj in [cached.as_ref(), told.as_ref()] {
        assert_eq!(obj.metadata.managed_fields, None);
        assert_eq!(obj.annotations().keys().collect::<Vec<_>>(), ["kept"]);
        assert_eq!(obj.data, None, "the registered trim ran");
    }
    drop(running.watch);
    task.await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_full_subscriber_holds_the_watch_stream_until_it_reads() {
    let (running, run) = Running::new(2);
    let mut slow = running.informer.subscribe();
    let mut fast = running.informer.subscribe();
    let fast_seen = Arc::new(Mutex::new(Vec::new()));
    let reader = tokio::spawn({
        let seen = fast_seen.clone();
        async move {
            while let Some(event) = fast.recv().await {
                seen.lock().unwrap().push(told(&event));
            }
        }
    });
    let task = tokio::spawn(run);
    running.send((0..10).map(|i| watcher::Event::Apply(cm(&format!("o{i}")))));
    settle().await;
    // Two events wait in the slow subscriber's buffer and the informer holds the third: it
    // reads no further, so no more than that is held in memory.
    assert_eq!(running.taken(), 3);
    assert_eq!(cached(&running.informer).len(), 3);
    assert_eq!(
        fast_seen.lock().unwrap().len(),
        2,
        "served in turn, after the slow one"
    );

    // Each event the slow subscriber reads lets one more in.
    assert_eq!(told(&slow.recv().await.unwrap()), "applied o0");
    settle().await;
    assert_eq!(running.taken(), 4);

    let mut slow_seen = vec!["applied o0".to_string()];
    while slow_seen.len() < 10 {
        slow_seen.push(told(&slow.recv().await.unwrap()));
    }
    settle().await;
    let all: Vec<String> = (0..10).map(|i| format!("applied o{i}")).collect();
    assert_eq!(running.taken(), 10);
    assert_eq!(slow_seen, all);
    assert_eq!(*fast_seen.lock().unwrap(), all, "in order, none lost");
    drop(running.watch);
    task.await.unwrap();
    reader.await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_dropped_subscriber_is_removed_and_holds_nothing_back() {
    let (running, run) = Running::new(1);
    let gone = running.informer.subscribe();
    let full = running.informer.subscribe();
    let mut live = running.informer.subscribe();
    assert_eq!(running.informer.subscribers(), 3);
    drop(gone);
    let task = tokio::spawn(run);
    running.send((0..3).map(|i| watcher::Event::Apply(cm(&format!("o{i}")))));
    settle().await;
    assert_eq!(
        running.informer.subscribers(),
        2,
        "the dropped one went at the first event"
    );
    assert_eq!(running.taken(), 2, "held by the full subscriber");

    // Dropping a subscriber the informer is waiting for releases it.
    drop(full);
    let mut seen = Vec::new();
    while seen.len() < 3 {
        seen.push(told(&live.recv().await.unwrap()));
    }
    assert_eq!(seen, ["applied o0", "applied o1", "applied o2"]);
    assert_eq!(running.informer.subscribers(), 1);
    drop(running.watch);
    task.await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_late_subscriber_gets_the_events_from_then_on_and_watch_errors_are_skipped() {
    let (running, run) = Running::new(16);
    let mut early = running.informer.subscribe();
    let task = tokio::spawn(run);
    running.send(list(&["a"]));
    settle().await;
    let mut late = running.informer.subscribe();
    running
        .watch
        .send(Err(watcher::Error::NoResourceVersion))
        .unwrap();
    running.send([watcher::Event::Apply(cm("b"))]);
    settle().await;
    assert_eq!(drain(&mut early), ["relisted", "applied b"]);
    assert_eq!(drain(&mut late), ["applied b"]);
    assert_eq!(cached(&running.informer), ["a", "b"]);
    drop(running.watch);
    task.await.unwrap();
}
