//! The OpenAPI document, generated (ADR 026): each handler carries its `#[utoipa::path]`,
//! the types derive `utoipa::ToSchema`/`IntoParams`, and [`crate::routes`] registers the
//! handlers with `utoipa_axum::routes!`, so the router and the document come from one list.
//! This module holds what is shared by many routes: the document's header, the security
//! schemes, the tenant header, the error body and the reusable error answers.

use std::borrow::Cow;

use serde::Serialize;
use utoipa::openapi::schema::{AdditionalProperties, ObjectBuilder, Schema, SchemaFormat, Type};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::RefOr;
use utoipa::{IntoParams, Modify, OpenApi, ToResponse, ToSchema};

/// The document's header, tags, shared components and security schemes; the paths are
/// added by `utoipa_axum::routes!` in [`crate::routes`].
#[derive(OpenApi)]
#[openapi(
    info(
        title = "Traceway",
        description = "Tracing for AI agents: the native REST API, live streams (SSE) and \
            OTLP/HTTP ingestion.\n\n\
            Traces are created with `POST /api/v1/traces`, grow by appending events \
            (`POST /api/v1/traces/{id}/events`) or by OTLP exports, and end by a state change \
            (`PATCH`) or when their root span ends.\n\n\
            **Tenants and keys.** Every trace belongs to a tenant. With API keys off (the default \
            on a loopback listener) a request acts for the tenant named by `X-Traceway-Tenant` \
            (default `default`). With keys on (`--auth`, ADR 024) a request needs \
            `Authorization: Bearer <key>` or Basic auth (the key's public id and secret) with the \
            scope each operation names in its `security` (`ingest`, `read`, `admin`; admin implies \
            the others), and acts for the key's tenant whatever the header says: 401 without a \
            valid key, 403 without the scope. A trace of another tenant does not exist (404).\n\n\
            **Errors** are JSON, `{\"error\": {\"code\", \"message\"}}` (schema `ErrorBody`). An \
            unknown path answers 404 `not_found`; a known path with a method it does not serve \
            405 `method_not_allowed`. 429 and 503 carry `Retry-After`. JSON request bodies \
            (`Content-Type: application/json` or `*/*+json`, or none) are at most \
            `max_body_bytes` (default 10 MiB).\n\n\
            **OTLP** (`/v1/traces`, `/v1/logs`, `/v1/metrics`) follows the OTLP/HTTP \
            specification instead: protobuf or OTLP/JSON bodies, optionally gzipped, failures \
            answered with a `google.rpc.Status` in the request's encoding. OTLP/gRPC listens on \
            its own port (`--grpc-listen`, default `127.0.0.1:4317`) and is not described here.",
        license(name = "Apache-2.0", identifier = "Apache-2.0"),
    ),
    servers((url = "http://127.0.0.1:4318", description = "The default listen address.")),
    tags(
        (name = "otlp", description = "OpenTelemetry ingestion (OTLP/HTTP)."),
        (name = "traces", description = "Create, read, change and delete traces."),
        (name = "events", description = "A trace's event log: append and read."),
        (name = "streaming", description = "Live server-sent events."),
        (name = "analysis", description = "Summaries and analyses of one trace and across traces."),
        (name = "workflows", description = "Durable workflow trace contexts (ADR 022, 023)."),
        (name = "keys", description = "API keys (ADR 024)."),
        (name = "meta", description = "The API document, health checks and metrics."),
    ),
    components(
        schemas(ErrorBody, OtlpStatus, ProtobufMessage),
        responses(
            BadRequest,
            Unauthenticated,
            Forbidden,
            NotFound,
            Conflict,
            PayloadTooLarge,
            RequestTimeout,
            UnsupportedMediaType,
            Overloaded,
            Internal,
            Unavailable,
            OtlpFailure,
        )
    ),
    modifiers(&SecuritySchemes),
)]
pub struct ApiDoc;

/// The name of the bearer scheme in `security` requirements.
pub const BEARER: &str = "bearer";
/// The name of the Basic scheme.
pub const BASIC: &str = "basic";

/// Adds the two ways of presenting a key (ADR 024).
struct SecuritySchemes;

impl Modify for SecuritySchemes {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        let components = doc.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            BEARER,
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(
                        "An API key as `Authorization: Bearer twk_….tws_…` (OTLP exporters: \
                         `OTEL_EXPORTER_OTLP_HEADERS=authorization=Bearer …`). The requirement's \
                         list names the scope the operation needs.",
                    ))
                    .build(),
            ),
        );
        components.add_security_scheme(
            BASIC,
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Basic)
                    .description(Some(
                        "The key as Basic auth: its public id (`twk_…`) as the user name and its \
                         secret (`tws_…`) as the password, as Langfuse clients send.",
                    ))
                    .build(),
            ),
        );
    }
}

/// Every error answer of the native API: a stable machine-readable `code` and a message for
/// a person.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[schema(example = json!({"error": {"code": "not_found", "message": "trace 4bf92f3577b34da6a3ce929d0e0e4736 not found"}}))]
pub struct ErrorBody {
    /// What went wrong.
    pub error: ErrorDetail,
}

/// The `error` of an [`ErrorBody`].
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ErrorDetail {
    /// `invalid_argument` (400), `unauthenticated` (401), `permission_denied` (403),
    /// `not_found` (404), `method_not_allowed` (405), `conflict` (409), `payload_too_large`
    /// (413), `unsupported_media_type` (415), `overloaded` or `quota_exceeded` (429),
    /// `internal` (500), `unavailable` (503).
    pub code: Cow<'static, str>,
    /// What went wrong, for a person.
    pub message: String,
}

/// A parameter or body is invalid; the message names it.
#[derive(ToResponse)]
#[response(description = "Invalid input; the message names the parameter or field.")]
pub struct BadRequest(pub ErrorBody);

/// No valid key (only when API keys are required).
#[derive(ToResponse)]
#[response(
    description = "No valid API key (only when keys are required). Carries `WWW-Authenticate`.",
    headers(("WWW-Authenticate" = String, description = "`Bearer realm=\"traceway\"`"))
)]
pub struct Unauthenticated(pub ErrorBody);

/// The key lacks the scope.
#[derive(ToResponse)]
#[response(description = "The key lacks the scope the operation needs.")]
pub struct Forbidden(pub ErrorBody);

/// Nothing of that id in the caller's tenant.
#[derive(ToResponse)]
#[response(description = "Not found in the caller's tenant.")]
pub struct NotFound(pub ErrorBody);

/// An id taken, or an illegal state change.
#[derive(ToResponse)]
#[response(
    description = "The id is taken, or the state change is illegal (a terminal trace never leaves its state)."
)]
pub struct Conflict(pub ErrorBody);

/// The body is over the cap.
#[derive(ToResponse)]
#[response(description = "The body is larger than `max_body_bytes`.")]
pub struct PayloadTooLarge(pub ErrorBody);

/// The body came too slowly.
#[derive(ToResponse)]
#[response(
    description = "The body did not arrive within `--body-read-timeout` of the headers (`request_timeout`, ADR 033); the connection is closed on HTTP/1."
)]
pub struct RequestTimeout(pub ErrorBody);

/// Not JSON.
#[derive(ToResponse)]
#[response(description = "The body's `Content-Type` is not JSON.")]
pub struct UnsupportedMediaType(pub ErrorBody);

/// A quota or the store's queue is full.
#[derive(ToResponse)]
#[response(
    description = "A per-tenant quota is exceeded (`quota_exceeded`, ADR 025) or the store is busy (`overloaded`); retry after `Retry-After` seconds.",
    headers(("Retry-After" = u32, description = "Seconds to wait before retrying."))
)]
pub struct Overloaded(pub ErrorBody);

/// A bug or an unexpected failure; details are logged, never sent.
#[derive(ToResponse)]
#[response(description = "Internal error (details are in the server's log).")]
pub struct Internal(pub ErrorBody);

/// The store is down or restarting.
#[derive(ToResponse)]
#[response(
    description = "The store is unavailable (for example Redis loading its data); retry after `Retry-After` seconds.",
    headers(("Retry-After" = u32, description = "Seconds to wait before retrying."))
)]
pub struct Unavailable(pub ErrorBody);

/// The tenant a request acts for when API keys are off.
#[derive(Debug, IntoParams)]
#[into_params(parameter_in = Header)]
pub struct TenantHeader {
    /// The tenant the request acts for: 1 to 128 letters, digits, `-`, `_` and `.`; absent
    /// means `default`, an invalid value is refused with 400. Ignored when API keys are
    /// required: the key's tenant is used.
    #[param(
        rename = "X-Traceway-Tenant",
        nullable = false,
        min_length = 1,
        max_length = 128,
        pattern = "^[A-Za-z0-9._-]+$"
    )]
    pub x_traceway_tenant: Option<String>,
}

/// A protobuf message (OTLP/HTTP's binary encoding).
pub struct ProtobufMessage;

impl utoipa::PartialSchema for ProtobufMessage {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(Type::String)
            .format(Some(SchemaFormat::Custom("binary".into())))
            .content_media_type("application/x-protobuf")
            .description(Some(
                "A protobuf message of the OTLP collector service (`opentelemetry-proto`).",
            ))
            .into()
    }
}

impl ToSchema for ProtobufMessage {}

/// An OTLP/JSON export request (`ExportTraceServiceRequest`, `ExportLogsServiceRequest` or
/// `ExportMetricsServiceRequest` in the OTLP/JSON mapping: lower camel case fields, ids in
/// hex, 64-bit integers as strings or numbers).
pub struct OtlpJson;

impl utoipa::PartialSchema for OtlpJson {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(Type::Object)
            .additional_properties(Some(AdditionalProperties::FreeForm(true)))
            .description(Some(
                "An OTLP/JSON export request: `{\"resourceSpans\": [...]}` for traces, \
                 `{\"resourceLogs\": [...]}` for logs, `{\"resourceMetrics\": [...]}` for \
                 metrics, as the OTLP specification defines them.",
            ))
            .into()
    }
}

impl ToSchema for OtlpJson {}

/// An OTLP/JSON export answer: `{}` on full success, else `partialSuccess`. Written by
/// hand in `otlp/http.rs` (the generated OTLP types have no serde); this is its schema.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct OtlpJsonResponse {
    /// Present when some records were rejected (and always for metrics, which are dropped:
    /// ADR 021).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub partial_success: Option<OtlpPartialSuccess>,
}

/// What an OTLP export did not store (one of the counts, by signal).
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct OtlpPartialSuccess {
    /// Spans rejected (`/v1/traces`), as a decimal string.
    pub rejected_spans: Option<String>,
    /// Log records rejected (`/v1/logs`), as a decimal string.
    pub rejected_log_records: Option<String>,
    /// Data points rejected (`/v1/metrics`: always `"0"`, the metrics are dropped).
    pub rejected_data_points: Option<String>,
    /// Why.
    pub error_message: Option<String>,
}

/// A `google.rpc.Status` in OTLP/JSON: the answer of a failed OTLP/HTTP export.
#[derive(Debug, Serialize, ToSchema)]
pub struct OtlpStatus {
    /// The gRPC status code (3 `INVALID_ARGUMENT`, 8 `RESOURCE_EXHAUSTED`, 14
    /// `UNAVAILABLE`, …).
    pub code: i32,
    /// What went wrong.
    pub message: String,
    /// `RetryInfo`, `BadRequest` and the like (`@type` and their fields).
    #[serde(default)]
    pub details: Vec<serde_json::Value>,
}

/// A failed OTLP/HTTP export, in the request's encoding (protobuf when the media type
/// itself is the problem).
#[derive(ToResponse)]
#[response(
    description = "A `google.rpc.Status` in the request's encoding: 400 malformed data, 401/403 keys, 408 body too slow (`DEADLINE_EXCEEDED`), 413 too large, 415 media type or coding, 429 quota or busy store, 503 store unavailable (both with `Retry-After`), 500 internal."
)]
pub enum OtlpFailure {
    /// OTLP/JSON.
    Json(#[content("application/json")] OtlpStatus),
    /// Protobuf.
    Protobuf(#[content("application/x-protobuf")] ProtobufMessage),
}

/// A free-form JSON object.
pub struct FreeObject;

impl utoipa::PartialSchema for FreeObject {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(Type::Object)
            .additional_properties(Some(AdditionalProperties::FreeForm(true)))
            .into()
    }
}

impl ToSchema for FreeObject {}

/// The document as served at `/api/v1/openapi.json`.
pub fn document() -> utoipa::openapi::OpenApi {
    crate::routes().split_for_parts().1
}

/// One Server-Sent Event as a client's parser gives it (the `text/event-stream` answers
/// are a sequence of these): `id` is the event's `seq` (resume with `Last-Event-ID`),
/// `event` its type (`span_started`, …, or `lagged`/`end`), `data` one JSON document.
/// Comment lines (`:` keep-alives) carry no event.
#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
pub struct SseEvent {
    /// The event's `seq`, when it has one.
    id: Option<String>,
    /// The event type.
    event: Option<String>,
    /// The payload: one JSON document.
    data: String,
    /// A reconnection delay in milliseconds, when the server sets one.
    retry: Option<u64>,
}
