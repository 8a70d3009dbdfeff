//! Who the client is and what it may read.
//!
//! [`client`] is the one answer to "who is this": the peer address, or the
//! address a trusted proxy forwarded (`[guard.http] trusted_proxies`),
//! IPv4-mapped IPv6 normalised. The rate limiter, the admin check and the
//! viewer check all ask it, so a request that came through a proxy is never
//! taken for a loopback client.
//!
//! [`Access`] holds the tokens and sessions and says what a request's
//! credential grants: the viewer or the admin token (`Authorization:
//! Bearer`), or a session cookie from `/login` (`login.rs`). `gate.rs`
//! applies it to every request. Tokens are compared in constant time and
//! never logged or echoed.

use std::net::{IpAddr, SocketAddr};

use actix_web::http::header::{self, HeaderName};
use actix_web::{HttpRequest, web};
use subtle::ConstantTimeEq;

use super::AppState;
use super::config::ServerConfig;
pub use super::sessions::Role;
use super::sessions::{LoginThrottle, Sessions};
use crate::guard::client::{Cidr, canonical, client_address};

const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");

/// The session cookie's name.
pub const SESSION_COOKIE: &str = "vigil_session";

/// Who sent a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Client {
    /// The client's address: the peer's, or the one a trusted proxy
    /// forwarded; `None` when the peer is unknown.
    pub ip: Option<IpAddr>,
    /// The request came through a trusted proxy (its peer is one and it
    /// carries `X-Forwarded-For`): whatever the address, it is not local.
    pub proxied: bool,
}

impl Client {
    /// A client on this host, connected directly (not through a proxy).
    pub fn is_local(&self) -> bool {
        !self.proxied && self.ip.is_some_and(|ip| ip.is_loopback())
    }
}

/// [`Client`] apart from HTTP: `peer` the TCP peer, `forwarded` every
/// `X-Forwarded-For` header in order, `trusted` the proxies believed.
pub fn client_of(peer: Option<IpAddr>, forwarded: &[&str], trusted: &[Cidr]) -> Client {
    let peer = peer.map(canonical);
    let proxied =
        !forwarded.is_empty() && peer.is_some_and(|p| trusted.iter().any(|c| c.contains(p)));
    let headers = if trusted.is_empty() {
        &[][..]
    } else {
        forwarded
    };
    Client {
        ip: client_address(peer, headers, trusted),
        proxied,
    }
}

/// Who sent `req` (see the module docs).
pub fn client(req: &HttpRequest) -> Client {
    let peer = req.peer_addr().map(|a| a.ip());
    let Some(state) = req.app_data::<web::Data<AppState>>() else {
        return client_of(peer, &[], &[]);
    };
    let trusted = state.guard.http.trusted();
    let forwarded: Vec<&str> = if trusted.is_empty() {
        Vec::new()
    } else {
        req.headers()
            .get_all(X_FORWARDED_FOR)
            .filter_map(|v| v.to_str().ok())
            .collect()
    };
    client_of(peer, &forwarded, trusted)
}

/// The tokens, the sessions and the failed-login throttle.
pub struct Access {
    viewer_token: String,
    admin_token: String,
    pub sessions: Sessions,
    pub logins: LoginThrottle,
    /// Served over TLS: the session cookie is `Secure`.
    pub tls: bool,
    /// Bound to an address other hosts can reach.
    pub open_to_network: bool,
}

impl Access {
    /// From a validated `[server]`, for a listener bound to `bound`.
    pub fn new(server: &ServerConfig, bound: SocketAddr, tls: bool) -> Access {
        Access {
            viewer_token: server.viewer_token.clone(),
            admin_token: server.admin_token.clone(),
            sessions: Sessions::new(std::time::Duration::from_secs(server.session_ttl_secs)),
            logins: LoginThrottle::default(),
            tls,
            open_to_network: !canonical(bound.ip()).is_loopback(),
        }
    }

    /// Reads need a credential (a viewer token is configured).
    pub fn guarded(&self) -> bool {
        !self.viewer_token.is_empty()
    }

    /// The role `presented` is the token of, compared in constant time
    /// with both tokens (an unset token matches nothing).
    pub fn token_role(&self, presented: &[u8]) -> Option<Role> {
        let is = |token: &str| !token.is_empty() && bool::from(presented.ct_eq(token.as_bytes()));
        let admin = is(&self.admin_token);
        let viewer = is(&self.viewer_token);
        if admin {
            Some(Role::Admin)
        } else if viewer {
            Some(Role::Viewer)
        } else {
            None
        }
    }

    /// The role `req`'s credential grants: a bearer token, or else a live
    /// session cookie.
    pub fn request_role(&self, req: &HttpRequest) -> Option<Role> {
        if let Some(presented) = bearer(req) {
            return self.token_role(presented);
        }
        session_id(req).and_then(|id| self.sessions.role(&id))
    }
}

/// The token of an `Authorization: Bearer` header, if there is one.
pub fn bearer(req: &HttpRequest) -> Option<&[u8]> {
    let h = req.headers().get(header::AUTHORIZATION)?.as_bytes();
    Some(
        h.strip_prefix(b"Bearer ")
            .or_else(|| h.strip_prefix(b"bearer "))
            .unwrap_or(b""),
    )
}

/// The value of the session cookie, if the request carries one.
pub fn session_id(req: &HttpRequest) -> Option<String> {
    req.headers()
        .get_all(header::COOKIE)
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|pair| {
            let (name, value) = pair.trim().split_once('=')?;
            (name == SESSION_COOKIE && !value.is_empty()).then(|| value.to_owned())
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn cidrs(list: &[&str]) -> Vec<Cidr> {
        list.iter().map(|c| c.parse().unwrap()).collect()
    }

    #[test]
    fn a_forwarded_request_is_never_local() {
        let trusted = cidrs(&["127.0.0.1"]);
        let c = client_of(Some(ip("127.0.0.1")), &["192.168.1.9"], &trusted);
        assert_eq!(c.ip, Some(ip("192.168.1.9")));
        assert!(c.proxied && !c.is_local());
        // Even when the forwarded address claims to be loopback.
        let c = client_of(Some(ip("127.0.0.1")), &["127.0.0.1"], &trusted);
        assert!(c.proxied && !c.is_local());
        // The proxy's host talking directly (no header) is local.
        assert!(client_of(Some(ip("127.0.0.1")), &[], &trusted).is_local());
    }

    #[test]
    fn the_header_from_an_untrusted_peer_changes_nothing() {
        let c = client_of(Some(ip("127.0.0.1")), &["192.168.1.9"], &[]);
        assert_eq!(c.ip, Some(ip("127.0.0.1")));
        assert!(!c.proxied && c.is_local());
        let trusted = cidrs(&["10.0.0.1"]);
        let c = client_of(Some(ip("192.168.1.9")), &["127.0.0.1"], &trusted);
        assert_eq!(c.ip, Some(ip("192.168.1.9")));
        assert!(!c.proxied && !c.is_local());
    }

    #[test]
    fn mapped_addresses_are_plain_ipv4() {
        let c = client_of(Some(ip("::ffff:127.0.0.1")), &[], &[]);
        assert_eq!(c.ip, Some(ip("127.0.0.1")));
        assert!(c.is_local());
        assert!(client_of(Some(ip("::1")), &[], &[]).is_local());
        let c = client_of(Some(ip("::ffff:192.168.1.9")), &[], &[]);
        assert_eq!(c.ip, Some(ip("192.168.1.9")));
        assert!(!c.is_local());
        // A proxy trusted as 127.0.0.1 is recognised on a dual-stack socket.
        let trusted = cidrs(&["127.0.0.1"]);
        let c = client_of(Some(ip("::ffff:127.0.0.1")), &["::ffff:10.1.2.3"], &trusted);
        assert_eq!(c.ip, Some(ip("10.1.2.3")));
        assert!(c.proxied);
        assert!(!client_of(None, &[], &[]).is_local());
    }

    fn access(viewer: &str, admin: &str) -> Access {
        let server = ServerConfig {
            viewer_token: viewer.into(),
            admin_token: admin.into(),
            ..ServerConfig::default()
        };
        Access::new(&server, "127.0.0.1:8080".parse().unwrap(), false)
    }

    #[test]
    fn tokens_grant_their_roles_and_nothing_else() {
        let a = access("look", "touch");
        assert!(a.guarded());
        assert_eq!(a.token_role(b"look"), Some(Role::Viewer));
        assert_eq!(a.token_role(b"touch"), Some(Role::Admin));
        for bad in [&b""[..], b"loo", b"lookk", b"touc", b"LOOK"] {
            assert_eq!(a.token_role(bad), None);
        }
        // An unset token is not the empty string's token.
        let a = access("", "");
        assert!(!a.guarded());
        assert_eq!(a.token_role(b""), None);
        let a = access("look", "");
        assert_eq!(a.token_role(b""), None);
    }

    #[test]
    fn the_bind_address_says_whether_the_network_sees_it() {
        let at = |bind: &str| {
            Access::new(&ServerConfig::default(), bind.parse().unwrap(), false).open_to_network
        };
        assert!(!at("127.0.0.1:1"));
        assert!(!at("[::1]:1"));
        assert!(!at("[::ffff:127.0.0.1]:1"));
        assert!(at("0.0.0.0:1"));
        assert!(at("[::]:1"));
        assert!(at("192.168.1.2:1"));
    }
}
