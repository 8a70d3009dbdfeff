//! The MQTT bridge against a real broker: mosquitto started by each test
//! on a free port with its own config and persistence directory, and a
//! subscriber in the test. Readings arrive as documented, the status is
//! retained with `offline` as the will, and neither a broker outage nor a
//! vigil restart during one leaves a reading out.

use std::collections::BTreeSet;
use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use serde_json::Value;

use crate::util::{TestServer, config};

const MOSQUITTO: &str = "/usr/sbin/mosquitto";

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Polls `cond` every 20 ms until it holds; panics after `deadline`.
async fn wait_until(what: &str, deadline: Duration, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while start.elapsed() < deadline {
        if cond() {
            return;
        }
        actix_rt::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("timed out after {deadline:?} waiting for {what}");
}

/// A mosquitto of the test's own, persistent across its restarts.
pub struct Broker {
    pub port: u16,
    dir: tempfile::TempDir,
    child: Option<Child>,
}

impl Broker {
    pub async fn start() -> Broker {
        Broker::start_with("").await
    }

    /// With `extra` lines in its config (a TLS listener, say).
    pub async fn start_with(extra: &str) -> Broker {
        assert!(
            std::path::Path::new(MOSQUITTO).exists(),
            "mosquitto is missing: run scripts/setup"
        );
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        // Run as root, mosquitto would switch to its own user, which
        // cannot write the test's directory.
        let user = String::from_utf8(Command::new("id").arg("-un").output().unwrap().stdout)
            .unwrap()
            .trim()
            .to_owned();
        let conf = format!(
            "user {user}\nlistener {port} 127.0.0.1\nallow_anonymous true\npersistence true\n\
             persistence_location {}/\nmax_queued_messages 0\nlog_dest file {}/log\nlog_type all\n{extra}\n",
            dir.path().display(),
            dir.path().display()
        );
        std::fs::write(dir.path().join("mosquitto.conf"), conf).unwrap();
        let mut b = Broker {
            port,
            dir,
            child: None,
        };
        b.resume().await;
        b
    }

    /// Starts (again) on the same port, with what it persisted.
    pub async fn resume(&mut self) {
        let child = Command::new(MOSQUITTO)
            .arg("-c")
            .arg(self.dir.path().join("mosquitto.conf"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start mosquitto");
        self.child = Some(child);
        let port = self.port;
        wait_until("mosquitto to listen", Duration::from_secs(20), || {
            std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
        })
        .await;
    }

    /// SIGTERM (mosquitto saves its sessions), then waits for the exit.
    pub async fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = Command::new("kill")
                .args(["-TERM", &c.id().to_string()])
                .status();
            let start = Instant::now();
            while c.try_wait().ok().flatten().is_none() {
                assert!(start.elapsed() < Duration::from_secs(20), "mosquitto stops");
                actix_rt::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        if std::thread::panicking() {
            let _ = std::fs::copy(
                self.dir.path().join("log"),
                format!("/tmp/mosq-{}.log", self.port),
            );
        }
    }
}

/// One message as the subscriber got it.
#[derive(Debug, Clone)]
pub struct Got {
    pub topic: String,
    pub payload: Vec<u8>,
    pub retain: bool,
}

/// A subscriber with a persistent session (QoS 1), so what is published
/// while it reconnects after a broker restart is kept for it.
pub struct Subscriber {
    pub got: Arc<Mutex<Vec<Got>>>,
    _client: AsyncClient,
    task: tokio::task::JoinHandle<()>,
}

impl Subscriber {
    pub async fn new(port: u16, id: &str, filter: &str) -> Subscriber {
        let mut o = MqttOptions::new(id, "127.0.0.1", port);
        o.set_keep_alive(Duration::from_secs(5))
            .set_clean_session(false);
        Subscriber::with_options(o, filter).await
    }

    pub async fn with_options(o: MqttOptions, filter: &str) -> Subscriber {
        let (client, mut el) = AsyncClient::new(o, 100);
        client.subscribe(filter, QoS::AtLeastOnce).await.unwrap();
        let got = Arc::new(Mutex::new(Vec::new()));
        let (subscribed_tx, subscribed_rx) = tokio::sync::oneshot::channel();
        let sink = got.clone();
        let task = tokio::spawn(async move {
            let mut subscribed = Some(subscribed_tx);
            loop {
                match el.poll().await {
                    Ok(Event::Incoming(Packet::Publish(p))) => sink.lock().unwrap().push(Got {
                        topic: p.topic.clone(),
                        payload: p.payload.to_vec(),
                        retain: p.retain,
                    }),
                    Ok(Event::Incoming(Packet::SubAck(_))) => {
                        if let Some(tx) = subscribed.take() {
                            let _ = tx.send(());
                        }
                    }
                    Ok(_) => {}
                    // The broker is away: try again (a retry pace, not a
                    // timing the test depends on).
                    Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
                }
            }
        });
        tokio::time::timeout(Duration::from_secs(20), subscribed_rx)
            .await
            .expect("subscribed within 20 s")
            .unwrap();
        Subscriber {
            got,
            _client: client,
            task,
        }
    }

    pub fn all(&self) -> Vec<Got> {
        self.got.lock().unwrap().clone()
    }

    /// The last payload on `topic`, as text.
    pub fn last(&self, topic: &str) -> Option<String> {
        self.all()
            .iter()
            .rev()
            .find(|g| g.topic == topic)
            .map(|g| String::from_utf8_lossy(&g.payload).into_owned())
    }

    /// Timestamps of the readings received on `topic`.
    pub fn reading_times(&self, topic: &str) -> BTreeSet<i64> {
        self.all()
            .iter()
            .filter(|g| g.topic == topic)
            .filter_map(|g| serde_json::from_slice::<Value>(&g.payload).ok())
            .filter_map(|v| v["ts_ms"].as_i64())
            .collect()
    }
}

impl Drop for Subscriber {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// `[mqtt]` for a test broker on `port`, and a fast simulated sensor.
fn setup(port: u16) -> String {
    format!(
        r#"
[mqtt]
enabled = true
url = "mqtt://127.0.0.1:{port}"
node_id = "test"
reconnect_min_ms = 100
reconnect_max_ms = 400

[guard.brokers]
enabled = false

[[sensors]]
name = "tank"
kind = "simulated"
interval_ms = 50
[sensors.options]
unit = "cm"
"#
    )
}

/// Every stored timestamp of tank/value up to `to` (exclusive), through
/// the API's pages.
async fn stored_times(s: &TestServer, to: i64) -> BTreeSet<i64> {
    let mut out = BTreeSet::new();
    let mut cursor: Option<String> = None;
    loop {
        let mut q = format!("/api/readings?sensor=tank&metric=value&limit=1000&order=asc&to={to}");
        if let Some(c) = &cursor {
            q.push_str(&format!("&cursor={c}"));
        }
        let page = s.get_ok(&q).await;
        for r in page["readings"].as_array().unwrap() {
            out.insert(r["ts_ms"].as_i64().unwrap());
        }
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => return out,
        }
    }
}

async fn newest_ts(s: &TestServer) -> i64 {
    let page = s.get_ok("/api/readings?sensor=tank&limit=1").await;
    page["readings"][0]["ts_ms"].as_i64().unwrap_or(0)
}

async fn mqtt_health(s: &TestServer) -> Value {
    s.get("/health").await.1["mqtt"].clone()
}

/// Waits until every reading stored before now is at the subscriber.
async fn all_arrive(s: &TestServer, sub: &Subscriber, what: &str) -> usize {
    let cut = newest_ts(s).await;
    let expected = stored_times(s, cut).await;
    assert!(!expected.is_empty());
    let start = Instant::now();
    loop {
        let got = sub.reading_times("vigil/test/tank/value");
        let missing: Vec<_> = expected.difference(&got).collect();
        if missing.is_empty() {
            return expected.len();
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "{what}: {} of {} readings never arrived, first {:?}; mqtt {}",
            missing.len(),
            expected.len(),
            &missing[..missing.len().min(5)],
            mqtt_health(s).await
        );
        actix_rt::time::sleep(Duration::from_millis(50)).await;
    }
}

#[actix_rt::test]
async fn readings_arrive_as_json_and_the_status_is_retained() {
    let broker = Broker::start().await;
    let sub = Subscriber::new(broker.port, "t-readings", "vigil/test/#").await;
    let s = TestServer::start(&setup(broker.port)).await;
    s.wait_for(
        "20 readings at the broker",
        Duration::from_secs(30),
        async |_| sub.reading_times("vigil/test/tank/value").len() >= 20,
    )
    .await;
    assert_eq!(sub.last("vigil/test/status").as_deref(), Some("online"));

    // Each message is the stored reading: value, unit, time.
    let cut = newest_ts(&s).await;
    let page = s
        .get_ok(&format!("/api/readings?sensor=tank&limit=1000&to={cut}"))
        .await;
    let stored: std::collections::BTreeMap<i64, f64> = page["readings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r["ts_ms"].as_i64().unwrap(), r["value"].as_f64().unwrap()))
        .collect();
    let mut checked = 0;
    for g in sub
        .all()
        .iter()
        .filter(|g| g.topic == "vigil/test/tank/value")
    {
        let v: Value = serde_json::from_slice(&g.payload).expect("JSON payload");
        let obj = v.as_object().unwrap();
        assert_eq!(obj.len(), 3, "{v}");
        assert_eq!(v["unit"], "cm");
        let ts = v["ts_ms"].as_i64().unwrap();
        if let Some(value) = stored.get(&ts) {
            assert_eq!(v["value"].as_f64().unwrap(), *value, "{v}");
            checked += 1;
        }
    }
    assert!(
        checked >= 10,
        "only {checked} readings matched the stored ones"
    );
    let state = sub.last("vigil/test/state/tank").expect("sensor state");
    let state: Value = serde_json::from_str(&state).unwrap();
    assert_eq!(state["available"], true);
    assert!(sub.last("vigil/test/pacing").is_some());

    let h = mqtt_health(&s).await;
    assert_eq!(h["connected"], true, "{h}");
    // The first readings may come through the start-up replay.
    let confirmed = h["published"].as_u64().unwrap() + h["replayed"].as_u64().unwrap();
    assert!(confirmed >= 20, "{h}");
    let metrics = s
        .client()
        .get(s.url("/metrics"))
        .send()
        .await
        .unwrap()
        .body()
        .await
        .unwrap();
    let metrics = String::from_utf8_lossy(&metrics);
    assert!(metrics.contains("vigil_mqtt_connected 1"), "{metrics}");
    assert!(metrics.contains("vigil_mqtt_published_total"));

    // A late subscriber gets the retained status.
    let late = Subscriber::new(broker.port, "t-late", "vigil/test/status").await;
    wait_until("the retained status", Duration::from_secs(20), || {
        late.all()
            .iter()
            .any(|g| g.retain && g.payload == b"online")
    })
    .await;

    // A graceful stop says offline.
    s.stop().await;
    wait_until("offline on stop", Duration::from_secs(20), || {
        sub.last("vigil/test/status").as_deref() == Some("offline")
    })
    .await;
}

#[actix_rt::test]
async fn a_killed_vigil_leaves_offline_as_its_will() {
    let broker = Broker::start().await;
    let sub = Subscriber::new(broker.port, "t-will", "vigil/test/status").await;
    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("vigil.toml");
    let http = free_port();
    std::fs::write(
        &conf,
        format!(
            "{}\n[server]\nbind = \"127.0.0.1:{http}\"\n[storage]\npath = \"{}\"\n[log]\nfilter = \"warn\"\n",
            setup(broker.port).replace("[mqtt]", "[mqtt]\nkeep_alive_s = 5"),
            dir.path().join("vigil.db").display()
        ),
    )
    .unwrap();
    let mut vigil = Command::new(env!("CARGO_BIN_EXE_vigil"))
        .args(["serve", "--config"])
        .arg(&conf)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_until("online", Duration::from_secs(30), || {
        sub.last("vigil/test/status").as_deref() == Some("online")
    })
    .await;
    vigil.kill().unwrap();
    vigil.wait().unwrap();
    wait_until("the will: offline", Duration::from_secs(30), || {
        sub.last("vigil/test/status").as_deref() == Some("offline")
    })
    .await;
    drop(broker);
}

#[actix_rt::test]
async fn a_broker_outage_loses_no_reading() {
    let mut broker = Broker::start().await;
    let sub = Subscriber::new(broker.port, "t-outage", "vigil/test/#").await;
    let s = TestServer::start(&setup(broker.port)).await;
    s.wait_for(
        "readings at the broker",
        Duration::from_secs(30),
        async |_| sub.reading_times("vigil/test/tank/value").len() >= 10,
    )
    .await;

    broker.stop().await;
    s.wait_for(
        "the bridge to see the outage",
        Duration::from_secs(30),
        async |s| mqtt_health(s).await["connected"] == false,
    )
    .await;
    // Readings keep being stored during the outage.
    let during = newest_ts(&s).await;
    s.wait_for(
        "40 readings during the outage",
        Duration::from_secs(30),
        async |s| stored_times(s, i64::MAX).await.range(during + 1..).count() >= 40,
    )
    .await;
    let h = mqtt_health(&s).await;
    assert!(h["dropped"].as_u64().unwrap() > 0, "{h}");
    let (_, health) = s.get("/health").await;
    assert!(
        health["warnings"]
            .to_string()
            .contains("mqtt: not connected"),
        "{health}"
    );

    broker.resume().await;
    s.wait_for(
        "the bridge to reconnect",
        Duration::from_secs(30),
        async |s| mqtt_health(s).await["connected"] == true,
    )
    .await;
    let n = all_arrive(&s, &sub, "after the outage").await;
    assert!(n >= 50);
    s.wait_for("the replay to finish", Duration::from_secs(60), async |s| {
        let h = mqtt_health(s).await;
        h["replaying"] == false && h["replayed"].as_u64().unwrap() > 0
    })
    .await;
    s.stop().await;
}

#[actix_rt::test]
async fn a_vigil_restart_during_an_outage_loses_no_reading() {
    let mut broker = Broker::start().await;
    let sub = Subscriber::new(broker.port, "t-restart", "vigil/test/#").await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(&dir, &setup(broker.port));
    let s = TestServer::start_with(dir, cfg.clone()).await;
    s.wait_for(
        "readings at the broker",
        Duration::from_secs(30),
        async |_| sub.reading_times("vigil/test/tank/value").len() >= 10,
    )
    .await;
    broker.stop().await;
    let during = newest_ts(&s).await;
    s.wait_for(
        "30 readings during the outage",
        Duration::from_secs(30),
        async |s| stored_times(s, i64::MAX).await.range(during + 1..).count() >= 30,
    )
    .await;
    let (_, dir, db) = s.stop().await;
    let pos: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().ends_with(".pos"))
        .collect();
    assert_eq!(pos.len(), 1, "one position file beside {}", db.display());

    // vigil comes back first, still without its broker; then the broker.
    let s = TestServer::start_with(dir, cfg).await;
    let again = newest_ts(&s).await;
    s.wait_for(
        "readings after the restart",
        Duration::from_secs(30),
        async |s| newest_ts(s).await > again + 500,
    )
    .await;
    // The backlog counts what the first run left unpublished (at least 30
    // readings), not only what this run saw: about every reading stored
    // since the outage began (a few may reach the API before the bridge).
    let unpublished = stored_times(&s, i64::MAX).await.range(during + 1..).count() as u64;
    let backlog = mqtt_health(&s).await["backlog"].as_u64().unwrap_or(0);
    assert!(
        backlog + 5 >= unpublished,
        "backlog after the restart: {backlog}, stored since the outage: {unpublished}"
    );
    broker.resume().await;
    let n = all_arrive(&s, &sub, "after a restart during the outage").await;
    assert!(n >= 40);
    s.stop().await;
}

#[actix_rt::test]
async fn a_stalled_broker_stalls_neither_sensors_nor_the_api() {
    // Accepts connections and never answers a byte.
    let stalled = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = stalled.local_addr().unwrap().port();
    let held = Arc::new(Mutex::new(Vec::new()));
    let keep = held.clone();
    std::thread::spawn(move || {
        for c in stalled.incoming().flatten() {
            keep.lock().unwrap().push(c);
        }
    });
    let s = TestServer::start(&setup(port)).await;
    s.wait_for(
        "a connection attempt",
        Duration::from_secs(30),
        async |_| !held.lock().unwrap().is_empty(),
    )
    .await;
    // The sensor keeps its cadence and the writer commits meanwhile.
    let first = newest_ts(&s).await;
    s.wait_for("40 more readings", Duration::from_secs(30), async |s| {
        stored_times(s, i64::MAX).await.range(first + 1..).count() >= 40
    })
    .await;
    let (status, health) = s.get("/health").await;
    assert_eq!(status, 200, "{health}");
    assert_eq!(health["mqtt"]["connected"], false);
    assert!(
        health["writer"]["committed_rows"].as_u64().unwrap() > 0,
        "{health}"
    );
    s.stop().await;
}

/// Publishes one message at QoS 1 and waits for the broker's ack.
pub async fn publish(port: u16, topic: &str, payload: &[u8], retain: bool) {
    let (client, mut el) = AsyncClient::new(MqttOptions::new("t-publisher", "127.0.0.1", port), 10);
    client
        .publish(topic, QoS::AtLeastOnce, retain, payload.to_vec())
        .await
        .unwrap();
    tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            if let Ok(Event::Incoming(Packet::PubAck(_))) = el.poll().await {
                return;
            }
        }
    })
    .await
    .expect("published within 20 s");
}

#[actix_rt::test]
async fn home_assistant_discovery_is_retained_repeated_on_birth_and_withdrawn() {
    let broker = Broker::start().await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("vigil.toml");
    let room = "\n[[sensors]]\nname = \"room\"\nkind = \"simulated\"\ninterval_ms = 100\n\
                [sensors.options]\nmetric = \"temperature\"\nunit = \"°C\"\n";
    let rule = "\n[[alerts.rules]]\nname = \"tank high\"\nsensor = \"tank\"\n\
                condition = \"above\"\nthreshold = 1000.0\n";
    let db = dir.path().join("vigil.db").display().to_string();
    let write = |with_room: bool| {
        let text = format!(
            "{}\n{}\n{}{}",
            crate::util::BASE.replace("[storage]\n", &format!("[storage]\npath = \"{db}\"\n")),
            setup(broker.port),
            if with_room { room } else { "" },
            rule,
        );
        std::fs::write(&path, text).unwrap();
    };
    write(true);
    let cfg = vigil::Config::load(Some(&path)).unwrap();
    let s = TestServer::start_with(dir, cfg).await;

    let temp_topic = "homeassistant/sensor/test/vigil_test_room_temperature/config";
    let tank_topic = "homeassistant/sensor/test/vigil_test_tank_value/config";
    let alert_topic = "homeassistant/binary_sensor/test/vigil_test_alert_tank_high/config";
    let ha = Subscriber::new(broker.port, "t-ha", "homeassistant/#").await;
    s.wait_for("discovery configs", Duration::from_secs(30), async |_| {
        let all = ha.all();
        [temp_topic, tank_topic, alert_topic]
            .iter()
            .all(|t| all.iter().any(|g| g.topic == *t && !g.payload.is_empty()))
    })
    .await;
    // A subscriber that comes later gets them from the broker: retained.
    let late = Subscriber::new(broker.port, "t-ha-late", "homeassistant/#").await;
    s.wait_for(
        "retained discovery configs",
        Duration::from_secs(30),
        async |_| {
            let all = late.all();
            [temp_topic, tank_topic, alert_topic].iter().all(|t| {
                all.iter()
                    .any(|g| g.topic == *t && g.retain && !g.payload.is_empty())
            })
        },
    )
    .await;
    drop(late);
    let c: Value = serde_json::from_str(&ha.last(temp_topic).unwrap()).unwrap();
    assert_eq!(c["state_topic"], "vigil/test/room/temperature");
    assert_eq!(c["unit_of_measurement"], "°C");
    assert_eq!(c["device_class"], "temperature");
    assert_eq!(c["state_class"], "measurement");
    assert_eq!(c["value_template"], "{{ value_json.value }}");
    assert_eq!(c["unique_id"], "vigil_test_room_temperature");
    assert_eq!(c["availability"][0]["topic"], "vigil/test/status");
    assert_eq!(c["device"]["identifiers"][0], "vigil_test");
    assert!(c["device"]["sw_version"].is_string());
    let a: Value = serde_json::from_str(&ha.last(alert_topic).unwrap()).unwrap();
    assert_eq!(a["state_topic"], "vigil/test/alert/tank_high");
    assert_eq!(a["device_class"], "problem");

    // Home Assistant's birth message brings every config again.
    let before = ha.all().iter().filter(|g| g.topic == tank_topic).count();
    publish(broker.port, "homeassistant/status", b"online", false).await;
    s.wait_for(
        "configs again after the birth message",
        Duration::from_secs(30),
        async |_| ha.all().iter().filter(|g| g.topic == tank_topic).count() > before,
    )
    .await;

    // A sensor that leaves the config leaves Home Assistant.
    write(false);
    let (status, body) = s.post("/api/admin/reload", None).await;
    assert_eq!(status, 200, "{body}");
    s.wait_for(
        "an empty config for the removed sensor",
        Duration::from_secs(30),
        async |_| ha.last(temp_topic).as_deref() == Some(""),
    )
    .await;
    assert!(!ha.last(tank_topic).unwrap().is_empty(), "the others stay");
    s.stop().await;
}

/// A CA and a certificate for 127.0.0.1 signed by it, as PEM files in
/// `dir`: (ca.pem, server.pem, server.key).
pub fn test_certificates(dir: &std::path::Path) -> (String, String, String) {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_key = KeyPair::generate().unwrap();
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca_params, ca_key);
    let key = KeyPair::generate().unwrap();
    let cert = CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])
        .unwrap()
        .signed_by(&key, &issuer)
        .unwrap();
    let path = |n: &str| dir.join(n).display().to_string();
    std::fs::write(path("ca.pem"), ca.pem()).unwrap();
    std::fs::write(path("server.pem"), cert.pem()).unwrap();
    std::fs::write(path("server.key"), key.serialize_pem()).unwrap();
    (path("ca.pem"), path("server.pem"), path("server.key"))
}

#[actix_rt::test]
async fn mqtts_verifies_the_broker_with_the_ca_file() {
    let certs = tempfile::tempdir().unwrap();
    let (ca, cert, key) = test_certificates(certs.path());
    let tls_port = free_port();
    let broker = Broker::start_with(&format!(
        "listener {tls_port} 127.0.0.1\ncertfile {cert}\nkeyfile {key}\n"
    ))
    .await;
    let port = broker.port;
    wait_until("the TLS listener", Duration::from_secs(20), || {
        std::net::TcpStream::connect(("127.0.0.1", tls_port)).is_ok()
    })
    .await;
    let sub = Subscriber::new(port, "t-tls", "vigil/test/#").await;
    let tls = |ca_file: &str| {
        setup(port).replace(
            &format!("url = \"mqtt://127.0.0.1:{port}\""),
            &format!("url = \"mqtts://127.0.0.1:{tls_port}\"\nca_file = \"{ca_file}\""),
        )
    };

    // Trusting the system's roots only, the broker's certificate is refused.
    let untrusted = TestServer::start(&tls("").replace("ca_file = \"\"", "")).await;
    untrusted
        .wait_for(
            "a refused TLS handshake",
            Duration::from_secs(30),
            async |s| {
                let h = mqtt_health(s).await;
                h["connection_failures"].as_u64().unwrap() > 0
                    && h["last_error"].as_str().is_some_and(|e| !e.is_empty())
            },
        )
        .await;
    let h = mqtt_health(&untrusted).await;
    assert_eq!(h["connected"], false, "{h}");
    assert_eq!(h["connects"], 0, "{h}");
    untrusted.stop().await;
    assert!(sub.reading_times("vigil/test/tank/value").is_empty());

    // With the CA file, readings arrive over TLS.
    let s = TestServer::start(&tls(&ca)).await;
    s.wait_for("readings over mqtts", Duration::from_secs(30), async |_| {
        sub.reading_times("vigil/test/tank/value").len() >= 10
    })
    .await;
    assert_eq!(mqtt_health(&s).await["connected"], true);
    s.stop().await;
}

#[actix_rt::test]
async fn an_https_webhook_reaches_a_tls_receiver_trusted_through_its_ca_file() {
    let certs = tempfile::tempdir().unwrap();
    let (ca, cert, key) = test_certificates(certs.path());
    use rustls::pki_types::pem::PemObject;
    let chain = rustls::pki_types::CertificateDer::pem_file_iter(&cert)
        .unwrap()
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    let key = rustls::pki_types::PrivateKeyDer::from_pem_file(&key).unwrap();
    let tls = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(chain, key)
    .unwrap();
    let seen = Arc::new(Mutex::new(Vec::<Value>::new()));
    let sink = seen.clone();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let server = actix_web::HttpServer::new(move || {
        let sink = sink.clone();
        actix_web::App::new().default_service(actix_web::web::to(
            move |body: actix_web::web::Bytes| {
                let sink = sink.clone();
                async move {
                    if let Ok(v) = serde_json::from_slice::<Value>(&body) {
                        sink.lock().unwrap().push(v);
                    }
                    actix_web::HttpResponse::Ok().finish()
                }
            },
        ))
    })
    .workers(1)
    .disable_signals()
    .listen_rustls_0_23(listener, tls)
    .unwrap()
    .run();
    actix_rt::spawn(server);

    let s = TestServer::start(&format!(
        r#"
[[sensors]]
name = "tank"
kind = "simulated"
interval_ms = 50
[sensors.options]
waveform = "constant"
offset = 30.0

[[alerts.rules]]
name = "tank high"
sensor = "tank"
condition = "above"
threshold = 25.0
severity = "critical"

[[alerts.webhooks]]
url = "https://127.0.0.1:{}/hook"
ca_file = "{ca}"
backoff_ms = 50
"#,
        addr.port()
    ))
    .await;
    s.wait_for(
        "the alert at the HTTPS receiver",
        Duration::from_secs(30),
        async |_| !seen.lock().unwrap().is_empty(),
    )
    .await;
    let got = seen.lock().unwrap()[0].clone();
    assert_eq!(got["event"], "fired", "{got}");
    assert_eq!(got["alert"]["rule"], "tank high", "{got}");
    let hook = s.get_ok("/api/alerts/rules").await["webhooks"][0].clone();
    assert_eq!(hook["failed"], 0, "{hook}");
    s.stop().await;
}

#[actix_rt::test]
async fn a_broker_that_accepts_and_then_never_reads_stalls_nothing() {
    use std::io::{Read, Write};
    // Answers CONNECT with a CONNACK, then never reads another byte.
    let silent = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = silent.local_addr().unwrap().port();
    let held = Arc::new(Mutex::new(Vec::new()));
    let keep = held.clone();
    std::thread::spawn(move || {
        for mut c in silent.incoming().flatten() {
            let mut buf = [0u8; 512];
            if c.read(&mut buf).is_ok_and(|n| n > 0) {
                let _ = c.write_all(&[0x20, 0x02, 0x00, 0x00]);
            }
            keep.lock().unwrap().push(c);
        }
    });
    // A fast sensor with many values per read fills the socket quickly.
    let s = TestServer::start(&setup(port).replace("interval_ms = 50", "interval_ms = 20")).await;
    s.wait_for("a connection", Duration::from_secs(30), async |s| {
        mqtt_health(s).await["connects"].as_u64().unwrap_or(0) >= 1
    })
    .await;
    let first = newest_ts(&s).await;
    s.wait_for(
        "100 more readings stored",
        Duration::from_secs(60),
        async |s| stored_times(s, i64::MAX).await.range(first + 1..).count() >= 100,
    )
    .await;
    let (status, health) = s.get("/health").await;
    assert_eq!(status, 200, "{health}");
    let h = &health["mqtt"];
    // Nothing was confirmed by a broker that reads nothing.
    assert_eq!(h["published"], 0, "{h}");
    s.stop().await;
}

/// A config file in `dir` with `setup(port)` and `extra` (sensors, rules),
/// rewritten by the returned closure; the server started from it.
async fn start_from_file(
    port: u16,
    extra: &str,
) -> (TestServer, Box<dyn Fn(&str)>, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("vigil.toml");
    let db = dir.path().join("vigil.db").display().to_string();
    let base = format!(
        "{}\n{}\n",
        crate::util::BASE.replace("[storage]\n", &format!("[storage]\npath = \"{db}\"\n")),
        setup(port),
    );
    let p = path.clone();
    let write = move |extra: &str| std::fs::write(&p, format!("{base}{extra}")).unwrap();
    write(extra);
    let cfg = vigil::Config::load(Some(&path)).unwrap();
    (
        TestServer::start_with(dir, cfg).await,
        Box::new(write),
        path,
    )
}

/// Two constant sensors, `hot` at `hot` and `cold` at `cold`, each with a
/// rule firing above 25.
fn two_rules(hot: f64, cold: f64) -> String {
    let mut out = String::new();
    for (name, v) in [("hot", hot), ("cold", cold)] {
        out.push_str(&format!(
            "\n[[sensors]]\nname = \"{name}\"\nkind = \"simulated\"\ninterval_ms = 50\n\
             [sensors.options]\nwaveform = \"constant\"\noffset = {v:.1}\n\
             \n[[alerts.rules]]\nname = \"{name} high\"\nsensor = \"{name}\"\n\
             condition = \"above\"\nthreshold = 25.0\n"
        ));
    }
    out
}

/// The alert state on a rule's topic, as the subscriber last got it.
fn alert_state(sub: &Subscriber, rule: &str) -> Option<(String, String)> {
    let v: Value = serde_json::from_str(&sub.last(&format!("vigil/test/alert/{rule}"))?).ok()?;
    Some((
        v["event"].as_str()?.to_owned(),
        v["alert"]["state"].as_str()?.to_owned(),
    ))
}

#[actix_rt::test]
async fn alerts_that_change_during_an_outage_are_published_on_reconnect() {
    let mut broker = Broker::start().await;
    let sub = Subscriber::new(broker.port, "t-alerts", "vigil/test/alert/#").await;
    let (s, write, _) = start_from_file(broker.port, &two_rules(30.0, 20.0)).await;
    s.wait_for(
        "hot high firing at the broker",
        Duration::from_secs(30),
        async |_| alert_state(&sub, "hot_high").is_some_and(|(_, st)| st == "firing"),
    )
    .await;

    broker.stop().await;
    s.wait_for(
        "the bridge to see the outage",
        Duration::from_secs(30),
        async |s| mqtt_health(s).await["connected"] == false,
    )
    .await;
    // During the outage, hot cools down and cold heats up.
    write(&two_rules(20.0, 30.0));
    let (status, body) = s.post("/api/admin/reload", None).await;
    assert_eq!(status, 200, "{body}");
    s.wait_for(
        "hot resolved and cold fired, counted as waiting",
        Duration::from_secs(30),
        async |s| {
            let a = s.get_ok("/api/alerts?limit=100").await;
            let a = a["alerts"].as_array().unwrap().clone();
            let state = |rule: &str| {
                a.iter()
                    .find(|x| x["rule"] == rule)
                    .map(|x| x["state"].as_str().unwrap_or("").to_owned())
            };
            state("hot high").as_deref() == Some("resolved")
                && state("cold high").as_deref() == Some("firing")
                && mqtt_health(s).await["alert_backlog"].as_u64() == Some(2)
        },
    )
    .await;
    let before = mqtt_health(&s).await["alerts_republished"]
        .as_u64()
        .unwrap();

    broker.resume().await;
    s.wait_for(
        "both current states at the subscriber",
        Duration::from_secs(30),
        async |_| {
            alert_state(&sub, "hot_high") == Some(("resolved".into(), "resolved".into()))
                && alert_state(&sub, "cold_high") == Some(("fired".into(), "firing".into()))
        },
    )
    .await;
    let h = mqtt_health(&s).await;
    assert_eq!(h["alert_backlog"], 0, "{h}");
    assert!(
        h["alerts_republished"].as_u64().unwrap() >= before + 2,
        "{h}"
    );
    // Retained: what Home Assistant finds when it (re)subscribes.
    let late = Subscriber::new(broker.port, "t-alerts-late", "vigil/test/alert/#").await;
    s.wait_for("the retained states", Duration::from_secs(30), async |_| {
        alert_state(&late, "hot_high").is_some_and(|(_, st)| st == "resolved")
            && alert_state(&late, "cold_high").is_some_and(|(_, st)| st == "firing")
            && late.all().iter().all(|g| g.retain)
    })
    .await;
    s.stop().await;
}

#[actix_rt::test]
async fn a_reload_announces_new_rules_and_sensors_and_clears_removed_rules() {
    let broker = Broker::start().await;
    let tank_rule = "\n[[alerts.rules]]\nname = \"tank high\"\nsensor = \"tank\"\n\
                     condition = \"above\"\nthreshold = 1000.0\n";
    let pump = "\n[[sensors]]\nname = \"pump\"\nkind = \"simulated\"\ninterval_ms = 100\n\
                [sensors.options]\nmetric = \"pressure\"\nunit = \"hPa\"\n\
                \n[[alerts.rules]]\nname = \"pump low\"\nsensor = \"pump\"\nmetric = \"pressure\"\n\
                condition = \"below\"\nthreshold = -1000.0\n";
    let (s, write, _) = start_from_file(broker.port, tank_rule).await;
    let tank_topic = "homeassistant/sensor/test/vigil_test_tank_value/config";
    let tank_rule_topic = "homeassistant/binary_sensor/test/vigil_test_alert_tank_high/config";
    let pump_topic = "homeassistant/sensor/test/vigil_test_pump_pressure/config";
    let pump_rule_topic = "homeassistant/binary_sensor/test/vigil_test_alert_pump_low/config";
    let ha = Subscriber::new(broker.port, "t-ha-reload", "homeassistant/#").await;
    s.wait_for("the first configs", Duration::from_secs(30), async |_| {
        ha.last(tank_topic).is_some_and(|c| !c.is_empty())
            && ha.last(tank_rule_topic).is_some_and(|c| !c.is_empty())
    })
    .await;
    assert!(ha.last(pump_topic).is_none() && ha.last(pump_rule_topic).is_none());

    // A new sensor with its rule; the tank's rule goes.
    write(pump);
    let (status, body) = s.post("/api/admin/reload", None).await;
    assert_eq!(status, 200, "{body}");
    s.wait_for(
        "configs for the new sensor and rule, none for the removed rule",
        Duration::from_secs(30),
        async |_| {
            ha.last(pump_topic).is_some_and(|c| !c.is_empty())
                && ha.last(pump_rule_topic).is_some_and(|c| !c.is_empty())
                && ha.last(tank_rule_topic).as_deref() == Some("")
        },
    )
    .await;
    let c: Value = serde_json::from_str(&ha.last(pump_topic).unwrap()).unwrap();
    assert_eq!(c["device_class"], "pressure");
    assert_eq!(c["unit_of_measurement"], "hPa");
    let a: Value = serde_json::from_str(&ha.last(pump_rule_topic).unwrap()).unwrap();
    assert_eq!(a["state_topic"], "vigil/test/alert/pump_low");
    assert!(!ha.last(tank_topic).unwrap().is_empty(), "the tank stays");

    // What the broker keeps: the new configs, and nothing for the rule.
    let late = Subscriber::new(broker.port, "t-ha-reload-late", "homeassistant/#").await;
    s.wait_for(
        "the retained configs",
        Duration::from_secs(30),
        async |_| {
            let all = late.all();
            [tank_topic, pump_topic, pump_rule_topic].iter().all(|t| {
                all.iter()
                    .any(|g| g.topic == *t && g.retain && !g.payload.is_empty())
            })
        },
    )
    .await;
    assert!(
        late.all()
            .iter()
            .all(|g| g.topic != tank_rule_topic || g.payload.is_empty()),
        "the removed rule's config is not retained"
    );
    s.stop().await;
}

/// The page's text at `path`.
async fn page_text(s: &TestServer, path: &str) -> String {
    let body = s
        .client()
        .get(s.url(path))
        .send()
        .await
        .unwrap()
        .body()
        .await
        .unwrap();
    String::from_utf8_lossy(&body).into_owned()
}

#[actix_rt::test]
async fn the_dashboard_shows_the_broker_state_from_health() {
    // The dashboard's MQTT panel reads /health's `mqtt`.
    let plain = TestServer::start("").await;
    let html = page_text(&plain, "/").await;
    assert!(html.contains("id=\"mqtt\""), "the panel is on the page");
    let js = page_text(&plain, "/assets/app.js").await;
    assert!(
        js.contains("fetch('/health')") && js.contains(".mqtt") && js.contains("m.state"),
        "the script reads the broker state from /health"
    );
    let h = mqtt_health(&plain).await;
    assert_eq!(h["state"], "disabled", "{h}");
    assert_eq!(h["enabled"], false, "{h}");
    plain.stop().await;

    // Nothing listens on the port yet: connecting, with the last error.
    let port = free_port();
    let s = TestServer::start(&setup(port)).await;
    s.wait_for(
        "connecting, with an error and a backlog",
        Duration::from_secs(30),
        async |s| {
            let h = mqtt_health(s).await;
            h["state"] == "connecting"
                && h["last_error"].as_str().is_some_and(|e| !e.is_empty())
                && h["backlog"].as_u64().is_some_and(|b| b > 0)
        },
    )
    .await;
    s.stop().await;
    let broker = Broker::start().await;
    let s = TestServer::start(&setup(broker.port)).await;
    s.wait_for("connected", Duration::from_secs(30), async |s| {
        let h = mqtt_health(s).await;
        h["state"] == "connected" && h["last_error"].is_null()
    })
    .await;
    s.stop().await;
}
