//! The analysis digest on the trace row (ADR 028): `put_analysis` and the decorator that
//! makes digests when traces end.

use super::*;
use crate::analysed::store_digest;
use crate::prelude::*;
use crate::{AnalysedStore, AnalysisSettings, TraceEnd};
use traceway_core::analysis::{analyze, digest, AnalysisDigest, AnalysisOptions};
use traceway_core::ErrorRecord;

const T2: &str = "tenant-b";

fn ms(h: &Harness, n: i64) -> Timestamp {
    Timestamp::from_unix_millis(h.clock.now_for_tests().unix_millis() + n)
}

/// A root `planner` (0–1000 ms) with a failing `search` tool (100–400) and a `writer` LLM
/// call (500–900): self times 300, 300 and 400 ms.
fn work(h: &Harness) -> Vec<EventInput> {
    let span = |id: u64, parent: Option<u64>, kind, name: &str, comp: &str, a, b, ok: bool| {
        EventInput::SpanEnded {
            span: SpanInput {
                parent_span_id: parent.map(sid),
                kind: Some(kind),
                name: Some(name.into()),
                component_id: Some(comp.into()),
                start_time: Some(ms(h, a)),
                end_time: Some(ms(h, b)),
                status: Some(SpanStatus {
                    code: if ok {
                        StatusCode::Ok
                    } else {
                        StatusCode::Error
                    },
                    message: (!ok).then(|| "timeout after 30 s".to_string()),
                }),
                ..SpanInput::new(sid(id))
            },
        }
    };
    vec![
        span(1, None, SpanKind::Agent, "plan", "planner", 0, 1000, true),
        span(
            2,
            Some(1),
            SpanKind::Tool,
            "search",
            "search",
            100,
            400,
            false,
        ),
        span(3, Some(1), SpanKind::Llm, "write", "writer", 500, 900, true),
        EventInput::Error {
            id: Some("e1".into()),
            time: Some(ms(h, 400)),
            record: ErrorRecord {
                span_id: Some(sid(2)),
                error_type: Some("TimeoutError".into()),
                message: "timeout after 30 s".into(),
                stacktrace: None,
            },
        },
    ]
}

async fn ended_trace(h: &Harness, store: &dyn Store, tenant: &str) -> TraceId {
    let (t, _) = store
        .create_trace(tenant, NewTrace::default())
        .await
        .expect("create");
    store
        .append(AppendRequest {
            tenant: tenant.into(),
            trace_id: t.trace_id,
            create_if_missing: None,
            events: work(h),
            end: Some(TraceEnd {
                state: State::Completed,
                reason: None,
            }),
            fills: Vec::new(),
        })
        .await
        .expect("append");
    t.trace_id
}

async fn row_digest(h: &Harness, tenant: &str, id: TraceId) -> Option<AnalysisDigest> {
    h.store
        .get_trace(tenant, id)
        .await
        .expect("get")
        .expect("exists")
        .rollups
        .analysis
}

/// A digest goes onto the row only for the state it was made from, and only in its
/// tenant; listings carry it; a later write keeps it (stale, with its `at_seq`); the
/// figures are those of the per-trace analysis.
pub async fn an_analysis_digest_is_kept_on_the_row_only_for_the_state_it_describes(h: &Harness) {
    let id = ended_trace(h, &*h.store, T).await;
    assert_eq!(row_digest(h, T, id).await, None, "none before it is made");
    let now = h.clock.now_for_tests();
    assert!(store_digest(&*h.store, T, id, now).await.expect("digest"));
    let trace = h
        .store
        .get_trace(T, id)
        .await
        .expect("get")
        .expect("exists");
    let d = trace.rollups.analysis.clone().expect("kept on the row");
    assert_eq!(d.at_seq, trace.last_seq);

    // The same figures as the analysis of the trace.
    let spans = h
        .store
        .get_spans(T, id)
        .await
        .expect("spans")
        .expect("exists");
    let events = h
        .store
        .read_events(T, id, &all_events())
        .await
        .expect("events")
        .expect("exists");
    let a = analyze(
        &trace,
        &spans,
        &events,
        trace.ended_at.expect("ended"),
        &AnalysisOptions::default(),
    );
    assert_eq!(d, digest(&a, trace.last_seq));
    let comps: Vec<(&str, f64)> = d
        .components
        .iter()
        .map(|c| (c.key.as_str(), c.self_ms))
        .collect();
    assert_eq!(
        comps,
        [("writer", 400.0), ("planner", 300.0), ("search", 300.0)]
    );
    assert_eq!(d.error_groups.len(), 1);
    let g = &d.error_groups[0];
    assert_eq!(
        (g.kind, g.name.as_deref(), g.error_type.as_deref()),
        (Some(SpanKind::Tool), Some("search"), Some("TimeoutError"))
    );
    assert_eq!((g.message.as_str(), g.count), ("timeout after <n> s", 1));

    // Listed rows carry it.
    let page = h
        .store
        .list_traces(
            T,
            &TraceFilter::default(),
            &PageRequest {
                limit: 10,
                ..Default::default()
            },
        )
        .await
        .expect("list");
    let row = page
        .items
        .iter()
        .find(|t| t.trace_id == id)
        .expect("listed");
    assert_eq!(row.rollups.analysis.as_ref(), Some(&d));

    // Another tenant's put changes nothing, nor a put for a state the row has left.
    assert!(!h
        .store
        .put_analysis(T2, id, d.clone())
        .await
        .expect("other tenant"));
    let stale = AnalysisDigest {
        at_seq: d.at_seq - 1,
        ..AnalysisDigest::default()
    };
    assert!(!h.store.put_analysis(T, id, stale).await.expect("stale"));
    assert_eq!(row_digest(h, T, id).await.as_ref(), Some(&d));

    // A late span moves `last_seq`: the row keeps the digest it has, and refuses one made
    // before the span.
    let late = vec![ended(9)];
    append(h, T, id, late).await.expect("late span");
    let moved = h
        .store
        .get_trace(T, id)
        .await
        .expect("get")
        .expect("exists");
    assert!(moved.last_seq > d.at_seq);
    assert_eq!(
        moved.rollups.analysis.as_ref(),
        Some(&d),
        "kept by the write"
    );
    assert_eq!(
        moved.rollups.span_count, 4,
        "the rest of the rollups moved on"
    );
    assert!(!h.store.put_analysis(T, id, d.clone()).await.expect("old"));
    assert!(store_digest(&*h.store, T, id, now).await.expect("again"));
    assert_eq!(
        row_digest(h, T, id).await.map(|d| d.at_seq),
        Some(moved.last_seq)
    );

    // A running trace gets none; a missing one neither.
    let running = new_trace(h, T, "running").await;
    assert!(!store_digest(&*h.store, T, running, now)
        .await
        .expect("running"));
    assert_eq!(row_digest(h, T, running).await, None);
    assert!(!h
        .store
        .put_analysis(T, TraceId::new_v7(), d)
        .await
        .expect("missing"));
}

/// Through [`AnalysedStore`], a trace that ends by an append, by a patch or by the orphan
/// sweep gets its digest soon after, without anyone asking.
pub async fn an_ended_trace_gets_its_digest_from_the_decorator(h: &Harness) {
    let settings = AnalysisSettings {
        delay: Duration::from_millis(10),
        queue: 16,
    };
    let s = AnalysedStore::new(h.store.clone(), Arc::new(h.clock.clone()), settings);
    let by_append = ended_trace(h, &s, T).await;

    let (t, _) = s
        .create_trace(T, NewTrace::default())
        .await
        .expect("create");
    let by_patch = t.trace_id;
    s.append(AppendRequest {
        tenant: T.into(),
        trace_id: by_patch,
        create_if_missing: None,
        events: work(h),
        end: None,
        fills: Vec::new(),
    })
    .await
    .expect("append");
    s.update_trace(
        T,
        by_patch,
        TracePatch {
            state: Some(State::Errored),
            ..Default::default()
        },
    )
    .await
    .expect("end by patch");

    let (t, _) = s
        .create_trace(T, NewTrace::default())
        .await
        .expect("create");
    let orphan = t.trace_id;
    h.clock.advance(ORPHAN_AFTER + MINUTE);
    let l = s
        .try_acquire_lease(WATCHDOG_LEASE, "sweeper", LEASE_TTL)
        .await
        .expect("acquire")
        .expect("free");
    let swept = s.sweep_orphans(&l, ORPHAN_AFTER, 100).await.expect("sweep");
    assert!(swept.iter().any(|o| o.trace_id == orphan));

    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    for id in [by_append, by_patch, orphan] {
        wait_for_digest(h, id, deadline).await;
    }
    let d = row_digest(h, T, by_patch).await.expect("digest");
    assert_eq!(d.components.len(), 3);
    assert_eq!(s.dropped(), 0);
    assert!(s.digests_stored() >= 3);
}

/// Many traces ending together, all waiting in the queue at once: every trace gets its own
/// digest, none is dropped.
pub async fn traces_ending_together_all_get_their_digests(h: &Harness) {
    let settings = AnalysisSettings {
        delay: Duration::from_millis(200),
        queue: 256,
    };
    let s = AnalysedStore::new(h.store.clone(), Arc::new(h.clock.clone()), settings);
    let n = 69;
    let mut ids = Vec::with_capacity(n);
    for _ in 0..n {
        ids.push(ended_trace(h, &s, T).await);
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    for id in &ids {
        let d = wait_for_digest(h, *id, deadline).await;
        assert_eq!(d.components.len(), 3, "{id}");
    }
    assert_eq!(s.dropped(), 0);
    assert_eq!(s.digests_stored(), n as u64);
}

/// Polls the row of `id` until it carries a digest of its current state; fails past
/// `deadline`.
async fn wait_for_digest(h: &Harness, id: TraceId, deadline: std::time::Instant) -> AnalysisDigest {
    loop {
        let t = h
            .store
            .get_trace(T, id)
            .await
            .expect("get")
            .expect("exists");
        if let Some(d) = t.rollups.analysis {
            assert_eq!(d.at_seq, t.last_seq, "{id}");
            return d;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no digest for {id} by the deadline"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The batched read and write of digests: each answer in the place of its key, a missing
/// or foreign trace answered `None`, the error events up to the row's `last_seq`, a
/// digest made from the batch the same as the per-trace analysis's, and a batched write
/// that stores only the digests of the states they describe, in their tenant.
pub async fn digests_are_read_and_written_in_batches_per_key(h: &Harness) {
    let a = ended_trace(h, &*h.store, T).await;
    let b = ended_trace(h, &*h.store, T).await;
    let foreign = ended_trace(h, &*h.store, T2).await;
    let keys = vec![
        (T.to_string(), a),
        (T.to_string(), TraceId::new_v7()),
        (T.to_string(), foreign),
        (T.to_string(), b),
    ];
    let inputs = h.store.digest_inputs(&keys, 10).await.expect("read");
    assert_eq!(inputs.len(), keys.len(), "one answer per key");
    assert!(
        inputs[1].is_none() && inputs[2].is_none(),
        "missing, foreign"
    );
    for (place, id) in [(0, a), (3, b)] {
        let input = inputs[place].as_ref().expect("stored");
        assert_eq!(input.trace.trace_id, id);
        assert_eq!(input.spans.len(), 3);
        assert_eq!(input.errors.len(), 1);
        assert!(input.errors.iter().all(|e| e.seq <= input.trace.last_seq));
        let whole = h
            .store
            .get_spans(T, id)
            .await
            .expect("spans")
            .expect("exists");
        let events = h
            .store
            .read_events(T, id, &all_events())
            .await
            .expect("events")
            .expect("exists");
        let at = input.trace.ended_at.expect("ended");
        let opts = AnalysisOptions::default();
        assert_eq!(
            digest(
                &analyze(&input.trace, &input.spans, &input.errors, at, &opts),
                input.trace.last_seq
            ),
            digest(
                &analyze(&input.trace, &whole, &events, at, &opts),
                input.trace.last_seq
            ),
            "the batch's digest is the analysis's"
        );
    }
    let no_errors = h.store.digest_inputs(&keys[..1], 0).await.expect("read");
    assert!(no_errors[0].as_ref().expect("stored").errors.is_empty());

    let seq_of = |i: usize| inputs[i].as_ref().expect("stored").trace.last_seq;
    let fresh = AnalysisDigest {
        at_seq: seq_of(0),
        ..AnalysisDigest::default()
    };
    let stale = AnalysisDigest {
        at_seq: seq_of(3) - 1,
        ..AnalysisDigest::default()
    };
    let stored = h
        .store
        .put_analyses(vec![
            (T.to_string(), a, fresh.clone()),
            (T.to_string(), b, stale),
            (T2.to_string(), a, fresh.clone()),
            (T.to_string(), foreign, fresh.clone()),
        ])
        .await
        .expect("write");
    assert_eq!(stored, [true, false, false, false]);
    assert_eq!(row_digest(h, T, a).await, Some(fresh));
    assert_eq!(row_digest(h, T, b).await, None);
    assert_eq!(row_digest(h, T2, foreign).await, None);
    assert!(h
        .store
        .put_analyses(Vec::new())
        .await
        .expect("none")
        .is_empty());

    // The worker's path: every ended trace of the batch gets its digest, the missing one
    // none.
    let now = h.clock.now_for_tests();
    let stored = crate::analysed::store_digests(&*h.store, &keys, now)
        .await
        .expect("digests");
    assert_eq!(stored, [true, false, false, true]);
    assert_eq!(row_digest(h, T, b).await.map(|d| d.at_seq), Some(seq_of(3)));
}
