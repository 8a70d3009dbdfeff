//! The DbWriter actor: the only code that writes to the database.
//!
//! It drains the [`IngestQueue`] in batches of at most `batch_size` rows, one
//! `BEGIN IMMEDIATE` transaction each, whenever the queue reaches a batch or
//! every `flush_interval_ms`, whichever comes first. It runs on an arbiter
//! (thread) of its own, so a slow commit blocks nobody else. A failed commit
//! puts its batch back at the front of the queue and is retried at the next
//! flush; nothing is dropped except by the queue's overflow policy.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use actix::prelude::*;
use diesel::connection::SimpleConnection;
use diesel::prelude::*;
use diesel::result::{DatabaseErrorKind, Error as DieselError};
use serde::Serialize;

use super::catalog::{SeriesCatalog, SeriesInfo};
use super::queue::{IngestQueue, QueueStats, Reading, SeriesKey};
use super::rollup;
use super::schema::{readings, series};
use super::{StorageError, open_writer};
use crate::clock::{now_ms, rfc3339};
use crate::config::StorageConfig;
use crate::events::{Bus, Event};
use crate::supervisor::{LifecycleReporter, Stop};

/// SQLite's limit on bound variables per statement, and so the rows per
/// multi-row insert (three columns each).
const MAX_BOUND_VARIABLES: usize = 32_766;
const ROWS_PER_INSERT: usize = MAX_BOUND_VARIABLES / 3;
/// A reading whose (series, timestamp) is already stored is moved forward by
/// a millisecond at a time, at most this often, rather than lost.
const MAX_TIMESTAMP_NUDGES: i64 = 10_000;

#[derive(Insertable)]
#[diesel(table_name = readings)]
struct NewReading {
    series_id: i64,
    ts: i64,
    value: f64,
}

/// Asks the writer to commit everything queued now; replies when done.
#[derive(Debug, Clone, Copy, Message)]
#[rtype(result = "()")]
pub struct Flush;

/// Counters and health of the writer, kept across writer restarts.
#[derive(Default)]
pub struct WriterStats {
    committed_rows: AtomicU64,
    committed_batches: AtomicU64,
    failed_commits: AtomicU64,
    nudged_rows: AtomicU64,
    last_commit_ms: AtomicI64,
    last_batch_rows: AtomicU64,
    last_batch_us: AtomicU64,
    failing: Mutex<Option<(i64, String)>>,
}

/// The writer's state as the API reports it.
#[derive(Debug, Clone, Serialize)]
pub struct WriterStatus {
    /// Whether the writer actor is alive.
    pub running: bool,
    /// The last commit succeeded (or none has been attempted).
    pub writable: bool,
    pub failing_since: Option<String>,
    pub last_error: Option<String>,
    pub committed_rows: u64,
    pub committed_batches: u64,
    pub failed_commits: u64,
    /// Readings stored a few milliseconds later than read because their
    /// (series, timestamp) was already taken (a clock stepped backwards).
    pub nudged_rows: u64,
    pub last_commit_at: Option<String>,
    pub last_batch_rows: u64,
    pub last_batch_ms: f64,
    pub queue: QueueStats,
}

/// What outlives any one writer instance: the queue, the catalog, the
/// counters, and the address of the writer currently running.
pub struct WriterShared {
    pub queue: Arc<IngestQueue>,
    pub catalog: Arc<SeriesCatalog>,
    pub stats: WriterStats,
    pub bus: Bus,
    current: Mutex<Option<Addr<DbWriter>>>,
}

impl WriterShared {
    pub fn new(queue: Arc<IngestQueue>, catalog: Arc<SeriesCatalog>, bus: Bus) -> WriterShared {
        WriterShared {
            queue,
            catalog,
            stats: WriterStats::default(),
            bus,
            current: Mutex::new(None),
        }
    }

    /// The writer currently running, if any.
    pub(crate) fn current(&self) -> Option<Addr<DbWriter>> {
        self.current
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
            .filter(Addr::connected)
    }

    /// Commits everything queued so far through the running writer. Returns
    /// false if no writer is running.
    pub async fn flush(&self) -> bool {
        match self.current() {
            Some(addr) => addr.send(Flush).await.is_ok(),
            None => false,
        }
    }

    pub fn status(&self) -> WriterStatus {
        let s = &self.stats;
        let failing = s.failing.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let last_commit = s.last_commit_ms.load(Ordering::Relaxed);
        WriterStatus {
            running: self.current().is_some(),
            writable: failing.is_none(),
            failing_since: failing.as_ref().map(|(t, _)| rfc3339(*t)),
            last_error: failing.map(|(_, e)| e),
            committed_rows: s.committed_rows.load(Ordering::Relaxed),
            committed_batches: s.committed_batches.load(Ordering::Relaxed),
            failed_commits: s.failed_commits.load(Ordering::Relaxed),
            nudged_rows: s.nudged_rows.load(Ordering::Relaxed),
            last_commit_at: (last_commit > 0).then(|| rfc3339(last_commit)),
            last_batch_rows: s.last_batch_rows.load(Ordering::Relaxed),
            last_batch_ms: s.last_batch_us.load(Ordering::Relaxed) as f64 / 1000.0,
            queue: self.queue.stats(),
        }
    }

    fn record_commit(&self, rows: usize, took: Duration, nudged: u64) -> bool {
        let s = &self.stats;
        s.committed_rows.fetch_add(rows as u64, Ordering::Relaxed);
        s.committed_batches.fetch_add(1, Ordering::Relaxed);
        s.nudged_rows.fetch_add(nudged, Ordering::Relaxed);
        s.last_commit_ms.store(now_ms(), Ordering::Relaxed);
        s.last_batch_rows.store(rows as u64, Ordering::Relaxed);
        s.last_batch_us
            .store(took.as_micros() as u64, Ordering::Relaxed);
        s.failing
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
            .is_some()
    }

    fn record_failure(&self, error: &StorageError) -> bool {
        self.stats.failed_commits.fetch_add(1, Ordering::Relaxed);
        let mut failing = self.stats.failing.lock().unwrap_or_else(|p| p.into_inner());
        let first = failing.is_none();
        let since = failing.as_ref().map_or_else(now_ms, |(t, _)| *t);
        *failing = Some((since, error.to_string()));
        first
    }
}

/// The single writer. Created by the supervisor from [`DbWriter::new`] on
/// its own arbiter; see the module docs.
pub struct DbWriter {
    cfg: StorageConfig,
    shared: Arc<WriterShared>,
    conn: Option<SqliteConnection>,
    reporter: LifecycleReporter,
    reported_drops: u64,
}

impl DbWriter {
    pub fn new(cfg: StorageConfig, shared: Arc<WriterShared>, reporter: LifecycleReporter) -> Self {
        let reported_drops = shared.queue.stats().dropped;
        DbWriter {
            cfg,
            shared,
            conn: None,
            reporter,
            reported_drops,
        }
    }

    /// The configuration, connection and shared state, for the handlers
    /// other storage modules add (`storage::jobs`).
    pub(super) fn parts(
        &mut self,
    ) -> (&StorageConfig, Option<&mut SqliteConnection>, &WriterShared) {
        (&self.cfg, self.conn.as_mut(), &self.shared)
    }

    /// Commits the whole queue in batches; stops at the first failure,
    /// leaving the rest queued.
    fn flush(&mut self) {
        let queue = &self.shared.queue;
        queue.clear_wake();
        let Some(conn) = self.conn.as_mut() else {
            return;
        };
        loop {
            let batch = queue.take(self.cfg.batch_size);
            if batch.is_empty() {
                break;
            }
            let started = Instant::now();
            match commit_batch(conn, &self.shared.catalog, &batch) {
                Ok(nudged) => {
                    if self
                        .shared
                        .record_commit(batch.len(), started.elapsed(), nudged)
                    {
                        log::info!("database writable again; draining the queue");
                        self.shared.bus.event(Event::Writer {
                            writable: true,
                            error: None,
                            queued: queue.len(),
                        });
                    }
                    if nudged > 0 {
                        log::warn!(
                            "{nudged} readings had a (series, timestamp) already stored and were moved forward by milliseconds"
                        );
                    }
                }
                Err(e) => {
                    let rows = batch.len();
                    let dropped = queue.requeue_front(batch);
                    if self.shared.record_failure(&e) {
                        log::error!(
                            "commit of {rows} readings failed: {e}; keeping them queued and retrying every {} ms",
                            self.cfg.flush_interval_ms
                        );
                        self.shared.bus.event(Event::Writer {
                            writable: false,
                            error: Some(e.to_string()),
                            queued: queue.len(),
                        });
                    }
                    if dropped > 0 {
                        log::warn!(
                            "queue full while the database fails: {dropped} readings dropped"
                        );
                    }
                    break;
                }
            }
        }
        self.report_drops();
    }

    fn report_drops(&mut self) {
        let stats = self.shared.queue.stats();
        if stats.dropped > self.reported_drops {
            let count = stats.dropped - self.reported_drops;
            log::warn!(
                "{count} readings dropped by the overflow policy ({:?}, capacity {})",
                stats.policy,
                stats.capacity
            );
            self.shared.bus.event(Event::ReadingsDropped {
                count,
                total: stats.dropped,
            });
            self.reported_drops = stats.dropped;
        }
    }
}

impl Actor for DbWriter {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        match open_writer(&self.cfg) {
            Ok(conn) => self.conn = Some(conn),
            Err(e) => {
                self.reporter
                    .failed(format!("cannot open the database: {e}"));
                ctx.stop();
                return;
            }
        }
        let addr = ctx.address();
        *self
            .shared
            .current
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = Some(addr.clone());
        self.shared
            .queue
            .set_waker(Some(Box::new(move || addr.do_send(Flush))));
        ctx.run_interval(
            Duration::from_millis(self.cfg.flush_interval_ms),
            |act, _| act.flush(),
        );
        self.reporter.started();
        if !self.shared.queue.is_empty() {
            ctx.notify(Flush);
        }
    }

    fn stopped(&mut self, _: &mut Context<Self>) {
        self.reporter.stopped();
    }
}

impl Handler<Flush> for DbWriter {
    type Result = ();

    fn handle(&mut self, _: Flush, _: &mut Context<Self>) {
        self.flush();
    }
}

impl Handler<Stop> for DbWriter {
    type Result = ();

    /// Shutdown: commit everything queued, checkpoint the WAL into the main
    /// file, then stop.
    fn handle(&mut self, _: Stop, ctx: &mut Context<Self>) {
        self.flush();
        let left = self.shared.queue.len();
        if left > 0 {
            log::error!(
                "shutdown: {left} readings could not be stored: {}",
                self.shared
                    .status()
                    .last_error
                    .unwrap_or_else(|| "unknown error".into())
            );
        }
        if let Some(conn) = self.conn.as_mut()
            && let Err(e) = conn.batch_execute("PRAGMA wal_checkpoint(TRUNCATE);")
        {
            log::warn!("shutdown checkpoint failed: {e}");
        }
        self.conn = None;
        ctx.stop();
    }
}

/// Writes one batch in one immediate transaction, with its rollups (see
/// [`rollup`]). If a reading collides with a stored (series, timestamp), the
/// transaction is rolled back and redone row by row, moving colliding
/// timestamps forward. Returns how many rows were moved.
pub(crate) fn commit_batch(
    conn: &mut SqliteConnection,
    catalog: &SeriesCatalog,
    batch: &[Reading],
) -> Result<u64, StorageError> {
    let mut created = Vec::new();
    let fast = conn.immediate_transaction(|c| {
        created.clear();
        insert_batch(c, catalog, batch, false, &mut created)
    });
    let nudged = match fast {
        Err(StorageError::Query(DieselError::DatabaseError(
            DatabaseErrorKind::UniqueViolation,
            _,
        ))) => conn.immediate_transaction(|c| {
            created.clear();
            insert_batch(c, catalog, batch, true, &mut created)
        })?,
        other => other?,
    };
    for info in created {
        catalog.insert(info);
    }
    Ok(nudged)
}

fn insert_batch(
    conn: &mut SqliteConnection,
    catalog: &SeriesCatalog,
    batch: &[Reading],
    careful: bool,
    created: &mut Vec<SeriesInfo>,
) -> Result<u64, StorageError> {
    let mut rows = Vec::with_capacity(batch.len());
    let mut last: Option<(&Arc<SeriesKey>, i64)> = None;
    for r in batch {
        let id = match last {
            Some((key, id)) if Arc::ptr_eq(key, &r.series) => id,
            _ => {
                let id = series_id(conn, catalog, &r.series, created)?;
                last = Some((&r.series, id));
                id
            }
        };
        rows.push(NewReading {
            series_id: id,
            ts: r.ts_ms,
            value: r.value,
        });
    }
    if !careful {
        for chunk in rows.chunks(ROWS_PER_INSERT) {
            diesel::insert_into(readings::table)
                .values(chunk)
                .execute(conn)?;
        }
        rollup::record(conn, rows.iter().map(|r| (r.series_id, r.ts, r.value)))?;
        return Ok(0);
    }
    let mut nudged = 0;
    for row in &mut rows {
        for step in 0..=MAX_TIMESTAMP_NUDGES {
            let inserted = diesel::insert_into(readings::table)
                .values((
                    readings::series_id.eq(row.series_id),
                    readings::ts.eq(row.ts + step),
                    readings::value.eq(row.value),
                ))
                .on_conflict_do_nothing()
                .execute(conn)?;
            if inserted == 1 {
                nudged += u64::from(step > 0);
                row.ts += step;
                break;
            }
            if step == MAX_TIMESTAMP_NUDGES {
                return Err(StorageError::Query(DieselError::RollbackTransaction));
            }
        }
    }
    rollup::record(conn, rows.iter().map(|r| (r.series_id, r.ts, r.value)))?;
    Ok(nudged)
}

/// The id of a reading's series, creating the row (or updating its unit)
/// inside the current transaction when needed.
fn series_id(
    conn: &mut SqliteConnection,
    catalog: &SeriesCatalog,
    key: &SeriesKey,
    created: &mut Vec<SeriesInfo>,
) -> Result<i64, StorageError> {
    if let Some(info) = created
        .iter()
        .find(|s| s.sensor == key.sensor && s.metric == key.metric)
    {
        return Ok(info.id);
    }
    if let Some(info) = catalog.lookup(&key.sensor, &key.metric)
        && info.unit == key.unit
    {
        return Ok(info.id);
    }
    diesel::insert_into(series::table)
        .values((
            series::sensor.eq(&*key.sensor),
            series::metric.eq(&*key.metric),
            series::unit.eq(&*key.unit),
        ))
        .on_conflict((series::sensor, series::metric))
        .do_update()
        .set(series::unit.eq(&*key.unit))
        .execute(conn)?;
    let id = series::table
        .filter(series::sensor.eq(&*key.sensor))
        .filter(series::metric.eq(&*key.metric))
        .select(series::id)
        .first::<i64>(conn)?;
    created.push(SeriesInfo {
        id,
        sensor: key.sensor.clone(),
        metric: key.metric.clone(),
        unit: key.unit.clone(),
    });
    Ok(id)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::{prepare, read_pool};

    fn setup() -> (tempfile::TempDir, StorageConfig) {
        let dir = tempfile::tempdir().unwrap();
        let cfg = StorageConfig {
            path: dir.path().join("w.db"),
            ..StorageConfig::default()
        };
        prepare(&cfg).unwrap();
        (dir, cfg)
    }

    fn key(metric: &str, unit: &str) -> Arc<SeriesKey> {
        Arc::new(SeriesKey {
            sensor: "s".into(),
            metric: metric.into(),
            unit: unit.into(),
        })
    }

    fn count(cfg: &StorageConfig) -> i64 {
        let pool = read_pool(cfg).unwrap();
        let mut c = pool.get().unwrap();
        readings::table.count().get_result(&mut c).unwrap()
    }

    #[test]
    fn commits_and_creates_series_once() {
        let (_d, cfg) = setup();
        let mut conn = open_writer(&cfg).unwrap();
        let catalog = SeriesCatalog::default();
        let a = key("a", "%");
        let b = key("b", "");
        let batch: Vec<_> = (0..10)
            .map(|i| Reading {
                series: if i % 2 == 0 { a.clone() } else { b.clone() },
                ts_ms: 1000 + i,
                value: i as f64,
            })
            .collect();
        assert_eq!(commit_batch(&mut conn, &catalog, &batch).unwrap(), 0);
        assert_eq!(catalog.all().len(), 2);
        assert_eq!(catalog.lookup("s", "a").unwrap().unit.as_ref(), "%");
        assert_eq!(count(&cfg), 10);
    }

    #[test]
    fn colliding_timestamps_are_nudged_not_lost() {
        let (_d, cfg) = setup();
        let mut conn = open_writer(&cfg).unwrap();
        let catalog = SeriesCatalog::default();
        let k = key("a", "");
        let r = |ts, v| Reading {
            series: k.clone(),
            ts_ms: ts,
            value: v,
        };
        commit_batch(&mut conn, &catalog, &[r(100, 1.0), r(101, 2.0)]).unwrap();
        // A clock stepped back: 100 and 101 are taken, and 100 repeats within the batch.
        let nudged = commit_batch(
            &mut conn,
            &catalog,
            &[r(100, 3.0), r(100, 4.0), r(200, 5.0)],
        )
        .unwrap();
        assert_eq!(nudged, 2);
        assert_eq!(count(&cfg), 5);
        let mut c = read_pool(&cfg).unwrap().get().unwrap();
        let stored: Vec<(i64, f64)> = readings::table
            .select((readings::ts, readings::value))
            .order(readings::ts)
            .load(&mut c)
            .unwrap();
        assert_eq!(
            stored,
            [(100, 1.0), (101, 2.0), (102, 3.0), (103, 4.0), (200, 5.0)]
        );
    }

    #[test]
    fn a_unit_change_updates_the_series() {
        let (_d, cfg) = setup();
        let mut conn = open_writer(&cfg).unwrap();
        let catalog = SeriesCatalog::default();
        let r = |k: &Arc<SeriesKey>, ts| Reading {
            series: k.clone(),
            ts_ms: ts,
            value: 1.0,
        };
        commit_batch(&mut conn, &catalog, &[r(&key("t", "C"), 1)]).unwrap();
        commit_batch(&mut conn, &catalog, &[r(&key("t", "°C"), 2)]).unwrap();
        assert_eq!(catalog.all().len(), 1);
        assert_eq!(catalog.lookup("s", "t").unwrap().unit.as_ref(), "°C");
        let reloaded = SeriesCatalog::load(&mut conn).unwrap();
        assert_eq!(reloaded.lookup("s", "t").unwrap().unit.as_ref(), "°C");
    }
}
