//! Sealing as the appliance runs it: every `storage.seal_interval_secs`
//! the scheduler (`storage::jobs`) asks the writer for a pass, which seals
//! each series' ended hours (older than `storage.seal_delay_mins`) into
//! chunks, one (series, hour) per write transaction
//! ([`chunk::seal_oldest`]), as a chain of messages the writer sends
//! itself with a yield between links, like retention: ingest flushes and
//! the mailbox are served in between, and a pass stopped at any point (a
//! crash, a shutdown) leaves every hour either sealed or still rows. This
//! file holds what the writer and the API share: the counters and whether
//! a pass runs.
//!
//! A database written before chunks existed is migrated the same way: its
//! first passes seal its whole history, oldest hour first, and a restart
//! resumes where the last committed seal left off.

use std::sync::Mutex;

use serde::Serialize;

use super::chunk;

/// Sealing's counters, in `/health`'s writer status.
#[derive(Debug, Clone, Default, Serialize, schemars::JsonSchema)]
pub struct SealStatus {
    /// Hours of one series sealed into a chunk since start.
    pub chunks_sealed: u64,
    /// Readings moved from rows into chunks since start.
    pub readings_sealed: u64,
    /// When the last pass finished with nothing left to seal.
    pub caught_up_at: Option<String>,
    /// The last sealing failure, until a seal succeeds again.
    pub last_error: Option<String>,
}

/// Sealing's shared state: the counters and whether a pass is running.
#[derive(Default)]
pub struct SealState {
    status: Mutex<SealStatus>,
    running: Mutex<bool>,
}

impl SealState {
    pub fn status(&self) -> SealStatus {
        self.status
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    pub(super) fn update(&self, f: impl FnOnce(&mut SealStatus)) {
        f(&mut self.status.lock().unwrap_or_else(|p| p.into_inner()));
    }

    /// Marks a pass as started; false if one is running already.
    pub(super) fn begin(&self) -> bool {
        let mut running = self.running.lock().unwrap_or_else(|p| p.into_inner());
        !std::mem::replace(&mut *running, true)
    }

    pub(super) fn end(&self) {
        *self.running.lock().unwrap_or_else(|p| p.into_inner()) = false;
    }
}

/// The period boundary below which hours are sealed at `now_ms`.
pub fn seal_before(now_ms: i64, delay_mins: u32) -> i64 {
    chunk::period_start(now_ms.saturating_sub(i64::from(delay_mins) * 60_000))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::chunk::PERIOD_MS;

    #[test]
    fn one_pass_at_a_time_until_it_ends() {
        let state = SealState::default();
        assert!(state.begin());
        assert!(!state.begin(), "a second pass waits for the first");
        state.end();
        assert!(state.begin());
    }

    #[test]
    fn hours_are_sealed_once_ended_and_the_delay_passed() {
        let h = PERIOD_MS;
        // At 10:05 with a 10 minute delay, 09:00-10:00 is not yet sealed.
        assert_eq!(seal_before(10 * h + 5 * 60_000, 10), 9 * h);
        // At 10:10 it is.
        assert_eq!(seal_before(10 * h + 10 * 60_000, 10), 10 * h);
        assert_eq!(seal_before(10 * h, 0), 10 * h);
    }
}
