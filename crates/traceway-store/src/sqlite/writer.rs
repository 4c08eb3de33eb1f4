//! The single writer: one thread owns the write connection, takes commands from a bounded
//! queue and runs every command that is waiting as one transaction (group commit); every
//! reply is sent only after the transaction commits. It keeps the traces it recently wrote
//! in a [`TraceCache`], so a command needs no lookups, and writes a command's events with
//! one multi-row INSERT.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rusqlite::types::ToSql;
use rusqlite::{params, OptionalExtension, Transaction};
use tokio::sync::{mpsc, oneshot};
use traceway_core::{Event, EventBody, NewTrace, State, Timestamp, Trace, TraceId, TracePatch};

use super::cache::{CachedTrace, TraceCache};
use super::row::TraceRow;
use super::schema::internal;
use crate::write::{Loaded, Model, Orphan, SpanState, Stored, Written};
use crate::{
    AppendOutcome, AppendRequest, CaptureConfig, Clock, EventCounts, Lease, Orphaned, Purged,
    Retention, StoreError,
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
    /// An API-key write (`sqlite/keys.rs`).
    Keys(super::keys::KeyOp),
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
            capture: self.capture,
        }
    }
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
                Ok(OpResult::Append(_, t, events)) => publish(t, events),
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
            let id = new.trace_id.unwrap_or_else(TraceId::new_v7);
            let (prior, loaded) = load(tx, cache, &tenant, id)?;
            match ctx.model(now).create(&tenant, id, new, loaded) {
                Ok(w) => persist(tx, cache, prior, w).map(|p| OpResult::Trace(p.trace, p.events)),
                Err(r) => {
                    put_back(cache, prior, r.loaded);
                    Err(r.error)
                }
            }
        }
        Op::Append(req) => {
            let AppendRequest {
                tenant,
                trace_id,
                create_if_missing,
                events,
                end,
            } = req;
            let (prior, loaded) = load(tx, cache, &tenant, trace_id)?;
            let model = ctx.model(now);
            match model.append(&tenant, trace_id, loaded, create_if_missing, events, end) {
                Ok(w) => {
                    let p = persist(tx, cache, prior, w)?;
                    let outcome = AppendOutcome {
                        accepted: p.accepted,
                        duplicates: p.duplicates,
                        created: p.created,
                        last_seq: p.trace.last_seq,
                        stored: EventCounts::of(&p.events),
                    };
                    Ok(OpResult::Append(outcome, Box::new(p.trace), p.events))
                }
                Err(r) => {
                    put_back(cache, prior, r.loaded);
                    Err(r.error)
                }
            }
        }
        Op::Update { tenant, id, patch } => {
            let (prior, loaded) = load(tx, cache, &tenant, id)?;
            match ctx.model(now).patch(id, loaded, patch) {
                Ok(w) => persist(tx, cache, prior, w).map(|p| OpResult::Trace(p.trace, p.events)),
                Err(r) => {
                    put_back(cache, prior, r.loaded);
                    Err(r.error)
                }
            }
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
        Op::Keys(op) => super::keys::execute(tx, op, now).map(OpResult::Keys),
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
        let (prior, Some(loaded)) = load(tx, cache, &tenant, id)? else {
            continue;
        };
        let (trace, events, idle) = match ctx.model(now).orphan(loaded, idle_before)? {
            Orphan::NotIdle(loaded) => {
                put_back(cache, prior, Some(loaded));
                continue;
            }
            Orphan::Ended(w, idle) => {
                let p = persist(tx, cache, prior, w)?;
                (p.trace, p.events, idle)
            }
        };
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

/// Rows per INSERT statement (8 columns each, well under SQLite's parameter limit).
const ROWS_PER_INSERT: usize = 16;

/// The write model's port on SQLite: span states from the cache entry, client ids from the
/// `events` table (the unique `dedup_key` index).
pub(crate) struct Port<'a, 'c> {
    spans: HashMap<u64, SpanState>,
    tx: &'a Transaction<'c>,
    rowid: i64,
}

impl Stored for Port<'_, '_> {
    fn span(&self, id: u64) -> Option<&SpanState> {
        self.spans.get(&id)
    }

    fn client_id_seen(&self, id: &str) -> Result<bool, StoreError> {
        self.tx
            .prepare_cached("SELECT 1 FROM events WHERE trace_ref = ?1 AND dedup_key = ?2")
            .and_then(|mut s| s.exists(params![self.rowid, id]))
            .map_err(internal)
    }
}

/// What the database holds of a trace before a command, so `save` rewrites only what the
/// command changed.
struct Prior {
    rowid: i64,
    indexed: IndexedColumns,
    last_activity_at: Timestamp,
}

/// Takes a trace out of the cache (or the database) for the write model.
fn load<'a, 'c>(
    tx: &'a Transaction<'c>,
    cache: &mut TraceCache,
    tenant: &str,
    id: TraceId,
) -> Result<(Option<Prior>, Option<Loaded<Port<'a, 'c>>>), StoreError> {
    let Some(t) = cache.take(tx, tenant, id)? else {
        return Ok((None, None));
    };
    let (row, spans) = t.into_parts();
    let prior = Prior {
        rowid: row.rowid,
        indexed: IndexedColumns::of(&row.trace, row.data_expires_at),
        last_activity_at: row.trace.last_activity_at,
    };
    let loaded = Loaded {
        trace: row.trace,
        data_expires_at: row.data_expires_at,
        stored: Port {
            spans,
            tx,
            rowid: row.rowid,
        },
    };
    Ok((Some(prior), Some(loaded)))
}

/// Puts a refused command's trace back into the cache, unchanged.
fn put_back(cache: &mut TraceCache, prior: Option<Prior>, loaded: Option<Loaded<Port<'_, '_>>>) {
    if let (Some(p), Some(l)) = (prior, loaded) {
        let row = TraceRow {
            rowid: p.rowid,
            data_expires_at: l.data_expires_at,
            trace: l.trace,
        };
        cache.put(CachedTrace::from_parts(row, l.stored.spans));
    }
}

/// Persists what the write model changed: the trace row (inserted when new, over a stale
/// trace's data; otherwise an UPDATE of the columns that changed), then the events, with
/// one multi-row INSERT per few rows. The trace goes back into the cache; returns it with
/// its events.
fn persist(
    tx: &Transaction<'_>,
    cache: &mut TraceCache,
    prior: Option<Prior>,
    w: Written<Port<'_, '_>>,
) -> Result<Persisted, StoreError> {
    let Written {
        trace: t,
        data_expires_at,
        stored,
        created,
        metadata_changed,
        events,
        spans,
        client_ids,
        accepted,
        duplicates,
    } = w;
    let rowid = match prior {
        Some(p) if !created => {
            update_row(tx, &p, &t, data_expires_at, metadata_changed)?;
            p.rowid
        }
        stale => {
            if let Some(p) = stale {
                delete_trace_data(tx, p.rowid)?;
            }
            insert_row(tx, &t, data_expires_at)?
        }
    };
    insert_events(tx, rowid, &events, &client_ids)?;
    let mut all_spans = stored.map(|s| s.spans).unwrap_or_default();
    all_spans.extend(spans);
    let out = Persisted {
        trace: t.clone(),
        events,
        created,
        accepted,
        duplicates,
    };
    let row = TraceRow {
        rowid,
        data_expires_at,
        trace: t,
    };
    cache.put(CachedTrace::from_parts(row, all_spans));
    Ok(out)
}

/// What a command persisted.
struct Persisted {
    trace: Trace,
    events: Vec<Event>,
    created: bool,
    accepted: u32,
    duplicates: u32,
}

fn insert_row(tx: &Transaction<'_>, t: &Trace, data_expires_at: i64) -> Result<i64, StoreError> {
    let metadata = to_json(&t.metadata)?;
    let rollups = to_json(&t.rollups)?;
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
            t.last_activity_at.unix_nanos(),
            t.ended_at.map(Timestamp::unix_nanos),
            t.expires_at.unix_nanos(),
            data_expires_at,
            t.last_seq as i64,
            t.rollups.error_count as i64,
            t.rollups.duration_ms,
            metadata,
            rollups
        ])
    })
    .map_err(internal)?;
    Ok(tx.last_insert_rowid())
}

/// The UPDATE names only the columns that changed: SQLite rewrites the entries of every
/// index on a column named in `SET`, changed or not, and the traces table has ten indexes;
/// most appends move only the activity index.
fn update_row(
    tx: &Transaction<'_>,
    old: &Prior,
    t: &Trace,
    data_expires_at: i64,
    metadata_changed: bool,
) -> Result<(), StoreError> {
    use rusqlite::types::Value;
    let indexed = IndexedColumns::of(t, data_expires_at);
    let mut sql = String::from(
        "UPDATE traces SET last_seq = ?2, error_count = ?3, duration_ms = ?4, rollups = ?5",
    );
    let mut args = vec![
        Value::Integer(old.rowid),
        Value::Integer(t.last_seq as i64),
        Value::Integer(t.rollups.error_count as i64),
        t.rollups.duration_ms.map_or(Value::Null, Value::Real),
        Value::Text(to_json(&t.rollups)?),
    ];
    let mut set = |col: &str, v: Value| {
        args.push(v);
        sql.push_str(&format!(", {col} = ?{}", args.len()));
    };
    let text = |v: &Option<String>| v.clone().map_or(Value::Null, Value::Text);
    let was = &old.indexed;
    if t.last_activity_at != old.last_activity_at {
        set(
            "last_activity_at",
            Value::Integer(t.last_activity_at.unix_nanos()),
        );
    }
    if indexed.name != was.name {
        set("name", text(&t.name));
    }
    if indexed.agent_id != was.agent_id {
        set("agent_id", text(&t.agent_id));
    }
    if indexed.session_id != was.session_id {
        set("session_id", text(&t.session_id));
    }
    if indexed.user_id != was.user_id {
        set("user_id", text(&t.user_id));
    }
    if indexed.state != was.state {
        set("state", Value::Text(t.state.as_str().into()));
    }
    if indexed.ended_at != was.ended_at {
        let v = t
            .ended_at
            .map_or(Value::Null, |e| Value::Integer(e.unix_nanos()));
        set("ended_at", v);
    }
    if indexed.expires_at != was.expires_at {
        set("expires_at", Value::Integer(t.expires_at.unix_nanos()));
    }
    if indexed.data_expires_at != was.data_expires_at {
        set("data_expires_at", Value::Integer(data_expires_at));
    }
    if metadata_changed {
        set("metadata", Value::Text(to_json(&t.metadata)?));
    }
    sql.push_str(" WHERE id = ?1");
    tx.prepare_cached(&sql)
        .and_then(|mut s| s.execute(rusqlite::params_from_iter(args)))
        .map_err(internal)?;
    Ok(())
}

/// An event's body as stored: its JSON, written once into one buffer.
fn body_json(body: &EventBody) -> Result<String, StoreError> {
    let capacity = match body {
        EventBody::SpanStarted(_) | EventBody::SpanEnded(_) => 512,
        _ => 128,
    };
    let mut buf = Vec::with_capacity(capacity);
    serde_json::to_writer(&mut buf, body).map_err(|e| StoreError::Internal(e.to_string()))?;
    String::from_utf8(buf).map_err(|e| StoreError::Internal(e.to_string()))
}

/// Inserts a command's events, a few statements for the whole command; each event's client
/// id (if any) goes into its row's `dedup_key`.
fn insert_events(
    tx: &Transaction<'_>,
    rowid: i64,
    events: &[Event],
    client_ids: &[(u64, String)],
) -> Result<(), StoreError> {
    let mut ids = client_ids.iter().peekable();
    for chunk in events.chunks(ROWS_PER_INSERT) {
        let mut cols = Vec::with_capacity(chunk.len());
        for e in chunk {
            let key = match ids.peek() {
                Some((seq, k)) if *seq == e.seq => {
                    ids.next();
                    Some(k.as_str())
                }
                _ => None,
            };
            cols.push((
                e.seq as i64,
                e.time.unix_nanos(),
                e.body.event_type().as_str(),
                e.body.span_id().map(|s| s.as_u64() as i64),
                key,
                body_json(&e.body)?,
            ));
        }
        let sql = insert_sql(chunk.len());
        let mut stmt = tx.prepare_cached(&sql).map_err(internal)?;
        let mut args: Vec<&dyn ToSql> = Vec::with_capacity(chunk.len() * 8);
        for (e, c) in chunk.iter().zip(&cols) {
            args.extend([
                &rowid as &dyn ToSql,
                &c.0,
                &c.1,
                &c.2,
                &c.3,
                &e.component_id,
                &c.4,
                &c.5,
            ]);
        }
        stmt.execute(args.as_slice()).map_err(internal)?;
    }
    Ok(())
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
    fn of(t: &Trace, data_expires_at: i64) -> IndexedColumns {
        IndexedColumns {
            name: t.name.clone(),
            agent_id: t.agent_id.clone(),
            session_id: t.session_id.clone(),
            user_id: t.user_id.clone(),
            state: t.state.clone(),
            ended_at: t.ended_at,
            expires_at: t.expires_at,
            data_expires_at,
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
