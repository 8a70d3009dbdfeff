//! Chart series: a time range of one series as at most N buckets (count,
//! min, max, mean), answered from the cheapest tier that still has the
//! resolution asked for.
//!
//! The resolution asked for is the range divided by N. The coarsest tier
//! whose period is no longer than that is enough (a week as 1,000 points
//! needs 10-minute buckets: minute rollups, 10,080 rows, rather than
//! 604,800 raw readings); but if retention has already removed the start of
//! the range from that tier, a coarser tier that still holds it answers
//! instead. Buckets are whole multiples of the tier's period, aligned to
//! it, so a rollup row is never split; empty buckets are left out.
//!
//! [`choose_tier`] and [`plan`] are pure; [`query`] reads and folds.

use diesel::connection::DefaultLoadingMode;
use diesel::prelude::*;
use serde::Serialize;

use super::head::Head;
use super::rollup::{Agg, Tier, bucket_start};

/// The oldest key (`ts`, or period start) of each tier for one series.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TierStarts {
    pub raw: Option<i64>,
    pub minute: Option<i64>,
    pub hour: Option<i64>,
    pub day: Option<i64>,
}

impl TierStarts {
    /// Counts a reading at `ts` not stored yet (in the head): every tier
    /// will hold it.
    pub fn include(&mut self, ts: i64) {
        let earlier = |a: Option<i64>, b: i64| Some(a.map_or(b, |a| a.min(b)));
        self.raw = earlier(self.raw, ts);
        self.minute = earlier(self.minute, bucket_start(ts, Tier::Minute.width_ms()));
        self.hour = earlier(self.hour, bucket_start(ts, Tier::Hour.width_ms()));
        self.day = earlier(self.day, bucket_start(ts, Tier::Day.width_ms()));
    }

    pub fn get(&self, tier: Tier) -> Option<i64> {
        match tier {
            Tier::Raw => self.raw,
            Tier::Minute => self.minute,
            Tier::Hour => self.hour,
            Tier::Day => self.day,
        }
    }

    /// One index seek per tier (cached statements: this runs per query).
    pub fn read(conn: &mut SqliteConnection, series_id: i64) -> QueryResult<TierStarts> {
        use diesel::dsl::min;
        macro_rules! oldest {
            ($t:ident, $col:ident) => {{
                use super::schema::$t::dsl as t;
                t::$t
                    .filter(t::series_id.eq(series_id))
                    .select(min(t::$col))
                    .first::<Option<i64>>(conn)?
            }};
        }
        // A tier's periods live in its table, and the newest of them (all of
        // them, at first) in `rollup_open`.
        let open = |conn: &mut SqliteConnection, tier: Tier| -> QueryResult<Option<i64>> {
            use super::schema::rollup_open::dsl as o;
            o::rollup_open
                .filter(o::tier.eq(tier.code()))
                .filter(o::series_id.eq(series_id))
                .select(min(o::bucket))
                .first::<Option<i64>>(conn)
        };
        let either = |a: Option<i64>, b: Option<i64>| match (a, b) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        let minute = either(oldest!(rollup_minute, bucket), open(conn, Tier::Minute)?);
        let hour = either(oldest!(rollup_hour, bucket), open(conn, Tier::Hour)?);
        let day = either(oldest!(rollup_day, bucket), open(conn, Tier::Day)?);
        let mut starts = TierStarts {
            // Rows and sealed chunks; head blocks below.
            raw: super::chunk::oldest_outside_blocks(conn, series_id)?,
            minute,
            hour,
            day,
        };
        // Readings in head blocks count in every tier (see `query_tier`).
        if let Some((first, _)) = super::chunk::blocks::span(conn, series_id)? {
            starts.include(first);
        }
        Ok(starts)
    }
}

/// `a / b` rounded up, for positive operands.
fn ceil_div(a: i64, b: i64) -> i64 {
    (a + b - 1) / b
}

/// The resolution a request asks for: milliseconds per point.
pub fn resolution(from: i64, to: i64, points: u32) -> i64 {
    ceil_div((to - from).max(1), i64::from(points.max(1)))
}

/// Whether `tier` still holds the range starting at `from` (give or take
/// one point): its data starts early enough, or retention has not yet
/// removed anything from it that the next coarser tier still has.
fn covers(tier: Tier, from: i64, slack: i64, starts: &TierStarts) -> bool {
    let Some(coarser) = tier.coarser() else {
        return true;
    };
    match (starts.get(tier), starts.get(coarser)) {
        (_, None) => true,
        (None, Some(_)) => false,
        (Some(s), Some(c)) => s <= from.saturating_add(slack) || s < c + coarser.width_ms(),
    }
}

/// The tier that answers `[from, to)` as `points` buckets; see the module
/// docs.
pub fn choose_tier(from: i64, to: i64, points: u32, starts: &TierStarts) -> Tier {
    let want = resolution(from, to, points);
    let mut tier = Tier::ALL
        .into_iter()
        .rev()
        .find(|t| t.width_ms() <= want)
        .unwrap_or(Tier::Raw);
    while !covers(tier, from, want, starts) {
        match tier.coarser() {
            Some(c) => tier = c,
            None => break,
        }
    }
    tier
}

/// How a range is cut into buckets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Plan {
    pub tier: Tier,
    /// Start of the first bucket (`from`, floored to the tier's period).
    pub start: i64,
    /// The request's end (exclusive).
    pub end: i64,
    /// Bucket width: a whole number of the tier's periods.
    pub width: i64,
    /// Buckets from `start` to `end`; never more than the points asked.
    pub buckets: usize,
}

/// Cuts `[from, to)` into at most `points` buckets of whole `tier` periods.
pub fn plan(from: i64, to: i64, points: u32, tier: Tier) -> Plan {
    let period = tier.width_ms();
    let start = bucket_start(from, period);
    let aligned_end = bucket_start(to - 1, period) + period;
    let span = (aligned_end - start).max(1);
    let width = ceil_div(ceil_div(span, i64::from(points.max(1))), period) * period;
    Plan {
        tier,
        start,
        end: to,
        width,
        buckets: ceil_div(span, width) as usize,
    }
}

/// Folds keyed aggregates (in any order) into the plan's buckets; returns
/// the non-empty ones, in time order, with their start.
pub fn fold(plan: &Plan, rows: impl IntoIterator<Item = (i64, Agg)>) -> Vec<(i64, Agg)> {
    let mut slots: Vec<Option<Agg>> = vec![None; plan.buckets];
    for (key, agg) in rows {
        let i = (key - plan.start).div_euclid(plan.width);
        if let Some(slot) = usize::try_from(i).ok().and_then(|i| slots.get_mut(i)) {
            match slot {
                Some(a) => a.merge(&agg),
                None => *slot = Some(agg),
            }
        }
    }
    slots
        .into_iter()
        .enumerate()
        .filter_map(|(i, a)| a.map(|a| (plan.start + i as i64 * plan.width, a)))
        .collect()
}

/// A series as chart buckets.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SeriesAnswer {
    pub tier: Tier,
    pub bucket_ms: i64,
    /// Start of the first bucket; before the requested `from` when the tier
    /// is a rollup whose period straddles it.
    pub start_ms: i64,
    /// Non-empty buckets: start and aggregate (without the latest reading
    /// when a rollup tier answered).
    #[serde(skip)]
    pub buckets: Vec<(i64, Agg)>,
}

/// [`fold`] over rows as the database yields them, stopping at the first
/// error.
fn fold_rows(
    plan: &Plan,
    rows: impl Iterator<Item = QueryResult<(i64, Agg)>>,
) -> QueryResult<Vec<(i64, Agg)>> {
    let mut err = None;
    let out = fold(plan, rows.map_while(|r| r.map_err(|e| err = Some(e)).ok()));
    match err {
        Some(e) => Err(e),
        None => Ok(out),
    }
}

/// A rollup tier's rows of one series from the plan's first bucket to `to`,
/// folded: only the columns a chart needs, by position, through the
/// prepared-statement cache (this is the hot path of long-range charts).
/// The tier's open periods (`rollup_open`) in the same range come first;
/// run inside one read transaction so that a period moving from one table
/// to the other is seen in exactly one of them.
macro_rules! load_rollups {
    ($t:ident, $tier:expr, $conn:expr, $plan:expr, $series:expr, $to:expr) => {{
        let open = {
            use super::schema::rollup_open::dsl as o;
            o::rollup_open
                .filter(o::tier.eq($tier.code()))
                .filter(o::bucket.ge($plan.start))
                .filter(o::bucket.lt($to))
                .filter(o::series_id.eq($series))
                .select((
                    o::bucket,
                    o::count,
                    o::min_value,
                    o::max_value,
                    o::sum_value,
                ))
                .load::<(i64, i64, f64, f64, f64)>($conn)?
        };
        use super::schema::$t::dsl as t;
        let rows = t::$t
            .filter(t::series_id.eq($series))
            .filter(t::bucket.ge($plan.start))
            .filter(t::bucket.lt($to))
            .select((
                t::bucket,
                t::count,
                t::min_value,
                t::max_value,
                t::sum_value,
            ))
            .load_iter::<(i64, i64, f64, f64, f64), DefaultLoadingMode>($conn)?;
        fold_rows(
            $plan,
            open.into_iter().map(Ok).chain(rows).map(|r| {
                r.map(|(bucket, count, min, max, sum)| {
                    (bucket, Agg::without_latest(count, min, max, sum))
                })
            }),
        )?
    }};
}

/// Reads `[from, to)` of one series as at most `points` buckets (the
/// benchmarks' reference for the server's own reads).
#[cfg(any(test, feature = "bench"))]
pub fn query(
    conn: &mut SqliteConnection,
    series_id: i64,
    from: i64,
    to: i64,
    points: u32,
) -> QueryResult<SeriesAnswer> {
    query_with_head(conn, None, series_id, from, to, points)
}

/// [`query`] over every accepted reading: the stored tiers merged, bucket
/// by bucket, with the readings still in `head` (see [`query_tier`]).
pub fn query_with_head(
    conn: &mut SqliteConnection,
    head: Option<&Head>,
    series_id: i64,
    from: i64,
    to: i64,
    points: u32,
) -> QueryResult<SeriesAnswer> {
    let mut starts = TierStarts::read(conn, series_id)?;
    if let Some(oldest) = head.and_then(|h| h.view(|v| v.oldest(series_id))) {
        starts.include(oldest);
    }
    let tier = choose_tier(from, to, points, &starts);
    query_tier(conn, head, series_id, from, to, points, tier)
}

/// [`query`] from a given tier (benchmarks compare tiers with it). The
/// readings in head blocks, which the rollup tiers take in only when their
/// hour is sealed, are folded into a rollup tier's buckets as aggregates
/// per minute. With a
/// `head`, its uncommitted readings of the series are folded into the same
/// buckets as `Agg`s of one reading each, pinned to the same instant as the
/// database snapshot, so every accepted reading counts exactly once; in a
/// rollup tier they fill the periods the tier rows would (whole periods
/// from the one holding `from` to the one holding `to - 1`).
pub fn query_tier(
    conn: &mut SqliteConnection,
    head: Option<&Head>,
    series_id: i64,
    from: i64,
    to: i64,
    points: u32,
    tier: Tier,
) -> QueryResult<SeriesAnswer> {
    // One snapshot for the open periods, the tier table and the head.
    conn.transaction(|conn| {
        let p = plan(from, to, points, tier);
        let (lo, hi) = match tier {
            Tier::Raw => (from, to),
            _ => (
                p.start,
                bucket_start(to - 1, tier.width_ms()).saturating_add(tier.width_ms()),
            ),
        };
        let pending = match head {
            Some(h) => h.pinned(conn, |v| v.range(series_id, lo, hi))?,
            None => Vec::new(),
        };
        // Readings in head blocks are in the rollup tiers once sealed
        // (`chunk::blocks`): until then their minutes are folded here,
        // as the tier's own rows are. `lo` and `hi` are whole periods of
        // the tier, so whole minutes.
        let unsealed = if tier == Tier::Raw {
            Vec::new()
        } else {
            super::chunk::blocks::minute_aggs(conn, series_id, lo, hi)?
        };
        let mut buckets = match tier {
            Tier::Raw => {
                let rows = super::chunk::points(
                    conn,
                    series_id,
                    from,
                    to.saturating_sub(1),
                    super::read::Order::Asc,
                    usize::MAX,
                )?;
                fold_rows(
                    &p,
                    rows.into_iter().map(|(ts, v)| Ok((ts, Agg::one(ts, v)))),
                )?
            }
            Tier::Minute => load_rollups!(rollup_minute, tier, conn, &p, series_id, to),
            Tier::Hour => load_rollups!(rollup_hour, tier, conn, &p, series_id, to),
            Tier::Day => load_rollups!(rollup_day, tier, conn, &p, series_id, to),
        };
        if !unsealed.is_empty() {
            buckets = merge_buckets(buckets, fold(&p, unsealed));
        }
        if !pending.is_empty() {
            let head_buckets = fold(&p, pending.iter().map(|&(ts, v)| (ts, Agg::one(ts, v))));
            buckets = merge_buckets(buckets, head_buckets);
        }
        Ok(SeriesAnswer {
            tier,
            bucket_ms: p.width,
            start_ms: p.start,
            buckets,
        })
    })
}

/// Two folds of the same plan, merged bucket by bucket ([`Agg::merge`]);
/// `b` is the small one (the head's).
fn merge_buckets(a: Vec<(i64, Agg)>, b: Vec<(i64, Agg)>) -> Vec<(i64, Agg)> {
    let mut out = a;
    for (start, agg) in b {
        match out.binary_search_by_key(&start, |x| x.0) {
            Ok(i) => out[i].1.merge(&agg),
            Err(i) => out.insert(i, (start, agg)),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::retention::{RetentionConfig, RetentionJob};
    use crate::storage::rollup::{DAY_MS, HOUR_MS, MINUTE_MS};
    use crate::storage::testing::{TestDb, writer_db};
    use crate::storage::writer::commit_batch;
    use crate::vocab::reading::{Reading, SeriesKey};
    use std::sync::Arc;

    const T: i64 = 1_795_392_000_000; // a UTC midnight

    fn all(raw: i64, minute: i64, hour: i64, day: i64) -> TierStarts {
        TierStarts {
            raw: Some(raw),
            minute: Some(minute),
            hour: Some(hour),
            day: Some(day),
        }
    }

    #[test]
    fn the_coarsest_tier_with_enough_resolution_answers() {
        // Nothing pruned yet: every tier starts together.
        let s = all(T, T, T, T);
        let to = T + 400 * DAY_MS;
        assert_eq!(choose_tier(to - HOUR_MS, to, 1000, &s), Tier::Raw);
        assert_eq!(choose_tier(to - DAY_MS, to, 1000, &s), Tier::Minute);
        assert_eq!(choose_tier(to - 7 * DAY_MS, to, 1000, &s), Tier::Minute);
        assert_eq!(choose_tier(to - 7 * DAY_MS, to, 100, &s), Tier::Hour);
        assert_eq!(choose_tier(to - 365 * DAY_MS, to, 300, &s), Tier::Day);
        // Exactly one period per point is enough.
        assert_eq!(
            choose_tier(to - 1000 * MINUTE_MS, to, 1000, &s),
            Tier::Minute
        );
        assert_eq!(
            choose_tier(to - 1000 * MINUTE_MS + 1000, to, 1000, &s),
            Tier::Raw
        );
    }

    #[test]
    fn a_tier_that_lost_the_start_of_the_range_hands_over_to_a_coarser_one() {
        let to = T + 400 * DAY_MS;
        // Raw kept 7 days, minutes 30, hours 90, days forever.
        let s = all(to - 7 * DAY_MS, to - 30 * DAY_MS, to - 90 * DAY_MS, T);
        // The last hour at 1,000 points: raw still has it.
        assert_eq!(choose_tier(to - HOUR_MS, to, 1000, &s), Tier::Raw);
        // Ten days at 100,000 points wants raw, which kept only seven.
        assert_eq!(choose_tier(to - 10 * DAY_MS, to, 100_000, &s), Tier::Minute);
        // Sixty days at 100,000 points: minutes are gone too; hours.
        assert_eq!(choose_tier(to - 60 * DAY_MS, to, 100_000, &s), Tier::Hour);
        // A year: days.
        assert_eq!(choose_tier(to - 365 * DAY_MS, to, 100_000, &s), Tier::Day);
        // Missing at most one point's worth at the start is fine.
        assert_eq!(
            choose_tier(to - 7 * DAY_MS - 500, to, 1_000_000, &s),
            Tier::Raw
        );
        // A young appliance: raw holds everything there is.
        let young = all(to - DAY_MS + 5, to - DAY_MS, to - DAY_MS, to - DAY_MS);
        assert_eq!(
            choose_tier(to - 7 * DAY_MS, to, 1_000_000, &young),
            Tier::Raw
        );
        // Nothing at all: raw (and an empty answer).
        assert_eq!(
            choose_tier(to - DAY_MS, to, 1_000_000, &TierStarts::default()),
            Tier::Raw
        );
    }

    #[test]
    fn plans_never_exceed_the_points_asked_and_align_to_periods() {
        let mut rng = fastrand::Rng::with_seed(3);
        for _ in 0..5000 {
            let from = T + rng.i64(-DAY_MS..DAY_MS);
            let to = from + rng.i64(1..400 * DAY_MS);
            let points = rng.u32(1..3000);
            for tier in Tier::ALL {
                let p = plan(from, to, points, tier);
                let w = tier.width_ms();
                assert!(
                    p.buckets >= 1 && p.buckets <= points as usize,
                    "{p:?} {points}"
                );
                assert_eq!(p.width % w, 0, "{p:?}");
                assert_eq!(p.start % w, 0, "{p:?}");
                assert!(p.start <= from && from - p.start < w, "{p:?}");
                // The buckets reach the end of the range.
                assert!(p.start + p.buckets as i64 * p.width >= to, "{p:?}");
            }
        }
    }

    fn key(sensor: &str) -> Arc<SeriesKey> {
        Arc::new(SeriesKey {
            sensor: sensor.into(),
            metric: "v".into(),
            unit: "".into(),
        })
    }

    /// The direct computation: every raw reading in the range, bucketed by
    /// the same plan.
    fn direct(rows: &[(i64, f64)], p: &Plan, lo: i64, hi: i64) -> Vec<(i64, Agg)> {
        let mut out: Vec<(i64, Agg)> = Vec::new();
        for &(ts, v) in rows.iter().filter(|(ts, _)| *ts >= lo && *ts < hi) {
            let b = p.start + (ts - p.start).div_euclid(p.width) * p.width;
            match out.iter_mut().find(|(s, _)| *s == b) {
                Some((_, a)) => a.merge(&Agg::one(ts, v)),
                None => out.push((b, Agg::one(ts, v))),
            }
        }
        out.sort_by_key(|(s, _)| *s);
        out
    }

    fn same(got: &[(i64, Agg)], want: &[(i64, Agg)], what: &str) {
        assert_eq!(got.len(), want.len(), "{what}: bucket count");
        for ((gs, g), (ws, w)) in got.iter().zip(want) {
            assert_eq!(gs, ws, "{what}");
            assert_eq!(
                (g.count, g.min, g.max),
                (w.count, w.min, w.max),
                "{what} at {gs}"
            );
            let tol = 1e-9 * w.sum.abs().max(1.0);
            assert!(
                (g.sum - w.sum).abs() <= tol,
                "{what} at {gs}: {} vs {}",
                g.sum,
                w.sum
            );
        }
    }

    #[test]
    fn answers_match_a_direct_computation_from_every_tier() {
        let TestDb {
            dir: _dir,
            cfg: _,
            mut conn,
            catalog,
        } = writer_db();
        let (a, other) = (key("a"), key("b"));
        // Ten days of readings every 7 s with an irregular signal, and a
        // second sensor that must not leak into the first one's answers.
        let mut rng = fastrand::Rng::with_seed(11);
        let mut rows = Vec::new();
        let mut batch = Vec::new();
        let mut t = T + 1234;
        while t < T + 10 * DAY_MS {
            let v = (t as f64 / 3.6e6).sin() * 10.0 + rng.f64();
            rows.push((t, v));
            batch.push(Reading {
                series: a.clone(),
                ts_ms: t,
                value: v,
            });
            batch.push(Reading {
                series: other.clone(),
                ts_ms: t,
                value: 1e6,
            });
            if batch.len() >= 5000 {
                commit_batch(&mut conn, &catalog, &batch).unwrap();
                batch.clear();
            }
            t += 7000;
        }
        commit_batch(&mut conn, &catalog, &batch).unwrap();
        let id = catalog.lookup("a", "v").unwrap().id;

        let cases = [
            (
                T + 5 * DAY_MS + 17,
                T + 5 * DAY_MS + HOUR_MS,
                1000,
                Tier::Raw,
            ),
            (T + 3 * DAY_MS + 999, T + 5 * DAY_MS, 500, Tier::Minute),
            (T + DAY_MS + 1, T + 9 * DAY_MS - 1, 100, Tier::Hour),
            (T, T + 10 * DAY_MS, 7, Tier::Day),
        ];
        // Once with every reading in head blocks, whose readings the
        // tiers fold in at read time, then with every hour sealed, the
        // rollup tiers holding them.
        for sealed in [false, true] {
            if sealed {
                while let Some(x) = crate::storage::chunk::blocks::seal_oldest_hour(
                    &mut conn,
                    i64::MIN,
                    T + 10 * DAY_MS,
                )
                .unwrap()
                {
                    for s in x.series {
                        catalog.mark_sealed(s, x.start_ts + HOUR_MS);
                    }
                }
                assert_eq!(
                    crate::storage::chunk::blocks::count_all(&mut conn).unwrap(),
                    0
                );
            }
            for (from, to, points, tier) in cases {
                let ans = query(&mut conn, id, from, to, points).unwrap();
                assert_eq!(ans.tier, tier, "{from}..{to} / {points}");
                let p = plan(from, to, points, tier);
                assert!(ans.buckets.len() <= points as usize);
                // A rollup tier answers in whole periods: from the period holding
                // `from` up to the end of the one holding `to - 1`.
                let (lo, hi) = if tier == Tier::Raw {
                    (from, to)
                } else {
                    (
                        p.start,
                        bucket_start(to - 1, tier.width_ms()) + tier.width_ms(),
                    )
                };
                same(
                    &ans.buckets,
                    &direct(&rows, &p, lo, hi),
                    &format!("{tier:?}, sealed: {sealed}"),
                );
            }
        }

        // Retention takes raw readings older than a day and minutes older
        // than three: a week at fine resolution now comes from hours.
        let now = T + 10 * DAY_MS;
        let ret = RetentionConfig {
            raw_days: 1,
            minute_rollups_days: 3,
            max_db_mb: 0,
            ..RetentionConfig::default()
        };
        RetentionJob::new(now, &ret, catalog.all().iter().map(|s| s.id).collect())
            .run_to_end(&mut conn)
            .unwrap();
        let ans = query(&mut conn, id, now - 7 * DAY_MS, now, 100_000).unwrap();
        assert_eq!(ans.tier, Tier::Hour);
        let p = plan(now - 7 * DAY_MS, now, 100_000, Tier::Hour);
        same(
            &ans.buckets,
            &direct(&rows, &p, p.start, now),
            "after retention",
        );
        let ans = query(&mut conn, id, now - 2 * DAY_MS, now, 100_000).unwrap();
        assert_eq!(ans.tier, Tier::Minute);
        let ans = query(&mut conn, id, now - HOUR_MS, now, 100_000).unwrap();
        assert_eq!(ans.tier, Tier::Raw);
        let in_range = rows.iter().filter(|(t, _)| *t >= now - HOUR_MS).count();
        assert!(in_range > 500);
        assert_eq!(ans.buckets.len(), in_range, "one reading per 36 ms bucket");
    }
}
