//! `kind = "mqtt"`: a sensor fed by a broker topic, so that what
//! Zigbee2MQTT, Tasmota or ESPHome devices publish becomes vigil readings.
//!
//! The driver owns its own client and event loop, on a thread of its own
//! with a small runtime, from the moment it is built until it is dropped:
//! it connects with the appliance's `[mqtt]` connection settings (handed
//! in through [`BuildEnv`](super::BuildEnv) as a [`BrokerConnection`]),
//! subscribes, reconnects with backoff, and puts every value it can parse
//! into an inbox, stamped with the time it arrived. A read drains the
//! inbox. A read that finds no message within `max_age_ms` says
//! [`SensorError::Stale`]: the sensor is shown `unavailable`, the driver
//! (still listening) is kept, and the first message makes it available
//! again. A payload that is not a number, or lacks the JSON path, is
//! counted (`rejected` in `/api/sensors`) and logged at most every
//! [`REJECT_LOG_EVERY`], never an error of the sensor.

use std::collections::VecDeque;
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS, SubscribeReasonCode, Transport};
use serde::Deserialize;

use super::actor::MAX_ABS_VALUE;
use super::{Rejected, Sensor, SensorError};
use crate::vocab::clock::now_ms;
use crate::vocab::reading::Value;

/// Values waiting for the next read; beyond this the oldest are dropped
/// (and counted as rejected).
pub const MAX_PENDING: usize = 10_000;
/// Bad payloads are logged at most this often per sensor (each counted).
pub const REJECT_LOG_EVERY: Duration = Duration::from_secs(10);
/// Requests the client may queue (a subscribe, a disconnect).
const REQUEST_CAPACITY: usize = 16;

/// `options` of a `kind = "mqtt"` sensor.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MqttSensorOptions {
    /// The topic to subscribe to: one topic, without wildcards.
    pub topic: String,
    /// Where the number is in a JSON payload: field names (or array
    /// indexes) separated by `.`, e.g. `temperature` or `sensor.temp`;
    /// empty: the whole payload is the number.
    #[serde(default)]
    pub json_path: String,
    /// The metric of the readings; empty: the last field of `json_path`,
    /// or `value`.
    #[serde(default)]
    pub metric: String,
    /// The unit of the readings.
    #[serde(default)]
    pub unit: String,
    /// No message for longer than this and the sensor is `unavailable`.
    #[serde(default = "default_max_age")]
    pub max_age_ms: u64,
    /// The subscription's QoS: 0 or 1.
    #[serde(default = "default_qos")]
    pub qos: u8,
    /// The sensor's name, for its client id (filled in from the entry).
    #[serde(skip)]
    pub sensor: String,
}

/// Default `max_age_ms`: ten minutes, above the five-minute telemetry
/// period of Tasmota and most Zigbee devices.
pub const DEFAULT_MAX_AGE_MS: u64 = 600_000;

fn default_max_age() -> u64 {
    DEFAULT_MAX_AGE_MS
}
fn default_qos() -> u8 {
    1
}

impl MqttSensorOptions {
    /// Checks what the types cannot; the message starts with the option.
    pub(crate) fn validate(&self) -> Result<(), String> {
        let t = &self.topic;
        if t.is_empty() {
            return Err("topic: must not be empty".into());
        }
        if t.contains(['+', '#', '\0']) || t.len() > 65_535 {
            return Err(format!(
                "topic: {t:?} must be one topic, without the wildcards + and #"
            ));
        }
        if !self.json_path.is_empty() && self.json_path.split('.').any(str::is_empty) {
            return Err(format!(
                "json_path: {:?} must be field names separated by single dots",
                self.json_path
            ));
        }
        let metric = self.metric();
        if metric.len() > 64
            || !metric
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-' || c == '.')
        {
            return Err(format!(
                "metric: {metric:?} must be 1-64 characters of A-Z, a-z, 0-9, `_`, `-` or `.`"
            ));
        }
        if self.max_age_ms == 0 {
            return Err("max_age_ms: must be greater than 0".into());
        }
        if self.qos > 1 {
            return Err(format!("qos: {} is not supported: use 0 or 1", self.qos));
        }
        Ok(())
    }

    /// The metric the readings are stored under.
    pub fn metric(&self) -> String {
        if !self.metric.is_empty() {
            self.metric.clone()
        } else {
            match self.json_path.rsplit('.').next() {
                Some(last) if !last.is_empty() => last.to_owned(),
                _ => "value".to_owned(),
            }
        }
    }

    fn path(&self) -> Vec<String> {
        if self.json_path.is_empty() {
            Vec::new()
        } else {
            self.json_path.split('.').map(str::to_owned).collect()
        }
    }
}

/// The broker connection the appliance's `[mqtt]` section describes, as
/// the assembly hands it to mqtt sensors.
#[derive(Clone)]
pub struct BrokerConnection {
    /// As written (`mqtt://host:1883`), for messages.
    pub url: String,
    pub host: String,
    pub port: u16,
    /// The TLS client config, for `mqtts://`.
    pub tls: Option<Arc<rustls::ClientConfig>>,
    /// Username and password.
    pub credentials: Option<(String, String)>,
    /// The appliance's client id; each sensor connects as
    /// `<client_id>-<sensor>`.
    pub client_id: String,
    pub keep_alive: Duration,
    pub connect_timeout: Duration,
    pub reconnect_min: Duration,
    pub reconnect_max: Duration,
}

impl fmt::Debug for BrokerConnection {
    // No password in a log line.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BrokerConnection")
            .field("url", &self.url)
            .field("client_id", &self.client_id)
            .field("tls", &self.tls.is_some())
            .field("username", &self.credentials.as_ref().map(|c| &c.0))
            .finish_non_exhaustive()
    }
}

/// Turns one payload into a number: the whole payload when `path` is
/// empty, else the JSON value at `path` (objects by field name, arrays by
/// index). Numbers, numeric strings and booleans (1 / 0) are accepted;
/// the result is finite and within [`MAX_ABS_VALUE`].
pub fn parse_payload(payload: &[u8], path: &[String]) -> Result<f64, String> {
    let text = std::str::from_utf8(payload).map_err(|_| "the payload is not UTF-8".to_owned())?;
    let value = if path.is_empty() {
        let t = text.trim();
        if t.is_empty() {
            return Err("the payload is empty".into());
        }
        number(t).ok_or_else(|| format!("the payload {} is not a number", excerpt(t)))?
    } else {
        let doc: serde_json::Value = serde_json::from_str(text)
            .map_err(|e| format!("the payload is not JSON ({e}): {}", excerpt(text)))?;
        let mut at = &doc;
        for (i, field) in path.iter().enumerate() {
            let next = match at {
                serde_json::Value::Object(m) => m.get(field),
                serde_json::Value::Array(a) => field.parse::<usize>().ok().and_then(|n| a.get(n)),
                _ => None,
            };
            at = next.ok_or_else(|| {
                format!(
                    "the payload has no `{}`: {}",
                    path[..=i].join("."),
                    excerpt(text)
                )
            })?;
        }
        let joined = path.join(".");
        match at {
            serde_json::Value::Number(n) => n
                .as_f64()
                .ok_or_else(|| format!("`{joined}` is out of range"))?,
            serde_json::Value::Bool(b) => f64::from(u8::from(*b)),
            serde_json::Value::String(s) => number(s.trim())
                .ok_or_else(|| format!("`{joined}` is {}, not a number", excerpt(s)))?,
            serde_json::Value::Null => return Err(format!("`{joined}` is null")),
            _ => return Err(format!("`{joined}` is not a number: {}", excerpt(text))),
        }
    };
    if !value.is_finite() || value.abs() > MAX_ABS_VALUE {
        return Err(format!("{value} is out of range"));
    }
    Ok(value)
}

/// A decimal number; Rust's `inf` and `NaN` spellings are not numbers here.
fn number(s: &str) -> Option<f64> {
    let plain = !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_digit() || matches!(c, '.' | '-' | '+' | 'e' | 'E'));
    if plain { s.parse::<f64>().ok() } else { None }
}

/// The start of a payload, quoted, for a message.
fn excerpt(s: &str) -> String {
    const MAX: usize = 60;
    match s.char_indices().nth(MAX) {
        Some((cut, _)) => format!("{:?}…", &s[..cut]),
        None => format!("{s:?}"),
    }
}

/// What the listener hands to reads.
#[derive(Default)]
struct Inbox {
    /// (arrival ms, value), oldest first.
    values: VecDeque<(i64, f64)>,
    /// The timestamp of the newest value, so no two share a millisecond.
    last_ts: i64,
    last_message: Option<Instant>,
    /// Rejected since the last read, and the last reason.
    rejected: u64,
    last_reject: Option<String>,
    connected: bool,
    /// Why the last connection attempt failed or the last one was lost.
    last_error: Option<String>,
}

impl Inbox {
    /// Takes one value that arrived at `ts`; a later one in the same
    /// millisecond is moved one forward so every value is kept.
    fn push(&mut self, ts: i64, value: f64) {
        let ts = ts.max(self.last_ts + 1);
        self.last_ts = ts;
        if self.values.len() == MAX_PENDING {
            self.values.pop_front();
            self.reject(format!(
                "a value was dropped: more than {MAX_PENDING} arrived between two reads"
            ));
        }
        self.values.push_back((ts, value));
    }

    fn reject(&mut self, reason: String) {
        self.rejected += 1;
        self.last_reject = Some(reason);
    }
}

/// Reads a broker topic. See the module docs.
pub struct MqttSensor {
    inbox: Arc<Mutex<Inbox>>,
    metric: String,
    unit: String,
    topic: String,
    max_age: Duration,
    built: Instant,
    /// Dropped with the driver: the listener sees it and ends.
    _stop: tokio::sync::oneshot::Sender<()>,
}

fn lock(inbox: &Mutex<Inbox>) -> MutexGuard<'_, Inbox> {
    inbox.lock().unwrap_or_else(|p| p.into_inner())
}

impl MqttSensor {
    /// Starts listening on `conn`'s broker. The connection happens in the
    /// background: a broker that is away is a silence, not an error.
    pub fn start(
        o: &MqttSensorOptions,
        conn: &BrokerConnection,
    ) -> Result<MqttSensor, SensorError> {
        let inbox = Arc::new(Mutex::new(Inbox::default()));
        let (stop, stopped) = tokio::sync::oneshot::channel();
        let listener = Listener {
            inbox: inbox.clone(),
            conn: conn.clone(),
            topic: o.topic.clone(),
            path: o.path(),
            qos: if o.qos == 0 {
                QoS::AtMostOnce
            } else {
                QoS::AtLeastOnce
            },
            client_id: format!("{}-{}", conn.client_id, o.sensor),
            sensor: o.sensor.clone(),
        };
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| SensorError::Transient(format!("cannot start the MQTT client: {e}")))?;
        std::thread::Builder::new()
            .name(format!("mqtt-{}", o.sensor))
            .spawn(move || runtime.block_on(listener.run(stopped)))
            .map_err(|e| SensorError::Transient(format!("cannot start the MQTT client: {e}")))?;
        Ok(MqttSensor {
            inbox,
            metric: o.metric(),
            unit: o.unit.clone(),
            topic: o.topic.clone(),
            max_age: Duration::from_millis(o.max_age_ms),
            built: Instant::now(),
            _stop: stop,
        })
    }

    /// One read at `now`: every value since the last read, or, when none
    /// has come for longer than `max_age_ms`, [`SensorError::Stale`].
    fn read_at(&mut self, now: Instant) -> Result<Vec<Value>, SensorError> {
        let mut inbox = lock(&self.inbox);
        if !inbox.values.is_empty() {
            let (metric, unit) = (&self.metric, &self.unit);
            return Ok(inbox
                .values
                .drain(..)
                .map(|(ts, v)| Value::new(metric.clone(), v, unit.clone()).at(ts))
                .collect());
        }
        let since = inbox.last_message.unwrap_or(self.built);
        if now.saturating_duration_since(since) <= self.max_age {
            return Ok(Vec::new());
        }
        let mut reason = format!(
            "no message on `{}` within max_age_ms ({} ms)",
            self.topic,
            self.max_age.as_millis()
        );
        if !inbox.connected {
            match &inbox.last_error {
                Some(e) => reason.push_str(&format!("; not connected to the broker: {e}")),
                None => reason.push_str("; not connected to the broker yet"),
            }
        }
        Err(SensorError::Stale(reason))
    }
}

impl Sensor for MqttSensor {
    fn read(&mut self) -> Result<Vec<Value>, SensorError> {
        self.read_at(Instant::now())
    }

    fn take_rejected(&mut self) -> Option<Rejected> {
        let mut inbox = lock(&self.inbox);
        if inbox.rejected == 0 {
            return None;
        }
        let count = std::mem::take(&mut inbox.rejected);
        Some(Rejected {
            count,
            last: inbox.last_reject.clone().unwrap_or_default(),
        })
    }
}

/// The client's side: connect, subscribe, take messages, reconnect.
struct Listener {
    inbox: Arc<Mutex<Inbox>>,
    conn: BrokerConnection,
    topic: String,
    path: Vec<String>,
    qos: QoS,
    client_id: String,
    sensor: String,
}

/// Counts bad payloads and logs them at most every [`REJECT_LOG_EVERY`].
struct RejectLog {
    last: Option<Instant>,
    quiet: u64,
}

impl Listener {
    fn options(&self) -> MqttOptions {
        let c = &self.conn;
        let mut o = MqttOptions::new(self.client_id.clone(), c.host.clone(), c.port);
        o.set_keep_alive(c.keep_alive).set_clean_session(true);
        if let Some((u, p)) = &c.credentials {
            o.set_credentials(u.clone(), p.clone());
        }
        if let Some(cfg) = &c.tls {
            o.set_transport(Transport::tls_with_config(
                rumqttc::TlsConfiguration::Rustls(cfg.clone()),
            ));
        }
        o
    }

    async fn run(self, mut stop: tokio::sync::oneshot::Receiver<()>) {
        let (client, mut eventloop) = AsyncClient::new(self.options(), REQUEST_CAPACITY);
        eventloop
            .network_options
            .set_connection_timeout(self.conn.connect_timeout.as_secs().max(1));
        let mut backoff = self.conn.reconnect_min;
        let mut connections = 0u64;
        let mut rejects = RejectLog {
            last: None,
            quiet: 0,
        };
        loop {
            let ev = tokio::select! {
                _ = &mut stop => break,
                ev = eventloop.poll() => ev,
            };
            match ev {
                Ok(Event::Incoming(Packet::ConnAck(ack))) => {
                    if ack.code != rumqttc::ConnectReturnCode::Success {
                        self.lost(format!("the broker refused the connection: {:?}", ack.code));
                        continue;
                    }
                    connections += 1;
                    backoff = self.conn.reconnect_min;
                    {
                        let mut inbox = lock(&self.inbox);
                        inbox.connected = true;
                        inbox.last_error = None;
                    }
                    log::info!(
                        "sensor {}: subscribed to `{}` at {}",
                        self.sensor,
                        self.topic,
                        self.conn.url
                    );
                    if let Err(e) = client.try_subscribe(self.topic.clone(), self.qos) {
                        self.lost(format!("cannot subscribe: {e}"));
                    }
                }
                Ok(Event::Incoming(Packet::SubAck(ack))) => {
                    if ack
                        .return_codes
                        .iter()
                        .any(|c| matches!(c, SubscribeReasonCode::Failure))
                    {
                        let msg =
                            format!("the broker refused the subscription to `{}`", self.topic);
                        log::warn!("sensor {}: {msg}", self.sensor);
                        lock(&self.inbox).last_error = Some(msg);
                    }
                }
                Ok(Event::Incoming(Packet::Publish(p))) => {
                    // A retained message is a repeat after a reconnect;
                    // only the first connection takes it as news.
                    if p.topic != self.topic || (p.retain && connections > 1) {
                        continue;
                    }
                    let ts = now_ms();
                    match parse_payload(&p.payload, &self.path) {
                        Ok(v) => {
                            let mut inbox = lock(&self.inbox);
                            inbox.last_message = Some(Instant::now());
                            inbox.push(ts, v);
                        }
                        Err(reason) => {
                            lock(&self.inbox).reject(reason.clone());
                            rejects.note(&self.sensor, &self.topic, &reason);
                        }
                    }
                }
                Ok(_) => {}
                Err(e) => {
                    let was = lock(&self.inbox).connected;
                    let msg = e.to_string();
                    if was {
                        log::warn!(
                            "sensor {}: connection to {} lost: {msg}",
                            self.sensor,
                            self.conn.url
                        );
                    } else {
                        log::debug!(
                            "sensor {}: cannot connect to {}: {msg}",
                            self.sensor,
                            self.conn.url
                        );
                    }
                    self.lost(msg);
                    tokio::select! {
                        _ = &mut stop => break,
                        _ = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(self.conn.reconnect_max);
                }
            }
        }
        let _ = client.try_disconnect();
    }

    fn lost(&self, msg: String) {
        let mut inbox = lock(&self.inbox);
        inbox.connected = false;
        inbox.last_error = Some(msg);
    }
}

impl RejectLog {
    fn note(&mut self, sensor: &str, topic: &str, reason: &str) {
        let now = Instant::now();
        match self.last {
            Some(at) if now.duration_since(at) < REJECT_LOG_EVERY => {
                self.quiet += 1;
            }
            _ => {
                let quiet = std::mem::take(&mut self.quiet);
                let more = if quiet > 0 {
                    format!(" ({quiet} more since the last report)")
                } else {
                    String::new()
                };
                log::warn!("sensor {sensor}: a message on `{topic}` was rejected: {reason}{more}");
                self.last = Some(now);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn path(p: &str) -> Vec<String> {
        p.split('.').map(str::to_owned).collect()
    }

    #[test]
    fn a_bare_number_is_the_value() {
        assert_eq!(parse_payload(b"21.5", &[]), Ok(21.5));
        assert_eq!(parse_payload(b" -3e2\n", &[]), Ok(-300.0));
        assert_eq!(parse_payload(b"42", &[]), Ok(42.0));
        for bad in [
            &b""[..],
            b"  ",
            b"abc",
            b"inf",
            b"NaN",
            b"1e400",
            b"{\"a\":1}",
            b"\xff",
        ] {
            assert!(parse_payload(bad, &[]).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn a_json_path_picks_the_field() {
        let doc = br#"{"temperature": 22.25, "battery": {"level": 97, "low": false},
                       "state": "ON", "text": "12.5", "list": [1, 2, 3], "none": null}"#;
        assert_eq!(parse_payload(doc, &path("temperature")), Ok(22.25));
        assert_eq!(parse_payload(doc, &path("battery.level")), Ok(97.0));
        assert_eq!(parse_payload(doc, &path("battery.low")), Ok(0.0));
        assert_eq!(parse_payload(doc, &path("text")), Ok(12.5));
        assert_eq!(parse_payload(doc, &path("list.2")), Ok(3.0));
        let e = parse_payload(doc, &path("humidity")).unwrap_err();
        assert!(e.contains("no `humidity`"), "{e}");
        let e = parse_payload(doc, &path("battery.level.x")).unwrap_err();
        assert!(e.contains("no `battery.level.x`"), "{e}");
        assert!(
            parse_payload(doc, &path("state"))
                .unwrap_err()
                .contains("not a number")
        );
        assert!(
            parse_payload(doc, &path("battery"))
                .unwrap_err()
                .contains("not a number")
        );
        assert!(
            parse_payload(doc, &path("none"))
                .unwrap_err()
                .contains("null")
        );
        assert!(parse_payload(doc, &path("list.9")).is_err());
        let e = parse_payload(b"not json", &path("a")).unwrap_err();
        assert!(e.contains("not JSON"), "{e}");
        // A bare number is valid JSON, but has no field.
        assert!(parse_payload(b"5", &path("a")).is_err());
    }

    #[test]
    fn long_payloads_are_cut_in_messages() {
        let long = "x".repeat(1000);
        let e = parse_payload(long.as_bytes(), &[]).unwrap_err();
        assert!(e.len() < 120, "{e}");
    }

    fn options(toml_text: &str) -> Result<MqttSensorOptions, String> {
        let o: MqttSensorOptions = toml::from_str(toml_text).map_err(|e| e.to_string())?;
        o.validate().map(|()| o)
    }

    #[test]
    fn options_are_checked_and_the_metric_follows_the_path() {
        let o = options("topic = \"zigbee2mqtt/kitchen\"\njson_path = \"climate.temperature\"")
            .unwrap();
        assert_eq!(o.metric(), "temperature");
        assert_eq!(o.max_age_ms, DEFAULT_MAX_AGE_MS);
        assert_eq!(options("topic = \"t\"").unwrap().metric(), "value");
        assert_eq!(
            options("topic = \"t\"\nmetric = \"m\"").unwrap().metric(),
            "m"
        );
        let e = options("json_path = \"a\"").unwrap_err();
        assert!(e.contains("topic"), "{e}");
        for (text, key) in [
            ("topic = \"\"", "topic"),
            ("topic = \"a/+/b\"", "topic"),
            ("topic = \"a/#\"", "topic"),
            ("topic = \"t\"\njson_path = \"a..b\"", "json_path"),
            ("topic = \"t\"\nmax_age_ms = 0", "max_age_ms"),
            ("topic = \"t\"\nqos = 2", "qos"),
            ("topic = \"t\"\nmetric = \"a b\"", "metric"),
        ] {
            let e = options(text).unwrap_err();
            assert!(e.starts_with(key), "{text}: {e}");
        }
    }

    #[test]
    fn the_documented_example_parses_and_shows_the_defaults() {
        let doc = crate::app::config::DEFAULT_TOML;
        let start = doc
            .find("# MQTT topics as sensors.")
            .expect("mqtt sensor section");
        let end = start
            + doc[start..]
                .find("# Hardware sensors.")
                .expect("next section");
        let example: Vec<&str> = doc[start..end]
            .lines()
            .filter_map(|l| l.strip_prefix("# "))
            .filter(|l| l.starts_with('[') || l.contains(" = "))
            .collect();
        let text = format!("[mqtt]\n{}", example.join("\n"));
        let c = crate::app::config::Config::from_toml(&text, "example").unwrap();
        match &c.sensors[0].driver {
            super::super::DriverConfig::Mqtt(o) => {
                let mut expected = options("topic = \"zigbee2mqtt/kitchen\"").unwrap();
                expected.sensor = "kitchen".into();
                assert_eq!(o, &expected);
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    fn sensor(max_age_ms: u64) -> (MqttSensor, Arc<Mutex<Inbox>>) {
        let inbox = Arc::new(Mutex::new(Inbox::default()));
        let (stop, _) = tokio::sync::oneshot::channel();
        let s = MqttSensor {
            inbox: inbox.clone(),
            metric: "temperature".into(),
            unit: "°C".into(),
            topic: "t".into(),
            max_age: Duration::from_millis(max_age_ms),
            built: Instant::now(),
            _stop: stop,
        };
        (s, inbox)
    }

    #[test]
    fn reads_drain_the_inbox_and_go_stale_after_max_age() {
        let (mut s, inbox) = sensor(1000);
        let t0 = s.built;
        // Nothing yet, but not for long: an empty read.
        assert_eq!(s.read_at(t0 + Duration::from_millis(500)), Ok(vec![]));
        let e = s.read_at(t0 + Duration::from_millis(1500)).unwrap_err();
        assert!(
            matches!(&e, SensorError::Stale(m) if m.contains("not connected")),
            "{e:?}"
        );
        {
            let mut i = lock(&inbox);
            i.connected = true;
            i.last_message = Some(t0 + Duration::from_millis(1600));
            i.push(100, 1.0);
            // Two in one millisecond are both kept.
            i.push(100, 2.0);
        }
        let v = s.read_at(t0 + Duration::from_millis(1700)).unwrap();
        assert_eq!(
            v.iter().map(|v| (v.ts_ms, v.value)).collect::<Vec<_>>(),
            vec![(Some(100), 1.0), (Some(101), 2.0)]
        );
        assert_eq!(v[0].unit, "°C");
        assert_eq!(s.read_at(t0 + Duration::from_millis(2000)), Ok(vec![]));
        let e = s.read_at(t0 + Duration::from_millis(2700)).unwrap_err();
        assert!(
            matches!(&e, SensorError::Stale(m) if !m.contains("not connected")),
            "{e:?}"
        );
    }

    #[test]
    fn rejects_are_counted_once_and_overflow_is_a_reject() {
        let (mut s, inbox) = sensor(1000);
        assert!(s.take_rejected().is_none());
        lock(&inbox).reject("bad".into());
        lock(&inbox).reject("worse".into());
        let r = s.take_rejected().unwrap();
        assert_eq!((r.count, r.last.as_str()), (2, "worse"));
        assert!(s.take_rejected().is_none());
        {
            let mut i = lock(&inbox);
            for n in 0..=MAX_PENDING {
                i.push(0, n as f64);
            }
            assert_eq!(i.values.len(), MAX_PENDING);
            assert_eq!(i.values.front().map(|v| v.1), Some(1.0));
        }
        assert_eq!(s.take_rejected().map(|r| r.count), Some(1));
    }
}
