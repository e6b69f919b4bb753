//! The embedded API server and kubelets: its identity when it calls one, where a pod's kubelet
//! request goes, the proxy that takes it there, and the resource metrics API computed from the
//! kubelets' summaries.

pub(crate) mod client_tls;
pub mod identity;
pub(crate) mod location;
pub(crate) mod metrics;
pub(crate) mod proxy;
