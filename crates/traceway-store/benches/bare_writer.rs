//! The ingest ceiling (issue 17): a bare writer that stores Traceway's own rows through
//! rusqlite alone, with nothing of Traceway's write path around it.
//!
//! ```text
//! cargo bench -p traceway-store --bench bare_writer -- [--traces 20000] [--spans 11]
//!     [--batch 512] [--checkpoint store|auto] [--dir PATH] [--json]
//! ```
//!
//! The database is opened by `traceway_store::sqlite::open_writer_connection`, the function
//! the store's writer opens its own with: the same tables, columns, indexes (the schema's
//! migrations) and pragmas, so the two cannot drift. The rows are the ones the store writes
//! for OTLP traffic as `traceway-loadgen` sends it: agent runs of `--spans` spans (11 by
//! default, the load generator's run: an agent root, four components, three LLM calls with
//! ~500-byte prompts and completions, two tool calls, a retrieval of five documents),
//! children before their root, cut into export batches of `--batch` spans (a trace may
//! straddle two). Per batch, one transaction; per trace in it:
//!
//! - when new: its `traces` row (name, agent, session and user set, so in their indexes,
//!   as the OTLP mapping's hints set them) and its `trace_started` event;
//! - one `span_ended` event per span, its body the span's JSON (encoded inside the timed
//!   loop, as the store does), in multi-row INSERTs of 16 rows;
//! - the row's UPDATE with the new rollups (JSON), last seq, error count, duration, and
//!   activity; with the root span, also its state, end and expiries, and the
//!   `state_changed` and `trace_ended` events.
//!
//! Span bodies are the ones the OTLP mapping stores for the load generator's spans
//! (scope and session attributes, tool arguments as `schema`); the bench prints their
//! average size to compare with a real store's. The traces' rows stay in memory between batches (the store's trace cache does the same),
//! so nothing is read back. Spans are built before the clock starts.
//!
//! Checkpoints: `store` (the default) does what the store does: a PASSIVE checkpoint every
//! 100 ms from another connection and thread, and a RESTART between two batches once the
//! WAL passes `WAL_LIMIT_BYTES`; `auto` leaves it to SQLite's automatic checkpoint
//! (1,000 pages, inside the commit that passes it).
//!
//! Prints spans/s (and, with `--json`, one JSON object); asserts nothing.

use std::collections::hash_map::Entry;
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rusqlite::{params, Connection, ToSql};
use serde_json::{json, Value};
use traceway_core::{
    Document, EventBody, Level, LlmDetails, Message, RetrievalDetails, Rollups, Span, SpanId,
    SpanKind, SpanStatus, State, StateChange, StatusCode, Timestamp, ToolDetails, TraceEnded,
    TraceId, TraceStarted,
};
use traceway_store::sqlite::{open_writer_connection, WAL_LIMIT_BYTES};

struct Args {
    traces: usize,
    spans: usize,
    batch: usize,
    auto_checkpoint: bool,
    dir: Option<String>,
    json: bool,
}

fn parse_args() -> Args {
    let mut a = Args {
        traces: 20_000,
        spans: 11,
        batch: 512,
        auto_checkpoint: false,
        dir: None,
        json: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut val = || it.next().unwrap_or_else(|| panic!("{flag} needs a value"));
        match flag.as_str() {
            "--traces" => a.traces = val().parse().expect("--traces"),
            "--spans" => a.spans = val().parse().expect("--spans"),
            "--batch" => a.batch = val().parse().expect("--batch"),
            "--checkpoint" => {
                a.auto_checkpoint = match val().as_str() {
                    "auto" => true,
                    "store" => false,
                    other => panic!("--checkpoint store|auto, not {other}"),
                }
            }
            "--dir" => a.dir = Some(val()),
            "--json" => a.json = true,
            "--bench" => {}
            other => panic!("unknown argument {other}"),
        }
    }
    assert!(
        a.traces > 0 && a.traces <= 2_000_000,
        "--traces 1 to 2,000,000"
    );
    assert!(a.spans > 0 && a.spans <= 10_000, "--spans 1 to 10,000");
    assert!(a.batch > 0 && a.batch <= 100_000, "--batch 1 to 100,000");
    a
}

/// Deterministic filler text of about `len` bytes.
fn text(seed: &mut u64, len: usize) -> String {
    const WORDS: &[&str] = &[
        "the",
        "customer",
        "order",
        "refund",
        "policy",
        "within",
        "days",
        "shipping",
        "account",
        "invoice",
        "assistant",
        "tool",
        "retrieved",
        "context",
        "answer",
        "because",
        "support",
        "ticket",
        "status",
        "delivered",
        "payment",
        "method",
        "update",
        "request",
    ];
    let mut out = String::with_capacity(len + 16);
    while out.len() < len {
        *seed ^= *seed << 13;
        *seed ^= *seed >> 7;
        *seed ^= *seed << 17;
        out.push_str(WORDS[(*seed % WORDS.len() as u64) as usize]);
        out.push(' ');
    }
    out
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// One child span of the load generator's run, the `i`th of its ten, under `parent`.
fn child(i: usize, n: usize, parent: SpanId, t0: Timestamp, seed: &mut u64) -> Span {
    let mut s = base(SpanId::new_random(), Some(parent), t0, n);
    let llm = |s: &mut Span, seed: &mut u64, prompt: u64, start: u64, dur: u64| {
        let input = text(seed, 500);
        let output = text(seed, 500);
        s.kind = SpanKind::Llm;
        s.name = "ChatCompletion".into();
        s.start_time = t0.saturating_add(ms(start));
        s.end_time = Some(t0.saturating_add(ms(start + dur)));
        s.input = Some(Value::String(input.clone()));
        s.output = Some(Value::String(output.clone()));
        s.llm = Some(LlmDetails {
            provider: Some("openai".into()),
            model: Some("gpt-4o-mini".into()),
            input_tokens: Some(prompt),
            output_tokens: Some(120),
            total_tokens: Some(prompt + 120),
            input_messages: vec![
                message("system", "You are a support agent."),
                message("user", &input),
            ],
            output_messages: vec![message("assistant", &output)],
            ..LlmDetails::default()
        });
    };
    let chain = |s: &mut Span, name: &str, start: u64, dur: u64| {
        s.kind = SpanKind::Chain;
        s.name = name.into();
        s.start_time = t0.saturating_add(ms(start));
        s.end_time = Some(t0.saturating_add(ms(start + dur)));
        s.input = Some(Value::String(format!("{name} step input")));
    };
    let tool = |s: &mut Span, name: &str, args: Value, result: Value, start: u64, dur: u64| {
        s.kind = SpanKind::Tool;
        s.name = name.into();
        s.start_time = t0.saturating_add(ms(start));
        s.end_time = Some(t0.saturating_add(ms(start + dur)));
        // As the OTLP mapping stores the load generator's tool spans (`tool.parameters`
        // lands in `schema`).
        s.tool = Some(ToolDetails {
            name: Some(name.into()),
            schema: Some(args),
            result: Some(result),
            ..ToolDetails::default()
        });
    };
    match i % 10 {
        0 => llm(&mut s, seed, 850, 2, 900),
        1 => chain(&mut s, "plan", 1, 950),
        2 => {
            s.kind = SpanKind::Retriever;
            s.name = "search_knowledge_base".into();
            s.start_time = t0.saturating_add(ms(960));
            s.end_time = Some(t0.saturating_add(ms(1080)));
            s.input = Some(Value::String("refund policy for damaged items".into()));
            s.retrieval = Some(RetrievalDetails {
                query: Some("refund policy for damaged items".into()),
                documents: (0..5)
                    .map(|k| Document {
                        id: Some(format!("kb-{}#{k}", n % 300)),
                        score: Some(0.9 - k as f64 * 0.1),
                        content: Some(text(seed, 200)),
                        metadata: None,
                    })
                    .collect(),
            });
        }
        3 => llm(&mut s, seed, 1400, 1090, 700),
        4 => chain(&mut s, "research", 955, 840),
        5 => tool(
            &mut s,
            "get_order",
            json!({"order_id": n}),
            json!({"status": "delivered", "total": 59.9}),
            1800,
            80,
        ),
        6 => tool(
            &mut s,
            "issue_refund",
            json!({"order_id": n, "amount": 59.9}),
            json!({"refund_id": format!("rf-{n}")}),
            1885,
            150,
        ),
        7 => chain(&mut s, "act", 1795, 245),
        8 => llm(&mut s, seed, 1900, 2045, 800),
        _ => chain(&mut s, "respond", 2040, 810),
    }
    s
}

fn message(role: &str, content: &str) -> Message {
    Message {
        role: role.into(),
        content: Some(content.into()),
        tool_calls: Vec::new(),
        tool_call_id: None,
        name: None,
    }
}

/// A span as the OTLP mapping stores the load generator's: the instrumentation scope and
/// the session among its attributes.
fn base(id: SpanId, parent: Option<SpanId>, t0: Timestamp, n: usize) -> Span {
    let mut attributes = serde_json::Map::new();
    attributes.insert(
        "otel.scope.name".into(),
        "openinference.instrumentation.openai".into(),
    );
    attributes.insert("otel.scope.version".into(), "0.1.0".into());
    attributes.insert("session.id".into(), format!("session-{}", n % 500).into());
    Span {
        span_id: id,
        parent_span_id: parent,
        kind: SpanKind::Agent,
        name: String::new(),
        component_id: None,
        service: Some("support-bot".into()),
        start_time: t0,
        end_time: None,
        status: SpanStatus {
            code: StatusCode::Ok,
            message: None,
        },
        input: None,
        output: None,
        llm: None,
        tool: None,
        retrieval: None,
        attributes,
        links: Vec::new(),
    }
}

/// One run of `spans` spans, children first and the root last, as they end.
fn agent_run(n: usize, spans: usize, seed: &mut u64) -> (TraceId, Vec<Span>) {
    let id = TraceId::new_v7();
    let t0 = Timestamp::now();
    let root_id = SpanId::new_random();
    let mut out: Vec<Span> = (0..spans.saturating_sub(1))
        .map(|i| child(i, n, root_id, t0, seed))
        .collect();
    let mut root = base(root_id, None, t0, n);
    root.attributes
        .insert("agent.name".into(), "support-agent".into());
    root.attributes
        .insert("user.id".into(), format!("user-{}", n % 97).into());
    root.name = "support_agent".into();
    root.end_time = Some(t0.saturating_add(ms(2860)));
    root.input = Some(Value::String(
        "My parcel arrived damaged, can I get a refund?".into(),
    ));
    root.output = Some(Value::String("Yes: the refund is on its way.".into()));
    out.push(root);
    (id, out)
}

/// A trace as the writer keeps it between batches.
struct Open {
    rowid: i64,
    last_seq: u64,
    rollups: Rollups,
}

const ROWS_PER_INSERT: usize = 16;
const TENANT: &str = "bare";

fn events_sql(rows: usize) -> String {
    let mut sql = String::from(
        "INSERT INTO events (trace_ref, seq, time, type, span_id, component_id, dedup_key, body) VALUES ",
    );
    for i in 0..rows {
        if i > 0 {
            sql.push_str(", ");
        }
        sql.push_str("(?, ?, ?, ?, ?, ?, ?, ?)");
    }
    sql
}

/// A span's `span_ended` body as the store encodes it (`EventBody::SpanEnded`), without
/// copying the span into an owned `EventBody` first.
#[derive(serde::Serialize)]
#[serde(tag = "type", content = "payload", rename_all = "snake_case")]
enum SpanBody<'a> {
    SpanEnded(&'a Span),
}

fn json(body: &impl serde::Serialize) -> String {
    let mut buf = Vec::with_capacity(512);
    serde_json::to_writer(&mut buf, body).expect("json");
    String::from_utf8(buf).expect("utf-8")
}

/// An `events` row: seq, time, type, span id, component, body.
type Row<'a> = (i64, i64, &'static str, Option<i64>, Option<&'a str>, String);

fn event_row<'a>(seq: u64, time: Timestamp, body: &EventBody) -> Row<'a> {
    (
        seq as i64,
        time.unix_nanos(),
        body.event_type().as_str(),
        None,
        None,
        json(body),
    )
}

/// Inserts the rows of the trace at `rowid`, 16 a statement; returns the bytes of JSON.
fn insert_events(tx: &rusqlite::Transaction<'_>, rowid: i64, rows: &[Row<'_>]) -> usize {
    let none: Option<String> = None;
    for chunk in rows.chunks(ROWS_PER_INSERT) {
        let mut args: Vec<&dyn ToSql> = Vec::with_capacity(chunk.len() * 8);
        for r in chunk {
            args.extend([
                &rowid as &dyn ToSql,
                &r.0,
                &r.1,
                &r.2,
                &r.3,
                &r.4,
                &none,
                &r.5,
            ]);
        }
        tx.prepare_cached(&events_sql(chunk.len()))
            .and_then(|mut s| s.execute(args.as_slice()))
            .expect("insert events");
    }
    rows.iter().map(|r| r.5.len()).sum()
}

const DAY: Duration = Duration::from_secs(86_400);

/// Writes one trace's spans of a batch; `root` when the run's root span is among them.
fn write_trace(
    tx: &rusqlite::Transaction<'_>,
    open: &mut HashMap<TraceId, Open>,
    id: TraceId,
    n: usize,
    spans: &[Span],
) -> usize {
    let now = Timestamp::now();
    let mut rows: Vec<Row<'_>> = Vec::with_capacity(spans.len() + 3);
    let o = match open.entry(id) {
        Entry::Occupied(e) => e.into_mut(),
        Entry::Vacant(slot) => {
            let started = TraceStarted {
                name: Some("support_agent".into()),
                agent_id: Some("support-agent".into()),
                session_id: Some(format!("session-{}", n % 500)),
                user_id: Some(format!("user-{}", n % 97)),
                state: State::Running,
                level: Level::Detailed,
                metadata: BTreeMap::from([
                    ("service.name".to_string(), "support-bot".to_string()),
                    ("telemetry.sdk.language".to_string(), "python".to_string()),
                    (
                        "telemetry.sdk.name".to_string(),
                        "opentelemetry".to_string(),
                    ),
                ]),
            };
            let rollups = Rollups::default();
            tx.prepare_cached(
            "INSERT INTO traces (tenant, trace_id, name, agent_id, session_id, user_id, state, \
             level, created_at, last_activity_at, ended_at, expires_at, data_expires_at, \
             last_seq, error_count, duration_ms, metadata, rollups) \
             VALUES (?1, ?2, ?9, ?10, ?11, ?12, 'RUNNING', ?3, ?4, ?4, NULL, ?5, ?6, 1, 0, \
             NULL, ?7, ?8)",
        )
        .and_then(|mut s| {
            s.execute(params![
                TENANT,
                &id.to_bytes()[..],
                Level::Detailed as i64,
                now.unix_nanos(),
                now.saturating_add(DAY).unix_nanos(),
                now.saturating_add(3 * DAY).unix_nanos(),
                json(&started.metadata),
                json(&rollups),
                started.name,
                started.agent_id,
                started.session_id,
                started.user_id,
            ])
        })
        .expect("insert trace");
            rows.push(event_row(1, now, &EventBody::TraceStarted(started)));
            slot.insert(Open {
                rowid: tx.last_insert_rowid(),
                last_seq: 1,
                rollups,
            })
        }
    };
    let mut root = false;
    for s in spans {
        o.rollups.apply_span(None, s);
        o.last_seq += 1;
        root |= s.parent_span_id.is_none();
        rows.push((
            o.last_seq as i64,
            s.end_time.unwrap_or(s.start_time).unix_nanos(),
            "span_ended",
            Some(s.span_id.as_u64() as i64),
            s.component_id.as_deref(),
            json(&SpanBody::SpanEnded(s)),
        ));
    }
    if root {
        o.last_seq += 1;
        let change = EventBody::StateChanged(StateChange {
            from: State::Running,
            to: State::Completed,
            reason: Some("root span ended".into()),
        });
        rows.push(event_row(o.last_seq, now, &change));
        o.last_seq += 1;
        let ended = EventBody::TraceEnded(TraceEnded {
            state: State::Completed,
            reason: Some("root span ended".into()),
            rollups: o.rollups.clone(),
        });
        rows.push(event_row(o.last_seq, now, &ended));
    }
    let rollups = json(&o.rollups);
    if root {
        tx.prepare_cached(
            "UPDATE traces SET last_seq = ?2, error_count = ?3, duration_ms = ?4, rollups = ?5, \
             last_activity_at = ?6, state = 'COMPLETED', ended_at = ?6, expires_at = ?7, \
             data_expires_at = ?8 WHERE id = ?1",
        )
        .and_then(|mut s| {
            s.execute(params![
                o.rowid,
                o.last_seq as i64,
                o.rollups.error_count as i64,
                o.rollups.duration_ms,
                rollups,
                now.unix_nanos(),
                now.saturating_add(7 * DAY).unix_nanos(),
                now.saturating_add(3 * DAY).unix_nanos(),
            ])
        })
        .expect("update trace");
    } else {
        tx.prepare_cached(
            "UPDATE traces SET last_seq = ?2, error_count = ?3, duration_ms = ?4, rollups = ?5, \
             last_activity_at = ?6 WHERE id = ?1",
        )
        .and_then(|mut s| {
            s.execute(params![
                o.rowid,
                o.last_seq as i64,
                o.rollups.error_count as i64,
                o.rollups.duration_ms,
                rollups,
                now.unix_nanos(),
            ])
        })
        .expect("update trace");
    }
    let rowid = o.rowid;
    if root {
        open.remove(&id);
    }
    insert_events(tx, rowid, &rows)
}

fn main() {
    let args = parse_args();
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = args
        .dir
        .as_ref()
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| tmp.path().to_path_buf());
    std::fs::create_dir_all(&dir).expect("dir");
    let path = dir.join(format!("bare-{}.db", std::process::id()));

    // The batches, built before the clock starts: (trace, its spans in this batch) runs.
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    let mut batches: Vec<Vec<(TraceId, usize, Vec<Span>)>> = Vec::new();
    let mut cur: Vec<(TraceId, usize, Vec<Span>)> = Vec::new();
    let mut in_cur = 0usize;
    for n in 0..args.traces {
        let (id, spans) = agent_run(n, args.spans, &mut seed);
        let mut rest = spans.as_slice();
        while !rest.is_empty() {
            let take = rest.len().min(args.batch - in_cur);
            cur.push((id, n, rest[..take].to_vec()));
            in_cur += take;
            rest = &rest[take..];
            if in_cur == args.batch {
                batches.push(std::mem::take(&mut cur));
                in_cur = 0;
            }
        }
    }
    if !cur.is_empty() {
        batches.push(cur);
    }
    let total_spans = (args.traces * args.spans) as u64;

    let mut conn = open_writer_connection(&path).expect("open");
    if args.auto_checkpoint {
        conn.execute_batch("PRAGMA wal_autocheckpoint = 1000")
            .expect("autocheckpoint");
    }
    let stop = Arc::new(AtomicBool::new(false));
    let wal_frames = Arc::new(AtomicU64::new(0));
    let checkpointer = (!args.auto_checkpoint).then(|| {
        let ckpt = Connection::open(&path).expect("checkpoint connection");
        ckpt.busy_timeout(Duration::from_secs(1)).expect("busy");
        let (stop, frames) = (stop.clone(), wal_frames.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(100));
                if let Ok(n) =
                    ckpt.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| r.get::<_, i64>(1))
                {
                    frames.store(n.max(0) as u64, Ordering::Relaxed);
                }
            }
        })
    });
    let limit_frames = WAL_LIMIT_BYTES / 4096;

    let mut open: HashMap<TraceId, Open> = HashMap::new();
    let mut body_bytes = 0usize;
    let mut restarts = 0u32;
    let mut restart_time = Duration::ZERO;
    let cpu0 = cpu_seconds();
    let t = Instant::now();
    for batch in &batches {
        if !args.auto_checkpoint && wal_frames.load(Ordering::Relaxed) > limit_frames {
            let r = Instant::now();
            if let Ok(0) =
                conn.query_row("PRAGMA wal_checkpoint(RESTART)", [], |r| r.get::<_, i64>(0))
            {
                wal_frames.store(0, Ordering::Relaxed);
                restarts += 1;
            }
            restart_time += r.elapsed();
        }
        let tx = conn.transaction().expect("begin");
        for (id, n, spans) in batch {
            body_bytes += write_trace(&tx, &mut open, *id, *n, spans);
        }
        tx.commit().expect("commit");
    }
    let secs = t.elapsed().as_secs_f64();
    let cpu = cpu_seconds() - cpu0;
    stop.store(true, Ordering::Relaxed);
    if let Some(h) = checkpointer {
        let _ = h.join();
    }
    let events: i64 = conn
        .query_row("SELECT count(*) FROM events", [], |r| r.get(0))
        .expect("count");
    let avg_span_body: f64 = conn
        .query_row(
            "SELECT avg(length(body)) FROM events WHERE type = 'span_ended'",
            [],
            |r| r.get(0),
        )
        .expect("avg");
    drop(conn);
    let db_bytes = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
    }
    let spans_per_s = total_spans as f64 / secs;
    if args.json {
        println!(
            "{}",
            json!({
                "spans": total_spans,
                "traces": args.traces,
                "spans_per_trace": args.spans,
                "batch": args.batch,
                "checkpoint": if args.auto_checkpoint { "auto" } else { "store" },
                "seconds": secs,
                "spans_per_s": spans_per_s,
                "cpu_us_per_span": cpu * 1e6 / total_spans as f64,
                "events": events,
                "avg_span_body_bytes": avg_span_body,
                "restarts": restarts,
                "restart_ms": restart_time.as_secs_f64() * 1e3,
                "db_bytes": db_bytes,
            })
        );
    } else {
        println!(
            "bare writer: {total_spans} spans ({} traces of {}, batches of {}) in {secs:.2} s: \
             {spans_per_s:.0} spans/s; process CPU {:.2} µs/span; {events} events, span body \
             {avg_span_body:.0} B on average ({} MiB of JSON); {restarts} WAL restarts \
             ({:.0} ms); database {} MiB",
            args.traces,
            args.spans,
            args.batch,
            cpu * 1e6 / total_spans as f64,
            body_bytes >> 20,
            restart_time.as_secs_f64() * 1e3,
            db_bytes >> 20,
        );
    }
}

/// User plus system CPU time of this process, from /proc (0 where there is none).
fn cpu_seconds() -> f64 {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
        return 0.0;
    };
    // Fields after the command name (which is in parentheses): utime is the 12th, stime the 13th.
    let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) else {
        return 0.0;
    };
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    (ticks(11) + ticks(12)) / 100.0
}
