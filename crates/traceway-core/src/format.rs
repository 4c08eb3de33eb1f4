//! Output formats of events: the compact one-line-per-step `streaming` form.

use std::fmt::Write as _;

use crate::model::{Event, EventBody, Span, StatusCode};

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
        assert_eq!(span_status(&s), "error: Traceback (most recent call last): …");
        s.status.message = Some("timeout".into());
        assert_eq!(span_status(&s), "error: timeout");
        s.status.code = StatusCode::Ok;
        assert_eq!(span_status(&s), "ok");
    }
}
