//! The watchdog's commands: the orphan sweep and the purge of expired data.

use super::*;

/// The candidates of the orphan sweep, most idle first, read from the active index.
pub(crate) const ORPHAN_CANDIDATES_SQL: &str = "SELECT tenant, trace_id FROM traces \
     WHERE ended_at IS NULL AND last_activity_at < ?1 AND expires_at > ?2 \
     ORDER BY last_activity_at LIMIT ?3";

pub(super) fn sweep_orphans(
    tx: &Transaction<'_>,
    cache: &mut TraceCache,
    idle_before: Timestamp,
    limit: u32,
    now: Timestamp,
    ctx: &WriterCtx,
) -> Result<Vec<OrphanedTrace>, BackendError> {
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
            .ok_or_else(|| BackendError::internal("zero trace id in the active index"))?;
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
pub(super) fn purge_expired(
    tx: &Transaction<'_>,
    cache: &mut TraceCache,
    max_rows: u32,
    now: Timestamp,
) -> Result<Purged, BackendError> {
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

pub(super) fn expired_traces(
    tx: &Transaction<'_>,
    sql: &str,
    now_ns: i64,
    limit: i64,
) -> Result<Vec<(i64, String, TraceId)>, BackendError> {
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

/// Deletes up to `limit` events of a trace; true when none are left. With the last of
/// them go the trace's pending message fills (at most a few hundred rows, ADR 027).
pub(super) fn delete_events(
    tx: &Transaction<'_>,
    rowid: i64,
    limit: i64,
) -> Result<(u64, bool), BackendError> {
    let (n, complete) = if limit <= 0 {
        let any = tx
            .prepare_cached("SELECT 1 FROM events WHERE trace_ref = ?1 LIMIT 1")
            .and_then(|mut s| s.exists([rowid]))
            .map_err(internal)?;
        (0, !any)
    } else {
        let n = tx
            .prepare_cached(
                "DELETE FROM events WHERE id IN \
                 (SELECT id FROM events WHERE trace_ref = ?1 ORDER BY seq LIMIT ?2)",
            )
            .and_then(|mut s| s.execute(params![rowid, limit]))
            .map_err(internal)? as i64;
        (n as u64, n < limit)
    };
    if complete {
        tx.prepare_cached("DELETE FROM pending_fills WHERE trace_ref = ?1")
            .and_then(|mut s| s.execute([rowid]))
            .map_err(internal)?;
    }
    Ok((n, complete))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The sweep reads the partial active index from its idle end: its cost follows the
    /// traces it finds, not the number of traces.
    #[test]
    fn the_orphan_sweep_reads_the_active_index() {
        let mut conn = rusqlite::Connection::open_in_memory().expect("open");
        crate::sqlite::schema::migrate(&mut conn).expect("migrate");
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
