//! The bounded ingest queue between sensors and the database writer.
//!
//! It outlives every writer instance: a writer that crashes and restarts finds
//! the readings still waiting, and a database fault simply leaves them here
//! until commits succeed again. Its bound is `storage.queue_capacity`; what
//! happens beyond it is the named [`OverflowPolicy`], and every drop is counted.
//!
//! It keeps the [`Head`] in step: a reading enters the head when accepted
//! and leaves it when dropped (by the policy, so it vanishes from reads at
//! once) or when its commit is visible ([`IngestQueue::committed`]). The
//! batch the writer is committing stays in the head, and in the queue's
//! in-flight slot, until then.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use super::head::Head;
use crate::storage::config::OverflowPolicy;
use crate::vocab::reading::Reading;

/// A queued reading with the series id the head gave it.
#[derive(Debug, Clone)]
struct Entry {
    reading: Reading,
    id: i64,
}

impl Entry {
    fn key(&self) -> (i64, i64) {
        (self.id, self.reading.ts_ms)
    }
}

/// The readings waiting, and the batch the writer is committing.
#[derive(Default)]
struct Items {
    queued: VecDeque<Entry>,
    in_flight: Vec<Entry>,
}

/// The result of offering readings to the queue.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PushOutcome {
    /// Readings now in the queue.
    pub accepted: usize,
    /// Readings lost to make room (the oldest queued ones, or the offered
    /// ones, depending on the policy).
    pub dropped: usize,
}

type Waker = Box<dyn Fn() + Send + Sync>;

/// Capacity [`IngestQueue::shrink`] keeps, so that normal traffic does not
/// grow the queue again at once.
pub const RETAINED_CAPACITY: usize = 4096;

/// Bounded FIFO of readings with an overflow policy and counters.
pub struct IngestQueue {
    items: Mutex<Items>,
    head: Arc<Head>,
    capacity: usize,
    policy: OverflowPolicy,
    /// Queue length at which the writer is woken early.
    wake_at: usize,
    waker: Mutex<Option<Waker>>,
    wake_pending: AtomicBool,
    accepted: AtomicU64,
    dropped: AtomicU64,
    high_water: AtomicUsize,
}

/// Counters of an [`IngestQueue`].
#[derive(Debug, Clone, Copy, serde::Serialize, schemars::JsonSchema)]
pub struct QueueStats {
    pub len: usize,
    pub capacity: usize,
    pub policy: OverflowPolicy,
    /// Readings ever accepted into the queue.
    pub accepted: u64,
    /// Readings ever dropped by the overflow policy.
    pub dropped: u64,
    pub high_water: usize,
}

impl IngestQueue {
    pub fn new(capacity: usize, policy: OverflowPolicy, wake_at: usize) -> IngestQueue {
        IngestQueue {
            items: Mutex::new(Items {
                queued: VecDeque::with_capacity(capacity.min(4096)),
                in_flight: Vec::new(),
            }),
            head: Arc::new(Head::default()),
            capacity: capacity.max(1),
            policy,
            wake_at: wake_at.clamp(1, capacity.max(1)),
            waker: Mutex::new(None),
            wake_pending: AtomicBool::new(false),
            accepted: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
            high_water: AtomicUsize::new(0),
        }
    }

    /// Indexes accepted readings in `head` (which assigns their series
    /// ids from its catalog).
    pub fn with_head(mut self, head: Arc<Head>) -> IngestQueue {
        self.head = head;
        self
    }

    /// The uncommitted readings, for reads.
    pub fn head(&self) -> &Arc<Head> {
        &self.head
    }

    fn lock(&self) -> MutexGuard<'_, Items> {
        // A panic while holding this lock cannot leave the deque half-updated
        // in a way that matters (every operation is a push or a pop), so a
        // poisoned lock is still usable.
        self.items.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Offers readings in order. Never blocks on the database.
    pub fn push(&self, mut readings: Vec<Reading>) -> PushOutcome {
        let offered = readings.len();
        if offered == 0 {
            return PushOutcome::default();
        }
        let (outcome, len) = {
            let mut items = self.lock();
            let free = self.capacity.saturating_sub(items.queued.len());
            let (keep, evict, outcome) = match self.policy {
                OverflowPolicy::DropNewest => {
                    let take = offered.min(free);
                    (
                        0..take,
                        0,
                        PushOutcome {
                            accepted: take,
                            dropped: offered - take,
                        },
                    )
                }
                OverflowPolicy::DropOldest => {
                    // Offered readings beyond the whole capacity are the
                    // oldest of the newcomers: skip them first.
                    let skip = offered.saturating_sub(self.capacity);
                    let incoming = offered - skip;
                    let evict = incoming.saturating_sub(free);
                    (
                        skip..offered,
                        evict,
                        PushOutcome {
                            accepted: incoming,
                            dropped: skip + evict,
                        },
                    )
                }
            };
            // Dropped readings leave the head with the queue, in the same
            // critical section: no read sees them after the drop.
            let evicted: Vec<Entry> = items.queued.drain(..evict).collect();
            self.head.remove(evicted.iter().map(Entry::key));
            readings.truncate(keep.end);
            readings.drain(..keep.start);
            let ids = self.head.admit(&mut readings);
            items.queued.extend(
                readings
                    .into_iter()
                    .zip(ids)
                    .map(|(reading, id)| Entry { reading, id }),
            );
            (outcome, items.queued.len())
        };
        self.accepted
            .fetch_add(outcome.accepted as u64, Ordering::Relaxed);
        self.dropped
            .fetch_add(outcome.dropped as u64, Ordering::Relaxed);
        self.high_water.fetch_max(len, Ordering::Relaxed);
        if len >= self.wake_at && !self.wake_pending.swap(true, Ordering::AcqRel) {
            self.wake();
        }
        outcome
    }

    fn wake(&self) {
        let waker = self.waker.lock().unwrap_or_else(|p| p.into_inner());
        match waker.as_ref() {
            Some(w) => w(),
            // Nobody to wake: let the next push try again.
            None => self.wake_pending.store(false, Ordering::Release),
        }
    }

    /// Installs the function that wakes the writer early (replacing any
    /// earlier writer's), or removes it.
    pub fn set_waker(&self, waker: Option<Waker>) {
        *self.waker.lock().unwrap_or_else(|p| p.into_inner()) = waker;
        self.wake_pending.store(false, Ordering::Release);
    }

    /// The writer calls this when it starts draining, so that the next
    /// crossing of the threshold wakes it again.
    pub fn clear_wake(&self) {
        self.wake_pending.store(false, Ordering::Release);
    }

    /// Takes up to `max` readings from the front for a commit. They stay
    /// in the head (and in flight here) until [`committed`](Self::committed)
    /// or [`requeue_front`](Self::requeue_front). Taking again first ends
    /// a batch still in flight: it was taken away (its writer died before
    /// either), so it leaves the head too.
    pub fn take(&self, max: usize) -> Vec<Reading> {
        let mut items = self.lock();
        let stale = std::mem::take(&mut items.in_flight);
        self.head.remove(stale.iter().map(Entry::key));
        let n = max.min(items.queued.len());
        let batch: Vec<Entry> = items.queued.drain(..n).collect();
        let out = batch.iter().map(|e| e.reading.clone()).collect();
        items.in_flight = batch;
        out
    }

    /// The batch in flight is committed and visible to new read snapshots:
    /// it leaves the head. The writer calls this under the head's commit
    /// gate.
    pub fn committed(&self) {
        let mut items = self.lock();
        let batch = std::mem::take(&mut items.in_flight);
        self.head.remove(batch.iter().map(Entry::key));
    }

    /// Puts the batch in flight (whose commit failed; `batch` is what
    /// [`take`](Self::take) returned) back at the front, in order. If the
    /// queue has filled meanwhile, the overflow policy decides what goes.
    pub fn requeue_front(&self, batch: Vec<Reading>) -> usize {
        drop(batch);
        let mut items = self.lock();
        let batch = std::mem::take(&mut items.in_flight);
        let total = items.queued.len() + batch.len();
        let excess = total.saturating_sub(self.capacity);
        let mut gone = Vec::new();
        match self.policy {
            OverflowPolicy::DropOldest => {
                // The batch is the oldest data: drop from its front.
                let keep_from = excess.min(batch.len());
                let rest = excess - keep_from;
                let mut batch = batch.into_iter();
                gone.extend(batch.by_ref().take(keep_from));
                for e in batch.rev() {
                    items.queued.push_front(e);
                }
                gone.extend(items.queued.drain(..rest));
            }
            OverflowPolicy::DropNewest => {
                for e in batch.into_iter().rev() {
                    items.queued.push_front(e);
                }
                let len = items.queued.len();
                gone.extend(items.queued.drain(len - excess..));
            }
        }
        self.head.remove(gone.iter().map(Entry::key));
        drop(items);
        self.dropped.fetch_add(excess as u64, Ordering::Relaxed);
        excess
    }

    /// Readings not committed: queued and in flight.
    pub fn len(&self) -> usize {
        let items = self.lock();
        items.queued.len() + items.in_flight.len()
    }

    /// Gives back spare capacity (grown during an outage, say), keeping
    /// room for [`RETAINED_CAPACITY`] readings. Queued readings stay.
    pub fn shrink(&self) {
        let mut items = self.lock();
        let keep = items.queued.len().max(RETAINED_CAPACITY.min(self.capacity));
        items.queued.shrink_to(keep);
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn stats(&self) -> QueueStats {
        QueueStats {
            len: self.len(),
            capacity: self.capacity,
            policy: self.policy,
            accepted: self.accepted.load(Ordering::Relaxed),
            dropped: self.dropped.load(Ordering::Relaxed),
            high_water: self.high_water.load(Ordering::Relaxed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vocab::reading::SeriesKey;
    use std::sync::Arc;
    use std::sync::atomic::AtomicUsize;

    fn key() -> Arc<SeriesKey> {
        Arc::new(SeriesKey {
            sensor: "s".into(),
            metric: "m".into(),
            unit: "".into(),
        })
    }

    fn readings(k: &Arc<SeriesKey>, range: std::ops::Range<i64>) -> Vec<Reading> {
        range
            .map(|i| Reading {
                series: k.clone(),
                ts_ms: i,
                value: i as f64,
            })
            .collect()
    }

    fn ts(v: &[Reading]) -> Vec<i64> {
        v.iter().map(|r| r.ts_ms).collect()
    }

    #[test]
    fn drop_oldest_keeps_the_newest_and_counts() {
        let k = key();
        let q = IngestQueue::new(5, OverflowPolicy::DropOldest, 5);
        assert_eq!(q.push(readings(&k, 0..3)).dropped, 0);
        let o = q.push(readings(&k, 3..7));
        assert_eq!(
            o,
            PushOutcome {
                accepted: 4,
                dropped: 2
            }
        );
        assert_eq!(ts(&q.take(10)), [2, 3, 4, 5, 6]);
        // More than the whole capacity in one push.
        let o = q.push(readings(&k, 10..18));
        assert_eq!(
            o,
            PushOutcome {
                accepted: 5,
                dropped: 3
            }
        );
        assert_eq!(ts(&q.take(10)), [13, 14, 15, 16, 17]);
        let s = q.stats();
        assert_eq!((s.accepted, s.dropped), (12, 5));
    }

    #[test]
    fn drop_newest_refuses_what_does_not_fit() {
        let k = key();
        let q = IngestQueue::new(5, OverflowPolicy::DropNewest, 5);
        q.push(readings(&k, 0..3));
        let o = q.push(readings(&k, 3..7));
        assert_eq!(
            o,
            PushOutcome {
                accepted: 2,
                dropped: 2
            }
        );
        assert_eq!(ts(&q.take(10)), [0, 1, 2, 3, 4]);
    }

    #[test]
    fn requeue_restores_order_and_respects_the_bound() {
        let k = key();
        let q = IngestQueue::new(6, OverflowPolicy::DropOldest, 6);
        q.push(readings(&k, 0..4));
        let batch = q.take(3);
        q.push(readings(&k, 4..8));
        // 3 requeued + 5 queued = 8 > 6: the two oldest go.
        assert_eq!(q.requeue_front(batch), 2);
        assert_eq!(ts(&q.take(10)), [2, 3, 4, 5, 6, 7]);

        let q = IngestQueue::new(6, OverflowPolicy::DropNewest, 6);
        q.push(readings(&k, 0..4));
        let batch = q.take(3);
        q.push(readings(&k, 4..8));
        // 3 requeued + 5 queued = 8 > 6: the two newest go.
        assert_eq!(q.requeue_front(batch), 2);
        assert_eq!(ts(&q.take(10)), [0, 1, 2, 3, 4, 5]);
    }

    #[test]
    fn shrinking_keeps_every_queued_reading() {
        let k = key();
        let q = IngestQueue::new(100_000, OverflowPolicy::DropOldest, 100_000);
        q.push(readings(&k, 0..50_000));
        q.take(49_990);
        let before = q.lock().queued.capacity();
        q.shrink();
        let after = q.lock().queued.capacity();
        assert!(
            after < before && after >= RETAINED_CAPACITY,
            "{before} -> {after}"
        );
        assert_eq!(ts(&q.take(100)), (49_990..50_000).collect::<Vec<_>>());
    }

    #[test]
    fn wakes_once_per_threshold_crossing() {
        let k = key();
        let q = IngestQueue::new(100, OverflowPolicy::DropOldest, 3);
        let wakes = Arc::new(AtomicUsize::new(0));
        let w = wakes.clone();
        q.set_waker(Some(Box::new(move || {
            w.fetch_add(1, Ordering::SeqCst);
        })));
        q.push(readings(&k, 0..2));
        assert_eq!(wakes.load(Ordering::SeqCst), 0);
        q.push(readings(&k, 2..4));
        q.push(readings(&k, 4..6));
        assert_eq!(wakes.load(Ordering::SeqCst), 1);
        q.clear_wake();
        q.push(readings(&k, 6..7));
        assert_eq!(wakes.load(Ordering::SeqCst), 2);
    }
}
