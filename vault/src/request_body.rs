//! Reading a request body within a size and a time limit, while it streams
//! in: an announced `Content-Length` over the limit is refused before a
//! byte is read, and a body that grows past it is refused as soon as it does.

use crate::oauth_error::OAuthError;
use axum::body::{Body, Bytes};
use axum::http::{header, HeaderMap, StatusCode};
use http_body_util::BodyExt as _;
use std::time::Duration;

/// The body, at most `max` bytes, received within `timeout`: else 413
/// (too large), 408 (too slow) or 400 (broken).
pub async fn read(
    headers: &HeaderMap,
    body: Body,
    max: usize,
    timeout: Duration,
) -> Result<Bytes, OAuthError> {
    let too_large = || {
        OAuthError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "invalid_request",
            format!("the request body is larger than {max} bytes"),
        )
    };
    let announced = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if announced.is_some_and(|n| n > max as u64) {
        return Err(too_large());
    }
    let collect = async {
        let mut body = body;
        let mut out = Vec::new();
        while let Some(frame) = body.frame().await {
            let frame = frame
                .map_err(|_| OAuthError::invalid_request("the request body could not be read"))?;
            if let Ok(data) = frame.into_data() {
                if out.len().saturating_add(data.len()) > max {
                    return Err(too_large());
                }
                out.extend_from_slice(&data);
            }
        }
        Ok(Bytes::from(out))
    };
    match tokio::time::timeout(timeout, collect).await {
        Ok(result) => result,
        Err(_) => Err(OAuthError::new(
            StatusCode::REQUEST_TIMEOUT,
            "invalid_request",
            format!(
                "the request body did not arrive within {} s",
                timeout.as_secs()
            ),
        )),
    }
}
