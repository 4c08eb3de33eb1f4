//! OTLP/JSON → the generated protobuf types: trace exports ([`decode`]) and log exports
//! ([`decode_logs`]), sharing one set of field readers.
//!
//! Written over `serde_json::Value` rather than with `opentelemetry-proto`'s `with-serde`,
//! whose derives (checked with 0.33.1) refuse inputs the protobuf JSON mapping allows and real exporters
//! send: `null` for a field, `"arrayValue": {}` and `"kvlistValue": {}` (an empty repeated
//! field left out, as Go's protojson does), `"NaN"`/`"Infinity"` doubles in attributes, and
//! enum names. Here every one of those is read, and an error names the field it is about
//! (`resourceSpans[0].scopeSpans[0].spans[3].startTimeUnixNano: …`).

use base64::alphabet;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use base64::Engine as _;
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{
    any_value, AnyValue, ArrayValue, InstrumentationScope, KeyValue, KeyValueList,
};
use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs, SeverityNumber};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{
    span, status, ResourceSpans, ScopeSpans, Span, Status,
};
use serde_json::{Map, Value};

const PADDING_OPTIONAL: GeneralPurposeConfig =
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent);
/// Protobuf's JSON mapping writes bytes as standard base64 and reads URL-safe too, padded or
/// not.
const BASE64_STANDARD: GeneralPurpose = GeneralPurpose::new(&alphabet::STANDARD, PADDING_OPTIONAL);
const BASE64_URL_SAFE: GeneralPurpose = GeneralPurpose::new(&alphabet::URL_SAFE, PADDING_OPTIONAL);

/// A decoding error and the path to the field, innermost segment first while it unwinds.
struct Error {
    message: String,
    path: Vec<String>,
}

impl Error {
    fn new(message: impl Into<String>) -> Error {
        Error {
            message: message.into(),
            path: Vec::new(),
        }
    }

    fn render(mut self) -> String {
        self.path.reverse();
        let mut out = String::new();
        for seg in &self.path {
            if !out.is_empty() && !seg.starts_with('[') {
                out.push('.');
            }
            out.push_str(seg);
        }
        if out.is_empty() {
            self.message
        } else {
            format!("{out}: {}", self.message)
        }
    }
}

type Result<T> = std::result::Result<T, Error>;

/// Adds a field name to the path of an error.
fn at<T>(name: &str, r: Result<T>) -> Result<T> {
    r.map_err(|mut e| {
        e.path.push(name.to_string());
        e
    })
}

/// Adds an array index to the path of an error.
fn at_index<T>(i: usize, r: Result<T>) -> Result<T> {
    r.map_err(|mut e| {
        e.path.push(format!("[{i}]"));
        e
    })
}

/// Reads an OTLP/JSON `ExportTraceServiceRequest`.
pub(crate) fn decode(body: &[u8]) -> std::result::Result<ExportTraceServiceRequest, String> {
    let root: Value = serde_json::from_slice(body).map_err(|e| format!("not JSON: {e}"))?;
    request(&root).map_err(Error::render)
}

/// Reads an OTLP/JSON `ExportLogsServiceRequest`.
pub(crate) fn decode_logs(body: &[u8]) -> std::result::Result<ExportLogsServiceRequest, String> {
    let root: Value = serde_json::from_slice(body).map_err(|e| format!("not JSON: {e}"))?;
    logs_request(&root).map_err(Error::render)
}

fn logs_request(v: &Value) -> Result<ExportLogsServiceRequest> {
    let Some(m) = object(v)? else {
        return Err(Error::new("expected an object, got null"));
    };
    Ok(ExportLogsServiceRequest {
        resource_logs: list(m, "resourceLogs", "resource_logs", resource_logs)?,
    })
}

fn resource_logs(v: &Value) -> Result<ResourceLogs> {
    let Some(m) = object(v)? else {
        return Ok(ResourceLogs::default());
    };
    Ok(ResourceLogs {
        resource: opt(m, "resource", "resource", resource)?,
        scope_logs: list(m, "scopeLogs", "scope_logs", scope_logs)?,
        schema_url: opt(m, "schemaUrl", "schema_url", string)?.unwrap_or_default(),
    })
}

fn scope_logs(v: &Value) -> Result<ScopeLogs> {
    let Some(m) = object(v)? else {
        return Ok(ScopeLogs::default());
    };
    Ok(ScopeLogs {
        scope: opt(m, "scope", "scope", scope)?,
        log_records: list(m, "logRecords", "log_records", log_record)?,
        schema_url: opt(m, "schemaUrl", "schema_url", string)?.unwrap_or_default(),
    })
}

fn log_record(v: &Value) -> Result<LogRecord> {
    let Some(m) = object(v)? else {
        return Ok(LogRecord::default());
    };
    Ok(LogRecord {
        time_unix_nano: opt(m, "timeUnixNano", "time_unix_nano", uint64)?.unwrap_or_default(),
        observed_time_unix_nano: opt(m, "observedTimeUnixNano", "observed_time_unix_nano", uint64)?
            .unwrap_or_default(),
        severity_number: opt(m, "severityNumber", "severity_number", |v| {
            enumeration(v, |n| SeverityNumber::from_str_name(n).map(|s| s as i32))
        })?
        .unwrap_or_default(),
        severity_text: opt(m, "severityText", "severity_text", string)?.unwrap_or_default(),
        body: opt(m, "body", "body", any_value)?,
        attributes: list(m, "attributes", "attributes", key_value)?,
        dropped_attributes_count: dropped_count(m)?,
        flags: opt(m, "flags", "flags", uint32)?.unwrap_or_default(),
        trace_id: opt(m, "traceId", "trace_id", |v| id(v, 16))?.unwrap_or_default(),
        span_id: opt(m, "spanId", "span_id", |v| id(v, 8))?.unwrap_or_default(),
        event_name: opt(m, "eventName", "event_name", string)?.unwrap_or_default(),
    })
}

fn request(v: &Value) -> Result<ExportTraceServiceRequest> {
    let Some(m) = object(v)? else {
        return Err(Error::new("expected an object, got null"));
    };
    Ok(ExportTraceServiceRequest {
        resource_spans: list(m, "resourceSpans", "resource_spans", resource_spans)?,
    })
}

fn resource_spans(v: &Value) -> Result<ResourceSpans> {
    let Some(m) = object(v)? else {
        return Ok(ResourceSpans::default());
    };
    Ok(ResourceSpans {
        resource: opt(m, "resource", "resource", resource)?,
        scope_spans: list(m, "scopeSpans", "scope_spans", scope_spans)?,
        schema_url: opt(m, "schemaUrl", "schema_url", string)?.unwrap_or_default(),
    })
}

fn resource(v: &Value) -> Result<Resource> {
    let Some(m) = object(v)? else {
        return Ok(Resource::default());
    };
    // `entityRefs` is not read: nothing in Traceway uses it.
    Ok(Resource {
        attributes: list(m, "attributes", "attributes", key_value)?,
        dropped_attributes_count: dropped_count(m)?,
        ..Default::default()
    })
}

fn scope_spans(v: &Value) -> Result<ScopeSpans> {
    let Some(m) = object(v)? else {
        return Ok(ScopeSpans::default());
    };
    Ok(ScopeSpans {
        scope: opt(m, "scope", "scope", scope)?,
        spans: list(m, "spans", "spans", span)?,
        schema_url: opt(m, "schemaUrl", "schema_url", string)?.unwrap_or_default(),
    })
}

fn scope(v: &Value) -> Result<InstrumentationScope> {
    let Some(m) = object(v)? else {
        return Ok(InstrumentationScope::default());
    };
    Ok(InstrumentationScope {
        name: opt(m, "name", "name", string)?.unwrap_or_default(),
        version: opt(m, "version", "version", string)?.unwrap_or_default(),
        attributes: list(m, "attributes", "attributes", key_value)?,
        dropped_attributes_count: dropped_count(m)?,
    })
}

fn span(v: &Value) -> Result<Span> {
    let Some(m) = object(v)? else {
        return Ok(Span::default());
    };
    Ok(Span {
        trace_id: opt(m, "traceId", "trace_id", |v| id(v, 16))?.unwrap_or_default(),
        span_id: opt(m, "spanId", "span_id", |v| id(v, 8))?.unwrap_or_default(),
        trace_state: opt(m, "traceState", "trace_state", string)?.unwrap_or_default(),
        parent_span_id: opt(m, "parentSpanId", "parent_span_id", |v| id(v, 8))?.unwrap_or_default(),
        flags: opt(m, "flags", "flags", uint32)?.unwrap_or_default(),
        name: opt(m, "name", "name", string)?.unwrap_or_default(),
        kind: opt(m, "kind", "kind", |v| {
            enumeration(v, |n| span::SpanKind::from_str_name(n).map(|k| k as i32))
        })?
        .unwrap_or_default(),
        start_time_unix_nano: opt(m, "startTimeUnixNano", "start_time_unix_nano", uint64)?
            .unwrap_or_default(),
        end_time_unix_nano: opt(m, "endTimeUnixNano", "end_time_unix_nano", uint64)?
            .unwrap_or_default(),
        attributes: list(m, "attributes", "attributes", key_value)?,
        dropped_attributes_count: dropped_count(m)?,
        events: list(m, "events", "events", event)?,
        dropped_events_count: opt(m, "droppedEventsCount", "dropped_events_count", uint32)?
            .unwrap_or_default(),
        links: list(m, "links", "links", link)?,
        dropped_links_count: opt(m, "droppedLinksCount", "dropped_links_count", uint32)?
            .unwrap_or_default(),
        status: opt(m, "status", "status", status)?,
    })
}

fn event(v: &Value) -> Result<span::Event> {
    let Some(m) = object(v)? else {
        return Ok(span::Event::default());
    };
    Ok(span::Event {
        time_unix_nano: opt(m, "timeUnixNano", "time_unix_nano", uint64)?.unwrap_or_default(),
        name: opt(m, "name", "name", string)?.unwrap_or_default(),
        attributes: list(m, "attributes", "attributes", key_value)?,
        dropped_attributes_count: dropped_count(m)?,
    })
}

fn link(v: &Value) -> Result<span::Link> {
    let Some(m) = object(v)? else {
        return Ok(span::Link::default());
    };
    Ok(span::Link {
        trace_id: opt(m, "traceId", "trace_id", |v| id(v, 16))?.unwrap_or_default(),
        span_id: opt(m, "spanId", "span_id", |v| id(v, 8))?.unwrap_or_default(),
        trace_state: opt(m, "traceState", "trace_state", string)?.unwrap_or_default(),
        attributes: list(m, "attributes", "attributes", key_value)?,
        dropped_attributes_count: dropped_count(m)?,
        flags: opt(m, "flags", "flags", uint32)?.unwrap_or_default(),
    })
}

fn status(v: &Value) -> Result<Status> {
    let Some(m) = object(v)? else {
        return Ok(Status::default());
    };
    Ok(Status {
        message: opt(m, "message", "message", string)?.unwrap_or_default(),
        code: opt(m, "code", "code", |v| {
            enumeration(v, |n| {
                status::StatusCode::from_str_name(n).map(|c| c as i32)
            })
        })?
        .unwrap_or_default(),
    })
}

fn key_value(v: &Value) -> Result<KeyValue> {
    let Some(m) = object(v)? else {
        return Ok(KeyValue::default());
    };
    Ok(KeyValue {
        key: opt(m, "key", "key", string)?.unwrap_or_default(),
        value: opt(m, "value", "value", any_value)?,
        ..Default::default()
    })
}

fn any_value(v: &Value) -> Result<AnyValue> {
    let Some(m) = object(v)? else {
        return Ok(AnyValue { value: None });
    };
    // A oneof: the first field present decides; an object with none of them is an empty
    // value, as the specification allows.
    let value = if let Some(s) = opt(m, "stringValue", "string_value", string)? {
        Some(any_value::Value::StringValue(s))
    } else if let Some(b) = opt(m, "boolValue", "bool_value", boolean)? {
        Some(any_value::Value::BoolValue(b))
    } else if let Some(i) = opt(m, "intValue", "int_value", int64)? {
        Some(any_value::Value::IntValue(i))
    } else if let Some(d) = opt(m, "doubleValue", "double_value", double)? {
        Some(any_value::Value::DoubleValue(d))
    } else if let Some(a) = opt(m, "arrayValue", "array_value", array_value)? {
        Some(any_value::Value::ArrayValue(a))
    } else if let Some(kv) = opt(m, "kvlistValue", "kvlist_value", kvlist_value)? {
        Some(any_value::Value::KvlistValue(kv))
    } else if let Some(b) = opt(m, "bytesValue", "bytes_value", bytes)? {
        Some(any_value::Value::BytesValue(b))
    } else {
        opt(m, "stringValueStrindex", "string_value_strindex", int32)?
            .map(any_value::Value::StringValueStrindex)
    };
    Ok(AnyValue { value })
}

fn array_value(v: &Value) -> Result<ArrayValue> {
    let values = match object(v)? {
        Some(m) => list(m, "values", "values", any_value)?,
        None => Vec::new(),
    };
    Ok(ArrayValue { values })
}

fn kvlist_value(v: &Value) -> Result<KeyValueList> {
    let values = match object(v)? {
        Some(m) => list(m, "values", "values", key_value)?,
        None => Vec::new(),
    };
    Ok(KeyValueList { values })
}

fn dropped_count(m: &Map<String, Value>) -> Result<u32> {
    Ok(opt(
        m,
        "droppedAttributesCount",
        "dropped_attributes_count",
        uint32,
    )?
    .unwrap_or_default())
}

// ---- generic readers ----

fn kind_of(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn expected<T>(what: &str, got: &Value) -> Result<T> {
    Err(Error::new(format!("expected {what}, got {}", kind_of(got))))
}

/// An object, or `None` for `null`.
fn object(v: &Value) -> Result<Option<&Map<String, Value>>> {
    match v {
        Value::Object(m) => Ok(Some(m)),
        Value::Null => Ok(None),
        other => expected("an object", other),
    }
}

/// The field under its JSON name or, failing that, its proto name; `null` counts as absent.
fn field<'a>(m: &'a Map<String, Value>, json_name: &str, proto_name: &str) -> Option<&'a Value> {
    m.get(json_name)
        .filter(|v| !v.is_null())
        .or_else(|| m.get(proto_name).filter(|v| !v.is_null()))
}

/// An optional field read with `read`.
fn opt<T>(
    m: &Map<String, Value>,
    json_name: &str,
    proto_name: &str,
    read: impl FnOnce(&Value) -> Result<T>,
) -> Result<Option<T>> {
    match field(m, json_name, proto_name) {
        Some(v) => at(json_name, read(v).map(Some)),
        None => Ok(None),
    }
}

/// A repeated field; absent or `null` is empty.
fn list<T>(
    m: &Map<String, Value>,
    json_name: &str,
    proto_name: &str,
    read: impl Fn(&Value) -> Result<T>,
) -> Result<Vec<T>> {
    let Some(v) = field(m, json_name, proto_name) else {
        return Ok(Vec::new());
    };
    let Value::Array(items) = v else {
        return at(json_name, expected("an array", v));
    };
    let mut out = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        out.push(at(json_name, at_index(i, read(item)))?);
    }
    Ok(out)
}

fn string(v: &Value) -> Result<String> {
    match v {
        Value::String(s) => Ok(s.clone()),
        other => expected("a string", other),
    }
}

fn boolean(v: &Value) -> Result<bool> {
    match v {
        Value::Bool(b) => Ok(*b),
        other => expected("true or false", other),
    }
}

/// An integer written as a JSON number (also `1e3`, when whole) or a decimal string.
fn integer(v: &Value) -> Result<i128> {
    match v {
        Value::Number(n) => {
            if let Some(u) = n.as_u64() {
                Ok(u as i128)
            } else if let Some(i) = n.as_i64() {
                Ok(i as i128)
            } else {
                let f = n.as_f64().unwrap_or(f64::NAN);
                if f.fract() == 0.0 && f.abs() < 2f64.powi(64) {
                    Ok(f as i128)
                } else {
                    Err(Error::new(format!("expected an integer, got {n}")))
                }
            }
        }
        Value::String(s) => s
            .trim()
            .parse::<i128>()
            .map_err(|_| Error::new(format!("expected an integer, got {s:?}"))),
        other => expected("an integer", other),
    }
}

fn ranged<T: TryFrom<i128>>(v: &Value, what: &str) -> Result<T> {
    let i = integer(v)?;
    T::try_from(i).map_err(|_| Error::new(format!("{i} is out of range for {what}")))
}

fn uint64(v: &Value) -> Result<u64> {
    ranged(v, "uint64")
}

fn int64(v: &Value) -> Result<i64> {
    ranged(v, "int64")
}

fn uint32(v: &Value) -> Result<u32> {
    ranged(v, "uint32")
}

fn int32(v: &Value) -> Result<i32> {
    ranged(v, "int32")
}

/// An enum: its number as OTLP/JSON requires, or (leniently) its proto name. An unknown name
/// reads as 0, the unspecified value.
fn enumeration(v: &Value, by_name: impl Fn(&str) -> Option<i32>) -> Result<i32> {
    match v {
        Value::String(s) if s.trim().parse::<i64>().is_err() => Ok(by_name(s).unwrap_or(0)),
        other => int32(other),
    }
}

fn double(v: &Value) -> Result<f64> {
    match v {
        Value::Number(n) => Ok(n.as_f64().unwrap_or(f64::NAN)),
        Value::String(s) => match s.as_str() {
            "NaN" => Ok(f64::NAN),
            "Infinity" => Ok(f64::INFINITY),
            "-Infinity" => Ok(f64::NEG_INFINITY),
            other => other
                .trim()
                .parse::<f64>()
                .map_err(|_| Error::new(format!("expected a number, got {s:?}"))),
        },
        other => expected("a number", other),
    }
}

fn bytes(v: &Value) -> Result<Vec<u8>> {
    let Value::String(s) = v else {
        return expected("a base64 string", v);
    };
    BASE64_STANDARD
        .decode(s)
        .or_else(|_| BASE64_URL_SAFE.decode(s))
        .map_err(|_| Error::new("expected a base64 string"))
}

/// A trace or span id: hex (any case) as OTLP/JSON specifies, or the base64 a generic
/// protobuf JSON encoder writes, whichever gives `len` bytes. Valid hex of another length is
/// returned as it is, for the mapping to reject the span; anything else is an error.
fn id(v: &Value, len: usize) -> Result<Vec<u8>> {
    let Value::String(s) = v else {
        return expected("a hex id string", v);
    };
    let from_hex = hex(s);
    if let Some(b) = from_hex.as_ref().filter(|b| b.len() == len) {
        return Ok(b.clone());
    }
    if let Ok(b) = BASE64_STANDARD
        .decode(s)
        .or_else(|_| BASE64_URL_SAFE.decode(s))
    {
        if b.len() == len {
            return Ok(b);
        }
    }
    from_hex.ok_or_else(|| Error::new(format!("expected {} hex digits, got {s:?}", len * 2)))
}

fn hex(s: &str) -> Option<Vec<u8>> {
    if s.len() % 2 != 0 {
        return None;
    }
    s.as_bytes()
        .chunks(2)
        .map(|pair| {
            let hi = (pair[0] as char).to_digit(16)?;
            let lo = (pair[1] as char).to_digit(16)?;
            Some((hi * 16 + lo) as u8)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode_str(s: &str) -> std::result::Result<ExportTraceServiceRequest, String> {
        decode(s.as_bytes())
    }

    fn one_span(span: Value) -> Span {
        let body = serde_json::json!({"resourceSpans": [{"scopeSpans": [{"spans": [span]}]}]});
        let req = decode_str(&body.to_string()).unwrap();
        req.resource_spans[0].scope_spans[0].spans[0].clone()
    }

    #[test]
    fn ids_are_hex_in_any_case_or_base64_of_the_right_length() {
        let s = one_span(serde_json::json!({
            "traceId": "5B8EFFF798038103D269B633813FC60C",
            "spanId": "EEE19B7EC3C1B174",
            "parentSpanId": "AAAAAAAAAAE=",
        }));
        assert_eq!(hex("5b8efff798038103d269b633813fc60c").unwrap(), s.trace_id);
        assert_eq!(
            s.span_id,
            vec![0xee, 0xe1, 0x9b, 0x7e, 0xc3, 0xc1, 0xb1, 0x74]
        );
        assert_eq!(s.parent_span_id, vec![0, 0, 0, 0, 0, 0, 0, 1]);
        // Hex of the wrong length is kept for the mapping to reject; garbage is an error.
        let s = one_span(serde_json::json!({"spanId": "0102030405"}));
        assert_eq!(s.span_id.len(), 5);
        let err =
            decode_str(r#"{"resourceSpans":[{"scopeSpans":[{"spans":[{"spanId":"xyz"}]}]}]}"#)
                .unwrap_err();
        assert_eq!(
            err,
            "resourceSpans[0].scopeSpans[0].spans[0].spanId: expected 16 hex digits, got \"xyz\""
        );
    }

    #[test]
    fn integers_read_from_strings_and_numbers() {
        let cases: &[(Value, std::result::Result<u64, ()>)] = &[
            (
                serde_json::json!("1700000000000000001"),
                Ok(1_700_000_000_000_000_001),
            ),
            (
                serde_json::json!(1_700_000_000_000_000_001u64),
                Ok(1_700_000_000_000_000_001),
            ),
            (serde_json::json!(18446744073709551615u64), Ok(u64::MAX)),
            (serde_json::json!("18446744073709551615"), Ok(u64::MAX)),
            (serde_json::json!(1e3), Ok(1000)),
            (serde_json::json!(1.5), Err(())),
            (serde_json::json!("-1"), Err(())),
            (serde_json::json!("18446744073709551616"), Err(())),
            (serde_json::json!("soon"), Err(())),
            (serde_json::json!(true), Err(())),
        ];
        for (v, want) in cases {
            assert_eq!(&uint64(v).map_err(|_| ()), want, "{v}");
        }
        assert_eq!(int64(&serde_json::json!("-42")).ok(), Some(-42));
        assert_eq!(int64(&serde_json::json!(-42)).ok(), Some(-42));
    }

    #[test]
    fn enums_read_as_numbers_or_names() {
        let s = one_span(serde_json::json!({"kind": 3, "status": {"code": 2}}));
        assert_eq!((s.kind, s.status.unwrap().code), (3, 2));
        let s = one_span(
            serde_json::json!({"kind": "SPAN_KIND_SERVER", "status": {"code": "STATUS_CODE_OK"}}),
        );
        assert_eq!((s.kind, s.status.unwrap().code), (2, 1));
        let s = one_span(serde_json::json!({"kind": "2"}));
        assert_eq!(s.kind, 2);
    }

    #[test]
    fn nulls_empty_lists_and_unknown_fields_are_accepted() {
        let s = one_span(serde_json::json!({
            "name": null,
            "attributes": [
                {"key": "empty_array", "value": {"arrayValue": {}}},
                {"key": "empty_kvlist", "value": {"kvlistValue": {}}},
                {"key": "nan", "value": {"doubleValue": "NaN"}},
                {"key": "inf", "value": {"doubleValue": "-Infinity"}},
                {"key": "bytes", "value": {"bytesValue": "aGk="}},
                {"key": "bytes_url", "value": {"bytesValue": "-_8"}},
                {"key": "no_value"},
                {"key": "empty_value", "value": {}},
                {"key": "future", "value": {"someNewValue": 1}}
            ],
            "events": null,
            "somethingNew": {"x": 1},
        }));
        assert_eq!(s.name, "");
        let v: Vec<Option<any_value::Value>> = s
            .attributes
            .iter()
            .map(|kv| kv.value.clone().and_then(|a| a.value))
            .collect();
        assert_eq!(
            v[0],
            Some(any_value::Value::ArrayValue(ArrayValue { values: vec![] }))
        );
        assert_eq!(
            v[1],
            Some(any_value::Value::KvlistValue(KeyValueList {
                values: vec![]
            }))
        );
        assert!(matches!(v[2], Some(any_value::Value::DoubleValue(d)) if d.is_nan()));
        assert_eq!(v[3], Some(any_value::Value::DoubleValue(f64::NEG_INFINITY)));
        assert_eq!(v[4], Some(any_value::Value::BytesValue(b"hi".to_vec())));
        assert_eq!(v[5], Some(any_value::Value::BytesValue(vec![0xfb, 0xff])));
        assert_eq!(&v[6..], &[None, None, None]);
    }

    #[test]
    fn snake_case_proto_names_are_read_too() {
        let body = r#"{"resource_spans":[{"scope_spans":[{"spans":[
            {"trace_id":"0af7651916cd43dd8448eb211c80319c","span_id":"b7ad6b7169203331",
             "start_time_unix_nano":"5"}]}]}]}"#;
        let req = decode_str(body).unwrap();
        let s = &req.resource_spans[0].scope_spans[0].spans[0];
        assert_eq!(s.start_time_unix_nano, 5);
        assert_eq!(s.span_id.len(), 8);
    }

    #[test]
    fn log_records_read_with_their_ids_body_and_severity() {
        let body = r#"{"resourceLogs":[{"resource":{"attributes":[{"key":"service.name","value":{"stringValue":"bot"}}]},
          "scopeLogs":[{"scope":{"name":"s"},"logRecords":[{
            "timeUnixNano":"5","observedTimeUnixNano":6,"severityNumber":"SEVERITY_NUMBER_WARN",
            "severityText":"WARN","body":{"kvlistValue":{"values":[{"key":"content","value":{"stringValue":"hi"}}]}},
            "traceId":"5B8EFFF798038103D269B633813FC60C","spanId":"eee19b7ec3c1b174",
            "eventName":"gen_ai.user.message","flags":1}]}]}]}"#;
        let req = decode_logs(body.as_bytes()).unwrap();
        let r = &req.resource_logs[0].scope_logs[0].log_records[0];
        assert_eq!((r.time_unix_nano, r.observed_time_unix_nano), (5, 6));
        assert_eq!(r.severity_number, SeverityNumber::Warn as i32);
        assert_eq!(r.trace_id.len(), 16);
        assert_eq!(r.span_id.len(), 8);
        assert_eq!(r.event_name, "gen_ai.user.message");
        assert!(matches!(
            r.body.as_ref().and_then(|b| b.value.as_ref()),
            Some(any_value::Value::KvlistValue(_))
        ));
        let err = decode_logs(
            br#"{"resourceLogs":[{"scopeLogs":[{"logRecords":[{"severityNumber":1.5}]}]}]}"#,
        )
        .unwrap_err();
        assert!(
            err.starts_with("resourceLogs[0].scopeLogs[0].logRecords[0].severityNumber"),
            "{err}"
        );
    }

    #[test]
    fn errors_name_the_field() {
        let cases = [
            ("[]", "expected an object, got an array"),
            ("nope", "not JSON"),
            (
                r#"{"resourceSpans":{}}"#,
                "resourceSpans: expected an array, got an object",
            ),
            (
                r#"{"resourceSpans":[{"scopeSpans":[{"spans":[{},{"startTimeUnixNano":"x"}]}]}]}"#,
                "resourceSpans[0].scopeSpans[0].spans[1].startTimeUnixNano: expected an integer",
            ),
            (
                r#"{"resourceSpans":[{"resource":{"attributes":[{"key":"k","value":{"intValue":"1.5"}}]}}]}"#,
                "resourceSpans[0].resource.attributes[0].value.intValue: expected an integer",
            ),
            (
                r#"{"resourceSpans":[{"scopeSpans":[{"spans":[{"name":7}]}]}]}"#,
                "resourceSpans[0].scopeSpans[0].spans[0].name: expected a string, got a number",
            ),
        ];
        for (body, want) in cases {
            let err = decode_str(body).unwrap_err();
            assert!(err.starts_with(want), "{body}: {err}");
        }
        assert_eq!(
            decode_str("{}").unwrap(),
            ExportTraceServiceRequest::default()
        );
    }
}
