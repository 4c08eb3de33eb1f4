//! The OpenTelemetry SDK in-process: UUIDv7 trace ids, span starts reported to Traceway.

use std::time::Duration;

use opentelemetry::trace::{Span as _, TraceContextExt, Tracer as _, TracerProvider as _};
use opentelemetry_sdk::trace::SdkTracerProvider;
use traceway::otel::{attributes, StartReporter, UuidV7IdGenerator};
use traceway::{TraceId, Tracer};

use crate::all_spans;
use crate::server::{poll_json, Server};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sdk_spans_get_v7_ids_and_their_starts_show_in_traceway() {
    let server = Server::start();
    let tw = Tracer::builder()
        .endpoint(&server.url)
        .flush_interval(Duration::from_millis(20))
        .build()
        .unwrap();
    let provider = SdkTracerProvider::builder()
        .with_id_generator(UuidV7IdGenerator)
        .with_span_processor(StartReporter::new(tw.clone()))
        .build();
    let otel = provider.tracer("test");
    let agent = otel
        .span_builder("agent run")
        .with_attributes(vec![opentelemetry::KeyValue::new(
            "openinference.span.kind",
            "AGENT",
        )])
        .start(&otel);
    let cx = opentelemetry::Context::current_with_span(agent);
    let mut llm_attrs = attributes::llm("openai", "gpt-4o-mini");
    llm_attrs.extend(attributes::llm_usage(10, 5));
    let llm = otel
        .span_builder("chat gpt-4o-mini")
        .with_attributes(llm_attrs)
        .start_with_context(&otel, &cx);
    let trace_id = TraceId::from_bytes(cx.span().span_context().trace_id().to_bytes()).unwrap();
    assert_eq!(trace_id.uuid_version(), 7);
    assert!(trace_id.v7_unix_ms().is_some());

    tw.flush().await;
    let url = format!("{}/api/v1/traces/{trace_id}", server.url);
    let v = poll_json(&url, "both running spans", |v| all_spans(v).len() == 2).await;
    let spans = all_spans(&v);
    let agent_span = spans.iter().find(|s| s["name"] == "agent run").unwrap();
    let llm_span = spans
        .iter()
        .find(|s| s["name"] == "chat gpt-4o-mini")
        .unwrap();
    assert_eq!(agent_span["kind"], "agent");
    assert_eq!(llm_span["kind"], "llm");
    assert!(llm_span.get("end_time").is_none(), "shown while it runs");
    assert_eq!(llm_span["parent_span_id"], agent_span["span_id"]);
    assert_eq!(
        llm_span["attributes"]["gen_ai.request.model"],
        "gpt-4o-mini"
    );
    let mut llm = llm;
    llm.end();
    cx.span().end();
    let _ = provider.shutdown();
}

#[test]
fn attribute_helpers_speak_both_conventions() {
    let kv = attributes::tool("get_order", &serde_json::json!({"id": 42}));
    let get = |k: &str| {
        kv.iter()
            .find(|x| x.key.as_str() == k)
            .map(|x| x.value.as_str().to_string())
    };
    assert_eq!(get("openinference.span.kind").as_deref(), Some("TOOL"));
    assert_eq!(
        get("gen_ai.operation.name").as_deref(),
        Some("execute_tool")
    );
    assert_eq!(
        get("gen_ai.tool.call.arguments").as_deref(),
        Some("{\"id\":42}")
    );
    let kv = attributes::retrieval("refunds", &[("d1", 0.9, "text")]);
    let get = |k: &str| {
        kv.iter()
            .find(|x| x.key.as_str() == k)
            .map(|x| x.value.as_str().to_string())
    };
    assert_eq!(
        get("retrieval.documents.0.document.id").as_deref(),
        Some("d1")
    );
    assert_eq!(get("input.value").as_deref(), Some("refunds"));
}
