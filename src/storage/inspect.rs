//! Read-only looks into the database for operators: what the planner's
//! statistics say, how many readings there are, and how SQLite plans a
//! query. Cheap enough for a stats endpoint, except where noted. (File
//! sizes and pages are `maintenance::DbFigures`.)

use diesel::prelude::*;
use diesel::sql_types::Text;

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

/// Rows of `table` according to the planner's statistics (`ANALYZE`),
/// or `None` if they were never gathered.
pub fn analyzed_rows(conn: &mut SqliteConnection, table: &str) -> Option<u64> {
    let stat: Stat = diesel::sql_query("SELECT stat FROM sqlite_stat1 WHERE tbl = ? LIMIT 1")
        .bind::<Text, _>(table)
        .get_result(conn)
        .ok()?;
    stat.stat.split_whitespace().next()?.parse().ok()
}

/// Exact raw readings stored (rows and sealed), if the database is small
/// enough (`max_pages`) for counting them to be cheap; a count walks the
/// whole `readings` table.
pub fn readings_rows(conn: &mut SqliteConnection, page_count: u64, max_pages: u64) -> Option<u64> {
    if page_count > max_pages {
        return None;
    }
    super::chunk::count_all(conn).ok()
}

/// How SQLite would run `sql`: the detail lines of `EXPLAIN QUERY PLAN`.
pub fn query_plan(conn: &mut SqliteConnection, sql: &str) -> QueryResult<Vec<String>> {
    let rows: Vec<Detail> = diesel::sql_query(format!("EXPLAIN QUERY PLAN {sql}")).load(conn)?;
    Ok(rows.into_iter().map(|d| d.detail).collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::config::StorageConfig;
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
        let f = crate::storage::maintenance::DbFigures::read(&mut conn, &cfg.path).unwrap();
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
