//! Output formats of a trace: `streaming` (one line per event, [`streaming_line`]),
//! `compact` (one entry per step with timing, tokens and status, [`compact`]) and
//! `detailed` (every field the spans keep, [`detailed`]).
//!
//! The formatters do not apply a level: the caller strips the spans to the level it
//! serves first (`level::strip_span`), so `detailed` shows exactly what that level keeps.

use std::fmt::Write as _;

use serde_json::{json, Map, Value};

use crate::index::SpanIndex;
use crate::model::{Event, EventBody, Span, StatusCode, Trace};
use crate::time::Timestamp;

/// Milliseconds or seconds, as people read durations.
pub fn human_duration(ms: f64) -> String {
    if ms < 1000.0 {
        format!("{ms:.0}ms")
    } else {
        format!("{:.2}s", ms / 1000.0)
    }
}

/// What a span says about itself on one line: kind, name, model, tokens, tool, hits.
pub fn span_summary(s: &Span) -> String {
    let mut line = format!("{} {}", s.kind.as_str(), s.name);
    if let Some(llm) = &s.llm {
        if let Some(m) = &llm.model {
            let _ = write!(line, " model={m}");
        }
        if llm.tokens_total() > 0 {
            let _ = write!(line, " tokens={}", llm.tokens_total());
        }
    }
    if let Some(name) = s.tool.as_ref().and_then(|t| t.name.as_ref()) {
        let _ = write!(line, " tool={name}");
    }
    if let Some(r) = &s.retrieval {
        let _ = write!(line, " docs={}", r.documents.len());
    }
    line
}

/// The status word of a span: `running`, `ok`, `unset` (ended without a status, as the
/// OTLP mapping names it) or `error: <message>` (its first line, with `…` when there is
/// more: `show`, `tail` and `format=streaming` print one line per step).
pub fn span_status(s: &Span) -> String {
    match (s.end_time, s.status.code) {
        (None, _) => "running".into(),
        (_, StatusCode::Error) => match s.status.message.as_deref().map(str::trim) {
            // One line: a stack trace's first line, with `…` for the rest (the JSON
            // forms keep all of it).
            Some(m) => match m.split_once('\n') {
                Some((first, _)) => format!("error: {} …", first.trim_end()),
                None => format!("error: {m}"),
            },
            None => "error".into(),
        },
        (_, StatusCode::Ok) => "ok".into(),
        (_, StatusCode::Unset) => "unset".into(),
    }
}

/// One compact line per event, for `format=streaming`:
/// `#6 span_ended llm answer model=gpt-4o-mini tokens=470 1.20s ok`.
pub fn streaming_line(e: &Event) -> String {
    let ty = e.body.event_type().as_str();
    let rest = match &e.body {
        EventBody::TraceStarted(t) => {
            let mut s = format!("{} level={}", t.state, t.level.as_str());
            for (k, v) in [("name", &t.name), ("agent", &t.agent_id)] {
                if let Some(v) = v {
                    let _ = write!(s, " {k}={v:?}");
                }
            }
            s
        }
        EventBody::SpanStarted(s) => format!("{} running", span_summary(s)),
        EventBody::SpanEnded(s) => {
            let d = s
                .duration()
                .map(|d| human_duration(d.as_secs_f64() * 1000.0));
            format!(
                "{} {} {}",
                span_summary(s),
                d.unwrap_or_default(),
                span_status(s)
            )
        }
        EventBody::Log(l) => format!("{:?} {:?}", l.severity, l.message).to_lowercase(),
        EventBody::Error(err) => match &err.error_type {
            Some(t) => format!("{t}: {}", err.message),
            None => err.message.clone(),
        },
        EventBody::StateChanged(c) => match &c.reason {
            Some(r) => format!("{} -> {} ({r})", c.from, c.to),
            None => format!("{} -> {}", c.from, c.to),
        },
        EventBody::TraceEnded(t) => format!(
            "{} spans={} errors={} tokens={}",
            t.state, t.rollups.span_count, t.rollups.error_count, t.rollups.total_tokens
        ),
    };
    format!("#{} {ty} {rest}", e.seq)
}

/// Spans in tree order (depth first, siblings by start) with their depth; spans caught in a
/// parent cycle, which no root reaches, come last at depth 0 so that none is lost.
fn steps_in_order(spans: &[Span]) -> Vec<(usize, usize)> {
    let index = SpanIndex::new(spans);
    let mut order = index.preorder();
    if order.len() < spans.len() {
        let mut seen = vec![false; spans.len()];
        order.iter().for_each(|&(i, _)| seen[i] = true);
        let mut rest: Vec<usize> = (0..spans.len()).filter(|&i| !seen[i]).collect();
        rest.sort_by_key(|&i| (spans[i].start_time, spans[i].span_id));
        order.extend(rest.into_iter().map(|i| (i, 0)));
    }
    order
}

/// Where offsets count from: the earliest span start, or the trace's creation.
fn origin(trace: &Trace, spans: &[Span]) -> Timestamp {
    spans
        .iter()
        .map(|s| s.start_time)
        .min()
        .unwrap_or(trace.created_at)
}

fn ms_between(from: Timestamp, to: Timestamp) -> f64 {
    (to.unix_nanos() as f64 - from.unix_nanos() as f64) / 1e6
}

fn round_ms(ms: f64) -> f64 {
    (ms * 1000.0).round() / 1000.0
}

/// The status word of the compact form: `running`, `ok`, `done` or `error`.
fn status_word(s: &Span) -> &'static str {
    match (s.end_time, s.status.code) {
        (None, _) => "running",
        (_, StatusCode::Error) => "error",
        (_, StatusCode::Ok) => "ok",
        (_, StatusCode::Unset) => "done",
    }
}

fn trace_header(trace: &Trace) -> Map<String, Value> {
    let r = &trace.rollups;
    let mut m = Map::new();
    m.insert("trace_id".into(), json!(trace.trace_id));
    for (k, v) in [("name", &trace.name), ("agent_id", &trace.agent_id)] {
        if let Some(v) = v {
            m.insert(k.into(), json!(v));
        }
    }
    m.insert("state".into(), json!(trace.state));
    m.insert("level".into(), json!(trace.level));
    m.insert("duration_ms".into(), json!(r.duration_ms.map(round_ms)));
    m.insert("span_count".into(), json!(r.span_count));
    m.insert("error_count".into(), json!(r.error_count));
    m.insert(
        "tokens".into(),
        json!({"input": r.input_tokens, "output": r.output_tokens, "total": r.total_tokens}),
    );
    m.insert("cost_usd".into(), json!(r.cost_usd));
    m
}

/// The compact form of a trace: a short header (state, duration, counts, tokens, cost) and
/// one entry per step in tree order, each with its depth, its offset from the first step,
/// its duration (`null` while running), its status and, when known, model, tokens, cost,
/// tool and document count, plus `line`, the same step as one readable line indented by
/// depth (`  llm answer model=gpt-4o tokens=470 1.20s ok`).
pub fn compact(trace: &Trace, spans: &[Span]) -> Value {
    let t0 = origin(trace, spans);
    let steps: Vec<Value> = steps_in_order(spans)
        .into_iter()
        .map(|(i, depth)| {
            let s = &spans[i];
            let mut m = Map::new();
            m.insert("span_id".into(), json!(s.span_id));
            if let Some(p) = s.parent_span_id {
                m.insert("parent_span_id".into(), json!(p));
            }
            m.insert("depth".into(), json!(depth));
            m.insert("kind".into(), json!(s.kind));
            m.insert("name".into(), json!(s.name));
            m.insert(
                "offset_ms".into(),
                json!(round_ms(ms_between(t0, s.start_time))),
            );
            let duration = s.duration().map(|d| d.as_secs_f64() * 1000.0);
            m.insert("duration_ms".into(), json!(duration.map(round_ms)));
            m.insert("status".into(), json!(status_word(s)));
            if let Some(msg) = s
                .status
                .message
                .as_ref()
                .filter(|_| s.status.code == StatusCode::Error)
            {
                m.insert("error".into(), json!(msg));
            }
            if let Some(llm) = &s.llm {
                if let Some(model) = &llm.model {
                    m.insert("model".into(), json!(model));
                }
                if llm.tokens_total() > 0 {
                    let mut t = Map::new();
                    for (k, v) in [
                        ("input", llm.input_tokens),
                        ("output", llm.output_tokens),
                        ("cached", llm.cached_tokens),
                        ("reasoning", llm.reasoning_tokens),
                    ] {
                        if let Some(v) = v {
                            t.insert(k.into(), json!(v));
                        }
                    }
                    t.insert("total".into(), json!(llm.tokens_total()));
                    m.insert("tokens".into(), Value::Object(t));
                }
                if let Some(c) = llm.cost_usd {
                    m.insert("cost_usd".into(), json!(c));
                }
            }
            if let Some(name) = s.tool.as_ref().and_then(|t| t.name.as_ref()) {
                m.insert("tool".into(), json!(name));
            }
            if let Some(r) = &s.retrieval {
                m.insert("documents".into(), json!(r.documents.len()));
            }
            let mut line = format!("{}{}", "  ".repeat(depth.min(64)), span_summary(s));
            if let Some(d) = duration {
                let _ = write!(line, " {}", human_duration(d));
            }
            let _ = write!(line, " {}", span_status(s));
            m.insert("line".into(), json!(line));
            Value::Object(m)
        })
        .collect();
    let mut out = trace_header(trace);
    out.insert("format".into(), json!("compact"));
    out.insert("steps".into(), Value::Array(steps));
    Value::Object(out)
}

/// The detailed form of a trace: the whole trace row and every step in tree order with
/// every field the span keeps (messages, arguments, results, documents, attributes, links
/// as the caller's level left them), plus its `depth`, `offset_ms` and `duration_ms`.
pub fn detailed(trace: &Trace, spans: &[Span]) -> Value {
    let t0 = origin(trace, spans);
    let steps: Vec<Value> = steps_in_order(spans)
        .into_iter()
        .map(|(i, depth)| {
            let s = &spans[i];
            let mut v = serde_json::to_value(s).unwrap_or(Value::Null);
            if let Value::Object(m) = &mut v {
                m.insert("depth".into(), json!(depth));
                m.insert(
                    "offset_ms".into(),
                    json!(round_ms(ms_between(t0, s.start_time))),
                );
                m.insert(
                    "duration_ms".into(),
                    json!(s.duration().map(|d| round_ms(d.as_secs_f64() * 1000.0))),
                );
            }
            v
        })
        .collect();
    json!({"format": "detailed", "trace": trace, "steps": steps})
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{LlmDetails, SpanId, SpanKind, Timestamp, TraceId};

    #[test]
    fn a_step_is_one_readable_line() {
        let mut s = Span::new(
            SpanId::from_u64(1).unwrap(),
            SpanKind::Llm,
            "answer",
            Timestamp::from_unix_millis(0),
        );
        s.llm = Some(LlmDetails {
            model: Some("gpt-4o-mini".into()),
            input_tokens: Some(400),
            output_tokens: Some(70),
            ..Default::default()
        });
        let e = |body| Event {
            trace_id: TraceId::from_u128(1).unwrap(),
            seq: 6,
            time: Timestamp::from_unix_millis(0),
            component_id: None,
            body,
        };
        assert_eq!(
            streaming_line(&e(EventBody::SpanStarted(s.clone()))),
            "#6 span_started llm answer model=gpt-4o-mini tokens=470 running"
        );
        s.end_time = Some(Timestamp::from_unix_millis(1200));
        s.status.code = StatusCode::Ok;
        assert_eq!(
            streaming_line(&e(EventBody::SpanEnded(s))),
            "#6 span_ended llm answer model=gpt-4o-mini tokens=470 1.20s ok"
        );
    }

    #[test]
    fn the_status_word_shows_the_first_line_of_an_error_and_unset_for_no_status() {
        let mut s = Span::new(
            SpanId::from_u64(1).unwrap(),
            SpanKind::Tool,
            "t",
            Timestamp::from_unix_millis(0),
        );
        assert_eq!(span_status(&s), "running");
        s.end_time = Some(Timestamp::from_unix_millis(5));
        assert_eq!(span_status(&s), "unset");
        s.status.code = StatusCode::Error;
        s.status.message =
            Some("Traceback (most recent call last):\n  File \"x.py\"\nValueError".into());
        assert_eq!(
            span_status(&s),
            "error: Traceback (most recent call last): …"
        );
        s.status.message = Some("timeout".into());
        assert_eq!(span_status(&s), "error: timeout");
        s.status.code = StatusCode::Ok;
        assert_eq!(span_status(&s), "ok");
    }
}
