//! `vigil import`: readings from the NDJSON or CSV that
//! `/api/readings/export` writes, into the database through the writer's
//! commit path, so that export → import round-trips exactly and history
//! from another system can be brought in the same format.
//!
//! The input streams: it is read a line at a time and committed in batches,
//! so a year of history goes through a few megabytes of memory. The format
//! is told by the first line (`{` starts NDJSON; anything else is a CSV
//! header, whose columns are found by name). A reading is `sensor`,
//! `metric`, `unit` (optional), `value` and a time: `ts_ms` (epoch
//! milliseconds) or, without it, `ts` (RFC 3339 or epoch milliseconds).
//!
//! Importing is idempotent: a reading whose series already holds one at
//! the same millisecond is skipped and the stored one kept (see
//! [`writer::commit_import`]), so a file imported twice, or an import
//! interrupted and run again, changes nothing the second time. A line that
//! cannot be used stops the import with its number and the reason;
//! everything before it is committed, and running again after fixing the
//! line carries on where it stopped.

use std::collections::HashMap;
use std::io::BufRead;
use std::sync::Arc;

use diesel::SqliteConnection;
use serde::{Deserialize, Serialize};

use crate::sensors::actor::MAX_ABS_VALUE;
use crate::storage::StorageError;
use crate::storage::catalog::SeriesCatalog;
use crate::storage::writer;
use crate::vocab::clock::{RFC3339_RANGE_MS, parse_time};
use crate::vocab::reading::{Reading, SeriesKey};

/// Readings committed per transaction.
pub const BATCH: usize = 5_000;

/// The formats `vigil import` reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    Ndjson,
    Csv,
}

/// What an import did.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct ImportReport {
    pub format: Option<Format>,
    /// Lines read, the CSV header and blank lines included.
    pub lines: u64,
    /// Readings inserted.
    pub imported: u64,
    /// Readings skipped because their series already held one at the same
    /// millisecond.
    pub skipped: u64,
    /// Series the import created.
    pub series_created: u64,
    /// The earliest and latest timestamps read (epoch ms).
    pub first_ms: Option<i64>,
    pub last_ms: Option<i64>,
}

/// Why an import stopped.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error("line {line}: {message}")]
    Line { line: u64, message: String },
    #[error("reading the input: {0}")]
    Io(#[from] std::io::Error),
    #[error(transparent)]
    Storage(#[from] StorageError),
}

/// One NDJSON line, as the export writes it (`ts` is informative when
/// `ts_ms` is there).
#[derive(Deserialize)]
struct JsonRow {
    #[serde(default)]
    ts: Option<String>,
    #[serde(default)]
    ts_ms: Option<i64>,
    sensor: String,
    metric: String,
    #[serde(default)]
    unit: String,
    value: f64,
}

/// Where each field is in a CSV line.
#[derive(Debug, Clone, Copy)]
struct Columns {
    ts: Option<usize>,
    ts_ms: Option<usize>,
    sensor: usize,
    metric: usize,
    unit: Option<usize>,
    value: usize,
    count: usize,
}

impl Columns {
    fn from_header(fields: &[String]) -> Result<Columns, String> {
        let find = |name: &str| fields.iter().position(|f| f.trim() == name);
        let need = |name: &str| {
            find(name).ok_or_else(|| format!("the CSV header has no `{name}` column (expected `ts,ts_ms,sensor,metric,unit,value`)"))
        };
        let columns = Columns {
            ts: find("ts"),
            ts_ms: find("ts_ms"),
            sensor: need("sensor")?,
            metric: need("metric")?,
            unit: find("unit"),
            value: need("value")?,
            count: fields.len(),
        };
        if columns.ts.is_none() && columns.ts_ms.is_none() {
            return Err("the CSV header has neither a `ts_ms` nor a `ts` column".into());
        }
        Ok(columns)
    }
}

/// Splits one CSV line into fields: separated by commas, a field in
/// double quotes may hold commas, and `""` inside it is one quote.
fn csv_fields(line: &str) -> Result<Vec<String>, String> {
    let mut fields = Vec::new();
    let mut field = String::new();
    let mut chars = line.chars().peekable();
    let mut quoted = false;
    let mut at_start = true;
    while let Some(c) = chars.next() {
        if quoted {
            match c {
                '"' if chars.peek() == Some(&'"') => {
                    chars.next();
                    field.push('"');
                }
                '"' => {
                    quoted = false;
                    if !matches!(chars.peek(), None | Some(',')) {
                        return Err("text after a closing quote".into());
                    }
                }
                c => field.push(c),
            }
            continue;
        }
        match c {
            '"' if at_start => {
                quoted = true;
                at_start = false;
            }
            ',' => {
                fields.push(std::mem::take(&mut field));
                at_start = true;
            }
            c => {
                field.push(c);
                at_start = false;
            }
        }
    }
    if quoted {
        return Err("a quoted field is not closed".into());
    }
    fields.push(field);
    Ok(fields)
}

/// A name of a sensor or metric in a file: what a config or driver could
/// have produced (printable, at most 64 characters).
fn check_name(what: &str, name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err(format!("`{what}` is empty"));
    }
    if name.chars().count() > 64 || name.chars().any(char::is_control) {
        return Err(format!(
            "`{what}` must be at most 64 printable characters, got {name:?}"
        ));
    }
    Ok(())
}

/// Reads readings from `input` into the database behind `conn`, calling
/// `progress` after each committed batch.
pub struct Importer<'c> {
    conn: &'c mut SqliteConnection,
    catalog: SeriesCatalog,
    keys: HashMap<(String, String), Arc<SeriesKey>>,
    batch: Vec<Reading>,
    report: ImportReport,
}

impl<'c> Importer<'c> {
    pub fn new(conn: &'c mut SqliteConnection) -> Result<Importer<'c>, StorageError> {
        let catalog = SeriesCatalog::load(conn)?;
        Ok(Importer {
            conn,
            catalog,
            keys: HashMap::new(),
            batch: Vec::with_capacity(BATCH),
            report: ImportReport::default(),
        })
    }

    /// Imports everything `input` holds; see the module docs.
    pub fn run(
        mut self,
        input: impl BufRead,
        mut progress: impl FnMut(&ImportReport),
    ) -> Result<ImportReport, ImportError> {
        let mut columns: Option<Columns> = None;
        for line in input.lines() {
            let line = line?;
            self.report.lines += 1;
            let n = self.report.lines;
            let text = line.trim_end_matches('\r');
            if text.trim().is_empty() {
                continue;
            }
            let format = *self.report.format.get_or_insert(if text.starts_with('{') {
                Format::Ndjson
            } else {
                Format::Csv
            });
            let parsed = match format {
                Format::Ndjson => parse_json(text),
                Format::Csv => match columns {
                    None => {
                        let header = csv_fields(text)
                            .and_then(|f| Columns::from_header(&f))
                            .map_err(|message| ImportError::Line { line: n, message })?;
                        columns = Some(header);
                        continue;
                    }
                    Some(c) => parse_csv(text, c),
                },
            };
            let line_error = |message| ImportError::Line { line: n, message };
            let (ts, value, key) =
                match parsed.and_then(|(s, m, u, ts, v)| Ok((ts, v, self.key(s, m, u)?))) {
                    Ok(p) => p,
                    Err(message) => {
                        // What came before the bad line is kept: running
                        // again after fixing it carries on from there.
                        self.commit()?;
                        return Err(line_error(message));
                    }
                };
            self.report.first_ms = Some(self.report.first_ms.map_or(ts, |f| f.min(ts)));
            self.report.last_ms = Some(self.report.last_ms.map_or(ts, |l| l.max(ts)));
            self.batch.push(Reading {
                series: key,
                ts_ms: ts,
                value,
            });
            if self.batch.len() >= BATCH {
                self.commit()?;
                progress(&self.report);
            }
        }
        self.commit()?;
        progress(&self.report);
        Ok(self.report)
    }

    /// The series key of a line, one `Arc` per series; a unit that
    /// differs from the stored series' (or an earlier line's) is refused
    /// rather than silently relabelling history.
    fn key(
        &mut self,
        sensor: String,
        metric: String,
        unit: String,
    ) -> Result<Arc<SeriesKey>, String> {
        check_name("sensor", &sensor)?;
        check_name("metric", &metric)?;
        if unit.chars().count() > 32 || unit.chars().any(char::is_control) {
            return Err(format!(
                "`unit` must be at most 32 printable characters, got {unit:?}"
            ));
        }
        let id = (sensor, metric);
        if let Some(key) = self.keys.get(&id) {
            if *key.unit != *unit {
                return Err(format!(
                    "{}/{} has unit `{}` on an earlier line and `{unit}` here",
                    id.0, id.1, key.unit
                ));
            }
            return Ok(key.clone());
        }
        if let Some(stored) = self.catalog.lookup(&id.0, &id.1)
            && *stored.unit != *unit
        {
            return Err(format!(
                "{}/{} is stored with unit `{}`, the file says `{unit}`",
                id.0, id.1, stored.unit
            ));
        }
        let key = Arc::new(SeriesKey {
            sensor: id.0.as_str().into(),
            metric: id.1.as_str().into(),
            unit: unit.into(),
        });
        self.keys.insert(id, key.clone());
        Ok(key)
    }

    fn commit(&mut self) -> Result<(), StorageError> {
        if self.batch.is_empty() {
            return Ok(());
        }
        let known = self.catalog.all().len();
        let inserted = writer::commit_import(self.conn, &self.catalog, &self.batch)?;
        self.report.series_created += (self.catalog.all().len() - known) as u64;
        self.report.imported += inserted;
        self.report.skipped += self.batch.len() as u64 - inserted;
        self.batch.clear();
        Ok(())
    }
}

type Parsed = (String, String, String, i64, f64);

fn checked_value(value: f64) -> Result<f64, String> {
    if value.is_finite() && value.abs() <= MAX_ABS_VALUE {
        Ok(value)
    } else {
        Err(format!(
            "`value` must be a finite number within ±1e300, got {value}"
        ))
    }
}

fn checked_ts(ts: i64) -> Result<i64, String> {
    if RFC3339_RANGE_MS.contains(&ts) {
        Ok(ts)
    } else {
        Err(format!(
            "the time {ts} ms is outside the years 0000 to 9999 (from {} to {} ms)",
            RFC3339_RANGE_MS.start(),
            RFC3339_RANGE_MS.end()
        ))
    }
}

fn parse_json(text: &str) -> Result<Parsed, String> {
    let row: JsonRow = serde_json::from_str(text).map_err(|e| format!("not a reading: {e}"))?;
    let ts = match (row.ts_ms, row.ts.as_deref()) {
        (Some(ms), _) => ms,
        (None, Some(t)) => parse_time(t)
            .ok_or_else(|| format!("`ts` is not RFC 3339 or epoch milliseconds: {t:?}"))?,
        (None, None) => return Err("neither `ts_ms` nor `ts`".into()),
    };
    Ok((
        row.sensor,
        row.metric,
        row.unit,
        checked_ts(ts)?,
        checked_value(row.value)?,
    ))
}

fn parse_csv(text: &str, c: Columns) -> Result<Parsed, String> {
    let mut f = csv_fields(text)?;
    if f.len() != c.count {
        return Err(format!(
            "{} fields where the header has {}",
            f.len(),
            c.count
        ));
    }
    let ts = match (c.ts_ms, c.ts) {
        (Some(i), _) if !f[i].trim().is_empty() => f[i]
            .trim()
            .parse::<i64>()
            .map_err(|_| format!("`ts_ms` is not an integer: {:?}", f[i]))?,
        (_, Some(i)) => parse_time(f[i].trim())
            .ok_or_else(|| format!("`ts` is not RFC 3339 or epoch milliseconds: {:?}", f[i]))?,
        _ => return Err("`ts_ms` is empty".into()),
    };
    let value: f64 = f[c.value]
        .trim()
        .parse()
        .map_err(|_| format!("`value` is not a number: {:?}", f[c.value]))?;
    let unit = c
        .unit
        .map(|i| std::mem::take(&mut f[i]))
        .unwrap_or_default();
    let metric = std::mem::take(&mut f[c.metric]);
    let sensor = std::mem::take(&mut f[c.sensor]);
    Ok((sensor, metric, unit, checked_ts(ts)?, checked_value(value)?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::config::StorageConfig;
    use crate::storage::{open_writer, prepare};
    use diesel::prelude::*;

    fn db() -> (tempfile::TempDir, SqliteConnection) {
        let dir = tempfile::tempdir().unwrap();
        let cfg = StorageConfig {
            path: dir.path().join("t.db"),
            ..StorageConfig::default()
        };
        prepare(&cfg).unwrap();
        let conn = open_writer(&cfg).unwrap();
        (dir, conn)
    }

    fn import(conn: &mut SqliteConnection, text: &str) -> Result<ImportReport, ImportError> {
        Importer::new(conn).unwrap().run(text.as_bytes(), |_| {})
    }

    #[derive(QueryableByName, Debug, PartialEq)]
    struct Row {
        #[diesel(sql_type = diesel::sql_types::Text)]
        sensor: String,
        #[diesel(sql_type = diesel::sql_types::Text)]
        metric: String,
        #[diesel(sql_type = diesel::sql_types::Text)]
        unit: String,
        #[diesel(sql_type = diesel::sql_types::BigInt)]
        ts: i64,
        #[diesel(sql_type = diesel::sql_types::Double)]
        value: f64,
    }

    fn rows(conn: &mut SqliteConnection) -> Vec<Row> {
        diesel::sql_query(
            "SELECT s.sensor, s.metric, s.unit, r.ts, r.value FROM readings r \
             JOIN series s ON s.id = r.series_id ORDER BY r.ts, s.sensor, s.metric",
        )
        .load(conn)
        .unwrap()
    }

    #[test]
    fn csv_fields_follow_the_quoting_the_export_writes() {
        assert_eq!(csv_fields("a,b,,c").unwrap(), ["a", "b", "", "c"]);
        assert_eq!(
            csv_fields(r#"1,"x,y","say ""hi""",2"#).unwrap(),
            ["1", "x,y", r#"say "hi""#, "2"]
        );
        assert!(csv_fields(r#"1,"open"#).is_err());
        assert!(csv_fields(r#""a"b,1"#).is_err());
    }

    #[test]
    fn both_formats_import_exactly_with_rollups() {
        let (_d, mut conn) = db();
        let csv = "ts,ts_ms,sensor,metric,unit,value\n\
                   1970-01-01T00:00:01.000Z,1000,tank,level,cm,0.1\n\
                   1970-01-01T00:00:02.000Z,2000,tank,level,cm,-1e300\n\
                   1970-01-01T00:00:03.000Z,3000,\"a,b\",m,,5e-324\n";
        let report = import(&mut conn, csv).unwrap();
        assert_eq!(report.format, Some(Format::Csv));
        assert_eq!(
            (report.imported, report.skipped, report.series_created),
            (3, 0, 2)
        );
        let json = concat!(
            r#"{"ts":"1970-01-01T00:00:04.000Z","ts_ms":4000,"sensor":"tank","metric":"level","unit":"cm","value":0.30000000000000004}"#,
            "\n\n",
            r#"{"ts":"1970-01-01T00:00:05.000Z","sensor":"tank","metric":"level","unit":"cm","value":9.999999999999999e299}"#,
            "\n"
        );
        let report = import(&mut conn, json).unwrap();
        assert_eq!(report.format, Some(Format::Ndjson));
        assert_eq!(
            (report.imported, report.skipped, report.series_created),
            (2, 0, 0)
        );
        assert_eq!((report.first_ms, report.last_ms), (Some(4000), Some(5000)));
        let got = rows(&mut conn);
        let values: Vec<(i64, u64)> = got.iter().map(|r| (r.ts, r.value.to_bits())).collect();
        assert_eq!(
            values,
            [
                (1000, 0.1f64.to_bits()),
                (2000, (-1e300f64).to_bits()),
                (3000, 5e-324f64.to_bits()),
                (4000, 0.30000000000000004f64.to_bits()),
                (5000, 9.999999999999999e299f64.to_bits()),
            ]
        );
        assert_eq!(got[2].sensor, "a,b");
        assert_eq!(got[2].unit, "");
        #[derive(QueryableByName)]
        struct Count {
            #[diesel(sql_type = diesel::sql_types::BigInt)]
            n: i64,
        }
        let minute: Count = diesel::sql_query(
            "SELECT (SELECT COALESCE(SUM(count), 0) FROM rollup_minute) \
                 + (SELECT COALESCE(SUM(count), 0) FROM rollup_open WHERE tier = 1) AS n",
        )
        .get_result(&mut conn)
        .unwrap();
        assert_eq!(minute.n, 5, "every imported reading is in the minute tier");
    }

    #[test]
    fn importing_twice_changes_nothing_and_keeps_stored_values() {
        let (_d, mut conn) = db();
        let text = "sensor,metric,value,ts_ms\nt,v,1.5,10\nt,v,2.5,20\n";
        assert_eq!(import(&mut conn, text).unwrap().imported, 2);
        let again = import(
            &mut conn,
            "sensor,metric,value,ts_ms\nt,v,9,10\nt,v,3.5,30\n",
        )
        .unwrap();
        assert_eq!((again.imported, again.skipped), (1, 1));
        let got: Vec<(i64, f64)> = rows(&mut conn).iter().map(|r| (r.ts, r.value)).collect();
        assert_eq!(got, [(10, 1.5), (20, 2.5), (30, 3.5)]);
    }

    #[test]
    fn a_bad_line_stops_with_its_number_and_keeps_what_came_before() {
        let (_d, mut conn) = db();
        let mut text = String::from("sensor,metric,value,ts_ms\n");
        for i in 0..BATCH + 10 {
            text.push_str(&format!("t,v,{i},{i}\n"));
        }
        text.push_str("t,v,NaN,999999\n");
        let e = import(&mut conn, &text).unwrap_err().to_string();
        assert_eq!(
            e,
            format!(
                "line {}: `value` must be a finite number within ±1e300, got NaN",
                BATCH + 12
            )
        );
        assert_eq!(
            rows(&mut conn).len(),
            BATCH + 10,
            "what came before is kept"
        );
        for (text, want) in [
            (
                "sensor,metric,value\n",
                "line 1: the CSV header has neither",
            ),
            (
                "ts_ms,sensor,value\n",
                "line 1: the CSV header has no `metric` column",
            ),
            (
                "ts_ms,sensor,metric,value\n1,s,m\n",
                "line 2: 3 fields where the header has 4",
            ),
            (
                "ts_ms,sensor,metric,value\nx,s,m,1\n",
                "line 2: `ts_ms` is not an integer",
            ),
            (
                "ts,sensor,metric,value\nyesterday,s,m,1\n",
                "line 2: `ts` is not RFC 3339",
            ),
            (
                "ts_ms,sensor,metric,value\n1,,m,1\n",
                "line 2: `sensor` is empty",
            ),
            (
                "ts_ms,sensor,metric,value\n1,s,m,1e400\n",
                "line 2: `value` must be a finite",
            ),
            (
                r#"{"sensor":"s","metric":"m","value":1}"#,
                "line 1: neither `ts_ms` nor `ts`",
            ),
            (
                "sensor,metric,value,ts_ms\na,m,2,9223372036854775807\n",
                "line 2: the time 9223372036854775807 ms is outside the years 0000 to 9999",
            ),
            (
                r#"{"sensor":"s","metric":"m","value":1,"ts_ms":-62167219200001}"#,
                "line 1: the time -62167219200001 ms is outside",
            ),
            (
                r#"{"sensor":"s","value":1,"ts_ms":1}"#,
                "line 1: not a reading",
            ),
            (
                "{\"sensor\":\"t\",\"metric\":\"v\",\"unit\":\"K\",\"value\":1,\"ts_ms\":1}",
                "line 1: t/v is stored with unit ``, the file says `K`",
            ),
        ] {
            let e = import(&mut conn, text).unwrap_err().to_string();
            assert!(e.starts_with(want), "{text:?}: {e}");
        }
    }
}
