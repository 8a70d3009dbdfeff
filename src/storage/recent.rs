//! The most recent committed readings of each series, in memory, so the
//! common request, "the latest N readings of a sensor", is answered without
//! touching SQLite.
//!
//! A series is *warm* once loaded: it then holds every committed reading of
//! the series from `floor` on (the oldest it keeps), because the writer
//! appends each committed batch. Warming reads the latest rows from the
//! database; commits that land while it reads are parked and merged, so none
//! is missed or doubled. A page is served from here only when the series can
//! prove it holds every row the page needs; otherwise the caller uses SQL.
//! Anything that changes stored rows other than by appending (a reading
//! whose timestamp was moved, retention deleting) invalidates or trims.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{RwLock, RwLockWriteGuard};

use super::read::{Order, PageQuery, Points, bounds};

/// One series' cached readings, oldest first.
#[derive(Debug)]
enum Slot {
    /// Being loaded; commits meanwhile wait here, and deletions of old rows
    /// meanwhile (retention) are remembered as a cut.
    Warming {
        pending: Vec<(i64, f64)>,
        cut: i64,
    },
    Warm(Ring),
}

#[derive(Debug)]
struct Ring {
    rows: VecDeque<(i64, f64)>,
    /// Every committed reading with `ts >= floor` is in `rows`.
    floor: i64,
}

impl Ring {
    fn insert(&mut self, ts: i64, value: f64, depth: usize) {
        if ts < self.floor {
            return;
        }
        match self.rows.back() {
            Some(&(last, _)) if ts <= last => {
                // Out of order (a late reading): put it in its place.
                let at = self.rows.partition_point(|&(t, _)| t < ts);
                if self.rows.get(at).is_some_and(|&(t, _)| t == ts) {
                    self.rows[at] = (ts, value);
                } else {
                    self.rows.insert(at, (ts, value));
                }
            }
            _ => self.rows.push_back((ts, value)),
        }
        while self.rows.len() > depth {
            if let Some((t, _)) = self.rows.pop_front() {
                self.floor = t + 1;
            }
        }
    }
}

fn forget(slot: &mut Slot, ts: i64) {
    match slot {
        Slot::Warm(ring) => {
            while ring.rows.front().is_some_and(|&(t, _)| t < ts) {
                ring.rows.pop_front();
            }
            if ring.floor <= ts {
                ring.floor = i64::MIN;
            }
        }
        // A load that started before the delete may return deleted rows:
        // they are dropped when it arrives.
        Slot::Warming { cut, .. } => *cut = (*cut).max(ts),
    }
}

/// The write lock, which keeps the tracked count in step on release.
struct Guard<'a> {
    map: RwLockWriteGuard<'a, HashMap<i64, Slot>>,
    tracked: &'a AtomicUsize,
}

impl std::ops::Deref for Guard<'_> {
    type Target = HashMap<i64, Slot>;
    fn deref(&self) -> &Self::Target {
        &self.map
    }
}

impl std::ops::DerefMut for Guard<'_> {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.map
    }
}

impl Drop for Guard<'_> {
    fn drop(&mut self) {
        self.tracked.store(self.map.len(), Ordering::Release);
    }
}

/// Recent readings by series id.
pub struct RecentCache {
    depth: usize,
    series: RwLock<HashMap<i64, Slot>>,
    /// Series warm or warming, readable without the lock.
    tracked: AtomicUsize,
}

impl RecentCache {
    /// Keeps up to `depth` readings per series.
    pub fn new(depth: usize) -> RecentCache {
        RecentCache {
            depth: depth.max(1),
            series: RwLock::default(),
            tracked: AtomicUsize::new(0),
        }
    }

    /// Whether any series is cached (commits can skip the cache if not).
    pub fn tracks_any(&self) -> bool {
        self.tracked.load(Ordering::Acquire) > 0
    }

    pub fn depth(&self) -> usize {
        self.depth
    }

    fn write(&self) -> Guard<'_> {
        Guard {
            map: self.series.write().unwrap_or_else(|p| p.into_inner()),
            tracked: &self.tracked,
        }
    }

    /// After a commit: the committed rows, as (series id, ts, value).
    pub fn record(&self, rows: impl IntoIterator<Item = (i64, i64, f64)>) {
        let mut series = self.write();
        for (id, ts, value) in rows {
            match series.get_mut(&id) {
                Some(Slot::Warm(ring)) => ring.insert(ts, value, self.depth),
                Some(Slot::Warming { pending, .. }) => pending.push((ts, value)),
                None => {}
            }
        }
    }

    /// Forgets series whose stored rows changed other than by appending.
    pub fn invalidate(&self, ids: impl IntoIterator<Item = i64>) {
        let mut series = self.write();
        for id in ids {
            series.remove(&id);
        }
    }

    #[cfg(test)]
    /// The database no longer holds readings older than `ts` (retention
    /// deleted them): drop them here too. A series that held every reading
    /// from `ts` on now holds its whole remaining history.
    pub fn forget_before(&self, ts: i64) {
        for slot in self.write().values_mut() {
            forget(slot, ts);
        }
    }

    /// As [`forget_before`](Self::forget_before), for one series.
    pub fn forget_series_before(&self, id: i64, ts: i64) {
        if let Some(slot) = self.write().get_mut(&id) {
            forget(slot, ts);
        }
    }

    /// Starts warming `id`; false if it is warm or already warming.
    pub fn begin_warm(&self, id: i64) -> bool {
        let mut series = self.write();
        if series.contains_key(&id) {
            return false;
        }
        series.insert(
            id,
            Slot::Warming {
                pending: Vec::new(),
                cut: i64::MIN,
            },
        );
        true
    }

    /// Finishes warming with the latest rows read from the database
    /// (ascending). `complete` says whether they are the series' whole
    /// history (fewer than asked for).
    pub fn finish_warm(&self, id: i64, loaded: Vec<(i64, f64)>, complete: bool) {
        let mut series = self.write();
        let (pending, cut) = match series.remove(&id) {
            Some(Slot::Warming { pending, cut }) => (pending, cut),
            _ => return,
        };
        // Rows deleted while the load ran may be in it: drop them.
        let mut loaded = loaded;
        loaded.retain(|&(t, _)| t >= cut);
        let floor = if complete {
            i64::MIN
        } else {
            loaded.first().map_or(cut, |&(t, _)| t)
        };
        let mut ring = Ring {
            rows: loaded.into(),
            floor,
        };
        for (ts, value) in pending {
            ring.insert(ts, value, self.depth);
        }
        while ring.rows.len() > self.depth {
            if let Some((t, _)) = ring.rows.pop_front() {
                ring.floor = t + 1;
            }
        }
        series.insert(id, Slot::Warm(ring));
    }

    /// Gives up warming (the load failed).
    pub fn abort_warm(&self, id: i64) {
        let mut series = self.write();
        if matches!(series.get(&id), Some(Slot::Warming { .. })) {
            series.remove(&id);
        }
    }

    /// The rows of one series that a page needs (up to `limit + 1`, in page
    /// order), if the cache provably holds all of them; `None` means ask
    /// the database. `Err(id)` names a series that is not warm yet.
    pub fn page_rows(&self, q: &PageQuery, id: i64) -> Result<Option<Points>, i64> {
        let series = self.series.read().unwrap_or_else(|p| p.into_inner());
        let Some(Slot::Warm(ring)) = series.get(&id) else {
            return Err(id);
        };
        let want = q.limit.saturating_add(1);
        // Bounds from the range and the cursor, as in `read::readings_page`.
        let (lo, hi) = bounds(q, id);
        if lo > hi {
            return Ok(Some(Vec::new()));
        }
        let start = ring.rows.partition_point(|&(t, _)| t < lo);
        let end = ring.rows.partition_point(|&(t, _)| t <= hi);
        let in_range = ring.rows.range(start..end);
        match q.order {
            Order::Desc => {
                let rows: Vec<_> = in_range.rev().take(want).copied().collect();
                // Enough rows, or the range starts at or above the floor:
                // nothing older can be missing.
                (rows.len() == want || lo >= ring.floor)
                    .then_some(rows)
                    .map_or(Ok(None), |r| Ok(Some(r)))
            }
            Order::Asc => Ok((lo >= ring.floor).then(|| in_range.take(want).copied().collect())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::catalog::SeriesInfo;
    use crate::storage::read::Cursor;
    use crate::storage::testing::{TestDb, writer_db};
    use std::sync::Arc;

    fn query(limit: usize, order: Order) -> PageQuery {
        PageQuery {
            series: vec![Arc::new(SeriesInfo {
                id: 1,
                sensor: "s".into(),
                metric: "m".into(),
                unit: "".into(),
            })],
            from: None,
            to: None,
            limit,
            order,
            cursor: None,
        }
    }

    fn ts(rows: &[(i64, f64)]) -> Vec<i64> {
        rows.iter().map(|r| r.0).collect()
    }

    #[test]
    fn cold_series_are_reported_and_commits_before_warming_are_ignored() {
        let c = RecentCache::new(10);
        c.record([(1, 5, 0.0)]);
        assert_eq!(c.page_rows(&query(3, Order::Desc), 1), Err(1));
    }

    #[test]
    fn commits_during_warming_are_merged_without_duplicates() {
        let c = RecentCache::new(10);
        assert!(c.begin_warm(1));
        assert!(!c.begin_warm(1));
        // A commit lands while the database is being read; one of its rows
        // is also in what the read returns.
        c.record([(1, 30, 3.0), (1, 40, 4.0)]);
        c.finish_warm(1, vec![(10, 1.0), (20, 2.0), (30, 3.0)], true);
        let rows = c.page_rows(&query(10, Order::Desc), 1).unwrap().unwrap();
        assert_eq!(ts(&rows), [40, 30, 20, 10]);
    }

    #[test]
    fn pages_are_served_only_when_provably_complete() {
        let c = RecentCache::new(5);
        c.begin_warm(1);
        // Not the whole history: the floor is the oldest loaded row.
        c.finish_warm(1, (10..15).map(|t| (t * 10, t as f64)).collect(), false);
        c.record((15..18).map(|t| (1, t * 10, t as f64)));
        // Depth 5: holds 130..=170, floor 121.
        let mut q = query(3, Order::Desc);
        assert_eq!(
            ts(&c.page_rows(&q, 1).unwrap().unwrap()),
            [170, 160, 150, 140]
        );
        q.limit = 10;
        assert_eq!(
            c.page_rows(&q, 1).unwrap(),
            None,
            "older rows may exist in the database"
        );
        q.from = Some(135);
        assert_eq!(
            ts(&c.page_rows(&q, 1).unwrap().unwrap()),
            [170, 160, 150, 140]
        );
        let mut q = query(2, Order::Asc);
        assert_eq!(c.page_rows(&q, 1).unwrap(), None);
        q.from = Some(150);
        assert_eq!(ts(&c.page_rows(&q, 1).unwrap().unwrap()), [150, 160, 170]);
    }

    #[test]
    fn cursors_and_late_readings() {
        let c = RecentCache::new(100);
        c.begin_warm(1);
        c.finish_warm(1, vec![(10, 1.0), (30, 3.0)], true);
        c.record([(1, 20, 2.0), (1, 40, 4.0)]);
        let mut q = query(2, Order::Desc);
        q.cursor = Some(Cursor {
            ts: 30,
            series_id: 1,
        });
        assert_eq!(ts(&c.page_rows(&q, 1).unwrap().unwrap()), [20, 10]);
        q.cursor = Some(Cursor {
            ts: 30,
            series_id: 2,
        });
        assert_eq!(ts(&c.page_rows(&q, 1).unwrap().unwrap()), [30, 20, 10]);
    }

    #[test]
    fn every_page_served_from_memory_equals_the_database_page() {
        use crate::storage::read::{latest, merge_page, readings_page};
        use crate::storage::writer::commit_batch;
        use crate::vocab::reading::Reading;

        let TestDb {
            dir: _dir,
            cfg: _,
            mut conn,
            catalog,
        } = writer_db();
        let keys = crate::storage::testing::series_keys(&["a", "b", "c"]);
        let mut rng = fastrand::Rng::with_seed(11);
        let batch = |from: i64, to: i64, rng: &mut fastrand::Rng| -> Vec<Reading> {
            let mut out = Vec::new();
            for t in from..to {
                for k in &keys {
                    if rng.u8(..3) > 0 {
                        out.push(Reading {
                            series: k.clone(),
                            ts_ms: t * 10,
                            value: t as f64,
                        });
                    }
                }
            }
            out
        };
        commit_batch(&mut conn, &catalog, &batch(0, 400, &mut rng)).unwrap();
        let cache = RecentCache::new(60);
        for s in catalog.all() {
            cache.begin_warm(s.id);
            let rows = latest(&mut conn, s.id, 60).unwrap();
            let complete = rows.len() < 60;
            cache.finish_warm(s.id, rows, complete);
        }
        // Later commits reach the cache the way the writer feeds it.
        let more = batch(400, 450, &mut rng);
        commit_batch(&mut conn, &catalog, &more).unwrap();
        cache.record(more.iter().map(|r| {
            (
                catalog
                    .lookup(&r.series.sensor, &r.series.metric)
                    .unwrap()
                    .id,
                r.ts_ms,
                r.value,
            )
        }));

        let mut served = 0;
        for _ in 0..2000 {
            let series = catalog.all();
            let order = if rng.bool() { Order::Desc } else { Order::Asc };
            let mut q = PageQuery {
                series,
                from: rng.bool().then(|| rng.i64(0..4500)),
                to: rng.bool().then(|| rng.i64(0..4600)),
                limit: rng.usize(1..40),
                order,
                cursor: None,
            };
            if rng.bool() {
                q.cursor = Some(Cursor {
                    ts: rng.i64(0..4600),
                    series_id: rng.i64(1..4),
                });
            }
            let db = readings_page(&mut conn, &q).unwrap();
            let mut per = Vec::new();
            let mut complete = true;
            for s in &q.series {
                match cache.page_rows(&q, s.id).unwrap() {
                    Some(rows) => per.push((s.clone(), rows)),
                    None => complete = false,
                }
            }
            if !complete {
                continue;
            }
            served += 1;
            let mem = merge_page(&q, per);
            let key = |p: &crate::storage::read::Page| -> Vec<(i64, i64, u64)> {
                p.rows
                    .iter()
                    .map(|r| (r.ts, r.series.id, r.value.to_bits()))
                    .collect()
            };
            assert_eq!(key(&mem), key(&db), "{q:?}");
            assert_eq!(mem.next, db.next, "{q:?}");
        }
        assert!(served > 300, "the cache answered only {served} of 2000");
    }

    #[test]
    fn rows_deleted_while_warming_do_not_come_back() {
        let c = RecentCache::new(100);
        c.begin_warm(1);
        c.forget_series_before(1, 25);
        c.finish_warm(1, vec![(10, 1.0), (20, 2.0), (30, 3.0)], true);
        let q = query(10, Order::Desc);
        assert_eq!(ts(&c.page_rows(&q, 1).unwrap().unwrap()), [30]);
    }

    #[test]
    fn invalidation_and_retention() {
        let c = RecentCache::new(100);
        c.begin_warm(1);
        c.finish_warm(1, vec![(10, 1.0), (20, 2.0), (30, 3.0)], true);
        c.forget_before(25);
        let q = query(10, Order::Desc);
        assert_eq!(ts(&c.page_rows(&q, 1).unwrap().unwrap()), [30]);
        // A series that did not hold everything from the cut keeps its floor.
        c.begin_warm(2);
        c.finish_warm(2, vec![(100, 1.0), (110, 1.0)], false);
        c.forget_before(50);
        let mut q2 = query(10, Order::Desc);
        q2.series[0] = Arc::new(SeriesInfo {
            id: 2,
            ..(*q.series[0]).clone()
        });
        assert_eq!(c.page_rows(&q2, 2).unwrap(), None);
        c.invalidate([1]);
        assert_eq!(c.page_rows(&q, 1), Err(1));
    }
}
