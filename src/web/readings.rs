//! `GET /api/readings`: stored readings, paginated by cursor, newest first by
//! default, optionally narrowed to a sensor, a metric, a time range and a
//! set of fields.

use actix_web::{HttpRequest, HttpResponse, web};
use schemars::JsonSchema;
use serde::Serialize;
use serde::ser::SerializeMap;

use super::AppState;
use super::error::ApiError;
use super::params::Params;
use crate::storage::read::{
    Cursor, Order, Page, PageQuery, Row, bounds, latest, merge_page, merge_points,
    readings_page_sql, readings_page_with_head,
};
use crate::vocab::clock::{RFC3339_LEN, format_rfc3339, rfc3339};

/// Rows per page when `limit` is not given.
pub const DEFAULT_LIMIT: u64 = 100;

/// The query parameters `GET /api/readings` accepts.
pub const PARAMS: &[&str] = &[
    "sensor", "metric", "from", "to", "limit", "order", "cursor", "fields",
];
/// The values of `order`; the first is the default.
pub const ORDERS: &[&str] = &["desc", "asc"];
const FIELDS: &[&str] = &["sensor", "metric", "unit", "value", "ts", "ts_ms"];

/// Which fields each row carries, as a bit per entry of `FIELDS`.
#[derive(Clone, Copy)]
struct FieldMask(u8);

impl FieldMask {
    fn parse(raw: Option<&str>) -> Result<FieldMask, ApiError> {
        let Some(raw) = raw else {
            return Ok(FieldMask(u8::MAX));
        };
        let mut mask = 0u8;
        for name in raw.split(',').map(str::trim) {
            let i = FIELDS.iter().position(|f| *f == name).ok_or_else(|| {
                ApiError::bad(
                    "fields",
                    format!("unknown field `{name}`; fields are {}", FIELDS.join(", ")),
                )
            })?;
            mask |= 1 << i;
        }
        Ok(FieldMask(mask))
    }

    fn has(self, i: usize) -> bool {
        self.0 & (1 << i) != 0
    }
}

/// The serde rendering of a row: the reference `render_page` is tested
/// against, and the schema of a row in the document.
#[cfg_attr(not(test), allow(dead_code))]
pub struct RowView<'a> {
    row: &'a Row,
    mask: FieldMask,
}

impl JsonSchema for RowView<'_> {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Reading".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "type": "object",
            "description": "A stored reading: the fields `fields` asks for (all by default).",
            "properties": {
                "sensor": { "type": "string" },
                "metric": { "type": "string" },
                "unit": { "type": "string" },
                "value": { "type": "number" },
                "ts": { "type": "string", "format": "date-time" },
                "ts_ms": { "type": "integer", "format": "int64" },
            },
            "additionalProperties": false,
        })
    }
}

impl Serialize for RowView<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let r = self.row;
        let mut m = s.serialize_map(None)?;
        for (i, name) in FIELDS.iter().enumerate() {
            if !self.mask.has(i) {
                continue;
            }
            match i {
                0 => m.serialize_entry(name, &*r.series.sensor)?,
                1 => m.serialize_entry(name, &*r.series.metric)?,
                2 => m.serialize_entry(name, &*r.series.unit)?,
                3 => m.serialize_entry(name, &r.value)?,
                4 => {
                    let mut buf = [0; RFC3339_LEN];
                    match format_rfc3339(r.ts, &mut buf) {
                        Some(text) => m.serialize_entry(name, text)?,
                        None => m.serialize_entry(name, &rfc3339(r.ts))?,
                    }
                }
                _ => m.serialize_entry(name, &r.ts)?,
            }
        }
        m.end()
    }
}

/// A page of readings. `render_page` writes it without serde, and is tested
/// against this type's serde rendering; its schema is the document's.
#[cfg_attr(not(test), allow(dead_code))]
#[derive(Serialize, JsonSchema)]
pub struct PageView<'a> {
    readings: Vec<RowView<'a>>,
    count: usize,
    order: &'static str,
    limit: usize,
    /// Pass as `cursor` to get the next page; null on the last page.
    next_cursor: Option<String>,
    /// Readings of the selected series older than this are committed; from
    /// it on some are in memory only. Null when all are committed.
    committed_through_ms: Option<i64>,
}

/// The page from memory: the recent-readings cache (committed readings)
/// merged with the head (uncommitted ones) at one instant, if the cache
/// holds every committed row the page needs; and the oldest uncommitted
/// timestamp of the page's series. Series not cached yet start warming
/// for the next request.
fn from_memory(state: &AppState, q: &PageQuery) -> Option<(Page, Option<i64>)> {
    let started = std::time::Instant::now();
    let recent = &state.writer.recent;
    let want = q.limit.saturating_add(1);
    let mut cold = Vec::new();
    let mut complete = true;
    let found = state.writer.queue.head().view(|h| {
        let mut per_series = Vec::with_capacity(q.series.len());
        for s in &q.series {
            match recent.page_rows(q, s.id) {
                Ok(Some(rows)) => {
                    let (lo, hi) = bounds(q, s.id);
                    let head = h.rows(s.id, lo, hi, q.order == Order::Desc, want);
                    per_series.push((s.clone(), merge_points(q.order, rows, head, want)));
                }
                Ok(None) => complete = false,
                Err(id) => cold.push(id),
            }
        }
        (per_series, h.oldest_of(q.series.iter().map(|s| s.id)))
    });
    if !cold.is_empty() {
        warm(state, cold);
        return None;
    }
    if !complete {
        return None;
    }
    let (per_series, oldest) = found;
    let page = merge_page(q, per_series);
    state
        .perf
        .op("memory.readings_page")
        .record(started.elapsed(), true);
    Some((page, oldest))
}

/// Loads the latest readings of `ids` into the cache, in the background.
fn warm(state: &AppState, ids: Vec<i64>) {
    let recent = state.writer.recent.clone();
    for id in ids {
        if !recent.begin_warm(id) {
            continue;
        }
        let (pool, recent) = (state.pool.clone(), recent.clone());
        actix_web::rt::spawn(async move {
            let depth = recent.depth();
            let loaded = web::block(move || {
                let mut conn = pool.get().map_err(|e| e.to_string())?;
                latest(&mut conn, id, depth).map_err(|e| e.to_string())
            })
            .await;
            match loaded {
                Ok(Ok(rows)) => {
                    let complete = rows.len() < depth;
                    recent.finish_warm(id, rows, complete);
                }
                _ => recent.abort_warm(id),
            }
        });
    }
}

pub async fn readings(
    state: web::Data<AppState>,
    req: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    let p = Params::parse(req.query_string(), PARAMS)?;
    let max = u64::from(state.server.max_page_size);
    let limit = p.int("limit", DEFAULT_LIMIT.min(max), 1, max)? as usize;
    let from = p.time("from")?;
    let to = p.time("to")?;
    if let (Some(f), Some(t)) = (from, to)
        && f >= t
    {
        return Err(ApiError::bad("to", "`to` must be after `from`"));
    }
    let order = match p.choice("order", ORDERS, ORDERS[0])? {
        "asc" => Order::Asc,
        _ => Order::Desc,
    };
    let cursor = p
        .str("cursor")
        .map(|c| {
            c.parse::<Cursor>().map_err(|()| {
                ApiError::bad(
                    "cursor",
                    "`cursor` must be a `next_cursor` this API returned",
                )
            })
        })
        .transpose()?;
    let mask = FieldMask::parse(p.str("fields"))?;

    let series = state.series_for(p.str("sensor"), p.str("metric"))?;

    let found = if series.is_empty() {
        None
    } else {
        let q = PageQuery {
            series,
            from,
            to,
            limit,
            order,
            cursor,
        };
        if let Some(found) = from_memory(&state, &q) {
            Some(found)
        } else {
            let pool = state.pool.clone();
            let perf = state.perf.clone();
            let head = state.writer.queue.head().clone();
            let page = web::block(move || {
                let mut conn = pool
                    .get()
                    .map_err(|e| crate::storage::StorageError::Pool(e.to_string()))?;
                let started = std::time::Instant::now();
                let page = readings_page_with_head(&mut conn, &q, &head);
                perf.record_query("readings_page", started.elapsed(), page.is_ok(), || {
                    readings_page_sql()
                });
                page.map_err(crate::storage::StorageError::from)
            })
            .await??;
            Some(page)
        }
    };
    let page = found.as_ref().map(|(p, _)| p);
    let committed_through = found.as_ref().and_then(|(_, oldest)| *oldest);
    let rows = page.map_or(&[][..], |p| &p.rows[..]);
    let order = match order {
        Order::Asc => "asc",
        Order::Desc => "desc",
    };
    let next = page.and_then(|p| p.next).map(|c| c.to_string());
    Ok(HttpResponse::Ok()
        .content_type("application/json")
        .body(render_page(
            rows,
            mask,
            order,
            limit,
            next,
            committed_through,
        )))
}

/// The page as JSON, the same document `PageView` serializes to, written
/// by hand because this is the hottest path of the API: a row's sensor,
/// metric and unit are escaped once per series rather than once per row,
/// timestamps are formatted without allocating, and the buffer is sized
/// up front. `renders_what_serde_would` holds it to the serde version.
fn render_page(
    rows: &[Row],
    mask: FieldMask,
    order: &str,
    limit: usize,
    next: Option<String>,
    committed_through: Option<i64>,
) -> Vec<u8> {
    use std::io::Write as _;
    // Writing into a Vec cannot fail, nor can serializing strings and
    // numbers; the results are ignored for that reason.
    let mut out = Vec::with_capacity(96 + rows.len() * 128);
    out.extend_from_slice(b"{\"readings\":[");
    // The fixed fields of each series met so far, already rendered.
    let mut fixed: Vec<(*const crate::storage::catalog::SeriesInfo, Vec<u8>)> = Vec::new();
    for (i, r) in rows.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.push(b'{');
        let key = std::sync::Arc::as_ptr(&r.series);
        let at = match fixed.iter().position(|(k, _)| *k == key) {
            Some(at) => at,
            None => {
                let mut f = Vec::new();
                let texts = [&*r.series.sensor, &*r.series.metric, &*r.series.unit];
                for (j, text) in texts.into_iter().enumerate() {
                    if mask.has(j) {
                        if !f.is_empty() {
                            f.push(b',');
                        }
                        let _ = write!(f, "\"{}\":", FIELDS[j]);
                        let _ = serde_json::to_writer(&mut f, text);
                    }
                }
                fixed.push((key, f));
                fixed.len() - 1
            }
        };
        let fixed = &fixed[at].1;
        out.extend_from_slice(fixed);
        let mut first = fixed.is_empty();
        let mut field = |out: &mut Vec<u8>, key: &[u8]| {
            if !first {
                out.push(b',');
            }
            first = false;
            out.extend_from_slice(key);
        };
        if mask.has(3) {
            field(&mut out, b"\"value\":");
            let _ = serde_json::to_writer(&mut out, &r.value);
        }
        if mask.has(4) {
            field(&mut out, b"\"ts\":");
            let mut buf = [0; RFC3339_LEN];
            match format_rfc3339(r.ts, &mut buf) {
                Some(text) => {
                    out.push(b'"');
                    out.extend_from_slice(text.as_bytes());
                    out.push(b'"');
                }
                None => {
                    let _ = serde_json::to_writer(&mut out, &rfc3339(r.ts));
                }
            }
        }
        if mask.has(5) {
            field(&mut out, b"\"ts_ms\":");
            let _ = serde_json::to_writer(&mut out, &r.ts);
        }
        out.push(b'}');
    }
    let _ = write!(
        out,
        "],\"count\":{},\"order\":\"{order}\",\"limit\":{limit},\"next_cursor\":",
        rows.len()
    );
    let _ = serde_json::to_writer(&mut out, &next);
    out.extend_from_slice(b",\"committed_through_ms\":");
    let _ = serde_json::to_writer(&mut out, &committed_through);
    out.push(b'}');
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::catalog::SeriesInfo;
    use std::sync::Arc;

    /// The hand-written page is the document serde would write, for
    /// strings that need escaping, every field mask, extreme values and
    /// timestamps outside the fast formatter's years.
    #[test]
    fn renders_what_serde_would() {
        let info = |id, sensor: &str, metric: &str, unit: &str| {
            Arc::new(SeriesInfo {
                id,
                sensor: sensor.into(),
                metric: metric.into(),
                unit: unit.into(),
            })
        };
        let series = [
            info(1, "plain", "value", "%"),
            info(2, "quote\"back\\slash", "tab\tnl\n", "°C \u{1}\u{7f} é"),
            info(3, "", "", ""),
        ];
        let mut rng = fastrand::Rng::with_seed(3);
        let values = [
            0.0,
            -0.0,
            1e-300,
            -1e300,
            0.1,
            123456.789,
            f64::MIN_POSITIVE,
        ];
        let times = [
            0,
            -1,
            1_795_441_045_211,
            -62_167_219_200_001,
            253_402_300_800_000,
        ];
        let rows: Vec<Row> = (0..300)
            .map(|i| Row {
                series: series[rng.usize(0..series.len())].clone(),
                ts: if i % 7 == 0 {
                    times[rng.usize(0..times.len())]
                } else {
                    rng.i64(-10_000_000_000_000..10_000_000_000_000)
                },
                value: if i % 5 == 0 {
                    values[rng.usize(0..values.len())]
                } else {
                    (rng.f64() - 0.5) * 1e6
                },
            })
            .collect();
        for mask in 1..=u8::try_from((1 << FIELDS.len()) - 1).unwrap() {
            let mask = FieldMask(mask);
            for (n, next, through) in [
                (0, None, None),
                (1, Some("5_1".to_owned()), Some(-3)),
                (300, None, Some(1_795_441_045_211)),
            ] {
                let page = &rows[..n];
                let want = serde_json::to_vec(&PageView {
                    readings: page.iter().map(|row| RowView { row, mask }).collect(),
                    count: page.len(),
                    order: "desc",
                    limit: 100,
                    next_cursor: next.clone(),
                    committed_through_ms: through,
                })
                .unwrap();
                let got = render_page(page, mask, "desc", 100, next.clone(), through);
                assert_eq!(
                    String::from_utf8(got).unwrap(),
                    String::from_utf8(want).unwrap()
                );
            }
        }
    }
}
