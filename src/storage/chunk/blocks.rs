//! Head blocks: how a commit of live readings is stored. Per series and
//! hour its readings fall in, a commit writes one row of `head_blocks`
//! holding them as one blob of the chunk codec ([`super::codec`]), instead
//! of a row of `readings` per reading. The rows of a commit are appended
//! together at the end of a small rowid table, so a commit rewrites a page
//! or two however many series it carries, where rows clustered by
//! `(series_id, ts)` cost a leaf page per series: the bytes written per
//! reading that wear an SD card.
//!
//! A block belongs to one series and one chunk period (an hour): sealing
//! an ended hour ([`seal_oldest_hour`]) merges its blocks (with any rows
//! and earlier chunk of that hour) into the hour's chunks, adds their
//! readings to the rollup tiers and deletes the blocks, in one
//! transaction. Until then reads of the tiers fold the blocks' readings
//! in themselves (`storage::series`), so a commit writes no rollup page. The table holds only hours not sealed yet,
//! normally the current one and the last, so reads find a series' blocks
//! by scanning it (an index would cost a page per commit).
//!
//! A reading is in exactly one of `readings`, `head_blocks` and `chunks`;
//! the writer checks a reading that could collide with a stored one
//! ([`BlockProbe`], with `Probe` for chunks) and moves it forward as it
//! would for a row.

use std::collections::HashMap;

use diesel::prelude::*;
use diesel::sql_types::{BigInt, Binary};

use super::{PERIOD_MS, decode, encode, period_start};
use crate::storage::StorageError;
use crate::storage::points::{Order, Points, merge_points};
use crate::storage::schema::readings;

#[derive(QueryableByName)]
struct Block {
    #[diesel(sql_type = BigInt)]
    series_id: i64,
    #[diesel(sql_type = BigInt)]
    start_ts: i64,
    #[diesel(sql_type = Binary)]
    data: Vec<u8>,
}

#[derive(QueryableByName)]
struct Num {
    #[diesel(sql_type = diesel::sql_types::Nullable<BigInt>)]
    n: Option<i64>,
}

/// Stores readings of one commit as blocks: `rows` as (series id, ts,
/// value), keys unique and none in `readings` or `chunks` (the writer
/// checked). One row per (series, hour).
pub fn write(conn: &mut SqliteConnection, rows: &[(i64, i64, f64)]) -> QueryResult<()> {
    let mut groups: HashMap<(i64, i64), Points> = HashMap::new();
    for &(series_id, ts, value) in rows {
        groups
            .entry((series_id, period_start(ts)))
            .or_default()
            .push((ts, value));
    }
    let mut keys: Vec<(i64, i64)> = groups.keys().copied().collect();
    keys.sort_unstable();
    for key in keys {
        let mut points = groups.remove(&key).unwrap_or_default();
        points.sort_unstable_by_key(|p| p.0);
        write_block(conn, key.0, key.1, &points)?;
    }
    Ok(())
}

fn write_block(
    conn: &mut SqliteConnection,
    series_id: i64,
    start_ts: i64,
    points: &[(i64, f64)],
) -> QueryResult<()> {
    let (Some(first), Some(last)) = (points.first(), points.last()) else {
        return Ok(());
    };
    let data = encode(series_id, start_ts, points)?;
    diesel::sql_query(
        "INSERT INTO head_blocks (series_id, start_ts, first_ts, last_ts, count, data) \
         VALUES (?, ?, ?, ?, ?, ?)",
    )
    .bind::<BigInt, _>(series_id)
    .bind::<BigInt, _>(start_ts)
    .bind::<BigInt, _>(first.0)
    .bind::<BigInt, _>(last.0)
    .bind::<BigInt, _>(points.len() as i64)
    .bind::<Binary, _>(data)
    .execute(conn)?;
    Ok(())
}

/// The blocks of `series_id` holding readings in `[lo, hi]`, decoded, by
/// hour in `order` (each hour's points sorted, in `order`).
fn load(
    conn: &mut SqliteConnection,
    series_id: i64,
    lo: i64,
    hi: i64,
    order: Order,
) -> QueryResult<Vec<(i64, Points)>> {
    let blocks: Vec<Block> = diesel::sql_query(
        "SELECT series_id, start_ts, data FROM head_blocks \
         WHERE series_id = ? AND last_ts >= ? AND first_ts <= ?",
    )
    .bind::<BigInt, _>(series_id)
    .bind::<BigInt, _>(lo)
    .bind::<BigInt, _>(hi)
    .load(conn)?;
    let mut hours: Vec<(i64, Points)> = Vec::new();
    for b in blocks {
        let mut pts = decode(b.series_id, b.start_ts, &b.data)?;
        pts.retain(|&(t, _)| t >= lo && t <= hi);
        match hours.iter_mut().find(|h| h.0 == b.start_ts) {
            Some(h) => h.1.extend(pts),
            None => hours.push((b.start_ts, pts)),
        }
    }
    hours.sort_unstable_by_key(|h| h.0);
    if order == Order::Desc {
        hours.reverse();
    }
    for (_, pts) in &mut hours {
        pts.sort_unstable_by_key(|p| p.0);
        if order == Order::Desc {
            pts.reverse();
        }
    }
    Ok(hours)
}

/// The readings of `series_id` in blocks with `lo <= ts <= hi`, in
/// `order`, at most `limit`.
pub fn points(
    conn: &mut SqliteConnection,
    series_id: i64,
    lo: i64,
    hi: i64,
    order: Order,
    limit: usize,
) -> QueryResult<Points> {
    let mut out = Vec::new();
    // Hours are disjoint and come in page order: the first `limit` are
    // found once an hour fills them.
    for (_, pts) in load(conn, series_id, lo, hi, order)? {
        let room = limit - out.len();
        out.extend(pts.into_iter().take(room));
        if out.len() == limit {
            break;
        }
    }
    Ok(out)
}

/// How many readings of `series_id` in blocks are newer than `after`.
pub fn count_after(conn: &mut SqliteConnection, series_id: i64, after: i64) -> QueryResult<i64> {
    let whole: Num = diesel::sql_query(
        "SELECT coalesce(sum(count), 0) AS n FROM head_blocks WHERE series_id = ? AND first_ts > ?",
    )
    .bind::<BigInt, _>(series_id)
    .bind::<BigInt, _>(after)
    .get_result(conn)?;
    // Blocks holding readings on both sides of `after`: decoded.
    let straddling: Vec<Block> = diesel::sql_query(
        "SELECT series_id, start_ts, data FROM head_blocks \
         WHERE series_id = ? AND first_ts <= ? AND last_ts > ?",
    )
    .bind::<BigInt, _>(series_id)
    .bind::<BigInt, _>(after)
    .bind::<BigInt, _>(after)
    .load(conn)?;
    let mut n = whole.n.unwrap_or(0);
    for b in straddling {
        n += decode(b.series_id, b.start_ts, &b.data)?
            .iter()
            .filter(|p| p.0 > after)
            .count() as i64;
    }
    Ok(n)
}

/// Every reading held in blocks.
pub fn count_all(conn: &mut SqliteConnection) -> QueryResult<i64> {
    let n: Num = diesel::sql_query("SELECT coalesce(sum(count), 0) AS n FROM head_blocks")
        .get_result(conn)?;
    Ok(n.n.unwrap_or(0))
}

/// The oldest and the newest reading of `series_id` in blocks.
pub fn span(conn: &mut SqliteConnection, series_id: i64) -> QueryResult<Option<(i64, i64)>> {
    #[derive(QueryableByName)]
    struct Span {
        #[diesel(sql_type = diesel::sql_types::Nullable<BigInt>)]
        lo: Option<i64>,
        #[diesel(sql_type = diesel::sql_types::Nullable<BigInt>)]
        hi: Option<i64>,
    }
    let s: Span = diesel::sql_query(
        "SELECT min(first_ts) AS lo, max(last_ts) AS hi FROM head_blocks WHERE series_id = ?",
    )
    .bind::<BigInt, _>(series_id)
    .get_result(conn)?;
    Ok(s.lo.zip(s.hi))
}

/// Whether blocks hold given keys, decoding a (series, hour)'s blocks once
/// per probe (a probe lives for one write transaction), and the keys a
/// transaction adds meanwhile.
#[derive(Default)]
pub struct BlockProbe {
    seen: HashMap<(i64, i64), Vec<i64>>,
}

impl BlockProbe {
    /// Whether a block holds a reading of `series_id` at `ts`.
    pub fn holds(
        &mut self,
        conn: &mut SqliteConnection,
        series_id: i64,
        ts: i64,
    ) -> QueryResult<bool> {
        Ok(self.times(conn, series_id, ts)?.binary_search(&ts).is_ok())
    }

    /// Records a key the current transaction is about to store.
    pub fn add(&mut self, conn: &mut SqliteConnection, series_id: i64, ts: i64) -> QueryResult<()> {
        let times = self.times(conn, series_id, ts)?;
        if let Err(at) = times.binary_search(&ts) {
            times.insert(at, ts);
        }
        Ok(())
    }

    fn times(
        &mut self,
        conn: &mut SqliteConnection,
        series_id: i64,
        ts: i64,
    ) -> QueryResult<&mut Vec<i64>> {
        let start = period_start(ts);
        Ok(match self.seen.entry((series_id, start)) {
            std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
            std::collections::hash_map::Entry::Vacant(e) => {
                let end = start.saturating_add(PERIOD_MS - 1);
                let mut times: Vec<i64> = load(conn, series_id, start, end, Order::Asc)?
                    .into_iter()
                    .flat_map(|(_, pts)| pts.into_iter().map(|p| p.0))
                    .collect();
                times.sort_unstable();
                e.insert(times)
            }
        })
    }
}

/// What one [`seal_oldest_hour`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SealedHour {
    /// The period sealed.
    pub start_ts: i64,
    /// The series whose chunk of the period was written.
    pub series: Vec<i64>,
    /// Readings moved out of blocks and rows.
    pub moved: u64,
}

/// Seals the oldest hour that has blocks and ends at or before `before` (a
/// period boundary): for every series with blocks in it, the blocks, the
/// series' rows of the hour and its chunk of the hour, if any, become one
/// chunk; the blocks' readings enter the rollup tiers; then the hour's
/// blocks and those rows are deleted. One immediate transaction. `None`
/// when no such hour is left.
pub fn seal_oldest_hour(
    conn: &mut SqliteConnection,
    before: i64,
) -> Result<Option<SealedHour>, StorageError> {
    conn.immediate_transaction(|c| {
        let first: Num =
            diesel::sql_query("SELECT min(start_ts) AS n FROM head_blocks").get_result(c)?;
        let Some(start) = first.n else {
            return Ok(None);
        };
        let end = start.saturating_add(PERIOD_MS);
        if end > before {
            return Ok(None);
        }
        let blocks: Vec<Block> = diesel::sql_query(
            "SELECT series_id, start_ts, data FROM head_blocks WHERE start_ts = ? ORDER BY id",
        )
        .bind::<BigInt, _>(start)
        .load(c)?;
        let mut by_series: Vec<(i64, Points)> = Vec::new();
        for b in blocks {
            let pts = decode(b.series_id, b.start_ts, &b.data)?;
            match by_series.iter_mut().find(|s| s.0 == b.series_id) {
                Some(s) => s.1.extend(pts),
                None => by_series.push((b.series_id, pts)),
            }
        }
        by_series.sort_unstable_by_key(|s| s.0);
        let mut moved = 0;
        let mut series = Vec::with_capacity(by_series.len());
        for (series_id, mut pts) in by_series {
            pts.sort_unstable_by_key(|p| p.0);
            // The rollup tiers take in the blocks' readings now (rows took
            // theirs when committed).
            crate::storage::rollup::record(c, pts.iter().map(|&(t, v)| (series_id, t, v)))?;
            let rows: Points = readings::table
                .filter(readings::series_id.eq(series_id))
                .filter(readings::ts.ge(start))
                .filter(readings::ts.lt(end))
                .order(readings::ts.asc())
                .select((readings::ts, readings::value))
                .load(c)?;
            moved += (pts.len() + rows.len()) as u64;
            let fresh = merge_points(Order::Asc, pts, rows, usize::MAX);
            super::seal_points(c, series_id, start, fresh)?;
            diesel::delete(
                readings::table
                    .filter(readings::series_id.eq(series_id))
                    .filter(readings::ts.ge(start))
                    .filter(readings::ts.lt(end)),
            )
            .execute(c)?;
            series.push(series_id);
        }
        diesel::sql_query("DELETE FROM head_blocks WHERE start_ts = ?")
            .bind::<BigInt, _>(start)
            .execute(c)?;
        Ok(Some(SealedHour {
            start_ts: start,
            series,
            moved,
        }))
    })
}

/// Retention over blocks: deletes the readings of `series_id` in blocks
/// below `below` (normally none: blocks hold the hours not sealed yet, so
/// only a sealing stalled for longer than raw readings are kept leaves
/// any), whole blocks, and the blocks straddling it re-encoded with what
/// they keep. The deleted readings enter the rollup tiers first, as their
/// seal would have added them. Runs inside the caller's transaction;
/// returns the readings deleted.
pub fn delete_below(
    conn: &mut SqliteConnection,
    series_id: i64,
    below: i64,
) -> Result<u64, StorageError> {
    #[derive(QueryableByName)]
    struct Old {
        #[diesel(sql_type = BigInt)]
        id: i64,
        #[diesel(sql_type = BigInt)]
        start_ts: i64,
        #[diesel(sql_type = Binary)]
        data: Vec<u8>,
    }
    let old: Vec<Old> = diesel::sql_query(
        "SELECT id, start_ts, data FROM head_blocks WHERE series_id = ? AND first_ts < ?",
    )
    .bind::<BigInt, _>(series_id)
    .bind::<BigInt, _>(below)
    .load(conn)?;
    let mut deleted = 0;
    for b in old {
        let pts = decode(series_id, b.start_ts, &b.data)?;
        let (gone, keep): (Points, Points) = pts.into_iter().partition(|p| p.0 < below);
        deleted += gone.len() as u64;
        crate::storage::rollup::record(conn, gone.iter().map(|&(t, v)| (series_id, t, v)))?;
        diesel::sql_query("DELETE FROM head_blocks WHERE id = ?")
            .bind::<BigInt, _>(b.id)
            .execute(conn)?;
        write_block(conn, series_id, b.start_ts, &keep)?;
    }
    Ok(deleted)
}
