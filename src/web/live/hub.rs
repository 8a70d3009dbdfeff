//! The LiveHub actor: subscribes to the event bus, batches readings per
//! throttle window and fans them out to every session, serialising each
//! batch once per distinct subscription; status events go out at once.
//!
//! Throttling is leading-edge: a reading after a quiet window is sent
//! immediately; readings within a window of the last send wait for the
//! window's end and go out together. So sparse updates are not delayed and
//! dense ones cost one message per window.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use actix::prelude::*;
use tokio::time::Instant;

use super::outbox::Outgoing;
use super::protocol::{alert_text, readings_body, status_text};
use super::{Deliver, LiveShared};
use crate::supervisor::{ChildHandle, ChildSpec, LifecycleReporter, Stop};
use crate::vocab::bus::{self, Bus, Delivery, Event, SensorReading};

/// Fans readings and events out to WebSocket sessions.
pub struct LiveHub {
    shared: Arc<LiveShared>,
    bus: Bus,
    reporter: LifecycleReporter,
    pending: Vec<Arc<SensorReading>>,
    last_flush: Option<Instant>,
    flush_scheduled: bool,
    seq: u64,
}

impl LiveHub {
    pub fn new(shared: Arc<LiveShared>, bus: Bus, reporter: LifecycleReporter) -> LiveHub {
        LiveHub {
            shared,
            bus,
            reporter,
            pending: Vec::new(),
            last_flush: None,
            flush_scheduled: false,
            seq: 0,
        }
    }

    fn window(&self) -> Duration {
        Duration::from_millis(self.shared.config.throttle_ms)
    }

    fn on_reading(&mut self, reading: Arc<SensorReading>, ctx: &mut Context<Self>) {
        self.pending.push(reading);
        if self.flush_scheduled {
            return;
        }
        let now = Instant::now();
        match self.last_flush {
            Some(last) if now < last + self.window() => {
                self.flush_scheduled = true;
                ctx.run_later(last + self.window() - now, |act, _| {
                    act.flush_scheduled = false;
                    act.flush();
                });
            }
            _ => self.flush(),
        }
    }

    /// Sends everything pending: one body per distinct subscription, shared
    /// by all sessions with that subscription.
    fn flush(&mut self) {
        if self.pending.is_empty() {
            return;
        }
        self.last_flush = Some(Instant::now());
        self.seq += 1;
        let pending = std::mem::take(&mut self.pending);
        let sent_us = chrono::Utc::now().timestamp_micros();
        let stats = &self.shared.stats;
        stats.batches.fetch_add(1, Ordering::Relaxed);
        for (subscription, sessions) in self.shared.groups() {
            let readings = pending.iter().flat_map(|r| r.readings.iter());
            let Some((body, updates)) =
                readings_body(readings, |s| subscription.wants(s), self.seq, sent_us)
            else {
                continue;
            };
            let body: Arc<str> = body.into();
            for s in sessions {
                s.do_send(Deliver::Send(Outgoing::Readings {
                    body: body.clone(),
                    updates,
                }));
            }
        }
    }

    fn on_event(&mut self, event: Event) {
        let text: Arc<str> = match &event {
            Event::Alert { event, alert } => alert_text(event, alert),
            other => status_text(other),
        }
        .into();
        for s in self.shared.all() {
            s.do_send(Deliver::Send(Outgoing::Text(text.clone())));
        }
    }
}

impl Actor for LiveHub {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.add_stream(bus::stream(self.bus.subscribe_readings()));
        ctx.add_stream(bus::stream(self.bus.subscribe_events()));
        self.reporter.started();
    }

    fn stopped(&mut self, _: &mut Context<Self>) {
        self.reporter.stopped();
    }
}

impl StreamHandler<Delivery<Arc<SensorReading>>> for LiveHub {
    fn handle(&mut self, item: Delivery<Arc<SensorReading>>, ctx: &mut Context<Self>) {
        match item {
            Delivery::Value(r) => self.on_reading(r, ctx),
            Delivery::Lagged(n) => {
                self.shared.stats.hub_lagged.fetch_add(n, Ordering::Relaxed);
                log::warn!("live feed fell {n} reads behind; they were not sent live");
            }
        }
    }

    fn finished(&mut self, _: &mut Context<Self>) {}
}

impl StreamHandler<Delivery<Event>> for LiveHub {
    fn handle(&mut self, item: Delivery<Event>, _: &mut Context<Self>) {
        match item {
            Delivery::Value(e) => self.on_event(e),
            Delivery::Lagged(n) => {
                self.shared.stats.hub_lagged.fetch_add(n, Ordering::Relaxed);
            }
        }
    }

    fn finished(&mut self, _: &mut Context<Self>) {}
}

impl Handler<Stop> for LiveHub {
    type Result = ();

    /// Sends what is pending and stops. Sessions stay registered for the
    /// next hub instance (shutdown closes them separately).
    fn handle(&mut self, _: Stop, ctx: &mut Context<Self>) {
        self.flush();
        ctx.stop();
    }
}

/// The supervisor's recipe for the hub.
pub fn hub_child(shared: Arc<LiveShared>, bus: Bus) -> ChildSpec {
    ChildSpec::new("live", "live_hub", true, move |reporter| {
        let addr = LiveHub::new(shared.clone(), bus.clone(), reporter).start();
        ChildHandle {
            stop: addr.recipient(),
            supervisor: None,
        }
    })
}
