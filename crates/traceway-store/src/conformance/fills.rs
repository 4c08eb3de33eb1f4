//! Message fills (ADR 027): prompts and completions that arrive apart from their LLM span
//! (the GenAI message events of OTLP logs), before or after it.

use traceway_core::{FillMode, MessageFill, Span};

use super::*;

fn msg(role: &str, content: &str) -> Message {
    Message {
        role: role.into(),
        content: Some(content.into()),
        ..Default::default()
    }
}

fn fill(id: &str, span: u64, input: &[(&str, &str)], output: &[&str]) -> MessageFill {
    MessageFill {
        id: id.into(),
        span_id: sid(span),
        mode: FillMode::Append,
        input_messages: input.iter().map(|(r, c)| msg(r, c)).collect(),
        output_messages: output.iter().map(|c| msg("assistant", c)).collect(),
    }
}

fn chat(span: u64, end: bool) -> EventInput {
    let span = SpanInput {
        kind: Some(SpanKind::Llm),
        name: Some("chat".into()),
        llm: Some(LlmDetails {
            model: Some("gpt-4o".into()),
            input_tokens: Some(5),
            output_tokens: Some(2),
            ..Default::default()
        }),
        ..SpanInput::new(sid(span))
    };
    if end {
        EventInput::SpanEnded { span }
    } else {
        EventInput::SpanStarted { span }
    }
}

async fn detailed_trace(h: &Harness, tenant: &str) -> TraceId {
    let (t, _) = h
        .store
        .create_trace(
            tenant,
            NewTrace {
                level: Some(Level::Detailed),
                ..Default::default()
            },
        )
        .await
        .expect("create");
    t.trace_id
}

async fn write(
    h: &Harness,
    id: TraceId,
    events: Vec<EventInput>,
    fills: Vec<MessageFill>,
) -> crate::AppendOutcome {
    h.store
        .append(AppendRequest {
            tenant: T.into(),
            trace_id: id,
            create_if_missing: None,
            events,
            fills,
            end: None,
        })
        .await
        .expect("append")
}

async fn span_of(h: &Harness, id: TraceId, span: u64) -> Span {
    h.store
        .get_spans(T, id)
        .await
        .expect("spans")
        .expect("exists")
        .into_iter()
        .find(|s| s.span_id == sid(span))
        .expect("the span")
}

fn messages(s: &Span) -> (Vec<Message>, Vec<Message>) {
    let l = s.llm.clone().unwrap_or_default();
    (l.input_messages, l.output_messages)
}

/// A fill that arrives before its span waits for it, and lands when the span arrives
/// (started or whole); a retry while it waits is a duplicate.
pub async fn message_fills_wait_for_a_span_that_arrives_later(h: &Harness) {
    let id = detailed_trace(h, T).await;
    let f = fill(
        "f-before",
        1,
        &[("system", "be brief"), ("user", "hi")],
        &[],
    );
    let out = write(h, id, vec![], vec![f.clone()]).await;
    assert_eq!((out.accepted, out.duplicates), (1, 0));
    assert_eq!(out.stored, crate::EventCounts::default(), "no event yet");
    let again = write(h, id, vec![], vec![f]).await;
    assert_eq!((again.accepted, again.duplicates), (0, 1), "a retry");
    let answer = fill("f-answer", 1, &[], &["hello"]);
    write(h, id, vec![], vec![answer]).await;

    write(h, id, vec![chat(1, false)], vec![]).await;
    let s = span_of(h, id, 1).await;
    assert_eq!(
        messages(&s),
        (
            vec![msg("system", "be brief"), msg("user", "hi")],
            vec![msg("assistant", "hello")]
        ),
        "both fills, in arrival order"
    );
    write(h, id, vec![chat(1, true)], vec![]).await;
    let s = span_of(h, id, 1).await;
    assert!(s.end_time.is_some());
    assert_eq!(messages(&s).0.len(), 2, "the end keeps the messages");
    let t = h
        .store
        .get_trace(T, id)
        .await
        .expect("get")
        .expect("exists");
    assert_eq!(t.rollups.span_count, 1);
    assert_eq!(t.rollups.input_tokens, 5);

    // Another tenant's span of the same ids is not filled.
    let other = detailed_trace(h, "tenant-b").await;
    h.store
        .append(AppendRequest {
            tenant: "tenant-b".into(),
            trace_id: other,
            create_if_missing: None,
            events: vec![chat(1, true)],
            fills: vec![],
            end: None,
        })
        .await
        .expect("append b");
    let b = h
        .store
        .get_spans("tenant-b", other)
        .await
        .expect("spans")
        .expect("exists");
    assert_eq!(messages(&b[0]), (vec![], vec![]));
}

/// A fill of a running span rewrites it (a new `span_started` with the whole span); of an
/// ended span, a new `span_ended`, seen by live subscribers; the rollups do not change, and
/// the same fill again (same id, or another id with the same messages) adds nothing.
pub async fn message_fills_land_on_running_and_ended_spans_once(h: &Harness) {
    use crate::Scope;
    let id = detailed_trace(h, T).await;
    write(h, id, vec![chat(2, false)], vec![]).await;
    let out = write(
        h,
        id,
        vec![],
        vec![fill("f-run", 2, &[("user", "hi")], &[])],
    )
    .await;
    assert_eq!(out.accepted, 1);
    assert_eq!(out.stored, counts(&[EventType::SpanStarted]));
    let s = span_of(h, id, 2).await;
    assert_eq!(s.end_time, None, "still running");
    assert_eq!(messages(&s).0, [msg("user", "hi")]);

    write(h, id, vec![chat(2, true)], vec![]).await;
    let before = h
        .store
        .get_trace(T, id)
        .await
        .expect("get")
        .expect("exists");
    assert_eq!(messages(&span_of(h, id, 2).await).0, [msg("user", "hi")]);

    let mut sub = h.store.subscribe(T, Scope::Trace(id));
    let late = fill("f-late", 2, &[], &["hello"]);
    let out = write(h, id, vec![], vec![late.clone()]).await;
    assert_eq!(out.stored, counts(&[EventType::SpanEnded]));
    let e = tokio::time::timeout(Duration::from_secs(10), sub.events.recv())
        .await
        .expect("in time")
        .expect("open");
    let EventBody::SpanEnded(live) = &e.body else {
        panic!("a span_ended, got {:?}", e.body.event_type())
    };
    assert_eq!(messages(live).1, [msg("assistant", "hello")]);
    let s = span_of(h, id, 2).await;
    assert_eq!(
        messages(&s),
        (vec![msg("user", "hi")], vec![msg("assistant", "hello")])
    );
    assert!(s.end_time.is_some());
    let after = h
        .store
        .get_trace(T, id)
        .await
        .expect("get")
        .expect("exists");
    assert_eq!(after.rollups, before.rollups, "messages are not counted");

    // Duplicates: the same fill, the same messages under another id, a replace with
    // what the span has. Nothing doubles and nothing is written.
    let same = fill("f-late-again", 2, &[], &["hello"]);
    let whole = MessageFill {
        mode: FillMode::Replace,
        ..fill("f-whole", 2, &[("user", "hi")], &["hello"])
    };
    let out = write(h, id, vec![], vec![late, same, whole]).await;
    assert_eq!((out.accepted, out.duplicates), (0, 3));
    assert_eq!(out.stored, crate::EventCounts::default());
    let s = span_of(h, id, 2).await;
    assert_eq!(messages(&s).0.len(), 1);
    assert_eq!(messages(&s).1.len(), 1);
    // A whole conversation replaces each side it carries.
    let replace = MessageFill {
        mode: FillMode::Replace,
        ..fill("f-replace", 2, &[("user", "only this")], &[])
    };
    write(h, id, vec![], vec![replace]).await;
    assert_eq!(
        messages(&span_of(h, id, 2).await),
        (
            vec![msg("user", "only this")],
            vec![msg("assistant", "hello")]
        )
    );
}

/// At most `MAX_PENDING_FILLS_PER_TRACE` fills wait in one trace; more are dropped, and
/// those kept still land when their spans arrive.
pub async fn pending_message_fills_are_bounded_per_trace(h: &Harness) {
    let id = detailed_trace(h, T).await;
    let max = u64::from(crate::MAX_PENDING_FILLS_PER_TRACE);
    let fills: Vec<MessageFill> = (1..=max + 3)
        .map(|n| fill(&format!("f{n}"), 100 + n, &[("user", "q")], &[]))
        .collect();
    let out = write(h, id, vec![], fills).await;
    assert_eq!(u64::from(out.accepted), max, "the rest are dropped");
    let out = write(
        h,
        id,
        vec![],
        vec![fill("one-more", 9, &[("user", "q")], &[])],
    )
    .await;
    assert_eq!(out.accepted, 0, "still full");
    // The first and last kept spans get their messages; a dropped one does not.
    write(h, id, vec![chat(101, true), chat(100 + max, true)], vec![]).await;
    write(h, id, vec![chat(100 + max + 1, true)], vec![]).await;
    assert_eq!(messages(&span_of(h, id, 101).await).0, [msg("user", "q")]);
    assert_eq!(
        messages(&span_of(h, id, 100 + max).await).0,
        [msg("user", "q")]
    );
    assert!(messages(&span_of(h, id, 100 + max + 1).await).0.is_empty());
    // Two spans took theirs: two places are free again.
    let out = write(
        h,
        id,
        vec![],
        vec![
            fill("free-1", 7, &[("user", "a")], &[]),
            fill("free-2", 8, &[("user", "b")], &[]),
            fill("free-3", 9, &[("user", "c")], &[]),
        ],
    )
    .await;
    assert_eq!(out.accepted, 2);
}
