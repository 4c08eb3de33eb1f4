//! Live-streaming benchmark: latency from ingest to SSE delivery with many subscribers.
//!
//! Starts the real `traceway` binary on loopback (temporary data dir), creates one trace
//! per subscriber, opens one SSE stream per trace, then ingests log events at a fixed rate
//! spread over the traces through the native API. Each event carries its send time, so a
//! subscriber measures send → receive (which includes the commit; publish → receive is at
//! most that). Also reports the server's memory per idle subscriber.
//!
//! ```text
//! cargo run --release -p traceway-streambench -- [--subscribers 1000] [--rate 10000]
//!     [--seconds 10] [--batch 10] [--server-bin target/release/traceway]
//! ```

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use eventsource_stream::Eventsource as _;
use futures::StreamExt as _;
use serde_json::{json, Value};

struct Args {
    subscribers: usize,
    rate: u64,
    seconds: u64,
    batch: u64,
    server_bin: std::path::PathBuf,
}

fn parse_args() -> anyhow::Result<Args> {
    let sibling = std::env::current_exe()?.with_file_name("traceway");
    let mut a = Args {
        subscribers: 1000,
        rate: 10_000,
        seconds: 10,
        batch: 10,
        server_bin: sibling,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let val = it
            .next()
            .ok_or_else(|| anyhow::anyhow!("{flag} needs a value"))?;
        match flag.as_str() {
            "--subscribers" => a.subscribers = val.parse()?,
            "--rate" => a.rate = val.parse()?,
            "--seconds" => a.seconds = val.parse()?,
            "--batch" => a.batch = val.parse()?,
            "--server-bin" => a.server_bin = val.into(),
            other => anyhow::bail!("unknown argument {other}"),
        }
    }
    anyhow::ensure!(
        a.subscribers > 0 && a.rate > 0 && a.batch > 0,
        "values must be positive"
    );
    Ok(a)
}

fn unix_nanos() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

fn percentile(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize] as f64 / 1e6
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = parse_args()?;
    let dir = tempfile::tempdir()?;
    let mut server = Command::new(&args.server_bin)
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--log",
            "warn",
            "--data-dir",
        ])
        .arg(dir.path())
        .stdout(Stdio::piped())
        .spawn()
        .map_err(|e| anyhow::anyhow!("cannot start {}: {e}", args.server_bin.display()))?;
    let pid = server.id();
    let mut lines = BufReader::new(
        server
            .stdout
            .take()
            .ok_or_else(|| anyhow::anyhow!("no stdout"))?,
    )
    .lines();
    let base = loop {
        let line = lines
            .next()
            .ok_or_else(|| anyhow::anyhow!("server exited"))??;
        if let Some(url) = line.strip_prefix("traceway listening on ") {
            break url.to_string();
        }
    };
    let result = run(&args, &base, pid).await;
    let _ = server.kill();
    let _ = server.wait();
    result
}

async fn run(args: &Args, base: &str, pid: u32) -> anyhow::Result<()> {
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(64)
        .build()?;
    let mut traces = Vec::with_capacity(args.subscribers);
    for i in 0..args.subscribers {
        let r = http
            .post(format!("{base}/api/v1/traces"))
            .json(&json!({"name": format!("run {i}")}))
            .send()
            .await?;
        anyhow::ensure!(r.status() == 201, "create failed: {}", r.status());
        let v: Value = r.json().await?;
        traces.push(v["trace_id"].as_str().unwrap_or_default().to_string());
    }
    let rss_before = rss_kib(pid);

    let latencies: Arc<Mutex<Vec<u64>>> = Arc::default();
    let received = Arc::new(AtomicU64::new(0));
    let lagged = Arc::new(AtomicU64::new(0));
    let stream_client = reqwest::Client::builder().build()?;
    let mut subscribers = Vec::new();
    for id in &traces {
        let resp = stream_client
            .get(format!("{base}/api/v1/traces/{id}/stream"))
            .send()
            .await?;
        anyhow::ensure!(resp.status() == 200, "stream failed: {}", resp.status());
        let (latencies, received, lagged) = (latencies.clone(), received.clone(), lagged.clone());
        subscribers.push(tokio::spawn(async move {
            let events = resp.bytes_stream().eventsource();
            let mut events = std::pin::pin!(events);
            while let Some(Ok(m)) = events.next().await {
                let now = unix_nanos();
                if m.event == "lagged" {
                    lagged.fetch_add(1, Ordering::Relaxed);
                }
                if m.event != "log" {
                    continue;
                }
                let Ok(v) = serde_json::from_str::<Value>(&m.data) else {
                    continue;
                };
                if let Some(sent) = v["payload"]["message"]
                    .as_str()
                    .and_then(|s| s.parse::<u64>().ok())
                {
                    latencies
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .push(now.saturating_sub(sent));
                    received.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
    }
    // Let the connections settle, then measure the server's memory with idle subscribers.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let rss_idle = rss_kib(pid);
    let per_sub = (rss_idle.saturating_sub(rss_before)) as f64 * 1024.0 / args.subscribers as f64;
    println!(
        "streams: {} idle subscribers: server RSS {} KiB → {} KiB = {:.1} KiB per subscriber",
        args.subscribers,
        rss_before,
        rss_idle,
        per_sub / 1024.0
    );

    // Ingest at the fixed rate, batches spread round-robin over the traces.
    let batches_per_sec = (args.rate / args.batch).max(1);
    let mut tick = tokio::time::interval(Duration::from_nanos(1_000_000_000 / batches_per_sec));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let total_batches = batches_per_sec * args.seconds;
    let sent = Arc::new(AtomicU64::new(0));
    let inflight = Arc::new(tokio::sync::Semaphore::new(64));
    let started = Instant::now();
    let mut max_rss = rss_idle;
    for b in 0..total_batches {
        tick.tick().await;
        let id = traces[(b as usize) % traces.len()].clone();
        let permit = inflight.clone().acquire_owned().await?;
        let (http, base, sent, batch) = (http.clone(), base.to_string(), sent.clone(), args.batch);
        tokio::spawn(async move {
            let now = unix_nanos().to_string();
            let events: Vec<Value> = (0..batch)
                .map(|_| json!({"type": "log", "message": now}))
                .collect();
            if let Ok(r) = http
                .post(format!("{base}/api/v1/traces/{id}/events"))
                .json(&json!({"events": events}))
                .send()
                .await
            {
                if r.status().is_success() {
                    sent.fetch_add(batch, Ordering::Relaxed);
                }
            }
            drop(permit);
        });
        if b % batches_per_sec == 0 {
            max_rss = max_rss.max(rss_kib(pid));
        }
    }
    let _ = inflight.acquire_many(64).await?;
    let ingest_secs = started.elapsed().as_secs_f64();
    // Wait for the deliveries to drain (bounded).
    let want = sent.load(Ordering::Relaxed);
    let deadline = Instant::now() + Duration::from_secs(30);
    while received.load(Ordering::Relaxed) < want && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for s in &subscribers {
        s.abort();
    }
    for s in subscribers {
        let _ = s.await;
    }
    let mut lat = std::mem::take(&mut *latencies.lock().unwrap_or_else(|e| e.into_inner()));
    lat.sort_unstable();
    println!(
        "streams: ingested {} events in {:.1} s = {:.0} events/s over {} traces; delivered {} ({} lagged streams)",
        want,
        ingest_secs,
        want as f64 / ingest_secs,
        args.subscribers,
        received.load(Ordering::Relaxed),
        lagged.load(Ordering::Relaxed)
    );
    println!(
        "streams: send → receive latency over {} samples: p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms; server peak RSS {} KiB",
        lat.len(),
        percentile(&lat, 0.5),
        percentile(&lat, 0.99),
        lat.last().copied().unwrap_or(0) as f64 / 1e6,
        max_rss
    );
    Ok(())
}
