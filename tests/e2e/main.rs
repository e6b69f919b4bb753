//! End-to-end tests of the `vcsync` binary: embedded host and virtual API servers by
//! default; real clusters when `VCSYNC_E2E_HOST_KUBECONFIG` and
//! `VCSYNC_E2E_VIRTUAL_KUBECONFIG` are set, or a pair of real control planes (kube-apiserver,
//! kube-controller-manager, etcd) started once per run when `VCSYNC_KUBE_ASSETS` names their
//! binaries (the same test code runs in every mode; tests take the real clusters one at a time).

mod bad_input;
mod bench;
mod cli;
mod cluster;
mod cluster_connect;
mod cluster_drivers;
mod cluster_expose;
mod cluster_isolation;
mod cluster_kubernetes_state;
mod cluster_local_state;
mod cluster_snapshot;
mod crd_sync;
mod data_sync;
mod deletion_brake;
mod env;
mod faults;
mod from_host;
mod helm;
mod host_owner;
mod identity;
mod kinds;
mod kubectl;
mod kubelet;
mod kubelet_api;
mod kubelet_stats;
mod leader;
mod nodes;
mod ops;
mod plugins;
mod pods;
mod references;
mod restart;
mod security;
mod service_policy;
mod services;
mod snapshot_restore;
mod soak;
mod token_secrets;
mod workloads;
