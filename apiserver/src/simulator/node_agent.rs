//! The node agent: what the kubelets of the simulated nodes do with the pods bound to them.
//!
//! A pod bound to a simulated node starts `start_delay` after the agent sees the binding: it gets
//! an IP from the pod CIDR and the status a kubelet reports for running containers (phase Running,
//! all conditions True). A container whose image matches `fail_images` never starts: it waits in
//! `ErrImagePull` and the pod stays Pending and not Ready. A pod being deleted is deleted for real
//! (grace period 0) when its `deletionGracePeriodSeconds` have passed since the agent saw the
//! deletion, and its IP is released when it is gone. Containers never exit or restart.

use std::collections::{BTreeMap, HashMap};
use std::net::Ipv4Addr;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::time::Instant;

use super::nodes::{SimNode, fnv1a};
use super::{Simulation, SimulatorConfig};
use crate::deletion::DeleteOptions;
use crate::ip_pool::IpPool;
use crate::objects::now_rfc3339;
use crate::store::ObjectKey;

/// Where a tracked pod is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Bound; its start timer is pending.
    Starting,
    /// Its status has been reported.
    Started,
    /// Being deleted; deleted for real at the deadline.
    Terminating { deadline: Instant },
}

#[derive(Debug)]
struct Tracked {
    uid: String,
    node: String,
    ip: Option<Ipv4Addr>,
    phase: Phase,
}

/// Something the agent does at a point in time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Timer {
    /// Report the pod started.
    Start(ObjectKey, String),
    /// Delete the pod with grace period 0.
    Finish(ObjectKey, String),
}

/// The kubelets of all simulated nodes.
#[derive(Debug)]
pub(crate) struct NodeAgent {
    /// Node name to node IP.
    nodes: HashMap<String, Ipv4Addr>,
    pods: HashMap<ObjectKey, Tracked>,
    load: HashMap<String, usize>,
    pool: IpPool,
    timers: BTreeMap<(Instant, u64), Timer>,
    timer_seq: u64,
    start_delay: Duration,
    fail_images: Vec<String>,
}

impl NodeAgent {
    pub fn new(nodes: &[SimNode], pool: IpPool, config: &SimulatorConfig) -> Self {
        NodeAgent {
            nodes: nodes.iter().map(|n| (n.name.clone(), n.ip)).collect(),
            pods: HashMap::new(),
            load: HashMap::new(),
            pool,
            timers: BTreeMap::new(),
            timer_seq: 0,
            start_delay: config.start_delay,
            fail_images: config.fail_images.clone(),
        }
    }

    /// Pods on `node` (running, starting or terminating).
    pub fn load(&self, node: &str) -> usize {
        self.load.get(node).copied().unwrap_or(0)
    }

    /// Every tracked pod.
    pub fn keys(&self) -> impl Iterator<Item = &ObjectKey> {
        self.pods.keys()
    }

    /// Takes note of a pod's new state (`None`: deleted). Returns true when a pod left a simulated
    /// node (capacity was freed).
    pub fn observe(&mut self, key: &ObjectKey, pod: Option<&Value>) -> bool {
        let Some(pod) = pod else {
            return self.forget(key);
        };
        let uid = pod["metadata"]["uid"].as_str().unwrap_or_default();
        let mut freed = false;
        if self.pods.get(key).is_some_and(|t| t.uid != uid) {
            // Deleted and created again under the same name between two looks.
            freed = self.forget(key);
        }
        let node = pod["spec"]["nodeName"].as_str().unwrap_or_default();
        let Some(host_ip) = self.nodes.get(node).copied() else {
            return freed;
        };
        if !self.pods.contains_key(key) {
            let tracked = self.track(key, pod, uid, node, host_ip);
            self.pods.insert(key.clone(), tracked);
            *self.load.entry(node.to_string()).or_default() += 1;
        }
        if !pod["metadata"]["deletionTimestamp"].is_null() {
            let grace = pod["metadata"]["deletionGracePeriodSeconds"]
                .as_i64()
                .unwrap_or(0);
            let deadline = Instant::now() + Duration::from_secs(grace.max(0) as u64);
            let tracked = self.pods.get_mut(key).expect("just tracked");
            let sooner = match tracked.phase {
                Phase::Terminating { deadline: current } => deadline < current,
                _ => true,
            };
            if sooner {
                tracked.phase = Phase::Terminating { deadline };
                self.schedule(deadline, Timer::Finish(key.clone(), uid.to_string()));
            }
        }
        freed
    }

    /// Starts tracking a pod newly seen on a simulated node: one that already shows this node's
    /// status (a restarted simulator, a re-list) counts as started and keeps its IP.
    fn track(&mut self, key: &ObjectKey, pod: &Value, uid: &str, node: &str, host_ip: Ipv4Addr) -> Tracked {
        let status = &pod["status"];
        let reported = status["hostIP"].as_str() == Some(&host_ip.to_string());
        let ip = status["podIP"]
            .as_str()
            .and_then(|ip| ip.parse().ok())
            .filter(|ip| reported && self.pool.reserve(*ip));
        let terminated = matches!(status["phase"].as_str(), Some("Succeeded" | "Failed"));
        let phase = if terminated || (reported && ip.is_some()) {
            // A kubelet does not start a pod that has terminated.
            Phase::Started
        } else {
            self.schedule(
                Instant::now() + self.start_delay,
                Timer::Start(key.clone(), uid.to_string()),
            );
            Phase::Starting
        };
        Tracked {
            uid: uid.to_string(),
            node: node.to_string(),
            ip,
            phase,
        }
    }

    fn forget(&mut self, key: &ObjectKey) -> bool {
        let Some(tracked) = self.pods.remove(key) else {
            return false;
        };
        if let Some(ip) = tracked.ip {
            self.pool.release(ip);
        }
        if let Some(count) = self.load.get_mut(&tracked.node) {
            *count = count.saturating_sub(1);
        }
        true
    }

    fn schedule(&mut self, at: Instant, timer: Timer) {
        self.timer_seq += 1;
        self.timers.insert((at, self.timer_seq), timer);
    }

    /// When the next timer is due.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.timers.keys().next().map(|(at, _)| *at)
    }

    /// Removes and returns the timers due at `now`.
    fn due(&mut self, now: Instant) -> Vec<Timer> {
        let later = self.timers.split_off(&(now, u64::MAX));
        std::mem::replace(&mut self.timers, later).into_values().collect()
    }

    /// The tracked pod if it is still the one (uid) in the expected phase.
    fn tracked_in(&mut self, key: &ObjectKey, uid: &str, starting: bool) -> Option<&mut Tracked> {
        self.pods.get_mut(key).filter(|t| {
            t.uid == uid
                && match t.phase {
                    Phase::Starting => starting,
                    Phase::Terminating { .. } => !starting,
                    Phase::Started => false,
                }
        })
    }
}

/// Whether `image` matches a `fail_images` pattern: `*` matches any run of characters.
pub(crate) fn image_matches(pattern: &str, image: &str) -> bool {
    let parts: Vec<&str> = pattern.split('*').collect();
    if parts.len() == 1 {
        return pattern == image;
    }
    let (first, last) = (parts[0], parts[parts.len() - 1]);
    if !image.starts_with(first) || !image[first.len()..].ends_with(last) {
        return false;
    }
    let mut rest = &image[first.len()..image.len() - last.len()];
    for middle in &parts[1..parts.len() - 1] {
        match rest.find(middle) {
            Some(at) => rest = &rest[at + middle.len()..],
            None => return false,
        }
    }
    true
}

/// The status a kubelet reports once it has started (or failed to pull the images of) the pod.
pub(crate) fn started_status(
    pod: &Value,
    pod_ip: Ipv4Addr,
    host_ip: Ipv4Addr,
    now: &str,
    fail_images: &[String],
) -> Value {
    let uid = pod["metadata"]["uid"].as_str().unwrap_or_default();
    let fails = |c: &Value| {
        let image = c["image"].as_str().unwrap_or_default();
        fail_images.iter().any(|p| image_matches(p, image))
    };
    let container_id = |c: &Value| {
        let name = c["name"].as_str().unwrap_or_default();
        format!("sim://{:016x}", fnv1a(format!("{uid}/{name}").as_bytes()))
    };
    let base = |c: &Value| {
        let image = c["image"].as_str().unwrap_or_default();
        json!({"name": c["name"], "image": image, "imageID": "", "restartCount": 0, "lastState": {}})
    };
    let pulled = |c: &Value, mut status: Value| {
        let image = c["image"].as_str().unwrap_or_default();
        status["imageID"] = json!(format!("sim://sha256:{:016x}", fnv1a(image.as_bytes())));
        status["containerID"] = json!(container_id(c));
        status
    };
    let pull_failure = |c: &Value| {
        let image = c["image"].as_str().unwrap_or_default();
        json!({"waiting": {"reason": "ErrImagePull",
            "message": format!("failed to pull image \"{image}\": simulated pull failure (fail_images)")}})
    };
    let init: Vec<&Value> = pod["spec"]["initContainers"]
        .as_array()
        .into_iter()
        .flatten()
        .collect();
    let containers: Vec<&Value> = pod["spec"]["containers"]
        .as_array()
        .into_iter()
        .flatten()
        .collect();
    let init_failed = init.iter().any(|c| fails(c));
    let init_statuses: Vec<Value> = init
        .iter()
        .map(|c| {
            let mut status = base(c);
            if fails(c) {
                status["state"] = pull_failure(c);
                status["ready"] = json!(false);
            } else {
                status = pulled(c, status);
                status["state"] = json!({"terminated": {"exitCode": 0, "reason": "Completed",
                    "startedAt": now, "finishedAt": now, "containerID": container_id(c)}});
                status["ready"] = json!(true);
            }
            status["started"] = json!(false);
            status
        })
        .collect();
    let mut unready = Vec::new();
    let statuses: Vec<Value> = containers
        .iter()
        .map(|c| {
            let mut status = base(c);
            let running = !init_failed && !fails(c);
            if running {
                status = pulled(c, status);
                status["state"] = json!({"running": {"startedAt": now}});
            } else if init_failed {
                status["state"] = json!({"waiting": {"reason": "PodInitializing"}});
            } else {
                status["state"] = pull_failure(c);
            }
            if !running {
                unready.push(c["name"].as_str().unwrap_or_default().to_string());
            }
            status["ready"] = json!(running);
            status["started"] = json!(running);
            status
        })
        .collect();
    let condition = |kind: &str, ok: bool, reason: &str, message: String| {
        let mut condition = json!({"type": kind, "status": if ok { "True" } else { "False" },
            "lastProbeTime": null, "lastTransitionTime": now});
        if !ok {
            condition["reason"] = json!(reason);
            condition["message"] = json!(message);
        }
        condition
    };
    let ready = unready.is_empty();
    let unready_message = format!("containers with unready status: [{}]", unready.join(" "));
    let scheduled = pod["status"]["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|c| c["type"] == "PodScheduled" && c["status"] == "True")
        .cloned()
        .unwrap_or_else(|| condition("PodScheduled", true, "", String::new()));
    let conditions = vec![
        condition("PodReadyToStartContainers", true, "", String::new()),
        condition(
            "Initialized",
            !init_failed,
            "ContainersNotInitialized",
            "containers with incomplete status: [init]".to_string(),
        ),
        condition("Ready", ready, "ContainersNotReady", unready_message.clone()),
        condition("ContainersReady", ready, "ContainersNotReady", unready_message),
        scheduled,
    ];
    let mut status = json!({
        "phase": if ready { "Running" } else { "Pending" },
        "conditions": conditions,
        "hostIP": host_ip.to_string(),
        "hostIPs": [{"ip": host_ip.to_string()}],
        "podIP": pod_ip.to_string(),
        "podIPs": [{"ip": pod_ip.to_string()}],
        "startTime": now,
        "containerStatuses": statuses,
        "qosClass": pod["status"]["qosClass"],
    });
    if !init_statuses.is_empty() {
        status["initContainerStatuses"] = Value::Array(init_statuses);
    }
    if let Some(ephemeral) = super::ephemeral::statuses(pod, now, fail_images) {
        status["ephemeralContainerStatuses"] = Value::Array(ephemeral);
    }
    status
}

impl Simulation {
    /// Runs the timers that are due.
    pub(super) async fn fire_timers(&mut self) {
        for timer in self.agent.due(Instant::now()) {
            match timer {
                Timer::Start(key, uid) => self.start_pod(&key, &uid),
                Timer::Finish(key, uid) => self.finish_pod(&key, &uid),
            }
            self.wrote().await;
        }
    }

    fn start_pod(&mut self, key: &ObjectKey, uid: &str) {
        // A conflict means someone else wrote the pod in between: read it again and retry.
        for _ in 0..3 {
            let Ok(pod) = self.objects.get(&self.kinds.pods, &key.0, &key.1) else {
                return;
            };
            if pod["metadata"]["uid"] != uid || !pod["metadata"]["deletionTimestamp"].is_null() {
                return;
            }
            let Some(tracked) = self.agent.tracked_in(key, uid, true) else {
                return;
            };
            let (node, assigned) = (tracked.node.clone(), tracked.ip);
            let Some(host_ip) = self.agent.nodes.get(&node).copied() else {
                return;
            };
            let Some(ip) = assigned.or_else(|| self.agent.pool.allocate()) else {
                tracing::warn!(pod = ?key, "the simulator's pod CIDR is exhausted; the pod stays Pending");
                return;
            };
            if let Some(tracked) = self.agent.pods.get_mut(key) {
                tracked.ip = Some(ip);
            }
            let status = started_status(&pod, ip, host_ip, &now_rfc3339(), &self.agent.fail_images);
            match self.write_status(&self.kinds.pods, &pod, status) {
                Ok(_) => {
                    if let Some(tracked) = self.agent.tracked_in(key, uid, true) {
                        tracked.phase = Phase::Started;
                    }
                    return;
                }
                Err(e) if e.code == 409 => continue,
                Err(e) => {
                    tracing::debug!(pod = ?key, error = %e.message, "could not report a pod started");
                    return;
                }
            }
        }
    }

    fn finish_pod(&mut self, key: &ObjectKey, uid: &str) {
        if self.agent.tracked_in(key, uid, false).is_none() {
            return;
        }
        let options = DeleteOptions {
            uid: Some(uid.to_string()),
            grace_period_seconds: Some(0),
            ..Default::default()
        };
        if let Err(e) = self.write().delete(&self.kinds.pods, &key.0, &key.1, &options) {
            tracing::debug!(pod = ?key, error = %e.message, "could not finish a pod's deletion");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn agent(delay: Duration) -> NodeAgent {
        let config = SimulatorConfig {
            nodes: 2,
            start_delay: delay,
            ..Default::default()
        };
        let nodes: Vec<SimNode> = (0..2).map(|i| SimNode::new(&config, i)).collect();
        NodeAgent::new(&nodes, IpPool::new("10.244.0.0/16").unwrap(), &config)
    }

    fn pod(uid: &str, node: &str) -> Value {
        json!({"metadata": {"name": "p", "namespace": "ns", "uid": uid},
            "spec": {"nodeName": node, "containers": [{"name": "app", "image": "nginx:1"}]},
            "status": {"phase": "Pending", "qosClass": "BestEffort"}})
    }

    #[test]
    fn image_patterns() {
        let cases = [
            ("bad/*", "bad/app:1", true),
            ("*:broken", "nginx:broken", true),
            ("nginx:1", "nginx:1", true),
            ("nginx:1", "nginx:2", false),
            ("*fail*", "registry/will-fail-now", true),
            ("a*b*c", "a-b-c", true),
            ("a*b*c", "a-c-b", false),
            ("ab*ba", "aba", false),
        ];
        for (pattern, image, expected) in cases {
            assert_eq!(image_matches(pattern, image), expected, "{pattern} {image}");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn bound_pods_start_after_the_delay_and_count_as_load() {
        let mut agent = agent(Duration::from_secs(2));
        let key = ("ns".to_string(), "p".to_string());
        assert!(!agent.observe(&key, Some(&pod("u1", "elsewhere"))));
        assert_eq!(agent.keys().count(), 0, "foreign nodes are not ours");
        agent.observe(&key, Some(&pod("u1", "sim-node-1")));
        assert_eq!(agent.load("sim-node-1"), 1);
        let start = Instant::now();
        assert_eq!(agent.next_deadline(), Some(start + Duration::from_secs(2)));
        assert!(agent.due(start).is_empty());
        tokio::time::advance(Duration::from_secs(2)).await;
        assert_eq!(
            agent.due(Instant::now()),
            [Timer::Start(key.clone(), "u1".to_string())]
        );
        assert!(agent.observe(&key, None), "capacity freed");
        assert_eq!(agent.load("sim-node-1"), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn deletions_finish_after_the_grace_period_which_may_only_shrink() {
        let mut agent = agent(Duration::ZERO);
        let key = ("ns".to_string(), "p".to_string());
        agent.observe(&key, Some(&pod("u1", "sim-node-0")));
        agent.due(Instant::now());
        let mut deleting = pod("u1", "sim-node-0");
        deleting["metadata"]["deletionTimestamp"] = json!("2026-01-01T00:00:30Z");
        deleting["metadata"]["deletionGracePeriodSeconds"] = json!(30);
        agent.observe(&key, Some(&deleting));
        let first = agent.next_deadline().unwrap();
        agent.observe(&key, Some(&deleting));
        assert_eq!(agent.timers.len(), 1, "the same deletion schedules once");
        deleting["metadata"]["deletionGracePeriodSeconds"] = json!(5);
        agent.observe(&key, Some(&deleting));
        let sooner = agent.next_deadline().unwrap();
        assert_eq!(first - sooner, Duration::from_secs(25));
        tokio::time::advance(Duration::from_secs(5)).await;
        let due = agent.due(Instant::now());
        assert_eq!(due, [Timer::Finish(key.clone(), "u1".to_string())]);
        assert!(agent.tracked_in(&key, "u1", false).is_some());
    }

    #[test]
    fn terminated_pods_are_not_started() {
        let mut agent = agent(Duration::ZERO);
        let mut done = pod("u1", "sim-node-0");
        done["status"]["phase"] = json!("Succeeded");
        agent.observe(&("ns".to_string(), "p".to_string()), Some(&done));
        assert!(agent.timers.is_empty());
        assert_eq!(agent.load("sim-node-0"), 1);
    }

    #[test]
    fn reported_pods_keep_their_ips() {
        let mut agent = agent(Duration::ZERO);
        let key = ("ns".to_string(), "p".to_string());
        let mut running = pod("u1", "sim-node-0");
        running["status"]["hostIP"] = json!("127.0.1.1");
        running["status"]["podIP"] = json!("10.244.0.7");
        agent.observe(&key, Some(&running));
        assert!(agent.timers.is_empty(), "already started");
        assert!(!agent.pool.reserve("10.244.0.7".parse().unwrap()), "kept");
        // Same name, new pod: the old one is forgotten and the IP released.
        assert!(agent.observe(&key, Some(&pod("u2", "sim-node-0"))));
        assert!(agent.pool.reserve("10.244.0.7".parse().unwrap()));
    }

    #[test]
    fn started_status_running_and_failing() {
        let ip: Ipv4Addr = "10.244.0.1".parse().unwrap();
        let host: Ipv4Addr = "127.0.1.1".parse().unwrap();
        let now = "2026-01-01T00:00:00Z";
        let mut scheduled = pod("u1", "sim-node-0");
        scheduled["status"]["conditions"] = json!([{"type": "PodScheduled", "status": "True",
            "lastTransitionTime": "2025-12-31T00:00:00Z"}]);
        let status = started_status(&scheduled, ip, host, now, &[]);
        assert_eq!(status["phase"], "Running");
        assert_eq!(status["podIP"], "10.244.0.1");
        assert_eq!(status["hostIP"], "127.0.1.1");
        assert_eq!(status["qosClass"], "BestEffort");
        let container = &status["containerStatuses"][0];
        assert_eq!(container["ready"], true);
        assert_eq!(container["state"]["running"]["startedAt"], now);
        assert!(container["containerID"].as_str().unwrap().starts_with("sim://"));
        for condition in status["conditions"].as_array().unwrap() {
            assert_eq!(condition["status"], "True", "{condition}");
        }
        let kept = status["conditions"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["type"] == "PodScheduled");
        assert_eq!(kept.unwrap()["lastTransitionTime"], "2025-12-31T00:00:00Z");

        let failing = started_status(&scheduled, ip, host, now, &["nginx:*".to_string()]);
        assert_eq!(failing["phase"], "Pending");
        let container = &failing["containerStatuses"][0];
        assert_eq!(container["ready"], false);
        assert_eq!(container["state"]["waiting"]["reason"], "ErrImagePull");
        let ready = failing["conditions"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["type"] == "Ready");
        assert_eq!(ready.unwrap()["reason"], "ContainersNotReady");
    }

    #[test]
    fn failing_init_containers_hold_the_app_containers() {
        let mut with_init = pod("u1", "sim-node-0");
        with_init["spec"]["initContainers"] = json!([{"name": "init", "image": "bad/init"}]);
        let ip: Ipv4Addr = "10.244.0.1".parse().unwrap();
        let status = started_status(&with_init, ip, ip, "now", &["bad/*".to_string()]);
        assert_eq!(
            status["initContainerStatuses"][0]["state"]["waiting"]["reason"],
            "ErrImagePull"
        );
        assert_eq!(
            status["containerStatuses"][0]["state"]["waiting"]["reason"],
            "PodInitializing"
        );
        let ok = started_status(&with_init, ip, ip, "now", &[]);
        assert_eq!(
            ok["initContainerStatuses"][0]["state"]["terminated"]["reason"],
            "Completed"
        );
        assert_eq!(ok["phase"], "Running");
    }
}
