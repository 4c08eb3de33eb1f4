//! What each command does inside the group's transaction.

use super::*;

pub(super) fn execute(
    tx: &Transaction<'_>,
    cache: &mut TraceCache,
    op: Op,
    now: Timestamp,
    ctx: &WriterCtx,
) -> Result<OpResult, OpError> {
    match op {
        Op::Workflow(op) => Ok(super::super::workflows::execute(tx, op, now)?),
        Op::Create { tenant, new } => {
            let id = new.trace_id.unwrap_or_else(TraceId::new_v7);
            let (prior, loaded) = load(tx, cache, &tenant, id)?;
            match ctx.model(now).create(&tenant, id, new, loaded) {
                Ok(w) => {
                    Ok(persist(tx, cache, prior, w).map(|p| OpResult::Trace(p.trace, p.events))?)
                }
                Err(r) => {
                    put_back(cache, prior, r.loaded);
                    Err(r.error.into())
                }
            }
        }
        Op::Append(req) => {
            let AppendRequest {
                tenant,
                trace_id,
                create_if_missing,
                events,
                fills,
                end,
            } = req;
            let (prior, loaded) = load(tx, cache, &tenant, trace_id)?;
            let model = ctx.model(now);
            match model.append(&tenant, trace_id, loaded, create_if_missing, events, end) {
                Ok(w) => {
                    let w = model.fill(w, fills)?;
                    if w.fills.dropped() > 0 {
                        tracing::warn!(trace_id = %trace_id, tenant = %tenant, dropped = w.fills.dropped(), "message fills dropped: the trace's pending fills are full");
                    }
                    let p = persist(tx, cache, prior, w)?;
                    let outcome = AppendOutcome {
                        accepted: p.accepted,
                        duplicates: p.duplicates,
                        created: p.created,
                        last_seq: p.trace.last_seq,
                        stored: EventCounts::of(&p.events),
                        terminal: p.trace.state.is_terminal(),
                    };
                    Ok(OpResult::Append(outcome, Box::new(p.trace), p.events))
                }
                Err(r) => {
                    put_back(cache, prior, r.loaded);
                    Err(r.error.into())
                }
            }
        }
        Op::Update { tenant, id, patch } => {
            let (prior, loaded) = load(tx, cache, &tenant, id)?;
            match ctx.model(now).patch(id, loaded, patch) {
                Ok(w) => {
                    Ok(persist(tx, cache, prior, w).map(|p| OpResult::Trace(p.trace, p.events))?)
                }
                Err(r) => {
                    put_back(cache, prior, r.loaded);
                    Err(r.error.into())
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
        Op::Keys(op) => Ok(crate::sqlite::keys::execute(tx, op, now).map(OpResult::Keys)?),
        Op::PutAnalyses { digests } => {
            let stored = digests
                .into_iter()
                .map(|(tenant, id, digest)| {
                    put_analysis(tx, cache, &tenant, id, digest, now).map(|n| n > 0)
                })
                .collect::<Result<Vec<bool>, _>>()?;
            Ok(OpResult::Stored(stored))
        }
        Op::AcquireLease { name, holder, ttl } => {
            Ok(acquire_lease(tx, name, holder, ttl, now).map(OpResult::Lease)?)
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
            Ok(
                sweep_orphans(tx, cache, now.saturating_sub(orphan_after), limit, now, ctx)
                    .map(OpResult::Orphaned)?,
            )
        }
        Op::PurgeExpired { fence, max_rows } => {
            check_fence(tx, &fence, now)?;
            Ok(purge_expired(tx, cache, max_rows.max(1), now).map(OpResult::Purged)?)
        }
    }
}

/// Refuses a fenced command unless its lease is still the current one.
pub(super) fn check_fence(
    tx: &Transaction<'_>,
    fence: &Lease,
    now: Timestamp,
) -> Result<(), LifecycleError> {
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
        Err(LeaseLost::of(fence).into())
    }
}

pub(super) fn acquire_lease(
    tx: &Transaction<'_>,
    name: String,
    holder: String,
    ttl: Duration,
    now: Timestamp,
) -> Result<Option<Lease>, BackendError> {
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

/// Sets `rollups.analysis` on a live trace whose `last_seq` is still the digest's; 1 when
/// it did. Only the `rollups` column is rewritten (no event, no activity); a cached entry
/// is changed in place, so the next write keeps the digest.
fn put_analysis(
    tx: &Transaction<'_>,
    cache: &mut TraceCache,
    tenant: &str,
    id: TraceId,
    digest: traceway_core::analysis::AnalysisDigest,
    now: Timestamp,
) -> Result<u64, BackendError> {
    let write = |rowid: i64, rollups: &traceway_core::Rollups| -> Result<(), BackendError> {
        let json = to_json(rollups)?;
        tx.prepare_cached("UPDATE traces SET rollups = ?2 WHERE id = ?1")
            .and_then(|mut s| s.execute(params![rowid, json]))
            .map_err(internal)?;
        Ok(())
    };
    if let Some(t) = cache.get_mut(tenant, id) {
        let row = &mut t.row;
        if !row.is_live(now) || row.trace.last_seq != digest.at_seq {
            return Ok(0);
        }
        row.trace.rollups.analysis = Some(digest);
        write(row.rowid, &row.trace.rollups)?;
        return Ok(1);
    }
    let found: Option<(i64, String)> = tx
        .prepare_cached(
            "SELECT id, rollups FROM traces WHERE tenant = ?1 AND trace_id = ?2 \
             AND expires_at > ?3 AND last_seq = ?4",
        )
        .and_then(|mut s| {
            s.query_row(
                params![
                    tenant,
                    &id.to_bytes()[..],
                    now.unix_nanos(),
                    digest.at_seq as i64
                ],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()
        })
        .map_err(internal)?;
    let Some((rowid, json)) = found else {
        return Ok(0);
    };
    let mut rollups: traceway_core::Rollups =
        serde_json::from_str(&json).map_err(|e| BackendError::internal_by("stored rollups", e))?;
    rollups.analysis = Some(digest);
    write(rowid, &rollups)?;
    Ok(1)
}
