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
    // v2: the listing indexes in ascending order, and partial where the column is often
    // NULL. New traces have the largest `created_at`: in an ascending index they go to the
    // right end of their group, where SQLite appends to a page; a descending index put them
    // at the left end, splitting pages. Listing newest first reads the index backwards. A
    // filter `agent_id = ?` never matches NULL, so SQLite still uses the partial indexes,
    // and a trace without a user or session (or not yet ended) costs no entry in them.
    r#"
    DROP INDEX traces_newest;
    DROP INDEX traces_by_agent;
    DROP INDEX traces_by_user;
    DROP INDEX traces_by_session;
    DROP INDEX traces_by_state;
    DROP INDEX traces_by_ended;
    CREATE INDEX traces_newest     ON traces (tenant, created_at, trace_id);
    CREATE INDEX traces_by_agent   ON traces (tenant, agent_id, created_at, trace_id)
        WHERE agent_id IS NOT NULL;
    CREATE INDEX traces_by_user    ON traces (tenant, user_id, created_at, trace_id)
        WHERE user_id IS NOT NULL;
    CREATE INDEX traces_by_session ON traces (tenant, session_id, created_at, trace_id)
        WHERE session_id IS NOT NULL;
    CREATE INDEX traces_by_state   ON traces (tenant, state, created_at, trace_id);
    CREATE INDEX traces_by_ended   ON traces (tenant, ended_at) WHERE ended_at IS NOT NULL;
    "#,
    // v3: durable workflow contexts (ADR 023), one row per tenant and instance. The
    // listing reads the primary key in order; the count and the purge read the expiry.
    r#"
    CREATE TABLE workflow_contexts (
        tenant      TEXT    NOT NULL,
        instance_id TEXT    NOT NULL,
        body        TEXT    NOT NULL,
        expires_at  INTEGER NOT NULL,
        PRIMARY KEY (tenant, instance_id)
    ) WITHOUT ROWID;
    CREATE INDEX workflow_contexts_by_tenant_expiry ON workflow_contexts (tenant, expires_at);
    CREATE INDEX workflow_contexts_by_expiry ON workflow_contexts (expires_at);
    "#,
    // v4: API keys (ADR 024), found by their public id; only the secret's hash is kept.
    super::keys::MIGRATION,
    // v5: message fills waiting for a span not stored yet (ADR 027), in arrival order (the
    // rowid); deleted when the span arrives, and with the trace's data.
    r#"
    CREATE TABLE pending_fills (
        id        INTEGER PRIMARY KEY,
        trace_ref INTEGER NOT NULL,
        span_id   INTEGER NOT NULL,
        body      TEXT    NOT NULL
    );
    CREATE INDEX pending_fills_by_span ON pending_fills (trace_ref, span_id);
    "#,
    // v6: the bytes of each tenant's event bodies, for the stored-bytes quota (ADR 040).
    // The writer adds a command's bytes in its transaction (one statement per command);
    // every delete of events (delete, cleanup, purge, a stale trace replaced) takes its
    // rows' bytes off through the trigger, which deletes run before their trace row goes.
    // Existing events are counted once, here.
    r#"
    CREATE TABLE tenant_usage (
        tenant TEXT    PRIMARY KEY,
        bytes  INTEGER NOT NULL
    ) WITHOUT ROWID;
    INSERT INTO tenant_usage (tenant, bytes)
        SELECT t.tenant, SUM(octet_length(e.body)) FROM events e
        JOIN traces t ON t.id = e.trace_ref GROUP BY t.tenant;
    CREATE TRIGGER events_usage_on_delete AFTER DELETE ON events BEGIN
        UPDATE tenant_usage SET bytes = bytes - octet_length(OLD.body)
        WHERE tenant = (SELECT tenant FROM traces WHERE id = OLD.trace_ref);
    END;
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

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(conn: &Connection, sql: &str) -> String {
        let mut stmt = conn
            .prepare(&format!("EXPLAIN QUERY PLAN {sql}"))
            .expect("prepare");
        let n = stmt.parameter_count();
        let args = vec![rusqlite::types::Value::Integer(0); n];
        let rows: Vec<String> = stmt
            .query_map(rusqlite::params_from_iter(args), |r| r.get::<_, String>(3))
            .expect("plan")
            .collect::<Result<_, _>>()
            .expect("rows");
        rows.join("; ")
    }

    /// The partial indexes of v2 still serve the filters that name their column.
    #[test]
    fn filters_use_the_partial_indexes() {
        let mut conn = Connection::open_in_memory().expect("open");
        migrate(&mut conn).expect("migrate");
        for (col, index) in [
            ("state", "traces_by_state"),
            ("agent_id", "traces_by_agent"),
            ("user_id", "traces_by_user"),
            ("session_id", "traces_by_session"),
        ] {
            let p = plan(
                &conn,
                &format!(
                    "SELECT trace_id FROM traces WHERE tenant = ?1 AND expires_at > ?2 \
                     AND {col} = ?3 ORDER BY created_at DESC, trace_id DESC LIMIT 51"
                ),
            );
            assert!(p.contains(&format!("USING INDEX {index}")), "{col}: {p}");
            assert!(!p.contains("TEMP B-TREE"), "{col}: no sort: {p}");
        }
        let p = plan(
            &conn,
            "SELECT trace_id FROM traces WHERE tenant = ?1 AND expires_at > ?2 \
             AND (created_at, trace_id) < (?3, ?4) ORDER BY created_at DESC, trace_id DESC LIMIT 51",
        );
        assert!(p.contains("USING INDEX traces_newest"), "{p}");
        assert!(!p.contains("TEMP B-TREE"), "no sort: {p}");
        let p = plan(
            &conn,
            "SELECT id FROM traces WHERE tenant = ?1 AND ended_at < ?2 LIMIT ?3",
        );
        assert!(p.contains("traces_by_ended"), "{p}");
    }

    /// A database made by v1 moves to the newest schema and keeps its rows.
    #[test]
    fn a_v1_database_migrates() {
        let mut conn = Connection::open_in_memory().expect("open");
        conn.execute_batch(MIGRATIONS[0]).expect("v1");
        conn.pragma_update(None, "user_version", 1)
            .expect("version");
        conn.execute(
            "INSERT INTO traces (tenant, trace_id, agent_id, state, level, created_at, \
             last_activity_at, expires_at, data_expires_at, last_seq, metadata, rollups) \
             VALUES ('t', x'01', 'a', 'RUNNING', 2, 1, 1, 9, 9, 0, '{}', '{}')",
            [],
        )
        .expect("row");
        migrate(&mut conn).expect("migrate");
        let v: i64 = conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .expect("version");
        assert_eq!(v as usize, latest_version());
        let n: i64 = conn
            .query_row(
                "SELECT count(*) FROM traces WHERE tenant = 't' AND agent_id = 'a'",
                [],
                |r| r.get(0),
            )
            .expect("count");
        assert_eq!(n, 1);
    }
}
