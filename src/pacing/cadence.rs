//! How the pacing level reaches each sensor: the [`Pace`] every sensor actor
//! watches (a `tokio::sync::watch` value), the interval it implies for one
//! sensor, and [`wait_turn`], the wait for a sensor's next read that follows
//! changes of pace while it waits: a stretched interval is applied to the
//! read already scheduled, never by restarting the actor, and a paused
//! sensor sleeps until the pace changes, without polling.

use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;

use crate::vocab::pacing::Level;

/// What every sensor is told about pacing.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Pace {
    pub level: Level,
    /// Every sensor's interval is stretched by this.
    pub multiplier: f64,
}

impl Pace {
    /// No pacing: configured intervals, nothing paused.
    pub const NORMAL: Pace = Pace {
        level: Level::Normal,
        multiplier: 1.0,
    };

    /// At critical, optional sensors stop reading.
    pub fn pauses_optional(&self) -> bool {
        self.level == Level::Critical
    }

    /// The cadence of a sensor whose own interval is `base`.
    pub fn cadence(&self, base: Duration, optional: bool) -> Cadence {
        Cadence {
            interval: scale(base, self.multiplier),
            paused: optional && self.pauses_optional(),
        }
    }
}

/// One sensor's cadence under the current pace.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cadence {
    /// Time between the starts of two reads. While `paused`, the interval
    /// the sensor would have.
    pub interval: Duration,
    /// No reads at all until the pace changes.
    pub paused: bool,
}

impl Cadence {
    pub fn interval_ms(&self) -> u64 {
        u64::try_from(self.interval.as_millis()).unwrap_or(u64::MAX)
    }
}

/// `base × factor`, saturating; a factor that is not a finite positive
/// number leaves `base` unchanged.
pub fn scale(base: Duration, factor: f64) -> Duration {
    if !(factor.is_finite() && factor > 0.0) {
        return base;
    }
    Duration::try_from_secs_f64(base.as_secs_f64() * factor).unwrap_or(Duration::MAX)
}

/// Waits until `from + base × multiplier` under the current pace (at once
/// when `from` is `None`, for a first read), or while paused until the
/// pace lets the sensor run. A change of pace during the wait moves the
/// deadline (to now if it is already past). `report` is told each cadence
/// in force, so status stays true while the sensor waits. If the pace can
/// no longer change (its sender is gone), the last pace holds.
pub async fn wait_turn(
    pace: &mut watch::Receiver<Pace>,
    from: Option<Instant>,
    base: Duration,
    optional: bool,
    mut report: impl FnMut(Cadence),
) {
    let mut open = true;
    loop {
        let current = *pace.borrow_and_update();
        let cadence = current.cadence(base, optional);
        report(cadence);
        // `None`: wait for a change only (paused, or a deadline past the
        // clock's range).
        let due = match from {
            _ if cadence.paused => None,
            Some(from) => from.checked_add(cadence.interval),
            None => Some(Instant::now()),
        };
        if !open {
            match due {
                Some(due) => {
                    tokio::time::sleep_until(due).await;
                    return;
                }
                None => std::future::pending::<()>().await,
            }
        }
        let sleep = async {
            match due {
                Some(due) => tokio::time::sleep_until(due).await,
                None => std::future::pending::<()>().await,
            }
        };
        tokio::select! {
            () = sleep => return,
            changed = pace.changed() => open = changed.is_ok(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    const HOT: Pace = Pace {
        level: Level::Hot,
        multiplier: 2.0,
    };
    const CRITICAL: Pace = Pace {
        level: Level::Critical,
        multiplier: 4.0,
    };

    #[test]
    fn cadence_stretches_everyone_and_pauses_optional_sensors_at_critical() {
        let base = Duration::from_millis(1500);
        assert_eq!(
            Pace::NORMAL.cadence(base, true),
            Cadence {
                interval: base,
                paused: false
            }
        );
        assert_eq!(HOT.cadence(base, true).interval, Duration::from_secs(3));
        assert!(!HOT.cadence(base, true).paused);
        assert!(CRITICAL.cadence(base, true).paused);
        let essential = CRITICAL.cadence(base, false);
        assert_eq!((essential.interval_ms(), essential.paused), (6000, false));
    }

    #[test]
    fn scaling_saturates_and_ignores_nonsense() {
        assert_eq!(scale(Duration::MAX, 4.0), Duration::MAX);
        assert_eq!(
            scale(Duration::from_secs(1), f64::NAN),
            Duration::from_secs(1)
        );
        assert_eq!(scale(Duration::from_secs(1), -2.0), Duration::from_secs(1));
        assert_eq!(
            Cadence {
                interval: Duration::MAX,
                paused: false
            }
            .interval_ms(),
            u64::MAX
        );
    }

    type Log = Arc<Mutex<Vec<Cadence>>>;

    fn spawn_wait(
        rx: &watch::Receiver<Pace>,
        base: Duration,
        optional: bool,
    ) -> (tokio::task::JoinHandle<Instant>, Log) {
        let log: Log = Arc::default();
        let (mut rx, l) = (rx.clone(), log.clone());
        let from = Instant::now();
        let task = tokio::spawn(async move {
            wait_turn(&mut rx, Some(from), base, optional, |c| {
                l.lock().unwrap().push(c)
            })
            .await;
            Instant::now()
        });
        (task, log)
    }

    #[tokio::test(start_paused = true)]
    async fn a_change_of_pace_moves_the_deadline_of_a_waiting_sensor() {
        let (tx, rx) = watch::channel(Pace::NORMAL);
        let t0 = Instant::now();
        let (task, log) = spawn_wait(&rx, Duration::from_secs(10), false);
        tokio::time::sleep(Duration::from_secs(3)).await;
        tx.send_replace(HOT);
        let done = task.await.unwrap();
        assert_eq!(done - t0, Duration::from_secs(20));
        let intervals: Vec<u64> = log
            .lock()
            .unwrap()
            .iter()
            .map(Cadence::interval_ms)
            .collect();
        assert_eq!(intervals, [10_000, 20_000]);

        // Shrinking past the deadline: the read is due at once.
        tx.send_replace(CRITICAL);
        let t1 = Instant::now();
        let (task, _) = spawn_wait(&rx, Duration::from_secs(1), false);
        tokio::time::sleep(Duration::from_secs(2)).await;
        tx.send_replace(Pace::NORMAL);
        assert_eq!(task.await.unwrap() - t1, Duration::from_secs(2));
    }

    #[tokio::test(start_paused = true)]
    async fn a_paused_sensor_sleeps_until_the_pace_lets_it_run() {
        let (tx, rx) = watch::channel(CRITICAL);
        let t0 = Instant::now();
        let (task, log) = spawn_wait(&rx, Duration::from_secs(1), true);
        tokio::time::sleep(Duration::from_secs(3600)).await;
        assert!(!task.is_finished(), "paused for an hour");
        assert!(log.lock().unwrap().iter().all(|c| c.paused));
        // A change that still pauses keeps it asleep.
        tx.send_replace(Pace {
            multiplier: 5.0,
            ..CRITICAL
        });
        tokio::time::sleep(Duration::from_secs(60)).await;
        assert!(!task.is_finished());
        tx.send_replace(HOT);
        assert_eq!(task.await.unwrap() - t0, Duration::from_secs(3660));
        assert!(!log.lock().unwrap().last().unwrap().paused);
    }

    #[tokio::test(start_paused = true)]
    async fn without_a_sender_the_last_pace_holds() {
        let (tx, rx) = watch::channel(HOT);
        let t0 = Instant::now();
        let (task, _) = spawn_wait(&rx, Duration::from_secs(1), true);
        drop(tx);
        assert_eq!(task.await.unwrap() - t0, Duration::from_secs(2));
    }

    #[tokio::test(start_paused = true)]
    async fn a_first_read_is_due_at_once_unless_paused() {
        let (tx, mut rx) = watch::channel(HOT);
        let t0 = Instant::now();
        let mut shown = Vec::new();
        wait_turn(&mut rx, None, Duration::from_secs(5), true, |c| {
            shown.push(c)
        })
        .await;
        assert_eq!(Instant::now(), t0);
        assert_eq!(shown[0].interval, Duration::from_secs(10));

        tx.send_replace(CRITICAL);
        let mut rx2 = rx.clone();
        let task = tokio::spawn(async move {
            wait_turn(&mut rx2, None, Duration::from_secs(5), true, |_| {}).await;
            Instant::now()
        });
        tokio::time::sleep(Duration::from_secs(30)).await;
        tx.send_replace(Pace::NORMAL);
        assert_eq!(task.await.unwrap() - t0, Duration::from_secs(30));
    }
}
