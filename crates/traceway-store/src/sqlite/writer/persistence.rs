//! Loading a trace for the write model and persisting what it changed.

use super::*;

pub(super) fn delete_trace_data(tx: &Transaction<'_>, rowid: i64) -> Result<(), BackendError> {
    for sql in [
        "DELETE FROM events WHERE trace_ref = ?1",
        "DELETE FROM pending_fills WHERE trace_ref = ?1",
        "DELETE FROM traces WHERE id = ?1",
    ] {
        tx.prepare_cached(sql)
            .and_then(|mut s| s.execute([rowid]))
            .map_err(internal)?;
    }
    Ok(())
}

/// Rows per INSERT statement (8 columns each, well under SQLite's parameter limit).
pub(super) const ROWS_PER_INSERT: usize = 16;

/// The write model's port on SQLite: span states from the cache entry, client ids from the
/// `events` table (the unique `dedup_key` index).
pub(crate) struct Port<'a, 'c> {
    spans: HashMap<u64, SpanState>,
    pending: PendingFills,
    tx: &'a Transaction<'c>,
    rowid: i64,
}

impl Stored for Port<'_, '_> {
    fn span(&self, id: u64) -> Option<&SpanState> {
        self.spans.get(&id)
    }

    fn client_id_seen(&self, id: &str) -> Result<bool, BackendError> {
        self.tx
            .prepare_cached("SELECT 1 FROM events WHERE trace_ref = ?1 AND dedup_key = ?2")
            .and_then(|mut s| s.exists(params![self.rowid, id]))
            .map_err(internal)
    }

    fn span_body(&self, id: u64) -> Result<Option<Span>, BackendError> {
        let body: Option<String> = self
            .tx
            .prepare_cached(
                "SELECT body FROM events WHERE trace_ref = ?1 AND span_id = ?2 \
                 AND type IN ('span_started', 'span_ended') ORDER BY seq DESC LIMIT 1",
            )
            .and_then(|mut s| {
                s.query_row(params![self.rowid, id as i64], |r| r.get(0))
                    .optional()
            })
            .map_err(internal)?;
        body.map(|b| super::super::span_of_event_body(&b))
            .transpose()
    }

    fn pending_fills(&self, id: u64) -> Option<&[MessageFill]> {
        self.pending.get(&id).map(Vec::as_slice)
    }

    fn pending_totals(&self) -> PendingTotals {
        PendingTotals::of(self.pending.values().flatten())
    }
}

/// What the database holds of a trace before a command, so `save` rewrites only what the
/// command changed.
pub(super) struct Prior {
    pub(super) rowid: i64,
    pub(super) indexed: IndexedColumns,
    pub(super) last_activity_at: Timestamp,
}

/// Takes a trace out of the cache (or the database) for the write model.
pub(super) fn load<'a, 'c>(
    tx: &'a Transaction<'c>,
    cache: &mut TraceCache,
    tenant: &str,
    id: TraceId,
) -> Result<(Option<Prior>, Option<Loaded<Port<'a, 'c>>>), BackendError> {
    let Some(t) = cache.take(tx, tenant, id)? else {
        return Ok((None, None));
    };
    let (row, spans, pending) = t.into_parts();
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
            pending,
            tx,
            rowid: row.rowid,
        },
    };
    Ok((Some(prior), Some(loaded)))
}

/// Puts a refused command's trace back into the cache, unchanged.
pub(super) fn put_back(
    cache: &mut TraceCache,
    prior: Option<Prior>,
    loaded: Option<Loaded<Port<'_, '_>>>,
) {
    if let (Some(p), Some(l)) = (prior, loaded) {
        let row = TraceRow {
            rowid: p.rowid,
            data_expires_at: l.data_expires_at,
            trace: l.trace,
        };
        cache.put(CachedTrace::from_parts(
            row,
            l.stored.spans,
            l.stored.pending,
        ));
    }
}

/// Persists what the write model changed: the trace row (inserted when new, over a stale
/// trace's data; otherwise an UPDATE of the columns that changed), then the events, with
/// one multi-row INSERT per few rows. The trace goes back into the cache; returns it with
/// its events.
pub(super) fn persist(
    tx: &Transaction<'_>,
    cache: &mut TraceCache,
    prior: Option<Prior>,
    w: Written<Port<'_, '_>>,
) -> Result<Persisted, BackendError> {
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
        fills,
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
    let bytes = insert_events(tx, rowid, &events, &client_ids)?;
    add_usage(tx, &t.tenant, bytes)?;
    let (mut all_spans, mut pending) = stored.map(|s| (s.spans, s.pending)).unwrap_or_default();
    all_spans.extend(spans);
    persist_pending(tx, rowid, &mut pending, fills.into_pending())?;
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
    cache.put(CachedTrace::from_parts(row, all_spans, pending));
    Ok(out)
}

/// Rewrites the pending fills of each span whose fills changed (ADR 027), and the cache's
/// copy of them.
fn persist_pending(
    tx: &Transaction<'_>,
    rowid: i64,
    cached: &mut PendingFills,
    changed: HashMap<u64, Vec<MessageFill>>,
) -> Result<(), BackendError> {
    for (sid, list) in changed {
        tx.prepare_cached("DELETE FROM pending_fills WHERE trace_ref = ?1 AND span_id = ?2")
            .and_then(|mut s| s.execute(params![rowid, sid as i64]))
            .map_err(internal)?;
        for f in &list {
            let body = to_json(f)?;
            tx.prepare_cached(
                "INSERT INTO pending_fills (trace_ref, span_id, body) VALUES (?1, ?2, ?3)",
            )
            .and_then(|mut s| s.execute(params![rowid, sid as i64, body]))
            .map_err(internal)?;
        }
        if list.is_empty() {
            cached.remove(&sid);
        } else {
            cached.insert(sid, list);
        }
    }
    Ok(())
}

/// What a command persisted.
pub(super) struct Persisted {
    pub(super) trace: Trace,
    pub(super) events: Vec<Event>,
    pub(super) created: bool,
    pub(super) accepted: u32,
    pub(super) duplicates: u32,
}

pub(super) fn insert_row(
    tx: &Transaction<'_>,
    t: &Trace,
    data_expires_at: i64,
) -> Result<i64, BackendError> {
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
pub(super) fn update_row(
    tx: &Transaction<'_>,
    old: &Prior,
    t: &Trace,
    data_expires_at: i64,
    metadata_changed: bool,
) -> Result<(), BackendError> {
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

/// Adds a command's event bytes to its tenant's usage (ADR 040; deletes take them off
/// through a trigger, see `schema.rs`).
pub(super) fn add_usage(
    tx: &Transaction<'_>,
    tenant: &str,
    bytes: u64,
) -> Result<(), BackendError> {
    if bytes == 0 {
        return Ok(());
    }
    tx.prepare_cached(
        "INSERT INTO tenant_usage (tenant, bytes) VALUES (?1, ?2) \
         ON CONFLICT (tenant) DO UPDATE SET bytes = bytes + excluded.bytes",
    )
    .and_then(|mut s| s.execute(params![tenant, bytes as i64]))
    .map_err(internal)?;
    Ok(())
}

/// Inserts a command's events, a few statements for the whole command; each event's client
/// id (if any) goes into its row's `dedup_key`. Returns the bytes of their bodies.
///
/// The bodies of a statement's rows are encoded one after another into one buffer, kept
/// for the whole command, and bound as slices of it: no allocation and no regrowth per
/// body (span bodies run to a few KB, and growing a buffer per body was the largest share
/// of the writer's copying; ADR 043).
pub(super) fn insert_events(
    tx: &Transaction<'_>,
    rowid: i64,
    events: &[Event],
    client_ids: &[(u64, String)],
) -> Result<u64, BackendError> {
    let mut bytes = 0u64;
    let mut ids = client_ids.iter().peekable();
    let mut buf: Vec<u8> = Vec::with_capacity(BODY_BYTES_GUESS * events.len().min(ROWS_PER_INSERT));
    let mut ends = Vec::with_capacity(ROWS_PER_INSERT);
    for chunk in events.chunks(ROWS_PER_INSERT) {
        buf.clear();
        ends.clear();
        for e in chunk {
            serde_json::to_writer(&mut buf, &e.body)
                .map_err(|e| BackendError::internal_by("encode event", e))?;
            ends.push(buf.len());
        }
        bytes += buf.len() as u64;
        let mut cols = Vec::with_capacity(chunk.len());
        let mut start = 0;
        for (e, &end) in chunk.iter().zip(&ends) {
            let key = match ids.peek() {
                Some((seq, k)) if *seq == e.seq => {
                    ids.next();
                    Some(k.as_str())
                }
                _ => None,
            };
            let body = std::str::from_utf8(&buf[start..end])
                .map_err(|e| BackendError::internal_by("encode event", e))?;
            start = end;
            cols.push((
                e.seq as i64,
                e.time.unix_nanos(),
                e.body.event_type().as_str(),
                e.body.span_id().map(|s| s.as_u64() as i64),
                key,
                body,
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
    Ok(bytes)
}

/// A span body's usual size in JSON, for the first reservation of the bodies' buffer.
const BODY_BYTES_GUESS: usize = 2048;

pub(super) fn to_json<T: serde::Serialize>(v: &T) -> Result<String, BackendError> {
    serde_json::to_string(v).map_err(|e| BackendError::internal_by("encode json", e))
}

/// The indexed columns of `traces` other than `last_activity_at` (which `save` handles on
/// its own), as last written.
#[derive(PartialEq)]
pub(super) struct IndexedColumns {
    pub(super) name: Option<String>,
    pub(super) agent_id: Option<String>,
    pub(super) session_id: Option<String>,
    pub(super) user_id: Option<String>,
    pub(super) state: State,
    pub(super) ended_at: Option<Timestamp>,
    pub(super) expires_at: Timestamp,
    pub(super) data_expires_at: i64,
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
pub(super) fn insert_sql(rows: usize) -> String {
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
