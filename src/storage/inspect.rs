//! Read-only looks into the database for operators: file sizes, pages and
//! free pages, what the planner's statistics say, and how SQLite plans a
//! query. Cheap enough for a stats endpoint, except where noted.

use std::path::Path;

use diesel::prelude::*;
use diesel::sql_types::{BigInt, Text};
use serde::Serialize;

/// Size and page figures of the database.
#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq, Eq)]
pub struct DbFigures {
    pub db_bytes: u64,
    pub wal_bytes: u64,
    pub page_size: u64,
    pub page_count: u64,
    pub freelist_count: u64,
}

#[derive(QueryableByName)]
struct Num {
    #[diesel(sql_type = BigInt)]
    n: i64,
}

#[derive(QueryableByName)]
struct Detail {
    #[diesel(sql_type = Text)]
    detail: String,
}

#[derive(QueryableByName)]
struct Stat {
    #[diesel(sql_type = Text)]
    stat: String,
}

fn pragma(conn: &mut SqliteConnection, name: &str) -> QueryResult<u64> {
    let n: Num =
        diesel::sql_query(format!("SELECT {name} AS n FROM pragma_{name}()")).get_result(conn)?;
    Ok(n.n.max(0) as u64)
}

fn file_len(path: &Path) -> u64 {
    std::fs::metadata(path).map(|m| m.len()).unwrap_or(0)
}

/// The WAL file beside a database file.
pub fn wal_path(db: &Path) -> std::path::PathBuf {
    let mut name = db.as_os_str().to_owned();
    name.push("-wal");
    name.into()
}

/// Sizes and page counts of the database at `path`, through `conn`.
pub fn figures(conn: &mut SqliteConnection, path: &Path) -> QueryResult<DbFigures> {
    Ok(DbFigures {
        db_bytes: file_len(path),
        wal_bytes: file_len(&wal_path(path)),
        page_size: pragma(conn, "page_size")?,
        page_count: pragma(conn, "page_count")?,
        freelist_count: pragma(conn, "freelist_count")?,
    })
}

/// Rows of `table` according to the planner's statistics (`ANALYZE`),
/// or `None` if they were never gathered.
pub fn analyzed_rows(conn: &mut SqliteConnection, table: &str) -> Option<u64> {
    let stat: Stat = diesel::sql_query("SELECT stat FROM sqlite_stat1 WHERE tbl = ? LIMIT 1")
        .bind::<Text, _>(table)
        .get_result(conn)
        .ok()?;
    stat.stat.split_whitespace().next()?.parse().ok()
}

/// Exact rows of `readings`, if the table is small enough (`max_pages`)
/// for counting them to be cheap; a count walks the whole table.
pub fn readings_rows(conn: &mut SqliteConnection, page_count: u64, max_pages: u64) -> Option<u64> {
    if page_count > max_pages {
        return None;
    }
    let n: Num = diesel::sql_query("SELECT count(*) AS n FROM readings")
        .get_result(conn)
        .ok()?;
    Some(n.n.max(0) as u64)
}

/// How SQLite would run `sql`: the detail lines of `EXPLAIN QUERY PLAN`.
pub fn query_plan(conn: &mut SqliteConnection, sql: &str) -> QueryResult<Vec<String>> {
    let rows: Vec<Detail> = diesel::sql_query(format!("EXPLAIN QUERY PLAN {sql}")).load(conn)?;
    Ok(rows.into_iter().map(|d| d.detail).collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::StorageConfig;
    use crate::storage::{open_writer, prepare};
    use diesel::connection::SimpleConnection;

    #[test]
    fn figures_statistics_and_plans() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = StorageConfig {
            path: dir.path().join("i.db"),
            ..StorageConfig::default()
        };
        prepare(&cfg).unwrap();
        let mut conn = open_writer(&cfg).unwrap();
        let f = figures(&mut conn, &cfg.path).unwrap();
        assert!(
            f.page_count > 0 && f.page_size == 4096 && f.db_bytes > 0,
            "{f:?}"
        );
        assert_eq!(analyzed_rows(&mut conn, "readings"), None);
        conn.batch_execute(
            "INSERT INTO series (id, sensor, metric) VALUES (1, 's', 'm');
             WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 500)
             INSERT INTO readings SELECT 1, i, i FROM n;
             ANALYZE;",
        )
        .unwrap();
        assert_eq!(analyzed_rows(&mut conn, "readings"), Some(500));
        assert_eq!(readings_rows(&mut conn, 10, 1000), Some(500));
        assert_eq!(readings_rows(&mut conn, 10_000, 1000), None);
        let plan = query_plan(&mut conn, "SELECT * FROM alerts WHERE message = ?").unwrap();
        assert!(
            plan.iter().any(|l| l.starts_with("SCAN alerts")),
            "{plan:?}"
        );
        let plan = query_plan(
            &mut conn,
            "SELECT value FROM readings WHERE series_id = ? AND ts > ?",
        )
        .unwrap();
        assert!(plan.iter().all(|l| !l.starts_with("SCAN")), "{plan:?}");
    }
}
