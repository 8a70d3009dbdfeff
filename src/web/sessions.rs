//! Login sessions and the failed-login throttle, apart from HTTP.
//!
//! A session is a random 256-bit id (from the operating system's random
//! source) the login page sets as a cookie; it grants the role of the token
//! it was exchanged for until it expires or is logged out. Sessions live in
//! memory: a restart logs everyone out. Both maps are bounded.
//!
//! Failed logins are counted per client: after [`LOGIN_FAILURES`] within
//! [`LOGIN_WINDOW`], further attempts are refused (429) until the window
//! ends, without comparing the token, so a token cannot be guessed faster
//! than that.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use serde::Serialize;

/// Failed logins a client may make per [`LOGIN_WINDOW`].
pub const LOGIN_FAILURES: u32 = 5;
/// The window failed logins are counted in.
pub const LOGIN_WINDOW: Duration = Duration::from_secs(60);
/// Sessions held at once; a new one beyond it evicts the oldest.
pub const MAX_SESSIONS: usize = 1024;
/// Clients whose failures are tracked at once; beyond it, new clients share
/// one count.
pub const MAX_TRACKED_CLIENTS: usize = 4096;

/// What a credential grants.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Reads: the dashboard, the read API, the live feed, `/metrics`.
    Viewer,
    /// Everything a viewer may, and admin endpoints (with the bearer).
    Admin,
}

struct Session {
    role: Role,
    expires: Instant,
}

/// The live sessions.
pub struct Sessions {
    ttl: Duration,
    map: Mutex<HashMap<String, Session>>,
}

impl Sessions {
    pub fn new(ttl: Duration) -> Sessions {
        Sessions {
            ttl,
            map: Mutex::default(),
        }
    }

    /// How long a new session lasts.
    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// A new session for `role`; its id, or an error if the system's random
    /// source fails.
    pub fn create(&self, role: Role) -> Result<String, getrandom::Error> {
        self.create_at(role, Instant::now())
    }

    fn create_at(&self, role: Role, now: Instant) -> Result<String, getrandom::Error> {
        let mut bytes = [0u8; 32];
        getrandom::fill(&mut bytes)?;
        let id: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        let mut map = self.map.lock().unwrap_or_else(PoisonError::into_inner);
        if map.len() >= MAX_SESSIONS {
            map.retain(|_, s| s.expires > now);
        }
        if map.len() >= MAX_SESSIONS
            && let Some(oldest) = map
                .iter()
                .min_by_key(|(_, s)| s.expires)
                .map(|(k, _)| k.clone())
        {
            map.remove(&oldest);
        }
        map.insert(
            id.clone(),
            Session {
                role,
                // Config bounds the TTL; a clock near its end must not
                // panic a worker either.
                expires: now.checked_add(self.ttl).unwrap_or(now),
            },
        );
        Ok(id)
    }

    /// The role of a live session (an expired one is forgotten).
    pub fn role(&self, id: &str) -> Option<Role> {
        self.role_at(id, Instant::now())
    }

    fn role_at(&self, id: &str, now: Instant) -> Option<Role> {
        let mut map = self.map.lock().unwrap_or_else(PoisonError::into_inner);
        match map.get(id) {
            Some(s) if s.expires > now => Some(s.role),
            Some(_) => {
                map.remove(id);
                None
            }
            None => None,
        }
    }

    /// Ends a session; whether it existed.
    pub fn remove(&self, id: &str) -> bool {
        self.map
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(id)
            .is_some()
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.map
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }

    #[cfg(test)]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

struct Failures {
    since: Instant,
    count: u32,
}

/// Failed logins per client (see the module docs).
#[derive(Default)]
pub struct LoginThrottle {
    map: Mutex<HashMap<Option<IpAddr>, Failures>>,
}

impl LoginThrottle {
    /// How long `client` must wait before trying again, if it must.
    pub fn blocked(&self, client: Option<IpAddr>) -> Option<Duration> {
        self.blocked_at(client, Instant::now())
    }

    fn blocked_at(&self, client: Option<IpAddr>, now: Instant) -> Option<Duration> {
        let map = self.map.lock().unwrap_or_else(PoisonError::into_inner);
        let key = if map.contains_key(&client) {
            client
        } else if map.len() >= MAX_TRACKED_CLIENTS {
            None
        } else {
            return None;
        };
        let f = map.get(&key)?;
        let ends = f.since + LOGIN_WINDOW;
        (f.count >= LOGIN_FAILURES && ends > now).then(|| ends - now)
    }

    /// Counts a failed login of `client`.
    pub fn failed(&self, client: Option<IpAddr>) {
        self.failed_at(client, Instant::now());
    }

    fn failed_at(&self, client: Option<IpAddr>, now: Instant) {
        let mut map = self.map.lock().unwrap_or_else(PoisonError::into_inner);
        if !map.contains_key(&client) && map.len() >= MAX_TRACKED_CLIENTS {
            map.retain(|_, f| f.since + LOGIN_WINDOW > now);
        }
        let key = if map.contains_key(&client) || map.len() < MAX_TRACKED_CLIENTS {
            client
        } else {
            None
        };
        let f = map.entry(key).or_insert(Failures {
            since: now,
            count: 0,
        });
        if f.since + LOGIN_WINDOW <= now {
            *f = Failures {
                since: now,
                count: 0,
            };
        }
        f.count = f.count.saturating_add(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_session_grants_its_role_until_it_expires_or_ends() {
        let s = Sessions::new(Duration::from_secs(60));
        let t0 = Instant::now();
        let id = s.create_at(Role::Viewer, t0).unwrap();
        assert_eq!(id.len(), 64);
        assert_eq!(
            s.role_at(&id, t0 + Duration::from_secs(59)),
            Some(Role::Viewer)
        );
        assert_eq!(s.role_at(&id, t0 + Duration::from_secs(60)), None);
        assert!(s.is_empty(), "an expired session is forgotten");
        let id = s.create_at(Role::Admin, t0).unwrap();
        assert_eq!(s.role_at(&id, t0), Some(Role::Admin));
        assert!(s.remove(&id));
        assert_eq!(s.role_at(&id, t0), None);
        assert_eq!(s.role_at("", t0), None);
    }

    #[test]
    fn ids_are_unique_and_the_map_is_bounded() {
        let s = Sessions::new(Duration::from_secs(60));
        let t0 = Instant::now();
        let first = s.create_at(Role::Viewer, t0).unwrap();
        let mut ids = std::collections::HashSet::new();
        for i in 0..MAX_SESSIONS + 10 {
            let id = s
                .create_at(Role::Viewer, t0 + Duration::from_millis(i as u64 + 1))
                .unwrap();
            assert!(ids.insert(id));
        }
        assert_eq!(s.len(), MAX_SESSIONS);
        assert_eq!(s.role_at(&first, t0), None, "the oldest went first");
    }

    #[test]
    fn failures_block_their_client_for_the_rest_of_the_window() {
        let t = LoginThrottle::default();
        let a = Some("192.168.1.9".parse().unwrap());
        let b = Some("192.168.1.10".parse().unwrap());
        let t0 = Instant::now();
        for i in 0..LOGIN_FAILURES {
            assert_eq!(t.blocked_at(a, t0), None, "after {i} failures");
            t.failed_at(a, t0);
        }
        let wait = t.blocked_at(a, t0 + Duration::from_secs(10)).unwrap();
        assert_eq!(wait, LOGIN_WINDOW - Duration::from_secs(10));
        assert_eq!(t.blocked_at(b, t0), None, "another client is not blocked");
        assert_eq!(t.blocked_at(a, t0 + LOGIN_WINDOW), None);
        // A new window starts counting from zero.
        t.failed_at(a, t0 + LOGIN_WINDOW);
        assert_eq!(t.blocked_at(a, t0 + LOGIN_WINDOW), None);
    }

    #[test]
    fn beyond_the_tracked_clients_new_ones_share_a_count() {
        let t = LoginThrottle::default();
        let t0 = Instant::now();
        for i in 0..MAX_TRACKED_CLIENTS as u32 {
            t.failed_at(Some(IpAddr::from(i.to_be_bytes())), t0);
        }
        let extra = |n: u32| Some(IpAddr::from((0xff00_0000u32 + n).to_be_bytes()));
        for n in 0..LOGIN_FAILURES {
            assert_eq!(t.blocked_at(extra(n), t0), None);
            t.failed_at(extra(n), t0);
        }
        assert!(t.blocked_at(extra(99), t0).is_some());
        // Old entries make room once their window has passed.
        t.failed_at(extra(100), t0 + LOGIN_WINDOW);
        assert_eq!(t.blocked_at(extra(100), t0 + LOGIN_WINDOW), None);
    }
}
