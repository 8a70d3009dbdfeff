//! Fixtures shared by the storage modules' unit tests: a fresh database,
//! migrated and opened the way the writer opens it, with an empty series
//! catalog.

use std::sync::Arc;

use diesel::SqliteConnection;

use super::catalog::SeriesCatalog;
use super::{open_writer, prepare};
use crate::storage::config::StorageConfig;
use crate::vocab::reading::SeriesKey;

/// A temporary database and the writer's view of it. `dir` holds the
/// files: keep it alive as long as the database is used.
pub struct TestDb {
    pub dir: tempfile::TempDir,
    pub cfg: StorageConfig,
    pub conn: SqliteConnection,
    pub catalog: SeriesCatalog,
}

/// A new database in a temporary directory, with default storage settings.
pub fn writer_db() -> TestDb {
    let dir = tempfile::tempdir().unwrap();
    let cfg = StorageConfig {
        path: dir.path().join("test.db"),
        ..StorageConfig::default()
    };
    prepare(&cfg).unwrap();
    let conn = open_writer(&cfg).unwrap();
    TestDb {
        dir,
        cfg,
        conn,
        catalog: SeriesCatalog::default(),
    }
}

/// Unitless series of sensor `s`, one per metric.
pub fn series_keys(metrics: &[&str]) -> Vec<Arc<SeriesKey>> {
    metrics
        .iter()
        .map(|m| {
            Arc::new(SeriesKey {
                sensor: "s".into(),
                metric: (*m).into(),
                unit: "".into(),
            })
        })
        .collect()
}
