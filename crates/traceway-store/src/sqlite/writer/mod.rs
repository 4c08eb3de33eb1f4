//! The single writer: one thread owns the write connection, takes commands from a bounded
//! queue and runs every command that is waiting as one transaction (group commit); every
//! reply is sent only after the transaction commits. It keeps the traces it recently wrote
//! in a [`TraceCache`], so a command needs no lookups, and writes a command's events with
//! one multi-row INSERT.
//!
//! `run` is the loop, `replies` the reply thread, `operations` what each command does,
//! `persistence` the load and persist around the write model (`crate::write`), and
//! `lifecycle` the sweep and the purge.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rusqlite::types::ToSql;
use rusqlite::{params, OptionalExtension, Transaction};
use tokio::sync::{mpsc, oneshot};
use traceway_core::{
    Event, MessageFill, NewTrace, Span, State, Timestamp, Trace, TraceId, TracePatch,
};

use super::cache::{CachedTrace, PendingFills, TraceCache};
use super::row::TraceRow;
use super::schema::internal;
use crate::write::{Loaded, Model, Orphan, PendingTotals, SpanState, Stored, Written};
use crate::{
    AppendOutcome, AppendRequest, BackendError, CaptureConfig, Clock, EventCounts, KeyError, Lease,
    LeaseLost, LifecycleError, Orphaned, Purged, Retention, TraceError, WorkflowError,
};

mod lifecycle;
mod operations;
mod persistence;
mod replies;
mod run;

use self::lifecycle::*;
use self::operations::*;
use self::persistence::*;
use self::replies::*;
pub(crate) use self::run::run;

pub(crate) enum Op {
    /// A workflow-context write (`sqlite/workflows.rs`).
    Workflow(super::workflows::WorkflowOp),
    Create {
        tenant: String,
        new: NewTrace,
    },
    Append(AppendRequest),
    Update {
        tenant: String,
        id: TraceId,
        patch: TracePatch,
    },
    Delete {
        tenant: String,
        id: TraceId,
    },
    DeleteEndedBefore {
        tenant: String,
        cutoff: Timestamp,
        limit: u32,
    },
    AcquireLease {
        name: String,
        holder: String,
        ttl: Duration,
    },
    RenewLease {
        lease: Lease,
        ttl: Duration,
    },
    ReleaseLease {
        lease: Lease,
    },
    SweepOrphans {
        fence: Lease,
        orphan_after: Duration,
        limit: u32,
    },
    PurgeExpired {
        fence: Lease,
        max_rows: u32,
    },
    /// An API-key write (`sqlite/keys.rs`).
    Keys(super::keys::KeyOp),
    /// Traces' analysis digests onto their rows (ADR 028), many in one command.
    PutAnalyses {
        digests: Vec<(String, TraceId, traceway_core::analysis::AnalysisDigest)>,
    },
}

/// A trace the sweep ended, with what the hub publishes for it.
pub(crate) struct OrphanedTrace {
    pub orphan: Orphaned,
    pub trace: Trace,
    pub events: Vec<Event>,
}

// Replies travel once through a oneshot; the size difference costs nothing worth a box.
#[allow(clippy::large_enum_variant)]
pub(crate) enum OpResult {
    Trace(Trace, Vec<Event>),
    /// The outcome, and the trace as it is after the append with the events it wrote
    /// (for the hub).
    Append(AppendOutcome, Box<Trace>, Vec<Event>),
    Deleted(bool),
    Count(u64),
    Lease(Option<Lease>),
    Orphaned(Vec<OrphanedTrace>),
    Purged(Purged),
    Keys(super::keys::KeyReply),
    /// Per digest of [`Op::PutAnalyses`], whether it was stored.
    Stored(Vec<bool>),
}

// Queue slots are bounded (capacity × ~270 bytes); a shutdown message is rare.
#[allow(clippy::large_enum_variant)]
pub(crate) enum Msg {
    Op(Op, oneshot::Sender<Result<OpResult, OpError>>),
    Shutdown(oneshot::Sender<()>),
}

/// What a command fails with: a refusal of its family, or a backend failure. An internal
/// backend failure fails the command's whole group. Each family's error is taken back out
/// at the store's method (`From<OpError>`); a refusal of another family there would be a
/// bug, and is an internal error.
#[derive(Debug, thiserror::Error)]
pub(crate) enum OpError {
    #[error(transparent)]
    Backend(BackendError),
    #[error(transparent)]
    Trace(TraceError),
    #[error(transparent)]
    LeaseLost(LeaseLost),
    #[error(transparent)]
    Key(KeyError),
}

impl From<BackendError> for OpError {
    fn from(e: BackendError) -> OpError {
        OpError::Backend(e)
    }
}

impl From<TraceError> for OpError {
    fn from(e: TraceError) -> OpError {
        match e {
            TraceError::Backend(e) => OpError::Backend(e),
            e => OpError::Trace(e),
        }
    }
}

impl From<LifecycleError> for OpError {
    fn from(e: LifecycleError) -> OpError {
        match e {
            LifecycleError::Backend(e) => OpError::Backend(e),
            LifecycleError::LeaseLost(e) => OpError::LeaseLost(e),
        }
    }
}

impl From<KeyError> for OpError {
    fn from(e: KeyError) -> OpError {
        match e {
            KeyError::Backend(e) => OpError::Backend(e),
            e => OpError::Key(e),
        }
    }
}

impl OpError {
    /// The backend failure, or a refusal that the caller's family cannot have as one.
    fn into_backend(self) -> BackendError {
        match self {
            OpError::Backend(e) => e,
            other => BackendError::internal(format!("unexpected writer refusal: {other}")),
        }
    }
}

impl From<OpError> for BackendError {
    fn from(e: OpError) -> BackendError {
        e.into_backend()
    }
}

impl From<OpError> for TraceError {
    fn from(e: OpError) -> TraceError {
        match e {
            OpError::Trace(e) => e,
            other => other.into_backend().into(),
        }
    }
}

impl From<OpError> for LifecycleError {
    fn from(e: OpError) -> LifecycleError {
        match e {
            OpError::LeaseLost(e) => e.into(),
            other => other.into_backend().into(),
        }
    }
}

impl From<OpError> for KeyError {
    fn from(e: OpError) -> KeyError {
        match e {
            OpError::Key(e) => e,
            other => other.into_backend().into(),
        }
    }
}

impl From<OpError> for WorkflowError {
    fn from(e: OpError) -> WorkflowError {
        e.into_backend().into()
    }
}

pub(crate) struct WriterCtx {
    pub clock: Arc<dyn Clock>,
    pub retention: Retention,
    pub capture: CaptureConfig,
    pub max_group: usize,
    /// Frames in the WAL, as the checkpointer last saw them.
    pub wal_frames: Arc<std::sync::atomic::AtomicU64>,
    pub wal_limit_frames: u64,
    pub cache_capacity: usize,
    pub hub: crate::InProcessHub,
}

impl WriterCtx {
    fn model(&self, now: Timestamp) -> Model {
        Model {
            now,
            retention: self.retention,
            capture: self.capture.clone(),
        }
    }
}
