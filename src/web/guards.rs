//! The HTTP face of the guards: the per-client rate limit every request
//! passes through (429 with `Retry-After` and a JSON error), and
//! `GET /api/guards` (breakers, limiters, memory guard).

use actix_web::body::{EitherBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::middleware::Next;
use actix_web::{HttpResponse, ResponseError, web};

use super::AppState;
use super::access::client;
use super::error::ApiError;

/// Counts the request against its client's bucket; over the quota, answers
/// 429 without running the handler.
pub async fn rate_limit(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<EitherBody<impl MessageBody>>, actix_web::Error> {
    if let Some(state) = req.app_data::<web::Data<AppState>>() {
        let limiter = &state.guard.http;
        if limiter.enabled()
            && let Err(t) = limiter.check(client(req.request()).ip)
        {
            let res = ApiError::from(t).error_response();
            return Ok(req.into_response(res).map_into_right_body());
        }
    }
    next.call(req)
        .await
        .map(ServiceResponse::map_into_left_body)
}

/// `GET /api/guards`: every circuit breaker, the rate limiters and the
/// memory guard.
pub async fn guards(state: web::Data<AppState>) -> HttpResponse {
    HttpResponse::Ok().json(state.guard.view())
}
