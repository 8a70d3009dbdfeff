//! Rate limits on governor's GCRA limiters: one token bucket per HTTP
//! client ([`ClientLimiter`], keyed by address) and one shared bucket for
//! expensive admin operations ([`OpLimiter`]). The live feed's per-session
//! message limit is a direct limiter owned by each session
//! (`web/live/session.rs`).
//!
//! A keyed limiter keeps a state per key it has seen, so its memory is kept
//! bounded three ways: idle keys are forgotten by `retain_recent` (the Guard
//! actor calls [`ClientLimiter::trim`] on a timer), IPv6 clients are keyed by
//! their /64 (one host controls a whole /64), and beyond `max_clients` keys
//! every request is counted against one shared overflow bucket until
//! trimming brings the table back under the cap.
//!
//! `X-Forwarded-For` is believed only from configured proxies, and then
//! read from the right: the client is the first address that is not itself
//! a trusted proxy, so a client cannot pick its own key by sending the
//! header.

use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

use governor::clock::{Clock, MonotonicClock};
use governor::middleware::NoOpMiddleware;
use governor::state::keyed::DashMapStateStore;
use governor::state::{InMemoryState, NotKeyed};
use governor::{Quota, RateLimiter};
use serde::Serialize;

use super::client::{Cidr, canonical};
use super::config::{AdminLimitConfig, HttpLimitConfig};

/// Requests between two counts of the keyed table (counting walks its
/// shards, so it is not done on every request).
const COUNT_EVERY: u32 = 256;

/// A request refused by a rate limit.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct Throttled {
    pub message: String,
    /// When the same request would be allowed.
    pub retry_after: Duration,
}

/// What a client's requests are counted against.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum ClientKey {
    V4(u32),
    /// The /64 prefix.
    V6(u64),
    /// No address known (not a TCP peer).
    Unknown,
    /// The table is full: new and old clients share one bucket.
    Overflow,
}

impl ClientKey {
    fn of(ip: Option<IpAddr>) -> ClientKey {
        match ip.map(canonical) {
            Some(IpAddr::V4(v4)) => ClientKey::V4(u32::from(v4)),
            Some(IpAddr::V6(v6)) => ClientKey::V6((u128::from(v6) >> 64) as u64),
            None => ClientKey::Unknown,
        }
    }
}

fn quota_per_sec(per_sec: u32, burst: u32) -> Quota {
    Quota::per_second(NonZeroU32::new(per_sec).unwrap_or(NonZeroU32::MIN))
        .allow_burst(NonZeroU32::new(burst).unwrap_or(NonZeroU32::MIN))
}

/// Whole seconds, rounded up, at least one: what `Retry-After` says.
pub fn retry_after_secs(d: Duration) -> u64 {
    d.as_secs() + u64::from(d.subsec_nanos() > 0 || d.is_zero())
}

/// The per-client HTTP limit. See the module docs.
///
/// Its clock is `std::time::Instant` (governor's `MonotonicClock`), not the
/// TSC-based default, whose calibration could add up to 200 ms to start-up.
pub struct ClientLimiter<C: Clock = MonotonicClock> {
    enabled: bool,
    limiter: RateLimiter<ClientKey, DashMapStateStore<ClientKey>, C, NoOpMiddleware<C::Instant>>,
    clock: C,
    per_sec: u32,
    burst: u32,
    max_clients: usize,
    trusted: Vec<Cidr>,
    overflow: AtomicBool,
    since_count: AtomicU32,
    allowed: AtomicU64,
    rejected: AtomicU64,
    trims: AtomicU64,
    forgotten: AtomicU64,
}

/// A [`ClientLimiter`] as `/api/guards` shows it.
#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct ClientLimiterView {
    pub enabled: bool,
    pub requests_per_sec: u32,
    pub burst: u32,
    /// Clients with a state in the table now.
    pub clients: usize,
    pub max_clients: usize,
    /// True while the table is full and new clients share one bucket.
    pub overflow: bool,
    pub trusted_proxies: usize,
    pub allowed: u64,
    pub rejected: u64,
    /// Times idle clients were forgotten, and how many in all.
    pub trims: u64,
    pub forgotten: u64,
}

impl ClientLimiter {
    pub fn new(cfg: &HttpLimitConfig, trusted: Vec<Cidr>) -> ClientLimiter {
        ClientLimiter::with_clock(cfg, trusted, MonotonicClock)
    }
}

impl<C: Clock + Clone> ClientLimiter<C> {
    pub fn with_clock(cfg: &HttpLimitConfig, trusted: Vec<Cidr>, clock: C) -> ClientLimiter<C> {
        let quota = quota_per_sec(cfg.requests_per_sec, cfg.burst);
        ClientLimiter {
            enabled: cfg.enabled,
            limiter: RateLimiter::new(quota, DashMapStateStore::default(), clock.clone()),
            clock,
            per_sec: cfg.requests_per_sec,
            burst: cfg.burst,
            max_clients: cfg.max_clients.max(1),
            trusted,
            overflow: AtomicBool::new(false),
            since_count: AtomicU32::new(0),
            allowed: AtomicU64::new(0),
            rejected: AtomicU64::new(0),
            trims: AtomicU64::new(0),
            forgotten: AtomicU64::new(0),
        }
    }

    pub fn enabled(&self) -> bool {
        self.enabled
    }

    pub fn trusted(&self) -> &[Cidr] {
        &self.trusted
    }

    /// Counts a request from `client` (see [`client_address`]).
    pub fn check(&self, client: Option<IpAddr>) -> Result<(), Throttled> {
        if !self.enabled {
            return Ok(());
        }
        if self.since_count.fetch_add(1, Ordering::Relaxed) + 1 >= COUNT_EVERY {
            self.since_count.store(0, Ordering::Relaxed);
            self.enforce_cap();
        }
        let key = if self.overflow.load(Ordering::Relaxed) {
            ClientKey::Overflow
        } else {
            ClientKey::of(client)
        };
        match self.limiter.check_key(&key) {
            Ok(()) => {
                self.allowed.fetch_add(1, Ordering::Relaxed);
                Ok(())
            }
            Err(not_until) => {
                self.rejected.fetch_add(1, Ordering::Relaxed);
                let retry_after = not_until.wait_time_from(self.clock.now());
                Err(Throttled {
                    message: format!(
                        "too many requests: at most {} per second (bursts of {}) per client",
                        self.per_sec, self.burst
                    ),
                    retry_after,
                })
            }
        }
    }

    /// Trims when the table is at its cap; sets or clears overflow mode.
    fn enforce_cap(&self) {
        if self.limiter.len() >= self.max_clients {
            self.trim();
        }
        let full = self.limiter.len() >= self.max_clients;
        if full != self.overflow.swap(full, Ordering::Relaxed) {
            if full {
                log::warn!(
                    "HTTP rate limiter: {} clients tracked (guard.http.max_clients); new clients share one bucket until idle ones are forgotten",
                    self.max_clients
                );
            } else {
                log::info!("HTTP rate limiter: back under guard.http.max_clients");
            }
        }
    }

    /// Forgets clients whose bucket is full again (idle long enough to be
    /// indistinguishable from a new client) and returns how many went.
    pub fn trim(&self) -> usize {
        let before = self.limiter.len();
        self.limiter.retain_recent();
        self.limiter.shrink_to_fit();
        let gone = before.saturating_sub(self.limiter.len());
        self.trims.fetch_add(1, Ordering::Relaxed);
        self.forgotten.fetch_add(gone as u64, Ordering::Relaxed);
        if self.overflow.load(Ordering::Relaxed) && self.limiter.len() < self.max_clients {
            self.overflow.store(false, Ordering::Relaxed);
            log::info!("HTTP rate limiter: back under guard.http.max_clients");
        }
        gone
    }

    /// Clients with a state in the table.
    pub fn clients(&self) -> usize {
        self.limiter.len()
    }

    pub fn view(&self) -> ClientLimiterView {
        ClientLimiterView {
            enabled: self.enabled,
            requests_per_sec: self.per_sec,
            burst: self.burst,
            clients: self.clients(),
            max_clients: self.max_clients,
            overflow: self.overflow.load(Ordering::Relaxed),
            trusted_proxies: self.trusted.len(),
            allowed: self.allowed.load(Ordering::Relaxed),
            rejected: self.rejected.load(Ordering::Relaxed),
            trims: self.trims.load(Ordering::Relaxed),
            forgotten: self.forgotten.load(Ordering::Relaxed),
        }
    }
}

/// One bucket for expensive admin operations, whoever asks.
pub struct OpLimiter {
    limiter:
        RateLimiter<NotKeyed, InMemoryState, MonotonicClock, NoOpMiddleware<std::time::Instant>>,
    clock: MonotonicClock,
    per_minute: u32,
    burst: u32,
    admitted: AtomicU64,
    rejected: AtomicU64,
}

/// An [`OpLimiter`] as `/api/guards` shows it.
#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct OpLimiterView {
    pub ops_per_minute: u32,
    pub burst: u32,
    pub admitted: u64,
    pub rejected: u64,
}

impl OpLimiter {
    pub fn new(cfg: &AdminLimitConfig) -> OpLimiter {
        let per_minute = NonZeroU32::new(cfg.ops_per_minute).unwrap_or(NonZeroU32::MIN);
        let burst = NonZeroU32::new(cfg.burst).unwrap_or(NonZeroU32::MIN);
        OpLimiter {
            limiter: RateLimiter::direct_with_clock(
                Quota::per_minute(per_minute).allow_burst(burst),
                MonotonicClock,
            ),
            clock: MonotonicClock,
            per_minute: cfg.ops_per_minute,
            burst: cfg.burst,
            admitted: AtomicU64::new(0),
            rejected: AtomicU64::new(0),
        }
    }

    /// Takes one operation from the bucket, or says when to try again.
    /// `op` names it in the refusal.
    pub fn admit(&self, op: &str) -> Result<(), Throttled> {
        match self.limiter.check() {
            Ok(()) => {
                self.admitted.fetch_add(1, Ordering::Relaxed);
                Ok(())
            }
            Err(not_until) => {
                self.rejected.fetch_add(1, Ordering::Relaxed);
                Err(Throttled {
                    message: format!(
                        "{op} refused: expensive admin operations are limited to {} per minute (bursts of {}), all clients together",
                        self.per_minute, self.burst
                    ),
                    retry_after: not_until.wait_time_from(self.clock.now()),
                })
            }
        }
    }

    pub fn view(&self) -> OpLimiterView {
        OpLimiterView {
            ops_per_minute: self.per_minute,
            burst: self.burst,
            admitted: self.admitted.load(Ordering::Relaxed),
            rejected: self.rejected.load(Ordering::Relaxed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::guard::client::client_address;
    use governor::clock::FakeRelativeClock;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn cfg(per_sec: u32, burst: u32, max_clients: usize) -> HttpLimitConfig {
        HttpLimitConfig {
            requests_per_sec: per_sec,
            burst,
            max_clients,
            ..HttpLimitConfig::default()
        }
    }

    #[test]
    fn cidrs_parse_and_match() {
        let c: Cidr = "10.0.0.0/8".parse().unwrap();
        assert!(c.contains(ip("10.200.1.1")));
        assert!(!c.contains(ip("11.0.0.1")));
        assert!(c.contains(ip("::ffff:10.1.2.3")), "v4-mapped");
        let one: Cidr = "127.0.0.1".parse().unwrap();
        assert!(one.contains(ip("127.0.0.1")) && !one.contains(ip("127.0.0.2")));
        let v6: Cidr = "fd00::/8".parse().unwrap();
        assert!(v6.contains(ip("fd12::1")) && !v6.contains(ip("fe80::1")));
        let all: Cidr = "0.0.0.0/0".parse().unwrap();
        assert!(all.contains(ip("8.8.8.8")));
        assert!("10.0.0.0/33".parse::<Cidr>().is_err());
        assert!("proxy".parse::<Cidr>().is_err());
        assert_eq!(c.to_string(), "10.0.0.0/8");
    }

    #[test]
    fn forwarded_for_is_believed_only_from_trusted_proxies() {
        let proxies: Vec<Cidr> = vec!["127.0.0.1".parse().unwrap(), "10.0.0.0/8".parse().unwrap()];
        let peer = Some(ip("203.0.113.9"));
        // An untrusted peer: the header is ignored, whatever it says.
        assert_eq!(client_address(peer, &["1.1.1.1"], &proxies), peer);
        assert_eq!(client_address(peer, &["1.1.1.1"], &[]), peer);
        // A trusted proxy: the rightmost untrusted hop is the client; what
        // the client itself prepended does not count.
        let local = Some(ip("127.0.0.1"));
        assert_eq!(
            client_address(local, &["6.6.6.6, 198.51.100.7, 10.1.1.1"], &proxies),
            Some(ip("198.51.100.7"))
        );
        // Several headers are one list, in order.
        assert_eq!(
            client_address(local, &["6.6.6.6", "198.51.100.8:5000"], &proxies),
            Some(ip("198.51.100.8"))
        );
        assert_eq!(
            client_address(local, &["[2001:db8::1]:443"], &proxies),
            Some(ip("2001:db8::1"))
        );
        // No header, or garbage: the last address known good.
        assert_eq!(client_address(local, &[], &proxies), local);
        assert_eq!(
            client_address(local, &["garbage, 10.0.0.5"], &proxies),
            Some(ip("10.0.0.5"))
        );
        assert_eq!(client_address(None, &["1.1.1.1"], &proxies), None);
    }

    #[test]
    fn a_burst_over_the_quota_is_refused_with_a_retry_time_and_others_are_unaffected() {
        let clock = FakeRelativeClock::default();
        let l = ClientLimiter::with_clock(&cfg(2, 3, 100), vec![], clock.clone());
        let a = Some(ip("192.0.2.1"));
        for _ in 0..3 {
            assert!(l.check(a).is_ok());
        }
        let e = l.check(a).unwrap_err();
        assert_eq!(e.retry_after, Duration::from_millis(500));
        assert_eq!(retry_after_secs(e.retry_after), 1);
        assert!(l.check(Some(ip("192.0.2.2"))).is_ok(), "another client");
        clock.advance(Duration::from_millis(500));
        assert!(l.check(a).is_ok(), "a token came back");
        let v = l.view();
        assert_eq!((v.allowed, v.rejected, v.clients), (5, 1, 2));
    }

    #[test]
    fn ipv6_clients_share_their_64() {
        let l = ClientLimiter::with_clock(&cfg(1, 1, 100), vec![], FakeRelativeClock::default());
        assert!(l.check(Some(ip("2001:db8:1:2::1"))).is_ok());
        assert!(l.check(Some(ip("2001:db8:1:2::ffff"))).is_err());
        assert!(l.check(Some(ip("2001:db8:1:3::1"))).is_ok());
    }

    #[test]
    fn idle_clients_are_forgotten_by_trim() {
        let clock = FakeRelativeClock::default();
        let l = ClientLimiter::with_clock(&cfg(10, 5, 1000), vec![], clock.clone());
        for i in 0..50u8 {
            l.check(Some(IpAddr::from([198, 51, 100, i]))).unwrap();
        }
        assert_eq!(l.clients(), 50);
        assert_eq!(l.trim(), 0, "all used within their refill time");
        // A state is forgotten once it would refill even one more token
        // than a fresh one holds: two emission intervals after one request.
        clock.advance(Duration::from_millis(250));
        // One client stays busy.
        for _ in 0..3 {
            l.check(Some(ip("192.0.2.7"))).unwrap();
        }
        assert_eq!(l.trim(), 50);
        assert_eq!(l.clients(), 1);
        assert_eq!(l.view().forgotten, 50);
    }

    #[test]
    fn beyond_max_clients_new_clients_share_one_bucket_until_trimmed() {
        let clock = FakeRelativeClock::default();
        let l = ClientLimiter::with_clock(&cfg(1, 1, 10), vec![], clock.clone());
        // More distinct clients than the cap, within one refill time.
        for i in 0..(COUNT_EVERY as usize + 10) {
            let _ = l.check(Some(IpAddr::from([10, 0, (i >> 8) as u8, i as u8])));
        }
        assert!(l.view().overflow);
        assert!(l.clients() <= COUNT_EVERY as usize + 1);
        // Everyone now shares the overflow bucket (burst 1).
        let _ = l.check(Some(ip("192.0.2.50")));
        assert!(l.check(Some(ip("192.0.2.51"))).is_err());
        // Once they are idle, trimming brings the table back.
        clock.advance(Duration::from_secs(2));
        l.trim();
        assert!(!l.view().overflow);
        assert!(l.check(Some(ip("192.0.2.52"))).is_ok());
    }

    #[test]
    fn a_disabled_limiter_admits_everything() {
        let l = ClientLimiter::with_clock(
            &HttpLimitConfig {
                enabled: false,
                ..cfg(1, 1, 10)
            },
            vec![],
            FakeRelativeClock::default(),
        );
        for _ in 0..100 {
            assert!(l.check(Some(ip("192.0.2.1"))).is_ok());
        }
        assert_eq!(l.clients(), 0);
    }

    #[test]
    fn expensive_operations_share_one_bucket() {
        let l = OpLimiter::new(&AdminLimitConfig {
            ops_per_minute: 1,
            burst: 2,
        });
        assert!(l.admit("reload").is_ok());
        assert!(l.admit("restart").is_ok());
        let e = l.admit("optimize").unwrap_err();
        assert!(e.message.starts_with("optimize refused"), "{}", e.message);
        assert!(
            e.retry_after > Duration::from_secs(50),
            "{:?}",
            e.retry_after
        );
        assert_eq!(l.view().rejected, 1);
    }

    #[test]
    fn retry_after_rounds_up_to_whole_seconds() {
        assert_eq!(retry_after_secs(Duration::ZERO), 1);
        assert_eq!(retry_after_secs(Duration::from_millis(1)), 1);
        assert_eq!(retry_after_secs(Duration::from_secs(2)), 2);
        assert_eq!(retry_after_secs(Duration::from_millis(2001)), 3);
    }
}
