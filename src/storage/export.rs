//! Export: every raw reading of some series in a time range, in time order,
//! a bounded chunk at a time, so that a year of data streams out through a
//! few hundred kilobytes of memory.
//!
//! Each series is a lane read along its keys (sealed chunks and rows, see
//! `storage::chunk`) a few thousand readings at a time; lanes are merged by `(ts, series_id)`. A
//! lane is refilled only when empty, and before any row is emitted past it,
//! so the merged order is exact while at most `lanes × per_lane` rows are
//! ever held (plus, with a head, the uncommitted readings of the range).
//! Nothing holds a connection between chunks: a slow client ties up no
//! database resource.
//!
//! With a [`Head`], each chunk reads the table and the head's uncommitted
//! readings through one consistent view (`Head::pinned`): a lane takes the
//! head's readings up to the last row its read returned (all of them once
//! the table has no more), so every accepted reading is exported once, even
//! when it is committed between two chunks.

use std::collections::VecDeque;
use std::sync::Arc;

use diesel::prelude::*;

use super::catalog::SeriesInfo;
use super::head::Head;
use super::read::Points;

/// A lane never reads fewer rows than this at once, however many series
/// share a chunk.
pub const MIN_LANE_ROWS: usize = 256;

/// One exported reading.
#[derive(Debug, Clone)]
pub struct ExportRow {
    pub series: Arc<SeriesInfo>,
    pub ts: i64,
    pub value: f64,
}

struct Lane {
    series: Arc<SeriesInfo>,
    /// The next read starts here (inclusive).
    next_from: i64,
    buf: VecDeque<(i64, f64)>,
    exhausted: bool,
    /// The head's readings of this chunk's view from `next_from` on.
    pending: VecDeque<(i64, f64)>,
}

/// A position in an export; see the module docs.
pub struct ExportCursor {
    lanes: Vec<Lane>,
    to: i64,
    per_lane: usize,
    high_water: usize,
    reads: u64,
}

impl ExportCursor {
    /// Readings of `series` with `from <= ts < to`; chunks of about
    /// `chunk_rows`.
    pub fn new(
        series: Vec<Arc<SeriesInfo>>,
        from: Option<i64>,
        to: i64,
        chunk_rows: usize,
    ) -> ExportCursor {
        let per_lane = (chunk_rows / series.len().max(1)).max(MIN_LANE_ROWS);
        ExportCursor {
            lanes: series
                .into_iter()
                .map(|series| Lane {
                    series,
                    next_from: from.unwrap_or(i64::MIN),
                    buf: VecDeque::new(),
                    exhausted: false,
                    pending: VecDeque::new(),
                })
                .collect(),
            to,
            per_lane,
            high_water: 0,
            reads: 0,
        }
    }

    fn refill(&mut self, conn: &mut SqliteConnection, i: usize) -> QueryResult<()> {
        let lane = &mut self.lanes[i];
        let rows = super::chunk::points(
            conn,
            lane.series.id,
            lane.next_from,
            self.to.saturating_sub(1),
            super::read::Order::Asc,
            self.per_lane,
        )?;
        self.reads += 1;
        lane.exhausted = rows.len() < self.per_lane;
        // The head's readings up to the table's last row (all, once the
        // table is exhausted): nothing the table holds beyond is skipped.
        let upto = match rows.last() {
            Some(&(last, _)) if !lane.exhausted => last,
            _ => i64::MAX,
        };
        let take = lane.pending.partition_point(|&(t, _)| t <= upto);
        let head: Points = lane.pending.drain(..take).collect();
        let merged = super::read::merge_points(super::read::Order::Asc, rows, head, usize::MAX);
        if let Some(&(last, _)) = merged.last() {
            lane.next_from = last + 1;
        }
        lane.buf.extend(merged);
        Ok(())
    }

    #[cfg(test)]
    /// The next rows in `(ts, series_id)` order, at most `max_rows`; empty
    /// once the export is complete.
    pub fn next_chunk(
        &mut self,
        conn: &mut SqliteConnection,
        max_rows: usize,
    ) -> QueryResult<Vec<ExportRow>> {
        self.next_chunk_with(conn, None, max_rows)
    }

    /// [`next_chunk`](Self::next_chunk) over the table and `head`'s
    /// uncommitted readings together (see the module docs).
    pub fn next_chunk_with(
        &mut self,
        conn: &mut SqliteConnection,
        head: Option<&Head>,
        max_rows: usize,
    ) -> QueryResult<Vec<ExportRow>> {
        let Some(head) = head else {
            return self.chunk(conn, max_rows);
        };
        conn.transaction(|c| {
            let to = self.to;
            let lanes = &mut self.lanes;
            head.pinned(c, |h| {
                for lane in lanes.iter_mut() {
                    lane.pending = if lane.exhausted {
                        VecDeque::new()
                    } else {
                        h.range(lane.series.id, lane.next_from, to).into()
                    };
                }
            })?;
            self.chunk(c, max_rows)
        })
    }

    fn chunk(
        &mut self,
        conn: &mut SqliteConnection,
        max_rows: usize,
    ) -> QueryResult<Vec<ExportRow>> {
        let mut out = Vec::with_capacity(max_rows.min(65_536));
        while out.len() < max_rows {
            for i in 0..self.lanes.len() {
                if self.lanes[i].buf.is_empty() && !self.lanes[i].exhausted {
                    self.refill(conn, i)?;
                }
            }
            let held: usize = self.lanes.iter().map(|l| l.buf.len()).sum();
            self.high_water = self.high_water.max(held);
            // Emit from the earliest lane until it runs dry (then refill
            // before going on) or another lane is earlier.
            let Some(i) = self
                .lanes
                .iter()
                .enumerate()
                .filter_map(|(i, l)| l.buf.front().map(|&(ts, _)| ((ts, l.series.id), i)))
                .min()
                .map(|(_, i)| i)
            else {
                break;
            };
            let lane = &mut self.lanes[i];
            if let Some((ts, value)) = lane.buf.pop_front() {
                out.push(ExportRow {
                    series: lane.series.clone(),
                    ts,
                    value,
                });
            }
        }
        Ok(out)
    }

    #[cfg(test)]
    /// The most rows held in memory at once so far.
    pub fn high_water(&self) -> usize {
        self.high_water
    }

    #[cfg(test)]
    /// The bound on [`high_water`](Self::high_water).
    pub fn bound(&self) -> usize {
        self.lanes.len() * self.per_lane
    }

    #[cfg(test)]
    /// Database reads so far.
    pub fn reads(&self) -> u64 {
        self.reads
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::testing::{TestDb, writer_db};
    use crate::storage::writer::commit_batch;
    use crate::vocab::reading::{Reading, SeriesKey};

    #[test]
    fn merges_lanes_in_time_order_within_a_bounded_buffer() {
        let TestDb {
            dir: _dir,
            cfg: _,
            mut conn,
            catalog,
        } = writer_db();
        let keys = crate::storage::testing::series_keys(&["x", "y", "z"]);
        // Lanes of different densities, with shared timestamps.
        let mut expected = Vec::new();
        let mut batch = Vec::new();
        for t in 0..40_000i64 {
            for (k, key) in keys.iter().enumerate() {
                if t % (k as i64 + 1) == 0 {
                    batch.push(Reading {
                        series: key.clone(),
                        ts_ms: t,
                        value: t as f64,
                    });
                }
            }
        }
        commit_batch(&mut conn, &catalog, &batch).unwrap();
        let series = catalog.for_sensor("s");
        for r in &batch {
            let id = catalog.lookup("s", &r.series.metric).unwrap().id;
            if (1000..35_000).contains(&r.ts_ms) {
                expected.push((r.ts_ms, id));
            }
        }
        expected.sort();

        let mut cursor = ExportCursor::new(series, Some(1000), 35_000, 900);
        let mut got = Vec::new();
        let mut chunks = 0;
        loop {
            let rows = cursor.next_chunk(&mut conn, 900).unwrap();
            if rows.is_empty() {
                break;
            }
            assert!(rows.len() <= 900);
            chunks += 1;
            got.extend(rows.iter().map(|r| (r.ts, r.series.id)));
        }
        assert_eq!(got, expected);
        assert!(chunks > 60, "{chunks}");
        assert!(
            cursor.high_water() <= cursor.bound(),
            "{}",
            cursor.high_water()
        );
        assert_eq!(cursor.bound(), 3 * 300);
        assert!(got.len() > 50 * cursor.bound());
    }

    #[test]
    fn reads_lazily_one_chunk_at_a_time() {
        let TestDb {
            dir: _dir,
            cfg: _,
            mut conn,
            catalog,
        } = writer_db();
        let k = Arc::new(SeriesKey {
            sensor: "s".into(),
            metric: "v".into(),
            unit: "".into(),
        });
        let batch: Vec<_> = (0..20_000)
            .map(|t| Reading {
                series: k.clone(),
                ts_ms: t,
                value: 0.5,
            })
            .collect();
        commit_batch(&mut conn, &catalog, &batch).unwrap();
        let mut cursor = ExportCursor::new(catalog.all(), None, i64::MAX, 1000);
        assert_eq!(cursor.reads(), 0, "nothing is read up front");
        assert_eq!(cursor.next_chunk(&mut conn, 1000).unwrap().len(), 1000);
        assert_eq!(cursor.reads(), 1);
        assert_eq!(cursor.next_chunk(&mut conn, 1000).unwrap()[0].ts, 1000);
        assert_eq!(cursor.reads(), 2);
    }
}
