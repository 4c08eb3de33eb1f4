//! The SQLite backend: the conformance suite, plus what only a file-backed store shows.

use std::sync::Arc;
use traceway_store::prelude::*;

use traceway_core::{EventInput, NewTrace, SpanId, SpanInput, SpanKind, State, TracePatch};
use traceway_store::conformance::{start_time, Harness};
use traceway_store::sqlite::{SqliteConfig, SqliteStore};
use traceway_store::{AppendRequest, EventFilter, ManualClock};

async fn make_sqlite(clock: ManualClock) -> Harness {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = SqliteStore::open(
        SqliteConfig::new(dir.path().join("traceway.db")),
        Arc::new(clock.clone()),
    )
    .expect("open");
    Harness {
        store: Arc::new(store),
        clock,
        guard: Box::new(dir),
    }
}

traceway_store::conformance_suite!(make_sqlite);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_survives_a_restart_and_seq_continues() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("nested/dir/traceway.db");
    let clock = ManualClock::new(start_time());
    let open =
        || SqliteStore::open(SqliteConfig::new(&path), Arc::new(clock.clone())).expect("open");

    let store = open();
    let (t, _) = store
        .create_trace(
            "t",
            NewTrace {
                name: Some("persist".into()),
                ..Default::default()
            },
        )
        .await
        .expect("create");
    let span = SpanInput {
        kind: Some(SpanKind::Tool),
        ..SpanInput::new(SpanId::from_u64(1).expect("id"))
    };
    store
        .append(AppendRequest {
            fills: Vec::new(),
            tenant: "t".into(),
            trace_id: t.trace_id,
            create_if_missing: None,
            events: vec![EventInput::SpanStarted { span: span.clone() }],
            end: None,
        })
        .await
        .expect("append");
    store.shutdown().await;
    let after = store
        .append(AppendRequest {
            fills: Vec::new(),
            tenant: "t".into(),
            trace_id: t.trace_id,
            create_if_missing: None,
            events: vec![],
            end: None,
        })
        .await;
    assert!(after.is_err(), "a shut-down store takes no writes");
    drop(store);

    let store = open();
    let got = store
        .get_trace("t", t.trace_id)
        .await
        .expect("get")
        .expect("still there");
    assert_eq!(got.state, State::Running);
    assert_eq!(got.last_seq, 3);
    // The retry of the batch written before the restart is still recognised.
    let retry = store
        .append(AppendRequest {
            fills: Vec::new(),
            tenant: "t".into(),
            trace_id: t.trace_id,
            create_if_missing: None,
            events: vec![EventInput::SpanStarted { span }],
            end: None,
        })
        .await
        .expect("retry");
    assert_eq!(retry.duplicates, 1);
    let (done, _) = store
        .update_trace(
            "t",
            t.trace_id,
            TracePatch {
                state: Some(State::Completed),
                ..Default::default()
            },
        )
        .await
        .expect("done");
    assert_eq!(done.last_seq, 5, "seq continues after a restart");
    let all = store
        .read_events(
            "t",
            t.trace_id,
            &EventFilter {
                limit: 100,
                ..Default::default()
            },
        )
        .await
        .expect("read")
        .expect("exists");
    assert_eq!(
        all.iter().map(|e| e.seq).collect::<Vec<_>>(),
        vec![1, 2, 3, 4, 5]
    );
    store.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schema_is_versioned() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("traceway.db");
    let store = SqliteStore::open(
        SqliteConfig::new(&path),
        Arc::new(ManualClock::new(start_time())),
    )
    .expect("open");
    store.shutdown().await;
    let conn = rusqlite::Connection::open(&path).expect("open raw");
    let v: i64 = conn
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .expect("version");
    assert_eq!(v as usize, SqliteStore::schema_version());
    let mode: String = conn
        .query_row("PRAGMA journal_mode", [], |r| r.get(0))
        .expect("mode");
    assert_eq!(mode, "wal");
    // A database from a newer binary is refused rather than misread.
    conn.pragma_update(None, "user_version", 999).expect("bump");
    drop(conn);
    let err = SqliteStore::open(
        SqliteConfig::new(&path),
        Arc::new(ManualClock::new(start_time())),
    )
    .err()
    .expect("refused");
    assert!(err.to_string().contains("newer"), "{err}");
}

/// A file that is not a database is refused at open with SQLite's own words one
/// `source()` down (what an operator's log or the server's start-up error shows), not
/// only a string.
#[tokio::test]
async fn a_file_that_is_not_a_database_is_refused_with_sqlites_error_as_the_cause() {
    use std::error::Error as _;
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("traceway.db");
    std::fs::write(&path, vec![b'x'; 8192]).expect("write garbage");
    let err = SqliteStore::open(
        SqliteConfig::new(&path),
        Arc::new(ManualClock::new(start_time())),
    )
    .err()
    .expect("refused");
    assert!(
        matches!(
            err,
            traceway_store::OpenError::Backend(traceway_store::BackendError::Internal { .. })
        ),
        "{err:?}"
    );
    assert_eq!(err.to_string(), "internal store error: sqlite");
    let cause = err.source().expect("a cause");
    let sqlite = cause
        .downcast_ref::<std::sync::Arc<dyn std::error::Error + Send + Sync>>()
        .map(|a| a.as_ref() as &dyn std::error::Error)
        .unwrap_or(cause);
    assert!(
        sqlite.downcast_ref::<rusqlite::Error>().is_some(),
        "the cause is rusqlite's error: {sqlite:?}"
    );
    let chain = traceway_store::ErrorChain(&err).to_string();
    assert!(chain.contains("not a database"), "{chain}");
}

/// With a writer cache far smaller than the number of active traces, every command
/// reloads its trace from the event log: steps started in one batch still end, merge and
/// deduplicate correctly in a later one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn traces_evicted_from_the_writer_cache_are_rebuilt_from_the_log() {
    use traceway_core::{LlmDetails, SpanStatus, StatusCode};
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cfg = SqliteConfig::new(dir.path().join("traceway.db"));
    cfg.trace_cache = 2;
    let store = SqliteStore::open(cfg, Arc::new(ManualClock::new(start_time()))).expect("open");
    let sid = |n: u64| SpanId::from_u64(n).expect("id");
    let append = |id, events| AppendRequest {
        fills: Vec::new(),
        tenant: "t".into(),
        trace_id: id,
        create_if_missing: None,
        events,
        end: None,
    };
    let mut ids = Vec::new();
    for _ in 0..10 {
        let (t, _) = store
            .create_trace("t", NewTrace::default())
            .await
            .expect("create");
        ids.push(t.trace_id);
    }
    for id in &ids {
        let start = SpanInput {
            kind: Some(SpanKind::Llm),
            component_id: Some("planner".into()),
            llm: Some(LlmDetails {
                model: Some("m".into()),
                ..Default::default()
            }),
            ..SpanInput::new(sid(1))
        };
        store
            .append(append(*id, vec![EventInput::SpanStarted { span: start }]))
            .await
            .expect("start");
    }
    for id in &ids {
        let end = SpanInput {
            status: Some(SpanStatus {
                code: StatusCode::Ok,
                message: None,
            }),
            llm: Some(LlmDetails {
                input_tokens: Some(5),
                ..Default::default()
            }),
            ..SpanInput::new(sid(1))
        };
        let log = EventInput::Log {
            id: Some("l1".into()),
            time: None,
            record: traceway_core::LogRecord {
                span_id: Some(sid(1)),
                message: "m".into(),
                ..Default::default()
            },
        };
        let out = store
            .append(append(
                *id,
                vec![EventInput::SpanEnded { span: end.clone() }, log.clone()],
            ))
            .await
            .expect("end");
        assert_eq!(out.accepted, 2);
        let events = store
            .read_events(
                "t",
                *id,
                &EventFilter {
                    after_seq: out.last_seq - 1,
                    limit: 10,
                    ..Default::default()
                },
            )
            .await
            .expect("read")
            .expect("exists");
        assert_eq!(
            events[0].component_id.as_deref(),
            Some("planner"),
            "component known after reload"
        );
        // Retried after further evictions: recognised from the log.
        for other in ids.iter().filter(|o| *o != id).take(3) {
            store.get_trace("t", *other).await.expect("get");
            store.append(append(*other, vec![])).await.expect("touch");
        }
        let retry = store
            .append(append(*id, vec![EventInput::SpanEnded { span: end }, log]))
            .await
            .expect("retry");
        assert_eq!((retry.accepted, retry.duplicates), (0, 2));
    }
    for id in &ids {
        let spans = store
            .get_spans("t", *id)
            .await
            .expect("spans")
            .expect("exists");
        assert_eq!(spans.len(), 1);
        let llm = spans[0].llm.as_ref().expect("llm");
        assert_eq!(
            (llm.model.as_deref(), llm.input_tokens),
            (Some("m"), Some(5)),
            "merged across the reload"
        );
        assert!(spans[0].end_time.is_some());
        let t = store
            .get_trace("t", *id)
            .await
            .expect("get")
            .expect("exists");
        assert_eq!(
            (t.rollups.span_count, t.rollups.input_tokens, t.last_seq),
            (1, 5, 5)
        );
    }
    store.shutdown().await;
}

fn count(path: &std::path::Path, sql: &str) -> i64 {
    let conn = rusqlite::Connection::open(path).expect("open raw");
    conn.query_row(sql, [], |r| r.get(0)).expect("count")
}

/// The purge deletes rows from the file, not only from view: events of a trace whose data
/// expired (its row stays, with the summary), then the row itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn purge_physically_deletes_rows() {
    use std::time::Duration;
    use traceway_store::WATCHDOG_LEASE;
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("traceway.db");
    let clock = ManualClock::new(start_time());
    let store = SqliteStore::open(SqliteConfig::new(&path), Arc::new(clock.clone())).expect("open");
    let sid = |n: u64| SpanId::from_u64(n).expect("id");
    let mut ids = Vec::new();
    for _ in 0..3 {
        let (t, _) = store
            .create_trace("t", NewTrace::default())
            .await
            .expect("create");
        let events = (1..=20)
            .map(|i| EventInput::SpanEnded {
                span: SpanInput::new(sid(i)),
            })
            .collect();
        store
            .append(AppendRequest {
                fills: Vec::new(),
                tenant: "t".into(),
                trace_id: t.trace_id,
                create_if_missing: None,
                events,
                end: None,
            })
            .await
            .expect("append");
        store
            .update_trace(
                "t",
                t.trace_id,
                TracePatch {
                    state: Some(State::Completed),
                    ..Default::default()
                },
            )
            .await
            .expect("done");
        ids.push(t.trace_id);
    }
    // trace_started, RUNNING, 20 spans, COMPLETED, trace_ended.
    assert_eq!(count(&path, "SELECT count(*) FROM events"), 3 * 24);
    let purge = |max_rows| {
        let store = &store;
        async move {
            let mut total = traceway_store::Purged::default();
            loop {
                let lease = store
                    .try_acquire_lease(WATCHDOG_LEASE, "me", Duration::from_secs(30))
                    .await
                    .expect("acquire")
                    .expect("free");
                let p = store.purge_expired(&lease, max_rows).await.expect("purge");
                total.traces += p.traces;
                total.events += p.events;
                if !p.more {
                    return total;
                }
            }
        }
    };
    assert_eq!(purge(10).await, traceway_store::Purged::default());

    clock.advance(Duration::from_secs(3 * 86_400 + 1));
    let p = purge(10).await;
    assert_eq!(
        (p.traces, p.events),
        (0, 3 * 24),
        "data retention: events only"
    );
    assert_eq!(count(&path, "SELECT count(*) FROM events"), 0);
    assert_eq!(count(&path, "SELECT count(*) FROM traces"), 3);
    assert_eq!(
        count(
            &path,
            "SELECT count(*) FROM traces WHERE data_expires_at > 0"
        ),
        0,
        "purged traces leave the data-expiry index"
    );
    let t = store
        .get_trace("t", ids[0])
        .await
        .expect("get")
        .expect("row");
    assert_eq!(t.rollups.span_count, 20);

    clock.advance(Duration::from_secs(4 * 86_400));
    let p = purge(2).await;
    assert_eq!((p.traces, p.events), (3, 0), "trace retention: the rows");
    assert_eq!(count(&path, "SELECT count(*) FROM traces"), 0);
    store.shutdown().await;
}

/// Two stores on one file behave like two server processes on one data directory: one
/// lease between them, fenced sweeps, and writers that see each other's commits.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_stores_on_one_file_share_one_lease() {
    use std::time::Duration;
    use traceway_store::{LifecycleError, WATCHDOG_LEASE};
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("traceway.db");
    let clock = ManualClock::new(start_time());
    let open =
        || SqliteStore::open(SqliteConfig::new(&path), Arc::new(clock.clone())).expect("open");
    let (a, b) = (open(), open());
    let ttl = Duration::from_secs(10);
    let la = a
        .try_acquire_lease(WATCHDOG_LEASE, "process-a", ttl)
        .await
        .expect("acquire")
        .expect("first comes first");
    assert_eq!(
        b.try_acquire_lease(WATCHDOG_LEASE, "process-b", ttl)
            .await
            .expect("acquire"),
        None,
        "only one of the two"
    );
    for _ in 0..3 {
        clock.advance(Duration::from_secs(5));
        a.renew_lease(&la, ttl).await.expect("renew").expect("held");
        assert_eq!(
            b.try_acquire_lease(WATCHDOG_LEASE, "process-b", ttl)
                .await
                .expect("acquire"),
            None
        );
    }
    // a stops renewing (it is stuck, or killed); b takes over after the ttl.
    clock.advance(ttl);
    let lb = b
        .try_acquire_lease(WATCHDOG_LEASE, "process-b", ttl)
        .await
        .expect("acquire")
        .expect("taken over");
    assert!(lb.token > la.token);
    let r = a.sweep_orphans(&la, Duration::from_secs(60), 10).await;
    assert!(
        matches!(r, Err(LifecycleError::LeaseLost(_))),
        "a stale token is refused: {r:?}"
    );

    // A trace written through a, orphaned through b, then written through a again: a's
    // writer cache must not believe it is still running with its old last seq.
    let (t, _) = a
        .create_trace("t", NewTrace::default())
        .await
        .expect("create");
    let step = |n: u64| AppendRequest {
        fills: Vec::new(),
        tenant: "t".into(),
        trace_id: t.trace_id,
        create_if_missing: None,
        events: vec![EventInput::SpanEnded {
            span: SpanInput::new(SpanId::from_u64(n).expect("id")),
        }],
        end: None,
    };
    a.append(step(1)).await.expect("append through a");
    clock.advance(Duration::from_secs(120));
    assert_eq!(
        b.renew_lease(&lb, ttl).await.expect("renew"),
        None,
        "lapsed"
    );
    let lb = b
        .try_acquire_lease(WATCHDOG_LEASE, "process-b", ttl)
        .await
        .expect("acquire")
        .expect("b takes it again");
    let orphans = b
        .sweep_orphans(&lb, Duration::from_secs(60), 10)
        .await
        .expect("b sweeps");
    assert_eq!(orphans.len(), 1);
    let late = a.append(step(2)).await.expect("a late step through a");
    assert_eq!(
        late.last_seq, 6,
        "seq follows b's state_changed and trace_ended"
    );
    let got = a
        .get_trace("t", t.trace_id)
        .await
        .expect("get")
        .expect("exists");
    assert_eq!(got.state, State::Errored, "a sees b's change");
    a.shutdown().await;
    b.shutdown().await;
}

/// Message fills (ADR 027) outlive the writer's cache: a pending fill is read back from
/// `pending_fills` after a restart and lands when its span arrives, and a fill of an ended
/// span loads the span's body from the event log; a retried fill is still recognised.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn message_fills_survive_a_restart() {
    use traceway_core::{FillMode, Level, Message, MessageFill};
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("traceway.db");
    let clock = ManualClock::new(start_time());
    let open =
        || SqliteStore::open(SqliteConfig::new(&path), Arc::new(clock.clone())).expect("open");
    let sid = |n| SpanId::from_u64(n).expect("id");
    let msg = |role: &str, c: &str| Message {
        role: role.into(),
        content: Some(c.into()),
        ..Default::default()
    };
    let fill = |id: &str, span, input: Vec<Message>, output: Vec<Message>| MessageFill {
        id: id.into(),
        span_id: sid(span),
        mode: FillMode::Append,
        input_messages: input,
        output_messages: output,
    };
    let llm = |n| SpanInput {
        kind: Some(SpanKind::Llm),
        ..SpanInput::new(sid(n))
    };
    let req = |id, events, fills| AppendRequest {
        tenant: "t".into(),
        trace_id: id,
        create_if_missing: None,
        events,
        fills,
        end: None,
    };

    let store = open();
    let (t, _) = store
        .create_trace(
            "t",
            NewTrace {
                level: Some(Level::Detailed),
                ..Default::default()
            },
        )
        .await
        .expect("create");
    let id = t.trace_id;
    let early = fill("early", 1, vec![msg("user", "hi")], vec![]);
    store
        .append(req(id, vec![], vec![early.clone()]))
        .await
        .expect("pending");
    store
        .append(req(
            id,
            vec![EventInput::SpanEnded { span: llm(2) }],
            vec![],
        ))
        .await
        .expect("span 2");
    store.shutdown().await;
    drop(store);

    let store = open();
    let retry = store
        .append(req(id, vec![], vec![early]))
        .await
        .expect("retry");
    assert_eq!(retry.duplicates, 1, "still pending, recognised");
    store
        .append(req(
            id,
            vec![EventInput::SpanEnded { span: llm(1) }],
            vec![],
        ))
        .await
        .expect("span 1");
    let late = fill("late", 2, vec![], vec![msg("assistant", "hello")]);
    let out = store
        .append(req(id, vec![], vec![late.clone()]))
        .await
        .expect("late");
    assert_eq!(out.accepted, 1);
    store.shutdown().await;
    drop(store);

    let store = open();
    let spans = store
        .get_spans("t", id)
        .await
        .expect("spans")
        .expect("exists");
    let llm_of = |n| {
        spans
            .iter()
            .find(|s| s.span_id == sid(n))
            .and_then(|s| s.llm.clone())
            .unwrap_or_default()
    };
    assert_eq!(llm_of(1).input_messages, [msg("user", "hi")]);
    assert_eq!(llm_of(2).output_messages, [msg("assistant", "hello")]);
    let retry = store
        .append(req(id, vec![], vec![late]))
        .await
        .expect("retry");
    assert_eq!(retry.duplicates, 1, "the applied fill's id is stored");
    let Some(t) = store.get_trace("t", id).await.expect("get") else {
        panic!("exists")
    };
    assert_eq!(t.rollups.span_count, 2);
}
