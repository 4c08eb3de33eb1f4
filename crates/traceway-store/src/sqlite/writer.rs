//! The single writer: one thread owns the write connection, takes commands from a bounded
//! queue and runs every command that is waiting as one transaction (group commit); every
//! reply is sent only after the transaction commits. It keeps the traces it recently wrote
//! in a [`TraceCache`], so a command needs no lookups, and writes a command's events with
//! one multi-row INSERT.

use std::sync::Arc;
use std::time::{Duration, Instant};

use rusqlite::types::ToSql;
use rusqlite::{params, OptionalExtension, Transaction};
use tokio::sync::{mpsc, oneshot};
use traceway_core::{
    ingest, strip_event_body, strip_span, Event, EventBody, EventInput, EventType, NewTrace,
    Rollups, SpanChange, SpanId, State, StateChange, Timestamp, Trace, TraceEnded, TraceId,
    TracePatch, TraceStarted,
};

use super::cache::{CachedTrace, SpanState, TraceCache};
use super::row::TraceRow;
use super::schema::internal;
use crate::shared::validate_new;
use crate::{
    AppendOutcome, AppendRequest, CaptureConfig, Clock, Lease, Orphaned, Purged, Retention,
    StoreError, ORPHANED_REASON,
};

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
    /// The outcome, and the trace as it is after the append (for the hub).
    Append(AppendOutcome, Box<Trace>),
    Deleted(bool),
    Count(u64),
    Lease(Option<Lease>),
    Orphaned(Vec<OrphanedTrace>),
    Purged(Purged),
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

/// Longest a group waits for more commands before it commits.
const GATHER_WAIT: Duration = Duration::from_micros(200);

/// Runs until a `Shutdown` arrives or every sender is gone; commands queued before the
/// shutdown are still written.
pub(crate) fn run(mut conn: rusqlite::Connection, mut rx: mpsc::Receiver<Msg>, ctx: WriterCtx) {
    // Waking the tasks that wait for replies costs the waker a syscall each (tokio unparks
    // a worker); a thread of its own does it, so the writer goes on to the next group.
    let (acks, acker) = match Acker::start(ctx.hub.clone()) {
        Ok(a) => a,
        Err(e) => {
            tracing::error!(error = %e, "cannot start the reply thread; writer stops");
            return;
        }
    };
    let mut cache = TraceCache::new(ctx.cache_capacity);
    let mut group = Vec::with_capacity(ctx.max_group);
    let mut shutdown_replies = Vec::new();
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
            commit_group(&mut conn, &mut cache, &mut group, &ctx, &acks);
            restart_wal_if_full(&conn, &ctx);
        }
        if !shutdown_replies.is_empty() {
            // Refuse new work, then write what was already queued.
            rx.close();
            while let Ok(m) = rx.try_recv() {
                if let Msg::Op(op, reply) = m {
                    group.push((op, reply));
                    if group.len() >= ctx.max_group {
                        commit_group(&mut conn, &mut cache, &mut group, &ctx, &acks);
                    }
                }
            }
            if !group.is_empty() {
                commit_group(&mut conn, &mut cache, &mut group, &ctx, &acks);
            }
            break;
        }
    }
    // Every reply of a written command is out before the shutdown is confirmed.
    drop(acks);
    if acker.join().is_err() {
        tracing::error!("reply thread panicked");
    }
    if let Err(e) = conn.execute_batch("PRAGMA wal_checkpoint(TRUNCATE)") {
        tracing::warn!(error = %e, "checkpoint at shutdown failed");
    }
    drop(conn);
    for reply in shutdown_replies {
        let _ = reply.send(());
    }
}

/// Starts the WAL over once it passed its limit (see `Checkpointer`). Between groups the
/// writer holds no transaction, which RESTART needs.
fn restart_wal_if_full(conn: &rusqlite::Connection, ctx: &WriterCtx) {
    use std::sync::atomic::Ordering;
    let frames = ctx.wal_frames.load(Ordering::Relaxed);
    if frames <= ctx.wal_limit_frames {
        return;
    }
    let t = Instant::now();
    match conn.query_row("PRAGMA wal_checkpoint(RESTART)", [], |r| r.get::<_, i64>(0)) {
        Ok(0) => {
            ctx.wal_frames.store(0, Ordering::Relaxed);
            tracing::debug!(
                frames,
                ms = t.elapsed().as_millis() as u64,
                "write-ahead log restarted"
            );
        }
        Ok(_) => tracing::debug!(frames, "restarting checkpoint was busy; will retry"),
        Err(e) => tracing::warn!(error = %e, "restarting checkpoint failed"),
    }
}

type ReplyTo = oneshot::Sender<Result<OpResult, StoreError>>;
type Pending = (Op, ReplyTo);

/// A group's outcome, handed to the reply thread in commit order.
enum Acks {
    /// Committed: publish, then reply.
    Committed(Vec<(ReplyTo, Result<OpResult, StoreError>)>),
    /// Not committed: reply with the error.
    Failed(Vec<ReplyTo>, StoreError),
}

/// The reply thread: publishes what a committed group wrote to the hub (in commit order,
/// so in seq order per trace), then replies to each command.
struct Acker;

impl Acker {
    fn start(
        hub: crate::InProcessHub,
    ) -> std::io::Result<(
        std::sync::mpsc::SyncSender<Acks>,
        std::thread::JoinHandle<()>,
    )> {
        // Bounded: a reply thread that falls behind holds the writer back.
        let (tx, rx) = std::sync::mpsc::sync_channel::<Acks>(64);
        let handle = std::thread::Builder::new()
            .name("tw-sqlite-ack".into())
            .spawn(move || {
                for acks in rx {
                    match acks {
                        Acks::Committed(results) => {
                            Self::publish(&hub, &results);
                            for (reply, r) in results {
                                let _ = reply.send(r);
                            }
                        }
                        Acks::Failed(replies, e) => {
                            for reply in replies {
                                let _ = reply.send(Err(e.clone()));
                            }
                        }
                    }
                }
            })?;
        Ok((tx, handle))
    }

    fn publish(hub: &crate::InProcessHub, results: &[(ReplyTo, Result<OpResult, StoreError>)]) {
        let publish = |trace: &Trace, events: &[Event]| {
            let meta = crate::TraceMeta {
                agent_id: trace.agent_id.clone(),
                state: Some(trace.state.clone()),
            };
            hub.publish(&trace.tenant, &meta, events);
        };
        for (_, r) in results {
            match r {
                Ok(OpResult::Trace(t, e)) => publish(t, e),
                Ok(OpResult::Append(o, t)) => publish(t, &o.events),
                Ok(OpResult::Orphaned(list)) => {
                    for o in list {
                        publish(&o.trace, &o.events);
                    }
                }
                _ => {}
            }
        }
    }
}

/// Runs a group in one transaction. Commands refuse (404, 409, 400) before they change
/// anything, so a refusal needs no rollback; an internal error (I/O, corruption) rolls back
/// the whole group, every command in it fails unacknowledged, and the cache, which may be
/// ahead of the database, is dropped. Per-command savepoints would isolate that rare case
/// but cost a sub-journal copy of every page a command touches (ADR 002).
fn commit_group(
    conn: &mut rusqlite::Connection,
    cache: &mut TraceCache,
    group: &mut Vec<Pending>,
    ctx: &WriterCtx,
    acks: &std::sync::mpsc::SyncSender<Acks>,
) {
    let now = ctx.clock.now();
    let begun = conn
        .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
        .map_err(internal)
        .and_then(|tx| cache.sync(&tx).map(|()| tx));
    let tx = match begun {
        Ok(tx) => tx,
        Err(e) => {
            tracing::error!(error = %e, "begin failed");
            cache.clear();
            let replies = group.drain(..).map(|(_, reply)| reply).collect();
            send_acks(acks, Acks::Failed(replies, e));
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
        let r = execute(&tx, cache, op, now, ctx);
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
        Ok(()) => send_acks(acks, Acks::Committed(results)),
        Err(m) => {
            cache.clear();
            tracing::error!(error = %m, commands = results.len(), "write group failed and was rolled back");
            let replies = results.into_iter().map(|(reply, _)| reply).collect();
            send_acks(acks, Acks::Failed(replies, StoreError::Internal(m)));
        }
    }
}

/// Hands a group's replies to the reply thread; if it is gone (it never stops before the
/// writer does), the callers see their reply channel closed.
fn send_acks(acks: &std::sync::mpsc::SyncSender<Acks>, a: Acks) {
    if acks.send(a).is_err() {
        tracing::error!("reply thread is gone; replies dropped");
    }
}

fn execute(
    tx: &Transaction<'_>,
    cache: &mut TraceCache,
    op: Op,
    now: Timestamp,
    ctx: &WriterCtx,
) -> Result<OpResult, StoreError> {
    match op {
        Op::Create { tenant, new } => {
            validate_new(&new)?;
            let id = new.trace_id.unwrap_or_else(TraceId::new_v7);
            if let Some(t) = cache.take(tx, &tenant, id)? {
                if t.row.is_live(now) {
                    cache.put(t);
                    return Err(StoreError::Conflict(format!("trace {id} already exists")));
                }
                delete_trace_data(tx, t.row.rowid)?;
            }
            let mut w = TraceWriter::create(&tenant, id, new, now, ctx)?;
            w.save(tx)?;
            Ok(OpResult::Trace(w.trace.row.trace.clone(), w.finish(cache)))
        }
        Op::Append(req) => {
            append(tx, cache, req, now, ctx).map(|(o, t)| OpResult::Append(o, Box::new(t)))
        }
        Op::Update { tenant, id, patch } => {
            let t = match cache.take(tx, &tenant, id)? {
                Some(t) if t.row.is_live(now) => t,
                _ => return Err(StoreError::NotFound(id)),
            };
            // The only refusal comes first, before anything changes.
            if let Some(to) = &patch.state {
                if let Err(e) = t.row.trace.state.check_transition(to) {
                    cache.put(t);
                    return Err(StoreError::Conflict(e.to_string()));
                }
            }
            let mut w = TraceWriter::new(t, now, ctx);
            if let Some(name) = patch.name {
                w.trace.row.trace.name = Some(name);
            }
            w.metadata_changed |= !patch.metadata.is_empty();
            w.trace.row.trace.metadata.extend(patch.metadata);
            if let Some(to) = patch.state {
                w.change_state(to, patch.reason)?;
            }
            w.save(tx)?;
            Ok(OpResult::Trace(w.trace.row.trace.clone(), w.finish(cache)))
        }
        Op::Delete { tenant, id } => match cache.take(tx, &tenant, id)? {
            Some(t) => {
                delete_trace_data(tx, t.row.rowid)?;
                Ok(OpResult::Deleted(t.row.is_live(now)))
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
            if !rowids.is_empty() {
                cache.clear();
            }
            Ok(OpResult::Count(rowids.len() as u64))
        }
        Op::AcquireLease { name, holder, ttl } => {
            acquire_lease(tx, name, holder, ttl, now).map(OpResult::Lease)
        }
        Op::RenewLease { lease, ttl } => {
            let expires_at = now.saturating_add(ttl);
            let n = tx
                .prepare_cached(
                    "UPDATE leases SET expires_at = ?4 WHERE name = ?1 AND holder = ?2 \
                     AND token = ?3 AND expires_at > ?5",
                )
                .and_then(|mut s| {
                    s.execute(params![
                        lease.name,
                        lease.holder,
                        lease.token as i64,
                        expires_at.unix_nanos(),
                        now.unix_nanos()
                    ])
                })
                .map_err(internal)?;
            Ok(OpResult::Lease((n == 1).then_some(Lease {
                expires_at,
                ..lease
            })))
        }
        Op::ReleaseLease { lease } => {
            let n = tx
                .prepare_cached(
                    "UPDATE leases SET expires_at = 0 WHERE name = ?1 AND holder = ?2 \
                     AND token = ?3 AND expires_at > ?4",
                )
                .and_then(|mut s| {
                    s.execute(params![
                        lease.name,
                        lease.holder,
                        lease.token as i64,
                        now.unix_nanos()
                    ])
                })
                .map_err(internal)?;
            Ok(OpResult::Deleted(n == 1))
        }
        Op::SweepOrphans {
            fence,
            orphan_after,
            limit,
        } => {
            check_fence(tx, &fence, now)?;
            sweep_orphans(tx, cache, now.saturating_sub(orphan_after), limit, now, ctx)
                .map(OpResult::Orphaned)
        }
        Op::PurgeExpired { fence, max_rows } => {
            check_fence(tx, &fence, now)?;
            purge_expired(tx, cache, max_rows.max(1), now).map(OpResult::Purged)
        }
    }
}

/// Refuses a fenced command unless its lease is still the current one.
fn check_fence(tx: &Transaction<'_>, fence: &Lease, now: Timestamp) -> Result<(), StoreError> {
    let current = tx
        .prepare_cached(
            "SELECT 1 FROM leases WHERE name = ?1 AND holder = ?2 AND token = ?3 AND expires_at > ?4",
        )
        .and_then(|mut s| {
            s.exists(params![
                fence.name,
                fence.holder,
                fence.token as i64,
                now.unix_nanos()
            ])
        })
        .map_err(internal)?;
    if current {
        Ok(())
    } else {
        Err(StoreError::LeaseLost(format!(
            "lease {} token {} is no longer held by {}",
            fence.name, fence.token, fence.holder
        )))
    }
}

fn acquire_lease(
    tx: &Transaction<'_>,
    name: String,
    holder: String,
    ttl: Duration,
    now: Timestamp,
) -> Result<Option<Lease>, StoreError> {
    let current: Option<(String, i64, i64)> = tx
        .prepare_cached("SELECT holder, token, expires_at FROM leases WHERE name = ?1")
        .and_then(|mut s| {
            s.query_row([&name], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
                .optional()
        })
        .map_err(internal)?;
    let token = match current {
        // Held by someone else and not lapsed.
        Some((h, _, exp)) if h != holder && exp > now.unix_nanos() => return Ok(None),
        // Ours and not lapsed: extend, same token.
        Some((_, token, exp)) if exp > now.unix_nanos() => token,
        // Lapsed or released: a new token.
        Some((_, token, _)) => token + 1,
        None => 1,
    };
    let expires_at = now.saturating_add(ttl);
    tx.prepare_cached(
        "INSERT INTO leases (name, holder, token, expires_at) VALUES (?1, ?2, ?3, ?4) \
         ON CONFLICT (name) DO UPDATE SET holder = ?2, token = ?3, expires_at = ?4",
    )
    .and_then(|mut s| s.execute(params![name, holder, token, expires_at.unix_nanos()]))
    .map_err(internal)?;
    Ok(Some(Lease {
        name,
        holder,
        token: token as u64,
        expires_at,
    }))
}

/// The candidates of the orphan sweep, most idle first, read from the active index.
pub(crate) const ORPHAN_CANDIDATES_SQL: &str = "SELECT tenant, trace_id FROM traces \
     WHERE ended_at IS NULL AND last_activity_at < ?1 AND expires_at > ?2 \
     ORDER BY last_activity_at LIMIT ?3";

fn sweep_orphans(
    tx: &Transaction<'_>,
    cache: &mut TraceCache,
    idle_before: Timestamp,
    limit: u32,
    now: Timestamp,
    ctx: &WriterCtx,
) -> Result<Vec<OrphanedTrace>, StoreError> {
    let candidates: Vec<(String, [u8; 16])> = {
        let mut stmt = tx.prepare_cached(ORPHAN_CANDIDATES_SQL).map_err(internal)?;
        let rows = stmt
            .query_map(
                params![idle_before.unix_nanos(), now.unix_nanos(), limit],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .map_err(internal)?;
        rows.collect::<Result<_, _>>().map_err(internal)?
    };
    let mut out = Vec::with_capacity(candidates.len());
    for (tenant, id) in candidates {
        let id = TraceId::from_bytes(id)
            .ok_or_else(|| StoreError::Internal("zero trace id in the active index".into()))?;
        let Some(t) = cache.take(tx, &tenant, id)? else {
            continue;
        };
        let row = &t.row.trace;
        // The cache is authoritative; it agrees with the row just read, but check anyway
        // rather than end a trace that is not idle.
        if row.state.is_terminal() || row.last_activity_at >= idle_before || !t.row.is_live(now) {
            cache.put(t);
            continue;
        }
        let idle = now.since(row.last_activity_at);
        let mut w = TraceWriter::new(t, now, ctx);
        w.change_state(State::Errored, Some(ORPHANED_REASON.into()))?;
        let keep = now.saturating_add(ctx.retention.orphan_ttl);
        w.trace.row.trace.expires_at = keep;
        w.trace.row.data_expires_at = keep.unix_nanos();
        w.save(tx)?;
        let trace = w.trace.row.trace.clone();
        let events = w.finish(cache);
        out.push(OrphanedTrace {
            orphan: Orphaned {
                tenant,
                trace_id: id,
                idle,
            },
            trace,
            events,
        });
    }
    Ok(out)
}

/// Expired trace rows (with all their events) first, then the events of traces whose data
/// expired, deleting at most about `max_rows` rows so the group stays short.
fn purge_expired(
    tx: &Transaction<'_>,
    cache: &mut TraceCache,
    max_rows: u32,
    now: Timestamp,
) -> Result<Purged, StoreError> {
    let mut budget = i64::from(max_rows);
    let mut out = Purged::default();
    let now_ns = now.unix_nanos();
    let expired = expired_traces(
        tx,
        "SELECT id, tenant, trace_id FROM traces WHERE expires_at <= ?1 \
         ORDER BY expires_at LIMIT ?2",
        now_ns,
        budget,
    )?;
    out.more = expired.len() as i64 >= budget;
    for (rowid, tenant, id) in expired {
        let (n, complete) = delete_events(tx, rowid, budget)?;
        out.events += n;
        budget -= n as i64;
        if !complete {
            out.more = true;
            return Ok(out);
        }
        tx.prepare_cached("DELETE FROM traces WHERE id = ?1")
            .and_then(|mut s| s.execute([rowid]))
            .map_err(internal)?;
        cache.forget(&tenant, id);
        out.traces += 1;
        budget -= 1;
        if budget <= 0 {
            out.more = true;
            return Ok(out);
        }
    }
    let data_expired = expired_traces(
        tx,
        "SELECT id, tenant, trace_id FROM traces WHERE data_expires_at > 0 \
         AND data_expires_at <= ?1 LIMIT ?2",
        now_ns,
        budget,
    )?;
    out.more |= data_expired.len() as i64 >= budget;
    for (rowid, tenant, id) in data_expired {
        let (n, complete) = delete_events(tx, rowid, budget)?;
        out.events += n;
        budget -= n as i64;
        if !complete {
            out.more = true;
            break;
        }
        // 0: the data is gone, and the trace leaves the data-expiry index.
        tx.prepare_cached("UPDATE traces SET data_expires_at = 0 WHERE id = ?1")
            .and_then(|mut s| s.execute([rowid]))
            .map_err(internal)?;
        cache.forget(&tenant, id);
        if budget <= 0 {
            out.more = true;
            break;
        }
    }
    Ok(out)
}

fn expired_traces(
    tx: &Transaction<'_>,
    sql: &str,
    now_ns: i64,
    limit: i64,
) -> Result<Vec<(i64, String, TraceId)>, StoreError> {
    let mut stmt = tx.prepare_cached(sql).map_err(internal)?;
    let rows = stmt
        .query_map(params![now_ns, limit], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, [u8; 16]>(2)?,
            ))
        })
        .map_err(internal)?;
    let mut out = Vec::new();
    for row in rows {
        let (rowid, tenant, id) = row.map_err(internal)?;
        if let Some(id) = TraceId::from_bytes(id) {
            out.push((rowid, tenant, id));
        }
    }
    Ok(out)
}

/// Deletes up to `limit` events of a trace; true when none are left.
fn delete_events(tx: &Transaction<'_>, rowid: i64, limit: i64) -> Result<(u64, bool), StoreError> {
    if limit <= 0 {
        let any = tx
            .prepare_cached("SELECT 1 FROM events WHERE trace_ref = ?1 LIMIT 1")
            .and_then(|mut s| s.exists([rowid]))
            .map_err(internal)?;
        return Ok((0, !any));
    }
    let n = tx
        .prepare_cached(
            "DELETE FROM events WHERE id IN \
             (SELECT id FROM events WHERE trace_ref = ?1 ORDER BY seq LIMIT ?2)",
        )
        .and_then(|mut s| s.execute(params![rowid, limit]))
        .map_err(internal)? as i64;
    Ok((n as u64, n < limit))
}

fn append(
    tx: &Transaction<'_>,
    cache: &mut TraceCache,
    req: AppendRequest,
    now: Timestamp,
    ctx: &WriterCtx,
) -> Result<(AppendOutcome, Trace), StoreError> {
    let AppendRequest {
        tenant,
        trace_id,
        create_if_missing,
        events,
        end,
    } = req;
    let (mut w, created) = match cache.take(tx, &tenant, trace_id)? {
        Some(t) if t.row.is_live(now) => {
            let mut w = TraceWriter::new(t, now, ctx);
            if let Some(hints) = &create_if_missing {
                w.fill_hints(hints);
            }
            (w, false)
        }
        stale => {
            let Some(new) = create_if_missing else {
                return Err(StoreError::NotFound(trace_id));
            };
            validate_new(&new)?;
            if let Some(t) = stale {
                delete_trace_data(tx, t.row.rowid)?;
            }
            (TraceWriter::create(&tenant, trace_id, new, now, ctx)?, true)
        }
    };
    let mut outcome = AppendOutcome {
        created,
        ..Default::default()
    };
    for input in events {
        if w.apply(tx, input)? {
            outcome.accepted += 1;
        } else {
            outcome.duplicates += 1;
        }
    }
    if let Some(end) = end {
        // The first end decides; a trace that already ended keeps its state.
        if !w.trace.row.trace.state.is_terminal() {
            w.change_state(end.state, end.reason)?;
        }
    }
    w.save(tx)?;
    let trace = w.trace.row.trace.clone();
    outcome.last_seq = trace.last_seq;
    outcome.events = w.finish(cache);
    Ok((outcome, trace))
}

fn delete_trace_data(tx: &Transaction<'_>, rowid: i64) -> Result<(), StoreError> {
    for sql in [
        "DELETE FROM events WHERE trace_ref = ?1",
        "DELETE FROM traces WHERE id = ?1",
    ] {
        tx.prepare_cached(sql)
            .and_then(|mut s| s.execute([rowid]))
            .map_err(internal)?;
    }
    Ok(())
}

/// An event row waiting for the command's one INSERT.
struct EventRow {
    seq: i64,
    time: i64,
    ty: &'static str,
    span_id: Option<i64>,
    component: Option<String>,
    key: Option<String>,
    body: String,
}

/// Rows per INSERT statement (8 columns each, well under SQLite's parameter limit).
const ROWS_PER_INSERT: usize = 16;

/// One trace being written within a command: its cached state, the events it gained and
/// the rows not yet inserted.
struct TraceWriter<'c> {
    trace: CachedTrace,
    /// The indexed columns as the database holds them, so `save` rewrites only the indexes
    /// whose columns changed: most appends touch only the activity index.
    stored: IndexedColumns,
    /// Not in the database yet: `save` inserts it.
    fresh: bool,
    /// The metadata changed and must be written.
    metadata_changed: bool,
    events: Vec<Event>,
    rows: Vec<EventRow>,
    now: Timestamp,
    ctx: &'c WriterCtx,
}

impl<'c> TraceWriter<'c> {
    fn new(trace: CachedTrace, now: Timestamp, ctx: &'c WriterCtx) -> TraceWriter<'c> {
        TraceWriter {
            stored: IndexedColumns::of(&trace.row),
            fresh: false,
            metadata_changed: false,
            trace,
            events: Vec::new(),
            rows: Vec::new(),
            now,
            ctx,
        }
    }

    fn create(
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
        let started = TraceStarted {
            name: trace.name.clone(),
            agent_id: trace.agent_id.clone(),
            session_id: trace.session_id.clone(),
            user_id: trace.user_id.clone(),
            state: trace.state.clone(),
            level,
            metadata: trace.metadata.clone(),
        };
        // The row is inserted by `save`, with what the command made of it, so a new trace
        // costs one INSERT and no UPDATE; its rowid is known from then on.
        let row = TraceRow {
            rowid: 0,
            data_expires_at: failsafe.unix_nanos(),
            trace,
        };
        let mut w = TraceWriter::new(CachedTrace::new(row), now, ctx);
        w.fresh = true;
        w.write_event(now, None, None, EventBody::TraceStarted(started))?;
        Ok(w)
    }

    /// Fills what the trace does not know yet from a later batch's hints.
    fn fill_hints(&mut self, hints: &NewTrace) {
        let t = &mut self.trace.row.trace;
        for (field, hint) in [
            (&mut t.name, &hints.name),
            (&mut t.agent_id, &hints.agent_id),
            (&mut t.session_id, &hints.session_id),
            (&mut t.user_id, &hints.user_id),
        ] {
            if field.is_none() {
                field.clone_from(hint);
            }
        }
        for (k, v) in &hints.metadata {
            if !t.metadata.contains_key(k) {
                t.metadata.insert(k.clone(), v.clone());
                self.metadata_changed = true;
            }
        }
    }

    /// Applies one input; false when it was a duplicate.
    fn apply(&mut self, tx: &Transaction<'_>, input: EventInput) -> Result<bool, StoreError> {
        match input {
            EventInput::SpanStarted { span } => {
                if self.trace.spans.contains_key(&span.span_id.as_u64()) {
                    return Ok(false);
                }
                let change = ingest::start_span(None, span, self.now);
                self.record_span(change, false)
            }
            EventInput::SpanEnded { span } => {
                let change = match self.trace.spans.get(&span.span_id.as_u64()) {
                    Some(SpanState::Ended { .. }) => return Ok(false),
                    Some(SpanState::Running(started)) => {
                        ingest::end_span(Some(started), span, self.now)
                    }
                    None => ingest::end_span(None, span, self.now),
                };
                self.record_span(change, true)
            }
            EventInput::Log { id, time, record } => {
                self.client_event(tx, id, time, EventBody::Log(record))
            }
            EventInput::Error { id, time, record } => {
                self.client_event(tx, id, time, EventBody::Error(record))
            }
        }
    }

    /// A log or error from a client: skipped when its id was stored before; an error not
    /// tied to a span counts in the rollups (a span's errors count through its status).
    fn client_event(
        &mut self,
        tx: &Transaction<'_>,
        id: Option<String>,
        time: Option<Timestamp>,
        body: EventBody,
    ) -> Result<bool, StoreError> {
        if self.seen_key(tx, id.as_deref())? {
            return Ok(false);
        }
        let span_id = body.span_id();
        if matches!(body, EventBody::Error(_)) && span_id.is_none() {
            self.trace.row.trace.rollups.error_count += 1;
        }
        let component = self.component_of(span_id);
        self.write_keyed_event(time.unwrap_or(self.now), span_id, component, id, body)?;
        Ok(true)
    }

    fn record_span(&mut self, change: SpanChange, ended: bool) -> Result<bool, StoreError> {
        let (previous, mut span) = match change {
            SpanChange::Duplicate => return Ok(false),
            SpanChange::New(span) => (None, span),
            SpanChange::Ended { previous, span } => (Some(previous), span),
        };
        if self.trace.row.trace.state == State::Received {
            self.change_state(State::Running, Some("first step".into()))?;
        }
        let (level, max) = (
            self.trace.row.trace.level,
            self.ctx.capture.max_content_bytes,
        );
        strip_span(&mut span, level, max);
        self.trace
            .row
            .trace
            .rollups
            .apply_span(previous.as_ref(), &span);
        let (time, ty) = match span.end_time {
            Some(end) if ended => (end, EventType::SpanEnded),
            _ => (span.start_time, EventType::SpanStarted),
        };
        // The event body's JSON, written once into one buffer.
        let mut body_json = Vec::with_capacity(512);
        body_json.extend_from_slice(b"{\"type\":\"");
        body_json.extend_from_slice(ty.as_str().as_bytes());
        body_json.extend_from_slice(b"\",\"payload\":");
        serde_json::to_writer(&mut body_json, &span)
            .map_err(|e| StoreError::Internal(e.to_string()))?;
        body_json.push(b'}');
        let body_json =
            String::from_utf8(body_json).map_err(|e| StoreError::Internal(e.to_string()))?;
        let component = span.component_id.clone();
        let state = if ended {
            SpanState::Ended {
                component: component.clone(),
            }
        } else {
            SpanState::Running(Box::new(span.clone()))
        };
        self.trace.spans.insert(span.span_id.as_u64(), state);
        let span_id = Some(span.span_id);
        let body = if ended {
            EventBody::SpanEnded(span)
        } else {
            EventBody::SpanStarted(span)
        };
        self.push_event(time, span_id, component, None, body, body_json);
        Ok(true)
    }

    fn component_of(&self, span_id: Option<SpanId>) -> Option<String> {
        let id = span_id?;
        self.trace
            .spans
            .get(&id.as_u64())?
            .component()
            .map(str::to_string)
    }

    /// Whether a client event id was already stored in this trace (or earlier in this batch).
    fn seen_key(&self, tx: &Transaction<'_>, key: Option<&str>) -> Result<bool, StoreError> {
        let Some(key) = key else { return Ok(false) };
        if self.rows.iter().any(|r| r.key.as_deref() == Some(key)) {
            return Ok(true);
        }
        if self.fresh {
            return Ok(false);
        }
        tx.prepare_cached("SELECT 1 FROM events WHERE trace_ref = ?1 AND dedup_key = ?2")
            .and_then(|mut s| s.exists(params![self.trace.row.rowid, key]))
            .map_err(internal)
    }

    /// Changes the state; callers that must refuse check the transition before changing
    /// anything else.
    fn change_state(&mut self, to: State, reason: Option<String>) -> Result<(), StoreError> {
        let from = self.trace.row.trace.state.clone();
        let changed = from
            .check_transition(&to)
            .map_err(|e| StoreError::Conflict(e.to_string()))?;
        if !changed {
            return Ok(());
        }
        self.trace.row.trace.state = to.clone();
        let now = self.now;
        let change = StateChange {
            from,
            to: to.clone(),
            reason: reason.clone(),
        };
        self.write_event(now, None, None, EventBody::StateChanged(change))?;
        if to.is_terminal() {
            let r = self.ctx.retention;
            let row = &mut self.trace.row;
            row.trace.ended_at = Some(now);
            row.trace.expires_at = now.saturating_add(r.terminal_trace_ttl);
            row.data_expires_at = now.saturating_add(r.terminal_data_ttl).unix_nanos();
            let ended = TraceEnded {
                state: to,
                reason,
                rollups: row.trace.rollups.clone(),
            };
            self.write_event(now, None, None, EventBody::TraceEnded(ended))?;
        }
        Ok(())
    }

    fn write_event(
        &mut self,
        time: Timestamp,
        span_id: Option<SpanId>,
        component: Option<String>,
        body: EventBody,
    ) -> Result<(), StoreError> {
        self.write_keyed_event(time, span_id, component, None, body)
    }

    fn write_keyed_event(
        &mut self,
        time: Timestamp,
        span_id: Option<SpanId>,
        component: Option<String>,
        key: Option<String>,
        mut body: EventBody,
    ) -> Result<(), StoreError> {
        strip_event_body(
            &mut body,
            self.trace.row.trace.level,
            self.ctx.capture.max_content_bytes,
        );
        let json = serde_json::to_string(&body).map_err(|e| StoreError::Internal(e.to_string()))?;
        self.push_event(time, span_id, component, key, body, json);
        Ok(())
    }

    fn push_event(
        &mut self,
        time: Timestamp,
        span_id: Option<SpanId>,
        component: Option<String>,
        key: Option<String>,
        body: EventBody,
        body_json: String,
    ) {
        let t = &mut self.trace.row.trace;
        t.last_seq += 1;
        self.rows.push(EventRow {
            seq: t.last_seq as i64,
            time: time.unix_nanos(),
            ty: body.event_type().as_str(),
            span_id: span_id.map(|s| s.as_u64() as i64),
            component: component.clone(),
            key,
            body: body_json,
        });
        self.events.push(Event {
            trace_id: t.trace_id,
            seq: t.last_seq,
            time,
            component_id: component,
            body,
        });
    }

    /// Inserts the pending event rows, a few statements for the whole command.
    fn flush(&mut self, tx: &Transaction<'_>) -> Result<(), StoreError> {
        let rowid = self.trace.row.rowid;
        for chunk in self.rows.chunks(ROWS_PER_INSERT) {
            let sql = insert_sql(chunk.len());
            let mut stmt = tx.prepare_cached(&sql).map_err(internal)?;
            let mut args: Vec<&dyn ToSql> = Vec::with_capacity(chunk.len() * 8);
            for r in chunk {
                args.extend([
                    &rowid as &dyn ToSql,
                    &r.seq,
                    &r.time,
                    &r.ty,
                    &r.span_id,
                    &r.component,
                    &r.key,
                    &r.body,
                ]);
            }
            stmt.execute(args.as_slice()).map_err(internal)?;
        }
        self.rows.clear();
        Ok(())
    }

    /// Writes the trace row and its events. The UPDATE names only the columns that changed:
    /// SQLite rewrites the entries of every index on a column named in `SET`, changed or
    /// not, and the traces table has ten indexes; most appends move only the activity index.
    fn save(&mut self, tx: &Transaction<'_>) -> Result<(), StoreError> {
        use rusqlite::types::Value;
        let now = self.now;
        let activity_moved = self.trace.row.trace.last_activity_at != now;
        self.trace.row.trace.last_activity_at = now;
        let indexed = IndexedColumns::of(&self.trace.row);
        let row = &self.trace.row;
        let t = &row.trace;
        let rollups = to_json(&t.rollups)?;
        let (last_seq, errors) = (t.last_seq as i64, t.rollups.error_count as i64);
        if self.fresh {
            let metadata = to_json(&t.metadata)?;
            tx.prepare_cached(
                "INSERT INTO traces (tenant, trace_id, name, agent_id, session_id, user_id, state, \
                 level, created_at, last_activity_at, ended_at, expires_at, data_expires_at, \
                 last_seq, error_count, duration_ms, metadata, rollups) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18)",
            )
            .and_then(|mut s| {
                s.execute(params![
                    t.tenant,
                    &t.trace_id.to_bytes()[..],
                    t.name,
                    t.agent_id,
                    t.session_id,
                    t.user_id,
                    t.state.as_str(),
                    t.level as i64,
                    t.created_at.unix_nanos(),
                    now.unix_nanos(),
                    t.ended_at.map(Timestamp::unix_nanos),
                    t.expires_at.unix_nanos(),
                    row.data_expires_at,
                    last_seq,
                    errors,
                    t.rollups.duration_ms,
                    metadata,
                    rollups
                ])
            })
            .map_err(internal)?;
            self.trace.row.rowid = tx.last_insert_rowid();
            self.fresh = false;
        } else {
            let mut sql = String::from(
                "UPDATE traces SET last_seq = ?2, error_count = ?3, duration_ms = ?4, rollups = ?5",
            );
            let mut args = vec![
                Value::Integer(row.rowid),
                Value::Integer(last_seq),
                Value::Integer(errors),
                t.rollups.duration_ms.map_or(Value::Null, Value::Real),
                Value::Text(rollups),
            ];
            let mut set = |col: &str, v: Value| {
                args.push(v);
                sql.push_str(&format!(", {col} = ?{}", args.len()));
            };
            let text = |v: &Option<String>| v.clone().map_or(Value::Null, Value::Text);
            let old = &self.stored;
            if activity_moved {
                set("last_activity_at", Value::Integer(now.unix_nanos()));
            }
            if indexed.name != old.name {
                set("name", text(&t.name));
            }
            if indexed.agent_id != old.agent_id {
                set("agent_id", text(&t.agent_id));
            }
            if indexed.session_id != old.session_id {
                set("session_id", text(&t.session_id));
            }
            if indexed.user_id != old.user_id {
                set("user_id", text(&t.user_id));
            }
            if indexed.state != old.state {
                set("state", Value::Text(t.state.as_str().into()));
            }
            if indexed.ended_at != old.ended_at {
                let v = t
                    .ended_at
                    .map_or(Value::Null, |e| Value::Integer(e.unix_nanos()));
                set("ended_at", v);
            }
            if indexed.expires_at != old.expires_at {
                set("expires_at", Value::Integer(t.expires_at.unix_nanos()));
            }
            if indexed.data_expires_at != old.data_expires_at {
                set("data_expires_at", Value::Integer(row.data_expires_at));
            }
            if self.metadata_changed {
                set("metadata", Value::Text(to_json(&t.metadata)?));
            }
            sql.push_str(" WHERE id = ?1");
            tx.prepare_cached(&sql)
                .and_then(|mut s| s.execute(rusqlite::params_from_iter(args)))
                .map_err(internal)?;
        }
        self.stored = indexed;
        self.metadata_changed = false;
        self.flush(tx)
    }

    /// Hands the trace back to the cache; returns the events written.
    fn finish(self, cache: &mut TraceCache) -> Vec<Event> {
        cache.put(self.trace);
        self.events
    }
}

fn to_json<T: serde::Serialize>(v: &T) -> Result<String, StoreError> {
    serde_json::to_string(v).map_err(|e| StoreError::Internal(e.to_string()))
}

/// The indexed columns of `traces` other than `last_activity_at` (which `save` handles on
/// its own), as last written.
#[derive(PartialEq)]
struct IndexedColumns {
    name: Option<String>,
    agent_id: Option<String>,
    session_id: Option<String>,
    user_id: Option<String>,
    state: State,
    ended_at: Option<Timestamp>,
    expires_at: Timestamp,
    data_expires_at: i64,
}

impl IndexedColumns {
    fn of(row: &TraceRow) -> IndexedColumns {
        let t = &row.trace;
        IndexedColumns {
            name: t.name.clone(),
            agent_id: t.agent_id.clone(),
            session_id: t.session_id.clone(),
            user_id: t.user_id.clone(),
            state: t.state.clone(),
            ended_at: t.ended_at,
            expires_at: t.expires_at,
            data_expires_at: row.data_expires_at,
        }
    }
}

/// `INSERT INTO events … VALUES (…), (…)` for `rows` rows.
fn insert_sql(rows: usize) -> String {
    let mut sql = String::from(
        "INSERT INTO events (trace_ref, seq, time, type, span_id, component_id, dedup_key, body) VALUES ",
    );
    for i in 0..rows {
        if i > 0 {
            sql.push_str(", ");
        }
        sql.push_str("(?, ?, ?, ?, ?, ?, ?, ?)");
    }
    sql
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The sweep reads the partial active index from its idle end: its cost follows the
    /// traces it finds, not the number of traces.
    #[test]
    fn the_orphan_sweep_reads_the_active_index() {
        let mut conn = rusqlite::Connection::open_in_memory().expect("open");
        super::super::schema::migrate(&mut conn).expect("migrate");
        let plan: Vec<String> = conn
            .prepare(&format!("EXPLAIN QUERY PLAN {ORPHAN_CANDIDATES_SQL}"))
            .expect("prepare")
            .query_map(params![0, 0, 10], |r| r.get::<_, String>(3))
            .expect("plan")
            .collect::<Result<_, _>>()
            .expect("rows");
        let plan = plan.join("; ");
        assert!(plan.contains("USING INDEX traces_active"), "{plan}");
        assert!(!plan.contains("TEMP B-TREE"), "no sort: {plan}");
    }
}
