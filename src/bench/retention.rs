//! `vigil-bench retention`: a year of `sensors` sensors at 1 Hz under the
//! default tiered retention and a size cap. Reports the size of each tier,
//! what one retention run deletes, and its longest write-lock hold.
//!
//! A literal year at 1 Hz for 10 sensors is 315 million readings, of which
//! retention keeps 7 days. The benchmark builds the database as retention
//! would have left it a day ago, so that it is faithful where it matters
//! and affordable: the last `raw_days + 1` days as real 1 Hz readings
//! written through the writer's commit path (with the rollups it makes),
//! and, for the older part of the year, the rollup rows those readings
//! would have left: day rollups for the whole year, hour rollups for
//! `hour_rollups_days + 1` days, minute rollups for `minute_rollups_days +
//! 1` days, merged with the writer's own UPSERT from a synthetic signal.
//! Ended hours are then sealed into chunks, as the writer's passes leave
//! them (unless `seal` is off). Then one retention run (with the cap)
//! deletes the day that is past each horizon and prunes raw readings until
//! the database is under the cap.

use std::time::Instant;

use diesel::prelude::*;
use diesel::sql_types::{BigInt, Text};

use super::series::{T0, fill};
use crate::storage::catalog::SeriesCatalog;
use crate::storage::chunk;
use crate::storage::config::StorageConfig;
use crate::storage::maintenance::page_figures;
use crate::storage::retention::{RetentionConfig, RetentionJob, RetentionReport};
use crate::storage::rollup::{Agg, Bucket, DAY_MS, Tier, upsert};
use crate::storage::sealer::seal_before;
use crate::storage::{StorageError, open_writer, prepare};

#[derive(Debug, Clone, Copy)]
pub struct RetentionOptions {
    pub sensors: usize,
    pub days: u32,
    pub max_db_mb: u64,
    pub chunk_rows: u32,
    /// `retention.raw_days` for the run.
    pub raw_days: u32,
    /// Seal ended hours before the retention run, as the appliance does.
    pub seal: bool,
}

impl Default for RetentionOptions {
    fn default() -> Self {
        RetentionOptions {
            sensors: 10,
            days: 365,
            max_db_mb: 150,
            chunk_rows: 5000,
            raw_days: 7,
            seal: true,
        }
    }
}

/// One tier's rows and bytes (from the `dbstat` table).
#[derive(Debug, Clone, serde::Serialize)]
pub struct TierSize {
    pub tier: Tier,
    pub rows: i64,
    pub bytes: i64,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct RetentionFigures {
    pub sensors: usize,
    pub days: u32,
    pub raw_days: u32,
    /// Seconds to build the database.
    pub build_s: f64,
    /// Seconds the seal of every ended hour took (0 when not sealed).
    pub seal_s: f64,
    /// Readings in sealed chunks, and the chunks' bytes, before retention.
    pub sealed_readings: i64,
    pub sealed_bytes: i64,
    /// Days of raw readings left after the run (from the oldest to now).
    pub raw_days_kept: f64,
    /// Bytes this process handed to write(2) while sealing, checkpoint
    /// included (`wchar` of /proc/self/io), per reading sealed.
    pub seal_bytes_written_per_reading: Option<f64>,
    pub before: Vec<TierSize>,
    pub after: Vec<TierSize>,
    pub file_bytes_before: u64,
    pub file_bytes_after: u64,
    pub cap_bytes: Option<u64>,
    pub report: RetentionReport,
}

fn bench_err(e: impl std::fmt::Display) -> StorageError {
    StorageError::Io {
        what: "benchmark".into(),
        source: std::io::Error::other(e.to_string()),
    }
}

/// The rollup of one period of a 1 Hz synthetic signal: computed from the
/// signal at one-minute steps, scaled to the period's readings.
fn synthetic(series: usize, start: i64, width: i64) -> Agg {
    let n = width / 1000;
    let mut agg: Option<Agg> = None;
    let step = 60_000.min(width);
    let mut t = start;
    while t < start + width {
        let v = 20.0 + 5.0 * ((t as f64 / 3.6e6) + series as f64).sin();
        let one = Agg::one(t + step - 1000, v);
        match agg.as_mut() {
            Some(a) => a.merge(&one),
            None => agg = Some(one),
        }
        t += step;
    }
    let mut a = agg.unwrap_or_else(|| Agg::one(start, 0.0));
    let samples = a.count;
    a.sum *= n as f64 / samples as f64;
    a.count = n;
    a
}

fn fill_rollups(
    conn: &mut SqliteConnection,
    ids: &[i64],
    tier: Tier,
    from: i64,
    to: i64,
) -> Result<(), StorageError> {
    let w = tier.width_ms();
    let mut buckets = Vec::new();
    for (s, &id) in ids.iter().enumerate() {
        let mut b = from;
        while b < to {
            buckets.push(Bucket {
                series_id: id,
                start: b,
                agg: synthetic(s, b, w),
            });
            b += w;
        }
    }
    for chunk in buckets.chunks(50_000) {
        conn.immediate_transaction(|c| upsert(c, tier, chunk))?;
    }
    Ok(())
}

/// Bytes this process has passed to write(2) so far (`wchar`).
fn wchar() -> Option<u64> {
    let io = std::fs::read_to_string("/proc/self/io").ok()?;
    io.lines()
        .find_map(|l| l.strip_prefix("wchar:"))
        .and_then(|v| v.trim().parse().ok())
}

/// Readings in chunks, and the bytes of the `chunks` table.
fn sealed(conn: &mut SqliteConnection, sizes: &[Size]) -> Result<(i64, i64), StorageError> {
    #[derive(QueryableByName)]
    struct N {
        #[diesel(sql_type = BigInt)]
        n: i64,
    }
    let n = diesel::sql_query("SELECT coalesce(sum(count), 0) AS n FROM chunks")
        .get_result::<N>(conn)?
        .n;
    let bytes = sizes
        .iter()
        .filter(|s| s.name == "chunks")
        .map(|s| s.bytes)
        .sum();
    Ok((n, bytes))
}

#[derive(QueryableByName)]
struct Size {
    #[diesel(sql_type = Text)]
    name: String,
    #[diesel(sql_type = BigInt)]
    bytes: i64,
}

/// Rows and bytes per tier (raw: rows and sealed readings).
pub fn tier_sizes(conn: &mut SqliteConnection) -> Result<Vec<TierSize>, StorageError> {
    #[derive(QueryableByName)]
    struct N {
        #[diesel(sql_type = BigInt)]
        n: i64,
    }
    let sizes: Vec<Size> =
        diesel::sql_query("SELECT name, sum(pgsize) AS bytes FROM dbstat GROUP BY name")
            .load(conn)?;
    let mut out = Vec::new();
    for tier in Tier::ALL {
        let rows = diesel::sql_query(format!("SELECT count(*) AS n FROM {}", tier.table()))
            .get_result::<N>(conn)?
            .n;
        let mut bytes = sizes
            .iter()
            .filter(|s| s.name == tier.table())
            .map(|s| s.bytes)
            .sum();
        // Raw readings are rows and sealed chunks.
        let (rows, bytes) = if tier == Tier::Raw {
            let (n, b) = sealed(conn, &sizes)?;
            bytes += b;
            (rows + n, bytes)
        } else {
            (rows, bytes)
        };
        out.push(TierSize { tier, rows, bytes });
    }
    Ok(out)
}

pub fn run(o: &RetentionOptions) -> Result<RetentionFigures, StorageError> {
    let dir = tempfile::tempdir().map_err(bench_err)?;
    let cfg = StorageConfig {
        path: dir.path().join("year.db"),
        ..StorageConfig::default()
    };
    let ret = RetentionConfig {
        max_db_mb: o.max_db_mb,
        chunk_rows: o.chunk_rows,
        raw_days: o.raw_days,
        ..RetentionConfig::default()
    };
    prepare(&cfg)?;
    let mut conn = open_writer(&cfg)?;
    let catalog = SeriesCatalog::default();
    let now = T0 + i64::from(o.days) * DAY_MS;
    let started = Instant::now();

    // Real readings for the newest raw_days + 1 days.
    let raw_from = now - (i64::from(ret.raw_days) + 1) * DAY_MS;
    fill(&mut conn, &catalog, o.sensors.max(1), raw_from, now)?;
    let ids: Vec<i64> = catalog.all().iter().map(|s| s.id).collect();
    // Rollups for what came before, as far back as each tier was kept a day ago.
    for tier in Tier::ROLLUPS {
        let from = (now - (i64::from(ret.days(tier)) + 1) * DAY_MS).max(T0);
        if from < raw_from {
            fill_rollups(&mut conn, &ids, tier, from, raw_from)?;
        }
    }
    let build_s = started.elapsed().as_secs_f64();
    // Every ended hour sealed, as the writer's passes leave it (their
    // default delay), one (series, hour) per transaction.
    diesel::sql_query("PRAGMA wal_checkpoint(TRUNCATE)").execute(&mut conn)?;
    let wrote_before = wchar();
    let sealing = Instant::now();
    if o.seal {
        let before = seal_before(now, StorageConfig::default().seal_delay_mins);
        for &id in &ids {
            let mut from = i64::MIN;
            while let Some(s) = chunk::seal_oldest(&mut conn, id, from, before)? {
                from = s.start_ts + chunk::PERIOD_MS;
                catalog.mark_sealed(id, from);
            }
        }
    }
    let seal_s = if o.seal {
        sealing.elapsed().as_secs_f64()
    } else {
        0.0
    };
    diesel::sql_query("PRAGMA wal_checkpoint(TRUNCATE)").execute(&mut conn)?;
    let sealing_wrote = wrote_before.zip(wchar()).map(|(a, b)| b.saturating_sub(a));
    let before = tier_sizes(&mut conn)?;
    let sizes: Vec<Size> =
        diesel::sql_query("SELECT name, sum(pgsize) AS bytes FROM dbstat GROUP BY name")
            .load(&mut conn)?;
    let (sealed_readings, sealed_bytes) = sealed(&mut conn, &sizes)?;
    let file_bytes_before = page_figures(&mut conn)?.file_bytes();

    let ids_after = ids.clone();
    let report = RetentionJob::new(now, &ret, ids).run_to_end(&mut conn)?;
    diesel::sql_query("PRAGMA wal_checkpoint(TRUNCATE)").execute(&mut conn)?;
    let after = tier_sizes(&mut conn)?;
    let file_bytes_after = std::fs::metadata(&cfg.path).map(|m| m.len()).unwrap_or(0);
    let mut first: Option<i64> = None;
    for &id in &ids_after {
        if let Some(t) = chunk::oldest(&mut conn, id)? {
            first = Some(first.map_or(t, |f: i64| f.min(t)));
        }
    }
    let raw_days_kept = first.map_or(0.0, |f| (now - f) as f64 / DAY_MS as f64);
    Ok(RetentionFigures {
        sensors: o.sensors,
        days: o.days,
        raw_days: o.raw_days,
        build_s,
        seal_s,
        sealed_readings,
        sealed_bytes,
        raw_days_kept,
        seal_bytes_written_per_reading: sealing_wrote
            .filter(|_| sealed_readings > 0)
            .map(|b| b as f64 / sealed_readings as f64),
        before,
        after,
        file_bytes_before,
        file_bytes_after,
        cap_bytes: ret.cap_bytes(),
        report,
    })
}

pub fn print(f: &RetentionFigures) {
    let mb = |b: i64| b as f64 / (1024.0 * 1024.0);
    println!(
        "{} sensors at 1 Hz, {} days simulated, raw kept {} days (built in {:.0} s, sealed in {:.0} s)",
        f.sensors, f.days, f.raw_days, f.build_s, f.seal_s
    );
    if f.sealed_readings > 0 {
        println!(
            "sealed: {} readings in {:.1} MiB, {:.2} bytes per reading; sealing wrote {} bytes per reading",
            f.sealed_readings,
            mb(f.sealed_bytes),
            f.sealed_bytes as f64 / f.sealed_readings as f64,
            f.seal_bytes_written_per_reading
                .map_or("-".to_owned(), |b| format!("{b:.1}"))
        );
    }
    println!(
        "{:<8} {:>12} {:>10} {:>12} {:>10} {:>12}",
        "tier", "rows before", "MiB", "rows after", "MiB", "deleted"
    );
    let d = &f.report.deleted;
    for (b, a) in f.before.iter().zip(&f.after) {
        let deleted = match b.tier {
            Tier::Raw => d.raw,
            Tier::Minute => d.minute,
            Tier::Hour => d.hour,
            Tier::Day => d.day,
        };
        println!(
            "{:<8} {:>12} {:>10.1} {:>12} {:>10.1} {:>12}",
            b.tier.name(),
            b.rows,
            mb(b.bytes),
            a.rows,
            mb(a.bytes),
            deleted
        );
    }
    println!(
        "file {:.1} MiB -> {:.1} MiB (cap {})",
        mb(f.file_bytes_before as i64),
        mb(f.file_bytes_after as i64),
        f.cap_bytes
            .map_or("none".to_owned(), |c| format!("{:.0} MiB", mb(c as i64)))
    );
    if let Some(cap) = &f.report.cap {
        println!(
            "cap: pruned {} raw readings beyond the horizon; raw now from {}; met: {}",
            cap.pruned_raw_rows,
            cap.raw_kept_from.as_deref().unwrap_or("-"),
            cap.met
        );
    }
    println!("raw readings now cover {:.2} days", f.raw_days_kept);
    println!(
        "{} transactions in {:.0} ms; longest write-lock hold {:.1} ms; {} pages released (longest release {:.1} ms)",
        f.report.transactions,
        f.report.took_ms,
        f.report.longest_lock_ms,
        f.report.released_pages,
        f.report.longest_release_ms
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn synthetic_rollups_look_like_the_real_ones() {
        let a = synthetic(0, T0, Tier::Hour.width_ms());
        assert_eq!(a.count, 3600);
        assert!(a.min <= a.mean() && a.mean() <= a.max);
        assert!(a.last_ts < T0 + Tier::Hour.width_ms());
    }

    #[test]
    fn smoke_run_at_a_tiny_size() {
        // Two days of retention-era readings is too much for a smoke test:
        // one sensor, a short year, no cap.
        let f = run(&RetentionOptions {
            sensors: 1,
            days: 12,
            max_db_mb: 0,
            chunk_rows: 10_000,
            raw_days: 7,
            seal: true,
        })
        .unwrap();
        // Every ended hour of the 8 days was sealed, small.
        assert!(
            f.sealed_readings >= 8 * 86_400 - 3600,
            "{}",
            f.sealed_readings
        );
        assert!(
            (f.sealed_bytes as f64) < f.sealed_readings as f64 * 4.0,
            "{} bytes for {} readings",
            f.sealed_bytes,
            f.sealed_readings
        );
        assert!((f.raw_days_kept - 7.0).abs() < 0.01, "{}", f.raw_days_kept);
        let raw = &f.after[0];
        assert_eq!(raw.tier, Tier::Raw);
        assert_eq!(
            raw.rows,
            7 * 86_400,
            "exactly seven days of 1 Hz readings stay"
        );
        assert_eq!(f.report.deleted.raw, 86_400);
        assert!(f.before.iter().all(|t| t.bytes > 0));
    }

    #[test]
    fn smoke_run_unsealed_deletes_rows_in_bounded_transactions() {
        let f = run(&RetentionOptions {
            sensors: 1,
            days: 9,
            max_db_mb: 0,
            chunk_rows: 10_000,
            raw_days: 7,
            seal: false,
        })
        .unwrap();
        assert_eq!(f.sealed_readings, 0);
        assert_eq!(f.after[0].rows, 7 * 86_400);
        assert_eq!(f.report.deleted.raw, 86_400);
        // A day of rows, at most chunk_rows per transaction.
        assert!(f.report.transactions >= 9, "{}", f.report.transactions);
    }
}
