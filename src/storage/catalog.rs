//! The series catalog: the small `series` table held in memory, so the API
//! resolves sensor and metric names without a query and the writer resolves
//! a reading's series id without one either.
//!
//! Only the writer adds to it, and only after the transaction that created
//! the rows has committed, so the catalog never names an uncommitted id.

use std::collections::HashMap;
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};

use diesel::prelude::*;
use serde::Serialize;

use super::schema::series;

/// One row of `series`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Queryable, Selectable)]
#[diesel(table_name = series)]
pub struct SeriesRow {
    pub id: i64,
    pub sensor: String,
    pub metric: String,
    pub unit: String,
}

/// A series as the rest of the program sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeriesInfo {
    pub id: i64,
    pub sensor: Arc<str>,
    pub metric: Arc<str>,
    pub unit: Arc<str>,
}

#[derive(Default)]
struct Inner {
    by_sensor: HashMap<Arc<str>, HashMap<Arc<str>, Arc<SeriesInfo>>>,
    by_id: HashMap<i64, Arc<SeriesInfo>>,
}

/// All known series, by (sensor, metric) and by id.
#[derive(Default)]
pub struct SeriesCatalog {
    inner: RwLock<Inner>,
}

impl SeriesCatalog {
    fn read(&self) -> RwLockReadGuard<'_, Inner> {
        self.inner.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> RwLockWriteGuard<'_, Inner> {
        self.inner.write().unwrap_or_else(|p| p.into_inner())
    }

    /// Loads every row of `series`.
    pub fn load(conn: &mut SqliteConnection) -> QueryResult<SeriesCatalog> {
        let rows = series::table.select(SeriesRow::as_select()).load(conn)?;
        let catalog = SeriesCatalog::default();
        for row in rows {
            catalog.insert(SeriesInfo {
                id: row.id,
                sensor: row.sensor.into(),
                metric: row.metric.into(),
                unit: row.unit.into(),
            });
        }
        Ok(catalog)
    }

    /// Adds or replaces a series (a unit may change).
    pub fn insert(&self, info: SeriesInfo) {
        let info = Arc::new(info);
        let mut inner = self.write();
        inner.by_id.insert(info.id, info.clone());
        inner
            .by_sensor
            .entry(info.sensor.clone())
            .or_default()
            .insert(info.metric.clone(), info);
    }

    pub fn lookup(&self, sensor: &str, metric: &str) -> Option<Arc<SeriesInfo>> {
        self.read().by_sensor.get(sensor)?.get(metric).cloned()
    }

    /// The series of one sensor, ordered by id.
    pub fn for_sensor(&self, sensor: &str) -> Vec<Arc<SeriesInfo>> {
        let mut v: Vec<_> = self
            .read()
            .by_sensor
            .get(sensor)
            .map(|m| m.values().cloned().collect())
            .unwrap_or_default();
        v.sort_by_key(|s| s.id);
        v
    }

    /// Every series, ordered by id.
    pub fn all(&self) -> Vec<Arc<SeriesInfo>> {
        let mut v: Vec<_> = self.read().by_id.values().cloned().collect();
        v.sort_by_key(|s| s.id);
        v
    }

    pub fn knows_sensor(&self, sensor: &str) -> bool {
        self.read().by_sensor.contains_key(sensor)
    }
}
