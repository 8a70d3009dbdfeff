//! The circuit breaker as a pure state machine with an injected clock, with
//! resilience4j's semantics, so that every transition is unit-tested without
//! actors, timers or I/O.
//!
//! - **Closed**: calls pass. Each outcome goes into a count-based sliding
//!   window of the last `window` calls. Once it holds at least `min_calls`,
//!   the breaker opens when the failure rate reaches its threshold or the
//!   slow-call rate (calls slower than `slow_call`, failed or not) reaches
//!   its own.
//! - **Open**: calls are rejected for a wait that doubles with each trip in
//!   a row (`open_wait`, `2 × open_wait`, ... up to `open_wait_max`).
//! - **Half-open**: the first call after the wait moves it here; exactly
//!   `half_open_calls` trial calls are let through. When all have reported,
//!   their rates decide: over a threshold it opens again (with the next,
//!   longer wait), else it closes with a fresh window and the wait starts
//!   over at `open_wait`.
//!
//! A permission is a [`Ticket`] stamped with the breaker's generation, which
//! changes at every transition: the outcome of a call permitted before a
//! transition is ignored after it. A permitted call that never happened (its
//! caller gave up) is [released](Breaker::on_release), freeing its trial slot.

use std::collections::VecDeque;
use std::time::Duration;

pub use crate::vocab::guard::BreakerState as State;
use tokio::time::Instant;

/// The numbers behind one breaker's decisions.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BreakerPolicy {
    /// Percentage of failed calls (1-100) that opens the breaker.
    pub failure_rate: f64,
    /// Percentage of slow calls (1-100) that opens the breaker.
    pub slow_rate: f64,
    /// A call taking longer than this is slow.
    pub slow_call: Duration,
    /// Calls kept in the sliding window.
    pub window: usize,
    /// Calls the window must hold before the rates are judged.
    pub min_calls: usize,
    /// Wait in open after the first trip in a row.
    pub open_wait: Duration,
    /// The wait never grows beyond this.
    pub open_wait_max: Duration,
    /// Trial calls let through in half-open.
    pub half_open_calls: u32,
}

impl BreakerPolicy {
    /// The wait in open after `consecutive` earlier trips since the breaker
    /// last closed.
    pub fn wait(&self, consecutive: u32) -> Duration {
        let factor = 1u32.checked_shl(consecutive.min(31)).unwrap_or(u32::MAX);
        self.open_wait
            .checked_mul(factor)
            .unwrap_or(self.open_wait_max)
            .min(self.open_wait_max)
    }
}

/// A change of state, and why.
#[derive(Debug, Clone, PartialEq)]
pub struct Transition {
    pub from: State,
    pub to: State,
    pub reason: String,
}

/// Permission for one call; hand it back with the outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ticket {
    generation: u64,
}

/// A call the breaker did not permit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rejected {
    pub state: State,
    /// Time until a trial may be permitted: the rest of the open wait, or
    /// zero in half-open, where the trials already in flight must report
    /// first.
    pub retry_in: Duration,
}

/// The outcome of one call as the window keeps it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Outcome {
    failed: bool,
    slow: bool,
}

/// Counts of a set of outcomes.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Rates {
    pub calls: usize,
    pub failed: usize,
    pub slow: usize,
}

impl Rates {
    fn of<'a>(outcomes: impl Iterator<Item = &'a Outcome>) -> Rates {
        outcomes.fold(Rates::default(), |r, o| Rates {
            calls: r.calls + 1,
            failed: r.failed + usize::from(o.failed),
            slow: r.slow + usize::from(o.slow),
        })
    }

    /// Failed calls in percent, if there were calls.
    pub fn failure_rate(&self) -> Option<f64> {
        (self.calls > 0).then(|| 100.0 * self.failed as f64 / self.calls as f64)
    }

    /// Slow calls in percent, if there were calls.
    pub fn slow_rate(&self) -> Option<f64> {
        (self.calls > 0).then(|| 100.0 * self.slow as f64 / self.calls as f64)
    }

    /// Why these outcomes trip `policy`, if they do.
    fn verdict(&self, policy: &BreakerPolicy) -> Option<String> {
        let failure = self.failure_rate()?;
        let slow = self.slow_rate()?;
        if failure >= policy.failure_rate {
            Some(format!(
                "failure rate {failure:.0} % ≥ {:.0} % over {} calls",
                policy.failure_rate, self.calls
            ))
        } else if slow >= policy.slow_rate {
            Some(format!(
                "slow-call rate {slow:.0} % ≥ {:.0} % over {} calls (slower than {} ms)",
                policy.slow_rate,
                self.calls,
                policy.slow_call.as_millis()
            ))
        } else {
            None
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Closed,
    Open { until: Instant },
    HalfOpen { in_flight: u32 },
}

/// What a breaker shows: see [`Breaker::snapshot`].
#[derive(Debug, Clone, PartialEq)]
pub struct Snapshot {
    pub state: State,
    /// The sliding window in closed, the trial calls in half-open, nothing
    /// in open.
    pub rates: Rates,
    /// Trips since the breaker was created.
    pub trips: u64,
    /// Trips since it last closed (sets the current wait).
    pub consecutive_trips: u32,
    /// Calls refused since the breaker was created.
    pub rejected: u64,
    /// In open: how long until a trial may be permitted.
    pub next_trial_in: Option<Duration>,
    /// Trial calls permitted and not yet reported, in half-open.
    pub trials_in_flight: u32,
}

/// One breaker's state. See the module docs.
#[derive(Debug, Clone)]
pub struct Breaker {
    policy: BreakerPolicy,
    phase: Phase,
    /// Closed: the sliding window. Half-open: the trial outcomes so far.
    outcomes: VecDeque<Outcome>,
    generation: u64,
    consecutive_trips: u32,
    trips: u64,
    rejected: u64,
}

impl Breaker {
    pub fn new(policy: BreakerPolicy) -> Breaker {
        Breaker {
            outcomes: VecDeque::with_capacity(policy.window.min(1024)),
            policy,
            phase: Phase::Closed,
            generation: 0,
            consecutive_trips: 0,
            trips: 0,
            rejected: 0,
        }
    }

    pub fn policy(&self) -> &BreakerPolicy {
        &self.policy
    }

    pub fn state(&self) -> State {
        match self.phase {
            Phase::Closed => State::Closed,
            Phase::Open { .. } => State::Open,
            Phase::HalfOpen { .. } => State::HalfOpen,
        }
    }

    /// The time until a trial may be permitted, while open and waiting.
    pub fn open_for(&self, now: Instant) -> Option<Duration> {
        match self.phase {
            Phase::Open { until } if now < until => Some(until - now),
            _ => None,
        }
    }

    fn ticket(&self) -> Ticket {
        Ticket {
            generation: self.generation,
        }
    }

    fn go(&mut self, phase: Phase, reason: String) -> Transition {
        let from = self.state();
        self.phase = phase;
        self.generation += 1;
        self.outcomes.clear();
        Transition {
            from,
            to: self.state(),
            reason,
        }
    }

    fn trip(&mut self, now: Instant, reason: String) -> Transition {
        let wait = self.policy.wait(self.consecutive_trips);
        self.consecutive_trips = self.consecutive_trips.saturating_add(1);
        self.trips += 1;
        let reason = format!("{reason}; no calls for {} ms", wait.as_millis());
        self.go(Phase::Open { until: now + wait }, reason)
    }

    /// Asks to make a call at `now`. An open breaker whose wait is over
    /// moves to half-open and permits the call as a trial (the transition is
    /// returned with the ticket).
    pub fn try_acquire(&mut self, now: Instant) -> Result<(Ticket, Option<Transition>), Rejected> {
        match self.phase {
            Phase::Closed => Ok((self.ticket(), None)),
            Phase::Open { until } if now < until => {
                self.rejected += 1;
                Err(Rejected {
                    state: State::Open,
                    retry_in: until - now,
                })
            }
            Phase::Open { .. } => {
                let trials = self.policy.half_open_calls;
                let t = self.go(
                    Phase::HalfOpen { in_flight: 1 },
                    format!("open wait over; permitting {trials} trial calls"),
                );
                Ok((self.ticket(), Some(t)))
            }
            Phase::HalfOpen { in_flight } => {
                let given = in_flight as usize + self.outcomes.len();
                if given < self.policy.half_open_calls as usize {
                    self.phase = Phase::HalfOpen {
                        in_flight: in_flight + 1,
                    };
                    Ok((self.ticket(), None))
                } else {
                    self.rejected += 1;
                    Err(Rejected {
                        state: State::HalfOpen,
                        retry_in: Duration::ZERO,
                    })
                }
            }
        }
    }

    /// Reports the outcome of a permitted call that took `took`.
    pub fn on_result(
        &mut self,
        ticket: Ticket,
        now: Instant,
        took: Duration,
        ok: bool,
    ) -> Option<Transition> {
        if ticket.generation != self.generation {
            return None;
        }
        let outcome = Outcome {
            failed: !ok,
            slow: took > self.policy.slow_call,
        };
        match self.phase {
            Phase::Closed => {
                if self.outcomes.len() >= self.policy.window {
                    self.outcomes.pop_front();
                }
                self.outcomes.push_back(outcome);
                if self.outcomes.len() < self.policy.min_calls {
                    return None;
                }
                let reason = Rates::of(self.outcomes.iter()).verdict(&self.policy)?;
                Some(self.trip(now, reason))
            }
            // Permitted before a trip and reported after it: ignored (the
            // generation check catches it; kept for completeness).
            Phase::Open { .. } => None,
            Phase::HalfOpen { in_flight } => {
                self.phase = Phase::HalfOpen {
                    in_flight: in_flight.saturating_sub(1),
                };
                self.outcomes.push_back(outcome);
                if self.outcomes.len() < self.policy.half_open_calls as usize {
                    return None;
                }
                let rates = Rates::of(self.outcomes.iter());
                match rates.verdict(&self.policy) {
                    Some(reason) => Some(self.trip(now, format!("trial calls: {reason}"))),
                    None => {
                        self.consecutive_trips = 0;
                        Some(self.go(
                            Phase::Closed,
                            format!("{} trial calls succeeded", rates.calls),
                        ))
                    }
                }
            }
        }
    }

    /// A permitted call that was not made after all (its caller stopped, or
    /// the result says nothing about the guarded resource): frees its trial
    /// slot in half-open; counts nothing.
    pub fn on_release(&mut self, ticket: Ticket) {
        if ticket.generation != self.generation {
            return;
        }
        if let Phase::HalfOpen { in_flight } = self.phase {
            self.phase = Phase::HalfOpen {
                in_flight: in_flight.saturating_sub(1),
            };
        }
    }

    pub fn snapshot(&self, now: Instant) -> Snapshot {
        Snapshot {
            state: self.state(),
            rates: Rates::of(self.outcomes.iter()),
            trips: self.trips,
            consecutive_trips: self.consecutive_trips,
            rejected: self.rejected,
            next_trial_in: match self.phase {
                Phase::Open { until } => Some(until.saturating_duration_since(now)),
                _ => None,
            },
            trials_in_flight: match self.phase {
                Phase::HalfOpen { in_flight } => in_flight,
                _ => 0,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    fn policy() -> BreakerPolicy {
        BreakerPolicy {
            failure_rate: 50.0,
            slow_rate: 100.0,
            slow_call: 100 * MS,
            window: 4,
            min_calls: 2,
            open_wait: 1000 * MS,
            open_wait_max: 3000 * MS,
            half_open_calls: 2,
        }
    }

    /// A breaker and a clock the test moves.
    struct Rig {
        b: Breaker,
        now: Instant,
    }

    impl Rig {
        fn new(p: BreakerPolicy) -> Rig {
            Rig {
                b: Breaker::new(p),
                now: Instant::now(),
            }
        }

        fn advance(&mut self, d: Duration) {
            self.now += d;
        }

        /// One call taking `took` with outcome `ok`; the transitions it caused.
        fn call(&mut self, took: Duration, ok: bool) -> Result<Vec<Transition>, Rejected> {
            let (ticket, first) = self.b.try_acquire(self.now)?;
            let second = self.b.on_result(ticket, self.now, took, ok);
            Ok(first.into_iter().chain(second).collect())
        }

        fn ok(&mut self) -> Vec<Transition> {
            self.call(MS, true).expect("permitted")
        }

        fn fail(&mut self) -> Vec<Transition> {
            self.call(MS, false).expect("permitted")
        }

        fn to(&self, ts: &[Transition]) -> Vec<State> {
            ts.iter().map(|t| t.to).collect()
        }
    }

    #[test]
    fn closed_stays_closed_below_min_calls_and_below_the_thresholds() {
        let mut r = Rig::new(policy());
        assert!(r.fail().is_empty(), "one call is below min_calls");
        assert_eq!(r.b.state(), State::Closed);
        let mut r = Rig::new(BreakerPolicy {
            window: 4,
            min_calls: 4,
            ..policy()
        });
        for _ in 0..3 {
            assert!(r.ok().is_empty());
        }
        // 1 of 4 failed: 25 % < 50 %.
        assert!(r.fail().is_empty());
        // The window slides: the oldest success leaves, 2 of 4 = 50 % trips.
        let t = r.fail();
        assert_eq!(r.to(&t), [State::Open]);
        assert!(t[0].reason.contains("failure rate 50 %"), "{}", t[0].reason);
    }

    #[test]
    fn closed_to_open_on_the_failure_rate() {
        let mut r = Rig::new(policy());
        r.ok();
        let t = r.fail();
        assert_eq!(t.len(), 1);
        assert_eq!((t[0].from, t[0].to), (State::Closed, State::Open));
        let s = r.b.snapshot(r.now);
        assert_eq!((s.trips, s.consecutive_trips), (1, 1));
        assert_eq!(s.next_trial_in, Some(1000 * MS));
    }

    #[test]
    fn closed_to_open_on_the_slow_call_rate_even_when_calls_succeed() {
        let mut r = Rig::new(BreakerPolicy {
            slow_rate: 100.0,
            ..policy()
        });
        // Exactly at the slow-call duration is not slow.
        assert!(r.call(100 * MS, true).unwrap().is_empty());
        assert!(
            r.call(101 * MS, true).unwrap().is_empty(),
            "50 % slow < 100 %"
        );
        assert_eq!(r.b.state(), State::Closed);
        let mut r = Rig::new(policy());
        r.call(150 * MS, true).unwrap();
        let t = r.call(150 * MS, true).unwrap();
        assert_eq!(r.to(&t), [State::Open]);
        assert!(
            t[0].reason.contains("slow-call rate 100 %"),
            "{}",
            t[0].reason
        );
    }

    #[test]
    fn open_rejects_until_the_wait_is_over() {
        let mut r = Rig::new(policy());
        r.fail();
        r.fail();
        assert_eq!(r.b.state(), State::Open);
        r.advance(400 * MS);
        let e = r.call(MS, true).unwrap_err();
        assert_eq!(e.state, State::Open);
        assert_eq!(e.retry_in, 600 * MS);
        assert_eq!(r.b.open_for(r.now), Some(600 * MS));
        assert_eq!(r.b.snapshot(r.now).rejected, 1);
    }

    #[test]
    fn open_to_half_open_after_the_wait_permits_exactly_the_trial_calls() {
        let mut r = Rig::new(policy());
        r.fail();
        r.fail();
        r.advance(1000 * MS);
        assert_eq!(r.b.open_for(r.now), None);
        let (a, t) = r.b.try_acquire(r.now).unwrap();
        let t = t.expect("a transition");
        assert_eq!((t.from, t.to), (State::Open, State::HalfOpen));
        let (b, t) = r.b.try_acquire(r.now).unwrap();
        assert!(t.is_none());
        // Two trials in flight: a third is refused without waiting.
        let e = r.b.try_acquire(r.now).unwrap_err();
        assert_eq!(e.state, State::HalfOpen);
        assert_eq!(e.retry_in, Duration::ZERO);
        assert_eq!(r.b.snapshot(r.now).trials_in_flight, 2);
        // The first trial's result alone decides nothing.
        assert!(r.b.on_result(a, r.now, MS, true).is_none());
        assert_eq!(r.b.state(), State::HalfOpen);
        let t = r.b.on_result(b, r.now, MS, true).unwrap();
        assert_eq!((t.from, t.to), (State::HalfOpen, State::Closed));
    }

    #[test]
    fn half_open_to_closed_starts_a_fresh_window_and_the_base_wait() {
        let mut r = Rig::new(policy());
        r.fail();
        r.fail();
        r.advance(1000 * MS);
        r.ok();
        r.ok();
        assert_eq!(r.b.state(), State::Closed);
        let s = r.b.snapshot(r.now);
        assert_eq!(s.rates.calls, 0, "fresh window");
        assert_eq!(s.consecutive_trips, 0);
        // One failure in the fresh window is below min_calls...
        assert!(r.fail().is_empty());
        // ... and the next trip waits the base time again.
        r.fail();
        assert_eq!(r.b.open_for(r.now), Some(1000 * MS));
        assert_eq!(r.b.snapshot(r.now).trips, 2);
    }

    #[test]
    fn half_open_to_open_on_a_failed_trial_with_a_longer_wait() {
        let mut r = Rig::new(policy());
        r.fail();
        r.fail();
        r.advance(1000 * MS);
        r.ok();
        let t = r.fail();
        assert_eq!(r.to(&t), [State::Open]);
        assert_eq!(t[0].from, State::HalfOpen);
        assert!(
            t[0].reason.starts_with("trial calls: failure rate 50 %"),
            "{}",
            t[0].reason
        );
        assert_eq!(r.b.open_for(r.now), Some(2000 * MS), "the wait doubled");
        // Again: the wait is capped at open_wait_max.
        r.advance(2000 * MS);
        r.fail();
        r.fail();
        assert_eq!(r.b.open_for(r.now), Some(3000 * MS));
        r.advance(3000 * MS);
        r.fail();
        r.fail();
        assert_eq!(r.b.open_for(r.now), Some(3000 * MS));
        assert_eq!(r.b.snapshot(r.now).consecutive_trips, 4);
    }

    #[test]
    fn half_open_to_open_on_slow_trials() {
        let mut r = Rig::new(BreakerPolicy {
            half_open_calls: 1,
            ..policy()
        });
        r.fail();
        r.fail();
        r.advance(1000 * MS);
        let t = r.call(500 * MS, true).unwrap();
        assert_eq!(r.to(&t), [State::HalfOpen, State::Open]);
        assert!(t[1].reason.contains("slow-call rate"), "{}", t[1].reason);
    }

    #[test]
    fn a_released_trial_frees_its_slot_and_counts_nothing() {
        let mut r = Rig::new(BreakerPolicy {
            half_open_calls: 1,
            ..policy()
        });
        r.fail();
        r.fail();
        r.advance(1000 * MS);
        let (a, _) = r.b.try_acquire(r.now).unwrap();
        assert!(r.b.try_acquire(r.now).is_err());
        r.b.on_release(a);
        assert_eq!(r.b.state(), State::HalfOpen);
        let (b, t) = r.b.try_acquire(r.now).unwrap();
        assert!(t.is_none(), "still the same half-open phase");
        let t = r.b.on_result(b, r.now, MS, true).unwrap();
        assert_eq!(t.to, State::Closed);
    }

    #[test]
    fn outcomes_from_before_a_transition_are_ignored() {
        let mut r = Rig::new(policy());
        let (late, _) = r.b.try_acquire(r.now).unwrap();
        r.fail();
        r.fail();
        assert_eq!(r.b.state(), State::Open);
        // Permitted while closed, reported while open: ignored.
        assert!(r.b.on_result(late, r.now, MS, false).is_none());
        r.advance(1000 * MS);
        let (trial, _) = r.b.try_acquire(r.now).unwrap();
        // A stale success cannot close it, nor a stale release free a slot.
        assert!(r.b.on_result(late, r.now, MS, true).is_none());
        r.b.on_release(late);
        assert_eq!(r.b.snapshot(r.now).trials_in_flight, 1);
        assert!(r.b.on_result(trial, r.now, MS, true).is_none());
    }

    #[test]
    fn waits_double_per_trip_in_a_row_up_to_the_cap() {
        let p = policy();
        let ms: Vec<_> = (0..5).map(|n| p.wait(n).as_millis()).collect();
        assert_eq!(ms, [1000, 2000, 3000, 3000, 3000]);
        assert_eq!(p.wait(u32::MAX), 3000 * MS);
    }

    #[test]
    fn rates_are_reported_over_the_window() {
        let mut r = Rig::new(BreakerPolicy {
            min_calls: 4,
            ..policy()
        });
        r.ok();
        r.call(200 * MS, true).unwrap();
        r.fail();
        let s = r.b.snapshot(r.now);
        assert_eq!(
            s.rates,
            Rates {
                calls: 3,
                failed: 1,
                slow: 1
            }
        );
        let pct = |v: Option<f64>| v.map(|x| (x * 10.0).round() / 10.0);
        assert_eq!(pct(s.rates.failure_rate()), Some(33.3));
        assert_eq!(pct(s.rates.slow_rate()), Some(33.3));
        assert_eq!(Rates::default().failure_rate(), None);
    }
}
