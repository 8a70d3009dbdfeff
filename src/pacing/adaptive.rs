//! Variance-adaptive polling: a sensor whose readings hold still is polled
//! less often, and snaps back to its base interval the moment they move.
//!
//! Readings are *stable* when the last `window` values of every metric lie
//! within a band `tolerance` wide (max − min ≤ tolerance). Each stable read
//! multiplies the sensor's adaptive factor by `step`, up to `max_factor`. A
//! value that would widen its metric's band beyond `tolerance` is a change:
//! the factor returns to 1 at once and the window starts over from that
//! value. The sensor's interval is then base × adaptive factor × pacing
//! multiplier. Pure: it counts reads and knows no clock.

use std::collections::{HashMap, VecDeque};

use serde::Deserialize;

use crate::vocab::reading::Value;

/// `[sensors.adaptive]` of one sensor. Its presence turns adaptive polling
/// on for that sensor.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdaptiveConfig {
    /// Width of the band (in the metric's unit) that counts as stable;
    /// 0 means only identical readings.
    pub tolerance: f64,
    /// Each stable read multiplies the factor by this (> 1).
    pub step: f64,
    /// The factor never exceeds this (≥ 1).
    pub max_factor: f64,
    /// Reads that must lie in the band before the interval stretches (≥ 2).
    pub window: usize,
}

impl Default for AdaptiveConfig {
    fn default() -> Self {
        AdaptiveConfig {
            tolerance: 0.0,
            step: 1.5,
            max_factor: 4.0,
            window: 5,
        }
    }
}

/// The largest adaptive factor accepted.
pub const MAX_ADAPTIVE_FACTOR: f64 = 1000.0;

impl AdaptiveConfig {
    /// Checks the values; the error names the field (`step`, ...).
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        if !self.tolerance.is_finite() || self.tolerance < 0.0 {
            return Err((
                "tolerance",
                format!("{} must be a number of 0 or more", self.tolerance),
            ));
        }
        if !self.step.is_finite() || self.step <= 1.0 {
            return Err(("step", format!("{} must be greater than 1", self.step)));
        }
        if !(1.0..=MAX_ADAPTIVE_FACTOR).contains(&self.max_factor) {
            return Err((
                "max_factor",
                format!(
                    "{} must be from 1 to {MAX_ADAPTIVE_FACTOR}",
                    self.max_factor
                ),
            ));
        }
        if self.window < 2 {
            return Err(("window", format!("{} must be at least 2", self.window)));
        }
        Ok(())
    }
}

/// One sensor's adaptive state. See the module docs.
#[derive(Debug, Clone)]
pub struct AdaptiveTracker {
    config: AdaptiveConfig,
    windows: HashMap<String, VecDeque<f64>>,
    factor: f64,
}

impl AdaptiveTracker {
    pub fn new(config: AdaptiveConfig) -> AdaptiveTracker {
        AdaptiveTracker {
            config,
            windows: HashMap::new(),
            factor: 1.0,
        }
    }

    /// The current stretch of the base interval (1 to `max_factor`).
    pub fn factor(&self) -> f64 {
        self.factor
    }

    /// Would `value` widen `window` beyond the tolerance?
    fn breaks(&self, window: &VecDeque<f64>, value: f64) -> bool {
        let (lo, hi) = window
            .iter()
            .fold((value, value), |(lo, hi), v| (lo.min(*v), hi.max(*v)));
        hi - lo > self.config.tolerance
    }

    /// Takes in one read's values; returns the new factor.
    pub fn observe(&mut self, values: &[Value]) -> f64 {
        if values.is_empty() {
            return self.factor;
        }
        let changed = values.iter().any(|v| {
            self.windows
                .get(v.metric.as_ref())
                .is_some_and(|w| self.breaks(w, v.value))
        });
        if changed {
            self.windows.clear();
            self.factor = 1.0;
        }
        let size = self.config.window;
        for v in values {
            let w = self.windows.entry(v.metric.to_string()).or_default();
            if w.len() == size {
                w.pop_front();
            }
            w.push_back(v.value);
        }
        let full = values.iter().all(|v| {
            self.windows
                .get(v.metric.as_ref())
                .is_some_and(|w| w.len() == size)
        });
        if !changed && full {
            self.factor = (self.factor * self.config.step).min(self.config.max_factor);
        }
        self.factor
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tracker(tolerance: f64) -> AdaptiveTracker {
        AdaptiveTracker::new(AdaptiveConfig {
            tolerance,
            step: 2.0,
            max_factor: 8.0,
            window: 3,
        })
    }

    fn read(t: &mut AdaptiveTracker, v: f64) -> f64 {
        t.observe(&[Value::new("v", v, "")])
    }

    #[test]
    fn a_constant_signal_stretches_step_by_step_to_the_maximum() {
        let mut t = tracker(0.0);
        let factors: Vec<f64> = (0..8).map(|_| read(&mut t, 20.0)).collect();
        assert_eq!(factors, [1.0, 1.0, 2.0, 4.0, 8.0, 8.0, 8.0, 8.0]);
    }

    #[test]
    fn a_step_change_snaps_back_at_once_and_stretches_again_when_it_settles() {
        let mut t = tracker(0.5);
        for _ in 0..6 {
            read(&mut t, 20.0);
        }
        assert_eq!(t.factor(), 8.0);
        assert_eq!(read(&mut t, 25.0), 1.0, "the first changed read snaps back");
        assert_eq!(read(&mut t, 25.0), 1.0);
        assert_eq!(read(&mut t, 25.0), 2.0);
    }

    #[test]
    fn noise_within_the_tolerance_is_stable_and_drift_beyond_it_is_not() {
        let mut t = tracker(0.5);
        for v in [20.0, 20.2, 19.9, 20.1, 20.3, 19.85] {
            read(&mut t, v);
        }
        assert_eq!(t.factor(), 8.0);
        // A slow drift: each read within 0.5 of the last, but the band widens.
        let mut t = tracker(0.5);
        let factors: Vec<f64> = (0..8)
            .map(|i| read(&mut t, 20.0 + 0.2 * i as f64))
            .collect();
        assert!(factors.iter().all(|f| *f <= 2.0), "{factors:?}");
        assert!(factors.contains(&1.0));
    }

    #[test]
    fn every_metric_of_a_read_must_hold_still() {
        let mut t = tracker(0.0);
        let r = |a: f64, b: f64| [Value::new("a", a, ""), Value::new("b", b, "")];
        for _ in 0..5 {
            t.observe(&r(1.0, 2.0));
        }
        assert_eq!(t.factor(), 8.0);
        assert_eq!(t.observe(&r(1.0, 3.0)), 1.0);
        // A metric seen for the first time is no change, but must fill its
        // window before the read counts as stable.
        let mut t = tracker(0.0);
        for _ in 0..3 {
            t.observe(&r(1.0, 2.0)[..1]);
        }
        assert_eq!(t.factor(), 2.0);
        assert_eq!(t.observe(&r(1.0, 2.0)), 2.0);
    }

    #[test]
    fn an_empty_read_changes_nothing() {
        let mut t = tracker(0.0);
        for _ in 0..4 {
            read(&mut t, 1.0);
        }
        assert_eq!(t.observe(&[]), 4.0);
    }

    #[test]
    fn validation_names_the_field() {
        let bad = |f: fn(&mut AdaptiveConfig)| {
            let mut c = AdaptiveConfig::default();
            f(&mut c);
            c.validate().unwrap_err().0
        };
        assert!(AdaptiveConfig::default().validate().is_ok());
        assert_eq!(bad(|c| c.tolerance = -1.0), "tolerance");
        assert_eq!(bad(|c| c.step = 1.0), "step");
        assert_eq!(bad(|c| c.max_factor = 0.5), "max_factor");
        assert_eq!(bad(|c| c.window = 1), "window");
    }
}
