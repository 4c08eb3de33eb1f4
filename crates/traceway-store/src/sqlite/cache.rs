//! What the writer remembers of recently written traces, so a command costs no lookups:
//! the trace row and the state of each span (ended, or running with its body, which the
//! end will be merged into). The writer is the only writer of the database, so a cached
//! entry is authoritative; a miss is loaded from the database. Bounded: the least recently
//! used entries are dropped past the capacity.
//!
//! Another process may open the same file (two servers on one data directory). Its commits
//! change `PRAGMA data_version` as seen by this connection; the writer checks it at the start
//! of every group ([`TraceCache::sync`]) and forgets everything when it moved, so the cache
//! never disagrees with what another process wrote.

use std::collections::HashMap;

use rusqlite::{params, OptionalExtension, Transaction};
use traceway_core::{MessageFill, TraceId};

use super::row::{read_trace_row, TraceRow, TRACE_COLUMNS};
use super::schema::internal;
use crate::write::SpanState;
use crate::BackendError;

/// A trace as the writer holds it between commands.
pub(crate) struct CachedTrace {
    pub row: TraceRow,
    pub spans: HashMap<u64, SpanState>,
    /// Message fills waiting for spans not stored yet (ADR 027), as in `pending_fills`.
    pub pending: PendingFills,
    last_used: u64,
}

/// A trace's pending message fills by span, in arrival order.
pub(crate) type PendingFills = HashMap<u64, Vec<MessageFill>>;

impl CachedTrace {
    #[cfg(test)]
    pub fn new(row: TraceRow) -> CachedTrace {
        CachedTrace::from_parts(row, HashMap::new(), PendingFills::new())
    }

    pub fn from_parts(
        row: TraceRow,
        spans: HashMap<u64, SpanState>,
        pending: PendingFills,
    ) -> CachedTrace {
        CachedTrace {
            row,
            spans,
            pending,
            last_used: 0,
        }
    }

    pub fn into_parts(self) -> (TraceRow, HashMap<u64, SpanState>, PendingFills) {
        (self.row, self.spans, self.pending)
    }
}

pub(crate) struct TraceCache {
    map: HashMap<(String, TraceId), CachedTrace>,
    capacity: usize,
    tick: u64,
    /// `PRAGMA data_version` when the cache was last known to match the database.
    data_version: Option<i64>,
}

impl TraceCache {
    pub fn new(capacity: usize) -> TraceCache {
        TraceCache {
            map: HashMap::new(),
            capacity: capacity.max(1),
            tick: 0,
            data_version: None,
        }
    }

    /// Called inside the group's write transaction (so no other process can commit until
    /// it ends): forgets everything if another connection committed since the last group.
    /// Our own commits do not move `data_version`; a WAL reset by a `TRUNCATE` checkpoint
    /// may, which costs only a reload.
    pub fn sync(&mut self, tx: &Transaction<'_>) -> Result<(), BackendError> {
        let v: i64 = tx
            .query_row("PRAGMA data_version", [], |r| r.get(0))
            .map_err(internal)?;
        if self.data_version != Some(v) {
            if self.data_version.is_some() && !self.map.is_empty() {
                tracing::debug!("database changed by another connection; writer cache emptied");
            }
            self.map.clear();
            self.data_version = Some(v);
        }
        Ok(())
    }

    /// Drops one trace (it was deleted).
    /// The cached entry of a trace, if it is cached (nothing is loaded).
    pub fn get_mut(&mut self, tenant: &str, id: TraceId) -> Option<&mut CachedTrace> {
        self.map.get_mut(&(tenant.to_string(), id))
    }

    pub fn forget(&mut self, tenant: &str, id: TraceId) {
        self.map.remove(&(tenant.to_string(), id));
    }

    /// Takes the trace out of the cache, or loads it (expired or not) from the database.
    /// The caller puts it back with [`TraceCache::put`] once its command is done.
    pub fn take(
        &mut self,
        tx: &Transaction<'_>,
        tenant: &str,
        id: TraceId,
    ) -> Result<Option<CachedTrace>, BackendError> {
        if let Some(t) = self.map.remove(&(tenant.to_string(), id)) {
            return Ok(Some(t));
        }
        let Some(row) = load_row(tx, tenant, id)? else {
            return Ok(None);
        };
        let spans = load_spans(tx, row.rowid)?;
        let pending = load_pending(tx, row.rowid)?;
        Ok(Some(CachedTrace {
            row,
            spans,
            pending,
            last_used: 0,
        }))
    }

    pub fn put(&mut self, t: CachedTrace) {
        self.tick += 1;
        let key = (t.row.trace.tenant.clone(), t.row.trace.trace_id);
        self.map.insert(
            key,
            CachedTrace {
                last_used: self.tick,
                ..t
            },
        );
        if self.map.len() > self.capacity {
            self.evict();
        }
    }

    /// Drops the least recently used eighth, so eviction costs O(1) per insert on average.
    fn evict(&mut self) {
        let keep = self.capacity - self.capacity / 8;
        let mut ages: Vec<u64> = self.map.values().map(|t| t.last_used).collect();
        let cut = ages.len() - keep;
        let (_, threshold, _) = ages.select_nth_unstable(cut - 1);
        let threshold = *threshold;
        self.map.retain(|_, t| t.last_used > threshold);
    }

    /// Forgets everything (after a rollback, or a bulk delete).
    pub fn clear(&mut self) {
        self.map.clear();
        self.data_version = None;
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.map.len()
    }
}

fn load_row(
    tx: &Transaction<'_>,
    tenant: &str,
    id: TraceId,
) -> Result<Option<TraceRow>, BackendError> {
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

/// The trace's pending message fills (usually none: one indexed probe per cache miss).
fn load_pending(tx: &Transaction<'_>, rowid: i64) -> Result<PendingFills, BackendError> {
    let mut stmt = tx
        .prepare_cached("SELECT span_id, body FROM pending_fills WHERE trace_ref = ?1 ORDER BY id")
        .map_err(internal)?;
    let mut rows = stmt.query([rowid]).map_err(internal)?;
    let mut pending = PendingFills::new();
    while let Some(r) = rows.next().map_err(internal)? {
        let span_id = r.get::<_, i64>(0).map_err(internal)? as u64;
        let body: String = r.get(1).map_err(internal)?;
        let fill =
            serde_json::from_str(&body).map_err(|e| BackendError::internal_by("stored fill", e))?;
        pending.entry(span_id).or_default().push(fill);
    }
    Ok(pending)
}

/// Rebuilds span states from the event log; only spans still running are parsed.
fn load_spans(tx: &Transaction<'_>, rowid: i64) -> Result<HashMap<u64, SpanState>, BackendError> {
    let mut stmt = tx
        .prepare_cached(
            "SELECT type, span_id, component_id, body FROM events \
             WHERE trace_ref = ?1 AND type IN ('span_started', 'span_ended') ORDER BY seq",
        )
        .map_err(internal)?;
    let mut rows = stmt.query([rowid]).map_err(internal)?;
    let mut started: HashMap<u64, String> = HashMap::new();
    let mut spans = HashMap::new();
    while let Some(r) = rows.next().map_err(internal)? {
        let ty: String = r.get(0).map_err(internal)?;
        let span_id = r.get::<_, i64>(1).map_err(internal)? as u64;
        if ty == "span_ended" {
            started.remove(&span_id);
            spans.insert(
                span_id,
                SpanState::Ended {
                    component: r.get(2).map_err(internal)?,
                },
            );
        } else if !spans.contains_key(&span_id) {
            started.insert(span_id, r.get(3).map_err(internal)?);
        }
    }
    for (id, body) in started {
        let span = super::span_of_event_body(&body)?;
        spans.insert(id, SpanState::Running(Box::new(span)));
    }
    Ok(spans)
}

#[cfg(test)]
mod tests {
    use super::*;
    use traceway_core::{Level, Rollups, State, Timestamp, Trace};

    fn entry(n: u128) -> CachedTrace {
        let t = Timestamp::from_unix_millis(0);
        CachedTrace::new(TraceRow {
            rowid: n as i64,
            data_expires_at: 0,
            trace: Trace {
                trace_id: TraceId::from_u128(n).expect("non-zero"),
                tenant: "t".into(),
                name: None,
                agent_id: None,
                session_id: None,
                user_id: None,
                state: State::Running,
                level: Level::Detailed,
                created_at: t,
                last_activity_at: t,
                ended_at: None,
                expires_at: t,
                last_seq: 0,
                metadata: Default::default(),
                rollups: Rollups::default(),
            },
        })
    }

    #[test]
    fn eviction_keeps_the_most_recently_used() {
        let mut c = TraceCache::new(16);
        for n in 1..=40u128 {
            c.put(entry(n));
            assert!(c.len() <= 16);
        }
        let key = |n: u128| ("t".to_string(), TraceId::from_u128(n).expect("id"));
        assert!(c.map.contains_key(&key(40)) && c.map.contains_key(&key(39)));
        assert!(!c.map.contains_key(&key(1)));
    }
}
