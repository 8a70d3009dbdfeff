//! The HTTP side: the one route table ([`routes::ENDPOINTS`], registered by
//! [`configure`] and described by `GET /api/openapi.json`) used by the server
//! and the tests, shared state, and the middleware every response passes
//! through (per-client rate limit, the viewer gate, compression,
//! `X-Process-Time`, slow-request log).
//!
//! Only this module knows about HTTP and JSON shapes.

pub mod access;
pub mod admin;
pub mod admin_storage;
pub mod alerts;
pub mod body;
pub mod config;
pub mod config_admin;
pub mod connlimit;
pub mod dashboard;
pub mod endpoint;
pub mod error;
pub mod export;
pub mod gate;
pub mod guards;
pub mod health;
pub mod live;
pub mod login;
pub mod metrics;
pub mod openapi;
pub mod pacing;
pub mod params;
pub mod performance;
pub mod readings;
pub mod reload;
pub mod remote;
pub mod routes;
pub mod series;
pub mod sessions;
pub mod status;

use std::net::TcpListener;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::Addr;
use actix_web::body::MessageBody;
use actix_web::dev::{Server, ServiceRequest, ServiceResponse};
use actix_web::http::header::{HeaderName, HeaderValue};
use actix_web::middleware::{Compress, Next, from_fn};
use actix_web::{App, HttpRequest, HttpServer, web};

use crate::pacing::PacingShared;
use crate::sensors::actor::SensorShared;
use crate::sensors::registry::SensorRegistry;
use crate::storage::ReadPool;
use crate::storage::catalog::SeriesInfo;
use crate::storage::config::StorageConfig;
use crate::storage::jobs::Jobs;
use crate::storage::writer::WriterShared;
use crate::supervisor::config::SupervisorConfig;
use crate::supervisor::{EventLog, GetTree, Supervisor, TreeNode};
use config::ServerConfig;
use error::ApiError;
pub use routes::configure;

/// How long an API handler waits for the supervisor to describe the tree.
pub const SUPERVISOR_QUERY_TIMEOUT: Duration = Duration::from_secs(2);

/// Response header carrying the server-side handling time in milliseconds.
pub const PROCESS_TIME_HEADER: &str = "x-process-time";

/// Everything handlers need, shared by all workers.
pub struct AppState {
    /// `[server]`: the listener, workers, admin token, page size.
    pub server: ServerConfig,
    /// `[storage]` as started (its path, for the stats and admin views).
    pub storage: StorageConfig,
    /// `[supervisor]`, for the tree's restart policy.
    pub supervisor_config: SupervisorConfig,
    /// Re-reads the config file (`POST /api/admin/reload`).
    pub reloader: Arc<dyn reload::Reloader>,
    /// Edits the config file's sensors and alert rules (`/api/admin/config`).
    pub editor: Arc<dyn config_admin::ConfigEditor>,
    pub pool: ReadPool,
    pub writer: Arc<WriterShared>,
    /// Every configured sensor, enabled or not, in config order (edits
    /// from the browser and reloads change it).
    pub sensors: Arc<SensorRegistry>,
    pub supervisor: Addr<Supervisor>,
    pub events: Arc<EventLog>,

    pub live: Arc<live::LiveShared>,
    pub connections: Arc<live::ConnTracker>,
    pub alerts: Arc<crate::alerts::AlertsShared>,
    pub perf: Arc<crate::perf::Perf>,
    /// The pacing level and what the thermal and load monitors last saw.
    pub pacing: Arc<PacingShared>,
    /// Circuit breakers, rate limiters, the memory guard.
    pub guard: Arc<crate::guard::GuardShared>,
    /// What the MQTT bridge has published (`/health`, `/metrics`).
    pub mqtt: Arc<crate::mqtt::MqttShared>,
    pub started_ms: i64,
    /// Retention, optimize and backup (`storage::jobs`).
    pub jobs: Arc<Jobs>,
    /// The viewer and admin tokens, login sessions, failed logins.
    pub access: Arc<access::Access>,
}

impl AppState {
    /// The supervision tree, or 503 if the supervisor does not answer.
    pub async fn tree(&self) -> Result<TreeNode, ApiError> {
        match tokio::time::timeout(SUPERVISOR_QUERY_TIMEOUT, self.supervisor.send(GetTree)).await {
            Ok(Ok(tree)) => Ok(tree),
            Ok(Err(_)) => Err(ApiError::Unavailable(
                "the supervisor is not running".into(),
            )),
            Err(_) => Err(ApiError::Unavailable(
                "the supervisor did not answer in time".into(),
            )),
        }
    }

    pub fn sensor(&self, name: &str) -> Option<Arc<SensorShared>> {
        self.sensors.get(name)
    }

    /// The series the `sensor` and `metric` parameters select (stored, or
    /// with readings in the head only): all
    /// without a sensor, a sensor's (404 if neither configured nor stored),
    /// or one metric of it (`metric` without `sensor` is a 400).
    pub fn series_for(
        &self,
        sensor: Option<&str>,
        metric: Option<&str>,
    ) -> Result<Vec<Arc<SeriesInfo>>, ApiError> {
        let catalog = &self.writer.catalog;
        match (sensor, metric) {
            (None, Some(_)) => Err(ApiError::bad("metric", "`metric` needs a `sensor`")),
            (None, None) => Ok(catalog.readable_all()),
            (Some(sensor), metric) => {
                if self.sensor(sensor).is_none() && !catalog.readable_sensor(sensor) {
                    return Err(ApiError::NotFound(format!("no sensor named `{sensor}`")));
                }
                let mut series = catalog.readable_for_sensor(sensor);
                if let Some(metric) = metric {
                    series.retain(|s| &*s.metric == metric);
                }
                Ok(series)
            }
        }
    }
}

async fn not_found(req: HttpRequest) -> Result<String, ApiError> {
    Err(ApiError::NotFound(format!(
        "no such endpoint: {} {}",
        req.method(),
        req.path()
    )))
}

/// Adds `X-Process-Time` and logs requests slower than the configured limit.
async fn timing(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let started = Instant::now();
    let state = req.app_data::<web::Data<AppState>>().cloned();
    let slow_ms = state
        .as_ref()
        .map_or(u64::MAX, |s| s.server.slow_request_ms);
    let method = req.method().clone();
    let path = req.path().to_owned();
    let mut res = next.call(req).await?;
    let took = started.elapsed();
    if let Some(state) = &state {
        let route = res.request().match_pattern();
        let name = format!("http {method} {}", route.as_deref().unwrap_or("(no route)"));
        state
            .perf
            .op(&name)
            .record(took, !res.status().is_server_error());
    }
    let ms = took.as_secs_f64() * 1000.0;
    if let Ok(v) = HeaderValue::from_str(&format!("{ms:.3}")) {
        res.headers_mut()
            .insert(HeaderName::from_static(PROCESS_TIME_HEADER), v);
    }
    if took >= Duration::from_millis(slow_ms) {
        log::warn!(
            "slow request: {method} {path} took {ms:.1} ms ({})",
            res.status()
        );
    }
    Ok(res)
}

/// Builds the HTTP server on an already bound listener, serving HTTPS when
/// `tls` is given (then plain HTTP is not served at all). Signals are left
/// to the caller, who stops the server through its handle.
pub fn serve(
    state: web::Data<AppState>,
    listener: TcpListener,
    tls: Option<rustls::ServerConfig>,
) -> std::io::Result<Server> {
    let workers = state.server.workers;
    let tracker = state.connections.clone();
    let grace = state.server.shutdown_grace_secs;
    let limits = state.server.connections.clone();
    tracker.admission.configure(limits.clone());
    listener.set_nonblocking(true)?;
    let server = HttpServer::new(move || {
        App::new()
            .app_data(state.clone())
            .configure(configure)
            .default_service(web::to(not_found))
            .wrap(from_fn(gate::gate))
            .wrap(from_fn(guards::rate_limit))
            .wrap(from_fn(connlimit::body_deadline))
            .wrap(Compress::default())
            .wrap(from_fn(timing))
    })
    .workers(workers)
    .on_connect(move |conn, ext| live::ConnHandle::on_connect(&tracker, conn, ext))
    .client_request_timeout(Duration::from_millis(limits.header_timeout_ms))
    .keep_alive(Duration::from_millis(limits.keep_alive_ms))
    .disable_signals()
    .shutdown_timeout(grace);
    let server = match tls {
        // A handshake is bounded like a request's head: a client that
        // opens a connection and stalls is dropped at the same deadline.
        Some(tls) => server
            .tls_handshake_timeout(Duration::from_millis(limits.header_timeout_ms))
            .listen_rustls_0_23(listener, tls)?,
        None => server.listen(listener)?,
    };
    Ok(server.run())
}
