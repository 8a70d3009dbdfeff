//! `GET /api/pacing`: the pacing level and why (the temperature and load
//! figures that brought it), the multiplier, the thermal and load sources
//! with the Pi's throttling flags, recent changes, and every enabled
//! sensor's cadence (effective interval, adaptive factor, paused).

use actix_web::{HttpResponse, web};
use schemars::JsonSchema;
use serde::Serialize;

use super::AppState;
use super::error::ApiError;
use crate::pacing::PacingStatus;
use crate::sensors::Priority;

#[derive(Serialize, JsonSchema)]
pub struct SensorCadence<'a> {
    name: &'a str,
    priority: Priority,
    interval_ms: u64,
    effective_interval_ms: u64,
    adaptive_factor: f64,
    adaptive: bool,
    paused: bool,
}

#[derive(Serialize, JsonSchema)]
pub struct PacingView<'a> {
    #[serde(flatten)]
    status: PacingStatus,
    /// Sensors not reading now because pacing holds them.
    paused_sensors: Vec<&'a str>,
    sensors: Vec<SensorCadence<'a>>,
}

pub async fn pacing(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let all = state.sensors.all();
    let sensors: Vec<SensorCadence> = all
        .iter()
        .filter(|s| s.config.enabled)
        .map(|s| {
            let st = s.status();
            SensorCadence {
                name: &s.config.name,
                priority: s.config.priority,
                interval_ms: s.config.interval_ms,
                effective_interval_ms: st.effective_interval_ms,
                adaptive_factor: st.adaptive_factor,
                adaptive: s.config.adaptive.is_some(),
                paused: st.paused,
            }
        })
        .collect();
    let view = PacingView {
        status: state.pacing.status(),
        paused_sensors: sensors
            .iter()
            .filter(|s| s.paused)
            .map(|s| s.name)
            .collect(),
        sensors,
    };
    Ok(HttpResponse::Ok().json(view))
}
