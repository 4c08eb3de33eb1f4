//! OpenTelemetry interop (feature `otel`), for apps instrumented with the OpenTelemetry
//! SDK or `tracing-opentelemetry`.
//!
//! - [`UuidV7IdGenerator`]: trace ids made as UUIDv7, like Traceway's own.
//! - [`StartReporter`]: a `SpanProcessor` that reports each span's *start* to Traceway
//!   through a [`Tracer`], so the app's steps show live while they run.
//! - [`attributes`]: helpers that set the OpenInference and OpenTelemetry GenAI
//!   attributes for LLM, tool and retrieval spans, which Traceway maps to typed details.
//!
//! The ends go to Traceway with the ordinary OTLP exporter (`opentelemetry-otlp`),
//! pointed at Traceway's OTLP endpoint; Traceway merges each end with its start by span
//! id:
//!
//! ```ignore
//! let tracer = traceway::Tracer::builder().endpoint("http://127.0.0.1:4318").service("agent").build()?;
//! let exporter = opentelemetry_otlp::SpanExporter::builder()
//!     .with_http()
//!     .with_endpoint("http://127.0.0.1:4318/v1/traces")
//!     .build()?;
//! let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder()
//!     .with_id_generator(traceway::otel::UuidV7IdGenerator)
//!     .with_span_processor(traceway::otel::StartReporter::new(tracer.clone()))
//!     .with_batch_exporter(exporter)
//!     .build();
//! ```

use std::borrow::Cow;
use std::time::{Duration, UNIX_EPOCH};

use opentelemetry::trace::{SpanId as OtelSpanId, TraceId as OtelTraceId};
use opentelemetry::{Context, KeyValue, Value as OtelValue};
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::trace::{IdGenerator, SpanData as OtelSpanData, SpanProcessor};
use traceway_core::{SpanId, SpanKind, SpanStatus, Timestamp, TraceId};

use crate::span::{AttrValue, SpanData};
use crate::tracer::Tracer;

/// An `IdGenerator` that makes UUIDv7 trace ids (time-sortable, as Traceway's own) and
/// random span ids.
#[derive(Debug, Default, Clone, Copy)]
pub struct UuidV7IdGenerator;

impl IdGenerator for UuidV7IdGenerator {
    fn new_trace_id(&self) -> OtelTraceId {
        OtelTraceId::from_bytes(TraceId::new_v7().to_bytes())
    }

    fn new_span_id(&self) -> OtelSpanId {
        OtelSpanId::from_bytes(SpanId::new_random().to_bytes())
    }
}

/// A `SpanProcessor` that reports span starts to Traceway (as `span_started`, through
/// the tracer's non-blocking queue). Ends are left to the OTLP exporter.
#[derive(Debug)]
pub struct StartReporter {
    tracer: Tracer,
}

impl StartReporter {
    /// Reports through `tracer` (which needs an endpoint).
    pub fn new(tracer: Tracer) -> StartReporter {
        StartReporter { tracer }
    }
}

fn kind_of(attributes: &[KeyValue]) -> SpanKind {
    let get = |k: &str| {
        attributes
            .iter()
            .find(|kv| kv.key.as_str() == k)
            .map(|kv| kv.value.as_str().to_string())
    };
    if let Some(k) = get("openinference.span.kind") {
        return match k.to_ascii_uppercase().as_str() {
            "AGENT" => SpanKind::Agent,
            "CHAIN" => SpanKind::Chain,
            "LLM" => SpanKind::Llm,
            "TOOL" => SpanKind::Tool,
            "RETRIEVER" => SpanKind::Retriever,
            "EMBEDDING" => SpanKind::Embedding,
            "RERANKER" => SpanKind::Reranker,
            "GUARDRAIL" => SpanKind::Guardrail,
            _ => SpanKind::Other,
        };
    }
    match get("gen_ai.operation.name").as_deref() {
        Some("chat" | "text_completion" | "generate_content") => SpanKind::Llm,
        Some("execute_tool") => SpanKind::Tool,
        Some("invoke_agent" | "create_agent") => SpanKind::Agent,
        Some("embeddings") => SpanKind::Embedding,
        _ => SpanKind::Other,
    }
}

fn attr_value(v: &OtelValue) -> AttrValue {
    match v {
        OtelValue::Bool(b) => AttrValue::Bool(*b),
        OtelValue::I64(i) => AttrValue::I64(*i),
        OtelValue::F64(f) => AttrValue::F64(*f),
        other => AttrValue::Str(Cow::Owned(other.as_str().to_string())),
    }
}

impl SpanProcessor for StartReporter {
    fn on_start(&self, span: &mut opentelemetry_sdk::trace::Span, _cx: &Context) {
        let Some(d) = span.exported_data() else {
            return;
        };
        let (Some(trace_id), Some(span_id)) = (
            TraceId::from_bytes(d.span_context.trace_id().to_bytes()),
            SpanId::from_bytes(d.span_context.span_id().to_bytes()),
        ) else {
            return;
        };
        let parent = SpanId::from_bytes(d.parent_span_id.to_bytes());
        let start = d
            .start_time
            .duration_since(UNIX_EPOCH)
            .unwrap_or(Duration::ZERO);
        self.tracer.record_foreign_start(SpanData {
            trace_id,
            span_id,
            parent,
            // The OTLP export of the root ends the trace; this side never does.
            trace_root: false,
            kind: kind_of(&d.attributes),
            name: d.name.clone(),
            component: None,
            start: Timestamp::from_unix_nanos(start.as_nanos().min(i64::MAX as u128) as i64),
            end: None,
            status: SpanStatus::default(),
            input: None,
            output: None,
            llm: None,
            tool: None,
            retrieval: None,
            attributes: d
                .attributes
                .iter()
                .map(|kv| {
                    (
                        Cow::Owned(kv.key.as_str().to_string()),
                        attr_value(&kv.value),
                    )
                })
                .collect(),
            links: Vec::new(),
        });
    }

    fn on_end(&self, _span: OtelSpanData) {}

    fn force_flush(&self) -> OTelSdkResult {
        Ok(())
    }

    fn shutdown_with_timeout(&self, _timeout: Duration) -> OTelSdkResult {
        Ok(())
    }
}

/// Attribute sets in both the OpenInference and the OpenTelemetry GenAI conventions.
pub mod attributes {
    use opentelemetry::KeyValue;
    use serde_json::Value;

    /// An LLM call: kind, provider and model.
    pub fn llm(provider: &str, model: &str) -> Vec<KeyValue> {
        vec![
            KeyValue::new("openinference.span.kind", "LLM"),
            KeyValue::new("llm.provider", provider.to_string()),
            KeyValue::new("llm.model_name", model.to_string()),
            KeyValue::new("gen_ai.operation.name", "chat"),
            KeyValue::new("gen_ai.provider.name", provider.to_string()),
            KeyValue::new("gen_ai.request.model", model.to_string()),
        ]
    }

    /// An LLM call's token counts.
    pub fn llm_usage(input_tokens: i64, output_tokens: i64) -> Vec<KeyValue> {
        vec![
            KeyValue::new("llm.token_count.prompt", input_tokens),
            KeyValue::new("llm.token_count.completion", output_tokens),
            KeyValue::new("llm.token_count.total", input_tokens + output_tokens),
            KeyValue::new("gen_ai.usage.input_tokens", input_tokens),
            KeyValue::new("gen_ai.usage.output_tokens", output_tokens),
        ]
    }

    /// A tool call: kind, name and arguments (as JSON).
    pub fn tool(name: &str, arguments: &Value) -> Vec<KeyValue> {
        let args = arguments.to_string();
        vec![
            KeyValue::new("openinference.span.kind", "TOOL"),
            KeyValue::new("tool.name", name.to_string()),
            KeyValue::new("tool.parameters", args.clone()),
            KeyValue::new("gen_ai.operation.name", "execute_tool"),
            KeyValue::new("gen_ai.tool.name", name.to_string()),
            KeyValue::new("gen_ai.tool.call.arguments", args),
        ]
    }

    /// A tool call's result (as JSON).
    pub fn tool_result(result: &Value) -> Vec<KeyValue> {
        let r = result.to_string();
        vec![
            KeyValue::new("output.value", r.clone()),
            KeyValue::new("gen_ai.tool.call.result", r),
        ]
    }

    /// A retrieval: kind, query, and the documents as `(id, score, content)`, best first.
    pub fn retrieval(query: &str, documents: &[(&str, f64, &str)]) -> Vec<KeyValue> {
        let mut kv = vec![
            KeyValue::new("openinference.span.kind", "RETRIEVER"),
            KeyValue::new("input.value", query.to_string()),
            KeyValue::new("gen_ai.operation.name", "retrieval"),
        ];
        for (i, (id, score, content)) in documents.iter().enumerate() {
            let p = format!("retrieval.documents.{i}.document");
            kv.push(KeyValue::new(format!("{p}.id"), id.to_string()));
            kv.push(KeyValue::new(format!("{p}.score"), *score));
            kv.push(KeyValue::new(format!("{p}.content"), content.to_string()));
        }
        let docs: Vec<Value> = documents
            .iter()
            .map(|(id, score, content)| serde_json::json!({"id": id, "score": score, "content": content}))
            .collect();
        kv.push(KeyValue::new(
            "gen_ai.retrieval.documents",
            Value::Array(docs).to_string(),
        ));
        kv
    }
}
