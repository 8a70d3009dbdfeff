//! Read queries for the API: pages of readings across one or more series,
//! in time order, with a cursor that returns every row exactly once.
//!
//! Each series is read along its keys, sealed chunks and rows together
//! (`chunk::points`, at most `limit + 1` readings), and the per-series
//! results are merged.
//! The page order is `(ts, series_id)`, descending by default, so a cursor
//! is that pair and ties between series at the same millisecond are safe.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use diesel::prelude::*;

use super::catalog::SeriesInfo;
use super::chunk;
use super::head::Head;
pub use super::points::{Order, Points, merge_points};

/// Where the next page starts: the last row of the previous page.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cursor {
    pub ts: i64,
    pub series_id: i64,
}

impl fmt::Display for Cursor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}_{}", self.ts, self.series_id)
    }
}

impl FromStr for Cursor {
    type Err = ();

    fn from_str(s: &str) -> Result<Cursor, ()> {
        let (ts, id) = s.split_once('_').ok_or(())?;
        Ok(Cursor {
            ts: ts.parse().map_err(|_| ())?,
            series_id: id.parse().map_err(|_| ())?,
        })
    }
}

/// A page request over a set of series.
#[derive(Debug, Clone)]
pub struct PageQuery {
    pub series: Vec<Arc<SeriesInfo>>,
    /// Inclusive lower bound, epoch ms.
    pub from: Option<i64>,
    /// Exclusive upper bound, epoch ms.
    pub to: Option<i64>,
    pub limit: usize,
    pub order: Order,
    pub cursor: Option<Cursor>,
}

/// One stored reading.
#[derive(Debug, Clone)]
pub struct Row {
    pub series: Arc<SeriesInfo>,
    pub ts: i64,
    pub value: f64,
}

/// A page of rows and the cursor of the next page, if there is one.
#[derive(Debug, Clone)]
pub struct Page {
    pub rows: Vec<Row>,
    pub next: Option<Cursor>,
}

/// One series' rows of a page: the raw readings within its bounds, sealed
/// or not, at most `limit + 1`, in page order.
fn series_rows(conn: &mut SqliteConnection, q: &PageQuery, s: &SeriesInfo) -> QueryResult<Points> {
    let (lo, hi) = bounds(q, s.id);
    chunk::points(conn, s.id, lo, hi, q.order, q.limit.saturating_add(1))
}

/// The SQL of a page's per-series queries (for the slow-query log).
pub fn readings_page_sql() -> String {
    chunk::points_sql().to_owned()
}

/// The timestamps `[lo, hi]` (inclusive) of series `id` that a page may
/// hold, from the range and the cursor (as the SQL of [`readings_page`]).
pub fn bounds(q: &PageQuery, id: i64) -> (i64, i64) {
    let mut lo = q.from.unwrap_or(i64::MIN);
    let mut hi = q.to.map_or(i64::MAX, |t| t.saturating_sub(1));
    if let Some(Cursor { ts, series_id }) = q.cursor {
        match q.order {
            Order::Desc if id < series_id => hi = hi.min(ts),
            Order::Desc => hi = hi.min(ts.saturating_sub(1)),
            Order::Asc if id > series_id => lo = lo.max(ts),
            Order::Asc => lo = lo.max(ts.saturating_add(1)),
        }
    }
    (lo, hi)
}

/// How many stored readings of `series` are newer than `after` (one
/// primary-key range count per series).
pub fn count_after(
    conn: &mut SqliteConnection,
    series: &[Arc<SeriesInfo>],
    after: i64,
) -> QueryResult<u64> {
    let mut total = 0u64;
    for s in series {
        total += chunk::count_after(conn, s.id, after)?;
    }
    Ok(total)
}

/// A page from the database and the head together, through one
/// consistent view (`Head::pinned`): every accepted reading of the page's
/// range, committed or not, exactly once. Also the oldest uncommitted
/// timestamp among the page's series (older readings are all committed).
pub fn readings_page_with_head(
    conn: &mut SqliteConnection,
    q: &PageQuery,
    head: &Head,
) -> QueryResult<(Page, Option<i64>)> {
    let want = q.limit.saturating_add(1);
    conn.transaction(|c| {
        let (from_head, oldest) = head.pinned(c, |h| {
            let rows: Vec<Points> = q
                .series
                .iter()
                .map(|s| {
                    let (lo, hi) = bounds(q, s.id);
                    h.rows(s.id, lo, hi, q.order == Order::Desc, want)
                })
                .collect();
            (rows, h.oldest_of(q.series.iter().map(|s| s.id)))
        })?;
        let mut per_series = Vec::with_capacity(q.series.len());
        for (s, head_rows) in q.series.iter().zip(from_head) {
            let stored = series_rows(c, q, s)?;
            per_series.push((s.clone(), merge_points(q.order, stored, head_rows, want)));
        }
        Ok((merge_page(q, per_series), oldest))
    })
}

#[cfg(test)]
/// Reads one page from the database alone (the reference the cache and
/// head paths are tested against). See the module docs for the order and
/// cursor rules.
pub fn readings_page(conn: &mut SqliteConnection, q: &PageQuery) -> QueryResult<Page> {
    let mut per_series = Vec::with_capacity(q.series.len());
    for s in &q.series {
        per_series.push((s.clone(), series_rows(conn, q, s)?));
    }
    Ok(merge_page(q, per_series))
}

/// The latest `depth` readings of a series, oldest first (to warm the
/// recent-readings cache).
pub fn latest(
    conn: &mut SqliteConnection,
    series_id: i64,
    depth: usize,
) -> QueryResult<Vec<(i64, f64)>> {
    let mut rows = chunk::points(conn, series_id, i64::MIN, i64::MAX, Order::Desc, depth)?;
    rows.reverse();
    Ok(rows)
}

/// Builds a page from each series' rows (each already bounded and at most
/// `limit + 1` long, in page order): merges them in page order and cuts at
/// `limit`, with the cursor of the next page.
pub fn merge_page(q: &PageQuery, per_series: Vec<(Arc<SeriesInfo>, Points)>) -> Page {
    let mut rows = Vec::new();
    for (s, found) in per_series {
        rows.extend(found.into_iter().map(|(ts, value)| Row {
            series: s.clone(),
            ts,
            value,
        }));
    }
    rows.sort_unstable_by(|a, b| {
        let ord = (a.ts, a.series.id).cmp(&(b.ts, b.series.id));
        match q.order {
            Order::Asc => ord,
            Order::Desc => ord.reverse(),
        }
    });
    let next = if rows.len() > q.limit {
        rows.truncate(q.limit);
        rows.last().map(|r| Cursor {
            ts: r.ts,
            series_id: r.series.id,
        })
    } else {
        None
    };
    Page { rows, next }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::catalog::SeriesCatalog;
    use crate::storage::testing::{TestDb, writer_db};
    use crate::storage::writer::commit_batch;
    use crate::vocab::reading::{Reading, SeriesKey};
    use std::collections::HashSet;

    fn db_with(rows: &[(&str, i64)]) -> (tempfile::TempDir, SqliteConnection, SeriesCatalog) {
        let TestDb {
            dir,
            cfg: _,
            mut conn,
            catalog,
        } = writer_db();
        let keys: std::collections::HashMap<&str, Arc<SeriesKey>> = rows
            .iter()
            .map(|(m, _)| {
                (
                    *m,
                    Arc::new(SeriesKey {
                        sensor: "s".into(),
                        metric: (*m).into(),
                        unit: "".into(),
                    }),
                )
            })
            .collect();
        let batch: Vec<_> = rows
            .iter()
            .map(|(m, ts)| Reading {
                series: keys[m].clone(),
                ts_ms: *ts,
                value: *ts as f64,
            })
            .collect();
        commit_batch(&mut conn, &catalog, &batch).unwrap();
        (dir, conn, catalog)
    }

    fn all_pages(conn: &mut SqliteConnection, mut q: PageQuery) -> Vec<(i64, i64)> {
        let mut seen = Vec::new();
        loop {
            let page = readings_page(conn, &q).unwrap();
            assert!(page.rows.len() <= q.limit);
            seen.extend(page.rows.iter().map(|r| (r.ts, r.series.id)));
            match page.next {
                Some(c) => q.cursor = Some(c),
                None => return seen,
            }
        }
    }

    #[test]
    fn cursor_pages_cover_every_row_once_in_both_orders() {
        // Two series with shared timestamps, so ties cross page boundaries.
        let mut rows = Vec::new();
        for ts in 0..37 {
            rows.push(("a", ts * 10));
            if ts % 3 != 0 {
                rows.push(("b", ts * 10));
            }
        }
        let (_d, mut conn, catalog) = db_with(&rows);
        for order in [Order::Desc, Order::Asc] {
            for limit in [1, 2, 5, 7, 100] {
                let q = PageQuery {
                    series: catalog.for_sensor("s"),
                    from: None,
                    to: None,
                    limit,
                    order,
                    cursor: None,
                };
                let seen = all_pages(&mut conn, q);
                assert_eq!(seen.len(), rows.len(), "{order:?} limit {limit}");
                let unique: HashSet<_> = seen.iter().collect();
                assert_eq!(unique.len(), rows.len());
                let mut sorted = seen.clone();
                sorted.sort();
                if order == Order::Desc {
                    sorted.reverse();
                }
                assert_eq!(seen, sorted, "{order:?} limit {limit}");
            }
        }
    }

    #[test]
    fn time_range_is_half_open() {
        let rows: Vec<_> = (0..10).map(|t| ("a", t * 100)).collect();
        let (_d, mut conn, catalog) = db_with(&rows);
        let q = PageQuery {
            series: catalog.for_sensor("s"),
            from: Some(200),
            to: Some(500),
            limit: 100,
            order: Order::Asc,
            cursor: None,
        };
        let ts: Vec<_> = readings_page(&mut conn, &q)
            .unwrap()
            .rows
            .iter()
            .map(|r| r.ts)
            .collect();
        assert_eq!(ts, [200, 300, 400]);
    }

    #[test]
    fn cursor_text_round_trips() {
        let c = Cursor {
            ts: 1_795_000_000_000,
            series_id: 3,
        };
        assert_eq!(c.to_string().parse::<Cursor>(), Ok(c));
        assert!("12".parse::<Cursor>().is_err());
        assert!("a_b".parse::<Cursor>().is_err());
    }

    /// The head and the table together, paged with cursors while batches
    /// commit between pages and the overflow policy drops the oldest
    /// readings: every page equals the page of the readings accepted and
    /// not dropped, and following the cursors returns each exactly once.
    #[test]
    fn pages_over_the_head_are_exact_across_commits_and_drops() {
        use crate::storage::config::OverflowPolicy;
        use crate::storage::queue::IngestQueue;
        use crate::storage::writer::commit_gated;
        let TestDb {
            dir: _dir,
            cfg: _,
            mut conn,
            catalog,
        } = writer_db();
        let catalog = Arc::new(catalog);
        let head = Arc::new(Head::new(catalog.clone()));
        let queue = IngestQueue::new(300, OverflowPolicy::DropOldest, 300).with_head(head.clone());
        let keys = crate::storage::testing::series_keys(&["a", "b", "c"]);
        let mut rng = fastrand::Rng::with_seed(5);
        let mut values = fastrand::Rng::with_seed(6);
        // Same-millisecond readings of one series too (two per tick).
        let mut push = |t: i64| {
            let rng = &mut values;
            let batch: Vec<Reading> = (0..rng.usize(1..6))
                .map(|_| Reading {
                    series: keys[rng.usize(0..keys.len())].clone(),
                    ts_ms: t * 3 + rng.i64(0..2),
                    value: t as f64,
                })
                .collect();
            queue.push(batch);
        };
        for t in 0..200 {
            push(t);
        }
        let commit = |conn: &mut SqliteConnection, n: usize| {
            let batch = queue.take(n);
            let (_, gate) = commit_gated(conn, &catalog, &batch, true, Some(&head)).unwrap();
            queue.committed();
            drop(gate);
        };
        commit(&mut conn, 100);
        let dropped_before = queue.stats().dropped;
        assert!(dropped_before > 0, "the policy dropped some");
        for order in [Order::Desc, Order::Asc] {
            let mut q = PageQuery {
                series: catalog.readable_for_sensor("s"),
                from: None,
                to: Some(10_000),
                limit: 9,
                order,
                cursor: None,
            };
            // What should be seen: every reading accepted and not dropped
            // (head and table, now).
            let everything = |conn: &mut SqliteConnection, q: &PageQuery| {
                let mut all = q.clone();
                all.limit = 100_000;
                all.cursor = None;
                let (page, _) = readings_page_with_head(conn, &all, &head).unwrap();
                page.rows
                    .iter()
                    .map(|r| (r.ts, r.series.id))
                    .collect::<Vec<_>>()
            };
            let want = everything(&mut conn, &q);
            let mut seen = Vec::new();
            loop {
                let (page, _) = readings_page_with_head(&mut conn, &q, &head).unwrap();
                seen.extend(page.rows.iter().map(|r| (r.ts, r.series.id)));
                // A commit between pages.
                if !queue.is_empty() {
                    commit(&mut conn, rng.usize(1..40));
                }
                match page.next {
                    Some(c) => q.cursor = Some(c),
                    None => break,
                }
            }
            assert_eq!(seen, want, "{order:?}");
            assert_eq!(everything(&mut conn, &q), want, "nothing moved or vanished");
        }
        // A drop removes readings from reads at once.
        let q = PageQuery {
            series: catalog.readable_for_sensor("s"),
            from: None,
            to: None,
            limit: 100_000,
            order: Order::Asc,
            cursor: None,
        };
        for t in 10_000..10_400 {
            push(t);
        }
        let after = readings_page_with_head(&mut conn, &q, &head)
            .unwrap()
            .0
            .rows
            .len();
        let stored = crate::storage::chunk::count_all(&mut conn).unwrap();
        assert!(queue.stats().dropped > dropped_before);
        assert_eq!(queue.len(), 300, "full");
        assert_eq!(after, stored as usize + 300, "the dropped ones are gone");
        assert_eq!(head.len(), queue.len());
    }
}
