//! Store benchmark: realistic agent events appended from concurrent writers with every
//! write acknowledged, then the latency of listing the newest traces out of many.
//!
//! ```text
//! cargo bench -p traceway-store --bench store_bench -- [--writers 8] [--seconds 10]
//!     [--batch 5] [--create separate|inline] [--traces 1000000] [--dir PATH]
//!     [--redis redis://127.0.0.1:PORT/0]
//! ```
//!
//! `--create separate` (the default) creates each trace with its own call, as a client of
//! `POST /api/v1/traces` does; `inline` creates it with the first append
//! (`create_if_missing`), as an exporter does.
//!
//! With `--redis` the same runs go to the Redis backend at that URL (standalone or
//! `redis+cluster://…`), under a fresh key prefix, and Redis's `used_memory` is reported.
//!
//! ```text
//! ```
//!
//! Prints the figures; asserts nothing (floors live in BENCHMARKS.md).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;
use traceway_core::{
    Document, EventInput, LlmDetails, LogRecord, Message, NewTrace, RetrievalDetails, SpanId,
    SpanInput, SpanKind, SpanStatus, StatusCode, ToolDetails, TraceId,
};
use traceway_store::sqlite::{SqliteConfig, SqliteStore};
use traceway_store::{AppendRequest, PageRequest, Store, SystemClock, TraceFilter};

struct Args {
    writers: usize,
    seconds: u64,
    batch: usize,
    inline_create: bool,
    traces: u64,
    dir: Option<String>,
    redis: Option<String>,
}

fn parse_args() -> Args {
    let mut a = Args {
        writers: 8,
        seconds: 10,
        batch: 5,
        inline_create: false,
        traces: 1_000_000,
        dir: None,
        redis: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut val = || it.next().unwrap_or_else(|| panic!("{flag} needs a value"));
        match flag.as_str() {
            "--writers" => a.writers = val().parse().expect("--writers"),
            "--seconds" => a.seconds = val().parse().expect("--seconds"),
            "--batch" => a.batch = val().parse().expect("--batch"),
            "--create" => {
                a.inline_create = match val().as_str() {
                    "inline" => true,
                    "separate" => false,
                    other => panic!("--create separate|inline, not {other}"),
                }
            }
            "--traces" => a.traces = val().parse().expect("--traces"),
            "--dir" => a.dir = Some(val()),
            "--redis" => a.redis = Some(val()),
            "--bench" => {}
            other => panic!("unknown argument {other}"),
        }
    }
    a
}

fn text(n: usize, seed: u64) -> String {
    let words = [
        "the", "agent", "refund", "policy", "order", "customer", "window", "delivery", "payment",
        "within",
    ];
    let mut s = String::with_capacity(n + 10);
    let mut i = seed as usize;
    while s.len() < n {
        s.push_str(words[i % words.len()]);
        s.push(' ');
        i = i.wrapping_mul(31).wrapping_add(7);
    }
    s.truncate(n);
    s
}

fn sid(trace: u64, n: u64) -> SpanId {
    SpanId::from_u64((trace << 8) | n).expect("non-zero")
}

fn span(trace: u64, n: u64, parent: Option<u64>, kind: SpanKind, name: &str) -> SpanInput {
    SpanInput {
        parent_span_id: parent.map(|p| sid(trace, p)),
        kind: Some(kind),
        name: Some(name.into()),
        component_id: Some(format!("{name}-component")),
        ..SpanInput::new(sid(trace, n))
    }
}

fn ok() -> Option<SpanStatus> {
    Some(SpanStatus {
        code: StatusCode::Ok,
        message: None,
    })
}

/// Distinct agent runs the writers cycle through.
const RUN_POOL: u64 = 256;

/// One agent run as a live agent reports it: 12 events (steps start and end as they happen).
fn agent_run(t: u64) -> Vec<EventInput> {
    let llm = |n: u64, tokens: u64| LlmDetails {
        provider: Some("openai".into()),
        model: Some("gpt-4o-mini".into()),
        input_tokens: Some(tokens),
        output_tokens: Some(tokens / 8),
        input_messages: vec![
            Message {
                role: "system".into(),
                content: Some(text(200, n)),
                ..Default::default()
            },
            Message {
                role: "user".into(),
                content: Some(text(300, n + 1)),
                ..Default::default()
            },
        ],
        output_messages: vec![Message {
            role: "assistant".into(),
            content: Some(text(500, n + 2)),
            ..Default::default()
        }],
        ..Default::default()
    };
    let docs = (0..5)
        .map(|i| Document {
            id: Some(format!("doc-{i}")),
            score: Some(0.9 - i as f64 * 0.1),
            content: Some(text(200, i)),
            metadata: None,
        })
        .collect();
    vec![
        EventInput::SpanStarted {
            span: span(t, 1, None, SpanKind::Agent, "support-agent"),
        },
        EventInput::SpanStarted {
            span: span(t, 2, Some(1), SpanKind::Chain, "plan"),
        },
        EventInput::SpanEnded {
            span: SpanInput {
                status: ok(),
                output: Some(json!({"steps": 3})),
                ..SpanInput::new(sid(t, 2))
            },
        },
        EventInput::SpanEnded {
            span: SpanInput {
                retrieval: Some(RetrievalDetails {
                    query: Some(text(80, t)),
                    documents: docs,
                }),
                status: ok(),
                ..span(t, 3, Some(1), SpanKind::Retriever, "search")
            },
        },
        EventInput::SpanStarted {
            span: SpanInput {
                llm: Some(llm(t, 0)),
                ..span(t, 4, Some(1), SpanKind::Llm, "reason")
            },
        },
        EventInput::SpanEnded {
            span: SpanInput {
                llm: Some(llm(t, 420)),
                status: ok(),
                ..SpanInput::new(sid(t, 4))
            },
        },
        EventInput::SpanEnded {
            span: SpanInput {
                tool: Some(ToolDetails {
                    name: Some("get_order".into()),
                    arguments: Some(json!({"order_id": t})),
                    result: Some(json!({"status": "delivered", "total": 59.9})),
                    ..Default::default()
                }),
                status: ok(),
                ..span(t, 5, Some(1), SpanKind::Tool, "get_order")
            },
        },
        EventInput::SpanEnded {
            span: SpanInput {
                llm: Some(llm(t + 1, 610)),
                status: ok(),
                ..span(t, 6, Some(1), SpanKind::Llm, "answer")
            },
        },
        EventInput::SpanEnded {
            span: SpanInput {
                tool: Some(ToolDetails {
                    name: Some("send_reply".into()),
                    arguments: Some(json!({"text": text(120, t)})),
                    result: Some(json!("ok")),
                    ..Default::default()
                }),
                status: ok(),
                ..span(t, 7, Some(1), SpanKind::Tool, "send_reply")
            },
        },
        EventInput::Log {
            id: None,
            time: None,
            record: LogRecord {
                span_id: Some(sid(t, 1)),
                message: "answered".into(),
                ..Default::default()
            },
        },
        EventInput::SpanEnded {
            span: SpanInput {
                llm: Some(llm(t + 2, 300)),
                status: ok(),
                ..span(t, 8, Some(1), SpanKind::Llm, "summarise")
            },
        },
        EventInput::SpanEnded {
            span: SpanInput {
                status: ok(),
                ..SpanInput::new(sid(t, 1))
            },
        },
    ]
}

/// CPU time this process has used (user + system), from /proc/self/stat.
fn cpu_time() -> Duration {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the command name, which is in parentheses and may contain spaces.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<u64> = rest
        .split_whitespace()
        .filter_map(|x| x.parse().ok())
        .collect();
    // utime and stime are fields 14 and 15 of the whole line: 11 and 12 after the name.
    let ticks = f.get(10).copied().unwrap_or(0) + f.get(11).copied().unwrap_or(0);
    Duration::from_secs_f64(ticks as f64 / 100.0)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

async fn open(args: &Args, dir: &std::path::Path) -> Arc<dyn Store> {
    if let Some(url) = &args.redis {
        let mut cfg = traceway_store::redis::RedisConfig::new(url.clone());
        cfg.prefix = format!("bench-{}", TraceId::new_v7());
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

async fn append_throughput(args: &Args, dir: &std::path::Path) {
    let store = open(args, dir).await;
    // Runs are built before the clock starts, as the OTLP load generator pre-encodes its
    // requests: the bench measures the store, not the making of its input. Span ids only
    // need to be unique within a trace, so traces reuse them.
    let runs: Arc<Vec<Vec<EventInput>>> = Arc::new((0..RUN_POOL).map(agent_run).collect());
    let events = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let next_trace = Arc::new(AtomicU64::new(1));
    let started = Instant::now();
    let cpu_before = cpu_time();
    let mut tasks = Vec::new();
    for _ in 0..args.writers {
        let (store, runs, events, stop, next_trace) = (
            store.clone(),
            runs.clone(),
            events.clone(),
            stop.clone(),
            next_trace.clone(),
        );
        let (batch, inline_create) = (args.batch, args.inline_create);
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                let t = next_trace.fetch_add(1, Ordering::Relaxed);
                let new = NewTrace {
                    agent_id: Some(format!("agent-{}", t % 10)),
                    ..Default::default()
                };
                let (trace_id, mut create) = if inline_create {
                    (TraceId::new_v7(), Some(new))
                } else {
                    let (trace, _) = store.create_trace("bench", new).await.expect("create");
                    events.fetch_add(1, Ordering::Relaxed);
                    (trace.trace_id, None)
                };
                let run = &runs[(t % RUN_POOL) as usize];
                for chunk in run.chunks(batch) {
                    let t0 = Instant::now();
                    let out = store
                        .append(AppendRequest {
                            fills: Vec::new(),
                            tenant: "bench".into(),
                            trace_id,
                            create_if_missing: create.take(),
                            events: chunk.to_vec(),
                            end: None,
                        })
                        .await
                        .expect("append");
                    latencies.push(t0.elapsed());
                    // What was stored: the inputs, and `trace_started` when this append
                    // created the trace (state changes are not counted).
                    let n = chunk.len() as u64 + u64::from(out.created);
                    events.fetch_add(n, Ordering::Relaxed);
                }
            }
            latencies
        }));
    }
    tokio::time::sleep(Duration::from_secs(args.seconds)).await;
    stop.store(true, Ordering::Relaxed);
    let mut latencies = Vec::new();
    for t in tasks {
        latencies.extend(t.await.expect("writer"));
    }
    let elapsed = started.elapsed();
    let cpu = cpu_time().saturating_sub(cpu_before);
    latencies.sort();
    let n = events.load(Ordering::Relaxed);
    println!(
        "append: {} writers, batches of {} events, create {}, {:.1} s: {} events acknowledged = {:.0} events/s; append latency p50 {:.2} ms, p99 {:.2} ms; process CPU {:.1} µs per event",
        args.writers,
        args.batch,
        if args.inline_create { "inline" } else { "separate" },
        elapsed.as_secs_f64(),
        n,
        n as f64 / elapsed.as_secs_f64(),
        percentile(&latencies, 0.5).as_secs_f64() * 1e3,
        percentile(&latencies, 0.99).as_secs_f64() * 1e3,
        cpu.as_secs_f64() * 1e6 / n.max(1) as f64,
    );
    store.shutdown().await;
}

async fn list_latency(args: &Args, dir: &std::path::Path) {
    let store = open(args, dir).await;
    // Fill with `traces` traces, many at a time so the writer groups them.
    let t0 = Instant::now();
    let created = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    let per_task = args.traces / 64 + 1;
    for _ in 0..64 {
        let (store, created, target) = (store.clone(), created.clone(), args.traces);
        tasks.push(tokio::spawn(async move {
            for i in 0..per_task {
                if created.fetch_add(1, Ordering::Relaxed) >= target {
                    return;
                }
                let new = NewTrace {
                    trace_id: Some(TraceId::new_v7()),
                    agent_id: Some(format!("agent-{}", i % 10)),
                    user_id: Some(format!("user-{}", i % 1000)),
                    ..Default::default()
                };
                store.create_trace("bench", new).await.expect("create");
            }
        }));
    }
    for t in tasks {
        t.await.expect("filler");
    }
    println!(
        "list: stored {} traces in {:.1} s",
        args.traces,
        t0.elapsed().as_secs_f64()
    );

    let cases: Vec<(&str, TraceFilter)> = vec![
        ("newest 50", TraceFilter::default()),
        (
            "newest 50 of one agent",
            TraceFilter {
                agent_id: Some("agent-3".into()),
                ..Default::default()
            },
        ),
        (
            "newest 50 of one user",
            TraceFilter {
                user_id: Some("user-42".into()),
                ..Default::default()
            },
        ),
    ];
    for (what, filter) in cases {
        let mut lat = Vec::new();
        let mut rows = 0;
        let mut cursor = None;
        for i in 0..2000 {
            // Alternate first pages with pages reached by cursor deeper in the list.
            let page = PageRequest {
                cursor: if i % 2 == 1 { cursor.clone() } else { None },
                limit: 50,
                offset: 0,
            };
            let t = Instant::now();
            let p = store
                .list_traces("bench", &filter, &page)
                .await
                .expect("list");
            lat.push(t.elapsed());
            rows += p.items.len();
            cursor = p.next_cursor;
        }
        lat.sort();
        println!(
            "list: {what} out of {}: p50 {:.3} ms, p99 {:.3} ms, max {:.3} ms ({} calls, {:.1} rows per page)",
            args.traces,
            percentile(&lat, 0.5).as_secs_f64() * 1e3,
            percentile(&lat, 0.99).as_secs_f64() * 1e3,
            lat.last().map_or(0.0, |d| d.as_secs_f64() * 1e3),
            lat.len(),
            rows as f64 / lat.len() as f64
        );
    }
    if let Some(url) = &args.redis {
        println!(
            "list: redis used_memory {:.0} MiB ({:.0} bytes per trace; includes anything else in that Redis)",
            redis_used_memory(url) as f64 / (1024.0 * 1024.0),
            redis_used_memory(url) as f64 / args.traces as f64
        );
    }
    let size = std::fs::metadata(dir.join("traceway.db"))
        .map(|m| m.len())
        .unwrap_or(0);
    println!(
        "list: database file {:.0} MiB",
        size as f64 / (1024.0 * 1024.0)
    );
    store.shutdown().await;
}

/// `used_memory` from `INFO memory`, asked with `redis-cli` (standalone URLs only).
fn redis_used_memory(url: &str) -> u64 {
    let out = std::process::Command::new("redis-cli")
        .args(["-u", url, "INFO", "memory"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    out.lines()
        .find_map(|l| l.strip_prefix("used_memory:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

fn main() {
    let args = parse_args();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let tmp = tempfile::tempdir().expect("tempdir");
    let base = args
        .dir
        .clone()
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| tmp.path().to_path_buf());
    rt.block_on(async {
        let a = base.join("append");
        std::fs::create_dir_all(&a).expect("dir");
        append_throughput(&args, &a).await;
        let l = base.join("list");
        std::fs::create_dir_all(&l).expect("dir");
        list_latency(&args, &l).await;
    });
}
