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
//! in themselves (`storage::series`), so a commit writes no rollup page.
//! The table holds only hours not sealed yet, normally the current one and
//! the last, so reads find a series' blocks by scanning it (an index would
//! cost a page per commit), and keep the blocks they decoded in a small
//! cache keyed by their bytes (a block is decoded once, not per read).
//!
//! A reading is in exactly one of `readings`, `head_blocks` and `chunks`;
//! the writer checks a reading that could collide with a stored one
//! ([`BlockProbe`], with `Probe` for chunks) and moves it forward as it
//! would for a row.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, LazyLock, Mutex};

use diesel::prelude::*;
use diesel::sql_types::{BigInt, Binary};

use super::{PERIOD_MS, decode, encode, period_start};
use crate::storage::StorageError;
use crate::storage::points::{Order, Points, merge_points};
use crate::storage::rollup::{Agg, MINUTE_MS, bucket_start};
use crate::storage::schema::{head_blocks, readings};

#[derive(QueryableByName, Queryable)]
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

/// The blocks of `series_id` holding readings in `[lo, hi]` (diesel's DSL,
/// not SQL text, so the statement is prepared once per connection).
fn select(
    conn: &mut SqliteConnection,
    series_id: i64,
    lo: i64,
    hi: i64,
) -> QueryResult<Vec<Block>> {
    head_blocks::table
        .filter(head_blocks::series_id.eq(series_id))
        .filter(head_blocks::last_ts.ge(lo))
        .filter(head_blocks::first_ts.le(hi))
        .select((
            head_blocks::series_id,
            head_blocks::start_ts,
            head_blocks::data,
        ))
        .load(conn)
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
    let mut hours: Vec<(i64, Points)> = Vec::new();
    for b in select(conn, series_id, lo, hi)? {
        let mut pts = decoded(&b)?.points.clone();
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

/// The readings of `series_id` in blocks as aggregates per minute, of the
/// minutes starting in `[lo, hi)` (`lo` and `hi` whole minutes): what the
/// minute tier will hold of them once sealed, for a read of a rollup tier
/// to fold into its buckets. Blocks of one minute (flush windows need not
/// start on a minute) give one aggregate each, which the fold merges.
pub fn minute_aggs(
    conn: &mut SqliteConnection,
    series_id: i64,
    lo: i64,
    hi: i64,
) -> QueryResult<Vec<(i64, Agg)>> {
    let mut out = Vec::new();
    for b in select(conn, series_id, lo, hi.saturating_sub(1))? {
        let d = decoded(&b)?;
        out.extend(d.minutes.iter().filter(|m| m.0 >= lo && m.0 < hi).copied());
    }
    Ok(out)
}

/// A decoded block: its readings, in time order, and their aggregates per
/// minute.
struct Decoded {
    points: Points,
    minutes: Vec<(i64, Agg)>,
}

impl Decoded {
    fn new(points: Points) -> Decoded {
        let mut minutes: Vec<(i64, Agg)> = Vec::new();
        for &(ts, v) in &points {
            let m = bucket_start(ts, MINUTE_MS);
            match minutes.last_mut() {
                Some((start, agg)) if *start == m => agg.merge(&Agg::one(ts, v)),
                _ => minutes.push((m, Agg::one(ts, v))),
            }
        }
        Decoded { points, minutes }
    }
}

/// Decoded blocks, keyed by their bytes. A commit's block is small (a
/// flush window of one series, about 60 readings), and pco's fixed cost
/// per blob (about 6 µs) then outweighs its readings, so a chart or page
/// over the unsealed hour would spend most of its time decoding the same
/// blocks again, and a chart folding their readings into its buckets.
/// Blocks never change in place (retention replaces an edge block by a
/// new one, sealing deletes them), and equal bytes decode to equal
/// readings, so an entry can never be stale, whichever database or
/// connection read it: the cache only bounds its memory, dropping the
/// oldest entries first.
struct DecodeCache {
    map: HashMap<Arc<[u8]>, Arc<Decoded>>,
    order: VecDeque<Arc<[u8]>>,
    readings: usize,
}

/// The readings the cache holds at most: about 1.2 MiB with their
/// aggregates, an hour of 18 sensors at 1 Hz.
const CACHE_READINGS: usize = 65_536;

static CACHE: LazyLock<Mutex<DecodeCache>> = LazyLock::new(|| {
    Mutex::new(DecodeCache {
        map: HashMap::new(),
        order: VecDeque::new(),
        readings: 0,
    })
});

fn decoded(b: &Block) -> QueryResult<Arc<Decoded>> {
    let lock = || CACHE.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(hit) = lock().map.get(b.data.as_slice()) {
        return Ok(hit.clone());
    }
    let d = Arc::new(Decoded::new(decode(b.series_id, b.start_ts, &b.data)?));
    // A block of many readings decodes cheaply per reading: not kept.
    let n = d.points.len();
    if n <= CACHE_READINGS / 16 {
        let mut c = lock();
        let key: Arc<[u8]> = Arc::from(b.data.as_slice());
        if c.map.insert(key.clone(), d.clone()).is_none() {
            c.order.push_back(key);
            c.readings += n;
        }
        while c.readings > CACHE_READINGS {
            let Some(old) = c.order.pop_front() else {
                break;
            };
            if let Some(p) = c.map.remove(&old) {
                c.readings -= p.points.len();
            }
        }
    }
    Ok(d)
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
    let (lo, hi): (Option<i64>, Option<i64>) = head_blocks::table
        .filter(head_blocks::series_id.eq(series_id))
        .select((
            diesel::dsl::min(head_blocks::first_ts),
            diesel::dsl::max(head_blocks::last_ts),
        ))
        .first(conn)?;
    Ok(lo.zip(hi))
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
    /// The series left unsealed because a block of theirs in the period,
    /// or their chunk of it, is damaged, with the decoder's error: their
    /// blocks of the period stay as they are, for a repair.
    pub damaged: Vec<(i64, String)>,
}

/// Seals the oldest hour at or after `from` that has blocks and ends at or
/// before `before` (a period boundary): for every series with blocks in
/// it, the blocks, the series' rows of the hour and its chunk of the hour,
/// if any, become one chunk; the blocks' readings enter the rollup tiers;
/// then the hour's blocks and those rows are deleted. One immediate
/// transaction. A series with a damaged block or chunk in the hour is
/// left out (`SealedHour::damaged`), its blocks kept, so that one damaged block
/// holds back neither the other series nor the later hours: a pass calls
/// this again from the next hour. `None` when no such hour is left.
pub fn seal_oldest_hour(
    conn: &mut SqliteConnection,
    from: i64,
    before: i64,
) -> Result<Option<SealedHour>, StorageError> {
    conn.immediate_transaction(|c| {
        let first: Num =
            diesel::sql_query("SELECT min(start_ts) AS n FROM head_blocks WHERE start_ts >= ?")
                .bind::<BigInt, _>(from)
                .get_result(c)?;
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
        let mut damaged: Vec<(i64, String)> = Vec::new();
        for b in blocks {
            if damaged.iter().any(|d| d.0 == b.series_id) {
                continue;
            }
            let pts = match decode(b.series_id, b.start_ts, &b.data) {
                Ok(pts) => pts,
                Err(diesel::result::Error::DeserializationError(e)) => {
                    by_series.retain(|s| s.0 != b.series_id);
                    damaged.push((b.series_id, e.to_string()));
                    continue;
                }
                Err(e) => return Err(e.into()),
            };
            match by_series.iter_mut().find(|s| s.0 == b.series_id) {
                Some(s) => s.1.extend(pts),
                None => by_series.push((b.series_id, pts)),
            }
        }
        by_series.sort_unstable_by_key(|s| s.0);
        let mut moved = 0;
        let mut series = Vec::with_capacity(by_series.len());
        for (series_id, mut pts) in by_series {
            // The hour's chunk (late readings sealed before) takes the
            // blocks in; if it is damaged they stay blocks.
            if let Some(e) = super::chunk_damage(c, series_id, start)? {
                damaged.push((series_id, e));
                continue;
            }
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
            diesel::delete(
                head_blocks::table
                    .filter(head_blocks::series_id.eq(series_id))
                    .filter(head_blocks::start_ts.eq(start)),
            )
            .execute(c)?;
            series.push(series_id);
        }
        Ok(Some(SealedHour {
            start_ts: start,
            series,
            moved,
            damaged,
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
        #[diesel(sql_type = BigInt)]
        last_ts: i64,
        #[diesel(sql_type = BigInt)]
        count: i64,
        #[diesel(sql_type = Binary)]
        data: Vec<u8>,
    }
    let old: Vec<Old> = diesel::sql_query(
        "SELECT id, start_ts, last_ts, count, data FROM head_blocks \
         WHERE series_id = ? AND first_ts < ?",
    )
    .bind::<BigInt, _>(series_id)
    .bind::<BigInt, _>(below)
    .load(conn)?;
    let mut deleted = 0;
    for b in old {
        let pts = match decode(series_id, b.start_ts, &b.data) {
            Ok(pts) => pts,
            // A damaged block must not stop retention (nor the size cap):
            // wholly below the horizon it goes as it would have, its
            // readings, unreadable, missing from the rollups; across the
            // horizon it is kept whole until it is below.
            Err(diesel::result::Error::DeserializationError(e)) => {
                if b.last_ts < below {
                    log::error!("retention deletes a damaged block: {e}");
                    diesel::sql_query("DELETE FROM head_blocks WHERE id = ?")
                        .bind::<BigInt, _>(b.id)
                        .execute(conn)?;
                    deleted += b.count.max(0) as u64;
                } else {
                    log::warn!("retention keeps a damaged block across its horizon: {e}");
                }
                continue;
            }
            Err(e) => return Err(e.into()),
        };
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

#[cfg(test)]
mod tests {
    use super::*;

    fn block(series_id: i64, start_ts: i64, points: &[(i64, f64)]) -> Block {
        Block {
            series_id,
            start_ts,
            data: encode(series_id, start_ts, points).unwrap(),
        }
    }

    fn minute(start: i64, value: f64) -> Points {
        (0..60)
            .map(|i| (start + i * 1000, value + i as f64))
            .collect()
    }

    #[test]
    fn the_decode_cache_answers_by_content_and_stays_bounded() {
        let a = minute(0, 1.0);
        let b = minute(0, 2.0);
        // Twice the same bytes: the same readings, the second from the
        // cache; other bytes under the same key: their own readings.
        assert_eq!(decoded(&block(1, 0, &a)).unwrap().points, a);
        assert!(
            CACHE
                .lock()
                .unwrap()
                .map
                .contains_key(block(1, 0, &a).data.as_slice())
        );
        assert_eq!(decoded(&block(1, 0, &a)).unwrap().points, a);
        assert_eq!(decoded(&block(1, 0, &b)).unwrap().points, b);
        // A damaged block is an error, cached or not.
        let mut bad = block(1, 0, &a);
        let n = bad.data.len();
        bad.data[n / 2] ^= 0xff;
        assert!(decoded(&bad).is_err());

        // Far more blocks than the bound: the oldest are dropped.
        for i in 0..(2 * CACHE_READINGS / 60) as i64 {
            let p = minute(i * 60_000, 0.5);
            assert_eq!(decoded(&block(2, 0, &p)).unwrap().points, p);
        }
        let c = CACHE.lock().unwrap();
        assert!(c.readings <= CACHE_READINGS, "{}", c.readings);
        assert!(c.readings > CACHE_READINGS - 60);
        assert_eq!(c.map.len(), c.order.len());
        assert_eq!(
            c.map.values().map(|d| d.points.len()).sum::<usize>(),
            c.readings
        );
        assert!(!c.map.contains_key(block(1, 0, &a).data.as_slice()));
    }

    #[test]
    fn a_decoded_block_aggregates_its_readings_per_minute() {
        // 90 readings from 30 s past a minute: 30 in it, 60 in the next.
        let pts: Points = (30..120).map(|i| (i * 1000, i as f64)).collect();
        let d = Decoded::new(pts);
        let m: Vec<(i64, i64, f64, f64, f64, i64)> = d
            .minutes
            .iter()
            .map(|(s, a)| (*s, a.count, a.min, a.max, a.sum, a.last_ts))
            .collect();
        let sum = |r: std::ops::Range<i64>| r.map(|i| i as f64).sum::<f64>();
        assert_eq!(
            m,
            [
                (0, 30, 30.0, 59.0, sum(30..60), 59_000),
                (60_000, 60, 60.0, 119.0, sum(60..120), 119_000),
            ]
        );
    }
}
