//! Assembly: opens storage, builds the supervision tree, serves HTTP, and
//! shuts everything down in order when asked.
//!
//! Start-up: migrations and the read pool (on the blocking pool), the
//! catalog, the root supervisor (writer, guard, live hub, alert manager,
//! the sensors' supervisor, then the pacing monitors), then the HTTP server
//! on the caller's listener; then systemd hears READY=1 and the watchdog
//! starts being fed (when vigil runs under systemd).
//! Shutdown: systemd hears STOPPING=1, live sessions are closed (1001),
//! HTTP stops accepting and drains, the root stops its children in reverse
//! order (pacing monitors, sensors, alerts, the hub, the guard, then the
//! writer, which commits everything queued and checkpoints the WAL), and the
//! writer's arbiter ends.

pub mod config;
pub mod edit;
pub mod import;
pub mod logging;
pub mod reload;

use std::future::Future;
use std::net::TcpListener;
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use actix_web::web;

use crate::alerts::{AlertsShared, manager_child};
use crate::guard::GuardShared;
use crate::mqtt::MqttShared;
use crate::mqtt::bridge::{BridgeDeps, bridge_child};
use crate::pacing::load::SysinfoLoad;
use crate::pacing::{PacingShared, load_monitor_child, thermal_watchdog_child};
use crate::perf::Perf;
use crate::sensors::BuildEnv;
use crate::sensors::actor::{SensorDeps, sensor_child};
use crate::sensors::mqtt::BrokerConnection;
use crate::sensors::registry::SensorRegistry;
use crate::shed::{GuardDeps, guard_child};
use crate::storage::catalog::SeriesCatalog;
use crate::storage::jobs::{Jobs, JobsConfig, scheduler_child};
use crate::storage::queue::{IngestQueue, QueueStats};
use crate::storage::recent::RecentCache;
use crate::storage::writer::{DbWriter, WriterShared};
use crate::storage::{self, StorageError};
use crate::supervisor::{
    ChildHandle, ChildSpec, EventLog, RestartPolicy, Stop, Supervisor, install_panic_hook,
    supervisor_child,
};
use crate::vocab::bus::Bus;
use crate::vocab::clock::now_ms;
use crate::web::live::LiveShared;
use crate::web::live::hub::hub_child;
use crate::web::live::protocol::CLOSE_GOING_AWAY;
use crate::web::{AppState, serve};
pub use config::Config;
use reload::Reloads;

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

/// Reloads the config file on every SIGHUP.
async fn reload_on_sighup(reloads: Arc<Reloads>) {
    use tokio::signal::unix::{SignalKind, signal};
    let Ok(mut hup) = signal(SignalKind::hangup()) else {
        log::warn!("cannot listen for SIGHUP; reload through POST /api/admin/reload");
        return;
    };
    while hup.recv().await.is_some() {
        match reloads.reload().await {
            Ok(r) if r.needs_restart.is_empty() => log::info!(
                "SIGHUP: reloaded {} ({} alert rules); applied: {}",
                r.source,
                r.rules,
                if r.applied.is_empty() {
                    "nothing changed".into()
                } else {
                    r.applied.join(", ")
                }
            ),
            Ok(r) => log::warn!(
                "SIGHUP: reloaded {} ({} alert rules); applied: {}; changes to {} need a restart",
                r.source,
                r.rules,
                if r.applied.is_empty() {
                    "nothing".into()
                } else {
                    r.applied.join(", ")
                },
                r.needs_restart.join(", ")
            ),
            Err(e) => log::error!("SIGHUP: reload refused, nothing changed: {e}"),
        }
    }
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
    // The certificate is checked before anything starts: a wrong file
    // stops the start with the key to fix, not a listener that fails later.
    let tls = config
        .server
        .tls()
        .map_err(|e| RunError::Startup(e.to_string()))?;
    let scheme = config.server.scheme();
    crate::systemd::status("opening the database");

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
    let guard = Arc::new(GuardShared::new(config.guard.clone(), bus.clone()));
    let st = &config.storage;
    let queue = Arc::new(IngestQueue::new(
        st.queue_capacity,
        st.overflow,
        st.batch_size,
    ));
    let perf = Arc::new(Perf::with_config(config.performance.clone()));
    let writer = Arc::new(
        WriterShared::new(
            queue.clone(),
            Arc::new(catalog),
            bus.clone(),
            &perf,
            Arc::new(RecentCache::new(config.server.max_page_size as usize + 1)),
        )
        .with_breaker(guard.database(Duration::from_millis(st.busy_timeout_ms))),
    );
    let writer_arbiter = Arbiter::new();
    let pacing = Arc::new(PacingShared::new(config.pacing.clone(), bus.clone()));
    // The broker of `[mqtt]`, when the bridge or a sensor uses it.
    let wants_broker = config.mqtt.enabled
        || config
            .sensors
            .iter()
            .any(|s| matches!(s.driver, crate::sensors::DriverConfig::Mqtt(_)));
    let broker = if wants_broker {
        let settings = config
            .mqtt
            .settings(|k| std::env::var(k).ok(), &crate::mqtt::config::hostname())
            .map_err(|e| RunError::Startup(e.to_string()))?;
        let tls = if settings.broker.tls {
            Some(
                crate::platform::tls::client_config(settings.ca_file.as_deref())
                    .map_err(|e| RunError::Startup(format!("mqtt.ca_file: {e}")))?,
            )
        } else {
            None
        };
        Some((settings, tls))
    } else {
        None
    };
    let deps = SensorDeps {
        env: Arc::new(BuildEnv {
            database_path: st.path.clone(),
            mqtt: broker.as_ref().map(|(s, tls)| BrokerConnection {
                url: s.url.clone(),
                host: s.broker.host.clone(),
                port: s.broker.port,
                tls: tls.clone(),
                credentials: s.credentials.clone(),
                client_id: s.client_id.clone(),
                keep_alive: s.keep_alive,
                connect_timeout: s.connect_timeout,
                reconnect_min: s.reconnect_min,
                reconnect_max: s.reconnect_max,
            }),
        }),
        queue: queue.clone(),
        bus: bus.clone(),
        pace: pacing.subscribe(),
        perf: perf.clone(),
        guard: guard.clone(),
    };
    let sensors = Arc::new(SensorRegistry::new(&config.sensors));
    let events = Arc::new(EventLog::new(bus.clone()));
    let live = Arc::new(LiveShared::new(
        config.live.clone(),
        sensors.enabled_names(),
        &perf,
    ));
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
                supervisor: None,
            }
        })
    };
    let sensors_spec = {
        // Every configured sensor as it is now (disabled ones as nodes that
        // never start), so a restarted sensors' supervisor runs the edits.
        let registry = sensors.clone();
        let deps = deps.clone();
        // Given-up sensors are revived; other children stay down.
        let sensor_policy = RestartPolicy {
            revive: config.supervisor.revive_after(),
            ..policy
        };
        supervisor_child(
            "sensors",
            sensor_policy,
            stop_timeout,
            events.clone(),
            move || {
                registry
                    .all()
                    .into_iter()
                    .map(|s| sensor_child(s, deps.clone()))
                    .collect()
            },
        )
    };
    let alerts = Arc::new(AlertsShared::default());
    let alerts_spec = manager_child(
        config.alerts.clone(),
        reload::system_sensors(&config.sensors),
        writer.clone(),
        pool.clone(),
        bus.clone(),
        alerts.clone(),
        guard.clone(),
    );
    // The broker bridge, when enabled: started before the sensors (it
    // sees their first readings) and stopped after them (it publishes
    // their last).
    let mqtt = Arc::new(MqttShared::default());
    mqtt.reconfigure(reload::rule_names(&config.alerts));
    let mut mqtt_specs = Vec::new();
    if let Some((settings, tls)) = broker.filter(|_| config.mqtt.enabled) {
        mqtt_specs.push(bridge_child(Arc::new(BridgeDeps {
            settings,
            bus: bus.clone(),
            pool: pool.clone(),
            writer: writer.clone(),
            guard: guard.clone(),
            shared: mqtt.clone(),
            sensors: sensors.clone(),
            pacing: pacing.clone(),
            database: st.path.clone(),
            tls,
            model: crate::platform::raspberry_pi_model().unwrap_or_else(|| "vigil".to_owned()),
            alerts: alerts.clone(),
        })));
    }
    let guard_spec = guard_child(
        guard.clone(),
        GuardDeps {
            queue: queue.clone(),
            pool: pool.clone(),
            writer: writer.clone(),
            live: live.clone(),
            bus: bus.clone(),
        },
    );
    // Started after the sensors, which follow the pace whenever it changes.
    let mut pacing_specs = Vec::new();
    if config.pacing.enabled {
        pacing_specs.push(thermal_watchdog_child(pacing.clone()));
        if config.pacing.use_load {
            pacing_specs.push(load_monitor_child(pacing.clone(), SysinfoLoad::factory()));
        }
    }
    let jobs = Arc::new(Jobs::new(
        JobsConfig {
            storage: config.storage.clone(),
            retention: config.retention.clone(),
            maintenance: config.maintenance.clone(),
        },
        writer.clone(),
        bus.clone(),
    ));
    let root = Supervisor::new(
        "root",
        policy,
        stop_timeout,
        vec![
            writer_spec,
            guard_spec,
            hub_child(live.clone(), bus.clone()),
            alerts_spec,
        ]
        .into_iter()
        .chain(mqtt_specs)
        .chain([sensors_spec, scheduler_child(jobs.clone())])
        .chain(pacing_specs)
        .collect(),
        events.clone(),
        None,
    )
    .start();

    let addr = listener.local_addr()?;
    let reloads = Arc::new(Reloads {
        source: std::sync::Mutex::new(config.source.clone()),
        default_path: edit::default_path(&config.storage.path),
        running: std::sync::Mutex::new((*config).clone()),
        alerts: alerts.clone(),
        pacing: pacing.clone(),
        jobs: jobs.clone(),
        perf: perf.clone(),
        root: root.clone(),
        sensors: sensors.clone(),
        sensor_deps: deps,
        live: live.clone(),
        mqtt: mqtt.clone(),
        busy: tokio::sync::Mutex::new(()),
    });
    let state = web::Data::new(AppState {
        server: config.server.clone(),
        storage: config.storage.clone(),
        supervisor_config: config.supervisor.clone(),
        reloader: reloads.clone(),
        editor: reloads.clone(),
        pool,
        writer: writer.clone(),
        sensors: sensors.clone(),
        supervisor: root.clone(),
        events,
        live: live.clone(),
        connections: Arc::default(),
        alerts,
        perf,
        pacing,
        guard,
        mqtt,
        started_ms: now_ms(),
        jobs,
        access: Arc::new(crate::web::access::Access::new(
            &config.server,
            addr,
            tls.is_some(),
        )),
    });
    if state.access.open_to_network && !state.access.guarded() {
        log::warn!(
            "serving on {addr}, reachable from the network, with no server.viewer_token: \
             anyone who reaches it can read the dashboard, the API, the live feed and /metrics"
        );
    }
    let sighup = actix_web::rt::spawn(reload_on_sighup(reloads));
    let server = serve(state, listener, tls)?;
    let handle = server.handle();
    let mut server_task = actix_web::rt::spawn(server);
    let enabled = sensors.enabled_names().len();
    log::info!(
        "vigil {} serving {scheme}://{addr} with {enabled} sensors; database {}",
        env!("CARGO_PKG_VERSION"),
        config.storage.path.display()
    );
    crate::systemd::ready(&format!("serving {scheme}://{addr} with {enabled} sensors"));
    let watchdog = actix_web::rt::spawn(crate::systemd::watchdog(
        root.clone(),
        writer.clone(),
        crate::systemd::Deadlines {
            writer: Duration::from_millis(config.guard.watchdog.writer_deadline_ms),
            maintenance: Duration::from_millis(config.guard.watchdog.maintenance_grace_ms),
        },
    ));

    let server_result = tokio::select! {
        () = shutdown => None,
        r = &mut server_task => Some(r),
    };
    log::info!("shutting down");
    watchdog.abort();
    crate::systemd::stopping(&format!(
        "stopping: storing {} queued readings",
        queue.len()
    ));
    sighup.abort();
    // Live sessions first: they would otherwise hold the HTTP server's
    // graceful stop open for its whole grace period.
    live.close_all(
        CLOSE_GOING_AWAY,
        "server shutting down",
        Duration::from_secs(2),
    )
    .await;
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
            .all()
            .iter()
            .map(|s| (s.config.name.clone(), s.produced()))
            .collect(),
    };
    // The queue counts every reading of the run; the sensors' own counters
    // leave out those of sensors removed or replaced by a live edit.
    log::info!(
        "stopped: {} readings accepted, {} stored this run, {} dropped, {} left unstored",
        report.queue.accepted,
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
