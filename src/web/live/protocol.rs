//! The live feed's JSON protocol (documented in README): what clients may
//! send, what the server sends, and the close codes it uses.
//!
//! Client → server: `{"type":"subscribe","sensors":[...]}` (omit `sensors`,
//! or give `["*"]`, for all), `{"type":"unsubscribe","sensors":[...]}`
//! (omit for all), `{"type":"ping"}`.
//! Server → client: `hello`, `readings`, `status`, `alert`, `error`, `pong`.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::vocab::reading::Reading;

/// Close code: the server is shutting down.
pub const CLOSE_GOING_AWAY: u16 = 1001;
/// Close code: repeated bad messages or rate-limit abuse.
pub const CLOSE_POLICY: u16 = 1008;
/// Close code: a frame larger than the limit.
pub const CLOSE_TOO_BIG: u16 = 1009;
/// Close code: a malformed WebSocket frame.
pub const CLOSE_PROTOCOL: u16 = 1002;
/// Close code (application range): no pong within the heartbeat timeout.
pub const CLOSE_HEARTBEAT_TIMEOUT: u16 = 4000;
/// Close code (application range): the client stopped reading.
pub const CLOSE_STALLED: u16 = 4001;

/// A message from a client.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum ClientMessage {
    Subscribe {
        #[serde(default)]
        sensors: Option<Vec<String>>,
    },
    Unsubscribe {
        #[serde(default)]
        sensors: Option<Vec<String>>,
    },
    Ping {
        #[serde(default)]
        id: Option<u64>,
    },
}

impl ClientMessage {
    /// Parses a text frame, or explains in one line why it is not a message.
    pub fn parse(text: &str) -> Result<ClientMessage, String> {
        serde_json::from_str(text).map_err(|e| {
            let msg = e.to_string();
            if msg.contains("unknown variant") {
                format!("unknown message type ({msg}); expected subscribe, unsubscribe or ping")
            } else {
                format!("malformed message: {msg}")
            }
        })
    }
}

/// Which sensors a session receives readings of.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub enum Subscription {
    /// Nothing yet (a new session).
    #[default]
    Nothing,
    All,
    Some(BTreeSet<String>),
}

impl Subscription {
    pub fn wants(&self, sensor: &str) -> bool {
        match self {
            Subscription::Nothing => false,
            Subscription::All => true,
            Subscription::Some(set) => set.contains(sensor),
        }
    }

    /// Adds sensors (`None` or `*` means all).
    pub fn add(&self, sensors: Option<&[String]>) -> Subscription {
        match sensors {
            None => Subscription::All,
            Some(list) if list.iter().any(|s| s == "*") => Subscription::All,
            Some(list) => match self {
                Subscription::All => Subscription::All,
                Subscription::Nothing => Subscription::Some(list.iter().cloned().collect()),
                Subscription::Some(set) => {
                    let mut set = set.clone();
                    set.extend(list.iter().cloned());
                    Subscription::Some(set)
                }
            },
        }
    }

    /// Removes sensors (`None` means all). Removing some from `All` keeps
    /// the rest of `known`.
    pub fn remove(&self, sensors: Option<&[String]>, known: &[String]) -> Subscription {
        let Some(list) = sensors else {
            return Subscription::Nothing;
        };
        let mut set: BTreeSet<String> = match self {
            Subscription::Nothing => return Subscription::Nothing,
            Subscription::All => known.iter().cloned().collect(),
            Subscription::Some(set) => set.clone(),
        };
        for s in list {
            set.remove(s);
        }
        if set.is_empty() {
            Subscription::Nothing
        } else {
            Subscription::Some(set)
        }
    }

    /// The sensors as the client sees them: `["*"]` for all.
    pub fn describe(&self) -> Vec<String> {
        match self {
            Subscription::Nothing => Vec::new(),
            Subscription::All => vec!["*".into()],
            Subscription::Some(set) => set.iter().cloned().collect(),
        }
    }
}

#[derive(Serialize)]
struct WireReading<'a> {
    sensor: &'a str,
    metric: &'a str,
    unit: &'a str,
    value: f64,
    ts_ms: i64,
}

/// The shared part of a readings message for one subscription: everything
/// after the per-session `"dropped"` field. `None` if nothing matches.
pub fn readings_body<'a>(
    readings: impl Iterator<Item = &'a Reading>,
    wants: impl Fn(&str) -> bool,
    seq: u64,
    sent_us: i64,
) -> Option<(String, usize)> {
    let rows: Vec<WireReading> = readings
        .filter(|r| wants(&r.series.sensor))
        .map(|r| WireReading {
            sensor: &r.series.sensor,
            metric: &r.series.metric,
            unit: &r.series.unit,
            value: r.value,
            ts_ms: r.ts_ms,
        })
        .collect();
    if rows.is_empty() {
        return None;
    }
    let list = serde_json::to_string(&rows).ok()?;
    Some((
        format!("\"seq\":{seq},\"sent_us\":{sent_us},\"readings\":{list}}}"),
        rows.len(),
    ))
}

/// `{"type":"error",...}`
pub fn error_text(code: &str, message: &str) -> String {
    json!({"type": "error", "code": code, "message": message}).to_string()
}

/// `{"type":"status","event":...}`
pub fn status_text(event: &impl Serialize) -> String {
    json!({"type": "status", "event": event}).to_string()
}

/// `{"type":"alert","event":"fired","alert":{...}}`
pub fn alert_text(event: &str, alert: &impl Serialize) -> String {
    json!({"type": "alert", "event": event, "alert": alert}).to_string()
}

/// `{"type":"subscribed","sensors":[...]}`, the answer to (un)subscribe.
pub fn subscribed_text(sub: &Subscription) -> String {
    json!({"type": "subscribed", "sensors": sub.describe()}).to_string()
}

/// `{"type":"pong"}` answering an application ping.
pub fn pong_text(id: Option<u64>) -> String {
    json!({"type": "pong", "id": id}).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vocab::reading::SeriesKey;
    use std::sync::Arc;

    #[test]
    fn parses_the_client_messages_and_explains_the_rest() {
        assert_eq!(
            ClientMessage::parse(r#"{"type":"subscribe","sensors":["a","b"]}"#),
            Ok(ClientMessage::Subscribe {
                sensors: Some(vec!["a".into(), "b".into()])
            })
        );
        assert_eq!(
            ClientMessage::parse(r#"{"type":"subscribe"}"#),
            Ok(ClientMessage::Subscribe { sensors: None })
        );
        assert_eq!(
            ClientMessage::parse(r#"{"type":"ping","id":7}"#),
            Ok(ClientMessage::Ping { id: Some(7) })
        );
        assert!(
            ClientMessage::parse(r#"{"type":"dance"}"#)
                .unwrap_err()
                .contains("unknown message type")
        );
        assert!(
            ClientMessage::parse("{nope")
                .unwrap_err()
                .contains("malformed")
        );
        assert!(ClientMessage::parse(r#"{"type":"ping","extra":1}"#).is_err());
    }

    #[test]
    fn subscriptions_add_and_remove() {
        let known = vec!["a".to_string(), "b".to_string(), "c".to_string()];
        let s = Subscription::Nothing.add(Some(&["a".into()]));
        assert!(s.wants("a") && !s.wants("b"));
        let s = s.add(Some(&["b".into()]));
        assert_eq!(s.describe(), ["a", "b"]);
        let all = s.add(None);
        assert_eq!(all, Subscription::All);
        let s = all.remove(Some(&["b".into()]), &known);
        assert_eq!(s.describe(), ["a", "c"]);
        assert_eq!(s.remove(None, &known), Subscription::Nothing);
        assert_eq!(
            Subscription::Nothing.add(Some(&["*".into()])),
            Subscription::All
        );
    }

    #[test]
    fn readings_body_filters_and_joins_into_valid_json() {
        let key = |s: &str| {
            Arc::new(SeriesKey {
                sensor: s.into(),
                metric: "m".into(),
                unit: "u".into(),
            })
        };
        let rs = [
            Reading {
                series: key("a"),
                ts_ms: 1,
                value: 1.5,
            },
            Reading {
                series: key("b"),
                ts_ms: 2,
                value: 2.5,
            },
        ];
        let (body, n) = readings_body(rs.iter(), |s| s == "b", 9, 123).unwrap();
        assert_eq!(n, 1);
        let text = super::super::outbox::readings_text(3, &body);
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v["type"], "readings");
        assert_eq!(v["dropped"], 3);
        assert_eq!(v["seq"], 9);
        assert_eq!(v["readings"][0]["sensor"], "b");
        assert_eq!(v["readings"][0]["value"], 2.5);
        assert!(readings_body(rs.iter(), |_| false, 1, 1).is_none());
    }
}
