//! `TraceLayer` over loopback: ingress ids, propagation, completion with trace (JSON and
//! SSE), bounds, malformed input.

use std::convert::Infallible;
use std::sync::{Arc, Mutex};

use axum::response::sse::{Event, Sse};
use axum::routing::get;
use axum::Json;
use serde_json::{json, Value};
use traceway::completion::CompletionBounds;
use traceway::{TraceId, TraceLayer, Tracer};

use crate::serve;

async fn work() -> Json<Value> {
    let tracer = TRACER.get().unwrap();
    let mut tool = tracer.tool("lookup").arguments(json!({"q": 1})).start();
    tool.set_result(json!({"ok": true}));
    tool.end();
    let mut llm = tracer.llm("answer").model("fake-1").start();
    llm.set_tokens(3, 2);
    llm.end();
    Json(json!({"answer": "42"}))
}

async fn many() -> Json<Value> {
    let tracer = TRACER.get().unwrap();
    for _ in 0..10 {
        tracer.tool("step").start().end();
    }
    Json(json!({"done": true}))
}

async fn events() -> Sse<impl futures_util::Stream<Item = Result<Event, Infallible>>> {
    let stream = futures_util::stream::iter(0..3).map(|i| {
        // Runs while the body streams, with the request's step as the current span.
        let mut s = TRACER.get().unwrap().tool(format!("chunk_{i}")).start();
        s.set_result(json!(i));
        s.end();
        Ok(Event::default().data(format!("token {i}")))
    });
    Sse::new(stream)
}

static TRACER: std::sync::OnceLock<Tracer> = std::sync::OnceLock::new();

async fn app() -> String {
    let tracer = TRACER.get_or_init(|| Tracer::local("svc")).clone();
    let router = axum::Router::new()
        .route("/work", get(work))
        .route("/many", get(many))
        .route("/events", get(events))
        .layer(TraceLayer::new(tracer).bounds(CompletionBounds {
            max_steps: 5,
            ..Default::default()
        }));
    serve(router).await
}

use futures_util::StreamExt as _;

#[tokio::test]
async fn ingress_makes_a_v7_trace_or_continues_the_callers() {
    let url = app().await;
    let c = reqwest::Client::new();
    // No traceparent, and a malformed one: a new trace, the caller sees no error.
    for tp in [
        None,
        Some("00-garbage"),
        Some("00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01"),
    ] {
        let mut rb = c.get(format!("{url}/work"));
        if let Some(tp) = tp {
            rb = rb.header("traceparent", tp);
        }
        let r = rb.send().await.unwrap();
        assert_eq!(r.status(), 200, "{tp:?}");
        let id: TraceId = r.headers()["x-trace-id"].to_str().unwrap().parse().unwrap();
        assert_eq!(id.uuid_version(), 7, "{tp:?}");
        let tr =
            traceway::TraceParent::parse(r.headers()["traceresponse"].to_str().unwrap()).unwrap();
        assert_eq!(tr.trace_id, id);
        let body: Value = r.json().await.unwrap();
        assert_eq!(body, json!({"answer": "42"}), "no trace unless asked");
    }
    let tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let r = c
        .get(format!("{url}/work"))
        .header("traceparent", tp)
        .header("tracestate", "vendor=1")
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.headers()["x-trace-id"],
        "4bf92f3577b34da6a3ce929d0e0e4736"
    );
    let tr = traceway::TraceParent::parse(r.headers()["traceresponse"].to_str().unwrap()).unwrap();
    assert_ne!(
        tr.parent_id.to_string(),
        "00f067aa0ba902b7",
        "names this side's span"
    );
}

#[tokio::test]
async fn return_trace_puts_the_steps_in_the_json_answer() {
    let url = app().await;
    let c = reqwest::Client::new();
    let v: Value = c
        .get(format!("{url}/work?return_trace=compact"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v["answer"], "42");
    let t = &v["trace"];
    assert_eq!(t["format"], "compact");
    assert_eq!(t["state"], "COMPLETED");
    let names: Vec<&str> = t["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["GET /work", "lookup", "answer"]);
    assert_eq!(t["steps"][1]["depth"], 1);
    assert_eq!(t["tokens"]["total"], 5);

    let v: Value = c
        .get(format!("{url}/work"))
        .header("x-traceway-return-trace", "detailed")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v["trace"]["format"], "detailed");
    let tool = &v["trace"]["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "lookup")
        .unwrap()
        .clone();
    assert_eq!(tool["tool"]["arguments"], json!({"q": 1}));

    // Bounded: 11 steps, 5 kept.
    let v: Value = c
        .get(format!("{url}/many?return_trace=compact"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v["trace"]["steps"].as_array().unwrap().len(), 5);
    assert_eq!(v["trace"]["steps_left_out"], 6);
    assert_eq!(v["done"], true);
}

#[tokio::test]
async fn an_sse_answer_carries_each_step_as_a_trace_event() {
    let url = app().await;
    let text = reqwest::Client::new()
        .get(format!("{url}/events?return_trace=compact"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let events: Vec<(String, String)> = text
        .split("\n\n")
        .filter(|e| !e.trim().is_empty())
        .map(|e| {
            let ev = e
                .lines()
                .find_map(|l| l.strip_prefix("event: "))
                .unwrap_or("message");
            let data = e
                .lines()
                .find_map(|l| l.strip_prefix("data: "))
                .unwrap_or("");
            (ev.to_string(), data.to_string())
        })
        .collect();
    let data: Vec<&str> = events
        .iter()
        .filter(|e| e.0 == "message")
        .map(|e| e.1.as_str())
        .collect();
    assert_eq!(data, ["token 0", "token 1", "token 2"]);
    let steps: Vec<Value> = events
        .iter()
        .filter(|e| e.0 == "trace")
        .map(|e| serde_json::from_str(&e.1).unwrap())
        .collect();
    let ended: Vec<&str> = steps
        .iter()
        .filter(|s| s.get("end_time").is_some())
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(ended, ["chunk_0", "chunk_1", "chunk_2", "GET /events"]);
    // chunk_0's step comes before the data it produced.
    let pos = |pred: &dyn Fn(&(String, String)) -> bool| events.iter().position(pred).unwrap();
    assert!(pos(&|e| e.0 == "trace" && e.1.contains("chunk_0")) < pos(&|e| e.1 == "token 0"));
    let root = steps.iter().find(|s| s["name"] == "GET /events").unwrap();
    let chunk = steps.iter().find(|s| s["name"] == "chunk_1").unwrap();
    assert_eq!(chunk["parent_span_id"], root["span_id"]);
}

#[test]
fn a_malformed_traceparent_is_logged_at_debug() {
    #[derive(Clone, Default)]
    struct Buf(Arc<Mutex<Vec<u8>>>);
    impl std::io::Write for Buf {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let buf = Buf::default();
    let b = buf.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::DEBUG)
        .with_writer(move || b.clone())
        .finish();
    let mut headers = http::HeaderMap::new();
    headers.insert("traceparent", "00-nope".parse().unwrap());
    let got =
        tracing::subscriber::with_default(subscriber, || traceway::propagation::extract(&headers));
    assert!(got.is_none());
    let log = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
    assert!(
        log.contains("DEBUG") && log.contains("malformed traceparent"),
        "{log}"
    );
}

#[tokio::test]
async fn an_edge_can_refuse_to_return_the_trace() {
    let tracer = TRACER.get_or_init(|| Tracer::local("svc")).clone();
    let url = serve(
        axum::Router::new()
            .route("/work", get(work))
            .layer(TraceLayer::new(tracer).allow_return_trace(false)),
    )
    .await;
    let r = reqwest::Client::new()
        .get(format!("{url}/work?return_trace=detailed"))
        .send()
        .await
        .unwrap();
    assert!(r.headers().contains_key("x-trace-id"));
    let v: Value = r.json().await.unwrap();
    assert_eq!(v, json!({"answer": "42"}));
}

#[tokio::test]
async fn the_root_step_is_named_by_the_matched_route() {
    let tracer = TRACER.get_or_init(|| Tracer::local("svc")).clone();
    let url = serve(
        axum::Router::new()
            .route("/orders/{id}", get(work))
            .layer(TraceLayer::new(tracer)),
    )
    .await;
    let v: Value = reqwest::Client::new()
        .get(format!("{url}/orders/42?return_trace=compact"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v["trace"]["steps"][0]["name"], "GET /orders/{id}");
}
