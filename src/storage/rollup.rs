//! Rollups: per series, the count, minimum, maximum, sum and latest reading
//! of every UTC minute, hour and day, kept in `rollup_minute`, `rollup_hour`
//! and `rollup_day` so that charts of long ranges never scan raw readings.
//!
//! They are maintained incrementally: the writer aggregates each committed
//! batch here, in Rust, by (series, period), and merges one row per period
//! and tier with an UPSERT in the batch's own transaction: counts and sums
//! add, minimum and maximum widen, and the latest value moves only forward
//! in time. A late or out-of-order reading therefore lands in the right
//! period, nothing is ever recomputed from raw readings, and rollups outlive
//! the raw readings that retention deletes.
//!
//! The merge goes first into `rollup_open`, one small table keyed by (tier,
//! period, series), where the current period of every series and tier sits
//! in one page; finished periods move into the tier tables only when the
//! open minutes span [`CLOSE_MINUTES_AFTER_MS`], or an hour or day has
//! ended. A commit thus rewrites one rollup page, not a leaf of each tier
//! table per series: `vigil-bench footprint` measured the bytes written per
//! reading. The merge being additive, a period's aggregate is always the
//! merge of its tier-table row and its open row, whichever exist (readers
//! use [`OPEN`] with the tier table), and moving a row is never wrong, only
//! more or less frequent.

use std::collections::BTreeMap;

use diesel::prelude::*;
use diesel::sql_types::{BigInt, Double};
use serde::Serialize;

use super::StorageError;

pub const MINUTE_MS: i64 = 60_000;
pub const HOUR_MS: i64 = 3_600_000;
pub const DAY_MS: i64 = 86_400_000;

/// Bound variables per rollup row, and so rows per multi-row UPSERT.
const COLUMNS: usize = 9;
const ROWS_PER_UPSERT: usize = 32_766 / COLUMNS;

/// Open minutes move to `rollup_minute` once they span this long.
pub const CLOSE_MINUTES_AFTER_MS: i64 = 10 * MINUTE_MS;

/// The table of open periods.
pub const OPEN: &str = "rollup_open";

/// A level of detail at which readings are stored.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, schemars::JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Tier {
    /// Every reading as taken.
    Raw,
    /// One row per series and UTC minute.
    Minute,
    /// One row per series and UTC hour.
    Hour,
    /// One row per series and UTC day.
    Day,
}

impl Tier {
    /// Every tier, finest first.
    pub const ALL: [Tier; 4] = [Tier::Raw, Tier::Minute, Tier::Hour, Tier::Day];
    /// The rollup tiers, finest first.
    pub const ROLLUPS: [Tier; 3] = [Tier::Minute, Tier::Hour, Tier::Day];

    /// The tier's code in `rollup_open.tier` (0 for raw readings).
    pub fn code(self) -> i64 {
        match self {
            Tier::Raw => 0,
            Tier::Minute => 1,
            Tier::Hour => 2,
            Tier::Day => 3,
        }
    }

    /// The period one row covers; 1 ms for raw readings.
    pub fn width_ms(self) -> i64 {
        match self {
            Tier::Raw => 1,
            Tier::Minute => MINUTE_MS,
            Tier::Hour => HOUR_MS,
            Tier::Day => DAY_MS,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Tier::Raw => "raw",
            Tier::Minute => "minute",
            Tier::Hour => "hour",
            Tier::Day => "day",
        }
    }

    /// The table holding the tier.
    pub fn table(self) -> &'static str {
        match self {
            Tier::Raw => "readings",
            Tier::Minute => "rollup_minute",
            Tier::Hour => "rollup_hour",
            Tier::Day => "rollup_day",
        }
    }

    /// The column rows are keyed on after `series_id`.
    pub fn time_column(self) -> &'static str {
        match self {
            Tier::Raw => "ts",
            _ => "bucket",
        }
    }

    /// The next coarser tier, if any.
    pub fn coarser(self) -> Option<Tier> {
        match self {
            Tier::Raw => Some(Tier::Minute),
            Tier::Minute => Some(Tier::Hour),
            Tier::Hour => Some(Tier::Day),
            Tier::Day => None,
        }
    }
}

/// The start of the period of width `width_ms` holding `ts` (periods are
/// aligned to the Unix epoch, so hours and days are UTC).
pub fn bucket_start(ts: i64, width_ms: i64) -> i64 {
    ts.div_euclid(width_ms) * width_ms
}

/// The aggregate of some readings: count, minimum, maximum, sum and the
/// latest reading. The one aggregate of storage: rollup rows are built and
/// merged as `Agg`s here, and chart buckets ([`super::series`]) fold them
/// the same way, so the two can never disagree on what a merge means.
///
/// [`Agg::merge`] is the Rust twin of the SQL merge of rollup rows
/// (`MERGE` below) and must stay its equal: counts and sums add, extremes
/// widen, the latest reading moves only forward in time. It is commutative
/// and associative, exactly so for everything but `sum`, which is so up to
/// float rounding (and `last` when two readings share a timestamp: the
/// one merged in later wins, as in SQL).
///
/// [`Agg::EMPTY`] (no readings) is the identity of `merge`: merging it in,
/// or merging into it, changes nothing. Its extremes are the identities of
/// `min` and `max` (+∞ and −∞), its sum 0, and it has no latest reading
/// (`last_ts` is `i64::MIN` and `last` NaN).
///
/// **The NaN rule: NaN means "no number", and it is never hidden.** A NaN
/// reading makes `min`, `max`, `sum` and [`Agg::mean`] NaN (it still
/// counts), and `last` too while it is the latest: it does not vanish into
/// a plausible value, as it would through `f64::min` and `f64::max` alone.
/// That is SQLite's rule too, where a NaN is stored as NULL and `min`,
/// `max` and `+` of a NULL are NULL; and as the rollup columns are NOT
/// NULL, an aggregate carrying a NaN fails its batch loudly instead of
/// being stored, as a NaN raw reading already does. The other way round,
/// NaN out says "no number there": the mean of the empty aggregate is NaN,
/// never 0 (a reading like any other), and so is the latest reading of an
/// aggregate that has none. Finite readings never merge into a NaN: sensors
/// refuse NaN, and values beyond ±1e300 that could overflow a sum into
/// ∞ − ∞, before anything reaches storage. So wherever a NaN shows, a NaN
/// went in or no reading did.
///
/// `PartialEq` compares floats as IEEE does, so an aggregate holding a NaN
/// (`EMPTY` among them) is not equal to itself; use [`Agg::is_empty`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Agg {
    pub count: i64,
    pub min: f64,
    pub max: f64,
    pub sum: f64,
    /// Timestamp of the latest reading (`i64::MIN` if none is known).
    pub last_ts: i64,
    /// The latest reading (NaN if none is known).
    pub last: f64,
}

impl Agg {
    #[cfg(test)]
    /// The aggregate of no readings: the identity of [`Agg::merge`].
    pub const EMPTY: Agg = Agg {
        count: 0,
        min: f64::INFINITY,
        max: f64::NEG_INFINITY,
        sum: 0.0,
        last_ts: i64::MIN,
        last: f64::NAN,
    };

    /// The aggregate of one reading.
    pub fn one(ts: i64, value: f64) -> Agg {
        Agg {
            count: 1,
            min: value,
            max: value,
            sum: value,
            last_ts: ts,
            last: value,
        }
    }

    /// An aggregate read without its latest reading (chart queries select
    /// only the count, extremes and sum of rollup rows): the latest is
    /// unknown, as in [`Agg::EMPTY`].
    pub fn without_latest(count: i64, min: f64, max: f64, sum: f64) -> Agg {
        Agg {
            count,
            min,
            max,
            sum,
            last_ts: i64::MIN,
            last: f64::NAN,
        }
    }

    /// Whether no readings went in.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Folds `other` in: the same rule as the SQL merge, with the latest
    /// reading replaced only by one at least as recent; see the type's
    /// docs for NaN.
    pub fn merge(&mut self, other: &Agg) {
        if other.is_empty() {
            return;
        }
        if self.is_empty() {
            *self = *other;
            return;
        }
        self.count += other.count;
        self.min = nan_or(self.min, other.min, f64::min);
        self.max = nan_or(self.max, other.max, f64::max);
        self.sum += other.sum;
        if other.last_ts >= self.last_ts {
            self.last_ts = other.last_ts;
            self.last = other.last;
        }
    }

    /// The mean reading; NaN for the empty aggregate, which has none.
    pub fn mean(&self) -> f64 {
        if self.is_empty() {
            f64::NAN
        } else {
            self.sum / self.count as f64
        }
    }
}

/// `f(a, b)`, or NaN if either is NaN (`f64::min` and `f64::max` would
/// return the other operand).
fn nan_or(a: f64, b: f64, f: fn(f64, f64) -> f64) -> f64 {
    if a.is_nan() || b.is_nan() {
        f64::NAN
    } else {
        f(a, b)
    }
}

/// One row of a rollup table.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Bucket {
    pub series_id: i64,
    /// Start of the period, epoch ms.
    pub start: i64,
    pub agg: Agg,
}

/// The rows a batch contributes to each rollup tier (minute, hour, day), in
/// (series, period) order.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct BatchRollups {
    pub minute: Vec<Bucket>,
    pub hour: Vec<Bucket>,
    pub day: Vec<Bucket>,
}

impl BatchRollups {
    pub fn tier(&self, tier: Tier) -> &[Bucket] {
        match tier {
            Tier::Minute => &self.minute,
            Tier::Hour => &self.hour,
            Tier::Day => &self.day,
            Tier::Raw => &[],
        }
    }
}

/// Aggregates `(series_id, ts, value)` readings, in any order, by minute;
/// then folds minutes into hours and hours into days.
pub fn aggregate(rows: impl IntoIterator<Item = (i64, i64, f64)>) -> BatchRollups {
    let mut minutes: BTreeMap<(i64, i64), Agg> = BTreeMap::new();
    for (series, ts, value) in rows {
        let one = Agg::one(ts, value);
        minutes
            .entry((series, bucket_start(ts, MINUTE_MS)))
            .and_modify(|a| a.merge(&one))
            .or_insert(one);
    }
    let minute: Vec<Bucket> = minutes
        .into_iter()
        .map(|((series_id, start), agg)| Bucket {
            series_id,
            start,
            agg,
        })
        .collect();
    let hour = coarsen(&minute, HOUR_MS);
    let day = coarsen(&hour, DAY_MS);
    BatchRollups { minute, hour, day }
}

/// Merges buckets sorted by (series, start) into wider periods. Buckets of
/// one wider period are adjacent in that order, so one pass suffices.
fn coarsen(buckets: &[Bucket], width_ms: i64) -> Vec<Bucket> {
    let mut out: Vec<Bucket> = Vec::new();
    for b in buckets {
        let start = bucket_start(b.start, width_ms);
        match out.last_mut() {
            Some(last) if last.series_id == b.series_id && last.start == start => {
                last.agg.merge(&b.agg)
            }
            _ => out.push(Bucket {
                series_id: b.series_id,
                start,
                agg: b.agg,
            }),
        }
    }
    out
}

/// The merge, as SQL: counts and sums add, extremes widen, and the latest
/// value moves only forward in time (every right-hand side sees the row as
/// it was before the update).
const MERGE: &str = " DO UPDATE SET \
     count = count + excluded.count, \
     min_value = min(min_value, excluded.min_value), \
     max_value = max(max_value, excluded.max_value), \
     sum_value = sum_value + excluded.sum_value, \
     last_value = CASE WHEN excluded.last_ts >= last_ts \
                  THEN excluded.last_value ELSE last_value END, \
     last_ts = max(last_ts, excluded.last_ts)";

/// A multi-row UPSERT of `rows` buckets into `table`; `tier` adds the
/// leading `tier` column of `rollup_open`.
fn upsert_sql(table: &str, rows: usize, open: bool) -> String {
    let (cols, one, key) = if open {
        ("tier, ", "(?,?,?,?,?,?,?,?,?)", "(tier, bucket, series_id)")
    } else {
        ("", "(?,?,?,?,?,?,?,?)", "(series_id, bucket)")
    };
    let mut sql = format!(
        "INSERT INTO {table} ({cols}series_id, bucket, count, min_value, max_value, sum_value, \
         last_ts, last_value) VALUES "
    );
    for i in 0..rows {
        if i > 0 {
            sql.push(',');
        }
        sql.push_str(one);
    }
    sql.push_str(" ON CONFLICT ");
    sql.push_str(key);
    sql.push_str(MERGE);
    sql
}

fn upsert_into(
    conn: &mut SqliteConnection,
    tier: Tier,
    buckets: &[Bucket],
    open: bool,
) -> Result<(), StorageError> {
    let table = if open { OPEN } else { tier.table() };
    for chunk in buckets.chunks(ROWS_PER_UPSERT) {
        let mut q = diesel::sql_query(upsert_sql(table, chunk.len(), open)).into_boxed();
        for b in chunk {
            if open {
                q = q.bind::<BigInt, _>(tier.code());
            }
            q = q
                .bind::<BigInt, _>(b.series_id)
                .bind::<BigInt, _>(b.start)
                .bind::<BigInt, _>(b.agg.count)
                .bind::<Double, _>(b.agg.min)
                .bind::<Double, _>(b.agg.max)
                .bind::<Double, _>(b.agg.sum)
                .bind::<BigInt, _>(b.agg.last_ts)
                .bind::<Double, _>(b.agg.last);
        }
        q.execute(conn)?;
    }
    Ok(())
}

#[cfg(any(test, feature = "bench"))]
/// Merges `buckets` into a rollup tier's own table (bypassing
/// `rollup_open`: for building history in bulk).
pub fn upsert(
    conn: &mut SqliteConnection,
    tier: Tier,
    buckets: &[Bucket],
) -> Result<(), StorageError> {
    upsert_into(conn, tier, buckets, false)
}

/// Moves a tier's open periods that start before `cut` into its table.
fn close_before(conn: &mut SqliteConnection, tier: Tier, cut: i64) -> Result<(), StorageError> {
    diesel::sql_query(format!(
        "INSERT INTO {table} (series_id, bucket, count, min_value, max_value, sum_value, \
         last_ts, last_value) \
         SELECT series_id, bucket, count, min_value, max_value, sum_value, last_ts, last_value \
         FROM {OPEN} WHERE tier = ?1 AND bucket < ?2 \
         ON CONFLICT (series_id, bucket){MERGE}",
        table = tier.table()
    ))
    .bind::<BigInt, _>(tier.code())
    .bind::<BigInt, _>(cut)
    .execute(conn)?;
    diesel::sql_query(format!(
        "DELETE FROM {OPEN} WHERE tier = ?1 AND bucket < ?2"
    ))
    .bind::<BigInt, _>(tier.code())
    .bind::<BigInt, _>(cut)
    .execute(conn)?;
    Ok(())
}

#[derive(QueryableByName)]
struct Oldest {
    #[diesel(sql_type = BigInt)]
    tier: i64,
    #[diesel(sql_type = BigInt)]
    oldest: i64,
}

/// Moves finished periods out of `rollup_open`, given the newest reading
/// just committed: minutes once the open ones span
/// [`CLOSE_MINUTES_AFTER_MS`], hours and days once a newer one has begun.
/// The period `newest` falls in always stays open.
fn close_finished(conn: &mut SqliteConnection, newest: i64) -> Result<(), StorageError> {
    let oldest: Vec<Oldest> = diesel::sql_query(format!(
        "SELECT tier, min(bucket) AS oldest FROM {OPEN} GROUP BY tier"
    ))
    .load(conn)?;
    for o in oldest {
        let Some(tier) = Tier::ROLLUPS.into_iter().find(|t| t.code() == o.tier) else {
            continue;
        };
        let cut = bucket_start(newest, tier.width_ms());
        let due = match tier {
            Tier::Minute => newest.saturating_sub(o.oldest) >= CLOSE_MINUTES_AFTER_MS,
            _ => o.oldest < cut,
        };
        if due && o.oldest < cut {
            close_before(conn, tier, cut)?;
        }
    }
    Ok(())
}

#[cfg(test)]
/// Moves every open period into its tier table (tests and benchmarks that
/// read the tier tables alone).
pub fn close_all(conn: &mut SqliteConnection) -> Result<(), StorageError> {
    for tier in Tier::ROLLUPS {
        close_before(conn, tier, i64::MAX)?;
    }
    Ok(())
}

/// Aggregates committed readings and merges them into every rollup tier.
/// Call inside the transaction that inserted them.
pub fn record(
    conn: &mut SqliteConnection,
    rows: impl IntoIterator<Item = (i64, i64, f64)>,
) -> Result<(), StorageError> {
    let mut newest = i64::MIN;
    let batch = aggregate(rows.into_iter().inspect(|r| newest = newest.max(r.1)));
    if newest == i64::MIN {
        return Ok(());
    }
    for tier in Tier::ROLLUPS {
        upsert_into(conn, tier, batch.tier(tier), true)?;
    }
    close_finished(conn, newest)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::catalog::SeriesCatalog;
    use crate::storage::testing::{TestDb, writer_db};
    use crate::vocab::reading::{Reading, SeriesKey};
    use std::collections::HashMap;
    use std::sync::Arc;

    /// Commits as rows, which take their rollups at commit (live commits'
    /// head blocks take theirs when sealed: see the test at the end).
    fn commit_batch(
        conn: &mut SqliteConnection,
        catalog: &SeriesCatalog,
        batch: &[Reading],
    ) -> Result<u64, StorageError> {
        crate::storage::writer::commit_gated(conn, catalog, batch, false, None).map(|c| c.0)
    }

    #[test]
    fn buckets_floor_to_utc_periods_including_before_1970() {
        assert_eq!(bucket_start(0, HOUR_MS), 0);
        assert_eq!(bucket_start(HOUR_MS - 1, HOUR_MS), 0);
        assert_eq!(bucket_start(HOUR_MS, HOUR_MS), HOUR_MS);
        assert_eq!(bucket_start(-1, HOUR_MS), -HOUR_MS);
        // 2026-11-23T13:37:25.211Z lies in the day starting at 00:00Z.
        let t = 1_795_441_045_211;
        assert_eq!(bucket_start(t, DAY_MS), 1_795_392_000_000);
    }

    #[test]
    fn merge_is_order_independent_except_for_float_rounding() {
        let a = Agg::one(10, 3.0);
        let b = Agg::one(30, -1.0);
        let c = Agg::one(20, 7.0);
        let mut x = a;
        x.merge(&b);
        x.merge(&c);
        let mut y = c;
        y.merge(&b);
        y.merge(&a);
        assert_eq!(x, y);
        assert_eq!(
            x,
            Agg {
                count: 3,
                min: -1.0,
                max: 7.0,
                sum: 9.0,
                last_ts: 30,
                last: -1.0
            }
        );
        assert_eq!(x.mean(), 3.0);
    }

    /// An aggregate's fields, floats by their bits (so that NaN compares
    /// equal to NaN).
    fn bits(a: &Agg) -> (i64, u64, u64, u64, i64, u64) {
        (
            a.count,
            a.min.to_bits(),
            a.max.to_bits(),
            a.sum.to_bits(),
            a.last_ts,
            a.last.to_bits(),
        )
    }

    /// A few aggregates of every kind: single readings, merged ones, chart
    /// rows without their latest reading, and the empty one.
    fn samples() -> Vec<Agg> {
        let mut merged = Agg::one(5, 2.5);
        merged.merge(&Agg::one(-7, -4.0));
        merged.merge(&Agg::one(9, 1e6));
        vec![
            Agg::one(0, 0.0),
            Agg::one(i64::MIN, -1.5),
            Agg::one(i64::MAX, 1e300),
            merged,
            Agg::without_latest(4, -1.0, 3.0, 6.0),
            Agg::EMPTY,
        ]
    }

    #[test]
    fn the_empty_aggregate_is_the_identity_of_merge() {
        for a in samples() {
            let mut left = Agg::EMPTY;
            left.merge(&a);
            assert_eq!(bits(&left), bits(&a), "EMPTY + {a:?}");
            let mut right = a;
            right.merge(&Agg::EMPTY);
            assert_eq!(bits(&right), bits(&a), "{a:?} + EMPTY");
        }
        let e = Agg::EMPTY;
        assert!(e.is_empty() && e.count == 0 && e.sum == 0.0);
        assert!(
            e.last.is_nan() && e.last_ts == i64::MIN,
            "no latest reading"
        );
        assert!(!Agg::one(0, 0.0).is_empty());
    }

    #[test]
    fn merge_is_associative_up_to_float_rounding() {
        let mut rng = fastrand::Rng::with_seed(17);
        let mut pool = samples();
        for _ in 0..200 {
            let n = rng.usize(1..6);
            let mut a = Agg::one(rng.i64(-1000..1000), (rng.f64() - 0.5) * 1e4);
            for _ in 1..n {
                a.merge(&Agg::one(rng.i64(-1000..1000), (rng.f64() - 0.5) * 1e4));
            }
            pool.push(a);
        }
        for _ in 0..5000 {
            let pick = |rng: &mut fastrand::Rng| pool[rng.usize(0..pool.len())];
            let (a, b, c) = (pick(&mut rng), pick(&mut rng), pick(&mut rng));
            // (a + b) + c
            let mut x = a;
            x.merge(&b);
            x.merge(&c);
            // a + (b + c)
            let mut bc = b;
            bc.merge(&c);
            let mut y = a;
            y.merge(&bc);
            assert_eq!(
                (x.count, x.min.to_bits(), x.max.to_bits()),
                (y.count, y.min.to_bits(), y.max.to_bits()),
                "{a:?} {b:?} {c:?}"
            );
            assert_eq!((x.last_ts, x.last.to_bits()), (y.last_ts, y.last.to_bits()));
            let tol = 1e-9 * x.sum.abs().max(y.sum.abs()).max(1.0);
            assert!((x.sum - y.sum).abs() <= tol, "{} vs {}", x.sum, y.sum);
        }
    }

    #[test]
    fn the_mean_of_no_readings_is_nan_not_zero() {
        assert!(Agg::EMPTY.mean().is_nan());
        let mut e = Agg::EMPTY;
        e.merge(&Agg::EMPTY);
        assert!(e.is_empty() && e.mean().is_nan());
        // Zero is a reading like any other.
        assert_eq!(Agg::one(3, 0.0).mean(), 0.0);
        assert_eq!(Agg::one(3, -2.5).mean(), -2.5);
        assert_eq!(Agg::without_latest(4, -1.0, 3.0, 6.0).mean(), 1.5);
    }

    #[test]
    fn extremes_start_from_the_infinities_and_only_widen() {
        assert_eq!(Agg::EMPTY.min, f64::INFINITY);
        assert_eq!(Agg::EMPTY.max, f64::NEG_INFINITY);
        let mut a = Agg::EMPTY;
        for (ts, v) in [(1, 4.0), (2, -3.0), (3, 10.0), (4, 0.5)] {
            a.merge(&Agg::one(ts, v));
        }
        assert_eq!((a.count, a.min, a.max, a.sum), (4, -3.0, 10.0, 11.5));
        assert_eq!((a.last_ts, a.last), (4, 0.5));
        // A reading inside the extremes leaves them; an earlier one leaves
        // the latest.
        a.merge(&Agg::one(0, 1.0));
        assert_eq!((a.min, a.max, a.last_ts, a.last), (-3.0, 10.0, 4, 0.5));
        // Chart rows carry extremes alone and widen the same way.
        a.merge(&Agg::without_latest(2, -7.0, 12.0, 5.0));
        assert_eq!((a.count, a.min, a.max, a.sum), (7, -7.0, 12.0, 17.5));
        assert_eq!((a.last_ts, a.last), (4, 0.5), "the known latest stays");
    }

    #[test]
    fn a_nan_reading_makes_the_aggregate_nan_and_is_never_hidden() {
        let nan = Agg::one(1, f64::NAN);
        let fine = Agg::one(2, 5.0);
        for (x, y) in [(nan, fine), (fine, nan)] {
            let mut a = x;
            a.merge(&y);
            assert_eq!(a.count, 2, "a NaN still counts");
            assert!(a.min.is_nan() && a.max.is_nan(), "{a:?}");
            assert!(a.sum.is_nan() && a.mean().is_nan(), "{a:?}");
            // The latest is the reading at 2, whatever the order.
            assert_eq!((a.last_ts, a.last), (2, 5.0));
            // More finite readings do not wash it out.
            a.merge(&Agg::one(3, -1.0));
            assert!(a.min.is_nan() && a.max.is_nan() && a.sum.is_nan());
        }
        let mut latest_nan = fine;
        latest_nan.merge(&Agg::one(9, f64::NAN));
        assert!(latest_nan.last.is_nan() && latest_nan.last_ts == 9);
        // Finite readings never give a NaN.
        let mut a = Agg::one(0, crate::sensors::actor::MAX_ABS_VALUE);
        for ts in 1..1000 {
            let v = crate::sensors::actor::MAX_ABS_VALUE * if ts % 2 == 0 { 1.0 } else { -1.0 };
            a.merge(&Agg::one(ts, v));
        }
        assert!(!(a.min.is_nan() || a.max.is_nan() || a.sum.is_nan() || a.mean().is_nan()));
    }

    #[test]
    fn rollup_tables_refuse_a_nan_aggregate_and_the_empty_one() {
        let TestDb {
            dir: _dir,
            cfg: _,
            mut conn,
            catalog: _,
        } = writer_db();
        let bucket = |agg| Bucket {
            series_id: 1,
            start: 0,
            agg,
        };
        let mut poisoned = Agg::one(1, 2.0);
        poisoned.merge(&Agg::one(0, f64::NAN));
        for agg in [poisoned, Agg::EMPTY] {
            assert!(
                upsert(&mut conn, Tier::Minute, &[bucket(agg)]).is_err(),
                "{agg:?} stored"
            );
        }
        // Nor is a NaN merged into a stored row: the row stays as it was.
        upsert(&mut conn, Tier::Minute, &[bucket(Agg::one(1, 2.0))]).unwrap();
        assert!(upsert(&mut conn, Tier::Minute, &[bucket(poisoned)]).is_err());
        assert_eq!(
            table_rows(&mut conn, Tier::Minute)[&(1, 0)],
            Agg::one(1, 2.0),
            "the stored row is unchanged"
        );
    }

    #[test]
    fn a_batch_folds_into_each_tier_in_key_order() {
        let t0 = 10 * DAY_MS;
        let rows = [
            (2, t0 + 5, 1.0),
            (1, t0 + HOUR_MS + 1, 4.0),
            (1, t0 + 59_999, 2.0),
            (1, t0, 6.0),
            (1, t0 + DAY_MS, 9.0),
        ];
        let r = aggregate(rows);
        let keys = |v: &[Bucket]| v.iter().map(|b| (b.series_id, b.start)).collect::<Vec<_>>();
        assert_eq!(
            keys(&r.minute),
            [(1, t0), (1, t0 + HOUR_MS), (1, t0 + DAY_MS), (2, t0),]
        );
        assert_eq!(
            keys(&r.hour),
            [(1, t0), (1, t0 + HOUR_MS), (1, t0 + DAY_MS), (2, t0)]
        );
        assert_eq!(keys(&r.day), [(1, t0), (1, t0 + DAY_MS), (2, t0)]);
        let first = r.minute[0].agg;
        assert_eq!((first.count, first.min, first.max), (2, 2.0, 6.0));
        assert_eq!((first.last_ts, first.last), (t0 + 59_999, 2.0));
        let day = r.day[0].agg;
        assert_eq!((day.count, day.sum, day.last), (3, 12.0, 4.0));
    }

    /// A rollup row as read back.
    #[derive(Debug, Clone, Copy, QueryableByName)]
    struct RollupRow {
        #[diesel(sql_type = BigInt)]
        pub bucket: i64,
        #[diesel(sql_type = BigInt)]
        pub count: i64,
        #[diesel(sql_type = Double)]
        pub min_value: f64,
        #[diesel(sql_type = Double)]
        pub max_value: f64,
        #[diesel(sql_type = Double)]
        pub sum_value: f64,
        #[diesel(sql_type = BigInt)]
        pub last_ts: i64,
        #[diesel(sql_type = Double)]
        pub last_value: f64,
    }

    impl RollupRow {
        pub fn agg(&self) -> Agg {
            Agg {
                count: self.count,
                min: self.min_value,
                max: self.max_value,
                sum: self.sum_value,
                last_ts: self.last_ts,
                last: self.last_value,
            }
        }
    }

    /// The brute-force reference: every tier computed from all raw rows.
    fn brute_force(rows: &[(i64, i64, f64)], width: i64) -> HashMap<(i64, i64), Agg> {
        let mut out: HashMap<(i64, i64), Agg> = HashMap::new();
        for &(s, ts, v) in rows {
            let one = Agg::one(ts, v);
            out.entry((s, bucket_start(ts, width)))
                .and_modify(|a| a.merge(&one))
                .or_insert(one);
        }
        out
    }

    /// Rollup rows selected by `sql`, by (series, period).
    fn rows(conn: &mut SqliteConnection, sql: &str) -> HashMap<(i64, i64), Agg> {
        #[derive(QueryableByName)]
        struct Row {
            #[diesel(sql_type = BigInt)]
            series_id: i64,
            #[diesel(embed)]
            r: RollupRow,
        }
        diesel::sql_query(sql)
            .load::<Row>(conn)
            .unwrap()
            .into_iter()
            .map(|row| ((row.series_id, row.r.bucket), row.r.agg()))
            .collect()
    }

    /// A tier's table alone.
    fn table_rows(conn: &mut SqliteConnection, tier: Tier) -> HashMap<(i64, i64), Agg> {
        rows(conn, &format!("SELECT * FROM {}", tier.table()))
    }

    /// A tier's open periods alone.
    fn open_rows(conn: &mut SqliteConnection, tier: Tier) -> HashMap<(i64, i64), Agg> {
        rows(
            conn,
            &format!("SELECT * FROM {OPEN} WHERE tier = {}", tier.code()),
        )
    }

    /// A tier as readers see it: its table merged with its open periods.
    fn stored(conn: &mut SqliteConnection, tier: Tier) -> HashMap<(i64, i64), Agg> {
        let mut all = table_rows(conn, tier);
        for (key, agg) in open_rows(conn, tier) {
            all.entry(key).and_modify(|a| a.merge(&agg)).or_insert(agg);
        }
        all
    }

    /// Every raw reading stored (rows, head blocks, chunks).
    fn raw_rows(conn: &mut SqliteConnection) -> Vec<(i64, i64, f64)> {
        use crate::storage::points::Order;
        use crate::storage::schema::series::dsl::*;
        let ids: Vec<i64> = series.select(id).load(conn).unwrap();
        ids.into_iter()
            .flat_map(|sid| {
                crate::storage::chunk::points(conn, sid, i64::MIN, i64::MAX, Order::Asc, usize::MAX)
                    .unwrap()
                    .into_iter()
                    .map(move |(t, v)| (sid, t, v))
            })
            .collect()
    }

    fn assert_close(a: f64, b: f64, what: &str) {
        let tol = 1e-9 * a.abs().max(b.abs()).max(1.0);
        assert!((a - b).abs() <= tol, "{what}: {a} vs {b}");
    }

    fn assert_tiers_match_brute_force(conn: &mut SqliteConnection) {
        let raw = raw_rows(conn);
        assert!(!raw.is_empty());
        for tier in Tier::ROLLUPS {
            let want = brute_force(&raw, tier.width_ms());
            let got = stored(conn, tier);
            assert_eq!(got.len(), want.len(), "{tier:?} bucket count");
            for (key, w) in &want {
                let g = got
                    .get(key)
                    .unwrap_or_else(|| panic!("{tier:?} lacks bucket {key:?}"));
                let what = format!("{tier:?} {key:?}");
                assert_eq!(g.count, w.count, "{what} count");
                assert_eq!(g.min, w.min, "{what} min");
                assert_eq!(g.max, w.max, "{what} max");
                assert_eq!((g.last_ts, g.last), (w.last_ts, w.last), "{what} last");
                assert_close(g.sum, w.sum, &format!("{what} sum"));
            }
        }
    }

    fn key(metric: &str) -> Arc<SeriesKey> {
        Arc::new(SeriesKey {
            sensor: "s".into(),
            metric: metric.into(),
            unit: "".into(),
        })
    }

    #[test]
    fn incremental_rollups_equal_a_brute_force_aggregate_of_the_raw_rows() {
        let TestDb {
            dir: _dir,
            cfg: _,
            mut conn,
            catalog,
        } = writer_db();
        let keys = [key("a"), key("b"), key("c")];
        let mut rng = fastrand::Rng::with_seed(7);
        let t0 = 1_795_392_000_000; // a UTC midnight

        // Readings on and around period boundaries, in every tier.
        let mut special = Vec::new();
        for edge in [0, MINUTE_MS, HOUR_MS, DAY_MS, 2 * DAY_MS] {
            for d in [-1, 0, 1] {
                special.push(t0 + edge + d);
            }
        }
        let mut batches: Vec<Vec<Reading>> = vec![
            special
                .iter()
                .map(|&ts| Reading {
                    series: keys[0].clone(),
                    ts_ms: ts,
                    value: rng.f64() * 10.0 - 5.0,
                })
                .collect(),
        ];
        // Forty batches of mostly in-order readings over three days, some
        // late (hours or days behind), some colliding with stored timestamps
        // (the writer moves those forward a millisecond, which can cross a
        // boundary: the rollups must follow the stored timestamp).
        let mut now = t0 + 5;
        for _ in 0..40 {
            let mut batch = Vec::new();
            for _ in 0..rng.usize(1..200) {
                now += rng.i64(1..5_000);
                let ts = match rng.u8(0..20) {
                    0 => now - rng.i64(0..2 * DAY_MS),
                    1 => special[rng.usize(0..special.len())],
                    _ => now,
                };
                batch.push(Reading {
                    series: keys[rng.usize(0..keys.len())].clone(),
                    ts_ms: ts,
                    value: (rng.f64() - 0.5) * 1000.0,
                });
            }
            batches.push(batch);
        }
        let mut nudged = 0;
        for (i, batch) in batches.iter().enumerate() {
            nudged += commit_batch(&mut conn, &catalog, batch).unwrap();
            if i % 10 == 0 {
                assert_tiers_match_brute_force(&mut conn);
            }
        }
        assert!(nudged > 0, "the data set exercises colliding timestamps");
        assert_tiers_match_brute_force(&mut conn);
    }

    #[test]
    fn commits_rewrite_only_the_open_periods_until_they_close() {
        let TestDb {
            dir: _dir,
            cfg: _,
            mut conn,
            catalog,
        } = writer_db();
        let keys = [key("a"), key("b")];
        let t0 = 1_795_392_000_000 + 30 * MINUTE_MS; // half past midnight
        let batch = |from: i64| -> Vec<Reading> {
            (0..10)
                .map(|i| Reading {
                    series: keys[i % 2].clone(),
                    ts_ms: from + i as i64 * 1000,
                    value: i as f64,
                })
                .collect()
        };
        // Nine minutes of 10-second commits: everything stays open.
        let mut t = t0;
        while t < t0 + 9 * MINUTE_MS {
            commit_batch(&mut conn, &catalog, &batch(t)).unwrap();
            t += 10_000;
        }
        for tier in Tier::ROLLUPS {
            assert!(table_rows(&mut conn, tier).is_empty(), "{tier:?} untouched");
        }
        assert_eq!(open_rows(&mut conn, Tier::Minute).len(), 2 * 9);
        assert_tiers_match_brute_force(&mut conn);

        // The tenth minute closes all but the current one.
        while t < t0 + 10 * MINUTE_MS + 10_000 {
            commit_batch(&mut conn, &catalog, &batch(t)).unwrap();
            t += 10_000;
        }
        assert_eq!(table_rows(&mut conn, Tier::Minute).len(), 2 * 10);
        assert_eq!(open_rows(&mut conn, Tier::Minute).len(), 2);
        assert!(table_rows(&mut conn, Tier::Hour).is_empty());
        assert_tiers_match_brute_force(&mut conn);

        // Into the next hour: the first hour closes, the day stays open.
        while t < t0 + 31 * MINUTE_MS {
            commit_batch(&mut conn, &catalog, &batch(t)).unwrap();
            t += 10_000;
        }
        assert_eq!(table_rows(&mut conn, Tier::Hour).len(), 2);
        assert_eq!(open_rows(&mut conn, Tier::Hour).len(), 2);
        assert!(table_rows(&mut conn, Tier::Day).is_empty());
        assert_tiers_match_brute_force(&mut conn);

        // A late reading for a closed minute reopens it in rollup_open; the
        // tier then shows the merge of both rows.
        commit_batch(&mut conn, &catalog, &batch(t0 + 500)[..1]).unwrap();
        assert!(open_rows(&mut conn, Tier::Minute).contains_key(&(1, t0)));
        assert!(table_rows(&mut conn, Tier::Minute).contains_key(&(1, t0)));
        assert_tiers_match_brute_force(&mut conn);

        close_all(&mut conn).unwrap();
        for tier in Tier::ROLLUPS {
            assert!(open_rows(&mut conn, tier).is_empty());
        }
        assert_tiers_match_brute_force(&mut conn);
    }

    #[test]
    fn the_migration_rolls_up_readings_stored_before_it() {
        use crate::storage::MIGRATIONS;
        use diesel::connection::SimpleConnection;
        use diesel_migrations::MigrationHarness;

        let dir = tempfile::tempdir().unwrap();
        let mut conn = crate::storage::establish(&dir.path().join("old.db")).unwrap();
        // The schema as it was before rollups, with readings in it.
        conn.run_next_migration(MIGRATIONS).unwrap();
        conn.batch_execute(
            "INSERT INTO series (id, sensor, metric) VALUES (1, 's', 'a'), (2, 's', 'b');",
        )
        .unwrap();
        let mut rng = fastrand::Rng::with_seed(5);
        let t0 = 1_795_392_000_000;
        let mut values = Vec::new();
        for i in 0..3000i64 {
            let ts = t0 - HOUR_MS + i * 97_000 + rng.i64(0..1000);
            values.push(format!(
                "({}, {ts}, {})",
                1 + i % 2,
                rng.f64() * 100.0 - 50.0
            ));
        }
        conn.batch_execute(&format!(
            "INSERT INTO readings (series_id, ts, value) VALUES {};",
            values.join(",")
        ))
        .unwrap();
        conn.run_pending_migrations(MIGRATIONS).unwrap();
        assert_tiers_match_brute_force(&mut conn);
    }

    #[test]
    fn a_failed_batch_leaves_no_rollups_behind() {
        let TestDb {
            dir: _dir,
            cfg: _,
            mut conn,
            catalog,
        } = writer_db();
        let k = key("a");
        let r = |ts| Reading {
            series: k.clone(),
            ts_ms: ts,
            value: 1.0,
        };
        commit_batch(&mut conn, &catalog, &[r(1000)]).unwrap();
        // Make the rollup step fail inside the batch's transaction.
        diesel::sql_query("ALTER TABLE rollup_open RENAME TO rollup_open_moved")
            .execute(&mut conn)
            .unwrap();
        assert!(commit_batch(&mut conn, &catalog, &[r(2000)]).is_err());
        diesel::sql_query("ALTER TABLE rollup_open_moved RENAME TO rollup_open")
            .execute(&mut conn)
            .unwrap();
        assert_eq!(raw_rows(&mut conn).len(), 1, "the raw insert rolled back");
        assert_tiers_match_brute_force(&mut conn);
    }

    #[test]
    fn head_blocks_enter_the_rollups_when_sealed_and_not_before() {
        let TestDb {
            mut conn, catalog, ..
        } = writer_db();
        let k = key("a");
        let batch: Vec<Reading> = (0..3 * 3600)
            .map(|s| Reading {
                series: k.clone(),
                ts_ms: 5 * DAY_MS + s * 1000,
                value: (s % 97) as f64 / 4.0,
            })
            .collect();
        crate::storage::writer::commit_gated(&mut conn, &catalog, &batch, true, None).unwrap();
        let open: i64 = {
            use crate::storage::schema::rollup_open::dsl::*;
            rollup_open.count().get_result(&mut conn).unwrap()
        };
        assert_eq!(open, 0, "a commit of head blocks writes no rollup");
        // Two of the three hours sealed: their readings are in the tiers,
        // and once the last is, every reading is, as if committed as rows.
        let mut sealed = 0;
        while crate::storage::chunk::blocks::seal_oldest_hour(
            &mut conn,
            i64::MIN,
            5 * DAY_MS + 2 * HOUR_MS,
        )
        .unwrap()
        .is_some()
        {
            sealed += 1;
        }
        assert_eq!(sealed, 2);
        let minutes: i64 = stored(&mut conn, Tier::Minute)
            .values()
            .map(|a| a.count)
            .sum();
        assert_eq!(minutes, 2 * 3600);
        while crate::storage::chunk::blocks::seal_oldest_hour(&mut conn, i64::MIN, 6 * DAY_MS)
            .unwrap()
            .is_some()
        {}
        assert_tiers_match_brute_force(&mut conn);
    }
}
