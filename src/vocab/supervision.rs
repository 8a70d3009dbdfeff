//! What the supervision tree announces: one [`SupervisorEvent`] per
//! lifecycle step of a child, kept in the event log and published on the bus.

use serde::Serialize;

/// A supervision event, kept in the [`EventLog`] and logged.
#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct SupervisorEvent {
    pub at: String,
    pub at_ms: i64,
    pub supervisor: String,
    pub child: String,
    /// `started`, `failed`, `restart_scheduled`, `gave_up`, `stopped`.
    pub event: &'static str,
    pub detail: Option<String>,
}
