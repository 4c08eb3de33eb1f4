//! Reads: listing (order, cursors, filters), events, expiry, deletion.

use super::*;

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
    assert!(
        matches!(r, Err(TraceError::BadCursor(ref c)) if c == "not-a-cursor"),
        "{r:?}"
    );
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
        matches!(r, Err(TraceError::NotFound(_))),
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

/// Reads by `after_seq`, `offset` and `limit` return exactly the slice of the whole log
/// they name, whatever the commits' boundaries: `after_seq` in the middle of a commit of
/// many events, at its last event, `limit` 1, and past the end (issue 15, failure 3.8).
pub async fn event_reads_by_after_seq_and_limit_are_exact_at_commit_boundaries(h: &Harness) {
    let id = new_trace(h, T, "boundaries").await;
    let log = |n: u64| EventInput::Log {
        id: None,
        time: None,
        record: LogRecord {
            message: format!("m{n}"),
            ..Default::default()
        },
    };
    // Three commits of 5, 1 and 4 logs after trace_started: seqs 1, 2..=6, 7, 8..=11
    // (the first log's commit also moves the trace to RUNNING: one more event).
    for batch in [0..5u64, 5..6, 6..10] {
        append(h, T, id, batch.map(log).collect())
            .await
            .expect("append");
    }
    let all = seqs(h, T, id).await;
    let last = *all.last().expect("events");
    assert_eq!(all, (1..=last).collect::<Vec<_>>());
    for after in 0..=last + 2 {
        for limit in [1u32, 2, 3, 7, 100] {
            for offset in [0u64, 1, 4] {
                let got: Vec<u64> = h
                    .store
                    .read_events(
                        T,
                        id,
                        &EventFilter {
                            after_seq: after,
                            offset,
                            limit,
                            ..Default::default()
                        },
                    )
                    .await
                    .expect("read")
                    .expect("exists")
                    .iter()
                    .map(|e| e.seq)
                    .collect();
                let want: Vec<u64> = all
                    .iter()
                    .copied()
                    .filter(|s| *s > after)
                    .skip(offset as usize)
                    .take(limit as usize)
                    .collect();
                assert_eq!(got, want, "after_seq {after} offset {offset} limit {limit}");
            }
        }
    }
    // With a filter, the same slice of the filtered log.
    let logs: Vec<u64> = h
        .store
        .read_events(
            T,
            id,
            &EventFilter {
                types: vec![EventType::Log],
                after_seq: 4,
                offset: 1,
                limit: 3,
                ..Default::default()
            },
        )
        .await
        .expect("read")
        .expect("exists")
        .iter()
        .map(|e| e.seq)
        .collect();
    let all_logs: Vec<u64> = h
        .store
        .read_events(
            T,
            id,
            &EventFilter {
                types: vec![EventType::Log],
                limit: 100,
                ..Default::default()
            },
        )
        .await
        .expect("read")
        .expect("exists")
        .iter()
        .map(|e| e.seq)
        .collect();
    let want: Vec<u64> = all_logs
        .iter()
        .copied()
        .filter(|s| *s > 4)
        .skip(1)
        .take(3)
        .collect();
    assert_eq!(logs, want);
}

/// A page that reaches the last span event says so: no cursor, so a reader does not ask
/// for an empty page after it (the web page did, for a trace of exactly one page), even
/// when other events follow the last span event.
pub async fn a_page_that_holds_the_last_span_events_has_no_cursor(h: &Harness) {
    let id = new_trace(h, T, "exact pages").await;
    let mut batch: Vec<EventInput> = (1..=30).map(ended).collect();
    batch.push(EventInput::Log {
        id: None,
        time: None,
        record: LogRecord {
            message: "after the last span".into(),
            ..Default::default()
        },
    });
    append(h, T, id, batch).await.expect("spans and a log");
    let page = |after_seq: u64, limit: u32| async move {
        h.store
            .get_span_page(T, id, &crate::SpanPageRequest { after_seq, limit })
            .await
            .expect("page")
            .expect("exists")
            .1
    };
    let whole = page(0, 30).await;
    assert_eq!(whole.spans.len(), 30);
    assert_eq!(whole.next_after, None, "the page holds every span event");
    let first = page(0, 29).await;
    assert_eq!(first.spans.len(), 29);
    let after = first.next_after.expect("one span event is left");
    let last = page(after, 29).await;
    assert_eq!(last.spans.len(), 1);
    assert_eq!(last.next_after, None);
    let halves = page(0, 15).await;
    let rest = page(halves.next_after.expect("a second page"), 15).await;
    assert_eq!(rest.spans.len(), 15);
    assert_eq!(rest.next_after, None, "an exact second page is the last");
}

/// A trace's spans read page by page (issue 15, failure 3.7) come back complete: every
/// span, in its current form once the pages are merged (a later form wins), each page at
/// most its limit and without a span twice, the last page without a cursor.
pub async fn span_pages_read_a_trace_back_completely(h: &Harness) {
    let id = new_trace(h, T, "pages").await;
    // 1..=40 start, then 41..=90 end without a start, then 1..=20 end; logs in between.
    append(
        h,
        T,
        id,
        (1..=40)
            .map(|n| started(n, None, SpanKind::Tool, "t"))
            .collect(),
    )
    .await
    .expect("starts");
    let mut batch: Vec<EventInput> = (41..=90).map(ended).collect();
    batch.push(EventInput::Log {
        id: None,
        time: None,
        record: LogRecord {
            message: "between".into(),
            ..Default::default()
        },
    });
    append(h, T, id, batch).await.expect("ends");
    append(h, T, id, (1..=20).map(ended).collect())
        .await
        .expect("ends of started spans");
    let whole = h
        .store
        .get_spans(T, id)
        .await
        .expect("spans")
        .expect("exists");
    assert_eq!(whole.len(), 90);
    for limit in [1u32, 7, 45, 1000] {
        let mut merged: BTreeMap<SpanId, (u64, traceway_core::Span)> = BTreeMap::new();
        let (mut after, mut pages) = (0u64, 0);
        loop {
            let (trace, page) = h
                .store
                .get_span_page(
                    T,
                    id,
                    &crate::SpanPageRequest {
                        after_seq: after,
                        limit,
                    },
                )
                .await
                .expect("page")
                .expect("exists");
            assert_eq!(trace.trace_id, id);
            pages += 1;
            assert!(pages < 500, "the cursors go on");
            assert!(page.spans.len() <= limit as usize);
            let mut ids: Vec<SpanId> = page.spans.iter().map(|(_, s)| s.span_id).collect();
            ids.sort();
            ids.dedup();
            assert_eq!(ids.len(), page.spans.len(), "a span once per page");
            for (seq, span) in page.spans {
                assert!(seq > after, "a page is after its cursor");
                let newer = merged.get(&span.span_id).is_none_or(|(s, _)| seq > *s);
                if newer {
                    merged.insert(span.span_id, (seq, span));
                }
            }
            match page.next_after {
                Some(n) => {
                    assert!(n > after);
                    after = n;
                }
                None => break,
            }
        }
        let mut got: Vec<traceway_core::Span> = merged.into_values().map(|(_, s)| s).collect();
        got.sort_by_key(|s| (s.start_time, s.span_id));
        assert_eq!(got, whole, "limit {limit}: every span in its current form");
    }
    // Past the end: an empty last page.
    let (_, page) = h
        .store
        .get_span_page(
            T,
            id,
            &crate::SpanPageRequest {
                after_seq: 1_000_000,
                limit: 10,
            },
        )
        .await
        .expect("page")
        .expect("exists");
    assert_eq!(page, crate::SpanPage::default());
    assert!(h
        .store
        .get_span_page(T, TraceId::new_v7(), &crate::SpanPageRequest::default())
        .await
        .expect("read")
        .is_none());
    assert!(
        h.store
            .get_span_page("tenant-b", id, &crate::SpanPageRequest::default())
            .await
            .expect("read")
            .is_none(),
        "another tenant's trace does not exist"
    );
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
