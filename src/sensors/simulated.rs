//! The simulated sensor: waveforms for development and demos, plus injectable
//! faults (panic, hang, error, slowness) that exercise supervision the way a
//! misbehaving hardware driver would.

use std::f64::consts::TAU;
use std::time::Duration;

use serde::Deserialize;

use super::{Sensor, SensorError};
use crate::vocab::reading::Value;

/// Shape of the simulated signal.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Waveform {
    /// `offset + amplitude * sin(2π t / period)`, from wall-clock time.
    Sine,
    /// A bounded random walk around `offset`, steps of `amplitude / 10`.
    RandomWalk,
    /// `offset` for the first half of each period, `offset + amplitude` for the second.
    Step,
    /// Always `offset`.
    Constant,
}

/// The kind of error injected by `error_rate`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FaultKind {
    Transient,
    Permanent,
    Unavailable,
}

/// `options` of a `kind = "simulated"` sensor.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SimulatedOptions {
    pub waveform: Waveform,
    pub amplitude: f64,
    pub offset: f64,
    pub period_ms: u64,
    /// Name of the value produced.
    pub metric: String,
    pub unit: String,
    /// Every Nth read of a driver instance panics (0: never).
    pub panic_every: u64,
    /// Every Nth read of a driver instance hangs for `hang_ms` (0: never).
    pub hang_every: u64,
    pub hang_ms: u64,
    /// Probability in 0..=1 that a read fails with `error_kind`.
    pub error_rate: f64,
    pub error_kind: FaultKind,
    /// Every read takes at least this long.
    pub slow_ms: u64,
    /// Seed for the random walk and the error draw (0: random).
    pub seed: u64,
}

impl Default for SimulatedOptions {
    fn default() -> Self {
        SimulatedOptions {
            waveform: Waveform::Sine,
            amplitude: 10.0,
            offset: 20.0,
            period_ms: 60_000,
            metric: "value".into(),
            unit: String::new(),
            panic_every: 0,
            hang_every: 0,
            hang_ms: 3_600_000,
            error_rate: 0.0,
            error_kind: FaultKind::Transient,
            slow_ms: 0,
            seed: 0,
        }
    }
}

impl SimulatedOptions {
    pub(crate) fn validate(&self) -> Result<(), String> {
        if !(0.0..=1.0).contains(&self.error_rate) {
            return Err(format!(
                "error_rate: {} is not within 0..=1",
                self.error_rate
            ));
        }
        if self.period_ms == 0 {
            return Err("period_ms: must be greater than 0".into());
        }
        if !self.amplitude.is_finite() || !self.offset.is_finite() {
            return Err("amplitude and offset must be finite numbers".into());
        }
        if self.metric.is_empty() {
            return Err("metric: must not be empty".into());
        }
        Ok(())
    }
}

/// A simulated driver; its read counter restarts with every new instance,
/// so `panic_every = 3` panics on the 3rd read after each restart.
pub struct SimulatedSensor {
    options: SimulatedOptions,
    reads: u64,
    walk: f64,
    rng: fastrand::Rng,
}

impl SimulatedSensor {
    pub fn new(options: SimulatedOptions) -> SimulatedSensor {
        let rng = if options.seed == 0 {
            fastrand::Rng::new()
        } else {
            fastrand::Rng::with_seed(options.seed)
        };
        SimulatedSensor {
            walk: options.offset,
            options,
            reads: 0,
            rng,
        }
    }

    fn every(n: u64, count: u64) -> bool {
        n > 0 && count.is_multiple_of(n)
    }

    /// The signal at wall-clock time `now_ms`.
    fn sample(&mut self, now_ms: i64) -> f64 {
        let o = &self.options;
        let phase = (now_ms.rem_euclid(o.period_ms as i64)) as f64 / o.period_ms as f64;
        match o.waveform {
            Waveform::Sine => o.offset + o.amplitude * (TAU * phase).sin(),
            Waveform::Step => {
                if phase < 0.5 {
                    o.offset
                } else {
                    o.offset + o.amplitude
                }
            }
            Waveform::Constant => o.offset,
            Waveform::RandomWalk => {
                let step = o.amplitude / 10.0 * (self.rng.f64() * 2.0 - 1.0);
                let lo = o.offset - o.amplitude.abs();
                let hi = o.offset + o.amplitude.abs();
                self.walk = (self.walk + step).clamp(lo, hi);
                self.walk
            }
        }
    }
}

impl Sensor for SimulatedSensor {
    fn read(&mut self) -> Result<Vec<Value>, SensorError> {
        self.reads += 1;
        let o = &self.options;
        if o.slow_ms > 0 {
            std::thread::sleep(Duration::from_millis(o.slow_ms));
        }
        if Self::every(o.hang_every, self.reads) {
            std::thread::sleep(Duration::from_millis(o.hang_ms));
        }
        if Self::every(o.panic_every, self.reads) {
            panic!("simulated panic on read {}", self.reads);
        }
        if o.error_rate > 0.0 && self.rng.f64() < o.error_rate {
            let msg = format!("simulated error on read {}", self.reads);
            return Err(match o.error_kind {
                FaultKind::Transient => SensorError::Transient(msg),
                FaultKind::Permanent => SensorError::Permanent(msg),
                FaultKind::Unavailable => SensorError::Unavailable(msg),
            });
        }
        let value = self.sample(crate::vocab::clock::now_ms());
        Ok(vec![Value::new(
            self.options.metric.clone(),
            value,
            self.options.unit.clone(),
        )])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sensor(o: SimulatedOptions) -> SimulatedSensor {
        SimulatedSensor::new(o)
    }

    #[test]
    fn waveforms_stay_in_their_band() {
        for waveform in [
            Waveform::Sine,
            Waveform::RandomWalk,
            Waveform::Step,
            Waveform::Constant,
        ] {
            let mut s = sensor(SimulatedOptions {
                waveform,
                seed: 7,
                ..Default::default()
            });
            for t in 0..500 {
                let v = s.sample(t * 997);
                assert!((10.0..=30.0).contains(&v), "{waveform:?} gave {v}");
            }
        }
    }

    #[test]
    fn step_switches_at_half_period() {
        let mut s = sensor(SimulatedOptions {
            waveform: Waveform::Step,
            period_ms: 1000,
            ..Default::default()
        });
        assert_eq!(s.sample(100), 20.0);
        assert_eq!(s.sample(600), 30.0);
        assert_eq!(s.sample(1100), 20.0);
    }

    #[test]
    fn panics_every_nth_read() {
        let mut s = sensor(SimulatedOptions {
            panic_every: 3,
            ..Default::default()
        });
        assert!(s.read().is_ok());
        assert!(s.read().is_ok());
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| s.read()));
        assert!(r.is_err());
    }

    #[test]
    fn error_rate_one_always_fails_with_its_kind() {
        let mut s = sensor(SimulatedOptions {
            error_rate: 1.0,
            error_kind: FaultKind::Permanent,
            ..Default::default()
        });
        for _ in 0..5 {
            assert!(matches!(s.read(), Err(SensorError::Permanent(_))));
        }
    }

    #[test]
    fn invalid_options_are_refused() {
        let o = SimulatedOptions {
            error_rate: 1.5,
            ..Default::default()
        };
        assert!(o.validate().unwrap_err().contains("error_rate"));
    }
}
