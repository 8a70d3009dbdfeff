//! A WebSocket session's bounded outgoing queue. When it is full, the oldest
//! pending readings batch is dropped to make room (fresh data wins), its
//! updates are counted, and the next readings batch sent tells the client
//! how many it missed. Status, alert and error messages are kept in
//! preference to readings.

use std::collections::VecDeque;
use std::sync::Arc;

/// A message waiting to be sent to one client.
#[derive(Debug, Clone)]
pub enum Outgoing {
    /// A readings batch: `body` is the shared JSON after the per-session
    /// `"dropped"` field; `updates` is how many readings it holds.
    Readings { body: Arc<str>, updates: usize },
    /// Any other complete JSON message.
    Text(Arc<str>),
}

/// Bounded FIFO of [`Outgoing`] messages with drop accounting.
#[derive(Debug)]
pub struct Outbox {
    items: VecDeque<Outgoing>,
    capacity: usize,
    /// Updates dropped since the last readings batch was taken.
    dropped_pending: u64,
    /// Updates dropped over the session's life.
    pub dropped_total: u64,
}

impl Outbox {
    pub fn new(capacity: usize) -> Outbox {
        Outbox {
            items: VecDeque::with_capacity(capacity.min(64)),
            capacity: capacity.max(1),
            dropped_pending: 0,
            dropped_total: 0,
        }
    }

    /// Queues a message, dropping the oldest readings batch (or, with none
    /// queued, the oldest message) when full. Returns the updates dropped.
    pub fn push(&mut self, msg: Outgoing) -> u64 {
        let mut dropped = 0;
        while self.items.len() >= self.capacity {
            let victim = self
                .items
                .iter()
                .position(|m| matches!(m, Outgoing::Readings { .. }))
                .unwrap_or(0);
            if let Some(Outgoing::Readings { updates, .. }) = self.items.remove(victim) {
                dropped += updates as u64;
            }
        }
        self.dropped_pending += dropped;
        self.dropped_total += dropped;
        self.items.push_back(msg);
        dropped
    }

    /// The next message as the text to send. A readings batch carries the
    /// number of updates dropped since the previous one.
    pub fn pop_text(&mut self) -> Option<String> {
        Some(match self.items.pop_front()? {
            Outgoing::Text(t) => t.to_string(),
            Outgoing::Readings { body, .. } => {
                let dropped = std::mem::take(&mut self.dropped_pending);
                readings_text(dropped, &body)
            }
        })
    }

    /// Drops every pending readings batch but the newest, and gives back
    /// spare capacity (memory is short). Returns the updates dropped; the
    /// next readings batch reports them.
    pub fn shed(&mut self) -> u64 {
        let newest = self
            .items
            .iter()
            .rposition(|m| matches!(m, Outgoing::Readings { .. }));
        let mut dropped = 0;
        let mut i = 0;
        self.items.retain(|m| {
            let keep = match m {
                Outgoing::Readings { updates, .. } if Some(i) != newest => {
                    dropped += *updates as u64;
                    false
                }
                _ => true,
            };
            i += 1;
            keep
        });
        self.items.shrink_to_fit();
        self.dropped_pending += dropped;
        self.dropped_total += dropped;
        dropped
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.items.len()
    }
}

/// Joins the per-session head of a readings message to its shared body.
pub fn readings_text(dropped: u64, body: &str) -> String {
    let mut s = String::with_capacity(body.len() + 40);
    s.push_str("{\"type\":\"readings\",\"dropped\":");
    s.push_str(&dropped.to_string());
    s.push(',');
    s.push_str(body);
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn readings(n: usize, tag: &str) -> Outgoing {
        Outgoing::Readings {
            body: format!("\"tag\":\"{tag}\"}}").into(),
            updates: n,
        }
    }

    #[test]
    fn full_queue_drops_the_oldest_readings_and_reports_them_next() {
        let mut o = Outbox::new(3);
        o.push(readings(2, "a"));
        o.push(Outgoing::Text("{\"type\":\"status\"}".into()));
        o.push(readings(5, "b"));
        assert_eq!(o.push(readings(1, "c")), 2, "batch a went");
        assert_eq!(o.len(), 3);
        assert_eq!(o.pop_text().unwrap(), "{\"type\":\"status\"}");
        let v: serde_json::Value = serde_json::from_str(&o.pop_text().unwrap()).unwrap();
        assert_eq!(v["dropped"], 2);
        assert_eq!(v["tag"], "b");
        let v: serde_json::Value = serde_json::from_str(&o.pop_text().unwrap()).unwrap();
        assert_eq!(v["dropped"], 0, "reported once");
        assert_eq!(o.dropped_total, 2);
        assert!(o.pop_text().is_none());
    }

    #[test]
    fn shedding_keeps_the_newest_readings_and_every_other_message() {
        let mut o = Outbox::new(10);
        o.push(readings(2, "a"));
        o.push(Outgoing::Text("{\"type\":\"status\"}".into()));
        o.push(readings(3, "b"));
        o.push(readings(4, "c"));
        assert_eq!(o.shed(), 5);
        assert_eq!(o.len(), 2);
        assert_eq!(o.pop_text().unwrap(), "{\"type\":\"status\"}");
        let v: serde_json::Value = serde_json::from_str(&o.pop_text().unwrap()).unwrap();
        assert_eq!(
            (v["tag"].as_str(), v["dropped"].as_u64()),
            (Some("c"), Some(5))
        );
        assert_eq!(o.shed(), 0, "nothing left to shed");
    }

    #[test]
    fn without_readings_queued_the_oldest_message_goes() {
        let mut o = Outbox::new(2);
        o.push(Outgoing::Text("1".into()));
        o.push(Outgoing::Text("2".into()));
        assert_eq!(o.push(Outgoing::Text("3".into())), 0);
        assert_eq!(o.pop_text().unwrap(), "2");
        assert_eq!(o.pop_text().unwrap(), "3");
    }
}
