//! Versioned schema migrations, applied in order at open; the version lives in
//! `PRAGMA user_version`.

use std::path::Path;
use std::time::Duration;

use rusqlite::Connection;

use crate::BackendError;

/// The writer's connection to the database at `path`: WAL, the writer's pragmas and the
/// newest schema. The store's writer opens its connection with it, and so does the
/// bare-writer bench (`benches/bare_writer.rs`, issue 17), so the ceiling it measures is
/// always that of this schema and these pragmas.
pub fn open_writer_connection(path: &Path) -> Result<Connection, BackendError> {
    let mut conn = Connection::open(path).map_err(internal)?;
    conn.busy_timeout(Duration::from_secs(5))
        .map_err(internal)?;
    let mode: String = conn
        .query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))
        .map_err(internal)?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(BackendError::internal(format!(
            "could not enable WAL (got {mode})"
        )));
    }
    // NORMAL in WAL mode: a commit survives a crash of the process (the kill -9 test);
    // only an OS crash or power loss can lose the last commits. See ADR 002.
    // Checkpoints run on their own thread (`Checkpointer`), not inside the writer's commits.
    conn.execute_batch(
        "PRAGMA synchronous = NORMAL; PRAGMA foreign_keys = OFF; \
         PRAGMA cache_size = -16384; PRAGMA wal_autocheckpoint = 0;",
    )
    .map_err(internal)?;
    migrate(&mut conn)?;
    // Multi-row INSERTs come in up to 16 shapes; keep them all prepared.
    conn.set_prepared_statement_cache_capacity(64);
    Ok(conn)
}

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
    // v6: index-served `has_error` and `min_duration_ms` listings (issue 17, ADR 042).
    // Errored traces by time, in a partial index: a trace without errors costs no entry,
    // and the listing's `error_count > 0` is the index's own condition. Traces with a
    // duration by duration bucket (`crate::duration_index`, the same buckets as Redis),
    // then time: a `min_duration_ms` listing merges its buckets newest first. The bucket is
    // a virtual generated column, so SQLite keeps the index up to date on every write of
    // `duration_ms` and the writer names no new column.
    r#"
    ALTER TABLE traces ADD COLUMN duration_bucket INTEGER GENERATED ALWAYS AS (
    CASE WHEN duration_ms IS NULL THEN NULL
    WHEN duration_ms >= 10000000 THEN CASE WHEN duration_ms >= 75000000 THEN 72 WHEN duration_ms >= 60000000 THEN 71 WHEN duration_ms >= 50000000 THEN 70 WHEN duration_ms >= 40000000 THEN 69 WHEN duration_ms >= 30000000 THEN 68 WHEN duration_ms >= 25000000 THEN 67 WHEN duration_ms >= 20000000 THEN 66 WHEN duration_ms >= 15000000 THEN 65 ELSE 64 END
    WHEN duration_ms >= 1000000 THEN CASE WHEN duration_ms >= 7500000 THEN 63 WHEN duration_ms >= 6000000 THEN 62 WHEN duration_ms >= 5000000 THEN 61 WHEN duration_ms >= 4000000 THEN 60 WHEN duration_ms >= 3000000 THEN 59 WHEN duration_ms >= 2500000 THEN 58 WHEN duration_ms >= 2000000 THEN 57 WHEN duration_ms >= 1500000 THEN 56 ELSE 55 END
    WHEN duration_ms >= 100000 THEN CASE WHEN duration_ms >= 750000 THEN 54 WHEN duration_ms >= 600000 THEN 53 WHEN duration_ms >= 500000 THEN 52 WHEN duration_ms >= 400000 THEN 51 WHEN duration_ms >= 300000 THEN 50 WHEN duration_ms >= 250000 THEN 49 WHEN duration_ms >= 200000 THEN 48 WHEN duration_ms >= 150000 THEN 47 ELSE 46 END
    WHEN duration_ms >= 10000 THEN CASE WHEN duration_ms >= 75000 THEN 45 WHEN duration_ms >= 60000 THEN 44 WHEN duration_ms >= 50000 THEN 43 WHEN duration_ms >= 40000 THEN 42 WHEN duration_ms >= 30000 THEN 41 WHEN duration_ms >= 25000 THEN 40 WHEN duration_ms >= 20000 THEN 39 WHEN duration_ms >= 15000 THEN 38 ELSE 37 END
    WHEN duration_ms >= 1000 THEN CASE WHEN duration_ms >= 7500 THEN 36 WHEN duration_ms >= 6000 THEN 35 WHEN duration_ms >= 5000 THEN 34 WHEN duration_ms >= 4000 THEN 33 WHEN duration_ms >= 3000 THEN 32 WHEN duration_ms >= 2500 THEN 31 WHEN duration_ms >= 2000 THEN 30 WHEN duration_ms >= 1500 THEN 29 ELSE 28 END
    WHEN duration_ms >= 100 THEN CASE WHEN duration_ms >= 750 THEN 27 WHEN duration_ms >= 600 THEN 26 WHEN duration_ms >= 500 THEN 25 WHEN duration_ms >= 400 THEN 24 WHEN duration_ms >= 300 THEN 23 WHEN duration_ms >= 250 THEN 22 WHEN duration_ms >= 200 THEN 21 WHEN duration_ms >= 150 THEN 20 ELSE 19 END
    WHEN duration_ms >= 10 THEN CASE WHEN duration_ms >= 75 THEN 18 WHEN duration_ms >= 60 THEN 17 WHEN duration_ms >= 50 THEN 16 WHEN duration_ms >= 40 THEN 15 WHEN duration_ms >= 30 THEN 14 WHEN duration_ms >= 25 THEN 13 WHEN duration_ms >= 20 THEN 12 WHEN duration_ms >= 15 THEN 11 ELSE 10 END
    WHEN duration_ms >= 1 THEN CASE WHEN duration_ms >= 7.5 THEN 9 WHEN duration_ms >= 6 THEN 8 WHEN duration_ms >= 5 THEN 7 WHEN duration_ms >= 4 THEN 6 WHEN duration_ms >= 3 THEN 5 WHEN duration_ms >= 2.5 THEN 4 WHEN duration_ms >= 2 THEN 3 WHEN duration_ms >= 1.5 THEN 2 ELSE 1 END
    ELSE 0 END
    ) VIRTUAL;
    CREATE INDEX traces_errored     ON traces (tenant, created_at, trace_id) WHERE error_count > 0;
    CREATE INDEX traces_by_duration ON traces (tenant, duration_bucket, created_at, trace_id)
        WHERE duration_ms IS NOT NULL;
    "#,
    // v7: the bytes of each tenant's event bodies, for the stored-bytes quota (ADR 040).
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
pub(crate) fn migrate(conn: &mut Connection) -> Result<(), BackendError> {
    let current: usize = conn
        .query_row("PRAGMA user_version", [], |r| r.get::<_, i64>(0))
        .map_err(internal)? as usize;
    if current > MIGRATIONS.len() {
        return Err(BackendError::internal(format!(
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

pub(crate) fn internal(e: rusqlite::Error) -> BackendError {
    BackendError::internal_by("sqlite", e)
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

    /// The generated `duration_bucket` column puts every duration in the bucket the Redis
    /// backend and the listing compute (`duration_index::bucket_of`): at each bound, just
    /// under it, and far past the last; a trace without a duration has none.
    #[test]
    fn the_duration_bucket_column_agrees_with_bucket_of() {
        use crate::duration_index::{bucket_of, BUCKET_FLOORS_MS};
        let mut conn = Connection::open_in_memory().expect("open");
        migrate(&mut conn).expect("migrate");
        let mut durations = vec![0.0, 0.5, 1e12];
        for f in BUCKET_FLOORS_MS {
            durations.extend([f, f * 0.999_999, f * 1.000_001]);
        }
        for (i, d) in durations.iter().enumerate() {
            conn.execute(
                "INSERT INTO traces (tenant, trace_id, state, level, created_at, \
                 last_activity_at, expires_at, data_expires_at, last_seq, duration_ms, \
                 metadata, rollups) VALUES ('t', ?1, 'RUNNING', 2, 1, 1, 9, 9, 0, ?2, '{}', '{}')",
                rusqlite::params![(i as i64).to_be_bytes().to_vec(), d],
            )
            .expect("row");
        }
        let mut stmt = conn
            .prepare("SELECT duration_ms, duration_bucket FROM traces")
            .expect("select");
        let rows: Vec<(f64, i64)> = stmt
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .expect("rows")
            .collect::<Result<_, _>>()
            .expect("rows");
        assert_eq!(rows.len(), durations.len());
        for (d, b) in rows {
            assert_eq!(b, i64::from(bucket_of(d)), "duration {d} ms");
        }
        conn.execute(
            "INSERT INTO traces (tenant, trace_id, state, level, created_at, last_activity_at, \
             expires_at, data_expires_at, last_seq, metadata, rollups) \
             VALUES ('t', x'ff', 'RUNNING', 2, 1, 1, 9, 9, 0, '{}', '{}')",
            [],
        )
        .expect("row without a duration");
        let b: Option<i64> = conn
            .query_row(
                "SELECT duration_bucket FROM traces WHERE trace_id = x'ff'",
                [],
                |r| r.get(0),
            )
            .expect("bucket");
        assert_eq!(b, None);
    }

    /// A v5 database (before the index-served filters) moves to v6: its traces keep their
    /// rows, get their duration bucket, and the new indexes hold the ones that belong.
    #[test]
    fn a_v5_database_migrates_to_the_filter_indexes() {
        let mut conn = Connection::open_in_memory().expect("open");
        for sql in &MIGRATIONS[..5] {
            conn.execute_batch(sql).expect("v1..v5");
        }
        conn.pragma_update(None, "user_version", 5)
            .expect("version");
        for (id, errors, duration) in [(1u8, 0i64, Some(2500.0)), (2, 3, None), (3, 1, Some(40.0))]
        {
            conn.execute(
                "INSERT INTO traces (tenant, trace_id, state, level, created_at, \
                 last_activity_at, expires_at, data_expires_at, last_seq, error_count, \
                 duration_ms, metadata, rollups) \
                 VALUES ('t', ?1, 'RUNNING', 2, ?2, 1, 9, 9, 0, ?3, ?4, '{}', '{}')",
                rusqlite::params![vec![id], i64::from(id), errors, duration],
            )
            .expect("row");
        }
        migrate(&mut conn).expect("migrate");
        let v: i64 = conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .expect("version");
        assert_eq!(v as usize, latest_version());
        let ids = |sql: &str| -> Vec<Vec<u8>> {
            let mut stmt = conn.prepare(sql).expect("prepare");
            stmt.query_map([], |r| r.get(0))
                .expect("rows")
                .collect::<Result<_, _>>()
                .expect("rows")
        };
        assert_eq!(
            ids("SELECT trace_id FROM traces INDEXED BY traces_errored \
                 WHERE tenant = 't' AND error_count > 0 ORDER BY created_at DESC"),
            vec![vec![3], vec![2]]
        );
        assert_eq!(
            ids("SELECT trace_id FROM traces INDEXED BY traces_by_duration \
                 WHERE tenant = 't' AND duration_bucket = 31 AND duration_ms >= 0"),
            vec![vec![1]]
        );
        assert_eq!(ids("SELECT trace_id FROM traces ORDER BY id").len(), 3);
    }
}
