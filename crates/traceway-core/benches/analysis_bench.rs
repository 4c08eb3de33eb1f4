//! The analysis of one trace of 10,000 spans (an agent with 100 turns, each an LLM call
//! and 97 tool calls in four parallel lanes, some failing, some repeated), and the
//! summary alone.
//!
//! ```text
//! cargo bench -p traceway-core --bench analysis_bench
//! ```
//!
//! Asserts nothing; figures go to BENCHMARKS.md.

use criterion::{criterion_group, criterion_main, Criterion};
use serde_json::json;
use traceway_core::analysis::{analyze, summarize, AnalysisOptions};
use traceway_core::{
    Level, LlmDetails, Rollups, Span, SpanId, SpanKind, State, StatusCode, Timestamp, ToolDetails,
    Trace, TraceId,
};

const T0_MS: i64 = 1_767_225_600_000;

fn at(ms: i64) -> Timestamp {
    Timestamp::from_unix_millis(T0_MS + ms)
}

fn span(id: u64, parent: Option<u64>, kind: SpanKind, name: &str, start: i64, end: i64) -> Span {
    let mut s = Span::new(SpanId::from_u64(id).unwrap(), kind, name, at(start));
    s.parent_span_id = parent.and_then(SpanId::from_u64);
    s.end_time = Some(at(end));
    s.status.code = StatusCode::Ok;
    s
}

fn spans() -> Vec<Span> {
    let mut out = vec![span(1, None, SpanKind::Agent, "run", 0, 100_000)];
    let mut id = 2;
    for turn in 0..100i64 {
        let t0 = turn * 1000;
        let turn_id = id;
        out.push(span(
            turn_id,
            Some(1),
            SpanKind::Chain,
            "turn",
            t0,
            t0 + 1000,
        ));
        id += 1;
        let mut think = span(id, Some(turn_id), SpanKind::Llm, "think", t0, t0 + 300);
        think.llm = Some(LlmDetails {
            model: Some("gpt-4o".into()),
            input_tokens: Some(1000),
            output_tokens: Some(100),
            ..Default::default()
        });
        out.push(think);
        id += 1;
        for k in 0..97i64 {
            let lane = k % 4;
            let start = t0 + 300 + (k / 4) * 28 + lane;
            let mut s = span(
                id,
                Some(turn_id),
                SpanKind::Tool,
                &format!("tool_{lane}"),
                start,
                start + 25,
            );
            s.tool = Some(ToolDetails {
                name: Some(s.name.clone()),
                // Every fifth call repeats the turn's first arguments.
                arguments: Some(json!({"turn": turn, "k": if k % 5 == 0 { 0 } else { k }})),
                result: Some(json!({"ok": k})),
                ..Default::default()
            });
            if k == 1 {
                s.status.code = StatusCode::Error;
                s.status.message = Some(format!("upstream 503 on attempt {turn}"));
            }
            out.push(s);
            id += 1;
        }
    }
    while out.len() < 10_000 {
        out.push(span(id, Some(1), SpanKind::Other, "mark", 99_999, 99_999));
        id += 1;
    }
    out
}

fn trace(spans: &[Span]) -> Trace {
    let mut rollups = Rollups::default();
    spans.iter().for_each(|s| rollups.apply_span(None, s));
    Trace {
        trace_id: TraceId::from_u128(1).unwrap(),
        tenant: "default".into(),
        name: None,
        agent_id: None,
        session_id: None,
        user_id: None,
        state: State::Completed,
        level: Level::Detailed,
        created_at: at(0),
        last_activity_at: at(100_000),
        ended_at: Some(at(100_000)),
        expires_at: at(1_000_000),
        last_seq: 0,
        metadata: Default::default(),
        rollups,
    }
}

fn bench(c: &mut Criterion) {
    let spans = spans();
    assert_eq!(spans.len(), 10_000);
    let t = trace(&spans);
    let opts = AnalysisOptions::default();
    c.bench_function("analyze 10k spans", |b| {
        b.iter(|| analyze(&t, &spans, &[], at(100_000), &opts))
    });
    c.bench_function("summarize 10k spans", |b| {
        b.iter(|| summarize(&t, &spans, &[], at(100_000)))
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
