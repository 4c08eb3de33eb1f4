//! The single writer: one thread owns the write connection, takes commands from a bounded
//! queue and runs every command that is waiting as one transaction (group commit). Each
//! command runs inside its own savepoint, so one refused command does not undo the others;
//! every reply is sent only after the transaction commits.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rusqlite::{params, OptionalExtension, Transaction};
use tokio::sync::{mpsc, oneshot};
use traceway_core::{
    ingest, strip_event_body, strip_span, Event, EventBody, EventInput, NewTrace, Rollups, Span,
    SpanChange, State, StateChange, Timestamp, Trace, TraceEnded, TraceId, TracePatch,
    TraceStarted,
};

use super::row::{read_trace_row, TraceRow, TRACE_COLUMNS};
use super::schema::internal;
use crate::{AppendOutcome, AppendRequest, CaptureConfig, Clock, Retention, StoreError};

pub(crate) enum Op {
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
}

// Replies travel once through a oneshot; the size difference costs nothing worth a box.
#[allow(clippy::large_enum_variant)]
pub(crate) enum OpResult {
    Trace(Trace, Vec<Event>),
    Append(AppendOutcome),
    Deleted(bool),
    Count(u64),
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
    pub wal_path: std::path::PathBuf,
    pub wal_limit_bytes: u64,
}

/// Runs until a `Shutdown` arrives or every sender is gone; commands queued before the
/// shutdown are still written.
/// Longest a group waits for more commands before it commits.
const GATHER_WAIT: Duration = Duration::from_micros(200);

pub(crate) fn run(mut conn: rusqlite::Connection, mut rx: mpsc::Receiver<Msg>, ctx: WriterCtx) {
    let mut group = Vec::with_capacity(ctx.max_group);
    let mut shutdown_replies = Vec::new();
    let mut groups: u64 = 0;
    let mut peak: usize = 1;
    loop {
        let Some(first) = rx.blocking_recv() else {
            break;
        };
        let mut push = |m: Msg, group: &mut Vec<_>| match m {
            Msg::Op(op, reply) => group.push((op, reply)),
            Msg::Shutdown(reply) => shutdown_replies.push(reply),
        };
        push(first, &mut group);
        // Gather: when recent groups show concurrent writers, wait briefly (yielding the
        // core to them) until the group is as large as the recent peak. Fewer, larger
        // commits; a lone writer (peak 1) never waits.
        let deadline = Instant::now() + GATHER_WAIT;
        while group.len() < ctx.max_group {
            match rx.try_recv() {
                Ok(m) => push(m, &mut group),
                Err(mpsc::error::TryRecvError::Empty)
                    if group.len() < peak && Instant::now() < deadline =>
                {
                    std::thread::yield_now()
                }
                Err(_) => break,
            }
        }
        // The peak decays so a burst does not make later, quieter groups wait.
        peak = group.len().max(peak - peak / 8).max(1);
        if !group.is_empty() {
            commit_group(&mut conn, &mut group, &ctx);
            groups += 1;
            if groups % 256 == 0 {
                limit_wal(&conn, &ctx);
            }
        }
        if !shutdown_replies.is_empty() {
            // Refuse new work, then write what was already queued.
            rx.close();
            while let Ok(m) = rx.try_recv() {
                if let Msg::Op(op, reply) = m {
                    group.push((op, reply));
                    if group.len() >= ctx.max_group {
                        commit_group(&mut conn, &mut group, &ctx);
                    }
                }
            }
            if !group.is_empty() {
                commit_group(&mut conn, &mut group, &ctx);
            }
            break;
        }
    }
    if let Err(e) = conn.execute_batch("PRAGMA wal_checkpoint(TRUNCATE)") {
        tracing::warn!(error = %e, "checkpoint at shutdown failed");
    }
    drop(conn);
    for reply in shutdown_replies {
        let _ = reply.send(());
    }
}

/// Checkpoints run on their own thread (see `checkpointer`); should they fall behind, the
/// writer itself checkpoints once the WAL passes `wal_limit_bytes`, so it stays bounded.
fn limit_wal(conn: &rusqlite::Connection, ctx: &WriterCtx) {
    let size = std::fs::metadata(&ctx.wal_path)
        .map(|m| m.len())
        .unwrap_or(0);
    if size > ctx.wal_limit_bytes {
        tracing::warn!(
            wal_bytes = size,
            "write-ahead log over its limit; checkpointing in the writer"
        );
        if let Err(e) = conn.execute_batch("PRAGMA wal_checkpoint(RESTART)") {
            tracing::warn!(error = %e, "checkpoint failed");
        }
    }
}

type Pending = (Op, oneshot::Sender<Result<OpResult, StoreError>>);

/// Runs a group in one transaction. Commands refuse (404, 409, 400) before they write
/// anything, so a refusal needs no rollback; an internal error (I/O, corruption) rolls
/// back the whole group and every command in it fails unacknowledged. Per-command
/// savepoints would isolate that rare case but cost a sub-journal copy of every page a
/// command touches (ADR 002).
fn commit_group(conn: &mut rusqlite::Connection, group: &mut Vec<Pending>, ctx: &WriterCtx) {
    let now = ctx.clock.now();
    let tx = match conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate) {
        Ok(tx) => tx,
        Err(e) => {
            tracing::error!(error = %e, "begin failed");
            for (_, reply) in group.drain(..) {
                let _ = reply.send(Err(StoreError::Internal(e.to_string())));
            }
            return;
        }
    };
    let mut results = Vec::with_capacity(group.len());
    let mut failure: Option<String> = None;
    for (op, reply) in group.drain(..) {
        if failure.is_some() {
            results.push((
                reply,
                Err(StoreError::Internal("aborted with its write group".into())),
            ));
            continue;
        }
        let r = execute(&tx, op, now, ctx);
        if let Err(StoreError::Internal(m)) = &r {
            failure = Some(m.clone());
        }
        results.push((reply, r));
    }
    let outcome = match failure {
        Some(m) => Err(m),
        None => tx.commit().map_err(|e| e.to_string()),
    };
    match outcome {
        Ok(()) => {
            for (reply, r) in results {
                let _ = reply.send(r);
            }
        }
        Err(m) => {
            tracing::error!(error = %m, commands = results.len(), "write group failed and was rolled back");
            for (reply, _) in results {
                let _ = reply.send(Err(StoreError::Internal(m.clone())));
            }
        }
    }
}

fn execute(
    tx: &Transaction<'_>,
    op: Op,
    now: Timestamp,
    ctx: &WriterCtx,
) -> Result<OpResult, StoreError> {
    match op {
        Op::Create { tenant, new } => {
            validate_new(&new)?;
            let id = new.trace_id.unwrap_or_else(TraceId::new_v7);
            if let Some(row) = load_trace(tx, &tenant, id)? {
                if row.is_live(now) {
                    return Err(StoreError::Conflict(format!("trace {id} already exists")));
                }
                delete_trace_data(tx, row.rowid)?;
            }
            let mut w = TraceWriter::create(tx, &tenant, id, new, now, ctx)?;
            w.save(tx)?;
            Ok(OpResult::Trace(w.row.trace, w.events))
        }
        Op::Append(req) => append(tx, req, now, ctx).map(OpResult::Append),
        Op::Update { tenant, id, patch } => {
            let row = load_trace(tx, &tenant, id)?
                .filter(|r| r.is_live(now))
                .ok_or(StoreError::NotFound(id))?;
            let mut w = TraceWriter::new(row, now, ctx);
            if let Some(name) = patch.name {
                w.row.trace.name = Some(name);
            }
            w.row.trace.metadata.extend(patch.metadata);
            if let Some(to) = patch.state {
                w.change_state(tx, to, patch.reason)?;
            }
            w.save(tx)?;
            Ok(OpResult::Trace(w.row.trace, w.events))
        }
        Op::Delete { tenant, id } => match load_trace(tx, &tenant, id)? {
            Some(row) => {
                delete_trace_data(tx, row.rowid)?;
                Ok(OpResult::Deleted(row.is_live(now)))
            }
            None => Ok(OpResult::Deleted(false)),
        },
        Op::DeleteEndedBefore {
            tenant,
            cutoff,
            limit,
        } => {
            let rowids: Vec<i64> = {
                let mut stmt = tx
                    .prepare_cached(
                        "SELECT id FROM traces WHERE tenant = ?1 AND ended_at < ?2 LIMIT ?3",
                    )
                    .map_err(internal)?;
                let rows = stmt
                    .query_map(params![tenant, cutoff.unix_nanos(), limit], |r| r.get(0))
                    .map_err(internal)?;
                rows.collect::<Result<_, _>>().map_err(internal)?
            };
            for rowid in &rowids {
                delete_trace_data(tx, *rowid)?;
            }
            Ok(OpResult::Count(rowids.len() as u64))
        }
    }
}

fn append(
    tx: &Transaction<'_>,
    req: AppendRequest,
    now: Timestamp,
    ctx: &WriterCtx,
) -> Result<AppendOutcome, StoreError> {
    let existing = load_trace(tx, &req.tenant, req.trace_id)?;
    let (mut w, created) = match existing {
        Some(row) if row.is_live(now) => (TraceWriter::new(row, now, ctx), false),
        stale => {
            let Some(new) = req.create_if_missing else {
                return Err(StoreError::NotFound(req.trace_id));
            };
            validate_new(&new)?;
            if let Some(row) = stale {
                delete_trace_data(tx, row.rowid)?;
            }
            (
                TraceWriter::create(tx, &req.tenant, req.trace_id, new, now, ctx)?,
                true,
            )
        }
    };
    let mut outcome = AppendOutcome {
        created,
        ..Default::default()
    };
    for input in req.events {
        if w.apply(tx, input)? {
            outcome.accepted += 1;
        } else {
            outcome.duplicates += 1;
        }
    }
    w.save(tx)?;
    outcome.events = w.events;
    Ok(outcome)
}

/// Refuses a trace that cannot be created, before anything is written.
fn validate_new(new: &NewTrace) -> Result<(), StoreError> {
    match &new.state {
        Some(state) if state.is_terminal() => Err(StoreError::Invalid(format!(
            "a trace cannot be created {state}; create it, then change its state"
        ))),
        _ => Ok(()),
    }
}

/// Loads a trace row, expired or not; callers decide what an expired row means.
fn load_trace(
    tx: &Transaction<'_>,
    tenant: &str,
    id: TraceId,
) -> Result<Option<TraceRow>, StoreError> {
    let mut stmt = tx
        .prepare_cached(&format!(
            "SELECT id, data_expires_at, {TRACE_COLUMNS} FROM traces WHERE tenant = ?1 AND trace_id = ?2"
        ))
        .map_err(internal)?;
    stmt.query_row(params![tenant, &id.to_bytes()[..]], |r| {
        Ok(TraceRow {
            rowid: r.get(0)?,
            data_expires_at: r.get(1)?,
            trace: read_trace_row(r, 2)?,
        })
    })
    .optional()
    .map_err(internal)
}

fn delete_trace_data(tx: &Transaction<'_>, rowid: i64) -> Result<(), StoreError> {
    for sql in [
        "DELETE FROM events WHERE trace_ref = ?1",
        "DELETE FROM spans WHERE trace_ref = ?1",
        "DELETE FROM traces WHERE id = ?1",
    ] {
        tx.prepare_cached(sql)
            .and_then(|mut s| s.execute([rowid]))
            .map_err(internal)?;
    }
    Ok(())
}

/// One trace being written within a command: its row, the events it gained, and the
/// spans it touched (so a start and an end in one batch see each other).
struct TraceWriter<'c> {
    row: TraceRow,
    events: Vec<Event>,
    spans: HashMap<u64, Span>,
    now: Timestamp,
    ctx: &'c WriterCtx,
}

impl<'c> TraceWriter<'c> {
    fn new(row: TraceRow, now: Timestamp, ctx: &'c WriterCtx) -> TraceWriter<'c> {
        TraceWriter {
            row,
            events: Vec::new(),
            spans: HashMap::new(),
            now,
            ctx,
        }
    }

    fn create(
        tx: &Transaction<'_>,
        tenant: &str,
        id: TraceId,
        new: NewTrace,
        now: Timestamp,
        ctx: &'c WriterCtx,
    ) -> Result<TraceWriter<'c>, StoreError> {
        let state = new.state.unwrap_or(State::Received);
        let level = new.level.unwrap_or(ctx.capture.default_level);
        let failsafe = now.saturating_add(ctx.retention.failsafe_ttl);
        let trace = Trace {
            trace_id: id,
            tenant: tenant.to_string(),
            name: new.name,
            agent_id: new.agent_id,
            session_id: new.session_id,
            user_id: new.user_id,
            state,
            level,
            created_at: now,
            last_activity_at: now,
            ended_at: None,
            expires_at: failsafe,
            last_seq: 0,
            metadata: new.metadata,
            rollups: Rollups::default(),
        };
        let mut stmt = tx
            .prepare_cached(
                "INSERT INTO traces (tenant, trace_id, state, level, created_at, last_activity_at, \
                 expires_at, data_expires_at, last_seq, metadata, rollups) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?5, ?6, ?6, 0, '{}', '{}')",
            )
            .map_err(internal)?;
        stmt.execute(params![
            tenant,
            &id.to_bytes()[..],
            trace.state.as_str(),
            level as i64,
            now.unix_nanos(),
            failsafe.unix_nanos()
        ])
        .map_err(internal)?;
        let rowid = tx.last_insert_rowid();
        let started = TraceStarted {
            name: trace.name.clone(),
            agent_id: trace.agent_id.clone(),
            session_id: trace.session_id.clone(),
            user_id: trace.user_id.clone(),
            state: trace.state.clone(),
            level,
            metadata: trace.metadata.clone(),
        };
        let mut w = TraceWriter::new(
            TraceRow {
                rowid,
                data_expires_at: failsafe.unix_nanos(),
                trace,
            },
            now,
            ctx,
        );
        w.write_event(tx, now, None, EventBody::TraceStarted(started))?;
        Ok(w)
    }

    /// Applies one input; false when it was a duplicate.
    fn apply(&mut self, tx: &Transaction<'_>, input: EventInput) -> Result<bool, StoreError> {
        match input {
            EventInput::SpanStarted { span } => {
                let existing = self.load_span(tx, span.span_id.as_u64())?;
                let change = ingest::start_span(existing.as_ref(), span, self.now);
                self.record_span(tx, change, false)
            }
            EventInput::SpanEnded { span } => {
                let existing = self.load_span(tx, span.span_id.as_u64())?;
                let change = ingest::end_span(existing.as_ref(), span, self.now);
                self.record_span(tx, change, true)
            }
            EventInput::Log { id, time, record } => {
                if self.seen_key(tx, id.as_deref())? {
                    return Ok(false);
                }
                let component = self.component_of(tx, record.span_id)?;
                let body = EventBody::Log(record);
                self.write_keyed_event(tx, time.unwrap_or(self.now), component, id, body)?;
                Ok(true)
            }
            EventInput::Error { id, time, record } => {
                if self.seen_key(tx, id.as_deref())? {
                    return Ok(false);
                }
                if record.span_id.is_none() {
                    self.row.trace.rollups.error_count += 1;
                }
                let component = self.component_of(tx, record.span_id)?;
                let body = EventBody::Error(record);
                self.write_keyed_event(tx, time.unwrap_or(self.now), component, id, body)?;
                Ok(true)
            }
        }
    }

    fn record_span(
        &mut self,
        tx: &Transaction<'_>,
        change: SpanChange,
        ended: bool,
    ) -> Result<bool, StoreError> {
        let (previous, mut span) = match change {
            SpanChange::Duplicate => return Ok(false),
            SpanChange::New(span) => (None, span),
            SpanChange::Ended { previous, span } => (Some(previous), span),
        };
        if self.row.trace.state == State::Received {
            self.change_state(tx, State::Running, Some("first step".into()))?;
        }
        let (level, max) = (self.row.trace.level, self.ctx.capture.max_content_bytes);
        strip_span(&mut span, level, max);
        self.row.trace.rollups.apply_span(previous.as_ref(), &span);
        let json = serde_json::to_string(&span).map_err(|e| StoreError::Internal(e.to_string()))?;
        let (time, ty) = match span.end_time {
            Some(end) if ended => (end, "span_ended"),
            _ => (span.start_time, "span_started"),
        };
        let body_json = format!("{{\"type\":\"{ty}\",\"payload\":{json}}}");
        let component = span.component_id.clone();
        let (span_id, start) = (span.span_id.as_u64() as i64, span.start_time.unix_nanos());
        self.spans.insert(span.span_id.as_u64(), span.clone());
        let body = if ended {
            EventBody::SpanEnded(span)
        } else {
            EventBody::SpanStarted(span)
        };
        let event_id = self.insert_event(tx, time, component.clone(), None, body, body_json)?;
        tx.prepare_cached(
            "INSERT INTO spans (trace_ref, span_id, start_time, ended, component_id, event_id) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6) ON CONFLICT (trace_ref, span_id) DO UPDATE \
             SET start_time = ?3, ended = ?4, component_id = ?5, event_id = ?6",
        )
        .and_then(|mut s| {
            s.execute(params![
                self.row.rowid,
                span_id,
                start,
                ended,
                component,
                event_id
            ])
        })
        .map_err(internal)?;
        Ok(true)
    }

    /// The span as stored: its latest event's payload.
    fn load_span(
        &mut self,
        tx: &Transaction<'_>,
        span_id: u64,
    ) -> Result<Option<Span>, StoreError> {
        if let Some(s) = self.spans.get(&span_id) {
            return Ok(Some(s.clone()));
        }
        let body: Option<String> = tx
            .prepare_cached(
                "SELECT e.body FROM spans s JOIN events e ON e.id = s.event_id \
                 WHERE s.trace_ref = ?1 AND s.span_id = ?2",
            )
            .and_then(|mut s| {
                s.query_row(params![self.row.rowid, span_id as i64], |r| r.get(0))
                    .optional()
            })
            .map_err(internal)?;
        body.map(|b| super::span_of_event_body(&b)).transpose()
    }

    fn component_of(
        &mut self,
        tx: &Transaction<'_>,
        span_id: Option<traceway_core::SpanId>,
    ) -> Result<Option<String>, StoreError> {
        let Some(id) = span_id else { return Ok(None) };
        if let Some(s) = self.spans.get(&id.as_u64()) {
            return Ok(s.component_id.clone());
        }
        tx.prepare_cached("SELECT component_id FROM spans WHERE trace_ref = ?1 AND span_id = ?2")
            .and_then(|mut s| {
                s.query_row(params![self.row.rowid, id.as_u64() as i64], |r| {
                    r.get::<_, Option<String>>(0)
                })
                .optional()
            })
            .map(Option::flatten)
            .map_err(internal)
    }

    fn seen_key(&self, tx: &Transaction<'_>, key: Option<&str>) -> Result<bool, StoreError> {
        let Some(key) = key else { return Ok(false) };
        tx.prepare_cached("SELECT 1 FROM events WHERE trace_ref = ?1 AND dedup_key = ?2")
            .and_then(|mut s| s.exists(params![self.row.rowid, key]))
            .map_err(internal)
    }

    fn change_state(
        &mut self,
        tx: &Transaction<'_>,
        to: State,
        reason: Option<String>,
    ) -> Result<(), StoreError> {
        let from = self.row.trace.state.clone();
        let changed = from
            .check_transition(&to)
            .map_err(|e| StoreError::Conflict(e.to_string()))?;
        if !changed {
            return Ok(());
        }
        self.row.trace.state = to.clone();
        let now = self.now;
        self.write_event(
            tx,
            now,
            None,
            EventBody::StateChanged(StateChange {
                from,
                to: to.clone(),
                reason: reason.clone(),
            }),
        )?;
        if to.is_terminal() {
            let r = self.ctx.retention;
            self.row.trace.ended_at = Some(now);
            self.row.trace.expires_at = now.saturating_add(r.terminal_trace_ttl);
            self.row.data_expires_at = now.saturating_add(r.terminal_data_ttl).unix_nanos();
            let ended = TraceEnded {
                state: to,
                reason,
                rollups: self.row.trace.rollups.clone(),
            };
            self.write_event(tx, now, None, EventBody::TraceEnded(ended))?;
        }
        Ok(())
    }

    fn write_event(
        &mut self,
        tx: &Transaction<'_>,
        time: Timestamp,
        component: Option<String>,
        body: EventBody,
    ) -> Result<(), StoreError> {
        self.write_keyed_event(tx, time, component, None, body)
    }

    fn write_keyed_event(
        &mut self,
        tx: &Transaction<'_>,
        time: Timestamp,
        component: Option<String>,
        key: Option<String>,
        mut body: EventBody,
    ) -> Result<(), StoreError> {
        strip_event_body(
            &mut body,
            self.row.trace.level,
            self.ctx.capture.max_content_bytes,
        );
        let json = serde_json::to_string(&body).map_err(|e| StoreError::Internal(e.to_string()))?;
        self.insert_event(tx, time, component, key, body, json)
            .map(|_| ())
    }

    fn insert_event(
        &mut self,
        tx: &Transaction<'_>,
        time: Timestamp,
        component: Option<String>,
        key: Option<String>,
        body: EventBody,
        body_json: String,
    ) -> Result<i64, StoreError> {
        let seq = self.row.trace.last_seq + 1;
        tx.prepare_cached(
            "INSERT INTO events (trace_ref, seq, time, type, component_id, dedup_key, body) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        )
        .and_then(|mut s| {
            s.execute(params![
                self.row.rowid,
                seq as i64,
                time.unix_nanos(),
                body.event_type().as_str(),
                component,
                key,
                body_json
            ])
        })
        .map_err(internal)?;
        self.row.trace.last_seq = seq;
        self.events.push(Event {
            trace_id: self.row.trace.trace_id,
            seq,
            time,
            component_id: component,
            body,
        });
        Ok(tx.last_insert_rowid())
    }

    /// Writes the trace row back.
    fn save(&mut self, tx: &Transaction<'_>) -> Result<(), StoreError> {
        let t = &mut self.row.trace;
        t.last_activity_at = self.now;
        let metadata =
            serde_json::to_string(&t.metadata).map_err(|e| StoreError::Internal(e.to_string()))?;
        let rollups =
            serde_json::to_string(&t.rollups).map_err(|e| StoreError::Internal(e.to_string()))?;
        tx.prepare_cached(
            "UPDATE traces SET name = ?2, agent_id = ?3, session_id = ?4, user_id = ?5, state = ?6, \
             last_activity_at = ?7, ended_at = ?8, expires_at = ?9, data_expires_at = ?10, \
             last_seq = ?11, error_count = ?12, duration_ms = ?13, metadata = ?14, rollups = ?15 \
             WHERE id = ?1",
        )
        .and_then(|mut s| {
            s.execute(params![
                self.row.rowid,
                t.name,
                t.agent_id,
                t.session_id,
                t.user_id,
                t.state.as_str(),
                t.last_activity_at.unix_nanos(),
                t.ended_at.map(Timestamp::unix_nanos),
                t.expires_at.unix_nanos(),
                self.row.data_expires_at,
                t.last_seq as i64,
                t.rollups.error_count as i64,
                t.rollups.duration_ms,
                metadata,
                rollups
            ])
        })
        .map_err(internal)?;
        Ok(())
    }
}
