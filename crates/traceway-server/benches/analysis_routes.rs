//! The analysis routes through the real router on SQLite, timed per request:
//!
//! - `trace`: `GET /api/v1/traces/{id}/analysis` of one trace of 10,000 spans (an agent
//!   with 100 turns, each an LLM call and 98 tool calls in four parallel lanes, some
//!   failing);
//! - `cross`: `GET /api/v1/analysis` over a window of 100,000 stored ended traces, each with
//!   its analysis digest on its row (ADR 028); the route reads the newest 10,000.
//!
//! ```text
//! cargo bench -p traceway-server --bench analysis_routes            # both
//! cargo bench -p traceway-server --bench analysis_routes -- trace   # one
//! TW_BENCH_TRACES=20000 TW_BENCH_RUNS=50 cargo bench … -- cross
//! ```
//!
//! Prints p50 and p99 (nearest rank) of the requests after a warm-up. Asserts nothing but
//! the answers' status; figures go to BENCHMARKS.md.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{Request, StatusCode};
use tower::ServiceExt;
use traceway_core::analysis::{analyze, digest, AnalysisOptions};
use traceway_core::{
    EventInput, LlmDetails, NewTrace, SpanId, SpanInput, SpanKind, SpanStatus, State,
    StatusCode as SpanCode, Timestamp, TraceId,
};
use traceway_server::{app, AppState, Config};
use traceway_store::prelude::*;
use traceway_store::sqlite::{SqliteConfig, SqliteStore};
use traceway_store::{AppendRequest, SystemClock, TraceEnd};

const TENANT: &str = "bench";

fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

// A fixture builder: one positional argument per field the shapes below vary.
#[allow(clippy::too_many_arguments)]
fn span(
    t0: Timestamp,
    id: u64,
    parent: Option<u64>,
    kind: SpanKind,
    name: &str,
    component: &str,
    start_ms: i64,
    end_ms: i64,
    error: bool,
) -> EventInput {
    let at = |ms: i64| Timestamp::from_unix_millis(t0.unix_millis() + ms);
    EventInput::SpanEnded {
        span: SpanInput {
            parent_span_id: parent.and_then(SpanId::from_u64),
            kind: Some(kind),
            name: Some(name.into()),
            component_id: Some(component.into()),
            start_time: Some(at(start_ms)),
            end_time: Some(at(end_ms)),
            status: Some(SpanStatus {
                code: if error { SpanCode::Error } else { SpanCode::Ok },
                message: error.then(|| format!("timeout after {} ms", 30 + id % 7)),
            }),
            llm: (kind == SpanKind::Llm).then(|| LlmDetails {
                model: Some("gpt-4o".into()),
                input_tokens: Some(1000),
                output_tokens: Some(100),
                ..Default::default()
            }),
            ..SpanInput::new(SpanId::from_u64(id).expect("non-zero"))
        },
    }
}

/// 10,000 spans: a root, 100 turns of an LLM call and 98 tools in four lanes.
fn big_trace(t0: Timestamp) -> Vec<EventInput> {
    let mut out = vec![span(
        t0,
        1,
        None,
        SpanKind::Agent,
        "run",
        "agent",
        0,
        100_000,
        false,
    )];
    let mut id = 2;
    for turn in 0..100i64 {
        let base = turn * 1000;
        let turn_id = id;
        out.push(span(
            t0,
            turn_id,
            Some(1),
            SpanKind::Chain,
            "turn",
            "planner",
            base,
            base + 1000,
            false,
        ));
        id += 1;
        out.push(span(
            t0,
            id,
            Some(turn_id),
            SpanKind::Llm,
            "think",
            "llm",
            base,
            base + 300,
            false,
        ));
        id += 1;
        for k in 0..98i64 {
            let lane = k % 4;
            let start = base + 300 + (k / 4) * 28 + lane;
            let tool = ["search", "get_order", "lookup", "rank"][lane as usize];
            out.push(span(
                t0,
                id,
                Some(turn_id),
                SpanKind::Tool,
                tool,
                tool,
                start,
                start + 25,
                k % 31 == 0,
            ));
            id += 1;
        }
    }
    out.truncate(10_000);
    out
}

/// A small ended run: six components, two failing tools.
fn small_trace(t0: Timestamp) -> Vec<EventInput> {
    vec![
        span(t0, 1, None, SpanKind::Agent, "run", "agent", 0, 2000, false),
        span(
            t0,
            2,
            Some(1),
            SpanKind::Llm,
            "plan",
            "planner",
            0,
            400,
            false,
        ),
        span(
            t0,
            3,
            Some(1),
            SpanKind::Tool,
            "search",
            "search",
            400,
            700,
            true,
        ),
        span(
            t0,
            4,
            Some(1),
            SpanKind::Tool,
            "search",
            "search",
            700,
            1000,
            false,
        ),
        span(
            t0,
            5,
            Some(1),
            SpanKind::Retriever,
            "docs",
            "retriever",
            1000,
            1200,
            false,
        ),
        span(
            t0,
            6,
            Some(1),
            SpanKind::Tool,
            "get_order",
            "orders",
            1200,
            1300,
            true,
        ),
        span(
            t0,
            7,
            Some(1),
            SpanKind::Llm,
            "answer",
            "writer",
            1300,
            2000,
            false,
        ),
    ]
}

fn percentiles(mut v: Vec<Duration>) -> (Duration, Duration) {
    v.sort();
    let at = |q: f64| v[((q * v.len() as f64).ceil() as usize).clamp(1, v.len()) - 1];
    (at(0.50), at(0.99))
}

/// p50, p99 and the size of the answer in bytes.
async fn time_get(router: &axum::Router, uri: &str, runs: usize) -> (Duration, Duration, usize) {
    let get = || async {
        let req = Request::get(uri)
            .header("x-traceway-tenant", TENANT)
            .body(Body::empty())
            .expect("request");
        let resp = router.clone().oneshot(req).await.expect("response");
        assert_eq!(resp.status(), StatusCode::OK, "{uri}");
        axum::body::to_bytes(resp.into_body(), 256 << 20)
            .await
            .expect("body")
            .len()
    };
    let mut bytes = 0;
    for _ in 0..runs.div_ceil(10).max(2) {
        bytes = get().await;
    }
    let mut times = Vec::with_capacity(runs);
    for _ in 0..runs {
        let start = Instant::now();
        get().await;
        times.push(start.elapsed());
    }
    let (p50, p99) = percentiles(times);
    (p50, p99, bytes)
}

fn open(dir: &std::path::Path) -> (Arc<dyn Store>, axum::Router) {
    let store: Arc<dyn Store> = Arc::new(
        SqliteStore::open(
            SqliteConfig::new(dir.join("traceway.db")),
            Arc::new(SystemClock),
        )
        .expect("open"),
    );
    let config = Config {
        // The bench stores the digests itself (below); the decorator waits an hour.
        analysis_delay: Duration::from_secs(3600),
        ..Default::default()
    };
    let (state, _stop) = AppState::new(store.clone(), config, Arc::new(SystemClock));
    (store, app(state))
}

async fn bench_trace(runs: usize) {
    let dir = tempfile::tempdir().expect("tempdir");
    let (store, router) = open(dir.path());
    let (t, _) = store
        .create_trace(TENANT, NewTrace::default())
        .await
        .expect("create");
    let spans = big_trace(Timestamp::now());
    for chunk in spans.chunks(1000) {
        store
            .append(AppendRequest {
                tenant: TENANT.into(),
                trace_id: t.trace_id,
                create_if_missing: None,
                events: chunk.to_vec(),
                end: None,
                fills: Vec::new(),
            })
            .await
            .expect("append");
    }
    let uri = format!("/api/v1/traces/{}/analysis", t.trace_id);
    let (p50, p99, bytes) = time_get(&router, &uri, runs).await;
    println!(
        "trace analysis, 10,000 spans, GET {uri} on SQLite: {runs} requests, p50 {:.2} ms, p99 {:.2} ms, answer {bytes} bytes",
        p50.as_secs_f64() * 1e3,
        p99.as_secs_f64() * 1e3
    );
    store.shutdown().await;
}

async fn bench_cross(traces: usize, runs: usize) {
    let dir = tempfile::tempdir().expect("tempdir");
    let (store, router) = open(dir.path());
    let started = Instant::now();
    // The digest every run gets, made by the analysis itself from the same spans.
    let shape_digest = {
        let id = TraceId::new_v7();
        let out = store
            .append(AppendRequest {
                tenant: "shape".into(),
                trace_id: id,
                create_if_missing: Some(NewTrace::default()),
                events: small_trace(Timestamp::now()),
                end: Some(TraceEnd {
                    state: State::Completed,
                    reason: None,
                }),
                fills: Vec::new(),
            })
            .await
            .expect("shape");
        let trace = store
            .get_trace("shape", id)
            .await
            .expect("get")
            .expect("exists");
        let spans = store
            .get_spans("shape", id)
            .await
            .expect("spans")
            .expect("exists");
        let a = analyze(
            &trace,
            &spans,
            &[],
            trace.ended_at.expect("ended"),
            &AnalysisOptions::default(),
        );
        let _ = out;
        digest(&a, 0)
    };
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for _ in 0..64 {
        let (store, next, d) = (store.clone(), next.clone(), shape_digest.clone());
        tasks.push(tokio::spawn(async move {
            while next.fetch_add(1, std::sync::atomic::Ordering::Relaxed) < traces {
                let id = TraceId::new_v7();
                let out = store
                    .append(AppendRequest {
                        tenant: TENANT.into(),
                        trace_id: id,
                        create_if_missing: Some(NewTrace {
                            agent_id: Some("support".into()),
                            ..Default::default()
                        }),
                        events: small_trace(Timestamp::now()),
                        end: Some(TraceEnd {
                            state: State::Completed,
                            reason: None,
                        }),
                        fills: Vec::new(),
                    })
                    .await
                    .expect("append");
                let mut d = d.clone();
                d.at_seq = out.last_seq;
                assert!(store.put_analysis(TENANT, id, d).await.expect("digest"));
            }
        }));
    }
    for t in tasks {
        t.await.expect("seed task");
    }
    eprintln!(
        "seeded {traces} traces with digests in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    let uri = "/api/v1/analysis?agent_id=support";
    let (p50, p99, _) = time_get(&router, uri, runs).await;
    println!(
        "cross-trace analysis, {traces} stored traces, GET {uri} on SQLite (reads the newest 10,000): {runs} requests, p50 {:.1} ms, p99 {:.1} ms",
        p50.as_secs_f64() * 1e3,
        p99.as_secs_f64() * 1e3
    );
    store.shutdown().await;
}

fn main() {
    let which: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let want = |name: &str| which.is_empty() || which.iter().any(|w| w == name);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    if want("trace") {
        rt.block_on(bench_trace(env("TW_BENCH_RUNS", 100)));
    }
    if want("cross") {
        rt.block_on(bench_cross(
            env("TW_BENCH_TRACES", 100_000),
            env("TW_BENCH_RUNS", 30),
        ));
    }
}
