//! The embedded API server and kubelets: its identity when it calls one, where a pod's kubelet
//! request goes, and the proxy that takes it there.

pub(crate) mod client_tls;
pub mod identity;
pub(crate) mod location;
pub(crate) mod proxy;
