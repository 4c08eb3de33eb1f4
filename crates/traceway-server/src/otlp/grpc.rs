//! OTLP/gRPC: `opentelemetry.proto.collector.trace.v1.TraceService/Export`,
//! `…logs.v1.LogsService/Export` and `…metrics.v1.MetricsService/Export` (accepted and
//! dropped, ADR 021) on their own listener (`--grpc-listen`, default `127.0.0.1:4317`). The
//! service traits and servers come from `opentelemetry-proto`'s generated code
//! (`gen-tonic`); the handlers share [`ingest`] and [`ingest_logs`] with OTLP/HTTP.
//!
//! Requests may be gzipped; the message is capped at `max_body_bytes` after
//! decompression (tonic enforces it while it inflates). Failures carry a
//! `google.rpc.Status` in `grpc-status-details-bin`: `RetryInfo` under overload
//! (`RESOURCE_EXHAUSTED`) or shutdown (`UNAVAILABLE`), `BadRequest` for bad data.
//!
//! tonic itself answers a request it cannot decode before our handlers run, with codes
//! that mislead an exporter (issue 15, failure 3.5): `INTERNAL` for malformed protobuf, a
//! corrupt gzip body or a compressed flag without `grpc-encoding`, and `OUT_OF_RANGE`
//! (which exporters retry) for an uncompressed message over the cap. [`client_fault`]
//! turns them into `INVALID_ARGUMENT` and `RESOURCE_EXHAUSTED` (ADR 033).

use std::future::Future;

use bytes::Bytes;
use opentelemetry_proto::tonic::collector::logs::v1::logs_service_server::{
    LogsService, LogsServiceServer,
};
use opentelemetry_proto::tonic::collector::logs::v1::{
    ExportLogsPartialSuccess, ExportLogsServiceRequest, ExportLogsServiceResponse,
};
use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_server::{
    MetricsService, MetricsServiceServer,
};
use opentelemetry_proto::tonic::collector::metrics::v1::{
    ExportMetricsPartialSuccess, ExportMetricsServiceRequest, ExportMetricsServiceResponse,
};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTracePartialSuccess, ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use tokio::net::TcpListener;
use tonic::codec::CompressionEncoding;

use super::status::encode_protobuf;
use super::{ingest, ingest_logs, Failure, FailureKind, METRICS_DROPPED_MESSAGE};
use crate::AppState;

/// The `TraceService` implementation.
pub struct OtlpTraceService {
    app: AppState,
}

#[tonic::async_trait]
impl TraceService for OtlpTraceService {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let tenant = crate::auth::grpc_tenant(&self.app, request.metadata()).await?;
        let request = request.into_inner();
        let done = ingest(&self.app, &tenant, &request)
            .await
            .map_err(to_status)?;
        let partial_success = (done.rejected_spans > 0).then(|| ExportTracePartialSuccess {
            rejected_spans: i64::try_from(done.rejected_spans).unwrap_or(i64::MAX),
            error_message: done.rejection_message.unwrap_or_default(),
        });
        Ok(tonic::Response::new(ExportTraceServiceResponse {
            partial_success,
        }))
    }
}

/// The `LogsService` implementation.
pub struct OtlpLogsService {
    app: AppState,
}

#[tonic::async_trait]
impl LogsService for OtlpLogsService {
    async fn export(
        &self,
        request: tonic::Request<ExportLogsServiceRequest>,
    ) -> Result<tonic::Response<ExportLogsServiceResponse>, tonic::Status> {
        let tenant = crate::auth::grpc_tenant(&self.app, request.metadata()).await?;
        let request = request.into_inner();
        let done = ingest_logs(&self.app, &tenant, &request)
            .await
            .map_err(to_status)?;
        let partial_success = (done.rejected_spans > 0).then(|| ExportLogsPartialSuccess {
            rejected_log_records: i64::try_from(done.rejected_spans).unwrap_or(i64::MAX),
            error_message: done.rejection_message.unwrap_or_default(),
        });
        Ok(tonic::Response::new(ExportLogsServiceResponse {
            partial_success,
        }))
    }
}

/// The `MetricsService` implementation: accepts and drops (ADR 021), after the same
/// authentication as traces and logs.
pub struct OtlpMetricsService {
    app: AppState,
}

#[tonic::async_trait]
impl MetricsService for OtlpMetricsService {
    async fn export(
        &self,
        request: tonic::Request<ExportMetricsServiceRequest>,
    ) -> Result<tonic::Response<ExportMetricsServiceResponse>, tonic::Status> {
        crate::auth::grpc_tenant(&self.app, request.metadata()).await?;
        Ok(tonic::Response::new(ExportMetricsServiceResponse {
            partial_success: Some(ExportMetricsPartialSuccess {
                rejected_data_points: 0,
                error_message: METRICS_DROPPED_MESSAGE.to_string(),
            }),
        }))
    }
}

/// A failure as a gRPC status whose details are a `google.rpc.Status`.
pub fn to_status(f: Failure) -> tonic::Status {
    let code = f.grpc_code();
    let details = encode_protobuf(code as i32, &f.message, &f.details());
    tonic::Status::with_details(code, f.message, Bytes::from(details))
}

/// The gRPC service: gzip accepted, messages capped at `max_body_bytes` after
/// decompression. Answers are a few bytes and are not compressed.
pub fn service(app: AppState) -> TraceServiceServer<OtlpTraceService> {
    let limit = app.config.max_body_bytes;
    TraceServiceServer::new(OtlpTraceService { app })
        .accept_compressed(CompressionEncoding::Gzip)
        .max_decoding_message_size(limit)
}

/// The logs service, with the same compression and size limits.
pub fn logs_service(app: AppState) -> LogsServiceServer<OtlpLogsService> {
    let limit = app.config.max_body_bytes;
    LogsServiceServer::new(OtlpLogsService { app })
        .accept_compressed(CompressionEncoding::Gzip)
        .max_decoding_message_size(limit)
}

/// The metrics service, with the same compression and size limits.
pub fn metrics_service(app: &AppState) -> MetricsServiceServer<OtlpMetricsService> {
    MetricsServiceServer::new(OtlpMetricsService { app: app.clone() })
        .accept_compressed(CompressionEncoding::Gzip)
        .max_decoding_message_size(app.config.max_body_bytes)
}

/// Serves OTLP/gRPC on `listener`, within the configured connection bounds (ADR 033),
/// until `shutdown` resolves, then lets in-flight calls finish.
pub async fn serve(
    listener: TcpListener,
    app: AppState,
    shutdown: impl Future<Output = ()> + Send,
) -> std::io::Result<()> {
    let limits = app.config.conn_limits;
    let open = app.metrics.grpc_connections.clone();
    let routes = tonic::service::Routes::new(metrics_service(&app))
        .add_service(logs_service(app.clone()))
        .add_service(service(app))
        .prepare();
    type Body = http_body_util::combinators::MapErr<
        crate::transport::RequestBody,
        fn(crate::transport::BoxError) -> crate::transport::BoxError,
    >;
    let service = tower::ServiceExt::<http::Request<Body>>::map_response(routes, client_fault);
    // A body past its read deadline fails as a status, which tonic answers as it is.
    let service = tower::ServiceExt::map_request(
        service,
        |req: http::Request<crate::transport::RequestBody>| -> http::Request<Body> {
            req.map(|body| http_body_util::BodyExt::map_err(body, deadline_exceeded as fn(_) -> _))
        },
    );
    crate::transport::serve(
        listener,
        service,
        limits,
        crate::transport::Protocols::Http2Only,
        open,
        shutdown,
    )
    .await
}

/// A [`BodyTimeout`](crate::transport::BodyTimeout) as `DEADLINE_EXCEEDED`; other body
/// errors as they are.
fn deadline_exceeded(e: crate::transport::BoxError) -> crate::transport::BoxError {
    match crate::transport::BodyTimeout::find(&*e) {
        Some(t) => Box::new(to_status(Failure::timed_out(t))),
        None => e,
    }
}

/// What tonic's decoder says, before any handler runs, about a request the client got
/// wrong, and what kind of failure it is. Matched on tonic's messages (tonic 0.14); the
/// tests in `tests/it/transport.rs` fail if a tonic upgrade changes them.
fn tonic_decode_failure(code: tonic::Code, message: &str) -> Option<FailureKind> {
    match code {
        // Our handlers never answer OUT_OF_RANGE: only tonic's "decoded message length too
        // large" does.
        tonic::Code::OutOfRange => Some(FailureKind::TooLarge),
        tonic::Code::Internal
            if message.starts_with("failed to decode Protobuf message")
                || message.starts_with("protocol error:")
                || message.starts_with("Error decompressing:") =>
        {
            Some(FailureKind::BadData)
        }
        _ => None,
    }
}

/// Rewrites tonic's own refusals of undecodable requests (see [`tonic_decode_failure`])
/// into the codes OTLP exporters act on correctly, with our `google.rpc.Status` details.
/// They are trailers-only answers, so the status is in the response headers.
pub fn client_fault(resp: http::Response<tonic::body::Body>) -> http::Response<tonic::body::Body> {
    let Some(status) = tonic::Status::from_header_map(resp.headers()) else {
        return resp;
    };
    match tonic_decode_failure(status.code(), status.message()) {
        Some(kind) => {
            let failure = Failure {
                kind,
                message: status.message().to_string(),
            };
            to_status(failure).into_http()
        }
        None => resp,
    }
}
