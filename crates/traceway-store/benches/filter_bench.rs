//! The cost of a listing page filtered by `has_error` or `min_duration_ms` as the store
//! grows (issue 17, ADR 042): the same pages timed at each of `--sizes` stored traces.
//!
//! ```text
//! cargo bench -p traceway-store --bench filter_bench -- [--sizes 10000,100000]
//!     [--calls 300] [--redis redis://127.0.0.1:PORT/0] [--dir PATH]
//! ```
//!
//! Traces are written through the `Store` API from 8 writers, each created and given one
//! span in one append, as an exporter does: one in 100 fails (an error span), one in 100
//! (others) lasts 3 s, the rest 10 to 1,000 ms and succeed. At each size, each query is
//! called `--calls` times, alternating its first page and the page after it (by cursor),
//! 50 rows a page, and p50/p99 are printed. Queries:
//!
//! - `has_error=true` (1% match) and `min_duration_ms=2000` (1% match): index-served;
//! - the same two in a tenant that holds as many traces and no match at all: the page is
//!   empty, the case a scan pays most for;
//! - `has_error=false` in the tenant without errors, as a contrast: a filter that nearly
//!   every trace matches needs no index.
//!
//! With `--redis` the same runs go to the Redis backend (under a fresh key prefix).
//! Prints the figures; asserts nothing.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use traceway_core::{
    EventInput, NewTrace, SpanId, SpanInput, SpanStatus, StatusCode, Timestamp, TraceId,
};
use traceway_store::sqlite::{SqliteConfig, SqliteStore};
use traceway_store::{AppendRequest, PageRequest, Store, SystemClock, TraceFilter};

struct Args {
    sizes: Vec<u64>,
    calls: usize,
    redis: Option<String>,
    dir: Option<String>,
}

fn parse_args() -> Args {
    let mut a = Args {
        sizes: vec![10_000, 100_000],
        calls: 300,
        redis: None,
        dir: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut val = || it.next().unwrap_or_else(|| panic!("{flag} needs a value"));
        match flag.as_str() {
            "--sizes" => {
                a.sizes = val()
                    .split(',')
                    .map(|s| s.trim().parse().expect("--sizes"))
                    .collect()
            }
            "--calls" => a.calls = val().parse().expect("--calls"),
            "--redis" => a.redis = Some(val()),
            "--dir" => a.dir = Some(val()),
            "--bench" => {}
            other => panic!("unknown argument {other}"),
        }
    }
    assert!(a.sizes.windows(2).all(|w| w[0] < w[1]), "--sizes ascending");
    assert!(
        a.sizes.last().is_some_and(|n| *n <= 2_000_000),
        "--sizes up to 2,000,000"
    );
    a
}

/// With matches: 1% errored, 1% long.
const MIXED: &str = "mixed";
/// As many traces, none errored, none long.
const NONE: &str = "none";

fn span(n: u64, matches: bool) -> EventInput {
    let (error, ms) = match (matches, n % 100) {
        (true, 0) => (true, 40),
        (true, 50) => (false, 3000),
        _ => (false, 10 + (n * 7919) % 990),
    };
    let start = Timestamp::now();
    EventInput::SpanEnded {
        span: SpanInput {
            start_time: Some(start),
            end_time: Some(start.saturating_add(Duration::from_millis(ms))),
            status: Some(SpanStatus {
                code: if error {
                    StatusCode::Error
                } else {
                    StatusCode::Ok
                },
                message: error.then(|| "boom".to_string()),
            }),
            name: Some("step".into()),
            ..SpanInput::new(SpanId::from_u64(1).expect("id"))
        },
    }
}

/// Writes traces `from..to` into both tenants.
async fn fill(store: &Arc<dyn Store>, from: u64, to: u64) {
    let next = Arc::new(AtomicU64::new(from));
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let (store, next) = (store.clone(), next.clone());
        tasks.push(tokio::spawn(async move {
            loop {
                let n = next.fetch_add(1, Ordering::Relaxed);
                if n >= to {
                    return;
                }
                for (tenant, matches) in [(MIXED, true), (NONE, false)] {
                    store
                        .append(AppendRequest {
                            fills: Vec::new(),
                            tenant: tenant.into(),
                            trace_id: TraceId::new_v7(),
                            create_if_missing: Some(NewTrace::default()),
                            events: vec![span(n, matches)],
                            end: None,
                        })
                        .await
                        .expect("append");
                }
            }
        }));
    }
    for t in tasks {
        t.await.expect("writer");
    }
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize].as_secs_f64() * 1e3
}

async fn time_query(store: &Arc<dyn Store>, tenant: &str, f: &TraceFilter, calls: usize) -> String {
    let first = PageRequest {
        limit: 50,
        ..Default::default()
    };
    let cursor = store
        .list_traces(tenant, f, &first)
        .await
        .expect("list")
        .next_cursor;
    let second = PageRequest {
        cursor: cursor.clone(),
        limit: 50,
        ..Default::default()
    };
    let mut lat = Vec::with_capacity(calls);
    let mut rows = 0usize;
    for i in 0..calls {
        let page = if i % 2 == 0 || cursor.is_none() {
            &first
        } else {
            &second
        };
        let t = Instant::now();
        let p = store.list_traces(tenant, f, page).await.expect("list");
        lat.push(t.elapsed());
        rows += p.items.len();
    }
    lat.sort();
    format!(
        "p50 {:.3} ms · p99 {:.3} ms ({:.0} rows a page)",
        percentile(&lat, 0.5),
        percentile(&lat, 0.99),
        rows as f64 / calls as f64
    )
}

async fn open(args: &Args, dir: &std::path::Path) -> Arc<dyn Store> {
    if let Some(url) = &args.redis {
        let mut cfg = traceway_store::redis::RedisConfig::new(url.clone());
        cfg.prefix = format!("fbench-{}", TraceId::new_v7());
        return Arc::new(
            traceway_store::redis::RedisStore::open(cfg, Arc::new(SystemClock))
                .await
                .expect("open redis store"),
        );
    }
    let mut cfg = SqliteConfig::new(dir.join("traceway.db"));
    cfg.queue_capacity = 8192;
    Arc::new(SqliteStore::open(cfg, Arc::new(SystemClock)).expect("open store"))
}

fn main() {
    let args = parse_args();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = args
        .dir
        .clone()
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| tmp.path().to_path_buf());
    std::fs::create_dir_all(&dir).expect("dir");
    rt.block_on(async {
        let store = open(&args, &dir).await;
        let backend = if args.redis.is_some() {
            "redis"
        } else {
            "sqlite"
        };
        let queries: [(&str, &str, TraceFilter); 5] = [
            (
                "has_error=true, 1% match",
                MIXED,
                TraceFilter {
                    has_error: Some(true),
                    ..Default::default()
                },
            ),
            (
                "min_duration_ms=2000, 1% match",
                MIXED,
                TraceFilter {
                    min_duration_ms: Some(2000.0),
                    ..Default::default()
                },
            ),
            (
                "has_error=true, no match",
                NONE,
                TraceFilter {
                    has_error: Some(true),
                    ..Default::default()
                },
            ),
            (
                "min_duration_ms=2000, no match",
                NONE,
                TraceFilter {
                    min_duration_ms: Some(2000.0),
                    ..Default::default()
                },
            ),
            (
                "has_error=false, all match",
                NONE,
                TraceFilter {
                    has_error: Some(false),
                    ..Default::default()
                },
            ),
        ];
        let mut filled = 0;
        for size in &args.sizes {
            let t = Instant::now();
            fill(&store, filled, *size).await;
            filled = *size;
            println!(
                "{backend}: {size} traces in each of 2 tenants (filled in {:.1} s)",
                t.elapsed().as_secs_f64()
            );
            for (name, tenant, f) in &queries {
                println!(
                    "  {name:<32} {}",
                    time_query(&store, tenant, f, args.calls).await
                );
            }
        }
        store.shutdown().await;
    });
}
