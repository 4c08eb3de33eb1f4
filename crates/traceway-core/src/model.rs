//! The data model: traces, spans, events, states, levels.
//!
//! Every type here has one JSON form, the one the REST API reads and writes and the
//! OpenAPI document at `/api/v1/openapi.json` describes. Optional fields are left out of
//! the JSON when absent.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::{Map, Value};

use crate::id::{SpanId, TraceId};
use crate::time::Timestamp;

/// What a span did. `chain` is a component of an agent (a step of a pipeline).
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SpanKind {
    /// An agent run or agent invocation.
    Agent,
    /// A component: one step of a chain or pipeline.
    Chain,
    /// A call to a language model.
    Llm,
    /// A tool call.
    Tool,
    /// A retrieval of documents.
    Retriever,
    /// An embedding call.
    Embedding,
    /// A reranking of documents.
    Reranker,
    /// A guardrail check.
    Guardrail,
    /// The rendering of a prompt template (OpenInference `PROMPT`).
    Prompt,
    /// An evaluation of an output (OpenInference `EVALUATOR`).
    Evaluator,
    /// A routing or branching decision (OpenInference `DECISION`).
    Decision,
    /// A unit of work in a workflow.
    Task,
    /// Anything else.
    #[default]
    Other,
}

impl SpanKind {
    /// Every kind, in declaration order.
    pub const ALL: [SpanKind; 13] = [
        SpanKind::Agent,
        SpanKind::Chain,
        SpanKind::Llm,
        SpanKind::Tool,
        SpanKind::Retriever,
        SpanKind::Embedding,
        SpanKind::Reranker,
        SpanKind::Guardrail,
        SpanKind::Prompt,
        SpanKind::Evaluator,
        SpanKind::Decision,
        SpanKind::Task,
        SpanKind::Other,
    ];

    /// The lower-case name used in JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            SpanKind::Agent => "agent",
            SpanKind::Chain => "chain",
            SpanKind::Llm => "llm",
            SpanKind::Tool => "tool",
            SpanKind::Retriever => "retriever",
            SpanKind::Embedding => "embedding",
            SpanKind::Reranker => "reranker",
            SpanKind::Guardrail => "guardrail",
            SpanKind::Prompt => "prompt",
            SpanKind::Evaluator => "evaluator",
            SpanKind::Decision => "decision",
            SpanKind::Task => "task",
            SpanKind::Other => "other",
        }
    }
}

/// The outcome of a span, as in OpenTelemetry.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StatusCode {
    /// Not set (still running, or the instrumentation did not say).
    #[default]
    Unset,
    /// Succeeded.
    Ok,
    /// Failed.
    Error,
}

/// A span's status code and optional message.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct SpanStatus {
    /// The outcome.
    #[serde(default)]
    pub code: StatusCode,
    /// A description, usually of the error.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// One chat message of an LLM call.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Message {
    /// `system`, `user`, `assistant`, `tool`, …
    #[serde(default)]
    pub role: String,
    /// The text content.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content: Option<String>,
    /// The tool calls an assistant message asks for.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tool_calls: Vec<ToolCall>,
    /// On a `tool` message: the id of the call it answers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_call_id: Option<String>,
    /// The name of the author (a tool's or a participant's name).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

/// One tool call requested in an assistant message.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct ToolCall {
    /// The call's id, which the answering `tool` message names.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// The tool's name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The arguments, as JSON (a string when they are not JSON).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub arguments: Option<Value>,
}

/// What Traceway knows of an LLM call.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct LlmDetails {
    /// The provider (`openai`, `anthropic`, …).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider: Option<String>,
    /// The model name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// Prompt tokens.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input_tokens: Option<u64>,
    /// Completion tokens.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output_tokens: Option<u64>,
    /// Total tokens; when absent, input + output count.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub total_tokens: Option<u64>,
    /// Prompt tokens served from a cache.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cached_tokens: Option<u64>,
    /// Reasoning tokens.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reasoning_tokens: Option<u64>,
    /// Cost in US dollars.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cost_usd: Option<f64>,
    /// Prompt tokens written to a cache (Anthropic's cache creation).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_write_tokens: Option<u64>,
    /// Whether `cost_usd` was reported by the client or computed from the price table.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cost_source: Option<CostSource>,
    /// The price table version a computed cost came from (`litellm-1.110.2`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub price_table: Option<String>,
    /// The prompt messages (kept from level `detailed`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub input_messages: Vec<Message>,
    /// The completion messages (kept from level `detailed`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub output_messages: Vec<Message>,
}

impl LlmDetails {
    /// Total tokens: the reported total, else input + output.
    pub fn tokens_total(&self) -> u64 {
        self.total_tokens.unwrap_or_else(|| {
            self.input_tokens
                .unwrap_or(0)
                .saturating_add(self.output_tokens.unwrap_or(0))
        })
    }
}

/// Where an LLM span's cost came from.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CostSource {
    /// The client (or its instrumentation) sent it.
    Reported,
    /// Traceway computed it from its price table (see `pricing`).
    Computed,
}

/// What Traceway knows of a tool call.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct ToolDetails {
    /// The tool's name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The arguments, as JSON (kept from level `detailed`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub arguments: Option<Value>,
    /// The result, as JSON (kept from level `detailed`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<Value>,
    /// The tool's parameter schema (JSON Schema, OpenInference `tool.parameters`; kept from
    /// level `detailed`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schema: Option<Value>,
}

/// One retrieved document (a chunk).
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Document {
    /// The document or chunk id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// The relevance score.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub score: Option<f64>,
    /// The chunk's text (kept from level `detailed`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content: Option<String>,
    /// The chunk's metadata (kept from level `detailed`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<Value>,
}

/// What Traceway knows of a retrieval.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct RetrievalDetails {
    /// The query (kept from level `detailed`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub query: Option<String>,
    /// The documents found, best first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub documents: Vec<Document>,
}

/// A link from a span to a span of another (or the same) trace.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Link {
    /// The linked trace.
    pub trace_id: TraceId,
    /// The linked span, if known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub span_id: Option<SpanId>,
    /// Attributes of the link.
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    pub attributes: Map<String, Value>,
}

/// One step of a trace.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Span {
    /// The span's id, unique within its trace.
    pub span_id: SpanId,
    /// The parent span; absent for a root.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent_span_id: Option<SpanId>,
    /// What the span did.
    #[serde(default)]
    pub kind: SpanKind,
    /// Its name (`retrieve_docs`, `ChatOpenAI`, …).
    pub name: String,
    /// The component it belongs to, for filtering.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub component_id: Option<String>,
    /// The service that emitted it (OTLP `service.name`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<String>,
    /// When it started.
    pub start_time: Timestamp,
    /// When it ended; absent while it runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end_time: Option<Timestamp>,
    /// Its outcome.
    #[serde(default)]
    pub status: SpanStatus,
    /// The step's input (kept from level `detailed`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input: Option<Value>,
    /// The step's output (kept from level `detailed`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output: Option<Value>,
    /// LLM call details.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub llm: Option<LlmDetails>,
    /// Tool call details.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool: Option<ToolDetails>,
    /// Retrieval details.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retrieval: Option<RetrievalDetails>,
    /// Other attributes, as they came (kept from level `standard`; see the levels ADR).
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    pub attributes: Map<String, Value>,
    /// Links to other spans.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub links: Vec<Link>,
}

impl Span {
    /// A running span with only the required fields set.
    pub fn new(span_id: SpanId, kind: SpanKind, name: impl Into<String>, start: Timestamp) -> Span {
        Span {
            span_id,
            parent_span_id: None,
            kind,
            name: name.into(),
            component_id: None,
            service: None,
            start_time: start,
            end_time: None,
            status: SpanStatus::default(),
            input: None,
            output: None,
            llm: None,
            tool: None,
            retrieval: None,
            attributes: Map::new(),
            links: Vec::new(),
        }
    }

    /// Whether the span has ended.
    pub fn is_ended(&self) -> bool {
        self.end_time.is_some()
    }

    /// Its duration, once ended.
    pub fn duration(&self) -> Option<std::time::Duration> {
        self.end_time.map(|e| e.since(self.start_time))
    }
}

/// The lifecycle state of a trace: `RECEIVED` → `RUNNING` → `COMPLETED` | `ERRORED`, plus
/// upper-case intermediate states a caller may define (`WAITING_FOR_HUMAN`, …).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum State {
    /// Created, nothing run yet.
    Received,
    /// Steps are being recorded.
    Running,
    /// Finished successfully (terminal).
    Completed,
    /// Finished with an error, or orphaned (terminal).
    Errored,
    /// A caller-defined intermediate state: upper-case letters, digits and `_`.
    Custom(String),
}

/// Why a state string or a state change was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StateError {
    /// The state's name is not upper-case letters, digits and `_` (1 to 64 characters,
    /// starting with a letter).
    #[error("invalid state {0:?}: use 1 to 64 upper-case letters, digits and '_', starting with a letter")]
    InvalidName(String),
    /// The trace is terminal and the change would leave that state.
    #[error("trace is {from} (terminal) and cannot become {to}")]
    FromTerminal {
        /// The current, terminal state.
        from: State,
        /// The refused target.
        to: State,
    },
    /// `RECEIVED` is only the initial state.
    #[error("a trace cannot return to RECEIVED (it is {from})")]
    BackToReceived {
        /// The current state.
        from: State,
    },
}

impl State {
    /// The upper-case name.
    pub fn as_str(&self) -> &str {
        match self {
            State::Received => "RECEIVED",
            State::Running => "RUNNING",
            State::Completed => "COMPLETED",
            State::Errored => "ERRORED",
            State::Custom(s) => s,
        }
    }

    /// `COMPLETED` and `ERRORED` are terminal: a trace never leaves them.
    pub fn is_terminal(&self) -> bool {
        matches!(self, State::Completed | State::Errored)
    }

    /// Checks a change from `self` to `to`. `Ok(false)` means no change (the same state
    /// again, which makes a retried update harmless); `Ok(true)` a change to record.
    pub fn check_transition(&self, to: &State) -> Result<bool, StateError> {
        if self == to {
            return Ok(false);
        }
        if self.is_terminal() {
            return Err(StateError::FromTerminal {
                from: self.clone(),
                to: to.clone(),
            });
        }
        if *to == State::Received {
            return Err(StateError::BackToReceived { from: self.clone() });
        }
        Ok(true)
    }
}

impl FromStr for State {
    type Err = StateError;
    fn from_str(s: &str) -> Result<State, StateError> {
        Ok(match s {
            "RECEIVED" => State::Received,
            "RUNNING" => State::Running,
            "COMPLETED" => State::Completed,
            "ERRORED" => State::Errored,
            other => {
                let valid = !other.is_empty()
                    && other.len() <= 64
                    && other.starts_with(|c: char| c.is_ascii_uppercase())
                    && other
                        .chars()
                        .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_');
                if !valid {
                    return Err(StateError::InvalidName(other.to_string()));
                }
                State::Custom(other.to_string())
            }
        })
    }
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for State {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for State {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// How much detail a trace keeps: `minimal` < `standard` < `detailed` < `debug`.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum Level {
    /// Lifecycle, span start/end, names, timings, status, errors.
    Minimal,
    /// + model, tokens, cost, tool names, retrieval hit ids and scores, attributes.
    Standard,
    /// + prompts and completions, tool arguments and results, chunk contents, inputs and
    ///   outputs, each truncated at a configured size.
    #[default]
    Detailed,
    /// + every raw attribute, nothing truncated.
    Debug,
}

impl Level {
    /// The lower-case name.
    pub fn as_str(self) -> &'static str {
        match self {
            Level::Minimal => "minimal",
            Level::Standard => "standard",
            Level::Detailed => "detailed",
            Level::Debug => "debug",
        }
    }
}

impl FromStr for Level {
    type Err = String;
    fn from_str(s: &str) -> Result<Level, String> {
        match s {
            "minimal" => Ok(Level::Minimal),
            "standard" => Ok(Level::Standard),
            "detailed" => Ok(Level::Detailed),
            "debug" => Ok(Level::Debug),
            _ => Err(format!(
                "unknown level {s:?}: use minimal, standard, detailed or debug"
            )),
        }
    }
}

fn null_as_zero<'de, D: serde::Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
    Ok(Option::<f64>::deserialize(d)?.unwrap_or(0.0))
}

/// Totals over a trace's spans, kept up to date as events arrive.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Rollups {
    /// Spans seen (started or ended).
    pub span_count: u64,
    /// Spans with status `error`, plus `error` events not tied to a span.
    pub error_count: u64,
    /// Prompt tokens over all LLM spans (embedding spans are counted apart, in
    /// `embedding_tokens`).
    pub input_tokens: u64,
    /// Completion tokens over all LLM spans.
    pub output_tokens: u64,
    /// Total tokens over all LLM spans, embeddings not included.
    pub total_tokens: u64,
    /// Tokens embedded by embedding spans (their total, else their input tokens).
    pub embedding_tokens: u64,
    /// Cost in US dollars over all LLM spans that report one. A stored `null` (what an
    /// older build wrote for a sum that overflowed) reads as 0, so the row stays readable.
    #[serde(deserialize_with = "null_as_zero")]
    pub cost_usd: f64,
    /// The earliest span start.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_span_start: Option<Timestamp>,
    /// The latest span end.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_span_end: Option<Timestamp>,
    /// From the earliest span start to the latest span end.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_ms: Option<f64>,
    /// Calls, tokens and cost per model (`unknown` when a span names none).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub models: BTreeMap<String, ModelUsage>,
    /// The trace's analysis in brief (top components and span names by self time, error
    /// groups), made after it ended; absent before, and on traces stored by an older
    /// build (ADR 028).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(required = false))]
    pub analysis: Option<crate::analysis::AnalysisDigest>,
}

/// Calls, tokens and cost of one model within a trace's rollups.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct ModelUsage {
    /// LLM spans.
    pub calls: u64,
    /// Prompt tokens.
    pub input_tokens: u64,
    /// Completion tokens.
    pub output_tokens: u64,
    /// Prompt tokens read from a cache.
    pub cached_tokens: u64,
    /// Prompt tokens written to a cache.
    pub cache_write_tokens: u64,
    /// Reasoning tokens.
    pub reasoning_tokens: u64,
    /// Total tokens.
    pub total_tokens: u64,
    /// Cost in US dollars (reported or computed).
    pub cost_usd: f64,
}

impl ModelUsage {
    fn of(l: &LlmDetails) -> ModelUsage {
        ModelUsage {
            calls: 1,
            input_tokens: l.input_tokens.unwrap_or(0),
            output_tokens: l.output_tokens.unwrap_or(0),
            cached_tokens: l.cached_tokens.unwrap_or(0),
            cache_write_tokens: l.cache_write_tokens.unwrap_or(0),
            reasoning_tokens: l.reasoning_tokens.unwrap_or(0),
            total_tokens: l.tokens_total(),
            cost_usd: l.cost_usd.unwrap_or(0.0),
        }
    }

    /// Adds `other` (`sign` 1) or takes it away (`sign` -1), saturating at zero.
    pub fn add(&mut self, other: &ModelUsage, sign: i8) {
        let f = |a: &mut u64, b: u64| {
            *a = if sign >= 0 {
                a.saturating_add(b)
            } else {
                a.saturating_sub(b)
            }
        };
        f(&mut self.calls, other.calls);
        f(&mut self.input_tokens, other.input_tokens);
        f(&mut self.output_tokens, other.output_tokens);
        f(&mut self.cached_tokens, other.cached_tokens);
        f(&mut self.cache_write_tokens, other.cache_write_tokens);
        f(&mut self.reasoning_tokens, other.reasoning_tokens);
        f(&mut self.total_tokens, other.total_tokens);
        self.cost_usd = finite_cost(self.cost_usd + f64::from(sign) * other.cost_usd);
    }
}

fn model_key(l: &LlmDetails) -> String {
    l.model.clone().unwrap_or_else(|| "unknown".into())
}

impl Rollups {
    /// Folds a span in. `previous` is the same span as it was stored before (a started span
    /// now ending), so its contribution is replaced, not added twice.
    pub fn apply_span(&mut self, previous: Option<&Span>, span: &Span) {
        if previous.is_none() {
            self.span_count = self.span_count.saturating_add(1);
        }
        let was_error = previous.is_some_and(|p| p.status.code == StatusCode::Error);
        if span.status.code == StatusCode::Error && !was_error {
            self.error_count = self.error_count.saturating_add(1);
        }
        let old = previous.map(TokenShare::of).unwrap_or_default();
        let new = TokenShare::of(span);
        // Saturating: a sum that would wrap stays at u64::MAX (issue 15, failure 3.2).
        let moved = |total: u64, add: u64, sub: u64| total.saturating_add(add).saturating_sub(sub);
        self.input_tokens = moved(self.input_tokens, new.input, old.input);
        self.output_tokens = moved(self.output_tokens, new.output, old.output);
        self.total_tokens = moved(self.total_tokens, new.total, old.total);
        self.embedding_tokens = moved(self.embedding_tokens, new.embedding, old.embedding);
        if span.llm.is_some() {
            self.cost_usd = finite_cost(self.cost_usd + new.cost - old.cost);
        }
        if let Some(l) = previous.and_then(|p| p.llm.as_ref()) {
            let key = model_key(l);
            if let Some(m) = self.models.get_mut(&key) {
                m.add(&ModelUsage::of(l), -1);
                if m.calls == 0 {
                    self.models.remove(&key);
                }
            }
        }
        if let Some(l) = &span.llm {
            self.models
                .entry(model_key(l))
                .or_default()
                .add(&ModelUsage::of(l), 1);
        }
        self.first_span_start = Some(match self.first_span_start {
            Some(t) => t.min(span.start_time),
            None => span.start_time,
        });
        if let Some(end) = span.end_time {
            self.last_span_end = Some(self.last_span_end.map_or(end, |t| t.max(end)));
        }
        if let (Some(s), Some(e)) = (self.first_span_start, self.last_span_end) {
            self.duration_ms = Some(e.since(s).as_secs_f64() * 1000.0);
        }
    }
}

/// A cost sum as stored: never negative, and never infinite or NaN, which JSON would store
/// as `null` and break every read of the trace (issue 15, failure 3.1); it stays at the
/// largest finite value instead.
fn finite_cost(cost: f64) -> f64 {
    if cost.is_finite() {
        cost.max(0.0)
    } else {
        f64::MAX
    }
}

/// What one span adds to a trace's token and cost totals: an embedding span's tokens go
/// to `embedding`, never to the LLM input and total counts.
#[derive(Debug, Clone, Copy, Default)]
struct TokenShare {
    input: u64,
    output: u64,
    total: u64,
    embedding: u64,
    cost: f64,
}

impl TokenShare {
    fn of(span: &Span) -> TokenShare {
        let Some(l) = &span.llm else {
            return TokenShare::default();
        };
        let cost = l.cost_usd.unwrap_or(0.0);
        if span.kind == SpanKind::Embedding {
            return TokenShare {
                embedding: l.total_tokens.or(l.input_tokens).unwrap_or(0),
                cost,
                ..TokenShare::default()
            };
        }
        TokenShare {
            input: l.input_tokens.unwrap_or(0),
            output: l.output_tokens.unwrap_or(0),
            total: l.tokens_total(),
            embedding: 0,
            cost,
        }
    }
}

/// A trace: one execution of an agent, request or workflow.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Trace {
    /// The trace id (a W3C trace-id).
    pub trace_id: TraceId,
    /// The tenant that owns it.
    pub tenant: String,
    /// A name for the run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The agent that ran.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_id: Option<String>,
    /// The conversation or session.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_id: Option<String>,
    /// The end user.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_id: Option<String>,
    /// The lifecycle state.
    pub state: State,
    /// The detail kept, fixed at creation.
    pub level: Level,
    /// When Traceway first heard of it.
    pub created_at: Timestamp,
    /// The last time an event was appended or the state changed.
    pub last_activity_at: Timestamp,
    /// When it became terminal.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ended_at: Option<Timestamp>,
    /// When its row stops being returned (failsafe expiry or retention).
    pub expires_at: Timestamp,
    /// The `seq` of its last event.
    pub last_seq: u64,
    /// Free-form string metadata.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub metadata: BTreeMap<String, String>,
    /// Totals over its spans.
    #[serde(default)]
    pub rollups: Rollups,
}

/// The type of an event, for filtering.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventType {
    /// The trace was created.
    TraceStarted,
    /// A step began.
    SpanStarted,
    /// A step ended (or arrived whole, as OTLP spans do).
    SpanEnded,
    /// A log line.
    Log,
    /// An error.
    Error,
    /// The state changed.
    StateChanged,
    /// The trace reached a terminal state.
    TraceEnded,
}

impl EventType {
    /// Every type.
    pub const ALL: [EventType; 7] = [
        EventType::TraceStarted,
        EventType::SpanStarted,
        EventType::SpanEnded,
        EventType::Log,
        EventType::Error,
        EventType::StateChanged,
        EventType::TraceEnded,
    ];

    /// The snake-case name used in JSON and as the SSE event name.
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::TraceStarted => "trace_started",
            EventType::SpanStarted => "span_started",
            EventType::SpanEnded => "span_ended",
            EventType::Log => "log",
            EventType::Error => "error",
            EventType::StateChanged => "state_changed",
            EventType::TraceEnded => "trace_ended",
        }
    }
}

impl FromStr for EventType {
    type Err = String;
    fn from_str(s: &str) -> Result<EventType, String> {
        EventType::ALL
            .into_iter()
            .find(|t| t.as_str() == s)
            .ok_or_else(|| format!("unknown event type {s:?}"))
    }
}

/// The payload of `trace_started`: the trace as it was created.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TraceStarted {
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
    /// Initial state.
    pub state: State,
    /// Level.
    pub level: Level,
    /// Metadata.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub metadata: BTreeMap<String, String>,
}

/// Severity of a log event.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    /// Debugging detail.
    Debug,
    /// Information.
    #[default]
    Info,
    /// Something to look at.
    Warn,
    /// A failure.
    Error,
}

/// The payload of `log`.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct LogRecord {
    /// The span it belongs to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub span_id: Option<SpanId>,
    /// Severity.
    #[serde(default)]
    pub severity: Severity,
    /// The message.
    pub message: String,
    /// Structured fields.
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    pub attributes: Map<String, Value>,
}

/// The payload of `error`.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct ErrorRecord {
    /// The span it belongs to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub span_id: Option<SpanId>,
    /// The exception type (`ValueError`, `TimeoutError`, …).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_type: Option<String>,
    /// The message.
    pub message: String,
    /// The stack trace (kept from level `detailed`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stacktrace: Option<String>,
}

/// The payload of `state_changed`.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StateChange {
    /// The state before.
    pub from: State,
    /// The state after.
    pub to: State,
    /// Why (`orphaned`, `root span ended`, …).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// The payload of `trace_ended`.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TraceEnded {
    /// The terminal state.
    pub state: State,
    /// Why, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Totals at the end.
    pub rollups: Rollups,
}

/// What happened, by type. In JSON: `"type": "<type>", "payload": {…}`.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", content = "payload", rename_all = "snake_case")]
pub enum EventBody {
    /// The trace was created.
    TraceStarted(TraceStarted),
    /// A step began; the span has no end yet.
    SpanStarted(Span),
    /// A step ended; the span as stored after the end.
    SpanEnded(Span),
    /// A log line.
    Log(LogRecord),
    /// An error.
    Error(ErrorRecord),
    /// The state changed.
    StateChanged(StateChange),
    /// The trace became terminal.
    TraceEnded(TraceEnded),
}

impl EventBody {
    /// Its type.
    pub fn event_type(&self) -> EventType {
        match self {
            EventBody::TraceStarted(_) => EventType::TraceStarted,
            EventBody::SpanStarted(_) => EventType::SpanStarted,
            EventBody::SpanEnded(_) => EventType::SpanEnded,
            EventBody::Log(_) => EventType::Log,
            EventBody::Error(_) => EventType::Error,
            EventBody::StateChanged(_) => EventType::StateChanged,
            EventBody::TraceEnded(_) => EventType::TraceEnded,
        }
    }

    /// The span the event is about, if any.
    pub fn span_id(&self) -> Option<SpanId> {
        match self {
            EventBody::SpanStarted(s) | EventBody::SpanEnded(s) => Some(s.span_id),
            EventBody::Log(l) => l.span_id,
            EventBody::Error(e) => e.span_id,
            _ => None,
        }
    }
}

/// One entry of a trace's append-only log. `seq` runs 1, 2, 3 … per trace without gaps and
/// is the SSE event id.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// The trace.
    pub trace_id: TraceId,
    /// Position in the trace's log.
    pub seq: u64,
    /// When it happened (a span's start or end time; otherwise when it was recorded).
    pub time: Timestamp,
    /// The component of the span it concerns, for filtering.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub component_id: Option<String>,
    /// Type and payload.
    #[serde(flatten)]
    pub body: EventBody,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_sits_at_its_discriminant_in_all() {
        // The analysis counts spans per kind in an array indexed by `kind as usize`.
        for (i, k) in SpanKind::ALL.iter().enumerate() {
            assert_eq!(*k as usize, i, "{k:?}");
        }
    }

    fn st(s: &str) -> State {
        s.parse().unwrap()
    }

    #[test]
    fn transition_table() {
        // (from, to, Ok(changed) or Err)
        let cases: &[(&str, &str, Result<bool, ()>)] = &[
            ("RECEIVED", "RUNNING", Ok(true)),
            ("RECEIVED", "COMPLETED", Ok(true)),
            ("RECEIVED", "ERRORED", Ok(true)),
            ("RUNNING", "COMPLETED", Ok(true)),
            ("RUNNING", "ERRORED", Ok(true)),
            ("RUNNING", "WAITING_FOR_HUMAN", Ok(true)),
            ("WAITING_FOR_HUMAN", "RUNNING", Ok(true)),
            ("WAITING_FOR_HUMAN", "COMPLETED", Ok(true)),
            ("RUNNING", "RUNNING", Ok(false)),
            ("COMPLETED", "COMPLETED", Ok(false)),
            ("RUNNING", "RECEIVED", Err(())),
            ("COMPLETED", "RUNNING", Err(())),
            ("COMPLETED", "ERRORED", Err(())),
            ("ERRORED", "COMPLETED", Err(())),
            ("ERRORED", "PAUSED", Err(())),
        ];
        for (from, to, want) in cases {
            let got = st(from).check_transition(&st(to)).map_err(|_| ());
            assert_eq!(&got, want, "{from} -> {to}");
        }
    }

    #[test]
    fn state_names_are_validated() {
        for bad in [
            "running",
            "Running",
            "",
            "1ABC",
            "WITH SPACE",
            &"X".repeat(65),
        ] {
            assert!(bad.parse::<State>().is_err(), "{bad:?} accepted");
        }
        assert_eq!(st("PAUSED_2"), State::Custom("PAUSED_2".into()));
        assert_eq!(
            serde_json::to_string(&State::Errored).unwrap(),
            "\"ERRORED\""
        );
    }

    #[test]
    fn levels_are_ordered() {
        assert!(Level::Minimal < Level::Standard);
        assert!(Level::Standard < Level::Detailed);
        assert!(Level::Detailed < Level::Debug);
        assert_eq!("debug".parse::<Level>().unwrap(), Level::Debug);
        assert!("verbose".parse::<Level>().is_err());
    }

    #[test]
    fn event_json_has_type_and_payload() {
        let ev = Event {
            trace_id: "4bf92f3577b34da6a3ce929d0e0e4736".parse().unwrap(),
            seq: 3,
            time: Timestamp::from_unix_millis(1_763_719_200_000),
            component_id: None,
            body: EventBody::Log(LogRecord {
                message: "hello".into(),
                ..Default::default()
            }),
        };
        let v = serde_json::to_value(&ev).unwrap();
        assert_eq!(v["type"], "log");
        assert_eq!(v["seq"], 3);
        assert_eq!(v["payload"]["message"], "hello");
        let back: Event = serde_json::from_value(v).unwrap();
        assert_eq!(back, ev);
    }

    #[test]
    fn rollups_replace_a_started_span_when_it_ends() {
        let t0 = Timestamp::from_unix_millis(1_000);
        let mut started = Span::new(SpanId::from_u64(1).unwrap(), SpanKind::Llm, "chat", t0);
        started.llm = Some(LlmDetails {
            model: Some("gpt-4o".into()),
            ..Default::default()
        });
        let mut r = Rollups::default();
        r.apply_span(None, &started);
        let mut ended = started.clone();
        ended.end_time = Some(Timestamp::from_unix_millis(1_250));
        ended.status.code = StatusCode::Error;
        ended.llm = Some(LlmDetails {
            input_tokens: Some(100),
            output_tokens: Some(20),
            cost_usd: Some(0.5),
            ..Default::default()
        });
        r.apply_span(Some(&started), &ended);
        // The same span ending twice (a retry) must not count twice.
        r.apply_span(Some(&ended), &ended);
        assert_eq!(r.span_count, 1);
        assert_eq!(r.error_count, 1);
        assert_eq!(
            (r.input_tokens, r.output_tokens, r.total_tokens),
            (100, 20, 120)
        );
        assert!((r.cost_usd - 0.5).abs() < 1e-9);
        assert_eq!(r.duration_ms, Some(250.0));
    }
}

#[cfg(test)]
mod json_round_trip {
    use super::*;
    use proptest::prelude::*;

    fn text() -> impl Strategy<Value = String> {
        // Any Unicode, including quotes, backslashes, control characters and emoji.
        any::<String>().prop_map(|s| s.chars().take(40).collect())
    }

    prop_compose! {
        fn span()(
            id in 1u64..,
            parent in proptest::option::of(1u64..),
            kind in proptest::sample::select(SpanKind::ALL.to_vec()),
            name in text(),
            start in -1_000_000_000_000_000_000i64..4_000_000_000_000_000_000,
            len in proptest::option::of(0i64..1_000_000_000_000),
            model in proptest::option::of(text()),
            tokens in proptest::option::of(0u64..1_000_000),
            prompt in proptest::option::of(text()),
            attr in text(),
            value in proptest::option::of(any::<i64>()),
        ) -> Span {
            let mut s = Span::new(SpanId::from_u64(id).unwrap(), kind, name, Timestamp::from_unix_nanos(start));
            s.parent_span_id = parent.and_then(SpanId::from_u64);
            s.end_time = len.map(|l| Timestamp::from_unix_nanos(start + l));
            if model.is_some() || tokens.is_some() {
                s.llm = Some(LlmDetails {
                    model,
                    input_tokens: tokens,
                    input_messages: prompt.map(|c| vec![Message { role: "user".into(), content: Some(c), ..Default::default() }]).unwrap_or_default(),
                    ..Default::default()
                });
            }
            if let Some(v) = value {
                s.attributes.insert(attr, serde_json::json!(v));
            }
            s
        }
    }

    proptest! {
        /// Every event reads back from its JSON exactly as it was written.
        #[test]
        fn events_survive_their_json(span in span(), seq in 1u64.., ended in any::<bool>(), message in text()) {
            let trace_id = TraceId::from_u128(0x0190_f1c2_a3b4_7c8d_9e0f_1122_3344_5566).unwrap();
            let bodies = [
                if ended { EventBody::SpanEnded(span.clone()) } else { EventBody::SpanStarted(span.clone()) },
                EventBody::Log(LogRecord { span_id: Some(span.span_id), message: message.clone(), ..Default::default() }),
                EventBody::Error(ErrorRecord { span_id: None, error_type: Some(message.clone()), message, stacktrace: None }),
            ];
            for body in bodies {
                let e = Event { trace_id, seq, time: span.start_time, component_id: span.component_id.clone(), body };
                let json = serde_json::to_string(&e).unwrap();
                let back: Event = serde_json::from_str(&json).unwrap();
                prop_assert_eq!(&back, &e, "{}", json);
            }
        }
    }
}
