//! `vigil-bench schema`: the measurement behind the readings table's layout.
//!
//! Loads the same rows into three layouts: a table clustered on
//! `(series_id, ts)` (`WITHOUT ROWID`, what vigil uses), a rowid table with
//! an index on `(series_id, ts)`, both through the same diesel insert path,
//! and sealed chunks: each series' readings of an hour compressed into one
//! BLOB row keyed `(series_id, start_ts)` `WITHOUT ROWID` by the chunk codec
//! (`storage::chunk::codec`). It compares insert rate, bytes on disk per
//! reading, "latest 100 of a series" and one-hour range latency, and for
//! the row layouts the WAL bytes each small commit writes (the SD-card wear
//! of an appliance committing a few readings at a time; sealed chunks are
//! written once an hour is complete, so they have no small commits).

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
    /// Decimal places the values are rounded to, as a sensor's resolution
    /// rounds them (`None`: full `f64` precision).
    pub decimals: Option<u32>,
}

impl Default for SchemaOptions {
    fn default() -> Self {
        SchemaOptions {
            rows: 2_000_000,
            series: 10,
            runs: 3,
            queries: 2000,
            decimals: Some(2),
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
    /// WAL bytes per row when committing 3 rows at a time (`None` for
    /// sealed chunks, which are not written in small commits).
    pub wal_bytes_per_row_commit_3: Option<f64>,
    /// WAL bytes per row when committing 30 rows at a time.
    pub wal_bytes_per_row_commit_30: Option<f64>,
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

mod sealed {
    diesel::table! {
        chunks (series_id, start_ts) {
            series_id -> BigInt,
            start_ts -> BigInt,
            data -> Binary,
        }
    }
}

#[derive(Insertable)]
#[diesel(table_name = sealed::chunks)]
struct ChunkRow {
    series_id: i64,
    start_ts: i64,
    data: Vec<u8>,
}

/// The period one chunk covers.
const CHUNK_MS: i64 = 3_600_000;

/// Collects each series' readings until its hour is complete, then seals
/// the hour into one chunk row.
#[derive(Default)]
struct Sealer {
    open: std::collections::HashMap<i64, (i64, Vec<(i64, f64)>)>,
}

impl Sealer {
    /// Adds rows in time order per series; the chunks that became complete.
    fn push(&mut self, rows: &[(i64, i64, f64)]) -> QueryResult<Vec<ChunkRow>> {
        let mut sealed = Vec::new();
        for &(series, ts, value) in rows {
            let hour = ts.div_euclid(CHUNK_MS) * CHUNK_MS;
            let entry = self.open.entry(series).or_insert((hour, Vec::new()));
            if entry.0 != hour {
                let points = std::mem::take(&mut entry.1);
                sealed.push(seal(series, entry.0, &points)?);
                entry.0 = hour;
            }
            entry.1.push((ts, value));
        }
        Ok(sealed)
    }

    /// Seals what is still open.
    fn finish(&mut self) -> QueryResult<Vec<ChunkRow>> {
        let mut out = Vec::new();
        for (series, (start, points)) in self.open.drain() {
            if !points.is_empty() {
                out.push(seal(series, start, &points)?);
            }
        }
        Ok(out)
    }
}

fn codec_error(e: crate::storage::chunk::codec::CodecError) -> diesel::result::Error {
    diesel::result::Error::DeserializationError(Box::new(e))
}

fn seal(series_id: i64, start_ts: i64, points: &[(i64, f64)]) -> QueryResult<ChunkRow> {
    Ok(ChunkRow {
        series_id,
        start_ts,
        data: crate::storage::chunk::codec::encode(points).map_err(codec_error)?,
    })
}

fn insert_chunks(conn: &mut SqliteConnection, rows: &[ChunkRow]) -> QueryResult<()> {
    if !rows.is_empty() {
        diesel::insert_into(sealed::chunks::table)
            .values(rows)
            .execute(conn)?;
    }
    Ok(())
}

/// The decoded chunks of `series` that start in `from..to`, newest first.
fn chunks_desc(
    conn: &mut SqliteConnection,
    series: i64,
    from: i64,
    to: i64,
    limit: i64,
) -> QueryResult<Vec<Vec<u8>>> {
    use sealed::chunks::dsl::*;
    chunks
        .filter(series_id.eq(series))
        .filter(start_ts.ge(from))
        .filter(start_ts.lt(to))
        .order(start_ts.desc())
        .limit(limit)
        .select(data)
        .load::<Vec<u8>>(conn)
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Layout {
    Clustered,
    Rowid,
    Chunks,
}

impl Layout {
    fn name(self) -> &'static str {
        match self {
            Layout::Clustered => "clustered (series_id, ts) WITHOUT ROWID",
            Layout::Rowid => "rowid + index (series_id, ts)",
            Layout::Chunks => "sealed hour chunks (series_id, start_ts)",
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
            Layout::Chunks => {
                "CREATE TABLE chunks (series_id INTEGER NOT NULL, start_ts INTEGER NOT NULL, \
                 data BLOB NOT NULL, PRIMARY KEY (series_id, start_ts)) WITHOUT ROWID;"
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
            Layout::Chunks => unreachable!("chunks are written by a Sealer"),
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
            Layout::Chunks => {
                // Newest chunks first until `n` readings are decoded.
                let mut got = 0usize;
                let mut before = i64::MAX;
                while got < n as usize {
                    let blobs = chunks_desc(conn, series, i64::MIN, before, 1)?;
                    let Some(blob) = blobs.first() else { break };
                    let points = crate::storage::chunk::codec::decode(blob).map_err(codec_error)?;
                    let Some(first) = points.first() else { break };
                    before = first.0.div_euclid(CHUNK_MS) * CHUNK_MS;
                    got += points.len().min(n as usize - got);
                }
                got
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
            Layout::Chunks => {
                // The chunks that can hold readings in the range: those that
                // start before its end and less than a chunk before its start.
                let mut n = 0;
                for blob in chunks_desc(conn, series, from - CHUNK_MS + 1, to, i64::MAX)? {
                    let points =
                        crate::storage::chunk::codec::decode(&blob).map_err(codec_error)?;
                    n += points.iter().filter(|p| p.0 >= from && p.0 < to).count();
                }
                n
            }
        })
    }
}

const T0: i64 = 1_790_000_000_000;
const BATCH: usize = 1000;

/// Row `i` of the data set: series round-robin, one reading per second per
/// series, values of a noisy signal (non-integral, as real sensors give).
fn row(i: usize, o: &SchemaOptions, rng: &mut fastrand::Rng) -> (i64, i64, f64) {
    let s = (i % o.series) as i64 + 1;
    let t = (i / o.series) as i64;
    let v = round(20.0 + 5.0 * ((t as f64) / 600.0).sin() + rng.f64(), o);
    (s, T0 + t * 1000 + (s * 7) % 1000, v)
}

fn round(v: f64, o: &SchemaOptions) -> f64 {
    match o.decimals {
        Some(d) => {
            let scale = 10f64.powi(d as i32);
            (v * scale).round() / scale
        }
        None => v,
    }
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

/// Loads `o.rows` rows into `layout`, in transactions of [`BATCH`] rows.
fn load(
    conn: &mut SqliteConnection,
    layout: Layout,
    o: &SchemaOptions,
    rng: &mut fastrand::Rng,
) -> QueryResult<()> {
    let mut batch = Vec::with_capacity(BATCH);
    let mut sealer = Sealer::default();
    for i in 0..o.rows {
        batch.push(row(i, o, rng));
        if batch.len() == BATCH || i + 1 == o.rows {
            if layout == Layout::Chunks {
                let mut sealed = sealer.push(&batch)?;
                if i + 1 == o.rows {
                    sealed.extend(sealer.finish()?);
                }
                conn.immediate_transaction(|c| insert_chunks(c, &sealed))?;
            } else {
                conn.immediate_transaction(|c| layout.insert(c, &batch))?;
            }
            batch.clear();
        }
    }
    Ok(())
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
    load(&mut conn, layout, o, &mut rng)?;
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
    let mut wal_per_row = [None; 2];
    let mut next_t = per_series + 10;
    let small_commits = if layout == Layout::Chunks {
        &[][..]
    } else {
        &[3usize, 30][..]
    };
    for (slot, &rows_per_commit) in small_commits.iter().enumerate() {
        conn.batch_execute("PRAGMA wal_checkpoint(TRUNCATE); PRAGMA wal_autocheckpoint = 0;")?;
        let commits = 200;
        for _ in 0..commits {
            let rows: Vec<_> = (0..rows_per_commit)
                .map(|k| {
                    let s = (k % o.series) as i64 + 1;
                    let t = next_t + (k / o.series) as i64;
                    (
                        s,
                        T0 + t * 1000 + (s * 7) % 1000,
                        round(21.5 + rng.f64(), o),
                    )
                })
                .collect();
            next_t += rows_per_commit.div_ceil(o.series) as i64;
            conn.immediate_transaction(|c| layout.insert(c, &rows))?;
        }
        let wal = std::fs::metadata(path.with_extension("db-wal"))
            .map(|m| m.len())
            .unwrap_or(0);
        wal_per_row[slot] = Some(wal as f64 / (commits * rows_per_commit) as f64);
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
    for layout in [Layout::Clustered, Layout::Rowid, Layout::Chunks] {
        let mut runs = Vec::new();
        for r in 0..o.runs.max(1) {
            runs.push(measure(dir.path(), layout, o, r)?);
        }
        let med =
            |f: fn(&LayoutFigures) -> f64| median_f64(&mut runs.iter().map(f).collect::<Vec<_>>());
        let med_opt = |f: fn(&LayoutFigures) -> Option<f64>| {
            let mut v: Vec<f64> = runs.iter().filter_map(f).collect();
            (!v.is_empty()).then(|| median_f64(&mut v))
        };
        out.push(LayoutFigures {
            layout: layout.name(),
            insert_rows_per_s: med(|f| f.insert_rows_per_s),
            file_bytes_per_row: med(|f| f.file_bytes_per_row),
            latest_100_p50_us: med(|f| f.latest_100_p50_us),
            latest_100_p99_us: med(|f| f.latest_100_p99_us),
            hour_range_p50_us: med(|f| f.hour_range_p50_us),
            wal_bytes_per_row_commit_3: med_opt(|f| f.wal_bytes_per_row_commit_3),
            wal_bytes_per_row_commit_30: med_opt(|f| f.wal_bytes_per_row_commit_30),
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
            decimals: Some(2),
        })
        .unwrap();
        assert_eq!(figures.len(), 3);
        for f in figures {
            assert!(
                f.insert_rows_per_s > 0.0 && f.file_bytes_per_row > 0.0,
                "{f:?}"
            );
            match (f.wal_bytes_per_row_commit_3, f.wal_bytes_per_row_commit_30) {
                (Some(at3), Some(at30)) => assert!(at3 > at30, "{f:?}"),
                (None, None) => assert!(f.layout.starts_with("sealed"), "{f:?}"),
                _ => panic!("{f:?}"),
            }
        }
    }

    /// The three layouts answer every timed query with the same readings
    /// count, across chunk edges and at the ends of the data.
    #[test]
    fn every_layout_answers_the_same() {
        let o = SchemaOptions {
            rows: 3 * 9000,
            series: 3,
            runs: 1,
            queries: 0,
            decimals: Some(2),
        };
        let dir = tempfile::tempdir().unwrap();
        let mut answers = Vec::new();
        for layout in [Layout::Clustered, Layout::Rowid, Layout::Chunks] {
            let mut conn = open(&dir.path().join(format!("{}.db", layout as u8)), layout).unwrap();
            load(&mut conn, layout, &o, &mut fastrand::Rng::with_seed(7)).unwrap();
            let mut a = Vec::new();
            for s in 1..=3 {
                for n in [1, 100, 3600, 5000, 20_000] {
                    a.push(layout.latest(&mut conn, s, n).unwrap());
                }
                for (from_s, len_s) in [(0, 3600), (1234, 3600), (3599, 2), (8000, 5000), (-10, 20)]
                {
                    let from = T0 + from_s * 1000;
                    a.push(
                        layout
                            .range(&mut conn, s, from, from + len_s * 1000)
                            .unwrap(),
                    );
                }
            }
            answers.push(a);
        }
        assert_eq!(answers[0][1], 100);
        assert_eq!(answers[0][4], 9000, "latest 20,000 of a series of 9,000");
        assert_eq!(answers[0], answers[1]);
        assert_eq!(answers[0], answers[2]);
    }
}
