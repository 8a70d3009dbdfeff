//! The internal event bus: one broadcast channel for readings as sensors
//! produce them, one for everything else that happens (supervision, sensor
//! availability, the writer's health, circuit breakers, memory pressure, and
//! whatever later subsystems report).
//!
//! Publishers never block and never fail: with no subscriber an event is
//! simply not delivered, and a subscriber that falls behind by more than the
//! channel's capacity is told how many it missed (`RecvError::Lagged`). The
//! live feed and alerting subscribe; nothing that must not be lost travels
//! here (readings are stored through the ingest queue, not the bus).

use std::sync::Arc;

use serde::Serialize;
use tokio::sync::broadcast;

use super::alert::AlertView;
use super::guard::{BreakerChange, MemoryPressure};
use super::pacing::PacingChange;
use super::reading::Reading;
use super::supervision::SupervisorEvent;

/// Readings buffered per subscriber before it lags.
pub const READINGS_CAPACITY: usize = 4096;
/// Events buffered per subscriber before it lags.
pub const EVENTS_CAPACITY: usize = 1024;

/// The readings of one successful sensor read.
#[derive(Debug)]
pub struct SensorReading {
    pub sensor: Arc<str>,
    /// When the read completed; each reading carries its own timestamp.
    pub ts_ms: i64,
    pub readings: Vec<Reading>,
}

/// Something that happened inside the appliance.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Event {
    /// A supervision event (a child started, failed, was given up...).
    Supervisor(SupervisorEvent),
    /// A sensor's data source became unavailable or came back.
    SensorAvailability {
        sensor: String,
        available: bool,
        reason: Option<String>,
    },
    /// The database writer's commits started failing or recovered.
    Writer {
        writable: bool,
        error: Option<String>,
        queued: usize,
    },
    /// Readings were dropped by the ingest queue's overflow policy.
    ReadingsDropped { count: u64, total: u64 },
    /// An alert fired, resolved or was acknowledged.
    Alert { event: String, alert: AlertView },
    /// The pacing level changed (heat or load rose or fell).
    Pacing(PacingChange),
    /// A circuit breaker opened, went half-open or closed.
    Breaker(BreakerChange),
    /// The process's memory crossed its soft limit, either way.
    Memory(MemoryPressure),
    /// The database was over `retention.max_db_mb`: the oldest raw readings
    /// were pruned ahead of their horizon (`met` is false if even that was
    /// not enough).
    StorageCap {
        cap_bytes: u64,
        used_bytes_before: u64,
        used_bytes_after: u64,
        pruned_raw_rows: u64,
        met: bool,
    },
    /// A storage job (`retention`, `optimize`, `backup`) finished or failed.
    Maintenance {
        job: String,
        ok: bool,
        summary: String,
    },
}

/// Cheap to clone; every clone publishes to the same channels.
#[derive(Clone)]
pub struct Bus {
    readings: broadcast::Sender<Arc<SensorReading>>,
    events: broadcast::Sender<Event>,
}

impl Default for Bus {
    fn default() -> Self {
        Bus::new()
    }
}

impl Bus {
    pub fn new() -> Bus {
        Bus {
            readings: broadcast::channel(READINGS_CAPACITY).0,
            events: broadcast::channel(EVENTS_CAPACITY).0,
        }
    }

    /// Publishes a read's values (no-op without subscribers).
    pub fn reading(&self, reading: Arc<SensorReading>) {
        let _ = self.readings.send(reading);
    }

    /// Publishes an event (no-op without subscribers).
    pub fn event(&self, event: Event) {
        let _ = self.events.send(event);
    }

    pub fn subscribe_readings(&self) -> broadcast::Receiver<Arc<SensorReading>> {
        self.readings.subscribe()
    }

    pub fn subscribe_events(&self) -> broadcast::Receiver<Event> {
        self.events.subscribe()
    }
}

/// What a bus subscriber receives: a value, or how many it missed.
#[derive(Debug)]
pub enum Delivery<T> {
    Value(T),
    Lagged(u64),
}

/// A subscription as a stream, for `ctx.add_stream` in actors. It ends when
/// every publisher is gone.
pub fn stream<T: Clone + Send + 'static>(
    rx: broadcast::Receiver<T>,
) -> impl futures_util::Stream<Item = Delivery<T>> {
    futures_util::stream::unfold(rx, |mut rx| async move {
        match rx.recv().await {
            Ok(v) => Some((Delivery::Value(v), rx)),
            Err(broadcast::error::RecvError::Lagged(n)) => Some((Delivery::Lagged(n), rx)),
            Err(broadcast::error::RecvError::Closed) => None,
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn subscribers_get_what_is_published_after_they_subscribe() {
        let bus = Bus::new();
        bus.event(Event::ReadingsDropped { count: 1, total: 1 });
        let mut rx = bus.subscribe_events();
        bus.event(Event::ReadingsDropped { count: 2, total: 3 });
        match rx.recv().await.unwrap() {
            Event::ReadingsDropped { count, total } => assert_eq!((count, total), (2, 3)),
            other => panic!("{other:?}"),
        }
        let json = serde_json::to_value(Event::Writer {
            writable: false,
            error: Some("disk full".into()),
            queued: 5,
        })
        .unwrap();
        assert_eq!(json["kind"], "writer");
    }
}
