//! Handlers of the native REST API. Each extracts, calls the store, maps the result.

use axum::extract::State as AxumState;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};
use serde_json::json;
use traceway_core::{
    span_tree, strip_event_body, strip_span, Event, EventInput, EventType, Level, NewTrace, State,
    Timestamp, Trace, TracePatch,
};
use traceway_store::{AppendRequest, EventFilter, PageRequest, TraceFilter};

use crate::error::ApiError;
use crate::extract::{JsonBody, QueryArgs, Tenant, TraceIdPath};
use crate::AppState;

/// `POST /api/v1/traces`: 201 with the trace.
pub async fn create_trace(
    AxumState(app): AxumState<AppState>,
    tenant: Tenant,
    JsonBody(new): JsonBody<NewTrace>,
) -> Result<Response, ApiError> {
    let (trace, _events) = app.store.create_trace(&tenant.0, new).await?;
    let location = format!("/api/v1/traces/{}", trace.trace_id);
    Ok((
        StatusCode::CREATED,
        [(header::LOCATION, location)],
        Json(trace),
    )
        .into_response())
}

/// The body of `POST /api/v1/traces/{id}/events`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AppendBody {
    /// The events, in order.
    pub events: Vec<EventInput>,
    /// When set, a trace that does not exist is created from it in the same write (its
    /// `trace_id`, when given, must be the path's); when the trace exists, its empty
    /// name, agent, session and user are filled from it and missing metadata keys added.
    /// Without it a missing trace is 404, as before.
    #[serde(default)]
    pub create_if_missing: Option<NewTrace>,
    /// After the events, in the same write, end the trace (`COMPLETED` or `ERRORED`)
    /// unless it has ended already: the first end decides, a later one is no error.
    #[serde(default)]
    pub end: Option<AppendEnd>,
}

/// How an append ends its trace (`end` of [`AppendBody`]).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AppendEnd {
    /// `COMPLETED` or `ERRORED`.
    pub state: State,
    /// Why (`root span ended`, …).
    #[serde(default)]
    pub reason: Option<String>,
}

/// The answer to an append.
#[derive(Debug, Serialize, Deserialize)]
pub struct AppendResponse {
    /// Inputs that added something.
    pub accepted: u32,
    /// Inputs skipped as already stored.
    pub duplicates: u32,
    /// The trace's last `seq` after the append.
    pub last_seq: u64,
}

/// `POST /api/v1/traces/{id}/events`.
pub async fn append_events(
    AxumState(app): AxumState<AppState>,
    tenant: Tenant,
    TraceIdPath(id): TraceIdPath,
    JsonBody(body): JsonBody<AppendBody>,
) -> Result<Json<AppendResponse>, ApiError> {
    let spans = body
        .events
        .iter()
        .filter(|e| {
            matches!(
                e,
                traceway_core::EventInput::SpanStarted { .. }
                    | traceway_core::EventInput::SpanEnded { .. }
            )
        })
        .count();
    if let Some(new) = &body.create_if_missing {
        if new.trace_id.is_some_and(|given| given != id) {
            return Err(ApiError::bad_request(format!(
                "create_if_missing.trace_id {} is not the trace of the path ({id})",
                new.trace_id.map(|t| t.to_string()).unwrap_or_default()
            )));
        }
    }
    let end = match body.end {
        None => None,
        Some(AppendEnd { state, reason }) => {
            if !state.is_terminal() {
                return Err(ApiError::bad_request(format!(
                    "end.state must be COMPLETED or ERRORED, not {state}"
                )));
            }
            Some(traceway_store::TraceEnd { state, reason })
        }
    };
    if let Err(wait) = app.ingest_quota.take(&tenant.0, spans as u64) {
        return Err(crate::quotas::api_refusal(&tenant.0, wait));
    }
    let out = app
        .store
        .append(AppendRequest {
            tenant: tenant.0.clone(),
            trace_id: id,
            create_if_missing: body.create_if_missing.map(|new| NewTrace {
                trace_id: Some(id),
                ..new
            }),
            events: body.events,
            end,
        })
        .await?;
    Ok(Json(AppendResponse {
        accepted: out.accepted,
        duplicates: out.duplicates,
        last_seq: out.last_seq,
    }))
}

/// `PATCH /api/v1/traces/{id}`: state, name, metadata.
pub async fn patch_trace(
    AxumState(app): AxumState<AppState>,
    tenant: Tenant,
    TraceIdPath(id): TraceIdPath,
    JsonBody(patch): JsonBody<TracePatch>,
) -> Result<Json<Trace>, ApiError> {
    let (trace, _events) = app.store.update_trace(&tenant.0, id, patch).await?;
    Ok(Json(trace))
}

/// Query of `GET /api/v1/traces`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListParams {
    agent_id: Option<String>,
    user_id: Option<String>,
    session_id: Option<String>,
    state: Option<State>,
    /// Created at or after (RFC 3339).
    from: Option<Timestamp>,
    /// Created before (RFC 3339).
    to: Option<Timestamp>,
    has_error: Option<bool>,
    min_duration_ms: Option<f64>,
    cursor: Option<String>,
    limit: Option<u32>,
    page: Option<u64>,
    page_size: Option<u32>,
}

use traceway_store::MAX_EVENTS_PAGE;
/// The most traces one listing page returns (the store's bound).
pub use traceway_store::MAX_PAGE;

/// `GET /api/v1/traces`: newest first. Either `cursor` + `limit`, or `page` + `page_size`.
pub async fn list_traces(
    AxumState(app): AxumState<AppState>,
    tenant: Tenant,
    QueryArgs(p): QueryArgs<ListParams>,
) -> Result<Json<serde_json::Value>, ApiError> {
    if p.limit.is_some() && p.page_size.is_some() {
        return Err(ApiError::bad_request(
            "use either limit or page_size, not both",
        ));
    }
    if p.min_duration_ms
        .is_some_and(|d| !(d.is_finite() && d >= 0.0))
    {
        return Err(ApiError::bad_request(
            "min_duration_ms must be a number >= 0",
        ));
    }
    let limit = p.limit.or(p.page_size).unwrap_or(50);
    if limit == 0 || limit > MAX_PAGE {
        return Err(ApiError::bad_request(format!(
            "limit/page_size must be 1 to {MAX_PAGE}"
        )));
    }
    let page = p.page.unwrap_or(1);
    if page == 0 {
        return Err(ApiError::bad_request("page starts at 1"));
    }
    if p.cursor.is_some() && p.page.is_some() {
        return Err(ApiError::bad_request("use either cursor or page, not both"));
    }
    let filter = TraceFilter {
        agent_id: p.agent_id,
        user_id: p.user_id,
        session_id: p.session_id,
        state: p.state,
        created_after: p.from,
        created_before: p.to,
        has_error: p.has_error,
        min_duration_ms: p.min_duration_ms,
    };
    let req = PageRequest {
        cursor: p.cursor,
        offset: crate::bounds::page_offset(page, limit)?,
        limit,
    };
    let result = app.store.list_traces(&tenant.0, &filter, &req).await?;
    Ok(Json(
        json!({"traces": result.items, "next_cursor": result.next_cursor}),
    ))
}

/// Query of `GET /api/v1/traces/{id}`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GetParams {
    /// A lower level than the trace's, to see less.
    level: Option<Level>,
    /// Long-poll: answer once the trace is terminal, or after this long (`30s`, `2m`, or
    /// seconds), capped by `--max-wait`.
    wait: Option<String>,
    /// `compact`, `detailed` or `streaming` instead of the span tree.
    format: Option<String>,
}

/// `GET /api/v1/traces/{id}`: the trace and its span tree, or one of the formats.
pub async fn get_trace(
    AxumState(app): AxumState<AppState>,
    tenant: Tenant,
    TraceIdPath(id): TraceIdPath,
    QueryArgs(p): QueryArgs<GetParams>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let not_found = || ApiError::not_found(format!("trace {id} not found"));
    if let Some(wait) = &p.wait {
        let wait = crate::stream::parse_wait(wait)?;
        crate::stream::wait_until_terminal(&app, &tenant.0, id, wait).await?;
    }
    let (trace, mut spans) = app
        .store
        .get_trace_with_spans(&tenant.0, id)
        .await?
        .ok_or_else(not_found)?;
    // A read may lower the level, never raise it above what was captured.
    let level = p.level.map_or(trace.level, |l| l.min(trace.level));
    if level < trace.level {
        let max = app.config.capture.max_content_bytes;
        spans.iter_mut().for_each(|s| strip_span(s, level, max));
    }
    let mut v = match p.format.as_deref() {
        None => {
            return Ok(Json(
                json!({"trace": trace, "level": level, "spans": span_tree(spans)}),
            ))
        }
        Some("compact") => traceway_core::format::compact(&trace, &spans),
        Some("detailed") => traceway_core::format::detailed(&trace, &spans),
        Some("streaming") => {
            let max_events = crate::analysis::MAX_ANALYSIS_EVENTS;
            let filter = EventFilter {
                limit: max_events + 1,
                ..Default::default()
            };
            let mut events = app
                .store
                .read_events(&tenant.0, id, &filter)
                .await?
                .ok_or_else(not_found)?;
            let truncated = events.len() > max_events as usize;
            events.truncate(max_events as usize);
            let max = app.config.capture.max_content_bytes;
            let lines: Vec<String> = events
                .iter_mut()
                .map(|e| {
                    if level < trace.level {
                        strip_event_body(&mut e.body, level, max);
                    }
                    traceway_core::format::streaming_line(e)
                })
                .collect();
            json!({"format": "streaming", "trace_id": trace.trace_id, "lines": lines, "truncated": truncated})
        }
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "unknown format {other:?}: use compact, detailed or streaming"
            )))
        }
    };
    v["level"] = json!(level);
    Ok(Json(v))
}

/// Query of `GET /api/v1/traces/{id}/events`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventParams {
    /// Comma-separated event types.
    #[serde(rename = "type")]
    types: Option<String>,
    component_id: Option<String>,
    after_seq: Option<u64>,
    limit: Option<u32>,
    offset: Option<u64>,
    level: Option<Level>,
}

/// `GET /api/v1/traces/{id}/events`.
pub async fn list_events(
    AxumState(app): AxumState<AppState>,
    tenant: Tenant,
    TraceIdPath(id): TraceIdPath,
    QueryArgs(p): QueryArgs<EventParams>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let types = match &p.types {
        Some(s) => s
            .split(',')
            .filter(|t| !t.is_empty())
            .map(|t| {
                t.trim().parse::<EventType>().map_err(|e| {
                    ApiError::bad_request(format!("invalid query parameter type: {e}"))
                })
            })
            .collect::<Result<Vec<_>, _>>()?,
        None => Vec::new(),
    };
    let limit = p.limit.unwrap_or(1000);
    if limit == 0 || limit > MAX_EVENTS_PAGE {
        return Err(ApiError::bad_request(format!(
            "limit must be 1 to {MAX_EVENTS_PAGE}"
        )));
    }
    let filter = EventFilter {
        types,
        component_id: p.component_id,
        after_seq: crate::bounds::after_seq(p.after_seq.unwrap_or(0))?,
        offset: crate::bounds::offset(p.offset.unwrap_or(0))?,
        limit,
    };
    let not_found = || ApiError::not_found(format!("trace {id} not found"));
    let mut events: Vec<Event> = app
        .store
        .read_events(&tenant.0, id, &filter)
        .await?
        .ok_or_else(not_found)?;
    if let Some(level) = p.level {
        let trace = app
            .store
            .get_trace(&tenant.0, id)
            .await?
            .ok_or_else(not_found)?;
        if level < trace.level {
            let max = app.config.capture.max_content_bytes;
            events
                .iter_mut()
                .for_each(|e| strip_event_body(&mut e.body, level, max));
        }
    }
    Ok(Json(json!({"events": events})))
}

/// `DELETE /api/v1/traces/{id}`: 204, or 404.
pub async fn delete_trace(
    AxumState(app): AxumState<AppState>,
    tenant: Tenant,
    TraceIdPath(id): TraceIdPath,
) -> Result<StatusCode, ApiError> {
    if app.store.delete_trace(&tenant.0, id).await? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::not_found(format!("trace {id} not found")))
    }
}

/// The body of `POST /api/v1/traces/cleanup`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CleanupBody {
    /// Delete terminal traces that ended more than this many days ago.
    pub older_than_days: f64,
    /// Delete at most this many (the CLI deletes in chunks to show progress).
    pub limit: Option<u64>,
}

/// `POST /api/v1/traces/cleanup`: deletes the tenant's finished traces that ended more
/// than `older_than_days` ago (at most `limit`); running traces are never touched. The
/// answer says how many were deleted and how many such traces remain.
pub async fn cleanup(
    AxumState(app): AxumState<AppState>,
    tenant: Tenant,
    JsonBody(body): JsonBody<CleanupBody>,
) -> Result<Json<serde_json::Value>, ApiError> {
    if !(body.older_than_days.is_finite() && body.older_than_days >= 0.0) {
        return Err(ApiError::bad_request(
            "older_than_days must be a number >= 0",
        ));
    }
    if body.limit == Some(0) {
        return Err(ApiError::bad_request("limit must be at least 1"));
    }
    let age = std::time::Duration::from_secs_f64((body.older_than_days * 86_400.0).min(1e12));
    let cutoff = app.clock.now().saturating_sub(age);
    let deleted = app
        .store
        .delete_ended_before(&tenant.0, cutoff, body.limit)
        .await?;
    let remaining = app.store.count_ended_before(&tenant.0, cutoff).await?;
    Ok(Json(json!({"deleted": deleted, "remaining": remaining})))
}

/// `GET /metrics`: the OpenMetrics text format (Prometheus scrapes it).
pub async fn metrics(AxumState(app): AxumState<AppState>) -> Response {
    let active = match app.store.active_traces().await {
        Ok(n) => Some(n),
        Err(e) => {
            tracing::warn!(error = %e, "active trace count unavailable for /metrics");
            None
        }
    };
    let body = app.metrics.render(active, app.store.subscriber_count());
    ([(header::CONTENT_TYPE, crate::metrics::CONTENT_TYPE)], body).into_response()
}

/// `GET /healthz`: the process is up.
pub async fn healthz() -> Json<serde_json::Value> {
    Json(json!({"status": "ok"}))
}

/// `GET /readyz`: the store answers. Not ready is 503 whatever the cause, so a load
/// balancer takes the replica out.
pub async fn readyz(
    AxumState(app): AxumState<AppState>,
) -> Result<Json<serde_json::Value>, ApiError> {
    match app.store.health().await {
        Ok(()) => Ok(Json(json!({"status": "ready"}))),
        Err(e) => {
            tracing::warn!(error = %e, "not ready");
            Err(ApiError {
                status: StatusCode::SERVICE_UNAVAILABLE,
                code: "unavailable",
                message: "the store is not ready".into(),
            })
        }
    }
}

/// `GET /api/v1/openapi.json`.
pub async fn openapi() -> Response {
    (
        [(header::CONTENT_TYPE, "application/json")],
        crate::OPENAPI_JSON,
    )
        .into_response()
}

/// Unknown routes.
pub async fn not_found() -> ApiError {
    ApiError::not_found("no such route; see /api/v1/openapi.json")
}

/// Known route, wrong method.
pub async fn method_not_allowed() -> ApiError {
    ApiError {
        status: StatusCode::METHOD_NOT_ALLOWED,
        code: "method_not_allowed",
        message: "method not allowed on this route".into(),
    }
}
