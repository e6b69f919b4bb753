//! Status up: what the host's scheduler and kubelet report about a host pod becomes the status
//! of its virtual pod, as if a kubelet of the virtual cluster had reported it.

use k8s_openapi::api::core::v1::{
    ContainerState, ContainerStateTerminated, ContainerStatus, Pod, PodCondition, PodStatus,
};

/// Condition types the host's scheduler and kubelet own; the virtual pod shows the host's.
/// Other types (readiness gates set by controllers of the virtual cluster, DisruptionTarget)
/// are kept from the virtual pod unless the host reports them too.
const HOST_CONDITIONS: [&str; 7] = [
    "PodScheduled",
    "Initialized",
    "ContainersReady",
    "Ready",
    "PodReadyToStartContainers",
    "PodResizePending",
    "PodResizeInProgress",
];

/// The status the virtual pod should have given its host pod, or None when it already has it
/// (no write). `refused`: why the virtual pod's ephemeral containers the host pod lacks stay off
/// the host; they are reported terminated with that message, so `kubectl debug -it` ends at once
/// with the reason instead of waiting for a container that never starts.
pub fn virtual_status(host: &Pod, virt: &Pod, refused: Option<&str>) -> Option<PodStatus> {
    let observed = virt.status.clone().unwrap_or_default();
    let mut desired = desired_status(host, virt);
    if let Some(message) = refused {
        report_refused_ephemeral(host, virt, message, &mut desired);
    }
    (desired != observed).then_some(desired)
}

fn desired_status(host: &Pod, virt: &Pod) -> PodStatus {
    let from = host.status.clone().unwrap_or_default();
    let mut status = virt.status.clone().unwrap_or_default();
    // Generations count different objects' changes; "observed the current spec" carries over.
    let generation = |observed: Option<i64>| match (observed, host.metadata.generation) {
        (Some(o), Some(g)) if o == g => virt.metadata.generation,
        _ => None,
    };
    status.phase = from.phase;
    status.message = from.message;
    status.reason = from.reason;
    status.host_ip = from.host_ip;
    status.host_ips = from.host_ips;
    status.pod_ip = from.pod_ip;
    status.pod_ips = from.pod_ips;
    status.start_time = from.start_time;
    status.init_container_statuses = from.init_container_statuses;
    status.container_statuses = from.container_statuses;
    status.ephemeral_container_statuses = from.ephemeral_container_statuses;
    status.resize = from.resize;
    status.resources = from.resources;
    status.volume_health = from.volume_health;
    status.observed_generation = generation(from.observed_generation);
    if from.qos_class.is_some() {
        status.qos_class = from.qos_class;
    }

    let mut conditions: Vec<PodCondition> = from
        .conditions
        .unwrap_or_default()
        .into_iter()
        .map(|mut c| {
            c.observed_generation = generation(c.observed_generation);
            c
        })
        .collect();
    for own in status.conditions.iter().flatten() {
        if !HOST_CONDITIONS.contains(&own.type_.as_str()) && !conditions.iter().any(|c| c.type_ == own.type_)
        {
            conditions.push(own.clone());
        }
    }
    apply_readiness_gates(virt, &mut conditions);
    status.conditions = (!conditions.is_empty()).then_some(conditions);
    status
}

/// Adds a terminated status (reason `PodSecurityViolation`, exit code 126: cannot run) for each
/// ephemeral container of `virt` that `host` lacks.
fn report_refused_ephemeral(host: &Pod, virt: &Pod, message: &str, status: &mut PodStatus) {
    let on_host = |name: &str| {
        host.spec
            .iter()
            .flat_map(|s| s.ephemeral_containers.iter().flatten())
            .any(|c| c.name == name)
    };
    let statuses = status.ephemeral_container_statuses.get_or_insert_with(Vec::new);
    for container in virt
        .spec
        .iter()
        .flat_map(|s| s.ephemeral_containers.iter().flatten())
    {
        if on_host(&container.name) || statuses.iter().any(|s| s.name == container.name) {
            continue;
        }
        statuses.push(ContainerStatus {
            name: container.name.clone(),
            image: container.image.clone().unwrap_or_default(),
            state: Some(ContainerState {
                terminated: Some(ContainerStateTerminated {
                    exit_code: 126,
                    reason: Some("PodSecurityViolation".to_string()),
                    message: Some(message.to_string()),
                    ..ContainerStateTerminated::default()
                }),
                ..ContainerState::default()
            }),
            ..ContainerStatus::default()
        });
    }
    if statuses.is_empty() {
        status.ephemeral_container_statuses = None;
    }
}

/// The host pod has no readiness gates (their conditions are set on the virtual pod), so its
/// Ready says only "containers ready"; the virtual pod is Ready when its gates are true too.
/// The messages are a kubelet's.
fn apply_readiness_gates(virt: &Pod, conditions: &mut [PodCondition]) {
    let gates = virt.spec.iter().flat_map(|s| s.readiness_gates.iter().flatten());
    let mut unready = Vec::new();
    for gate in gates {
        match conditions.iter().find(|c| c.type_ == gate.condition_type) {
            None => unready.push(format!(
                "corresponding condition of pod readiness gate \"{}\" does not exist.",
                gate.condition_type
            )),
            Some(c) if c.status != "True" => unready.push(format!(
                "the status of pod readiness gate \"{}\" is not \"True\", but {}",
                gate.condition_type, c.status
            )),
            Some(_) => {}
        }
    }
    if unready.is_empty() {
        return;
    }
    if let Some(ready) = conditions
        .iter_mut()
        .find(|c| c.type_ == "Ready" && c.status == "True")
    {
        ready.status = "False".into();
        ready.reason = Some("ReadinessGatesNotReady".into());
        ready.message = Some(unready.join(", "));
    }
}

/// Whether the virtual pod has been running on the host at some point: something only a
/// synced host pod reports (a condition of the host's scheduler or kubelet, or a binding's,
/// a start time, an IP, container statuses) is in its status. A virtual pod showing this whose
/// host pod is gone lost that pod outside vcsync (deleted, evicted); it is not run again.
pub fn was_running_on_host(virt: &Pod) -> bool {
    let Some(status) = &virt.status else {
        return false;
    };
    // A pod that could not be placed (the host's scheduler, or a host name collision) never
    // ran: `PodScheduled` False says nothing about a host pod.
    let unplaced = |c: &PodCondition| c.type_ == "PodScheduled" && c.status == "False";
    status
        .conditions
        .iter()
        .flatten()
        .any(|c| HOST_CONDITIONS.contains(&c.type_.as_str()) && !unplaced(c))
        || status.start_time.is_some()
        || status.host_ip.is_some()
        || status.pod_ip.is_some()
        || status.container_statuses.as_ref().is_some_and(|s| !s.is_empty())
}

/// Whether the pod has finished (`Succeeded` or `Failed`): nothing runs it any more.
pub fn is_terminal(pod: &Pod) -> bool {
    matches!(
        pod.status.as_ref().and_then(|s| s.phase.as_deref()),
        Some("Succeeded" | "Failed")
    )
}

/// Reason of the `PodScheduled=False` condition of a virtual pod whose host name a foreign
/// host object holds.
pub const COLLISION_REASON: &str = "HostNameCollision";

/// The status of a virtual pod that cannot be placed on the host because `message` (its host
/// name is taken): `PodScheduled` False with [`COLLISION_REASON`], as a scheduler reports a pod
/// it cannot place; None when the pod already says so (no write).
pub fn collision_status(virt: &Pod, message: &str) -> Option<PodStatus> {
    let mut status = virt.status.clone().unwrap_or_default();
    let conditions = status.conditions.get_or_insert_with(Vec::new);
    let reported = conditions.iter().any(|c| {
        c.type_ == "PodScheduled"
            && c.status == "False"
            && c.reason.as_deref() == Some(COLLISION_REASON)
            && c.message.as_deref() == Some(message)
    });
    if reported {
        return None;
    }
    conditions.retain(|c| c.type_ != "PodScheduled");
    conditions.push(PodCondition {
        type_: "PodScheduled".into(),
        status: "False".into(),
        reason: Some(COLLISION_REASON.into()),
        message: Some(message.into()),
        last_transition_time: Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
            jiff::Timestamp::now(),
        )),
        ..PodCondition::default()
    });
    status.phase.get_or_insert_with(|| "Pending".into());
    Some(status)
}

#[cfg(test)]
mod tests {
    use rstest::rstest;
    use serde_json::{Value, json};

    use super::*;

    fn pod(value: Value) -> Pod {
        serde_json::from_value(value).unwrap()
    }

    fn running_host() -> Pod {
        pod(json!({
            "metadata": {"name": "web-x-team", "generation": 3},
            "status": {
                "phase": "Running", "qosClass": "BestEffort", "observedGeneration": 3,
                "hostIP": "192.168.0.7", "hostIPs": [{"ip": "192.168.0.7"}],
                "podIP": "10.1.0.5", "podIPs": [{"ip": "10.1.0.5"}],
                "startTime": "2030-01-01T00:00:00Z",
                "conditions": [
                    {"type": "PodScheduled", "status": "True", "lastTransitionTime": "2030-01-01T00:00:00Z"},
                    {"type": "Ready", "status": "True", "lastTransitionTime": "2030-01-01T00:00:05Z", "observedGeneration": 3}
                ],
                "containerStatuses": [{"name": "app", "image": "app:1", "imageID": "sha256:1", "ready": true,
                    "restartCount": 0, "started": true, "state": {"running": {"startedAt": "2030-01-01T00:00:04Z"}}}],
                "initContainerStatuses": [{"name": "init", "image": "init:1", "imageID": "sha256:2", "ready": true,
                    "restartCount": 0, "state": {"terminated": {"exitCode": 0, "reason": "Completed"}}}]
            }
        }))
    }

    fn pending_virtual(extra_spec: Value) -> Pod {
        pod(json!({
            "metadata": {"name": "web", "namespace": "team", "generation": 1},
            "spec": extra_spec,
            "status": {"phase": "Pending", "qosClass": "BestEffort"}
        }))
    }

    #[test]
    fn a_collision_is_reported_once_as_an_unschedulable_pod() {
        let virt = pending_virtual(json!({}));
        let status = collision_status(&virt, "taken").expect("a first report writes");
        let conditions = status.conditions.clone().unwrap();
        let scheduled: Vec<_> = conditions.iter().filter(|c| c.type_ == "PodScheduled").collect();
        assert_eq!(scheduled.len(), 1, "{conditions:?}");
        assert_eq!(scheduled[0].status, "False");
        assert_eq!(scheduled[0].reason.as_deref(), Some(COLLISION_REASON));
        assert_eq!(status.phase.as_deref(), Some("Pending"));
        let reported = Pod {
            status: Some(status),
            ..virt
        };
        assert!(collision_status(&reported, "taken").is_none(), "no second write");
        assert!(
            collision_status(&reported, "taken by another").is_some(),
            "a new message is written"
        );
    }

    #[test]
    fn refused_ephemeral_containers_are_reported_terminated_and_added_ones_come_from_the_host() {
        let virt = pending_virtual(json!({"containers": [], "ephemeralContainers": [
            {"name": "on-host", "image": "busybox"}, {"name": "refused", "image": "busybox"}]}));
        let mut host = running_host();
        host.spec = Some(
            serde_json::from_value(json!({"containers": [],
            "ephemeralContainers": [{"name": "on-host", "image": "busybox"}]}))
            .unwrap(),
        );
        host.status.as_mut().unwrap().ephemeral_container_statuses = Some(vec![
            serde_json::from_value(json!({
            "name": "on-host", "image": "busybox", "imageID": "", "ready": false, "restartCount": 0,
            "state": {"running": {}}}))
            .unwrap(),
        ]);
        let status = virtual_status(&host, &virt, Some("violates PodSecurity")).unwrap();
        let statuses = status.ephemeral_container_statuses.unwrap();
        assert_eq!(statuses.len(), 2, "{statuses:?}");
        assert!(
            statuses[0].state.as_ref().unwrap().running.is_some(),
            "the host's"
        );
        let terminated = statuses[1].state.clone().unwrap().terminated.unwrap();
        assert_eq!(
            (statuses[1].name.as_str(), terminated.exit_code),
            ("refused", 126)
        );
        assert_eq!(terminated.reason.as_deref(), Some("PodSecurityViolation"));
        let without = virtual_status(&host, &virt, None).unwrap();
        assert_eq!(
            without.ephemeral_container_statuses.unwrap().len(),
            1,
            "nothing refused, nothing made up"
        );
    }

    #[test]
    fn host_status_comes_up() {
        let status =
            virtual_status(&running_host(), &pending_virtual(json!({"containers": []})), None).unwrap();
        let mut expected = serde_json::to_value(running_host().status.unwrap()).unwrap();
        expected["observedGeneration"] = json!(1);
        expected["conditions"][1]["observedGeneration"] = json!(1);
        assert_eq!(serde_json::to_value(status).unwrap(), expected);
    }

    #[test]
    fn an_up_to_date_virtual_status_needs_no_write() {
        let host = running_host();
        let mut virt = pending_virtual(json!({"containers": []}));
        virt.status = virtual_status(&host, &virt, None);
        assert_eq!(virtual_status(&host, &virt, None), None);
    }

    #[test]
    fn a_fresh_host_pod_changes_nothing_on_a_fresh_virtual_pod() {
        let host =
            pod(json!({"metadata": {"name": "h"}, "status": {"phase": "Pending", "qosClass": "BestEffort"}}));
        assert_eq!(
            virtual_status(&host, &pending_virtual(json!({"containers": []})), None),
            None
        );
    }

    #[test]
    fn virtual_only_conditions_are_kept() {
        let mut virt = pending_virtual(json!({"containers": []}));
        virt.status.as_mut().unwrap().conditions = Some(vec![
            serde_json::from_value(json!({"type": "DisruptionTarget", "status": "True"})).unwrap(),
            serde_json::from_value(json!({"type": "Ready", "status": "False"})).unwrap(),
        ]);
        let status = virtual_status(&running_host(), &virt, None).unwrap();
        let types: Vec<_> = status.conditions.unwrap().into_iter().map(|c| c.type_).collect();
        assert_eq!(types, ["PodScheduled", "Ready", "DisruptionTarget"]);
    }

    #[rstest]
    #[case::gate_missing(
        None,
        "False",
        Some("corresponding condition of pod readiness gate \"lb\" does not exist.")
    )]
    #[case::gate_false(
        Some("False"),
        "False",
        Some("the status of pod readiness gate \"lb\" is not \"True\", but False")
    )]
    #[case::gate_true(Some("True"), "True", None)]
    fn readiness_gates_hold_ready_back(
        #[case] gate: Option<&str>,
        #[case] ready: &str,
        #[case] message: Option<&str>,
    ) {
        let mut virt =
            pending_virtual(json!({"containers": [], "readinessGates": [{"conditionType": "lb"}]}));
        if let Some(gate) = gate {
            virt.status.as_mut().unwrap().conditions = Some(vec![
                serde_json::from_value(json!({"type": "lb", "status": gate})).unwrap(),
            ]);
        }
        let status = virtual_status(&running_host(), &virt, None).unwrap();
        let condition = status
            .conditions
            .unwrap()
            .into_iter()
            .find(|c| c.type_ == "Ready")
            .unwrap();
        assert_eq!(condition.status, ready);
        assert_eq!(condition.message.as_deref(), message);
    }

    #[rstest]
    #[case::fresh(json!({"phase": "Pending"}), false)]
    #[case::none(Value::Null, false)]
    #[case::bound(json!({"phase": "Pending", "conditions": [{"type": "PodScheduled", "status": "True"}]}), true)]
    #[case::not_placed(json!({"phase": "Pending", "conditions": [{"type": "PodScheduled", "status": "False", "reason": "HostNameCollision"}]}), false)]
    #[case::gate_condition_only(json!({"phase": "Pending", "conditions": [{"type": "lb", "status": "True"}]}), false)]
    #[case::started(json!({"phase": "Running", "startTime": "2030-01-01T00:00:00Z"}), true)]
    #[case::has_ip(json!({"phase": "Pending", "podIP": "10.0.0.1"}), true)]
    fn running_on_the_host_marker(#[case] status: Value, #[case] expected: bool) {
        let virt = pod(json!({"metadata": {"name": "p"}, "status": status}));
        assert_eq!(was_running_on_host(&virt), expected);
    }

    #[rstest]
    #[case("Succeeded", true)]
    #[case("Failed", true)]
    #[case("Running", false)]
    fn terminal_phases(#[case] phase: &str, #[case] expected: bool) {
        assert_eq!(
            is_terminal(&pod(json!({"metadata": {}, "status": {"phase": phase}}))),
            expected
        );
    }
}
