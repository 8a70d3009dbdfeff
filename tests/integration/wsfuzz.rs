//! The live feed under generated input: over a thousand seeded random
//! messages (random JSON of every shape, known message types with wrong
//! fields, unknown types, malformed text, binary frames, oversized frames,
//! pings) across many sessions. The bar: every answer is a
//! JSON message with a `type`, every close has one of the feed's close
//! codes, and afterwards the server still serves and holds no session.

use std::time::Duration;

use actix_codec::Framed;
use awc::BoxedSocket;
use awc::ws::{Codec, Frame, Message};
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};

use crate::util::TestServer;

const SENSOR: &str = r#"
[[sensors]]
name = "sim"
kind = "simulated"
interval_ms = 50
"#;

/// Messages generated in all.
const CASES: usize = 1200;
/// Messages per session: below `live.max_errors` (10), so most sessions
/// live to answer the closing ping.
const PER_SESSION: usize = 8;
/// Close codes the feed uses for a client's fault.
const CLIENT_FAULT_CODES: &[u16] = &[1002, 1003, 1007, 1008, 1009];

fn random_json(rng: &mut fastrand::Rng, depth: u32) -> Value {
    match rng.u8(0..if depth > 3 { 5 } else { 7 }) {
        0 => Value::Null,
        1 => Value::Bool(rng.bool()),
        2 => json!(rng.i64(..)),
        3 => json!(rng.f64() * 1e6 - 5e5),
        4 => Value::String(random_text(rng, 20)),
        5 => (0..rng.usize(0..5))
            .map(|_| random_json(rng, depth + 1))
            .collect(),
        _ => {
            let mut m = serde_json::Map::new();
            for _ in 0..rng.usize(0..5) {
                let key = match rng.u8(0..3) {
                    0 => {
                        ["type", "id", "sensors", "metrics", "channels"][rng.usize(0..5)].to_owned()
                    }
                    _ => random_text(rng, 8),
                };
                m.insert(key, random_json(rng, depth + 1));
            }
            Value::Object(m)
        }
    }
}

fn random_text(rng: &mut fastrand::Rng, max: usize) -> String {
    (0..rng.usize(0..=max))
        .map(|_| match rng.u8(0..4) {
            0 => rng.char('\u{0}'..'\u{80}'),
            1 => rng.char('\u{80}'..'\u{10000}'),
            _ => rng.alphanumeric(),
        })
        .collect()
}

/// One generated message, and whether it may end the session (a frame the
/// feed closes on at once).
fn generate(rng: &mut fastrand::Rng) -> (Message, bool) {
    let types = ["ping", "subscribe", "unsubscribe", "hello", "dance", ""];
    match rng.u8(0..10) {
        0 | 1 => (Message::Text(random_json(rng, 0).to_string().into()), false),
        2 | 3 => {
            // A known (or unknown) type with random fields.
            let mut v = random_json(rng, 1);
            if !v.is_object() {
                v = json!({ "payload": v });
            }
            v["type"] = json!(types[rng.usize(0..types.len())]);
            (Message::Text(v.to_string().into()), false)
        }
        4 => {
            // Valid JSON cut short or garbled.
            let t = random_json(rng, 0).to_string();
            let cut = rng.usize(0..=t.len());
            let t: String = t
                .char_indices()
                .take_while(|(i, _)| *i < cut)
                .map(|(_, c)| c)
                .collect();
            (
                Message::Text(format!("{t}{}", random_text(rng, 5)).into()),
                false,
            )
        }
        5 => {
            let bytes: Vec<u8> = (0..rng.usize(0..64)).map(|_| rng.u8(..)).collect();
            (Message::Binary(bytes.into()), false)
        }
        6 => {
            // Larger than live.max_frame_bytes (4096).
            let pad = "x".repeat(rng.usize(4097..20_000));
            (
                Message::Text(json!({ "type": "ping", "pad": pad }).to_string().into()),
                true,
            )
        }
        7 => (Message::Text(random_text(rng, 40).into()), false),
        8 => (
            Message::Ping(random_text(rng, 10).into_bytes().into()),
            false,
        ),
        _ => (
            Message::Text(
                json!({ "type": "subscribe", "sensors": random_json(rng, 2) })
                    .to_string()
                    .into(),
            ),
            false,
        ),
    }
}

/// What a session ended with.
enum End {
    /// The closing ping was answered: the session is still good.
    Answered,
    Closed(u16),
}

/// Reads until the pong with `id` or a close; every frame on the way must
/// be a JSON message with a `type` (or a control frame).
async fn drain(framed: &mut Framed<BoxedSocket, Codec>, id: u64, at: &str) -> End {
    loop {
        let frame = tokio::time::timeout(Duration::from_secs(30), framed.next())
            .await
            .unwrap_or_else(|_| panic!("{at}: no answer within 30 s"));
        match frame {
            None => panic!("{at}: the connection ended without a close frame"),
            Some(Err(e)) => panic!("{at}: protocol error from the server: {e}"),
            Some(Ok(Frame::Text(t))) => {
                let v: Value = serde_json::from_slice(&t)
                    .unwrap_or_else(|e| panic!("{at}: the server sent non-JSON ({e})"));
                let ty = v["type"]
                    .as_str()
                    .unwrap_or_else(|| panic!("{at}: a message without a type: {v}"));
                if ty == "pong" && v["id"] == id {
                    return End::Answered;
                }
            }
            Some(Ok(Frame::Close(reason))) => {
                let code: u16 = reason.map_or(1005, |r| r.code.into());
                return End::Closed(code);
            }
            Some(Ok(Frame::Ping(p))) => {
                let _ = framed.send(Message::Pong(p)).await;
            }
            Some(Ok(Frame::Binary(_))) => panic!("{at}: the server sent a binary frame"),
            Some(Ok(_)) => {}
        }
    }
}

#[actix_rt::test]
async fn generated_messages_get_answers_or_proper_close_codes() {
    let s = TestServer::start(SENSOR).await;
    let seed = std::env::var("VIGIL_WS_FUZZ_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0x5eed_f00d_u64);
    let mut rng = fastrand::Rng::with_seed(seed);
    let (mut sent, mut answered, mut closed) = (0, 0, 0);
    let mut session = 0;
    while sent < CASES {
        session += 1;
        let (_, mut framed) = awc::Client::new()
            .ws(s.url("/ws"))
            .max_frame_size(1 << 20)
            .connect()
            .await
            .unwrap_or_else(|e| panic!("session {session} (seed {seed}): connect: {e}"));
        let mut log = Vec::new();
        let mut ended = None;
        for _ in 0..PER_SESSION {
            let (msg, fatal) = generate(&mut rng);
            log.push(format!("{msg:?}").chars().take(120).collect::<String>());
            sent += 1;
            if framed.send(msg).await.is_err() {
                break;
            }
            if fatal {
                let at = format!("session {session} (seed {seed}) after {log:?}");
                ended = Some(drain(&mut framed, u64::MAX, &at).await);
                break;
            }
        }
        let at = format!("session {session} (seed {seed}) after {log:?}");
        let end = match ended {
            Some(end) => end,
            None => {
                let id = session as u64;
                if framed
                    .send(Message::Text(
                        json!({ "type": "ping", "id": id }).to_string().into(),
                    ))
                    .await
                    .is_err()
                {
                    panic!("{at}: the server dropped the connection without a close frame");
                }
                drain(&mut framed, id, &at).await
            }
        };
        match end {
            End::Answered => answered += 1,
            End::Closed(code) => {
                assert!(
                    CLIENT_FAULT_CODES.contains(&code),
                    "{at}: closed with {code}"
                );
                closed += 1;
            }
        }
        let _ = framed.close().await;
    }
    assert!(
        answered > 0 && closed > 0,
        "answered {answered}, closed {closed}"
    );
    // The server is still well: it serves, and every session is gone.
    s.wait_for("every session to go", Duration::from_secs(30), async |s| {
        s.get_ok("/api/live").await["sessions"] == 0
    })
    .await;
    assert_eq!(s.get("/health").await.0, 200);
    let mut c = awc::Client::new()
        .ws(s.url("/ws"))
        .connect()
        .await
        .unwrap()
        .1;
    let first = tokio::time::timeout(Duration::from_secs(10), c.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let Frame::Text(t) = first else {
        panic!("{first:?}")
    };
    assert_eq!(
        serde_json::from_slice::<Value>(&t).unwrap()["type"],
        "hello"
    );
    s.stop().await;
}
