//! The storage lifecycle jobs as the appliance runs them, from the API or on
//! a schedule: retention and optimize go through the `DbWriter` (the
//! messages it handles for them are defined here), a backup runs on the
//! blocking pool from a read snapshot. One job of each kind runs at a time;
//! the last outcome of each is kept for the API, logged, and published on
//! the event bus.
//!
//! Sealing passes (`storage::sealer`) are scheduled here too, and run on
//! the writer like retention.
//!
//! Retention runs as a chain of messages the writer sends itself, one
//! chunk (one short transaction) each, yielding to its thread's runtime
//! between two links: the writer's mailbox and timers are served in
//! between, so ingest flushes interleave with the deletes and the write lock
//! is never held for more than one chunk.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use actix::prelude::*;
use serde::Serialize;
use tokio::sync::oneshot;

use super::StorageError;
use super::chunk::{self, PERIOD_MS};
use super::config::StorageConfig;
use super::maintenance::{self, BackupReport, MaintenanceConfig, OptimizeReport};
use super::retention::{RetentionConfig, RetentionJob, RetentionReport};
use super::sealer::seal_before;
use super::writer::{DbWriter, WriterShared};
use crate::supervisor::{ChildHandle, ChildSpec, LifecycleReporter, Stop};
use crate::vocab::bus::{Bus, Event};
use crate::vocab::clock::{now_ms, rfc3339};

/// Asks the writer for a retention run at `now_ms`; replies when it ends.
#[derive(Message)]
#[rtype(result = "Result<RetentionReport, StorageError>")]
pub struct RunRetention {
    pub now_ms: i64,
    pub config: RetentionConfig,
}

/// One link of a retention run's chain (see the module docs).
struct RetentionStep {
    job: RetentionJob,
    reply: oneshot::Sender<Result<RetentionReport, StorageError>>,
}

impl Message for RetentionStep {
    type Result = ();
}

impl Handler<RunRetention> for DbWriter {
    type Result = ResponseFuture<Result<RetentionReport, StorageError>>;

    fn handle(&mut self, msg: RunRetention, ctx: &mut Context<Self>) -> Self::Result {
        let (_, _, shared) = self.parts();
        let series = shared.catalog.all().iter().map(|s| s.id).collect();
        let (reply, rx) = oneshot::channel();
        ctx.notify(RetentionStep {
            job: RetentionJob::new(msg.now_ms, &msg.config, series),
            reply,
        });
        // If the writer stops mid-run, the chain is dropped with its reply.
        Box::pin(async move { rx.await.unwrap_or(Err(StorageError::WriterUnavailable)) })
    }
}

impl Handler<RetentionStep> for DbWriter {
    type Result = ();

    fn handle(&mut self, mut msg: RetentionStep, ctx: &mut Context<Self>) {
        let (_, conn, shared) = self.parts();
        let Some(conn) = conn else {
            let _ = msg.reply.send(Err(StorageError::WriterUnavailable));
            return;
        };
        let stepped = msg.job.step(conn);
        for (series_id, below) in msg.job.take_raw_cuts() {
            shared.recent.forget_series_before(series_id, below);
        }
        match stepped {
            // Yield to the runtime (timers, the mailbox) before the next
            // chunk, so that ingest flushes and shutdown get their turn.
            Ok(true) => next_link(self, ctx, msg),
            Ok(false) => {
                let report = msg.job.finish(conn);
                let _ = msg.reply.send(Ok(report));
            }
            Err(e) => {
                let _ = msg.reply.send(Err(e));
            }
        }
    }
}

/// Sends the writer the next link of a chain (a retention run, a sealing
/// pass) once its runtime has had a turn: timers, ingest flushes and the
/// mailbox are served between two links.
fn next_link<M>(writer: &DbWriter, ctx: &mut Context<DbWriter>, msg: M)
where
    M: Message<Result = ()> + Send + 'static,
    DbWriter: Handler<M>,
{
    ctx.spawn(
        tokio::task::yield_now()
            .into_actor(writer)
            .map(move |(), _, ctx| ctx.notify(msg)),
    );
}

/// Starts a sealing pass over every known series (the scheduler sends
/// it); ignored while one runs.
#[derive(Message)]
#[rtype(result = "()")]
pub struct SealPass;

/// One link of a pass: the series left, and the boundary below which ended
/// hours are sealed. A pass seals the head blocks' ended hours first, all
/// series of an hour at a time (`chunk::blocks`), oldest first from
/// `blocks_from`, then each series' ended hours of rows, oldest first from
/// `series_from`. What cannot be sealed for damage (a block, or a chunk
/// the readings merge into) is passed over for the rest of the pass, so
/// that it holds back nothing else, and tried again by the next; another
/// failure of the blocks, or one that may pass (a full disk, a lock), ends
/// the pass; another failure of a series' rows passes over that series.
#[derive(Message)]
#[rtype(result = "()")]
struct SealStep {
    blocks_done: bool,
    blocks_from: i64,
    series: VecDeque<i64>,
    /// Where the front series' next period of rows is looked for.
    series_from: i64,
    before: i64,
    /// Whether a seal failed in this pass.
    failed: bool,
}

impl Handler<SealPass> for DbWriter {
    type Result = ();

    fn handle(&mut self, _: SealPass, ctx: &mut Context<Self>) {
        let (cfg, conn, shared) = self.parts();
        if conn.is_none() || shared.suspended_for().is_some() || !shared.sealing.begin() {
            return;
        }
        let before = seal_before(now_ms(), cfg.seal_delay_mins);
        let series = shared.catalog.all().iter().map(|s| s.id).collect();
        ctx.notify(SealStep {
            blocks_done: false,
            blocks_from: i64::MIN,
            series,
            series_from: i64::MIN,
            before,
            failed: false,
        });
    }
}

impl Handler<SealStep> for DbWriter {
    type Result = ();

    fn handle(&mut self, mut msg: SealStep, ctx: &mut Context<Self>) {
        let (_, conn, shared) = self.parts();
        let sealing = &shared.sealing;
        let Some(conn) = conn else {
            sealing.end();
            return;
        };
        // The breaker is open: the database is failing; sealing waits for
        // the next pass rather than add to the trouble.
        if shared.suspended_for().is_some() {
            sealing.end();
            return;
        }
        let at = || rfc3339(now_ms());
        if !msg.blocks_done {
            match chunk::blocks::seal_oldest_hour(conn, msg.blocks_from, msg.before) {
                Ok(Some(sealed)) => {
                    let until = sealed.start_ts.saturating_add(PERIOD_MS);
                    for &id in &sealed.series {
                        shared.catalog.mark_sealed(id, until);
                    }
                    sealing.sealed(sealed.series.len() as u64, sealed.moved);
                    for (id, e) in &sealed.damaged {
                        msg.failed = true;
                        if sealing.failed(e.clone(), at()) {
                            log::error!(
                                "series {id}: a head block cannot be sealed: {e}; its hour \
                                 stays unsealed (tried again at every pass), later hours are sealed"
                            );
                        }
                    }
                    msg.blocks_from = until;
                }
                Ok(None) => msg.blocks_done = true,
                Err(e) => {
                    if sealing.failed(e.to_string(), at()) {
                        log::warn!(
                            "sealing the head blocks failed: {e}; trying again at the next pass"
                        );
                    }
                    sealing.end();
                    return;
                }
            }
            next_link(self, ctx, msg);
            return;
        }
        let Some(&id) = msg.series.front() else {
            sealing.pass_done(!msg.failed, at());
            sealing.end();
            return;
        };
        match chunk::seal_oldest(conn, id, msg.series_from, msg.before) {
            Ok(Some(sealed)) => {
                let until = sealed.start_ts.saturating_add(PERIOD_MS);
                match &sealed.damaged {
                    None => {
                        shared.catalog.mark_sealed(id, until);
                        sealing.sealed(1, sealed.rows);
                    }
                    Some(e) => {
                        msg.failed = true;
                        if sealing.failed(e.clone(), at()) {
                            log::error!(
                                "series {id}: rows cannot be merged into their hour's chunk: {e}; \
                                 they stay rows (tried again at every pass), later hours are sealed"
                            );
                        }
                    }
                }
                msg.series_from = until;
            }
            Ok(None) => {
                msg.series.pop_front();
                msg.series_from = i64::MIN;
            }
            Err(e) => {
                let first = sealing.failed(e.to_string(), at());
                if e.is_transient() {
                    if first {
                        log::warn!(
                            "sealing readings of series {id} failed: {e}; trying again at the next pass"
                        );
                    }
                    sealing.end();
                    return;
                }
                if first {
                    log::error!(
                        "sealing readings of series {id} failed: {e}; the other series are sealed, \
                         it is tried again at the next pass"
                    );
                }
                msg.failed = true;
                msg.series.pop_front();
                msg.series_from = i64::MIN;
            }
        }
        next_link(self, ctx, msg);
    }
}

/// Asks the writer to optimize the database between two commits.
#[derive(Message)]
#[rtype(result = "Result<OptimizeReport, StorageError>")]
pub struct RunOptimize {
    pub full: bool,
    pub now_ms: i64,
}

impl Handler<RunOptimize> for DbWriter {
    type Result = Result<OptimizeReport, StorageError>;

    fn handle(&mut self, msg: RunOptimize, _: &mut Context<Self>) -> Self::Result {
        let (cfg, conn, shared) = self.parts();
        let path = cfg.path.clone();
        let conn = conn.ok_or(StorageError::WriterUnavailable)?;
        let _busy = shared.busy_with(if msg.full {
            "full optimize"
        } else {
            "optimize"
        });
        maintenance::optimize(conn, &path, msg.full, msg.now_ms)
    }
}

/// How a job last ended.
#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum Outcome<T> {
    Done(T),
    Failed { at: String, error: String },
}

#[derive(Default)]
struct Last {
    retention: Option<Outcome<RetentionReport>>,
    optimize: Option<Outcome<OptimizeReport>>,
    backup: Option<Outcome<BackupReport>>,
}

/// The jobs' state as the API shows it.
#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct JobsStatus {
    pub retention: Option<Outcome<RetentionReport>>,
    pub optimize: Option<Outcome<OptimizeReport>>,
    pub backup: Option<Outcome<BackupReport>>,
    /// Seconds between scheduled runs (0: only when asked).
    pub retention_every_s: u64,
    pub optimize_every_s: u64,
    pub backup_every_s: u64,
}

/// Runs the storage jobs; shared by the API and the [`Scheduler`].
pub struct Jobs {
    storage: StorageConfig,
    /// `[retention]` and `[maintenance]` in force; a reload changes them
    /// with [`Jobs::set_config`].
    retention: std::sync::RwLock<RetentionConfig>,
    maintenance: std::sync::RwLock<MaintenanceConfig>,
    writer: Arc<WriterShared>,
    bus: Bus,
    retention_running: tokio::sync::Mutex<()>,
    optimize_running: tokio::sync::Mutex<()>,
    backup_running: tokio::sync::Mutex<()>,
    last: Mutex<Last>,
}

/// The config sections the jobs run from.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct JobsConfig {
    pub storage: StorageConfig,
    pub retention: RetentionConfig,
    pub maintenance: MaintenanceConfig,
}

impl Jobs {
    pub fn new(config: JobsConfig, writer: Arc<WriterShared>, bus: Bus) -> Jobs {
        Jobs {
            storage: config.storage,
            retention: std::sync::RwLock::new(config.retention),
            maintenance: std::sync::RwLock::new(config.maintenance),
            writer,
            bus,
            retention_running: tokio::sync::Mutex::new(()),
            optimize_running: tokio::sync::Mutex::new(()),
            backup_running: tokio::sync::Mutex::new(()),
            last: Mutex::new(Last::default()),
        }
    }

    fn writer(&self) -> Result<Addr<DbWriter>, StorageError> {
        self.writer.current().ok_or(StorageError::WriterUnavailable)
    }

    fn last(&self) -> std::sync::MutexGuard<'_, Last> {
        self.last.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn outcome<T: Clone>(
        &self,
        job: &str,
        result: &Result<T, StorageError>,
        summary: impl Fn(&T) -> String,
    ) -> Outcome<T> {
        let (ok, text, outcome) = match result {
            Ok(report) => (true, summary(report), Outcome::Done(report.clone())),
            Err(e) => (
                false,
                e.to_string(),
                Outcome::Failed {
                    at: rfc3339(now_ms()),
                    error: e.to_string(),
                },
            ),
        };
        if ok {
            log::info!("{job}: {text}");
        } else {
            log::error!("{job} failed: {text}");
        }
        self.bus.event(Event::Maintenance {
            job: job.to_owned(),
            ok,
            summary: text,
        });
        outcome
    }

    /// Deletes what is past each tier's horizon at `now_ms`, then enforces
    /// the size cap, through the writer.
    pub async fn retention(&self, now_ms: i64) -> Result<RetentionReport, StorageError> {
        let _one_at_a_time = self.retention_running.lock().await;
        let result = match self.writer() {
            Ok(addr) => addr
                .send(RunRetention {
                    now_ms,
                    config: self.retention_config(),
                })
                .await
                .unwrap_or(Err(StorageError::WriterUnavailable)),
            Err(e) => Err(e),
        };
        if let Ok(Some(cap)) = result.as_ref().map(|r| r.cap.as_ref()) {
            log::warn!(
                "database over retention.max_db_mb ({} MiB): {} bytes in use; pruned {} raw readings; now {} bytes{}",
                cap.cap_bytes >> 20,
                cap.used_bytes_before,
                cap.pruned_raw_rows,
                cap.used_bytes_after,
                if cap.met {
                    ""
                } else {
                    " (still over: the newest hour of readings and the rollups exceed the cap)"
                }
            );
            self.bus.event(Event::StorageCap {
                cap_bytes: cap.cap_bytes,
                used_bytes_before: cap.used_bytes_before,
                used_bytes_after: cap.used_bytes_after,
                pruned_raw_rows: cap.pruned_raw_rows,
                met: cap.met,
            });
        }
        let outcome = self.outcome("retention", &result, |r| {
            let d = &r.deleted;
            format!(
                "deleted {} raw readings and {}/{}/{} minute/hour/day rollups in {} transactions (longest {:.1} ms)",
                d.raw, d.minute, d.hour, d.day, r.transactions, r.longest_lock_ms
            )
        });
        self.last().retention = Some(outcome);
        result
    }

    /// Asks the writer for a sealing pass (`storage::sealer`); one that is
    /// running already goes on instead.
    pub fn seal(&self) {
        if let Ok(addr) = self.writer() {
            addr.do_send(SealPass);
        }
    }

    /// Optimizes the database on the writer's connection, between commits.
    pub async fn optimize(&self, full: bool, now_ms: i64) -> Result<OptimizeReport, StorageError> {
        let _one_at_a_time = self.optimize_running.lock().await;
        let result = match self.writer() {
            Ok(addr) => addr
                .send(RunOptimize { full, now_ms })
                .await
                .unwrap_or(Err(StorageError::WriterUnavailable)),
            Err(e) => Err(e),
        };
        let outcome = self.outcome("optimize", &result, |r| {
            format!(
                "{}file {} -> {} bytes, WAL {} -> {} bytes, free pages {} -> {}",
                if r.full { "full: " } else { "" },
                r.before.db_bytes,
                r.after.db_bytes,
                r.before.wal_bytes,
                r.after.wal_bytes,
                r.before.freelist_count,
                r.after.freelist_count
            )
        });
        self.last().optimize = Some(outcome);
        result
    }

    /// Writes a backup into the configured directory and prunes old ones.
    pub async fn backup(&self, now_ms: i64) -> Result<BackupReport, StorageError> {
        let _one_at_a_time = self.backup_running.lock().await;
        let db = self.storage.path.clone();
        let maint = self.maintenance_config();
        let (dir, create) = maint.backup_dir_for(&db);
        let keep = maint.backup_keep;
        let busy = self.storage.busy_timeout_ms;
        let result = tokio::task::spawn_blocking(move || {
            maintenance::backup(&db, &dir, create, keep, now_ms, busy)
        })
        .await
        .unwrap_or_else(|e| {
            Err(StorageError::Io {
                what: "backup task".into(),
                source: std::io::Error::other(e.to_string()),
            })
        });
        let outcome = self.outcome("backup", &result, |r| {
            format!("{} ({} bytes, {} kept)", r.path, r.bytes, r.kept)
        });
        self.last().backup = Some(outcome);
        result
    }

    pub fn status(&self) -> JobsStatus {
        let last = self.last();
        let (retention, maint) = (self.retention_config(), self.maintenance_config());
        JobsStatus {
            retention: last.retention.clone(),
            optimize: last.optimize.clone(),
            backup: last.backup.clone(),
            retention_every_s: retention.interval_secs,
            optimize_every_s: maint.optimize_interval_secs,
            backup_every_s: maint.backup_interval_secs,
        }
    }

    /// The `[retention]` section in force.
    pub fn retention_config(&self) -> RetentionConfig {
        self.retention
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The `[maintenance]` section in force.
    pub fn maintenance_config(&self) -> MaintenanceConfig {
        self.maintenance
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Applies new `[retention]` and `[maintenance]` sections from the next
    /// job on (a reload). Returns whether a schedule changed, in which case
    /// the [`Scheduler`] must be restarted to follow it.
    pub fn set_config(&self, retention: RetentionConfig, maintenance: MaintenanceConfig) -> bool {
        let before = self.status();
        *self.retention.write().unwrap_or_else(|p| p.into_inner()) = retention;
        *self.maintenance.write().unwrap_or_else(|p| p.into_inner()) = maintenance;
        let after = self.status();
        (
            before.retention_every_s,
            before.optimize_every_s,
            before.backup_every_s,
        ) != (
            after.retention_every_s,
            after.optimize_every_s,
            after.backup_every_s,
        )
    }
}

/// Runs the jobs on their configured schedules. A supervised child; a job
/// in progress when it stops is abandoned by it (the writer still finishes
/// the transaction it is in).
pub struct Scheduler {
    jobs: Arc<Jobs>,
    reporter: LifecycleReporter,
}

impl Scheduler {
    pub fn new(jobs: Arc<Jobs>, reporter: LifecycleReporter) -> Scheduler {
        Scheduler { jobs, reporter }
    }

    fn every<F, Fut>(&self, ctx: &mut Context<Self>, secs: u64, job: F)
    where
        F: Fn(Arc<Jobs>) -> Fut + 'static,
        Fut: std::future::Future<Output = ()> + 'static,
    {
        if secs == 0 {
            return;
        }
        ctx.run_interval(Duration::from_secs(secs), move |act, ctx| {
            ctx.spawn(job(act.jobs.clone()).into_actor(act));
        });
    }
}

impl Actor for Scheduler {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        // Failures are logged, kept for the API and published by `Jobs`.
        let schedule = self.jobs.status();
        self.every(ctx, schedule.retention_every_s, |jobs| async move {
            let _ = jobs.retention(now_ms()).await;
        });
        self.every(ctx, schedule.optimize_every_s, |jobs| async move {
            let _ = jobs.optimize(false, now_ms()).await;
        });
        self.every(ctx, schedule.backup_every_s, |jobs| async move {
            let _ = jobs.backup(now_ms()).await;
        });
        self.every(
            ctx,
            self.jobs.storage.seal_interval_secs,
            |jobs| async move {
                jobs.seal();
            },
        );
        self.reporter.started();
    }

    fn stopped(&mut self, _: &mut Context<Self>) {
        self.reporter.stopped();
    }
}

impl Handler<Stop> for Scheduler {
    type Result = ();

    fn handle(&mut self, _: Stop, ctx: &mut Context<Self>) {
        ctx.stop();
    }
}

/// The scheduler as a child of a supervisor.
/// The scheduler's name in the supervision tree.
pub const SCHEDULER_CHILD: &str = "maintenance";

pub fn scheduler_child(jobs: Arc<Jobs>) -> ChildSpec {
    ChildSpec::new(SCHEDULER_CHILD, "maintenance", false, move |reporter| {
        let addr = Scheduler::new(jobs.clone(), reporter).start();
        ChildHandle {
            stop: addr.recipient(),
            supervisor: None,
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::catalog::SeriesCatalog;
    use crate::storage::queue::IngestQueue;
    use crate::storage::rollup::{DAY_MS, MINUTE_MS};
    use crate::storage::writer::commit_import;
    use crate::storage::{open_writer, prepare};
    use crate::supervisor::ChildEvent;
    use crate::vocab::reading::{Reading, SeriesKey};

    /// Stands in for a supervisor: takes lifecycle events and ignores them.
    struct Sink;
    impl Actor for Sink {
        type Context = Context<Self>;
    }
    impl Handler<ChildEvent> for Sink {
        type Result = ();
        fn handle(&mut self, _: ChildEvent, _: &mut Context<Self>) {}
    }

    fn count(conn: &mut diesel::SqliteConnection, sql: &str) -> i64 {
        use diesel::prelude::*;
        #[derive(QueryableByName)]
        struct N {
            #[diesel(sql_type = diesel::sql_types::BigInt)]
            n: i64,
        }
        diesel::sql_query(sql).get_result::<N>(conn).unwrap().n
    }

    #[actix_rt::test]
    async fn retention_runs_in_chunks_through_the_writer_while_ingestion_continues() {
        let dir = tempfile::tempdir().unwrap();
        let mut config = JobsConfig::default();
        config.storage.path = dir.path().join("j.db");
        config.storage.batch_size = 1;
        config.retention.chunk_rows = 200;
        config.retention.max_db_mb = 0;
        let st = config.storage.clone();
        prepare(&st).unwrap();

        // A hundred thousand readings a second apart, 86,400 of them older
        // than the raw horizon, stored before the writer starts.
        let now = crate::vocab::clock::now_ms();
        let horizon = now - i64::from(config.retention.raw_days) * DAY_MS;
        let key = Arc::new(SeriesKey {
            sensor: "s".into(),
            metric: "v".into(),
            unit: "".into(),
        });
        {
            let mut conn = open_writer(&st).unwrap();
            let catalog = SeriesCatalog::default();
            let old: Vec<_> = (0..100_000)
                .map(|i| Reading {
                    series: key.clone(),
                    ts_ms: horizon - DAY_MS + i * 1000,
                    value: 1.0,
                })
                .collect();
            // As rows, as imports and earlier releases store them.
            commit_import(&mut conn, &catalog, &old).unwrap();
        }
        let catalog = {
            let mut conn = open_writer(&st).unwrap();
            SeriesCatalog::load(&mut conn).unwrap()
        };
        let queue = Arc::new(IngestQueue::new(
            st.queue_capacity,
            st.overflow,
            st.batch_size,
        ));
        let bus = Bus::new();
        let shared = Arc::new(WriterShared::new(
            queue.clone(),
            Arc::new(catalog),
            bus.clone(),
            &crate::perf::Perf::new(100),
            Arc::new(crate::storage::recent::RecentCache::new(1001)),
        ));
        let arbiter = Arbiter::new();
        let sink = Sink.start().recipient();
        let writer = {
            let (shared, st) = (shared.clone(), st.clone());
            DbWriter::start_in_arbiter(&arbiter.handle(), move |_| {
                DbWriter::new(st, shared, LifecycleReporter::new(0, 1, sink))
            })
        };
        let jobs = Jobs::new(config.clone(), shared.clone(), bus.clone());
        let mut events = bus.subscribe_events();

        // A producer pushes a fresh reading every millisecond (a sensor at
        // 1 kHz) until retention has answered.
        let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let producer = {
            let (queue, done, key) = (queue.clone(), done.clone(), key.clone());
            actix_rt::spawn(async move {
                let mut pushed = 0i64;
                while !done.load(std::sync::atomic::Ordering::SeqCst) || pushed < 50 {
                    queue.push(vec![Reading {
                        series: key.clone(),
                        ts_ms: now + pushed,
                        value: 2.0,
                    }]);
                    pushed += 1;
                    actix_rt::time::sleep(std::time::Duration::from_millis(1)).await;
                }
                pushed
            })
        };
        while shared.status().committed_rows == 0 {
            tokio::task::yield_now().await;
        }
        let committed_at_start = shared.status().committed_batches;
        let report = jobs.retention(now).await.unwrap();
        let committed_at_end = shared.status().committed_batches;
        done.store(true, std::sync::atomic::Ordering::SeqCst);
        let pushed = producer.await.unwrap();
        assert!(shared.flush().await);

        // Everything past the horizon went, in chunks of at most 200 rows.
        let past = (horizon - (horizon - DAY_MS)).div_euclid(1000) as u64;
        assert_eq!(report.deleted.raw, past, "{report:?}");
        assert!(report.transactions >= past.div_ceil(200), "{report:?}");
        assert!(
            report.deleted.minute == 0 && report.deleted.day == 0,
            "{report:?}"
        );
        // Commits went on while the run was in progress.
        assert!(
            committed_at_end > committed_at_start,
            "no ingest commit between {committed_at_start} and {committed_at_end}"
        );
        // Ingestion lost nothing.
        let s = shared.status();
        assert_eq!(s.committed_rows, pushed as u64);
        assert_eq!((s.queue.dropped, s.queue.len, s.failed_commits), (0, 0, 0));
        let mut conn = open_writer(&st).unwrap();
        assert_eq!(
            count(
                &mut conn,
                &format!("SELECT count(*) AS n FROM readings WHERE ts < {horizon}")
            ),
            0
        );
        assert_eq!(
            count(&mut conn, "SELECT count(*) AS n FROM readings"),
            100_000 - past as i64
        );
        // What the writer committed meanwhile is in head blocks.
        assert_eq!(
            crate::storage::chunk::blocks::count_all(&mut conn).unwrap(),
            pushed
        );
        // Rollups keep the deleted history (the head blocks' readings
        // enter them when their hour is sealed).
        assert_eq!(
            count(
                &mut conn,
                "SELECT (SELECT sum(count) FROM rollup_minute) \
                 + (SELECT coalesce(sum(count), 0) FROM rollup_open WHERE tier = 1) AS n"
            ),
            100_000
        );
        assert!(
            count(
                &mut conn,
                &format!(
                    "SELECT count(*) AS n FROM rollup_minute WHERE bucket < {}",
                    horizon - MINUTE_MS
                )
            ) > 0
        );

        // The run was reported on the bus and in the status.
        let ev = events.recv().await.unwrap();
        assert!(
            matches!(&ev, Event::Maintenance { job, ok: true, .. } if job == "retention"),
            "{ev:?}"
        );
        assert!(matches!(jobs.status().retention, Some(Outcome::Done(_))));

        writer.send(Stop).await.unwrap();
        arbiter.stop();
    }

    #[actix_rt::test]
    async fn jobs_fail_cleanly_without_a_writer() {
        let dir = tempfile::tempdir().unwrap();
        let mut config = JobsConfig::default();
        config.storage.path = dir.path().join("n.db");
        prepare(&config.storage).unwrap();
        let st = &config.storage;
        let queue = Arc::new(IngestQueue::new(
            st.queue_capacity,
            st.overflow,
            st.batch_size,
        ));
        let shared = Arc::new(WriterShared::new(
            queue,
            Arc::new(SeriesCatalog::default()),
            Bus::new(),
            &crate::perf::Perf::new(100),
            Arc::new(crate::storage::recent::RecentCache::new(1001)),
        ));
        let jobs = Jobs::new(config.clone(), shared, Bus::new());
        assert!(matches!(
            jobs.retention(0).await,
            Err(StorageError::WriterUnavailable)
        ));
        assert!(matches!(
            jobs.optimize(false, 0).await,
            Err(StorageError::WriterUnavailable)
        ));
        assert!(matches!(
            jobs.status().optimize,
            Some(Outcome::Failed { .. })
        ));
        // A backup needs no writer.
        let b = jobs.backup(1_000).await.unwrap();
        assert!(
            b.path
                .starts_with(&dir.path().join("backups").display().to_string()),
            "{b:?}"
        );
    }
}
