//! The configured sensors of a running appliance, which an edit from the
//! browser or a reload can change: one [`SensorShared`] per `[[sensors]]`
//! entry, in config order. Views (`/api/sensors`, `/metrics`, `/health`)
//! read the list as it is now; [`SensorRegistry::update`] swaps in a new
//! one and says which sensors changed, so that only those are restarted.

use std::sync::{Arc, RwLock};

use super::SensorConfig;
use super::actor::SensorShared;

/// What an update did to one sensor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    Added,
    /// Its configuration differs: a fresh status, a new actor.
    Changed,
    Removed,
}

/// Every configured sensor, enabled or not, in config order.
#[derive(Default)]
pub struct SensorRegistry {
    list: RwLock<Vec<Arc<SensorShared>>>,
}

impl SensorRegistry {
    pub fn new(configs: &[SensorConfig]) -> SensorRegistry {
        SensorRegistry {
            list: RwLock::new(
                configs
                    .iter()
                    .cloned()
                    .map(|c| Arc::new(SensorShared::new(c)))
                    .collect(),
            ),
        }
    }

    /// The sensors as configured now.
    pub fn all(&self) -> Vec<Arc<SensorShared>> {
        self.list.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    pub fn get(&self, name: &str) -> Option<Arc<SensorShared>> {
        self.list
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .find(|s| s.config.name == name)
            .cloned()
    }

    /// The names of the sensors that run.
    pub fn enabled_names(&self) -> Vec<String> {
        self.all()
            .iter()
            .filter(|s| s.config.enabled)
            .map(|s| s.config.name.clone())
            .collect()
    }

    /// What [`update`](Self::update) with `configs` would do, by sensor
    /// name, in the same order, changing nothing (a dry-run edit).
    pub fn changes(&self, configs: &[SensorConfig]) -> Vec<(String, Change)> {
        let list = self.list.read().unwrap_or_else(|p| p.into_inner());
        let mut changes: Vec<(String, Change)> = configs
            .iter()
            .filter_map(|c| match list.iter().find(|s| s.config.name == c.name) {
                Some(old) if old.config == *c => None,
                Some(_) => Some((c.name.clone(), Change::Changed)),
                None => Some((c.name.clone(), Change::Added)),
            })
            .collect();
        changes.extend(
            list.iter()
                .filter(|old| !configs.iter().any(|c| c.name == old.config.name))
                .map(|old| (old.config.name.clone(), Change::Removed)),
        );
        changes
    }

    /// Makes `configs` the configured sensors. A sensor whose config is
    /// unchanged keeps its status and counters; the others are listed, in
    /// the new order, with removed ones last.
    pub fn update(&self, configs: &[SensorConfig]) -> Vec<(Arc<SensorShared>, Change)> {
        let mut list = self.list.write().unwrap_or_else(|p| p.into_inner());
        let mut changes = Vec::new();
        let next: Vec<Arc<SensorShared>> = configs
            .iter()
            .map(|c| match list.iter().find(|s| s.config.name == c.name) {
                Some(old) if old.config == *c => old.clone(),
                found => {
                    let fresh = Arc::new(SensorShared::new(c.clone()));
                    let change = if found.is_some() {
                        Change::Changed
                    } else {
                        Change::Added
                    };
                    changes.push((fresh.clone(), change));
                    fresh
                }
            })
            .collect();
        for old in list.iter() {
            if !configs.iter().any(|c| c.name == old.config.name) {
                changes.push((old.clone(), Change::Removed));
            }
        }
        *list = next;
        changes
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sensors::DriverConfig;
    use crate::sensors::simulated::SimulatedOptions;

    fn sim(name: &str, interval_ms: u64) -> SensorConfig {
        let mut c = SensorConfig::new(name, DriverConfig::Simulated(SimulatedOptions::default()));
        c.interval_ms = interval_ms;
        c
    }

    #[test]
    fn only_changed_sensors_get_fresh_state() {
        let reg = SensorRegistry::new(&[sim("a", 1000), sim("b", 1000)]);
        let a = reg.get("a").unwrap();
        let next = [sim("a", 1000), sim("c", 50), sim("b", 2000)];
        let foreseen = reg.changes(&next);
        assert_eq!(reg.all().len(), 2, "changes() changes nothing");
        let changes = reg.update(&next);
        let named: Vec<(&str, Change)> = changes
            .iter()
            .map(|(s, c)| (s.config.name.as_str(), *c))
            .collect();
        assert_eq!(named, [("c", Change::Added), ("b", Change::Changed)]);
        let foreseen: Vec<(&str, Change)> =
            foreseen.iter().map(|(n, c)| (n.as_str(), *c)).collect();
        assert_eq!(foreseen, named, "changes() foresees update()");
        assert!(Arc::ptr_eq(&a, &reg.get("a").unwrap()), "unchanged: kept");
        let names: Vec<_> = reg.all().iter().map(|s| s.config.name.clone()).collect();
        assert_eq!(names, ["a", "c", "b"]);

        assert_eq!(
            reg.changes(&[sim("c", 50)]),
            [
                ("a".to_string(), Change::Removed),
                ("b".to_string(), Change::Removed)
            ]
        );
        let changes = reg.update(&[sim("c", 50)]);
        let removed: Vec<_> = changes
            .iter()
            .map(|(s, c)| (s.config.name.clone(), *c))
            .collect();
        assert_eq!(
            removed,
            [
                ("a".to_string(), Change::Removed),
                ("b".to_string(), Change::Removed)
            ]
        );
        assert!(reg.get("a").is_none());
        assert_eq!(reg.enabled_names(), ["c"]);
    }
}
