//! Alert endpoints: list, acknowledge, and the rules in force.

use actix_web::{HttpRequest, HttpResponse, web};
use schemars::JsonSchema;
use serde::Serialize;

use super::AppState;
use super::admin::Admin;
use super::error::ApiError;
use super::params::Params;
use crate::alerts::{Ack, AlertFilter, AlertManager, GetAlerts, GetRules, Severity};
use crate::vocab::alert::AlertView;

fn manager(state: &AppState) -> Result<actix::Addr<AlertManager>, ApiError> {
    state
        .alerts
        .current()
        .ok_or_else(|| ApiError::Unavailable("the alert manager is not running".into()))
}

fn gone(_: actix::MailboxError) -> ApiError {
    ApiError::Unavailable("the alert manager stopped".into())
}

/// The query parameters `GET /api/alerts` accepts.
pub const LIST_PARAMS: &[&str] = &["state", "severity", "since", "limit"];
/// The values of `state` (all states without it).
pub const STATES: &[&str] = &["firing", "resolved"];
/// The values of `severity` (all severities without it).
pub const SEVERITIES: &[&str] = &["info", "warning", "critical", "emergency"];
/// Alerts listed when `limit` is not given.
pub const DEFAULT_LIMIT: u64 = 100;
/// The most alerts one list may ask for.
pub const MAX_LIMIT: u64 = 1000;

/// `GET /api/alerts?state=&severity=&since=&limit=`
pub async fn list(state: web::Data<AppState>, req: HttpRequest) -> Result<HttpResponse, ApiError> {
    let p = Params::parse(req.query_string(), LIST_PARAMS)?;
    let filter = AlertFilter {
        state: p
            .str("state")
            .map(|_| p.choice("state", STATES, STATES[0]))
            .transpose()?
            .map(str::to_owned),
        severity: p
            .str("severity")
            .map(|_| p.choice("severity", SEVERITIES, SEVERITIES[0]))
            .transpose()?
            .and_then(Severity::parse),
        since: p.time("since")?,
        limit: p.int("limit", DEFAULT_LIMIT, 1, MAX_LIMIT)? as usize,
    };
    let alerts = manager(&state)?
        .send(GetAlerts(filter))
        .await
        .map_err(gone)?;
    Ok(HttpResponse::Ok().json(AlertsPage {
        count: alerts.len(),
        alerts,
    }))
}

/// `GET /api/alerts`: the alerts matching the filter, newest first.
#[derive(Serialize, JsonSchema)]
pub struct AlertsPage {
    pub alerts: Vec<AlertView>,
    /// How many `alerts` there are.
    pub count: usize,
}

/// `POST /api/alerts/{id}/ack` (admin)
pub async fn ack(
    _: Admin,
    state: web::Data<AppState>,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id: i64 = id
        .parse()
        .map_err(|_| ApiError::bad("id", format!("alert id `{id}` is not a number")))?;
    match manager(&state)?.send(Ack(id)).await.map_err(gone)? {
        Some(alert) => Ok(HttpResponse::Ok().json(alert)),
        None => Err(ApiError::NotFound(format!("no alert with id {id}"))),
    }
}

/// `GET /api/alerts/rules`
pub async fn rules(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let view = manager(&state)?.send(GetRules).await.map_err(gone)?;
    Ok(HttpResponse::Ok().json(view))
}
