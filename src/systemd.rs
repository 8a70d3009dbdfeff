//! systemd integration for `Type=notify`: `READY=1` once migrations have
//! run and the port is bound, `STATUS=` lines while running, `STOPPING=1`
//! on shutdown, and `WATCHDOG=1` only while the appliance is alive.
//!
//! Alive means: the root supervisor answers, no essential child of the root
//! (the writer, the live hub, the alert manager, the sensors' supervisor)
//! has been given up, and the database writer answers a ping within
//! `guard.watchdog.writer_deadline_ms`. A writer blocked inside SQLite (a
//! lock another process holds, a storage device that stopped answering)
//! cannot answer; the pings stop and systemd restarts the service. A
//! database that refuses writes is *not* a reason: the writer still
//! answers, readings wait in the queue, and a restart would not mend a full
//! disk. Nor is a given-up essential sensor: `/health` says so, and
//! restarting everything would interrupt every other sensor.
//!
//! Everything here is a no-op without `NOTIFY_SOCKET` (not under systemd).

use std::sync::Arc;
use std::time::Duration;

use actix::Addr;
use tokio::sync::oneshot;
use tokio::time::Instant;

use crate::storage::writer::{WriterShared, WriterStatus};
use crate::supervisor::{ChildState, GetTree, Supervisor, TreeNode};

/// How often STATUS= is refreshed when systemd asked for no watchdog.
const STATUS_EVERY: Duration = Duration::from_secs(10);
/// How long the root supervisor may take to describe the tree.
const TREE_DEADLINE: Duration = Duration::from_secs(2);

/// Whether vigil runs under a service manager that listens.
pub fn enabled() -> bool {
    std::env::var_os("NOTIFY_SOCKET").is_some()
}

fn send(states: &[sd_notify::NotifyState]) {
    if let Err(e) = sd_notify::notify(states) {
        log::warn!("cannot notify systemd: {e}");
    }
}

/// `STATUS=<text>`.
pub fn status(text: &str) {
    send(&[sd_notify::NotifyState::Status(text)]);
}

/// `READY=1` with a status line.
pub fn ready(text: &str) {
    send(&[
        sd_notify::NotifyState::Ready,
        sd_notify::NotifyState::Status(text),
    ]);
}

/// `STOPPING=1` with a status line.
pub fn stopping(text: &str) {
    send(&[
        sd_notify::NotifyState::Stopping,
        sd_notify::NotifyState::Status(text),
    ]);
}

/// The watchdog's verdict on one look at the appliance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Assessment {
    /// Feed the watchdog.
    pub alive: bool,
    /// The STATUS= line.
    pub status: String,
}

/// Judges the appliance from what the watchdog saw: the tree (or why it
/// could not be had), how long the writer has left a ping unanswered, the
/// writer's own status, and whether its breaker holds commits back.
pub fn assess(
    tree: Result<&TreeNode, &str>,
    writer_silent_for: Option<Duration>,
    deadline: Deadlines,
    writer: &WriterStatus,
    suspended_for: Option<Duration>,
    busy: Option<(&str, Duration)>,
) -> Assessment {
    let dead = |why: String| Assessment {
        alive: false,
        status: format!("unhealthy: {why}"),
    };
    let tree = match tree {
        Ok(t) => t,
        Err(why) => return dead(why.to_owned()),
    };
    if let Some(c) = tree
        .children
        .iter()
        .find(|c| c.essential && c.state == ChildState::Failed)
    {
        return dead(format!(
            "{} {} was given up: {}",
            c.kind,
            c.name,
            c.last_error.as_deref().unwrap_or("no error recorded")
        ));
    }
    if let Some(silent) = writer_silent_for.filter(|s| *s >= deadline.writer) {
        match busy {
            // Silent because it is doing a long job on purpose.
            Some((what, running)) if running < deadline.maintenance => {
                return Assessment {
                    alive: true,
                    status: format!(
                        "busy: the database writer has been running {what} for {} s",
                        running.as_secs()
                    ),
                };
            }
            Some((what, running)) => {
                return dead(format!(
                    "the database writer has been running {what} for {} s, past the maintenance grace",
                    running.as_secs()
                ));
            }
            None => {
                return dead(format!(
                    "the database writer has not answered for {} s (wedged?)",
                    silent.as_secs()
                ));
            }
        }
    }
    let sensors = tree
        .find("sensors")
        .map(|s| {
            let count = |st: ChildState| s.children.iter().filter(|c| c.state == st).count();
            let others: Vec<String> = ChildState::SENSOR_STATES
                .into_iter()
                .skip(1)
                .filter(|st| count(*st) > 0)
                .map(|st| format!("{} {}", count(st), st.as_str()))
                .collect();
            let mut line = format!(
                "{}/{} sensors running",
                count(ChildState::Running),
                s.children.len()
            );
            if !others.is_empty() {
                line += &format!(" ({})", others.join(", "));
            }
            line
        })
        .unwrap_or_else(|| "no sensors".into());
    let q = &writer.queue;
    let status = if let Some(wait) = suspended_for {
        format!(
            "degraded: database writes suspended (circuit breaker open, trial in {} s): {}; {} readings held; {sensors}",
            wait.as_secs(),
            writer.last_error.as_deref().unwrap_or("unknown error"),
            q.len
        )
    } else if !writer.writable {
        format!(
            "degraded: database not writable: {}; {} readings held; {sensors}",
            writer.last_error.as_deref().unwrap_or("unknown error"),
            q.len
        )
    } else {
        format!(
            "running: {sensors}; {} readings stored; {} queued",
            writer.committed_rows, q.len
        )
    };
    Assessment {
        alive: true,
        status,
    }
}

/// How long the writer may stay silent: normally, and during maintenance it
/// runs on purpose.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Deadlines {
    pub writer: Duration,
    pub maintenance: Duration,
}

/// One ping to the writer at a time; how long the current one has gone
/// unanswered.
#[derive(Default)]
struct WriterProbe {
    outstanding: Option<(Instant, oneshot::Receiver<bool>)>,
}

impl WriterProbe {
    fn poll(&mut self, writer: &Arc<WriterShared>) -> Option<Duration> {
        if let Some((since, rx)) = &mut self.outstanding {
            match rx.try_recv() {
                Err(oneshot::error::TryRecvError::Empty) => return Some(since.elapsed()),
                // Answered (or no writer to ask): ask again.
                _ => self.outstanding = None,
            }
        }
        let (tx, rx) = oneshot::channel();
        let w = writer.clone();
        actix_rt::spawn(async move {
            let _ = tx.send(w.ping().await);
        });
        self.outstanding = Some((Instant::now(), rx));
        None
    }
}

/// Feeds systemd's watchdog while the appliance is alive and keeps its
/// STATUS= line current, until the task is dropped. Returns at once when not
/// under systemd.
pub async fn watchdog(root: Addr<Supervisor>, writer: Arc<WriterShared>, deadline: Deadlines) {
    if !enabled() {
        return;
    }
    let watchdog = sd_notify::watchdog_enabled();
    // systemd's advice: ping at half the timeout; a third leaves room for a
    // slow look at the tree.
    let every = watchdog.map_or(STATUS_EVERY, |w| (w / 3).max(Duration::from_millis(10)));
    match watchdog {
        Some(w) => log::info!(
            "systemd watchdog: {} ms; fed every {} ms while the appliance is alive (writer deadline {} ms)",
            w.as_millis(),
            every.as_millis(),
            deadline.writer.as_millis()
        ),
        None => log::info!("systemd: notifying status; no watchdog asked for"),
    }
    let mut probe = WriterProbe::default();
    let mut last_status = String::new();
    let mut was_alive = true;
    let mut ticker = tokio::time::interval(every);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        let silent = probe.poll(&writer);
        let tree = match tokio::time::timeout(TREE_DEADLINE, root.send(GetTree)).await {
            Ok(Ok(t)) => Ok(t),
            Ok(Err(_)) => Err("the root supervisor is not running".to_owned()),
            Err(_) => Err(format!(
                "the root supervisor did not answer within {} ms",
                TREE_DEADLINE.as_millis()
            )),
        };
        let a = assess(
            tree.as_ref().map_err(String::as_str),
            silent,
            deadline,
            &writer.status(),
            writer.suspended_for(),
            writer.busy(),
        );
        if a.alive != was_alive {
            if a.alive {
                log::info!("systemd watchdog: alive again; feeding it");
            } else {
                log::error!("systemd watchdog: no longer fed: {}", a.status);
            }
            was_alive = a.alive;
        }
        let mut states = Vec::with_capacity(2);
        if a.alive && watchdog.is_some() {
            states.push(sd_notify::NotifyState::Watchdog);
        }
        if a.status != last_status {
            states.push(sd_notify::NotifyState::Status(&a.status));
        }
        if !states.is_empty() {
            send(&states);
        }
        last_status = a.status;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::config::OverflowPolicy;
    use crate::storage::queue::QueueStats;

    fn node(name: &str, kind: &str, essential: bool, state: ChildState) -> TreeNode {
        TreeNode {
            name: name.into(),
            kind: kind.into(),
            state,
            essential,
            restarts: 0,
            restarts_in_window: 0,
            last_error: Some("boom".into()),
            last_error_at: None,
            next_retry_at: None,
            next_retry_in_ms: None,
            next_revive_at: None,
            next_revive_in_ms: None,
            reviving: false,
            running_since: None,
            children: Vec::new(),
        }
    }

    fn tree(writer: ChildState, sensor: ChildState) -> TreeNode {
        let mut sensors = node("sensors", "supervisor", true, ChildState::Running);
        sensors.children = vec![node("vital", "sensor", true, sensor)];
        let mut root = node("root", "supervisor", true, ChildState::Running);
        root.children = vec![
            node("writer", "writer", true, writer),
            node("guard", "guard", false, ChildState::Failed),
            sensors,
        ];
        root
    }

    fn writer(writable: bool) -> WriterStatus {
        WriterStatus {
            running: true,
            writable,
            failing_since: None,
            last_error: (!writable).then(|| "disk I/O error".into()),
            committed_rows: 42,
            committed_batches: 1,
            failed_commits: 0,
            nudged_rows: 0,
            last_commit_at: None,
            last_batch_rows: 0,
            last_batch_ms: 0.0,
            queue: QueueStats {
                len: 7,
                capacity: 10,
                policy: OverflowPolicy::DropOldest,
                accepted: 0,
                dropped: 0,
                high_water: 0,
            },
            uncommitted_rows: 7,
            committed_through_ms: None,
            sealing: Default::default(),
        }
    }

    const DEADLINE: Deadlines = Deadlines {
        writer: Duration::from_secs(10),
        maintenance: Duration::from_secs(100),
    };

    #[test]
    fn alive_while_the_tree_and_the_writer_answer() {
        let t = tree(ChildState::Running, ChildState::Running);
        let a = assess(Ok(&t), None, DEADLINE, &writer(true), None, None);
        assert!(a.alive);
        assert_eq!(
            a.status,
            "running: 1/1 sensors running; 42 readings stored; 7 queued"
        );
        // A ping still within the deadline is fine.
        let a = assess(
            Ok(&t),
            Some(Duration::from_secs(9)),
            DEADLINE,
            &writer(true),
            None,
            None,
        );
        assert!(a.alive);
    }

    #[test]
    fn the_status_line_counts_sensors_by_the_tree_state() {
        let mut t = tree(ChildState::Running, ChildState::Running);
        let sensors = &mut t.children[2].children;
        for (i, st) in ChildState::SENSOR_STATES.into_iter().enumerate() {
            sensors.push(node(&format!("s{i}"), "sensor", false, st));
        }
        let a = assess(Ok(&t), None, DEADLINE, &writer(true), None, None);
        assert_eq!(
            a.status,
            "running: 2/9 sensors running (1 paused, 1 suspended, 1 unavailable, \
             1 restarting, 1 failed, 1 disabled, 1 stopped); 42 readings stored; 7 queued"
        );
    }

    #[test]
    fn a_wedged_writer_stops_the_pings() {
        let t = tree(ChildState::Running, ChildState::Running);
        let a = assess(
            Ok(&t),
            Some(DEADLINE.writer),
            DEADLINE,
            &writer(true),
            None,
            None,
        );
        assert!(!a.alive);
        assert!(
            a.status.contains("writer has not answered for 10 s"),
            "{}",
            a.status
        );
    }

    #[test]
    fn a_writer_busy_with_maintenance_may_be_silent_for_the_grace() {
        let t = tree(ChildState::Running, ChildState::Running);
        let silent = Some(Duration::from_secs(50));
        let busy = Some(("full optimize", Duration::from_secs(50)));
        let a = assess(Ok(&t), silent, DEADLINE, &writer(true), None, busy);
        assert!(a.alive, "{}", a.status);
        assert!(
            a.status.contains("running full optimize for 50 s"),
            "{}",
            a.status
        );
        let busy = Some(("full optimize", Duration::from_secs(150)));
        let a = assess(
            Ok(&t),
            Some(Duration::from_secs(150)),
            DEADLINE,
            &writer(true),
            None,
            busy,
        );
        assert!(!a.alive);
        assert!(
            a.status.contains("past the maintenance grace"),
            "{}",
            a.status
        );
    }

    #[test]
    fn a_given_up_essential_root_child_stops_the_pings_but_a_sensor_does_not() {
        let t = tree(ChildState::Failed, ChildState::Running);
        let a = assess(Ok(&t), None, DEADLINE, &writer(true), None, None);
        assert!(!a.alive);
        assert!(
            a.status.contains("writer writer was given up: boom"),
            "{}",
            a.status
        );
        // The given-up guard is not essential; a given-up sensor is /health's business.
        let t = tree(ChildState::Running, ChildState::Failed);
        let a = assess(Ok(&t), None, DEADLINE, &writer(true), None, None);
        assert!(a.alive, "{}", a.status);
        assert!(
            a.status.contains("0/1 sensors running (1 failed)"),
            "{}",
            a.status
        );
        let a = assess(
            Err("the root supervisor is not running"),
            None,
            DEADLINE,
            &writer(true),
            None,
            None,
        );
        assert!(!a.alive);
    }

    #[test]
    fn a_failing_database_is_degraded_not_dead() {
        let t = tree(ChildState::Running, ChildState::Running);
        let a = assess(Ok(&t), None, DEADLINE, &writer(false), None, None);
        assert!(a.alive);
        assert!(
            a.status
                .starts_with("degraded: database not writable: disk I/O error; 7 readings held"),
            "{}",
            a.status
        );
        let a = assess(
            Ok(&t),
            None,
            DEADLINE,
            &writer(false),
            Some(Duration::from_secs(30)),
            None,
        );
        assert!(a.alive);
        assert!(
            a.status.contains("circuit breaker open, trial in 30 s"),
            "{}",
            a.status
        );
    }
}
