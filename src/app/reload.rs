//! Reload: re-read the config file, validate all of it, apply every section
//! that can change on a running appliance, and name the rest.
//!
//! Live: `[alerts]` (rules and webhooks), `[[sensors]]` (only the sensors
//! added, changed or removed are started, restarted or stopped; the others
//! keep running at their cadence), `[pacing]` policy keys (thresholds,
//! hysteresis, dwell, multipliers), `[retention]` (horizons and the size
//! cap), `[maintenance]` (the schedule, backups), `[performance]` and
//! `[log]`. Restart: `[server]`, `[storage]`, `[supervisor]`, `[live]`,
//! `[guard]`, and the `[pacing]` keys that shape the monitors.
//! [`plan`] names every field of [`Config`], so a new section does not
//! compile until it is placed on one side; the tests change every key of
//! the documented file and check that each change is reported.
//!
//! A section needing a restart keeps its running value, so it is reported
//! again by every reload until the restart. An invalid file changes nothing.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use actix::Addr;
use futures_util::future::LocalBoxFuture;

use super::config::Config;
use super::logging;
use crate::alerts::{AlertsShared, Reload, SystemSensors};
use crate::pacing::PacingShared;
use crate::perf::Perf;
use crate::sensors::actor::{SensorDeps, sensor_child};
use crate::sensors::registry::{Change, SensorRegistry};
use crate::storage::jobs::Jobs;
use crate::supervisor::{PutChild, RestartChild, Supervisor};
use crate::web::live::LiveShared;
use crate::web::reload::{ReloadError, ReloadReport, Reloader};

/// The supervisor the sensors run under.
pub const SENSORS_SUPERVISOR: &str = "sensors";

/// A section that a reload can apply on a running appliance.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Live {
    Alerts,
    Sensors,
    Pacing,
    Retention,
    Maintenance,
    Performance,
    Log,
}

impl Live {
    pub fn name(self) -> &'static str {
        match self {
            Live::Alerts => "alerts",
            Live::Sensors => "sensors",
            Live::Pacing => "pacing",
            Live::Retention => "retention",
            Live::Maintenance => "maintenance",
            Live::Performance => "performance",
            Live::Log => "log",
        }
    }
}

/// What a reload from `running` to `new` has to do.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Plan {
    pub live: Vec<Live>,
    pub needs_restart: Vec<&'static str>,
}

/// Compares every section of two configs. Each field of [`Config`] is named
/// (no `..`), so adding one is a compile error until it is placed here.
pub fn plan(running: &Config, new: &Config) -> Plan {
    let Config {
        server,
        log,
        storage,
        retention,
        maintenance,
        supervisor,
        live,
        alerts,
        performance,
        pacing,
        guard,
        mqtt,
        sensors,
        source: _,
    } = running;
    let mut p = Plan::default();
    let mut restart = |changed: bool, name: &'static str| {
        if changed {
            p.needs_restart.push(name);
        }
    };
    restart(*server != new.server, "server");
    restart(*storage != new.storage, "storage");
    restart(*supervisor != new.supervisor, "supervisor");
    restart(*live != new.live, "live");
    restart(*guard != new.guard, "guard");
    restart(*mqtt != new.mqtt, "mqtt");
    let pacing_live = pacing.policy_differs_only(&new.pacing);
    restart(*pacing != new.pacing && !pacing_live, "pacing");
    let mut live = |changed: bool, section: Live| {
        if changed {
            p.live.push(section);
        }
    };
    live(*alerts != new.alerts, Live::Alerts);
    live(*sensors != new.sensors, Live::Sensors);
    live(*pacing != new.pacing && pacing_live, Live::Pacing);
    live(*retention != new.retention, Live::Retention);
    live(*maintenance != new.maintenance, Live::Maintenance);
    live(*performance != new.performance, Live::Performance);
    live(*log != new.log, Live::Log);
    p
}

/// The running appliance's side of a reload: the config it runs, and every
/// owner a live section is handed to.
pub struct Reloads {
    /// The config file, if vigil was started with one or an edit from the
    /// browser has created it.
    pub source: Mutex<Option<PathBuf>>,
    /// Where the first edit writes the file when there is none
    /// (`edit::default_path`).
    pub default_path: PathBuf,
    /// What runs now: the start-up config with every live change applied.
    pub running: Mutex<Config>,
    pub alerts: Arc<AlertsShared>,
    pub pacing: Arc<PacingShared>,
    pub jobs: Arc<Jobs>,
    pub perf: Arc<Perf>,
    pub root: Addr<Supervisor>,
    /// The configured sensors, shared with the API's views.
    pub sensors: Arc<SensorRegistry>,
    /// What a new sensor actor is built with.
    pub sensor_deps: SensorDeps,
    /// The live feed's list of sensors.
    pub live: Arc<LiveShared>,
    /// The MQTT bridge's view of the rules (Home Assistant discovery).
    pub mqtt: Arc<crate::mqtt::MqttShared>,
    /// One reload or edit at a time: each reads, decides and applies
    /// against the config the previous one left.
    pub busy: tokio::sync::Mutex<()>,
}

/// What applying a new config did.
#[derive(Debug, Clone, Default)]
pub struct Applied {
    pub plan: Plan,
    /// Alert rules in force.
    pub rules: usize,
    pub sensors_added: Vec<String>,
    pub sensors_changed: Vec<String>,
    pub sensors_removed: Vec<String>,
}

impl Reloads {
    pub fn source(&self) -> Option<PathBuf> {
        self.source
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    pub(super) fn running(&self) -> Config {
        self.running
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Re-reads the file, then applies what [`plan`] says can go live.
    pub async fn reload(&self) -> Result<ReloadReport, ReloadError> {
        let _one = self.busy.lock().await;
        let path = self.source().ok_or(ReloadError::NoFile)?;
        let new = Config::load(Some(&path))?;
        let applied = self.apply(new.clone()).await?;
        Ok(ReloadReport {
            source: path.display().to_string(),
            rules: applied.rules,
            webhooks: new.alerts.webhooks.len(),
            applied: applied.plan.live.iter().map(|s| s.name()).collect(),
            needs_restart: applied.plan.needs_restart,
        })
    }

    /// Applies every live section of `new` (validated) to the running
    /// appliance; the rest keep their running values and are named. The
    /// caller holds `busy`.
    pub(super) async fn apply(&self, new: Config) -> Result<Applied, ReloadError> {
        let running = self.running();
        let plan = plan(&running, &new);
        let mut applied = Applied::default();
        let mut next = running;
        if plan.live.contains(&Live::Sensors) {
            self.apply_sensors(&new, &mut applied).await;
            next.sensors = new.sensors.clone();
        }
        // The alert manager answers with the number of rules in force; it
        // is asked every time so that the report says what runs.
        let addr = self.alerts.current().ok_or(ReloadError::NotRunning)?;
        applied.rules = addr
            .send(Reload(new.alerts.clone()))
            .await
            .map_err(|_| ReloadError::NotRunning)?;
        next.alerts = new.alerts.clone();
        let mut reschedule = false;
        for section in &plan.live {
            match section {
                Live::Alerts | Live::Sensors => {}
                Live::Pacing => {
                    self.pacing.retune(new.pacing.clone());
                    next.pacing = new.pacing.clone();
                }
                Live::Retention | Live::Maintenance => {
                    reschedule |= self
                        .jobs
                        .set_config(new.retention.clone(), new.maintenance.clone());
                    next.retention = new.retention.clone();
                    next.maintenance = new.maintenance.clone();
                }
                Live::Performance => {
                    self.perf.set_config(new.performance.clone());
                    next.performance = new.performance.clone();
                }
                Live::Log => {
                    logging::set_filter(&new.log.filter);
                    next.log = new.log.clone();
                }
            }
        }
        if reschedule {
            // The scheduler reads its intervals when it starts.
            let _ = self
                .root
                .send(RestartChild(crate::storage::jobs::SCHEDULER_CHILD.into()))
                .await;
        }
        *self.running.lock().unwrap_or_else(|p| p.into_inner()) = next;
        if plan.live.contains(&Live::Alerts) || plan.live.contains(&Live::Sensors) {
            self.mqtt.reconfigure(rule_names(&new.alerts));
        }
        for section in &plan.live {
            log::info!("reload: applied [{}]", section.name());
        }
        if !plan.needs_restart.is_empty() {
            log::warn!(
                "reload: changes to [{}] take effect after a restart",
                plan.needs_restart.join("], [")
            );
        }
        applied.plan = plan;
        Ok(applied)
    }

    /// Starts, restarts or stops only the sensors whose entries changed;
    /// every other sensor's actor runs on untouched.
    async fn apply_sensors(&self, new: &Config, applied: &mut Applied) {
        for (shared, change) in self.sensors.update(&new.sensors) {
            let name = shared.config.name.clone();
            let spec: Option<crate::supervisor::MakeSpec> = match change {
                Change::Removed => None,
                Change::Added | Change::Changed => {
                    let deps = self.sensor_deps.clone();
                    Some(Box::new(move || sensor_child(shared, deps)))
                }
            };
            let put = PutChild {
                supervisor: SENSORS_SUPERVISOR.into(),
                name: name.clone(),
                spec,
            };
            // When the sensors' supervisor is down, its next start reads
            // the registry, which already has the change.
            if !matches!(self.root.send(put).await, Ok(true)) {
                log::warn!(
                    "sensor {name}: the sensors' supervisor is not running; applied at its next start"
                );
            }
            log::info!("sensor {name}: {change:?}");
            match change {
                Change::Added => applied.sensors_added.push(name),
                Change::Changed => applied.sensors_changed.push(name),
                Change::Removed => {
                    // Gone from /api/guards and /metrics with the sensor.
                    self.sensor_deps.guard.forget_sensor(&name);
                    applied.sensors_removed.push(name);
                }
            }
        }
        self.live.set_sensors(self.sensors.enabled_names());
        if let Some(addr) = self.alerts.current() {
            let _ = addr.send(SystemSensors(system_sensors(&new.sensors))).await;
        }
    }
}

/// The names of the configured alert rules (Home Assistant's binary
/// sensors).
pub fn rule_names(alerts: &crate::alerts::AlertsConfig) -> Vec<String> {
    alerts.rules.iter().map(|r| r.name.clone()).collect()
}

/// The enabled sensors of kind `system`, whose figures built-in rules watch.
pub fn system_sensors(sensors: &[crate::sensors::SensorConfig]) -> Vec<String> {
    sensors
        .iter()
        .filter(|s| s.enabled && s.driver.kind() == "system")
        .map(|s| s.name.clone())
        .collect()
}

impl Reloader for Reloads {
    fn reload(&self) -> LocalBoxFuture<'_, Result<ReloadReport, ReloadError>> {
        Box::pin(Reloads::reload(self))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::app::config::DEFAULT_TOML;

    /// Every leaf key of a TOML table, as a path of keys (array elements by
    /// index).
    fn leaves(value: &toml::Value, path: Vec<String>, out: &mut Vec<Vec<String>>) {
        match value {
            toml::Value::Table(t) => {
                for (k, v) in t {
                    let mut p = path.clone();
                    p.push(k.clone());
                    leaves(v, p, out);
                }
            }
            toml::Value::Array(a) if a.iter().all(|v| v.is_table()) && !a.is_empty() => {
                for (i, v) in a.iter().enumerate() {
                    let mut p = path.clone();
                    p.push(i.to_string());
                    leaves(v, p, out);
                }
            }
            _ => out.push(path),
        }
    }

    fn get_mut<'a>(v: &'a mut toml::Value, path: &[String]) -> &'a mut toml::Value {
        path.iter().fold(v, |v, k| match v {
            toml::Value::Table(t) => t.get_mut(k).unwrap(),
            toml::Value::Array(a) => &mut a[k.parse::<usize>().unwrap()],
            _ => unreachable!(),
        })
    }

    /// Other values of the same type, most likely valid first.
    fn changes(v: &toml::Value) -> Vec<toml::Value> {
        use toml::Value as V;
        match v {
            V::Integer(i) => vec![
                V::Integer(i + 1),
                V::Integer((i * 2).max(1)),
                V::Integer(i - 1),
            ],
            V::Float(f) => vec![V::Float(f + 0.5), V::Float(f * 1.1), V::Float(f - 0.5)],
            V::Boolean(b) => vec![V::Boolean(!b)],
            V::String(s) => vec![
                V::String(format!("{s}x")),
                V::String(String::new()),
                V::String("warn".into()),
                V::String("127.0.0.1:9999".into()),
                V::String("drop_newest".into()),
                V::String("full".into()),
                V::String("/tmp/vigil-reload-test".into()),
                V::String("cpu_thermal".into()),
            ],
            V::Array(a) if a.is_empty() => vec![V::Array(vec![V::String("10.0.0.0/8".into())])],
            V::Array(a) => vec![V::Array(a[..a.len() - 1].to_vec())],
            _ => Vec::new(),
        }
    }

    #[test]
    fn every_key_of_the_documented_file_is_applied_or_needs_a_restart() {
        // The documented file, with the default sensors written out so that
        // their keys are changed too.
        let mut doc: toml::Value = toml::from_str(DEFAULT_TOML).unwrap();
        let running = Config::from_toml(DEFAULT_TOML, "defaults").unwrap();
        let mut paths = Vec::new();
        leaves(&doc, Vec::new(), &mut paths);
        let mut checked = 0;
        let mut sections = std::collections::BTreeSet::new();
        for path in &paths {
            let original = get_mut(&mut doc, path).clone();
            let mut reported = None;
            for candidate in changes(&original) {
                *get_mut(&mut doc, path) = candidate;
                let text = toml::to_string(&doc).unwrap();
                let Ok(new) = Config::from_toml(&text, "changed") else {
                    continue;
                };
                if new == running {
                    continue;
                }
                let p = plan(&running, &new);
                let section = path[0].as_str();
                let named = p.live.iter().any(|l| l.name() == section)
                    || p.needs_restart.contains(&section);
                assert!(
                    named,
                    "changing {} to {text:?} is not reported: {p:?}",
                    path.join(".")
                );
                assert_eq!(
                    p.live.len() + p.needs_restart.len(),
                    1,
                    "changing {} reports other sections too: {p:?}",
                    path.join(".")
                );
                reported = Some(section.to_owned());
                break;
            }
            *get_mut(&mut doc, path) = original;
            if let Some(s) = reported {
                checked += 1;
                sections.insert(s);
            }
        }
        // Nearly every key admits some other valid value; the few that do
        // not (a key whose only other values are refused) are not counted.
        assert!(
            checked * 10 >= paths.len() * 9,
            "{checked} of {} keys changed",
            paths.len()
        );
        for s in [
            "server",
            "log",
            "storage",
            "retention",
            "maintenance",
            "supervisor",
            "live",
            "alerts",
            "performance",
            "pacing",
            "guard",
        ] {
            assert!(sections.contains(s), "no key of [{s}] was changed");
        }
    }

    #[test]
    fn pacing_policy_keys_apply_live_and_monitor_keys_need_a_restart() {
        let running = Config::default();
        let mut new = running.clone();
        new.pacing.temp_warm_c = 60.0;
        new.retention.max_db_mb = 500;
        let p = plan(&running, &new);
        assert_eq!(p.live, [Live::Pacing, Live::Retention]);
        assert!(p.needs_restart.is_empty());
        let mut edited = new.clone();
        edited.sensors[0].interval_ms += 1;
        assert_eq!(
            plan(&running, &edited).live,
            [Live::Sensors, Live::Pacing, Live::Retention]
        );
        new.pacing.watchdog_interval_ms += 1;
        let p = plan(&running, &new);
        assert_eq!(p.live, [Live::Retention]);
        assert_eq!(p.needs_restart, ["pacing"]);
        assert_eq!(plan(&running, &running.clone()), Plan::default());
    }
}
