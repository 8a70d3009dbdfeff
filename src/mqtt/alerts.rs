//! Alert states the broker missed: while no state could be published (no
//! connection, a lagging event subscription, a full client queue, a vigil
//! restart), the bridge notes since when; at the next connection it asks
//! the alert manager for the newest alert of each rule changed since then
//! and publishes that, retained, on the rule's topic.
//!
//! The current state, not the transitions: a rule's topic is retained and
//! is what a Home Assistant binary sensor shows, so replaying "fired,
//! resolved, fired" would only flicker the entity before it settled on the
//! last one; the history stays in `/api/alerts` and the webhooks. One
//! message per rule bounds the replay by the rules in force. Pure, apart
//! from the payload's JSON.

use std::collections::{HashMap, HashSet};

use serde_json::json;

use crate::vocab::alert::AlertView;

/// How long an alert change may take from the manager's clock to the
/// bridge (the bus, a busy runtime); a resync reaches back this far.
pub const SLACK_MS: i64 = 5_000;
/// Rules counted as changed during one gap, at most (the count only; the
/// replay asks the manager, whose answer is one alert per rule).
pub const MAX_COUNTED: usize = 10_000;

/// Which alerts a resync asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Since {
    /// The newest alert of every rule (a broker new to this database).
    All,
    /// Those changed at or after this time (ms).
    From(i64),
}

impl Since {
    pub fn as_filter(self) -> Option<i64> {
        match self {
            Since::All => None,
            Since::From(t) => Some(t),
        }
    }

    fn widen(self, other: Since) -> Since {
        match (self, other) {
            (Since::From(a), Since::From(b)) => Since::From(a.min(b)),
            _ => Since::All,
        }
    }
}

/// The alert side of a gap: since when states may be missing at the
/// broker, and how many rules changed meanwhile.
#[derive(Debug, Default)]
pub struct AlertGap {
    due: Option<Since>,
    changed: HashSet<String>,
    /// When the last event came off the bus.
    seen_at: i64,
    /// Per topic, the rank of the state last handed to the client in this
    /// connection (a replayed state older than a live one is skipped).
    sent: HashMap<String, Rank>,
    /// Connected, and since when everything handed to the client was
    /// confirmed.
    live: bool,
    settled_at: i64,
    /// A resync published and not yet confirmed, and what it covered.
    unconfirmed: Option<Since>,
}

/// Orders the states of one rule: a newer alert, then resolved after
/// firing, then acknowledged after not.
pub type Rank = (i64, u8, u8);

pub fn rank(v: &AlertView) -> Rank {
    (
        v.id,
        u8::from(v.state == "resolved"),
        u8::from(v.acknowledged),
    )
}

impl AlertGap {
    pub fn new(start: Since) -> AlertGap {
        AlertGap {
            due: Some(start),
            ..AlertGap::default()
        }
    }

    /// States changed at or after `at` may be missing at the broker.
    pub fn gap(&mut self, at: i64) {
        let s = Since::From(at.saturating_sub(SLACK_MS));
        self.due = Some(self.due.map_or(s, |d| d.widen(s)));
    }

    /// Events were missed since the last one that came off the bus.
    pub fn lagged(&mut self) {
        self.gap(self.seen_at);
    }

    /// An event came off the bus at `now`.
    pub fn seen(&mut self, now: i64) {
        self.seen_at = now;
    }

    /// An alert of `rule` changed while its state could not be published;
    /// the number of rules changed during the gap.
    pub fn changed(&mut self, rule: &str, now: i64) -> usize {
        self.gap(now);
        if self.changed.len() < MAX_COUNTED {
            self.changed.insert(rule.to_owned());
        }
        self.changed.len()
    }

    /// Counts `rule` as changed during the gap (a state an earlier run
    /// left unpublished), the gap itself being known already.
    pub fn count_only(&mut self, rule: &str) {
        if self.changed.len() < MAX_COUNTED {
            self.changed.insert(rule.to_owned());
        }
    }

    /// A resync to run now, if one is due; it is no longer due.
    pub fn take(&mut self) -> Option<Since> {
        self.due.take()
    }

    /// A resync that could not finish is due again.
    pub fn retry(&mut self, since: Since) {
        self.due = Some(self.due.map_or(since, |d| d.widen(since)));
    }

    /// The resync is done: nothing is missing unless a new gap began.
    pub fn done(&mut self) {
        if self.due.is_none() {
            self.changed.clear();
        }
    }

    pub fn pending(&self) -> bool {
        self.due.is_some()
    }

    /// A new connection at `now`: nothing was handed to its client yet.
    pub fn connected(&mut self, now: i64) {
        self.sent.clear();
        self.live = true;
        self.settled_at = now;
    }

    /// Everything handed to the client so far is confirmed at `now`.
    pub fn settled(&mut self, now: i64) {
        self.settled_at = now;
        self.unconfirmed = None;
    }

    /// A resync covering `since` was handed to the client.
    pub fn resynced(&mut self, since: Since) {
        self.unconfirmed = Some(self.unconfirmed.map_or(since, |u| u.widen(since)));
    }

    /// The connection is gone: what was not confirmed may be lost with it.
    pub fn lost(&mut self) {
        if std::mem::take(&mut self.live) {
            self.gap(self.settled_at);
        }
        if let Some(s) = self.unconfirmed.take() {
            self.retry(s);
        }
    }

    /// Notes a state handed to the client; false (and nothing noted) when
    /// a newer one of the same topic already was.
    pub fn should_send(&mut self, topic: &str, v: &AlertView) -> bool {
        let r = rank(v);
        match self.sent.get(topic) {
            Some(&old) if old > r => false,
            _ => {
                self.sent.insert(topic.to_owned(), r);
                true
            }
        }
    }
}

/// The JSON on a rule's topic: what happened and the alert as it is.
pub fn alert_payload(event: &str, alert: &AlertView) -> Vec<u8> {
    json!({ "event": event, "alert": alert })
        .to_string()
        .into_bytes()
}

/// The event a replayed state stands for.
pub fn event_of(v: &AlertView) -> &'static str {
    if v.state == "resolved" {
        "resolved"
    } else if v.acknowledged {
        "acknowledged"
    } else {
        "fired"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view(id: i64, state: &str, acknowledged: bool) -> AlertView {
        AlertView {
            id,
            key: "hot:s/m".into(),
            rule: "hot".into(),
            severity: "warning".into(),
            state: state.into(),
            message: String::new(),
            value: None,
            fired_at: String::new(),
            fired_at_ms: 0,
            resolved_at: None,
            acknowledged,
            acked_at: None,
        }
    }

    #[test]
    fn a_gap_reaches_back_to_its_earliest_start_less_the_slack() {
        let mut g = AlertGap::new(Since::From(50_000));
        g.gap(90_000);
        assert_eq!(g.take(), Some(Since::From(50_000)));
        assert_eq!(g.take(), None);
        g.gap(90_000);
        g.gap(80_000);
        assert_eq!(g.take(), Some(Since::From(75_000)));
        let mut g = AlertGap::new(Since::All);
        g.gap(10_000);
        assert_eq!(g.take(), Some(Since::All));
    }

    #[test]
    fn a_lag_reaches_back_to_the_last_event_seen() {
        let mut g = AlertGap::default();
        g.seen(40_000);
        g.lagged();
        assert_eq!(g.take(), Some(Since::From(35_000)));
    }

    #[test]
    fn changed_rules_are_counted_once_and_cleared_when_done() {
        let mut g = AlertGap::default();
        assert_eq!(g.changed("hot", 10_000), 1);
        assert_eq!(g.changed("hot", 11_000), 1);
        assert_eq!(g.changed("cold", 12_000), 2);
        let since = g.take().unwrap();
        // Not done: the count stays until the resync is.
        g.retry(since);
        g.done();
        assert_eq!(g.changed.len(), 2);
        assert_eq!(g.take(), Some(Since::From(5_000)));
        g.done();
        assert!(g.changed.is_empty() && !g.pending());
    }

    #[test]
    fn a_replayed_state_never_overtakes_a_newer_live_one() {
        let mut g = AlertGap::default();
        assert!(g.should_send("t", &view(2, "firing", false)));
        assert!(!g.should_send("t", &view(1, "resolved", true)));
        assert!(g.should_send("t", &view(2, "resolved", false)));
        assert!(!g.should_send("t", &view(2, "firing", true)));
        assert!(
            g.should_send("t", &view(2, "resolved", false)),
            "the same again"
        );
        g.connected(0);
        assert!(g.should_send("t", &view(1, "firing", false)));
    }

    #[test]
    fn a_lost_connection_resyncs_what_was_not_confirmed() {
        let mut g = AlertGap::new(Since::From(1_000));
        let since = g.take().unwrap();
        g.connected(20_000);
        g.resynced(since);
        g.settled(30_000);
        g.resynced(Since::From(2_000));
        g.lost();
        // Live states since the last settled moment, and the resync that
        // was not confirmed.
        assert_eq!(g.take(), Some(Since::From(2_000)));
        g.lost();
        assert_eq!(g.take(), None, "not connected: nothing more to lose");
        g.connected(40_000);
        g.settled(50_000);
        g.lost();
        assert_eq!(g.take(), Some(Since::From(45_000)));
    }

    #[test]
    fn a_replayed_state_says_what_it_stands_for() {
        assert_eq!(event_of(&view(1, "firing", false)), "fired");
        assert_eq!(event_of(&view(1, "firing", true)), "acknowledged");
        assert_eq!(event_of(&view(1, "resolved", true)), "resolved");
    }
}
