//! The MQTT bridge: publishes every reading, the appliance's availability,
//! sensor states, the pacing level and alerts to a broker, and, with a
//! persisted position per broker, replays from storage whatever an outage
//! (of the broker or of vigil) kept from it.
//!
//! - `config.rs`: `[mqtt]`, validated into `MqttSettings`;
//! - `discovery.rs`: Home Assistant discovery configs (pure);
//! - `position.rs`: the store-and-forward bookkeeping (pure) and its file;
//! - `alerts.rs`: the alert states a gap kept from the broker (pure);
//! - `bridge.rs`: the `MqttBridge` actor and its connection loop.
//!
//! A coordinator: it reads the bus and storage; nothing it does can slow
//! a sensor, the writer or the API (it only ever subscribes, reads through
//! the read pool, and publishes without waiting).

pub mod alerts;
pub mod bridge;
pub mod config;
pub mod discovery;
pub mod position;

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};

use serde::Serialize;

pub use config::MqttConfig;

/// What the bridge has done, shared with `/health` and `/metrics`; it
/// outlives every bridge instance.
#[derive(Default)]
pub struct MqttShared {
    /// `[mqtt] enabled`.
    pub enabled: AtomicBool,
    pub connected: AtomicBool,
    /// Live readings confirmed by the broker.
    pub published: AtomicU64,
    /// Replayed readings confirmed by the broker.
    pub replayed: AtomicU64,
    /// Live publishes dropped (bus lag, full client queue, no connection);
    /// each is replayed from storage, so none is lost at the broker.
    pub dropped: AtomicU64,
    /// States, pacing and alert messages the client had no room for.
    pub dropped_other: AtomicU64,
    /// Readings published and not yet confirmed.
    pub unconfirmed: AtomicU64,
    /// Readings not yet published: those stored after the persisted
    /// position when the bridge started, plus those seen since while
    /// unable to publish them live, less those replayed.
    pub backlog: AtomicU64,
    /// Alert rules whose state changed while it could not be published
    /// (and, at start, those an earlier run left unpublished); their
    /// current state is published at the next connection.
    pub alert_backlog: AtomicU64,
    /// Alert states published again after a gap.
    pub alerts_republished: AtomicU64,
    /// Successful connections.
    pub connects: AtomicU64,
    /// Lost connections and failed attempts.
    pub connection_failures: AtomicU64,
    /// A replay from storage is running.
    pub replaying: AtomicBool,
    /// Every reading up to this timestamp (ms) is confirmed at the broker.
    pub position_ms: AtomicI64,
    pub last_error: Mutex<Option<String>>,
    pub broker: Mutex<String>,
    /// The alert rules in force, as Home Assistant binary sensors.
    rules: Mutex<Vec<String>>,
    /// Told by a reload: the sensors or rules may have changed, and
    /// discovery follows.
    pub reconfigured: tokio::sync::Notify,
}

/// `/health`'s view of the bridge.
#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct MqttView {
    /// `connected`, `connecting` (enabled, no connection now) or
    /// `disabled`.
    pub state: &'static str,
    pub enabled: bool,
    pub broker: String,
    pub connected: bool,
    pub published: u64,
    pub replayed: u64,
    pub dropped: u64,
    pub unconfirmed: u64,
    pub backlog: u64,
    pub alert_backlog: u64,
    pub alerts_republished: u64,
    pub connects: u64,
    pub connection_failures: u64,
    pub replaying: bool,
    pub position_ms: i64,
    pub last_error: Option<String>,
}

impl MqttShared {
    pub fn view(&self) -> MqttView {
        let r = Ordering::Relaxed;
        let (enabled, connected) = (self.enabled.load(r), self.connected.load(r));
        MqttView {
            state: match (enabled, connected) {
                (false, _) => "disabled",
                (true, true) => "connected",
                (true, false) => "connecting",
            },
            enabled,
            broker: self
                .broker
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone(),
            connected,
            published: self.published.load(r),
            replayed: self.replayed.load(r),
            dropped: self.dropped.load(r),
            unconfirmed: self.unconfirmed.load(r),
            backlog: self.backlog.load(r),
            alert_backlog: self.alert_backlog.load(r),
            alerts_republished: self.alerts_republished.load(r),
            connects: self.connects.load(r),
            connection_failures: self.connection_failures.load(r),
            replaying: self.replaying.load(r),
            position_ms: self.position_ms.load(r),
            last_error: self
                .last_error
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone(),
        }
    }

    /// The alert rules in force.
    pub fn rules(&self) -> Vec<String> {
        self.rules.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// A reload applied `rules` (and perhaps changed the sensors): the
    /// bridge announces what is new and clears what is gone.
    pub fn reconfigure(&self, rules: Vec<String>) {
        *self.rules.lock().unwrap_or_else(|p| p.into_inner()) = rules;
        self.reconfigured.notify_one();
    }

    fn set_error(&self, e: Option<String>) {
        *self.last_error.lock().unwrap_or_else(|p| p.into_inner()) = e;
    }
}
