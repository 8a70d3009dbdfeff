//! `vigil-bench ingest`: readings through the path sensors use (pushed into
//! the `IngestQueue`, committed by the supervised `DbWriter` on its own
//! thread, rollups and all) against plain SQLite inserting the same rows
//! (`rawsqlite`: one prepared INSERT, a transaction per batch of the same
//! size), in the same run, on fresh databases with the same schema and
//! pragmas. Reports both rates and their ratio, medians over the runs.
//! The writer stores head blocks and leaves the per-reading work of
//! placing readings in chunks to sealing, so the time to seal what it
//! committed is measured too, and the ratio of both together.

use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use serde::Serialize;

use super::rawsqlite::RawDb;
use super::{BenchError, median_f64};
use crate::perf::Perf;
use crate::storage::catalog::SeriesCatalog;
use crate::storage::config::{OverflowPolicy, StorageConfig};
use crate::storage::queue::IngestQueue;
use crate::storage::writer::{DbWriter, WriterShared};
use crate::storage::{self, StorageError};
use crate::supervisor::{ChildHandle, ChildSpec, EventLog, RestartPolicy, Stop, Supervisor};
use crate::vocab::bus::Bus;
use crate::vocab::reading::{Reading, SeriesKey};

/// Sizes of one ingest comparison.
#[derive(Debug, Clone, Copy)]
pub struct IngestOptions {
    pub rows: usize,
    pub series: usize,
    /// Readings per push into the queue (a sensor read's worth).
    pub per_push: usize,
    /// Rows per transaction, for both paths (the writer's `batch_size`).
    pub batch_size: usize,
    pub runs: usize,
    /// Where the writer's WAL index lives (`storage.wal_index`).
    pub wal_index: crate::storage::walindex::WalIndex,
}

impl Default for IngestOptions {
    fn default() -> Self {
        IngestOptions {
            rows: 1_000_000,
            series: 10,
            per_push: 10,
            batch_size: StorageConfig::default().batch_size,
            runs: 3,
            wal_index: crate::storage::walindex::WalIndex::default(),
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct IngestRun {
    pub writer_rows_per_s: f64,
    pub raw_rows_per_s: f64,
    pub ratio: f64,
    /// Readings per second of sealing what the writer committed (head
    /// blocks into chunks, every hour), after it stopped.
    pub seal_rows_per_s: f64,
    /// The writer's commits and their sealing together, against raw rows:
    /// the whole cost of a reading until it rests in its chunk.
    pub with_sealing_ratio: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct IngestFigures {
    pub rows: usize,
    pub batch_size: usize,
    pub writer_rows_per_s: f64,
    pub raw_rows_per_s: f64,
    /// Median of the per-run ratios (writer / raw).
    pub ratio: f64,
    pub seal_rows_per_s: f64,
    /// Median of the per-run ratios (writer and sealing / raw).
    pub with_sealing_ratio: f64,
    pub runs: Vec<IngestRun>,
}

const T0: i64 = 1_790_000_000_000;

fn row(i: usize, series: usize) -> (usize, i64, f64) {
    let s = i % series;
    let t = (i / series) as i64;
    (s, T0 + t * 1000, 20.0 + (t % 600) as f64 * 0.01 + s as f64)
}

fn storage_config(path: std::path::PathBuf, o: &IngestOptions) -> StorageConfig {
    StorageConfig {
        path,
        batch_size: o.batch_size,
        queue_capacity: o.rows + o.batch_size,
        flush_interval_ms: 1000,
        wal_index: o.wal_index,
        ..StorageConfig::default()
    }
}

/// Plain SQLite: rows per second.
fn raw_run(dir: &std::path::Path, o: &IngestOptions, run: usize) -> Result<f64, BenchError> {
    let cfg = storage_config(dir.join(format!("raw-{run}.db")), o);
    storage::prepare(&cfg).map_err(|e| BenchError::Setup(e.to_string()))?;
    let db = RawDb::open(&cfg.path)?;
    db.exec(&format!(
        "PRAGMA busy_timeout = 5000; PRAGMA synchronous = {}; PRAGMA temp_store = MEMORY; PRAGMA cache_size = -{};",
        cfg.synchronous.pragma_value(),
        cfg.cache_kib
    ))?;
    for s in 0..o.series {
        db.exec(&format!(
            "INSERT INTO series (id, sensor, metric, unit) VALUES ({}, 'bench', 'm{s}', '')",
            s + 1
        ))?;
    }
    let mut insert = db.prepare("INSERT INTO readings (series_id, ts, value) VALUES (?, ?, ?)")?;
    let started = Instant::now();
    let mut i = 0;
    while i < o.rows {
        let end = (i + o.batch_size).min(o.rows);
        db.exec("BEGIN IMMEDIATE")?;
        for k in i..end {
            let (s, ts, v) = row(k, o.series);
            insert.insert3(s as i64 + 1, ts, v)?;
        }
        db.exec("COMMIT")?;
        i = end;
    }
    Ok(o.rows as f64 / started.elapsed().as_secs_f64())
}

/// Seals every hour of head blocks in the database at `path` into chunks,
/// as the writer's passes do; seconds taken.
fn seal_everything(cfg: &StorageConfig) -> Result<f64, BenchError> {
    let mut conn = storage::open_writer(cfg)?;
    let started = Instant::now();
    while storage::chunk::blocks::seal_oldest_hour(&mut conn, i64::MIN, i64::MAX)?.is_some() {}
    let took = started.elapsed().as_secs_f64();
    if storage::chunk::blocks::count_all(&mut conn).map_err(StorageError::from)? != 0 {
        return Err(BenchError::Setup("sealing left head blocks".into()));
    }
    Ok(took)
}

/// The writer's real path: rows per second from the first push to the last
/// commit, then the seconds sealing what it committed takes.
fn writer_run(
    dir: &std::path::Path,
    o: &IngestOptions,
    run: usize,
) -> Result<(f64, f64), BenchError> {
    let cfg = storage_config(dir.join(format!("writer-{run}.db")), o);
    let seal_cfg = cfg.clone();
    storage::prepare(&cfg).map_err(|e| BenchError::Setup(e.to_string()))?;
    let o = *o;
    let rate = actix_rt::System::new().block_on(async move {
        let queue = Arc::new(IngestQueue::new(
            cfg.queue_capacity,
            OverflowPolicy::DropNewest,
            cfg.batch_size,
        ));
        let perf = Perf::new(1000);
        let shared = Arc::new(WriterShared::new(
            queue.clone(),
            Arc::new(SeriesCatalog::default()),
            Bus::new(),
            &perf,
            Arc::new(crate::storage::recent::RecentCache::new(1001)),
        ));
        let arbiter = Arbiter::new();
        let spec = {
            let (handle, shared, cfg) = (arbiter.handle(), shared.clone(), cfg.clone());
            ChildSpec::new("writer", "writer", true, move |reporter| {
                let (shared, cfg) = (shared.clone(), cfg.clone());
                let addr = DbWriter::start_in_arbiter(&handle, move |_| {
                    DbWriter::new(cfg, shared, reporter)
                });
                ChildHandle {
                    stop: addr.recipient(),
                    supervisor: None,
                }
            })
        };
        let policy = RestartPolicy {
            backoff_base: Duration::from_millis(100),
            backoff_max: Duration::from_secs(1),
            max_restarts: 3,
            window: Duration::from_secs(60),
            revive: None,
        };
        let root = Supervisor::new(
            "bench",
            policy,
            Duration::from_secs(60),
            vec![spec],
            Arc::new(EventLog::default()),
            None,
        )
        .start();
        let deadline = Instant::now() + Duration::from_secs(30);
        while !shared.flush().await {
            if Instant::now() > deadline {
                return Err(BenchError::Setup("the writer did not start".into()));
            }
            actix_rt::time::sleep(Duration::from_millis(5)).await;
        }
        let keys: Vec<Arc<SeriesKey>> = (0..o.series)
            .map(|s| {
                Arc::new(SeriesKey {
                    sensor: "bench".into(),
                    metric: format!("m{s}").into(),
                    unit: "".into(),
                })
            })
            .collect();

        let started = Instant::now();
        let mut i = 0;
        while i < o.rows {
            let end = (i + o.per_push).min(o.rows);
            let batch: Vec<Reading> = (i..end)
                .map(|k| {
                    let (s, ts, value) = row(k, o.series);
                    Reading {
                        series: keys[s].clone(),
                        ts_ms: ts,
                        value,
                    }
                })
                .collect();
            queue.push(batch);
            i = end;
        }
        shared.flush().await;
        while (shared.status().committed_rows as usize) < o.rows {
            if let Some(e) = shared.status().last_error {
                return Err(BenchError::Setup(format!("commit failed: {e}")));
            }
            actix_rt::time::sleep(Duration::from_millis(1)).await;
        }
        let rate = o.rows as f64 / started.elapsed().as_secs_f64();
        let dropped = queue.stats().dropped;
        let _ = root.send(Stop).await;
        arbiter.stop();
        if dropped > 0 {
            return Err(BenchError::Setup(format!("{dropped} readings dropped")));
        }
        Ok(rate)
    })?;
    Ok((rate, seal_everything(&seal_cfg)?))
}

/// Runs the comparison, alternating the two paths run by run.
pub fn run(o: &IngestOptions) -> Result<IngestFigures, BenchError> {
    let dir = tempfile::tempdir()?;
    let mut runs = Vec::new();
    for r in 0..o.runs.max(1) {
        let raw = raw_run(dir.path(), o, r)?;
        let (writer, seal_s) = writer_run(dir.path(), o, r)?;
        let whole_s = o.rows as f64 / writer + seal_s;
        runs.push(IngestRun {
            writer_rows_per_s: writer,
            raw_rows_per_s: raw,
            ratio: writer / raw,
            seal_rows_per_s: o.rows as f64 / seal_s,
            with_sealing_ratio: o.rows as f64 / whole_s / raw,
        });
    }
    let med = |f: fn(&IngestRun) -> f64| median_f64(&mut runs.iter().map(f).collect::<Vec<_>>());
    Ok(IngestFigures {
        rows: o.rows,
        batch_size: o.batch_size,
        writer_rows_per_s: med(|r| r.writer_rows_per_s),
        raw_rows_per_s: med(|r| r.raw_rows_per_s),
        ratio: med(|r| r.ratio),
        seal_rows_per_s: med(|r| r.seal_rows_per_s),
        with_sealing_ratio: med(|r| r.with_sealing_ratio),
        runs,
    })
}

impl From<StorageError> for BenchError {
    fn from(e: StorageError) -> BenchError {
        BenchError::Setup(e.to_string())
    }
}
