//! Handlers of the native REST API. Each extracts, calls the store, maps the result.

use axum::extract::State as AxumState;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};
use serde_json::json;
use traceway_core::{
    span_tree, strip_event_body, strip_span, Event, EventInput, EventType, Level, NewTrace, State,
    Timestamp, Trace, TraceId, TracePatch,
};
use traceway_store::{
    AppendRequest, EventFilter, PageRequest, SpanPageRequest, TraceFilter, DEFAULT_SPAN_PAGE,
    MAX_SPAN_PAGE,
};

use crate::error::ApiError;
use crate::extract::{JsonBody, QueryArgs, Tenant, TraceIdPath};
use crate::openapi::{
    BadRequest, Conflict, Forbidden, FreeObject, Internal, NotFound, Overloaded, PayloadTooLarge,
    RequestTimeout, TenantHeader, Unauthenticated, Unavailable, UnsupportedMediaType,
};
use crate::AppState;

/// `POST /api/v1/traces`: 201 with the trace.
#[utoipa::path(
    post,
    path = "/api/v1/traces",
    tag = "traces",
    operation_id = "createTrace",
    summary = "Create a trace",
    description = "Creates a trace (every field is optional; without `trace_id` the server makes a UUIDv7). `Location` names it.",
    params(TenantHeader),
    request_body = NewTrace,
    responses(
        (status = 201, description = "Created.", body = Trace,
            headers(("Location" = String, description = "`/api/v1/traces/{id}`"))),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthenticated),
        (status = 403, response = Forbidden),
        (status = 409, response = Conflict),
        (status = 408, response = RequestTimeout),
        (status = 413, response = PayloadTooLarge),
        (status = 415, response = UnsupportedMediaType),
        (status = 429, response = Overloaded),
        (status = 500, response = Internal),
        (status = 503, response = Unavailable),
    ),
    security(("bearer" = ["ingest"]), ("basic" = ["ingest"])),
)]
pub async fn create_trace(
    AxumState(app): AxumState<AppState>,
    tenant: Tenant,
    JsonBody(new): JsonBody<NewTrace>,
) -> Result<Response, ApiError> {
    if let Err(stored) = app.stored_quota.check(app.store.as_ref(), &tenant.0).await {
        return Err(app.stored_quota.api_refusal(&tenant.0, stored));
    }
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
#[derive(Debug, Deserialize, utoipa::ToSchema)]
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

/// The states an append may end its trace in (the document's type of `end.state`).
#[derive(utoipa::ToSchema)]
#[allow(dead_code, clippy::upper_case_acronyms)]
pub enum EndState {
    /// Ended well.
    COMPLETED,
    /// Ended in error.
    ERRORED,
}

/// How an append ends its trace (`end` of [`AppendBody`]).
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AppendEnd {
    /// `COMPLETED` or `ERRORED`.
    #[schema(value_type = EndState)]
    pub state: State,
    /// Why (`root span ended`, …).
    #[serde(default)]
    pub reason: Option<String>,
}

/// The answer to an append.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct AppendResponse {
    /// Inputs that added something.
    pub accepted: u32,
    /// Inputs skipped as already stored.
    pub duplicates: u32,
    /// The trace's last `seq` after the append.
    pub last_seq: u64,
}

/// `POST /api/v1/traces/{id}/events`.
#[utoipa::path(
    post,
    path = "/api/v1/traces/{id}/events",
    tag = "events",
    operation_id = "appendEvents",
    summary = "Append events",
    description = "Appends a batch in order: span starts and ends, logs, errors. A span reported twice, or an event with an `id` already stored, is counted in `duplicates` and stored once. A span ending the trace's local root does not end the trace: change its state with `PATCH`. The spans count against the tenant's ingest quota.",
    params(
        ("id" = TraceId, Path, description = "The trace id: 32 hex digits or a hyphenated UUID, not all zeros."),
        TenantHeader,
    ),
    request_body = AppendBody,
    responses(
        (status = 200, description = "Appended.", body = AppendResponse),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthenticated),
        (status = 403, response = Forbidden),
        (status = 404, response = NotFound),
        (status = 409, response = Conflict),
        (status = 408, response = RequestTimeout),
        (status = 413, response = PayloadTooLarge),
        (status = 415, response = UnsupportedMediaType),
        (status = 429, response = Overloaded),
        (status = 500, response = Internal),
        (status = 503, response = Unavailable),
    ),
    security(("bearer" = ["ingest"]), ("basic" = ["ingest"])),
)]
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
    if let Err(stored) = app.stored_quota.check(app.store.as_ref(), &tenant.0).await {
        return Err(app.stored_quota.api_refusal(&tenant.0, stored));
    }
    let out = app
        .store
        .append(AppendRequest {
            fills: Vec::new(),
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
#[utoipa::path(
    patch,
    path = "/api/v1/traces/{id}",
    tag = "traces",
    operation_id = "patchTrace",
    summary = "Change a trace",
    description = "Changes the state (with a `reason`), the name, or sets metadata keys (the others stay). The same state again is no change; a terminal trace (`COMPLETED`, `ERRORED`) never leaves its state (409).",
    params(
        ("id" = TraceId, Path, description = "The trace id: 32 hex digits or a hyphenated UUID, not all zeros."),
        TenantHeader,
    ),
    request_body = TracePatch,
    responses(
        (status = 200, description = "The trace after the change.", body = Trace),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthenticated),
        (status = 403, response = Forbidden),
        (status = 404, response = NotFound),
        (status = 409, response = Conflict),
        (status = 408, response = RequestTimeout),
        (status = 413, response = PayloadTooLarge),
        (status = 415, response = UnsupportedMediaType),
        (status = 429, response = Overloaded),
        (status = 500, response = Internal),
        (status = 503, response = Unavailable),
    ),
    security(("bearer" = ["ingest"]), ("basic" = ["ingest"])),
)]
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
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ListParams {
    /// Only traces of this agent.
    agent_id: Option<String>,
    /// Only traces of this user.
    user_id: Option<String>,
    /// Only traces of this session.
    session_id: Option<String>,
    /// Only traces in this state.
    state: Option<State>,
    /// Only traces created at or after this time (RFC 3339, percent-encode a `+` offset; or
    /// Unix nanoseconds).
    from: Option<Timestamp>,
    /// Only traces created before this time.
    to: Option<Timestamp>,
    /// `true`: only traces with `rollups.error_count > 0`; `false`: only traces without.
    has_error: Option<bool>,
    /// Only traces whose `rollups.duration_ms` is at least this; a trace with no ended span
    /// never matches.
    #[param(minimum = 0)]
    min_duration_ms: Option<f64>,
    /// The `next_cursor` of the previous page. Not with `page` (400).
    cursor: Option<String>,
    /// Traces per page, 1 to 1000 (default 50). Not with `page_size` (400).
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<u32>,
    /// Page number from 1, for offset paging; `(page - 1) × page_size` is at most
    /// 1,000,000,000 (400 past it). Not with `cursor` (400).
    #[param(minimum = 1)]
    page: Option<u64>,
    /// The same as `limit`, for offset paging. Not with `limit` (400).
    #[param(minimum = 1, maximum = 1000)]
    page_size: Option<u32>,
}

/// One page of `GET /api/v1/traces`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct TraceList {
    /// Newest first.
    pub traces: Vec<Trace>,
    /// Pass as `cursor` for the next page; `null` on the last page.
    pub next_cursor: Option<String>,
}

use traceway_store::MAX_EVENTS_PAGE;
/// The most traces one listing page returns (the store's bound).
pub use traceway_store::MAX_PAGE;

/// `GET /api/v1/traces`: newest first. Either `cursor` + `limit`, or `page` + `page_size`.
#[utoipa::path(
    get,
    path = "/api/v1/traces",
    tag = "traces",
    operation_id = "listTraces",
    summary = "List traces",
    description = "The tenant's traces, newest first, filtered. Page with `cursor` + `limit`, or with `page` + `page_size`.",
    params(ListParams, TenantHeader),
    responses(
        (status = 200, description = "One page.", body = TraceList),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthenticated),
        (status = 403, response = Forbidden),
        (status = 429, response = Overloaded),
        (status = 500, response = Internal),
        (status = 503, response = Unavailable),
    ),
    security(("bearer" = ["read"]), ("basic" = ["read"])),
)]
pub async fn list_traces(
    AxumState(app): AxumState<AppState>,
    tenant: Tenant,
    QueryArgs(p): QueryArgs<ListParams>,
) -> Result<Json<TraceList>, ApiError> {
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
    Ok(Json(TraceList {
        traces: result.items,
        next_cursor: result.next_cursor,
    }))
}

/// Query of `GET /api/v1/traces/{id}`.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct GetParams {
    /// A lower level than the trace's, to see less (a higher one gives the trace's own).
    level: Option<Level>,
    /// Long-poll: answer once the trace is terminal, or after this long (`30s`, `2m`, or
    /// seconds), capped by `--max-wait`.
    #[param(
        example = "30s",
        pattern = "^([0-9]{1,6}(\\.[0-9]{1,3})?|[0-9]{1,6} ?(ms|s|m|h))$"
    )]
    wait: Option<String>,
    /// `compact`, `detailed` or `streaming` instead of the span tree.
    #[param(value_type = Option<TraceFormat>, inline)]
    format: Option<String>,
    /// Spans per page (1 to `MAX_SPAN_PAGE`; default `DEFAULT_SPAN_PAGE`): asks for the
    /// paged answer.
    span_limit: Option<u32>,
    /// The `span_page.next_cursor` of the page before: asks for the paged answer.
    span_cursor: Option<String>,
}

/// The most bytes of spans one answer of `GET /api/v1/traces/{id}` carries (issue 15,
/// failure 3.7): a page is cut before the span that would pass it (and says so), and a
/// trace whose whole tree would pass it is answered page by page.
pub const MAX_TRACE_RESPONSE_BYTES: usize = 8 << 20;

/// Lines of `format=streaming`, one per event; a trace with more gives its first ones and
/// says `truncated`.
pub const MAX_STREAMING_LINES: usize = 100_000;

/// A span page cursor: the seq of the last span event of the page before.
fn span_cursor(c: &str) -> Result<u64, ApiError> {
    c.parse::<u64>()
        .ok()
        .filter(|s| *s <= crate::bounds::MAX_SEQ)
        .ok_or_else(|| ApiError::bad_request("span_cursor is not a cursor this server gave"))
}

/// The paged answer: one page of spans in the order their current forms were written,
/// cut at [`MAX_TRACE_RESPONSE_BYTES`]. A span that was running when its page was read
/// comes again, ended, on a later page; the later form is the current one.
fn span_page_answer(
    trace: &traceway_core::Trace,
    level: Level,
    spans: Vec<(u64, traceway_core::Span)>,
    mut next: Option<u64>,
    limit: u32,
) -> serde_json::Value {
    let mut out = Vec::with_capacity(spans.len());
    let mut bytes = 0usize;
    let mut cut = false;
    for (seq, span) in spans {
        let v = serde_json::to_value(&span).unwrap_or_default();
        let size = serde_json::to_vec(&v).map_or(0, |b| b.len());
        if bytes + size > MAX_TRACE_RESPONSE_BYTES && !out.is_empty() {
            // The rest comes on the next page, from after the last span sent.
            cut = true;
            next = out.last().map(|(seq, _)| *seq);
            break;
        }
        bytes += size;
        out.push((seq, v));
    }
    let spans: Vec<serde_json::Value> = out.into_iter().map(|(_, v)| v).collect();
    serde_json::to_value(SpanPageDetail {
        trace,
        level,
        spans,
        span_page: SpanPageInfo {
            limit,
            next_cursor: next.map(|s| s.to_string()),
            cut_by_size: cut,
        },
    })
    .unwrap_or_default()
}

/// `GET /api/v1/traces/{id}` read page by page (with `span_limit` or `span_cursor`, or a
/// trace too large for one answer): the trace and one page of spans, flat.
#[derive(Serialize, utoipa::ToSchema)]
pub struct SpanPageDetail<'a> {
    /// The trace row.
    pub trace: &'a traceway_core::Trace,
    /// The level the spans are shown at.
    pub level: Level,
    /// The page's spans, in the order their current forms were written (a span read
    /// while running comes again, ended, on a later page: the later form wins).
    #[schema(value_type = Vec<traceway_core::Span>)]
    pub spans: Vec<serde_json::Value>,
    /// Where the page ends.
    pub span_page: SpanPageInfo,
}

/// The `span_page` of a paged trace answer.
#[derive(Serialize, utoipa::ToSchema)]
pub struct SpanPageInfo {
    /// The page size asked for (or the default).
    pub limit: u32,
    /// Pass it as `span_cursor` for the next page; `null` on the last page.
    pub next_cursor: Option<String>,
    /// The page was cut before `limit` spans because the answer reached its size cap.
    pub cut_by_size: bool,
}

/// The formats of `GET /api/v1/traces/{id}?format=`.
#[derive(Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum TraceFormat {
    /// One line per step with timing, tokens and status.
    Compact,
    /// Everything the level keeps, per step.
    Detailed,
    /// The event lines.
    Streaming,
}

/// `GET /api/v1/traces/{id}` without `format`: the trace and its span tree.
#[derive(Serialize, utoipa::ToSchema)]
pub struct TraceDetail {
    /// The trace row.
    pub trace: Trace,
    /// The level the spans are shown at.
    pub level: Level,
    /// The roots of the span tree, by start time.
    pub spans: Vec<traceway_core::SpanNode>,
}

/// `GET /api/v1/traces/{id}?format=…`, as `traceway_core::format` writes it.
#[derive(Serialize)]
pub struct FormattedTrace(pub serde_json::Value);

impl utoipa::PartialSchema for FormattedTrace {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        use utoipa::openapi::schema::{AdditionalProperties, ObjectBuilder, Type};
        ObjectBuilder::new()
            .schema_type(Type::Object)
            .property("format", <TraceFormat as utoipa::PartialSchema>::schema())
            .property("level", <Level as utoipa::PartialSchema>::schema())
            .required("format")
            .required("level")
            .additional_properties(Some(AdditionalProperties::FreeForm(true)))
            .description(Some(
                "`compact`: a header (state, duration, counts, tokens, cost) and `steps`, one \
                 per span in tree order with depth, offset, duration (`null` while running), \
                 status, model, tokens, cost, tool, document count and a readable `line`. \
                 `detailed`: `trace` and `steps` with every field the level keeps. \
                 `streaming`: `trace_id`, `lines` (one per event, at most 100,000) and \
                 `truncated`.",
            ))
            .into()
    }
}

impl utoipa::ToSchema for FormattedTrace {}

/// What `GET /api/v1/traces/{id}` answers: the span tree, or a format. The handler
/// builds its JSON directly; this enum names the two shapes for the document.
// Never built on a request path, so its size does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Serialize, utoipa::ToSchema)]
#[serde(untagged)]
pub enum TraceResponse {
    /// Without `format`.
    Tree(TraceDetail),
    /// With `format`.
    Formatted(FormattedTrace),
    /// Page by page.
    Paged(SpanPageDetail<'static>),
}

/// `GET /api/v1/traces/{id}`: the trace and its span tree, or one of the formats.
#[utoipa::path(
    get,
    path = "/api/v1/traces/{id}",
    tag = "traces",
    operation_id = "getTrace",
    summary = "Get a trace",
    description = "The trace and its span tree (`TraceDetail`), or with `format` one of the formatted views (`FormattedTrace`), or with `span_limit`/`span_cursor` (and for a trace too large for one answer: over 10,000 spans or 8 MiB) one page of its spans (`SpanPageDetail`). `level` shows less than the trace kept; `wait` long-polls until the trace is terminal. A format of a trace over 10,000 spans answers 400 `trace_too_large`.",
    params(
        ("id" = TraceId, Path, description = "The trace id: 32 hex digits or a hyphenated UUID, not all zeros."),
        GetParams,
        TenantHeader,
    ),
    responses(
        (status = 200, description = "The trace.", body = TraceResponse),
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
    let max = app.config.capture.max_content_bytes;
    if p.format.is_none() {
        // Bounded whatever the trace's size (issue 15, failure 3.7): one read of at most
        // MAX_SPAN_PAGE spans. A trace that fits (and whose tree is under the size cap) is
        // answered as before; a larger one, or a request that names a page, page by page.
        let paged = p.span_limit.is_some() || p.span_cursor.is_some();
        let limit = p.span_limit.unwrap_or(DEFAULT_SPAN_PAGE);
        if limit == 0 || limit > MAX_SPAN_PAGE {
            return Err(ApiError::bad_request(format!(
                "span_limit must be 1 to {MAX_SPAN_PAGE}"
            )));
        }
        let after_seq = p
            .span_cursor
            .as_deref()
            .map(span_cursor)
            .transpose()?
            .unwrap_or(0);
        let req = SpanPageRequest {
            after_seq,
            limit: if paged { limit } else { MAX_SPAN_PAGE },
        };
        let (trace, mut page) = app
            .store
            .get_span_page(&tenant.0, id, &req)
            .await?
            .ok_or_else(not_found)?;
        // A read may lower the level, never raise it above what was captured.
        let level = p.level.map_or(trace.level, |l| l.min(trace.level));
        if level < trace.level {
            page.spans
                .iter_mut()
                .for_each(|(_, s)| strip_span(s, level, max));
        }
        if !paged && page.next_after.is_none() {
            let spans: Vec<traceway_core::Span> = page.spans.into_iter().map(|(_, s)| s).collect();
            let size: usize = spans
                .iter()
                .map(|s| serde_json::to_vec(s).map_or(0, |b| b.len()))
                .sum();
            if size <= MAX_TRACE_RESPONSE_BYTES {
                return Ok(Json(
                    json!({"trace": trace, "level": level, "spans": span_tree(spans)}),
                ));
            }
            // Too large for one answer: the first page of the paged form instead.
            let again = SpanPageRequest {
                after_seq: 0,
                limit: DEFAULT_SPAN_PAGE,
            };
            let (trace, mut page) = app
                .store
                .get_span_page(&tenant.0, id, &again)
                .await?
                .ok_or_else(not_found)?;
            if level < trace.level {
                page.spans
                    .iter_mut()
                    .for_each(|(_, s)| strip_span(s, level, max));
            }
            return Ok(Json(span_page_answer(
                &trace,
                level,
                page.spans,
                page.next_after,
                DEFAULT_SPAN_PAGE,
            )));
        }
        if !paged {
            // More than MAX_SPAN_PAGE spans: the first page of the default size, cut from
            // what was read (a span moved past the cut by a later event comes later).
            let mut spans = page.spans;
            let mut next = page.next_after;
            if spans.len() > DEFAULT_SPAN_PAGE as usize {
                spans.truncate(DEFAULT_SPAN_PAGE as usize);
                next = spans.last().map(|(seq, _)| *seq);
            }
            return Ok(Json(span_page_answer(
                &trace,
                level,
                spans,
                next,
                DEFAULT_SPAN_PAGE,
            )));
        }
        return Ok(Json(span_page_answer(
            &trace,
            level,
            page.spans,
            page.next_after,
            limit,
        )));
    }
    // The formats read the whole trace: refused past MAX_SPAN_PAGE spans.
    let row = app
        .store
        .get_trace(&tenant.0, id)
        .await?
        .ok_or_else(not_found)?;
    if row.rollups.span_count > u64::from(MAX_SPAN_PAGE) {
        return Err(ApiError {
            status: StatusCode::BAD_REQUEST,
            code: "trace_too_large",
            message: format!(
                "trace {id} has {} spans; formats are given for traces of up to {MAX_SPAN_PAGE} spans: read its spans page by page with span_limit and span_cursor",
                row.rollups.span_count
            ),
        });
    }
    let (trace, mut spans) = app
        .store
        .get_trace_with_spans(&tenant.0, id)
        .await?
        .ok_or_else(not_found)?;
    let level = p.level.map_or(trace.level, |l| l.min(trace.level));
    if level < trace.level {
        spans.iter_mut().for_each(|s| strip_span(s, level, max));
    }
    let mut v = match p.format.as_deref() {
        Some("compact") => traceway_core::format::compact(&trace, &spans),
        Some("detailed") => traceway_core::format::detailed(&trace, &spans),
        Some("streaming") => {
            // A read returns at most a page of events: the lines are read page by page.
            let (mut events, truncated) = traceway_store::read_events_paged(
                &*app.store,
                &tenant.0,
                id,
                &[],
                None,
                MAX_STREAMING_LINES,
            )
            .await?
            .ok_or_else(not_found)?;
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
        other => {
            let other = other.unwrap_or_default();
            return Err(ApiError::bad_request(format!(
                "unknown format {other:?}: use compact, detailed or streaming"
            )));
        }
    };
    v["level"] = json!(level);
    Ok(Json(v))
}

/// Query of `GET /api/v1/traces/{id}/events`.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct EventParams {
    /// Only these types, comma-separated (`span_ended,error`).
    #[serde(rename = "type")]
    #[param(example = "span_ended,error")]
    types: Option<String>,
    /// Only events of spans of this component.
    component_id: Option<String>,
    /// Only events after this `seq` (at most 2^63 - 1).
    #[param(maximum = 9_223_372_036_854_775_807_u64)]
    after_seq: Option<u64>,
    /// Events per page, 1 to 10,000 (default 1000).
    #[param(minimum = 1, maximum = 10_000)]
    limit: Option<u32>,
    /// Skip this many matching events (at most 1,000,000,000).
    #[param(maximum = 1_000_000_000)]
    offset: Option<u64>,
    /// A lower level than the trace's, to see less.
    level: Option<Level>,
}

/// One page of a trace's events.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct EventList {
    /// By `seq`.
    pub events: Vec<Event>,
}

/// `GET /api/v1/traces/{id}/events`.
#[utoipa::path(
    get,
    path = "/api/v1/traces/{id}/events",
    tag = "events",
    operation_id = "listEvents",
    summary = "Read a trace's events",
    description = "The trace's event log by `seq`, filtered by type and component, paged by `after_seq` (or `offset`) and `limit`.",
    params(
        ("id" = TraceId, Path, description = "The trace id: 32 hex digits or a hyphenated UUID, not all zeros."),
        EventParams,
        TenantHeader,
    ),
    responses(
        (status = 200, description = "The events.", body = EventList),
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
pub async fn list_events(
    AxumState(app): AxumState<AppState>,
    tenant: Tenant,
    TraceIdPath(id): TraceIdPath,
    QueryArgs(p): QueryArgs<EventParams>,
) -> Result<Json<EventList>, ApiError> {
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
    Ok(Json(EventList { events }))
}

/// `DELETE /api/v1/traces/{id}`: 204, or 404.
#[utoipa::path(
    delete,
    path = "/api/v1/traces/{id}",
    tag = "traces",
    operation_id = "deleteTrace",
    summary = "Delete a trace",
    description = "Deletes the trace, its spans and its events.",
    params(
        ("id" = TraceId, Path, description = "The trace id: 32 hex digits or a hyphenated UUID, not all zeros."),
        TenantHeader,
    ),
    responses(
        (status = 204, description = "Deleted."),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthenticated),
        (status = 403, response = Forbidden),
        (status = 404, response = NotFound),
        (status = 429, response = Overloaded),
        (status = 500, response = Internal),
        (status = 503, response = Unavailable),
    ),
    security(("bearer" = ["admin"]), ("basic" = ["admin"])),
)]
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
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CleanupBody {
    /// Delete terminal traces that ended more than this many days ago.
    #[schema(minimum = 0)]
    pub older_than_days: f64,
    /// Delete at most this many (the CLI deletes in chunks to show progress).
    #[schema(minimum = 1)]
    pub limit: Option<u64>,
}

/// The answer to a cleanup.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct CleanupResponse {
    /// Traces deleted.
    pub deleted: u64,
    /// Traces that still match (more than `limit` did).
    pub remaining: u64,
}

/// `POST /api/v1/traces/cleanup`: deletes the tenant's finished traces that ended more
/// than `older_than_days` ago (at most `limit`); running traces are never touched. The
/// answer says how many were deleted and how many such traces remain.
#[utoipa::path(
    post,
    path = "/api/v1/traces/cleanup",
    tag = "traces",
    operation_id = "cleanupTraces",
    summary = "Delete old finished traces",
    description = "Deletes the tenant's terminal traces that ended more than `older_than_days` ago (at most `limit`); running traces are never touched.",
    params(TenantHeader),
    request_body = CleanupBody,
    responses(
        (status = 200, description = "Deleted, and how many remain.", body = CleanupResponse),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthenticated),
        (status = 403, response = Forbidden),
        (status = 408, response = RequestTimeout),
        (status = 413, response = PayloadTooLarge),
        (status = 415, response = UnsupportedMediaType),
        (status = 429, response = Overloaded),
        (status = 500, response = Internal),
        (status = 503, response = Unavailable),
    ),
    security(("bearer" = ["admin"]), ("basic" = ["admin"])),
)]
pub async fn cleanup(
    AxumState(app): AxumState<AppState>,
    tenant: Tenant,
    JsonBody(body): JsonBody<CleanupBody>,
) -> Result<Json<CleanupResponse>, ApiError> {
    if !(body.older_than_days.is_finite() && body.older_than_days >= 0.0) {
        return Err(ApiError::bad_request(
            "older_than_days must be a number >= 0",
        ));
    }
    // The document's `int64`: a larger limit is refused as the store could not hold it.
    if body.limit.is_some_and(|l| l == 0 || l > i64::MAX as u64) {
        return Err(ApiError::bad_request(format!(
            "limit must be 1 to {}",
            i64::MAX
        )));
    }
    let age = std::time::Duration::from_secs_f64((body.older_than_days * 86_400.0).min(1e12));
    let cutoff = app.clock.now().saturating_sub(age);
    let deleted = app
        .store
        .delete_ended_before(&tenant.0, cutoff, body.limit)
        .await?;
    let remaining = app.store.count_ended_before(&tenant.0, cutoff).await?;
    Ok(Json(CleanupResponse { deleted, remaining }))
}

/// `GET /metrics`: the OpenMetrics text format (Prometheus scrapes it).
#[utoipa::path(
    get,
    path = "/metrics",
    tag = "meta",
    operation_id = "metrics",
    summary = "Metrics (OpenMetrics)",
    description = "Ingest, write, stream and watchdog counters and histograms in the OpenMetrics text format, for Prometheus.",
    responses(
        (status = 200, description = "The metrics.", body = String,
            content_type = "application/openmetrics-text; version=1.0.0; charset=utf-8"),
        (status = 401, response = Unauthenticated),
        (status = 403, response = Forbidden),
    ),
    security(("bearer" = ["admin"]), ("basic" = ["admin"])),
)]
pub async fn metrics(AxumState(app): AxumState<AppState>) -> Response {
    let active = match app.store.active_traces().await {
        Ok(n) => Some(n),
        Err(e) => {
            tracing::warn!(error = %traceway_store::ErrorChain(&e), "active trace count unavailable for /metrics");
            None
        }
    };
    let body = app.metrics.render(&crate::metrics::AtScrape {
        active,
        subscribers: app.store.subscriber_count(),
        commit_retries: app.store.commit_retries(),
    });
    ([(header::CONTENT_TYPE, crate::metrics::CONTENT_TYPE)], body).into_response()
}

/// The answer of `/healthz` and `/readyz`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Health {
    /// `ok` (`/healthz`) or `ready` (`/readyz`).
    #[schema(example = "ok")]
    pub status: &'static str,
}

/// `GET /healthz`: the process is up.
#[utoipa::path(
    get,
    path = "/healthz",
    tag = "meta",
    operation_id = "healthz",
    summary = "Liveness",
    description = "The process is up. Always open.",
    responses((status = 200, description = "Up.", body = Health)),
    security(()),
)]
pub async fn healthz() -> Json<Health> {
    Json(Health { status: "ok" })
}

/// `GET /readyz`: the store answers. Not ready is 503 whatever the cause, so a load
/// balancer takes the replica out.
#[utoipa::path(
    get,
    path = "/readyz",
    tag = "meta",
    operation_id = "readyz",
    summary = "Readiness",
    description = "The store answers; 503 otherwise, so a load balancer takes the replica out.",
    responses(
        (status = 200, description = "Ready.", body = Health),
        (status = 401, response = Unauthenticated),
        (status = 403, response = Forbidden),
        (status = 503, response = Unavailable),
    ),
    security(("bearer" = ["admin"]), ("basic" = ["admin"])),
)]
pub async fn readyz(AxumState(app): AxumState<AppState>) -> Result<Json<Health>, ApiError> {
    match app.store.health().await {
        Ok(()) => Ok(Json(Health { status: "ready" })),
        Err(e) => {
            tracing::warn!(error = %traceway_store::ErrorChain(&e), "not ready");
            Err(ApiError {
                status: StatusCode::SERVICE_UNAVAILABLE,
                code: "unavailable",
                message: "the store is not ready".into(),
            })
        }
    }
}

/// `GET /api/v1/openapi.json`: the generated document (ADR 026), serialised once.
#[utoipa::path(
    get,
    path = "/api/v1/openapi.json",
    tag = "meta",
    operation_id = "openapi",
    summary = "This document",
    description = "The OpenAPI 3.1 document, generated from the handlers and types. Always open.",
    responses((status = 200, description = "The document.", body = FreeObject)),
    security(()),
)]
pub async fn openapi() -> Response {
    static DOCUMENT: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    let body = DOCUMENT.get_or_init(|| {
        crate::openapi::document()
            .to_json()
            .unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"))
    });
    ([(header::CONTENT_TYPE, "application/json")], body.as_str()).into_response()
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
