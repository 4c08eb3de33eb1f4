//! OTLP logs and metrics: `POST /v1/logs` (protobuf, JSON, gzip), `POST /v1/metrics`
//! (accepted and dropped, ADR 021), and their gRPC services on a loopback port.

use std::io::Write as _;

use axum::body::Body;
use axum::http::{header, Method, Request, StatusCode};
use opentelemetry_proto::tonic::collector::logs::v1::logs_service_client::LogsServiceClient;
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceResponse;
use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_client::MetricsServiceClient;
use opentelemetry_proto::tonic::collector::metrics::v1::{
    ExportMetricsServiceRequest, ExportMetricsServiceResponse,
};
use prost::Message as _;
use serde_json::Value;
use tower::ServiceExt;
use traceway_core::otlp::{decode_logs_request, Encoding};
use traceway_server::otlp::METRICS_DROPPED_MESSAGE;

use crate::{test_app, TestApp};

const PROTOBUF: &str = "application/x-protobuf";
const JSON: &str = "application/json";
/// The trace of the logs fixture (and of `messages_tool_calls.json`).
const TRACE: &str = "5b8efff798038103d269b633813fc60c";

fn fixture(name: &str) -> Vec<u8> {
    let path = format!(
        "{}/../traceway-core/tests/fixtures/otlp/{name}",
        env!("CARGO_MANIFEST_DIR")
    );
    std::fs::read(path).expect("fixture")
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(data).expect("gzip");
    e.finish().expect("gzip")
}

async fn post(
    app: &TestApp,
    path: &str,
    content_type: &str,
    encoding: Option<&str>,
    body: Vec<u8>,
) -> (StatusCode, String, Vec<u8>) {
    let mut req = Request::builder()
        .method(Method::POST)
        .uri(path)
        .header(header::CONTENT_TYPE, content_type);
    if let Some(e) = encoding {
        req = req.header(header::CONTENT_ENCODING, e);
    }
    let resp = app
        .router
        .clone()
        .oneshot(req.body(Body::from(body)).expect("request"))
        .await
        .expect("infallible");
    let status = resp.status();
    let ct = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .map(|v| v.to_str().unwrap_or("").to_string())
        .unwrap_or_default();
    let body = axum::body::to_bytes(resp.into_body(), 1 << 20)
        .await
        .expect("body")
        .to_vec();
    (status, ct, body)
}

async fn log_events(app: &TestApp) -> Vec<Value> {
    let (status, v) = app
        .call(
            Method::GET,
            &format!("/api/v1/traces/{TRACE}/events?type=log"),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{v}");
    v["events"].as_array().expect("events").clone()
}

on_both! {
#[tokio::test]
async fn log_records_become_span_logs_once_and_traceless_ones_are_refused(backend: Backend) {
    let app = backend.app().await;
    let body = fixture("logs_genai.json");
    let (status, ct, answer) = post(&app, "/v1/logs", JSON, None, body.clone()).await;
    assert_eq!(
        status,
        StatusCode::OK,
        "{}",
        String::from_utf8_lossy(&answer)
    );
    assert_eq!(ct, JSON);
    let v: Value = serde_json::from_slice(&answer).expect("json");
    assert_eq!(v["partialSuccess"]["rejectedLogRecords"], "2", "{v}");
    assert!(v["partialSuccess"]["errorMessage"]
        .as_str()
        .unwrap()
        .contains("no trace id"));

    let (status, t) = app
        .call(Method::GET, &format!("/api/v1/traces/{TRACE}"), None)
        .await;
    assert_eq!(status, StatusCode::OK, "{t}");
    assert_eq!(t["trace"]["state"], "RUNNING", "a log opens its trace");
    assert_eq!(t["trace"]["metadata"]["service.name"], "chat-svc");

    // The GenAI message events are fills (waiting for their spans), not log events.
    let logs = log_events(&app).await;
    assert_eq!(logs.len(), 2, "{logs:?}");
    assert!(logs
        .iter()
        .all(|e| !e["payload"]["message"].as_str().unwrap_or("").starts_with("gen_ai.")));
    let warn = logs
        .iter()
        .find(|e| e["payload"]["message"] == "cache miss for key 42")
        .expect("the plain log");
    assert_eq!(warn["payload"]["severity"], "warn");
    assert_eq!(warn["payload"]["span_id"], "a000000000000002");

    // The same export again, in protobuf and gzipped: nothing new is stored.
    let pb = decode_logs_request(&body, Encoding::Json)
        .expect("valid")
        .encode_to_vec();
    let (status, ct, answer) = post(&app, "/v1/logs", PROTOBUF, Some("gzip"), gzip(&pb)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(ct, PROTOBUF);
    let resp = ExportLogsServiceResponse::decode(answer.as_slice()).expect("protobuf answer");
    assert_eq!(
        resp.partial_success.map(|p| p.rejected_log_records),
        Some(2)
    );
    assert_eq!(
        log_events(&app).await.len(),
        2,
        "a re-export is stored once"
    );
}
}

on_both! {
#[tokio::test]
async fn logs_before_their_spans_leave_the_trace_to_its_spans(backend: Backend) {
    let app = backend.app().await;
    let (status, _, _) = post(&app, "/v1/logs", JSON, None, fixture("logs_genai.json")).await;
    assert_eq!(status, StatusCode::OK);
    let (status, _, _) = post(
        &app,
        "/v1/traces",
        JSON,
        None,
        fixture("messages_tool_calls.json"),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let (_, t) = app
        .call(Method::GET, &format!("/api/v1/traces/{TRACE}"), None)
        .await;
    let trace = &t["trace"];
    assert_eq!(trace["state"], "COMPLETED", "{trace}");
    assert_eq!(
        trace["name"], "invoke_agent Planner",
        "the root still names it"
    );
    assert_eq!(trace["agent_id"], "Planner");
    assert_eq!(log_events(&app).await.len(), 2);
    // The chat span took the fill that waited for it: its completion came only by log.
    let chat = span_in(&t["spans"], "a000000000000002").expect("the chat span");
    let out = &chat["llm"]["output_messages"];
    assert!(
        out.as_array()
            .is_some_and(|m| m.iter().any(|m| m["content"] == "It is rainy.")),
        "{chat}"
    );
}
}

/// The span with this id in a span tree.
fn span_in(tree: &Value, id: &str) -> Option<Value> {
    for s in tree.as_array()? {
        if s["span_id"] == id {
            return Some(s.clone());
        }
        if let Some(found) = span_in(&s["children"], id) {
            return Some(found);
        }
    }
    None
}

const FILL_TRACE: &str = "0af7651916cd43dd8448eb211c80319c";

/// An OTLP/JSON trace export of one LLM span (no messages on it), ended or not.
fn chat_span(span: &str, ended: bool) -> Vec<u8> {
    let end = if ended { "1767225601000000000" } else { "0" };
    serde_json::to_vec(&serde_json::json!({"resourceSpans": [{
        "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "chat"}}]},
        "scopeSpans": [{"spans": [{
            "traceId": FILL_TRACE, "spanId": span, "parentSpanId": "b7ad6b7169203331",
            "name": "chat gpt-4o", "kind": 3,
            "startTimeUnixNano": "1767225600000000000", "endTimeUnixNano": end,
            "attributes": [
                {"key": "gen_ai.operation.name", "value": {"stringValue": "chat"}},
                {"key": "gen_ai.request.model", "value": {"stringValue": "gpt-4o"}},
                {"key": "gen_ai.usage.input_tokens", "value": {"intValue": "12"}},
                {"key": "gen_ai.usage.output_tokens", "value": {"intValue": "3"}}
            ]
        }]}]
    }]}))
    .expect("json")
}

/// An OTLP/JSON log export of one `gen_ai.client.inference.operation.details` event.
fn details_log(span: &str, question: &str, answer: &str) -> Vec<u8> {
    let input =
        serde_json::json!([{"role": "user", "parts": [{"type": "text", "content": question}]}]);
    let output = serde_json::json!([{"role": "assistant", "parts": [{"type": "text", "content": answer}], "finish_reason": "stop"}]);
    serde_json::to_vec(&serde_json::json!({"resourceLogs": [{
        "scopeLogs": [{"logRecords": [{
            "timeUnixNano": "1767225600500000000",
            "traceId": FILL_TRACE, "spanId": span,
            "eventName": "gen_ai.client.inference.operation.details",
            "attributes": [
                {"key": "gen_ai.input.messages", "value": {"stringValue": input.to_string()}},
                {"key": "gen_ai.output.messages", "value": {"stringValue": output.to_string()}}
            ]
        }]}]
    }]}))
    .expect("json")
}

async fn chat_messages(app: &TestApp, span: &str) -> (Vec<String>, Vec<String>) {
    let (status, t) = app
        .call(Method::GET, &format!("/api/v1/traces/{FILL_TRACE}"), None)
        .await;
    assert_eq!(status, StatusCode::OK, "{t}");
    let Some(s) = span_in(&t["spans"], span) else {
        return (vec![], vec![]);
    };
    let texts = |side: &str| -> Vec<String> {
        s["llm"][side]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|m| m["content"].as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default()
    };
    (texts("input_messages"), texts("output_messages"))
}

async fn span_events(app: &TestApp) -> usize {
    let (status, v) = app
        .call(
            Method::GET,
            &format!("/api/v1/traces/{FILL_TRACE}/events?type=span_ended"),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{v}");
    v["events"].as_array().map_or(0, Vec::len)
}

on_both! {
#[tokio::test]
async fn genai_operation_details_fill_the_llm_span_before_or_after_it(backend: Backend) {
    let app = backend.app().await;
    let ok = |(status, _, body): (StatusCode, String, Vec<u8>)| {
        assert_eq!(status, StatusCode::OK, "{}", String::from_utf8_lossy(&body));
    };
    // Before: the log comes first, the span takes its messages when it arrives.
    ok(post(&app, "/v1/logs", JSON, None, details_log("1000000000000001", "2+2?", "4")).await);
    assert_eq!(chat_messages(&app, "1000000000000001").await, (vec![], vec![]));
    ok(post(&app, "/v1/traces", JSON, None, chat_span("1000000000000001", true)).await);
    assert_eq!(
        chat_messages(&app, "1000000000000001").await,
        (vec!["2+2?".to_string()], vec!["4".to_string()])
    );

    // After the span ended: the fill rewrites it with a new span_ended.
    ok(post(&app, "/v1/traces", JSON, None, chat_span("1000000000000002", true)).await);
    let before = span_events(&app).await;
    ok(post(&app, "/v1/logs", JSON, None, details_log("1000000000000002", "3+3?", "6")).await);
    assert_eq!(
        chat_messages(&app, "1000000000000002").await,
        (vec!["3+3?".to_string()], vec!["6".to_string()])
    );
    assert_eq!(span_events(&app).await, before + 1);

    // The same export again (and in protobuf): no doubled messages, no new event.
    ok(post(&app, "/v1/logs", JSON, None, details_log("1000000000000002", "3+3?", "6")).await);
    let pb = decode_logs_request(&details_log("1000000000000002", "3+3?", "6"), Encoding::Json)
        .expect("valid")
        .encode_to_vec();
    ok(post(&app, "/v1/logs", PROTOBUF, None, pb).await);
    assert_eq!(
        chat_messages(&app, "1000000000000002").await,
        (vec!["3+3?".to_string()], vec!["6".to_string()])
    );
    assert_eq!(span_events(&app).await, before + 1);

    // While it runs: the fill lands, and the end keeps it.
    ok(post(&app, "/v1/traces", JSON, None, chat_span("1000000000000003", false)).await);
    ok(post(&app, "/v1/logs", JSON, None, details_log("1000000000000003", "1+1?", "2")).await);
    assert_eq!(
        chat_messages(&app, "1000000000000003").await,
        (vec!["1+1?".to_string()], vec!["2".to_string()])
    );
    ok(post(&app, "/v1/traces", JSON, None, chat_span("1000000000000003", true)).await);
    assert_eq!(
        chat_messages(&app, "1000000000000003").await,
        (vec!["1+1?".to_string()], vec!["2".to_string()])
    );
    let (_, t) = app
        .call(Method::GET, &format!("/api/v1/traces/{FILL_TRACE}"), None)
        .await;
    assert_eq!(t["trace"]["rollups"]["span_count"], 3, "{}", t["trace"]);
    assert_eq!(t["trace"]["rollups"]["input_tokens"], 36);
    assert!(log_events_of(&app, FILL_TRACE).await.is_empty(), "no log events");
}
}

async fn log_events_of(app: &TestApp, trace: &str) -> Vec<Value> {
    let (status, v) = app
        .call(
            Method::GET,
            &format!("/api/v1/traces/{trace}/events?type=log"),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{v}");
    v["events"].as_array().expect("events").clone()
}

#[tokio::test]
async fn bad_log_bodies_are_400_and_bad_media_types_415() {
    let app = test_app();
    let (status, _, _) = post(
        &app,
        "/v1/logs",
        JSON,
        None,
        b"{\"resourceLogs\":{}}".to_vec(),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, _, _) = post(&app, "/v1/logs", "text/plain", None, b"x".to_vec()).await;
    assert_eq!(status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
}

#[tokio::test]
async fn metrics_are_accepted_dropped_and_answered_with_a_message() {
    let app = test_app();
    let (status, ct, answer) = post(&app, "/v1/metrics", JSON, None, b"{}".to_vec()).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(ct, JSON);
    let v: Value = serde_json::from_slice(&answer).expect("json");
    assert_eq!(v["partialSuccess"]["rejectedDataPoints"], "0");
    assert_eq!(v["partialSuccess"]["errorMessage"], METRICS_DROPPED_MESSAGE);

    let pb = ExportMetricsServiceRequest::default().encode_to_vec();
    let (status, ct, answer) = post(&app, "/v1/metrics", PROTOBUF, Some("gzip"), gzip(&pb)).await;
    assert_eq!((status, ct.as_str()), (StatusCode::OK, PROTOBUF));
    let resp = ExportMetricsServiceResponse::decode(answer.as_slice()).expect("protobuf");
    assert_eq!(
        resp.partial_success.map(|p| p.error_message),
        Some(METRICS_DROPPED_MESSAGE.to_string())
    );
    let (status, _, _) = post(&app, "/v1/metrics", "text/csv", None, b"a".to_vec()).await;
    assert_eq!(status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
}

/// Found by schemathesis: a metrics body was dropped unread, so `[null, null]` or bytes
/// that are no protobuf were answered 200 where the document says an
/// `ExportMetricsServiceRequest`. They are 400, in the request's encoding.
#[tokio::test]
async fn a_metrics_body_that_is_no_export_request_is_400() {
    let app = test_app();
    for (ct, body) in [
        (JSON, b"[null, null]".to_vec()),
        (JSON, b"\"metrics\"".to_vec()),
        (JSON, b"{\"resourceMetrics\": []} trailing".to_vec()),
        (PROTOBUF, vec![0x0f, 0xff, 0xff, 0xff]),
    ] {
        let (status, got_ct, answer) = post(&app, "/v1/metrics", ct, None, body.clone()).await;
        assert_eq!(
            status,
            StatusCode::BAD_REQUEST,
            "{ct} {:?}",
            String::from_utf8_lossy(&body)
        );
        assert_eq!(got_ct, ct);
        if ct == JSON {
            let v: Value = serde_json::from_slice(&answer).expect("json");
            assert_eq!(v["code"], tonic::Code::InvalidArgument as i32, "{v}");
        }
    }
    let (status, _, _) = post(
        &app,
        "/v1/metrics",
        JSON,
        None,
        br#"{"resourceMetrics": [{"scopeMetrics": []}]}"#.to_vec(),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
}

async fn grpc_channel(app: &TestApp) -> tonic::transport::Channel {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(traceway_server::otlp::grpc::serve(
        listener,
        app.state.clone(),
        std::future::pending(),
    ));
    tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .expect("endpoint")
        .connect_timeout(std::time::Duration::from_secs(5))
        .connect()
        .await
        .expect("connect")
}

#[tokio::test]
async fn grpc_logs_are_stored_and_grpc_metrics_dropped() {
    let app = test_app();
    let channel = grpc_channel(&app).await;
    let request = decode_logs_request(&fixture("logs_genai.json"), Encoding::Json).expect("valid");
    let resp = LogsServiceClient::new(channel.clone())
        .send_compressed(tonic::codec::CompressionEncoding::Gzip)
        .export(request)
        .await
        .expect("export")
        .into_inner();
    let partial = resp.partial_success.expect("partial success");
    assert_eq!(partial.rejected_log_records, 2);
    assert_eq!(log_events(&app).await.len(), 2);

    let resp = MetricsServiceClient::new(channel)
        .export(ExportMetricsServiceRequest::default())
        .await
        .expect("export")
        .into_inner();
    assert_eq!(
        resp.partial_success.map(|p| p.error_message),
        Some(METRICS_DROPPED_MESSAGE.to_string())
    );
}
