//! What `/readyz` reports: this replica's role, readiness and the warnings an operator must
//! look at.

use std::{
    collections::BTreeMap,
    fmt,
    sync::{
        Mutex,
        atomic::{AtomicBool, Ordering},
    },
};

use prometheus_client::metrics::gauge::Gauge;

/// Leadership of this replica. Without leader election every replica is the leader.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// Runs the controllers and writes.
    Leader,
    /// Watches only, ready to take over.
    Standby,
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Role::Leader => "leader",
            Role::Standby => "standby",
        })
    }
}

/// What `/readyz` reports: caches, controllers, shutdown and leadership.
#[derive(Debug)]
pub struct Status {
    caches_synced: AtomicBool,
    controllers_started: AtomicBool,
    shutting_down: AtomicBool,
    standby: AtomicBool,
    leader: Gauge,
    /// Conditions an operator must look at that do not stop the syncer (by topic).
    warnings: Mutex<BTreeMap<&'static str, String>>,
}

impl Status {
    pub(crate) fn new(leader: Gauge) -> Self {
        leader.set(1);
        Self {
            caches_synced: AtomicBool::new(false),
            controllers_started: AtomicBool::new(false),
            shutting_down: AtomicBool::new(false),
            standby: AtomicBool::new(false),
            leader,
            warnings: Mutex::default(),
        }
    }

    /// Sets this replica's role (leader election; the default is [`Role::Leader`]) and the
    /// `vcsync_leader` gauge.
    pub fn set_role(&self, role: Role) {
        self.standby.store(role == Role::Standby, Ordering::SeqCst);
        self.leader.set(i64::from(role == Role::Leader));
    }

    /// This replica's role.
    pub fn role(&self) -> Role {
        if self.standby.load(Ordering::SeqCst) {
            Role::Standby
        } else {
            Role::Leader
        }
    }

    /// Every informer and index has its first full list (or no longer has, on false).
    pub fn set_caches_synced(&self, synced: bool) {
        self.caches_synced.store(synced, Ordering::SeqCst);
    }

    /// The controllers run (or no longer do, on false).
    pub fn set_controllers_started(&self, started: bool) {
        self.controllers_started.store(started, Ordering::SeqCst);
    }

    /// A shutdown was requested: not ready any more.
    pub fn set_shutting_down(&self) {
        self.shutting_down.store(true, Ordering::SeqCst);
    }

    /// Sets (Some) or clears (None) the warning about `topic` that `/readyz` shows. A warning
    /// does not make the replica unready: it keeps syncing what it safely can, and tenants
    /// must still reach their cluster.
    pub fn set_warning(&self, topic: &'static str, warning: Option<String>) {
        let mut warnings = self.warnings.lock().expect("warnings lock");
        match warning {
            Some(text) => warnings.insert(topic, text),
            None => warnings.remove(topic),
        };
    }

    /// Ready when caches are synced and the controllers started (a standby, which does not
    /// run controllers, once its caches are synced), and no shutdown is under way.
    pub fn readiness(&self) -> Readiness {
        let role = self.role();
        let (ready, reason) = if self.shutting_down.load(Ordering::SeqCst) {
            (false, "shutting down")
        } else if !self.caches_synced.load(Ordering::SeqCst) {
            (false, "caches not synced yet")
        } else if role == Role::Standby {
            (true, "caches synced; standby, controllers run on the leader")
        } else if !self.controllers_started.load(Ordering::SeqCst) {
            (false, "caches synced; controllers not started yet")
        } else {
            (true, "caches synced; controllers started")
        };
        let warnings = self
            .warnings
            .lock()
            .expect("warnings lock")
            .iter()
            .map(|(topic, text)| format!("{topic}: {text}"))
            .collect();
        Readiness {
            ready,
            reason,
            role,
            warnings,
        }
    }
}

/// The answer of `/readyz`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Readiness {
    /// Whether the replica is ready.
    pub ready: bool,
    /// Why (or why not).
    pub reason: &'static str,
    /// Leadership role.
    pub role: Role,
    /// What an operator must look at (`topic: text`).
    pub warnings: Vec<String>,
}

impl fmt::Display for Readiness {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "{}: {}\nrole: {}",
            if self.ready { "ready" } else { "not ready" },
            self.reason,
            self.role
        )?;
        for warning in &self.warnings {
            writeln!(f, "warning: {warning}")?;
        }
        Ok(())
    }
}
