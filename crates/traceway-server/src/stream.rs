//! Live streaming: SSE of one trace (replay, then live, exact resume) and of a tenant,
//! and the `wait=` long-poll of `GET /api/v1/traces/{id}`.
//!
//! Resume protocol (no gap, no duplicate): subscribe to the hub first, then replay the
//! stored events after the client's last `seq`, then forward live events whose `seq` is
//! above the last one sent. An event committed while the replay runs arrives both ways and
//! is dropped by the `seq` check.

use std::convert::Infallible;
use std::time::Duration;

use axum::extract::State as AxumState;
use axum::http::HeaderMap;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures::Stream;
use serde::Deserialize;
use tokio::sync::mpsc;
use traceway_core::{strip_event_body, Event, EventType, Level, State, TraceId};
use traceway_store::{EventFilter, Scope, Store};

use crate::error::ApiError;
use crate::extract::{QueryArgs, Tenant, TraceIdPath};
use crate::openapi::{
    BadRequest, Forbidden, Internal, NotFound, Overloaded, TenantHeader, Unauthenticated,
    Unavailable,
};
use crate::AppState;

/// How events are written in the stream.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum StreamFormat {
    /// Each event as its full JSON.
    #[default]
    Json,
    /// One compact line per event (`#6 span_ended llm answer … 1.20s ok`).
    Streaming,
}

/// Query of `GET /api/v1/traces/{id}/stream`.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct TraceStreamParams {
    /// Resume after this seq (the `Last-Event-ID` header wins when both are given; each
    /// must be at most 2^63 - 1, or the request is refused).
    #[param(maximum = 9_223_372_036_854_775_807_u64)]
    after_seq: Option<u64>,
    /// `json` (each event's JSON, default) or `streaming` (one readable line per event).
    #[param(inline)]
    format: Option<StreamFormat>,
    /// A lower level than the trace's, to see less.
    level: Option<Level>,
}

/// The `Last-Event-ID` header of an SSE reconnection.
#[derive(Debug, utoipa::IntoParams)]
#[into_params(parameter_in = Header)]
pub struct LastEventId {
    /// The `seq` of the last event received: the stream resumes right after it.
    #[param(
        rename = "Last-Event-ID",
        nullable = false,
        maximum = 9_223_372_036_854_775_807_u64
    )]
    pub last_event_id: Option<u64>,
}

/// Replay page size.
const REPLAY_PAGE: u32 = 1000;
/// SSE events a connection may have waiting before its writer task waits for the client.
const CONNECTION_BUFFER: usize = 64;
/// The comment a stream's last message is when it has been open `--stream-max-lifetime`.
const LIFETIME_COMMENT: &str = "stream lifetime reached; reconnect (with Last-Event-ID to resume)";

/// The last message of a stream open for its whole lifetime (ADR 007).
fn lifetime_reached() -> SseEvent {
    SseEvent::default().comment(LIFETIME_COMMENT)
}

fn last_event_id(headers: &HeaderMap) -> Result<Option<u64>, ApiError> {
    match headers.get("last-event-id") {
        None => Ok(None),
        Some(v) => v
            .to_str()
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .map(Some)
            .ok_or_else(|| ApiError::bad_request("Last-Event-ID must be the seq of an event")),
    }
}

struct Render {
    format: StreamFormat,
    level: Option<Level>,
    max_content: usize,
}

impl Render {
    /// The SSE message for an event; `id` is its SSE id (the seq, or `trace:seq`).
    fn sse(&self, mut e: Event, trace_level: Level, id: String) -> SseEvent {
        if let Some(level) = self.level.filter(|l| *l < trace_level) {
            strip_event_body(&mut e.body, level, self.max_content);
        }
        let data = match self.format {
            StreamFormat::Json => serde_json::to_string(&e).unwrap_or_else(|_| "{}".into()),
            StreamFormat::Streaming => traceway_core::format::streaming_line(&e),
        };
        SseEvent::default()
            .id(id)
            .event(e.body.event_type().as_str())
            .data(data)
    }
}

fn sse_response(rx: mpsc::Receiver<SseEvent>, keepalive: Duration) -> Response {
    let stream = futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|e| (Ok::<_, Infallible>(e), rx))
    });
    sse(stream, keepalive)
}

fn sse(
    stream: impl Stream<Item = Result<SseEvent, Infallible>> + Send + 'static,
    keepalive: Duration,
) -> Response {
    Sse::new(stream)
        .keep_alive(KeepAlive::new().interval(keepalive))
        .into_response()
}

/// `GET /api/v1/traces/{id}/stream`: stored events, then live ones; `Last-Event-ID` (or
/// `after_seq`) resumes exactly. After `trace_ended` the stream stays open for the grace
/// period (late spans), then closes. A subscriber that falls behind gets a final `lagged`
/// event with the seq to resume from. Open `--stream-max-lifetime` at most: then a last
/// comment, and the client resumes with `Last-Event-ID` (ADR 007).
#[utoipa::path(
    get,
    path = "/api/v1/traces/{id}/stream",
    tag = "streaming",
    operation_id = "traceStream",
    summary = "Stream a trace (SSE)",
    description = "Server-sent events: the stored events after `after_seq` (or `Last-Event-ID`), then live ones, with no gap and no duplicate. Each SSE message has `id` = the event's `seq`, `event` = its type, and `data` = the event's JSON (`Event`) or, with `format=streaming`, one readable line. After `trace_ended` the stream stays open for the grace period (late spans), then closes. A subscriber that falls behind gets a final `lagged` event whose data is `{\"trace_id\", \"resume_after_seq\"}`. Comments keep the connection alive. A response stays open at most the server's `--stream-max-lifetime` (default 30 min): then a last comment says so and the server ends it; reconnecting with `Last-Event-ID` resumes with no gap and no duplicate.",
    params(
        ("id" = TraceId, Path, description = "The trace id: 32 hex digits or a hyphenated UUID, not all zeros."),
        TraceStreamParams,
        LastEventId,
        TenantHeader,
    ),
    responses(
        (status = 200, description = "The event stream.", body = crate::openapi::SseEvent, content_type = "text/event-stream"),
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
pub async fn trace_stream(
    AxumState(app): AxumState<AppState>,
    tenant: Tenant,
    TraceIdPath(id): TraceIdPath,
    headers: HeaderMap,
    QueryArgs(p): QueryArgs<TraceStreamParams>,
) -> Result<Response, ApiError> {
    // Both are checked, even when the header wins: a request is refused for a bad value in
    // either (schemathesis: `after_seq=2^63` with `Last-Event-ID` was served).
    let query = p.after_seq.map(crate::bounds::after_seq).transpose()?;
    let header = last_event_id(&headers)?
        .map(crate::bounds::after_seq)
        .transpose()?;
    let after = header.or(query).unwrap_or(0);
    let permit = app
        .stream_quota
        .acquire(&tenant.0)
        .ok_or_else(|| crate::quotas::stream_refusal(&tenant.0, app.config.quota_live_streams))?;
    // Subscribe before anything is read, so nothing committed from here on is missed.
    let sub = app.store.subscribe(&tenant.0, Scope::Trace(id));
    let trace = app
        .store
        .get_trace(&tenant.0, id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("trace {id} not found")))?;
    let render = Render {
        format: p.format.unwrap_or_default(),
        level: p.level,
        max_content: app.config.capture.max_content_bytes,
    };
    let (tx, rx) = mpsc::channel(CONNECTION_BUFFER);
    let (grace, keepalive) = (app.config.stream_grace, app.config.sse_keepalive);
    let end_at = tokio::time::Instant::now() + app.config.stream_max_lifetime;
    let mut shutdown = app.shutdown.clone();
    tokio::spawn(async move {
        let _permit = permit;
        let _ = follow_trace(
            app.store,
            tenant.0,
            id,
            trace.level,
            after,
            sub,
            render,
            tx,
            grace,
            end_at,
            &mut shutdown,
        )
        .await;
    });
    Ok(sse_response(rx, keepalive))
}

/// Sends replay then live events until the trace ended (plus grace), the subscriber
/// lagged, the stream's lifetime is over (`end_at`), the client left, or the server
/// stops. Errors mean the client is gone.
#[allow(clippy::too_many_arguments)]
async fn follow_trace(
    store: std::sync::Arc<dyn Store>,
    tenant: String,
    id: TraceId,
    trace_level: Level,
    after: u64,
    mut sub: traceway_store::Subscription,
    render: Render,
    tx: mpsc::Sender<SseEvent>,
    grace: Duration,
    end_at: tokio::time::Instant,
    shutdown: &mut tokio::sync::watch::Receiver<bool>,
) -> Result<(), ()> {
    let mut last = after;
    let mut ended = false;
    loop {
        let filter = EventFilter {
            after_seq: last,
            limit: REPLAY_PAGE,
            ..Default::default()
        };
        let page = match store.read_events(&tenant, id, &filter).await {
            Ok(Some(page)) => page,
            Ok(None) => return Ok(()), // deleted meanwhile
            Err(e) => {
                tracing::warn!(error = %traceway_store::ErrorChain(&e), trace_id = %id, "replay failed");
                return Err(());
            }
        };
        let full = page.len() == REPLAY_PAGE as usize;
        for e in page {
            last = e.seq;
            ended |= e.body.event_type() == EventType::TraceEnded;
            let sse_id = e.seq.to_string();
            tx.send(render.sse(e, trace_level, sse_id))
                .await
                .map_err(|_| ())?;
        }
        if !full {
            break;
        }
        if tokio::time::Instant::now() >= end_at {
            let _ = tx.send(lifetime_reached()).await;
            return Ok(());
        }
    }
    let deadline = tokio::time::sleep(if ended { grace } else { Duration::MAX / 4 });
    tokio::pin!(deadline);
    let mut armed = ended;
    let lifetime = tokio::time::sleep_until(end_at);
    tokio::pin!(lifetime);
    loop {
        tokio::select! {
            e = sub.events.recv() => match e {
                Some(e) if e.seq > last => {
                    last = e.seq;
                    let is_end = e.body.event_type() == EventType::TraceEnded;
                    tx.send(render.sse((*e).clone(), trace_level, e.seq.to_string())).await.map_err(|_| ())?;
                    if is_end && !armed {
                        armed = true;
                        deadline.as_mut().reset(tokio::time::Instant::now() + grace);
                    }
                }
                Some(_) => {}
                None => {
                    // The hub's buffer was drained before the close, so every event up
                    // to `last` was sent: the client resumes right after it.
                    if sub.lagged().is_some() {
                        let data = serde_json::json!({"trace_id": id, "resume_after_seq": last});
                        let _ = tx.send(SseEvent::default().event("lagged").data(data.to_string())).await;
                    }
                    return Ok(());
                }
            },
            _ = &mut deadline, if armed => return Ok(()),
            _ = &mut lifetime => {
                let _ = tx.send(lifetime_reached()).await;
                return Ok(());
            }
            _ = stopping(shutdown) => return Ok(()),
            _ = tx.closed() => return Err(()),
        }
    }
}

/// Query of `GET /api/v1/stream`.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct TenantStreamParams {
    /// Every event, not only trace-level ones (trace started, state changed, errors,
    /// trace ended).
    #[serde(default)]
    all: bool,
    /// Only traces of this agent.
    agent_id: Option<String>,
    /// Only traces in this state.
    state: Option<State>,
    /// `json` (default) or `streaming`.
    #[param(inline)]
    format: Option<StreamFormat>,
}

/// `GET /api/v1/stream`: the tenant's events as they commit (trace started, state
/// changed, errors, trace ended; every event with `all=true`), filtered by agent or state.
/// Live only: event ids are `trace_id:seq`; resume a trace with its own stream. A client
/// that falls behind gets a last `lagged` event that names, per trace, the seq to resume
/// after. Holds one slot of the tenant's live-stream quota while open (429 past it).
/// Open `--stream-max-lifetime` at most, then ends after a last comment (ADR 007).
#[utoipa::path(
    get,
    path = "/api/v1/stream",
    tag = "streaming",
    operation_id = "tenantStream",
    summary = "Stream the tenant (SSE)",
    description = "Server-sent events of the tenant's traces as they commit: trace started, state changed, errors and trace ended (every event with `all=true`), filtered by agent or state. Live only: each message's `id` is `trace_id:seq`, `event` the type, `data` the event's JSON or a readable line; resume a trace with its own stream. A subscriber that falls behind gets a final `lagged` event whose data is `{\"trace_id\", \"resume_after_seq\", \"resume\": [{\"trace_id\", \"after_seq\"}], \"resume_complete\"}`: per trace the stream sent, the seq to resume that trace's own stream after. Holds one slot of the tenant's live-stream quota while open. A response stays open at most the server's `--stream-max-lifetime` (default 30 min): then a last comment says so and the server ends it; reconnect (events committed meanwhile are not replayed: read the traces for those).",
    params(TenantStreamParams, TenantHeader),
    responses(
        (status = 200, description = "The event stream.", body = crate::openapi::SseEvent, content_type = "text/event-stream"),
        (status = 400, response = BadRequest),
        (status = 429, response = Overloaded),
        (status = 401, response = Unauthenticated),
        (status = 403, response = Forbidden),
    ),
    security(("bearer" = ["read"]), ("basic" = ["read"])),
)]
pub async fn tenant_stream(
    AxumState(app): AxumState<AppState>,
    tenant: Tenant,
    QueryArgs(p): QueryArgs<TenantStreamParams>,
) -> Result<Response, ApiError> {
    let permit = app
        .stream_quota
        .acquire(&tenant.0)
        .ok_or_else(|| crate::quotas::stream_refusal(&tenant.0, app.config.quota_live_streams))?;
    let mut sub = app.store.subscribe(
        &tenant.0,
        Scope::Tenant {
            all_events: p.all,
            agent_id: p.agent_id,
            state: p.state,
        },
    );
    let render = Render {
        format: p.format.unwrap_or_default(),
        level: None,
        max_content: 0,
    };
    let (tx, rx) = mpsc::channel(CONNECTION_BUFFER);
    let mut shutdown = app.shutdown.clone();
    let lifetime = tokio::time::sleep(app.config.stream_max_lifetime);
    tokio::spawn(async move {
        let _permit = permit;
        let mut sent = SentSeqs::default();
        tokio::pin!(lifetime);
        loop {
            tokio::select! {
                e = sub.events.recv() => match e {
                    Some(e) => {
                        sent.note(e.trace_id, e.seq);
                        let id = format!("{}:{}", e.trace_id, e.seq);
                        let ev = render.sse((*e).clone(), Level::Debug, id);
                        if tx.send(ev).await.is_err() {
                            return;
                        }
                    }
                    None => {
                        if let Some(lag) = sub.lagged() {
                            let data = sent.lagged_event(lag);
                            let _ = tx.send(SseEvent::default().event("lagged").data(data.to_string())).await;
                        }
                        return;
                    }
                },
                _ = &mut lifetime => {
                    let _ = tx.send(lifetime_reached()).await;
                    return;
                }
                _ = stopping(&mut shutdown) => return,
                _ = tx.closed() => return,
            }
        }
    });
    Ok(sse_response(rx, app.config.sse_keepalive))
}

/// The last seq a tenant stream sent of each trace, for the resume point of its `lagged`
/// event: the most recently active [`SentSeqs::MAX`] traces.
#[derive(Default)]
struct SentSeqs {
    last: std::collections::HashMap<TraceId, (u64, u64)>,
    tick: u64,
    forgot: bool,
}

impl SentSeqs {
    /// Traces remembered; past it, the one sent least recently is forgotten (and the
    /// `lagged` event says so).
    const MAX: usize = 1000;

    fn note(&mut self, trace: TraceId, seq: u64) {
        self.tick += 1;
        self.last.insert(trace, (seq, self.tick));
        if self.last.len() > Self::MAX {
            if let Some(oldest) = self.last.iter().min_by_key(|(_, v)| v.1).map(|(k, _)| *k) {
                self.last.remove(&oldest);
            }
            self.forgot = true;
        }
    }

    /// The `lagged` event's data (issue 15, failure 3.9): where the hub could not deliver
    /// (`trace_id`, `resume_after_seq`), and for every trace this stream sent events of,
    /// the seq to resume after (`resume`). Every event of those traces after that seq
    /// that the stream's filter lets through was missed, and none before it: reading each
    /// one's `events?after_seq=` (or its own stream with `Last-Event-ID`) resumes exactly.
    /// Traces whose first event came after the lag are not named: list the tenant's
    /// traces for those.
    fn lagged_event(&self, lag: traceway_store::Lagged) -> serde_json::Value {
        let mut resume: Vec<(TraceId, u64)> =
            self.last.iter().map(|(t, (seq, _))| (*t, *seq)).collect();
        match resume.iter_mut().find(|(t, _)| *t == lag.trace_id) {
            Some(r) => r.1 = lag.resume_after_seq,
            None => resume.push((lag.trace_id, lag.resume_after_seq)),
        }
        resume.sort();
        serde_json::json!({
            "trace_id": lag.trace_id,
            "resume_after_seq": lag.resume_after_seq,
            "resume": resume
                .iter()
                .map(|(t, s)| serde_json::json!({"trace_id": t, "after_seq": s}))
                .collect::<Vec<_>>(),
            "resume_complete": !self.forgot,
        })
    }
}

/// Waits until the trace is terminal or `wait` passes (capped by `--max-wait`).
pub async fn wait_until_terminal(
    app: &AppState,
    tenant: &str,
    id: TraceId,
    wait: Duration,
) -> Result<(), ApiError> {
    let wait = wait.min(app.config.max_wait);
    let mut sub = app.store.subscribe(tenant, Scope::Trace(id));
    match app.store.get_trace(tenant, id).await? {
        None => return Err(ApiError::not_found(format!("trace {id} not found"))),
        Some(t) if t.state.is_terminal() => return Ok(()),
        Some(_) => {}
    }
    let mut shutdown = app.shutdown.clone();
    let until_end = async {
        while let Some(e) = sub.events.recv().await {
            if e.body.event_type() == EventType::TraceEnded {
                return;
            }
        }
        // Lagged or closed: fall back to polling the state.
        loop {
            tokio::time::sleep(Duration::from_millis(200)).await;
            if let Ok(Some(t)) = app.store.get_trace(tenant, id).await {
                if t.state.is_terminal() {
                    return;
                }
            }
        }
    };
    tokio::select! {
        _ = until_end => {},
        _ = tokio::time::sleep(wait) => {},
        _ = stopping(&mut shutdown) => {},
    }
    Ok(())
}

/// Resolves once shutdown starts; never, if nobody can signal it.
async fn stopping(rx: &mut tokio::sync::watch::Receiver<bool>) {
    loop {
        if *rx.borrow_and_update() {
            return;
        }
        if rx.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

/// Parses `wait=30s` (or plain seconds, `wait=30`).
pub fn parse_wait(s: &str) -> Result<Duration, ApiError> {
    if let Ok(secs) = s.parse::<f64>() {
        if secs.is_finite() && secs >= 0.0 {
            return Ok(Duration::from_secs_f64(secs.min(1e6)));
        }
    }
    humantime::parse_duration(s)
        .map_err(|e| ApiError::bad_request(format!("invalid query parameter wait: {e}")))
}
