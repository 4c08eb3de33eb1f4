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

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use traceway_core::{State, TraceId};
    use traceway_store::{LeaseLost, StoreFailure};

    use super::*;
    use crate::otlp::{Failure, FailureKind};

    /// A store error as both protocols answer it.
    struct Case {
        kind: ErrorKind,
        message: String,
        rest: ApiError,
        otlp: Failure,
    }

    fn case<E: StoreFailure>(e: E) -> Case {
        Case {
            kind: e.kind(),
            message: e.to_string(),
            rest: ApiError::from_store(&e),
            otlp: Failure::from_store(&e),
        }
    }

    /// Real errors of every kind, from every family that has one.
    fn cases() -> Vec<Case> {
        let id = TraceId::new_v7();
        let lost = LeaseLost {
            name: "watchdog".into(),
            holder: "replica-a".into(),
            token: 7,
        };
        let transition = State::Completed
            .check_transition(&State::Running)
            .expect_err("a terminal trace cannot run again");
        let cause = || std::io::Error::other("disk I/O error on traces.db");
        let cases = vec![
            case(TraceError::NotFound(id)),
            case(TraceError::IdTaken(id)),
            case(TraceError::IllegalTransition(transition)),
            case(TraceError::BadCursor("x".into())),
            case(TraceError::TooManySpans {
                id,
                has: 100_000,
                adding: 1,
            }),
            case(KeyError::TenantFull),
            case(WorkflowError::ZeroTtl),
            case(TraceError::from(BackendError::overloaded(
                "write queue full",
            ))),
            case(LifecycleError::from(BackendError::unavailable_by(
                "redis",
                cause(),
            ))),
            case(LifecycleError::from(lost)),
            case(KeyError::from(BackendError::internal_by("sqlite", cause()))),
            case(BackendError::internal("unexpected writer reply")),
        ];
        for k in ErrorKind::ALL {
            assert!(cases.iter().any(|c| c.kind == k), "no case of {k:?}");
        }
        cases
    }

    #[test]
    fn every_store_error_kind_answers_its_rest_status_and_code() {
        for c in cases() {
            let (status, code, message) = match c.kind {
                ErrorKind::NotFound => (404, "not_found", c.message.as_str()),
                ErrorKind::IdTaken | ErrorKind::IllegalTransition | ErrorKind::LeaseLost => {
                    (409, "conflict", c.message.as_str())
                }
                ErrorKind::Invalid => (400, "invalid_argument", c.message.as_str()),
                ErrorKind::Overloaded => (429, "overloaded", "the store is busy; retry later"),
                ErrorKind::Unavailable => {
                    (503, "unavailable", "the store is unavailable; retry later")
                }
                ErrorKind::Internal => (500, "internal", "internal error"),
            };
            assert_eq!(
                (c.rest.status.as_u16(), c.rest.code, c.rest.message.as_str()),
                (status, code, message),
                "{:?}: {}",
                c.kind,
                c.message
            );
        }
    }

    #[test]
    fn every_store_error_kind_answers_its_otlp_status_and_grpc_code() {
        for c in cases() {
            let (kind, http, grpc, message) = match c.kind {
                ErrorKind::Invalid => (
                    FailureKind::BadData,
                    400,
                    tonic::Code::InvalidArgument,
                    c.message.as_str(),
                ),
                ErrorKind::Overloaded => (
                    FailureKind::Overloaded,
                    429,
                    tonic::Code::ResourceExhausted,
                    "the store is busy; retry later",
                ),
                ErrorKind::Unavailable => (
                    FailureKind::Unavailable,
                    503,
                    tonic::Code::Unavailable,
                    "the store is unavailable; retry later",
                ),
                ErrorKind::NotFound
                | ErrorKind::IdTaken
                | ErrorKind::IllegalTransition
                | ErrorKind::LeaseLost
                | ErrorKind::Internal => (
                    FailureKind::Internal,
                    500,
                    tonic::Code::Internal,
                    "internal error",
                ),
            };
            let f = &c.otlp;
            assert_eq!(
                (
                    f.kind,
                    f.http_status().as_u16(),
                    f.grpc_code(),
                    f.message.as_str()
                ),
                (kind, http, grpc, message),
                "{:?}: {}",
                c.kind,
                c.message
            );
            assert_eq!(f.is_retryable(), c.kind.is_retryable(), "{:?}", c.kind);
        }
    }

    /// A log sink for one test.
    #[derive(Clone, Default)]
    struct Logs(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Logs {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .extend_from_slice(b);
            Ok(b.len())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl Logs {
        fn capture<T>(&self, f: impl FnOnce() -> T) -> T {
            let sink = self.clone();
            let subscriber = tracing_subscriber::fmt()
                .with_ansi(false)
                .with_writer(move || sink.clone())
                .finish();
            tracing::subscriber::with_default(subscriber, f)
        }

        fn text(&self) -> String {
            String::from_utf8_lossy(&self.0.lock().unwrap_or_else(|e| e.into_inner())).into_owned()
        }
    }

    #[test]
    fn an_internal_failure_answers_no_cause_but_logs_its_chain() {
        let cause = "database disk image is malformed (traces.db page 42)";
        let e = TraceError::from(BackendError::internal_by(
            "sqlite",
            std::io::Error::other(cause),
        ));
        let logs = Logs::default();
        let (rest, otlp) = logs.capture(|| (ApiError::from_store(&e), Failure::from_store(&e)));
        // What the client gets (the JSON body's code and message) names no cause.
        assert_eq!(
            (rest.code, rest.message.as_str()),
            ("internal", "internal error")
        );
        assert_eq!(otlp.message, "internal error");
        let logged = logs.text();
        for line in ["internal error", "otlp export failed"] {
            let line = logged
                .lines()
                .find(|l| l.contains(line))
                .unwrap_or_else(|| panic!("no {line:?} in\n{logged}"));
            assert!(
                line.contains(&format!("internal store error: sqlite: {cause}")),
                "the log line has the cause: {line}"
            );
        }
    }

    #[test]
    fn an_unavailable_store_logs_the_driver_error_it_retries_on() {
        let e = LifecycleError::from(BackendError::unavailable_by(
            "redis",
            std::io::Error::from(std::io::ErrorKind::ConnectionRefused),
        ));
        let logs = Logs::default();
        let rest = logs.capture(|| ApiError::from_store(&e));
        assert_eq!(rest.message, "the store is unavailable; retry later");
        let logged = logs.text();
        assert!(
            logged.contains("store unavailable: redis: connection refused"),
            "{logged}"
        );
    }
}
