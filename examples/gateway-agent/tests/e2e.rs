//! One request through the gateway, against the real `traceway` server binary: one trace
//! with both services' spans, the agent's steps in `traceway tail` while it runs, and
//! `?return_trace=compact` putting the steps inside the gateway's answer.

#[path = "../../../crates/traceway/tests/support/server.rs"]
mod server;

use std::io::{BufRead, BufReader};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tokio::sync::Semaphore;
use traceway::Tracer;

use server::{poll_json, Server};

async fn serve(app: axum::Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    format!("http://{addr}")
}

fn tracer(server: &Server, service: &str) -> Tracer {
    Tracer::builder()
        .endpoint(&server.url)
        .service(service)
        .flush_interval(Duration::from_millis(20))
        .build()
        .unwrap()
}

/// Waits for the next tail event that `pred` accepts (generous deadline).
fn next_event(
    rx: &std::sync::mpsc::Receiver<Value>,
    seen: &mut Vec<Value>,
    what: &str,
    pred: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let e = rx
            .recv_timeout(left)
            .unwrap_or_else(|_| panic!("traceway tail never showed {what}; saw {seen:#?}"));
        seen.push(e.clone());
        if pred(&e) {
            return e;
        }
    }
}

fn all_spans(trace: &Value) -> Vec<Value> {
    fn walk(nodes: &Value, out: &mut Vec<Value>) {
        for n in nodes.as_array().into_iter().flatten() {
            out.push(n.clone());
            walk(&n["children"], out);
        }
    }
    let mut out = Vec::new();
    walk(&trace["spans"], &mut out);
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_request_through_the_gateway_is_one_live_trace_of_both_services() {
    let server = Server::start();
    let http = reqwest::Client::new();

    // `traceway tail --json`: every event of the tenant, one JSON line each.
    let mut tail = server.cli(&["tail", "--json"]);
    let stdout = tail.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel::<Value>();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if let Ok(v) = serde_json::from_str(&line) {
                let _ = tx.send(v);
            }
        }
    });
    let mut seen = Vec::new();
    // The tail is live once it shows a trace created after it started.
    let deadline = Instant::now() + Duration::from_secs(30);
    'connected: loop {
        assert!(Instant::now() < deadline, "traceway tail never connected");
        let created: Value = http
            .post(format!("{}/api/v1/traces", server.url))
            .json(&json!({"name": "warm-up"}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        while let Ok(e) = rx.recv_timeout(Duration::from_millis(300)) {
            if e["trace_id"] == created["trace_id"] {
                break 'connected;
            }
        }
    }

    let hold = Arc::new(Semaphore::new(0));
    let agent = serve(gateway_agent::agent_app(
        tracer(&server, "agent"),
        Some(hold.clone()),
    ))
    .await;
    let gateway = serve(gateway_agent::gateway_app(
        tracer(&server, "gateway"),
        agent,
    ))
    .await;

    let request = tokio::spawn({
        let http = http.clone();
        async move {
            http.post(format!("{gateway}/ask?return_trace=compact"))
                .json(&json!({"question": "where is my order and can I get a refund?"}))
                .send()
                .await
                .unwrap()
        }
    });

    // While the fake model holds its answer, the agent's steps are already in the tail.
    let is = |e: &Value, ty: &str, kind: &str| {
        e["type"] == ty && e["payload"]["kind"] == kind && e["payload"]["service"] == "agent"
    };
    let llm_started = next_event(&rx, &mut seen, "the agent's llm step starting", |e| {
        is(e, "span_started", "llm")
    });
    let trace_id = llm_started["trace_id"].as_str().unwrap().to_string();
    assert!(!request.is_finished(), "the agent is still running");
    let of_trace: Vec<&Value> = seen.iter().filter(|e| e["trace_id"] == trace_id).collect();
    for kind in ["retriever", "tool"] {
        assert!(
            of_trace.iter().any(|e| is(e, "span_ended", kind)),
            "{kind} step shown before the answer: {of_trace:#?}"
        );
    }
    assert_eq!(llm_started["payload"]["llm"]["model"], "fake-llm-1");

    hold.add_permits(1);
    let resp = request.await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["x-trace-id"], trace_id.as_str());
    let body: Value = resp.json().await.unwrap();
    assert!(
        body["answer"].as_str().unwrap().contains("shipped"),
        "{body}"
    );

    // The answer carries the steps of both services, in tree order.
    let trace = &body["trace"];
    assert_eq!(trace["format"], "compact");
    assert_eq!(trace["trace_id"], trace_id.as_str());
    let steps: Vec<(String, u64)> = trace["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["name"].as_str().unwrap().to_string(),
                s["depth"].as_u64().unwrap(),
            )
        })
        .collect();
    let names: Vec<&str> = steps.iter().map(|s| s.0.as_str()).collect();
    for want in [
        "POST /ask",
        "route",
        "POST /answer",
        "support-agent",
        "search_policies",
        "get_order",
        "answer",
    ] {
        assert!(names.contains(&want), "{want} missing from {names:?}");
    }
    let depth = |n: &str| steps.iter().find(|s| s.0 == n).unwrap().1;
    assert_eq!(depth("POST /ask"), 0);
    assert!(depth("POST /answer") > depth("POST /ask"));
    assert!(depth("answer") > depth("support-agent"));
    assert!(trace["tokens"]["total"].as_u64().unwrap() > 0);

    // The server holds one trace with both services' spans, nested across the hop.
    let url = format!("{}/api/v1/traces/{trace_id}", server.url);
    let v = poll_json(&url, "the completed trace with 7 spans", |v| {
        v["trace"]["state"] == "COMPLETED" && all_spans(v).len() == 7
    })
    .await;
    let spans = all_spans(&v);
    let services: std::collections::BTreeSet<&str> =
        spans.iter().filter_map(|s| s["service"].as_str()).collect();
    assert_eq!(services, ["agent", "gateway"].into_iter().collect());
    let roots: Vec<&Value> = spans
        .iter()
        .filter(|s| s.get("parent_span_id").is_none())
        .collect();
    assert_eq!(roots.len(), 1, "one root: the gateway's request");
    assert_eq!(roots[0]["name"], "POST /ask");
    let agent_root = spans.iter().find(|s| s["name"] == "POST /answer").unwrap();
    let parent = spans
        .iter()
        .find(|s| s["span_id"] == agent_root["parent_span_id"])
        .expect("the agent's request span has the gateway's span as its parent");
    assert_eq!(parent["service"], "gateway");

    let _ = tail.kill();
    let _ = tail.wait();
}
