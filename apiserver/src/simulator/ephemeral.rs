//! Ephemeral containers (`kubectl debug`): the kubelet of a simulated node starts one as soon as
//! it is added to a pod the node runs, and reports it in `status.ephemeralContainerStatuses`
//! (running, or waiting in `ErrImagePull` for an image of `fail_images`), so that kubectl
//! attaches to it through the node's kubelet API. A pod without ephemeral containers costs one
//! field lookup per event.

use serde_json::{Value, json};

use super::Simulation;
use super::node_agent::image_matches;
use super::nodes::fnv1a;
use crate::objects::now_rfc3339;
use crate::store::ObjectKey;

/// The ephemeral container statuses `pod` should show, when one of its ephemeral containers has
/// none yet (those it has are kept).
pub(crate) fn statuses(pod: &Value, now: &str, fail_images: &[String]) -> Option<Vec<Value>> {
    let containers = pod["spec"]["ephemeralContainers"].as_array()?;
    let mut statuses = pod["status"]["ephemeralContainerStatuses"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let uid = pod["metadata"]["uid"].as_str().unwrap_or_default();
    let mut added = false;
    for container in containers {
        let name = container["name"].as_str().unwrap_or_default();
        if statuses.iter().any(|s| s["name"] == name) {
            continue;
        }
        let image = container["image"].as_str().unwrap_or_default();
        let mut status = json!({"name": name, "image": image, "imageID": "", "restartCount": 0,
            "lastState": {}, "ready": false});
        if fail_images.iter().any(|p| image_matches(p, image)) {
            status["state"] = json!({"waiting": {"reason": "ErrImagePull",
                "message": format!("failed to pull image \"{image}\": simulated pull failure (fail_images)")}});
        } else {
            status["imageID"] = json!(format!("sim://sha256:{:016x}", fnv1a(image.as_bytes())));
            status["containerID"] = json!(format!(
                "sim://{:016x}",
                fnv1a(format!("{uid}/{name}").as_bytes())
            ));
            status["state"] = json!({"running": {"startedAt": now}});
        }
        statuses.push(status);
        added = true;
    }
    added.then_some(statuses)
}

impl Simulation {
    /// Notes a pod of a simulated node that runs (its containers were reported) and has an
    /// ephemeral container to start.
    pub(super) fn observe_ephemeral(&mut self, key: &ObjectKey, pod: Option<&Value>) {
        let waiting = pod.is_some_and(|pod| {
            pod["spec"]["ephemeralContainers"].is_array()
                && self.is_ours(pod)
                && pod["status"]["containerStatuses"].is_array()
                && pod["metadata"]["deletionTimestamp"].is_null()
                && statuses(pod, "", &[]).is_some()
        });
        if waiting {
            self.ephemeral.insert(key.clone());
        } else {
            self.ephemeral.remove(key);
        }
    }

    fn is_ours(&self, pod: &Value) -> bool {
        let node = pod["spec"]["nodeName"].as_str();
        self.nodes.iter().any(|n| Some(n.name.as_str()) == node)
    }

    /// Reports the noted ephemeral containers started.
    pub(super) async fn start_ephemeral(&mut self) {
        for key in std::mem::take(&mut self.ephemeral) {
            let Ok(pod) = self.objects.get(&self.kinds.pods, &key.0, &key.1) else {
                continue;
            };
            let Some(list) = statuses(&pod, &now_rfc3339(), &self.config.fail_images) else {
                continue;
            };
            let mut status = pod["status"].clone();
            status["ephemeralContainerStatuses"] = Value::Array(list);
            // A conflict brings another event of the pod, which notes it again.
            if let Err(e) = self.write_status(&self.kinds.pods, &pod, status) {
                tracing::debug!(pod = ?key, error = %e.message, "could not report an ephemeral container");
            }
            self.wrote().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_ephemeral_containers_get_a_status_and_old_ones_keep_theirs() {
        let mut pod = json!({"metadata": {"uid": "u1"}, "spec": {"ephemeralContainers": [
            {"name": "debugger", "image": "busybox"}, {"name": "broken", "image": "bad/x"}]}});
        let list = statuses(&pod, "2026-01-01T00:00:00Z", &["bad/*".to_string()]).unwrap();
        assert_eq!(list[0]["name"], "debugger");
        assert_eq!(list[0]["state"]["running"]["startedAt"], "2026-01-01T00:00:00Z");
        assert_eq!(list[0]["ready"], false);
        assert!(list[0]["containerID"].as_str().unwrap().starts_with("sim://"));
        assert_eq!(list[1]["state"]["waiting"]["reason"], "ErrImagePull");
        pod["status"]["ephemeralContainerStatuses"] = Value::Array(list.clone());
        assert_eq!(statuses(&pod, "later", &[]), None, "nothing new");
        pod["spec"]["ephemeralContainers"]
            .as_array_mut()
            .unwrap()
            .push(json!({"name": "third", "image": "busybox"}));
        let more = statuses(&pod, "later", &[]).unwrap();
        assert_eq!(more[..2], list[..]);
        assert_eq!(more[2]["state"]["running"]["startedAt"], "later");
        assert_eq!(statuses(&json!({"spec": {}}), "now", &[]), None);
    }
}
