//! `POST /api/admin/reload` and what it answers. Reloading itself is the
//! assembly's business (`app::reload`, which owns the aggregate config);
//! the web side sees it through the [`Reloader`] it is handed, so this
//! layer never reads a whole config file.

use actix_web::{HttpResponse, web};
use futures_util::future::LocalBoxFuture;
use schemars::JsonSchema;
use serde::Serialize;

use super::AppState;
use super::admin::Admin;
use super::error::ApiError;
use crate::vocab::check::ConfigError;

/// The outcome of re-reading the config file.
#[derive(Debug, Clone, Serialize, PartialEq, JsonSchema)]
pub struct ReloadReport {
    pub source: String,
    /// Alert rules and webhooks in force after the reload.
    pub rules: usize,
    pub webhooks: usize,
    /// Sections that differed from the running config and now apply.
    pub applied: Vec<&'static str>,
    /// Sections that differ from the running config but take effect only
    /// after a restart (the running values stay).
    pub needs_restart: Vec<&'static str>,
}

/// Why a reload was refused (nothing changed).
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    #[error("vigil runs on its embedded defaults; there is no config file to reload")]
    NoFile,
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("the alert manager is not running")]
    NotRunning,
}

/// Re-reads the config and applies what can be applied live.
pub trait Reloader: Send + Sync {
    fn reload(&self) -> LocalBoxFuture<'_, Result<ReloadReport, ReloadError>>;
}

/// `POST /api/admin/reload` (admin): re-reads the config file and applies
/// every section that can change live; the others are named in
/// `needs_restart`. An invalid file changes nothing. An expensive operation
/// (see `guard.admin`).
pub async fn reload(_: Admin, state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    state.guard.admit_expensive("reload")?;
    match state.reloader.reload().await {
        Ok(report) => Ok(HttpResponse::Ok().json(report)),
        Err(ReloadError::NotRunning) => Err(ApiError::Unavailable(
            "the alert manager is not running".into(),
        )),
        Err(e @ ReloadError::NoFile) => Err(ApiError::Conflict(e.to_string())),
        Err(ReloadError::Config(e)) => Err(ApiError::bad(
            "config",
            format!("the config file is invalid and nothing was changed: {e}"),
        )),
    }
}
