//! What a server without controllers says when a workload is created on it: nothing here turns
//! a Deployment (or a ReplicaSet, StatefulSet, DaemonSet, Job, CronJob, ReplicationController)
//! into pods, which a user would otherwise find out only by waiting. Sent as a `Warning`
//! header, as kube-apiserver sends its own warnings (kubectl prints them).

use crate::resources::ResourceDef;

/// The warning a create of `def` gets on a server that runs no controllers, if it is a
/// workload kind.
pub(crate) fn warning(def: &ResourceDef) -> Option<String> {
    let workload = matches!(
        (def.group.as_str(), def.plural.as_str()),
        (
            "apps",
            "deployments" | "replicasets" | "statefulsets" | "daemonsets"
        ) | ("batch", "jobs" | "cronjobs")
            | ("", "replicationcontrollers")
    );
    (workload && def.crd.is_none()).then(|| {
        format!(
            "this API server runs no controllers: the {} is stored, but no pods are made from it \
             (vcsync dev --kube-assets runs a virtual side with kube-controller-manager)",
            def.kind
        )
    })
}
