//! Levels applied to data: what each level keeps.
//!
//! | level | keeps |
//! |---|---|
//! | minimal | lifecycle, span start/end, names, kinds, timings, status, errors (type and message) |
//! | standard | + model, provider, tokens, cost, tool names, retrieval hit ids and scores, attributes |
//! | detailed | + messages, tool arguments/results, chunk contents, span input/output, stack traces; long strings truncated |
//! | debug | everything, nothing truncated |
//!
//! A trace's level is applied when data is captured, so detail above it is never stored;
//! a read can apply a lower level to what was stored.

use serde_json::Value;

use crate::model::{EventBody, Level, Span};

/// Default size at which `detailed` truncates one string (a message, a chunk, a result).
pub const DEFAULT_MAX_CONTENT_BYTES: usize = 16 * 1024;

const TRUNCATION_MARK: &str = "…[truncated]";

/// Cuts `s` to at most `max` bytes on a character boundary and marks the cut.
pub fn truncate_string(s: &mut String, max: usize) {
    if s.len() <= max {
        return;
    }
    let mut cut = max;
    while !s.is_char_boundary(cut) {
        cut -= 1;
    }
    s.truncate(cut);
    s.push_str(TRUNCATION_MARK);
}

/// Truncates every string inside a JSON value.
pub fn truncate_value(v: &mut Value, max: usize) {
    match v {
        Value::String(s) => truncate_string(s, max),
        Value::Array(items) => items.iter_mut().for_each(|i| truncate_value(i, max)),
        Value::Object(map) => map.values_mut().for_each(|i| truncate_value(i, max)),
        _ => {}
    }
}

fn truncate_opt(s: &mut Option<String>, max: usize) {
    if let Some(s) = s {
        truncate_string(s, max);
    }
}

fn truncate_opt_value(v: &mut Option<Value>, max: usize) {
    if let Some(v) = v {
        truncate_value(v, max);
    }
}

/// Removes from a span what `level` does not keep, and truncates long content at
/// `detailed`.
pub fn strip_span(span: &mut Span, level: Level, max_content_bytes: usize) {
    match level {
        Level::Debug => {}
        Level::Detailed => {
            let max = max_content_bytes;
            truncate_opt_value(&mut span.input, max);
            truncate_opt_value(&mut span.output, max);
            if let Some(llm) = &mut span.llm {
                for m in llm
                    .input_messages
                    .iter_mut()
                    .chain(llm.output_messages.iter_mut())
                {
                    truncate_opt(&mut m.content, max);
                }
            }
            if let Some(tool) = &mut span.tool {
                truncate_opt_value(&mut tool.arguments, max);
                truncate_opt_value(&mut tool.result, max);
            }
            if let Some(r) = &mut span.retrieval {
                truncate_opt(&mut r.query, max);
                for d in &mut r.documents {
                    truncate_opt(&mut d.content, max);
                    truncate_opt_value(&mut d.metadata, max);
                }
            }
            span.attributes
                .values_mut()
                .for_each(|v| truncate_value(v, max));
        }
        Level::Standard => {
            span.input = None;
            span.output = None;
            if let Some(llm) = &mut span.llm {
                llm.input_messages.clear();
                llm.output_messages.clear();
            }
            if let Some(tool) = &mut span.tool {
                tool.arguments = None;
                tool.result = None;
            }
            if let Some(r) = &mut span.retrieval {
                r.query = None;
                for d in &mut r.documents {
                    d.content = None;
                    d.metadata = None;
                }
            }
            span.attributes
                .values_mut()
                .for_each(|v| truncate_value(v, max_content_bytes));
        }
        Level::Minimal => {
            span.input = None;
            span.output = None;
            span.llm = None;
            span.tool = None;
            span.retrieval = None;
            span.attributes.clear();
        }
    }
}

/// Removes from an event's payload what `level` does not keep.
pub fn strip_event_body(body: &mut EventBody, level: Level, max_content_bytes: usize) {
    match body {
        EventBody::SpanStarted(s) | EventBody::SpanEnded(s) => {
            strip_span(s, level, max_content_bytes)
        }
        EventBody::Log(l) => {
            if level == Level::Minimal {
                l.attributes.clear();
            } else if level < Level::Debug {
                l.attributes
                    .values_mut()
                    .for_each(|v| truncate_value(v, max_content_bytes));
            }
            if level < Level::Debug {
                truncate_string(&mut l.message, max_content_bytes);
            }
        }
        EventBody::Error(e) => {
            if level < Level::Detailed {
                e.stacktrace = None;
            }
            if level < Level::Debug {
                truncate_string(&mut e.message, max_content_bytes);
                truncate_opt(&mut e.stacktrace, max_content_bytes);
            }
        }
        EventBody::TraceStarted(_) | EventBody::StateChanged(_) | EventBody::TraceEnded(_) => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::id::SpanId;
    use crate::model::*;
    use crate::time::Timestamp;
    use serde_json::json;

    fn full_span() -> Span {
        let mut s = Span::new(
            SpanId::from_u64(7).unwrap(),
            SpanKind::Llm,
            "chat",
            Timestamp::from_unix_millis(1),
        );
        s.input = Some(json!("question"));
        s.output = Some(json!({"answer": "x".repeat(100)}));
        s.llm = Some(LlmDetails {
            provider: Some("openai".into()),
            model: Some("gpt-4o".into()),
            input_tokens: Some(10),
            output_tokens: Some(5),
            cost_usd: Some(0.01),
            input_messages: vec![Message {
                role: "user".into(),
                content: Some("y".repeat(100)),
            }],
            output_messages: vec![Message {
                role: "assistant".into(),
                content: Some("ok".into()),
            }],
            ..Default::default()
        });
        s.tool = Some(ToolDetails {
            name: Some("search".into()),
            arguments: Some(json!({"q": "a"})),
            result: Some(json!("r")),
        });
        s.retrieval = Some(RetrievalDetails {
            query: Some("q".into()),
            documents: vec![Document {
                id: Some("d1".into()),
                score: Some(0.9),
                content: Some("chunk".into()),
                metadata: Some(json!({"src": "a"})),
            }],
        });
        s.attributes.insert("customer.tier".into(), json!("gold"));
        s
    }

    #[test]
    fn each_level_keeps_what_it_promises() {
        let mut minimal = full_span();
        strip_span(&mut minimal, Level::Minimal, 1000);
        assert_eq!(minimal.name, "chat");
        assert!(minimal.llm.is_none() && minimal.tool.is_none() && minimal.retrieval.is_none());
        assert!(minimal.attributes.is_empty() && minimal.input.is_none());

        let mut standard = full_span();
        strip_span(&mut standard, Level::Standard, 1000);
        let llm = standard.llm.as_ref().unwrap();
        assert_eq!(
            (llm.model.as_deref(), llm.input_tokens, llm.cost_usd),
            (Some("gpt-4o"), Some(10), Some(0.01))
        );
        assert!(llm.input_messages.is_empty() && llm.output_messages.is_empty());
        let tool = standard.tool.as_ref().unwrap();
        assert_eq!(tool.name.as_deref(), Some("search"));
        assert!(tool.arguments.is_none() && tool.result.is_none());
        let doc = &standard.retrieval.as_ref().unwrap().documents[0];
        assert_eq!((doc.id.as_deref(), doc.score), (Some("d1"), Some(0.9)));
        assert!(doc.content.is_none());
        assert!(standard.input.is_none());
        assert_eq!(standard.attributes["customer.tier"], "gold");

        let mut detailed = full_span();
        strip_span(&mut detailed, Level::Detailed, 10);
        let content = detailed.llm.as_ref().unwrap().input_messages[0]
            .content
            .clone()
            .unwrap();
        assert!(
            content.starts_with("yyyyyyyyyy") && content.ends_with(TRUNCATION_MARK),
            "{content}"
        );
        assert_eq!(
            detailed.retrieval.as_ref().unwrap().documents[0]
                .content
                .as_deref(),
            Some("chunk")
        );
        assert_eq!(
            detailed.output.as_ref().unwrap()["answer"]
                .as_str()
                .unwrap()
                .len(),
            10 + TRUNCATION_MARK.len()
        );

        let mut debug = full_span();
        strip_span(&mut debug, Level::Debug, 10);
        assert_eq!(debug, full_span());
    }

    #[test]
    fn stripping_is_idempotent_and_lower_levels_keep_less() {
        let levels = [
            Level::Debug,
            Level::Detailed,
            Level::Standard,
            Level::Minimal,
        ];
        let mut prev = serde_json::to_string(&full_span()).unwrap().len();
        for level in levels {
            let mut once = full_span();
            strip_span(&mut once, level, 20);
            let mut twice = once.clone();
            strip_span(&mut twice, level, 20);
            assert_eq!(once, twice, "{level:?}");
            let len = serde_json::to_string(&once).unwrap().len();
            assert!(len <= prev, "{level:?} keeps more than the level above");
            prev = len;
        }
    }

    #[test]
    fn truncation_respects_char_boundaries() {
        let mut s = "héllo wörld".to_string();
        truncate_string(&mut s, 2);
        assert_eq!(s, format!("h{TRUNCATION_MARK}"));
    }

    #[test]
    fn errors_lose_stack_traces_below_detailed() {
        let mut body = EventBody::Error(ErrorRecord {
            span_id: None,
            error_type: Some("ValueError".into()),
            message: "bad".into(),
            stacktrace: Some("at line 1".into()),
        });
        strip_event_body(&mut body, Level::Minimal, 100);
        let EventBody::Error(e) = body else { panic!() };
        assert_eq!(e.message, "bad");
        assert!(e.stacktrace.is_none());
    }
}
