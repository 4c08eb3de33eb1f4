//! What clients send, and how it becomes stored spans.
//!
//! A step can be reported when it starts (`span_started`, no end) and again when it ends
//! (`span_ended`, carrying only what is new: the end time, status, tokens, output). The
//! functions here merge the two into one span, and tell a retry from new information, so
//! a batch sent twice is stored once.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::id::SpanId;
use crate::model::{
    ErrorRecord, Level, Link, LlmDetails, LogRecord, Message, RetrievalDetails, Span, SpanKind,
    SpanStatus, State, ToolDetails,
};
use crate::time::Timestamp;

/// A span as a client reports it. Only `span_id` is required; a `span_ended` for a span
/// that was started carries only what changed. Unknown fields are refused, so a typo
/// (`"lmm"`) is an error rather than lost data.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SpanInput {
    /// The span's id.
    pub span_id: SpanId,
    /// Its parent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent_span_id: Option<SpanId>,
    /// What it does (default `other`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<SpanKind>,
    /// Its name (default: the kind).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Its component.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub component_id: Option<String>,
    /// The emitting service.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<String>,
    /// Start (default: when the event is recorded).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_time: Option<Timestamp>,
    /// End (for `span_ended`; default: when the event is recorded).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end_time: Option<Timestamp>,
    /// Outcome.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<SpanStatus>,
    /// Input.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input: Option<Value>,
    /// Output.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output: Option<Value>,
    /// LLM details.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub llm: Option<LlmDetails>,
    /// Tool details.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool: Option<ToolDetails>,
    /// Retrieval details.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retrieval: Option<RetrievalDetails>,
    /// Attributes; on `span_ended` they are merged into the started span's.
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    pub attributes: Map<String, Value>,
    /// Links.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub links: Vec<Link>,
}

impl SpanInput {
    /// An input with only the id set.
    pub fn new(span_id: SpanId) -> SpanInput {
        SpanInput {
            span_id,
            parent_span_id: None,
            kind: None,
            name: None,
            component_id: None,
            service: None,
            start_time: None,
            end_time: None,
            status: None,
            input: None,
            output: None,
            llm: None,
            tool: None,
            retrieval: None,
            attributes: Map::new(),
            links: Vec::new(),
        }
    }
}

impl From<Span> for SpanInput {
    fn from(s: Span) -> SpanInput {
        SpanInput {
            span_id: s.span_id,
            parent_span_id: s.parent_span_id,
            kind: Some(s.kind),
            name: Some(s.name),
            component_id: s.component_id,
            service: s.service,
            start_time: Some(s.start_time),
            end_time: s.end_time,
            status: Some(s.status),
            input: s.input,
            output: s.output,
            llm: s.llm,
            tool: s.tool,
            retrieval: s.retrieval,
            attributes: s.attributes,
            links: s.links,
        }
    }
}

/// One event in an append batch. In JSON, `"type"` selects the variant.
///
/// Decoding is hand-written (ADR 038): when `"type"` is the object's first key, as every
/// serialiser of this type writes it, the rest of the object is decoded straight into the
/// variant, without the copy of the whole event that serde's derive for internally tagged
/// enums makes first (a `Content` tree with every key and string allocated). Any other
/// key order is still accepted, through a buffered `serde_json::Value`.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum EventInput {
    /// A step began.
    SpanStarted {
        /// The span.
        span: SpanInput,
    },
    /// A step ended, or arrived whole.
    SpanEnded {
        /// The span, or what changed since it started.
        span: SpanInput,
    },
    /// A log line.
    Log {
        /// Idempotency key: an event with an id already stored in this trace is skipped.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<String>,
        /// When (default: when recorded).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        time: Option<Timestamp>,
        /// The record.
        #[serde(flatten)]
        record: LogRecord,
    },
    /// An error.
    Error {
        /// Idempotency key: an event with an id already stored in this trace is skipped.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<String>,
        /// When (default: when recorded).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        time: Option<Timestamp>,
        /// The record.
        #[serde(flatten)]
        record: ErrorRecord,
    },
}

/// The variants' names, as `"type"` spells them.
const EVENT_TYPES: &[&str] = &["span_started", "span_ended", "log", "error"];

#[derive(Clone, Copy)]
enum EventType {
    SpanStarted,
    SpanEnded,
    Log,
    Error,
}

impl<'de> Deserialize<'de> for EventType {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = EventType;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("an event type")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<EventType, E> {
                Ok(match v {
                    "span_started" => EventType::SpanStarted,
                    "span_ended" => EventType::SpanEnded,
                    "log" => EventType::Log,
                    "error" => EventType::Error,
                    other => return Err(E::unknown_variant(other, EVENT_TYPES)),
                })
            }
        }
        d.deserialize_str(V)
    }
}

/// An object key: `"type"` or another (kept, for the buffered path).
enum EventKey<'de> {
    Type,
    Other(std::borrow::Cow<'de, str>),
}

impl<'de> Deserialize<'de> for EventKey<'de> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = EventKey<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a field name")
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<EventKey<'de>, E> {
                Ok(if v == "type" {
                    EventKey::Type
                } else {
                    EventKey::Other(v.into())
                })
            }
            fn visit_str<E>(self, v: &str) -> Result<EventKey<'de>, E> {
                Ok(if v == "type" {
                    EventKey::Type
                } else {
                    EventKey::Other(v.to_owned().into())
                })
            }
        }
        d.deserialize_identifier(V)
    }
}

/// The fields of `span_started` and `span_ended` after `"type"`.
#[derive(Deserialize)]
struct SpanEventBody {
    span: SpanInput,
    /// A second `"type"`, refused as serde's derive refuses it.
    #[serde(default, rename = "type")]
    again: Option<serde::de::IgnoredAny>,
}

/// The fields of `log` after `"type"`.
#[derive(Deserialize)]
struct LogEventBody {
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    time: Option<Timestamp>,
    #[serde(default, rename = "type")]
    again: Option<serde::de::IgnoredAny>,
    #[serde(flatten)]
    record: LogRecord,
}

/// The fields of `error` after `"type"`.
#[derive(Deserialize)]
struct ErrorEventBody {
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    time: Option<Timestamp>,
    #[serde(default, rename = "type")]
    again: Option<serde::de::IgnoredAny>,
    #[serde(flatten)]
    record: ErrorRecord,
}

impl EventInput {
    /// The variant `ty` from the object's other fields, read by `d`.
    fn from_body<'de, D: serde::Deserializer<'de>>(
        ty: EventType,
        d: D,
    ) -> Result<EventInput, D::Error> {
        use serde::de::Error as _;
        Ok(match ty {
            EventType::SpanStarted | EventType::SpanEnded => {
                let body = SpanEventBody::deserialize(d)?;
                if body.again.is_some() {
                    return Err(D::Error::duplicate_field("type"));
                }
                match ty {
                    EventType::SpanStarted => EventInput::SpanStarted { span: body.span },
                    _ => EventInput::SpanEnded { span: body.span },
                }
            }
            EventType::Log => {
                let b = LogEventBody::deserialize(d)?;
                if b.again.is_some() {
                    return Err(D::Error::duplicate_field("type"));
                }
                EventInput::Log {
                    id: b.id,
                    time: b.time,
                    record: b.record,
                }
            }
            EventType::Error => {
                let b = ErrorEventBody::deserialize(d)?;
                if b.again.is_some() {
                    return Err(D::Error::duplicate_field("type"));
                }
                EventInput::Error {
                    id: b.id,
                    time: b.time,
                    record: b.record,
                }
            }
        })
    }
}

impl<'de> Deserialize<'de> for EventInput {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = EventInput;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("an event: an object with a \"type\"")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<EventInput, A::Error> {
                use serde::de::value::MapAccessDeserializer;
                use serde::de::Error as _;
                let first = match map.next_key::<EventKey<'de>>()? {
                    None => return Err(A::Error::missing_field("type")),
                    Some(EventKey::Type) => {
                        // The common order: the rest is decoded in place.
                        let ty: EventType = map.next_value()?;
                        return EventInput::from_body(ty, MapAccessDeserializer::new(map));
                    }
                    Some(EventKey::Other(k)) => k,
                };
                // Another order: buffer the object, then decode it.
                let mut fields = Map::new();
                fields.insert(first.into_owned(), map.next_value::<Value>()?);
                let mut ty = None;
                while let Some(k) = map.next_key::<EventKey<'de>>()? {
                    match k {
                        EventKey::Type if ty.is_some() => {
                            return Err(A::Error::duplicate_field("type"))
                        }
                        EventKey::Type => ty = Some(map.next_value::<EventType>()?),
                        EventKey::Other(k) => {
                            fields.insert(k.into_owned(), map.next_value::<Value>()?);
                        }
                    }
                }
                let ty = ty.ok_or_else(|| A::Error::missing_field("type"))?;
                EventInput::from_body(ty, Value::Object(fields)).map_err(A::Error::custom)
            }
        }
        d.deserialize_map(V)
    }
}

/// The request to create a trace (`POST /api/v1/traces`). Every field is optional.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewTrace {
    /// The id; when absent Traceway makes a UUIDv7.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trace_id: Option<crate::id::TraceId>,
    /// Name of the run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Agent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_id: Option<String>,
    /// Session.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_id: Option<String>,
    /// User.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_id: Option<String>,
    /// Initial state: `RECEIVED` (default), `RUNNING` or an intermediate state; never
    /// `COMPLETED` or `ERRORED` (create it, then end it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(schema_with = crate::openapi::initial_state))]
    pub state: Option<State>,
    /// Detail kept (default: the server's `--default-level`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub level: Option<Level>,
    /// Metadata.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub metadata: BTreeMap<String, String>,
}

/// A change to a trace (`PATCH /api/v1/traces/{id}`).
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TracePatch {
    /// The new state.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<State>,
    /// Why the state changes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Keys to set; the others stay.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub metadata: BTreeMap<String, String>,
    /// A new name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

/// What applying a span event did.
// A short-lived return value, consumed at once; boxing would add allocations on the
// ingest path for nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq)]
pub enum SpanChange {
    /// A span not seen before.
    New(Span),
    /// A started span that now ended.
    Ended {
        /// As it was stored.
        previous: Span,
        /// As it is now.
        span: Span,
    },
    /// Nothing new: a retry, or a start that came after the end.
    Duplicate,
}

fn new_span(input: SpanInput, now: Timestamp, ended: bool) -> Span {
    let kind = input.kind.unwrap_or_default();
    let start = input.start_time.or(input.end_time).unwrap_or(now);
    Span {
        span_id: input.span_id,
        parent_span_id: input.parent_span_id,
        kind,
        name: input.name.unwrap_or_else(|| kind.as_str().to_string()),
        component_id: input.component_id,
        service: input.service,
        start_time: start,
        end_time: ended.then(|| input.end_time.unwrap_or(now).max(start)),
        status: input.status.unwrap_or_default(),
        input: input.input,
        output: input.output,
        llm: input.llm,
        tool: input.tool,
        retrieval: input.retrieval,
        attributes: input.attributes,
        links: input.links,
    }
}

/// Applies `span_started`. A span already known (started or ended) makes it a duplicate.
pub fn start_span(existing: Option<&Span>, input: SpanInput, now: Timestamp) -> SpanChange {
    let input = sanitize(input);
    match existing {
        Some(_) => SpanChange::Duplicate,
        None => SpanChange::New(new_span(input, now, false)),
    }
}

/// Applies `span_ended`: ends a running span with what the input adds, or records a whole
/// span not seen before. A span that has already ended makes it a duplicate.
pub fn end_span(existing: Option<&Span>, input: SpanInput, now: Timestamp) -> SpanChange {
    let input = sanitize(input);
    let Some(prev) = existing else {
        return SpanChange::New(new_span(input, now, true));
    };
    if prev.is_ended() {
        return SpanChange::Duplicate;
    }
    let mut span = prev.clone();
    if let Some(v) = input.parent_span_id {
        span.parent_span_id = Some(v);
    }
    if let Some(v) = input.kind {
        span.kind = v;
    }
    if let Some(v) = input.name {
        span.name = v;
    }
    if input.component_id.is_some() {
        span.component_id = input.component_id;
    }
    if input.service.is_some() {
        span.service = input.service;
    }
    if let Some(v) = input.start_time {
        span.start_time = v;
    }
    span.end_time = Some(input.end_time.unwrap_or(now).max(span.start_time));
    if let Some(v) = input.status {
        span.status = v;
    }
    if input.input.is_some() {
        span.input = input.input;
    }
    if input.output.is_some() {
        span.output = input.output;
    }
    if let Some(llm) = input.llm {
        span.llm = Some(merge_llm(span.llm.take(), llm));
    }
    if input.tool.is_some() {
        span.tool = input.tool;
    }
    if input.retrieval.is_some() {
        span.retrieval = input.retrieval;
    }
    span.attributes.extend(input.attributes);
    span.links.extend(input.links);
    SpanChange::Ended {
        previous: prev.clone(),
        span,
    }
}

/// The most tokens one span may report; more is taken as this (no model reads a trillion
/// tokens in one call; a larger value is an exporter's bug or an attack on the rollups).
pub const MAX_SPAN_TOKENS: u64 = 1_000_000_000_000;
/// The largest cost one span may report, in US dollars; more is taken as this.
pub const MAX_SPAN_COST_USD: f64 = 1_000_000_000.0;

/// Clamps what could poison a trace's rollups or its stored JSON (issue 15, failures 3.1
/// and 3.2): token counts above [`MAX_SPAN_TOKENS`] are clamped to it; a cost that is not
/// finite or is negative is dropped, one above [`MAX_SPAN_COST_USD`] clamped; a retrieval
/// score that is not finite is dropped. Native JSON and OTLP both pass here (the write
/// model calls `start_span` and `end_span` for every span).
pub fn sanitize(mut input: SpanInput) -> SpanInput {
    if let Some(l) = input.llm.as_mut() {
        for v in [
            &mut l.input_tokens,
            &mut l.output_tokens,
            &mut l.total_tokens,
            &mut l.cached_tokens,
            &mut l.reasoning_tokens,
        ]
        .into_iter()
        .flatten()
        {
            *v = (*v).min(MAX_SPAN_TOKENS);
        }
        l.cost_usd = l
            .cost_usd
            .filter(|c| c.is_finite() && *c >= 0.0)
            .map(|c| c.min(MAX_SPAN_COST_USD));
    }
    if let Some(r) = input.retrieval.as_mut() {
        for d in &mut r.documents {
            d.score = d.score.filter(|s| s.is_finite());
        }
    }
    input
}

/// The end of an LLM call usually adds tokens and output to what its start said (model,
/// prompt); fields the end leaves out keep their started value.
fn merge_llm(started: Option<LlmDetails>, ended: LlmDetails) -> LlmDetails {
    let Some(s) = started else { return ended };
    LlmDetails {
        provider: ended.provider.or(s.provider),
        model: ended.model.or(s.model),
        input_tokens: ended.input_tokens.or(s.input_tokens),
        output_tokens: ended.output_tokens.or(s.output_tokens),
        total_tokens: ended.total_tokens.or(s.total_tokens),
        cached_tokens: ended.cached_tokens.or(s.cached_tokens),
        reasoning_tokens: ended.reasoning_tokens.or(s.reasoning_tokens),
        cost_usd: ended.cost_usd.or(s.cost_usd),
        cache_write_tokens: ended.cache_write_tokens.or(s.cache_write_tokens),
        cost_source: ended.cost_source.or(s.cost_source),
        price_table: ended.price_table.or(s.price_table),
        input_messages: if ended.input_messages.is_empty() {
            s.input_messages
        } else {
            ended.input_messages
        },
        output_messages: if ended.output_messages.is_empty() {
            s.output_messages
        } else {
            ended.output_messages
        },
    }
}

/// How a [`MessageFill`] combines with the messages a span already has.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FillMode {
    /// The fill holds a whole conversation (GenAI `operation.details`): each side it
    /// carries replaces that side.
    Replace,
    /// The fill holds single messages (GenAI per-message events): each message not already
    /// on that side is appended, in order, so a retried export adds nothing.
    Append,
}

/// Prompt and completion messages for an LLM span that arrive apart from the span (OTLP log
/// records of the GenAI conventions), before or after it. The store keeps a fill for a span
/// it has not seen and applies it when the span arrives; a fill for a span it has, running
/// or ended, is applied at once (see [`fill_messages`]).
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MessageFill {
    /// Idempotency key: stable for the same records (OTLP: `otlp-fill:<span>:<hash>`), so a
    /// store skips a retried fill it applied or keeps pending already.
    #[serde(default)]
    pub id: String,
    /// The LLM span.
    pub span_id: SpanId,
    /// How it combines with what the span has.
    pub mode: FillMode,
    /// Prompt messages.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub input_messages: Vec<Message>,
    /// Completion messages.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub output_messages: Vec<Message>,
}

/// Merges a fill into a span, whatever its state (running, ended, or just created from a
/// `span_ended` that came after the fill). Only `llm` spans take messages; for another kind
/// (or a fill for another span) nothing changes. Returns whether the span changed, so a
/// store writes it only then; applying the same fill twice changes nothing the second time.
pub fn fill_messages(span: &mut Span, fill: &MessageFill) -> bool {
    if span.span_id != fill.span_id || span.kind != SpanKind::Llm {
        return false;
    }
    let llm = span.llm.get_or_insert_with(LlmDetails::default);
    let mut changed = false;
    for (side, new) in [
        (&mut llm.input_messages, &fill.input_messages),
        (&mut llm.output_messages, &fill.output_messages),
    ] {
        if new.is_empty() {
            continue;
        }
        match fill.mode {
            FillMode::Replace => {
                if side != new {
                    *side = new.clone();
                    changed = true;
                }
            }
            FillMode::Append => {
                for m in new {
                    if !side.contains(m) {
                        side.push(m.clone());
                        changed = true;
                    }
                }
            }
        }
    }
    if !changed && span.llm.as_ref() == Some(&LlmDetails::default()) {
        span.llm = None;
    }
    changed
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::StatusCode;

    #[test]
    fn an_event_decodes_the_same_whatever_the_key_order() {
        let cases = [
            (
                r#"{"type":"span_ended","span":{"span_id":"00000000000000a1","name":"n","start_time":5,"attributes":{"k":1}}}"#,
                r#"{"span":{"span_id":"00000000000000a1","name":"n","start_time":5,"attributes":{"k":1}},"type":"span_ended"}"#,
            ),
            (
                r#"{"type":"log","id":"x","message":"m","severity":"warn","span_id":"00000000000000a1"}"#,
                r#"{"message":"m","id":"x","type":"log","severity":"warn","span_id":"00000000000000a1"}"#,
            ),
            (
                r#"{"type":"error","message":"m","error_type":"E","time":"2025-11-21T10:00:00Z"}"#,
                r#"{"time":"2025-11-21T10:00:00Z","error_type":"E","message":"m","type":"error"}"#,
            ),
        ];
        for (first, last) in cases {
            let a: EventInput = serde_json::from_str(first).unwrap();
            let b: EventInput = serde_json::from_str(last).unwrap();
            assert_eq!(a, b, "{first}");
            // What serialising writes decodes back to the same event.
            let again: EventInput =
                serde_json::from_str(&serde_json::to_string(&a).unwrap()).unwrap();
            assert_eq!(again, a);
        }
        let e: EventInput = serde_json::from_str(cases[0].0).unwrap();
        assert!(
            matches!(&e, EventInput::SpanEnded { span } if span.start_time == Some(Timestamp::from_unix_nanos(5)))
        );
    }

    #[test]
    fn a_bad_event_is_refused_in_either_key_order() {
        let cases = [
            (
                r#"{"type":"span_exploded"}"#,
                "unknown variant `span_exploded`",
            ),
            (
                r#"{"span":{},"type":"span_exploded"}"#,
                "unknown variant `span_exploded`",
            ),
            (r#"{"type":"span_started"}"#, "missing field `span`"),
            (r#"{"x":1}"#, "missing field `type`"),
            (r#"{}"#, "missing field `type`"),
            (
                r#"{"type":"log","type":"log","message":"m"}"#,
                "duplicate field `type`",
            ),
            (
                r#"{"type":"span_started","type":"log","span":{"span_id":"00000000000000a1"}}"#,
                "duplicate field `type`",
            ),
            (
                r#"{"message":"m","type":"log","type":"log"}"#,
                "duplicate field `type`",
            ),
            (r#"{"type":"log"}"#, "missing field `message`"),
            (r#"{"type":7}"#, "invalid type"),
            (
                r#"{"type":"span_started","span":{"span_id":"00000000000000a1","lmm":{}}}"#,
                "unknown field `lmm`",
            ),
            (
                r#"{"span":{"span_id":"00000000000000a1","lmm":{}},"type":"span_started"}"#,
                "unknown field `lmm`",
            ),
            (r#"["span_started"]"#, "invalid type: sequence"),
        ];
        for (text, needle) in cases {
            let e = serde_json::from_str::<EventInput>(text)
                .unwrap_err()
                .to_string();
            assert!(e.contains(needle), "{text}: {e:?} should say {needle:?}");
        }
    }

    fn m(role: &str, content: &str) -> Message {
        Message {
            role: role.into(),
            content: Some(content.into()),
            ..Default::default()
        }
    }

    #[test]
    fn fills_merge_into_running_ended_and_late_spans_once() {
        let t0 = Timestamp::from_unix_millis(1_000);
        let fill = MessageFill {
            id: "f1".into(),
            span_id: sid(7),
            mode: FillMode::Append,
            input_messages: vec![m("system", "be brief"), m("user", "hi")],
            output_messages: vec![],
        };
        let choice = MessageFill {
            id: "f2".into(),
            span_id: sid(7),
            mode: FillMode::Append,
            input_messages: vec![],
            output_messages: vec![m("assistant", "hello")],
        };
        // Running: the fill lands, and ending the span keeps it.
        let mut running = Span::new(sid(7), SpanKind::Llm, "chat", t0);
        assert!(fill_messages(&mut running, &fill));
        assert!(
            !fill_messages(&mut running, &fill),
            "a retry changes nothing"
        );
        let SpanChange::Ended { span: ended, .. } = end_span(
            Some(&running),
            SpanInput {
                llm: Some(LlmDetails {
                    input_tokens: Some(3),
                    ..Default::default()
                }),
                ..SpanInput::new(sid(7))
            },
            t0,
        ) else {
            panic!("expected ended")
        };
        let mut ended = ended;
        assert_eq!(ended.llm.as_ref().unwrap().input_messages.len(), 2);
        // Ended: a later fill still lands.
        assert!(fill_messages(&mut ended, &choice));
        let llm = ended.llm.as_ref().unwrap();
        assert_eq!(llm.output_messages, [m("assistant", "hello")]);
        assert_eq!(llm.input_tokens, Some(3));
        // Before: a span that arrives after its fills takes them when it is created.
        let SpanChange::New(mut late) = end_span(
            None,
            SpanInput {
                kind: Some(SpanKind::Llm),
                ..SpanInput::new(sid(7))
            },
            t0,
        ) else {
            panic!("expected new")
        };
        for f in [&fill, &choice] {
            fill_messages(&mut late, f);
        }
        assert_eq!(
            late.llm,
            ended.llm.clone().map(|l| LlmDetails {
                input_tokens: None,
                ..l
            })
        );
        // A whole conversation replaces.
        let details = MessageFill {
            id: "f3".into(),
            span_id: sid(7),
            mode: FillMode::Replace,
            input_messages: vec![m("user", "only this")],
            output_messages: vec![],
        };
        assert!(fill_messages(&mut late, &details));
        let llm = late.llm.as_ref().unwrap();
        assert_eq!(llm.input_messages, [m("user", "only this")]);
        assert_eq!(
            llm.output_messages,
            [m("assistant", "hello")],
            "untouched side"
        );
        // Not an LLM span, or another span: nothing.
        let mut tool = Span::new(sid(7), SpanKind::Tool, "t", t0);
        assert!(!fill_messages(&mut tool, &fill));
        assert_eq!(tool.llm, None);
        let mut other = Span::new(sid(8), SpanKind::Llm, "c", t0);
        assert!(!fill_messages(&mut other, &fill));
    }

    fn sid(n: u64) -> SpanId {
        SpanId::from_u64(n).unwrap()
    }

    fn llm_span(n: u64, llm: LlmDetails) -> Span {
        let input = SpanInput {
            kind: Some(crate::SpanKind::Llm),
            llm: Some(llm),
            ..SpanInput::new(sid(n))
        };
        match end_span(None, input, Timestamp::from_unix_millis(1_000)) {
            SpanChange::New(s) => s,
            other => panic!("not new: {other:?}"),
        }
    }

    fn rollups_of(spans: &[Span]) -> crate::Rollups {
        let mut r = crate::Rollups::default();
        for s in spans {
            r.apply_span(None, s);
        }
        r
    }

    /// Issue 15, failure 3.1: two LLM spans with `cost_usd: 1e308` made the cost rollup
    /// +inf, stored as `null`, and every later read of the trace failed.
    #[test]
    fn poison_trace_two_spans_costing_1e308_keep_a_finite_rollup_that_reads_back() {
        let poison = LlmDetails {
            cost_usd: Some(1e308),
            ..Default::default()
        };
        let spans = [llm_span(1, poison.clone()), llm_span(2, poison)];
        assert_eq!(
            spans[0].llm.as_ref().unwrap().cost_usd,
            Some(MAX_SPAN_COST_USD)
        );
        let r = rollups_of(&spans);
        assert!(r.cost_usd.is_finite());
        assert_eq!(r.cost_usd, 2.0 * MAX_SPAN_COST_USD);
        let json = serde_json::to_string(&r).unwrap();
        let back: crate::Rollups = serde_json::from_str(&json).unwrap();
        assert_eq!(back, r);

        // Even unclamped values (spans stored by an older build) cannot make the sum
        // non-finite.
        let mut raw = crate::Rollups::default();
        for n in 1..=2 {
            let mut s = llm_span(n, LlmDetails::default());
            s.llm.as_mut().unwrap().cost_usd = Some(1e308);
            raw.apply_span(None, &s);
        }
        assert!(raw.cost_usd.is_finite(), "{}", raw.cost_usd);
    }

    /// The row an older build wrote for the poisoned trace (`"cost_usd": null`) reads.
    #[test]
    fn a_stored_rollup_with_a_null_cost_reads_as_zero() {
        let r: crate::Rollups =
            serde_json::from_str(r#"{"span_count": 2, "cost_usd": null}"#).unwrap();
        assert_eq!((r.span_count, r.cost_usd), (2, 0.0));
    }

    /// Issue 15, failure 3.2: two spans of `input_tokens: 2^64-1` gave `total_tokens` 8.
    #[test]
    fn token_sums_of_two_spans_at_u64_max_do_not_wrap() {
        let huge = LlmDetails {
            input_tokens: Some(u64::MAX),
            output_tokens: Some(u64::MAX),
            ..Default::default()
        };
        let spans = [llm_span(1, huge.clone()), llm_span(2, huge)];
        assert_eq!(
            spans[0].llm.as_ref().unwrap().input_tokens,
            Some(MAX_SPAN_TOKENS)
        );
        let r = rollups_of(&spans);
        assert_eq!(r.input_tokens, 2 * MAX_SPAN_TOKENS);
        assert_eq!(r.total_tokens, 4 * MAX_SPAN_TOKENS);

        // Unclamped (as stored by an older build): the sum saturates.
        let mut raw = crate::Rollups::default();
        for n in 1..=2 {
            let mut s = llm_span(n, LlmDetails::default());
            let l = s.llm.as_mut().unwrap();
            l.input_tokens = Some(u64::MAX);
            l.output_tokens = Some(u64::MAX);
            raw.apply_span(None, &s);
        }
        assert_eq!(raw.input_tokens, u64::MAX);
        assert_eq!(raw.total_tokens, u64::MAX);
    }

    #[test]
    fn non_finite_or_negative_numbers_are_dropped_at_ingest() {
        for bad in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY, -1.0] {
            let s = llm_span(
                1,
                LlmDetails {
                    cost_usd: Some(bad),
                    ..Default::default()
                },
            );
            assert_eq!(s.llm.unwrap().cost_usd, None, "{bad}");
        }
        let input = SpanInput {
            retrieval: Some(crate::RetrievalDetails {
                documents: vec![
                    crate::Document {
                        score: Some(f64::NAN),
                        ..Default::default()
                    },
                    crate::Document {
                        score: Some(0.5),
                        ..Default::default()
                    },
                ],
                ..Default::default()
            }),
            ..SpanInput::new(sid(3))
        };
        let SpanChange::New(s) = start_span(None, input, Timestamp::from_unix_millis(1)) else {
            panic!("new")
        };
        let docs = s.retrieval.unwrap().documents;
        assert_eq!((docs[0].score, docs[1].score), (None, Some(0.5)));
    }

    #[test]
    fn a_started_span_runs_then_ends_with_merged_details() {
        let t0 = Timestamp::from_unix_millis(1_000);
        let start: EventInput = serde_json::from_value(serde_json::json!({
            "type": "span_started",
            "span": {"span_id": "00000000000000aa", "kind": "llm", "name": "chat",
                     "start_time": "1970-01-01T00:00:01Z",
                     "llm": {"model": "gpt-4o", "input_messages": [{"role": "user", "content": "hi"}]}}
        }))
        .unwrap();
        let EventInput::SpanStarted { span } = start else {
            panic!("wrong variant")
        };
        let SpanChange::New(running) = start_span(None, span.clone(), t0) else {
            panic!("expected new")
        };
        assert!(!running.is_ended());
        assert_eq!(start_span(Some(&running), span, t0), SpanChange::Duplicate);

        let end = SpanInput {
            end_time: Some(Timestamp::from_unix_millis(1_400)),
            status: Some(SpanStatus {
                code: StatusCode::Ok,
                message: None,
            }),
            llm: Some(LlmDetails {
                input_tokens: Some(12),
                output_tokens: Some(3),
                ..Default::default()
            }),
            ..SpanInput::new(sid(0xaa))
        };
        let SpanChange::Ended { previous, span } = end_span(Some(&running), end.clone(), t0) else {
            panic!("expected ended")
        };
        assert_eq!(previous, running);
        let llm = span.llm.as_ref().unwrap();
        assert_eq!(llm.model.as_deref(), Some("gpt-4o"), "kept from the start");
        assert_eq!(llm.input_messages.len(), 1, "kept from the start");
        assert_eq!(llm.output_tokens, Some(3));
        assert_eq!(span.duration().unwrap().as_millis(), 400);
        assert_eq!(
            end_span(Some(&span), end, t0),
            SpanChange::Duplicate,
            "retry"
        );
    }

    #[test]
    fn a_whole_span_not_seen_before_is_new_and_ended() {
        let now = Timestamp::from_unix_millis(5_000);
        let input = SpanInput {
            kind: Some(SpanKind::Tool),
            ..SpanInput::new(sid(1))
        };
        let SpanChange::New(s) = end_span(None, input, now) else {
            panic!()
        };
        assert_eq!(s.name, "tool");
        assert_eq!(s.end_time, Some(now));
    }

    #[test]
    fn new_trace_rejects_unknown_fields_and_bad_states() {
        assert!(serde_json::from_str::<NewTrace>(r#"{"nmae":"x"}"#).is_err());
        assert!(serde_json::from_str::<NewTrace>(r#"{"state":"running"}"#).is_err());
        let t: NewTrace = serde_json::from_str(r#"{"name":"x","level":"debug"}"#).unwrap();
        assert_eq!(t.level, Some(Level::Debug));
    }
}
