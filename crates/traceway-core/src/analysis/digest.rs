//! A trace's analysis in brief, kept on its row (`Rollups::analysis`) so that the analysis
//! across traces merges rows and never reads spans; and that merge. The figures are those
//! of [`analyze`](super::analyze), cut to the top few entries of each list (ADR 028).

use std::collections::HashMap;

use serde::de::{Deserializer, IgnoredAny, MapAccess, Visitor};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::Analysis;
use crate::model::{Span, SpanKind, SpanStatus};
use crate::{SpanId, Timestamp};

/// Entries a digest keeps of each list (components, span names, error groups).
pub const DIGEST_TOP: usize = 5;

/// The brief of one trace's analysis: its top components and span names by self time, and
/// its largest error groups.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct AnalysisDigest {
    /// The trace's `last_seq` when the digest was made: it describes the trace up to that
    /// event.
    pub at_seq: u64,
    /// Per component id (spans that name one), the most self time first.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub components: Vec<DigestTiming>,
    /// Per kind and span name, the most self time first.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub names: Vec<DigestTiming>,
    /// Error groups (kind, name, type, normalised message), the most frequent first.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub error_groups: Vec<DigestErrorGroup>,
    /// Components, names and error groups the trace had beyond those kept.
    #[serde(skip_serializing_if = "is_zero")]
    pub left_out: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// Time of one component or span name within a trace.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct DigestTiming {
    /// The component id, or the span name.
    pub key: String,
    /// The spans' kind (span names only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kind: Option<SpanKind>,
    /// Spans.
    pub calls: u64,
    /// Of which ended with status `error`.
    pub errors: u64,
    /// Self (exclusive) time, in ms.
    pub self_ms: f64,
    /// Sum of durations, in ms.
    pub total_ms: f64,
    /// Time on the critical path, in ms.
    pub critical_ms: f64,
}

/// One error group of a trace.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct DigestErrorGroup {
    /// The spans' kind (absent for error events tied to no span).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kind: Option<SpanKind>,
    /// The span name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The error type, when known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error_type: Option<String>,
    /// The normalised message.
    pub message: String,
    /// Occurrences.
    pub count: u64,
    /// A later span of the same kind and name succeeded.
    pub retried: bool,
}

/// The digest of an analysis, made when the trace's `last_seq` was `at_seq`.
pub fn digest(a: &Analysis, at_seq: u64) -> AnalysisDigest {
    let timing = |t: &super::TimingStats| DigestTiming {
        key: t.key.clone(),
        kind: t.kind,
        calls: t.calls,
        errors: t.errors,
        self_ms: t.self_ms,
        total_ms: t.total_ms,
        critical_ms: t.critical_ms,
    };
    let mut components: Vec<DigestTiming> = a.summary.components.iter().map(timing).collect();
    components.sort_by(|x, y| y.self_ms.total_cmp(&x.self_ms).then(x.key.cmp(&y.key)));
    // `summary.names` is already ordered by self time.
    let mut names: Vec<DigestTiming> = a.summary.names.iter().map(timing).collect();
    let mut error_groups: Vec<DigestErrorGroup> = a
        .error_groups
        .iter()
        .map(|g| DigestErrorGroup {
            kind: g.kind,
            name: g.name.clone(),
            error_type: g.error_type.clone(),
            message: g.message.clone(),
            count: g.count,
            retried: g.retry_succeeded.is_some(),
        })
        .collect();
    let all = (components.len() + names.len() + error_groups.len()) as u64;
    components.truncate(DIGEST_TOP);
    names.truncate(DIGEST_TOP);
    error_groups.truncate(DIGEST_TOP);
    let kept = (components.len() + names.len() + error_groups.len()) as u64;
    AnalysisDigest {
        at_seq,
        components,
        names,
        error_groups,
        left_out: all - kept,
    }
}

/// A component or span name over many traces: the sums of its per-trace figures.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Default, Serialize)]
pub struct CrossTiming {
    /// The component id, or the span name.
    pub key: String,
    /// The spans' kind (span names only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kind: Option<SpanKind>,
    /// Traces whose digest lists it.
    pub traces: u64,
    /// Spans.
    pub calls: u64,
    /// Of which ended with status `error`.
    pub errors: u64,
    /// Self time, in ms.
    pub self_ms: f64,
    /// Sum of durations, in ms.
    pub total_ms: f64,
    /// Time on the critical path, in ms.
    pub critical_ms: f64,
}

/// An error group over many traces.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Default, Serialize)]
pub struct CrossErrorGroup {
    /// The spans' kind.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kind: Option<SpanKind>,
    /// The span name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The error type.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error_type: Option<String>,
    /// The normalised message.
    pub message: String,
    /// Occurrences over all traces.
    pub count: u64,
    /// Traces it occurred in.
    pub traces: u64,
    /// Of which a later span of the same kind and name succeeded.
    pub retried_traces: u64,
}

type ErrorKey = (Option<SpanKind>, Option<String>, Option<String>, String);

/// Merges digests: add each trace's, then take the top entries.
#[derive(Debug, Default)]
pub struct Across {
    components: HashMap<String, CrossTiming>,
    names: HashMap<(Option<SpanKind>, String), CrossTiming>,
    errors: HashMap<ErrorKey, CrossErrorGroup>,
    digests: u64,
}

/// The merged figures: top components and span names by self time, top error groups by
/// count.
#[derive(Debug, Clone, PartialEq, Default, Serialize)]
pub struct AcrossTop {
    /// Digests merged.
    pub digests: u64,
    /// Components by self time.
    pub components: Vec<CrossTiming>,
    /// Span names (with their kind) by self time.
    pub names: Vec<CrossTiming>,
    /// Error groups by occurrences.
    pub error_groups: Vec<CrossErrorGroup>,
}

fn fold(into: &mut CrossTiming, t: &DigestTiming) {
    into.traces += 1;
    into.calls = into.calls.saturating_add(t.calls);
    into.errors = into.errors.saturating_add(t.errors);
    into.self_ms += t.self_ms;
    into.total_ms += t.total_ms;
    into.critical_ms += t.critical_ms;
}

impl Across {
    /// Adds one trace's digest.
    pub fn add(&mut self, d: &AnalysisDigest) {
        self.digests += 1;
        for t in &d.components {
            let e = self
                .components
                .entry(t.key.clone())
                .or_insert_with(|| CrossTiming {
                    key: t.key.clone(),
                    ..CrossTiming::default()
                });
            fold(e, t);
        }
        for t in &d.names {
            let e = self
                .names
                .entry((t.kind, t.key.clone()))
                .or_insert_with(|| CrossTiming {
                    key: t.key.clone(),
                    kind: t.kind,
                    ..CrossTiming::default()
                });
            fold(e, t);
        }
        for g in &d.error_groups {
            let key = (
                g.kind,
                g.name.clone(),
                g.error_type.clone(),
                g.message.clone(),
            );
            let e = self.errors.entry(key).or_insert_with(|| CrossErrorGroup {
                kind: g.kind,
                name: g.name.clone(),
                error_type: g.error_type.clone(),
                message: g.message.clone(),
                ..CrossErrorGroup::default()
            });
            e.count = e.count.saturating_add(g.count);
            e.traces += 1;
            e.retried_traces += u64::from(g.retried);
        }
    }

    /// The `top` entries of each list.
    pub fn top(self, top: usize) -> AcrossTop {
        let by_self = |a: &CrossTiming, b: &CrossTiming| {
            b.self_ms
                .total_cmp(&a.self_ms)
                .then(a.key.cmp(&b.key))
                .then(
                    a.kind
                        .map(SpanKind::as_str)
                        .cmp(&b.kind.map(SpanKind::as_str)),
                )
        };
        let mut components: Vec<CrossTiming> = self.components.into_values().collect();
        components.sort_by(by_self);
        components.truncate(top);
        let mut names: Vec<CrossTiming> = self.names.into_values().collect();
        names.sort_by(by_self);
        names.truncate(top);
        let mut error_groups: Vec<CrossErrorGroup> = self.errors.into_values().collect();
        error_groups.sort_by(|a, b| {
            b.count
                .cmp(&a.count)
                .then(b.traces.cmp(&a.traces))
                .then(a.message.cmp(&b.message))
                .then(a.name.cmp(&b.name))
        });
        error_groups.truncate(top);
        AcrossTop {
            digests: self.digests,
            components,
            names,
            error_groups,
        }
    }
}

/// The span of a stored `span_started` / `span_ended` event (`{"type": …, "payload":
/// span}`), cut to what [`digest`] reads of it: its ids, kind, name, component, times,
/// status and the error type among its attributes (`exception.type`, `error.type`).
/// Content, LLM, tool and retrieval details, other attributes and links are skipped
/// unread, which is most of a span's parse (ADR 028, the digest without a full read-back).
/// The digest of an analysis of cut spans is that of the whole spans (test
/// `a_digest_of_cut_spans_is_the_digest_of_whole_spans`); the rest of such an analysis is
/// not meaningful.
pub fn digest_span_of_event_json(body: &str) -> serde_json::Result<Span> {
    let CutEvent { payload: s } = serde_json::from_str(body)?;
    let mut span = Span::new(s.span_id, s.kind, s.name, s.start_time);
    span.parent_span_id = s.parent_span_id;
    span.component_id = s.component_id;
    span.end_time = s.end_time;
    span.status = s.status;
    span.attributes = s.attributes.0;
    Ok(span)
}

#[derive(Deserialize)]
struct CutEvent {
    payload: CutSpan,
}

#[derive(Deserialize)]
struct CutSpan {
    span_id: SpanId,
    #[serde(default)]
    parent_span_id: Option<SpanId>,
    #[serde(default)]
    kind: SpanKind,
    name: String,
    #[serde(default)]
    component_id: Option<String>,
    start_time: Timestamp,
    #[serde(default)]
    end_time: Option<Timestamp>,
    #[serde(default)]
    status: SpanStatus,
    #[serde(default)]
    attributes: ErrorTypeAttributes,
}

/// Of a span's attributes, only those the error groups read.
#[derive(Default)]
struct ErrorTypeAttributes(Map<String, Value>);

impl<'de> Deserialize<'de> for ErrorTypeAttributes {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<ErrorTypeAttributes, D::Error> {
        struct Keep;
        impl<'de> Visitor<'de> for Keep {
            type Value = ErrorTypeAttributes;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a map of attributes")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut m: A) -> Result<Self::Value, A::Error> {
                let mut out = Map::new();
                while let Some(key) = m.next_key::<AttributeKey>()? {
                    match key.0 {
                        Some(k) => {
                            out.insert(k.to_string(), m.next_value::<Value>()?);
                        }
                        None => {
                            m.next_value::<IgnoredAny>()?;
                        }
                    }
                }
                Ok(ErrorTypeAttributes(out))
            }
        }
        d.deserialize_map(Keep)
    }
}

/// An attribute key: one of the error type keys, or `None` for any other (not copied).
struct AttributeKey(Option<&'static str>);

impl<'de> Deserialize<'de> for AttributeKey {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<AttributeKey, D::Error> {
        struct Key;
        impl Visitor<'_> for Key {
            type Value = AttributeKey;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("an attribute key")
            }
            fn visit_str<E: serde::de::Error>(self, k: &str) -> Result<AttributeKey, E> {
                Ok(AttributeKey(
                    super::ERROR_TYPE_KEYS.iter().copied().find(|x| *x == k),
                ))
            }
        }
        d.deserialize_str(Key)
    }
}
