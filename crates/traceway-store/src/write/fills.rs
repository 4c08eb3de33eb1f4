//! Message fills (ADR 027): prompts and completions that reach the store apart from their
//! LLM span (the GenAI message events of OTLP logs), before or after it.
//!
//! A fill for a span the trace has (running or ended) is merged into the span's stored
//! body, stripped to the trace's level, and written as a new `span_started` (running) or
//! `span_ended` (ended) event carrying the whole span, so reads (which fold a span's latest
//! event) and live streams see the messages. A fill for a span not stored yet is kept
//! pending, bounded per trace, and merged into the span when it arrives. The fill's id is
//! the idempotency key: a fill applied before, or already pending, is a duplicate.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};
use traceway_core::{
    fill_messages, strip_span, EventBody, LlmDetails, MessageFill, Span, SpanKind, Timestamp,
};

use super::{Draft, Model, SpanState, Stored, Written};
use crate::BackendError;

/// At most this many fills wait for their spans in one trace; more are dropped (counted in
/// [`FillChanges::dropped`]).
pub const MAX_PENDING_FILLS_PER_TRACE: u32 = 256;

/// At most this many bytes (the fills' JSON) wait for their spans in one trace.
pub const MAX_PENDING_FILL_BYTES_PER_TRACE: u64 = 1024 * 1024;

/// How much waits in one trace for spans not stored yet.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct PendingTotals {
    /// Fills.
    pub count: u32,
    /// Their JSON's bytes.
    pub bytes: u64,
}

impl PendingTotals {
    /// The totals of some pending fills.
    pub(crate) fn of<'a>(fills: impl IntoIterator<Item = &'a MessageFill>) -> PendingTotals {
        let mut t = PendingTotals::default();
        for f in fills {
            t.count += 1;
            t.bytes += fill_bytes(f);
        }
        t
    }
}

/// What a write changed of message fills, beyond its events and span states. Empty (and
/// not allocated) for the writes that carry no fill and create no span with fills waiting.
#[derive(Debug, Default)]
pub(crate) struct FillChanges(Option<Box<FillState>>);

/// The changes themselves.
#[derive(Debug, Default)]
pub(crate) struct FillState {
    /// Per span whose pending fills changed, all of them now, in arrival order; an empty
    /// list means none is left (the span arrived and took them).
    pub pending: HashMap<u64, Vec<MessageFill>>,
    /// The trace's pending totals after the write, when they changed.
    pub totals: Option<PendingTotals>,
    /// Fills dropped because the trace's pending fills were at their bounds.
    pub dropped: u32,
    /// Bodies of ended spans this write filled, so a second fill of the same span sees
    /// the first.
    bodies: HashMap<u64, Span>,
}

impl FillChanges {
    /// The changes, if any.
    pub(crate) fn get(&self) -> Option<&FillState> {
        self.0.as_deref()
    }

    fn get_mut(&mut self) -> &mut FillState {
        self.0.get_or_insert_with(Box::default)
    }

    /// Fills dropped at the bounds.
    pub(crate) fn dropped(&self) -> u32 {
        self.get().map_or(0, |f| f.dropped)
    }

    /// The trace's pending totals after the write, when they changed.
    pub(crate) fn totals(&self) -> Option<PendingTotals> {
        self.get().and_then(|f| f.totals)
    }

    /// The spans whose pending fills changed, with all of them now.
    pub(crate) fn into_pending(self) -> HashMap<u64, Vec<MessageFill>> {
        self.0.map(|f| f.pending).unwrap_or_default()
    }
}

/// The stored size of a fill, which the per-trace byte bound counts.
pub(crate) fn fill_bytes(f: &MessageFill) -> u64 {
    serde_json::to_vec(f).map_or(0, |v| v.len() as u64)
}

/// What became of one fill.
enum Outcome {
    Applied,
    Duplicate,
    Dropped,
}

// See `Model`'s impl: a refusal carries the loaded trace back.
#[allow(clippy::result_large_err)]
impl Model {
    /// Applies message fills to what an append wrote (after its inputs, before its end is
    /// persisted): each fill lands on its span, or waits for it. Fails only when the port
    /// fails (an internal error).
    pub(crate) fn fill<S: Stored>(
        &self,
        written: Written<S>,
        fills: Vec<MessageFill>,
    ) -> Result<Written<S>, BackendError> {
        if fills.is_empty() {
            return Ok(written);
        }
        let mut d = Draft {
            model: self.clone(),
            out: written,
        };
        for f in fills {
            match d.apply_fill(f)? {
                Outcome::Applied => d.out.accepted += 1,
                Outcome::Duplicate => d.out.duplicates += 1,
                Outcome::Dropped => d.out.fills.get_mut().dropped += 1,
            }
        }
        Ok(d.into_written())
    }
}

impl<S: Stored> Draft<S> {
    fn apply_fill(&mut self, mut fill: MessageFill) -> Result<Outcome, BackendError> {
        if !fill.id.is_empty() && self.seen(Some(&fill.id))? {
            return Ok(Outcome::Duplicate);
        }
        // What the trace's level keeps of the fill, cut as the span's content will be, so
        // a retry compares equal to what was stored and a pending fill holds no more than
        // the span may.
        self.shape(&mut fill);
        if fill.input_messages.is_empty() && fill.output_messages.is_empty() {
            return Ok(Outcome::Duplicate);
        }
        let sid = fill.span_id.as_u64();
        let outcome = match self.span(sid).cloned() {
            Some(SpanState::Running(started)) => {
                let mut span = *started;
                if !self.merge(&mut span, &fill) {
                    return Ok(Outcome::Duplicate);
                }
                let component = span.component_id.clone();
                let time = span.start_time;
                self.out
                    .spans
                    .insert(sid, SpanState::Running(Box::new(span.clone())));
                self.push_event(time, component, EventBody::SpanStarted(span));
                Outcome::Applied
            }
            Some(SpanState::Ended { component }) => {
                // Data already purged: nothing to fill.
                let Some(mut span) = self.ended_body(sid)? else {
                    return Ok(Outcome::Duplicate);
                };
                if !self.merge(&mut span, &fill) {
                    return Ok(Outcome::Duplicate);
                }
                let time = span.end_time.unwrap_or(span.start_time);
                self.out.fills.get_mut().bodies.insert(sid, span.clone());
                self.push_event(time, component, EventBody::SpanEnded(span));
                Outcome::Applied
            }
            None => return Ok(self.keep_pending(sid, fill)),
        };
        if !fill.id.is_empty() {
            let seq = self.out.trace.last_seq;
            self.out.client_ids.push((seq, fill.id));
        }
        Ok(outcome)
    }

    /// Strips a fill's messages as the trace's level strips a span's.
    fn shape(&self, fill: &mut MessageFill) {
        let mut s = Span::new(
            fill.span_id,
            SpanKind::Llm,
            "",
            Timestamp::from_unix_nanos(0),
        );
        s.llm = Some(LlmDetails {
            input_messages: std::mem::take(&mut fill.input_messages),
            output_messages: std::mem::take(&mut fill.output_messages),
            ..LlmDetails::default()
        });
        strip_span(
            &mut s,
            self.out.trace.level,
            self.model.capture.max_content_bytes,
        );
        if let Some(l) = s.llm {
            fill.input_messages = l.input_messages;
            fill.output_messages = l.output_messages;
        }
    }

    /// Merges a fill into a stored span and strips it again; whether it changed.
    fn merge(&self, span: &mut Span, fill: &MessageFill) -> bool {
        let before = span.clone();
        if !fill_messages(span, fill) {
            return false;
        }
        strip_span(
            span,
            self.out.trace.level,
            self.model.capture.max_content_bytes,
        );
        *span != before
    }

    /// An ended span's latest form: filled earlier in this write, written earlier in this
    /// write, or stored.
    fn ended_body(&mut self, sid: u64) -> Result<Option<Span>, BackendError> {
        if let Some(b) = self.out.fills.get().and_then(|f| f.bodies.get(&sid)) {
            return Ok(Some(b.clone()));
        }
        let written = self.out.events.iter().rev().find_map(|e| match &e.body {
            EventBody::SpanStarted(s) | EventBody::SpanEnded(s) if s.span_id.as_u64() == sid => {
                Some(s.clone())
            }
            _ => None,
        });
        if written.is_some() {
            return Ok(written);
        }
        match &self.out.stored {
            Some(s) => s.span_body(sid),
            None => Ok(None),
        }
    }

    fn pending_of(&self, sid: u64) -> Option<Vec<MessageFill>> {
        if let Some(l) = self.out.fills.get().and_then(|f| f.pending.get(&sid)) {
            return Some(l.clone());
        }
        self.out
            .stored
            .as_ref()?
            .pending_fills(sid)
            .filter(|l| !l.is_empty())
            .map(<[MessageFill]>::to_vec)
    }

    fn totals(&self) -> PendingTotals {
        match (self.out.fills.totals(), &self.out.stored) {
            (Some(t), _) => t,
            (None, Some(s)) => s.pending_totals(),
            (None, None) => PendingTotals::default(),
        }
    }

    /// Keeps a fill for a span not stored yet, within the trace's bounds.
    fn keep_pending(&mut self, sid: u64, fill: MessageFill) -> Outcome {
        let mut list = self.pending_of(sid).unwrap_or_default();
        if list
            .iter()
            .any(|f| *f == fill || (!f.id.is_empty() && f.id == fill.id))
        {
            return Outcome::Duplicate;
        }
        let t = self.totals();
        let bytes = fill_bytes(&fill);
        if t.count >= MAX_PENDING_FILLS_PER_TRACE
            || t.bytes.saturating_add(bytes) > MAX_PENDING_FILL_BYTES_PER_TRACE
        {
            return Outcome::Dropped;
        }
        list.push(fill);
        let f = self.out.fills.get_mut();
        f.pending.insert(sid, list);
        f.totals = Some(PendingTotals {
            count: t.count + 1,
            bytes: t.bytes + bytes,
        });
        Outcome::Applied
    }

    /// Merges the fills waiting for a span that is being created, in arrival order, and
    /// forgets them. The caller strips the span afterwards.
    pub(super) fn take_pending(&mut self, span: &mut Span) {
        let sid = span.span_id.as_u64();
        let Some(list) = self.pending_of(sid) else {
            return;
        };
        for f in &list {
            fill_messages(span, f);
        }
        let taken = PendingTotals::of(&list);
        let t = self.totals();
        let f = self.out.fills.get_mut();
        f.totals = Some(PendingTotals {
            count: t.count.saturating_sub(taken.count),
            bytes: t.bytes.saturating_sub(taken.bytes),
        });
        f.pending.insert(sid, Vec::new());
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::{id, loaded, model, Mem};
    use super::*;
    use traceway_core::{EventInput, FillMode, Level, Message, NewTrace, SpanId, SpanInput};

    fn sid(n: u64) -> SpanId {
        SpanId::from_u64(n).expect("span id")
    }

    fn m(role: &str, content: &str) -> Message {
        Message {
            role: role.into(),
            content: Some(content.into()),
            ..Message::default()
        }
    }

    fn fill(fid: &str, span: u64, input: &[&str], output: &[&str]) -> MessageFill {
        MessageFill {
            id: fid.into(),
            span_id: sid(span),
            mode: FillMode::Append,
            input_messages: input.iter().map(|c| m("user", c)).collect(),
            output_messages: output.iter().map(|c| m("assistant", c)).collect(),
        }
    }

    fn llm(span: u64, end: Option<i64>) -> SpanInput {
        let mut s = Span::new(
            sid(span),
            SpanKind::Llm,
            "chat",
            Timestamp::from_unix_millis(1_000),
        );
        s.end_time = end.map(Timestamp::from_unix_millis);
        s.into()
    }

    fn step(
        prev: Option<Written<Mem>>,
        events: Vec<EventInput>,
        fills: Vec<MessageFill>,
    ) -> Written<Mem> {
        let m = model(2_000);
        let new = NewTrace {
            level: Some(Level::Detailed),
            ..NewTrace::default()
        };
        let w = m
            .append("t", id(), prev.map(loaded), Some(new), events, None)
            .map_err(|r| r.error)
            .expect("append");
        m.fill(w, fills).expect("fill")
    }

    fn messages(s: &Span) -> (Vec<Message>, Vec<Message>) {
        let l = s.llm.clone().unwrap_or_default();
        (l.input_messages, l.output_messages)
    }

    fn last_span(w: &Written<Mem>) -> Span {
        w.events
            .iter()
            .rev()
            .find_map(|e| match &e.body {
                EventBody::SpanStarted(s) | EventBody::SpanEnded(s) => Some(s.clone()),
                _ => None,
            })
            .expect("a span event")
    }

    #[test]
    fn a_fill_before_its_span_waits_and_lands_when_the_span_arrives() {
        let w = step(None, vec![], vec![fill("f1", 5, &["hi"], &["hello"])]);
        assert_eq!((w.accepted, w.duplicates), (1, 0));
        assert_eq!(w.fills.get().expect("changes").pending[&5].len(), 1);
        assert_eq!(w.fills.totals().map(|t| t.count), Some(1));
        assert!(w
            .events
            .iter()
            .all(|e| !matches!(e.body, EventBody::SpanEnded(_))));
        // A retry while it waits is a duplicate.
        let w = step(Some(w), vec![], vec![fill("f1", 5, &["hi"], &["hello"])]);
        assert_eq!((w.accepted, w.duplicates), (0, 1));
        let w = step(
            Some(w),
            vec![EventInput::SpanEnded {
                span: llm(5, Some(1_500)),
            }],
            vec![],
        );
        let s = last_span(&w);
        assert_eq!(
            messages(&s),
            (vec![m("user", "hi")], vec![m("assistant", "hello")])
        );
        assert_eq!(
            w.fills.get().expect("changes").pending[&5],
            Vec::new(),
            "taken"
        );
        assert_eq!(w.fills.totals(), Some(PendingTotals::default()));
        assert_eq!(w.trace.rollups.span_count, 1);
    }

    #[test]
    fn a_fill_after_its_span_rewrites_the_span_running_or_ended_once() {
        let w = step(
            None,
            vec![EventInput::SpanStarted { span: llm(5, None) }],
            vec![],
        );
        let before = w.trace.rollups.clone();
        let w = step(Some(w), vec![], vec![fill("f1", 5, &["hi"], &[])]);
        assert!(matches!(
            w.events.last().map(|e| &e.body),
            Some(EventBody::SpanStarted(_))
        ));
        assert!(
            matches!(w.spans.get(&5), Some(SpanState::Running(s)) if messages(s).0 == [m("user", "hi")])
        );
        assert_eq!(w.client_ids.last().map(|(_, k)| k.as_str()), Some("f1"));
        // The end keeps the messages.
        let w = step(
            Some(w),
            vec![EventInput::SpanEnded {
                span: llm(5, Some(1_500)),
            }],
            vec![],
        );
        assert_eq!(messages(&last_span(&w)).0, [m("user", "hi")]);
        // Ended: a later fill lands, and the rollups do not count the span again.
        let w = step(Some(w), vec![], vec![fill("f2", 5, &[], &["hello"])]);
        let s = last_span(&w);
        assert!(matches!(
            w.events.last().map(|e| &e.body),
            Some(EventBody::SpanEnded(_))
        ));
        assert_eq!(
            messages(&s),
            (vec![m("user", "hi")], vec![m("assistant", "hello")])
        );
        assert_eq!(w.trace.rollups.span_count, before.span_count.max(1));
        // The same fill again (same id, or same content under another id): nothing.
        let w = step(
            Some(w),
            vec![],
            vec![
                fill("f2", 5, &[], &["hello"]),
                fill("f3", 5, &[], &["hello"]),
            ],
        );
        assert_eq!((w.accepted, w.duplicates), (0, 2));
        assert!(w.events.is_empty());
    }

    #[test]
    fn pending_fills_are_bounded_per_trace() {
        let many: Vec<MessageFill> = (1..=u64::from(MAX_PENDING_FILLS_PER_TRACE) + 1)
            .map(|n| fill(&format!("f{n}"), n, &["q"], &[]))
            .collect();
        let w = step(None, vec![], many);
        assert_eq!(w.accepted, MAX_PENDING_FILLS_PER_TRACE);
        assert_eq!(w.fills.dropped(), 1);
        // Bytes: each fill of 4 messages of 16 KiB (the string cap) is ~64 KiB.
        let big = "x".repeat(16 * 1024);
        let big: Vec<MessageFill> = (1..=20)
            .map(|n| fill(&format!("b{n}"), n, &[&big, &big, &big, &big], &[]))
            .collect();
        let w = step(None, vec![], big);
        assert!(w.fills.dropped() > 0, "{}", w.fills.dropped());
        let t = w.fills.totals().expect("totals");
        assert!(t.bytes <= MAX_PENDING_FILL_BYTES_PER_TRACE, "{t:?}");
        assert_eq!(t.count, w.accepted);
    }

    #[test]
    fn a_level_that_keeps_no_messages_keeps_no_fills() {
        let m2 = model(2_000);
        let new = NewTrace {
            level: Some(Level::Standard),
            ..NewTrace::default()
        };
        let w = m2
            .append::<Mem>("t", id(), None, Some(new), vec![], None)
            .map_err(|r| r.error)
            .expect("append");
        let w = m2.fill(w, vec![fill("f", 5, &["hi"], &[])]).expect("fill");
        assert_eq!((w.accepted, w.duplicates), (0, 1));
        assert!(w.fills.get().is_none(), "nothing kept");
    }
}
