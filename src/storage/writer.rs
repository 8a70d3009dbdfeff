//! The DbWriter actor: the only code that writes to the database.
//!
//! It drains the [`IngestQueue`] in batches of at most `batch_size` rows, one
//! `BEGIN IMMEDIATE` transaction each, whenever the queue reaches a batch or
//! every `flush_interval_ms`, whichever comes first. It runs on an arbiter
//! (thread) of its own, so a slow commit blocks nobody else. A failed commit
//! puts its batch back at the front of the queue and is retried at the next
//! flush; nothing is dropped except by the queue's overflow policy.
//!
//! Commits go through the database's circuit breaker (`crate::guard`): once
//! it opens, the writer attempts no commit (and no `Exec` job) until its
//! wait is over; the first flush after that commits one batch as the trial,
//! and on success the queue drains in order. Shutdown makes one last attempt
//! whatever the breaker says.

use std::collections::HashSet;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLockWriteGuard};
use std::time::{Duration, Instant};

use actix::prelude::*;
use diesel::connection::SimpleConnection;
use diesel::prelude::*;
use diesel::result::Error as DieselError;
use serde::Serialize;

use super::catalog::{SeriesCatalog, SeriesInfo};
use super::chunk;
use super::head::Head;
use super::queue::{IngestQueue, QueueStats};
use super::recent::RecentCache;
use super::rollup;
use super::schema::{readings, series};
use super::sealer::{SealState, SealStatus};
use super::{StorageError, open_writer};
use crate::guard::{Call, CircuitBreaker};
use crate::perf::{Op, Perf};
use crate::storage::config::StorageConfig;
use crate::supervisor::{LifecycleReporter, Stop};
use crate::vocab::bus::{Bus, Event};
use crate::vocab::clock::{now_ms, rfc3339};
use crate::vocab::reading::{Reading, SeriesKey};

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

/// Asks the writer only to answer: one that cannot (blocked inside SQLite)
/// is wedged. The systemd watchdog asks.
#[derive(Debug, Clone, Copy, Message)]
#[rtype(result = "()")]
pub struct Ping;

/// A write another part of vigil needs (alerts, maintenance), run by the
/// writer in an immediate transaction of its own, between batches, so the
/// single-writer rule holds for everything.
pub struct Exec<R> {
    job: WriteJob<R>,
}

/// The work of an [`Exec`].
type WriteJob<R> = Box<dyn FnOnce(&mut SqliteConnection) -> Result<R, StorageError> + Send>;

impl<R: Send + 'static> Message for Exec<R> {
    type Result = Result<R, StorageError>;
}

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
#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
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
    /// Accepted readings not committed yet (in the head, readable).
    pub uncommitted_rows: usize,
    /// Every reading older than this is committed; null when all are.
    pub committed_through_ms: Option<i64>,
    /// Ended hours sealed into compressed chunks (`storage::chunk`).
    pub sealing: SealStatus,
}

/// What outlives any one writer instance: the queue, the catalog, the
/// counters, and the address of the writer currently running.
pub struct WriterShared {
    pub queue: Arc<IngestQueue>,
    pub catalog: Arc<SeriesCatalog>,
    pub stats: WriterStats,
    pub bus: Bus,
    /// `db.commit` in the performance monitor: one sample per batch.
    pub commit_op: Arc<Op>,
    /// Recent committed readings in memory, kept up to date by every commit.
    pub recent: Arc<RecentCache>,
    /// Sealing's counters (`storage::sealer`).
    pub sealing: SealState,
    /// A long job the writer is running on purpose, and since when.
    busy: Mutex<Option<(&'static str, Instant)>>,
    current: Mutex<Option<Addr<DbWriter>>>,
    /// The circuit breaker around commits, if any.
    breaker: Option<Arc<CircuitBreaker>>,
}

impl WriterShared {
    pub fn new(
        queue: Arc<IngestQueue>,
        catalog: Arc<SeriesCatalog>,
        bus: Bus,
        perf: &Perf,
        recent: Arc<RecentCache>,
    ) -> WriterShared {
        // The head assigns the ids of new series from the writer's catalog.
        queue.head().set_catalog(catalog.clone());
        WriterShared {
            queue,
            catalog,
            stats: WriterStats::default(),
            bus,
            commit_op: perf.op("db.commit"),
            recent,
            sealing: SealState::default(),
            busy: Mutex::new(None),
            current: Mutex::new(None),
            breaker: None,
        }
    }

    /// Puts commits behind `breaker`.
    pub fn with_breaker(mut self, breaker: Arc<CircuitBreaker>) -> WriterShared {
        self.breaker = Some(breaker);
        self
    }

    /// Permission to commit: `Ok(None)` without a breaker, `Err` with the
    /// time left while it is open.
    fn try_commit(&self) -> Result<Option<Call>, Duration> {
        match &self.breaker {
            None => Ok(None),
            Some(b) => b.try_call().map(Some).map_err(|rejected| rejected.retry_in),
        }
    }

    /// While the breaker is open: how long until its trial.
    pub fn suspended_for(&self) -> Option<Duration> {
        self.breaker.as_ref()?.open_for()
    }

    /// Whether the running writer answers (false if none runs). Resolves
    /// only once the writer has handled the ping.
    pub async fn ping(&self) -> bool {
        match self.current() {
            Some(addr) => addr.send(Ping).await.is_ok(),
            None => false,
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

    #[cfg(any(test, feature = "bench"))]
    /// Commits everything queued so far through the running writer. Returns
    /// false if no writer is running.
    pub async fn flush(&self) -> bool {
        match self.current() {
            Some(addr) => addr.send(Flush).await.is_ok(),
            None => false,
        }
    }

    /// Runs `job` in a write transaction on the running writer.
    pub async fn exec<R: Send + 'static>(
        &self,
        job: impl FnOnce(&mut SqliteConnection) -> Result<R, StorageError> + Send + 'static,
    ) -> Result<R, StorageError> {
        let addr = self.current().ok_or(StorageError::WriterUnavailable)?;
        addr.send(Exec { job: Box::new(job) })
            .await
            .map_err(|_| StorageError::WriterUnavailable)?
    }

    /// Marks the writer busy with `what` until the guard is dropped, so a
    /// silence during it is not mistaken for a wedge.
    pub fn busy_with(&self, what: &'static str) -> BusyGuard<'_> {
        *self.busy.lock().unwrap_or_else(|p| p.into_inner()) = Some((what, Instant::now()));
        BusyGuard(self)
    }

    /// The long job running now, and for how long.
    pub fn busy(&self) -> Option<(&'static str, Duration)> {
        self.busy
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .map(|(what, since)| (what, since.elapsed()))
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
            uncommitted_rows: self.queue.head().len(),
            committed_through_ms: self.queue.head().view(|h| h.oldest_overall()),
            sealing: self.sealing.status(),
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

/// Clears [`WriterShared::busy_with`] when dropped.
pub struct BusyGuard<'a>(&'a WriterShared);

impl Drop for BusyGuard<'_> {
    fn drop(&mut self) {
        *self.0.busy.lock().unwrap_or_else(|p| p.into_inner()) = None;
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
    /// leaving the rest queued. While the breaker is open nothing is tried
    /// (and the queue's wake-up stays pending, so pushes do not wake the
    /// writer for nothing) unless `force`: shutdown's last attempt.
    fn flush(&mut self, force: bool) {
        let queue = &self.shared.queue;
        if !force && self.shared.suspended_for().is_some() {
            // Sensors keep pushing meanwhile: the overflow policy's drops
            // are announced now, not at the next trial.
            self.report_drops();
            return;
        }
        queue.clear_wake();
        let Some(conn) = self.conn.as_mut() else {
            return;
        };
        while !queue.is_empty() {
            let call = match self.shared.try_commit() {
                Ok(call) => call,
                Err(_) if force => None,
                Err(_) => break,
            };
            let batch = queue.take(self.cfg.batch_size);
            let started = Instant::now();
            let head = queue.head().clone();
            // With sealing switched off, blocks would pile up unsealed: rows then.
            let blocks = self.cfg.seal_interval_secs > 0;
            let result = commit_gated(conn, &self.shared.catalog, &batch, blocks, Some(&head));
            self.shared
                .commit_op
                .record(started.elapsed(), result.is_ok());
            if let Some(call) = call {
                call.finish_after(started.elapsed(), result.is_ok());
            }
            match result {
                Ok((nudged, gate)) => {
                    // Still under the commit gate: the batch moves from the
                    // head to the recent-readings cache (and the table) at
                    // one instant for every reader.
                    remember(&self.shared, &batch, nudged > 0);
                    queue.committed();
                    drop(gate);
                    self.shared.commit_op.add_units(batch.len() as u64);
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
                            "commit of {rows} readings failed: {e}; keeping them queued and retrying (every {} ms, less often once the circuit breaker opens)",
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
        // A writer that stopped mid-pass (a restart) left its chain behind:
        // this one has none running.
        self.shared.sealing.end();
        ctx.run_interval(
            Duration::from_millis(self.cfg.flush_interval_ms),
            |act, _| act.flush(false),
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
        self.flush(false);
    }
}

impl Handler<Ping> for DbWriter {
    type Result = ();

    fn handle(&mut self, _: Ping, _: &mut Context<Self>) {}
}

impl<R: Send + 'static> Handler<Exec<R>> for DbWriter {
    type Result = Result<R, StorageError>;

    fn handle(&mut self, msg: Exec<R>, _: &mut Context<Self>) -> Self::Result {
        if let Some(wait) = self.shared.suspended_for() {
            return Err(StorageError::Suspended {
                retry_in_ms: wait.as_millis() as u64,
            });
        }
        let conn = self.conn.as_mut().ok_or(StorageError::WriterUnavailable)?;
        conn.immediate_transaction(|c| (msg.job)(c))
    }
}

impl Handler<Stop> for DbWriter {
    type Result = ();

    /// Shutdown: commit everything queued (one last attempt even while the
    /// breaker is open), checkpoint the WAL into the main file, then stop.
    fn handle(&mut self, _: Stop, ctx: &mut Context<Self>) {
        self.flush(true);
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

/// Tells the recent-readings cache what a commit stored. A batch with moved
/// timestamps invalidates its series instead (the cache would hold the
/// times as read, not as stored).
fn remember(shared: &WriterShared, batch: &[Reading], nudged: bool) {
    if !shared.recent.tracks_any() {
        return;
    }
    let mut ids: Vec<(*const SeriesKey, i64)> = Vec::new();
    let mut id_of = |key: &Arc<SeriesKey>| {
        let ptr = Arc::as_ptr(key);
        if let Some(&(_, id)) = ids.iter().find(|(p, _)| *p == ptr) {
            return Some(id);
        }
        let id = shared.catalog.lookup(&key.sensor, &key.metric)?.id;
        ids.push((ptr, id));
        Some(id)
    };
    let rows: Vec<(i64, i64, f64)> = batch
        .iter()
        .filter_map(|r| Some((id_of(&r.series)?, r.ts_ms, r.value)))
        .collect();
    if nudged {
        shared.recent.invalidate(rows.iter().map(|r| r.0));
    } else {
        shared.recent.record(rows);
    }
}

/// Writes one batch in one immediate transaction, with its rollups (see
/// [`rollup`]): as head blocks (`chunk::blocks`), readings of hours sealed
/// already as rows. A reading whose (series, timestamp) is stored already
/// is moved forward a millisecond at a time. Returns how many were moved.
#[cfg(test)]
pub(crate) fn commit_batch(
    conn: &mut SqliteConnection,
    catalog: &SeriesCatalog,
    batch: &[Reading],
) -> Result<u64, StorageError> {
    commit_gated(conn, catalog, batch, true, None).map(|(nudged, _)| nudged)
}

/// The gate of a [`Head`] held across a commit, if any.
type Gate<'h> = Option<RwLockWriteGuard<'h, ()>>;

/// [`commit_batch`], taking `head`'s commit gate just before `COMMIT` and
/// returning it held, so the caller can move the batch out of the head
/// before any reader sees the commit (see `storage::head`). Without
/// `blocks` (sealing switched off) every reading is stored as a row.
pub(crate) fn commit_gated<'h>(
    conn: &mut SqliteConnection,
    catalog: &SeriesCatalog,
    batch: &[Reading],
    blocks: bool,
    head: Option<&'h Head>,
) -> Result<(u64, Gate<'h>), StorageError> {
    let mut created = Vec::new();
    let (nudged, gate) = conn.immediate_transaction(|c| {
        created.clear();
        let nudged = insert_batch(c, catalog, batch, blocks, &mut created)?;
        Ok::<_, StorageError>((nudged, head.map(Head::commit_gate)))
    })?;
    for info in created {
        catalog.insert(info);
    }
    Ok((nudged, gate))
}

/// The rows of `batch` with their series ids, creating series as needed
/// inside the current transaction. A batch holds few distinct series;
/// each is resolved once, keyed by the readings' shared `Arc`s, alive for
/// the whole batch.
fn resolve_rows(
    conn: &mut SqliteConnection,
    catalog: &SeriesCatalog,
    batch: &[Reading],
    created: &mut Vec<SeriesInfo>,
) -> Result<Vec<NewReading>, StorageError> {
    let mut rows = Vec::with_capacity(batch.len());
    let mut ids: Vec<(*const SeriesKey, i64)> = Vec::new();
    for r in batch {
        let ptr = Arc::as_ptr(&r.series);
        let id = match ids.iter().find(|(p, _)| *p == ptr) {
            Some(&(_, id)) => id,
            None => {
                let id = series_id(conn, catalog, &r.series, created)?;
                ids.push((ptr, id));
                id
            }
        };
        rows.push(NewReading {
            series_id: id,
            ts: r.ts_ms,
            value: r.value,
        });
    }
    Ok(rows)
}

fn insert_batch(
    conn: &mut SqliteConnection,
    catalog: &SeriesCatalog,
    batch: &[Reading],
    blocks: bool,
    created: &mut Vec<SeriesInfo>,
) -> Result<u64, StorageError> {
    let mut rows = resolve_rows(conn, catalog, batch, created)?;
    let mut bounds = SealedBounds::new(catalog);
    // The common case: every reading newer than anything stored of its
    // series, in time order, none of an hour sealed. It collides with
    // nothing and needs no lookup.
    let mut newest: Vec<(i64, i64, i64)> = Vec::new();
    let mut careful = false;
    for r in &rows {
        let at = match newest.iter().position(|n| n.0 == r.series_id) {
            Some(at) => at,
            None => {
                let stored = newest_stored(conn, catalog, r.series_id)?;
                newest.push((r.series_id, stored, i64::MIN));
                newest.len() - 1
            }
        };
        let n = &mut newest[at];
        careful |= r.ts <= n.1 || r.ts <= n.2 || r.ts < bounds.until(r.series_id);
        n.2 = n.2.max(r.ts);
    }
    let mut nudged = 0;
    if careful {
        let mut chunks = chunk::Probe::default();
        let mut in_blocks = chunk::blocks::BlockProbe::default();
        let mut taken: HashSet<(i64, i64)> = HashSet::with_capacity(rows.len());
        for row in &mut rows {
            let sealed_until = bounds.until(row.series_id);
            let stored = newest
                .iter()
                .find(|n| n.0 == row.series_id)
                .map_or(i64::MAX, |n| n.1);
            let mut step = 0;
            loop {
                let ts = row.ts + step;
                let busy = taken.contains(&(row.series_id, ts))
                    || (ts <= stored
                        && ((ts < sealed_until && chunks.holds(conn, row.series_id, ts)?)
                            || in_blocks.holds(conn, row.series_id, ts)?
                            || row_exists(conn, row.series_id, ts)?));
                if !busy {
                    break;
                }
                if step == MAX_TIMESTAMP_NUDGES {
                    return Err(StorageError::Query(DieselError::RollbackTransaction));
                }
                step += 1;
            }
            nudged += u64::from(step > 0);
            row.ts += step;
            taken.insert((row.series_id, row.ts));
        }
    }
    let (late, live): (Vec<NewReading>, Vec<NewReading>) = rows
        .into_iter()
        .partition(|r| !blocks || r.ts < bounds.until(r.series_id));
    if !late.is_empty() {
        insert_rows(conn, &late)?;
    }
    let live: Vec<(i64, i64, f64)> = live.iter().map(|r| (r.series_id, r.ts, r.value)).collect();
    chunk::blocks::write(conn, &live)?;
    // Rows enter the rollup tiers now; head blocks when their hour is
    // sealed (`chunk::blocks::seal_oldest_hour`), which spares each commit
    // a page of `rollup_open`.
    let rows = late.iter().map(|r| (r.series_id, r.ts, r.value));
    rollup::record(conn, rows.clone())?;
    for (series_id, ts, _) in rows.chain(live.iter().copied()) {
        catalog.note_stored(series_id, ts);
    }
    Ok(nudged)
}

/// The newest timestamp stored of series `series_id` in rows, blocks or
/// chunks (`i64::MIN + 1` when none), looked up once and then kept by the
/// catalog.
fn newest_stored(
    conn: &mut SqliteConnection,
    catalog: &SeriesCatalog,
    series_id: i64,
) -> Result<i64, StorageError> {
    if let Some(ts) = catalog.newest_stored(series_id) {
        return Ok(ts);
    }
    #[derive(QueryableByName)]
    struct Newest {
        #[diesel(sql_type = diesel::sql_types::BigInt)]
        ts: i64,
    }
    let n: Newest = diesel::sql_query(
        "SELECT max(coalesce((SELECT max(ts) FROM readings WHERE series_id = ?1), -9223372036854775807), \
                    coalesce((SELECT max(last_ts) FROM chunks WHERE series_id = ?1), -9223372036854775807), \
                    coalesce((SELECT max(last_ts) FROM head_blocks WHERE series_id = ?1), \
                             -9223372036854775807)) AS ts",
    )
    .bind::<diesel::sql_types::BigInt, _>(series_id)
    .get_result(conn)?;
    catalog.set_newest_stored(series_id, n.ts);
    Ok(n.ts)
}

/// Whether `readings` holds a row at (series, ts).
fn row_exists(conn: &mut SqliteConnection, series_id: i64, ts: i64) -> QueryResult<bool> {
    diesel::select(diesel::dsl::exists(
        readings::table
            .filter(readings::series_id.eq(series_id))
            .filter(readings::ts.eq(ts)),
    ))
    .get_result(conn)
}

/// Where each series' sealed readings end (`SeriesCatalog::sealed_until`),
/// looked up once per series for a batch: few series, many rows.
struct SealedBounds<'c> {
    catalog: &'c SeriesCatalog,
    seen: Vec<(i64, i64)>,
}

impl<'c> SealedBounds<'c> {
    fn new(catalog: &'c SeriesCatalog) -> Self {
        SealedBounds {
            catalog,
            seen: Vec::new(),
        }
    }

    fn until(&mut self, series_id: i64) -> i64 {
        if let Some(&(_, until)) = self.seen.iter().find(|b| b.0 == series_id) {
            return until;
        }
        let until = self.catalog.sealed_until(series_id);
        self.seen.push((series_id, until));
        until
    }
}

/// A row an import inserted, as `RETURNING` gives it back.
#[derive(QueryableByName)]
struct Inserted {
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    series_id: i64,
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    ts: i64,
    #[diesel(sql_type = diesel::sql_types::Double)]
    value: f64,
}

/// Commits `batch` for an import (`vigil import`), in one transaction on
/// the writer's path: series are resolved and created as for live
/// readings and the rollup tiers take in what was inserted. Unlike a live
/// commit, a reading whose series already holds one at the same
/// millisecond is skipped, not moved forward, and the stored one kept, so
/// importing a file twice changes nothing. Returns how many were inserted.
pub fn commit_import(
    conn: &mut SqliteConnection,
    catalog: &SeriesCatalog,
    batch: &[Reading],
) -> Result<u64, StorageError> {
    let mut created = Vec::new();
    let inserted = conn.immediate_transaction(|c| {
        created.clear();
        let mut rows = resolve_rows(c, catalog, batch, &mut created)?;
        // A reading a sealed chunk or a head block already holds is
        // skipped like a stored row.
        let mut probe = chunk::Probe::default();
        let mut blocks = chunk::blocks::BlockProbe::default();
        let mut bounds = SealedBounds::new(catalog);
        let mut keep = Vec::with_capacity(rows.len());
        for r in rows.drain(..) {
            let sealed = r.ts < bounds.until(r.series_id) && probe.holds(c, r.series_id, r.ts)?;
            let stored = newest_stored(c, catalog, r.series_id)?;
            if !sealed && (r.ts > stored || !blocks.holds(c, r.series_id, r.ts)?) {
                keep.push(r);
            }
        }
        let rows = keep;
        // `WHERE true` tells SQLite's parser that ON CONFLICT belongs to
        // the INSERT, not to a join of the SELECT.
        let kept: Vec<Inserted> = diesel::sql_query(
            "INSERT INTO readings (series_id, ts, value) \
             SELECT value ->> 0, value ->> 1, value ->> 2 FROM json_each(?) WHERE true \
             ON CONFLICT (series_id, ts) DO NOTHING \
             RETURNING series_id, ts, value",
        )
        .bind::<diesel::sql_types::Text, _>(rows_json(&rows))
        .load(c)?;
        rollup::record(c, kept.iter().map(|k| (k.series_id, k.ts, k.value)))?;
        for k in &kept {
            catalog.note_stored(k.series_id, k.ts);
        }
        Ok::<_, StorageError>(kept.len() as u64)
    })?;
    for info in created {
        catalog.insert(info);
    }
    Ok(inserted)
}

/// Inserts a batch with one statement: the rows travel as one JSON array
/// bound as a single parameter and expanded by `json_each`, so the statement
/// is the same for every batch size (prepared once, cached by diesel) and
/// the per-row cost is SQLite's, not three bound parameters per row through
/// diesel's bind machinery. `vigil-bench ingest` measured this against
/// multi-row `VALUES` statements of 64 rows: about 15 % more rows per
/// second. Values are written in Rust's shortest round-trip form, which
/// SQLite parses back to the same `f64` (see the tests); the sensor actor
/// has already refused non-finite values, which JSON cannot carry.
fn insert_rows(conn: &mut SqliteConnection, rows: &[NewReading]) -> Result<(), StorageError> {
    diesel::sql_query(
        "INSERT INTO readings (series_id, ts, value) \
         SELECT value ->> 0, value ->> 1, value ->> 2 FROM json_each(?)",
    )
    .bind::<diesel::sql_types::Text, _>(rows_json(rows))
    .execute(conn)?;
    Ok(())
}

/// `rows` as the JSON array [`insert_rows`] binds.
fn rows_json(rows: &[NewReading]) -> String {
    use std::fmt::Write as _;
    let mut json = String::with_capacity(rows.len() * 40 + 2);
    json.push('[');
    for (i, r) in rows.iter().enumerate() {
        if i > 0 {
            json.push(',');
        }
        if r.value.is_finite() {
            // Writing to a String cannot fail.
            let _ = write!(json, "[{},{},{:e}]", r.series_id, r.ts, r.value);
        } else {
            // `null` violates NOT NULL and fails the batch loudly, where
            // `inf` would be malformed JSON and `NaN` a silent NULL.
            let _ = write!(json, "[{},{},null]", r.series_id, r.ts);
        }
    }
    json.push(']');
    json
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
    // A series first seen by the head has its id reserved already: reads
    // and cursors name it by that id.
    let reserved = catalog.reserved(&key.sensor, &key.metric).map(|s| s.id);
    diesel::sql_query(
        "INSERT INTO series (id, sensor, metric, unit) VALUES (?, ?, ?, ?) \
         ON CONFLICT (sensor, metric) DO UPDATE SET unit = excluded.unit",
    )
    .bind::<diesel::sql_types::Nullable<diesel::sql_types::BigInt>, _>(reserved)
    .bind::<diesel::sql_types::Text, _>(&*key.sensor)
    .bind::<diesel::sql_types::Text, _>(&*key.metric)
    .bind::<diesel::sql_types::Text, _>(&*key.unit)
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

    /// Readings stored, in rows, head blocks and chunks.
    fn count(cfg: &StorageConfig) -> i64 {
        let pool = read_pool(cfg).unwrap();
        let mut c = pool.get().unwrap();
        chunk::count_all(&mut c).unwrap() as i64
    }

    /// Every stored reading of series ids 1 to 3, by series and time.
    fn stored(cfg: &StorageConfig) -> Vec<(i64, f64)> {
        let pool = read_pool(cfg).unwrap();
        let mut c = pool.get().unwrap();
        let order = crate::storage::points::Order::Asc;
        (1..=3)
            .flat_map(|id| {
                chunk::points(&mut c, id, i64::MIN, i64::MAX, order, usize::MAX).unwrap()
            })
            .collect()
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
    fn every_row_of_a_batch_is_stored() {
        let (_d, cfg) = setup();
        let mut conn = open_writer(&cfg).unwrap();
        let catalog = SeriesCatalog::default();
        let keys = [key("a", ""), key("b", ""), key("c", "")];
        let n = 3 * 64 + 7;
        let batch: Vec<_> = (0..n)
            .map(|i| Reading {
                series: keys[i % 3].clone(),
                ts_ms: i as i64,
                value: i as f64 / 2.0,
            })
            .collect();
        commit_batch(&mut conn, &catalog, &batch).unwrap();
        assert_eq!(count(&cfg) as usize, n);
        let sum: f64 = stored(&cfg).iter().map(|p| p.1).sum();
        assert_eq!(sum, (0..n).map(|i| i as f64 / 2.0).sum::<f64>());
        assert_eq!(catalog.all().len(), 3);
    }

    /// Every finite value the sensors may give (extremes, subnormals,
    /// random bit patterns) comes back as the same `f64`: through the head
    /// blocks' codec bit for bit, and through the row insert (late readings,
    /// imports), which carries values as JSON text, too, except that SQLite
    /// stores -0.0 as integer 0, equal as a number.
    #[test]
    fn values_round_trip_exactly_through_blocks_and_rows() {
        let (_d, cfg) = setup();
        let mut conn = open_writer(&cfg).unwrap();
        let catalog = SeriesCatalog::default();
        let k = key("m", "");
        let as_rows = key("r", "");
        let max = crate::sensors::actor::MAX_ABS_VALUE;
        let mut values = vec![
            max,
            -max,
            f64::MIN_POSITIVE,
            f64::from_bits(1),
            -f64::from_bits(1),
            0.0,
            -0.0,
            0.1,
            1.0 / 3.0,
            2.225_073_858_507_201e-308,
            123_456_789_012_345_680.0,
        ];
        let mut rng = fastrand::Rng::with_seed(7);
        while values.len() < 50_000 {
            let v = f64::from_bits(rng.u64(..));
            if v.abs() <= max {
                values.push(v);
            }
            values.push(rng.f64() * 100.0 - 50.0);
        }
        for (n, chunk) in values.chunks(1000).enumerate() {
            let batch: Vec<_> = chunk
                .iter()
                .enumerate()
                .map(|(i, v)| Reading {
                    series: k.clone(),
                    ts_ms: (n * 1000 + i) as i64,
                    value: *v,
                })
                .collect();
            assert_eq!(commit_batch(&mut conn, &catalog, &batch).unwrap(), 0);
            let rows: Vec<_> = batch
                .into_iter()
                .map(|r| Reading {
                    series: as_rows.clone(),
                    ..r
                })
                .collect();
            assert_eq!(commit_import(&mut conn, &catalog, &rows).unwrap(), 1000);
        }
        let stored: Vec<f64> = stored(&cfg).iter().map(|p| p.1).collect();
        assert_eq!(stored.len(), 2 * values.len());
        let (blocks, rows) = stored.split_at(values.len());
        for (sent, got) in values.iter().zip(blocks) {
            assert_eq!(
                sent.to_bits(),
                got.to_bits(),
                "{sent:e} came back as {got:e}"
            );
        }
        for (sent, got) in values.iter().zip(rows) {
            let same = sent.to_bits() == got.to_bits() || (*sent == 0.0 && *got == 0.0);
            assert!(same, "{sent:e} came back as {got:e}");
        }
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
        assert_eq!(
            stored(&cfg),
            [(100, 1.0), (101, 2.0), (102, 3.0), (103, 4.0), (200, 5.0)]
        );
    }

    #[test]
    fn live_readings_are_head_blocks_and_rows_once_sealing_is_off() {
        let (_d, cfg) = setup();
        let mut conn = open_writer(&cfg).unwrap();
        let catalog = SeriesCatalog::default();
        let k = key("a", "");
        let batch = |from: i64| -> Vec<Reading> {
            (from..from + 10)
                .map(|ts| Reading {
                    series: k.clone(),
                    ts_ms: ts,
                    value: 1.0,
                })
                .collect()
        };
        commit_batch(&mut conn, &catalog, &batch(0)).unwrap();
        let rows =
            |c: &mut SqliteConnection| -> i64 { readings::table.count().get_result(c).unwrap() };
        assert_eq!(rows(&mut conn), 0);
        assert_eq!(chunk::blocks::count_all(&mut conn).unwrap(), 10);
        commit_gated(&mut conn, &catalog, &batch(10), false, None).unwrap();
        assert_eq!(rows(&mut conn), 10);
        assert_eq!(count(&cfg), 20);
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
