//! Durable workflow context end to end: a real restart (process A is killed with SIGKILL
//! mid-workflow, process B resumes it) on SQLite, Redis and Redis Cluster; the fallback
//! when nothing was stored; bad input; the in-memory store.

#[path = "../../../traceway-store/tests/support/redis_server.rs"]
mod redis_server;

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

use serde_json::{json, Value};
use traceway::workflow::{ContextStore, InMemoryContextStore, ServerContextStore, WorkflowError};
use traceway::Tracer;

use crate::all_spans;
use crate::server::{poll_json, Server};

/// The `workflow_process` example, built if missing.
fn workflow_bin() -> &'static PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let exe = std::env::current_exe().expect("current exe");
        let profile_dir = exe.parent().and_then(|p| p.parent()).expect("profile dir");
        let bin = profile_dir
            .join("examples")
            .join(format!("workflow_process{}", std::env::consts::EXE_SUFFIX));
        if !bin.exists() {
            let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
            let status = Command::new(cargo)
                .args(["build", "-p", "traceway", "--example", "workflow_process"])
                .env(
                    "CARGO_TARGET_DIR",
                    profile_dir.parent().expect("target dir"),
                )
                .current_dir(env!("CARGO_MANIFEST_DIR"))
                .status()
                .expect("cargo build");
            assert!(
                status.success(),
                "building the workflow_process example failed"
            );
        }
        bin
    })
}

fn spawn(mode: &str, url: &str, tenant: &str, instance: &str) -> Child {
    Command::new(workflow_bin())
        .args([mode, url, tenant, instance, "planner"])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn workflow_process")
}

/// The first line of `child`'s stdout that starts with `prefix`, split on spaces.
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
    let line = rx
        .recv_timeout(Duration::from_secs(60))
        .expect("the workflow process did not report in 60 s");
    line.split(' ').map(str::to_string).collect()
}

async fn get_as(url: &str, tenant: &str) -> (u16, Value) {
    let r = reqwest::Client::new()
        .get(url)
        .header("x-traceway-tenant", tenant)
        .send()
        .await
        .expect("get");
    let s = r.status().as_u16();
    (s, r.json().await.unwrap_or(Value::Null))
}

fn span_named<'a>(spans: &'a [Value], name: &str) -> &'a Value {
    spans
        .iter()
        .find(|s| s["name"] == name)
        .unwrap_or_else(|| panic!("no span {name} in {spans:?}"))
}

/// Process A starts a workflow, records two steps, stores its context and is killed with
/// SIGKILL; process B resumes it: its steps land in the same trace, under the stored
/// span, and the trace ends when the resumed workflow does.
async fn a_killed_workflow_resumes_in_its_trace(server: &Server) {
    let instance = "order-42/attempt 1";
    let mut a = spawn("start", &server.url, "default", instance);
    let ready = line_of(&mut a, "READY ");
    let (trace_id, run_span) = (ready[1].clone(), ready[2].clone());
    let ctx_url = format!(
        "{}/api/v1/workflows/order-42%2Fattempt%201/context",
        server.url
    );
    let (s, stored) = get_as(&ctx_url, "default").await;
    assert_eq!(s, 200, "{stored}");
    assert_eq!(
        stored["traceparent"],
        format!("00-{trace_id}-{run_span}-01")
    );
    assert_eq!(stored["agent"], "planner");
    // Another tenant does not see it.
    assert_eq!(get_as(&ctx_url, "globex").await.0, 404);
    a.kill().expect("SIGKILL process A");
    a.wait().expect("reap A");

    let mut b = spawn("resume", &server.url, "default", instance);
    let resumed = line_of(&mut b, "RESUMED ");
    assert!(b.wait().expect("B exits").success(), "process B failed");
    assert_eq!(resumed[1], trace_id, "B continued A's trace");
    assert_eq!(resumed[3], "true", "B found the stored context");
    let resumed_span = resumed[2].clone();

    let trace_url = format!("{}/api/v1/traces/{trace_id}", server.url);
    let got = poll_json(&trace_url, "the resumed trace to complete", |v| {
        v["trace"]["state"] == "COMPLETED" && all_spans(v).len() == 6
    })
    .await;
    let spans = all_spans(&got);
    let run = span_named(&spans, "planner.ToolCallingWorkflow");
    assert_eq!(run["span_id"], run_span.as_str());
    for step in ["plan", "fetch_order"] {
        assert_eq!(
            span_named(&spans, step)["parent_span_id"],
            run_span.as_str(),
            "{step}"
        );
    }
    let again = spans
        .iter()
        .find(|s| s["span_id"] == resumed_span.as_str())
        .expect("the resumed span");
    assert_eq!(
        again["parent_span_id"],
        run_span.as_str(),
        "resumed under the stored span"
    );
    assert_eq!(again["attributes"]["workflow.resumed"], true);
    assert_eq!(again["attributes"]["workflow.instance_id"], instance);
    assert_eq!(
        again["links"],
        json!([{"trace_id": trace_id, "span_id": run_span}]),
        "linked to the stored parent"
    );
    for step in ["refund", "notify_customer"] {
        assert_eq!(
            span_named(&spans, step)["parent_span_id"],
            resumed_span.as_str(),
            "{step}"
        );
    }
    // The tree shows both parts: the resumed workflow nests under the first run.
    let root = &got["spans"][0];
    assert_eq!(root["span_id"], run_span.as_str(), "{got}");
    // B forgot the context once the workflow finished.
    assert_eq!(get_as(&ctx_url, "default").await.0, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_on_sqlite() {
    a_killed_workflow_resumes_in_its_trace(&Server::start()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_on_redis() {
    let redis = redis_server::RedisServer::start();
    let url = redis.url();
    a_killed_workflow_resumes_in_its_trace(&Server::start_with(&["--store", &url])).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_on_redis_cluster() {
    let url = tokio::task::spawn_blocking(redis_server::shared_cluster)
        .await
        .expect("cluster");
    a_killed_workflow_resumes_in_its_trace(&Server::start_with(&["--store", url])).await;
}

/// Nothing stored: the resumed workflow starts a new, AGENT-rooted trace that says
/// continuity was lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_stored_context_a_new_trace_says_continuity_was_lost() {
    let server = Server::start();
    let mut b = spawn("resume", &server.url, "default", "never-stored");
    let resumed = line_of(&mut b, "RESUMED ");
    assert!(b.wait().expect("B exits").success());
    assert_eq!(resumed[3], "false");
    let trace_url = format!("{}/api/v1/traces/{}", server.url, resumed[1]);
    let got = poll_json(&trace_url, "the new trace", |v| {
        v["trace"]["state"] == "COMPLETED" && all_spans(v).len() == 3
    })
    .await;
    let root = &got["spans"][0];
    assert_eq!(root["name"], "planner.ToolCallingWorkflow");
    assert_eq!(root["kind"], "agent");
    assert!(root["parent_span_id"].is_null(), "{root}");
    assert_eq!(root["attributes"]["workflow.resumed"], true);
    assert_eq!(root["attributes"]["workflow.context_restored"], false);
    let events = poll_json(
        &format!("{trace_url}/events?type=log"),
        "the continuity log",
        |v| v["events"].as_array().is_some_and(|e| !e.is_empty()),
    )
    .await;
    let text = events.to_string();
    assert!(
        text.contains("continuity with the original run was lost"),
        "{text}"
    );
}

/// Bad input through the client and the server: a bad traceparent and an overlong id
/// are refused naming the field; another tenant's instance is not found.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_and_other_tenants() {
    let server = Server::start();
    let tracer = Tracer::builder()
        .endpoint(server.url.as_str())
        .build()
        .expect("tracer");
    let contexts = ServerContextStore::new(tracer.clone(), &server.url).expect("store");
    let run = tracer.agent("wf").start();
    let long = "x".repeat(257);
    match contexts.store(&long, &run.context(), None).await {
        Err(WorkflowError::Invalid(m)) => assert!(m.starts_with("instance id"), "{m}"),
        other => panic!("{other:?}"),
    }
    let r = reqwest::Client::new()
        .put(format!("{}/api/v1/workflows/wf/context", server.url))
        .json(&json!({"traceparent": "00-0af7651916cd43dd8448eb211c80319c-0000000000000000-01"}))
        .send()
        .await
        .expect("put");
    assert_eq!(r.status(), 400);
    let v: Value = r.json().await.expect("json");
    assert!(
        v["error"]["message"]
            .as_str()
            .expect("message")
            .starts_with("traceparent"),
        "{v}"
    );

    contexts
        .store("wf", &run.context(), Some("a"))
        .await
        .expect("store");
    let other = ServerContextStore::new(tracer.clone(), &server.url)
        .expect("store")
        .tenant("globex");
    assert_eq!(other.get("wf").await.expect("get"), None);
    assert!(!other.cleanup("wf").await.expect("cleanup"));
    assert_eq!(other.stats().await.expect("stats").count, 0);
    let mine = contexts.stats().await.expect("stats");
    assert_eq!((mine.count, mine.instances), (1, vec!["wf".to_string()]));
    assert!(contexts.cleanup("wf").await.expect("cleanup"));
    run.end();
}

/// The in-memory store: the same API, and empty in a new process (here: a new store).
#[tokio::test]
async fn the_in_memory_store_keeps_contexts_while_it_lives() {
    let tracer = Tracer::local("wf");
    let contexts = InMemoryContextStore::new(tracer.clone());
    let run = tracer.agent("planner.ToolCallingWorkflow").start();
    contexts
        .store("i-1", &run.context(), Some("planner"))
        .await
        .expect("store");
    let shared = contexts.clone();
    let t = std::thread::spawn(move || {
        futures_util::FutureExt::now_or_never(shared.get("i-1"))
            .expect("ready")
            .expect("get")
    });
    let got = t.join().expect("thread").expect("stored");
    assert_eq!(got.traceparent, run.context().traceparent().to_header());
    let resumed = contexts.resume("i-1", "planner").await.expect("resume");
    assert!(resumed.continued);
    assert_eq!(resumed.span.trace_id(), run.trace_id());
    assert_eq!(contexts.stats().await.expect("stats").count, 1);
    assert!(contexts.cleanup("i-1").await.expect("cleanup"));
    let fresh = InMemoryContextStore::new(tracer.clone());
    let lost = fresh.resume("i-1", "planner").await.expect("resume");
    assert!(!lost.continued);
    assert_ne!(lost.span.trace_id(), run.trace_id());
    resumed.span.end();
    lost.span.end();
    run.end();
}
