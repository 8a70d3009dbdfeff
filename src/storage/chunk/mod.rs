//! Sealed chunks: a series' readings of one UTC hour, compressed into one
//! BLOB row of the `chunks` table (see [`codec`] for the bytes), and the
//! raw-reading reads that see the chunks, the head blocks and the
//! `readings` table as one store.
//!
//! A reading lives in exactly one place until its hour is sealed: a block
//! of `head_blocks` ([`blocks`]: how live commits store readings), or a row
//! of `readings` (readings of an hour sealed already, imports, and
//! databases written before blocks existed). Then it is a point of its
//! hour's chunk. [`blocks::seal_oldest_hour`] moves an ended hour's blocks
//! of every series into chunks, [`seal_oldest`] one (series, hour) of
//! rows, each in one write transaction (the writer runs them between
//! commits, see `storage::writer`), merging with the hour's chunk if late
//! readings arrived after it was sealed. Every reader of raw readings goes
//! through [`points`], which reads the three tables inside one read
//! snapshot, so a seal committing meanwhile shows each reading exactly
//! once. Keys never change when a reading is sealed, so cursors stay exact
//! across a seal.
//!
//! The writer keeps the one-place rule for readings that could collide: a
//! reading whose hour is already sealed is checked against the chunk
//! ([`Probe`]), one not newer than everything stored of its series against
//! the blocks and rows, and moved forward a millisecond at a time like any
//! colliding reading. Which hours can hold a chunk is known per series from
//! the catalog (`SeriesCatalog::sealed_until`): readings at or after that
//! instant, all the live ones, need no chunk check.

pub mod blocks;
pub mod codec;

use std::collections::HashMap;

use diesel::prelude::*;
use diesel::sql_types::{BigInt, Binary};

use super::StorageError;
use super::points::{Order, Points, merge_points};
use super::rollup::{HOUR_MS, bucket_start};
use super::schema::{chunks, readings};

/// The period a chunk holds: one UTC hour.
pub const PERIOD_MS: i64 = HOUR_MS;

/// Whole chunks deleted per retention transaction (each is one row, so
/// this bounds the transaction, not the readings it removes).
pub const CHUNKS_PER_DELETE: i64 = 64;

/// Chunks fetched per query while a read collects points.
const FETCH: i64 = 8;

/// The start of the chunk period holding `ts`.
pub fn period_start(ts: i64) -> i64 {
    bucket_start(ts, PERIOD_MS)
}

#[derive(QueryableByName, Queryable)]
struct Blob {
    #[diesel(sql_type = BigInt)]
    start_ts: i64,
    #[diesel(sql_type = Binary)]
    data: Vec<u8>,
}

#[derive(QueryableByName)]
struct Sum {
    #[diesel(sql_type = BigInt)]
    n: i64,
}

fn decode(series_id: i64, start_ts: i64, data: &[u8]) -> QueryResult<Points> {
    codec::decode(data).map_err(|e| {
        diesel::result::Error::DeserializationError(
            format!("series {series_id}, chunk of {start_ts}: {e}").into(),
        )
    })
}

fn encode(series_id: i64, start_ts: i64, points: &[(i64, f64)]) -> QueryResult<Vec<u8>> {
    codec::encode(points).map_err(|e| {
        diesel::result::Error::SerializationError(
            format!("series {series_id}, chunk of {start_ts}: {e}").into(),
        )
    })
}

/// The raw readings of one series with `lo <= ts <= hi`, in `order`, at
/// most `limit`: the sealed ones and the rows together. Runs in one read
/// snapshot (a savepoint inside the caller's transaction, if any).
pub fn points(
    conn: &mut SqliteConnection,
    series_id: i64,
    lo: i64,
    hi: i64,
    order: Order,
    limit: usize,
) -> QueryResult<Points> {
    if lo > hi || limit == 0 {
        return Ok(Vec::new());
    }
    conn.transaction(|c| {
        let rows = row_points(c, series_id, lo, hi, order, limit)?;
        let head = blocks::points(c, series_id, lo, hi, order, limit)?;
        let rows = merge_points(order, rows, head, limit);
        // With `limit` rows found, only sealed readings up to the last of
        // them in page order can still be among the first `limit`.
        let (lo, hi) = match (rows.len() == limit, rows.last(), order) {
            (true, Some(&(t, _)), Order::Desc) => (lo.max(t), hi),
            (true, Some(&(t, _)), Order::Asc) => (lo, hi.min(t)),
            _ => (lo, hi),
        };
        let sealed = sealed_points(c, series_id, lo, hi, order, limit)?;
        Ok(merge_points(order, rows, sealed, limit))
    })
}

fn row_points(
    conn: &mut SqliteConnection,
    series_id: i64,
    lo: i64,
    hi: i64,
    order: Order,
    limit: usize,
) -> QueryResult<Points> {
    let query = readings::table
        .filter(readings::series_id.eq(series_id))
        .filter(readings::ts.ge(lo))
        .filter(readings::ts.le(hi))
        .select((readings::ts, readings::value))
        .limit(i64::try_from(limit).unwrap_or(i64::MAX));
    match order {
        Order::Desc => query.order(readings::ts.desc()).load(conn),
        Order::Asc => query.order(readings::ts.asc()).load(conn),
    }
}

/// The SQL of the row half of [`points`], one statement SQLite can plan
/// (for the slow-query log; the chunk half is a primary-key range too).
pub fn points_sql() -> &'static str {
    "SELECT ts, value FROM readings WHERE series_id = ? AND ts >= ? AND ts <= ? ORDER BY ts DESC LIMIT ?"
}

/// The sealed half of [`points`]: chunks overlapping `[lo, hi]` in order,
/// a few at a time, decoded until `limit` points are found.
fn sealed_points(
    conn: &mut SqliteConnection,
    series_id: i64,
    lo: i64,
    hi: i64,
    order: Order,
    limit: usize,
) -> QueryResult<Points> {
    let mut out = Vec::new();
    // A chunk [start, start + PERIOD) overlaps [lo, hi] when
    // lo - PERIOD < start <= hi.
    let (mut above, mut upto) = (lo.saturating_sub(PERIOD_MS), hi);
    loop {
        // The key range finds the chunks; first_ts and last_ts leave out
        // those whose readings all fall outside [lo, hi] before any is
        // decoded. Built with diesel's DSL, not SQL text, so the statement
        // is prepared once per connection, not per page.
        let q = chunks::table
            .filter(chunks::series_id.eq(series_id))
            .filter(chunks::start_ts.gt(above))
            .filter(chunks::start_ts.le(upto))
            .filter(chunks::last_ts.ge(lo))
            .filter(chunks::first_ts.le(hi))
            .select((chunks::start_ts, chunks::data))
            .limit(FETCH);
        let page: Vec<Blob> = match order {
            Order::Asc => q.order(chunks::start_ts.asc()).load(conn)?,
            Order::Desc => q.order(chunks::start_ts.desc()).load(conn)?,
        };
        let full = page.len() as i64 == FETCH;
        for blob in &page {
            let mut pts = decode(series_id, blob.start_ts, &blob.data)?;
            pts.retain(|&(ts, _)| ts >= lo && ts <= hi);
            if order == Order::Desc {
                pts.reverse();
            }
            let room = limit - out.len();
            out.extend(pts.into_iter().take(room));
            if out.len() == limit {
                return Ok(out);
            }
            match order {
                Order::Asc => above = blob.start_ts,
                Order::Desc => upto = blob.start_ts - 1,
            }
        }
        if !full {
            return Ok(out);
        }
    }
}

/// How many raw readings of `series_id` are newer than `after`.
pub fn count_after(conn: &mut SqliteConnection, series_id: i64, after: i64) -> QueryResult<u64> {
    conn.transaction(|c| {
        let rows: i64 = readings::table
            .filter(readings::series_id.eq(series_id))
            .filter(readings::ts.gt(after))
            .count()
            .get_result(c)?;
        // Chunks starting after `after` hold only newer readings; the one
        // whose period holds `after` is decoded.
        let whole: Sum = diesel::sql_query(
            "SELECT coalesce(sum(count), 0) AS n FROM chunks WHERE series_id = ? AND start_ts > ?",
        )
        .bind::<BigInt, _>(series_id)
        .bind::<BigInt, _>(after)
        .get_result(c)?;
        let edge = match chunk_at(c, series_id, period_start(after))? {
            Some(pts) => pts.iter().filter(|p| p.0 > after).count() as i64,
            None => 0,
        };
        let head = blocks::count_after(c, series_id, after)?;
        Ok(u64::try_from(rows + whole.n + edge + head).unwrap_or(0))
    })
}

/// Every raw reading stored, sealed or not.
pub fn count_all(conn: &mut SqliteConnection) -> QueryResult<u64> {
    let n: Sum = diesel::sql_query(
        "SELECT (SELECT count(*) FROM readings) \
         + (SELECT coalesce(sum(count), 0) FROM chunks) \
         + (SELECT coalesce(sum(count), 0) FROM head_blocks) AS n",
    )
    .get_result(conn)?;
    Ok(u64::try_from(n.n).unwrap_or(0))
}

/// The oldest raw reading of a series, sealed or not.
pub fn oldest(conn: &mut SqliteConnection, series_id: i64) -> QueryResult<Option<i64>> {
    conn.transaction(|c| {
        let block = blocks::span(c, series_id)?.map(|s| s.0);
        let settled = oldest_outside_blocks(c, series_id)?;
        Ok([settled, block].into_iter().flatten().min())
    })
}

/// The oldest raw reading of a series in rows or chunks (one seek in
/// each), for a caller that reads the blocks' span itself.
pub fn oldest_outside_blocks(
    conn: &mut SqliteConnection,
    series_id: i64,
) -> QueryResult<Option<i64>> {
    let row: Option<i64> = readings::table
        .filter(readings::series_id.eq(series_id))
        .select(diesel::dsl::min(readings::ts))
        .first(conn)?;
    let chunk: Option<i64> = chunks::table
        .filter(chunks::series_id.eq(series_id))
        .order(chunks::start_ts.asc())
        .select(chunks::first_ts)
        .first(conn)
        .optional()?;
    Ok([row, chunk].into_iter().flatten().min())
}

/// The decoded chunk of one period, if sealed.
fn chunk_at(
    conn: &mut SqliteConnection,
    series_id: i64,
    start_ts: i64,
) -> QueryResult<Option<Points>> {
    let blob: Option<Blob> =
        diesel::sql_query("SELECT start_ts, data FROM chunks WHERE series_id = ? AND start_ts = ?")
            .bind::<BigInt, _>(series_id)
            .bind::<BigInt, _>(start_ts)
            .get_result(conn)
            .optional()?;
    blob.map(|b| decode(series_id, b.start_ts, &b.data))
        .transpose()
}

/// For every series with chunks, the end of its newest chunk's period:
/// readings from there on cannot collide with a sealed one.
pub fn sealed_until(conn: &mut SqliteConnection) -> QueryResult<Vec<(i64, i64)>> {
    #[derive(QueryableByName)]
    struct Newest {
        #[diesel(sql_type = BigInt)]
        series_id: i64,
        #[diesel(sql_type = BigInt)]
        start_ts: i64,
    }
    let rows: Vec<Newest> = diesel::sql_query(
        "SELECT series_id, max(start_ts) AS start_ts FROM chunks GROUP BY series_id",
    )
    .load(conn)?;
    Ok(rows
        .into_iter()
        .map(|r| (r.series_id, r.start_ts.saturating_add(PERIOD_MS)))
        .collect())
}

/// Whether sealed chunks hold given timestamps, decoding each chunk once
/// per probe (a probe lives for one write transaction).
#[derive(Default)]
pub struct Probe {
    seen: HashMap<(i64, i64), Vec<i64>>,
}

impl Probe {
    /// Whether the chunk of `ts`'s period holds a reading at `ts`.
    pub fn holds(
        &mut self,
        conn: &mut SqliteConnection,
        series_id: i64,
        ts: i64,
    ) -> QueryResult<bool> {
        let start = period_start(ts);
        let times = match self.seen.entry((series_id, start)) {
            std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
            std::collections::hash_map::Entry::Vacant(e) => {
                // A damaged chunk must not stop ingest: its hour takes the
                // reading as a row (reads of the hour report the damage,
                // and sealing it again refuses).
                let times = match chunk_at(conn, series_id, start) {
                    Ok(found) => found
                        .map(|pts| pts.into_iter().map(|p| p.0).collect())
                        .unwrap_or_default(),
                    Err(diesel::result::Error::DeserializationError(e)) => {
                        log::error!("{e}; a late reading of that hour is stored as a row");
                        Vec::new()
                    }
                    Err(e) => return Err(e),
                };
                e.insert(times)
            }
        };
        Ok(times.binary_search(&ts).is_ok())
    }
}

/// What one [`seal_oldest`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sealed {
    /// The period sealed (or, when `damaged`, left as it was).
    pub start_ts: i64,
    /// Rows moved out of `readings`.
    pub rows: u64,
    /// Readings the chunk holds now (more than `rows` when an earlier
    /// chunk of the period was merged).
    pub count: u64,
    /// The period's chunk is damaged, so its rows could not be merged
    /// into it: nothing was written, the rows stay rows. The error.
    pub damaged: Option<String>,
}

/// The decoder's error if the chunk of (`series_id`, `start_ts`) is
/// damaged; `None` if it is whole or there is none.
pub(crate) fn chunk_damage(
    c: &mut SqliteConnection,
    series_id: i64,
    start_ts: i64,
) -> QueryResult<Option<String>> {
    match chunk_at(c, series_id, start_ts) {
        Ok(_) => Ok(None),
        Err(diesel::result::Error::DeserializationError(e)) => Ok(Some(e.to_string())),
        Err(e) => Err(e),
    }
}

/// Seals the oldest period of `series_id` at or after `from` that has rows
/// and ends at or before `before` (a period boundary): its rows and its
/// chunk, if any, become one chunk, in one immediate transaction. A period
/// whose chunk is damaged is left as it is (`Sealed::damaged`), so a pass
/// goes on from the next period. `None` when no such period is left.
pub fn seal_oldest(
    conn: &mut SqliteConnection,
    series_id: i64,
    from: i64,
    before: i64,
) -> Result<Option<Sealed>, StorageError> {
    conn.immediate_transaction(|c| {
        let first: Option<i64> = readings::table
            .filter(readings::series_id.eq(series_id))
            .filter(readings::ts.ge(from))
            .select(diesel::dsl::min(readings::ts))
            .first(c)?;
        let Some(first) = first else {
            return Ok(None);
        };
        let start = period_start(first);
        let end = start.saturating_add(PERIOD_MS);
        if end > before {
            return Ok(None);
        }
        if let Some(e) = chunk_damage(c, series_id, start)? {
            return Ok(Some(Sealed {
                start_ts: start,
                rows: 0,
                count: 0,
                damaged: Some(e),
            }));
        }
        let rows: Points = readings::table
            .filter(readings::series_id.eq(series_id))
            .filter(readings::ts.ge(start))
            .filter(readings::ts.lt(end))
            .order(readings::ts.asc())
            .select((readings::ts, readings::value))
            .load(c)?;
        let moved = rows.len() as u64;
        let count = seal_points(c, series_id, start, rows)?;
        diesel::delete(
            readings::table
                .filter(readings::series_id.eq(series_id))
                .filter(readings::ts.ge(start))
                .filter(readings::ts.lt(end)),
        )
        .execute(c)?;
        Ok(Some(Sealed {
            start_ts: start,
            rows: moved,
            count,
            damaged: None,
        }))
    })
}

/// Writes the chunk of one period from `fresh` (readings leaving rows or
/// blocks, in time order) merged with the period's chunk, if any, inside
/// the caller's transaction. Returns the readings the chunk holds.
fn seal_points(
    c: &mut SqliteConnection,
    series_id: i64,
    start: i64,
    fresh: Points,
) -> Result<u64, StorageError> {
    let end = start.saturating_add(PERIOD_MS);
    let merged = match chunk_at(c, series_id, start)? {
        Some(old) => merge_points(Order::Asc, old, fresh, usize::MAX),
        None => fresh,
    };
    // The writer keeps a (series, ts) in one place; should two points
    // share one anyway, the later is moved forward, as the writer
    // would have, rather than lost.
    let mut points = merged;
    for i in 1..points.len() {
        if points[i].0 <= points[i - 1].0 {
            points[i].0 = points[i - 1].0 + 1;
        }
    }
    if points.last().is_some_and(|p| p.0 >= end) {
        return Err(StorageError::Query(diesel::result::Error::SerializationError(
            format!("series {series_id}: the period of {start} holds more readings than milliseconds").into(),
        )));
    }
    write_chunk(c, series_id, start, &points)?;
    Ok(points.len() as u64)
}

/// Replaces the chunk of one period with `points` (deletes it when empty).
fn write_chunk(
    conn: &mut SqliteConnection,
    series_id: i64,
    start: i64,
    points: &[(i64, f64)],
) -> QueryResult<()> {
    let (Some(first), Some(last)) = (points.first(), points.last()) else {
        diesel::sql_query("DELETE FROM chunks WHERE series_id = ? AND start_ts = ?")
            .bind::<BigInt, _>(series_id)
            .bind::<BigInt, _>(start)
            .execute(conn)?;
        return Ok(());
    };
    let data = encode(series_id, start, points)?;
    diesel::sql_query(
        "INSERT OR REPLACE INTO chunks (series_id, start_ts, first_ts, last_ts, count, data) \
         VALUES (?, ?, ?, ?, ?, ?)",
    )
    .bind::<BigInt, _>(series_id)
    .bind::<BigInt, _>(start)
    .bind::<BigInt, _>(first.0)
    .bind::<BigInt, _>(last.0)
    .bind::<BigInt, _>(points.len() as i64)
    .bind::<Binary, _>(data)
    .execute(conn)?;
    Ok(())
}

/// Retention over chunks: deletes the sealed readings of `series_id` below
/// `below`, whole chunks at most [`CHUNKS_PER_DELETE`] at a time, then the
/// chunk straddling `below`, re-encoded with what it keeps, and the
/// series' head blocks below it (normally none: blocks hold the hours not
/// sealed yet), in one immediate transaction. Returns the readings deleted
/// and whether more remain.
pub fn delete_below(
    conn: &mut SqliteConnection,
    series_id: i64,
    below: i64,
) -> Result<(u64, bool), StorageError> {
    conn.immediate_transaction(|c| {
        // Chunks whose whole period is below `below`.
        let last_whole = below.saturating_sub(PERIOD_MS);
        let victims: Vec<(i64, i64)> = diesel::sql_query(format!(
            "SELECT start_ts, count FROM chunks \
             WHERE series_id = ? AND start_ts <= ? ORDER BY start_ts LIMIT {}",
            CHUNKS_PER_DELETE + 1
        ))
        .bind::<BigInt, _>(series_id)
        .bind::<BigInt, _>(last_whole)
        .load::<Whole>(c)?
        .into_iter()
        .map(|w| (w.start_ts, w.count))
        .collect();
        let more = victims.len() as i64 > CHUNKS_PER_DELETE;
        let take = &victims[..victims.len().min(CHUNKS_PER_DELETE as usize)];
        let mut deleted: u64 = take.iter().map(|&(_, n)| n.max(0) as u64).sum();
        if let Some(&(upto, _)) = take.last() {
            diesel::sql_query("DELETE FROM chunks WHERE series_id = ? AND start_ts <= ?")
                .bind::<BigInt, _>(series_id)
                .bind::<BigInt, _>(upto)
                .execute(c)?;
        }
        if !more {
            deleted += blocks::delete_below(c, series_id, below)?;
            let start = period_start(below);
            if start < below
                && let Some(pts) = chunk_at(c, series_id, start)?
            {
                let keep: Points = pts.iter().copied().filter(|p| p.0 >= below).collect();
                if keep.len() < pts.len() {
                    deleted += (pts.len() - keep.len()) as u64;
                    write_chunk(c, series_id, start, &keep)?;
                }
            }
        }
        Ok((deleted, more))
    })
}

/// A whole chunk retention deletes: its period and how many readings.
#[derive(QueryableByName)]
struct Whole {
    #[diesel(sql_type = BigInt)]
    start_ts: i64,
    #[diesel(sql_type = BigInt)]
    count: i64,
}

#[cfg(test)]
mod tests;
