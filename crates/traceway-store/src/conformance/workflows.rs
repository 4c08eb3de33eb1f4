//! Conformance: durable workflow contexts (ADR 023).

use std::collections::BTreeMap;
use std::time::Duration;

use super::Harness;
use crate::{Clock, ErrorKind, NewWorkflowContext, PageRequest, StoreFailure};

const T: &str = "tenant-a";
const TP: &str = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
const TTL: Duration = Duration::from_secs(3600);

fn ctx(tp: &str) -> NewWorkflowContext {
    NewWorkflowContext {
        traceparent: tp.into(),
        tracestate: Some("congo=t61rcWkgMzE".into()),
        agent: Some("planner".into()),
        metadata: BTreeMap::from([("step".to_string(), "2".to_string())]),
    }
}

fn page(cursor: Option<String>, limit: u32) -> PageRequest {
    PageRequest {
        cursor,
        offset: 0,
        limit,
    }
}

/// A context is stored, read back as stored, replaced, deleted; another tenant never
/// sees it.
pub async fn workflow_context_round_trip_per_tenant(h: &Harness) {
    let s = &h.store;
    assert_eq!(s.get_workflow_context(T, "wf-1").await.expect("get"), None);
    let stored = s
        .put_workflow_context(T, "wf-1", ctx(TP), TTL)
        .await
        .expect("put");
    assert_eq!(stored.traceparent, TP);
    assert_eq!(stored.expires_at, h.clock.now().saturating_add(TTL));
    let got = s
        .get_workflow_context(T, "wf-1")
        .await
        .expect("get")
        .expect("stored");
    assert_eq!(got, stored);
    assert_eq!(got.tracestate.as_deref(), Some("congo=t61rcWkgMzE"));
    assert_eq!(got.agent.as_deref(), Some("planner"));
    assert_eq!(got.metadata.get("step").map(String::as_str), Some("2"));

    // Another tenant: nothing to read, count or delete.
    assert_eq!(
        s.get_workflow_context("tenant-b", "wf-1")
            .await
            .expect("get"),
        None
    );
    assert!(!s
        .delete_workflow_context("tenant-b", "wf-1")
        .await
        .expect("delete"));
    let other = s
        .workflow_stats("tenant-b", &page(None, 10))
        .await
        .expect("stats");
    assert_eq!((other.count, other.instances.len()), (0, 0));

    // A second PUT replaces the first.
    let tp2 = "00-0af7651916cd43dd8448eb211c80319c-00f067aa0ba902b7-01";
    let mut c2 = ctx(tp2);
    c2.tracestate = None;
    s.put_workflow_context(T, "wf-1", c2, TTL)
        .await
        .expect("put");
    let got = s
        .get_workflow_context(T, "wf-1")
        .await
        .expect("get")
        .expect("stored");
    assert_eq!((got.traceparent.as_str(), got.tracestate), (tp2, None));
    assert_eq!(got.agent.as_deref(), Some("planner"));

    assert!(s.delete_workflow_context(T, "wf-1").await.expect("delete"));
    assert_eq!(s.get_workflow_context(T, "wf-1").await.expect("get"), None);
    assert!(!s.delete_workflow_context(T, "wf-1").await.expect("delete"));
    assert_eq!(
        s.workflow_stats(T, &page(None, 10))
            .await
            .expect("stats")
            .count,
        0
    );
}

/// A context expires its TTL after the last PUT, and each PUT starts the TTL over.
pub async fn workflow_context_ttl_is_refreshed_by_each_put(h: &Harness) {
    let s = &h.store;
    let ttl = Duration::from_secs(60);
    s.put_workflow_context(T, "wf", ctx(TP), ttl)
        .await
        .expect("put");
    s.put_workflow_context(T, "short", ctx(TP), ttl)
        .await
        .expect("put");
    h.clock.advance(Duration::from_secs(40));
    s.put_workflow_context(T, "wf", ctx(TP), ttl)
        .await
        .expect("refresh");
    h.clock.advance(Duration::from_secs(40));
    // 80 s after the first PUT, 40 s after the refresh.
    assert!(s
        .get_workflow_context(T, "wf")
        .await
        .expect("get")
        .is_some());
    assert_eq!(s.get_workflow_context(T, "short").await.expect("get"), None);
    let st = s.workflow_stats(T, &page(None, 10)).await.expect("stats");
    assert_eq!((st.count, st.instances), (1, vec!["wf".to_string()]));
    assert!(
        !s.delete_workflow_context(T, "short").await.expect("delete"),
        "expired"
    );
    h.clock.advance(Duration::from_secs(21));
    assert_eq!(s.get_workflow_context(T, "wf").await.expect("get"), None);
    let st = s.workflow_stats(T, &page(None, 10)).await.expect("stats");
    assert_eq!((st.count, st.instances.len()), (0, 0));
}

/// Stats count the tenant's live contexts and page their ids in ascending order by
/// cursor, each once.
pub async fn workflow_stats_count_and_page_by_cursor(h: &Harness) {
    let s = &h.store;
    let ids = ["b/2", "a-1", "c 3", "a-10", "ü-5"];
    for id in ids {
        s.put_workflow_context(T, id, ctx(TP), TTL)
            .await
            .expect("put");
    }
    s.put_workflow_context("tenant-b", "zz", ctx(TP), TTL)
        .await
        .expect("put");
    let mut seen = Vec::new();
    let mut cursor = None;
    for _ in 0..10 {
        let st = s.workflow_stats(T, &page(cursor, 2)).await.expect("stats");
        assert_eq!(st.count, 5);
        assert!(st.instances.len() <= 2);
        seen.extend(st.instances);
        cursor = st.next_cursor;
        if cursor.is_none() {
            break;
        }
    }
    let mut want: Vec<String> = ids.iter().map(|s| s.to_string()).collect();
    want.sort();
    assert_eq!(seen, want);
    let bad = s
        .workflow_stats(T, &page(Some("not-a-cursor".into()), 2))
        .await
        .expect_err("bad cursor");
    assert_eq!(bad.kind(), ErrorKind::Invalid);
}

/// Bad input is refused with `Invalid`, naming the field, and nothing is stored.
pub async fn workflow_context_input_is_validated(h: &Harness) {
    let s = &h.store;
    let e = s
        .put_workflow_context(T, "wf", ctx("00-abc-01"), TTL)
        .await
        .expect_err("bad traceparent");
    assert_eq!(e.kind(), ErrorKind::Invalid);
    assert!(e.to_string().starts_with("traceparent"), "{e}");
    let long = "x".repeat(257);
    let e = s
        .put_workflow_context(T, &long, ctx(TP), TTL)
        .await
        .expect_err("long id");
    assert!(e.to_string().starts_with("instance id"), "{e}");
    let e = s.get_workflow_context(T, &long).await.expect_err("long id");
    assert_eq!(e.kind(), ErrorKind::Invalid);
    let mut bad_state = ctx(TP);
    bad_state.tracestate = Some("=nokey".into());
    let e = s
        .put_workflow_context(T, "wf", bad_state, TTL)
        .await
        .expect_err("bad tracestate");
    assert!(e.to_string().starts_with("tracestate"), "{e}");
    assert_eq!(
        s.workflow_stats(T, &page(None, 10))
            .await
            .expect("stats")
            .count,
        0
    );
}

/// ADR 022: a trace the sweep orphaned reopens to `RUNNING` when its resumed workflow asks
/// (reason `resumed`), is active again (a later sweep sees it), and can end normally; a
/// trace that ended any other way stays ended.
pub async fn an_orphaned_trace_reopens_when_its_workflow_resumes(h: &Harness) {
    use super::{append, new_trace, started, sweep, ORPHAN_AFTER};
    use crate::{ORPHANED_AT_KEY, RESUMED_REASON};
    use traceway_core::{EventBody, SpanKind, State, TracePatch};

    let s = &h.store;
    let id = new_trace(h, T, "wf").await;
    append(h, T, id, vec![started(1, None, SpanKind::Agent, "wf")])
        .await
        .expect("append");
    let done = new_trace(h, T, "done").await;
    let resume = |reason: &str| TracePatch {
        state: Some(State::Running),
        reason: Some(reason.into()),
        ..Default::default()
    };
    s.update_trace(
        T,
        done,
        TracePatch {
            state: Some(State::Errored),
            ..Default::default()
        },
    )
    .await
    .expect("end");
    h.clock.advance(ORPHAN_AFTER + Duration::from_secs(60));
    let swept = sweep(h).await;
    assert!(swept.iter().any(|o| o.trace_id == id), "{swept:?}");
    let t = s.get_trace(T, id).await.expect("get").expect("trace");
    assert_eq!(t.state, State::Errored);
    assert!(t.metadata.contains_key(ORPHANED_AT_KEY));

    // Only the reason `resumed` reopens, and only an orphaned trace.
    let e = s
        .update_trace(T, id, resume("because"))
        .await
        .expect_err("other reason");
    assert_eq!(e.kind(), ErrorKind::IllegalTransition);
    let e = s
        .update_trace(T, done, resume(RESUMED_REASON))
        .await
        .expect_err("not orphaned");
    assert_eq!(e.kind(), ErrorKind::IllegalTransition);

    let (t, _) = s
        .update_trace(T, id, resume(RESUMED_REASON))
        .await
        .expect("reopen");
    assert_eq!(t.state, State::Running);
    assert_eq!(t.ended_at, None);
    assert!(!t.metadata.contains_key(ORPHANED_AT_KEY));
    let events = s
        .read_events(T, id, &super::all_events())
        .await
        .expect("events")
        .expect("trace");
    let last = events.last().expect("event");
    match &last.body {
        EventBody::StateChanged(c) => {
            assert_eq!(
                (c.from.clone(), c.to.clone()),
                (State::Errored, State::Running)
            );
            assert_eq!(c.reason.as_deref(), Some(RESUMED_REASON));
        }
        other => panic!("{other:?}"),
    }
    // Reopened once: a second request is a no-op (RUNNING to RUNNING), and the trace ends
    // as any other does.
    s.update_trace(T, id, resume(RESUMED_REASON))
        .await
        .expect("again");
    // Active again: idle for long, the sweep orphans it again, and it may reopen again.
    h.clock.advance(ORPHAN_AFTER + Duration::from_secs(60));
    assert!(
        sweep(h).await.iter().any(|o| o.trace_id == id),
        "swept again"
    );
    s.update_trace(T, id, resume(RESUMED_REASON))
        .await
        .expect("reopen again");
    let (t, _) = s
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
    assert_eq!(t.state, State::Completed);
}
