//! The conformance suite: the behaviour every backend must show, written once against the
//! [`Store`] contract. A backend runs it with [`conformance_suite!`], giving a function that
//! makes a fresh, isolated store on a [`ManualClock`]:
//!
//! ```ignore
//! traceway_store::conformance_suite!(make_sqlite);
//! ```
//!
//! Each function panics (fails the test) on a contract violation.

use std::any::Any;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use traceway_core::{
    EventBody, EventInput, EventType, Level, LlmDetails, LogRecord, Message, NewTrace, SpanId,
    SpanInput, SpanKind, SpanStatus, State, StatusCode, Timestamp, TraceId, TracePatch,
};

mod keys;
pub use keys::*;

use crate::{
    AppendRequest, EventFilter, Lease, ManualClock, Orphaned, PageRequest, Store, StoreError,
    TraceFilter, ORPHANED_REASON, WATCHDOG_LEASE,
};

/// A store under test, with the clock it reads and whatever keeps its resources alive.
pub struct Harness {
    /// The store.
    pub store: Arc<dyn Store>,
    /// Its clock.
    pub clock: ManualClock,
    /// Dropped after the test (a temporary directory, a key prefix to clean).
    pub guard: Box<dyn Any + Send>,
}

/// Where the tests' clock starts: 2026-01-01T00:00:00Z.
pub fn start_time() -> Timestamp {
    Timestamp::from_unix_millis(1_767_225_600_000)
}

/// Generates one `#[tokio::test]` per conformance test, each on a fresh store from
/// `$make: async fn(ManualClock) -> Harness`.
#[macro_export]
macro_rules! conformance_suite {
    ($make:path) => {
        $crate::conformance_suite!(@each $make;
            create_then_get,
            create_with_taken_id_conflicts,
            tenants_are_isolated,
            concurrent_appends_get_gapless_seqs,
            retried_batches_are_stored_once,
            started_span_runs_then_ends,
            state_machine_is_enforced,
            late_spans_after_the_end_are_kept,
            append_to_unknown_trace,
            an_append_can_end_its_trace_and_fill_what_was_unknown,
            listing_is_newest_first_with_cursor_and_pages,
            listing_filters,
            expired_traces_are_never_returned,
            delete_and_delete_ended_before,
            level_is_applied_at_capture,
            event_filters,
            health_is_ok,
            live_events_follow_commits_in_order,
            resume_has_no_gap_and_no_duplicate_under_concurrent_writers,
            a_stalled_subscriber_is_dropped_with_where_to_resume,
            idle_traces_are_orphaned_after_the_threshold_and_not_before,
            recent_activity_keeps_a_trace_alive,
            terminal_traces_are_untouched_by_the_sweep,
            failsafe_expiry_needs_no_watchdog,
            purge_deletes_expired_data_in_bounded_batches,
            lease_is_exclusive_renewable_and_fenced,
            key_is_found_by_id_with_its_tenant_and_hash,
            keys_are_listed_per_tenant_oldest_first,
            revocation_is_per_tenant_and_kept,
            last_use_moves_forward_only
        );
    };
    (@each $make:path; $($name:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                let h = $make($crate::ManualClock::new($crate::conformance::start_time())).await;
                $crate::conformance::$name(&h).await;
                h.store.shutdown().await;
            }
        )*
    };
}

const T: &str = "tenant-a";

fn sid(n: u64) -> SpanId {
    SpanId::from_u64(n).expect("non-zero")
}

async fn new_trace(h: &Harness, tenant: &str, name: &str) -> TraceId {
    let (t, _) = h
        .store
        .create_trace(
            tenant,
            NewTrace {
                name: Some(name.into()),
                ..Default::default()
            },
        )
        .await
        .expect("create");
    t.trace_id
}

fn started(id: u64, parent: Option<u64>, kind: SpanKind, name: &str) -> EventInput {
    EventInput::SpanStarted {
        span: SpanInput {
            parent_span_id: parent.map(sid),
            kind: Some(kind),
            name: Some(name.into()),
            ..SpanInput::new(sid(id))
        },
    }
}

fn ended(id: u64) -> EventInput {
    EventInput::SpanEnded {
        span: SpanInput {
            status: Some(SpanStatus {
                code: StatusCode::Ok,
                message: None,
            }),
            ..SpanInput::new(sid(id))
        },
    }
}

fn llm_ended(id: u64, input_tokens: u64, output_tokens: u64) -> EventInput {
    EventInput::SpanEnded {
        span: SpanInput {
            kind: Some(SpanKind::Llm),
            name: Some("chat".into()),
            llm: Some(LlmDetails {
                model: Some("gpt-4o".into()),
                input_tokens: Some(input_tokens),
                output_tokens: Some(output_tokens),
                input_messages: vec![Message {
                    role: "user".into(),
                    content: Some("what is 2+2?".into()),
                }],
                ..Default::default()
            }),
            ..SpanInput::new(sid(id))
        },
    }
}

async fn append(
    h: &Harness,
    tenant: &str,
    id: TraceId,
    events: Vec<EventInput>,
) -> Result<crate::AppendOutcome, StoreError> {
    h.store
        .append(AppendRequest {
            tenant: tenant.into(),
            trace_id: id,
            create_if_missing: None,
            events,
            end: None,
        })
        .await
}

fn all_events() -> EventFilter {
    EventFilter {
        limit: 10_000,
        ..Default::default()
    }
}

async fn seqs(h: &Harness, tenant: &str, id: TraceId) -> Vec<u64> {
    let events = h
        .store
        .read_events(tenant, id, &all_events())
        .await
        .expect("read")
        .expect("exists");
    events.iter().map(|e| e.seq).collect()
}

/// A created trace reads back as created, with a `trace_started` event at seq 1 and a
/// UUIDv7 id when none was given.
pub async fn create_then_get(h: &Harness) {
    let mut metadata = BTreeMap::new();
    metadata.insert("env".to_string(), "prod".to_string());
    let (created, events) = h
        .store
        .create_trace(
            T,
            NewTrace {
                name: Some("support-agent run".into()),
                agent_id: Some("support".into()),
                session_id: Some("s1".into()),
                user_id: Some("u1".into()),
                metadata,
                ..Default::default()
            },
        )
        .await
        .expect("create");
    assert_eq!(
        created.trace_id.uuid_version(),
        7,
        "generated ids are UUIDv7"
    );
    assert_eq!(created.state, State::Received);
    assert_eq!(created.level, Level::Detailed, "the default capture level");
    assert_eq!(created.created_at, h.clock.now_for_tests());
    assert_eq!(events, counts(&[EventType::TraceStarted]));
    assert_eq!(created.last_seq, 1);

    let got = h
        .store
        .get_trace(T, created.trace_id)
        .await
        .expect("get")
        .expect("exists");
    assert_eq!(got, created);
    assert_eq!(got.metadata["env"], "prod");
    assert_eq!(seqs(h, T, created.trace_id).await, vec![1]);
    assert_eq!(
        h.store.get_spans(T, created.trace_id).await.expect("spans"),
        Some(vec![])
    );
    assert_eq!(
        h.store
            .get_trace_with_spans(T, created.trace_id)
            .await
            .expect("trace and spans"),
        Some((created.clone(), vec![]))
    );

    let unknown = TraceId::new_v7();
    assert_eq!(h.store.get_trace(T, unknown).await.expect("get"), None);
    assert_eq!(h.store.get_spans(T, unknown).await.expect("spans"), None);
    assert_eq!(
        h.store
            .get_trace_with_spans(T, unknown)
            .await
            .expect("trace and spans"),
        None
    );
    assert_eq!(
        h.store
            .read_events(T, unknown, &all_events())
            .await
            .expect("events"),
        None
    );
}

/// Creating a trace whose id exists is a conflict; the first one is untouched.
pub async fn create_with_taken_id_conflicts(h: &Harness) {
    let id = TraceId::new_v7();
    let new = NewTrace {
        trace_id: Some(id),
        name: Some("first".into()),
        ..Default::default()
    };
    h.store.create_trace(T, new.clone()).await.expect("create");
    let again = h
        .store
        .create_trace(
            T,
            NewTrace {
                name: Some("second".into()),
                ..new
            },
        )
        .await;
    assert!(
        matches!(again, Err(StoreError::IdTaken(i)) if i == id),
        "{again:?}"
    );
    let got = h
        .store
        .get_trace(T, id)
        .await
        .expect("get")
        .expect("exists");
    assert_eq!(got.name.as_deref(), Some("first"));
}

/// Another tenant's trace does not exist for any read or write.
pub async fn tenants_are_isolated(h: &Harness) {
    let id = new_trace(h, T, "mine").await;
    let other = "tenant-b";
    assert_eq!(h.store.get_trace(other, id).await.expect("get"), None);
    assert_eq!(h.store.get_spans(other, id).await.expect("spans"), None);
    assert_eq!(
        h.store
            .read_events(other, id, &all_events())
            .await
            .expect("events"),
        None
    );
    let r = append(h, other, id, vec![started(1, None, SpanKind::Agent, "x")]).await;
    assert!(matches!(r, Err(StoreError::NotFound(_))), "{r:?}");
    let r = h
        .store
        .update_trace(
            other,
            id,
            TracePatch {
                state: Some(State::Completed),
                ..Default::default()
            },
        )
        .await;
    assert!(matches!(r, Err(StoreError::NotFound(_))), "{r:?}");
    assert!(!h.store.delete_trace(other, id).await.expect("delete"));
    let page = h
        .store
        .list_traces(
            other,
            &TraceFilter::default(),
            &PageRequest {
                limit: 10,
                ..Default::default()
            },
        )
        .await
        .expect("list");
    assert!(page.items.is_empty());
    // The owner still has it, unchanged.
    let mine = h
        .store
        .get_trace(T, id)
        .await
        .expect("get")
        .expect("exists");
    assert_eq!(mine.state, State::Received);
    assert_eq!(mine.last_seq, 1);
    // The same trace id can exist separately in another tenant.
    h.store
        .create_trace(
            other,
            NewTrace {
                trace_id: Some(id),
                ..Default::default()
            },
        )
        .await
        .expect("create in b");
}

/// Many writers appending to one trace at once: every event gets a seq, 1..=N, no gaps,
/// no duplicates, and `last_seq` is N.
pub async fn concurrent_appends_get_gapless_seqs(h: &Harness) {
    let id = new_trace(h, T, "busy").await;
    let writers = 8u64;
    let batches = 25u64;
    let mut tasks = Vec::new();
    for w in 0..writers {
        let store = h.store.clone();
        tasks.push(tokio::spawn(async move {
            for b in 0..batches {
                let span = 1 + w * 1000 + b;
                let events = vec![started(span, None, SpanKind::Tool, "t"), ended(span)];
                store
                    .append(AppendRequest {
                        tenant: T.into(),
                        trace_id: id,
                        create_if_missing: None,
                        events,
                        end: None,
                    })
                    .await
                    .expect("append");
            }
        }));
    }
    for t in tasks {
        t.await.expect("task");
    }
    let got = seqs(h, T, id).await;
    // 1 trace_started + 1 state change to RUNNING + 2 per batch.
    let n = 2 + writers * batches * 2;
    assert_eq!(got, (1..=n).collect::<Vec<_>>());
    let trace = h
        .store
        .get_trace(T, id)
        .await
        .expect("get")
        .expect("exists");
    assert_eq!(trace.last_seq, n);
    assert_eq!(trace.rollups.span_count, writers * batches);
}

/// A batch sent again (an exporter or client retry) adds nothing; log and error events
/// are deduplicated by their `id`.
pub async fn retried_batches_are_stored_once(h: &Harness) {
    let id = new_trace(h, T, "retry").await;
    let log = |key: &str| EventInput::Log {
        id: Some(key.into()),
        time: None,
        record: LogRecord {
            message: "fetched 3 docs".into(),
            ..Default::default()
        },
    };
    let batch = vec![
        started(1, None, SpanKind::Agent, "agent"),
        llm_ended(2, 10, 5),
        ended(1),
        log("log-1"),
    ];
    let first = append(h, T, id, batch.clone()).await.expect("first");
    assert_eq!((first.accepted, first.duplicates), (4, 0));
    let before = seqs(h, T, id).await;
    let second = append(h, T, id, batch).await.expect("retry");
    assert_eq!((second.accepted, second.duplicates), (0, 4));
    assert_eq!(
        second.last_seq,
        *before.last().expect("events"),
        "last_seq is known without new events"
    );
    assert_eq!(second.stored.total(), 0);
    assert_eq!(seqs(h, T, id).await, before, "nothing stored twice");
    let trace = h
        .store
        .get_trace(T, id)
        .await
        .expect("get")
        .expect("exists");
    assert_eq!(trace.rollups.span_count, 2);
    assert_eq!(trace.rollups.input_tokens, 10, "tokens not counted twice");
    // A retry mixed with new data keeps only the new part.
    let third = append(h, T, id, vec![log("log-1"), log("log-2")])
        .await
        .expect("mixed");
    assert_eq!((third.accepted, third.duplicates), (1, 1));
}

/// A step reported when it starts shows as running, then ends with the details its end
/// adds; rollups follow.
pub async fn started_span_runs_then_ends(h: &Harness) {
    let id = new_trace(h, T, "steps").await;
    let start = EventInput::SpanStarted {
        span: SpanInput {
            kind: Some(SpanKind::Llm),
            name: Some("chat".into()),
            component_id: Some("planner".into()),
            llm: Some(LlmDetails {
                model: Some("gpt-4o".into()),
                ..Default::default()
            }),
            ..SpanInput::new(sid(7))
        },
    };
    append(h, T, id, vec![start]).await.expect("start");
    let spans = h
        .store
        .get_spans(T, id)
        .await
        .expect("spans")
        .expect("exists");
    assert_eq!(spans.len(), 1);
    assert!(spans[0].end_time.is_none(), "running");
    assert_eq!(spans[0].start_time, h.clock.now_for_tests());

    h.clock.advance(Duration::from_millis(1500));
    let out = append(h, T, id, vec![llm_ended(7, 120, 30)])
        .await
        .expect("end");
    assert_eq!(out.stored, counts(&[EventType::SpanEnded]));
    let spans = h
        .store
        .get_spans(T, id)
        .await
        .expect("spans")
        .expect("exists");
    let s = &spans[0];
    assert_eq!(s.duration(), Some(Duration::from_millis(1500)));
    assert_eq!(
        s.component_id.as_deref(),
        Some("planner"),
        "kept from the start"
    );
    let llm = s.llm.as_ref().expect("llm");
    assert_eq!(
        (llm.model.as_deref(), llm.input_tokens, llm.output_tokens),
        (Some("gpt-4o"), Some(120), Some(30))
    );
    let trace = h
        .store
        .get_trace(T, id)
        .await
        .expect("get")
        .expect("exists");
    assert_eq!(
        (trace.rollups.span_count, trace.rollups.total_tokens),
        (1, 150)
    );
    assert_eq!(trace.rollups.duration_ms, Some(1500.0));
    assert_eq!(trace.last_activity_at, h.clock.now_for_tests());
}

/// RECEIVED → RUNNING on the first step, → COMPLETED on request, and never out of a
/// terminal state; each change is an event, the end also a `trace_ended`.
pub async fn state_machine_is_enforced(h: &Harness) {
    let id = new_trace(h, T, "lifecycle").await;
    append(h, T, id, vec![started(1, None, SpanKind::Agent, "a")])
        .await
        .expect("append");
    let trace = h
        .store
        .get_trace(T, id)
        .await
        .expect("get")
        .expect("exists");
    assert_eq!(trace.state, State::Running);

    let custom: State = "WAITING_FOR_HUMAN".parse().expect("state");
    let (t, ev) = h
        .store
        .update_trace(
            T,
            id,
            TracePatch {
                state: Some(custom.clone()),
                ..Default::default()
            },
        )
        .await
        .expect("custom");
    assert_eq!(t.state, custom);
    assert_eq!(ev.total(), 1);

    h.clock.advance(Duration::from_secs(2));
    let mut metadata = BTreeMap::new();
    metadata.insert("outcome".to_string(), "resolved".to_string());
    let (t, ev) = h
        .store
        .update_trace(
            T,
            id,
            TracePatch {
                state: Some(State::Completed),
                reason: Some("done".into()),
                metadata,
                name: None,
            },
        )
        .await
        .expect("complete");
    assert_eq!(t.state, State::Completed);
    assert_eq!(t.ended_at, Some(h.clock.now_for_tests()));
    assert_eq!(t.metadata["outcome"], "resolved");
    assert_eq!(
        ev,
        counts(&[EventType::StateChanged, EventType::TraceEnded])
    );

    for to in [State::Running, State::Errored] {
        let r = h
            .store
            .update_trace(
                T,
                id,
                TracePatch {
                    state: Some(to),
                    ..Default::default()
                },
            )
            .await;
        assert!(matches!(r, Err(StoreError::IllegalTransition(_))), "{r:?}");
    }
    // The same terminal state again is a harmless retry.
    let before = h
        .store
        .get_trace(T, id)
        .await
        .expect("get")
        .expect("exists")
        .last_seq;
    let (_, ev) = h
        .store
        .update_trace(
            T,
            id,
            TracePatch {
                state: Some(State::Completed),
                ..Default::default()
            },
        )
        .await
        .expect("retry");
    assert_eq!(ev.total(), 0);
    let after = h
        .store
        .get_trace(T, id)
        .await
        .expect("get")
        .expect("exists");
    assert_eq!(after.last_seq, before);
    assert_eq!(after.state, State::Completed);

    let all = h
        .store
        .read_events(T, id, &all_events())
        .await
        .expect("read")
        .expect("exists");
    let changes: Vec<(String, String)> = all
        .iter()
        .filter_map(|e| match &e.body {
            EventBody::StateChanged(c) => Some((c.from.to_string(), c.to.to_string())),
            _ => None,
        })
        .collect();
    assert_eq!(
        changes,
        vec![
            ("RECEIVED".into(), "RUNNING".into()),
            ("RUNNING".into(), "WAITING_FOR_HUMAN".into()),
            ("WAITING_FOR_HUMAN".into(), "COMPLETED".into())
        ]
    );
    // A terminal state cannot be the initial one.
    let r = h
        .store
        .create_trace(
            T,
            NewTrace {
                state: Some(State::Completed),
                ..Default::default()
            },
        )
        .await;
    assert!(matches!(r, Err(StoreError::Invalid(_))), "{r:?}");
}

/// Spans that arrive after the trace ended are stored and counted; the state stays.
pub async fn late_spans_after_the_end_are_kept(h: &Harness) {
    let id = new_trace(h, T, "late").await;
    h.store
        .update_trace(
            T,
            id,
            TracePatch {
                state: Some(State::Completed),
                ..Default::default()
            },
        )
        .await
        .expect("complete");
    let out = append(h, T, id, vec![llm_ended(9, 1, 1)])
        .await
        .expect("late append");
    assert_eq!(out.accepted, 1);
    let t = h
        .store
        .get_trace(T, id)
        .await
        .expect("get")
        .expect("exists");
    assert_eq!(t.state, State::Completed);
    assert_eq!(t.rollups.span_count, 1);
    assert_eq!(
        h.store
            .get_spans(T, id)
            .await
            .expect("spans")
            .expect("exists")
            .len(),
        1
    );
}

/// Appending to an unknown trace is `NotFound`, unless the request says how to create it
/// (as OTLP ingestion does).
pub async fn append_to_unknown_trace(h: &Harness) {
    let id = TraceId::new_v7();
    let r = append(h, T, id, vec![ended(1)]).await;
    assert!(
        matches!(r, Err(StoreError::NotFound(x)) if x == id),
        "{r:?}"
    );
    let out = h
        .store
        .append(AppendRequest {
            tenant: T.into(),
            trace_id: id,
            create_if_missing: Some(NewTrace {
                agent_id: Some("otel-agent".into()),
                state: Some(State::Running),
                ..Default::default()
            }),
            events: vec![ended(1)],
            end: None,
        })
        .await
        .expect("create on append");
    assert!(out.created);
    assert_eq!(
        out.stored,
        counts(&[EventType::TraceStarted, EventType::SpanEnded])
    );
    let t = h
        .store
        .get_trace(T, id)
        .await
        .expect("get")
        .expect("exists");
    assert_eq!(
        (t.state, t.agent_id.as_deref()),
        (State::Running, Some("otel-agent"))
    );
}

/// An append may end its trace in the same write (the first end decides), and hints of
/// a later batch fill the trace's empty fields without overwriting known ones.
pub async fn an_append_can_end_its_trace_and_fill_what_was_unknown(h: &Harness) {
    use crate::TraceEnd;
    let id = TraceId::new_v7();
    let first = NewTrace {
        session_id: Some("s1".into()),
        state: Some(State::Running),
        ..Default::default()
    };
    let req = |events, hints: NewTrace, end: Option<TraceEnd>| AppendRequest {
        tenant: T.into(),
        trace_id: id,
        create_if_missing: Some(hints),
        events,
        end,
    };
    h.store
        .append(req(vec![ended(2)], first, None))
        .await
        .expect("children first");
    let mut metadata = BTreeMap::new();
    metadata.insert("service.name".to_string(), "agent-svc".to_string());
    let root_hints = NewTrace {
        name: Some("support run".into()),
        agent_id: Some("support".into()),
        session_id: Some("other".into()),
        metadata,
        state: Some(State::Running),
        ..Default::default()
    };
    let end = TraceEnd {
        state: State::Errored,
        reason: Some("root span ended with an error".into()),
    };
    let out = h
        .store
        .append(req(vec![ended(1)], root_hints.clone(), Some(end)))
        .await
        .expect("root");
    assert_eq!(
        out.stored,
        counts(&[
            EventType::SpanEnded,
            EventType::StateChanged,
            EventType::TraceEnded
        ])
    );
    let t = h
        .store
        .get_trace(T, id)
        .await
        .expect("get")
        .expect("exists");
    assert_eq!(t.state, State::Errored);
    assert_eq!(
        (t.name.as_deref(), t.agent_id.as_deref()),
        (Some("support run"), Some("support")),
        "filled"
    );
    assert_eq!(
        t.session_id.as_deref(),
        Some("s1"),
        "a known field is not overwritten"
    );
    assert_eq!(t.metadata["service.name"], "agent-svc");
    // A second end (a re-exported or second root) changes nothing; its spans still count.
    let again = TraceEnd {
        state: State::Completed,
        reason: None,
    };
    let out = h
        .store
        .append(req(vec![ended(3)], root_hints, Some(again)))
        .await
        .expect("late root");
    assert_eq!(out.accepted, 1);
    let t = h
        .store
        .get_trace(T, id)
        .await
        .expect("get")
        .expect("exists");
    assert_eq!((t.state, t.rollups.span_count), (State::Errored, 3));
    // What the later batch filled in is what the listing filters on.
    for filter in [
        TraceFilter {
            agent_id: Some("support".into()),
            ..Default::default()
        },
        TraceFilter {
            state: Some(State::Errored),
            ..Default::default()
        },
    ] {
        let page = h
            .store
            .list_traces(
                T,
                &filter,
                &PageRequest {
                    limit: 10,
                    ..Default::default()
                },
            )
            .await
            .expect("list");
        let ids: Vec<_> = page.items.iter().map(|t| t.trace_id).collect();
        assert_eq!(ids, vec![id], "{filter:?}");
    }
}

/// Listing returns newest first; following cursors visits every trace exactly once;
/// page/offset works; a bad cursor is `Invalid`.
pub async fn listing_is_newest_first_with_cursor_and_pages(h: &Harness) {
    let mut ids = Vec::new();
    for i in 0..23 {
        ids.push(new_trace(h, T, &format!("run {i}")).await);
        if i % 3 != 0 {
            h.clock.advance(Duration::from_millis(10)); // some share a timestamp
        }
    }
    new_trace(h, "tenant-b", "not mine").await;
    let newest_first: Vec<TraceId> = {
        let mut v: Vec<_> = Vec::new();
        for id in &ids {
            let t = h
                .store
                .get_trace(T, *id)
                .await
                .expect("get")
                .expect("exists");
            v.push((t.created_at, t.trace_id));
        }
        v.sort();
        v.reverse();
        v.into_iter().map(|(_, id)| id).collect()
    };
    let mut seen = Vec::new();
    let mut cursor = None;
    loop {
        let page = h
            .store
            .list_traces(
                T,
                &TraceFilter::default(),
                &PageRequest {
                    cursor: cursor.clone(),
                    limit: 5,
                    offset: 0,
                },
            )
            .await
            .expect("list");
        assert!(page.items.len() <= 5);
        seen.extend(page.items.iter().map(|t| t.trace_id));
        match page.next_cursor {
            Some(c) => cursor = Some(c),
            None => break,
        }
    }
    assert_eq!(seen, newest_first);
    let third_page = h
        .store
        .list_traces(
            T,
            &TraceFilter::default(),
            &PageRequest {
                cursor: None,
                limit: 5,
                offset: 10,
            },
        )
        .await
        .expect("page");
    assert_eq!(
        third_page
            .items
            .iter()
            .map(|t| t.trace_id)
            .collect::<Vec<_>>(),
        newest_first[10..15].to_vec()
    );
    let r = h
        .store
        .list_traces(
            T,
            &TraceFilter::default(),
            &PageRequest {
                cursor: Some("not-a-cursor".into()),
                limit: 5,
                offset: 0,
            },
        )
        .await;
    assert!(matches!(r, Err(StoreError::Invalid(_))), "{r:?}");
}

/// Each filter narrows the listing to the matching traces.
pub async fn listing_filters(h: &Harness) {
    let mk = |agent: &str, user: &str, session: &str| NewTrace {
        agent_id: Some(agent.into()),
        user_id: Some(user.into()),
        session_id: Some(session.into()),
        ..Default::default()
    };
    let (a, _) = h
        .store
        .create_trace(T, mk("planner", "alice", "s1"))
        .await
        .expect("a");
    h.clock.advance(Duration::from_secs(60));
    let (b, _) = h
        .store
        .create_trace(T, mk("planner", "bob", "s2"))
        .await
        .expect("b");
    h.clock.advance(Duration::from_secs(60));
    let (c, _) = h
        .store
        .create_trace(T, mk("coder", "alice", "s1"))
        .await
        .expect("c");
    // b errored with a failing span of 2 s; c completed.
    let failing = EventInput::SpanEnded {
        span: SpanInput {
            start_time: Some(
                h.clock
                    .now_for_tests()
                    .saturating_sub(Duration::from_secs(2)),
            ),
            end_time: Some(h.clock.now_for_tests()),
            status: Some(SpanStatus {
                code: StatusCode::Error,
                message: Some("boom".into()),
            }),
            ..SpanInput::new(sid(1))
        },
    };
    append(h, T, b.trace_id, vec![failing]).await.expect("fail");
    h.store
        .update_trace(
            T,
            b.trace_id,
            TracePatch {
                state: Some(State::Errored),
                ..Default::default()
            },
        )
        .await
        .expect("err");
    h.store
        .update_trace(
            T,
            c.trace_id,
            TracePatch {
                state: Some(State::Completed),
                ..Default::default()
            },
        )
        .await
        .expect("done");

    let list = |f: TraceFilter| async move {
        h.store
            .list_traces(
                T,
                &f,
                &PageRequest {
                    limit: 50,
                    ..Default::default()
                },
            )
            .await
            .expect("list")
            .items
            .into_iter()
            .map(|t| t.trace_id)
            .collect::<Vec<_>>()
    };
    let (a, b, c) = (a.trace_id, b.trace_id, c.trace_id);
    assert_eq!(list(TraceFilter::default()).await, vec![c, b, a]);
    assert_eq!(
        list(TraceFilter {
            agent_id: Some("planner".into()),
            ..Default::default()
        })
        .await,
        vec![b, a]
    );
    assert_eq!(
        list(TraceFilter {
            user_id: Some("alice".into()),
            ..Default::default()
        })
        .await,
        vec![c, a]
    );
    assert_eq!(
        list(TraceFilter {
            session_id: Some("s2".into()),
            ..Default::default()
        })
        .await,
        vec![b]
    );
    assert_eq!(
        list(TraceFilter {
            state: Some(State::Errored),
            ..Default::default()
        })
        .await,
        vec![b]
    );
    assert_eq!(
        list(TraceFilter {
            state: Some(State::Received),
            ..Default::default()
        })
        .await,
        vec![a]
    );
    assert_eq!(
        list(TraceFilter {
            has_error: Some(true),
            ..Default::default()
        })
        .await,
        vec![b]
    );
    assert_eq!(
        list(TraceFilter {
            has_error: Some(false),
            ..Default::default()
        })
        .await,
        vec![c, a]
    );
    assert_eq!(
        list(TraceFilter {
            min_duration_ms: Some(1500.0),
            ..Default::default()
        })
        .await,
        vec![b]
    );
    let start = start_time();
    assert_eq!(
        list(TraceFilter {
            created_after: Some(start.saturating_add(Duration::from_secs(30))),
            created_before: Some(start.saturating_add(Duration::from_secs(90))),
            ..Default::default()
        })
        .await,
        vec![b]
    );
    assert_eq!(
        list(TraceFilter {
            agent_id: Some("planner".into()),
            user_id: Some("alice".into()),
            ..Default::default()
        })
        .await,
        vec![a]
    );
}

/// Expired data is never returned, before any physical deletion: a non-terminal trace at
/// its 24 h failsafe; a terminal trace's spans and events after 3 days, its row after 7.
pub async fn expired_traces_are_never_returned(h: &Harness) {
    let open = new_trace(h, T, "abandoned").await;
    let done = new_trace(h, T, "finished").await;
    append(h, T, done, vec![llm_ended(1, 5, 5)])
        .await
        .expect("append");
    h.store
        .update_trace(
            T,
            done,
            TracePatch {
                state: Some(State::Completed),
                ..Default::default()
            },
        )
        .await
        .expect("done");
    assert_eq!(listed(h).await, 2);

    h.clock.advance(Duration::from_secs(24 * 3600 - 1));
    assert!(
        h.store.get_trace(T, open).await.expect("get").is_some(),
        "not yet"
    );
    h.clock.advance(Duration::from_secs(2));
    assert_eq!(
        h.store.get_trace(T, open).await.expect("get"),
        None,
        "failsafe expiry"
    );
    assert_eq!(
        h.store
            .read_events(T, open, &all_events())
            .await
            .expect("events"),
        None
    );
    let r = append(h, T, open, vec![ended(5)]).await;
    assert!(
        matches!(r, Err(StoreError::NotFound(_))),
        "an expired trace takes no appends: {r:?}"
    );
    assert_eq!(listed(h).await, 1);

    h.clock.advance(Duration::from_secs(2 * 24 * 3600));
    let t = h
        .store
        .get_trace(T, done)
        .await
        .expect("get")
        .expect("row kept 7 days");
    assert_eq!(t.rollups.total_tokens, 10, "summary kept with the row");
    assert_eq!(
        h.store.get_spans(T, done).await.expect("spans"),
        Some(vec![]),
        "spans gone after 3 days"
    );
    assert_eq!(
        h.store
            .read_events(T, done, &all_events())
            .await
            .expect("events"),
        Some(vec![])
    );

    h.clock.advance(Duration::from_secs(4 * 24 * 3600));
    assert_eq!(
        h.store.get_trace(T, done).await.expect("get"),
        None,
        "row gone after 7 days"
    );
    assert_eq!(listed(h).await, 0);
    // An expired id can be used again.
    h.store
        .create_trace(
            T,
            NewTrace {
                trace_id: Some(open),
                ..Default::default()
            },
        )
        .await
        .expect("reuse");
}

async fn listed(h: &Harness) -> usize {
    h.store
        .list_traces(
            T,
            &TraceFilter::default(),
            &PageRequest {
                limit: 10,
                ..Default::default()
            },
        )
        .await
        .expect("list")
        .items
        .len()
}

/// Delete removes one trace; delete-ended-before removes only terminal traces that ended
/// before the cutoff, and says how many.
pub async fn delete_and_delete_ended_before(h: &Harness) {
    let mut old = Vec::new();
    for i in 0..5 {
        let id = new_trace(h, T, &format!("old {i}")).await;
        append(h, T, id, vec![started(1, None, SpanKind::Agent, "a")])
            .await
            .expect("append");
        h.store
            .update_trace(
                T,
                id,
                TracePatch {
                    state: Some(State::Completed),
                    ..Default::default()
                },
            )
            .await
            .expect("done");
        old.push(id);
    }
    let other_tenant_old = new_trace(h, "tenant-b", "b").await;
    h.store
        .update_trace(
            "tenant-b",
            other_tenant_old,
            TracePatch {
                state: Some(State::Errored),
                ..Default::default()
            },
        )
        .await
        .expect("b done");
    h.clock.advance(Duration::from_secs(2 * 24 * 3600));
    let running = new_trace(h, T, "running").await;
    let recent = new_trace(h, T, "recent").await;
    h.store
        .update_trace(
            T,
            recent,
            TracePatch {
                state: Some(State::Completed),
                ..Default::default()
            },
        )
        .await
        .expect("done");

    assert!(h.store.delete_trace(T, old[0]).await.expect("delete"));
    assert!(!h.store.delete_trace(T, old[0]).await.expect("delete again"));
    assert_eq!(h.store.get_trace(T, old[0]).await.expect("get"), None);
    assert_eq!(
        h.store
            .read_events(T, old[0], &all_events())
            .await
            .expect("events"),
        None
    );

    let cutoff = h
        .clock
        .now_for_tests()
        .saturating_sub(Duration::from_secs(24 * 3600));
    // Cleanup judges by end time: the running trace never ended, whatever its age.
    let count = || async { h.store.count_ended_before(T, cutoff).await.expect("count") };
    assert_eq!(count().await, 4);
    // With a limit (how the CLI shows progress), then the rest.
    assert_eq!(
        h.store
            .delete_ended_before(T, cutoff, Some(3))
            .await
            .expect("cleanup"),
        3
    );
    assert_eq!(count().await, 1);
    assert_eq!(
        h.store
            .delete_ended_before(T, cutoff, None)
            .await
            .expect("cleanup"),
        1
    );
    assert_eq!(
        h.store
            .delete_ended_before(T, cutoff, None)
            .await
            .expect("cleanup again"),
        0
    );
    assert_eq!(count().await, 0);
    for id in &old {
        assert_eq!(h.store.get_trace(T, *id).await.expect("get"), None);
    }
    assert!(
        h.store.get_trace(T, running).await.expect("get").is_some(),
        "running traces are not cleaned up"
    );
    assert!(
        h.store.get_trace(T, recent).await.expect("get").is_some(),
        "recent traces stay"
    );
    assert!(
        h.store
            .get_trace("tenant-b", other_tenant_old)
            .await
            .expect("get")
            .is_some(),
        "other tenants untouched"
    );
}

/// A trace's level is applied when data is written: detail above it is never stored.
pub async fn level_is_applied_at_capture(h: &Harness) {
    let mut ids = Vec::new();
    for level in [Level::Minimal, Level::Standard, Level::Detailed] {
        let (t, _) = h
            .store
            .create_trace(
                T,
                NewTrace {
                    level: Some(level),
                    ..Default::default()
                },
            )
            .await
            .expect("create");
        append(h, T, t.trace_id, vec![llm_ended(1, 7, 3)])
            .await
            .expect("append");
        ids.push(t.trace_id);
    }
    let llm_of = |spans: Vec<traceway_core::Span>| spans.into_iter().next().expect("span").llm;
    let minimal = llm_of(
        h.store
            .get_spans(T, ids[0])
            .await
            .expect("spans")
            .expect("exists"),
    );
    assert_eq!(minimal, None, "minimal keeps no LLM details");
    let events = h
        .store
        .read_events(T, ids[0], &all_events())
        .await
        .expect("events")
        .expect("exists");
    let ended = events
        .iter()
        .find_map(|e| match &e.body {
            EventBody::SpanEnded(s) => Some(s.clone()),
            _ => None,
        })
        .expect("span_ended");
    assert_eq!(ended.llm, None, "the event log is stripped too");
    let minimal_trace = h
        .store
        .get_trace(T, ids[0])
        .await
        .expect("get")
        .expect("exists");
    assert_eq!(
        minimal_trace.rollups.total_tokens, 0,
        "tokens above the level are not kept anywhere"
    );

    let standard = llm_of(
        h.store
            .get_spans(T, ids[1])
            .await
            .expect("spans")
            .expect("exists"),
    )
    .expect("llm");
    assert_eq!(
        (standard.model.as_deref(), standard.input_tokens),
        (Some("gpt-4o"), Some(7))
    );
    assert!(
        standard.input_messages.is_empty(),
        "standard keeps no prompts"
    );

    let detailed = llm_of(
        h.store
            .get_spans(T, ids[2])
            .await
            .expect("spans")
            .expect("exists"),
    )
    .expect("llm");
    assert_eq!(
        detailed.input_messages[0].content.as_deref(),
        Some("what is 2+2?")
    );
}

/// Event reads filter by type, component and `after_seq`, with limit and offset.
pub async fn event_filters(h: &Harness) {
    let id = new_trace(h, T, "filters").await;
    let comp = |n: u64, c: &str| EventInput::SpanStarted {
        span: SpanInput {
            component_id: Some(c.into()),
            name: Some(format!("s{n}")),
            ..SpanInput::new(sid(n))
        },
    };
    let err = EventInput::Error {
        id: None,
        time: None,
        record: traceway_core::ErrorRecord {
            span_id: Some(sid(2)),
            error_type: Some("ValueError".into()),
            message: "bad".into(),
            stacktrace: None,
        },
    };
    append(
        h,
        T,
        id,
        vec![
            comp(1, "retriever"),
            comp(2, "planner"),
            ended(1),
            ended(2),
            err,
        ],
    )
    .await
    .expect("append");
    // seqs: 1 trace_started, 2 state_changed, 3 s1 start, 4 s2 start, 5 s1 end, 6 s2 end, 7 error
    let read = |f: EventFilter| async move {
        h.store
            .read_events(T, id, &f)
            .await
            .expect("read")
            .expect("exists")
            .iter()
            .map(|e| e.seq)
            .collect::<Vec<_>>()
    };
    assert_eq!(read(all_events()).await, (1..=7).collect::<Vec<_>>());
    assert_eq!(
        read(EventFilter {
            types: vec![EventType::SpanStarted],
            limit: 100,
            ..Default::default()
        })
        .await,
        vec![3, 4]
    );
    assert_eq!(
        read(EventFilter {
            types: vec![EventType::SpanEnded, EventType::Error],
            limit: 100,
            ..Default::default()
        })
        .await,
        vec![5, 6, 7]
    );
    assert_eq!(
        read(EventFilter {
            component_id: Some("planner".into()),
            limit: 100,
            ..Default::default()
        })
        .await,
        vec![4, 6, 7],
        "errors of a span carry its component"
    );
    assert_eq!(
        read(EventFilter {
            after_seq: 5,
            limit: 100,
            ..Default::default()
        })
        .await,
        vec![6, 7]
    );
    assert_eq!(
        read(EventFilter {
            limit: 2,
            offset: 1,
            ..Default::default()
        })
        .await,
        vec![2, 3]
    );
}

/// A healthy store says so.
pub async fn health_is_ok(h: &Harness) {
    h.store.health().await.expect("healthy");
}

impl ManualClock {
    /// Now, as the store under test sees it.
    pub fn now_for_tests(&self) -> Timestamp {
        crate::Clock::now(self)
    }
}

/// Subscribers get each committed event once, in `seq` order; other traces and other
/// tenants are not mixed in; tenant-wide subscriptions get trace-level events.
pub async fn live_events_follow_commits_in_order(h: &Harness) {
    use crate::Scope;
    let id = new_trace(h, T, "live").await;
    let other = new_trace(h, T, "other").await;
    let mut sub = h.store.subscribe(T, Scope::Trace(id));
    let mut foreign = h.store.subscribe("tenant-b", Scope::Trace(id));
    let mut tenant = h.store.subscribe(
        T,
        Scope::Tenant {
            all_events: false,
            agent_id: None,
            state: None,
        },
    );
    assert_eq!(h.store.subscriber_count(), 3);
    append(h, T, other, vec![started(9, None, SpanKind::Agent, "x")])
        .await
        .expect("other");
    for i in 0..5 {
        append(
            h,
            T,
            id,
            vec![started(10 + i, None, SpanKind::Tool, "t"), ended(10 + i)],
        )
        .await
        .expect("append");
    }
    h.store
        .update_trace(
            T,
            id,
            TracePatch {
                state: Some(State::Completed),
                ..Default::default()
            },
        )
        .await
        .expect("done");
    let mut got = Vec::new();
    while got.len() < 13 {
        let e = tokio::time::timeout(Duration::from_secs(5), sub.events.recv())
            .await
            .expect("in time")
            .expect("open");
        assert_eq!(e.trace_id, id);
        got.push(e.seq);
    }
    // 1 trace_started happened before subscribing; then state change, 10 span events,
    // state change and trace_ended.
    assert_eq!(got, (2..=14).collect::<Vec<_>>());
    assert!(
        foreign.events.try_recv().is_err(),
        "another tenant sees nothing"
    );
    let mut levels = Vec::new();
    while let Ok(e) = tenant.events.try_recv() {
        levels.push((e.trace_id == id, e.body.event_type()));
    }
    assert!(
        levels
            .iter()
            .all(|(_, t)| !matches!(t, EventType::SpanStarted | EventType::SpanEnded)),
        "{levels:?}"
    );
    assert!(
        levels.contains(&(true, EventType::TraceEnded)),
        "{levels:?}"
    );
    drop((sub, foreign, tenant));
    assert_eq!(
        h.store.subscriber_count(),
        0,
        "subscribers are released when dropped"
    );
}

/// The resume protocol (subscribe, read stored events after the last seq, then live
/// events above the last one read), repeated across reconnects while writers append,
/// yields exactly 1..=N.
pub async fn resume_has_no_gap_and_no_duplicate_under_concurrent_writers(h: &Harness) {
    use crate::Scope;
    let id = new_trace(h, T, "resume").await;
    let writers: Vec<_> = (0..4u64)
        .map(|w| {
            let store = h.store.clone();
            tokio::spawn(async move {
                for b in 0..40u64 {
                    let span = 1 + w * 1000 + b;
                    let events = vec![started(span, None, SpanKind::Tool, "t"), ended(span)];
                    store
                        .append(AppendRequest {
                            tenant: T.into(),
                            trace_id: id,
                            create_if_missing: None,
                            events,
                            end: None,
                        })
                        .await
                        .expect("append");
                }
            })
        })
        .collect();
    let total = 2 + 4 * 40 * 2; // trace_started, RUNNING, 2 per batch
    let mut seen: Vec<u64> = Vec::new();
    let mut reconnects = 0;
    while (seen.len() as u64) < total {
        reconnects += 1;
        let after = seen.last().copied().unwrap_or(0);
        let mut sub = h.store.subscribe(T, Scope::Trace(id));
        let stored = h
            .store
            .read_events(
                T,
                id,
                &EventFilter {
                    after_seq: after,
                    limit: 10_000,
                    ..Default::default()
                },
            )
            .await
            .expect("read")
            .expect("exists");
        let mut last = after;
        for e in stored.iter().take(7) {
            seen.push(e.seq);
            last = e.seq;
        }
        if stored.len() > 7 {
            continue; // drop the subscription mid-replay: a reconnect
        }
        // Live, for a few events, then disconnect.
        for _ in 0..9 {
            if (seen.len() as u64) >= total {
                break;
            }
            let e = tokio::time::timeout(Duration::from_secs(5), sub.events.recv())
                .await
                .expect("in time")
                .expect("open");
            if e.seq > last {
                seen.push(e.seq);
                last = e.seq;
            }
        }
    }
    for w in writers {
        w.await.expect("writer");
    }
    assert_eq!(
        seen,
        (1..=total).collect::<Vec<_>>(),
        "after {reconnects} reconnects"
    );
    assert!(reconnects > 3);
}

/// A subscriber that stops reading is dropped once its buffer is full and learns where to
/// resume; writes are not slowed and other subscribers get everything.
pub async fn a_stalled_subscriber_is_dropped_with_where_to_resume(h: &Harness) {
    use crate::Scope;
    let id = new_trace(h, T, "stall").await;
    let stalled = h.store.subscribe(T, Scope::Trace(id));
    let mut reader = h.store.subscribe(T, Scope::Trace(id));
    let collect = tokio::spawn(async move {
        let mut n = 0u64;
        while let Some(e) = reader.events.recv().await {
            n += 1;
            if e.seq >= 2 + 3000 {
                break;
            }
        }
        n
    });
    for b in 0..300u64 {
        let events: Vec<EventInput> = (0..10).map(|i| ended(1 + b * 10 + i)).collect();
        tokio::time::timeout(Duration::from_secs(10), append(h, T, id, events))
            .await
            .expect("ingest is not blocked")
            .expect("append");
    }
    assert_eq!(
        collect.await.expect("reader"),
        3001,
        "the reading subscriber got every event"
    );
    let lag = stalled.lagged().expect("the stalled subscriber lagged");
    assert_eq!(lag.trace_id, id);
    assert!(
        lag.resume_after_seq >= 1 && lag.resume_after_seq < 3002,
        "{lag:?}"
    );
    let mut stalled = stalled;
    let mut buffered = Vec::new();
    while let Ok(e) = stalled.events.try_recv() {
        buffered.push(e.seq);
    }
    assert_eq!(
        buffered.last().copied(),
        Some(lag.resume_after_seq),
        "resume right after the last event it was sent"
    );
}

const MINUTE: Duration = Duration::from_secs(60);
const ORPHAN_AFTER: Duration = Duration::from_secs(30 * 60);
const LEASE_TTL: Duration = Duration::from_secs(30);

/// Takes (or extends) the watchdog lease for `holder`; the tests move the clock by hours,
/// so a lease taken earlier has usually lapsed and this hands out a new token.
async fn lease(h: &Harness, holder: &str) -> Lease {
    h.store
        .try_acquire_lease(WATCHDOG_LEASE, holder, LEASE_TTL)
        .await
        .expect("acquire")
        .expect("the lease is free")
}

async fn sweep(h: &Harness) -> Vec<Orphaned> {
    let l = lease(h, "sweeper").await;
    h.store
        .sweep_orphans(&l, ORPHAN_AFTER, 100)
        .await
        .expect("sweep")
}

async fn state_of(h: &Harness, id: TraceId) -> State {
    h.store
        .get_trace(T, id)
        .await
        .expect("get")
        .expect("exists")
        .state
}

/// A trace that is not terminal and idle for longer than the threshold becomes ERRORED with
/// reason `orphaned` (announced live), keeps the orphan retention (1 h), and leaves the
/// active index; one idle for less is left alone.
pub async fn idle_traces_are_orphaned_after_the_threshold_and_not_before(h: &Harness) {
    use crate::Scope;
    let running = new_trace(h, T, "crashed worker").await;
    append(h, T, running, vec![started(1, None, SpanKind::Agent, "a")])
        .await
        .expect("append");
    let received = new_trace(h, "tenant-b", "never started").await;
    assert_eq!(h.store.active_traces().await.expect("active"), 2);

    h.clock.advance(ORPHAN_AFTER - MINUTE);
    assert_eq!(sweep(h).await, vec![], "29 minutes idle is not orphaned");
    assert_eq!(state_of(h, running).await, State::Running);

    let mut live = h.store.subscribe(T, Scope::Trace(running));
    h.clock.advance(2 * MINUTE);
    let mut orphans = sweep(h).await;
    orphans.sort_by_key(|o| o.tenant.clone());
    assert_eq!(
        orphans,
        vec![
            Orphaned {
                tenant: T.into(),
                trace_id: running,
                idle: ORPHAN_AFTER + MINUTE,
            },
            Orphaned {
                tenant: "tenant-b".into(),
                trace_id: received,
                idle: ORPHAN_AFTER + MINUTE,
            },
        ]
    );
    let now = h.clock.now_for_tests();
    let t = h
        .store
        .get_trace(T, running)
        .await
        .expect("get")
        .expect("kept");
    assert_eq!(t.state, State::Errored);
    assert_eq!(t.ended_at, Some(now));
    assert_eq!(t.expires_at, now.saturating_add(Duration::from_secs(3600)));
    let events = h
        .store
        .read_events(T, running, &all_events())
        .await
        .expect("events")
        .expect("exists");
    let tail: Vec<_> = events.iter().rev().take(2).rev().map(|e| &e.body).collect();
    match tail.as_slice() {
        [EventBody::StateChanged(c), EventBody::TraceEnded(e)] => {
            assert_eq!((&c.from, &c.to), (&State::Running, &State::Errored));
            assert_eq!(c.reason.as_deref(), Some(ORPHANED_REASON));
            assert_eq!(e.state, State::Errored);
            assert_eq!(e.reason.as_deref(), Some(ORPHANED_REASON));
        }
        other => panic!("expected state_changed, trace_ended; got {other:?}"),
    }
    // Announced on the live stream, after commit.
    for want in [EventType::StateChanged, EventType::TraceEnded] {
        let e = tokio::time::timeout(Duration::from_secs(5), live.events.recv())
            .await
            .expect("in time")
            .expect("open");
        assert_eq!(e.body.event_type(), want);
    }
    assert_eq!(
        state_of_tenant(h, "tenant-b", received).await,
        State::Errored
    );
    // Out of the active index: a second sweep finds nothing; the count is 0.
    assert_eq!(sweep(h).await, vec![]);
    assert_eq!(h.store.active_traces().await.expect("active"), 0);
    // Terminal now: it stays ERRORED.
    let r = h
        .store
        .update_trace(
            T,
            running,
            TracePatch {
                state: Some(State::Completed),
                ..Default::default()
            },
        )
        .await;
    assert!(matches!(r, Err(StoreError::IllegalTransition(_))), "{r:?}");

    // The orphan retention: an hour, row and data alike.
    h.clock.advance(59 * MINUTE);
    assert!(h.store.get_trace(T, running).await.expect("get").is_some());
    h.clock.advance(2 * MINUTE);
    assert_eq!(h.store.get_trace(T, running).await.expect("get"), None);
    assert_eq!(
        h.store
            .read_events(T, running, &all_events())
            .await
            .expect("events"),
        None
    );
}

async fn state_of_tenant(h: &Harness, tenant: &str, id: TraceId) -> State {
    h.store
        .get_trace(tenant, id)
        .await
        .expect("get")
        .expect("exists")
        .state
}

/// A long run that keeps reporting is never orphaned, however old it is; an idle one
/// beside it is.
pub async fn recent_activity_keeps_a_trace_alive(h: &Harness) {
    let busy = new_trace(h, T, "long run").await;
    let idle = new_trace(h, T, "idle").await;
    let mut orphaned = Vec::new();
    // Four hours, a step every 20 minutes, a sweep every 5.
    for step in 0..48u64 {
        h.clock.advance(5 * MINUTE);
        if step % 4 == 3 {
            append(h, T, busy, vec![ended(100 + step)])
                .await
                .expect("step");
        }
        orphaned.extend(sweep(h).await.into_iter().map(|o| o.trace_id));
    }
    assert_eq!(orphaned, vec![idle], "only the idle trace");
    assert_eq!(state_of(h, busy).await, State::Running);
    assert_eq!(
        h.store.get_trace(T, idle).await.expect("get"),
        None,
        "orphaned hours ago, past its 1 h retention"
    );
    assert_eq!(h.store.active_traces().await.expect("active"), 1);
}

/// Finished traces are not the sweep's business: their state, events and retention stay.
pub async fn terminal_traces_are_untouched_by_the_sweep(h: &Harness) {
    let mut ids = Vec::new();
    for state in [State::Completed, State::Errored] {
        let id = new_trace(h, T, "finished").await;
        h.store
            .update_trace(
                T,
                id,
                TracePatch {
                    state: Some(state),
                    reason: Some("done".into()),
                    ..Default::default()
                },
            )
            .await
            .expect("finish");
        ids.push(id);
    }
    let before: Vec<_> = {
        let mut v = Vec::new();
        for id in &ids {
            v.push(
                h.store
                    .get_trace(T, *id)
                    .await
                    .expect("get")
                    .expect("exists"),
            );
        }
        v
    };
    h.clock.advance(Duration::from_secs(2 * 24 * 3600));
    assert_eq!(sweep(h).await, vec![]);
    for (id, was) in ids.iter().zip(&before) {
        let t = h.store.get_trace(T, *id).await.expect("get").expect("kept");
        assert_eq!(&t, was, "unchanged");
        assert_eq!(
            t.expires_at,
            t.ended_at
                .expect("ended")
                .saturating_add(Duration::from_secs(7 * 24 * 3600))
        );
    }
}

/// The failsafe is absolute and needs no watchdog: a trace that never ends is gone 24 h
/// after creation even if it kept reporting and nothing ever swept or purged.
pub async fn failsafe_expiry_needs_no_watchdog(h: &Harness) {
    let id = new_trace(h, T, "never ends").await;
    for hour in 0..23u64 {
        h.clock.advance(Duration::from_secs(3600));
        append(h, T, id, vec![ended(1 + hour)])
            .await
            .expect("still taking steps");
    }
    h.clock.advance(Duration::from_secs(3600 - 1));
    assert!(h.store.get_trace(T, id).await.expect("get").is_some());
    h.clock.advance(Duration::from_secs(2));
    assert_eq!(h.store.get_trace(T, id).await.expect("get"), None);
    assert_eq!(h.store.get_spans(T, id).await.expect("spans"), None);
    assert_eq!(listed(h).await, 0);
    let r = append(h, T, id, vec![ended(99)]).await;
    assert!(matches!(r, Err(StoreError::NotFound(_))), "{r:?}");
    assert_eq!(h.store.active_traces().await.expect("active"), 0);
}

/// Purge removes what expired, in batches of bounded size, and never brings anything back:
/// spans and events go after the data retention while the row and its summary stay until
/// the trace retention.
pub async fn purge_deletes_expired_data_in_bounded_batches(h: &Harness) {
    const BATCH: u32 = 4;
    let done = new_trace(h, T, "finished").await;
    let steps: Vec<EventInput> = (1..=5)
        .flat_map(|i| [started(i, None, SpanKind::Tool, "t"), ended(i)])
        .collect();
    append(h, T, done, steps).await.expect("steps");
    append(h, T, done, vec![llm_ended(9, 3, 4)])
        .await
        .expect("llm");
    h.store
        .update_trace(
            T,
            done,
            TracePatch {
                state: Some(State::Completed),
                ..Default::default()
            },
        )
        .await
        .expect("done");
    let open = new_trace(h, T, "abandoned").await;
    // Returns the batches it took and the events they deleted.
    let purge_all = || async {
        let (mut batches, mut events) = (0, 0);
        loop {
            let l = lease(h, "purger").await;
            let p = h.store.purge_expired(&l, BATCH).await.expect("purge");
            // The budget counts the backend's rows (a Redis stream entry holds a commit's
            // events), so only the traces are bounded by it on every backend.
            assert!(p.traces <= u64::from(BATCH), "bounded: {p:?}");
            batches += 1;
            events += p.events;
            assert!(batches < 100, "purge does not finish");
            if !p.more {
                return (batches, events);
            }
        }
    };
    assert_eq!(purge_all().await.1, 0);
    assert!(h.store.get_trace(T, open).await.expect("get").is_some());
    assert_eq!(
        h.store
            .get_spans(T, done)
            .await
            .expect("spans")
            .map(|s| s.len()),
        Some(6),
        "nothing expired yet, nothing purged"
    );

    let stored = |id| async move {
        let t = h
            .store
            .get_trace(T, id)
            .await
            .expect("get")
            .expect("exists");
        t.last_seq
    };
    let stored_events = stored(done).await + stored(open).await;

    // Past the data retention (3 d) and the failsafe (24 h).
    h.clock.advance(Duration::from_secs(3 * 24 * 3600 + 1));
    assert_eq!(
        purge_all().await.1,
        stored_events,
        "Purged.events counts events, each once, on every backend"
    );
    let t = h
        .store
        .get_trace(T, done)
        .await
        .expect("get")
        .expect("row kept");
    assert_eq!(t.rollups.total_tokens, 7, "summary kept with the row");
    assert_eq!(
        h.store.get_spans(T, done).await.expect("spans"),
        Some(vec![])
    );
    assert_eq!(
        h.store
            .read_events(T, done, &all_events())
            .await
            .expect("events"),
        Some(vec![])
    );
    assert_eq!(h.store.get_trace(T, open).await.expect("get"), None);
    assert_eq!(listed(h).await, 1);

    // Past the trace retention (7 d).
    h.clock.advance(Duration::from_secs(4 * 24 * 3600));
    assert_eq!(purge_all().await.1, 0, "the events went with the data");
    assert_eq!(h.store.get_trace(T, done).await.expect("get"), None);
    assert_eq!(listed(h).await, 0);
    assert_eq!(purge_all().await, (1, 0), "nothing left: one empty batch");
    // A purged id can be used again.
    h.store
        .create_trace(
            T,
            NewTrace {
                trace_id: Some(done),
                ..Default::default()
            },
        )
        .await
        .expect("reuse");
    assert_eq!(seqs(h, T, done).await, vec![1]);
}

/// One holder at a time; renewing keeps it; once it lapses another holder takes it with a
/// larger fencing token, and fenced writes with the old token are refused.
pub async fn lease_is_exclusive_renewable_and_fenced(h: &Harness) {
    let take = |holder: &'static str| async move {
        h.store
            .try_acquire_lease(WATCHDOG_LEASE, holder, LEASE_TTL)
            .await
            .expect("acquire")
    };
    let a = take("a").await.expect("free at first");
    assert_eq!(take("b").await, None, "held by a");
    let again = take("a").await.expect("the holder may take it again");
    assert_eq!(again.token, a.token, "same holder, same token");

    h.clock.advance(Duration::from_secs(20));
    let a = h
        .store
        .renew_lease(&a, LEASE_TTL)
        .await
        .expect("renew")
        .expect("still held");
    assert_eq!(
        a.expires_at,
        h.clock.now_for_tests().saturating_add(LEASE_TTL)
    );
    h.clock.advance(Duration::from_secs(20));
    assert_eq!(take("b").await, None, "renewed, still a's");
    h.store
        .sweep_orphans(&a, ORPHAN_AFTER, 10)
        .await
        .expect("the holder sweeps");
    h.store.purge_expired(&a, 10).await.expect("and purges");

    // a stops renewing; after the ttl b takes over.
    h.clock.advance(LEASE_TTL);
    assert_eq!(
        h.store.renew_lease(&a, LEASE_TTL).await.expect("renew"),
        None,
        "lapsed"
    );
    let b = take("b").await.expect("lapsed, so b takes it");
    assert!(b.token > a.token, "a new fencing token");
    let r = h.store.sweep_orphans(&a, ORPHAN_AFTER, 10).await;
    assert!(matches!(r, Err(StoreError::LeaseLost(_))), "{r:?}");
    let r = h.store.purge_expired(&a, 10).await;
    assert!(matches!(r, Err(StoreError::LeaseLost(_))), "{r:?}");
    assert!(
        !h.store.release_lease(&a).await.expect("release"),
        "not a's"
    );
    h.store
        .sweep_orphans(&b, ORPHAN_AFTER, 10)
        .await
        .expect("b sweeps");

    // Released: free at once, with a larger token still.
    assert!(h.store.release_lease(&b).await.expect("release"));
    let r = h.store.sweep_orphans(&b, ORPHAN_AFTER, 10).await;
    assert!(matches!(r, Err(StoreError::LeaseLost(_))), "{r:?}");
    let a2 = take("a").await.expect("free after release");
    assert!(a2.token > b.token);
    // Leases are independent of each other.
    let other = h
        .store
        .try_acquire_lease("other", "b", LEASE_TTL)
        .await
        .expect("acquire")
        .expect("another name is free");
    assert_eq!(other.holder, "b");
}

/// The counts a write reports for events of these types.
fn counts(types: &[EventType]) -> crate::EventCounts {
    let mut c = crate::EventCounts::default();
    for t in types {
        c.add(*t);
    }
    c
}

#[cfg(test)]
mod tests {
    /// Every conformance test is a `pub async fn name(h: &Harness)` of this file; the list
    /// in `conformance_suite!` is the one place that registers them. A test missing from
    /// it (or listed twice) would never run, or run twice, on every backend: this fails
    /// first.
    #[test]
    fn every_conformance_test_is_registered_once() {
        let src = include_str!("conformance.rs");
        let areas = [src, include_str!("conformance/keys.rs")];
        let defined: Vec<&str> = areas
            .iter()
            .flat_map(|a| a.lines())
            .filter_map(|l| l.strip_prefix("pub async fn "))
            .filter(|l| l.contains("(h: &Harness)"))
            .filter_map(|l| l.split('(').next())
            .collect();
        let start = src.find("@each $make;").expect("the list");
        let end = start + src[start..].find(");").expect("its end");
        let listed: Vec<&str> = src[start + "@each $make;".len()..end]
            .split(',')
            .map(str::trim)
            .filter(|n| !n.is_empty())
            .collect();
        assert!(!defined.is_empty());
        for name in &defined {
            let n = listed.iter().filter(|l| *l == name).count();
            assert_eq!(n, 1, "{name} is registered {n} times in conformance_suite!");
        }
        for name in &listed {
            assert!(defined.contains(name), "{name} is listed but not defined");
        }
    }
}
