//! What the guards announce: circuit-breaker transitions and memory
//! pressure, as published on the bus and shown by the API.

use serde::Serialize;

/// What a breaker protects.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Guarded {
    /// The writer's commits.
    Database,
    /// One sensor's driver.
    Sensor,
    /// Deliveries to one webhook URL.
    Webhook,
    /// Connection attempts to one MQTT broker.
    Broker,
}

impl Guarded {
    pub fn prefix(self) -> &'static str {
        match self {
            Guarded::Database => "database",
            Guarded::Sensor => "sensor",
            Guarded::Webhook => "webhook",
            Guarded::Broker => "broker",
        }
    }
}

/// A breaker transition, as published on the bus (`kind: "breaker"`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BreakerChange {
    /// The breaker's name: `database`, `sensor:<name>`, `webhook:<url>`.
    pub breaker: String,
    pub guards: Guarded,
    /// The sensor name or URL (`database` for the database).
    pub subject: String,
    pub from: BreakerState,
    pub to: BreakerState,
    pub reason: String,
    pub trips: u64,
    /// When open: when the first trial call may go.
    pub next_trial_at: Option<String>,
}

/// Where a breaker is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum BreakerState {
    Closed,
    Open,
    HalfOpen,
}

impl BreakerState {
    pub fn as_str(self) -> &'static str {
        match self {
            BreakerState::Closed => "closed",
            BreakerState::Open => "open",
            BreakerState::HalfOpen => "half_open",
        }
    }
}

/// A change of memory pressure, as published on the event bus.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MemoryPressure {
    /// True: above the soft limit; false: back below it.
    pub above: bool,
    pub rss_bytes: u64,
    pub soft_limit_bytes: u64,
}
