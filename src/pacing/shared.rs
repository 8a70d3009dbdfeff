//! The pacing state: what the thermal watchdog and the load monitor last
//! saw, the policy deciding the level from it, and the [`Pace`] every sensor
//! actor watches. Outlives every monitor instance, like `SensorShared`.
//!
//! Each reading is taken in, the policy re-evaluated, and a change of level
//! is announced exactly once: one log line, one [`Event::Pacing`] on the
//! bus, one entry in the recent changes, one new value on the watch
//! channel. A source going missing or coming back is logged once too.
//! A figure older than [`STALE_AFTER_POLLS`] polls of its monitor (plus the
//! probe timeout) no longer counts, so a monitor that was given up cannot
//! hold the level up forever.

use std::collections::VecDeque;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use serde::Serialize;
use tokio::sync::watch;
use tokio::time::Instant;

use super::cadence::Pace;
use super::config::PacingConfig;
use super::load::{LoadError, LoadSample};
use super::policy::{Inputs, PacingPolicy};
use super::thermal::ThermalReading;
use crate::platform::throttled::ThrottledFlags;
use crate::vocab::bus::{Bus, Event};
use crate::vocab::clock::{now_ms, rfc3339};
use crate::vocab::pacing::{Level, PacingChange, Why};

/// A probe that takes longer than this fails its monitor.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(10);

/// A figure is ignored once this many polls of its monitor have passed
/// without a new one.
pub const STALE_AFTER_POLLS: u32 = 3;
/// Changes of level kept for `/api/pacing`.
pub const CHANGES_CAPACITY: usize = 50;

struct Observed<T> {
    at: Instant,
    at_ms: i64,
    value: T,
}

struct Inner {
    policy: PacingPolicy,
    since_ms: i64,
    thermal: Option<Observed<ThermalReading>>,
    load: Option<Observed<Result<LoadSample, LoadError>>>,
    changes: VecDeque<PacingChange>,
}

/// See the module docs.
pub struct PacingShared {
    /// The `[pacing]` section in force; [`PacingShared::retune`] changes
    /// its policy keys live.
    config: std::sync::RwLock<PacingConfig>,
    bus: Bus,
    tx: watch::Sender<Pace>,
    inner: Mutex<Inner>,
}

impl PacingShared {
    /// Starts at normal. With pacing disabled the pace never changes.
    pub fn new(config: PacingConfig, bus: Bus) -> PacingShared {
        let pace = if config.enabled {
            Pace {
                level: Level::Normal,
                multiplier: config.multiplier_normal,
            }
        } else {
            Pace::NORMAL
        };
        let inner = Inner {
            policy: PacingPolicy::new(&config, Instant::now()),
            since_ms: now_ms(),
            thermal: None,
            load: None,
            changes: VecDeque::new(),
        };
        PacingShared {
            config: std::sync::RwLock::new(config),
            bus,
            tx: watch::channel(pace).0,
            inner: Mutex::new(inner),
        }
    }

    /// The `[pacing]` section in force.
    pub fn config(&self) -> PacingConfig {
        self.config
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Applies a new `[pacing]` section whose differences are all policy
    /// keys ([`PacingConfig::policy_differs_only`]): thresholds, hysteresis,
    /// dwell and multipliers. The level stays; a new multiplier for it
    /// reaches the sensors at once.
    pub fn retune(&self, config: PacingConfig) {
        let mut inner = self.lock();
        inner.policy.retune(&config);
        let enabled = config.enabled;
        *self.config.write().unwrap_or_else(|p| p.into_inner()) = config;
        if enabled {
            let pace = Pace {
                level: inner.policy.level(),
                multiplier: inner.policy.multiplier(),
            };
            self.tx.send_if_modified(|p| {
                let changed = *p != pace;
                *p = pace;
                changed
            });
        }
    }

    /// A receiver of the pace, for a sensor actor.
    pub fn subscribe(&self) -> watch::Receiver<Pace> {
        self.tx.subscribe()
    }

    /// The pace in force.
    pub fn pace(&self) -> Pace {
        *self.tx.borrow()
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn stale_after(&self, interval_ms: u64) -> Duration {
        Duration::from_millis(interval_ms).saturating_mul(STALE_AFTER_POLLS) + PROBE_TIMEOUT
    }

    /// Takes in a thermal watchdog reading.
    pub fn observe_thermal(&self, reading: ThermalReading, now: Instant) {
        let mut inner = self.lock();
        log_thermal_news(inner.thermal.as_ref().map(|o| &o.value), &reading);
        inner.thermal = Some(Observed {
            at: now,
            at_ms: now_ms(),
            value: reading,
        });
        self.evaluate(&mut inner, now);
    }

    /// Takes in a load monitor sample.
    pub fn observe_load(&self, sample: Result<LoadSample, LoadError>, now: Instant) {
        let mut inner = self.lock();
        let was_ok = inner.load.as_ref().map(|o| o.value.is_ok());
        match (&sample, was_ok) {
            (Err(e), None | Some(true)) => log::info!("load monitor: no load figures ({e})"),
            (Ok(_), Some(false)) => log::info!("load monitor: load figures available again"),
            _ => {}
        }
        inner.load = Some(Observed {
            at: now,
            at_ms: now_ms(),
            value: sample,
        });
        self.evaluate(&mut inner, now);
    }

    fn inputs(&self, inner: &Inner, now: Instant) -> Inputs {
        let config = self.config();
        let fresh = |at: Instant, interval_ms| {
            now.saturating_duration_since(at) <= self.stale_after(interval_ms)
        };
        Inputs {
            temperature_c: inner
                .thermal
                .as_ref()
                .filter(|o| fresh(o.at, config.watchdog_interval_ms))
                .and_then(|o| o.value.temperature_c),
            cpu_percent: inner
                .load
                .as_ref()
                .filter(|o| fresh(o.at, config.load_interval_ms))
                .and_then(|o| o.value.as_ref().ok())
                .map(|s| s.cpu_percent),
        }
    }

    fn evaluate(&self, inner: &mut Inner, now: Instant) {
        let inputs = self.inputs(inner, now);
        let Some(tr) = inner.policy.evaluate(now, inputs) else {
            return;
        };
        let at_ms = now_ms();
        let pace = Pace {
            level: tr.to,
            multiplier: inner.policy.multiplier(),
        };
        let change = PacingChange {
            at: rfc3339(at_ms),
            at_ms,
            from: tr.from,
            to: tr.to,
            multiplier: pace.multiplier,
            optional_paused: pace.pauses_optional(),
            why: tr.why,
        };
        let paused = if change.optional_paused {
            ", optional sensors paused"
        } else {
            ""
        };
        let line = format!(
            "pacing: {} → {} ({}); intervals ×{}{paused}",
            change.from, change.to, change.why.summary, change.multiplier
        );
        if change.to > change.from {
            log::warn!("{line}");
        } else {
            log::info!("{line}");
        }
        inner.since_ms = at_ms;
        if inner.changes.len() == CHANGES_CAPACITY {
            inner.changes.pop_front();
        }
        inner.changes.push_back(change.clone());
        self.bus.event(Event::Pacing(change));
        self.tx.send_replace(pace);
    }

    /// Everything `/api/pacing` shows except the sensors.
    pub fn status(&self) -> PacingStatus {
        let now = Instant::now();
        let inner = self.lock();
        let (temp_level, cpu_level) = inner.policy.input_levels();
        let c = &self.config();
        let stale = |at: Instant, interval_ms| {
            now.saturating_duration_since(at) > self.stale_after(interval_ms)
        };
        let not_yet = if c.enabled {
            "not read yet"
        } else {
            "pacing is disabled"
        };
        let thermal = match &inner.thermal {
            None => ThermalView {
                unavailable_reason: Some(not_yet.into()),
                throttled_unavailable_reason: Some(not_yet.into()),
                ..ThermalView::default()
            },
            Some(o) => {
                let r = &o.value;
                ThermalView {
                    available: r.temperature_c.is_some(),
                    temperature_c: r.temperature_c,
                    source: r.source.clone(),
                    unavailable_reason: r.unavailable_reason.clone(),
                    throttled_available: r.throttled.is_some(),
                    throttled: r.throttled.map(|t| t.flags()),
                    throttled_raw: r.throttled.map(|t| format!("{:#x}", t.0)),
                    throttled_unavailable_reason: r.throttled_unavailable_reason.clone(),
                    updated_at: Some(rfc3339(o.at_ms)),
                    stale: stale(o.at, c.watchdog_interval_ms),
                }
            }
        };
        let load = match &inner.load {
            None => LoadView {
                enabled: c.enabled && c.use_load,
                unavailable_reason: Some(
                    if c.enabled && !c.use_load {
                        "the load monitor is off (pacing.use_load)"
                    } else {
                        not_yet
                    }
                    .into(),
                ),
                ..LoadView::default()
            },
            Some(o) => LoadView {
                enabled: true,
                available: o.value.is_ok(),
                unavailable_reason: o.value.as_ref().err().map(ToString::to_string),
                sample: o.value.as_ref().ok().cloned(),
                updated_at: Some(rfc3339(o.at_ms)),
                stale: stale(o.at, c.load_interval_ms),
            },
        };
        let pace = self.pace();
        PacingStatus {
            enabled: c.enabled,
            level: pace.level,
            multiplier: pace.multiplier,
            optional_paused: pace.pauses_optional(),
            since: rfc3339(inner.since_ms),
            why: inner.policy.why().clone(),
            input_levels: InputLevels {
                temperature: temp_level,
                cpu: cpu_level,
            },
            thermal,
            load,
            thresholds: Thresholds {
                temp_c: [c.temp_warm_c, c.temp_hot_c, c.temp_critical_c],
                temp_hysteresis_c: c.temp_hysteresis_c,
                cpu_percent: [c.cpu_warm_percent, c.cpu_hot_percent],
                cpu_hysteresis_percent: c.cpu_hysteresis_percent,
                min_dwell_ms: c.min_dwell_ms,
                multipliers: c.multipliers(),
            },
            changes: inner.changes.iter().cloned().collect(),
        }
    }
}

/// Logs, once, a temperature source appearing, changing or going missing,
/// and throttling flags appearing, changing or going missing.
fn log_thermal_news(before: Option<&ThermalReading>, now: &ThermalReading) {
    let source_before = before.map(|b| b.source.as_deref());
    if source_before != Some(now.source.as_deref()) {
        match (&now.source, &now.unavailable_reason) {
            (Some(source), _) => log::info!("thermal watchdog: temperature from {source}"),
            (None, reason) => log::info!(
                "thermal watchdog: no temperature ({}); pacing follows load only",
                reason.as_deref().unwrap_or("no source")
            ),
        }
    }
    // `before` had other flags, or none while now there are some, or this
    // is the first reading.
    if before.map(|b| b.throttled) != Some(now.throttled) {
        match now.throttled {
            Some(t) if t.any_now() => log::warn!(
                "thermal watchdog: the SoC reports throttling now ({:#x}: {:?})",
                t.0,
                t.flags()
            ),
            Some(t) => log::info!("thermal watchdog: throttling flags {:#x}", t.0),
            None => log::info!(
                "thermal watchdog: no throttling flags ({})",
                now.throttled_unavailable_reason
                    .as_deref()
                    .unwrap_or("no source")
            ),
        }
    }
}

/// `/api/pacing` minus the per-sensor part (which the web layer adds).
#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct PacingStatus {
    pub enabled: bool,
    pub level: Level,
    pub multiplier: f64,
    pub optional_paused: bool,
    /// When the current level began.
    pub since: String,
    /// The figures that brought the current level.
    pub why: Why,
    /// The level each input supports now, before the dwell.
    pub input_levels: InputLevels,
    pub thermal: ThermalView,
    pub load: LoadView,
    pub thresholds: Thresholds,
    /// Recent changes of level, oldest first.
    pub changes: Vec<PacingChange>,
}

#[derive(Debug, Clone, Copy, Serialize, schemars::JsonSchema)]
pub struct InputLevels {
    pub temperature: Level,
    pub cpu: Level,
}

/// The thermal watchdog's last reading and its sources' availability.
#[derive(Debug, Clone, Default, Serialize, schemars::JsonSchema)]
pub struct ThermalView {
    pub available: bool,
    pub temperature_c: Option<f64>,
    pub source: Option<String>,
    pub unavailable_reason: Option<String>,
    pub throttled_available: bool,
    pub throttled: Option<ThrottledFlags>,
    /// The firmware's word as `vcgencmd get_throttled` prints it.
    pub throttled_raw: Option<String>,
    pub throttled_unavailable_reason: Option<String>,
    pub updated_at: Option<String>,
    /// The reading is too old to count.
    pub stale: bool,
}

/// The load monitor's last sample.
#[derive(Debug, Clone, Default, Serialize, schemars::JsonSchema)]
pub struct LoadView {
    pub enabled: bool,
    pub available: bool,
    pub unavailable_reason: Option<String>,
    #[serde(flatten)]
    pub sample: Option<LoadSample>,
    pub updated_at: Option<String>,
    pub stale: bool,
}

#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct Thresholds {
    /// Warm, hot, critical.
    pub temp_c: [f64; 3],
    pub temp_hysteresis_c: f64,
    /// Warm, hot.
    pub cpu_percent: [f64; 2],
    pub cpu_hysteresis_percent: f64,
    pub min_dwell_ms: u64,
    /// Normal, warm, hot, critical.
    pub multipliers: [f64; 4],
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vocab::pacing::Cause;

    fn shared(dwell_ms: u64) -> PacingShared {
        PacingShared::new(
            PacingConfig {
                min_dwell_ms: dwell_ms,
                watchdog_interval_ms: 1000,
                load_interval_ms: 1000,
                ..PacingConfig::default()
            },
            Bus::new(),
        )
    }

    fn heat(t: f64) -> ThermalReading {
        ThermalReading {
            temperature_c: Some(t),
            source: Some("test".into()),
            ..ThermalReading::default()
        }
    }

    fn cpu(c: f64) -> Result<LoadSample, LoadError> {
        Ok(LoadSample {
            cpu_percent: c,
            cores: 1,
            ..LoadSample::default()
        })
    }

    #[tokio::test(start_paused = true)]
    async fn each_change_is_published_once_on_the_bus_and_the_watch() {
        let p = shared(0);
        let mut events = p.bus.subscribe_events();
        let mut pace = p.subscribe();
        let t0 = Instant::now();
        for (i, t) in [50.0, 81.0, 82.0, 81.5, 60.0, 59.0].into_iter().enumerate() {
            p.observe_thermal(heat(t), t0 + Duration::from_secs(i as u64));
        }
        let mut seen = Vec::new();
        while let Ok(ev) = events.try_recv() {
            match ev {
                Event::Pacing(c) => seen.push((c.from, c.to, c.multiplier, c.optional_paused)),
                other => panic!("unexpected {other:?}"),
            }
        }
        assert_eq!(
            seen,
            [
                (Level::Normal, Level::Critical, 4.0, true),
                (Level::Critical, Level::Normal, 1.0, false)
            ]
        );
        assert!(pace.has_changed().unwrap());
        assert_eq!(*pace.borrow_and_update(), Pace::NORMAL);
        let status = p.status();
        assert_eq!(status.changes.len(), 2);
        assert_eq!(status.changes[0].why.temperature_c, Some(81.0));
        let json = serde_json::to_value(Event::Pacing(status.changes[0].clone())).unwrap();
        assert_eq!(json["kind"], "pacing");
        assert_eq!(json["to"], "critical");
        assert_eq!(json["why"]["cause"], "temperature");
    }

    #[tokio::test(start_paused = true)]
    async fn heat_and_load_combine_and_stale_figures_stop_counting() {
        let p = shared(0);
        let t0 = Instant::now();
        p.observe_thermal(heat(66.0), t0);
        p.observe_load(cpu(85.0), t0);
        assert_eq!(p.pace().level, Level::Hot);
        assert_eq!(p.status().why.cause, Cause::Cpu);
        // The load monitor goes quiet; its 85 % stops counting once stale.
        tokio::time::advance(p.stale_after(1000) + Duration::from_secs(1)).await;
        p.observe_thermal(heat(66.0), Instant::now());
        assert_eq!(p.pace().level, Level::Warm);
        let status = p.status();
        assert!(status.load.stale);
        assert_eq!(status.input_levels.cpu, Level::Normal);
    }

    #[tokio::test(start_paused = true)]
    async fn status_reports_sources_and_their_absence() {
        let p = shared(0);
        let s = p.status();
        assert!(!s.thermal.available);
        assert_eq!(
            s.thermal.unavailable_reason.as_deref(),
            Some("not read yet")
        );
        p.observe_thermal(
            ThermalReading {
                unavailable_reason: Some("no thermal zone under /x".into()),
                throttled: Some(crate::platform::Throttled(0x50005)),
                ..ThermalReading::default()
            },
            Instant::now(),
        );
        p.observe_load(
            Err(LoadError::Unavailable("no /proc".into())),
            Instant::now(),
        );
        let s = p.status();
        assert!(!s.thermal.available && s.thermal.throttled_available);
        assert_eq!(s.thermal.throttled_raw.as_deref(), Some("0x50005"));
        assert!(s.thermal.throttled.unwrap().under_voltage);
        assert!(!s.load.available);
        assert!(
            s.load
                .unavailable_reason
                .as_deref()
                .unwrap()
                .contains("no /proc")
        );
        assert_eq!(s.level, Level::Normal);
        let json = serde_json::to_value(&s).unwrap();
        assert_eq!(json["thermal"]["throttled"]["under_voltage"], true);
        p.observe_load(cpu(10.0), Instant::now());
        let json = serde_json::to_value(p.status()).unwrap();
        assert_eq!(json["load"]["cpu_percent"], 10.0);
    }

    #[test]
    fn a_disabled_pacing_stays_normal() {
        let p = PacingShared::new(
            PacingConfig {
                enabled: false,
                multiplier_normal: 2.0,
                ..PacingConfig::default()
            },
            Bus::new(),
        );
        assert_eq!(p.pace(), Pace::NORMAL);
        let s = p.status();
        assert!(!s.enabled);
        assert_eq!(
            s.thermal.unavailable_reason.as_deref(),
            Some("pacing is disabled")
        );
    }
}
