//! Hand-built traces for the formatter and analysis tests. Times are milliseconds from a
//! fixed origin so that snapshots do not depend on the clock.

use traceway_core::{
    Level, LlmDetails, Rollups, Span, SpanId, SpanKind, State, StatusCode, Timestamp, ToolDetails,
    Trace, TraceId,
};

/// The origin of every fixture: 2026-01-01T00:00:00Z.
pub const T0_MS: i64 = 1_767_225_600_000;

pub fn at(ms: i64) -> Timestamp {
    Timestamp::from_unix_millis(T0_MS + ms)
}

/// A trace row whose rollups are folded from `spans`, as the store keeps them.
pub fn trace(state: State, spans: &[Span]) -> Trace {
    let mut rollups = Rollups::default();
    for s in spans {
        rollups.apply_span(None, s);
    }
    Trace {
        trace_id: TraceId::from_u128(0x0190_f1c2_a3b4_7c8d_9e0f_1122_3344_5566).unwrap(),
        tenant: "default".into(),
        name: Some("fixture".into()),
        agent_id: Some("support-bot".into()),
        session_id: None,
        user_id: None,
        state,
        level: Level::Detailed,
        created_at: at(0),
        last_activity_at: at(0),
        ended_at: None,
        expires_at: at(86_400_000),
        last_seq: 0,
        metadata: Default::default(),
        rollups,
    }
}

/// A span `id` under `parent` from `start` to `end` ms (running when `end` is `None`),
/// status `ok` once ended.
pub fn span(
    id: u64,
    parent: Option<u64>,
    kind: SpanKind,
    name: &str,
    start: i64,
    end: Option<i64>,
) -> Span {
    let mut s = Span::new(SpanId::from_u64(id).unwrap(), kind, name, at(start));
    s.parent_span_id = parent.and_then(SpanId::from_u64);
    s.end_time = end.map(at);
    if end.is_some() {
        s.status.code = StatusCode::Ok;
    }
    s
}

pub fn llm(mut s: Span, model: &str, input: u64, output: u64) -> Span {
    s.llm = Some(LlmDetails {
        provider: Some("openai".into()),
        model: Some(model.into()),
        input_tokens: Some(input),
        output_tokens: Some(output),
        ..Default::default()
    });
    s
}

pub fn tool(mut s: Span, args: serde_json::Value, result: serde_json::Value) -> Span {
    s.tool = Some(ToolDetails {
        name: Some(s.name.clone()),
        arguments: Some(args),
        result: Some(result),
        ..Default::default()
    });
    s
}

pub fn failed(mut s: Span, message: &str) -> Span {
    s.status.code = StatusCode::Error;
    s.status.message = Some(message.into());
    s
}
