//! `GET /api/readings`: stored readings, paginated by cursor, newest first by
//! default, optionally narrowed to a sensor, a metric, a time range and a
//! set of fields.

use actix_web::{HttpRequest, HttpResponse, web};
use serde::Serialize;
use serde::ser::SerializeMap;

use super::AppState;
use super::error::ApiError;
use super::params::Params;
use crate::clock::rfc3339;
use crate::storage::read::{
    Cursor, Order, Page, PageQuery, Row, latest, merge_page, readings_page, readings_page_sql,
};

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

struct RowView<'a> {
    row: &'a Row,
    mask: FieldMask,
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
                4 => m.serialize_entry(name, &rfc3339(r.ts))?,
                _ => m.serialize_entry(name, &r.ts)?,
            }
        }
        m.end()
    }
}

#[derive(Serialize)]
struct PageView<'a> {
    readings: Vec<RowView<'a>>,
    count: usize,
    order: &'static str,
    limit: usize,
    /// Pass as `cursor` to get the next page; null on the last page.
    next_cursor: Option<String>,
}

/// The page from the recent-readings cache, if it holds every row the page
/// needs. Series not cached yet start warming for the next request.
fn from_memory(state: &AppState, q: &PageQuery) -> Option<Page> {
    let started = std::time::Instant::now();
    let recent = &state.writer.recent;
    let mut per_series = Vec::with_capacity(q.series.len());
    let mut cold = Vec::new();
    let mut complete = true;
    for s in &q.series {
        match recent.page_rows(q, s.id) {
            Ok(Some(rows)) => per_series.push((s.clone(), rows)),
            Ok(None) => complete = false,
            Err(id) => cold.push(id),
        }
    }
    if !cold.is_empty() {
        warm(state, cold);
        return None;
    }
    if !complete {
        return None;
    }
    let page = merge_page(q, per_series);
    state
        .perf
        .op("memory.readings_page")
        .record(started.elapsed(), true);
    Some(page)
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
    let max = u64::from(state.config.server.max_page_size);
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

    let page = if series.is_empty() {
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
        if let Some(page) = from_memory(&state, &q) {
            Some(page)
        } else {
            let pool = state.pool.clone();
            let perf = state.perf.clone();
            let page = web::block(move || {
                let mut conn = pool
                    .get()
                    .map_err(|e| crate::storage::StorageError::Pool(e.to_string()))?;
                let started = std::time::Instant::now();
                let page = readings_page(&mut conn, &q);
                perf.record_query("readings_page", started.elapsed(), page.is_ok(), || {
                    readings_page_sql(&q)
                });
                page.map_err(crate::storage::StorageError::from)
            })
            .await??;
            Some(page)
        }
    };
    let rows = page.as_ref().map_or(&[][..], |p| &p.rows[..]);
    let body = PageView {
        readings: rows.iter().map(|row| RowView { row, mask }).collect(),
        count: rows.len(),
        order: match order {
            Order::Asc => "asc",
            Order::Desc => "desc",
        },
        limit,
        next_cursor: page.as_ref().and_then(|p| p.next).map(|c| c.to_string()),
    };
    Ok(HttpResponse::Ok().json(body))
}
