//! The Redis backend: the conformance suite on a standalone `redis-server` each test starts
//! on a unix socket in its own directory, and on a 3-master Redis Cluster (loopback TCP)
//! started once for this binary (each test in its own key prefix).

#[path = "support/redis_server.rs"]
mod redis_server;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use traceway_store::prelude::*;

use traceway_store::conformance::Harness;
use traceway_store::redis::{RedisConfig, RedisStore};
use traceway_store::ManualClock;

fn prefix() -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    format!(
        "t{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

async fn open(url: &str, clock: &ManualClock) -> RedisStore {
    let mut cfg = RedisConfig::new(url);
    cfg.prefix = prefix();
    RedisStore::open(cfg, Arc::new(clock.clone()))
        .await
        .expect("open redis store")
}

mod standalone {
    use super::*;

    async fn make_redis(clock: ManualClock) -> Harness {
        let server = redis_server::RedisServer::start();
        let store = open(&server.url(), &clock).await;
        Harness {
            store: Arc::new(store),
            clock,
            guard: Box::new(server),
        }
    }

    traceway_store::conformance_suite!(make_redis);
}

mod cluster {
    use super::*;

    async fn make_cluster(clock: ManualClock) -> Harness {
        let url = tokio::task::spawn_blocking(redis_server::shared_cluster)
            .await
            .expect("cluster");
        let store = open(url, &clock).await;
        Harness {
            store: Arc::new(store),
            clock,
            guard: Box::new(()),
        }
    }

    traceway_store::conformance_suite!(make_cluster);
}

/// The bulk strings of a raw RESP reply (keys of `KEYS`, members of `ZRANGE`).
fn bulk_strings(reply: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut lines = reply.split("\r\n");
    while let Some(l) = lines.next() {
        if l.starts_with('$') && l != "$-1" {
            if let Some(v) = lines.next() {
                out.push(v.to_string());
            }
        }
    }
    out
}

fn integer(reply: Option<String>) -> i64 {
    reply
        .and_then(|r| r.trim().strip_prefix(':').map(str::to_string))
        .and_then(|n| n.parse().ok())
        .expect("an integer reply")
}

/// Every key of a trace carries a TTL (the physical bound of its expiry); only the shared
/// indexes and the lease's token counter do not. After the purge, the indexes hold nothing
/// of a purged trace.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_trace_key_has_a_ttl_and_the_purge_empties_the_indexes() {
    use std::time::Duration;
    use traceway_core::{EventInput, NewTrace, SpanId, SpanInput, State, TracePatch};
    use traceway_store::{AppendRequest, WATCHDOG_LEASE};

    let server = redis_server::RedisServer::start();
    let clock = ManualClock::new(traceway_store::conformance::start_time());
    let store = open(&server.url(), &clock).await;
    let (t, _) = store
        .create_trace(
            "t",
            NewTrace {
                agent_id: Some("a".into()),
                user_id: Some("u".into()),
                ..Default::default()
            },
        )
        .await
        .expect("create");
    store
        .append(AppendRequest {
            fills: Vec::new(),
            tenant: "t".into(),
            trace_id: t.trace_id,
            create_if_missing: None,
            events: vec![
                EventInput::SpanStarted {
                    span: SpanInput::new(SpanId::from_u64(1).expect("id")),
                },
                EventInput::Log {
                    id: Some("l1".into()),
                    time: None,
                    record: Default::default(),
                },
            ],
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
        .expect("end");
    let lease = store
        .try_acquire_lease(WATCHDOG_LEASE, "me", Duration::from_secs(30))
        .await
        .expect("acquire")
        .expect("free");

    let keys = bulk_strings(&server.command("KEYS *").expect("keys"));
    let trace_keys: Vec<&String> = keys.iter().filter(|k| k.contains(":t:{")).collect();
    assert_eq!(trace_keys.len(), 4, "row, spans, ids, events: {keys:?}");
    for k in keys
        .iter()
        .filter(|k| !k.contains(":i:{") && !k.contains(":g:"))
    {
        let ttl = integer(server.command(&format!("PTTL {k}")));
        if k.ends_with(":token") {
            assert_eq!(
                ttl, -1,
                "the token counter is kept so tokens are never reused"
            );
        } else {
            assert!(ttl > 0, "{k} has no TTL ({ttl})");
        }
    }

    // Past the trace retention: the purge deletes the keys and every index entry.
    clock.advance(Duration::from_secs(8 * 24 * 3600));
    let lease = store
        .try_acquire_lease(WATCHDOG_LEASE, "me", Duration::from_secs(30))
        .await
        .expect("acquire")
        .unwrap_or(lease);
    while store.purge_expired(&lease, 100).await.expect("purge").more {}
    let keys = bulk_strings(&server.command("KEYS *").expect("keys"));
    assert!(
        keys.iter().all(|k| k.contains(":lease:")),
        "only the lease is left: {keys:?}"
    );
}

/// A listing whose filter no index answers (`has_error=false`) examines at most
/// `list_scan_rows` rows per request: a page may come back short, with a cursor that goes
/// on, and following the cursors finds every match once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_filter_without_an_index_reads_a_bounded_number_of_rows_per_page() {
    use std::time::Duration;
    use traceway_core::{ErrorRecord, EventInput, NewTrace};
    use traceway_store::{AppendRequest, PageRequest, TraceFilter};

    let server = redis_server::RedisServer::start();
    let clock = ManualClock::new(traceway_store::conformance::start_time());
    let mut cfg = RedisConfig::new(server.url());
    cfg.prefix = prefix();
    cfg.list_scan_rows = 10;
    let store = RedisStore::open(cfg, Arc::new(clock.clone()))
        .await
        .expect("open");
    // The oldest trace and one in the middle have no error; 30 others do.
    let mut without_error = Vec::new();
    for i in 0..32 {
        clock.advance(Duration::from_millis(1));
        let (t, _) = store
            .create_trace("t", NewTrace::default())
            .await
            .expect("create");
        if i == 0 || i == 16 {
            without_error.push(t.trace_id);
        } else {
            store
                .append(AppendRequest {
                    fills: Vec::new(),
                    tenant: "t".into(),
                    trace_id: t.trace_id,
                    create_if_missing: None,
                    events: vec![EventInput::Error {
                        id: None,
                        time: None,
                        record: ErrorRecord {
                            message: "boom".into(),
                            ..Default::default()
                        },
                    }],
                    end: None,
                })
                .await
                .expect("error");
        }
    }
    without_error.reverse();
    let filter = TraceFilter {
        has_error: Some(false),
        ..Default::default()
    };
    let (mut found, mut pages, mut cursor) = (Vec::new(), 0, None);
    loop {
        let page = store
            .list_traces(
                "t",
                &filter,
                &PageRequest {
                    cursor: cursor.clone(),
                    limit: 5,
                    ..Default::default()
                },
            )
            .await
            .expect("list");
        pages += 1;
        assert!(pages < 20, "the cursors go on");
        found.extend(page.items.iter().map(|t| t.trace_id));
        match page.next_cursor {
            Some(c) => cursor = Some(c),
            None => break,
        }
    }
    assert_eq!(found, without_error, "every match, newest first, once");
    assert!(pages >= 4, "32 rows at 10 per request: {pages} pages");
}

/// `has_error=true` and `min_duration_ms` are served by their own indexes (issue 17,
/// ADR 042): with a scan bound of 10 rows, two matches among 40 traces come in one full
/// page, not in pages cut short by the bound. Deleted and purged traces leave the
/// indexes themselves, not only the listing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errored_and_long_traces_are_listed_from_their_own_indexes() {
    use std::time::Duration;
    use traceway_core::{EventInput, NewTrace, SpanId, SpanInput, SpanStatus, StatusCode};
    use traceway_store::{AppendRequest, PageRequest, TraceFilter, WATCHDOG_LEASE};

    let server = redis_server::RedisServer::start();
    let clock = ManualClock::new(traceway_store::conformance::start_time());
    let mut cfg = RedisConfig::new(server.url());
    let prefix = prefix();
    cfg.prefix = prefix.clone();
    cfg.list_scan_rows = 10;
    let store = RedisStore::open(cfg, Arc::new(clock.clone()))
        .await
        .expect("open");
    // Traces 5 and 30 fail after 3 s; the 38 others succeed in 10 ms.
    let mut picked = Vec::new();
    for i in 0..40 {
        clock.advance(Duration::from_millis(1));
        let (t, _) = store
            .create_trace("t", NewTrace::default())
            .await
            .expect("create");
        let long = i == 5 || i == 30;
        let now = clock.now_for_tests();
        let span = SpanInput {
            start_time: Some(now),
            end_time: Some(now.saturating_add(Duration::from_millis(if long { 3000 } else { 10 }))),
            status: Some(SpanStatus {
                code: if long {
                    StatusCode::Error
                } else {
                    StatusCode::Ok
                },
                message: None,
            }),
            ..SpanInput::new(SpanId::from_u64(1).expect("span id"))
        };
        store
            .append(AppendRequest {
                fills: Vec::new(),
                tenant: "t".into(),
                trace_id: t.trace_id,
                create_if_missing: None,
                events: vec![EventInput::SpanEnded { span }],
                end: None,
            })
            .await
            .expect("span");
        if long {
            picked.push(t.trace_id);
        }
    }
    picked.reverse();
    for filter in [
        TraceFilter {
            has_error: Some(true),
            ..Default::default()
        },
        TraceFilter {
            min_duration_ms: Some(2000.0),
            ..Default::default()
        },
    ] {
        let page = store
            .list_traces(
                "t",
                &filter,
                &PageRequest {
                    limit: 5,
                    ..Default::default()
                },
            )
            .await
            .expect("list");
        let found: Vec<_> = page.items.iter().map(|t| t.trace_id).collect();
        assert_eq!(found, picked, "{filter:?}");
        assert_eq!(
            page.next_cursor, None,
            "one page, not cut short: {filter:?}"
        );
    }
    // 3,000 ms is the lower bound of duration bucket 32 (`duration_index`).
    let card = |which: &str| {
        let reply = server
            .command(&format!("ZCARD {prefix}:i:{{t}}:{which}"))
            .expect("zcard");
        reply
            .trim()
            .trim_start_matches(':')
            .parse::<u64>()
            .expect("count")
    };
    assert_eq!((card("err"), card("d:32")), (2, 2));
    assert_eq!(card("d:10"), 38, "10 ms is bucket 10");
    assert!(store.delete_trace("t", picked[0]).await.expect("delete"));
    assert_eq!((card("err"), card("d:32")), (1, 1));
    // Past the 24 h failsafe, the purge deletes the rest, and they leave the indexes.
    clock.advance(Duration::from_secs(25 * 3600));
    loop {
        let lease = store
            .try_acquire_lease(WATCHDOG_LEASE, "purger", Duration::from_secs(30))
            .await
            .expect("lease")
            .expect("free");
        if !store.purge_expired(&lease, 100).await.expect("purge").more {
            break;
        }
    }
    assert_eq!((card("err"), card("d:32"), card("d:10")), (0, 0, 0));
}

/// The `XRANGE` commands a store sent since the slow log was last reset (it logs every
/// command once `slowlog-log-slower-than` is 0): each as its arguments after the key.
fn xranges(server: &redis_server::RedisServer) -> Vec<Vec<String>> {
    let log = bulk_strings(&server.command("SLOWLOG GET 128").expect("slowlog"));
    let mut out = Vec::new();
    let mut it = log.iter().peekable();
    while let Some(s) = it.next() {
        if s.eq_ignore_ascii_case("XRANGE") {
            let args: Vec<String> = it.by_ref().skip(1).take(4).cloned().collect();
            out.push(args);
        }
    }
    out
}

/// An event read costs what it returns, not the trace (issue 15, failure 3.8): on a trace
/// of 40 commits of 250 events, `after_seq` in the middle with `limit=1` asks Redis for one
/// stream entry from that seq's id, and `limit=100` for at most a few.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_read_with_a_small_limit_reads_few_stream_entries() {
    use traceway_core::{EventInput, LogRecord, NewTrace};
    use traceway_store::{AppendRequest, EventFilter};

    let server = redis_server::RedisServer::start();
    let clock = ManualClock::new(traceway_store::conformance::start_time());
    let store = open(&server.url(), &clock).await;
    let (t, _) = store
        .create_trace("t", NewTrace::default())
        .await
        .expect("create");
    for c in 0..40 {
        let events = (0..250)
            .map(|i| EventInput::Log {
                id: None,
                time: None,
                record: LogRecord {
                    message: format!("commit {c} log {i}"),
                    ..Default::default()
                },
            })
            .collect();
        store
            .append(AppendRequest {
                tenant: "t".into(),
                trace_id: t.trace_id,
                create_if_missing: None,
                events,
                end: None,
                fills: Vec::new(),
            })
            .await
            .expect("append");
    }
    server
        .command("CONFIG SET slowlog-log-slower-than 0")
        .expect("config");
    server
        .command("CONFIG SET slowlog-max-len 128")
        .expect("config");
    let (store, server) = (&store, &server);
    let read = |after_seq: u64, limit: u32| async move {
        server.command("SLOWLOG RESET").expect("reset");
        let events = store
            .read_events(
                "t",
                t.trace_id,
                &EventFilter {
                    after_seq,
                    limit,
                    ..Default::default()
                },
            )
            .await
            .expect("read")
            .expect("exists");
        (events, xranges(server))
    };
    let (events, cmds) = read(5_000, 1).await;
    assert_eq!(
        events.iter().map(|e| e.seq).collect::<Vec<_>>(),
        vec![5_001]
    );
    assert_eq!(
        cmds,
        vec![vec![
            "5001-0".to_string(),
            "+".into(),
            "COUNT".into(),
            "1".into()
        ]],
        "one entry, from the seq's stream id"
    );
    let (events, cmds) = read(5_000, 100).await;
    assert_eq!(
        events.iter().map(|e| e.seq).collect::<Vec<_>>(),
        (5_001..=5_100).collect::<Vec<_>>()
    );
    assert!(cmds.len() <= 2, "{cmds:?}");
    let (events, _) = read(20_000, 10).await;
    assert!(events.is_empty(), "past the end");
}
