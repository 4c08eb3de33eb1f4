//! Errors as the API shows them: `{"error": {"code", "message"}}` with the right status.
//! One function, [`ApiError::from`] on a [`StoreError`], decides statuses for store
//! failures; 5xx details are logged and never sent.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use traceway_store::{ErrorKind, StoreError};

/// An error answer.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// Stable machine-readable code.
    pub code: &'static str,
    /// What went wrong, for a person.
    pub message: String,
}

impl ApiError {
    /// 400.
    pub fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError {
            status: StatusCode::BAD_REQUEST,
            code: "invalid_argument",
            message: message.into(),
        }
    }

    /// 404.
    pub fn not_found(message: impl Into<String>) -> ApiError {
        ApiError {
            status: StatusCode::NOT_FOUND,
            code: "not_found",
            message: message.into(),
        }
    }

    /// 413.
    pub fn too_large(limit: usize) -> ApiError {
        ApiError {
            status: StatusCode::PAYLOAD_TOO_LARGE,
            code: "payload_too_large",
            message: format!("request body is larger than the limit of {limit} bytes"),
        }
    }

    /// 408: the body did not arrive within `--body-read-timeout` (ADR 033).
    pub fn request_timeout(t: &crate::transport::BodyTimeout) -> ApiError {
        ApiError {
            status: StatusCode::REQUEST_TIMEOUT,
            code: "request_timeout",
            message: t.to_string(),
        }
    }

    /// 415.
    pub fn unsupported_media_type(message: impl Into<String>) -> ApiError {
        ApiError {
            status: StatusCode::UNSUPPORTED_MEDIA_TYPE,
            code: "unsupported_media_type",
            message: message.into(),
        }
    }

    /// 500, with the detail logged only.
    pub fn internal(detail: impl std::fmt::Display) -> ApiError {
        tracing::error!(error = %detail, "internal error");
        ApiError {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            code: "internal",
            message: "internal error".into(),
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> ApiError {
        let conflict = |message: String| ApiError {
            status: StatusCode::CONFLICT,
            code: "conflict",
            message,
        };
        match e.kind() {
            ErrorKind::NotFound => ApiError::not_found(e.to_string()),
            ErrorKind::IdTaken | ErrorKind::IllegalTransition => conflict(e.to_string()),
            // Only the watchdog's fenced writes see this; no route does.
            ErrorKind::LeaseLost => conflict(e.to_string()),
            ErrorKind::Invalid => ApiError::bad_request(e.to_string()),
            ErrorKind::Overloaded => {
                tracing::warn!(reason = %e, "store overloaded");
                ApiError {
                    status: StatusCode::TOO_MANY_REQUESTS,
                    code: "overloaded",
                    message: "the store is busy; retry later".into(),
                }
            }
            ErrorKind::Unavailable => {
                tracing::warn!(reason = %e, "store unavailable");
                ApiError {
                    status: StatusCode::SERVICE_UNAVAILABLE,
                    code: "unavailable",
                    message: "the store is unavailable; retry later".into(),
                }
            }
            ErrorKind::Internal => ApiError::internal(e),
        }
    }
}

/// Seconds a client should wait before retrying after a 429 or 503 (the `Retry-After`
/// header, and OTLP/gRPC's `RetryInfo`).
pub const RETRY_AFTER_SECS: u32 = 1;

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = Json(crate::openapi::ErrorBody {
            error: crate::openapi::ErrorDetail {
                code: std::borrow::Cow::Borrowed(self.code),
                message: self.message,
            },
        });
        let mut resp = (self.status, body).into_response();
        if matches!(
            self.status,
            StatusCode::TOO_MANY_REQUESTS | StatusCode::SERVICE_UNAVAILABLE
        ) {
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(RETRY_AFTER_SECS));
        }
        resp
    }
}
