//! The contract between a supervisor and its children: lifecycle events, the
//! reporter every child carries, and the factory that makes a fresh child.
//!
//! actix does not tell anyone when an actor dies from a panic: tokio catches
//! the panic at the task boundary and drops the actor's context, whose `Drop`
//! still runs `stopping()` / `stopped()`. So each child owns a
//! [`LifecycleReporter`] and calls it from `stopped()`. If a panic on this
//! thread just happened (captured by [`install_panic_hook`]), the stop is
//! reported as that failure; a child dropped without any report fails from
//! `Drop`. The supervisor treats a stop it did not ask for as a failure too.

use std::cell::RefCell;
use std::sync::Once;
use std::time::{Duration, Instant};

use actix::prelude::*;

use super::{ChildState, TreeNode};

/// Index of a child within its supervisor.
pub type ChildId = usize;

/// What happened to a child instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EventKind {
    /// The instance is up and doing its work.
    Started,
    /// The instance did its work once without failing (sent only by
    /// children whose spec says they report health; once per instance).
    Healthy,
    /// The instance died or gave up; the supervisor decides about a restart.
    Failed(String),
    /// The instance stopped because it was asked to.
    Stopped,
}

/// A lifecycle event, sent by a child (or its reporter's `Drop`) to its
/// supervisor. Events from an older generation are ignored.
#[derive(Debug, Clone, Message)]
#[rtype(result = "()")]
pub struct ChildEvent {
    pub id: ChildId,
    pub generation: u64,
    pub kind: EventKind,
}

/// Asks a child to stop gracefully. The reply comes once the child has done
/// its stopping work (the writer flushes, a supervisor stops its children).
#[derive(Debug, Clone, Copy, Message)]
#[rtype(result = "()")]
pub struct Stop;

/// Makes the spec of a child on the receiving supervisor's thread (a spec
/// holds closures that stay on one thread; this recipe travels to it).
pub type MakeSpec = Box<dyn FnOnce() -> ChildSpec + Send>;

/// Adds, replaces or removes one child of the supervisor called
/// `supervisor`, wherever it is in the tree, while its other children run
/// on untouched. With `spec`, a child of that name is stopped (waiting for
/// it) and replaced, or the child is added at the end; without, the child
/// is stopped and removed. Answers `false` when no supervisor has that
/// name, or when removing a child it does not have.
#[derive(Message)]
#[rtype(result = "bool")]
pub struct PutChild {
    pub supervisor: String,
    pub name: String,
    pub spec: Option<MakeSpec>,
}

/// Asks a supervisor for its subtree.
#[derive(Debug, Clone, Copy, Message)]
#[rtype(result = "TreeNode")]
pub struct GetTree;

/// Carried by every child instance; reports its lifecycle exactly once.
pub struct LifecycleReporter {
    id: ChildId,
    generation: u64,
    supervisor: Recipient<ChildEvent>,
    finished: bool,
    healthy: bool,
}

impl LifecycleReporter {
    pub fn new(id: ChildId, generation: u64, supervisor: Recipient<ChildEvent>) -> Self {
        LifecycleReporter {
            id,
            generation,
            supervisor,
            finished: false,
            healthy: false,
        }
    }

    fn send(&self, kind: EventKind) {
        self.supervisor.do_send(ChildEvent {
            id: self.id,
            generation: self.generation,
            kind,
        });
    }

    /// The child is up. Call from `Actor::started`.
    pub fn started(&self) {
        self.send(EventKind::Started);
    }

    /// The child did its work without failing; only the first call of an
    /// instance is sent.
    pub fn healthy(&mut self) {
        if !self.healthy && !self.finished {
            self.healthy = true;
            self.send(EventKind::Healthy);
        }
    }

    /// The child has failed and is about to stop itself.
    pub fn failed(&mut self, reason: impl Into<String>) {
        if !self.finished {
            self.finished = true;
            self.send(EventKind::Failed(reason.into()));
        }
    }

    /// The child stopped. Call from `Actor::stopped`; a no-op after
    /// `failed`. A panic just before means the stop is that panic.
    pub fn stopped(&mut self) {
        if !self.finished {
            self.finished = true;
            match take_last_panic() {
                Some(msg) => self.send(EventKind::Failed(format!("panicked: {msg}"))),
                None => self.send(EventKind::Stopped),
            }
        }
    }

    pub fn generation(&self) -> u64 {
        self.generation
    }
}

impl Drop for LifecycleReporter {
    fn drop(&mut self) {
        if !self.finished {
            let reason = match take_last_panic() {
                Some(msg) => format!("panicked: {msg}"),
                None => "actor dropped without stopping".to_owned(),
            };
            self.finished = true;
            self.send(EventKind::Failed(reason));
        }
    }
}

/// A running child, as its supervisor holds it.
pub struct ChildHandle {
    /// Graceful stop.
    pub stop: Recipient<Stop>,
    /// Present when the child is itself a supervisor.
    pub supervisor: Option<Addr<super::Supervisor>>,
}

/// Makes a fresh child instance; called for the first start and every restart.
pub trait ChildFactory: 'static {
    fn start(&self, reporter: LifecycleReporter) -> ChildHandle;
}

impl<F> ChildFactory for F
where
    F: Fn(LifecycleReporter) -> ChildHandle + 'static,
{
    fn start(&self, reporter: LifecycleReporter) -> ChildHandle {
        self(reporter)
    }
}

/// What a supervisor is told about a child it will run.
pub struct ChildSpec {
    pub name: String,
    /// What kind of actor this is (`writer`, `sensor`, `supervisor`, ...).
    pub kind: &'static str,
    /// A given-up essential child makes the appliance unhealthy.
    pub essential: bool,
    pub factory: Box<dyn ChildFactory>,
    /// The child reports `Healthy` itself (a sensor, after a read that did
    /// not fail); otherwise starting counts as healthy. Until healthy, an
    /// unhealthy spell of failures goes on (see `policy.rs`).
    pub reports_health: bool,
    /// What a running child says of itself beyond `running` (a sensor:
    /// `unavailable`, `suspended`, `paused`); the tree shows it instead.
    pub condition: Option<Box<dyn Fn() -> Option<ChildState>>>,
    /// A disabled child is shown in the tree (state `disabled`) but never
    /// started, restarted or revived.
    pub enabled: bool,
}

impl ChildSpec {
    pub fn new(
        name: impl Into<String>,
        kind: &'static str,
        essential: bool,
        factory: impl ChildFactory,
    ) -> ChildSpec {
        ChildSpec {
            name: name.into(),
            kind,
            essential,
            factory: Box::new(factory),
            reports_health: false,
            condition: None,
            enabled: true,
        }
    }

    /// A child that is configured but not run: a tree node in state
    /// `disabled`, whose factory is never called.
    pub fn disabled(mut self) -> Self {
        self.enabled = false;
        self
    }

    /// The child reports its own health, and refines `running` with
    /// `condition`.
    pub fn with_health(mut self, condition: impl Fn() -> Option<ChildState> + 'static) -> Self {
        self.reports_health = true;
        self.condition = Some(Box::new(condition));
        self
    }
}

/// A panic message older than this is not attributed to a stopping actor.
const PANIC_ATTRIBUTION_WINDOW: Duration = Duration::from_secs(5);

thread_local! {
    static LAST_PANIC: RefCell<Option<(Instant, String)>> = const { RefCell::new(None) };
}

/// Remembers each thread's last panic message so that a reporter dropped
/// by that panic can say what happened. Chains to the previous hook, so
/// panics are still printed.
pub fn install_panic_hook() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let msg = panic_message(info.payload());
            let place = info
                .location()
                .map(|l| format!(" at {}:{}", l.file(), l.line()))
                .unwrap_or_default();
            LAST_PANIC.with(|p| *p.borrow_mut() = Some((Instant::now(), format!("{msg}{place}"))));
            previous(info);
        }));
    });
}

/// This thread's last panic message, if it is recent; clears it.
fn take_last_panic() -> Option<String> {
    LAST_PANIC
        .with(|p| p.borrow_mut().take())
        .filter(|(at, _)| at.elapsed() < PANIC_ATTRIBUTION_WINDOW)
        .map(|(_, msg)| msg)
}

/// The text of a panic payload.
pub fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "non-string panic payload".to_owned()
    }
}
