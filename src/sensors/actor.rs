//! The SensorActor: one per configured sensor; polls its driver on an interval.
//!
//! The driver call leaves the actor thread: it runs on the blocking pool,
//! under `catch_unwind`, with a timeout. A panic or a timeout fails this actor
//! (the supervisor re-creates it, driver and all); the abandoned blocking
//! thread of a hung driver is left to finish on its own. Transient errors are
//! retried at the next tick until too many come in a row; an unavailable
//! source is probed again every `unavailable_retry_ms` without failing.
//!
//! Every read goes through the sensor's circuit breaker, which lives in the
//! guard's registry and so outlives this actor: a read's failure (transient,
//! permanent, timeout, panic) or slowness counts against it, an unavailable
//! source counts nothing. While it is open the actor does not read; it waits
//! for the trial, and never reads sooner than its interval would have it.
//! The breaker only decides *when* to read; what a failure does to the actor
//! (retry, restart) is unchanged. The actor reports itself healthy to its
//! supervisor after its first read that did not fail, so failures the
//! breaker spaces out still count toward giving up (see `supervisor/policy.rs`).
//!
//! Between reads the actor waits its turn under the pacing state it watches
//! (`crate::pacing::wait_turn`): the interval is base × adaptive factor ×
//! pacing multiplier, re-computed whenever the pace changes, and an optional
//! sensor at the critical level does not read until the level drops.

use std::collections::HashMap;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use actix::prelude::*;
use serde::Serialize;
use tokio::sync::watch;
use tokio::time::Instant;

use super::{BuildEnv, Priority, Rejected, Sensor, SensorConfig, SensorError};
use crate::guard::{Call, CircuitBreaker, GuardShared};
use crate::pacing::{AdaptiveTracker, Pace, scale, wait_turn};
use crate::perf::{Op, Perf};
use crate::storage::queue::IngestQueue;
use crate::supervisor::child::panic_message;
use crate::supervisor::{ChildHandle, ChildSpec, ChildState, LifecycleReporter, Stop};
use crate::vocab::bus::{Bus, Event, SensorReading};
use crate::vocab::clock::{now_ms, rfc3339};
use crate::vocab::reading::Value;
use crate::vocab::reading::{Reading, SeriesKey};

/// A value as the API shows it.
#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct ValueView {
    pub metric: String,
    pub value: f64,
    pub unit: String,
}

/// What a sensor has done lately; survives restarts of its actor.
#[derive(Debug, Clone, Default, Serialize)]
pub struct SensorStatus {
    /// False while the driver reports its source unavailable.
    pub available: bool,
    pub unavailable_reason: Option<String>,
    pub last_read_at: Option<String>,
    pub last_values: Vec<ValueView>,
    pub last_error: Option<String>,
    pub last_error_at: Option<String>,
    pub reads: u64,
    pub errors: u64,
    pub consecutive_errors: u32,
    /// Duration of the last completed read.
    pub last_read_ms: f64,
    /// The interval the sensor is polled at now.
    pub effective_interval_ms: u64,
    /// An optional sensor held by pacing at the critical level: no reads.
    pub paused: bool,
    /// The variance-adaptive stretch of the interval (1 when off).
    pub adaptive_factor: f64,
    /// Inputs the driver refused (an MQTT payload that is not a number).
    pub rejected: u64,
    pub last_rejected: Option<String>,
    pub last_rejected_at: Option<String>,
}

/// A sensor's configuration and live status, shared by every generation of
/// its actor and by the API.
pub struct SensorShared {
    pub config: SensorConfig,
    status: Mutex<SensorStatus>,
    produced: AtomicU64,
}

impl SensorShared {
    pub fn new(config: SensorConfig) -> SensorShared {
        let status = SensorStatus {
            available: true,
            effective_interval_ms: config.interval_ms,
            adaptive_factor: 1.0,
            ..SensorStatus::default()
        };
        SensorShared {
            config,
            status: Mutex::new(status),
            produced: AtomicU64::new(0),
        }
    }

    fn lock(&self) -> MutexGuard<'_, SensorStatus> {
        self.status.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn status(&self) -> SensorStatus {
        self.lock().clone()
    }

    /// Values this sensor has handed to the ingest queue.
    pub fn produced(&self) -> u64 {
        self.produced.load(Ordering::Relaxed)
    }

    /// What a running sensor is beyond `running`: its source absent, its
    /// breaker open (`breaker_open`), or held by pacing, in that order.
    pub fn condition(&self, breaker_open: bool) -> Option<ChildState> {
        let s = self.lock();
        if !s.available {
            Some(ChildState::Unavailable)
        } else if breaker_open {
            Some(ChildState::Suspended)
        } else if s.paused {
            Some(ChildState::Paused)
        } else {
            None
        }
    }

    fn record_error(&self, message: &str) -> u32 {
        let mut s = self.lock();
        s.errors += 1;
        s.consecutive_errors += 1;
        s.last_error = Some(message.to_owned());
        s.last_error_at = Some(rfc3339(now_ms()));
        s.consecutive_errors
    }
}

/// The result of one read attempt, as seen from the actor.
enum ReadOutcome {
    Done {
        driver: Option<Box<dyn Sensor>>,
        result: Result<(i64, Vec<Value>), SensorError>,
        rejected: Option<Rejected>,
        took: Duration,
    },
    TimedOut,
    Panicked(String),
}

/// What every sensor actor needs from the rest of the appliance.
#[derive(Clone)]
pub struct SensorDeps {
    pub env: Arc<BuildEnv>,
    /// Where readings go to be stored.
    pub queue: Arc<IngestQueue>,
    /// Where readings and availability changes are announced.
    pub bus: Bus,
    /// Where read durations are recorded.
    pub perf: Arc<Perf>,
    /// The pacing state: every interval is stretched by its multiplier.
    pub pace: watch::Receiver<Pace>,
    /// Where each sensor's circuit breaker lives.
    pub guard: Arc<GuardShared>,
}

/// Polls one sensor. See the module docs.
pub struct SensorActor {
    shared: Arc<SensorShared>,
    deps: SensorDeps,
    reporter: LifecycleReporter,
    driver: Option<Box<dyn Sensor>>,
    sensor: Arc<str>,
    keys: HashMap<String, Arc<SeriesKey>>,
    last_start: Option<Instant>,
    adaptive: Option<AdaptiveTracker>,
    /// `sensor.read.<name>` in the performance monitor.
    read_op: Arc<Op>,
    breaker: Arc<CircuitBreaker>,
}

impl SensorActor {
    pub fn new(
        shared: Arc<SensorShared>,
        deps: SensorDeps,
        reporter: LifecycleReporter,
    ) -> SensorActor {
        let sensor = Arc::from(shared.config.name.as_str());
        let adaptive = shared.config.adaptive.clone().map(AdaptiveTracker::new);
        let read_op = deps.perf.op(&format!("sensor.read.{}", shared.config.name));
        let timeout = Duration::from_millis(shared.config.timeout_ms);
        let breaker = deps.guard.sensor(&shared.config.name, timeout);
        SensorActor {
            read_op,
            breaker,
            shared,
            deps,
            reporter,
            driver: None,
            sensor,
            keys: HashMap::new(),
            last_start: None,
            adaptive,
        }
    }

    fn interval(&self) -> Duration {
        Duration::from_millis(self.shared.config.interval_ms)
    }

    fn tick(&mut self, ctx: &mut Context<Self>) {
        let call = match self.breaker.try_call() {
            Ok(call) => call,
            Err(rejected) => {
                // Open: no read until the trial, then the usual wait.
                log::debug!(
                    "sensor {}: circuit breaker open; next read in {} ms at the earliest",
                    self.sensor,
                    rejected.retry_in.as_millis()
                );
                ctx.run_later(rejected.retry_in, |act, ctx| act.schedule_next(ctx));
                return;
            }
        };
        self.last_start = Some(Instant::now());
        let driver = self.driver.take();
        let config = self.shared.config.driver.clone();
        let env = self.deps.env.clone();
        let timeout = Duration::from_millis(self.shared.config.timeout_ms);
        let read = async move {
            let task = tokio::task::spawn_blocking(move || {
                let started = std::time::Instant::now();
                let attempt = catch_unwind(AssertUnwindSafe(move || {
                    let mut driver = match driver {
                        Some(d) => d,
                        None => match config.build(&env) {
                            Ok(d) => d,
                            Err(e) => return (None, Err(e), None),
                        },
                    };
                    let result = driver.read();
                    let ts = now_ms();
                    let rejected = driver.take_rejected();
                    (Some(driver), result.map(|values| (ts, values)), rejected)
                }));
                (attempt, started.elapsed())
            });
            match tokio::time::timeout(timeout, task).await {
                Err(_) => ReadOutcome::TimedOut,
                Ok(Err(join)) => ReadOutcome::Panicked(join.to_string()),
                Ok(Ok((Err(payload), _))) => ReadOutcome::Panicked(panic_message(&*payload)),
                Ok(Ok((Ok((driver, result, rejected)), took))) => ReadOutcome::Done {
                    driver,
                    result,
                    rejected,
                    took,
                },
            }
        };
        // Dropped with the actor (stopped mid-read), the call counts nothing.
        ctx.spawn(
            read.into_actor(self)
                .map(move |outcome, act, ctx| act.on_outcome(outcome, call, ctx)),
        );
    }

    fn on_outcome(&mut self, outcome: ReadOutcome, call: Call, ctx: &mut Context<Self>) {
        let cfg = &self.shared.config;
        match &outcome {
            ReadOutcome::TimedOut => self
                .read_op
                .record(Duration::from_millis(cfg.timeout_ms), false),
            ReadOutcome::Panicked(_) => self.read_op.record(Duration::ZERO, false),
            ReadOutcome::Done { result, took, .. } => self.read_op.record(*took, result.is_ok()),
        }
        match outcome {
            ReadOutcome::TimedOut => {
                call.finish_after(Duration::from_millis(cfg.timeout_ms), false);
                self.fail(format!("read timed out after {} ms", cfg.timeout_ms), ctx)
            }
            ReadOutcome::Panicked(msg) => {
                call.finish(false);
                self.fail(format!("driver panicked: {msg}"), ctx)
            }
            ReadOutcome::Done {
                driver,
                result,
                rejected,
                took,
            } => {
                self.driver = driver;
                {
                    let mut s = self.shared.lock();
                    s.last_read_ms = took.as_secs_f64() * 1000.0;
                    if let Some(r) = rejected {
                        s.rejected += r.count;
                        s.last_rejected = Some(r.last);
                        s.last_rejected_at = Some(rfc3339(now_ms()));
                    }
                }
                let result = result.and_then(|(ts, values)| check(values).map(|v| (ts, v)));
                match &result {
                    // An absent source says nothing about the driver.
                    Err(SensorError::Unavailable(_) | SensorError::Stale(_)) => drop(call),
                    r => call.finish_after(took, r.is_ok()),
                }
                match result {
                    Ok((ts, values)) => {
                        self.store(ts, values);
                        self.schedule_next(ctx);
                    }
                    Err(SensorError::Transient(msg)) => {
                        let n = self.shared.record_error(&msg);
                        let max = cfg.max_consecutive_errors;
                        if max > 0 && n >= max {
                            self.fail(format!("{n} errors in a row; last: {msg}"), ctx);
                        } else {
                            log::debug!("sensor {}: {msg}", cfg.name);
                            self.schedule_next(ctx);
                        }
                    }
                    Err(SensorError::Permanent(msg)) => self.fail(msg, ctx),
                    Err(e @ (SensorError::Unavailable(_) | SensorError::Stale(_))) => {
                        // Absent is not failing: the spell of failures ends.
                        self.reporter.healthy();
                        // A stale source keeps its driver, which listens,
                        // and is read at its interval; an absent one is
                        // probed again rarely, with a fresh driver.
                        let (reason, stale) = match e {
                            SensorError::Stale(r) => (r, true),
                            SensorError::Unavailable(r)
                            | SensorError::Transient(r)
                            | SensorError::Permanent(r) => (r, false),
                        };
                        if !stale {
                            self.driver = None;
                        }
                        let retry = cfg.unavailable_retry_ms;
                        let changed = {
                            let mut s = self.shared.lock();
                            let changed =
                                s.available || s.unavailable_reason.as_deref() != Some(&reason);
                            s.available = false;
                            s.unavailable_reason = Some(reason.clone());
                            changed
                        };
                        if changed && stale {
                            log::warn!("sensor {} unavailable: {reason}", cfg.name);
                        } else if changed {
                            log::warn!(
                                "sensor {} unavailable: {reason}; probing again every {} s",
                                cfg.name,
                                retry / 1000
                            );
                        }
                        if changed {
                            self.deps.bus.event(Event::SensorAvailability {
                                sensor: cfg.name.clone(),
                                available: false,
                                reason: Some(reason),
                            });
                        }
                        if stale {
                            self.schedule_next(ctx);
                        } else {
                            let retry = Duration::from_millis(retry);
                            self.wait_then_tick(ctx, Some(Instant::now()), retry);
                        }
                    }
                }
            }
        }
    }

    fn store(&mut self, ts: i64, values: Vec<Value>) {
        let mut batch = Vec::with_capacity(values.len());
        for v in &values {
            let key = match self.keys.get(v.metric.as_ref()) {
                Some(k) if *k.unit == *v.unit => k.clone(),
                _ => {
                    let k = Arc::new(SeriesKey {
                        sensor: self.sensor.clone(),
                        metric: Arc::from(v.metric.as_ref()),
                        unit: Arc::from(v.unit.as_ref()),
                    });
                    self.keys.insert(v.metric.to_string(), k.clone());
                    k
                }
            };
            batch.push(Reading {
                series: key,
                ts_ms: v.ts_ms.unwrap_or(ts),
                value: v.value,
            });
        }
        // A read may bring nothing new (a quiet topic): it still counts.
        if !batch.is_empty() {
            self.shared
                .produced
                .fetch_add(batch.len() as u64, Ordering::Relaxed);
            self.deps.bus.reading(Arc::new(SensorReading {
                sensor: self.sensor.clone(),
                ts_ms: ts,
                readings: batch.clone(),
            }));
            self.deps.queue.push(batch);
        }
        self.reporter.healthy();
        let mut s = self.shared.lock();
        if let Some(a) = &mut self.adaptive {
            s.adaptive_factor = a.observe(&values);
        }
        if !s.available {
            log::info!("sensor {} available again", self.sensor);
            self.deps.bus.event(Event::SensorAvailability {
                sensor: self.sensor.to_string(),
                available: true,
                reason: None,
            });
        }
        s.available = true;
        s.unavailable_reason = None;
        s.reads += 1;
        s.consecutive_errors = 0;
        s.last_read_at = Some(rfc3339(ts));
        if values.is_empty() {
            return;
        }
        // The latest value of each metric (a read may hold several instants).
        let mut latest: Vec<ValueView> = Vec::with_capacity(values.len());
        let mut latest_ts: Vec<i64> = Vec::with_capacity(values.len());
        for v in values {
            let at = v.ts_ms.unwrap_or(ts);
            match latest.iter().position(|l| l.metric == v.metric) {
                Some(i) if latest_ts[i] > at => {}
                Some(i) => {
                    latest[i].value = v.value;
                    latest_ts[i] = at;
                }
                None => {
                    latest.push(ValueView {
                        metric: v.metric.into_owned(),
                        value: v.value,
                        unit: v.unit.into_owned(),
                    });
                    latest_ts.push(at);
                }
            }
        }
        s.last_values = latest;
    }

    fn schedule_next(&mut self, ctx: &mut Context<Self>) {
        let factor = self.adaptive.as_ref().map_or(1.0, AdaptiveTracker::factor);
        let from = Some(self.last_start.unwrap_or_else(Instant::now));
        self.wait_then_tick(ctx, from, scale(self.interval(), factor));
    }

    /// Reads again `base` (stretched by the pace) after `from`, or as soon
    /// as pacing allows when `from` is `None`; see `wait_turn`. Status shows
    /// the cadence in force while waiting.
    fn wait_then_tick(&mut self, ctx: &mut Context<Self>, from: Option<Instant>, base: Duration) {
        let optional = self.shared.config.priority == Priority::Optional;
        let shared = self.shared.clone();
        let mut pace = self.deps.pace.clone();
        let wait = async move {
            wait_turn(&mut pace, from, base, optional, |cadence| {
                let mut s = shared.lock();
                if s.paused != cadence.paused {
                    let what = if cadence.paused { "paused" } else { "resumed" };
                    log::debug!("sensor {} {what} by pacing", shared.config.name);
                }
                s.effective_interval_ms = cadence.interval_ms();
                s.paused = cadence.paused;
            })
            .await
        };
        ctx.spawn(wait.into_actor(self).map(|(), act, ctx| act.tick(ctx)));
    }

    fn fail(&mut self, reason: String, ctx: &mut Context<Self>) {
        self.shared.record_error(&reason);
        log::warn!("sensor {} failed: {reason}", self.sensor);
        self.reporter.failed(reason);
        ctx.stop();
    }
}

/// The largest magnitude a reading may have. The rollup tiers keep a sum per
/// bucket, and SQLite stores an overflowed (infinite) sum as NULL, which the
/// schema refuses; with every value within ±1e300, a bucket of up to 10^8
/// readings still sums to a finite number.
pub const MAX_ABS_VALUE: f64 = 1e300;

/// A read must give finite numbers (SQLite would store NaN as NULL) within
/// [`MAX_ABS_VALUE`], and name each metric once per instant.
fn check(values: Vec<Value>) -> Result<Vec<Value>, SensorError> {
    for (i, v) in values.iter().enumerate() {
        if !(v.value.is_finite() && v.value.abs() <= MAX_ABS_VALUE) {
            return Err(SensorError::Transient(format!(
                "driver returned {} for `{}`",
                v.value, v.metric
            )));
        }
        if values[..i]
            .iter()
            .any(|w| w.metric == v.metric && w.ts_ms == v.ts_ms)
        {
            return Err(SensorError::Transient(format!(
                "driver returned `{}` twice for one instant",
                v.metric
            )));
        }
    }
    Ok(values)
}

impl Actor for SensorActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        self.reporter.started();
        // The first read is due at once, unless pacing pauses this sensor.
        self.wait_then_tick(ctx, None, self.interval());
    }

    fn stopped(&mut self, _: &mut Context<Self>) {
        // Not reading because stopped, not because pacing holds it.
        self.shared.lock().paused = false;
        self.reporter.stopped();
    }
}

impl Handler<Stop> for SensorActor {
    type Result = ();

    /// Stops polling. A read in progress is abandoned: its values would be
    /// produced after the stop was asked for.
    fn handle(&mut self, _: Stop, ctx: &mut Context<Self>) {
        ctx.stop();
    }
}

/// The supervisor's recipe for one sensor.
pub fn sensor_child(shared: Arc<SensorShared>, deps: SensorDeps) -> ChildSpec {
    let name = shared.config.name.clone();
    let essential = shared.config.priority == Priority::Essential;
    let enabled = shared.config.enabled;
    let timeout = Duration::from_millis(shared.config.timeout_ms);
    let seen = shared.clone();
    let guard = deps.guard.clone();
    let spec = ChildSpec::new(name.clone(), "sensor", essential, move |reporter| {
        let addr = SensorActor::new(shared.clone(), deps.clone(), reporter).start();
        ChildHandle {
            stop: addr.recipient(),
            supervisor: None,
        }
    });
    if !enabled {
        // Shown in the tree as `disabled`; never started, so no breaker.
        return spec.disabled();
    }
    let breaker = guard.sensor(&name, timeout);
    spec.with_health(move || seen.condition(breaker.state() == "open"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn non_finite_and_duplicate_values_are_refused() {
        assert!(check(vec![Value::new("a", 1.0, "")]).is_ok());
        assert!(check(vec![Value::new("a", f64::NAN, "")]).is_err());
        assert!(check(vec![Value::new("a", f64::INFINITY, "")]).is_err());
        assert!(check(vec![Value::new("a", -MAX_ABS_VALUE, "")]).is_ok());
        assert!(check(vec![Value::new("a", f64::MAX, "")]).is_err());
        assert!(check(vec![Value::new("a", 1.0, ""), Value::new("a", 2.0, "")]).is_err());
        // The same metric at two recorded instants is two readings.
        assert!(
            check(vec![
                Value::new("a", 1.0, "").at(10),
                Value::new("a", 0.0, "").at(20)
            ])
            .is_ok()
        );
    }
}
