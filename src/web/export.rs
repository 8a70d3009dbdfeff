//! `GET /api/readings/export`: raw readings of a time range as CSV or
//! NDJSON, streamed in a chunked body. Each chunk is read on the blocking
//! pool with a pooled connection taken for that chunk only, and the next is
//! read only when the client has taken the previous one, so memory stays
//! bounded whatever the range and however slow the client.

use std::sync::Arc;

use actix_web::http::header::{CONTENT_DISPOSITION, HeaderValue};
use actix_web::web::Bytes;
use actix_web::{HttpRequest, HttpResponse, web};
use futures_util::stream;
use serde::Serialize;

use super::AppState;
use super::error::ApiError;
use super::params::Params;
use crate::storage::export::{ExportCursor, ExportRow};
use crate::storage::head::Head;
use crate::storage::{ReadPool, StorageError};
use crate::vocab::clock::{now_ms, rfc3339};

/// Rows per chunk of the response body (a few hundred kilobytes).
pub const EXPORT_CHUNK_ROWS: usize = 5000;

/// The query parameters `GET /api/readings/export` accepts.
pub const PARAMS: &[&str] = &["sensor", "metric", "from", "to", "format"];

/// The values of `format`; the first is the default.
pub const FORMATS: &[&str] = &["csv", "ndjson"];

/// The output formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Csv,
    Ndjson,
}

impl Format {
    fn content_type(self) -> &'static str {
        match self {
            Format::Csv => "text/csv; charset=utf-8",
            Format::Ndjson => "application/x-ndjson",
        }
    }

    fn extension(self) -> &'static str {
        match self {
            Format::Csv => "csv",
            Format::Ndjson => "ndjson",
        }
    }
}

/// The CSV header line.
pub const CSV_HEADER: &str = "ts,ts_ms,sensor,metric,unit,value\n";

/// A CSV field, quoted when it holds a separator, a quote or a line break.
fn csv_field(out: &mut String, s: &str) {
    if s.contains([',', '"', '\n', '\r']) {
        out.push('"');
        out.push_str(&s.replace('"', "\"\""));
        out.push('"');
    } else {
        out.push_str(s);
    }
}

#[derive(Serialize)]
struct JsonRow<'a> {
    ts: String,
    ts_ms: i64,
    sensor: &'a str,
    metric: &'a str,
    unit: &'a str,
    value: f64,
}

/// Encodes rows in `format`, one line each.
pub fn encode(rows: &[ExportRow], format: Format, out: &mut String) {
    use std::fmt::Write as _;
    for r in rows {
        match format {
            Format::Csv => {
                out.push_str(&rfc3339(r.ts));
                let _ = write!(out, ",{},", r.ts);
                csv_field(out, &r.series.sensor);
                out.push(',');
                csv_field(out, &r.series.metric);
                out.push(',');
                csv_field(out, &r.series.unit);
                let _ = writeln!(out, ",{}", r.value);
            }
            Format::Ndjson => {
                let row = JsonRow {
                    ts: rfc3339(r.ts),
                    ts_ms: r.ts,
                    sensor: &r.series.sensor,
                    metric: &r.series.metric,
                    unit: &r.series.unit,
                    value: r.value,
                };
                if let Ok(line) = serde_json::to_string(&row) {
                    out.push_str(&line);
                    out.push('\n');
                }
            }
        }
    }
}

/// Reads and encodes the next chunk on the blocking pool. `None` when the
/// export is complete.
async fn next_chunk(
    pool: ReadPool,
    head: Arc<Head>,
    mut cursor: ExportCursor,
    format: Format,
    header: bool,
) -> Result<Option<(Bytes, ExportCursor)>, ApiError> {
    let out = web::block(move || {
        let mut conn = pool.get().map_err(|e| StorageError::Pool(e.to_string()))?;
        let rows = cursor.next_chunk_with(&mut conn, Some(&head), EXPORT_CHUNK_ROWS)?;
        if rows.is_empty() && !header {
            return Ok::<_, StorageError>(None);
        }
        let mut text = String::with_capacity(rows.len() * 64 + CSV_HEADER.len());
        if header && format == Format::Csv {
            text.push_str(CSV_HEADER);
        }
        encode(&rows, format, &mut text);
        Ok(Some((Bytes::from(text), cursor)))
    })
    .await??;
    Ok(out)
}

/// What the body stream carries from one chunk to the next.
struct ExportState {
    pool: ReadPool,
    head: Arc<Head>,
    cursor: Option<ExportCursor>,
    format: Format,
}

pub async fn export(
    state: web::Data<AppState>,
    req: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    let p = Params::parse(req.query_string(), PARAMS)?;
    let format = match p.choice("format", FORMATS, FORMATS[0])? {
        "ndjson" => Format::Ndjson,
        _ => Format::Csv,
    };
    let from = p.time("from")?;
    // Without `to`, the export ends at the request: it terminates even while
    // sensors keep writing. A `from` after that is an empty range, as for
    // `/api/readings`; only a `to` given before `from` is a mistake.
    let to = match p.time("to")? {
        Some(to) if from.is_some_and(|f| f >= to) => {
            return Err(ApiError::bad("to", "`to` must be after `from`"));
        }
        Some(to) => to,
        None => (now_ms() + 1).max(from.unwrap_or(i64::MIN)),
    };
    let series = state.series_for(p.str("sensor"), p.str("metric"))?;
    let name = format!(
        "vigil-{}.{}",
        p.str("sensor").unwrap_or("all"),
        format.extension()
    );

    // The first chunk is read before answering, so that a database that
    // cannot be read is a 503 rather than a cut-off body.
    let cursor = ExportCursor::new(series, from, to, EXPORT_CHUNK_ROWS);
    let head = state.writer.queue.head().clone();
    let (first, cursor) = next_chunk(state.pool.clone(), head.clone(), cursor, format, true)
        .await?
        .ok_or_else(|| ApiError::Unavailable("export produced no header".into()))?;
    let rest = stream::unfold(
        ExportState {
            pool: state.pool.clone(),
            head,
            cursor: Some(cursor),
            format,
        },
        |mut st| async move {
            let cursor = st.cursor.take()?;
            match next_chunk(st.pool.clone(), st.head.clone(), cursor, st.format, false).await {
                Ok(Some((bytes, cursor))) => {
                    st.cursor = Some(cursor);
                    Some((Ok(bytes), st))
                }
                Ok(None) => None,
                Err(e) => {
                    // The status is sent: cutting the body short is the only
                    // way left to tell the client.
                    log::warn!("export aborted: {e}");
                    Some((Err(actix_web::Error::from(e)), st))
                }
            }
        },
    );
    let body = futures_util::StreamExt::chain(
        stream::once(async move { Ok::<_, actix_web::Error>(first) }),
        rest,
    );
    let mut res = HttpResponse::Ok();
    res.content_type(format.content_type());
    if let Ok(v) = HeaderValue::from_str(&format!("attachment; filename=\"{name}\"")) {
        res.insert_header((CONTENT_DISPOSITION, v));
    }
    Ok(res.streaming(body))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::catalog::SeriesInfo;
    use std::sync::Arc;

    fn row(metric: &str, unit: &str, ts: i64, value: f64) -> ExportRow {
        ExportRow {
            series: Arc::new(SeriesInfo {
                id: 1,
                sensor: "s".into(),
                metric: metric.into(),
                unit: unit.into(),
            }),
            ts,
            value,
        }
    }

    #[test]
    fn csv_quotes_only_what_needs_it() {
        let mut out = String::new();
        encode(
            &[
                row("temp", "°C", 1_795_441_045_211, 21.5),
                row("a,b", "say \"hi\"", 0, -1.0),
            ],
            Format::Csv,
            &mut out,
        );
        assert_eq!(
            out,
            "2026-11-23T13:37:25.211Z,1795441045211,s,temp,°C,21.5\n\
             1970-01-01T00:00:00.000Z,0,s,\"a,b\",\"say \"\"hi\"\"\",-1\n"
        );
    }

    #[test]
    fn ndjson_is_one_object_per_line() {
        let mut out = String::new();
        encode(
            &[row("x", "", 5, 0.25), row("y\n", "%", 6, 3.0)],
            Format::Ndjson,
            &mut out,
        );
        let lines: Vec<serde_json::Value> = out
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0]["value"], 0.25);
        assert_eq!(lines[1]["metric"], "y\n");
        assert_eq!(lines[1]["ts_ms"], 6);
    }
}
