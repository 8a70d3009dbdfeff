//! The alert as the API, the live feed and webhooks show it.

use serde::Serialize;

/// The JSON shape of an alert.
#[derive(Debug, Clone, Serialize, PartialEq, schemars::JsonSchema)]
pub struct AlertView {
    pub id: i64,
    pub key: String,
    pub rule: String,
    pub severity: String,
    pub state: String,
    pub message: String,
    pub value: Option<f64>,
    pub fired_at: String,
    pub fired_at_ms: i64,
    pub resolved_at: Option<String>,
    pub acknowledged: bool,
    pub acked_at: Option<String>,
}
