//! OTLP resource + scope + span → Traceway spans. See the module documentation of
//! [`crate::otlp`] for the table of attributes.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap, HashSet};

use opentelemetry_proto::tonic::common::v1::{any_value, InstrumentationScope, KeyValue};
use opentelemetry_proto::tonic::trace::v1::{span, status, Span as OtlpSpan};
use serde_json::{json, Map, Value};

use super::attrs::{
    as_count, as_json, as_number, as_text, as_text_ref, parse_json_or_string, to_json, to_json_map,
    Attrs,
};
use super::{
    ExportTraceServiceRequest, MapOptions, MappedBatch, MappedEvent, MappedSpan, MappedTrace,
    TraceHints,
};
use crate::id::{SpanId, TraceId};
use crate::model::{
    Document, ErrorRecord, Link, LlmDetails, LogRecord, Message, RetrievalDetails, Severity, Span,
    SpanKind, SpanStatus, StatusCode, ToolCall, ToolDetails,
};
use crate::time::Timestamp;

/// How many rejection reasons the message spells out; the rest are counted.
const MAX_REASONS: usize = 5;

const AGENT_KEYS: &[&str] = &["gen_ai.agent.name", "gen_ai.agent.id", "agent.name"];
const SESSION_KEYS: &[&str] = &["session.id", "gen_ai.conversation.id"];
const USER_KEYS: &[&str] = &["user.id"];

const MODEL_KEYS: &[&str] = &[
    "llm.response.model_name",
    "gen_ai.response.model",
    "llm.model_name",
    "llm.request.model_name",
    "gen_ai.request.model",
    "embedding.model_name",
];
const PROVIDER_KEYS: &[&str] = &[
    "gen_ai.provider.name",
    "llm.provider",
    "llm.system",
    "gen_ai.system",
];
const INPUT_TOKEN_KEYS: &[&str] = &[
    "llm.token_count.prompt",
    "gen_ai.usage.input_tokens",
    "gen_ai.usage.prompt_tokens",
];
const OUTPUT_TOKEN_KEYS: &[&str] = &[
    "llm.token_count.completion",
    "gen_ai.usage.output_tokens",
    "gen_ai.usage.completion_tokens",
];
const TOTAL_TOKEN_KEYS: &[&str] = &["llm.token_count.total", "gen_ai.usage.total_tokens"];
const CACHED_TOKEN_KEYS: &[&str] = &[
    "llm.token_count.prompt_details.cache_read",
    "gen_ai.usage.cache_read.input_tokens",
    "gen_ai.usage.cache_read_input_tokens",
];
const CACHE_WRITE_TOKEN_KEYS: &[&str] = &[
    "llm.token_count.prompt_details.cache_write",
    "gen_ai.usage.cache_creation.input_tokens",
    "gen_ai.usage.cache_creation_input_tokens",
];
const REASONING_TOKEN_KEYS: &[&str] = &[
    "llm.token_count.completion_details.reasoning",
    "gen_ai.usage.reasoning.output_tokens",
    "gen_ai.usage.reasoning_tokens",
];
const COST_KEYS: &[&str] = &["llm.cost.total"];

/// Maps an export request with the default options (mapped attributes not repeated).
pub fn map_request(req: &ExportTraceServiceRequest) -> MappedBatch {
    map_request_with(req, &MapOptions::default())
}

/// Maps an export request: every valid span becomes a [`MappedSpan`] in the trace it
/// belongs to; spans with an invalid trace, span or parent id are counted in
/// `rejected_spans` and the rest are kept.
pub fn map_request_with(req: &ExportTraceServiceRequest, opts: &MapOptions) -> MappedBatch {
    /// A mapped span before the batch decides whether it is a root.
    struct Pending<'a> {
        span: MappedSpan,
        hints: SpanHints<'a>,
        /// No remote-parent flags, OTLP kind server or consumer: a local root when its
        /// parent is not in the batch (ADR 020).
        legacy_entry: bool,
        /// Its resource, by index in the request.
        resource: usize,
    }
    let mut pending: Vec<(TraceId, Vec<Pending>)> = Vec::new();
    // Each resource's attributes as trace metadata, computed once per resource.
    let mut resource_metadata: Vec<BTreeMap<String, String>> = Vec::new();
    // Trace ids come from clients: a seeded foldhash, as for attribute keys (ADR 043).
    let mut by_id: HashMap<TraceId, usize, foldhash::fast::RandomState> = HashMap::default();
    let mut rejected: u64 = 0;
    let mut reasons: Vec<String> = Vec::new();

    for (ri, rs) in req.resource_spans.iter().enumerate() {
        let resource_kvs: &[KeyValue] = rs.resource.as_ref().map_or(&[], |r| &r.attributes);
        let resource = ResourceInfo::new(resource_kvs);
        resource_metadata.push(resource.metadata());
        for (si, ss) in rs.scope_spans.iter().enumerate() {
            for (pi, otlp) in ss.spans.iter().enumerate() {
                let (trace_id, span, hints, legacy_entry) =
                    match map_span(otlp, &resource, ss.scope.as_ref(), opts) {
                        Ok(m) => m,
                        Err(reason) => {
                            rejected += 1;
                            if reasons.len() < MAX_REASONS {
                                let at =
                                    format!("resourceSpans[{ri}].scopeSpans[{si}].spans[{pi}]");
                                reasons.push(format!("{at} ({:?}): {reason}", otlp.name));
                            }
                            continue;
                        }
                    };
                let i = *by_id.entry(trace_id).or_insert_with(|| {
                    pending.push((trace_id, Vec::new()));
                    pending.len() - 1
                });
                pending[i].1.push(Pending {
                    span,
                    hints,
                    legacy_entry,
                    resource: ri,
                });
            }
        }
    }

    let traces = pending
        .into_iter()
        .map(|(trace_id, mut spans)| {
            // Only spans that may be legacy entries need the trace's span ids.
            if spans.iter().any(|p| p.legacy_entry) {
                let ids: HashSet<SpanId, foldhash::fast::RandomState> =
                    spans.iter().map(|p| p.span.span.span_id).collect();
                for p in &mut spans {
                    if p.legacy_entry
                        && p.span
                            .span
                            .parent_span_id
                            .is_some_and(|parent| !ids.contains(&parent))
                    {
                        p.span.is_root = true;
                    }
                }
            }
            let mut trace = MappedTrace {
                trace_id,
                hints: TraceHints::default(),
                spans: Vec::with_capacity(spans.len()),
            };
            let mut resources: Vec<usize> = Vec::new();
            for p in spans {
                merge_hints(&mut trace.hints, p.hints, &p.span);
                trace.spans.push(p.span);
                if !resources.contains(&p.resource) {
                    resources.push(p.resource);
                }
            }
            // The spans' `metadata` entries win over resource attributes of the same name.
            for ri in resources {
                for (k, v) in &resource_metadata[ri] {
                    if !trace.hints.metadata.contains_key(k) {
                        trace.hints.metadata.insert(k.clone(), v.clone());
                    }
                }
            }
            if trace.hints.agent_id.is_none() {
                trace.hints.agent_id = trace
                    .spans
                    .iter()
                    .find(|s| s.is_root && s.span.kind == SpanKind::Agent)
                    .map(|s| s.span.name.clone());
            }
            trace
        })
        .collect();

    let rejection_message = (rejected > 0).then(|| {
        let mut msg = format!("rejected {rejected} span(s): {}", reasons.join("; "));
        let unnamed = rejected - reasons.len() as u64;
        if unnamed > 0 {
            msg.push_str(&format!("; and {unnamed} more"));
        }
        msg
    });
    MappedBatch {
        traces,
        rejected_spans: rejected,
        rejection_message,
    }
}

/// A root span's hints win; other spans only fill what is still unknown.
/// A span's hints are borrowed from the request and copied only when they are taken.
fn merge_hints(into: &mut TraceHints, from: SpanHints<'_>, span: &MappedSpan) {
    fn merge(slot: &mut Option<String>, v: Option<Cow<'_, str>>, root: bool) {
        if let Some(v) = v {
            if root || slot.is_none() {
                *slot = Some(v.into_owned());
            }
        }
    }
    let root = span.is_root;
    merge(&mut into.agent_id, from.agent_id, root);
    merge(&mut into.session_id, from.session_id, root);
    merge(&mut into.user_id, from.user_id, root);
    merge(&mut into.service, from.service, root);
    for (k, v) in from.metadata {
        if root || !into.metadata.contains_key(&k) {
            into.metadata.insert(k, v);
        }
    }
    if root && into.name.is_none() {
        into.name = Some(span.span.name.clone());
    }
}

/// At most this many resource attributes and `metadata` entries go to a trace's metadata.
const MAX_METADATA_ENTRIES: usize = 64;
/// Each metadata value taken from OTLP is cut at this many bytes.
const MAX_METADATA_VALUE_BYTES: usize = 1024;

/// A JSON value as a metadata string: strings as they are, the rest as JSON text, cut at
/// [`MAX_METADATA_VALUE_BYTES`].
fn metadata_value(v: &Value) -> String {
    let mut s = match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    crate::level::truncate_string(&mut s, MAX_METADATA_VALUE_BYTES);
    s
}

/// What a span says about its trace's metadata: the OpenInference `metadata` attribute (a
/// JSON object, or an OTLP key-value list) merged key by key, and `tag.tags` as JSON text.
fn span_metadata(attrs: &Attrs<'_>, into: &mut BTreeMap<String, String>) {
    if let Some(Value::Object(m)) = attrs.get("metadata").map(as_json) {
        for (k, v) in m.iter().take(MAX_METADATA_ENTRIES) {
            into.insert(k.clone(), metadata_value(v));
        }
    }
    if let Some(v) = attrs.get("tag.tags") {
        let tags = match as_json(v) {
            Value::String(s) => Value::Array(vec![Value::String(s)]),
            other => other,
        };
        into.insert("tag.tags".to_string(), metadata_value(&tags));
    }
}

/// What a resource contributes to each of its spans.
struct ResourceInfo<'a> {
    kvs: &'a [KeyValue],
    service: Option<Cow<'a, str>>,
    agent: Option<Cow<'a, str>>,
    session: Option<Cow<'a, str>>,
    user: Option<Cow<'a, str>>,
}

/// What one span says about its trace ([`TraceHints`] before they are merged), borrowing
/// the request's strings.
struct SpanHints<'a> {
    metadata: BTreeMap<String, String>,
    agent_id: Option<Cow<'a, str>>,
    session_id: Option<Cow<'a, str>>,
    user_id: Option<Cow<'a, str>>,
    service: Option<Cow<'a, str>>,
}

impl<'a> ResourceInfo<'a> {
    fn new(kvs: &'a [KeyValue]) -> ResourceInfo<'a> {
        let a = Attrs::new(kvs);
        ResourceInfo {
            kvs,
            service: a.peek_first(&["service.name"], as_text_ref),
            agent: a.peek_first(AGENT_KEYS, as_text_ref),
            session: a.peek_first(SESSION_KEYS, as_text_ref),
            user: a.peek_first(USER_KEYS, as_text_ref),
        }
    }
}

impl ResourceInfo<'_> {
    /// Every attribute (at most [`MAX_METADATA_ENTRIES`]), for the trace's metadata.
    fn metadata(&self) -> BTreeMap<String, String> {
        to_json_map(self.kvs)
            .iter()
            .take(MAX_METADATA_ENTRIES)
            .map(|(k, v)| (k.clone(), metadata_value(v)))
            .collect()
    }
}

fn trace_id_of(bytes: &[u8]) -> Result<TraceId, String> {
    let arr: [u8; 16] = bytes
        .try_into()
        .map_err(|_| format!("trace id has {} bytes, expected 16", bytes.len()))?;
    TraceId::from_bytes(arr).ok_or_else(|| "trace id is all zeros".to_string())
}

fn span_id_of(bytes: &[u8], what: &str) -> Result<Option<SpanId>, String> {
    let arr: [u8; 8] = bytes
        .try_into()
        .map_err(|_| format!("{what} has {} bytes, expected 8", bytes.len()))?;
    Ok(SpanId::from_bytes(arr))
}

fn timestamp(nanos: u64) -> Timestamp {
    Timestamp::from_unix_nanos(i64::try_from(nanos).unwrap_or(i64::MAX))
}

fn map_span<'a>(
    otlp: &'a OtlpSpan,
    resource: &ResourceInfo<'a>,
    scope: Option<&InstrumentationScope>,
    opts: &MapOptions,
) -> Result<(TraceId, MappedSpan, SpanHints<'a>, bool), String> {
    let trace_id = trace_id_of(&otlp.trace_id)?;
    let span_id = span_id_of(&otlp.span_id, "span id")?.ok_or("span id is all zeros")?;
    // Empty means root; eight zero bytes are read as "no parent" too.
    let parent = if otlp.parent_span_id.is_empty() {
        None
    } else {
        span_id_of(&otlp.parent_span_id, "parent span id")?
    };

    let mut attrs = Attrs::new(&otlp.attributes);
    let kind = detect_kind(&mut attrs);

    let end_nanos = otlp.end_time_unix_nano;
    let start_nanos = match otlp.start_time_unix_nano {
        0 => end_nanos,
        s => s,
    };
    let start = timestamp(start_nanos);
    let name = if otlp.name.is_empty() {
        kind.as_str().to_string()
    } else {
        otlp.name.clone()
    };
    let mut span = Span::new(span_id, kind, name, start);
    span.parent_span_id = parent;
    span.end_time = Some(timestamp(end_nanos).max(start));
    span.service = resource.service.as_deref().map(str::to_string);
    span.component_id = attrs.take("traceway.component_id", as_text);
    span.status = map_status(otlp.status.as_ref());

    let mut metadata = BTreeMap::new();
    span_metadata(&attrs, &mut metadata);
    let hints = SpanHints {
        metadata,
        agent_id: attrs
            .peek_first(AGENT_KEYS, as_text_ref)
            .or_else(|| resource.agent.clone()),
        session_id: attrs
            .peek_first(SESSION_KEYS, as_text_ref)
            .or_else(|| resource.session.clone()),
        user_id: attrs
            .peek_first(USER_KEYS, as_text_ref)
            .or_else(|| resource.user.clone()),
        service: resource.service.clone(),
    };

    let mut input = take_io(&mut attrs, "input.value", "input.mime_type");
    let mut output = take_io(&mut attrs, "output.value", "output.mime_type");
    match kind {
        SpanKind::Llm => {
            let llm = llm_details(&mut attrs);
            span.llm = (llm != LlmDetails::default()).then_some(llm);
        }
        SpanKind::Embedding => {
            let llm = llm_details(&mut attrs);
            span.llm = (llm != LlmDetails::default()).then_some(llm);
            if let Some(embeddings) = embeddings(&mut attrs) {
                // The vectors are stored once: here, not again as the raw response.
                if output.is_some() {
                    attrs.drop_key("output.value");
                }
                output = Some(Io {
                    raw: None,
                    value: embeddings,
                });
            }
        }
        SpanKind::Agent | SpanKind::Chain => {
            // An agent or workflow span of the GenAI conventions carries its conversation
            // as messages; they are its input and output when `input.value` is absent.
            if input.is_none() {
                input = genai_messages(&mut attrs, "gen_ai.input.messages", "user").map(|m| Io {
                    raw: None,
                    value: serde_json::to_value(m).unwrap_or(Value::Null),
                });
            }
            if output.is_none() {
                output =
                    genai_messages(&mut attrs, "gen_ai.output.messages", "assistant").map(|m| Io {
                        raw: None,
                        value: serde_json::to_value(m).unwrap_or(Value::Null),
                    });
            }
        }
        SpanKind::Tool => {
            let tool = tool_details(&mut attrs, &mut input, &mut output);
            span.tool = (tool != ToolDetails::default()).then_some(tool);
        }
        SpanKind::Retriever | SpanKind::Reranker => {
            let r = retrieval_details(&mut attrs, kind, &mut input);
            span.retrieval = (r != RetrievalDetails::default()).then_some(r);
        }
        _ => {}
    }
    span.input = input.map(|io| io.value);
    span.output = output.map(|io| io.value);

    let (errors, logs) = map_events(&otlp.events, span_id, start);
    span.links = otlp.links.iter().filter_map(map_link).collect();

    let keep_all = opts.keep_mapped_attributes;
    let mut attributes = attrs.to_json_map(keep_all);
    add_otel_fields(&mut attributes, otlp, scope);
    if keep_all {
        for (k, v) in to_json_map(resource.kvs) {
            attributes.entry(format!("resource.{k}")).or_insert(v);
        }
    }
    span.attributes = attributes;

    // The remote-parent flags (OTLP 1.2+): bit 8 says the SDK knows, bit 9 that the parent
    // is in another process. A span with a remote parent is its service's local root.
    let flags_known = otlp.flags & SPAN_FLAGS_CONTEXT_HAS_IS_REMOTE != 0;
    let parent_remote = flags_known && otlp.flags & SPAN_FLAGS_CONTEXT_IS_REMOTE != 0;
    let is_root = parent.is_none() || parent_remote;
    let entry_kind = matches!(
        span::SpanKind::try_from(otlp.kind),
        Ok(span::SpanKind::Server | span::SpanKind::Consumer)
    );
    let legacy_entry = parent.is_some() && !flags_known && entry_kind;
    Ok((
        trace_id,
        MappedSpan {
            span,
            errors,
            logs,
            is_root,
        },
        hints,
        legacy_entry,
    ))
}

/// `Span.flags` bit: whether the SDK says if the parent is remote.
const SPAN_FLAGS_CONTEXT_HAS_IS_REMOTE: u32 = 0x100;
/// `Span.flags` bit: the parent is remote.
const SPAN_FLAGS_CONTEXT_IS_REMOTE: u32 = 0x200;

/// OpenInference `embedding.embeddings.N.embedding.{text,vector}` as
/// `[{"text": …, "vector": [...]}]`; the attributes are dropped (even at `debug`) so the
/// vectors are stored once.
fn embeddings(attrs: &mut Attrs<'_>) -> Option<Value> {
    let mut out = Vec::new();
    for (_, fields) in attrs.indexed("embedding.embeddings") {
        let mut item = Map::new();
        for &(suffix, key) in &fields {
            let name = match suffix {
                "embedding.text" => "text",
                "embedding.vector" => "vector",
                _ => continue,
            };
            let Some(v) = attrs.get(key) else { continue };
            item.insert(name.into(), as_json(v));
            attrs.drop_key(key);
        }
        if !item.is_empty() {
            out.push(Value::Object(item));
        }
    }
    (!out.is_empty()).then_some(Value::Array(out))
}

fn map_status(s: Option<&opentelemetry_proto::tonic::trace::v1::Status>) -> SpanStatus {
    let Some(s) = s else {
        return SpanStatus::default();
    };
    let code = match status::StatusCode::try_from(s.code) {
        Ok(status::StatusCode::Error) => StatusCode::Error,
        Ok(status::StatusCode::Ok) => StatusCode::Ok,
        _ => StatusCode::Unset,
    };
    SpanStatus {
        code,
        message: (!s.message.is_empty()).then(|| s.message.clone()),
    }
}

/// The kind, marking the attribute that decided it. The names are compared without
/// regard to ASCII case, in place (no lower- or upper-cased copy per span).
fn detect_kind(attrs: &mut Attrs<'_>) -> SpanKind {
    /// The value of a kind attribute as the entry of `table` it names, ignoring case.
    fn named(table: &[(&str, SpanKind)], v: &any_value::Value) -> Option<SpanKind> {
        let any_value::Value::StringValue(s) = v else {
            return None;
        };
        table
            .iter()
            .find(|(name, _)| name.eq_ignore_ascii_case(s))
            .map(|&(_, k)| k)
    }
    const OPENINFERENCE: &[(&str, SpanKind)] = &[
        ("AGENT", SpanKind::Agent),
        ("CHAIN", SpanKind::Chain),
        ("LLM", SpanKind::Llm),
        ("TOOL", SpanKind::Tool),
        ("RETRIEVER", SpanKind::Retriever),
        ("EMBEDDING", SpanKind::Embedding),
        ("RERANKER", SpanKind::Reranker),
        ("GUARDRAIL", SpanKind::Guardrail),
        ("PROMPT", SpanKind::Prompt),
        ("EVALUATOR", SpanKind::Evaluator),
        ("DECISION", SpanKind::Decision),
        ("UNKNOWN", SpanKind::Other),
    ];
    const GENAI_OPERATIONS: &[(&str, SpanKind)] = &[
        ("chat", SpanKind::Llm),
        ("text_completion", SpanKind::Llm),
        ("generate_content", SpanKind::Llm),
        ("execute_tool", SpanKind::Tool),
        ("invoke_agent", SpanKind::Agent),
        ("create_agent", SpanKind::Agent),
        ("embeddings", SpanKind::Embedding),
        ("retrieval", SpanKind::Retriever),
        ("invoke_workflow", SpanKind::Chain),
    ];
    if let Some(k) = attrs.take("traceway.span.kind", |v| match v {
        any_value::Value::StringValue(s) => SpanKind::ALL
            .into_iter()
            .find(|k| k.as_str().eq_ignore_ascii_case(s)),
        _ => None,
    }) {
        return k;
    }
    if let Some(k) = attrs.take("openinference.span.kind", |v| named(OPENINFERENCE, v)) {
        return k;
    }
    if let Some(k) = attrs.take("gen_ai.operation.name", |v| named(GENAI_OPERATIONS, v)) {
        return k;
    }
    // Instrumentations older than `gen_ai.operation.name` mark an LLM call only by its model.
    let model_keys = [
        "llm.model_name",
        "gen_ai.request.model",
        "gen_ai.response.model",
    ];
    if attrs.peek_first(&model_keys, as_text_ref).is_some() {
        return SpanKind::Llm;
    }
    SpanKind::Other
}

/// `input.value` or `output.value` as it came (`raw`, for a retrieval query) and as the JSON
/// the span stores. `raw` borrows the request: only a retrieval span keeps it (as its
/// query), so the text is copied once, into `value`, for every other span.
struct Io<'a> {
    raw: Option<&'a str>,
    value: Value,
}

fn take_io<'a>(attrs: &mut Attrs<'a>, value_key: &str, mime_key: &str) -> Option<Io<'a>> {
    let v = attrs.take_value(value_key)?;
    let is_json = attrs.take(mime_key, |m| match m {
        any_value::Value::StringValue(s) => Some(is_json_mime(s)),
        _ => None,
    });
    Some(match v {
        any_value::Value::StringValue(s) => Io {
            raw: Some(s.as_str()),
            value: if is_json == Some(true) {
                parse_json_or_string(s)
            } else {
                Value::String(s.clone())
            },
        },
        other => Io {
            raw: None,
            value: to_json(Some(other)),
        },
    })
}

fn is_json_mime(mime: &str) -> bool {
    let media = mime.split(';').next().unwrap_or("").trim().as_bytes();
    media.eq_ignore_ascii_case(b"application/json")
        || (media.len() >= 5 && media[media.len() - 5..].eq_ignore_ascii_case(b"+json"))
}

fn llm_details(attrs: &mut Attrs<'_>) -> LlmDetails {
    LlmDetails {
        provider: attrs.take_first(PROVIDER_KEYS, as_text),
        model: attrs.take_first(MODEL_KEYS, as_text),
        input_tokens: attrs.take_first(INPUT_TOKEN_KEYS, as_count),
        output_tokens: attrs.take_first(OUTPUT_TOKEN_KEYS, as_count),
        total_tokens: attrs.take_first(TOTAL_TOKEN_KEYS, as_count),
        cached_tokens: attrs.take_first(CACHED_TOKEN_KEYS, as_count),
        reasoning_tokens: attrs.take_first(REASONING_TOKEN_KEYS, as_count),
        cost_usd: attrs.take_first(COST_KEYS, as_number),
        cache_write_tokens: attrs.take_first(CACHE_WRITE_TOKEN_KEYS, as_count),
        cost_source: None,
        price_table: None,
        input_messages: input_messages(attrs),
        output_messages: output_messages(attrs),
    }
}

fn input_messages(attrs: &mut Attrs<'_>) -> Vec<Message> {
    let oi = openinference_messages(attrs, "llm.input_messages", "user");
    if !oi.is_empty() {
        return oi;
    }
    if let Some(mut msgs) = genai_messages(attrs, "gen_ai.input.messages", "user") {
        if let Some(system) = system_instructions(attrs) {
            msgs.insert(0, system);
        }
        return msgs;
    }
    if let Some(system) = system_instructions(attrs) {
        return vec![system];
    }
    legacy_messages(attrs, "gen_ai.prompt", "user")
}

fn output_messages(attrs: &mut Attrs<'_>) -> Vec<Message> {
    let oi = openinference_messages(attrs, "llm.output_messages", "assistant");
    if !oi.is_empty() {
        return oi;
    }
    if let Some(msgs) = genai_messages(attrs, "gen_ai.output.messages", "assistant") {
        return msgs;
    }
    legacy_messages(attrs, "gen_ai.completion", "assistant")
}

/// `prefix.N.message.role` / `.content` (without `content`, the text items of
/// `.contents.M.message_content.*`), `.name`, `.tool_call_id`, and the
/// `.tool_calls.K.tool_call.{id,function.name,function.arguments}`. Keys not used stay in the
/// attributes.
fn openinference_messages(attrs: &mut Attrs<'_>, prefix: &str, default_role: &str) -> Vec<Message> {
    let mut out = Vec::new();
    for (_, fields) in attrs.indexed(prefix) {
        let find = |name: &str| fields.iter().find(|(s, _)| *s == name).map(|&(_, k)| k);
        let mut used: Vec<&str> = Vec::new();
        let mut text_of = |name: &str| {
            let k = find(name)?;
            let r = attrs.get(k).and_then(as_text)?;
            used.push(k);
            Some(r)
        };
        let role = text_of("message.role");
        let name = text_of("message.name");
        let tool_call_id = text_of("message.tool_call_id");
        let mut content = find("message.content").and_then(|k| {
            let c = match attrs.get(k)? {
                any_value::Value::StringValue(s) => s.clone(),
                other => to_json(Some(other)).to_string(),
            };
            used.push(k);
            Some(c)
        });
        if content.is_none() {
            content = content_items(attrs, &fields, &mut used);
        }
        let tool_calls = tool_calls(attrs, &fields, &mut used);
        if used.is_empty() {
            continue;
        }
        for k in used {
            attrs.mark(k);
        }
        out.push(Message {
            role: role.unwrap_or_else(|| default_role.to_string()),
            content,
            tool_calls,
            tool_call_id,
            name,
        });
    }
    out
}

/// Groups `name.M.rest` fields of one message by `M`.
fn sub_indexed<'k>(
    fields: &[(&'k str, &'k str)],
    name: &str,
) -> Vec<(usize, Vec<(&'k str, &'k str)>)> {
    let mut groups: std::collections::BTreeMap<usize, Vec<(&'k str, &'k str)>> =
        std::collections::BTreeMap::new();
    for &(suffix, key) in fields {
        let Some(rest) = suffix.strip_prefix(name).and_then(|r| r.strip_prefix('.')) else {
            continue;
        };
        let Some((n, field)) = rest.split_once('.') else {
            continue;
        };
        if let Ok(n) = n.parse::<usize>() {
            groups.entry(n).or_default().push((field, key));
        }
    }
    groups.into_iter().collect()
}

fn content_items<'k>(
    attrs: &Attrs<'_>,
    fields: &[(&'k str, &'k str)],
    used: &mut Vec<&'k str>,
) -> Option<String> {
    let mut texts = Vec::new();
    for (_, item) in sub_indexed(fields, "message.contents") {
        let find = |name: &str| item.iter().find(|(s, _)| *s == name).map(|&(_, k)| k);
        let type_key = find("message_content.type");
        let ty = type_key.and_then(|k| attrs.get(k)).and_then(as_text);
        if ty.as_deref().is_some_and(|t| t != "text") {
            continue;
        }
        let Some(text_key) = find("message_content.text") else {
            continue;
        };
        let Some(any_value::Value::StringValue(text)) = attrs.get(text_key) else {
            continue;
        };
        texts.push(text.clone());
        used.push(text_key);
        used.extend(type_key);
    }
    (!texts.is_empty()).then(|| texts.join("\n"))
}

fn tool_calls<'k>(
    attrs: &Attrs<'_>,
    fields: &[(&'k str, &'k str)],
    used: &mut Vec<&'k str>,
) -> Vec<ToolCall> {
    let mut calls = Vec::new();
    for (_, call) in sub_indexed(fields, "message.tool_calls") {
        let find = |name: &str| call.iter().find(|(s, _)| *s == name).map(|&(_, k)| k);
        let mut tc = ToolCall::default();
        if let Some(k) = find("tool_call.id") {
            tc.id = attrs.get(k).and_then(as_text);
            used.extend(tc.id.is_some().then_some(k));
        }
        if let Some(k) = find("tool_call.function.name") {
            tc.name = attrs.get(k).and_then(as_text);
            used.extend(tc.name.is_some().then_some(k));
        }
        if let Some(k) = find("tool_call.function.arguments") {
            tc.arguments = attrs.get(k).map(as_json);
            used.extend(tc.arguments.is_some().then_some(k));
        }
        if tc != ToolCall::default() {
            calls.push(tc);
        }
    }
    calls
}

/// `gen_ai.input.messages` / `gen_ai.output.messages`: a JSON string (or an OTLP array) of
/// `{role, parts: [{type, content, …}]}`. `None` when absent or not in that shape (the
/// attribute then stays).
fn genai_messages(attrs: &mut Attrs<'_>, key: &str, default_role: &str) -> Option<Vec<Message>> {
    let msgs = genai_messages_of(&as_json(attrs.get(key)?), default_role)?;
    attrs.mark(key);
    Some(msgs)
}

/// Messages in the GenAI shape, `[{role, parts | content, name?}]`; `None` when `v` is not
/// in that shape.
pub(crate) fn genai_messages_of(v: &Value, default_role: &str) -> Option<Vec<Message>> {
    let Value::Array(items) = v else {
        return None;
    };
    items
        .iter()
        .map(|item| genai_message(item, default_role))
        .collect()
}

/// One message in the GenAI shape: `{role, parts: [...]}`, or the older event body
/// `{role, content, tool_calls: [{id, function: {name, arguments}}], id}`.
pub(crate) fn genai_message(item: &Value, default_role: &str) -> Option<Message> {
    let Value::Object(m) = item else { return None };
    let mut msg = Message {
        role: m
            .get("role")
            .and_then(Value::as_str)
            .unwrap_or(default_role)
            .to_string(),
        name: m.get("name").and_then(Value::as_str).map(str::to_string),
        ..Message::default()
    };
    match (m.get("parts"), m.get("content")) {
        (Some(Value::Array(parts)), _) => fill_from_parts(&mut msg, parts),
        (_, Some(Value::String(s))) => msg.content = Some(s.clone()),
        (_, Some(other)) if !other.is_null() => msg.content = Some(other.to_string()),
        _ => {}
    }
    if let Some(Value::Array(calls)) = m.get("tool_calls") {
        for c in calls {
            let f = c.get("function");
            msg.tool_calls.push(ToolCall {
                id: c.get("id").and_then(Value::as_str).map(str::to_string),
                name: f
                    .and_then(|f| f.get("name"))
                    .and_then(Value::as_str)
                    .map(str::to_string),
                arguments: f.and_then(|f| f.get("arguments")).map(json_or_string_value),
            });
        }
    }
    if msg.tool_call_id.is_none() && msg.role == "tool" {
        msg.tool_call_id = m.get("id").and_then(Value::as_str).map(str::to_string);
    }
    Some(msg)
}

/// A JSON string holding JSON is parsed; anything else is kept.
fn json_or_string_value(v: &Value) -> Value {
    match v {
        Value::String(s) => parse_json_or_string(s),
        other => other.clone(),
    }
}

/// The parts of a GenAI message: text parts joined by new lines, `tool_call` parts as tool
/// calls, a `tool_call_response` as the id it answers and its response as the content. A
/// message with other parts only (media) keeps them as JSON text.
fn fill_from_parts(msg: &mut Message, parts: &[Value]) {
    let mut texts: Vec<String> = Vec::new();
    let mut other = false;
    for p in parts {
        match p.get("type").and_then(Value::as_str) {
            Some("text") => {
                if let Some(t) = p.get("content").and_then(Value::as_str) {
                    texts.push(t.to_string());
                }
            }
            Some("tool_call") => msg.tool_calls.push(ToolCall {
                id: p.get("id").and_then(Value::as_str).map(str::to_string),
                name: p.get("name").and_then(Value::as_str).map(str::to_string),
                arguments: p.get("arguments").map(json_or_string_value),
            }),
            Some("tool_call_response") => {
                msg.tool_call_id = p.get("id").and_then(Value::as_str).map(str::to_string);
                match p.get("response").or_else(|| p.get("result")) {
                    Some(Value::String(s)) => texts.push(s.clone()),
                    Some(v) if !v.is_null() => texts.push(v.to_string()),
                    _ => {}
                }
            }
            _ => other = true,
        }
    }
    if !texts.is_empty() {
        msg.content = Some(texts.join("\n"));
    } else if other {
        msg.content = Some(Value::Array(parts.to_vec()).to_string());
    }
}

/// The text parts joined by new lines; parts without text are kept as JSON text.
fn parts_text(parts: &[Value]) -> Option<String> {
    let mut m = Message::default();
    fill_from_parts(&mut m, parts);
    m.content
}

/// `gen_ai.system_instructions` (JSON parts, or plain text) as a system message.
fn system_instructions(attrs: &mut Attrs<'_>) -> Option<Message> {
    let key = "gen_ai.system_instructions";
    let content = match as_json(attrs.get(key)?) {
        Value::Array(parts) => parts_text(&parts),
        Value::String(s) => Some(s),
        _ => None,
    }?;
    attrs.mark(key);
    Some(Message {
        role: "system".into(),
        content: Some(content),
        ..Message::default()
    })
}

/// The GenAI conventions before structured messages: `gen_ai.prompt.N.role` / `.content`
/// (as OpenLLMetry writes them) or one `gen_ai.prompt` string (a JSON list of
/// `{role, content}`, or plain text).
fn legacy_messages(attrs: &mut Attrs<'_>, prefix: &str, default_role: &str) -> Vec<Message> {
    let mut out = Vec::new();
    for (_, fields) in attrs.indexed(prefix) {
        let role_key = fields.iter().find(|(s, _)| *s == "role").map(|&(_, k)| k);
        let content_key = fields
            .iter()
            .find(|(s, _)| *s == "content")
            .map(|&(_, k)| k);
        let role = role_key.and_then(|k| attrs.get(k)).and_then(as_text);
        let content = content_key.and_then(|k| match attrs.get(k)? {
            any_value::Value::StringValue(s) => Some(s.clone()),
            other => Some(to_json(Some(other)).to_string()),
        });
        if role.is_none() && content.is_none() {
            continue;
        }
        for k in role_key.into_iter().chain(content_key) {
            attrs.mark(k);
        }
        out.push(Message {
            role: role.unwrap_or_else(|| default_role.to_string()),
            content,
            ..Message::default()
        });
    }
    if !out.is_empty() {
        return out;
    }
    let Some(any_value::Value::StringValue(s)) = attrs.get(prefix) else {
        return out;
    };
    let parsed: Option<Vec<Message>> = match serde_json::from_str::<Value>(s) {
        Ok(Value::Array(items)) => items
            .iter()
            .map(|m| {
                let role = m.get("role")?.as_str()?.to_string();
                let content = m.get("content").map(|c| match c {
                    Value::String(s) => s.clone(),
                    other => other.to_string(),
                });
                Some(Message {
                    role,
                    content,
                    ..Message::default()
                })
            })
            .collect(),
        _ => None,
    };
    attrs.mark(prefix);
    parsed.unwrap_or_else(|| {
        vec![Message {
            role: default_role.to_string(),
            content: Some(s.clone()),
            ..Message::default()
        }]
    })
}

fn tool_details(
    attrs: &mut Attrs<'_>,
    input: &mut Option<Io<'_>>,
    output: &mut Option<Io<'_>>,
) -> ToolDetails {
    let name = attrs.take_first(&["tool.name", "gen_ai.tool.name"], as_text);
    let arguments = attrs
        .take("gen_ai.tool.call.arguments", |v| Some(as_json(v)))
        .or_else(|| input.take().map(|io| io.value));
    let result = attrs
        .take("gen_ai.tool.call.result", |v| Some(as_json(v)))
        .or_else(|| output.take().map(|io| io.value));
    // OpenInference's `tool.parameters` is the tool's JSON schema, not the call's arguments.
    let schema = attrs.take("tool.parameters", |v| Some(as_json(v)));
    ToolDetails {
        name,
        arguments,
        result,
        schema,
    }
}

fn retrieval_details(
    attrs: &mut Attrs<'_>,
    kind: SpanKind,
    input: &mut Option<Io<'_>>,
) -> RetrievalDetails {
    let (docs_prefix, query_key) = match kind {
        SpanKind::Reranker => ("reranker.output_documents", "reranker.query"),
        _ => ("retrieval.documents", "gen_ai.retrieval.query.text"),
    };
    let query = attrs
        .take(query_key, as_text)
        .or_else(|| match input.take() {
            Some(Io { raw: Some(raw), .. }) => Some(raw.to_string()),
            Some(Io { raw: None, value }) => Some(value.to_string()),
            None => None,
        });
    let mut documents = openinference_documents(attrs, docs_prefix);
    if documents.is_empty() && kind == SpanKind::Retriever {
        documents = genai_documents(attrs).unwrap_or_default();
    }
    RetrievalDetails { query, documents }
}

fn openinference_documents(attrs: &mut Attrs<'_>, prefix: &str) -> Vec<Document> {
    let mut out = Vec::new();
    for (_, fields) in attrs.indexed(prefix) {
        let mut doc = Document::default();
        let mut used = Vec::new();
        for &(suffix, key) in &fields {
            let Some(v) = attrs.get(key) else { continue };
            let ok = match suffix {
                "document.id" => {
                    doc.id = as_text(v);
                    doc.id.is_some()
                }
                "document.score" => {
                    doc.score = as_number(v);
                    doc.score.is_some()
                }
                "document.content" => {
                    doc.content = match v {
                        any_value::Value::StringValue(s) => Some(s.clone()),
                        _ => None,
                    };
                    doc.content.is_some()
                }
                "document.metadata" => {
                    doc.metadata = Some(as_json(v));
                    true
                }
                _ => false,
            };
            if ok {
                used.push(key);
            }
        }
        if used.is_empty() {
            continue;
        }
        for k in used {
            attrs.mark(k);
        }
        out.push(doc);
    }
    out
}

/// `gen_ai.retrieval.documents`: JSON (or an OTLP array) of `{id, score, …}`.
fn genai_documents(attrs: &mut Attrs<'_>) -> Option<Vec<Document>> {
    let key = "gen_ai.retrieval.documents";
    let Value::Array(items) = as_json(attrs.get(key)?) else {
        return None;
    };
    let docs = items
        .iter()
        .map(|d| {
            let Value::Object(m) = d else { return None };
            Some(Document {
                id: m.get("id").and_then(|v| match v {
                    Value::String(s) => Some(s.clone()),
                    Value::Number(n) => Some(n.to_string()),
                    _ => None,
                }),
                score: m.get("score").and_then(Value::as_f64),
                content: m.get("content").and_then(Value::as_str).map(str::to_string),
                metadata: m.get("metadata").cloned(),
            })
        })
        .collect::<Option<Vec<_>>>()?;
    attrs.mark(key);
    Some(docs)
}

fn map_events(
    events: &[span::Event],
    span_id: SpanId,
    span_start: Timestamp,
) -> (Vec<MappedEvent<ErrorRecord>>, Vec<MappedEvent<LogRecord>>) {
    let mut errors = Vec::new();
    let mut logs = Vec::new();
    for (i, ev) in events.iter().enumerate() {
        let id = format!("otlp:{span_id}:{i}");
        let time = match ev.time_unix_nano {
            0 => span_start,
            t => timestamp(t),
        };
        let a = Attrs::new(&ev.attributes);
        if ev.name == "exception" {
            let error_type = a.peek_first(&["exception.type"], as_text);
            let message = a
                .peek_first(&["exception.message"], as_text)
                .or_else(|| error_type.clone())
                .unwrap_or_else(|| "exception".to_string());
            let stacktrace = a.peek_first(&["exception.stacktrace"], as_text);
            errors.push(MappedEvent {
                id,
                time,
                record: ErrorRecord {
                    span_id: Some(span_id),
                    error_type,
                    message,
                    stacktrace,
                },
            });
        } else {
            logs.push(MappedEvent {
                id,
                time,
                record: LogRecord {
                    span_id: Some(span_id),
                    severity: Severity::Info,
                    message: if ev.name.is_empty() {
                        "event".into()
                    } else {
                        ev.name.clone()
                    },
                    attributes: a.to_json_map(true),
                },
            });
        }
    }
    (errors, logs)
}

/// A link needs a valid trace id; a link whose span id is invalid keeps only the trace.
fn map_link(l: &span::Link) -> Option<Link> {
    let trace_id = trace_id_of(&l.trace_id).ok()?;
    let span_id = span_id_of(&l.span_id, "span id").ok().flatten();
    Some(Link {
        trace_id,
        span_id,
        attributes: to_json_map(&l.attributes),
    })
}

/// OTLP fields that are not attributes but worth keeping: the instrumentation scope, the
/// OTLP span kind when it says something, and what the SDK dropped. The span's own
/// attributes of the same names win.
fn add_otel_fields(
    attributes: &mut Map<String, Value>,
    otlp: &OtlpSpan,
    scope: Option<&InstrumentationScope>,
) {
    let mut add = |k: &str, v: Value| {
        attributes.entry(k.to_string()).or_insert(v);
    };
    if let Some(s) = scope {
        if !s.name.is_empty() {
            add("otel.scope.name", json!(s.name));
        }
        if !s.version.is_empty() {
            add("otel.scope.version", json!(s.version));
        }
    }
    let kind = match span::SpanKind::try_from(otlp.kind) {
        Ok(span::SpanKind::Server) => Some("server"),
        Ok(span::SpanKind::Client) => Some("client"),
        Ok(span::SpanKind::Producer) => Some("producer"),
        Ok(span::SpanKind::Consumer) => Some("consumer"),
        _ => None,
    };
    if let Some(k) = kind {
        add("otel.span_kind", json!(k));
    }
    for (k, n) in [
        (
            "otel.dropped_attributes_count",
            otlp.dropped_attributes_count,
        ),
        ("otel.dropped_events_count", otlp.dropped_events_count),
        ("otel.dropped_links_count", otlp.dropped_links_count),
    ] {
        if n > 0 {
            add(k, json!(n));
        }
    }
}
