//! `traceway-loadgen`: sends realistic agent traces to a Traceway server over OTLP/HTTP
//! (protobuf) or OTLP/gRPC and reports how fast they were accepted and how fast they
//! became queryable.
//!
//! Each trace is one agent run of 11 spans with OpenInference attributes: an agent root,
//! four component (chain) spans, three LLM calls with ~500-byte inputs and outputs and
//! token counts, two tool calls, and a retrieval of five documents. Spans are batched into
//! export requests of `--spans-per-request` spans, children before their root, as an OTel
//! batch span processor exports them; a trace may straddle two requests. Every request is
//! encoded before the clock starts, so the generator's own work is sending bytes. With
//! `--same-trace`, every run's spans carry one trace id, so the concurrent requests all
//! append to one trace (the contention case of issue 17).
//!
//! Loopback only: the target must be 127.0.0.0/8, ::1 or localhost. Bounded: at most
//! `--traces` traces, and the run stops after `--timeout`.
//!
//! ```text
//! traceway-loadgen --protocol http --concurrency 8 --traces 20000 --server-pid $(pgrep -n traceway)
//! ```

use std::net::{IpAddr, ToSocketAddrs};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::{Parser, ValueEnum};
use serde_json::{json, Value};

mod memory;
mod readback;
mod send;
mod traces;

use memory::*;
use readback::*;
use send::*;
use traces::*;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Protocol {
    /// OTLP/HTTP with protobuf bodies, `POST /v1/traces`.
    Http,
    /// OTLP/gRPC, `TraceService/Export`.
    Grpc,
}

#[derive(Parser)]
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
    /// PID of the server, to report its resident memory (peak and at the end).
    #[arg(long)]
    server_pid: Option<u32>,
    /// Give up after this many seconds.
    #[arg(long, default_value_t = 300)]
    timeout: u64,
    /// Send every agent run into one trace (its spans all carry one trace id), so that
    /// the concurrent requests all append to the same trace; at most 9,090 runs (a trace
    /// holds at most 100,000 spans).
    #[arg(long)]
    same_trace: bool,
    /// Print the summary as one JSON object.
    #[arg(long)]
    json: bool,
    /// API key (`twk_….tws_…`) for a server with auth on, sent as `Authorization: Bearer`
    /// on OTLP/HTTP, OTLP/gRPC and the read-back; it needs the ingest and read scopes.
    /// The server then uses the key's tenant, not --tenant, so give the key a tenant of its
    /// own for exact counts.
    #[arg(long, env = "TRACEWAY_API_KEY", hide_env_values = true)]
    api_key: Option<String>,
}

const SPANS_PER_TRACE: usize = 11;

/// `Authorization: Bearer <key>` (marked sensitive) when a key is given, for every HTTP
/// request of the run.
fn auth_headers(api_key: Option<&str>) -> anyhow::Result<reqwest::header::HeaderMap> {
    let mut headers = reqwest::header::HeaderMap::new();
    if let Some(key) = api_key {
        let mut v = reqwest::header::HeaderValue::from_str(&format!("Bearer {}", key.trim()))
            .context("--api-key is not a valid header value")?;
        v.set_sensitive(true);
        headers.insert(reqwest::header::AUTHORIZATION, v);
    }
    Ok(headers)
}
const MAX_TRACES: usize = 1_000_000;
/// The store's bound on one trace (`traceway_store::MAX_SPANS_PER_TRACE`).
const MAX_SPANS_PER_TRACE: usize = 100_000;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if args.traces == 0 || args.traces > MAX_TRACES {
        bail!("--traces must be 1 to {MAX_TRACES}");
    }
    if args.concurrency == 0 || args.concurrency > 1024 {
        bail!("--concurrency must be 1 to 1024");
    }
    if args.same_trace && args.traces * SPANS_PER_TRACE > MAX_SPANS_PER_TRACE {
        bail!(
            "--same-trace takes at most {} traces ({MAX_SPANS_PER_TRACE} spans in one trace)",
            MAX_SPANS_PER_TRACE / SPANS_PER_TRACE
        );
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
    let (requests, sample_trace) =
        encode_requests(args.traces, args.spans_per_request, args.same_trace);
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
        .timeout(Duration::from_secs(30))
        .default_headers(auth_headers(args.api_key.as_deref())?)
        .build()?;
    let traces_sent = if args.same_trace { 1 } else { args.traces };
    let (traces_seen, spans_seen) = wait_queryable(
        &client,
        &args.http,
        &tenant,
        traces_sent as u64,
        total_spans,
        deadline,
    )
    .await?;
    let queryable_after = start.elapsed();
    if !args.same_trace {
        check_sample(&client, &args.http, &tenant, sample_trace).await?;
    }
    let memory = memory.map(MemoryWatch::stop);

    let accepted = stats.spans.load(Ordering::Relaxed);
    let rejected = stats.rejected.load(Ordering::Relaxed);
    let summary = json!({
        "protocol": format!("{:?}", args.protocol).to_lowercase(),
        "concurrency": args.concurrency,
        "traces": args.traces,
        "same_trace": args.same_trace,
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
