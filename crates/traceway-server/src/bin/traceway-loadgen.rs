//! `traceway-loadgen`: sends realistic agent traces to a Traceway server over OTLP/HTTP
//! (protobuf) or OTLP/gRPC and reports how fast they were accepted and how fast they
//! became queryable.
//!
//! Each trace is one agent run of 11 spans with OpenInference attributes: an agent root,
//! four component (chain) spans, three LLM calls with ~500-byte inputs and outputs and
//! token counts, two tool calls, and a retrieval of five documents. Spans are batched into
//! export requests of `--spans-per-request` spans, children before their root, as an OTel
//! batch span processor exports them; a trace may straddle two requests. Every request is
//! encoded before the clock starts, so the generator's own work is sending bytes.
//!
//! Loopback only: the target must be 127.0.0.0/8, ::1 or localhost. Bounded: at most
//! `--traces` traces, and the run stops after `--timeout`.
//!
//! ```text
//! traceway-loadgen --protocol http --concurrency 8 --traces 20000 --server-pid $(pgrep -n traceway)
//! ```

use std::net::{IpAddr, ToSocketAddrs};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use bytes::{Buf, BufMut, Bytes};
use clap::{Parser, ValueEnum};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, InstrumentationScope, KeyValue};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{status, ResourceSpans, ScopeSpans, Span, Status};
use prost::Message as _;
use serde_json::{json, Value};
use traceway_core::{SpanId, TraceId};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Protocol {
    /// OTLP/HTTP with protobuf bodies, `POST /v1/traces`.
    Http,
    /// OTLP/gRPC, `TraceService/Export`.
    Grpc,
}

#[derive(Debug, Parser)]
#[command(
    name = "traceway-loadgen",
    about = "Send realistic agent traces over OTLP to a local Traceway and measure ingest"
)]
struct Args {
    /// Transport.
    #[arg(long, value_enum, default_value = "http")]
    protocol: Protocol,
    /// REST API and OTLP/HTTP base URL (queries always go here).
    #[arg(long, default_value = "http://127.0.0.1:4318")]
    http: String,
    /// OTLP/gRPC URL.
    #[arg(long, default_value = "http://127.0.0.1:4317")]
    grpc: String,
    /// Requests in flight at once (one connection each).
    #[arg(long, default_value_t = 8)]
    concurrency: usize,
    /// Agent traces to send (11 spans each).
    #[arg(long, default_value_t = 10_000)]
    traces: usize,
    /// Spans per export request (OTel's batch processor exports up to 512).
    #[arg(long, default_value_t = 512)]
    spans_per_request: usize,
    /// Tenant to write as [default: a fresh `loadgen-<time>` tenant, so counts are exact].
    #[arg(long)]
    tenant: Option<String>,
    /// API key sent as `Authorization: Bearer` on every request and gRPC call (a server
    /// with auth on); `--tenant` must then be the key's tenant.
    #[arg(long, env = "TRACEWAY_API_KEY", hide_env_values = true)]
    api_key: Option<String>,
    /// PID of the server, to report its resident memory (peak and at the end).
    #[arg(long)]
    server_pid: Option<u32>,
    /// Give up after this many seconds.
    #[arg(long, default_value_t = 300)]
    timeout: u64,
    /// Print the summary as one JSON object.
    #[arg(long)]
    json: bool,
}

const SPANS_PER_TRACE: usize = 11;
const MAX_TRACES: usize = 1_000_000;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if args.traces == 0 || args.traces > MAX_TRACES {
        bail!("--traces must be 1 to {MAX_TRACES}");
    }
    if args.concurrency == 0 || args.concurrency > 1024 {
        bail!("--concurrency must be 1 to 1024");
    }
    if args.spans_per_request == 0 {
        bail!("--spans-per-request must be positive");
    }
    ensure_loopback(&args.http)?;
    ensure_loopback(&args.grpc)?;
    let tenant = args.tenant.clone().unwrap_or_else(|| {
        let ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis());
        format!("loadgen-{ms}")
    });

    eprintln!(
        "encoding {} traces ({} spans) into requests of {} spans ...",
        args.traces,
        args.traces * SPANS_PER_TRACE,
        args.spans_per_request
    );
    let (requests, sample_trace) = encode_requests(args.traces, args.spans_per_request);
    let total_spans = (args.traces * SPANS_PER_TRACE) as u64;
    let bytes: usize = requests.iter().map(|r| r.body.len()).sum();
    eprintln!(
        "{} requests, {:.1} MiB; sending over {:?} with concurrency {} as tenant {tenant}",
        requests.len(),
        bytes as f64 / (1 << 20) as f64,
        args.protocol,
        args.concurrency
    );

    let memory = args.server_pid.map(MemoryWatch::start);
    let deadline = Instant::now() + Duration::from_secs(args.timeout);
    let stats = Arc::new(Stats::default());
    let requests = Arc::new(requests);
    let next = Arc::new(AtomicUsize::new(0));

    let start = Instant::now();
    let mut workers = Vec::new();
    for _ in 0..args.concurrency {
        let sender = Sender::connect(&args, &tenant).await?;
        let (requests, next, stats) = (requests.clone(), next.clone(), stats.clone());
        workers.push(tokio::spawn(async move {
            sender.run(&requests, &next, &stats, deadline).await
        }));
    }
    for w in workers {
        w.await.context("worker panicked")??;
    }
    let accepted_after = start.elapsed();

    let client = reqwest::Client::builder()
        .default_headers(auth_headers(&args)?)
        .timeout(Duration::from_secs(30))
        .build()?;
    let (traces_seen, spans_seen) = wait_queryable(
        &client,
        &args.http,
        &tenant,
        args.traces as u64,
        total_spans,
        deadline,
    )
    .await?;
    let queryable_after = start.elapsed();
    check_sample(&client, &args.http, &tenant, sample_trace).await?;
    let memory = memory.map(MemoryWatch::stop);

    let accepted = stats.spans.load(Ordering::Relaxed);
    let rejected = stats.rejected.load(Ordering::Relaxed);
    let summary = json!({
        "protocol": format!("{:?}", args.protocol).to_lowercase(),
        "concurrency": args.concurrency,
        "traces": args.traces,
        "spans": total_spans,
        "spans_per_request": args.spans_per_request,
        "requests": requests.len(),
        "request_bytes": bytes,
        "retries": stats.retries.load(Ordering::Relaxed),
        "rejected_spans": rejected,
        "accepted_spans": accepted,
        "accepted_seconds": accepted_after.as_secs_f64(),
        "accepted_spans_per_second": accepted as f64 / accepted_after.as_secs_f64(),
        "queryable_traces": traces_seen,
        "queryable_spans": spans_seen,
        "queryable_seconds": queryable_after.as_secs_f64(),
        "queryable_spans_per_second": spans_seen as f64 / queryable_after.as_secs_f64(),
        "server_peak_rss_mib": memory.map(|m| m.peak_kib as f64 / 1024.0),
        "server_end_rss_mib": memory.map(|m| m.last_kib as f64 / 1024.0),
        "server_lifetime_hwm_mib": memory.map(|m| m.hwm_kib as f64 / 1024.0),
    });
    if args.json {
        println!("{summary}");
    } else {
        print_summary(&summary);
    }
    if rejected > 0 || accepted != total_spans {
        bail!("{rejected} spans rejected, {accepted} of {total_spans} accepted");
    }
    Ok(())
}

fn print_summary(s: &Value) {
    let f = |k: &str| s[k].as_f64().unwrap_or(0.0);
    println!(
        "protocol {}  concurrency {}  traces {}  spans {}  requests {} ({} spans each)",
        s["protocol"].as_str().unwrap_or(""),
        s["concurrency"],
        s["traces"],
        s["spans"],
        s["requests"],
        s["spans_per_request"]
    );
    println!(
        "accepted   {:>10.0} spans/s   ({} spans in {:.2} s, {} retries after 429/503, {} rejected)",
        f("accepted_spans_per_second"),
        s["accepted_spans"],
        f("accepted_seconds"),
        s["retries"],
        s["rejected_spans"]
    );
    println!(
        "queryable  {:>10.0} spans/s   ({} traces, {} spans readable after {:.2} s)",
        f("queryable_spans_per_second"),
        s["queryable_traces"],
        s["queryable_spans"],
        f("queryable_seconds")
    );
    if !s["server_peak_rss_mib"].is_null() {
        println!(
            "server RSS peak {:.0} MiB during the run, {:.0} MiB at the end (VmHWM over its life {:.0} MiB)",
            f("server_peak_rss_mib"),
            f("server_end_rss_mib"),
            f("server_lifetime_hwm_mib")
        );
    }
}

/// Refuses any target that is not this machine.
fn ensure_loopback(url: &str) -> anyhow::Result<()> {
    let rest = url
        .strip_prefix("http://")
        .with_context(|| format!("{url}: only http:// URLs (plaintext loopback)"))?;
    let authority = rest.split('/').next().unwrap_or("");
    let with_port = if authority.starts_with('[') || authority.matches(':').count() == 1 {
        authority.to_string()
    } else {
        format!("{authority}:80")
    };
    let addrs: Vec<IpAddr> = with_port
        .to_socket_addrs()
        .with_context(|| format!("{url}: cannot resolve {authority}"))?
        .map(|a| a.ip())
        .collect();
    if addrs.is_empty() || !addrs.iter().all(IpAddr::is_loopback) {
        bail!("{url}: the load generator only targets loopback addresses");
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Traces.
// ---------------------------------------------------------------------------------------

/// An encoded export request and how many spans it carries.
struct Encoded {
    body: Bytes,
    spans: u64,
}

fn kv(key: &str, value: any_value::Value) -> KeyValue {
    KeyValue {
        key: key.to_string(),
        value: Some(AnyValue { value: Some(value) }),
        ..Default::default()
    }
}

fn s(key: &str, v: impl Into<String>) -> KeyValue {
    kv(key, any_value::Value::StringValue(v.into()))
}

fn i(key: &str, v: i64) -> KeyValue {
    kv(key, any_value::Value::IntValue(v))
}

fn d(key: &str, v: f64) -> KeyValue {
    kv(key, any_value::Value::DoubleValue(v))
}

/// Deterministic filler text of about `len` bytes (a small xorshift over a word list).
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

/// One agent run: 11 spans, children first and the root last, as they end.
fn agent_trace(n: usize, seed: &mut u64) -> (TraceId, Vec<Span>) {
    let trace_id = TraceId::new_v7();
    let tid = trace_id.to_bytes().to_vec();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    let ms = 1_000_000u64;
    let root_id = SpanId::new_random();
    let mut spans = Vec::with_capacity(SPANS_PER_TRACE);
    let mut push = |id: SpanId,
                    parent: Option<SpanId>,
                    name: &str,
                    start_ms: u64,
                    dur_ms: u64,
                    attributes: Vec<KeyValue>| {
        spans.push(Span {
            trace_id: tid.clone(),
            span_id: id.to_bytes().to_vec(),
            parent_span_id: parent.map(|p| p.to_bytes().to_vec()).unwrap_or_default(),
            name: name.to_string(),
            kind: 1,
            start_time_unix_nano: now + start_ms * ms,
            end_time_unix_nano: now + (start_ms + dur_ms) * ms,
            attributes,
            status: Some(Status {
                code: status::StatusCode::Ok as i32,
                message: String::new(),
            }),
            ..Default::default()
        });
    };
    let session = format!("session-{}", n % 500);
    let user = format!("user-{}", n % 97);
    let chain = |name: &str| {
        vec![
            s("openinference.span.kind", "CHAIN"),
            s("session.id", session.clone()),
            s("input.value", format!("{name} step input")),
        ]
    };
    let llm = |seed: &mut u64, prompt_tokens: i64| {
        let input = text(seed, 500);
        let output = text(seed, 500);
        vec![
            s("openinference.span.kind", "LLM"),
            s("session.id", session.clone()),
            s("llm.model_name", "gpt-4o-mini"),
            s("llm.provider", "openai"),
            i("llm.token_count.prompt", prompt_tokens),
            i("llm.token_count.completion", 120),
            i("llm.token_count.total", prompt_tokens + 120),
            s("llm.input_messages.0.message.role", "system"),
            s(
                "llm.input_messages.0.message.content",
                "You are a support agent.",
            ),
            s("llm.input_messages.1.message.role", "user"),
            s("llm.input_messages.1.message.content", input.clone()),
            s("llm.output_messages.0.message.role", "assistant"),
            s("llm.output_messages.0.message.content", output.clone()),
            s("input.value", input),
            s("output.value", output),
        ]
    };
    let tool = |name: &str, args: Value, result: Value| {
        vec![
            s("openinference.span.kind", "TOOL"),
            s("session.id", session.clone()),
            s("tool.name", name),
            s("tool.parameters", args.to_string()),
            s("output.value", result.to_string()),
            s("output.mime_type", "application/json"),
        ]
    };

    let (plan, research, act, respond) = (
        SpanId::new_random(),
        SpanId::new_random(),
        SpanId::new_random(),
        SpanId::new_random(),
    );
    push(
        SpanId::new_random(),
        Some(plan),
        "ChatCompletion",
        2,
        900,
        llm(seed, 850),
    );
    push(plan, Some(root_id), "plan", 1, 950, chain("plan"));
    let mut retrieval = vec![
        s("openinference.span.kind", "RETRIEVER"),
        s("session.id", session.clone()),
        s("input.value", "refund policy for damaged items"),
    ];
    for k in 0..5 {
        retrieval.push(s(
            &format!("retrieval.documents.{k}.document.id"),
            format!("kb-{}#{k}", n % 300),
        ));
        retrieval.push(d(
            &format!("retrieval.documents.{k}.document.score"),
            0.9 - k as f64 * 0.1,
        ));
        retrieval.push(s(
            &format!("retrieval.documents.{k}.document.content"),
            text(seed, 200),
        ));
    }
    push(
        SpanId::new_random(),
        Some(research),
        "search_knowledge_base",
        960,
        120,
        retrieval,
    );
    push(
        SpanId::new_random(),
        Some(research),
        "ChatCompletion",
        1090,
        700,
        llm(seed, 1400),
    );
    push(
        research,
        Some(root_id),
        "research",
        955,
        840,
        chain("research"),
    );
    push(
        SpanId::new_random(),
        Some(act),
        "get_order",
        1800,
        80,
        tool(
            "get_order",
            json!({"order_id": n}),
            json!({"status": "delivered", "total": 59.9}),
        ),
    );
    push(
        SpanId::new_random(),
        Some(act),
        "issue_refund",
        1885,
        150,
        tool(
            "issue_refund",
            json!({"order_id": n, "amount": 59.9}),
            json!({"refund_id": format!("rf-{n}")}),
        ),
    );
    push(act, Some(root_id), "act", 1795, 245, chain("act"));
    push(
        SpanId::new_random(),
        Some(respond),
        "ChatCompletion",
        2045,
        800,
        llm(seed, 1900),
    );
    push(
        respond,
        Some(root_id),
        "respond",
        2040,
        810,
        chain("respond"),
    );
    push(
        root_id,
        None,
        "support_agent",
        0,
        2860,
        vec![
            s("openinference.span.kind", "AGENT"),
            s("agent.name", "support-agent"),
            s("session.id", session.clone()),
            s("user.id", user),
            s(
                "input.value",
                "My parcel arrived damaged, can I get a refund?",
            ),
            s("output.value", "Yes: the refund is on its way."),
        ],
    );
    (trace_id, spans)
}

fn export_request(spans: Vec<Span>) -> ExportTraceServiceRequest {
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource {
                attributes: vec![
                    s("service.name", "support-bot"),
                    s("telemetry.sdk.language", "python"),
                    s("telemetry.sdk.name", "opentelemetry"),
                ],
                ..Default::default()
            }),
            scope_spans: vec![ScopeSpans {
                scope: Some(InstrumentationScope {
                    name: "openinference.instrumentation.openai".into(),
                    version: "0.1.0".into(),
                    ..Default::default()
                }),
                spans,
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

/// All requests, encoded; and one trace id to check in full at the end.
fn encode_requests(traces: usize, per_request: usize) -> (Vec<Encoded>, TraceId) {
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    let mut out = Vec::new();
    let mut pending: Vec<Span> = Vec::with_capacity(per_request);
    let mut sample = None;
    for n in 0..traces {
        let (id, spans) = agent_trace(n, &mut seed);
        if n == traces / 2 {
            sample = Some(id);
        }
        for span in spans {
            pending.push(span);
            if pending.len() == per_request {
                let spans = std::mem::replace(&mut pending, Vec::with_capacity(per_request));
                out.push(encode(spans));
            }
        }
    }
    if !pending.is_empty() {
        out.push(encode(pending));
    }
    (out, sample.expect("at least one trace"))
}

fn encode(spans: Vec<Span>) -> Encoded {
    let n = spans.len() as u64;
    Encoded {
        body: Bytes::from(export_request(spans).encode_to_vec()),
        spans: n,
    }
}

// ---------------------------------------------------------------------------------------
// Sending.
// ---------------------------------------------------------------------------------------

#[derive(Default)]
struct Stats {
    spans: AtomicU64,
    rejected: AtomicU64,
    retries: AtomicU64,
}

enum Sender {
    Http {
        client: reqwest::Client,
        url: String,
        tenant: String,
    },
    Grpc {
        grpc: tonic::client::Grpc<tonic::transport::Channel>,
        tenant: tonic::metadata::MetadataValue<tonic::metadata::Ascii>,
        authorization: Option<tonic::metadata::MetadataValue<tonic::metadata::Ascii>>,
    },
}

/// `Authorization: Bearer <key>` when `--api-key` is given.
fn auth_headers(args: &Args) -> anyhow::Result<reqwest::header::HeaderMap> {
    let mut h = reqwest::header::HeaderMap::new();
    if let Some(k) = &args.api_key {
        h.insert(
            reqwest::header::AUTHORIZATION,
            format!("Bearer {k}").parse()?,
        );
    }
    Ok(h)
}

/// What one attempt got.
enum Outcome {
    /// Stored; this many spans rejected.
    Done(u64),
    /// Throttled (429/503, RESOURCE_EXHAUSTED, UNAVAILABLE): wait and send again.
    Retry(Duration),
}

impl Sender {
    async fn connect(args: &Args, tenant: &str) -> anyhow::Result<Sender> {
        Ok(match args.protocol {
            Protocol::Http => Sender::Http {
                client: reqwest::Client::builder()
                    .default_headers(auth_headers(args)?)
                    .timeout(Duration::from_secs(60))
                    .pool_max_idle_per_host(1)
                    .tcp_nodelay(true)
                    .build()?,
                url: format!("{}/v1/traces", args.http.trim_end_matches('/')),
                tenant: tenant.to_string(),
            },
            Protocol::Grpc => {
                let channel = tonic::transport::Endpoint::from_shared(args.grpc.clone())?
                    .connect_timeout(Duration::from_secs(5))
                    .tcp_nodelay(true)
                    .connect()
                    .await
                    .with_context(|| format!("cannot connect to {}", args.grpc))?;
                Sender::Grpc {
                    grpc: tonic::client::Grpc::new(channel)
                        .max_decoding_message_size(64 << 20)
                        .max_encoding_message_size(usize::MAX),
                    tenant: tenant.parse()?,
                    authorization: match &args.api_key {
                        Some(k) => Some(format!("Bearer {k}").parse()?),
                        None => None,
                    },
                }
            }
        })
    }

    async fn run(
        mut self,
        requests: &[Encoded],
        next: &AtomicUsize,
        stats: &Stats,
        deadline: Instant,
    ) -> anyhow::Result<()> {
        loop {
            let i = next.fetch_add(1, Ordering::Relaxed);
            let Some(req) = requests.get(i) else {
                return Ok(());
            };
            loop {
                if Instant::now() > deadline {
                    bail!("timed out while sending");
                }
                match self.send(req.body.clone()).await? {
                    Outcome::Done(rejected) => {
                        stats
                            .spans
                            .fetch_add(req.spans - rejected, Ordering::Relaxed);
                        stats.rejected.fetch_add(rejected, Ordering::Relaxed);
                        break;
                    }
                    Outcome::Retry(wait) => {
                        stats.retries.fetch_add(1, Ordering::Relaxed);
                        tokio::time::sleep(wait).await;
                    }
                }
            }
        }
    }

    async fn send(&mut self, body: Bytes) -> anyhow::Result<Outcome> {
        match self {
            Sender::Http {
                client,
                url,
                tenant,
            } => {
                let resp = client
                    .post(url.as_str())
                    .header("content-type", "application/x-protobuf")
                    .header("x-traceway-tenant", tenant.as_str())
                    .body(body)
                    .send()
                    .await
                    .context("OTLP/HTTP request")?;
                let status = resp.status().as_u16();
                let retry_after = resp
                    .headers()
                    .get("retry-after")
                    .and_then(|v| v.to_str().ok()?.parse::<u64>().ok())
                    .unwrap_or(1);
                let bytes = resp.bytes().await.context("OTLP/HTTP response")?;
                match status {
                    200 => {
                        let r = ExportTraceServiceResponse::decode(bytes)
                            .context("ExportTraceServiceResponse")?;
                        Ok(Outcome::Done(rejected(&r)))
                    }
                    429 | 503 => Ok(Outcome::Retry(Duration::from_millis(
                        retry_after.min(5) * 100,
                    ))),
                    other => bail!("OTLP/HTTP answered {other}"),
                }
            }
            Sender::Grpc {
                grpc,
                tenant,
                authorization,
            } => {
                grpc.ready().await.context("gRPC channel")?;
                let mut req = tonic::Request::new(body);
                req.metadata_mut()
                    .insert("x-traceway-tenant", tenant.clone());
                if let Some(a) = authorization {
                    req.metadata_mut().insert("authorization", a.clone());
                }
                let path = tonic::codegen::http::uri::PathAndQuery::from_static(
                    "/opentelemetry.proto.collector.trace.v1.TraceService/Export",
                );
                match grpc.unary(req, path, RawCodec).await {
                    Ok(r) => Ok(Outcome::Done(rejected(&r.into_inner()))),
                    Err(st)
                        if matches!(
                            st.code(),
                            tonic::Code::ResourceExhausted | tonic::Code::Unavailable
                        ) =>
                    {
                        Ok(Outcome::Retry(Duration::from_millis(100)))
                    }
                    Err(st) => bail!("OTLP/gRPC answered {:?}: {}", st.code(), st.message()),
                }
            }
        }
    }
}

fn rejected(r: &ExportTraceServiceResponse) -> u64 {
    r.partial_success
        .as_ref()
        .map_or(0, |p| u64::try_from(p.rejected_spans).unwrap_or(0))
}

/// Sends pre-encoded bytes as the request message and decodes the OTLP response.
#[derive(Clone, Copy)]
struct RawCodec;

struct RawEncoder;
struct ResponseDecoder;

impl tonic::codec::Codec for RawCodec {
    type Encode = Bytes;
    type Decode = ExportTraceServiceResponse;
    type Encoder = RawEncoder;
    type Decoder = ResponseDecoder;

    fn encoder(&mut self) -> RawEncoder {
        RawEncoder
    }

    fn decoder(&mut self) -> ResponseDecoder {
        ResponseDecoder
    }
}

impl tonic::codec::Encoder for RawEncoder {
    type Item = Bytes;
    type Error = tonic::Status;

    fn encode(
        &mut self,
        item: Bytes,
        dst: &mut tonic::codec::EncodeBuf<'_>,
    ) -> Result<(), tonic::Status> {
        dst.put(item);
        Ok(())
    }
}

impl tonic::codec::Decoder for ResponseDecoder {
    type Item = ExportTraceServiceResponse;
    type Error = tonic::Status;

    fn decode(
        &mut self,
        src: &mut tonic::codec::DecodeBuf<'_>,
    ) -> Result<Option<ExportTraceServiceResponse>, tonic::Status> {
        let bytes = src.copy_to_bytes(src.remaining());
        ExportTraceServiceResponse::decode(bytes)
            .map(Some)
            .map_err(|e| tonic::Status::internal(e.to_string()))
    }
}

// ---------------------------------------------------------------------------------------
// Reading back.
// ---------------------------------------------------------------------------------------

/// Polls the listing until every trace is there, ended, with all its spans counted.
/// Returns (traces, spans) seen.
async fn wait_queryable(
    client: &reqwest::Client,
    base: &str,
    tenant: &str,
    traces: u64,
    spans: u64,
    deadline: Instant,
) -> anyhow::Result<(u64, u64)> {
    loop {
        let (mut seen_traces, mut seen_spans) = (0u64, 0u64);
        let mut cursor: Option<String> = None;
        loop {
            let mut url = format!("{base}/api/v1/traces?state=COMPLETED&limit=1000");
            if let Some(c) = &cursor {
                url.push_str(&format!("&cursor={c}"));
            }
            let v: Value = client
                .get(&url)
                .header("x-traceway-tenant", tenant)
                .send()
                .await
                .context("list traces")?
                .error_for_status()?
                .json()
                .await?;
            for t in v["traces"].as_array().context("traces")? {
                seen_traces += 1;
                seen_spans += t["rollups"]["span_count"].as_u64().unwrap_or(0);
            }
            match v["next_cursor"].as_str() {
                Some(c) => cursor = Some(c.to_string()),
                None => break,
            }
        }
        if seen_traces >= traces && seen_spans >= spans {
            return Ok((seen_traces, seen_spans));
        }
        if Instant::now() > deadline {
            bail!(
                "timed out: {seen_traces}/{traces} traces and {seen_spans}/{spans} spans queryable"
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// One trace read back whole: 11 spans under one agent root, tokens and documents kept.
async fn check_sample(
    client: &reqwest::Client,
    base: &str,
    tenant: &str,
    id: TraceId,
) -> anyhow::Result<()> {
    let v: Value = client
        .get(format!("{base}/api/v1/traces/{id}"))
        .header("x-traceway-tenant", tenant)
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    let t = &v["trace"];
    let ok = t["state"] == "COMPLETED"
        && t["rollups"]["span_count"] == SPANS_PER_TRACE as u64
        && t["rollups"]["input_tokens"] == 850 + 1400 + 1900
        && v["spans"].as_array().map(Vec::len) == Some(1)
        && v["spans"][0]["kind"] == "agent";
    if !ok {
        bail!("trace {id} does not read back as sent: {t}");
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Server memory.
// ---------------------------------------------------------------------------------------

#[derive(Debug, Clone, Copy)]
struct Memory {
    /// The highest VmRSS sampled during the run.
    peak_kib: u64,
    /// VmRSS at the end.
    last_kib: u64,
    /// VmHWM: the peak over the server's whole life.
    hwm_kib: u64,
}

struct MemoryWatch {
    pid: u32,
    peak: Arc<AtomicU64>,
    stop: Arc<std::sync::atomic::AtomicBool>,
    thread: std::thread::JoinHandle<()>,
}

/// A field of /proc/PID/status in KiB (`VmRSS`, `VmHWM`).
fn proc_status_kib(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

impl MemoryWatch {
    /// Samples the server's RSS every 50 ms (its own VmHWM covers its whole life, so
    /// sampling shows the peak during this run).
    fn start(pid: u32) -> MemoryWatch {
        let peak = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (p, s) = (peak.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                if let Some(rss) = proc_status_kib(pid, "VmRSS") {
                    p.fetch_max(rss, Ordering::Relaxed);
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        });
        MemoryWatch {
            pid,
            peak,
            stop,
            thread,
        }
    }

    fn stop(self) -> Memory {
        self.stop.store(true, Ordering::Relaxed);
        let _ = self.thread.join();
        let last = proc_status_kib(self.pid, "VmRSS").unwrap_or(0);
        Memory {
            peak_kib: self.peak.load(Ordering::Relaxed).max(last),
            last_kib: last,
            hwm_kib: proc_status_kib(self.pid, "VmHWM").unwrap_or(0),
        }
    }
}
