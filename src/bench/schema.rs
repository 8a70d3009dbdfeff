//! `vigil-bench schema`: the measurement behind the readings table's layout.
//!
//! Loads the same rows into two layouts, a table clustered on
//! `(series_id, ts)` (`WITHOUT ROWID`, what vigil uses) and a rowid table with
//! an index on `(series_id, ts)`, through the same diesel insert path, then
//! compares insert rate, bytes on disk per row, "latest 100 of a series" and
//! one-hour range latency, and the WAL bytes each small commit writes (the
//! SD-card wear of an appliance committing a few readings at a time).

use std::path::Path;
use std::time::{Duration, Instant};

use diesel::connection::SimpleConnection;
use diesel::prelude::*;

use super::{median, median_f64, percentile};

/// Sizes of one run of the comparison.
#[derive(Debug, Clone, Copy)]
pub struct SchemaOptions {
    /// Rows loaded into each layout.
    pub rows: usize,
    /// Series the rows are spread over (readings 1 s apart in each).
    pub series: usize,
    /// Repetitions; medians are reported.
    pub runs: usize,
    /// Queries timed per run.
    pub queries: usize,
}

impl Default for SchemaOptions {
    fn default() -> Self {
        SchemaOptions {
            rows: 2_000_000,
            series: 10,
            runs: 3,
            queries: 2000,
        }
    }
}

/// The figures of one layout.
#[derive(Debug, Clone, serde::Serialize)]
pub struct LayoutFigures {
    pub layout: &'static str,
    pub insert_rows_per_s: f64,
    pub file_bytes_per_row: f64,
    pub latest_100_p50_us: f64,
    pub latest_100_p99_us: f64,
    pub hour_range_p50_us: f64,
    /// WAL bytes per row when committing 3 rows at a time.
    pub wal_bytes_per_row_commit_3: f64,
    /// WAL bytes per row when committing 30 rows at a time.
    pub wal_bytes_per_row_commit_30: f64,
}

mod clustered {
    diesel::table! {
        readings (series_id, ts) {
            series_id -> BigInt,
            ts -> BigInt,
            value -> Double,
        }
    }
}

mod rowid {
    diesel::table! {
        readings (id) {
            id -> BigInt,
            series_id -> BigInt,
            ts -> BigInt,
            value -> Double,
        }
    }
}

#[derive(Insertable, Clone, Copy)]
#[diesel(table_name = clustered::readings)]
struct ClusteredRow {
    series_id: i64,
    ts: i64,
    value: f64,
}

#[derive(Insertable, Clone, Copy)]
#[diesel(table_name = rowid::readings)]
struct RowidRow {
    series_id: i64,
    ts: i64,
    value: f64,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Layout {
    Clustered,
    Rowid,
}

impl Layout {
    fn name(self) -> &'static str {
        match self {
            Layout::Clustered => "clustered (series_id, ts) WITHOUT ROWID",
            Layout::Rowid => "rowid + index (series_id, ts)",
        }
    }

    fn ddl(self) -> &'static str {
        match self {
            Layout::Clustered => {
                "CREATE TABLE readings (series_id INTEGER NOT NULL, ts INTEGER NOT NULL, \
                 value REAL NOT NULL, PRIMARY KEY (series_id, ts)) WITHOUT ROWID;"
            }
            Layout::Rowid => {
                "CREATE TABLE readings (id INTEGER PRIMARY KEY, series_id INTEGER NOT NULL, \
                 ts INTEGER NOT NULL, value REAL NOT NULL); \
                 CREATE INDEX readings_series_ts ON readings (series_id, ts);"
            }
        }
    }

    fn insert(self, conn: &mut SqliteConnection, rows: &[(i64, i64, f64)]) -> QueryResult<()> {
        match self {
            Layout::Clustered => {
                let v: Vec<_> = rows
                    .iter()
                    .map(|&(series_id, ts, value)| ClusteredRow {
                        series_id,
                        ts,
                        value,
                    })
                    .collect();
                diesel::insert_into(clustered::readings::table)
                    .values(&v)
                    .execute(conn)?;
            }
            Layout::Rowid => {
                let v: Vec<_> = rows
                    .iter()
                    .map(|&(series_id, ts, value)| RowidRow {
                        series_id,
                        ts,
                        value,
                    })
                    .collect();
                diesel::insert_into(rowid::readings::table)
                    .values(&v)
                    .execute(conn)?;
            }
        }
        Ok(())
    }

    fn latest(self, conn: &mut SqliteConnection, series: i64, n: i64) -> QueryResult<usize> {
        Ok(match self {
            Layout::Clustered => {
                use clustered::readings::dsl::*;
                readings
                    .filter(series_id.eq(series))
                    .order(ts.desc())
                    .limit(n)
                    .select((ts, value))
                    .load::<(i64, f64)>(conn)?
                    .len()
            }
            Layout::Rowid => {
                use rowid::readings::dsl::*;
                readings
                    .filter(series_id.eq(series))
                    .order(ts.desc())
                    .limit(n)
                    .select((ts, value))
                    .load::<(i64, f64)>(conn)?
                    .len()
            }
        })
    }

    fn range(
        self,
        conn: &mut SqliteConnection,
        series: i64,
        from: i64,
        to: i64,
    ) -> QueryResult<usize> {
        Ok(match self {
            Layout::Clustered => {
                use clustered::readings::dsl::*;
                readings
                    .filter(series_id.eq(series))
                    .filter(ts.ge(from))
                    .filter(ts.lt(to))
                    .select((ts, value))
                    .load::<(i64, f64)>(conn)?
                    .len()
            }
            Layout::Rowid => {
                use rowid::readings::dsl::*;
                readings
                    .filter(series_id.eq(series))
                    .filter(ts.ge(from))
                    .filter(ts.lt(to))
                    .select((ts, value))
                    .load::<(i64, f64)>(conn)?
                    .len()
            }
        })
    }
}

const T0: i64 = 1_790_000_000_000;
const BATCH: usize = 1000;

/// Row `i` of the data set: series round-robin, one reading per second per
/// series, values of a noisy signal (non-integral, as real sensors give).
fn row(i: usize, series: usize, rng: &mut fastrand::Rng) -> (i64, i64, f64) {
    let s = (i % series) as i64 + 1;
    let t = (i / series) as i64;
    let v = 20.0 + 5.0 * ((t as f64) / 600.0).sin() + rng.f64();
    (s, T0 + t * 1000 + (s * 7) % 1000, v)
}

fn open(path: &Path, layout: Layout) -> QueryResult<SqliteConnection> {
    let mut conn = SqliteConnection::establish(path.to_str().unwrap_or_default())
        .map_err(|e| diesel::result::Error::QueryBuilderError(Box::new(e)))?;
    conn.batch_execute(
        "PRAGMA auto_vacuum = INCREMENTAL; PRAGMA journal_mode = WAL; \
         PRAGMA synchronous = NORMAL; PRAGMA cache_size = -8192;",
    )?;
    conn.batch_execute(layout.ddl())?;
    Ok(conn)
}

fn measure(
    dir: &Path,
    layout: Layout,
    o: &SchemaOptions,
    run: usize,
) -> QueryResult<LayoutFigures> {
    let path = dir.join(format!("schema-{run}-{}.db", layout as u8));
    let mut conn = open(&path, layout)?;
    let mut rng = fastrand::Rng::with_seed(run as u64 + 1);

    let started = Instant::now();
    let mut batch = Vec::with_capacity(BATCH);
    for i in 0..o.rows {
        batch.push(row(i, o.series, &mut rng));
        if batch.len() == BATCH || i + 1 == o.rows {
            conn.immediate_transaction(|c| layout.insert(c, &batch))?;
            batch.clear();
        }
    }
    let insert_rows_per_s = o.rows as f64 / started.elapsed().as_secs_f64();
    conn.batch_execute("PRAGMA wal_checkpoint(TRUNCATE);")?;
    let file_bytes = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);

    let per_series = (o.rows / o.series) as i64;
    let mut latest = Vec::with_capacity(o.queries);
    let mut range = Vec::with_capacity(o.queries);
    for _ in 0..o.queries {
        let s = rng.i64(1..=o.series as i64);
        let t = Instant::now();
        layout.latest(&mut conn, s, 100)?;
        latest.push(t.elapsed());
        let start = T0 + rng.i64(0..(per_series - 3600).max(1)) * 1000;
        let t = Instant::now();
        layout.range(&mut conn, s, start, start + 3_600_000)?;
        range.push(t.elapsed());
    }
    latest.sort_unstable();
    let us = |d: Duration| d.as_secs_f64() * 1e6;

    // Small commits after the bulk load, as an appliance makes them.
    let mut wal_per_row = [0.0; 2];
    let mut next_t = per_series + 10;
    for (slot, rows_per_commit) in [3usize, 30].into_iter().enumerate() {
        conn.batch_execute("PRAGMA wal_checkpoint(TRUNCATE); PRAGMA wal_autocheckpoint = 0;")?;
        let commits = 200;
        for _ in 0..commits {
            let rows: Vec<_> = (0..rows_per_commit)
                .map(|k| {
                    let s = (k % o.series) as i64 + 1;
                    let t = next_t + (k / o.series) as i64;
                    (s, T0 + t * 1000 + (s * 7) % 1000, 21.5 + rng.f64())
                })
                .collect();
            next_t += rows_per_commit.div_ceil(o.series) as i64;
            conn.immediate_transaction(|c| layout.insert(c, &rows))?;
        }
        let wal = std::fs::metadata(path.with_extension("db-wal"))
            .map(|m| m.len())
            .unwrap_or(0);
        wal_per_row[slot] = wal as f64 / (commits * rows_per_commit) as f64;
    }
    drop(conn);
    let _ = std::fs::remove_file(&path);

    Ok(LayoutFigures {
        layout: layout.name(),
        insert_rows_per_s,
        file_bytes_per_row: file_bytes as f64 / o.rows as f64,
        latest_100_p50_us: us(percentile(&latest, 50.0)),
        latest_100_p99_us: us(percentile(&latest, 99.0)),
        hour_range_p50_us: us(median(&mut range)),
        wal_bytes_per_row_commit_3: wal_per_row[0],
        wal_bytes_per_row_commit_30: wal_per_row[1],
    })
}

/// Runs the comparison; medians over `runs` for each figure.
pub fn run(o: &SchemaOptions) -> QueryResult<Vec<LayoutFigures>> {
    let dir =
        tempfile::tempdir().map_err(|e| diesel::result::Error::QueryBuilderError(Box::new(e)))?;
    let mut out = Vec::new();
    for layout in [Layout::Clustered, Layout::Rowid] {
        let mut runs = Vec::new();
        for r in 0..o.runs.max(1) {
            runs.push(measure(dir.path(), layout, o, r)?);
        }
        let med =
            |f: fn(&LayoutFigures) -> f64| median_f64(&mut runs.iter().map(f).collect::<Vec<_>>());
        out.push(LayoutFigures {
            layout: layout.name(),
            insert_rows_per_s: med(|f| f.insert_rows_per_s),
            file_bytes_per_row: med(|f| f.file_bytes_per_row),
            latest_100_p50_us: med(|f| f.latest_100_p50_us),
            latest_100_p99_us: med(|f| f.latest_100_p99_us),
            hour_range_p50_us: med(|f| f.hour_range_p50_us),
            wal_bytes_per_row_commit_3: med(|f| f.wal_bytes_per_row_commit_3),
            wal_bytes_per_row_commit_30: med(|f| f.wal_bytes_per_row_commit_30),
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn smoke_run_at_a_tiny_size() {
        let figures = run(&SchemaOptions {
            rows: 5000,
            series: 5,
            runs: 1,
            queries: 20,
        })
        .unwrap();
        assert_eq!(figures.len(), 2);
        for f in figures {
            assert!(
                f.insert_rows_per_s > 0.0 && f.file_bytes_per_row > 0.0,
                "{f:?}"
            );
            assert!(
                f.wal_bytes_per_row_commit_3 > f.wal_bytes_per_row_commit_30,
                "{f:?}"
            );
        }
    }
}
