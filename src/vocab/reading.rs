//! Readings as every layer speaks of them: what a driver returns
//! ([`Value`]), and what is stored and streamed ([`Reading`] of a
//! [`SeriesKey`]). Nothing here knows where a reading goes.

use std::borrow::Cow;
use std::sync::Arc;

/// What a value measures: sensor, metric and unit. Shared by every reading of
/// the series, so a reading is a pointer, a timestamp and a number.
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct SeriesKey {
    pub sensor: Arc<str>,
    pub metric: Arc<str>,
    pub unit: Arc<str>,
}

/// One value at one instant.
#[derive(Debug, Clone)]
pub struct Reading {
    pub series: Arc<SeriesKey>,
    /// Epoch milliseconds, taken when the driver returned the value.
    pub ts_ms: i64,
    pub value: f64,
}

/// One named value from a read, e.g. `cpu = 12.5 %`.
#[derive(Debug, Clone, PartialEq)]
pub struct Value {
    pub metric: Cow<'static, str>,
    pub value: f64,
    pub unit: Cow<'static, str>,
    /// When the value was true, if not at the end of the read (epoch ms):
    /// an edge a GPIO input recorded between reads, for instance. A read may
    /// then return several values of one metric at different times.
    pub ts_ms: Option<i64>,
}

impl Value {
    pub fn new(
        metric: impl Into<Cow<'static, str>>,
        value: f64,
        unit: impl Into<Cow<'static, str>>,
    ) -> Value {
        Value {
            metric: metric.into(),
            value,
            unit: unit.into(),
            ts_ms: None,
        }
    }

    /// The same value, stamped with the time it was observed.
    pub fn at(mut self, ts_ms: i64) -> Value {
        self.ts_ms = Some(ts_ms);
        self
    }
}
