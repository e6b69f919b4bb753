//! What a reconcile asks of its controller afterwards.

use std::time::Duration;

/// The outcome of a reconcile: wait for the next change, or also run again after a delay.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Action {
    requeue_after: Option<Duration>,
}

impl Action {
    /// Reconcile again after `duration` (or sooner, if a change comes first).
    #[must_use]
    pub const fn requeue(duration: Duration) -> Self {
        Self {
            requeue_after: Some(duration),
        }
    }

    /// Reconcile again only when something changes.
    #[must_use]
    pub const fn await_change() -> Self {
        Self { requeue_after: None }
    }

    /// When to reconcile again without a change, if at all.
    pub const fn requeue_after(&self) -> Option<Duration> {
        self.requeue_after
    }
}
