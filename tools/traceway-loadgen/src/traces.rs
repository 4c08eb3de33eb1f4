//! The agent traces sent: one OpenInference agent run of 11 spans, encoded as OTLP
//! export requests before the clock starts.

use bytes::Bytes;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, InstrumentationScope, KeyValue};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{status, ResourceSpans, ScopeSpans, Span, Status};
use prost::Message as _;
use serde_json::{json, Value};
use traceway_core::{SpanId, TraceId};

use crate::SPANS_PER_TRACE;

/// An encoded export request and how many spans it carries.
pub(crate) struct Encoded {
    pub(crate) body: Bytes,
    pub(crate) spans: u64,
}

pub(crate) fn kv(key: &str, value: any_value::Value) -> KeyValue {
    KeyValue {
        key: key.to_string(),
        value: Some(AnyValue { value: Some(value) }),
        ..Default::default()
    }
}

pub(crate) fn s(key: &str, v: impl Into<String>) -> KeyValue {
    kv(key, any_value::Value::StringValue(v.into()))
}

pub(crate) fn i(key: &str, v: i64) -> KeyValue {
    kv(key, any_value::Value::IntValue(v))
}

pub(crate) fn d(key: &str, v: f64) -> KeyValue {
    kv(key, any_value::Value::DoubleValue(v))
}

/// Deterministic filler text of about `len` bytes (a small xorshift over a word list).
pub(crate) fn text(seed: &mut u64, len: usize) -> String {
    const WORDS: &[&str] = &[
        "the",
        "customer",
        "order",
        "refund",
        "policy",
        "within",
        "days",
        "shipping",
        "account",
        "invoice",
        "assistant",
        "tool",
        "retrieved",
        "context",
        "answer",
        "because",
        "support",
        "ticket",
        "status",
        "delivered",
        "payment",
        "method",
        "update",
        "request",
    ];
    let mut out = String::with_capacity(len + 16);
    while out.len() < len {
        *seed ^= *seed << 13;
        *seed ^= *seed >> 7;
        *seed ^= *seed << 17;
        out.push_str(WORDS[(*seed % WORDS.len() as u64) as usize]);
        out.push(' ');
    }
    out
}

/// One agent run: 11 spans, children first and the root last, as they end.
pub(crate) fn agent_trace(n: usize, seed: &mut u64) -> (TraceId, Vec<Span>) {
    let trace_id = TraceId::new_v7();
    let tid = trace_id.to_bytes().to_vec();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    let ms = 1_000_000u64;
    let root_id = SpanId::new_random();
    let mut spans = Vec::with_capacity(SPANS_PER_TRACE);
    let mut push = |id: SpanId,
                    parent: Option<SpanId>,
                    name: &str,
                    start_ms: u64,
                    dur_ms: u64,
                    attributes: Vec<KeyValue>| {
        spans.push(Span {
            trace_id: tid.clone(),
            span_id: id.to_bytes().to_vec(),
            parent_span_id: parent.map(|p| p.to_bytes().to_vec()).unwrap_or_default(),
            name: name.to_string(),
            kind: 1,
            start_time_unix_nano: now + start_ms * ms,
            end_time_unix_nano: now + (start_ms + dur_ms) * ms,
            attributes,
            status: Some(Status {
                code: status::StatusCode::Ok as i32,
                message: String::new(),
            }),
            ..Default::default()
        });
    };
    let session = format!("session-{}", n % 500);
    let user = format!("user-{}", n % 97);
    let chain = |name: &str| {
        vec![
            s("openinference.span.kind", "CHAIN"),
            s("session.id", session.clone()),
            s("input.value", format!("{name} step input")),
        ]
    };
    let llm = |seed: &mut u64, prompt_tokens: i64| {
        let input = text(seed, 500);
        let output = text(seed, 500);
        vec![
            s("openinference.span.kind", "LLM"),
            s("session.id", session.clone()),
            s("llm.model_name", "gpt-4o-mini"),
            s("llm.provider", "openai"),
            i("llm.token_count.prompt", prompt_tokens),
            i("llm.token_count.completion", 120),
            i("llm.token_count.total", prompt_tokens + 120),
            s("llm.input_messages.0.message.role", "system"),
            s(
                "llm.input_messages.0.message.content",
                "You are a support agent.",
            ),
            s("llm.input_messages.1.message.role", "user"),
            s("llm.input_messages.1.message.content", input.clone()),
            s("llm.output_messages.0.message.role", "assistant"),
            s("llm.output_messages.0.message.content", output.clone()),
            s("input.value", input),
            s("output.value", output),
        ]
    };
    let tool = |name: &str, args: Value, result: Value| {
        vec![
            s("openinference.span.kind", "TOOL"),
            s("session.id", session.clone()),
            s("tool.name", name),
            s("tool.parameters", args.to_string()),
            s("output.value", result.to_string()),
            s("output.mime_type", "application/json"),
        ]
    };

    let (plan, research, act, respond) = (
        SpanId::new_random(),
        SpanId::new_random(),
        SpanId::new_random(),
        SpanId::new_random(),
    );
    push(
        SpanId::new_random(),
        Some(plan),
        "ChatCompletion",
        2,
        900,
        llm(seed, 850),
    );
    push(plan, Some(root_id), "plan", 1, 950, chain("plan"));
    let mut retrieval = vec![
        s("openinference.span.kind", "RETRIEVER"),
        s("session.id", session.clone()),
        s("input.value", "refund policy for damaged items"),
    ];
    for k in 0..5 {
        retrieval.push(s(
            &format!("retrieval.documents.{k}.document.id"),
            format!("kb-{}#{k}", n % 300),
        ));
        retrieval.push(d(
            &format!("retrieval.documents.{k}.document.score"),
            0.9 - k as f64 * 0.1,
        ));
        retrieval.push(s(
            &format!("retrieval.documents.{k}.document.content"),
            text(seed, 200),
        ));
    }
    push(
        SpanId::new_random(),
        Some(research),
        "search_knowledge_base",
        960,
        120,
        retrieval,
    );
    push(
        SpanId::new_random(),
        Some(research),
        "ChatCompletion",
        1090,
        700,
        llm(seed, 1400),
    );
    push(
        research,
        Some(root_id),
        "research",
        955,
        840,
        chain("research"),
    );
    push(
        SpanId::new_random(),
        Some(act),
        "get_order",
        1800,
        80,
        tool(
            "get_order",
            json!({"order_id": n}),
            json!({"status": "delivered", "total": 59.9}),
        ),
    );
    push(
        SpanId::new_random(),
        Some(act),
        "issue_refund",
        1885,
        150,
        tool(
            "issue_refund",
            json!({"order_id": n, "amount": 59.9}),
            json!({"refund_id": format!("rf-{n}")}),
        ),
    );
    push(act, Some(root_id), "act", 1795, 245, chain("act"));
    push(
        SpanId::new_random(),
        Some(respond),
        "ChatCompletion",
        2045,
        800,
        llm(seed, 1900),
    );
    push(
        respond,
        Some(root_id),
        "respond",
        2040,
        810,
        chain("respond"),
    );
    push(
        root_id,
        None,
        "support_agent",
        0,
        2860,
        vec![
            s("openinference.span.kind", "AGENT"),
            s("agent.name", "support-agent"),
            s("session.id", session.clone()),
            s("user.id", user),
            s(
                "input.value",
                "My parcel arrived damaged, can I get a refund?",
            ),
            s("output.value", "Yes: the refund is on its way."),
        ],
    );
    (trace_id, spans)
}

pub(crate) fn export_request(spans: Vec<Span>) -> ExportTraceServiceRequest {
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource {
                attributes: vec![
                    s("service.name", "support-bot"),
                    s("telemetry.sdk.language", "python"),
                    s("telemetry.sdk.name", "opentelemetry"),
                ],
                ..Default::default()
            }),
            scope_spans: vec![ScopeSpans {
                scope: Some(InstrumentationScope {
                    name: "openinference.instrumentation.openai".into(),
                    version: "0.1.0".into(),
                    ..Default::default()
                }),
                spans,
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

/// All requests, encoded; and one trace id to check in full at the end. With
/// `same_trace`, every agent run's spans carry the first run's trace id: one trace, which
/// the first root to arrive ends, takes them all (the later ones as late spans, ADR 008).
pub(crate) fn encode_requests(
    traces: usize,
    per_request: usize,
    same_trace: bool,
) -> (Vec<Encoded>, TraceId) {
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    let mut out = Vec::new();
    let mut pending: Vec<Span> = Vec::with_capacity(per_request);
    let mut sample = None;
    let mut shared: Option<(TraceId, Vec<u8>)> = None;
    for n in 0..traces {
        let (mut id, mut spans) = agent_trace(n, &mut seed);
        if same_trace {
            let (first, bytes) = shared.get_or_insert_with(|| (id, id.to_bytes().to_vec()));
            id = *first;
            for span in &mut spans {
                span.trace_id.clone_from(bytes);
            }
        }
        if n == traces / 2 {
            sample = Some(id);
        }
        for span in spans {
            pending.push(span);
            if pending.len() == per_request {
                let spans = std::mem::replace(&mut pending, Vec::with_capacity(per_request));
                out.push(encode(spans));
            }
        }
    }
    if !pending.is_empty() {
        out.push(encode(pending));
    }
    (out, sample.expect("at least one trace"))
}

pub(crate) fn encode(spans: Vec<Span>) -> Encoded {
    let n = spans.len() as u64;
    Encoded {
        body: Bytes::from(export_request(spans).encode_to_vec()),
        spans: n,
    }
}
