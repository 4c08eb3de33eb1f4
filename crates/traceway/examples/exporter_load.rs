//! Load tool for the exporter (issue 13's benchmark).
//!
//! Keeping up: records spans at a target rate against a running server and reports
//! whether anything was dropped.
//!
//!     traceway serve --data-dir /tmp/tw-load &
//!     cargo run --release -p traceway --example exporter_load -- \
//!         --server http://127.0.0.1:4318 --rate 100000 --seconds 10
//!
//! Memory while the server is down: records at the rate against a closed port and prints
//! the process's resident memory every second.
//!
//!     cargo run --release -p traceway --example exporter_load -- --down --rate 100000 --seconds 30
//!
//! Spans come in traces of `--spans-per-trace` (default 100): an agent root and its
//! children, each with three attributes, the root ended last (the trace completes).
//! `--queue`, `--batch` and `--in-flight` set the tracer's queue capacity, batch size and
//! requests in flight (default: the tracer's defaults, 65,536, 2048 and 8).
//! Loopback only.

use std::time::{Duration, Instant};

use traceway::{SpanKind, Tracer};

struct Args {
    server: Option<String>,
    down: bool,
    rate: u64,
    seconds: u64,
    spans_per_trace: u64,
    queue: usize,
    batch: Option<usize>,
    in_flight: Option<usize>,
}

fn parse() -> Args {
    let mut a = Args {
        server: None,
        down: false,
        rate: 100_000,
        seconds: 10,
        spans_per_trace: 100,
        queue: 65_536,
        batch: None,
        in_flight: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut val = || it.next().unwrap_or_else(|| panic!("{flag} needs a value"));
        match flag.as_str() {
            "--server" => a.server = Some(val()),
            "--down" => a.down = true,
            "--rate" => a.rate = val().parse().expect("--rate N"),
            "--seconds" => a.seconds = val().parse().expect("--seconds N"),
            "--spans-per-trace" => a.spans_per_trace = val().parse().expect("--spans-per-trace N"),
            "--queue" => a.queue = val().parse().expect("--queue N"),
            "--batch" => a.batch = Some(val().parse().expect("--batch N")),
            "--in-flight" => a.in_flight = Some(val().parse().expect("--in-flight N")),
            other => panic!("unknown flag {other}"),
        }
    }
    a
}

fn rss_kib() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    s.lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

fn main() {
    let args = parse();
    let url = if args.down {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        format!("http://127.0.0.1:{port}")
    } else {
        args.server.clone().expect("--server URL, or --down")
    };
    assert!(
        url.starts_with("http://127.0.0.1")
            || url.starts_with("http://[::1]")
            || url.starts_with("http://localhost"),
        "loopback only"
    );
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let tracer = {
        let _g = rt.enter();
        let mut b = Tracer::builder()
            .endpoint(&url)
            .service("exporter-load")
            .queue_capacity(args.queue);
        if let Some(n) = args.batch {
            b = b.batch_size(n);
        }
        if let Some(n) = args.in_flight {
            b = b.max_in_flight(n);
        }
        b.build().unwrap()
    };
    let total = args.rate * args.seconds;
    let start = Instant::now();
    let mut recorded = 0u64;
    let mut next_report = 1;
    println!("second  recorded  queued  exported  dropped_full  dropped_failed  rss_kib");
    while recorded < total {
        // Pace: record what the rate allows by now, one trace at a time.
        let due = (start.elapsed().as_secs_f64() * args.rate as f64) as u64;
        if recorded >= due.min(total) {
            std::thread::sleep(Duration::from_micros(200));
        } else {
            let root = tracer.agent("load-run").start();
            let ctx = root.context();
            for i in 1..args.spans_per_trace {
                let mut s = tracer.span(SpanKind::Tool, "step").parent(&ctx).start();
                s.set_attribute("step", i as i64);
                s.set_attribute("tool", "lookup");
                s.set_attribute("ok", true);
                s.end();
            }
            root.end();
            recorded += args.spans_per_trace;
        }
        if start.elapsed() >= Duration::from_secs(next_report) {
            let m = tracer.metrics();
            println!(
                "{next_report:>6}  {recorded:>8}  {:>6}  {:>8}  {:>12}  {:>14}  {:>7}",
                m.queued,
                m.exported,
                m.dropped_queue_full,
                m.dropped_export_failed,
                rss_kib().unwrap_or(0)
            );
            next_report += 1;
        }
    }
    let record_secs = start.elapsed().as_secs_f64();
    let flushed = rt.block_on(tracer.shutdown(Duration::from_secs(if args.down { 5 } else { 60 })));
    let m = tracer.metrics();
    println!(
        "recorded {recorded} spans ({} records) in {record_secs:.2}s = {:.0} spans/s; flushed in time: {flushed}",
        recorded * 2,
        recorded as f64 / record_secs
    );
    println!(
        "exported {} records, dropped {} (queue full) + {} (export failed), {} retries, {} requests; rss {} KiB",
        m.exported,
        m.dropped_queue_full,
        m.dropped_export_failed,
        m.retries,
        m.requests,
        rss_kib().unwrap_or(0)
    );
    if !args.down && (m.dropped_queue_full > 0 || m.dropped_export_failed > 0) {
        std::process::exit(1);
    }
}
