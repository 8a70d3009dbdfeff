//! The live feed over real WebSockets: subscriptions and batching, limits
//! and close codes, slow and silent clients, and a hub restart.

use std::time::{Duration, Instant};

use actix_codec::Framed;
use awc::BoxedSocket;
use awc::ws::{Codec, Frame, Message};
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};

use crate::util::{TestServer, config};
use crate::wsclient::WsClient;

const TWO: &str = r#"
[[sensors]]
name = "fast"
kind = "simulated"
interval_ms = 20

[[sensors]]
name = "other"
kind = "simulated"
interval_ms = 30
"#;

/// A test client that answers pings unless told to stay silent.
pub struct Client {
    framed: Framed<BoxedSocket, Codec>,
    answer_pings: bool,
}

impl Client {
    pub async fn connect(s: &TestServer) -> Client {
        let (_, framed) = awc::Client::new()
            .ws(s.url("/ws"))
            .max_frame_size(1 << 20)
            .connect()
            .await
            .expect("websocket connect");
        let mut c = Client {
            framed,
            answer_pings: true,
        };
        let hello = c.next_of_type("hello", Duration::from_secs(5)).await;
        assert!(hello["limits"]["throttle_ms"].is_u64(), "{hello}");
        c
    }

    pub async fn send(&mut self, v: Value) {
        self.send_text(&v.to_string()).await;
    }

    pub async fn send_text(&mut self, t: &str) {
        self.framed
            .send(Message::Text(t.to_owned().into()))
            .await
            .expect("send");
    }

    /// The next frame within `within`, answering pings on the way.
    async fn frame(&mut self, within: Duration) -> Option<Frame> {
        let deadline = Instant::now() + within;
        loop {
            let left = deadline.checked_duration_since(Instant::now())?;
            let frame = match tokio::time::timeout(left, self.framed.next()).await {
                Ok(Some(Ok(f))) => f,
                _ => return None,
            };
            if let Frame::Ping(p) = &frame {
                if self.answer_pings {
                    let _ = self.framed.send(Message::Pong(p.clone())).await;
                }
                continue;
            }
            return Some(frame);
        }
    }

    /// The next JSON message within `within`.
    pub async fn next_json(&mut self, within: Duration) -> Option<Value> {
        match self.frame(within).await? {
            Frame::Text(t) => Some(serde_json::from_slice(&t).expect("server sent JSON")),
            Frame::Close(reason) => panic!("closed unexpectedly: {reason:?}"),
            _ => None,
        }
    }

    /// The next message of a type, skipping others.
    pub async fn next_of_type(&mut self, ty: &str, within: Duration) -> Value {
        let deadline = Instant::now() + within;
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            if let Some(v) = self.next_json(left).await
                && v["type"] == ty
            {
                return v;
            }
        }
        panic!("no `{ty}` message within {within:?}");
    }

    /// Reads until the server closes; the close code.
    pub async fn close_code(&mut self, within: Duration) -> Option<u16> {
        let deadline = Instant::now() + within;
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            match self.frame(left).await? {
                Frame::Close(reason) => return reason.map(|r| u16::from(r.code)),
                _ => continue,
            }
        }
        None
    }
}

/// The next JSON message from a bare client, if one comes within `within`.
async fn next_json(c: &mut WsClient, within: Duration) -> Option<Value> {
    match c.next_text(within).await {
        Ok(Some(t)) => serde_json::from_str(&t).ok(),
        _ => None,
    }
}

fn sensors_in(batch: &Value) -> Vec<String> {
    batch["readings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["sensor"].as_str().unwrap().to_owned())
        .collect()
}

#[actix_rt::test]
async fn subscribe_receives_batches_of_only_what_was_asked_and_unsubscribe_stops_them() {
    let s = TestServer::start(TWO).await;
    let mut c = Client::connect(&s).await;
    c.send(json!({"type": "subscribe", "sensors": ["fast"]}))
        .await;
    let ack = c.next_of_type("subscribed", Duration::from_secs(5)).await;
    assert_eq!(ack["sensors"], json!(["fast"]));

    let mut seqs = Vec::new();
    for _ in 0..5 {
        let b = c.next_of_type("readings", Duration::from_secs(5)).await;
        assert!(sensors_in(&b).iter().all(|n| n == "fast"), "{b}");
        assert_eq!(b["dropped"], 0);
        let r = &b["readings"][0];
        assert!(
            r["value"].is_f64() && r["ts_ms"].is_i64() && r["metric"] == "value",
            "{b}"
        );
        seqs.push(b["seq"].as_u64().unwrap());
    }
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "{seqs:?}");

    // Batching: a 20 ms sensor within a 100 ms window gives batches of
    // several readings.
    let mut most = 0;
    for _ in 0..10 {
        let b = c.next_of_type("readings", Duration::from_secs(5)).await;
        most = most.max(b["readings"].as_array().unwrap().len());
    }
    assert!(most >= 2, "readings of one window come together");

    c.send(json!({"type": "subscribe", "sensors": ["other"]}))
        .await;
    c.next_of_type("subscribed", Duration::from_secs(5)).await;
    let mut seen = std::collections::HashSet::new();
    for _ in 0..20 {
        let b = c.next_of_type("readings", Duration::from_secs(5)).await;
        seen.extend(sensors_in(&b));
    }
    assert!(seen.contains("fast") && seen.contains("other"), "{seen:?}");

    c.send(json!({"type": "unsubscribe"})).await;
    let ack = c.next_of_type("subscribed", Duration::from_secs(5)).await;
    assert_eq!(ack["sensors"], json!([]));
    // Batches already queued may still arrive; then nothing more.
    let quiet_after = Instant::now() + Duration::from_secs(10);
    let mut quiet_since = Instant::now();
    loop {
        match c.next_json(Duration::from_millis(600)).await {
            Some(v) if v["type"] == "readings" => quiet_since = Instant::now(),
            Some(_) => {}
            None => break,
        }
        assert!(
            Instant::now() < quiet_after,
            "readings kept coming after unsubscribe"
        );
    }
    assert!(quiet_since.elapsed() >= Duration::from_millis(500));
    s.stop().await;
}

#[actix_rt::test]
async fn pings_and_bad_messages_are_answered_and_abuse_is_closed_with_1008() {
    let s = TestServer::start(TWO).await;
    let mut c = Client::connect(&s).await;
    c.send(json!({"type": "ping", "id": 42})).await;
    let pong = c.next_of_type("pong", Duration::from_secs(5)).await;
    assert_eq!(pong["id"], 42);

    c.send_text("{this is not json").await;
    let e = c.next_of_type("error", Duration::from_secs(5)).await;
    assert_eq!(e["code"], "bad_message");
    c.send(json!({"type": "dance"})).await;
    let e = c.next_of_type("error", Duration::from_secs(5)).await;
    assert!(
        e["message"]
            .as_str()
            .unwrap()
            .contains("unknown message type"),
        "{e}"
    );
    c.send(json!({"type": "subscribe", "sensors": ["nope"]}))
        .await;
    let e = c.next_of_type("error", Duration::from_secs(5)).await;
    assert_eq!(e["code"], "unknown_sensor");

    // Keep misbehaving: the allowance (max_errors = 10) runs out.
    for _ in 0..10 {
        c.send_text("garbage").await;
    }
    assert_eq!(c.close_code(Duration::from_secs(5)).await, Some(1008));
    s.wait_for(
        "the abusive session to go",
        Duration::from_secs(5),
        async |s| {
            let l = s.get_ok("/api/live").await;
            l["sessions"] == 0 && l["closed_abuse"] == 1
        },
    )
    .await;
    s.stop().await;
}

#[actix_rt::test]
async fn an_oversized_frame_is_closed_with_1009() {
    let s = TestServer::start(TWO).await;
    let mut c = Client::connect(&s).await;
    let big = format!(r#"{{"type":"ping","pad":"{}"}}"#, "x".repeat(10_000));
    c.send_text(&big).await;
    assert_eq!(c.close_code(Duration::from_secs(5)).await, Some(1009));
    s.stop().await;
}

#[actix_rt::test]
async fn a_message_flood_is_rate_limited() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(&dir, TWO);
    // Burst 40, then 1 per second (so a slow machine's sends cannot refill
    // the bucket): a few over the limit, fewer than the ten strikes that
    // would close the session.
    cfg.live.max_messages_per_sec = 1;
    let s = TestServer::start_with(dir, cfg).await;
    let mut c = Client::connect(&s).await;
    for i in 0..45 {
        c.send(json!({"type": "ping", "id": i})).await;
    }
    let e = c.next_of_type("error", Duration::from_secs(5)).await;
    assert_eq!(e["code"], "rate_limited", "{e}");
    s.stop().await;
}

#[actix_rt::test]
async fn the_session_cap_refuses_extra_clients_with_503() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(&dir, TWO);
    cfg.live.max_sessions = 2;
    let s = TestServer::start_with(dir, cfg).await;
    let _a = Client::connect(&s).await;
    let _b = Client::connect(&s).await;
    let err = awc::Client::new().ws(s.url("/ws")).connect().await.err();
    match err {
        Some(awc::error::WsClientError::InvalidResponseStatus(status)) => {
            assert_eq!(status.as_u16(), 503)
        }
        other => panic!("expected a 503 refusal, got {other:?}"),
    }
    let (status, body) = s.get("/ws").await;
    assert_eq!(status, 503, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("max_sessions")
    );
    assert_eq!(s.get_ok("/api/live").await["refused"], 2);
    drop(_a);
    s.wait_for("a place to free up", Duration::from_secs(10), async |s| {
        s.get_ok("/api/live").await["sessions"] == 1
    })
    .await;
    let _c = Client::connect(&s).await;
    s.stop().await;
}

#[actix_rt::test]
async fn plain_requests_and_foreign_origins_are_refused() {
    let s = TestServer::start(TWO).await;
    let dir = tempfile::tempdir().unwrap();
    drop(dir);
    let res = awc::Client::new()
        .get(s.url("/ws"))
        .insert_header(("Origin", "http://evil.example"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 403);
    let (status, body) = s.get("/ws").await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"]["parameter"], "upgrade");
    s.stop().await;
}

/// Sensors producing about 200 readings a second, enough to jam a small
/// socket quickly.
const BUSY: &str = r#"
[[sensors]]
name = "fast"
kind = "simulated"
interval_ms = 10

[[sensors]]
name = "other"
kind = "simulated"
interval_ms = 10
"#;

#[actix_rt::test]
async fn a_slow_reader_loses_the_oldest_updates_and_is_told_how_many() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(&dir, BUSY);
    cfg.live.queue_capacity = 4;
    cfg.live.socket_send_buffer = 4096;
    cfg.live.stall_timeout_ms = 60_000;
    cfg.live.heartbeat_timeout_ms = 60_000;
    let s = TestServer::start_with(dir, cfg).await;

    let mut slow = WsClient::connect(s.addr, Some(4096)).await.unwrap();
    slow.send_text(r#"{"type":"subscribe"}"#).await.unwrap();
    // Not reading: the socket jams and the session's queue overflows.
    s.wait_for(
        "updates to be dropped",
        Duration::from_secs(30),
        async |s| s.get_ok("/api/live").await["updates_dropped"].as_u64() > Some(0),
    )
    .await;
    let dropped = s.get_ok("/api/live").await["updates_dropped"]
        .as_u64()
        .unwrap();
    // Reading again, the client is told what it missed.
    let mut told = 0;
    let deadline = Instant::now() + Duration::from_secs(20);
    while told < dropped && Instant::now() < deadline {
        if let Some(v) = next_json(&mut slow, Duration::from_secs(5)).await
            && v["type"] == "readings"
        {
            told += v["dropped"].as_u64().unwrap();
        }
    }
    assert!(
        told >= dropped,
        "told of {told} dropped updates, {dropped} were dropped"
    );
    assert_eq!(
        s.get_ok("/api/live").await["sessions"],
        1,
        "slow is not stalled"
    );
    s.stop().await;
}

#[actix_rt::test]
async fn a_stalled_client_delays_no_one_and_is_closed() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(&dir, BUSY);
    cfg.live.queue_capacity = 4;
    cfg.live.socket_send_buffer = 4096;
    cfg.live.heartbeat_interval_ms = 200;
    cfg.live.heartbeat_timeout_ms = 60_000;
    cfg.live.stall_timeout_ms = 1500;
    let s = TestServer::start_with(dir, cfg).await;

    let mut stalled = WsClient::connect(s.addr, Some(4096)).await.unwrap();
    stalled.send_text(r#"{"type":"subscribe"}"#).await.unwrap();
    // From here on the stalled client never reads.
    let mut healthy = Client::connect(&s).await;
    healthy.send(json!({"type": "subscribe"})).await;
    healthy
        .next_of_type("subscribed", Duration::from_secs(5))
        .await;

    // The healthy client's batches keep their cadence (one per 100 ms
    // window) while the other jams and is cut off.
    let mut last = Instant::now();
    let mut worst = Duration::ZERO;
    let mut batches = 0;
    let watch_until = Instant::now() + Duration::from_secs(4);
    while Instant::now() < watch_until {
        healthy
            .next_of_type("readings", Duration::from_secs(5))
            .await;
        worst = worst.max(last.elapsed());
        last = Instant::now();
        batches += 1;
    }
    assert!(batches >= 10, "{batches} batches in 4 s");
    assert!(
        worst < Duration::from_millis(1000),
        "healthy client waited {worst:?}"
    );

    s.wait_for(
        "the stalled client to be closed",
        Duration::from_secs(15),
        async |s| {
            let l = s.get_ok("/api/live").await;
            l["sessions"] == 1 && l["closed_stalled"].as_u64() >= Some(1)
        },
    )
    .await;
    assert!(
        stalled.ends_within(Duration::from_secs(10)).await,
        "the stalled connection was shut down"
    );
    healthy
        .next_of_type("readings", Duration::from_secs(5))
        .await;
    s.stop().await;
}

#[actix_rt::test]
async fn a_stalled_connection_is_released_while_the_client_stays_silent() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(&dir, BUSY);
    cfg.live.queue_capacity = 4;
    cfg.live.socket_send_buffer = 4096;
    cfg.live.heartbeat_interval_ms = 200;
    cfg.live.heartbeat_timeout_ms = 60_000;
    cfg.live.stall_timeout_ms = 1000;
    let s = TestServer::start_with(dir, cfg).await;
    // Fresh HTTP/1.0 connections only, so the count is exact: the request
    // asking is the only other open connection.
    let live = async || -> Value {
        let body = crate::util::http_get_fresh(s.addr, "/api/live").await;
        serde_json::from_str(&body).unwrap()
    };
    // The harness's own pooled connection expires with the keep-alive.
    let deadline = Instant::now() + Duration::from_secs(30);
    while live().await["connections"] != 1 {
        assert!(Instant::now() < deadline, "idle connections never closed");
        actix_rt::time::sleep(Duration::from_millis(100)).await;
    }
    let mut stalled = WsClient::connect(s.addr, Some(4096)).await.unwrap();
    stalled.send_text(r#"{"type":"subscribe"}"#).await.unwrap();
    assert_eq!(live().await["connections"], 2);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let l = live().await;
        if l["closed_stalled"] == 1 && l["connections"] == 1 {
            break;
        }
        assert!(Instant::now() < deadline, "still held: {l}");
        actix_rt::time::sleep(Duration::from_millis(50)).await;
    }
    drop(stalled);
    s.stop().await;
}

#[actix_rt::test]
async fn a_client_that_never_answers_pings_is_closed_with_4000() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(&dir, TWO);
    cfg.live.heartbeat_interval_ms = 100;
    cfg.live.heartbeat_timeout_ms = 500;
    let s = TestServer::start_with(dir, cfg).await;
    let mut c = Client::connect(&s).await;
    c.answer_pings = false;
    assert_eq!(c.close_code(Duration::from_secs(10)).await, Some(4000));
    s.stop().await;
}

#[actix_rt::test]
async fn a_restarted_hub_carries_on_feeding_connected_clients() {
    let s = TestServer::start(TWO).await;
    let mut c = Client::connect(&s).await;
    c.send(json!({"type": "subscribe"})).await;
    c.next_of_type("readings", Duration::from_secs(5)).await;

    let res = awc::Client::new()
        .post(s.url("/api/admin/restart/live"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 202);
    s.wait_for(
        "the hub to be restarted",
        Duration::from_secs(10),
        async |s| {
            let sup = s.get_ok("/api/supervisor").await;
            let live = sup["tree"]["children"]
                .as_array()
                .unwrap()
                .iter()
                .find(|c| c["name"] == "live")
                .cloned()
                .unwrap();
            live["restarts"] == 1 && live["state"] == "running"
        },
    )
    .await;
    let restarted_at = Instant::now();
    let status = c.next_of_type("status", Duration::from_secs(5)).await;
    assert_eq!(status["event"]["kind"], "supervisor", "{status}");
    loop {
        let b = c.next_of_type("readings", Duration::from_secs(5)).await;
        if restarted_at.elapsed() > Duration::from_millis(300) {
            assert!(!b["readings"].as_array().unwrap().is_empty());
            break;
        }
    }
    // Unknown children are a 404.
    let res = awc::Client::new()
        .post(s.url("/api/admin/restart/nothing"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 404);
    s.stop().await;
}

#[actix_rt::test]
async fn supervision_events_reach_clients_as_status_messages() {
    let s = TestServer::start(
        r#"
[[sensors]]
name = "panicky"
kind = "simulated"
interval_ms = 20
priority = "optional"
[sensors.options]
panic_every = 2
"#,
    )
    .await;
    let mut c = Client::connect(&s).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let st = c.next_of_type("status", Duration::from_secs(10)).await;
        if st["event"]["kind"] == "supervisor" && st["event"]["child"] == "panicky" {
            break;
        }
        assert!(Instant::now() < deadline);
    }
    s.stop().await;
}

#[actix_rt::test]
async fn shutdown_closes_sessions_with_1001() {
    let s = TestServer::start(TWO).await;
    let mut c = Client::connect(&s).await;
    let stopping = actix_rt::spawn(s.stop());
    assert_eq!(c.close_code(Duration::from_secs(10)).await, Some(1001));
    stopping.await.unwrap();
}
