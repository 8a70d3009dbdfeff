//! `vigil-bench query`: `GET /api/readings?sensor=…&limit=100` against a
//! large database (10 million rows by default, spread over sensors with one
//! metric each, a reading a second), from [`super::load`] over 64 keep-alive
//! connections on loopback. The appliance runs as its own process with no
//! sensors polling. Reports requests per second and latency percentiles,
//! medians over runs, with the server's CPU.

use std::path::Path;
use std::time::Duration;

use serde::Serialize;

use super::appliance::Appliance;
use super::rawsqlite::RawDb;
use super::{BenchError, load, median_f64};
use crate::platform::proc::ProcStats;
use crate::storage;
use crate::storage::config::StorageConfig;

#[derive(Debug, Clone, Copy)]
pub struct QueryOptions {
    pub rows: usize,
    pub sensors: usize,
    pub connections: usize,
    pub seconds: f64,
    pub runs: usize,
    pub limit: usize,
    /// Load-generator threads.
    pub threads: usize,
    /// Seal every ended hour before the appliance starts, as an
    /// appliance's history is.
    pub seal: bool,
}

impl Default for QueryOptions {
    fn default() -> Self {
        QueryOptions {
            rows: 10_000_000,
            sensors: 10,
            connections: 64,
            seconds: 10.0,
            runs: 3,
            limit: 100,
            threads: 1,
            seal: true,
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct QueryRun {
    pub requests_per_s: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    pub errors: u64,
    pub server_cpu_percent: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct QueryFigures {
    pub rows: usize,
    pub sealed: bool,
    pub connections: usize,
    pub build_seconds: f64,
    pub requests_per_s: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub runs: Vec<QueryRun>,
}

const T0: i64 = 1_780_000_000_000;

/// Writes `rows` readings over `sensors` sensors (one series each) through
/// the C API, in big transactions.
pub fn build_database(path: &Path, rows: usize, sensors: usize) -> Result<(), BenchError> {
    let cfg = StorageConfig {
        path: path.to_owned(),
        ..StorageConfig::default()
    };
    storage::prepare(&cfg)?;
    let db = RawDb::open(path)?;
    db.exec("PRAGMA synchronous = OFF; PRAGMA cache_size = -65536;")?;
    for s in 0..sensors {
        db.exec(&format!(
            "INSERT INTO series (id, sensor, metric, unit) VALUES ({}, 's{s}', 'value', '°C')",
            s + 1
        ))?;
    }
    let per = rows / sensors.max(1);
    let mut insert = db.prepare("INSERT INTO readings (series_id, ts, value) VALUES (?, ?, ?)")?;
    for s in 0..sensors {
        db.exec("BEGIN")?;
        for t in 0..per {
            if t > 0 && t % 100_000 == 0 {
                db.exec("COMMIT; BEGIN")?;
            }
            let value = 20.0 + ((t % 3600) as f64 / 3600.0 * std::f64::consts::TAU).sin() * 5.0;
            insert.insert3(s as i64 + 1, T0 + t as i64 * 1000, value)?;
        }
        db.exec("COMMIT")?;
    }
    db.exec("PRAGMA wal_checkpoint(TRUNCATE)")?;
    Ok(())
}

/// Runs the benchmark against the vigil binary at `exe`.
pub fn run(exe: &Path, o: &QueryOptions) -> Result<QueryFigures, BenchError> {
    crate::platform::raise_fd_limit();
    let dir = tempfile::tempdir()?;
    let db = dir.path().join("query.db");
    let built = std::time::Instant::now();
    build_database(&db, o.rows, o.sensors)?;
    if o.seal {
        let cfg = StorageConfig {
            path: db.clone(),
            ..StorageConfig::default()
        };
        let mut conn = storage::open_writer(&cfg)?;
        // Every hour but the newest, which an appliance would still be
        // writing.
        let newest = T0 + (o.rows / o.sensors.max(1)) as i64 * 1000;
        super::seal_all(&mut conn, crate::storage::chunk::period_start(newest))?;
        diesel::RunQueryDsl::execute(
            diesel::sql_query("PRAGMA wal_checkpoint(TRUNCATE)"),
            &mut conn,
        )?;
    }
    let build_seconds = built.elapsed().as_secs_f64();
    // No sealing pass during the timing: sealed up front or not at all.
    let config = format!(
        "sensors = []\n[server]\nbind = \"127.0.0.1:0\"\n[log]\nfilter = \"warn,vigil::app=info\"\n\
         [storage]\npath = \"{}\"\nseal_interval_secs = 0\n[pacing]\nenabled = false\n\
         # every load connection comes from one address\n[guard.http]\nenabled = false\n",
        db.display()
    );
    let app = Appliance::start(exe, dir.path(), &config)?;
    let paths: Vec<String> = (0..o.sensors)
        .map(|s| format!("/api/readings?sensor=s{s}&limit={}", o.limit))
        .collect();
    // Warm the caches and connections.
    load::run(app.addr, paths.clone(), o.connections, 1.0, o.threads)?;
    let mut runs = Vec::new();
    for _ in 0..o.runs.max(1) {
        let before = app.stats()?;
        let r = load::run(app.addr, paths.clone(), o.connections, o.seconds, o.threads)?;
        let after = app.stats()?;
        runs.push(QueryRun {
            requests_per_s: r.per_second(),
            p50_ms: r.quantile_ms(0.5),
            p99_ms: r.quantile_ms(0.99),
            max_ms: r.quantile_ms(1.0),
            errors: r.errors,
            server_cpu_percent: ProcStats::cpu_percent(&before, &after, r.seconds),
        });
    }
    app.stop(Duration::from_secs(30))?;
    let med = |f: fn(&QueryRun) -> f64| median_f64(&mut runs.iter().map(f).collect::<Vec<_>>());
    Ok(QueryFigures {
        rows: o.rows,
        sealed: o.seal,
        connections: o.connections,
        build_seconds,
        requests_per_s: med(|r| r.requests_per_s),
        p50_ms: med(|r| r.p50_ms),
        p99_ms: med(|r| r.p99_ms),
        runs,
    })
}
