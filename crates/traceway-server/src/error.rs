//! Errors as the API shows them: `{"error": {"code", "message"}}` with the right status.
//! One function, [`ApiError::from_store`], decides statuses for every store error (each
//! family's [`From`] goes through it) from its [`StoreFailure::kind`] alone; 5xx details
//! are logged with their chain of causes and never sent.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use traceway_store::{
    BackendError, ErrorChain, ErrorKind, KeyError, LifecycleError, StoreFailure, TraceError,
    WorkflowError,
};

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

impl ApiError {
    /// The answer to a store error, by its kind. Its message is the error's own for a
    /// refusal (4xx); a 5xx answers a fixed message and logs the error with its causes.
    pub fn from_store<E: StoreFailure>(e: &E) -> ApiError {
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
                tracing::warn!(reason = %ErrorChain(e), "store overloaded");
                ApiError {
                    status: StatusCode::TOO_MANY_REQUESTS,
                    code: "overloaded",
                    message: "the store is busy; retry later".into(),
                }
            }
            ErrorKind::Unavailable => {
                tracing::warn!(reason = %ErrorChain(e), "store unavailable");
                ApiError {
                    status: StatusCode::SERVICE_UNAVAILABLE,
                    code: "unavailable",
                    message: "the store is unavailable; retry later".into(),
                }
            }
            ErrorKind::Internal => ApiError::internal(ErrorChain(e)),
        }
    }
}

macro_rules! from_store_error {
    ($($t:ty),*) => {$(
        impl From<$t> for ApiError {
            fn from(e: $t) -> ApiError {
                ApiError::from_store(&e)
            }
        }
    )*};
}

from_store_error!(
    TraceError,
    LifecycleError,
    BackendError,
    WorkflowError,
    KeyError
);

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
