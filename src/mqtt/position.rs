//! Store-and-forward bookkeeping: the position up to which every accepted
//! reading is confirmed at the broker, and the file that keeps it across
//! restarts.
//!
//! The position `P` means: every reading with `ts_ms <= P` has been
//! confirmed by the broker (a PUBACK at QoS 1; handed to the socket at
//! QoS 0). It only ever covers readings the bridge saw confirmed:
//!
//! - live readings count from the moment they are taken off the bus until
//!   their acknowledgement; `P` stays below the oldest of them;
//! - a reading that arrives older than `P` (late on the bus) lowers `P`;
//! - readings not yet on the bus are covered by [`SKEW_MS`]: in live mode
//!   `P` never passes `now - SKEW_MS`;
//! - any gap (disconnection, a lagging bus subscription, a full client
//!   queue) freezes `P` and starts a replay of `(P, now + SKEW_MS)` from
//!   storage, oldest first; while it runs `P` follows the replayed rows
//!   that are confirmed.
//!
//! So a gap can only repeat readings at the broker (at-least-once), never
//! leave one out. Pure: the clock is passed in.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::storage::read::Cursor;

/// How long a reading may take from its timestamp to the bus.
pub const SKEW_MS: i64 = 5_000;

/// What a publish carries, for the bookkeeping of its confirmation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tag {
    /// A live reading with this timestamp, sent in this epoch.
    Live(i64, u32),
    /// A replayed reading with this timestamp, sent in this epoch.
    Replay(i64, u32),
    /// Status, states, discovery: not counted.
    Other,
}

/// A replay in progress: rows `(from, to)` (exclusive both ends), read in
/// pages after `cursor`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Replay {
    pub after: i64,
    pub to: i64,
    pub cursor: Option<Cursor>,
    /// Every row with `ts <= read_through` has been read (and published).
    pub read_through: i64,
    /// The last page has been read.
    pub exhausted: bool,
}

/// The position and everything unconfirmed.
#[derive(Debug)]
pub struct Tracker {
    position: i64,
    /// Since the last gap, every reading taken off the bus was published.
    live_ok: bool,
    replay: Option<Replay>,
    live: BTreeMap<i64, u32>,
    replayed: BTreeMap<i64, u32>,
    /// Counts gaps: a confirmation of something sent before the last gap
    /// is not counted against what was sent after it.
    epoch: u32,
}

fn add(map: &mut BTreeMap<i64, u32>, ts: i64) {
    *map.entry(ts).or_insert(0) += 1;
}

fn remove(map: &mut BTreeMap<i64, u32>, ts: i64) {
    if let Some(n) = map.get_mut(&ts) {
        *n -= 1;
        if *n == 0 {
            map.remove(&ts);
        }
    }
}

impl Tracker {
    /// Starts at a stored position (or where publishing began). Nothing is
    /// confirmed beyond it yet, so the first connection replays from it.
    pub fn new(position: i64) -> Tracker {
        Tracker {
            position,
            live_ok: false,
            replay: None,
            live: BTreeMap::new(),
            replayed: BTreeMap::new(),
            epoch: 0,
        }
    }

    /// The tag of a live publish of a reading at `ts`.
    pub fn live_tag(&self, ts: i64) -> Tag {
        Tag::Live(ts, self.epoch)
    }

    /// The tag of a replayed publish of a reading at `ts`.
    pub fn replay_tag(&self, ts: i64) -> Tag {
        Tag::Replay(ts, self.epoch)
    }

    /// A reading was seen (published or not): one older than the position
    /// moves the position below it, so a replay includes it.
    pub fn seen(&mut self, ts: i64) {
        if ts <= self.position {
            self.position = ts - 1;
        }
    }

    pub fn position(&self) -> i64 {
        self.position
    }

    /// Changes at every gap and connection: a replay page read before
    /// belongs to a replay that is over.
    pub fn epoch(&self) -> u32 {
        self.epoch
    }

    pub fn replay(&self) -> Option<&Replay> {
        self.replay.as_ref()
    }

    /// A replay is running or must be started.
    pub fn replaying(&self) -> bool {
        self.replay.is_some()
    }

    /// Unconfirmed publishes of readings.
    pub fn unconfirmed(&self) -> u64 {
        self.live
            .values()
            .chain(self.replayed.values())
            .map(|&n| n as u64)
            .sum()
    }

    /// Something was lost on the way (the connection, the bus, the client
    /// queue): everything unconfirmed is forgotten and, when connected,
    /// a replay from `P` to `now + SKEW_MS` starts.
    pub fn gap(&mut self, connected: bool, now: i64) {
        self.live.clear();
        self.replayed.clear();
        // Connected, live readings keep flowing beside the replay.
        self.live_ok = connected;
        self.epoch = self.epoch.wrapping_add(1);
        self.replay = connected.then(|| self.new_replay(now));
    }

    fn new_replay(&self, now: i64) -> Replay {
        Replay {
            after: self.position,
            to: now.saturating_add(SKEW_MS),
            cursor: None,
            read_through: self.position,
            exhausted: false,
        }
    }

    /// Connected (again): live readings flow from now on, and what was
    /// missed is replayed.
    pub fn connected(&mut self, now: i64) {
        self.live.clear();
        self.replayed.clear();
        self.live_ok = true;
        self.epoch = self.epoch.wrapping_add(1);
        self.replay = Some(self.new_replay(now));
    }

    /// A live reading was taken off the bus and is being published.
    pub fn live_sent(&mut self, ts: i64) {
        self.seen(ts);
        add(&mut self.live, ts);
    }

    /// A replayed row is being published.
    pub fn replay_sent(&mut self, ts: i64) {
        add(&mut self.replayed, ts);
    }

    /// A replay page was read: rows through `last` (in `(ts, series)`
    /// order) are published; `next` is where the following page starts.
    pub fn page_read(&mut self, last: Option<Cursor>, next: Option<Cursor>) {
        if let Some(r) = self.replay.as_mut() {
            match next {
                Some(c) => {
                    r.cursor = Some(c);
                    // Rows at c.ts of later series may follow.
                    r.read_through = r.read_through.max(c.ts - 1);
                }
                None => {
                    r.exhausted = true;
                    r.read_through = r.to - 1;
                    if let Some(l) = last {
                        r.cursor = Some(l);
                    }
                }
            }
        }
    }

    /// The broker confirmed a publish.
    pub fn confirmed(&mut self, tag: Tag) {
        match tag {
            Tag::Live(ts, e) if e == self.epoch => remove(&mut self.live, ts),
            Tag::Replay(ts, e) if e == self.epoch => remove(&mut self.replayed, ts),
            _ => {}
        }
    }

    /// Moves the position as far as the confirmations allow; true when
    /// the replay has just completed.
    pub fn advance(&mut self, now: i64) -> bool {
        let Some(r) = self.replay.as_ref() else {
            if self.live_ok {
                let mut p = now - SKEW_MS;
                if let Some((&ts, _)) = self.live.first_key_value() {
                    p = p.min(ts - 1);
                }
                self.position = self.position.max(p);
            }
            return false;
        };
        let mut p = r.read_through;
        if let Some((&ts, _)) = self.replayed.first_key_value() {
            p = p.min(ts - 1);
        }
        if let Some((&ts, _)) = self.live.first_key_value() {
            p = p.min(ts - 1);
        }
        self.position = self.position.max(p);
        if r.exhausted && self.replayed.is_empty() {
            self.replay = None;
            return true;
        }
        false
    }
}

/// The position file of one broker, next to the database.
#[derive(Clone)]
pub struct PositionFile {
    path: PathBuf,
}

impl PositionFile {
    /// `<database>.mqtt-<host_port>.pos`.
    pub fn for_broker(database: &Path, key: &str) -> PositionFile {
        let mut name = database
            .file_name()
            .map(|n| n.to_os_string())
            .unwrap_or_else(|| "vigil.db".into());
        name.push(format!(".mqtt-{key}.pos"));
        PositionFile {
            path: database.with_file_name(name),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The stored position; `None` when there is none (first run for this
    /// broker). An unreadable file is an error: starting over would
    /// silently skip the readings since the real position.
    pub fn load(&self) -> std::io::Result<Option<i64>> {
        match std::fs::read_to_string(&self.path) {
            Ok(text) => text.trim().parse::<i64>().map(Some).map_err(|e| {
                std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    format!("{}: {e}", self.path.display()),
                )
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Replaces the file whole: a temporary file, fsynced, renamed over it.
    pub fn store(&self, position: i64) -> std::io::Result<()> {
        let tmp = self.path.with_extension("pos.tmp");
        {
            let mut f = std::fs::File::create(&tmp)?;
            writeln!(f, "{position}")?;
            f.sync_all()?;
        }
        std::fs::rename(&tmp, &self.path)?;
        if let Some(dir) = self.path.parent().filter(|d| !d.as_os_str().is_empty())
            && let Ok(d) = std::fs::File::open(dir)
        {
            let _ = d.sync_all();
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn live_position_stays_below_the_oldest_unconfirmed_and_the_skew() {
        let mut t = Tracker::new(0);
        t.connected(100_000);
        t.page_read(None, None);
        assert!(t.advance(100_000), "an empty replay completes");
        t.live_sent(99_000);
        t.live_sent(99_500);
        t.advance(120_000);
        assert_eq!(t.position(), 98_999);
        let tag = t.live_tag(99_000);
        t.confirmed(tag);
        t.advance(120_000);
        assert_eq!(t.position(), 99_499);
        let tag = t.live_tag(99_500);
        t.confirmed(tag);
        t.advance(120_000);
        assert_eq!(t.position(), 120_000 - SKEW_MS);
    }

    #[test]
    fn a_late_reading_lowers_the_position() {
        let mut t = Tracker::new(0);
        t.connected(10_000);
        t.page_read(None, None);
        assert!(t.advance(50_000));
        assert_eq!(t.position(), 14_999, "the replay's end");
        t.advance(50_000);
        assert_eq!(t.position(), 45_000);
        t.live_sent(40_000);
        assert_eq!(t.position(), 39_999);
    }

    #[test]
    fn a_gap_freezes_the_position_and_replays_from_it() {
        let mut t = Tracker::new(1_000);
        t.connected(2_000);
        t.page_read(None, None);
        t.advance(2_000);
        t.live_sent(9_000);
        t.advance(20_000);
        assert_eq!(t.position(), 8_999);
        t.gap(false, 21_000);
        t.advance(60_000);
        assert_eq!(t.position(), 8_999, "no progress while disconnected");
        t.connected(60_000);
        let r = t.replay().unwrap().clone();
        assert_eq!((r.after, r.to), (8_999, 60_000 + SKEW_MS));
        // One page with a next cursor at ts 30_000.
        t.replay_sent(10_000);
        t.replay_sent(30_000);
        t.page_read(
            Some(Cursor {
                ts: 30_000,
                series_id: 1,
            }),
            Some(Cursor {
                ts: 30_000,
                series_id: 1,
            }),
        );
        t.advance(61_000);
        assert_eq!(t.position(), 9_999, "waits for the first replayed row");
        let (a, b) = (t.replay_tag(10_000), t.replay_tag(30_000));
        t.confirmed(a);
        t.confirmed(b);
        assert!(!t.advance(61_000));
        assert_eq!(
            t.position(),
            29_999,
            "rows at 30 000 of later series may follow"
        );
        t.page_read(None, None);
        assert!(t.advance(61_000));
        assert_eq!(t.position(), 60_000 + SKEW_MS - 1);
        assert!(!t.replaying());
    }

    #[test]
    fn a_confirmation_from_before_a_gap_counts_nothing() {
        let mut t = Tracker::new(0);
        t.connected(10_000);
        t.page_read(None, None);
        t.advance(10_000);
        t.live_sent(10_500);
        let old = t.live_tag(10_500);
        t.gap(true, 11_000);
        t.replay_sent(10_500);
        t.confirmed(old);
        t.page_read(None, None);
        assert!(!t.advance(12_000), "the replayed row is still unconfirmed");
        assert_eq!(t.position(), 10_499);
    }

    #[test]
    fn after_a_gap_while_connected_the_position_moves_on_once_replayed() {
        let mut t = Tracker::new(0);
        t.connected(10_000);
        t.page_read(None, None);
        t.advance(10_000);
        t.gap(true, 20_000);
        t.page_read(None, None);
        assert!(t.advance(20_000));
        t.advance(40_000);
        assert_eq!(t.position(), 35_000, "live mode again");
    }

    #[test]
    fn live_readings_during_a_replay_hold_the_position() {
        let mut t = Tracker::new(0);
        t.connected(10_000);
        t.live_sent(10_100);
        t.page_read(None, None);
        t.advance(11_000);
        assert_eq!(t.position(), 10_099);
    }

    #[test]
    fn the_file_is_replaced_whole() {
        let dir = tempfile::tempdir().unwrap();
        let f = PositionFile::for_broker(&dir.path().join("v.db"), "h_1883");
        assert!(f.path().ends_with("v.db.mqtt-h_1883.pos"));
        assert_eq!(f.load().unwrap(), None);
        f.store(42).unwrap();
        f.store(43).unwrap();
        assert_eq!(f.load().unwrap(), Some(43));
        std::fs::write(f.path(), "garbage").unwrap();
        assert!(f.load().is_err());
    }
}
