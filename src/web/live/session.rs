//! The WsSession actor: one per connected live-feed client.
//!
//! It registers in the live registry when started and leaves it when
//! stopping. Everything for the client goes through its bounded [`Outbox`];
//! one send is in flight at a time, on a future the actor spawns, so a
//! client that stops reading only ever fills its own outbox (oldest
//! readings dropped and counted) and never blocks the hub, another session,
//! or this actor's own heartbeat. A session silent past the heartbeat
//! timeout, or whose socket accepts nothing for the stall timeout, is
//! closed and its socket shut down.

use std::num::NonZeroU32;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use actix::prelude::*;
use actix_ws::{CloseReason, Message, MessageStream, ProtocolError, Session};
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use serde_json::json;
use tokio::time::Instant;

use super::outbox::{Outbox, Outgoing};
use super::protocol::{self, ClientMessage, Subscription};
use super::{ConnHandle, Deliver, LiveShared, Permit};

/// How long a close frame may take to be queued, and then to reach a client
/// that is still reading, before the socket is cut.
const CLOSE_SEND_TIMEOUT: Duration = Duration::from_secs(1);

/// One live-feed client.
pub struct WsSession {
    id: u64,
    shared: Arc<LiveShared>,
    ws: Session,
    stream: Option<MessageStream>,
    outbox: Outbox,
    subscription: Subscription,
    /// When the send in flight started, if one is.
    sending_since: Option<Instant>,
    last_heard: Instant,
    limiter: DefaultDirectRateLimiter,
    strikes: u32,
    conn: Option<ConnHandle>,
    closing: bool,
    _permit: Permit,
}

impl WsSession {
    pub fn new(
        shared: Arc<LiveShared>,
        ws: Session,
        stream: MessageStream,
        permit: Permit,
        conn: Option<ConnHandle>,
    ) -> WsSession {
        let c = &shared.config;
        let per_sec = NonZeroU32::new(c.max_messages_per_sec).unwrap_or(NonZeroU32::MIN);
        let burst = NonZeroU32::new(c.message_burst).unwrap_or(NonZeroU32::MIN);
        WsSession {
            id: shared.next_id(),
            ws,
            stream: Some(stream.max_frame_size(c.max_frame_bytes)),
            outbox: Outbox::new(c.queue_capacity),
            subscription: Subscription::Nothing,
            sending_since: None,
            last_heard: Instant::now(),
            limiter: RateLimiter::direct(Quota::per_second(per_sec).allow_burst(burst)),
            strikes: 0,
            conn,
            closing: false,
            _permit: permit,
            shared,
        }
    }

    fn enqueue(&mut self, msg: Outgoing, ctx: &mut Context<Self>) {
        if self.closing {
            return;
        }
        let dropped = self.outbox.push(msg);
        if dropped > 0 {
            self.shared
                .stats
                .updates_dropped
                .fetch_add(dropped, Ordering::Relaxed);
        }
        self.pump(ctx);
    }

    fn reply(&mut self, text: String, ctx: &mut Context<Self>) {
        self.enqueue(Outgoing::Text(text.into()), ctx);
    }

    /// Starts the next send if none is in flight.
    fn pump(&mut self, ctx: &mut Context<Self>) {
        if self.sending_since.is_some() || self.closing {
            return;
        }
        let Some(text) = self.outbox.pop_text() else {
            return;
        };
        let started = Instant::now();
        self.sending_since = Some(started);
        let mut ws = self.ws.clone();
        ctx.spawn(async move { ws.text(text).await }.into_actor(self).map(
            move |sent, act, ctx| {
                act.sending_since = None;
                act.shared.send_op.record(started.elapsed(), sent.is_ok());
                match sent {
                    Ok(()) => {
                        act.shared
                            .stats
                            .messages_sent
                            .fetch_add(1, Ordering::Relaxed);
                        act.pump(ctx);
                    }
                    Err(_) => ctx.stop(),
                }
            },
        ));
    }

    /// Sends a close frame (without waiting on a jammed socket) and stops.
    /// `cut` also shuts the socket down, for clients that stopped reading.
    fn close(&mut self, code: u16, reason: &str, cut: bool, ctx: &mut Context<Self>) {
        if self.closing {
            return;
        }
        self.closing = true;
        log::debug!("live session {} closing: {code} {reason}", self.id);
        let ws = self.ws.clone();
        let conn = if cut { self.conn.take() } else { None };
        let reason = CloseReason {
            code: code.into(),
            description: Some(reason.to_owned()),
        };
        actix_rt::spawn(async move {
            let _ = tokio::time::timeout(CLOSE_SEND_TIMEOUT, ws.close(Some(reason))).await;
            if let Some(conn) = conn {
                // Time for the close frame to leave if the client still
                // reads; then the socket goes whatever happened.
                tokio::time::sleep(CLOSE_SEND_TIMEOUT).await;
                conn.shutdown();
            }
        });
        ctx.stop();
    }

    /// A bad or rate-limited message: an `error` reply, or a 1008 close
    /// once the client has used up its allowance.
    fn strike(&mut self, code: &str, message: &str, ctx: &mut Context<Self>) {
        self.strikes += 1;
        if self.strikes > self.shared.config.max_errors {
            self.shared
                .stats
                .closed_abuse
                .fetch_add(1, Ordering::Relaxed);
            self.close(
                protocol::CLOSE_POLICY,
                &format!("too many bad messages ({code})"),
                false,
                ctx,
            );
        } else {
            self.reply(protocol::error_text(code, message), ctx);
        }
    }

    fn on_text(&mut self, text: &str, ctx: &mut Context<Self>) {
        if self.limiter.check().is_err() {
            let msg = format!(
                "more than {} messages per second",
                self.shared.config.max_messages_per_sec
            );
            return self.strike("rate_limited", &msg, ctx);
        }
        let msg = match ClientMessage::parse(text) {
            Ok(m) => m,
            Err(e) => return self.strike("bad_message", &e, ctx),
        };
        match msg {
            ClientMessage::Ping { id } => self.reply(protocol::pong_text(id), ctx),
            ClientMessage::Subscribe { sensors } | ClientMessage::Unsubscribe { sensors }
                if sensors.as_ref().is_some_and(|s| s.is_empty()) =>
            {
                self.strike("bad_message", "`sensors` is empty; omit it for all", ctx);
            }
            ClientMessage::Subscribe { sensors } => {
                let names = self.shared.sensors();
                let (known, unknown): (Vec<String>, Vec<String>) = sensors
                    .unwrap_or_else(|| vec!["*".into()])
                    .into_iter()
                    .partition(|s| s == "*" || names.contains(s));
                if !known.is_empty() {
                    self.subscription = self.subscription.add(Some(&known));
                    self.shared
                        .set_subscription(self.id, self.subscription.clone());
                }
                if !unknown.is_empty() {
                    let msg = format!("unknown sensors: {}", unknown.join(", "));
                    self.strike("unknown_sensor", &msg, ctx);
                }
                let text = protocol::subscribed_text(&self.subscription);
                self.reply(text, ctx);
            }
            ClientMessage::Unsubscribe { sensors } => {
                self.subscription = self
                    .subscription
                    .remove(sensors.as_deref(), &self.shared.sensors());
                self.shared
                    .set_subscription(self.id, self.subscription.clone());
                let text = protocol::subscribed_text(&self.subscription);
                self.reply(text, ctx);
            }
        }
    }

    fn heartbeat(&mut self, ctx: &mut Context<Self>) {
        let c = &self.shared.config;
        let timeout = Duration::from_millis(c.heartbeat_timeout_ms);
        let stall = Duration::from_millis(c.stall_timeout_ms);
        if self.last_heard.elapsed() >= timeout {
            self.shared
                .stats
                .closed_heartbeat
                .fetch_add(1, Ordering::Relaxed);
            let reason = format!("no pong within {} ms", c.heartbeat_timeout_ms);
            return self.close(protocol::CLOSE_HEARTBEAT_TIMEOUT, &reason, true, ctx);
        }
        if self.sending_since.is_some_and(|t| t.elapsed() >= stall) {
            self.shared
                .stats
                .closed_stalled
                .fetch_add(1, Ordering::Relaxed);
            let reason = format!("nothing could be sent for {} ms", c.stall_timeout_ms);
            return self.close(protocol::CLOSE_STALLED, &reason, true, ctx);
        }
        let mut ws = self.ws.clone();
        let interval = Duration::from_millis(c.heartbeat_interval_ms);
        actix_rt::spawn(async move {
            let _ = tokio::time::timeout(interval, ws.ping(b"")).await;
        });
    }
}

impl Actor for WsSession {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        self.shared.register(self.id, ctx.address().recipient());
        if let Some(stream) = self.stream.take() {
            ctx.add_stream(stream);
        }
        let c = &self.shared.config;
        let (time_zone, utc_offset_min) = crate::vocab::clock::local_zone();
        let hello = json!({
            "type": "hello",
            "version": env!("CARGO_PKG_VERSION"),
            "time_zone": time_zone,
            "utc_offset_min": utc_offset_min,
            "session": self.id,
            "sensors": self.shared.sensors(),
            "limits": {
                "throttle_ms": c.throttle_ms,
                "queue_capacity": c.queue_capacity,
                "max_frame_bytes": c.max_frame_bytes,
                "max_messages_per_sec": c.max_messages_per_sec,
                "message_burst": c.message_burst,
                "max_errors": c.max_errors,
                "heartbeat_interval_ms": c.heartbeat_interval_ms,
                "heartbeat_timeout_ms": c.heartbeat_timeout_ms,
                "stall_timeout_ms": c.stall_timeout_ms,
            },
        });
        let interval = Duration::from_millis(c.heartbeat_interval_ms);
        self.reply(hello.to_string(), ctx);
        ctx.run_interval(interval, |act, ctx| act.heartbeat(ctx));
    }

    fn stopping(&mut self, _: &mut Context<Self>) -> Running {
        self.shared.unregister(self.id);
        Running::Stop
    }
}

impl StreamHandler<Result<Message, ProtocolError>> for WsSession {
    fn handle(&mut self, item: Result<Message, ProtocolError>, ctx: &mut Context<Self>) {
        self.last_heard = Instant::now();
        match item {
            Ok(Message::Text(text)) => self.on_text(&text, ctx),
            Ok(Message::Binary(_)) => self.strike(
                "bad_message",
                "binary frames are not part of the protocol",
                ctx,
            ),
            Ok(Message::Continuation(_)) => {
                self.strike("bad_message", "fragmented messages are not supported", ctx)
            }
            Ok(Message::Ping(bytes)) => {
                let mut ws = self.ws.clone();
                actix_rt::spawn(async move {
                    let _ = tokio::time::timeout(CLOSE_SEND_TIMEOUT, ws.pong(&bytes)).await;
                });
            }
            Ok(Message::Pong(_)) | Ok(Message::Nop) => {}
            Ok(Message::Close(_)) => {
                self.closing = true;
                let ws = self.ws.clone();
                actix_rt::spawn(async move {
                    let _ = tokio::time::timeout(CLOSE_SEND_TIMEOUT, ws.close(None)).await;
                });
                ctx.stop();
            }
            Err(ProtocolError::Overflow) => {
                self.shared
                    .stats
                    .closed_too_big
                    .fetch_add(1, Ordering::Relaxed);
                let reason = format!(
                    "frame larger than {} bytes",
                    self.shared.config.max_frame_bytes
                );
                self.close(protocol::CLOSE_TOO_BIG, &reason, false, ctx);
            }
            Err(e) => self.close(protocol::CLOSE_PROTOCOL, &e.to_string(), false, ctx),
        }
    }

    fn finished(&mut self, ctx: &mut Context<Self>) {
        ctx.stop();
    }
}

impl Handler<Deliver> for WsSession {
    type Result = ();

    fn handle(&mut self, msg: Deliver, ctx: &mut Context<Self>) {
        match msg {
            Deliver::Send(out) => self.enqueue(out, ctx),
            Deliver::Close(code, reason) => self.close(code, &reason, false, ctx),
            Deliver::Shed => {
                let dropped = self.outbox.shed();
                if dropped > 0 {
                    self.shared
                        .stats
                        .updates_dropped
                        .fetch_add(dropped, Ordering::Relaxed);
                }
            }
        }
    }
}
