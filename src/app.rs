//! Assembly: opens storage, builds the supervision tree, serves HTTP, and
//! shuts everything down in order when asked.
//!
//! Start-up: migrations and the read pool (on the blocking pool), the
//! catalog, the root supervisor (writer first, then the sensors'
//! supervisor), then the HTTP server on the caller's listener.
//! Shutdown: HTTP stops accepting and drains, the root stops its children in
//! reverse order (sensors first, then the writer, which commits everything
//! queued and checkpoints the WAL), and the writer's arbiter ends.

use std::future::Future;
use std::net::TcpListener;
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use actix_web::web;

use crate::clock::now_ms;
use crate::config::Config;
use crate::events::Bus;
use crate::sensors::BuildEnv;
use crate::sensors::actor::{SensorDeps, SensorShared, sensor_child};
use crate::storage::catalog::SeriesCatalog;
use crate::storage::jobs::{Jobs, scheduler_child};
use crate::storage::queue::{IngestQueue, QueueStats};
use crate::storage::writer::{DbWriter, WriterShared};
use crate::storage::{self, StorageError};
use crate::supervisor::{
    ChildHandle, ChildSpec, EventLog, RestartPolicy, Stop, Supervisor, install_panic_hook,
    supervisor_child,
};
use crate::web::{AppState, serve};

/// Why the appliance could not run.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error("HTTP server: {0}")]
    Http(#[from] std::io::Error),
    #[error("start-up task failed: {0}")]
    Startup(String),
}

/// What happened to the readings of a run, reported when it ends.
#[derive(Debug, Clone)]
pub struct RunReport {
    /// Readings committed to the database during the run.
    pub stored: u64,
    /// The ingest queue at the end: `len` readings could not be stored.
    pub queue: QueueStats,
    /// Values handed to the queue by each sensor, in config order.
    pub produced: Vec<(String, u64)>,
}

/// Runs the appliance on `listener` until `shutdown` resolves, then stops in
/// order and reports. Must be called inside an actix `System`.
pub async fn run(
    config: Config,
    listener: TcpListener,
    shutdown: impl Future<Output = ()>,
) -> Result<RunReport, RunError> {
    install_panic_hook();
    let config = Arc::new(config);

    let storage_cfg = config.storage.clone();
    let (applied, pool, catalog) = actix_web::rt::task::spawn_blocking(move || {
        let applied = storage::prepare(&storage_cfg)?;
        let pool = storage::read_pool(&storage_cfg)?;
        let mut conn = pool.get().map_err(|e| StorageError::Pool(e.to_string()))?;
        let catalog = SeriesCatalog::load(&mut conn)?;
        Ok::<_, StorageError>((applied, pool, catalog))
    })
    .await
    .map_err(|e| RunError::Startup(e.to_string()))??;
    for m in &applied {
        log::info!("applied migration {m}");
    }

    let bus = Bus::new();
    let st = &config.storage;
    let queue = Arc::new(IngestQueue::new(
        st.queue_capacity,
        st.overflow,
        st.batch_size,
    ));
    let writer = Arc::new(WriterShared::new(
        queue.clone(),
        Arc::new(catalog),
        bus.clone(),
    ));
    let writer_arbiter = Arbiter::new();
    let deps = SensorDeps {
        env: Arc::new(BuildEnv {
            database_path: st.path.clone(),
        }),
        queue: queue.clone(),
        bus: bus.clone(),
    };
    let sensors: Vec<Arc<SensorShared>> = config
        .sensors
        .iter()
        .cloned()
        .map(|c| Arc::new(SensorShared::new(c)))
        .collect();
    let events = Arc::new(EventLog::new(bus.clone()));
    let policy = RestartPolicy::from_config(&config.supervisor);
    let stop_timeout = Duration::from_millis(config.supervisor.shutdown_timeout_ms);

    let writer_spec = {
        let arbiter = writer_arbiter.handle();
        let shared = writer.clone();
        let cfg = config.storage.clone();
        ChildSpec::new("writer", "writer", true, move |reporter| {
            let (shared, cfg) = (shared.clone(), cfg.clone());
            let addr =
                DbWriter::start_in_arbiter(&arbiter, move |_| DbWriter::new(cfg, shared, reporter));
            ChildHandle {
                stop: addr.recipient(),
                tree: None,
            }
        })
    };
    let sensors_spec = {
        let enabled: Vec<_> = sensors
            .iter()
            .filter(|s| s.config.enabled)
            .cloned()
            .collect();
        supervisor_child("sensors", policy, stop_timeout, events.clone(), move || {
            enabled
                .iter()
                .map(|s| sensor_child(s.clone(), deps.clone()))
                .collect()
        })
    };
    let jobs = Arc::new(Jobs::new(&config, writer.clone(), bus.clone()));
    let root = Supervisor::new(
        "root",
        policy,
        stop_timeout,
        vec![writer_spec, sensors_spec, scheduler_child(jobs.clone())],
        events.clone(),
        None,
    )
    .start();

    let addr = listener.local_addr()?;
    let state = web::Data::new(AppState {
        config: config.clone(),
        pool,
        writer: writer.clone(),
        sensors: sensors.clone(),
        supervisor: root.clone(),
        events,
        bus,
        started_ms: now_ms(),
        jobs,
    });
    let server = serve(state, listener)?;
    let handle = server.handle();
    let mut server_task = actix_web::rt::spawn(server);
    log::info!(
        "vigil {} serving http://{addr} with {} sensors; database {}",
        env!("CARGO_PKG_VERSION"),
        sensors.iter().filter(|s| s.config.enabled).count(),
        config.storage.path.display()
    );

    let server_result = tokio::select! {
        () = shutdown => None,
        r = &mut server_task => Some(r),
    };
    log::info!("shutting down");
    if server_result.is_none() {
        handle.stop(true).await;
        let _ = server_task.await;
    }
    // The root stops sensors, then the writer (which flushes); give it the
    // time each of those steps may take.
    let _ = tokio::time::timeout(stop_timeout * 3, root.send(Stop)).await;
    writer_arbiter.stop();

    let report = RunReport {
        stored: writer.status().committed_rows,
        queue: queue.stats(),
        produced: sensors
            .iter()
            .map(|s| (s.config.name.clone(), s.produced()))
            .collect(),
    };
    log::info!(
        "stopped: {} readings produced, {} stored this run, {} dropped, {} left unstored",
        report.produced.iter().map(|(_, n)| n).sum::<u64>(),
        report.stored,
        report.queue.dropped,
        report.queue.len
    );
    match server_result {
        Some(Ok(Err(e))) => Err(RunError::Http(e)),
        Some(Err(e)) => Err(RunError::Startup(e.to_string())),
        _ => Ok(report),
    }
}
