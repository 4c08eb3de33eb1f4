//! The background exporter: drains the queue in batches and sends them to the native API
//! (ADR 018).
//!
//! Per round it takes up to `batch_size` records, groups them by trace, and for each
//! trace (up to `max_in_flight` at once): creates the trace the first time this process
//! sees it (`POST /api/v1/traces`; 409 means it exists), appends the events (`POST
//! /api/v1/traces/{id}/events`), and, when the trace's first span in this process
//! ended, sets the trace's final state (`PATCH`). A step that started and ended within
//! one round is sent once, as a whole `span_ended`. Every `span_ended` carries the whole
//! span, so a lost or late `span_started` loses nothing but the live view.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::StreamExt;
use reqwest::StatusCode;
use serde_json::json;
use tokio::sync::mpsc;
use traceway_core::{EventInput, Level, NewTrace, State, StatusCode as SpanStatus, TraceId};

use crate::tracer::{Command, Record, Shared};

pub(crate) struct ExportConfig {
    pub base: String,
    pub tenant: String,
    pub api_key: Option<String>,
    pub service: Option<String>,
    pub level: Level,
    pub batch_size: usize,
    pub flush_interval: Duration,
    pub max_retries: u32,
    pub max_in_flight: usize,
    pub max_backoff: Duration,
    pub client: reqwest::Client,
}

/// Most events in one append request (the server caps bodies at 10 MiB by default).
const MAX_EVENTS_PER_REQUEST: usize = 1000;
/// Trace ids remembered as created; beyond, the oldest are forgotten (a forgotten trace
/// costs one more `POST /api/v1/traces` answered 409).
const KNOWN_TRACES: usize = 100_000;

struct Known {
    set: HashSet<TraceId>,
    order: VecDeque<TraceId>,
}

impl Known {
    fn contains(&self, id: &TraceId) -> bool {
        self.set.contains(id)
    }
    fn insert(&mut self, id: TraceId) {
        if self.set.insert(id) {
            self.order.push_back(id);
            if self.order.len() > KNOWN_TRACES {
                if let Some(old) = self.order.pop_front() {
                    self.set.remove(&old);
                }
            }
        }
    }
}

/// What one round sends for one trace.
struct TraceBatch {
    trace_id: TraceId,
    events: Vec<EventInput>,
    records: u64,
    started_at: HashMap<traceway_core::SpanId, usize>,
    /// Name of this process's root span of the trace, when it is in the batch.
    root_name: Option<String>,
    /// The trace's final state, when this process's root span ended in the batch.
    end: Option<State>,
}

pub(crate) async fn run(
    shared: Arc<Shared>,
    config: ExportConfig,
    mut commands: mpsc::Receiver<Command>,
) {
    let config = Arc::new(config);
    let known = Arc::new(Mutex::new(Known {
        set: HashSet::new(),
        order: VecDeque::new(),
    }));
    loop {
        let (flush, last) = tokio::select! {
            _ = shared.wake.notified() => (None, false),
            _ = tokio::time::sleep(config.flush_interval) => (None, false),
            cmd = commands.recv() => match cmd {
                Some(Command::Flush(done)) => (Some(done), false),
                None => (None, true),
            },
        };
        loop {
            shared.woken.store(false, Ordering::Release);
            let mut batch = Vec::with_capacity(config.batch_size.min(shared.queue.len()));
            while batch.len() < config.batch_size {
                match shared.queue.pop() {
                    Some(r) => batch.push(r),
                    None => break,
                }
            }
            if batch.is_empty() {
                break;
            }
            send_round(&shared, &config, &known, batch).await;
            // Keep going while a full batch waits; a flush or the last round empties
            // the queue.
            if flush.is_none() && !last && shared.queue.len() < config.batch_size {
                break;
            }
        }
        if let Some(done) = flush {
            let _ = done.send(());
        }
        if last {
            return;
        }
    }
}

fn group(batch: Vec<Record>, service: Option<&str>) -> Vec<TraceBatch> {
    let mut order: Vec<TraceBatch> = Vec::new();
    let mut index: HashMap<TraceId, usize> = HashMap::new();
    for record in batch {
        let trace_id = match &record {
            Record::Start(d) | Record::End(d) => d.trace_id,
            Record::Event(e) => e.0,
        };
        let i = *index.entry(trace_id).or_insert_with(|| {
            order.push(TraceBatch {
                trace_id,
                events: Vec::new(),
                records: 0,
                started_at: HashMap::new(),
                root_name: None,
                end: None,
            });
            order.len() - 1
        });
        let t = &mut order[i];
        t.records += 1;
        match record {
            Record::Start(d) => {
                if d.trace_root {
                    t.root_name = Some(d.name.to_string());
                }
                t.started_at.insert(d.span_id, t.events.len());
                t.events.push(EventInput::SpanStarted {
                    span: d.to_input(service),
                });
            }
            Record::End(d) => {
                let ended = EventInput::SpanEnded {
                    span: d.to_input(service),
                };
                if d.trace_root {
                    t.root_name = Some(d.name.to_string());
                    t.end = Some(if d.status.code == SpanStatus::Error {
                        State::Errored
                    } else {
                        State::Completed
                    });
                }
                match t.started_at.remove(&d.span_id) {
                    // Started and ended within the round: one whole span_ended.
                    Some(at) => t.events[at] = ended,
                    None => t.events.push(ended),
                }
            }
            Record::Event(e) => t.events.push(e.1),
        }
    }
    order
}

async fn send_round(
    shared: &Arc<Shared>,
    config: &Arc<ExportConfig>,
    known: &Arc<Mutex<Known>>,
    batch: Vec<Record>,
) {
    let traces = group(batch, config.service.as_deref());
    futures_util::stream::iter(traces)
        .map(|t| {
            let (shared, config, known) = (shared.clone(), config.clone(), known.clone());
            async move {
                let records = t.records;
                match send_trace(&shared, &config, &known, t).await {
                    Ok(()) => shared
                        .counters
                        .exported
                        .fetch_add(records, Ordering::Relaxed),
                    Err(error) => {
                        tracing::debug!(%error, records, "traceway export dropped records");
                        shared
                            .counters
                            .dropped_export_failed
                            .fetch_add(records, Ordering::Relaxed)
                    }
                };
            }
        })
        .buffer_unordered(config.max_in_flight)
        .for_each(|()| async {})
        .await;
}

#[derive(Debug, thiserror::Error)]
enum ExportError {
    #[error("server answered {0}")]
    Status(StatusCode),
    #[error("{0}")]
    Network(reqwest::Error),
}

async fn send_trace(
    shared: &Shared,
    config: &ExportConfig,
    known: &Mutex<Known>,
    t: TraceBatch,
) -> Result<(), ExportError> {
    let is_known = known
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .contains(&t.trace_id);
    if !is_known {
        create(shared, config, known, &t).await?;
    }
    let url = format!("{}/api/v1/traces/{}/events", config.base, t.trace_id);
    for chunk in t.events.chunks(MAX_EVENTS_PER_REQUEST) {
        let body = serde_json::to_vec(&json!({ "events": chunk })).expect("events serialise");
        let status = request(shared, config, || config.client.post(&url), &body).await?;
        match status {
            s if s.is_success() => {}
            // The trace is gone (deleted, or another data directory): create it again.
            StatusCode::NOT_FOUND => {
                create(shared, config, known, &t).await?;
                let s = request(shared, config, || config.client.post(&url), &body).await?;
                if !s.is_success() {
                    return Err(ExportError::Status(s));
                }
            }
            s => return Err(ExportError::Status(s)),
        }
    }
    if let Some(state) = &t.end {
        let url = format!("{}/api/v1/traces/{}", config.base, t.trace_id);
        let mut patch = json!({ "state": state, "reason": "root span ended" });
        if let Some(name) = &t.root_name {
            patch["name"] = json!(name);
        }
        let body = serde_json::to_vec(&patch).expect("patch serialises");
        let s = request(shared, config, || config.client.patch(&url), &body).await?;
        // 409: it already ended (a retry, or another process ended it).
        if !s.is_success() && s != StatusCode::CONFLICT {
            return Err(ExportError::Status(s));
        }
    }
    Ok(())
}

async fn create(
    shared: &Shared,
    config: &ExportConfig,
    known: &Mutex<Known>,
    t: &TraceBatch,
) -> Result<(), ExportError> {
    let mut new = NewTrace {
        trace_id: Some(t.trace_id),
        name: t.root_name.clone(),
        level: Some(config.level),
        ..Default::default()
    };
    if let Some(s) = &config.service {
        new.metadata.insert("service.name".into(), s.clone());
    }
    let body = serde_json::to_vec(&new).expect("a new trace serialises");
    let url = format!("{}/api/v1/traces", config.base);
    let s = request(shared, config, || config.client.post(&url), &body).await?;
    if s.is_success() || s == StatusCode::CONFLICT {
        known
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(t.trace_id);
        Ok(())
    } else {
        Err(ExportError::Status(s))
    }
}

/// Sends one request, retrying 429/503 (after `Retry-After` when given), other 5xx and
/// network errors with exponential backoff, at most `max_retries` times. Returns the
/// final status (a 4xx is not retried).
async fn request(
    shared: &Shared,
    config: &ExportConfig,
    make: impl Fn() -> reqwest::RequestBuilder,
    body: &[u8],
) -> Result<StatusCode, ExportError> {
    let c = &shared.counters;
    let mut backoff = Duration::from_millis(100);
    let mut attempt = 0;
    loop {
        let mut rb = make()
            .header("content-type", "application/json")
            .header("x-traceway-tenant", &config.tenant)
            .body(body.to_vec());
        if let Some(key) = &config.api_key {
            rb = rb.bearer_auth(key);
        }
        c.requests.fetch_add(1, Ordering::Relaxed);
        let wait = match rb.send().await {
            Ok(resp) => {
                let status = resp.status();
                if !(status == StatusCode::TOO_MANY_REQUESTS || status.is_server_error()) {
                    return Ok(status);
                }
                c.failed_requests.fetch_add(1, Ordering::Relaxed);
                if attempt >= config.max_retries {
                    return Err(ExportError::Status(status));
                }
                retry_after(&resp).unwrap_or(backoff)
            }
            Err(e) => {
                c.failed_requests.fetch_add(1, Ordering::Relaxed);
                if attempt >= config.max_retries {
                    return Err(ExportError::Network(e));
                }
                backoff
            }
        };
        attempt += 1;
        c.retries.fetch_add(1, Ordering::Relaxed);
        // Jitter spreads the retries of many processes.
        let jitter = Duration::from_millis(rand::random::<u64>() % 50);
        tokio::time::sleep(wait.min(config.max_backoff) + jitter).await;
        backoff = (backoff * 2).min(config.max_backoff);
    }
}

/// `Retry-After` in seconds (the HTTP-date form is not used by Traceway).
fn retry_after(resp: &reqwest::Response) -> Option<Duration> {
    let v = resp.headers().get(reqwest::header::RETRY_AFTER)?;
    let secs: f64 = v.to_str().ok()?.trim().parse().ok()?;
    (secs.is_finite() && secs >= 0.0).then(|| Duration::from_secs_f64(secs))
}

#[cfg(test)]
mod tests {
    use std::borrow::Cow;

    use traceway_core::{SpanId, SpanKind, SpanStatus, Timestamp};

    use super::*;
    use crate::span::SpanData;

    fn span(trace: u128, id: u64, parent: Option<u64>) -> Box<SpanData> {
        Box::new(SpanData {
            trace_id: TraceId::from_u128(trace).unwrap(),
            span_id: SpanId::from_u64(id).unwrap(),
            parent: parent.and_then(SpanId::from_u64),
            trace_root: parent.is_none(),
            kind: SpanKind::Tool,
            name: Cow::Borrowed("step"),
            component: None,
            start: Timestamp::from_unix_millis(1),
            end: None,
            status: SpanStatus::default(),
            input: None,
            output: None,
            llm: None,
            tool: None,
            retrieval: None,
            attributes: Vec::new(),
            links: Vec::new(),
        })
    }

    fn ended(mut d: Box<SpanData>, error: bool) -> Box<SpanData> {
        d.end = Some(Timestamp::from_unix_millis(2));
        d.status.code = if error {
            traceway_core::StatusCode::Error
        } else {
            traceway_core::StatusCode::Ok
        };
        d
    }

    #[test]
    fn a_round_groups_by_trace_and_sends_a_short_step_once() {
        let batch = vec![
            Record::Start(span(1, 10, None)),
            Record::Start(span(1, 11, Some(10))),
            Record::Start(span(2, 20, Some(99))),
            Record::End(ended(span(1, 11, Some(10)), false)),
            Record::End(ended(span(1, 10, None), true)),
        ];
        let traces = group(batch, Some("svc"));
        assert_eq!(traces.len(), 2);
        let t1 = &traces[0];
        assert_eq!(t1.records, 4);
        // Two steps, each one whole span_ended in the place its start had.
        let kinds: Vec<(&str, u64)> = t1
            .events
            .iter()
            .map(|e| match e {
                EventInput::SpanStarted { span } => ("started", span.span_id.as_u64()),
                EventInput::SpanEnded { span } => ("ended", span.span_id.as_u64()),
                _ => ("other", 0),
            })
            .collect();
        assert_eq!(kinds, [("ended", 10), ("ended", 11)]);
        assert_eq!(t1.end, Some(State::Errored), "the local root failed");
        assert_eq!(t1.root_name.as_deref(), Some("step"));
        let t2 = &traces[1];
        assert!(
            matches!(&t2.events[..], [EventInput::SpanStarted { span }] if span.service.as_deref() == Some("svc"))
        );
        assert_eq!(t2.end, None, "a continued trace is not ended here");
    }
}
