//! OpenTelemetry (OTLP) traces → Traceway spans, and OTLP logs → log events and LLM message
//! fills ([`map_logs_request`]; its table is in `logs.rs`), as pure functions.
//!
//! Two steps, both without I/O:
//!
//! 1. [`decode_export_request`] reads the body of an OTLP/HTTP request (protobuf or
//!    OTLP/JSON; gzip is undone by the server before) into the generated
//!    [`ExportTraceServiceRequest`]. gRPC hands the server that type directly.
//! 2. [`map_request`] turns resource + scope + span into Traceway spans grouped by trace,
//!    with the span events split into errors and logs, and hints for the trace row (agent,
//!    session, user, service, name). Invalid spans are counted, not fatal, so the server can
//!    answer with OTLP's partial success.
//!
//! # OTLP/JSON
//!
//! Decoded by hand over `serde_json::Value` (see `json.rs` for why not
//! `opentelemetry-proto`'s `with-serde`), following the OTLP specification's "JSON Protobuf
//! Encoding": lowerCamelCase keys (the proto's snake_case names are accepted too), trace and
//! span ids as case-insensitive hex, 64-bit integers as decimal strings or numbers, enums as
//! integers (their proto names are accepted too), `bytesValue` as base64, unknown fields
//! ignored, `null` meaning "not set". Ids that are not hex but are valid base64 of the right
//! length (what a generic protobuf JSON encoder writes) are accepted as well.
//!
//! # Mapping
//!
//! | Traceway | from (first present wins) |
//! |---|---|
//! | span kind | `traceway.span.kind` (a Traceway kind name); `openinference.span.kind` (`AGENT`, `CHAIN`, `LLM`, `TOOL`, `RETRIEVER`, `EMBEDDING`, `RERANKER`, `GUARDRAIL`, `PROMPT`, `EVALUATOR`, `DECISION`, any case; `UNKNOWN` → other; a name not in this list falls through to the next rule); `gen_ai.operation.name` (`chat`, `text_completion`, `generate_content` → llm, `execute_tool` → tool, `invoke_agent`, `create_agent` → agent, `embeddings` → embedding, `retrieval` → retriever, `invoke_workflow` → chain); else `llm` when a model attribute (`llm.model_name`, `gen_ai.request.model`, `gen_ai.response.model`) is present; else `other` |
//! | component | `traceway.component_id`; otherwise none |
//! | service | resource `service.name` |
//! | status | OTLP status: `ERROR` → error with its message, `OK` → ok, else unset |
//! | root | a span without a parent (empty, or eight zero bytes); a span whose `flags` say its parent is remote (`0x100` and `0x200` set); with no remote flags at all (`0x100` unset, older SDKs), a `SERVER` or `CONSUMER` span whose parent is not in the same request (ADR 020) |
//! | input / output | `input.value` / `output.value`, parsed as JSON when `input.mime_type` / `output.mime_type` is JSON, else kept as a string; on `agent` and `chain` spans without them, `gen_ai.input.messages` / `gen_ai.output.messages` as a JSON list of messages |
//! | llm model | `llm.response.model_name`, `gen_ai.response.model`, `llm.model_name`, `llm.request.model_name`, `gen_ai.request.model`, `embedding.model_name` (the model that answered is preferred over the one asked for; a different requested model stays in the attributes) |
//! | llm provider | `gen_ai.provider.name`, `llm.provider`, `llm.system`, `gen_ai.system` |
//! | input tokens | `llm.token_count.prompt`, `gen_ai.usage.input_tokens`, `gen_ai.usage.prompt_tokens` |
//! | output tokens | `llm.token_count.completion`, `gen_ai.usage.output_tokens`, `gen_ai.usage.completion_tokens` |
//! | total tokens | `llm.token_count.total`, `gen_ai.usage.total_tokens` |
//! | cached tokens | `llm.token_count.prompt_details.cache_read`, `gen_ai.usage.cache_read.input_tokens`, `gen_ai.usage.cache_read_input_tokens` |
//! | reasoning tokens | `llm.token_count.completion_details.reasoning`, `gen_ai.usage.reasoning.output_tokens`, `gen_ai.usage.reasoning_tokens` |
//! | cost (USD) | `llm.cost.total` |
//! | messages | `llm.input_messages.N.message.*` / `llm.output_messages.N.message.*` (`role`, `content`, else the text items of `contents.M.message_content.*`; `name`; `tool_call_id`; `tool_calls.K.tool_call.{id,function.name,function.arguments}` as typed tool calls); `gen_ai.input.messages` / `gen_ai.output.messages` (JSON, text parts joined, `tool_call` parts as tool calls, a `tool_call_response` as the id it answers and its response as content; a message with other parts only keeps them as JSON text), with `gen_ai.system_instructions` as a leading system message; the older `gen_ai.prompt[.N.role/content]` / `gen_ai.completion[.N.role/content]` |
//! | embeddings | on `embedding` spans, `embedding.embeddings.N.embedding.{text,vector}` become the output `[{"text", "vector"}]`, and those attributes and the raw `output.value` are dropped even at `debug`, so the vectors are stored once |
//! | tool | name: `tool.name`, `gen_ai.tool.name`; arguments: `gen_ai.tool.call.arguments`, else the span input; result: `gen_ai.tool.call.result`, else the span output (JSON strings are parsed); schema: `tool.parameters` (OpenInference's JSON schema of the tool, not the call's arguments) |
//! | retrieval | documents: `retrieval.documents.N.document.{id,score,content,metadata}`, `gen_ai.retrieval.documents`, and for rerankers `reranker.output_documents.N.document.*`; query: `gen_ai.retrieval.query.text`, `reranker.query`, else the span input |
//! | trace hints | agent: `gen_ai.agent.name`, `gen_ai.agent.id`, `agent.name`, else the name of a root span of kind `agent` in the batch; session: `session.id`, `gen_ai.conversation.id`; user: `user.id` — from the span, else its resource; a root span's values win over other spans' |
//! | trace metadata | every resource attribute (values as text, non-strings as JSON, each cut at 1 KiB, at most 64), the entries of the OpenInference `metadata` attribute (a JSON object) and `tag.tags` (a JSON array); span entries win over resource ones, a root's over other spans' |
//! | errors | span events named `exception` (`exception.type`, `exception.message`, `exception.stacktrace`) |
//! | logs | every other span event: its name as the message, its attributes |
//! | links | span links with a valid trace id |
//!
//! LLM details are set on `llm` and `embedding` spans only, tool details on `tool` spans,
//! retrieval details on `retriever` and `reranker` spans. On other kinds the same attributes
//! stay in `attributes`: an agent span that reports the usage of its whole run must not be
//! counted again in the trace's token rollups.
//!
//! Every attribute the mapping did not move into a typed field is kept in
//! `span.attributes`, converted to JSON (strings, bools, integers, doubles — `NaN` and
//! infinities as the strings `"NaN"`, `"Infinity"`, `"-Infinity"` — bytes as standard
//! base64, arrays as arrays, key-value lists as objects). The identity attributes that feed
//! the trace hints stay too, since a span has no typed field for them and sub-agents differ
//! per span. With [`MapOptions::keep_mapped_attributes`] every attribute is kept, and the
//! resource's attributes are added under `resource.<key>`. The mapping also adds
//! `otel.scope.name` / `otel.scope.version` (the instrumentation scope), `otel.span_kind`
//! (`server`, `client`, `producer`, `consumer`) and the `otel.dropped_*_count` counters when
//! non-zero, unless the span already has attributes of those names.

mod attrs;
mod json;
mod logs;
mod map;

pub use logs::{
    decode_logs_request, map_logs_request, ExportLogsServiceRequest, MappedLogTrace, MappedLogs,
    OPERATION_DETAILS_EVENT,
};
pub use map::{map_request, map_request_with};
pub use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;

use std::collections::BTreeMap;

use prost::Message as _;
use serde::{Deserialize, Serialize};

use crate::id::TraceId;
use crate::ingest::{EventInput, NewTrace, SpanInput, TracePatch};
use crate::model::{ErrorRecord, LogRecord, Span, State, StatusCode};
use crate::time::Timestamp;

/// How an OTLP/HTTP body is encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Encoding {
    /// Binary protobuf (`application/x-protobuf`).
    Protobuf,
    /// OTLP/JSON (`application/json`).
    Json,
}

impl Encoding {
    /// The encoding a `Content-Type` names, ignoring parameters such as `charset`; `None`
    /// for any other media type (the server answers 415).
    pub fn from_content_type(content_type: &str) -> Option<Encoding> {
        let media = content_type.split(';').next().unwrap_or("").trim();
        if media.eq_ignore_ascii_case("application/x-protobuf")
            || media.eq_ignore_ascii_case("application/protobuf")
        {
            Some(Encoding::Protobuf)
        } else if media.eq_ignore_ascii_case("application/json") {
            Some(Encoding::Json)
        } else {
            None
        }
    }
}

/// Why an OTLP body could not be decoded. Either way the request is malformed (HTTP 400,
/// gRPC `INVALID_ARGUMENT`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OtlpError {
    /// The protobuf body is not an `ExportTraceServiceRequest`.
    #[error("invalid OTLP protobuf body: {0}")]
    Protobuf(String),
    /// The JSON body is not OTLP/JSON; the message names the offending field.
    #[error("invalid OTLP/JSON body: {0}")]
    Json(String),
}

/// Reads an OTLP/HTTP trace export body (already un-gzipped).
pub fn decode_export_request(
    body: &[u8],
    encoding: Encoding,
) -> Result<ExportTraceServiceRequest, OtlpError> {
    match encoding {
        Encoding::Protobuf => {
            ExportTraceServiceRequest::decode(body).map_err(|e| OtlpError::Protobuf(e.to_string()))
        }
        Encoding::Json => json::decode(body).map_err(OtlpError::Json),
    }
}

/// Options of [`map_request_with`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct MapOptions {
    /// Keep every attribute in `span.attributes`, also those moved into typed fields, and add
    /// the resource's attributes as `resource.<key>`. For traces captured at level `debug`.
    #[serde(default)]
    pub keep_mapped_attributes: bool,
}

/// What a batch of OTLP spans became.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct MappedBatch {
    /// The spans, grouped by trace in the order each trace was first seen.
    pub traces: Vec<MappedTrace>,
    /// Spans that could not be used (invalid trace, span or parent id).
    pub rejected_spans: u64,
    /// Why, for OTLP's partial-success answer; `None` when nothing was rejected.
    pub rejection_message: Option<String>,
}

/// The spans of one trace in a batch.
#[derive(Debug, Clone, PartialEq)]
pub struct MappedTrace {
    /// The trace.
    pub trace_id: TraceId,
    /// What the spans say about the trace as a whole.
    pub hints: TraceHints,
    /// The spans, in batch order.
    pub spans: Vec<MappedSpan>,
}

/// Trace-level facts found on the spans, for creating or completing the trace row.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct TraceHints {
    /// The agent (`gen_ai.agent.name`, `gen_ai.agent.id`, `agent.name`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_id: Option<String>,
    /// The session or conversation (`session.id`, `gen_ai.conversation.id`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_id: Option<String>,
    /// The end user (`user.id`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_id: Option<String>,
    /// The emitting service (resource `service.name`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<String>,
    /// The root span's name, when the root is in the batch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// For the trace's metadata: the resource's attributes (values as text, JSON for
    /// non-strings), the OpenInference `metadata` attribute's entries and `tag.tags` (as a
    /// JSON array). A root span's entries win over other spans'.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub metadata: BTreeMap<String, String>,
}

/// One OTLP span as Traceway sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct MappedSpan {
    /// The span, ended (OTLP exports finished spans).
    pub span: Span,
    /// Its `exception` events.
    pub errors: Vec<MappedEvent<ErrorRecord>>,
    /// Its other events.
    pub logs: Vec<MappedEvent<LogRecord>>,
    /// Whether it has no parent.
    pub is_root: bool,
}

/// A span event with its time and a stable id.
#[derive(Debug, Clone, PartialEq)]
pub struct MappedEvent<T> {
    /// An idempotency key, `otlp:<span id>:<event index>`: the same export sent again yields
    /// the same ids, so the store can skip what it already has.
    pub id: String,
    /// When it happened (the span's start when the event has no time).
    pub time: Timestamp,
    /// The record.
    pub record: T,
}

/// The metadata key under which a trace created from OTLP keeps its resource's
/// `service.name`.
pub const SERVICE_METADATA_KEY: &str = "service.name";

/// Why a trace became terminal when its root span arrived (the `reason` of its
/// `state_changed` event).
pub const ROOT_ENDED_REASON: &str = "root span ended";

/// Why a trace became `ERRORED` when its root span arrived with status error.
pub const ROOT_FAILED_REASON: &str = "root span ended with an error";

impl MappedTrace {
    /// The trace to create when these spans are the first of it the server sees: `RUNNING`,
    /// named after the root span when it is in the batch, with the agent, session and user
    /// hints, and the service in its metadata under [`SERVICE_METADATA_KEY`]. The level is
    /// left to the server's default.
    pub fn new_trace(&self) -> NewTrace {
        let h = &self.hints;
        let mut metadata = h.metadata.clone();
        if let Some(service) = &h.service {
            metadata.insert(SERVICE_METADATA_KEY.to_string(), service.clone());
        }
        NewTrace {
            trace_id: Some(self.trace_id),
            name: h.name.clone(),
            agent_id: h.agent_id.clone(),
            session_id: h.session_id.clone(),
            user_id: h.user_id.clone(),
            state: Some(State::Running),
            level: None,
            metadata,
        }
    }

    /// What the batch says about the trace's end (ADR 008). An OTLP span is exported
    /// when it has ended, so a root span (one without a parent) in the batch means the run
    /// is over: `ERRORED` when any root span of the batch has status error, else
    /// `COMPLETED`. `None` when the batch holds no root span: the trace stays as it is.
    pub fn root_end(&self) -> Option<TracePatch> {
        let mut roots = self.spans.iter().filter(|s| s.is_root).peekable();
        roots.peek()?;
        let failed = roots.any(|s| s.span.status.code == StatusCode::Error);
        let (state, reason) = if failed {
            (State::Errored, ROOT_FAILED_REASON)
        } else {
            (State::Completed, ROOT_ENDED_REASON)
        };
        Some(TracePatch {
            state: Some(state),
            reason: Some(reason.to_string()),
            ..TracePatch::default()
        })
    }

    /// The events that store these spans: per span a `span_ended` carrying the whole span
    /// (the store records a `span_ended` of an unknown span whole, and skips one it has
    /// already ended), followed by its errors and logs with their stable ids, so that a
    /// re-exported batch is stored once.
    pub fn into_events(self) -> Vec<EventInput> {
        let n: usize = self
            .spans
            .iter()
            .map(|s| 1 + s.errors.len() + s.logs.len())
            .sum();
        let mut out = Vec::with_capacity(n);
        for s in self.spans {
            out.push(EventInput::SpanEnded {
                span: SpanInput::from(s.span),
            });
            out.extend(s.errors.into_iter().map(|e| EventInput::Error {
                id: Some(e.id),
                time: Some(e.time),
                record: e.record,
            }));
            out.extend(s.logs.into_iter().map(|e| EventInput::Log {
                id: Some(e.id),
                time: Some(e.time),
                record: e.record,
            }));
        }
        out
    }
}
