//! Handlers of the analysis routes: one trace's summary and analysis, and the analysis
//! across traces. The figures come from `traceway_core::analysis`; these only load,
//! bound and map. See ADRs 016 and 017.

use std::collections::BTreeMap;

use axum::extract::State as AxumState;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use traceway_core::analysis::{analyze_counted, summarize_counted, Across, AnalysisOptions};
use traceway_core::{Event, EventType, ModelUsage, Span, State, Timestamp, Trace, TraceId};
use traceway_store::{PageRequest, TraceFilter};

use crate::error::ApiError;
use crate::extract::{QueryArgs, Tenant, TraceIdPath};
use crate::openapi::{
    BadRequest, Forbidden, Internal, NotFound, Overloaded, TenantHeader, Unauthenticated,
    Unavailable,
};
use crate::AppState;

/// `error` events read for one trace's analysis (their types and messages make the error
/// groups); a trace with more is analysed on its first ones and says `events_truncated`.
pub const MAX_ANALYSIS_EVENTS: u32 = 100_000;

/// Trace rows read by the cross-trace analysis; a window with more is answered on the
/// newest ones and says `truncated`.
pub const MAX_TRACES: usize = 10_000;

/// What one trace's summary and analysis read (ADR 037): the row with the spans (one
/// read), the number of events of each type (never the events themselves), and the
/// `error` events, at most [`MAX_ANALYSIS_EVENTS`] of them.
struct Loaded {
    trace: Trace,
    spans: Vec<Span>,
    counts: Vec<(EventType, u64)>,
    errors: Vec<Event>,
    errors_truncated: bool,
}

async fn load(app: &AppState, tenant: &str, id: TraceId) -> Result<Loaded, ApiError> {
    let not_found = || ApiError::not_found(format!("trace {id} not found"));
    // The three reads are independent: run together, the counts and the `error` events
    // (each a walk of the trace's index) are read while the spans are (ADR 037).
    let (with_spans, counts, errors) = tokio::try_join!(
        async { Ok::<_, ApiError>(app.store.get_trace_with_spans(tenant, id).await?) },
        async { Ok::<_, ApiError>(app.store.count_events(tenant, id).await?) },
        async {
            Ok::<_, ApiError>(
                traceway_store::read_events_paged(
                    &*app.store,
                    tenant,
                    id,
                    &[EventType::Error],
                    None,
                    MAX_ANALYSIS_EVENTS as usize,
                )
                .await?,
            )
        },
    )?;
    let ((trace, spans), counts, (errors, errors_truncated)) = match (with_spans, counts, errors) {
        (Some(t), Some(c), Some(e)) => (t, c, e),
        _ => return Err(not_found()),
    };
    Ok(Loaded {
        trace,
        spans,
        counts: counts.iter().map(|(t, n)| (t, u64::from(n))).collect(),
        errors,
        errors_truncated,
    })
}

/// The answer of `GET /api/v1/traces/{id}/summary`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct TraceSummary {
    /// The trace.
    pub trace_id: TraceId,
    /// Its rollups, as stored.
    pub rollups: traceway_core::Rollups,
    /// State, duration, counts per kind, timing per component and per kind and name, per
    /// model, per tool, retrievals, errors, events per type.
    pub summary: traceway_core::analysis::Summary,
    /// The trace had more than 100,000 `error` events; the error figures cover the first
    /// ones (the counts of events per type are always complete).
    pub events_truncated: bool,
}

/// `GET /api/v1/traces/{id}/summary`: the rollups and the figures of the trace.
#[utoipa::path(
    get,
    path = "/api/v1/traces/{id}/summary",
    tag = "analysis",
    operation_id = "traceSummary",
    summary = "Summarise a trace",
    params(
        ("id" = TraceId, Path, description = "The trace id: 32 hex digits or a hyphenated UUID, not all zeros."),
        TenantHeader,
    ),
    responses(
        (status = 200, description = "The summary.", body = TraceSummary),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthenticated),
        (status = 403, response = Forbidden),
        (status = 404, response = NotFound),
        (status = 429, response = Overloaded),
        (status = 500, response = Internal),
        (status = 503, response = Unavailable),
    ),
    security(("bearer" = ["read"]), ("basic" = ["read"])),
)]
pub async fn trace_summary(
    AxumState(app): AxumState<AppState>,
    tenant: Tenant,
    TraceIdPath(id): TraceIdPath,
) -> Result<Json<TraceSummary>, ApiError> {
    let l = load(&app, &tenant.0, id).await?;
    let summary = summarize_counted(&l.trace, &l.spans, &l.counts, &l.errors, app.clock.now());
    Ok(Json(TraceSummary {
        trace_id: l.trace.trace_id,
        rollups: l.trace.rollups,
        summary,
        events_truncated: l.errors_truncated,
    }))
}

/// Thresholds of `GET /api/v1/traces/{id}/analysis`, all optional (defaults in ADR 016).
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct AnalysisParams {
    /// The same tool with the same arguments this many times is a loop (1 to 10000,
    /// default 3).
    #[param(minimum = 1, maximum = 10_000)]
    repeat_threshold: Option<usize>,
    /// A-B-A-B alternation of this many cycles is a loop (1 to 10000, default 2).
    #[param(minimum = 1, maximum = 10_000)]
    alternation_cycles: Option<usize>,
    /// The same LLM prompt this many times is a loop (1 to 10000, default 2).
    #[param(minimum = 1, maximum = 10_000)]
    repeated_prompt_threshold: Option<usize>,
    /// A component whose mean duration is over this many ms is flagged slow (default 5000).
    #[param(minimum = 0)]
    slow_mean_ms: Option<f64>,
    /// A kind or model with this share of the critical path is named dominant (0 to 1, default 0.5).
    #[param(minimum = 0, maximum = 1)]
    dominant_share: Option<f64>,
    /// A span with this share of the critical path gets a recommendation (0 to 1, default 0.2).
    #[param(minimum = 0, maximum = 1)]
    bottleneck_share: Option<f64>,
    /// This share of retrievals returning no document is reported (0 to 1, default 0.5).
    #[param(minimum = 0, maximum = 1)]
    empty_retrieval_share: Option<f64>,
    /// At most this many bottlenecks (1 to 10000, default 10).
    #[param(minimum = 1, maximum = 10_000)]
    max_bottlenecks: Option<usize>,
}

impl AnalysisParams {
    fn options(self) -> Result<AnalysisOptions, ApiError> {
        let mut o = AnalysisOptions::default();
        let counts = [
            (
                "repeat_threshold",
                self.repeat_threshold,
                &mut o.repeat_threshold,
            ),
            (
                "alternation_cycles",
                self.alternation_cycles,
                &mut o.alternation_cycles,
            ),
            (
                "repeated_prompt_threshold",
                self.repeated_prompt_threshold,
                &mut o.repeated_prompt_threshold,
            ),
            (
                "max_bottlenecks",
                self.max_bottlenecks,
                &mut o.max_bottlenecks,
            ),
        ];
        for (name, v, slot) in counts {
            if let Some(v) = v {
                if !(1..=10_000).contains(&v) {
                    return Err(ApiError::bad_request(format!("{name} must be 1 to 10000")));
                }
                *slot = v;
            }
        }
        if let Some(v) = self.slow_mean_ms {
            if !(v.is_finite() && v >= 0.0) {
                return Err(ApiError::bad_request("slow_mean_ms must be a number >= 0"));
            }
            o.slow_mean_ms = v;
        }
        let shares = [
            ("dominant_share", self.dominant_share, &mut o.dominant_share),
            (
                "bottleneck_share",
                self.bottleneck_share,
                &mut o.bottleneck_share,
            ),
            (
                "empty_retrieval_share",
                self.empty_retrieval_share,
                &mut o.empty_retrieval_share,
            ),
        ];
        for (name, v, slot) in shares {
            if let Some(v) = v {
                if !(0.0..=1.0).contains(&v) {
                    return Err(ApiError::bad_request(format!("{name} must be 0 to 1")));
                }
                *slot = v;
            }
        }
        Ok(o)
    }
}

/// The answer of `GET /api/v1/traces/{id}/analysis`: the analysis and its trace.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct TraceAnalysis {
    /// The trace.
    pub trace_id: TraceId,
    /// The trace had more than 100,000 `error` events; the error figures cover the first
    /// ones (the counts of events per type are always complete).
    pub events_truncated: bool,
    /// Summary, critical path, bottlenecks, error groups, loops, recommendations and the
    /// thresholds used (ADR 016).
    #[serde(flatten)]
    pub analysis: traceway_core::analysis::Analysis,
}

/// `GET /api/v1/traces/{id}/analysis`: summary, critical path, bottlenecks, error
/// groups, loops and recommendations. A running trace is analysed as far as it goes
/// (`partial: true`), its running spans counted up to now.
#[utoipa::path(
    get,
    path = "/api/v1/traces/{id}/analysis",
    tag = "analysis",
    operation_id = "traceAnalysis",
    summary = "Analyse a trace",
    description = "Summary, critical path, bottlenecks (by time on the critical path and self time), error groups, loops and recommendations, each naming its spans. A running trace is analysed as far as it goes (`partial: true`).",
    params(
        ("id" = TraceId, Path, description = "The trace id: 32 hex digits or a hyphenated UUID, not all zeros."),
        AnalysisParams,
        TenantHeader,
    ),
    responses(
        (status = 200, description = "The analysis.", body = TraceAnalysis),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthenticated),
        (status = 403, response = Forbidden),
        (status = 404, response = NotFound),
        (status = 429, response = Overloaded),
        (status = 500, response = Internal),
        (status = 503, response = Unavailable),
    ),
    security(("bearer" = ["read"]), ("basic" = ["read"])),
)]
pub async fn trace_analysis(
    AxumState(app): AxumState<AppState>,
    tenant: Tenant,
    TraceIdPath(id): TraceIdPath,
    QueryArgs(p): QueryArgs<AnalysisParams>,
) -> Result<Response, ApiError> {
    let opts = p.options()?;
    let l = load(&app, &tenant.0, id).await?;
    let analysis = analyze_counted(
        &l.trace,
        &l.spans,
        &l.counts,
        &l.errors,
        app.clock.now(),
        &opts,
    );
    let answer = TraceAnalysis {
        trace_id: l.trace.trace_id,
        events_truncated: l.errors_truncated,
        analysis,
    };
    // The same JSON as `Json`'s, written into a `Vec` rather than through `BytesMut`'s
    // writer: the answer of a large trace is about a megabyte written in small pieces,
    // and a `Vec`'s writes are a bounds check and a copy (ADR 037, third cut).
    let body = serde_json::to_vec(&answer).map_err(ApiError::internal)?;
    Ok(([(header::CONTENT_TYPE, "application/json")], body).into_response())
}

/// Query of `GET /api/v1/analysis`.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct CrossParams {
    /// Only traces of this agent.
    agent_id: Option<String>,
    /// Only traces created at or after this time.
    from: Option<Timestamp>,
    /// Only traces created before this time (not before `from`).
    to: Option<Timestamp>,
    /// Read at most this many traces (1 to 10000, default 10000).
    #[param(minimum = 1, maximum = 10_000)]
    limit: Option<usize>,
    /// Entries of each top list (1 to 100, default 10).
    #[param(minimum = 1, maximum = 100)]
    top: Option<usize>,
}

/// Default length of the cross-trace top lists (components, span names, error groups).
pub const DEFAULT_TOP: usize = 10;
/// Longest top list a request may ask for.
pub const MAX_TOP: usize = 100;

/// How many of the rows read had an analysis digest (ADR 028).
#[derive(Debug, Default, Serialize, utoipa::ToSchema)]
struct Summaries {
    /// Rows whose digest went into the top lists.
    traces: u64,
    /// Rows without one: still running, ended less than the analysis delay ago, stored
    /// before digests existed, or dropped from a full queue.
    missing: u64,
    /// Of `missing`, the traces not ended yet.
    missing_running: u64,
    /// Rows whose digest predates their last event (late spans; a new one is on its way).
    stale: u64,
}

/// The answer of `GET /api/v1/analysis`, for the document: the handler writes it with
/// `json!`, and the test `openapi::real_answers_match_their_documented_schemas` checks
/// the two agree (ADR 026).
#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
pub struct CrossAnalysis {
    /// The `agent_id` asked for.
    agent_id: Option<String>,
    /// The window's start asked for.
    from: Option<Timestamp>,
    /// The window's end asked for.
    to: Option<Timestamp>,
    /// Traces read.
    trace_count: u64,
    /// Traces `ERRORED` or with an error.
    error_count: u64,
    /// `error_count / trace_count` (0 without traces).
    error_rate: f64,
    /// Duration percentiles, in ms.
    duration_ms: Percentiles,
    /// Tokens in total.
    tokens: CrossTokens,
    /// Cost in US dollars in total.
    cost_usd: f64,
    /// Calls, tokens and cost per model.
    models: BTreeMap<String, ModelUsage>,
    /// The top components by self time, summed over the digests of the traces read.
    components: Vec<traceway_core::analysis::CrossTiming>,
    /// The top span names (with their kind) by self time.
    span_names: Vec<traceway_core::analysis::CrossTiming>,
    /// The top error groups by occurrences.
    error_groups: Vec<traceway_core::analysis::CrossErrorGroup>,
    /// How many traces read had a digest, and how many did not.
    summaries: Summaries,
    /// The most traces read (`limit`).
    max_traces: u64,
    /// The window had more traces than `max_traces`; the newest were read.
    truncated: bool,
}

/// Token totals of the cross-trace analysis.
#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
struct CrossTokens {
    input: u64,
    output: u64,
    total: u64,
}

/// Percentiles of a duration sample, in ms.
#[derive(Debug, Default, Serialize, utoipa::ToSchema)]
struct Percentiles {
    p50: Option<f64>,
    p95: Option<f64>,
    p99: Option<f64>,
}

fn percentile(sorted: &[f64], q: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    // Nearest rank.
    let rank = (q * sorted.len() as f64).ceil().max(1.0) as usize;
    Some(sorted[rank.min(sorted.len()) - 1])
}

/// `GET /api/v1/analysis?agent_id=&from=&to=`: trace count, error rate, duration
/// percentiles, tokens and cost per model, and the top components, span names and error
/// groups from the rows' analysis digests (ADR 028): from the trace rows only (never the
/// spans), over at most [`MAX_TRACES`] of the newest traces in the window.
#[utoipa::path(
    get,
    path = "/api/v1/analysis",
    tag = "analysis",
    operation_id = "crossAnalysis",
    summary = "Analyse across traces",
    description = "Over the tenant's traces created in the window (newest first, at most `limit`; `truncated` when there were more), from the trace rows' rollups only: counts, error rate, duration percentiles, tokens and cost in total and per model (ADR 017), and the top components and span names by self time and the top error groups, merged from each ended trace's analysis digest (ADR 028; traces without one are counted in `summaries`).",
    params(CrossParams, TenantHeader),
    responses(
        (status = 200, description = "The figures.", body = CrossAnalysis),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthenticated),
        (status = 403, response = Forbidden),
        (status = 429, response = Overloaded),
        (status = 500, response = Internal),
        (status = 503, response = Unavailable),
    ),
    security(("bearer" = ["read"]), ("basic" = ["read"])),
)]
pub async fn cross_analysis(
    AxumState(app): AxumState<AppState>,
    tenant: Tenant,
    QueryArgs(p): QueryArgs<CrossParams>,
) -> Result<Json<Value>, ApiError> {
    if let (Some(f), Some(t)) = (p.from, p.to) {
        if f > t {
            return Err(ApiError::bad_request("from must not be after to"));
        }
    }
    let max = p.limit.unwrap_or(MAX_TRACES);
    if !(1..=MAX_TRACES).contains(&max) {
        return Err(ApiError::bad_request(format!(
            "limit must be 1 to {MAX_TRACES}"
        )));
    }
    let filter = TraceFilter {
        agent_id: p.agent_id.clone(),
        created_after: p.from,
        created_before: p.to,
        ..Default::default()
    };
    let mut rows: Vec<Trace> = Vec::new();
    let mut cursor = None;
    let mut truncated = false;
    loop {
        let want = (max + 1 - rows.len()).min(crate::api::MAX_PAGE as usize);
        let page = app
            .store
            .list_traces(
                &tenant.0,
                &filter,
                &PageRequest {
                    cursor: cursor.take(),
                    offset: 0,
                    limit: want as u32,
                },
            )
            .await?;
        rows.extend(page.items);
        if rows.len() > max {
            rows.truncate(max);
            truncated = true;
            break;
        }
        match page.next_cursor {
            Some(c) => cursor = Some(c),
            None => break,
        }
    }
    let top = p.top.unwrap_or(DEFAULT_TOP);
    if !(1..=MAX_TOP).contains(&top) {
        return Err(ApiError::bad_request(format!("top must be 1 to {MAX_TOP}")));
    }
    let (across, summaries) = merge_digests(&rows);
    let across = across.top(top);
    let count = rows.len();
    let errored = rows
        .iter()
        .filter(|t| t.state == State::Errored || t.rollups.error_count > 0)
        .count();
    let mut durations: Vec<f64> = rows.iter().filter_map(|t| t.rollups.duration_ms).collect();
    durations.sort_by(f64::total_cmp);
    let mut models: BTreeMap<String, ModelUsage> = BTreeMap::new();
    let (mut input, mut output, mut total, mut cost) = (0u64, 0u64, 0u64, 0.0f64);
    for t in &rows {
        let r = &t.rollups;
        input += r.input_tokens;
        output += r.output_tokens;
        total += r.total_tokens;
        cost += r.cost_usd;
        for (m, u) in &r.models {
            models.entry(m.clone()).or_default().add(u, 1);
        }
    }
    Ok(Json(json!({
        "agent_id": p.agent_id,
        "from": p.from,
        "to": p.to,
        "trace_count": count,
        "error_count": errored,
        "error_rate": if count > 0 { errored as f64 / count as f64 } else { 0.0 },
        "duration_ms": Percentiles {
            p50: percentile(&durations, 0.50),
            p95: percentile(&durations, 0.95),
            p99: percentile(&durations, 0.99),
        },
        "tokens": {"input": input, "output": output, "total": total},
        "cost_usd": cost,
        "models": models,
        "components": across.components,
        "span_names": across.names,
        "error_groups": across.error_groups,
        "summaries": summaries,
        "max_traces": max,
        "truncated": truncated,
    })))
}

/// The rows' digests merged, and how many rows had none.
fn merge_digests(rows: &[Trace]) -> (Across, Summaries) {
    let mut across = Across::default();
    let mut s = Summaries::default();
    for t in rows {
        match &t.rollups.analysis {
            Some(d) => {
                across.add(d);
                s.traces += 1;
                s.stale += u64::from(d.at_seq < t.last_seq);
            }
            None => {
                s.missing += 1;
                s.missing_running += u64::from(!t.state.is_terminal());
            }
        }
    }
    (across, s)
}
