//! `kind = "mqtt"` sensors against a real mosquitto: what is published to
//! the topic is read as readings (a bare number, or a field of a JSON
//! payload), a bad payload is counted while the sensor carries on, and
//! silence or a broker that goes away makes the sensor `unavailable` in
//! `/api/sensors` and on the live feed until messages come back.

use std::time::{Duration, Instant};

use serde_json::Value;

use crate::live::Client;
use crate::mqtt::{Broker, publish, test_certificates};
use crate::util::TestServer;

/// `[mqtt]` for the test broker: subscribing only (no bridge), quick
/// reconnects, then `sensors`.
fn setup(port: u16, sensors: &str) -> String {
    format!(
        r#"
[mqtt]
url = "mqtt://127.0.0.1:{port}"
node_id = "test"
reconnect_min_ms = 100
reconnect_max_ms = 400

{sensors}
"#
    )
}

/// The (value, unit) of every stored reading of `sensor`/`metric`, oldest
/// first.
async fn values(s: &TestServer, sensor: &str, metric: &str) -> Vec<(f64, String)> {
    let page = s
        .get_ok(&format!(
            "/api/readings?sensor={sensor}&metric={metric}&order=asc&limit=1000"
        ))
        .await;
    page["readings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["value"].as_f64().unwrap(),
                r["unit"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

async fn wait_values(s: &TestServer, sensor: &str, metric: &str, want: &[f64]) {
    let start = Instant::now();
    loop {
        let got: Vec<f64> = values(s, sensor, metric)
            .await
            .iter()
            .map(|v| v.0)
            .collect();
        if got == want {
            return;
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "{sensor}/{metric}: {got:?}, expected {want:?}; {}",
            s.sensor(sensor).await
        );
        actix_rt::time::sleep(Duration::from_millis(20)).await;
    }
}

#[actix_rt::test]
async fn published_numbers_and_json_fields_become_readings_and_bad_payloads_are_counted() {
    let broker = Broker::start().await;
    // Retained: waiting for the sensors when they first subscribe.
    publish(broker.port, "dev/plain", b"20.5", true).await;
    publish(
        broker.port,
        "z2m/kitchen",
        br#"{"climate":{"temperature":19.25},"battery":90}"#,
        true,
    )
    .await;
    let s = TestServer::start(&setup(
        broker.port,
        r#"
[[sensors]]
name = "plain"
kind = "mqtt"
interval_ms = 100
[sensors.options]
topic = "dev/plain"
unit = "°C"

[[sensors]]
name = "kitchen"
kind = "mqtt"
interval_ms = 100
[sensors.options]
topic = "z2m/kitchen"
json_path = "climate.temperature"
unit = "°C"
"#,
    ))
    .await;
    wait_values(&s, "plain", "value", &[20.5]).await;
    wait_values(&s, "kitchen", "temperature", &[19.25]).await;

    // Subscribed now: live messages, a bad one among them.
    for p in [&b"21.5"[..], b"22.5", b"warm", b"23.5"] {
        publish(broker.port, "dev/plain", p, false).await;
    }
    wait_values(&s, "plain", "value", &[20.5, 21.5, 22.5, 23.5]).await;
    for p in [
        &br#"{"battery":80}"#[..],
        b"not json",
        br#"{"climate":{"temperature":18}}"#,
    ] {
        publish(broker.port, "z2m/kitchen", p, false).await;
    }
    wait_values(&s, "kitchen", "temperature", &[19.25, 18.0]).await;

    let units: Vec<String> = values(&s, "plain", "value")
        .await
        .into_iter()
        .map(|v| v.1)
        .collect();
    assert!(units.iter().all(|u| u == "°C"), "{units:?}");
    let plain = s.sensor("plain").await;
    assert_eq!(plain["kind"], "mqtt");
    assert_eq!(plain["status"], "running", "{plain}");
    assert_eq!(plain["rejected"], 1, "{plain}");
    assert!(
        plain["last_rejected"]
            .as_str()
            .unwrap()
            .contains("not a number"),
        "{plain}"
    );
    assert_eq!(plain["errors"], 0, "a bad payload is no error: {plain}");
    assert_eq!(plain["restarts"], 0, "{plain}");
    assert_eq!(plain["last_values"][0]["value"], 23.5, "{plain}");
    // The counts are read with the next read: wait for both.
    s.wait_for(
        "both kitchen rejects counted",
        Duration::from_secs(20),
        async |s| s.sensor("kitchen").await["rejected"] == 2,
    )
    .await;
    let kitchen = s.sensor("kitchen").await;
    assert_eq!(kitchen["status"], "running", "{kitchen}");
    assert_eq!(kitchen["errors"], 0, "{kitchen}");
    // Prometheus sees the same counts.
    let mut res = s.client().get(s.url("/metrics")).send().await.unwrap();
    let metrics = String::from_utf8(res.body().await.unwrap().to_vec()).unwrap();
    for line in [
        "vigil_sensor_rejected_total{sensor=\"plain\"} 1",
        "vigil_sensor_rejected_total{sensor=\"kitchen\"} 2",
    ] {
        assert!(metrics.contains(line), "{line} missing from\n{metrics}");
    }
    s.stop().await;
}

/// The next `sensor_availability` status of `sensor` on the feed saying
/// `available` (a new reason while unavailable is announced too).
async fn availability(c: &mut Client, sensor: &str, available: bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let left = deadline
            .checked_duration_since(Instant::now())
            .expect("an availability change on the feed within 20 s");
        let st = c.next_of_type("status", left).await;
        if st["event"]["kind"] == "sensor_availability"
            && st["event"]["sensor"] == sensor
            && st["event"]["available"] == available
        {
            return st["event"].clone();
        }
    }
}

async fn wait_status(s: &TestServer, sensor: &str, status: &str) -> Value {
    s.wait_for(
        &format!("{sensor} to be {status}"),
        Duration::from_secs(20),
        async |s| s.sensor(sensor).await["status"] == status,
    )
    .await;
    s.sensor(sensor).await
}

#[actix_rt::test]
async fn silence_or_a_lost_broker_makes_the_sensor_unavailable_until_messages_return() {
    let mut broker = Broker::start().await;
    publish(broker.port, "hall/door", b"1", true).await;
    let s = TestServer::start(&setup(
        broker.port,
        r#"
[[sensors]]
name = "door"
kind = "mqtt"
interval_ms = 100
[sensors.options]
topic = "hall/door"
max_age_ms = 1000
"#,
    ))
    .await;
    let mut feed = Client::connect(&s).await;
    wait_values(&s, "door", "value", &[1.0]).await;

    // Silence past max_age_ms: unavailable, not failed.
    let door = wait_status(&s, "door", "unavailable").await;
    let reason = door["unavailable_reason"].as_str().unwrap();
    assert!(
        reason.contains("hall/door") && reason.contains("max_age_ms"),
        "{door}"
    );
    assert_eq!(door["errors"], 0, "{door}");
    assert_eq!(door["restarts"], 0, "{door}");
    let ev = availability(&mut feed, "door", false).await;
    assert!(
        ev["reason"].as_str().unwrap().contains("max_age_ms"),
        "{ev}"
    );

    // A message brings it back.
    publish(broker.port, "hall/door", b"2", false).await;
    wait_status(&s, "door", "running").await;
    availability(&mut feed, "door", true).await;
    wait_values(&s, "door", "value", &[1.0, 2.0]).await;

    // The broker goes away: unavailable, saying so.
    broker.stop().await;
    let door = wait_status(&s, "door", "unavailable").await;
    let reason = door["unavailable_reason"].as_str().unwrap();
    assert!(reason.contains("not connected"), "{door}");
    availability(&mut feed, "door", false).await;

    // Back: the sensor reconnects and resubscribes on its own; the
    // retained repeat is not news, a new message is.
    broker.resume().await;
    s.wait_for("the door to read 3", Duration::from_secs(20), async |s| {
        publish(broker.port, "hall/door", b"3", false).await;
        s.sensor("door").await["last_values"][0]["value"] == 3.0
    })
    .await;
    let door = wait_status(&s, "door", "running").await;
    assert_eq!(door["errors"], 0, "{door}");
    assert_eq!(door["restarts"], 0, "{door}");
    availability(&mut feed, "door", true).await;
    let got: Vec<f64> = values(&s, "door", "value")
        .await
        .iter()
        .map(|v| v.0)
        .collect();
    assert_eq!(&got[..2], &[1.0, 2.0], "{got:?}");
    assert!(
        got[2..].iter().all(|v| *v == 3.0),
        "the retained 1 is not read again: {got:?}"
    );
    s.stop().await;
}

#[actix_rt::test]
async fn an_mqtt_sensor_subscribes_over_mqtts_with_the_ca_file() {
    let certs = tempfile::tempdir().unwrap();
    let (ca, cert, key) = test_certificates(certs.path());
    let tls_port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let broker = Broker::start_with(&format!(
        "listener {tls_port} 127.0.0.1\ncertfile {cert}\nkeyfile {key}\n"
    ))
    .await;
    publish(broker.port, "tls/probe", b"7.5", true).await;
    let s = TestServer::start(&format!(
        r#"
[mqtt]
url = "mqtts://127.0.0.1:{tls_port}"
ca_file = "{ca}"
reconnect_min_ms = 100
reconnect_max_ms = 400

[[sensors]]
name = "probe"
kind = "mqtt"
interval_ms = 100
[sensors.options]
topic = "tls/probe"
"#
    ))
    .await;
    // Published in plain text, received over TLS.
    wait_values(&s, "probe", "value", &[7.5]).await;
    s.stop().await;
}
