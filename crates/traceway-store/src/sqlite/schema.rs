//! Versioned schema migrations, applied in order at open; the version lives in
//! `PRAGMA user_version`.

use rusqlite::Connection;

use crate::StoreError;

/// Each entry moves the schema from version `i` to `i + 1`. Never edit a released entry;
/// add a new one.
const MIGRATIONS: &[&str] = &[
    // v1: traces, events, leases.
    r#"
    CREATE TABLE traces (
        id               INTEGER PRIMARY KEY,
        tenant           TEXT    NOT NULL,
        trace_id         BLOB    NOT NULL,
        name             TEXT,
        agent_id         TEXT,
        session_id       TEXT,
        user_id          TEXT,
        state            TEXT    NOT NULL,
        level            INTEGER NOT NULL,
        created_at       INTEGER NOT NULL,
        last_activity_at INTEGER NOT NULL,
        ended_at         INTEGER,
        expires_at       INTEGER NOT NULL,
        data_expires_at  INTEGER NOT NULL,
        last_seq         INTEGER NOT NULL,
        error_count      INTEGER NOT NULL DEFAULT 0,
        duration_ms      REAL,
        metadata         TEXT    NOT NULL,
        rollups          TEXT    NOT NULL
    );
    CREATE UNIQUE INDEX traces_by_id      ON traces (tenant, trace_id);
    CREATE INDEX traces_newest            ON traces (tenant, created_at DESC, trace_id DESC);
    CREATE INDEX traces_by_agent          ON traces (tenant, agent_id, created_at DESC, trace_id DESC);
    CREATE INDEX traces_by_user           ON traces (tenant, user_id, created_at DESC, trace_id DESC);
    CREATE INDEX traces_by_session        ON traces (tenant, session_id, created_at DESC, trace_id DESC);
    CREATE INDEX traces_by_state          ON traces (tenant, state, created_at DESC, trace_id DESC);
    CREATE INDEX traces_by_ended          ON traces (tenant, ended_at);
    CREATE INDEX traces_by_expiry         ON traces (expires_at);
    -- Traces whose spans and events are still stored; data_expires_at becomes 0 once
    -- the purge has deleted them, so they leave this index.
    CREATE INDEX traces_by_data_expiry    ON traces (data_expires_at) WHERE data_expires_at > 0;
    -- The active index: traces not yet terminal, by last activity. The orphan sweep reads
    -- it from the idle end, so a sweep costs what it finds, not the number of active traces.
    CREATE INDEX traces_active            ON traces (last_activity_at, expires_at) WHERE ended_at IS NULL;

    -- The event log is the source of truth: a span's current form is its latest
    -- span_started / span_ended event.
    CREATE TABLE events (
        id           INTEGER PRIMARY KEY,
        trace_ref    INTEGER NOT NULL,
        seq          INTEGER NOT NULL,
        time         INTEGER NOT NULL,
        type         TEXT    NOT NULL,
        span_id      INTEGER,
        component_id TEXT,
        dedup_key    TEXT,
        body         TEXT    NOT NULL
    );
    CREATE UNIQUE INDEX events_by_seq ON events (trace_ref, seq);
    CREATE UNIQUE INDEX events_dedup ON events (trace_ref, dedup_key) WHERE dedup_key IS NOT NULL;

    -- Leases with fencing tokens (the watchdog's). A row is kept after release so the
    -- token keeps growing: a token is never handed out twice.
    CREATE TABLE leases (
        name       TEXT    PRIMARY KEY,
        holder     TEXT    NOT NULL,
        token      INTEGER NOT NULL,
        expires_at INTEGER NOT NULL
    );
    "#,
];

/// Brings the database to the newest schema.
pub(crate) fn migrate(conn: &mut Connection) -> Result<(), StoreError> {
    let current: usize = conn
        .query_row("PRAGMA user_version", [], |r| r.get::<_, i64>(0))
        .map_err(internal)? as usize;
    if current > MIGRATIONS.len() {
        return Err(StoreError::Internal(format!(
            "database schema version {current} is newer than this binary knows ({})",
            MIGRATIONS.len()
        )));
    }
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(current) {
        let tx = conn.transaction().map_err(internal)?;
        tx.execute_batch(sql).map_err(internal)?;
        tx.pragma_update(None, "user_version", (i + 1) as i64)
            .map_err(internal)?;
        tx.commit().map_err(internal)?;
        tracing::info!(version = i + 1, "schema migrated");
    }
    Ok(())
}

/// The schema version this binary writes.
pub(crate) const fn latest_version() -> usize {
    MIGRATIONS.len()
}

pub(crate) fn internal(e: rusqlite::Error) -> StoreError {
    StoreError::Internal(e.to_string())
}
