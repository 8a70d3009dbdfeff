//! Request bodies read by hand rather than by actix's `Bytes` extractor, so
//! that a body too large, cut short or too slow (`connlimit::body_deadline`)
//! is answered like every other error of the API: JSON naming what went
//! wrong, with 413, 400 or 408, instead of actix's plain text.

use actix_web::error::PayloadError;
use actix_web::http::header::CONTENT_LENGTH;
use actix_web::{HttpRequest, web};
use futures_util::StreamExt;

use super::error::ApiError;

/// The largest body a config edit takes: one sensor or rule entry is a
/// few hundred bytes.
pub const MAX_ENTRY_BYTES: usize = 256 * 1024;

/// Reads the whole body of `req`, decompressed as its `Content-Encoding`
/// says, at most `limit` bytes.
pub async fn read(
    req: &HttpRequest,
    payload: web::Payload,
    limit: usize,
) -> Result<web::Bytes, ApiError> {
    let too_large = || ApiError::PayloadTooLarge(format!("the body is over {limit} bytes"));
    let declared = req
        .headers()
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(too_large());
    }
    let mut payload = actix_web::dev::Decompress::from_headers(payload.into_inner(), req.headers());
    let mut body = web::BytesMut::new();
    while let Some(chunk) = payload.next().await {
        let chunk = chunk.map_err(refused)?;
        if body.len() + chunk.len() > limit {
            return Err(too_large());
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body.freeze())
}

fn refused(e: PayloadError) -> ApiError {
    match e {
        PayloadError::Io(io) if io.kind() == std::io::ErrorKind::TimedOut => {
            ApiError::RequestTimeout(io.to_string())
        }
        PayloadError::Overflow => ApiError::PayloadTooLarge("the body is too large".into()),
        other => ApiError::bad("body", format!("the body did not arrive whole: {other}")),
    }
}
