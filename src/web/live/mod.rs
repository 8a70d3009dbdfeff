//! The live feed: `GET /ws` upgrades to a WebSocket served by a [`WsSession`]
//! actor; the [`LiveHub`] actor batches readings from the event bus per
//! throttle window and fans them out, with status events, to every session.
//!
//! The session registry lives in [`LiveShared`], not in the hub, so a hub
//! that fails and is restarted by its supervisor resumes fan-out to every
//! connected session without them doing anything.

pub mod hub;
pub mod outbox;
pub mod protocol;
pub mod session;

use std::collections::HashMap;
use std::os::fd::{AsRawFd, BorrowedFd, RawFd};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock};
use std::time::Duration;

use actix::prelude::*;
use actix_web::http::header;
use actix_web::{HttpRequest, HttpResponse, web};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::AppState;
use super::error::ApiError;
use crate::perf::{Op, Perf};
use crate::vocab::check::{ConfigError, positive};
use outbox::Outgoing;
use protocol::Subscription;
pub use session::WsSession;

/// `[live]`: the WebSocket feed.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LiveConfig {
    /// Readings arriving within this window go out as one message.
    pub throttle_ms: u64,
    /// Messages queued per session before the oldest readings are dropped.
    pub queue_capacity: usize,
    /// Concurrent sessions; more are refused with 503.
    pub max_sessions: usize,
    /// Largest frame a client may send (bigger: close 1009).
    pub max_frame_bytes: usize,
    /// Messages a client may send per second ...
    pub max_messages_per_sec: u32,
    /// ... with bursts up to this many.
    pub message_burst: u32,
    /// Bad or rate-limited messages tolerated before closing with 1008.
    pub max_errors: u32,
    /// The server pings every session this often.
    pub heartbeat_interval_ms: u64,
    /// A session not heard from (pong or message) for this long is closed (4000).
    pub heartbeat_timeout_ms: u64,
    /// A session whose socket accepts nothing for this long is closed (4001).
    pub stall_timeout_ms: u64,
    /// Kernel send buffer per WebSocket connection, in bytes (0: the
    /// kernel's default, which can grow to megabytes per slow client).
    pub socket_send_buffer: usize,
    /// Origins allowed to open the feed from a browser besides the
    /// dashboard's own origin; `"*"` allows any.
    pub allowed_origins: Vec<String>,
}

impl Default for LiveConfig {
    fn default() -> Self {
        LiveConfig {
            throttle_ms: 100,
            queue_capacity: 64,
            max_sessions: 256,
            max_frame_bytes: 4096,
            max_messages_per_sec: 20,
            message_burst: 40,
            max_errors: 10,
            heartbeat_interval_ms: 10_000,
            heartbeat_timeout_ms: 30_000,
            stall_timeout_ms: 15_000,
            socket_send_buffer: 65_536,
            allowed_origins: Vec::new(),
        }
    }
}

impl LiveConfig {
    pub fn validate(&self) -> Result<(), ConfigError> {
        positive("live.throttle_ms", self.throttle_ms)?;
        positive("live.queue_capacity", self.queue_capacity as u64)?;
        positive("live.max_frame_bytes", self.max_frame_bytes as u64)?;
        positive(
            "live.max_messages_per_sec",
            u64::from(self.max_messages_per_sec),
        )?;
        positive("live.message_burst", u64::from(self.message_burst))?;
        positive("live.heartbeat_interval_ms", self.heartbeat_interval_ms)?;
        if self.heartbeat_timeout_ms <= self.heartbeat_interval_ms {
            return Err(ConfigError::invalid(
                "live.heartbeat_timeout_ms",
                format!(
                    "{} must exceed live.heartbeat_interval_ms ({})",
                    self.heartbeat_timeout_ms, self.heartbeat_interval_ms
                ),
            ));
        }
        positive("live.stall_timeout_ms", self.stall_timeout_ms)?;
        Ok(())
    }
}

/// A message for one session.
#[derive(Debug, Clone, Message)]
#[rtype(result = "()")]
pub enum Deliver {
    Send(Outgoing),
    /// Close with this code and reason.
    Close(u16, String),
    /// Memory is short: drop all pending readings but the newest batch
    /// (counted, and reported to the client as `dropped`).
    Shed,
}

struct SessionEntry {
    addr: Recipient<Deliver>,
    subscription: Subscription,
}

/// Counters of the live feed, for `/api/live`.
#[derive(Debug, Default)]
pub struct LiveStats {
    pub messages_sent: AtomicU64,
    pub updates_dropped: AtomicU64,
    pub batches: AtomicU64,
    pub refused: AtomicU64,
    pub closed_stalled: AtomicU64,
    pub closed_heartbeat: AtomicU64,
    pub closed_abuse: AtomicU64,
    pub closed_too_big: AtomicU64,
    pub hub_lagged: AtomicU64,
}

/// What outlives hub instances: the session registry, admission, counters.
pub struct LiveShared {
    pub config: LiveConfig,
    /// Enabled sensor names, for `hello` and subscription checks; an edit
    /// of the sensors replaces them ([`LiveShared::set_sensors`]).
    sensors: RwLock<Vec<String>>,
    sessions: Mutex<HashMap<u64, SessionEntry>>,
    /// `ws.send` in the performance monitor.
    pub send_op: Arc<Op>,
    next_id: AtomicU64,
    active: AtomicUsize,
    pub stats: LiveStats,
}

/// Holds one of `max_sessions` places; gives it back when dropped.
pub struct Permit(Arc<LiveShared>);

impl Drop for Permit {
    fn drop(&mut self) {
        self.0.active.fetch_sub(1, Ordering::AcqRel);
    }
}

impl LiveShared {
    pub fn new(config: LiveConfig, sensors: Vec<String>, perf: &Perf) -> LiveShared {
        LiveShared {
            config,
            sensors: RwLock::new(sensors),
            sessions: Mutex::default(),
            send_op: perf.op("ws.send"),
            next_id: AtomicU64::new(1),
            active: AtomicUsize::new(0),
            stats: LiveStats::default(),
        }
    }

    /// The enabled sensors' names.
    pub fn sensors(&self) -> Vec<String> {
        self.sensors
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The enabled sensors are now these.
    pub fn set_sensors(&self, names: Vec<String>) {
        *self.sensors.write().unwrap_or_else(|p| p.into_inner()) = names;
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<u64, SessionEntry>> {
        self.sessions.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A place for a new session, unless the cap is reached.
    pub fn try_admit(self: &Arc<Self>) -> Option<Permit> {
        let before = self.active.fetch_add(1, Ordering::AcqRel);
        let permit = Permit(self.clone());
        if before >= self.config.max_sessions {
            self.stats.refused.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        Some(permit)
    }

    pub fn next_id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }

    pub fn register(&self, id: u64, addr: Recipient<Deliver>) {
        self.lock().insert(
            id,
            SessionEntry {
                addr,
                subscription: Subscription::Nothing,
            },
        );
    }

    pub fn set_subscription(&self, id: u64, subscription: Subscription) {
        if let Some(e) = self.lock().get_mut(&id) {
            e.subscription = subscription;
        }
    }

    pub fn unregister(&self, id: u64) {
        self.lock().remove(&id);
    }

    /// Sessions grouped by what they subscribe to (sessions with nothing
    /// subscribed are left out).
    pub fn groups(&self) -> HashMap<Subscription, Vec<Recipient<Deliver>>> {
        let mut groups: HashMap<Subscription, Vec<Recipient<Deliver>>> = HashMap::new();
        for e in self.lock().values() {
            if e.subscription != Subscription::Nothing {
                groups
                    .entry(e.subscription.clone())
                    .or_default()
                    .push(e.addr.clone());
            }
        }
        groups
    }

    /// Every registered session.
    pub fn all(&self) -> Vec<Recipient<Deliver>> {
        self.lock().values().map(|e| e.addr.clone()).collect()
    }

    pub fn session_count(&self) -> usize {
        self.active.load(Ordering::Acquire)
    }

    /// Asks every session to close, then waits (at most `wait`) until they
    /// have gone.
    pub async fn close_all(&self, code: u16, reason: &str, wait: Duration) {
        for s in self.all() {
            s.do_send(Deliver::Close(code, reason.to_owned()));
        }
        let deadline = tokio::time::Instant::now() + wait;
        while self.session_count() > 0 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

/// Counts the HTTP connections the server holds open, and admits each new
/// one under `[server.connections]` (see [`connlimit`](super::connlimit)).
#[derive(Debug, Default)]
pub struct ConnTracker {
    open: AtomicUsize,
    pub admission: Arc<super::connlimit::Admission>,
}

impl ConnTracker {
    pub fn open(&self) -> usize {
        self.open.load(Ordering::Acquire)
    }
}

/// An accepted connection's socket, by number: the dispatcher owns the
/// socket, and a duplicate per connection would double the descriptors a
/// flood costs. The number is used only while the connection's data lives
/// (`alive`, cleared under the lock when the dispatcher drops it) and the
/// socket still has the connection's own addresses, so a number the kernel
/// has given to a later connection is never touched.
struct ConnInner {
    fd: RawFd,
    local: Option<std::net::SocketAddr>,
    peer: Option<std::net::SocketAddr>,
    alive: Mutex<bool>,
    tracker: Arc<ConnTracker>,
}

impl ConnInner {
    /// Runs `f` on the socket if it is still this connection's.
    fn with_socket(&self, f: impl FnOnce(socket2::SockRef<'_>)) {
        let alive = self.alive.lock().unwrap_or_else(PoisonError::into_inner);
        if !*alive {
            return;
        }
        // SAFETY: the number is borrowed for the duration of this call only,
        // while the connection's data (dropped with the dispatcher, before it
        // closes the socket) is alive; the address check below guards
        // against anything else.
        let fd = unsafe { BorrowedFd::borrow_raw(self.fd) };
        let sock = socket2::SockRef::from(&fd);
        let same = sock.local_addr().ok().and_then(|a| a.as_socket()) == self.local
            && super::connlimit::peer_of(&sock) == self.peer;
        if same {
            f(sock);
        }
    }
}

/// Held in the connection's data: dropped with the connection, it counts
/// it closed, gives its admission back and retires the socket number.
struct ConnGuard {
    inner: Arc<ConnInner>,
    _admitted: super::connlimit::Admitted,
}

impl Drop for ConnGuard {
    fn drop(&mut self) {
        *self
            .inner
            .alive
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = false;
        self.inner.tracker.open.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A handle on a connection's socket, taken when it is accepted, so a
/// session whose client stopped reading can shut the socket down: the HTTP
/// dispatcher then sees the connection fail and frees it, instead of waiting
/// forever to write to a peer that never reads.
#[derive(Clone)]
pub struct ConnHandle(Arc<ConnInner>);

impl ConnHandle {
    /// Admits an accepted connection, or refuses it (`on_connect` hook).
    pub fn on_connect(
        tracker: &Arc<ConnTracker>,
        conn: &dyn std::any::Any,
        ext: &mut actix_web::dev::Extensions,
    ) {
        use actix_tls::accept::rustls_0_23::TlsStream;
        type Tcp = actix_web::rt::net::TcpStream;
        // Plain connections arrive as the TCP stream, HTTPS ones after the
        // handshake as the TLS stream around it: both are admitted here.
        let (tcp, tls) = if let Some(tcp) = conn.downcast_ref::<Tcp>() {
            (tcp, false)
        } else if let Some(tls) = conn.downcast_ref::<TlsStream<Tcp>>() {
            (tls.get_ref().0, true)
        } else {
            log::error!("connection of an unknown stream type: not counted or limited");
            return;
        };
        let sock = socket2::SockRef::from(tcp);
        let peer = super::connlimit::peer_of(&sock);
        let ip = peer.map_or(std::net::IpAddr::from([0, 0, 0, 0]), |p| p.ip());
        let admitted = match tracker.admission.try_admit(ip) {
            Ok(a) => a,
            Err(why) => {
                super::connlimit::refuse(sock, why, &tracker.admission.limits(), tls);
                return;
            }
        };
        tracker.open.fetch_add(1, Ordering::AcqRel);
        let inner = Arc::new(ConnInner {
            fd: tcp.as_raw_fd(),
            local: sock.local_addr().ok().and_then(|a| a.as_socket()),
            peer,
            alive: Mutex::new(true),
            tracker: tracker.clone(),
        });
        ext.insert(ConnHandle(inner.clone()));
        ext.insert(ConnGuard {
            inner,
            _admitted: admitted,
        });
    }

    /// Shuts the connection down in both directions.
    pub fn shutdown(&self) {
        self.0.with_socket(|s| {
            let _ = s.shutdown(std::net::Shutdown::Both);
        });
    }

    /// Bounds the kernel's send buffer for this connection.
    pub fn set_send_buffer(&self, bytes: usize) {
        self.0.with_socket(|s| {
            if let Err(e) = s.set_send_buffer_size(bytes) {
                log::debug!("cannot set a live session's send buffer: {e}");
            }
        });
    }
}

/// Is `origin` allowed to open the feed? Same-origin requests always are;
/// requests without an Origin (non-browser clients) too.
fn origin_allowed(origin: Option<&str>, host: Option<&str>, allowed: &[String]) -> bool {
    let Some(origin) = origin else {
        return true;
    };
    if allowed
        .iter()
        .any(|a| a == "*" || a.eq_ignore_ascii_case(origin))
    {
        return true;
    }
    let origin_host = origin
        .split_once("://")
        .map_or(origin, |(_, rest)| rest)
        .trim_end_matches('/');
    host.is_some_and(|h| h.eq_ignore_ascii_case(origin_host))
}

/// `GET /ws`: upgrades to the live feed.
pub async fn ws(
    req: HttpRequest,
    body: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let live = &state.live;
    let origin = req
        .headers()
        .get(header::ORIGIN)
        .and_then(|v| v.to_str().ok());
    let host = req
        .headers()
        .get(header::HOST)
        .and_then(|v| v.to_str().ok());
    if !origin_allowed(origin, host, &live.config.allowed_origins) {
        return Err(ApiError::Forbidden(format!(
            "origin {} may not open the live feed (see live.allowed_origins)",
            origin.unwrap_or_default()
        )));
    }
    let permit = live.try_admit().ok_or_else(|| {
        ApiError::Unavailable(format!(
            "too many live sessions (live.max_sessions = {})",
            live.config.max_sessions
        ))
    })?;
    let (response, session, stream) = actix_ws::handle(&req, body)
        .map_err(|e| ApiError::bad("upgrade", format!("not a WebSocket upgrade: {e}")))?;
    let conn = req.conn_data::<ConnHandle>().cloned();
    if let Some(c) = &conn
        && live.config.socket_send_buffer > 0
    {
        c.set_send_buffer(live.config.socket_send_buffer);
    }
    WsSession::new(live.clone(), session, stream, permit, conn).start();
    Ok(response)
}

#[derive(Serialize, JsonSchema)]
pub struct LiveView {
    sessions: usize,
    /// HTTP connections open, WebSocket or not.
    connections: usize,
    /// Connections refused over `server.connections.max_connections` ...
    connections_refused_total: u64,
    /// ... and over `server.connections.max_per_client`.
    connections_refused_per_client: u64,
    max_sessions: usize,
    messages_sent: u64,
    batches: u64,
    updates_dropped: u64,
    refused: u64,
    closed_stalled: u64,
    closed_heartbeat: u64,
    closed_abuse: u64,
    closed_too_big: u64,
    hub_lagged: u64,
    throttle_ms: u64,
}

/// `GET /api/live`: sessions and what the feed has done.
pub async fn stats(state: web::Data<AppState>) -> HttpResponse {
    let l = &state.live;
    let s = &l.stats;
    let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
    let (refused_total, refused_per_client) = state.connections.admission.refused();
    HttpResponse::Ok().json(LiveView {
        sessions: l.session_count(),
        connections: state.connections.open(),
        connections_refused_total: refused_total,
        connections_refused_per_client: refused_per_client,
        max_sessions: l.config.max_sessions,
        messages_sent: get(&s.messages_sent),
        batches: get(&s.batches),
        updates_dropped: get(&s.updates_dropped),
        refused: get(&s.refused),
        closed_stalled: get(&s.closed_stalled),
        closed_heartbeat: get(&s.closed_heartbeat),
        closed_abuse: get(&s.closed_abuse),
        closed_too_big: get(&s.closed_too_big),
        hub_lagged: get(&s.hub_lagged),
        throttle_ms: l.config.throttle_ms,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins() {
        let none: Vec<String> = Vec::new();
        assert!(origin_allowed(None, Some("pi:8080"), &none));
        assert!(origin_allowed(
            Some("http://pi:8080"),
            Some("pi:8080"),
            &none
        ));
        assert!(!origin_allowed(
            Some("http://evil.example"),
            Some("pi:8080"),
            &none
        ));
        let some = vec!["http://dash.example".to_string()];
        assert!(origin_allowed(
            Some("http://dash.example"),
            Some("pi:8080"),
            &some
        ));
        assert!(origin_allowed(Some("http://x"), None, &["*".to_string()]));
    }

    #[test]
    fn admission_is_capped_and_released() {
        let shared = Arc::new(LiveShared::new(
            LiveConfig {
                max_sessions: 2,
                ..LiveConfig::default()
            },
            vec![],
            &Perf::new(100),
        ));
        let a = shared.try_admit().unwrap();
        let _b = shared.try_admit().unwrap();
        assert!(shared.try_admit().is_none());
        assert_eq!(shared.session_count(), 2);
        drop(a);
        assert!(shared.try_admit().is_some());
        assert_eq!(shared.stats.refused.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn config_checks_name_their_keys() {
        let c = LiveConfig {
            heartbeat_timeout_ms: 5,
            heartbeat_interval_ms: 10,
            ..LiveConfig::default()
        };
        assert!(
            c.validate()
                .unwrap_err()
                .to_string()
                .contains("live.heartbeat_timeout_ms")
        );
    }
}
