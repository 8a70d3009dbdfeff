//! The login page: exchanges the viewer or admin token for a session
//! cookie (HttpOnly, SameSite=Strict, `Secure` over TLS, expiring after
//! `server.session_ttl_secs`), logout, and `GET /api/session` (what the
//! dashboard needs to know about its access: whether it is logged in, and
//! whether the data is open to the network).
//!
//! Failed logins are throttled per client (`sessions.rs`). The token is
//! never logged and never written back into the page.

use actix_web::http::StatusCode;
use actix_web::http::header::{self, ContentType};
use actix_web::{HttpRequest, HttpResponse, web};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::AppState;
use super::access::{Role, SESSION_COOKIE, client, session_id};
use super::error::ApiError;
use crate::guard::limit::retry_after_secs;

/// The largest login form accepted.
pub const MAX_FORM_BYTES: usize = 4096;

const PAGE: &str = include_str!("dashboard/login.html");

fn page(status: StatusCode, message: &str) -> HttpResponse {
    let note = if message.is_empty() {
        String::new()
    } else {
        format!("<p class=\"error\" role=\"alert\">{}</p>", escape(message))
    };
    HttpResponse::build(status)
        .content_type(ContentType::html())
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .body(PAGE.replace("<!--message-->", &note))
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// `GET /login`: the form.
pub async fn form() -> HttpResponse {
    page(StatusCode::OK, "")
}

/// The login form's fields.
#[derive(Deserialize, JsonSchema)]
pub struct LoginForm {
    /// The viewer or the admin token.
    pub token: String,
}

fn cookie(state: &AppState, value: &str, max_age: u64) -> String {
    let secure = if state.access.tls { "; Secure" } else { "" };
    format!(
        "{SESSION_COOKIE}={value}; Path=/; Max-Age={max_age}; HttpOnly; SameSite=Strict{secure}"
    )
}

/// `POST /login`: a form with `token`; on success 303 to the dashboard
/// with the session cookie, else the form again with 400 (no token), 401
/// (wrong token) or 429 (too many failures, with `Retry-After`).
pub async fn login(
    req: HttpRequest,
    state: web::Data<AppState>,
    payload: web::Payload,
) -> HttpResponse {
    let who = client(&req).ip;
    if let Some(wait) = state.access.logins.blocked(who) {
        let secs = retry_after_secs(wait);
        let mut res = page(
            StatusCode::TOO_MANY_REQUESTS,
            &format!("Too many failed logins; try again in {secs} s."),
        );
        if let Ok(v) = header::HeaderValue::from_str(&secs.to_string()) {
            res.headers_mut().insert(header::RETRY_AFTER, v);
        }
        return res;
    }
    let body = match super::body::read(&req, payload, MAX_FORM_BYTES).await {
        Ok(body) => body,
        Err(e) => {
            let message = match &e {
                ApiError::PayloadTooLarge(_) => "The form is too large.".to_owned(),
                other => format!("The form did not arrive whole: {other}."),
            };
            return page(actix_web::ResponseError::status_code(&e), &message);
        }
    };
    let Ok(LoginForm { token }) = serde_urlencoded::from_bytes::<LoginForm>(&body) else {
        return page(StatusCode::BAD_REQUEST, "Enter the token.");
    };
    let Some(role) = state.access.token_role(token.trim().as_bytes()) else {
        state.access.logins.failed(who);
        log::info!(
            "failed login from {}",
            who.map_or("an unknown address".into(), |ip| ip.to_string())
        );
        return page(
            StatusCode::UNAUTHORIZED,
            "That is not this appliance's token.",
        );
    };
    let id = match state.access.sessions.create(role) {
        Ok(id) => id,
        Err(e) => {
            log::error!("cannot create a session: the random source failed ({e})");
            return page(
                StatusCode::SERVICE_UNAVAILABLE,
                "The server cannot create a session right now.",
            );
        }
    };
    let max_age = state.access.sessions.ttl().as_secs();
    HttpResponse::SeeOther()
        .insert_header((header::LOCATION, "/"))
        .insert_header((header::SET_COOKIE, cookie(&state, &id, max_age)))
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .finish()
}

/// `POST /logout`: ends the session (if any) and clears the cookie; 303 to
/// the login page.
pub async fn logout(req: HttpRequest, state: web::Data<AppState>) -> HttpResponse {
    if let Some(id) = session_id(&req) {
        state.access.sessions.remove(&id);
    }
    HttpResponse::SeeOther()
        .insert_header((header::LOCATION, "/login"))
        .insert_header((header::SET_COOKIE, cookie(&state, "", 0)))
        .finish()
}

/// `GET /api/session`: this client's access.
#[derive(Debug, Serialize, JsonSchema)]
pub struct SessionView {
    /// Reads need a token or a session (`server.viewer_token` is set).
    pub login_required: bool,
    /// What this request's credential grants; null without one.
    pub role: Option<Role>,
    /// The request carries a live session cookie (logout applies).
    pub session: bool,
    /// The listener is reachable from other hosts.
    pub open_to_network: bool,
    /// Served over HTTPS.
    pub tls: bool,
}

pub async fn session(
    req: HttpRequest,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let access = &state.access;
    let session = session_id(&req).is_some_and(|id| access.sessions.role(&id).is_some());
    let role: Option<Role> = access.request_role(&req);
    Ok(HttpResponse::Ok().json(SessionView {
        login_required: access.guarded(),
        role,
        session,
        open_to_network: access.open_to_network,
        tls: access.tls,
    }))
}
