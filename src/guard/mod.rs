//! Self-protection: circuit breakers around what can fail slowly or
//! repeatedly (database commits, each sensor's driver, each webhook URL),
//! rate limits on what clients can ask (HTTP requests per client, expensive
//! admin operations), and a guard on the process's own memory.
//!
//! [`GuardShared`] holds all of it and outlives every actor: the writer,
//! sensor actors and webhook deliveries take [`CircuitBreaker`]s from its
//! registry by name, so a breaker's history survives restarts of the actor
//! that uses it. The `Guard` actor (`crate::shed`), a supervised child of
//! the root, does the periodic work: it forgets idle rate-limiter clients and
//! watches memory. Every breaker transition is logged and published on the
//! bus (`Event::Breaker`), which the live feed forwards and the alert manager
//! turns into `breaker_open` alerts; `GET /api/guards` shows the lot.
//!
//! The decisions themselves are pure and unit-tested: [`breaker`] (the state
//! machine), [`limit`] (client addresses, trimming, overflow), [`memory`]
//! (hysteresis).

pub mod breaker;
pub mod client;
pub mod config;
pub mod limit;
pub mod memory;
pub mod trim;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use serde::Serialize;
use tokio::time::Instant;

use crate::vocab::bus::{Bus, Event};
use crate::vocab::clock::{ms_after, now_ms, rfc3339};
use crate::vocab::guard::{BreakerChange, BreakerState as State, Guarded};
use breaker::{Breaker, Rejected, Ticket, Transition};
pub use config::{BreakerConfig, GuardConfig};
use limit::{ClientLimiter, ClientLimiterView, OpLimiter, OpLimiterView, Throttled};
use memory::MemoryWatch;

/// A breaker as `GET /api/guards` shows it.
#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct BreakerView {
    pub name: String,
    pub guards: Guarded,
    pub subject: String,
    /// `closed`, `open`, `half_open`, or `disabled`.
    pub state: &'static str,
    /// Percent of the calls in the window (the trial calls in half-open);
    /// null without calls.
    pub failure_rate: Option<f64>,
    pub slow_rate: Option<f64>,
    pub calls_in_window: usize,
    pub failed_in_window: usize,
    pub slow_in_window: usize,
    pub window: usize,
    pub min_calls: usize,
    pub failure_rate_threshold: f64,
    pub slow_call_rate_threshold: f64,
    pub slow_call_ms: u64,
    pub trips: u64,
    pub consecutive_trips: u32,
    pub rejected: u64,
    pub next_trial_at: Option<String>,
    pub next_trial_in_ms: Option<u64>,
    pub trials_in_flight: u32,
    pub last_change_at: Option<String>,
    pub last_reason: Option<String>,
}

/// One named breaker: the pure [`Breaker`] behind a lock, announcing its
/// transitions. Cheap to share (`Arc`).
pub struct CircuitBreaker {
    name: String,
    guards: Guarded,
    subject: String,
    enabled: bool,
    machine: Mutex<Breaker>,
    last_change: Mutex<Option<(i64, String)>>,
    bus: Bus,
}

impl CircuitBreaker {
    fn new(
        guards: Guarded,
        subject: &str,
        cfg: &BreakerConfig,
        timeout: Duration,
        bus: Bus,
    ) -> Self {
        CircuitBreaker {
            name: breaker_name(guards, subject),
            guards,
            subject: subject.to_owned(),
            enabled: cfg.enabled,
            machine: Mutex::new(Breaker::new(cfg.policy(timeout))),
            last_change: Mutex::new(None),
            bus,
        }
    }

    fn lock(&self) -> MutexGuard<'_, Breaker> {
        // Every method leaves the machine consistent before it can panic.
        self.machine.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Asks to make one call now. Finish the returned [`Call`] with its
    /// outcome; dropping it unfinished counts nothing.
    pub fn try_call(self: &Arc<Self>) -> Result<Call, Rejected> {
        if !self.enabled {
            return Ok(Call {
                breaker: self.clone(),
                ticket: None,
                started: Instant::now(),
            });
        }
        let acquired = self.lock().try_acquire(Instant::now());
        let (ticket, transition) = acquired?;
        if let Some(t) = transition {
            self.announce(t);
        }
        Ok(Call {
            breaker: self.clone(),
            ticket: Some(ticket),
            started: Instant::now(),
        })
    }

    /// How long until a trial may go, while the breaker is open and waiting
    /// (without asking for a call).
    pub fn open_for(&self) -> Option<Duration> {
        if !self.enabled {
            return None;
        }
        self.lock().open_for(Instant::now())
    }

    /// `closed`, `open`, `half_open` or `disabled`.
    pub fn state(&self) -> &'static str {
        if self.enabled {
            self.lock().state().as_str()
        } else {
            "disabled"
        }
    }

    fn finish(&self, ticket: Ticket, took: Duration, ok: bool) {
        let t = self.lock().on_result(ticket, Instant::now(), took, ok);
        if let Some(t) = t {
            self.announce(t);
        }
    }

    fn release(&self, ticket: Ticket) {
        self.lock().on_release(ticket);
    }

    /// Logs a transition and publishes it.
    fn announce(&self, t: Transition) {
        let snap = self.lock().snapshot(Instant::now());
        let next_trial_at = snap.next_trial_in.map(|d| rfc3339(ms_after(now_ms(), d)));
        match t.to {
            State::Open => log::warn!("circuit breaker {} open: {}", self.name, t.reason),
            State::HalfOpen => log::info!("circuit breaker {} half-open: {}", self.name, t.reason),
            State::Closed => log::info!("circuit breaker {} closed: {}", self.name, t.reason),
        }
        *self.last_change.lock().unwrap_or_else(|p| p.into_inner()) =
            Some((now_ms(), t.reason.clone()));
        self.bus.event(Event::Breaker(BreakerChange {
            breaker: self.name.clone(),
            guards: self.guards,
            subject: self.subject.clone(),
            from: t.from,
            to: t.to,
            reason: t.reason,
            trips: snap.trips,
            next_trial_at,
        }));
    }

    pub fn view(&self) -> BreakerView {
        let (snap, policy) = {
            let m = self.lock();
            (m.snapshot(Instant::now()), *m.policy())
        };
        let last = self
            .last_change
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        BreakerView {
            name: self.name.clone(),
            guards: self.guards,
            subject: self.subject.clone(),
            state: self.state(),
            failure_rate: snap.rates.failure_rate(),
            slow_rate: snap.rates.slow_rate(),
            calls_in_window: snap.rates.calls,
            failed_in_window: snap.rates.failed,
            slow_in_window: snap.rates.slow,
            window: policy.window,
            min_calls: policy.min_calls,
            failure_rate_threshold: policy.failure_rate,
            slow_call_rate_threshold: policy.slow_rate,
            slow_call_ms: policy.slow_call.as_millis() as u64,
            trips: snap.trips,
            consecutive_trips: snap.consecutive_trips,
            rejected: snap.rejected,
            next_trial_at: snap.next_trial_in.map(|d| rfc3339(ms_after(now_ms(), d))),
            next_trial_in_ms: snap.next_trial_in.map(|d| d.as_millis() as u64),
            trials_in_flight: snap.trials_in_flight,
            last_change_at: last.as_ref().map(|(t, _)| rfc3339(*t)),
            last_reason: last.map(|(_, r)| r),
        }
    }
}

/// One permitted call. Report how it went with [`Call::finish`] (or
/// [`Call::finish_after`] with a duration measured by the caller); dropped
/// unfinished, it counts nothing and frees its trial slot.
pub struct Call {
    breaker: Arc<CircuitBreaker>,
    ticket: Option<Ticket>,
    started: Instant,
}

impl Call {
    /// The call is over: `ok` or failed, taking the time since it was
    /// permitted.
    pub fn finish(self, ok: bool) {
        let took = self.started.elapsed();
        self.finish_after(took, ok);
    }

    /// The call is over and took `took`.
    pub fn finish_after(mut self, took: Duration, ok: bool) {
        if let Some(ticket) = self.ticket.take() {
            self.breaker.finish(ticket, took, ok);
        }
    }
}

impl Drop for Call {
    fn drop(&mut self) {
        if let Some(ticket) = self.ticket.take() {
            self.breaker.release(ticket);
        }
    }
}

fn breaker_name(guards: Guarded, subject: &str) -> String {
    match guards {
        Guarded::Database => "database".into(),
        _ => format!("{}:{subject}", guards.prefix()),
    }
}

/// Every breaker by name. Taking one that exists returns it, history and
/// all; so a restarted actor continues where its predecessor left off.
pub struct Breakers {
    map: Mutex<BTreeMap<String, Arc<CircuitBreaker>>>,
    bus: Bus,
}

impl Breakers {
    fn lock(&self) -> MutexGuard<'_, BTreeMap<String, Arc<CircuitBreaker>>> {
        self.map.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The breaker for `subject`, created with `cfg` (and the call's own
    /// `timeout`, for the slow-call duration) if it does not exist yet.
    pub fn get_or_create(
        &self,
        guards: Guarded,
        subject: &str,
        cfg: &BreakerConfig,
        timeout: Duration,
    ) -> Arc<CircuitBreaker> {
        self.lock()
            .entry(breaker_name(guards, subject))
            .or_insert_with(|| {
                Arc::new(CircuitBreaker::new(
                    guards,
                    subject,
                    cfg,
                    timeout,
                    self.bus.clone(),
                ))
            })
            .clone()
    }

    /// The breaker called `name` (`database`, `sensor:<name>`, ...).
    pub fn get(&self, name: &str) -> Option<Arc<CircuitBreaker>> {
        self.lock().get(name).cloned()
    }

    pub fn all(&self) -> Vec<Arc<CircuitBreaker>> {
        self.lock().values().cloned().collect()
    }

    /// Drops the breaker called `name`: its subject is gone for good (a
    /// sensor removed from the config). A user still holding it keeps its
    /// copy; a new user starts a fresh history.
    pub fn forget(&self, name: &str) -> bool {
        self.lock().remove(name).is_some()
    }
}

/// The memory guard as the API shows it.
#[derive(Debug, Clone, Default, Serialize, schemars::JsonSchema)]
pub struct MemoryView {
    pub enabled: bool,
    pub soft_limit_bytes: u64,
    pub rss_bytes: Option<u64>,
    pub above_soft_limit: bool,
    /// Times buffers and caches were shed.
    pub sheds: u64,
    pub last_shed_at: Option<String>,
    pub checked_at: Option<String>,
}

/// Everything `GET /api/guards` shows.
#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct GuardsView {
    pub breakers: Vec<BreakerView>,
    pub http: ClientLimiterView,
    pub admin: OpLimiterView,
    pub memory: MemoryView,
}

/// The guards' state, shared by everything that uses them. See the module
/// docs.
pub struct GuardShared {
    pub config: GuardConfig,
    pub breakers: Breakers,
    /// Per-client limit on HTTP requests.
    pub http: ClientLimiter,
    /// The shared limit on expensive admin operations.
    pub admin: OpLimiter,
    memory: Mutex<(MemoryWatch, MemoryView)>,
}

impl GuardShared {
    /// Built from a validated config.
    pub fn new(config: GuardConfig, bus: Bus) -> GuardShared {
        let proxies = config.http.proxies().unwrap_or_else(|e| {
            log::error!("{e}; X-Forwarded-For will not be trusted");
            Vec::new()
        });
        let soft = config.memory.soft_limit_mib.saturating_mul(1024 * 1024);
        GuardShared {
            breakers: Breakers {
                map: Mutex::default(),
                bus,
            },
            http: ClientLimiter::new(&config.http, proxies),
            admin: OpLimiter::new(&config.admin),
            memory: Mutex::new((
                MemoryWatch::new(soft),
                MemoryView {
                    enabled: soft > 0,
                    soft_limit_bytes: soft,
                    ..MemoryView::default()
                },
            )),
            config,
        }
    }

    /// The breaker around the writer's commits.
    pub fn database(&self, busy_timeout: Duration) -> Arc<CircuitBreaker> {
        self.breakers.get_or_create(
            Guarded::Database,
            "database",
            &self.config.database,
            busy_timeout,
        )
    }

    /// The breaker around one sensor's reads.
    pub fn sensor(&self, name: &str, timeout: Duration) -> Arc<CircuitBreaker> {
        self.breakers
            .get_or_create(Guarded::Sensor, name, &self.config.sensors, timeout)
    }

    /// Forgets the breaker of a sensor removed from the config.
    pub fn forget_sensor(&self, name: &str) -> bool {
        self.breakers.forget(&breaker_name(Guarded::Sensor, name))
    }

    /// The breaker around deliveries to one webhook URL.
    pub fn webhook(&self, url: &str, timeout: Duration) -> Arc<CircuitBreaker> {
        self.breakers
            .get_or_create(Guarded::Webhook, url, &self.config.webhooks, timeout)
    }

    /// The breaker around connection attempts to one MQTT broker.
    pub fn broker(&self, url: &str, timeout: Duration) -> Arc<CircuitBreaker> {
        self.breakers
            .get_or_create(Guarded::Broker, url, &self.config.brokers, timeout)
    }

    /// The hook every expensive admin operation (reload, restart, optimize,
    /// backup, ...) calls before doing anything: one shared bucket, so no
    /// client, however authorised, can make vigil do them back to back.
    pub fn admit_expensive(&self, op: &str) -> Result<(), Throttled> {
        self.admin.admit(op)
    }

    /// Feeds an RSS reading to the memory guard (the Guard actor does).
    pub fn observe_memory(&self, rss: u64) -> memory::Verdict {
        let mut m = self.memory.lock().unwrap_or_else(|p| p.into_inner());
        let (watch, view) = &mut *m;
        let verdict = watch.observe(rss, Instant::now());
        let now = rfc3339(now_ms());
        view.rss_bytes = Some(rss);
        view.above_soft_limit = watch.above();
        view.sheds = watch.sheds();
        view.checked_at = Some(now.clone());
        if verdict.shed {
            view.last_shed_at = Some(now);
        }
        verdict
    }

    pub fn memory(&self) -> MemoryView {
        self.memory
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .1
            .clone()
    }

    pub fn view(&self) -> GuardsView {
        GuardsView {
            breakers: self.breakers.all().iter().map(|b| b.view()).collect(),
            http: self.http.view(),
            admin: self.admin.view(),
            memory: self.memory(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shared() -> (GuardShared, tokio::sync::broadcast::Receiver<Event>) {
        let bus = Bus::new();
        let rx = bus.subscribe_events();
        let mut cfg = GuardConfig::default();
        cfg.sensors.min_calls = 2;
        cfg.sensors.window = 2;
        (GuardShared::new(cfg, bus), rx)
    }

    fn changes(rx: &mut tokio::sync::broadcast::Receiver<Event>) -> Vec<BreakerChange> {
        let mut out = Vec::new();
        while let Ok(e) = rx.try_recv() {
            if let Event::Breaker(c) = e {
                out.push(c);
            }
        }
        out
    }

    #[test]
    fn breakers_are_shared_by_name_and_announce_their_transitions() {
        let (g, mut rx) = shared();
        let a = g.sensor("flaky", Duration::from_secs(2));
        let again = g.sensor("flaky", Duration::from_secs(9));
        assert!(
            Arc::ptr_eq(&a, &again),
            "one breaker per sensor, across restarts"
        );
        a.try_call().unwrap().finish(false);
        assert!(changes(&mut rx).is_empty());
        again.try_call().unwrap().finish(false);
        let c = changes(&mut rx);
        assert_eq!(c.len(), 1);
        assert_eq!((c[0].from, c[0].to), (State::Closed, State::Open));
        assert_eq!(c[0].breaker, "sensor:flaky");
        assert!(c[0].next_trial_at.is_some());
        assert!(a.try_call().is_err());
        assert!(a.open_for().is_some());
        let v = g.view();
        assert_eq!(v.breakers.len(), 1);
        assert_eq!(v.breakers[0].state, "open");
        assert_eq!(v.breakers[0].trips, 1);
        assert_eq!(v.breakers[0].rejected, 1);
        assert!(
            v.breakers[0]
                .last_reason
                .as_deref()
                .unwrap()
                .contains("failure rate")
        );
        let json = serde_json::to_value(Event::Breaker(c[0].clone())).unwrap();
        assert_eq!(json["kind"], "breaker");
        assert_eq!(json["guards"], "sensor");
        assert_eq!(json["to"], "open");
    }

    #[test]
    fn an_unfinished_call_counts_nothing() {
        let (g, mut rx) = shared();
        let b = g.sensor("s", Duration::from_secs(1));
        for _ in 0..5 {
            drop(b.try_call().unwrap());
        }
        assert_eq!(b.view().calls_in_window, 0);
        assert_eq!(b.state(), "closed");
        assert!(changes(&mut rx).is_empty());
    }

    #[test]
    fn a_disabled_breaker_permits_everything_and_counts_nothing() {
        let bus = Bus::new();
        let mut cfg = GuardConfig::default();
        cfg.webhooks.enabled = false;
        let g = GuardShared::new(cfg, bus);
        let b = g.webhook("http://x/", Duration::from_secs(1));
        for _ in 0..20 {
            b.try_call().unwrap().finish(false);
        }
        assert_eq!(b.state(), "disabled");
        assert_eq!(b.view().calls_in_window, 0);
        assert_eq!(b.open_for(), None);
    }
}
