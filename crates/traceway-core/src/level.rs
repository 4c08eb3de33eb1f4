//! Levels applied to data: what each level keeps.
//!
//! | level | keeps |
//! |---|---|
//! | minimal | lifecycle, span start/end, names, kinds, timings, status, errors (type and message) |
//! | standard | + model, provider, tokens, cost, tool names, retrieval hit ids and scores, attributes |
//! | detailed | + messages, tool arguments/results, chunk contents, span input/output, stack traces; long strings truncated, and a span's content as a whole capped |
//! | debug | everything, nothing truncated |
//!
//! Below `debug`, every string is cut at `max_content_bytes`, and the strings of one span
//! together at [`SPAN_CONTENT_FACTOR`] × `max_content_bytes` (in the order input, output,
//! messages, tool arguments, result and schema, retrieval query and documents, attributes:
//! what comes last is cut first). An embedding span's vectors (JSON arrays of numbers) are
//! replaced by `{"vector_dimension": N}` below `debug` (ADR 020).
//!
//! A trace's level is applied when data is captured, so detail above it is never stored;
//! a read can apply a lower level to what was stored.

use serde_json::Value;

use crate::model::{EventBody, Level, Span};

/// Default size at which `detailed` truncates one string (a message, a chunk, a result).
pub const DEFAULT_MAX_CONTENT_BYTES: usize = 16 * 1024;

/// A span's strings together are cut at this many times `max_content_bytes` below `debug`.
pub const SPAN_CONTENT_FACTOR: usize = 4;

const TRUNCATION_MARK: &str = "…[truncated]";

/// The key an embedding vector is reduced to below `debug`.
pub const VECTOR_DIMENSION_KEY: &str = "vector_dimension";

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

/// A budget of bytes shared by the strings of one span.
struct Budget(usize);

impl Budget {
    /// A truncation mark already there is not counted, so capping twice changes nothing.
    fn string(&mut self, s: &mut String) {
        let marked = s.ends_with(TRUNCATION_MARK);
        let len = if marked {
            s.len() - TRUNCATION_MARK.len()
        } else {
            s.len()
        };
        if len <= self.0 {
            self.0 -= len;
            return;
        }
        if marked {
            s.truncate(len);
        }
        truncate_string(s, self.0);
        self.0 = 0;
    }

    fn opt(&mut self, s: &mut Option<String>) {
        if let Some(s) = s {
            self.string(s);
        }
    }

    fn value(&mut self, v: &mut Value) {
        match v {
            Value::String(s) => self.string(s),
            Value::Array(items) => items.iter_mut().for_each(|i| self.value(i)),
            Value::Object(map) => map.values_mut().for_each(|i| self.value(i)),
            _ => {}
        }
    }

    fn opt_value(&mut self, v: &mut Option<Value>) {
        if let Some(v) = v {
            self.value(v);
        }
    }
}

/// Caps the strings of a span together at `total` bytes, in a fixed order.
fn cap_span_content(span: &mut Span, total: usize) {
    let mut b = Budget(total);
    b.opt_value(&mut span.input);
    b.opt_value(&mut span.output);
    if let Some(llm) = &mut span.llm {
        for m in llm
            .input_messages
            .iter_mut()
            .chain(llm.output_messages.iter_mut())
        {
            b.opt(&mut m.content);
            for c in &mut m.tool_calls {
                b.opt_value(&mut c.arguments);
            }
        }
    }
    if let Some(tool) = &mut span.tool {
        b.opt_value(&mut tool.arguments);
        b.opt_value(&mut tool.result);
        b.opt_value(&mut tool.schema);
    }
    if let Some(r) = &mut span.retrieval {
        b.opt(&mut r.query);
        for d in &mut r.documents {
            b.opt(&mut d.content);
            b.opt_value(&mut d.metadata);
        }
    }
    span.attributes.values_mut().for_each(|v| b.value(v));
}

/// Replaces every JSON array of (two or more) numbers inside `v` by
/// `{"vector_dimension": N}`.
pub fn reduce_vectors(v: &mut Value) {
    match v {
        Value::Array(items) if items.len() >= 2 && items.iter().all(Value::is_number) => {
            let n = items.len();
            *v = serde_json::json!({ VECTOR_DIMENSION_KEY: n });
        }
        Value::Array(items) => items.iter_mut().for_each(reduce_vectors),
        Value::Object(map) => map.values_mut().for_each(reduce_vectors),
        _ => {}
    }
}

/// Removes from a span what `level` does not keep, and truncates long content below
/// `debug` (each string, and the span's strings as a whole; see the module documentation).
pub fn strip_span(span: &mut Span, level: Level, max_content_bytes: usize) {
    if level < Level::Debug && span.kind == crate::model::SpanKind::Embedding {
        for v in span
            .input
            .iter_mut()
            .chain(span.output.iter_mut())
            .chain(span.attributes.values_mut())
        {
            reduce_vectors(v);
        }
    }
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
                    for c in &mut m.tool_calls {
                        truncate_opt_value(&mut c.arguments, max);
                    }
                }
            }
            if let Some(tool) = &mut span.tool {
                truncate_opt_value(&mut tool.arguments, max);
                truncate_opt_value(&mut tool.result, max);
                truncate_opt_value(&mut tool.schema, max);
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
            cap_span_content(span, max.saturating_mul(SPAN_CONTENT_FACTOR));
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
                tool.schema = None;
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
            cap_span_content(span, max_content_bytes.saturating_mul(SPAN_CONTENT_FACTOR));
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
                ..Default::default()
            }],
            output_messages: vec![Message {
                role: "assistant".into(),
                content: Some("ok".into()),
                ..Default::default()
            }],
            ..Default::default()
        });
        s.tool = Some(ToolDetails {
            name: Some("search".into()),
            arguments: Some(json!({"q": "a"})),
            result: Some(json!("r")),
            schema: Some(json!({"type": "object"})),
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
        strip_span(&mut detailed, Level::Detailed, 30);
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
            30 + TRUNCATION_MARK.len()
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
    fn a_span_is_capped_as_a_whole_not_only_per_string() {
        let mut s = Span::new(
            SpanId::from_u64(8).unwrap(),
            SpanKind::Chain,
            "many",
            Timestamp::from_unix_millis(1),
        );
        // Ten attributes of 90 bytes each: every one is under the per-string cap of 100,
        // together they are over the span's cap of 400.
        for i in 0..10 {
            s.attributes.insert(format!("a{i}"), json!("z".repeat(90)));
        }
        s.input = Some(json!("q".repeat(50)));
        strip_span(&mut s, Level::Detailed, 100);
        let kept: usize = s
            .attributes
            .values()
            .map(|v| v.as_str().unwrap().trim_end_matches(TRUNCATION_MARK).len())
            .sum();
        assert_eq!(s.input, Some(json!("q".repeat(50))), "input comes first");
        assert_eq!(kept + 50, 100 * SPAN_CONTENT_FACTOR);
        let again = {
            let mut t = s.clone();
            strip_span(&mut t, Level::Detailed, 100);
            t
        };
        assert_eq!(
            serde_json::to_string(&again).unwrap().len(),
            serde_json::to_string(&s).unwrap().len()
        );
    }

    #[test]
    fn embedding_vectors_become_their_dimension_below_debug() {
        let mut s = Span::new(
            SpanId::from_u64(9).unwrap(),
            SpanKind::Embedding,
            "embed",
            Timestamp::from_unix_millis(1),
        );
        let vector: Vec<f64> = (0..3072).map(|i| i as f64 / 3072.0).collect();
        s.output = Some(json!([{"text": "hello", "vector": vector}]));
        let mut debug = s.clone();
        strip_span(&mut debug, Level::Debug, 100);
        assert_eq!(debug, s, "debug keeps the vectors");
        strip_span(&mut s, Level::Detailed, 100);
        assert_eq!(
            s.output,
            Some(json!([{"text": "hello", "vector": {"vector_dimension": 3072}}]))
        );
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
