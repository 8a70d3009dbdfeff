//! Alert rules on sensor values, evaluated as plain state machines over
//! timestamped samples, so every rule (duration, hysteresis, rate, silence,
//! no duplicate firing) is unit-tested without actors or clocks.
//!
//! A rule instance is either clear or firing; each evaluation returns at
//! most one [`Transition`]. A condition must hold for `for_ms` before it
//! fires, and a firing threshold alert clears only once the value is back
//! past `clear` (hysteresis), so noise around the threshold cannot flap.

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};

/// How bad an alert is.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Deserialize,
    Serialize,
    schemars::JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    Info,
    Warning,
    Critical,
    Emergency,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Info => "info",
            Severity::Warning => "warning",
            Severity::Critical => "critical",
            Severity::Emergency => "emergency",
        }
    }

    pub fn parse(text: &str) -> Option<Severity> {
        match text {
            "info" => Some(Severity::Info),
            "warning" => Some(Severity::Warning),
            "critical" => Some(Severity::Critical),
            "emergency" => Some(Severity::Emergency),
            _ => None,
        }
    }
}

/// What a value rule watches for.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Condition {
    /// Value above `threshold`; clears at or below `clear`.
    Above { threshold: f64, clear: f64 },
    /// Value below `threshold`; clears at or above `clear`.
    Below { threshold: f64, clear: f64 },
    /// Change per minute (either direction) above `per_minute` over the
    /// last `window_ms`; clears below `clear`.
    Rate {
        per_minute: f64,
        clear: f64,
        window_ms: i64,
    },
    /// No reading for `silence_ms`; clears on the next reading.
    Silence { silence_ms: i64 },
}

/// A change of an alert's state.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Transition {
    /// Now firing; the value that made it so (none for silence).
    Fire(Option<f64>),
    Resolve(Option<f64>),
}

/// The evaluation state of one rule.
#[derive(Debug, Clone)]
pub struct RuleState {
    condition: Condition,
    for_ms: i64,
    firing: bool,
    /// When the condition started holding (unfired).
    holding_since: Option<i64>,
    /// Recent samples, for rates.
    samples: VecDeque<(i64, f64)>,
    /// The last change per minute a rate rule measured (absolute).
    rate: Option<f64>,
    last_seen: i64,
}

impl RuleState {
    /// A rule starting at `now` (silence counts from here).
    pub fn new(condition: Condition, for_ms: i64, now: i64) -> RuleState {
        RuleState {
            condition,
            for_ms: for_ms.max(0),
            firing: false,
            holding_since: None,
            samples: VecDeque::new(),
            rate: None,
            last_seen: now,
        }
    }

    /// Restores a rule that was firing before a restart, so it does not
    /// fire again.
    pub fn set_firing(&mut self) {
        self.firing = true;
    }

    /// Whether the condition holds (to fire) and whether it has cleared (to
    /// resolve) for this sample. `None` means the rule cannot judge yet.
    fn judge(&mut self, ts: i64, value: f64) -> Option<(bool, bool)> {
        match self.condition {
            Condition::Above { threshold, clear } => Some((value > threshold, value <= clear)),
            Condition::Below { threshold, clear } => Some((value < threshold, value >= clear)),
            Condition::Rate {
                per_minute,
                clear,
                window_ms,
            } => {
                self.samples.push_back((ts, value));
                while let Some(&(t, _)) = self.samples.front() {
                    if ts - t > window_ms {
                        self.samples.pop_front();
                    } else {
                        break;
                    }
                }
                let &(t0, v0) = self.samples.front()?;
                if ts - t0 < window_ms / 4 || ts == t0 {
                    return None;
                }
                let rate = ((value - v0) / (ts - t0) as f64 * 60_000.0).abs();
                self.rate = Some(rate);
                Some((rate > per_minute, rate <= clear))
            }
            Condition::Silence { .. } => Some((false, true)),
        }
    }

    /// A new reading at `ts`.
    pub fn on_value(&mut self, ts: i64, value: f64) -> Option<Transition> {
        self.last_seen = self.last_seen.max(ts);
        let (holds, cleared) = self.judge(ts, value)?;
        if self.firing {
            if cleared {
                self.firing = false;
                self.holding_since = None;
                return Some(Transition::Resolve(Some(value)));
            }
            return None;
        }
        if !holds {
            self.holding_since = None;
            return None;
        }
        let since = *self.holding_since.get_or_insert(ts);
        if ts - since >= self.for_ms {
            self.firing = true;
            self.holding_since = None;
            return Some(Transition::Fire(Some(value)));
        }
        None
    }

    /// The change per minute a rate rule measured at its last reading.
    pub fn rate(&self) -> Option<f64> {
        self.rate
    }

    /// How long a silence rule has heard nothing, at `now`.
    pub fn silent_for_ms(&self, now: i64) -> i64 {
        (now - self.last_seen).max(0)
    }

    /// Whether the rule is firing.
    pub fn is_firing(&self) -> bool {
        self.firing
    }

    /// Time passing without readings (silence rules).
    pub fn on_tick(&mut self, now: i64) -> Option<Transition> {
        let Condition::Silence { silence_ms } = self.condition else {
            return None;
        };
        if !self.firing && now - self.last_seen >= silence_ms {
            self.firing = true;
            return Some(Transition::Fire(None));
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn above(threshold: f64, clear: f64, for_ms: i64) -> RuleState {
        RuleState::new(Condition::Above { threshold, clear }, for_ms, 0)
    }

    /// Feeds (ts, value) samples; returns the transitions with their ts.
    fn run(r: &mut RuleState, samples: &[(i64, f64)]) -> Vec<(i64, Transition)> {
        samples
            .iter()
            .filter_map(|&(t, v)| r.on_value(t, v).map(|tr| (t, tr)))
            .collect()
    }

    #[test]
    fn fires_once_while_the_condition_holds_and_resolves_when_it_clears() {
        let mut r = above(30.0, 30.0, 0);
        let out = run(
            &mut r,
            &[
                (1, 25.0),
                (2, 31.0),
                (3, 35.0),
                (4, 33.0),
                (5, 29.0),
                (6, 28.0),
            ],
        );
        assert_eq!(
            out,
            [
                (2, Transition::Fire(Some(31.0))),
                (5, Transition::Resolve(Some(29.0)))
            ]
        );
    }

    #[test]
    fn must_hold_for_the_duration() {
        let mut r = above(30.0, 30.0, 1000);
        // Breaches of 600 ms and 900 ms do not fire; one of 1000 ms does.
        let out = run(
            &mut r,
            &[
                (0, 31.0),
                (600, 31.0),
                (700, 20.0),
                (1000, 31.0),
                (1900, 32.0),
                (2000, 25.0),
                (3000, 31.0),
                (3500, 31.0),
                (4000, 31.0),
            ],
        );
        assert_eq!(out, [(4000, Transition::Fire(Some(31.0)))]);
    }

    #[test]
    fn hysteresis_stops_flapping_around_the_threshold() {
        let mut r = above(30.0, 28.0, 0);
        let noisy: Vec<(i64, f64)> = (0..100)
            .map(|i| (i, if i % 2 == 0 { 30.5 } else { 29.5 }))
            .collect();
        let out = run(&mut r, &noisy);
        assert_eq!(out.len(), 1, "fires once, never resolves at 29.5: {out:?}");
        assert_eq!(r.on_value(200, 27.9), Some(Transition::Resolve(Some(27.9))));
    }

    #[test]
    fn below_rules_mirror_above() {
        let mut r = RuleState::new(
            Condition::Below {
                threshold: 10.0,
                clear: 12.0,
            },
            0,
            0,
        );
        let out = run(&mut r, &[(1, 11.0), (2, 9.0), (3, 11.0), (4, 12.5)]);
        assert_eq!(
            out,
            [
                (2, Transition::Fire(Some(9.0))),
                (4, Transition::Resolve(Some(12.5)))
            ]
        );
    }

    #[test]
    fn rate_of_change_fires_on_fast_change_in_either_direction() {
        let rule = || {
            RuleState::new(
                Condition::Rate {
                    per_minute: 10.0,
                    clear: 5.0,
                    window_ms: 60_000,
                },
                0,
                0,
            )
        };
        // Slow drift: 1 per minute.
        let mut r = rule();
        let slow: Vec<_> = (0..20)
            .map(|i| (i * 10_000, 20.0 + i as f64 / 6.0))
            .collect();
        assert!(run(&mut r, &slow).is_empty());
        // A fall of 30 in 30 s = 60 per minute.
        let mut r = rule();
        let fast: Vec<_> = (0..7).map(|i| (i * 5_000, 50.0 - i as f64 * 5.0)).collect();
        let out = run(&mut r, &fast);
        assert!(
            matches!(out.first(), Some((_, Transition::Fire(_)))),
            "{out:?}"
        );
        // Then steady for a window: resolves.
        let steady: Vec<_> = (7..30).map(|i| (i * 5_000, 20.0)).collect();
        let out = run(&mut r, &steady);
        assert!(
            matches!(out.as_slice(), [(_, Transition::Resolve(_))]),
            "{out:?}"
        );
    }

    #[test]
    fn silence_fires_after_the_gap_and_resolves_on_the_next_reading() {
        let mut r = RuleState::new(Condition::Silence { silence_ms: 5000 }, 0, 0);
        assert_eq!(r.on_tick(4000), None);
        assert_eq!(r.on_value(4500, 1.0), None);
        assert_eq!(r.on_tick(9000), None, "the reading restarted the clock");
        assert_eq!(r.on_tick(9500), Some(Transition::Fire(None)));
        assert_eq!(r.on_tick(20_000), None, "no duplicate");
        assert_eq!(
            r.on_value(21_000, 1.0),
            Some(Transition::Resolve(Some(1.0)))
        );
    }

    #[test]
    fn a_restored_firing_rule_does_not_fire_again() {
        let mut r = above(30.0, 30.0, 0);
        r.set_firing();
        assert_eq!(r.on_value(1, 40.0), None);
        assert_eq!(r.on_value(2, 20.0), Some(Transition::Resolve(Some(20.0))));
    }

    #[test]
    fn severities_order_and_parse() {
        assert!(Severity::Emergency > Severity::Critical && Severity::Warning > Severity::Info);
        assert_eq!(Severity::parse("critical"), Some(Severity::Critical));
        assert_eq!(Severity::parse("loud"), None);
    }
}
