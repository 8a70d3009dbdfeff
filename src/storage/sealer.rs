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
    /// Since when sealing has failed without a seal succeeding in
    /// between (RFC 3339); null while it works.
    pub failing_since: Option<String>,
    /// Seal attempts that failed since start (each is retried at the next
    /// pass; the readings stay where they are, nothing is lost).
    pub failures: u64,
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

    /// Counts a seal of `chunks` chunks holding `readings` readings.
    pub(super) fn sealed(&self, chunks: u64, readings: u64) {
        self.update(|s| {
            s.chunks_sealed += chunks;
            s.readings_sealed += readings;
        });
    }

    /// Counts a failed seal at `at` (RFC 3339); true if it is the first of
    /// a run, the one worth a log line.
    pub(super) fn failed(&self, error: String, at: String) -> bool {
        let mut first = false;
        self.update(|s| {
            s.failures += 1;
            s.last_error = Some(error);
            if s.failing_since.is_none() {
                s.failing_since = Some(at);
                first = true;
            }
        });
        first
    }

    /// A pass went through every series at `at`. One without a failure
    /// ends a run of failures and leaves sealing caught up; after one with
    /// failures the error stays reported, and its run goes on.
    pub(super) fn pass_done(&self, clean: bool, at: String) {
        if clean {
            self.update(|s| {
                s.last_error = None;
                s.failing_since = None;
                s.caught_up_at = Some(at);
            });
        }
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
    fn a_run_of_failures_lasts_until_a_clean_pass() {
        let state = SealState::default();
        assert!(state.failed("disk full".into(), "t1".into()));
        state.sealed(3, 180);
        state.pass_done(false, "t2".into());
        assert!(
            !state.failed("damaged chunk".into(), "t3".into()),
            "a seal in a pass with failures does not end the run"
        );
        let s = state.status();
        assert_eq!(
            (s.failures, s.chunks_sealed, s.readings_sealed),
            (2, 3, 180)
        );
        assert_eq!(s.failing_since.as_deref(), Some("t1"));
        assert_eq!(s.last_error.as_deref(), Some("damaged chunk"));
        assert!(s.caught_up_at.is_none(), "not caught up while failing");
        state.pass_done(true, "t4".into());
        let s = state.status();
        assert!(s.last_error.is_none() && s.failing_since.is_none());
        assert_eq!(s.caught_up_at.as_deref(), Some("t4"));
        assert!(state.failed("again".into(), "t5".into()), "a new run");
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
