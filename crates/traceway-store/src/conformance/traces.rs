//! Writes: create, append (retries, spans, the end), state changes, capture level, health.

use super::*;

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
        matches!(again, Err(TraceError::IdTaken(i)) if i == id),
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
    assert!(matches!(r, Err(TraceError::NotFound(_))), "{r:?}");
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
    assert!(matches!(r, Err(TraceError::NotFound(_))), "{r:?}");
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
                        fills: Vec::new(),
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
        assert!(matches!(r, Err(TraceError::IllegalTransition(_))), "{r:?}");
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
    assert!(
        matches!(r, Err(TraceError::CreatedTerminal(State::Completed))),
        "{r:?}"
    );
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
        matches!(r, Err(TraceError::NotFound(x)) if x == id),
        "{r:?}"
    );
    let out = h
        .store
        .append(AppendRequest {
            fills: Vec::new(),
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
        fills: Vec::new(),
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

/// An LLM span that reports no cost is priced from the shipped table at ingest, and says
/// so; a reported cost is kept as reported; the trace's rollups (per model too) add both.
pub async fn cost_is_computed_at_ingest_when_a_span_reports_none(h: &Harness) {
    let id = new_trace(h, T, "priced").await;
    let mut reported = llm_ended(2, 10, 10);
    if let EventInput::SpanEnded { span } = &mut reported {
        if let Some(llm) = span.llm.as_mut() {
            llm.cost_usd = Some(0.5);
        }
    }
    append(h, T, id, vec![llm_ended(1, 1_000_000, 100_000), reported])
        .await
        .expect("append");
    let spans = h
        .store
        .get_spans(T, id)
        .await
        .expect("spans")
        .expect("exists");
    let llm = |n: u64| {
        spans
            .iter()
            .find(|s| s.span_id == sid(n))
            .and_then(|s| s.llm.clone())
            .expect("llm span")
    };
    let computed = llm(1);
    let cost = computed.cost_usd.expect("a computed cost");
    assert!(cost > 0.0, "gpt-4o tokens cost something: {cost}");
    assert_eq!(
        computed.cost_source,
        Some(traceway_core::CostSource::Computed)
    );
    assert_eq!(
        computed.price_table.as_deref(),
        Some(traceway_core::pricing::PriceTable::builtin().version())
    );
    let kept = llm(2);
    assert_eq!(
        (kept.cost_usd, kept.cost_source),
        (Some(0.5), Some(traceway_core::CostSource::Reported))
    );
    let trace = h
        .store
        .get_trace(T, id)
        .await
        .expect("get")
        .expect("exists");
    assert!(
        (trace.rollups.cost_usd - (cost + 0.5)).abs() < 1e-9,
        "rollups include both costs: {}",
        trace.rollups.cost_usd
    );
    let gpt4o = trace
        .rollups
        .models
        .get("gpt-4o")
        .expect("per-model rollup");
    assert!((gpt4o.cost_usd - (cost + 0.5)).abs() < 1e-9);
}

/// A healthy store says so.
pub async fn health_is_ok(h: &Harness) {
    h.store.health().await.expect("healthy");
}
