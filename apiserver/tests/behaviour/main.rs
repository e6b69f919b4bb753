//! Behaviour tests of the API server through real clients (kube-rs, kubectl). They run against
//! the embedded server, or against a real cluster when `VCSYNC_TEST_KUBECONFIG` is set.

mod crd;
mod crud;
mod deletion;
mod env;
mod faults;
mod kinds;
mod kubectl;
mod patches;
mod persistence;
mod selectors;
mod simulator;
mod watch;
mod workloads;
