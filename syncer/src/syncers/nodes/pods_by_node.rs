//! Which virtual pods are bound to which node name, fed by the virtual pod informer.
//!
//! A fake node exists exactly while some virtual pod names it in `spec.nodeName`, so the
//! index reports a node when it starts or stops being used, not on every pod event: a
//! thousand pods landing on one node trigger one reconcile of that node, not a thousand.
//! Every pod with a node name counts, whatever its phase or deletion state: a terminating
//! or finished pod still shows the node in `kubectl get pods -o wide`.

use std::{
    collections::{BTreeSet, HashMap},
    sync::Arc,
};

use dashmap::{DashMap, mapref::entry::Entry};
use k8s_openapi::api::core::v1::Pod;
use tokio::sync::{mpsc, watch};
use vcsync_translators::VirtualKey;

use crate::cache::Cache;
use crate::{
    informer::{InformerEvent, Subscription},
    resource::virtual_key_of,
};

/// Pods by node and node by pod.
///
/// Locking follows the reference index of the translators: a mutation holds the pod's entry
/// while it updates the node side, so events for one pod never interleave.
#[derive(Debug, Default)]
pub struct PodsByNode {
    by_pod: DashMap<VirtualKey, String>,
    by_node: DashMap<String, BTreeSet<VirtualKey>>,
}

impl PodsByNode {
    /// An empty index.
    pub fn new() -> Self {
        Self::default()
    }

    /// Records that `pod` is bound to `node` (None or empty: not bound). Returns the nodes
    /// that started or stopped being used, sorted.
    pub fn apply(&self, pod: VirtualKey, node: Option<&str>) -> Vec<String> {
        let node = node.filter(|n| !n.is_empty());
        match self.by_pod.entry(pod) {
            Entry::Occupied(mut entry) => {
                if Some(entry.get().as_str()) == node {
                    return Vec::new();
                }
                let mut flipped = self.unlink(entry.key(), entry.get());
                match node {
                    Some(node) => {
                        flipped.extend(self.link(entry.key(), node));
                        *entry.get_mut() = node.to_string();
                    }
                    None => {
                        entry.remove();
                    }
                }
                flipped.sort();
                flipped
            }
            Entry::Vacant(entry) => match node {
                Some(node) => {
                    let flipped = self.link(entry.key(), node);
                    entry.insert(node.to_string());
                    flipped
                }
                None => Vec::new(),
            },
        }
    }

    /// Forgets `pod`. Returns the node that stopped being used, if any.
    pub fn delete(&self, pod: &VirtualKey) -> Vec<String> {
        match self.by_pod.entry(pod.clone()) {
            Entry::Occupied(entry) => {
                let flipped = self.unlink(entry.key(), entry.get());
                entry.remove();
                flipped
            }
            Entry::Vacant(_) => Vec::new(),
        }
    }

    /// Replaces the whole state with `pods` (a relist; the last occurrence of a pod wins).
    /// Returns the nodes whose in-use state differs from before, sorted.
    pub fn reset(&self, pods: impl IntoIterator<Item = (VirtualKey, Option<String>)>) -> Vec<String> {
        let pods: HashMap<VirtualKey, Option<String>> = pods.into_iter().collect();
        let before: BTreeSet<String> = self.used_nodes().into_iter().collect();
        let stale: Vec<VirtualKey> = self
            .by_pod
            .iter()
            .map(|e| e.key().clone())
            .filter(|pod| !pods.contains_key(pod))
            .collect();
        for pod in &stale {
            self.delete(pod);
        }
        for (pod, node) in pods {
            self.apply(pod, node.as_deref());
        }
        let after: BTreeSet<String> = self.used_nodes().into_iter().collect();
        before.symmetric_difference(&after).cloned().collect()
    }

    /// Whether any pod is bound to `node`.
    pub fn is_used(&self, node: &str) -> bool {
        self.by_node.contains_key(node)
    }

    /// The pods bound to `node`, sorted.
    pub fn pods_on(&self, node: &str) -> Vec<VirtualKey> {
        self.by_node
            .get(node)
            .map(|pods| pods.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// The node `pod` is bound to, if known.
    pub fn node_of(&self, pod: &VirtualKey) -> Option<String> {
        self.by_pod.get(pod).map(|n| n.clone())
    }

    /// Every node with at least one pod, sorted.
    pub fn used_nodes(&self) -> Vec<String> {
        let mut nodes: Vec<String> = self.by_node.iter().map(|e| e.key().clone()).collect();
        nodes.sort();
        nodes
    }

    /// Number of bound pods.
    pub fn len(&self) -> usize {
        self.by_pod.len()
    }

    /// Whether no pod is bound.
    pub fn is_empty(&self) -> bool {
        self.by_pod.is_empty()
    }

    /// Adds `pod` to `node`; returns the node if it was unused before.
    fn link(&self, pod: &VirtualKey, node: &str) -> Vec<String> {
        let mut pods = self.by_node.entry(node.to_string()).or_default();
        let was_unused = pods.is_empty();
        pods.insert(pod.clone());
        if was_unused {
            vec![node.to_string()]
        } else {
            Vec::new()
        }
    }

    /// Removes `pod` from `node`; returns the node if it is unused now.
    fn unlink(&self, pod: &VirtualKey, node: &str) -> Vec<String> {
        if let Entry::Occupied(mut pods) = self.by_node.entry(node.to_string()) {
            pods.get_mut().remove(pod);
            if pods.get().is_empty() {
                pods.remove();
                return vec![node.to_string()];
            }
        }
        Vec::new()
    }

    /// Feeds the index from the virtual pod informer, sends every node whose in-use state
    /// flipped to `changes`, and flips `ready` after the first full list.
    pub(crate) async fn feed(
        self: Arc<Self>,
        pods: Cache<Pod>,
        mut events: Subscription<Pod>,
        changes: mpsc::UnboundedSender<VirtualKey>,
        ready: watch::Sender<bool>,
    ) {
        let node_of = |pod: &Pod| pod.spec.as_ref().and_then(|s| s.node_name.clone());
        while let Some(event) = events.recv().await {
            let flipped = match event {
                InformerEvent::Applied(pod) => {
                    self.apply(virtual_key_of(pod.as_ref()), node_of(&pod).as_deref())
                }
                InformerEvent::Deleted(pod) => self.delete(&virtual_key_of(pod.as_ref())),
                InformerEvent::Relisted => {
                    // A pod that does not decode keeps the node it had: taken for gone, it
                    // could leave its node unused, and the fake node would be deleted.
                    let listed = pods.try_map(|pod| (virtual_key_of(pod.as_ref()), node_of(pod)));
                    let flipped = self.reset(listed.into_iter().map(|listed| {
                        listed.unwrap_or_else(|err| {
                            let key = VirtualKey::new(err.namespace, err.name);
                            let node = self.node_of(&key);
                            (key, node)
                        })
                    }));
                    let _ = ready.send(true);
                    flipped
                }
            };
            for node in flipped {
                let _ = changes.send(VirtualKey::cluster(node));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use rstest::rstest;

    use super::*;

    fn pod(name: &str) -> VirtualKey {
        VirtualKey::namespaced("team", name)
    }

    fn nodes(names: &[&str]) -> Vec<String> {
        names.iter().map(|n| n.to_string()).collect()
    }

    #[test]
    fn first_pod_on_a_node_reports_it() {
        let index = PodsByNode::new();
        assert_eq!(index.apply(pod("a"), Some("n1")), nodes(&["n1"]));
        assert!(index.is_used("n1"));
        assert_eq!(index.pods_on("n1"), vec![pod("a")]);
    }

    #[test]
    fn second_pod_on_a_used_node_reports_nothing() {
        let index = PodsByNode::new();
        index.apply(pod("a"), Some("n1"));
        assert_eq!(index.apply(pod("b"), Some("n1")), nodes(&[]));
        assert_eq!(index.pods_on("n1"), vec![pod("a"), pod("b")]);
    }

    #[test]
    fn reapplying_the_same_binding_reports_nothing() {
        let index = PodsByNode::new();
        index.apply(pod("a"), Some("n1"));
        assert_eq!(index.apply(pod("a"), Some("n1")), nodes(&[]));
        assert_eq!(index.len(), 1);
    }

    #[rstest]
    #[case::none(None)]
    #[case::empty(Some(""))]
    fn unbound_pods_are_not_stored(#[case] node: Option<&str>) {
        let index = PodsByNode::new();
        assert_eq!(index.apply(pod("a"), node), nodes(&[]));
        assert!(index.is_empty());
        assert_eq!(index.used_nodes(), nodes(&[]));
    }

    #[test]
    fn last_pod_leaving_reports_the_node() {
        let index = PodsByNode::new();
        index.apply(pod("a"), Some("n1"));
        index.apply(pod("b"), Some("n1"));
        assert_eq!(index.delete(&pod("a")), nodes(&[]));
        assert!(index.is_used("n1"));
        assert_eq!(index.delete(&pod("b")), nodes(&["n1"]));
        assert!(!index.is_used("n1"));
        assert!(index.is_empty());
    }

    #[test]
    fn deleting_an_unknown_pod_reports_nothing() {
        let index = PodsByNode::new();
        assert_eq!(index.delete(&pod("ghost")), nodes(&[]));
    }

    #[test]
    fn moving_the_only_pod_reports_both_nodes() {
        let index = PodsByNode::new();
        index.apply(pod("a"), Some("n1"));
        assert_eq!(index.apply(pod("a"), Some("n2")), nodes(&["n1", "n2"]));
        assert_eq!(index.node_of(&pod("a")).as_deref(), Some("n2"));
        assert!(!index.is_used("n1"));
    }

    #[test]
    fn moving_one_of_two_pods_reports_only_the_new_node() {
        let index = PodsByNode::new();
        index.apply(pod("a"), Some("n1"));
        index.apply(pod("b"), Some("n1"));
        assert_eq!(index.apply(pod("a"), Some("n2")), nodes(&["n2"]));
    }

    #[test]
    fn unbinding_the_only_pod_reports_the_node_and_forgets_the_pod() {
        let index = PodsByNode::new();
        index.apply(pod("a"), Some("n1"));
        assert_eq!(index.apply(pod("a"), None), nodes(&["n1"]));
        assert_eq!(index.node_of(&pod("a")), None);
        assert!(index.is_empty());
    }

    #[test]
    fn same_name_in_two_namespaces_is_two_pods() {
        let index = PodsByNode::new();
        index.apply(VirtualKey::namespaced("a", "web"), Some("n1"));
        index.apply(VirtualKey::namespaced("b", "web"), Some("n1"));
        assert_eq!(index.delete(&VirtualKey::namespaced("a", "web")), nodes(&[]));
        assert!(index.is_used("n1"));
    }

    #[test]
    fn reset_reports_only_nodes_whose_use_changed() {
        let index = PodsByNode::new();
        index.apply(pod("a"), Some("kept"));
        index.apply(pod("b"), Some("lost"));
        index.apply(pod("c"), Some("moved-away"));
        let changed = index.reset([
            (pod("a"), Some("kept".to_string())),
            (pod("c"), Some("new".to_string())),
            (pod("d"), None),
        ]);
        assert_eq!(changed, nodes(&["lost", "moved-away", "new"]));
        assert_eq!(index.used_nodes(), nodes(&["kept", "new"]));
        assert_eq!(index.len(), 2);
    }

    #[test]
    fn reset_over_an_identical_state_reports_nothing() {
        let index = PodsByNode::new();
        index.apply(pod("a"), Some("n1"));
        index.apply(pod("b"), Some("n2"));
        let changed = index.reset([
            (pod("b"), Some("n2".to_string())),
            (pod("a"), Some("n1".to_string())),
        ]);
        assert_eq!(changed, nodes(&[]));
    }

    #[test]
    fn reset_where_a_node_loses_one_pod_and_gains_another_reports_nothing() {
        let index = PodsByNode::new();
        index.apply(pod("old"), Some("n1"));
        assert_eq!(index.reset([(pod("new"), Some("n1".to_string()))]), nodes(&[]));
        assert_eq!(index.pods_on("n1"), vec![pod("new")]);
    }

    #[test]
    fn reset_to_nothing_empties_the_index() {
        let index = PodsByNode::new();
        index.apply(pod("a"), Some("n1"));
        assert_eq!(index.reset(Vec::new()), nodes(&["n1"]));
        assert!(index.is_empty());
        assert_eq!(index.used_nodes(), nodes(&[]));
    }

    #[test]
    fn last_occurrence_wins_in_reset() {
        let index = PodsByNode::new();
        index.reset([
            (pod("a"), Some("n1".to_string())),
            (pod("a"), Some("n2".to_string())),
        ]);
        assert_eq!(index.node_of(&pod("a")).as_deref(), Some("n2"));
        assert!(!index.is_used("n1"));
    }

    /// Any sequence of events leaves the same state as a reset from the surviving pods.
    #[test]
    fn incremental_state_equals_state_built_from_scratch() {
        let index = PodsByNode::new();
        let mut truth: HashMap<VirtualKey, Option<String>> = HashMap::new();
        let node_names = [None, Some("n1"), Some("n2"), Some("n3")];
        for step in 0..500u32 {
            let key = pod(&format!("p{}", step * 7 % 13));
            if step % 5 == 4 {
                index.delete(&key);
                truth.remove(&key);
            } else {
                let node = node_names[(step * 3 % 4) as usize];
                index.apply(key.clone(), node);
                truth.insert(key, node.map(str::to_string));
            }
        }
        let rebuilt = PodsByNode::new();
        rebuilt.reset(truth.clone());
        assert_eq!(index.used_nodes(), rebuilt.used_nodes());
        for node in ["n1", "n2", "n3"] {
            assert_eq!(index.pods_on(node), rebuilt.pods_on(node));
        }
        assert_eq!(index.len(), truth.values().filter(|n| n.is_some()).count());
    }

    #[tokio::test]
    async fn feed_reports_flips_and_becomes_ready_on_the_first_list() {
        let (store, mut writer) = crate::cache::cache::<Pod>(crate::cache::Storage::Encoded);
        let (events_tx, events_rx) = Subscription::channel(4);
        let (changes_tx, mut changes_rx) = mpsc::unbounded_channel();
        let (ready_tx, mut ready_rx) = watch::channel(false);
        let index = Arc::new(PodsByNode::new());
        let task = tokio::spawn(index.clone().feed(store, events_rx, changes_tx, ready_tx));

        let bound: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "a", "namespace": "team"}, "spec": {"containers": [], "nodeName": "n1"}
        }))
        .unwrap();
        writer.apply_watcher_event(&kube::runtime::watcher::Event::Init);
        writer.apply_watcher_event(&kube::runtime::watcher::Event::InitApply(bound.clone()));
        writer.apply_watcher_event(&kube::runtime::watcher::Event::InitDone);
        events_tx.send(InformerEvent::Relisted).await.unwrap();
        ready_rx.wait_for(|r| *r).await.unwrap();
        assert_eq!(changes_rx.recv().await, Some(VirtualKey::cluster("n1")));

        events_tx
            .send(InformerEvent::Deleted(Arc::new(bound)))
            .await
            .unwrap();
        assert_eq!(changes_rx.recv().await, Some(VirtualKey::cluster("n1")));
        assert!(!index.is_used("n1"));
        drop(events_tx);
        task.await.unwrap();
    }

    /// A pod that does not decode at a re-list once read as gone: its node flipped to
    /// unused, and the node syncer deleted the fake node under the pod. It keeps its node.
    #[tokio::test]
    async fn a_pod_that_does_not_decode_at_a_relist_keeps_its_node() {
        let (store, mut writer) = crate::cache::cache::<Pod>(crate::cache::Storage::Encoded);
        let (events_tx, events_rx) = Subscription::channel(4);
        let (changes_tx, mut changes_rx) = mpsc::unbounded_channel();
        let (ready_tx, mut ready_rx) = watch::channel(false);
        let index = Arc::new(PodsByNode::new());
        let task = tokio::spawn(index.clone().feed(store.clone(), events_rx, changes_tx, ready_tx));

        let bound: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "a", "namespace": "team"}, "spec": {"containers": [], "nodeName": "n1"}
        }))
        .unwrap();
        writer.apply_watcher_event(&kube::runtime::watcher::Event::Init);
        writer.apply_watcher_event(&kube::runtime::watcher::Event::InitApply(bound));
        writer.apply_watcher_event(&kube::runtime::watcher::Event::InitDone);
        events_tx.send(InformerEvent::Relisted).await.unwrap();
        ready_rx.wait_for(|r| *r).await.unwrap();
        assert_eq!(changes_rx.recv().await, Some(VirtualKey::cluster("n1")));

        store.corrupt(&kube::runtime::reflector::ObjectRef::new("a").within("team"));
        events_tx.send(InformerEvent::Relisted).await.unwrap();
        drop(events_tx);
        task.await.unwrap();
        assert!(index.is_used("n1"), "the node stays in use");
        assert_eq!(index.node_of(&pod("a")), Some("n1".to_string()));
        assert_eq!(changes_rx.recv().await, None, "no node flipped");
    }
}
