//! Golden OTLP fixtures of issue 11, one per case, each in OTLP/JSON (`*.json`) and in
//! protobuf (`*.pb`, the same request encoded): remote parents, tool arguments, every
//! OpenInference kind, the agent-name fallback, resource and metadata, messages with tool
//! calls, embeddings, and OTLP logs. Run with `TRACEWAY_BLESS=1` to rewrite the `.pb` files
//! after changing a `.json` one.

use prost::Message as _;
use serde_json::json;
use traceway_core::otlp::{
    decode_export_request, decode_logs_request, map_logs_request, map_request, map_request_with,
    Encoding, ExportLogsServiceRequest, ExportTraceServiceRequest, MapOptions, MappedBatch,
    MappedSpan,
};
use traceway_core::{
    fill_messages, strip_span, EventInput, FillMode, Level, Message, Rollups, Severity, SpanId,
    SpanKind, State, ToolCall,
};

const CASES: &[&str] = &[
    "remote_parent",
    "tool_arguments",
    "openinference_kinds",
    "agent_name_fallback",
    "resource_metadata",
    "messages_tool_calls",
    "embedding",
];

fn path(name: &str) -> String {
    format!("{}/tests/fixtures/otlp/{name}", env!("CARGO_MANIFEST_DIR"))
}

fn read(name: &str) -> Vec<u8> {
    std::fs::read(path(name)).unwrap_or_else(|e| panic!("{}: {e}", path(name)))
}

/// The JSON fixture, checked against its protobuf twin: both decode to the same request.
fn traces(case: &str) -> ExportTraceServiceRequest {
    let from_json = decode_export_request(&read(&format!("{case}.json")), Encoding::Json).unwrap();
    let pb = format!("{case}.pb");
    if std::env::var_os("TRACEWAY_BLESS").is_some() {
        std::fs::write(path(&pb), from_json.encode_to_vec()).unwrap();
    }
    let from_pb = decode_export_request(&read(&pb), Encoding::Protobuf).unwrap();
    assert_eq!(
        from_pb, from_json,
        "{case}: the .pb and .json fixtures differ"
    );
    from_json
}

fn logs() -> ExportLogsServiceRequest {
    let from_json = decode_logs_request(&read("logs_genai.json"), Encoding::Json).unwrap();
    if std::env::var_os("TRACEWAY_BLESS").is_some() {
        std::fs::write(path("logs_genai.pb"), from_json.encode_to_vec()).unwrap();
    }
    let from_pb = decode_logs_request(&read("logs_genai.pb"), Encoding::Protobuf).unwrap();
    assert_eq!(
        from_pb, from_json,
        "logs: the .pb and .json fixtures differ"
    );
    from_json
}

fn span<'a>(batch: &'a MappedBatch, name: &str) -> &'a MappedSpan {
    batch
        .traces
        .iter()
        .flat_map(|t| &t.spans)
        .find(|s| s.span.name == name)
        .unwrap_or_else(|| panic!("no span {name}"))
}

fn sid(s: &str) -> SpanId {
    s.parse().unwrap()
}

fn msg(role: &str, content: &str) -> Message {
    Message {
        role: role.into(),
        content: Some(content.into()),
        ..Default::default()
    }
}

#[test]
fn every_fixture_has_a_matching_protobuf_twin() {
    for case in CASES {
        let req = traces(case);
        assert!(!req.resource_spans.is_empty(), "{case}");
    }
    assert!(!logs().resource_logs.is_empty());
}

#[test]
fn a_span_with_a_remote_parent_is_its_services_root() {
    let batch = map_request(&traces("remote_parent"));
    assert_eq!(batch.rejected_spans, 0);
    let callee = &batch.traces[0];
    let root = span(&batch, "handle_request");
    assert!(root.is_root, "flags 0x300: the parent is remote");
    assert_eq!(
        root.span.parent_span_id,
        Some(sid("c0ffee0000000001")),
        "the caller's span stays the parent"
    );
    assert!(
        !span(&batch, "lookup").is_root,
        "flags 0x100: a local parent"
    );
    assert_eq!(callee.hints.name.as_deref(), Some("handle_request"));
    assert_eq!(
        callee.root_end().and_then(|p| p.state),
        Some(State::Completed),
        "the run is over when its local root ends"
    );
    assert_eq!(
        callee.hints.agent_id.as_deref(),
        Some("handle_request"),
        "the local root is an agent span"
    );

    // An older SDK sends no flags: a server span whose parent is not in the batch is a
    // local root; a client span is not, nor a span whose flags say its parent is local.
    assert!(span(&batch, "GET /answer").is_root);
    assert!(!span(&batch, "db").is_root);
    assert!(!span(&batch, "internal").is_root);
    assert_eq!(batch.traces[1].hints.name.as_deref(), Some("GET /answer"));
}

#[test]
fn tool_arguments_come_from_the_call_and_the_schema_stays_the_schema() {
    let batch = map_request(&traces("tool_arguments"));
    let oi = span(&batch, "get_weather").span.tool.clone().unwrap();
    assert_eq!(oi.arguments, Some(json!({"city": "Paris"})));
    assert_eq!(
        oi.schema,
        Some(
            json!({"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]})
        )
    );
    assert_eq!(oi.result, Some(json!("rainy")));
    let genai = span(&batch, "execute_tool get_weather");
    let t = genai.span.tool.clone().unwrap();
    assert_eq!(
        t.arguments,
        Some(json!({"city": "Lyon"})),
        "the GenAI arguments win"
    );
    assert_eq!(t.result, Some(json!({"sky": "clear"})));
    assert_eq!(t.schema, None);
    assert_eq!(
        genai.span.input,
        Some(json!("ignored: the GenAI arguments win")),
        "the input not used stays the input"
    );
}

#[test]
fn every_openinference_kind_has_a_traceway_kind() {
    let batch = map_request(&traces("openinference_kinds"));
    let kinds: Vec<(String, SpanKind)> = batch.traces[0]
        .spans
        .iter()
        .map(|s| (s.span.name.clone(), s.span.kind))
        .collect();
    let want = [
        ("tool_span", SpanKind::Tool),
        ("chain_span", SpanKind::Chain),
        ("llm_span", SpanKind::Llm),
        ("retriever_span", SpanKind::Retriever),
        ("embedding_span", SpanKind::Embedding),
        ("agent_span", SpanKind::Agent),
        ("reranker_span", SpanKind::Reranker),
        ("unknown_span", SpanKind::Other),
        ("guardrail_span", SpanKind::Guardrail),
        ("evaluator_span", SpanKind::Evaluator),
        ("prompt_span", SpanKind::Prompt),
        ("decision_span", SpanKind::Decision),
    ];
    let want: Vec<(String, SpanKind)> = want.iter().map(|(n, k)| (n.to_string(), *k)).collect();
    assert_eq!(kinds, want);
    for s in &batch.traces[0].spans {
        assert!(
            !s.span.attributes.contains_key("openinference.span.kind"),
            "{}: the kind attribute is consumed",
            s.span.name
        );
    }
    // The new kinds read and write as lower-case names.
    for k in [SpanKind::Prompt, SpanKind::Evaluator, SpanKind::Decision] {
        let v = serde_json::to_value(k).unwrap();
        assert_eq!(v, json!(k.as_str()));
        assert_eq!(serde_json::from_value::<SpanKind>(v).unwrap(), k);
    }
}

#[test]
fn the_agent_is_the_root_agent_spans_name_when_nothing_names_it() {
    let batch = map_request(&traces("agent_name_fallback"));
    let t = &batch.traces[0];
    assert_eq!(t.hints.agent_id.as_deref(), Some("TriageAgent"));
    assert_eq!(t.new_trace().agent_id.as_deref(), Some("TriageAgent"));

    // Without the root in the batch the sub-agent does not name the trace: the root, which
    // comes later, would not be able to correct it.
    let mut req = traces("agent_name_fallback");
    req.resource_spans[0].scope_spans[0].spans.truncate(1);
    let early = map_request(&req);
    assert_eq!(early.traces[0].hints.agent_id, None);
}

#[test]
fn resource_attributes_metadata_and_tags_reach_the_trace() {
    let batch = map_request(&traces("resource_metadata"));
    let new = batch.traces[0].new_trace();
    let m = &new.metadata;
    assert_eq!(m["service.name"], "support-bot");
    assert_eq!(m["service.version"], "1.4.2");
    assert_eq!(m["deployment.environment.name"], "staging");
    assert_eq!(m["telemetry.sdk.language"], "python");
    assert_eq!(m["experiment"], "b-42", "the root's metadata wins");
    assert_eq!(m["child_only"], "x", "other spans fill what the root lacks");
    assert_eq!(m["retries"], "3");
    assert_eq!(m["flags"], r#"{"beta":true}"#);
    assert_eq!(m["tag.tags"], r#"["support","beta"]"#);
}

#[test]
fn messages_carry_tool_calls_ids_and_names_and_agent_spans_get_their_conversation() {
    let batch = map_request(&traces("messages_tool_calls"));
    let chat = span(&batch, "ChatCompletion").span.clone();
    let llm = chat.llm.unwrap();
    assert_eq!(
        llm.input_messages,
        [
            msg("user", "Weather in Paris?"),
            Message {
                role: "assistant".into(),
                tool_calls: vec![ToolCall {
                    id: Some("call_1".into()),
                    name: Some("get_weather".into()),
                    arguments: Some(json!({"city": "Paris"})),
                }],
                ..Default::default()
            },
            Message {
                role: "tool".into(),
                content: Some("rainy".into()),
                tool_call_id: Some("call_1".into()),
                name: Some("get_weather".into()),
                ..Default::default()
            },
        ]
    );
    assert!(
        chat.attributes.keys().all(|k| !k.starts_with("llm.")),
        "nothing left loose: {:?}",
        chat.attributes.keys().collect::<Vec<_>>()
    );

    let agent = span(&batch, "invoke_agent Planner").span.clone();
    assert_eq!(
        agent.input,
        Some(json!([{"role": "user", "content": "Weather in Paris?"}]))
    );
    assert_eq!(
        agent.output,
        Some(json!([{"role": "assistant", "content": "It is rainy."}]))
    );
    assert!(!agent.attributes.contains_key("gen_ai.input.messages"));
    assert!(!agent.attributes.contains_key("gen_ai.output.messages"));
}

#[test]
fn embedding_vectors_are_stored_once_and_their_tokens_apart() {
    let req = traces("embedding");
    for opts in [
        MapOptions::default(),
        MapOptions {
            keep_mapped_attributes: true,
        },
    ] {
        let batch = map_request_with(&req, &opts);
        let e = span(&batch, "CreateEmbeddings").span.clone();
        let out = e.output.clone().unwrap();
        assert_eq!(out[1]["text"], "world");
        assert_eq!(out[0]["vector"].as_array().map(Vec::len), Some(16));
        let text = serde_json::to_string(&e).unwrap();
        assert_eq!(
            text.matches("0.015").count(),
            1,
            "one copy of the vectors ({opts:?}): {text}"
        );
        assert!(!e.attributes.contains_key("output.value"));
    }
    let batch = map_request(&req);
    let mut e = span(&batch, "CreateEmbeddings").span.clone();
    strip_span(&mut e, Level::Detailed, 16 * 1024);
    assert_eq!(
        e.output,
        Some(json!([
            {"text": "hello", "vector": {"vector_dimension": 16}},
            {"text": "world", "vector": {"vector_dimension": 16}},
        ]))
    );

    let mut r = Rollups::default();
    for s in &batch.traces[0].spans {
        r.apply_span(None, &s.span);
    }
    assert_eq!(r.embedding_tokens, 8);
    assert_eq!(
        (r.input_tokens, r.output_tokens, r.total_tokens),
        (100, 20, 120),
        "the LLM counts leave the embedding out"
    );
}

#[test]
fn log_records_become_span_logs_and_genai_events_fill_llm_messages() {
    let batch = map_logs_request(&logs());
    assert_eq!(
        batch.rejected_log_records, 2,
        "the two records without a trace id"
    );
    let why = batch.rejection_message.clone().unwrap();
    assert!(
        why.contains("logRecords[8]: log record has no trace id"),
        "{why}"
    );
    assert_eq!(batch.traces.len(), 1);
    let t = &batch.traces[0];
    assert_eq!(t.service.as_deref(), Some("chat-svc"));
    assert_eq!(t.new_trace().state, Some(State::Running));
    assert_eq!(
        t.logs.len(),
        2,
        "the GenAI message events become fills, not log events"
    );
    assert!(t
        .logs
        .iter()
        .all(|l| !l.record.message.starts_with("gen_ai.")));
    let plain = &t.logs[0].record;
    assert_eq!(plain.message, "cache miss for key 42");
    assert_eq!(plain.severity, Severity::Warn);
    assert_eq!(plain.attributes["cache.key"], "42");
    let trace_level = &t.logs[1].record;
    assert_eq!(
        (trace_level.span_id, trace_level.severity),
        (None, Severity::Info)
    );

    // Stable ids: the same export maps to the same ids, different records to different ones.
    let again = map_logs_request(&logs());
    let ids: Vec<&str> = t.logs.iter().map(|l| l.id.as_str()).collect();
    let ids_again: Vec<&str> = again.traces[0].logs.iter().map(|l| l.id.as_str()).collect();
    assert_eq!(ids, ids_again);
    let fill_ids: Vec<&str> = t.message_fills.iter().map(|f| f.id.as_str()).collect();
    let fill_ids_again: Vec<&str> = again.traces[0]
        .message_fills
        .iter()
        .map(|f| f.id.as_str())
        .collect();
    assert_eq!(fill_ids, fill_ids_again);
    let mut unique = ids.clone();
    unique.extend(&fill_ids);
    unique.sort_unstable();
    unique.dedup();
    assert_eq!(unique.len(), ids.len() + fill_ids.len());
    assert!(
        ids[0].starts_with("otlp-log:a000000000000002:"),
        "{}",
        ids[0]
    );
    assert!(
        fill_ids[0].starts_with("otlp-fill:a000000000000002:")
            && fill_ids[1].starts_with("otlp-fill:a000000000000003:"),
        "{fill_ids:?}"
    );
    let events = t.log_events();
    assert_eq!(events.len(), 2);
    assert!(matches!(&events[0], EventInput::Log { id: Some(id), .. } if id == ids[0]));

    // A record more in the export is another fill (another id).
    let mut more = logs();
    let extra = more.resource_logs[0].scope_logs[0].log_records[1].clone();
    more.resource_logs[0].scope_logs[0].log_records.push(extra);
    let more = map_logs_request(&more);
    assert_ne!(more.traces[0].message_fills[0].id, fill_ids[0]);

    assert_eq!(t.message_fills.len(), 2);
    let per_message = &t.message_fills[0];
    assert_eq!(
        (per_message.span_id, per_message.mode),
        (sid("a000000000000002"), FillMode::Append)
    );
    assert_eq!(
        per_message.input_messages,
        [
            msg("system", "Be brief."),
            msg("user", "Weather in Paris?"),
            Message {
                role: "assistant".into(),
                tool_calls: vec![ToolCall {
                    id: Some("call_1".into()),
                    name: Some("get_weather".into()),
                    arguments: Some(json!({"city": "Paris"})),
                }],
                ..Default::default()
            },
            Message {
                role: "tool".into(),
                content: Some("rainy".into()),
                tool_call_id: Some("call_1".into()),
                ..Default::default()
            },
        ]
    );
    assert_eq!(
        per_message.output_messages,
        [msg("assistant", "It is rainy.")]
    );
    let details = &t.message_fills[1];
    assert_eq!(
        (details.span_id, details.mode),
        (sid("a000000000000003"), FillMode::Replace)
    );
    assert_eq!(
        details.input_messages,
        [msg("system", "Be brief."), msg("user", "Weather in Lyon?")]
    );
    assert_eq!(details.output_messages, [msg("assistant", "Sunny.")]);

    // The fill lands on the LLM span whichever comes first.
    let mut chat = traceway_core::Span::new(
        sid("a000000000000002"),
        SpanKind::Llm,
        "chat gpt-4o",
        traceway_core::Timestamp::from_unix_millis(1),
    );
    assert!(fill_messages(&mut chat, per_message));
    assert_eq!(
        chat.llm.unwrap().output_messages,
        [msg("assistant", "It is rainy.")]
    );
}

#[test]
fn undecodable_log_bodies_are_errors() {
    assert!(decode_logs_request(b"\xff\xff", Encoding::Protobuf).is_err());
    let err = decode_logs_request(br#"{"resourceLogs":{}}"#, Encoding::Json).unwrap_err();
    assert!(
        err.to_string().contains("resourceLogs: expected an array"),
        "{err}"
    );
}

#[test]
fn a_mapped_span_is_capped_as_a_whole_below_debug() {
    /// The bytes of the span's content strings (message contents, tool call arguments,
    /// attributes; not ids and names), truncation marks not counted.
    fn content_bytes(s: &traceway_core::Span) -> usize {
        fn walk(v: &serde_json::Value) -> usize {
            match v {
                serde_json::Value::String(s) => s.trim_end_matches("…[truncated]").len(),
                serde_json::Value::Array(a) => a.iter().map(walk).sum(),
                serde_json::Value::Object(m) => m.values().map(walk).sum(),
                _ => 0,
            }
        }
        let llm = s.llm.as_ref().unwrap();
        let messages: usize = llm
            .input_messages
            .iter()
            .chain(&llm.output_messages)
            .map(|m| {
                let content = m.content.clone().map(serde_json::Value::String);
                let args = m.tool_calls.iter().filter_map(|c| c.arguments.as_ref());
                content.iter().chain(args).map(walk).sum::<usize>()
            })
            .sum();
        messages + walk(&serde_json::Value::Object(s.attributes.clone()))
    }
    let batch = map_request(&traces("messages_tool_calls"));
    let chat = span(&batch, "ChatCompletion").span.clone();
    assert!(
        content_bytes(&chat) > 60,
        "the fixture has more than the cap"
    );
    // Each string may keep 5 bytes, the span 4 × 5 = 20 in all. Cut one by one, the
    // strings would keep 28 (three contents, one argument, two attributes).
    let mut capped = chat.clone();
    strip_span(&mut capped, Level::Detailed, 5);
    assert_eq!(content_bytes(&capped), 20, "{capped:?}");
    let mut debug = chat.clone();
    strip_span(&mut debug, Level::Debug, 5);
    assert_eq!(debug, chat, "debug keeps everything");
}
