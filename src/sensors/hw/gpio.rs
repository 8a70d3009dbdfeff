//! GPIO digital input: a PIR motion sensor, a door contact, a button.
//!
//! Interrupt-driven: the backend's interrupt callback pushes each
//! timestamped edge into a bounded [`EdgeQueue`]; every read drains it,
//! debounces the edges ([`super::debounce`]) and reports `state` (1 active,
//! 0 inactive) at each debounced change, stamped with its edge's time, plus
//! `count`, the activations since the previous read. The first read also
//! reports the level found at start-up, so the series starts known.
//!
//! The driver is generic over an `embedded-hal` digital input (the pin is
//! read at start-up and when edges were lost), so tests drive it with
//! `embedded-hal-mock` and hand-made edges.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};

use embedded_hal::digital::InputPin;
use serde::Deserialize;

use super::HwOptions;
use super::debounce::{Change, Debouncer, Edge};
use crate::sensors::{Sensor, SensorError};
use crate::vocab::clock::now_ms;
use crate::vocab::reading::Value;

/// The highest BCM GPIO number on the 40-pin header.
pub const MAX_HEADER_GPIO: u8 = 27;

/// The internal resistor on the input.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Pull {
    /// Pulled to 3.3 V: for a contact or button that connects the pin to ground.
    Up,
    /// Pulled to ground: for a contact to 3.3 V, or a sensor that drives the line.
    Down,
    /// No resistor: the circuit drives the line (or has its own resistor).
    None,
}

/// Which electrical level means "active" (motion, door open, pressed).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ActiveLevel {
    High,
    Low,
}

/// `options` of a `kind = "gpio"` sensor.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GpioOptions {
    /// BCM GPIO number (not the physical pin number), 0-27.
    pub pin: u8,
    /// `up`, `down` or `none`.
    pub pull: Pull,
    /// `high` or `low`: the level that means active.
    pub active: ActiveLevel,
    /// A level must hold this long to count (milliseconds, 1-60000).
    pub debounce_ms: u64,
    /// Edges held between reads; more are dropped (and the level re-read).
    pub edge_buffer: usize,
}

impl Default for GpioOptions {
    fn default() -> Self {
        GpioOptions {
            pin: 17,
            pull: Pull::Down,
            active: ActiveLevel::High,
            debounce_ms: 50,
            edge_buffer: 1024,
        }
    }
}

/// The largest `edge_buffer`.
pub const MAX_EDGE_BUFFER: usize = 65_536;

impl HwOptions for GpioOptions {
    fn validate(&self) -> Result<(), String> {
        if self.pin > MAX_HEADER_GPIO {
            return Err(format!(
                "pin: GPIO {} is not on the header (BCM numbers 0-{MAX_HEADER_GPIO})",
                self.pin
            ));
        }
        if !(1..=60_000).contains(&self.debounce_ms) {
            return Err(format!(
                "debounce_ms: {} is not within 1..=60000",
                self.debounce_ms
            ));
        }
        if !(1..=MAX_EDGE_BUFFER).contains(&self.edge_buffer) {
            return Err(format!(
                "edge_buffer: {} is not within 1..={MAX_EDGE_BUFFER}",
                self.edge_buffer
            ));
        }
        Ok(())
    }
}

impl GpioOptions {
    /// The logical level of an electrical one.
    pub fn is_active(&self, high: bool) -> bool {
        high == (self.active == ActiveLevel::High)
    }
}

/// Edges waiting for the next read: bounded, filled by the interrupt
/// callback, drained by the driver. When full, new edges are dropped and
/// counted, and the driver re-reads the pin to recover the level.
#[derive(Debug, Clone)]
pub struct EdgeQueue {
    inner: Arc<Mutex<EdgeBuffer>>,
}

#[derive(Debug)]
struct EdgeBuffer {
    edges: VecDeque<RawEdge>,
    capacity: usize,
    dropped: u64,
}

/// An edge as the interrupt saw it: the electrical level after it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RawEdge {
    pub ts_ms: i64,
    pub high: bool,
}

impl EdgeQueue {
    pub fn new(capacity: usize) -> EdgeQueue {
        EdgeQueue {
            inner: Arc::new(Mutex::new(EdgeBuffer {
                edges: VecDeque::with_capacity(capacity),
                capacity,
                dropped: 0,
            })),
        }
    }

    fn lock(&self) -> MutexGuard<'_, EdgeBuffer> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records an edge; never allocates (the buffer is preallocated).
    pub fn push(&self, edge: RawEdge) {
        let mut b = self.lock();
        if b.edges.len() < b.capacity {
            b.edges.push_back(edge);
        } else {
            b.dropped += 1;
        }
    }

    /// Moves every waiting edge into `out`; returns how many were dropped
    /// since the last drain.
    pub fn drain_into(&self, out: &mut Vec<RawEdge>) -> u64 {
        let mut b = self.lock();
        out.extend(b.edges.drain(..));
        std::mem::take(&mut b.dropped)
    }
}

/// A debounced digital input over any `embedded-hal` input pin.
pub struct GpioSensor<P> {
    pin: P,
    options: GpioOptions,
    edges: EdgeQueue,
    debouncer: Debouncer,
    started: Option<(i64, bool)>,
    raw: Vec<RawEdge>,
    logical: Vec<Edge>,
    changes: Vec<Change>,
    last_state_ts: i64,
}

impl<P: InputPin> GpioSensor<P> {
    /// Reads the pin's level at `now_ms` and starts debouncing from it. The
    /// backend must already be feeding `edges`.
    pub fn new(
        mut pin: P,
        edges: EdgeQueue,
        options: GpioOptions,
        now_ms: i64,
    ) -> Result<GpioSensor<P>, SensorError> {
        let high = read_level(&mut pin)?;
        let active = options.is_active(high);
        Ok(GpioSensor {
            pin,
            debouncer: Debouncer::new(options.debounce_ms, active, now_ms),
            options,
            edges,
            started: Some((now_ms, active)),
            raw: Vec::new(),
            logical: Vec::new(),
            changes: Vec::new(),
            last_state_ts: i64::MIN,
        })
    }

    /// One read at `now_ms`: drains the edges, debounces them, and returns
    /// the state changes and the activation count.
    pub fn read_at(&mut self, now_ms: i64) -> Result<Vec<Value>, SensorError> {
        self.raw.clear();
        let dropped = self.edges.drain_into(&mut self.raw);
        if dropped > 0 {
            // Edges were lost: the last one seen may not be the line's
            // level any more. The pin says what it is now.
            let high = read_level(&mut self.pin)?;
            log::warn!(
                "gpio {}: {dropped} edges dropped (edge_buffer {} full); level re-read",
                self.options.pin,
                self.options.edge_buffer
            );
            self.raw.push(RawEdge {
                ts_ms: now_ms,
                high,
            });
        }
        self.logical.clear();
        let options = &self.options;
        self.logical.extend(self.raw.iter().map(|r| Edge {
            ts_ms: r.ts_ms,
            active: options.is_active(r.high),
        }));
        self.changes.clear();
        self.debouncer
            .advance(&self.logical, now_ms, &mut self.changes);

        let mut values = Vec::with_capacity(self.changes.len() + 2);
        if let Some((ts, active)) = self.started.take() {
            values.push(self.state_value(ts, active));
        }
        let mut count = 0u32;
        for i in 0..self.changes.len() {
            let ch = self.changes[i];
            count += u32::from(ch.active);
            values.push(self.state_value(ch.ts_ms, ch.active));
        }
        values.push(Value::new("count", f64::from(count), ""));
        Ok(values)
    }

    /// A `state` value at `ts`, kept strictly after the previous one so two
    /// changes within a millisecond remain two readings.
    fn state_value(&mut self, ts: i64, active: bool) -> Value {
        let ts = ts.max(self.last_state_ts.saturating_add(1));
        self.last_state_ts = ts;
        Value::new("state", if active { 1.0 } else { 0.0 }, "").at(ts)
    }
}

fn read_level<P: InputPin>(pin: &mut P) -> Result<bool, SensorError> {
    pin.is_high()
        .map_err(|e| SensorError::Transient(format!("cannot read the input level: {e:?}")))
}

impl<P: InputPin + Send + 'static> Sensor for GpioSensor<P> {
    fn read(&mut self) -> Result<Vec<Value>, SensorError> {
        self.read_at(now_ms())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use embedded_hal_mock::eh1::digital::{Mock, State, Transaction};

    fn opts(active: ActiveLevel, debounce_ms: u64, edge_buffer: usize) -> GpioOptions {
        GpioOptions {
            active,
            debounce_ms,
            edge_buffer,
            ..GpioOptions::default()
        }
    }

    fn states(values: &[Value]) -> Vec<(i64, f64)> {
        values
            .iter()
            .filter(|v| v.metric == "state")
            .map(|v| (v.ts_ms.unwrap(), v.value))
            .collect()
    }

    fn count(values: &[Value]) -> f64 {
        let c: Vec<_> = values.iter().filter(|v| v.metric == "count").collect();
        assert_eq!(c.len(), 1, "{values:?}");
        assert_eq!(c[0].ts_ms, None);
        c[0].value
    }

    fn raw(ts_ms: i64, high: bool) -> RawEdge {
        RawEdge { ts_ms, high }
    }

    #[test]
    fn reports_the_start_level_then_debounced_changes_and_counts() {
        let mut pin = Mock::new(&[Transaction::get(State::Low)]);
        let q = EdgeQueue::new(16);
        let mut s = GpioSensor::new(
            pin.clone(),
            q.clone(),
            opts(ActiveLevel::High, 20, 16),
            1000,
        )
        .unwrap();

        // No edges yet: the start level and a zero count.
        let v = s.read_at(1500).unwrap();
        assert_eq!(states(&v), [(1000, 0.0)]);
        assert_eq!(count(&v), 0.0);

        // Motion with a bouncy start, then it ends.
        for e in [
            raw(2000, true),
            raw(2002, false),
            raw(2005, true),
            raw(2600, false),
        ] {
            q.push(e);
        }
        let v = s.read_at(3000).unwrap();
        assert_eq!(states(&v), [(2005, 1.0), (2600, 0.0)]);
        assert_eq!(count(&v), 1.0);

        // Two activations in one interval.
        for e in [
            raw(3100, true),
            raw(3200, false),
            raw(3300, true),
            raw(3400, false),
        ] {
            q.push(e);
        }
        let v = s.read_at(4000).unwrap();
        assert_eq!(count(&v), 2.0);
        assert_eq!(states(&v).len(), 4);
        pin.done();
    }

    #[test]
    fn active_low_inverts_the_level() {
        // A door contact to ground with a pull-up: high means open circuit.
        let mut pin = Mock::new(&[Transaction::get(State::High)]);
        let q = EdgeQueue::new(16);
        let mut s =
            GpioSensor::new(pin.clone(), q.clone(), opts(ActiveLevel::Low, 10, 16), 0).unwrap();
        q.push(raw(100, false));
        let v = s.read_at(200).unwrap();
        assert_eq!(states(&v), [(0, 0.0), (100, 1.0)]);
        assert_eq!(count(&v), 1.0);
        pin.done();
    }

    #[test]
    fn a_level_still_settling_is_reported_at_the_next_read() {
        let mut pin = Mock::new(&[Transaction::get(State::Low)]);
        let q = EdgeQueue::new(16);
        let mut s =
            GpioSensor::new(pin.clone(), q.clone(), opts(ActiveLevel::High, 50, 16), 0).unwrap();
        s.read_at(10).unwrap();
        q.push(raw(990, true));
        let v = s.read_at(1000).unwrap();
        assert!(states(&v).is_empty(), "{v:?}");
        assert_eq!(count(&v), 0.0);
        let v = s.read_at(2000).unwrap();
        assert_eq!(states(&v), [(990, 1.0)]);
        assert_eq!(count(&v), 1.0);
        pin.done();
    }

    #[test]
    fn a_full_buffer_drops_edges_and_the_level_is_re_read() {
        // Start low; the buffer holds 2 edges but 5 arrive; the line ends high.
        let mut pin = Mock::new(&[Transaction::get(State::Low), Transaction::get(State::High)]);
        let q = EdgeQueue::new(2);
        let mut s =
            GpioSensor::new(pin.clone(), q.clone(), opts(ActiveLevel::High, 10, 2), 0).unwrap();
        s.read_at(1).unwrap();
        for (i, high) in [true, false, true, false, true].into_iter().enumerate() {
            q.push(raw(100 + 100 * i as i64, high));
        }
        let v = s.read_at(1000).unwrap();
        // The kept edges (100 high, 200 low) and the re-read level (high, now).
        assert_eq!(states(&v), [(100, 1.0), (200, 0.0)]);
        let v = s.read_at(1100).unwrap();
        assert_eq!(states(&v), [(1000, 1.0)]);
        pin.done();
    }

    #[test]
    fn changes_in_the_same_millisecond_stay_distinct_readings() {
        let mut pin = Mock::new(&[Transaction::get(State::Low)]);
        let q = EdgeQueue::new(16);
        let mut s =
            GpioSensor::new(pin.clone(), q.clone(), opts(ActiveLevel::High, 1, 16), 100).unwrap();
        q.push(raw(100, true));
        q.push(raw(101, false));
        let v = s.read_at(200).unwrap();
        let ts: Vec<i64> = states(&v).iter().map(|s| s.0).collect();
        assert!(ts.windows(2).all(|w| w[0] < w[1]), "{ts:?}");
        assert_eq!(ts.len(), 3);
        pin.done();
    }

    #[test]
    fn a_pin_that_cannot_be_read_is_a_transient_error() {
        use embedded_hal_mock::eh1::MockError;
        let mut pin = Mock::new(&[
            Transaction::get(State::Low).with_error(MockError::Io(std::io::ErrorKind::Other))
        ]);
        let e = GpioSensor::new(pin.clone(), EdgeQueue::new(4), GpioOptions::default(), 0)
            .err()
            .unwrap();
        assert!(matches!(e, SensorError::Transient(_)), "{e:?}");
        pin.done();
    }

    #[test]
    fn options_are_validated_by_name() {
        let bad = |o: GpioOptions| o.validate().unwrap_err();
        assert!(
            bad(GpioOptions {
                pin: 40,
                ..Default::default()
            })
            .starts_with("pin:")
        );
        assert!(
            bad(GpioOptions {
                debounce_ms: 0,
                ..Default::default()
            })
            .starts_with("debounce_ms:")
        );
        assert!(
            bad(GpioOptions {
                edge_buffer: 0,
                ..Default::default()
            })
            .starts_with("edge_buffer:")
        );
        assert!(GpioOptions::default().validate().is_ok());
    }

    #[test]
    fn off_a_pi_the_sensor_is_unavailable() {
        if crate::platform::raspberry_pi_model().is_some() {
            return;
        }
        let e = super::super::build_gpio(&GpioOptions::default())
            .err()
            .unwrap();
        assert!(matches!(e, SensorError::Unavailable(_)), "{e:?}");
    }
}
