//! The tracer and exporter against the real server.

use std::time::Duration;

use serde_json::json;
use traceway::{Severity, Tracer};

use crate::all_spans;
use crate::server::{poll_json, Server};

fn tracer(server: &Server, service: &str) -> Tracer {
    Tracer::builder()
        .endpoint(&server.url)
        .service(service)
        .flush_interval(Duration::from_millis(20))
        .build()
        .expect("tracer")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_step_shows_while_it_runs_and_the_trace_completes_when_the_root_ends() {
    let server = Server::start();
    let tracer = tracer(&server, "agent-svc");
    let run = tracer
        .agent("support-agent")
        .input("where is my order?")
        .start();
    let trace_id = run.trace_id();
    assert_eq!(trace_id.uuid_version(), 7, "trace ids are UUIDv7");
    let url = format!("{}/api/v1/traces/{trace_id}", server.url);

    let llm = run
        .in_scope(async {
            let mut docs = tracer.retrieval("search_policies").query("refunds").start();
            docs.add_document("policy-7", 0.92, Some("Refunds within 30 days".into()));
            docs.end();
            let mut tool = tracer
                .tool("get_order")
                .arguments(json!({"id": 42}))
                .start();
            tool.set_result(json!({"status": "shipped"}));
            tool.end();
            tracer
                .llm("answer")
                .provider("openai")
                .model("gpt-4o-mini")
                .message("user", "where is my order?")
                .start()
        })
        .await;

    // The LLM step is running: the server shows it without an end, in a RUNNING trace.
    tracer.flush().await;
    let v = poll_json(&url, "the running llm step", |v| {
        all_spans(v).iter().any(|s| s["kind"] == "llm")
    })
    .await;
    assert_eq!(v["trace"]["state"], "RUNNING");
    let spans = all_spans(&v);
    let running = spans.iter().find(|s| s["kind"] == "llm").unwrap();
    assert!(running.get("end_time").is_none(), "{running}");
    assert_eq!(running["llm"]["model"], "gpt-4o-mini");
    assert_eq!(running["parent_span_id"], run.span_id().to_string());
    assert_eq!(running["service"], "agent-svc");

    let mut llm = llm;
    llm.set_tokens(412, 58);
    llm.add_output_message("assistant", "It shipped.");
    llm.log(Severity::Info, "answered");
    llm.end();
    run.end();
    tracer.flush().await;

    let v = poll_json(&url, "the completed trace", |v| {
        v["trace"]["state"] == "COMPLETED"
    })
    .await;
    assert_eq!(v["trace"]["name"], "support-agent");
    assert_eq!(v["trace"]["rollups"]["span_count"], 4);
    assert_eq!(v["trace"]["rollups"]["total_tokens"], 470);
    let spans = all_spans(&v);
    assert_eq!(spans.len(), 4);
    assert!(spans.iter().all(|s| s.get("end_time").is_some()));
    let by_kind = |k: &str| spans.iter().find(|s| s["kind"] == k).unwrap().clone();
    assert_eq!(
        by_kind("retriever")["retrieval"]["documents"][0]["id"],
        "policy-7"
    );
    assert_eq!(by_kind("tool")["tool"]["result"]["status"], "shipped");
    assert_eq!(by_kind("tool")["tool"]["name"], "get_order");
    assert_eq!(by_kind("llm")["status"]["code"], "ok");
    let events = poll_json(&format!("{url}/events?type=log"), "the log event", |v| {
        v["events"].as_array().is_some_and(|e| !e.is_empty())
    })
    .await;
    assert_eq!(events["events"][0]["payload"]["message"], "answered");
    let m = tracer.metrics();
    assert_eq!(
        (m.dropped_queue_full, m.dropped_export_failed),
        (0, 0),
        "{m:?}"
    );
    assert!(m.exported >= 8, "{m:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_step_dropped_without_end_or_by_a_panic_is_an_error() {
    let server = Server::start();
    let tracer = tracer(&server, "svc");
    let root = tracer.agent("run").start();
    let trace_id = root.trace_id();
    let ctx = root.context();
    {
        let _early = tracer.tool("early_return").parent(&ctx).start();
        // dropped here, as by `?`
    }
    let t = tracer.clone();
    let c = ctx.clone();
    let panicked = tokio::spawn(async move {
        let _step = t.llm("panics").parent(&c).start();
        panic!("the model client panicked");
    })
    .await;
    assert!(panicked.is_err());
    drop(root);
    tracer.flush().await;
    let url = format!("{}/api/v1/traces/{trace_id}", server.url);
    let v = poll_json(&url, "the errored trace", |v| {
        v["trace"]["state"] == "ERRORED"
    })
    .await;
    let spans = all_spans(&v);
    let msg = |name: &str| spans.iter().find(|s| s["name"] == name).unwrap()["status"].clone();
    assert_eq!(msg("early_return")["code"], "error");
    assert!(msg("early_return")["message"]
        .as_str()
        .unwrap()
        .contains("without end()"));
    assert!(msg("panics")["message"]
        .as_str()
        .unwrap()
        .contains("panicked"));
    assert_eq!(msg("run")["code"], "error");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_trace_costs_one_request_that_creates_and_ends_it() {
    let server = Server::start();
    let tracer = tracer(&server, "one-request");
    let run = tracer.agent("one-shot").start();
    let trace_id = run.trace_id();
    let ctx = run.context();
    for i in 0..3 {
        let mut s = tracer.tool("step").parent(&ctx).start();
        s.set_attribute("i", i as i64);
        s.end();
    }
    run.end();
    tracer.flush().await;
    let m = tracer.metrics();
    assert_eq!(
        (m.requests, m.exported, m.dropped_export_failed),
        (1, 8, 0),
        "create, append and end in one request (ADR 030): {m:?}"
    );
    let url = format!("{}/api/v1/traces/{trace_id}", server.url);
    let v = poll_json(&url, "the completed trace", |v| {
        v["trace"]["state"] == "COMPLETED"
    })
    .await;
    assert_eq!(v["trace"]["name"], "one-shot");
    assert_eq!(v["trace"]["metadata"]["service.name"], "one-request");
    assert_eq!(v["trace"]["rollups"]["span_count"], 4);
}
