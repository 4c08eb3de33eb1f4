//! The lifecycle: the orphan sweep, the failsafe expiry, the purge.

use super::*;

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
    assert!(matches!(r, Err(TraceError::IllegalTransition(_))), "{r:?}");

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
    assert!(matches!(r, Err(TraceError::NotFound(_))), "{r:?}");
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

/// The stored-bytes figure of the quota (ADR 040): it grows with each write of a tenant's
/// events and no other tenant's, a delete takes off exactly what the trace added, and the
/// purge of expired data brings it back to 0.
pub async fn stored_bytes_follow_writes_deletes_and_purges_per_tenant(h: &Harness) {
    let bytes = |tenant: &'static str| async move {
        h.store.stored_bytes(tenant).await.expect("stored bytes")
    };
    assert_eq!(bytes(T).await, 0, "a new tenant stores nothing");
    let kept = new_trace(h, T, "kept").await;
    let steps: Vec<EventInput> = (1..=5)
        .flat_map(|i| [started(i, None, SpanKind::Tool, "t"), ended(i)])
        .collect();
    append(h, T, kept, steps.clone()).await.expect("steps");
    let after_kept = bytes(T).await;
    assert!(after_kept > 0, "writes are counted");
    assert_eq!(bytes("tenant-b").await, 0, "only the writer's tenant");

    let deleted = new_trace(h, T, "deleted").await;
    append(h, T, deleted, steps.clone()).await.expect("steps");
    append(h, T, deleted, vec![llm_ended(9, 3, 4)])
        .await
        .expect("llm");
    let both = bytes(T).await;
    assert!(both > after_kept, "{both} after {after_kept}");

    let other = new_trace(h, "tenant-b", "b").await;
    append(h, "tenant-b", other, steps).await.expect("steps");
    let b = bytes("tenant-b").await;
    assert!(b > 0);
    assert_eq!(
        bytes(T).await,
        both,
        "another tenant's writes are not counted"
    );

    assert!(h.store.delete_trace(T, deleted).await.expect("delete"));
    assert_eq!(
        bytes(T).await,
        after_kept,
        "a delete takes off what the trace added"
    );
    assert_eq!(bytes("tenant-b").await, b);

    h.store
        .update_trace(
            T,
            kept,
            TracePatch {
                state: Some(State::Completed),
                ..Default::default()
            },
        )
        .await
        .expect("done");
    // Past the data retention (3 d) and the failsafe (24 h): every event is purged.
    h.clock.advance(Duration::from_secs(3 * 24 * 3600 + 1));
    for _ in 0..100 {
        let l = lease(h, "purger").await;
        if !h.store.purge_expired(&l, 1000).await.expect("purge").more {
            break;
        }
    }
    assert_eq!(bytes(T).await, 0, "the purge takes the bytes off");
    assert_eq!(bytes("tenant-b").await, 0);
}
