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
//! Then one retention run (with the cap) deletes the day that is past each
//! horizon and prunes raw readings until the database is under the cap.

use std::time::Instant;

use diesel::prelude::*;
use diesel::sql_types::{BigInt, Text};

use super::series::{T0, fill};
use crate::storage::catalog::SeriesCatalog;
use crate::storage::config::StorageConfig;
use crate::storage::maintenance::page_figures;
use crate::storage::retention::{RetentionConfig, RetentionJob, RetentionReport};
use crate::storage::rollup::{Agg, Bucket, DAY_MS, Tier, upsert};
use crate::storage::{StorageError, open_writer, prepare};

#[derive(Debug, Clone, Copy)]
pub struct RetentionOptions {
    pub sensors: usize,
    pub days: u32,
    pub max_db_mb: u64,
    pub chunk_rows: u32,
}

impl Default for RetentionOptions {
    fn default() -> Self {
        RetentionOptions {
            sensors: 10,
            days: 365,
            max_db_mb: 150,
            chunk_rows: 5000,
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
    /// Seconds to build the database.
    pub build_s: f64,
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

/// Rows and bytes per tier.
pub fn tier_sizes(conn: &mut SqliteConnection) -> Result<Vec<TierSize>, StorageError> {
    #[derive(QueryableByName)]
    struct Size {
        #[diesel(sql_type = Text)]
        name: String,
        #[diesel(sql_type = BigInt)]
        bytes: i64,
    }
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
        let bytes = sizes
            .iter()
            .filter(|s| s.name == tier.table())
            .map(|s| s.bytes)
            .sum();
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
    diesel::sql_query("PRAGMA wal_checkpoint(TRUNCATE)").execute(&mut conn)?;
    let build_s = started.elapsed().as_secs_f64();
    let before = tier_sizes(&mut conn)?;
    let file_bytes_before = page_figures(&mut conn)?.file_bytes();

    let report = RetentionJob::new(now, &ret, ids).run_to_end(&mut conn)?;
    diesel::sql_query("PRAGMA wal_checkpoint(TRUNCATE)").execute(&mut conn)?;
    let after = tier_sizes(&mut conn)?;
    let file_bytes_after = std::fs::metadata(&cfg.path).map(|m| m.len()).unwrap_or(0);
    Ok(RetentionFigures {
        sensors: o.sensors,
        days: o.days,
        build_s,
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
        "{} sensors at 1 Hz, {} days simulated (built in {:.0} s)",
        f.sensors, f.days, f.build_s
    );
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
        })
        .unwrap();
        let raw = &f.after[0];
        assert_eq!(raw.tier, Tier::Raw);
        assert_eq!(
            raw.rows,
            7 * 86_400,
            "exactly seven days of 1 Hz readings stay"
        );
        assert_eq!(f.report.deleted.raw, 86_400);
        assert!(f.report.transactions >= 9);
        assert!(f.before.iter().all(|t| t.bytes > 0));
    }
}
