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
    AppendOutcome, AppendRequest, CaptureConfig, Clock, EventCounts, Lease, Orphaned, Purged,
    Retention, StoreError,
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
    /// A trace's analysis digest onto its row (ADR 028).
    PutAnalysis {
        tenant: String,
        id: TraceId,
        digest: Box<traceway_core::analysis::AnalysisDigest>,
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
}

// Queue slots are bounded (capacity × ~270 bytes); a shutdown message is rare.
#[allow(clippy::large_enum_variant)]
pub(crate) enum Msg {
    Op(Op, oneshot::Sender<Result<OpResult, StoreError>>),
    Shutdown(oneshot::Sender<()>),
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
