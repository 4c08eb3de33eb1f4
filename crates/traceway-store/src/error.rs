//! What the contract's operations fail with: one error type per family of the contract
//! ([`TraceError`] for [`crate::Traces`], [`LifecycleError`] for [`crate::Lifecycle`],
//! [`BackendError`] for [`crate::Leases`], [`WorkflowError`] for
//! [`crate::WorkflowContexts`], [`KeyError`] for [`crate::ApiKeys`]; the live feed cannot
//! fail), each with the refusals its family really has, and one [`BackendError`] that
//! all of them share for the store's own failures. Every one is a [`StoreFailure`]: its
//! [`ErrorKind`] is the one thing the REST and OTLP mappings and the metrics look at.

use std::error::Error;
use std::fmt;
use std::sync::Arc;

use traceway_core::workflow::WorkflowContextError;
use traceway_core::{State, StateError, TraceId};

/// What kind of failure a store error is: the one thing the REST and OTLP mappings (and
/// the metrics' error label) look at.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// The trace does not exist for this tenant, or has expired.
    NotFound,
    /// A live trace already has this id.
    IdTaken,
    /// The state change is not allowed.
    IllegalTransition,
    /// The request is not valid (a bad cursor, say).
    Invalid,
    /// The store cannot take more work now: retry later.
    Overloaded,
    /// The store is not reachable or is shutting down: retry later.
    Unavailable,
    /// The caller's lease is no longer current.
    LeaseLost,
    /// Anything else; details are logged, not shown to clients.
    Internal,
}

impl ErrorKind {
    /// Every kind, for tables over them.
    pub const ALL: [ErrorKind; 8] = [
        ErrorKind::NotFound,
        ErrorKind::IdTaken,
        ErrorKind::IllegalTransition,
        ErrorKind::Invalid,
        ErrorKind::Overloaded,
        ErrorKind::Unavailable,
        ErrorKind::LeaseLost,
        ErrorKind::Internal,
    ];

    /// A stable lower-case name (`not_found`, `id_taken`, …), for labels and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::NotFound => "not_found",
            ErrorKind::IdTaken => "id_taken",
            ErrorKind::IllegalTransition => "illegal_transition",
            ErrorKind::Invalid => "invalid",
            ErrorKind::Overloaded => "overloaded",
            ErrorKind::Unavailable => "unavailable",
            ErrorKind::LeaseLost => "lease_lost",
            ErrorKind::Internal => "internal",
        }
    }

    /// Whether the same request may succeed later (overload, unavailability).
    pub fn is_retryable(self) -> bool {
        matches!(self, ErrorKind::Overloaded | ErrorKind::Unavailable)
    }
}

/// An error of the store contract: every family's error is one, so a protocol maps all of
/// them with one function over [`StoreFailure::kind`].
pub trait StoreFailure: Error + Send + Sync + 'static {
    /// Its kind.
    fn kind(&self) -> ErrorKind;
}

/// The cause a backend failure keeps: the driver's error (rusqlite's, redis's, an I/O or
/// JSON error), shared so that one failure can answer every command of a write group.
pub type Cause = Arc<dyn Error + Send + Sync + 'static>;

/// The store's own failure, shared by every family: its message says what failed, its
/// [`Error::source`] is the driver's error when there is one. The message and the cause
/// are for logs; clients see only the kind's fixed answer.
#[derive(Debug, Clone, thiserror::Error)]
pub enum BackendError {
    /// The store cannot take more work now; try again later.
    #[error("store overloaded: {what}")]
    Overloaded {
        /// What is full.
        what: String,
    },
    /// The store is not reachable or is shutting down.
    #[error("store unavailable: {what}")]
    Unavailable {
        /// What could not be reached.
        what: String,
        /// The driver's error.
        #[source]
        cause: Option<Cause>,
    },
    /// Anything else (I/O, corruption, a stored value that does not decode).
    #[error("internal store error: {what}")]
    Internal {
        /// What failed.
        what: String,
        /// The driver's error.
        #[source]
        cause: Option<Cause>,
    },
}

impl BackendError {
    /// [`BackendError::Overloaded`].
    pub fn overloaded(what: impl Into<String>) -> BackendError {
        BackendError::Overloaded { what: what.into() }
    }

    /// [`BackendError::Unavailable`] without a cause.
    pub fn unavailable(what: impl Into<String>) -> BackendError {
        BackendError::Unavailable {
            what: what.into(),
            cause: None,
        }
    }

    /// [`BackendError::Internal`] without a cause.
    pub fn internal(what: impl Into<String>) -> BackendError {
        BackendError::Internal {
            what: what.into(),
            cause: None,
        }
    }

    /// [`BackendError::Unavailable`] caused by `cause`.
    pub fn unavailable_by(
        what: impl Into<String>,
        cause: impl Error + Send + Sync + 'static,
    ) -> BackendError {
        BackendError::Unavailable {
            what: what.into(),
            cause: Some(Arc::new(cause)),
        }
    }

    /// [`BackendError::Internal`] caused by `cause`.
    pub fn internal_by(
        what: impl Into<String>,
        cause: impl Error + Send + Sync + 'static,
    ) -> BackendError {
        BackendError::Internal {
            what: what.into(),
            cause: Some(Arc::new(cause)),
        }
    }
}

impl StoreFailure for BackendError {
    fn kind(&self) -> ErrorKind {
        match self {
            BackendError::Overloaded { .. } => ErrorKind::Overloaded,
            BackendError::Unavailable { .. } => ErrorKind::Unavailable,
            BackendError::Internal { .. } => ErrorKind::Internal,
        }
    }
}

/// What the [`crate::Traces`] operations fail with.
#[derive(Debug, Clone, thiserror::Error)]
pub enum TraceError {
    /// The trace does not exist for this tenant, or has expired.
    #[error("trace {0} not found")]
    NotFound(TraceId),
    /// A live trace already has this id.
    #[error("trace {0} already exists")]
    IdTaken(TraceId),
    /// The state change is not allowed (a terminal trace, or a return to `RECEIVED`).
    #[error(transparent)]
    IllegalTransition(#[from] StateError),
    /// A trace cannot be created in a terminal state.
    #[error("a trace cannot be created {0}; create it, then change its state")]
    CreatedTerminal(State),
    /// The append would pass [`crate::MAX_SPANS_PER_TRACE`] (ADR 025).
    #[error(
        "trace {id} has {has} spans; {adding} more would pass the limit of {} spans per trace",
        crate::MAX_SPANS_PER_TRACE
    )]
    TooManySpans {
        /// The trace.
        id: TraceId,
        /// The spans it has.
        has: u64,
        /// The spans the append brought.
        adding: u64,
    },
    /// A listing cursor that no page returned.
    #[error("invalid cursor {0:?}")]
    BadCursor(String),
    /// The store failed.
    #[error(transparent)]
    Backend(#[from] BackendError),
}

impl StoreFailure for TraceError {
    fn kind(&self) -> ErrorKind {
        match self {
            TraceError::NotFound(_) => ErrorKind::NotFound,
            TraceError::IdTaken(_) => ErrorKind::IdTaken,
            TraceError::IllegalTransition(_) => ErrorKind::IllegalTransition,
            TraceError::CreatedTerminal(_)
            | TraceError::TooManySpans { .. }
            | TraceError::BadCursor(_) => ErrorKind::Invalid,
            TraceError::Backend(e) => e.kind(),
        }
    }
}

/// A fenced write was refused: its lease (its fencing token) is no longer current,
/// because another holder took it or it lapsed. Nothing was changed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("lease lost: lease {name} token {token} is no longer held by {holder}")]
pub struct LeaseLost {
    /// The lease.
    pub name: String,
    /// Who presented it.
    pub holder: String,
    /// The fencing token presented.
    pub token: u64,
}

impl LeaseLost {
    /// The refusal of `fence`.
    pub fn of(fence: &crate::Lease) -> LeaseLost {
        LeaseLost {
            name: fence.name.clone(),
            holder: fence.holder.clone(),
            token: fence.token,
        }
    }
}

/// What the [`crate::Lifecycle`] operations fail with.
#[derive(Debug, Clone, thiserror::Error)]
pub enum LifecycleError {
    /// The sweep's or purge's fence is no longer current.
    #[error(transparent)]
    LeaseLost(#[from] LeaseLost),
    /// The store failed.
    #[error(transparent)]
    Backend(#[from] BackendError),
}

impl StoreFailure for LifecycleError {
    fn kind(&self) -> ErrorKind {
        match self {
            LifecycleError::LeaseLost(_) => ErrorKind::LeaseLost,
            LifecycleError::Backend(e) => e.kind(),
        }
    }
}

/// What the [`crate::WorkflowContexts`] operations fail with.
#[derive(Debug, Clone, thiserror::Error)]
pub enum WorkflowError {
    /// The instance id or the context is not valid; the message names the field.
    #[error(transparent)]
    Invalid(#[from] WorkflowContextError),
    /// A context must be kept for some time.
    #[error("ttl must be positive")]
    ZeroTtl,
    /// A stats cursor that no page returned.
    #[error("cursor {0:?} is not valid")]
    BadCursor(String),
    /// The store failed.
    #[error(transparent)]
    Backend(#[from] BackendError),
}

impl StoreFailure for WorkflowError {
    fn kind(&self) -> ErrorKind {
        match self {
            WorkflowError::Invalid(_) | WorkflowError::ZeroTtl | WorkflowError::BadCursor(_) => {
                ErrorKind::Invalid
            }
            WorkflowError::Backend(e) => e.kind(),
        }
    }
}

/// What the [`crate::ApiKeys`] operations fail with.
#[derive(Debug, Clone, thiserror::Error)]
pub enum KeyError {
    /// A key with this public id exists.
    #[error("key {0} already exists")]
    KeyIdExists(String),
    /// The tenant holds [`crate::MAX_KEYS_PER_TENANT`] keys already.
    #[error(
        "tenant holds {} keys, the most allowed; revoked keys count too",
        crate::MAX_KEYS_PER_TENANT
    )]
    TenantFull,
    /// The store failed.
    #[error(transparent)]
    Backend(#[from] BackendError),
}

impl StoreFailure for KeyError {
    fn kind(&self) -> ErrorKind {
        match self {
            KeyError::KeyIdExists(_) | KeyError::TenantFull => ErrorKind::Invalid,
            KeyError::Backend(e) => e.kind(),
        }
    }
}

/// Why a store could not be opened.
#[derive(Debug, Clone, thiserror::Error)]
pub enum OpenError {
    /// The configuration is not usable (a malformed Redis URL, no cluster nodes).
    #[error("{0}")]
    Config(String),
    /// The backend failed.
    #[error(transparent)]
    Backend(#[from] BackendError),
}

/// Shows an error with its chain of sources, `outer: cause: cause's cause`, for logs: a
/// backend failure's message says what failed, its sources say why.
pub struct ErrorChain<'a>(pub &'a (dyn Error + 'static));

impl fmt::Display for ErrorChain<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)?;
        let mut next = self.0.source();
        while let Some(e) = next {
            write!(f, ": {e}")?;
            next = e.source();
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sqlite_failure() -> rusqlite::Error {
        rusqlite::Error::SqliteFailure(
            rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_IOERR),
            Some("disk I/O error on traces.db".into()),
        )
    }

    #[test]
    fn a_backend_failure_keeps_its_cause_as_its_source() {
        let e = TraceError::from(BackendError::internal_by("sqlite", sqlite_failure()));
        assert_eq!(e.kind(), ErrorKind::Internal);
        // The message says what failed; the cause is one source down, for the log.
        assert_eq!(e.to_string(), "internal store error: sqlite");
        let cause = e.source().expect("the driver's error is the source");
        assert!(
            cause.to_string().contains("disk I/O error on traces.db"),
            "{cause}"
        );
        let logged = ErrorChain(&e).to_string();
        assert!(
            logged.starts_with("internal store error: sqlite: ")
                && logged.contains("disk I/O error on traces.db"),
            "{logged}"
        );
        // A write group's failure answers each of its commands: the clone keeps the cause.
        let again = e.clone();
        assert!(again.source().is_some());
    }

    #[test]
    fn a_refusal_shows_its_reason_and_its_kind() {
        let id = TraceId::new_v7();
        let cases: Vec<(Box<dyn StoreFailure>, ErrorKind, String)> = vec![
            (
                Box::new(TraceError::NotFound(id)),
                ErrorKind::NotFound,
                format!("trace {id} not found"),
            ),
            (
                Box::new(TraceError::IdTaken(id)),
                ErrorKind::IdTaken,
                format!("trace {id} already exists"),
            ),
            (
                Box::new(TraceError::TooManySpans {
                    id,
                    has: 99_999,
                    adding: 2,
                }),
                ErrorKind::Invalid,
                format!("trace {id} has 99999 spans; 2 more would pass the limit of 100000 spans per trace"),
            ),
            (
                Box::new(TraceError::BadCursor("x".into())),
                ErrorKind::Invalid,
                "invalid cursor \"x\"".into(),
            ),
            (
                Box::new(LifecycleError::from(LeaseLost {
                    name: "watchdog".into(),
                    holder: "a".into(),
                    token: 3,
                })),
                ErrorKind::LeaseLost,
                "lease lost: lease watchdog token 3 is no longer held by a".into(),
            ),
            (
                Box::new(WorkflowError::ZeroTtl),
                ErrorKind::Invalid,
                "ttl must be positive".into(),
            ),
            (
                Box::new(KeyError::TenantFull),
                ErrorKind::Invalid,
                "tenant holds 1000 keys, the most allowed; revoked keys count too".into(),
            ),
            (
                Box::new(KeyError::from(BackendError::overloaded("write queue full"))),
                ErrorKind::Overloaded,
                "store overloaded: write queue full".into(),
            ),
            (
                Box::new(WorkflowError::from(BackendError::unavailable(
                    "store is shut down",
                ))),
                ErrorKind::Unavailable,
                "store unavailable: store is shut down".into(),
            ),
        ];
        for (e, kind, message) in cases {
            assert_eq!(e.kind(), kind, "{e}");
            assert_eq!(e.to_string(), message);
        }
    }

    #[test]
    fn kind_labels_are_stable() {
        let labels: Vec<&str> = ErrorKind::ALL.iter().map(|k| k.as_str()).collect();
        assert_eq!(
            labels,
            [
                "not_found",
                "id_taken",
                "illegal_transition",
                "invalid",
                "overloaded",
                "unavailable",
                "lease_lost",
                "internal"
            ]
        );
    }
}
