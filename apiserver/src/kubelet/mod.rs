//! The embedded API server and kubelets: its identity when it calls one.

pub mod identity;
