//! The scheduler: binds pending pods of `default-scheduler` to simulated nodes.
//!
//! Filters: the node exists and is not cordoned (`spec.unschedulable`), `spec.nodeSelector` and
//! required node affinity match its labels, and it runs fewer than `max_pods_per_node` pods. Among
//! the fitting nodes the least loaded wins (ties: the first in name order). Resource requests,
//! taints, pod affinity and topology spread are not considered. A pod that fits nowhere gets the
//! `PodScheduled=False` condition with reason `Unschedulable` and is retried when a pod leaves a
//! simulated node or a simulated node changes.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde_json::{Value, json};

use super::{KeySet, Simulation, labels};
use crate::objects::now_rfc3339;
use crate::store::ObjectKey;

/// The scheduler name this scheduler serves.
const SCHEDULER_NAME: &str = "default-scheduler";

/// Pods waiting to be scheduled.
#[derive(Debug, Default)]
pub(crate) struct Scheduler {
    /// To try at the next flush.
    pending: KeySet,
    /// Tried and found no node; retried on cluster changes.
    unschedulable: KeySet,
}

impl Scheduler {
    /// Takes note of a pod's new state (`None`: deleted).
    pub fn observe(&mut self, key: &ObjectKey, pod: Option<&Value>) {
        if pod.is_some_and(wants_scheduling) {
            if !self.unschedulable.contains(key) {
                self.pending.insert(key.clone());
            }
        } else {
            self.pending.remove(key);
            self.unschedulable.remove(key);
        }
    }

    /// Schedules the unschedulable pods again at the next flush.
    pub fn retry_unschedulable(&mut self) {
        self.pending.append(&mut self.unschedulable);
    }

    /// Every pod key the scheduler holds.
    pub fn keys(&self) -> impl Iterator<Item = &ObjectKey> {
        self.pending.iter().chain(self.unschedulable.iter())
    }
}

/// Whether this scheduler should bind the pod.
pub(crate) fn wants_scheduling(pod: &Value) -> bool {
    let spec = &pod["spec"];
    spec["nodeName"].as_str().is_none_or(str::is_empty)
        && spec["schedulerName"].as_str().unwrap_or(SCHEDULER_NAME) == SCHEDULER_NAME
        && spec["schedulingGates"].as_array().is_none_or(Vec::is_empty)
        && pod["metadata"]["deletionTimestamp"].is_null()
        && !matches!(pod["status"]["phase"].as_str(), Some("Succeeded" | "Failed"))
}

/// Why a node does not fit, in the scheduler's words.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Misfit {
    Selector,
    TooManyPods,
    Cordoned,
    Missing,
}

impl Misfit {
    fn text(self) -> &'static str {
        match self {
            Misfit::Selector => "node(s) didn't match Pod's node affinity/selector",
            Misfit::TooManyPods => "Too many pods",
            Misfit::Cordoned => "node(s) were unschedulable",
            Misfit::Missing => "node(s) not found",
        }
    }
}

/// Picks a node for `pod` among `nodes` (name, stored Node if it exists), given each node's pod
/// count. The error is the scheduler's FailedScheduling message.
pub(crate) fn pick_node<'a>(
    pod: &Value,
    nodes: &'a [(String, Option<Arc<Value>>)],
    load: impl Fn(&str) -> usize,
    max_pods: usize,
) -> Result<&'a str, String> {
    let mut best: Option<(&str, usize)> = None;
    let mut misfits: BTreeMap<&'static str, usize> = BTreeMap::new();
    for (name, node) in nodes {
        let fit = match node {
            None => Err(Misfit::Missing),
            Some(node) if node["spec"]["unschedulable"] == true => Err(Misfit::Cordoned),
            Some(node) if !matches_node(pod, node) => Err(Misfit::Selector),
            Some(_) if load(name) >= max_pods => Err(Misfit::TooManyPods),
            Some(_) => Ok(load(name)),
        };
        match fit {
            Ok(count) if best.is_none_or(|(_, b)| count < b) => best = Some((name, count)),
            Ok(_) => {}
            Err(misfit) => *misfits.entry(misfit.text()).or_default() += 1,
        }
    }
    if let Some((name, _)) = best {
        return Ok(name);
    }
    let reasons: Vec<String> = misfits.iter().map(|(text, n)| format!("{n} {text}")).collect();
    if reasons.is_empty() {
        return Err("0/0 nodes are available.".to_string());
    }
    Err(format!(
        "0/{} nodes are available: {}.",
        nodes.len(),
        reasons.join(", ")
    ))
}

/// `spec.nodeSelector` and required node affinity against the node's labels (and name).
fn matches_node(pod: &Value, node: &Value) -> bool {
    let node_labels = labels(node);
    let selector_ok = pod["spec"]["nodeSelector"]
        .as_object()
        .into_iter()
        .flatten()
        .all(|(k, v)| node_labels.get(k).map(String::as_str) == v.as_str());
    let terms = &pod["spec"]["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"];
    let affinity_ok = match terms.as_array() {
        Some(terms) if !terms.is_empty() => {
            let name = node["metadata"]["name"].as_str().unwrap_or_default();
            terms.iter().any(|term| term_matches(term, &node_labels, name))
        }
        _ => true,
    };
    selector_ok && affinity_ok
}

/// One NodeSelectorTerm: all its expressions and fields must match; an empty term matches nothing.
fn term_matches(term: &Value, node_labels: &BTreeMap<String, String>, node_name: &str) -> bool {
    let expressions = term["matchExpressions"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default();
    let fields = term["matchFields"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default();
    if expressions.is_empty() && fields.is_empty() {
        return false;
    }
    let labels_ok = expressions.iter().all(|e| {
        let key = e["key"].as_str().unwrap_or_default();
        requirement_matches(e, node_labels.get(key).map(String::as_str))
    });
    let fields_ok = fields.iter().all(|e| {
        let value = (e["key"] == "metadata.name").then_some(node_name);
        requirement_matches(e, value)
    });
    labels_ok && fields_ok
}

fn requirement_matches(expression: &Value, value: Option<&str>) -> bool {
    let values: Vec<&str> = expression["values"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    let number = |v: Option<&str>| v.and_then(|v| v.parse::<i64>().ok());
    match expression["operator"].as_str().unwrap_or_default() {
        "In" => value.is_some_and(|v| values.contains(&v)),
        "NotIn" => value.is_none_or(|v| !values.contains(&v)),
        "Exists" => value.is_some(),
        "DoesNotExist" => value.is_none(),
        "Gt" => matches!((number(value), number(values.first().copied())), (Some(a), Some(b)) if a > b),
        "Lt" => matches!((number(value), number(values.first().copied())), (Some(a), Some(b)) if a < b),
        _ => false,
    }
}

/// The pod's status with `PodScheduled=False/Unschedulable`, or `None` when it already says so.
pub(crate) fn unschedulable_status(pod: &Value, message: &str) -> Option<Value> {
    let mut status = pod["status"].clone();
    let conditions = status["conditions"].as_array().cloned().unwrap_or_default();
    let current = conditions.iter().find(|c| c["type"] == "PodScheduled");
    if current
        .is_some_and(|c| c["status"] == "False" && c["reason"] == "Unschedulable" && c["message"] == message)
    {
        return None;
    }
    let condition = json!({"type": "PodScheduled", "status": "False", "reason": "Unschedulable",
        "message": message, "lastProbeTime": null, "lastTransitionTime": now_rfc3339()});
    let mut conditions: Vec<Value> = conditions
        .into_iter()
        .filter(|c| c["type"] != "PodScheduled")
        .collect();
    conditions.push(condition);
    status["conditions"] = Value::Array(conditions);
    Some(status)
}

impl Simulation {
    /// Binds or marks unschedulable every pending pod.
    pub(super) async fn schedule_pending(&mut self) {
        if self.scheduler.pending.is_empty() {
            return;
        }
        let nodes: Vec<(String, Option<Arc<Value>>)> = self
            .nodes
            .iter()
            .map(|n| {
                (
                    n.name.clone(),
                    self.objects.get(&self.kinds.nodes, "", &n.name).ok(),
                )
            })
            .collect();
        let pending = std::mem::take(&mut self.scheduler.pending);
        for key in pending {
            let Ok(pod) = self.objects.get(&self.kinds.pods, &key.0, &key.1) else {
                continue;
            };
            if !wants_scheduling(&pod) {
                continue;
            }
            let picked = pick_node(
                &pod,
                &nodes,
                |n| self.agent.load(n),
                self.config.max_pods_per_node,
            )
            .map(str::to_string);
            match picked {
                Ok(node) => self.bind(&key, &pod, &node),
                Err(message) => {
                    self.scheduler.unschedulable.insert(key.clone());
                    if let Some(status) = unschedulable_status(&pod, &message)
                        && let Err(e) = self.write_status(&self.kinds.pods, &pod, status)
                    {
                        tracing::debug!(pod = ?key, error = %e.message, "could not mark a pod unschedulable");
                    }
                }
            }
            self.wrote().await;
        }
    }

    fn bind(&mut self, key: &ObjectKey, pod: &Value, node: &str) {
        let binding = json!({"apiVersion": "v1", "kind": "Binding",
            "metadata": {"name": key.1, "namespace": key.0, "uid": pod["metadata"]["uid"]},
            "target": {"apiVersion": "v1", "kind": "Node", "name": node}});
        match self.write().bind(&self.kinds.pods, &key.0, &key.1, &binding) {
            // Tracked at once, so the next pod of this flush sees the node's new load.
            Ok(bound) => {
                self.agent.observe(key, Some(&bound));
            }
            // Bound by someone else, being deleted, or gone: its events say what happens next.
            Err(e) => tracing::debug!(pod = ?key, error = %e.message, "binding failed"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(name: &str, labels: Value) -> (String, Option<Arc<Value>>) {
        let object = json!({"metadata": {"name": name, "labels": labels}, "spec": {}});
        (name.to_string(), Some(Arc::new(object)))
    }

    fn pod(spec: Value) -> Value {
        json!({"metadata": {"name": "p"}, "spec": spec, "status": {"phase": "Pending"}})
    }

    #[test]
    fn least_loaded_fitting_node_wins() {
        let nodes = [
            node("a", json!({"zone": "x"})),
            node("b", json!({"zone": "y"})),
            node("c", json!({"zone": "y"})),
        ];
        let load = |n: &str| match n {
            "a" => 0,
            "b" => 2,
            _ => 1,
        };
        assert_eq!(pick_node(&pod(json!({})), &nodes, load, 110), Ok("a"));
        let zoned = pod(json!({"nodeSelector": {"zone": "y"}}));
        assert_eq!(pick_node(&zoned, &nodes, load, 110), Ok("c"));
        // Ties go to the first node.
        assert_eq!(pick_node(&zoned, &nodes, |_| 0, 110), Ok("b"));
        let err = pick_node(&zoned, &nodes, |_| 3, 3).unwrap_err();
        assert_eq!(
            err,
            "0/3 nodes are available: 2 Too many pods, 1 node(s) didn't match Pod's node affinity/selector."
        );
    }

    #[test]
    fn required_node_affinity() {
        let nodes = [
            node("a", json!({"zone": "x", "gen": "3"})),
            node("b", json!({"zone": "y"})),
        ];
        let affinity = |terms: Value| {
            pod(
                json!({"affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution":
                {"nodeSelectorTerms": terms}}}}),
            )
        };
        let cases = [
            (
                json!([{"matchExpressions": [{"key": "zone", "operator": "In", "values": ["y"]}]}]),
                Ok("b"),
            ),
            (
                json!([{"matchExpressions": [{"key": "zone", "operator": "NotIn", "values": ["y"]}]}]),
                Ok("a"),
            ),
            (
                json!([{"matchExpressions": [{"key": "gen", "operator": "Gt", "values": ["2"]}]}]),
                Ok("a"),
            ),
            (
                json!([{"matchExpressions": [{"key": "gen", "operator": "DoesNotExist"}]}]),
                Ok("b"),
            ),
            (
                json!([{"matchFields": [{"key": "metadata.name", "operator": "In", "values": ["b"]}]}]),
                Ok("b"),
            ),
            (
                json!([{"matchExpressions": [{"key": "zone", "operator": "In", "values": ["z"]}]},
                {"matchExpressions": [{"key": "gen", "operator": "Exists"}]}]),
                Ok("a"),
            ),
        ];
        for (terms, expected) in cases {
            assert_eq!(
                pick_node(&affinity(terms.clone()), &nodes, |_| 0, 110),
                expected,
                "{terms}"
            );
        }
        assert!(pick_node(&affinity(json!([{}])), &nodes, |_| 0, 110).is_err());
    }

    #[test]
    fn cordoned_and_missing_nodes_are_skipped() {
        let cordoned = json!({"metadata": {"name": "a"}, "spec": {"unschedulable": true}});
        let nodes = [
            ("a".to_string(), Some(Arc::new(cordoned))),
            ("b".to_string(), None),
        ];
        let err = pick_node(&pod(json!({})), &nodes, |_| 0, 110).unwrap_err();
        assert_eq!(
            err,
            "0/2 nodes are available: 1 node(s) not found, 1 node(s) were unschedulable."
        );
    }

    #[test]
    fn scheduling_candidates_and_conditions() {
        assert!(wants_scheduling(&pod(
            json!({"schedulerName": "default-scheduler"})
        )));
        assert!(!wants_scheduling(&pod(json!({"schedulerName": "other"}))));
        assert!(!wants_scheduling(&pod(json!({"nodeName": "n"}))));
        assert!(!wants_scheduling(&pod(
            json!({"schedulingGates": [{"name": "wait"}]})
        )));
        assert_eq!(
            pick_node(&pod(json!({})), &[], |_| 0, 1),
            Err("0/0 nodes are available.".to_string())
        );
        let status = unschedulable_status(&pod(json!({})), "no").unwrap();
        assert_eq!(status["conditions"][0]["reason"], "Unschedulable");
        let marked = json!({"status": status});
        assert!(
            unschedulable_status(&marked, "no").is_none(),
            "no rewrite of the same message"
        );
        assert!(unschedulable_status(&marked, "other").is_some());
    }

    #[test]
    fn pending_pods_and_retries() {
        let mut scheduler = Scheduler::default();
        let key = ("ns".to_string(), "p".to_string());
        scheduler.observe(&key, Some(&pod(json!({}))));
        assert_eq!(scheduler.keys().count(), 1);
        let taken = std::mem::take(&mut scheduler.pending);
        scheduler.unschedulable.extend(taken);
        scheduler.observe(&key, Some(&pod(json!({}))));
        assert!(
            scheduler.pending.is_empty(),
            "unschedulable pods wait for a retry"
        );
        scheduler.retry_unschedulable();
        assert_eq!(scheduler.pending.len(), 1);
        scheduler.observe(&key, None);
        assert_eq!(scheduler.keys().count(), 0);
    }
}
