//! Who may call admin endpoints. With `server.admin_token` set, a request
//! needs `Authorization: Bearer <token>`, compared in constant time. With no
//! token configured, only clients connecting over loopback are admitted.
//! The token is never logged or echoed.
//!
//! Handlers take an [`Admin`] argument; extracting it performs the check.

use std::future::{Ready, ready};
use std::net::IpAddr;

use actix_web::dev::Payload;
use actix_web::http::header::AUTHORIZATION;
use actix_web::{FromRequest, HttpRequest, web};
use subtle::ConstantTimeEq;

use super::AppState;
use super::error::ApiError;

/// Proof that the request may use admin endpoints.
#[derive(Debug, Clone, Copy)]
pub struct Admin;

/// The decision, apart from HTTP: `token` is the configured token (empty for
/// none), `authorization` the header's value, `peer` the client address.
pub fn authorize(
    token: &str,
    authorization: Option<&[u8]>,
    peer: Option<IpAddr>,
) -> Result<Admin, ApiError> {
    if token.is_empty() {
        return match peer {
            Some(ip) if ip.is_loopback() => Ok(Admin),
            _ => Err(ApiError::Forbidden(
                "admin endpoints answer only loopback clients while no server.admin_token is configured"
                    .into(),
            )),
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
        let token = req
            .app_data::<web::Data<AppState>>()
            .map(|s| s.server.admin_token.clone());
        let Some(token) = token else {
            return ready(Err(ApiError::Unavailable(
                "admin configuration missing".into(),
            )));
        };
        let header = req.headers().get(AUTHORIZATION).map(|h| h.as_bytes());
        ready(authorize(&token, header, req.peer_addr().map(|a| a.ip())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LOCAL: Option<IpAddr> = Some(IpAddr::V4(std::net::Ipv4Addr::LOCALHOST));
    const REMOTE: Option<IpAddr> = Some(IpAddr::V4(std::net::Ipv4Addr::new(192, 168, 1, 9)));

    #[test]
    fn without_a_token_only_loopback_is_admitted() {
        assert!(authorize("", None, LOCAL).is_ok());
        assert!(authorize("", None, Some("::1".parse().unwrap())).is_ok());
        assert!(matches!(
            authorize("", None, REMOTE),
            Err(ApiError::Forbidden(_))
        ));
        assert!(matches!(
            authorize("", None, None),
            Err(ApiError::Forbidden(_))
        ));
    }

    #[test]
    fn with_a_token_it_must_match_from_anywhere() {
        let t = "s3cret";
        assert!(authorize(t, Some(b"Bearer s3cret"), REMOTE).is_ok());
        assert!(authorize(t, Some(b"Bearer s3cret"), LOCAL).is_ok());
        for bad in [
            &b"Bearer s3cre"[..],
            b"Bearer s3cret2",
            b"Basic s3cret",
            b"s3cret",
            b"Bearer ",
        ] {
            assert!(
                matches!(
                    authorize(t, Some(bad), LOCAL),
                    Err(ApiError::Unauthorized(_))
                ),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
        assert!(matches!(
            authorize(t, None, LOCAL),
            Err(ApiError::Unauthorized(_))
        ));
    }

    #[test]
    fn errors_never_contain_the_token() {
        let e = authorize("s3cret", Some(b"Bearer nope"), LOCAL).unwrap_err();
        assert!(!e.to_string().contains("s3cret"));
    }
}
