//! `GET /api/series`: a sensor's readings over a time range as at most N
//! chart buckets (count, min, max, mean), answered from the cheapest storage
//! tier that still has the resolution asked for; the answer names the tier.

use actix_web::{HttpRequest, HttpResponse, web};
use schemars::JsonSchema;
use serde::Serialize;

use super::AppState;
use super::error::ApiError;
use super::params::Params;
use crate::storage::StorageError;
use crate::storage::rollup::{DAY_MS, Tier};
use crate::storage::series::{SeriesAnswer, query_with_head};
use crate::vocab::clock::{RFC3339_RANGE_MS, now_ms, rfc3339};

/// Buckets when `points` is not given.
pub const DEFAULT_POINTS: u64 = 500;
/// The most buckets a client may ask for.
pub const MAX_POINTS: u64 = 10_000;
/// The range when `from` is not given: this long before `to`.
pub const DEFAULT_SPAN_MS: i64 = DAY_MS;

/// The query parameters `GET /api/series` accepts.
pub const PARAMS: &[&str] = &["sensor", "metric", "from", "to", "points"];

#[derive(Serialize, JsonSchema)]
pub struct BucketView {
    ts_ms: i64,
    count: i64,
    min: f64,
    max: f64,
    mean: f64,
}

#[derive(Serialize, JsonSchema)]
pub struct SeriesView {
    metric: String,
    unit: String,
    /// `raw`, `minute`, `hour` or `day`: the tier that answered.
    tier: Tier,
    /// Width of every bucket.
    bucket_ms: i64,
    /// Start of the first bucket.
    start_ms: i64,
    count: usize,
    buckets: Vec<BucketView>,
    /// Readings of this series older than this are committed; from it on
    /// some are in memory only (counted in the buckets all the same). Null
    /// when all are committed.
    committed_through_ms: Option<i64>,
}

#[derive(Serialize, JsonSchema)]
pub struct SeriesBody {
    sensor: String,
    from: String,
    to: String,
    from_ms: i64,
    to_ms: i64,
    points: u64,
    series: Vec<SeriesView>,
}

fn view(metric: &str, unit: &str, a: SeriesAnswer, committed_through: Option<i64>) -> SeriesView {
    SeriesView {
        committed_through_ms: committed_through,
        metric: metric.to_owned(),
        unit: unit.to_owned(),
        tier: a.tier,
        bucket_ms: a.bucket_ms,
        start_ms: a.start_ms,
        count: a.buckets.len(),
        buckets: a
            .buckets
            .into_iter()
            .map(|(ts_ms, agg)| BucketView {
                ts_ms,
                count: agg.count,
                min: agg.min,
                max: agg.max,
                mean: agg.mean(),
            })
            .collect(),
    }
}

pub async fn series(
    state: web::Data<AppState>,
    req: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    let p = Params::parse(req.query_string(), PARAMS)?;
    let sensor = p
        .str("sensor")
        .ok_or_else(|| ApiError::bad("sensor", "`sensor` is required"))?
        .to_owned();
    let points = p.int("points", DEFAULT_POINTS, 1, MAX_POINTS)?;
    let given_to = p.time("to")?;
    let to = given_to.unwrap_or_else(|| now_ms() + 1);
    let from = p
        .time("from")?
        .unwrap_or(to.saturating_sub(DEFAULT_SPAN_MS));
    for (name, t) in [("to", to), ("from", from)] {
        // Times an answer can write in RFC 3339 (its `from` and `to`), which
        // also keeps every range's arithmetic far from overflow.
        if !RFC3339_RANGE_MS.contains(&t) {
            return Err(ApiError::bad(
                name,
                format!(
                    "`{name}` is outside the years 0000 to 9999 ({} to {} ms)",
                    RFC3339_RANGE_MS.start(),
                    RFC3339_RANGE_MS.end()
                ),
            ));
        }
    }
    if from >= to {
        return Err(match given_to {
            Some(_) => ApiError::bad("to", "`to` must be after `from`"),
            None => ApiError::bad("from", "`from` must be before `to`, which defaults to now"),
        });
    }
    let metric = p.str("metric");
    let series = state.series_for(Some(&sensor), metric)?;
    if let Some(metric) = metric
        && series.is_empty()
    {
        return Err(ApiError::NotFound(format!(
            "sensor `{sensor}` has stored no metric `{metric}`"
        )));
    }

    let pool = state.pool.clone();
    let head = state.writer.queue.head().clone();
    let views = web::block(move || {
        let mut conn = pool.get().map_err(|e| StorageError::Pool(e.to_string()))?;
        series
            .iter()
            .map(|s| {
                let through = head.view(|h| h.oldest(s.id));
                query_with_head(&mut conn, Some(&head), s.id, from, to, points as u32)
                    .map(|a| view(&s.metric, &s.unit, a, through))
                    .map_err(StorageError::from)
            })
            .collect::<Result<Vec<_>, StorageError>>()
    })
    .await??;
    Ok(HttpResponse::Ok().json(SeriesBody {
        sensor,
        from: rfc3339(from),
        to: rfc3339(to),
        from_ms: from,
        to_ms: to,
        points,
        series: views,
    }))
}
