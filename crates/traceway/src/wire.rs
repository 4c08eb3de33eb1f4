//! The exporter's JSON for the native append, written straight from the recorded steps
//! (ADR 038).
//!
//! A step is serialised from its [`SpanData`] as the `SpanInput` the server reads, without
//! building one first (no copied names, no attribute map of `serde_json::Value`s), and
//! with its times as integer Unix nanoseconds, which the server reads without parsing a
//! date. `"type"` comes first in every event, the order in which the server decodes an
//! event without buffering it.

use serde::ser::{SerializeMap, SerializeSeq};
use serde::{Serialize, Serializer};
use traceway_core::{EventInput, StatusCode, TraceId};

use crate::span::{AttrValue, SpanData};

/// One event of a round, as the exporter keeps it until it is sent.
pub(crate) enum WireEvent {
    /// A step began (`span_started`).
    Started(Box<SpanData>),
    /// A step ended, or started and ended within the round (`span_ended`, the whole step).
    Ended(Box<SpanData>),
    /// A log or an error, as recorded (with its trace id).
    Other(Box<(TraceId, EventInput)>),
}

/// A slice of events with the tracer's service name, serialised as the `events` array.
pub(crate) struct Events<'a> {
    pub events: &'a [WireEvent],
    pub service: Option<&'a str>,
}

impl Serialize for Events<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut seq = s.serialize_seq(Some(self.events.len()))?;
        for e in self.events {
            match e {
                WireEvent::Started(d) => seq.serialize_element(&SpanEvent {
                    ty: "span_started",
                    span: d,
                    service: self.service,
                })?,
                WireEvent::Ended(d) => seq.serialize_element(&SpanEvent {
                    ty: "span_ended",
                    span: d,
                    service: self.service,
                })?,
                // serde's derive writes the tag first.
                WireEvent::Other(e) => seq.serialize_element(&e.1)?,
            }
        }
        seq.end()
    }
}

struct SpanEvent<'a> {
    ty: &'static str,
    span: &'a SpanData,
    service: Option<&'a str>,
}

impl Serialize for SpanEvent<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(Some(2))?;
        m.serialize_entry("type", self.ty)?;
        m.serialize_entry(
            "span",
            &WireSpan {
                d: self.span,
                service: self.service,
            },
        )?;
        m.end()
    }
}

/// The fields of `SpanInput` (`traceway_core::SpanData::to_input` makes the same span).
struct WireSpan<'a> {
    d: &'a SpanData,
    service: Option<&'a str>,
}

impl Serialize for WireSpan<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let d = self.d;
        let mut m = s.serialize_map(None)?;
        m.serialize_entry("span_id", &d.span_id)?;
        if let Some(p) = &d.parent {
            m.serialize_entry("parent_span_id", p)?;
        }
        m.serialize_entry("kind", &d.kind)?;
        m.serialize_entry("name", &*d.name)?;
        if let Some(c) = &d.component {
            m.serialize_entry("component_id", c)?;
        }
        if let Some(svc) = self.service {
            m.serialize_entry("service", svc)?;
        }
        m.serialize_entry("start_time", &d.start.unix_nanos())?;
        if let Some(end) = d.end {
            m.serialize_entry("end_time", &end.unix_nanos())?;
        }
        if d.status.code != StatusCode::Unset || d.status.message.is_some() {
            m.serialize_entry("status", &d.status)?;
        }
        if let Some(v) = &d.input {
            m.serialize_entry("input", v)?;
        }
        if let Some(v) = &d.output {
            m.serialize_entry("output", v)?;
        }
        if let Some(v) = &d.llm {
            m.serialize_entry("llm", v)?;
        }
        if let Some(v) = &d.tool {
            m.serialize_entry("tool", v)?;
        }
        if let Some(v) = &d.retrieval {
            m.serialize_entry("retrieval", v)?;
        }
        if !d.attributes.is_empty() {
            m.serialize_entry("attributes", &Attributes(&d.attributes))?;
        }
        if !d.links.is_empty() {
            m.serialize_entry("links", &d.links)?;
        }
        m.end()
    }
}

/// Attributes in the order they were set; a key set twice is written twice and the
/// server keeps the last, as `to_input`'s map does.
struct Attributes<'a>(&'a [(std::borrow::Cow<'static, str>, AttrValue)]);

impl Serialize for Attributes<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(Some(self.0.len()))?;
        for (k, v) in self.0 {
            match v {
                AttrValue::Str(v) => m.serialize_entry(&**k, &**v)?,
                AttrValue::I64(v) => m.serialize_entry(&**k, v)?,
                // As `serde_json::Value::from(f64)`: a non-finite float is null.
                AttrValue::F64(v) if v.is_finite() => m.serialize_entry(&**k, v)?,
                AttrValue::F64(_) => m.serialize_entry(&**k, &())?,
                AttrValue::Bool(v) => m.serialize_entry(&**k, v)?,
                AttrValue::Json(v) => m.serialize_entry(&**k, v)?,
            }
        }
        m.end()
    }
}

#[cfg(test)]
mod tests {
    use std::borrow::Cow;

    use serde_json::json;
    use traceway_core::{SpanId, SpanKind, SpanStatus, Timestamp};

    use super::*;

    fn data() -> SpanData {
        SpanData {
            trace_id: TraceId::from_u128(7).unwrap(),
            span_id: SpanId::from_u64(0xa1).unwrap(),
            parent: SpanId::from_u64(0xa0),
            trace_root: false,
            kind: SpanKind::Tool,
            name: Cow::Borrowed("lookup"),
            component: Some("search".into()),
            start: Timestamp::from_unix_nanos(1_763_719_200_123_456_789),
            end: Some(Timestamp::from_unix_nanos(1_763_719_200_223_456_789)),
            status: SpanStatus {
                code: StatusCode::Error,
                message: Some("boom".into()),
            },
            input: Some(json!({"q": "x"})),
            output: None,
            llm: None,
            tool: Some(Box::new(traceway_core::ToolDetails {
                name: Some("lookup".into()),
                ..Default::default()
            })),
            retrieval: None,
            attributes: vec![
                ("step".into(), AttrValue::I64(3)),
                ("ok".into(), AttrValue::Bool(true)),
                ("ratio".into(), AttrValue::F64(f64::NAN)),
                ("step".into(), AttrValue::I64(4)),
            ],
            links: Vec::new(),
        }
    }

    #[test]
    fn a_step_is_written_as_the_span_input_to_input_makes() {
        let d = data();
        let events = [
            WireEvent::Started(Box::new(d.clone())),
            WireEvent::Ended(Box::new(d.clone())),
        ];
        let text = serde_json::to_string(&Events {
            events: &events,
            service: Some("svc"),
        })
        .unwrap();
        assert!(
            text.starts_with(r#"[{"type":"span_started","span":{"#),
            "{text}"
        );
        // What the server decodes is what the tracer's own conversion makes.
        let decoded: Vec<EventInput> = serde_json::from_str(&text).unwrap();
        let want = d.to_input(Some("svc"));
        assert_eq!(
            decoded,
            [
                EventInput::SpanStarted { span: want.clone() },
                EventInput::SpanEnded { span: want }
            ]
        );
    }
}
