//! The index-served listing filters (issue 17, ADR 042): `has_error` and
//! `min_duration_ms`, paged by cursor, combined with other filters, and kept true as traces
//! change, are deleted and are purged.

use super::*;

/// A span of trace-relative `start_ms..end_ms`, failing when `error`.
fn span_at(h: &Harness, id: u64, start_ms: u64, end_ms: u64, error: bool) -> EventInput {
    let t0 = h.clock.now_for_tests();
    EventInput::SpanEnded {
        span: SpanInput {
            kind: Some(SpanKind::Tool),
            name: Some(format!("step {id}")),
            start_time: Some(t0.saturating_add(Duration::from_millis(start_ms))),
            end_time: Some(t0.saturating_add(Duration::from_millis(end_ms))),
            status: Some(SpanStatus {
                code: if error {
                    StatusCode::Error
                } else {
                    StatusCode::Ok
                },
                message: error.then(|| "boom".to_string()),
            }),
            ..SpanInput::new(sid(id))
        },
    }
}

async fn create(h: &Harness, tenant: &str, agent: &str) -> TraceId {
    let (t, _) = h
        .store
        .create_trace(
            tenant,
            NewTrace {
                agent_id: Some(agent.into()),
                ..Default::default()
            },
        )
        .await
        .expect("create");
    // Distinct creation times, one second apart.
    h.clock.advance(Duration::from_secs(1));
    t.trace_id
}

/// Every trace of a listing, followed page by page through its cursor (`limit` a page);
/// asserts each page holds at most `limit` and that no trace comes twice.
async fn all_pages(h: &Harness, tenant: &str, f: &TraceFilter, limit: u32) -> Vec<TraceId> {
    let mut out: Vec<TraceId> = Vec::new();
    let mut cursor = None;
    for _ in 0..100 {
        let page = h
            .store
            .list_traces(
                tenant,
                f,
                &PageRequest {
                    cursor: cursor.clone(),
                    limit,
                    ..Default::default()
                },
            )
            .await
            .expect("list");
        assert!(page.items.len() <= limit as usize);
        out.extend(page.items.iter().map(|t| t.trace_id));
        match page.next_cursor {
            Some(c) => cursor = Some(c),
            None => {
                let mut seen = std::collections::HashSet::new();
                assert!(
                    out.iter().all(|id| seen.insert(*id)),
                    "listed twice: {out:?}"
                );
                return out;
            }
        }
    }
    panic!("the listing does not end");
}

fn errored() -> TraceFilter {
    TraceFilter {
        has_error: Some(true),
        ..Default::default()
    }
}

/// `has_error=true` lists the errored traces newest first, page by page through the
/// cursor, combined with other filters; a trace that errors later joins the listing at its
/// place, and deleted and purged traces leave it. Other tenants' errors never show.
pub async fn has_error_listing_pages_and_follows_changes(h: &Harness) {
    // Purged at the end: created a day before the others, not terminal, errored.
    let old = create(h, T, "planner").await;
    append(h, T, old, vec![span_at(h, 1, 0, 10, true)])
        .await
        .expect("old error");
    h.clock.advance(Duration::from_secs(23 * 3600));
    let mut ids = Vec::new();
    for i in 0..9u64 {
        let agent = if i % 2 == 0 { "planner" } else { "coder" };
        let id = create(h, T, agent).await;
        // Traces 0, 2, 3, 5, 8 fail; the others succeed.
        let fails = [0, 2, 3, 5, 8].contains(&i);
        append(h, T, id, vec![span_at(h, 1, 0, 100, fails)])
            .await
            .expect("span");
        ids.push(id);
    }
    let other = create(h, "tenant-b", "planner").await;
    append(h, "tenant-b", other, vec![span_at(h, 1, 0, 5, true)])
        .await
        .expect("other tenant");
    let newest_first = |picks: &[usize]| picks.iter().rev().map(|i| ids[*i]).collect::<Vec<_>>();

    let mut want = newest_first(&[0, 2, 3, 5, 8]);
    want.push(old);
    for limit in [1, 2, 50] {
        assert_eq!(
            all_pages(h, T, &errored(), limit).await,
            want,
            "limit {limit}"
        );
    }
    assert_eq!(
        all_pages(h, "tenant-b", &errored(), 2).await,
        vec![other],
        "tenants are isolated"
    );
    // Combined with other filters.
    let planner = TraceFilter {
        agent_id: Some("planner".into()),
        ..errored()
    };
    let mut want_planner = newest_first(&[0, 2, 8]);
    want_planner.push(old);
    assert_eq!(all_pages(h, T, &planner, 2).await, want_planner);
    let before = h
        .store
        .get_trace(T, ids[5])
        .await
        .expect("get")
        .expect("exists")
        .created_at;
    let window = TraceFilter {
        created_before: Some(before),
        created_after: Some(start_time().saturating_add(Duration::from_secs(3600))),
        ..errored()
    };
    assert_eq!(all_pages(h, T, &window, 1).await, newest_first(&[0, 2, 3]));
    let ok = TraceFilter {
        has_error: Some(false),
        ..Default::default()
    };
    assert_eq!(all_pages(h, T, &ok, 2).await, newest_first(&[1, 4, 6, 7]));

    // Trace 4 fails later (after its first span, in a second append): it joins at its place.
    append(h, T, ids[4], vec![span_at(h, 2, 100, 200, true)])
        .await
        .expect("late error");
    let mut want = newest_first(&[0, 2, 3, 4, 5, 8]);
    want.push(old);
    assert_eq!(all_pages(h, T, &errored(), 2).await, want);
    assert_eq!(all_pages(h, T, &ok, 2).await, newest_first(&[1, 6, 7]));

    // Deleted: it leaves.
    assert!(h.store.delete_trace(T, ids[3]).await.expect("delete"));
    let mut want = newest_first(&[0, 2, 4, 5, 8]);
    want.push(old);
    assert_eq!(all_pages(h, T, &errored(), 2).await, want);

    // Purged: `old` passes its 24 h failsafe and the purge deletes it.
    h.clock.advance(Duration::from_secs(3600));
    loop {
        let l = lease(h, "purger").await;
        if !h.store.purge_expired(&l, 100).await.expect("purge").more {
            break;
        }
    }
    assert!(h.store.get_trace(T, old).await.expect("get").is_none());
    assert_eq!(
        all_pages(h, T, &errored(), 2).await,
        newest_first(&[0, 2, 4, 5, 8])
    );
}

fn longer_than(ms: f64) -> TraceFilter {
    TraceFilter {
        min_duration_ms: Some(ms),
        ..Default::default()
    }
}

/// `min_duration_ms` lists the traces at least that long newest first, page by page
/// through the cursor, exact at and around the index's bucket bounds, combined with other
/// filters; a trace that grows past the threshold joins the listing, and deleted and
/// purged traces leave it.
pub async fn min_duration_listing_pages_and_follows_changes(h: &Harness) {
    let old = create(h, T, "planner").await;
    append(h, T, old, vec![span_at(h, 1, 0, 5_000, false)])
        .await
        .expect("old");
    h.clock.advance(Duration::from_secs(23 * 3600));
    // Durations (ms): around the bucket bounds 1,500, 2,000 and 2,500, far under and far
    // over them, and none (a trace without an ended span).
    let durations: [Option<u64>; 10] = [
        Some(2_000),
        Some(1_999),
        Some(50),
        Some(2_600),
        None,
        Some(1_500),
        Some(90_000),
        Some(2_001),
        Some(3),
        Some(2_499),
    ];
    let mut ids = Vec::new();
    for (i, d) in durations.iter().enumerate() {
        let agent = if i % 2 == 0 { "planner" } else { "coder" };
        let id = create(h, T, agent).await;
        if let Some(d) = d {
            append(h, T, id, vec![span_at(h, 1, 0, *d, i == 7)])
                .await
                .expect("span");
        }
        ids.push(id);
    }
    let other = create(h, "tenant-b", "planner").await;
    append(h, "tenant-b", other, vec![span_at(h, 1, 0, 10_000, false)])
        .await
        .expect("other tenant");
    let newest_first = |picks: &[usize]| picks.iter().rev().map(|i| ids[*i]).collect::<Vec<_>>();

    let mut want = newest_first(&[0, 3, 6, 7, 9]);
    want.push(old);
    for limit in [1, 2, 50] {
        assert_eq!(all_pages(h, T, &longer_than(2_000.0), limit).await, want);
    }
    // Inside the bucket of 1,500 to 2,000 ms: only its traces at least that long.
    let mut want = newest_first(&[0, 3, 6, 7, 9]);
    want.push(old);
    assert_eq!(all_pages(h, T, &longer_than(1_999.5), 2).await, want);
    let mut want = newest_first(&[0, 1, 3, 6, 7, 9]);
    want.push(old);
    assert_eq!(all_pages(h, T, &longer_than(1_998.5), 3).await, want);
    let mut want = newest_first(&[0, 1, 3, 5, 6, 7, 9]);
    want.push(old);
    assert_eq!(all_pages(h, T, &longer_than(1_500.0), 2).await, want);
    let mut want = newest_first(&[0, 1, 2, 3, 5, 6, 7, 8, 9]);
    want.push(old);
    assert_eq!(all_pages(h, T, &longer_than(0.0), 4).await, want);
    assert_eq!(all_pages(h, T, &longer_than(2_500.0), 1).await, {
        let mut w = newest_first(&[3, 6]);
        w.push(old);
        w
    });
    assert_eq!(all_pages(h, T, &longer_than(100_000.0), 2).await, vec![]);
    assert_eq!(
        all_pages(h, "tenant-b", &longer_than(1.0), 2).await,
        vec![other],
        "tenants are isolated"
    );
    // Combined with other filters.
    let planner = TraceFilter {
        agent_id: Some("planner".into()),
        ..longer_than(2_000.0)
    };
    let mut want = newest_first(&[0, 6]);
    want.push(old);
    assert_eq!(all_pages(h, T, &planner, 1).await, want);
    let failing = TraceFilter {
        has_error: Some(true),
        ..longer_than(1_000.0)
    };
    assert_eq!(all_pages(h, T, &failing, 2).await, newest_first(&[7]));
    let recent = TraceFilter {
        created_after: Some(start_time().saturating_add(Duration::from_secs(3600))),
        ..longer_than(2_000.0)
    };
    assert_eq!(
        all_pages(h, T, &recent, 2).await,
        newest_first(&[0, 3, 6, 7, 9])
    );

    // Trace 2 (50 ms) and trace 4 (no span yet) grow past 2 s: they join at their place.
    append(h, T, ids[2], vec![span_at(h, 2, 40, 3_000, false)])
        .await
        .expect("longer");
    append(h, T, ids[4], vec![span_at(h, 1, 0, 2_000, false)])
        .await
        .expect("first span");
    let mut want = newest_first(&[0, 2, 3, 4, 6, 7, 9]);
    want.push(old);
    assert_eq!(all_pages(h, T, &longer_than(2_000.0), 2).await, want);

    // Deleted: it leaves.
    assert!(h.store.delete_trace(T, ids[6]).await.expect("delete"));
    let mut want = newest_first(&[0, 2, 3, 4, 7, 9]);
    want.push(old);
    assert_eq!(all_pages(h, T, &longer_than(2_000.0), 2).await, want);

    // Purged: `old` passes its 24 h failsafe and the purge deletes it.
    h.clock.advance(Duration::from_secs(3600));
    loop {
        let l = lease(h, "purger").await;
        if !h.store.purge_expired(&l, 100).await.expect("purge").more {
            break;
        }
    }
    assert!(h.store.get_trace(T, old).await.expect("get").is_none());
    assert_eq!(
        all_pages(h, T, &longer_than(2_000.0), 2).await,
        newest_first(&[0, 2, 3, 4, 7, 9])
    );
}
