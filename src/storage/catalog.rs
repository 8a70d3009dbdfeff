//! The series catalog: the small `series` table held in memory, so the API
//! resolves sensor and metric names without a query and the writer resolves
//! a reading's series id without one either.
//!
//! Only the writer adds committed series to it, and only after the
//! transaction that created the rows has committed. A series whose first
//! readings are still in the head (`super::head`) has a *reserved* id: taken
//! when the reading is accepted, above every id in use, and written with the
//! series' row by the writer's next commit. Reads see reserved series
//! ([`SeriesCatalog::readable_for_sensor`]), so a new sensor is queryable
//! at once; the writer's lookups ([`SeriesCatalog::lookup`]) see only
//! committed ones.

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
    /// Reserved series: accepted readings, no committed row yet.
    reserved: HashMap<Arc<str>, HashMap<Arc<str>, Arc<SeriesInfo>>>,
    /// The highest id committed or reserved.
    max_id: i64,
    /// Per series, the end of its newest sealed chunk's period (see
    /// `storage::chunk`): no reading from there on is sealed.
    sealed_until: HashMap<i64, i64>,
    /// Per series, once looked up, at least the newest timestamp stored
    /// (rows, blocks or chunks): a reading newer than this collides with
    /// nothing stored.
    newest: HashMap<i64, i64>,
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
        for (id, until) in super::chunk::sealed_until(conn)? {
            catalog.mark_sealed(id, until);
        }
        Ok(catalog)
    }

    /// Where the sealed readings of series `id` end: a reading at or after
    /// this instant is not in any chunk (`i64::MIN` when none is sealed).
    pub fn sealed_until(&self, id: i64) -> i64 {
        self.read()
            .sealed_until
            .get(&id)
            .copied()
            .unwrap_or(i64::MIN)
    }

    /// What [`SeriesCatalog::note_stored`] knows of the newest stored
    /// reading of series `id` (`None`: not looked up yet).
    pub fn newest_stored(&self, id: i64) -> Option<i64> {
        self.read().newest.get(&id).copied()
    }

    /// Records the newest stored timestamp of series `id`, as looked up.
    pub fn set_newest_stored(&self, id: i64, ts: i64) {
        self.write().newest.insert(id, ts);
    }

    /// Records that a reading of series `id` at `ts` is being stored. Only
    /// raises what is known: a bound too high costs a check, never a
    /// collision.
    pub fn note_stored(&self, id: i64, ts: i64) {
        if let Some(at) = self.write().newest.get_mut(&id) {
            *at = (*at).max(ts);
        }
    }

    /// Records that series `id` has a chunk ending at `until`.
    pub fn mark_sealed(&self, id: i64, until: i64) {
        let mut inner = self.write();
        let at = inner.sealed_until.entry(id).or_insert(until);
        *at = (*at).max(until);
    }

    /// Adds or replaces a committed series (a unit may change); it is no
    /// longer reserved.
    pub fn insert(&self, info: SeriesInfo) {
        let info = Arc::new(info);
        let mut inner = self.write();
        inner.max_id = inner.max_id.max(info.id);
        if let Some(m) = inner.reserved.get_mut(&info.sensor) {
            m.remove(&info.metric);
            if m.is_empty() {
                inner.reserved.remove(&info.sensor);
            }
        }
        inner.by_id.insert(info.id, info.clone());
        inner
            .by_sensor
            .entry(info.sensor.clone())
            .or_default()
            .insert(info.metric.clone(), info);
    }

    /// A committed series.
    pub fn lookup(&self, sensor: &str, metric: &str) -> Option<Arc<SeriesInfo>> {
        self.read().by_sensor.get(sensor)?.get(metric).cloned()
    }

    /// A series reserved for readings not committed yet.
    pub fn reserved(&self, sensor: &str, metric: &str) -> Option<Arc<SeriesInfo>> {
        self.read().reserved.get(sensor)?.get(metric).cloned()
    }

    /// The series readings of (`sensor`, `metric`) belong to: the committed
    /// one, else a reserved one, reserving a new id if needed. The head
    /// calls this for every reading it accepts.
    pub fn resolve(
        &self,
        sensor: &Arc<str>,
        metric: &Arc<str>,
        unit: &Arc<str>,
    ) -> Arc<SeriesInfo> {
        {
            let inner = self.read();
            for map in [&inner.by_sensor, &inner.reserved] {
                if let Some(info) = map.get(sensor).and_then(|m| m.get(metric)) {
                    return info.clone();
                }
            }
        }
        let mut inner = self.write();
        for map in [&inner.by_sensor, &inner.reserved] {
            if let Some(info) = map.get(sensor).and_then(|m| m.get(metric)) {
                return info.clone();
            }
        }
        inner.max_id += 1;
        let info = Arc::new(SeriesInfo {
            id: inner.max_id,
            sensor: sensor.clone(),
            metric: metric.clone(),
            unit: unit.clone(),
        });
        inner
            .reserved
            .entry(sensor.clone())
            .or_default()
            .insert(metric.clone(), info.clone());
        info
    }

    /// The series of one sensor that reads cover, committed or reserved,
    /// ordered by id.
    pub fn readable_for_sensor(&self, sensor: &str) -> Vec<Arc<SeriesInfo>> {
        let inner = self.read();
        let mut v: Vec<_> = [&inner.by_sensor, &inner.reserved]
            .into_iter()
            .filter_map(|map| map.get(sensor))
            .flat_map(|m| m.values().cloned())
            .collect();
        v.sort_by_key(|s| s.id);
        v
    }

    /// Every series reads cover, committed or reserved, ordered by id.
    pub fn readable_all(&self) -> Vec<Arc<SeriesInfo>> {
        let inner = self.read();
        let mut v: Vec<_> = inner
            .by_id
            .values()
            .cloned()
            .chain(inner.reserved.values().flat_map(|m| m.values().cloned()))
            .collect();
        v.sort_by_key(|s| s.id);
        v
    }

    /// Whether reads know `sensor` (committed or reserved series).
    pub fn readable_sensor(&self, sensor: &str) -> bool {
        let inner = self.read();
        inner.by_sensor.contains_key(sensor) || inner.reserved.contains_key(sensor)
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
