//! Alerts: rules from the config on sensor values (threshold with duration
//! and hysteresis, rate of change, silence) and built-in rules on internal
//! events (a child given up, database writes failing, readings dropped, a
//! circuit breaker open, vigil's own memory above its soft limit, memory or
//! disk high, pacing at critical), evaluated
//! by the [`AlertManager`] actor.
//!
//! An alert fires once per key (rule and subject), stays firing while its
//! condition holds, resolves when it clears, and can be acknowledged. Every
//! change is published on the event bus (the live feed pushes it), sent to
//! matching webhooks, and persisted through the DbWriter; changes the
//! database cannot take yet (it may be the very thing failing) wait in memory
//! and are retried, in order. A firing alert whose condition reports new
//! figures (a breaker's next trial, readings held, drops so far) is
//! `updated`: its message and value change in place, pushed live and
//! persisted (an update not yet written is replaced by the next), but not
//! sent to webhooks.

pub mod rules;
pub mod store;
pub mod webhook;

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use actix::prelude::*;
use serde::{Deserialize, Serialize};

use crate::guard::GuardShared;
use crate::storage::ReadPool;
use crate::storage::writer::WriterShared;
use crate::supervisor::{ChildHandle, ChildSpec, LifecycleReporter, Stop};
use crate::vocab::alert::AlertView;
use crate::vocab::bus::{self, Bus, Delivery, Event, SensorReading};
use crate::vocab::check::{ConfigError, positive};
use crate::vocab::clock::{ms_i64, now_ms, rfc3339};
use crate::vocab::guard::{BreakerState, Guarded};
use crate::vocab::pacing::Level;
pub use rules::Severity;
use rules::{Condition, RuleState, Transition};
use store::{Alert, Change};
use webhook::{WebhookConfig, WebhookView, Webhooks};

/// How often silence rules and quiet periods are checked, and pending
/// changes retried.
const TICK: Duration = Duration::from_secs(1);
/// How often a firing silence alert's length is renewed, at most (a rule
/// with a shorter `silence_ms` renews at that period).
const SILENCE_UPDATE_MS: u64 = 60_000;
/// Alert changes held in memory while the database refuses them.
const MAX_PENDING: usize = 10_000;
/// How often old resolved alerts are pruned.
const PRUNE_EVERY: Duration = Duration::from_secs(6 * 3600);

/// What a value rule watches for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ConditionKind {
    Above,
    Below,
    Rate,
    Silence,
}

fn default_metric() -> String {
    "value".into()
}
fn default_severity() -> Severity {
    Severity::Warning
}

/// One `[[alerts.rules]]` entry.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RuleConfig {
    /// Unique; names the alert.
    pub name: String,
    pub sensor: String,
    #[serde(default = "default_metric")]
    pub metric: String,
    pub condition: ConditionKind,
    /// above / below: the limit. rate: the change per minute.
    #[serde(default)]
    pub threshold: Option<f64>,
    /// Where a firing alert clears (hysteresis); default `threshold`.
    #[serde(default)]
    pub clear: Option<f64>,
    /// The condition must hold this long before the alert fires.
    #[serde(default)]
    pub for_ms: u64,
    /// rate: the window the change is measured over (default 60000).
    #[serde(default)]
    pub window_ms: Option<u64>,
    /// silence: fire when no reading came for this long.
    #[serde(default)]
    pub silence_ms: Option<u64>,
    #[serde(default = "default_severity")]
    pub severity: Severity,
    /// Text of the alert; default describes the condition.
    #[serde(default)]
    pub message: Option<String>,
}

impl RuleConfig {
    /// The rule's condition, or an error naming the bad key.
    pub fn condition(&self) -> Result<Condition, ConfigError> {
        let key = |field: &str| format!("alerts.rules[{}].{field}", self.name);
        let need = |v: Option<f64>, field: &str| {
            v.filter(|x| x.is_finite()).ok_or_else(|| {
                ConfigError::invalid(
                    key(field),
                    format!("is required for `{:?}` rules", self.condition).to_lowercase(),
                )
            })
        };
        // `clear`, or `default` when it is left out.
        let clear_or = |default: f64| match self.clear {
            Some(c) if !c.is_finite() => Err(ConfigError::invalid(
                key("clear"),
                "must be a finite number",
            )),
            c => Ok(c.unwrap_or(default)),
        };
        Ok(match self.condition {
            ConditionKind::Above | ConditionKind::Below => {
                let threshold = need(self.threshold, "threshold")?;
                let clear = clear_or(threshold)?;
                let above = self.condition == ConditionKind::Above;
                if (above && clear > threshold) || (!above && clear < threshold) {
                    return Err(ConfigError::invalid(
                        key("clear"),
                        format!(
                            "{clear} is on the wrong side of the threshold {threshold} (it must be {} it)",
                            if above { "at or below" } else { "at or above" }
                        ),
                    ));
                }
                if above {
                    Condition::Above { threshold, clear }
                } else {
                    Condition::Below { threshold, clear }
                }
            }
            ConditionKind::Rate => {
                let per_minute = need(self.threshold, "threshold")?;
                if per_minute <= 0.0 {
                    return Err(ConfigError::invalid(key("threshold"), "must be positive"));
                }
                let clear = clear_or(per_minute)?;
                let window_ms = self.window_ms.unwrap_or(60_000);
                positive(&key("window_ms"), window_ms)?;
                Condition::Rate {
                    per_minute,
                    clear,
                    window_ms: ms_i64(window_ms),
                }
            }
            ConditionKind::Silence => {
                let silence_ms = self.silence_ms.ok_or_else(|| {
                    ConfigError::invalid(key("silence_ms"), "is required for silence rules")
                })?;
                positive(&key("silence_ms"), silence_ms)?;
                Condition::Silence {
                    silence_ms: ms_i64(silence_ms),
                }
            }
        })
    }

    /// The message of a firing threshold alert whose value went further
    /// past the threshold.
    fn describe_peak(&self, value: f64) -> String {
        if let Some(m) = &self.message {
            return m.clone();
        }
        let what = format!("{}/{}", self.sensor, self.metric);
        let t = self.threshold.unwrap_or(0.0);
        match self.condition {
            ConditionKind::Below => format!("{what} fell to {value:.2}, below {t}"),
            _ => format!("{what} rose to {value:.2}, above {t}"),
        }
    }

    fn describe(&self, value: Option<f64>) -> String {
        if let Some(m) = &self.message {
            return m.clone();
        }
        let what = format!("{}/{}", self.sensor, self.metric);
        let v = value.map(|v| format!("{v:.2}")).unwrap_or_default();
        match self.condition {
            ConditionKind::Above => {
                format!("{what} is {v}, above {}", self.threshold.unwrap_or(0.0))
            }
            ConditionKind::Below => {
                format!("{what} is {v}, below {}", self.threshold.unwrap_or(0.0))
            }
            ConditionKind::Rate => format!(
                "{what} changes by {v} per minute, faster than {}",
                self.threshold.unwrap_or(0.0)
            ),
            ConditionKind::Silence => {
                let secs = value.unwrap_or((self.silence_ms.unwrap_or(0) / 1000) as f64);
                format!("no reading of {what} for {secs:.0} s")
            }
        }
    }
}

/// `[alerts]`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AlertsConfig {
    /// Built-in rules on internal events and on the system sensor.
    pub builtin: bool,
    /// Built-in: memory in use (system sensor) above this percentage.
    pub memory_high_percent: f64,
    /// Built-in: the database's filesystem fuller than this percentage.
    pub disk_high_percent: f64,
    /// Built-in: "readings dropped" resolves after this long without drops.
    pub drops_quiet_ms: u64,
    /// Resolved alerts kept in memory for the API.
    pub history: usize,
    /// Resolved alerts are deleted from the database after this many days.
    pub retention_days: u64,
    pub rules: Vec<RuleConfig>,
    pub webhooks: Vec<WebhookConfig>,
}

impl Default for AlertsConfig {
    fn default() -> Self {
        AlertsConfig {
            builtin: true,
            memory_high_percent: 90.0,
            disk_high_percent: 90.0,
            drops_quiet_ms: 300_000,
            history: 1000,
            retention_days: 90,
            rules: Vec::new(),
            webhooks: Vec::new(),
        }
    }
}

impl AlertsConfig {
    /// Checks the section; `sensors` are the configured sensor names.
    pub fn validate(&self, sensors: &[&str]) -> Result<(), ConfigError> {
        for (key, v) in [
            ("alerts.memory_high_percent", self.memory_high_percent),
            ("alerts.disk_high_percent", self.disk_high_percent),
        ] {
            if !(0.0..=100.0).contains(&v) {
                return Err(ConfigError::invalid(
                    key,
                    format!("{v} is not a percentage"),
                ));
            }
        }
        positive("alerts.drops_quiet_ms", self.drops_quiet_ms)?;
        positive("alerts.retention_days", self.retention_days)?;
        let mut names = std::collections::HashSet::new();
        for r in &self.rules {
            if r.name.is_empty() || !names.insert(r.name.as_str()) {
                return Err(ConfigError::invalid(
                    format!("alerts.rules[{}].name", r.name),
                    "must be present and unique",
                ));
            }
            if !sensors.contains(&r.sensor.as_str()) {
                return Err(ConfigError::invalid(
                    format!("alerts.rules[{}].sensor", r.name),
                    format!("no sensor named `{}` is configured", r.sensor),
                ));
            }
            r.condition()?;
        }
        for (i, w) in self.webhooks.iter().enumerate() {
            w.validate(&format!("alerts.webhooks[{i}]"))?;
        }
        Ok(())
    }
}

/// A rule compiled for evaluation.
struct ActiveRule {
    config: RuleConfig,
    key: String,
    state: RuleState,
}

/// Built-in value rules on a system sensor.
fn builtin_rules(cfg: &AlertsConfig, system_sensors: &[String]) -> Vec<RuleConfig> {
    if !cfg.builtin {
        return Vec::new();
    }
    let mut out = Vec::new();
    for s in system_sensors {
        for (name, metric, limit) in [
            ("memory_high", "memory", cfg.memory_high_percent),
            ("disk_high", "disk", cfg.disk_high_percent),
        ] {
            out.push(RuleConfig {
                name: name.into(),
                sensor: s.clone(),
                metric: metric.into(),
                condition: ConditionKind::Above,
                threshold: Some(limit),
                clear: Some((limit - 5.0).max(0.0)),
                for_ms: 60_000,
                window_ms: None,
                silence_ms: None,
                severity: Severity::Warning,
                message: None,
            });
        }
    }
    out
}

fn compile(cfg: &AlertsConfig, system_sensors: &[String], now: i64) -> Vec<ActiveRule> {
    cfg.rules
        .iter()
        .cloned()
        .chain(builtin_rules(cfg, system_sensors))
        .filter_map(|r| {
            let condition = r.condition().ok()?;
            Some(ActiveRule {
                key: format!("{}:{}/{}", r.name, r.sensor, r.metric),
                state: RuleState::new(condition, ms_i64(r.for_ms), now),
                config: r,
            })
        })
        .collect()
}

/// Filters for [`GetAlerts`].
#[derive(Debug, Clone, Default)]
pub struct AlertFilter {
    pub state: Option<String>,
    pub severity: Option<Severity>,
    pub since: Option<i64>,
    pub limit: usize,
}

/// Asks for alerts, newest first.
#[derive(Message)]
#[rtype(result = "Vec<AlertView>")]
pub struct GetAlerts(pub AlertFilter);

/// The newest alert of each rule that fired, resolved or was acknowledged
/// at or after `since` (of every rule that has one, with `None`): the
/// current state of each, one per rule, whatever happened in between.
#[derive(Message)]
#[rtype(result = "Vec<AlertView>")]
pub struct LatestPerRule {
    pub since: Option<i64>,
}

/// Acknowledges an alert; `None` if there is no such alert.
#[derive(Message)]
#[rtype(result = "Option<AlertView>")]
pub struct Ack(pub i64);

/// The rules in force and the webhooks' state.
#[derive(Message)]
#[rtype(result = "RulesView")]
pub struct GetRules;

/// Replaces the rules and webhooks.
#[derive(Message)]
#[rtype(result = "usize")]
pub struct Reload(pub AlertsConfig);

/// Rules as the API shows them.
#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct RulesView {
    pub rules: Vec<RuleView>,
    pub builtin: bool,
    pub webhooks: Vec<WebhookView>,
    pub pending_writes: usize,
    pub loaded_at: String,
}

#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct RuleView {
    #[serde(flatten)]
    pub config: RuleConfig,
    pub key: String,
    pub firing: bool,
}

/// What outlives manager instances: its address for the API, and the
/// rules it was last given (a reload, an edit), so that a restarted
/// manager runs those rather than the ones it started with.
#[derive(Default)]
pub struct AlertsShared {
    current: Mutex<Option<Addr<AlertManager>>>,
    in_force: Mutex<Option<(AlertsConfig, Vec<String>)>>,
}

impl AlertsShared {
    pub fn current(&self) -> Option<Addr<AlertManager>> {
        self.current
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
            .filter(Addr::connected)
    }

    fn keep(&self, cfg: &AlertsConfig, system_sensors: &[String]) {
        *self.in_force.lock().unwrap_or_else(|p| p.into_inner()) =
            Some((cfg.clone(), system_sensors.to_vec()));
    }

    fn in_force(&self) -> Option<(AlertsConfig, Vec<String>)> {
        self.in_force
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

/// Evaluates rules and keeps alerts. See the module docs.
pub struct AlertManager {
    cfg: AlertsConfig,
    system_sensors: Vec<String>,
    rules: Vec<ActiveRule>,
    by_series: HashMap<(String, String), Vec<usize>>,
    alerts: BTreeMap<i64, Alert>,
    firing: HashMap<String, i64>,
    next_id: i64,
    pending: VecDeque<Change>,
    writing: bool,
    /// The first this-many pending changes are being written now.
    in_flight: usize,
    webhooks: Webhooks,
    guard: Arc<GuardShared>,
    writer: Arc<WriterShared>,
    pool: ReadPool,
    bus: Bus,
    shared: Arc<AlertsShared>,
    reporter: LifecycleReporter,
    last_drop: i64,
    /// The retention run in progress went over the size cap.
    cap_in_run: bool,
    loaded_at: i64,
}

impl AlertManager {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        cfg: AlertsConfig,
        system_sensors: Vec<String>,
        writer: Arc<WriterShared>,
        pool: ReadPool,
        bus: Bus,
        shared: Arc<AlertsShared>,
        guard: Arc<GuardShared>,
        reporter: LifecycleReporter,
    ) -> AlertManager {
        let now = now_ms();
        let mut m = AlertManager {
            webhooks: Webhooks::new(&cfg.webhooks, &guard),
            guard,
            rules: compile(&cfg, &system_sensors, now),
            cfg,
            system_sensors,
            by_series: HashMap::new(),
            alerts: BTreeMap::new(),
            firing: HashMap::new(),
            next_id: 1,
            pending: VecDeque::new(),
            writing: false,
            in_flight: 0,
            writer,
            pool,
            bus,
            shared,
            reporter,
            last_drop: 0,
            cap_in_run: false,
            loaded_at: now,
        };
        m.index();
        m
    }

    fn index(&mut self) {
        self.by_series.clear();
        for (i, r) in self.rules.iter().enumerate() {
            self.by_series
                .entry((r.config.sensor.clone(), r.config.metric.clone()))
                .or_default()
                .push(i);
        }
    }

    /// Records a change: in memory, on the bus, to webhooks, to be persisted.
    fn changed(
        &mut self,
        id: i64,
        event: &'static str,
        value: Option<f64>,
        ctx: &mut Context<Self>,
    ) {
        let Some(alert) = self.alerts.get(&id).cloned() else {
            return;
        };
        let view = alert.view();
        match event {
            "fired" => log::warn!(
                "alert {} ({}): {}",
                alert.key,
                alert.severity,
                alert.message
            ),
            "resolved" => log::info!("alert {} resolved", alert.key),
            _ => {}
        }
        self.bus.event(Event::Alert {
            event: event.to_owned(),
            alert: view.clone(),
        });
        // Updates are pushed live but not to webhooks, which hear of an
        // alert when it fires, resolves or is acknowledged.
        if event != "updated" {
            self.webhooks.notify(event, &view, alert.severity());
        }
        // An update not yet written replaces the one before it, so a
        // frequently updated alert cannot crowd the queue out.
        if event == "updated"
            && let Some(c) = self
                .pending
                .iter_mut()
                .skip(self.in_flight)
                .rev()
                .find(|c| c.alert.id == id && c.event == "updated")
        {
            *c = Change {
                alert,
                event,
                at: now_ms(),
                value,
            };
            self.persist(ctx);
            return;
        }
        if self.pending.len() >= MAX_PENDING {
            self.pending.pop_front();
            log::error!("too many alert changes waiting for the database; the oldest was dropped");
        }
        self.pending.push_back(Change {
            alert,
            event,
            at: now_ms(),
            value,
        });
        self.persist(ctx);
        self.trim_history();
    }

    fn fire(
        &mut self,
        key: &str,
        rule: &str,
        severity: Severity,
        message: String,
        value: Option<f64>,
        ctx: &mut Context<Self>,
    ) {
        if let Some(&id) = self.firing.get(key) {
            // Already firing: keep its message and value current.
            if let Some(a) = self.alerts.get_mut(&id)
                && (a.message != message || a.value != value)
            {
                a.message = message;
                a.value = value;
                self.changed(id, "updated", value, ctx);
            }
            return;
        }
        let id = self.next_id;
        self.next_id += 1;
        self.alerts.insert(
            id,
            Alert {
                id,
                key: key.to_owned(),
                rule: rule.to_owned(),
                severity: severity.as_str().to_owned(),
                state: "firing".into(),
                message,
                value,
                fired_at: now_ms(),
                resolved_at: None,
                acked_at: None,
            },
        );
        self.firing.insert(key.to_owned(), id);
        self.changed(id, "fired", value, ctx);
    }

    fn resolve(&mut self, key: &str, value: Option<f64>, ctx: &mut Context<Self>) {
        let Some(id) = self.firing.remove(key) else {
            return;
        };
        if let Some(a) = self.alerts.get_mut(&id) {
            a.state = "resolved".into();
            a.resolved_at = Some(now_ms());
        }
        self.changed(id, "resolved", value, ctx);
    }

    fn trim_history(&mut self) {
        let resolved: Vec<i64> = self
            .alerts
            .values()
            .filter(|a| !a.firing())
            .map(|a| a.id)
            .collect();
        if resolved.len() > self.cfg.history {
            for id in &resolved[..resolved.len() - self.cfg.history] {
                self.alerts.remove(id);
            }
        }
    }

    /// Writes pending changes through the writer, one batch at a time;
    /// on failure they stay queued for the next tick.
    fn persist(&mut self, ctx: &mut Context<Self>) {
        if self.writing || self.pending.is_empty() {
            return;
        }
        self.writing = true;
        let batch: Vec<Change> = self.pending.iter().cloned().collect();
        let n = batch.len();
        self.in_flight = n;
        let writer = self.writer.clone();
        ctx.spawn(
            async move { writer.exec(move |c| store::apply(c, &batch)).await }
                .into_actor(self)
                .map(move |result, act, _| {
                    act.writing = false;
                    act.in_flight = 0;
                    match result {
                        Ok(()) => {
                            act.pending.drain(..n.min(act.pending.len()));
                        }
                        Err(e) => log::debug!("alert changes not stored yet: {e}"),
                    }
                }),
        );
    }

    fn on_reading(&mut self, reading: &SensorReading, ctx: &mut Context<Self>) {
        for r in &reading.readings {
            let key = (r.series.sensor.to_string(), r.series.metric.to_string());
            let Some(indices) = self.by_series.get(&key).cloned() else {
                continue;
            };
            for i in indices {
                let transition = self.rules[i].state.on_value(r.ts_ms, r.value);
                self.apply_rule(i, transition, Some(r.value), ctx);
            }
        }
    }

    /// Applies a rule's transition for a sample (`sample`: the value, none
    /// for a clock tick). While a rule fires, its alert stays current: a
    /// threshold alert follows the worst value seen, a rate alert the
    /// fastest change, a silence alert the length of the silence (renewed
    /// every `silence_ms`, at most every [`SILENCE_UPDATE_MS`]); each update is stored and pushed live as
    /// `updated`.
    fn apply_rule(
        &mut self,
        i: usize,
        transition: Option<Transition>,
        sample: Option<f64>,
        ctx: &mut Context<Self>,
    ) {
        let rule = &self.rules[i];
        let (key, name, severity) = (
            rule.key.clone(),
            rule.config.name.clone(),
            rule.config.severity,
        );
        let kind = rule.config.condition;
        // What the alert shows as its value: the reading for a threshold,
        // the change per minute for a rate, the seconds of silence.
        let shown = match kind {
            ConditionKind::Above | ConditionKind::Below => sample,
            ConditionKind::Rate => rule.state.rate(),
            ConditionKind::Silence => Some((rule.state.silent_for_ms(now_ms()) / 1000) as f64),
        };
        match transition {
            Some(Transition::Fire(_)) => {
                let message = rule.config.describe(shown);
                self.fire(&key, &name, severity, message, shown, ctx);
            }
            Some(Transition::Resolve(v)) => self.resolve(&key, v, ctx),
            None => {
                let (Some(v), Some(&id)) = (shown, self.firing.get(&key)) else {
                    return;
                };
                if !rule.state.is_firing() {
                    return;
                }
                let held = self.alerts.get(&id).and_then(|a| a.value);
                let stale = match (kind, held) {
                    (_, None) => true,
                    (ConditionKind::Above | ConditionKind::Rate, Some(h)) => v > h,
                    (ConditionKind::Below, Some(h)) => v < h,
                    (ConditionKind::Silence, Some(h)) => {
                        let every = rule.config.silence_ms.unwrap_or(0).min(SILENCE_UPDATE_MS);
                        (v - h) * 1000.0 >= every as f64
                    }
                };
                if !stale {
                    return;
                }
                let message = match kind {
                    ConditionKind::Above | ConditionKind::Below => rule.config.describe_peak(v),
                    _ => rule.config.describe(Some(v)),
                };
                self.fire(&key, &name, severity, message, Some(v), ctx);
            }
        }
    }

    fn on_event(&mut self, event: Event, ctx: &mut Context<Self>) {
        if !self.cfg.builtin {
            return;
        }
        match event {
            Event::Supervisor(e) => {
                let key = format!("child_given_up:{}/{}", e.supervisor, e.child);
                match e.event {
                    "gave_up" => self.fire(
                        &key,
                        "child_given_up",
                        Severity::Critical,
                        format!(
                            "{} was given up after repeated failures ({})",
                            e.child,
                            e.detail.unwrap_or_default()
                        ),
                        None,
                        ctx,
                    ),
                    "started" | "restarted" | "revived" => self.resolve(&key, None, ctx),
                    _ => {}
                }
            }
            Event::Writer {
                writable,
                error,
                queued,
                ..
            } => {
                if writable {
                    self.resolve("database_write_failing", None, ctx);
                } else {
                    self.fire(
                        "database_write_failing",
                        "database_write_failing",
                        Severity::Critical,
                        format!(
                            "database writes are failing ({}); {queued} readings held in memory",
                            error.unwrap_or_default()
                        ),
                        Some(queued as f64),
                        ctx,
                    );
                }
            }
            Event::Pacing(change) => {
                if change.to == Level::Critical {
                    self.fire(
                        "pacing_critical",
                        "pacing_critical",
                        Severity::Critical,
                        format!(
                            "pacing is critical ({}); optional sensors are paused",
                            change.why.summary
                        ),
                        change.why.temperature_c,
                        ctx,
                    );
                } else {
                    self.resolve("pacing_critical", None, ctx);
                }
            }
            Event::Breaker(change) => {
                let key = format!("breaker_open:{}", change.breaker);
                match change.to {
                    BreakerState::Open => self.fire(
                        &key,
                        "breaker_open",
                        if change.guards == Guarded::Database {
                            Severity::Critical
                        } else {
                            Severity::Warning
                        },
                        format!(
                            "circuit breaker {} is open ({}); next trial at {}",
                            change.breaker,
                            change.reason,
                            change.next_trial_at.unwrap_or_default()
                        ),
                        Some(change.trips as f64),
                        ctx,
                    ),
                    BreakerState::Closed => self.resolve(&key, None, ctx),
                    BreakerState::HalfOpen => {}
                }
            }
            Event::Memory(m) => {
                if m.above {
                    self.fire(
                        "memory_pressure",
                        "memory_pressure",
                        Severity::Warning,
                        format!(
                            "vigil's memory ({:.1} MiB) is above its soft limit ({:.1} MiB); buffers and caches were shed",
                            m.rss_bytes as f64 / 1048576.0,
                            m.soft_limit_bytes as f64 / 1048576.0
                        ),
                        Some(m.rss_bytes as f64),
                        ctx,
                    );
                } else {
                    self.resolve("memory_pressure", None, ctx);
                }
            }
            Event::StorageCap {
                cap_bytes,
                used_bytes_after,
                pruned_raw_rows,
                met,
                ..
            } => {
                self.cap_in_run = true;
                let mib = |b: u64| b as f64 / 1_048_576.0;
                self.fire(
                    "storage_cap",
                    "storage_cap",
                    if met { Severity::Warning } else { Severity::Critical },
                    format!(
                        "the database exceeded its size cap of {:.0} MiB: {pruned_raw_rows} raw readings pruned before their horizon; {:.1} MiB in use{}",
                        mib(cap_bytes),
                        mib(used_bytes_after),
                        if met { "" } else { ", still over the cap" }
                    ),
                    Some(mib(used_bytes_after)),
                    ctx,
                );
            }
            Event::Maintenance { job, ok, summary } => {
                let key = format!("maintenance_failed:{job}");
                if ok {
                    self.resolve(&key, None, ctx);
                    // A retention run that stayed under the cap ends the cap alert.
                    if job == "retention" && !std::mem::take(&mut self.cap_in_run) {
                        self.resolve("storage_cap", None, ctx);
                    }
                } else {
                    self.fire(
                        &key,
                        "maintenance_failed",
                        Severity::Warning,
                        format!("{job} failed: {summary}"),
                        None,
                        ctx,
                    );
                }
            }
            Event::ReadingsDropped { total, .. } => {
                self.last_drop = now_ms();
                self.fire(
                    "readings_dropped",
                    "readings_dropped",
                    Severity::Warning,
                    format!("readings are being dropped by the overflow policy ({total} so far)"),
                    Some(total as f64),
                    ctx,
                );
            }
            _ => {}
        }
    }

    fn tick(&mut self, ctx: &mut Context<Self>) {
        let now = now_ms();
        for i in 0..self.rules.len() {
            let t = self.rules[i].state.on_tick(now);
            self.apply_rule(i, t, None, ctx);
        }
        if self.firing.contains_key("readings_dropped")
            && now.saturating_sub(self.last_drop) >= ms_i64(self.cfg.drops_quiet_ms)
        {
            self.resolve("readings_dropped", None, ctx);
        }
        self.persist(ctx);
    }

    fn prune(&mut self, ctx: &mut Context<Self>) {
        let before =
            now_ms().saturating_sub(ms_i64(self.cfg.retention_days).saturating_mul(86_400_000));
        let writer = self.writer.clone();
        ctx.spawn(
            async move { writer.exec(move |c| store::prune(c, before)).await }
                .into_actor(self)
                .map(|result, _, _| match result {
                    Ok(n) if n > 0 => log::info!("pruned {n} old resolved alerts"),
                    Ok(_) => {}
                    Err(e) => log::debug!("alert pruning postponed: {e}"),
                }),
        );
    }

    /// Restores state from the database.
    fn restore(&mut self, loaded: Vec<Alert>, max_id: i64) {
        self.next_id = self.next_id.max(max_id + 1);
        for a in loaded {
            if a.firing() {
                self.firing.insert(a.key.clone(), a.id);
                if let Some(r) = self.rules.iter_mut().find(|r| r.key == a.key) {
                    r.state.set_firing();
                }
            }
            self.alerts.insert(a.id, a);
        }
        self.trim_history();
    }
}

impl Actor for AlertManager {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        *self
            .shared
            .current
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = Some(ctx.address());
        let pool = self.pool.clone();
        let recent = self.cfg.history as i64;
        let load = actix_web::rt::task::spawn_blocking(move || {
            let mut conn = pool.get().map_err(|e| e.to_string())?;
            let alerts = store::load(&mut conn, recent).map_err(|e| e.to_string())?;
            let max = store::max_id(&mut conn).map_err(|e| e.to_string())?;
            Ok::<_, String>((alerts, max))
        });
        ctx.wait(load.into_actor(self).map(|loaded, act, ctx| {
            match loaded {
                Ok(Ok((alerts, max))) => act.restore(alerts, max),
                Ok(Err(e)) => log::error!("cannot load stored alerts: {e}"),
                Err(e) => log::error!("cannot load stored alerts: {e}"),
            }
            ctx.add_stream(bus::stream(act.bus.subscribe_readings()));
            ctx.add_stream(bus::stream(act.bus.subscribe_events()));
            ctx.run_interval(TICK, |act, ctx| act.tick(ctx));
            ctx.run_interval(PRUNE_EVERY, |act, ctx| act.prune(ctx));
            act.reporter.started();
        }));
    }

    fn stopped(&mut self, _: &mut Context<Self>) {
        self.reporter.stopped();
    }
}

impl StreamHandler<Delivery<Arc<SensorReading>>> for AlertManager {
    fn handle(&mut self, item: Delivery<Arc<SensorReading>>, ctx: &mut Context<Self>) {
        match item {
            Delivery::Value(r) => self.on_reading(&r, ctx),
            Delivery::Lagged(n) => log::warn!("alert evaluation fell {n} reads behind"),
        }
    }

    fn finished(&mut self, _: &mut Context<Self>) {}
}

impl StreamHandler<Delivery<Event>> for AlertManager {
    fn handle(&mut self, item: Delivery<Event>, ctx: &mut Context<Self>) {
        if let Delivery::Value(e) = item {
            self.on_event(e, ctx);
        }
    }

    fn finished(&mut self, _: &mut Context<Self>) {}
}

impl Handler<GetAlerts> for AlertManager {
    type Result = Vec<AlertView>;

    fn handle(&mut self, GetAlerts(f): GetAlerts, _: &mut Context<Self>) -> Vec<AlertView> {
        self.alerts
            .values()
            .rev()
            .filter(|a| f.state.as_deref().is_none_or(|s| a.state == s))
            .filter(|a| f.severity.is_none_or(|s| a.severity() == s))
            .filter(|a| {
                f.since
                    .is_none_or(|t| a.fired_at >= t || a.resolved_at.is_some_and(|r| r >= t))
            })
            .take(f.limit.max(1))
            .map(Alert::view)
            .collect()
    }
}

impl Handler<LatestPerRule> for AlertManager {
    type Result = Vec<AlertView>;

    fn handle(&mut self, m: LatestPerRule, _: &mut Context<Self>) -> Vec<AlertView> {
        latest_per_rule(self.alerts.values(), m.since)
    }
}

/// The newest alert of each rule among `alerts` (in id order) that
/// changed at or after `since`.
fn latest_per_rule<'a>(
    alerts: impl DoubleEndedIterator<Item = &'a Alert>,
    since: Option<i64>,
) -> Vec<AlertView> {
    let mut seen = std::collections::HashSet::new();
    alerts
        .rev()
        .filter(|a| seen.insert(a.rule.clone()))
        .filter(|a| {
            since.is_none_or(|t| {
                a.fired_at >= t
                    || a.resolved_at.is_some_and(|r| r >= t)
                    || a.acked_at.is_some_and(|r| r >= t)
            })
        })
        .map(Alert::view)
        .collect()
}

impl Handler<Ack> for AlertManager {
    type Result = Option<AlertView>;

    fn handle(&mut self, Ack(id): Ack, ctx: &mut Context<Self>) -> Option<AlertView> {
        let a = self.alerts.get_mut(&id)?;
        if a.acked_at.is_none() {
            a.acked_at = Some(now_ms());
            self.changed(id, "acknowledged", None, ctx);
        }
        self.alerts.get(&id).map(Alert::view)
    }
}

impl Handler<GetRules> for AlertManager {
    type Result = MessageResult<GetRules>;

    fn handle(&mut self, _: GetRules, _: &mut Context<Self>) -> Self::Result {
        MessageResult(RulesView {
            rules: self
                .rules
                .iter()
                .map(|r| RuleView {
                    config: r.config.clone(),
                    key: r.key.clone(),
                    firing: self.firing.contains_key(&r.key),
                })
                .collect(),
            builtin: self.cfg.builtin,
            webhooks: self.webhooks.views(),
            pending_writes: self.pending.len(),
            loaded_at: rfc3339(self.loaded_at),
        })
    }
}

impl Handler<Reload> for AlertManager {
    type Result = usize;

    /// New rules keep the state of unchanged ones (a firing alert stays
    /// firing); alerts of rules that are gone resolve.
    fn handle(&mut self, Reload(cfg): Reload, ctx: &mut Context<Self>) -> usize {
        let now = now_ms();
        let mut fresh = compile(&cfg, &self.system_sensors, now);
        for r in &mut fresh {
            if let Some(old) = self
                .rules
                .iter()
                .find(|o| o.key == r.key && o.config == r.config)
            {
                r.state = old.state.clone();
            }
        }
        let keep: std::collections::HashSet<String> = fresh.iter().map(|r| r.key.clone()).collect();
        let gone: Vec<String> = self
            .rules
            .iter()
            .filter(|r| !keep.contains(&r.key) && self.firing.contains_key(&r.key))
            .map(|r| r.key.clone())
            .collect();
        self.webhooks = Webhooks::new(&cfg.webhooks, &self.guard);
        self.rules = fresh;
        self.shared.keep(&cfg, &self.system_sensors);
        self.cfg = cfg;
        self.loaded_at = now;
        self.index();
        for key in gone {
            self.resolve(&key, None, ctx);
        }
        log::info!("alert rules reloaded: {} rules", self.rules.len());
        self.rules.len()
    }
}

/// The enabled sensors of kind `system` are now these (the built-in memory
/// and disk rules watch each); the rules are compiled again as by a reload.
#[derive(Debug, Clone, Message)]
#[rtype(result = "usize")]
pub struct SystemSensors(pub Vec<String>);

impl Handler<SystemSensors> for AlertManager {
    type Result = usize;

    fn handle(&mut self, SystemSensors(names): SystemSensors, ctx: &mut Context<Self>) -> usize {
        if names == self.system_sensors {
            return self.rules.len();
        }
        self.system_sensors = names;
        let cfg = self.cfg.clone();
        <Self as Handler<Reload>>::handle(self, Reload(cfg), ctx)
    }
}

impl Handler<Stop> for AlertManager {
    type Result = ();

    fn handle(&mut self, _: Stop, ctx: &mut Context<Self>) {
        ctx.stop();
    }
}

/// The supervisor's recipe for the alert manager.
pub fn manager_child(
    cfg: AlertsConfig,
    system_sensors: Vec<String>,
    writer: Arc<WriterShared>,
    pool: ReadPool,
    bus: Bus,
    shared: Arc<AlertsShared>,
    guard: Arc<GuardShared>,
) -> ChildSpec {
    ChildSpec::new("alerts", "alert_manager", true, move |reporter| {
        let (cfg, system_sensors) = shared
            .in_force()
            .unwrap_or_else(|| (cfg.clone(), system_sensors.clone()));
        let addr = AlertManager::new(
            cfg,
            system_sensors,
            writer.clone(),
            pool.clone(),
            bus.clone(),
            shared.clone(),
            guard.clone(),
            reporter,
        )
        .start();
        ChildHandle {
            stop: addr.recipient(),
            supervisor: None,
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(toml_text: &str) -> Result<Condition, String> {
        let r: RuleConfig = toml::from_str(toml_text).map_err(|e| e.to_string())?;
        r.condition().map_err(|e| e.to_string())
    }

    #[test]
    fn rules_are_validated_with_their_keys_named() {
        assert!(rule("name='a'\nsensor='s'\ncondition='above'\nthreshold=5\n").is_ok());
        let e = rule("name='a'\nsensor='s'\ncondition='above'\n").unwrap_err();
        assert!(e.contains("alerts.rules[a].threshold"), "{e}");
        let e =
            rule("name='a'\nsensor='s'\ncondition='above'\nthreshold=5\nclear=6\n").unwrap_err();
        assert!(e.contains("alerts.rules[a].clear"), "{e}");
        let e = rule("name='a'\nsensor='s'\ncondition='silence'\n").unwrap_err();
        assert!(e.contains("silence_ms"), "{e}");
        let e = rule("name='a'\nsensor='s'\ncondition='sideways'\n").unwrap_err();
        assert!(e.contains("sideways"), "{e}");
        for condition in ["above", "rate"] {
            let e = rule(&format!(
                "name='a'\nsensor='s'\ncondition='{condition}'\nthreshold=5\nclear=nan\n"
            ))
            .unwrap_err();
            assert!(e.contains("alerts.rules[a].clear: must be a finite"), "{e}");
        }
    }

    #[test]
    fn huge_spans_mean_never_rather_than_wrapping() {
        let silence = rule(&format!(
            "name='a'\nsensor='s'\ncondition='silence'\nsilence_ms={}\n",
            u64::MAX
        ))
        .unwrap();
        assert_eq!(
            silence,
            Condition::Silence {
                silence_ms: i64::MAX
            }
        );
        let mut state = RuleState::new(silence, ms_i64(u64::MAX), 0);
        assert!(state.on_tick(i64::MAX / 2).is_none(), "never silent");
        let window = rule(&format!(
            "name='a'\nsensor='s'\ncondition='rate'\nthreshold=1\nwindow_ms={}\n",
            u64::MAX
        ))
        .unwrap();
        assert!(matches!(
            window,
            Condition::Rate {
                window_ms: i64::MAX,
                ..
            }
        ));
    }

    #[test]
    fn rules_must_name_configured_sensors() {
        let cfg = AlertsConfig {
            rules: vec![
                toml::from_str("name='a'\nsensor='ghost'\ncondition='above'\nthreshold=1").unwrap(),
            ],
            ..AlertsConfig::default()
        };
        let e = cfg.validate(&["real"]).unwrap_err().to_string();
        assert!(
            e.contains("alerts.rules[a].sensor") && e.contains("ghost"),
            "{e}"
        );
    }

    #[test]
    fn builtin_rules_watch_every_system_sensor() {
        let cfg = AlertsConfig::default();
        let rules = compile(&cfg, &["system".into()], 0);
        let keys: Vec<_> = rules.iter().map(|r| r.key.as_str()).collect();
        assert_eq!(keys, ["memory_high:system/memory", "disk_high:system/disk"]);
        let off = AlertsConfig {
            builtin: false,
            ..AlertsConfig::default()
        };
        assert!(compile(&off, &["system".into()], 0).is_empty());
    }

    #[test]
    fn the_latest_per_rule_is_each_rules_newest_alert_changed_since() {
        let a = |id: i64, rule: &str, fired: i64, resolved: Option<i64>| Alert {
            id,
            key: format!("{rule}:s/m"),
            rule: rule.into(),
            severity: "warning".into(),
            state: if resolved.is_some() {
                "resolved"
            } else {
                "firing"
            }
            .into(),
            message: String::new(),
            value: None,
            fired_at: fired,
            resolved_at: resolved,
            acked_at: None,
        };
        let all = [
            a(1, "hot", 10, Some(20)),
            a(2, "cold", 15, Some(25)),
            a(3, "hot", 30, None),
            a(4, "wet", 5, Some(8)),
        ];
        let ids = |since| {
            latest_per_rule(all.iter(), since)
                .iter()
                .map(|v| v.id)
                .collect::<Vec<_>>()
        };
        assert_eq!(ids(None), [4, 3, 2]);
        // cold resolved at 25; wet changed before; hot's newest fired at 30.
        assert_eq!(ids(Some(22)), [3, 2]);
        assert_eq!(ids(Some(26)), [3]);
        assert_eq!(ids(Some(31)), Vec::<i64>::new());
    }
}
