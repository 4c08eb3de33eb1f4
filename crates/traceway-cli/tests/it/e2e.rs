//! The real `traceway` binary on port 0 with a temporary data directory.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

const BIN: &str = env!("CARGO_BIN_EXE_traceway");

/// A running server; killed when dropped.
pub struct Server {
    child: Child,
    /// `http://127.0.0.1:PORT` of the REST API and OTLP/HTTP.
    pub url: String,
    /// `http://127.0.0.1:PORT` of OTLP/gRPC.
    pub grpc_url: String,
}

impl Server {
    /// The server's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn start(data_dir: &Path) -> Server {
        Server::start_with(data_dir, &[])
    }

    /// On a given HTTP address (to restart on the same port).
    pub fn start_on(data_dir: &Path, listen: &str) -> Server {
        Server::start_with(data_dir, &["--listen", listen])
    }

    pub fn start_with(data_dir: &Path, args: &[&str]) -> Server {
        let listen: &[&str] = if args.contains(&"--listen") {
            &[]
        } else {
            &["--listen", "127.0.0.1:0"]
        };
        let mut child = Command::new(BIN)
            .args([
                "serve",
                "--grpc-listen",
                "127.0.0.1:0",
                "--stream-grace",
                "300ms",
            ])
            .args(listen)
            .args(args)
            .arg("--data-dir")
            .arg(data_dir)
            .env("TRACEWAY_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn traceway");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut grpc = None;
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(url) = line.strip_prefix("traceway otlp grpc on ") {
                    grpc = Some(url.to_string());
                }
                if let Some(url) = line.strip_prefix("traceway listening on ") {
                    let _ = tx.send((url.to_string(), grpc.take()));
                }
            }
        });
        let (url, grpc) = rx
            .recv_timeout(Duration::from_secs(30))
            .expect("server did not start in 30 s");
        let grpc_url = grpc.expect("the gRPC line comes before the HTTP line");
        Server {
            child,
            url,
            grpc_url,
        }
    }

    fn signal(&mut self, sig: &str) {
        let status = Command::new("kill")
            .args([sig, &self.child.id().to_string()])
            .status()
            .expect("kill");
        assert!(status.success());
    }

    /// SIGTERM, and wait for a clean exit.
    pub fn stop(mut self) {
        self.signal("-TERM");
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                assert!(status.success(), "exit status {status}");
                return;
            }
            assert!(
                Instant::now() < deadline,
                "server did not stop within 20 s of SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn kill9(mut self) {
        self.signal("-KILL");
        let _ = self.child.wait();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub(crate) fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("client")
}

pub(crate) fn example(name: &str) -> Value {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../examples/walkthrough")
        .join(name);
    serde_json::from_str(&std::fs::read_to_string(path).expect("example")).expect("json")
}

pub(crate) async fn post(c: &reqwest::Client, url: String, body: &Value) -> (u16, Value) {
    let r = c.post(url).json(body).send().await.expect("send");
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

pub(crate) async fn get(c: &reqwest::Client, url: String) -> (u16, Value) {
    let r = c.get(url).send().await.expect("send");
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

fn cli(server: &Server, args: &[&str]) -> (bool, String, String) {
    let out = Command::new(BIN)
        .args(args)
        .args(["--server", &server.url])
        .output()
        .expect("run cli");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into(),
        String::from_utf8_lossy(&out.stderr).into(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readme_walkthrough_against_the_real_binary() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(dir.path());
    let c = client();
    let base = &server.url;

    let (status, trace) = post(&c, format!("{base}/api/v1/traces"), &example("trace.json")).await;
    assert_eq!(status, 201, "{trace}");
    let id = trace["trace_id"].as_str().expect("id").to_string();
    let (status, v) = post(
        &c,
        format!("{base}/api/v1/traces/{id}/events"),
        &example("steps.json"),
    )
    .await;
    assert_eq!(status, 200, "{v}");
    let r = c
        .patch(format!("{base}/api/v1/traces/{id}"))
        .json(&json!({"state": "COMPLETED"}))
        .send()
        .await
        .expect("patch");
    assert_eq!(r.status().as_u16(), 200);

    let (status, v) = get(&c, format!("{base}/api/v1/traces/{id}")).await;
    assert_eq!(status, 200);
    assert_eq!(v["trace"]["state"], "COMPLETED");
    assert_eq!(v["trace"]["rollups"]["total_tokens"], 470);
    assert_eq!(
        v["spans"][0]["children"]
            .as_array()
            .expect("children")
            .len(),
        4
    );

    let (ok, out, err) = cli(&server, &["ls"]);
    assert!(ok, "{err}");
    assert!(out.starts_with("TRACE ID"), "{out}");
    assert!(
        out.contains(&id)
            && out.contains("COMPLETED")
            && out.contains("support-agent")
            && out.contains("470"),
        "{out}"
    );
    let (ok, out, err) = cli(&server, &["show", &id]);
    assert!(ok, "{err}");
    for needle in [
        "refund question",
        "agent support-agent  1.50s  ok",
        "  llm answer model=gpt-4o-mini tokens=470  1.20s  ok",
        "  tool get_order tool=get_order  80ms  ok",
        "  retriever search_policies docs=3  150ms  ok",
    ] {
        assert!(out.contains(needle), "show lacks {needle:?}:\n{out}");
    }
    let (ok, out, err) = cli(&server, &["analyze", &id]);
    assert!(ok, "{err}");
    for needle in [
        "critical path",
        "█",
        "llm answer model=gpt-4o-mini",
        "cost by model",
    ] {
        assert!(out.contains(needle), "analyze lacks {needle:?}:\n{out}");
    }
    let (ok, out, err) = cli(&server, &["show", &id, "--format", "compact"]);
    assert!(ok, "{err}");
    assert!(
        out.contains("  llm answer model=gpt-4o-mini tokens=470 1.20s ok"),
        "{out}"
    );
    let (ok, out, err) = cli(&server, &["stats", "--since", "100000d"]);
    assert!(ok, "{err}");
    assert!(out.starts_with("1 traces, error rate 0.0%"), "{out}");
    let (ok, out, _) = cli(&server, &["ls", "--json"]);
    assert!(ok);
    let v: Value = serde_json::from_str(&out).expect("ls --json is JSON");
    assert_eq!(v["traces"][0]["trace_id"], id.as_str());

    let (ok, out, _) = cli(&server, &["rm", &id]);
    assert!(ok && out.contains(&id), "{out}");
    let (status, _) = get(&c, format!("{base}/api/v1/traces/{id}")).await;
    assert_eq!(status, 404);
    let (ok, _, err) = cli(&server, &["show", &id]);
    assert!(!ok, "show of a deleted trace fails");
    assert!(
        err.starts_with("error: 404") && err.contains("not found") && err.lines().count() == 1,
        "{err}"
    );
    server.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn everything_is_there_after_a_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let c = client();
    let server = Server::start(dir.path());
    let mut ids = Vec::new();
    for i in 0..20 {
        let (_, t) = post(
            &c,
            format!("{}/api/v1/traces", server.url),
            &json!({"name": format!("run {i}")}),
        )
        .await;
        let id = t["trace_id"].as_str().expect("id").to_string();
        post(
            &c,
            format!("{}/api/v1/traces/{id}/events", server.url),
            &example("steps.json"),
        )
        .await;
        ids.push(id);
    }
    let (_, before) = get(&c, format!("{}/api/v1/traces?limit=100", server.url)).await;
    server.stop();

    let server = Server::start(dir.path());
    let (_, after) = get(&c, format!("{}/api/v1/traces?limit=100", server.url)).await;
    assert_eq!(after, before, "the listing is identical after a restart");
    for id in &ids {
        let (status, v) = get(
            &c,
            format!("{}/api/v1/traces/{id}/events?limit=100", server.url),
        )
        .await;
        assert_eq!(status, 200);
        assert_eq!(v["events"].as_array().expect("events").len(), 9, "{id}");
    }
    server.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_acknowledged_event_survives_kill_9() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(dir.path());
    let c = client();
    let (_, t) = post(
        &c,
        format!("{}/api/v1/traces", server.url),
        &json!({"name": "crash"}),
    )
    .await;
    let id = t["trace_id"].as_str().expect("id").to_string();

    // Writers append batches until the server dies under them; each remembers the span
    // ids whose batch was acknowledged.
    let acked: Arc<Mutex<Vec<u64>>> = Arc::default();
    let url = format!("{}/api/v1/traces/{id}/events", server.url);
    let mut writers = Vec::new();
    for w in 0..4u64 {
        let (c, url, acked) = (c.clone(), url.clone(), acked.clone());
        writers.push(tokio::spawn(async move {
            for b in 0..10_000u64 {
                let base = (w << 32) | (b * 10 + 1);
                let events: Vec<Value> = (0..10)
                    .map(|i| json!({"type": "span_ended", "span": {"span_id": format!("{:016x}", base + i), "kind": "tool", "name": "t"}}))
                    .collect();
                match c.post(&url).json(&json!({"events": events})).send().await {
                    Ok(r) if r.status().is_success() => acked.lock().expect("lock").extend((0..10).map(|i| base + i)),
                    _ => return,
                }
            }
        }));
    }
    // Let a few hundred batches through, then kill without warning.
    let acked = kill9_once_acknowledged(server, &acked, 3_000, writers).await;

    let server = Server::start(dir.path());
    let (status, v) = get(&c, format!("{}/api/v1/traces/{id}", server.url)).await;
    assert_eq!(status, 200);
    let stored: std::collections::HashSet<u64> = v["spans"]
        .as_array()
        .expect("spans")
        .iter()
        .map(|s| u64::from_str_radix(s["span_id"].as_str().expect("id"), 16).expect("hex"))
        .collect();
    let missing: Vec<_> = acked.iter().filter(|s| !stored.contains(s)).collect();
    assert!(
        missing.is_empty(),
        "{} acknowledged spans lost, e.g. {:x?}",
        missing.len(),
        &missing[..missing.len().min(5)]
    );
    // The event log has no gap either.
    let (_, ev) = get(
        &c,
        format!(
            "{}/api/v1/traces/{id}/events?limit=10000&type=span_ended",
            server.url
        ),
    )
    .await;
    assert_eq!(ev["events"].as_array().expect("events").len(), stored.len());
    let last_seq = v["trace"]["last_seq"].as_u64().expect("last_seq");
    let (_, all) = get(
        &c,
        format!("{}/api/v1/traces/{id}/events?limit=10000", server.url),
    )
    .await;
    let seqs: Vec<u64> = all["events"]
        .as_array()
        .expect("events")
        .iter()
        .map(|e| e["seq"].as_u64().expect("seq"))
        .collect();
    assert_eq!(seqs, (1..=last_seq.min(10_000)).collect::<Vec<_>>());
    server.stop();
}

/// A lone PUT is answered by the writer thread itself (ADR 002), two at once through the
/// reply thread; either way the answer comes only after the commit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_acknowledged_workflow_context_survives_kill_9() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(dir.path());
    let c = client();
    let traceparent = |w: u64, i: u64| {
        format!(
            "00-{:032x}-{:016x}-01",
            (u128::from(w) << 64) | u128::from(i + 1),
            i + 1
        )
    };
    let acked: Arc<Mutex<Vec<(u64, u64)>>> = Arc::default();
    let mut writers = Vec::new();
    for w in 1..=2u64 {
        let (c, base, acked) = (c.clone(), server.url.clone(), acked.clone());
        writers.push(tokio::spawn(async move {
            for i in 0..100_000u64 {
                let url = format!("{base}/api/v1/workflows/crash-{w}-{i}/context");
                let body = json!({"traceparent": traceparent(w, i)});
                match c.put(&url).json(&body).send().await {
                    Ok(r) if r.status().is_success() => acked.lock().expect("lock").push((w, i)),
                    _ => return,
                }
            }
        }));
    }
    let acked = kill9_once_acknowledged(server, &acked, 2_000, writers).await;

    let server = Server::start(dir.path());
    let mut lost = Vec::new();
    for &(w, i) in &acked {
        let (status, v) = get(
            &c,
            format!("{}/api/v1/workflows/crash-{w}-{i}/context", server.url),
        )
        .await;
        if status != 200 || v["traceparent"] != json!(traceparent(w, i)) {
            lost.push((w, i, status));
        }
    }
    assert!(
        lost.is_empty(),
        "{} of {} acknowledged contexts lost, e.g. {:?}",
        lost.len(),
        acked.len(),
        &lost[..lost.len().min(5)]
    );
    server.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tail_shows_running_and_ended_steps_and_resumes_after_a_server_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(dir.path());
    let c = client();
    let base = server.url.clone();
    let (_, t) = post(
        &c,
        format!("{base}/api/v1/traces"),
        &json!({"name": "tailed"}),
    )
    .await;
    let id = t["trace_id"].as_str().expect("id").to_string();
    let mut tail = Command::new(BIN)
        .args(["tail", &id, "--server", &base])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn tail");
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    let stdout = tail.stdout.take().expect("stdout");
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let lines = Arc::new(Mutex::new(Vec::<String>::new()));
    let wait_for = |needle: &str| {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(l) = lines
                .lock()
                .expect("lock")
                .iter()
                .find(|l| l.contains(needle))
            {
                return l.clone();
            }
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left.min(Duration::from_millis(200))) {
                Ok(l) => lines.lock().expect("lock").push(l),
                Err(_) => assert!(
                    Instant::now() < deadline,
                    "tail never printed {needle:?}: {:?}",
                    lines.lock().expect("lock")
                ),
            }
        }
    };
    let events = |v: Value| json!({"events": v});
    post(&c, format!("{base}/api/v1/traces/{id}/events"), &events(json!([
        {"type": "span_started", "span": {"span_id": "00000000000000a1", "kind": "agent", "name": "support-agent"}}
    ]))).await;
    let running = wait_for("agent support-agent");
    assert!(running.ends_with("running"), "{running:?}");
    assert!(
        !running.contains('\x1b'),
        "plain output when stdout is not a terminal: {running:?}"
    );

    // Restart the server on the same port: tail reconnects with Last-Event-ID.
    let addr = base.trim_start_matches("http://").to_string();
    server.stop();
    let server = Server::start_on(dir.path(), &addr);
    post(&c, format!("{base}/api/v1/traces/{id}/events"), &events(json!([
        {"type": "span_ended", "span": {"span_id": "00000000000000b2", "parent_span_id": "00000000000000a1", "kind": "llm", "name": "chat",
         "start_time": "2026-01-01T00:00:00Z", "end_time": "2026-01-01T00:00:00.250Z", "status": {"code": "ok"},
         "llm": {"model": "gpt-4o-mini", "input_tokens": 40, "output_tokens": 2}}},
        {"type": "span_ended", "span": {"span_id": "00000000000000a1", "status": {"code": "ok"}}}
    ]))).await;
    let child = wait_for("llm chat");
    assert!(
        child.starts_with("  llm chat model=gpt-4o-mini tokens=42")
            && child.contains("250ms")
            && child.ends_with("ok"),
        "{child:?}"
    );
    let r = c
        .patch(format!("{base}/api/v1/traces/{id}"))
        .json(&json!({"state": "COMPLETED"}))
        .send()
        .await
        .expect("patch");
    assert_eq!(r.status().as_u16(), 200);
    wait_for("trace ended COMPLETED");
    assert!(exit_of(&mut tail, "tail did not exit after the trace ended").success());
    while let Ok(l) = rx.try_recv() {
        lines.lock().expect("lock").push(l);
    }
    let all = lines.lock().expect("lock").clone();
    let count = |needle: &str| all.iter().filter(|l| l.contains(needle)).count();
    assert_eq!(
        count("agent support-agent"),
        2,
        "started once, ended once, nothing replayed twice: {all:?}"
    );
    assert_eq!(count("trace started"), 1, "{all:?}");
    server.stop();
}

/// `/metrics` of a server as `name{labels}` → value.
pub(crate) async fn metrics(
    c: &reqwest::Client,
    server: &Server,
) -> std::collections::BTreeMap<String, f64> {
    let text = c
        .get(format!("{}/metrics", server.url))
        .send()
        .await
        .expect("scrape")
        .text()
        .await
        .expect("text");
    crate::prom::parse_metrics(&text)
}

/// Polls `f` until it holds; `within` is a generous deadline against a hang.
pub(crate) async fn wait_for(what: &str, within: Duration, mut f: impl AsyncFnMut() -> bool) {
    let start = Instant::now();
    while !f().await {
        assert!(start.elapsed() < within, "not within {within:?}: {what}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// A running trace created through `server`; returns its id.
pub(crate) async fn running_trace(c: &reqwest::Client, server: &Server) -> String {
    let (status, t) = post(c, format!("{}/api/v1/traces", server.url), &json!({})).await;
    assert_eq!(status, 201, "{t}");
    let id = t["trace_id"].as_str().expect("id").to_string();
    let step = json!({"events": [{"type": "span_started", "span": {"span_id": "00000000000000a1", "kind": "agent", "name": "a"}}]});
    let (status, v) = post(
        c,
        format!("{}/api/v1/traces/{id}/events", server.url),
        &step,
    )
    .await;
    assert_eq!(status, 200, "{v}");
    id
}

pub(crate) async fn state_via(c: &reqwest::Client, server: &Server, id: &str) -> String {
    let (_, v) = get(c, format!("{}/api/v1/traces/{id}", server.url)).await;
    v["trace"]["state"].as_str().unwrap_or("").to_string()
}

/// Two servers on one data directory: exactly one holds the watchdog lease and sweeps
/// (orphaning traces written through either); when it is killed with SIGKILL, the other
/// takes over once the lease lapses.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn of_two_servers_on_one_data_dir_one_sweeps_and_the_other_takes_over_after_kill_9() {
    let dir = tempfile::tempdir().expect("tempdir");
    let args = [
        "--lease-ttl",
        "2s",
        "--sweep-interval",
        "100ms",
        "--orphan-after",
        "1s",
    ];
    let c = client();
    let a = Server::start_with(dir.path(), &args);
    wait_for("a leads", Duration::from_secs(10), async || {
        metrics(&c, &a).await["traceway_watchdog_leader"] == 1.0
    })
    .await;
    let b = Server::start_with(dir.path(), &args);

    // A trace written through b, left idle, is orphaned by a, the only sweeper.
    let id = running_trace(&c, &b).await;
    wait_for("orphaned by a", Duration::from_secs(10), async || {
        state_via(&c, &b, &id).await == "ERRORED"
    })
    .await;
    wait_for("a counts its orphan", Duration::from_secs(10), async || {
        metrics(&c, &a).await["traceway_traces_orphaned_total"] == 1.0
    })
    .await;
    let (ma, mb) = (metrics(&c, &a).await, metrics(&c, &b).await);
    assert!(ma["traceway_watchdog_sweeps_total"] >= 3.0, "{ma:?}");
    assert_eq!(mb["traceway_watchdog_leader"], 0.0);
    assert_eq!(mb["traceway_watchdog_sweeps_total"], 0.0, "b never swept");
    assert_eq!(mb["traceway_watchdog_lease_acquired_total"], 0.0);

    // a dies without releasing its lease; b takes over once it lapses.
    a.kill9();
    // A generous deadline against a hang; how fast a takeover is belongs in a bench.
    wait_for("b takes over", Duration::from_secs(60), async || {
        let m = metrics(&c, &b).await;
        m["traceway_watchdog_leader"] == 1.0 && m["traceway_watchdog_sweeps_total"] >= 1.0
    })
    .await;
    let id = running_trace(&c, &b).await;
    wait_for("orphaned by b", Duration::from_secs(10), async || {
        state_via(&c, &b, &id).await == "ERRORED"
    })
    .await;
    // The sweep commits the state, then the watchdog counts it: poll, don't race it.
    wait_for("b counts its orphan", Duration::from_secs(10), async || {
        metrics(&c, &b).await["traceway_traces_orphaned_total"] == 1.0
    })
    .await;
    b.stop();
}

/// `traceway cleanup` deletes in chunks and says how far it got on each (plain lines when
/// stderr is not a terminal).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cleanup_cli_deletes_in_chunks_with_progress() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start_with(dir.path(), &["--no-watchdog"]);
    let c = client();
    for _ in 0..25 {
        let (_, t) = post(&c, format!("{}/api/v1/traces", server.url), &json!({})).await;
        let id = t["trace_id"].as_str().expect("id");
        let r = c
            .patch(format!("{}/api/v1/traces/{id}", server.url))
            .json(&json!({"state": "COMPLETED"}))
            .send()
            .await
            .expect("patch");
        assert!(r.status().is_success());
    }
    running_trace(&c, &server).await;
    let (ok, out, err) = cli(&server, &["cleanup", "--older-than", "7d"]);
    assert!(ok, "{err}");
    assert_eq!(
        out.trim(),
        "deleted 0 finished traces that ended more than 7days ago"
    );
    assert_eq!(err, "", "nothing to show for one batch");

    let (ok, out, err) = cli(&server, &["cleanup", "--older-than", "0s", "--batch", "10"]);
    assert!(ok, "{err}");
    assert_eq!(
        out.trim(),
        "deleted 25 finished traces that ended more than 0s ago"
    );
    assert_eq!(
        err.lines().collect::<Vec<_>>(),
        vec![
            "deleted 10/25 traces",
            "deleted 20/25 traces",
            "deleted 25/25 traces"
        ]
    );
    let (_, v) = get(&c, format!("{}/api/v1/traces", server.url)).await;
    assert_eq!(
        v["traces"].as_array().expect("traces").len(),
        1,
        "the running one stays"
    );
    let (ok, out, _) = cli(&server, &["cleanup", "--older-than", "0s", "--json"]);
    assert!(ok);
    assert_eq!(
        serde_json::from_str::<Value>(&out).expect("json"),
        json!({"deleted": 0})
    );
    server.stop();
}

/// `traceway show` of a trace too large for one answer (the server gives it page by page,
/// ADR 031) reads every page and prints the whole tree, not the first page.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn show_prints_every_span_of_a_trace_answered_page_by_page() {
    const SPANS: u64 = 10_500;
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(dir.path());
    let c = client();
    let base = &server.url;
    let (status, trace) = post(&c, format!("{base}/api/v1/traces"), &json!({"name": "big"})).await;
    assert_eq!(status, 201, "{trace}");
    let id = trace["trace_id"].as_str().expect("id").to_string();
    let ts = |ms: u64| format!("2026-11-21T10:00:{:02}.{:03}Z", ms / 1000 % 60, ms % 1000);
    let spans: Vec<Value> = (1..=SPANS)
        .map(|i| {
            let parent = (i > 1).then(|| format!("{:016x}", 1));
            json!({"type": "span_ended", "span": {
                "span_id": format!("{i:016x}"), "parent_span_id": parent, "kind": "tool",
                "name": format!("step-{i}"), "start_time": ts(i % 1000),
                "end_time": ts(i % 1000 + 1), "status": {"code": "ok"}}})
        })
        .collect();
    for chunk in spans.chunks(1000) {
        let (status, v) = post(
            &c,
            format!("{base}/api/v1/traces/{id}/events"),
            &json!({"events": chunk}),
        )
        .await;
        assert_eq!(status, 200, "{v}");
    }
    let (_, first) = get(&c, format!("{base}/api/v1/traces/{id}")).await;
    assert!(first.get("span_page").is_some(), "the server pages it");

    let (ok, out, err) = cli(&server, &["show", &id]);
    assert!(ok, "{err}");
    let shown = out
        .lines()
        .filter(|l| l.trim_start().starts_with("tool step-"))
        .count();
    assert_eq!(shown as u64, SPANS, "every span is printed");
    assert!(
        out.contains("  tool step-10500"),
        "the last page's spans are children of the root"
    );

    let (ok, out, err) = cli(&server, &["show", &id, "--json"]);
    assert!(ok, "{err}");
    let v: Value = serde_json::from_str(&out).expect("json");
    assert_eq!(v["spans"].as_array().map(Vec::len), Some(1), "one root");
    assert_eq!(
        v["spans"][0]["children"].as_array().map(Vec::len),
        Some((SPANS - 1) as usize)
    );
}

/// Waits (up to 20 s) until the writers have `n` writes acknowledged, kills the server
/// with SIGKILL, waits for the writers to stop and returns every write acknowledged;
/// fails if fewer than `n` were.
async fn kill9_once_acknowledged<T: Clone>(
    server: Server,
    acked: &Mutex<Vec<T>>,
    n: usize,
    writers: Vec<tokio::task::JoinHandle<()>>,
) -> Vec<T> {
    let deadline = Instant::now() + Duration::from_secs(20);
    while acked.lock().expect("lock").len() < n && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    server.kill9();
    for w in writers {
        let _ = w.await;
    }
    let acked = acked.lock().expect("lock").clone();
    assert!(
        acked.len() >= n,
        "only {} acknowledged before the kill",
        acked.len()
    );
    acked
}

/// A server that ends every stream response after `--stream-max-lifetime` (1 s here):
/// `traceway tail` reconnects with `Last-Event-ID` each time and prints every event of
/// the trace exactly once, in order, then exits when the trace ends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tail_follows_a_trace_across_stream_lifetime_ends_missing_and_repeating_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start_with(dir.path(), &["--stream-max-lifetime", "1s"]);
    let c = client();
    let base = server.url.clone();
    let (_, t) = post(
        &c,
        format!("{base}/api/v1/traces"),
        &json!({"name": "long"}),
    )
    .await;
    let id = t["trace_id"].as_str().expect("id").to_string();
    let mut tail = Command::new(BIN)
        .args(["tail", &id, "--json", "--server", &base])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn tail");
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    let stdout = tail.stdout.take().expect("stdout");
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let mut seqs: Vec<u64> = Vec::new();
    // Reads tail's lines until one has seq `want`; a generous deadline against a hang.
    let mut until_seq = |want: u64| {
        let deadline = Instant::now() + Duration::from_secs(20);
        while seqs.last() != Some(&want) {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = rx
                .recv_timeout(left)
                .unwrap_or_else(|_| panic!("tail never printed seq {want}: {seqs:?}"));
            let e: Value = serde_json::from_str(&line).expect("an event's JSON");
            seqs.push(e["seq"].as_u64().expect("seq"));
        }
    };
    until_seq(1);
    // One step at a time, each printed before the next, for more than three lifetimes:
    // the stream was ended under tail at least three times.
    let start = Instant::now();
    let mut n = 0u64;
    while start.elapsed() < Duration::from_millis(3500) {
        n += 1;
        let (status, v) = post(
            &c,
            format!("{base}/api/v1/traces/{id}/events"),
            &json!({"events": [{"type": "span_ended", "span": {"span_id": format!("{n:016x}"), "kind": "tool", "name": format!("t{n}")}}]}),
        )
        .await;
        assert_eq!(status, 200, "{v}");
        let last = get(&c, format!("{base}/api/v1/traces/{id}")).await.1["trace"]["last_seq"]
            .as_u64()
            .expect("last_seq");
        until_seq(last);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let r = c
        .patch(format!("{base}/api/v1/traces/{id}"))
        .json(&json!({"state": "COMPLETED"}))
        .send()
        .await
        .expect("patch");
    assert_eq!(r.status().as_u16(), 200);
    let last = get(&c, format!("{base}/api/v1/traces/{id}")).await.1["trace"]["last_seq"]
        .as_u64()
        .expect("last_seq");
    until_seq(last);
    assert!(exit_of(&mut tail, "tail did not exit after the trace ended").success());
    while let Ok(line) = rx.try_recv() {
        let e: Value = serde_json::from_str(&line).expect("json");
        seqs.push(e["seq"].as_u64().expect("seq"));
    }
    assert_eq!(seqs, (1..=last).collect::<Vec<_>>(), "{n} steps");
    server.stop();
}

/// The exit status of `child`, polled for up to 15 s; fails with `what` past that.
fn exit_of(child: &mut Child, what: &str) -> std::process::ExitStatus {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        if let Some(s) = child.try_wait().expect("wait") {
            return s;
        }
        assert!(Instant::now() < deadline, "{what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}
