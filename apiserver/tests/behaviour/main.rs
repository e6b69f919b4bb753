//! Behaviour tests of the API server through real clients (kube-rs, kubectl). Each case runs
//! against the embedded server and against a real kube-apiserver (see `env.rs`).

mod crd;
mod crud;
mod defaulting;
mod deletion;
mod env;
mod faults;
mod field_validation;
mod kinds;
mod kubectl;
mod openapi;
mod patches;
mod persistence;
mod selectors;
mod server_side_apply;
mod simulator;
mod validation;
mod watch;
mod workloads;
