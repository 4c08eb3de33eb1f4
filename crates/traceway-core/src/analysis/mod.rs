//! Analysis of one trace: summary, critical path, bottlenecks by self time and time on the
//! critical path, error groups, loops, and recommendations that each cite their spans.
//!
//! Everything here is a pure function of the trace row, its spans, its events and `now`
//! (the time running spans are counted up to); nothing reads a clock. The tree is built
//! once in linear time (plus sorting sibling lists), so a trace of 10,000 spans analyses in
//! milliseconds. The rules are written down in ADR 016.

mod digest;
mod normalize;
mod timeline;

use std::collections::BTreeMap;

use rustc_hash::{FxHashMap as HashMap, FxHashSet as HashSet};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::model::{Event, EventBody, EventType, Span, SpanKind, State, StatusCode, Trace};
use crate::{SpanId, Timestamp};

pub use digest::{
    digest, digest_span_of_event_json, Across, AcrossTop, AnalysisDigest, CrossErrorGroup,
    CrossTiming, DigestErrorGroup, DigestTiming, DIGEST_TOP,
};
pub use normalize::{normalize_message, DEFAULT_VOLATILE_KEYS};
pub use timeline::{critical_path, span_timings, CriticalPath, PathShare, Segment, SpanTiming};

use normalize::{canonical, preview, Fingerprints, Volatile};
use timeline::{end_or_now, ms, Timeline};

/// Thresholds of the analysis. Every field has a default; the HTTP route takes them as
/// query parameters.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct AnalysisOptions {
    /// A tool called this many times with the same arguments is a loop.
    pub repeat_threshold: usize,
    /// This many A-B cycles in a row (A-B-A-B is 2) are an alternation loop.
    pub alternation_cycles: usize,
    /// The same prompt answered this many times is a repeated prompt.
    pub repeated_prompt_threshold: usize,
    /// The seed service's rule: a span name whose mean duration is above this is slow.
    pub slow_mean_ms: f64,
    /// A span kind taking at least this share of the critical path is reported.
    pub dominant_share: f64,
    /// A bottleneck taking at least this share of the critical path gets a recommendation.
    pub bottleneck_share: f64,
    /// Reported when at least this share of retrievals found no document.
    pub empty_retrieval_share: f64,
    /// How many bottlenecks to list.
    pub max_bottlenecks: usize,
    /// How many span ids a finding lists (the count is always complete).
    pub max_listed_spans: usize,
    /// Argument keys ignored when calls are compared (ids and times that change on every
    /// call). Matched case-insensitively, ignoring `_` and `-`.
    pub volatile_keys: Vec<String>,
}

impl Default for AnalysisOptions {
    fn default() -> Self {
        AnalysisOptions {
            repeat_threshold: 3,
            alternation_cycles: 2,
            repeated_prompt_threshold: 2,
            slow_mean_ms: 5000.0,
            dominant_share: 0.5,
            bottleneck_share: 0.2,
            empty_retrieval_share: 0.5,
            max_bottlenecks: 10,
            max_listed_spans: 20,
            volatile_keys: DEFAULT_VOLATILE_KEYS
                .iter()
                .map(|s| s.to_string())
                .collect(),
        }
    }
}

/// Timing of a group of spans (one component, or one kind and name).
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TimingStats {
    /// The component id, or the span name.
    pub key: String,
    /// The spans' kind (for a span-name group).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kind: Option<SpanKind>,
    /// Spans in the group.
    pub calls: u64,
    /// Of which ended with status `error`.
    pub errors: u64,
    /// Sum of durations (running spans up to the analysis time), in ms.
    pub total_ms: f64,
    /// Sum of self (exclusive) times, in ms.
    pub self_ms: f64,
    /// Time on the critical path, in ms.
    pub critical_ms: f64,
    /// Mean duration, in ms.
    pub mean_ms: f64,
    /// Median duration (nearest rank), in ms.
    pub p50_ms: f64,
    /// Longest duration, in ms.
    pub max_ms: f64,
}

/// Calls and tokens of one model.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Default, Serialize)]
pub struct ModelStats {
    /// The model (`unknown` when the span did not say).
    pub model: String,
    /// The provider, when the spans said.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub provider: Option<String>,
    /// LLM spans.
    pub calls: u64,
    /// Prompt tokens.
    pub input_tokens: u64,
    /// Completion tokens.
    pub output_tokens: u64,
    /// Prompt tokens served from a cache.
    pub cached_tokens: u64,
    /// Prompt tokens written to a cache.
    pub cache_write_tokens: u64,
    /// Reasoning tokens.
    pub reasoning_tokens: u64,
    /// Total tokens.
    pub total_tokens: u64,
    /// Cost in US dollars over the calls that have one.
    pub cost_usd: f64,
    /// Calls that have no cost (neither reported nor priced).
    pub calls_without_cost: u64,
}

/// Calls of one tool.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ToolStats {
    /// The tool's name.
    pub tool: String,
    /// Calls.
    pub calls: u64,
    /// Calls that ended with status `error`.
    pub errors: u64,
}

/// Retrievals of a trace.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Default, Serialize)]
pub struct RetrievalStats {
    /// Retrieval spans.
    pub calls: u64,
    /// Documents returned over all of them.
    pub documents: u64,
    /// Ended retrievals that returned no document.
    pub empty: u64,
    /// The best score seen.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub top_score: Option<f64>,
}

/// What a trace did, in figures.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Summary {
    /// The trace's state.
    pub state: State,
    /// The trace is not terminal: figures count running spans up to `analysed_at`.
    pub running: bool,
    /// The time running spans were counted up to.
    pub analysed_at: Timestamp,
    /// The earliest span start.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub start: Option<Timestamp>,
    /// The latest span end (or `analysed_at` while a span runs).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub end: Option<Timestamp>,
    /// From `start` to `end`, in ms.
    pub duration_ms: f64,
    /// Spans.
    pub span_count: u64,
    /// Spans that have not ended.
    pub running_spans: u64,
    /// Spans with status `error` plus error events tied to no known span.
    pub error_count: u64,
    /// Spans per kind.
    pub kinds: BTreeMap<String, u64>,
    /// Timing per component id (spans that name one).
    pub components: Vec<TimingStats>,
    /// Timing per kind and span name, by self time.
    pub names: Vec<TimingStats>,
    /// Per model, by total tokens.
    pub models: Vec<ModelStats>,
    /// Per tool, by calls.
    pub tools: Vec<ToolStats>,
    /// Retrievals.
    pub retrievals: RetrievalStats,
    /// Events per type.
    pub events: BTreeMap<String, u64>,
}

/// A kind and name that cost time, ranked by time on the critical path then self time.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Bottleneck {
    /// The spans' kind.
    pub kind: SpanKind,
    /// The span name.
    pub name: String,
    /// Spans of that kind and name.
    pub calls: u64,
    /// Time on the critical path, in ms.
    pub critical_ms: f64,
    /// Share of the critical path (0 to 1).
    pub critical_share: f64,
    /// Self time, in ms.
    pub self_ms: f64,
    /// Mean duration, in ms.
    pub mean_ms: f64,
    /// Longest, in ms.
    pub max_ms: f64,
    /// The mean is above `slow_mean_ms` (the seed service's rule).
    pub slow: bool,
    /// The spans with the most self time first.
    pub span_ids: Vec<SpanId>,
}

/// Errors that are the same error: same kind, name, type and normalised message.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ErrorGroup {
    /// The spans' kind (absent for error events tied to no span).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kind: Option<SpanKind>,
    /// The span name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The error type (`TimeoutError`, …), when known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error_type: Option<String>,
    /// The normalised message (numbers, ids and quoted text replaced).
    pub message: String,
    /// The first message as it was.
    pub example: String,
    /// Occurrences.
    pub count: u64,
    /// The failing spans, in time order.
    pub span_ids: Vec<SpanId>,
    /// The first occurrence.
    pub first_at: Timestamp,
    /// The last occurrence.
    pub last_at: Timestamp,
    /// A later span of the same kind and name that succeeded: the error was retried.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retry_succeeded: Option<SpanId>,
}

/// A loop the agent got into.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Loop {
    /// The same tool with the same (normalised) arguments, `repeat_threshold` times or more.
    RepeatedCall {
        /// The tool.
        tool: String,
        /// The arguments' canonical form, shortened.
        arguments: String,
        /// Calls.
        count: u64,
        /// The largest number of those calls that returned the same result.
        identical_results: u64,
        /// The calls.
        span_ids: Vec<SpanId>,
    },
    /// Fewer calls than a repeated call, but with the same arguments and the same result:
    /// the agent learned nothing from the repeat.
    NoProgress {
        /// The tool.
        tool: String,
        /// The arguments' canonical form, shortened.
        arguments: String,
        /// The result's canonical form, shortened.
        result: String,
        /// Calls.
        count: u64,
        /// The calls.
        span_ids: Vec<SpanId>,
    },
    /// Two calls alternating A-B-A-B, `alternation_cycles` cycles or more.
    Alternation {
        /// The two tools.
        tools: [String; 2],
        /// Complete A-B cycles.
        cycles: u64,
        /// The calls, in time order.
        span_ids: Vec<SpanId>,
    },
    /// The same prompt sent to the same model and answered more than once.
    RepeatedPrompt {
        /// The model.
        #[serde(skip_serializing_if = "Option::is_none")]
        model: Option<String>,
        /// The prompt's canonical form, shortened.
        prompt: String,
        /// Calls.
        count: u64,
        /// The calls.
        span_ids: Vec<SpanId>,
    },
}

/// Advice built from one finding, naming its evidence.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Recommendation {
    /// What finding it comes from (`repeated_call`, `critical_path_share`, …).
    pub kind: &'static str,
    /// The advice with its figures.
    pub message: String,
    /// The spans that show it.
    pub span_ids: Vec<SpanId>,
}

/// The whole analysis of one trace.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Analysis {
    /// The trace is not terminal: analysed as far as it goes, running spans counted up to
    /// `summary.analysed_at`.
    pub partial: bool,
    /// Figures.
    pub summary: Summary,
    /// The chain of work that set the duration.
    pub critical_path: CriticalPath,
    /// Where the time went, by critical-path time then self time.
    pub bottlenecks: Vec<Bottleneck>,
    /// Errors grouped.
    pub error_groups: Vec<ErrorGroup>,
    /// Loops found.
    pub loops: Vec<Loop>,
    /// Advice, each from a finding above.
    pub recommendations: Vec<Recommendation>,
    /// The thresholds used.
    pub options: AnalysisOptions,
}

fn p50(sorted: &[i64]) -> i64 {
    if sorted.is_empty() {
        0
    } else {
        sorted[sorted.len().div_ceil(2) - 1]
    }
}

struct Group {
    calls: u64,
    errors: u64,
    total: i64,
    self_ns: i64,
    critical: i64,
    durations: Vec<i64>,
    members: Vec<usize>,
}

impl Group {
    fn new() -> Group {
        Group {
            calls: 0,
            errors: 0,
            total: 0,
            self_ns: 0,
            critical: 0,
            durations: Vec::new(),
            members: Vec::new(),
        }
    }
    fn add(&mut self, i: usize, s: &Span, t: &Timeline, now: Timestamp) {
        let d = end_or_now(s, now) - s.start_time.unix_nanos();
        self.calls += 1;
        self.errors += u64::from(s.status.code == StatusCode::Error);
        self.total += d;
        self.self_ns += t.self_ns[i];
        self.critical += t.critical_ns[i];
        self.durations.push(d);
        self.members.push(i);
    }
    fn stats(&mut self, key: String, kind: Option<SpanKind>) -> TimingStats {
        self.durations.sort_unstable();
        TimingStats {
            key,
            kind,
            calls: self.calls,
            errors: self.errors,
            total_ms: ms(self.total),
            self_ms: ms(self.self_ns),
            critical_ms: ms(self.critical),
            mean_ms: ms(self.total) / self.calls.max(1) as f64,
            p50_ms: ms(p50(&self.durations)),
            max_ms: ms(self.durations.last().copied().unwrap_or(0)),
        }
    }
}

fn is_tool(s: &Span) -> bool {
    s.kind == SpanKind::Tool || s.tool.is_some()
}

fn tool_name(s: &Span) -> &str {
    s.tool
        .as_ref()
        .and_then(|t| t.name.as_deref())
        .unwrap_or(&s.name)
}

fn is_retrieval(s: &Span) -> bool {
    s.kind == SpanKind::Retriever || s.retrieval.is_some()
}

/// The attributes that name a span's error type, the first found wins.
const ERROR_TYPE_KEYS: [&str; 2] = ["exception.type", "error.type"];

/// The error type a span reports in its attributes.
fn attr_error_type(s: &Span) -> Option<String> {
    ERROR_TYPE_KEYS
        .iter()
        .find_map(|k| s.attributes.get(*k).and_then(Value::as_str))
        .map(str::to_string)
}

/// Work shared by the summary and the full analysis.
struct Prepared<'a> {
    trace: &'a Trace,
    spans: &'a [Span],
    /// The events read; only their `error` events are looked at (the counts come apart).
    events: &'a [Event],
    /// Events per type.
    counts: BTreeMap<&'static str, u64>,
    now: Timestamp,
    timeline: Timeline,
    /// (kind, name) groups, in first-seen order.
    names: Vec<((SpanKind, String), Group)>,
}

impl<'a> Prepared<'a> {
    fn new(
        trace: &'a Trace,
        spans: &'a [Span],
        events: &'a [Event],
        counts: BTreeMap<&'static str, u64>,
        now: Timestamp,
    ) -> Self {
        let timeline = Timeline::new(spans, now);
        let mut slot: HashMap<(SpanKind, &str), usize> = HashMap::default();
        let mut names: Vec<((SpanKind, String), Group)> = Vec::new();
        for (i, s) in spans.iter().enumerate() {
            let n = *slot.entry((s.kind, s.name.as_str())).or_insert_with(|| {
                names.push(((s.kind, s.name.clone()), Group::new()));
                names.len() - 1
            });
            names[n].1.add(i, s, &timeline, now);
        }
        Prepared {
            trace,
            spans,
            events,
            counts,
            now,
            timeline,
            names,
        }
    }

    fn summary(&mut self) -> Summary {
        let (spans, now, t) = (self.spans, self.now, &self.timeline);
        // Hash maps and a count per kind, ordered once at the end: a B-tree of string keys
        // compared every span's keys against several others (ADR 037).
        let mut kinds = [0u64; SpanKind::ALL.len()];
        let mut components: HashMap<&str, Group> = HashMap::default();
        let mut models: HashMap<&str, ModelStats> = HashMap::default();
        let mut tools: HashMap<&str, ToolStats> = HashMap::default();
        let mut retrievals = RetrievalStats::default();
        let mut error_count = 0;
        for (i, s) in spans.iter().enumerate() {
            kinds[s.kind as usize] += 1;
            error_count += u64::from(s.status.code == StatusCode::Error);
            if let Some(c) = &s.component_id {
                components
                    .entry(c.as_str())
                    .or_insert_with(Group::new)
                    .add(i, s, t, now);
            }
            if let Some(l) = &s.llm {
                let m = models
                    .entry(l.model.as_deref().unwrap_or("unknown"))
                    .or_default();
                if m.provider.is_none() {
                    m.provider = l.provider.clone();
                }
                m.calls += 1;
                m.input_tokens += l.input_tokens.unwrap_or(0);
                m.output_tokens += l.output_tokens.unwrap_or(0);
                m.cached_tokens += l.cached_tokens.unwrap_or(0);
                m.cache_write_tokens += l.cache_write_tokens.unwrap_or(0);
                m.reasoning_tokens += l.reasoning_tokens.unwrap_or(0);
                m.total_tokens += l.tokens_total();
                match l.cost_usd {
                    Some(c) => m.cost_usd += c,
                    None => m.calls_without_cost += 1,
                }
            }
            if is_tool(s) {
                let e = tools.entry(tool_name(s)).or_insert_with(|| ToolStats {
                    tool: tool_name(s).to_string(),
                    calls: 0,
                    errors: 0,
                });
                e.calls += 1;
                e.errors += u64::from(s.status.code == StatusCode::Error);
            }
            if is_retrieval(s) {
                let docs = s.retrieval.as_ref().map_or(&[][..], |r| &r.documents[..]);
                retrievals.calls += 1;
                retrievals.documents += docs.len() as u64;
                retrievals.empty += u64::from(docs.is_empty() && s.is_ended());
                for score in docs.iter().filter_map(|d| d.score) {
                    retrievals.top_score =
                        Some(retrievals.top_score.map_or(score, |b| b.max(score)));
                }
            }
        }
        // Error events tied to no known span count as errors of their own; the set of
        // span ids is only built when there are error events.
        let mut known: Option<HashSet<SpanId>> = None;
        for e in self.events {
            if let EventBody::Error(err) = &e.body {
                let known = known.get_or_insert_with(|| spans.iter().map(|s| s.span_id).collect());
                if err.span_id.is_none_or(|id| !known.contains(&id)) {
                    error_count += 1;
                }
            }
        }
        let start = spans.iter().map(|s| s.start_time).min();
        let end = spans
            .iter()
            .map(|s| Timestamp::from_unix_nanos(end_or_now(s, now)))
            .max();
        let mut names: Vec<TimingStats> = self
            .names
            .iter_mut()
            .map(|((k, n), g)| g.stats(n.clone(), Some(*k)))
            .collect();
        names.sort_by(|a, b| b.self_ms.total_cmp(&a.self_ms).then(a.key.cmp(&b.key)));
        let mut models: Vec<ModelStats> = models
            .into_iter()
            .map(|(k, mut m)| {
                m.model = k.to_string();
                m
            })
            .collect();
        models.sort_by(|a, b| {
            b.total_tokens
                .cmp(&a.total_tokens)
                .then(a.model.cmp(&b.model))
        });
        let mut tools: Vec<ToolStats> = tools.into_values().collect();
        let mut components: Vec<(&str, Group)> = components.into_iter().collect();
        components.sort_unstable_by(|a, b| a.0.cmp(b.0));
        let components: Vec<TimingStats> = components
            .into_iter()
            .map(|(k, mut g)| g.stats(k.to_string(), None))
            .collect();
        tools.sort_by(|a, b| b.calls.cmp(&a.calls).then(a.tool.cmp(&b.tool)));
        Summary {
            state: self.trace.state.clone(),
            running: !self.trace.state.is_terminal(),
            analysed_at: now,
            duration_ms: match (start, end) {
                (Some(s), Some(e)) => ms(e.unix_nanos() - s.unix_nanos()),
                _ => 0.0,
            },
            start,
            end,
            span_count: spans.len() as u64,
            running_spans: spans.iter().filter(|s| !s.is_ended()).count() as u64,
            error_count,
            kinds: SpanKind::ALL
                .iter()
                .zip(kinds)
                .filter(|&(_, n)| n > 0)
                .map(|(k, n)| (k.as_str().to_string(), n))
                .collect(),
            components,
            names,
            models,
            tools,
            retrievals,
            events: self
                .counts
                .iter()
                .map(|(k, n)| (k.to_string(), *n))
                .collect(),
        }
    }

    fn bottlenecks(&self, opts: &AnalysisOptions, path_ns: i64) -> Vec<Bottleneck> {
        let t = &self.timeline;
        let mut out: Vec<Bottleneck> = self
            .names
            .iter()
            .filter(|(_, g)| g.critical > 0 || g.self_ns > 0)
            .map(|((kind, name), g)| {
                // The spans with the most self time (ties: the lower index) first: the
                // top few are selected, then only they are sorted.
                let mut members = g.members.clone();
                let order =
                    |&a: &usize, &b: &usize| t.self_ns[b].cmp(&t.self_ns[a]).then(a.cmp(&b));
                if members.len() > opts.max_listed_spans && opts.max_listed_spans > 0 {
                    members.select_nth_unstable_by(opts.max_listed_spans - 1, order);
                }
                members.truncate(opts.max_listed_spans);
                members.sort_unstable_by(order);
                let mean = ms(g.total) / g.calls.max(1) as f64;
                Bottleneck {
                    kind: *kind,
                    name: name.clone(),
                    calls: g.calls,
                    critical_ms: ms(g.critical),
                    critical_share: if path_ns > 0 {
                        g.critical as f64 / path_ns as f64
                    } else {
                        0.0
                    },
                    self_ms: ms(g.self_ns),
                    mean_ms: mean,
                    max_ms: ms(g.durations.iter().copied().max().unwrap_or(0)),
                    slow: mean > opts.slow_mean_ms,
                    span_ids: members.into_iter().map(|i| self.spans[i].span_id).collect(),
                }
            })
            .collect();
        out.sort_by(|a, b| {
            b.critical_ms
                .total_cmp(&a.critical_ms)
                .then(b.self_ms.total_cmp(&a.self_ms))
                .then(a.name.cmp(&b.name))
        });
        out.truncate(opts.max_bottlenecks);
        out
    }

    fn error_groups(&self, opts: &AnalysisOptions) -> Vec<ErrorGroup> {
        let spans = self.spans;
        // Built only when there are error events.
        let mut by_id: Option<HashMap<SpanId, usize>> = None;
        // The first error event of each span gives its type (and a message if the status
        // has none).
        let mut event_of: HashMap<usize, (&Option<String>, &str)> = HashMap::default();
        let mut loose: Vec<(&Event, &crate::model::ErrorRecord)> = Vec::new();
        for e in self.events {
            if let EventBody::Error(err) = &e.body {
                let by_id = by_id.get_or_insert_with(|| {
                    spans
                        .iter()
                        .enumerate()
                        .map(|(i, s)| (s.span_id, i))
                        .collect()
                });
                match err.span_id.and_then(|id| by_id.get(&id)) {
                    Some(&i) => {
                        event_of.entry(i).or_insert((&err.error_type, &err.message));
                    }
                    None => loose.push((e, err)),
                }
            }
        }
        // Latest success per kind and name, to see whether an error was retried.
        let mut last_ok: HashMap<(SpanKind, &str), (Timestamp, usize)> = HashMap::default();
        for (i, s) in spans.iter().enumerate() {
            if s.is_ended() && s.status.code != StatusCode::Error {
                let e = last_ok
                    .entry((s.kind, s.name.as_str()))
                    .or_insert((s.start_time, i));
                if s.start_time > e.0 {
                    *e = (s.start_time, i);
                }
            }
        }
        type Key = (Option<SpanKind>, Option<String>, Option<String>, String);
        let mut slot: HashMap<Key, usize> = HashMap::default();
        let mut groups: Vec<(ErrorGroup, Vec<(Timestamp, SpanId)>)> = Vec::new();
        let mut add = |key: Key, raw: &str, at: Timestamp, span: Option<SpanId>| {
            let n = *slot.entry(key.clone()).or_insert_with(|| {
                groups.push((
                    ErrorGroup {
                        kind: key.0,
                        name: key.1.clone(),
                        error_type: key.2.clone(),
                        message: key.3.clone(),
                        example: preview(raw, 500),
                        count: 0,
                        span_ids: Vec::new(),
                        first_at: at,
                        last_at: at,
                        retry_succeeded: None,
                    },
                    Vec::new(),
                ));
                groups.len() - 1
            });
            let g = &mut groups[n];
            g.0.count += 1;
            if at < g.0.first_at {
                g.0.first_at = at;
                g.0.example = preview(raw, 500);
            }
            g.0.last_at = g.0.last_at.max(at);
            if let Some(id) = span {
                g.1.push((at, id));
            }
        };
        for (i, s) in spans.iter().enumerate() {
            if s.status.code != StatusCode::Error {
                continue;
            }
            let ev = event_of.get(&i);
            let ty = ev
                .and_then(|(t, _)| (*t).clone())
                .or_else(|| attr_error_type(s));
            let raw = s
                .status
                .message
                .as_deref()
                .or(ev.map(|(_, m)| *m))
                .unwrap_or("");
            let key = (
                Some(s.kind),
                Some(s.name.clone()),
                ty,
                normalize_message(raw),
            );
            add(key, raw, s.start_time, Some(s.span_id));
        }
        for (e, err) in loose {
            let key = (
                None,
                None,
                err.error_type.clone(),
                normalize_message(&err.message),
            );
            add(key, &err.message, e.time, None);
        }
        let mut out: Vec<ErrorGroup> = groups
            .into_iter()
            .map(|(mut g, mut ids)| {
                ids.sort();
                g.span_ids = ids
                    .into_iter()
                    .take(opts.max_listed_spans)
                    .map(|(_, id)| id)
                    .collect();
                if let (Some(kind), Some(name)) = (g.kind, g.name.as_deref()) {
                    if let Some(&(at, i)) = last_ok.get(&(kind, name)) {
                        if at > g.last_at {
                            g.retry_succeeded = Some(spans[i].span_id);
                        }
                    }
                }
                g
            })
            .collect();
        out.sort_by(|a, b| b.count.cmp(&a.count).then(a.first_at.cmp(&b.first_at)));
        out
    }

    fn loops(&self, opts: &AnalysisOptions) -> Vec<Loop> {
        let spans = self.spans;
        let volatile = Volatile::new(&opts.volatile_keys);
        let ids = |v: &[usize]| -> Vec<SpanId> {
            v.iter()
                .take(opts.max_listed_spans)
                .map(|&i| spans[i].span_id)
                .collect()
        };
        let mut calls: Vec<usize> = (0..spans.len()).filter(|&i| is_tool(&spans[i])).collect();
        calls.sort_by_key(|&i| (spans[i].start_time, spans[i].span_id));
        let args_of = |s: &'a Span| -> Option<&'a Value> {
            s.tool
                .as_ref()
                .and_then(|t| t.arguments.as_ref())
                .or(s.input.as_ref())
        };
        let result_of = |s: &'a Span| -> Option<&'a Value> {
            s.tool
                .as_ref()
                .and_then(|t| t.result.as_ref())
                .or(s.output.as_ref())
        };
        // Calls are compared by the fingerprint of their canonical form, written into one
        // buffer; the form itself is kept only for the findings reported.
        let fingerprints = Fingerprints::new();
        let mut buf = String::new();
        let mut fp = |v: &Value| -> u64 {
            buf.clear();
            canonical(v, &volatile, &mut buf);
            fingerprints.of(&buf)
        };
        let shown = |v: &Value| -> String {
            let mut out = String::new();
            canonical(v, &volatile, &mut out);
            preview(&out, 200)
        };
        // (tool, args fingerprint) per call; calls without arguments compare by name only
        // in the alternation check and not at all in the repeat check. Calls with the
        // same key form a group, numbered in the order first seen.
        let mut keys: Vec<(&str, u64)> = Vec::with_capacity(calls.len());
        let mut group_of: Vec<u32> = Vec::with_capacity(calls.len());
        let mut slot: HashMap<(&str, u64), u32> = HashMap::default();
        let mut sizes: Vec<u32> = Vec::new();
        for &i in &calls {
            let name = tool_name(&spans[i]);
            match args_of(&spans[i]) {
                Some(a) => {
                    let k = (name, fp(a));
                    keys.push(k);
                    let g = *slot.entry(k).or_insert_with(|| {
                        sizes.push(0);
                        (sizes.len() - 1) as u32
                    });
                    sizes[g as usize] += 1;
                    group_of.push(g);
                }
                None => {
                    keys.push((name, 0));
                    group_of.push(u32::MAX);
                }
            }
        }
        // The members of every group in call order, in one array (a counting sort).
        let mut starts: Vec<usize> = Vec::with_capacity(sizes.len() + 1);
        let mut at = 0usize;
        for &n in &sizes {
            starts.push(at);
            at += n as usize;
        }
        starts.push(at);
        let mut fill = starts.clone();
        let mut flat = vec![0usize; at];
        for (&i, &g) in calls.iter().zip(&group_of) {
            if g != u32::MAX {
                flat[fill[g as usize]] = i;
                fill[g as usize] += 1;
            }
        }
        let mut out = Vec::new();
        let mut results: Vec<(u64, usize)> = Vec::new();
        for g in 0..sizes.len() {
            let members = &flat[starts[g]..starts[g + 1]];
            if members.len() < 2 {
                // A single call can be neither a repeat nor a repeat without progress.
                continue;
            }
            // The calls with the same result: the largest set, then the one whose first
            // call has the lowest span index.
            results.clear();
            for (pos, &i) in members.iter().enumerate() {
                if let Some(r) = result_of(&spans[i]) {
                    results.push((fp(r), pos));
                }
            }
            results.sort_unstable();
            let mut best: Option<(usize, usize)> = None; // (start, end) in `results`
            let mut s = 0;
            while s < results.len() {
                let mut e = s + 1;
                while e < results.len() && results[e].0 == results[s].0 {
                    e += 1;
                }
                let better = match best {
                    None => true,
                    Some((bs, be)) => {
                        e - s > be - bs
                            || (e - s == be - bs && members[results[s].1] < members[results[bs].1])
                    }
                };
                if better {
                    best = Some((s, e));
                }
                s = e;
            }
            let same: Vec<usize> = best.map_or_else(Vec::new, |(s, e)| {
                results[s..e].iter().map(|&(_, pos)| members[pos]).collect()
            });
            let first = members[0];
            let args = || args_of(&spans[first]).map(&shown).unwrap_or_default();
            if members.len() >= opts.repeat_threshold.max(2) {
                out.push(Loop::RepeatedCall {
                    tool: tool_name(&spans[first]).to_string(),
                    arguments: args(),
                    count: members.len() as u64,
                    identical_results: same.len() as u64,
                    span_ids: ids(members),
                });
            } else if same.len() >= 2 {
                out.push(Loop::NoProgress {
                    tool: tool_name(&spans[first]).to_string(),
                    arguments: args(),
                    result: result_of(&spans[same[0]]).map(&shown).unwrap_or_default(),
                    count: same.len() as u64,
                    span_ids: ids(&same),
                });
            }
        }
        // A-B-A-B: maximal runs where each call equals the one two before and differs
        // from the one just before.
        let min_len = 2 * opts.alternation_cycles.max(2);
        let close = |s: usize, e: usize, out: &mut Vec<Loop>| {
            let len = e + 1 - s;
            if len >= min_len {
                out.push(Loop::Alternation {
                    tools: [
                        tool_name(&spans[calls[s]]).to_string(),
                        tool_name(&spans[calls[s + 1]]).to_string(),
                    ],
                    cycles: (len / 2) as u64,
                    span_ids: ids(&calls[s..=e]),
                });
            }
        };
        let mut s = 0;
        for i in 1..keys.len() {
            if keys[i] == keys[i - 1] {
                close(s, i - 1, &mut out);
                s = i;
            } else if i - s >= 2 && keys[i] != keys[i - 2] {
                close(s, i - 1, &mut out);
                s = i - 1;
            }
        }
        if !keys.is_empty() {
            close(s, keys.len() - 1, &mut out);
        }
        // Identical prompts answered more than once.
        type Calls = (String, Vec<usize>);
        let mut prompts: HashMap<(Option<&str>, u64), Calls> = HashMap::default();
        let mut porder = Vec::new();
        for (i, s) in spans.iter().enumerate() {
            let Some(l) = &s.llm else { continue };
            if !s.is_ended() || s.status.code == StatusCode::Error {
                continue;
            }
            let mut p = String::new();
            if !l.input_messages.is_empty() {
                for m in &l.input_messages {
                    p.push_str(&m.role);
                    p.push_str(": ");
                    p.push_str(m.content.as_deref().unwrap_or("").trim());
                    p.push('\n');
                }
            } else if let Some(v) = &s.input {
                canonical(v, &volatile, &mut p);
            } else {
                continue;
            }
            let k = (l.model.as_deref(), fingerprints.of(&p));
            prompts
                .entry(k)
                .or_insert_with(|| {
                    porder.push(k);
                    (preview(p.trim_end(), 200), Vec::new())
                })
                .1
                .push(i);
        }
        for k in porder {
            let (prompt, members) = &prompts[&k];
            if members.len() >= opts.repeated_prompt_threshold.max(2) {
                out.push(Loop::RepeatedPrompt {
                    model: k.0.map(str::to_string),
                    prompt: prompt.clone(),
                    count: members.len() as u64,
                    span_ids: ids(members),
                });
            }
        }
        out
    }
}

fn list(ids: &[SpanId]) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(6 * 18);
    for (n, id) in ids.iter().take(5).enumerate() {
        if n > 0 {
            s.push_str(", ");
        }
        // The id as `Display` writes it: 16 lower-case hex digits.
        let v = id.as_u64();
        s.extend(
            (0..16)
                .rev()
                .map(|k| HEX[(v >> (4 * k) & 0xf) as usize] as char),
        );
    }
    if ids.len() > 5 {
        s.push_str(", …");
    }
    s
}

fn secs(ms: f64) -> String {
    crate::format::human_duration(ms)
}

fn pct(share: f64) -> String {
    format!("{:.0}%", share * 100.0)
}

fn recommendations(
    a: &Analysis,
    spans: &[Span],
    t: &Timeline,
    opts: &AnalysisOptions,
) -> Vec<Recommendation> {
    // Built only for a retried error group.
    let mut by_id: Option<HashMap<SpanId, usize>> = None;
    let mut out = Vec::new();
    let mut rec = |kind: &'static str, message: String, span_ids: Vec<SpanId>| {
        out.push(Recommendation {
            kind,
            message,
            span_ids,
        })
    };
    for l in &a.loops {
        match l {
            Loop::RepeatedCall {
                tool,
                count,
                identical_results,
                span_ids,
                ..
            } => {
                let tail = if *identical_results >= 2 {
                    format!(
                        ", {identical_results} of them returned the same result: cache the result"
                    )
                } else {
                    ": cache the result or stop the agent from repeating the call".into()
                };
                rec(
                    "repeated_call",
                    format!(
                        "tool `{tool}` called {count} times with the same arguments (spans {}){tail}",
                        list(span_ids)
                    ),
                    span_ids.clone(),
                );
            }
            Loop::NoProgress {
                tool,
                count,
                span_ids,
                ..
            } => rec(
                "no_progress",
                format!(
                    "tool `{tool}` returned the same result {count} times for the same arguments (spans {}): the repeat made no progress; reuse the first result",
                    list(span_ids)
                ),
                span_ids.clone(),
            ),
            Loop::Alternation {
                tools,
                cycles,
                span_ids,
            } => rec(
                "alternation",
                format!(
                    "tools `{}` and `{}` alternate {cycles} times in a row (spans {}): the agent goes back and forth; add a stop condition",
                    tools[0],
                    tools[1],
                    list(span_ids)
                ),
                span_ids.clone(),
            ),
            Loop::RepeatedPrompt {
                model,
                count,
                span_ids,
                ..
            } => rec(
                "repeated_prompt",
                format!(
                    "the same prompt was answered {count} times{} (spans {}): cache the completion",
                    model.as_ref().map(|m| format!(" by `{m}`")).unwrap_or_default(),
                    list(span_ids)
                ),
                span_ids.clone(),
            ),
        }
    }
    let path = &a.critical_path;
    let total_path = path.duration_ms;
    for share in &path.by_kind {
        if share.share >= opts.dominant_share && total_path > 0.0 {
            let ids: Vec<SpanId> = top_on_path(path, |s| s.kind.as_str() == share.key, opts);
            rec(
                "critical_path_share",
                format!(
                    "{} spans are {} of the critical path ({} of {}; spans {})",
                    share.key,
                    pct(share.share),
                    secs(share.duration_ms),
                    secs(total_path),
                    list(&ids)
                ),
                ids,
            );
        }
    }
    for b in &a.bottlenecks {
        if b.critical_share >= opts.bottleneck_share {
            rec(
                "bottleneck",
                format!(
                    "{} `{}` holds {} of the critical path ({} over {} calls, {} self time; spans {})",
                    b.kind.as_str(),
                    b.name,
                    pct(b.critical_share),
                    secs(b.critical_ms),
                    b.calls,
                    secs(b.self_ms),
                    list(&b.span_ids)
                ),
                b.span_ids.clone(),
            );
        }
        if b.slow {
            rec(
                "slow_mean",
                format!(
                    "{} `{}` averages {} over {} calls, above the {} threshold (spans {})",
                    b.kind.as_str(),
                    b.name,
                    secs(b.mean_ms),
                    b.calls,
                    secs(opts.slow_mean_ms),
                    list(&b.span_ids)
                ),
                b.span_ids.clone(),
            );
        }
    }
    for g in &a.error_groups {
        let what = match (&g.kind, &g.name) {
            (Some(k), Some(n)) => format!("{} `{n}`", k.as_str()),
            _ => "the trace".to_string(),
        };
        let ty = g
            .error_type
            .as_ref()
            .map(|t| format!("{t}: "))
            .unwrap_or_default();
        match g.retry_succeeded {
            Some(ok) => {
                let mut ids = g.span_ids.clone();
                ids.push(ok);
                let by_id = by_id.get_or_insert_with(|| {
                    spans
                        .iter()
                        .enumerate()
                        .map(|(i, s)| (s.span_id, i))
                        .collect()
                });
                let lost: i64 = g
                    .span_ids
                    .iter()
                    .filter_map(|id| by_id.get(id).copied())
                    .map(|i| t.end[i] - t.start[i])
                    .sum();
                rec(
                    "retried_error",
                    format!(
                        "{what} failed {} time(s) with \"{ty}{}\" before span {ok} succeeded (spans {}); the failed attempts took {}",
                        g.count,
                        g.example,
                        list(&g.span_ids),
                        secs(ms(lost))
                    ),
                    ids,
                );
            }
            None => rec(
                "error",
                format!(
                    "{what} failed {} time(s) with \"{ty}{}\"{} and no later attempt succeeded",
                    g.count,
                    g.example,
                    if g.span_ids.is_empty() {
                        String::new()
                    } else {
                        format!(" (spans {})", list(&g.span_ids))
                    }
                ),
                g.span_ids.clone(),
            ),
        }
    }
    let r = &a.summary.retrievals;
    let ended_retrievals: Vec<&Span> = spans
        .iter()
        .filter(|s| is_retrieval(s) && s.is_ended())
        .collect();
    if r.empty > 0 && r.empty as f64 >= opts.empty_retrieval_share * ended_retrievals.len() as f64 {
        let ids: Vec<SpanId> = ended_retrievals
            .iter()
            .filter(|s| s.retrieval.as_ref().is_none_or(|x| x.documents.is_empty()))
            .take(opts.max_listed_spans)
            .map(|s| s.span_id)
            .collect();
        rec(
            "empty_retrievals",
            format!(
                "{} of {} retrievals returned no document (spans {}): check the query or the index",
                r.empty,
                ended_retrievals.len(),
                list(&ids)
            ),
            ids,
        );
    }
    if a.partial && a.summary.running_spans > 0 {
        let ids: Vec<SpanId> = spans
            .iter()
            .filter(|s| !s.is_ended())
            .take(opts.max_listed_spans)
            .map(|s| s.span_id)
            .collect();
        rec(
            "running",
            format!(
                "the trace is still running: {} span(s) have not ended (spans {}); their time counts up to the analysis time",
                a.summary.running_spans,
                list(&ids)
            ),
            ids,
        );
    }
    out
}

fn top_on_path(
    path: &CriticalPath,
    keep: impl Fn(&Segment) -> bool,
    opts: &AnalysisOptions,
) -> Vec<SpanId> {
    let mut per: HashMap<SpanId, f64> = HashMap::default();
    for s in path.segments.iter().filter(|s| keep(s)) {
        *per.entry(s.span_id).or_default() += s.duration_ms;
    }
    let mut v: Vec<(SpanId, f64)> = per.into_iter().collect();
    v.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    v.into_iter()
        .take(opts.max_listed_spans)
        .map(|(id, _)| id)
        .collect()
}

fn counts_of(events: &[Event]) -> BTreeMap<&'static str, u64> {
    let mut c = BTreeMap::new();
    for e in events {
        *c.entry(e.body.event_type().as_str()).or_default() += 1;
    }
    c
}

fn counts_from(counts: &[(EventType, u64)]) -> BTreeMap<&'static str, u64> {
    let mut c = BTreeMap::new();
    for &(t, n) in counts.iter().filter(|(_, n)| *n > 0) {
        *c.entry(t.as_str()).or_default() += n;
    }
    c
}

/// The figures of a trace: counts, timing per component and name, models, tools,
/// retrievals, errors, events. Running spans count up to `now`.
pub fn summarize(trace: &Trace, spans: &[Span], events: &[Event], now: Timestamp) -> Summary {
    Prepared::new(trace, spans, events, counts_of(events), now).summary()
}

/// [`summarize`] from what a store gives without reading every event: the number of
/// events of each type and the `error` events (in `seq` order). The figures are those of
/// `summarize` over the whole log.
pub fn summarize_counted(
    trace: &Trace,
    spans: &[Span],
    event_counts: &[(EventType, u64)],
    error_events: &[Event],
    now: Timestamp,
) -> Summary {
    Prepared::new(trace, spans, error_events, counts_from(event_counts), now).summary()
}

/// The whole analysis of a trace. A trace that is not terminal is analysed as far as it
/// goes (`partial`), running spans counted up to `now`.
pub fn analyze(
    trace: &Trace,
    spans: &[Span],
    events: &[Event],
    now: Timestamp,
    opts: &AnalysisOptions,
) -> Analysis {
    analyse(
        Prepared::new(trace, spans, events, counts_of(events), now),
        opts,
    )
}

/// [`analyze`] from what a store gives without reading every event: the number of events
/// of each type and the `error` events (in `seq` order; other events in the slice are not
/// looked at). The analysis is that of `analyze` over the whole log (ADR 037).
pub fn analyze_counted(
    trace: &Trace,
    spans: &[Span],
    event_counts: &[(EventType, u64)],
    error_events: &[Event],
    now: Timestamp,
    opts: &AnalysisOptions,
) -> Analysis {
    let counts = counts_from(event_counts);
    analyse(Prepared::new(trace, spans, error_events, counts, now), opts)
}

fn analyse(mut p: Prepared<'_>, opts: &AnalysisOptions) -> Analysis {
    let (trace, spans) = (p.trace, p.spans);
    let summary = p.summary();
    let critical_path = p.timeline.critical_path(spans);
    let path_ns: i64 = p.timeline.critical_ns.iter().sum();
    let mut a = Analysis {
        partial: !trace.state.is_terminal(),
        bottlenecks: p.bottlenecks(opts, path_ns),
        error_groups: p.error_groups(opts),
        loops: p.loops(opts),
        summary,
        critical_path,
        recommendations: Vec::new(),
        options: opts.clone(),
    };
    a.recommendations = recommendations(&a, spans, &p.timeline, opts);
    a
}
