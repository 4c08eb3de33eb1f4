//! Handlers of the analysis routes: one trace's summary and analysis, and the analysis
//! across traces. The figures come from `traceway_core::analysis`; these only load,
//! bound and map. See ADRs 016 and 017.

use std::collections::BTreeMap;

use axum::extract::State as AxumState;
use axum::Json;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use traceway_core::analysis::{analyze, summarize, Across, AnalysisOptions};
use traceway_core::{Event, ModelUsage, Span, State, Timestamp, Trace, TraceId};
use traceway_store::{EventFilter, PageRequest, TraceFilter};

use crate::error::ApiError;
use crate::extract::{QueryArgs, Tenant, TraceIdPath};
use crate::AppState;

/// Events read for one trace's analysis (their distribution and error records); a trace
/// with more is analysed on its first ones and says `events_truncated`.
pub const MAX_ANALYSIS_EVENTS: u32 = 100_000;

/// Trace rows read by the cross-trace analysis; a window with more is answered on the
/// newest ones and says `truncated`.
pub const MAX_TRACES: usize = 10_000;

async fn load(
    app: &AppState,
    tenant: &str,
    id: TraceId,
) -> Result<(Trace, Vec<Span>, Vec<Event>, bool), ApiError> {
    let not_found = || ApiError::not_found(format!("trace {id} not found"));
    let trace = app
        .store
        .get_trace(tenant, id)
        .await?
        .ok_or_else(not_found)?;
    let spans = app
        .store
        .get_spans(tenant, id)
        .await?
        .ok_or_else(not_found)?;
    let filter = EventFilter {
        limit: MAX_ANALYSIS_EVENTS + 1,
        ..Default::default()
    };
    let mut events = app
        .store
        .read_events(tenant, id, &filter)
        .await?
        .ok_or_else(not_found)?;
    let truncated = events.len() > MAX_ANALYSIS_EVENTS as usize;
    events.truncate(MAX_ANALYSIS_EVENTS as usize);
    Ok((trace, spans, events, truncated))
}

/// `GET /api/v1/traces/{id}/summary`: the rollups and the figures of the trace.
pub async fn trace_summary(
    AxumState(app): AxumState<AppState>,
    tenant: Tenant,
    TraceIdPath(id): TraceIdPath,
) -> Result<Json<Value>, ApiError> {
    let (trace, spans, events, truncated) = load(&app, &tenant.0, id).await?;
    let summary = summarize(&trace, &spans, &events, app.clock.now());
    Ok(Json(json!({
        "trace_id": trace.trace_id,
        "rollups": trace.rollups,
        "summary": summary,
        "events_truncated": truncated,
    })))
}

/// Thresholds of `GET /api/v1/traces/{id}/analysis`, all optional.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AnalysisParams {
    repeat_threshold: Option<usize>,
    alternation_cycles: Option<usize>,
    repeated_prompt_threshold: Option<usize>,
    slow_mean_ms: Option<f64>,
    dominant_share: Option<f64>,
    bottleneck_share: Option<f64>,
    empty_retrieval_share: Option<f64>,
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

/// `GET /api/v1/traces/{id}/analysis`: summary, critical path, bottlenecks, error
/// groups, loops and recommendations. A running trace is analysed as far as it goes
/// (`partial: true`), its running spans counted up to now.
pub async fn trace_analysis(
    AxumState(app): AxumState<AppState>,
    tenant: Tenant,
    TraceIdPath(id): TraceIdPath,
    QueryArgs(p): QueryArgs<AnalysisParams>,
) -> Result<Json<Value>, ApiError> {
    let opts = p.options()?;
    let (trace, spans, events, truncated) = load(&app, &tenant.0, id).await?;
    let analysis = analyze(&trace, &spans, &events, app.clock.now(), &opts);
    let mut v = serde_json::to_value(&analysis)
        .map_err(|e| ApiError::internal(format!("analysis did not serialise: {e}")))?;
    v["trace_id"] = json!(trace.trace_id);
    v["events_truncated"] = json!(truncated);
    Ok(Json(v))
}

/// Query of `GET /api/v1/analysis`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CrossParams {
    agent_id: Option<String>,
    from: Option<Timestamp>,
    to: Option<Timestamp>,
    /// Read at most this many traces (1 to [`MAX_TRACES`], default [`MAX_TRACES`]).
    limit: Option<usize>,
    /// Entries of each top list (1 to [`MAX_TOP`], default [`DEFAULT_TOP`]).
    top: Option<usize>,
}

/// Default length of the cross-trace top lists (components, span names, error groups).
pub const DEFAULT_TOP: usize = 10;
/// Longest top list a request may ask for.
pub const MAX_TOP: usize = 100;

/// How many of the rows read had an analysis digest (ADR 028).
#[derive(Debug, Default, Serialize)]
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

/// Percentiles of a duration sample, in ms.
#[derive(Debug, Default, Serialize)]
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
