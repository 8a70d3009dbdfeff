//! Reload: re-read the config file, validate all of it, apply every section
//! that can change on a running appliance, and name the rest.
//!
//! Live: `[alerts]` (rules and webhooks), `[pacing]` policy keys
//! (thresholds, hysteresis, dwell, multipliers), `[retention]` (horizons and
//! the size cap), `[maintenance]` (the schedule, backups), `[performance]`
//! and `[log]`. Restart: `[server]`, `[storage]`, `[supervisor]`, `[live]`,
//! `[guard]`, `[sensors]`, and the `[pacing]` keys that shape the monitors.
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
use crate::alerts::{AlertsShared, Reload};
use crate::pacing::PacingShared;
use crate::perf::Perf;
use crate::storage::jobs::Jobs;
use crate::supervisor::{RestartChild, Supervisor};
use crate::web::reload::{ReloadError, ReloadReport, Reloader};

/// A section that a reload can apply on a running appliance.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Live {
    Alerts,
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
    restart(*sensors != new.sensors, "sensors");
    let pacing_live = pacing.policy_differs_only(&new.pacing);
    restart(*pacing != new.pacing && !pacing_live, "pacing");
    let mut live = |changed: bool, section: Live| {
        if changed {
            p.live.push(section);
        }
    };
    live(*alerts != new.alerts, Live::Alerts);
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
    /// The config file, if vigil was started with one.
    pub source: Option<PathBuf>,
    /// What runs now: the start-up config with every live change applied.
    pub running: Mutex<Config>,
    pub alerts: Arc<AlertsShared>,
    pub pacing: Arc<PacingShared>,
    pub jobs: Arc<Jobs>,
    pub perf: Arc<Perf>,
    pub root: Addr<Supervisor>,
}

impl Reloads {
    fn running(&self) -> Config {
        self.running
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Re-reads the file, then applies what [`plan`] says can go live.
    pub async fn reload(&self) -> Result<ReloadReport, ReloadError> {
        let path = self.source.as_deref().ok_or(ReloadError::NoFile)?;
        let new = Config::load(Some(path))?;
        let running = self.running();
        let plan = plan(&running, &new);
        // The alert manager answers with the number of rules in force; it
        // is asked every time so that the report says what runs.
        let addr = self.alerts.current().ok_or(ReloadError::NotRunning)?;
        let rules = addr
            .send(Reload(new.alerts.clone()))
            .await
            .map_err(|_| ReloadError::NotRunning)?;
        let mut next = running;
        next.alerts = new.alerts.clone();
        let mut reschedule = false;
        for section in &plan.live {
            match section {
                Live::Alerts => {}
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
        for section in &plan.live {
            log::info!("reload: applied [{}]", section.name());
        }
        if !plan.needs_restart.is_empty() {
            log::warn!(
                "reload: changes to [{}] take effect after a restart",
                plan.needs_restart.join("], [")
            );
        }
        Ok(ReloadReport {
            source: path.display().to_string(),
            rules,
            webhooks: new.alerts.webhooks.len(),
            applied: plan.live.iter().map(|s| s.name()).collect(),
            needs_restart: plan.needs_restart,
        })
    }
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
        new.pacing.watchdog_interval_ms += 1;
        let p = plan(&running, &new);
        assert_eq!(p.live, [Live::Retention]);
        assert_eq!(p.needs_restart, ["pacing"]);
        assert_eq!(plan(&running, &running.clone()), Plan::default());
    }
}
