//! The restart policy as plain state with an injected clock: exponential
//! backoff with jitter between restarts, and OTP-style restart intensity
//! (more than `max_restarts` restarts within `window` gives the child up).
//! Failures also count until the child is healthy again, however far apart
//! something else (a sensor's circuit breaker) spaces them: a child that
//! fails again more than `window` after the failure that began an unhealthy
//! spell is given up too.
//!
//! Kept free of actors and timers so every rule is unit-tested directly.

use std::collections::VecDeque;
use std::time::Duration;

use tokio::time::Instant;

use crate::supervisor::config::SupervisorConfig;

/// The numbers behind restart decisions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RestartPolicy {
    /// Delay before the first restart after a failure.
    pub backoff_base: Duration,
    /// Delays double per consecutive failure up to this.
    pub backoff_max: Duration,
    /// Restarts allowed within `window`; one more failure gives up.
    pub max_restarts: u32,
    /// The sliding window for restart intensity. A child that has run this
    /// long since its last start has its backoff reset to the base.
    pub window: Duration,
    /// How long after giving up a child is tried again (`None`: never).
    pub revive: Option<Duration>,
}

impl RestartPolicy {
    pub fn from_config(c: &SupervisorConfig) -> RestartPolicy {
        RestartPolicy {
            backoff_base: Duration::from_millis(c.backoff_base_ms),
            backoff_max: Duration::from_millis(c.backoff_max_ms),
            max_restarts: c.max_restarts,
            window: Duration::from_secs(c.restart_window_secs),
            revive: None,
        }
    }

    /// The un-jittered delay after `consecutive` earlier failures.
    pub fn backoff(&self, consecutive: u32) -> Duration {
        let factor = 1u32.checked_shl(consecutive.min(31)).unwrap_or(u32::MAX);
        self.backoff_base
            .checked_mul(factor)
            .unwrap_or(self.backoff_max)
            .min(self.backoff_max)
    }
}

/// What to do about a failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Start a new instance after this delay.
    Restart { delay: Duration, attempt: u32 },
    /// Too many restarts within the window: leave the child down.
    GiveUp { restarts_in_window: u32 },
    /// Failing, without being healthy in between, for longer than the
    /// window: leave the child down.
    GiveUpFailing {
        failing_for: Duration,
        failures: u32,
    },
}

/// Restart history of one child.
#[derive(Debug, Clone, Default)]
pub struct RestartTracker {
    /// When each restart within the current window was decided.
    recent: VecDeque<Instant>,
    /// Failures since the child last ran for a whole window.
    consecutive: u32,
    last_start: Option<Instant>,
    /// The first failure since the child was last healthy, and the
    /// failures since.
    failing: Option<(Instant, u32)>,
}

impl RestartTracker {
    /// Records that an instance was healthy at `now`: started, for most
    /// children; for a child that reports its health (a sensor), its first
    /// read that did not fail. Ends an unhealthy spell.
    pub fn on_started(&mut self, now: Instant) {
        self.last_start = Some(now);
        self.failing = None;
    }

    /// Decides what follows a failure at `now`. `jitter` in `0.0..1.0` picks
    /// the delay within `[backoff / 2, backoff]` ("equal jitter"), so delays
    /// never shrink from one attempt to the next below the cap (two capped
    /// delays may come in either order) yet restarts spread out.
    pub fn on_failure(&mut self, policy: &RestartPolicy, now: Instant, jitter: f64) -> Decision {
        if let Some(started) = self.last_start
            && now.saturating_duration_since(started) >= policy.window
        {
            self.consecutive = 0;
        }
        while let Some(&t) = self.recent.front() {
            if now.saturating_duration_since(t) >= policy.window {
                self.recent.pop_front();
            } else {
                break;
            }
        }
        let (since, failures) = self.failing.get_or_insert((now, 0));
        *failures += 1;
        let failing_for = now.saturating_duration_since(*since);
        if *failures > 1 && failing_for >= policy.window {
            return Decision::GiveUpFailing {
                failing_for,
                failures: *failures,
            };
        }
        if self.recent.len() as u32 >= policy.max_restarts {
            return Decision::GiveUp {
                restarts_in_window: self.recent.len() as u32,
            };
        }
        let full = policy.backoff(self.consecutive);
        let jitter = jitter.clamp(0.0, 1.0);
        let delay = full.mul_f64(0.5 + 0.5 * jitter);
        self.consecutive += 1;
        self.recent.push_back(now);
        Decision::Restart {
            delay,
            attempt: self.consecutive,
        }
    }

    /// Restarts counted in the current window.
    pub fn restarts_in_window(&self) -> u32 {
        self.recent.len() as u32
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> RestartPolicy {
        RestartPolicy {
            backoff_base: Duration::from_millis(100),
            backoff_max: Duration::from_millis(1000),
            max_restarts: 3,
            window: Duration::from_secs(10),
            revive: None,
        }
    }

    fn delay(d: Decision) -> Duration {
        match d {
            Decision::Restart { delay, .. } => delay,
            other => panic!("expected a restart, got {other:?}"),
        }
    }

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let p = policy();
        let ms: Vec<_> = (0..6).map(|n| p.backoff(n).as_millis()).collect();
        assert_eq!(ms, [100, 200, 400, 800, 1000, 1000]);
        assert_eq!(p.backoff(200), Duration::from_millis(1000));
    }

    #[test]
    fn delays_grow_with_consecutive_failures() {
        let p = RestartPolicy {
            max_restarts: 10,
            ..policy()
        };
        let t0 = Instant::now();
        let mut tr = RestartTracker::default();
        let mut last = Duration::ZERO;
        for i in 0..5 {
            let now = t0 + Duration::from_millis(i * 50);
            tr.on_started(now);
            let d = delay(tr.on_failure(&p, now, 1.0));
            assert!(d >= last, "delay shrank: {d:?} < {last:?}");
            last = d;
        }
        assert_eq!(last, Duration::from_millis(1000));
    }

    #[test]
    fn jitter_stays_within_half_to_full() {
        let p = policy();
        let t0 = Instant::now();
        let mut a = RestartTracker::default();
        let mut b = RestartTracker::default();
        assert_eq!(delay(a.on_failure(&p, t0, 0.0)), Duration::from_millis(50));
        assert_eq!(delay(b.on_failure(&p, t0, 1.0)), Duration::from_millis(100));
    }

    #[test]
    fn gives_up_after_max_restarts_within_the_window() {
        let p = policy();
        let t0 = Instant::now();
        let mut tr = RestartTracker::default();
        for i in 0..3 {
            let d = tr.on_failure(&p, t0 + Duration::from_secs(i), 0.5);
            assert!(matches!(d, Decision::Restart { .. }), "{d:?}");
        }
        assert_eq!(
            tr.on_failure(&p, t0 + Duration::from_secs(3), 0.5),
            Decision::GiveUp {
                restarts_in_window: 3
            }
        );
    }

    #[test]
    fn old_restarts_leave_the_window() {
        let p = policy();
        let t0 = Instant::now();
        let mut tr = RestartTracker::default();
        for i in 0..3 {
            tr.on_failure(&p, t0 + Duration::from_secs(i), 0.5);
        }
        // (Healthy in between, so no unhealthy spell spans the window.)
        tr.on_started(t0 + Duration::from_secs(5));
        // 10.5 s after the first restart, only two remain in the 10 s window.
        let d = tr.on_failure(&p, t0 + Duration::from_millis(10_500), 0.5);
        assert!(matches!(d, Decision::Restart { .. }), "{d:?}");
        assert_eq!(tr.restarts_in_window(), 3);
    }

    #[test]
    fn a_child_that_ran_a_whole_window_starts_over_at_base() {
        let p = RestartPolicy {
            max_restarts: 100,
            ..policy()
        };
        let t0 = Instant::now();
        let mut tr = RestartTracker::default();
        for i in 0..4 {
            tr.on_failure(&p, t0 + Duration::from_millis(i), 1.0);
        }
        tr.on_started(t0 + Duration::from_secs(1));
        let d = delay(tr.on_failure(&p, t0 + Duration::from_secs(12), 1.0));
        assert_eq!(d, Duration::from_millis(100));
    }

    #[test]
    fn failures_spaced_beyond_the_window_give_up_while_the_child_is_never_healthy() {
        let p = policy();
        let t0 = Instant::now();
        let s = |n: u64| t0 + Duration::from_secs(n);
        // A breaker spaces the failures 5, 10, 20 s apart: never three
        // restarts within 10 s, but the child is never healthy between.
        let mut tr = RestartTracker::default();
        // (A child that reports its health is not `on_started` until it is.)
        for at in [1, 6] {
            let d = tr.on_failure(&p, s(at), 0.5);
            assert!(matches!(d, Decision::Restart { .. }), "{at}: {d:?}");
        }
        assert_eq!(
            tr.on_failure(&p, s(16), 0.5),
            Decision::GiveUpFailing {
                failing_for: Duration::from_secs(15),
                failures: 3
            }
        );
        // Healthy in between: the spell starts over.
        let mut tr = RestartTracker::default();
        tr.on_failure(&p, s(0), 0.5);
        for at in [0, 8, 16, 24, 32] {
            tr.on_started(s(at));
            let d = tr.on_failure(&p, s(at + 7), 0.5);
            assert!(matches!(d, Decision::Restart { .. }), "{at}: {d:?}");
        }
    }

    #[test]
    fn zero_max_restarts_gives_up_at_once() {
        let p = RestartPolicy {
            max_restarts: 0,
            ..policy()
        };
        let mut tr = RestartTracker::default();
        assert!(matches!(
            tr.on_failure(&p, Instant::now(), 0.5),
            Decision::GiveUp { .. }
        ));
    }
}
