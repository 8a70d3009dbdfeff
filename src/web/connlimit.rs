//! What a connection may cost: `[server.connections]`, the admission of
//! each accepted TCP connection under a total and a per-client-address
//! limit, and the timeouts that bound how long a client that sends nothing
//! (or its body slowly) holds one.
//!
//! Each connection costs vigil a socket, the HTTP dispatcher's buffers and a
//! task; a flood of half-open connections that is merely timed out still
//! holds all of them at once, and the allocator keeps what that peak took.
//! Admission happens in the server's `on_connect` hook, before the
//! dispatcher reads a byte: a connection beyond a limit gets a short 503
//! written straight to its socket and is shut down, so the dispatcher frees
//! it at its first read. Established connections are never touched.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::Duration;

use serde::Deserialize;

use super::error::{ErrorBody, ErrorCode};

use crate::vocab::check::{ConfigError, positive};

/// `[server.connections]`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ConnectionLimits {
    /// HTTP connections (WebSocket or not) held open at once; more are
    /// answered 503 and closed.
    pub max_connections: usize,
    /// ... of which one client address may hold this many (IPv6 clients
    /// counted by their /64).
    pub max_per_client: usize,
    /// A new connection must deliver its request head within this time, and
    /// so must each later request's head once it has begun.
    pub header_timeout_ms: u64,
    /// A request's body must arrive whole within this time of its head.
    pub body_timeout_ms: u64,
    /// An idle keep-alive connection is closed after this long.
    pub keep_alive_ms: u64,
}

impl Default for ConnectionLimits {
    fn default() -> Self {
        ConnectionLimits {
            max_connections: 1024,
            max_per_client: 256,
            header_timeout_ms: 5000,
            body_timeout_ms: 10_000,
            keep_alive_ms: 5000,
        }
    }
}

impl ConnectionLimits {
    pub fn validate(&self) -> Result<(), ConfigError> {
        positive(
            "server.connections.max_connections",
            self.max_connections as u64,
        )?;
        positive(
            "server.connections.max_per_client",
            self.max_per_client as u64,
        )?;
        if self.max_per_client > self.max_connections {
            return Err(ConfigError::invalid(
                "server.connections.max_per_client",
                format!(
                    "{} exceeds server.connections.max_connections ({})",
                    self.max_per_client, self.max_connections
                ),
            ));
        }
        positive(
            "server.connections.header_timeout_ms",
            self.header_timeout_ms,
        )?;
        positive("server.connections.body_timeout_ms", self.body_timeout_ms)?;
        positive("server.connections.keep_alive_ms", self.keep_alive_ms)?;
        Ok(())
    }

    pub fn body_timeout(&self) -> Duration {
        Duration::from_millis(self.body_timeout_ms)
    }
}

/// Why a connection was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    Total,
    PerClient,
}

/// The connections admitted now, in total and per client address.
#[derive(Debug, Default)]
pub struct Admission {
    limits: RwLock<ConnectionLimits>,
    per_client: Mutex<HashMap<IpAddr, usize>>,
    total: AtomicUsize,
    refused_total: AtomicU64,
    refused_per_client: AtomicU64,
}

/// One admitted connection; dropping it gives its place back.
#[derive(Debug)]
pub struct Admitted {
    admission: Arc<Admission>,
    client: IpAddr,
}

impl Drop for Admitted {
    fn drop(&mut self) {
        self.admission.total.fetch_sub(1, Ordering::AcqRel);
        let mut map = self
            .admission
            .per_client
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(n) = map.get_mut(&self.client) {
            *n -= 1;
            if *n == 0 {
                map.remove(&self.client);
            }
        }
    }
}

/// The address a client is counted under: IPv6 by its /64 (one host holds
/// a whole /64), IPv4-mapped IPv6 as IPv4.
pub fn client_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let s = v6.segments();
                IpAddr::V6(std::net::Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
            }
        },
        v4 => v4,
    }
}

impl Admission {
    /// Applies `limits` to connections admitted from now on.
    pub fn configure(&self, limits: ConnectionLimits) {
        *self.limits.write().unwrap_or_else(PoisonError::into_inner) = limits;
    }

    pub fn limits(&self) -> ConnectionLimits {
        self.limits
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Admits a connection from `peer`, or says which limit it would break.
    pub fn try_admit(self: &Arc<Self>, peer: IpAddr) -> Result<Admitted, Refusal> {
        let limits = self.limits();
        let client = client_key(peer);
        let mut map = self
            .per_client
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if self.total.load(Ordering::Acquire) >= limits.max_connections {
            self.refused_total.fetch_add(1, Ordering::Relaxed);
            return Err(Refusal::Total);
        }
        let n = map.entry(client).or_insert(0);
        if *n >= limits.max_per_client {
            self.refused_per_client.fetch_add(1, Ordering::Relaxed);
            return Err(Refusal::PerClient);
        }
        *n += 1;
        self.total.fetch_add(1, Ordering::AcqRel);
        Ok(Admitted {
            admission: self.clone(),
            client,
        })
    }

    #[cfg(test)]
    /// Connections admitted and still open.
    pub fn open(&self) -> usize {
        self.total.load(Ordering::Acquire)
    }

    /// Connections refused so far: over the total, over a client's share.
    pub fn refused(&self) -> (u64, u64) {
        (
            self.refused_total.load(Ordering::Relaxed),
            self.refused_per_client.load(Ordering::Relaxed),
        )
    }
}

/// The answer a refused connection gets, written before any request is
/// read (HTTP clients accept an early response).
pub fn refusal_response(why: Refusal, limits: &ConnectionLimits) -> String {
    let message = match why {
        Refusal::Total => format!(
            "too many connections (server.connections.max_connections = {})",
            limits.max_connections
        ),
        Refusal::PerClient => format!(
            "too many connections from this address (server.connections.max_per_client = {})",
            limits.max_per_client
        ),
    };
    let body =
        serde_json::to_string(&ErrorBody::new(ErrorCode::Unavailable, message)).unwrap_or_default();
    format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\n\
         retry-after: 1\r\nconnection: close\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    )
}

/// Refuses an accepted connection: the 503 if the socket takes it at once,
/// then a shutdown, so the dispatcher's first read ends the connection.
/// Over TLS the answer would have to be encrypted, which the socket alone
/// cannot do: the connection is only closed (and counted the same).
pub fn refuse(sock: socket2::SockRef<'_>, why: Refusal, limits: &ConnectionLimits, tls: bool) {
    if !tls {
        let response = refusal_response(why, limits);
        let _ = sock.send(response.as_bytes());
    }
    let _ = sock.shutdown(std::net::Shutdown::Both);
}

/// The peer of an accepted socket, if the OS still knows it.
pub fn peer_of(sock: &socket2::SockRef<'_>) -> Option<SocketAddr> {
    sock.peer_addr().ok().and_then(|a| a.as_socket())
}

/// A request body that must arrive whole by a deadline: past it the body
/// stream fails, which a handler reading it answers 408, and the connection
/// is closed instead of being held by a client that trickles bytes.
struct Deadline<S> {
    inner: S,
    sleep: std::pin::Pin<Box<tokio::time::Sleep>>,
    done: bool,
}

impl<S> futures_util::Stream for Deadline<S>
where
    S: futures_util::Stream<Item = Result<actix_web::web::Bytes, actix_web::error::PayloadError>>
        + Unpin,
{
    type Item = Result<actix_web::web::Bytes, actix_web::error::PayloadError>;

    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        use std::future::Future;
        use std::task::Poll;
        if self.done {
            return Poll::Ready(None);
        }
        if let Poll::Ready(item) = std::pin::Pin::new(&mut self.inner).poll_next(cx) {
            self.done = item.is_none();
            return Poll::Ready(item);
        }
        if self.sleep.as_mut().poll(cx).is_ready() {
            self.done = true;
            return Poll::Ready(Some(Err(actix_web::error::PayloadError::Io(
                std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    "the request body did not arrive within server.connections.body_timeout_ms",
                ),
            ))));
        }
        Poll::Pending
    }
}

/// Middleware: bounds how long a request's body may take to arrive. A
/// WebSocket upgrade's body is the feed itself and is left alone.
pub async fn body_deadline(
    mut req: actix_web::dev::ServiceRequest,
    next: actix_web::middleware::Next<impl actix_web::body::MessageBody>,
) -> Result<actix_web::dev::ServiceResponse<impl actix_web::body::MessageBody>, actix_web::Error> {
    let timeout = req
        .app_data::<actix_web::web::Data<super::AppState>>()
        .map(|s| s.server.connections.body_timeout());
    let upgrade = req.headers().contains_key(actix_web::http::header::UPGRADE);
    if let Some(t) = timeout
        && !upgrade
    {
        let inner = actix_web::HttpMessage::take_payload(&mut req);
        let stream = Deadline {
            inner,
            sleep: Box::pin(tokio::time::sleep(t)),
            done: false,
        };
        req.set_payload(actix_web::dev::Payload::Stream {
            payload: Box::pin(stream),
        });
    }
    next.call(req).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn admission(total: usize, per_client: usize) -> Arc<Admission> {
        let a = Arc::new(Admission::default());
        a.configure(ConnectionLimits {
            max_connections: total,
            max_per_client: per_client,
            ..ConnectionLimits::default()
        });
        a
    }

    #[test]
    fn limits_hold_per_client_and_in_total_and_places_come_back() {
        let a = admission(3, 2);
        let one: IpAddr = "192.0.2.1".parse().unwrap();
        let two: IpAddr = "192.0.2.2".parse().unwrap();
        let x = a.try_admit(one).unwrap();
        let _y = a.try_admit(one).unwrap();
        assert_eq!(a.try_admit(one).unwrap_err(), Refusal::PerClient);
        let _z = a.try_admit(two).unwrap();
        assert_eq!(a.try_admit(two).unwrap_err(), Refusal::Total);
        assert_eq!(a.open(), 3);
        drop(x);
        assert_eq!(a.open(), 2);
        assert!(a.try_admit(one).is_ok());
        assert_eq!(a.refused(), (1, 1));
    }

    #[test]
    fn ipv6_clients_are_counted_by_their_64() {
        let a = admission(10, 1);
        let _x = a.try_admit("2001:db8:1:2::1".parse().unwrap()).unwrap();
        assert!(a.try_admit("2001:db8:1:2::99".parse().unwrap()).is_err());
        assert!(a.try_admit("2001:db8:1:3::1".parse().unwrap()).is_ok());
        assert_eq!(
            client_key("::ffff:192.0.2.7".parse().unwrap()),
            "192.0.2.7".parse::<IpAddr>().unwrap()
        );
    }

    #[test]
    fn config_checks_name_their_keys() {
        let bad = ConnectionLimits {
            max_per_client: 2000,
            ..ConnectionLimits::default()
        };
        let e = bad.validate().unwrap_err().to_string();
        assert!(e.contains("server.connections.max_per_client"), "{e}");
        let bad = ConnectionLimits {
            header_timeout_ms: 0,
            ..ConnectionLimits::default()
        };
        let e = bad.validate().unwrap_err().to_string();
        assert!(e.contains("server.connections.header_timeout_ms"), "{e}");
    }

    #[test]
    fn the_refusal_is_a_complete_http_response() {
        let r = refusal_response(Refusal::PerClient, &ConnectionLimits::default());
        let (head, body) = r.split_once("\r\n\r\n").unwrap();
        assert!(head.starts_with("HTTP/1.1 503"));
        assert!(head.contains(&format!("content-length: {}", body.len())));
        let v: serde_json::Value = serde_json::from_str(body).unwrap();
        assert!(
            v["error"]["message"]
                .as_str()
                .unwrap()
                .contains("max_per_client")
        );
    }
}
