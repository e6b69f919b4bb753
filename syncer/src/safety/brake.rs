//! The brake on mass deletion: host deletes nobody witnessed the reason for are limited per
//! time window, and once the limit is hit they stay paused until an operator looks.
//!
//! Pure: the caller passes the time and the number of host objects this instance owns.

use std::{collections::VecDeque, time::Duration};

use serde::{Deserialize, Serialize};
use tokio::time::Instant;

/// `safety.deletionBrake` in vcsync.yaml.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BrakeConfig {
    /// Off only when an operator has decided that a mass deletion is wanted.
    #[serde(default = "default_enabled")]
    pub enabled: bool,
    /// Share of this instance's host objects that may be deleted within one window, in percent.
    #[serde(default = "default_max_percent")]
    pub max_percent: f64,
    /// Deletes always allowed within one window, however few objects there are.
    #[serde(default = "default_min_objects")]
    pub min_objects: usize,
    /// Length of the window.
    #[serde(default = "default_window_seconds")]
    pub window_seconds: u64,
}

fn default_enabled() -> bool {
    true
}

fn default_max_percent() -> f64 {
    25.0
}

fn default_min_objects() -> usize {
    100
}

fn default_window_seconds() -> u64 {
    60
}

impl Default for BrakeConfig {
    fn default() -> Self {
        Self {
            enabled: default_enabled(),
            max_percent: default_max_percent(),
            min_objects: default_min_objects(),
            window_seconds: default_window_seconds(),
        }
    }
}

impl BrakeConfig {
    /// Deletes allowed within one window when this instance owns `owned` host objects.
    pub fn limit(&self, owned: usize) -> usize {
        let share = (owned as f64 * self.max_percent / 100.0).ceil() as usize;
        share.max(self.min_objects)
    }
}

/// What the brake says to one delete.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Brake {
    /// Go ahead.
    Released,
    /// This delete made the brake engage: report it.
    Engaged {
        /// The limit that was hit.
        limit: usize,
    },
    /// The brake was already engaged.
    Held,
}

/// Counts unwitnessed deletes in a sliding window; latches once the limit is hit.
#[derive(Debug)]
pub struct DeletionBrake {
    config: BrakeConfig,
    recent: VecDeque<Instant>,
    engaged: bool,
}

impl DeletionBrake {
    /// A released brake with `config`.
    pub fn new(config: BrakeConfig) -> Self {
        Self {
            config,
            recent: VecDeque::new(),
            engaged: false,
        }
    }

    /// Whether the brake holds deletes.
    pub fn is_engaged(&self) -> bool {
        self.engaged
    }

    /// Asks to make one unwitnessed delete at `now`, with `owned` host objects of this instance.
    pub fn request(&mut self, now: Instant, owned: usize) -> Brake {
        if !self.config.enabled {
            return Brake::Released;
        }
        if self.engaged {
            return Brake::Held;
        }
        let window = Duration::from_secs(self.config.window_seconds);
        while self
            .recent
            .front()
            .is_some_and(|at| now.duration_since(*at) >= window)
        {
            self.recent.pop_front();
        }
        let limit = self.config.limit(owned);
        if self.recent.len() >= limit {
            self.engaged = true;
            self.recent.clear();
            return Brake::Engaged { limit };
        }
        self.recent.push_back(now);
        Brake::Released
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_limit_is_a_share_or_a_floor_whichever_is_larger() {
        let config = BrakeConfig::default();
        assert_eq!(config.limit(0), 100);
        assert_eq!(config.limit(400), 100);
        assert_eq!(config.limit(401), 101);
        assert_eq!(config.limit(10_000), 2_500);
    }

    #[tokio::test(start_paused = true)]
    async fn deletes_within_the_limit_pass_and_the_one_past_it_engages_the_brake() {
        let mut brake = DeletionBrake::new(BrakeConfig::default());
        for _ in 0..100 {
            assert_eq!(brake.request(Instant::now(), 200), Brake::Released);
        }
        assert_eq!(brake.request(Instant::now(), 200), Brake::Engaged { limit: 100 });
        assert!(brake.is_engaged());
        tokio::time::advance(Duration::from_secs(3600)).await;
        assert_eq!(
            brake.request(Instant::now(), 200),
            Brake::Held,
            "latched until an operator looks"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_steady_trickle_never_engages_the_brake() {
        let mut brake = DeletionBrake::new(BrakeConfig::default());
        for _ in 0..1_000 {
            assert_eq!(brake.request(Instant::now(), 200), Brake::Released);
            tokio::time::advance(Duration::from_millis(700)).await;
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_disabled_brake_lets_everything_through() {
        let mut brake = DeletionBrake::new(BrakeConfig {
            enabled: false,
            ..BrakeConfig::default()
        });
        for _ in 0..10_000 {
            assert_eq!(brake.request(Instant::now(), 10), Brake::Released);
        }
    }
}
