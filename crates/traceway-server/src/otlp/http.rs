//! `POST /v1/traces`, `/v1/logs` and `/v1/metrics`: OTLP/HTTP with a protobuf or OTLP/JSON
//! body, optionally gzipped. Answers as the OTLP/HTTP specification says: an
//! `Export…ServiceResponse` in the request's encoding (with `partial_success` when spans or
//! log records were rejected, and always for metrics, which are dropped: ADR 021), and for
//! failures a `google.rpc.Status` in the request's encoding (protobuf when the media type
//! itself is the problem), with `Retry-After` on 429 and 503.

use std::io::Read as _;

use axum::extract::{FromRequest, Request, State};
use axum::http::header::{CONTENT_ENCODING, CONTENT_TYPE, RETRY_AFTER};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use opentelemetry_proto::tonic::collector::logs::v1::{
    ExportLogsPartialSuccess, ExportLogsServiceResponse,
};
use opentelemetry_proto::tonic::collector::metrics::v1::{
    ExportMetricsPartialSuccess, ExportMetricsServiceResponse,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTracePartialSuccess, ExportTraceServiceResponse,
};
use prost::Message as _;
use serde_json::json;
use traceway_core::otlp::{decode_export_request, decode_logs_request, Encoding};

use super::status::{encode_json, encode_protobuf};
use super::{ingest, ingest_logs, Failure, Ingested, METRICS_DROPPED_MESSAGE};
use crate::error::RETRY_AFTER_SECS;
use crate::extract::{Tenant, TENANT_HEADER};
use crate::openapi::{OtlpFailure, OtlpJson, OtlpJsonResponse, ProtobufMessage, TenantHeader};
use crate::AppState;

const PROTOBUF: &str = "application/x-protobuf";
const JSON: &str = "application/json";

/// The handler of `POST /v1/traces`.
#[utoipa::path(
    post,
    path = "/v1/traces",
    tag = "otlp",
    operation_id = "otlpExportTraces",
    summary = "Export spans (OTLP/HTTP)",
    description = "OpenTelemetry's OTLP/HTTP trace endpoint: point an OTel SDK's OTLP exporter at `http://127.0.0.1:4318`. Spans map to Traceway spans (OpenInference and OTel GenAI conventions, ADR 006, 020). The first span of an unknown trace creates it `RUNNING`; a local root ends it (`ERRORED` when its status is error, else `COMPLETED`). A re-exported span is stored once. Spans count against the tenant's ingest quota.",
    params(
        TenantHeader,
        ("Content-Encoding" = Option<String>, Header, description = "`gzip` (or `x-gzip`, `identity`); any other coding is 415."),
    ),
    request_body(
        description = "An `ExportTraceServiceRequest`, optionally gzipped.",
        content(
            (ProtobufMessage = "application/x-protobuf"),
            (OtlpJson = "application/json"),
        ),
    ),
    responses(
        (status = 200, description = "Stored (all, or the valid ones: see `partialSuccess`), in the request's encoding.",
            content(
                (ProtobufMessage = "application/x-protobuf"),
                (OtlpJsonResponse = "application/json"),
            )),
        (status = 400, response = OtlpFailure),
        (status = 401, response = OtlpFailure),
        (status = 403, response = OtlpFailure),
        (status = 408, response = OtlpFailure),
        (status = 413, response = OtlpFailure),
        (status = 415, response = OtlpFailure),
        (status = 429, response = OtlpFailure),
        (status = 500, response = OtlpFailure),
        (status = 503, response = OtlpFailure),
    ),
    security(("bearer" = ["ingest"]), ("basic" = ["ingest"])),
)]
pub async fn export(State(app): State<AppState>, req: Request) -> Response {
    let encoding = match request_encoding(req.headers()) {
        Ok(e) => e,
        // The media type is the problem, so the answer uses the binary encoding, the one
        // every OTLP client reads.
        Err(f) => return failure(Encoding::Protobuf, f),
    };
    match handle(&app, encoding, req).await {
        Ok(done) => success(encoding, &done),
        Err(f) => failure(encoding, f),
    }
}

/// The handler of `POST /v1/logs`.
#[utoipa::path(
    post,
    path = "/v1/logs",
    tag = "otlp",
    operation_id = "otlpExportLogs",
    summary = "Export log records (OTLP/HTTP)",
    description = "A record with a trace id and a span id becomes a `log` event of that span (with only a trace id: of the trace); the trace is created `RUNNING` when new. GenAI message and operation-details events fill their LLM span's input and output messages (ADR 027), also when they arrive before the span. A record without a trace id is rejected and counted in `partialSuccess`. A re-exported record is stored once. A refusal for the key (401, 403, ingest scope) is a `google.rpc.Status`, as on `/v1/traces`.",
    params(
        TenantHeader,
        ("Content-Encoding" = Option<String>, Header, description = "`gzip` (or `x-gzip`, `identity`); any other coding is 415."),
    ),
    request_body(
        description = "An `ExportLogsServiceRequest`, optionally gzipped.",
        content(
            (ProtobufMessage = "application/x-protobuf"),
            (OtlpJson = "application/json"),
        ),
    ),
    responses(
        (status = 200, description = "Stored (all, or the valid ones: see `partialSuccess`), in the request's encoding.",
            content(
                (ProtobufMessage = "application/x-protobuf"),
                (OtlpJsonResponse = "application/json"),
            )),
        (status = 400, response = OtlpFailure),
        (status = 401, response = OtlpFailure),
        (status = 403, response = OtlpFailure),
        (status = 408, response = OtlpFailure),
        (status = 413, response = OtlpFailure),
        (status = 415, response = OtlpFailure),
        (status = 429, response = OtlpFailure),
        (status = 500, response = OtlpFailure),
        (status = 503, response = OtlpFailure),
    ),
    security(("bearer" = ["ingest"]), ("basic" = ["ingest"])),
)]
pub async fn export_logs(State(app): State<AppState>, req: Request) -> Response {
    let encoding = match request_encoding(req.headers()) {
        Ok(e) => e,
        Err(f) => return failure(Encoding::Protobuf, f),
    };
    let done = async {
        let (tenant, body) = read_body(&app, req).await?;
        let request =
            decode_logs_request(&body, encoding).map_err(|e| Failure::bad_data(e.to_string()))?;
        ingest_logs(&app, &tenant.0, &request).await
    };
    match done.await {
        Ok(done) => logs_success(encoding, &done),
        Err(f) => failure(encoding, f),
    }
}

/// The handler of `POST /v1/metrics`: the body is read (tenant, encoding, size and gzip
/// checked as for traces, and that it decodes) and dropped, and the answer says so
/// (ADR 021).
#[utoipa::path(
    post,
    path = "/v1/metrics",
    tag = "otlp",
    operation_id = "otlpExportMetrics",
    summary = "Export metrics (OTLP/HTTP): accepted and dropped",
    description = "Traceway stores no metrics (ADR 021): the body is checked (encoding, size, gzip, and that it is an `ExportMetricsServiceRequest` in protobuf or a JSON object) and dropped, and the answer's `partialSuccess.errorMessage` says so, so an SDK exporting every signal to one endpoint gets no errors. A refusal for the key (401, 403, ingest scope) is a `google.rpc.Status`, as on `/v1/traces`.",
    params(
        TenantHeader,
        ("Content-Encoding" = Option<String>, Header, description = "`gzip` (or `x-gzip`, `identity`); any other coding is 415."),
    ),
    request_body(
        description = "An `ExportMetricsServiceRequest`, optionally gzipped.",
        content(
            (ProtobufMessage = "application/x-protobuf"),
            (OtlpJson = "application/json"),
        ),
    ),
    responses(
        (status = 200, description = "Stored (all, or the valid ones: see `partialSuccess`), in the request's encoding.",
            content(
                (ProtobufMessage = "application/x-protobuf"),
                (OtlpJsonResponse = "application/json"),
            )),
        (status = 400, response = OtlpFailure),
        (status = 401, response = OtlpFailure),
        (status = 403, response = OtlpFailure),
        (status = 408, response = OtlpFailure),
        (status = 413, response = OtlpFailure),
        (status = 415, response = OtlpFailure),
        (status = 429, response = OtlpFailure),
        (status = 500, response = OtlpFailure),
        (status = 503, response = OtlpFailure),
    ),
    security(("bearer" = ["ingest"]), ("basic" = ["ingest"])),
)]
pub async fn export_metrics(State(app): State<AppState>, req: Request) -> Response {
    let encoding = match request_encoding(req.headers()) {
        Ok(e) => e,
        Err(f) => return failure(Encoding::Protobuf, f),
    };
    let checked = match read_body(&app, req).await {
        Ok((_, body)) => check_metrics(&body, encoding),
        Err(f) => Err(f),
    };
    if let Err(f) = checked {
        return failure(encoding, f);
    }
    let body = match encoding {
        Encoding::Protobuf => ExportMetricsServiceResponse {
            partial_success: Some(ExportMetricsPartialSuccess {
                rejected_data_points: 0,
                error_message: METRICS_DROPPED_MESSAGE.to_string(),
            }),
        }
        .encode_to_vec(),
        Encoding::Json => serde_json::to_vec(&json!({"partialSuccess": {
            "rejectedDataPoints": "0",
            "errorMessage": METRICS_DROPPED_MESSAGE,
        }}))
        .unwrap_or_default(),
    };
    ([(CONTENT_TYPE, content_type(encoding))], body).into_response()
}

/// A metrics body is dropped, but only if it is one: a protobuf
/// `ExportMetricsServiceRequest`, or a JSON object (the document's OTLP/JSON; before, any
/// bytes at all were answered 200, found by schemathesis).
fn check_metrics(body: &[u8], encoding: Encoding) -> Result<(), Failure> {
    use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
    use serde::Deserializer as _;
    match encoding {
        Encoding::Protobuf => ExportMetricsServiceRequest::decode(body)
            .map(drop)
            .map_err(|e| Failure::bad_data(format!("invalid protobuf body: {e}"))),
        Encoding::Json => {
            // An object of any content, read without keeping any of it.
            struct AnyObject;
            impl<'de> serde::de::Visitor<'de> for AnyObject {
                type Value = ();
                fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                    f.write_str("an ExportMetricsServiceRequest object")
                }
                fn visit_map<A: serde::de::MapAccess<'de>>(self, mut m: A) -> Result<(), A::Error> {
                    while m
                        .next_entry::<serde::de::IgnoredAny, serde::de::IgnoredAny>()?
                        .is_some()
                    {}
                    Ok(())
                }
            }
            let mut de = serde_json::Deserializer::from_slice(body);
            (&mut de)
                .deserialize_map(AnyObject)
                .and_then(|()| de.end())
                .map_err(|e| Failure::bad_data(format!("invalid JSON body: {e}")))
        }
    }
}

async fn handle(app: &AppState, encoding: Encoding, req: Request) -> Result<Ingested, Failure> {
    let (tenant, body) = read_body(app, req).await?;
    let request =
        decode_export_request(&body, encoding).map_err(|e| Failure::bad_data(e.to_string()))?;
    ingest(app, &tenant.0, &request).await
}

/// The tenant and the body, un-gzipped, within `max_body_bytes` before and after.
async fn read_body(app: &AppState, req: Request) -> Result<(Tenant, Bytes), Failure> {
    let tenant = Tenant::parse(req.headers().get(TENANT_HEADER).map(|v| v.as_bytes()))
        .map_err(Failure::bad_data)?;
    let gzip = gzipped(req.headers())?;
    let limit = app.config.max_body_bytes;
    let body = Bytes::from_request(req, app).await.map_err(|e| {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            Failure::too_large("request body", limit)
        } else if let Some(t) = crate::transport::BodyTimeout::find(&e) {
            Failure::timed_out(t)
        } else {
            Failure::bad_data(format!("could not read the body: {}", e.body_text()))
        }
    })?;
    let body = if gzip {
        Bytes::from(gunzip(&body, limit)?)
    } else {
        body
    };
    Ok((tenant, body))
}

/// The encoding named by `Content-Type`; anything but OTLP's two media types is 415.
fn request_encoding(headers: &HeaderMap) -> Result<Encoding, Failure> {
    let ct = headers
        .get(CONTENT_TYPE)
        .map(|v| v.to_str().unwrap_or("?"))
        .ok_or_else(|| {
            Failure::unsupported(format!(
                "missing Content-Type: OTLP/HTTP takes {PROTOBUF} or {JSON}"
            ))
        })?;
    Encoding::from_content_type(ct).ok_or_else(|| {
        Failure::unsupported(format!(
            "unsupported Content-Type {ct:?}: OTLP/HTTP takes {PROTOBUF} or {JSON}"
        ))
    })
}

/// Whether the body is gzipped; other content codings are 415 (OTLP defines only gzip).
fn gzipped(headers: &HeaderMap) -> Result<bool, Failure> {
    let mut gzip = false;
    for v in headers.get_all(CONTENT_ENCODING) {
        let v = v.to_str().unwrap_or("?");
        for coding in v.split(',').map(str::trim).filter(|c| !c.is_empty()) {
            if coding.eq_ignore_ascii_case("gzip") || coding.eq_ignore_ascii_case("x-gzip") {
                if gzip {
                    return Err(Failure::unsupported("gzip applied twice is not supported"));
                }
                gzip = true;
            } else if !coding.eq_ignore_ascii_case("identity") {
                return Err(Failure::unsupported(format!(
                    "unsupported Content-Encoding {coding:?}: OTLP/HTTP takes gzip or none"
                )));
            }
        }
    }
    Ok(gzip)
}

/// Un-gzips a body, refusing (413) once the output passes `limit`: a small body that
/// inflates to gigabytes never gets more than `limit + 1` bytes of memory.
pub fn gunzip(body: &[u8], limit: usize) -> Result<Vec<u8>, Failure> {
    let mut out = Vec::with_capacity(body.len().saturating_mul(4).min(limit));
    let mut decoder = flate2::read::MultiGzDecoder::new(body).take(limit as u64 + 1);
    decoder
        .read_to_end(&mut out)
        .map_err(|e| Failure::bad_data(format!("invalid gzip body: {e}")))?;
    if out.len() > limit {
        return Err(Failure::too_large("decompressed request body", limit));
    }
    Ok(out)
}

fn content_type(encoding: Encoding) -> HeaderValue {
    HeaderValue::from_static(match encoding {
        Encoding::Protobuf => PROTOBUF,
        Encoding::Json => JSON,
    })
}

/// 200 with an `ExportTraceServiceResponse`; `partial_success` only when spans were
/// rejected (the specification asks to leave it unset on full success).
fn success(encoding: Encoding, done: &Ingested) -> Response {
    if done.rejected_spans == 0 {
        // The common answer, fixed: an empty message (protobuf) or `{}` (JSON).
        let body = match encoding {
            Encoding::Protobuf => Bytes::new(),
            Encoding::Json => Bytes::from_static(b"{}"),
        };
        return ([(CONTENT_TYPE, content_type(encoding))], body).into_response();
    }
    let partial = (done.rejected_spans > 0).then(|| ExportTracePartialSuccess {
        rejected_spans: i64::try_from(done.rejected_spans).unwrap_or(i64::MAX),
        error_message: done.rejection_message.clone().unwrap_or_default(),
    });
    let body = match encoding {
        Encoding::Protobuf => ExportTraceServiceResponse {
            partial_success: partial,
        }
        .encode_to_vec(),
        Encoding::Json => {
            let v = match partial {
                // proto3 JSON writes int64 as a string.
                Some(p) => json!({"partialSuccess": {
                    "rejectedSpans": p.rejected_spans.to_string(),
                    "errorMessage": p.error_message,
                }}),
                None => json!({}),
            };
            serde_json::to_vec(&v).unwrap_or_default()
        }
    };
    ([(CONTENT_TYPE, content_type(encoding))], body).into_response()
}

/// 200 with an `ExportLogsServiceResponse`; `partial_success` only when records were
/// rejected.
fn logs_success(encoding: Encoding, done: &Ingested) -> Response {
    let partial = (done.rejected_spans > 0).then(|| ExportLogsPartialSuccess {
        rejected_log_records: i64::try_from(done.rejected_spans).unwrap_or(i64::MAX),
        error_message: done.rejection_message.clone().unwrap_or_default(),
    });
    let body = match encoding {
        Encoding::Protobuf => ExportLogsServiceResponse {
            partial_success: partial,
        }
        .encode_to_vec(),
        Encoding::Json => {
            let v = match partial {
                Some(p) => json!({"partialSuccess": {
                    "rejectedLogRecords": p.rejected_log_records.to_string(),
                    "errorMessage": p.error_message,
                }}),
                None => json!({}),
            };
            serde_json::to_vec(&v).unwrap_or_default()
        }
    };
    ([(CONTENT_TYPE, content_type(encoding))], body).into_response()
}

/// A refusal before the handler (auth, quotas) as a `google.rpc.Status` in the encoding
/// the request names (protobuf when it names none OTLP knows).
pub(crate) fn refuse(headers: &HeaderMap, f: Failure) -> Response {
    failure(request_encoding(headers).unwrap_or(Encoding::Protobuf), f)
}

/// A failure as a `google.rpc.Status` in the request's encoding.
fn failure(encoding: Encoding, f: Failure) -> Response {
    let code = f.grpc_code() as i32;
    let details = f.details();
    let body = match encoding {
        Encoding::Protobuf => encode_protobuf(code, &f.message, &details),
        Encoding::Json => encode_json(code, &f.message, &details),
    };
    let mut resp = (
        f.http_status(),
        [(CONTENT_TYPE, content_type(encoding))],
        body,
    )
        .into_response();
    if f.is_retryable() {
        resp.headers_mut()
            .insert(RETRY_AFTER, HeaderValue::from(RETRY_AFTER_SECS));
    }
    resp
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::otlp::FailureKind;
    use std::io::Write as _;

    fn gz(data: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    #[test]
    fn gunzip_stops_at_the_limit() {
        let data = vec![b'a'; 10_000];
        assert_eq!(gunzip(&gz(&data), 10_000).unwrap(), data);
        let err = gunzip(&gz(&data), 9_999).unwrap_err();
        assert_eq!(err.kind, FailureKind::TooLarge);
        let err = gunzip(b"not gzip at all", 100).unwrap_err();
        assert_eq!(err.kind, FailureKind::BadData);
    }

    #[tokio::test]
    async fn the_fixed_success_bodies_are_what_the_encoders_write() {
        for encoding in [Encoding::Protobuf, Encoding::Json] {
            let resp = success(encoding, &Ingested::default());
            assert_eq!(resp.status(), StatusCode::OK);
            assert_eq!(resp.headers()[CONTENT_TYPE], content_type(encoding));
            let body = axum::body::to_bytes(resp.into_body(), usize::MAX)
                .await
                .unwrap();
            let want = match encoding {
                Encoding::Protobuf => ExportTraceServiceResponse::default().encode_to_vec(),
                Encoding::Json => serde_json::to_vec(&json!({})).unwrap(),
            };
            assert_eq!(body.as_ref(), want.as_slice(), "{encoding:?}");
        }
        // A partial success is still encoded.
        let partial = Ingested {
            rejected_spans: 2,
            rejection_message: Some("bad ids".into()),
            ..Ingested::default()
        };
        let body = axum::body::to_bytes(success(Encoding::Json, &partial).into_body(), usize::MAX)
            .await
            .unwrap();
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(
            v,
            json!({"partialSuccess": {"rejectedSpans": "2", "errorMessage": "bad ids"}})
        );
    }

    #[test]
    fn content_codings_table() {
        let cases: &[(&[&str], Result<bool, FailureKind>)] = &[
            (&[], Ok(false)),
            (&["identity"], Ok(false)),
            (&["gzip"], Ok(true)),
            (&["GZIP"], Ok(true)),
            (&["x-gzip"], Ok(true)),
            (&["gzip, identity"], Ok(true)),
            (&["br"], Err(FailureKind::UnsupportedMediaType)),
            (&["zstd"], Err(FailureKind::UnsupportedMediaType)),
            (&["gzip", "gzip"], Err(FailureKind::UnsupportedMediaType)),
        ];
        for (values, want) in cases {
            let mut h = HeaderMap::new();
            for v in *values {
                h.append(CONTENT_ENCODING, HeaderValue::from_str(v).unwrap());
            }
            let got = gzipped(&h).map_err(|f| f.kind);
            assert_eq!(&got, want, "{values:?}");
        }
    }
}
