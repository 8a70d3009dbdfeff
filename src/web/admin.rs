//! Who may call admin endpoints. With `server.admin_token` set, a request
//! needs `Authorization: Bearer <token>`, compared in constant time (the
//! viewer token is refused with 403). With no token configured, only
//! clients on this host connecting directly are admitted: the client is
//! decided by `access::client`, so a request forwarded by a trusted proxy is
//! never local, and `::ffff:127.0.0.1` on a dual-stack socket is.
//! The token is never logged or echoed.
//!
//! Handlers take an [`Admin`] argument; extracting it performs the check.

use std::future::{Ready, ready};

use actix_web::dev::Payload;
use actix_web::http::header::AUTHORIZATION;
use actix_web::{FromRequest, HttpRequest, web};
use subtle::ConstantTimeEq;

use super::AppState;
use super::access::{Client, client};
use super::error::ApiError;

/// Proof that the request may use admin endpoints.
#[derive(Debug, Clone, Copy)]
pub struct Admin;

/// The decision, apart from HTTP: `token` is the configured admin token
/// (empty for none), `viewer` the viewer token (empty for none),
/// `authorization` the header's value, `client` who sent the request.
pub fn authorize(
    token: &str,
    viewer: &str,
    authorization: Option<&[u8]>,
    client: Client,
) -> Result<Admin, ApiError> {
    if token.is_empty() {
        return if client.is_local() {
            Ok(Admin)
        } else {
            Err(ApiError::Forbidden(
                "admin endpoints answer only clients on this host connecting directly (not \
                 through a proxy) while no server.admin_token is configured"
                    .into(),
            ))
        };
    }
    let Some(header) = authorization else {
        return Err(ApiError::Unauthorized(
            "this endpoint needs `Authorization: Bearer <token>`".into(),
        ));
    };
    let presented = header
        .strip_prefix(b"Bearer ")
        .or_else(|| header.strip_prefix(b"bearer "))
        .unwrap_or(b"");
    if bool::from(presented.ct_eq(token.as_bytes())) {
        Ok(Admin)
    } else if !viewer.is_empty() && bool::from(presented.ct_eq(viewer.as_bytes())) {
        Err(ApiError::Forbidden(
            "the viewer token cannot use admin endpoints".into(),
        ))
    } else {
        Err(ApiError::Unauthorized(
            "wrong or malformed bearer token".into(),
        ))
    }
}

impl FromRequest for Admin {
    type Error = ApiError;
    type Future = Ready<Result<Admin, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let Some(state) = req.app_data::<web::Data<AppState>>() else {
            return ready(Err(ApiError::Unavailable(
                "admin configuration missing".into(),
            )));
        };
        let header = req.headers().get(AUTHORIZATION).map(|h| h.as_bytes());
        ready(authorize(
            &state.server.admin_token,
            &state.server.viewer_token,
            header,
            client(req),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use std::net::{IpAddr, Ipv4Addr};

    const fn direct(ip: Option<IpAddr>) -> Client {
        Client { ip, proxied: false }
    }
    const LOCAL: Client = direct(Some(IpAddr::V4(Ipv4Addr::LOCALHOST)));
    const REMOTE: Client = direct(Some(IpAddr::V4(Ipv4Addr::new(192, 168, 1, 9))));

    #[test]
    fn without_a_token_only_loopback_is_admitted() {
        assert!(authorize("", "", None, LOCAL).is_ok());
        assert!(authorize("", "", None, direct(Some("::1".parse().unwrap()))).is_ok());
        for refused in [
            REMOTE,
            direct(None),
            Client {
                proxied: true,
                ..LOCAL
            },
        ] {
            assert!(
                matches!(
                    authorize("", "", None, refused),
                    Err(ApiError::Forbidden(_))
                ),
                "{refused:?}"
            );
        }
    }

    #[test]
    fn with_a_token_it_must_match_from_anywhere() {
        let t = "s3cret";
        assert!(authorize(t, "v13w", Some(b"Bearer s3cret"), REMOTE).is_ok());
        assert!(authorize(t, "v13w", Some(b"Bearer s3cret"), LOCAL).is_ok());
        for bad in [
            &b"Bearer s3cre"[..],
            b"Bearer s3cret2",
            b"Basic s3cret",
            b"s3cret",
            b"Bearer ",
        ] {
            assert!(
                matches!(
                    authorize(t, "v13w", Some(bad), LOCAL),
                    Err(ApiError::Unauthorized(_))
                ),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
        assert!(matches!(
            authorize(t, "v13w", None, LOCAL),
            Err(ApiError::Unauthorized(_))
        ));
        assert!(matches!(
            authorize(t, "v13w", Some(b"Bearer v13w"), LOCAL),
            Err(ApiError::Forbidden(_))
        ));
    }

    #[test]
    fn errors_never_contain_the_token() {
        let e = authorize("s3cret", "", Some(b"Bearer nope"), LOCAL).unwrap_err();
        assert!(!e.to_string().contains("s3cret"));
    }
}
