//! `vigil bench ingest`: the cost of the writer's commit path (readings plus
//! their rollups, through `commit_batch`) against raw batched inserts of the
//! same rows into the readings table, measured in the same run.
//!
//! The design's target is a ratio: the writer path must reach at least 60 %
//! of the raw rate. Both sides insert the same rows in batches of the same
//! size, one immediate transaction per batch, into fresh databases opened
//! with the writer's own settings.

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use diesel::prelude::*;

use super::{median_f64, thread_cpu_time};
use crate::config::StorageConfig;
use crate::storage::catalog::SeriesCatalog;
use crate::storage::queue::{Reading, SeriesKey};
use crate::storage::schema::readings;
use crate::storage::writer::commit_batch;
use crate::storage::{StorageError, open_writer, prepare};

/// Sizes of the measurement.
#[derive(Debug, Clone, Copy)]
pub struct IngestOptions {
    pub rows: usize,
    pub series: usize,
    pub batch: usize,
    pub runs: usize,
}

impl Default for IngestOptions {
    fn default() -> Self {
        IngestOptions {
            rows: 1_000_000,
            series: 10,
            batch: 1000,
            runs: 3,
        }
    }
}

/// Medians over the runs.
#[derive(Debug, Clone, serde::Serialize)]
pub struct IngestFigures {
    pub raw_rows_per_s: f64,
    pub writer_rows_per_s: f64,
    /// writer / raw.
    pub ratio: f64,
    /// The same per second of the inserting thread's CPU time (Linux), which
    /// other load on the machine disturbs far less.
    pub raw_rows_per_cpu_s: Option<f64>,
    pub writer_rows_per_cpu_s: Option<f64>,
    pub cpu_ratio: Option<f64>,
}

/// Rows per wall-clock second and per CPU second of one run.
struct Rate {
    wall: f64,
    cpu: Option<f64>,
}

fn timed(rows: usize, f: impl FnOnce() -> Result<(), StorageError>) -> Result<Rate, StorageError> {
    let cpu0 = thread_cpu_time();
    let started = Instant::now();
    f()?;
    let wall = rows as f64 / started.elapsed().as_secs_f64();
    let cpu = match (cpu0, thread_cpu_time()) {
        (Some(a), Some(b)) if b > a => Some(rows as f64 / (b - a).as_secs_f64()),
        _ => None,
    };
    Ok(Rate { wall, cpu })
}

#[derive(Insertable)]
#[diesel(table_name = readings)]
struct Row {
    series_id: i64,
    ts: i64,
    value: f64,
}

const T0: i64 = 1_790_000_000_000;

fn fresh(dir: &Path, name: &str) -> Result<(StorageConfig, SqliteConnection), StorageError> {
    let cfg = StorageConfig {
        path: dir.join(name),
        ..StorageConfig::default()
    };
    prepare(&cfg)?;
    let conn = open_writer(&cfg)?;
    Ok((cfg, conn))
}

/// Reading `i`: series round-robin, one reading per second per series.
fn reading(i: usize, series: usize) -> (usize, i64, f64) {
    let s = i % series;
    let t = (i / series) as i64;
    let v = 20.0 + 5.0 * ((t as f64) / 600.0).sin() + (i % 7) as f64 * 0.01;
    (s, T0 + t * 1000 + (s as i64 * 7) % 1000, v)
}

fn run_raw(dir: &Path, o: &IngestOptions, run: usize) -> Result<Rate, StorageError> {
    let (cfg, mut conn) = fresh(dir, &format!("raw-{run}.db"))?;
    let rows: Vec<Row> = (0..o.rows)
        .map(|i| {
            let (s, ts, value) = reading(i, o.series);
            Row {
                series_id: s as i64 + 1,
                ts,
                value,
            }
        })
        .collect();
    let rate = timed(o.rows, || {
        for chunk in rows.chunks(o.batch) {
            conn.immediate_transaction(|c| {
                diesel::insert_into(readings::table)
                    .values(chunk)
                    .execute(c)
                    .map(|_| ())
            })?;
        }
        Ok(())
    })?;
    drop(conn);
    let _ = std::fs::remove_file(&cfg.path);
    Ok(rate)
}

fn run_writer(dir: &Path, o: &IngestOptions, run: usize) -> Result<Rate, StorageError> {
    let (cfg, mut conn) = fresh(dir, &format!("writer-{run}.db"))?;
    let keys: Vec<Arc<SeriesKey>> = (0..o.series)
        .map(|s| {
            Arc::new(SeriesKey {
                sensor: format!("sensor{s}").into(),
                metric: "value".into(),
                unit: "".into(),
            })
        })
        .collect();
    let rows: Vec<Reading> = (0..o.rows)
        .map(|i| {
            let (s, ts_ms, value) = reading(i, o.series);
            Reading {
                series: keys[s].clone(),
                ts_ms,
                value,
            }
        })
        .collect();
    let catalog = SeriesCatalog::default();
    let rate = timed(o.rows, || {
        for chunk in rows.chunks(o.batch) {
            commit_batch(&mut conn, &catalog, chunk)?;
        }
        Ok(())
    })?;
    drop(conn);
    let _ = std::fs::remove_file(&cfg.path);
    Ok(rate)
}

/// Alternates raw and writer runs so that both see the same machine state.
pub fn run(o: &IngestOptions) -> Result<IngestFigures, StorageError> {
    let dir = tempfile::tempdir().map_err(|e| StorageError::Io {
        what: "creating a temporary directory".into(),
        source: e,
    })?;
    let mut raw = Vec::new();
    let mut writer = Vec::new();
    for r in 0..o.runs.max(1) {
        raw.push(run_raw(dir.path(), o, r)?);
        writer.push(run_writer(dir.path(), o, r)?);
    }
    let raw_rows_per_s = median_f64(&mut raw.iter().map(|r| r.wall).collect::<Vec<_>>());
    let writer_rows_per_s = median_f64(&mut writer.iter().map(|r| r.wall).collect::<Vec<_>>());
    let cpu = |rates: &[Rate]| -> Option<f64> {
        let mut v = rates.iter().map(|r| r.cpu).collect::<Option<Vec<f64>>>()?;
        Some(median_f64(&mut v))
    };
    let (raw_cpu, writer_cpu) = (cpu(&raw), cpu(&writer));
    Ok(IngestFigures {
        raw_rows_per_s,
        writer_rows_per_s,
        ratio: writer_rows_per_s / raw_rows_per_s,
        raw_rows_per_cpu_s: raw_cpu,
        writer_rows_per_cpu_s: writer_cpu,
        cpu_ratio: raw_cpu.zip(writer_cpu).map(|(r, w)| w / r),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn smoke_run_at_a_tiny_size() {
        let f = run(&IngestOptions {
            rows: 3000,
            series: 3,
            batch: 500,
            runs: 1,
        })
        .unwrap();
        assert!(f.raw_rows_per_s > 0.0 && f.writer_rows_per_s > 0.0, "{f:?}");
    }
}
