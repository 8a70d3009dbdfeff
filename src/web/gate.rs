//! The viewer gate every request passes: with `server.viewer_token` set,
//! a request goes on only with a credential [`Access`] accepts. Open
//! whatever is set: `/health` (for probes), the login page and logout.
//! Admin endpoints make their own, stricter check (`admin.rs`), so the gate
//! leaves them to it; which those are, the route table says.

use actix_web::body::{EitherBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header;
use actix_web::middleware::Next;
use actix_web::{HttpResponse, ResponseError, web};

use super::AppState;
#[cfg(doc)]
use super::access::Access;
use super::endpoint::OPEN_PATHS;
use super::error::ApiError;
use super::routes::ENDPOINTS;

/// Is the request one the gate leaves alone: an open path, or an admin
/// endpoint (which checks for itself)?
fn exempt(req: &ServiceRequest) -> bool {
    let path = req.path();
    if OPEN_PATHS.contains(&path) {
        return true;
    }
    let Some(pattern) = req.match_pattern() else {
        return false;
    };
    ENDPOINTS
        .iter()
        .any(|e| e.admin && e.path == pattern && e.method.http() == req.method())
}

/// Refuses reads without a credential while a viewer token is set: a
/// browser asking for a page is sent to the login page (303), anything
/// else gets a JSON 401.
pub async fn gate(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<EitherBody<impl MessageBody>>, actix_web::Error> {
    let refuse = match req.app_data::<web::Data<AppState>>() {
        Some(state) if state.access.guarded() && !exempt(&req) => {
            state.access.request_role(req.request()).is_none()
        }
        _ => false,
    };
    if refuse {
        let wants_page = (req.method() == actix_web::http::Method::GET
            || req.method() == actix_web::http::Method::HEAD)
            && req
                .headers()
                .get(header::ACCEPT)
                .and_then(|v| v.to_str().ok())
                .is_some_and(|a| a.contains("text/html"));
        let res = if wants_page {
            HttpResponse::SeeOther()
                .insert_header((header::LOCATION, "/login"))
                .finish()
        } else {
            ApiError::Unauthorized(
                "this appliance needs the viewer or admin token: `Authorization: Bearer \
                 <token>`, or a session from /login"
                    .into(),
            )
            .error_response()
        };
        return Ok(req.into_response(res).map_into_right_body());
    }
    next.call(req)
        .await
        .map(ServiceResponse::map_into_left_body)
}
