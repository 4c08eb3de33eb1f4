//! Load tool for the workflow context API: PUT then GET of a context, from `--concurrency`
//! workers, `--contexts` in all. Prints the PUT+GET round-trip percentiles and contexts
//! stored per second. For measurements, run it against a release server on a quiet
//! machine:
//!
//! ```text
//! cargo run --release -p traceway-cli -- serve --data-dir /tmp/tw-bench &
//! cargo run --release -p traceway-workflowbench -- \
//!     --target http://127.0.0.1:4318 --contexts 100000 --concurrency 64
//! ```

use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;

#[derive(Parser, Debug)]
#[command(about = "PUT+GET load on /api/v1/workflows/{instance}/context")]
struct Args {
    /// The server.
    #[arg(long, default_value = "http://127.0.0.1:4318")]
    target: String,
    /// Contexts to store (each PUT then GET).
    #[arg(long, default_value_t = 10_000)]
    contexts: u64,
    /// Concurrent workers.
    #[arg(long, default_value_t = 32)]
    concurrency: u64,
    /// Tenant header.
    #[arg(long, default_value = "bench")]
    tenant: String,
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// This process's CPU time (user + system), from `/proc/self/stat` (Linux; ticks of
/// 1/100 s), so a run shows whether the load tool itself used up the machine.
fn cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the command name, which is in parentheses and may contain spaces.
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?;
    Some(ticks / 100.0)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    anyhow::ensure!(args.concurrency > 0, "--concurrency must be > 0");
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(args.concurrency as usize)
        .build()?;
    let base = Arc::new(args.target.trim_end_matches('/').to_string());
    let run = format!("{:x}", std::process::id());
    let started = Instant::now();
    let mut workers = Vec::new();
    for w in 0..args.concurrency {
        let (client, base, tenant, run) = (
            client.clone(),
            base.clone(),
            args.tenant.clone(),
            run.clone(),
        );
        let n = args.contexts / args.concurrency + u64::from(w < args.contexts % args.concurrency);
        workers.push(tokio::spawn(async move {
            let mut lat = Vec::with_capacity(n as usize);
            let mut puts = Duration::ZERO;
            for i in 0..n {
                let url = format!("{base}/api/v1/workflows/bench-{run}-{w}-{i}/context");
                let tp = format!(
                    "00-{:032x}-{:016x}-01",
                    (u128::from(w) << 64) | u128::from(i) | 1 << 127,
                    i + 1
                );
                let t0 = Instant::now();
                let r = client
                    .put(&url)
                    .header("x-traceway-tenant", &tenant)
                    .json(&serde_json::json!({"traceparent": tp, "agent": "bench"}))
                    .send()
                    .await?;
                anyhow::ensure!(r.status() == 200, "PUT answered {}", r.status());
                // Read to the end: a response dropped unread closes its connection, and
                // the next request would pay for a new one.
                let _ = r.bytes().await?;
                puts += t0.elapsed();
                let r = client
                    .get(&url)
                    .header("x-traceway-tenant", &tenant)
                    .send()
                    .await?;
                anyhow::ensure!(r.status() == 200, "GET answered {}", r.status());
                let _ = r.bytes().await?;
                lat.push(t0.elapsed());
            }
            Ok::<_, anyhow::Error>((lat, puts))
        }));
    }
    let mut lat = Vec::new();
    let mut put_time = Duration::ZERO;
    for w in workers {
        let (l, p) = w.await??;
        lat.extend(l);
        put_time += p;
    }
    let elapsed = started.elapsed();
    lat.sort();
    let n = lat.len();
    println!(
        "contexts={n} concurrency={} elapsed_s={:.3} put_get_p50_ms={:.3} put_get_p99_ms={:.3} put_get_max_ms={:.3} contexts_per_s={:.0} mean_put_ms={:.3} client_cpu_s={}",
        args.concurrency,
        elapsed.as_secs_f64(),
        percentile(&lat, 0.50).as_secs_f64() * 1e3,
        percentile(&lat, 0.99).as_secs_f64() * 1e3,
        lat.last().copied().unwrap_or_default().as_secs_f64() * 1e3,
        n as f64 / elapsed.as_secs_f64(),
        put_time.as_secs_f64() * 1e3 / n.max(1) as f64,
        cpu_seconds().map_or_else(|| "unknown".to_string(), |s| format!("{s:.2}")),
    );
    Ok(())
}
