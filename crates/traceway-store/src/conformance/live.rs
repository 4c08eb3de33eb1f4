//! The live feed: order, resume without gap or duplicate, stalled subscribers.

use super::*;

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
