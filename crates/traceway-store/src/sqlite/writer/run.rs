//! The loop: gather waiting commands into a group, run it in one transaction, hand the replies on.

use super::*;

/// Longest a group waits for more commands before it commits.
pub(super) const GATHER_WAIT: Duration = Duration::from_micros(200);

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
pub(super) fn restart_wal_if_full(conn: &rusqlite::Connection, ctx: &WriterCtx) {
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

/// Runs a group in one transaction. Commands refuse (404, 409, 400) before they change
/// anything, so a refusal needs no rollback; an internal error (I/O, corruption) rolls back
/// the whole group, every command in it fails unacknowledged, and the cache, which may be
/// ahead of the database, is dropped. Per-command savepoints would isolate that rare case
/// but cost a sub-journal copy of every page a command touches (ADR 002).
pub(super) fn commit_group(
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
            tracing::error!(error = %crate::ErrorChain(&e), "begin failed");
            cache.clear();
            let replies = group.drain(..).map(|(_, reply)| reply).collect();
            send_acks(acks, Acks::Failed(replies, e));
            return;
        }
    };
    let mut results = Vec::with_capacity(group.len());
    let mut failure: Option<BackendError> = None;
    for (op, reply) in group.drain(..) {
        if failure.is_some() {
            results.push((
                reply,
                Err(BackendError::internal("aborted with its write group").into()),
            ));
            continue;
        }
        let r = execute(&tx, cache, op, now, ctx);
        if let Err(OpError::Backend(e @ BackendError::Internal { .. })) = &r {
            failure = Some(e.clone());
        }
        results.push((reply, r));
    }
    let outcome = match failure {
        Some(e) => Err(e),
        None => tx
            .commit()
            .map_err(|e| BackendError::internal_by("commit", e)),
    };
    match outcome {
        // A lone command with nothing to publish (a workflow context, a lease, a key) is
        // answered here: one wake-up of its caller instead of two (this thread waking the
        // reply thread, which wakes the caller). Nothing it wrote goes to the hub, so the
        // hub's commit order does not depend on which thread replies.
        Ok(()) if results.len() == 1 && !Acker::publishes(&results[0].1) => {
            for (reply, r) in results {
                let _ = reply.send(r);
            }
        }
        Ok(()) => send_acks(acks, Acks::Committed(results)),
        Err(e) => {
            cache.clear();
            tracing::error!(error = %crate::ErrorChain(&e), commands = results.len(), "write group failed and was rolled back");
            let replies = results.into_iter().map(|(reply, _)| reply).collect();
            send_acks(acks, Acks::Failed(replies, e));
        }
    }
}

/// Hands a group's replies to the reply thread; if it is gone (it never stops before the
/// writer does), the callers see their reply channel closed.
pub(super) fn send_acks(acks: &std::sync::mpsc::SyncSender<Acks>, a: Acks) {
    if acks.send(a).is_err() {
        tracing::error!("reply thread is gone; replies dropped");
    }
}
