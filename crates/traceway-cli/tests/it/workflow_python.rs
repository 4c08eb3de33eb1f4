//! The Python workflow module (`python/traceway_workflow`) with the real OpenTelemetry
//! Python SDK: process A records a workflow, stores its context and is killed with
//! SIGKILL; process B resumes it with `create_resumed_workflow_context`, and its steps
//! land in the same trace under the stored span. On SQLite and on Redis; and the fallback
//! when nothing was stored.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::Value;

use crate::e2e::{client, get, Server};
use crate::otlp_sdk::otel_python;
use crate::redis::redis_server::RedisServer;

fn spawn(python: &PathBuf, mode: &str, url: &str, instance: &str) -> Child {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../python/workflow_process.py");
    Command::new(python)
        .arg(script)
        .args([mode, url, "default", instance, "planner"])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn python")
}

fn line_of(child: &mut Child, prefix: &str) -> Vec<String> {
    let stdout = child.stdout.take().expect("stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    let prefix = prefix.to_string();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if line.starts_with(&prefix) {
                let _ = tx.send(line);
                break;
            }
        }
    });
    rx.recv_timeout(Duration::from_secs(60))
        .expect("the python process did not report in 60 s")
        .split(' ')
        .map(str::to_string)
        .collect()
}

/// Polls `url` until the trace shows `n` spans (generous deadline; each try is a request).
async fn trace_with(url: &str, n: usize) -> Value {
    let c = client();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let (_, v) = get(&c, url.to_string()).await;
        if spans(&v).len() == n {
            return v;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{n} spans not reached: {v}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn spans(v: &Value) -> Vec<Value> {
    fn walk(nodes: &Value, out: &mut Vec<Value>) {
        for n in nodes.as_array().into_iter().flatten() {
            out.push(n.clone());
            walk(&n["children"], out);
        }
    }
    let mut out = Vec::new();
    walk(&v["spans"], &mut out);
    out
}

async fn python_restart(server: &Server) {
    let python = otel_python();
    let instance = "py-order/7";
    let mut a = spawn(&python, "start", &server.url, instance);
    let ready = line_of(&mut a, "READY ");
    let (trace_id, run_span) = (ready[1].clone(), ready[2].clone());
    a.kill().expect("SIGKILL A");
    a.wait().expect("reap A");
    let mut b = spawn(&python, "resume", &server.url, instance);
    let resumed = line_of(&mut b, "RESUMED ");
    assert!(b.wait().expect("B exits").success(), "process B failed");
    assert_eq!(resumed[1], trace_id, "same trace");
    assert_eq!(resumed[3], "true");
    let resumed_span = resumed[2].clone();
    let url = format!("{}/api/v1/traces/{trace_id}", server.url);
    let got = trace_with(&url, 6).await;
    let all = spans(&got);
    let by_id = |id: &str| {
        all.iter()
            .find(|s| s["span_id"] == id)
            .unwrap_or_else(|| panic!("span {id} in {got}"))
            .clone()
    };
    let r = by_id(&resumed_span);
    assert_eq!(r["name"], "planner.ToolCallingWorkflow");
    assert_eq!(
        r["parent_span_id"],
        run_span.as_str(),
        "under the stored span"
    );
    assert_eq!(r["attributes"]["workflow.resumed"], true, "{r}");
    assert_eq!(r["attributes"]["workflow.instance_id"], instance);
    assert_eq!(r["links"][0]["span_id"], run_span.as_str(), "{r}");
    for s in &all {
        match s["name"].as_str() {
            Some("plan" | "fetch_order") => assert_eq!(s["parent_span_id"], run_span.as_str()),
            Some("refund" | "notify_customer") => {
                assert_eq!(s["parent_span_id"], resumed_span.as_str())
            }
            _ => {}
        }
    }
    assert_eq!(got["spans"][0]["span_id"], run_span.as_str(), "one tree");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_workflow_resumes_after_sigkill_on_sqlite() {
    let dir = tempfile::tempdir().expect("tempdir");
    python_restart(&Server::start(dir.path())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_workflow_resumes_after_sigkill_on_redis() {
    let redis = RedisServer::start();
    let dir = tempfile::tempdir().expect("tempdir");
    python_restart(&Server::start_with(dir.path(), &["--store", &redis.url()])).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_fallback_starts_a_new_trace_that_says_so() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(dir.path());
    let python = otel_python();
    let mut b = spawn(&python, "resume", &server.url, "never-stored");
    let resumed = line_of(&mut b, "RESUMED ");
    assert!(b.wait().expect("B exits").success());
    assert_eq!(resumed[3], "false");
    let url = format!("{}/api/v1/traces/{}", server.url, resumed[1]);
    let got = trace_with(&url, 3).await;
    let root = &got["spans"][0];
    assert_eq!(root["name"], "planner.ToolCallingWorkflow");
    assert_eq!(root["kind"], "agent", "AGENT-rooted: {root}");
    assert!(root["parent_span_id"].is_null(), "{root}");
    assert_eq!(
        root["attributes"]["workflow.context_restored"], false,
        "{root}"
    );
}

/// ADR 022 end to end: the workflow's process dies, the watchdog orphans its trace, and the
/// resumed workflow reopens it: one trace whose log reads orphaned, then resumed, with the
/// resumed steps in it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trace_orphaned_by_the_watchdog_reopens_when_the_workflow_resumes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start_with(
        dir.path(),
        &["--orphan-after", "1s", "--sweep-interval", "100ms"],
    );
    let python = otel_python();
    let mut a = spawn(&python, "start-open", &server.url, "wf-orphan");
    let ready = line_of(&mut a, "READY ");
    let trace_id = ready[1].clone();
    a.kill().expect("SIGKILL A");
    a.wait().expect("reap A");
    let c = client();
    let url = format!("{}/api/v1/traces/{trace_id}", server.url);
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let (_, v) = get(&c, url.clone()).await;
        if v["trace"]["state"] == "ERRORED" {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "not orphaned: {v}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut b = spawn(&python, "resume", &server.url, "wf-orphan");
    let resumed = line_of(&mut b, "RESUMED ");
    assert!(b.wait().expect("B exits").success());
    assert_eq!(resumed[1], trace_id, "same trace");
    let got = trace_with(&url, 5).await;
    let names: Vec<String> = spans(&got)
        .iter()
        .map(|s| s["name"].as_str().unwrap_or("").to_string())
        .collect();
    for n in [
        "plan",
        "fetch_order",
        "planner.ToolCallingWorkflow",
        "refund",
        "notify_customer",
    ] {
        assert!(names.iter().any(|x| x == n), "{n} in {names:?}");
    }
    let (_, ev) = get(&c, format!("{url}/events?type=state_changed")).await;
    let changes: Vec<(String, String, String)> = ev["events"]
        .as_array()
        .expect("events")
        .iter()
        .map(|e| {
            let p = &e["payload"];
            let s = |k: &str| p[k].as_str().unwrap_or("").to_string();
            (s("from"), s("to"), s("reason"))
        })
        .collect();
    let orphaned = changes
        .iter()
        .position(|c| c.1 == "ERRORED" && c.2 == "orphaned")
        .unwrap_or_else(|| panic!("orphaned in {ev}"));
    let reopened = changes
        .iter()
        .position(|c| c.0 == "ERRORED" && c.1 == "RUNNING" && c.2 == "resumed")
        .unwrap_or_else(|| panic!("reopened in {ev}"));
    assert!(orphaned < reopened, "{changes:?}");

    // `traceway show` tells the same story: one trace, its history orphaned then resumed,
    // and the steps of both processes in its tree.
    let out = Command::new(env!("CARGO_BIN_EXE_traceway"))
        .args(["show", &trace_id, "--server", &server.url])
        .output()
        .expect("run traceway show");
    let shown = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let history = shown
        .lines()
        .find(|l| l.starts_with("history"))
        .unwrap_or_else(|| panic!("no history line:\n{shown}"));
    let at = |needle: &str| {
        history
            .find(needle)
            .unwrap_or_else(|| panic!("{needle:?} not in {history:?}"))
    };
    assert!(
        at("ERRORED (orphaned)") < at("RUNNING (resumed)"),
        "{history}"
    );
    for step in ["fetch_order", "refund"] {
        assert!(shown.contains(step), "show lacks {step}:\n{shown}");
    }
}
