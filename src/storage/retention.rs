//! Tiered retention and the size cap: which stored rows are past their
//! tier's horizon, and the job that deletes them in small transactions.
//!
//! Each tier keeps its rows for its own number of days: raw readings (rows
//! and sealed chunks, cut exactly at the horizon) a week,
//! minute rollups a month, hour rollups a quarter, day rollups five years by
//! default. A rollup row goes once its whole period is past the horizon. When
//! the database is larger than `max_db_mb`, the oldest raw readings go
//! earlier, an hour at a time, until it is back under the cap.
//!
//! [`RetentionJob`] is a plain state machine over a connection: each
//! [`RetentionJob::step`] runs at most one write transaction deleting at most
//! `chunk_rows` rows, so whoever drives it (the `DbWriter`, between its
//! ingest commits) never holds the write lock for long. It records the
//! longest transaction it ran.

use std::collections::VecDeque;
use std::time::Instant;

use diesel::connection::SimpleConnection;
use diesel::prelude::*;
use diesel::sql_types::BigInt;
use serde::{Deserialize, Serialize};

use super::StorageError;
use super::chunk;
use super::maintenance::{PageFigures, RELEASE_PAGES_PER_STEP, page_figures};
use super::rollup::{DAY_MS, HOUR_MS, Tier};
use crate::vocab::check::{ConfigError, positive};
use crate::vocab::clock::rfc3339;

/// When pruning for the cap, the newest raw readings are always kept: the
/// readings API should still show the present.
pub const CAP_KEEPS_RAW_MS: i64 = HOUR_MS;
/// Cap pruning moves the raw horizon forward by this much at a time.
pub const CAP_STEP_MS: i64 = HOUR_MS;
/// Cap pruning stops once the database is at most this fraction of the
/// cap, so that it is not back over the cap a few commits later.
pub const CAP_LOW_WATER: f64 = 0.9;

/// `[retention]`: how long each tier is kept, and the size cap.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct RetentionConfig {
    /// Days raw readings are kept.
    pub raw_days: u32,
    /// Days minute rollups are kept.
    pub minute_rollups_days: u32,
    /// Days hour rollups are kept.
    pub hour_rollups_days: u32,
    /// Days day rollups are kept.
    pub day_rollups_days: u32,
    /// Database size cap in MiB; 0 disables it.
    pub max_db_mb: u64,
    /// Seconds between retention runs; 0 runs it only when asked.
    pub interval_secs: u64,
    /// Rows deleted per write transaction.
    pub chunk_rows: u32,
}

impl Default for RetentionConfig {
    fn default() -> Self {
        RetentionConfig {
            raw_days: 7,
            minute_rollups_days: 30,
            hour_rollups_days: 90,
            day_rollups_days: 1825,
            max_db_mb: 1024,
            interval_secs: 3600,
            chunk_rows: 5000,
        }
    }
}

impl RetentionConfig {
    pub fn validate(&self) -> Result<(), ConfigError> {
        let tiers = [
            ("retention.raw_days", self.raw_days),
            ("retention.minute_rollups_days", self.minute_rollups_days),
            ("retention.hour_rollups_days", self.hour_rollups_days),
            ("retention.day_rollups_days", self.day_rollups_days),
        ];
        for (key, days) in tiers {
            positive(key, u64::from(days))?;
        }
        for pair in tiers.windows(2) {
            let ((finer, f), (coarser, c)) = (pair[0], pair[1]);
            if c < f {
                return Err(ConfigError::invalid(
                    coarser,
                    format!(
                        "{c} is shorter than {finer} ({f}); a coarser tier must be kept at least as long"
                    ),
                ));
            }
        }
        positive("retention.chunk_rows", u64::from(self.chunk_rows))?;
        Ok(())
    }

    /// Days a tier is kept.
    pub fn days(&self, tier: Tier) -> u32 {
        match tier {
            Tier::Raw => self.raw_days,
            Tier::Minute => self.minute_rollups_days,
            Tier::Hour => self.hour_rollups_days,
            Tier::Day => self.day_rollups_days,
        }
    }

    /// The cap in bytes, if any.
    pub fn cap_bytes(&self) -> Option<u64> {
        (self.max_db_mb > 0).then(|| self.max_db_mb.saturating_mul(1024 * 1024))
    }
}

/// The instant before which a tier's data is past its horizon.
pub fn horizon(now_ms: i64, days: u32) -> i64 {
    now_ms - i64::from(days) * DAY_MS
}

/// The first key (`ts` or `bucket`) a tier keeps, given its horizon: raw
/// readings at or after it, rollup periods that end after it.
pub fn keep_from(tier: Tier, horizon: i64) -> i64 {
    horizon - tier.width_ms() + 1
}

/// Where cap pruning cuts next: an hour past the oldest raw reading, but
/// never into the newest hour. `None` when nothing more may go.
pub fn cap_cut(oldest_raw: Option<i64>, now_ms: i64) -> Option<i64> {
    let floor = now_ms - CAP_KEEPS_RAW_MS;
    let oldest = oldest_raw?;
    (oldest < floor).then(|| (oldest + CAP_STEP_MS).min(floor))
}

/// Rows deleted, per tier.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, schemars::JsonSchema)]
pub struct TierCounts {
    pub raw: u64,
    pub minute: u64,
    pub hour: u64,
    pub day: u64,
}

impl TierCounts {
    fn add(&mut self, tier: Tier, n: u64) {
        match tier {
            Tier::Raw => self.raw += n,
            Tier::Minute => self.minute += n,
            Tier::Hour => self.hour += n,
            Tier::Day => self.day += n,
        }
    }
}

/// What the cap did, when the database was over it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, schemars::JsonSchema)]
pub struct CapReport {
    pub cap_bytes: u64,
    /// Bytes in use (pages minus free pages) when the cap was found exceeded.
    pub used_bytes_before: u64,
    pub used_bytes_after: u64,
    /// Raw readings deleted for the cap, beyond the tier horizons.
    pub pruned_raw_rows: u64,
    /// The oldest raw reading left, if any.
    pub raw_kept_from: Option<String>,
    /// Whether the database ended at or under the cap. False when even the
    /// newest hour of raw readings plus the rollups exceed it.
    pub met: bool,
}

/// What one retention run did.
#[derive(Debug, Clone, Default, PartialEq, Serialize, schemars::JsonSchema)]
pub struct RetentionReport {
    /// The run's notion of now.
    pub now: String,
    /// Per tier, the instant before which data was deleted.
    pub horizons: Vec<(Tier, String)>,
    /// Rows deleted because they were past their tier's horizon.
    pub deleted: TierCounts,
    /// Present when the database was over `max_db_mb`.
    pub cap: Option<CapReport>,
    /// Free pages returned to the file system (only when over the cap).
    pub released_pages: u64,
    /// Write transactions run; none deleted more than `chunk_rows` rows.
    pub transactions: u64,
    /// The longest of those transactions, i.e. the longest time ingestion
    /// could have waited for the write lock because of this run (an upper
    /// bound: a WAL checkpoint after a commit is counted, though it runs
    /// after the lock is released).
    pub longest_lock_ms: f64,
    /// The longest of the transactions that released free pages.
    pub longest_release_ms: f64,
    pub took_ms: f64,
    pub db_after: Option<PageFigures>,
}

#[derive(Debug, Clone, Copy)]
struct Target {
    tier: Tier,
    series_id: i64,
    /// Delete keys below this.
    below: i64,
    for_cap: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Tiers,
    Cap,
    Release,
    Done,
}

/// A retention run in progress; see the module docs.
pub struct RetentionJob {
    now_ms: i64,
    chunk_rows: u32,
    cap_bytes: Option<u64>,
    series: Vec<i64>,
    queue: VecDeque<Target>,
    phase: Phase,
    pruning_for_cap: bool,
    started: Instant,
    report: RetentionReport,
    /// Raw readings of (series, below ts) wholly deleted since last taken.
    raw_cuts: Vec<(i64, i64)>,
}

#[derive(QueryableByName)]
struct Key {
    #[diesel(sql_type = BigInt)]
    k: i64,
}

/// Deletes at most `limit` rows of one series with keys below `below`, in
/// one immediate transaction. Returns the rows deleted and whether more
/// remain.
pub fn delete_chunk(
    conn: &mut SqliteConnection,
    tier: Tier,
    series_id: i64,
    below: i64,
    limit: u32,
) -> Result<(u64, bool), StorageError> {
    let (table, col) = (tier.table(), tier.time_column());
    conn.immediate_transaction(|c| {
        // The key `limit` rows in: everything before it is exactly one chunk.
        let boundary = diesel::sql_query(format!(
            "SELECT {col} AS k FROM {table} WHERE series_id = ? AND {col} < ? \
             ORDER BY {col} LIMIT 1 OFFSET ?"
        ))
        .bind::<BigInt, _>(series_id)
        .bind::<BigInt, _>(below)
        .bind::<BigInt, _>(i64::from(limit))
        .get_result::<Key>(c)
        .optional()?
        .map(|k| k.k);
        let deleted = diesel::sql_query(format!(
            "DELETE FROM {table} WHERE series_id = ? AND {col} < ?"
        ))
        .bind::<BigInt, _>(series_id)
        .bind::<BigInt, _>(boundary.unwrap_or(below))
        .execute(c)?;
        Ok((deleted as u64, boundary.is_some()))
    })
}

impl RetentionJob {
    /// A run at `now_ms` over the given series.
    pub fn new(now_ms: i64, cfg: &RetentionConfig, series: Vec<i64>) -> RetentionJob {
        let mut queue = VecDeque::new();
        let mut horizons = Vec::new();
        for tier in Tier::ALL {
            let h = horizon(now_ms, cfg.days(tier));
            horizons.push((tier, rfc3339(h)));
            for &series_id in &series {
                queue.push_back(Target {
                    tier,
                    series_id,
                    below: keep_from(tier, h),
                    for_cap: false,
                });
            }
        }
        RetentionJob {
            now_ms,
            chunk_rows: cfg.chunk_rows.max(1),
            cap_bytes: cfg.cap_bytes(),
            series,
            queue,
            phase: Phase::Tiers,
            pruning_for_cap: false,
            raw_cuts: Vec::new(),
            started: Instant::now(),
            report: RetentionReport {
                now: rfc3339(now_ms),
                horizons,
                ..RetentionReport::default()
            },
        }
    }

    /// The series whose raw readings below a time are now all deleted, since
    /// the last call (for caches of recent readings).
    pub fn take_raw_cuts(&mut self) -> Vec<(i64, i64)> {
        std::mem::take(&mut self.raw_cuts)
    }

    /// Runs one write transaction and records how long it took.
    fn timed<T>(
        &mut self,
        f: impl FnOnce() -> Result<T, StorageError>,
    ) -> Result<(T, f64), StorageError> {
        let started = Instant::now();
        let out = f()?;
        let ms = started.elapsed().as_secs_f64() * 1000.0;
        self.report.transactions += 1;
        self.report.longest_lock_ms = self.report.longest_lock_ms.max(ms);
        Ok((out, ms))
    }

    /// Does the next piece of work: at most one write transaction. Returns
    /// whether more work remains.
    pub fn step(&mut self, conn: &mut SqliteConnection) -> Result<bool, StorageError> {
        loop {
            if let Some(t) = self.queue.front().copied() {
                let limit = self.chunk_rows;
                let ((mut deleted, mut more), _) =
                    self.timed(|| delete_chunk(conn, t.tier, t.series_id, t.below, limit))?;
                // Raw readings: once the rows below are gone, the sealed
                // ones, whole chunks at a time and the edge exactly.
                if t.tier == Tier::Raw && !more {
                    let ((sealed, left), _) =
                        self.timed(|| chunk::delete_below(conn, t.series_id, t.below))?;
                    deleted += sealed;
                    more = left;
                }
                if t.for_cap {
                    if let Some(cap) = self.report.cap.as_mut() {
                        cap.pruned_raw_rows += deleted;
                    }
                } else {
                    self.report.deleted.add(t.tier, deleted);
                }
                if !more {
                    self.queue.pop_front();
                    if t.tier == Tier::Raw {
                        self.raw_cuts.push((t.series_id, t.below));
                    }
                }
                return Ok(true);
            }
            match self.phase {
                Phase::Tiers => self.phase = Phase::Cap,
                Phase::Cap => self.plan_cap(conn)?,
                Phase::Release => {
                    if !self.release(conn)? {
                        self.phase = Phase::Done;
                    }
                    return Ok(self.phase != Phase::Done);
                }
                Phase::Done => return Ok(false),
            }
        }
    }

    /// Checks the size against the cap and queues the next hour of raw
    /// readings to prune, or moves on.
    fn plan_cap(&mut self, conn: &mut SqliteConnection) -> Result<(), StorageError> {
        let Some(cap) = self.cap_bytes else {
            self.phase = Phase::Done;
            return Ok(());
        };
        let used = page_figures(conn)?.used_bytes();
        let limit = if self.pruning_for_cap {
            (cap as f64 * CAP_LOW_WATER) as u64
        } else {
            cap
        };
        if !self.pruning_for_cap && used > cap {
            self.pruning_for_cap = true;
            self.report.cap = Some(CapReport {
                cap_bytes: cap,
                used_bytes_before: used,
                ..CapReport::default()
            });
        }
        if used > limit
            && let Some(cut) = cap_cut(self.oldest_raw(conn)?, self.now_ms)
        {
            for &series_id in &self.series {
                self.queue.push_back(Target {
                    tier: Tier::Raw,
                    series_id,
                    below: cut,
                    for_cap: true,
                });
            }
            return Ok(());
        }
        let first = if self.report.cap.is_some() {
            self.oldest_raw(conn)?
        } else {
            None
        };
        if let Some(report) = self.report.cap.as_mut() {
            report.used_bytes_after = used;
            report.raw_kept_from = first.map(rfc3339);
            report.met = used <= cap;
        }
        self.phase = Phase::Release;
        Ok(())
    }

    /// The oldest raw reading of any series in the run.
    fn oldest_raw(&self, conn: &mut SqliteConnection) -> Result<Option<i64>, StorageError> {
        let mut first: Option<i64> = None;
        for &s in &self.series {
            if let Some(t) = chunk::oldest(conn, s)? {
                first = Some(first.map_or(t, |o| o.min(t)));
            }
        }
        Ok(first)
    }

    /// Hands free pages back to the file system while the file is over the
    /// cap. Returns whether it did anything.
    fn release(&mut self, conn: &mut SqliteConnection) -> Result<bool, StorageError> {
        let Some(cap) = self.cap_bytes else {
            return Ok(false);
        };
        let f = page_figures(conn)?;
        if f.freelist_count == 0 || f.file_bytes() <= cap {
            return Ok(false);
        }
        let pages = u64::from(RELEASE_PAGES_PER_STEP).min(f.freelist_count);
        let ((), ms) = self.timed(|| {
            conn.immediate_transaction(|c| {
                c.batch_execute(&format!("PRAGMA incremental_vacuum({pages});"))
                    .map_err(StorageError::from)
            })
        })?;
        self.report.longest_release_ms = self.report.longest_release_ms.max(ms);
        let left = page_figures(conn)?.freelist_count;
        // Nothing released: the file's auto_vacuum is not incremental (a
        // database made elsewhere); stop rather than loop.
        self.report.released_pages += f.freelist_count.saturating_sub(left);
        Ok(left < f.freelist_count)
    }

    /// The report, once [`step`](Self::step) has returned false.
    pub fn finish(mut self, conn: &mut SqliteConnection) -> RetentionReport {
        self.report.took_ms = self.started.elapsed().as_secs_f64() * 1000.0;
        self.report.db_after = page_figures(conn).ok();
        self.report
    }

    #[cfg(any(test, feature = "bench"))]
    /// Runs the whole job on `conn` (for the CLI and benchmarks; the server
    /// drives it from the writer, a step per message).
    pub fn run_to_end(
        mut self,
        conn: &mut SqliteConnection,
    ) -> Result<RetentionReport, StorageError> {
        while self.step(conn)? {}
        Ok(self.finish(conn))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::catalog::SeriesCatalog;
    use crate::storage::config::StorageConfig;
    use crate::storage::points::Order;
    use crate::storage::rollup::MINUTE_MS;
    use crate::storage::writer::{commit_batch, commit_import};
    use crate::storage::{open_writer, prepare};
    use crate::vocab::reading::{Reading, SeriesKey};
    use std::sync::Arc;

    #[test]
    fn horizons_and_first_kept_keys() {
        let now = 100 * DAY_MS + 123;
        let h = horizon(now, 7);
        assert_eq!(h, 93 * DAY_MS + 123);
        assert_eq!(keep_from(Tier::Raw, h), h);
        // The minute starting at 93d+60_000 ends after h: kept. The one
        // starting at 93d ends at 93d+60_000 > h, also kept.
        let k = keep_from(Tier::Minute, h);
        assert!(93 * DAY_MS >= k && 93 * DAY_MS - MINUTE_MS < k);
        // A day that ends exactly at the horizon goes; the next one stays,
        // and so does a day that ends a millisecond after the horizon.
        let h = 50 * DAY_MS;
        assert!(49 * DAY_MS < keep_from(Tier::Day, h));
        assert!(50 * DAY_MS >= keep_from(Tier::Day, h));
        assert!(49 * DAY_MS >= keep_from(Tier::Day, h - 1));
    }

    #[test]
    fn cap_cut_moves_an_hour_at_a_time_and_spares_the_newest_hour() {
        let now = 10 * DAY_MS;
        assert_eq!(cap_cut(None, now), None);
        assert_eq!(cap_cut(Some(DAY_MS), now), Some(DAY_MS + HOUR_MS));
        assert_eq!(
            cap_cut(Some(now - HOUR_MS - 10), now),
            Some(now - CAP_KEEPS_RAW_MS)
        );
        assert_eq!(cap_cut(Some(now - HOUR_MS), now), None);
    }

    #[test]
    fn config_refuses_zero_days_and_coarser_tiers_kept_shorter() {
        let c = RetentionConfig {
            raw_days: 0,
            ..RetentionConfig::default()
        };
        assert!(
            c.validate()
                .unwrap_err()
                .to_string()
                .contains("retention.raw_days")
        );
        let c = RetentionConfig {
            hour_rollups_days: 10,
            ..RetentionConfig::default()
        };
        let e = c.validate().unwrap_err().to_string();
        assert!(e.contains("retention.hour_rollups_days"), "{e}");
        assert_eq!(RetentionConfig::default().cap_bytes(), Some(1 << 30));
    }

    struct Db {
        _dir: tempfile::TempDir,
        conn: SqliteConnection,
        catalog: SeriesCatalog,
    }

    fn db() -> Db {
        let dir = tempfile::tempdir().unwrap();
        let cfg = StorageConfig {
            path: dir.path().join("ret.db"),
            ..StorageConfig::default()
        };
        prepare(&cfg).unwrap();
        let conn = open_writer(&cfg).unwrap();
        Db {
            _dir: dir,
            conn,
            catalog: SeriesCatalog::default(),
        }
    }

    fn key(sensor: &str) -> Arc<SeriesKey> {
        Arc::new(SeriesKey {
            sensor: sensor.into(),
            metric: "v".into(),
            unit: "".into(),
        })
    }

    /// The keys a tier holds; raw readings wherever they are stored (rows,
    /// head blocks, chunks).
    fn keys(conn: &mut SqliteConnection, tier: Tier) -> Vec<i64> {
        if tier == Tier::Raw {
            use crate::storage::schema::series::dsl::*;
            let ids: Vec<i64> = series.select(id).load(conn).unwrap();
            let mut all: Vec<i64> = ids
                .into_iter()
                .flat_map(|sid| {
                    chunk::points(conn, sid, i64::MIN, i64::MAX, Order::Asc, usize::MAX)
                        .unwrap()
                        .into_iter()
                        .map(|p| p.0)
                })
                .collect();
            all.sort_unstable();
            return all;
        }
        diesel::sql_query(format!(
            "SELECT {} AS k FROM {} ORDER BY 1",
            tier.time_column(),
            tier.table()
        ))
        .load::<Key>(conn)
        .unwrap()
        .into_iter()
        .map(|k| k.k)
        .collect()
    }

    /// How a test stores its readings.
    type Store = fn(&mut SqliteConnection, &SeriesCatalog, &[Reading]) -> Result<u64, StorageError>;

    #[test]
    fn deletes_exactly_what_is_past_each_horizon_in_rows() {
        deletes_exactly_what_is_past_each_horizon(commit_import, true);
    }

    #[test]
    fn deletes_exactly_what_is_past_each_horizon_in_head_blocks() {
        deletes_exactly_what_is_past_each_horizon(commit_batch, false);
    }

    fn deletes_exactly_what_is_past_each_horizon(store: Store, rows: bool) {
        let mut d = db();
        let now = 2000 * DAY_MS + 5 * HOUR_MS + 17;
        let cfg = RetentionConfig {
            raw_days: 2,
            minute_rollups_days: 3,
            hour_rollups_days: 4,
            day_rollups_days: 6,
            max_db_mb: 0,
            chunk_rows: 7,
            ..RetentionConfig::default()
        };
        // Readings every 10 minutes over 8 days for two sensors, plus
        // readings a millisecond either side of each horizon.
        let (a, b) = (key("a"), key("b"));
        let mut batch = Vec::new();
        let mut t = now - 8 * DAY_MS;
        while t < now {
            batch.push(Reading {
                series: a.clone(),
                ts_ms: t + 3,
                value: 1.0,
            });
            batch.push(Reading {
                series: b.clone(),
                ts_ms: t + 1,
                value: 2.0,
            });
            t += 10 * MINUTE_MS;
        }
        for days in [2, 3, 4, 6] {
            let h = horizon(now, days);
            for ts in [h - 1, h, h + 1] {
                batch.push(Reading {
                    series: a.clone(),
                    ts_ms: ts,
                    value: 3.0,
                });
            }
        }
        store(&mut d.conn, &d.catalog, &batch).unwrap();
        if !rows {
            // Sealing passes have taken in the hours before the raw
            // horizon's (and given the rollup tiers their readings); the
            // horizon's hour and later are still head blocks.
            let edge = crate::storage::rollup::bucket_start(horizon(now, cfg.raw_days), HOUR_MS);
            while let Some(x) =
                chunk::blocks::seal_oldest_hour(&mut d.conn, i64::MIN, edge).unwrap()
            {
                for id in x.series {
                    d.catalog.mark_sealed(id, x.start_ts + HOUR_MS);
                }
            }
        }
        let before: Vec<Vec<i64>> = Tier::ALL.iter().map(|&t| keys(&mut d.conn, t)).collect();

        let series = d.catalog.all().iter().map(|s| s.id).collect();
        let report = RetentionJob::new(now, &cfg, series)
            .run_to_end(&mut d.conn)
            .unwrap();

        for (i, tier) in Tier::ALL.into_iter().enumerate() {
            let h = horizon(now, cfg.days(tier));
            let expected: Vec<i64> = before[i]
                .iter()
                .copied()
                .filter(|&k| k + tier.width_ms() > h)
                .collect();
            let after = keys(&mut d.conn, tier);
            if rows || tier == Tier::Raw {
                assert_eq!(after, expected, "{tier:?}");
            } else {
                // The readings retention took from head blocks entered the
                // rollup tiers first, as their seal would have added them:
                // periods the tiers did not hold before, none past the
                // horizon.
                assert!(after.iter().all(|&k| k + tier.width_ms() > h), "{tier:?}");
                let mut left = after.iter().peekable();
                for k in &expected {
                    while left.next_if(|&&a| a < *k).is_some() {}
                    assert_eq!(left.next(), Some(k), "{tier:?} kept {k}");
                }
            }
            let gone = (before[i].len() - expected.len()) as u64;
            let counted = match tier {
                Tier::Raw => report.deleted.raw,
                Tier::Minute => report.deleted.minute,
                Tier::Hour => report.deleted.hour,
                Tier::Day => report.deleted.day,
            };
            assert_eq!(counted, gone, "{tier:?}");
            assert!(gone > 0, "{tier:?} had something to delete");
        }
        if !rows {
            // Every reading past the minute horizon is counted once: in the
            // minute tier, or still in a head block.
            let minute_h = horizon(now, cfg.days(Tier::Minute));
            let want = batch
                .iter()
                .filter(|r| {
                    crate::storage::rollup::bucket_start(r.ts_ms, MINUTE_MS) + MINUTE_MS > minute_h
                })
                .count() as i64;
            #[derive(QueryableByName)]
            struct N {
                #[diesel(sql_type = BigInt)]
                n: i64,
            }
            let tiered = diesel::sql_query(
                "SELECT (SELECT coalesce(sum(count), 0) FROM rollup_minute) \
                 + (SELECT coalesce(sum(count), 0) FROM rollup_open WHERE tier = 1) AS n",
            )
            .get_result::<N>(&mut d.conn)
            .unwrap()
            .n;
            let in_blocks = chunk::blocks::count_all(&mut d.conn).unwrap();
            assert_eq!(tiered + in_blocks, want);
        }
        // The raw horizon itself is kept, the millisecond before it is not.
        let raw = keys(&mut d.conn, Tier::Raw);
        let h = horizon(now, 2);
        assert!(raw.contains(&h) && !raw.contains(&(h - 1)));
        // Chunks of at most 7 rows: at least total / 7 transactions (raw
        // readings in head blocks go a series' blocks at a time).
        let raw_rows = if rows { report.deleted.raw } else { 0 };
        let total = raw_rows + report.deleted.minute + report.deleted.hour + report.deleted.day;
        assert!(report.transactions >= total.div_ceil(7), "{report:?}");
        assert!(report.longest_lock_ms > 0.0);
        assert!(report.cap.is_none());

        // A second run finds nothing to delete.
        let series = d.catalog.all().iter().map(|s| s.id).collect();
        let again = RetentionJob::new(now, &cfg, series)
            .run_to_end(&mut d.conn)
            .unwrap();
        assert_eq!(again.deleted, TierCounts::default());
    }

    #[test]
    fn chunks_never_exceed_the_limit() {
        let mut d = db();
        let k = key("a");
        let batch: Vec<_> = (0..100)
            .map(|i| Reading {
                series: k.clone(),
                ts_ms: i,
                value: 0.0,
            })
            .collect();
        commit_import(&mut d.conn, &d.catalog, &batch).unwrap();
        let id = d.catalog.all()[0].id;
        let mut sizes = Vec::new();
        loop {
            let (n, more) = delete_chunk(&mut d.conn, Tier::Raw, id, 95, 30).unwrap();
            sizes.push(n);
            if !more {
                break;
            }
        }
        assert_eq!(sizes, [30, 30, 30, 5]);
        assert_eq!(keys(&mut d.conn, Tier::Raw), [95, 96, 97, 98, 99]);
    }

    #[test]
    fn over_the_cap_the_oldest_raw_readings_go_first_and_the_file_shrinks() {
        let mut d = db();
        let now = 3000 * DAY_MS;
        // Two days of 1 Hz readings for two sensors, about 8 MB.
        let (a, b) = (key("a"), key("b"));
        let start = now - 2 * DAY_MS;
        for chunk in (0..2 * 86_400).collect::<Vec<i64>>().chunks(10_000) {
            let batch: Vec<_> = chunk
                .iter()
                .flat_map(|&s| {
                    [
                        Reading {
                            series: a.clone(),
                            ts_ms: start + s * 1000,
                            value: s as f64,
                        },
                        Reading {
                            series: b.clone(),
                            ts_ms: start + s * 1000 + 500,
                            value: 1.5,
                        },
                    ]
                })
                .collect();
            commit_import(&mut d.conn, &d.catalog, &batch).unwrap();
        }
        let before = page_figures(&mut d.conn).unwrap();
        assert!(before.used_bytes() > 4 << 20, "{before:?}");
        let cfg = RetentionConfig {
            max_db_mb: 3,
            chunk_rows: 2000,
            ..RetentionConfig::default()
        };
        let series = d.catalog.all().iter().map(|s| s.id).collect();
        let report = RetentionJob::new(now, &cfg, series)
            .run_to_end(&mut d.conn)
            .unwrap();
        let cap = report.cap.clone().expect("the cap was exceeded");
        assert!(cap.met, "{report:?}");
        assert_eq!(
            report.deleted,
            TierCounts::default(),
            "nothing was past a horizon"
        );
        assert!(cap.pruned_raw_rows > 0);
        assert!(cap.used_bytes_after <= 3 << 20, "{cap:?}");
        let after = page_figures(&mut d.conn).unwrap();
        assert!(after.file_bytes() <= 3 << 20, "{after:?}");
        assert!(report.released_pages > 0);

        // What is left is the newest raw data, cut on the same instant for
        // both sensors; the rollups still cover the whole two days.
        let raw = keys(&mut d.conn, Tier::Raw);
        let first = raw[0];
        assert!(first > start);
        assert_eq!(raw.len() as u64, 4 * 86_400 - cap.pruned_raw_rows);
        assert_eq!(cap.raw_kept_from, Some(rfc3339(first)));
        let minutes = keys(&mut d.conn, Tier::Minute);
        assert_eq!(minutes.first(), Some(&start));
    }

    #[test]
    fn a_file_without_incremental_vacuum_is_pruned_but_not_shrunk() {
        use diesel_migrations::MigrationHarness;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("plain.db");
        let mut conn = crate::storage::establish(&path).unwrap();
        conn.batch_execute("PRAGMA auto_vacuum = NONE; PRAGMA journal_mode = WAL;")
            .unwrap();
        conn.run_pending_migrations(crate::storage::MIGRATIONS)
            .unwrap();
        let catalog = SeriesCatalog::default();
        let now = 3000 * DAY_MS;
        let k = key("a");
        let batch: Vec<_> = (0..150_000)
            .map(|s| Reading {
                series: k.clone(),
                ts_ms: now - DAY_MS + s * 500,
                value: 1.0,
            })
            .collect();
        commit_import(&mut conn, &catalog, &batch).unwrap();
        let cfg = RetentionConfig {
            max_db_mb: 1,
            ..RetentionConfig::default()
        };
        let series = catalog.all().iter().map(|s| s.id).collect();
        let report = RetentionJob::new(now, &cfg, series)
            .run_to_end(&mut conn)
            .unwrap();
        let cap = report.cap.expect("over the cap");
        assert!(cap.met && cap.pruned_raw_rows > 0, "{cap:?}");
        assert_eq!(report.released_pages, 0);
        assert!(page_figures(&mut conn).unwrap().freelist_count > 0);
    }

    #[test]
    fn an_unreachable_cap_keeps_the_newest_hour_and_says_so() {
        let mut d = db();
        let now = 3000 * DAY_MS;
        let k = key("a");
        let batch: Vec<_> = (0..20_000)
            .map(|s| Reading {
                series: k.clone(),
                ts_ms: now - 2 * HOUR_MS + s * 180,
                value: 1.0,
            })
            .collect();
        commit_import(&mut d.conn, &d.catalog, &batch).unwrap();
        // A cap the fixed schema pages alone nearly fill.
        let cfg = RetentionConfig {
            max_db_mb: 1,
            ..RetentionConfig::default()
        };
        // Push the used size over 1 MiB with more readings in the last hour.
        let batch: Vec<_> = (0..100_000)
            .map(|s| Reading {
                series: k.clone(),
                ts_ms: now - HOUR_MS + 1 + s * 30,
                value: 2.0,
            })
            .collect();
        commit_import(&mut d.conn, &d.catalog, &batch).unwrap();
        let series = d.catalog.all().iter().map(|s| s.id).collect();
        let report = RetentionJob::new(now, &cfg, series)
            .run_to_end(&mut d.conn)
            .unwrap();
        let cap = report.cap.expect("over the cap");
        assert!(!cap.met, "{cap:?}");
        let raw = keys(&mut d.conn, Tier::Raw);
        assert!(raw[0] >= now - CAP_KEEPS_RAW_MS, "the newest hour is kept");
        assert_eq!(raw.len(), 100_000);
        assert_eq!(cap.pruned_raw_rows, 20_000);
    }
}
