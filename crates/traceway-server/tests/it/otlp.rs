//! OTLP ingestion through the router (OTLP/HTTP) and an in-process gRPC server on
//! loopback port 0 (OTLP/gRPC): encodings, gzip, partial success, failures in the spec's
//! shape, the lifecycle of traces built from spans, idempotency, levels, overload.

use std::io::Write as _;
use std::sync::Arc;

use axum::body::Body;
use axum::http::{header, HeaderMap, Method, Request, StatusCode};
use bytes::Bytes;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use prost::Message as _;
use serde_json::{json, Value};
use tonic_types::pb::{BadRequest, RetryInfo, Status as RpcStatus};
use tower::ServiceExt;
use traceway_core::otlp::{decode_export_request, Encoding};
use traceway_core::Level;
use traceway_server::otlp::status::{BAD_REQUEST_TYPE, RETRY_INFO_TYPE};
use traceway_server::Config;
use traceway_store::{AppendOutcome, AppendRequest, BackendError, Store, TraceError};

use crate::{Backend, TestApp};

const PROTOBUF: &str = "application/x-protobuf";
const JSON: &str = "application/json";

fn fixture(name: &str) -> Vec<u8> {
    let path = format!(
        "{}/../traceway-core/tests/fixtures/otlp/{name}",
        env!("CARGO_MANIFEST_DIR")
    );
    std::fs::read(path).expect("fixture")
}

fn to_protobuf(json_body: &[u8]) -> Vec<u8> {
    decode_export_request(json_body, Encoding::Json)
        .expect("valid OTLP/JSON")
        .encode_to_vec()
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(data).expect("gzip");
    e.finish().expect("gzip")
}

/// One OTLP/JSON span. `status`: 0 unset, 1 ok, 2 error.
fn span(
    trace: &str,
    id: &str,
    parent: Option<&str>,
    name: &str,
    attrs: Value,
    status: i32,
) -> Value {
    let attributes: Vec<Value> = attrs
        .as_object()
        .map(|m| {
            m.iter()
                .map(|(k, v)| {
                    let value = match v {
                        Value::String(s) => json!({"stringValue": s}),
                        Value::Number(n) if n.is_i64() => json!({"intValue": n.to_string()}),
                        Value::Number(n) => json!({"doubleValue": n}),
                        Value::Bool(b) => json!({"boolValue": b}),
                        other => json!({"stringValue": other.to_string()}),
                    };
                    json!({"key": k, "value": value})
                })
                .collect()
        })
        .unwrap_or_default();
    json!({
        "traceId": trace,
        "spanId": id,
        "parentSpanId": parent.unwrap_or(""),
        "name": name,
        "kind": 1,
        "startTimeUnixNano": "1763719200000000000",
        "endTimeUnixNano": "1763719201000000000",
        "attributes": attributes,
        "status": {"code": status, "message": if status == 2 { "failed" } else { "" }},
    })
}

fn export(spans: Vec<Value>) -> Vec<u8> {
    serde_json::to_vec(&json!({"resourceSpans": [{
        "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "svc"}}]},
        "scopeSpans": [{"scope": {"name": "test"}, "spans": spans}],
    }]}))
    .expect("json")
}

const T1: &str = "0af7651916cd43dd8448eb211c80319c";

struct Answer {
    status: StatusCode,
    headers: HeaderMap,
    body: Bytes,
}

impl Answer {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }

    fn content_type(&self) -> &str {
        self.headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }

    /// The `google.rpc.Status` of a failure, in whichever encoding it came.
    fn status(&self) -> RpcStatus {
        match self.content_type() {
            PROTOBUF => RpcStatus::decode(self.body.as_ref()).expect("protobuf Status"),
            JSON => {
                let v = self.json();
                RpcStatus {
                    code: v["code"].as_i64().expect("code") as i32,
                    message: v["message"].as_str().expect("message").to_string(),
                    details: Vec::new(),
                }
            }
            other => panic!("unexpected Content-Type {other:?}"),
        }
    }
}

async fn post(
    app: &TestApp,
    content_type: Option<&str>,
    encoding: Option<&str>,
    body: Vec<u8>,
) -> Answer {
    post_as(app, "default", content_type, encoding, body).await
}

async fn post_as(
    app: &TestApp,
    tenant: &str,
    content_type: Option<&str>,
    encoding: Option<&str>,
    body: Vec<u8>,
) -> Answer {
    let mut req = Request::builder()
        .method(Method::POST)
        .uri("/v1/traces")
        .header("x-traceway-tenant", tenant);
    if let Some(ct) = content_type {
        req = req.header(header::CONTENT_TYPE, ct);
    }
    if let Some(enc) = encoding {
        req = req.header(header::CONTENT_ENCODING, enc);
    }
    let resp = app
        .router
        .clone()
        .oneshot(req.body(Body::from(body)).expect("request"))
        .await
        .expect("infallible");
    let (status, headers) = (resp.status(), resp.headers().clone());
    let body = axum::body::to_bytes(resp.into_body(), 64 << 20)
        .await
        .expect("body");
    Answer {
        status,
        headers,
        body,
    }
}

async fn trace_of(app: &TestApp, id: &str) -> Value {
    let (status, v) = app
        .call(Method::GET, &format!("/api/v1/traces/{id}"), None)
        .await;
    assert_eq!(status, StatusCode::OK, "{v}");
    v
}

async fn events_of(app: &TestApp, id: &str, query: &str) -> Vec<Value> {
    let (status, v) = app
        .call(
            Method::GET,
            &format!("/api/v1/traces/{id}/events?{query}"),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{v}");
    v["events"].as_array().expect("events").clone()
}

fn count_spans(nodes: &Value) -> usize {
    nodes.as_array().map_or(0, |a| {
        a.iter().map(|n| 1 + count_spans(&n["children"])).sum()
    })
}

// ---------------------------------------------------------------------------------------
// OTLP/HTTP: encodings and answers.
// ---------------------------------------------------------------------------------------

on_both! {
#[tokio::test]
async fn otlp_json_fixtures_are_stored_and_read_back(backend: Backend) {
    let app = backend.app().await;
    for name in ["openinference_agent.json", "genai_agent.json"] {
        let a = post(&app, Some(JSON), None, fixture(name)).await;
        assert_eq!(
            a.status,
            StatusCode::OK,
            "{name}: {}",
            String::from_utf8_lossy(&a.body)
        );
        assert_eq!(
            a.content_type(),
            JSON,
            "{name}: answered in the request's encoding"
        );
        assert_eq!(
            a.json(),
            json!({}),
            "{name}: full success leaves partialSuccess unset"
        );
    }

    let oi = trace_of(&app, "4bf92f3577b34da6a3ce929d0e0e4736").await;
    let t = &oi["trace"];
    assert_eq!(t["state"], "COMPLETED", "root status ok: {t}");
    assert_eq!(t["name"], "support_agent");
    assert_eq!(t["agent_id"], "support-agent");
    assert_eq!(t["metadata"]["service.name"], "support-bot");
    assert_eq!(t["rollups"]["span_count"], 6);
    assert_eq!(t["rollups"]["total_tokens"], 155);
    assert_eq!(count_spans(&oi["spans"]), 6);
    assert_eq!(oi["spans"][0]["kind"], "agent");

    // The GenAI fixture writes its trace id in upper case; it is the same trace.
    let genai = trace_of(&app, "5b8efff798038103d269b633813fc60c").await;
    assert_eq!(genai["trace"]["agent_id"], "TravelPlanner");
    assert_eq!(genai["trace"]["state"], "COMPLETED");
    assert_eq!(count_spans(&genai["spans"]), 3);
    let (_, list) = app.call(Method::GET, "/api/v1/traces", None).await;
    assert_eq!(list["traces"].as_array().map(Vec::len), Some(2));
}
}

on_both! {
#[tokio::test]
async fn protobuf_exports_are_answered_in_protobuf(backend: Backend) {
    let app = backend.app().await;
    let a = post(
        &app,
        Some(PROTOBUF),
        None,
        to_protobuf(&fixture("openinference_agent.json")),
    )
    .await;
    assert_eq!(a.status, StatusCode::OK);
    assert_eq!(a.content_type(), PROTOBUF);
    let resp = ExportTraceServiceResponse::decode(a.body.as_ref()).expect("a protobuf response");
    assert_eq!(resp.partial_success, None);
    let v = trace_of(&app, "4bf92f3577b34da6a3ce929d0e0e4736").await;
    assert_eq!(v["trace"]["state"], "COMPLETED");
    assert_eq!(count_spans(&v["spans"]), 6);
}
}

on_both! {
#[tokio::test]
async fn gzipped_bodies_are_accepted_in_both_encodings(backend: Backend) {
    let app = backend.app().await;
    let json_body = fixture("genai_agent.json");
    let a = post(
        &app,
        Some("application/json; charset=utf-8"),
        Some("gzip"),
        gzip(&json_body),
    )
    .await;
    assert_eq!(
        a.status,
        StatusCode::OK,
        "{}",
        String::from_utf8_lossy(&a.body)
    );
    let a = post(
        &app,
        Some(PROTOBUF),
        Some("gzip"),
        gzip(&to_protobuf(&fixture("openinference_agent.json"))),
    )
    .await;
    assert_eq!(
        a.status,
        StatusCode::OK,
        "{}",
        String::from_utf8_lossy(&a.body)
    );
    assert_eq!(
        count_spans(&trace_of(&app, "5b8efff798038103d269b633813fc60c").await["spans"]),
        3
    );
    assert_eq!(
        count_spans(&trace_of(&app, "4bf92f3577b34da6a3ce929d0e0e4736").await["spans"]),
        6
    );
}
}

on_both! {
#[tokio::test]
async fn invalid_spans_are_a_partial_success_and_the_rest_is_stored(backend: Backend) {
    let app = backend.app().await;
    let body = export(vec![
        span(T1, "1000000000000001", None, "root", json!({}), 1),
        span(
            "00000000000000000000000000000000",
            "1000000000000002",
            None,
            "zero trace",
            json!({}),
            0,
        ),
        span(T1, "0000000000000000", None, "zero span", json!({}), 0),
    ]);
    let a = post(&app, Some(JSON), None, body.clone()).await;
    assert_eq!(a.status, StatusCode::OK);
    let v = a.json();
    assert_eq!(v["partialSuccess"]["rejectedSpans"], "2", "{v}");
    let msg = v["partialSuccess"]["errorMessage"]
        .as_str()
        .expect("message");
    assert!(msg.contains("all zeros"), "{msg}");
    assert_eq!(
        count_spans(&trace_of(&app, T1).await["spans"]),
        1,
        "the valid span is kept"
    );

    let a = post(&app, Some(PROTOBUF), None, to_protobuf(&body)).await;
    let resp = ExportTraceServiceResponse::decode(a.body.as_ref()).expect("protobuf");
    let partial = resp.partial_success.expect("partial_success is set");
    assert_eq!(partial.rejected_spans, 2);
    assert!(!partial.error_message.is_empty());
}
}

on_both! {
#[tokio::test]
async fn undecodable_bodies_are_400_with_a_status_in_the_request_encoding(backend: Backend) {
    let app = backend.app().await;
    let a = post(&app, Some(JSON), None, b"{\"resourceSpans\": 5}".to_vec()).await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST);
    assert_eq!(a.content_type(), JSON);
    let v = a.json();
    assert_eq!(v["code"], 3, "INVALID_ARGUMENT: {v}");
    assert!(
        v["message"]
            .as_str()
            .unwrap_or("")
            .contains("resourceSpans"),
        "{v}"
    );
    assert_eq!(v["details"][0]["@type"], BAD_REQUEST_TYPE);

    let a = post(
        &app,
        Some(PROTOBUF),
        None,
        b"\xff\xff\xff not protobuf".to_vec(),
    )
    .await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST);
    assert_eq!(a.content_type(), PROTOBUF);
    let st = a.status();
    assert!(st.message.contains("protobuf"), "{}", st.message);
    assert_eq!(st.details[0].type_url, BAD_REQUEST_TYPE);
    let bad = BadRequest::decode(st.details[0].value.as_slice()).expect("BadRequest");
    assert_eq!(bad.field_violations[0].description, st.message);

    let a = post(&app, Some(PROTOBUF), Some("gzip"), b"not gzip".to_vec()).await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST);
    assert!(a.status().message.contains("gzip"));

    let a = post_as(&app, "bad tenant!", Some(JSON), None, export(vec![])).await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST);
    assert!(a.status().message.contains("X-Traceway-Tenant"));
}
}

on_both! {
#[tokio::test]
async fn other_media_types_and_encodings_are_415(backend: Backend) {
    let app = backend.app().await;
    let body = fixture("genai_agent.json");
    for (ct, enc) in [
        (Some("text/plain"), None),
        (Some("application/grpc"), None),
        (None, None),
        (Some(JSON), Some("br")),
        (Some(JSON), Some("deflate")),
    ] {
        let a = post(&app, ct, enc, body.clone()).await;
        assert_eq!(
            a.status,
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "{ct:?} {enc:?}"
        );
        // Failures are a google.rpc.Status; with no usable media type, in protobuf.
        let expected_ct = if enc.is_some() { JSON } else { PROTOBUF };
        assert_eq!(a.content_type(), expected_ct, "{ct:?} {enc:?}");
        assert!(!a.status().message.is_empty());
    }
    let (_, list) = app.call(Method::GET, "/api/v1/traces", None).await;
    assert_eq!(list["traces"], json!([]), "nothing was stored");
}
}

on_both! {
#[tokio::test]
async fn bodies_over_the_cap_are_413_compressed_or_not(backend: Backend) {
    let config = Config {
        max_body_bytes: 64 * 1024,
        ..Config::default()
    };
    let app = backend.app_with(config).await;
    let big_attr = "x".repeat(100 * 1024);
    let body = export(vec![span(
        T1,
        "1000000000000001",
        None,
        "root",
        json!({"blob": big_attr}),
        0,
    )]);
    let a = post(&app, Some(JSON), None, body.clone()).await;
    assert_eq!(a.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(a.content_type(), JSON);
    assert!(
        a.status().message.contains("65536"),
        "{}",
        a.status().message
    );

    // A gzip bomb: 4 KiB on the wire, 16 MiB inflated. Refused once 64 KiB are out.
    let bomb = gzip(&vec![0u8; 16 << 20]);
    assert!(bomb.len() < 64 * 1024, "the bomb is small on the wire");
    let a = post(&app, Some(PROTOBUF), Some("gzip"), bomb).await;
    assert_eq!(a.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert!(
        a.status().message.contains("decompressed"),
        "{}",
        a.status().message
    );

    // The compressed form of an over-cap body is just as refused.
    let a = post(&app, Some(JSON), Some("gzip"), gzip(&body)).await;
    assert_eq!(a.status, StatusCode::PAYLOAD_TOO_LARGE);
    let (_, list) = app.call(Method::GET, "/api/v1/traces", None).await;
    assert_eq!(list["traces"], json!([]));
}
}

// ---------------------------------------------------------------------------------------
// Lifecycle and idempotency.
// ---------------------------------------------------------------------------------------

on_both! {
#[tokio::test]
async fn an_exported_batch_sent_twice_is_stored_once(backend: Backend) {
    let app = backend.app().await;
    let body = fixture("openinference_agent.json");
    assert_eq!(
        post(&app, Some(JSON), None, body.clone()).await.status,
        StatusCode::OK
    );
    let id = "4bf92f3577b34da6a3ce929d0e0e4736";
    let before = trace_of(&app, id).await;
    let events_before = events_of(&app, id, "limit=1000").await;
    // The retry, in the other encoding and gzipped: same spans, same span events.
    let a = post(
        &app,
        Some(PROTOBUF),
        Some("gzip"),
        gzip(&to_protobuf(&body)),
    )
    .await;
    assert_eq!(a.status, StatusCode::OK);
    let after = trace_of(&app, id).await;
    assert_eq!(after["trace"]["rollups"], before["trace"]["rollups"]);
    assert_eq!(after["trace"]["last_seq"], before["trace"]["last_seq"]);
    assert_eq!(after["spans"], before["spans"]);
    assert_eq!(events_of(&app, id, "limit=1000").await, events_before);
    // The failing span's two events (an exception and a log) are there once.
    assert_eq!(events_of(&app, id, "type=error").await.len(), 1);
    assert_eq!(events_of(&app, id, "type=log").await.len(), 1);
}
}

on_both! {
#[tokio::test]
async fn children_open_the_trace_and_the_root_names_and_ends_it(backend: Backend) {
    let app = backend.app().await;
    let child = |id: &str, name: &str| {
        span(
            T1,
            id,
            Some("1000000000000001"),
            name,
            json!({"openinference.span.kind": "TOOL", "session.id": "s-1"}),
            1,
        )
    };
    let a = post(
        &app,
        Some(JSON),
        None,
        export(vec![child("1000000000000002", "first tool")]),
    )
    .await;
    assert_eq!(a.status, StatusCode::OK);
    let v = trace_of(&app, T1).await;
    assert_eq!(
        v["trace"]["state"], "RUNNING",
        "no root yet: {}",
        v["trace"]
    );
    assert_eq!(v["trace"]["name"], Value::Null);
    assert_eq!(v["trace"]["session_id"], "s-1");
    assert_eq!(v["trace"]["metadata"]["service.name"], "svc");

    let a = post(
        &app,
        Some(JSON),
        None,
        export(vec![child("1000000000000003", "second tool")]),
    )
    .await;
    assert_eq!(a.status, StatusCode::OK);
    assert_eq!(
        trace_of(&app, T1).await["trace"]["state"],
        "RUNNING",
        "still no root"
    );

    let root = span(
        T1,
        "1000000000000001",
        None,
        "agent run",
        json!({"openinference.span.kind": "AGENT"}),
        0,
    );
    assert_eq!(
        post(&app, Some(JSON), None, export(vec![root]))
            .await
            .status,
        StatusCode::OK
    );
    let v = trace_of(&app, T1).await;
    assert_eq!(v["trace"]["state"], "COMPLETED");
    assert_eq!(
        v["trace"]["name"], "agent run",
        "named after the root when it came"
    );
    assert_eq!(v["spans"][0]["name"], "agent run");
    assert_eq!(v["spans"][0]["children"].as_array().map(Vec::len), Some(2));
    let changes = events_of(&app, T1, "type=state_changed").await;
    let last = &changes.last().expect("a change")["payload"];
    assert_eq!(
        (last["to"].as_str(), last["reason"].as_str()),
        (Some("COMPLETED"), Some("root span ended"))
    );
    assert_eq!(events_of(&app, T1, "type=trace_ended").await.len(), 1);
}
}

on_both! {
#[tokio::test]
async fn a_failed_root_errors_the_trace_and_late_spans_are_still_stored(backend: Backend) {
    let app = backend.app().await;
    let root = span(T1, "1000000000000001", None, "agent run", json!({}), 2);
    assert_eq!(
        post(&app, Some(JSON), None, export(vec![root.clone()]))
            .await
            .status,
        StatusCode::OK
    );
    let v = trace_of(&app, T1).await;
    assert_eq!(v["trace"]["state"], "ERRORED");
    let change = &events_of(&app, T1, "type=state_changed").await[0]["payload"];
    assert_eq!(change["reason"], "root span ended with an error");

    // A span that ends after its root (an async tool, a slow exporter): stored and
    // counted; the trace stays ERRORED.
    let late = span(
        T1,
        "1000000000000002",
        Some("1000000000000001"),
        "late tool",
        json!({"openinference.span.kind": "TOOL"}),
        1,
    );
    let a = post(&app, Some(JSON), None, export(vec![late])).await;
    assert_eq!(a.status, StatusCode::OK);
    let v = trace_of(&app, T1).await;
    assert_eq!(v["trace"]["state"], "ERRORED");
    assert_eq!(v["trace"]["rollups"]["span_count"], 2);
    assert_eq!(count_spans(&v["spans"]), 2);

    // A retried root is a duplicate, not a conflict; a second root that disagrees is
    // stored, and the first root's verdict stands.
    assert_eq!(
        post(&app, Some(JSON), None, export(vec![root]))
            .await
            .status,
        StatusCode::OK
    );
    let other_root = span(T1, "1000000000000009", None, "second root", json!({}), 1);
    assert_eq!(
        post(&app, Some(JSON), None, export(vec![other_root]))
            .await
            .status,
        StatusCode::OK
    );
    let v = trace_of(&app, T1).await;
    assert_eq!(v["trace"]["state"], "ERRORED");
    assert_eq!(v["trace"]["rollups"]["span_count"], 3);
}
}

on_both! {
#[tokio::test]
async fn spans_of_many_traces_in_one_export_each_get_their_trace(backend: Backend) {
    let app = backend.app().await;
    let ids: Vec<String> = (1..=20).map(|i| format!("{i:032x}")).collect();
    let mut spans = Vec::new();
    for (i, t) in ids.iter().enumerate() {
        spans.push(span(
            t,
            "2000000000000002",
            Some("2000000000000001"),
            "llm",
            json!({"llm.model_name": "m", "llm.token_count.prompt": 10}),
            0,
        ));
        // Every other trace gets its root in this batch.
        if i % 2 == 0 {
            spans.push(span(
                t,
                "2000000000000001",
                None,
                &format!("run {i}"),
                json!({"agent.name": "a"}),
                0,
            ));
        }
    }
    let a = post(&app, Some(PROTOBUF), None, to_protobuf(&export(spans))).await;
    assert_eq!(a.status, StatusCode::OK);
    for (i, t) in ids.iter().enumerate() {
        let v = trace_of(&app, t).await;
        let want = if i % 2 == 0 { "COMPLETED" } else { "RUNNING" };
        assert_eq!(v["trace"]["state"], want, "trace {i}");
        assert_eq!(v["trace"]["rollups"]["input_tokens"], 10, "trace {i}");
    }
}
}

on_both! {
#[tokio::test]
async fn otlp_traces_take_the_default_level_and_debug_keeps_mapped_attributes(backend: Backend) {
    let body = export(vec![span(
        T1,
        "1000000000000001",
        None,
        "chat",
        json!({"openinference.span.kind": "LLM", "llm.model_name": "gpt-4o", "llm.token_count.prompt": 7}),
        0,
    )]);
    let mut config = Config::default();
    let detailed = backend.app_with(config.clone()).await;
    assert_eq!(
        post(&detailed, Some(JSON), None, body.clone()).await.status,
        StatusCode::OK
    );
    let v = trace_of(&detailed, T1).await;
    assert_eq!(v["trace"]["level"], "detailed");
    let attrs = &v["spans"][0]["attributes"];
    assert_eq!(
        attrs.get("llm.model_name"),
        None,
        "mapped attributes are not repeated: {attrs}"
    );
    assert_eq!(v["spans"][0]["llm"]["model"], "gpt-4o");

    config.capture.default_level = Level::Debug;
    let debug = backend.app_with(config.clone()).await;
    assert_eq!(
        post(&debug, Some(JSON), None, body.clone()).await.status,
        StatusCode::OK
    );
    let v = trace_of(&debug, T1).await;
    assert_eq!(v["trace"]["level"], "debug");
    let attrs = &v["spans"][0]["attributes"];
    assert_eq!(attrs["llm.model_name"], "gpt-4o", "{attrs}");
    assert_eq!(attrs["openinference.span.kind"], "LLM");
    assert_eq!(attrs["resource.service.name"], "svc");
    assert_eq!(v["spans"][0]["llm"]["input_tokens"], 7);

    config.capture.default_level = Level::Minimal;
    let minimal = backend.app_with(config).await;
    assert_eq!(
        post(&minimal, Some(JSON), None, body).await.status,
        StatusCode::OK
    );
    let v = trace_of(&minimal, T1).await;
    assert_eq!(v["trace"]["level"], "minimal");
    assert_eq!(
        v["spans"][0].get("llm"),
        None,
        "no model or tokens at minimal"
    );
}
}

on_both! {
#[tokio::test]
async fn the_tenant_header_scopes_otlp_traces(backend: Backend) {
    let app = backend.app().await;
    let body = fixture("genai_agent.json");
    assert_eq!(
        post_as(&app, "team-a", Some(JSON), None, body).await.status,
        StatusCode::OK
    );
    let (status, _) = app
        .call(
            Method::GET,
            "/api/v1/traces/5b8efff798038103d269b633813fc60c",
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "not the default tenant's");
    let (status, v) = app
        .call_as(
            "team-a",
            Method::GET,
            "/api/v1/traces/5b8efff798038103d269b633813fc60c",
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{v}");
}
}

// ---------------------------------------------------------------------------------------
// Overload.
// ---------------------------------------------------------------------------------------

/// A store whose appends fail with `error`; everything else goes to `inner`.
struct Refusing {
    inner: Arc<dyn Store>,
    error: TraceError,
}

impl traceway_store::Decorates for Refusing {
    fn inner(&self) -> &dyn Store {
        &*self.inner
    }
}

#[async_trait::async_trait]
impl traceway_store::TracesLayer for Refusing {
    async fn append(&self, _: AppendRequest) -> Result<AppendOutcome, TraceError> {
        Err(self.error.clone())
    }
}

impl traceway_store::LifecycleLayer for Refusing {}
impl traceway_store::LeasesLayer for Refusing {}
impl traceway_store::ApiKeysLayer for Refusing {}
impl traceway_store::LiveFeedLayer for Refusing {}
impl traceway_store::WorkflowContextsLayer for Refusing {}

async fn refusing(backend: Backend, error: TraceError) -> TestApp {
    backend
        .app_wrapping(Config::default(), move |inner| {
            Arc::new(Refusing { inner, error })
        })
        .await
}

fn retry_delay(st: &RpcStatus) -> Option<i64> {
    st.details
        .iter()
        .find(|d| d.type_url == RETRY_INFO_TYPE)
        .map(|d| RetryInfo::decode(d.value.as_slice()).expect("RetryInfo"))
        .and_then(|r| r.retry_delay)
        .map(|d| d.seconds)
}

on_both! {
#[tokio::test]
async fn a_full_store_is_429_and_a_stopped_store_503_with_retry_after(backend: Backend) {
    let body = to_protobuf(&fixture("genai_agent.json"));
    for (error, want) in [
        (
            BackendError::overloaded("queue full").into(),
            StatusCode::TOO_MANY_REQUESTS,
        ),
        (
            BackendError::unavailable("shut down").into(),
            StatusCode::SERVICE_UNAVAILABLE,
        ),
    ] {
        let app = refusing(backend, error).await;
        let a = post(&app, Some(PROTOBUF), None, body.clone()).await;
        assert_eq!(a.status, want);
        assert_eq!(
            a.headers
                .get(header::RETRY_AFTER)
                .map(|v| v.to_str().unwrap_or("")),
            Some("1")
        );
        let st = a.status();
        assert_eq!(retry_delay(&st), Some(1));
        assert!(st.message.contains("retry later"), "{}", st.message);
        assert!(
            !st.message.contains("queue full"),
            "internal detail leaked: {}",
            st.message
        );
    }
}
}

// ---------------------------------------------------------------------------------------
// OTLP/gRPC, on a loopback port.
// ---------------------------------------------------------------------------------------

/// Serves the app's gRPC service on 127.0.0.1:0; returns a connected client.
async fn grpc_client(app: &TestApp) -> TraceServiceClient<tonic::transport::Channel> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let state = app.state.clone();
    tokio::spawn(traceway_server::otlp::grpc::serve(
        listener,
        state,
        std::future::pending(),
    ));
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .expect("endpoint")
        .connect_timeout(std::time::Duration::from_secs(5))
        .connect()
        .await
        .expect("connect");
    TraceServiceClient::new(channel)
}

fn request_of(json_body: &[u8]) -> ExportTraceServiceRequest {
    decode_export_request(json_body, Encoding::Json).expect("valid")
}

on_both! {
#[tokio::test]
async fn grpc_export_stores_spans_gzipped_or_not_and_reports_partial_success(backend: Backend) {
    let app = backend.app().await;
    let mut client = grpc_client(&app).await;
    let resp = client
        .export(request_of(&fixture("genai_agent.json")))
        .await
        .expect("export");
    assert_eq!(resp.into_inner().partial_success, None);
    let mut gz = client
        .clone()
        .send_compressed(tonic::codec::CompressionEncoding::Gzip)
        .accept_compressed(tonic::codec::CompressionEncoding::Gzip);
    gz.export(request_of(&fixture("openinference_agent.json")))
        .await
        .expect("gzipped export");
    assert_eq!(
        trace_of(&app, "5b8efff798038103d269b633813fc60c").await["trace"]["state"],
        "COMPLETED"
    );
    assert_eq!(
        count_spans(&trace_of(&app, "4bf92f3577b34da6a3ce929d0e0e4736").await["spans"]),
        6
    );

    let mixed = export(vec![
        span(T1, "1000000000000001", None, "root", json!({}), 0),
        span(T1, "0000000000000000", None, "zero", json!({}), 0),
    ]);
    let resp = client
        .export(request_of(&mixed))
        .await
        .expect("export")
        .into_inner();
    let partial = resp.partial_success.expect("partial success");
    assert_eq!(partial.rejected_spans, 1);
    assert!(partial.error_message.contains("all zeros"));

    // Tenants travel as metadata.
    let mut req = tonic::Request::new(request_of(&fixture("genai_agent.json")));
    req.metadata_mut()
        .insert("x-traceway-tenant", "team-g".parse().expect("ascii"));
    client.export(req).await.expect("export as team-g");
    let (status, _) = app
        .call_as(
            "team-g",
            Method::GET,
            "/api/v1/traces/5b8efff798038103d269b633813fc60c",
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let mut req = tonic::Request::new(request_of(&mixed));
    req.metadata_mut()
        .insert("x-traceway-tenant", "no spaces".parse().expect("ascii"));
    let err = client.export(req).await.expect_err("bad tenant");
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
}
}

on_both! {
#[tokio::test]
async fn grpc_messages_over_the_cap_are_refused_also_when_gzip_inflates_them(backend: Backend) {
    let app = backend.app_with(Config {
        max_body_bytes: 64 * 1024,
        ..Config::default()
    }).await;
    let client = grpc_client(&app).await;
    let big = export(vec![span(
        T1,
        "1000000000000001",
        None,
        "root",
        json!({"blob": "y".repeat(1 << 20)}),
        0,
    )]);
    let mut gz = client
        .send_compressed(tonic::codec::CompressionEncoding::Gzip)
        .max_encoding_message_size(usize::MAX);
    // ~1 MiB of one byte compresses to a few KiB: only the decompressed size is over.
    let err = gz.export(request_of(&big)).await.expect_err("over the cap");
    assert_eq!(err.code(), tonic::Code::ResourceExhausted, "{err:?}");
    assert!(err.message().contains("size limit"), "{}", err.message());
    let (_, list) = app.call(Method::GET, "/api/v1/traces", None).await;
    assert_eq!(list["traces"], json!([]));
}
}

on_both! {
#[tokio::test]
async fn grpc_overload_is_resource_exhausted_and_shutdown_unavailable_with_retry_info(backend: Backend) {
    for (error, want) in [
        (
            BackendError::overloaded("queue full").into(),
            tonic::Code::ResourceExhausted,
        ),
        (
            BackendError::unavailable("shut down").into(),
            tonic::Code::Unavailable,
        ),
    ] {
        let app = refusing(backend, error).await;
        let mut client = grpc_client(&app).await;
        let err = client
            .export(request_of(&fixture("genai_agent.json")))
            .await
            .expect_err("refused");
        assert_eq!(err.code(), want);
        let st = RpcStatus::decode(err.details()).expect("google.rpc.Status details");
        assert_eq!(st.code, want as i32);
        assert_eq!(retry_delay(&st), Some(1), "RetryInfo makes it retryable");
    }
}
}

/// 3.4: a Redis restarting (refusing connections, then loading its dataset and answering
/// `LOADING`) made ingest answer 500 and gRPC `INTERNAL`, which exporters do not retry.
/// Every refusal is now 503 with `Retry-After` (REST and OTLP/HTTP) or `UNAVAILABLE` with
/// `RetryInfo` (gRPC), and the same requests succeed once Redis is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_restarting_and_loading_its_dataset_answers_503_or_unavailable_never_500() {
    use std::time::{Duration, Instant};
    use traceway_store::redis::{RedisConfig, RedisStore};

    // 40,000 filler keys loaded at 50 µs each: about 2 s of LOADING after the restart.
    let mut server = crate::redis_server::RedisServer::start_with(&[
        "--save",
        "",
        "--appendonly",
        "no",
        "--enable-debug-command",
        "local",
        "--key-load-delay",
        "50",
        "--loading-process-events-interval-bytes",
        "1024",
    ]);
    let clock = traceway_store::ManualClock::new(traceway_store::conformance::start_time());
    let store = RedisStore::open(RedisConfig::new(server.url()), Arc::new(clock.clone()))
        .await
        .expect("open");
    let app = TestApp::assemble(
        Arc::new(store),
        Config::default(),
        clock,
        tempfile::tempdir().expect("tempdir"),
        None,
    );
    let (status, t) = app
        .call(Method::POST, "/api/v1/traces", Some(json!({"name": "r"})))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{t}");
    let id = t["trace_id"].as_str().expect("id").to_string();
    let mut client = grpc_client(&app).await;
    assert!(server
        .command("DEBUG POPULATE 40000 filler 10")
        .is_some_and(|r| r.starts_with("+OK")));
    let saved = server.command("SAVE");
    assert!(
        saved.as_deref().is_some_and(|r| r.starts_with("+OK")),
        "{saved:?}"
    );
    server.restart_no_wait();

    let retry_after = |h: &HeaderMap| h.get(header::RETRY_AFTER).is_some();
    let (mut refused, mut loading_seen, mut n) = (0u32, false, 0u64);
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        assert!(Instant::now() < deadline, "Redis did not come back");
        n += 1;
        loading_seen |= server
            .command("PING")
            .is_some_and(|r| r.starts_with("-LOADING"));
        let mut ok = true;
        // REST: an append and a read.
        for (method, uri, body) in [
            (
                Method::POST,
                format!("/api/v1/traces/{id}/events"),
                Some(json!({"events": [{"type": "log", "id": format!("l{n}"), "message": "m"}]})),
            ),
            (Method::GET, format!("/api/v1/traces/{id}"), None),
        ] {
            let mut req = Request::builder().method(method).uri(&uri);
            if body.is_some() {
                req = req.header(header::CONTENT_TYPE, JSON);
            }
            let body = body.map_or(Body::empty(), |b| Body::from(b.to_string()));
            let resp = app
                .router
                .clone()
                .oneshot(req.body(body).expect("request"))
                .await
                .expect("infallible");
            match resp.status() {
                s if s.is_success() => {}
                StatusCode::SERVICE_UNAVAILABLE => {
                    assert!(
                        retry_after(resp.headers()),
                        "{uri}: 503 without Retry-After"
                    );
                    refused += 1;
                    ok = false;
                }
                other => panic!("{uri} answered {other} while Redis restarted"),
            }
        }
        // OTLP/HTTP.
        let a = post(
            &app,
            Some(PROTOBUF),
            None,
            to_protobuf(&fixture("genai_agent.json")),
        )
        .await;
        match a.status {
            StatusCode::OK => {}
            StatusCode::SERVICE_UNAVAILABLE => {
                assert!(retry_after(&a.headers), "OTLP 503 without Retry-After");
                assert_eq!(a.status().code, tonic::Code::Unavailable as i32);
                refused += 1;
                ok = false;
            }
            other => panic!("OTLP/HTTP answered {other} while Redis restarted"),
        }
        // OTLP/gRPC.
        match client
            .export(request_of(&fixture("genai_agent.json")))
            .await
        {
            Ok(_) => {}
            Err(e) => {
                assert_eq!(e.code(), tonic::Code::Unavailable, "gRPC: {e:?}");
                let st = RpcStatus::decode(e.details()).expect("google.rpc.Status details");
                assert_eq!(retry_delay(&st), Some(1), "RetryInfo");
                refused += 1;
                ok = false;
            }
        }
        if ok && loading_seen {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(refused > 0, "the restart was seen by the requests");
}

on_both! {
/// Deliver 2: a tenant whose stored event log reaches its quota of stored bytes is refused
/// on every write path (REST 429 with Retry-After, OTLP/HTTP 429 with a Status, gRPC
/// `RESOURCE_EXHAUSTED` with `RetryInfo`); its reads and deletes still work, a delete
/// brings it back under, and another tenant writes throughout.
#[tokio::test]
async fn a_tenant_past_its_stored_bytes_is_refused_with_retry_after_on_every_protocol_and_others_still_write(backend: Backend) {
    const QUOTA: u64 = 8 * 1024;
    let app = backend
        .app_with(traceway_server::Config {
            quota_stored_bytes: QUOTA,
            ..traceway_server::Config::default()
        })
        .await;
    let (status, t) = app
        .call_as("full", Method::POST, "/api/v1/traces", Some(json!({})))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{t}");
    let id = t["trace_id"].as_str().expect("id").to_string();
    let events = |base: u64| {
        json!({"events": (0..10).map(|i| json!({"type": "span_ended", "span": {
            "span_id": format!("{:016x}", base + i), "name": "step", "kind": "tool"}})).collect::<Vec<_>>()})
    };
    // Fill it past the quota (the figure is the store's own).
    let mut base = 1;
    while app.store.stored_bytes("full").await.expect("bytes") < QUOTA {
        let (status, b) = app
            .call_as("full", Method::POST, &format!("/api/v1/traces/{id}/events"), Some(events(base)))
            .await;
        assert!(status.is_success(), "{status} {b}");
        base += 10;
        assert!(base < 100_000, "never reached the quota");
    }
    // The server reads the figure at most once a second per tenant: poll for the refusal.
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(60);
    let refused = loop {
        let req = Request::builder()
            .method(Method::POST)
            .uri(format!("/api/v1/traces/{id}/events"))
            .header("x-traceway-tenant", "full")
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from(events(base).to_string()))
            .expect("request");
        base += 10;
        let resp = app.router.clone().oneshot(req).await.expect("infallible");
        if resp.status() == StatusCode::TOO_MANY_REQUESTS {
            break resp;
        }
        assert!(resp.status().is_success(), "{}", resp.status());
        assert!(tokio::time::Instant::now() < deadline, "never refused");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    assert_eq!(
        refused.headers().get(header::RETRY_AFTER).map(|v| v.to_str().unwrap_or("")),
        Some("1")
    );
    let body = axum::body::to_bytes(refused.into_body(), 1 << 20).await.expect("body");
    let v: Value = serde_json::from_slice(&body).expect("json");
    assert_eq!(v["error"]["code"], "quota_exceeded", "{v}");
    assert!(v["error"]["message"].as_str().unwrap_or("").contains("bytes"), "{v}");
    let (status, _) = app
        .call_as("full", Method::POST, "/api/v1/traces", Some(json!({})))
        .await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "a new trace is a write too");

    // OTLP/HTTP and gRPC refuse it as retryable.
    let a = post_as(&app, "full", Some(PROTOBUF), None, to_protobuf(&fixture("genai_agent.json"))).await;
    assert_eq!(a.status, StatusCode::TOO_MANY_REQUESTS);
    assert!(a.headers.contains_key(header::RETRY_AFTER));
    let st = a.status();
    assert_eq!(st.code, tonic::Code::ResourceExhausted as i32);
    assert_eq!(retry_delay(&st), Some(1));
    let mut client = grpc_client(&app).await;
    let mut req = tonic::Request::new(request_of(&fixture("genai_agent.json")));
    req.metadata_mut()
        .insert("x-traceway-tenant", "full".parse().expect("ascii"));
    let err = client.export(req).await.expect_err("refused");
    assert_eq!(err.code(), tonic::Code::ResourceExhausted);
    let st = RpcStatus::decode(err.details()).expect("google.rpc.Status details");
    assert_eq!(retry_delay(&st), Some(1), "RetryInfo makes it retryable");

    // Another tenant is not affected, on any protocol.
    let a = post_as(&app, "other", Some(PROTOBUF), None, to_protobuf(&fixture("genai_agent.json"))).await;
    assert_eq!(a.status, StatusCode::OK);
    let mut req = tonic::Request::new(request_of(&fixture("genai_agent.json")));
    req.metadata_mut()
        .insert("x-traceway-tenant", "other".parse().expect("ascii"));
    client.export(req).await.expect("another tenant exports over gRPC");
    let (status, _) = app
        .call_as("other", Method::POST, "/api/v1/traces", Some(json!({})))
        .await;
    assert_eq!(status, StatusCode::CREATED);

    // Reads and deletes are never refused; the delete brings the tenant back under.
    let (status, _) = app
        .call_as("full", Method::GET, &format!("/api/v1/traces/{id}"), None)
        .await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = app
        .call_as("full", Method::DELETE, &format!("/api/v1/traces/{id}"), None)
        .await;
    assert!(status.is_success(), "{status}");
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let (status, b) = app
            .call_as("full", Method::POST, "/api/v1/traces", Some(json!({})))
            .await;
        if status == StatusCode::CREATED {
            break;
        }
        assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{b}");
        assert!(tokio::time::Instant::now() < deadline, "still refused after the delete");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}
}
