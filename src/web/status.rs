//! `GET /api/sensors` and `GET /api/supervisor`: what runs, how it is doing,
//! and what the supervisor has done about failures.

use actix_web::{HttpResponse, web};
use schemars::JsonSchema;
use serde::Serialize;

use super::AppState;
use super::admin::Admin;
use super::error::ApiError;
use crate::sensors::Priority;
use crate::sensors::actor::ValueView;
use crate::supervisor::{ChildState, RestartChild, TreeNode};
use crate::vocab::supervision::SupervisorEvent;

#[derive(Serialize, JsonSchema)]
pub struct SensorView<'a> {
    name: &'a str,
    kind: &'static str,
    /// running / paused / suspended / unavailable / restarting / failed /
    /// disabled / stopped: the state the tree, the systemd STATUS line and
    /// `/metrics` show too (`ChildState::of_sensor`).
    status: &'static str,
    /// The sensor's circuit breaker: closed / open / half_open / disabled.
    breaker: &'static str,
    priority: Priority,
    enabled: bool,
    interval_ms: u64,
    effective_interval_ms: u64,
    /// Held by pacing at the critical level (optional sensors only).
    paused: bool,
    adaptive_factor: f64,
    timeout_ms: u64,
    restarts: u32,
    next_retry_at: Option<String>,
    /// A failed sensor's next revive attempt (when `supervisor.revive`).
    next_revive_at: Option<String>,
    last_read_at: Option<String>,
    last_values: Vec<ValueView>,
    last_error: Option<String>,
    last_error_at: Option<String>,
    unavailable_reason: Option<String>,
    reads: u64,
    errors: u64,
    /// Inputs the driver refused (an MQTT payload that is not a number),
    /// the last one's reason and when.
    rejected: u64,
    last_rejected: Option<String>,
    last_rejected_at: Option<String>,
    last_read_ms: f64,
}

pub async fn sensors(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let tree = state.tree().await?;
    let sensors_node = tree.find("sensors");
    let all = state.sensors.all();
    let views: Vec<SensorView> = all
        .iter()
        .map(|s| {
            let c = &s.config;
            let st = s.status();
            let node = sensors_node.and_then(|n| n.children.iter().find(|c2| c2.name == c.name));
            let breaker = state
                .guard
                .breakers
                .get(&format!("sensor:{}", c.name))
                .map_or("closed", |b| b.state());
            SensorView {
                name: &c.name,
                kind: c.driver.kind(),
                status: ChildState::of_sensor(c.enabled, node.map(|n| n.state)).as_str(),
                breaker,
                priority: c.priority,
                enabled: c.enabled,
                interval_ms: c.interval_ms,
                effective_interval_ms: st.effective_interval_ms,
                paused: st.paused,
                adaptive_factor: st.adaptive_factor,
                timeout_ms: c.timeout_ms,
                restarts: node.map_or(0, |n| n.restarts),
                next_retry_at: node.and_then(|n| n.next_retry_at.clone()),
                next_revive_at: node.and_then(|n| n.next_revive_at.clone()),
                last_read_at: st.last_read_at,
                last_values: st.last_values,
                last_error: st.last_error,
                last_error_at: st.last_error_at,
                unavailable_reason: st.unavailable_reason,
                reads: st.reads,
                errors: st.errors,
                rejected: st.rejected,
                last_rejected: st.last_rejected,
                last_rejected_at: st.last_rejected_at,
                last_read_ms: st.last_read_ms,
            }
        })
        .collect();
    Ok(HttpResponse::Ok().json(SensorsView { sensors: views }))
}

/// `GET /api/sensors`: every configured sensor.
#[derive(Serialize, JsonSchema)]
pub struct SensorsView<'a> {
    pub sensors: Vec<SensorView<'a>>,
}

/// `POST /api/admin/restart/{child}`: the child being restarted.
#[derive(Serialize, JsonSchema)]
pub struct Restarting {
    pub restarting: String,
}

/// `POST /api/admin/restart/{child}`: restart a supervised child now (a
/// sensor, `writer`, `live`, ...). Admin only; an expensive operation (see
/// `guard.admin`).
pub async fn restart(
    _: Admin,
    state: web::Data<AppState>,
    child: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    state.guard.admit_expensive("restart")?;
    let name = child.into_inner();
    match state.supervisor.send(RestartChild(name.clone())).await {
        Ok(true) => Ok(HttpResponse::Accepted().json(Restarting { restarting: name })),
        Ok(false) => Err(ApiError::NotFound(format!(
            "no supervised child named `{name}`"
        ))),
        Err(_) => Err(ApiError::Unavailable(
            "the supervisor is not running".into(),
        )),
    }
}

#[derive(Serialize, JsonSchema)]
pub struct SupervisorView {
    tree: TreeNode,
    policy: PolicyView,
    events: Vec<SupervisorEvent>,
}

#[derive(Serialize, JsonSchema)]
pub struct PolicyView {
    backoff_base_ms: u64,
    backoff_max_ms: u64,
    max_restarts: u32,
    restart_window_secs: u64,
    revive: bool,
    revive_interval_ms: u64,
}

pub async fn supervisor(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let tree = state.tree().await?;
    let c = &state.supervisor_config;
    Ok(HttpResponse::Ok().json(SupervisorView {
        tree,
        policy: PolicyView {
            backoff_base_ms: c.backoff_base_ms,
            backoff_max_ms: c.backoff_max_ms,
            max_restarts: c.max_restarts,
            restart_window_secs: c.restart_window_secs,
            revive: c.revive,
            revive_interval_ms: c.revive_interval_ms,
        },
        events: state.events.snapshot(),
    }))
}
