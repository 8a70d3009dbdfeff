//! The ThermalWatchdog and the LoadMonitor: two supervised actors of one
//! shape, a [`Monitor`] polling a blocking [`Probe`] and handing each
//! reading to the [`PacingShared`] state.
//!
//! They are separate actors rather than one so that each has its own
//! cadence and failures: a hung `vcgencmd` cannot stop load sampling, and
//! a load source that panics cannot blind the watchdog. The probe runs on
//! the blocking pool under a timeout; a timeout or a panic fails the actor
//! and its supervisor re-creates it with a fresh probe. What the monitors
//! learn lives in `PacingShared`, which outlives every instance.

use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use tokio::time::Instant;

use super::load::{LoadError, LoadSample, LoadSource, LoadSourceFactory};
use super::shared::{PROBE_TIMEOUT, PacingShared};
use super::thermal::{ThermalProbe, ThermalReading};
use crate::supervisor::child::panic_message;
use crate::supervisor::{ChildHandle, ChildSpec, LifecycleReporter, Stop};

/// Something a monitor reads off the actor thread.
pub trait Probe: Send + Unpin + 'static {
    type Reading: Send + 'static;
    /// What the monitor is called in logs and the supervision tree.
    const NAME: &'static str;
    /// Reads once. Blocking.
    fn read(&mut self, now: Instant) -> Self::Reading;
    /// Hands a reading to the pacing state.
    fn deliver(shared: &PacingShared, reading: Self::Reading, now: Instant);
}

impl Probe for ThermalProbe {
    type Reading = ThermalReading;
    const NAME: &'static str = "thermal_watchdog";

    fn read(&mut self, now: Instant) -> ThermalReading {
        ThermalProbe::read(self, now)
    }

    fn deliver(shared: &PacingShared, reading: ThermalReading, now: Instant) {
        shared.observe_thermal(reading, now);
    }
}

/// The load monitor's probe: a [`LoadSource`].
pub struct LoadProbe(pub Box<dyn LoadSource>);

impl Probe for LoadProbe {
    type Reading = Result<LoadSample, LoadError>;
    const NAME: &'static str = "load_monitor";

    fn read(&mut self, _: Instant) -> Self::Reading {
        self.0.sample()
    }

    fn deliver(shared: &PacingShared, reading: Self::Reading, now: Instant) {
        shared.observe_load(reading, now);
    }
}

/// Polls a probe every `interval` (measured from the end of each read),
/// the first time `first_poll` after starting.
pub struct Monitor<P: Probe> {
    shared: Arc<PacingShared>,
    reporter: LifecycleReporter,
    probe: Option<P>,
    interval: Duration,
    first_poll: Duration,
}

/// Temperature and throttling → pacing.
pub type ThermalWatchdog = Monitor<ThermalProbe>;
/// CPU, load and memory → pacing.
pub type LoadMonitor = Monitor<LoadProbe>;

impl<P: Probe> Monitor<P> {
    pub fn new(
        shared: Arc<PacingShared>,
        reporter: LifecycleReporter,
        probe: P,
        interval: Duration,
        first_poll: Duration,
    ) -> Monitor<P> {
        Monitor {
            shared,
            reporter,
            probe: Some(probe),
            interval,
            first_poll,
        }
    }

    fn poll(&mut self, ctx: &mut Context<Self>) {
        let Some(mut probe) = self.probe.take() else {
            return;
        };
        let now = Instant::now();
        let task = tokio::task::spawn_blocking(move || {
            let reading = probe.read(now);
            (probe, reading)
        });
        let read = async move { tokio::time::timeout(PROBE_TIMEOUT, task).await };
        ctx.spawn(
            read.into_actor(self)
                .map(|outcome, act, ctx| match outcome {
                    Err(_) => act.fail(
                        format!("read timed out after {} ms", PROBE_TIMEOUT.as_millis()),
                        ctx,
                    ),
                    Ok(Err(join)) if join.is_panic() => {
                        let msg = panic_message(&*join.into_panic());
                        act.fail(format!("probe panicked: {msg}"), ctx)
                    }
                    Ok(Err(join)) => act.fail(format!("probe task failed: {join}"), ctx),
                    Ok(Ok((probe, reading))) => {
                        act.probe = Some(probe);
                        P::deliver(&act.shared, reading, Instant::now());
                        ctx.run_later(act.interval, |act, ctx| act.poll(ctx));
                    }
                }),
        );
    }

    fn fail(&mut self, reason: String, ctx: &mut Context<Self>) {
        log::warn!("{} failed: {reason}", P::NAME);
        self.reporter.failed(reason);
        ctx.stop();
    }
}

impl<P: Probe> Actor for Monitor<P> {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        self.reporter.started();
        ctx.run_later(self.first_poll, |act, ctx| act.poll(ctx));
    }

    fn stopped(&mut self, _: &mut Context<Self>) {
        self.reporter.stopped();
    }
}

impl<P: Probe> Handler<Stop> for Monitor<P> {
    type Result = ();

    /// Stops polling; a read in progress is abandoned.
    fn handle(&mut self, _: Stop, ctx: &mut Context<Self>) {
        ctx.stop();
    }
}

/// The supervisor's recipe for the thermal watchdog.
pub fn thermal_watchdog_child(shared: Arc<PacingShared>) -> ChildSpec {
    ChildSpec::new(ThermalProbe::NAME, "pacing", false, move |reporter| {
        let config = shared.config();
        let interval = Duration::from_millis(config.watchdog_interval_ms);
        let probe = ThermalProbe::new(&config);
        let addr =
            ThermalWatchdog::new(shared.clone(), reporter, probe, interval, Duration::ZERO).start();
        ChildHandle {
            stop: addr.recipient(),
            supervisor: None,
        }
    })
}

/// The supervisor's recipe for the load monitor; every instance gets a
/// fresh source from `source`. Its first sample waits one interval, so
/// that it measures the appliance running rather than starting up.
pub fn load_monitor_child(shared: Arc<PacingShared>, source: LoadSourceFactory) -> ChildSpec {
    ChildSpec::new(LoadProbe::NAME, "pacing", false, move |reporter| {
        let interval = Duration::from_millis(shared.config().load_interval_ms);
        let probe = LoadProbe(source());
        let addr = LoadMonitor::new(shared.clone(), reporter, probe, interval, interval).start();
        ChildHandle {
            stop: addr.recipient(),
            supervisor: None,
        }
    })
}
