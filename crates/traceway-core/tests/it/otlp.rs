//! OTLP → Traceway: golden OTLP/JSON fixtures, a protobuf round trip, and tables.

use std::collections::HashMap;

use prost::Message as _;
use serde_json::{json, Value};
use traceway_core::otlp::{
    decode_export_request, map_request, map_request_with, Encoding, ExportTraceServiceRequest,
    MapOptions, MappedBatch, MappedSpan, OtlpError, ROOT_ENDED_REASON, ROOT_FAILED_REASON,
    SERVICE_METADATA_KEY,
};
use traceway_core::{
    EventInput, Message, Rollups, SpanId, SpanKind, State, StatusCode, Timestamp, ToolCall, TraceId,
};

fn fixture(name: &str) -> Vec<u8> {
    let path = format!("{}/tests/fixtures/otlp/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn decode_json(body: &[u8]) -> ExportTraceServiceRequest {
    decode_export_request(body, Encoding::Json).unwrap()
}

fn map_json(body: &Value) -> MappedBatch {
    map_request(&decode_json(body.to_string().as_bytes()))
}

fn sid(s: &str) -> SpanId {
    s.parse().unwrap()
}

fn by_name<'a>(batch: &'a MappedBatch, name: &str) -> &'a MappedSpan {
    batch
        .traces
        .iter()
        .flat_map(|t| &t.spans)
        .find(|s| s.span.name == name)
        .unwrap_or_else(|| panic!("no span {name}"))
}

fn msg(role: &str, content: &str) -> Message {
    Message {
        role: role.into(),
        content: Some(content.into()),
        ..Default::default()
    }
}

/// One OTLP/JSON request holding one span per attribute list, with ids 1, 2, 3 … in one
/// trace; the first span is the root, the others its children.
fn spans_with(attr_lists: &[Value]) -> Value {
    let spans: Vec<Value> = attr_lists
        .iter()
        .enumerate()
        .map(|(i, attrs)| {
            let attributes: Vec<Value> = attrs
                .as_object()
                .unwrap()
                .iter()
                .map(|(k, v)| json!({"key": k, "value": v}))
                .collect();
            json!({
                "traceId": "0af7651916cd43dd8448eb211c80319c",
                "spanId": format!("{:016x}", i + 1),
                "parentSpanId": if i == 0 { String::new() } else { format!("{:016x}", 1) },
                "name": format!("span{}", i + 1),
                "startTimeUnixNano": "1000000000",
                "endTimeUnixNano": "2000000000",
                "attributes": attributes,
            })
        })
        .collect();
    json!({"resourceSpans": [{"scopeSpans": [{"spans": spans}]}]})
}

fn s(v: &str) -> Value {
    json!({"stringValue": v})
}

fn i(v: i64) -> Value {
    json!({"intValue": v.to_string()})
}

#[test]
fn openinference_fixture_maps_an_agent_run() {
    let batch = map_request(&decode_json(&fixture("openinference_agent.json")));
    assert_eq!(batch.rejected_spans, 0);
    assert_eq!(batch.rejection_message, None);
    assert_eq!(batch.traces.len(), 1);
    let trace = &batch.traces[0];
    assert_eq!(
        trace.trace_id.to_string(),
        "4bf92f3577b34da6a3ce929d0e0e4736"
    );
    assert_eq!(trace.hints.agent_id.as_deref(), Some("support-agent"));
    assert_eq!(trace.hints.session_id.as_deref(), Some("sess-42"));
    assert_eq!(trace.hints.user_id.as_deref(), Some("user-7"));
    assert_eq!(trace.hints.service.as_deref(), Some("support-bot"));
    assert_eq!(trace.hints.name.as_deref(), Some("support_agent"));

    let kinds: Vec<(&str, SpanKind)> = trace
        .spans
        .iter()
        .map(|s| (s.span.name.as_str(), s.span.kind))
        .collect();
    assert_eq!(
        kinds,
        [
            ("support_agent", SpanKind::Agent),
            ("rag_pipeline", SpanKind::Chain),
            ("vector_search", SpanKind::Retriever),
            ("ChatOpenAI", SpanKind::Llm),
            ("lookup_account", SpanKind::Tool),
            ("send_email", SpanKind::Tool),
        ]
    );
    let parents: HashMap<&str, Option<SpanId>> = trace
        .spans
        .iter()
        .map(|s| (s.span.name.as_str(), s.span.parent_span_id))
        .collect();
    assert_eq!(parents["support_agent"], None);
    assert_eq!(parents["rag_pipeline"], Some(sid("a000000000000001")));
    assert_eq!(parents["vector_search"], Some(sid("a000000000000002")));
    assert_eq!(parents["ChatOpenAI"], Some(sid("a000000000000002")));
    assert_eq!(parents["send_email"], Some(sid("a000000000000001")));
    let roots: Vec<bool> = trace.spans.iter().map(|s| s.is_root).collect();
    assert_eq!(roots, [true, false, false, false, false, false]);
    for s in &trace.spans {
        assert_eq!(s.span.service.as_deref(), Some("support-bot"));
        assert!(s.span.end_time.is_some());
    }

    // The root: input kept as text, JSON output parsed, unknown attributes of every type kept.
    let root = by_name(&batch, "support_agent");
    assert_eq!(
        root.span.start_time,
        Timestamp::from_unix_nanos(1_763_719_200_000_000_000)
    );
    assert_eq!(root.span.duration().unwrap().as_millis(), 4500);
    assert_eq!(root.span.status.code, StatusCode::Ok);
    assert_eq!(root.span.input, Some(json!("How do I reset my password?")));
    assert_eq!(
        root.span.output,
        Some(json!({"answer": "Use the reset link.", "sources": 2}))
    );
    let a = &root.span.attributes;
    assert_eq!(a["tag.tags"], json!(["support", "faq"]));
    assert_eq!(
        a["app.config"],
        json!({"retries": 3, "router": {"strategy": "semantic"}, "fallbacks": ["gpt-4o-mini", 2]})
    );
    assert_eq!(a["app.streaming"], json!(true));
    assert_eq!(a["app.temperature"], json!(0.2));
    assert_eq!(a["app.fingerprint"], json!("3q2+7w=="), "bytes as base64");
    assert_eq!(
        a["otel.scope.name"],
        json!("openinference.instrumentation.langchain")
    );
    assert_eq!(a["otel.scope.version"], json!("0.1.42"));
    // Identity attributes feed the hints and stay; mapped ones are not repeated.
    assert_eq!(a["agent.name"], json!("support-agent"));
    assert_eq!(a["session.id"], json!("sess-42"));
    for gone in [
        "openinference.span.kind",
        "input.value",
        "input.mime_type",
        "output.value",
    ] {
        assert!(!a.contains_key(gone), "{gone} repeated");
    }
    assert!(!a.contains_key("otel.span_kind"), "internal is the default");
    assert!(!a.keys().any(|k| k.starts_with("resource.")));

    let chain = by_name(&batch, "rag_pipeline");
    assert_eq!(chain.span.component_id.as_deref(), Some("rag"));
    assert!(!chain.span.attributes.contains_key("traceway.component_id"));

    let retriever = by_name(&batch, "vector_search");
    let r = retriever.span.retrieval.as_ref().unwrap();
    assert_eq!(r.query.as_deref(), Some("reset password"));
    assert_eq!(retriever.span.input, None, "the input became the query");
    let docs: Vec<(Option<&str>, Option<f64>)> = r
        .documents
        .iter()
        .map(|d| (d.id.as_deref(), d.score))
        .collect();
    assert_eq!(
        docs,
        [
            (Some("kb-101"), Some(0.92)),
            (Some("102"), Some(0.81)),
            (Some("kb-230"), Some(0.47))
        ]
    );
    assert_eq!(
        r.documents[0].content.as_deref(),
        Some("To reset your password, open Settings and choose Reset.")
    );
    assert_eq!(
        r.documents[0].metadata,
        Some(json!({"source": "kb", "lang": "en"}))
    );
    assert_eq!(r.documents[1].metadata, None);
    assert_eq!(retriever.span.attributes["db.system"], json!("qdrant"));
    assert_eq!(retriever.span.attributes["otel.span_kind"], json!("client"));
    assert!(!retriever
        .span
        .attributes
        .keys()
        .any(|k| k.starts_with("retrieval.")));

    let llm_span = by_name(&batch, "ChatOpenAI");
    let llm = llm_span.span.llm.as_ref().unwrap();
    assert_eq!(llm.model.as_deref(), Some("gpt-4o-2024-08-06"));
    assert_eq!(llm.provider.as_deref(), Some("openai"));
    assert_eq!(
        (llm.input_tokens, llm.output_tokens, llm.total_tokens),
        (Some(120), Some(35), Some(155))
    );
    assert_eq!(
        (llm.cached_tokens, llm.reasoning_tokens),
        (Some(64), Some(10))
    );
    assert_eq!(llm.cost_usd, Some(0.0012));
    assert_eq!(
        llm.input_messages,
        [
            msg("system", "You are a support assistant."),
            msg("user", "How do I reset my password?")
        ]
    );
    assert_eq!(
        llm.output_messages,
        [msg("assistant", "Open Settings and choose Reset.")]
    );
    assert_eq!(
        llm_span.span.input,
        Some(json!({"messages": [{"role": "user", "content": "How do I reset my password?"}]}))
    );
    let a = &llm_span.span.attributes;
    assert_eq!(
        a["llm.invocation_parameters"],
        json!("{\"temperature\":0.2}")
    );
    assert!(!a
        .keys()
        .any(|k| k.starts_with("llm.token_count") || k.starts_with("llm.input_messages")));
    assert!(
        !a.contains_key("llm.system"),
        "same value as llm.provider: consumed"
    );

    let lookup = by_name(&batch, "lookup_account");
    let tool = lookup.span.tool.as_ref().unwrap();
    assert_eq!(tool.name.as_deref(), Some("lookup_account"));
    assert_eq!(
        tool.arguments,
        Some(json!({"email": "ada@example.com"})),
        "the call's arguments are the input"
    );
    assert_eq!(
        tool.schema,
        Some(
            json!({"type": "object", "properties": {"email": {"type": "string"}}, "required": ["email"]})
        ),
        "tool.parameters is the schema"
    );
    assert_eq!(lookup.span.input, None, "the input became the arguments");
    assert!(!lookup.span.attributes.contains_key("tool.parameters"));
    assert_eq!(
        tool.result,
        Some(json!({"status": "active", "plan": "pro"}))
    );
    assert_eq!(lookup.span.output, None, "the output became the result");
    assert_eq!(
        lookup.span.attributes["tool.description"],
        json!("Finds a customer account by email.")
    );

    let failed = by_name(&batch, "send_email");
    assert_eq!(failed.span.status.code, StatusCode::Error);
    assert_eq!(failed.span.status.message.as_deref(), Some("SMTP timeout"));
    assert_eq!(
        failed.span.tool.as_ref().unwrap().arguments,
        Some(json!({"to": "ada@example.com"})),
        "the input is the arguments"
    );
    assert_eq!(failed.errors.len(), 1);
    let err = &failed.errors[0];
    assert_eq!(err.id, "otlp:a000000000000006:1");
    assert_eq!(
        err.time,
        Timestamp::from_unix_nanos(1_763_719_204_300_000_000)
    );
    assert_eq!(err.record.span_id, Some(sid("a000000000000006")));
    assert_eq!(err.record.error_type.as_deref(), Some("TimeoutError"));
    assert_eq!(err.record.message, "SMTP server did not answer in 1s");
    assert!(err
        .record
        .stacktrace
        .as_deref()
        .unwrap()
        .starts_with("Traceback"));
    assert_eq!(failed.logs.len(), 1);
    let log = &failed.logs[0];
    assert_eq!(
        (log.id.as_str(), log.record.message.as_str()),
        ("otlp:a000000000000006:0", "retry")
    );
    assert_eq!(log.record.attributes["attempt"], json!(2));
    assert_eq!(failed.span.links.len(), 1);
    let link = &failed.span.links[0];
    assert_eq!(
        link.trace_id,
        "0af7651916cd43dd8448eb211c80319c"
            .parse::<TraceId>()
            .unwrap()
    );
    assert_eq!(link.span_id, Some(sid("b7ad6b7169203331")));
    assert_eq!(link.attributes["link.reason"], json!("queued-by"));
}

#[test]
fn genai_fixture_maps_agent_chat_and_tool() {
    let batch = map_request(&decode_json(&fixture("genai_agent.json")));
    assert_eq!(batch.rejected_spans, 0);
    assert_eq!(
        batch.traces.len(),
        1,
        "upper- and lower-case ids are one trace"
    );
    let trace = &batch.traces[0];
    assert_eq!(
        trace.trace_id.to_string(),
        "5b8efff798038103d269b633813fc60c"
    );
    assert_eq!(trace.hints.agent_id.as_deref(), Some("TravelPlanner"));
    assert_eq!(trace.hints.session_id.as_deref(), Some("conv-9"));
    assert_eq!(
        trace.hints.user_id.as_deref(),
        Some("traveller-1"),
        "from the resource"
    );
    assert_eq!(trace.hints.service.as_deref(), Some("travel-agent"));
    assert_eq!(
        trace.hints.name.as_deref(),
        Some("invoke_agent TravelPlanner")
    );
    let kinds: Vec<SpanKind> = trace.spans.iter().map(|s| s.span.kind).collect();
    assert_eq!(kinds, [SpanKind::Agent, SpanKind::Llm, SpanKind::Tool]);
    assert_eq!(
        trace.spans[1].span.parent_span_id,
        Some(sid("c000000000000001"))
    );
    assert_eq!(
        trace.spans[2].span.parent_span_id,
        Some(sid("c000000000000001"))
    );

    // The agent reports the usage of its whole run: kept as attributes, not as LLM details,
    // so the rollups count the chat call once.
    let agent = &trace.spans[0].span;
    assert_eq!(agent.llm, None);
    assert_eq!(agent.attributes["gen_ai.usage.input_tokens"], json!(900));
    assert_eq!(
        agent.attributes["gen_ai.agent.name"],
        json!("TravelPlanner")
    );
    assert!(!agent.attributes.contains_key("gen_ai.operation.name"));

    let chat = &trace.spans[1].span;
    let llm = chat.llm.as_ref().unwrap();
    assert_eq!(
        llm.model.as_deref(),
        Some("gpt-4.1-2025-04-14"),
        "the model that answered"
    );
    assert_eq!(llm.provider.as_deref(), Some("openai"));
    assert_eq!(
        (llm.input_tokens, llm.output_tokens, llm.total_tokens),
        (Some(320), Some(48), None)
    );
    assert_eq!(
        (llm.cached_tokens, llm.reasoning_tokens),
        (Some(128), Some(16))
    );
    assert_eq!(llm.cost_usd, None);
    assert_eq!(llm.input_messages.len(), 4);
    assert_eq!(llm.input_messages[0], msg("system", "You plan trips."));
    assert_eq!(llm.input_messages[1], msg("user", "Weather in Paris?"));
    assert_eq!(
        llm.input_messages[2],
        Message {
            role: "assistant".into(),
            tool_calls: vec![ToolCall {
                id: Some("call_1".into()),
                name: Some("get_weather".into()),
                arguments: Some(json!({"location": "Paris"})),
            }],
            ..Default::default()
        },
        "a tool_call part is a typed tool call"
    );
    assert_eq!(
        llm.input_messages[3],
        Message {
            role: "tool".into(),
            content: Some("rainy, 57°F".into()),
            tool_call_id: Some("call_1".into()),
            ..Default::default()
        },
        "a tool_call_response names the call it answers"
    );
    assert_eq!(
        llm.output_messages,
        [msg("assistant", "It is rainy in Paris,\n57°F.")]
    );
    let a = &chat.attributes;
    assert_eq!(
        a["gen_ai.request.model"],
        json!("gpt-4.1"),
        "a different requested model stays"
    );
    assert_eq!(a["gen_ai.response.finish_reasons"], json!(["tool_calls"]));
    assert_eq!(a["gen_ai.request.temperature"], json!(0.5));
    assert_eq!(a["otel.span_kind"], json!("client"));
    for gone in [
        "gen_ai.response.model",
        "gen_ai.provider.name",
        "gen_ai.usage.input_tokens",
        "gen_ai.usage.cache_read.input_tokens",
        "gen_ai.input.messages",
        "gen_ai.output.messages",
        "gen_ai.system_instructions",
    ] {
        assert!(!a.contains_key(gone), "{gone} repeated");
    }
    assert_eq!(chat.status.code, StatusCode::Unset);

    let tool = &trace.spans[2].span;
    let t = tool.tool.as_ref().unwrap();
    assert_eq!(t.name.as_deref(), Some("get_weather"));
    assert_eq!(t.arguments, Some(json!({"location": "Paris"})));
    assert_eq!(
        t.result,
        Some(json!("rainy, 57°F")),
        "not JSON: kept as a string"
    );
    assert_eq!(tool.attributes["gen_ai.tool.call.id"], json!("call_1"));
    assert!(!tool.attributes.contains_key("gen_ai.tool.name"));

    let mut rollups = Rollups::default();
    for s in &trace.spans {
        rollups.apply_span(None, &s.span);
    }
    assert_eq!((rollups.input_tokens, rollups.output_tokens), (320, 48));
}

#[test]
fn protobuf_encoding_maps_identically() {
    for name in ["openinference_agent.json", "genai_agent.json"] {
        let from_json = decode_json(&fixture(name));
        let bytes = from_json.encode_to_vec();
        let from_proto = decode_export_request(&bytes, Encoding::Protobuf).unwrap();
        assert_eq!(from_proto, from_json, "{name}");
        assert_eq!(map_request(&from_proto), map_request(&from_json), "{name}");
        let opts = MapOptions {
            keep_mapped_attributes: true,
        };
        assert_eq!(
            map_request_with(&from_proto, &opts),
            map_request_with(&from_json, &opts)
        );
    }
}

#[test]
fn malformed_bodies_are_errors() {
    assert!(matches!(
        decode_export_request(b"\xff\xff\xff", Encoding::Protobuf),
        Err(OtlpError::Protobuf(_))
    ));
    let err = decode_export_request(
        br#"{"resourceSpans":[{"scopeSpans":[{"spans":[{"traceId":"zz"}]}]}]}"#,
        Encoding::Json,
    )
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        "invalid OTLP/JSON body: resourceSpans[0].scopeSpans[0].spans[0].traceId: expected 32 hex digits, got \"zz\""
    );
    assert_eq!(
        decode_export_request(b"", Encoding::Protobuf).unwrap(),
        ExportTraceServiceRequest::default()
    );
}

#[test]
fn spans_with_invalid_ids_are_rejected_and_the_others_kept() {
    let span = |trace_id: &str, span_id: &str, parent: &str, name: &str| {
        json!({"traceId": trace_id, "spanId": span_id, "parentSpanId": parent, "name": name,
               "startTimeUnixNano": "1", "endTimeUnixNano": "2"})
    };
    let t = "0af7651916cd43dd8448eb211c80319c";
    let body = json!({"resourceSpans": [{"scopeSpans": [{"spans": [
        span(t, "00f067aa0ba902b7", "", "good root"),
        span("00000000000000000000000000000000", "00f067aa0ba902b8", "", "zero trace"),
        span(t, "0000000000000000", "", "zero span"),
        span(t, "0102030405", "", "short span"),
        span("0af7651916cd43dd", "00f067aa0ba902b9", "", "short trace"),
        span(t, "00f067aa0ba902ba", "010203", "short parent"),
        span(t, "00f067aa0ba902bb", "0000000000000000", "zero parent is a root"),
        span(t, "00f067aa0ba902bc", "00f067aa0ba902b7", "good child"),
    ]}]}]});
    let batch = map_json(&body);
    assert_eq!(batch.rejected_spans, 5);
    let msg = batch.rejection_message.unwrap();
    for want in [
        "spans[1] (\"zero trace\"): trace id is all zeros",
        "spans[2] (\"zero span\"): span id is all zeros",
        "spans[3] (\"short span\"): span id has 5 bytes, expected 8",
        "spans[4] (\"short trace\"): trace id has 8 bytes, expected 16",
        "spans[5] (\"short parent\"): parent span id has 3 bytes, expected 8",
    ] {
        assert!(msg.contains(want), "{want:?} not in {msg:?}");
    }
    let kept: Vec<(&str, bool)> = batch.traces[0]
        .spans
        .iter()
        .map(|s| (s.span.name.as_str(), s.is_root))
        .collect();
    assert_eq!(
        kept,
        [
            ("good root", true),
            ("zero parent is a root", true),
            ("good child", false)
        ]
    );
}

#[test]
fn a_long_rejection_message_is_capped() {
    let spans: Vec<Value> = (0..8)
        .map(|n| json!({"traceId": "", "spanId": "00f067aa0ba902b7", "name": format!("s{n}")}))
        .collect();
    let batch = map_json(&json!({"resourceSpans": [{"scopeSpans": [{"spans": spans}]}]}));
    assert_eq!(batch.rejected_spans, 8);
    assert!(batch.traces.is_empty());
    let msg = batch.rejection_message.unwrap();
    assert!(msg.starts_with("rejected 8 span(s): "), "{msg}");
    assert!(msg.ends_with("; and 3 more"), "{msg}");
}

#[test]
fn int64_fields_parse_as_strings_and_as_numbers() {
    let body = |start: Value, end: Value, int_attr: Value| {
        json!({"resourceSpans": [{"scopeSpans": [{"spans": [{
            "traceId": "0af7651916cd43dd8448eb211c80319c", "spanId": "00f067aa0ba902b7", "name": "x",
            "startTimeUnixNano": start, "endTimeUnixNano": end,
            "attributes": [{"key": "n", "value": {"intValue": int_attr}}],
            "events": [{"timeUnixNano": end, "name": "e"}]
        }]}]}]})
    };
    let as_strings = map_json(&body(
        json!("1763719200000000001"),
        json!("1763719200500000000"),
        json!("-7"),
    ));
    let as_numbers = map_json(&body(
        json!(1763719200000000001u64),
        json!(1763719200500000000u64),
        json!(-7),
    ));
    assert_eq!(as_strings, as_numbers);
    let span = &as_strings.traces[0].spans[0];
    assert_eq!(span.span.start_time.unix_nanos(), 1_763_719_200_000_000_001);
    assert_eq!(
        span.span.end_time.unwrap().unix_nanos(),
        1_763_719_200_500_000_000
    );
    assert_eq!(span.span.attributes["n"], json!(-7));
    assert_eq!(span.logs[0].time.unix_nanos(), 1_763_719_200_500_000_000);
}

#[test]
fn kind_detection_table() {
    let cases: Vec<(Value, SpanKind)> = vec![
        (
            json!({"openinference.span.kind": s("AGENT")}),
            SpanKind::Agent,
        ),
        (
            json!({"openinference.span.kind": s("Chain")}),
            SpanKind::Chain,
        ),
        (json!({"openinference.span.kind": s("llm")}), SpanKind::Llm),
        (
            json!({"openinference.span.kind": s("TOOL")}),
            SpanKind::Tool,
        ),
        (
            json!({"openinference.span.kind": s("RETRIEVER")}),
            SpanKind::Retriever,
        ),
        (
            json!({"openinference.span.kind": s("EMBEDDING")}),
            SpanKind::Embedding,
        ),
        (
            json!({"openinference.span.kind": s("RERANKER")}),
            SpanKind::Reranker,
        ),
        (
            json!({"openinference.span.kind": s("guardrail")}),
            SpanKind::Guardrail,
        ),
        (
            json!({"openinference.span.kind": s("EVALUATOR")}),
            SpanKind::Evaluator,
        ),
        (
            json!({"openinference.span.kind": s("PROMPT")}),
            SpanKind::Prompt,
        ),
        (
            json!({"openinference.span.kind": s("decision")}),
            SpanKind::Decision,
        ),
        (
            json!({"openinference.span.kind": s("UNKNOWN")}),
            SpanKind::Other,
        ),
        (
            json!({"openinference.span.kind": s("SOMETHING_NEW")}),
            SpanKind::Other,
        ),
        (json!({"gen_ai.operation.name": s("chat")}), SpanKind::Llm),
        (
            json!({"gen_ai.operation.name": s("text_completion")}),
            SpanKind::Llm,
        ),
        (
            json!({"gen_ai.operation.name": s("generate_content")}),
            SpanKind::Llm,
        ),
        (
            json!({"gen_ai.operation.name": s("execute_tool")}),
            SpanKind::Tool,
        ),
        (
            json!({"gen_ai.operation.name": s("invoke_agent")}),
            SpanKind::Agent,
        ),
        (
            json!({"gen_ai.operation.name": s("create_agent")}),
            SpanKind::Agent,
        ),
        (
            json!({"gen_ai.operation.name": s("embeddings")}),
            SpanKind::Embedding,
        ),
        (
            json!({"gen_ai.operation.name": s("retrieval")}),
            SpanKind::Retriever,
        ),
        (
            json!({"gen_ai.operation.name": s("invoke_workflow")}),
            SpanKind::Chain,
        ),
        (
            json!({"gen_ai.operation.name": s("dance")}),
            SpanKind::Other,
        ),
        (
            json!({"openinference.span.kind": s("TOOL"), "gen_ai.operation.name": s("chat")}),
            SpanKind::Tool,
        ),
        (
            json!({"openinference.span.kind": s("RUNNABLE"), "gen_ai.operation.name": s("chat")}),
            SpanKind::Llm,
        ),
        (json!({"gen_ai.request.model": s("gpt-4o")}), SpanKind::Llm),
        (
            json!({"traceway.span.kind": s("task"), "openinference.span.kind": s("LLM")}),
            SpanKind::Task,
        ),
        (json!({"openinference.span.kind": i(3)}), SpanKind::Other),
        (json!({"http.method": s("GET")}), SpanKind::Other),
        (json!({}), SpanKind::Other),
    ];
    for (attrs, want) in cases {
        let batch = map_json(&spans_with(std::slice::from_ref(&attrs)));
        let span = &batch.traces[0].spans[0].span;
        assert_eq!(span.kind, want, "{attrs}");
    }
}

#[test]
fn model_and_provider_preference_table() {
    // (attributes, model, provider, attribute left over)
    type Case = (
        Value,
        Option<&'static str>,
        Option<&'static str>,
        Option<&'static str>,
    );
    let cases: Vec<Case> = vec![
        (
            json!({"gen_ai.request.model": s("gpt-4o")}),
            Some("gpt-4o"),
            None,
            None,
        ),
        (
            json!({"gen_ai.request.model": s("gpt-4o"), "gen_ai.response.model": s("gpt-4o-2024-08-06")}),
            Some("gpt-4o-2024-08-06"),
            None,
            Some("gen_ai.request.model"),
        ),
        (
            json!({"llm.request.model_name": s("claude-opus"), "llm.response.model_name": s("claude-fallback"),
                   "llm.model_name": s("claude-fallback")}),
            Some("claude-fallback"),
            None,
            Some("llm.request.model_name"),
        ),
        (
            json!({"llm.provider": s("azure"), "llm.system": s("openai"), "llm.model_name": s("gpt-4o")}),
            Some("gpt-4o"),
            Some("azure"),
            Some("llm.system"),
        ),
        (
            json!({"gen_ai.system": s("anthropic"), "gen_ai.request.model": s("claude")}),
            Some("claude"),
            Some("anthropic"),
            None,
        ),
        (
            json!({"gen_ai.provider.name": s("aws.bedrock"), "gen_ai.system": s("aws.bedrock"), "gen_ai.request.model": s("m")}),
            Some("m"),
            Some("aws.bedrock"),
            None,
        ),
    ];
    for (mut attrs, model, provider, left) in cases {
        attrs["gen_ai.operation.name"] = s("chat");
        let batch = map_json(&spans_with(std::slice::from_ref(&attrs)));
        let span = &batch.traces[0].spans[0].span;
        let llm = span.llm.as_ref().unwrap();
        assert_eq!(llm.model.as_deref(), model, "{attrs}");
        assert_eq!(llm.provider.as_deref(), provider, "{attrs}");
        let leftover: Vec<&String> = span.attributes.keys().collect();
        assert_eq!(leftover, left.into_iter().collect::<Vec<_>>(), "{attrs}");
    }
}

#[test]
fn token_spellings_table() {
    let cases: Vec<(Value, [Option<u64>; 5])> = vec![
        (
            json!({"gen_ai.usage.prompt_tokens": i(10), "gen_ai.usage.completion_tokens": i(2),
                   "gen_ai.usage.total_tokens": i(12)}),
            [Some(10), Some(2), Some(12), None, None],
        ),
        (
            json!({"gen_ai.usage.cache_read_input_tokens": i(4), "gen_ai.usage.reasoning_tokens": i(3)}),
            [None, None, None, Some(4), Some(3)],
        ),
        (
            json!({"llm.token_count.prompt": json!({"doubleValue": 7.0}), "llm.token_count.completion": s("8")}),
            [Some(7), Some(8), None, None, None],
        ),
        (
            json!({"llm.token_count.prompt": i(-1)}),
            [None, None, None, None, None],
        ),
    ];
    for (mut attrs, want) in cases {
        attrs["openinference.span.kind"] = s("LLM");
        let batch = map_json(&spans_with(std::slice::from_ref(&attrs)));
        let span = &batch.traces[0].spans[0].span;
        let got = span.llm.as_ref().map_or([None; 5], |l| {
            [
                l.input_tokens,
                l.output_tokens,
                l.total_tokens,
                l.cached_tokens,
                l.reasoning_tokens,
            ]
        });
        assert_eq!(got, want, "{attrs}");
    }
    // A count that is not one stays as an attribute.
    let batch = map_json(&spans_with(&[
        json!({"openinference.span.kind": s("LLM"), "llm.token_count.prompt": i(-1)}),
    ]));
    assert_eq!(
        batch.traces[0].spans[0].span.attributes["llm.token_count.prompt"],
        json!(-1)
    );
}

#[test]
fn other_message_forms() {
    let batch = map_json(&spans_with(&[
        // OpenLLMetry's indexed legacy attributes.
        json!({"gen_ai.operation.name": s("chat"),
               "gen_ai.prompt.0.role": s("user"), "gen_ai.prompt.0.content": s("hi"),
               "gen_ai.completion.0.role": s("assistant"), "gen_ai.completion.0.content": s("hello"),
               "gen_ai.completion.0.finish_reason": s("stop")}),
        // One legacy string, plain text and JSON.
        json!({"gen_ai.operation.name": s("chat"), "gen_ai.prompt": s("plain question"),
               "gen_ai.completion": s("[{\"role\":\"assistant\",\"content\":\"json answer\"}]")}),
        // OpenInference tool calls in an output message without text, and a message without role.
        json!({"openinference.span.kind": s("LLM"),
               "llm.input_messages.0.message.content": s("no role"),
               "llm.output_messages.0.message.role": s("assistant"),
               "llm.output_messages.0.message.tool_calls.0.tool_call.id": s("call_9"),
               "llm.output_messages.0.message.tool_calls.0.tool_call.function.name": s("search"),
               "llm.output_messages.0.message.tool_calls.0.tool_call.function.arguments": s("{\"q\":\"rust\"}")}),
        // GenAI messages as an OTLP array of key-value lists instead of a JSON string.
        json!({"gen_ai.operation.name": s("chat"),
        "gen_ai.input.messages": {"arrayValue": {"values": [{"kvlistValue": {"values": [
            {"key": "role", "value": s("user")},
            {"key": "parts", "value": {"arrayValue": {"values": [{"kvlistValue": {"values": [
                {"key": "type", "value": s("text")}, {"key": "content", "value": s("structured")}
            ]}}]}}}
        ]}}]}}}),
        // Not in the expected shape: kept as an attribute.
        json!({"gen_ai.operation.name": s("chat"), "gen_ai.input.messages": s("not json")}),
    ]));
    let spans = &batch.traces[0].spans;
    let llm = |n: usize| spans[n].span.llm.clone().unwrap_or_default();

    assert_eq!(llm(0).input_messages, [msg("user", "hi")]);
    assert_eq!(llm(0).output_messages, [msg("assistant", "hello")]);
    assert_eq!(
        spans[0].span.attributes["gen_ai.completion.0.finish_reason"],
        json!("stop")
    );

    assert_eq!(llm(1).input_messages, [msg("user", "plain question")]);
    assert_eq!(llm(1).output_messages, [msg("assistant", "json answer")]);

    assert_eq!(llm(2).input_messages, [msg("user", "no role")]);
    assert_eq!(
        llm(2).output_messages,
        [Message {
            role: "assistant".into(),
            tool_calls: vec![ToolCall {
                id: Some("call_9".into()),
                name: Some("search".into()),
                arguments: Some(json!({"q": "rust"})),
            }],
            ..Default::default()
        }]
    );
    assert!(spans[2]
        .span
        .attributes
        .keys()
        .all(|k| !k.starts_with("llm.")));

    assert_eq!(llm(3).input_messages, [msg("user", "structured")]);

    assert!(spans[4].span.llm.is_none());
    assert_eq!(
        spans[4].span.attributes["gen_ai.input.messages"],
        json!("not json")
    );
}

#[test]
fn reranker_and_genai_retrieval() {
    let batch = map_json(&spans_with(&[
        json!({"openinference.span.kind": s("RERANKER"), "reranker.query": s("q"),
               "reranker.input_documents.0.document.id": s("in"),
               "reranker.output_documents.0.document.id": s("best"),
               "reranker.output_documents.0.document.score": json!({"doubleValue": 0.9}),
               "reranker.model_name": s("cross-encoder")}),
        json!({"gen_ai.operation.name": s("retrieval"), "gen_ai.retrieval.query.text": s("paris"),
               "gen_ai.retrieval.documents": s("[{\"id\":\"doc_1\",\"score\":0.95},{\"id\":\"doc_2\",\"score\":0.5}]")}),
    ]));
    let spans = &batch.traces[0].spans;
    let r = spans[0].span.retrieval.as_ref().unwrap();
    assert_eq!(r.query.as_deref(), Some("q"));
    assert_eq!(r.documents.len(), 1);
    assert_eq!(
        (r.documents[0].id.as_deref(), r.documents[0].score),
        (Some("best"), Some(0.9))
    );
    assert_eq!(
        spans[0].span.attributes["reranker.input_documents.0.document.id"],
        json!("in")
    );
    assert_eq!(
        spans[0].span.attributes["reranker.model_name"],
        json!("cross-encoder")
    );

    let r = spans[1].span.retrieval.as_ref().unwrap();
    assert_eq!(r.query.as_deref(), Some("paris"));
    let docs: Vec<_> = r
        .documents
        .iter()
        .map(|d| (d.id.clone().unwrap(), d.score.unwrap()))
        .collect();
    assert_eq!(
        docs,
        [("doc_1".to_string(), 0.95), ("doc_2".to_string(), 0.5)]
    );
    assert!(spans[1]
        .span
        .attributes
        .keys()
        .all(|k| !k.starts_with("gen_ai.retrieval")));
}

#[test]
fn keep_mapped_attributes_keeps_everything_and_the_resource() {
    let req = decode_json(&fixture("openinference_agent.json"));
    let batch = map_request_with(
        &req,
        &MapOptions {
            keep_mapped_attributes: true,
        },
    );
    let llm = by_name(&batch, "ChatOpenAI");
    let a = &llm.span.attributes;
    assert_eq!(a["llm.token_count.prompt"], json!(120));
    assert_eq!(a["openinference.span.kind"], json!("LLM"));
    assert_eq!(a["llm.input_messages.0.message.role"], json!("system"));
    assert_eq!(a["resource.service.name"], json!("support-bot"));
    assert_eq!(a["resource.deployment.environment"], json!("prod"));
    // Typed fields are filled all the same.
    assert_eq!(llm.span.llm.as_ref().unwrap().input_tokens, Some(120));
    // Nothing else changes.
    let plain = map_request(&req);
    assert_eq!(plain.traces[0].spans.len(), batch.traces[0].spans.len());
    assert_eq!(by_name(&plain, "ChatOpenAI").span.llm, llm.span.llm);
}

#[test]
fn hints_prefer_the_root_and_traces_keep_first_seen_order() {
    let span = |trace: &str, id: &str, parent: &str, attrs: Value| {
        let attributes: Vec<Value> = attrs
            .as_object()
            .unwrap()
            .iter()
            .map(|(k, v)| json!({"key": k, "value": v}))
            .collect();
        json!({"traceId": trace, "spanId": id, "parentSpanId": parent, "name": format!("n{id}"),
               "attributes": attributes})
    };
    let (t1, t2) = (
        "11111111111111111111111111111111",
        "22222222222222222222222222222222",
    );
    let body = json!({"resourceSpans": [
        {"resource": {"attributes": [{"key": "service.name", "value": s("svc-a")}]},
         "scopeSpans": [{"spans": [
            span(t2, "0000000000000002", "0000000000000001", json!({"session.id": s("child-session"), "user.id": i(42)})),
            span(t1, "0000000000000009", "0000000000000008", json!({"gen_ai.agent.name": s("sub-agent")})),
            span(t2, "0000000000000001", "", json!({"session.id": s("root-session")})),
         ]}]},
        {"resource": {"attributes": [{"key": "service.name", "value": s("svc-b")}]},
         "scopeSpans": [{"spans": [span(t1, "0000000000000008", "0000000000000007", json!({}))]}]}
    ]});
    let batch = map_json(&body);
    let ids: Vec<String> = batch
        .traces
        .iter()
        .map(|t| t.trace_id.to_string())
        .collect();
    assert_eq!(ids, [t2, t1]);
    let h2 = &batch.traces[0].hints;
    assert_eq!(
        h2.session_id.as_deref(),
        Some("root-session"),
        "the root wins"
    );
    assert_eq!(
        h2.user_id.as_deref(),
        Some("42"),
        "filled from a child, integer as text"
    );
    assert_eq!(h2.name.as_deref(), Some("n0000000000000001"));
    let h1 = &batch.traces[1].hints;
    assert_eq!(h1.agent_id.as_deref(), Some("sub-agent"));
    assert_eq!(h1.name, None, "no root in the batch");
    assert_eq!(
        h1.service.as_deref(),
        Some("svc-a"),
        "the first span's service"
    );
    let services: Vec<_> = batch.traces[1]
        .spans
        .iter()
        .map(|s| s.span.service.clone().unwrap())
        .collect();
    assert_eq!(services, ["svc-a", "svc-b"]);
}

#[test]
fn odd_spans_are_kept_with_sane_defaults() {
    let body = json!({"resourceSpans": [{"scopeSpans": [{"spans": [
        {"traceId": "0af7651916cd43dd8448eb211c80319c", "spanId": "0000000000000001",
         "kind": 2, "startTimeUnixNano": "5000", "droppedAttributesCount": 3, "droppedEventsCount": 1,
         "attributes": [
            {"key": "weird", "value": {}},
            {"key": "strindex", "value": {"stringValueStrindex": 4}},
            {"key": "", "value": s("empty key")},
            {"key": "otel.span_kind", "value": s("mine")},
            {"key": "big", "value": {"doubleValue": "Infinity"}}
         ],
         "events": [{"name": "", "attributes": [{"key": "k", "value": {"bytesValue": "AQ=="}}]},
                    {"name": "exception"}],
         "links": [{"traceId": "", "spanId": "0000000000000001"},
                   {"traceId": "0af7651916cd43dd8448eb211c80319c", "spanId": "00"}]},
        {"traceId": "0af7651916cd43dd8448eb211c80319c", "spanId": "0000000000000002",
         "endTimeUnixNano": "9000"}
    ]}]}]});
    let batch = map_json(&body);
    assert_eq!(batch.rejected_spans, 0);
    let a = &batch.traces[0].spans[0];
    assert_eq!(a.span.name, "other", "an empty name becomes the kind");
    assert_eq!(a.span.start_time.unix_nanos(), 5000);
    assert_eq!(
        a.span.end_time.unwrap().unix_nanos(),
        5000,
        "no end: ends at its start"
    );
    let attrs = &a.span.attributes;
    assert_eq!(attrs["weird"], Value::Null);
    assert_eq!(attrs["strindex"], Value::Null);
    assert_eq!(attrs[""], json!("empty key"));
    assert_eq!(
        attrs["otel.span_kind"],
        json!("mine"),
        "the span's own attribute wins"
    );
    assert_eq!(attrs["big"], json!("Infinity"));
    assert_eq!(attrs["otel.dropped_attributes_count"], json!(3));
    assert_eq!(attrs["otel.dropped_events_count"], json!(1));
    assert!(!attrs.contains_key("otel.dropped_links_count"));
    assert_eq!(a.logs[0].record.message, "event");
    assert_eq!(a.logs[0].record.attributes["k"], json!("AQ=="));
    assert_eq!(
        a.logs[0].time.unix_nanos(),
        5000,
        "no time: the span's start"
    );
    assert_eq!(a.errors[0].record.message, "exception");
    assert_eq!(a.errors[0].record.error_type, None);
    assert_eq!(
        a.span.links.len(),
        1,
        "a link without a valid trace id is dropped"
    );
    assert_eq!(a.span.links[0].span_id, None);

    let b = &batch.traces[0].spans[1];
    assert_eq!(
        b.span.start_time.unix_nanos(),
        9000,
        "no start: starts at its end"
    );
    assert_eq!(b.span.end_time.unwrap().unix_nanos(), 9000);
}

#[test]
fn encoding_from_content_type_table() {
    let cases = [
        ("application/x-protobuf", Some(Encoding::Protobuf)),
        ("application/protobuf", Some(Encoding::Protobuf)),
        ("Application/JSON; charset=utf-8", Some(Encoding::Json)),
        ("application/json", Some(Encoding::Json)),
        ("text/plain", None),
        ("", None),
    ];
    for (ct, want) in cases {
        assert_eq!(Encoding::from_content_type(ct), want, "{ct:?}");
    }
}

#[test]
fn a_mapped_trace_becomes_a_new_running_trace_with_its_hints() {
    let batch = map_request(&decode_json(&fixture("openinference_agent.json")));
    let t = &batch.traces[0];
    let new = t.new_trace();
    assert_eq!(new.trace_id, Some(t.trace_id));
    assert_eq!(new.state, Some(State::Running));
    assert_eq!(new.name.as_deref(), Some("support_agent"));
    assert_eq!(new.agent_id.as_deref(), Some("support-agent"));
    assert_eq!(new.level, None, "the server's default level applies");
    assert_eq!(
        new.metadata.get(SERVICE_METADATA_KEY).map(String::as_str),
        Some("support-bot")
    );
}

#[test]
fn root_end_table() {
    // (spans as (is root, status code)), expected end state
    type Case = (&'static [(bool, i32)], Option<State>);
    let cases: &[Case] = &[
        (&[], None),
        (&[(false, 0), (false, 2)], None),
        (&[(true, 0)], Some(State::Completed)),
        (&[(true, 1), (false, 2)], Some(State::Completed)),
        (&[(false, 0), (true, 2)], Some(State::Errored)),
        (&[(true, 1), (true, 2)], Some(State::Errored)),
    ];
    for (spans, want) in cases {
        let spans: Vec<Value> = spans
            .iter()
            .enumerate()
            .map(|(i, (root, code))| {
                json!({
                    "traceId": "0af7651916cd43dd8448eb211c80319c",
                    "spanId": format!("{:016x}", i + 1),
                    "parentSpanId": if *root { String::new() } else { "00000000000000ff".into() },
                    "name": "s",
                    "status": {"code": code},
                })
            })
            .collect();
        let batch = map_json(&json!({"resourceSpans": [{"scopeSpans": [{"spans": spans}]}]}));
        let end = batch.traces.first().and_then(|t| t.root_end());
        assert_eq!(
            end.as_ref().and_then(|p| p.state.clone()),
            *want,
            "{spans:?}"
        );
        if let Some(p) = end {
            let reason = p.reason.unwrap();
            let want_reason = if p.state == Some(State::Errored) {
                ROOT_FAILED_REASON
            } else {
                ROOT_ENDED_REASON
            };
            assert_eq!(reason, want_reason);
        }
    }
}

#[test]
fn into_events_puts_each_span_before_its_errors_and_logs_with_stable_ids() {
    let req = decode_json(&fixture("openinference_agent.json"));
    let events = map_request(&req).traces.remove(0).into_events();
    let again = map_request(&req).traces.remove(0).into_events();
    assert_eq!(
        events, again,
        "the same export gives the same events (and ids)"
    );
    let kinds: Vec<&str> = events
        .iter()
        .map(|e| match e {
            EventInput::SpanEnded { .. } => "span",
            EventInput::Error { .. } => "error",
            EventInput::Log { .. } => "log",
            EventInput::SpanStarted { .. } => "start",
        })
        .collect();
    assert_eq!(
        kinds,
        ["span", "span", "span", "span", "span", "span", "error", "log"]
    );
    let EventInput::Error { id, record, .. } = &events[6] else {
        unreachable!()
    };
    assert_eq!(
        id.as_deref(),
        Some("otlp:a000000000000006:1"),
        "the index of the event in its span"
    );
    assert_eq!(record.span_id, Some(sid("a000000000000006")));
    let EventInput::SpanEnded { span } = &events[5] else {
        unreachable!()
    };
    assert!(span.end_time.is_some(), "a whole span");
}
