//! The `MqttBridge` actor: one connection to the broker at a time, each
//! with a fresh client, behind the broker's circuit breaker and a
//! reconnect backoff; live readings from the bus, replay from storage
//! after any gap (see `position.rs`).
//!
//! The connection loop runs on the actor's runtime as one task; the
//! client's event loop runs in a task of its own and hands its events
//! over a bounded channel, so a broker that stops reading stalls only the
//! event loop. Live publishing never waits: a publish that does not fit
//! in the client's queue is dropped, counted, and replayed from storage.

use std::collections::{HashMap, HashSet, VecDeque};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use actix::prelude::*;
use rumqttc::{
    AsyncClient, Event as MqttEvent, LastWill, MqttOptions, Outgoing, Packet, QoS, Transport,
};
use serde_json::json;
use tokio::sync::{broadcast, mpsc, watch};

use super::MqttShared;
use super::alerts::{AlertGap, Since, alert_payload, event_of};
use super::config::{MqttSettings, topic_level};
use super::discovery::{Device, Subject};
use super::position::{PositionFile, Tag, Tracker};
use crate::alerts::{AlertManager, AlertsShared, LatestPerRule};
use crate::guard::GuardShared;
use crate::pacing::PacingShared;
use crate::sensors::registry::SensorRegistry;
use crate::storage::ReadPool;
use crate::storage::read::{Cursor, Order, Page, PageQuery, count_after, readings_page_with_head};
use crate::storage::writer::WriterShared;
use crate::supervisor::{ChildHandle, ChildSpec, LifecycleReporter, Stop};
use crate::vocab::alert::AlertView;
use crate::vocab::bus::{Bus, Event, SensorReading};
use crate::vocab::clock::now_ms;

/// Requests the client may queue before a publish is refused.
const REQUEST_CAPACITY: usize = 4096;
/// QoS 1 publishes on the wire without an acknowledgement.
const INFLIGHT: u16 = 100;
/// Events of the client's event loop waiting for the bridge.
const EVENT_CAPACITY: usize = 1024;
/// How often the position moves and a replay page may be asked for.
const TICK: Duration = Duration::from_millis(200);
/// How often a changed position is written to its file.
const PERSIST_EVERY: Duration = Duration::from_secs(2);
/// How long a graceful stop waits for the last confirmations.
const STOP_GRACE: Duration = Duration::from_secs(2);

/// What the bridge needs, shared by every instance.
pub struct BridgeDeps {
    pub settings: MqttSettings,
    pub bus: Bus,
    pub pool: ReadPool,
    pub writer: Arc<WriterShared>,
    pub guard: Arc<GuardShared>,
    pub shared: Arc<MqttShared>,
    pub sensors: Arc<SensorRegistry>,
    pub pacing: Arc<PacingShared>,
    /// The database file; the position file lives beside it.
    pub database: PathBuf,
    /// The TLS client config for `mqtts://`.
    pub tls: Option<Arc<rustls::ClientConfig>>,
    /// The device model shown in Home Assistant.
    pub model: String,
    /// The alert manager, asked for the states an outage kept from the
    /// broker.
    pub alerts: Arc<AlertsShared>,
}

/// The actor in the supervision tree.
pub struct MqttBridge {
    deps: Arc<BridgeDeps>,
    reporter: LifecycleReporter,
    stop: Option<watch::Sender<bool>>,
}

impl Actor for MqttBridge {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        let (tx, rx) = watch::channel(false);
        self.stop = Some(tx);
        // Subscribed before anything else, so no reading slips between.
        let readings = self.deps.bus.subscribe_readings();
        let events = self.deps.bus.subscribe_events();
        let deps = self.deps.clone();
        ctx.spawn(
            run(deps, rx, readings, events)
                .into_actor(self)
                .map(|res, act, ctx| {
                    if let Err(e) = res {
                        log::error!("mqtt: {e}");
                        act.deps.shared.set_error(Some(e.clone()));
                        act.reporter.failed(e);
                    }
                    ctx.stop();
                }),
        );
        self.reporter.started();
    }

    fn stopped(&mut self, _: &mut Context<Self>) {
        self.deps.shared.connected.store(false, Ordering::Relaxed);
        self.reporter.stopped();
    }
}

impl Handler<Stop> for MqttBridge {
    type Result = ();

    fn handle(&mut self, _: Stop, ctx: &mut Context<Self>) {
        // The loop says goodbye to the broker, stores its position and
        // ends; then the actor stops.
        match self.stop.take() {
            Some(tx) if tx.send(true).is_ok() => {}
            _ => ctx.stop(),
        }
    }
}

/// The supervisor's recipe for the bridge.
pub fn bridge_child(deps: Arc<BridgeDeps>) -> ChildSpec {
    ChildSpec::new("mqtt", "mqtt_bridge", false, move |reporter| {
        let addr = MqttBridge {
            deps: deps.clone(),
            reporter,
            stop: None,
        }
        .start();
        ChildHandle {
            stop: addr.recipient(),
            supervisor: None,
        }
    })
}

/// Topics of one appliance.
struct Topics {
    base: String,
}

impl Topics {
    fn status(&self) -> String {
        format!("{}/status", self.base)
    }
    fn reading(&self, sensor: &str, metric: &str) -> String {
        format!(
            "{}/{}/{}",
            self.base,
            topic_level(sensor),
            topic_level(metric)
        )
    }
    fn state(&self, sensor: &str) -> String {
        format!("{}/state/{}", self.base, topic_level(sensor))
    }
    fn pacing(&self) -> String {
        format!("{}/pacing", self.base)
    }
    fn alert(&self, rule: &str) -> String {
        format!("{}/alert/{}", self.base, topic_level(rule))
    }
}

/// The JSON of one reading.
pub fn reading_payload(value: f64, unit: &str, ts_ms: i64) -> Vec<u8> {
    json!({ "value": value, "unit": unit, "ts_ms": ts_ms })
        .to_string()
        .into_bytes()
}

/// Why a session ended.
enum Ended {
    Stop,
    Lost { was_connected: bool },
}

/// The bridge's whole life: sessions, backoff between them. Fails only
/// when the position cannot be kept.
async fn run(
    d: Arc<BridgeDeps>,
    mut stop: watch::Receiver<bool>,
    mut readings: broadcast::Receiver<Arc<SensorReading>>,
    mut events: broadcast::Receiver<Event>,
) -> Result<(), String> {
    let file = PositionFile::for_broker(&d.database, &d.settings.broker.file_key());
    let path = file.path().display().to_string();
    let start = {
        let f = file.clone();
        tokio::task::spawn_blocking(move || f.load())
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| format!("cannot read the position file {path}: {e}"))?
    };
    let resumed = start.is_some();
    let start = match start {
        Some(p) => {
            log::info!("mqtt: resuming {} after {p}", d.settings.url);
            p
        }
        // Nothing published to this broker yet: start with what is read
        // from now on.
        None => now_ms() - 1,
    };
    let shared = &d.shared;
    // What an earlier run left unpublished is the backlog from the start,
    // not only what this run sees (a broker new to this database has none).
    let pending = if !resumed {
        Ok(0)
    } else {
        let pool = d.pool.clone();
        let series = d.writer.catalog.readable_all();
        tokio::task::spawn_blocking(move || {
            let mut conn = pool.get().map_err(|e| e.to_string())?;
            count_after(&mut conn, &series, start).map_err(|e| e.to_string())
        })
        .await
        .map_err(|e| e.to_string())?
    };
    match pending {
        Ok(n) => {
            shared.backlog.store(n, Ordering::Relaxed);
        }
        Err(e) => log::warn!("mqtt: cannot count the readings left to publish: {e}"),
    }
    // Alert states: a broker new to this database gets every rule's; a
    // resumed one those changed since its position.
    let mut ag = AlertGap::new(if resumed {
        Since::From(start.saturating_sub(super::alerts::SLACK_MS))
    } else {
        Since::All
    });
    if resumed && let Some(addr) = d.alerts.current() {
        let ask = addr.send(LatestPerRule {
            since: Some(start.saturating_sub(super::alerts::SLACK_MS)),
        });
        match tokio::time::timeout(STOP_GRACE, ask).await {
            Ok(Ok(v)) => {
                for a in &v {
                    ag.count_only(&a.rule);
                }
                shared
                    .alert_backlog
                    .store(v.len() as u64, Ordering::Relaxed);
            }
            _ => log::warn!("mqtt: cannot count the alert states left to publish"),
        }
    }
    *shared.broker.lock().unwrap_or_else(|p| p.into_inner()) = d.settings.url.clone();
    shared.enabled.store(true, Ordering::Relaxed);
    let mut t = Tracker::new(start);
    let mut stored = None;
    persist(&file, &mut stored, t.position()).await?;
    let mut backoff = d.settings.reconnect_min;
    let breaker = d.guard.broker(&d.settings.url, d.settings.connect_timeout);
    loop {
        let call = loop {
            if let Some(wait) = breaker.open_for()
                && idle(
                    &d,
                    &mut t,
                    &mut ag,
                    wait,
                    &mut stop,
                    &mut readings,
                    &mut events,
                )
                .await
            {
                persist(&file, &mut stored, t.position()).await?;
                return Ok(());
            }
            match breaker.try_call() {
                Ok(call) => break call,
                Err(_) => {
                    if idle(
                        &d,
                        &mut t,
                        &mut ag,
                        TICK,
                        &mut stop,
                        &mut readings,
                        &mut events,
                    )
                    .await
                    {
                        persist(&file, &mut stored, t.position()).await?;
                        return Ok(());
                    }
                }
            }
        };
        let ended = session(
            &d,
            &mut t,
            &mut ag,
            &file,
            &mut stored,
            &mut stop,
            &mut readings,
            &mut events,
            call,
        )
        .await?;
        shared.connected.store(false, Ordering::Relaxed);
        shared.replaying.store(false, Ordering::Relaxed);
        shared.unconfirmed.store(0, Ordering::Relaxed);
        t.gap(false, now_ms());
        ag.lost();
        persist(&file, &mut stored, t.position()).await?;
        match ended {
            Ended::Stop => return Ok(()),
            Ended::Lost { was_connected } => {
                shared.connection_failures.fetch_add(1, Ordering::Relaxed);
                if was_connected {
                    backoff = d.settings.reconnect_min;
                }
            }
        }
        let wait = jitter(backoff);
        if idle(
            &d,
            &mut t,
            &mut ag,
            wait,
            &mut stop,
            &mut readings,
            &mut events,
        )
        .await
        {
            persist(&file, &mut stored, t.position()).await?;
            return Ok(());
        }
        backoff = (backoff * 2).min(d.settings.reconnect_max);
    }
}

/// Between half and all of `d` ("equal jitter").
fn jitter(d: Duration) -> Duration {
    let ms = d.as_millis() as u64;
    Duration::from_millis(ms / 2 + fastrand::u64(0..=ms / 2))
}

/// Writes the position when it changed.
async fn persist(file: &PositionFile, stored: &mut Option<i64>, p: i64) -> Result<(), String> {
    if *stored == Some(p) {
        return Ok(());
    }
    let path = file.path().to_owned();
    let f = file.clone();
    tokio::task::spawn_blocking(move || f.store(p))
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| format!("cannot write the position file {}: {e}", path.display()))?;
    *stored = Some(p);
    Ok(())
}

/// Waits `wait` without a connection: readings and alert changes are
/// only noted (storage and the alert manager have them; the next
/// connection replays them). True when asked to stop.
async fn idle(
    d: &BridgeDeps,
    t: &mut Tracker,
    ag: &mut AlertGap,
    wait: Duration,
    stop: &mut watch::Receiver<bool>,
    readings: &mut broadcast::Receiver<Arc<SensorReading>>,
    events: &mut broadcast::Receiver<Event>,
) -> bool {
    let sleep = tokio::time::sleep(wait);
    tokio::pin!(sleep);
    loop {
        if *stop.borrow() {
            return true;
        }
        tokio::select! {
            () = &mut sleep => return false,
            r = stop.changed() => if r.is_err() { return true },
            r = readings.recv() => match r {
                Ok(sr) => {
                    for reading in &sr.readings {
                        t.seen(reading.ts_ms);
                    }
                    let n = sr.readings.len() as u64;
                    d.shared.dropped.fetch_add(n, Ordering::Relaxed);
                    d.shared.backlog.fetch_add(n, Ordering::Relaxed);
                }
                Err(broadcast::error::RecvError::Lagged(n)) => {
                    d.shared.dropped.fetch_add(n, Ordering::Relaxed);
                    d.shared.backlog.fetch_add(n, Ordering::Relaxed);
                }
                Err(broadcast::error::RecvError::Closed) => return true,
            },
            r = events.recv() => match r {
                Ok(ev) => {
                    ag.seen(now_ms());
                    note_missed(&d.shared, ag, &ev);
                }
                Err(broadcast::error::RecvError::Lagged(_)) => ag.lagged(),
                Err(broadcast::error::RecvError::Closed) => return true,
            },
        }
    }
}

/// An event that cannot be published now: an alert's rule is noted (and
/// counted) for the resync at the next connection.
fn note_missed(shared: &MqttShared, ag: &mut AlertGap, ev: &Event) {
    if let Event::Alert { alert, .. } = ev {
        let n = ag.changed(&alert.rule, now_ms());
        shared.alert_backlog.store(n as u64, Ordering::Relaxed);
    }
}

/// Aborts the client's event loop task when the session ends.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

fn options(s: &MqttSettings, topics: &Topics) -> MqttOptions {
    let mut o = MqttOptions::new(s.client_id.clone(), s.broker.host.clone(), s.broker.port);
    o.set_keep_alive(s.keep_alive)
        .set_clean_session(s.clean_session)
        .set_inflight(INFLIGHT)
        .set_last_will(LastWill::new(
            topics.status(),
            "offline",
            QoS::AtLeastOnce,
            true,
        ));
    if let Some((u, p)) = &s.credentials {
        o.set_credentials(u.clone(), p.clone());
    }
    o
}

/// One connection, from the attempt until it is lost or vigil stops.
#[allow(clippy::too_many_arguments)]
async fn session(
    d: &BridgeDeps,
    t: &mut Tracker,
    ag: &mut AlertGap,
    file: &PositionFile,
    stored: &mut Option<i64>,
    stop: &mut watch::Receiver<bool>,
    readings: &mut broadcast::Receiver<Arc<SensorReading>>,
    events: &mut broadcast::Receiver<Event>,
    call: crate::guard::Call,
) -> Result<Ended, String> {
    let s = &d.settings;
    let shared = &d.shared;
    let topics = Topics {
        base: s.base_topic.clone(),
    };
    let mut opts = options(s, &topics);
    if s.broker.tls {
        match &d.tls {
            Some(cfg) => {
                opts.set_transport(Transport::tls_with_config(
                    rumqttc::TlsConfiguration::Rustls(cfg.clone()),
                ));
            }
            None => return Err("mqtts:// without a TLS configuration".into()),
        }
    }
    let qos = if s.qos == 0 {
        QoS::AtMostOnce
    } else {
        QoS::AtLeastOnce
    };
    let (client, mut eventloop) = AsyncClient::new(opts, REQUEST_CAPACITY);
    eventloop
        .network_options
        .set_connection_timeout(s.connect_timeout.as_secs().max(1));
    let (ev_tx, mut ev_rx) = mpsc::channel(EVENT_CAPACITY);
    let _poller = AbortOnDrop(tokio::spawn(async move {
        loop {
            let ev = eventloop.poll().await;
            let fatal = ev.is_err();
            if ev_tx.send(ev).await.is_err() || fatal {
                break;
            }
        }
    }));

    let mut call = Some(call);
    let mut connected = false;
    // Tags of publishes handed to the client, in order; each becomes
    // `inflight` (QoS 1) or confirmed (QoS 0) when the client sends it.
    let mut queued: VecDeque<Tag> = VecDeque::new();
    let mut inflight: HashMap<u16, Tag> = HashMap::new();
    // A replay page being read, and the epoch of the replay it is for.
    let mut fetch: Option<(u32, tokio::task::JoinHandle<Result<Page, String>>)> = None;
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_persist = tokio::time::Instant::now();
    let device = s.discovery.as_ref().map(|prefix| Device {
        node_id: s.node_id.clone(),
        base_topic: s.base_topic.clone(),
        prefix: prefix.clone(),
        model: d.model.clone(),
    });
    // The alert manager's answer to a resync, and what it covers.
    let mut alert_fetch: Option<(Since, AlertFetch)> = None;
    // (sensor, metric) and alert rules announced to Home Assistant in
    // this session.
    let mut announced: HashSet<(String, String)> = HashSet::new();
    let mut rules: HashSet<String> = HashSet::new();

    let confirm = |t: &mut Tracker, tag: Tag| {
        match tag {
            Tag::Live(..) => {
                shared.published.fetch_add(1, Ordering::Relaxed);
            }
            Tag::Replay(..) => {
                shared.replayed.fetch_add(1, Ordering::Relaxed);
                let _ = shared
                    .backlog
                    .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |b| {
                        Some(b.saturating_sub(1))
                    });
            }
            Tag::Other => {}
        }
        t.confirmed(tag);
    };

    loop {
        if *stop.borrow() {
            if connected {
                goodbye(
                    &client,
                    &topics,
                    &mut ev_rx,
                    &mut queued,
                    &mut inflight,
                    t,
                    &confirm,
                )
                .await;
                t.advance(now_ms());
            }
            persist(file, stored, t.position()).await?;
            return Ok(Ended::Stop);
        }
        tokio::select! {
            r = stop.changed() => if r.is_err() {
                persist(file, stored, t.position()).await?;
                return Ok(Ended::Stop);
            },
            ev = ev_rx.recv() => match ev {
                None => return Ok(Ended::Lost { was_connected: connected }),
                Some(Err(e)) => {
                    let msg = e.to_string();
                    if connected {
                        log::warn!("mqtt: connection to {} lost: {msg}", s.url);
                    } else {
                        log::warn!("mqtt: cannot connect to {}: {msg}", s.url);
                    }
                    shared.set_error(Some(msg));
                    if let Some(c) = call.take() {
                        c.finish(false);
                    }
                    return Ok(Ended::Lost { was_connected: connected });
                }
                Some(Ok(MqttEvent::Incoming(Packet::ConnAck(ack)))) => {
                    if ack.code != rumqttc::ConnectReturnCode::Success {
                        let msg = format!("the broker refused the connection: {:?}", ack.code);
                        shared.set_error(Some(msg));
                        if let Some(c) = call.take() {
                            c.finish(false);
                        }
                        return Ok(Ended::Lost { was_connected: false });
                    }
                    if let Some(c) = call.take() {
                        c.finish(true);
                    }
                    connected = true;
                    log::info!("mqtt: connected to {} as {}", s.url, s.client_id);
                    shared.connected.store(true, Ordering::Relaxed);
                    shared.connects.fetch_add(1, Ordering::Relaxed);
                    shared.set_error(None);
                    t.connected(now_ms());
                    ag.connected(now_ms());
                    shared.replaying.store(true, Ordering::Relaxed);
                    let mut out = Out { client: &client, queued: &mut queued, shared };
                    out.other(topics.status(), true, b"online".to_vec());
                    for sensor in d.sensors.all() {
                        let st = sensor.status();
                        out.other(
                            topics.state(&sensor.config.name),
                            true,
                            json!({
                                "enabled": sensor.config.enabled,
                                "available": st.available,
                                "reason": st.unavailable_reason,
                            })
                            .to_string()
                            .into_bytes(),
                        );
                    }
                    let p = d.pacing.status();
                    out.other(
                        topics.pacing(),
                        true,
                        json!({ "level": p.level, "multiplier": p.multiplier })
                            .to_string()
                            .into_bytes(),
                    );
                    if let Some(dev) = &device {
                        // Home Assistant's birth message, and the configs
                        // already retained (to clear those of sensors gone).
                        let _ = client.try_subscribe(dev.birth_topic(), QoS::AtLeastOnce);
                        let _ = client.try_subscribe(dev.config_filter(), QoS::AtLeastOnce);
                        announce_all(d, dev, &mut out, &mut announced, &mut rules);
                    }
                }
                Some(Ok(MqttEvent::Incoming(Packet::Publish(p)))) => {
                    if let Some(dev) = &device {
                        let mut out = Out { client: &client, queued: &mut queued, shared };
                        if p.topic == dev.birth_topic() {
                            if &p.payload[..] == b"online" {
                                log::info!("mqtt: Home Assistant started; announcing again");
                                announced.clear();
                                rules.clear();
                                announce_all(d, dev, &mut out, &mut announced, &mut rules);
                            }
                        } else if !p.payload.is_empty() {
                            clear_if_stale(d, dev, &mut out, &p.topic, &p.payload);
                        }
                    }
                }
                Some(Ok(MqttEvent::Outgoing(Outgoing::Publish(pkid)))) => {
                    if let Some(tag) = queued.pop_front() {
                        if pkid == 0 {
                            confirm(t, tag);
                        } else {
                            inflight.insert(pkid, tag);
                        }
                    }
                }
                Some(Ok(MqttEvent::Incoming(Packet::PubAck(ack)))) => {
                    if let Some(tag) = inflight.remove(&ack.pkid) {
                        confirm(t, tag);
                    }
                }
                Some(Ok(_)) => {}
            },
            r = readings.recv() => match r {
                Ok(sr) => {
                    if connected {
                        for reading in &sr.readings {
                            let k = &reading.series;
                            // A removed sensor's last readings do not bring
                            // it back.
                            if let Some(dev) = &device
                                && !announced.contains(&(k.sensor.to_string(), k.metric.to_string()))
                                && d.sensors.get(&k.sensor).is_some()
                            {
                                let mut out = Out { client: &client, queued: &mut queued, shared };
                                announce(dev, &mut out, &mut announced, &k.sensor, &k.metric, &k.unit);
                            }
                            let payload = reading_payload(reading.value, &k.unit, reading.ts_ms);
                            let tag = t.live_tag(reading.ts_ms);
                            match client.try_publish(
                                topics.reading(&k.sensor, &k.metric),
                                qos,
                                s.retain_readings,
                                payload,
                            ) {
                                Ok(()) => {
                                    t.live_sent(reading.ts_ms);
                                    queued.push_back(tag);
                                }
                                Err(_) => {
                                    t.seen(reading.ts_ms);
                                    shared.dropped.fetch_add(1, Ordering::Relaxed);
                                    shared.backlog.fetch_add(1, Ordering::Relaxed);
                                    t.gap(true, now_ms());
                                    shared.replaying.store(true, Ordering::Relaxed);
                                }
                            }
                        }
                    } else {
                        for reading in &sr.readings {
                            t.seen(reading.ts_ms);
                        }
                        let n = sr.readings.len() as u64;
                        shared.dropped.fetch_add(n, Ordering::Relaxed);
                        shared.backlog.fetch_add(n, Ordering::Relaxed);
                    }
                }
                Err(broadcast::error::RecvError::Lagged(n)) => {
                    log::warn!("mqtt: {n} live readings missed; replaying them from storage");
                    shared.dropped.fetch_add(n, Ordering::Relaxed);
                    shared.backlog.fetch_add(n, Ordering::Relaxed);
                    t.gap(connected, now_ms());
                    shared.replaying.store(connected, Ordering::Relaxed);
                }
                Err(broadcast::error::RecvError::Closed) => {
                    persist(file, stored, t.position()).await?;
                    return Ok(Ended::Stop);
                }
            },
            ev = events.recv() => match ev {
                Ok(ev) => {
                    ag.seen(now_ms());
                    if connected {
                        let mut out = Out { client: &client, queued: &mut queued, shared };
                        if !publish_event(&mut out, &topics, ag, &ev) {
                            note_missed(shared, ag, &ev);
                        }
                    } else {
                        note_missed(shared, ag, &ev);
                    }
                }
                Err(broadcast::error::RecvError::Lagged(n)) => {
                    log::warn!("mqtt: {n} events missed; alert states will be published again");
                    ag.lagged();
                }
                Err(broadcast::error::RecvError::Closed) => {}
            },
            res = async { (&mut alert_fetch.as_mut().expect("guarded").1).await }, if alert_fetch.is_some() => {
                let since = alert_fetch.take().map_or(Since::All, |(s, _)| s);
                match res {
                    Ok(views) => {
                        let mut out = Out { client: &client, queued: &mut queued, shared };
                        let (sent, all) = republish(&mut out, &topics, ag, &views);
                        shared.alerts_republished.fetch_add(sent, Ordering::Relaxed);
                        ag.resynced(since);
                        if all {
                            ag.done();
                            if !ag.pending() {
                                shared.alert_backlog.store(0, Ordering::Relaxed);
                            }
                        } else {
                            ag.retry(since);
                        }
                        if sent > 0 {
                            log::info!("mqtt: published the current state of {sent} alert rules");
                        }
                    }
                    Err(e) => {
                        log::warn!("mqtt: cannot ask for the alert states (will retry): {e}");
                        ag.retry(since);
                    }
                }
            },
            page = async { (&mut fetch.as_mut().expect("guarded").1).await }, if fetch.is_some() => {
                let for_epoch = fetch.take().map(|(e, _)| e);
                match page {
                    // Read for a replay a gap has since replaced.
                    Ok(Ok(_)) if for_epoch != Some(t.epoch()) => {}
                    Ok(Ok(page)) => {
                        let mut last = None;
                        let mut ok = true;
                        for row in &page.rows {
                            let payload = reading_payload(row.value, &row.series.unit, row.ts);
                            let tag = t.replay_tag(row.ts);
                            if client
                                .try_publish(
                                    topics.reading(&row.series.sensor, &row.series.metric),
                                    qos,
                                    s.retain_readings,
                                    payload,
                                )
                                .is_err()
                            {
                                ok = false;
                                break;
                            }
                            t.replay_sent(row.ts);
                            queued.push_back(tag);
                            last = Some(Cursor { ts: row.ts, series_id: row.series.id });
                        }
                        if ok {
                            t.page_read(last, page.next);
                        } else {
                            // The client's queue is full: start the replay
                            // over from the confirmed position.
                            t.gap(true, now_ms());
                        }
                    }
                    Ok(Err(e)) => {
                        log::warn!("mqtt: replay read failed (will retry): {e}");
                    }
                    Err(e) => {
                        log::warn!("mqtt: replay read failed (will retry): {e}");
                    }
                }
            },
            () = shared.reconfigured.notified() => {
                // A reload: configs for what is new, none for what is gone.
                if let (true, Some(dev)) = (connected, &device) {
                    let mut out = Out { client: &client, queued: &mut queued, shared };
                    withdraw_removed(d, dev, &mut out, &mut announced, &mut rules);
                    announce_all(d, dev, &mut out, &mut announced, &mut rules);
                }
            },
            _ = tick.tick() => {
                if connected && queued.is_empty() && inflight.is_empty() {
                    ag.settled(now_ms());
                }
                if t.advance(now_ms()) {
                    shared.replaying.store(false, Ordering::Relaxed);
                    shared.backlog.store(0, Ordering::Relaxed);
                    log::info!("mqtt: caught up with {}", s.url);
                }
                shared.replaying.store(t.replaying(), Ordering::Relaxed);
                shared.position_ms.store(t.position(), Ordering::Relaxed);
                shared.unconfirmed.store(t.unconfirmed(), Ordering::Relaxed);
                if last_persist.elapsed() >= PERSIST_EVERY {
                    persist(file, stored, t.position()).await?;
                    last_persist = tokio::time::Instant::now();
                }
            },
        }
        // Ask the alert manager for what a gap kept from the broker.
        if connected
            && alert_fetch.is_none()
            && ag.pending()
            && let Some(addr) = d.alerts.current()
            && let Some(since) = ag.take()
        {
            let ask = addr.send(LatestPerRule {
                since: since.as_filter(),
            });
            alert_fetch = Some((since, Box::pin(ask)));
        }
        // Ask for the next replay page while the client has room.
        if connected
            && fetch.is_none()
            && queued.len() < s.replay_page
            && let Some(r) = t.replay()
            && !r.exhausted
        {
            let q = PageQuery {
                series: d.writer.catalog.readable_all(),
                from: Some(r.after.saturating_add(1)),
                to: Some(r.to),
                limit: s.replay_page,
                order: Order::Asc,
                cursor: r.cursor,
            };
            let pool = d.pool.clone();
            let head = d.writer.queue.head().clone();
            fetch = Some((
                t.epoch(),
                tokio::task::spawn_blocking(move || {
                    if q.series.is_empty() {
                        return Ok(Page {
                            rows: Vec::new(),
                            next: None,
                        });
                    }
                    let mut conn = pool.get().map_err(|e| e.to_string())?;
                    readings_page_with_head(&mut conn, &q, &head)
                        .map(|(page, _)| page)
                        .map_err(|e| e.to_string())
                }),
            ));
        }
    }
}

/// Hands publishes that are not readings to the client.
struct Out<'a> {
    client: &'a AsyncClient,
    queued: &'a mut VecDeque<Tag>,
    shared: &'a MqttShared,
}

impl Out<'_> {
    /// False when the client had no room (counted).
    fn other(&mut self, topic: String, retain: bool, payload: Vec<u8>) -> bool {
        match self
            .client
            .try_publish(topic, QoS::AtLeastOnce, retain, payload)
        {
            Ok(()) => {
                self.queued.push_back(Tag::Other);
                true
            }
            Err(e) => {
                self.shared.dropped_other.fetch_add(1, Ordering::Relaxed);
                log::debug!("mqtt: status publish not queued: {e}");
                false
            }
        }
    }
}

/// The alert manager's answer to [`LatestPerRule`].
type AlertFetch = std::pin::Pin<Box<actix::dev::Request<AlertManager, LatestPerRule>>>;

/// Publishes (retained) the current state of each rule, unless a newer
/// one went out live meanwhile: how many went to the client, and whether
/// all did.
fn republish(
    out: &mut Out<'_>,
    topics: &Topics,
    ag: &mut AlertGap,
    views: &[AlertView],
) -> (u64, bool) {
    let mut sent = 0;
    let mut all = true;
    for v in views {
        let topic = topics.alert(&v.rule);
        if !ag.should_send(&topic, v) {
            continue;
        }
        if out.other(topic, true, alert_payload(event_of(v), v)) {
            sent += 1;
        } else {
            all = false;
        }
    }
    (sent, all)
}

/// Announces one metric to Home Assistant (retained).
fn announce(
    dev: &Device,
    out: &mut Out<'_>,
    announced: &mut HashSet<(String, String)>,
    sensor: &str,
    metric: &str,
    unit: &str,
) {
    out.other(
        dev.sensor_topic(sensor, metric),
        true,
        dev.sensor_config(sensor, metric, unit)
            .to_string()
            .into_bytes(),
    );
    announced.insert((sensor.to_owned(), metric.to_owned()));
}

/// Announces every metric of every configured sensor, and every alert
/// rule as a binary sensor, that this session has not announced yet.
fn announce_all(
    d: &BridgeDeps,
    dev: &Device,
    out: &mut Out<'_>,
    announced: &mut HashSet<(String, String)>,
    rules: &mut HashSet<String>,
) {
    for sensor in d.sensors.all() {
        for series in d.writer.catalog.readable_for_sensor(&sensor.config.name) {
            if announced.contains(&(series.sensor.to_string(), series.metric.to_string())) {
                continue;
            }
            announce(
                dev,
                out,
                announced,
                &series.sensor,
                &series.metric,
                &series.unit,
            );
        }
    }
    for rule in d.shared.rules() {
        if rules.contains(&rule) {
            continue;
        }
        out.other(
            dev.alert_topic(&rule),
            true,
            dev.alert_config(&rule).to_string().into_bytes(),
        );
        rules.insert(rule);
    }
}

/// Removes (an empty retained config) the entities of sensors and alert
/// rules that left the config since they were announced.
fn withdraw_removed(
    d: &BridgeDeps,
    dev: &Device,
    out: &mut Out<'_>,
    announced: &mut HashSet<(String, String)>,
    rules: &mut HashSet<String>,
) {
    let in_force: HashSet<String> = d.shared.rules().into_iter().collect();
    let gone: Vec<String> = rules.difference(&in_force).cloned().collect();
    for rule in gone {
        log::info!("mqtt: alert rule {rule} left the config; removing it from Home Assistant");
        out.other(dev.alert_topic(&rule), true, Vec::new());
        rules.remove(&rule);
    }
    let names: HashSet<String> = d
        .sensors
        .all()
        .iter()
        .map(|s| s.config.name.clone())
        .collect();
    let gone: Vec<_> = announced
        .iter()
        .filter(|(sensor, _)| !names.contains(sensor))
        .cloned()
        .collect();
    for (sensor, metric) in gone {
        log::info!(
            "mqtt: sensor {sensor} left the config; removing {sensor} {metric} from Home Assistant"
        );
        out.other(dev.sensor_topic(&sensor, &metric), true, Vec::new());
        announced.remove(&(sensor, metric));
    }
}

/// A retained config of this appliance for a sensor or rule no longer
/// configured (removed while vigil was not connected) is cleared.
fn clear_if_stale(d: &BridgeDeps, dev: &Device, out: &mut Out<'_>, topic: &str, payload: &[u8]) {
    let stale = match dev.subject_of(payload) {
        Some(Subject::Metric(sensor, _)) => !d
            .sensors
            .all()
            .iter()
            .any(|s| topic_level(&s.config.name) == sensor),
        Some(Subject::Alert(rule)) => !d.shared.rules().iter().any(|r| topic_level(r) == rule),
        None => false,
    };
    if stale {
        log::info!("mqtt: clearing the stale discovery config {topic}");
        out.other(topic.to_owned(), true, Vec::new());
    }
}

/// Sensor states, pacing changes and alerts, each on its own topic; false
/// when the client had no room.
fn publish_event(out: &mut Out<'_>, topics: &Topics, ag: &mut AlertGap, ev: &Event) -> bool {
    match ev {
        Event::SensorAvailability {
            sensor,
            available,
            reason,
        } => out.other(
            topics.state(sensor),
            true,
            json!({ "enabled": true, "available": available, "reason": reason })
                .to_string()
                .into_bytes(),
        ),
        Event::Pacing(change) => out.other(
            topics.pacing(),
            true,
            json!({ "level": change.to, "multiplier": change.multiplier })
                .to_string()
                .into_bytes(),
        ),
        Event::Alert { event, alert } => {
            let topic = topics.alert(&alert.rule);
            !ag.should_send(&topic, alert) || out.other(topic, true, alert_payload(event, alert))
        }
        _ => true,
    }
}

/// A graceful end: `offline` (retained), the last confirmations, then a
/// disconnect (which keeps the broker from sending the will).
async fn goodbye(
    client: &AsyncClient,
    topics: &Topics,
    ev_rx: &mut mpsc::Receiver<Result<MqttEvent, rumqttc::ConnectionError>>,
    queued: &mut VecDeque<Tag>,
    inflight: &mut HashMap<u16, Tag>,
    t: &mut Tracker,
    confirm: &impl Fn(&mut Tracker, Tag),
) {
    let _ = client.try_publish(topics.status(), QoS::AtLeastOnce, true, "offline");
    queued.push_back(Tag::Other);
    let deadline = tokio::time::sleep(STOP_GRACE);
    tokio::pin!(deadline);
    while !(queued.is_empty() && inflight.is_empty()) {
        tokio::select! {
            () = &mut deadline => break,
            ev = ev_rx.recv() => match ev {
                Some(Ok(MqttEvent::Outgoing(Outgoing::Publish(pkid)))) => {
                    if let Some(tag) = queued.pop_front() {
                        if pkid == 0 { confirm(t, tag) } else { inflight.insert(pkid, tag); }
                    }
                }
                Some(Ok(MqttEvent::Incoming(Packet::PubAck(ack)))) => {
                    if let Some(tag) = inflight.remove(&ack.pkid) {
                        confirm(t, tag);
                    }
                }
                Some(Ok(_)) => {}
                _ => break,
            },
        }
    }
    let _ = client.try_disconnect();
    // Let the disconnect reach the socket.
    let deadline = tokio::time::sleep(Duration::from_millis(500));
    tokio::pin!(deadline);
    loop {
        tokio::select! {
            () = &mut deadline => break,
            ev = ev_rx.recv() => match ev {
                Some(Ok(MqttEvent::Outgoing(Outgoing::Disconnect))) | None | Some(Err(_)) => break,
                Some(Ok(_)) => {}
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readings_are_json_with_value_unit_and_time() {
        let v: serde_json::Value =
            serde_json::from_slice(&reading_payload(21.5, "°C", 1_700_000_000_123)).unwrap();
        assert_eq!(
            v,
            json!({ "value": 21.5, "unit": "°C", "ts_ms": 1_700_000_000_123i64 })
        );
    }

    #[test]
    fn topics_keep_one_level_per_name() {
        let t = Topics {
            base: "vigil/pi".into(),
        };
        assert_eq!(t.reading("a/b", "c#"), "vigil/pi/a_b/c_");
        assert_eq!(t.status(), "vigil/pi/status");
    }

    #[test]
    fn jitter_stays_within_half_and_all() {
        for _ in 0..100 {
            let j = jitter(Duration::from_millis(1000));
            assert!(j >= Duration::from_millis(500) && j <= Duration::from_millis(1000));
        }
    }
}
