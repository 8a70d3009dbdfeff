//! The Guard actor, the coordinator above storage and the live feed: the
//! periodic side of [`GuardShared`]. It forgets idle
//! rate-limiter clients (`retain_recent`) every `guard.trim_interval_ms`
//! and watches the process's RSS every `guard.memory.check_interval_ms`;
//! above the soft limit it sheds what can go without losing an accepted
//! reading and announces the change (`Event::Memory`). After RSS has grown
//! by a few MiB it also hands the allocator's free memory back to the
//! kernel (`trim.rs`), so that a burst's peak does not stay resident.
//!
//! It is a non-essential child of the root: the breakers and limiters live
//! in the shared state and keep working without it; given up, only trimming
//! and the memory guard stop (and `/health` warns).

use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use diesel::connection::SimpleConnection;

use crate::guard::GuardShared;
use crate::guard::memory::rss_bytes;
use crate::storage::ReadPool;
use crate::storage::queue::IngestQueue;
use crate::storage::writer::WriterShared;
use crate::supervisor::{ChildHandle, ChildSpec, LifecycleReporter, Stop};
use crate::vocab::bus::{Bus, Event};
use crate::vocab::guard::MemoryPressure;
use crate::web::live::{Deliver, LiveShared};

/// What the memory guard can shed.
#[derive(Clone)]
pub struct GuardDeps {
    pub queue: Arc<IngestQueue>,
    pub pool: ReadPool,
    pub writer: Arc<WriterShared>,
    pub live: Arc<LiveShared>,
    pub bus: Bus,
}

/// See the module docs.
pub struct Guard {
    shared: Arc<GuardShared>,
    deps: GuardDeps,
    reporter: LifecycleReporter,
    trim: crate::guard::trim::TrimPolicy,
}

impl Guard {
    pub fn new(shared: Arc<GuardShared>, deps: GuardDeps, reporter: LifecycleReporter) -> Guard {
        Guard {
            shared,
            deps,
            reporter,
            trim: crate::guard::trim::TrimPolicy::default(),
        }
    }

    fn trim(&mut self) {
        let gone = self.shared.http.trim();
        if gone > 0 {
            log::debug!("HTTP rate limiter forgot {gone} idle clients");
        }
    }

    fn check_memory(&mut self, ctx: &mut Context<Self>) {
        // procfs is in memory: reading it does not block.
        let Some(mut rss) = rss_bytes() else {
            return;
        };
        if self.trim.should_trim(rss) {
            crate::guard::trim::release_free_heap();
            let after = rss_bytes().unwrap_or(rss);
            log::debug!(
                "memory: gave free heap back, RSS {} -> {} KiB",
                rss / 1024,
                after / 1024
            );
            self.trim.trimmed(rss, after);
            rss = after;
        }
        let verdict = self.shared.observe_memory(rss);
        let soft = self.shared.memory().soft_limit_bytes;
        if let Some(above) = verdict.crossed {
            let mib = |b: u64| b as f64 / (1024.0 * 1024.0);
            if above {
                log::warn!(
                    "memory: RSS {:.1} MiB reached the soft limit of {:.1} MiB (guard.memory.soft_limit_mib); shedding buffers, caches and pending live updates",
                    mib(rss),
                    mib(soft)
                );
            } else {
                log::info!(
                    "memory: RSS {:.1} MiB back below the soft limit of {:.1} MiB",
                    mib(rss),
                    mib(soft)
                );
            }
            self.deps.bus.event(Event::Memory(MemoryPressure {
                above,
                rss_bytes: rss,
                soft_limit_bytes: soft,
            }));
        }
        if verdict.shed {
            self.shed(ctx);
        }
    }

    /// Gives back what can go without losing an accepted reading.
    fn shed(&mut self, ctx: &mut Context<Self>) {
        self.deps.queue.shrink();
        self.shared.http.trim();
        let sessions = self.deps.live.all();
        for s in &sessions {
            s.do_send(Deliver::Shed);
        }
        let pool = self.deps.pool.clone();
        let writer = self.deps.writer.clone();
        let work = async move {
            let readers = actix_web::rt::task::spawn_blocking(move || shrink_pool(&pool))
                .await
                .unwrap_or(0);
            let writer = writer
                .exec(|c| Ok(c.batch_execute("PRAGMA shrink_memory")?))
                .await;
            (readers, writer)
        };
        let n = sessions.len();
        ctx.spawn(work.into_actor(self).map(move |(readers, writer), _, _| {
            log::info!(
                "memory: shed the ingest queue's spare capacity, idle rate-limiter clients, pending live updates of {n} sessions and the page caches of {readers} read connections{}",
                match writer {
                    Ok(()) => " and the writer".to_owned(),
                    Err(e) => format!(" (not the writer's: {e})"),
                }
            );
        }));
    }
}

/// Releases the page cache of every idle read connection; returns how many.
fn shrink_pool(pool: &ReadPool) -> usize {
    let mut held = Vec::new();
    while held.len() < pool.max_size() as usize {
        match pool.try_get() {
            Some(c) => held.push(c),
            None => break,
        }
    }
    held.iter_mut()
        .map(|c| c.batch_execute("PRAGMA shrink_memory"))
        .filter(Result::is_ok)
        .count()
}

impl Actor for Guard {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        let c = &self.shared.config;
        ctx.run_interval(Duration::from_millis(c.trim_interval_ms), |act, _| {
            act.trim()
        });
        if c.memory.soft_limit_mib > 0 {
            if rss_bytes().is_some() {
                ctx.run_interval(
                    Duration::from_millis(c.memory.check_interval_ms),
                    |act, ctx| act.check_memory(ctx),
                );
            } else {
                log::warn!(
                    "memory guard off: this system does not report RSS in /proc/self/status"
                );
            }
        }
        self.reporter.started();
    }

    fn stopped(&mut self, _: &mut Context<Self>) {
        self.reporter.stopped();
    }
}

impl Handler<Stop> for Guard {
    type Result = ();

    fn handle(&mut self, _: Stop, ctx: &mut Context<Self>) {
        ctx.stop();
    }
}

/// The supervisor's recipe for the guard.
pub fn guard_child(shared: Arc<GuardShared>, deps: GuardDeps) -> ChildSpec {
    ChildSpec::new("guard", "guard", false, move |reporter| {
        let addr = Guard::new(shared.clone(), deps.clone(), reporter).start();
        ChildHandle {
            stop: addr.recipient(),
            supervisor: None,
        }
    })
}
