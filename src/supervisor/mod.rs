//! Supervision: a [`Supervisor`] actor owns a list of children, starts each
//! from its factory, and re-creates failed ones after an exponential backoff
//! with jitter until the restart intensity is exceeded, when it gives the
//! child up (`failed`) and records it.
//!
//! Supervisors nest: the sensors' supervisor is itself a child of the root.
//! The exact semantics (events, messages in flight, shutdown order) are
//! written down in `ARCHITECTURE.md`.

pub mod child;
pub mod config;
pub mod policy;

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use actix::prelude::*;
use serde::Serialize;
use tokio::time::Instant;

pub use child::{
    ChildEvent, ChildFactory, ChildHandle, ChildId, ChildSpec, EventKind, GetTree,
    LifecycleReporter, MakeSpec, PutChild, Stop, install_panic_hook,
};

/// An operator's request to restart a child now, wherever it is in the
/// tree: a running child is stopped and started afresh; a given-up child is
/// started again with its restart history cleared. Answers `false` when no
/// child has that name.
#[derive(Debug, Clone, Message)]
#[rtype(result = "bool")]
pub struct RestartChild(pub String);
pub use policy::{Decision, RestartPolicy, RestartTracker};

use crate::vocab::bus::{Bus, Event};
use crate::vocab::clock::{ms_after, now_ms, rfc3339};
use crate::vocab::supervision::SupervisorEvent;

/// How long a supervisor waits for a nested supervisor's subtree.
const TREE_QUERY_TIMEOUT: Duration = Duration::from_secs(2);
/// Supervisor events kept for `/api/supervisor`.
pub const EVENT_LOG_CAPACITY: usize = 200;

/// Where a child is in its life. The tree, `/api/sensors`, `/metrics`, the
/// systemd STATUS line and the dashboard all show a sensor by this one
/// state (for a sensor, `starting` reads as `running` and `stopping` as
/// `stopped`: see [`ChildState::of_sensor`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ChildState {
    /// Created, not yet reported `started`.
    Starting,
    Running,
    /// Running, held by pacing at the critical level (an optional sensor).
    Paused,
    /// Running, held back by its circuit breaker until the next trial.
    Suspended,
    /// Running, its data source absent; probed again now and then.
    Unavailable,
    /// Configured off; never started.
    Disabled,
    /// Failed; a new instance is scheduled (`next_retry_at`).
    Restarting,
    /// Given up after exceeding the restart intensity; stays down.
    Failed,
    /// Asked to stop; waiting for it.
    Stopping,
    Stopped,
}

impl ChildState {
    /// The states a sensor can be in, in the order views list them.
    pub const SENSOR_STATES: [ChildState; 8] = [
        ChildState::Running,
        ChildState::Paused,
        ChildState::Suspended,
        ChildState::Unavailable,
        ChildState::Restarting,
        ChildState::Failed,
        ChildState::Disabled,
        ChildState::Stopped,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ChildState::Starting => "starting",
            ChildState::Running => "running",
            ChildState::Paused => "paused",
            ChildState::Suspended => "suspended",
            ChildState::Unavailable => "unavailable",
            ChildState::Disabled => "disabled",
            ChildState::Restarting => "restarting",
            ChildState::Failed => "failed",
            ChildState::Stopping => "stopping",
            ChildState::Stopped => "stopped",
        }
    }

    /// A sensor's state from its tree node (`None`: not in the tree).
    pub fn of_sensor(enabled: bool, node: Option<ChildState>) -> ChildState {
        match (enabled, node) {
            (false, _) => ChildState::Disabled,
            (true, Some(ChildState::Starting)) => ChildState::Running,
            (true, Some(ChildState::Stopping) | None) => ChildState::Stopped,
            (true, Some(s)) => s,
        }
    }
}

/// One node of the supervision tree, as the API shows it.
#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct TreeNode {
    pub name: String,
    pub kind: String,
    pub state: ChildState,
    pub essential: bool,
    /// Instances started after the first.
    pub restarts: u32,
    pub restarts_in_window: u32,
    pub last_error: Option<String>,
    pub last_error_at: Option<String>,
    pub next_retry_at: Option<String>,
    pub next_retry_in_ms: Option<u64>,
    /// A given-up child's next revive attempt, when reviving is on.
    pub next_revive_at: Option<String>,
    pub next_revive_in_ms: Option<u64>,
    /// A revive attempt is running: `failed` until it proves healthy.
    pub reviving: bool,
    pub running_since: Option<String>,
    pub children: Vec<TreeNode>,
}

impl TreeNode {
    /// The first node called `name` in this subtree (depth first).
    pub fn find(&self, name: &str) -> Option<&TreeNode> {
        if self.name == name {
            return Some(self);
        }
        self.children.iter().find_map(|c| c.find(name))
    }

    /// Every node of this subtree, depth first.
    pub fn walk(&self) -> Vec<&TreeNode> {
        let mut out = vec![self];
        for c in &self.children {
            out.extend(c.walk());
        }
        out
    }
}

/// The recent supervision events of the whole tree, newest last; each is
/// also published on the event bus.
#[derive(Default)]
pub struct EventLog {
    events: Mutex<VecDeque<SupervisorEvent>>,
    bus: Bus,
}

impl EventLog {
    pub fn new(bus: Bus) -> EventLog {
        EventLog {
            events: Mutex::default(),
            bus,
        }
    }

    fn record(&self, supervisor: &str, child: &str, event: &'static str, detail: Option<String>) {
        let at_ms = now_ms();
        let ev = SupervisorEvent {
            at: rfc3339(at_ms),
            at_ms,
            supervisor: supervisor.to_owned(),
            child: child.to_owned(),
            event,
            detail,
        };
        self.bus.event(Event::Supervisor(ev.clone()));
        let mut events = self.events.lock().unwrap_or_else(|p| p.into_inner());
        if events.len() == EVENT_LOG_CAPACITY {
            events.pop_front();
        }
        events.push_back(ev);
    }

    /// A copy of the recorded events, oldest first.
    pub fn snapshot(&self) -> Vec<SupervisorEvent> {
        let events = self.events.lock().unwrap_or_else(|p| p.into_inner());
        events.iter().cloned().collect()
    }
}

struct Slot {
    spec: ChildSpec,
    generation: u64,
    state: ChildState,
    handle: Option<ChildHandle>,
    tracker: RestartTracker,
    restarts: u32,
    last_error: Option<(i64, String)>,
    next_retry: Option<Instant>,
    running_since: Option<i64>,
    /// Start a new instance once the current one has stopped.
    restart_requested: bool,
    /// Given up; the next revive attempt is due then.
    next_revive: Option<Instant>,
    /// The running instance is a revive attempt.
    reviving: bool,
    /// An instance has been started from this spec.
    started_once: bool,
    /// What to do once the running instance has stopped (`PutChild`).
    pending: Option<Pending>,
    /// Removed by `PutChild`: not shown, never started. The slot stays so
    /// that the other children keep their ids.
    removed: bool,
}

/// A change to a child that waits for its running instance to stop.
enum Pending {
    Replace(ChildSpec),
    Remove,
}

impl Slot {
    fn new(spec: ChildSpec) -> Slot {
        Slot {
            spec,
            generation: 0,
            state: ChildState::Starting,
            handle: None,
            tracker: RestartTracker::default(),
            restarts: 0,
            last_error: None,
            next_retry: None,
            running_since: None,
            restart_requested: false,
            next_revive: None,
            reviving: false,
            started_once: false,
            pending: None,
            removed: false,
        }
    }
}

/// Supervises a fixed list of children. See the module docs.
pub struct Supervisor {
    name: String,
    policy: RestartPolicy,
    stop_timeout: Duration,
    slots: Vec<Slot>,
    reporter: Option<LifecycleReporter>,
    log: Arc<EventLog>,
    shutting_down: bool,
}

impl Supervisor {
    /// A supervisor for `children`, started in order. `reporter` is present
    /// when this supervisor is itself supervised.
    pub fn new(
        name: impl Into<String>,
        policy: RestartPolicy,
        stop_timeout: Duration,
        children: Vec<ChildSpec>,
        log: Arc<EventLog>,
        reporter: Option<LifecycleReporter>,
    ) -> Supervisor {
        let slots = children.into_iter().map(Slot::new).collect();
        Supervisor {
            name: name.into(),
            policy,
            stop_timeout,
            slots,
            reporter,
            log,
            shutting_down: false,
        }
    }

    fn start_child(&mut self, id: ChildId, ctx: &mut Context<Self>) {
        let me = ctx.address().recipient();
        let slot = &mut self.slots[id];
        // A new generation also voids any timer set for the previous one.
        slot.generation += 1;
        if !slot.spec.enabled {
            slot.state = ChildState::Disabled;
            slot.handle = None;
            slot.running_since = None;
            slot.next_retry = None;
            slot.next_revive = None;
            slot.reviving = false;
            return;
        }
        if std::mem::replace(&mut slot.started_once, true) {
            slot.restarts += 1;
        }
        slot.state = if slot.reviving {
            ChildState::Failed
        } else {
            ChildState::Starting
        };
        slot.next_retry = None;
        slot.next_revive = None;
        let reporter = LifecycleReporter::new(id, slot.generation, me);
        slot.handle = Some(slot.spec.factory.start(reporter));
    }

    fn child_failed(&mut self, id: ChildId, reason: String, ctx: &mut Context<Self>) {
        let now = Instant::now();
        let slot = &mut self.slots[id];
        slot.handle = None;
        slot.running_since = None;
        slot.last_error = Some((now_ms(), reason.clone()));
        self.log
            .record(&self.name, &slot.spec.name, "failed", Some(reason.clone()));
        if self.shutting_down {
            slot.state = ChildState::Stopped;
            return;
        }
        if std::mem::take(&mut slot.reviving) {
            log::info!(
                "{}/{}: revive attempt failed ({reason})",
                self.name,
                slot.spec.name
            );
            slot.state = ChildState::Failed;
            self.schedule_revive(id, ctx);
            return;
        }
        let decision = slot.tracker.on_failure(&self.policy, now, fastrand::f64());
        let gave_up = match decision {
            Decision::GiveUp { restarts_in_window } => Some(format!(
                "{restarts_in_window} restarts within {} s",
                self.policy.window.as_secs()
            )),
            Decision::GiveUpFailing {
                failing_for,
                failures,
            } => Some(format!(
                "{failures} failures over {} s without a healthy run",
                failing_for.as_secs()
            )),
            Decision::Restart { .. } => None,
        };
        if let Some(why) = gave_up {
            log::error!(
                "{}/{} failed ({reason}) after {why}; giving up",
                self.name,
                slot.spec.name,
            );
            slot.state = ChildState::Failed;
            self.log
                .record(&self.name, &slot.spec.name, "gave_up", Some(why));
            self.schedule_revive(id, ctx);
            return;
        }
        match decision {
            Decision::Restart { delay, attempt } => {
                log::warn!(
                    "{}/{} failed ({reason}); restart {attempt} in {} ms",
                    self.name,
                    slot.spec.name,
                    delay.as_millis()
                );
                slot.state = ChildState::Restarting;
                slot.next_retry = Some(now + delay);
                self.log.record(
                    &self.name,
                    &slot.spec.name,
                    "restart_scheduled",
                    Some(format!("in {} ms (attempt {attempt})", delay.as_millis())),
                );
                let generation = slot.generation;
                ctx.run_later(delay, move |act, ctx| {
                    let slot = &act.slots[id];
                    if !act.shutting_down
                        && slot.state == ChildState::Restarting
                        && slot.generation == generation
                    {
                        act.start_child(id, ctx);
                    }
                });
            }
            Decision::GiveUp { .. } | Decision::GiveUpFailing { .. } => {}
        }
    }

    /// After giving up (or a failed revive), tries the child again once
    /// the revive interval has passed, if reviving is on.
    fn schedule_revive(&mut self, id: ChildId, ctx: &mut Context<Self>) {
        let Some(every) = self.policy.revive else {
            return;
        };
        let slot = &mut self.slots[id];
        slot.next_revive = Some(Instant::now() + every);
        let generation = slot.generation;
        ctx.run_later(every, move |act, ctx| {
            let slot = &mut act.slots[id];
            if act.shutting_down
                || slot.state != ChildState::Failed
                || slot.generation != generation
                || slot.handle.is_some()
            {
                return;
            }
            log::info!("{}/{}: trying it again (revive)", act.name, slot.spec.name);
            slot.reviving = true;
            act.log
                .record(&act.name, &slot.spec.name, "revive_attempt", None);
            act.start_child(id, ctx);
        });
    }

    /// A started (or, for a child that reports health, healthy) instance.
    fn child_healthy(&mut self, id: ChildId) {
        let slot = &mut self.slots[id];
        slot.tracker.on_started(Instant::now());
        if std::mem::take(&mut slot.reviving) {
            slot.state = ChildState::Running;
            slot.running_since = Some(now_ms());
            slot.tracker = RestartTracker::default();
            slot.tracker.on_started(Instant::now());
            log::info!("{}/{} revived", self.name, slot.spec.name);
            self.log
                .record(&self.name, &slot.spec.name, "revived", None);
        }
    }

    /// Puts `spec` in slot `id` (whose instance, if any, has stopped) with
    /// a fresh restart history, and starts it (a disabled spec only shows).
    fn install(&mut self, id: ChildId, spec: ChildSpec, ctx: &mut Context<Self>) {
        let slot = &mut self.slots[id];
        let event = if slot.removed { "added" } else { "replaced" };
        let generation = slot.generation;
        *slot = Slot::new(spec);
        slot.generation = generation;
        log::info!("{}/{}: {event}", self.name, slot.spec.name);
        self.log.record(&self.name, &slot.spec.name, event, None);
        self.start_child(id, ctx);
    }

    /// Takes slot `id` (whose instance, if any, has stopped) out of the tree.
    fn remove(&mut self, id: ChildId) {
        let slot = &mut self.slots[id];
        slot.removed = true;
        slot.generation += 1;
        slot.state = ChildState::Stopped;
        slot.handle = None;
        slot.pending = None;
        slot.next_retry = None;
        slot.next_revive = None;
        log::info!("{}/{}: removed", self.name, slot.spec.name);
        self.log
            .record(&self.name, &slot.spec.name, "removed", None);
    }

    fn node(&self) -> TreeNode {
        let now = Instant::now();
        let wall = now_ms();
        let children = self
            .slots
            .iter()
            .filter(|s| !s.removed)
            .map(|s| TreeNode {
                name: s.spec.name.clone(),
                kind: s.spec.kind.to_owned(),
                state: match (s.state, &s.spec.condition) {
                    (ChildState::Running | ChildState::Starting, Some(c)) => c().unwrap_or(s.state),
                    (state, _) => state,
                },
                essential: s.spec.essential,
                restarts: s.restarts,
                restarts_in_window: s.tracker.restarts_in_window(),
                last_error: s.last_error.as_ref().map(|(_, e)| e.clone()),
                last_error_at: s.last_error.as_ref().map(|(t, _)| rfc3339(*t)),
                next_retry_at: s
                    .next_retry
                    .map(|t| rfc3339(ms_after(wall, t.saturating_duration_since(now)))),
                next_retry_in_ms: s
                    .next_retry
                    .map(|t| t.saturating_duration_since(now).as_millis() as u64),
                next_revive_at: s
                    .next_revive
                    .map(|t| rfc3339(ms_after(wall, t.saturating_duration_since(now)))),
                next_revive_in_ms: s
                    .next_revive
                    .map(|t| t.saturating_duration_since(now).as_millis() as u64),
                reviving: s.reviving,
                running_since: s.running_since.map(rfc3339),
                children: Vec::new(),
            })
            .collect();
        TreeNode {
            name: self.name.clone(),
            kind: "supervisor".into(),
            state: if self.shutting_down {
                ChildState::Stopping
            } else {
                ChildState::Running
            },
            essential: true,
            restarts: 0,
            restarts_in_window: 0,
            last_error: None,
            last_error_at: None,
            next_retry_at: None,
            next_retry_in_ms: None,
            next_revive_at: None,
            next_revive_in_ms: None,
            reviving: false,
            running_since: None,
            children,
        }
    }
}

impl Actor for Supervisor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        for id in 0..self.slots.len() {
            self.start_child(id, ctx);
        }
        if let Some(r) = &self.reporter {
            r.started();
        }
    }

    fn stopped(&mut self, _: &mut Context<Self>) {
        if let Some(r) = &mut self.reporter {
            r.stopped();
        }
    }
}

impl Handler<ChildEvent> for Supervisor {
    type Result = ();

    fn handle(&mut self, ev: ChildEvent, ctx: &mut Context<Self>) {
        let Some(slot) = self.slots.get_mut(ev.id) else {
            return;
        };
        if ev.generation != slot.generation {
            return;
        }
        if slot.pending.is_some()
            && !self.shutting_down
            && matches!(ev.kind, EventKind::Stopped | EventKind::Failed(_))
        {
            slot.handle = None;
            slot.running_since = None;
            match slot.pending.take() {
                Some(Pending::Replace(spec)) => self.install(ev.id, spec, ctx),
                _ => self.remove(ev.id),
            }
            return;
        }
        match ev.kind {
            EventKind::Healthy => {
                if slot.spec.reports_health {
                    self.child_healthy(ev.id);
                }
            }
            EventKind::Started if slot.reviving => {
                // Still `failed` until the attempt proves healthy.
                if !slot.spec.reports_health {
                    self.child_healthy(ev.id);
                }
            }
            EventKind::Started => {
                slot.state = ChildState::Running;
                if !slot.spec.reports_health {
                    slot.tracker.on_started(Instant::now());
                }
                slot.running_since = Some(now_ms());
                if slot.restarts > 0 {
                    log::info!(
                        "{}/{} running again (restart {})",
                        self.name,
                        slot.spec.name,
                        slot.restarts
                    );
                }
                self.log
                    .record(&self.name, &slot.spec.name, "started", None);
            }
            EventKind::Failed(reason) => self.child_failed(ev.id, reason, ctx),
            EventKind::Stopped if slot.restart_requested && !self.shutting_down => {
                slot.restart_requested = false;
                slot.handle = None;
                self.log.record(
                    &self.name,
                    &slot.spec.name,
                    "restarted",
                    Some("by an operator".into()),
                );
                log::info!("{}/{} restarted by an operator", self.name, slot.spec.name);
                self.start_child(ev.id, ctx);
            }
            EventKind::Stopped => {
                if self.shutting_down || slot.state == ChildState::Stopping {
                    slot.state = ChildState::Stopped;
                    slot.handle = None;
                    slot.running_since = None;
                    self.log
                        .record(&self.name, &slot.spec.name, "stopped", None);
                } else {
                    self.child_failed(ev.id, "stopped unexpectedly".into(), ctx);
                }
            }
        }
    }
}

impl Handler<GetTree> for Supervisor {
    type Result = ResponseFuture<TreeNode>;

    fn handle(&mut self, _: GetTree, _: &mut Context<Self>) -> Self::Result {
        let mut node = self.node();
        let nested: Vec<(String, Recipient<GetTree>)> = self
            .slots
            .iter()
            .filter(|s| !s.removed)
            .filter_map(|s| {
                let sup = s.handle.as_ref()?.supervisor.clone()?;
                Some((s.spec.name.clone(), sup.recipient()))
            })
            .collect();
        Box::pin(async move {
            for (name, r) in nested {
                if let Ok(Ok(sub)) = tokio::time::timeout(TREE_QUERY_TIMEOUT, r.send(GetTree)).await
                    && let Some(child) = node.children.iter_mut().find(|c| c.name == name)
                {
                    child.children = sub.children;
                }
            }
            node
        })
    }
}

impl Handler<RestartChild> for Supervisor {
    type Result = ResponseFuture<bool>;

    fn handle(&mut self, msg: RestartChild, ctx: &mut Context<Self>) -> Self::Result {
        if self.shutting_down {
            return Box::pin(async { false });
        }
        if let Some(id) = self
            .slots
            .iter()
            .position(|s| s.spec.name == msg.0 && !s.removed)
        {
            let slot = &mut self.slots[id];
            if !slot.spec.enabled {
                log::info!(
                    "{}/{} is disabled; not restarted",
                    self.name,
                    slot.spec.name
                );
                return Box::pin(async { true });
            }
            match &slot.handle {
                Some(h) => {
                    slot.reviving = false;
                    slot.restart_requested = true;
                    slot.state = ChildState::Stopping;
                    h.stop.do_send(Stop);
                }
                None => {
                    // Given up or waiting for a backoff: start it now.
                    slot.tracker = RestartTracker::default();
                    self.log.record(
                        &self.name,
                        &slot.spec.name,
                        "restarted",
                        Some("by an operator".into()),
                    );
                    self.start_child(id, ctx);
                }
            }
            return Box::pin(async { true });
        }
        let nested: Vec<Addr<Supervisor>> = self
            .slots
            .iter()
            .filter_map(|s| s.handle.as_ref()?.supervisor.clone())
            .collect();
        Box::pin(async move {
            for sup in nested {
                if let Ok(true) = sup.send(msg.clone()).await {
                    return true;
                }
            }
            false
        })
    }
}

impl Handler<PutChild> for Supervisor {
    type Result = ResponseFuture<bool>;

    fn handle(&mut self, msg: PutChild, ctx: &mut Context<Self>) -> Self::Result {
        if self.shutting_down {
            return Box::pin(async { false });
        }
        if msg.supervisor != self.name {
            let nested: Vec<Addr<Supervisor>> = self
                .slots
                .iter()
                .filter(|s| !s.removed)
                .filter_map(|s| s.handle.as_ref()?.supervisor.clone())
                .collect();
            return Box::pin(async move {
                let mut msg = Some(msg);
                for sup in nested {
                    // The recipe can travel only once: ask each nested
                    // supervisor whether it is the one first.
                    let Some(m) = msg.take() else { break };
                    if m.supervisor_is(&sup).await {
                        return sup.send(m).await.unwrap_or(false);
                    }
                    msg = Some(m);
                }
                false
            });
        }
        let current = self
            .slots
            .iter()
            .position(|s| s.spec.name == msg.name && !s.removed);
        let found = match (current, msg.spec) {
            (Some(id), Some(make)) => {
                let spec = make();
                let slot = &mut self.slots[id];
                match &slot.handle {
                    Some(h) => {
                        slot.pending = Some(Pending::Replace(spec));
                        slot.restart_requested = false;
                        slot.state = ChildState::Stopping;
                        h.stop.do_send(Stop);
                    }
                    None => self.install(id, spec, ctx),
                }
                true
            }
            (Some(id), None) => {
                let slot = &mut self.slots[id];
                match &slot.handle {
                    Some(h) => {
                        slot.pending = Some(Pending::Remove);
                        slot.restart_requested = false;
                        slot.state = ChildState::Stopping;
                        h.stop.do_send(Stop);
                    }
                    None => self.remove(id),
                }
                true
            }
            (None, Some(make)) => {
                let spec = make();
                // A removed slot of the same name is reused, so adding and
                // removing a child again and again does not grow the list.
                match self
                    .slots
                    .iter()
                    .position(|s| s.spec.name == msg.name && s.removed)
                {
                    Some(id) => self.install(id, spec, ctx),
                    None => {
                        self.slots.push(Slot::new(spec));
                        let id = self.slots.len() - 1;
                        log::info!("{}/{}: added", self.name, msg.name);
                        self.log.record(&self.name, &msg.name, "added", None);
                        self.start_child(id, ctx);
                    }
                }
                true
            }
            (None, None) => false,
        };
        Box::pin(async move { found })
    }
}

/// Which supervisor a [`PutChild`] is for, asked before the recipe is sent.
#[derive(Debug, Clone, Message)]
#[rtype(result = "bool")]
struct Holds(String);

impl Handler<Holds> for Supervisor {
    type Result = ResponseFuture<bool>;

    /// Whether this supervisor, or one nested in it, is called `name`.
    fn handle(&mut self, Holds(name): Holds, _: &mut Context<Self>) -> Self::Result {
        if name == self.name {
            return Box::pin(async { true });
        }
        let nested: Vec<Addr<Supervisor>> = self
            .slots
            .iter()
            .filter(|s| !s.removed)
            .filter_map(|s| s.handle.as_ref()?.supervisor.clone())
            .collect();
        Box::pin(async move {
            for sup in nested {
                if let Ok(true) = sup.send(Holds(name.clone())).await {
                    return true;
                }
            }
            false
        })
    }
}

impl PutChild {
    async fn supervisor_is(&self, sup: &Addr<Supervisor>) -> bool {
        matches!(sup.send(Holds(self.supervisor.clone())).await, Ok(true))
    }
}

impl Handler<Stop> for Supervisor {
    type Result = ResponseActFuture<Self, ()>;

    /// Stops children one at a time in reverse start order, each within the
    /// stop timeout, then stops itself. No restarts happen from here on.
    fn handle(&mut self, _: Stop, _: &mut Context<Self>) -> Self::Result {
        self.shutting_down = true;
        let mut stops = Vec::new();
        for slot in self.slots.iter_mut().rev() {
            if let Some(h) = &slot.handle {
                slot.state = ChildState::Stopping;
                stops.push((slot.spec.name.clone(), h.stop.clone()));
            } else if slot.state == ChildState::Restarting {
                slot.state = ChildState::Stopped;
                slot.next_retry = None;
            }
        }
        let timeout = self.stop_timeout;
        let name = self.name.clone();
        Box::pin(
            async move {
                for (child, stop) in stops {
                    match tokio::time::timeout(timeout, stop.send(Stop)).await {
                        Ok(_) => log::debug!("{name}/{child} stopped"),
                        Err(_) => log::error!(
                            "{name}/{child} did not stop within {} ms",
                            timeout.as_millis()
                        ),
                    }
                }
            }
            .into_actor(self)
            .map(|_, _, ctx| ctx.stop()),
        )
    }
}

/// Starts a nested supervisor as a child of another.
pub fn supervisor_child(
    name: &str,
    policy: RestartPolicy,
    stop_timeout: Duration,
    log: Arc<EventLog>,
    children: impl Fn() -> Vec<ChildSpec> + 'static,
) -> ChildSpec {
    let sup_name = name.to_owned();
    ChildSpec::new(
        name,
        "supervisor",
        true,
        move |reporter: LifecycleReporter| {
            let addr = Supervisor::new(
                sup_name.clone(),
                policy,
                stop_timeout,
                children(),
                log.clone(),
                Some(reporter),
            )
            .start();
            ChildHandle {
                stop: addr.clone().recipient(),
                supervisor: Some(addr),
            }
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    /// A child that fails on command (by panicking or by reporting).
    struct Worker {
        reporter: LifecycleReporter,
        starts: Arc<AtomicU32>,
    }

    #[derive(Message)]
    #[rtype(result = "()")]
    enum Poke {
        Panic,
        Fail,
        Healthy,
    }

    impl Actor for Worker {
        type Context = Context<Self>;
        fn started(&mut self, _: &mut Context<Self>) {
            self.starts.fetch_add(1, Ordering::SeqCst);
            self.reporter.started();
        }
        fn stopped(&mut self, _: &mut Context<Self>) {
            self.reporter.stopped();
        }
    }

    impl Handler<Poke> for Worker {
        type Result = ();
        fn handle(&mut self, p: Poke, ctx: &mut Context<Self>) {
            match p {
                Poke::Panic => panic!("poked"),
                Poke::Fail => {
                    self.reporter.failed("told to fail");
                    ctx.stop();
                }
                Poke::Healthy => self.reporter.healthy(),
            }
        }
    }

    impl Handler<Stop> for Worker {
        type Result = ();
        fn handle(&mut self, _: Stop, ctx: &mut Context<Self>) {
            ctx.stop();
        }
    }

    type Current = Arc<Mutex<Option<Addr<Worker>>>>;

    fn worker_spec(starts: Arc<AtomicU32>, current: Current) -> ChildSpec {
        ChildSpec::new("w", "test", true, move |reporter| {
            let addr = Worker {
                reporter,
                starts: starts.clone(),
            }
            .start();
            *current.lock().unwrap() = Some(addr.clone());
            ChildHandle {
                stop: addr.recipient(),
                supervisor: None,
            }
        })
    }

    fn policy(max_restarts: u32) -> RestartPolicy {
        RestartPolicy {
            backoff_base: Duration::from_millis(100),
            backoff_max: Duration::from_millis(800),
            max_restarts,
            window: Duration::from_secs(60),
            revive: None,
        }
    }

    async fn tree(sup: &Addr<Supervisor>) -> TreeNode {
        sup.send(GetTree).await.unwrap()
    }

    /// Lets the actors run until `cond` holds, advancing paused time.
    async fn until(mut cond: impl AsyncFnMut() -> bool) {
        for _ in 0..10_000 {
            if cond().await {
                return;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        panic!("condition not reached");
    }

    fn poke(current: &Current, p: Poke) {
        current.lock().unwrap().as_ref().unwrap().do_send(p);
    }

    #[actix_rt::test]
    async fn restarts_a_panicked_child_with_growing_delays_then_gives_up() {
        install_panic_hook();
        tokio::time::pause();
        let starts = Arc::new(AtomicU32::new(0));
        let current: Current = Arc::default();
        let log = Arc::new(EventLog::default());
        let sup = Supervisor::new(
            "root",
            policy(3),
            Duration::from_secs(1),
            vec![worker_spec(starts.clone(), current.clone())],
            log.clone(),
            None,
        )
        .start();
        until(async || tree(&sup).await.children[0].state == ChildState::Running).await;

        // The delay each restart was scheduled with, from the event log.
        let scheduled = |log: &EventLog| -> Vec<u64> {
            log.snapshot()
                .iter()
                .filter(|e| e.event == "restart_scheduled")
                .filter_map(|e| {
                    e.detail
                        .as_deref()?
                        .strip_prefix("in ")?
                        .split(' ')
                        .next()?
                        .parse()
                        .ok()
                })
                .collect()
        };
        for round in 1..=3 {
            poke(&current, if round == 2 { Poke::Fail } else { Poke::Panic });
            until(async || tree(&sup).await.children[0].state == ChildState::Restarting).await;
            let t0 = Instant::now();
            let remaining = tree(&sup).await.children[0].next_retry_in_ms.unwrap();
            until(async || starts.load(Ordering::SeqCst) == round + 1).await;
            // Paused time: the restart happened no earlier than the backoff.
            assert!(t0.elapsed() >= Duration::from_millis(remaining));
            until(async || tree(&sup).await.children[0].state == ChildState::Running).await;
        }
        // Equal jitter: the n-th delay lies in [base·2ⁿ⁻¹ / 2, base·2ⁿ⁻¹].
        let delays = scheduled(&log);
        assert_eq!(delays.len(), 3, "{delays:?}");
        assert!(delays.windows(2).all(|w| w[0] <= w[1]), "{delays:?}");
        for (n, d) in delays.iter().enumerate() {
            let full = 100u64 << n;
            assert!(
                (full / 2..=full).contains(d),
                "delay {n}: {d} ms not in [{}, {full}]",
                full / 2
            );
        }

        let node = tree(&sup).await;
        assert_eq!(node.children[0].restarts, 3);
        assert!(
            node.children[0]
                .last_error
                .as_deref()
                .unwrap()
                .contains("panicked: poked"),
            "{:?}",
            node.children[0].last_error
        );

        // The fourth failure within the window exceeds the intensity.
        poke(&current, Poke::Panic);
        until(async || tree(&sup).await.children[0].state == ChildState::Failed).await;
        tokio::time::sleep(Duration::from_secs(5)).await;
        assert_eq!(
            starts.load(Ordering::SeqCst),
            4,
            "no restart after giving up"
        );
        assert!(log.snapshot().iter().any(|e| e.event == "gave_up"));
    }

    #[actix_rt::test]
    async fn a_given_up_child_is_revived_once_it_proves_healthy() {
        tokio::time::pause();
        let starts = Arc::new(AtomicU32::new(0));
        let current: Current = Arc::default();
        let log = Arc::new(EventLog::default());
        let spec = worker_spec(starts.clone(), current.clone()).with_health(|| None);
        let policy = RestartPolicy {
            revive: Some(Duration::from_secs(10)),
            ..policy(0)
        };
        let sup = Supervisor::new(
            "root",
            policy,
            Duration::from_secs(1),
            vec![spec],
            log.clone(),
            None,
        )
        .start();
        let child = async || tree(&sup).await.children[0].clone();
        until(async || child().await.state == ChildState::Running).await;
        poke(&current, Poke::Fail);
        until(async || child().await.state == ChildState::Failed).await;
        let c = child().await;
        assert!(c.next_revive_in_ms.unwrap() <= 10_000, "{c:?}");
        assert!(c.next_revive_at.is_some() && !c.reviving);
        // The attempt starts after the interval; it stays `failed` until
        // healthy, and failing it waits another interval, with no restart.
        let t0 = Instant::now();
        until(async || starts.load(Ordering::SeqCst) == 2).await;
        assert!(t0.elapsed() >= Duration::from_millis(9_990));
        until(async || child().await.reviving).await;
        assert_eq!(child().await.state, ChildState::Failed);
        poke(&current, Poke::Fail);
        until(async || !child().await.reviving).await;
        let c = child().await;
        assert_eq!(c.state, ChildState::Failed);
        assert!(c.next_revive_in_ms.is_some(), "{c:?}");
        until(async || starts.load(Ordering::SeqCst) == 3).await;
        until(async || child().await.reviving).await;
        poke(&current, Poke::Healthy);
        until(async || child().await.state == ChildState::Running).await;
        let c = child().await;
        assert!(!c.reviving && c.next_revive_at.is_none(), "{c:?}");
        assert_eq!(c.restarts, 2, "counters kept");
        let events: Vec<&str> = log.snapshot().iter().map(|e| e.event).collect();
        assert_eq!(
            events.iter().filter(|e| **e == "revive_attempt").count(),
            2,
            "{events:?}"
        );
        assert_eq!(events.last(), Some(&"revived"), "{events:?}");
        assert_eq!(events.iter().filter(|e| **e == "gave_up").count(), 1);
    }

    #[actix_rt::test]
    async fn put_child_replaces_adds_and_removes_one_child_leaving_the_others() {
        tokio::time::pause();
        let (a_starts, b_starts) = (Arc::new(AtomicU32::new(0)), Arc::new(AtomicU32::new(0)));
        let (a_now, b_now): (Current, Current) = (Arc::default(), Arc::default());
        let named = |name: &str, starts: &Arc<AtomicU32>, current: &Current| {
            let mut spec = worker_spec(starts.clone(), current.clone());
            spec.name = name.into();
            spec
        };
        let log = Arc::new(EventLog::default());
        let inner = named("a", &a_starts, &a_now);
        let b_spec = named("b", &b_starts, &b_now);
        let sup = Supervisor::new(
            "root",
            policy(3),
            Duration::from_secs(1),
            vec![inner, b_spec],
            log.clone(),
            None,
        )
        .start();
        let states = async || -> Vec<(String, ChildState)> {
            tree(&sup)
                .await
                .children
                .iter()
                .map(|c| (c.name.clone(), c.state))
                .collect()
        };
        until(async || {
            states()
                .await
                .iter()
                .all(|(_, s)| *s == ChildState::Running)
        })
        .await;
        let first_b = b_now.lock().unwrap().clone().unwrap();

        // Replacing `a` stops it and starts the new spec; `b` is untouched.
        let (s, c) = (a_starts.clone(), a_now.clone());
        let put = |name: &str, spec: Option<MakeSpec>| PutChild {
            supervisor: "root".into(),
            name: name.into(),
            spec,
        };
        assert!(
            sup.send(put(
                "a",
                Some(Box::new(move || {
                    let mut spec = worker_spec(s, c);
                    spec.name = "a".into();
                    spec
                }))
            ))
            .await
            .unwrap()
        );
        until(async || a_starts.load(Ordering::SeqCst) == 2).await;
        until(async || states().await[0].1 == ChildState::Running).await;
        assert_eq!(b_starts.load(Ordering::SeqCst), 1);
        assert!(first_b.connected(), "b kept its instance");

        // Disabled: a node in state `disabled`, not started.
        let (s, c) = (a_starts.clone(), a_now.clone());
        sup.send(put(
            "a",
            Some(Box::new(move || {
                let mut spec = worker_spec(s, c).disabled();
                spec.name = "a".into();
                spec
            })),
        ))
        .await
        .unwrap();
        until(async || states().await[0].1 == ChildState::Disabled).await;
        assert!(!a_now.lock().unwrap().as_ref().unwrap().connected());
        assert!(sup.send(RestartChild("a".into())).await.unwrap());
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert_eq!(
            a_starts.load(Ordering::SeqCst),
            2,
            "a disabled child never starts"
        );

        // Added at the end, then removed; removing what is not there is false.
        let (c_starts, c_now): (Arc<AtomicU32>, Current) = Default::default();
        let (s, c) = (c_starts.clone(), c_now.clone());
        sup.send(put(
            "c",
            Some(Box::new(move || {
                let mut spec = worker_spec(s, c);
                spec.name = "c".into();
                spec
            })),
        ))
        .await
        .unwrap();
        until(async || states().await.len() == 3 && states().await[2].1 == ChildState::Running)
            .await;
        assert!(sup.send(put("b", None)).await.unwrap());
        until(async || states().await.iter().all(|(n, _)| n != "b")).await;
        assert!(!first_b.connected());
        assert!(!sup.send(put("b", None)).await.unwrap());
        let names: Vec<String> = states().await.into_iter().map(|(n, _)| n).collect();
        assert_eq!(names, ["a", "c"]);
        // A failure of `c` is still handled as `c`'s after the removal.
        poke(&c_now, Poke::Panic);
        until(async || c_starts.load(Ordering::SeqCst) == 2).await;
        let events: Vec<(String, &str)> = log
            .snapshot()
            .iter()
            .map(|e| (e.child.clone(), e.event))
            .filter(|(_, e)| ["replaced", "added", "removed"].contains(e))
            .collect();
        assert_eq!(
            events,
            [
                ("a".to_string(), "replaced"),
                ("a".to_string(), "replaced"),
                ("c".to_string(), "added"),
                ("b".to_string(), "removed")
            ]
        );
    }

    #[actix_rt::test]
    async fn stop_stops_children_without_restarting_them() {
        tokio::time::pause();
        let starts = Arc::new(AtomicU32::new(0));
        let current: Current = Arc::default();
        let sup = Supervisor::new(
            "root",
            policy(3),
            Duration::from_secs(1),
            vec![worker_spec(starts.clone(), current.clone())],
            Arc::new(EventLog::default()),
            None,
        )
        .start();
        until(async || tree(&sup).await.children[0].state == ChildState::Running).await;
        sup.send(Stop).await.unwrap();
        tokio::time::sleep(Duration::from_secs(5)).await;
        assert_eq!(starts.load(Ordering::SeqCst), 1);
        assert!(!current.lock().unwrap().as_ref().unwrap().connected());
    }
}
