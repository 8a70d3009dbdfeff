//! The chunk store against a reference: every read over sealed and
//! unsealed readings equals the same read over a plain sorted list, before
//! and after seals, merges of late readings and retention cuts.

use std::sync::Arc;

use diesel::connection::SimpleConnection;
use proptest::prelude::*;

use super::*;
use crate::storage::catalog::SeriesInfo;
use crate::storage::read::{Cursor, PageQuery, readings_page};
use crate::storage::testing::{TestDb, series_keys, writer_db};
use crate::storage::writer::{commit_batch, commit_import};
use crate::vocab::reading::{Reading, SeriesKey};

const H: i64 = PERIOD_MS;

/// Commits readings of one series (id 1 once committed) at `times`.
fn store(d: &mut TestDb, key: &Arc<SeriesKey>, times: &[i64]) {
    let batch: Vec<Reading> = times
        .iter()
        .map(|&t| Reading {
            series: key.clone(),
            ts_ms: t,
            value: value_at(t),
        })
        .collect();
    for b in batch.chunks(5000) {
        commit_batch(&mut d.conn, &d.catalog, b).unwrap();
    }
}

/// A value of two decimals, like a real sensor's.
fn value_at(t: i64) -> f64 {
    ((t / 1000) % 5000) as f64 / 100.0 + 20.0
}

/// Seals every period of series 1 ending by `before`, blocks first as a
/// sealing pass does; returns how many.
fn seal_all(d: &mut TestDb, before: i64) -> usize {
    let mut n = 0;
    while let Some(s) = blocks::seal_oldest_hour(&mut d.conn, i64::MIN, before).unwrap() {
        assert_eq!(s.series, [1]);
        d.catalog.mark_sealed(1, s.start_ts + PERIOD_MS);
        n += 1;
    }
    while let Some(s) = seal_oldest(&mut d.conn, 1, i64::MIN, before).unwrap() {
        assert!(s.damaged.is_none(), "{s:?}");
        d.catalog.mark_sealed(1, s.start_ts + PERIOD_MS);
        n += 1;
    }
    n
}

fn all(d: &mut TestDb) -> Points {
    points(&mut d.conn, 1, i64::MIN, i64::MAX, Order::Asc, usize::MAX).unwrap()
}

fn chunk_count(d: &mut TestDb) -> i64 {
    #[derive(QueryableByName)]
    struct N {
        #[diesel(sql_type = BigInt)]
        n: i64,
    }
    diesel::sql_query("SELECT count(*) AS n FROM chunks")
        .get_result::<N>(&mut d.conn)
        .unwrap()
        .n
}

/// Readings not sealed: rows and head blocks.
fn row_count(d: &mut TestDb) -> i64 {
    let rows: i64 = readings::table.count().get_result(&mut d.conn).unwrap();
    rows + blocks::count_all(&mut d.conn).unwrap()
}

/// One reading every 7 s over four hours and a bit, with a gap.
fn times() -> Vec<i64> {
    (0..(4 * H + 600_000) / 7000)
        .map(|i| i * 7000)
        .filter(|t| !(H + 100_000..H + 900_000).contains(t))
        .collect()
}

#[test]
fn sealing_moves_whole_hours_and_reads_see_one_store() {
    let mut d = writer_db();
    let key = series_keys(&["t"]).remove(0);
    let times = times();
    store(&mut d, &key, &times);
    let expected: Points = times.iter().map(|&t| (t, value_at(t))).collect();
    assert_eq!(all(&mut d), expected);

    // Hours 0..3 end by 3 H; hour 3 and the rest stay rows.
    assert_eq!(seal_all(&mut d, 3 * H), 3);
    assert_eq!(chunk_count(&mut d), 3);
    let unsealed = times.iter().filter(|&&t| t >= 3 * H).count() as i64;
    assert_eq!(row_count(&mut d), unsealed);
    assert_eq!(count_all(&mut d.conn).unwrap(), times.len() as u64);
    assert_eq!(all(&mut d), expected, "bits and order survive sealing");
    assert_eq!(oldest(&mut d.conn, 1).unwrap(), Some(0));
    assert_eq!(d.catalog.sealed_until(1), 3 * H);
    // The catalog learns the same from the table on a restart.
    let reloaded = crate::storage::catalog::SeriesCatalog::load(&mut d.conn).unwrap();
    assert_eq!(reloaded.sealed_until(1), 3 * H);

    // Bounded reads in both orders, across chunk and row edges.
    for (lo, hi) in [
        (0, 4 * H),
        (H - 5000, H + 1_000_000),
        (2 * H + 1, 3 * H + 7001),
        (3 * H, 3 * H),
        (5 * H, 6 * H),
    ] {
        let want: Points = expected
            .iter()
            .copied()
            .filter(|p| p.0 >= lo && p.0 <= hi)
            .collect();
        for limit in [1, 3, 100, 600, usize::MAX] {
            let asc = points(&mut d.conn, 1, lo, hi, Order::Asc, limit).unwrap();
            assert_eq!(asc, want.iter().copied().take(limit).collect::<Points>());
            let desc = points(&mut d.conn, 1, lo, hi, Order::Desc, limit).unwrap();
            assert_eq!(
                desc,
                want.iter().rev().copied().take(limit).collect::<Points>()
            );
        }
        let after = lo;
        assert_eq!(
            count_after(&mut d.conn, 1, after).unwrap(),
            expected.iter().filter(|p| p.0 > after).count() as u64
        );
    }
    // Nothing is left to seal below the boundary.
    assert_eq!(seal_all(&mut d, 3 * H), 0);
}

#[test]
fn a_late_reading_of_a_sealed_hour_is_moved_off_a_sealed_one_and_merged_at_the_next_seal() {
    let mut d = writer_db();
    let key = series_keys(&["t"]).remove(0);
    store(&mut d, &key, &[1000, 2000, 3000, H + 1000]);
    assert_eq!(seal_all(&mut d, H), 1);
    // A clock stepped back: 2000 is taken in the chunk, 2500 is free.
    let late = [2000, 2500].map(|t| Reading {
        series: key.clone(),
        ts_ms: t,
        value: -1.5,
    });
    let nudged = commit_batch(&mut d.conn, &d.catalog, &late).unwrap();
    assert_eq!(nudged, 1);
    let ts: Vec<i64> = all(&mut d).iter().map(|p| p.0).collect();
    assert_eq!(ts, [1000, 2000, 2001, 2500, 3000, H + 1000]);
    // An import of a reading a chunk holds skips it, like a stored row.
    let again = [Reading {
        series: key.clone(),
        ts_ms: 3000,
        value: 9.0,
    }];
    assert_eq!(commit_import(&mut d.conn, &d.catalog, &again).unwrap(), 0);
    // So is one a head block holds.
    let again = [Reading {
        series: key.clone(),
        ts_ms: H + 1000,
        value: 9.0,
    }];
    assert_eq!(commit_import(&mut d.conn, &d.catalog, &again).unwrap(), 0);
    // And a live reading colliding with a block is moved forward.
    let live = [Reading {
        series: key.clone(),
        ts_ms: H + 1000,
        value: 7.0,
    }];
    assert_eq!(commit_batch(&mut d.conn, &d.catalog, &live).unwrap(), 1);
    assert_eq!(
        points(&mut d.conn, 1, H, 2 * H, Order::Asc, 10).unwrap(),
        [(H + 1000, value_at(H + 1000)), (H + 1001, 7.0)]
    );
    // The next pass merges the late rows into the hour's one chunk.
    assert_eq!(seal_all(&mut d, H), 1);
    assert_eq!(chunk_count(&mut d), 1);
    assert_eq!(row_count(&mut d), 2);
    let got = all(&mut d);
    assert_eq!(
        got,
        [
            (1000, value_at(1000)),
            (2000, value_at(2000)),
            (2001, -1.5),
            (2500, -1.5),
            (3000, value_at(3000)),
            (H + 1000, value_at(H + 1000)),
            (H + 1001, 7.0),
        ]
    );
}

#[test]
fn retention_cuts_sealed_readings_exactly_at_the_horizon() {
    let mut d = writer_db();
    let key = series_keys(&["t"]).remove(0);
    let times = times();
    store(&mut d, &key, &times);
    seal_all(&mut d, 4 * H);
    // A horizon inside the third hour's chunk, off any reading.
    let below = 2 * H + 1_234_567;
    let (deleted, more) = delete_below(&mut d.conn, 1, below).unwrap();
    assert!(!more);
    let gone = times.iter().filter(|&&t| t < below).count() as u64;
    assert_eq!(deleted, gone);
    let left: Vec<i64> = all(&mut d).iter().map(|p| p.0).collect();
    assert_eq!(
        left,
        times
            .iter()
            .copied()
            .filter(|&t| t >= below)
            .collect::<Vec<_>>()
    );
    assert_eq!(oldest(&mut d.conn, 1).unwrap(), left.first().copied());
    // Idempotent at the same horizon.
    assert_eq!(delete_below(&mut d.conn, 1, below).unwrap(), (0, false));
}

#[test]
fn retention_deletes_many_chunks_in_bounded_transactions() {
    let mut d = writer_db();
    let key = series_keys(&["t"]).remove(0);
    let hours = CHUNKS_PER_DELETE * 2 + 5;
    let times: Vec<i64> = (0..hours).flat_map(|h| [h * H, h * H + 500]).collect();
    store(&mut d, &key, &times);
    seal_all(&mut d, hours * H);
    let mut calls = 0;
    let mut deleted = 0;
    loop {
        let (n, more) = delete_below(&mut d.conn, 1, hours * H).unwrap();
        calls += 1;
        deleted += n;
        if !more {
            break;
        }
    }
    assert_eq!(deleted, times.len() as u64);
    assert_eq!(calls, 3);
    assert_eq!(chunk_count(&mut d), 0);
}

#[test]
fn pages_return_every_reading_exactly_once_while_hours_are_sealed_between_them() {
    let mut d = writer_db();
    let keys = series_keys(&["a", "b"]);
    let mut batch = Vec::new();
    for i in 0..3000i64 {
        let t = i * 4000;
        // Both series share some milliseconds: ties are ordered by id.
        batch.push(Reading {
            series: keys[0].clone(),
            ts_ms: t,
            value: i as f64,
        });
        if i % 3 == 0 {
            batch.push(Reading {
                series: keys[1].clone(),
                ts_ms: t,
                value: -(i as f64),
            });
        }
    }
    commit_batch(&mut d.conn, &d.catalog, &batch).unwrap();
    let series: Vec<Arc<SeriesInfo>> = d.catalog.all();
    for order in [Order::Desc, Order::Asc] {
        let mut seen = Vec::new();
        let mut cursor: Option<Cursor> = None;
        let mut sealed_at = 0;
        loop {
            let q = PageQuery {
                series: series.clone(),
                from: None,
                to: None,
                limit: 97,
                order,
                cursor,
            };
            let page = readings_page(&mut d.conn, &q).unwrap();
            seen.extend(page.rows.iter().map(|r| (r.series.id, r.ts)));
            // Seal one more hour of each series between two pages.
            sealed_at += H;
            if let Some(x) = blocks::seal_oldest_hour(&mut d.conn, i64::MIN, sealed_at).unwrap() {
                for id in x.series {
                    d.catalog.mark_sealed(id, x.start_ts + H);
                }
            }
            for s in &series {
                if let Some(x) = seal_oldest(&mut d.conn, s.id, i64::MIN, sealed_at).unwrap() {
                    d.catalog.mark_sealed(s.id, x.start_ts + H);
                }
            }
            match page.next {
                Some(c) => cursor = Some(c),
                None => break,
            }
        }
        let mut unique = seen.clone();
        unique.sort_unstable();
        unique.dedup();
        assert_eq!(unique.len(), seen.len(), "{order:?}: a reading came twice");
        assert_eq!(seen.len(), batch.len(), "{order:?}: a reading was missed");
    }
    assert!(chunk_count(&mut d) >= 6, "hours were sealed between pages");
}

#[test]
fn a_damaged_chunk_is_an_error_naming_it_not_a_panic() {
    let mut d = writer_db();
    let key = series_keys(&["t"]).remove(0);
    store(&mut d, &key, &[1000, 2000]);
    seal_all(&mut d, H);
    d.conn
        .batch_execute("UPDATE chunks SET data = substr(data, 1, length(data) - 3) || x'000000';")
        .unwrap();
    let e = points(&mut d.conn, 1, i64::MIN, i64::MAX, Order::Asc, 10).unwrap_err();
    let text = e.to_string();
    assert!(
        text.contains("series 1") && text.contains("damaged chunk"),
        "{text}"
    );
    // Sealing that hour again leaves it rather than overwrite what it
    // cannot read, and a later hour of rows is sealed past it.
    store(&mut d, &key, &[2500]);
    d.conn
        .batch_execute(&format!(
            "INSERT INTO readings VALUES (1, {}, 1.5);",
            H + 10
        ))
        .unwrap();
    let left = seal_oldest(&mut d.conn, 1, i64::MIN, 2 * H)
        .unwrap()
        .unwrap();
    assert_eq!((left.start_ts, left.rows), (0, 0));
    assert!(left.damaged.unwrap().contains("damaged chunk"));
    let next = seal_oldest(&mut d.conn, 1, H, 2 * H).unwrap().unwrap();
    assert_eq!((next.start_ts, next.rows, next.damaged), (H, 1, None));
    assert!(seal_oldest(&mut d.conn, 1, 2 * H, 2 * H).unwrap().is_none());
    let rows: i64 = readings::table.count().get_result(&mut d.conn).unwrap();
    assert_eq!(rows, 1, "the damaged hour's late reading stays a row");
}

#[test]
fn a_damaged_block_holds_back_only_its_own_series_hour_and_retention_passes_it() {
    let mut d = writer_db();
    let keys = series_keys(&["a", "b"]);
    let times: Vec<i64> = (0..2 * H / 7000).map(|i| i * 7000).collect();
    store(&mut d, &keys[0], &times);
    store(&mut d, &keys[1], &times);
    d.conn
        .batch_execute(
            "UPDATE head_blocks SET data = x'00ff00ff' WHERE series_id = 1 AND start_ts = 0;",
        )
        .unwrap();
    let first = blocks::seal_oldest_hour(&mut d.conn, i64::MIN, 2 * H)
        .unwrap()
        .unwrap();
    assert_eq!((first.start_ts, first.series.as_slice()), (0, &[2][..]));
    assert_eq!(first.damaged.len(), 1);
    assert_eq!(first.damaged[0].0, 1);
    assert!(
        first.damaged[0].1.contains("damaged chunk"),
        "{:?}",
        first.damaged
    );
    // The next hour seals for both series, from past the damaged one.
    let next = blocks::seal_oldest_hour(&mut d.conn, H, 2 * H)
        .unwrap()
        .unwrap();
    assert_eq!((next.start_ts, next.series.as_slice()), (H, &[1, 2][..]));
    assert!(next.damaged.is_empty());
    assert!(
        blocks::seal_oldest_hour(&mut d.conn, 2 * H, 2 * H)
            .unwrap()
            .is_none()
    );
    // A new pass meets the damage again, and keeps the block.
    let again = blocks::seal_oldest_hour(&mut d.conn, i64::MIN, 2 * H)
        .unwrap()
        .unwrap();
    assert!(again.series.is_empty() && again.damaged.len() == 1);
    let n = |d: &mut TestDb, sql: &str| {
        #[derive(QueryableByName)]
        struct N {
            #[diesel(sql_type = BigInt)]
            n: i64,
        }
        diesel::sql_query(sql)
            .get_result::<N>(&mut d.conn)
            .unwrap()
            .n
    };
    assert_eq!(n(&mut d, "SELECT count(*) AS n FROM head_blocks"), 1);
    let other = points(&mut d.conn, 2, i64::MIN, i64::MAX, Order::Asc, usize::MAX).unwrap();
    assert_eq!(other.iter().map(|p| p.0).collect::<Vec<_>>(), times);
    assert!(
        other
            .iter()
            .all(|&(t, v)| v.to_bits() == value_at(t).to_bits())
    );
    // Retention keeps the damaged block while its horizon cuts across it,
    // and deletes it once it lies wholly below.
    assert_eq!(blocks::delete_below(&mut d.conn, 1, H / 2).unwrap(), 0);
    assert_eq!(n(&mut d, "SELECT count(*) AS n FROM head_blocks"), 1);
    let in_block = times.iter().filter(|&&t| t < H).count() as u64;
    assert_eq!(blocks::delete_below(&mut d.conn, 1, H).unwrap(), in_block);
    assert_eq!(n(&mut d, "SELECT count(*) AS n FROM head_blocks"), 0);
    let kept = points(&mut d.conn, 1, i64::MIN, i64::MAX, Order::Asc, usize::MAX).unwrap();
    assert_eq!(kept.len(), times.len() - in_block as usize);
}

#[test]
fn blocks_whose_hour_has_a_damaged_chunk_stay_blocks_and_the_others_seal() {
    let mut d = writer_db();
    let keys = series_keys(&["a", "b"]);
    let times: Vec<i64> = (0..H / 7000).map(|i| i * 7000).collect();
    store(&mut d, &keys[0], &times);
    store(&mut d, &keys[1], &times);
    d.conn
        .batch_execute("INSERT INTO chunks VALUES (1, 0, 0, 0, 1, x'00ff00ff');")
        .unwrap();
    let hour = blocks::seal_oldest_hour(&mut d.conn, i64::MIN, H)
        .unwrap()
        .unwrap();
    assert_eq!(hour.series, [2]);
    assert_eq!(hour.damaged.len(), 1, "{hour:?}");
    assert_eq!(hour.damaged[0].0, 1);
    assert!(
        blocks::seal_oldest_hour(&mut d.conn, H, H)
            .unwrap()
            .is_none()
    );
    assert_eq!(
        blocks::count_all(&mut d.conn).unwrap(),
        times.len() as i64,
        "series 1 keeps its blocks"
    );
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    /// Random readings, random seal boundaries, random reads: the store
    /// answers like a sorted list.
    #[test]
    fn reads_over_any_mix_of_chunks_and_rows_match_a_sorted_list(
        mut times in prop::collection::btree_set(0i64..6 * H, 1..400),
        seals in prop::collection::vec(0i64..7, 1..4),
        reads in prop::collection::vec((0i64..6 * H, 0i64..3 * H, 1usize..50, any::<bool>()), 1..12),
        late in prop::collection::vec(0i64..6 * H, 0..20),
    ) {
        let mut d = writer_db();
        let key = series_keys(&["t"]).remove(0);
        let first: Vec<i64> = times.iter().copied().collect();
        store(&mut d, &key, &first);
        for s in seals {
            seal_all(&mut d, s * H);
        }
        // Late readings after some hours are sealed: moved off taken keys.
        for t in late {
            let r = [Reading { series: key.clone(), ts_ms: t, value: value_at(t) }];
            commit_batch(&mut d.conn, &d.catalog, &r).unwrap();
            let mut t = t;
            while !times.insert(t) {
                t += 1;
            }
        }
        seal_all(&mut d, 3 * H);
        let expected: Vec<i64> = times.iter().copied().collect();
        let got: Vec<i64> = all(&mut d).iter().map(|p| p.0).collect();
        prop_assert_eq!(&got, &expected);
        for (lo, span, limit, desc) in reads {
            let hi = lo + span;
            let order = if desc { Order::Desc } else { Order::Asc };
            let mut want: Vec<i64> = expected.iter().copied().filter(|&t| t >= lo && t <= hi).collect();
            if desc {
                want.reverse();
            }
            want.truncate(limit);
            let got: Vec<i64> = points(&mut d.conn, 1, lo, hi, order, limit).unwrap().iter().map(|p| p.0).collect();
            prop_assert_eq!(got, want);
        }
    }
}

#[test]
fn the_down_migrations_refuse_while_blocks_or_chunks_hold_readings() {
    use diesel_migrations::MigrationHarness;
    let mut d = writer_db();
    let key = series_keys(&["t"]).remove(0);
    store(&mut d, &key, &[1000, 2000, H + 5]);
    seal_all(&mut d, H);
    let refused = d
        .conn
        .revert_last_migration(crate::storage::MIGRATIONS)
        .unwrap_err()
        .to_string();
    assert!(refused.contains("head_blocks_hold_readings"), "{refused}");
    assert_eq!(count_all(&mut d.conn).unwrap(), 3, "nothing lost");
    d.conn.batch_execute("DELETE FROM head_blocks;").unwrap();
    d.conn
        .revert_last_migration(crate::storage::MIGRATIONS)
        .unwrap();
    let refused = d
        .conn
        .revert_last_migration(crate::storage::MIGRATIONS)
        .unwrap_err()
        .to_string();
    assert!(refused.contains("chunks_hold_readings"), "{refused}");
    let sealed = diesel::sql_query("SELECT sum(count) AS n FROM chunks")
        .get_result::<N>(&mut d.conn)
        .unwrap()
        .n;
    assert_eq!(sealed, 2, "nothing lost");
    // With no chunk left it goes back to rows only.
    d.conn.batch_execute("DELETE FROM chunks;").unwrap();
    d.conn
        .revert_last_migration(crate::storage::MIGRATIONS)
        .unwrap();
    let tables: i64 =
        diesel::sql_query("SELECT count(*) AS n FROM sqlite_master WHERE name = 'chunks'")
            .get_result::<N>(&mut d.conn)
            .unwrap()
            .n;
    assert_eq!(tables, 0);
}

#[derive(QueryableByName)]
struct N {
    #[diesel(sql_type = BigInt)]
    n: i64,
}
