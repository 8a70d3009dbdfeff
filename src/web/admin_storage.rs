//! Storage administration over HTTP: `POST /api/admin/optimize`,
//! `/api/admin/backup` and `/api/admin/retention` (admin only), and
//! `GET /api/storage`, the database's size, tiers and the last outcome of
//! each job.

use actix_web::{HttpRequest, HttpResponse, web};
use schemars::JsonSchema;
use serde::Serialize;

use super::AppState;
use super::admin::Admin;
use super::error::ApiError;
use super::params::Params;
use crate::storage::StorageError;
use crate::storage::jobs::JobsStatus;
use crate::storage::maintenance::DbFigures;
use crate::storage::retention::RetentionConfig;
use crate::vocab::clock::now_ms;

/// The query parameters `POST /api/admin/optimize` accepts.
pub const OPTIMIZE_PARAMS: &[&str] = &["full"];

/// `?full=true` adds a full `VACUUM` and `REINDEX`.
pub async fn optimize(
    _: Admin,
    state: web::Data<AppState>,
    req: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    let p = Params::parse(req.query_string(), OPTIMIZE_PARAMS)?;
    let full = p.choice("full", &["true", "false"], "false")? == "true";
    state.guard.admit_expensive("optimize")?;
    let report = state.jobs.optimize(full, now_ms()).await?;
    Ok(HttpResponse::Ok().json(report))
}

pub async fn backup(
    _: Admin,
    state: web::Data<AppState>,
    req: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    Params::parse(req.query_string(), &[])?;
    state.guard.admit_expensive("backup")?;
    let report = state.jobs.backup(now_ms()).await?;
    Ok(HttpResponse::Ok().json(report))
}

pub async fn retention(
    _: Admin,
    state: web::Data<AppState>,
    req: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    Params::parse(req.query_string(), &[])?;
    state.guard.admit_expensive("retention")?;
    let report = state.jobs.retention(now_ms()).await?;
    Ok(HttpResponse::Ok().json(report))
}

#[derive(Serialize, JsonSchema)]
pub struct Storage {
    path: String,
    #[serde(flatten)]
    figures: DbFigures,
    /// Bytes in use: pages minus free pages.
    used_bytes: u64,
    /// `retention.max_db_mb` in bytes; null when there is no cap.
    cap_bytes: Option<u64>,
    retention: RetentionConfig,
    jobs: JobsStatus,
}

pub async fn storage(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let pool = state.pool.clone();
    let path = state.storage.path.clone();
    let figures = web::block(move || {
        let mut conn = pool.get().map_err(|e| StorageError::Pool(e.to_string()))?;
        DbFigures::read(&mut conn, &path)
    })
    .await??;
    let retention = state.jobs.retention_config();
    Ok(HttpResponse::Ok().json(Storage {
        path: state.storage.path.display().to_string(),
        used_bytes: figures.used_bytes(),
        figures,
        cap_bytes: retention.cap_bytes(),
        retention,
        jobs: state.jobs.status(),
    }))
}
