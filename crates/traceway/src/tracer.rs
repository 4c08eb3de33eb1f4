//! The tracer: records steps on the caller's thread into a bounded queue that the
//! exporter drains in the background.

use std::borrow::Cow;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crossbeam_queue::ArrayQueue;
use tokio::sync::{mpsc, oneshot, Notify};
use traceway_core::{EventInput, Level, SpanKind, TraceId};

use crate::exporter::{self, ExportConfig};
use crate::span::{SpanBuilder, SpanData};

/// One thing recorded, waiting for the exporter.
pub(crate) enum Record {
    Start(Box<SpanData>),
    End(Box<SpanData>),
    Event(Box<(TraceId, EventInput)>),
}

/// Counters of the exporter, shared with the tracer.
#[derive(Default)]
pub(crate) struct Counters {
    pub dropped_queue_full: AtomicU64,
    pub exported: AtomicU64,
    pub dropped_export_failed: AtomicU64,
    pub retries: AtomicU64,
    pub failed_requests: AtomicU64,
    pub requests: AtomicU64,
}

/// What the exporter has done so far, from [`Tracer::metrics`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ExporterMetrics {
    /// Records (a step's start or end, a log, an error) waiting in the queue now.
    pub queued: usize,
    /// Records the server acknowledged.
    pub exported: u64,
    /// Records dropped because the queue was full (the server was down or slow).
    pub dropped_queue_full: u64,
    /// Records dropped after the retries of their request ran out, or refused by the
    /// server as invalid.
    pub dropped_export_failed: u64,
    /// Requests retried (429, 503, other 5xx, network errors).
    pub retries: u64,
    /// Requests that failed (each try counts).
    pub failed_requests: u64,
    /// Requests sent (each try counts).
    pub requests: u64,
}

pub(crate) struct Shared {
    pub queue: ArrayQueue<Record>,
    pub woken: AtomicBool,
    pub wake: Notify,
    pub batch_size: usize,
    pub counters: Counters,
}

impl Shared {
    fn push(&self, r: Record) {
        if self.queue.push(r).is_err() {
            self.counters
                .dropped_queue_full
                .fetch_add(1, Ordering::Relaxed);
            return;
        }
        if self.queue.len() >= self.batch_size && !self.woken.swap(true, Ordering::AcqRel) {
            self.wake.notify_one();
        }
    }
}

pub(crate) enum Command {
    Flush(oneshot::Sender<()>),
}

struct Inner {
    shared: Option<Arc<Shared>>,
    commands: Option<mpsc::Sender<Command>>,
    service: Option<String>,
    tenant: String,
    level: Level,
    event_prefix: u64,
    event_seq: AtomicU64,
}

/// Records agent steps and exports them to a Traceway server without ever blocking.
///
/// Cheap to clone; every clone feeds the same queue and exporter. The exporter stops
/// when the last clone (and the last running [`crate::Span`]) is dropped, after sending
/// what was queued; call [`Tracer::shutdown`] to wait for that with a deadline.
#[derive(Clone)]
pub struct Tracer {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Tracer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tracer")
            .field("service", &self.inner.service)
            .field("exporting", &self.inner.shared.is_some())
            .finish()
    }
}

/// Why a tracer could not be built.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// An endpoint was set but no tokio runtime is running to export from.
    #[error("exporting needs a tokio runtime: build the tracer inside one")]
    NoRuntime,
    /// The endpoint is not an `http://` or `https://` URL.
    #[error("invalid endpoint {0:?}: expected http://host:port")]
    Endpoint(String),
    /// A setting is out of range.
    #[error("invalid setting: {0}")]
    Setting(&'static str),
    /// The HTTP client could not be made.
    #[error("http client: {0}")]
    Client(#[from] reqwest::Error),
}

/// Settings of a [`Tracer`]; see each method for the default.
#[derive(Debug, Clone)]
pub struct TracerBuilder {
    endpoint: Option<String>,
    service: Option<String>,
    tenant: String,
    api_key: Option<String>,
    level: Level,
    queue_capacity: usize,
    batch_size: usize,
    flush_interval: Duration,
    max_retries: u32,
    max_in_flight: usize,
    request_timeout: Duration,
    max_backoff: Duration,
}

impl Default for TracerBuilder {
    fn default() -> Self {
        TracerBuilder {
            endpoint: None,
            service: None,
            tenant: "default".into(),
            api_key: None,
            level: Level::Detailed,
            queue_capacity: 65_536,
            batch_size: 2048,
            flush_interval: Duration::from_millis(100),
            max_retries: 4,
            max_in_flight: 8,
            request_timeout: Duration::from_secs(5),
            max_backoff: Duration::from_secs(5),
        }
    }
}

impl TracerBuilder {
    /// The server, e.g. `http://127.0.0.1:4318`. Without one, steps are only collected
    /// for completion-with-trace (nothing is sent).
    pub fn endpoint(mut self, url: impl Into<String>) -> Self {
        self.endpoint = Some(url.into());
        self
    }

    /// The service name stamped on every span (default none).
    pub fn service(mut self, name: impl Into<String>) -> Self {
        self.service = Some(name.into());
        self
    }

    /// The tenant (`X-Traceway-Tenant`, default `default`).
    pub fn tenant(mut self, tenant: impl Into<String>) -> Self {
        self.tenant = tenant.into();
        self
    }

    /// An API key, sent as `Authorization: Bearer`.
    pub fn api_key(mut self, key: impl Into<String>) -> Self {
        self.api_key = Some(key.into());
        self
    }

    /// The level of the traces this process creates (default `detailed`).
    pub fn level(mut self, level: Level) -> Self {
        self.level = level;
        self
    }

    /// Records the queue holds before it drops (default 65,536). This bounds the memory
    /// used while the server is down.
    pub fn queue_capacity(mut self, n: usize) -> Self {
        self.queue_capacity = n;
        self
    }

    /// Records per export round (default 2048); the exporter wakes early when this many
    /// are waiting.
    pub fn batch_size(mut self, n: usize) -> Self {
        self.batch_size = n;
        self
    }

    /// How often the exporter sends what is waiting (default 100 ms): the longest a step
    /// takes to show live.
    pub fn flush_interval(mut self, d: Duration) -> Self {
        self.flush_interval = d;
        self
    }

    /// Retries of one request on 429, 503, other 5xx and network errors (default 4).
    pub fn max_retries(mut self, n: u32) -> Self {
        self.max_retries = n;
        self
    }

    /// Requests in flight at once (default 8).
    pub fn max_in_flight(mut self, n: usize) -> Self {
        self.max_in_flight = n;
        self
    }

    /// Timeout of one request (default 5 s).
    pub fn request_timeout(mut self, d: Duration) -> Self {
        self.request_timeout = d;
        self
    }

    /// The longest wait between retries, `Retry-After` included (default 5 s).
    pub fn max_backoff(mut self, d: Duration) -> Self {
        self.max_backoff = d;
        self
    }

    /// Builds the tracer; with an endpoint, spawns its exporter on the current tokio
    /// runtime.
    pub fn build(self) -> Result<Tracer, BuildError> {
        if self.queue_capacity == 0 || self.batch_size == 0 || self.max_in_flight == 0 {
            return Err(BuildError::Setting(
                "queue_capacity, batch_size and max_in_flight must be > 0",
            ));
        }
        let (shared, commands) = match &self.endpoint {
            None => (None, None),
            Some(url) => {
                let base = url.trim_end_matches('/').to_string();
                if !(base.starts_with("http://") || base.starts_with("https://")) {
                    return Err(BuildError::Endpoint(url.clone()));
                }
                let handle =
                    tokio::runtime::Handle::try_current().map_err(|_| BuildError::NoRuntime)?;
                let shared = Arc::new(Shared {
                    queue: ArrayQueue::new(self.queue_capacity),
                    woken: AtomicBool::new(false),
                    wake: Notify::new(),
                    batch_size: self.batch_size.min(self.queue_capacity),
                    counters: Counters::default(),
                });
                let (tx, rx) = mpsc::channel(16);
                let config = ExportConfig {
                    base,
                    tenant: self.tenant.clone(),
                    api_key: self.api_key.clone(),
                    service: self.service.clone(),
                    level: self.level,
                    batch_size: self.batch_size,
                    flush_interval: self.flush_interval,
                    max_retries: self.max_retries,
                    max_in_flight: self.max_in_flight,
                    max_backoff: self.max_backoff,
                    client: reqwest::Client::builder()
                        .timeout(self.request_timeout)
                        .build()?,
                };
                handle.spawn(exporter::run(shared.clone(), config, rx));
                (Some(shared), Some(tx))
            }
        };
        Ok(Tracer {
            inner: Arc::new(Inner {
                shared,
                commands,
                service: self.service,
                tenant: self.tenant,
                level: self.level,
                event_prefix: rand::random(),
                event_seq: AtomicU64::new(0),
            }),
        })
    }
}

impl Tracer {
    /// Settings, then [`TracerBuilder::build`].
    pub fn builder() -> TracerBuilder {
        TracerBuilder::default()
    }

    /// A tracer that exports nothing: steps are only collected for requests that ask for
    /// their trace back.
    pub fn local(service: impl Into<String>) -> Tracer {
        Tracer::builder()
            .service(service)
            .build()
            .expect("a tracer without an endpoint always builds")
    }

    /// A step of any kind. Its parent is the current span (see [`crate::current`]), or
    /// none: then it starts a new trace with a UUIDv7 id.
    pub fn span(&self, kind: SpanKind, name: impl Into<Cow<'static, str>>) -> SpanBuilder {
        SpanBuilder::new(self.clone(), kind, name.into())
    }

    /// An agent run.
    pub fn agent(&self, name: impl Into<Cow<'static, str>>) -> SpanBuilder {
        self.span(SpanKind::Agent, name)
    }

    /// A component (one step of a chain or pipeline).
    pub fn component(&self, name: impl Into<Cow<'static, str>>) -> SpanBuilder {
        self.span(SpanKind::Chain, name)
    }

    /// An LLM call: set `.model()`, `.provider()`, `.message()`; on the span,
    /// `set_tokens`, `set_cost_usd`, `add_output_message`.
    pub fn llm(&self, name: impl Into<Cow<'static, str>>) -> SpanBuilder {
        self.span(SpanKind::Llm, name)
    }

    /// A tool call named `name`: set `.arguments()`; on the span, `set_result`.
    pub fn tool(&self, name: impl Into<Cow<'static, str>>) -> SpanBuilder {
        self.span(SpanKind::Tool, name)
    }

    /// A retrieval: set `.query()`; on the span, `add_document`.
    pub fn retrieval(&self, name: impl Into<Cow<'static, str>>) -> SpanBuilder {
        self.span(SpanKind::Retriever, name)
    }

    /// The service name on this tracer's spans.
    pub fn service(&self) -> Option<&str> {
        self.inner.service.as_deref()
    }

    /// The tenant.
    pub fn tenant(&self) -> &str {
        &self.inner.tenant
    }

    /// The level of traces this tracer creates.
    pub fn level(&self) -> Level {
        self.inner.level
    }

    /// What the exporter did so far: queued, exported, dropped (queue full, or export
    /// failed), retries.
    pub fn metrics(&self) -> ExporterMetrics {
        let Some(s) = &self.inner.shared else {
            return ExporterMetrics::default();
        };
        let c = &s.counters;
        ExporterMetrics {
            queued: s.queue.len(),
            exported: c.exported.load(Ordering::Relaxed),
            dropped_queue_full: c.dropped_queue_full.load(Ordering::Relaxed),
            dropped_export_failed: c.dropped_export_failed.load(Ordering::Relaxed),
            retries: c.retries.load(Ordering::Relaxed),
            failed_requests: c.failed_requests.load(Ordering::Relaxed),
            requests: c.requests.load(Ordering::Relaxed),
        }
    }

    /// Sends everything recorded so far and waits until the server answered for it (or
    /// its retries ran out).
    pub async fn flush(&self) {
        let Some(tx) = &self.inner.commands else {
            return;
        };
        let (done, wait) = oneshot::channel();
        if tx.send(Command::Flush(done)).await.is_ok() {
            let _ = wait.await;
        }
    }

    /// [`Tracer::flush`] with a deadline, for shutdown. Returns whether everything was
    /// sent in time.
    pub async fn shutdown(&self, deadline: Duration) -> bool {
        tokio::time::timeout(deadline, self.flush()).await.is_ok()
    }

    pub(crate) fn record_start(&self, data: &SpanData) {
        if let Some(s) = &self.inner.shared {
            s.push(Record::Start(Box::new(data.clone())));
        }
    }

    pub(crate) fn record_end(&self, data: Box<SpanData>) {
        if let Some(s) = &self.inner.shared {
            s.push(Record::End(data));
        }
    }

    pub(crate) fn record_event(&self, trace_id: TraceId, event: EventInput) {
        if let Some(s) = &self.inner.shared {
            s.push(Record::Event(Box::new((trace_id, event))));
        }
    }

    /// A unique id for a log or error event, so a retried batch is stored once.
    pub(crate) fn event_id(&self) -> String {
        let n = self.inner.event_seq.fetch_add(1, Ordering::Relaxed);
        format!("{:016x}-{n}", self.inner.event_prefix)
    }

    /// Records a span that another instrumentation (the OpenTelemetry processor) made.
    #[cfg(feature = "otel")]
    pub(crate) fn record_foreign_start(&self, data: SpanData) {
        if let Some(s) = &self.inner.shared {
            s.push(Record::Start(Box::new(data)));
        }
    }
}
