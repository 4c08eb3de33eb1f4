//! The background exporter: drains the queue in batches and sends them to the native API
//! (ADR 018, ADR 030).
//!
//! Per round it takes up to `batch_size` records and groups them by trace. Each trace's
//! part is one request, `POST /api/v1/traces/{id}/events` carrying the events, the trace
//! to create if it does not exist yet (`create_if_missing`), and, when the trace's first
//! span in this process ended, the trace's final state (`end`). Up to `max_in_flight`
//! such requests run at once, across rounds: the next round is taken while earlier ones
//! are still in flight. Two parts of one trace are sent in the order they were recorded
//! (the later waits for the earlier). A step that started and ended within one round is
//! sent once, as a whole `span_ended`. Every `span_ended` carries the whole span, so a
//! lost or late `span_started` loses nothing but the live view. The JSON is written
//! straight from the recorded steps (`crate::wire`, ADR 038).
//!
//! A server older than ADR 030 refuses the two fields (400, unknown field): the exporter
//! then falls back, for the rest of its life, to a create (`POST /api/v1/traces`, 409
//! when it exists), an append and a `PATCH` per trace.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use reqwest::StatusCode;
use serde::Serialize;
use serde_json::json;
use tokio::sync::{mpsc, oneshot, Semaphore};
use traceway_core::{Level, NewTrace, State, StatusCode as SpanStatus, TraceId};

use crate::tracer::{Command, Record, Shared};
use crate::wire::{Events, WireEvent};

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
    events: Vec<WireEvent>,
    records: u64,
    started_at: HashMap<traceway_core::SpanId, usize>,
    /// Name of this process's root span of the trace, when it is in the batch.
    root_name: Option<String>,
    /// The trace's final state, when this process's root span ended in the batch.
    end: Option<State>,
}

/// State of one exporter shared by its request tasks.
struct Exporter {
    shared: Arc<Shared>,
    config: ExportConfig,
    /// Traces created in the legacy mode.
    known: Mutex<Known>,
    /// The server refused `create_if_missing` (older than ADR 030): create, append, PATCH.
    legacy: AtomicBool,
    /// Per trace with a part in flight: the generation of its latest part and the signal
    /// that part sends when it is done, which the trace's next part waits for.
    in_flight: Mutex<HashMap<TraceId, (u64, oneshot::Receiver<()>)>>,
}

pub(crate) async fn run(
    shared: Arc<Shared>,
    config: ExportConfig,
    mut commands: mpsc::Receiver<Command>,
) {
    let slots = Arc::new(Semaphore::new(config.max_in_flight));
    let max_in_flight = config.max_in_flight as u32;
    let ex = Arc::new(Exporter {
        shared,
        config,
        known: Mutex::new(Known {
            set: HashSet::new(),
            order: VecDeque::new(),
        }),
        legacy: AtomicBool::new(false),
        in_flight: Mutex::new(HashMap::new()),
    });
    let shared = &ex.shared;
    let mut generation = 0u64;
    loop {
        let (flush, last) = tokio::select! {
            _ = shared.wake.notified() => (None, false),
            _ = tokio::time::sleep(ex.config.flush_interval) => (None, false),
            cmd = commands.recv() => match cmd {
                Some(Command::Flush(done)) => (Some(done), false),
                None => (None, true),
            },
        };
        loop {
            shared.woken.store(false, Ordering::Release);
            let batch_size = ex.config.batch_size;
            let mut batch = Vec::with_capacity(batch_size.min(shared.queue.len()));
            while batch.len() < batch_size {
                match shared.queue.pop() {
                    Some(r) => batch.push(r),
                    None => break,
                }
            }
            if batch.is_empty() {
                break;
            }
            for t in group(batch) {
                // At most `max_in_flight` parts at once: this waits for a slot, never
                // for the round.
                let permit = slots
                    .clone()
                    .acquire_owned()
                    .await
                    .expect("the slots are never closed");
                generation += 1;
                let (done, signal) = oneshot::channel();
                let before = ex
                    .in_flight
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert(t.trace_id, (generation, signal))
                    .map(|(_, earlier)| earlier);
                let ex = ex.clone();
                let mine = generation;
                tokio::spawn(async move {
                    if let Some(earlier) = before {
                        // The trace's previous part first (an error there is no reason
                        // to wait longer).
                        let _ = earlier.await;
                    }
                    let trace_id = t.trace_id;
                    let records = t.records;
                    let counters = &ex.shared.counters;
                    match send_trace(&ex, t).await {
                        Ok(()) => counters.exported.fetch_add(records, Ordering::Relaxed),
                        Err(error) => {
                            tracing::debug!(%error, records, "traceway export dropped records");
                            counters
                                .dropped_export_failed
                                .fetch_add(records, Ordering::Relaxed)
                        }
                    };
                    {
                        let mut m = ex.in_flight.lock().unwrap_or_else(|e| e.into_inner());
                        if m.get(&trace_id).is_some_and(|(g, _)| *g == mine) {
                            m.remove(&trace_id);
                        }
                    }
                    let _ = done.send(());
                    drop(permit);
                });
            }
            // Keep going while a full batch waits; a flush or the last round empties
            // the queue.
            if flush.is_none() && !last && shared.queue.len() < batch_size {
                break;
            }
        }
        if flush.is_some() || last {
            // Every slot free: everything taken so far has its answer.
            let all = slots
                .acquire_many(max_in_flight)
                .await
                .expect("the slots are never closed");
            drop(all);
        }
        if let Some(done) = flush {
            let _ = done.send(());
        }
        if last {
            return;
        }
    }
}

fn group(batch: Vec<Record>) -> Vec<TraceBatch> {
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
                t.events.push(WireEvent::Started(d));
            }
            Record::End(d) => {
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
                    Some(at) => t.events[at] = WireEvent::Ended(d),
                    None => t.events.push(WireEvent::Ended(d)),
                }
            }
            Record::Event(e) => t.events.push(WireEvent::Other(e)),
        }
    }
    order
}

#[derive(Debug, thiserror::Error)]
enum ExportError {
    #[error("server answered {0}")]
    Status(StatusCode),
    #[error("{0}")]
    Network(reqwest::Error),
}

/// The body of an append (ADR 030), borrowed from the round.
#[derive(Serialize)]
struct AppendBody<'a> {
    events: Events<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    create_if_missing: Option<&'a NewTrace>,
    #[serde(skip_serializing_if = "Option::is_none")]
    end: Option<AppendEnd<'a>>,
}

#[derive(Serialize)]
struct AppendEnd<'a> {
    state: &'a State,
    reason: &'static str,
}

const END_REASON: &str = "root span ended";

/// The trace this process creates when it is not there yet.
fn new_trace(config: &ExportConfig, t: &TraceBatch) -> NewTrace {
    let mut new = NewTrace {
        trace_id: Some(t.trace_id),
        name: t.root_name.clone(),
        level: Some(config.level),
        ..Default::default()
    };
    if let Some(s) = &config.service {
        new.metadata.insert("service.name".into(), s.clone());
    }
    new
}

async fn send_trace(ex: &Exporter, t: TraceBatch) -> Result<(), ExportError> {
    if !ex.legacy.load(Ordering::Relaxed) {
        match send_one(ex, &t).await? {
            Sent::Done => return Ok(()),
            Sent::OldServer => {
                if !ex.legacy.swap(true, Ordering::Relaxed) {
                    tracing::info!(
                        "the traceway server does not know create_if_missing; \
                         exporting with create, append and PATCH"
                    );
                }
            }
        }
    }
    send_legacy(ex, t).await
}

enum Sent {
    Done,
    /// The server refused `create_if_missing` as an unknown field.
    OldServer,
}

/// One request per chunk of 1,000 events: the trace created if missing, ended with the
/// last chunk when its local root ended.
async fn send_one(ex: &Exporter, t: &TraceBatch) -> Result<Sent, ExportError> {
    let config = &ex.config;
    let new = new_trace(config, t);
    let url = format!("{}/api/v1/traces/{}/events", config.base, t.trace_id);
    let mut chunks: Vec<&[WireEvent]> = t.events.chunks(MAX_EVENTS_PER_REQUEST).collect();
    if chunks.is_empty() {
        // Nothing but an end (cannot happen today: an end is an event), or nothing.
        chunks.push(&[]);
    }
    let n = chunks.len();
    for (i, chunk) in chunks.into_iter().enumerate() {
        let body = AppendBody {
            events: Events {
                events: chunk,
                service: config.service.as_deref(),
            },
            create_if_missing: Some(&new),
            end: t
                .end
                .as_ref()
                .filter(|_| i + 1 == n)
                .map(|state| AppendEnd {
                    state,
                    reason: END_REASON,
                }),
        };
        let body = Bytes::from(serde_json::to_vec(&body).expect("an append serialises"));
        let resp = request(&ex.shared, config, || config.client.post(&url), &body).await?;
        let status = resp.status();
        if status.is_success() {
            continue;
        }
        if status == StatusCode::BAD_REQUEST {
            let text = resp.text().await.unwrap_or_default();
            if text.contains("unknown field") && text.contains("create_if_missing") {
                // Only the first chunk can meet this: nothing of this part was stored.
                return Ok(Sent::OldServer);
            }
        }
        return Err(ExportError::Status(status));
    }
    Ok(Sent::Done)
}

/// The exporter before ADR 030, for servers that predate it: create the first time this
/// process sees the trace, append, PATCH when the local root ended.
async fn send_legacy(ex: &Exporter, t: TraceBatch) -> Result<(), ExportError> {
    let (shared, config) = (&ex.shared, &ex.config);
    let is_known = ex
        .known
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .contains(&t.trace_id);
    if !is_known {
        create(ex, &t).await?;
    }
    let url = format!("{}/api/v1/traces/{}/events", config.base, t.trace_id);
    for chunk in t.events.chunks(MAX_EVENTS_PER_REQUEST) {
        let body = Bytes::from(
            serde_json::to_vec(&AppendBody {
                events: Events {
                    events: chunk,
                    service: config.service.as_deref(),
                },
                create_if_missing: None,
                end: None,
            })
            .expect("events serialise"),
        );
        let status = request(shared, config, || config.client.post(&url), &body)
            .await?
            .status();
        match status {
            s if s.is_success() => {}
            // The trace is gone (deleted, or another data directory): create it again.
            StatusCode::NOT_FOUND => {
                create(ex, &t).await?;
                let s = request(shared, config, || config.client.post(&url), &body)
                    .await?
                    .status();
                if !s.is_success() {
                    return Err(ExportError::Status(s));
                }
            }
            s => return Err(ExportError::Status(s)),
        }
    }
    if let Some(state) = &t.end {
        let url = format!("{}/api/v1/traces/{}", config.base, t.trace_id);
        let mut patch = json!({ "state": state, "reason": END_REASON });
        if let Some(name) = &t.root_name {
            patch["name"] = json!(name);
        }
        let body = Bytes::from(serde_json::to_vec(&patch).expect("patch serialises"));
        let s = request(shared, config, || config.client.patch(&url), &body)
            .await?
            .status();
        // 409: it already ended (a retry, or another process ended it).
        if !s.is_success() && s != StatusCode::CONFLICT {
            return Err(ExportError::Status(s));
        }
    }
    Ok(())
}

async fn create(ex: &Exporter, t: &TraceBatch) -> Result<(), ExportError> {
    let config = &ex.config;
    let body =
        Bytes::from(serde_json::to_vec(&new_trace(config, t)).expect("a new trace serialises"));
    let url = format!("{}/api/v1/traces", config.base);
    let s = request(&ex.shared, config, || config.client.post(&url), &body)
        .await?
        .status();
    if s.is_success() || s == StatusCode::CONFLICT {
        ex.known
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
/// final answer (a 4xx is not retried).
async fn request(
    shared: &Shared,
    config: &ExportConfig,
    make: impl Fn() -> reqwest::RequestBuilder,
    body: &Bytes,
) -> Result<reqwest::Response, ExportError> {
    let c = &shared.counters;
    let mut backoff = Duration::from_millis(100);
    let mut attempt = 0;
    loop {
        let mut rb = make()
            .header("content-type", "application/json")
            .header("x-traceway-tenant", &config.tenant)
            .body(body.clone());
        if let Some(key) = &config.api_key {
            rb = rb.bearer_auth(key);
        }
        c.requests.fetch_add(1, Ordering::Relaxed);
        let wait = match rb.send().await {
            Ok(resp) => {
                let status = resp.status();
                if !(status == StatusCode::TOO_MANY_REQUESTS || status.is_server_error()) {
                    return Ok(resp);
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
        let traces = group(batch);
        assert_eq!(traces.len(), 2);
        let t1 = &traces[0];
        assert_eq!(t1.records, 4);
        // Two steps, each one whole span_ended in the place its start had.
        let kinds: Vec<(&str, u64)> = t1
            .events
            .iter()
            .map(|e| match e {
                WireEvent::Started(d) => ("started", d.span_id.as_u64()),
                WireEvent::Ended(d) => ("ended", d.span_id.as_u64()),
                WireEvent::Other(_) => ("other", 0),
            })
            .collect();
        assert_eq!(kinds, [("ended", 10), ("ended", 11)]);
        assert_eq!(t1.end, Some(State::Errored), "the local root failed");
        assert_eq!(t1.root_name.as_deref(), Some("step"));
        let t2 = &traces[1];
        assert!(matches!(&t2.events[..], [WireEvent::Started(d)] if d.span_id.as_u64() == 20));
        assert_eq!(t2.end, None, "a continued trace is not ended here");
    }
}
