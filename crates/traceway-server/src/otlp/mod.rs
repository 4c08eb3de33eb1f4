//! OTLP ingestion: `POST /v1/traces` (OTLP/HTTP, [`http`]) and `TraceService/Export`
//! (OTLP/gRPC, [`grpc`]) share [`ingest`], which maps an export request with
//! `traceway_core::otlp` and writes it through the [`Store`](traceway_store::Store)
//! contract. Logs (`POST /v1/logs`, `LogsService/Export`) share [`ingest_logs`]; metrics
//! (`POST /v1/metrics`, `MetricsService/Export`) are accepted and dropped (ADR 021). The
//! lifecycle decisions (ADR 008, ADR 020 for local roots):
//!
//! - the first span of an unknown trace creates it `RUNNING`, with the batch's hints;
//! - a root span (no parent) in the batch ends the trace: `ERRORED` when its status is
//!   error, else `COMPLETED`; the first root to arrive decides;
//! - spans that arrive after that are stored and counted, the state does not change;
//! - a trace whose root never arrives stays `RUNNING` for the lifecycle watchdog;
//! - a re-exported span is stored once (the store skips a `span_ended` of a span it has
//!   already ended; span events carry stable ids).

pub mod grpc;
pub mod http;
pub mod status;

use axum::http::StatusCode;
use traceway_core::otlp::{
    map_logs_request, map_request_with, ExportLogsServiceRequest, ExportTraceServiceRequest,
    MapOptions, MappedLogTrace, MappedTrace,
};
use traceway_core::Level;
use traceway_store::{AppendRequest, ErrorChain, ErrorKind, StoreFailure, TraceError};

use self::status::Detail;
use crate::error::RETRY_AFTER_SECS;
use crate::{AppState, Config};

/// What an export stored.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Ingested {
    /// Spans, errors and logs written.
    pub accepted: u64,
    /// Spans, errors and logs skipped as already stored (exporter retries).
    pub duplicates: u64,
    /// Spans (or, for a log export, log records) refused: invalid ids, or a log record
    /// without a trace id. For the partial-success answer.
    pub rejected_spans: u64,
    /// Why they were refused.
    pub rejection_message: Option<String>,
}

/// Why an export failed, in terms both transports can answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// What kind of failure; decides the status code and whether a retry can succeed.
    pub kind: FailureKind,
    /// For the developer.
    pub message: String,
}

/// The failures OTLP distinguishes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureKind {
    /// Undecodable or invalid request (HTTP 400, gRPC `INVALID_ARGUMENT`); do not retry.
    BadData,
    /// Body over the cap, compressed or not (HTTP 413, gRPC `RESOURCE_EXHAUSTED` without
    /// retry info); do not retry.
    TooLarge,
    /// A `Content-Type` or `Content-Encoding` that is not OTLP's (HTTP 415).
    UnsupportedMediaType,
    /// The store's write queue stayed full (HTTP 429, gRPC `RESOURCE_EXHAUSTED` with
    /// `RetryInfo`); retry later.
    Overloaded,
    /// The store is shutting down or unreachable (HTTP 503, gRPC `UNAVAILABLE` with
    /// `RetryInfo`); retry later.
    Unavailable,
    /// Anything else (HTTP 500, gRPC `INTERNAL`); details are logged only.
    Internal,
    /// No valid API key (HTTP 401, gRPC `UNAUTHENTICATED`); see `auth.rs`.
    Unauthenticated,
    /// A valid key without the scope (HTTP 403, gRPC `PERMISSION_DENIED`).
    Forbidden,
    /// The body did not arrive within `--body-read-timeout` (HTTP 408, gRPC
    /// `DEADLINE_EXCEEDED`; ADR 033).
    TimedOut,
}

impl Failure {
    /// A malformed request.
    pub fn bad_data(message: impl Into<String>) -> Failure {
        Failure {
            kind: FailureKind::BadData,
            message: message.into(),
        }
    }

    /// A body over `limit` bytes.
    pub fn too_large(what: &str, limit: usize) -> Failure {
        Failure {
            kind: FailureKind::TooLarge,
            message: format!("{what} is larger than the limit of {limit} bytes"),
        }
    }

    /// A media type or content encoding OTLP does not define.
    pub fn unsupported(message: impl Into<String>) -> Failure {
        Failure {
            kind: FailureKind::UnsupportedMediaType,
            message: message.into(),
        }
    }

    /// A body that did not arrive in time.
    pub fn timed_out(t: &crate::transport::BodyTimeout) -> Failure {
        Failure {
            kind: FailureKind::TimedOut,
            message: t.to_string(),
        }
    }

    /// The HTTP status of this failure.
    pub fn http_status(&self) -> StatusCode {
        match self.kind {
            FailureKind::BadData => StatusCode::BAD_REQUEST,
            FailureKind::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            FailureKind::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            FailureKind::Overloaded => StatusCode::TOO_MANY_REQUESTS,
            FailureKind::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            FailureKind::Internal => StatusCode::INTERNAL_SERVER_ERROR,
            FailureKind::Unauthenticated => StatusCode::UNAUTHORIZED,
            FailureKind::Forbidden => StatusCode::FORBIDDEN,
            FailureKind::TimedOut => StatusCode::REQUEST_TIMEOUT,
        }
    }

    /// The gRPC status code of this failure.
    pub fn grpc_code(&self) -> tonic::Code {
        match self.kind {
            FailureKind::BadData | FailureKind::UnsupportedMediaType => {
                tonic::Code::InvalidArgument
            }
            FailureKind::TooLarge | FailureKind::Overloaded => tonic::Code::ResourceExhausted,
            FailureKind::Unavailable => tonic::Code::Unavailable,
            FailureKind::Internal => tonic::Code::Internal,
            FailureKind::Unauthenticated => tonic::Code::Unauthenticated,
            FailureKind::Forbidden => tonic::Code::PermissionDenied,
            FailureKind::TimedOut => tonic::Code::DeadlineExceeded,
        }
    }

    /// The `google.rpc.Status` details: `RetryInfo` when a retry can succeed, `BadRequest`
    /// for bad data.
    pub fn details(&self) -> Vec<Detail> {
        match self.kind {
            FailureKind::Overloaded | FailureKind::Unavailable => {
                vec![Detail::RetryAfter(RETRY_AFTER_SECS)]
            }
            FailureKind::BadData => vec![Detail::BadRequest(self.message.clone())],
            _ => Vec::new(),
        }
    }

    /// Whether a client should retry (429/503, `RESOURCE_EXHAUSTED` with retry info,
    /// `UNAVAILABLE`).
    pub fn is_retryable(&self) -> bool {
        matches!(
            self.kind,
            FailureKind::Overloaded | FailureKind::Unavailable
        )
    }

    /// Which of two failures of one export to report: the one a client must not ignore.
    fn severity(&self) -> u8 {
        match self.kind {
            FailureKind::Internal => 3,
            FailureKind::Unavailable => 2,
            FailureKind::Overloaded => 1,
            _ => 0,
        }
    }
}

impl Failure {
    /// The one mapping from store errors to OTLP failures, by kind. 5xx details are logged
    /// with their chain of causes, never sent.
    pub fn from_store<E: StoreFailure>(e: &E) -> Failure {
        match e.kind() {
            ErrorKind::Overloaded => {
                tracing::warn!(reason = %ErrorChain(e), "otlp export refused: store overloaded");
                Failure {
                    kind: FailureKind::Overloaded,
                    message: "the store is busy; retry later".into(),
                }
            }
            ErrorKind::Unavailable => {
                tracing::warn!(reason = %ErrorChain(e), "otlp export refused: store unavailable");
                Failure {
                    kind: FailureKind::Unavailable,
                    message: "the store is unavailable; retry later".into(),
                }
            }
            ErrorKind::Invalid => Failure::bad_data(e.to_string()),
            ErrorKind::NotFound
            | ErrorKind::IdTaken
            | ErrorKind::IllegalTransition
            | ErrorKind::LeaseLost
            | ErrorKind::Internal => {
                tracing::error!(error = %ErrorChain(e), "otlp export failed");
                Failure {
                    kind: FailureKind::Internal,
                    message: "internal error".into(),
                }
            }
        }
    }
}

impl From<TraceError> for Failure {
    fn from(e: TraceError) -> Failure {
        Failure::from_store(&e)
    }
}

/// How spans are mapped for this server: at level `debug` the mapping keeps every
/// attribute, also those it moved into typed fields (ADR 004).
pub fn map_options(config: &Config) -> MapOptions {
    MapOptions {
        keep_mapped_attributes: config.capture.default_level == Level::Debug,
    }
}

/// Maps an export request and stores it: one append per trace (creating the trace when
/// it is new), then the state change when the trace's root span came. The traces of one
/// request are written concurrently, so the store can commit them in one group.
///
/// A failure of any trace fails the export; the client retries the whole request and the
/// traces already written absorb the retry as duplicates.
pub async fn ingest(
    app: &AppState,
    tenant: &str,
    request: &ExportTraceServiceRequest,
) -> Result<Ingested, Failure> {
    let spans: usize = request
        .resource_spans
        .iter()
        .flat_map(|r| &r.scope_spans)
        .map(|s| s.spans.len())
        .sum();
    if let Err(wait) = app.ingest_quota.take(tenant, spans as u64) {
        return Err(crate::quotas::otlp_refusal(tenant, wait));
    }
    if let Err(stored) = app.stored_quota.check(app.store.as_ref(), tenant).await {
        return Err(app.stored_quota.otlp_refusal(tenant, stored));
    }
    let batch = map_request_with(request, &map_options(&app.config));
    let out = Ingested {
        rejected_spans: batch.rejected_spans,
        rejection_message: batch.rejection_message,
        ..Ingested::default()
    };
    if let Some(message) = &out.rejection_message {
        tracing::debug!(tenant, rejected = out.rejected_spans, %message, "otlp spans rejected");
    }
    let writes = batch
        .traces
        .into_iter()
        .map(|t| store_trace(app, tenant, t));
    gather(out, writes).await
}

/// What the server answers to every metrics export: they are accepted and dropped
/// (ADR 021). Sent as the partial success's message with zero rejected points, which OTLP
/// defines as a warning, so exporters neither retry nor fail.
pub const METRICS_DROPPED_MESSAGE: &str =
    "traceway stores traces and logs, not metrics: these metrics were accepted and dropped";

/// Maps a log export and stores, per trace, its records as `log` events (creating the
/// trace `RUNNING` when the log is the first the server hears of it). Records without a
/// trace id are counted in `rejected_spans` (here: log records) for the partial success.
///
/// The GenAI message events become message fills of their LLM span in the same append:
/// the store puts them on the span, running or ended, or keeps them until the span arrives
/// (ADR 027).
pub async fn ingest_logs(
    app: &AppState,
    tenant: &str,
    request: &ExportLogsServiceRequest,
) -> Result<Ingested, Failure> {
    if let Err(stored) = app.stored_quota.check(app.store.as_ref(), tenant).await {
        return Err(app.stored_quota.otlp_refusal(tenant, stored));
    }
    let batch = map_logs_request(request);
    let out = Ingested {
        rejected_spans: batch.rejected_log_records,
        rejection_message: batch.rejection_message,
        ..Ingested::default()
    };
    if let Some(message) = &out.rejection_message {
        tracing::debug!(tenant, rejected = out.rejected_spans, %message, "otlp log records rejected");
    }
    let writes = batch.traces.into_iter().map(|t| store_logs(app, tenant, t));
    gather(out, writes).await
}

/// Awaits one write per trace (concurrently, so they share one group commit), adds up what
/// they stored, and answers the most severe failure if any failed (of equally severe ones,
/// the first trace's). The writes are polled as a `FuturesUnordered`: each is polled when
/// it is woken, and nothing collects or reorders their results.
async fn gather<W>(mut out: Ingested, writes: impl Iterator<Item = W>) -> Result<Ingested, Failure>
where
    W: std::future::Future<Output = Result<(u32, u32), TraceError>>,
{
    use futures::stream::{FuturesUnordered, StreamExt as _};
    let mut pending: FuturesUnordered<_> = writes
        .enumerate()
        .map(|(i, w)| async move { (i, w.await) })
        .collect();
    let mut failure: Option<(usize, Failure)> = None;
    while let Some((i, result)) = pending.next().await {
        match result {
            Ok((accepted, duplicates)) => {
                out.accepted += u64::from(accepted);
                out.duplicates += u64::from(duplicates);
            }
            Err(e) => {
                let f = Failure::from(e);
                let worse = failure.as_ref().is_none_or(|(j, g)| {
                    f.severity() > g.severity() || (f.severity() == g.severity() && i < *j)
                });
                if worse {
                    failure = Some((i, f));
                }
            }
        }
    }
    match failure {
        Some((_, f)) => Err(f),
        None => Ok(out),
    }
}

async fn store_logs(
    app: &AppState,
    tenant: &str,
    trace: MappedLogTrace,
) -> Result<(u32, u32), TraceError> {
    let create_if_missing = Some(trace.new_trace());
    let events = trace.log_events();
    let outcome = app
        .store
        .append(AppendRequest {
            tenant: tenant.to_string(),
            trace_id: trace.trace_id,
            create_if_missing,
            events,
            fills: trace.message_fills,
            end: None,
        })
        .await?;
    Ok((outcome.accepted, outcome.duplicates))
}

/// Stores one trace's spans in one write: creates the trace if it is new, fills what an
/// earlier batch did not know (name, agent, session, user, service), and ends it when a
/// root span arrived (the first end decides; later spans are still stored and counted).
/// Returns (accepted, duplicates).
async fn store_trace(
    app: &AppState,
    tenant: &str,
    trace: MappedTrace,
) -> Result<(u32, u32), TraceError> {
    let end = trace.root_end().and_then(|patch| {
        Some(traceway_store::TraceEnd {
            state: patch.state?,
            reason: patch.reason,
        })
    });
    let outcome = app
        .store
        .append(AppendRequest {
            fills: Vec::new(),
            tenant: tenant.to_string(),
            trace_id: trace.trace_id,
            create_if_missing: Some(trace.new_trace()),
            events: trace.into_events(),
            end,
        })
        .await?;
    Ok((outcome.accepted, outcome.duplicates))
}
