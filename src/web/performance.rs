//! `GET /api/performance/stats` (every operation's latency distribution and
//! the appliance's resources) and `GET /api/performance/recommendations`
//! (advice from measured evidence).

use actix_web::{HttpResponse, web};
use schemars::JsonSchema;
use serde::Serialize;

use super::AppState;
use super::error::ApiError;
use crate::perf::advice::{Evidence, PlannedQuery, Recommendation, SensorLoad, recommend};
use crate::perf::{OpStats, SlowQuery};
use crate::platform::proc::{ProcStats, TICKS_PER_SEC};
use crate::storage::StorageError;
use crate::storage::inspect;
use crate::storage::maintenance::DbFigures;

/// Above this many pages (400 MiB at 4 KiB) `readings` is not counted for
/// the statistics-freshness check: the count would walk the whole table.
const COUNT_ROWS_UP_TO_PAGES: u64 = 100_000;

/// The appliance's own CPU and memory.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct ProcessFigures {
    pub rss_bytes: u64,
    pub peak_rss_bytes: u64,
    pub cpu_seconds: f64,
    /// CPU use since start, percent of one core.
    pub cpu_percent: f64,
    pub uptime_s: f64,
}

/// This process's figures now.
pub fn process_figures(state: &AppState) -> Option<ProcessFigures> {
    let p = ProcStats::read(std::process::id()).ok()?;
    let uptime_s = ((crate::vocab::clock::now_ms() - state.started_ms) as f64 / 1000.0).max(0.001);
    let cpu_seconds = p.cpu_ticks as f64 / TICKS_PER_SEC;
    Some(ProcessFigures {
        rss_bytes: p.rss_kib * 1024,
        peak_rss_bytes: p.hwm_kib * 1024,
        cpu_seconds,
        cpu_percent: cpu_seconds / uptime_s * 100.0,
        uptime_s,
    })
}

/// The database's figures, from a read connection.
pub async fn db_figures(state: &AppState) -> Result<DbFigures, ApiError> {
    let pool = state.pool.clone();
    let path = state.storage.path.clone();
    Ok(web::block(move || {
        let mut conn = pool.get().map_err(|e| StorageError::Pool(e.to_string()))?;
        DbFigures::read(&mut conn, &path)
    })
    .await??)
}

#[derive(Serialize, JsonSchema)]
pub struct StatsView {
    operations: Vec<OpStats>,
    slow_queries: Vec<SlowQuery>,
    process: Option<ProcessFigures>,
    database: DbFigures,
    writer: crate::storage::writer::WriterStatus,
    live_sessions: usize,
    http_connections: usize,
    ws_updates_dropped: u64,
    pacing_level: crate::vocab::pacing::Level,
    pacing_multiplier: f64,
    supervisor_restarts: u64,
}

/// `GET /api/performance/stats`
pub async fn stats(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let database = db_figures(&state).await?;
    let restarts = match state.tree().await {
        Ok(tree) => tree.walk().iter().map(|n| u64::from(n.restarts)).sum(),
        Err(_) => 0,
    };
    let pacing = state.pacing.status();
    Ok(HttpResponse::Ok().json(StatsView {
        operations: state.perf.stats(),
        slow_queries: state.perf.slow_queries(),
        process: process_figures(&state),
        database,
        writer: state.writer.status(),
        live_sessions: state.live.session_count(),
        http_connections: state.connections.open(),
        ws_updates_dropped: state
            .live
            .stats
            .updates_dropped
            .load(std::sync::atomic::Ordering::Relaxed),
        pacing_level: pacing.level,
        pacing_multiplier: pacing.multiplier,
        supervisor_restarts: restarts,
    }))
}

/// Gathers the evidence behind the recommendations.
pub async fn evidence(state: &AppState) -> Result<Evidence, ApiError> {
    let pool = state.pool.clone();
    let path = state.storage.path.clone();
    let slow = state.perf.slow_queries();
    let (db, rows, analyzed, slow_queries) = web::block(move || {
        let mut conn = pool.get().map_err(|e| StorageError::Pool(e.to_string()))?;
        let db = DbFigures::read(&mut conn, &path)?;
        let rows = inspect::readings_rows(&mut conn, db.page_count, COUNT_ROWS_UP_TO_PAGES);
        let analyzed = inspect::analyzed_rows(&mut conn, "readings");
        let planned: Vec<PlannedQuery> = slow
            .into_iter()
            .filter_map(|q| {
                let plan = inspect::query_plan(&mut conn, &q.sql).ok()?;
                Some(PlannedQuery { query: q, plan })
            })
            .collect();
        Ok::<_, StorageError>((db, rows, analyzed, planned))
    })
    .await??;
    let ops = state.perf.stats();
    let sensors = state
        .sensors
        .all()
        .iter()
        .filter(|s| s.config.enabled)
        .filter_map(|s| {
            let op = ops
                .iter()
                .find(|o| o.name == format!("sensor.read.{}", s.config.name))?;
            Some(SensorLoad {
                name: s.config.name.clone(),
                interval_ms: s.status().effective_interval_ms,
                reads: op.count,
                mean_read_ms: op.mean_ms,
            })
        })
        .collect();
    let queue = state.writer.queue.stats();
    Ok(Evidence {
        page_size: db.page_size,
        page_count: db.page_count,
        freelist_count: db.freelist_count,
        db_bytes: db.db_bytes,
        wal_bytes: db.wal_bytes,
        readings_rows: rows,
        readings_analyzed_rows: analyzed,
        slow_queries,
        sensors,
        process_cpu_percent: process_figures(state).map(|p| p.cpu_percent),
        queue_dropped: queue.dropped,
        queue_capacity: queue.capacity,
        max_db_bytes: state.jobs.retention_config().cap_bytes(),
    })
}

/// `GET /api/performance/recommendations`
pub async fn recommendations(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let evidence = evidence(&state).await?;
    let advice = recommend(&evidence, &state.perf.config());
    Ok(HttpResponse::Ok().json(RecommendationsView {
        recommendations: &advice,
        evidence: &evidence,
    }))
}

/// `GET /api/performance/recommendations`: the advice and what it is
/// derived from.
#[derive(Serialize, JsonSchema)]
pub struct RecommendationsView<'a> {
    pub recommendations: &'a [Recommendation],
    pub evidence: &'a Evidence,
}
