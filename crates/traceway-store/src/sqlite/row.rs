//! Mapping between `traces` rows and [`Trace`].

use rusqlite::types::Type;
use rusqlite::Row;
use traceway_core::{Level, Timestamp, Trace, TraceId};

/// The columns [`read_trace_row`] reads, in order.
pub(crate) const TRACE_COLUMNS: &str = "trace_id, tenant, name, agent_id, session_id, user_id, \
    state, level, created_at, last_activity_at, ended_at, expires_at, last_seq, metadata, rollups";

/// A trace as the writer holds it.
pub(crate) struct TraceRow {
    pub rowid: i64,
    pub data_expires_at: i64,
    pub trace: Trace,
}

impl TraceRow {
    pub fn is_live(&self, now: Timestamp) -> bool {
        self.trace.expires_at > now
    }
}

fn bad(col: usize, msg: String) -> rusqlite::Error {
    rusqlite::Error::FromSqlConversionFailure(col, Type::Text, msg.into())
}

const LEVELS: [Level; 4] = [
    Level::Minimal,
    Level::Standard,
    Level::Detailed,
    Level::Debug,
];

/// Reads a trace from [`TRACE_COLUMNS`] starting at column `at`.
pub(crate) fn read_trace_row(r: &Row<'_>, at: usize) -> rusqlite::Result<Trace> {
    let id: [u8; 16] = r.get(at)?;
    let state: String = r.get(at + 6)?;
    let level: i64 = r.get(at + 7)?;
    let metadata: String = r.get(at + 13)?;
    let rollups: String = r.get(at + 14)?;
    let ts = |i: usize| -> rusqlite::Result<Timestamp> {
        Ok(Timestamp::from_unix_nanos(r.get(at + i)?))
    };
    Ok(Trace {
        trace_id: TraceId::from_bytes(id).ok_or_else(|| bad(at, "zero trace id".into()))?,
        tenant: r.get(at + 1)?,
        name: r.get(at + 2)?,
        agent_id: r.get(at + 3)?,
        session_id: r.get(at + 4)?,
        user_id: r.get(at + 5)?,
        state: state.parse().map_err(|e| bad(at + 6, format!("{e}")))?,
        level: *LEVELS
            .get(level as usize)
            .ok_or_else(|| bad(at + 7, format!("level {level}")))?,
        created_at: ts(8)?,
        last_activity_at: ts(9)?,
        ended_at: r
            .get::<_, Option<i64>>(at + 10)?
            .map(Timestamp::from_unix_nanos),
        expires_at: ts(11)?,
        last_seq: r.get::<_, i64>(at + 12)? as u64,
        metadata: serde_json::from_str(&metadata).map_err(|e| bad(at + 13, e.to_string()))?,
        rollups: serde_json::from_str(&rollups).map_err(|e| bad(at + 14, e.to_string()))?,
    })
}
