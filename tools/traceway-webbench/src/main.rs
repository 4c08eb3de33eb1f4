//! Web page benchmark (issue 16): the trace list's first render with 1,000,000 traces
//! stored, and the trace view of a 10,000-span trace, as headless Chromium times them.
//!
//! ```text
//! cargo build --release -p traceway-cli --bin traceway
//! cargo run --release -p traceway-webbench -- --bin $CARGO_TARGET_DIR/release/traceway \
//!     [--dir PATH] [--traces 1000000] [--spans 10000] [--runs 7]
//! ```
//!
//! 1. Seeds a SQLite data directory through the store's API (no HTTP): `--traces` traces
//!    of tenant `default`, the newest 1,000 of them whole agent runs (so the first page
//!    shows real rollups), and one trace of `--spans` spans (an agent, steps of 100, LLM
//!    calls with messages, tool calls, retrievals). With `--dir`, a directory seeded before
//!    with the same sizes is reused (`webbench.json` records what it holds).
//! 2. Serves it with the real `traceway` binary on a loopback port.
//! 3. Opens the page in headless Chromium (chromedriver over WebDriver) `--runs` times per
//!    view, each a fresh navigation, and reads the marks the page itself sets
//!    (`performance.mark`, ADR 041), measured from the navigation's start:
//!    `tw:list-rows` (the first page's rows are in the DOM), `tw:list-drawn` (that frame
//!    painted, the page answering input again), `tw:trace-rows`, `tw:trace-interactive`
//!    (the waterfall drawn with every span read, painted, answering input) and
//!    `tw:trace-analysis` (the analysis panel drawn).
//!
//! Prints the figures; asserts nothing (floors live in BENCHMARKS.md).

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::Parser;
use fantoccini::{Client, ClientBuilder};
use serde_json::{json, Value};
use traceway_core::{
    Document, EventInput, LlmDetails, Message, NewTrace, RetrievalDetails, SpanId, SpanInput,
    SpanKind, SpanStatus, State, StatusCode, Timestamp, ToolDetails, TraceId,
};
use traceway_store::sqlite::{SqliteConfig, SqliteStore};
use traceway_store::{AppendRequest, Store, SystemClock, TraceEnd};

const TENANT: &str = "default";
/// The newest traces, stored as whole agent runs.
const FULL_RUNS: u64 = 1000;
const MARKER: &str = "webbench.json";
/// Generous: nothing waits this long when things work.
const DEADLINE: Duration = Duration::from_secs(120);

#[derive(Parser)]
#[command(about = "Times the web page in headless Chromium over a large store.")]
struct Args {
    /// The `traceway` binary that serves the page (build it with --release).
    #[arg(long, default_value = "target/release/traceway")]
    bin: PathBuf,
    /// Data directory to seed, or to reuse when seeded before with the same sizes.
    /// Without it, a temporary one (seeded every run).
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Traces stored.
    #[arg(long, default_value_t = 1_000_000)]
    traces: u64,
    /// Spans of the large trace.
    #[arg(long, default_value_t = 10_000)]
    spans: u64,
    /// Page loads timed per view; the first (a cold browser) is reported apart.
    #[arg(long, default_value_t = 7)]
    runs: usize,
    #[arg(long, default_value = "/usr/bin/chromium")]
    chromium: PathBuf,
    #[arg(long, default_value = "/usr/bin/chromedriver")]
    chromedriver: PathBuf,
}

fn sid(n: u64) -> SpanId {
    SpanId::from_u64(n).expect("non-zero")
}

fn ok() -> Option<SpanStatus> {
    Some(SpanStatus {
        code: StatusCode::Ok,
        message: None,
    })
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

#[allow(clippy::too_many_arguments)]
fn ended(
    id: u64,
    parent: Option<u64>,
    kind: SpanKind,
    name: String,
    t0: Timestamp,
    start_ms: u64,
    dur_ms: u64,
) -> SpanInput {
    SpanInput {
        parent_span_id: parent.map(sid),
        kind: Some(kind),
        name: Some(name),
        start_time: Some(t0.saturating_add(Duration::from_millis(start_ms))),
        end_time: Some(t0.saturating_add(Duration::from_millis(start_ms + dur_ms))),
        status: ok(),
        ..SpanInput::new(sid(id))
    }
}

fn llm(seed: u64) -> LlmDetails {
    LlmDetails {
        provider: Some("openai".into()),
        model: Some(
            if seed % 2 == 0 {
                "gpt-4o-mini"
            } else {
                "gpt-4.1"
            }
            .into(),
        ),
        input_tokens: Some(400 + seed % 300),
        output_tokens: Some(60 + seed % 90),
        input_messages: vec![
            Message {
                role: "system".into(),
                content: Some(text(160, seed)),
                ..Default::default()
            },
            Message {
                role: "user".into(),
                content: Some(text(220, seed + 1)),
                ..Default::default()
            },
        ],
        output_messages: vec![Message {
            role: "assistant".into(),
            content: Some(text(300, seed + 2)),
            ..Default::default()
        }],
        ..Default::default()
    }
}

/// A leaf step of kind LLM, tool or retrieval, by `n`.
fn leaf(mut span: SpanInput, n: u64) -> SpanInput {
    match n % 3 {
        0 => {
            span.kind = Some(SpanKind::Llm);
            span.llm = Some(llm(n));
        }
        1 => {
            span.kind = Some(SpanKind::Tool);
            span.tool = Some(ToolDetails {
                name: Some("get_order".into()),
                arguments: Some(json!({"order_id": n, "fields": ["status", "total"]})),
                result: Some(json!({"status": "delivered", "total": 59.9})),
                ..Default::default()
            });
        }
        _ => {
            span.kind = Some(SpanKind::Retriever);
            span.retrieval = Some(RetrievalDetails {
                query: Some(text(60, n)),
                documents: (0..3)
                    .map(|i| Document {
                        id: Some(format!("doc-{i}")),
                        score: Some(0.9 - i as f64 * 0.1),
                        content: Some(text(120, n + i)),
                        metadata: None,
                    })
                    .collect(),
            });
        }
    }
    span
}

/// A small whole agent run (an agent and three steps).
fn small_run(t: u64, t0: Timestamp) -> Vec<EventInput> {
    let mut out = vec![EventInput::SpanEnded {
        span: ended(1, None, SpanKind::Agent, "support-agent".into(), t0, 0, 900),
    }];
    for n in 0..3u64 {
        let s = ended(
            2 + n,
            Some(1),
            SpanKind::Other,
            format!("step-{n}"),
            t0,
            10 + n * 290,
            280,
        );
        out.push(EventInput::SpanEnded {
            span: leaf(s, t + n),
        });
    }
    out
}

/// The large trace: an agent, then steps of 100 (a chain and its 99 leaves).
fn big_trace(spans: u64, t0: Timestamp) -> Vec<EventInput> {
    let mut out = vec![EventInput::SpanEnded {
        span: ended(
            1,
            None,
            SpanKind::Agent,
            "planner-agent".into(),
            t0,
            0,
            (spans / 100 + 1) * 400,
        ),
    }];
    for n in 2..=spans {
        let (g, pos) = ((n - 2) / 100, (n - 2) % 100);
        let chain = 2 + g * 100;
        let span = if pos == 0 {
            ended(
                n,
                Some(1),
                SpanKind::Chain,
                format!("step-{g}"),
                t0,
                g * 400,
                395,
            )
        } else {
            leaf(
                ended(
                    n,
                    Some(chain),
                    SpanKind::Other,
                    format!("leaf-{g}-{pos}"),
                    t0,
                    g * 400 + pos * 4,
                    3,
                ),
                n,
            )
        };
        out.push(EventInput::SpanEnded { span });
    }
    out
}

fn completed() -> Option<TraceEnd> {
    Some(TraceEnd {
        state: State::Completed,
        reason: Some("root span ended".into()),
    })
}

/// Seeds `dir`; the large trace's id.
async fn seed(dir: &Path, traces: u64, spans: u64) -> Result<String> {
    let mut cfg = SqliteConfig::new(dir.join("traceway.db"));
    cfg.queue_capacity = 8192;
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open(cfg, Arc::new(SystemClock))?);
    let started = Instant::now();
    let bare = traces.saturating_sub(FULL_RUNS + 1);
    let next = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for _ in 0..64 {
        let (store, next) = (store.clone(), next.clone());
        tasks.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= bare {
                    return Ok::<_, anyhow::Error>(());
                }
                if i > 0 && i % 100_000 == 0 {
                    eprintln!("seeded {i} traces");
                }
                // Created ended: a trace left RECEIVED would be swept as an orphan by the
                // served store's watchdog half an hour later (a million writes mid-run).
                store
                    .append(AppendRequest {
                        tenant: TENANT.into(),
                        trace_id: TraceId::new_v7(),
                        create_if_missing: Some(NewTrace {
                            name: Some(format!("run-{i}")),
                            agent_id: Some(format!("agent-{}", i % 10)),
                            user_id: Some(format!("user-{}", i % 1000)),
                            ..Default::default()
                        }),
                        events: Vec::new(),
                        fills: Vec::new(),
                        end: completed(),
                    })
                    .await?;
            }
        }));
    }
    for t in tasks {
        t.await??;
    }
    let now = Timestamp::now();
    let next = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for _ in 0..16 {
        let (store, next) = (store.clone(), next.clone());
        tasks.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= FULL_RUNS.min(traces) {
                    return Ok::<_, anyhow::Error>(());
                }
                let t0 = now.saturating_sub(Duration::from_secs(FULL_RUNS - i));
                store
                    .append(AppendRequest {
                        tenant: TENANT.into(),
                        trace_id: TraceId::new_v7(),
                        create_if_missing: Some(NewTrace {
                            name: Some(format!("agent-run-{i}")),
                            agent_id: Some(format!("agent-{}", i % 10)),
                            user_id: Some(format!("user-{}", i % 1000)),
                            ..Default::default()
                        }),
                        events: small_run(i, t0),
                        fills: Vec::new(),
                        end: completed(),
                    })
                    .await?;
            }
        }));
    }
    for t in tasks {
        t.await??;
    }
    let big = TraceId::new_v7();
    let events = big_trace(
        spans,
        Timestamp::now().saturating_sub(Duration::from_secs(60)),
    );
    let chunks: Vec<_> = events.chunks(1000).collect();
    for (k, chunk) in chunks.iter().enumerate() {
        store
            .append(AppendRequest {
                tenant: TENANT.into(),
                trace_id: big,
                create_if_missing: (k == 0).then(|| NewTrace {
                    name: Some(format!("large-trace-{spans}-spans")),
                    agent_id: Some("planner".into()),
                    ..Default::default()
                }),
                events: chunk.to_vec(),
                fills: Vec::new(),
                end: if k + 1 == chunks.len() {
                    completed()
                } else {
                    None
                },
            })
            .await?;
    }
    store.shutdown().await;
    let size = std::fs::metadata(dir.join("traceway.db")).map_or(0, |m| m.len());
    eprintln!(
        "seeded {traces} traces ({FULL_RUNS} whole runs, one of {spans} spans) in {:.1} s; database {:.0} MiB",
        started.elapsed().as_secs_f64(),
        size as f64 / (1024.0 * 1024.0)
    );
    Ok(big.to_string())
}

/// The large trace's id, seeding `dir` unless it holds these sizes already.
async fn seeded(dir: &Path, traces: u64, spans: u64) -> Result<String> {
    let marker = dir.join(MARKER);
    if let Ok(text) = std::fs::read_to_string(&marker) {
        let m: Value = serde_json::from_str(&text)?;
        if m["traces"] == traces && m["spans"] == spans {
            eprintln!("reusing {} (seeded before)", dir.display());
            return Ok(m["big_trace"].as_str().context("marker")?.to_string());
        }
        bail!(
            "{} holds another seed ({text}); use another --dir",
            dir.display()
        );
    }
    if dir.join("traceway.db").exists() {
        bail!(
            "{} has a database this tool did not seed; use another --dir",
            dir.display()
        );
    }
    let big = seed(dir, traces, spans).await?;
    std::fs::write(
        &marker,
        json!({"traces": traces, "spans": spans, "big_trace": big}).to_string(),
    )?;
    Ok(big)
}

struct Server {
    child: Child,
    url: String,
}

impl Server {
    fn start(bin: &Path, dir: &Path) -> Result<Server> {
        let mut child = Command::new(bin)
            .args([
                "serve",
                "--listen",
                "127.0.0.1:0",
                "--grpc-listen",
                "127.0.0.1:0",
            ])
            .arg("--data-dir")
            .arg(dir)
            .env("TRACEWAY_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .with_context(|| format!("spawn {}", bin.display()))?;
        let stdout = child.stdout.take().context("stdout")?;
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(url) = line.strip_prefix("traceway listening on ") {
                    let _ = tx.send(url.to_string());
                }
            }
        });
        let url = rx
            .recv_timeout(Duration::from_secs(60))
            .context("the server did not start in 60 s")?;
        Ok(Server { child, url })
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let _ = self.child.wait();
    }
}

struct Driver(Child);

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

async fn browser(args: &Args, profile: &Path) -> Result<(Driver, Client)> {
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let driver = Driver(
        Command::new(&args.chromedriver)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .with_context(|| format!("spawn {}", args.chromedriver.display()))?,
    );
    let caps = json!({
        "browserName": "chrome",
        "goog:chromeOptions": {
            "binary": args.chromium,
            "args": [
                "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                "--no-first-run", "--disable-background-networking",
                "--disable-component-update", "--disable-sync",
                "--disable-dev-shm-usage", "--window-size=1400,900",
                format!("--user-data-dir={}", profile.display()),
            ],
        },
    });
    let caps = caps.as_object().context("caps")?.clone();
    let url = format!("http://127.0.0.1:{port}");
    let deadline = Instant::now() + DEADLINE;
    loop {
        match ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
            .capabilities(caps.clone())
            .connect(&url)
            .await
        {
            Ok(c) => return Ok((driver, c)),
            Err(e) if Instant::now() > deadline => bail!("no WebDriver session: {e}"),
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
}

/// The page's marks and timings once `mark` is set.
async fn timings(c: &Client, mark: &str, api_path: &str) -> Result<Value> {
    let deadline = Instant::now() + DEADLINE;
    let script = "
        const m = (n) => { const e = performance.getEntriesByName(n, 'mark'); return e.length ? e[0].startTime : null; };
        if (m(arguments[0]) == null) return null;
        const nav = performance.getEntriesByType('navigation')[0];
        const calls = performance.getEntriesByType('resource').filter(r => new URL(r.name).pathname === arguments[1]);
        const api = calls[0];
        return {
            list_rows: m('tw:list-rows'), list_drawn: m('tw:list-drawn'),
            trace_rows: m('tw:trace-rows'), trace_interactive: m('tw:trace-interactive'),
            trace_analysis: m('tw:trace-analysis'),
            html: nav.responseEnd, dom_content_loaded: nav.domContentLoadedEventEnd,
            api_start: api ? api.startTime : null, api_end: api ? api.responseEnd : null,
            api_bytes: api ? api.encodedBodySize : null,
            calls: calls.map(r => `${r.startTime.toFixed(0)}–${r.responseEnd.toFixed(0)} ms ${(r.encodedBodySize / 1024).toFixed(0)} KiB`).join(', '),
            dom_rows: document.querySelectorAll('tr.trace-row, .wf-row').length,
        };
    ";
    loop {
        let v = c
            .execute(script, vec![json!(mark), json!(api_path)])
            .await?;
        if !v.is_null() {
            return Ok(v);
        }
        if Instant::now() > deadline {
            bail!("the page never set {mark}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    if v.is_empty() {
        return f64::NAN;
    }
    v[v.len() / 2]
}

fn f(v: &Value, k: &str) -> f64 {
    v[k].as_f64().unwrap_or(f64::NAN)
}

async fn run(args: &Args, c: &Client, base: &str, big: &str) -> Result<()> {
    let mut warm = Vec::new();
    for k in 0..args.runs {
        c.goto("about:blank").await?;
        c.goto(&format!("{base}/#/")).await?;
        let t = timings(c, "tw:list-drawn", "/api/v1/traces").await?;
        println!(
            "list run {k}: rows drawn {:.1} ms, painted {:.1} ms after navigation start (HTML {:.1} ms, modules run {:.1} ms, list call {:.1}–{:.1} ms); {} rows in the DOM",
            f(&t, "list_rows"), f(&t, "list_drawn"), f(&t, "html"), f(&t, "dom_content_loaded"),
            f(&t, "api_start"), f(&t, "api_end"), t["dom_rows"],
        );
        if k > 0 {
            warm.push(f(&t, "list_drawn"));
        }
    }
    let list = median(warm.clone());
    let list_max = warm.iter().copied().fold(f64::NAN, f64::max);
    let mut warm_i = Vec::new();
    let mut warm_a = Vec::new();
    let trace_path = format!("/api/v1/traces/{big}");
    for k in 0..args.runs {
        c.goto("about:blank").await?;
        c.goto(&format!("{base}/#/trace/{big}")).await?;
        let mut t = timings(c, "tw:trace-interactive", &trace_path).await?;
        // The analysis arrives after; wait for it too (it is not part of "interactive").
        let deadline = Instant::now() + DEADLINE;
        while t["trace_analysis"].is_null() && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
            t = timings(c, "tw:trace-interactive", &trace_path).await?;
        }
        let spans = c
            .execute(
                "return document.querySelector('.span-count')?.textContent",
                vec![],
            )
            .await?;
        println!(
            "trace run {k}: rows drawn {:.1} ms, interactive {:.1} ms, analysis drawn {:.1} ms after navigation start (trace reads: {}); {spans}; {} rows in the DOM",
            f(&t, "trace_rows"), f(&t, "trace_interactive"), f(&t, "trace_analysis"),
            t["calls"].as_str().unwrap_or(""), t["dom_rows"],
        );
        if k > 0 {
            warm_i.push(f(&t, "trace_interactive"));
            warm_a.push(f(&t, "trace_analysis"));
        }
    }
    println!(
        "summary: list first render (painted) median {:.1} ms, max {:.1} ms over {} warm runs; trace view of {} spans interactive median {:.1} ms, max {:.1} ms; its analysis drawn median {:.1} ms",
        list,
        list_max,
        warm.len(),
        args.spans,
        median(warm_i.clone()),
        warm_i.iter().copied().fold(f64::NAN, f64::max),
        median(warm_a),
    );
    Ok(())
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    if !args.bin.exists() {
        bail!(
            "{} not found: cargo build --release -p traceway-cli --bin traceway, and pass --bin",
            args.bin.display()
        );
    }
    let tmp = tempfile::tempdir()?;
    let dir = match &args.dir {
        Some(d) => {
            std::fs::create_dir_all(d)?;
            d.clone()
        }
        None => tmp.path().to_path_buf(),
    };
    let big = seeded(&dir, args.traces, args.spans).await?;
    let server = Server::start(&args.bin, &dir)?;
    eprintln!("serving {} at {}", dir.display(), server.url);
    let profile = tempfile::tempdir()?;
    let (driver, c) = browser(&args, profile.path()).await?;
    let result = run(&args, &c, &server.url, &big).await;
    let _ = c.close().await;
    drop(driver);
    drop(server);
    result
}
