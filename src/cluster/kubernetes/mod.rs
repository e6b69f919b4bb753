//! The `kubernetes` driver: a virtual cluster in a namespace of a host cluster. It applies
//! the objects [`render`] makes (Namespace, ServiceAccount, RBAC, config Secret, Service, and a
//! StatefulSet running a k3s control plane with vcsync as sidecar); `vcsync cluster render`
//! prints the same objects, and `deploy/manifests/` is that output for the example values.
//!
//! Every object it creates carries `vcsync.dev/cluster=<name>`; status is derived from the
//! StatefulSet, Service and Secret; pause scales to zero and deletes the cluster's synced pods
//! on the host (ownership label) and keeps the control plane's datastore claim; delete removes
//! every rendered object, the datastore claims, every host object with the ownership label, and
//! the namespace when this driver created it. Without `controlPlane.serviceCidr`, create
//! detects the host's service CIDR ([`detect_service_cidr`]), or leaves it to the pod's init
//! container.
//!
//! The host namespace it creates is labelled for Pod Security Admission
//! ([`pod_security_labels`], `enforce: baseline` by default) and vcsync's own gate
//! (`sync.pods.podSecurityStandard`) is set to the same level; a namespace it did not create
//! keeps its labels, and `create` says how to label it.
//!
//! Synced pods (k3s's CoreDNS among them) reach the virtual API server at the cluster IP of the
//! cluster's Service (`sync.pods.kubernetesService.hostService` in the rendered vcsync.yaml):
//! the virtual `default/kubernetes` IP is the host's own API server on the host. An init
//! container waits for that IP ([`wait_for_service_ip`]) and k3s's serving certificate names it
//! (`--tls-san`).

mod expose;
mod host;
mod isolation;
mod lifecycle;
mod names;
mod pod_security;
mod render;
mod service_cidr;
mod statefulset;
#[cfg(test)]
mod tests;

pub use self::{
    expose::{INGRESS_ANNOTATIONS, SERVICE_TYPES},
    host::KubernetesDriver,
    isolation::{
        DEFAULT_LIMITS, DEFAULT_OUTGOING_CIDR, DEFAULT_OUTGOING_EXCEPT, DEFAULT_QUOTA, DEFAULT_REQUESTS,
    },
    names::{
        CLUSTER_LABEL, DEFAULT_CONTROL_PLANE_IMAGE, DEFAULT_PERSISTENCE_SIZE, DEFAULT_POD_SECURITY_LEVEL,
        DEFAULT_VCSYNC_IMAGE, NO_PERSISTENCE, kubeconfig_secret, namespace_of,
    },
    pod_security::pod_security_labels,
    render::{render, render_yaml},
    service_cidr::{
        detect_service_cidr, detect_service_cidr_with, parse_service_cidr_error, wait_for_service_ip,
        wait_for_service_ip_with,
    },
};
