//! The head: every accepted reading that is not committed yet, by series, in
//! time order, answering reads from the moment it is accepted.
//!
//! The ingest queue is the writer's order (FIFO, overflow policy); the head
//! is the same readings indexed for reads. The queue keeps both in step: a
//! reading enters the head when the queue accepts it, and leaves it when the
//! overflow policy drops it or when the commit that stored it is visible.
//! Reads merge the head with what SQLite (or the recent-readings cache)
//! holds, through one consistent view:
//!
//! - **The commit gate.** The writer holds the gate's write side from just
//!   before `COMMIT` until the committed readings have left the head (and
//!   entered the recent-readings cache). A reader holds its read side while
//!   it pins its SQLite snapshot ([`Head::pinned`]) and copies what it needs
//!   from the head, or while it reads the cache and the head ([`Head::view`]).
//!   So a reader sees every accepted reading exactly once: either the commit
//!   is in its snapshot and the readings are gone from the head, or neither.
//! - **One key per reading.** The head gives each reading the key it will be
//!   stored under: a reading whose (series, timestamp) another uncommitted
//!   reading holds moves forward a millisecond at a time, the writer's rule
//!   for colliding timestamps, applied at acceptance. So a reading keeps its
//!   `(ts, series)` when it moves from the head to the table, and a cursor
//!   made of that pair stays exact across commits. (A reading that collides
//!   with a row committed earlier, when a clock stepped backwards, is still
//!   moved by the writer at commit; only such readings change key.)
//! - **Ids at acceptance.** A reading of a new series gets the series' id
//!   when accepted (reserved in the catalog), so reads and cursors name it
//!   before its row exists.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock, RwLockReadGuard, RwLockWriteGuard};

use diesel::connection::SimpleConnection;
use diesel::prelude::*;

use super::catalog::SeriesCatalog;
use crate::vocab::reading::{Reading, SeriesKey};

/// A reading is moved forward at most this many milliseconds to find a
/// free key among the uncommitted readings of its series.
const MAX_HEAD_NUDGES: i64 = 10_000;

/// One series' uncommitted readings, by timestamp (unique), oldest first.
type Lane = VecDeque<(i64, f64)>;

/// Readings of one series as (timestamp, value).
pub type Points = Vec<(i64, f64)>;

/// The uncommitted readings of every series, and the commit gate.
pub struct Head {
    catalog: RwLock<Arc<SeriesCatalog>>,
    gate: RwLock<()>,
    lanes: RwLock<HashMap<i64, Lane>>,
    len: AtomicUsize,
    /// The latest accepted reading of each series (committed or not).
    latest: Mutex<HashMap<i64, Latest>>,
}

/// The latest accepted reading of a series.
#[derive(Debug, Clone)]
pub struct Latest {
    pub series: Arc<SeriesKey>,
    pub ts_ms: i64,
    pub value: f64,
}

impl Default for Head {
    fn default() -> Head {
        Head::new(Arc::new(SeriesCatalog::default()))
    }
}

impl Head {
    pub fn new(catalog: Arc<SeriesCatalog>) -> Head {
        Head {
            catalog: RwLock::new(catalog),
            gate: RwLock::new(()),
            lanes: RwLock::default(),
            len: AtomicUsize::new(0),
            latest: Mutex::default(),
        }
    }

    /// The catalog whose ids the head assigns (the writer's).
    pub fn catalog(&self) -> Arc<SeriesCatalog> {
        self.catalog
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Uses `catalog` from now on (the writer's, once it exists).
    pub fn set_catalog(&self, catalog: Arc<SeriesCatalog>) {
        *self.catalog.write().unwrap_or_else(|p| p.into_inner()) = catalog;
    }

    fn lanes_mut(&self) -> RwLockWriteGuard<'_, HashMap<i64, Lane>> {
        self.lanes.write().unwrap_or_else(|p| p.into_inner())
    }

    fn lanes(&self) -> RwLockReadGuard<'_, HashMap<i64, Lane>> {
        self.lanes.read().unwrap_or_else(|p| p.into_inner())
    }

    /// Readings in the head now.
    pub fn len(&self) -> usize {
        self.len.load(Ordering::Relaxed)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Accepts readings: gives each its series id and its key (moving a
    /// timestamp an uncommitted reading of the series holds forward, see
    /// the module docs), and indexes them. Returns the ids, in order.
    pub(super) fn admit(&self, readings: &mut [Reading]) -> Vec<i64> {
        let catalog = self.catalog();
        let mut ids = Vec::with_capacity(readings.len());
        // A push holds few series; resolve each key once.
        let mut known: Vec<(*const SeriesKey, i64)> = Vec::new();
        for r in readings.iter() {
            let ptr = Arc::as_ptr(&r.series);
            let id = match known.iter().find(|(p, _)| *p == ptr) {
                Some(&(_, id)) => id,
                None => {
                    let k = &r.series;
                    let id = catalog.resolve(&k.sensor, &k.metric, &k.unit).id;
                    known.push((ptr, id));
                    id
                }
            };
            ids.push(id);
        }
        let mut lanes = self.lanes_mut();
        for (r, &id) in readings.iter_mut().zip(&ids) {
            let lane = lanes.entry(id).or_default();
            let mut ts = r.ts_ms;
            let mut at = lane.partition_point(|&(t, _)| t < ts);
            let mut step = 0;
            while lane.get(at).is_some_and(|&(t, _)| t == ts) && step < MAX_HEAD_NUDGES {
                ts += 1;
                at += 1;
                step += 1;
            }
            r.ts_ms = ts;
            lane.insert(at, (ts, r.value));
        }
        drop(lanes);
        self.len.fetch_add(readings.len(), Ordering::Relaxed);
        let mut latest = self.latest.lock().unwrap_or_else(|p| p.into_inner());
        for (r, &id) in readings.iter().zip(&ids) {
            match latest.get_mut(&id) {
                Some(l) if l.ts_ms > r.ts_ms => {}
                Some(l) => {
                    l.ts_ms = r.ts_ms;
                    l.value = r.value;
                    l.series = r.series.clone();
                }
                None => {
                    latest.insert(
                        id,
                        Latest {
                            series: r.series.clone(),
                            ts_ms: r.ts_ms,
                            value: r.value,
                        },
                    );
                }
            }
        }
        ids
    }

    /// The latest accepted reading of every series accepted since start,
    /// by series id.
    pub fn latest(&self) -> Vec<Latest> {
        let latest = self.latest.lock().unwrap_or_else(|p| p.into_inner());
        let mut v: Vec<(i64, Latest)> = latest.iter().map(|(id, l)| (*id, l.clone())).collect();
        v.sort_by_key(|(id, _)| *id);
        v.into_iter().map(|(_, l)| l).collect()
    }

    /// Removes readings (committed, or dropped by the overflow policy),
    /// given as (series id, ts).
    pub(super) fn remove(&self, keys: impl IntoIterator<Item = (i64, i64)>) {
        let mut lanes = self.lanes_mut();
        let mut removed = 0;
        for (id, ts) in keys {
            let Some(lane) = lanes.get_mut(&id) else {
                continue;
            };
            let found = if lane.front().is_some_and(|&(t, _)| t == ts) {
                Some(0)
            } else {
                lane.binary_search_by_key(&ts, |&(t, _)| t).ok()
            };
            if let Some(at) = found {
                lane.remove(at);
                removed += 1;
            }
            if lane.is_empty() {
                lanes.remove(&id);
            }
        }
        self.len.fetch_sub(removed, Ordering::Relaxed);
    }

    /// The writer holds this from just before `COMMIT` until the committed
    /// readings have left the head.
    pub(super) fn commit_gate(&self) -> RwLockWriteGuard<'_, ()> {
        self.gate.write().unwrap_or_else(|p| p.into_inner())
    }

    /// Runs `f` on the head at one instant no commit crosses: whatever else
    /// `f` reads under it (the recent-readings cache) is consistent with it.
    pub fn view<T>(&self, f: impl FnOnce(&HeadView<'_>) -> T) -> T {
        let _gate = self.gate.read().unwrap_or_else(|p| p.into_inner());
        let lanes = self.lanes();
        f(&HeadView { lanes: &lanes })
    }

    /// Call first inside a read transaction on `conn`: pins the
    /// transaction's snapshot and runs `f` on the head at the same instant,
    /// so the two hold every accepted reading exactly once.
    pub fn pinned<T>(
        &self,
        conn: &mut SqliteConnection,
        f: impl FnOnce(&HeadView<'_>) -> T,
    ) -> QueryResult<T> {
        let _gate = self.gate.read().unwrap_or_else(|p| p.into_inner());
        // The first read of a transaction fixes its snapshot.
        conn.batch_execute("SELECT 1 FROM series LIMIT 1")?;
        let lanes = self.lanes();
        Ok(f(&HeadView { lanes: &lanes }))
    }
}

/// The head as one reader sees it (see [`Head::view`]).
pub struct HeadView<'a> {
    lanes: &'a HashMap<i64, Lane>,
}

impl HeadView<'_> {
    /// Up to `want` readings of series `id` with `lo <= ts <= hi`, newest
    /// first if `newest_first`, else oldest first.
    pub fn rows(&self, id: i64, lo: i64, hi: i64, newest_first: bool, want: usize) -> Points {
        let Some(lane) = self.lanes.get(&id) else {
            return Vec::new();
        };
        if lo > hi {
            return Vec::new();
        }
        let start = lane.partition_point(|&(t, _)| t < lo);
        let end = lane.partition_point(|&(t, _)| t <= hi);
        let range = lane.range(start..end);
        if newest_first {
            range.rev().take(want).copied().collect()
        } else {
            range.take(want).copied().collect()
        }
    }

    /// Every reading of series `id` with `lo <= ts < hi`, oldest first.
    pub fn range(&self, id: i64, lo: i64, hi: i64) -> Points {
        self.rows(id, lo, hi.saturating_sub(1), false, usize::MAX)
    }

    /// The oldest uncommitted timestamp of series `id`: everything of it
    /// older than this is committed.
    pub fn oldest(&self, id: i64) -> Option<i64> {
        self.lanes.get(&id)?.front().map(|&(t, _)| t)
    }

    /// The oldest uncommitted timestamp of any series.
    pub fn oldest_overall(&self) -> Option<i64> {
        self.lanes
            .values()
            .filter_map(|l| l.front())
            .map(|&(t, _)| t)
            .min()
    }

    /// The oldest uncommitted timestamp among `ids`.
    pub fn oldest_of(&self, ids: impl IntoIterator<Item = i64>) -> Option<i64> {
        ids.into_iter().filter_map(|id| self.oldest(id)).min()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(metric: &str) -> Arc<SeriesKey> {
        Arc::new(SeriesKey {
            sensor: "s".into(),
            metric: metric.into(),
            unit: "".into(),
        })
    }

    #[test]
    fn same_millisecond_readings_get_distinct_keys_and_new_series_ids() {
        let catalog = Arc::new(SeriesCatalog::default());
        let head = Head::new(catalog.clone());
        let (a, b) = (key("a"), key("b"));
        let r = |k: &Arc<SeriesKey>, ts| Reading {
            series: k.clone(),
            ts_ms: ts,
            value: ts as f64,
        };
        let mut batch = vec![r(&a, 10), r(&a, 10), r(&b, 10), r(&a, 11)];
        let ids = head.admit(&mut batch);
        assert_eq!(ids, [1, 1, 2, 1]);
        assert_eq!(
            batch.iter().map(|r| r.ts_ms).collect::<Vec<_>>(),
            [10, 11, 10, 12]
        );
        assert_eq!(catalog.reserved("s", "a").unwrap().id, 1);
        assert!(catalog.lookup("s", "a").is_none(), "not committed");
        assert_eq!(catalog.readable_for_sensor("s").len(), 2);
        head.view(|h| {
            assert_eq!(h.range(1, 0, 100).len(), 3);
            assert_eq!(h.oldest_of([1, 2]), Some(10));
            let desc = h.rows(1, 0, 11, true, 5);
            assert_eq!(desc, [(11, 10.0), (10, 10.0)]);
        });
        head.remove([(1, 11), (1, 10)]);
        assert_eq!(head.len(), 2);
        head.view(|h| assert_eq!(h.range(1, 0, 100), [(12, 11.0)]));
    }
}
