//! OpenAPI schemas (feature `openapi`) of the types whose JSON form is written by hand:
//! ids, timestamps and states. The other model types derive `utoipa::ToSchema` next to
//! their serde derives. The patterns say what the parsers accept, including the refusal of
//! all-zero ids (issue 15, failure 3.9; ADR 026).

use std::borrow::Cow;

use utoipa::openapi::schema::{
    KnownFormat, ObjectBuilder, OneOfBuilder, Schema, SchemaFormat, Type,
};
use utoipa::openapi::RefOr;

use crate::id::{SpanId, TraceId};
use crate::model::State;
use crate::time::Timestamp;

/// What [`TraceId`]'s parser accepts: 32 hex digits or the hyphenated UUID form, either
/// case, never all zeros.
pub const TRACE_ID_PATTERN: &str = "^(?!0{32}$)(?!0{8}-0{4}-0{4}-0{4}-0{12}$)(?:[0-9a-fA-F]{32}|[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12})$";
/// What [`SpanId`]'s parser accepts: 16 hex digits, either case, never all zeros.
pub const SPAN_ID_PATTERN: &str = "^(?!0{16}$)[0-9a-fA-F]{16}$";
/// What [`State`]'s parser accepts.
pub const STATE_PATTERN: &str = "^[A-Z][A-Z0-9_]{0,63}$";

fn string(pattern: &str, description: &str, examples: &[&str]) -> RefOr<Schema> {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .pattern(Some(pattern))
        .description(Some(description))
        .examples(examples.iter().copied())
        .into()
}

impl utoipa::PartialSchema for TraceId {
    fn schema() -> RefOr<Schema> {
        string(
            TRACE_ID_PATTERN,
            "A 128-bit trace id (a W3C trace-id). The server writes 32 lower-case hex digits \
             (a UUIDv7 when it makes the id, so ids sort by creation time); it reads that form \
             or a hyphenated UUID, either case. The all-zero id is refused.",
            &[
                "4bf92f3577b34da6a3ce929d0e0e4736",
                "019a8f3c-5e2d-7b41-9c3a-0d1e2f3a4b5c",
            ],
        )
    }
}

impl utoipa::ToSchema for TraceId {
    fn name() -> Cow<'static, str> {
        Cow::Borrowed("TraceId")
    }
}

impl utoipa::PartialSchema for SpanId {
    fn schema() -> RefOr<Schema> {
        string(
            SPAN_ID_PATTERN,
            "A 64-bit span id: 16 hex digits, written lower-case (upper-case is read). The \
             all-zero id is refused.",
            &["a1b2c3d4e5f60718"],
        )
    }
}

impl utoipa::ToSchema for SpanId {
    fn name() -> Cow<'static, str> {
        Cow::Borrowed("SpanId")
    }
}

/// The state a trace may be created in: any state but the terminal two (or `null`).
pub fn initial_state() -> utoipa::openapi::schema::Object {
    ObjectBuilder::new()
        .schema_type(utoipa::openapi::schema::SchemaType::from_iter([
            Type::String,
            Type::Null,
        ]))
        .pattern(Some("^(?!(COMPLETED|ERRORED)$)[A-Z][A-Z0-9_]{0,63}$"))
        .description(Some(
            "The state a trace is created in: `RECEIVED` (default), `RUNNING` or an \
             intermediate state (upper-case letters, digits and `_`); never `COMPLETED` or \
             `ERRORED`.",
        ))
        .build()
}

impl utoipa::PartialSchema for State {
    fn schema() -> RefOr<Schema> {
        string(
            STATE_PATTERN,
            "The lifecycle state of a trace: `RECEIVED` -> `RUNNING` -> `COMPLETED` | \
             `ERRORED`, plus intermediate states a caller defines (1 to 64 upper-case \
             letters, digits and `_`, starting with a letter). `COMPLETED` and `ERRORED` are \
             terminal.",
            &["RUNNING", "WAITING_FOR_HUMAN", "COMPLETED"],
        )
    }
}

impl utoipa::ToSchema for State {
    fn name() -> Cow<'static, str> {
        Cow::Borrowed("State")
    }
}

impl utoipa::PartialSchema for Timestamp {
    fn schema() -> RefOr<Schema> {
        OneOfBuilder::new()
            .item(
                ObjectBuilder::new()
                    .schema_type(Type::String)
                    .format(Some(SchemaFormat::KnownFormat(KnownFormat::DateTime))),
            )
            .item(
                ObjectBuilder::new()
                    .schema_type(Type::Integer)
                    .format(Some(SchemaFormat::KnownFormat(KnownFormat::Int64)))
                    .description(Some("Unix nanoseconds.")),
            )
            .description(Some(
                "A time. The server writes RFC 3339 in UTC with nanoseconds \
                 (`2026-01-01T10:00:00.123456789Z`); it reads RFC 3339 with any offset or an \
                 integer count of Unix nanoseconds (the OpenTelemetry form).",
            ))
            .examples([
                serde_json::json!("2026-01-01T10:00:00Z"),
                serde_json::json!(1_767_261_600_000_000_000_i64),
            ])
            .into()
    }
}

impl utoipa::ToSchema for Timestamp {
    fn name() -> Cow<'static, str> {
        Cow::Borrowed("Timestamp")
    }
}
