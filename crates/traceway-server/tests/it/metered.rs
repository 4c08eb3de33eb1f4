//! `MeteredStore`, the decorator every handler and the watchdog call through: it counts
//! what writes stored, times the writes that succeeded, and passes everything else on.

use std::time::Duration;

use axum::http::Method;

use traceway_core::{EventInput, EventType, NewTrace, Span, SpanId, SpanKind, State, TraceId};
use traceway_store::{AppendRequest, PageRequest, Scope, TraceEnd, TraceError, TraceFilter};

use crate::test_app;

/// The `_count` of the write-latency histogram for `op`, as `/metrics` shows it.
fn writes_timed(m: &traceway_server::Metrics, op: &str) -> u64 {
    let text = m.render(&traceway_server::metrics::AtScrape::default());
    let prefix = format!("traceway_store_write_seconds_count{{op=\"{op}\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no {prefix} in {text}"))
}

fn started(n: u64) -> EventInput {
    let span = Span::new(
        SpanId::from_u64(n).expect("span id"),
        SpanKind::Tool,
        "step",
        traceway_store::conformance::start_time(),
    );
    EventInput::SpanStarted { span: span.into() }
}

#[tokio::test]
async fn the_metered_store_counts_stored_events_and_times_successful_writes() {
    let app = test_app();
    let (store, m) = (&app.store, &app.metrics);

    let (created, _) = store
        .create_trace("t", NewTrace::default())
        .await
        .expect("create");
    assert_eq!(m.traces_created.get(), 1);
    assert_eq!(m.events(EventType::TraceStarted), 1);
    assert_eq!(writes_timed(m, "create"), 1);

    // An append that creates its trace, stores one span, skips a retry of it and ends.
    let id = TraceId::new_v7();
    let out = store
        .append(AppendRequest {
            fills: Vec::new(),
            tenant: "t".into(),
            trace_id: id,
            create_if_missing: Some(NewTrace::default()),
            events: vec![started(1), started(1)],
            end: Some(TraceEnd {
                state: State::Completed,
                reason: None,
            }),
        })
        .await
        .expect("append");
    assert!(out.created);
    assert_eq!(m.traces_created.get(), 2);
    assert_eq!(m.duplicates.get(), 1);
    assert_eq!(m.events(EventType::SpanStarted), 1);
    assert_eq!(
        m.events(EventType::StateChanged),
        2,
        "RUNNING, then COMPLETED"
    );
    assert_eq!(m.events(EventType::TraceEnded), 1);
    assert_eq!(writes_timed(m, "append"), 1);

    // A refused write is neither counted nor timed.
    let missing = store
        .append(AppendRequest {
            fills: Vec::new(),
            tenant: "t".into(),
            trace_id: TraceId::new_v7(),
            create_if_missing: None,
            events: vec![started(2)],
            end: None,
        })
        .await;
    assert!(
        matches!(missing, Err(TraceError::NotFound(_))),
        "{missing:?}"
    );
    assert_eq!(writes_timed(m, "append"), 1);
    assert_eq!(m.events(EventType::SpanStarted), 1);

    // Reads, leases and the live feed reach the wrapped store.
    let got = store.get_trace("t", created.trace_id).await.expect("read");
    assert_eq!(got.map(|t| t.trace_id), Some(created.trace_id));
    let page = store
        .list_traces(
            "t",
            &TraceFilter::default(),
            &PageRequest {
                limit: 10,
                ..Default::default()
            },
        )
        .await
        .expect("list");
    assert_eq!(page.items.len(), 2);
    let lease = store
        .try_acquire_lease("watchdog", "me", Duration::from_secs(10))
        .await
        .expect("lease");
    assert!(lease.is_some());
    assert_eq!(writes_timed(m, "lease"), 1);
    let _sub = store.subscribe("t", Scope::Trace(id));
    assert_eq!(store.subscriber_count(), 1);
}

on_both! {
/// Eight writers append to one trace at once: every span lands, and `/metrics` shows the
/// commit retries, none within one process (SQLite has one writer; on Redis the writers
/// of one trace take turns, ADR 010).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_appends_to_one_trace_all_land_without_commit_retries(backend: Backend) {
    const WRITERS: u64 = 8;
    const APPENDS: u64 = 25;
    const SPANS: u64 = 4;
    let app = backend.app().await;
    let (t, _) = app
        .store
        .create_trace("default", NewTrace::default())
        .await
        .expect("create");
    let id = t.trace_id;
    let mut writers = Vec::new();
    for w in 0..WRITERS {
        let store = app.store.clone();
        writers.push(tokio::spawn(async move {
            for a in 0..APPENDS {
                let first = 1 + (w * APPENDS + a) * SPANS;
                let out = store
                    .append(AppendRequest {
                        fills: Vec::new(),
                        tenant: "default".into(),
                        trace_id: id,
                        create_if_missing: None,
                        events: (first..first + SPANS).map(started).collect(),
                        end: None,
                    })
                    .await
                    .expect("append");
                assert_eq!(out.accepted, SPANS as u32);
            }
        }));
    }
    for w in writers {
        w.await.expect("writer");
    }
    let t = app
        .store
        .get_trace("default", id)
        .await
        .expect("read")
        .expect("trace");
    assert_eq!(t.rollups.span_count, WRITERS * APPENDS * SPANS, "no span lost");
    assert_eq!(app.metrics.events(EventType::SpanStarted), WRITERS * APPENDS * SPANS);
    let (status, body) = app.call(Method::GET, "/metrics", None).await;
    assert_eq!(status, axum::http::StatusCode::OK);
    let text = body.as_str().expect("text");
    assert!(
        text.contains("# TYPE traceway_store_commit_retries counter\n")
            && text.contains("\ntraceway_store_commit_retries_total 0\n"),
        "{text}"
    );
}
}
