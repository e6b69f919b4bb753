//! Leader election: several replicas of one vcsync instance may run; all of them watch, only
//! the holder of a Lease in the virtual cluster runs the controllers (and so writes).
//!
//! Built on kube-lease-manager (`leaderElection` in the config). Choices:
//! - The Lease lives in the virtual cluster (`kube-system/vcsync-<instance>` by default): the
//!   virtual API server is the one vcsync always has full rights on, and a virtual cluster
//!   that is down has nothing to sync anyway.
//! - A replica that loses the lease (it could not renew in time) stops its controllers and
//!   ends with an error, so that the kubelet restarts it as a fresh standby: a replica never
//!   goes on writing on a lease it may no longer hold.
//! - A leader shutting down gracefully releases the lease, so a standby takes over at once
//!   instead of after the lease duration.
//! - Off by default: one replica needs no election, and the Lease renewals would be the only
//!   writes of an idle instance.

use std::time::Duration;

use kube::Client;
use kube_lease_manager::{LeaseManagerBuilder, LeaseParams};
use tokio::{sync::watch, task::JoinHandle};

pub use crate::config::LeaderElectionConfig;
use crate::{Error, Result};

/// A running campaign for the lease: `is_leader` follows this replica's leadership; dropping
/// the campaign releases the lease.
pub struct Campaign {
    is_leader: watch::Receiver<bool>,
    task: JoinHandle<kube_lease_manager::Result<kube_lease_manager::LeaseManager>>,
    identity: String,
}

impl Campaign {
    /// Starts campaigning for the lease of `instance` in the virtual cluster.
    pub async fn start(client: Client, instance: &str, config: &LeaderElectionConfig) -> Result<Self> {
        config.validate().map_err(Error::LeaderElection)?;
        let identity = config.identity();
        let manager = LeaseManagerBuilder::new(client, config.lease_name(instance))
            .with_namespace(&config.namespace)
            .with_parameters(LeaseParams::new(
                identity.clone(),
                config.lease_duration_seconds,
                config.renew_grace_seconds,
            ))
            .build()
            .await
            .map_err(|err| Error::LeaderElection(err.to_string()))?;
        let (is_leader, task) = manager.watch().await;
        tracing::info!(identity = %identity, lease = %config.lease_name(instance), "campaigning for leadership");
        Ok(Self {
            is_leader,
            task,
            identity,
        })
    }

    /// This replica's identity in the lease.
    pub fn identity(&self) -> &str {
        &self.identity
    }

    /// Resolves once this replica holds the lease.
    pub async fn acquired(&mut self) -> Result<()> {
        self.is_leader
            .wait_for(|leader| *leader)
            .await
            .map(|_| ())
            .map_err(|_| Error::LeaderElection("the lease manager stopped".into()))
    }

    /// Resolves once this replica no longer holds the lease (or cannot tell any more).
    pub async fn lost(&mut self) {
        let _ = self.is_leader.wait_for(|leader| !*leader).await;
    }

    /// Releases the lease (if held) and waits, at most `timeout`, for that to be written.
    pub async fn release(self, timeout: Duration) {
        let Self { is_leader, task, .. } = self;
        drop(is_leader);
        match tokio::time::timeout(timeout, task).await {
            Ok(Ok(Ok(_))) => tracing::info!("released the leader lease"),
            Ok(Ok(Err(err))) => tracing::warn!(error = %err, "releasing the leader lease failed"),
            Ok(Err(err)) => tracing::warn!(error = %err, "the lease manager task failed"),
            Err(_) => tracing::warn!("releasing the leader lease timed out"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grace_must_be_below_duration() {
        let config = LeaderElectionConfig {
            lease_duration_seconds: 5,
            renew_grace_seconds: 5,
            ..LeaderElectionConfig::default()
        };
        assert!(config.validate().unwrap_err().contains("renewGraceSeconds (5)"));
        assert!(LeaderElectionConfig::default().validate().is_ok());
    }

    #[test]
    fn lease_name_defaults_to_the_instance() {
        assert_eq!(LeaderElectionConfig::default().lease_name("a"), "vcsync-a");
    }
}
