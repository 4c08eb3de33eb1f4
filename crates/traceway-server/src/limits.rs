//! Request-head limits answered with the JSON error (issue 15, failure 3.9): a URI over
//! [`MAX_URI_BYTES`] is 414, headers over [`MAX_HEADERS`] or [`MAX_HEADER_BYTES`] are 431,
//! and a `Content-Length` over `max_body_bytes` is 413 before any of the body is read. hyper
//! refused long URIs and large heads itself with an empty body; its own limits are set
//! above these (see `transport.rs`), so only a URI over hyper's fixed 64 KiB still gets
//! hyper's empty 414 (ADR 033).

use axum::extract::{Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::error::ApiError;
use crate::otlp::Failure;
use crate::AppState;

/// Longest request target (path and query) accepted, in bytes.
pub const MAX_URI_BYTES: usize = 16 * 1024;

/// Most header fields a request may carry.
pub const MAX_HEADERS: usize = 100;

/// Largest total size of a request's header names and values, in bytes.
pub const MAX_HEADER_BYTES: usize = 64 * 1024;

/// The middleware; outermost, so these refusals cost nothing else.
pub async fn middleware(State(app): State<AppState>, req: Request, next: Next) -> Response {
    let uri_len = req.uri().path_and_query().map_or(0, |pq| pq.as_str().len());
    if uri_len > MAX_URI_BYTES {
        return ApiError {
            status: StatusCode::URI_TOO_LONG,
            code: "uri_too_long",
            message: format!("the request target is {uri_len} bytes; the limit is {MAX_URI_BYTES}"),
        }
        .into_response();
    }
    let headers = req.headers();
    let header_bytes: usize = headers
        .iter()
        .map(|(k, v)| k.as_str().len() + v.len())
        .sum();
    if headers.len() > MAX_HEADERS || header_bytes > MAX_HEADER_BYTES {
        return ApiError {
            status: StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            code: "headers_too_large",
            message: format!(
                "{} header fields of {header_bytes} bytes; the limits are {MAX_HEADERS} fields \
                 and {MAX_HEADER_BYTES} bytes",
                headers.len()
            ),
        }
        .into_response();
    }
    let limit = app.config.max_body_bytes;
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        // OTLP/HTTP answers in its own shape (a google.rpc.Status), everything else JSON.
        if req.uri().path().starts_with("/v1/") {
            return crate::otlp::http::refuse(
                req.headers(),
                Failure::too_large("request body", limit),
            );
        }
        return ApiError::too_large(limit).into_response();
    }
    next.run(req).await
}
