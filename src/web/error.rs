//! The API's error type: every failure a client can see is JSON with a code,
//! a message and, for bad input, the parameter at fault.

use std::time::Duration;

use actix_web::http::StatusCode;
use actix_web::http::header::RETRY_AFTER;
use actix_web::{HttpResponse, ResponseError};
use schemars::JsonSchema;
use serde::Serialize;

use crate::guard::limit::{Throttled, retry_after_secs};
use crate::storage::StorageError;

/// An error answered to an API client.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// A query parameter is missing, unknown or malformed (400).
    #[error("{message}")]
    BadParameter { parameter: String, message: String },
    /// No or a wrong bearer token (401).
    #[error("{0}")]
    Unauthorized(String),
    /// Refused whatever the credentials (403).
    #[error("{0}")]
    Forbidden(String),
    /// The thing asked for does not exist (404).
    #[error("{0}")]
    NotFound(String),
    /// The request cannot apply in the current state (409).
    #[error("{0}")]
    Conflict(String),
    /// The request is valid but the method is not (405).
    #[error("{0}")]
    MethodNotAllowed(String),
    /// A dependency (database, supervisor) cannot answer right now (503).
    #[error("{0}")]
    Unavailable(String),
    /// The request body is larger than the endpoint takes (413).
    #[error("{0}")]
    PayloadTooLarge(String),
    /// The request body did not arrive in time (408).
    #[error("{0}")]
    RequestTimeout(String),
    /// A rate limit refused the request (429, with `Retry-After`).
    #[error("{message}")]
    TooManyRequests {
        message: String,
        retry_after: Duration,
    },
}

impl ApiError {
    pub fn bad(parameter: &str, message: impl Into<String>) -> ApiError {
        ApiError::BadParameter {
            parameter: parameter.to_owned(),
            message: message.into(),
        }
    }

    fn code(&self) -> ErrorCode {
        match self {
            ApiError::BadParameter { .. } => ErrorCode::BadParameter,
            ApiError::Unauthorized(_) => ErrorCode::Unauthorized,
            ApiError::Forbidden(_) => ErrorCode::Forbidden,
            ApiError::NotFound(_) => ErrorCode::NotFound,
            ApiError::MethodNotAllowed(_) => ErrorCode::MethodNotAllowed,
            ApiError::Conflict(_) => ErrorCode::Conflict,
            ApiError::Unavailable(_) => ErrorCode::Unavailable,
            ApiError::PayloadTooLarge(_) => ErrorCode::PayloadTooLarge,
            ApiError::RequestTimeout(_) => ErrorCode::RequestTimeout,
            ApiError::TooManyRequests { .. } => ErrorCode::RateLimited,
        }
    }
}

/// What kind of error it is, for a client to act on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    BadParameter,
    Unauthorized,
    Forbidden,
    NotFound,
    MethodNotAllowed,
    Conflict,
    Unavailable,
    PayloadTooLarge,
    RequestTimeout,
    RateLimited,
}

/// The body of every error answer.
#[derive(Debug, Serialize, JsonSchema)]
#[schemars(rename = "Error")]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

/// The error itself.
#[derive(Debug, Serialize, JsonSchema)]
pub struct ErrorDetail {
    pub code: ErrorCode,
    pub message: String,
    /// The parameter at fault (`bad_parameter`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub parameter: Option<String>,
}

impl ErrorBody {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> ErrorBody {
        ErrorBody {
            error: ErrorDetail {
                code,
                message: message.into(),
                parameter: None,
            },
        }
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        match self {
            ApiError::BadParameter { .. } => StatusCode::BAD_REQUEST,
            ApiError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::RequestTimeout(_) => StatusCode::REQUEST_TIMEOUT,
            ApiError::TooManyRequests { .. } => StatusCode::TOO_MANY_REQUESTS,
        }
    }

    fn error_response(&self) -> HttpResponse {
        let parameter = match self {
            ApiError::BadParameter { parameter, .. } => Some(parameter.as_str()),
            _ => None,
        };
        let mut res = HttpResponse::build(self.status_code());
        if let ApiError::Unauthorized(_) = self {
            res.insert_header(("WWW-Authenticate", "Bearer"));
        }
        if let ApiError::TooManyRequests { retry_after, .. } = self {
            res.insert_header((RETRY_AFTER, retry_after_secs(*retry_after).to_string()));
        }
        res.json(ErrorBody {
            error: ErrorDetail {
                code: self.code(),
                message: self.to_string(),
                parameter: parameter.map(str::to_owned),
            },
        })
    }
}

impl From<StorageError> for ApiError {
    fn from(e: StorageError) -> ApiError {
        log::warn!("API storage error: {e}");
        ApiError::Unavailable(format!("database unavailable: {e}"))
    }
}

impl From<Throttled> for ApiError {
    fn from(t: Throttled) -> ApiError {
        ApiError::TooManyRequests {
            message: t.message,
            retry_after: t.retry_after,
        }
    }
}

impl From<actix_web::error::BlockingError> for ApiError {
    fn from(_: actix_web::error::BlockingError) -> ApiError {
        ApiError::Unavailable("the server is shutting down".into())
    }
}
