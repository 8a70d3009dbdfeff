//! `[supervisor]`: the restart policy every supervised actor shares.

use serde::Deserialize;

use crate::vocab::check::{ConfigError, positive};

/// `[supervisor]`: restart policy for every supervised actor.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SupervisorConfig {
    /// First restart delay; doubles on each consecutive failure.
    pub backoff_base_ms: u64,
    /// Restart delays never exceed this.
    pub backoff_max_ms: u64,
    /// Restart intensity: more than this many restarts ...
    pub max_restarts: u32,
    /// ... within this many seconds and the child is given up (`failed`).
    pub restart_window_secs: u64,
    /// Shutdown waits this long for the writer to flush before giving up.
    pub shutdown_timeout_ms: u64,
    /// Try a given-up sensor again now and then; `false`: it stays down
    /// until an operator restarts it.
    pub revive: bool,
    /// How long after giving up (or after a failed revive attempt) a
    /// sensor is tried again.
    pub revive_interval_ms: u64,
}

impl Default for SupervisorConfig {
    fn default() -> Self {
        SupervisorConfig {
            backoff_base_ms: 500,
            backoff_max_ms: 60_000,
            max_restarts: 5,
            restart_window_secs: 60,
            shutdown_timeout_ms: 10_000,
            revive: true,
            revive_interval_ms: 300_000,
        }
    }
}

impl SupervisorConfig {
    /// Checks every value that the types alone cannot.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let sv = self;
        positive("supervisor.backoff_base_ms", sv.backoff_base_ms)?;
        if sv.backoff_max_ms < sv.backoff_base_ms {
            return Err(ConfigError::invalid(
                "supervisor.backoff_max_ms",
                format!(
                    "{} is below supervisor.backoff_base_ms ({})",
                    sv.backoff_max_ms, sv.backoff_base_ms
                ),
            ));
        }
        positive("supervisor.restart_window_secs", sv.restart_window_secs)?;
        positive("supervisor.shutdown_timeout_ms", sv.shutdown_timeout_ms)?;
        if sv.revive {
            positive("supervisor.revive_interval_ms", sv.revive_interval_ms)?;
        }
        Ok(())
    }

    /// The revive interval for given-up sensors, when reviving is on.
    pub fn revive_after(&self) -> Option<std::time::Duration> {
        self.revive
            .then(|| std::time::Duration::from_millis(self.revive_interval_ms))
    }
}
